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
 *
 * ACL features Consul has and registryd does not keep — roles, auth methods
 * and their binding rules, login and logout — answer 501 naming the feature
 * on each of Consul's routes and methods, whether ACLs are on or off, rather
 * than 404 "Invalid URL path": a client (consul acl role ..., Terraform's
 * consul_acl_role) says why. They are answered where they arrive (no
 * leader needed).
 */
#include "http_internal.h"

#include <string.h>

#include "registry/error.h"

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

static void acl_unsupported(struct http_req *r)
{
    static const struct {
        const char *prefix, *what, *instead;
    } features[] = {
        {"/v1/acl/role", "ACL roles",
         "link policies, service identities or node identities to tokens directly"},
        {"/v1/acl/auth-method", "ACL auth methods", "create tokens with PUT /v1/acl/token"},
        {"/v1/acl/binding-rule", "ACL binding rules (of auth methods)",
         "create tokens with PUT /v1/acl/token"},
        {"/v1/acl/log", "ACL login and logout (auth methods)",
         "create tokens with PUT /v1/acl/token"},
    };
    size_t i = 0;
    while (i < sizeof(features) / sizeof(features[0]) - 1 &&
           strncmp(r->route->path, features[i].prefix, strlen(features[i].prefix)) != 0)
        i++;
    http_fail(r, 501, "%s are not supported by registryd: %s", features[i].what,
              features[i].instead);
    http_finish_write(r, REG_EINVAL);
}

bool http_absent_arg_slashes(const struct http_route *rt)
{
    return rt->read == read_kv || rt->custom == acl_unsupported; /* /v1/acl/role/name/X */
}

const struct http_route http_absent_routes[] = {
    {"GET", "/v1/kv/", read_kv, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/coordinate/datacenters", read_coordinate_datacenters, NULL, WATCH_NONE, NULL,
     false},
    {"GET", "/v1/coordinate/nodes", read_coordinate_nodes, NULL, WATCH_ALL, NULL, false},
    {"GET", "/v1/coordinate/node/", read_coordinate_node, NULL, WATCH_ALL, NULL, false},
    {"PUT", "/v1/acl/role", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/role/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"PUT", "/v1/acl/role/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"DELETE", "/v1/acl/role/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/roles", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"PUT", "/v1/acl/auth-method", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/auth-method/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"PUT", "/v1/acl/auth-method/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"DELETE", "/v1/acl/auth-method/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/auth-methods", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"PUT", "/v1/acl/binding-rule", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/binding-rule/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"PUT", "/v1/acl/binding-rule/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"DELETE", "/v1/acl/binding-rule/", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"GET", "/v1/acl/binding-rules", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"POST", "/v1/acl/login", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {"POST", "/v1/acl/logout", NULL, NULL, WATCH_NONE, acl_unsupported, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
