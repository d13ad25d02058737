/*
 * http_agent.c — /v1/agent/...: service registration (validated and
 * normalised into a CMD_REGISTER whose application is deterministic),
 * deregistration, maintenance, TTL check updates, and the agent's views.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "check_target.h"
#include "cluster.h"
#include "config.h"
#include "health.h"
#include "metrics.h"
#include "http_internal.h"
#include "record.h"
#include "registry/error.h"

#define MAX_TAGS 256
#define MAX_META 64
#define MAX_META_KEY 128
#define MAX_META_VALUE 512
#define MAX_HEADER_VALUE 8192 /* a check's Header value */
#define MAX_CHECKS 32
#define MAX_OUTPUT 4096
#define MAX_TEXT 1024
#define MAX_TAGGED 16
#define MAX_UPDATE_OUTPUT (1 << 20) /* what /check/update takes before truncating */

bool http_valid_name(const char *s)
{
    return record_valid_key(s, strlen(s), STORE_NAME_MAX);
}

bool http_body_scope_refused(struct http_req *r, json_t *obj)
{
    static const char *const fields[][2] = {{"Namespace", "Namespaces are"},
                                            {"Partition", "Partitions are"}};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_get_ci(obj, fields[i][0]);
        if (v != NULL && !json_is_null(v) &&
            !(json_is_string(v) && (!*json_string_value(v) ||
                                    strcasecmp(json_string_value(v), "default") == 0))) {
            http_fail(r, 400, "Request decode failed: json: unknown field \"%s\" - %s a Consul "
                              "Enterprise feature",
                      fields[i][0], fields[i][1]);
            return true;
        }
    }
    return false;
}

int http_fail_name(struct http_req *r, const char *what, const char *s)
{
    return http_fail(r, 400, "Invalid %s \"%.64s\": 1 to %d bytes, without a control character "
                             "or a slash",
                     what, s, STORE_NAME_MAX);
}

static bool valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return false;
    return true;
}

/* Optional string field: absent/null -> def. */
static int opt_string(struct http_req *r, json_t *obj, const char *key, const char *def,
                      size_t max, const char **out)
{
    json_t *v = json_get_ci(obj, key);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return http_fail(r, 400, "Request decode failed: %s must be a string", key);
    if (!valid_text(json_string_value(v), max))
        return http_fail(r, 400, "Invalid %s: longer than %zu bytes or has control characters",
                         key, max);
    *out = json_string_value(v);
    return 0;
}

static int opt_duration(struct http_req *r, json_t *obj, const char *key, uint64_t *ms)
{
    json_t *v = json_get_ci(obj, key);
    *ms = 0;
    if (v == NULL || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
        return 0;
    if (duration_parse_json(v, ms) != 0)
        return http_fail(r, 400, "Invalid %s: expected a duration such as \"10s\"", key);
    return 0;
}

/* A check definition of zero values only ({}, or every field null, "",
 * 0, false or empty): what Go decodes into an empty CheckType. */
static bool check_is_empty(json_t *def)
{
    if (!json_is_object(def))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(def, k, v)
    {
        if (!(json_is_null(v) || json_is_false(v) ||
              (json_is_string(v) && !*json_string_value(v)) ||
              (json_is_integer(v) && json_integer_value(v) == 0) ||
              (json_is_array(v) && json_array_size(v) == 0) ||
              (json_is_object(v) && json_object_size(v) == 0)))
            return false;
    }
    return true;
}

static int opt_uint(struct http_req *r, json_t *obj, const char *key, json_int_t max,
                    json_int_t def, json_int_t *out)
{
    json_t *v = json_get_ci(obj, key);
    *out = def;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return http_fail(r, 400, "Request decode failed: %s must be an integer", key);
    if (json_integer_value(v) < 0 || json_integer_value(v) > max)
        return http_fail(r, 400, "Invalid %s: %lld is out of range 0..%lld", key,
                         (long long)json_integer_value(v), (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static json_t *duration_json(uint64_t ms)
{
    char buf[64];
    duration_format(ms, buf, sizeof(buf));
    return json_string(buf);
}

static const char *valid_status(const char *s)
{
    static const char *const states[] = {"passing", "warning", "critical"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, states[i]) == 0)
            return states[i];
    return NULL;
}

/* Check kinds Consul has and registryd does not run: a clear 400 rather
 * than "exactly one of TTL, HTTP or TCP". Script checks get Consul's own
 * answer for an agent without enable_script_checks. */
static int unsupported_kind(struct http_req *r, json_t *def)
{
    static const struct {
        const char *key, *what;
    } kinds[] = {
        {"DockerContainerID", "Docker checks are not supported by registryd"},
        {"OSService", "OSService checks are not supported by registryd"},
    };
    json_t *args = json_get_ci(def, "Args");
    if (args == NULL)
        args = json_get_ci(def, "ScriptArgs");
    if (args != NULL && !json_is_null(args) && !r->srv->opt.enable_script_checks)
        return http_fail(r, 400, "Invalid check: Scripts are disabled on this agent; to enable, "
                                 "configure 'enable_script_checks' or "
                                 "'enable_local_script_checks' to true");
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        json_t *v = json_get_ci(def, kinds[i].key);
        if (v != NULL && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v)))
            return http_fail(r, 400, "Invalid check: %s (%s)", kinds[i].what, kinds[i].key);
    }
    return 0;
}

