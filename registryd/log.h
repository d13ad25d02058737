/*
 * log.h — the one logging facility of registryd.
 *
 * One line per event: `level=info module=http msg="..." key=value ...`;
 * callers write the `msg="..." key=value` part.
 * Lines carry an RFC 3339 timestamp unless stderr is the journal
 * (JOURNAL_STREAM set), which stamps lines itself. The level check happens
 * before any formatting, so disabled debug lines cost one comparison.
 * Safe to call from any thread (one fprintf per line; stdio locks the stream).
 */
#ifndef REGISTRYD_LOG_H
#define REGISTRYD_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_threshold;
/* The threshold, read by any thread (SIGHUP's reload writes it). */
static inline enum log_level log_level_now(void)
{
    return __atomic_load_n(&log_threshold, __ATOMIC_RELAXED);
}

/* Parse "debug", "info", "warn", "error"; 0 or REG_EINVAL. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);
void log_init(enum log_level threshold);

void log_emit(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* s as one quoted value ("..." with \ and " escaped, cut to fit) in buf
 * (len >= 3), for a name a client chose: `service=%s` with a name holding
 * spaces or `key=value` text would make fields of its own. Returns buf. */
const char *log_quote(const char *s, char *buf, size_t len);

#define log_at(level, module, ...)                     \
    do {                                               \
        if ((level) >= log_level_now())                \
            log_emit((level), (module), __VA_ARGS__);  \
    } while (0)
#define log_debug(module, ...) log_at(LOG_DEBUG, module, __VA_ARGS__)
#define log_info(module, ...) log_at(LOG_INFO, module, __VA_ARGS__)
#define log_warn(module, ...) log_at(LOG_WARN, module, __VA_ARGS__)
#define log_error(module, ...) log_at(LOG_ERROR, module, __VA_ARGS__)

/* Rate limiting for lines that can repeat (a warning per failed accept, per
 * bad record): one line per interval per call site; the next line that gets
 * through says how many were held back (suppressed=N). Thread-safe. */
struct log_limit {
    unsigned long long next_ms;    /* monotonic ms before which lines are held */
    unsigned long long suppressed; /* held back since the last line */
};
#define LOG_LIMIT_INTERVAL_MS 10000
/* True if a line may go out now; *held gets the count held back before it. */
int log_limit_pass(struct log_limit *l, unsigned long long *held);
#define log_limited(level, module, fmt, ...)                                             \
    do {                                                                                 \
        static struct log_limit lim_;                                                    \
        unsigned long long held_;                                                        \
        if ((level) >= log_level_now() && log_limit_pass(&lim_, &held_))                 \
            log_emit((level), (module), fmt " suppressed=%llu", __VA_ARGS__, held_);     \
    } while (0)

#endif
