/*
 * http_filter.c — ?filter= and ?node-meta= on the listing endpoints that
 * Consul documents them for. Each endpoint names the selectors it accepts
 * (Consul's tables for that endpoint) and how its answer is shaped; the
 * rendered answer is then filtered in place, before it is cached, so that a
 * cached answer is always a filtered one (the cache key holds the query).
 *
 * /v1/catalog/services lists names, not the instances the selectors speak
 * of, so http_catalog.c asks for the compiled filter and applies it to each
 * instance itself (http_filter_instances).
 */
#include <string.h>

#include "filter.h"
#include "http_internal.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Consul's structs, as our renderers lay them out. */
static const struct filter_field agent_service[] = {
    {"Kind", 's'},
    {"ID", 's'},
    {"Service", 's'},
    {"Tags", 'L'},
    {"Meta", 'M'},
    {"Meta.*", 's'},
    {"Port", 'i'},
    {"Address", 's'},
    {"TaggedAddresses", 'O'},
    {"TaggedAddresses.*", 'O'},
    {"TaggedAddresses.*.Address", 's'},
    {"TaggedAddresses.*.Port", 'i'},
    {"Weights", 'O'},
    {"Weights.Passing", 'i'},
    {"Weights.Warning", 'i'},
    {"EnableTagOverride", 'b'},
    {"Datacenter", 's'},
};

static const struct filter_field health_check[] = {
    {"Node", 's'},        {"CheckID", 's'},   {"Name", 's'},        {"Status", 's'},
    {"Notes", 's'},       {"Output", 's'},    {"ServiceID", 's'},   {"ServiceName", 's'},
    {"ServiceTags", 'L'}, {"Type", 's'},      {"Interval", 's'},    {"Timeout", 's'},
    {"ExposedPort", 'i'},
};

static const struct filter_field service_node[] = {
    {"ID", 's'},
    {"Node", 's'},
    {"Address", 's'},
    {"Datacenter", 's'},
    {"TaggedAddresses", 'M'},
    {"TaggedAddresses.*", 's'},
    {"NodeMeta", 'M'},
    {"NodeMeta.*", 's'},
    {"ServiceKind", 's'},
    {"ServiceID", 's'},
    {"ServiceName", 's'},
    {"ServiceTags", 'L'},
    {"ServiceAddress", 's'},
    {"ServiceTaggedAddresses", 'O'},
    {"ServiceTaggedAddresses.*", 'O'},
    {"ServiceTaggedAddresses.*.Address", 's'},
    {"ServiceTaggedAddresses.*.Port", 'i'},
    {"ServiceMeta", 'M'},
    {"ServiceMeta.*", 's'},
    {"ServicePort", 'i'},
    {"ServiceWeights", 'O'},
    {"ServiceWeights.Passing", 'i'},
    {"ServiceWeights.Warning", 'i'},
    {"ServiceEnableTagOverride", 'b'},
};

static const struct filter_field node[] = {
    {"ID", 's'},       {"Node", 's'},          {"Address", 's'},
    {"Datacenter", 's'}, {"TaggedAddresses", 'M'}, {"TaggedAddresses.*", 's'},
    {"Meta", 'M'},     {"Meta.*", 's'},
};

static const struct filter_field member[] = {
    {"Name", 's'},   {"Addr", 's'},        {"Port", 'i'},        {"Tags", 'M'},
    {"Tags.*", 's'}, {"Status", 'i'},      {"ProtocolMin", 'i'}, {"ProtocolMax", 'i'},
    {"ProtocolCur", 'i'}, {"DelegateMin", 'i'}, {"DelegateMax", 'i'}, {"DelegateCur", 'i'},
};

static const struct filter_field check_service_node[] = {
    {"Node", 'O'},
    {"Node.ID", 's'},
    {"Node.Node", 's'},
    {"Node.Address", 's'},
    {"Node.Datacenter", 's'},
    {"Node.TaggedAddresses", 'M'},
    {"Node.TaggedAddresses.*", 's'},
    {"Node.Meta", 'M'},
    {"Node.Meta.*", 's'},
    {"Service", 'O'},
    {"Service.Kind", 's'},
    {"Service.ID", 's'},
    {"Service.Service", 's'},
    {"Service.Tags", 'L'},
    {"Service.Meta", 'M'},
    {"Service.Meta.*", 's'},
    {"Service.Port", 'i'},
    {"Service.Address", 's'},
    {"Service.TaggedAddresses", 'O'},
    {"Service.TaggedAddresses.*", 'O'},
    {"Service.TaggedAddresses.*.Address", 's'},
    {"Service.TaggedAddresses.*.Port", 'i'},
    {"Service.Weights", 'O'},
    {"Service.Weights.Passing", 'i'},
    {"Service.Weights.Warning", 'i'},
    {"Service.EnableTagOverride", 'b'},
    {"Checks", 'O'},
    {"Checks.Node", 's'},
    {"Checks.CheckID", 's'},
    {"Checks.Name", 's'},
    {"Checks.Status", 's'},
    {"Checks.Notes", 's'},
    {"Checks.Output", 's'},
    {"Checks.ServiceID", 's'},
    {"Checks.ServiceName", 's'},
    {"Checks.ServiceTags", 'L'},
    {"Checks.Type", 's'},
};

enum shape {
    SHAPE_ARRAY,  /* [obj, ...] */
    SHAPE_OBJECT, /* {id: obj, ...} */
    SHAPE_SELF,   /* the handler filters (catalog/services) */
    SHAPE_SERVICES, /* {Node, Services: [...] or {id: ...}}: the services are filtered */
};

