/*
 * http_catalog_write.c — the writes that are about nodes and single checks
 * rather than one agent's service registration:
 *   PUT /v1/catalog/register, /v1/catalog/deregister   external nodes and
 *       services (the consul-esm pattern): filed under the node the body
 *       names, with checks whose status the caller sets (never probed here)
 *   PUT /v1/agent/check/register, /v1/agent/check/deregister/:id
 *   PUT /v1/agent/maintenance                          node maintenance
 * Node records and node-level checks are CMD_NODE (store.h); a service with
 * its checks is CMD_REGISTER, as from the agent endpoint.
 */
#include <stdio.h>
#include <string.h>

#include "duration.h"
#include "http_internal.h"
#include "registry/error.h"

#define MAX_CATALOG_CHECKS 32
#define NODE_MAINT_ID "_node_maintenance"

static int opt_str(struct http_req *r, json_t *obj, const char *key, const char *def,
                   size_t max, const char **out)
{
    json_t *v = json_get_ci(obj, key);
    *out = def;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return http_fail(r, 400, "Request decode failed: %s must be a string", key);
    if (strlen(json_string_value(v)) > max)
        return http_fail(r, 400, "Invalid %s: longer than %zu bytes", key, max);
    for (const char *p = json_string_value(v); *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t' && *p != '\n')
            return http_fail(r, 400, "Invalid %s: control characters", key);
    *out = json_string_value(v);
    return 0;
}

/* A catalog check's Definition as Consul decodes it (structs.
 * HealthCheckDefinition): the known fields, each of its type, durations in
 * Go's form; others dropped. A wrong type is a 400, as there: Consul's own
 * clients decode what is served back (Go's api.HealthCheckDefinition
 * parses Interval with time.ParseDuration and needs HTTP a string), so one
 * stored as given broke every client reading that service's health. */
#define DEFINITION_TEXT_MAX 65536

static int catalog_definition(struct http_req *r, json_t *defn, json_t **out)
{
    static const char *const strs[] = {"HTTP", "Method", "Body", "TLSServerName", "TCP",
                                       "UDP", "GRPC", "H2PING", "OSService"};
    static const char *const bools[] = {"TLSSkipVerify", "DisableRedirects", "TCPUseTLS",
                                        "GRPCUseTLS", "H2PingUseTLS"};
    static const char *const durs[] = {"Interval", "Timeout", "DeregisterCriticalServiceAfter"};
    *out = json_object();
    if (*out == NULL)
        return http_fail(r, 500, "out of memory");
    if (defn == NULL || json_is_null(defn))
        return 0;
    if (!json_is_object(defn))
        goto bad_type;
    json_t *v;
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        const char *text = NULL;
        v = json_get_ci(defn, strs[i]);
        if (strcmp(strs[i], "Body") == 0 && json_is_string(v)) /* any text, CRs too */
            text = strlen(json_string_value(v)) <= DEFINITION_TEXT_MAX ? json_string_value(v)
                                                                       : NULL;
        if (text == NULL && opt_str(r, defn, strs[i], NULL, DEFINITION_TEXT_MAX, &text) != 0)
            goto fail;
        if (text != NULL)
            json_object_set_new(*out, strs[i], json_string(text));
    }
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if ((v = json_get_ci(defn, bools[i])) == NULL || json_is_null(v))
            continue;
        if (!json_is_boolean(v)) {
            http_fail(r, 400, "Request decode failed: Definition.%s must be a boolean", bools[i]);
            goto fail;
        }
        json_object_set_new(*out, bools[i], json_boolean(json_is_true(v)));
    }
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        uint64_t ms;
        char text[32];
        if ((v = json_get_ci(defn, durs[i])) == NULL || json_is_null(v))
            continue;
        if (duration_parse_json(v, &ms) != 0) {
            http_fail(r, 400, "Request decode failed: Definition.%s is not a duration (use "
                              "e.g. 10s)", durs[i]);
            goto fail;
        }
        duration_format(ms, text, sizeof(text));
        json_object_set_new(*out, durs[i], json_string(text));
    }
    if ((v = json_get_ci(defn, "Header")) != NULL && !json_is_null(v)) {
        const char *k;
        json_t *vals, *x;
        size_t i;
        if (!json_is_object(v))
            goto bad_header;
        json_object_foreach(v, k, vals)
        {
            if (!json_is_array(vals))
                goto bad_header;
            json_array_foreach(vals, i, x) if (!json_is_string(x)) goto bad_header;
        }
        json_object_set_new(*out, "Header", json_deep_copy(v));
    }
    return 0;
