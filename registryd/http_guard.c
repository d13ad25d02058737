/*
 * http_guard.c — see http_guard.h.
 */
#include "http_guard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "duration.h"
#include "http_spool.h"
#include "log.h"
#include "metrics.h"
#include "registry/error.h"
#include "strmap.h"

enum conn_state { CONN_IDLE, CONN_HEAD, CONN_BODY };

struct guard_conn {
    struct http_guard *g;
    struct bufferevent *bev;         /* referenced until evhttp lets go */
    struct evbuffer_cb_entry *watch; /* on bev's input */
    uint64_t deadline_ms;            /* monotonic; 0: none */
    enum conn_state state;
    size_t line_len; /* bytes of the current head line, '\r' aside */
    bool seen_line;  /* a line of this head ended */
    char first[40];  /* the start of the request line */
    size_t first_len;
    /* The body's framing, read from the head as it passes (header_line):
     * one Content-Length of digits, or Transfer-Encoding "chunked" alone. */
    char hline[64]; /* the start of the current header line */
    size_t hline_len;
    bool has_length, has_te, bad_framing;
    bool framing_line; /* the header line before was Content-Length or Transfer-Encoding */
    uint64_t length;
    uint64_t body_bytes, body_limit; /* of this request */
    char key[24];                    /* conn_key of bev, in g->conns */
    /* Per-client accounting: a connection is admitted (counted under its
     * peer's address) on the loop turn after its accept, once evhttp has
     * given the bufferevent its socket. */
    bool pending;                    /* on g->pending, not yet admitted */
    struct guard_conn *next_pending;
    bool counted;                    /* in the clients table and its list (under its lock) */
    struct guard_conn *cprev, *cnext; /* the client's other counted connections */
    bool refused;                    /* over the cap: shut, its input discarded */
    bool got_input;                  /* some bytes of a request arrived (atomic: other
                                        workers read it when reaping at the cap) */
    evutil_socket_t fd;              /* its socket while counted (for that reaping) */
    /* Swept (every GUARD_SWEEP_MS) only while it has a deadline or the guard
     * would not hear of evhttp freeing it: a connection that carried a
     * request has the close callback (below), so thousands of parked
     * blocking queries cost nothing between events. */
    bool watched;                  /* evhttp's close callback is ours */
    bool on_sweep;                 /* on g->swept */
    struct guard_conn *sprev, *snext;
    void (*user_close)(struct evhttp_connection *, void *); /* http_guard_on_close */
    void *user_close_arg;
    /* A body written to a file (http_spool.h): the spool while it is read,
     * then the file, for the next request evhttp hands to its handler. */
    struct http_spool *spool;
    bool spooled;     /* this request went to a spool */
    bool reinjecting; /* giving evhttp the rewritten head: not new input */
    int body_fd;      /* -1: none */
    uint64_t body_len;
    int body_err;
    char client[INET6_ADDRSTRLEN];
};

/* Open connections of one client address. */
struct client_count {
    unsigned n;
    struct guard_conn *conns; /* the counted ones, to reap at the cap */
};

/* One evhttp instance attached: its listener, and TLS or not. */
struct guard_front {
    struct http_guard *g;
    struct evconnlistener *listener;
    http_guard_tls_ctx_fn tls_ctx; /* NULL: plain HTTP */
};

/* Per-client counts of every guard (one per HTTP worker thread): one
 * client's connections may land on any worker, and the cap is per client. */
struct http_guard_clients {
    pthread_mutex_t lock;
    struct strmap *per_client; /* client address -> struct client_count */
    uint64_t open, refused;    /* counted connections now; refused since start */
};

struct http_guard {
    struct http_guard_options opt;
    struct http_guard_clients *clients; /* opt.clients, or own_clients */
    struct http_guard_clients *own_clients;
    struct strmap *conns; /* conn_key of the bufferevent -> guard_conn */
    struct guard_front fronts[GUARD_FRONTS];
    int n_fronts;
    struct event *resume; /* re-enables accepting after a pause */
    struct event *sweep;  /* deadlines and released connections, every GUARD_SWEEP_MS */
    struct event *admit;  /* counts new connections by client (made active on accept) */
    struct guard_conn *pending, *pending_tail; /* in order of accept */
    struct guard_conn *swept;  /* the connections each sweep looks at */
    unsigned sweeps;           /* every GUARD_FULL_EVERY-th looks at all */
};

