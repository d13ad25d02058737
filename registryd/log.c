/*
 * log.c — see log.h. The caller's text is `msg="..." key=value ...`.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "duration.h"
#include "registry/error.h"

enum log_level log_threshold = LOG_INFO;
static int log_timestamps = 1;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcmp(name, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return REG_EINVAL;
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < 4 ? log_names[level] : "info";
}

void log_init(enum log_level threshold)
{
    __atomic_store_n(&log_threshold, threshold, __ATOMIC_RELAXED);
    log_timestamps = getenv("JOURNAL_STREAM") == NULL;
}

void log_emit(enum log_level level, const char *module, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char stamp[40] = "";
    if (log_timestamps) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    fprintf(stderr, "%slevel=%s module=%s %s\n", stamp, log_level_name(level), module, msg);
}

const char *log_quote(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    for (; s && *s && o + 3 < len; s++) {
        if (*s == '"' || *s == '\\')
            buf[o++] = '\\';
        buf[o++] = *s;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

int log_limit_pass(struct log_limit *l, unsigned long long *held)
{
    unsigned long long now = mono_ms();
    unsigned long long next = __atomic_load_n(&l->next_ms, __ATOMIC_RELAXED);
    if (now < next ||
        !__atomic_compare_exchange_n(&l->next_ms, &next, now + LOG_LIMIT_INTERVAL_MS, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&l->suppressed, 1, __ATOMIC_RELAXED);
        return 0;
    }
    *held = __atomic_exchange_n(&l->suppressed, 0, __ATOMIC_RELAXED);
    return 1;
}
