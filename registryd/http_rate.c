/*
 * http_rate.c — see http_rate.h.
 */
#include "http_rate.h"

#include <stddef.h>

void http_rate_init(struct http_rate *b, double per_second, double now)
{
    b->rate = per_second > 0 ? per_second : 0;
    b->burst = b->rate < 1 ? 1 : b->rate; /* one second's worth, and never below one */
    b->tokens = b->burst;
    b->last = now;
}

bool http_rate_take(struct http_rate *b, double now, unsigned *retry_after_s)
{
    if (b->rate <= 0)
        return true;
    if (now > b->last) { /* a clock that went backwards adds nothing */
        b->tokens += (now - b->last) * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last = now;
    if (b->tokens >= 1 - 1e-9) { /* a token accrued in steps is one, rounding aside */
        b->tokens -= 1;
        return true;
    }
    if (retry_after_s != NULL) {
        double wait = (1 - b->tokens) / b->rate; /* seconds, rounded up below */
        unsigned s = wait > 86400 ? 86400 : (unsigned)wait;
        *retry_after_s = s < wait ? s + 1 : s < 1 ? 1 : s;
    }
    return false;
}
