/*
 * registry/resilience.h — calls that survive failure: deadlines, retries with
 * backoff and a shared retry budget, circuit breakers and a bulkhead around
 * the requests an application sends to the instances a balancer picks.
 *
 * A policy (struct reg_policy) belongs to one service and is shared by every
 * call to it. One call is one logical request:
 *
 *   1. reg_call_begin admits it: the service breaker must not be open and the
 *      bulkhead must have room (else REG_EOPEN / REG_EBULKHEAD at once).
 *   2. reg_call_attempt picks an instance from the balancer — never one whose
 *      instance breaker is open, and a different one from those this call
 *      already tried while an untried one is left — and says how long this
 *      attempt may take (the per-attempt timeout, cut to what remains of the
 *      call's deadline).
 *   3. The application sends its request (the library knows nothing of its
 *      protocol) and reports the verdict with reg_call_report: success,
 *      retryable failure or non-retryable failure, with the latency. The
 *      report feeds the balancer (reg_balancer_finish: latency, least
 *      connections, ejection), the instance breaker, and says whether to try
 *      again and after which backoff (exponential, full jitter).
 *   4. reg_call_end gives the call's result and frees it.
 *
 * reg_call() runs those steps in a loop for blocking callers; event-driven
 * callers call them from their own loop (the backoff is a timer of theirs),
 * as the watcher's REG_WATCH_LOOP mode does. Nothing here starts a thread.
 *
 * Retries happen only for failures the application marks retryable, only
 * while attempts remain (max_attempts), only if the backoff ends before the
 * deadline, and only if the service's retry budget allows: over the last
 * budget_window_ms, retries may be at most budget_ratio of the calls plus
 * budget_min_per_s per second (Finagle's RetryBudget, Envoy's retry budget).
 * When every instance fails, attempts per call stay near 1 + budget_ratio.
 *
 * Circuit breakers (one per instance, one for the service) are closed, open
 * or half-open. Closed: outcomes go into a sliding window (ten buckets over
 * window_ms); the breaker opens when the window holds at least min_calls and
 * the failure share reaches failure_rate, or after consecutive_failures
 * failures in a row (failure_threshold in other libraries). Slow calls
 * (latency >= slow_call_ms, if set) count as failures. Open: after open_ms
 * (recovery_timeout) it lets half_open_calls trial calls through, one at a
 * time (half-open); if they all succeed it closes, any failure opens it
 * again. An instance
 * breaker judges attempts; the service breaker judges whole calls.
 *
 * Instance breakers do what the balancer's ejection does (and take an
 * instance back after trial calls, where ejection waits out eject_ms); the
 * balancer still ejects on its own unless its eject_after is 0, which is
 * what a balancer used with a policy usually wants.
 *
 * The bulkhead admits at most max_concurrent calls in flight (0: no limit);
 * reg_call_begin waits up to max_wait_ms for room (blocking callers only: an
 * event loop should leave it 0). With adaptive_concurrency the limit moves
 * between 1 and max_concurrent by AIMD (+1 per limit successes, x0.9 on a
 * failure or slow call, as Netflix's concurrency-limits).
 *
 * Thread safety: a policy may be used from any thread; its state is guarded
 * by one mutex. A struct reg_call belongs to one thread at a time. The
 * optional on_state callback runs with that mutex held, on the thread whose
 * report caused the change: it must return quickly and must not call any
 * reg_policy_ / reg_call_ function.
 */
#ifndef REGISTRY_RESILIENCE_H
#define REGISTRY_RESILIENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/balancer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An attempt's verdict, given by the application. */
enum reg_outcome {
    REG_OUTCOME_SUCCESS,   /* the instance answered (even if the answer is a client error) */
    REG_OUTCOME_RETRYABLE, /* failed, safe to try elsewhere (refused, 503, idempotent timeout) */
    REG_OUTCOME_FAILURE    /* failed, and must not be repeated (counts against the instance) */
};

enum reg_breaker_state { REG_BREAKER_CLOSED, REG_BREAKER_OPEN, REG_BREAKER_HALF_OPEN };

/* "closed", "open", "half_open" (static). */
REG_EXPORT const char *reg_breaker_state_name(enum reg_breaker_state s);

