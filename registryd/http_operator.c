/*
 * http_operator.c — cluster membership over HTTP: what a server says about
 * itself (for servers forming a cluster), joining a running cluster, the
 * raft configuration, removing a dead member (Consul's
 * /v1/operator/raft/... shapes), and PUT /v1/agent/leave.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cluster.h"
#include "cluster_link.h"
#include "command.h"
#include "duration.h"
#include "formation.h"
#include "http_internal.h"
#include "http_spool.h"
#include "leave.h"
#include "log.h"
#include "record.h"
#include "registry/error.h"
#include "snapshot.h"
#include "store.h"

/* GET /v1/internal/raft/self: {"ID", "Raft", "HTTP"} */
static int read_raft_self(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    uint64_t id;
    const char *raft;
    cluster_self(r->srv->opt.cluster, &id, &raft);
    *out = json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)id, "Raft", raft, "HTTP",
                     r->srv->opt.advertise ? r->srv->opt.advertise : "");
    return 0;
}

/* PUT /v1/internal/raft/hello: servers forming a cluster tell each other
 * what they know (formation.h). */
static void do_hello(struct http_req *r)
{
    json_t *body, *out = NULL;
    char err[256];
    if (http_body_json(r, &body) != 0) {
        http_finish_write(r, REG_EINVAL);
        return;
    }
    int rc = formation_hello_answer(r->srv->opt.cluster, body, &out, err, sizeof(err));
    json_decref(body);
    if (rc != 0) {
        if (rc == REG_EINVAL)
            http_fail(r, 400, "%s", err);
        http_finish_write(r, rc);
        return;
    }
    http_finish_json(r, out);
}

/* GET /v1/operator/raft/configuration */
static int read_raft_configuration(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    json_t *servers = json_array();
    for (int i = 0; i < st.n_servers; i++) {
        char id[32], node[STORE_NAME_MAX + 1];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)st.servers[i].id);
        http_server_node(r->srv, rd, st.servers[i].addr, node, sizeof(node), NULL, 0, NULL);
        json_array_append_new(
            servers, json_pack("{s:s, s:s, s:s, s:b, s:b, s:s, s:s}", "ID", id, "Node",
                               *node ? node : id, "Address", st.servers[i].addr, "Leader",
                               st.servers[i].id == st.leader_id, "Voter", st.servers[i].voter,
                               "ProtocolVersion", "3", /* Consul's api.RaftServer */
                               "RaftProtocol", "3"));  /* (as Nomad's, kept) */
    }
    *out = json_pack("{s:o, s:I}", "Servers", servers, "Index", (json_int_t)st.commit_index);
    return 0;
}

static void change_done(void *arg, int status)
{
    http_finish_write(arg, status);
}

static void join_done(void *arg, int status)
{
    struct http_req *r = arg;
    if (status == REG_ECONFLICT)
        http_fail(r, 409, "This server's raft ID is in the configuration with another "
                          "address: remove it (registryctl raft remove ID) and join again");
    http_finish_write(r, status);
}

/* PUT /v1/internal/raft/join {"ID", "Raft"}: add a voter (on the leader);
 * done already for a voter at that address (a join again, its answer
 * lost), 409 for one at another. */
static void do_join(struct http_req *r)
{
    json_t *body;
    if (http_body_json(r, &body) != 0) {
        http_finish_write(r, REG_EINVAL);
        return;
    }
    json_t *id = json_get_ci(body, "ID");
    const char *raft = json_string_value(json_get_ci(body, "Raft"));
    if (!json_is_integer(id) || json_integer_value(id) <= 0 || raft == NULL || !*raft) {
        json_decref(body);
        http_fail(r, 400, "Join needs {\"ID\": <raft id>, \"Raft\": \"HOST:PORT\"}");
        http_finish_write(r, REG_EINVAL);
        return;
    }
    uint64_t member = (uint64_t)json_integer_value(id);
    char addr[64];
    snprintf(addr, sizeof(addr), "%s", raft);
    json_decref(body);
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    bool member_already = false;
    for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS; i++)
        member_already |= st.servers[i].id == member;
    if (!member_already && st.n_servers >= CLUSTER_MAX_SERVERS) {
        http_fail(r, 400, "The cluster has %d servers already, the most it may hold",
                  CLUSTER_MAX_SERVERS);
        http_finish_write(r, REG_ETOOBIG);
        return;
    }
    http_cluster_member(r->srv, HTTP_MEMBER_ADD, member, addr, join_done, r);
}

