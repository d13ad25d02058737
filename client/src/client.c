/*
 * client.c — libregistry's HTTP transport and discovery calls.
 *
 * A deliberately small HTTP/1.1 client: one connection per request
 * ("Connection: close"), plain or TLS (conn.c: the one connection layer,
 * also used by registryctl), non-blocking sockets with poll() for every
 * timeout, Content-Length or chunked bodies. Servers are tried in order,
 * starting from the last one that answered, so a dead server costs one
 * connect attempt, not one per request. reg__client_transfer streams bodies
 * too large to hold in memory (snapshots).
 */
#define _GNU_SOURCE
#include "registry/registry.h"
#include "duration_parse.h"
#include "conn.h"
#include "hostport.h"
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_SERVERS 16
#define MAX_RESPONSE (64u << 20) /* by default, refuse answers larger than 64 MiB */

enum scheme { SCHEME_BARE, SCHEME_HTTP, SCHEME_HTTPS };

struct reg_server {
    char host[256];
    char port[8];
    enum scheme scheme; /* as written (CONSUL_HTTP_SSL=true made it https) */
};

struct reg_client {
    struct reg_server servers[MAX_SERVERS];
    int nservers;
    int timeout_ms;
    size_t max_response; /* bytes; a larger answer is REG_ETOOBIG */
    char *token;
    pthread_mutex_t lock; /* guards preferred, tls and tls_bare */
    int preferred;
    struct reg__tls *tls; /* NULL until an https address or reg_client_set_tls needs it */
    bool tls_bare;        /* reg_client_set_tls was called: bare HOST:PORT is https too */
};

/* The last error of this thread, and the client it belongs to. */
static __thread const struct reg_client *err_owner;
static __thread char err_text[512];

static int fail(const struct reg_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const struct reg_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_text, sizeof(err_text), fmt, ap);
    va_end(ap);
    err_owner = c;
    return code;
}

const char *reg_client_errmsg(const struct reg_client *c)
{
    return err_owner == c ? err_text : "";
}

static int parse_server(const char *s, size_t len, struct reg_server *out)
{
    unsigned short port;
    out->scheme = SCHEME_BARE;
    if (len >= 8 && strncasecmp(s, "https://", 8) == 0) {
        out->scheme = SCHEME_HTTPS;
        s += 8;
        len -= 8;
    } else if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        out->scheme = SCHEME_HTTP;
        s += 7;
        len -= 7;
    }
    if (len > 0 && s[len - 1] == '/') /* "https://host:8501/" */
        len--;
    if (reg__split_hostport(s, len, out->host, sizeof(out->host), &port) != 0)
        return REG_EINVAL;
    snprintf(out->port, sizeof(out->port), "%u", port);
    return 0;
}

/* The first of two environment variables that is set and not empty. */
static const char *env2(const char *ours, const char *consuls)
{
    const char *v = getenv(ours);
    if (v == NULL || *v == '\0')
        v = getenv(consuls);
    return v && *v ? v : NULL;
}

/* CONSUL_HTTP_SSL as Consul's api package reads it (Go's strconv.ParseBool):
 * 1, t, T, TRUE, true, True are true; anything else is not. */
static bool consul_http_ssl(void)
{
    const char *v = getenv("CONSUL_HTTP_SSL");
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    for (size_t i = 0; v && i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcmp(v, yes[i]) == 0)
            return true;
    return false;
}

/* TLS settings from the environment (REGISTRY_* first, then CONSUL_*). */
static int tls_from_env(struct reg_client *c)
{
    char why[400];
    const char *ca = env2("REGISTRY_CACERT", "CONSUL_CACERT");
    const char *cert = env2("REGISTRY_CLIENT_CERT", "CONSUL_CLIENT_CERT");
    const char *key = env2("REGISTRY_CLIENT_KEY", "CONSUL_CLIENT_KEY");
    const char *name = env2("REGISTRY_TLS_SERVER_NAME", "CONSUL_TLS_SERVER_NAME");
    int rc = reg__tls_new(&c->tls, ca, cert, key, name, why, sizeof(why));
    if (rc != 0)
        return fail(NULL, rc, "TLS settings from the environment: %s", why);
    return 0;
}