bad_header:
    http_fail(r, 400, "Request decode failed: Definition.Header must map names to arrays of "
                      "strings");
    goto fail;
bad_type:
    http_fail(r, 400, "Request decode failed: Definition must be an object");
fail:
    json_decref(*out);
    *out = NULL;
    return -1;
}

int http_build_catalog_check(struct http_req *r, json_t *def, const char *sid, const char *sname,
                             const char *node, const char *default_id, json_t **out)
{
    if (json_is_object(def) && http_body_scope_refused(r, def))
        return -1;
    const char *id, *name, *status, *notes, *output;
    if (!json_is_object(def))
        return http_fail(r, 400, "Request decode failed: a check must be a JSON object");
    /* "" is unset, as Consul reads these (Go's zero value) */
    if (opt_str(r, def, "CheckID", "", STORE_NAME_MAX, &id) ||
        (*id == '\0' && opt_str(r, def, "ID", "", STORE_NAME_MAX, &id)) ||
        opt_str(r, def, "Name", "", 1024, &name) ||
        opt_str(r, def, "Status", "", 16, &status) ||
        opt_str(r, def, "Notes", "", 1024, &notes) || opt_str(r, def, "Output", "", 4096, &output))
        return -1;
    if (*name == '\0')
        name = NULL;
    if (*status == '\0')
        status = "critical"; /* the state store's default */
    if (*id == '\0')
        id = default_id != NULL ? default_id : name; /* Consul: CheckID defaults to Name */
    if (id == NULL || !http_valid_name(id))
        return http_fail_name(r, "CheckID", id ? id : "");
    if (strcmp(status, "passing") != 0 && strcmp(status, "warning") != 0 &&
        strcmp(status, "critical") != 0)
        return http_fail(r, 400, "Invalid check Status \"%s\": use passing, warning or critical",
                         status);
    json_t *defn;
    if (catalog_definition(r, json_get_ci(def, "Definition"), &defn) != 0)
        return -1;
    *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "Node", node,
                     "CheckID", id, "Name", name ? name : id, "Status", status, "Notes", notes,
                     "Output", output, "ServiceID", sid ? sid : "", "ServiceName",
                     sname ? sname : "", "Type", "", "Definition", defn);
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

/* ---- PUT /v1/catalog/register ------------------------------------------- */

static int build_node(struct http_req *r, json_t *body, const char **node, json_t **record)
{
    const char *addr;
    if (opt_str(r, body, "Node", "", STORE_NAME_MAX, node) ||
        opt_str(r, body, "Address", "", STORE_NAME_MAX, &addr))
        return -1;
    if (http_body_scope_refused(r, body))
        return -1;
    if (!**node || !*addr)
        return http_fail(r, 400, "Must provide node and address");
    if (!http_valid_name(*node))
        return http_fail_name(r, "node name", *node);
    json_t *meta = json_get_ci(body, "NodeMeta");
    if (meta != NULL && !json_is_null(meta) && http_check_meta(r, meta, "NodeMeta") != 0)
        return -1;
    /* decoded by Consul into typed fields, so a wrong type is a 400 there */
    json_t *tagged = json_get_ci(body, "TaggedAddresses"), *v;
    const char *k;
    if (tagged != NULL && !json_is_null(tagged)) {
        if (!json_is_object(tagged))
            return http_fail(r, 400, "Request decode failed: TaggedAddresses must be an object "
                                     "of strings");
        json_object_foreach(tagged, k, v) if (!json_is_string(v)) return http_fail(
            r, 400, "Request decode failed: TaggedAddresses[\"%.64s\"] must be a string", k);
    }
    json_t *skip = json_get_ci(body, "SkipNodeUpdate");
    if (skip != NULL && !json_is_null(skip) && !json_is_boolean(skip))
        return http_fail(r, 400, "Request decode failed: SkipNodeUpdate must be a boolean");
    *record = json_pack("{s:s, s:s, s:o}", "Node", *node, "NodeAddress", addr, "NodeMeta",
                        json_is_object(meta) ? json_deep_copy(meta) : json_object());
    if (*record != NULL && json_is_object(tagged) && json_object_size(tagged) > 0)
        json_object_set_new(*record, "NodeTaggedAddresses", json_deep_copy(tagged));
    return *record ? 0 : http_fail(r, 500, "out of memory");
}