/* ?id=N, a raft server id, into *out (0 when absent); false, with r
 * answered 400, when it is not a positive integer. */
static bool raft_id_param(struct http_req *r, uint64_t *out)
{
    const char *id = http_param(r, "id");
    *out = 0;
    if (id == NULL)
        return true;
    char *end;
    errno = 0;
    *out = strtoull(id, &end, 10);
    if (*id < '0' || *id > '9' || *end != '\0' || errno != 0 || *out == 0) {
        http_fail(r, 400, "Invalid ?id=%.40s: a raft server id is a positive integer", id);
        http_finish_write(r, REG_EINVAL);
        return false;
    }
    return true;
}

/* DELETE /v1/operator/raft/peer?id=N (or ?address=HOST:PORT) */
static void do_remove_peer(struct http_req *r)
{
    const char *id = http_param(r, "id"), *address = http_param(r, "address");
    uint64_t member;
    if (!raft_id_param(r, &member))
        return;
    if (member == 0 && address) {
        struct cluster_status st;
        cluster_get_status(r->srv->opt.cluster, &st);
        for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS; i++)
            if (strcmp(st.servers[i].addr, address) == 0)
                member = st.servers[i].id;
    }
    if (id == NULL && address == NULL) {
        http_fail(r, 400, "Must specify ?id= or ?address= of a raft peer");
        http_finish_write(r, REG_EINVAL);
        return;
    }
    if (member == 0) {
        http_fail(r, 404, "No raft peer with address %.100s in the configuration",
                  address ? address : "");
        http_finish_write(r, REG_ENOTFOUND);
        return;
    }
    /* A configuration without a voter can never elect a leader again: the
     * data would be unreachable after the next restart. */
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    int voters = 0, member_votes = 0, known = 0;
    for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS; i++) {
        voters += st.servers[i].voter;
        if (st.servers[i].id == member) {
            known = 1;
            member_votes = st.servers[i].voter;
        }
    }
    if (st.n_servers == 0 && member == st.self_id)
        known = 1; /* no configuration known yet: this server is all there is */
    if (!known) {
        http_fail(r, 404, "No raft peer with id %llu in the configuration",
                  (unsigned long long)member);
        http_finish_write(r, REG_ENOTFOUND);
        return;
    }
    if (st.n_servers <= 1 || voters - member_votes < 1) {
        http_fail(r, 400,
                  "Refusing to remove raft peer %llu: it is the %s, and a cluster without a "
                  "voter can never elect a leader again",
                  (unsigned long long)member, st.n_servers <= 1 ? "only server" : "last voter");
        http_finish_write(r, REG_EINVAL);
        return;
    }
    char why[300];
    if (!cluster_removal_keeps_quorum(&st, member, why, sizeof(why))) {
        http_fail(r, 409, "%s", why);
        http_finish_write(r, REG_EINVAL);
        return;
    }
    http_cluster_member(r->srv, HTTP_MEMBER_REMOVE, member, NULL, change_done, r);
}

static void transfer_done(void *arg, int status)
{
    struct http_req *r = arg;
    if (status == 0) {
        http_finish_json(r, json_pack("{s:b}", "Success", 1));
        return;
    }
    if (status == REG_ETIMEDOUT)
        http_fail(r, 500, "Failed to transfer leadership: this server still leads after an "
                          "election timeout");
    else if (status == REG_ERAFT)
        http_fail(r, 500, "Failed to transfer leadership: no voter could take it");
    else if (status == REG_ECONFLICT)
        http_fail(r, 409, "A leadership transfer is already under way");
    http_finish_write(r, status);
}

