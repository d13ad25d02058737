/*
 * raft_transport.c — the raft port and the connections to the other servers'
 * raft ports (see raft_transport.h).
 *
 * Owns: the listener, every connection until libraft is given its stream
 * (incoming: authentication and libraft's handshake; outgoing: connect,
 * authentication, our handshake), and, with TLS, the proxy between each TLS
 * session and the socketpair end libraft holds.
 *
 * Invariants: libraft is handed a stream only after the peer authenticated
 * and sent a well-formed handshake from an allowed id; bytes are read
 * exactly (never past the handshake) until then, or through the TLS
 * session. A connection (struct conn) lives until the close callbacks of
 * all its handles ran; the transport's close callback fires once no
 * connection and no listener is left, and nothing is called after it.
 * The proxy never reads one side faster than the other drains (256 kB
 * queued stops the reader) and, when one side ends, finishes writing what
 * it queued for the other before it closes.
 *
 * Wire format of libraft 0.15's handshake (src/uv_tcp_connect.c): three
 * little-endian uint64 — protocol (1), server id, address length (the
 * address plus its NUL, padded to 8) — then the address.
 *
 * The cluster key exchange (no TLS): the client sends "RGDRAFT1" and a
 * 32-byte nonce; the server answers its own nonce and
 * HMAC(key, "server" | client nonce | server nonce); the client checks it
 * and sends HMAC(key, "client" | client nonce | server nonce), then the
 * handshake. The key never crosses the wire; each side proves it knows it.
 */
#include "raft_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "log.h"
#include "registry/error.h"
#include "tls.h"

#define HANDSHAKE_PROTOCOL 1 /* libraft 0.15's UV__TCP_HANDSHAKE_PROTOCOL */
#define PREAMBLE_LEN 24
#define MAX_ADDRESS 256 /* declared address length, NUL and padding included */
#define DEADLINE_MS 5000
#define NONCE_LEN 32
#define MAC_LEN 32
#define MAGIC "RGDRAFT1"
#define MAGIC_LEN 8
#define CHUNK 16384
#define HIGH_WATER (256 * 1024) /* queued bytes on one side: stop reading the other */
#define LOG_EVERY_MS 1000
#define MAX_PENDING 64 /* incoming connections still authenticating: more are refused */
#define MAX_PENDING_PER_ADDRESS 8 /* of them from one address: one host holding every slot
                                     kept the real servers out */

enum why { WHY_TLS, WHY_KEY, WHY_HANDSHAKE, WHY_MEMBER, WHY_DEADLINE, WHY_BUSY, WHY_N };
static const char *const why_name[WHY_N] = {"tls",          "cluster_key", "handshake",
                                            "not_a_member", "deadline",    "too_many"};

enum phase {
    PH_CONNECT,   /* out: TCP connect in flight */
    PH_TLS,       /* TLS handshake */
    PH_HELLO,     /* in: the client's magic and nonce */
    PH_CHALLENGE, /* out: the server's nonce and MAC */
    PH_RESPONSE,  /* in: the client's MAC */
    PH_PREAMBLE,  /* in: libraft's protocol, id and address length */
    PH_ADDRESS,   /* in: libraft's address */
    PH_SENDING,   /* out: the last handshake write in flight */
    PH_PROXY,     /* TLS: bytes between the session and the socketpair */
    PH_DRAIN,     /* TLS: one side ended; what is queued for the other is flushed */
    PH_DEAD,      /* handles closing */
};

struct tp;

struct conn {
    struct tp *tp;
    struct conn *prev, *next;
    bool outgoing;
    bool pending; /* counted in tp->n_pending */
    enum phase phase;
    int refs;      /* handles whose close callback has not run */
    uv_tcp_t *tcp; /* raft_malloc'd (libraft frees what it is given); NULL once given */
    uv_timer_t timer;
    uv_pipe_t pipe; /* TLS: our end of the socketpair */
    bool pipe_open, tcp_paused, pipe_paused;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
    SSL *ssl;
    struct raft_uv_connect *req; /* outgoing, until its callback ran */
    int status;                  /* req's callback gets it when closed */
    char peer[64];               /* for logs */
    char host[INET6_ADDRSTRLEN]; /* the peer's address, for MAX_PENDING_PER_ADDRESS */
    uint64_t id;
    unsigned char nonce_in[NONCE_LEN], nonce_out[NONCE_LEN];
    size_t want, have; /* the exact read in progress, into in[] */
    unsigned char in[MAX_ADDRESS];
    unsigned char *rbuf; /* TLS: CHUNK bytes read from TCP */
    unsigned char *pbuf; /* proxy: CHUNK read from the pipe, CHUNK decrypted */
};