/* Validate one check definition and build the stored check record. */
/* Where a check may go (check_target.h): 400 with the reason. */
static int check_targets_allowed(struct http_req *r, const char *http_url, const char *tcp,
                                 const char *udp, const char *grpc, const char *h2ping)
{
    const struct {
        const char *kind, *spec;
    } t[] = {{"HTTP", http_url}, {"TCP", tcp}, {"UDP", udp}, {"GRPC", grpc}, {"H2PING", h2ping}};
    char why[200];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].spec && check_target_spec(t[i].kind, t[i].spec, why, sizeof(why)) != 0)
            return http_fail(r, 400, "Invalid check: %s target refused: %s", t[i].kind, why);
    return 0;
}

static int build_check(struct http_req *r, json_t *def, const char *sid, const char *sname,
                       const char *default_id, json_t **out)
{
    const char *id, *name, *notes, *status, *http_url, *tcp, *udp, *grpc, *h2ping, *method, *body,
        *ttl_s, *server_name, *alias_svc, *alias_node;
    uint64_t interval, timeout, ttl, dereg;
    json_int_t succ, fail, warn, outmax;
    char default_name[STORE_NAME_MAX + 32];

    if (!json_is_object(def))
        return http_fail(r, 400, "Request decode failed: a check must be a JSON object");
    snprintf(default_name, sizeof(default_name), "Service '%s' check", sname);
    /* "" is unset for the ID, Name and Status, as Consul reads them (Go's
     * zero value): serializers write "" for a field left alone */
    if (opt_string(r, def, "CheckID", "", STORE_NAME_MAX, &id) ||
        (*id == '\0' && opt_string(r, def, "ID", "", STORE_NAME_MAX, &id)) ||
        opt_string(r, def, "Name", "", MAX_TEXT, &name) ||
        opt_string(r, def, "Notes", "", MAX_TEXT, &notes) ||
        opt_string(r, def, "Status", "", 16, &status) ||
        opt_string(r, def, "HTTP", NULL, MAX_TEXT, &http_url) ||
        opt_string(r, def, "TCP", NULL, MAX_TEXT, &tcp) ||
        opt_string(r, def, "UDP", NULL, MAX_TEXT, &udp) ||
        opt_string(r, def, "GRPC", NULL, MAX_TEXT, &grpc) ||
        opt_string(r, def, "H2PING", NULL, MAX_TEXT, &h2ping) ||
        opt_string(r, def, "TLSServerName", NULL, STORE_NAME_MAX, &server_name) ||
        opt_string(r, def, "AliasService", NULL, STORE_NAME_MAX, &alias_svc) ||
        opt_string(r, def, "AliasNode", NULL, STORE_NAME_MAX, &alias_node) ||
        opt_string(r, def, "Method", NULL, 16, &method) ||
        opt_string(r, def, "Body", NULL, MAX_OUTPUT, &body) ||
        /* a number is nanoseconds, as Go decodes a Duration */
        (json_is_integer(json_get_ci(def, "TTL"))
             ? (ttl_s = json_integer_value(json_get_ci(def, "TTL")) != 0 ? "" : NULL, 0)
             : opt_string(r, def, "TTL", NULL, 64, &ttl_s)) ||
        opt_duration(r, def, "Interval", &interval) || opt_duration(r, def, "Timeout", &timeout) ||
        opt_duration(r, def, "TTL", &ttl) ||
        opt_duration(r, def, "DeregisterCriticalServiceAfter", &dereg) ||
        opt_uint(r, def, "SuccessBeforePassing", 1000, 0, &succ) ||
        opt_uint(r, def, "FailuresBeforeCritical", 1000, 0, &fail) ||
        opt_uint(r, def, "FailuresBeforeWarning", 1000, 0, &warn) ||
        opt_uint(r, def, "OutputMaxSize", INT32_MAX, 0, &outmax))
        return -1;
    if (*id == '\0')
        id = default_id;
    if (*name == '\0')
        name = default_name;
    if (*status == '\0')
        status = "critical";
    if (!http_valid_name(id))
        return http_fail_name(r, "CheckID", id);
    if (http_body_scope_refused(r, def))
        return -1;
    if (warn > fail) /* CheckType.Validate */
        return http_fail(r, 400, "Invalid check: FailuresBeforeWarning can't be higher than "
                                 "FailuresBeforeCritical");
    if (!valid_status(status))
        return http_fail(r, 400, "Invalid check Status \"%s\": use passing, warning or critical",
                         status);
    if (unsupported_kind(r, def) != 0)
        return -1;
    if (udp != NULL && *udp == '\0')
        udp = NULL;
    if (ttl_s != NULL && *ttl_s == '\0' && !json_is_integer(json_get_ci(def, "TTL")))
        ttl_s = NULL; /* "TTL": "" is no TTL, as Go decodes it */
    json_t *script = json_get_ci(def, "Args");
    if (script == NULL)
        script = json_get_ci(def, "ScriptArgs");
    if (script != NULL && json_is_null(script))
        script = NULL;
    if (script != NULL) { /* only reached with enable_script_checks */
        size_t i;
        json_t *a;
        if (!json_is_array(script) || json_array_size(script) == 0 ||
            json_array_size(script) > 64)
            return http_fail(r, 400, "Invalid check: Args must be an array of 1 to 64 strings");
        json_array_foreach(script, i, a) if (!json_is_string(a) || !*json_string_value(a) ||
                                             !valid_text(json_string_value(a), MAX_TEXT))
            return http_fail(r, 400, "Invalid check: Args must be non-empty strings");
    }
    if (grpc != NULL && *grpc == '\0')
        grpc = NULL;
    if (h2ping != NULL && *h2ping == '\0')
        h2ping = NULL;
    if (alias_svc != NULL && *alias_svc == '\0')
        alias_svc = NULL;
    if (alias_node != NULL && *alias_node == '\0')
        alias_node = NULL;
    bool alias = alias_svc != NULL || alias_node != NULL;
    if (alias && interval == 0)
        interval = 1000; /* Consul follows the aliased checks; here, every second */
    if (check_targets_allowed(r, http_url, tcp, udp, grpc, h2ping) != 0)
        return -1;
    int kinds = (http_url != NULL) + (tcp != NULL) + (udp != NULL) + (grpc != NULL) +
                (h2ping != NULL) + (script != NULL) + alias + (ttl_s != NULL && ttl > 0);
    if (kinds != 1)
        return http_fail(r, 400, "Invalid check: exactly one of TTL, HTTP, TCP, UDP, GRPC or "
                                 "H2PING is required");
    if (ttl_s != NULL && ttl > 0 && interval > 0)
        return http_fail(r, 400, "Invalid check: Interval and TTL cannot both be specified");
    if ((http_url || tcp || udp || grpc || h2ping || script) && interval == 0)
        return http_fail(r, 400, "Invalid check: HTTP, TCP, UDP, GRPC and H2PING checks need an "
                                 "Interval");
    char uhost[256], hp[MAX_TEXT + 1];
    unsigned short uport;
    if (udp && conf_split_hostport(udp, uhost, sizeof(uhost), &uport) != 0)
        return http_fail(r, 400, "Invalid check: UDP must be HOST:PORT");
    if (h2ping && conf_split_hostport(h2ping, uhost, sizeof(uhost), &uport) != 0)
        return http_fail(r, 400, "Invalid check: H2PING must be HOST:PORT");
    if (grpc) {
        const char *slash = strchr(grpc, '/');
        snprintf(hp, sizeof(hp), "%.*s", (int)(slash ? (size_t)(slash - grpc) : strlen(grpc)),
                 grpc);
        if (conf_split_hostport(hp, uhost, sizeof(uhost), &uport) != 0)
            return http_fail(r, 400, "Invalid check: GRPC must be HOST:PORT or "
                                     "HOST:PORT/SERVICE");
        if (slash && strlen(slash + 1) > 127)
            return http_fail(r, 400, "Invalid check: GRPC service name longer than 127 bytes");
    }
    static const char *const bools[] = {"GRPCUseTLS", "H2PingUseTLS"};
    for (size_t i = 0; i < 2; i++) {
        json_t *b = json_get_ci(def, bools[i]);
        if (b && !json_is_null(b) && !json_is_boolean(b))
            return http_fail(r, 400, "Request decode failed: %s must be a boolean", bools[i]);
    }
    if (interval > 0 && interval < 100)
        return http_fail(r, 400, "Invalid check: Interval must be at least 100ms");
    if (interval > 0 && timeout > interval)
        timeout = interval; /* Consul's checks give up at the next interval all the same */
    if (ttl_s != NULL && ttl < 100)
        return http_fail(r, 400, "Invalid check: TTL must be at least 100ms");
    if (http_url && strncmp(http_url, "http://", 7) != 0 && strncmp(http_url, "https://", 8) != 0)
        return http_fail(r, 400, "Invalid check: HTTP must be an http:// or https:// URL");
    json_t *header = json_get_ci(def, "Header");
    if (header && !json_is_null(header)) {
        const char *hk;
        json_t *hv;
        if (!json_is_object(header))
            return http_fail(r, 400, "Request decode failed: Header must be an object of arrays");
        json_object_foreach(header, hk, hv)
        {
            size_t i;
            json_t *x;
            if (!json_is_array(hv))
                return http_fail(r, 400, "Request decode failed: Header values must be arrays");
            /* a field name is an RFC 9110 token; a value has no CR, LF or
             * other control byte (the probe would send ": e", or drop it) */
            if (!*hk || strspn(hk, "!#$%&'*+-.^_`|~0123456789"
                                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") !=
                            strlen(hk))
                return http_fail(r, 400, "Invalid check: Header name \"%.64s\" is not a token",
                                 hk);
            json_array_foreach(hv, i, x)
            {
                if (!json_is_string(x))
                    return http_fail(r, 400,
                                     "Request decode failed: Header values must be strings");
                if (!valid_text(json_string_value(x), MAX_HEADER_VALUE))
                    return http_fail(r, 400,
                                     "Invalid check: Header \"%.64s\" has a control character "
                                     "or is over %d bytes",
                                     hk, MAX_HEADER_VALUE);
            }
        }
    }
    json_t *skip = json_get_ci(def, "TLSSkipVerify");
    if (skip && !json_is_null(skip) && !json_is_boolean(skip))
        return http_fail(r, 400, "Request decode failed: TLSSkipVerify must be a boolean");
    json_t *noredir = json_get_ci(def, "DisableRedirects");
    if (noredir && !json_is_null(noredir) && !json_is_boolean(noredir))
        return http_fail(r, 400, "Request decode failed: DisableRedirects must be a boolean");

    json_t *d = json_object();
    const char *type = http_url ? "http"
                       : tcp    ? "tcp"
                       : udp    ? "udp"
                       : grpc   ? "grpc"
                       : h2ping ? "h2ping"
                       : script ? "script"
                       : alias  ? "alias"
                                : "ttl";
    if (http_url) {
        json_object_set_new(d, "HTTP", json_string(http_url));
        json_object_set_new(d, "Method", json_string(method ? method : "GET"));
        if (header && json_is_object(header))
            json_object_set(d, "Header", header);
        if (body)
            json_object_set_new(d, "Body", json_string(body));
        json_object_set_new(d, "TLSSkipVerify", json_boolean(json_is_true(skip)));
        if (json_is_true(noredir))
            json_object_set_new(d, "DisableRedirects", json_true());
        if (server_name && *server_name)
            json_object_set_new(d, "TLSServerName", json_string(server_name));
    }
    if (tcp)
        json_object_set_new(d, "TCP", json_string(tcp));
    if (udp)
        json_object_set_new(d, "UDP", json_string(udp));
    if (script)
        json_object_set(d, "Args", script);
    if (alias_svc)
        json_object_set_new(d, "AliasService", json_string(alias_svc));
    if (alias_node)
        json_object_set_new(d, "AliasNode", json_string(alias_node));
    if (grpc || h2ping) {
        json_t *usetls = json_get_ci(def, grpc ? "GRPCUseTLS" : "H2PingUseTLS");
        json_object_set_new(d, grpc ? "GRPC" : "H2PING", json_string(grpc ? grpc : h2ping));
        /* Consul: GRPC is plain unless GRPCUseTLS, H2PING uses TLS unless told not to */
        json_object_set_new(d, grpc ? "GRPCUseTLS" : "H2PingUseTLS",
                            json_boolean(grpc ? json_is_true(usetls) : !json_is_false(usetls)));
        json_object_set_new(d, "TLSSkipVerify", json_boolean(json_is_true(skip)));
        if (server_name)
            json_object_set_new(d, "TLSServerName", json_string(server_name));
    }
    if (ttl_s)
        json_object_set_new(d, "TTL", duration_json(ttl));
    if (interval)
        json_object_set_new(d, "Interval", duration_json(interval));
    json_object_set_new(d, "Timeout", duration_json(timeout ? timeout : 10000));
    if (dereg)
        json_object_set_new(d, "DeregisterCriticalServiceAfter", duration_json(dereg));
    json_object_set_new(d, "SuccessBeforePassing", json_integer(succ));
    json_object_set_new(d, "FailuresBeforeCritical", json_integer(fail));
    if (warn) /* only when given: most checks leave it out */
        json_object_set_new(d, "FailuresBeforeWarning", json_integer(warn));
    if (outmax) /* Consul keeps at most 4 KiB whatever is asked */
        json_object_set_new(d, "OutputMaxSize",
                            json_integer(outmax < MAX_OUTPUT ? outmax : MAX_OUTPUT));

    *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "Node",
                     http_origin_node(r), "CheckID", id, "Name", name, "Status", status, "Notes",
                     notes, "Output", "", "ServiceID", sid, "ServiceName", sname, "Type", type,
                     "Definition", d);
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

static int build_tags(struct http_req *r, json_t *body, json_t **out)
{
    json_t *tags = json_get_ci(body, "Tags");
    *out = json_array();
    if (tags == NULL || json_is_null(tags))
        return 0;
    if (!json_is_array(tags))
        return http_fail(r, 400, "Request decode failed: Tags must be an array of strings");
    if (json_array_size(tags) > MAX_TAGS)
        return http_fail(r, 400, "Invalid Tags: at most %d tags", MAX_TAGS);
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        if (!json_is_string(t))
            return http_fail(r, 400, "Request decode failed: Tags must be an array of strings");
        /* "" is a tag to Consul (TAGS="" split on commas gives one) */
        if (!valid_text(json_string_value(t), STORE_NAME_MAX))
            return http_fail(r, 400, "Invalid tag \"%.64s\": at most %d bytes, without a "
                                     "control character",
                             json_string_value(t), STORE_NAME_MAX);
        json_array_append(*out, t);
    }
    return 0;
}