int reg_client_new(struct reg_client **out, const char *addrs)
{
    if (out == NULL)
        return REG_EINVAL;
    if (addrs == NULL)
        addrs = getenv("REGISTRY_HTTP_ADDR");
    if (addrs == NULL || *addrs == '\0')
        addrs = "127.0.0.1:8500";
    struct reg_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return REG_ENOMEM;
    c->timeout_ms = 10000;
    c->max_response = MAX_RESPONSE;
    /* as Consul's api: with CONSUL_HTTP_SSL=true every address is https,
     * even one written http:// ("never revert to http if TLS was asked") */
    bool all_tls = consul_http_ssl(), any_tls = false;
    for (const char *p = addrs; *p;) {
        size_t len = strcspn(p, ",");
        while (len > 0 && (*p == ' ')) {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        struct reg_server *s = &c->servers[c->nservers];
        if (c->nservers == MAX_SERVERS || parse_server(p, len, s) != 0) {
            free(c);
            return fail(NULL, REG_EINVAL, "invalid server address list \"%s\"", addrs);
        }
        if (all_tls)
            s->scheme = SCHEME_HTTPS;
        any_tls |= s->scheme == SCHEME_HTTPS;
        c->nservers++;
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
    if (c->nservers == 0) {
        free(c);
        return fail(NULL, REG_EINVAL, "no server address");
    }
    if (any_tls) {
        int rc = tls_from_env(c);
        if (rc != 0) {
            free(c);
            return rc;
        }
    }
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void reg_client_free(struct reg_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->lock);
    reg__tls_release(c->tls);
    free(c->token);
    free(c);
}

int reg_client_set_tls(struct reg_client *c, const char *ca_file, const char *cert_file,
                       const char *key_file, const char *server_name)
{
    if (c == NULL)
        return REG_EINVAL;
    struct reg__tls *t = NULL;
    char why[400];
    int rc = reg__tls_new(&t, ca_file, cert_file, key_file, server_name, why, sizeof(why));
    if (rc != 0)
        return fail(c, rc, "%s", why);
    pthread_mutex_lock(&c->lock);
    struct reg__tls *old = c->tls;
    c->tls = t;
    c->tls_bare = true;
    pthread_mutex_unlock(&c->lock);
    reg__tls_release(old); /* requests in flight hold their own reference */
    return 0;
}

int reg_client_set_timeout(struct reg_client *c, int ms)
{
    if (c == NULL || ms <= 0)
        return REG_EINVAL;
    c->timeout_ms = ms;
    return 0;
}

int reg_client_set_max_response(struct reg_client *c, size_t bytes)
{
    if (c == NULL || bytes < 4096)
        return REG_EINVAL;
    c->max_response = bytes;
    return 0;
}

int reg_client_set_token(struct reg_client *c, const char *token)
{
    if (c == NULL)
        return REG_EINVAL;
    char *copy = token ? strdup(token) : NULL;
    if (token && copy == NULL)
        return REG_ENOMEM;
    free(c->token);
    c->token = copy;
    return 0;
}

int reg_url_encode(const char *src, char *dst, size_t dstlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || strchr("-_.~", *p) != NULL;
        if (j + (plain ? 1 : 3) >= dstlen)
            return REG_ETOOBIG;
        if (plain) {
            dst[j++] = (char)*p;
        } else {
            dst[j++] = '%';
            dst[j++] = hex[*p >> 4];
            dst[j++] = hex[*p & 15];
        }
    }
    if (j >= dstlen)
        return REG_ETOOBIG;
    dst[j] = '\0';
    return 0;
}

/* ---- transport ---------------------------------------------------------- */

/* Read the whole answer (the server closes: we asked it to). */
static bool find_header(const char *h, const char *end, const char *name, char *val,
                        size_t vallen);

/* Where an answer's framing says it ends, once its head is in: *head the
 * head's length, *clen the Content-Length (-1: none), *chunked. */
struct framing {
    size_t head; /* 0 until the head is whole */
    long long clen;
    bool chunked;
};

/* Has buf[0..len) the whole answer its framing announces? A server (or a
 * proxy) may keep the connection open after it, though asked to close:
 * waiting for the close timed such answers out. */
static bool answer_whole(struct framing *f, const char *buf, size_t len, size_t was)
{
    if (f->head == 0) {
        size_t from = was > 3 ? was - 3 : 0;
        const char *e = memmem(buf + from, len - from, "\r\n\r\n", 4);
        if (e == NULL)
            return false;
        f->head = (size_t)(e - buf) + 4;
        char v[64], *end;
        f->clen = -1;
        if (find_header(buf, e, "Content-Length", v, sizeof(v))) {
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (v[0] >= '0' && v[0] <= '9' && *end == '\0' && errno == 0 && n < (1ULL << 62))
                f->clen = (long long)n;
        }
        f->chunked = find_header(buf, e, "Transfer-Encoding", v, sizeof(v)) &&
                     strcasecmp(v, "chunked") == 0;
    }
    if (f->chunked) /* the last chunk, no trailers (what servers send) */
        return len >= f->head + 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0 &&
               (len == f->head + 5 || buf[len - 6] == '\n');
    return f->clen >= 0 && len - f->head >= (size_t)f->clen;
}

static int recv_all(struct reg__conn *cn, char **out, size_t *outlen, long long deadline,
                    size_t max, char *why, size_t whylen)
{
    size_t cap = 16384, len = 0;
    struct framing f = {0};
    char *buf = malloc(cap);
    if (buf == NULL)
        return REG_ENOMEM;
    for (;;) {
        if (len > max) {
            free(buf);
            return REG_ETOOBIG;
        }
        if (len + 4096 > cap) {
            if (cap >= max + 4096) {
                free(buf);
                return REG_ETOOBIG;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                return REG_ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = 0;
        int rc = reg__conn_recv(cn, buf + len, cap - len - 1, &n, deadline, why, whylen);
        if (rc != 0) {
            free(buf);
            return rc;
        }
        if (n == 0)
            break;
        len += n;
        if (len <= max && answer_whole(&f, buf, len, len - n))
            break;
    }
    if (len > max) {
        free(buf);
        return REG_ETOOBIG;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* Find header `name` in the header block [h, end); value copied to val. */
static bool find_header(const char *h, const char *end, const char *name, char *val,
                        size_t vallen)
{
    size_t nlen = strlen(name);
    for (const char *line = h; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t l = (size_t)(eol - v);
            if (l >= vallen)
                l = vallen - 1;
            memcpy(val, v, l);
            val[l] = '\0';
            return true;
        }
        line = eol + 2;
    }
    return false;
}

/* Decode a chunked body in place; returns its length or -1. */
static long dechunk(char *body, size_t len)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        if (in >= len || !isxdigit((unsigned char)body[in])) /* no sign or space first */
            return -1;
        unsigned long n = strtoul(body + in, &end, 16);
        char *eol = memmem(body + in, len - in, "\r\n", 2);
        if (eol == NULL || (end != eol && *end != ';')) /* a size, then an extension or CRLF */
            return -1;
        for (const char *d = body + in; d < end; d++)
            if (!isxdigit((unsigned char)*d)) /* strtoul took "0x" */
                return -1;
        in = (size_t)(eol - body) + 2;
        if (n == 0)
            return (long)out;
        if (n > len - in)
            return -1;
        memmove(body + out, body + in, n);
        out += n;
        in += n + 2;
    }
}

int reg__parse_response(struct reg_client *c, char *raw, size_t len, int *status, char **body,
                        size_t *body_len, uint64_t *index)
{
    char *hend = memmem(raw, len, "\r\n\r\n", 4);
    int code = reg__status_code(raw, len);
    if (hend == NULL || code < 0)
        return fail(c, REG_EPROTO, "malformed HTTP answer");
    char val[64];
    uint64_t idx = 0;
    if (find_header(raw, hend, "X-Consul-Index", val, sizeof(val)))
        idx = strtoull(val, NULL, 10);
    char *b = hend + 4;
    size_t blen = len - (size_t)(b - raw);
    if (find_header(raw, hend, "Transfer-Encoding", val, sizeof(val)) &&
        strcasecmp(val, "chunked") == 0) {
        long l = dechunk(b, blen);
        if (l < 0)
            return fail(c, REG_EPROTO, "malformed chunked body");
        blen = (size_t)l;
    } else if (find_header(raw, hend, "Content-Length", val, sizeof(val))) {
        unsigned long long cl = strtoull(val, NULL, 10);
        if (cl > blen)
            return fail(c, REG_EPROTO, "answer cut short (%zu of %llu bytes)", blen, cl);
        blen = (size_t)cl;
    }
    b[blen] = '\0';
    if (status)
        *status = code;
    if (index)
        *index = idx;
    if (code < 200 || code > 299) {
        /* the server's first line, as text a terminal shows as it is */
        size_t l = strcspn(b, "\r\n");
        if (l > 400)
            l = 400;
        for (size_t i = 0; i < l; i++)
            if ((unsigned char)b[i] < 0x20 || b[i] == 0x7f)
                b[i] = '?';
        return fail(c, code == 404 ? REG_ENOTFOUND : REG_ESERVER, "%d: %.*s", code,
                    l ? (int)l : (int)strlen("(no reason given)"), l ? b : "(no reason given)");
    }
    if (body) {
        char *copy = malloc(blen + 1);
        if (copy == NULL)
            return fail(c, REG_ENOMEM, "out of memory");
        memcpy(copy, b, blen + 1);
        *body = copy;
        if (body_len)
            *body_len = blen;
    }
    return 0;
}

/* As the server (registryd/http_api.c, Consul): a query with index=N > 0
 * waits up to wait= (5m if absent, at most 10m) plus up to 1/16 jitter. */
#define QUERY_DEFAULT_WAIT_MS (5 * 60 * 1000)
#define QUERY_MAX_WAIT_MS (10 * 60 * 1000)

uint64_t reg__query_wait_ms(const char *path)
{
    const char *q = path ? strchr(path, '?') : NULL;
    uint64_t wait = QUERY_DEFAULT_WAIT_MS;
    bool blocking = false;
    while (q != NULL) { /* the last of each key wins, as on the server */
        q++;
        size_t n = strcspn(q, "&#");
        uint64_t v;
        if (n >= 5 && strncmp(q, "wait=", 5) == 0) /* 0: the server's default, as Consul's */
            wait = reg__duration_parse(q + 5, n - 5, &v) != 0 ? 0
                   : v > 0                                    ? v
                                                              : QUERY_DEFAULT_WAIT_MS;
        else if (n > 6 && strncmp(q, "index=", 6) == 0)
            blocking = strtoull(q + 6, NULL, 10) > 0;
        q = q[n] == '&' ? q + n : NULL;
    }
    if (!blocking)
        return 0;
    return wait > QUERY_MAX_WAIT_MS ? QUERY_MAX_WAIT_MS : wait;
}

/* "token=..." (URL-encoded) for the query string, "" without a token;
 * non-zero if it does not fit. */
static int token_param(const struct reg_client *c, char *out, size_t outlen)
{
    char enc[580];
    out[0] = '\0';
    if (c->token == NULL)
        return 0;
    if (reg_url_encode(c->token, enc, sizeof(enc)) != 0)
        return -1;
    return snprintf(out, outlen, "token=%s", enc) < (int)outlen ? 0 : -1;
}

int reg_client_request(struct reg_client *c, const char *method, const char *path,
                       const char *body, size_t body_len, int *status, char **resp_body,
                       size_t *resp_len, uint64_t *index)
{
    if (c == NULL || method == NULL || path == NULL || path[0] != '/')
        return fail(c, REG_EINVAL, "invalid request");
    /* A blocking query may take its wait on top of the timeout. */
    long long extra = 0;
    uint64_t wait_ms = reg__query_wait_ms(path);
    if (wait_ms > 0)
        extra = (long long)wait_ms + (long long)wait_ms / 16 + 1000; /* jitter, and slack */
    char *req = NULL;
    const char *sep = strchr(path, '?') ? "&" : "?";
    char tok[600];
    if (token_param(c, tok, sizeof(tok)) != 0)
        return fail(c, REG_EINVAL, "token too long");
    pthread_mutex_lock(&c->lock);
    int first = c->preferred;
    struct reg__tls *tls = reg__tls_ref(c->tls);
    bool tls_bare = c->tls_bare;
    pthread_mutex_unlock(&c->lock);
    char why[400] = "no server", last[512] = "";
    int rc = REG_ECONNECT;
    for (int k = 0; k < c->nservers; k++) {
        int si = (first + k) % c->nservers;
        const struct reg_server *s = &c->servers[si];
        bool use_tls = s->scheme == SCHEME_HTTPS || (s->scheme == SCHEME_BARE && tls_bare);
        long long deadline = reg__now_ms() + c->timeout_ms + extra;
        struct reg__conn cn;
        rc = reg__conn_open(&cn, s->host, s->port, use_tls ? tls : NULL,
                            reg__now_ms() + c->timeout_ms, why, sizeof(why));
        if (rc == REG_ETIMEDOUT || rc == REG_ENOMEM) { /* as a refusal: try the next */
            snprintf(last, sizeof(last), "%s", why);
            continue;
        }
        if (rc != 0) {
            if (rc == REG_ESHUTDOWN)
                break;
            snprintf(last, sizeof(last), "%s", why);
            continue;
        }
        free(req);
        int n = asprintf(&req,
                         "%s %s%s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: libregistry/1\r\n"
                         "Accept: application/json\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         method, path, c->token ? sep : "", c->token ? tok : "", s->host,
                         s->port, body ? body_len : 0);
        if (n < 0) {
            req = NULL;
            reg__conn_close(&cn);
            reg__tls_release(tls);
            return fail(c, REG_ENOMEM, "out of memory");
        }
        char *raw = NULL;
        size_t rawlen = 0;
        why[0] = '\0';
        rc = reg__conn_send(&cn, req, (size_t)n, deadline, why, sizeof(why));
        if (rc == 0 && body && body_len)
            rc = reg__conn_send(&cn, body, body_len, deadline, why, sizeof(why));
        bool sent = rc == 0;
        if (rc == 0)
            rc = recv_all(&cn, &raw, &rawlen, deadline, c->max_response, why, sizeof(why));
        reg__conn_close(&cn);
        /* Sent whole and then failed: the server may have acted on it. Only
         * a read goes to the next server (a write twice could create twice);
         * an answer too big is too big from any server. */
        if (rc != 0 && rc != REG_ETIMEDOUT && rc != REG_ESHUTDOWN &&
            (rc == REG_ETOOBIG ||
             (sent && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))) {
            free(req);
            reg__tls_release(tls);
            if (rc == REG_ETOOBIG)
                return fail(c, rc, "%s %s:%s%s: answer larger than %zu bytes", method, s->host,
                            s->port, path, c->max_response);
            return fail(c, rc, "%s %s:%s%s: %s (sent; not sent again elsewhere)", method,
                        s->host, s->port, path, why[0] ? why : reg_strerror(rc));
        }
        if (rc == REG_ETIMEDOUT || rc == REG_ESHUTDOWN) {
            free(req);
            reg__tls_release(tls);
            return fail(c, rc, "%s %s:%s%s: %s", method, s->host, s->port, path,
                        rc == REG_ETIMEDOUT ? "timed out" : "cancelled");
        }
        if (rc != 0) {
            if (why[0] == '\0' || rc != REG_EIO)
                snprintf(why, sizeof(why), "%s:%s: %s", s->host, s->port, reg_strerror(rc));
            snprintf(last, sizeof(last), "%s", why);
            continue;
        }
        free(req);
        reg__tls_release(tls);
        pthread_mutex_lock(&c->lock);
        c->preferred = si;
        pthread_mutex_unlock(&c->lock);
        rc = reg__parse_response(c, raw, rawlen, status, resp_body, resp_len, index);
        free(raw);
        return rc;
    }
    free(req);
    reg__tls_release(tls);
    if (rc == REG_ESHUTDOWN)
        return fail(c, rc, "%s %s: cancelled", method, path);
    return fail(c, REG_ECONNECT, "%s", last[0] ? last : "no server reachable");
}

/* ---- streaming transfers (internal.h) ------------------------------------ */

/* Connect to the first server that accepts, starting from the preferred
 * one; *si is its index. Errors as reg_client_request's, errmsg set. */
static int connect_any(struct reg_client *c, struct reg__conn *cn, int *si)
{
    pthread_mutex_lock(&c->lock);
    int first = c->preferred;
    struct reg__tls *tls = reg__tls_ref(c->tls);
    bool tls_bare = c->tls_bare;
    pthread_mutex_unlock(&c->lock);
    char why[400] = "no server";
    int rc = REG_ECONNECT;
    for (int k = 0; k < c->nservers && rc != REG_ESHUTDOWN; k++) {
        *si = (first + k) % c->nservers;
        const struct reg_server *s = &c->servers[*si];
        bool use_tls = s->scheme == SCHEME_HTTPS || (s->scheme == SCHEME_BARE && tls_bare);
        rc = reg__conn_open(cn, s->host, s->port, use_tls ? tls : NULL,
                            reg__now_ms() + c->timeout_ms, why, sizeof(why));
        if (rc == 0)
            break;
    }
    reg__tls_release(tls); /* an open SSL holds its own reference to the context */
    if (rc == 0)
        return 0;
    return fail(c, rc == REG_ESHUTDOWN ? rc : REG_ECONNECT, "%s", why);
}

int reg__dechunk_feed(struct reg__dechunker *d, const char *in, size_t len,
                      int (*out)(void *arg, const char *buf, size_t len), void *arg,
                      uint64_t *used)
{
    for (size_t i = 0; i < len && d->state != REG__CH_DONE;) {
        char ch = in[i];
        switch (d->state) {
        case REG__CH_SIZE: {
            int v = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (v >= 0 && d->digits < 15) {
                d->left = d->left * 16 + (uint64_t)v;
                d->digits++;
            } else if (v < 0 && d->digits > 0 && (ch == ';' || ch == '\r' || ch == ' ')) {
                d->state = REG__CH_EXT;
            } else {
                return REG_EPROTO;
            }
            i++;
            break;
        }
        case REG__CH_EXT: /* extensions, up to the line's end */
            if (ch == '\n') {
                d->digits = 0;
                d->state = d->left ? REG__CH_DATA : REG__CH_DONE; /* trailers are not read */
            }
            i++;
            break;
        case REG__CH_DATA: {
            size_t n = len - i < d->left ? len - i : (size_t)d->left;
            int rc = out ? out(arg, in + i, n) : 0;
            if (rc != 0)
                return rc;
            *used += n;
            d->left -= n;
            i += n;
            if (d->left == 0)
                d->state = REG__CH_DATA_END;
            break;
        }
        case REG__CH_DATA_END: /* the CRLF after the data */
            if (ch == '\n')
                d->state = REG__CH_SIZE;
            else if (ch != '\r')
                return REG_EPROTO;
            i++;
            break;
        case REG__CH_DONE:
            break;
        }
    }
    return 0;
}

/* Stream a 2xx answer's body to t: first what came with the head (have:
 * havelen bytes, the head ending at head_end_), then the rest as it comes. */
static int stream_body(struct reg_client *c, struct reg__conn *cn, const char *head_end_,
                       const char *have, size_t havelen, const struct reg__transfer *t)
{
    char val[64];
    bool chunked = find_header(have, head_end_, "Transfer-Encoding", val, sizeof(val)) &&
                   strcasecmp(val, "chunked") == 0;
    uint64_t total = 0, done = 0;
    bool sized = !chunked && find_header(have, head_end_, "Content-Length", val, sizeof(val));
    if (sized)
        total = strtoull(val, NULL, 10);
    struct reg__dechunker d = {0};
    const char *p = head_end_ + 4;
    size_t n = havelen - (size_t)(p - have);
    char *buf = malloc(1 << 16);
    if (buf == NULL)
        return fail(c, REG_ENOMEM, "out of memory");
    char why[400] = "";
    int rc = 0;
    for (;;) {
        if (chunked) {
            rc = reg__dechunk_feed(&d, p, n, t->download, t->arg, &done);
            if (rc == REG_EPROTO) {
                rc = fail(c, rc, "%s: malformed chunked body", cn->peer);
                break;
            }
        } else {
            if (sized && n > total - done)
                n = (size_t)(total - done);
            rc = n && t->download ? t->download(t->arg, p, n) : 0;
            done += n;
        }
        if (rc != 0)
            break;
        if (t->progress && n)
            t->progress(t->arg, done, total);
        if ((chunked && d.state == REG__CH_DONE) || (sized && done == total))
            break;
        rc = reg__conn_recv(cn, buf, 1 << 16, &n, reg__now_ms() + c->timeout_ms, why,
                            sizeof(why));
        if (rc != 0)
            break;
        if (n == 0) { /* the end: of the body, unless it was framed */
            if (chunked || sized)
                rc = fail(c, REG_EPROTO, "%s: answer cut short after %llu bytes", cn->peer,
                          (unsigned long long)done);
            break;
        }
        p = buf;
    }
    free(buf);
    if (rc == REG_ETIMEDOUT || rc == REG_ESHUTDOWN || rc == REG_EIO)
        return fail(c, rc, "%s", why[0] ? why : reg_strerror(rc));
    return rc;
}

int reg__client_transfer(struct reg_client *c, const char *method, const char *path,
                         const struct reg__transfer *t, int *status)
{
    if (c == NULL || method == NULL || path == NULL || path[0] != '/' || t == NULL)
        return fail(c, REG_EINVAL, "invalid request");
    const char *sep = strchr(path, '?') ? "&" : "?";
    char tok[600];
    if (token_param(c, tok, sizeof(tok)) != 0)
        return fail(c, REG_EINVAL, "token too long");
    struct reg__conn cn;
    int si = 0, rc = connect_any(c, &cn, &si);
    if (rc != 0)
        return rc;
    const struct reg_server *s = &c->servers[si];
    char *req = NULL, why[400] = "";
    int n = asprintf(&req,
                     "%s %s%s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: libregistry/1\r\n"
                     "Accept: */*\r\nConnection: close\r\nContent-Length: %llu\r\n\r\n",
                     method, path, c->token ? sep : "", c->token ? tok : "", s->host, s->port,
                     (unsigned long long)(t->upload ? t->upload_len : 0));
    if (n < 0) {
        reg__conn_close(&cn);
        return fail(c, REG_ENOMEM, "out of memory");
    }
    rc = reg__conn_send(&cn, req, (size_t)n, reg__now_ms() + c->timeout_ms, why, sizeof(why));
    free(req);
    char *buf = rc == 0 ? malloc(1 << 16) : NULL;
    if (rc == 0 && buf == NULL)
        rc = REG_ENOMEM;
    for (uint64_t sent = 0; rc == 0 && t->upload && sent < t->upload_len;) {
        size_t got = 0, want = t->upload_len - sent < (1 << 16) ? (size_t)(t->upload_len - sent)
                                                                 : (1 << 16);
        rc = t->upload(t->arg, buf, want, &got);
        if (rc != 0) {
            free(buf);
            reg__conn_close(&cn);
            return rc; /* the callback's errmsg is its own */
        }
        if (got == 0 || got > want) {
            free(buf);
            reg__conn_close(&cn);
            return fail(c, REG_EIO, "the request body ended after %llu of %llu bytes",
                        (unsigned long long)sent, (unsigned long long)t->upload_len);
        }
        rc = reg__conn_send(&cn, buf, got, reg__now_ms() + c->timeout_ms, why, sizeof(why));
        sent += got;
        if (rc == 0 && t->progress)
            t->progress(t->arg, sent, t->upload_len);
    }
    /* The head of the answer (also after a failed send: a server that
     * refuses a body early says why before it closes). */
    size_t have = 0, cap = 1 << 16;
    const char *hend = NULL;
    int send_rc = rc;
    if (buf != NULL) {
        for (;;) {
            size_t got = 0;
            int r = reg__conn_recv(&cn, buf + have, cap - have - 1, &got,
                                   reg__now_ms() + c->timeout_ms, why, sizeof(why));
            if (r != 0 || got == 0) {
                rc = send_rc ? send_rc : r ? r : REG_EPROTO;
                break;
            }
            have += got;
            buf[have] = '\0';
            if ((hend = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
                rc = 0;
                break;
            }
            if (have + 1 >= cap) {
                rc = REG_EPROTO;
                break;
            }
        }
    }
    int code = rc == 0 ? reg__status_code(buf, have) : -1;
    if (rc == 0 && code < 0)
        rc = REG_EPROTO;
    if (rc != 0) {
        free(buf);
        reg__conn_close(&cn);
        if (rc == REG_EPROTO)
            return fail(c, rc, "%s: malformed HTTP answer", cn.peer);
        if (rc == REG_ENOMEM)
            return fail(c, rc, "out of memory");
        return fail(c, rc, "%s %s%s: %s", method, cn.peer, path,
                    why[0] ? why : reg_strerror(rc));
    }
    if (status)
        *status = code;
    pthread_mutex_lock(&c->lock);
    c->preferred = si;
    pthread_mutex_unlock(&c->lock);
    if (code < 200 || code > 299) { /* read the (short) reason, as reg_client_request */
        while (have + 1 < cap) {
            size_t got = 0;
            if (reg__conn_recv(&cn, buf + have, cap - have - 1, &got,
                               reg__now_ms() + c->timeout_ms, why, sizeof(why)) != 0 ||
                got == 0)
                break;
            have += got;
        }
        buf[have] = '\0';
        reg__conn_close(&cn);
        rc = reg__parse_response(c, buf, have, NULL, NULL, NULL, NULL);
        free(buf);
        return rc != 0 ? rc : fail(c, REG_ESERVER, "%d", code);
    }
    rc = stream_body(c, &cn, hend, buf, have, t);
    free(buf);
    reg__conn_close(&cn);
    return rc;
}

/* ---- discovery ---------------------------------------------------------- */

static char *dup_str(json_t *v)
{
    const char *s = json_string_value(v);
    return strdup(s ? s : "");
}

/* Whether an entry of /v1/health/service can be picked: an ID (not one
 * seen before on its node, as Consul keys instances by node and ID; it is
 * added to seen), a Port of 0-65535 and weights of
 * 0-INT32_MAX when given. A value past them was truncated into another
 * (a port of 2^40+80 became 80, a weight of 2^32+3 became 3). */
static bool usable_entry(json_t *entry, json_t *seen)
{
    json_t *svc = json_object_get(entry, "Service");
    const char *id = json_string_value(json_object_get(svc, "ID"));
    json_t *port = json_object_get(svc, "Port"), *w = json_object_get(svc, "Weights");
    const char *node = json_string_value(json_object_get(json_object_get(entry, "Node"), "Node"));
    char key[1024];
    if (id == NULL || *id == '\0' ||
        snprintf(key, sizeof(key), "%s\x1f%s", node ? node : "", id) >= (int)sizeof(key) ||
        json_object_get(seen, key) != NULL)
        return false;
    if (port != NULL && (!json_is_integer(port) || json_integer_value(port) < 0 ||
                         json_integer_value(port) > 65535))
        return false;
    const char *const keys[] = {"Passing", "Warning"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(w, keys[k]);
        if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                          json_integer_value(v) > INT32_MAX))
            return false;
    }
    return json_object_set_new(seen, key, json_true()) == 0;
}

static int fill_instance(json_t *entry, struct reg_instance *in)
{
    json_t *svc = json_object_get(entry, "Service"), *node = json_object_get(entry, "Node");
    const char *addr = json_string_value(json_object_get(svc, "Address"));
    if (addr == NULL || *addr == '\0')
        addr = json_string_value(json_object_get(node, "Address"));
    in->id = dup_str(json_object_get(svc, "ID"));
    in->service = dup_str(json_object_get(svc, "Service"));
    in->address = strdup(addr ? addr : "");
    in->port = (int)json_integer_value(json_object_get(svc, "Port"));
    const char *status = "passing";
    size_t i;
    json_t *chk;
    json_array_foreach(json_object_get(entry, "Checks"), i, chk)
    {
        const char *st = json_string_value(json_object_get(chk, "Status"));
        if (st && strcmp(st, "critical") == 0)
            status = "critical";
        else if (st && strcmp(st, "warning") == 0 && strcmp(status, "passing") == 0)
            status = "warning";
    }
    in->status = strdup(status);
    json_t *weights = json_object_get(svc, "Weights");
    json_t *wv = json_object_get(weights, strcmp(status, "warning") == 0 ? "Warning" : "Passing");
    in->weight = json_is_integer(wv) ? (int)json_integer_value(wv) : 1;
    json_t *tags = json_object_get(svc, "Tags");
    in->ntags = json_array_size(tags);
    in->tags = calloc(in->ntags + 1, sizeof(char *));
    json_t *t;
    json_array_foreach(tags, i, t) if (in->tags) in->tags[i] = dup_str(t);
    json_t *meta = json_object_get(svc, "Meta");
    in->nmeta = json_object_size(meta);
    in->meta = calloc(in->nmeta * 2 + 1, sizeof(char *));
    const char *k;
    json_t *v;
    i = 0;
    json_object_foreach(meta, k, v)
    {
        if (in->meta) {
            in->meta[2 * i] = strdup(k);
            in->meta[2 * i + 1] = dup_str(v);
        }
        i++;
    }
    if (!in->id || !in->service || !in->address || !in->status || !in->tags || !in->meta)
        return REG_ENOMEM;
    for (i = 0; i < in->ntags; i++)
        if (in->tags[i] == NULL)
            return REG_ENOMEM;
    for (i = 0; i < in->nmeta * 2; i++)
        if (in->meta[i] == NULL)
            return REG_ENOMEM;
    return 0;
}

void reg_instances_free(struct reg_instance *list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        struct reg_instance *in = &list[i];
        free(in->id);
        free(in->service);
        free(in->address);
        free(in->status);
        for (size_t j = 0; in->tags && j < in->ntags; j++)
            free(in->tags[j]);
        free(in->tags);
        for (size_t j = 0; in->meta && j < in->nmeta * 2; j++)
            free(in->meta[j]);
        free(in->meta);
    }
    free(list);
}