struct tp {
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    raft_id id;
    char address[MAX_ADDRESS - 8];
    unsigned char *key;
    size_t key_len;
    int *bound_fd; /* transport_options.bound_fd */
    bool tls;
    bool (*allow)(void *arg, uint64_t id);
    void *allow_arg;
    uv_tcp_t listener;
    bool listener_live; /* initialized, close callback not run */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    bool closing;
    struct conn *conns;
    unsigned n_pending;
    uint64_t next_log_ms[WHY_N];
    unsigned long suppressed[WHY_N];
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    char data[];
};

static void tls_advance(struct conn *c);
static void pump_to_pipe(struct conn *c);
static void resume_tcp(struct conn *c);
static void resume_pipe(struct conn *c);
static void drain_into(struct conn *c, uv_stream_t *s);

/* ---- small helpers ------------------------------------------------------ */

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* "a.b.c.d:port", printable, port 1..65535. */
static bool parse_addr(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[16];
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host))
        return false;
    size_t plen = strlen(colon + 1);
    if (plen == 0 || plen > 5 || strspn(colon + 1, "0123456789") != plen)
        return false;
    long port = strtol(colon + 1, NULL, 10);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return port >= 1 && port <= 65535 && inet_pton(AF_INET, host, &sa->sin_addr) == 1;
}

/* HMAC(key, label | client nonce | server nonce). */
static bool mac(const struct tp *tp, const char *label, const unsigned char *cn,
                const unsigned char *sn, unsigned char out[MAC_LEN])
{
    unsigned char msg[16 + 2 * NONCE_LEN];
    size_t l = strlen(label);
    memcpy(msg, label, l);
    memcpy(msg + l, cn, NONCE_LEN);
    memcpy(msg + l + NONCE_LEN, sn, NONCE_LEN);
    unsigned int n = 0;
    return HMAC(EVP_sha256(), tp->key, (int)tp->key_len, msg, l + 2 * NONCE_LEN, out, &n) != NULL &&
           n == MAC_LEN;
}

/* libraft's handshake for this server; out holds PREAMBLE_LEN + MAX_ADDRESS. */
static size_t encode_handshake(const struct tp *tp, unsigned char *out)
{
    size_t len = strlen(tp->address);
    size_t padded = (len + 1 + 7) & ~(size_t)7;
    put64(out, HANDSHAKE_PROTOCOL);
    put64(out + 8, tp->id);
    put64(out + 16, padded);
    memset(out + PREAMBLE_LEN, 0, padded);
    memcpy(out + PREAMBLE_LEN, tp->address, len);
    return PREAMBLE_LEN + padded;
}

/* ---- connection lifetime ------------------------------------------------ */

static void maybe_closed(struct tp *tp)
{
    if (!tp->closing || tp->listener_live || tp->conns != NULL || tp->close_cb == NULL)
        return;
    raft_uv_transport_close_cb cb = tp->close_cb;
    tp->close_cb = NULL;
    cb(tp->t);
}

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    struct tp *tp = c->tp;
    if (c->prev)
        c->prev->next = c->next;
    else
        tp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    SSL_free(c->ssl);
    free(c->rbuf);
    free(c->pbuf);
    struct raft_uv_connect *req = c->req;
    int status = c->status ? c->status : RAFT_NOCONNECTION;
    free(c);
    if (req != NULL)
        req->cb(req, NULL, status);
    maybe_closed(tp);
}

static void handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void tcp_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    raft_free(h);
    conn_unref(c);
}

static void raft_handle_closed(uv_handle_t *h)
{
    raft_free(h);
}

static void unpend(struct conn *c)
{
    if (c->pending) {
        c->pending = false;
        c->tp->n_pending--;
    }
}

