/* duration.c — Go-style durations ("10s", "1m30s", "500ms"), as Consul's
 * API and our config file write them; Go's nanosecond durations and RFC 3339
 * instants for ACL token expiration. See duration.h. */
#include "duration.h"

#include <inttypes.h>
#include <stdbool.h>
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

/* ---- Go's nanosecond durations ----------------------------------------- */

#define NS_LIMIT ((uint64_t)1 << 63) /* |d| of an int64 */

static const struct {
    const char *name;
    uint64_t ns;
} go_units[] = {
    {"ns", 1},
    {"us", 1000},
    {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000}, /* U+03BC Greek mu */
    {"ms", 1000000},
    {"s", 1000000000},
    {"m", 60000000000ULL},
    {"h", 3600000000000ULL}, /* Go's largest unit */
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int duration_parse_ns(const char *s, int64_t *ns)
{
    bool neg = false;
    uint64_t d = 0;
    if (s == NULL)
        return REG_EINVAL;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (*s == '\0')
        return REG_EINVAL;
    while (*s != '\0') {
        uint64_t v = 0, f = 0;
        double scale = 1;
        bool pre = false, post = false, overflow = false;
        if (*s != '.' && !is_digit(*s))
            return REG_EINVAL;
        for (; is_digit(*s); s++, pre = true) {
            if (v > NS_LIMIT / 10)
                return REG_EINVAL;
            v = v * 10 + (uint64_t)(*s - '0');
            if (v > NS_LIMIT)
                return REG_EINVAL;
        }
        if (*s == '.') /* digits past what 63 bits hold are read and ignored */
            for (s++; is_digit(*s); s++, post = true) {
                if (overflow || f > (NS_LIMIT - 1) / 10 ||
                    f * 10 + (uint64_t)(*s - '0') > NS_LIMIT) {
                    overflow = true;
                    continue;
                }
                f = f * 10 + (uint64_t)(*s - '0');
                scale *= 10;
            }
        if (!pre && !post)
            return REG_EINVAL;
        size_t ulen = 0;
        while (s[ulen] != '\0' && s[ulen] != '.' && !is_digit(s[ulen]))
            ulen++;
        uint64_t unit = 0;
        for (size_t i = 0; i < sizeof(go_units) / sizeof(go_units[0]); i++)
            if (strlen(go_units[i].name) == ulen && memcmp(s, go_units[i].name, ulen) == 0)
                unit = go_units[i].ns;
        if (unit == 0)
            return REG_EINVAL; /* a missing or unknown unit */
        s += ulen;
        if (v > NS_LIMIT / unit)
            return REG_EINVAL;
        v *= unit;
        if (f > 0) {
            /* as Go: a double is exact enough for fractions of an hour */
            v += (uint64_t)((double)f * ((double)unit / scale));
            if (v > NS_LIMIT)
                return REG_EINVAL;
        }
        d += v;
        if (d > NS_LIMIT)
            return REG_EINVAL;
    }
    if (!neg && d > NS_LIMIT - 1)
        return REG_EINVAL;
    *ns = neg ? (d == NS_LIMIT ? INT64_MIN : -(int64_t)d) : (int64_t)d;
    return 0;
}

/* Go's fmtFrac: the last prec digits of v as a fraction (without trailing
 * zeros, none at all when they are all zero), written backwards before w;
 * v loses them. */
static char *frac_before(char *w, uint64_t *v, int prec)
{
    bool print = false;
    for (int i = 0; i < prec; i++) {
        unsigned digit = (unsigned)(*v % 10);
        print = print || digit != 0;
        if (print)
            *--w = (char)('0' + digit);
        *v /= 10;
    }
    if (print)
        *--w = '.';
    return w;
}

static char *int_before(char *w, uint64_t v)
{
    do {
        *--w = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return w;
}

void duration_format_ns(int64_t ns, char *buf, size_t len)
{
    char arr[32];
    char *w = arr + sizeof(arr);
    bool neg = ns < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    *--w = '\0';
    if (u < 1000000000) {
        int prec = 0;
        *--w = 's';
        if (u == 0) {
            *--w = '0';
            snprintf(buf, len, "%s", w);
            return;
        }
        if (u < 1000) {
            *--w = 'n';
        } else if (u < 1000000) {
            prec = 3;
            *--w = '\xb5'; /* µ, U+00B5, as Go writes it */
            *--w = '\xc2';
        } else {
            prec = 6;
            *--w = 'm';
        }
        w = frac_before(w, &u, prec);
        w = int_before(w, u);
    } else {
        *--w = 's';
        w = frac_before(w, &u, 9);
        w = int_before(w, u % 60); /* u: whole seconds */
        u /= 60;
        if (u > 0) { /* minutes; then hours, Go's largest unit */
            *--w = 'm';
            w = int_before(w, u % 60);
            u /= 60;
            if (u > 0) {
                *--w = 'h';
                w = int_before(w, u);
            }
        }
    }
    if (neg)
        *--w = '-';
    snprintf(buf, len, "%s", w);
}

/* ---- RFC 3339 instants ----------------------------------------------------- */

/* Exactly n digits at s. */
static bool fixed_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

int rfc3339_parse(const char *s, struct timespec *out)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    long nsec = 0;
    if (s == NULL || !fixed_digits(s, 4, &y) || s[4] != '-' || !fixed_digits(s + 5, 2, &mo) ||
        s[7] != '-' || !fixed_digits(s + 8, 2, &d) || s[10] != 'T' ||
        !fixed_digits(s + 11, 2, &h) || s[13] != ':' || !fixed_digits(s + 14, 2, &mi) ||
        s[16] != ':' || !fixed_digits(s + 17, 2, &sec))
        return REG_EINVAL;
    const char *p = s + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; is_digit(*p); p++, n++)
            if (n < 9)
                nsec = nsec * 10 + (*p - '0');
        if (n == 0)
            return REG_EINVAL;
        for (; n < 9; n++)
            nsec *= 10;
    }
    int sign = 0;
    if (*p == 'Z') {
        p++;
    } else if ((*p == '+' || *p == '-') && fixed_digits(p + 1, 2, &oh) && p[3] == ':' &&
               fixed_digits(p + 4, 2, &om)) {
        sign = *p == '-' ? -1 : 1;
        p += 6;
    } else {
        return REG_EINVAL;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        sec > 59 || oh > 23 || om > 59)
        return REG_EINVAL;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    out->tv_sec = (time_t)(t - sign * (oh * 3600 + om * 60));
    out->tv_nsec = nsec;
    return 0;
}

void rfc3339_format(const struct timespec *t, char *buf, size_t len)
{
    struct tm tm;
    char whole[32] = "0000-00-00T00:00:00", frac[16] = "";
    time_t sec = t->tv_sec;
    if (gmtime_r(&sec, &tm) != NULL)
        strftime(whole, sizeof(whole), "%Y-%m-%dT%H:%M:%S", &tm);
    if (t->tv_nsec > 0 && t->tv_nsec < 1000000000) {
        snprintf(frac, sizeof(frac), ".%09ld", (long)t->tv_nsec);
        size_t n = strlen(frac); /* ".123000000": its trailing zeros go */
        while (n > 1 && frac[n - 1] == '0')
            frac[--n] = '\0';
    }
    snprintf(buf, len, "%s%sZ", whole, frac);
}

int timespec_cmp(const struct timespec *a, const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec)
        return a->tv_sec < b->tv_sec ? -1 : 1;
    return (a->tv_nsec > b->tv_nsec) - (a->tv_nsec < b->tv_nsec);
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