int reg__parse_instances(struct reg_client *c, const char *body, size_t len,
                         struct reg_instance **out, size_t *n)
{
    json_error_t jerr;
    json_t *arr = json_loadb(body, len, 0, &jerr);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return fail(c, REG_EPROTO, "unexpected answer from /v1/health/service: %s",
                    arr ? "not an array" : jerr.text);
    }
    size_t count = json_array_size(arr);
    struct reg_instance *list = calloc(count ? count : 1, sizeof(*list));
    if (list == NULL) {
        json_decref(arr);
        return fail(c, REG_ENOMEM, "out of memory");
    }
    json_t *seen = json_object(); /* IDs taken: a second entry of one is skipped */
    size_t kept = 0;
    for (size_t i = 0; i < count && seen; i++) {
        json_t *entry = json_array_get(arr, i);
        if (!usable_entry(entry, seen))
            continue; /* what a server should never send is never picked */
        if (fill_instance(entry, &list[kept++]) != 0) {
            json_decref(seen);
            seen = NULL;
            break;
        }
    }
    json_decref(arr);
    if (seen == NULL) {
        reg_instances_free(list, kept);
        return fail(c, REG_ENOMEM, "out of memory");
    }
    json_decref(seen);
    *out = list;
    *n = kept;
    return 0;
}

