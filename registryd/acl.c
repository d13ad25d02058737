/*
 * acl.c — token resolution, decisions, secret hashing and the audit line
 * (see acl.h).
 *
 * Resolving a secret scans the stored tokens and compares salted hashes
 * (the store cannot be indexed by a salted hash). A small cache, keyed by a
 * keyed hash of the secret under a key drawn at start (never stored), maps a
 * secret to the AccessorID it resolved to at a store index; a hit is checked
 * against the stored salted hash again, so the cache can only save a scan,
 * never admit a token. A token that names a policy that no longer exists
 * simply loses its rules.
 */
#include "acl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "duration.h"
#include "log.h"
#include "record.h"
#include "registry/error.h"
#include "store.h"

#define ACL_SALT_BYTES 16

static struct {
    bool enabled;
    bool default_allow;
    char *initial_management;
    char *default_token;
    char *server_token;
    char cluster_proof[65]; /* hex HMAC of cluster_key_file's key, or "" */
    uint64_t token_min_ttl_ms, token_max_ttl_ms;
    char *datacenter;
} settings;

static void hex(const unsigned char *in, size_t n, char *out);

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void acl_shutdown(void)
{
    wipe_free(settings.initial_management);
    wipe_free(settings.default_token);
    wipe_free(settings.server_token);
    free(settings.datacenter);
    memset(&settings, 0, sizeof(settings));
}

int acl_configure(const struct acl_config *cfg)
{
    acl_shutdown();
    settings.enabled = cfg->enabled;
    settings.default_allow = cfg->default_allow;
    settings.initial_management = dup_or_null(cfg->initial_management);
    settings.default_token = dup_or_null(cfg->default_token);
    settings.server_token = dup_or_null(cfg->server_token);
    settings.datacenter = dup_or_null(cfg->datacenter);
    settings.token_min_ttl_ms = cfg->token_min_ttl_ms;
    settings.token_max_ttl_ms = cfg->token_max_ttl_ms;
    if (cfg->cluster_key != NULL && *cfg->cluster_key) {
        /* what servers show on internal routes: derived from the key, which
         * itself never goes on the wire (the raft port proves it otherwise) */
        static const char label[] = "registryd internal routes v1";
        unsigned char mac[32];
        unsigned int n = 0;
        if (HMAC(EVP_sha256(), cfg->cluster_key, (int)strlen(cfg->cluster_key),
                 (const unsigned char *)label, sizeof(label) - 1, mac, &n) == NULL || n != 32) {
            acl_shutdown();
            return REG_ENOMEM;
        }
        hex(mac, 32, settings.cluster_proof);
        OPENSSL_cleanse(mac, sizeof(mac));
    }
    if ((cfg->initial_management && *cfg->initial_management && !settings.initial_management) ||
        (cfg->default_token && *cfg->default_token && !settings.default_token) ||
        (cfg->server_token && *cfg->server_token && !settings.server_token) ||
        (cfg->datacenter && *cfg->datacenter && !settings.datacenter)) {
        acl_shutdown();
        return REG_ENOMEM;
    }
    return 0;
}

bool acl_enabled(void)
{
    return settings.enabled;
}

bool acl_initial_management_configured(void)
{
    return settings.initial_management != NULL;
}

const char *acl_server_secret(void)
{
    if (settings.enabled)
        return settings.server_token;
    return settings.cluster_proof[0] ? settings.cluster_proof : NULL;
}

/* ms as ns, saturated at Go's largest duration */
static int64_t ms_to_ns(uint64_t ms)
{
    return ms > (uint64_t)INT64_MAX / 1000000 ? INT64_MAX : (int64_t)ms * 1000000;
}

void acl_token_ttl_bounds(int64_t *min_ns, int64_t *max_ns)
{
    *min_ns = ms_to_ns(settings.token_min_ttl_ms);
    *max_ns = ms_to_ns(settings.token_max_ttl_ms);
}