struct filtered_route {
    const char *path; /* as in the route table */
    enum shape shape;
    const struct filter_field *schema;
    size_t n_fields;
    const char *node_meta; /* where the node's meta sits, "" if ?node-meta= does not apply */
};

static const struct filtered_route routes[] = {
    {"/v1/agent/services", SHAPE_OBJECT, agent_service, N(agent_service), ""},
    {"/v1/agent/checks", SHAPE_OBJECT, health_check, N(health_check), ""},
    {"/v1/catalog/services", SHAPE_SELF, service_node, N(service_node), "NodeMeta"},
    {"/v1/catalog/service/", SHAPE_ARRAY, service_node, N(service_node), "NodeMeta"},
    {"/v1/catalog/nodes", SHAPE_ARRAY, node, N(node), "Meta"},
    {"/v1/health/service/", SHAPE_ARRAY, check_service_node, N(check_service_node),
     "Node.Meta"},
    {"/v1/health/checks/", SHAPE_ARRAY, health_check, N(health_check), ""},
    {"/v1/health/state/", SHAPE_ARRAY, health_check, N(health_check), ""},
    {"/v1/health/node/", SHAPE_ARRAY, health_check, N(health_check), ""},
    /* Consul filters a node's services (NodeService), not the node */
    {"/v1/catalog/node/", SHAPE_SERVICES, agent_service, N(agent_service), ""},
    {"/v1/catalog/node-services/", SHAPE_SERVICES, agent_service, N(agent_service), ""},
    {"/v1/agent/members", SHAPE_ARRAY, member, N(member), ""},
};

static const struct filtered_route *find(const struct http_req *r)
{
    for (size_t i = 0; i < N(routes); i++)
        if (r->route && strcmp(r->route->path, routes[i].path) == 0)
            return &routes[i];
    return NULL;
}

/* ?node-meta=key:value, repeatable: every pair must be in the node's Meta. */
static int check_node_meta_params(struct http_req *r)
{
    for (int i = 0; i < r->n_params; i++) {
        if (strcmp(r->params[i].key, "node-meta") != 0)
            continue;
        const char *v = r->params[i].value;
        if (v == NULL || *v == '\0' || strchr(v, ':') == NULL || *v == ':')
            return http_fail(r, 400, "Invalid node-meta \"%s\": use key:value",
                             v ? v : "");
    }
    return 0;
}

static bool node_meta_matches(struct http_req *r, const char *where, json_t *obj)
{
    if (*where == '\0')
        return true;
    json_t *meta = obj;
    char part[32];
    const char *p = where;
    while (*p && meta) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        snprintf(part, sizeof(part), "%.*s", (int)n, p);
        meta = json_object_get(meta, part);
        p += n + (dot != NULL);
    }
    for (int i = 0; i < r->n_params; i++) {
        if (strcmp(r->params[i].key, "node-meta") != 0 || r->params[i].value == NULL)
            continue;
        const char *v = r->params[i].value, *colon = strchr(v, ':');
        char key[STORE_NAME_MAX + 1];
        if (colon == NULL)
            return false;
        snprintf(key, sizeof(key), "%.*s", (int)(colon - v), v);
        const char *have = json_string_value(json_object_get(meta, key));
        if (have == NULL || strcmp(have, colon + 1) != 0)
            return false;
    }
    return true;
}

int http_filter_compile(struct http_req *r, struct filter **out)
{
    const struct filtered_route *fr = find(r);
    const char *text = http_param(r, "filter");
    char err[200];
    *out = NULL;
    if (fr == NULL)
        return 0;
    if (check_node_meta_params(r) != 0)
        return -1;
    if (text == NULL || *text == '\0')
        return 0;
    if (filter_compile(text, fr->schema, fr->n_fields, out, err, sizeof(err)) != 0)
        return http_fail(r, 400, "Failed to create boolean expression evaluator: %s", err);
    return 0;
}

bool http_filter_keep(struct http_req *r, const struct filter *f, json_t *obj)
{
    const struct filtered_route *fr = find(r);
    if (fr == NULL)
        return true;
    return node_meta_matches(r, fr->node_meta, obj) && (f == NULL || filter_match(f, obj));
}

int http_filter_answer(struct http_req *r, json_t *out)
{
    const struct filtered_route *fr = find(r);
    struct filter *f;
    if (fr == NULL || fr->shape == SHAPE_SELF)
        return 0;
    if (http_filter_compile(r, &f) != 0)
        return -1;
    if (f == NULL && !http_has_param(r, "node-meta"))
        return 0;
    enum shape shape = fr->shape;
    if (shape == SHAPE_SERVICES) {
        out = json_object_get(out, "Services"); /* null for an unknown node: nothing */
        shape = json_is_array(out) ? SHAPE_ARRAY : SHAPE_OBJECT;
    }
    if (shape == SHAPE_ARRAY && json_is_array(out)) {
        for (size_t i = json_array_size(out); i-- > 0;)
            if (!http_filter_keep(r, f, json_array_get(out, i)))
                json_array_remove(out, i);
    } else if (shape == SHAPE_OBJECT && json_is_object(out)) {
        const char *k;
        json_t *v, *tmp;
        json_object_foreach_safe(out, tmp, k, v)
        {
            if (!http_filter_keep(r, f, v))
                json_object_del(out, k);
        }
    }
    filter_free(f);
    return 0;
}
