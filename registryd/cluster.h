/*
 * cluster.h — the replicated write path: libraft (Debian's 0.15, libuv
 * backend) on its own thread, with the store as its state machine.
 *
 * A single server is a one-member Raft cluster, so writes take the same path
 * everywhere: front end -> cluster_submit -> raft_apply -> (quorum, fsync) ->
 * FSM apply = store_apply -> completion back on the front-end thread. On a
 * follower, cluster_submit hands the command to the server-to-server channel
 * (cluster_link.h), which proposes it to the leader.
 *
 * cluster also owns membership: formation's view of the servers
 * (cluster_learn/cluster_known), peer liveness and check ownership
 * (cluster_peers.h), and the channel.
 *
 * Threads: cluster_submit may be called from any thread; the callbacks it
 * delivers run on the front end's event_base thread. Everything raft_* runs
 * on the cluster thread. Hand-offs are queue.h's queues with uv_async_send
 * one way and event_active the other (libevent must have
 * evthread_use_pthreads()).
 */
#ifndef REGISTRYD_CLUSTER_H
#define REGISTRYD_CLUSTER_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct store;
struct store_change;
struct cluster;

/* Outcome of a submitted command, on the front-end thread: 0, the
 * command's own error (REG_ENOTFOUND...), REG_ENOTLEADER (not appended:
 * nothing was done, it may be sent again), REG_ELEADERLOST (appended, then
 * leadership was lost: it may yet commit), REG_ESHUTDOWN or REG_ERAFT. */
typedef void (*cluster_done_cb)(void *arg, int status);
/* Every applied change, on the front-end thread (for blocking queries). */
typedef void (*cluster_change_cb)(void *arg, const struct store_change *chg);

struct cluster_options {
    const char *data_dir;  /* raft log lives in data_dir/raft */
    const char *raft_addr; /* "IPv4:port"; NULL = 127.0.0.1 with a free port */
    /* "host:port" addresses (NULL: none) whose ports a free one picked for
     * raft must not be: this server's own listeners, bound after raft */
    const char *avoid_addrs[3];
    struct store *store;   /* borrowed; written only on the cluster thread */
    struct event_base *base; /* front end's loop, for completions */
    cluster_change_cb on_change;
    void *change_arg;
    const char *http_addr; /* announced when leading, so followers can forward */
    /* announced with it: this server's node name, address and meta (the
     * node_meta setting, KEY:VALUE lines), which the others show for it
     * (members, the raft configuration, the catalog, DNS) */
    const char *node, *node_addr, *node_meta;
    /* entries between snapshots; 0: cluster_snapshot_threshold's choice,
     * which grows with the store */
    unsigned snapshot_threshold;
    /* write raft snapshots LZ4-compressed (libraft reads either kind) */
    bool snapshot_compression;
    /* The raft port's shared secret (>= 32 chars; borrowed, must outlive the
     * cluster), used when TLS is off; NULL: none (raft_transport.h). */
    const char *cluster_key;
    /* Optional, on the front-end thread: a proposal's seconds from
     * submission to its outcome (for metrics; cluster knows no metrics). */
    void (*on_applied)(double seconds);
    /* Restart without a rebuild (store.h): the raft index the kept store
     * has applied (0: the store was rebuilt); raft skips the snapshot at
     * start and the entries up to it. */
    uint64_t reuse_applied;
    /* Where to write the index raft had applied when it stopped (0 if it
     * never ran), on the raft thread before cluster_free returns; or NULL. */
    uint64_t *applied_at_stop;
};

/* A server: a member of the initial configuration of a new cluster, or
 * one this server has heard of while forming it. */
struct cluster_member {
    uint64_t id;
    char raft_addr[64];
    char http_addr[128]; /* "" when not known */
};

/*
 * Start the cluster thread and wait (bounded) until this server leads and
 * has applied its whole log, so that reads see every acknowledged write.
 * Returns 0 or REG_ERAFT / REG_ENOMEM with a message in err.
 */
