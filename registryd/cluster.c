/*
 * cluster.c — libraft on its own libuv thread (see cluster.h).
 *
 * Owns: the uv loop, the raft instance and its I/O, the proposal queue
 * (front end -> raft) and the completion/change queue (raft -> front end),
 * and the published status. The server's raft id and address are chosen on
 * first start and kept in DATA_DIR/server.json, so a restart is the same
 * member of the same configuration.
 */
#define _GNU_SOURCE /* gettid, pthread_setname_np */
#include "cluster.h"
#include "cluster_files.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "aio_destroy.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "registry/error.h"
#include "cluster_link.h"
#include "cluster_peers.h"
#include "command.h"
#include "common.h"
#include "raft_transport.h"
#include "duration.h"
#include "store.h"

#define CLUSTER_READY_TIMEOUT_MS 30000
#define CLUSTER_STATUS_POLL_MS 50

enum proposal_kind { PROP_APPLY, PROP_ADD_VOTER, PROP_REMOVE, PROP_BARRIER, PROP_TRANSFER };

struct proposal {
    struct queue_node qn; /* in c->in, then in c->done */
    struct cluster *c;
    enum proposal_kind kind;
    raft_id member_id;      /* PROP_ADD_VOTER / PROP_REMOVE */
    char member_addr[64];
    struct raft_change change;
    struct raft_barrier barrier;
    struct raft_transfer transfer;
    struct raft_apply req;
    void *buf;
    size_t len;
    cluster_done_cb cb;
    void *arg;
    int status;
    double submitted; /* monotonic seconds, for the apply-latency metric */
    struct proposal *next_held; /* on c->transfer_held */
    bool may_travel; /* cluster_submit's: to the leader over the channel, should
                        this server not lead (cluster_submit_here's stay) */
    bool resend;     /* done: to be proposed to the leader, buf kept (out_cb) */
};

struct change_msg {
    struct queue_node qn; /* in c->changes */
    struct store_change chg;
};

struct cluster {
    struct cluster_options opt;
    char raft_dir[4096];
    char addr[64];
    raft_id id;

    /* cluster thread */
    pthread_t thread;
    bool thread_started;
    uv_loop_t loop;
    bool loop_init;
    uv_async_t wake;     /* proposals queued */
    uv_async_t stop;     /* cluster_free asked to stop */
    uv_timer_t poll;     /* publishes status */
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    struct raft_barrier barrier;
    bool barrier_sent;
    bool io_init, transport_init, raft_init;
    int raft_fd; /* the raft port, held bound from its choice to its listen; -1 */
    bool running; /* cluster_run succeeded (atomic) */
    bool announce_again; /* a restore replaced the server records */
    bool closing;        /* stopping: no raft_* call (but raft_close) from then on */
    /* requests that append an entry (raft_apply, raft_barrier, membership
     * changes) whose callback has not run: stop waits for them */
    unsigned applying;
    /* Commands raft refused without appending them, while this leader
     * hands leadership over or (this server's own) just after it stopped
     * leading, oldest first: applied here if it still leads once the
     * transfer ends, else sent to the new leader (release_held, at the
     * next status poll). A client's write then waits tens of ms instead of
     * failing with "No cluster leader". */
    struct proposal *transfer_held, **transfer_held_tail;
    unsigned drain_ticks; /* waited for them at stop (DRAIN_TICK_MS each) */
    struct raft spent;    /* what a late second io close callback finds (raft_closed) */
    bool io_spent;        /* raft closed: the io is freed once the loop ran dry */
    bool snap_busy;       /* a snapshot taken and not yet finalized (being copied,
                           * or written by libraft's io): stop waits for it */
    bool starting;       /* inside raft_start (its snapshot restore) */
    struct cluster_held held; /* the snapshot held aside during raft_start */
    struct raft_buffer start_snap; /* the snapshot skipped at start, until
                                    * raft_start says its index */
    bool store_behind;   /* an apply or restore failed in the store: it lacks
                          * something raft applied, so it is never kept */
    /* raft snapshots (raft thread only): a warm buffer kept for the next
     * one, and the capacity of the one libraft holds (one at a time) */
    void *snap_spare;
    size_t snap_spare_cap, snap_held_cap;
    /* The snapshot being taken: a read of the store at the applied index,
     * opened on the raft thread (fsm_snapshot), copied on a thread of its
     * own (fsm_snapshot_async, io_async_work), closed by fsm_snapshot_finalize. */
    struct store_read *snap_rd;
    size_t snap_len;
    unsigned snap_threshold; /* as libraft has it now */

    struct queue in;      /* proposals: front end -> cluster (wake) */
    struct queue done;    /* proposals answered: cluster -> front end (out_ev) */
    struct queue changes; /* applied changes: cluster -> front end (out_ev) */
    struct event *out_ev;

    /* published status */
    pthread_mutex_t status_lock;
    pthread_cond_t ready_cond;
    bool ready;
    /* started with raft state but a store rebuilt (an unclean stop): the
     * store is empty until raft has replayed into it (cluster_caught_up) */
    bool rebuilding;
    int start_error;
    struct cluster_status status;
    uint64_t last_leader_seen_ms; /* monotonic; the start until a leader is seen */
    /* when this server, leading, last heard from each other (responsive) */
    struct heard {
        raft_id id;
        uint64_t ms;
    } heard[CLUSTER_MAX_SERVERS];
    struct cluster_link *link;   /* to the leader, on the front end's loop */
    struct cluster_peers *peers; /* liveness and check ownership, likewise */
    /* formation: the servers heard of, this one first (under status_lock) */
    struct cluster_member known[CLUSTER_MAX_SERVERS];
    size_t n_known;
};

void *cluster_alloc(size_t n)
{
    return raft_malloc(n);
}

void cluster_free_buf(void *buf)
{
    raft_free(buf);
}

struct cluster_link *cluster_get_link(struct cluster *c)
{
    return c->link;
}

bool cluster_owns_check(struct cluster *c, const char *check_id, bool ttl)
{
    return cluster_peers_owns(c->peers, check_id, ttl);
}

bool cluster_server_alive(struct cluster *c, uint64_t id)
{
    return cluster_peers_alive(c->peers, id);
}

int cluster_servers_alive(struct cluster *c)
{
    return cluster_peers_n_alive(c->peers);
}

/* The removal of member commits, and everything after it, with the voters
 * left: if fewer of them answer the leader than a quorum, nothing commits
 * again until they come back (one server leaving while another is down,
 * say). False, with why, then. On the leader (st is its status). */
bool cluster_removal_keeps_quorum(const struct cluster_status *st, uint64_t member, char *why,
                                 size_t whylen)
{
    int left = 0, answering = 0;
    for (int i = 0; i < st->n_servers && i < CLUSTER_MAX_SERVERS; i++)
        if (st->servers[i].voter && st->servers[i].id != member) {
            left++;
            answering += st->servers[i].responsive;
        }
    if (left == 0 || answering >= left / 2 + 1)
        return true;
    snprintf(why, whylen,
             "Refusing to remove raft peer %llu: of the %d voters left, %d answer the leader, "
             "fewer than a quorum (%d), so the cluster could commit nothing after it; bring the "
             "others back, or remove a dead one first",
             (unsigned long long)member, left, answering, left / 2 + 1);
    return false;
}

/* ---- identity ---------------------------------------------------------- */

/* Bind 127.0.0.1:want (0: the kernel picks): the port it got, the socket
 * kept bound in *fd; or 0. Without SO_REUSEADDR: Linux lets two sockets
 * that both set it bind one port while neither listens, and a server holds
 * its port unlistened for as long as the cluster forms. Two servers started
 * together once held the same port that way, gave the same raft address,
 * and no cluster formed ("raft bootstrap": a duplicate address). The
 * transport sets it as it starts listening (raft_transport.c), so that a
 * restart (libuv's bind sets it too) shares the port with the TIME_WAIT
 * remains of this run's connections. */
static unsigned short try_port(unsigned short want, int *fd)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(want)};
    socklen_t sl = sizeof(sa);
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0)
        return 0;
    bool ok = bind(*fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
              getsockname(*fd, (struct sockaddr *)&sa, &sl) == 0;
    if (!ok) {
        close(*fd);
        *fd = -1;
    }
    return ok ? ntohs(sa.sin_port) : 0;
}