#define GUARD_SWEEP_MS 250
#define GUARD_FULL_EVERY 120 /* 30 s: a fallback, should evhttp free one unheard */

/* evconnlistener's error callback gets evhttp's argument, not ours: find
 * the guard by its listener (a registryd has one or two). */
#define GUARD_LISTENERS 160 /* two per HTTP worker (REG_MAX_HTTP_WORKERS), and spare */

/* A connection's key in g->conns: its bufferevent's address in hex (what
 * "%p" gives, without printf's machinery on every request). buf: 24 bytes. */
static void conn_key(const struct bufferevent *bev, char *buf)
{
    uintptr_t v = (uintptr_t)bev;
    char tmp[2 * sizeof(v)];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    char *p = buf;
    *p++ = '0';
    *p++ = 'x';
    while (n > 0)
        *p++ = tmp[--n];
    *p = '\0';
}
static struct {
    struct evconnlistener *l;
    struct http_guard *g;
} listeners[GUARD_LISTENERS];
static pthread_mutex_t listeners_lock = PTHREAD_MUTEX_INITIALIZER;

/* On g->swept exactly while it has a deadline or is not watched. */
static void resweep(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    bool want = c->deadline_ms != 0 || !c->watched;
    if (want == c->on_sweep)
        return;
    if (want) {
        c->sprev = NULL;
        c->snext = g->swept;
        if (g->swept)
            g->swept->sprev = c;
        g->swept = c;
    } else {
        if (c->sprev)
            c->sprev->snext = c->snext;
        else
            g->swept = c->snext;
        if (c->snext)
            c->snext->sprev = c->sprev;
        c->sprev = c->snext = NULL;
    }
    c->on_sweep = want;
}

static void set_deadline(struct guard_conn *c, uint64_t at)
{
    c->deadline_ms = at;
    resweep(c);
}

static void arm(struct guard_conn *c, enum conn_state state, uint64_t ms)
{
    c->state = state;
    set_deadline(c, ms ? mono_ms() + ms : 0);
}

static bool starts(const struct guard_conn *c, const char *want, const char *then)
{
    size_t n = strlen(want);
    return c->first_len > n && memcmp(c->first, want, n) == 0 && strchr(then, c->first[n]);
}

/* PUT /v1/snapshot, or a follower's forward of one: its body may be as
 * large as snapshot_body_max, and goes to a file (http_spool.h). */
static bool is_snapshot_restore(const struct guard_conn *c)
{
    return starts(c, "PUT /v1/snapshot", " ?") ||
           starts(c, "PUT " REG_FORWARD_SPOOLED_URI, " &");
}

/* Does header line h (n bytes kept of it, its ending CR aside) name header
 * `name`? Then *v is its value as libevent reads it (evhttp_parse_headers:
 * spaces skipped before it, spaces and tabs trimmed after), NUL-ended in
 * place: the guard must see the value evhttp will act on. */
static bool header_is(char *h, size_t n, const char *name, char **v)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(h, name, k) != 0 || h[k] != ':')
        return false;
    h[n] = '\0';
    char *b = h + k + 1;
    while (*b == ' ')
        b++;
    char *e = h + n;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';
    *v = b;
    return true;
}

/* A header line ended: note the body's framing. Go's net/http (Consul's
 * server) refuses what libevent would take and a proxy in front might
 * read otherwise (request smuggling): two different Content-Lengths (the
 * first won, the rest of the body ran as a second request), a length with
 * a sign, a Transfer-Encoding other than "chunked", or both. */
static void header_line(struct guard_conn *c)
{
    char *v;
    size_t len = c->hline_len;
    if (len > 0 && len <= sizeof(c->hline) - 1 && c->hline[len - 1] == '\r')
        len--; /* the line's ending (a CR inside it stays: libevent keeps it) */
    bool whole = len < sizeof(c->hline) - 1;
    size_t n = whole ? len : sizeof(c->hline) - 1;
    /* a continuation line (obs-fold) is appended by libevent to the header
     * before: one after a framing header changes its value */
    bool fold = n > 0 && (c->hline[0] == ' ' || c->hline[0] == '\t');
    if (fold && c->framing_line)
        c->bad_framing = true;
    if (fold)
        return;
    c->framing_line = false;
    if (header_is(c->hline, n, "content-length", &v)) {
        c->framing_line = true;
        uint64_t len = 0;
        bool digits = whole && *v != '\0' && strlen(v) <= 19;
        for (const char *d = v; digits && *d; d++) {
            digits = *d >= '0' && *d <= '9';
            len = len * 10 + (uint64_t)(*d - '0');
        }
        if (!digits || (c->has_length && len != c->length))
            c->bad_framing = true;
        c->has_length = true;
        c->length = len;
    } else if (header_is(c->hline, n, "transfer-encoding", &v)) {
        c->framing_line = true;
        if (!whole || c->has_te || strcasecmp(v, "chunked") != 0)
            c->bad_framing = true;
        c->has_te = true;
    }
    if (c->has_te && c->has_length)
        c->bad_framing = true;
}

