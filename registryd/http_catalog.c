/*
 * http_catalog.c — the read side clients discover with: /v1/catalog/...,
 * /v1/health/... and /v1/status/..., in Consul's JSON shapes. All of them are
 * blocking-query capable (the route table says what each one watches).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "filter.h"
#include "http_internal.h"
#include "http_render.h"
#include "registry/error.h"

/* ?tag= may repeat: an instance must carry every one of them (without
 * case, as Consul compares tags). */
bool http_has_tags(struct http_req *r, json_t *inst)
{
    json_t *tags = json_object_get(inst, "Tags");
    for (int i = 0; i < r->n_params; i++) {
        if (strcmp(r->params[i].key, "tag") != 0 || r->params[i].value == NULL)
            continue;
        bool found = false;
        size_t j;
        json_t *t;
        json_array_foreach(tags, j, t) if (strcasecmp(json_string_value(t), r->params[i].value) == 0)
            found = true;
        if (!found)
            return false;
    }
    return true;
}

/* ---- /v1/catalog -------------------------------------------------------- */

struct walk {
    struct http_req *r;
    struct store_read *rd;
    json_t *out;
};

/* One instance as Consul's ServiceNode (the catalog's view). New reference. */
json_t *render_service_node(struct http_server *srv, json_t *inst)
{
    json_t *node = render_node(srv, inst);
    json_t *o = json_pack(
        "{s:O, s:O, s:O, s:O, s:O, s:O, s:s, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O}",
        "ID", json_object_get(node, "ID"), "Node", json_object_get(node, "Node"), "Address",
        json_object_get(node, "Address"), "Datacenter", json_object_get(node, "Datacenter"),
        "TaggedAddresses", json_object_get(node, "TaggedAddresses"), "NodeMeta",
        json_object_get(node, "Meta"), "ServiceKind", "", "ServiceID",
        json_object_get(inst, "ID"), "ServiceName", json_object_get(inst, "Service"),
        "ServiceTags", json_object_get(inst, "Tags"), "ServiceAddress",
        json_object_get(inst, "Address"), "ServiceWeights", json_object_get(inst, "Weights"),
        "ServiceMeta", json_object_get(inst, "Meta"), "ServicePort",
        json_object_get(inst, "Port"), "ServiceEnableTagOverride",
        json_object_get(inst, "EnableTagOverride"), "CreateIndex",
        json_object_get(inst, "CreateIndex"));
    json_object_set(o, "ModifyIndex", json_object_get(inst, "ModifyIndex"));
    json_t *tagged = json_object_get(inst, "TaggedAddresses");
    if (tagged != NULL)
        json_object_set(o, "ServiceTaggedAddresses", tagged);
    json_decref(node);
    return o;
}

struct tags_walk {
    struct http_req *r;
    const struct filter *f;
    json_t *tags; /* tag -> true */
    bool any;     /* an instance passed the filter */
};

static int add_service_tags(json_t *inst, void *arg)
{
    struct tags_walk *t = arg;
    if (t->f != NULL || http_has_param(t->r, "node-meta")) {
        json_t *sn = render_service_node(t->r->srv, inst);
        bool keep = http_filter_keep(t->r, t->f, sn);
        json_decref(sn);
        if (!keep)
            return 0;
    }
    t->any = true;
    size_t i;
    json_t *tag;
    json_array_foreach(json_object_get(inst, "Tags"), i, tag)
        json_object_set_new(t->tags, json_string_value(tag), json_true());
    return 0;
}

struct names_walk {
    struct walk w;
    const struct filter *f;
};

static int add_catalog_name(const char *name, void *arg)
{
    struct names_walk *nw = arg;
    struct tags_walk t = {nw->w.r, nw->f, json_object(), false};
    json_t *arr = json_array();
    store_each_instance(nw->w.rd, name, add_service_tags, &t);
    const char *k;
    json_t *v;
    json_object_foreach(t.tags, k, v) json_array_append_new(arr, json_string(k));
    json_decref(t.tags);
    if (t.any)
        json_object_set_new(nw->w.out, name, arr);
    else
        json_decref(arr);
    return 0;
}

/* Without a selection, a name's tags come from the store's index of them
 * (no instance is read). http_render.c renders the same as text when no
 * token trims the answer. */