/* POST /v1/operator/raft/transfer-leader[?id=N], as Consul's: the leader
 * hands leadership to voter N, or (no id) to the voter most up to date;
 * {"Success": true} once it no longer leads. On the leader (forwarded). */
static void do_transfer_leader(struct http_req *r)
{
    uint64_t to;
    if (!raft_id_param(r, &to))
        return;
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    int target = -1, others = 0;
    for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS; i++) {
        if (st.servers[i].id == to)
            target = i;
        others += st.servers[i].voter && st.servers[i].id != st.self_id;
    }
    if (to != 0 && target < 0) {
        http_fail(r, 404, "No raft peer with id %llu in the configuration",
                  (unsigned long long)to);
        http_finish_write(r, REG_ENOTFOUND);
    } else if (to != 0 && to == st.self_id) {
        http_fail(r, 400, "Raft peer %llu leads already", (unsigned long long)to);
        http_finish_write(r, REG_EINVAL);
    } else if (target >= 0 && !st.servers[target].voter) {
        http_fail(r, 400, "Raft peer %llu is not a voter: it cannot lead",
                  (unsigned long long)to);
        http_finish_write(r, REG_EINVAL);
    } else if (others == 0) {
        http_fail(r, 400, "No other voter to transfer leadership to");
        http_finish_write(r, REG_EINVAL);
    } else {
        http_cluster_member(r->srv, HTTP_MEMBER_TRANSFER, to, NULL, transfer_done, r);
    }
}

/* PUT /v1/internal/raft/announce {"ID", "Raft", "HTTP"[, "Node", "Address"[,
 * "NodeMeta"]]}: a server says where its HTTP API listens (stored through
 * raft, for forwarding and for the checkers' view of who is alive), and
 * its node's name, address and meta, which the others show for it
 * (members, the raft configuration, the catalog, DNS); an older server's
 * announcement has none of them (or no meta). */
static int do_announce(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    (void)rd;
    json_t *body;
    if (http_body_json(r, &body) != 0)
        return -1;
    json_t *id = json_get_ci(body, "ID");
    const char *raft = json_string_value(json_get_ci(body, "Raft"));
    const char *http = json_string_value(json_get_ci(body, "HTTP"));
    const char *node = json_string_value(json_get_ci(body, "Node"));
    const char *addr = json_string_value(json_get_ci(body, "Address"));
    json_t *meta = json_get_ci(body, "NodeMeta");
    unsigned char ip[16];
    if (!json_is_integer(id) || raft == NULL || http == NULL) {
        json_decref(body);
        return http_fail(r, 400, "Announce needs {\"ID\", \"Raft\", \"HTTP\"}");
    }
    if (meta != NULL && !json_is_null(meta) && http_check_meta(r, meta, "NodeMeta") != 0) {
        json_decref(body);
        return -1;
    }
    cmd->op = CMD_SERVER;
    cmd->args = json_pack("{s:O, s:s, s:s}", "ID", id, "Raft", raft, "HTTP", http);
    if (cmd->args != NULL && record_node_name_ok(node) && addr != NULL &&
        (inet_pton(AF_INET, addr, ip) == 1 || inet_pton(AF_INET6, addr, ip) == 1)) {
        json_object_set_new(cmd->args, "Node", json_string(node));
        json_object_set_new(cmd->args, "Address", json_string(addr));
        if (json_object_size(meta) > 0)
            json_object_set(cmd->args, "NodeMeta", meta);
    }
    json_decref(body);
    return 0;
}

/* PUT /v1/internal/apply: commands a follower proposes (registrations it
 * received, results of the checks it owns), batched by cluster_link.
 * Answers one status per command, in order, once all are applied. Only
 * those commands are taken, and only here on the leader (never forwarded
 * again). */
struct apply_batch {
    struct http_req *r;
    size_t n, left;
    int status[LINK_APPLY_BATCH];
};

static void apply_batch_done(struct apply_batch *b)
{
    json_t *out = json_array();
    for (size_t i = 0; i < b->n && out; i++)
        json_array_append_new(out, json_integer(b->status[i]));
    http_finish_json(b->r, out);
    free(b);
}

