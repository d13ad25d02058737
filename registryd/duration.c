/* duration.c — Go-style durations ("10s", "1m30s", "500ms"), as Consul's
 * API and our config file write them. See duration.h. */
#include "duration.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "duration_parse.h"
#include "registry/error.h"

int duration_parse(const char *s, uint64_t *ms)
{
    /* one parser for the daemon and libregistry (client/src/duration_parse.c) */
    return s == NULL ? REG_EINVAL : reg__duration_parse(s, strlen(s), ms);
}

int duration_parse_json(json_t *v, uint64_t *ms)
{
    if (json_is_string(v))
        return duration_parse(json_string_value(v), ms);
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = (uint64_t)json_integer_value(v) / 1000000; /* Go: nanoseconds */
        return 0;
    }
    return REG_EINVAL;
}

void duration_format(uint64_t ms, char *buf, size_t len)
{
    if (ms == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    if (ms < 1000) {
        snprintf(buf, len, "%" PRIu64 "ms", ms);
        return;
    }
    uint64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    int n = 0;
    buf[0] = '\0';
    if (h)
        n += snprintf(buf + n, len - (size_t)n, "%" PRIu64 "h", h);
    if (h || m)
        n += snprintf(buf + n, len - (size_t)n, "%" PRIu64 "m", m);
    if (frac) { /* Go's time.Duration form: no trailing zeros ("1.5s") */
        char f[4];
        snprintf(f, sizeof(f), "%03" PRIu64, frac);
        for (int i = 2; i > 0 && f[i] == '0'; i--)
            f[i] = '\0';
        snprintf(buf + n, len - (size_t)n, "%" PRIu64 ".%ss", s, f);
    } else
        snprintf(buf + n, len - (size_t)n, "%" PRIu64 "s", s);
}

uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
