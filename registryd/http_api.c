/*
 * http_api.c — the HTTP front end: listener, route table dispatch, query
 * parsing, the one way to send JSON and the one way to send an error, and
 * blocking queries. Handlers live in http_agent.c and http_catalog.c.
 *
 * Every callback ends in exactly one reply. Every response carries
 * X-Consul-Index, X-Consul-KnownLeader and X-Consul-LastContact, as Consul's
 * clients expect even on errors.
 */
#include "hash.h"
#include "http_api.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "cluster.h"
#include "common.h"
#include "config.h"
#include "cluster_link.h"
#include "http_guard.h"
#include "http_internal.h"
#include "http_render.h"
#include "duration.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "registry/error.h"
#include "tls.h"
#include "watch.h"

#define HTTP_BACKLOG 4096
#define HTTP_DEFAULT_WAIT_MS (5 * 60 * 1000)
#define HTTP_MAX_WAIT_MS (10 * 60 * 1000)
#define FORWARDED_WAIT_MAX_MS ((LINK_TIMEOUT_S - 10) * 1000)
#define HTTP_IDLE_TIMEOUT_S 120

/* ---- small helpers ----------------------------------------------------- */

int http_fail(struct http_req *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
    va_end(ap);
    r->status = status;
    return -1;
}

const char *http_param(const struct http_req *r, const char *key)
{
    for (int i = r->n_params - 1; i >= 0; i--)
        if (strcmp(r->params[i].key, key) == 0)
            return r->params[i].value;
    return NULL;
}

bool http_has_param(const struct http_req *r, const char *key)
{
    for (int i = 0; i < r->n_params; i++)
        if (strcmp(r->params[i].key, key) == 0)
            return true;
    return false;
}

bool http_flag(const struct http_req *r, const char *key)
{
    return http_has_param(r, key);
}

int http_passing(const struct http_req *r, bool *out)
{
    const char *v = http_param(r, "passing");
    *out = http_has_param(r, "passing");
    return v == NULL || *v == '\0' ? 0 : http_parse_bool(v, out);
}

/* "check_id" and "CheckID" name the same field: Consul decodes both
 * spellings (snake_case from HCL-minded clients). Compared without case and
 * without underscores. */
static bool same_field(const char *a, const char *b)
{
    for (;;) {
        while (*a == '_')
            a++;
        while (*b == '_')
            b++;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        if (*a == '\0')
            return true;
        a++;
        b++;
    }
}

int http_parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(s, t[i]) == 0 || strcmp(s, f[i]) == 0) {
            *out = strcmp(s, t[i]) == 0;
            return 0;
        }
    }
    return REG_EINVAL;
}

json_t *json_get_ci(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (v != NULL || !json_is_object(obj))
        return v;
    const char *k;
    json_object_foreach(obj, k, v)
    {
        if (same_field(k, key))
            return v;
    }
    return NULL;
}

/* ---- renderers (Consul's JSON shapes) ----------------------------------- */

/* A node's tagged addresses: those it was registered with (strings only),
 * else what Consul's agent publishes for its address: lan and wan, and
 * lan_ipv4/wan_ipv4 or lan_ipv6/wan_ipv6 by its family. */
static json_t *tagged_addresses(const char *addr, json_t *given)
{
    json_t *o = json_object(), *v;
    const char *k;
    if (json_is_object(given) && json_object_size(given) > 0) {
        json_object_foreach(given, k, v) if (json_is_string(v)) json_object_set(o, k, v);
        return o;
    }
    unsigned char buf[16];
    bool v4 = inet_pton(AF_INET, addr, buf) == 1, v6 = !v4 && inet_pton(AF_INET6, addr, buf) == 1;
    json_object_set_new(o, "lan", json_string(addr));
    if (v4 || v6)
        json_object_set_new(o, v4 ? "lan_ipv4" : "lan_ipv6", json_string(addr));
    json_object_set_new(o, "wan", json_string(addr));
    if (v4 || v6)
        json_object_set_new(o, v4 ? "wan_ipv4" : "wan_ipv6", json_string(addr));
    return o;
}

void http_node_id(const char *node, char *out, size_t len)
{
    /* Two independent hashes of the name: stable across servers and
     * restarts, as a node ID must be. */
    unsigned long long h1 = hash_fnv1a64(node), h2 = HASH_FNV64_PRIME;
    for (const char *p = node; *p; p++)
        h2 = (h2 ^ (unsigned char)*p) * 6364136223846793005ULL + 1;
    snprintf(out, len, "%08llx-%04llx-%04llx-%04llx-%012llx", h1 >> 32, (h1 >> 16) & 0xffff,
             h1 & 0xffff, h2 >> 48, h2 & 0xffffffffffffULL);
}

void http_server_node(struct http_server *srv, struct store_read *rd, const char *raft_addr,
                      char *node, size_t len, char *addr, size_t alen, json_t **meta)
{
    struct cluster_status st;
    cluster_get_status(srv->opt.cluster, &st);
    *node = '\0';
    if (addr)
        *addr = '\0';
    if (meta)
        *meta = NULL;
    if (strcmp(raft_addr, st.self_addr) == 0) {
        snprintf(node, len, "%s", srv->opt.node);
        if (addr)
            snprintf(addr, alen, "%s", srv->opt.node_addr);
        if (meta)
            *meta = json_incref(srv->node_meta);
        return;
    }
    json_t *rec = NULL;
    if (rd == NULL || store_get_server(rd, raft_addr, &rec) != 0)
        return;
    /* checked when announced (do_announce); a record read back is checked
     * again for what is used of it */
    const char *n = json_string_value(json_object_get(rec, "Node"));
    const char *a = json_string_value(json_object_get(rec, "Address"));
    if (n != NULL && a != NULL && *n && *a && strlen(n) < len && (!addr || strlen(a) < alen)) {
        snprintf(node, len, "%s", n);
        if (addr)
            snprintf(addr, alen, "%s", a);
        json_t *m = json_object_get(rec, "NodeMeta"); /* {string: string} (record.c) */
        if (meta && json_is_object(m))
            *meta = json_incref(m);
    }
    json_decref(rec);
}

json_t *render_node(struct http_server *srv, json_t *inst)
{
    const char *node = json_string_value(json_object_get(inst, "Node"));
    const char *addr = json_string_value(json_object_get(inst, "NodeAddress"));
    char id[40];
    if (node == NULL)
        node = srv->opt.node;
    if (addr == NULL)
        addr = srv->opt.node_addr;
    /* This node's meta is its configuration; another node's came with the
     * instance registered there. */
    json_t *meta = strcmp(node, srv->opt.node) == 0 ? srv->node_meta
                                                    : json_object_get(inst, "NodeMeta");
    http_node_id(node, id, sizeof(id));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:I}", "ID", id, "Node",
                     node, "Address", addr, "Datacenter", srv->opt.datacenter, "TaggedAddresses",
                     tagged_addresses(addr, json_object_get(inst, "NodeTaggedAddresses")), "Meta",
                     json_is_object(meta) ? json_deep_copy(meta) : json_object(), "CreateIndex",
                     (json_int_t)1, "ModifyIndex", (json_int_t)1);
}

json_t *render_agent_service(struct http_server *srv, json_t *inst)
{
    json_t *o = json_object();
    static const char *const keys[] = {"ID",      "Service",           "Tags",
                                       "Meta",    "Port",              "Address",
                                       "Weights", "EnableTagOverride", "TaggedAddresses"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(inst, keys[i]);
        if (v != NULL) /* TaggedAddresses only when set (Consul's omitempty) */
            json_object_set(o, keys[i], v);
    }
    json_object_set_new(o, "Datacenter", json_string(srv->opt.datacenter));
    json_object_set(o, "CreateIndex", json_object_get(inst, "CreateIndex"));
    json_object_set(o, "ModifyIndex", json_object_get(inst, "ModifyIndex"));
    return o;
}

json_t *render_check(json_t *check, json_t *inst)
{
    json_t *o = json_deep_copy(check);
    /* Consul's HealthCheck repeats the definition's Interval and Timeout
     * ("" when unset; a TTL check has neither) and has ExposedPort */
    json_t *def = json_object_get(check, "Definition");
    json_t *iv = json_object_get(def, "Interval"), *to = json_object_get(def, "Timeout");
    bool probed = json_is_string(iv);
    json_object_set_new(o, "Interval", probed ? json_copy(iv) : json_string(""));
    json_object_set_new(o, "Timeout", probed && json_is_string(to) ? json_copy(to) : json_string(""));
    json_object_set_new(o, "ExposedPort", json_integer(0));
    /* a node's check (ServiceID "") has none, whichever entry shows it */
    const char *sid = json_string_value(json_object_get(check, "ServiceID"));
    json_object_set(o, "ServiceTags", inst && sid && *sid ? json_object_get(inst, "Tags") : NULL);
    if (json_object_get(o, "ServiceTags") == NULL || json_is_null(json_object_get(o, "ServiceTags")))
        json_object_set_new(o, "ServiceTags", json_array());
    return o;
}

json_t *render_serf_check(struct http_server *srv, json_t *inst)
{
    const char *node = inst ? json_string_value(json_object_get(inst, "Node")) : NULL;
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[], s:s, s:s, s:s, s:i, s:{}, "
                     "s:I, s:I}",
                     "Node", node ? node : srv->opt.node, "CheckID", "serfHealth", "Name",
                     "Serf Health Status", "Status", "passing", "Notes", "", "Output",
                     "Agent alive and reachable", "ServiceID", "", "ServiceName", "",
                     "ServiceTags", "Type", "", "Interval", "", "Timeout", "", "ExposedPort", 0,
                     "Definition", "CreateIndex", (json_int_t)1, "ModifyIndex", (json_int_t)1);
}

/* ---- replies ------------------------------------------------------------ */

/* v in decimal into buf (at least 21 bytes); returns buf. What "%" PRIu64
 * prints, without printf's machinery on every reply. */
