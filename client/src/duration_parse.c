/* duration_parse.c — Go-style durations; see duration_parse.h. */
#include "duration_parse.h"

#include <string.h>

#include "registry/error.h"

int reg__duration_parse(const char *s, size_t len, uint64_t *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    const char *end = s + len;
    double total = 0;
    if (s == NULL || len == 0)
        return REG_EINVAL;
    if (len == 1 && s[0] == '0') {
        *ms = 0;
        return 0;
    }
    while (s < end) {
        /* digits [. digits], at least one digit in all */
        double n = 0, scale = 1;
        int digits = 0;
        for (; s < end && *s >= '0' && *s <= '9'; s++, digits++)
            n = n * 10 + (*s - '0');
        if (s < end && *s == '.')
            for (s++; s < end && *s >= '0' && *s <= '9'; s++, digits++)
                n += (*s - '0') * (scale /= 10);
        if (digits == 0 || n > 1e18)
            return REG_EINVAL;
        size_t best = 0;
        double mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].unit);
            if (l <= (size_t)(end - s) && l > best && memcmp(s, units[i].unit, l) == 0) {
                best = l;
                mult = units[i].ms;
            }
        }
        if (best == 0)
            return REG_EINVAL;
        s += best;
        total += n * mult;
        if (total > 1e15)
            return REG_EINVAL;
    }
    *ms = (uint64_t)(total + 0.5);
    return 0;
}
