/*
 * http_agent_info.c — what an agent says about itself and about the health
 * of its services, in Consul's shapes: /v1/agent/self (Config, Member,
 * DebugConfig, Stats.raft), /v1/agent/version, /v1/agent/members,
 * /v1/agent/health/service/name/:name and /id/:id (the status is the HTTP
 * code: 200 passing, 429 warning, 503 critical or maintenance), and
 * /v1/catalog/node-services/:node.
 *
 * Every server is a Consul server agent here; the members are the raft
 * configuration's servers.
 */
#include <event2/http.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "health.h"
#include "http_internal.h"
#include "registry/error.h"
#include "watch.h"

/* ---- /v1/agent/self, /version, /members ---------------------------------- */

static json_t *member_tags(struct http_server *srv, const char *id)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "role", "consul", "dc",
                     srv->opt.datacenter, "port", "8300", "id", id, "vsn", "2", "build",
                     REGISTRYD_VERSION ":registryd", "raft_vsn", "3");
}

/* Consul's Stats are strings, every one (map[string]map[string]string). */
static json_t *health_stats(const struct health_stats *hs)
{
    const struct {
        const char *key;
        uint64_t v;
    } n[] = {{"checks", hs->checks},           {"probes", hs->probes},
             {"transitions", hs->transitions}, {"to_critical", hs->to_critical},
             {"deregistrations", hs->deregistrations}, {"late_p99_ms", hs->late_p99_ms}};
    json_t *o = json_object();
    char buf[32];
    for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
        snprintf(buf, sizeof(buf), "%" PRIu64, n[i].v);
        json_object_set_new(o, n[i].key, json_string(buf));
    }
    json_object_set_new(o, "self_preservation", json_string(hs->self_preservation ? "true" : "false"));
    return o;
}

static json_t *raft_stats(struct http_server *srv)
{
    struct cluster_status st;
    char buf[64];
    cluster_get_status(srv->opt.cluster, &st);
    json_t *o = json_object();
    const char *state = st.is_leader ? "Leader" : st.known_leader ? "Follower" : "Candidate";
    json_object_set_new(o, "state", json_string(state));
#define SET_U64(k, v)                                                                     \
    do {                                                                                  \
        snprintf(buf, sizeof(buf), "%" PRIu64, (uint64_t)(v));                            \
        json_object_set_new(o, k, json_string(buf));                                      \
    } while (0)
    SET_U64("term", st.term);
    SET_U64("commit_index", st.commit_index);
    SET_U64("applied_index", st.applied_index);
    SET_U64("last_log_index", st.commit_index);
    SET_U64("num_peers", st.n_servers > 0 ? st.n_servers - 1 : 0);
#undef SET_U64
    if (st.is_leader)
        snprintf(buf, sizeof(buf), "0");
    else if (!st.known_leader)
        snprintf(buf, sizeof(buf), "never");
    else
        snprintf(buf, sizeof(buf), "%" PRIu64 "ms", st.last_contact_ms);
    json_object_set_new(o, "last_contact", json_string(buf));
    json_object_set_new(o, "protocol_version", json_string("3"));
    return o;
}

static int read_agent_self(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    struct http_options *o = &r->srv->opt;
    struct health_stats hs;
    char node_id[40];
    health_get_stats(o->health, &hs);
    http_node_id(o->node, node_id, sizeof(node_id));
    /* Version is registryd's own; Product and Revision say it is not Consul. */
    *out = json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:s},"
        " s:{s:s, s:s, s:s, s:s, s:b, s:s},"
        " s:{s:s, s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i},"
        " s:O,"
        " s:{s:o, s:o}}",
        "Config", "Datacenter", o->datacenter, "PrimaryDatacenter", o->datacenter, "NodeName",
        o->node, "NodeID", node_id, "Server", 1, "Version", REGISTRYD_VERSION, "Revision",
        "registryd", "Product", "registryd",
        "DebugConfig", "Datacenter", o->datacenter, "PrimaryDatacenter", o->datacenter,
        "NodeName", o->node, "NodeID", node_id, "ServerMode", 1, "Version", REGISTRYD_VERSION,
        "Member", "Name", o->node, "Addr", o->node_addr, "Port", 8301, "Tags",
        member_tags(r->srv, node_id), "Status", 1, "ProtocolMin", 1, "ProtocolMax", 5,
        "ProtocolCur", 2, "DelegateMin", 2, "DelegateMax", 5, "DelegateCur", 4,
        "Meta", r->srv->node_meta,
        "Stats", "health", health_stats(&hs), "raft", raft_stats(r->srv));
    json_t *dbg = json_object_get(*out, "DebugConfig");
    json_object_set_new(dbg, "DNSDomain", json_string(o->dns_domain ? o->dns_domain : ""));
    json_object_set_new(dbg, "DNSAddrs", json_pack("[s]", o->dns_addr ? o->dns_addr : ""));
    json_object_set_new(dbg, "HTTPAddrs", o->addr ? json_pack("[s]", o->addr) : json_array());
    json_object_set_new(dbg, "HTTPSAddrs",
                        o->https_addr ? json_pack("[s]", o->https_addr) : json_array());
    json_object_set_new(dbg, "EnableScriptChecks", json_boolean(o->enable_script_checks));
    json_object_set_new(dbg, "NodeMeta", json_deep_copy(r->srv->node_meta));
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