bool acl_token_expired(json_t *record, const struct timespec *now)
{
    const char *when = json_string_value(json_object_get(record, "ExpirationTime"));
    struct timespec t;
    return when != NULL && rfc3339_parse(when, &t) == 0 && timespec_cmp(&t, now) < 0;
}

const char *acl_default_policy_name(void)
{
    return !settings.enabled || settings.default_allow ? "allow" : "deny";
}

bool acl_internal_caller_ok(const char *token)
{
    if (settings.enabled || settings.cluster_proof[0] == '\0')
        return true;
    size_t n = sizeof(settings.cluster_proof) - 1;
    return token != NULL && strlen(token) == n &&
           CRYPTO_memcmp(token, settings.cluster_proof, n) == 0;
}

/* ---- secrets ---------------------------------------------------------- */

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = in[2 * i + j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return REG_EINVAL;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static int digest(const unsigned char *salt, size_t saltlen, const char *secret,
                  unsigned char out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, salt, saltlen) == 1 &&
             EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
             EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : REG_EIO;
}

int acl_new_uuid(char *out)
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return REG_EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char h[33];
    hex(b, sizeof(b), h);
    snprintf(out, ACL_ID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    return 0;
}

int acl_hash_secret(const char *secret, char **out)
{
    unsigned char salt[ACL_SALT_BYTES], d[32];
    char salthex[2 * ACL_SALT_BYTES + 1], dhex[65];
    if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt) ||
        digest(salt, sizeof(salt), secret, d) != 0)
        return REG_EIO;
    hex(salt, sizeof(salt), salthex);
    hex(d, sizeof(d), dhex);
    size_t n = 8 + sizeof(salthex) + sizeof(dhex);
    *out = malloc(n);
    if (*out == NULL)
        return REG_ENOMEM;
    snprintf(*out, n, "sha256$%s$%s", salthex, dhex);
    return 0;
}

bool acl_secret_matches(const char *secret, const char *stored)
{
    unsigned char salt[ACL_SALT_BYTES], want[32], got[32];
    if (stored == NULL || strncmp(stored, "sha256$", 7) != 0 ||
        strlen(stored) != 7 + 2 * ACL_SALT_BYTES + 1 + 64 || stored[7 + 2 * ACL_SALT_BYTES] != '$')
        return false;
    if (unhex(stored + 7, ACL_SALT_BYTES, salt) != 0 ||
        unhex(stored + 8 + 2 * ACL_SALT_BYTES, 32, want) != 0 ||
        digest(salt, sizeof(salt), secret, got) != 0)
        return false;
    return CRYPTO_memcmp(want, got, sizeof(got)) == 0;
}

