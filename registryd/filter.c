/*
 * filter.c — the ?filter= expression language (see filter.h): a recursive
 * descent parser into a small tree, selector and value checking against the
 * endpoint's schema, and evaluation over rendered JSON.
 *
 * Bounds: the text is at most FILTER_MAX_LEN bytes and nesting at most
 * FILTER_MAX_DEPTH levels, so that hostile input cannot exhaust the stack.
 */
#include "filter.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter_regex.h"
#include "registry/error.h"

#define FILTER_MAX_DEPTH 64
#define FILTER_MAX_SEGS 8

enum node_kind { N_AND, N_OR, N_NOT, N_MATCH };

enum match_op {
    OP_EQ,
    OP_NE,
    OP_IN, /* also "contains" */
    OP_NOT_IN,
    OP_EMPTY,
    OP_NOT_EMPTY,
    OP_MATCHES,
    OP_NOT_MATCHES,
};

struct fnode {
    enum node_kind kind;
    struct fnode *a, *b;
    /* N_MATCH */
    enum match_op op;
    char *segs[FILTER_MAX_SEGS];
    int n_segs;
    char type; /* the schema type at the selector */
    char *value;
    long long ival;
    bool bval;
    struct regex *re; /* matches, not matches */
};

struct filter {
    struct fnode *root;
};

/* ---- lexer -------------------------------------------------------------- */

enum tok_kind { T_END, T_LPAREN, T_RPAREN, T_EQ, T_NE, T_WORD, T_STRING, T_NUMBER, T_BAD };

struct tok {
    enum tok_kind kind;
    char *text; /* WORD (the selector as written), STRING (unquoted), NUMBER */
    size_t pos;
};

struct parser {
    const char *s;
    size_t pos;
    struct tok cur;
    const struct filter_field *schema;
    size_t n_fields;
    int depth;
    char *err;
    size_t errlen;
    bool failed;
};

static void perr(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(struct parser *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->errlen, fmt, ap);
    va_end(ap);
    p->failed = true;
}

static bool ident_start(char c)
{
    return isalpha((unsigned char)c);
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '/';
}

/* A quoted string at s (starting with " or `): its unquoted text, malloc'd,
 * and *len the bytes consumed; NULL if unterminated or badly escaped. */
static char *lex_string(const char *s, size_t *len, const char **why)
{
    char q = s[0];
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    size_t i = 1;
    if (out == NULL) {
        *why = "out of memory";
        return NULL;
    }
    for (; i < n && s[i] != q; i++) {
        if (q == '"' && s[i] == '\\') {
            char c = s[++i];
            switch (c) {
            case '"':
            case '\\':
            case '\'':
                *o++ = c;
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 't':
                *o++ = '\t';
                break;
            case 'r':
                *o++ = '\r';
                break;
            default:
                *why = "invalid escape in string literal";
                free(out);
                return NULL;
            }
        } else if (q == '"' && (s[i] == '\n' || s[i] == '\0')) {
            break;
        } else {
            *o++ = s[i];
        }
    }
    if (i >= n || s[i] != q) {
        *why = "Unterminated string literal";
        free(out);
        return NULL;
    }
    *o = '\0';
    *len = i + 1;
    return out;
}

/* A selector word: Ident ("." Ident | "." Digits | "[" String "]")*. */
static size_t lex_word(const char *s)
{
    size_t i = 0;
    while (ident_char(s[i]))
        i++;
    for (;;) {
        if (s[i] == '.' && (ident_start(s[i + 1]) || isdigit((unsigned char)s[i + 1]))) {
            i++;
            while (ident_char(s[i]))
                i++;
        } else if (s[i] == '[') {
            size_t j = i + 1, len;
            const char *why;
            while (s[j] == ' ' || s[j] == '\t')
                j++;
            if (s[j] != '"' && s[j] != '`')
                return i;
            char *lit = lex_string(s + j, &len, &why);
            if (lit == NULL)
                return i;
            free(lit);
            j += len;
            while (s[j] == ' ' || s[j] == '\t')
                j++;
            if (s[j] != ']')
                return i;
            i = j + 1;
        } else {
            return i;
        }
    }
}

