/*
 * cluster_link.c — the server-to-server channel (see cluster_link.h).
 *
 * Invariants: a connection is freed only when no request is pending on it
 * (evhttp_connection_free drops pending requests without calling them back)
 * and never from inside one of its own callbacks (the free is deferred to
 * the next loop turn). Every request sent is answered to its caller exactly
 * once: by the leader's answer, or by a failure when the connection fails.
 */
#include "cluster_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "acl.h"
#include "common.h"
#include "config.h"
#include "duration.h"
#include "log.h"
#include "queue.h"
#include "registry/error.h"
#include "store.h"

struct link_conn {
    struct cluster_link *l;
    struct evhttp_connection *evcon;
    char addr[128];
    unsigned pending;
    int nodelay_fd; /* the socket TCP_NODELAY was set on */
    bool retired; /* the leader moved: free once pending reaches 0 */
    bool sending; /* inside evhttp_make_request, which may fail the request
                   * (and call request_done) before it returns: link_send
                   * frees a connection retired meanwhile */
    struct link_conn *next;
};

/* A command proposed by this server, waiting for the leader's answer. */
struct proposal {
    struct queue_node qn;  /* in l->inbox, from any thread */
    struct proposal *next; /* in a batch or l->waiting, on the front end */
    void *buf;
    size_t len;
    cluster_done_cb cb;
    void *arg;
    uint64_t since_ms; /* first try, for the give-up deadline */
};

/* Proposals wait this long for a leader to be known (an election and the
 * new leader's announcement), retried every LINK_RETRY_MS. */
#define LINK_WAIT_LEADER_MS 4000
#define LINK_RETRY_MS 100

struct link_req;

struct cluster_link {
    struct link_req *inflight; /* every request sent and not yet answered */
    struct event_base *base;
    struct store *store;
    struct cluster *cluster;
    struct link_conn *conns; /* to the current leader, then retired ones */
    unsigned n_conns;

    struct queue inbox; /* proposals from any thread; wake drains it */
    struct event *wake;
    struct event *retry;       /* proposals waiting for a leader */
    struct proposal *waiting;  /* front-end thread only */
    struct event *sweep;       /* while requests are in flight: abandon_stale */
};

/* One request in flight on a connection. */
struct link_req {
    struct link_conn *conn;
    struct evhttp_request *req;
    uint64_t sent_ms;
    uint64_t leader_id; /* raft's leader when it was sent */
    bool quick;         /* link_send's: the sweep may abandon it */
    cluster_link_cb cb;
    void *arg;
    struct link_req *prev, *next; /* in l->inflight */
};

/*
 * A quick request (link_send) sent to a server that no longer leads (raft
 * has another leader than when it was sent; the servers' addresses, which
 * a restore may rewrite, do not count), unanswered LINK_ABANDON_MS after
 * it was sent, is answered as failed without waiting out LINK_TIMEOUT_S:
 * a leader that stopped (SIGSTOP, a hung host) held every write sent to it
 * for 30 s after the others had elected a new one. Its outcome is not
 * known (the entry may have committed before it stopped): a batch says
 * REG_ELEADERLOST. Looked at every LINK_SWEEP_MS while any request is in
 * flight; a leader that moved by a transfer answers what it holds within
 * tens of ms, well before. A forwarded client request is never abandoned:
 * a restore on a leader that lost its leadership meanwhile (busy with it)
 * still answers.
 */
#define LINK_ABANDON_MS 2000
#define LINK_SWEEP_MS 500