int http_check_meta(struct http_req *r, json_t *meta, const char *field)
{
    if (!json_is_object(meta))
        return http_fail(r, 400, "Request decode failed: %s must be an object of strings", field);
    if (json_object_size(meta) > MAX_META)
        return http_fail(r, 400, "Invalid %s: at most %d pairs", field, MAX_META);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v)
    {
        if (!json_is_string(v))
            return http_fail(r, 400, "Request decode failed: %s[\"%.64s\"] must be a string",
                             field, k);
        if (!*k || strlen(k) > MAX_META_KEY || strspn(k, "abcdefghijklmnopqrstuvwxyz"
                                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                          "0123456789_-") != strlen(k))
            return http_fail(r, 400,
                             "Invalid %s key \"%.64s\": 1 to %d letters, digits, '_' or '-'",
                             field, k, MAX_META_KEY);
        if (!valid_text(json_string_value(v), MAX_META_VALUE))
            return http_fail(r, 400, "Invalid %s value for \"%.64s\": over %d bytes", field, k,
                             MAX_META_VALUE);
        if (strcmp(field, "Meta") == 0 && strncmp(k, "consul-", 7) == 0)
            return http_fail(r, 400, "Invalid %s key \"%.64s\": the prefix 'consul-' is reserved "
                             "for internal use", field, k);
    }
    return 0;
}