static const char *u64_text(uint64_t v, char *buf)
{
    char *p = buf + 20;
    *p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

static bool consistent_read(struct http_req *r);
static bool leader_read(struct http_req *r);

/* The Date header, as evhttp writes it (RFC 1123), formatted once a second
 * per thread: evhttp formats it for every reply that has none (a tenth of
 * the CPU a small cached answer costs). */
static const char *date_now(void)
{
    static _Thread_local time_t shown = -1;
    static _Thread_local char text[64];
    time_t now = time(NULL);
    if (now != shown) {
        struct tm tm;
        if (gmtime_r(&now, &tm) == NULL ||
            strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
            return NULL;
        shown = now;
    }
    return text;
}

/* The reason phrase of a status line (RFC 9110's); a code without one
 * here gets its class's name. */
static const char *status_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    }
    return code < 200   ? "Informational" /* the class's name, as libevent's */
           : code < 300 ? "Success"
           : code < 400 ? "Redirection"
           : code < 500 ? "Client Error"
                        : "Server Error";
}

/*
 * The status line's reason with the Consul headers and the content type
 * after it, rendered in one go into buf. evhttp writes its reason phrase as
 * given ("HTTP/1.1 %d %s\r\n"), so these lines reach the wire as headers
 * of their own while evhttp's header list holds only the Date and the
 * Content-Length it adds. Each header on that list costs a third of a small
 * cached answer's CPU (three allocations, a printf, three frees; callgrind:
 * ~2,800 instructions each); this costs one copy. Every value here is ours
 * (numbers, fixed words) but the relayed content type, which is dropped if
 * it would break a line. A test reads the raw head (test_compat's
 * HeadTest): a libevent that checked reasons would fail it.
 */
#define HEAD_MAX 512

/* s appended at p, as much as fits before end */
static char *head_put(char *p, char *end, const char *s)
{
    size_t n = strlen(s);
    if (n > (size_t)(end - p))
        n = (size_t)(end - p);
    memcpy(p, s, n);
    return p + n;
}

static const char *consul_head(struct http_req *r, int code, uint64_t index,
                               const char *content_type, char *buf)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    struct cluster_status st;
    char num[24];
    const char *date = date_now();
    if (date != NULL)
        evhttp_add_header(h, "Date", date);
    cluster_get_status(r->srv->opt.cluster, &st);
    /* what Consul's setMeta says of a catalog or health read: a default
     * read is the leader's (a follower relays it: leader_read), ?stale
     * this server's copy */
    const char *consistency = NULL;
    const struct http_route *rt = r->route;
    if (rt && rt->read && strncmp(rt->path, "/v1/agent/", 10) != 0 &&
        strncmp(rt->path, "/v1/status/", 11) != 0)
        consistency = consistent_read(r)                          ? "consistent"
                      : (st.is_leader || leader_read(r)) && !r->stale ? "leader"
                                                                  : "stale";
    if (content_type != NULL && (strpbrk(content_type, "\r\n") != NULL ||
                                 strlen(content_type) > HEAD_MAX / 4))
        content_type = NULL;
    /* appended by hand: snprintf took 2,800 instructions here */
    char *p = buf, *end = buf + HEAD_MAX - 1;
    p = head_put(p, end, status_phrase(code));
    p = head_put(p, end, "\r\nX-Consul-Index: ");
    p = head_put(p, end, u64_text(index ? index : 1, num));
    p = head_put(p, end, st.known_leader ? "\r\nX-Consul-KnownLeader: true"
                                         : "\r\nX-Consul-KnownLeader: false");
    p = head_put(p, end, "\r\nX-Consul-LastContact: ");
    p = head_put(p, end, u64_text(st.last_contact_ms, num));
    p = head_put(p, end, "\r\nX-Consul-Default-ACL-Policy: ");
    p = head_put(p, end, acl_default_policy_name());
    if (consistency != NULL) {
        p = head_put(p, end, "\r\nX-Consul-Effective-Consistency: ");
        p = head_put(p, end, consistency);
    }
    if (content_type != NULL) {
        p = head_put(p, end, "\r\nContent-Type: ");
        p = head_put(p, end, content_type);
    }
    *p = '\0';
    return buf;
}

/*
 * The one way an answer leaves: status, the Consul headers, a content type
 * (NULL: none) and a body (taken; NULL: empty). Every other reply helper
 * below ends here.
 */

/*
 * evhttp queues a reply and writes it once the loop sees the socket
 * writable: per request, one epoll_ctl to watch for that and one to stop.
 * A plain connection's reply is written here at once instead (one write of
 * up to WRITE_NOW_MAX). When that drains it, the write watch is stopped
 * before the loop ever asked the kernel for it (the front-end loops batch
 * their epoll changes, and an add then a delete in one turn is none:
 * common_front_end_base_new), and the bufferevent's write callback
 * (evhttp's "reply sent": the request is freed, the connection reads the
 * next one) runs deferred. The rest of a bigger answer is written by
 * evhttp as before, in turns shared with the other connections; TLS goes
 * through its SSL layer, never here. (A socket bufferevent keeps its
 * output's front frozen, for itself to drain, until evhttp gives it its
 * descriptor; should a libevent keep it frozen, the write fails and every
 * reply simply takes evhttp's way.)
 */
#define WRITE_NOW_MAX 16384 /* libevent's own most per write (MAX_SINGLE_WRITE_DEFAULT) */

static void write_now(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    if (bev == NULL || bufferevent_openssl_get_ssl(bev) != NULL ||
        !(bufferevent_get_enabled(bev) & EV_WRITE))
        return;
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    if (fd < 0)
        return;
    /* one write of at most what libevent itself writes per turn: a big
     * answer goes on in evhttp's turns, shared fairly with the others */
    if (evbuffer_write_atmost(out, fd, WRITE_NOW_MAX) > 0 && evbuffer_get_length(out) == 0) {
        /* All sent: the write watch goes now, cancelling its add in the
         * loop's batch. Left to the deferred callback, it reached the
         * kernel whenever more than libevent's 32 deferred callbacks were
         * queued in one turn (a fan-out to parked queries): an epoll_ctl
         * to add it, one to remove it, and a turn for the socket reported
         * writable. (The trigger runs the write callback whatever is
         * enabled.) */
        bufferevent_disable(bev, EV_WRITE);
        bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
    }
}

/* ?pretty, as Consul's: the JSON indented by four spaces, with a newline
 * at the end. An answer above PRETTY_MAX stays compact (a program reads
 * one that size, and parsing it again would hold the loop), as do the
 * streamed ones. */
#define PRETTY_MAX ((size_t)8 << 20)

static void prettify(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    if (len == 0 || len > PRETTY_MAX)
        return;
    const char *text = (const char *)evbuffer_pullup(b, -1);
    json_t *j = text ? json_loadb(text, len, JSON_DECODE_ANY, NULL) : NULL;
    char *out = j ? json_dumps(j, JSON_INDENT(4) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15))
                  : NULL;
    json_decref(j);
    if (out == NULL)
        return; /* not JSON jansson reads (an integer above 2^63): as it is */
    size_t n = strlen(out);
    if (evbuffer_drain(b, len) == 0 && evbuffer_add(b, out, n) == 0)
        evbuffer_add(b, "\n", 1);
    free(out);
}

static void reply(struct http_req *r, int code, const char *content_type, struct evbuffer *body,
                  uint64_t index)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    char head[HEAD_MAX];
    if (r->pretty && content_type && strncmp(content_type, "application/json", 16) == 0)
        prettify(body ? body : evhttp_request_get_output_buffer(r->req));
    if (code != 200)
        r->status = code; /* for the metrics */
    http_acl_audit(r, common_method_name(evhttp_request_get_command(r->req)), code);
    evhttp_send_reply(r->req, code, consul_head(r, code, index, content_type, head), body);
    if (evcon != NULL)
        write_now(evcon);
    if (body)
        evbuffer_free(body);
}

/* An error: r->status (500 if unset) and r->errmsg as one line of text. */
static void reply_error(struct http_req *r, uint64_t index)
{
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add_printf(b, "%s\n", r->errmsg[0] ? r->errmsg : "error");
    reply(r, r->status ? r->status : 500, "text/plain; charset=utf-8", b, index);
}

static void free_text(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* 200 with JSON text: taken (freed with the buffer) when `take`, else copied.
 * The body goes straight into the request's output buffer (what
 * evhttp_send_reply would move it to): no evbuffer of our own per reply. */
static void reply_text_json(struct http_req *r, char *text, size_t len, bool take, uint64_t index)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(r->req);
    if ((take ? evbuffer_add_reference(b, text, len, free_text, NULL)
              : evbuffer_add(b, text, len)) != 0) {
        if (take)
            free(text);
        http_fail(r, 500, "out of memory");
        reply_error(r, index);
        return;
    }
    reply(r, 200, "application/json", NULL, index);
}

static void release_shared(const void *data, size_t len, void *ref)
{
    (void)data;
    (void)len;
    http_cache_release(ref);
}

/* 200 with a cached answer, sent from the cache's own bytes (no copy of a
 * big answer holding the loop); ref is released once it is sent. */
static void reply_shared_json(struct http_req *r, const char *text, size_t len, void *ref,
                              uint64_t index)
{
    struct evbuffer *b = evhttp_request_get_output_buffer(r->req);
    if (evbuffer_add_reference(b, text, len, release_shared, ref) != 0) {
        http_cache_release(ref);
        http_fail(r, 500, "out of memory");
        reply_error(r, index);
        return;
    }
    reply(r, 200, "application/json", NULL, index);
}

static void reply_json(struct http_req *r, json_t *body, uint64_t index)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text == NULL) {
        http_fail(r, 500, "out of memory");
        reply_error(r, index);
        return;
    }
    reply_text_json(r, text, strlen(text), true, index);
}

/* A request context: from the server's pool, or new. Zeroed up to
 * `params` (see struct http_req); its arena is empty. NULL: no memory. */
static struct http_req *req_new(struct http_server *srv)
{
    struct http_req *r = srv->req_pool;
    if (r != NULL) {
        srv->req_pool = r->next_free;
        srv->n_req_pool--;
    } else if ((r = malloc(sizeof(*r))) == NULL) {
        return NULL;
    }
    memset(r, 0, offsetof(struct http_req, params));
    r->errmsg[0] = '\0';
    r->arena_cap = sizeof(r->arena);
    return r;
}

/* Memory of a decoded parameter or arg: r's arena, or the heap. */
static bool in_arena(const struct http_req *r, const char *p)
{
    return p >= r->arena && p < r->arena + sizeof(r->arena);
}

static void arena_free(const struct http_req *r, char *p)
{
    if (!in_arena(r, p))
        free(p);
}

static void forward_timer_free(struct http_req *r);