struct reg_breaker_options {
    bool enabled;                  /* default true */
    double failure_rate;           /* open at this failure share; default 0.5; 0: off */
    unsigned window_ms;            /* sliding window; default 10000 */
    unsigned min_calls;            /* before the rate counts; default 20 (instance: 10) */
    unsigned consecutive_failures; /* open after this many in a row; default 5 (service: 0 = off) */
    unsigned open_ms;              /* open for this long, then half-open; default 5000 */
    unsigned half_open_calls;      /* trial calls while half-open, one at a time; default 3 */
    unsigned slow_call_ms;         /* 0 (default): latency never counts as failure */
};

/* Called on every breaker transition: `instance` is the instance's ID, or NULL
 * for the service breaker (borrowed for the duration of the call). */
typedef void (*reg_state_cb)(void *arg, const char *instance, enum reg_breaker_state from,
                             enum reg_breaker_state to);

struct reg_policy_options {
    unsigned max_attempts;       /* attempts per call, first included; default 3; max 16 */
    unsigned attempt_timeout_ms; /* default 1000 */
    unsigned deadline_ms;        /* whole call; default 5000 */
    unsigned backoff_base_ms;    /* retry k waits random [0, min(cap, base*2^(k-1))]; default 10 */
    unsigned backoff_cap_ms;     /* default 1000 */
    double budget_ratio;         /* retries per call over the window; default 0.2; 0: floor only */
    unsigned budget_min_per_s;   /* retries always allowed per second; default 10 */
    unsigned budget_window_ms;   /* default 10000 */
    struct reg_breaker_options instance_breaker;
    struct reg_breaker_options service_breaker;
    unsigned max_concurrent;   /* bulkhead: calls in flight; default 0 (no limit) */
    unsigned max_wait_ms;      /* bulkhead: wait for room; default 0 */
    bool adaptive_concurrency; /* AIMD limit in [1, max_concurrent]; default false */
    uint64_t seed;             /* jitter; 0: from the clock */
    /* Time source in microseconds (monotonic); NULL: CLOCK_MONOTONIC. Tests
     * pass a fake clock. The balancer keeps its own clock (ejection). */
    uint64_t (*clock_us)(void *arg);
    void *clock_arg;
    reg_state_cb on_state; /* optional */
    void *state_arg;
};

/* Fill opt with the defaults above. */
REG_EXPORT void reg_policy_defaults(struct reg_policy_options *opt);

struct reg_policy;

/*
 * New policy for one service, calling through balancer `b` (borrowed: it
 * must outlive the policy; keep it fresh with reg_balancer_update as usual).
 * opt NULL means the defaults. Free with reg_policy_free.
 * Errors: REG_EINVAL (b or out NULL, max_attempts 0 or > 16, a rate outside
 * [0, 1], a zero window, adaptive_concurrency without max_concurrent),
 * REG_ENOMEM.
 */
REG_EXPORT int reg_policy_new(const struct reg_policy_options *opt, struct reg_balancer *b,
                              struct reg_policy **out);

/* Free a policy. NULL is a no-op. No call may be in flight on it. */
REG_EXPORT void reg_policy_free(struct reg_policy *p);

/* ---- one call, step by step (event loops) -------------------------------- */

struct reg_call;

/*
 * Admit a call: counts it in the retry budget and the bulkhead. On success
 * *out is a new call; end it with reg_call_end whatever happens next.
 * Errors: REG_EOPEN (the service breaker is open, or half-open with a
 * trial call in flight), REG_EBULKHEAD (max_concurrent in flight and no room
 * within max_wait_ms), REG_EINVAL, REG_ENOMEM.
 */
REG_EXPORT int reg_call_begin(struct reg_policy *p, struct reg_call **out);

/*
 * Start one attempt: pick an instance into *e and set *timeout_ms to the time
 * this attempt may take (min of attempt_timeout_ms and what remains of the
 * deadline, at least 1). Then send the request and call reg_call_report.
 * Errors (the call is then over: call reg_call_end): REG_EDEADLINE (no time
 * left), REG_ENOTFOUND (the balancer has no instance), REG_EOPEN (every
 * instance's breaker is open), REG_EINVAL (an attempt is already running, or
 * the call is over).
 */