struct apply_one {
    struct apply_batch *b;
    size_t i;
};

static void apply_one_done(void *arg, int status)
{
    struct apply_one *one = arg;
    struct apply_batch *b = one->b;
    b->status[one->i] = status;
    free(one);
    if (--b->left == 0)
        apply_batch_done(b);
}

static void do_apply(struct http_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    const unsigned char *body = len ? evbuffer_pullup(in, -1) : NULL;
    const unsigned char *cmds[LINK_APPLY_BATCH];
    size_t lens[LINK_APPLY_BATCH];
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    int n = body ? cluster_link_split_batch(body, len, cmds, lens, LINK_APPLY_BATCH) : REG_EINVAL;
    struct apply_batch *b = n > 0 ? calloc(1, sizeof(*b)) : NULL;
    if (b == NULL) {
        if (n <= 0)
            http_fail(r, 400, "Not a batch of commands");
        http_finish_write(r, n <= 0 ? REG_EINVAL : REG_ENOMEM);
        return;
    }
    b->r = r;
    if (!st.is_leader) { /* none taken: the sender sends them again (to whoever leads) */
        b->n = (size_t)n;
        for (int i = 0; i < n; i++)
            b->status[i] = REG_ENOTLEADER;
        apply_batch_done(b);
        return;
    }
    b->n = b->left = (size_t)n + 1; /* one more, released below: no early finish */
    for (int i = 0; i < n; i++) {
        struct command cmd;
        void *buf = NULL;
        size_t blen = lens[i];
        int rc = cmd_decode(cmds[i], lens[i], &cmd);
        if (rc == 0) {
            if (cmd.op != CMD_REGISTER && cmd.op != CMD_CHECK_UPDATE &&
                cmd.op != CMD_DEREGISTER)
                rc = REG_EINVAL;
            cmd_fini(&cmd);
        }
        if (rc == 0 && (buf = cluster_alloc(blen)) == NULL)
            rc = REG_ENOMEM;
        if (rc == 0)
            memcpy(buf, cmds[i], blen);
        struct apply_one *one = calloc(1, sizeof(*one));
        if (one == NULL) {
            cluster_free_buf(buf);
            b->status[i] = REG_ENOMEM;
            b->left--;
            continue;
        }
        *one = (struct apply_one){b, (size_t)i};
        if (rc != 0) {
            cluster_free_buf(buf);
            apply_one_done(one, rc);
        } else {
            http_cluster_submit(r->srv, true, buf, blen, apply_one_done, one);
        }
    }
    b->n = (size_t)n;
    if (--b->left == 0)
        apply_batch_done(b);
}

/* GET /v1/snapshot: a point-in-time copy of the whole store (binary; the
 * format registryd's raft snapshots use), for PUT /v1/snapshot.
 *
 * Written first, at disk speed, to an unlinked file in the data directory
 * (a few pieces per loop turn, so the loop serves others in between), and
 * only then sent from that file as the client takes it. The store's read
 * is held for the copy only: while a read is open LMDB reuses no page a
 * write frees, and a client that saved slowly (or stopped reading) grew
 * the store file with every write until its connection timed out. The
 * file is sent with its Content-Length, so a client can tell a body cut
 * short. One copy is made at a time, and only while it leaves the disk
 * SNAP_COPY_KEEP_FREE (the store's and raft log's next allocations): a
 * save that finds no room for it, or one running, is sent from a new read
 * as it is made, as before (chunked; an error half-way cuts the body short
 * of its trailer: no restore accepts it). An error before the first byte
 * is a 500 with its reason. */
#define SNAP_SEND_PIECE (256u << 10)
#define SNAP_FILL_SLICE_S 0.002
#define SNAP_SEND_CHUNK (1u << 20)
/* Free space a copy leaves on the data disk: the store's headroom and
 * minimum (store.c), a raft log segment and HTTP_SPOOL_KEEP_FREE, with room
 * to spare. Looked at before each turn of writing (which writes far less). */
#define SNAP_COPY_KEEP_FREE (128ull << 20)