int cluster_start(const struct cluster_options *opt, struct cluster **out, char *err,
                  size_t errlen) REG_MUSTCHECK;

/*
 * The same in three steps, for servers that form a cluster with others:
 * cluster_new sets up (identity, queues; writes fail with REG_ENOTLEADER until
 * run), cluster_run starts raft — bootstrapping the n members given if n > 0
 * (every founding member bootstraps the same list), or joining/restarting
 * with what is on disk if n == 0 — and cluster_wait_ready waits until some
 * leader has committed a barrier this server has applied (0 or
 * REG_ETIMEDOUT). cluster_run may be called from any thread, once.
 */
int cluster_new(const struct cluster_options *opt, struct cluster **out, char *err,
                size_t errlen) REG_MUSTCHECK;
int cluster_run(struct cluster *c, const struct cluster_member *members, size_t n, char *err,
                size_t errlen) REG_MUSTCHECK;
/* This server's raft id and address; whether its raft directory is empty. */
void cluster_self(struct cluster *c, uint64_t *id, const char **raft_addr);
/* This server's announcement (CMD_SERVER's arguments: ID, Raft, HTTP and,
 * when configured, Node, Address and NodeMeta), as the leader stores it
 * for itself and the formation thread sends it: one record, so that
 * neither drops what the other wrote. A new reference; NULL: no memory or
 * no HTTP address. */
struct json_t *cluster_announcement(struct cluster *c);

/*
 * Formation's view of the servers (any thread). Servers learn each other
 * transitively: every hello carries what the sender knows and is answered
 * with what the receiver knows, so any connected join graph ends with every
 * server knowing every other. cluster_learn adds or refreshes m (by id;
 * REG_ETOOBIG when CLUSTER_MAX_SERVERS are known already); cluster_known
 * copies up to max servers, this one first, and returns how many there are.
 */
int cluster_learn(struct cluster *c, const struct cluster_member *m);
size_t cluster_known(struct cluster *c, struct cluster_member *out, size_t max);
/* The raft configuration once raft runs (0 before): up to max members. */
size_t cluster_configuration(struct cluster *c, struct cluster_member *out, size_t max);
bool cluster_fresh(struct cluster *c);
int cluster_wait_ready(struct cluster *c, int timeout_ms);
/* Whether the store holds what this server had: false from a start with
 * raft state and a rebuilt store (after an unclean stop it starts empty)
 * until raft has replayed what is committed into it (the server is
 * ready); reads from it meanwhile would answer "nothing registered", as
 * Consul's did (hashicorp/consul#4554). Any thread; NULL: true. */
bool cluster_caught_up(struct cluster *c);

/* Membership changes, on the leader (else REG_ENOTLEADER). cb as for
 * cluster_submit. Adding an existing member only makes sure it votes. */
void cluster_add_voter(struct cluster *c, uint64_t id, const char *raft_addr, cluster_done_cb cb,
                       void *arg);
void cluster_remove(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg);

/* For ?consistent reads: commit a barrier, which succeeds only while this
 * server still leads a quorum and once everything before it is applied. */
void cluster_confirm_leadership(struct cluster *c, cluster_done_cb cb, void *arg);
/* On the leader: hand leadership to voter `to` (0: the voter most up to
 * date; raft's transfer); cb with 0 once this server no longer leads,
 * REG_ETIMEDOUT if after an election timeout it still does, REG_ECONFLICT
 * while another transfer is under way, or another error (no voter to take
 * it, `to` not another voter: REG_ERAFT). */
void cluster_transfer_leadership(struct cluster *c, uint64_t to, cluster_done_cb cb, void *arg);

/* Stop raft, join the thread, free everything. Call on the front-end
 * thread after its loop has stopped: submissions still pending get their
 * callback here with REG_ESHUTDOWN. NULL is a no-op. */
void cluster_free(struct cluster *c);

/*
 * Propose an encoded command (command.h), allocated with cluster_alloc;
 * the buffer is taken in every case. On a follower the command travels to
 * the leader over the server-to-server channel. cb runs later on the
 * front-end thread, exactly once (unless the cluster is freed first). Any
 * thread may call it.
 */