static int build_meta(struct http_req *r, json_t *body, json_t **out)
{
    json_t *meta = json_get_ci(body, "Meta");
    if (meta == NULL || json_is_null(meta)) {
        *out = json_object();
        return 0;
    }
    *out = NULL;
    if (http_check_meta(r, meta, "Meta") != 0)
        return -1;
    *out = json_copy(meta);
    return *out ? 0 : http_fail(r, 500, "out of memory");
}

static int build_weights(struct http_req *r, json_t *body, json_t **out)
{
    json_t *w = json_get_ci(body, "Weights");
    json_int_t passing = 1, warning = 1;
    if (w != NULL && !json_is_null(w)) {
        if (!json_is_object(w))
            return http_fail(r, 400, "Request decode failed: Weights must be an object");
        /* given, a weight left out is Go's zero (only an absent Weights
         * is {1, 1}); Passing must still be at least 1 */
        if (opt_uint(r, w, "Passing", 65535, 1, &passing) ||
            opt_uint(r, w, "Warning", 65535, 0, &warning))
            return -1;
        if (passing < 1)
            return http_fail(r, 400, "Invalid Weights.Passing: must be at least 1");
    }
    *out = json_pack("{s:I, s:I}", "Passing", passing, "Warning", warning);
    return 0;
}

