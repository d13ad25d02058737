/*
 * probe.c — HTTP/HTTPS and TCP probes (see probe.h). Connections are freed
 * on the next loop turn when a probe ends inside one of libevent's own
 * callbacks (freeing them there is not allowed).
 */
#include "probe.h"
#include "probe_alias.h"
#include "probe_h2.h"
#include "probe_script.h"
#include "probe_udp.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "check_target.h"
#include "common.h"
#include "config.h"
#include "registry/error.h"
#include "tls.h"

#define OUTPUT_MAX PROBE_OUTPUT_MAX

struct probe {
    const struct probe_env *env;
    json_t *def; /* a reference, for the output text */
    uint64_t timeout_ms;
    probe_done_cb cb;
    void *arg;
    struct evhttp_connection *evcon;
    struct bufferevent *bev; /* TCP probes */
    struct probe_udp *udp;   /* UDP probes (probe_udp.c) */
    struct probe_h2 *h2;     /* GRPC and H2PING probes (probe_h2.c) */
    struct probe_script *script; /* script probes (probe_script.c) */
    struct probe_alias *alias;   /* alias probes (probe_alias.c) */
    struct evhttp_request *req;
    char error[256];
    char body[OUTPUT_MAX + 1];
    size_t body_len;
    char url[2048];    /* HTTP: the URL asked now (the check's, or a redirect's) */
    unsigned redirects; /* followed so far */
    bool get_only;     /* a 301/302/303 made the request a GET without body */
    bool cross_host;   /* redirected to another host: the check's Host and
                        * credentials stay behind (as Go's client) */
};

static void probe_free(struct probe *p, bool deferred)
{
    if (p->evcon) {
        if (deferred)
            common_free_evcon_later(p->env->base, p->evcon);
        else
            evhttp_connection_free(p->evcon);
    }
    if (p->bev)
        bufferevent_free(p->bev);
    probe_udp_free(p->udp);
    probe_h2_free(p->h2);
    probe_script_free(p->script);
    probe_alias_free(p->alias);
    json_decref(p->def);
    free(p);
}

/* The probe's end: tell the caller, then go. */
static void finish(struct probe *p, enum probe_status status, char *output)
{
    p->cb(p->arg, status, output);
    probe_free(p, true);
}

static void http_chunk(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in), room = OUTPUT_MAX - p->body_len;
    if (n > room)
        n = room;
    evbuffer_remove(in, p->body + p->body_len, n);
    p->body_len += n;
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* What TLS says about the connection's failure, into p->error; false if
 * nothing (a plain connection, or a TLS one without a reason). */
static bool tls_error(struct probe *p)
{
    struct bufferevent *bev = p->evcon ? evhttp_connection_get_bufferevent(p->evcon) : NULL;
    char why[200] = "";
    if (bev)
        probe_tls_why(bev, why, sizeof(why));
    if (why[0] == '\0')
        return false;
    snprintf(p->error, sizeof(p->error), "TLS: %s", why);
    return true;
}

static void http_error(enum evhttp_request_error e, void *arg)
{
    struct probe *p = arg;
    static const char *const names[] = {"timeout", "connection failed", "invalid response",
                                        "connection error", "cancelled", "response too long"};
    if (tls_error(p)) {
        /* p->error says why */
    } else if (e == EVREQ_HTTP_TIMEOUT) {
        snprintf(p->error, sizeof(p->error), "timeout after %" PRIu64 "ms", p->timeout_ms);
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        bool sock = (e == EVREQ_HTTP_EOF || e == EVREQ_HTTP_BUFFER_ERROR) && err != 0;
        snprintf(p->error, sizeof(p->error), "%s%s%s", (unsigned)e < 6 ? names[e] : "error",
                 sock ? ": " : "", sock ? evutil_socket_error_to_string(err) : "");
    }
}

static int start_http(struct probe *p);

/* Go's http.Client, which Consul's HTTP checks use, follows up to 10
 * redirects (unless DisableRedirects); each target is judged again
 * (check_target.h) as it is connected to. True when one is being
 * followed. */
#define HTTP_MAX_REDIRECTS 10

/* Do two http(s) URLs name the same scheme, host and port? */
static bool same_authority(const char *a, const char *b)
{
    const char *sa = a ? strstr(a, "://") : NULL, *sb = b ? strstr(b, "://") : NULL;
    if (sa == NULL || sb == NULL)
        return false;
    size_t la = (size_t)(sa + 3 - a), lb = (size_t)(sb + 3 - b);
    la += strcspn(a + la, "/?#");
    lb += strcspn(b + lb, "/?#");
    return la == lb && strncasecmp(a, b, la) == 0;
}