static void req_free(struct http_req *r)
{
    metrics_http(r->route ? r->route->method : "OTHER", r->route ? r->route->path : "unmatched",
                 r->status ? r->status : 200, mono_seconds() - r->started);
    for (int i = 0; i < r->n_params; i++) {
        arena_free(r, r->params[i].key);
        arena_free(r, r->params[i].value);
    }
    arena_free(r, r->arg);
    forward_timer_free(r);
    http_acl_req_free(r);
    if (r->inner_uri)
        evhttp_uri_free(r->inner_uri);
    if (r->body_file.fd >= 0)
        close(r->body_file.fd);
    struct http_server *srv = r->srv;
    if (srv->n_req_pool < HTTP_REQ_POOL) {
        r->next_free = srv->req_pool;
        srv->req_pool = r;
        srv->n_req_pool++;
    } else {
        free(r);
    }
}

/* ---- request body ------------------------------------------------------- */

int http_body_json(struct http_req *r, json_t **out)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    if (len > r->srv->opt.max_body_size)
        return http_fail(r, 413, "Request body too large: %zu bytes, limit is %zu", len,
                         r->srv->opt.max_body_size);
    if (len == 0)
        return http_fail(r, 400, "Request decode failed: empty body");
    const char *data = (const char *)evbuffer_pullup(in, -1);
    json_error_t jerr;
    json_t *body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (body == NULL)
        return http_fail(r, 400, "Request decode failed: %s (line %d, column %d)", jerr.text,
                         jerr.line, jerr.column);
    if (!json_is_object(body)) {
        json_decref(body);
        return http_fail(r, 400, "Request decode failed: expected a JSON object");
    }
    *out = body;
    return 0;
}

/* ---- query string ------------------------------------------------------- */

/* Decoded text from a path or query: no NUL (it would cut a name short
 * further down) and no other control character. */
static bool clean_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/*
 * s[0..n) URL-decoded, NUL-terminated, in r's arena while it has room (else
 * malloc'ed; NULL: no memory), its length in *outn. Decodes as
 * evhttp_uridecode does: %XX with two hex digits is the byte (any other
 * '%' stays), and '+' is a space when plus.
 */
static char *decode_text(struct http_req *r, const char *s, size_t n, bool plus, size_t *outn)
{
    char *out;
    if (r->arena_cap - r->arena_used >= n + 1) {
        out = r->arena + r->arena_used;
    } else if ((out = malloc(n + 1)) == NULL) {
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int hi, lo;
        if (c == '+' && plus) {
            c = ' ';
        } else if (c == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
                   (lo = hex_digit(s[i + 2])) >= 0) {
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        out[j++] = c;
    }
    out[j] = '\0';
    if (in_arena(r, out))
        r->arena_used += j + 1;
    *outn = j;
    return out;
}

int http_parse_query(struct http_req *r, const char *q)
{
    if (q == NULL)
        return 0;
    const char *p = q;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            if (r->n_params == HTTP_MAX_PARAMS)
                return http_fail(r, 400, "Too many query parameters (limit %d)", HTTP_MAX_PARAMS);
            const char *eq = memchr(p, '=', n);
            size_t klen = eq ? (size_t)(eq - p) : n;
            struct http_param *hp = &r->params[r->n_params];
            size_t kn = 0, vn = 0;
            hp->key = decode_text(r, p, klen, true, &kn);
            hp->value = eq ? decode_text(r, eq + 1, n - klen - 1, true, &vn) : NULL;
            r->n_params++;
            if (hp->key == NULL || (eq && hp->value == NULL))
                return http_fail(r, 400, "Invalid query string");
            if (!clean_text(hp->key, kn) || (hp->value && !clean_text(hp->value, vn)))
                return http_fail(r, 400,
                                 "Invalid query string: NUL or control character in a parameter");
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* A cheap PRNG for the wait jitter (xorshift64*), seeded once per thread
 * from the kernel: getrandom() on every blocking query cost a syscall. */
static uint32_t jitter_random(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        if (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state) || state == 0)
            state = (uint64_t)(mono_seconds() * 1e9) | 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 2685821657736338717ULL) >> 32);
}

/* s whole as a decimal uint64_t (digits only, no sign or space). */
static bool u64_parse(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)*s) || *end != '\0' || errno != 0)
        return false;
    *v = x;
    return true;
}

int http_parse_blocking(struct http_req *r)
{
    /* Empty values are as if absent (Consul's parseWait): a watch loop's
     * first call often has no index yet; a wait of 0 is the default. */
    const char *idx = http_param(r, "index");
    if (idx != NULL && *idx == '\0')
        idx = NULL;
    if (idx != NULL && !u64_parse(idx, &r->min_index))
        return http_fail(r, 400, "Invalid index: \"%s\" is not an unsigned integer", idx);
    uint64_t wait = HTTP_DEFAULT_WAIT_MS;
    const char *w = http_param(r, "wait");
    if (w != NULL && *w != '\0' && duration_parse(w, &wait) != 0)
        return http_fail(r, 400, "Invalid wait time: \"%s\" (use e.g. 10s, 5m, 120000ms)", w);
    if (wait == 0) /* 0 is the default (Consul); under a millisecond is not 0 */
        wait = w != NULL && strpbrk(w, "123456789") != NULL ? 1 : HTTP_DEFAULT_WAIT_MS;
    if (wait > HTTP_MAX_WAIT_MS)
        wait = HTTP_MAX_WAIT_MS;
    /* Jitter as Consul: up to wait/16 more, so parked clients spread out;
     * only a query that may block (?index=, or ?hash= on
     * /v1/agent/service/:id) waits at all. */
    if (wait >= 16 && (idx != NULL || http_has_param(r, "hash")))
        wait += jitter_random() % (wait / 16);
    r->wait_ms = wait;
    return 0;
}

/* ---- dispatch ----------------------------------------------------------- */

/* What r's blocking query watches (the route's scope, narrowed by r). */
static enum watch_on watched(struct http_req *r)
{
    switch (r->route->watch) {
    case WATCH_SERVICE:
        return r->arg ? WATCH_ON_NAME : WATCH_ON_ALL;
    case WATCH_SERVICES:
        /* Consul's services table: the names and their tags, and every
         * instance's registration, update and removal (which Consul's index
         * follows, and clients watching for new instances rely on); a
         * check's status leaves it as it was. A filter, node meta or ACLs
         * make the answer depend on more. */
        return http_has_param(r, "filter") || http_has_param(r, "node-meta") || acl_enabled()
                   ? WATCH_ON_ALL
                   : WATCH_ON_NAMES;
    default:
        return WATCH_ON_ALL;
    }
}

static uint64_t watched_index(struct http_req *r, struct store_read *rd)
{
    switch (watched(r)) {
    case WATCH_ON_NAME:
        return store_name_index(rd, r->arg);
    case WATCH_ON_NAMES:
        return store_catalog_services_index(rd);
    default:
        return store_index(rd);
    }
}

/* Parameters that do not shape a read's answer (left out of its cache key). */
static bool key_ignored(const char *k)
{
    switch (k[0]) {
    case 'i':
        return strcmp(k, "index") == 0;
    case 'w':
        return strcmp(k, "wait") == 0;
    case 't':
        return strcmp(k, "token") == 0;
    case 's':
        return strcmp(k, "stale") == 0;
    case 'c':
        return strcmp(k, "consistent") == 0;
    case 'm':
        return strcmp(k, "max_stale") == 0;
    default:
        return false;
    }
}

/* s with '%', '&' and '=' written as %25, %26, %3D into o (when not NULL):
 * the bytes it takes. Parameters are decoded, so that without this
 * "?tag=a%26dc%3Dx" and "?tag=a&dc=x" would share one cache key, and one
 * client could put a wrong answer in front of another. */
static size_t key_escape(char *o, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        bool special = *s == '%' || *s == '&' || *s == '=';
        if (o != NULL) {
            if (special) {
                o[n] = '%';
                o[n + 1] = "0123456789ABCDEF"[(unsigned char)*s >> 4];
                o[n + 2] = "0123456789ABCDEF"[*s & 15];
            } else {
                o[n] = *s;
            }
        }
        n += special ? 3 : 1;
    }
    return n;
}

/* Answers that list the cluster's servers as nodes (http_catalog.c's
 * known_nodes): they change with the raft configuration as well as with
 * the store, and the configuration has no store index. */
static bool answer_names_servers(const struct http_req *r)
{
    const char *p = r->route->path;
    return strcmp(p, "/v1/catalog/nodes") == 0 || strcmp(p, "/v1/catalog/node/") == 0 ||
           strcmp(p, "/v1/health/node/") == 0;
}

/* The servers of this server's copy of the configuration, as one number. */
static uint64_t servers_fingerprint(struct http_server *srv)
{
    struct cluster_status st;
    cluster_get_status(srv->opt.cluster, &st);
    uint64_t h = hash_fnv1a64(st.self_addr);
    for (int i = 0; i < st.n_servers; i++)
        h = hash_mix64(h ^ hash_fnv1a64(st.servers[i].addr));
    return h;
}

/* The cache key: path plus every parameter that shapes the answer
 * ("&k=v" each, in the order given), all escaped, and for an answer that
 * names the servers "&#servers=" and their fingerprint (a server that joins
 * is listed once its announcement is stored and this copy of the
 * configuration has it: the answer at that announcement's index, rendered
 * in between, must not be served for good), into buf when it fits in len
 * bytes, else malloc'ed. NULL: no memory. */
#define SERVERS_KEY_LEN (sizeof("&#servers=") - 1 + 16)
static char *cache_key(struct http_req *r, char *buf, size_t len)
{
    bool servers = answer_names_servers(r);
    size_t n = key_escape(NULL, r->path) + 1 + (servers ? SERVERS_KEY_LEN : 0);
    for (int i = 0; i < r->n_params; i++)
        if (!key_ignored(r->params[i].key))
            n += 2 + key_escape(NULL, r->params[i].key) +
                 (r->params[i].value ? key_escape(NULL, r->params[i].value) : 0);
    char *key = n <= len ? buf : malloc(n);
    if (key == NULL)
        return NULL;
    char *o = key + key_escape(key, r->path); /* a decoded path may hold them too */
    for (int i = 0; i < r->n_params; i++) {
        if (key_ignored(r->params[i].key))
            continue;
        *o++ = '&';
        o += key_escape(o, r->params[i].key);
        *o++ = '=';
        if (r->params[i].value)
            o += key_escape(o, r->params[i].value);
    }
    if (servers) /* a tail of fixed length: no parameters can pass for it */
        o += snprintf(o, SERVERS_KEY_LEN + 1, "&#servers=%016" PRIx64,
                      servers_fingerprint(r->srv));
    *o = '\0';
    return key;
}

