/* duration.c — Go-style durations ("10s", "1m30s", "500ms"), as Consul's
 * API and our config file write them. See duration.h. */
#include "duration.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "registry/error.h"

int duration_parse(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    double total = 0;
    if (s == NULL || *s == '\0')
        return REG_EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    while (*s) {
        char *end;
        if (!isdigit((unsigned char)*s) && *s != '.')
            return REG_EINVAL;
        double n = strtod(s, &end);
        if (end == s)
            return REG_EINVAL;
        s = end;
        size_t best = 0;
        double mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].unit);
            if (strncmp(s, units[i].unit, l) == 0 && l > best) {
                best = l;
                mult = units[i].ms;
            }
        }
        if (best == 0)
            return REG_EINVAL;
        s += best;
        total += n * mult;
    }
    if (total > 1e15)
        return REG_EINVAL;
    *ms = (uint64_t)(total + 0.5);
    return 0;
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
    if (frac)
        snprintf(buf + n, len - (size_t)n, "%" PRIu64 ".%03" PRIu64 "s", s, frac);
    else
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