/* a copy is being made (at most one at a time; any thread) */
static bool snap_copying;

struct snap_send {
    struct http_req *r;
    struct http_server *srv;
    struct evhttp_connection *evcon;
    struct store_snap_stream *st; /* while the file is written (or sent from) */
    bool direct;                  /* no room for the file: sent from st */
    struct event *fill;           /* the next turn of writing */
    int fd;                       /* the file; -1 once seg holds it */
    struct evbuffer_file_segment *seg; /* the file, once written */
    bool copying;                      /* holds snap_copying */
    uint64_t size, sent;
    unsigned char piece[SNAP_SEND_PIECE];
};

static void snap_send_free(struct snap_send *ss)
{
    http_on_client_gone(ss->srv, ss->evcon, NULL, NULL);
    if (ss->st)
        store_snap_stream_end(ss->st);
    if (ss->fill)
        event_free(ss->fill);
    if (ss->fd >= 0)
        close(ss->fd); /* unlinked: its blocks are free again */
    if (ss->seg)
        evbuffer_file_segment_free(ss->seg); /* closes the file when the last chunk is out */
    if (ss->copying)
        __atomic_store_n(&snap_copying, false, __ATOMIC_RELEASE);
    free(ss);
}

static void snap_send_closed(struct evhttp_connection *evcon, void *arg)
{
    struct snap_send *ss = arg;
    struct http_req *r = ss->r;
    (void)evcon;
    snap_send_free(ss);
    http_stream_end(r, true);
}

/* The next chunk: from the file, or (direct) from the read. Returns 0
 * (*n == 0: the end) or an error. */
static int snap_chunk(struct snap_send *ss, struct evbuffer *b, size_t *n)
{
    if (ss->direct) {
        int rc = store_snap_stream_read(ss->st, ss->piece, sizeof(ss->piece), n);
        return rc != 0 || *n == 0 ? rc : evbuffer_add(b, ss->piece, *n) == 0 ? 0 : REG_ENOMEM;
    }
    uint64_t left = ss->size - ss->sent;
    *n = left < SNAP_SEND_CHUNK ? (size_t)left : SNAP_SEND_CHUNK;
    if (*n > 0 &&
        evbuffer_add_file_segment(b, ss->seg, (ev_off_t)ss->sent, (ev_off_t)*n) != 0)
        return REG_ENOMEM;
    ss->sent += *n;
    return 0;
}

/* The last chunk is out (or the answer starts): send the next. */
static void snap_send_next(struct evhttp_connection *evcon, void *arg)
{
    struct snap_send *ss = arg;
    (void)evcon;
    size_t n = 0;
    struct evbuffer *b = evbuffer_new();
    int rc = b != NULL ? snap_chunk(ss, b, &n) : REG_ENOMEM;
    if (rc != 0)
        log_error("http", "msg=\"snapshot cut short\" error=\"%s\"", reg_strerror(rc));
    if (rc != 0 || n == 0) {
        struct http_req *r = ss->r;
        if (b)
            evbuffer_free(b);
        snap_send_free(ss);
        http_stream_end(r, false);
        return;
    }
    evhttp_send_reply_chunk_with_cb(ss->r->req, b, snap_send_next, ss);
    evbuffer_free(b);
}

/* Nothing sent yet: answer the failure as a status with its reason. */
static void snap_save_failed(struct snap_send *ss, int rc, const char *what)
{
    struct http_req *r = ss->r;
    snap_send_free(ss);
    http_fail(r, rc == REG_ENOSPACE ? 507 : 500, "Snapshot failed: %s: %s", what,
              reg_strerror(rc));
    http_finish_write(r, rc);
}

/* No room on the disk for the copy: drop it and send from a new read. */
static void snap_send_direct(struct snap_send *ss)
{
    if (ss->fd >= 0)
        close(ss->fd); /* unlinked: its blocks are free again */
    ss->fd = -1;
    if (ss->copying)
        __atomic_store_n(&snap_copying, false, __ATOMIC_RELEASE);
    ss->copying = false;
    store_snap_stream_end(ss->st);
    ss->st = NULL;
    int rc = store_snap_stream_begin(ss->srv->opt.store, &ss->st);
    if (rc != 0) {
        snap_save_failed(ss, rc, "reading the store");
        return;
    }
    log_warn("http", "msg=\"no room on the data disk for a snapshot's copy, or one being made: "
                     "sent from the store as it is read\"");
    ss->direct = true;
    http_stream_start(ss->r, "application/octet-stream");
    snap_send_next(ss->evcon, ss);
}

