/*
 * probe_h2.c — see probe_h2.h. One connection per probe: a bufferevent
 * (plain or OpenSSL) carries an nghttp2 client session. The result is
 * delivered from an event of its own, never from inside an nghttp2 or
 * bufferevent callback, so that the caller may free the probe at once.
 *
 * gRPC framing: a message is 1 byte (compressed: 0), a 4-byte big-endian
 * length, then the protobuf: HealthCheckRequest {1: string service},
 * HealthCheckResponse {1: enum status} with SERVING = 1.
 */
#include "probe_h2.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "check_target.h"
#include "config.h"
#include "probe.h"

#define GRPC_SERVICE_MAX 127 /* its length is one varint byte */

struct probe_h2 {
    struct bufferevent *bev;
    nghttp2_session *sess;
    struct event *timer;   /* the probe's timeout */
    struct event *deliver; /* the result, outside nghttp2's callbacks */
    bool grpc, tls, done, passing;
    char target[300];      /* HOST:PORT as the check names it */
    char authority[300];
    char service[GRPC_SERVICE_MAX + 1];
    uint8_t req[5 + 3 + GRPC_SERVICE_MAX];
    size_t req_len, req_off;
    uint8_t resp[64];
    size_t resp_len;
    int http_status, grpc_status; /* -1: not seen */
    char grpc_message[128];
    char output[400];
    probe_h2_cb cb;
    void *arg;
};

void probe_h2_free(struct probe_h2 *p)
{
    if (p == NULL)
        return;
    if (p->sess)
        nghttp2_session_del(p->sess);
    if (p->bev)
        bufferevent_free(p->bev);
    if (p->timer)
        event_free(p->timer);
    if (p->deliver)
        event_free(p->deliver);
    free(p);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct probe_h2 *p = arg;
    (void)fd;
    (void)what;
    p->cb(p->arg, p->passing, p->output); /* may free p */
}

/* Decide once; the callback follows from the deliver event. */
static void conclude(struct probe_h2 *p, bool passing, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conclude(struct probe_h2 *p, bool passing, const char *fmt, ...)
{
    if (p->done)
        return;
    p->done = true;
    p->passing = passing;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->output, sizeof(p->output), fmt, ap);
    va_end(ap);
    event_del(p->timer);
    event_active(p->deliver, EV_TIMEOUT, 0);
}