/* The instance sid registered on node (a new reference, its indexes
 * left out, as a registration carries it), or NULL with a 4xx/5xx set:
 * Consul's ensureCheckTxn takes a check of a service already on the node
 * without the service in the request ("Missing service registration"
 * otherwise). */
static json_t *stored_service_on(struct http_req *r, struct store_read *rd, const char *sid,
                                 const char *node)
{
    json_t *inst = NULL;
    if (store_get_instance(rd, sid, &inst) != 0 ||
        strcmp(json_string_value(json_object_get(inst, "Node")) ?: "", node) != 0) {
        json_decref(inst);
        http_fail(r, 400, "Missing service registration: no service \"%.64s\" on node \"%.64s\"",
                  sid, node);
        return NULL;
    }
    json_object_del(inst, "CreateIndex");
    json_object_del(inst, "ModifyIndex");
    return inst;
}

static int do_catalog_register(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    json_t *body = NULL, *record = NULL, *node_checks = json_array(), *svc_checks = NULL;
    json_t *svc = NULL, *svc_body = NULL;
    const char *node;
    int rc = -1;
    bool checks_only = false; /* the service is the one stored, not in the body */
    if (http_body_json(r, &body) != 0 || build_node(r, body, &node, &record) != 0)
        goto out;
    json_t *service = json_get_ci(body, "Service");
    const char *sid = NULL, *sname = NULL;
    if (service != NULL && !json_is_null(service)) {
        if (!json_is_object(service)) {
            http_fail(r, 400, "Request decode failed: Service must be an object");
            goto out;
        }
        /* the catalog's AgentService names the service "Service"; the
         * agent's definition calls it "Name" */
        svc_body = json_deep_copy(service);
        json_t *sn = json_get_ci(svc_body, "Service");
        if (sn != NULL)
            json_object_set(svc_body, "Name", sn);
        json_object_del(svc_body, "Check");
        json_object_del(svc_body, "Checks");
        struct http_node n = {node, json_string_value(json_object_get(record, "NodeAddress")),
                              json_object_get(record, "NodeMeta"),
                              json_object_get(record, "NodeTaggedAddresses")};
        if (http_build_registration(r, svc_body, &n, false, &svc, &svc_checks) != 0)
            goto out;
        sid = json_string_value(json_object_get(svc, "ID"));
        sname = json_string_value(json_object_get(svc, "Service"));
    }
    json_t *one = json_get_ci(body, "Check"), *many = json_get_ci(body, "Checks");
    json_t *defs = json_array();
    if (one != NULL && !json_is_null(one))
        json_array_append(defs, one);
    if (json_is_array(many))
        json_array_extend(defs, many);
    else if (many != NULL && !json_is_null(many)) {
        json_decref(defs);
        http_fail(r, 400, "Request decode failed: Checks must be an array");
        goto out;
    }
    if (json_array_size(defs) > MAX_CATALOG_CHECKS) {
        json_decref(defs);
        http_fail(r, 400, "Too many checks: at most %d", MAX_CATALOG_CHECKS);
        goto out;
    }
    size_t i;
    json_t *def;
    json_array_foreach(defs, i, def)
    {
        const char *csid = NULL;
        json_t *check;
        if (json_is_object(def) && opt_str(r, def, "ServiceID", NULL, STORE_NAME_MAX, &csid)) {
            json_decref(defs);
            goto out;
        }
        if (csid != NULL && *csid && sid == NULL) {
            /* a check of a service on the node, sent without the service:
             * the stored instance is registered again with it */
            if ((svc = stored_service_on(r, rd, csid, node)) == NULL) {
                json_decref(defs);
                goto out;
            }
            svc_checks = json_array();
            checks_only = true;
            sid = json_string_value(json_object_get(svc, "ID"));
            sname = json_string_value(json_object_get(svc, "Service"));
        }
        if (csid != NULL && *csid && strcmp(csid, sid) != 0) {
            json_decref(defs);
            http_fail(r, 400, "Check's ServiceID \"%.64s\" is not the service registered with "
                              "it (one service per registration)",
                      csid);
            goto out;
        }
        bool of_service = csid != NULL && *csid;
        if (http_build_catalog_check(r, def, of_service ? sid : NULL, of_service ? sname : NULL,
                                     node, NULL, &check) != 0) {
            json_decref(defs);
            goto out;
        }
        json_array_append_new(of_service ? svc_checks : node_checks, check);
    }
    json_decref(defs);
    json_t *node_ops = json_pack("{s:s, s:O, s:O, s:b, s:b}", "Node", node, "Record", record,
                                 "Put", node_checks, "SetStatus", 1, "SkipNodeUpdate",
                                 json_is_true(json_get_ci(body, "SkipNodeUpdate")));
    if (svc != NULL) {
        cmd->op = CMD_REGISTER;
        cmd->args = json_pack("{s:O, s:O, s:b, s:b, s:o, s:b, s:b}", "Service", svc, "Checks",
                              svc_checks, "ReplaceChecks", 0, "SetStatus", 1, "NodeOps", node_ops,
                              "OneNode", 1, "ChecksOnly", checks_only);
    } else {
        cmd->op = CMD_NODE;
        cmd->args = node_ops;
    }
    rc = cmd->args ? 0 : http_fail(r, 500, "out of memory");
out:
    json_decref(body);
    json_decref(record);
    json_decref(node_checks);
    json_decref(svc_checks);
    json_decref(svc);
    json_decref(svc_body);
    return rc;
}

