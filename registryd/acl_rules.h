/*
 * acl_rules.h — Consul's ACL rule language: parsing (HCL form and JSON form)
 * and the decision over a set of rules.
 *
 *   service "web" { policy = "write" }      # exact name
 *   service_prefix "" { policy = "read" }   // a prefix ("" matches all)
 *   node_prefix "" { policy = "read" }
 *   agent "n1" { policy = "read" }
 *   operator = "read"
 *   acl = "write"
 *
 * or the same as JSON: {"service": {"web": {"policy": "write"}},
 * "operator": "read"}. Dispositions are read, write and deny. The decision:
 * an exact rule beats every prefix rule, the longest matching prefix wins,
 * and where several rules of one kind and name meet (several policies of a
 * token) deny wins over write, write over read.
 *
 * The parser takes bytes from outside (HTTP bodies, the raft log) and is
 * fuzzed (tests/fuzz/fuzz_acl_rules.c); its errors say line and column.
 * Pure code: no I/O, no global state.
 */
#ifndef REGISTRYD_ACL_RULES_H
#define REGISTRYD_ACL_RULES_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>

/* Ordered: a higher value is a stronger grant, except ACL_DENY (see below). */
enum acl_access {
    ACL_NONE = 0, /* no rule says anything */
    ACL_READ = 1,
    ACL_WRITE = 2,
    ACL_DENY = 3, /* wins when merged, grants nothing */
};

enum acl_resource {
    ACL_RES_SERVICE,
    ACL_RES_NODE,
    ACL_RES_AGENT,
    ACL_RES_OPERATOR, /* no name: `operator = "read"` */
    ACL_RES_ACL,      /* no name: `acl = "write"` */
    ACL_RES_COUNT
};

struct acl_rule {
    enum acl_resource res;
    bool prefix;
    char *name; /* owned; "" for operator and acl */
    enum acl_access access;
};

struct acl_rules {
    struct acl_rule *v; /* owned */
    size_t n, cap;
};

/* Rules of a policy are limited to this many bytes and rules. */
#define ACL_RULES_MAX_BYTES (64 * 1024)
#define ACL_RULES_MAX_RULES 1024

const char *acl_resource_name(enum acl_resource res);
const char *acl_access_name(enum acl_access a);

/*
 * Parse text (len bytes, no NUL needed) and append its rules to out (which
 * may already hold rules, or be zeroed). Returns 0, or REG_EINVAL with
 * "line L, column C: reason" in err (out then holds what came before), or
 * REG_ENOMEM. Empty text is a valid, empty policy.
 */
int acl_rules_parse(const char *text, size_t len, struct acl_rules *out, char *err,
                    size_t errlen) REG_MUSTCHECK;

/* Append every rule of src to dst (copies). 0 or REG_ENOMEM. */
int acl_rules_merge(struct acl_rules *dst, const struct acl_rules *src) REG_MUSTCHECK;

/* Free what r holds; r stays usable (empty). */
void acl_rules_fini(struct acl_rules *r);

/*
 * What the rules say about `name` of `res` (name ignored for operator and
 * acl): ACL_NONE when no rule matches (the caller applies the default
 * policy), otherwise the disposition of the exact rule, else of the longest
 * matching prefix, merged by deny > write > read across equal matches.
 */
enum acl_access acl_rules_decide(const struct acl_rules *r, enum acl_resource res,
                                 const char *name);

#endif