static int add_listed_name(const char *name, const struct store_str *tags, size_t n, void *arg)
{
    struct names_walk *nw = arg;
    json_t *arr = json_array();
    if (arr == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_stringn(tags[i].p, tags[i].len));
    return json_object_set_new(nw->w.out, name, arr) == 0 ? 0 : REG_ENOMEM;
}

/* GET /v1/catalog/services; ?filter= and ?node-meta= select instances, and
 * a name is listed when any of its instances is selected. */
static int read_catalog_services(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct names_walk nw = {{r, rd, json_object()}, NULL};
    struct filter *f;
    if (http_filter_compile(r, &f) != 0) {
        json_decref(nw.w.out);
        return -1;
    }
    nw.f = f;
    if (f == NULL && !http_has_param(r, "node-meta")) {
        int rc = store_each_name_tags(rd, add_listed_name, &nw);
        if (rc != 0) {
            json_decref(nw.w.out);
            return http_fail(r, 500, "Listing failed: %s", reg_strerror(rc));
        }
    } else {
        store_each_name(rd, add_catalog_name, &nw);
    }
    filter_free(f);
    *out = nw.w.out;
    return 0;
}

static int add_catalog_instance(json_t *inst, void *arg)
{
    struct walk *w = arg;
    if (!http_has_tags(w->r, inst))
        return 0;
    json_array_append_new(w->out, render_service_node(w->r->srv, inst));
    return 0;
}

static int read_catalog_service(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct walk w = {r, rd, json_array()};
    store_each_instance(rd, r->arg, add_catalog_instance, &w);
    *out = w.out;
    return 0;
}

/* ---- nodes: this server, and every node an instance was registered at ---- */

static int add_instance_node(json_t *inst, void *arg)
{
    const char *node = json_string_value(json_object_get(inst, "Node"));
    if (node != NULL && json_object_get(arg, node) == NULL)
        json_object_set(arg, node, inst);
    return 0;
}

/* What a walk of every instance in ID order gives add_instance_node, from
 * the store's index of instances by node: one instance read per node. */
static void add_instance_nodes(struct store_read *rd, json_t *nodes)
{
    store_each_node_instance(rd, add_instance_node, nodes);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every server of the cluster is a node, as in Consul's catalog (each
 * announced its node name, address and meta): {Node, NodeAddress,
 * NodeMeta?} for those nothing else named. */
static void add_server_nodes(struct http_req *r, struct store_read *rd, json_t *nodes)
{
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    for (int i = 0; i < st.n_servers; i++) {
        char node[STORE_NAME_MAX + 1], addr[64];
        json_t *meta;
        http_server_node(r->srv, rd, st.servers[i].addr, node, sizeof(node), addr, sizeof(addr),
                         &meta);
        if (*node && *addr && json_object_get(nodes, node) == NULL) {
            json_t *n = json_pack("{s:s, s:s}", "Node", node, "NodeAddress", addr);
            if (n != NULL && meta != NULL)
                json_object_set(n, "NodeMeta", meta);
            json_object_set_new(nodes, node, n);
        }
        json_decref(meta);
    }
}

/* Node name -> an instance registered there (null for this server; the
 * node alone for another server), and, if names is not NULL, the names
 * sorted as Consul lists them (*names: malloc'd, keys borrowed from the
 * returned object). */
static json_t *known_nodes(struct http_req *r, struct store_read *rd, const char ***names,
                           size_t *n)
{
    json_t *nodes = json_object();
    json_object_set_new(nodes, r->srv->opt.node, json_null());
    store_each_node(rd, add_instance_node, nodes); /* catalog-registered nodes first */
    add_instance_nodes(rd, nodes);
    add_server_nodes(r, rd, nodes);
    if (names == NULL)
        return nodes;
    *n = 0;
    *names = malloc(json_object_size(nodes) * sizeof(**names));
    if (*names != NULL) {
        const char *k;
        json_t *v;
        json_object_foreach(nodes, k, v)(*names)[(*n)++] = k;
        qsort(*names, *n, sizeof(**names), cmp_str);
    }
    return nodes;
}