/* A raft port for a server given none (--dev, or a first start without
 * raft_addr), chosen below the kernel's ephemeral range (that range is
 * for outgoing connections) and held bound (*fd) until the transport
 * listens on it: nothing else can take it in between (the kernel's own
 * pick, released and bound again later, was lost that way in parallel
 * test runs). */
/* Whether port is one of addrs' ("host:port", NULL ones skipped). */
static bool port_among(unsigned port, const char *const addrs[3])
{
    for (int i = 0; i < 3; i++) {
        const char *colon = addrs[i] ? strrchr(addrs[i], ':') : NULL;
        if (colon && strtoul(colon + 1, NULL, 10) == port)
            return true;
    }
    return false;
}

static int pick_free_port(unsigned short *port, int *fd, const char *const avoid[3])
{
    unsigned lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2 || lo > 65535)
            lo = 32768;
        fclose(f);
    }
    /* the lower half below the range: tools that pick ports for servers
     * (the tests' harness among them) tend to use the upper one */
    unsigned first = lo / 4 > 1024 ? lo / 4 : 1024, end = lo / 2;
    for (int i = 0; i < 64 && end > first; i++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
            break;
        unsigned short want = (unsigned short)(first + r % (end - first));
        /* not a port this server listens on next (the range holds 8500
         * and 8600: the HTTP and DNS defaults) */
        if (!port_among(want, avoid) && (*port = try_port(want, fd)) != 0)
            return 0;
    }
    *port = try_port(0, fd);
    return *port ? 0 : REG_EIO;
}

/* Load or create DATA_DIR/server.json {"id": N, "raft_addr": "..."}. */
static int load_identity(struct cluster *c, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/server.json", c->opt.data_dir);
    json_error_t jerr;
    json_t *saved = json_load_file(path, 0, &jerr);
    if (saved != NULL) {
        json_int_t id = json_integer_value(json_object_get(saved, "id"));
        const char *addr = json_string_value(json_object_get(saved, "raft_addr"));
        if (id <= 0 || addr == NULL) {
            snprintf(err, errlen, "%s: missing id or raft_addr", path);
            json_decref(saved);
            return REG_ECONFIG;
        }
        c->id = (raft_id)id;
        snprintf(c->addr, sizeof(c->addr), "%s", c->opt.raft_addr ? c->opt.raft_addr : addr);
        json_decref(saved);
        return 0;
    }
    if (access(path, F_OK) == 0) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return REG_ECONFIG;
    }
    char raft_dir[4200];
    snprintf(raft_dir, sizeof(raft_dir), "%s/raft", c->opt.data_dir);
    if (cluster_has_state(raft_dir)) {
        /* A new identity would not be in the configuration on disk: the
         * server would wait for a leadership it can never win. */
        snprintf(err, errlen,
                 "%s is missing but %s holds raft state: this server's raft identity is lost. "
                 "Put server.json back ({\"id\": N, \"raft_addr\": \"IP:PORT\"}, from a backup "
                 "of the data dir), or restore a snapshot into a fresh data dir",
                 path, raft_dir);
        return REG_ECONFIG;
    }
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL);
    c->id = (raft_id)(rnd & 0x7fffffff) + 1;
    if (c->opt.raft_addr) {
        snprintf(c->addr, sizeof(c->addr), "%s", c->opt.raft_addr);
    } else {
        unsigned short port;
        if (pick_free_port(&port, &c->raft_fd, c->opt.avoid_addrs) != 0) {
            snprintf(err, errlen, "cannot pick a free loopback port for raft: %s", strerror(errno));
            return REG_EIO;
        }
        snprintf(c->addr, sizeof(c->addr), "127.0.0.1:%u", port);
    }
    json_t *obj = json_pack("{s:I, s:s}", "id", (json_int_t)c->id, "raft_addr", c->addr);
    int rc = obj ? json_dump_file(obj, path, JSON_INDENT(2)) : -1;
    json_decref(obj);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot write", path);
        return REG_EIO;
    }
    return 0;
}

/* ---- FSM (cluster thread) ---------------------------------------------- */

static void out_notify(struct cluster *c)
{
    event_active(c->out_ev, EV_READ, 0);
}

/* Hand a change to the front end (cluster thread -> front-end thread). */
static void push_change(struct cluster *c, struct change_msg *m)
{
    if (queue_push(&c->changes, &m->qn))
        out_notify(c);
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct cluster *c = fsm->data;
    struct store_change chg;
    /* a store kept from a clean stop has this entry already (libraft
     * applies entry last_applied + 1 and counts it after we return) */
    if (raft_last_applied(&c->raft) + 1 <= c->opt.reuse_applied) {
        *result = (void *)(intptr_t)0;
        return 0;
    }
    int rc = store_apply(c->opt.store, buf->base, buf->len, &chg);
    *result = (void *)(intptr_t)rc;
    if (rc == REG_ESTORE || rc == REG_ENOSPACE || rc == REG_ENOMEM)
        c->store_behind = true; /* applied by raft, not in the store */
    if (rc == 0 && chg.index == UINT64_MAX)
        c->announce_again = true; /* see poll_cb */
    if (rc == 0 && chg.n > 0) {
        struct change_msg *m = malloc(sizeof(*m));
        if (m != NULL) {
            m->chg = chg;
            push_change(c, m);
        }
    }
    return 0;
}

unsigned cluster_snapshot_threshold(uint64_t snapshot_bytes)
{
    uint64_t n = snapshot_bytes / CLUSTER_SNAPSHOT_BYTES_PER_ENTRY;
    if (n < CLUSTER_SNAPSHOT_ENTRIES)
        return CLUSTER_SNAPSHOT_ENTRIES;
    return n > CLUSTER_SNAPSHOT_ENTRIES_MAX ? CLUSTER_SNAPSHOT_ENTRIES_MAX : (unsigned)n;
}

/* A snapshot of snapshot_bytes was taken or loaded: space the next one by
 * the store's size, unless the configuration fixed the interval. The log
 * kept behind a snapshot (trailing) stays as it was set at start. */
static void adapt_snapshot_threshold(struct cluster *c, uint64_t snapshot_bytes)
{
    if (c->opt.snapshot_threshold != 0)
        return;
    unsigned n = cluster_snapshot_threshold(snapshot_bytes);
    if (n == c->snap_threshold)
        return;
    log_debug("cluster", "msg=\"snapshot interval\" entries=%u snapshot_bytes=%llu", n,
              (unsigned long long)snapshot_bytes);
    c->snap_threshold = n;
    raft_set_snapshot_threshold(&c->raft, n);
}

/* io->async_work: req->work (the snapshot, fsm_snapshot_async) on a thread
 * of its own, then req->cb with its status on the raft thread. At a million
 * instances the snapshot is seconds of CPU; on a 2-core machine, at normal
 * priority, it took a core from the HTTP and DNS workers and doubled the
 * time to wake 10,000 parked watchers, so fsm_snapshot_async lowers this
 * thread's priority (ASYNC_WORK_NICE) once its read of the store is over.
 * Not libuv's thread pool: a pool thread whose priority is lowered cannot
 * raise it again unprivileged, and libraft's disk writes run there. The
 * pending uv_async keeps the raft loop running until the work is over, as
 * queued work did. */
#define ASYNC_WORK_NICE 10

struct async_work {
    uv_async_t done; /* sent by the thread when req->work returns */
    struct cluster *c;
    pthread_t thread;
    struct raft_io_async_work *req;
    raft_io_async_work_cb cb;
    int status;
};

static void *async_work_run(void *arg)
{
    struct async_work *a = arg;
    a->status = a->req->work(a->req);
    uv_async_send(&a->done);
    return NULL;
}

static void async_work_closed(uv_handle_t *h)
{
    free(h->data);
}