static void next(struct parser *p)
{
    const char *s = p->s;
    free(p->cur.text);
    p->cur.text = NULL;
    while (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\r' || s[p->pos] == '\n')
        p->pos++;
    p->cur.pos = p->pos;
    char c = s[p->pos];
    if (c == '\0') {
        p->cur.kind = T_END;
    } else if (c == '(' || c == ')') {
        p->cur.kind = c == '(' ? T_LPAREN : T_RPAREN;
        p->pos++;
    } else if ((c == '=' || c == '!') && s[p->pos + 1] == '=') {
        p->cur.kind = c == '=' ? T_EQ : T_NE;
        p->pos += 2;
    } else if (c == '"' || c == '`') {
        size_t len;
        const char *why = "";
        p->cur.text = lex_string(s + p->pos, &len, &why);
        if (p->cur.text == NULL) {
            p->cur.kind = T_BAD;
            perr(p, "%s at position %zu", why, p->pos + 1);
            return;
        }
        p->cur.kind = T_STRING;
        p->pos += len;
    } else if (isdigit((unsigned char)c) || (c == '-' && isdigit((unsigned char)s[p->pos + 1]))) {
        size_t i = p->pos + (c == '-');
        while (isdigit((unsigned char)s[i]))
            i++;
        if (s[i] == '.' && isdigit((unsigned char)s[i + 1]))
            for (i++; isdigit((unsigned char)s[i]);)
                i++;
        if (s[i] != '\0' && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' &&
            s[i] != ')') {
            p->cur.kind = T_BAD;
            perr(p, "Invalid number literal at position %zu", p->pos + 1);
            return;
        }
        p->cur.kind = T_NUMBER;
        p->cur.text = strndup(s + p->pos, i - p->pos);
        p->pos = i;
    } else if (ident_start(c)) {
        size_t n = lex_word(s + p->pos);
        p->cur.kind = T_WORD;
        p->cur.text = strndup(s + p->pos, n);
        p->pos += n;
    } else {
        p->cur.kind = T_BAD;
        perr(p, "unexpected character '%c' at position %zu", isprint((unsigned char)c) ? c : '?',
             p->pos + 1);
        return;
    }
    if ((p->cur.kind == T_WORD || p->cur.kind == T_NUMBER) && p->cur.text == NULL) {
        p->cur.kind = T_BAD;
        perr(p, "out of memory");
    }
}

static bool is_kw(const struct parser *p, const char *kw)
{
    return p->cur.kind == T_WORD && strcmp(p->cur.text, kw) == 0;
}

static bool is_keyword(const char *w)
{
    static const char *const kws[] = {"and", "or", "not", "in", "contains", "is",
                                      "empty", "matches", "nil"};
    for (size_t i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
        if (strcmp(w, kws[i]) == 0)
            return true;
    return false;
}

/* ---- the tree ----------------------------------------------------------- */

static void node_free(struct fnode *n)
{
    if (n == NULL)
        return;
    node_free(n->a);
    node_free(n->b);
    for (int i = 0; i < n->n_segs; i++)
        free(n->segs[i]);
    free(n->value);
    regex_free(n->re);
    free(n);
}

static struct fnode *node_new(struct parser *p, enum node_kind kind)
{
    struct fnode *n = calloc(1, sizeof(*n));
    if (n == NULL)
        perr(p, "out of memory");
    else
        n->kind = kind;
    return n;
}

/* Split a selector word into segments: a.b.0, a["k"]. */
static int split_selector(struct parser *p, const char *w, struct fnode *n)
{
    size_t i = 0;
    while (w[i]) {
        if (n->n_segs == FILTER_MAX_SEGS) {
            perr(p, "Selector \"%s\" is too deep", w);
            return -1;
        }
        char *seg;
        if (w[i] == '[') {
            size_t j = i + 1, len;
            const char *why;
            while (w[j] == ' ' || w[j] == '\t')
                j++;
            seg = lex_string(w + j, &len, &why);
            if (seg == NULL) {
                perr(p, "Invalid index in selector \"%s\"", w);
                return -1;
            }
            j += len;
            while (w[j] == ' ' || w[j] == '\t')
                j++;
            i = j + 1; /* past ']' (the lexer checked it) */
        } else {
            if (w[i] == '.')
                i++;
            size_t start = i;
            while (w[i] && w[i] != '.' && w[i] != '[')
                i++;
            seg = strndup(w + start, i - start);
            if (seg == NULL) {
                perr(p, "out of memory");
                return -1;
            }
        }
        n->segs[n->n_segs++] = seg;
    }
    return 0;
}

/* The schema type at n's selector, or 0 if the endpoint has no such field. */
static char schema_type(const struct parser *p, const struct fnode *n)
{
    for (size_t f = 0; f < p->n_fields; f++) {
        const char *path = p->schema[f].path;
        int seg = 0;
        bool ok = true;
        while (*path && ok) {
            const char *dot = strchr(path, '.');
            size_t len = dot ? (size_t)(dot - path) : strlen(path);
            if (seg >= n->n_segs)
                ok = false;
            else if (!(len == 1 && *path == '*') &&
                     (strlen(n->segs[seg]) != len || strncmp(n->segs[seg], path, len) != 0))
                ok = false;
            seg++;
            path += len + (dot != NULL);
        }
        if (ok && seg == n->n_segs)
            return p->schema[f].type;
    }
    return 0;
}

static const char *op_name(enum match_op op)
{
    static const char *const names[] = {"==",          "!=",       "in",       "not in",
                                        "is empty",    "is not empty", "matches",
                                        "not matches"};
    return names[op];
}

/* Go's strconv.ParseBool. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (int i = 0; i < 6; i++) {
        if (strcmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Check the operator against the field's type and coerce the value. */

static int check_match(struct parser *p, struct fnode *n, const char *selector)
{
    n->type = schema_type(p, n);
    if (n->type == 0) {
        perr(p, "Selector \"%s\" is not valid", selector);
        return -1;
    }
    bool ok;
    switch (n->type) {
    case 's':
        ok = true;
        break;
    case 'i':
    case 'b':
        ok = n->op == OP_EQ || n->op == OP_NE;
        break;
    case 'L':
    case 'M':
        ok = n->op == OP_IN || n->op == OP_NOT_IN || n->op == OP_EMPTY || n->op == OP_NOT_EMPTY;
        break;
    default:
        ok = n->op == OP_EMPTY || n->op == OP_NOT_EMPTY;
        break;
    }
    if (!ok) {
        perr(p, "Invalid match operator \"%s\" for selector \"%s\"", op_name(n->op), selector);
        return -1;
    }
    if (n->type == 'i') {
        char *end;
        errno = 0;
        n->ival = strtoll(n->value, &end, 10);
        if (*n->value == '\0' || *end != '\0' || errno != 0) {
            perr(p, "Failed to coerce value \"%s\" to an integer for selector \"%s\"", n->value,
                 selector);
            return -1;
        }
    } else if (n->type == 'b' && parse_bool(n->value, &n->bval) != 0) {
        perr(p, "Failed to coerce value \"%s\" to a boolean for selector \"%s\"", n->value,
             selector);
        return -1;
    } else if (n->op == OP_MATCHES || n->op == OP_NOT_MATCHES) {
        char why[160];
        if (regex_compile(n->value, &n->re, why, sizeof(why)) != 0) {
            perr(p, "Invalid regular expression \"%.100s\": %s", n->value, why);
            return -1;
        }
    }
    return 0;
}

static struct fnode *parse_or(struct parser *p);

static bool value_token(const struct parser *p)
{
    return p->cur.kind == T_STRING || p->cur.kind == T_NUMBER ||
           (p->cur.kind == T_WORD && !is_keyword(p->cur.text));
}

static struct fnode *parse_match(struct parser *p)
{
    struct fnode *n = node_new(p, N_MATCH);
    char *first = NULL, *selector = NULL;
    if (n == NULL)
        return NULL;
    if (!value_token(p)) {
        if (p->cur.kind == T_END)
            perr(p, "expected a match expression, found the end of the expression");
        else if (!p->failed)
            perr(p, "expected a selector or value at position %zu", p->cur.pos + 1);
        goto fail;
    }
    enum tok_kind first_kind = p->cur.kind;
    size_t first_pos = p->cur.pos;
    first = p->cur.text;
    p->cur.text = NULL;
    next(p);
    if (p->failed)
        goto fail;

    bool value_first = false;
    if (is_kw(p, "in")) {
        n->op = OP_IN;
        value_first = true;
        next(p);
    } else if (is_kw(p, "not")) {
        next(p);
        if (is_kw(p, "in")) {
            n->op = OP_NOT_IN;
            value_first = true;
        } else if (is_kw(p, "contains")) {
            n->op = OP_NOT_IN;
        } else if (is_kw(p, "matches")) {
            n->op = OP_NOT_MATCHES;
        } else {
            perr(p, "expected in, contains or matches after \"not\" at position %zu",
                 p->cur.pos + 1);
            goto fail;
        }
        next(p);
    } else if (p->cur.kind == T_EQ || p->cur.kind == T_NE) {
        n->op = p->cur.kind == T_EQ ? OP_EQ : OP_NE;
        next(p);
    } else if (is_kw(p, "contains")) {
        n->op = OP_IN;
        next(p);
    } else if (is_kw(p, "matches")) {
        n->op = OP_MATCHES;
        next(p);
    } else if (is_kw(p, "is")) {
        next(p);
        bool neg = false;
        if (is_kw(p, "not")) {
            neg = true;
            next(p);
        }
        if (is_kw(p, "empty")) {
            n->op = neg ? OP_NOT_EMPTY : OP_EMPTY;
        } else if (is_kw(p, "nil")) {
            perr(p, "\"is nil\" is not supported by this server");
            goto fail;
        } else {
            perr(p, "expected \"empty\" after \"is\" at position %zu", p->cur.pos + 1);
            goto fail;
        }
        next(p);
    } else {
        if (!p->failed)
            perr(p, "expected a match operator after \"%s\" at position %zu", first,
                 p->cur.pos + 1);
        goto fail;
    }
    if (p->failed)
        goto fail;

    if (value_first) {
        if (p->cur.kind != T_WORD || is_keyword(p->cur.text)) {
            perr(p, "Invalid selector at position %zu", p->cur.pos + 1);
            goto fail;
        }
        selector = p->cur.text;
        p->cur.text = NULL;
        n->value = first;
        first = NULL;
        next(p);
    } else {
        if (first_kind != T_WORD) {
            perr(p, "Invalid selector at position %zu", first_pos + 1);
            goto fail;
        }
        selector = first;
        first = NULL;
        if (n->op != OP_EMPTY && n->op != OP_NOT_EMPTY) {
            if (!value_token(p)) {
                if (!p->failed)
                    perr(p, "expected a value at position %zu", p->cur.pos + 1);
                goto fail;
            }
            n->value = p->cur.text;
            p->cur.text = NULL;
            next(p);
        }
    }
    if (p->failed || split_selector(p, selector, n) != 0 || check_match(p, n, selector) != 0)
        goto fail;
    free(selector);
    return n;
fail:
    free(first);
    free(selector);
    node_free(n);
    return NULL;
}

static struct fnode *parse_not(struct parser *p)
{
    if (++p->depth > FILTER_MAX_DEPTH) {
        perr(p, "expression nested too deeply (limit %d)", FILTER_MAX_DEPTH);
        return NULL;
    }
    struct fnode *n = NULL;
    if (is_kw(p, "not")) {
        next(p);
        struct fnode *inner = p->failed ? NULL : parse_not(p);
        if (inner != NULL && (n = node_new(p, N_NOT)) != NULL)
            n->a = inner;
        else
            node_free(inner);
    } else if (p->cur.kind == T_LPAREN) {
        next(p);
        n = p->failed ? NULL : parse_or(p);
        if (n != NULL && p->cur.kind != T_RPAREN) {
            perr(p, "Unmatched parentheses at position %zu", p->cur.pos + 1);
            node_free(n);
            n = NULL;
        } else if (n != NULL) {
            next(p);
        }
    } else {
        n = parse_match(p);
    }
    p->depth--;
    if (p->failed) {
        node_free(n);
        return NULL;
    }
    return n;
}

static struct fnode *parse_binary(struct parser *p, bool is_or)
{
    struct fnode *left = is_or ? parse_binary(p, false) : parse_not(p);
    while (left != NULL && is_kw(p, is_or ? "or" : "and")) {
        next(p);
        struct fnode *right = p->failed ? NULL : is_or ? parse_binary(p, false) : parse_not(p);
        struct fnode *n = right ? node_new(p, is_or ? N_OR : N_AND) : NULL;
        if (n == NULL) {
            node_free(left);
            node_free(right);
            return NULL;
        }
        n->a = left;
        n->b = right;
        left = n;
    }
    return left;
}

static struct fnode *parse_or(struct parser *p)
{
    return parse_binary(p, true);
}

int filter_compile(const char *text, const struct filter_field *schema, size_t n_fields,
                   struct filter **out, char *err, size_t errlen)
{
    struct parser p = {.s = text, .schema = schema, .n_fields = n_fields, .err = err,
                       .errlen = errlen};
    *out = NULL;
    if (strlen(text) > FILTER_MAX_LEN) {
        snprintf(err, errlen, "filter longer than %d bytes", FILTER_MAX_LEN);
        return REG_EINVAL;
    }
    next(&p);
    struct fnode *root = p.failed ? NULL : parse_or(&p);
    if (root != NULL && p.cur.kind != T_END)
        perr(&p, "unexpected %s at position %zu",
             p.cur.kind == T_RPAREN ? "\")\"" : "text", p.cur.pos + 1);
    free(p.cur.text);
    if (p.failed || root == NULL) {
        if (!p.failed)
            snprintf(err, errlen, "invalid expression");
        node_free(root);
        return REG_EINVAL;
    }
    struct filter *f = malloc(sizeof(*f));
    if (f == NULL) {
        node_free(root);
        snprintf(err, errlen, "out of memory");
        return REG_ENOMEM;
    }
    f->root = root;
    *out = f;
    return 0;
}

void filter_free(struct filter *f)
{
    if (f == NULL)
        return;
    node_free(f->root);
    free(f);
}

/* ---- evaluation --------------------------------------------------------- */

/* What a missing map key (or absent field) answers: go-bexpr's
 * NotPresentDisposition. */
static bool not_present(enum match_op op)
{
    return op == OP_NE || op == OP_NOT_IN || op == OP_EMPTY || op == OP_NOT_MATCHES;
}

static bool negated(enum match_op op)
{
    return op == OP_NE || op == OP_NOT_IN || op == OP_NOT_EMPTY || op == OP_NOT_MATCHES;
}

/* The operator on the value found at the selector (v: borrowed, maybe null). */
static bool apply_op(const struct fnode *n, json_t *v)
{
    bool r = false;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    switch (n->op) {
    case OP_EQ:
    case OP_NE:
        if (n->type == 'i')
            r = json_is_integer(v) && json_integer_value(v) == n->ival;
        else if (n->type == 'b')
            r = json_is_boolean(v) && json_is_true(v) == n->bval;
        else
            r = strcmp(s, n->value) == 0;
        break;
    case OP_IN:
    case OP_NOT_IN:
        if (json_is_array(v)) {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) if (json_is_string(e) &&
                                            strcmp(json_string_value(e), n->value) == 0) r = true;
        } else if (json_is_object(v)) {
            r = json_object_get(v, n->value) != NULL;
        } else {
            r = strstr(s, n->value) != NULL;
        }
        break;
    case OP_EMPTY:
    case OP_NOT_EMPTY:
        if (json_is_array(v))
            r = json_array_size(v) == 0;
        else if (json_is_object(v))
            r = json_object_size(v) == 0;
        else
            r = *s == '\0';
        break;
    case OP_MATCHES:
    case OP_NOT_MATCHES:
        r = regex_search(n->re, s, strlen(s));
        break;
    }
    return negated(n->op) ? !r : r;
}

static bool eval_path(const struct fnode *n, json_t *v, int seg)
{
    if (seg == n->n_segs)
        return apply_op(n, v);
    if (json_is_array(v)) { /* a list of objects: any element */
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_object(e) && eval_path(n, e, seg)) return true;
        return false;
    }
    json_t *child = json_is_object(v) ? json_object_get(v, n->segs[seg]) : NULL;
    if (child == NULL)
        return not_present(n->op);
    return eval_path(n, child, seg + 1);
}

static bool eval(const struct fnode *n, json_t *obj)
{
    switch (n->kind) {
    case N_AND:
        return eval(n->a, obj) && eval(n->b, obj);
    case N_OR:
        return eval(n->a, obj) || eval(n->b, obj);
    case N_NOT:
        return !eval(n->a, obj);
    case N_MATCH:
        return eval_path(n, obj, 0);
    }
    return false;
}

bool filter_match(const struct filter *f, json_t *obj)
{
    return eval(f->root, obj);
}