/* Headers a redirect to another host does not carry (Go's client drops
 * them; Host is the first host's). */
static bool stays_home(const char *name)
{
    static const char *const names[] = {"Host", "Authorization", "Proxy-Authorization", "Cookie",
                                        "WWW-Authenticate"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

static bool follow_redirect(struct probe *p, struct evhttp_request *req, int code)
{
    if ((code != 301 && code != 302 && code != 303 && code != 307 && code != 308) ||
        json_is_true(json_object_get(p->def, "DisableRedirects")) ||
        p->redirects >= HTTP_MAX_REDIRECTS)
        return false;
    const char *loc = evhttp_find_header(evhttp_request_get_input_headers(req), "Location");
    if (loc == NULL || *loc == '\0' || strlen(loc) >= sizeof(p->url))
        return false;
    char next[sizeof(p->url)];
    const char *sep = strstr(p->url, "://");
    if (strncasecmp(loc, "http://", 7) == 0 || strncasecmp(loc, "https://", 8) == 0) {
        snprintf(next, sizeof(next), "%s", loc);
    } else if (loc[0] == '/' && loc[1] == '/') { /* scheme-relative */
        if (sep == NULL || snprintf(next, sizeof(next), "%.*s:%s", (int)(sep - p->url), p->url,
                                    loc) >= (int)sizeof(next))
            return false;
    } else if (loc[0] == '?') { /* the same path, another query */
        size_t at = sep ? (size_t)(sep + 3 - p->url) : 0;
        at += strcspn(p->url + at, "?#");
        if (snprintf(next, sizeof(next), "%.*s%s", (int)at, p->url, loc) >= (int)sizeof(next))
            return false;
    } else {
        /* relative: against the scheme, host and (without a leading '/')
         * the directory of the URL asked */
        const char *rest = strstr(p->url, "://");
        size_t origin = rest ? (size_t)(rest + 3 - p->url) : 0;
        origin += strcspn(p->url + origin, "/?#");
        size_t keep = origin;
        if (loc[0] != '/') {
            const char *q = p->url + origin + strcspn(p->url + origin, "?#");
            const char *slash = q;
            while (slash > p->url + origin && slash[-1] != '/')
                slash--;
            keep = slash > p->url + origin ? (size_t)(slash - p->url) : origin;
        }
        if (snprintf(next, sizeof(next), "%.*s%s%s", (int)keep, p->url,
                     loc[0] == '/' || keep > origin ? "" : "/", loc) >= (int)sizeof(next))
            return false;
    }
    p->redirects++;
    if (code != 307 && code != 308)
        p->get_only = true;
    if (!same_authority(json_string_value(json_object_get(p->def, "HTTP")), next))
        p->cross_host = true;
    snprintf(p->url, sizeof(p->url), "%s", next);
    if (p->evcon != NULL) { /* in its own callback: freed after it returns */
        common_free_evcon_later(p->env->base, p->evcon);
        p->evcon = NULL;
    }
    p->body_len = 0;
    p->error[0] = '\0';
    if (start_http(p) != 0) {
        char out[sizeof(p->error) + sizeof(p->url) + 64];
        snprintf(out, sizeof(out), "HTTP redirect to %s: %s", p->url, p->error);
        finish(p, PROBE_CRITICAL, out);
    }
    return true;
}

static void http_done(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    const char *url = json_string_value(json_object_get(p->def, "HTTP"));
    const char *method = json_string_value(json_object_get(p->def, "Method"));
    char out[OUTPUT_MAX + 512];
    int code = req ? evhttp_request_get_response_code(req) : 0;
    p->req = NULL;
    if (code == 0) {
        /* libevent ends some failures (the peer closing before any answer)
         * without the error callback: ask TLS here too */
        if (p->error[0] == '\0')
            (void)tls_error(p);
        snprintf(out, sizeof(out), "HTTP %s %s: %s", method ? method : "GET", url,
                 p->error[0] ? p->error : "connection failed");
        finish(p, PROBE_CRITICAL, out);
        return;
    }
    if (follow_redirect(p, req, code))
        return;
    if (req)
        http_chunk(req, p); /* whatever was buffered without a chunk callback */
    p->body[p->body_len] = '\0';
    const char *reason = evhttp_request_get_response_code_line(req);
    snprintf(out, sizeof(out), "HTTP %s %s: %d %s Output: %s", method ? method : "GET", url, code,
             reason ? reason : "", p->body);
    finish(p, code >= 200 && code < 300 ? PROBE_PASSING
              : code == 429            ? PROBE_WARNING
                                       : PROBE_CRITICAL,
           out);
}

static enum evhttp_cmd_type method_type(const char *m)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type type;
    } methods[] = {{"GET", EVHTTP_REQ_GET},       {"POST", EVHTTP_REQ_POST},
                   {"HEAD", EVHTTP_REQ_HEAD},     {"PUT", EVHTTP_REQ_PUT},
                   {"DELETE", EVHTTP_REQ_DELETE}, {"OPTIONS", EVHTTP_REQ_OPTIONS},
                   {"PATCH", EVHTTP_REQ_PATCH}};
    for (size_t i = 0; m && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcasecmp(m, methods[i].name) == 0)
            return methods[i].type;
    return EVHTTP_REQ_GET;
}