static void async_work_done(uv_async_t *h)
{
    struct async_work *a = h->data;
    pthread_join(a->thread, NULL);
    struct raft_io_async_work *req = a->req;
    raft_io_async_work_cb cb = a->cb;
    /* libraft 0.15 does not wait for this work when it closes: once the
     * cluster stops, a snapshot that finishes is dropped (its buffers
     * freed through fsm_snapshot_finalize), not handed to an io that
     * raft_close may already have closed */
    int status = a->c->closing && a->status == 0 ? RAFT_CANCELED : a->status;
    uv_close((uv_handle_t *)&a->done, async_work_closed);
    cb(req, status);
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req,
                         raft_io_async_work_cb cb)
{
    struct cluster *c = (struct cluster *)((char *)io - offsetof(struct cluster, io));
    struct async_work *a = malloc(sizeof(*a));
    if (a == NULL)
        return RAFT_NOMEM;
    *a = (struct async_work){.c = c, .req = req, .cb = cb};
    a->done.data = a;
    if (uv_async_init(&c->loop, &a->done, async_work_done) != 0) {
        free(a);
        return RAFT_IOERR;
    }
    if (pthread_create(&a->thread, NULL, async_work_run, a) != 0) {
        uv_close((uv_handle_t *)&a->done, async_work_closed);
        return RAFT_IOERR;
    }
    pthread_setname_np(a->thread, "snapshot"); /* top -H, /proc, the tests */
    return 0;
}

/* Raft thread, at the applied index: only a read transaction is opened
 * here (LMDB's MVCC keeps what it sees while writes go on); the copy, the
 * unpacking and the checksum, 1-2 s at a million instances, run in
 * fsm_snapshot_async off the raft thread, so writes do not stop for them. */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster *c = fsm->data;
    if (c->closing)
        return RAFT_BUSY; /* none starts once the cluster stops (drain_tick) */
    if ((*bufs = calloc(1, sizeof(**bufs))) == NULL)
        return RAFT_NOMEM;
    *n_bufs = 1;
    c->snap_len = 0;
    if (store_read_begin(c->opt.store, &c->snap_rd) != 0) {
        c->snap_rd = NULL;
        free(*bufs); /* libraft finalizes only a snapshot taken */
        *bufs = NULL;
        *n_bufs = 0;
        return RAFT_IOERR;
    }
    c->snap_busy = true;
    return 0;
}

/* io_async_work's thread: the snapshot's bytes from the read fsm_snapshot
 * opened. The read is held only for the copy of the stored bytes, at this
 * thread's normal priority: while it is open no page a write frees can be
 * used again, and each write frees a path in a dozen B-trees (about 30
 * pages), so a read held for the whole snapshot (seconds at a million
 * instances, at a low priority on a busy machine) grew the store file by a
 * gigabyte. The rest (unpacking, checksum) runs at ASYNC_WORK_NICE. */
static int fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster *c = fsm->data;
    if (c->snap_rd == NULL || *n_bufs != 1)
        return RAFT_IOERR;
    void *data = c->snap_spare;
    size_t cap = c->snap_spare_cap, len;
    c->snap_spare = NULL;
    double started = mono_seconds();
    int rc = store_snapshot_copy(c->snap_rd, &data, &cap, &len);
    store_read_end(c->snap_rd);
    c->snap_rd = NULL;
    double read_s = mono_seconds() - started;
    if (rc == 0) /* the copy mapped every page of the store */
        store_release_map(c->opt.store);
    /* this thread only (Linux: a thread's nice value is its own) */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), ASYNC_WORK_NICE) != 0)
        log_debug("cluster", "msg=\"snapshot thread keeps its priority\" error=\"%s\"",
                  strerror(errno));
    if (rc == 0)
        rc = store_snapshot_finish(&data, &cap, &len);
    if (rc != 0) {
        c->snap_spare = data;
        c->snap_spare_cap = cap;
        return rc == REG_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    double took = mono_seconds() - started;
    log_info("cluster", "msg=\"snapshot taken\" bytes=%zu ms=%.1f read_ms=%.1f nice=%d", len,
             took * 1e3, read_s * 1e3, errno == 0 ? nice : 0);
    metrics_raft_snapshot(took);
    c->snap_held_cap = cap;
    c->snap_len = len;
    (*bufs)[0].base = data;
    (*bufs)[0].len = len;
    return 0;
}

/* libraft is done with the snapshot: keep its buffer warm for the next
 * (a fresh one costs page faults on the raft thread: 80 ms of a 100 ms
 * snapshot of 24 MB), unless it is large: at a million instances it would
 * hold half a gigabyte for minutes between snapshots. */
#define SNAP_WARM_MAX (64u << 20)

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    struct cluster *c = fsm->data;
    c->snap_busy = false;
    if (c->snap_rd != NULL) { /* the copy never ran */
        store_read_end(c->snap_rd);
        c->snap_rd = NULL;
    }
    if (c->snap_len > 0)
        adapt_snapshot_threshold(c, c->snap_len);
    c->snap_len = 0;
    for (unsigned i = 0; i < *n_bufs; i++) {
        if ((*bufs)[i].base == NULL)
            continue;
        if (i == 0 && c->snap_spare == NULL && c->snap_held_cap <= SNAP_WARM_MAX) {
            /* ours, from fsm_snapshot */
            c->snap_spare = (*bufs)[0].base;
            c->snap_spare_cap = c->snap_held_cap;
        } else {
            free((*bufs)[i].base);
        }
    }
    free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cluster *c = fsm->data;
    uint64_t stub_index;
    bool stub = cluster_files_is_stub(buf->base, buf->len, &stub_index);
    if (stub && !(c->starting && c->opt.reuse_applied >= stub_index)) {
        log_error("cluster", "msg=\"a snapshot stub reached restore\" index=%llu",
                  (unsigned long long)stub_index);
        return RAFT_CORRUPT; /* cannot happen: only a kept store's start reads one */
    }
    if (c->starting && c->opt.reuse_applied > 0) {
        /* the snapshot raft loads at start is of what the kept store had
         * applied by its clean stop, or older: nothing to restore */
        log_info("cluster",
                 "msg=\"store kept from the last clean stop; snapshot not restored\" "
                 "applied_index=%llu snapshot_bytes_read=%zu",
                 (unsigned long long)c->opt.reuse_applied, buf->len);
        c->start_snap = *buf; /* kept until raft says which index it is */
        adapt_snapshot_threshold(c, stub ? c->held.bytes : buf->len);
        return 0;
    }
    c->opt.reuse_applied = 0; /* the store now holds this snapshot only */
    int rc = store_restore(c->opt.store, buf->base, buf->len);
    if (rc != 0) {
        c->store_behind = true;
        log_error("cluster", "msg=\"snapshot restore failed\" error=\"%s\"", reg_strerror(rc));
        return RAFT_CORRUPT;
    }
    log_info("cluster", "msg=\"snapshot installed\" bytes=%zu", buf->len);
    adapt_snapshot_threshold(c, buf->len);
    raft_free(buf->base); /* ownership passed to us on success */
    struct change_msg *m = calloc(1, sizeof(*m));
    if (m != NULL) { /* everything may have changed: wake every watcher */
        m->chg.n = 1;
        m->chg.index = UINT64_MAX;
        push_change(c, m);
    }
    return 0;
}

/* ---- proposals (cluster thread) ---------------------------------------- */

static void complete(struct proposal *p, int status)
{
    struct cluster *c = p->c;
    p->status = status;
    if (queue_push(&c->done, &p->qn))
        out_notify(c);
}

static int map_raft_error(int rv)
{
    switch (rv) {
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return REG_ENOTLEADER;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return REG_ESHUTDOWN;
    case RAFT_NOMEM:
        return REG_ENOMEM;
    default:
        return REG_ERAFT;
    }
}

/* A failure in a callback comes after raft appended the entry: it may
 * still commit (REG_ELEADERLOST, never REG_ENOTLEADER, which says it was
 * not appended and may be sent again). */
static int appended_error(int status)
{
    int rc = map_raft_error(status);
    return rc == REG_ENOTLEADER ? REG_ELEADERLOST : rc;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    p->c->applying--;
    complete(p, status == 0 ? (int)(intptr_t)result : appended_error(status));
}

static void assign_cb(struct raft_change *req, int status)
{
    struct proposal *p = req->data;
    p->c->applying--;
    complete(p, status != 0 ? appended_error(status) : 0);
}

static void announce_removed(struct cluster *c, raft_id id, const char *raft_addr);