static void conn_close(struct conn *c, int status)
{
    if (c->phase == PH_DEAD)
        return;
    log_debug("raft_transport", "msg=\"closing\" direction=%s peer=%s phase=%d status=%d",
              c->outgoing ? "out" : "in", c->peer, (int)c->phase, status);
    c->phase = PH_DEAD;
    c->status = status;
    unpend(c);
    if (c->tcp != NULL)
        uv_close((uv_handle_t *)c->tcp, tcp_closed);
    if (c->pipe_open)
        uv_close((uv_handle_t *)&c->pipe, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

/* Drop with a log line, at most one a second per reason. */
static void drop(struct conn *c, enum why why, const char *detail)
{
    struct tp *tp = c->tp;
    uint64_t now = uv_now(tp->loop);
    if (now >= tp->next_log_ms[why]) {
        log_warn("raft_transport",
                 "msg=\"dropped a raft connection\" direction=%s peer=%s reason=%s "
                 "detail=\"%s\" suppressed=%lu",
                 c->outgoing ? "out" : "in", c->peer, why_name[why], detail, tp->suppressed[why]);
        tp->next_log_ms[why] = now + LOG_EVERY_MS;
        tp->suppressed[why] = 0;
    } else {
        tp->suppressed[why]++;
    }
    conn_close(c, RAFT_NOCONNECTION);
}

static void deadline_cb(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->outgoing || c->phase == PH_DRAIN) /* libraft retries, quietly */
        conn_close(c, RAFT_NOCONNECTION);
    else
        drop(c, WHY_DEADLINE, "no complete handshake in time");
}

static struct conn *conn_new(struct tp *tp, bool outgoing)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->tcp = raft_malloc(sizeof(*c->tcp));
    if (c->tcp == NULL || uv_timer_init(tp->loop, &c->timer) != 0) {
        raft_free(c->tcp);
        free(c);
        return NULL;
    }
    c->tp = tp;
    c->outgoing = outgoing;
    c->timer.data = c;
    c->refs = 1;
    c->next = tp->conns;
    if (c->next)
        c->next->prev = c;
    tp->conns = c;
    int rv = uv_tcp_init(tp->loop, c->tcp);
    if (rv == 0) {
        c->tcp->data = c;
        c->refs++;
        /* Raft's messages go out at once. With Nagle's algorithm a small
         * message (an append's result, a short append) waits for the ACK of
         * the one before, which the peer delays up to 40 ms: under a steady
         * write load one write in a hundred took 40-45 ms to commit. libuv
         * sets it on the socket once connected or accepted (before that
         * it only notes it, and cannot fail). */
        (void)uv_tcp_nodelay(c->tcp, 1);
        rv = uv_timer_start(&c->timer, deadline_cb, DEADLINE_MS, 0);
    } else {
        raft_free(c->tcp);
        c->tcp = NULL;
    }
    if (rv != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return NULL;
    }
    return c;
}

/* ---- writes and flow control -------------------------------------------- */

static bool queue_full(uv_stream_t *s)
{
    return uv_stream_get_write_queue_size(s) > HIGH_WATER;
}

/* A write of ours finished: its connection, or NULL when it is gone or the
 * write failed (then it is closed). */
static struct conn *write_done(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    free(w);
    if (c->phase == PH_DEAD)
        return NULL;
    if (status < 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return NULL;
    }
    return c;
}

static void written(uv_write_t *req, int status)
{
    uv_stream_t *s = req->handle;
    struct conn *c = write_done(req, status);
    if (c == NULL)
        return;
    /* A queue drained below half: read the side that feeds it again. */
    if (uv_stream_get_write_queue_size(s) > HIGH_WATER / 2)
        return;
    if (s == (uv_stream_t *)&c->pipe && c->tcp_paused)
        resume_tcp(c);
    else if (s == (uv_stream_t *)c->tcp && c->pipe_paused)
        resume_pipe(c);
}

static int send_copy(struct conn *c, uv_stream_t *s, const void *p, size_t n, uv_write_cb cb)
{
    struct wreq *w = malloc(sizeof(*w) + n);
    if (w == NULL)
        return REG_ENOMEM;
    w->c = c;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, s, &b, 1, cb ? cb : written) != 0) {
        free(w);
        return REG_EIO;
    }
    return 0;
}

static void expect(struct conn *c, enum phase ph, size_t n)
{
    c->phase = ph;
    c->want = n;
    c->have = 0;
}

/* ---- TLS ---------------------------------------------------------------- */

static const char *ossl_why(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "handshake failed";
}

static int start_tls(struct conn *c)
{
    if (c->outgoing) {
        c->ssl = tls_client_ssl();
    } else {
        SSL_CTX *ctx = tls_peer_server_ctx();
        c->ssl = ctx ? SSL_new(ctx) : NULL;
        SSL_CTX_free(ctx); /* the SSL holds its own reference */
    }
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    c->rbuf = malloc(CHUNK);
    if (c->ssl == NULL || r == NULL || w == NULL || c->rbuf == NULL) {
        BIO_free(r);
        BIO_free(w);
        return REG_ENOMEM;
    }
    BIO_set_mem_eof_return(r, -1); /* empty means "wait", not EOF */
    SSL_set_bio(c->ssl, r, w);
    if (c->outgoing)
        SSL_set_connect_state(c->ssl);
    else
        SSL_set_accept_state(c->ssl);
    c->phase = PH_TLS;
    return 0;
}

/* Send what the session wrote into its memory BIO. */
static int flush_tls(struct conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    size_t n;
    while (c->phase != PH_DEAD && (n = BIO_ctrl_pending(wbio)) > 0) {
        struct wreq *w = malloc(sizeof(*w) + n);
        if (w == NULL)
            return REG_ENOMEM;
        w->c = c;
        int r = BIO_read(wbio, w->data, (int)n);
        uv_buf_t b = uv_buf_init(w->data, r > 0 ? (unsigned)r : 0);
        if (r <= 0 || uv_write(&w->req, (uv_stream_t *)c->tcp, &b, 1, written) != 0) {
            free(w);
            return REG_EIO;
        }
    }
    return 0;
}

