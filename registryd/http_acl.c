/*
 * http_acl.c — ACLs on the HTTP API: the /v1/acl/... routes (bootstrap,
 * policies, tokens), the decision taken for every request before its
 * handler runs (http_acl_check), the filtering of list answers
 * (http_acl_filter, with X-Consul-Results-Filtered-By-ACLs) and the audit
 * line of every write and every denial (http_acl_audit).
 *
 * What each route needs follows Consul: service:write to register,
 * deregister, maintain a service and update its checks; service:read to see
 * it; node:read for nodes; agent:read for the agent's own endpoints;
 * operator:read/write for raft; management for snapshots and ACL writes
 * (acl:read for ACL reads). /v1/internal/... and forwarded requests need the
 * server token; a forwarded request is then judged again with the token of
 * the client who sent it (X-Registry-Client-Token).
 *
 * Denials answer 403 with "Permission denied: ..." (python-consul and the
 * Go client recognise it); an unknown token answers 403 "ACL not found".
 */
#define _GNU_SOURCE
#include "acl.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cluster.h"
#include "duration.h"
#include "http_internal.h"
#include "record.h"
#include "registry/error.h"
#include "tls.h"

/* ---- the request's token ---------------------------------------------- */

static const char *header(struct http_req *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

/* X-Consul-Token, Authorization: Bearer, then ?token= (Consul's order). */
static const char *client_token(struct http_req *r)
{
    const char *t;
    if (r->forwarded) {
        t = header(r, "X-Registry-Client-Token");
        return t && *t ? t : http_param(r, "token");
    }
    t = header(r, "X-Consul-Token");
    if (t && *t)
        return t;
    t = header(r, "Authorization");
    if (t && strncasecmp(t, "Bearer ", 7) == 0 && t[7])
        return t + 7;
    return http_param(r, "token");
}

const char *http_acl_client_token(struct http_req *r)
{
    return client_token(r);
}

static int deny(struct http_req *r, const char *perm, const char *name)
{
    return http_fail(r, 403,
                     "Permission denied: token with AccessorID '%s' lacks permission "
                     "'%s' on \"%.200s\"",
                     r->authz ? r->authz->accessor : "-", perm, name ? name : "");
}

static bool may(struct http_req *r, enum acl_resource res, const char *name, enum acl_access want)
{
    return acl_allowed(r->authz, res, name, want);
}

static int need(struct http_req *r, enum acl_resource res, const char *name, enum acl_access want)
{
    if (may(r, res, name, want))
        return 0;
    char perm[32];
    snprintf(perm, sizeof(perm), "%s:%s", acl_resource_name(res), acl_access_name(want));
    return deny(r, perm, name);
}

static bool is(const struct http_req *r, const char *path)
{
    return strcmp(r->route->path, path) == 0;
}

/* The request body as JSON (new reference), or NULL: the handler will
 * answer 400 for a body it cannot use. */
static json_t *peek_body(struct http_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || len > r->srv->opt.max_body_size)
        return NULL;
    return json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL);
}

/* service:write on the service of instance `id`; an unknown instance is
 * left to the handler (404/400). */
static int need_instance_write(struct http_req *r, struct store_read *rd, const char *id)
{
    json_t *inst = NULL;
    if (id == NULL || store_get_instance(rd, id, &inst) != 0)
        return 0;
    int rc =
        need(r, ACL_RES_SERVICE, json_string_value(json_object_get(inst, "Service")), ACL_WRITE);
    json_decref(inst);
    return rc;
}

/* Write on what an existing check `cid` belongs to: a registration naming
 * it would take it over (Consul vets the check it would overwrite). An
 * unknown check is new: nothing to vet. */
static int need_check_owner_write(struct http_req *r, struct store_read *rd, const char *cid)
{
    json_t *c = NULL;
    if (cid == NULL || store_get_check(rd, cid, &c) != 0)
        return 0;
    const char *sid = json_string_value(json_object_get(c, "ServiceID"));
    const char *node = json_string_value(json_object_get(c, "Node"));
    int rc = sid && *sid ? need_instance_write(r, rd, sid)
                         : need(r, ACL_RES_NODE, node ? node : r->srv->opt.node, ACL_WRITE);
    json_decref(c);
    return rc;
}

/* The checks a body's Check and Checks name by CheckID (or, for a check
 * registration, by Name, its default), each vetted as above; those with a
 * ServiceID also need write on that instance's service. */
static int need_checks_write(struct http_req *r, struct store_read *rd, json_t *body)
{
    json_t *one = json_get_ci(body, "Check"), *many = json_get_ci(body, "Checks"), *x;
    json_t *list = json_array();
    size_t i;
    int rc = 0;
    if (json_is_object(one))
        json_array_append(list, one);
    if (json_is_array(many))
        json_array_extend(list, many);
    json_array_foreach(list, i, x)
    {
        const char *cid = json_string_value(json_get_ci(x, "CheckID"));
        const char *sid = json_string_value(json_get_ci(x, "ServiceID"));
        if (rc == 0 && json_is_object(x))
            rc = need_check_owner_write(r, rd, cid);
        if (rc == 0 && sid && *sid)
            rc = need_instance_write(r, rd, sid);
    }
    json_decref(list);
    return rc;
}

/* The catalog and check registration writes (bodies name what they touch,
 * and what they would overwrite: an instance ID or a check ID that belongs
 * to another service needs write on that one too, as in Consul). */
static int body_needs(struct http_req *r, struct store_read *rd)
{
    json_t *body = peek_body(r);
    int rc = 0;
    if (body == NULL)
        return 0;
    if (is(r, "/v1/agent/service/register")) {
        const char *name = json_string_value(json_get_ci(body, "Name"));
        const char *id = json_string_value(json_get_ci(body, "ID"));
        rc = name ? need(r, ACL_RES_SERVICE, name, ACL_WRITE) : 0;
        if (rc == 0)
            rc = need_instance_write(r, rd, id && *id ? id : name);
        if (rc == 0)
            rc = need_checks_write(r, rd, body);
    } else if (is(r, "/v1/agent/check/register")) {
        const char *sid = json_string_value(json_get_ci(body, "ServiceID"));
        const char *cid = json_string_value(json_get_ci(body, "CheckID"));
        rc = sid && *sid ? need_instance_write(r, rd, sid)
                         : need(r, ACL_RES_NODE, r->srv->opt.node, ACL_WRITE);
        if (rc == 0)
            rc = need_check_owner_write(
                r, rd, cid && *cid ? cid : json_string_value(json_get_ci(body, "Name")));
    } else if (is(r, "/v1/catalog/register")) {
        const char *node = json_string_value(json_get_ci(body, "Node"));
        json_t *svc = json_get_ci(body, "Service");
        const char *name = json_string_value(json_get_ci(svc, "Service"));
        const char *id = json_string_value(json_get_ci(svc, "ID"));
        if (node)
            rc = need(r, ACL_RES_NODE, node, ACL_WRITE);
        if (rc == 0 && name)
            rc = need(r, ACL_RES_SERVICE, name, ACL_WRITE);
        if (rc == 0 && json_is_object(svc))
            rc = need_instance_write(r, rd, id && *id ? id : name);
        if (rc == 0)
            rc = need_checks_write(r, rd, body);
    } else if (is(r, "/v1/catalog/deregister")) {
        const char *node = json_string_value(json_get_ci(body, "Node"));
        const char *sid = json_string_value(json_get_ci(body, "ServiceID"));
        rc = sid && *sid ? need_instance_write(r, rd, sid)
             : node      ? need(r, ACL_RES_NODE, node, ACL_WRITE)
                         : 0;
    }
    json_decref(body);
    return rc;
}