/* One turn of copying the store into the file; once it is all there, the
 * read ends and the answer starts. */
static void snap_fill(evutil_socket_t fd, short what, void *arg)
{
    struct snap_send *ss = arg;
    (void)fd;
    (void)what;
    const char *dir = ss->srv->opt.spool_dir ? ss->srv->opt.spool_dir : "/tmp";
    if (http_spool_too_full(dir, SNAP_COPY_KEEP_FREE)) {
        snap_send_direct(ss);
        return;
    }
    double t0 = mono_seconds();
    do {
        size_t n = 0;
        int rc = store_snap_stream_read(ss->st, ss->piece, sizeof(ss->piece), &n);
        if (rc != 0) {
            snap_save_failed(ss, rc, "reading the store");
            return;
        }
        if (n == 0) { /* complete: the read goes, the file is sent */
            store_snap_stream_end(ss->st);
            ss->st = NULL;
            /* the copy touched every page of the store's map: out of this
             * process's resident size again, as after raft's snapshot */
            store_release_map(ss->srv->opt.store);
            /* mapped now (no sendfile: a chunk goes through a buffer of
             * its own first), so that this fails before the answer starts */
            ss->seg = evbuffer_file_segment_new(ss->fd, 0, (ev_off_t)ss->size,
                                                EVBUF_FS_CLOSE_ON_FREE |
                                                    EVBUF_FS_DISABLE_SENDFILE);
            if (ss->seg == NULL) {
                snap_save_failed(ss, REG_ENOMEM, "sending its copy");
                return;
            }
            ss->fd = -1;
            __atomic_store_n(&snap_copying, false, __ATOMIC_RELEASE);
            ss->copying = false;
            char len[24];
            snprintf(len, sizeof(len), "%llu", (unsigned long long)ss->size);
            evhttp_add_header(evhttp_request_get_output_headers(ss->r->req), "Content-Length",
                              len);
            http_stream_start(ss->r, "application/octet-stream");
            snap_send_next(ss->evcon, ss);
            return;
        }
        for (size_t off = 0; off < n;) {
            ssize_t w = write(ss->fd, ss->piece + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0 && (errno == ENOSPC || errno == EDQUOT)) {
                snap_send_direct(ss);
                return;
            }
            if (w <= 0) {
                snap_save_failed(ss, REG_EIO, "writing its copy");
                return;
            }
            off += (size_t)w;
        }
        ss->size += n;
    } while (mono_seconds() - t0 < SNAP_FILL_SLICE_S);
    struct timeval now = {0, 0}; /* the next turn, after the loop polled */
    if (evtimer_add(ss->fill, &now) != 0)
        snap_save_failed(ss, REG_ENOMEM, "writing its copy");
}

