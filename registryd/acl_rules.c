/*
 * acl_rules.c — the ACL rule language (see acl_rules.h): a small hand-written
 * lexer and parser for the HCL subset Consul's policies use, the JSON form
 * through jansson, and the decision (exact > longest prefix; deny > write >
 * read). Every error carries the line and column where the input went wrong.
 *
 * Resources Consul knows but registryd has no use for (key, session, event,
 * query, keyring, mesh, peering, ...) are accepted and ignored, so that a
 * policy written for Consul loads; a word that is no resource at all is an
 * error.
 */
#include "acl_rules.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry/error.h"

static const struct {
    const char *word;
    int res; /* enum acl_resource, or -1: accepted and ignored */
    bool prefix;
    bool named; /* `word "name" { policy = ... }` vs `word = "..."` */
} kinds[] = {
    {"service", ACL_RES_SERVICE, false, true},
    {"service_prefix", ACL_RES_SERVICE, true, true},
    {"node", ACL_RES_NODE, false, true},
    {"node_prefix", ACL_RES_NODE, true, true},
    {"agent", ACL_RES_AGENT, false, true},
    {"agent_prefix", ACL_RES_AGENT, true, true},
    {"operator", ACL_RES_OPERATOR, false, false},
    {"acl", ACL_RES_ACL, false, false},
    {"key", -1, false, true},
    {"key_prefix", -1, true, true},
    {"session", -1, false, true},
    {"session_prefix", -1, true, true},
    {"event", -1, false, true},
    {"event_prefix", -1, true, true},
    {"query", -1, false, true},
    {"query_prefix", -1, true, true},
    {"keyring", -1, false, false},
    {"mesh", -1, false, false},
    {"peering", -1, false, false},
};

#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

const char *acl_resource_name(enum acl_resource res)
{
    switch (res) {
    case ACL_RES_SERVICE:
        return "service";
    case ACL_RES_NODE:
        return "node";
    case ACL_RES_AGENT:
        return "agent";
    case ACL_RES_OPERATOR:
        return "operator";
    case ACL_RES_ACL:
        return "acl";
    case ACL_RES_COUNT:
        break;
    }
    return "unknown";
}

const char *acl_access_name(enum acl_access a)
{
    switch (a) {
    case ACL_READ:
        return "read";
    case ACL_WRITE:
        return "write";
    case ACL_DENY:
        return "deny";
    case ACL_NONE:
        break;
    }
    return "none";
}

static int parse_access(const char *s, enum acl_access *out)
{
    if (strcmp(s, "read") == 0)
        *out = ACL_READ;
    else if (strcmp(s, "write") == 0)
        *out = ACL_WRITE;
    else if (strcmp(s, "deny") == 0)
        *out = ACL_DENY;
    else
        return REG_EINVAL;
    return 0;
}

static int find_kind(const char *word)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (strcmp(kinds[i].word, word) == 0)
            return (int)i;
    return -1;
}

static int rules_add(struct acl_rules *r, enum acl_resource res, bool prefix, const char *name,
                     enum acl_access access)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct acl_rule *v = realloc(r->v, cap * sizeof(*v));
        if (v == NULL)
            return REG_ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return REG_ENOMEM;
    r->v[r->n++] = (struct acl_rule){res, prefix, copy, access};
    return 0;
}

void acl_rules_fini(struct acl_rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].name);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

