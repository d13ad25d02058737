/*
 * record.c — see record.h. Table-free on purpose: each kind is a short list
 * of field checks, read top to bottom like the schema in record.h.
 */
#include "record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "registry/error.h"

#define RECORD_TEXT_MAX (64 * 1024) /* one string field (check output is capped lower) */

struct vctx {
    const char *kind;
    char *err;
    size_t errlen;
};

static int bad(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(struct vctx *v, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (v->err && v->errlen)
        snprintf(v->err, v->errlen, "%s record: %s", v->kind, what);
    return REG_EINVAL;
}

/* ---- packed records (record.h) ----
 * The runs, by the byte that stands for them: what instances and checks as
 * registryd writes them are mostly made of (their keys in the order the
 * store writes them, with the usual values between). Codes 0, 9, 10 and 13
 * stand for themselves. Never change a run once written: stores hold them. */
static const char *const pack_runs[32] = {
    [1] = "{\"Address\":\"",
    [2] = "\",\"EnableTagOverride\":false,\"ID\":\"",
    [3] = "\",\"Meta\":{",
    [4] = "},\"Node\":\"",
    [5] = "\",\"NodeAddress\":\"",
    [6] = "\",\"Port\":",
    [7] = ",\"Service\":\"",
    [8] = "\",\"Tags\":[",
    [11] = "],\"Weights\":{\"Passing\":1,\"Warning\":1},\"CreateIndex\":",
    [12] = ",\"ModifyIndex\":",
    [14] = "{\"CheckID\":\"",
    [15] = "\",\"Definition\":{\"FailuresBeforeCritical\":0,\"SuccessBeforePassing\":0,\"TTL\":\"",
    [16] = "\",\"Definition\":{\"FailuresBeforeCritical\":0,",
    [17] = "\",\"Timeout\":\"10s\"},\"Name\":\"Service '",
    [18] = "' check\",\"Node\":\"",
    [19] = "\",\"Notes\":\"\",\"Output\":\"\",\"ServiceID\":\"",
    [20] = "\",\"ServiceName\":\"",
    [21] = "\",\"Status\":\"passing\",\"Type\":\"",
    [22] = "\",\"Status\":\"critical\",\"Type\":\"",
    [23] = "\",\"Status\":\"warning\",\"Type\":\"",
    [24] = "\",\"CreateIndex\":",
    [25] = "\",\"Output\":\"",
    [26] = "\",\"ServiceID\":\"",
    [27] = "\"},\"Name\":\"",
    [28] = "\",\"Node\":\"",
    [29] = "\",\"Notes\":\"",
    [30] = "\"SuccessBeforePassing\":0,",
    [31] = "\",\"Timeout\":\"",
};

static size_t pack_run_len[32];
static unsigned char pack_order[32]; /* codes, longest run first */
static size_t pack_nruns;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;

static void pack_init(void)
{
    for (unsigned c = 1; c < 32; c++)
        if (pack_runs[c] != NULL) {
            pack_run_len[c] = strlen(pack_runs[c]);
            size_t i = pack_nruns++;
            while (i > 0 && pack_run_len[pack_order[i - 1]] < pack_run_len[c]) {
                pack_order[i] = pack_order[i - 1];
                i--;
            }
            pack_order[i] = (unsigned char)c;
        }
}

size_t record_pack(const char *text, size_t len, char *out)
{
    pthread_once(&pack_once, pack_init);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20) {
            memcpy(out, text, len);
            return len;
        }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)text[i];
        size_t k = pack_nruns;
        if (ch == '"' || ch == '{' || ch == '}' || ch == ',' || ch == ']' || ch == '\'')
            for (k = 0; k < pack_nruns; k++) {
                unsigned c = pack_order[k];
                if (pack_runs[c][0] == (char)ch && pack_run_len[c] <= len - i &&
                    memcmp(text + i, pack_runs[c], pack_run_len[c]) == 0) {
                    out[o++] = (char)c;
                    i += pack_run_len[c];
                    break;
                }
            }
        if (k == pack_nruns)
            out[o++] = text[i++];
    }
    return o;
}

size_t record_unpacked_len(const void *buf, size_t len)
{
    pthread_once(&pack_once, pack_init);
    const unsigned char *p = buf;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n += p[i] < 32 && pack_runs[p[i]] ? pack_run_len[p[i]] : 1;
        if (n > RECORD_UNPACKED_MAX)
            return SIZE_MAX;
    }
    return n;
}