static void inflight_remove(struct cluster_link *l, struct link_req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        l->inflight = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

/* ---- connections ---------------------------------------------------------- */

/* Free a connection on the next loop turn (never inside its callbacks). */
static void conn_free_later(struct cluster_link *l, struct link_conn *c)
{
    evhttp_connection_set_closecb(c->evcon, NULL, NULL); /* c goes now */
    common_free_evcon_later(l->base, c->evcon);
    free(c);
}

static void conn_unlink(struct cluster_link *l, struct link_conn *c)
{
    for (struct link_conn **p = &l->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            l->n_conns--;
            return;
        }
}

/* No new request goes on c; it is freed once its requests are answered. */
static void conn_retire(struct cluster_link *l, struct link_conn *c)
{
    if (c->retired)
        return;
    c->retired = true;
    if (c->pending == 0 && !c->sending) {
        conn_unlink(l, c);
        conn_free_later(l, c);
    }
}

/* Retire every connection not to addr (the leader moved). */
static void retire_others(struct cluster_link *l, const char *addr)
{
    for (struct link_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (strcmp(c->addr, addr) != 0)
            conn_retire(l, c);
    }
}

/* A connection that closed (idle timeout, the leader went away) is not
 * reopened: a new one replaces it, with TLS from the client context of
 * then (evhttp would reconnect with the old SSL, and so present the
 * certificate of before a SIGHUP reload). */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct link_conn *c = arg;
    conn_retire(c->l, c);
}

/* The one place a connection to another server is made. */
static struct link_conn *link_conn_new(struct cluster_link *l, const char *addr)
{
    char host[128];
    unsigned short port;
    if (conf_split_hostport(addr, host, sizeof(host), &port) != 0)
        return NULL;
    struct link_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->evcon = common_server_evcon_new(l->base, host, port); /* mutual TLS when on */
    if (c->evcon == NULL) {
        free(c);
        return NULL;
    }
    evhttp_connection_set_timeout(c->evcon, LINK_TIMEOUT_S);
    evhttp_connection_set_retries(c->evcon, 0);
    evhttp_connection_set_closecb(c->evcon, conn_closed, c);
    c->l = l;
    c->nodelay_fd = -1;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->next = l->conns;
    l->conns = c;
    l->n_conns++;
    return c;
}

/* Small requests and answers go out at once: without TCP_NODELAY, Nagle's
 * algorithm meets the peer's delayed ACK and a write waits ~40 ms. The
 * socket exists once a request has started the connection (a reconnect
 * makes a new one, so this runs after every request; setsockopt is cheap). */