static bool tls_write_all(struct conn *c, const void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, (const char *)p + off, (int)(n - off));
        if (r <= 0)
            return false;
        off += (size_t)r;
    }
    return flush_tls(c) == 0;
}

/* Drive the handshake; true once it is done and the peer is one of our
 * servers (false: wait for more, or the connection was dropped). */
static bool tls_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    if (flush_tls(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return false;
    }
    if (e == SSL_ERROR_WANT_READ)
        return false;
    if (e != SSL_ERROR_NONE) {
        drop(c, WHY_TLS, ossl_why());
        return false;
    }
    if (!tls_peer_is_server(c->ssl)) {
        drop(c, WHY_TLS, "the certificate does not name a server of this cluster");
        return false;
    }
    return true;
}

static void drained(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close(req->data, RAFT_NOCONNECTION);
}

/* One side of the proxy ended (EOF, close_notify): deliver what is queued
 * for the other (a message libraft wrote just before closing its end, or
 * the peer sent just before its FIN), half-close it, then close, within
 * the deadline. Never a write cut short by our own close. */
static void drain_into(struct conn *c, uv_stream_t *s)
{
    if (c->phase != PH_PROXY) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->phase = PH_DRAIN;
    uv_read_stop((uv_stream_t *)c->tcp);
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, s, drained) != 0 ||
        uv_timer_start(&c->timer, deadline_cb, DEADLINE_MS, 0) != 0)
        conn_close(c, RAFT_NOCONNECTION);
}

/* SSL_read found nothing (wait) or the session ended. */
static void tls_read_failed(struct conn *c, int r)
{
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ) {
        if (flush_tls(c) != 0) /* post-handshake messages (tickets, key updates) */
            conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN)
        drain_into(c, (uv_stream_t *)&c->pipe); /* the peer's close_notify */
    else
        conn_close(c, RAFT_NOCONNECTION);
}

/* ---- the socketpair proxy (TLS) ----------------------------------------- */

static void pause_tcp(struct conn *c)
{
    log_debug("raft_transport", "msg=\"pause tcp\" peer=%s paused=%d", c->peer, c->tcp_paused);
    if (!c->tcp_paused && uv_read_stop((uv_stream_t *)c->tcp) == 0)
        c->tcp_paused = true;
}

static void pause_pipe(struct conn *c)
{
    log_debug("raft_transport", "msg=\"pause pipe\" peer=%s paused=%d", c->peer, c->pipe_paused);
    if (!c->pipe_paused && uv_read_stop((uv_stream_t *)&c->pipe) == 0)
        c->pipe_paused = true;
}

/* Decrypted bytes to libraft's end, until the session is drained or the
 * pipe's queue is full (then the TCP side waits). */
static void pump_to_pipe(struct conn *c)
{
    while (c->phase == PH_PROXY) {
        if (queue_full((uv_stream_t *)&c->pipe)) {
            pause_tcp(c);
            return;
        }
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->pbuf + CHUNK, CHUNK);
        if (r <= 0) {
            tls_read_failed(c, r);
            return;
        }
        if (send_copy(c, (uv_stream_t *)&c->pipe, c->pbuf + CHUNK, (size_t)r, NULL) != 0)
            conn_close(c, RAFT_NOCONNECTION);
    }
}

static void pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->pbuf, CHUNK);
}

/* libraft wrote: encrypt towards the peer. */
static void pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0 || c->phase != PH_PROXY)
        return;
    if (nread == UV_EOF) { /* libraft closed its end: close_notify after its bytes */
        ERR_clear_error();
        if (SSL_shutdown(c->ssl) < 0 || flush_tls(c) != 0)
            conn_close(c, RAFT_NOCONNECTION);
        else
            drain_into(c, (uv_stream_t *)c->tcp);
        return;
    }
    if (nread < 0 || !tls_write_all(c, buf->base, (size_t)nread)) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (queue_full((uv_stream_t *)c->tcp))
        pause_pipe(c);
}

static void resume_pipe(struct conn *c)
{
    log_debug("raft_transport", "msg=\"resume pipe\" peer=%s", c->peer);
    c->pipe_paused = false;
    if (c->phase != PH_PROXY)
        return;
    if (uv_read_start((uv_stream_t *)&c->pipe, pipe_alloc, pipe_read) != 0)
        conn_close(c, RAFT_NOCONNECTION);
}

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void resume_tcp(struct conn *c)
{
    log_debug("raft_transport", "msg=\"resume tcp\" peer=%s", c->peer);
    c->tcp_paused = false;
    if (c->phase != PH_PROXY)
        return;
    if (uv_read_start((uv_stream_t *)c->tcp, tcp_alloc, tcp_read) != 0)
        conn_close(c, RAFT_NOCONNECTION);
    else
        pump_to_pipe(c);
}