/* Run a read handler (or reuse its cached answer) and reply, in read
 * transaction rd (taken) or, when NULL, in one of its own. */
/* A read transaction for srv's loop: its spare one renewed (a cached
 * answer needs the index alone: a reader slot and an allocation less per
 * request), else a new one. */
static int read_begin(struct http_server *srv, struct store_read **rd)
{
    struct store_read *spare = srv->spare_read;
    if (spare != NULL) {
        srv->spare_read = NULL;
        if (store_read_renew(spare) == 0) {
            *rd = spare;
            return 0;
        }
        store_read_end(spare);
    }
    return store_read_begin(srv->opt.store, rd);
}

/* Done with rd: kept reset as the spare, or ended. */
static void read_end(struct http_server *srv, struct store_read *rd)
{
    if (rd != NULL && srv->spare_read == NULL) {
        store_read_reset(rd);
        srv->spare_read = rd;
    } else {
        store_read_end(rd);
    }
}

static void run_read_in(struct http_req *r, struct store_read *rd)
{
    json_t *out = NULL;
    uint64_t index = 0;
    bool cacheable = r->route->watch != WATCH_NONE && !http_acl_bypass_cache(r);
    char keybuf[256];
    char *key = cacheable ? cache_key(r, keybuf, sizeof(keybuf)) : NULL;
    const char *cached;
    size_t cached_len;

    if (rd == NULL && read_begin(r->srv, &rd) != 0) {
        http_fail(r, 500, "store unavailable");
        goto reply;
    }
    index = watched_index(r, rd);
    /* /v1/catalog/services' text changes only with the names and their
     * tags; its index (Consul's services table) moves with every instance:
     * the text is kept across those moves, answered with the index now */
    r->cache_version = watched(r) == WATCH_ON_NAMES ? store_services_index(rd) : index;
    void *ref;
    if (key && http_cache_get_shared(r->srv->cache, key, r->cache_version, &cached, &cached_len,
                                     &ref)) {
        read_end(r->srv, rd);
        reply_shared_json(r, cached, cached_len, ref, index);
        if (key != keybuf)
            free(key);
        req_free(r);
        return;
    }
    if (key == keybuf)
        key = strdup(keybuf); /* the cache and render take it (NULL: not cached) */
    if (http_render_start(r, rd, key, index))
        return; /* http_render.c answers, now or piece by piece */
    r->route->read(r, rd, &out);
    read_end(r->srv, rd);
    if (out != NULL && r->status == 0) {
        http_acl_filter(r, &out);
        http_filter_answer(r, out);
    }
    if (out != NULL && r->status == 0 && key) {
        char *text = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text != NULL) {
            size_t len = strlen(text);
            reply_text_json(r, text, len, false, index);
            http_cache_put(r->srv->cache, key, r->cache_version, text, len); /* takes both */
            json_decref(out);
            req_free(r);
            return;
        }
    }
reply:
    if (key != keybuf)
        free(key);
    if (out != NULL && r->status == 0)
        reply_json(r, out, index);
    else
        reply_error(r, index);
    json_decref(out);
    req_free(r);
}

/* Park r on what it watches for at most wait_ms; false: not parked (it
 * runs now). */
static bool park(struct http_req *r, uint64_t wait_ms);
static void forward_to_leader(struct http_req *r);

/* A read whose wait (if any) is over: answered here from rd (NULL: a read
 * of its own), or, when it goes to the leader (must_forward), ended and
 * forwarded; once its wait was spent here (r->waited), as one the leader
 * answers at once. */
static void answer_read(struct http_req *r, struct store_read *rd)
{
    if (r->forward_read) {
        if (rd != NULL)
            read_end(r->srv, rd);
        if (r->waited)
            r->min_index = 0; /* should this server lead by then, it answers at once too */
        forward_to_leader(r);
        return;
    }
    run_read_in(r, rd);
}

/* A parked query's watch fired: as Consul's blocking queries, answer once
 * the watched index has passed the one asked for, else park again for what
 * is left of the wait (a node-wide change wakes every query; a query parked
 * at an index it read after the change was applied is woken by that change
 * too). */
static void woken(void *arg, enum watch_why why)
{
    struct http_req *r = arg;
    struct store_read *rd = NULL;
    r->waiter = NULL; /* fired: the watch let it go */
    /* The client's watch goes only once the answer is on its way: by then
     * evhttp reads the socket again (or a new watch is parked), so the
     * read interest never leaves the kernel's set and comes back (a pair
     * of epoll_ctl calls per woken query, the most of what a fan-out to
     * thousands spent outside its writes). Nothing runs the loop before it
     * goes, so its callback never sees r freed. */
    struct event *gone = r->gone;
    r->gone = NULL;
    /* a restore answers every query at once, whatever its index says */
    bool over = why != WATCH_CHANGED; /* else not known when the store cannot be read */
    if (!over && read_begin(r->srv, &rd) == 0) {
        uint64_t cur = watched_index(r, rd);
        double left_ms = (r->wait_until - mono_seconds()) * 1e3;
        if ((cur ? cur : 1) <= r->min_index && left_ms >= 1) {
            read_end(r->srv, rd);
            if (park(r, (uint64_t)left_ms)) {
                if (gone != NULL)
                    event_free(gone);
                return;
            }
            rd = NULL;
        }
        over = true;
    }
    r->waited = over;
    answer_read(r, rd);
    if (gone != NULL)
        event_free(gone);
}

/* A parked query's socket became readable: its client closed its end
 * (EOF) or reset it (an error: a socket left with it would wake the loop
 * at once for ever), or sent its next request (pipelined: the watch stops; evhttp
 * reads it after this answer). evhttp reads nothing while a request waits
 * for its answer, so without this the query stayed parked for its whole
 * wait (up to ten minutes), its connection counted against its client's
 * --http-max-conns-per-client: a client that gave up on its queries was
 * refused new connections. The waiter goes, then the connection. */
static void parked_client_gone(evutil_socket_t fd, short what, void *arg)
{
    struct http_req *r = arg;
    (void)what;
    char b;
    ssize_t got = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* nothing after all */
    if (got > 0) { /* a request behind this one: not a goodbye */
        event_free(r->gone);
        r->gone = NULL;
        return;
    }
    watch_cancel(r->waiter);
    r->waiter = NULL;
    event_free(r->gone);
    r->gone = NULL;
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    r->status = 499; /* for the metrics: the client closed first */
    req_free(r);
    if (evcon != NULL)
        evhttp_connection_free(evcon); /* frees its request; the guard hears of it */
}

static bool park(struct http_req *r, uint64_t wait_ms)
{
    if (watch_park(r->srv->opt.watch, watched(r), r->arg, wait_ms, woken, r, &r->waiter) != 0)
        return false;
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    struct event_base *base = r->srv->opt.base;
    /* EV_READ alone (an EOF or a reset is readable): the same interest as
     * evhttp's own read, so handing the socket back to it (woken) changes
     * nothing in the kernel's set */
    if (fd >= 0 &&
        (r->gone = event_new(base, fd, EV_READ | EV_PERSIST, parked_client_gone, r)) != NULL &&
        event_add(r->gone, NULL) != 0) {
        event_free(r->gone);
        r->gone = NULL;
    }
    return true;
}

static void write_done(void *arg, int status);

static void start_read(struct http_req *r)
{
    if (r->route->watch != WATCH_NONE && r->route->watch != WATCH_CACHED && r->min_index > 0) {
        struct store_read *rd;
        if (read_begin(r->srv, &rd) == 0) {
            uint64_t cur = watched_index(r, rd);
            read_end(r->srv, rd);
            r->wait_until = mono_seconds() + r->wait_ms / 1e3;
            if ((cur ? cur : 1) <= r->min_index && park(r, r->wait_ms))
                return; /* parked: woken() replies */
            r->waited = true; /* passed already (or no room to park: answered now) */
        }
    }
    answer_read(r, NULL);
}

void http_finish_write(struct http_req *r, int status)
{
    write_done(r, status);
}

void http_finish_raw(struct http_req *r, struct evbuffer *body, const char *content_type)
{
    reply(r, 200, content_type, body, 0);
    req_free(r);
}

void http_finish_read(struct http_req *r, struct evbuffer *body, uint64_t index)
{
    if (r->status == 0 && body != NULL) {
        reply(r, 200, "application/json", body, index);
    } else {
        if (body)
            evbuffer_free(body);
        reply_error(r, index);
    }
    req_free(r);
}

void http_stream_start(struct http_req *r, const char *content_type)
{
    http_stream_start_at(r, content_type, 0);
}

void http_stream_start_at(struct http_req *r, const char *content_type, uint64_t index)
{
    char head[HEAD_MAX];
    http_acl_audit(r, common_method_name(evhttp_request_get_command(r->req)), 200);
    evhttp_send_reply_start(r->req, 200, consul_head(r, 200, index, content_type, head));
}

void http_on_client_gone(struct http_server *srv, struct evhttp_connection *evcon,
                         void (*cb)(struct evhttp_connection *, void *), void *arg)
{
    if (http_guard_on_close(srv->guard, evcon, cb, arg) != 0)
        evhttp_connection_set_closecb(evcon, cb, arg); /* not one the guard watches */
}

void http_stream_end(struct http_req *r, bool client_gone)
{
    if (client_gone) {
        r->status = 499; /* for the metrics: the client closed first */
        /* a connection that failed detached the unfinished request and left
         * it to us: ending it frees it (one being freed with its server,
         * still attached, is libevent's) */
        if (evhttp_request_get_connection(r->req) == NULL)
            evhttp_send_reply_end(r->req);
    } else {
        evhttp_send_reply_end(r->req);
    }
    req_free(r);
}

void http_finish_json(struct http_req *r, json_t *body)
{
    reply_json(r, body, 0);
    json_decref(body);
    req_free(r);
}