static void no_delay(struct link_conn *c)
{
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
    int one = 1;
    if (fd >= 0 && fd != c->nodelay_fd &&
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
        c->nodelay_fd = fd;
}

/* An idle connection to addr, else a new one, else the least busy. */
static struct link_conn *pick_conn(struct cluster_link *l, const char *addr)
{
    struct link_conn *best = NULL;
    unsigned open = 0;
    for (struct link_conn *c = l->conns; c; c = c->next) {
        if (c->retired || strcmp(c->addr, addr) != 0)
            continue;
        open++;
        if (c->pending == 0)
            return c;
        if (best == NULL || c->pending < best->pending)
            best = c;
    }
    if (open < LINK_MAX_CONNS) {
        struct link_conn *c = link_conn_new(l, addr);
        if (c != NULL)
            return c;
    }
    return best;
}

int cluster_link_leader_http(struct cluster_link *l, char *addr, size_t addrlen)
{
    struct cluster_status st;
    cluster_get_status(l->cluster, &st);
    if (!st.known_leader)
        return REG_ENOTLEADER;
    struct store_read *rd;
    json_t *server = NULL;
    if (store_read_begin(l->store, &rd) == 0) {
        store_get_server(rd, st.leader_addr, &server);
        store_read_end(rd);
    }
    const char *http = json_string_value(json_object_get(server, "HTTP"));
    /* "": a server that never announced itself was removed (cluster.c) */
    int rc = http != NULL && *http != '\0' && strlen(http) < addrlen ? 0 : REG_ENOTFOUND;
    if (rc == 0)
        snprintf(addr, addrlen, "%s", http);
    json_decref(server);
    return rc;
}

static void request_done(struct evhttp_request *resp, void *arg)
{
    struct link_req *q = arg;
    struct link_conn *c = q->conn;
    struct cluster_link *l = c->l;
    inflight_remove(l, q);
    c->pending--;
    bool failed = resp == NULL || evhttp_request_get_response_code(resp) == 0;
    if (failed)
        c->retired = true; /* never reused (see conn_closed) */
    q->cb(q->arg, resp, failed ? REG_ECONNECT : 0);
    free(q);
    if (c->retired && c->pending == 0 && !c->sending) {
        conn_unlink(l, c);
        conn_free_later(l, c);
    }
}

/* Send one request to the leader; cb runs exactly once unless this fails.
 * quick: one a live leader answers at once (a batch of commands, a
 * removal), which the sweep may abandon; a forwarded client request (a
 * restore, a large read) may take long on a leader busy with it, and
 * waits out LINK_TIMEOUT_S. */
static int link_send(struct cluster_link *l, enum evhttp_cmd_type method, const char *uri,
                     struct evbuffer *body,
                     void (*add_headers)(struct evkeyvalq *h, void *ctx), void *ctx,
                     bool quick, cluster_link_cb cb, void *arg)
{
    char addr[128];
    int rc = cluster_link_leader_http(l, addr, sizeof(addr));
    if (rc != 0)
        return rc;
    retire_others(l, addr);
    struct link_conn *c = pick_conn(l, addr);
    struct link_req *q = c ? calloc(1, sizeof(*q)) : NULL;
    struct evhttp_request *req = q ? evhttp_request_new(request_done, q) : NULL;
    if (req == NULL) {
        free(q);
        return REG_ENOMEM;
    }
    struct cluster_status st;
    cluster_get_status(l->cluster, &st);
    q->conn = c;
    q->req = req;
    q->sent_ms = mono_ms();
    q->leader_id = st.leader_id;
    q->quick = quick;
    q->cb = cb;
    q->arg = arg;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", addr);
    /* With ACLs on, every request on this channel speaks as a server. */
    if (acl_server_secret())
        evhttp_add_header(h, "X-Consul-Token", acl_server_secret());
    if (add_headers)
        add_headers(h, ctx);
    if (body)
        evbuffer_add_buffer(evhttp_request_get_output_buffer(req), body);
    c->pending++;
    q->next = l->inflight;
    if (l->inflight)
        l->inflight->prev = q;
    l->inflight = q;
    /* On failure evhttp_make_request frees req without calling back; it
     * may also fail the connection at once and call request_done (cb has
     * run: the send succeeded as far as the caller is concerned). */
    c->sending = true;
    int made = evhttp_make_request(c->evcon, req, method, uri);
    c->sending = false;
    if (made != 0) {
        inflight_remove(l, q);
        c->pending--;
        free(q);
    }
    if (c->retired && c->pending == 0) {
        conn_unlink(l, c);
        conn_free_later(l, c);
    } else if (made == 0) {
        no_delay(c);
    }
    struct timeval tv = {0, LINK_SWEEP_MS * 1000};
    if (made == 0 && l->inflight && !event_pending(l->sweep, EV_TIMEOUT, NULL))
        event_add(l->sweep, &tv);
    return made == 0 ? 0 : REG_EIO;
}

/* Sent before `before`, to another leader than `leader`? */
static bool stale(const struct link_req *q, uint64_t leader, uint64_t before)
{
    return q->quick && q->leader_id != leader && q->sent_ms <= before;
}

/* Answer (as failed) every stale request on c; c (retired) is freed here
 * if nothing else is pending on it, else once that is answered. */
static void abandon_conn(struct cluster_link *l, struct link_conn *c, uint64_t leader,
                         uint64_t before)
{
    c->sending = true; /* a cancel resets the connection: conn_closed must not free c */
    for (struct link_req *q = l->inflight, *next; q; q = next) {
        next = q->next;
        if (q->conn != c || !stale(q, leader, before))
            continue;
        inflight_remove(l, q);
        c->pending--;
        evhttp_cancel_request(q->req); /* not called back; freed */
        q->cb(q->arg, NULL, REG_ELEADERLOST);
        free(q);
        next = l->inflight; /* a callback may have sent (or answered) others: from the top */
    }
    c->sending = false;
    if (c->pending == 0) {
        conn_unlink(l, c);
        conn_free_later(l, c);
    }
}

static void abandon_stale(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cluster_link *l = arg;
    struct cluster_status st;
    cluster_get_status(l->cluster, &st);
    if (st.known_leader) {
        uint64_t before = mono_ms() - LINK_ABANDON_MS;
        for (struct link_conn *c = l->conns, *next; c; c = next) {
            next = c->next;
            bool any = false;
            for (struct link_req *q = l->inflight; q && !any; q = q->next)
                any = q->conn == c && stale(q, st.leader_id, before);
            if (!any)
                continue;
            log_warn("link", "msg=\"the former leader has not answered; its requests fail\" "
                             "server=%s",
                     c->addr);
            c->retired = true; /* abandon_conn frees it once nothing is pending */
            abandon_conn(l, c, st.leader_id, before);
            next = l->conns; /* the list may have changed: from the top */
        }
    }
    struct timeval tv = {0, LINK_SWEEP_MS * 1000};
    if (l->inflight)
        event_add(l->sweep, &tv);
}

/* ---- forwarded client requests --------------------------------------------- */

struct forward_names {
    struct evhttp_request *req;
    const struct cluster_forward *from;
};

/* The inner request's method, URI and node, for the leader to rebuild it. */
static void forward_headers(struct evkeyvalq *h, void *ctx)
{
    struct forward_names *n = ctx;
    const struct cluster_forward *f = n->from;
    evhttp_add_header(h, "X-Registry-Method",
                      common_method_name(evhttp_request_get_command(n->req)));
    evhttp_add_header(h, "X-Registry-URI", evhttp_request_get_uri(n->req));
    evhttp_add_header(h, "X-Registry-Node", f->node);
    evhttp_add_header(h, "X-Registry-Node-Address", f->node_addr);
    if (f->node_meta != NULL)
        evhttp_add_header(h, "X-Registry-Node-Meta", f->node_meta);
    if (f->client_token && *f->client_token)
        evhttp_add_header(h, "X-Registry-Client-Token", f->client_token);
    if (f->waited)
        evhttp_add_header(h, "X-Registry-Waited", "1");
}

int cluster_link_forward(struct cluster_link *l, struct evhttp_request *req,
                         const struct cluster_forward *from, cluster_link_cb cb, void *arg)
{
    struct forward_names names = {req, from};
    if (from->body_fd < 0)
        return link_send(l, EVHTTP_REQ_PUT, "/v1/internal/forward",
                         evhttp_request_get_input_buffer(req), forward_headers, &names,
                         from->again, cb, arg);
    /* a file (a snapshot): sent from the page cache, never read in whole */
    struct evbuffer *body = evbuffer_new();
    int fd = body ? dup(from->body_fd) : -1;
    if (fd < 0 || (from->body_len > 0 &&
                   evbuffer_add_file(body, fd, 0, (ev_off_t)from->body_len) != 0)) {
        if (fd >= 0)
            close(fd);
        if (body)
            evbuffer_free(body);
        return REG_ENOMEM;
    }
    if (from->body_len == 0)
        close(fd);
    int rc = link_send(l, EVHTTP_REQ_PUT, REG_FORWARD_SPOOLED_URI, body, forward_headers, &names,
                       false, cb, arg);
    evbuffer_free(body);
    return rc;
}

int cluster_link_request(struct cluster_link *l, enum evhttp_cmd_type method, const char *uri,
                         cluster_link_cb cb, void *arg)
{
    return link_send(l, method, uri, NULL, NULL, NULL, true, cb, arg);
}

/* ---- proposals --------------------------------------------------------------- */

struct batch {
    struct cluster_link *l;
    struct proposal *head;
    size_t n;
};

/* Each answered with status, its command freed. */
static void answer_all(struct proposal *p, int status)
{
    while (p) {
        struct proposal *next = p->next;
        cluster_free_buf(p->buf);
        p->cb(p->arg, status);
        free(p);
        p = next;
    }
}

/* Shutting down: proposals never sent are answered with REG_ESHUTDOWN. */
static void drop_all(struct proposal *list)
{
    answer_all(list, REG_ESHUTDOWN);
}

/* A command the leader did not take (it no longer leads, or hands
 * leadership over: REG_ENOTLEADER says nothing was appended) goes again
 * after LINK_RETRY_MS, to whoever leads then, while LINK_WAIT_LEADER_MS
 * from its first try allows. False: its time is up. */
static bool send_again(struct cluster_link *l, struct proposal *p)
{
    if (mono_ms() - p->since_ms >= LINK_WAIT_LEADER_MS)
        return false;
    struct proposal **tail = &l->waiting;
    while (*tail)
        tail = &(*tail)->next;
    p->next = NULL;
    *tail = p;
    struct timeval tv = {0, LINK_RETRY_MS * 1000};
    if (!event_pending(l->retry, EV_TIMEOUT, NULL) && event_add(l->retry, &tv) != 0)
        log_warn("link", "msg=\"cannot schedule a retry\"");
    return true;
}

/* The leader answers a batch with one status per command, in order. */
static void batch_done(void *arg, struct evhttp_request *resp, int failed)
{
    struct batch *b = arg;
    json_t *statuses = NULL;
    if (failed == 0 && evhttp_request_get_response_code(resp) == 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(resp);
        statuses = json_loadb((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in),
                              0, NULL);
    }
    if (!json_is_array(statuses) || json_array_size(statuses) != b->n) {
        int code = failed ? 0 : evhttp_request_get_response_code(resp);
        log_debug("link", "msg=\"proposals not applied\" commands=%zu http_status=%d", b->n,
                  code);
        /* no answer, or none to read: whether they were applied is not
         * known (a 200 whose statuses do not parse is REG_EPROTO); the
         * leader answers anything else before it takes any */
        answer_all(b->head, failed ? failed : code == 200 ? REG_EPROTO : REG_ENOTLEADER);
    } else {
        size_t i = 0;
        for (struct proposal *p = b->head, *next; p; p = next, i++) {
            next = p->next;
            json_t *s = json_array_get(statuses, i);
            json_int_t v = json_integer_value(s);
            int status = json_is_integer(s) && v <= 0 && v >= -1000 ? (int)v : REG_EPROTO;
            if (status == REG_ENOTLEADER && send_again(b->l, p))
                continue;
            p->next = NULL;
            answer_all(p, status);
        }
    }
    json_decref(statuses);
    free(b);
}

/* Commands are kept (not freed) until answered: one the leader did not
 * take is sent again. */
static void send_batch(struct cluster_link *l, struct proposal *head, size_t n)
{
    struct evbuffer *body = evbuffer_new();
    struct batch *b = body ? calloc(1, sizeof(*b)) : NULL;
    int rc = b ? 0 : REG_ENOMEM;
    for (struct proposal *p = head; p && rc == 0; p = p->next) {
        uint32_t be = htonl((uint32_t)p->len);
        if (evbuffer_add(body, &be, sizeof(be)) != 0 || evbuffer_add(body, p->buf, p->len) != 0)
            rc = REG_ENOMEM;
    }
    if (rc == 0) {
        *b = (struct batch){.l = l, .head = head, .n = n};
        rc = link_send(l, EVHTTP_REQ_PUT, "/v1/internal/apply", body, NULL, NULL, true,
                       batch_done, b);
    }
    if (body)
        evbuffer_free(body);
    if (rc != 0) {
        free(b);
        answer_all(head, rc);
    }
}

/* Everything proposed since the last look, oldest first, as a list. */
static struct proposal *take_inbox(struct cluster_link *l)
{
    struct proposal *head = NULL, **tail = &head;
    for (struct queue_node *n = queue_take(&l->inbox); n; n = n->next) {
        struct proposal *p = queue_entry(n, struct proposal, qn);
        p->next = NULL;
        *tail = p;
        tail = &p->next;
    }
    return head;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cluster_link *l = arg;
    struct proposal *all = take_inbox(l);
    if (l->waiting) { /* the older first */
        struct proposal *t = l->waiting;
        while (t->next)
            t = t->next;
        t->next = all;
        all = l->waiting;
        l->waiting = NULL;
    }
    char addr[128];
    if (all && cluster_link_leader_http(l, addr, sizeof(addr)) != 0) {
        /* No leader known yet: wait for one, a bounded time. */
        uint64_t now = mono_ms();
        struct proposal **keep = &l->waiting;
        for (struct proposal *p = all, *next; p; p = next) {
            next = p->next;
            p->next = NULL;
            if (now - p->since_ms < LINK_WAIT_LEADER_MS) {
                *keep = p;
                keep = &p->next;
            } else {
                cluster_free_buf(p->buf);
                p->cb(p->arg, REG_ENOTLEADER);
                free(p);
            }
        }
        struct timeval tv = {0, LINK_RETRY_MS * 1000};
        if (l->waiting && event_add(l->retry, &tv) != 0)
            log_warn("link", "msg=\"cannot schedule a retry\"");
        return;
    }
    while (all) { /* batches of at most LINK_APPLY_BATCH */
        struct proposal *head = all, *tail = all;
        size_t n = 1;
        while (tail->next && n < LINK_APPLY_BATCH) {
            tail = tail->next;
            n++;
        }
        all = tail->next;
        tail->next = NULL;
        send_batch(l, head, n);
    }
}

void cluster_link_propose(struct cluster_link *l, void *buf, size_t len, cluster_done_cb cb,
                          void *arg)
{
    struct proposal *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        cluster_free_buf(buf);
        cb(arg, REG_ENOMEM);
        return;
    }
    *p = (struct proposal){.buf = buf, .len = len, .cb = cb, .arg = arg, .since_ms = mono_ms()};
    if (queue_push(&l->inbox, &p->qn))
        event_active(l->wake, EV_READ, 0);
}