/* TaggedAddresses: {"lan": {"Address": "10.0.0.1", "Port": 80}, ...}. */
static int build_tagged_addresses(struct http_req *r, json_t *body, json_t **out)
{
    json_t *ta = json_get_ci(body, "TaggedAddresses");
    *out = json_object();
    if (ta == NULL || json_is_null(ta))
        return 0;
    if (!json_is_object(ta))
        return http_fail(r, 400, "Request decode failed: TaggedAddresses must be an object");
    if (json_object_size(ta) > MAX_TAGGED)
        return http_fail(r, 400, "Invalid TaggedAddresses: at most %d", MAX_TAGGED);
    const char *k;
    json_t *v;
    json_object_foreach(ta, k, v)
    {
        const char *addr;
        json_int_t port;
        if (!*k || !valid_text(k, MAX_META_KEY))
            return http_fail(r, 400, "Invalid TaggedAddresses key \"%.64s\"", k);
        if (!json_is_object(v))
            return http_fail(r, 400,
                             "Request decode failed: TaggedAddresses[\"%.64s\"] must be an "
                             "object with Address and Port", k);
        if (opt_string(r, v, "Address", "", STORE_NAME_MAX, &addr) ||
            opt_uint(r, v, "Port", 65535, 0, &port))
            return -1;
        json_object_set_new(*out, k, json_pack("{s:s, s:I}", "Address", addr, "Port", port));
    }
    return 0;
}