static void remove_cb(struct raft_change *req, int status)
{
    struct proposal *p = req->data;
    struct cluster *c = p->c;
    c->applying--;
    /* a leader that removed itself has stepped down already: the next
     * leader writes it (reconcile_removed) */
    if (status == 0 && raft_state(&c->raft) == RAFT_LEADER)
        announce_removed(c, p->member_id, p->member_addr);
    complete(p, status != 0 ? appended_error(status) : 0);
}

static void add_cb(struct raft_change *req, int status)
{
    struct proposal *p = req->data;
    struct cluster *c = p->c;
    c->applying--;
    if (status != 0) {
        complete(p, appended_error(status));
        return;
    }
    int rv = c->closing ? RAFT_SHUTDOWN
                        : raft_assign(&c->raft, &p->change, p->member_id, RAFT_VOTER, assign_cb);
    if (rv != 0) /* the server was added, as a spare */
        complete(p, rv == RAFT_NOTLEADER ? REG_ELEADERLOST : map_raft_error(rv));
    else
        c->applying++;
}

static void read_barrier_cb(struct raft_barrier *req, int status)
{
    struct proposal *p = req->data;
    p->c->applying--;
    complete(p, status != 0 ? map_raft_error(status) : 0);
}

/* The target leads (0), or an election timeout passed and this server
 * still does (REG_ETIMEDOUT). */
static void transfer_cb(struct raft_transfer *req)
{
    struct proposal *p = req->data;
    complete(p, raft_state(&p->c->raft) == RAFT_LEADER ? REG_ETIMEDOUT : 0);
}

static void ignore_done(void *arg, int status)
{
    (void)arg;
    if (status != 0 && status != REG_ESHUTDOWN)
        log_warn("cluster", "msg=\"writing a server's record failed\" error=\"%s\"",
                 reg_strerror(status));
}

json_t *cluster_announcement(struct cluster *c)
{
    if (c->opt.http_addr == NULL)
        return NULL;
    json_t *j = json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)c->id, "Raft", c->addr, "HTTP",
                          c->opt.http_addr);
    if (j != NULL && c->opt.node != NULL && c->opt.node_addr != NULL) {
        json_object_set_new(j, "Node", json_string(c->opt.node));
        json_object_set_new(j, "Address", json_string(c->opt.node_addr));
        json_t *meta = common_kvlist_object(c->opt.node_meta);
        if (json_object_size(meta) > 0)
            json_object_set(j, "NodeMeta", meta);
        json_decref(meta);
    }
    return j;
}

static void enqueue(struct cluster *c, struct proposal *p);

/* A server record (CMD_SERVER's args, taken) to apply, its outcome only
 * logged. Queued as the front end's writes are (wake_cb), not applied
 * here: this may run inside a raft callback (remove_cb). */
static void apply_server_record(struct cluster *c, json_t *args)
{
    struct command cmd = {CMD_SERVER, args};
    void *buf;
    size_t len;
    struct proposal *p = c->closing ? NULL : calloc(1, sizeof(*p));
    if (p == NULL || cmd.args == NULL || cmd_encode(&cmd, raft_malloc, &buf, &len) != 0) {
        free(p);
        cmd_fini(&cmd);
        return;
    }
    cmd_fini(&cmd);
    p->c = c;
    p->kind = PROP_APPLY;
    p->buf = buf;
    p->len = len;
    p->cb = ignore_done;
    /* no p->submitted: not a client's write, for the apply-latency metric */
    enqueue(c, p);
}

/* The leader writes down its HTTP address, for followers to forward to. */
static void announce_self(struct cluster *c)
{
    apply_server_record(c, cluster_announcement(c)); /* a new leader announces itself */
}

/* A server left the configuration: the leader writes its record again,
 * marked "Removed" (what it said of itself kept, should it be added back
 * before it announces itself again). The catalog lists servers from the
 * configuration, which no entry of the store follows; this one moves the
 * index, as Consul's leader deregistering a departed server's node does,
 * so that a blocking query on the nodes wakes (it slept through the
 * removal) and an answer cached at the index before is not served on.
 * Older servers keep the field as it is: a record's readers ignore what
 * they do not know (record.c). */
static void announce_removed(struct cluster *c, raft_id id, const char *raft_addr)
{
    struct store_read *rd;
    json_t *rec = NULL;
    if (*raft_addr == '\0')
        return;
    if (store_read_begin(c->opt.store, &rd) != 0)
        return;
    int rc = store_get_server(rd, raft_addr, &rec);
    store_read_end(rd);
    if (rc == REG_ENOTFOUND) /* it never announced itself: no HTTP address ("" reads as none) */
        rec = json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)id, "Raft", raft_addr, "HTTP", "");
    else if (rc != 0)
        return;
    if (rec != NULL)
        json_object_set_new(rec, "Removed", json_true());
    apply_server_record(c, rec); /* should it not commit, the next leader writes it */
}

/* The records of servers out of the configuration and not yet marked
 * removed (reconcile_removed), collected: written after the walk. */
struct unmarked {
    const struct raft_configuration *conf;
    json_t *found; /* array of records */
};

static int collect_unmarked(json_t *rec, void *arg)
{
    struct unmarked *u = arg;
    const char *raft = json_string_value(json_object_get(rec, "Raft"));
    if (raft == NULL || json_is_true(json_object_get(rec, "Removed")))
        return 0;
    for (unsigned i = 0; i < u->conf->n; i++)
        if (strcmp(u->conf->servers[i].address, raft) == 0)
            return 0;
    json_array_append(u->found, rec);
    return 0;
}

/* A new leader marks the records of the servers that left the
 * configuration without it being written (a leader that removed itself
 * steps down before it can; a leader may lose its leadership in between,
 * or stop): Consul's leader reconciles its members with the catalog so. */
static void reconcile_removed(struct cluster *c)
{
    struct store_read *rd;
    struct unmarked u = {&c->raft.configuration, json_array()};
    if (u.found == NULL || store_read_begin(c->opt.store, &rd) != 0) {
        json_decref(u.found);
        return;
    }
    int rc = store_each_server(rd, collect_unmarked, &u);
    store_read_end(rd);
    size_t i;
    json_t *rec;
    json_array_foreach(u.found, i, rec) {
        if (rc != 0)
            break;
        json_object_set_new(rec, "Removed", json_true());
        apply_server_record(c, json_incref(rec));
    }
    json_decref(u.found);
}

/* A command to raft. One refused (not appended) while a transfer is under
 * way waits for its end on c->transfer_held; so does one of this server's
 * own refused just after it (the status said "leader" until the next
 * poll), which the poll then sends to the new leader. */
static void apply_one(struct cluster *c, struct proposal *p)
{
    struct raft_buffer rb = {p->buf, p->len};
    p->req.data = p;
    p->c = c;
    int rv = raft_apply(&c->raft, &p->req, &rb, 1, apply_cb);
    if (rv == 0) {
        c->applying++;
    } else if (rv == RAFT_NOTLEADER && (c->raft.transfer != NULL || p->may_travel)) {
        p->next_held = NULL;
        if (c->transfer_held == NULL)
            c->transfer_held_tail = &c->transfer_held;
        *c->transfer_held_tail = p;
        c->transfer_held_tail = &p->next_held;
    } else {
        raft_free(p->buf);
        complete(p, map_raft_error(rv));
    }
}

/* The transfer has ended (or raft is closing): what it held goes on. Run
 * by the status poll once it has published who leads now, so that the
 * channel sends to the new leader, not to this server. */
static void release_held(struct cluster *c)
{
    if (c->transfer_held == NULL || (!c->closing && c->raft.transfer != NULL))
        return;
    struct proposal *p = c->transfer_held;
    c->transfer_held = NULL;
    bool leads = raft_state(&c->raft) == RAFT_LEADER;
    while (p != NULL) {
        struct proposal *next = p->next_held;
        if (c->closing) {
            raft_free(p->buf);
            complete(p, REG_ESHUTDOWN);
        } else if (leads) {
            apply_one(c, p);
        } else if (p->may_travel) { /* to the new leader, as a follower's own write */
            p->resend = true; /* from the front end's thread (out_cb) */
            complete(p, 0);
        } else { /* it came over the channel: its sender sends it again */
            raft_free(p->buf);
            complete(p, REG_ENOTLEADER);
        }
        p = next;
    }
}

/* The configuration's server id, or NULL. */
static const struct raft_server *config_server(const struct raft_configuration *conf, raft_id id)
{
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return &conf->servers[i];
    return NULL;
}

