/*
 * duration.h — Go-style durations, in milliseconds, and the monotonic clock.
 */
#ifndef REGISTRYD_DURATION_H
#define REGISTRYD_DURATION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* "10s", "1m30s", "500ms", "1.5h", "0". Returns 0 or REG_EINVAL. The parser is
 * libregistry's (duration_parse.h), so client and server agree. */
int duration_parse(const char *s, uint64_t *ms);
/* A duration string, or an integer count of nanoseconds (Go's encoding). */
int duration_parse_json(json_t *v, uint64_t *ms);
/* Render ms the way Go does ("10s", "1m30s", "250ms"). */
void duration_format(uint64_t ms, char *buf, size_t len);

/* The monotonic clock, for intervals and latencies. */
uint64_t mono_ms(void);
double mono_seconds(void);

#endif