/* The gRPC answer, once the stream has ended. */
static void grpc_verdict(struct probe_h2 *p)
{
    if (p->http_status != 200) {
        conclude(p, false, "gRPC %s: HTTP status %d", p->target, p->http_status);
        return;
    }
    if (p->grpc_status > 0) {
        conclude(p, false, "gRPC %s: rpc error: code = %d desc = %s", p->target,
                 p->grpc_status, p->grpc_message);
        return;
    }
    /* [0][len][0x08 status] */
    if (p->resp_len < 5) {
        conclude(p, false, "gRPC %s: no answer", p->target);
        return;
    }
    int status = 0; /* UNKNOWN: an empty message has status 0 */
    if (p->resp_len >= 7 && p->resp[5] == 0x08)
        status = p->resp[6];
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    const char *name = status >= 0 && status <= 3 ? names[status] : "UNKNOWN";
    if (status == 1)
        conclude(p, true, "gRPC check %s: success", p->target);
    else
        conclude(p, false, "gRPC %s serving status: %s", p->target, name);
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    (void)flags;
    if (bufferevent_write(p->bev, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int frame_recv_cb(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    if (!p->grpc && f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
        conclude(p, true, "HTTP2 ping was successful");
    return 0;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    (void)f;
    (void)flags;
    char v[128];
    snprintf(v, sizeof(v), "%.*s", (int)(valuelen < 127 ? valuelen : 127), (const char *)value);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        p->http_status = atoi(v);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        p->grpc_status = atoi(v);
    else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(p->grpc_message, sizeof(p->grpc_message), "%s", v);
    return 0;
}

static int data_cb(nghttp2_session *s, uint8_t flags, int32_t stream, const uint8_t *data,
                   size_t len, void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    (void)flags;
    (void)stream;
    size_t room = sizeof(p->resp) - p->resp_len;
    if (len > room)
        len = room;
    memcpy(p->resp + p->resp_len, data, len);
    p->resp_len += len;
    return 0;
}

static int stream_close_cb(nghttp2_session *s, int32_t stream, uint32_t error, void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    (void)stream;
    if (error != NGHTTP2_NO_ERROR)
        conclude(p, false, "gRPC %s: stream reset: %s", p->target, nghttp2_http2_strerror(error));
    else
        grpc_verdict(p);
    return 0;
}

static ssize_t req_read_cb(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct probe_h2 *p = user;
    (void)s;
    (void)stream;
    (void)src;
    size_t n = p->req_len - p->req_off;
    if (n > len)
        n = len;
    memcpy(buf, p->req + p->req_off, n);
    p->req_off += n;
    if (p->req_off == p->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- transport ------------------------------------------------------------ */

static void pump(struct probe_h2 *p)
{
    if (!p->done && nghttp2_session_send(p->sess) != 0)
        conclude(p, false, "%s %s: HTTP/2 send failed", p->grpc ? "gRPC" : "H2PING", p->target);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct probe_h2 *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, -1);
    if (n > 0 && !p->done) {
        ssize_t used = nghttp2_session_mem_recv(p->sess, data, n);
        if (used < 0) {
            conclude(p, false, "%s %s: HTTP/2 error: %s", p->grpc ? "gRPC" : "H2PING", p->target,
                     nghttp2_strerror((int)used));
            return;
        }
    }
    evbuffer_drain(in, n);
    pump(p);
}

static int open_session(struct probe_h2 *p)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    int rc = nghttp2_session_client_new(&p->sess, cbs, p);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0 || nghttp2_submit_settings(p->sess, NGHTTP2_FLAG_NONE, NULL, 0) != 0)
        return -1;
    if (!p->grpc)
        return nghttp2_submit_ping(p->sess, NGHTTP2_FLAG_NONE, NULL) == 0 ? 0 : -1;
    char path[] = "/grpc.health.v1.Health/Check";
#define HDR(n, v)                                                                            \
    {                                                                                        \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE        \
    }
    nghttp2_nv hdrs[] = {
        HDR(":method", "POST"),
        HDR(":scheme", p->tls ? "https" : "http"),
        HDR(":path", path),
        HDR(":authority", p->authority),
        HDR("content-type", "application/grpc"),
        HDR("te", "trailers"),
        HDR("user-agent", "registryd"),
    };
#undef HDR
    nghttp2_data_provider dp = {.read_callback = req_read_cb};
    return nghttp2_submit_request(p->sess, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &dp, p) > 0
               ? 0
               : -1;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct probe_h2 *p = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (p->tls) {
            const unsigned char *alpn = NULL;
            unsigned alpn_len = 0;
            SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(p->bev), &alpn, &alpn_len);
            if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
                conclude(p, false, "%s %s: the server did not agree to HTTP/2 (ALPN)",
                         p->grpc ? "gRPC" : "H2PING", p->target);
                return;
            }
        }
        if (open_session(p) != 0) {
            conclude(p, false, "%s %s: cannot start HTTP/2", p->grpc ? "gRPC" : "H2PING",
                     p->target);
            return;
        }
        pump(p);
        return;
    }
    char why[200] = "connection closed";
    int err = EVUTIL_SOCKET_ERROR();
    char tls_why[180] = "";
    if (p->tls)
        probe_tls_why(p->bev, tls_why, sizeof(tls_why));
    if (tls_why[0] != '\0')
        snprintf(why, sizeof(why), "TLS: %s", tls_why);
    else if ((what & BEV_EVENT_ERROR) && err != 0)
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(err));
    if (p->grpc && !p->done && p->resp_len > 0 && p->grpc_status >= 0)
        grpc_verdict(p);
    else
        conclude(p, false, "%s %s: %s", p->grpc ? "gRPC" : "H2PING", p->target, why);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct probe_h2 *p = arg;
    (void)fd;
    (void)what;
    conclude(p, false, "%s %s: timed out", p->grpc ? "gRPC" : "H2PING", p->target);
}