/* Would removing id leave a configuration without a voter? */
static bool leaves_no_voter(const struct raft_configuration *conf, raft_id id)
{
    unsigned voters = 0;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].role == RAFT_VOTER && conf->servers[i].id != id)
            voters++;
    return voters == 0;
}

static void wake_cb(uv_async_t *h)
{
    struct cluster *c = h->data;
    for (struct queue_node *n = queue_take(&c->in), *next; n; n = next) {
        next = n->next; /* p may be completed (and queued elsewhere) below */
        struct proposal *p = queue_entry(n, struct proposal, qn);
        const struct raft_server *srv;
        int rv;
        if (c->closing) { /* raft is closing: nothing more goes to it */
            if (p->kind == PROP_APPLY)
                raft_free(p->buf);
            complete(p, REG_ESHUTDOWN);
            continue;
        }
        p->change.data = p;
        switch (p->kind) {
        case PROP_ADD_VOTER:
            if ((srv = config_server(&c->raft.configuration, p->member_id)) != NULL &&
                strcmp(srv->address, p->member_addr) != 0) {
                /* the same id at another address: raft would keep the old
                 * one, a voter nobody reaches */
                complete(p, REG_ECONFLICT);
                break;
            }
            if (srv != NULL && srv->role == RAFT_VOTER) {
                complete(p, 0); /* a join again (its answer was lost): done already */
                break;
            }
            rv = raft_add(&c->raft, &p->change, p->member_id, p->member_addr, add_cb);
            if (rv == RAFT_DUPLICATEID) /* already a member: make sure it votes */
                rv = raft_assign(&c->raft, &p->change, p->member_id, RAFT_VOTER, assign_cb);
            if (rv != 0)
                complete(p, map_raft_error(rv));
            else
                c->applying++;
            break;
        case PROP_REMOVE:
            if (leaves_no_voter(&c->raft.configuration, p->member_id)) {
                complete(p, REG_EINVAL); /* never strand the data */
                break;
            }
            if ((srv = config_server(&c->raft.configuration, p->member_id)) != NULL)
                snprintf(p->member_addr, sizeof(p->member_addr), "%s", srv->address);
            rv = raft_remove(&c->raft, &p->change, p->member_id, remove_cb);
            if (rv != 0)
                complete(p, map_raft_error(rv));
            else
                c->applying++;
            break;
        case PROP_TRANSFER:
            if (c->raft.transfer != NULL) { /* raft says RAFT_NOTLEADER then */
                complete(p, REG_ECONFLICT);
                break;
            }
            p->transfer.data = p;
            rv = raft_transfer(&c->raft, &p->transfer, p->member_id, transfer_cb);
            if (rv != 0)
                complete(p, map_raft_error(rv));
            break;
        case PROP_BARRIER:
            p->barrier.data = p;
            rv = raft_barrier(&c->raft, &p->barrier, read_barrier_cb);
            if (rv != 0)
                complete(p, map_raft_error(rv));
            else
                c->applying++;
            break;
        default:
            apply_one(c, p);
        }
    }
}

/* ---- status, readiness (cluster thread) -------------------------------- */

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct cluster *c = req->data;
    c->applying--;
    if (status != 0) {
        c->barrier_sent = false; /* lost leadership: try again when leading */
        return;
    }
    pthread_mutex_lock(&c->status_lock);
    c->ready = true;
    pthread_cond_broadcast(&c->ready_cond);
    pthread_mutex_unlock(&c->status_lock);
    announce_self(c);
    reconcile_removed(c);
}

/* Has the leader heard from configuration server i lately? raft's own
 * flag is cleared every election timeout; the time it was last seen set
 * carries over those resets. Raft thread. */
static bool responsive(struct cluster *c, unsigned i, raft_id id, int state, uint64_t now)
{
    if (state != RAFT_LEADER)
        return true; /* only the leader knows */
    if (id == c->id)
        return true;
    int slot = -1, free_slot = -1;
    for (int k = 0; k < CLUSTER_MAX_SERVERS; k++) {
        if (c->heard[k].id == id)
            slot = k;
        else if (free_slot < 0 && (c->heard[k].id == 0 || now - c->heard[k].ms > 60000))
            free_slot = k;
    }
    const struct raft_progress *pr = c->raft.leader_state.progress;
    if (pr != NULL && pr[i].recent_recv) {
        if (slot < 0)
            slot = free_slot;
        if (slot >= 0)
            c->heard[slot] = (struct heard){id, now};
    }
    return slot >= 0 && c->heard[slot].id == id && now - c->heard[slot].ms <= CLUSTER_RESPONSIVE_MS;
}

static void poll_cb(uv_timer_t *t)
{
    struct cluster *c = t->data;
    raft_id lid;
    const char *laddr;
    int state = raft_state(&c->raft);
    raft_leader(&c->raft, &lid, &laddr);
    (void)store_reserve(c->opt.store, 0); /* notices space freed on a full disk */
    uint64_t now = mono_ms();

    /* A new leader commits a barrier before it reports ready, so every
     * entry of earlier terms is applied before it serves. */
    if (state == RAFT_LEADER && !c->barrier_sent) {
        c->barrier.data = c;
        if (raft_barrier(&c->raft, &c->barrier, barrier_cb) == 0) {
            c->barrier_sent = true;
            c->applying++;
        }
    }
    if (state != RAFT_LEADER)
        c->barrier_sent = false; /* a future term's leadership needs its own */
    if (c->announce_again && state == RAFT_LEADER) {
        c->announce_again = false;
        announce_self(c);
    }
    /* A follower is ready once it follows a leader and has applied what it
     * knows to be committed. */
    if (state == RAFT_FOLLOWER && lid != 0 && raft_last_applied(&c->raft) >= c->raft.commit_index &&
        c->raft.commit_index > 0) {
        pthread_mutex_lock(&c->status_lock);
        if (!c->ready) {
            c->ready = true;
            pthread_cond_broadcast(&c->ready_cond);
        }
        pthread_mutex_unlock(&c->status_lock);
    }

    pthread_mutex_lock(&c->status_lock);
    struct cluster_status *s = &c->status;
    s->known_leader = lid != 0;
    s->is_leader = state == RAFT_LEADER;
    if (lid != 0)
        c->last_leader_seen_ms = now;
    s->last_contact_ms = s->is_leader ? 0 : now - c->last_leader_seen_ms;
    if (state == RAFT_FOLLOWER && lid != 0) {
        /* Consul's LastContact: since the leader was last heard from. A
         * follower restarts its election timer at each message from it */
        raft_time t = c->raft.io->time(c->raft.io);
        s->last_contact_ms = t > c->raft.election_timer_start ? t - c->raft.election_timer_start : 0;
    }
    snprintf(s->leader_addr, sizeof(s->leader_addr), "%s", lid != 0 && laddr ? laddr : "");
    snprintf(s->self_addr, sizeof(s->self_addr), "%s", c->addr);
    s->term = c->raft.current_term;
    s->commit_index = c->raft.commit_index;
    s->applied_index = raft_last_applied(&c->raft);
    s->leader_id = lid;
    s->self_id = c->id;
    s->n_servers = 0;
    for (unsigned i = 0; i < c->raft.configuration.n && s->n_servers < CLUSTER_MAX_SERVERS; i++) {
        const struct raft_server *srv = &c->raft.configuration.servers[i];
        s->servers[s->n_servers].id = srv->id;
        snprintf(s->servers[s->n_servers].addr, sizeof(s->servers[0].addr), "%s", srv->address);
        s->servers[s->n_servers].voter = srv->role == RAFT_VOTER;
        s->servers[s->n_servers].responsive = responsive(c, i, srv->id, state, now);
        s->n_servers++;
    }
    pthread_mutex_unlock(&c->status_lock);
    release_held(c);
}

void cluster_get_status(struct cluster *c, struct cluster_status *out)
{
    pthread_mutex_lock(&c->status_lock);
    *out = c->status;
    pthread_mutex_unlock(&c->status_lock);
}