/* ---- PUT /v1/catalog/deregister ------------------------------------------ */

/* Is the record id (an instance or a check, read with get) on node? */
static bool filed_under(struct store_read *rd,
                        int (*get)(struct store_read *, const char *, json_t **), const char *id,
                        const char *node)
{
    json_t *rec = NULL;
    const char *on = NULL;
    if (get(rd, id, &rec) == 0)
        on = json_string_value(json_object_get(rec, "Node"));
    bool here = on != NULL && strcmp(on, node) == 0;
    json_decref(rec);
    return here;
}

static int do_catalog_deregister(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    json_t *body = NULL;
    const char *node, *sid, *cid;
    int rc = -1;
    if (http_body_json(r, &body) != 0)
        return -1;
    if (opt_str(r, body, "Node", "", STORE_NAME_MAX, &node) ||
        opt_str(r, body, "ServiceID", "", STORE_NAME_MAX, &sid) ||
        opt_str(r, body, "CheckID", "", STORE_NAME_MAX, &cid))
        goto out;
    if (!*node) {
        http_fail(r, 400, "Must provide node");
        goto out;
    }
    /* an instance or check of this node only (Consul keys both on node and
     * ID): the ACL check was on the node the body names; nothing to do is
     * no error (Consul) */
    if (*sid) {
        if (!filed_under(rd, store_get_instance, sid, node)) {
            rc = 0;
            goto out;
        }
        cmd->op = CMD_DEREGISTER;
        cmd->args = json_pack("{s:s}", "ServiceID", sid);
    } else if (*cid) {
        if (!filed_under(rd, store_get_check, cid, node)) {
            rc = 0;
            goto out;
        }
        cmd->op = CMD_NODE;
        cmd->args = json_pack("{s:s, s:[s]}", "Node", node, "Delete", cid);
    } else {
        cmd->op = CMD_NODE;
        cmd->args = json_pack("{s:s, s:b}", "Node", node, "Deregister", 1);
    }
    rc = cmd->args ? 0 : http_fail(r, 500, "out of memory");
out:
    json_decref(body);
    return rc;
}

/* ---- PUT /v1/agent/check/register, /deregister/:id ---------------------- */

/* A check attached to a service (ServiceID) is registered with it, and run
 * by the checker like the service's own; one without is the node's own (the
 * node that received it), run the same way, and counts for every instance
 * on that node, as Consul's. */