static void do_snapshot_save(struct http_req *r)
{
    struct snap_send *ss = calloc(1, sizeof(*ss));
    if (ss == NULL) {
        http_fail(r, 500, "Snapshot failed: %s", reg_strerror(REG_ENOMEM));
        http_finish_write(r, REG_ENOMEM);
        return;
    }
    ss->r = r;
    ss->srv = r->srv;
    ss->evcon = evhttp_request_get_connection(r->req);
    const char *dir = r->srv->opt.spool_dir ? r->srv->opt.spool_dir : "/tmp";
    /* room for a copy about the store's size, and none being made */
    uint64_t instances, checks, bytes = 0;
    bool room = store_stats(r->srv->opt.store, &instances, &checks, &bytes) == 0 &&
                !http_spool_too_full(dir, bytes + SNAP_COPY_KEEP_FREE);
    ss->copying = room && !__atomic_exchange_n(&snap_copying, true, __ATOMIC_ACQ_REL);
    int fd = ss->copying ? http_spool_tmpfile(dir) : -ENOSPC;
    int err = fd < 0 ? -fd : 0;
    ss->fd = fd >= 0 ? fd : -1;
    if (err != 0 && err != ENOSPC && err != EDQUOT) {
        snap_save_failed(ss, REG_EIO, "no file for its copy");
        return;
    }
    int rc = store_snap_stream_begin(r->srv->opt.store, &ss->st);
    if (rc == 0 && (ss->fill = evtimer_new(r->srv->opt.base, snap_fill, ss)) == NULL)
        rc = REG_ENOMEM;
    if (rc != 0) {
        snap_save_failed(ss, rc, "reading the store");
        return;
    }
    http_on_client_gone(ss->srv, ss->evcon, snap_send_closed, ss);
    if (err != 0)
        snap_send_direct(ss); /* no room (or a copy being made) */
    else
        snap_fill(-1, 0, ss);
}

/* The snapshot a restore carries: the file the HTTP guard wrote its body
 * to (mapped, so it costs page cache, not heap), or evhttp's input buffer
 * for a body that reached evhttp as usual. */
struct snap_body {
    const unsigned char *data;
    size_t len;
    void *map; /* munmap when set */
};

static int snap_body_get(struct http_req *r, struct snap_body *b)
{
    *b = (struct snap_body){0};
    if (r->body_file.fd < 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
        b->len = evbuffer_get_length(in);
        b->data = b->len > 0 ? evbuffer_pullup(in, -1) : NULL;
        return b->len > 0 && b->data == NULL ? REG_ENOMEM : 0;
    }
    if (r->body_file.len == 0)
        return 0;
    if (r->body_file.len > SIZE_MAX)
        return REG_ENOMEM;
    b->len = (size_t)r->body_file.len;
    b->map = mmap(NULL, b->len, PROT_READ, MAP_PRIVATE, r->body_file.fd, 0);
    if (b->map == MAP_FAILED) {
        b->map = NULL;
        return REG_ENOMEM;
    }
    b->data = b->map;
    return 0;
}

static void snap_body_done(struct snap_body *b)
{
    if (b->map)
        munmap(b->map, b->len);
    b->map = NULL;
}

/* PUT /v1/snapshot: replace everything with a saved snapshot, through raft
 * so that every server restores the same data. */