/* ---- shutdown (cluster thread) ----------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* raft_close is done. libraft 0.15's io does not forget its close
 * callback once it has called it, and a callback of its own that comes
 * later (a handle or a piece of work it did not wait for) calls it again:
 * with the io freed here at once, that read freed memory and died with
 * SIGSEGV in libraft's ioCloseCb (test_http_workers' stop with writes in
 * flight and a snapshot every 16 entries: 5 stops in 730 under load,
 * each with a snapshot under way at SIGTERM; older libraft too). So the io
 * is freed only once the loop has run dry (cluster_free), and a second
 * call finds a spent raft (zeroed: nothing to free, no callback). */
static void raft_closed(struct raft *r)
{
    struct cluster *c = r->data;
    memset(&c->spent, 0, sizeof(c->spent));
    c->io.data = &c->spent;
    c->io_spent = true;
    transport_fini(&c->transport);
    uv_close((uv_handle_t *)&c->wake, handle_closed);
    uv_close((uv_handle_t *)&c->stop, handle_closed);
    uv_close((uv_handle_t *)&c->poll, handle_closed);
}

/* Closing libraft 0.15 with entries still being appended (a single
 * server's writes at the moment of SIGTERM) crashes it in raft_close (ASan:
 * a null read inside libraft, under close_raft): nothing more is proposed,
 * and what is in flight (applies, barriers, membership changes) gets up to
 * DRAIN_TICKS * DRAIN_TICK_MS to finish (a disk write or a round trip;
 * without a quorum, until the leader steps down) before raft_close. It
 * was 300 ms: twelve check results in flight at SIGTERM on a loaded CI
 * machine under ASan outlasted it, and the server died with SIGSEGV at
 * stop (reproduced by cutting the wait to 1 ms: the same crash, at the
 * same place in libraft, once in 25 stops under writes). A stop with
 * nothing in flight does not wait at all. */
#define DRAIN_TICK_MS 10
#define DRAIN_TICKS 1000
/* A snapshot in flight (copied, or written by libraft's io) is waited for
 * too, up to this many ticks: libraft 0.15 closing its io with a snapshot
 * put or its barrier in flight can touch what it freed (canonical/raft
 * #435 and its discussion, fixed after 0.15), and test_http_workers' stop
 * with writes in flight (a snapshot every 16 entries) died with SIGSEGV
 * at SIGTERM in two CI runs. No snapshot starts once stopping
 * (fsm_snapshot), and one whose copy ends then is cancelled
 * (async_work_done). */
#define DRAIN_SNAPSHOT_TICKS DRAIN_TICKS

static void close_raft(struct cluster *c);

/* Anything the stop waits for before raft_close? */
static bool must_drain(struct cluster *c)
{
    return (c->applying > 0 && c->drain_ticks < DRAIN_TICKS) ||
           (c->snap_busy && c->drain_ticks < DRAIN_SNAPSHOT_TICKS);
}

static void drain_tick(uv_timer_t *t)
{
    struct cluster *c = t->data;
    ++c->drain_ticks;
    if (must_drain(c))
        return;
    uv_timer_stop(&c->poll);
    close_raft(c);
}

static void stop_cb(uv_async_t *h)
{
    struct cluster *c = h->data;
    uv_timer_stop(&c->poll);
    c->closing = true;
    release_held(c); /* answered: shutting down */
    if (must_drain(c) &&
        uv_timer_start(&c->poll, drain_tick, DRAIN_TICK_MS, DRAIN_TICK_MS) == 0)
        return;
    close_raft(c);
}

static void close_raft(struct cluster *c)
{
    c->raft.data = c;
    if (c->opt.applied_at_stop != NULL) {
        /* a kept store holds up to reuse_applied even when raft has not
         * gone past it again yet (no leader told it the commit index) */
        uint64_t applied = raft_last_applied(&c->raft);
        if (applied < c->opt.reuse_applied)
            applied = c->opt.reuse_applied;
        *c->opt.applied_at_stop = c->store_behind ? 0 : applied;
    }
    raft_close(&c->raft, raft_closed);
}

static void *cluster_main(void *arg)
{
    struct cluster *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- front-end side ------------------------------------------------------ */

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cluster *c = arg;
    /* Answers first taken, changes second: the change of an entry is queued
     * before its answer, so every answer taken has its change among those
     * taken after it. Changes are delivered first: every blocking query is
     * on its way to being woken (server.c's on_change) before a client is
     * acknowledged. */
    struct queue_node *done = queue_take(&c->done);
    struct queue_node *chg = queue_take(&c->changes);
    for (struct queue_node *next; chg; chg = next) {
        next = chg->next;
        struct change_msg *m = queue_entry(chg, struct change_msg, qn);
        if (c->opt.on_change)
            c->opt.on_change(c->opt.change_arg, &m->chg);
        free(m);
    }
    for (struct queue_node *next; done; done = next) {
        next = done->next;
        struct proposal *p = queue_entry(done, struct proposal, qn);
        if (p->resend) { /* release_held's: the command, to the leader now */
            cluster_link_propose(c->link, p->buf, p->len, p->cb, p->arg);
            free(p);
            continue;
        }
        if (p->kind == PROP_APPLY && p->submitted > 0 && c->opt.on_applied)
            c->opt.on_applied(mono_seconds() - p->submitted);
        p->cb(p->arg, p->status);
        free(p);
    }
}

static void enqueue(struct cluster *c, struct proposal *p)
{
    /* uv_async_send coalesces: waking on every push costs little, and the
     * raft thread may have taken the queue just before this push */
    queue_push(&c->in, &p->qn);
    uv_async_send(&c->wake);
}

static void submit(struct cluster *c, void *buf, size_t len, cluster_done_cb cb, void *arg,
                   bool may_travel)
{
    if (!store_space_ok(c->opt.store)) { /* disk full: refuse before raft logs it */
        raft_free(buf);
        cb(arg, REG_ENOSPACE);
        return;
    }
    struct proposal *p = __atomic_load_n(&c->running, __ATOMIC_ACQUIRE) ? calloc(1, sizeof(*p))
                                                                         : NULL;
    if (p == NULL) {
        raft_free(buf);
        cb(arg, c->running ? REG_ENOMEM : REG_ENOTLEADER);
        return;
    }
    p->c = c;
    p->buf = buf;
    p->len = len;
    p->cb = cb;
    p->arg = arg;
    p->may_travel = may_travel;
    p->submitted = mono_seconds();
    enqueue(c, p);
}

void cluster_submit(struct cluster *c, void *buf, size_t len, cluster_done_cb cb, void *arg)
{
    bool leader;
    pthread_mutex_lock(&c->status_lock);
    leader = c->status.is_leader;
    pthread_mutex_unlock(&c->status_lock);
    if (!leader && __atomic_load_n(&c->running, __ATOMIC_ACQUIRE) && c->link != NULL) {
        cluster_link_propose(c->link, buf, len, cb, arg);
        return;
    }
    submit(c, buf, len, cb, arg, true);
}

void cluster_submit_here(struct cluster *c, void *buf, size_t len, cluster_done_cb cb,
                         void *arg)
{
    submit(c, buf, len, cb, arg, false);
}

static void change_member(struct cluster *c, enum proposal_kind kind, uint64_t id,
                          const char *addr, cluster_done_cb cb, void *arg)
{
    struct proposal *p = __atomic_load_n(&c->running, __ATOMIC_ACQUIRE) ? calloc(1, sizeof(*p))
                                                                         : NULL;
    if (p == NULL) {
        cb(arg, c->running ? REG_ENOMEM : REG_ENOTLEADER);
        return;
    }
    p->c = c;
    p->kind = kind;
    p->member_id = id;
    snprintf(p->member_addr, sizeof(p->member_addr), "%s", addr ? addr : "");
    p->cb = cb;
    p->arg = arg;
    enqueue(c, p);
}

void cluster_add_voter(struct cluster *c, uint64_t id, const char *raft_addr, cluster_done_cb cb,
                       void *arg)
{
    change_member(c, PROP_ADD_VOTER, id, raft_addr, cb, arg);
}

void cluster_remove(struct cluster *c, uint64_t id, cluster_done_cb cb, void *arg)
{
    change_member(c, PROP_REMOVE, id, NULL, cb, arg);
}

void cluster_transfer_leadership(struct cluster *c, uint64_t to, cluster_done_cb cb, void *arg)
{
    change_member(c, PROP_TRANSFER, to, NULL, cb, arg);
}

