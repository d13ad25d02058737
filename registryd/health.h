/*
 * health.h — the active checker: HTTP/HTTPS/TCP probes and TTL expiry on its
 * own thread and libevent loop, with thresholds, deregistration of instances
 * critical for too long, and self-preservation.
 *
 * In a cluster every server checks: the cluster says which checks are this
 * server's (cluster_owns_check: rendezvous hashing over the live servers,
 * TTL checks on the leader), and takes the results (cluster_submit: to the
 * leader, over the server-to-server channel from a follower). Probes
 * themselves are probe.h's.
 *
 * What it checks comes from the store: health_start loads every check, and
 * health_notify re-reads the services an applied command changed. What it
 * finds goes back through the write path (cluster_submit) and only as status
 * *transitions* (plus, at most once per check_update_interval, a changed
 * output with an unchanged status), so steady results cost no durable write.
 *
 * Threads: health_notify, health_ttl_touch, health_ttl_output_due and
 * health_get_stats may be called from any thread (mutex-protected queue +
 * event_active, or state of their own under a mutex); everything else in
 * health.c runs on the checker thread.
 */
#ifndef REGISTRYD_HEALTH_H
#define REGISTRYD_HEALTH_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct cluster;
struct store_change;
struct health;

/* The checker's limits: set at start, and again by a configuration reload
 * (SIGHUP) while checks run. */
struct health_limits {
    unsigned max_concurrent;           /* probes in flight at once */
    uint64_t check_update_interval_ms; /* min gap between output-only writes */
    uint64_t deregister_min_ms;        /* floor of DeregisterCriticalServiceAfter */
    double self_preservation_share;    /* 0..1; 1 disables */
    uint64_t self_preservation_window_ms;
    unsigned self_preservation_min;    /* fewer checks than this: never hold */
};

struct health_options {
    struct store *store;     /* borrowed; read only */
    struct cluster *cluster; /* borrowed; transitions are submitted here */
    struct health_limits limits;
    bool enable_script_checks; /* script checks run only when set */
    bool agent_tls; /* enable_agent_tls_for_checks: TLS probes use tls.h's client context */
};

struct health_stats {
    uint64_t checks;          /* checks known */
    uint64_t probes;          /* probes completed since start */
    uint64_t transitions;     /* status transitions submitted */
    uint64_t to_critical;     /* ... of which to critical */
    uint64_t deregistrations; /* automatic deregistrations submitted */
    uint64_t late_p99_ms;     /* p99 start lateness against schedule, last 10-20 s */
    bool self_preservation;   /* automatic deregistration on hold */
    uint64_t passing, warning, critical; /* checks known here, by stored status */
};

/* Start the checker thread; it loads every check from the store.
 * Returns 0, or REG_ENOMEM / REG_EIO with a message in err. */
int health_start(const struct health_options *opt, struct health **out, char *err,
                 size_t errlen) REG_MUSTCHECK;
/* Stop the thread (probes in flight are abandoned); the any-thread calls
 * below stay safe until health_free (they reach nothing then). NULL, or
 * stopped already: a no-op. */
void health_stop(struct health *h);
/* Stop (health_stop), then free. Only as the process stops, once no other
 * thread calls in: sanitizer builds free everything, others leave the
 * checker's memory to the OS (REG_FREE_AT_EXIT). NULL is a no-op. */
void health_free(struct health *h);

/* The services named in chg changed: re-read their checks. Any thread. */
void health_notify(struct health *h, const struct store_change *chg);
/* A TTL check got a heartbeat (whether or not its status changed). */
void health_ttl_touch(struct health *h, const char *check_id);
/* Should a TTL update of check_id be written now? Always when its status
 * changes; a changed output with the same status only when the check's
 * output was not written in the last check_update_interval (Consul's agent
 * defers those: a heartbeat that carries a timestamp woke every watcher of
 * its service); the newest output held back is written by the checker
 * once the interval is over. Records the write when it says yes. Any
 * thread. */
bool health_ttl_output_due(struct health *h, const char *check_id, const char *status,
                           const char *output, bool status_changes);
/* A TTL update of check_id that brought what is stored: an output held
 * back is dropped (it is no longer the newest). Any thread. */
void health_ttl_output_settled(struct health *h, const char *check_id);
void health_get_stats(struct health *h, struct health_stats *out);

/* Any thread; the checker applies them at its next tick. */
void health_set_limits(struct health *h, const struct health_limits *limits);

#endif