void http_finish_json_code(struct http_req *r, int code, json_t *body, const char *ctype)
{
    char *text = json_is_string(body) ? strdup(json_string_value(body))
                 : body                ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)
                                       : NULL;
    json_decref(body);
    struct evbuffer *b = text ? evbuffer_new() : NULL;
    if (b == NULL) {
        free(text);
        http_fail(r, 500, "out of memory");
        reply_error(r, 0);
        req_free(r);
        return;
    }
    evbuffer_add(b, text, strlen(text));
    free(text);
    reply(r, code, ctype, b, 0);
    req_free(r);
}

/* ---- the cluster's answers, on this server's own loop --------------------
 * The cluster delivers completions on the main loop; a worker thread's
 * request gets its completion back through the worker's mailbox. */

struct hop {
    struct mailbox_item item; /* first: the mailbox hands this back */
    struct mailbox *mb;
    cluster_done_cb cb;
    void *arg;
    int status;
};

static void hop_run(struct mailbox_item *it)
{
    struct hop *h = (struct hop *)it;
    cluster_done_cb cb = h->cb;
    void *arg = h->arg;
    int status = h->status;
    free(h);
    cb(arg, status);
}

static void hop_back(void *arg, int status)
{
    struct hop *h = arg;
    h->status = status;
    mailbox_post(h->mb, &h->item);
}

/* The (cb, arg) to hand the cluster for srv: as they are on the main loop,
 * else through a hop. false: out of memory (nothing was handed over). */
static bool own_loop(struct http_server *srv, cluster_done_cb *cb, void **arg)
{
    if (srv->opt.mailbox == NULL)
        return true;
    struct hop *h = malloc(sizeof(*h));
    if (h == NULL)
        return false;
    *h = (struct hop){.item = {.run = hop_run}, .mb = srv->opt.mailbox, .cb = *cb, .arg = *arg};
    *cb = hop_back;
    *arg = h;
    return true;
}

void http_cluster_submit(struct http_server *srv, bool here, void *buf, size_t len,
                         cluster_done_cb cb, void *arg)
{
    if (!own_loop(srv, &cb, &arg)) {
        cluster_free_buf(buf);
        cb(arg, REG_ENOMEM);
    } else if (here) {
        cluster_submit_here(srv->opt.cluster, buf, len, cb, arg);
    } else {
        cluster_submit(srv->opt.cluster, buf, len, cb, arg);
    }
}

void http_cluster_member(struct http_server *srv, enum http_member_op op, uint64_t id,
                         const char *raft_addr, cluster_done_cb cb, void *arg)
{
    if (!own_loop(srv, &cb, &arg))
        cb(arg, REG_ENOMEM);
    else if (op == HTTP_MEMBER_ADD)
        cluster_add_voter(srv->opt.cluster, id, raft_addr, cb, arg);
    else if (op == HTTP_MEMBER_REMOVE)
        cluster_remove(srv->opt.cluster, id, cb, arg);
    else if (op == HTTP_MEMBER_TRANSFER)
        cluster_transfer_leadership(srv->opt.cluster, id, cb, arg);
    else
        cluster_confirm_leadership(srv->opt.cluster, cb, arg);
}

static void write_done(void *arg, int status)
{
    struct http_req *r = arg;
    switch (r->status != 0 ? 0 : status) { /* a reason already chosen stands */
    case 0:
        break;
    case REG_ENOTFOUND:
        http_fail(r, 404, "%s: not found", r->arg ? r->arg : "object");
        break;
    case REG_ECONFLICT: /* store.c apply_register: the one write that says so */
        http_fail(r, 409, "Conflict: this service ID is registered on another node (an ID is "
                          "unique across nodes here, not per node as in Consul): deregister it "
                          "there first, or use another ID");
        break;
    case REG_ENOTLEADER:
        http_fail(r, 500, "No cluster leader");
        break;
    case REG_ELEADERLOST: /* Consul's raft.ErrLeadershipLost */
        http_fail(r, 500, "leadership lost while committing log");
        break;
    case REG_ESHUTDOWN:
        http_fail(r, 503, "Server is shutting down");
        break;
    case REG_ENOSPACE:
        http_fail(r, 507, "Write refused: no space left on the data disk (reads go on; writes "
                          "resume once space is freed)");
        break;
    default:
        http_fail(r, 500, "Write failed: %s", reg_strerror(status));
        break;
    }
    if (r->status == 0 && strncmp(r->route->path, "/v1/catalog/", 12) == 0) {
        reply_text_json(r, "true", 4, false, 0); /* Catalog.Register/Deregister's bool */
    } else if (r->status == 0) {
        reply(r, 200, NULL, NULL, 0);
    } else {
        reply_error(r, 0);
    }
    req_free(r);
}

static void start_write(struct http_req *r)
{
    struct store_read *rd;
    struct command cmd = {0};
    void *buf;
    size_t len;
    if (store_read_begin(r->srv->opt.store, &rd) != 0) {
        http_fail(r, 500, "store unavailable");
    } else {
        r->route->write(r, rd, &cmd);
        store_read_end(rd);
    }
    if (r->status == 0 && cmd.op == 0) {
        cmd_fini(&cmd);
        write_done(r, 0); /* nothing to change: no command, no durable write */
        return;
    }
    if (r->status == 0 && cmd_encode(&cmd, cluster_alloc, &buf, &len) != 0)
        http_fail(r, 500, "cannot encode command");
    cmd_fini(&cmd);
    if (r->status != 0) {
        reply_error(r, 0);
        req_free(r);
        return;
    }
    http_cluster_submit(r->srv, false, buf, len, write_done, r);
}


static const struct http_route *route_tables[] = {
    http_agent_routes, http_catalog_routes, http_operator_routes, http_ui_routes,
    http_agent_info_routes, http_catalog_write_routes,
    http_acl_routes, http_absent_routes};

/* ---- forwarding to the leader ------------------------------------------- */

/* A write belongs to the node that received it from the client. */
const char *http_origin_node(struct http_req *r)
{
    return r->forwarded ? r->origin_node : r->srv->opt.node;
}

const char *http_origin_node_addr(struct http_req *r)
{
    return r->forwarded ? r->origin_node_addr : r->srv->opt.node_addr;
}

/* A forwarded request carries its node's Meta (X-Registry-Node-Meta, set
 * by cluster_link_forward, trusted only on the internal forward route). */
json_t *http_origin_node_meta(struct http_req *r)
{
    if (!r->forwarded)
        return json_deep_copy(r->srv->node_meta);
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(r->req),
                                       "X-Registry-Node-Meta");
    json_t *meta = v ? json_loads(v, 0, NULL) : NULL, *x;
    const char *k;
    bool ok = json_is_object(meta);
    json_object_foreach(meta, k, x) ok = ok && json_is_string(x);
    if (!ok) {
        json_decref(meta);
        meta = json_object();
    }
    return meta;
}

/* The headers of the leader's answer that the client gets as they are
 * (the Consul three are rebuilt by reply(): the index from the leader's). */
static const char *const relayed_headers[] = {
    "X-Consul-Results-Filtered-By-ACLs", "X-Consul-ContentHash", "Retry-After", "Allow",
};

/* The leader's answer to a forwarded request, relayed to the client with
 * the leader's X-Consul-Index (as Consul's follower sets its reply's meta
 * from the leader's): a blocking query sent through a follower blocks on
 * the index it was given. */
#define FORWARD_RETRY_MS 100
#define FORWARD_TRIES 40 /* an election and the new leader's announcement: ~4 s */
#define FORWARDED_TO_NEW_LEADER_TRIES 4 /* ~300 ms */

static bool forward_later(struct http_req *r, int tries);

/* A read (no body) may be sent again, unlike a write, which may have been
 * done: when the leader it went to could not be reached, or stopped
 * answering and another leads. */
static bool forward_again_ok(struct http_req *r)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(r->req);
    return r->route->read && (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD) &&
           r->body_file.fd < 0 && evbuffer_get_length(evhttp_request_get_input_buffer(r->req)) == 0;
}

static void forward_done(void *arg, struct evhttp_request *resp, int failed)
{
    struct http_req *r = arg;
    /* (a leader that answered nothing for LINK_TIMEOUT_S and still leads:
     * not again) */
    bool refused = failed == REG_ECONNECT && mono_seconds() - r->forward_sent < 2;
    if ((failed == REG_ELEADERLOST || refused) && r->forward_again &&
        forward_later(r, FORWARD_TRIES))
        return; /* to whoever leads by then (a leader that died: after the election) */
    if (failed != 0) {
        http_fail(r, 500, "Forwarding to the leader failed");
        reply_error(r, 0);
    } else {
        struct evkeyvalq *in = evhttp_request_get_input_headers(resp);
        struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
        for (size_t i = 0; i < sizeof(relayed_headers) / sizeof(relayed_headers[0]); i++) {
            const char *v = evhttp_find_header(in, relayed_headers[i]);
            if (v != NULL)
                evhttp_add_header(out, relayed_headers[i], v);
        }
        uint64_t index = 0;
        const char *idx = evhttp_find_header(in, "X-Consul-Index");
        if (idx == NULL || !u64_parse(idx, &index))
            index = 0;
        struct evbuffer *body = evbuffer_new();
        if (body)
            evbuffer_add_buffer(body, evhttp_request_get_input_buffer(resp));
        reply(r, evhttp_request_get_response_code(resp), evhttp_find_header(in, "Content-Type"), body, index);
    }
    req_free(r);
}

static void dispatch(struct http_req *r);

static void acl_recheck(struct http_req *r);
static bool leader_answers(struct http_req *r);

static void forward_retry(evutil_socket_t fd, short what, void *arg)
{
    struct http_req *r = arg;
    (void)fd;
    (void)what;
    if (r->acl_at_leader && !leader_answers(r))
        acl_recheck(r);
    else
        forward_to_leader(r);
}

/* No leader, or its address not replicated here yet, or (acl_recheck) a
 * token not applied here yet: try again shortly, at most tries times. */
static bool forward_later(struct http_req *r, int tries)
{
    if (++r->forward_tries >= tries)
        return false;
    struct http_server *srv = r->srv;
    if (r->forward_timer == NULL) {
        if ((r->forward_timer = evtimer_new(srv->opt.base, forward_retry, r)) == NULL)
            return false;
        r->retry_next = srv->retrying;
        if (srv->retrying)
            srv->retrying->retry_prev = r;
        srv->retrying = r;
    }
    struct timeval tv = {0, FORWARD_RETRY_MS * 1000};
    return evtimer_add(r->forward_timer, &tv) == 0;
}