/* The permission a route needs, before its handler runs. */
static int route_needs(struct http_req *r, struct store_read *rd)
{
    const char *node = r->srv->opt.node;
    json_t *obj = NULL;
    int rc = 0;

    if (strncmp(r->route->path, "/v1/internal/", 13) == 0) {
        if (!r->authz->server)
            return deny(r, "server", r->route->path);
        return 0;
    }
    if (is(r, "/v1/agent/service/register") || is(r, "/v1/agent/check/register") ||
        is(r, "/v1/catalog/register") || is(r, "/v1/catalog/deregister"))
        return body_needs(r, rd);
    if (is(r, "/v1/agent/maintenance"))
        return need(r, ACL_RES_NODE, node, ACL_WRITE);
    if (is(r, "/v1/agent/health/service/id/")) {
        if (store_get_instance(rd, r->arg, &obj) != 0)
            return need(r, ACL_RES_SERVICE, r->arg, ACL_READ);
        rc = need(r, ACL_RES_SERVICE, json_string_value(json_object_get(obj, "Service")), ACL_READ);
        json_decref(obj);
        return rc;
    }
    if (is(r, "/v1/agent/health/service/name/"))
        return need(r, ACL_RES_SERVICE, r->arg, ACL_READ);
    if (is(r, "/v1/agent/service/deregister/") || is(r, "/v1/agent/service/maintenance/") ||
        is(r, "/v1/agent/service/")) {
        enum acl_access want = strcmp(r->route->method, "GET") == 0 && is(r, "/v1/agent/service/")
                                   ? ACL_READ
                                   : ACL_WRITE;
        if (store_get_instance(rd, r->arg, &obj) != 0)
            return want == ACL_READ ? need(r, ACL_RES_SERVICE, r->arg, ACL_READ) : 0;
        rc = need(r, ACL_RES_SERVICE, json_string_value(json_object_get(obj, "Service")), want);
        json_decref(obj);
        return rc;
    }
    if (strncmp(r->route->path, "/v1/agent/check/", 16) == 0 && r->arg != NULL) {
        if (store_get_check(rd, r->arg, &obj) != 0)
            return 0; /* the handler answers 404 */
        const char *svc = json_string_value(json_object_get(obj, "ServiceName"));
        const char *cnode = json_string_value(json_object_get(obj, "Node"));
        if (svc && *svc)
            rc = need(r, ACL_RES_SERVICE, svc, ACL_WRITE);
        else
            rc = need(r, ACL_RES_NODE, cnode ? cnode : node, ACL_WRITE);
        json_decref(obj);
        return rc;
    }
    if (is(r, "/v1/agent/self") || is(r, "/v1/agent/metrics"))
        return need(r, ACL_RES_AGENT, node, ACL_READ);
    if (is(r, "/v1/agent/leave"))
        return need(r, ACL_RES_AGENT, node, ACL_WRITE);
    if (is(r, "/v1/catalog/node/") || is(r, "/v1/health/node/") ||
        is(r, "/v1/catalog/node-services/"))
        return need(r, ACL_RES_NODE, r->arg, ACL_READ);
    if (is(r, "/v1/operator/raft/configuration"))
        return need(r, ACL_RES_OPERATOR, "", ACL_READ);
    if (is(r, "/v1/operator/raft/transfer-leader"))
        return need(r, ACL_RES_OPERATOR, "", ACL_WRITE);
    if (is(r, "/v1/operator/raft/peer")) /* a server asks it to leave (PUT /v1/agent/leave) */
        return r->authz->server ? 0 : need(r, ACL_RES_OPERATOR, "", ACL_WRITE);
    if (is(r, "/v1/snapshot"))
        return r->authz->management ? 0 : deny(r, "acl:write (management)", "snapshot");
    return 0; /* lists are filtered; status, datacenters, ui and /v1/acl decide themselves */
}

int http_acl_check(struct http_req *r)
{
    struct store_read *rd = NULL;
    /* kept in the request itself: no allocation per request */
    memset(&r->authz_store, 0, sizeof(r->authz_store));
    r->authz = &r->authz_store;
    if (!acl_enabled()) {
        r->authz->enabled = false;
        r->authz->found = true;
        /* the internal routes answer servers: without TLS (which checked
         * the certificate) they show cluster_key_file's proof, as the
         * outer token of a forwarded request or as any client's */
        /* raft/self only reads what /v1/operator/raft/configuration shows
         * anyone (registryctl leave asks it who it talks to) */
        bool internal = r->forwarded || (strncmp(r->route->path, "/v1/internal/", 13) == 0 &&
                                         strcmp(r->route->path, "/v1/internal/raft/self") != 0);
        if (internal && !tls_enabled() &&
            !acl_internal_caller_ok(r->forwarded ? header(r, "X-Consul-Token") : client_token(r)))
            return http_fail(r, 403, "Permission denied: internal routes answer only servers "
                                     "(their token proves cluster_key_file's key)");
        return 0;
    }
    if (store_read_begin(r->srv->opt.store, &rd) != 0)
        return http_fail(r, 500, "store unavailable");
    int rc;
    if (r->forwarded) {
        /* The outer request must come from a server... */
        rc = acl_resolve(rd, header(r, "X-Consul-Token"), r->authz);
        bool server = rc == 0 && r->authz->server;
        acl_authz_fini(r->authz);
        if (!server) {
            store_read_end(rd);
            return deny(r, "server", "/v1/internal/forward");
        }
    }
    /* ...and the request itself is judged with the client's token. */
    rc = acl_resolve(rd, client_token(r), r->authz);
    if (rc != 0) {
        store_read_end(rd);
        return http_fail(r, 500, "ACL resolution failed: %s", reg_strerror(rc));
    }
    if (!r->authz->found) {
        store_read_end(rd);
        /* A follower may not have applied a token the leader has (created
         * through this server a moment ago): as Consul, which forwards
         * before it resolves, the leader judges it. One this server has and
         * finds expired is judged here (each server by its own clock, as
         * Consul's). */
        struct cluster_status st;
        cluster_get_status(r->srv->opt.cluster, &st);
        if (!r->forwarded && !r->authz->expired && !st.is_leader && st.known_leader) {
            r->acl_at_leader = true;
            return 0;
        }
        return http_fail(r, 403, "ACL not found");
    }
    rc = route_needs(r, rd);
    store_read_end(rd);
    return rc;
}

void http_acl_req_free(struct http_req *r)
{
    if (r->authz) {
        acl_authz_fini(r->authz);
        r->authz = NULL;
    }
}

bool http_acl_bypass_cache(struct http_req *r)
{
    return r->authz && r->authz->enabled && !r->authz->management;
}

/* ---- list filtering ---------------------------------------------------- */

/* A check for the agent's endpoints: its service's read, or for a
 * node-level check its node's (Consul's filterChecksWithAuthorizer); for
 * the catalog's (of_catalog), its node's read and its service's too
 * (HealthCheck.CanRead). */
static bool check_visible(struct http_req *r, json_t *check, bool of_catalog)
{
    const char *svc = json_string_value(json_object_get(check, "ServiceName"));
    const char *node = json_string_value(json_object_get(check, "Node"));
    bool node_ok = (!of_catalog && svc && *svc) ||
                   may(r, ACL_RES_NODE, node ? node : r->srv->opt.node, ACL_READ);
    return node_ok && (!(svc && *svc) || may(r, ACL_RES_SERVICE, svc, ACL_READ));
}

/* Drop members of an object (keyed by ID) whose service the token may not
 * read: `field` names the service in each member (NULL: the key is the
 * name). Returns how many were dropped. */