static int read_catalog_nodes(struct http_req *r, struct store_read *rd, json_t **out)
{
    const char **names;
    size_t n;
    json_t *nodes = known_nodes(r, rd, &names, &n);
    *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(*out, render_node(r->srv, json_object_get(nodes, names[i])));
    free(names);
    json_decref(nodes);
    return 0;
}

static int read_catalog_datacenters(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    *out = json_pack("[s]", r->srv->opt.datacenter);
    return 0;
}

static bool on_node(json_t *inst, const char *node)
{
    const char *n = json_string_value(json_object_get(inst, "Node"));
    return n != NULL && strcmp(n, node) == 0;
}

static int add_node_service(json_t *inst, void *arg)
{
    struct walk *w = arg;
    if (on_node(inst, w->r->arg))
        json_object_set_new(w->out, json_string_value(json_object_get(inst, "ID")),
                            render_agent_service(w->r->srv, inst));
    return 0;
}

/* GET /v1/catalog/node/:node — the node and its services; null (200) for
 * a node nobody registered at, as Consul answers. */
static int read_catalog_node(struct http_req *r, struct store_read *rd, json_t **out)
{
    json_t *nodes = known_nodes(r, rd, NULL, NULL);
    json_t *inst = json_object_get(nodes, r->arg);
    if (inst == NULL) {
        json_decref(nodes);
        *out = json_null();
        return 0;
    }
    struct walk w = {r, rd, json_object()};
    store_each_instance_on(rd, r->arg, add_node_service, &w);
    *out = json_pack("{s:o, s:o}", "Node", render_node(r->srv, inst), "Services", w.out);
    json_decref(nodes);
    return 0;
}

/* ---- /v1/health --------------------------------------------------------- */

static bool all_passing(json_t *checks)
{
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "Status"));
        if (st == NULL || strcmp(st, "passing") != 0)
            return false;
    }
    return true;
}

json_t *render_health_entry(struct http_server *srv, struct store_read *rd, json_t *inst,
                            bool *passing)
{
    json_t *checks = NULL, *all;
    if (store_instance_checks(rd, json_string_value(json_object_get(inst, "ID")), &checks) != 0)
        return NULL;
    all = json_array();
    json_array_append_new(all, render_serf_check(srv, inst));
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c) json_array_append_new(all, render_check(c, inst));
    json_decref(checks);
    *passing = all_passing(all);
    json_t *svc = json_deep_copy(inst);
    json_object_del(svc, "Node");
    json_object_del(svc, "NodeAddress");
    json_object_del(svc, "NodeMeta");
    json_object_del(svc, "NodeTaggedAddresses");
    return json_pack("{s:o, s:o, s:o}", "Node", render_node(srv, inst), "Service", svc, "Checks",
                     all);
}

static int add_health_entry(json_t *inst, void *arg)
{
    struct walk *w = arg;
    bool passing;
    if (!http_has_tags(w->r, inst))
        return 0;
    json_t *e = render_health_entry(w->r->srv, w->rd, inst, &passing);
    if (e == NULL)
        return 0;
    bool only_passing;
    if (http_passing(w->r, &only_passing) == 0 && only_passing && !passing) {
        json_decref(e);
        return 0;
    }
    json_array_append_new(w->out, e);
    return 0;
}

static int read_health_service(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct walk w = {r, rd, json_array()};
    store_each_instance(rd, r->arg, add_health_entry, &w);
    *out = w.out;
    return 0;
}

static int add_service_checks(json_t *inst, void *arg)
{
    struct walk *w = arg;
    json_t *checks;
    if (store_instance_checks(w->rd, json_string_value(json_object_get(inst, "ID")), &checks) !=
        0)
        return 0;
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *sid = json_string_value(json_object_get(c, "ServiceID"));
        if (sid != NULL && *sid) /* the service's own, not its node's */
            json_array_append_new(w->out, render_check(c, inst));
    }
    json_decref(checks);
    return 0;
}

static int add_node_level_check(json_t *check, void *arg)
{
    struct walk *w = arg;
    const char *sid = json_string_value(json_object_get(check, "ServiceID"));
    const char *node = json_string_value(json_object_get(check, "Node"));
    if ((sid == NULL || *sid == '\0') && node != NULL && strcmp(node, w->r->arg) == 0)
        json_array_append_new(w->out, render_check(check, NULL));
    return 0;
}