void cluster_confirm_leadership(struct cluster *c, cluster_done_cb cb, void *arg)
{
    change_member(c, PROP_BARRIER, 0, NULL, cb, arg);
}

int cluster_new(const struct cluster_options *opt, struct cluster **out, char *err,
                size_t errlen)
{
    struct cluster *c = calloc(1, sizeof(*c));
    int rv;
    if (c == NULL)
        return REG_ENOMEM;
    c->opt = *opt;
    c->raft_fd = -1;
    queue_init(&c->in);
    queue_init(&c->done);
    queue_init(&c->changes);
    pthread_mutex_init(&c->status_lock, NULL);
    pthread_cond_init(&c->ready_cond, NULL);

    if ((rv = load_identity(c, err, errlen)) != 0)
        goto fail;
    snprintf(c->raft_dir, sizeof(c->raft_dir), "%s/raft", opt->data_dir);
    c->rebuilding = opt->reuse_applied == 0 && !cluster_fresh(c);
    if (mkdir(c->raft_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", c->raft_dir, strerror(errno));
        rv = REG_EIO;
        goto fail;
    }
    c->out_ev = event_new(opt->base, -1, 0, out_cb, c);
    if (c->out_ev == NULL || cluster_link_new(opt->base, opt->store, c, &c->link) != 0 ||
        cluster_peers_new(opt->base, opt->store, c, &c->peers) != 0 ||
        uv_loop_init(&c->loop) != 0) {
        rv = REG_ENOMEM;
        goto fail;
    }
    c->loop_init = true;
    /* uv_async_init fails when no eventfd can be had: then nothing runs. */
    if ((rv = uv_async_init(&c->loop, &c->wake, wake_cb)) != 0 ||
        (rv = uv_async_init(&c->loop, &c->stop, stop_cb)) != 0 ||
        (rv = uv_timer_init(&c->loop, &c->poll)) != 0) {
        snprintf(err, errlen, "raft loop: %s", uv_strerror(rv));
        /* c is zeroed: a handle's loop is set only once it is initialized */
        if (c->wake.loop == &c->loop)
            uv_close((uv_handle_t *)&c->wake, handle_closed);
        if (c->stop.loop == &c->loop)
            uv_close((uv_handle_t *)&c->stop, handle_closed);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        c->loop_init = false;
        uv_loop_close(&c->loop);
        rv = REG_ENOMEM;
        goto fail;
    }
    c->wake.data = c->stop.data = c->poll.data = c;
    pthread_mutex_lock(&c->status_lock);
    c->status.self_id = c->id;
    snprintf(c->status.self_addr, sizeof(c->status.self_addr), "%s", c->addr);
    /* Not 0: the monotonic clock counts from boot, so "never" would read
     * as the machine's uptime in X-Consul-LastContact. */
    c->last_leader_seen_ms = mono_ms();
    c->known[0].id = c->id;
    snprintf(c->known[0].raft_addr, sizeof(c->known[0].raft_addr), "%s", c->addr);
    snprintf(c->known[0].http_addr, sizeof(c->known[0].http_addr), "%s",
             opt->http_addr ? opt->http_addr : "");
    c->n_known = 1;
    pthread_mutex_unlock(&c->status_lock);
    *out = c;
    return 0;
fail:
    cluster_free(c);
    return rv;
}

void cluster_self(struct cluster *c, uint64_t *id, const char **raft_addr)
{
    *id = c->id;
    *raft_addr = c->addr;
}

int cluster_learn(struct cluster *c, const struct cluster_member *m)
{
    if (m->id == 0 || m->raft_addr[0] == '\0')
        return REG_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&c->status_lock);
    size_t i = 0;
    while (i < c->n_known && c->known[i].id != m->id)
        i++;
    if (i == c->n_known && i == CLUSTER_MAX_SERVERS) {
        rc = REG_ETOOBIG;
    } else if (i > 0) { /* never rewrite this server's own entry */
        struct cluster_member keep = c->known[i];
        c->known[i] = *m;
        if (m->http_addr[0] == '\0' && i < c->n_known) /* a hello without it */
            memcpy(c->known[i].http_addr, keep.http_addr, sizeof(keep.http_addr));
        if (i == c->n_known)
            c->n_known++;
    }
    pthread_mutex_unlock(&c->status_lock);
    return rc;
}

size_t cluster_known(struct cluster *c, struct cluster_member *out, size_t max)
{
    pthread_mutex_lock(&c->status_lock);
    size_t n = c->n_known;
    memcpy(out, c->known, (n < max ? n : max) * sizeof(*out));
    pthread_mutex_unlock(&c->status_lock);
    return n;
}

size_t cluster_configuration(struct cluster *c, struct cluster_member *out, size_t max)
{
    if (!__atomic_load_n(&c->running, __ATOMIC_ACQUIRE))
        return 0;
    struct cluster_status st;
    cluster_get_status(c, &st);
    size_t n = 0;
    for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS && n < max; i++) {
        out[n] = (struct cluster_member){.id = st.servers[i].id};
        snprintf(out[n].raft_addr, sizeof(out[n].raft_addr), "%s", st.servers[i].addr);
        n++;
    }
    return n;
}

bool cluster_fresh(struct cluster *c)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/metadata1", c->raft_dir);
    if (access(path, F_OK) == 0)
        return false;
    snprintf(path, sizeof(path), "%s/metadata2", c->raft_dir);
    return access(path, F_OK) != 0;
}

/* libraft 0.15 reports a listen failure with an empty message: look. */
static bool addr_in_use(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
        return false;
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool used = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno == EADDRINUSE;
    close(fd);
    return used;
}

/* The raft port's gate (raft thread): once this server has a configuration,
 * only its members may talk to raft. An empty one (a server joining) learns
 * it from the leader's first message, so any authenticated peer may. */
static bool peer_allowed(void *arg, uint64_t id)
{
    struct cluster *c = arg;
    const struct raft_configuration *conf = &c->raft.configuration;
    if (conf->n == 0)
        return true;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return true;
    return false;
}