static int filter_object(struct http_req *r, json_t *obj, const char *field, bool checks)
{
    const char *key;
    json_t *v, *tmp;
    int dropped = 0;
    json_object_foreach_safe(obj, tmp, key, v)
    {
        bool ok;
        if (checks)
            ok = check_visible(r, v, false);
        else
            ok = may(r, ACL_RES_SERVICE, field ? json_string_value(json_object_get(v, field)) : key,
                     ACL_READ);
        if (!ok) {
            json_object_del(obj, key);
            dropped++;
        }
    }
    return dropped;
}

/* Arrays: of nodes (named by `node_field`), of instances (their "Service"),
 * or of checks (node_field NULL, services false). */
static int filter_array(struct http_req *r, json_t *arr, const char *node_field, bool services)
{
    int dropped = 0;
    for (size_t i = json_array_size(arr); i-- > 0;) {
        json_t *v = json_array_get(arr, i);
        bool ok = node_field ? may(r, ACL_RES_NODE,
                                   json_string_value(json_object_get(v, node_field)), ACL_READ)
                  : services ? may(r, ACL_RES_SERVICE,
                                   json_string_value(json_object_get(v, "Service")), ACL_READ)
                             : check_visible(r, v, true);
        if (!ok) {
            json_array_remove(arr, i);
            dropped++;
        }
    }
    return dropped;
}

/* Drop the entries of arr whose node the token may not read: the node is
 * entry.Node.Node (health entries, nested) or entry.Node. Returns how many
 * were dropped. */
static int filter_by_node(struct http_req *r, json_t *arr, bool nested)
{
    int dropped = 0;
    for (size_t i = json_array_size(arr); i-- > 0;) {
        json_t *n = json_object_get(json_array_get(arr, i), "Node");
        if (nested)
            n = json_object_get(n, "Node");
        const char *node = json_string_value(n);
        if (!may(r, ACL_RES_NODE, node ? node : r->srv->opt.node, ACL_READ)) {
            json_array_remove(arr, i);
            dropped++;
        }
    }
    return dropped;
}

void http_acl_filter(struct http_req *r, json_t **out)
{
    if (r->authz == NULL || !r->authz->enabled || r->authz->management || *out == NULL)
        return;
    int dropped = 0;
    json_t *o = *out;
    if (is(r, "/v1/catalog/services")) {
        dropped = filter_object(r, o, NULL, false);
    } else if (is(r, "/v1/catalog/service/") || is(r, "/v1/health/service/") ||
               is(r, "/v1/health/checks/")) {
        if (!may(r, ACL_RES_SERVICE, r->arg, ACL_READ)) {
            dropped = (int)json_array_size(o);
            json_decref(o);
            *out = json_array();
        } else {
            /* each entry shows its node: node:read on it too, as Consul's
             * CheckServiceNode / ServiceNode / HealthCheck CanRead */
            dropped = filter_by_node(r, o, is(r, "/v1/health/service/"));
        }
    } else if (is(r, "/v1/catalog/nodes")) {
        dropped = filter_array(r, o, "Node", false);
    } else if (is(r, "/v1/agent/members")) {
        dropped = filter_array(r, o, "Name", false);
    } else if (is(r, "/v1/catalog/node-services/")) {
        dropped = filter_array(r, json_object_get(o, "Services"), NULL, true);
    } else if (is(r, "/v1/catalog/node/")) {
        dropped = filter_object(r, json_object_get(o, "Services"), "Service", false);
    } else if (is(r, "/v1/health/node/") || is(r, "/v1/health/state/")) {
        dropped = filter_array(r, o, NULL, false);
    } else if (is(r, "/v1/agent/services")) {
        dropped = filter_object(r, o, "Service", false);
    } else if (is(r, "/v1/agent/checks")) {
        dropped = filter_object(r, o, NULL, true);
    }
    if (dropped > 0)
        evhttp_add_header(evhttp_request_get_output_headers(r->req),
                          "X-Consul-Results-Filtered-By-ACLs", "true");
}

/* ---- audit -------------------------------------------------------------- */

void http_acl_audit(struct http_req *r, const char *method, int status)
{
    if (!acl_enabled())
        return;
    bool write = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
    if (!write && status != 403 && status != 401)
        return;
    char client[INET6_ADDRSTRLEN + 8] = "-";
    struct evhttp_connection *conn = evhttp_request_get_connection(r->req);
    char *host = NULL;
    ev_uint16_t port = 0;
    if (conn) {
        evhttp_connection_get_peer(conn, &host, &port);
        if (host)
            snprintf(client, sizeof(client), "%s:%u", host, (unsigned)port);
    }
    acl_audit(client, r->authz ? r->authz->accessor : "-", method, r->path ? r->path : "-", status);
}

/* ---- /v1/acl ------------------------------------------------------------- */

/* A CreateTime: whole seconds, UTC. */
static void time_rfc3339(const struct timespec *ts, char *out, size_t len)
{
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void now_rfc3339(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_rfc3339(&ts, out, len);
}

static int acl_on(struct http_req *r)
{
    if (!acl_enabled())
        return http_fail(r, 401, "ACL support disabled");
    return 0;
}

/* Consul's answer once ACLs were bootstrapped (ACL.BootstrapTokens): 403
 * "Permission denied: ACL bootstrap no longer allowed (reset index: N)", N
 * the index the bootstrap was applied at (0 when only the initial
 * management token took the bootstrap: it lives in the configuration). */
static int bootstrap_refused(struct http_req *r)
{
    struct store_read *rd;
    uint64_t index = 0;
    if (store_read_begin(r->srv->opt.store, &rd) == 0) {
        (void)store_acl_bootstrapped(rd, &index);
        store_read_end(rd);
    }
    return http_fail(r, 403,
                     "Permission denied: ACL bootstrap no longer allowed (reset index: %llu)",
                     (unsigned long long)index);
}

struct acl_write {
    struct http_req *r;
    json_t *answer; /* sent when the command applied */
    bool bootstrap;
};

static void acl_write_done(void *arg, int status)
{
    struct acl_write *w = arg;
    struct http_req *r = w->r;
    json_t *answer = w->answer;
    bool bootstrap = w->bootstrap;
    free(w);
    if (status == 0) {
        http_finish_json(r, answer);
        return;
    }
    json_decref(answer);
    if (bootstrap && status == REG_EINVAL)
        bootstrap_refused(r); /* another bootstrap was applied first */
    http_finish_write(r, status);
}

/* Submit CMD_ACL; answer `answer` (taken) once applied. */
static void submit(struct http_req *r, const char *op, const char *kind, const char *id,
                   json_t *record, json_t *answer)
{
    struct command cmd = {CMD_ACL,
                          json_pack("{s:s, s:s, s:s, s:o}", "Op", op, "Kind", kind, "ID", id,
                                    "Record", record ? json_incref(record) : json_object())};
    void *buf;
    size_t len;
    struct acl_write *w = calloc(1, sizeof(*w));
    int rc = cmd.args && w ? cmd_encode(&cmd, cluster_alloc, &buf, &len) : REG_ENOMEM;
    cmd_fini(&cmd);
    if (rc != 0) {
        free(w);
        json_decref(answer);
        http_finish_write(r, rc);
        return;
    }
    w->r = r;
    w->answer = answer;
    w->bootstrap = strcmp(op, "bootstrap") == 0;
    http_cluster_submit(r->srv, false, buf, len, acl_write_done, w);
}

/* Fail r with its status and end it (for custom handlers). */
static void end_failed(struct http_req *r)
{
    http_finish_write(r, REG_EINVAL);
}

static int begin(struct http_req *r, struct store_read **rd)
{
    if (store_read_begin(r->srv->opt.store, rd) != 0)
        return http_fail(r, 500, "store unavailable");
    return 0;
}

/* PUT /v1/acl/bootstrap: once, a management token; then 403. With an
 * initial management token configured, never: Consul's leader applies that
 * token through the bootstrap request as soon as it leads, if ACLs can
 * still be bootstrapped (leader.go, initializeManagementToken), so the
 * endpoint finds them bootstrapped. The leader judges (the route is sent
 * there), by its configuration. */
static void do_bootstrap(struct http_req *r)
{
    struct store_read *rd;
    if (acl_on(r) != 0 || begin(r, &rd) != 0)
        return end_failed(r);
    bool done = store_acl_bootstrapped(rd, NULL);
    store_read_end(rd);
    if (done || acl_initial_management_configured()) {
        bootstrap_refused(r);
        return end_failed(r);
    }
    char accessor[ACL_ID_LEN + 1], secret[ACL_ID_LEN + 1], when[32];
    char *hash = NULL;
    if (acl_new_uuid(accessor) != 0 || acl_new_uuid(secret) != 0 ||
        acl_hash_secret(secret, &hash) != 0) {
        http_fail(r, 500, "cannot make a token");
        return end_failed(r);
    }
    now_rfc3339(when, sizeof(when));
    json_t *rec =
        json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:b, s:s}", "AccessorID", accessor, "SecretHash",
                  hash, "Description", "Bootstrap Token (Global Management)", "Policies", "ID",
                  ACL_MANAGEMENT_POLICY_ID, "Name", ACL_MANAGEMENT_POLICY_NAME, "Local", 0,
                  "CreateTime", when);
    free(hash);
    json_t *answer = json_deep_copy(rec);
    json_object_del(answer, "SecretHash");
    json_object_set_new(answer, "SecretID", json_string(secret));
    submit(r, "bootstrap", "token", accessor, rec, answer);
    json_decref(rec);
}