int acl_rules_merge(struct acl_rules *dst, const struct acl_rules *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct acl_rule *x = &src->v[i];
        int rc = rules_add(dst, x->res, x->prefix, x->name, x->access);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static enum acl_access merge(enum acl_access a, enum acl_access b)
{
    return a > b ? a : b; /* deny (3) > write (2) > read (1) > none */
}

enum acl_access acl_rules_decide(const struct acl_rules *r, enum acl_resource res, const char *name)
{
    enum acl_access exact = ACL_NONE, pre = ACL_NONE;
    size_t best = 0;
    bool have_prefix = false;
    if (res == ACL_RES_OPERATOR || res == ACL_RES_ACL || name == NULL)
        name = "";
    for (size_t i = 0; i < r->n; i++) {
        const struct acl_rule *x = &r->v[i];
        if (x->res != res)
            continue;
        if (!x->prefix) {
            if (strcmp(x->name, name) == 0)
                exact = merge(exact, x->access);
            continue;
        }
        size_t n = strlen(x->name);
        if (strncmp(x->name, name, n) != 0)
            continue;
        if (!have_prefix || n > best) {
            pre = x->access;
            best = n;
            have_prefix = true;
        } else if (n == best) {
            pre = merge(pre, x->access);
        }
    }
    return exact != ACL_NONE ? exact : pre;
}

/* ---- HCL ------------------------------------------------------------------ */

enum tok_kind { T_EOF, T_IDENT, T_STRING, T_EQ, T_LBRACE, T_RBRACE, T_COMMA, T_ERROR };

struct lexer {
    const char *p, *end;
    int line, col;
    /* the current token */
    enum tok_kind kind;
    int tline, tcol;
    char text[512];
    char *err;
    size_t errlen;
};

static int lex_fail(struct lexer *lx, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int lex_fail(struct lexer *lx, int line, int col, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(lx->err, lx->errlen, "line %d, column %d: %s", line, col, msg);
    lx->kind = T_ERROR;
    return REG_EINVAL;
}

static void advance(struct lexer *lx)
{
    if (*lx->p == '\n') {
        lx->line++;
        lx->col = 1;
    } else {
        lx->col++;
    }
    lx->p++;
}

/* Skip blanks and comments. Returns 0 or REG_EINVAL (unterminated comment). */
static int skip_space(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            advance(lx);
        } else if (c == '#' || (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n')
                advance(lx);
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            int l = lx->line, col = lx->col;
            advance(lx);
            advance(lx);
            while (lx->p < lx->end && !(*lx->p == '*' && lx->p + 1 < lx->end && lx->p[1] == '/'))
                advance(lx);
            if (lx->p >= lx->end)
                return lex_fail(lx, l, col, "unterminated comment");
            advance(lx);
            advance(lx);
        } else {
            break;
        }
    }
    return 0;
}

static int next(struct lexer *lx)
{
    if (skip_space(lx) != 0)
        return REG_EINVAL;
    lx->tline = lx->line;
    lx->tcol = lx->col;
    lx->text[0] = '\0';
    if (lx->p >= lx->end) {
        lx->kind = T_EOF;
        return 0;
    }
    char c = *lx->p;
    if (c == '=' || c == '{' || c == '}' || c == ',') {
        lx->kind = c == '=' ? T_EQ : c == '{' ? T_LBRACE : c == '}' ? T_RBRACE : T_COMMA;
        advance(lx);
        return 0;
    }
    if (isalpha((unsigned char)c) || c == '_') {
        size_t n = 0;
        while (lx->p < lx->end &&
               (isalnum((unsigned char)*lx->p) || *lx->p == '_' || *lx->p == '-')) {
            if (n + 1 >= sizeof(lx->text))
                return lex_fail(lx, lx->tline, lx->tcol, "word too long");
            lx->text[n++] = *lx->p;
            advance(lx);
        }
        lx->text[n] = '\0';
        lx->kind = T_IDENT;
        return 0;
    }
    if (c == '"') {
        size_t n = 0;
        advance(lx);
        for (;;) {
            if (lx->p >= lx->end || *lx->p == '\n')
                return lex_fail(lx, lx->tline, lx->tcol, "unterminated string");
            char ch = *lx->p;
            if (ch == '"') {
                advance(lx);
                break;
            }
            if (ch == '\\') {
                advance(lx);
                if (lx->p >= lx->end)
                    return lex_fail(lx, lx->tline, lx->tcol, "unterminated string");
                char e = *lx->p;
                if (e == 'n')
                    ch = '\n';
                else if (e == 't')
                    ch = '\t';
                else if (e == '"' || e == '\\' || e == '/')
                    ch = e;
                else
                    return lex_fail(lx, lx->line, lx->col, "unknown escape \\%c",
                                    isprint((unsigned char)e) ? e : '?');
            } else if ((unsigned char)ch < 0x20) {
                return lex_fail(lx, lx->line, lx->col, "control character in a string");
            }
            if (n + 1 >= sizeof(lx->text))
                return lex_fail(lx, lx->tline, lx->tcol, "string too long (limit %zu bytes)",
                                sizeof(lx->text) - 1);
            lx->text[n++] = ch;
            advance(lx);
        }
        lx->text[n] = '\0';
        lx->kind = T_STRING;
        return 0;
    }
    return lex_fail(lx, lx->tline, lx->tcol, "unexpected character '%c'",
                    isprint((unsigned char)c) ? c : '?');
}

static const char *tok_desc(const struct lexer *lx)
{
    switch (lx->kind) {
    case T_EOF:
        return "end of input";
    case T_IDENT:
        return "a word";
    case T_STRING:
        return "a string";
    case T_EQ:
        return "'='";
    case T_LBRACE:
        return "'{'";
    case T_RBRACE:
        return "'}'";
    case T_COMMA:
        return "','";
    case T_ERROR:
        break;
    }
    return "an error";
}

/* `{ policy = "write" [intentions = "read"] }`, the '{' already consumed. */
static int parse_block(struct lexer *lx, enum acl_access *access)
{
    int bline = lx->tline, bcol = lx->tcol;
    *access = ACL_NONE;
    for (;;) {
        if (next(lx) != 0)
            return REG_EINVAL;
        if (lx->kind == T_RBRACE)
            break;
        if (lx->kind == T_COMMA)
            continue;
        if (lx->kind != T_IDENT)
            return lex_fail(lx, lx->tline, lx->tcol, "expected a setting such as policy, found %s",
                            tok_desc(lx));
        const char *key;
        if (strcmp(lx->text, "policy") == 0)
            key = "policy";
        else if (strcmp(lx->text, "intentions") == 0)
            key = "intentions";
        else
            return lex_fail(lx, lx->tline, lx->tcol, "unknown setting \"%.64s\" (expected policy)",
                            lx->text);
        if (next(lx) != 0)
            return REG_EINVAL;
        if (lx->kind != T_EQ)
            return lex_fail(lx, lx->tline, lx->tcol, "expected '=' after %s, found %s", key,
                            tok_desc(lx));
        if (next(lx) != 0)
            return REG_EINVAL;
        if (lx->kind != T_STRING)
            return lex_fail(lx, lx->tline, lx->tcol, "expected a quoted disposition, found %s",
                            tok_desc(lx));
        enum acl_access a;
        if (parse_access(lx->text, &a) != 0)
            return lex_fail(lx, lx->tline, lx->tcol,
                            "invalid disposition \"%s\" (read, write or deny)", lx->text);
        if (strcmp(key, "policy") == 0)
            *access = a;
    }
    if (*access == ACL_NONE)
        return lex_fail(lx, bline, bcol, "block without a policy");
    return 0;
}

static int parse_hcl(const char *text, size_t len, struct acl_rules *out, char *err, size_t errlen)
{
    struct lexer lx = {
        .p = text, .end = text + len, .line = 1, .col = 1, .err = err, .errlen = errlen};
    for (;;) {
        if (next(&lx) != 0)
            return REG_EINVAL;
        if (lx.kind == T_EOF)
            return 0;
        if (lx.kind == T_COMMA)
            continue;
        if (lx.kind != T_IDENT)
            return lex_fail(&lx, lx.tline, lx.tcol, "expected a resource such as service, found %s",
                            tok_desc(&lx));
        int k = find_kind(lx.text);
        if (k < 0)
            return lex_fail(&lx, lx.tline, lx.tcol, "unknown resource \"%s\"", lx.text);
        char name[sizeof(lx.text)] = "";
        enum acl_access access;
        if (next(&lx) != 0)
            return REG_EINVAL;
        if (kinds[k].named) {
            if (lx.kind != T_STRING)
                return lex_fail(&lx, lx.tline, lx.tcol, "expected a quoted name after %s, found %s",
                                kinds[k].word, tok_desc(&lx));
            snprintf(name, sizeof(name), "%s", lx.text);
            if (next(&lx) != 0)
                return REG_EINVAL;
            if (lx.kind != T_LBRACE)
                return lex_fail(&lx, lx.tline, lx.tcol, "expected '{' after the name, found %s",
                                tok_desc(&lx));
            if (parse_block(&lx, &access) != 0)
                return REG_EINVAL;
        } else {
            if (lx.kind != T_EQ)
                return lex_fail(&lx, lx.tline, lx.tcol, "expected '=' after %s, found %s",
                                kinds[k].word, tok_desc(&lx));
            if (next(&lx) != 0)
                return REG_EINVAL;
            if (lx.kind != T_STRING)
                return lex_fail(&lx, lx.tline, lx.tcol, "expected a quoted disposition, found %s",
                                tok_desc(&lx));
            if (parse_access(lx.text, &access) != 0)
                return lex_fail(&lx, lx.tline, lx.tcol,
                                "invalid disposition \"%s\" (read, write or deny)", lx.text);
        }
        if (kinds[k].res < 0)
            continue;
        if (out->n >= ACL_RULES_MAX_RULES)
            return lex_fail(&lx, lx.tline, lx.tcol, "too many rules (limit %d)",
                            ACL_RULES_MAX_RULES);
        if (rules_add(out, (enum acl_resource)kinds[k].res, kinds[k].prefix, name, access) != 0)
            return REG_ENOMEM;
    }
}

/* ---- JSON ----------------------------------------------------------------- */

static int json_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int json_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return REG_EINVAL;
}