int cluster_link_split_batch(const unsigned char *body, size_t len, const unsigned char **cmds,
                             size_t *lens, size_t max)
{
    size_t n = 0, off = 0;
    while (off < len) {
        uint32_t be;
        if (len - off < sizeof(be) || n == max)
            return REG_EINVAL;
        memcpy(&be, body + off, sizeof(be));
        off += sizeof(be);
        size_t l = ntohl(be);
        if (l == 0 || l > len - off)
            return REG_EINVAL;
        cmds[n] = body + off;
        lens[n++] = l;
        off += l;
    }
    return n > 0 ? (int)n : REG_EINVAL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int cluster_link_new(struct event_base *base, struct store *store, struct cluster *cluster,
                     struct cluster_link **out)
{
    struct cluster_link *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return REG_ENOMEM;
    l->base = base;
    l->store = store;
    l->cluster = cluster;
    queue_init(&l->inbox);
    l->wake = event_new(base, -1, 0, wake_cb, l);
    l->retry = evtimer_new(base, wake_cb, l);
    l->sweep = evtimer_new(base, abandon_stale, l);
    if (l->wake == NULL || l->retry == NULL || l->sweep == NULL) {
        cluster_link_free(l);
        return REG_ENOMEM;
    }
    *out = l;
    return 0;
}

void cluster_link_free(struct cluster_link *l)
{
    if (l == NULL)
        return;
    drop_all(take_inbox(l));
    drop_all(l->waiting);
    /* evhttp_connection_free drops pending requests without calling them
     * back: answer them first (as failed), then free the connections. */
    while (l->inflight) {
        struct link_req *q = l->inflight;
        l->inflight = q->next;
        q->cb(q->arg, NULL, REG_ESHUTDOWN);
        free(q);
    }
    while (l->conns) {
        struct link_conn *c = l->conns;
        l->conns = c->next;
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        evhttp_connection_free(c->evcon);
        free(c);
    }
    if (l->wake)
        event_free(l->wake);
    if (l->retry)
        event_free(l->retry);
    if (l->sweep)
        event_free(l->sweep);
    queue_fini(&l->inbox);
    free(l);
}