/* Compare two configured/presented secrets without an early exit. */
static bool same_secret(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    unsigned char da[32], db[32];
    static const unsigned char salt[1] = {0};
    if (digest(salt, 0, a, da) != 0 || digest(salt, 0, b, db) != 0)
        return false;
    return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

/* A stable AccessorID for a configured token (never its secret). */
static void config_accessor(const char *kind, const char *secret, char *out, size_t len)
{
    unsigned char d[32];
    char h[65];
    if (digest((const unsigned char *)kind, strlen(kind), secret, d) != 0)
        memset(d, 0, sizeof(d));
    hex(d, 16, h);
    snprintf(out, len, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

/* ---- the resolution cache ---------------------------------------------- */

#define ACL_CACHE_SLOTS 256

static struct {
    pthread_mutex_t lock;
    bool keyed;
    unsigned char key[32];
    struct {
        unsigned char tag[32];
        uint64_t index;
        char accessor[ACL_ID_LEN + 1];
        bool used;
    } slot[ACL_CACHE_SLOTS];
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool cache_tag(const char *secret, unsigned char tag[32])
{
    unsigned int n = 0;
    if (!cache.keyed) {
        if (getrandom(cache.key, sizeof(cache.key), 0) != (ssize_t)sizeof(cache.key))
            return false;
        cache.keyed = true;
    }
    return HMAC(EVP_sha256(), cache.key, sizeof(cache.key), (const unsigned char *)secret,
                strlen(secret), tag, &n) != NULL &&
           n == 32;
}

/* The AccessorID secret resolved to at this store index, into out. */
static bool cache_get(const char *secret, uint64_t index, char *out, size_t len)
{
    unsigned char tag[32];
    bool hit = false;
    pthread_mutex_lock(&cache.lock);
    if (cache_tag(secret, tag)) {
        unsigned i = ((unsigned)tag[0] << 8 | tag[1]) % ACL_CACHE_SLOTS;
        if (cache.slot[i].used && cache.slot[i].index == index &&
            CRYPTO_memcmp(cache.slot[i].tag, tag, 32) == 0) {
            snprintf(out, len, "%s", cache.slot[i].accessor);
            hit = true;
        }
    }
    pthread_mutex_unlock(&cache.lock);
    return hit;
}

static void cache_put(const char *secret, uint64_t index, const char *accessor)
{
    unsigned char tag[32];
    pthread_mutex_lock(&cache.lock);
    if (cache_tag(secret, tag)) {
        unsigned i = ((unsigned)tag[0] << 8 | tag[1]) % ACL_CACHE_SLOTS;
        memcpy(cache.slot[i].tag, tag, 32);
        cache.slot[i].index = index;
        snprintf(cache.slot[i].accessor, sizeof(cache.slot[i].accessor), "%s", accessor);
        cache.slot[i].used = true;
    }
    pthread_mutex_unlock(&cache.lock);
}

/* ---- resolution -------------------------------------------------------- */

json_t *acl_management_policy(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:[], s:I, s:I}", "ID", ACL_MANAGEMENT_POLICY_ID, "Name",
                     ACL_MANAGEMENT_POLICY_NAME, "Description",
                     "Builtin Policy that grants unlimited access", "Rules",
                     "acl = \"write\"\noperator = \"write\"\nservice_prefix \"\" { policy = "
                     "\"write\" }\nnode_prefix \"\" { policy = \"write\" }\nagent_prefix \"\" { "
                     "policy = \"write\" }",
                     "Datacenters", "CreateIndex", (json_int_t)1, "ModifyIndex", (json_int_t)1);
}

json_t *acl_anonymous_token(struct store_read *rd)
{
    json_t *t = NULL;
    if (rd && store_acl_get(rd, "token", ACL_ANONYMOUS_ACCESSOR, &t) == 0)
        return t;
    return json_pack("{s:s, s:s, s:[], s:b, s:s, s:I, s:I}", "AccessorID", ACL_ANONYMOUS_ACCESSOR,
                     "Description", "Anonymous Token", "Policies", "Local", 0, "CreateTime",
                     "1970-01-01T00:00:00Z", "CreateIndex", (json_int_t)1, "ModifyIndex",
                     (json_int_t)1);
}

struct find_token {
    const char *secret;
    json_t *found;
};

static int match_token(json_t *tok, void *arg)
{
    struct find_token *f = arg;
    if (!acl_secret_matches(f->secret, json_string_value(json_object_get(tok, "SecretHash"))))
        return 0;
    f->found = json_incref(tok);
    return 1;
}

/* Add the rules of text (a policy's, or a synthetic one) to z's. Rules
 * were checked when written; text that no longer parses grants nothing
 * rather than failing the request. 0 or REG_ENOMEM. */
static int add_rules(struct acl_authz *z, const char *text)
{
    char err[256];
    struct acl_rules one = {0};
    int rc = 0;
    if (acl_rules_parse(text, strlen(text), &one, err, sizeof(err)) == 0)
        rc = acl_rules_merge(&z->rules, &one);
    acl_rules_fini(&one);
    return rc;
}

/* Does a list of Datacenters (a policy's, a service identity's) let it
 * apply here? Empty or absent: everywhere. */
static bool applies_here(json_t *dcs)
{
    const char *here = settings.datacenter ? settings.datacenter : "";
    size_t j;
    json_t *dc;
    if (json_array_size(dcs) == 0)
        return true;
    json_array_foreach(dcs, j, dc)
    {
        if (strcmp(json_string_value(dc) ?: "", here) == 0)
            return true;
    }
    return false;
}

/* Consul's synthetic policies of the token's service and node identities
 * (structs' aclPolicyTemplateServiceIdentity and _NodeIdentity), for those
 * that apply in this datacenter. The names were checked (record.c): no
 * quote can reach the rules. */
static int load_identities(json_t *tok, struct acl_authz *z)
{
    const char *here = settings.datacenter ? settings.datacenter : "";
    char text[1024];
    size_t i;
    json_t *id;
    int rc = 0;
    json_array_foreach(json_object_get(tok, "ServiceIdentities"), i, id)
    {
        const char *name = json_string_value(json_object_get(id, "ServiceName"));
        if (!applies_here(json_object_get(id, "Datacenters")) || !record_identity_name_ok(name))
            continue;
        snprintf(text, sizeof(text),
                 "service \"%s\" { policy = \"write\" }\n"
                 "service \"%s-sidecar-proxy\" { policy = \"write\" }\n"
                 "service_prefix \"\" { policy = \"read\" }\n"
                 "node_prefix \"\" { policy = \"read\" }\n",
                 name, name);
        if ((rc = add_rules(z, text)) != 0)
            return rc;
    }
    json_array_foreach(json_object_get(tok, "NodeIdentities"), i, id)
    {
        const char *name = json_string_value(json_object_get(id, "NodeName"));
        const char *where = json_string_value(json_object_get(id, "Datacenter"));
        if (where == NULL || strcmp(where, here) != 0 || !record_identity_name_ok(name))
            continue;
        snprintf(text, sizeof(text),
                 "node \"%s\" { policy = \"write\" }\n"
                 "service_prefix \"\" { policy = \"read\" }\n",
                 name);
        if ((rc = add_rules(z, text)) != 0)
            return rc;
    }
    return 0;
}

/* Give z the rules of every policy the token record links to, and of its
 * identities. */
static int load_policies(struct store_read *rd, json_t *tok, struct acl_authz *z)
{
    size_t i;
    json_t *link;
    json_array_foreach(json_object_get(tok, "Policies"), i, link)
    {
        const char *id = json_string_value(json_object_get(link, "ID"));
        json_t *pol = NULL;
        if (id == NULL)
            continue;
        if (strcmp(id, ACL_MANAGEMENT_POLICY_ID) == 0) {
            z->management = true;
            continue;
        }
        if (store_acl_get(rd, "policy", id, &pol) != 0)
            continue; /* deleted since: grants nothing */
        /* a policy valid in other datacenters only grants nothing here, as
         * Consul's resolver filters them (it granted everywhere) */
        const char *text = applies_here(json_object_get(pol, "Datacenters"))
                               ? json_string_value(json_object_get(pol, "Rules"))
                               : NULL;
        int rc = text ? add_rules(z, text) : 0;
        json_decref(pol);
        if (rc != 0)
            return rc;
    }
    return load_identities(tok, z);
}

int acl_resolve(struct store_read *rd, const char *secret, struct acl_authz *z)
{
    memset(z, 0, sizeof(*z));
    z->enabled = settings.enabled;
    z->default_allow = settings.default_allow;
    z->found = true;
    if (!settings.enabled)
        return 0;
    if (secret == NULL || *secret == '\0')
        secret = settings.default_token;
    if (secret == NULL || *secret == '\0' || strcmp(secret, "anonymous") == 0) {
        json_t *anon = acl_anonymous_token(rd);
        snprintf(z->accessor, sizeof(z->accessor), "%s", ACL_ANONYMOUS_ACCESSOR);
        int rc = anon ? load_policies(rd, anon, z) : REG_ENOMEM;
        json_decref(anon);
        return rc;
    }
    if (same_secret(secret, settings.initial_management)) {
        config_accessor("initial-management", secret, z->accessor, sizeof(z->accessor));
        z->management = true;
        return 0;
    }
    if (same_secret(secret, settings.server_token)) {
        config_accessor("server", secret, z->accessor, sizeof(z->accessor));
        z->server = true;
        return 0;
    }
    struct find_token f = {secret, NULL};
    if (rd == NULL)
        return REG_ESTORE;
    uint64_t index = store_index(rd);
    char cached[ACL_ID_LEN + 1];
    int rc = 0;
    if (cache_get(secret, index, cached, sizeof(cached)) &&
        store_acl_get(rd, "token", cached, &f.found) == 0 &&
        !acl_secret_matches(secret, json_string_value(json_object_get(f.found, "SecretHash")))) {
        json_decref(f.found); /* cannot happen unless the slot was overwritten oddly */
        f.found = NULL;
    }
    if (f.found == NULL) {
        rc = store_acl_each(rd, "token", match_token, &f);
        if (rc < 0 && f.found == NULL)
            return rc;
        const char *acc = json_string_value(json_object_get(f.found, "AccessorID"));
        if (acc != NULL && strlen(acc) <= ACL_ID_LEN)
            cache_put(secret, index, acc);
    }
    if (f.found == NULL) {
        z->found = false;
        snprintf(z->accessor, sizeof(z->accessor), "unknown");
        return 0;
    }
    snprintf(z->accessor, sizeof(z->accessor), "%s",
             json_string_value(json_object_get(f.found, "AccessorID"))
                 ? json_string_value(json_object_get(f.found, "AccessorID"))
                 : "unknown");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (acl_token_expired(f.found, &now)) { /* the audit line still names it */
        z->found = false;
        z->expired = true;
        json_decref(f.found);
        return 0;
    }
    rc = load_policies(rd, f.found, z);
    json_decref(f.found);
    return rc;
}

void acl_authz_fini(struct acl_authz *z)
{
    acl_rules_fini(&z->rules);
}

bool acl_allowed(const struct acl_authz *z, enum acl_resource res, const char *name,
                 enum acl_access want)
{
    if (!z->enabled || z->management)
        return true;
    if (!z->found)
        return false;
    enum acl_access a = acl_rules_decide(&z->rules, res, name);
    if (a == ACL_NONE) /* default policy; ACL management needs a rule or management */
        return res != ACL_RES_ACL && z->default_allow;
    if (a == ACL_DENY)
        return false;
    return a >= want;
}

json_t *acl_render_token(struct store_read *rd, json_t *record)
{
    json_t *t = json_deep_copy(record);
    if (t == NULL)
        return NULL;
    json_object_del(t, "SecretHash");
    json_object_del(t, "SecretID");
    json_t *links = json_array();
    size_t i;
    json_t *link;
    json_array_foreach(json_object_get(record, "Policies"), i, link)
    {
        const char *id = json_string_value(json_object_get(link, "ID"));
        json_t *pol = NULL;
        if (id == NULL)
            continue;
        if (strcmp(id, ACL_MANAGEMENT_POLICY_ID) == 0) {
            json_array_append_new(
                links, json_pack("{s:s, s:s}", "ID", id, "Name", ACL_MANAGEMENT_POLICY_NAME));
        } else if (rd && store_acl_get(rd, "policy", id, &pol) == 0) {
            json_array_append_new(
                links, json_pack("{s:s, s:O}", "ID", id, "Name", json_object_get(pol, "Name")));
            json_decref(pol);
        }
    }
    json_object_set_new(t, "Policies", links);
    return t;
}

void acl_audit(const char *client, const char *accessor, const char *method, const char *path,
               int status)
{
    char when[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* The path is the client's: no quotes or control bytes into the log. */
    char safe[301];
    size_t n = 0;
    for (const char *p = path; *p && n < sizeof(safe) - 1; p++)
        safe[n++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
    safe[n] = '\0';
    /* Always written, whatever the log level: the trail must be complete. */
    log_emit(status >= 400 ? LOG_WARN : LOG_INFO, "audit",
             "time=%s client=%s accessor=%s method=%s path=\"%s\" outcome=%s status=%d", when,
             client && *client ? client : "-", accessor && *accessor ? accessor : "-", method, safe,
             status == 403  ? "denied"
             : status < 400 ? "ok"
                            : "failed",
             status);
}
