/*
 * duration.h — Go-style durations, in milliseconds, and the monotonic clock;
 * and, for ACL token expiration (Consul's ExpirationTTL and ExpirationTime),
 * Go's signed nanosecond durations and RFC 3339 instants.
 */
#ifndef REGISTRYD_DURATION_H
#define REGISTRYD_DURATION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* "10s", "1m30s", "500ms", "1.5h", "0". Returns 0 or REG_EINVAL. The parser is
 * libregistry's (duration_parse.h), so client and server agree. */
int duration_parse(const char *s, uint64_t *ms);
/* A duration string, or an integer count of nanoseconds (Go's encoding). */
int duration_parse_json(json_t *v, uint64_t *ms);
/* Render ms the way Go does ("10s", "1m30s", "250ms"). */
void duration_format(uint64_t ms, char *buf, size_t len);

/* Go's time.ParseDuration, into signed nanoseconds: an optional sign, then
 * <decimal number><unit> pairs (ns, us, µs, μs, ms, s, m, h), or "0". Go's
 * rounding of fractions and its range (about 292 years either way).
 * Returns 0 or REG_EINVAL (*ns untouched). */
int duration_parse_ns(const char *s, int64_t *ns);
/* Go's time.Duration.String(): "1h0m0s", "1m30s", "1.5s", "250ms", "1µs",
 * "-2s", "0s". 32 bytes always suffice. */
void duration_format_ns(int64_t ns, char *buf, size_t len);

/* An RFC 3339 instant, "2006-01-02T15:04:05[.fraction](Z|+hh:mm|-hh:mm)"
 * (Go's time.RFC3339 as encoding/json reads it: 'T' and 'Z' upper case,
 * years 0000 to 9999), into UTC seconds since the epoch and nanoseconds
 * (digits past the ninth are dropped). Returns 0 or REG_EINVAL. */
int rfc3339_parse(const char *s, struct timespec *out);
/* t in UTC as Go's time.RFC3339Nano writes it: the fraction without its
 * trailing zeros, none when whole ("2006-01-02T15:04:05.5Z"). 40 bytes
 * always suffice. */
void rfc3339_format(const struct timespec *t, char *buf, size_t len);
/* <0, 0 or >0 as a is before, at or after b. */
int timespec_cmp(const struct timespec *a, const struct timespec *b);

/* The monotonic clock, for intervals and latencies. */
uint64_t mono_ms(void);
double mono_seconds(void);

#endif