/* r no longer waits to forward: its timer goes (req_free, http_free). */
static void forward_timer_free(struct http_req *r)
{
    if (r->forward_timer == NULL)
        return;
    event_free(r->forward_timer);
    r->forward_timer = NULL;
    if (r->retry_prev)
        r->retry_prev->retry_next = r->retry_next;
    else
        r->srv->retrying = r->retry_next;
    if (r->retry_next)
        r->retry_next->retry_prev = r->retry_prev;
    r->retry_prev = r->retry_next = NULL;
}

/* This server follows: send the request to the leader over the
 * server-to-server channel and relay its answer. */
static void forward_to_leader(struct http_req *r)
{
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    if (r->forwarded && !st.is_leader) { /* never a second hop */
        /* A follower may hear of this server's leadership (its first
         * heartbeat) before this server's own status does (polled every
         * CLUSTER_STATUS_POLL_MS): a moment for it, then refused. */
        if (forward_later(r, FORWARDED_TO_NEW_LEADER_TRIES))
            return;
        http_fail(r, 500, "No cluster leader (forwarded to a server that does not lead)");
        goto fail;
    }
    if (st.is_leader) { /* became the leader meanwhile */
        r->forward_read = false;
        /* a token this server did not know: judged here now */
        if (r->acl_at_leader && (r->acl_at_leader = false, http_acl_check(r) != 0))
            goto fail;
        dispatch(r);
        return;
    }
    json_t *meta = http_origin_node_meta(r);
    char *meta_text = json_object_size(meta) > 0 ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    struct cluster_forward from = {http_origin_node(r), http_origin_node_addr(r), meta_text,
                                   http_acl_client_token(r), r->body_file.fd,
                                   r->body_file.len, r->waited, r->forward_again};
    struct cluster_link *link =
        r->srv->opt.link ? r->srv->opt.link : cluster_get_link(r->srv->opt.cluster);
    r->forward_sent = mono_seconds();
    int rc = cluster_link_forward(link, r->req, &from, forward_done, r);
    free(meta_text);
    if (rc == 0)
        return;
    if ((rc == REG_ENOTLEADER || rc == REG_ENOTFOUND) && forward_later(r, FORWARD_TRIES))
        return;
    if (rc == REG_ENOTLEADER)
        http_fail(r, 500, "No cluster leader");
    else if (rc == REG_ENOTFOUND)
        http_fail(r, 500, "No cluster leader (its address is not known here yet)");
    else
        http_fail(r, 500, "Forwarding to the leader failed: %s", reg_strerror(rc));
fail:
    reply_error(r, 0);
    req_free(r);
}

/* Unwrap PUT /v1/internal/forward: route the request it carries, as the
 * node that received it. Returns 0, or -1 with r->status set. */
static int unwrap_forwarded(struct http_req *r, const char **method, const char **path,
                            const char **query)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    const char *m = evhttp_find_header(in, "X-Registry-Method");
    const char *uri = evhttp_find_header(in, "X-Registry-URI");
    const char *node = evhttp_find_header(in, "X-Registry-Node");
    const char *addr = evhttp_find_header(in, "X-Registry-Node-Address");
    if (strcmp(*method, "PUT") != 0)
        return http_fail(r, 405, "Method %s not allowed on /v1/internal/forward", *method);
    if (m == NULL || uri == NULL || node == NULL || addr == NULL || *node == '\0' ||
        strlen(node) > STORE_NAME_MAX || strlen(addr) >= sizeof(r->origin_node_addr) ||
        strncmp(uri, "/v1/", 4) != 0 || strncmp(uri, "/v1/internal/forward", 20) == 0)
        return http_fail(r, 400, "A forwarded request needs X-Registry-Method, -URI, -Node "
                                 "and -Node-Address");
    r->inner_uri = evhttp_uri_parse(uri);
    const char *inner_path = r->inner_uri ? evhttp_uri_get_path(r->inner_uri) : NULL;
    if (inner_path == NULL || *inner_path == '\0')
        return http_fail(r, 400, "Invalid forwarded URI");
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE", "HEAD"};
    *method = NULL;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(m, methods[i]) == 0)
            *method = methods[i];
    if (*method == NULL)
        return http_fail(r, 400, "Invalid forwarded method");
    r->forwarded = true;
    r->waited = evhttp_find_header(in, "X-Registry-Waited") != NULL;
    snprintf(r->origin_node, sizeof(r->origin_node), "%s", node);
    snprintf(r->origin_node_addr, sizeof(r->origin_node_addr), "%s", addr);
    *path = inner_path;
    *query = evhttp_uri_get_query(r->inner_uri);
    return 0;
}

static bool leader_known(struct http_req *r)
{
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    return st.known_leader;
}

/* A ?consistent read. As Consul, agent reads take no consistency mode:
 * they describe this server (the flag is ignored). */
static bool consistent_read(struct http_req *r)
{
    return r->route->read && http_flag(r, "consistent") &&
           strncmp(r->route->path, "/v1/agent/", 10) != 0;
}

/* A default read that Consul's servers answer on the leader (RPCs without
 * AllowStale): the catalog, health, ACLs and the raft configuration; the
 * agent's, the status and the UI's describe this server. ?stale (or a
 * max_stale this server is within) and ?cached read the local copy: after a
 * write through this server the leader has it, this copy a heartbeat later
 * (a register-then-read through one follower missed it 100 times of 100). */
static bool leader_read(struct http_req *r)
{
    const char *p = r->route->path;
    return r->route->read && !r->stale && !http_has_param(r, "cached") &&
           (strncmp(p, "/v1/catalog/", 12) == 0 || strncmp(p, "/v1/health/", 11) == 0 ||
            strncmp(p, "/v1/acl/", 8) == 0 || strcmp(p, "/v1/operator/raft/configuration") == 0);
}

/* Writes, membership changes, ?consistent and default reads go to the
 * leader; true when this server must forward. */
/* Routes a follower sends to the leader (writes, ?consistent and default
 * reads of the catalog, health, ACLs and raft configuration). */
static bool leader_answers(struct http_req *r)
{
    return r->route->write != NULL || r->route->leader_only || consistent_read(r) ||
           leader_read(r);
}

static bool must_forward(struct http_req *r)
{
    if (r->acl_at_leader)
        return true;
    if (!leader_answers(r))
        return false;
    if (r->route->write && http_write_builds_anywhere(r->route->write))
        return false; /* cluster_submit proposes it to the leader */
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    return !st.is_leader;
}

static void consistent_ready(void *arg, int status)
{
    struct http_req *r = arg;
    if (status != 0) {
        http_fail(r, 500, "No cluster leader (leadership not confirmed: %s)",
                  reg_strerror(status));
        reply_error(r, 0);
        req_free(r);
        return;
    }
    start_read(r);
}

/* Route a request that this server handles itself. Reads: ?consistent
 * first confirms leadership with a quorum round; the default mode needs a
 * known leader (Consul's rule); ?stale always answers from the local store. */
static void dispatch(struct http_req *r)
{
    if (r->route->custom) {
        r->route->custom(r);
    } else if (r->route->write) {
        start_write(r);
    } else if (consistent_read(r)) {
        http_cluster_member(r->srv, HTTP_MEMBER_CONFIRM, 0, NULL, consistent_ready, r);
    } else {
        /* the raft configuration is the leader's too (Consul forwards it:
         * `consul operator raft list-peers -stale` reads a server's own);
         * the body is Consul's structs.ErrNoLeader, which clients match */
        bool leaders = r->route->watch != WATCH_NONE ||
                       strcmp(r->route->path, "/v1/operator/raft/configuration") == 0;
        if (leaders && !leader_known(r) && !r->stale) {
            http_fail(r, 500, "No cluster leader");
            reply_error(r, 0);
            req_free(r);
            return;
        }
        if (r->route->watch != WATCH_NONE && !cluster_caught_up(r->srv->opt.cluster)) {
            /* also ?stale: an empty store is not a stale copy */
            http_fail(r, 500, "This server is replaying the cluster's log into its store since "
                              "it started; ask another server");
            reply_error(r, 0);
            req_free(r);
            return;
        }
        start_read(r);
    }
}

static bool route_matches(const struct http_route *rt, const char *path, size_t *len)
{
    size_t n = strlen(rt->path);
    *len = n;
    if (rt->path[n - 1] != '/')
        return strcmp(path, rt->path) == 0;
    return strncmp(path, rt->path, n) == 0 && path[n] != '\0';
}

/* Every route with its pattern's length, longest first (table order among
 * equals): the first match is the longest, and one pass finds the route. */
struct route_ent {
    const struct http_route *rt;
    size_t len;
    bool prefix; /* the pattern ends with '/': a tail follows */
};
static struct route_ent *route_index;
static size_t route_count;
static pthread_once_t route_once = PTHREAD_ONCE_INIT;

static void route_index_build(void)
{
    size_t n = 0;
    for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++)
        for (const struct http_route *rt = route_tables[t]; rt->path; rt++)
            n++;
    struct route_ent *v = calloc(n, sizeof(*v));
    if (v == NULL)
        return; /* route_lookup falls back to the tables */
    n = 0;
    for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++)
        for (const struct http_route *rt = route_tables[t]; rt->path; rt++) {
            v[n].rt = rt;
            v[n].len = strlen(rt->path);
            v[n].prefix = rt->path[v[n].len - 1] == '/';
            n++;
        }
    /* A stable selection sort (once, some hundred routes): among equal
     * lengths, table order stays. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (v[j].len > v[i].len) {
                struct route_ent x = v[j];
                memmove(&v[i + 1], &v[i], (j - i) * sizeof(v[0]));
                v[i] = x;
            }
    route_index = v;
    route_count = n;
}

/* The route for method and path (see http_find_route); *best: the length
 * of the longest pattern matching path (0: none). */