/* A socketpair: libraft's end (raft_malloc'd, libraft closes and frees it)
 * in *theirs, ours read into the session. */
static int open_pair(struct conn *c, uv_stream_t **theirs)
{
    int fds[2];
    if ((c->pbuf = malloc(2 * CHUNK)) == NULL)
        return REG_ENOMEM;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return REG_EIO;
    uv_pipe_t *p = raft_malloc(sizeof(*p));
    if (p == NULL || uv_pipe_init(c->tp->loop, p, 0) != 0) {
        raft_free(p);
        close(fds[0]);
        close(fds[1]);
        return REG_ENOMEM;
    }
    int rv = uv_pipe_init(c->tp->loop, &c->pipe, 0);
    if (rv == 0) {
        c->pipe.data = c;
        c->pipe_open = true;
        c->refs++;
    }
    if (rv != 0 || uv_pipe_open(p, fds[1]) != 0) {
        close(fds[0]);
        close(fds[1]);
        uv_close((uv_handle_t *)p, raft_handle_closed);
        return REG_EIO;
    }
    /* p owns fds[1] now, and c->pipe fds[0] once opened */
    if (uv_pipe_open(&c->pipe, fds[0]) != 0) {
        close(fds[0]);
        uv_close((uv_handle_t *)p, raft_handle_closed);
        return REG_EIO;
    }
    if (uv_read_start((uv_stream_t *)&c->pipe, pipe_alloc, pipe_read) != 0) {
        uv_close((uv_handle_t *)p, raft_handle_closed);
        return REG_EIO;
    }
    *theirs = (uv_stream_t *)p;
    return 0;
}

/* ---- hand-off to libraft ------------------------------------------------ */

/* Detach the authenticated TCP stream from c (nothing read past the
 * handshake: reads were exact). */
static uv_stream_t *take_tcp(struct conn *c)
{
    uv_stream_t *s = (uv_stream_t *)c->tcp;
    if (uv_read_stop(s) != 0)
        log_debug("raft_transport", "msg=\"uv_read_stop failed\"");
    s->data = NULL;
    c->tcp = NULL;
    c->refs--;
    return s;
}

