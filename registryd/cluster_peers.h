/*
 * cluster_peers.h — which servers are alive, and which one runs a check.
 *
 * Every second this server asks each other voter GET /v1/internal/raft/self
 * at its announced HTTP address, over one kept-open connection per peer; a
 * peer that answered within the last PEERS_ALIVE_MS is alive. A check
 * belongs to the live server (this one always counts itself) with the
 * highest rendezvous score hash(check id, server id), so each check runs on
 * one server and only the checks of a server that comes or goes move. TTL
 * checks belong to the leader, which receives the heartbeats. A server that
 * knows no peers (a single server, or one still forming) runs what it leads.
 *
 * Threads: the probing runs on the front end's loop; cluster_peers_owns may
 * be called from any thread (the live set is published under a mutex).
 */
#ifndef REGISTRYD_CLUSTER_PEERS_H
#define REGISTRYD_CLUSTER_PEERS_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct store;
struct cluster;
struct cluster_peers;

#define PEERS_PROBE_MS 1000
#define PEERS_ALIVE_MS 3000

/* base, store and cluster are borrowed and outlive the peers. */
int cluster_peers_new(struct event_base *base, struct store *store, struct cluster *cluster,
                      struct cluster_peers **out) __attribute__((warn_unused_result));
/* NULL is a no-op. On the front end's thread. */
void cluster_peers_free(struct cluster_peers *p);

/* Does this server run the check with this id? Any thread. */
bool cluster_peers_owns(struct cluster_peers *p, const char *check_id, bool ttl);

/* Did the server with this raft id answer within PEERS_ALIVE_MS? This one
 * always has; a server not probed (a non-voter, or not yet announced) is
 * taken as alive. Any thread. */
bool cluster_peers_alive(struct cluster_peers *p, uint64_t id);

/* How many servers answered within PEERS_ALIVE_MS, this one included (a
 * server not yet probed does not count). Any thread. */
int cluster_peers_n_alive(struct cluster_peers *p);

#endif