void record_unpack(const void *buf, size_t len, char *out)
{
    pthread_once(&pack_once, pack_init);
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 32 && pack_runs[p[i]]) {
            memcpy(out, pack_runs[p[i]], pack_run_len[p[i]]);
            out += pack_run_len[p[i]];
        } else {
            *out++ = (char)p[i];
        }
    }
}

const char *record_plain_view(struct record_plain *pv, const void *buf, size_t len)
{
    size_t n = record_unpacked_len(buf, len);
    pv->heap = NULL;
    pv->len = n;
    if (n == len)
        return buf;
    if (n == SIZE_MAX) {
        errno = EINVAL;
        return NULL;
    }
    char *out = n <= sizeof(pv->small) ? pv->small : (pv->heap = malloc(n));
    if (out == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    record_unpack(buf, len, out);
    return out;
}

void record_plain_free(struct record_plain *pv)
{
    free(pv->heap);
    pv->heap = NULL;
}

bool record_valid_key(const void *s, size_t len, size_t max)
{
    const unsigned char *p = s;
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] == 0x7f || p[i] == '/')
            return false;
    return true;
}

/* A string without NUL; `key`: also a valid key. */
static int want_string(struct vctx *v, json_t *obj, const char *field, bool required, bool key,
                       const char **out)
{
    json_t *x = json_object_get(obj, field);
    if (out)
        *out = NULL;
    if (x == NULL) {
        if (required)
            return bad(v, "field %s missing", field);
        return 0;
    }
    if (!json_is_string(x))
        return bad(v, "field %s is not a string", field);
    const char *s = json_string_value(x);
    size_t n = json_string_length(x);
    if (strlen(s) != n || n > RECORD_TEXT_MAX)
        return bad(v, "field %s holds a NUL byte or is too long", field);
    if (key && !record_valid_key(s, n, RECORD_KEY_MAX))
        return bad(v, "field %s is not a valid name", field);
    if (out)
        *out = s;
    return 0;
}

static int want_int(struct vctx *v, json_t *obj, const char *field, bool required, json_int_t lo,
                    json_int_t hi)
{
    json_t *x = json_object_get(obj, field);
    if (x == NULL)
        return required ? bad(v, "field %s missing", field) : 0;
    if (!json_is_integer(x))
        return bad(v, "field %s is not an integer", field);
    json_int_t n = json_integer_value(x);
    if (n < lo || n > hi)
        return bad(v, "field %s out of range", field);
    return 0;
}

static int want_indexes(struct vctx *v, json_t *obj)
{
    int rc = want_int(v, obj, "CreateIndex", true, 0, (json_int_t)RECORD_INDEX_MAX);
    return rc ? rc : want_int(v, obj, "ModifyIndex", true, 0, (json_int_t)RECORD_INDEX_MAX);
}

static int want_duration(struct vctx *v, json_t *obj, const char *field, bool required)
{
    json_t *x = json_object_get(obj, field);
    uint64_t ms;
    if (x == NULL)
        return required ? bad(v, "field %s missing", field) : 0;
    if (duration_parse_json(x, &ms) != 0)
        return bad(v, "field %s is not a duration", field);
    return 0;
}

/* field, when present: an object of strings (a node's meta or tagged
 * addresses, and an instance's copies of them). */
static int want_string_map(struct vctx *v, json_t *r, const char *field)
{
    json_t *m = json_object_get(r, field), *x;
    const char *k;
    if (m == NULL)
        return 0;
    if (!json_is_object(m))
        return bad(v, "field %s is not an object", field);
    json_object_foreach(m, k, x) if (!json_is_string(x)) return bad(
        v, "field %s holds a non-string value", field);
    return 0;
}

static int check_instance(struct vctx *v, json_t *r)
{
    int rc;
    if ((rc = want_string(v, r, "ID", true, true, NULL)) ||
        (rc = want_string(v, r, "Service", true, true, NULL)) ||
        (rc = want_string(v, r, "Address", true, false, NULL)) ||
        (rc = want_int(v, r, "Port", true, 0, 65535)) ||
        (rc = want_string(v, r, "Node", false, true, NULL)) ||
        (rc = want_string(v, r, "NodeAddress", false, false, NULL)) || (rc = want_indexes(v, r)) ||
        (rc = want_string_map(v, r, "NodeMeta")) ||
        (rc = want_string_map(v, r, "NodeTaggedAddresses")))
        return rc;
    json_t *tags = json_object_get(r, "Tags"), *x;
    size_t i;
    if (!json_is_array(tags))
        return bad(v, "field Tags missing or not an array");
    json_array_foreach(
        tags, i, x) if (!json_is_string(x) ||
                        strlen(json_string_value(x)) !=
                            json_string_length(x)) return bad(v, "field Tags holds a non-string");
    json_t *meta = json_object_get(r, "Meta");
    const char *k;
    if (!json_is_object(meta))
        return bad(v, "field Meta missing or not an object");
    json_object_foreach(
        meta, k,
        x) if (!json_is_string(x) ||
               strlen(json_string_value(x)) !=
                   json_string_length(x)) return bad(v, "field Meta holds a non-string value");
    json_t *w = json_object_get(r, "Weights");
    if (!json_is_object(w))
        return bad(v, "field Weights missing or not an object");
    if ((rc = want_int(v, w, "Passing", true, 0, INT32_MAX)) ||
        (rc = want_int(v, w, "Warning", true, 0, INT32_MAX)))
        return rc;
    if (!json_is_boolean(json_object_get(r, "EnableTagOverride")))
        return bad(v, "field EnableTagOverride missing or not a boolean");
    return 0;
}