/* Incoming: authenticated, handshake valid, id allowed. */
static void hand_in(struct conn *c)
{
    struct tp *tp = c->tp;
    uint64_t id = c->id;
    const char *addr = (const char *)c->in; /* valid until c's handles closed */
    uv_stream_t *s;
    uv_timer_stop(&c->timer);
    unpend(c);
    log_debug("raft_transport", "msg=\"accepted\" peer=%s id=%llu", c->peer,
              (unsigned long long)id);
    if (c->ssl == NULL) {
        s = take_tcp(c);
        conn_close(c, 0);
    } else if (open_pair(c, &s) == 0) {
        c->phase = PH_PROXY;
    } else {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    tp->accept_cb(tp->t, id, addr, s);
}

/* Outgoing: give libraft the stream. */
static void hand_out(struct conn *c, uv_stream_t *s)
{
    struct raft_uv_connect *req = c->req;
    log_debug("raft_transport", "msg=\"connected\" peer=%s tls=%d", c->peer, c->ssl != NULL);
    c->req = NULL;
    uv_timer_stop(&c->timer);
    req->cb(req, s, 0);
}

static void handshake_sent(uv_write_t *req, int status)
{
    struct conn *c = write_done(req, status);
    if (c == NULL)
        return;
    uv_stream_t *s = take_tcp(c);
    conn_close(c, 0);
    hand_out(c, s);
}

static void send_handshake(struct conn *c, const void *p, size_t n)
{
    if (uv_read_stop((uv_stream_t *)c->tcp) != 0 ||
        send_copy(c, (uv_stream_t *)c->tcp, p, n, handshake_sent) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->phase = PH_SENDING;
}

static void tls_connected(struct conn *c)
{
    unsigned char hs[PREAMBLE_LEN + MAX_ADDRESS];
    size_t n = encode_handshake(c->tp, hs);
    uv_stream_t *s;
    if (!tls_write_all(c, hs, n) || open_pair(c, &s) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->phase = PH_PROXY;
    hand_out(c, s);
}

/* ---- the handshake phases ------------------------------------------------ */

static void got_hello(struct conn *c)
{
    unsigned char out[NONCE_LEN + MAC_LEN];
    if (memcmp(c->in, MAGIC, MAGIC_LEN) != 0) {
        drop(c, WHY_KEY, "no cluster key hello (is the other side configured with one?)");
        return;
    }
    memcpy(c->nonce_in, c->in + MAGIC_LEN, NONCE_LEN);
    if (RAND_bytes(c->nonce_out, NONCE_LEN) != 1 ||
        !mac(c->tp, "server", c->nonce_in, c->nonce_out, out + NONCE_LEN)) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    memcpy(out, c->nonce_out, NONCE_LEN);
    if (send_copy(c, (uv_stream_t *)c->tcp, out, sizeof(out), NULL) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    expect(c, PH_RESPONSE, MAC_LEN);
}

static void got_response(struct conn *c)
{
    unsigned char m[MAC_LEN];
    if (!mac(c->tp, "client", c->nonce_in, c->nonce_out, m)) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (CRYPTO_memcmp(m, c->in, MAC_LEN) != 0) {
        drop(c, WHY_KEY, "wrong cluster key");
        return;
    }
    expect(c, PH_PREAMBLE, PREAMBLE_LEN);
}

static void got_challenge(struct conn *c)
{
    unsigned char m[MAC_LEN];
    unsigned char out[MAC_LEN + PREAMBLE_LEN + MAX_ADDRESS];
    memcpy(c->nonce_in, c->in, NONCE_LEN);
    if (!mac(c->tp, "server", c->nonce_out, c->nonce_in, m) ||
        !mac(c->tp, "client", c->nonce_out, c->nonce_in, out)) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (CRYPTO_memcmp(m, c->in + NONCE_LEN, MAC_LEN) != 0) {
        drop(c, WHY_KEY, "the server does not know the cluster key");
        return;
    }
    send_handshake(c, out, MAC_LEN + encode_handshake(c->tp, out + MAC_LEN));
}

static void got_preamble(struct conn *c)
{
    uint64_t proto = get64(c->in), id = get64(c->in + 8), len = get64(c->in + 16);
    char why[96];
    if (proto != HANDSHAKE_PROTOCOL) {
        snprintf(why, sizeof(why), "protocol %llu", (unsigned long long)proto);
        drop(c, WHY_HANDSHAKE, why);
    } else if (id == 0) {
        drop(c, WHY_HANDSHAKE, "server id 0");
    } else if (len == 0 || len > MAX_ADDRESS) {
        snprintf(why, sizeof(why), "address length %llu", (unsigned long long)len);
        drop(c, WHY_HANDSHAKE, why);
    } else {
        c->id = id;
        expect(c, PH_ADDRESS, (size_t)len);
    }
}

static void got_address(struct conn *c)
{
    struct sockaddr_in sa;
    char why[96];
    struct tp *tp = c->tp;
    if (memchr(c->in, '\0', c->want) == NULL) {
        drop(c, WHY_HANDSHAKE, "address not NUL-terminated");
    } else if (!parse_addr((const char *)c->in, &sa)) {
        drop(c, WHY_HANDSHAKE, "address is not IPv4:port");
    } else if (tp->allow != NULL && !tp->allow(tp->allow_arg, c->id)) {
        snprintf(why, sizeof(why), "server id %llu is not in the configuration",
                 (unsigned long long)c->id);
        drop(c, WHY_MEMBER, why);
    } else if (c->id == tp->id) { /* no server dials itself: an impostor */
        drop(c, WHY_MEMBER, "a peer claims this server's own id");
    } else {
        hand_in(c);
    }
}

static void phase_done(struct conn *c)
{
    switch (c->phase) {
    case PH_HELLO:
        got_hello(c);
        break;
    case PH_CHALLENGE:
        got_challenge(c);
        break;
    case PH_RESPONSE:
        got_response(c);
        break;
    case PH_PREAMBLE:
        got_preamble(c);
        break;
    case PH_ADDRESS:
        got_address(c);
        break;
    default:
        break;
    }
}

/* TLS bytes arrived: handshake, then the exact plaintext phases, then the
 * proxy. */
static void tls_advance(struct conn *c)
{
    if (c->phase == PH_TLS) {
        if (!tls_handshake(c))
            return;
        if (c->outgoing)
            tls_connected(c);
        else
            expect(c, PH_PREAMBLE, PREAMBLE_LEN);
    }
    while (c->phase == PH_PREAMBLE || c->phase == PH_ADDRESS) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->in + c->have, (int)(c->want - c->have));
        if (r <= 0) {
            tls_read_failed(c, r);
            return;
        }
        c->have += (size_t)r;
        if (c->have == c->want)
            phase_done(c);
    }
    if (c->phase == PH_PROXY)
        pump_to_pipe(c);
}

/* ---- TCP reads ------------------------------------------------------------ */

/* Without TLS, exactly the bytes the phase still wants: never past the
 * handshake, so libraft's stream starts where its first message does. */
static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    if (c->ssl != NULL)
        *buf = uv_buf_init((char *)c->rbuf, CHUNK);
    else
        *buf = uv_buf_init((char *)c->in + c->have, (unsigned)(c->want - c->have));
}

static void tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0 || c->phase == PH_DEAD || c->phase == PH_DRAIN)
        return;
    if (nread == UV_EOF && c->phase == PH_PROXY) {
        drain_into(c, (uv_stream_t *)&c->pipe);
        return;
    }
    if (nread < 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->ssl == NULL) {
        c->have += (size_t)nread;
        if (c->have == c->want)
            phase_done(c);
        return;
    }
    if (BIO_write(SSL_get_rbio(c->ssl), buf->base, (int)nread) != (int)nread) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    tls_advance(c);
}