int cluster_run(struct cluster *c, const struct cluster_member *members, size_t n, char *err,
                size_t errlen)
{
    int rv;
    if ((rv = cluster_files_heal(c->raft_dir, err, errlen)) != 0)
        return REG_ERAFT;
    if ((rv = cluster_check_files(c->raft_dir, err, errlen)) != 0)
        return rv; /* a damaged snapshot would make libraft spin for ever */
    struct transport_options topt = {.cluster_key = c->opt.cluster_key,
                                     .allow = peer_allowed,
                                     .allow_arg = c,
                                     .bound_fd = &c->raft_fd};
    if (transport_init(&c->transport, &c->loop, &topt) != 0) {
        snprintf(err, errlen, "raft transport: out of memory");
        return REG_ENOMEM;
    }
    c->transport_init = true;
    /* segment closes' io_destroy off the raft thread (aio_destroy.h) */
    if (aio_destroy_start() != 0)
        log_warn("cluster", "msg=\"io_destroy stays on the raft thread: cannot start its own\"");
    if ((rv = raft_uv_init(&c->io, &c->loop, c->raft_dir, &c->transport)) != 0) {
        snprintf(err, errlen, "raft storage in %s: %s", c->raft_dir, c->io.errmsg);
        return REG_ERAFT;
    }
    c->io_init = true;
    /* libraft's auto-recovery renames a segment it cannot read and starts
     * without it, silently losing acknowledged writes: refuse instead. */
    raft_uv_set_auto_recovery(&c->io, false);
    /* Uncompressed by default: at a million instances LZ4 took a second of
     * each snapshot and 0.4 s of every start (libraft reads the whole last
     * snapshot before it serves), for a tenth of the disk. */
    if (raft_uv_set_snapshot_compression(&c->io, c->opt.snapshot_compression) != 0) {
        snprintf(err, errlen, "raft snapshot compression: %s", c->io.errmsg);
        return REG_ERAFT;
    }
    /* libraft 0.15's uv io declares io version 1, so libraft takes no
     * asynchronous snapshot through the async_work it has (libuv's pool):
     * give it one (a thread per snapshot, io_async_work;
     * fsm_snapshot_async). */
    c->io.version = 2;
    c->io.async_work = io_async_work;
    c->fsm.version = 3;
    c->fsm.data = c;
    c->fsm.apply = fsm_apply;
    c->fsm.snapshot = fsm_snapshot;
    c->fsm.snapshot_finalize = fsm_snapshot_finalize;
    c->fsm.snapshot_async = fsm_snapshot_async;
    c->fsm.restore = fsm_restore;
    if ((rv = raft_init(&c->raft, &c->io, &c->fsm, c->id, c->addr)) != 0) {
        snprintf(err, errlen, "raft: %s", raft_errmsg(&c->raft));
        return REG_ERAFT;
    }
    c->raft_init = true;
    raft_set_pre_vote(&c->raft, true);
    /* Leader loss is noticed after 0.8-1.6 s without heartbeats (every
     * 100 ms): a new leader well within 3 s, yet no elections from a
     * scheduling hiccup on a loaded machine. */
    raft_set_election_timeout(&c->raft, 800);
    raft_set_heartbeat_timeout(&c->raft, 100);
    unsigned threshold =
        c->opt.snapshot_threshold ? c->opt.snapshot_threshold : CLUSTER_SNAPSHOT_ENTRIES;
    c->snap_threshold = threshold;
    raft_set_snapshot_threshold(&c->raft, threshold);
    raft_set_snapshot_trailing(&c->raft, threshold / 4 ? threshold / 4 : 1);

    if (n > 0) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = 0;
        for (size_t i = 0; i < n && rv == 0; i++)
            rv = raft_configuration_add(&conf, members[i].id, members[i].raft_addr, RAFT_VOTER);
        if (rv == 0)
            rv = raft_bootstrap(&c->raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            snprintf(err, errlen, "raft bootstrap: %s (%s)", raft_errmsg(&c->raft),
                     raft_strerror(rv));
            return REG_ERAFT;
        }
    }
    /* a kept store needs nothing from the snapshot libraft reads at start:
     * it reads a stub instead (cluster_files.h) */
    if (c->opt.reuse_applied > 0 &&
        (rv = cluster_files_hold(c->raft_dir, c->opt.reuse_applied, &c->held, err, errlen)) != 0) {
        if (rv == REG_ERAFT)
            return rv; /* err says which file is where */
        log_warn("cluster", "msg=\"raft reads its whole snapshot at start\" error=\"%s\"", err);
    }
    c->starting = true;
    rv = raft_start(&c->raft);
    c->starting = false;
    if (cluster_files_release(&c->held, err, errlen) != 0) {
        log_error("cluster", "msg=\"raft snapshot not put back\" error=\"%s\"", err);
        return REG_ERAFT; /* never serve the stub to a follower */
    }
    if (rv == 0 && c->start_snap.base != NULL &&
        raft_last_applied(&c->raft) > c->opt.reuse_applied) {
        /* a snapshot newer than the kept store (one installed as raft
         * stopped, whose restore libraft then discarded): restore it now */
        log_warn("cluster", "msg=\"the kept store is behind raft's snapshot; restoring it\" "
                            "store_index=%llu snapshot_index=%llu",
                 (unsigned long long)c->opt.reuse_applied,
                 (unsigned long long)raft_last_applied(&c->raft));
        struct raft_buffer b = c->start_snap;
        c->start_snap.base = NULL;
        c->opt.reuse_applied = 0; /* a stub is refused now */
        if (fsm_restore(&c->fsm, &b) != 0) {
            raft_free(b.base);
            rv = RAFT_CORRUPT;
        }
    }
    if (c->start_snap.base != NULL) {
        raft_free(c->start_snap.base);
        c->start_snap.base = NULL;
    }
    if (rv != 0) {
        const char *why = raft_errmsg(&c->raft);
        snprintf(err, errlen, "raft start (raft address %s): %s", c->addr,
                 addr_in_use(c->addr) ? "address already in use (another process listens there)"
                 : why && *why         ? why
                                       : raft_strerror(rv));
        return REG_ERAFT;
    }
    if ((rv = uv_timer_start(&c->poll, poll_cb, 0, CLUSTER_STATUS_POLL_MS)) != 0) {
        snprintf(err, errlen, "raft status timer: %s", uv_strerror(rv));
        return REG_ERAFT;
    }
    __atomic_store_n(&c->running, true, __ATOMIC_RELEASE);
    if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        __atomic_store_n(&c->running, false, __ATOMIC_RELEASE);
        snprintf(err, errlen, "cannot start the raft thread");
        return REG_ENOMEM;
    }
    c->thread_started = true;
    log_info("cluster", "msg=\"raft started\" id=%llu raft_addr=%s bootstrap_members=%zu", c->id,
             c->addr, n);
    return 0;
}

bool cluster_caught_up(struct cluster *c)
{
    if (c == NULL)
        return true;
    pthread_mutex_lock(&c->status_lock);
    bool up = !c->rebuilding || c->ready;
    pthread_mutex_unlock(&c->status_lock);
    return up;
}

int cluster_wait_ready(struct cluster *c, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->status_lock);
    while (!c->ready && pthread_cond_timedwait(&c->ready_cond, &c->status_lock, &deadline) == 0)
        ;
    bool ready = c->ready;
    pthread_mutex_unlock(&c->status_lock);
    return ready ? 0 : REG_ETIMEDOUT;
}

int cluster_start(const struct cluster_options *opt, struct cluster **out, char *err,
                  size_t errlen)
{
    struct cluster *c;
    int rv = cluster_new(opt, &c, err, errlen);
    if (rv != 0)
        return rv;
    struct cluster_member self = {.id = c->id};
    snprintf(self.raft_addr, sizeof(self.raft_addr), "%s", c->addr);
    if ((rv = cluster_run(c, &self, 1, err, errlen)) != 0) {
        cluster_free(c);
        return rv;
    }
    if (cluster_wait_ready(c, CLUSTER_READY_TIMEOUT_MS) != 0) {
        snprintf(err, errlen, "raft: not leader after %d ms (is %s reachable?)",
                 CLUSTER_READY_TIMEOUT_MS, c->addr);
        cluster_free(c);
        return REG_ERAFT;
    }
    log_info("cluster", "msg=\"raft ready\" id=%llu raft_addr=%s", c->id, c->addr);
    *out = c;
    return 0;
}

void cluster_free(struct cluster *c)
{
    if (c == NULL)
        return;
    if (c->thread_started) {
        uv_async_send(&c->stop);
        pthread_join(c->thread, NULL);
    } else if (c->loop_init) {
        /* Never started: close what was opened, then let the loop finish. */
        if (c->raft_init) {
            c->raft.data = c;
            raft_close(&c->raft, raft_closed);
        } else {
            if (c->io_init)
                raft_uv_close(&c->io);
            if (c->transport_init)
                transport_fini(&c->transport);
            uv_close((uv_handle_t *)&c->wake, handle_closed);
            uv_close((uv_handle_t *)&c->stop, handle_closed);
            uv_close((uv_handle_t *)&c->poll, handle_closed);
        }
        uv_run(&c->loop, UV_RUN_DEFAULT);
    }
    if (c->io_spent) /* the loop has run dry: nothing of libraft's runs again */
        raft_uv_close(&c->io);
    if (c->loop_init && uv_loop_close(&c->loop) != 0)
        log_warn("cluster", "msg=\"uv loop still had handles at close\"");
    /* The raft thread is gone: hand what it finished, and what it never
     * saw, back to their owners on this (the front-end) thread. */
    for (struct queue_node *n = queue_take(&c->in), *next; n; n = next) {
        next = n->next;
        struct proposal *p = queue_entry(n, struct proposal, qn);
        raft_free(p->buf);
        p->status = REG_ESHUTDOWN;
        queue_push(&c->done, &p->qn);
    }
    if (c->out_ev) {
        out_cb(-1, 0, c);
        event_free(c->out_ev);
    }
    cluster_link_free(c->link);
    cluster_peers_free(c->peers);
    queue_fini(&c->in);
    queue_fini(&c->done);
    queue_fini(&c->changes);
    pthread_mutex_destroy(&c->status_lock);
    pthread_cond_destroy(&c->ready_cond);
    if (c->snap_rd != NULL) /* raft closed with a snapshot half taken */
        store_read_end(c->snap_rd);
    free(c->snap_spare);
    if (c->raft_fd >= 0)
        close(c->raft_fd);
    free(c);
}