static void do_snapshot_restore(struct http_req *r)
{
    struct snap_body body;
    char why[400];
    void *buf;
    size_t blen;
    struct snap_info info;
    int rc = snap_body_get(r, &body);
    if (rc != 0) {
        http_fail(r, 500, "Snapshot refused, data unchanged: cannot read it: %s",
                  reg_strerror(rc));
        http_finish_write(r, rc);
        return;
    }
    /* Everything is checked here, before the snapshot enters the raft log:
     * a refused restore changes nothing anywhere. */
    int vrc = body.data ? snap_validate(body.data, body.len, 0, &info, why, sizeof(why))
                        : REG_EINVAL;
    if (vrc != 0) {
        snap_body_done(&body);
        http_fail(r, vrc == REG_ENOMEM ? 500 : 400, "Snapshot refused, data unchanged: %s",
                  body.data ? why : "empty body");
        http_finish_write(r, vrc);
        return;
    }
    /* The raft log takes it once and the store about twice (the old pages
     * stay until the new ones commit): refuse now rather than fill the disk
     * half-way through (writes would stop on every server). */
    struct statvfs vfs;
    const char *dir = r->srv->opt.spool_dir;
    if (dir && statvfs(dir, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < 3 * (uint64_t)body.len + HTTP_SPOOL_KEEP_FREE) {
        snap_body_done(&body);
        http_fail(r, 507, "Snapshot refused, data unchanged: restoring %zu bytes needs about "
                          "%llu MiB free on the data disk (%s), %llu MiB are",
                  body.len,
                  (unsigned long long)((3 * (uint64_t)body.len + HTTP_SPOOL_KEEP_FREE) >> 20),
                  dir, (unsigned long long)(((uint64_t)vfs.f_bavail * vfs.f_frsize) >> 20));
        http_finish_write(r, REG_ENOSPACE);
        return;
    }
    /* libraft keeps an entry in memory: the one copy a restore costs */
    rc = cmd_restore_raw_encode(body.data, body.len, cluster_alloc, &buf, &blen);
    snap_body_done(&body);
    if (rc != 0) {
        http_finish_write(r, rc);
        return;
    }
    http_cluster_submit(r->srv, false, buf, blen, change_done, r);
}

/* ---- PUT /v1/agent/leave ------------------------------------------------ */

/*
 * As Consul's: this server leaves its cluster (leave.h), and once it has,
 * the answer is 200 and the process stops; if it cannot within
 * LEAVE_WITHIN_MS, the answer says why and the server goes on. A server
 * alone just stops.
 */
#define LEAVE_WITHIN_MS 10000

static void leave_change(void *ctx, bool transfer, uint64_t id, cluster_done_cb cb, void *arg)
{
    http_cluster_member(ctx, transfer ? HTTP_MEMBER_TRANSFER : HTTP_MEMBER_REMOVE, id, NULL, cb,
                        arg);
}

static void left(void *arg, int status, const char *why)
{
    struct http_req *r = arg;
    if (status == 0) {
        log_info("http", "msg=\"left the cluster (PUT /v1/agent/leave)\"");
        if (r->srv->opt.stop)
            r->srv->opt.stop(r->srv->opt.stop_arg);
        http_finish_write(r, 0);
    } else {
        log_warn("http", "msg=\"could not leave the cluster\" error=\"%s\"", why);
        http_fail(r, 500, "Could not leave the cluster within %d s: %s", LEAVE_WITHIN_MS / 1000,
                  why);
        http_finish_write(r, status);
    }
}

static void do_agent_leave(struct http_req *r)
{
    struct http_server *srv = r->srv;
    struct leave_via via = {
        .cluster = srv->opt.cluster,
        .link = srv->opt.link ? srv->opt.link : cluster_get_link(srv->opt.cluster),
        .change = leave_change,
        .ctx = srv,
    };
    struct event_base *base = evhttp_connection_get_base(evhttp_request_get_connection(r->req));
    log_info("http", "msg=\"leaving the cluster (PUT /v1/agent/leave)\"");
    if (base == NULL || leave_start(base, &via, LEAVE_WITHIN_MS, left, r, &srv->leaves) != 0) {
        http_fail(r, 500, "out of memory");
        http_finish_write(r, REG_ENOMEM);
    }
}

void http_leaves_free(struct http_server *srv)
{
    leave_free_all(&srv->leaves); /* the cluster and the channels are gone */
}

const struct http_route http_operator_routes[] = {
    {"GET", "/v1/snapshot", NULL, NULL, WATCH_NONE, do_snapshot_save, false},
    {"PUT", "/v1/snapshot", NULL, NULL, WATCH_NONE, do_snapshot_restore, true},
    {"GET", "/v1/internal/raft/self", read_raft_self, NULL, WATCH_NONE, NULL, false},
    {"PUT", "/v1/internal/raft/hello", NULL, NULL, WATCH_NONE, do_hello, false},
    {"PUT", "/v1/internal/raft/join", NULL, NULL, WATCH_NONE, do_join, true},
    {"PUT", "/v1/internal/raft/announce", NULL, do_announce, WATCH_NONE, NULL, false},
    {"PUT", "/v1/internal/apply", NULL, NULL, WATCH_NONE, do_apply, false},
    {"GET", "/v1/operator/raft/configuration", read_raft_configuration, NULL, WATCH_NONE, NULL,
     false},
    {"DELETE", "/v1/operator/raft/peer", NULL, NULL, WATCH_NONE, do_remove_peer, true},
    {"POST", "/v1/operator/raft/transfer-leader", NULL, NULL, WATCH_NONE, do_transfer_leader, true},
    {"PUT", "/v1/agent/leave", NULL, NULL, WATCH_NONE, do_agent_leave, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