static void name_peer(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "?");
    snprintf(c->host, sizeof(c->host), "?");
    if (uv_tcp_getpeername(c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, c->host, sizeof(c->host)) != NULL)
            snprintf(c->peer, sizeof(c->peer), "%s:%u", c->host, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, c->host, sizeof(c->host)) != NULL)
            snprintf(c->peer, sizeof(c->peer), "[%s]:%u", c->host, ntohs(sin6->sin6_port));
    }
}

/* Connections from c's address still authenticating. */
static unsigned pending_from(const struct conn *c)
{
    unsigned n = 0;
    for (const struct conn *o = c->tp->conns; o != NULL; o = o->next)
        if (o != c && o->pending && strcmp(o->host, c->host) == 0)
            n++;
    return n;
}

/* ---- the transport's methods ---------------------------------------------- */

static void accepted(uv_stream_t *server, int status)
{
    struct tp *tp = server->data;
    if (status < 0 || tp->closing)
        return;
    struct conn *c = conn_new(tp, false);
    if (c == NULL) {
        log_warn("raft_transport", "msg=\"cannot accept a raft connection: out of memory\"");
        return;
    }
    if (uv_accept(server, (uv_stream_t *)c->tcp) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    name_peer(c);
    if (tp->n_pending >= MAX_PENDING) {
        drop(c, WHY_BUSY, "too many connections authenticating");
        return;
    }
    if (pending_from(c) >= MAX_PENDING_PER_ADDRESS) {
        drop(c, WHY_BUSY, "too many connections authenticating from one address");
        return;
    }
    c->pending = true;
    tp->n_pending++;
    int rv = 0;
    if (tp->tls)
        rv = start_tls(c);
    else if (tp->key != NULL)
        expect(c, PH_HELLO, MAGIC_LEN + NONCE_LEN);
    else
        expect(c, PH_PREAMBLE, PREAMBLE_LEN);
    if (rv != 0 || uv_read_start((uv_stream_t *)c->tcp, tcp_alloc, tcp_read) != 0)
        conn_close(c, RAFT_NOCONNECTION);
}

static void connected(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    unsigned char out[PREAMBLE_LEN + MAX_ADDRESS];
    if (c->phase == PH_DEAD)
        return;
    if (status != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->tp->tls) {
        if (start_tls(c) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
        tls_advance(c); /* sends the ClientHello */
    } else if (c->tp->key != NULL) {
        if (RAND_bytes(c->nonce_out, NONCE_LEN) != 1) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
        memcpy(out, MAGIC, MAGIC_LEN);
        memcpy(out + MAGIC_LEN, c->nonce_out, NONCE_LEN);
        if (send_copy(c, (uv_stream_t *)c->tcp, out, MAGIC_LEN + NONCE_LEN, NULL) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
        expect(c, PH_CHALLENGE, NONCE_LEN + MAC_LEN);
    } else {
        send_handshake(c, out, encode_handshake(c->tp, out));
        return;
    }
    if (c->phase != PH_DEAD && uv_read_start((uv_stream_t *)c->tcp, tcp_alloc, tcp_read) != 0)
        conn_close(c, RAFT_NOCONNECTION);
}

static int tp_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct tp *tp = t->impl;
    if (strlen(address) >= sizeof(tp->address)) {
        snprintf(t->errmsg, sizeof(t->errmsg), "raft address too long");
        return RAFT_NAMETOOLONG;
    }
    tp->id = id;
    snprintf(tp->address, sizeof(tp->address), "%s", address);
    int rv = uv_tcp_init(tp->loop, &tp->listener);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof(t->errmsg), "uv_tcp_init: %s", uv_strerror(rv));
        return RAFT_IOERR;
    }
    tp->listener.data = tp;
    tp->listener_live = true;
    return 0;
}

