/*
 * duration_parse.h — the one parser of Go-style durations ("10s", "1m30s",
 * "500ms", "1.5h", "0"), shared by libregistry (the wait= of a blocking
 * query) and registryd (config, check definitions, ?wait=), so that the
 * client and the server never disagree about how long a wait is.
 *
 * Private to this source tree: not installed, hidden in the shared library.
 */
#ifndef REGISTRY_DURATION_PARSE_H
#define REGISTRY_DURATION_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Parse the len bytes at s (no terminator needed) as a sequence of
 * <decimal number><unit> with units ns, us, µs, ms, s, m, h, or exactly "0".
 * No sign, exponent, hex or spaces (Go's time.ParseDuration, non-negative).
 * Rounds to the nearest millisecond into *ms. Returns 0, or REG_EINVAL for
 * anything else or a total above 1e15 ms; *ms is untouched then. */
int reg__duration_parse(const char *s, size_t len, uint64_t *ms);

#endif