static int read_agent_version(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)r;
    (void)rd;
    *out = json_pack("{s:s, s:s, s:s, s:s}", "SHA", "registryd", "BuildDate", "",
                     "HumanVersion", REGISTRYD_VERSION " (registryd)", "FIPS", "");
    return 0;
}

/* The raft configuration's servers, as serf members: one that has not
 * answered this server's probes for PEERS_ALIVE_MS is "failed" (Consul's
 * Status 4), as serf says of a member it lost; it stays a member until it
 * is removed. */
static int read_agent_members(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    *out = json_array();
    int n = st.n_servers > 0 ? st.n_servers : 1;
    for (int i = 0; i < n; i++) {
        const char *raft = st.n_servers > 0 ? st.servers[i].addr : st.self_addr;
        bool self = strcmp(raft, st.self_addr) == 0;
        char host[64], id[40], node[STORE_NAME_MAX + 1], node_addr[64];
        snprintf(host, sizeof(host), "%s", raft);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = '\0';
        /* a server is named by the node name it announced (one from before
         * announcements carried it, by its raft address) */
        http_server_node(r->srv, rd, raft, node, sizeof(node), node_addr, sizeof(node_addr),
                         NULL);
        const char *name = self ? r->srv->opt.node : *node ? node : raft;
        const char *addr = self ? r->srv->opt.node_addr : *node ? node_addr : host;
        http_node_id(name, id, sizeof(id));
        json_t *tags = member_tags(r->srv, id);
        bool alive = self || st.n_servers == 0 ||
                     cluster_server_alive(r->srv->opt.cluster, st.servers[i].id);
        if (st.n_servers > 0 && !st.servers[i].voter)
            json_object_set_new(tags, "nonvoter", json_string("1"));
        json_array_append_new(*out, json_pack("{s:s, s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i,"
                                              " s:i, s:i}",
                                              "Name", name, "Addr", addr, "Port", 8301, "Tags",
                                              tags, "Status", alive ? 1 : 4, "ProtocolMin", 1,
                                              "ProtocolMax", 5, "ProtocolCur", 2, "DelegateMin",
                                              2, "DelegateMax", 5, "DelegateCur", 4));
    }
    return 0;
}

/* ---- /v1/agent/health/service/name/:name and /id/:id ---------------------- */

/* Consul's aggregation: maintenance, then critical, warning, passing. */
static const char *aggregate(json_t *checks)
{
    int worst = 0; /* 0 passing, 1 warning, 2 critical, 3 maintenance */
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "Status"));
        const char *type = json_string_value(json_object_get(c, "Type"));
        int v = type && strcmp(type, "maintenance") == 0 ? 3
                : st && strcmp(st, "passing") == 0       ? 0
                : st && strcmp(st, "warning") == 0       ? 1
                                                         : 2;
        if (v > worst)
            worst = v;
    }
    static const char *const names[] = {"passing", "warning", "critical", "maintenance"};
    return names[worst];
}

static int status_code(const char *agg)
{
    return strcmp(agg, "passing") == 0 ? 200 : strcmp(agg, "warning") == 0 ? 429 : 503;
}

/* {AggregatedStatus, Service, Checks} for one instance; new reference. */
static json_t *service_health(struct http_req *r, struct store_read *rd, json_t *inst,
                              const char **agg)
{
    json_t *checks = NULL, *out = json_array();
    const char *id = json_string_value(json_object_get(inst, "ID"));
    if (id == NULL || store_instance_checks(rd, id, &checks) != 0)
        checks = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c) json_array_append_new(out, render_check(c, inst));
    json_decref(checks);
    *agg = aggregate(out);
    return json_pack("{s:s, s:o, s:o}", "AggregatedStatus", *agg, "Service",
                     render_agent_service(r->srv, inst), "Checks", out);
}