static int tp_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct tp *tp = t->impl;
    struct sockaddr_in sa;
    if (!parse_addr(tp->address, &sa)) {
        snprintf(t->errmsg, sizeof(t->errmsg), "raft address %.64s is not IPv4:port", tp->address);
        return RAFT_INVALID;
    }
    int rv;
    if (tp->bound_fd != NULL && *tp->bound_fd >= 0) { /* held since the port was chosen */
        /* Held without SO_REUSEADDR (cluster.c's try_port), set now, as it
         * listens: the connections it accepts inherit it, and so do their
         * TIME_WAIT remains, which a restart's bind (libuv sets it) must be
         * allowed to share the port with. */
        int one = 1;
        (void)setsockopt(*tp->bound_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        rv = uv_tcp_open(&tp->listener, *tp->bound_fd);
        if (rv == 0)
            *tp->bound_fd = -1; /* the listener's now */
    } else {
        rv = uv_tcp_bind(&tp->listener, (const struct sockaddr *)&sa, 0);
    }
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&tp->listener, 128, accepted);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof(t->errmsg), "listen on %.64s: %s", tp->address, uv_strerror(rv));
        return RAFT_IOERR;
    }
    tp->accept_cb = cb;
    return 0;
}

static int tp_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    struct tp *tp = t->impl;
    struct sockaddr_in sa;
    if (tp->closing)
        return RAFT_CANCELED;
    if (!parse_addr(address, &sa)) {
        snprintf(t->errmsg, sizeof(t->errmsg), "raft address %.64s is not IPv4:port", address);
        return RAFT_NOCONNECTION;
    }
    struct conn *c = conn_new(tp, true);
    if (c == NULL)
        return RAFT_NOMEM;
    c->id = id;
    c->connect.data = c;
    snprintf(c->peer, sizeof(c->peer), "%s", address);
    int rv = uv_tcp_connect(&c->connect, c->tcp, (const struct sockaddr *)&sa, connected);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof(t->errmsg), "uv_tcp_connect: %s", uv_strerror(rv));
        conn_close(c, RAFT_NOCONNECTION); /* req not taken: no callback */
        return RAFT_NOCONNECTION;
    }
    req->cb = cb;
    c->req = req;
    c->phase = PH_CONNECT;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct tp *tp = h->data;
    tp->listener_live = false;
    maybe_closed(tp);
}

/* Stop accepting, close every connection (pending connects get
 * RAFT_CANCELED), then cb once every handle is closed. libraft calls this
 * only after init, so the listener's close makes cb asynchronous. */
static void tp_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct tp *tp = t->impl;
    tp->closing = true;
    tp->close_cb = cb;
    for (struct conn *c = tp->conns; c != NULL; c = c->next)
        conn_close(c, RAFT_CANCELED);
    if (tp->listener_live)
        uv_close((uv_handle_t *)&tp->listener, listener_closed);
    else
        maybe_closed(tp);
}

static void tp_free(struct tp *tp)
{
    if (tp->key != NULL) {
        OPENSSL_cleanse(tp->key, tp->key_len);
        free(tp->key);
    }
    free(tp);
}

static void tp_free_after_close(uv_handle_t *h)
{
    tp_free(h->data);
}

int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct transport_options *o)
{
    struct tp *tp = calloc(1, sizeof(*tp));
    if (tp == NULL)
        return REG_ENOMEM;
    if (o->cluster_key != NULL) {
        tp->key_len = strlen(o->cluster_key);
        tp->key = malloc(tp->key_len + 1);
        if (tp->key == NULL) {
            free(tp);
            return REG_ENOMEM;
        }
        memcpy(tp->key, o->cluster_key, tp->key_len + 1);
    }
    tp->t = t;
    tp->loop = loop;
    tp->tls = tls_enabled();
    tp->allow = o->allow;
    tp->allow_arg = o->allow_arg;
    tp->bound_fd = o->bound_fd;
    memset(t, 0, sizeof(*t));
    t->impl = tp;
    t->init = tp_init;
    t->listen = tp_listen;
    t->connect = tp_connect;
    t->close = tp_close;
    log_info("raft_transport", "msg=\"raft port authentication\" mode=%s",
             tp->tls   ? "mutual_tls"
             : tp->key ? "cluster_key"
                       : "none");
    return 0;
}

void transport_fini(struct raft_uv_transport *t)
{
    struct tp *tp = t->impl;
    if (tp == NULL)
        return;
    t->impl = NULL;
    if (tp->listener_live && !tp->closing) {
        /* init ran but libraft never closed the transport: close the
         * listener on the loop's next run, then free. */
        tp->closing = true;
        uv_close((uv_handle_t *)&tp->listener, tp_free_after_close);
        return;
    }
    tp_free(tp);
}