/* ---- policies ---- */

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 128 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

struct by_name {
    const char *name;
    json_t *found;
};

static int match_policy_name(json_t *pol, void *arg)
{
    struct by_name *b = arg;
    const char *n = json_string_value(json_object_get(pol, "Name"));
    if (n && strcmp(n, b->name) == 0) {
        b->found = json_incref(pol);
        return 1;
    }
    return 0;
}

static json_t *policy_by_name(struct store_read *rd, const char *name)
{
    if (strcmp(name, ACL_MANAGEMENT_POLICY_NAME) == 0)
        return acl_management_policy();
    struct by_name b = {name, NULL};
    (void)store_acl_each(rd, "policy", match_policy_name, &b);
    return b.found;
}

static json_t *policy_by_id(struct store_read *rd, const char *id)
{
    json_t *p = NULL;
    if (strcmp(id, ACL_MANAGEMENT_POLICY_ID) == 0)
        return acl_management_policy();
    return store_acl_get(rd, "policy", id, &p) == 0 ? p : NULL;
}

/* PUT /v1/acl/policy and PUT /v1/acl/policy/:id */
static void do_policy_write(struct http_req *r)
{
    struct store_read *rd = NULL;
    json_t *body = NULL, *old = NULL, *clash = NULL;
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_WRITE) != 0 || http_body_json(r, &body) != 0)
        return end_failed(r);
    const char *name = json_string_value(json_get_ci(body, "Name"));
    const char *desc = json_string_value(json_get_ci(body, "Description"));
    json_t *rules_v = json_get_ci(body, "Rules");
    const char *rules = json_string_value(rules_v);
    char id[ACL_ID_LEN + 1], err[300];
    if (!valid_name(name)) {
        http_fail(r, 400, "Invalid Policy: invalid Name (1-128 of A-Z a-z 0-9 _ -)");
        goto fail;
    }
    if (rules_v != NULL && !json_is_null(rules_v) && rules == NULL) {
        http_fail(r, 400, "Invalid Policy: Rules must be a string");
        goto fail;
    }
    struct acl_rules parsed = {0};
    if (rules && acl_rules_parse(rules, strlen(rules), &parsed, err, sizeof(err)) != 0) {
        acl_rules_fini(&parsed);
        http_fail(r, 400, "Invalid Policy: failed to parse rules: %s", err);
        goto fail;
    }
    acl_rules_fini(&parsed);
    if (begin(r, &rd) != 0)
        goto fail;
    if (r->arg) {
        if (strcmp(r->arg, ACL_MANAGEMENT_POLICY_ID) == 0) {
            http_fail(r, 400, "Invalid Policy: the global-management policy cannot be changed");
            goto fail;
        }
        if (store_acl_get(rd, "policy", r->arg, &old) != 0) {
            http_fail(r, 404, "ACL not found: no policy %s", r->arg);
            goto fail;
        }
        snprintf(id, sizeof(id), "%s", r->arg);
    } else if (acl_new_uuid(id) != 0) {
        http_fail(r, 500, "cannot make an ID");
        goto fail;
    }
    clash = policy_by_name(rd, name);
    if (clash && strcmp(json_string_value(json_object_get(clash, "ID")), id) != 0) {
        http_fail(r, 400, "Invalid Policy: A Policy with Name \"%s\" already exists", name);
        goto fail;
    }
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:o}", "ID", id, "Name", name, "Description",
                            desc ? desc : "", "Rules", rules ? rules : "", "Datacenters",
                            json_is_array(json_get_ci(body, "Datacenters"))
                                ? json_deep_copy(json_get_ci(body, "Datacenters"))
                                : json_array());
    store_read_end(rd);
    json_decref(old);
    json_decref(clash);
    json_decref(body);
    submit(r, "set", "policy", id, rec, json_incref(rec));
    json_decref(rec);
    return;
fail:
    store_read_end(rd);
    json_decref(old);
    json_decref(clash);
    json_decref(body);
    end_failed(r);
}

static int read_policy(struct http_req *r, struct store_read *rd, json_t **out)
{
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_READ) != 0)
        return -1;
    bool by_name = is(r, "/v1/acl/policy/name/");
    json_t *p = by_name ? policy_by_name(rd, r->arg) : policy_by_id(rd, r->arg);
    if (p == NULL)
        return http_fail(r, 404, "ACL not found");
    *out = p;
    return 0;
}

static int add_policy_stub(json_t *pol, void *arg)
{
    json_t *stub = json_deep_copy(pol);
    json_object_del(stub, "Rules");
    json_array_append_new(arg, stub);
    return 0;
}

static int read_policies(struct http_req *r, struct store_read *rd, json_t **out)
{
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_READ) != 0)
        return -1;
    json_t *arr = json_array();
    json_t *mgmt = acl_management_policy();
    add_policy_stub(mgmt, arr);
    json_decref(mgmt);
    (void)store_acl_each(rd, "policy", add_policy_stub, arr);
    *out = arr;
    return 0;
}

static void do_policy_delete(struct http_req *r)
{
    struct store_read *rd;
    json_t *old = NULL;
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_WRITE) != 0)
        return end_failed(r);
    if (strcmp(r->arg, ACL_MANAGEMENT_POLICY_ID) == 0) {
        http_fail(r, 400, "Invalid Policy: the global-management policy cannot be deleted");
        return end_failed(r);
    }
    if (begin(r, &rd) != 0)
        return end_failed(r);
    int rc = store_acl_get(rd, "policy", r->arg, &old);
    store_read_end(rd);
    json_decref(old);
    if (rc != 0) {
        http_fail(r, 404, "ACL not found: no policy %s", r->arg);
        return end_failed(r);
    }
    submit(r, "delete", "policy", r->arg, NULL, json_true());
}

/* ---- tokens ---- */