/* Consul's returnTextPlain: an Accept of text/plain, else ?format=text. */
static bool text_format(struct http_req *r)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(r->req), "Accept");
    if (accept != NULL && strncmp(accept, "text/plain", 10) == 0)
        return true;
    const char *f = http_param(r, "format");
    return f != NULL && strcmp(f, "text") == 0;
}

/* The answer, with Consul's X-Consul-Reason (the status, or why not found):
 * text, or JSON (body: a new reference, taken). */
static void health_answer(struct http_req *r, int code, const char *reason, json_t *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "X-Consul-Reason", reason);
    if (text_format(r)) {
        json_decref(body);
        /* the reason may hold the path's bytes as they came (not UTF-8) */
        http_finish_json_code(r, code, json_stringn_nocheck(reason, strlen(reason)),
                              "text/plain");
    } else {
        http_finish_json_code(r, code, body, "application/json");
    }
}

static void do_health_by_id(struct http_req *r)
{
    struct store_read *rd;
    json_t *inst = NULL;
    if (store_read_begin(r->srv->opt.store, &rd) != 0) {
        http_fail(r, 500, "store unavailable");
        http_finish_write(r, REG_ESTORE);
        return;
    }
    if (store_get_instance(rd, r->arg, &inst) != 0) {
        store_read_end(rd);
        char why[STORE_NAME_MAX + 32];
        snprintf(why, sizeof(why), "ServiceId %s not found", r->arg);
        /* Consul's AgentServiceChecksInfo with only its status set */
        health_answer(r, 404, why,
                      json_pack("{s:s, s:n, s:n}", "AggregatedStatus", "critical", "Service",
                                "Checks"));
        return;
    }
    const char *agg;
    json_t *body = service_health(r, rd, inst, &agg);
    store_read_end(rd);
    json_decref(inst);
    health_answer(r, status_code(agg), agg, body);
}

struct by_name {
    struct http_req *r;
    struct store_read *rd;
    json_t *out;
    int code;
    const char *worst;
};

static int add_by_name(json_t *inst, void *arg)
{
    struct by_name *b = arg;
    const char *agg;
    json_array_append_new(b->out, service_health(b->r, b->rd, inst, &agg));
    int code = status_code(agg);
    /* the worst status decides the answer's code, as in Consul */
    if (b->code == 0 || (code != 200 && (b->code == 200 || (code == 503 && b->code == 429)))) {
        b->code = code;
        b->worst = agg;
    }
    return 0;
}

static void do_health_by_name(struct http_req *r)
{
    struct store_read *rd;
    if (store_read_begin(r->srv->opt.store, &rd) != 0) {
        http_fail(r, 500, "store unavailable");
        http_finish_write(r, REG_ESTORE);
        return;
    }
    struct by_name b = {r, rd, json_array(), 0, "passing"};
    store_each_instance(rd, r->arg, add_by_name, &b);
    store_read_end(rd);
    if (json_array_size(b.out) == 0) {
        char why[STORE_NAME_MAX + 32];
        snprintf(why, sizeof(why), "ServiceName %s Not Found", r->arg);
        health_answer(r, 404, why, b.out); /* [] in JSON, as Consul's */
        return;
    }
    health_answer(r, b.code, b.worst, b.out);
}

/* ---- /v1/catalog/node-services/:node -------------------------------------- */

struct node_walk {
    struct http_req *r;
    json_t *node; /* rendered Node of the first instance found there */
    json_t *services;
};

static int add_node_instance(json_t *inst, void *arg)
{
    struct node_walk *w = arg;
    const char *n = json_string_value(json_object_get(inst, "Node"));
    if (n == NULL || strcmp(n, w->r->arg) != 0)
        return 0;
    if (w->node == NULL)
        w->node = render_node(w->r->srv, inst);
    json_array_append_new(w->services, render_agent_service(w->r->srv, inst));
    return 0;
}

static int find_node_record(json_t *rec, void *arg)
{
    struct node_walk *w = arg;
    const char *n = json_string_value(json_object_get(rec, "Node"));
    if (n == NULL || strcmp(n, w->r->arg) != 0)
        return 0;
    w->node = render_node(w->r->srv, rec);
    return 1;
}

