/*
 * http_internal.h — what the HTTP modules share: the request context, the
 * route table types, the reply helpers and the Consul JSON renderers.
 *   http_api.c       server, routing, query parsing, replies, blocking
 *                    queries, forwarding to the leader (through cluster_link)
 *   http_agent.c     /v1/agent/... (registration and checks: the write side)
 *   http_catalog.c   /v1/catalog/..., /v1/health/..., /v1/status/...
 *   http_operator.c  /v1/operator/..., /v1/snapshot, /v1/internal/... (the
 *                    routes servers use among themselves)
 *   http_ui.c        /ui/
 *   http_filter.c    ?filter= (filter.c's language) and ?node-meta= on listings
 *   http_agent_info.c /v1/agent/self, /version, /members, /service/:id (hash
 *                    blocking), /health/service/...; /v1/catalog/node-services
 *   http_catalog_write.c /v1/catalog/register and /deregister, /v1/agent/check/
 *                    register and /deregister, /v1/agent/maintenance
 *   http_acl.c       /v1/acl/..., and the ACL decision, list filtering and
 *                    audit line of every request
 *   http_absent.c    /v1/kv/..., /v1/coordinate/...: what registryd keeps
 *                    none of, answered as Consul answers an empty one
 * Private to registryd/http_*.c.
 */
#ifndef REGISTRYD_HTTP_INTERNAL_H
#define REGISTRYD_HTTP_INTERNAL_H

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "acl.h"
#include "cluster.h"
#include "command.h"
#include "duration.h"
#include "http_api.h"
#include "http_cache.h"
#include "http_guard.h"
#include "http_rate.h"
#include "store.h"

#define HTTP_MAX_PARAMS 32
/* Bytes of decoded query parameters and path tail a request keeps in its
 * own struct (more go to the heap): the common lookup needs no malloc. */
#define HTTP_REQ_ARENA 512
/* Request structs kept for reuse per server (a request is freed and the
 * next allocated on every lookup: reuse spares malloc its big-chunk path).
 * None under AddressSanitizer, which then still sees a use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define HTTP_REQ_POOL 0
#else
#define HTTP_REQ_POOL 256
#endif

struct http_server {
    struct http_options opt;
    struct evhttp *http;  /* the plain listener's, or NULL */
    struct evhttp *https; /* the HTTPS listener's, or NULL */
    json_t *node_meta; /* this node's Meta, from opt.node_meta */
    struct http_guard *guard; /* accept back-off, request deadlines */
    /* Rendered read responses, reused while the index they were rendered
     * at is current (same index => same content, on every server); one for
     * every worker thread (shared->cache). */
    struct http_cache *cache;
    struct http_render *render;   /* per-record encodings of big answers (shared->render) */
    struct http_shared *shared; /* opt.shared, or own_shared */
    struct http_shared *own_shared;
    struct http_req *req_pool; /* freed requests for reuse (next_free), <= HTTP_REQ_POOL */
    int n_req_pool;
    /* requests waiting to retry a forward (no leader yet): their timers
     * die with the server, not after evhttp freed what they would answer */
    struct http_req *retrying;
    /* A read transaction reset after a read (http_api.c read_end): renewed
     * for the next, without taking a reader slot again */
    struct store_read *spare_read;
    struct leave *leaves; /* PUT /v1/agent/leave in progress (http_operator.c) */
};

struct http_param {
    char *key;
    char *value; /* NULL for a bare flag (?passing) */
};

/* One request, from routing to reply. Owned by the front-end thread.
 * Allocated zeroed up to `params` (http_api.c's req_new); the members from
 * `params` on are set before they are read. */
