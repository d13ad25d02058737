/*
 * check_rules.h — the checker's decisions as pure functions, apart from its
 * thread, timers and probes, so that each is unit-tested with a fake clock:
 *   - thresholds: does a probe result change what a check reports
 *     (SuccessBeforePassing, FailuresBeforeCritical);
 *   - self-preservation (Eureka's): hold automatic deregistration while a
 *     large share of all checks turned critical within a window;
 *   - rendezvous ownership: which of the live servers runs a check.
 */
#ifndef REGISTRYD_CHECK_RULES_H
#define REGISTRYD_CHECK_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Statuses as probe.h numbers them. */
enum { RULES_PASSING = 0, RULES_WARNING = 1, RULES_CRITICAL = 2 };

/* Consecutive results of one check. */
struct rules_run {
    int succ, fail;
};

/*
 * A probe returned `result` for a check whose stored status is `stored`:
 * count it, and say what to report: a status, or RULES_HOLD for nothing
 * (held back by a threshold). As Consul's StatusHandler: passing and
 * warning results count as successes, critical ones as failures. A success
 * is reported after succ_before in a row, or at once when it is the status
 * the check has already (its output moves). A failure is reported as critical after fail_before in
 * a row, or at once when the check is critical already (its output moves);
 * before that, after warn_before in a row, as warning (warn_before 0: no
 * warning step, Consul's default of FailuresBeforeCritical). Thresholds
 * below 1 count as 1.
 */
#define RULES_HOLD (-1)
int rules_threshold(struct rules_run *run, int stored, int result, int succ_before,
                    int fail_before, int warn_before);

/* Self-preservation's window: transitions to critical per second. */
#define RULES_SP_BUCKETS 3600 /* up to an hour */
struct rules_sp {
    uint32_t bucket[RULES_SP_BUCKETS];
    uint64_t last_sec;
    bool active;
};

struct rules_sp_limits {
    double share;       /* 0..1; >= 1 disables */
    uint64_t window_ms; /* 1 s .. RULES_SP_BUCKETS s */
    unsigned min;       /* fewer checks than this: never hold */
};

void rules_sp_init(struct rules_sp *sp, uint64_t now_ms);
/* One check turned critical at now_ms. */
void rules_sp_record(struct rules_sp *sp, uint64_t now_ms);
/*
 * Once a second: turn self-preservation on when more than share x total
 * checks turned critical within the window (and total >= min), off again
 * when no more than share x total are critical now. Returns +1 when it
 * turned on, -1 when it turned off, 0 otherwise; *recent is the count of
 * transitions in the window.
 */
int rules_sp_update(struct rules_sp *sp, uint64_t now_ms, const struct rules_sp_limits *lim,
                    uint64_t total, uint64_t critical, uint64_t *recent);

/*
 * Rendezvous hashing: does self win key among the live servers (self need
 * not be listed; an id equal to self is ignored)? The winner is the server
 * with the highest hash_mix64(key ^ hash_mix64(id)).
 */
bool rules_rendezvous_self(uint64_t key, uint64_t self, const uint64_t *live, size_t n);

#endif