static int check_definition(struct vctx *v, const char *type, json_t *d)
{
    int rc;
    if (!json_is_object(d))
        return bad(v, "field Definition missing or not an object");
    if (strcmp(type, "http") == 0) {
        if ((rc = want_string(v, d, "HTTP", true, false, NULL)) ||
            (rc = want_string(v, d, "Method", true, true, NULL)) ||
            (rc = want_duration(v, d, "Interval", true)))
            return rc;
    } else if (strcmp(type, "tcp") == 0) {
        if ((rc = want_string(v, d, "TCP", true, false, NULL)) ||
            (rc = want_duration(v, d, "Interval", true)))
            return rc;
    } else if (strcmp(type, "ttl") == 0) {
        if ((rc = want_duration(v, d, "TTL", true)))
            return rc;
    }
    if ((rc = want_duration(v, d, "Interval", false)) ||
        (rc = want_duration(v, d, "Timeout", false)) || (rc = want_duration(v, d, "TTL", false)) ||
        (rc = want_duration(v, d, "DeregisterCriticalServiceAfter", false)) ||
        (rc = want_int(v, d, "SuccessBeforePassing", false, 0, INT32_MAX)) ||
        (rc = want_int(v, d, "FailuresBeforeCritical", false, 0, INT32_MAX)) ||
        (rc = want_int(v, d, "FailuresBeforeWarning", false, 0, INT32_MAX)) ||
        (rc = want_int(v, d, "OutputMaxSize", false, 0, INT32_MAX)) ||
        (rc = want_string(v, d, "Body", false, false, NULL)))
        return rc;
    static const char *const bools[] = {"TLSSkipVerify", "DisableRedirects"};
    for (size_t b = 0; b < 2; b++) {
        json_t *x = json_object_get(d, bools[b]);
        if (x && !json_is_boolean(x))
            return bad(v, "field Definition.%s is not a boolean", bools[b]);
    }
    json_t *hdr = json_object_get(d, "Header"), *vals, *x;
    const char *hk;
    size_t i;
    if (hdr && !json_is_object(hdr))
        return bad(v, "field Definition.Header is not an object");
    json_object_foreach(hdr, hk, vals)
    {
        if (!json_is_array(vals))
            return bad(v, "field Definition.Header values must be arrays");
        json_array_foreach(vals, i, x) if (!json_is_string(x)) return bad(
            v, "field Definition.Header values must be strings");
    }
    return 0;
}

static int check_check(struct vctx *v, json_t *r)
{
    int rc;
    const char *status, *type;
    if ((rc = want_string(v, r, "CheckID", true, true, NULL)) ||
        (rc = want_string(v, r, "Name", true, false, NULL)) ||
        (rc = want_string(v, r, "Status", true, true, &status)) ||
        (rc = want_string(v, r, "Notes", true, false, NULL)) ||
        (rc = want_string(v, r, "Output", true, false, NULL)) ||
        (rc = want_string(v, r, "ServiceID", true, false, NULL)) ||
        (rc = want_string(v, r, "ServiceName", true, false, NULL)) ||
        (rc = want_string(v, r, "Type", true, false, &type)) ||
        (rc = want_string(v, r, "Node", false, true, NULL)) || (rc = want_indexes(v, r)))
        return rc;
    if (strcmp(status, "passing") && strcmp(status, "warning") && strcmp(status, "critical"))
        return bad(v, "field Status is not passing, warning or critical");
    static const char *const types[] = {"http",   "tcp",   "udp", "grpc",        "h2ping",
                                        "script", "alias", "ttl", "maintenance", ""};
    size_t t = 0;
    while (t < sizeof(types) / sizeof(types[0]) && strcmp(type, types[t]) != 0)
        t++;
    if (t == sizeof(types) / sizeof(types[0]))
        return bad(v, "field Type \"%.32s\" is not a known check type", type);
    if (*type == '\0') /* registered through the catalog: not ours to probe */
        return json_is_object(json_object_get(r, "Definition"))
                   ? 0
                   : bad(v, "field Definition missing or not an object");
    return check_definition(v, type, json_object_get(r, "Definition"));
}