/* Resolve host, judge the address (check_target.h) and keep it in ip: the
 * probe connects to exactly the address judged (a name that resolves
 * elsewhere later is judged again). 0, or -1 with p->error set. */
static int resolve_judged(struct probe *p, const char *host, int port, char *ip, size_t iplen)
{
    char portstr[16], why[120];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai); /* blocking, as TCP probes */
    if (gai != 0 || ai == NULL) {
        snprintf(p->error, sizeof(p->error), "dial tcp %.100s: %s", host, gai_strerror(gai));
        return -1;
    }
    int jrc = check_target_sockaddr(ai->ai_addr, why, sizeof(why));
    const void *addr = ai->ai_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                           : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    ip[0] = '\0';
    if (jrc == 0 && inet_ntop(ai->ai_family, addr, ip, (socklen_t)iplen) == NULL)
        ip[0] = '\0';
    freeaddrinfo(ai);
    if (jrc != 0) {
        snprintf(p->error, sizeof(p->error), "refused: %.120s", why);
        return -1;
    }
    if (ip[0] == '\0') {
        snprintf(p->error, sizeof(p->error), "dial tcp %.100s: no address", host);
        return -1;
    }
    return 0;
}

SSL *probe_tls_new(const struct probe_env *e, json_t *def, const char *host, char *err,
                   size_t errlen)
{
    bool skip = json_is_true(json_object_get(def, "TLSSkipVerify"));
    const char *name = json_string_value(json_object_get(def, "TLSServerName"));
    if (name == NULL || *name == '\0')
        name = host;
    SSL *ssl = NULL;
    if (e->agent_tls) {
        SSL_CTX *ctx = tls_client_ctx(); /* a reference, or NULL if TLS went away */
        if (ctx == NULL) {
            snprintf(err, errlen, "TLS: enable_agent_tls_for_checks, but no TLS material loaded");
            return NULL;
        }
        ssl = SSL_new(ctx);
        SSL_CTX_free(ctx); /* the session holds its own reference */
        if (ssl != NULL && skip)
            SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    } else {
        ssl = SSL_new(skip ? e->ssl_noverify : e->ssl_verify);
    }
    if (ssl == NULL) {
        snprintf(err, errlen, "TLS: cannot create session");
        return NULL;
    }
    /* Without the name set, the certificate's name would go unchecked: a
     * failure here fails the probe. */
    struct in6_addr ip;
    bool literal = inet_pton(AF_INET, name, &ip) == 1 || inet_pton(AF_INET6, name, &ip) == 1;
    if ((!literal && SSL_set_tlsext_host_name(ssl, name) != 1) ||
        (!skip && (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1
                           : SSL_set1_host(ssl, name) != 1))) {
        SSL_free(ssl);
        snprintf(err, errlen, "TLS: cannot set the server name %.100s", name);
        return NULL;
    }
    return ssl;
}

/* The session's note that the service asked for a client certificate and
 * got none (client_cert_asked): its failure then most likely says so, but
 * the service's alert is lost when its close resets the connection first. */
static int asked_index = -1;

static int client_cert_asked(SSL *ssl, X509 **cert, EVP_PKEY **key)
{
    (void)cert;
    (void)key;
    if (asked_index >= 0)
        SSL_set_ex_data(ssl, asked_index, (void *)1);
    return 0; /* no certificate: these contexts have none to give */
}