struct http_req {
    struct http_server *srv;
    struct evhttp_request *req;
    const struct http_route *route;
    char *arg; /* decoded path tail (/v1/catalog/service/<arg>), or NULL */
    const char *path; /* the path routed on (the inner one when forwarded) */
    /* A request another server forwarded over the server-to-server channel
     * (PUT /v1/internal/forward): the URI and node it received. Public
     * routes never read internal headers; only this does. */
    bool forwarded;
    /* A ?consistent or default read on a follower: its wait (a blocking
     * query) is spent here, then it goes to the leader (answer_read). */
    bool forward_read;
    /* On a follower, its token is not known here (yet: one created through
     * this server a moment ago): the leader judges it (http_acl_check). */
    bool acl_at_leader;
    /* Forwarded after its wait was spent (X-Registry-Waited): the leader
     * answers at once. */
    bool waited;
    /* ?stale, or a ?max_stale above 0 (Consul's parseConsistency): this
     * server's copy may answer. */
    bool stale;
    bool pretty; /* ?pretty: JSON indented (http_api.c prettify) */
    /* While parked (a blocking query): its waiter, and an event on its
     * socket for the client's end of the stream (EV_CLOSED), or NULL. */
    struct watch_waiter *waiter;
    struct event *gone;
    struct evhttp_uri *inner_uri;
    int n_params;
    uint64_t min_index; /* ?index=, 0 if absent */
    uint64_t cache_version; /* run_read_in: what a cached answer of it is valid for */
    uint64_t wait_ms;   /* ?wait= (with jitter when ?index= or ?hash= asks to block) */
    double wait_until;  /* monotonic seconds: the end of a parked query's wait */
    int status;         /* error reply chosen by a handler */
    int forward_tries;  /* waits for a leader to forward to */
    double forward_sent; /* monotonic seconds: the last forward was sent */
    bool forward_again;  /* a read without a body: may be sent on again (judged()) */
    struct event *forward_timer;                /* the next try; NULL: none armed yet */
    struct http_req *retry_prev, *retry_next; /* in srv->retrying while forward_timer */
    double started;     /* monotonic seconds at arrival, for metrics */
    struct acl_authz *authz; /* who asks (http_acl_check): authz_store, or NULL */
    struct acl_authz authz_store;
    struct http_body_file body_file; /* the body, when the guard wrote it to a file */
    /* Decoded parameters and arg live here while they fit (arena_cap 0:
     * each is malloc'ed, as for a struct the caller zeroed itself). */
    size_t arena_used, arena_cap;
    struct http_req *next_free; /* in srv->req_pool */
    /* ---- not zeroed on allocation ---- */
    struct http_param params[HTTP_MAX_PARAMS];
    char origin_node[STORE_NAME_MAX + 1];
    char origin_node_addr[128];
    char errmsg[256]; /* errmsg[0] is set to '\0' on allocation */
    char arena[HTTP_REQ_ARENA];
};

/* A read renders JSON from one read transaction. Returns 0 (out set, status
 * 200 unless r->status says otherwise) or non-zero with r->status/errmsg. */
typedef int (*http_read_fn)(struct http_req *r, struct store_read *rd, json_t **out);
/* A write fills cmd from the request (rd for existence checks). Returns 0
 * to submit, non-zero with r->status/errmsg to refuse. */
typedef int (*http_write_fn)(struct http_req *r, struct store_read *rd, struct command *cmd);

enum http_watch_scope {
    WATCH_NONE,    /* not a blocking query */
    WATCH_SERVICE,  /* wakes on changes to the service named by the path */
    WATCH_SERVICES, /* wakes when the service names or their tags change (the
                     * answer's index is theirs) unless the request's filter,
                     * node meta or ACLs make it depend on more: then as ALL */
    WATCH_ALL,      /* wakes on any change */
    WATCH_CACHED,   /* cached and renewed as ALL, but no blocking query:
                     * ?index= is not waited on (Consul's agent listings) */
};

/* A handler that answers by itself, later (membership changes): it owns r
 * and ends with http_finish_write() or http_finish_json(). */
typedef void (*http_custom_fn)(struct http_req *r);

struct http_route {
    const char *method;
    const char *path; /* ends with '/' when the tail is an argument */
    http_read_fn read;
    http_write_fn write;
    enum http_watch_scope watch;
    http_custom_fn custom;
    bool leader_only; /* custom: forwarded to the leader like writes */
};

/* Answers the PUT /v1/agent/leave still in progress (the server stops)
 * and frees what they hold; from http_free, once nothing can call back. */
void http_leaves_free(struct http_server *srv);
extern const struct http_route http_agent_routes[];
/* Meta or NodeMeta as Consul validates them: at most 64 pairs, keys of
 * letters, digits, '_' and '-' (at most 128), string values of at most 512
 * bytes. 0, or -1 with the 400 set (field names it). */
int http_check_meta(struct http_req *r, json_t *meta, const char *field);
/* A service name or ID, check ID or node name as Consul takes them (any
 * text; it only warns about names DNS cannot carry): 1 to STORE_NAME_MAX
 * bytes, no control character, and no slash (a URL path segment here). */
bool http_valid_name(const char *s);
/* A body (or a check in it) naming a namespace or partition other than the
 * default: 400 as Consul CE answers (its decoder knows no such field), so
 * that it is not served from the one scope there is. True: refused. */
bool http_body_scope_refused(struct http_req *r, json_t *obj);
/* The name-rule's message, for a 400: "Invalid <what> \"<s>\": ..." */
int http_fail_name(struct http_req *r, const char *what, const char *s);