/* Body Policies [{ID}|{Name}] -> [{ID, Name}] of existing policies. */
static json_t *policy_links(struct http_req *r, struct store_read *rd, json_t *list)
{
    json_t *out = json_array();
    size_t i;
    json_t *link;
    if (list != NULL && !json_is_null(list) && !json_is_array(list)) {
        http_fail(r, 400, "Invalid Token: Policies must be a list");
        json_decref(out);
        return NULL;
    }
    json_array_foreach(list, i, link)
    {
        const char *id = json_string_value(json_get_ci(link, "ID"));
        const char *name = json_string_value(json_get_ci(link, "Name"));
        json_t *p = id && *id ? policy_by_id(rd, id) : name ? policy_by_name(rd, name) : NULL;
        if (p == NULL) {
            http_fail(r, 400, "Invalid Token: no such ACL policy %s \"%.128s\"",
                      id && *id ? "ID" : "name",
                      id && *id ? id
                      : name    ? name
                                : "");
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:O, s:O}", "ID", json_object_get(p, "ID"), "Name",
                                             json_object_get(p, "Name")));
        json_decref(p);
    }
    return out;
}

static bool valid_uuid(const char *s)
{
    if (s == NULL || strlen(s) != ACL_ID_LEN)
        return false;
    for (int i = 0; i < ACL_ID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : strchr("0123456789abcdefABCDEF", s[i]) == NULL || s[i] == '\0')
            return false;
    }
    return true;
}

/* Add s to the sorted array of strings dcs unless it is there. */
static void add_sorted(json_t *dcs, const char *s)
{
    size_t i = 0;
    while (i < json_array_size(dcs) && strcmp(json_string_value(json_array_get(dcs, i)), s) < 0)
        i++;
    if (i == json_array_size(dcs) || strcmp(json_string_value(json_array_get(dcs, i)), s) != 0)
        json_array_insert_new(dcs, i, json_string(s));
}

/* A body's ServiceIdentities [{ServiceName, Datacenters}], checked and
 * deduplicated as Consul's TokenWriter does (one per name, Datacenters
 * merged and sorted): a new array, or NULL with the 400 set. */
static json_t *service_identities(struct http_req *r, json_t *list, bool local)
{
    json_t *out = json_array(), *id, *dc;
    size_t i, j;
    if (list != NULL && !json_is_null(list) && !json_is_array(list))
        goto not_a_list;
    json_array_foreach(list, i, id)
    {
        if (!json_is_object(id))
            goto not_a_list;
        json_t *name_v = json_get_ci(id, "ServiceName"), *dcs = json_get_ci(id, "Datacenters");
        const char *name = json_string_value(name_v);
        if ((name_v != NULL && !json_is_null(name_v) && name == NULL) ||
            (dcs != NULL && !json_is_null(dcs) && !json_is_array(dcs)))
            goto not_a_list;
        json_array_foreach(dcs, j, dc) if (!json_is_string(dc)) goto not_a_list;
        if (name == NULL || *name == '\0') {
            http_fail(r, 400, "Service identity is missing the service name field on this token");
            goto fail;
        }
        if (local && json_array_size(dcs) > 0) {
            http_fail(r, 400,
                      "Service identity \"%.100s%s\" cannot specify a list of datacenters on a "
                      "local token",
                      name, strlen(name) > 100 ? "..." : "");
            goto fail;
        }
        if (!record_identity_name_ok(name)) {
            /* the name cut short: an error message holds 255 bytes */
            http_fail(r, 400,
                      "Service identity \"%.100s%s\" has an invalid name. Only lowercase "
                      "alphanumeric characters, '-' and '_' are allowed",
                      name, strlen(name) > 100 ? "..." : "");
            goto fail;
        }
        json_t *entry = NULL, *e;
        size_t k;
        json_array_foreach(out, k, e)
        {
            if (strcmp(json_string_value(json_object_get(e, "ServiceName")), name) == 0)
                entry = e;
        }
        if (entry == NULL) {
            entry = json_pack("{s:s, s:[]}", "ServiceName", name, "Datacenters");
            json_array_append_new(out, entry);
        }
        json_array_foreach(dcs, j, dc)
            add_sorted(json_object_get(entry, "Datacenters"), json_string_value(dc));
    }
    json_array_foreach(out, i, id) if (json_array_size(json_object_get(id, "Datacenters")) == 0)
        json_object_del(id, "Datacenters"); /* Consul's omitempty */
    return out;
not_a_list:
    http_fail(r, 400,
              "Token decoding failed: ServiceIdentities must be a list of {\"ServiceName\": "
              "string, \"Datacenters\": [string]}");
fail:
    json_decref(out);
    return NULL;
}

/* A body's NodeIdentities [{NodeName, Datacenter}], checked and
 * deduplicated as Consul's TokenWriter does: a new array, or NULL with the
 * 400 set. */
static json_t *node_identities(struct http_req *r, json_t *list)
{
    json_t *out = json_array(), *id, *e;
    size_t i, k;
    if (list != NULL && !json_is_null(list) && !json_is_array(list))
        goto not_a_list;
    json_array_foreach(list, i, id)
    {
        if (!json_is_object(id))
            goto not_a_list;
        json_t *name_v = json_get_ci(id, "NodeName"), *dc_v = json_get_ci(id, "Datacenter");
        const char *name = json_string_value(name_v), *dc = json_string_value(dc_v);
        if ((name_v != NULL && !json_is_null(name_v) && name == NULL) ||
            (dc_v != NULL && !json_is_null(dc_v) && dc == NULL))
            goto not_a_list;
        if (name == NULL || *name == '\0') {
            http_fail(r, 400, "Node identity is missing the node name field on this token");
            goto fail;
        }
        if (dc == NULL || *dc == '\0') {
            http_fail(r, 400, "Node identity is missing the datacenter field on this token");
            goto fail;
        }
        if (!record_identity_name_ok(name)) {
            http_fail(r, 400,
                      "Node identity has an invalid name. Only lowercase alphanumeric "
                      "characters, '-' and '_' are allowed");
            goto fail;
        }
        bool seen = false;
        json_array_foreach(out, k, e)
        {
            seen = seen || (strcmp(json_string_value(json_object_get(e, "NodeName")), name) == 0 &&
                            strcmp(json_string_value(json_object_get(e, "Datacenter")), dc) == 0);
        }
        if (!seen)
            json_array_append_new(out, json_pack("{s:s, s:s}", "NodeName", name, "Datacenter", dc));
    }
    return out;
not_a_list:
    http_fail(r, 400,
              "Token decoding failed: NodeIdentities must be a list of {\"NodeName\": "
              "string, \"Datacenter\": string}");
fail:
    json_decref(out);
    return NULL;
}

/* A body's Roles: registryd keeps no roles (a token links policies and
 * identities directly), so a token naming one is refused as Consul refuses
 * a role that does not exist (TokenWriter's normalizeRoleLinks: by ID when
 * one is given, else by name), rather than linked to nothing. 0, or -1 with
 * the 400 set. */
static int no_roles(struct http_req *r, json_t *list)
{
    json_t *link = json_array_get(list, 0);
    if (list == NULL || json_is_null(list) || (json_is_array(list) && link == NULL))
        return 0;
    if (!json_is_object(link))
        return http_fail(r, 400,
                         "Token decoding failed: Roles must be a list of {\"ID\": "
                         "string} or {\"Name\": string}");
    const char *id = json_string_value(json_get_ci(link, "ID"));
    const char *name = json_string_value(json_get_ci(link, "Name"));
    if (id && *id)
        return http_fail(r, 400, "No such ACL role with ID \"%.100s\"", id);
    return http_fail(r, 400, "No such ACL role with name \"%.100s\"", name ? name : "");
}