/* The bytes of a line (no '\n' among them) as scan_head takes them: the
 * first line's, '\r' aside, into c->first; a header line's, all, into
 * c->hline; line_len counts them but '\r'. A run at a time, not a byte. */
static void scan_run(struct guard_conn *c, const unsigned char *p, size_t n)
{
    if (c->seen_line) {
        if (c->hline_len < sizeof(c->hline) - 1) {
            size_t room = sizeof(c->hline) - 1 - c->hline_len;
            memcpy(c->hline + c->hline_len, p, n < room ? n : room);
        }
        c->hline_len += n;
    }
    for (size_t i = 0; i < n;) {
        const unsigned char *cr = memchr(p + i, '\r', n - i);
        size_t end = cr ? (size_t)(cr - p) : n; /* [i, end): no '\r' */
        if (!c->seen_line && c->first_len < sizeof(c->first)) {
            size_t room = sizeof(c->first) - c->first_len, k = end - i;
            memcpy(c->first + c->first_len, p + i, k < room ? k : room);
            c->first_len += k < room ? k : room;
        }
        c->line_len += end - i;
        i = end + (cr != NULL);
    }
}

/* Watch the head for its end (an empty line); returns the head bytes of
 * p[0..n) (the rest, if any, is body). */
static size_t scan_head(struct guard_conn *c, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char *nl = memchr(p + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - p) : n;
        scan_run(c, p + i, end - i);
        if ((i = end) == n)
            break;
        /* p[i] is a '\n': a line ends */
        if (c->seen_line && c->line_len > 0)
            header_line(c);
        c->hline_len = 0;
        if (c->line_len == 0 && c->seen_line) {
            arm(c, CONN_BODY, c->g->opt.body_timeout_ms);
            c->body_bytes = 0;
            c->body_limit =
                is_snapshot_restore(c) ? c->g->opt.snapshot_body_max : c->g->opt.body_max;
            return i + 1;
        }
        if (c->line_len > 0)
            c->seen_line = true;
        c->line_len = 0;
    }
    return n;
}

/* A body beyond its route's limit: the connection goes (evhttp would
 * otherwise keep reading up to its one, global, cap). */