/* Writes a follower may build and propose itself (http_agent.c). */
bool http_write_builds_anywhere(http_write_fn fn);
extern const struct http_route http_catalog_routes[];
extern const struct http_route http_operator_routes[];
extern const struct http_route http_ui_routes[];
extern const struct http_route http_agent_info_routes[];
extern const struct http_route http_catalog_write_routes[];
extern const struct http_route http_acl_routes[];
extern const struct http_route http_absent_routes[];
/* Whether rt's argument may hold slashes (a KV key, what the routes of ACL
 * features registryd lacks take; every other argument is one path
 * segment), and http_acl.c's (PUT /v1/acl/token/:accessor/clone). */
bool http_absent_arg_slashes(const struct http_route *rt);
bool http_acl_arg_slashes(const struct http_route *rt);

/* ACLs (http_acl.c). http_acl_check resolves the request's token into
 * r->authz and decides whether the route may run: 0, or -1 with r->status
 * (403). http_acl_filter drops from a read's answer what the token may not
 * read (and says so in a header); http_acl_bypass_cache: the answer depends
 * on the token. http_acl_audit writes the audit line of a write or a
 * denial. http_acl_req_free releases r->authz. */
int http_acl_check(struct http_req *r);
void http_acl_filter(struct http_req *r, json_t **out);
bool http_acl_bypass_cache(struct http_req *r);
void http_acl_audit(struct http_req *r, const char *method, int status);
void http_acl_req_free(struct http_req *r);
/* The token the client sent (header, bearer or ?token=), or NULL. */
const char *http_acl_client_token(struct http_req *r);

/* The cluster's calls for a request's server (cluster.h), with the
 * callback run on that server's own loop (a worker thread's, or the main
 * one). submit: cluster_submit (here: cluster_submit_here); the buffer is
 * taken in every case. */
void http_cluster_submit(struct http_server *srv, bool here, void *buf, size_t len,
                         cluster_done_cb cb, void *arg);
enum http_member_op {
    HTTP_MEMBER_ADD,
    HTTP_MEMBER_REMOVE,
    HTTP_MEMBER_CONFIRM,
    HTTP_MEMBER_TRANSFER
};
/* cluster_add_voter, cluster_remove, cluster_confirm_leadership,
 * cluster_transfer_leadership. */
void http_cluster_member(struct http_server *srv, enum http_member_op op, uint64_t id,
                         const char *raft_addr, cluster_done_cb cb, void *arg);


/* End a request: like a write's completion (0: 200 empty; REG_E*: the
 * matching error), or with a JSON body. Both free r. */
void http_finish_write(struct http_req *r, int status);
void http_finish_json(struct http_req *r, json_t *body);
/* End with `code` and body (taken: JSON, or a JSON string sent as its
 * text) of Content-Type ctype, with the Consul headers. Frees r. */
void http_finish_json_code(struct http_req *r, int code, json_t *body, const char *ctype);
/* End with 200 and this body (taken) of this content type (NULL: none), with
 * the Consul headers. */
void http_finish_raw(struct http_req *r, struct evbuffer *body, const char *content_type);
/* A 200 whose body follows in pieces (evhttp_send_reply_chunk*): the
 * headers every reply carries, then the status line. http_stream_end
 * finishes it and frees r; client_gone: the connection closed under it
 * (libevent frees the request; nothing more is sent). */
void http_stream_start(struct http_req *r, const char *content_type);
/* The same, with X-Consul-Index: index (a read's answer streamed). */
void http_stream_start_at(struct http_req *r, const char *content_type, uint64_t index);
/* End a read: 200 with body (JSON text, taken), or the error in r->status;
 * X-Consul-Index: index. Frees r. */
void http_finish_read(struct http_req *r, struct evbuffer *body, uint64_t index);
void http_stream_end(struct http_req *r, bool client_gone);
/* Call cb when the client of r's connection goes (evhttp frees the
 * connection), until cleared with cb NULL: a streamed answer stops there.
 * One per connection (the HTTP guard holds evhttp's one slot). */
void http_on_client_gone(struct http_server *srv, struct evhttp_connection *evcon,
                         void (*cb)(struct evhttp_connection *, void *), void *arg);

/* Set r->status/errmsg; returns -1 for `return http_fail(...)`. */
int http_fail(struct http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The 404 of a check ID no check has, in Consul's words (its agent's
 * vetCheckUpdateWithAuthorizer); one %s, the ID. */
