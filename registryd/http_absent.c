/*
 * http_absent.c — what Consul serves and registryd does not keep, answered
 * as Consul answers an empty one, so that a client watching it blocks
 * instead of spinning:
 *   GET /v1/kv/KEY         404, a blocking query (Consul's on a missing key):
 *                          a KV watch (Fabio, consul-template's key, Spring
 *                          Cloud Consul Config) asked again at once on a
 *                          plain 404, thousands of times a second
 *   GET /v1/coordinate/... no network coordinates: [] for the nodes, this
 *                          datacenter with none, 404 for a node
 * Writes to these are not taken (404, as any route registryd lacks).
 */
#include "http_internal.h"

static int read_kv(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    (void)out;
    return http_fail(r, 404, "Key \"%.128s\" not found: registryd keeps no key-value store",
                     r->arg);
}

static int read_coordinate_datacenters(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    *out = json_pack("[{s:s, s:s, s:[]}]", "Datacenter", r->srv->opt.datacenter, "AreaID", "wan",
                     "Coordinates");
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

static int read_coordinate_nodes(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)r;
    (void)rd;
    *out = json_array();
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

static int read_coordinate_node(struct http_req *r, struct store_read *rd, json_t **out)
{
    (void)rd;
    (void)out;
    return http_fail(r, 404, "No coordinates for node \"%.128s\": registryd keeps none", r->arg);
}

bool http_absent_arg_slashes(const struct http_route *rt)
{
    return rt->read == read_kv;
}

const struct http_route http_absent_routes[] = {
    {"GET", "/v1/kv/", read_kv, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/coordinate/datacenters", read_coordinate_datacenters, NULL, WATCH_NONE, NULL,
     false},
    {"GET", "/v1/coordinate/nodes", read_coordinate_nodes, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/coordinate/node/", read_coordinate_node, NULL, WATCH_ALL, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