static void body_check(struct guard_conn *c)
{
    if (c->body_limit == 0 || c->body_bytes <= c->body_limit)
        return;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    log_limited(LOG_WARN, "http",
                "msg=\"request body beyond its limit; connection closed\" limit_bytes=%llu",
                (unsigned long long)c->body_limit);
    c->body_limit = 0;
    set_deadline(c, 0);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

/* A head whose body cannot be framed one way only: 400 with its reason
 * (when no answer is queued before it), the connection closed, nothing of
 * the request left for evhttp to parse. */
static void refuse_framing(struct guard_conn *c, struct evbuffer *buf)
{
#define FRAMING_WHY                                                                        \
    "Bad request framing: Content-Length twice or not digits, or Transfer-Encoding not "    \
    "\"chunked\"\n"
    _Static_assert(sizeof(FRAMING_WHY) - 1 == 92, "the Content-Length below");
    static const char answer[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; "
                                 "charset=utf-8\r\nConnection: close\r\nContent-Length: "
                                 "92\r\n\r\n" FRAMING_WHY;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    log_limited(LOG_WARN, "http", "msg=\"request with ambiguous body framing; connection "
                                  "closed\" client=%s", c->client);
    c->refused = true; /* what follows is never parsed */
    set_deadline(c, 0);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    if (fd < 0)
        return;
    /* on TLS the answer would be plaintext in the encrypted stream: only
     * closed there */
    if (bufferevent_openssl_get_ssl(c->bev) == NULL &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
        send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("http", "msg=\"framing refusal not sent\" error=\"%s\"", strerror(errno));
    shutdown(fd, SHUT_RDWR);
}

/* ---- bodies written to a file ------------------------------------------- */

/* The whole request line is in buf from its first byte: evhttp (which takes
 * only whole lines, and reads after this callback) has not seen any of it. */
static bool untouched(const struct guard_conn *c, struct evbuffer *buf)
{
    char start[sizeof(c->first)];
    return c->first_len > 0 &&
           evbuffer_copyout(buf, start, c->first_len) == (ev_ssize_t)c->first_len &&
           memcmp(start, c->first, c->first_len) == 0;
}

/* "100 Continue" for a client that waits for it before its body (evhttp,
 * which would send it, has not seen the head). evhttp keeps writing off
 * while it reads a request, and its write callback would take the drained
 * output for the end of a response: write with no write callback; evhttp
 * sets its own again when it answers. */
static void send_continue(struct guard_conn *c)
{
    bufferevent_data_cb rd, wr;
    bufferevent_event_cb ev;
    void *arg;
    bufferevent_getcb(c->bev, &rd, &wr, &ev, &arg);
    bufferevent_setcb(c->bev, rd, NULL, ev, arg);
    if (bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0)
        bufferevent_enable(c->bev, EV_WRITE);
}

static void spool_input(struct guard_conn *c, struct evbuffer *buf)
{
    enum spool_state st = http_spool_feed(c->spool, buf); /* takes every byte */
    if (c->state == CONN_HEAD && http_spool_in_body(c->spool))
        arm(c, CONN_BODY, c->g->opt.body_timeout_ms);
    if (http_spool_take_continue(c->spool))
        send_continue(c);
    if (st == SPOOL_MORE)
        return;
    if (st == SPOOL_DONE) {
        if (c->body_fd >= 0)
            close(c->body_fd);
        http_spool_take_file(c->spool, &c->body_fd, &c->body_len, &c->body_err);
        c->reinjecting = true;
        int rc = http_spool_release(c->spool, buf);
        c->reinjecting = false;
        http_spool_free(c->spool);
        c->spool = NULL;
        arm(c, CONN_BODY, 0); /* evhttp reads the rest at once */
        c->body_limit = 0;
        if (rc == 0)
            return;
    }
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    log_limited(LOG_WARN, "http", "msg=\"request body refused; connection closed\" why=\"%s\"",
                st == SPOOL_BAD ? http_spool_why(c->spool) : "out of memory");
    http_spool_free(c->spool);
    c->spool = NULL;
    c->refused = true; /* what follows is never parsed */
    set_deadline(c, 0);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

/* From this byte on, the request goes to a spool (all of buf is its). */
static void spool_start(struct guard_conn *c, struct evbuffer *buf)
{
    c->spooled = true;
    c->body_limit = 0; /* the spool keeps its own */
    if (http_spool_new(c->g->opt.spool_dir, c->g->opt.snapshot_body_max, &c->spool) != 0) {
        c->spool = NULL; /* out of memory: evhttp reads it as any other */
        return;
    }
    spool_input(c, buf);
}

/* Bytes came in (or were consumed): the added ones are the buffer's tail. */
static void scan_input(struct guard_conn *c, struct evbuffer *buf, size_t n);

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct guard_conn *c = arg;
    if (info->n_added == 0 || c->reinjecting)
        return;
    __atomic_store_n(&c->got_input, true, __ATOMIC_RELAXED);
    if (c->refused) { /* bytes sent before the refusal: evhttp must never parse them */
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    if (c->spool) {
        spool_input(c, buf);
        return;
    }
    size_t len = evbuffer_get_length(buf);
    scan_input(c, buf, info->n_added < len ? info->n_added : len);
}

/* The last n bytes of buf are new to the guard: follow the request they
 * belong to. */
static void scan_input(struct guard_conn *c, struct evbuffer *buf, size_t n)
{
    if (c->state == CONN_IDLE) {
        c->line_len = 0;
        c->seen_line = false;
        c->spooled = false;
        c->first_len = 0;
        c->hline_len = 0;
        c->has_length = c->has_te = c->bad_framing = c->framing_line = false;
        arm(c, CONN_HEAD, c->g->opt.head_timeout_ms);
    }
    if (c->state == CONN_BODY) {
        c->body_bytes += n;
        body_check(c);
        return;
    }
    size_t len = evbuffer_get_length(buf);
    struct evbuffer_ptr at;
    if (evbuffer_ptr_set(buf, &at, len - n, EVBUFFER_PTR_SET) != 0)
        return;
    while (n > 0) { /* eight pieces of the buffer at a time, to the end */
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(buf, (ev_ssize_t)n, &at, v, 8);
        if (nv <= 0)
            break;
        for (int i = 0; i < nv && i < 8 && n > 0; i++) {
            size_t k = v[i].iov_len < n ? v[i].iov_len : n;
            if (c->state == CONN_HEAD)
                c->body_bytes += k - scan_head(c, v[i].iov_base, k);
            else
                c->body_bytes += k;
            n -= k;
            if (evbuffer_ptr_set(buf, &at, k, EVBUFFER_PTR_ADD) != 0)
                n = 0;
        }
    }
    if (c->bad_framing) {
        refuse_framing(c, buf);
        return;
    }
    if (c->state == CONN_BODY)
        body_check(c);
    if (c->state != CONN_IDLE && c->seen_line && !c->spooled && is_snapshot_restore(c) &&
        untouched(c, buf))
        spool_start(c, buf);
}

/* Under t->lock. */
static void publish(const struct http_guard_clients *t)
{
    metrics_http_conns(t->open, t->refused);
}

/* The connection is gone: its client has one fewer open. Under t->lock. */
static void uncount_locked(struct http_guard_clients *t, struct guard_conn *c)
{
    struct client_count *cc = c->counted ? strmap_get(t->per_client, c->client) : NULL;
    if (cc == NULL)
        return;
    c->counted = false;
    if (c->cprev)
        c->cprev->cnext = c->cnext;
    else
        cc->conns = c->cnext;
    if (c->cnext)
        c->cnext->cprev = c->cprev;
    c->cprev = c->cnext = NULL;
    t->open--;
    if (--cc->n == 0)
        free(strmap_del(t->per_client, c->client));
    publish(t);
}

static void uncount(struct guard_conn *c)
{
    struct http_guard_clients *t = c->g->clients;
    pthread_mutex_lock(&t->lock);
    uncount_locked(t, c);
    pthread_mutex_unlock(&t->lock);
}

static void conn_release(struct guard_conn *c)
{
    uncount(c);
    c->watched = true;
    set_deadline(c, 0); /* off g->swept */
    strmap_del(c->g->conns, c->key);
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
    bufferevent_decref(c->bev);
    http_spool_free(c->spool);
    if (c->body_fd >= 0)
        close(c->body_fd);
    free(c);
}

/* evhttp frees a connection's bufferevent by clearing its callbacks and
 * dropping its reference; ours keeps it allocated until we see that. */
static bool released(struct guard_conn *c)
{
    bufferevent_data_cb rd, wr;
    bufferevent_event_cb ev;
    bufferevent_getcb(c->bev, &rd, &wr, &ev, NULL);
    return rd == NULL && wr == NULL && ev == NULL;
}

struct sweep_ctx {
    uint64_t now;
    struct guard_conn *dead[64];
    int ndead;
};

static void sweep_one(struct guard_conn *c, struct sweep_ctx *s)
{
    if (c->pending)
        return; /* admit() runs first: it may still look at the socket */
    if (released(c)) {
        if (s->ndead < 64)
            s->dead[s->ndead++] = c;
        return;
    }
    if (c->deadline_ms == 0 || s->now < c->deadline_ms)
        return;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    log_limited(LOG_WARN, "http",
                "msg=\"client too slow: request %s not complete within its deadline; "
                "connection closed\" timeout_ms=%llu",
                c->state == CONN_HEAD ? "head" : "body",
                (unsigned long long)(c->state == CONN_HEAD ? c->g->opt.head_timeout_ms
                                                           : c->g->opt.body_timeout_ms));
    set_deadline(c, 0); /* may take c off g->swept */
    /* evhttp sees the end of the stream and frees the connection */
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

static void sweep_each(const char *key, void *value, void *arg)
{
    (void)key;
    sweep_one(value, arg);
}

static void sweep(struct http_guard *g)
{
    struct sweep_ctx s;
    bool full = ++g->sweeps % GUARD_FULL_EVERY == 0;
    do { /* collect, then release: the walks must not free what they walk */
        s.now = mono_ms();
        s.ndead = 0;
        if (full) {
            strmap_each(g->conns, sweep_each, &s);
        } else {
            for (struct guard_conn *c = g->swept, *next; c != NULL && s.ndead < 64; c = next) {
                next = c->snext;
                sweep_one(c, &s);
            }
        }
        for (int i = 0; i < s.ndead; i++)
            conn_release(s.dead[i]);
    } while (s.ndead == 64);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sweep(arg);
}

/* ---- per-client connection cap ------------------------------------------- */

/* The peer's address as text, IPv4-mapped IPv6 as plain IPv4 (one client,
 * one count, whichever way it came in). 0, or -1 if not an IP socket. */
static int peer_address(evutil_socket_t fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)len)
                   ? 0
                   : -1;
    if (ss.ss_family != AF_INET6)
        return -1;
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a))
        return inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len) ? 0 : -1;
    return inet_ntop(AF_INET6, a, out, (socklen_t)len) ? 0 : -1;
}