int http_build_registration(struct http_req *r, json_t *body, const struct http_node *node,
                            bool probe_checks, json_t **svc_out, json_t **checks_out)
{
    json_t *tags = NULL, *meta = NULL, *weights = NULL, *checks = NULL;
    json_t *tagged = NULL;
    const char *name, *id, *address;
    json_int_t port;
    int rc = -1;

    if (http_body_scope_refused(r, body))
        return -1;
    json_t *jname = json_get_ci(body, "Name");
    if (jname == NULL || json_is_null(jname) ||
        (json_is_string(jname) && !*json_string_value(jname))) {
        http_fail(r, 400, "Missing service name");
        goto out;
    }
    if (!json_is_string(jname)) {
        http_fail(r, 400, "Request decode failed: Name must be a string");
        goto out;
    }
    name = json_string_value(jname);
    if (opt_string(r, body, "ID", name, STORE_NAME_MAX, &id) ||
        opt_string(r, body, "Address", "", STORE_NAME_MAX, &address))
        goto out;
    if (!*id)
        id = name;
    if (!http_valid_name(name)) {
        http_fail_name(r, "service name", name);
        goto out;
    }
    if (!http_valid_name(id)) {
        http_fail_name(r, "service ID", id);
        goto out;
    }
    if (strncmp(id, STORE_NODE_OWNER, STORE_NODE_OWNER_LEN) == 0) {
        /* the store files a node's own checks under that prefix */
        http_fail(r, 400, "Invalid service ID \"%.64s\": IDs starting with " STORE_NODE_OWNER
                          " are reserved",
                  id);
        goto out;
    }
    if (strcmp(address, "0.0.0.0") == 0 || strcmp(address, "::") == 0 ||
        strcmp(address, "[::]") == 0) { /* Consul: an "any" address is no address to reach */
        http_fail(r, 400, "Invalid service address");
        goto out;
    }
    json_t *jport = json_get_ci(body, "Port");
    if (jport && json_is_integer(jport) &&
        (json_integer_value(jport) < 0 || json_integer_value(jport) > 65535)) {
        http_fail(r, 400, "Invalid Port %lld: must be 0..65535",
                  (long long)json_integer_value(jport));
        goto out;
    }
    if (opt_uint(r, body, "Port", 65535, 0, &port) || build_tags(r, body, &tags) ||
        build_meta(r, body, &meta) || build_weights(r, body, &weights) ||
        build_tagged_addresses(r, body, &tagged))
        goto out;
    json_t *eto = json_get_ci(body, "EnableTagOverride");
    if (eto && !json_is_null(eto) && !json_is_boolean(eto)) {
        http_fail(r, 400, "Request decode failed: EnableTagOverride must be a boolean");
        goto out;
    }

    /* Check (one) and Checks (many), ids as Consul assigns them. */
    checks = json_array();
    json_t *one = json_get_ci(body, "Check"), *many = json_get_ci(body, "Checks");
    if (many && !json_is_null(many) && !json_is_array(many)) {
        http_fail(r, 400, "Request decode failed: Checks must be an array");
        goto out;
    }
    size_t n_many = json_is_array(many) ? json_array_size(many) : 0;
    /* an empty Check is no check (Consul's CheckType.Empty) */
    bool has_one = one && !json_is_null(one) && !check_is_empty(one);
    if (n_many + has_one > MAX_CHECKS) {
        http_fail(r, 400, "Too many checks: at most %d", MAX_CHECKS);
        goto out;
    }
    /* Consul numbers Check then Checks as one list: service:ID when the
     * service has one check in all, service:ID:N (from 1) otherwise. */
    char cid[STORE_NAME_MAX + 32];
    json_t *check;
    size_t total = n_many + has_one;
    for (size_t i = 0; i < total; i++) {
        json_t *def = has_one && i == 0 ? one : json_array_get(many, i - has_one);
        if (total == 1)
            snprintf(cid, sizeof(cid), "service:%s", id);
        else
            snprintf(cid, sizeof(cid), "service:%s:%zu", id, i + 1);
        if ((probe_checks ? build_check(r, def, id, name, cid, &check)
                          : http_build_catalog_check(r, def, id, name, node->node, cid, &check)) !=
            0)
            goto out;
        json_array_append_new(checks, check);
    }
    for (size_t i = 0; i < json_array_size(checks); i++)
        for (size_t j = i + 1; j < json_array_size(checks); j++)
            if (json_equal(json_object_get(json_array_get(checks, i), "CheckID"),
                           json_object_get(json_array_get(checks, j), "CheckID"))) {
                http_fail(r, 400, "Duplicate CheckID in registration");
                goto out;
            }

    json_t *svc = json_pack("{s:s, s:s, s:O, s:s, s:I, s:O, s:O, s:b, s:s, s:s}", "ID", id,
                            "Service", name, "Tags", tags, "Address", address, "Port", port,
                            "Meta", meta, "Weights", weights, "EnableTagOverride",
                            json_is_true(eto), "Node", node->node, "NodeAddress",
                            node->addr);
    if (svc && json_object_size(node->meta) > 0)
        json_object_set(svc, "NodeMeta", node->meta);
    if (svc && json_object_size(node->tagged) > 0)
        json_object_set(svc, "NodeTaggedAddresses", node->tagged);
    if (svc && json_object_size(tagged) > 0)
        json_object_set(svc, "TaggedAddresses", tagged);
    if (svc == NULL) {
        rc = http_fail(r, 500, "out of memory");
        goto out;
    }
    *svc_out = svc;
    *checks_out = json_incref(checks);
    rc = 0;
out:
    json_decref(tags);
    json_decref(meta);
    json_decref(weights);
    json_decref(checks);
    json_decref(tagged);
    return rc;
}