/* Set (a non-empty list) or remove (none) field of rec; takes list. */
static void set_list(json_t *rec, const char *field, json_t *list)
{
    if (json_array_size(list) > 0)
        json_object_set_new(rec, field, list);
    else {
        json_object_del(rec, field);
        json_decref(list);
    }
}

/* A new token's record (create, clone); svc_ids and node_ids are taken
 * (NULL or empty: none); expires "" for none. Its CreateTime is to the
 * nanosecond, as Consul's: an ExpirationTime from a TTL is it + TTL. */
static json_t *new_token_record(const char *accessor, const char *hash, const char *desc,
                                json_t *links, bool local, const struct timespec *now,
                                json_t *svc_ids, json_t *node_ids, const char *expires)
{
    char when[40];
    rfc3339_format(now, when, sizeof(when));
    json_t *rec = json_pack("{s:s, s:s, s:s, s:O, s:b, s:s}", "AccessorID", accessor,
                            "SecretHash", hash, "Description", desc ? desc : "", "Policies",
                            links, "Local", local, "CreateTime", when);
    if (rec == NULL) {
        json_decref(svc_ids);
        json_decref(node_ids);
        return NULL;
    }
    set_list(rec, "ServiceIdentities", svc_ids);
    set_list(rec, "NodeIdentities", node_ids);
    if (expires[0])
        json_object_set_new(rec, "ExpirationTime", json_string(expires));
    return rec;
}

/* Go's zero time (0001-01-01T00:00:00Z): Consul's HasExpirationTime takes
 * it for none. */
#define GO_ZERO_TIME_SEC (-62135596800LL)

/* ExpirationTTL and ExpirationTime of a token body, as Consul decodes them:
 * a Go duration string or a number of nanoseconds; an RFC 3339 time.
 * 0, or -1 with the 400 set (naming the field). */
static int expiration_fields(struct http_req *r, json_t *body, int64_t *ttl, bool *has_time,
                             struct timespec *when)
{
    json_t *t = json_get_ci(body, "ExpirationTTL"), *e = json_get_ci(body, "ExpirationTime");
    *ttl = 0;
    *has_time = false;
    if (json_is_string(t)) {
        if (duration_parse_ns(json_string_value(t), ttl) != 0)
            return http_fail(r, 400,
                             "Token decoding failed: ExpirationTTL: time: invalid duration "
                             "\"%.64s\"",
                             json_string_value(t));
    } else if (json_is_integer(t)) {
        *ttl = (int64_t)json_integer_value(t);
    } else if (json_is_real(t) && json_real_value(t) > -9.2e18 && json_real_value(t) < 9.2e18) {
        *ttl = (int64_t)json_real_value(t); /* Go: time.Duration(float64) */
    } else if (t != NULL && !json_is_null(t)) {
        return http_fail(r, 400,
                         "Token decoding failed: ExpirationTTL must be a duration such as "
                         "\"1h\" or \"90s\", or a number of nanoseconds");
    }
    if (e != NULL && !json_is_null(e)) {
        if (!json_is_string(e) || rfc3339_parse(json_string_value(e), when) != 0)
            return http_fail(r, 400,
                             "Token decoding failed: ExpirationTime must be an RFC 3339 "
                             "time such as \"2006-01-02T15:04:05Z\"");
        *has_time = !((long long)when->tv_sec == GO_ZERO_TIME_SEC && when->tv_nsec == 0);
    }
    return 0;
}

/* b - a in nanoseconds, saturated as Go's Time.Sub. */
static int64_t span_ns(const struct timespec *a, const struct timespec *b)
{
    int64_t sec = (int64_t)b->tv_sec - (int64_t)a->tv_sec;
    if (sec > INT64_MAX / 1000000000 - 1)
        return INT64_MAX;
    if (sec < INT64_MIN / 1000000000 + 1)
        return INT64_MIN;
    return sec * 1000000000 + (b->tv_nsec - a->tv_nsec);
}

/* A new token's ExpirationTime, checked as Consul's TokenWriter.Create
 * does: from ttl (> 0) or when (has_time), CreateTime being now. out: the
 * time in UTC, "" for none. 0, or -1 with the 400 set. */
static int new_expiration(struct http_req *r, int64_t ttl, bool has_time, struct timespec when,
                          const struct timespec *now, char *out, size_t outlen)
{
    char a[32], b[32];
    int64_t lo, hi;
    out[0] = '\0';
    if (ttl < 0) {
        duration_format_ns(ttl, a, sizeof(a));
        return http_fail(r, 400, "Token Expiration TTL '%s' should be > 0", a);
    }
    if (ttl > 0) {
        if (has_time)
            return http_fail(r, 400, "Token Expiration TTL and Expiration Time cannot both be set");
        when.tv_sec = now->tv_sec + (time_t)(ttl / 1000000000);
        when.tv_nsec = now->tv_nsec + (long)(ttl % 1000000000);
        if (when.tv_nsec >= 1000000000) {
            when.tv_sec++;
            when.tv_nsec -= 1000000000;
        }
        has_time = true;
    }
    if (!has_time)
        return 0;
    if (timespec_cmp(&when, now) < 0)
        return http_fail(r, 400, "ExpirationTime cannot be before CreateTime");
    int64_t in = span_ns(now, &when);
    acl_token_ttl_bounds(&lo, &hi);
    if (in > hi || in < lo) {
        duration_format_ns(in > hi ? hi : lo, a, sizeof(a));
        duration_format_ns(in, b, sizeof(b));
        return http_fail(r, 400, "ExpirationTime cannot be %s than %s in the future (was %s)",
                         in > hi ? "more" : "less", a, b);
    }
    rfc3339_format(&when, out, outlen);
    return 0;
}

/* An update may restate a token's ExpirationTime, not change it (Consul's
 * TokenWriter.Update). */
static bool same_expiration(json_t *old, const struct timespec *when)
{
    const char *was = json_string_value(json_object_get(old, "ExpirationTime"));
    struct timespec t;
    return was != NULL && rfc3339_parse(was, &t) == 0 && timespec_cmp(&t, when) == 0;
}

static void do_token_clone(struct http_req *r, const char *from);

/* PUT /v1/acl/token, PUT /v1/acl/token/:accessor and (its argument may hold
 * a slash: http_acl_arg_slashes) PUT /v1/acl/token/:accessor/clone */