/* {Node, Services: [...]}; this server's node answers with no services too;
 * an unknown node is {"Node": null, "Services": null}. */
static int read_node_services(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct node_walk w = {r, NULL, json_array()};
    store_each_instance_on(rd, r->arg, add_node_instance, &w); /* the node's only */
    if (w.node == NULL)
        store_each_node(rd, find_node_record, &w);
    if (w.node == NULL && strcmp(r->arg, r->srv->opt.node) == 0) {
        json_t *none = json_object();
        w.node = render_node(r->srv, none);
        json_decref(none);
    }
    if (w.node == NULL) { /* Consul's empty NodeServiceList, not null */
        json_decref(w.services);
        *out = json_pack("{s:n, s:n}", "Node", "Services");
        return 0;
    }
    *out = json_pack("{s:o, s:o}", "Node", w.node, "Services", w.services);
    return 0;
}

/* ---- GET /v1/agent/service/:id: hash-based blocking ----------------------
 * Consul's answer carries ContentHash (also as X-Consul-ContentHash), and
 * ?hash=H blocks until the content hashes to something else (or ?wait=
 * passes). ?index= blocks as on other reads. */

static void service_answer(struct http_req *r, bool *found, char hash[17], json_t **body,
                           uint64_t *index)
{
    struct store_read *rd;
    json_t *inst = NULL;
    *found = false;
    *body = NULL;
    *index = 0;
    if (store_read_begin(r->srv->opt.store, &rd) != 0)
        return;
    *index = store_index(rd);
    if (store_get_instance(rd, r->arg, &inst) == 0) {
        *found = true;
        *body = render_agent_service(r->srv, inst);
        json_object_del(*body, "CreateIndex"); /* the content, not where it was written */
        json_object_del(*body, "ModifyIndex");
        char *text = json_dumps(*body, JSON_COMPACT | JSON_SORT_KEYS);
        uint64_t h = 1469598103934665603ULL;
        for (const char *p = text ? text : ""; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        free(text);
        snprintf(hash, 17, "%016" PRIx64, h);
        json_object_set_new(*body, "ContentHash", json_string(hash));
    }
    json_decref(inst);
    store_read_end(rd);
}

static void agent_service_try(struct http_req *r);

static void agent_service_woken(void *arg, enum watch_why why)
{
    struct http_req *r = arg;
    if (why != WATCH_CHANGED)
        r->wait_ms = 0; /* answer now, whatever it is */
    agent_service_try(r);
}

static void agent_service_try(struct http_req *r)
{
    bool found;
    char hash[17] = "";
    json_t *body;
    uint64_t index;
    service_answer(r, &found, hash, &body, &index);
    const char *want = http_param(r, "hash");
    double waited_ms = (mono_seconds() - r->started) * 1000.0;
    uint64_t left = (double)r->wait_ms > waited_ms ? (uint64_t)((double)r->wait_ms - waited_ms) : 0;
    /* only ?hash= blocks here: Consul's AgentService ignores ?index= (a Go
     * client reusing its QueryOptions waited out its whole wait) */
    bool same = want != NULL && found && strcmp(want, hash) == 0;
    if (same && left > 0 &&
        watch_park(r->srv->opt.watch, WATCH_ON_ALL, NULL, left, agent_service_woken, r, NULL) == 0) {
        json_decref(body);
        return; /* woken: try again */
    }
    if (!found) {
        json_decref(body);
        http_fail(r, 404, "unknown service ID: %s", r->arg);
        http_finish_write(r, REG_ENOTFOUND);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "X-Consul-ContentHash", hash);
    http_finish_json_code(r, 200, body, "application/json");
}

static void do_agent_service(struct http_req *r)
{
    agent_service_try(r);
}


const struct http_route http_agent_info_routes[] = {
    {"GET", "/v1/agent/service/", NULL, NULL, WATCH_NONE, do_agent_service, false},
    {"GET", "/v1/agent/self", read_agent_self, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/agent/version", read_agent_version, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/agent/members", read_agent_members, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/agent/health/service/id/", NULL, NULL, WATCH_NONE, do_health_by_id, false},
    {"GET", "/v1/agent/health/service/name/", NULL, NULL, WATCH_NONE, do_health_by_name, false},
    {"GET", "/v1/catalog/node-services/", read_node_services, NULL, WATCH_ALL, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