/* OpenSSL's own reason for the failure, or 0. libevent keeps, besides
 * OpenSSL's queue, SSL_get_error's code (SSL_ERROR_SYSCALL when the peer
 * reset the connection): that number names no library and says nothing. */
static unsigned long openssl_reason(struct bufferevent *bev)
{
    unsigned long e, found = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0)
        if (found == 0 && ERR_GET_LIB(e) != 0)
            found = e;
    return found;
}

void probe_tls_why(struct bufferevent *bev, char *out, size_t len)
{
    char reason[120] = "";
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    unsigned long ssl_err = openssl_reason(bev);
    out[0] = '\0';
    if (ssl_err != 0)
        ERR_error_string_n(ssl_err, reason, sizeof(reason));
    else if (ssl && asked_index >= 0 && SSL_get_ex_data(ssl, asked_index) != NULL)
        snprintf(reason, sizeof(reason), "the service asked for a client certificate and none "
                                         "was sent (see enable_agent_tls_for_checks)");
    /* a session that does not verify still records what it found: ignore it */
    long v = ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl)
                                                                 : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(out, len, "%s%s%s", reason, reason[0] ? ": " : "",
                 X509_verify_cert_error_string(v));
    else
        snprintf(out, len, "%s", reason);
}

/* The connection's bufferevent: TLS (probe_tls_new) or plain. 0, or -1
 * with p->error set. */
static int make_transport(struct probe *p, bool tls, const char *host)
{
    if (!tls) {
        p->bev = bufferevent_socket_new(p->env->base, -1, BEV_OPT_CLOSE_ON_FREE);
    } else {
        SSL *ssl = probe_tls_new(p->env, p->def, host, p->error, sizeof(p->error));
        if (ssl == NULL)
            return -1;
        p->bev = bufferevent_openssl_socket_new(p->env->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (p->bev == NULL)
            SSL_free(ssl);
        else
            bufferevent_openssl_set_allow_dirty_shutdown(p->bev, 1);
    }
    if (p->bev == NULL) {
        snprintf(p->error, sizeof(p->error), "out of memory");
        return -1;
    }
    return 0;
}

/* The check's request: Host as the URL names it, its Header and Body. */
static struct evhttp_request *make_request(struct probe *p, const char *host, int port, bool tls)
{
    struct evhttp_request *req = evhttp_request_new(http_done, p);
    if (req == NULL)
        return NULL;
    evhttp_request_set_chunked_cb(req, http_chunk);
    evhttp_request_set_error_cb(req, http_error);
    struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
    char hosthdr[300];
    if (port == (tls ? 443 : 80))
        snprintf(hosthdr, sizeof(hosthdr), "%s", host);
    else
        snprintf(hosthdr, sizeof(hosthdr), "%s:%d", host, port);
    evhttp_add_header(hdr, "Host", hosthdr);
    /* Consul's, which applications match to leave probes out of their logs */
    evhttp_add_header(hdr, "User-Agent", "Consul Health Check");
    evhttp_add_header(hdr, "Accept", "text/plain, text/*, */*");
    evhttp_add_header(hdr, "Connection", "close");
    /* The check's Header replaces these defaults rather than repeating
     * them (Go sets req.Host from a Host header: its first value, once) */
    const char *hk;
    json_t *hv;
    json_t *user = json_object_get(p->def, "Header");
    bool host_set = false;
    json_object_foreach(user, hk, hv)
    {
        if (p->cross_host && stays_home(hk))
            continue;
        const char *first = json_string_value(json_array_get(hv, 0));
        bool host = strcasecmp(hk, "Host") == 0;
        if (host && (first == NULL || *first == '\0' || host_set))
            continue; /* no value: the URL's host stays; one Host only */
        if (host || strcasecmp(hk, "User-Agent") == 0 || strcasecmp(hk, "Accept") == 0)
            evhttp_remove_header(hdr, hk);
        if (host) {
            evhttp_add_header(hdr, "Host", first);
            host_set = true;
            continue;
        }
        size_t i;
        json_t *x;
        json_array_foreach(hv, i, x) evhttp_add_header(hdr, hk, json_string_value(x));
    }
    const char *body = p->get_only ? NULL : json_string_value(json_object_get(p->def, "Body"));
    if (body && *body)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    return req;
}

static int start_http(struct probe *p)
{
    if (p->url[0] == '\0' &&
        snprintf(p->url, sizeof(p->url), "%s",
                 json_string_value(json_object_get(p->def, "HTTP"))) >= (int)sizeof(p->url)) {
        snprintf(p->error, sizeof(p->error), "URL longer than %zu bytes", sizeof(p->url) - 1);
        return -1;
    }
    struct evhttp_uri *uri = evhttp_uri_parse(p->url);
    int rc = -1;
    if (uri == NULL || evhttp_uri_get_host(uri) == NULL) {
        snprintf(p->error, sizeof(p->error), "invalid URL");
        goto out;
    }
    const char *scheme = evhttp_uri_get_scheme(uri), *host = evhttp_uri_get_host(uri);
    bool tls = scheme && strcasecmp(scheme, "https") == 0;
    int port = evhttp_uri_get_port(uri);
    if (port < 0)
        port = tls ? 443 : 80;
    char hostbuf[256], ipbuf[INET6_ADDRSTRLEN];
    snprintf(hostbuf, sizeof(hostbuf), "%s", host);
    if (hostbuf[0] == '[') { /* libevent keeps IPv6 brackets */
        memmove(hostbuf, hostbuf + 1, strlen(hostbuf));
        hostbuf[strcspn(hostbuf, "]")] = '\0';
    }
    if (resolve_judged(p, hostbuf, port, ipbuf, sizeof(ipbuf)) != 0 ||
        make_transport(p, tls, hostbuf) != 0)
        goto out;
    p->evcon = evhttp_connection_base_bufferevent_new(p->env->base, NULL, p->bev, ipbuf,
                                                      (unsigned short)port);
    if (p->evcon == NULL) {
        bufferevent_free(p->bev);
        p->bev = NULL;
        snprintf(p->error, sizeof(p->error), "cannot create connection");
        goto out;
    }
    p->bev = NULL; /* owned by evcon now */
    struct timeval tv = {(time_t)(p->timeout_ms / 1000), (suseconds_t)(p->timeout_ms % 1000) * 1000};
    evhttp_connection_set_timeout_tv(p->evcon, &tv);
    evhttp_connection_set_retries(p->evcon, 0);
    if ((p->req = make_request(p, host, port, tls)) == NULL) {
        snprintf(p->error, sizeof(p->error), "out of memory");
        goto out;
    }
    const char *path = evhttp_uri_get_path(uri), *query = evhttp_uri_get_query(uri);
    char target[2048];
    snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/", query ? "?" : "",
             query ? query : "");
    enum evhttp_cmd_type m = method_type(json_string_value(json_object_get(p->def, "Method")));
    if (p->get_only && m != EVHTTP_REQ_HEAD)
        m = EVHTTP_REQ_GET;
    if (evhttp_make_request(p->evcon, p->req, m, target) != 0) {
        p->req = NULL; /* freed by libevent */
        snprintf(p->error, sizeof(p->error), "cannot send request");
        goto out;
    }
    rc = 0;
out:
    if (uri)
        evhttp_uri_free(uri);
    return rc;
}