static const struct http_route *route_lookup(const char *method, const char *path, size_t *best)
{
    pthread_once(&route_once, route_index_build);
    const struct http_route *found = NULL;
    size_t len;
    *best = 0;
    if (route_index == NULL) { /* no memory for the index: two passes over the tables */
        for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++)
            for (const struct http_route *rt = route_tables[t]; rt->path; rt++)
                if (route_matches(rt, path, &len) && len > *best)
                    *best = len;
        for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]) && !found; t++)
            for (const struct http_route *rt = route_tables[t]; rt->path && !found; rt++)
                if (route_matches(rt, path, &len) && len == *best &&
                    strcmp(method, rt->method) == 0)
                    found = rt;
        return found;
    }
    size_t plen = strlen(path);
    for (size_t i = 0; i < route_count; i++) {
        const struct route_ent *e = &route_index[i];
        if (*best != 0 && e->len < *best)
            break; /* shorter than the longest match */
        if (e->prefix ? plen <= e->len : plen != e->len)
            continue;
        if (memcmp(path, e->rt->path, e->len) != 0)
            continue;
        *best = e->len;
        if (strcmp(method, e->rt->method) == 0) {
            found = e->rt;
            break;
        }
    }
    return found;
}

/* The longest pattern matching path wins (an exact path beats a shorter
 * prefix: GET /v1/agent/service/register is a 405, not a lookup of a
 * service called "register"). *path_known: some method serves this path. */
const struct http_route *http_find_route(const char *method, const char *path, char **arg,
                                         bool *path_known)
{
    size_t best;
    const struct http_route *found = route_lookup(method, path, &best);
    *path_known = best > 0;
    if (found && found->path[best - 1] == '/') {
        size_t n = 0;
        *arg = evhttp_uridecode(path + best, 0, &n);
        if (*arg && !clean_text(*arg, n)) { /* %00 would cut the name short */
            free(*arg);
            *arg = NULL;
        }
    }
    return found;
}

/* The methods some route serves at path, as Consul's Allow header lists
 * them ("GET,PUT,OPTIONS"); empty when no route serves it. */
static void route_allow(const char *path, char *out, size_t outlen)
{
    size_t best = 0, len, o = 0;
    out[0] = '\0';
    for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++)
        for (const struct http_route *rt = route_tables[t]; rt->path; rt++)
            if (route_matches(rt, path, &len) && len > best)
                best = len;
    if (best == 0)
        return;
    for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++)
        for (const struct http_route *rt = route_tables[t]; rt->path; rt++) {
            if (!route_matches(rt, path, &len) || len != best)
                continue;
            char m[16];
            snprintf(m, sizeof(m), "%s,", rt->method);
            if (strstr(out, m) == NULL && o + strlen(m) < outlen)
                o += (size_t)snprintf(out + o, outlen - o, "%s", m);
        }
    snprintf(out + o, outlen - o, "OPTIONS");
}

/* The TLS session a request arrived on, or NULL (plain HTTP). */
static SSL *request_ssl(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

static void handle(struct evhttp_request *req, void *arg);

/* The HTTPS listener's requests. A connection whose SSL could not be set
 * up is a plain one (evhttp's fallback): never serve it. */
static void handle_https(struct evhttp_request *req, void *arg)
{
    if (request_ssl(req) == NULL) {
        evhttp_connection_free_on_completion(evhttp_request_get_connection(req));
        evhttp_send_error(req, 500, "TLS unavailable");
        return;
    }
    handle(req, arg);
}

/* Server-to-server routes and /v1/status/ are never rate limited: a
 * limited server still works in its cluster (forwarded requests were
 * counted where they came in), and probes of the registry itself answer. */
static bool rate_exempt(const char *path)
{
    return strncmp(path, "/v1/internal/", 13) == 0 || strncmp(path, "/v1/status/", 11) == 0;
}

struct http_shared {
    pthread_mutex_t lock; /* over the rates */
    struct http_rate read_rate, write_rate; /* http_read_rate, http_write_rate */
    struct http_guard_clients *clients;     /* http_max_conns_per_client */
    struct http_cache *cache;               /* rendered answers (http_cache_size) */
    struct http_render *render; /* per-record JSON (http_render_cache_size) */
};

int http_shared_new(const struct http_options *opt, struct http_shared **out)
{
    struct http_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL || http_guard_clients_new(&sh->clients) != 0 ||
        http_cache_new(opt->cache_size, &sh->cache) != 0 ||
        http_render_new(opt->render_cache_size ? opt->render_cache_size
                                               : HTTP_RENDER_FRAGMENT_BYTES,
                        &sh->render) != 0) {
        if (sh) {
            http_guard_clients_free(sh->clients);
            http_cache_free(sh->cache);
        }
        free(sh);
        return REG_ENOMEM;
    }
    pthread_mutex_init(&sh->lock, NULL);
    http_rate_init(&sh->read_rate, opt->read_rate, mono_seconds());
    http_rate_init(&sh->write_rate, opt->write_rate, mono_seconds());
    *out = sh;
    return 0;
}

void http_shared_free(struct http_shared *sh)
{
    if (sh == NULL)
        return;
    http_guard_clients_free(sh->clients);
    http_cache_free(sh->cache);
    http_render_free(sh->render);
    pthread_mutex_destroy(&sh->lock);
    free(sh);
}

/* http_read_rate (GET, HEAD) and http_write_rate (any other method): true
 * when this request is over its limit (r->status 429, Retry-After set).
 * One bucket each for every worker thread. */
static bool over_rate(struct http_req *r)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(r->req);
    bool write = cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD;
    struct http_shared *sh = r->srv->shared;
    struct http_rate *b = write ? &sh->write_rate : &sh->read_rate;
    unsigned retry = 1;
    if (b->rate <= 0) /* unlimited (the default): no clock read, no lock */
        return false;
    pthread_mutex_lock(&sh->lock);
    bool ok = http_rate_take(b, mono_seconds(), &retry);
    pthread_mutex_unlock(&sh->lock);
    if (ok)
        return false;
    char v[16];
    snprintf(v, sizeof(v), "%u", retry);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", v);
    metrics_http_rate_limited(write);
    http_fail(r, 429, "Rate limit exceeded: over %g %s requests a second (http_%s_rate); retry "
                      "in %u s or against another server",
              b->rate, write ? "write" : "read", write ? "write" : "read", retry);
    return true;
}

/* Namespaces and partitions are Consul Enterprise's: as Consul CE, a
 * request naming one (query or header) gets 400 rather than an answer from
 * the one scope there is. Naming that scope ("default") is allowed, which
 * CE refuses too; it cannot mislead. Sets r's error and returns true when
 * refused. */
static bool enterprise_scope_refused(struct http_req *r)
{
    static const struct {
        const char *param, *header, *what;
    } scopes[] = {
        {"ns", "X-Consul-Namespace", "Namespaces are"},
        {"partition", "X-Consul-Partition", "Partitions are"},
    };
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    for (size_t i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
        const char *h = evhttp_find_header(in, scopes[i].header);
        const char *q = http_param(r, scopes[i].param);
        if (h != NULL && *h != '\0' && strcasecmp(h, "default") != 0) {
            http_fail(r, 400, "Invalid header: \"%s\" - %s a Consul Enterprise feature",
                      scopes[i].header, scopes[i].what);
            return true;
        }
        if (q != NULL && *q != '\0' && strcasecmp(q, "default") != 0) {
            http_fail(r, 400, "Invalid query parameter: \"%s\" - %s a Consul Enterprise feature",
                      scopes[i].param, scopes[i].what);
            return true;
        }
    }
    return false;
}

/* A token this follower has not applied yet (created through it a moment
 * ago), on a route this server answers itself (the agent's, the status):
 * judged here again once it has, up to a second; then "ACL not found".
 * Routes the leader answers go there whole, and it judges the token. */
#define ACL_WAIT_TRIES 10 /* of FORWARD_RETRY_MS */

static void judged(struct http_req *r);

static void acl_recheck(struct http_req *r)
{
    r->acl_at_leader = false;
    if (http_acl_check(r) != 0)
        goto fail;
    if (!r->acl_at_leader) {
        judged(r);
        return;
    }
    if (forward_later(r, ACL_WAIT_TRIES))
        return;
    http_fail(r, 403, "ACL not found");
fail:
    reply_error(r, 0);
    req_free(r);
}

