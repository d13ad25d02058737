/*
 * registry/balancer.h — picking one instance of a service per request.
 *
 * A balancer holds the current instance list (replace it with
 * reg_balancer_update, typically from a watcher's callback) and answers
 * reg_balancer_pick with one instance. Strategies:
 *
 *   REG_ROUND_ROBIN   each healthy instance in turn.
 *   REG_WEIGHTED      smooth weighted round-robin (nginx's algorithm): over
 *                     every cycle of sum(weights) picks each instance is
 *                     picked exactly its weight, interleaved. The cycle is
 *                     computed once per update, so a pick is O(1); lists whose
 *                     cycle is too long to precompute (n x sum > 5e7) use
 *                     earliest-deadline-first with deadlines k/weight, which is
 *                     exact per cycle too, in O(log n).
 *   REG_LEAST_CONN    fewest requests in flight (the caller brackets each
 *                     request with reg_balancer_start/finish); exact among up
 *                     to 8 instances, power of two random choices beyond;
 *                     ties broken at random.
 *   REG_LATENCY       peak-EWMA of reported latency x (in flight + 1), power
 *                     of two choices (Finagle's and Linkerd's balancer). An
 *                     instance's cost decays with time when it is not used,
 *                     so a recovered instance gets traffic back.
 *
 * For every strategy: instances the caller reports failing
 * `eject_after` times in a row are left out for `eject_ms` (at most
 * `max_ejected` of them at once); in panic — fewer than `panic_threshold` of
 * the instances healthy (passing or warning, not ejected) — picks spread over
 * all of them rather than overload the few; new instances may ramp up over
 * `slow_start_ms`.
 *
 * Thread safety: every function may be called from any thread at any time;
 * a pick takes one short lock. An update swaps the list atomically: after
 * reg_balancer_update returns, no pick returns a removed instance.
 */
#ifndef REGISTRY_BALANCER_H
#define REGISTRY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

enum reg_strategy { REG_ROUND_ROBIN, REG_WEIGHTED, REG_LEAST_CONN, REG_LATENCY };

struct reg_balancer_options {
    enum reg_strategy strategy;
    uint64_t seed;            /* 0: seeded from the clock */
    double panic_threshold;   /* default 0.5; 0 disables panic mode */
    unsigned eject_after;     /* consecutive failures; default 5; 0 disables ejection */
    unsigned eject_ms;        /* default 30000 */
    double max_ejected;       /* share of instances; default 0.5 */
    unsigned slow_start_ms;   /* 0 (default): new instances get full traffic at once */
    unsigned decay_ms;        /* REG_LATENCY: EWMA time constant, default 10000 */
};

/* Fill opt with the defaults above for `strategy`. */
REG_EXPORT void reg_balancer_defaults(struct reg_balancer_options *opt,
                                      enum reg_strategy strategy);

/* "round_robin", "weighted", "least_connections", "latency" -> enum.
 * 0 or REG_EINVAL. reg_strategy_name is the reverse (static string). */
REG_EXPORT int reg_strategy_parse(const char *name, enum reg_strategy *out);
REG_EXPORT const char *reg_strategy_name(enum reg_strategy s);

struct reg_balancer;

/* New empty balancer; opt NULL means round-robin defaults. Free with
 * reg_balancer_free. 0, REG_EINVAL or REG_ENOMEM. */
REG_EXPORT int reg_balancer_new(const struct reg_balancer_options *opt,
                                struct reg_balancer **out);
REG_EXPORT void reg_balancer_free(struct reg_balancer *b);

/* Replace the instance list (copied; the caller keeps `list`). Statistics
 * (in flight, latency, failures) follow instances by ID across updates.
 * 0 or REG_ENOMEM (the old list stays). */
REG_EXPORT int reg_balancer_update(struct reg_balancer *b, const struct reg_instance *list,
                                   size_t n);

/* What a pick returns: copies, valid as long as the caller keeps them. */
struct reg_endpoint {
    char id[128];
    char address[256];
    int port;
};

/* Pick one instance. REG_ENOTFOUND when the list is empty. */
REG_EXPORT int reg_balancer_pick(struct reg_balancer *b, struct reg_endpoint *out);

/* Bracket a request to a picked endpoint: start before sending, finish with
 * its latency (microseconds) and outcome. Unknown (removed) endpoints are
 * ignored. Needed by REG_LEAST_CONN and REG_LATENCY, and by ejection. */
REG_EXPORT void reg_balancer_start(struct reg_balancer *b, const struct reg_endpoint *e);
REG_EXPORT void reg_balancer_finish(struct reg_balancer *b, const struct reg_endpoint *e,
                                    uint64_t latency_us, bool success);

/* How many instances are in the list, and how many are ejected now. */
REG_EXPORT void reg_balancer_counts(struct reg_balancer *b, size_t *total, size_t *ejected);

#ifdef __cplusplus
}
#endif
#endif /* REGISTRY_BALANCER_H */