static int do_register(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    (void)rd;
    json_t *body = NULL, *svc, *checks;
    if (http_body_json(r, &body) != 0)
        return -1;
    json_t *meta = http_origin_node_meta(r);
    struct http_node node = {http_origin_node(r), http_origin_node_addr(r), meta, NULL};
    int rc = http_build_registration(r, body, &node, true, &svc, &checks);
    json_decref(meta);
    json_decref(body);
    if (rc != 0)
        return -1;
    cmd->op = CMD_REGISTER;
    /* Without ?replace-existing-checks a re-registration keeps the checks
     * it does not name, as Consul does; Consul replaces when it is bare or
     * exactly "true" (not "1"). */
    const char *replace = http_param(r, "replace-existing-checks");
    cmd->args = json_pack("{s:o, s:o, s:b, s:b}", "Service", svc, "Checks", checks,
                          "ReplaceChecks",
                          http_has_param(r, "replace-existing-checks") &&
                              (replace == NULL || *replace == '\0' ||
                               strcmp(replace, "true") == 0),
                          "OneNode", 1);
    return cmd->args ? 0 : http_fail(r, 500, "out of memory");
}

int http_build_agent_check(struct http_req *r, json_t *def, const char *sid, const char *sname,
                           const char *default_id, json_t **out)
{
    return build_check(r, def, sid, sname, default_id, out);
}

/* A registration's command depends only on its body and the node that
 * received it, so a follower builds it itself and proposes the command to
 * the leader (cheaper than forwarding the HTTP request). Writes that check
 * the store first, or touch the leader's TTL timers, are forwarded whole. */
bool http_write_builds_anywhere(http_write_fn fn)
{
    return fn == do_register;
}

static int require_service(struct http_req *r, struct store_read *rd)
{
    json_t *inst;
    if (store_get_instance(rd, r->arg, &inst) != 0)
        return http_fail(r, 404,
                         "Unknown service ID \"%s\". Ensure that the service ID is passed, "
                         "not the service name.",
                         r->arg);
    json_decref(inst);
    return 0;
}

static int do_deregister(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    if (require_service(r, rd) != 0)
        return -1;
    cmd->op = CMD_DEREGISTER;
    cmd->args = json_pack("{s:s}", "ServiceID", r->arg);
    return 0;
}

static int do_maintenance(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    const char *enable = http_param(r, "enable");
    const char *reason = http_param(r, "reason");
    if (enable == NULL)
        return http_fail(r, 400, "Missing value for enable");
    bool on;
    if (http_parse_bool(enable, &on) != 0)
        return http_fail(r, 400, "Invalid value for enable: \"%s\" (true or false)", enable);
    if (reason && !valid_text(reason, MAX_TEXT))
        return http_fail(r, 400, "Invalid reason: too long or has control characters");
    if (require_service(r, rd) != 0)
        return -1;
    cmd->op = CMD_MAINTENANCE;
    cmd->args = json_pack("{s:s, s:b, s:s}", "ServiceID", r->arg, "Enable", on, "Reason",
                          reason ? reason : "");
    return 0;
}

/* TTL updates: pass/warn/fail take ?note=, update takes {Status, Output}. */
static int check_update(struct http_req *r, struct store_read *rd, struct command *cmd,
                        const char *status, const char *output)
{
    json_t *check;
    if (store_get_check(rd, r->arg, &check) != 0)
        return http_fail(r, 404, UNKNOWN_CHECK, r->arg);
    json_t *om = json_object_get(json_object_get(check, "Definition"), "OutputMaxSize");
    size_t limit = json_is_integer(om) && json_integer_value(om) > 0 &&
                           json_integer_value(om) < MAX_OUTPUT
                       ? (size_t)json_integer_value(om)
                       : MAX_OUTPUT;
    const char *type = json_string_value(json_object_get(check, "Type"));
    bool ttl = type && strcmp(type, "ttl") == 0;
    /* Consul's words and code (agent.updateTTLCheck): clients re-register
     * on this 500 and match the text (Spring Cloud Consul, go-kit) */
    if (!ttl) {
        json_decref(check);
        return http_fail(r, 500, "CheckID \"%s\" does not have associated TTL", r->arg);
    }
    /* the output as stored: Consul keeps the first OutputMaxSize bytes
     * (4 KiB) and says so (a whole UTF-8 character at the cut) */
    char *cut_text = NULL;
    size_t total = strlen(output);
    if (total > limit) {
        size_t cut = limit;
        while (cut > 0 && ((unsigned char)output[cut] & 0xc0) == 0x80)
            cut--;
        size_t room = cut + 64;
        if ((cut_text = malloc(room)) == NULL) {
            json_decref(check);
            return http_fail(r, 500, "out of memory");
        }
        snprintf(cut_text, room, "%.*s ... (captured %zu of %zu bytes)", (int)cut, output, limit,
                 total);
        output = cut_text;
    }
    bool same_status = strcmp(json_string_value(json_object_get(check, "Status")), status) == 0;
    bool same = same_status && json_is_string(json_object_get(check, "Output")) &&
                strcmp(json_string_value(json_object_get(check, "Output")), output) == 0;
    json_decref(check);
    health_ttl_touch(r->srv->opt.health, r->arg);
    /* a heartbeat that changes nothing costs no durable write; a new output
     * alone is written at most once per check_update_interval (the newest
     * when the interval is over), a new status at once */
    if (same)
        health_ttl_output_settled(r->srv->opt.health, r->arg);
    else if (health_ttl_output_due(r->srv->opt.health, r->arg, status, output, !same_status)) {
        cmd->op = CMD_CHECK_UPDATE;
        cmd->args = json_pack("{s:s, s:s, s:s}", "CheckID", r->arg, "Status", status, "Output",
                              output);
    }
    free(cut_text);
    return cmd->op == CMD_CHECK_UPDATE && cmd->args == NULL ? http_fail(r, 500, "out of memory")
                                                           : 0;
}

