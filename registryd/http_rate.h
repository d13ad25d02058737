/*
 * http_rate.h — a token bucket for the global request rate limits
 * (http_read_rate, http_write_rate): `rate` requests a second, with a burst
 * of one second's worth (at least one request). Time is passed in, so that
 * the bucket is a pure function of its calls (and unit-testable).
 *
 * Threads: a bucket belongs to one thread (the front end's event loop).
 */
#ifndef REGISTRYD_HTTP_RATE_H
#define REGISTRYD_HTTP_RATE_H

#include "common.h"

#include <stdbool.h>

struct http_rate {
    double rate;   /* tokens a second; 0: no limit */
    double burst;  /* most tokens held */
    double tokens; /* held now */
    double last;   /* seconds (monotonic) of the last refill */
};

/* A full bucket for `per_second` requests a second (0: no limit) at time now. */
void http_rate_init(struct http_rate *b, double per_second, double now);

/* Take one token at time now: true if the request may go on. When false,
 * *retry_after_s (if not NULL) is the whole seconds until a token is due
 * (at least 1), for a Retry-After header. */
bool http_rate_take(struct http_rate *b, double now, unsigned *retry_after_s) REG_MUSTCHECK;

#endif