REG_EXPORT int reg_call_attempt(struct reg_call *c, struct reg_endpoint *e, uint64_t *timeout_ms);

/*
 * Report the running attempt's verdict and latency (microseconds). Sets
 * *retry: true when another attempt should follow after *backoff_ms
 * milliseconds (then call reg_call_attempt again), false when the call is
 * over (call reg_call_end). backoff_ms may be NULL. 0 or REG_EINVAL (no
 * attempt running).
 */
REG_EXPORT int reg_call_report(struct reg_call *c, enum reg_outcome o, uint64_t latency_us,
                               bool *retry, uint64_t *backoff_ms);

/* Milliseconds left before the call's deadline (0 when past): pass it
 * downstream (a deadline header) so that the callee does not work in vain. */
REG_EXPORT uint64_t reg_call_remaining_ms(const struct reg_call *c);

/* Attempts this call has started so far. */
REG_EXPORT unsigned reg_call_attempts(const struct reg_call *c);

/*
 * End a call (always, exactly once after reg_call_begin succeeded), free it,
 * and return its result: 0 when an attempt succeeded; REG_EFAILED (the last
 * attempt failed: not retryable, or max_attempts reached), REG_EBUDGET (a
 * retry was wanted but the budget is spent), REG_EDEADLINE (the deadline
 * came first), REG_EOPEN / REG_ENOTFOUND (from reg_call_attempt). Ending a
 * call whose attempt is still running counts that attempt as a failure.
 * NULL gives REG_EINVAL.
 */
REG_EXPORT int reg_call_end(struct reg_call *c);

/* ---- one call, blocking ------------------------------------------------- */

/* Send one attempt to e within timeout_ms; `remaining_ms` is what is left of
 * the call's deadline. Return the verdict. */
typedef enum reg_outcome (*reg_attempt_fn)(void *arg, const struct reg_endpoint *e,
                                           uint64_t timeout_ms, uint64_t remaining_ms);

/*
 * Run a whole call on this thread: begin, then attempts through fn (timed by
 * the policy's clock), sleeping the backoff between them (nanosleep), then
 * end. *attempts (may be NULL) gets the number of attempts made. Returns what
 * reg_call_end (or reg_call_begin) returned.
 */
REG_EXPORT int reg_call(struct reg_policy *p, reg_attempt_fn fn, void *arg, unsigned *attempts);

/* ---- what happened ------------------------------------------------------ */

struct reg_policy_stats {
    uint64_t calls; /* admitted by reg_call_begin */
    uint64_t succeeded;
    uint64_t failed; /* ended with an error, rejections excluded */
    uint64_t attempts;
    uint64_t retries;           /* attempts after the first */
    uint64_t budget_exhausted;  /* retries the budget refused */
    uint64_t deadline_exceeded; /* calls ended by their deadline */
    uint64_t bulkhead_rejected;
    uint64_t breaker_rejected; /* calls refused by the open service breaker */
    uint64_t instance_opened;  /* instance breaker transitions, all instances */
    uint64_t instance_half_opened;
    uint64_t instance_closed;
    uint64_t service_opened; /* service breaker transitions */
    uint64_t service_half_opened;
    uint64_t service_closed;
    enum reg_breaker_state service_state;
    unsigned in_flight;         /* calls between begin and end now */
    unsigned concurrency_limit; /* the bulkhead's limit now (0: none) */
};

/* Copy the counters. 0 or REG_EINVAL. */
REG_EXPORT int reg_policy_stats(struct reg_policy *p, struct reg_policy_stats *out);

/* One instance's breaker. */
struct reg_breaker_stats {
    enum reg_breaker_state state;
    uint64_t opened, half_opened, closed; /* transitions so far */
    uint64_t attempts, failures;          /* reported to this breaker so far */
};

/* The breaker of the instance with this ID. REG_ENOTFOUND if no attempt has
 * gone to it yet (or, with more than 256 instances known, none within the
 * breaker's window while it was closed: such entries may be forgotten),
 * REG_EINVAL. */
REG_EXPORT int reg_policy_instance_stats(struct reg_policy *p, const char *id,
                                         struct reg_breaker_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* REGISTRY_RESILIENCE_H */