static int do_check_register(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    json_t *body = NULL, *inst = NULL, *check = NULL;
    const char *sid, *name;
    int rc = -1;
    if (http_body_json(r, &body) != 0)
        return -1;
    if (opt_str(r, body, "ServiceID", "", STORE_NAME_MAX, &sid) ||
        opt_str(r, body, "Name", "", 1024, &name))
        goto out;
    if (!*name) {
        http_fail(r, 400, "Missing check name");
        goto out;
    }
    if (!*sid) {
        if (http_build_agent_check(r, body, "", "", name, &check) != 0)
            goto out;
        cmd->op = CMD_NODE; /* re-registered, it keeps what it observed */
        cmd->args = json_pack("{s:s, s:[O], s:b}", "Node", http_origin_node(r), "Put", check,
                              "SetStatus", 0);
        rc = cmd->args ? 0 : http_fail(r, 500, "out of memory");
        goto out;
    }
    if (store_get_instance(rd, sid, &inst) != 0) {
        http_fail(r, 404, "ServiceID \"%s\" does not exist", sid);
        goto out;
    }
    const char *sname = json_string_value(json_object_get(inst, "Service"));
    if (http_build_agent_check(r, body, sid, sname, name, &check) != 0)
        goto out;
    /* the stored instance, re-registered with one more check */
    json_object_del(inst, "CreateIndex");
    json_object_del(inst, "ModifyIndex");
    cmd->op = CMD_REGISTER;
    cmd->args = json_pack("{s:O, s:[O], s:b, s:b}", "Service", inst, "Checks", check,
                          "ReplaceChecks", 0, "ChecksOnly", 1);
    rc = cmd->args ? 0 : http_fail(r, 500, "out of memory");
out:
    json_decref(body);
    json_decref(inst);
    json_decref(check);
    return rc;
}

static int do_check_deregister(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    json_t *check = NULL;
    if (store_get_check(rd, r->arg, &check) != 0)
        return http_fail(r, 404, UNKNOWN_CHECK, r->arg);
    const char *node = json_string_value(json_object_get(check, "Node"));
    cmd->op = CMD_NODE;
    cmd->args = json_pack("{s:s, s:[s]}", "Node", node && *node ? node : http_origin_node(r),
                          "Delete", r->arg);
    json_decref(check);
    return cmd->args ? 0 : http_fail(r, 500, "out of memory");
}

/* ---- PUT /v1/agent/maintenance?enable=&reason= --------------------------- */

static int do_node_maintenance(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    (void)rd;
    const char *enable = http_param(r, "enable"), *reason = http_param(r, "reason");
    bool on;
    if (enable == NULL)
        return http_fail(r, 400, "Missing value for enable");
    if (http_parse_bool(enable, &on) != 0)
        return http_fail(r, 400, "Invalid value for enable: \"%s\"", enable);
    if (reason != NULL && strlen(reason) > 1024)
        return http_fail(r, 400, "Invalid reason: longer than 1024 bytes");
    const char *node = http_origin_node(r);
    cmd->op = CMD_NODE;
    if (!on) {
        cmd->args = json_pack("{s:s, s:[s]}", "Node", node, "Delete", NODE_MAINT_ID);
    } else {
        const char *notes = reason && *reason ? reason
                                              : "Maintenance mode is enabled for this node, but "
                                                "no reason was provided. This is a default message.";
        cmd->args = json_pack("{s:s, s:[{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}}], s:b}",
                              "Node", node, "Put", "CheckID", NODE_MAINT_ID, "Name",
                              "Node Maintenance Mode", "Status", "critical", "Notes", notes,
                              "Output", "", "ServiceID", "", "ServiceName", "", "Type",
                              "maintenance", "Definition", "SetStatus", 1);
    }
    return cmd->args ? 0 : http_fail(r, 500, "out of memory");
}

const struct http_route http_catalog_write_routes[] = {
    {"PUT", "/v1/catalog/register", NULL, do_catalog_register, WATCH_NONE, NULL, false},
    {"PUT", "/v1/catalog/deregister", NULL, do_catalog_deregister, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/register", NULL, do_check_register, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/deregister/", NULL, do_check_deregister, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/maintenance", NULL, do_node_maintenance, WATCH_NONE, NULL, false},
    /* python-consul 0.7 (Debian's) deregisters checks with GET, as Consul
     * before 1.0 took it */
    {"GET", "/v1/agent/check/deregister/", NULL, do_check_deregister, WATCH_NONE, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
