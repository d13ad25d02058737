/*
 * leave.h — this server leaving its cluster, as Consul's leave: out of the
 * raft configuration, so that the others' quorum no longer counts it. The
 * one procedure behind PUT /v1/agent/leave (http_operator.c) and SIGTERM
 * with leave_on_terminate (server.c).
 *
 * A server alone (or the last) has nothing to leave. The leader first hands
 * leadership over (raft's transfer: the others go on without waiting out an
 * election), then leaves as a follower; if no one took it, it removes
 * itself, unless that would leave fewer voters answering than a quorum
 * (cluster_removal_keeps_quorum). A follower asks the leader over its
 * channel, again every LEAVE_RETRY_MS (an attempt the leader does not
 * answer, one that stopped, say, stays pending and another is sent), and
 * after a failure, until the deadline.
 *
 * Threads: one event loop; every callback runs on it.
 */
#ifndef REGISTRYD_LEAVE_H
#define REGISTRYD_LEAVE_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"

struct event_base;
struct cluster_link;
struct leave;

/* How this loop reaches the cluster: its status and channel, and the two
 * changes (transfer: hand leadership over; else remove server id), whose
 * callback must come back on this loop. */
struct leave_via {
    struct cluster *cluster;
    struct cluster_link *link;
    void (*change)(void *ctx, bool transfer, uint64_t id, cluster_done_cb cb, void *arg);
    void *ctx;
};

/* Called once: 0 (out of the configuration, or alone), or a REG_E* code
 * with why (one line). */
typedef void leave_done_cb(void *arg, int status, const char *why);

/*
 * Start leaving, giving up after within_ms; the first attempt runs on the
 * loop's next turn (done is never called from here). The leave is put on
 * *list, where it stays until its last pending attempt has called back.
 * Returns 0 or REG_ENOMEM.
 */
int leave_start(struct event_base *base, const struct leave_via *via, uint64_t within_ms,
                leave_done_cb *done, void *arg, struct leave **list);

/* The loop is ending and the cluster and channel call back no more: end
 * every leave on *list (done with REG_ESHUTDOWN if not done yet) and free
 * them. */
void leave_free_all(struct leave **list);

#endif