static int read_health_checks(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct walk w = {r, rd, json_array()};
    store_each_instance(rd, r->arg, add_service_checks, &w);
    *out = w.out;
    return 0;
}

static int add_node_checks(json_t *inst, void *arg)
{
    struct walk *w = arg;
    return on_node(inst, w->r->arg) ? add_service_checks(inst, arg) : 0;
}

/* GET /v1/health/node/:node — the node's serfHealth and the checks of the
 * instances registered there; [] for an unknown node. */
static int read_health_node(struct http_req *r, struct store_read *rd, json_t **out)
{
    json_t *nodes = known_nodes(r, rd, NULL, NULL);
    json_t *inst = json_object_get(nodes, r->arg);
    struct walk w = {r, rd, json_array()};
    if (inst != NULL) {
        json_array_append_new(w.out, render_serf_check(r->srv, inst));
        store_each_node_check(rd, r->arg, add_node_level_check, &w);
        store_each_instance_on(rd, r->arg, add_node_checks, &w);
    }
    json_decref(nodes);
    *out = w.out;
    return 0;
}

struct state_walk {
    struct walk w;
    const char *state; /* NULL: any */
};

static int add_state_check(json_t *check, void *arg)
{
    struct state_walk *s = arg;
    const char *st = json_string_value(json_object_get(check, "Status"));
    if (s->state && (st == NULL || strcmp(st, s->state) != 0))
        return 0;
    json_t *inst = NULL;
    store_get_instance(s->w.rd, json_string_value(json_object_get(check, "ServiceID")), &inst);
    json_array_append_new(s->w.out, render_check(check, inst));
    json_decref(inst);
    return 0;
}

const char *http_health_state(struct http_req *r)
{
    static const char *const states[] = {"any", "passing", "warning", "critical"};
    for (int i = 0; i < 4; i++)
        if (strcmp(r->arg, states[i]) == 0)
            return states[i];
    http_fail(r, 400, "Invalid state \"%s\": use any, passing, warning or critical", r->arg);
    return NULL;
}

static int read_health_state(struct http_req *r, struct store_read *rd, json_t **out)
{
    const char *state = http_health_state(r);
    if (state == NULL)
        return -1;
    struct state_walk s = {{r, rd, json_array()}, strcmp(state, "any") == 0 ? NULL : state};
    if (s.state == NULL || strcmp(s.state, "passing") == 0)
        json_array_append_new(s.w.out, render_serf_check(r->srv, NULL));
    if (s.state == NULL)
        store_each_check(rd, add_state_check, &s);
    else
        store_each_check_state(rd, s.state, add_state_check, &s);
    *out = s.w.out;
    return 0;
}

/* ---- /v1/status --------------------------------------------------------- */

static int read_status_leader(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    *out = json_string(st.leader_addr);
    return 0;
}

static int read_status_peers(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    struct cluster_status st;
    cluster_get_status(r->srv->opt.cluster, &st);
    *out = json_array();
    for (int i = 0; i < st.n_servers; i++)
        if (st.servers[i].voter)
            json_array_append_new(*out, json_string(st.servers[i].addr));
    if (st.n_servers == 0)
        json_array_append_new(*out, json_string(st.self_addr));
    return 0;
}

const struct http_route http_catalog_routes[] = {
    {"GET", "/v1/catalog/services", read_catalog_services, NULL, WATCH_SERVICES, NULL, false},
    {"GET", "/v1/catalog/service/", read_catalog_service, NULL, WATCH_SERVICE, NULL, false},
    {"GET", "/v1/catalog/nodes", read_catalog_nodes, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/catalog/node/", read_catalog_node, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/catalog/datacenters", read_catalog_datacenters, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/health/service/", read_health_service, NULL, WATCH_SERVICE, NULL, false},
    {"GET", "/v1/health/checks/", read_health_checks, NULL, WATCH_SERVICE, NULL, false},
    {"GET", "/v1/health/node/", read_health_node, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/health/state/", read_health_state, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/status/leader", read_status_leader, NULL, WATCH_NONE, NULL, false},
    {"GET", "/v1/status/peers", read_status_peers, NULL, WATCH_NONE, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