int reg_health_service(struct reg_client *c, const char *service, const char *tag,
                       bool passing_only, uint64_t wait_index, const char *wait,
                       struct reg_instance **out, size_t *n, uint64_t *index)
{
    char path[1536], enc[600], etag[600];
    if (c == NULL || service == NULL || out == NULL || n == NULL ||
        reg_url_encode(service, enc, sizeof(enc)) != 0 ||
        (tag && reg_url_encode(tag, etag, sizeof(etag)) != 0))
        return fail(c, REG_EINVAL, "invalid service or tag");
    int len = snprintf(path, sizeof(path), "/v1/health/service/%s?x=1", enc);
    if (passing_only)
        len += snprintf(path + len, sizeof(path) - (size_t)len, "&passing=1");
    if (tag)
        len += snprintf(path + len, sizeof(path) - (size_t)len, "&tag=%s", etag);
    if (wait_index) {
        /* a duration, or the query string would take whatever else it says */
        char ewait[64];
        uint64_t ms;
        if (wait == NULL)
            wait = "5m";
        if (reg__duration_parse(wait, strlen(wait), &ms) != 0 ||
            reg_url_encode(wait, ewait, sizeof(ewait)) != 0)
            return fail(c, REG_EINVAL, "invalid wait \"%.64s\": use a duration such as 30s",
                        wait);
        len += snprintf(path + len, sizeof(path) - (size_t)len, "&index=%llu&wait=%s",
                        (unsigned long long)wait_index, ewait);
    }
    char *body = NULL;
    size_t blen = 0;
    uint64_t idx = 0;
    int rc = reg_client_request(c, "GET", path, NULL, 0, NULL, &body, &blen, &idx);
    if (rc != 0)
        return rc;
    rc = reg__parse_instances(c, body, blen, out, n);
    free(body);
    if (rc == 0 && index)
        *index = idx;
    return rc;
}

int reg_register_json(struct reg_client *c, const char *json)
{
    if (json == NULL)
        return fail(c, REG_EINVAL, "no registration body");
    return reg_client_request(c, "PUT", "/v1/agent/service/register", json, strlen(json), NULL,
                              NULL, NULL, NULL);
}

int reg_deregister(struct reg_client *c, const char *service_id)
{
    char path[700], enc[600];
    if (service_id == NULL || reg_url_encode(service_id, enc, sizeof(enc)) != 0)
        return fail(c, REG_EINVAL, "invalid service id");
    snprintf(path, sizeof(path), "/v1/agent/service/deregister/%s", enc);
    return reg_client_request(c, "PUT", path, NULL, 0, NULL, NULL, NULL, NULL);
}