static void tcp_event(struct bufferevent *bev, short what, void *arg)
{
    struct probe *p = arg;
    const char *addr = json_string_value(json_object_get(p->def, "TCP"));
    char out[512];
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        snprintf(out, sizeof(out), "TCP connect %s: Success", addr);
        finish(p, PROBE_PASSING, out);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(out, sizeof(out), "TCP connect %s: timeout after %" PRIu64 "ms", addr,
                 p->timeout_ms);
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(out, sizeof(out), "TCP connect %s: %s", addr,
                 err ? evutil_socket_error_to_string(err) : "connection failed");
    }
    finish(p, PROBE_CRITICAL, out);
}

static int start_tcp(struct probe *p)
{
    const char *addr = json_string_value(json_object_get(p->def, "TCP"));
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) != 0) {
        char host[256], portstr[8];
        unsigned short port;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (conf_split_hostport(addr, host, sizeof(host), &port) != 0) {
            snprintf(p->error, sizeof(p->error), "TCP %s: not HOST:PORT", addr);
            return -1;
        }
        snprintf(portstr, sizeof(portstr), "%u", port);
        int gai = getaddrinfo(host, portstr, &hints, &ai); /* blocking; names are rare here */
        if (gai != 0 || ai == NULL) {
            snprintf(p->error, sizeof(p->error), "TCP %s: %s", addr, gai_strerror(gai));
            return -1;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sslen = (int)ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    char why[200];
    if (check_target_sockaddr((struct sockaddr *)&ss, why, sizeof(why)) != 0) {
        snprintf(p->error, sizeof(p->error), "TCP %.40s: refused: %.100s", addr, why);
        return -1;
    }
    p->bev = bufferevent_socket_new(p->env->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (p->bev == NULL) {
        snprintf(p->error, sizeof(p->error), "out of memory");
        return -1;
    }
    struct timeval tv = {(time_t)(p->timeout_ms / 1000), (suseconds_t)(p->timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(p->bev, &tv, &tv);
    bufferevent_setcb(p->bev, NULL, NULL, tcp_event, p);
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&ss, sslen) != 0) {
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(p->error, sizeof(p->error), "TCP connect %s: %s", addr,
                 err ? evutil_socket_error_to_string(err) : "connection failed");
        return -1;
    }
    return 0;
}

static SSL_CTX *ssl_ctx(bool verify)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_client_cert_cb(ctx, client_cert_asked);
    if (verify) {
        SSL_CTX_set_default_verify_paths(ctx);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

int probe_env_init(struct probe_env *e, struct event_base *base)
{
    if (asked_index < 0) /* once, before the checker thread runs */
        asked_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    e->base = base;
    e->ssl_verify = ssl_ctx(true);
    e->ssl_noverify = ssl_ctx(false);
    if (e->ssl_verify == NULL || e->ssl_noverify == NULL) {
        probe_env_fini(e);
        return REG_ENOMEM;
    }
    return 0;
}

void probe_env_fini(struct probe_env *e)
{
    SSL_CTX_free(e->ssl_verify);
    SSL_CTX_free(e->ssl_noverify);
    e->ssl_verify = e->ssl_noverify = NULL;
}

/* UDP, GRPC and H2PING probes end here (their modules say passing or not). */
static void udp_done(void *arg, bool passing, const char *output)
{
    char text[OUTPUT_MAX + 1];
    snprintf(text, sizeof(text), "%s", output);
    finish(arg, passing ? PROBE_PASSING : PROBE_CRITICAL, text);
}

/* Script and alias probes end here (0 passing, 1 warning, 2 critical). */
static void status_done(void *arg, int status, const char *output)
{
    char text[OUTPUT_MAX + 1];
    snprintf(text, sizeof(text), "%s", output);
    finish(arg, status == 0 ? PROBE_PASSING : status == 1 ? PROBE_WARNING : PROBE_CRITICAL,
           text);
}

/* A server without enable_script_checks never runs one, whoever registered it. */
static int start_script(struct probe *p)
{
    if (!p->env->enable_scripts) {
        snprintf(p->error, sizeof(p->error),
                 "Scripts are disabled on this agent; to enable, configure "
                 "'enable_script_checks' to true");
        return -1;
    }
    return probe_script_start(p->env->base, json_object_get(p->def, "Args"), p->timeout_ms,
                              status_done, p, &p->script, p->error, sizeof(p->error));
}

struct probe *probe_start(const struct probe_env *e, enum probe_kind kind, json_t *def,
                          uint64_t timeout_ms, probe_done_cb cb, void *arg, char *err,
                          size_t errlen)
{
    struct probe *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *p = (struct probe){.env = e, .def = json_incref(def), .timeout_ms = timeout_ms, .cb = cb,
                        .arg = arg};
    int rc = kind == PROBE_HTTP ? start_http(p)
             : kind == PROBE_UDP ? probe_udp_start(e->base,
                                                   json_string_value(json_object_get(def, "UDP")),
                                                   timeout_ms, udp_done, p, &p->udp, p->error,
                                                   sizeof(p->error))
             : kind == PROBE_GRPC || kind == PROBE_H2PING
                 ? probe_h2_start(e, kind == PROBE_GRPC,
                                  def, timeout_ms, udp_done, p, &p->h2, p->error,
                                  sizeof(p->error))
             : kind == PROBE_SCRIPT ? start_script(p)
             : kind == PROBE_ALIAS  ? probe_alias_start(e->base, e->store, def, status_done, p,
                                                        &p->alias, p->error, sizeof(p->error))
                                    : start_tcp(p);
    if (rc != 0) {
        snprintf(err, errlen, "%s", p->error);
        probe_cancel(p);
        return NULL;
    }
    return p;
}

void probe_cancel(struct probe *p)
{
    /* freeing the connection cancels the request without its callback */
    p->req = NULL;
    probe_free(p, false);
}