static void do_token_write(struct http_req *r)
{
    const char *slash = r->arg ? strchr(r->arg, '/') : NULL;
    if (slash != NULL) {
        char from[ACL_ID_LEN + 1];
        if (strcmp(slash, "/clone") != 0 || (size_t)(slash - r->arg) > ACL_ID_LEN) {
            http_fail(r, 400,
                      "Invalid path argument (empty, too long, or with a slash, NUL or "
                      "control character)");
            return end_failed(r);
        }
        snprintf(from, sizeof(from), "%.*s", (int)(slash - r->arg), r->arg);
        return do_token_clone(r, from);
    }

    struct store_read *rd = NULL;
    json_t *body = NULL, *old = NULL, *links = NULL, *rec = NULL, *answer = NULL;
    json_t *svc_ids = NULL, *node_ids = NULL;
    char accessor[ACL_ID_LEN + 1], secret[ACL_ID_LEN + 1], expires[48];
    char *hash = NULL;
    int64_t ttl;
    bool has_time;
    struct timespec expiry = {0, 0}, now;
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_WRITE) != 0 || http_body_json(r, &body) != 0)
        return end_failed(r);
    if (expiration_fields(r, body, &ttl, &has_time, &expiry) != 0 || begin(r, &rd) != 0)
        goto fail;
    clock_gettime(CLOCK_REALTIME, &now);
    const char *desc = json_string_value(json_get_ci(body, "Description"));
    const char *want_secret = json_string_value(json_get_ci(body, "SecretID"));
    const char *want_accessor = json_string_value(json_get_ci(body, "AccessorID"));
    if (r->arg) { /* update */
        if (strcmp(r->arg, ACL_ANONYMOUS_ACCESSOR) == 0)
            old = acl_anonymous_token(rd);
        else if (store_acl_get(rd, "token", r->arg, &old) != 0 || acl_token_expired(old, &now)) {
            http_fail(r, 404, "ACL not found: no token %s", r->arg);
            goto fail;
        }
        if (want_secret && *want_secret) {
            http_fail(r, 400, "Invalid Token: SecretID cannot be changed");
            goto fail;
        }
        if (json_is_true(json_get_ci(body, "Local")) != json_is_true(json_object_get(old, "Local"))) {
            http_fail(r, 400, "Cannot toggle local mode of %s", r->arg);
            goto fail;
        }
        if (ttl != 0 || (has_time && !same_expiration(old, &expiry))) {
            http_fail(r, 400, "Cannot change expiration time of %s", r->arg);
            goto fail;
        }
        if (no_roles(r, json_get_ci(body, "Roles")) != 0 ||
            (links = policy_links(r, rd, json_get_ci(body, "Policies"))) == NULL ||
            (svc_ids = service_identities(r, json_get_ci(body, "ServiceIdentities"),
                                          json_is_true(json_object_get(old, "Local")))) == NULL ||
            (node_ids = node_identities(r, json_get_ci(body, "NodeIdentities"))) == NULL)
            goto fail;
        /* the body is the token, as Consul's update: its lists and its
         * Description replace the old ones (none given: none) */
        rec = json_deep_copy(old); /* its ExpirationTime too */
        json_object_set(rec, "Policies", links);
        set_list(rec, "ServiceIdentities", svc_ids);
        set_list(rec, "NodeIdentities", node_ids);
        svc_ids = node_ids = NULL;
        json_object_set_new(rec, "Description", json_string(desc ? desc : ""));
        json_object_del(rec, "CreateIndex");
        json_object_del(rec, "ModifyIndex");
        snprintf(accessor, sizeof(accessor), "%s", r->arg);
        answer = acl_render_token(rd, rec);
    } else {
        if (want_accessor && *want_accessor) {
            json_t *dup = NULL;
            if (!valid_uuid(want_accessor)) {
                http_fail(r, 400, "Invalid Token: AccessorID must be a UUID");
                goto fail;
            }
            if (store_acl_get(rd, "token", want_accessor, &dup) == 0 ||
                strcmp(want_accessor, ACL_ANONYMOUS_ACCESSOR) == 0) {
                json_decref(dup);
                http_fail(r, 400, "Invalid Token: AccessorID is already in use");
                goto fail;
            }
            snprintf(accessor, sizeof(accessor), "%s", want_accessor);
        } else if (acl_new_uuid(accessor) != 0) {
            goto fail_random;
        }
        if (want_secret && *want_secret) {
            struct acl_authz z;
            if (strlen(want_secret) < 16 || strlen(want_secret) > 128 ||
                strcmp(want_secret, "anonymous") == 0) {
                http_fail(r, 400, "Invalid Token: SecretID must be 16 to 128 characters");
                goto fail;
            }
            /* an expired token's secret is still its (Consul: no collision) */
            if (acl_resolve(rd, want_secret, &z) == 0 && (z.found || z.expired)) {
                acl_authz_fini(&z);
                http_fail(r, 400, "Invalid Token: SecretID is already in use");
                goto fail;
            }
            acl_authz_fini(&z);
            snprintf(secret, sizeof(secret), "%.36s", want_secret);
            if (strlen(want_secret) > ACL_ID_LEN) {
                http_fail(r, 400, "Invalid Token: SecretID must be at most 36 characters");
                goto fail;
            }
        } else if (acl_new_uuid(secret) != 0) {
            goto fail_random;
        }
        json_t *local = json_get_ci(body, "Local");
        if (new_expiration(r, ttl, has_time, expiry, &now, expires, sizeof(expires)) != 0 ||
            no_roles(r, json_get_ci(body, "Roles")) != 0 ||
            (links = policy_links(r, rd, json_get_ci(body, "Policies"))) == NULL ||
            (svc_ids = service_identities(r, json_get_ci(body, "ServiceIdentities"),
                                          json_is_true(local))) == NULL ||
            (node_ids = node_identities(r, json_get_ci(body, "NodeIdentities"))) == NULL)
            goto fail;
        if (acl_hash_secret(secret, &hash) != 0)
            goto fail_random;
        rec = new_token_record(accessor, hash, desc, links, json_is_true(local), &now, svc_ids,
                               node_ids, expires);
        svc_ids = node_ids = NULL;
        if (rec == NULL)
            goto fail_random;
        answer = acl_render_token(rd, rec);
        json_object_set_new(answer, "SecretID", json_string(secret));
    }
    store_read_end(rd);
    free(hash);
    json_decref(body);
    json_decref(old);
    json_decref(links);
    submit(r, "set", "token", accessor, rec, answer);
    json_decref(rec);
    return;
fail_random:
    http_fail(r, 500, "cannot make a token");
fail:
    free(hash);
    store_read_end(rd);
    json_decref(body);
    json_decref(old);
    json_decref(links);
    json_decref(svc_ids);
    json_decref(node_ids);
    json_decref(rec);
    json_decref(answer);
    end_failed(r);
}

/* PUT /v1/acl/token/:accessor/clone, as Consul's TokenClone: a new token
 * (new AccessorID and SecretID, CreateTime now) with the policies, service
 * and node identities, Local and ExpirationTime of an existing one (which
 * must be within acl_token_min/max_expiration_ttl from now, as at create),
 * and the body's Description if it gives one, else the same. An unknown or
 * expired token is "ACL not found" (403). The body may be empty. */
static void do_token_clone(struct http_req *r, const char *from)
{
    struct store_read *rd = NULL;
    json_t *body = NULL, *old = NULL, *shown = NULL, *rec = NULL, *answer = NULL;
    char accessor[ACL_ID_LEN + 1], secret[ACL_ID_LEN + 1], expires[48];
    char *hash = NULL;
    struct timespec now, expiry = {0, 0};
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_WRITE) != 0)
        return end_failed(r);
    if (evbuffer_get_length(evhttp_request_get_input_buffer(r->req)) > 0 &&
        http_body_json(r, &body) != 0)
        return end_failed(r);
    if (begin(r, &rd) != 0)
        goto fail;
    clock_gettime(CLOCK_REALTIME, &now);
    if (strcmp(from, ACL_ANONYMOUS_ACCESSOR) == 0)
        old = acl_anonymous_token(rd);
    else if (store_acl_get(rd, "token", from, &old) != 0)
        old = NULL;
    if (old == NULL || acl_token_expired(old, &now)) {
        http_fail(r, 403, "ACL not found");
        goto fail;
    }
    const char *was = json_string_value(json_object_get(old, "ExpirationTime"));
    if (was != NULL && rfc3339_parse(was, &expiry) != 0)
        was = NULL;
    if (new_expiration(r, 0, was != NULL, expiry, &now, expires, sizeof(expires)) != 0)
        goto fail;
    if (acl_new_uuid(accessor) != 0 || acl_new_uuid(secret) != 0 ||
        acl_hash_secret(secret, &hash) != 0) {
        http_fail(r, 500, "cannot make a token");
        goto fail;
    }
    const char *desc = json_string_value(json_get_ci(body, "Description"));
    if (desc == NULL || *desc == '\0')
        desc = json_string_value(json_object_get(old, "Description"));
    shown = acl_render_token(rd, old); /* links to policies that still exist */
    rec = new_token_record(accessor, hash, desc, json_object_get(shown, "Policies"),
                           json_is_true(json_object_get(old, "Local")), &now,
                           json_deep_copy(json_object_get(old, "ServiceIdentities")),
                           json_deep_copy(json_object_get(old, "NodeIdentities")), expires);
    if (rec == NULL) {
        http_fail(r, 500, "cannot make a token");
        goto fail;
    }
    answer = acl_render_token(rd, rec);
    json_object_set_new(answer, "SecretID", json_string(secret));
    store_read_end(rd);
    free(hash);
    json_decref(body);
    json_decref(old);
    json_decref(shown);
    submit(r, "set", "token", accessor, rec, answer);
    json_decref(rec);
    return;