void cluster_submit(struct cluster *c, void *buf, size_t len, cluster_done_cb cb, void *arg);

/*
 * The same, but only on this server: REG_ENOTLEADER (through cb) when it
 * does not lead, where cluster_submit would send the command to the leader
 * over the server-to-server channel (cluster_link.h). For commands that
 * arrived over that channel, which must not travel further.
 */
void cluster_submit_here(struct cluster *c, void *buf, size_t len, cluster_done_cb cb,
                         void *arg);

/*
 * Entries between raft snapshots when none is configured, for a store whose
 * last snapshot was snapshot_bytes long: CLUSTER_SNAPSHOT_ENTRIES (Consul's
 * 16384), or one entry per CLUSTER_SNAPSHOT_BYTES_PER_ENTRY of snapshot if
 * that is more, up to CLUSTER_SNAPSHOT_ENTRIES_MAX. A snapshot copies,
 * checksums, compresses and writes the whole store (the copy on a thread
 * of its own at a lower priority, from a read the raft thread opens; see fsm_snapshot): at a
 * fixed interval its cost per write grows with the store (at a million
 * instances, 750 MB copied in 0.7-2 s every 16384 writes, then compressed
 * by libraft: when the raft thread still made the copy, writes stopped for
 * a second every few seconds); this keeps it near a constant share of each write
 * (the cap, reached at about 540 MB of snapshot, bounds the log libraft
 * holds in memory and replays after a crash).
 */
#define CLUSTER_SNAPSHOT_ENTRIES 16384u
#define CLUSTER_SNAPSHOT_BYTES_PER_ENTRY 2048u
#define CLUSTER_SNAPSHOT_ENTRIES_MAX 262144u
unsigned cluster_snapshot_threshold(uint64_t snapshot_bytes);

/* Allocator to encode commands with (raft_malloc), and its free. */
void *cluster_alloc(size_t n);
void cluster_free_buf(void *buf);

/* The server-to-server channel this cluster's front end uses (borrowed). */
struct cluster_link *cluster_get_link(struct cluster *c);

/* Does this server run the check with this id (cluster_peers.h)? Any
 * thread. */
bool cluster_owns_check(struct cluster *c, const char *check_id, bool ttl);

/* Is the server with this raft id alive as this one sees it
 * (cluster_peers_alive)? Any thread. */
bool cluster_server_alive(struct cluster *c, uint64_t id);
/* How many servers this one heard answer lately, itself included
 * (cluster_peers_n_alive). Any thread. */
int cluster_servers_alive(struct cluster *c);

/* The most servers a configuration may hold (Consul recommends 3 or 5; more
 * slows every commit). Joins beyond it are refused. */
#define CLUSTER_MAX_SERVERS 9

/* Published state, readable from any thread. */
struct cluster_status {
    bool known_leader;
    bool is_leader;
    uint64_t last_contact_ms; /* 0 on the leader */
    char leader_addr[64];     /* raft address of the leader, "" if none */
    char self_addr[64];
    uint64_t term, commit_index, applied_index;
    uint64_t leader_id, self_id;
    int n_servers; /* the current configuration, <= CLUSTER_MAX_SERVERS */
    struct {
        uint64_t id;
        char addr[64];
        bool voter;
        /* on the leader: it heard from this server within
         * CLUSTER_RESPONSIVE_MS (itself: always); elsewhere: true */
        bool responsive;
    } servers[CLUSTER_MAX_SERVERS];
};
void cluster_get_status(struct cluster *c, struct cluster_status *out);
#define CLUSTER_RESPONSIVE_MS 2000 /* 2.5 election timeouts */

/* Would removing member leave at least a quorum of the voters left
 * answering the leader (st: the leader's status)? If not, nothing could
 * commit after it until they come back: false, with why. */
bool cluster_removal_keeps_quorum(const struct cluster_status *st, uint64_t member, char *why,
                                  size_t whylen);

#endif