static int parse_json(const char *text, size_t len, struct acl_rules *out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = 0;
    if (root == NULL)
        return json_fail(err, errlen, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return json_fail(err, errlen, "line 1, column 1: rules must be a JSON object");
    }
    const char *word;
    json_t *val;
    json_object_foreach(root, word, val)
    {
        int k = find_kind(word);
        if (k < 0) {
            rc = json_fail(err, errlen, "line 1, column 1: unknown resource \"%s\"", word);
            break;
        }
        if (!kinds[k].named) {
            enum acl_access a;
            if (!json_is_string(val) || parse_access(json_string_value(val), &a) != 0) {
                rc =
                    json_fail(err, errlen,
                              "line 1, column 1: %s must be \"read\", \"write\" or \"deny\"", word);
                break;
            }
            if (kinds[k].res >= 0 &&
                (rc = rules_add(out, (enum acl_resource)kinds[k].res, false, "", a)) != 0)
                break;
            continue;
        }
        if (!json_is_object(val)) {
            rc = json_fail(err, errlen, "line 1, column 1: %s must map names to {\"policy\": ...}",
                           word);
            break;
        }
        const char *name;
        json_t *blk;
        json_object_foreach(val, name, blk)
        {
            json_t *pol = json_is_object(blk) ? json_object_get(blk, "policy") : NULL;
            enum acl_access a;
            if (!json_is_string(pol) || parse_access(json_string_value(pol), &a) != 0) {
                rc = json_fail(err, errlen,
                               "line 1, column 1: %s \"%s\": policy must be \"read\", \"write\" "
                               "or \"deny\"",
                               word, name);
                break;
            }
            if (out->n >= ACL_RULES_MAX_RULES) {
                rc = json_fail(err, errlen, "line 1, column 1: too many rules (limit %d)",
                               ACL_RULES_MAX_RULES);
                break;
            }
            if (kinds[k].res >= 0 && (rc = rules_add(out, (enum acl_resource)kinds[k].res,
                                                     kinds[k].prefix, name, a)) != 0)
                break;
        }
        if (rc != 0)
            break;
    }
    json_decref(root);
    return rc;
}

int acl_rules_parse(const char *text, size_t len, struct acl_rules *out, char *err, size_t errlen)
{
    if (len > ACL_RULES_MAX_BYTES) {
        snprintf(err, errlen, "line 1, column 1: rules too long (limit %d bytes)",
                 ACL_RULES_MAX_BYTES);
        return REG_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\0') {
            snprintf(err, errlen, "byte %zu: NUL in rules", i);
            return REG_EINVAL;
        }
    }
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i]))
        i++;
    if (i < len && text[i] == '{')
        return parse_json(text, len, out, err, errlen);
    return parse_hcl(text, len, out, err, errlen);
}