fail:
    free(hash);
    store_read_end(rd);
    json_decref(body);
    json_decref(old);
    json_decref(shown);
    json_decref(rec);
    json_decref(answer);
    end_failed(r);
}

bool http_acl_arg_slashes(const struct http_route *rt)
{
    return rt->custom == do_token_write; /* :accessor/clone */
}

static json_t *config_token(struct http_req *r)
{
    bool server = r->authz->server;
    return json_pack(
        "{s:s, s:s, s:[{s:s, s:s}], s:b, s:s}", "AccessorID", r->authz->accessor, "Description",
        server ? "Server Token (configuration)" : "Initial Management Token (configuration)",
        "Policies", "ID", server ? "" : ACL_MANAGEMENT_POLICY_ID, "Name",
        server ? "" : ACL_MANAGEMENT_POLICY_NAME, "Local", 0, "CreateTime", "1970-01-01T00:00:00Z");
}

static int read_token_self(struct http_req *r, struct store_read *rd, json_t **out)
{
    json_t *t = NULL;
    if (acl_on(r) != 0)
        return -1;
    if (strcmp(r->authz->accessor, ACL_ANONYMOUS_ACCESSOR) == 0)
        t = acl_anonymous_token(rd);
    else if (store_acl_get(rd, "token", r->authz->accessor, &t) != 0) {
        *out = config_token(r);
        return 0;
    }
    *out = acl_render_token(rd, t);
    json_decref(t);
    return 0;
}

/* A token that does not exist, or no longer (expired), is "ACL not found"
 * with 403, as Consul answers (acl.ErrNotFound). */
static int read_token(struct http_req *r, struct store_read *rd, json_t **out)
{
    json_t *t = NULL;
    struct timespec now;
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_READ) != 0)
        return -1;
    clock_gettime(CLOCK_REALTIME, &now);
    if (strcmp(r->arg, ACL_ANONYMOUS_ACCESSOR) == 0)
        t = acl_anonymous_token(rd);
    else if (store_acl_get(rd, "token", r->arg, &t) != 0)
        return http_fail(r, 403, "ACL not found");
    if (acl_token_expired(t, &now)) {
        json_decref(t);
        return http_fail(r, 403, "ACL not found");
    }
    *out = acl_render_token(rd, t);
    json_decref(t);
    return 0;
}

struct token_list {
    struct store_read *rd;
    json_t *arr;
    struct timespec now;
    const char *policy; /* ?policy=: only tokens linking it, or NULL */
};

/* Does the token record link the policy with this ID? */
static bool links_policy(json_t *t, const char *id)
{
    size_t i;
    json_t *link;
    json_array_foreach(json_object_get(t, "Policies"), i, link)
    {
        const char *have = json_string_value(json_object_get(link, "ID"));
        if (have != NULL && strcmp(have, id) == 0)
            return true;
    }
    return false;
}

static int add_token(json_t *t, void *arg)
{
    struct token_list *l = arg;
    if (strcmp(json_string_value(json_object_get(t, "AccessorID")) ?: "", ACL_ANONYMOUS_ACCESSOR) ==
        0)
        return 0; /* listed once, below */
    if (acl_token_expired(t, &l->now))
        return 0; /* as Consul's TokenList: as if it did not exist */
    if (l->policy != NULL && !links_policy(t, l->policy))
        return 0;
    json_array_append_new(l->arr, acl_render_token(l->rd, t));
    return 0;
}

/* GET /v1/acl/tokens[?policy=ID|?role=ID|?authmethod=NAME], as Consul's
 * TokenList: one filter at most; ?policy= keeps the tokens that link that
 * policy; there are no roles or auth methods here, so their filters keep
 * none. */
static int read_tokens(struct http_req *r, struct store_read *rd, json_t **out)
{
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_READ) != 0)
        return -1;
    const char *policy = http_param(r, "policy"), *role = http_param(r, "role"),
               *method = http_param(r, "authmethod");
    int filters = (policy && *policy) + (role && *role) + (method && *method);
    if (filters > 1)
        return http_fail(r, 400, "can only filter by one of policy, role, or authmethod at once");
    struct token_list l = {rd, json_array(), {0, 0}, policy && *policy ? policy : NULL};
    clock_gettime(CLOCK_REALTIME, &l.now);
    if (filters == 1 && l.policy == NULL) {
        *out = l.arr;
        return 0;
    }
    json_t *anon = acl_anonymous_token(rd);
    if (l.policy == NULL || links_policy(anon, l.policy))
        json_array_append_new(l.arr, acl_render_token(rd, anon));
    json_decref(anon);
    (void)store_acl_each(rd, "token", add_token, &l);
    *out = l.arr;
    return 0;
}

static void do_token_delete(struct http_req *r)
{
    struct store_read *rd;
    json_t *old = NULL;
    if (acl_on(r) != 0 || need(r, ACL_RES_ACL, "", ACL_WRITE) != 0)
        return end_failed(r);
    if (strcmp(r->arg, ACL_ANONYMOUS_ACCESSOR) == 0) {
        http_fail(r, 400, "Delete of the anonymous token is not allowed");
        return end_failed(r);
    }
    if (strcmp(r->arg, r->authz->accessor) == 0) {
        http_fail(r, 403, "Deletion of the request's authorization token is not permitted");
        return end_failed(r);
    }
    if (begin(r, &rd) != 0)
        return end_failed(r);
    int rc = store_acl_get(rd, "token", r->arg, &old);
    store_read_end(rd);
    json_decref(old);
    if (rc != 0) {
        http_fail(r, 404, "ACL not found: no token %s", r->arg);
        return end_failed(r);
    }
    submit(r, "delete", "token", r->arg, NULL, json_true());
}

const struct http_route http_acl_routes[] = {
    {"PUT", "/v1/acl/bootstrap", NULL, NULL, WATCH_NONE, do_bootstrap, true},
    {"PUT", "/v1/acl/policy", NULL, NULL, WATCH_NONE, do_policy_write, true},
    {"PUT", "/v1/acl/policy/", NULL, NULL, WATCH_NONE, do_policy_write, true},
    {"GET", "/v1/acl/policy/", read_policy, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/acl/policy/name/", read_policy, NULL, WATCH_NONE, NULL, false},
    {"DELETE", "/v1/acl/policy/", NULL, NULL, WATCH_NONE, do_policy_delete, true},
    {"GET", "/v1/acl/policies", read_policies, NULL, WATCH_NONE, NULL, false},
    {"PUT", "/v1/acl/token", NULL, NULL, WATCH_NONE, do_token_write, true},
    {"PUT", "/v1/acl/token/", NULL, NULL, WATCH_NONE, do_token_write, true},
    {"GET", "/v1/acl/token/self", read_token_self, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/acl/token/", read_token, NULL, WATCH_NONE, NULL, false},
    {"DELETE", "/v1/acl/token/", NULL, NULL, WATCH_NONE, do_token_delete, true},
    {"GET", "/v1/acl/tokens", read_tokens, NULL, WATCH_NONE, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