/* The request passed its ACL check: answered here, or at the leader. */
static void judged(struct http_req *r)
{
    /* before a forward moves the body away (a GET with one is not sent again) */
    r->forward_again = forward_again_ok(r);
    if (r->acl_at_leader && !leader_answers(r)) {
        if (!forward_later(r, ACL_WAIT_TRIES)) {
            http_fail(r, 403, "ACL not found");
            reply_error(r, 0);
            req_free(r);
        }
        return;
    }
    if (r->waited) /* forwarded by a follower that waited for the index */
        r->min_index = 0;
    if (!must_forward(r)) {
        dispatch(r);
    } else if (r->route->read && leader_known(r) && !r->acl_at_leader) {
        /* ?consistent: a blocking one waits here for the index to pass
         * (this server applies what the leader commits), then goes to the
         * leader, which answers at once; no connection to it is held for
         * the wait. With no leader known it is sent (or refused) now. */
        r->forward_read = true;
        start_read(r);
    } else {
        forward_to_leader(r);
    }
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct http_server *srv = arg;
    struct http_req *r = req_new(srv);
    if (r == NULL) { /* no request context to reply through */
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    r->srv = srv;
    r->req = req;
    r->started = mono_seconds();
    http_guard_request_read(srv->guard, req, &r->body_file);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    const char *method = common_method_name(evhttp_request_get_command(req));
    bool known;
    bool limited = path != NULL && !rate_exempt(path);

    if (r->body_file.write_err != 0) { /* the guard could not keep the whole body */
        http_fail(r, 507, "Cannot store the request body (%llu bytes) in %s: %s",
                  (unsigned long long)r->body_file.len,
                  srv->opt.spool_dir ? srv->opt.spool_dir : "the data dir",
                  strerror(r->body_file.write_err));
        goto fail;
    }

    if (path != NULL && strncmp(path, "/v1/internal/", 13) == 0 && tls_enabled() &&
        !tls_peer_is_server(request_ssl(req))) {
        http_fail(r, 403, "Permission denied: internal routes answer only servers (over HTTPS, "
                          "with a certificate from the cluster's CA naming %s)",
                  tls_server_name());
        goto fail;
    }
    if (path != NULL && strcmp(path, "/v1/internal/forward") == 0 &&
        unwrap_forwarded(r, &method, &path, &query) != 0)
        goto fail;
    if (path != NULL && strcmp(path, "/ui/") == 0)
        path = "/ui"; /* the page's directory form */
    if (path == NULL || *path == '\0') {
        http_fail(r, 404, "Invalid URL path");
        goto fail;
    }
    r->path = path;
    size_t best;
    r->route = route_lookup(method, path, &best);
    known = best > 0;
    if (r->route && r->route->path[best - 1] == '/') {
        size_t n = 0;
        r->arg = decode_text(r, path + best, strlen(path + best), false, &n);
        if (r->arg && !clean_text(r->arg, n)) { /* %00 would cut the name short */
            arena_free(r, r->arg);
            r->arg = NULL;
        }
    }
    if (limited && over_rate(r))
        goto fail;
    if (r->route == NULL) {
        char allow[96];
        route_allow(path, allow, sizeof(allow));
        if (known && evhttp_request_get_command(req) == EVHTTP_REQ_OPTIONS) {
            /* Consul answers OPTIONS with the methods the path takes */
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            reply(r, 200, NULL, NULL, 0);
            req_free(r);
            return;
        }
        if (known) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            http_fail(r, 405, "Method %s not allowed on %s", method, path);
        } else {
            http_fail(r, 404, "Invalid URL path: %s", path);
        }
        goto fail;
    }
    if (r->route->path[strlen(r->route->path) - 1] == '/' &&
        (r->arg == NULL || *r->arg == '\0' || strlen(r->arg) > STORE_NAME_MAX ||
         (strchr(r->arg, '/') != NULL && !http_absent_arg_slashes(r->route) &&
          !http_acl_arg_slashes(r->route)))) {
        http_fail(r, 400, "Invalid path argument (empty, too long, or with a slash, NUL or "
                          "control character)");
        goto fail;
    }
    if (http_parse_query(r, query) != 0 || http_parse_blocking(r) != 0)
        goto fail;
    /* A blocking query a follower sent on before its wait (a token it had
     * not applied, no leader when it came): answered before the channel
     * gives up on it (LINK_TIMEOUT_S), else the client got 500 after 30 s;
     * a blocking query may always end early, the client asks again. */
    if (r->forwarded && !r->waited && r->wait_ms > FORWARDED_WAIT_MAX_MS)
        r->wait_ms = FORWARDED_WAIT_MAX_MS;
    r->stale = http_has_param(r, "stale");
    r->pretty = http_has_param(r, "pretty");
    bool allow_stale = r->stale; /* Consul's AllowStale */
    const char *max_stale = http_param(r, "max_stale");
    uint64_t max_stale_ms = 0;
    if (max_stale != NULL && *max_stale != '\0' && duration_parse(max_stale, &max_stale_ms) != 0) {
        http_fail(r, 400, "Invalid max_stale value \"%s\"", max_stale);
        goto fail;
    }
    if (max_stale_ms > 0 || (max_stale != NULL && strpbrk(max_stale, "123456789") != NULL)) {
        /* within the bound (Consul's LastContact), this server's copy; past
         * it, a default read's rules (a known leader) */
        struct cluster_status st;
        cluster_get_status(r->srv->opt.cluster, &st);
        allow_stale = true;
        r->stale = r->stale || st.is_leader ||
                   st.last_contact_ms <= (max_stale_ms ? max_stale_ms : 1);
    }
    if (allow_stale && http_has_param(r, "consistent")) {
        http_fail(r, 400, "Cannot specify ?stale with ?consistent, conflicting semantics.");
        goto fail;
    }
    bool passing;
    if (strncmp(r->route->path, "/v1/health/", 11) == 0 && http_passing(r, &passing) != 0) {
        http_fail(r, 400, "Invalid value for ?passing");
        goto fail;
    }
    const char *dc = http_param(r, "dc");
    if (dc != NULL && *dc != '\0' && strcmp(dc, r->srv->opt.datacenter) != 0) {
        http_fail(r, 500, "No path to datacenter"); /* Consul's answer; one datacenter here */
        goto fail;
    }
    if (enterprise_scope_refused(r))
        goto fail;
    if (http_acl_check(r) != 0)
        goto fail;
    judged(r);
    return;
fail:
    reply_error(r, 0);
    req_free(r);
}

/* ---- lifecycle ---------------------------------------------------------- */

/* An evhttp instance serving every route (handler: handle or
 * handle_https), with the server's limits. */
static struct evhttp *new_evhttp(struct http_server *s, uint64_t body_max,
                                 void (*handler)(struct evhttp_request *, void *))
{
    const struct http_options *opt = &s->opt;
    struct evhttp *http = evhttp_new(opt->base);
    if (http == NULL)
        return NULL;
    /* an answer without a body has no type (libevent's default is text/html) */
    evhttp_set_default_content_type(http, NULL);
    /* libevent enforces a hard cap; our own 413 (one line) comes first. */
    evhttp_set_max_body_size(http, (ev_ssize_t)(opt->max_snapshot_size > body_max
                                                    ? opt->max_snapshot_size
                                                    : body_max));
    evhttp_set_max_headers_size(http, 64 * 1024);
    evhttp_set_timeout(http, HTTP_IDLE_TIMEOUT_S);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_POST |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(http, handler, s);
    return http;
}

/* Bind addr (the setting `key`) for http, guarded; TLS with tls_api_ctx()
 * when tls. Returns 0 or REG_EINVAL / REG_EIO / REG_ENOMEM with err set. */
static int listen_on(struct http_server *s, struct evhttp *http, const char *key,
                     const char *addr, bool tls, char *err, size_t errlen)
{
    char host[256];
    unsigned short port;
    if (conf_split_hostport(addr, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "%s: cannot parse \"%s\"", key, addr);
        return REG_EINVAL;
    }
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                    .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    struct evutil_addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    if (evutil_getaddrinfo(host, portstr, &hints, &ai) != 0 || ai == NULL) {
        snprintf(err, errlen, "%s %s: not a numeric address", key, addr);
        return REG_EINVAL;
    }
    /* Several workers share the address (SO_REUSEPORT), the first one only
     * once nobody else holds it. */
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (s->opt.reuse_port) {
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen < sizeof(ss) ? ai->ai_addrlen : sizeof(ss));
        if (s->opt.worker == 0 && common_addr_free(&ss, (int)ai->ai_addrlen, SOCK_STREAM) != 0) {
            snprintf(err, errlen, "%s %s: cannot listen: %s", key, addr, strerror(errno));
            evutil_freeaddrinfo(ai);
            return REG_EIO;
        }
        flags |= LEV_OPT_REUSEABLE_PORT;
    }
    /* evhttp_bind_socket's backlog of 128 stalls bursts: bind ourselves. */
    struct evconnlistener *l = evconnlistener_new_bind(s->opt.base, NULL, NULL, flags,
                                                       HTTP_BACKLOG, ai->ai_addr,
                                                       (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (l == NULL) {
        snprintf(err, errlen, "%s %s: cannot listen: %s", key, addr,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return REG_EIO;
    }
    common_listener_nodelay(evconnlistener_get_fd(l));
    if (http_guard_attach(s->guard, http, l, tls ? tls_api_ctx : NULL) != 0) {
        snprintf(err, errlen, "%s %s: too many listeners", key, addr);
        evconnlistener_free(l);
        return REG_ENOMEM;
    }
    if (evhttp_bind_listener(http, l) == NULL) {
        snprintf(err, errlen, "%s %s: cannot listen: out of memory", key, addr);
        evconnlistener_free(l);
        return REG_ENOMEM;
    }
    if (s->opt.worker == 0)
        log_info("http", "msg=\"listening\" %s=%s", key, addr);
    return 0;
}

int http_start(const struct http_options *opt, struct http_server **out, char *err,
               size_t errlen)
{
    if (opt->addr == NULL && opt->https_addr == NULL) {
        snprintf(err, errlen, "http_addr: may be empty only when https_addr is set");
        return REG_EINVAL;
    }
    if (opt->https_addr != NULL && !tls_enabled()) {
        snprintf(err, errlen, "https_addr: needs tls_ca_file, tls_cert_file and tls_key_file");
        return REG_EINVAL;
    }
    struct http_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return REG_ENOMEM;
    s->opt = *opt;
    s->node_meta = common_kvlist_object(opt->node_meta);
    if (s->node_meta == NULL)
        goto fail_mem;
    s->shared = opt->shared;
    if (s->shared == NULL && http_shared_new(opt, &s->own_shared) != 0)
        goto fail_mem;
    if (s->shared == NULL)
        s->shared = s->own_shared;
    s->cache = s->shared->cache;
    s->render = s->shared->render;
    uint64_t body_max = opt->max_body_size * 2 + 65536;
    struct http_guard_options gopt = {.base = opt->base,
                                      .clients = s->shared->clients,
                                      .head_timeout_ms = opt->head_timeout_ms,
                                      .body_timeout_ms = opt->body_timeout_ms,
                                      .body_max = body_max,
                                      .snapshot_body_max = opt->max_snapshot_size,
                                      .spool_dir = opt->spool_dir,
                                      .max_conns_per_client = opt->max_conns_per_client};
    if (http_guard_new(&gopt, &s->guard) != 0)
        goto fail_mem;
    int rc;
    if (opt->addr != NULL) {
        if ((s->http = new_evhttp(s, body_max, handle)) == NULL)
            goto fail_mem;
        if ((rc = listen_on(s, s->http, "http_addr", opt->addr, false, err, errlen)) != 0)
            goto fail;
    }
    if (opt->https_addr != NULL) {
        if ((s->https = new_evhttp(s, body_max, handle_https)) == NULL)
            goto fail_mem;
        if ((rc = listen_on(s, s->https, "https_addr", opt->https_addr, true, err, errlen)) != 0)
            goto fail;
    }
    *out = s;
    return 0;

fail_mem:
    rc = REG_ENOMEM;
    snprintf(err, errlen, "out of memory");
fail:
    http_free(s);
    return rc;
}

void http_free(struct http_server *s)
{
    if (s == NULL)
        return;
    /* a request waiting for a leader is not answered: evhttp frees it with
     * its connection below (its timer, left, fired into freed memory) */
    while (s->retrying != NULL)
        req_free(s->retrying);
    http_leaves_free(s);
    if (s->http)
        evhttp_free(s->http);
    if (s->https)
        evhttp_free(s->https);
    json_decref(s->node_meta);
    store_read_end(s->spare_read);
    http_guard_free(s->guard); /* after the connections it watches */
    for (struct http_req *r = s->req_pool, *next; r; r = next) {
        next = r->next_free;
        free(r);
    }
    http_shared_free(s->own_shared); /* after the guard that counted in it */
    free(s);
}
