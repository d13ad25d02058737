/*
 * acl.h — tokens, policies and decisions (Consul's ACL model).
 *
 * A token (AccessorID, a secret, Description, Policies, Local, CreateTime,
 * and an ExpirationTime if it was made to expire) links to policies; a
 * policy holds rules (acl_rules.h). A token's ServiceIdentities and
 * NodeIdentities grant Consul's synthetic policies (service NAME and
 * NAME-sidecar-proxy write, every service and node read; node NAME write,
 * every service read) where they name this server's datacenter (a service
 * identity without Datacenters: every one). A token past its ExpirationTime (by this
 * server's clock, as Consul's servers judge it) is, everywhere, as if it did
 * not exist; it stays stored until deleted. Both are records of
 * the store (store_acl_get/each), written only through raft commands
 * (CMD_ACL), so that they are replicated, in snapshots and survive restarts.
 * Only a salted SHA-256 of each SecretID is stored ("sha256$<salt>$<hash>",
 * hex): a leaked snapshot or data directory holds no usable token. The
 * secret is returned once, when the token is created or bootstrapped.
 *
 * Built in, never stored: the global-management policy (everything), the
 * anonymous token (used for requests without a token when no
 * acl_default_token is set; its Policies may be updated like any token's),
 * and the tokens of the configuration: acl_initial_management_token
 * (management) and acl_server_token (the identity servers use among
 * themselves on /v1/internal/...).
 *
 * Threads: the configuration is set once at start (acl_configure) before any
 * thread reads it; decisions run on the front-end thread with a store read.
 */
#ifndef REGISTRYD_ACL_H
#define REGISTRYD_ACL_H

#include "common.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "acl_rules.h"

struct store_read;

#define ACL_MANAGEMENT_POLICY_ID "00000000-0000-0000-0000-000000000001"
#define ACL_MANAGEMENT_POLICY_NAME "global-management"
#define ACL_ANONYMOUS_ACCESSOR "00000000-0000-0000-0000-000000000002"
#define ACL_ID_LEN 36

struct acl_config {
    bool enabled;
    bool default_allow;             /* acl_default_policy */
    const char *initial_management; /* secret, or NULL */
    const char *default_token;      /* secret, or NULL */
    const char *server_token;       /* secret, or NULL */
    const char *cluster_key;        /* cluster_key_file's key, or NULL */
    const char *datacenter;         /* this server's: identities may name it */
    uint64_t token_min_ttl_ms;      /* acl_token_min_expiration_ttl */
    uint64_t token_max_ttl_ms;      /* acl_token_max_expiration_ttl */
};

/* Copy cfg (strings too) into the process's ACL settings. Call once at
 * start, before threads. 0 or REG_ENOMEM. */
int acl_configure(const struct acl_config *cfg) REG_MUSTCHECK;
/* Forget the settings (strings wiped). */
void acl_shutdown(void);
bool acl_enabled(void);
/* Whether acl_initial_management_token is set (ACLs then count as
 * bootstrapped, as Consul's leader bootstraps them with it). */
bool acl_initial_management_configured(void);
/* What servers send each other as X-Consul-Token on /v1/internal/...: the
 * server token when ACLs are on; else, with a cluster_key_file, a proof
 * derived from its key (HMAC-SHA256, hex); else NULL. Borrowed; lives
 * until acl_shutdown. */
const char *acl_server_secret(void);
/* X-Consul-Default-ACL-Policy, on every answer as Consul's: "allow" (also
 * with ACLs off) or "deny". */
const char *acl_default_policy_name(void);
/* Whether token (X-Consul-Token, may be NULL) may call an internal route
 * as far as the key goes: always with ACLs on (their server token decides)
 * or without a cluster_key_file; else only the key's proof. */
bool acl_internal_caller_ok(const char *token);

/* The life a new token may be given (ExpirationTime - CreateTime), in
 * nanoseconds: acl_token_min_expiration_ttl and _max_. */
void acl_token_ttl_bounds(int64_t *min_ns, int64_t *max_ns);
/* Whether a token record is past its ExpirationTime at now (Consul's
 * IsExpired: the time is before now). Without one, or with one that does
 * not parse (record.c refuses those), never. */
bool acl_token_expired(json_t *record, const struct timespec *now);

/* Who is asking and what they may do. */
struct acl_authz {
    bool enabled;       /* false: ACLs off, everything allowed */
    bool found;         /* the token resolved (false: "ACL not found") */
    bool expired;       /* not found because it is past its ExpirationTime */
    bool management;    /* global-management: everything */
    bool server;        /* the acl_server_token */
    bool default_allow; /* acl_default_policy */
    char accessor[ACL_ID_LEN + 16];
    struct acl_rules rules;
};

/*
 * Resolve a secret (NULL or "": the default token, else anonymous) into z.
 * rd may be NULL when ACLs are off. Returns 0 (z->found says whether the
 * token exists) or REG_ENOMEM / REG_ESTORE. Call acl_authz_fini after.
 */
int acl_resolve(struct store_read *rd, const char *secret, struct acl_authz *z) REG_MUSTCHECK;
void acl_authz_fini(struct acl_authz *z);

/* May z do `want` (ACL_READ or ACL_WRITE) on name of res? */
bool acl_allowed(const struct acl_authz *z, enum acl_resource res, const char *name,
                 enum acl_access want);

/* A random version 4 UUID (out: ACL_ID_LEN + 1 bytes). 0 or REG_EIO. */
int acl_new_uuid(char *out) REG_MUSTCHECK;
/* Salted hash of a secret, "sha256$<salt hex>$<digest hex>" (malloc'd). */
int acl_hash_secret(const char *secret, char **out) REG_MUSTCHECK;
/* Does secret match a stored hash? Constant time over the digest. */
bool acl_secret_matches(const char *secret, const char *stored);

/* The built-in global-management policy as Consul shows it (new ref). */
json_t *acl_management_policy(void);
/* A token record as the API shows it: the stored record without its hash,
 * with current policy names (new reference). */
json_t *acl_render_token(struct store_read *rd, json_t *record);
/* The anonymous token's record: stored if it was updated, else built in
 * (new reference). */
json_t *acl_anonymous_token(struct store_read *rd);

/* One audit line (log module "audit"): time, client address, the token's
 * AccessorID (never a secret), method, path, the status answered. */
void acl_audit(const char *client, const char *accessor, const char *method, const char *path,
               int status);

#endif