bool record_node_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 128 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

/* {ID, Raft, HTTP[, Node, Address]}: a server's node name and address come
 * together (do_announce stores both or neither). */
static int check_server(struct vctx *v, json_t *r)
{
    int rc;
    const char *node, *addr;
    unsigned char ip[16];
    if ((rc = want_int(v, r, "ID", true, 1, INT64_MAX)) ||
        (rc = want_string(v, r, "Raft", true, true, NULL)) ||
        (rc = want_string(v, r, "HTTP", true, false, NULL)) ||
        (rc = want_string(v, r, "Node", false, false, &node)) ||
        (rc = want_string(v, r, "Address", false, false, &addr)) ||
        (rc = want_string_map(v, r, "NodeMeta")))
        return rc;
    if ((node == NULL) != (addr == NULL))
        return bad(v, "fields Node and Address come together");
    if (node != NULL && !record_node_name_ok(node))
        return bad(v, "field Node is not a node name");
    if (addr != NULL && inet_pton(AF_INET, addr, ip) != 1 && inet_pton(AF_INET6, addr, ip) != 1)
        return bad(v, "field Address is not an IP address");
    return 0;
}

static int check_node(struct vctx *v, json_t *r)
{
    int rc;
    if ((rc = want_string(v, r, "Node", true, true, NULL)) ||
        (rc = want_string(v, r, "NodeAddress", true, false, NULL)) ||
        (rc = want_string_map(v, r, "NodeMeta")))
        return rc;
    return want_string_map(v, r, "NodeTaggedAddresses");
}