int probe_h2_start(const struct probe_env *env, bool grpc, json_t *def, uint64_t timeout_ms, probe_h2_cb cb, void *arg,
                   struct probe_h2 **out, char *err, size_t errlen)
{
    struct event_base *base = env->base;
    const char *spec = json_string_value(json_object_get(def, grpc ? "GRPC" : "H2PING"));
    char host[256], portstr[8];
    unsigned short port;
    *out = NULL;
    struct probe_h2 *p = calloc(1, sizeof(*p));
    if (p == NULL || spec == NULL) {
        free(p);
        snprintf(err, errlen, spec ? "out of memory" : "no address");
        return -1;
    }
    p->grpc = grpc;
    p->cb = cb;
    p->arg = arg;
    p->http_status = -1;
    p->grpc_status = -1;
    p->tls = grpc ? json_is_true(json_object_get(def, "GRPCUseTLS"))
                  : !json_is_false(json_object_get(def, "H2PingUseTLS"));
    snprintf(p->target, sizeof(p->target), "%s", spec);
    const char *slash = grpc ? strchr(spec, '/') : NULL;
    size_t hplen = slash ? (size_t)(slash - spec) : strlen(spec);
    snprintf(p->authority, sizeof(p->authority), "%.*s", (int)hplen, spec);
    if (slash)
        snprintf(p->service, sizeof(p->service), "%s", slash + 1);
    if (conf_split_hostport(p->authority, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "%s %s: not HOST:PORT", grpc ? "GRPC" : "H2PING", spec);
        probe_h2_free(p);
        return -1;
    }
    /* the request: [0][len][0x0a len service] */
    size_t sl = strlen(p->service), ml = sl ? 2 + sl : 0;
    p->req[0] = 0;
    p->req[1] = (uint8_t)(ml >> 24);
    p->req[2] = (uint8_t)(ml >> 16);
    p->req[3] = (uint8_t)(ml >> 8);
    p->req[4] = (uint8_t)ml;
    if (sl) {
        p->req[5] = 0x0a;
        p->req[6] = (uint8_t)sl;
        memcpy(p->req + 7, p->service, sl);
    }
    p->req_len = 5 + ml;

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    snprintf(portstr, sizeof(portstr), "%u", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai); /* blocking for names, as TCP probes */
    if (gai != 0 || ai == NULL) {
        snprintf(err, errlen, "%s %s: %s", grpc ? "GRPC" : "H2PING", spec, gai_strerror(gai));
        probe_h2_free(p);
        return -1;
    }
    char why[200];
    if (check_target_sockaddr(ai->ai_addr, why, sizeof(why)) != 0) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "%s %s: refused: %s", grpc ? "GRPC" : "H2PING", spec, why);
        probe_h2_free(p);
        return -1;
    }
    if (p->tls) {
        SSL *ssl = probe_tls_new(env, def, host, err, errlen);
        if (ssl == NULL || SSL_set_alpn_protos(ssl, (const unsigned char *)"\x02h2", 3) != 0) {
            if (ssl) {
                SSL_free(ssl);
                snprintf(err, errlen, "TLS: cannot set up the session for %s", host);
            }
            freeaddrinfo(ai);
            probe_h2_free(p);
            return -1;
        }
        p->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (p->bev == NULL)
            SSL_free(ssl);
        else
            bufferevent_openssl_set_allow_dirty_shutdown(p->bev, 1);
    } else {
        p->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    p->timer = evtimer_new(base, on_timeout, p);
    p->deliver = evtimer_new(base, on_deliver, p);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (p->bev == NULL || p->timer == NULL || p->deliver == NULL || evtimer_add(p->timer, &tv) != 0) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        probe_h2_free(p);
        return -1;
    }
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    if (bufferevent_enable(p->bev, EV_READ) != 0 ||
        bufferevent_socket_connect(p->bev, ai->ai_addr, (int)ai->ai_addrlen) != 0) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "%s %s: cannot connect", grpc ? "GRPC" : "H2PING", spec);
        probe_h2_free(p);
        return -1;
    }
    freeaddrinfo(ai);
    *out = p;
    return 0;
}