static const char *note(struct http_req *r)
{
    const char *n = http_param(r, "note");
    return n ? n : "";
}

static int do_pass(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    return check_update(r, rd, cmd, "passing", note(r));
}

static int do_warn(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    return check_update(r, rd, cmd, "warning", note(r));
}

static int do_fail(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    return check_update(r, rd, cmd, "critical", note(r));
}

static int do_update(struct http_req *r, struct store_read *rd, struct command *cmd)
{
    json_t *body;
    const char *status, *output;
    if (http_body_json(r, &body) != 0)
        return -1;
    int rc = opt_string(r, body, "Status", NULL, 16, &status);
    if (rc == 0)
        rc = opt_string(r, body, "Output", "", MAX_UPDATE_OUTPUT, &output);
    if (rc == 0 && (status == NULL || !valid_status(status)))
        rc = http_fail(r, 400, "Invalid Status: use passing, warning or critical");
    if (rc == 0)
        rc = check_update(r, rd, cmd, valid_status(status), output);
    json_decref(body);
    return rc;
}

/* ---- agent reads --------------------------------------------------------- */

struct agent_walk {
    struct http_req *r;
    struct store_read *rd;
    json_t *out;
};

static int add_agent_service(json_t *inst, void *arg)
{
    struct agent_walk *w = arg;
    json_object_set_new(w->out, json_string_value(json_object_get(inst, "ID")),
                        render_agent_service(w->r->srv, inst));
    return 0;
}

static int read_agent_services(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct agent_walk w = {r, rd, json_object()};
    store_each_instance(rd, NULL, add_agent_service, &w);
    *out = w.out;
    return 0;
}


static int add_agent_check(json_t *check, void *arg)
{
    struct agent_walk *w = arg;
    json_t *inst = NULL;
    store_get_instance(w->rd, json_string_value(json_object_get(check, "ServiceID")), &inst);
    json_object_set_new(w->out, json_string_value(json_object_get(check, "CheckID")),
                        render_check(check, inst));
    json_decref(inst);
    return 0;
}

static int read_agent_checks(struct http_req *r, struct store_read *rd, json_t **out)
{
    struct agent_walk w = {r, rd, json_object()};
    store_each_check(rd, add_agent_check, &w);
    *out = w.out;
    return 0;
}

/* GET /v1/agent/metrics (Consul's JSON) or ?format=prometheus (text). */
static void do_metrics(struct http_req *r)
{
    const struct http_options *o = &r->srv->opt;
    struct metrics_sources src = {o->cluster, o->health, o->store, r->srv->cache};
    const char *format = http_param(r, "format");
    bool prometheus = format && strcmp(format, "prometheus") == 0;
    struct evbuffer *b = evbuffer_new();
    if (b == NULL || metrics_render(&src, prometheus, b) != 0) {
        if (b)
            evbuffer_free(b);
        http_fail(r, 500, "Cannot render the metrics");
        http_finish_write(r, REG_ENOMEM);
        return;
    }
    http_finish_raw(r, b, prometheus ? "text/plain; version=0.0.4; charset=utf-8"
                                     : "application/json");
}

const struct http_route http_agent_routes[] = {
    {"GET", "/v1/agent/metrics", NULL, NULL, WATCH_NONE, do_metrics, false},
    {"PUT", "/v1/agent/service/register", NULL, do_register, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/service/deregister/", NULL, do_deregister, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/service/maintenance/", NULL, do_maintenance, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/pass/", NULL, do_pass, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/warn/", NULL, do_warn, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/fail/", NULL, do_fail, WATCH_NONE, NULL, false},
    {"PUT", "/v1/agent/check/update/", NULL, do_update, WATCH_NONE, NULL, false},
    /* No GET forms: GET never mutates (a web page could otherwise make a
     * browser deregister services). Consul since 1.0 answers 405 too. */
    /* answered at once whatever ?index= says, as Consul's */
    {"GET", "/v1/agent/services", read_agent_services, NULL, WATCH_CACHED, NULL, false},
    {"GET", "/v1/agent/checks", read_agent_checks, NULL, WATCH_CACHED, NULL, false},
    {NULL, NULL, NULL, NULL, WATCH_NONE, NULL, false},
};