bool record_identity_name_ok(const char *s)
{
    static const char edge[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 256 && strchr(edge, s[0]) != NULL && strchr(edge, s[n - 1]) != NULL &&
           strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* A token's ServiceIdentities [{ServiceName, Datacenters?}] and
 * NodeIdentities [{NodeName, Datacenter}], when present. */
static int check_identities(struct vctx *v, json_t *r)
{
    json_t *svc = json_object_get(r, "ServiceIdentities"),
           *node = json_object_get(r, "NodeIdentities");
    json_t *id, *dcs, *dc;
    const char *name, *where;
    size_t i, j;
    int rc;
    if (svc != NULL && !json_is_array(svc))
        return bad(v, "field ServiceIdentities is not an array");
    json_array_foreach(svc, i, id)
    {
        if (!json_is_object(id))
            return bad(v, "field ServiceIdentities holds a non-object");
        if ((rc = want_string(v, id, "ServiceName", true, false, &name)))
            return rc;
        if (!record_identity_name_ok(name))
            return bad(v, "field ServiceIdentities holds an invalid ServiceName");
        dcs = json_object_get(id, "Datacenters");
        if (dcs != NULL && !json_is_array(dcs))
            return bad(v, "field ServiceIdentities.Datacenters is not an array");
        json_array_foreach(dcs, j, dc) if (!json_is_string(dc)) return bad(
            v, "field ServiceIdentities.Datacenters holds a non-string");
    }
    if (node != NULL && !json_is_array(node))
        return bad(v, "field NodeIdentities is not an array");
    json_array_foreach(node, i, id)
    {
        if (!json_is_object(id))
            return bad(v, "field NodeIdentities holds a non-object");
        if ((rc = want_string(v, id, "NodeName", true, false, &name)) ||
            (rc = want_string(v, id, "Datacenter", true, false, &where)))
            return rc;
        if (!record_identity_name_ok(name))
            return bad(v, "field NodeIdentities holds an invalid NodeName");
        if (*where == '\0')
            return bad(v, "field NodeIdentities holds an empty Datacenter");
    }
    return 0;
}

/* {AccessorID, SecretHash, Description, Policies [{ID, Name}], Local,
 * CreateTime[, ExpirationTime (RFC 3339)][, ServiceIdentities,
 * NodeIdentities]} */
static int check_acl_token(struct vctx *v, json_t *r)
{
    int rc;
    json_t *local = json_object_get(r, "Local"), *pols = json_object_get(r, "Policies"), *p;
    const char *expires;
    struct timespec t;
    size_t i;
    if ((rc = want_string(v, r, "AccessorID", true, true, NULL)) ||
        (rc = want_string(v, r, "SecretHash", false, false, NULL)) ||
        (rc = want_string(v, r, "Description", true, false, NULL)) ||
        (rc = want_string(v, r, "CreateTime", true, false, NULL)) ||
        (rc = want_string(v, r, "ExpirationTime", false, false, &expires)) ||
        (rc = want_indexes(v, r)))
        return rc;
    if (expires != NULL && rfc3339_parse(expires, &t) != 0)
        return bad(v, "field ExpirationTime is not an RFC 3339 time");
    if ((rc = check_identities(v, r)))
        return rc;
    if (!json_is_boolean(local))
        return bad(v, "field Local missing or not a boolean");
    if (!json_is_array(pols))
        return bad(v, "field Policies missing or not an array");
    json_array_foreach(pols, i, p)
    {
        if (!json_is_object(p))
            return bad(v, "field Policies holds a non-object");
        if ((rc = want_string(v, p, "ID", true, true, NULL)) ||
            (rc = want_string(v, p, "Name", false, false, NULL)))
            return rc;
    }
    return 0;
}

static int check_acl_policy(struct vctx *v, json_t *r)
{
    int rc;
    json_t *dcs = json_object_get(r, "Datacenters"), *x;
    size_t i;
    if ((rc = want_string(v, r, "ID", true, true, NULL)) ||
        (rc = want_string(v, r, "Name", true, true, NULL)) ||
        (rc = want_string(v, r, "Description", true, false, NULL)) ||
        (rc = want_string(v, r, "Rules", true, false, NULL)) || (rc = want_indexes(v, r)))
        return rc;
    if (!json_is_array(dcs))
        return bad(v, "field Datacenters missing or not an array");
    json_array_foreach(dcs, i, x) if (!json_is_string(x)) return bad(
        v, "field Datacenters holds a non-string");
    return 0;
}

const char *record_kind_name(enum record_kind kind)
{
    switch (kind) {
    case RECORD_INSTANCE:
        return "instance";
    case RECORD_CHECK:
        return "check";
    case RECORD_SERVER:
        return "server";
    case RECORD_NODE:
        return "node";
    case RECORD_ACL_TOKEN:
        return "acl_token";
    case RECORD_ACL_POLICY:
        return "acl_policy";
    case RECORD_ACL_BOOTSTRAP:
        return "acl_bootstrap";
    }
    return "unknown";
}

int record_check(enum record_kind kind, json_t *rec, char *err, size_t errlen)
{
    struct vctx v = {record_kind_name(kind), err, errlen};
    if (!json_is_object(rec))
        return bad(&v, "not a JSON object");
    switch (kind) {
    case RECORD_INSTANCE:
        return check_instance(&v, rec);
    case RECORD_CHECK:
        return check_check(&v, rec);
    case RECORD_SERVER:
        return check_server(&v, rec);
    case RECORD_NODE:
        return check_node(&v, rec);
    case RECORD_ACL_TOKEN:
        return check_acl_token(&v, rec);
    case RECORD_ACL_POLICY:
        return check_acl_policy(&v, rec);
    case RECORD_ACL_BOOTSTRAP:
        return want_int(&v, rec, "Index", true, 0, (json_int_t)RECORD_INDEX_MAX);
    }
    return bad(&v, "unknown kind");
}

int record_decode(enum record_kind kind, const void *buf, size_t len, json_t **out, char *err,
                  size_t errlen)
{
    json_error_t jerr;
    *out = NULL;
    struct record_plain pv;
    const char *text = record_plain_view(&pv, buf, len);
    if (text == NULL && errno == ENOMEM) {
        snprintf(err, errlen, "%s record: out of memory", record_kind_name(kind));
        return REG_ENOMEM;
    }
    if (text == NULL) {
        struct vctx v = {record_kind_name(kind), err, errlen};
        return bad(&v, "packed text expands past %u bytes", RECORD_UNPACKED_MAX);
    }
    json_t *obj = json_loadb(text, pv.len, JSON_REJECT_DUPLICATES, &jerr);
    record_plain_free(&pv);
    if (obj == NULL) {
        struct vctx v = {record_kind_name(kind), err, errlen};
        return bad(&v, "not JSON (%s)", jerr.text);
    }
    int rc = record_check(kind, obj, err, errlen);
    if (rc != 0) {
        json_decref(obj);
        return rc;
    }
    *out = obj;
    return 0;
}