/* Over the cap: the socket is shut at once (the client sees it closed);
 * whatever it had sent is discarded unread (on_input), and evhttp, reading
 * the end of the stream, frees the connection as for any client gone. */
static void refuse(struct guard_conn *c, evutil_socket_t fd)
{
    struct http_guard *g = c->g;
    c->refused = true;
    set_deadline(c, 0);
    log_limited(LOG_WARN, "http",
                "msg=\"too many connections from one client; new ones closed\" client=%s "
                "limit=%u",
                c->client, g->opt.max_conns_per_client);
    shutdown(fd, SHUT_RDWR);
}

/* The client closed o before sending a byte of a request, and evhttp has
 * not read that end of the stream yet (it will on the next loop turn): the
 * connection is no longer open from the client's side. Connections closed
 * in a burst are accepted and admitted on one turn, before evhttp reads any
 * of them; counted, they would fill the cap and refuse the client's next,
 * real ones. A connection that carried a request is never judged so: its
 * client may have half-closed and still wait for the answer. */
static bool closed_unused(struct guard_conn *o)
{
    char b;
    return !__atomic_load_n(&o->got_input, __ATOMIC_RELAXED) && o->fd >= 0 &&
           recv(o->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Count one new connection under its client's address, or refuse it. */
static void admit_one(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (released(c) || fd < 0 || peer_address(fd, c->client, sizeof(c->client)) != 0)
        return; /* evhttp gave up on it already, or not an IP peer: nothing to count */
    c->fd = fd;
    struct http_guard_clients *t = g->clients;
    pthread_mutex_lock(&t->lock);
    struct client_count *cc = strmap_get(t->per_client, c->client);
    unsigned cap = g->opt.max_conns_per_client;
    if (cap != 0 && cc != NULL && cc->n >= cap) {
        /* The sweep notices closed connections only every GUARD_SWEEP_MS: a
         * client that opens and closes connections quickly (one request
         * each) would otherwise hit the cap with few of them open. Reap
         * this client's closed ones now (at most cap of them to look at),
         * on whichever worker they are: this guard's that evhttp let go
         * of, and any closed before it sent a byte (their sockets stay open
         * while counted: conn_release uncounts before it lets go). The
         * reaped ones are released by their own guard later. */
        for (struct guard_conn *o = cc->conns, *next; o != NULL; o = next) {
            next = o->cnext;
            if ((o->g == g && released(o)) || closed_unused(o))
                uncount_locked(t, o); /* may free cc with its last connection */
        }
        cc = strmap_get(t->per_client, c->client);
    }
    if (cap != 0 && cc != NULL && cc->n >= cap) {
        t->refused++;
        publish(t);
        pthread_mutex_unlock(&t->lock);
        refuse(c, fd);
        return;
    }
    if (cc == NULL) {
        cc = calloc(1, sizeof(*cc));
        if (cc == NULL || strmap_put(t->per_client, c->client, cc) != 0) {
            pthread_mutex_unlock(&t->lock);
            free(cc); /* out of memory: serve it uncounted rather than refuse */
            return;
        }
    }
    cc->n++;
    c->counted = true;
    c->cnext = cc->conns;
    if (cc->conns)
        cc->conns->cprev = c;
    cc->conns = c;
    t->open++;
    publish(t);
    pthread_mutex_unlock(&t->lock);
}

/* Made active by every accept: runs on the same loop turn, after evhttp has
 * set the socket and before the loop polls it, so that a refused connection
 * is never read from. */
static void on_admit(evutil_socket_t fd, short what, void *arg)
{
    struct http_guard *g = arg;
    (void)fd;
    (void)what;
    while (g->pending != NULL) {
        struct guard_conn *c = g->pending;
        g->pending = c->next_pending;
        if (g->pending == NULL)
            g->pending_tail = NULL;
        c->next_pending = NULL;
        c->pending = false;
        admit_one(c);
    }
}

/* The server side of a TLS connection, its SSL from the context of now
 * (frees the SSL on failure). */
static struct bufferevent *new_tls_bev(struct event_base *base, http_guard_tls_ctx_fn tls_ctx)
{
    SSL_CTX *ctx = tls_ctx();
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (ssl == NULL)
        return NULL;
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    /* a client that closes without close_notify has still ended its stream */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    struct guard_front *f = arg;
    struct http_guard *g = f->g;
    struct guard_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->g = g;
    c->body_fd = -1;
    c->fd = -1;
    resweep(c); /* not watched yet */
    /* CLOSE_ON_FREE: the socket is closed when the bufferevent is finalized
     * (evhttp then leaves it alone), that is once we too let go of it. Were
     * evhttp to close it while our reference keeps the bufferevent's events
     * registered, a new connection reusing the descriptor number would never
     * be polled. */
    c->bev = f->tls_ctx ? new_tls_bev(base, f->tls_ctx)
                        : bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        if (f->tls_ctx)
            log_limited(LOG_WARN, "http", "msg=\"cannot set up a TLS connection\" error=\"%s\"",
                        "out of memory or no TLS context");
        free(c);
        return NULL;
    }
    if (f->tls_ctx) /* the handshake and the first head, within the head timeout */
        arm(c, CONN_HEAD, g->opt.head_timeout_ms);
    c->watch = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    conn_key(c->bev, c->key);
    if (c->watch == NULL || strmap_put(g->conns, c->key, c) != 0) {
        bufferevent_free(c->bev);
        free(c);
        return NULL;
    }
    bufferevent_incref(c->bev);
    c->pending = true;
    if (g->pending_tail)
        g->pending_tail->next_pending = c;
    else
        g->pending = c;
    g->pending_tail = c;
    event_active(g->admit, EV_TIMEOUT, 1);
    return c->bev;
}

/* evhttp is freeing the connection (its bufferevent next): let go now. */
static void on_closed(struct evhttp_connection *evcon, void *arg)
{
    struct guard_conn *c = arg;
    if (c->user_close)
        c->user_close(evcon, c->user_close_arg);
    conn_release(c);
}

static struct guard_conn *conn_of(struct http_guard *g, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    char key[24];
    if (g == NULL || bev == NULL)
        return NULL;
    conn_key(bev, key);
    return strmap_get(g->conns, key);
}

int http_guard_on_close(struct http_guard *g, struct evhttp_connection *evcon,
                        void (*cb)(struct evhttp_connection *, void *), void *arg)
{
    struct guard_conn *c = conn_of(g, evcon);
    if (c == NULL || !c->watched)
        return REG_ENOTFOUND;
    c->user_close = cb;
    c->user_close_arg = arg;
    return 0;
}

void http_guard_request_read(struct http_guard *g, struct evhttp_request *req,
                             struct http_body_file *body)
{
    struct evhttp_connection *evcon = g ? evhttp_request_get_connection(req) : NULL;
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    char key[24];
    *body = (struct http_body_file){.fd = -1};
    if (bev == NULL)
        return;
    conn_key(bev, key);
    struct guard_conn *c = strmap_get(g->conns, key);
    if (c == NULL)
        return;
    if (!c->watched) {
        evhttp_connection_set_closecb(evcon, on_closed, c);
        c->watched = true;
    }
    arm(c, CONN_IDLE, 0);
    /* the file belongs to this request: evhttp handles a connection's
     * requests in order, and the rewritten head was the next in line */
    *body = (struct http_body_file){c->body_fd, c->body_len, c->body_err};
    c->body_fd = -1;
    /* Bytes already buffered behind this request (pipelined, read with
     * it) were counted as its body: they are the next request, from its
     * first byte (evhttp took this one's whole). Their head is looked at
     * now, as if they had just arrived (a smuggled head hid there). */
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t queued = evbuffer_get_length(in);
    if (queued > 0 && !c->refused && c->spool == NULL)
        scan_input(c, in, queued);
}

/* ---- accept back-off ---------------------------------------------------- */

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct http_guard *g = arg;
    (void)fd;
    (void)what;
    for (int i = 0; i < g->n_fronts; i++)
        if (g->fronts[i].listener)
            evconnlistener_enable(g->fronts[i].listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    (void)arg;
    struct http_guard *g = NULL;
    pthread_mutex_lock(&listeners_lock);
    for (int i = 0; i < GUARD_LISTENERS; i++)
        if (listeners[i].l == l)
            g = listeners[i].g;
    pthread_mutex_unlock(&listeners_lock);
    if (g == NULL)
        return;
    /* Out of descriptors (or kernel memory): accepting again at once only
     * spins. Pause, serve the connections we have, try again shortly. */
    evconnlistener_disable(l);
    struct timeval tv = {(time_t)(g->opt.accept_pause_ms / 1000),
                         (suseconds_t)(g->opt.accept_pause_ms % 1000) * 1000};
    event_add(g->resume, &tv);
    log_limited(LOG_WARN, "http",
                "msg=\"accept failed; pausing new connections\" error=\"%s\" pause_ms=%llu",
                evutil_socket_error_to_string(err), (unsigned long long)g->opt.accept_pause_ms);
}

/* ---- lifecycle ------------------------------------------------------------ */

int http_guard_new(const struct http_guard_options *opt, struct http_guard **out)
{
    struct http_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return REG_ENOMEM;
    g->opt = *opt;
    if (g->opt.accept_pause_ms == 0)
        g->opt.accept_pause_ms = 100;
    g->conns = strmap_new();
    g->resume = evtimer_new(opt->base, on_resume, g);
    g->sweep = event_new(opt->base, -1, EV_PERSIST, on_sweep, g);
    g->admit = event_new(opt->base, -1, 0, on_admit, g);
    g->clients = opt->clients;
    if (g->clients == NULL && http_guard_clients_new(&g->own_clients) == 0)
        g->clients = g->own_clients;
    struct timeval tv = {0, GUARD_SWEEP_MS * 1000};
    if (g->conns == NULL || g->resume == NULL || g->sweep == NULL || g->admit == NULL ||
        g->clients == NULL || event_add(g->sweep, &tv) != 0) {
        http_guard_free(g);
        return REG_ENOMEM;
    }
    *out = g;
    return 0;
}

int http_guard_attach(struct http_guard *g, struct evhttp *http, struct evconnlistener *l,
                      http_guard_tls_ctx_fn tls_ctx)
{
    if (g->n_fronts == GUARD_FRONTS)
        return REG_ENOMEM;
    struct guard_front *f = &g->fronts[g->n_fronts++];
    *f = (struct guard_front){.g = g, .listener = l, .tls_ctx = tls_ctx};
    evhttp_set_bevcb(http, new_bev, f);
    if (l == NULL)
        return 0;
    pthread_mutex_lock(&listeners_lock);
    for (int i = 0; i < GUARD_LISTENERS; i++) {
        if (listeners[i].l == NULL) {
            listeners[i].l = l;
            listeners[i].g = g;
            evconnlistener_set_error_cb(l, on_accept_error);
            break;
        }
    }
    pthread_mutex_unlock(&listeners_lock);
    return 0;
}

static void free_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

static void collect(const char *key, void *value, void *arg)
{
    struct guard_conn ***at = arg;
    (void)key;
    *(*at)++ = value;
}

void http_guard_free(struct http_guard *g)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&listeners_lock);
    for (int i = 0; i < GUARD_LISTENERS; i++)
        if (listeners[i].g == g)
            listeners[i].l = NULL, listeners[i].g = NULL;
    pthread_mutex_unlock(&listeners_lock);
    if (g->resume)
        event_free(g->resume);
    if (g->sweep)
        event_free(g->sweep);
    if (g->admit)
        event_free(g->admit);
    g->pending = g->pending_tail = NULL;
    if (g->conns) { /* evhttp_free has let go of every connection */
        size_t n = strmap_count(g->conns);
        struct guard_conn **all = calloc(n + 1, sizeof(*all)), **at = all;
        if (all) {
            strmap_each(g->conns, collect, &at);
            for (size_t i = 0; i < n; i++)
                conn_release(all[i]);
            free(all);
        }
        strmap_free(g->conns);
    }
    http_guard_clients_free(g->own_clients);
    free(g);
}

int http_guard_clients_new(struct http_guard_clients **out)
{
    struct http_guard_clients *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->per_client = strmap_new()) == NULL) {
        free(t);
        return REG_ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    *out = t;
    return 0;
}

void http_guard_clients_free(struct http_guard_clients *t)
{
    if (t == NULL)
        return;
    strmap_each(t->per_client, free_value, NULL); /* empty unless out of memory */
    strmap_free(t->per_client);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