#define UNKNOWN_CHECK                                                                        \
    "Unknown check ID \"%s\". Ensure that the check ID is passed, not the check name."

/* Query parameters: value of the last `key` (NULL: absent or bare). */
const char *http_param(const struct http_req *r, const char *key);
bool http_has_param(const struct http_req *r, const char *key);
/* A flag Consul reads by its presence (stale, consistent): present at
 * all, whatever its value. */
bool http_flag(const struct http_req *r, const char *key);
/* ?passing, which Consul reads with strconv.ParseBool: bare is true, absent
 * false. REG_EINVAL: a value ParseBool refuses (checked on every health
 * route before it runs). */
int http_passing(const struct http_req *r, bool *out);

/* Go's strconv.ParseBool (1 t T TRUE true True, 0 f F FALSE false False):
 * 0 or REG_EINVAL. */
int http_parse_bool(const char *s, bool *out);

/* Request body as a JSON object. Returns 0, or fails the request (400). */
int http_body_json(struct http_req *r, json_t **out);

/* The node a write belongs to: the server the client sent it to (also
 * when it reached the leader forwarded). */
const char *http_origin_node(struct http_req *r);
const char *http_origin_node_addr(struct http_req *r);
/* ... and that node's Meta (a new reference). */
json_t *http_origin_node_meta(struct http_req *r);

/* Routing and query parsing (http_api.c), exposed for tests/unit/test_http_api.c.
 * http_find_route: the route for method and path, the longest pattern first
 * (NULL: *path_known says whether another method serves the path: 405, or
 * not: 404); *arg gets the URL-decoded tail of a pattern ending in '/'
 * (malloc'ed, the caller frees it). http_parse_query: the query string into
 * r->params (keys and values decoded, '+' is a space; in r's arena while it
 * has room when r came from the server, else each malloc'ed; freed with r). http_parse_blocking: ?index= and ?wait= (5m if absent, capped at
 * 10m, plus up to 1/16 jitter when the query may block: ?index= or ?hash=)
 * into r->min_index and r->wait_ms. Both return
 * 0, or -1 with r->status 400 and r->errmsg. */
const struct http_route *http_find_route(const char *method, const char *path, char **arg,
                                         bool *path_known);
int http_parse_query(struct http_req *r, const char *q) REG_MUSTCHECK;
int http_parse_blocking(struct http_req *r) REG_MUSTCHECK;

/* Body keys are matched case-insensitively, as Consul (Go) does, and in
 * snake_case too (tagged_addresses for TaggedAddresses). Borrowed. */
json_t *json_get_ci(json_t *obj, const char *key);


/* ?filter= and ?node-meta= (http_filter.c). http_filter_answer filters a
 * rendered answer in place (0, or -1 with a 400 in r). For answers that are
 * not lists of the filtered objects: http_filter_compile (0 with *out NULL
 * when there is no filter; -1 with a 400) and http_filter_keep per object. */
struct filter;
int http_filter_answer(struct http_req *r, json_t *out);
int http_filter_compile(struct http_req *r, struct filter **out);
bool http_filter_keep(struct http_req *r, const struct filter *f, json_t *obj);

/* The node a registration is filed under (borrowed strings; meta: an
 * object, borrowed). */
struct http_node {
    const char *node, *addr;
    json_t *meta;
    json_t *tagged; /* the node's TaggedAddresses (NULL: made from addr) */
};
/* Validate an agent-style service definition (Name, ID, Tags, ..., Check,
 * Checks) into the stored instance and check records (new references).
 * probe_checks: checks the checker runs (agent); otherwise catalog checks
 * (a given Status, never probed). 0, or -1 with a 400 in r. */
int http_build_registration(struct http_req *r, json_t *body, const struct http_node *node,
                            bool probe_checks, json_t **svc, json_t **checks);
/* One agent check definition (HTTP, TCP, TTL, ...) into its record. */
int http_build_agent_check(struct http_req *r, json_t *def, const char *sid, const char *sname,
                           const char *default_id, json_t **out);
/* One catalog HealthCheck ({CheckID, Name, Status, Notes, Output, ...}) into
 * its record: never probed (Type ""), status as given (http_catalog_write.c). */
int http_build_catalog_check(struct http_req *r, json_t *def, const char *sid, const char *sname,
                             const char *node, const char *default_id, json_t **out);

/* Consul JSON shapes. New references. */
json_t *render_node(struct http_server *srv, json_t *inst);
json_t *render_agent_service(struct http_server *srv, json_t *inst);
json_t *render_check(json_t *check, json_t *inst);
json_t *render_serf_check(struct http_server *srv, json_t *inst);

#endif
