/*
 * filter_regex.c — see filter_regex.h. The pattern parses to a tree (bounded by the
 * pattern's length), the tree emits a program with repetitions unrolled
 * (bounded by REGEX_MAX_INSNS), and a Pike VM runs the program over the
 * subject: every thread advances one byte at a time, at most one thread per
 * instruction, so a search costs at most instructions times bytes.
 */
#include "filter_regex.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry/error.h"

#define NODE_MAX (2 * REGEX_MAX_LEN + 8) /* a byte of pattern makes at most two */
#define SEARCH_STACK_BYTES 4096          /* a search's own memory, when it fits */

enum insn_op { I_SET, I_SPLIT, I_JMP, I_ASSERT, I_MATCH };
enum assertion { A_TEXT_START, A_TEXT_END, A_LINE_START, A_LINE_END, A_WORD, A_NOT_WORD };

struct insn {
    uint8_t op;
    uint8_t assertion;
    uint16_t set; /* I_SET: index into sets */
    int x, y;     /* I_JMP: x; I_SPLIT: x and y */
};

struct byteset {
    uint8_t bits[32];
};

struct regex {
    struct insn *prog;
    int n;
    struct byteset *sets;
};

enum node_kind { N_EMPTY, N_SET, N_ASSERT, N_CAT, N_ALT, N_REPEAT };

struct node {
    enum node_kind kind;
    int value;    /* N_SET: set index; N_ASSERT: assertion */
    int min, max; /* N_REPEAT; max -1: unbounded */
    struct node *a, *b;
};

struct flags {
    bool icase, multiline, dot_newline;
};

struct parser {
    const char *p;
    char *err;
    size_t errlen;
    bool failed;
    int depth;
    bool flags_only; /* the atom just parsed was "(?i)": nothing to repeat */
    struct node nodes[NODE_MAX];
    int n_nodes;
    struct byteset sets[NODE_MAX];
    int n_sets;
    struct insn *prog; /* emitting */
    int n_insns;
};

static void fail(struct parser *ps, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
}

static struct node *new_node(struct parser *ps, enum node_kind kind)
{
    if (ps->n_nodes == NODE_MAX) {
        fail(ps, "expression too complex");
        return NULL;
    }
    struct node *n = &ps->nodes[ps->n_nodes++];
    *n = (struct node){.kind = kind};
    return n;
}

static struct node *pair(struct parser *ps, enum node_kind kind, struct node *a, struct node *b)
{
    struct node *n = new_node(ps, kind);
    if (n != NULL) {
        n->a = a;
        n->b = b;
    }
    return n;
}

/* Byte sets. */

static void set_add(struct byteset *s, unsigned c)
{
    s->bits[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static bool set_has(const struct byteset *s, unsigned c)
{
    return s->bits[c >> 3] & (1u << (c & 7));
}

static void set_range(struct byteset *s, unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++)
        set_add(s, c);
}

static void set_invert(struct byteset *s)
{
    for (int i = 0; i < 32; i++)
        s->bits[i] = (uint8_t)~s->bits[i];
}

static void set_fold_case(struct byteset *s)
{
    for (unsigned c = 'a'; c <= 'z'; c++)
        if (set_has(s, c) || set_has(s, c - 32)) {
            set_add(s, c);
            set_add(s, c - 32);
        }
}

static bool word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_';
}

/* The POSIX class name at *pp ("alpha:]"), added to s; false if unknown.
 * icase folds the class before a '^' inverts it (as Go: under (?i)
 * [[:^lower:]] refuses 'A' too). */
static bool set_posix_class(struct byteset *s, const char **pp, bool icase)
{
    static const struct {
        const char *name;
        const char *ranges; /* pairs of bounds */
    } classes[] = {
        {"alnum", "09AZaz"}, {"alpha", "AZaz"}, {"ascii", "\001\177"},
        {"blank", "\t\t  "}, {"cntrl", "\001\037\177\177"}, {"digit", "09"},
        {"graph", "!~"},     {"lower", "az"},   {"print", " ~"},
        {"punct", "!/:@[`{~"}, {"space", "\t\r  "}, {"upper", "AZ"},
        {"word", "09AZaz__"}, {"xdigit", "09AFaf"},
    };
    const char *p = *pp;
    bool negate = *p == '^';
    if (negate)
        p++;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        size_t len = strlen(classes[i].name);
        if (strncmp(p, classes[i].name, len) != 0 || strncmp(p + len, ":]", 2) != 0)
            continue;
        struct byteset add = {{0}};
        for (const char *r = classes[i].ranges; *r; r += 2)
            set_range(&add, (unsigned char)r[0], (unsigned char)r[1]);
        if (strcmp(classes[i].name, "ascii") == 0 || strcmp(classes[i].name, "cntrl") == 0)
            set_add(&add, 0);
        if (icase)
            set_fold_case(&add);
        if (negate)
            set_invert(&add);
        for (int b = 0; b < 32; b++)
            s->bits[b] |= add.bits[b];
        *pp = p + len + 2;
        return true;
    }
    return false;
}

/* \d \D \w \W \s \S into s; false if c is none of them. */
static bool set_perl_class(struct byteset *s, char c)
{
    struct byteset add = {{0}};
    switch (c | 0x20) {
    case 'd':
        set_range(&add, '0', '9');
        break;
    case 'w':
        for (unsigned b = 0; b < 256; b++)
            if (word_byte((unsigned char)b))
                set_add(&add, b);
        break;
    case 's':
        set_range(&add, '\t', '\n');
        set_range(&add, '\f', '\r');
        set_add(&add, ' ');
        break;
    default:
        return false;
    }
    if (c >= 'A' && c <= 'Z')
        set_invert(&add);
    for (int b = 0; b < 32; b++)
        s->bits[b] |= add.bits[b];
    return true;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* The single byte an escape after '\' at ps->p stands for (consumed), or
 * -1 when it is not one (ps->p unmoved). */
static int escaped_byte(struct parser *ps)
{
    static const char from[] = "ntrfva", to[] = "\n\t\r\f\v\a";
    char c = *ps->p;
    const char *k = c ? strchr(from, c) : NULL;
    if (k != NULL) {
        ps->p++;
        return (unsigned char)to[k - from];
    }
    if (c == 'x') {
        int hi = hex_digit(ps->p[1]), lo = hi < 0 ? -1 : hex_digit(ps->p[2]);
        if (lo < 0) {
            fail(ps, "invalid escape sequence: \\x needs two hex digits");
            return -1;
        }
        ps->p += 3;
        return hi * 16 + lo;
    }
    if (c > 0 && (unsigned char)c < 0x80 && !(c >= '0' && c <= '9') &&
        !((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) { /* as Go: any ASCII punctuation,
                                                          space or control byte */
        ps->p++;
        return (unsigned char)c;
    }
    return -1;
}

static void escape_error(struct parser *ps)
{
    char c = *ps->p;
    if (c == '\0')
        fail(ps, "trailing backslash at end of expression");
    else if (c >= '0' && c <= '9')
        fail(ps, "a backreference or octal escape (\\%c) is not supported", c);
    else
        fail(ps, "invalid escape sequence: \\%c", c);
}

/* Parsing: alternation := concatenation ('|' concatenation)*. */

static struct node *parse_alt(struct parser *ps, struct flags *fl);

static struct node *set_node(struct parser *ps, const struct byteset *s, const struct flags *fl)
{
    struct node *n = new_node(ps, N_SET);
    if (n == NULL)
        return NULL;
    n->value = ps->n_sets;
    ps->sets[ps->n_sets] = *s;
    if (fl->icase)
        set_fold_case(&ps->sets[ps->n_sets]);
    ps->n_sets++;
    return n;
}

static struct node *assert_node(struct parser *ps, enum assertion a)
{
    struct node *n = new_node(ps, N_ASSERT);
    if (n != NULL)
        n->value = (int)a;
    return n;
}

/* One member of a bracket expression, or its range's end: a byte, or -1
 * when it was a class (added to s) or an error. */
static int bracket_member(struct parser *ps, struct byteset *s, bool icase)
{
    if (*ps->p == '[' && ps->p[1] == ':' && strstr(ps->p + 2, ":]") != NULL) {
        const char *p = ps->p + 2;
        if (!set_posix_class(s, &p, icase)) {
            fail(ps, "invalid character class");
            return -1;
        }
        ps->p = p;
        return -1;
    }
    if (*ps->p != '\\')
        return (unsigned char)*ps->p++;
    ps->p++;
    if (*ps->p != '\0' && set_perl_class(s, *ps->p)) {
        ps->p++;
        return -1;
    }
    int c = escaped_byte(ps);
    if (c < 0 && !ps->failed)
        escape_error(ps);
    return c;
}

static struct node *parse_bracket(struct parser *ps, const struct flags *fl)
{
    struct byteset s = {{0}};
    ps->p++; /* '[' */
    bool negate = *ps->p == '^';
    if (negate)
        ps->p++;
    bool first = true;
    while (!ps->failed && (*ps->p != ']' || first)) {
        if (*ps->p == '\0') {
            fail(ps, "missing closing ]");
            return NULL;
        }
        first = false;
        int lo = bracket_member(ps, &s, fl->icase);
        if (lo < 0)
            continue;
        if (ps->p[0] == '-' && ps->p[1] != ']' && ps->p[1] != '\0') {
            ps->p++;
            int hi = bracket_member(ps, &s, fl->icase);
            if (hi < 0 || hi < lo) {
                fail(ps, "invalid character class range");
                return NULL;
            }
            set_range(&s, (unsigned)lo, (unsigned)hi);
        } else {
            set_add(&s, (unsigned)lo);
        }
    }
    if (ps->failed)
        return NULL;
    ps->p++; /* ']' */
    struct flags case_only = {.icase = fl->icase};
    if (negate) { /* fold before inverting: [^a] under (?i) refuses A too */
        if (fl->icase)
            set_fold_case(&s);
        set_invert(&s);
        case_only.icase = false;
    }
    return set_node(ps, &s, &case_only);
}

/* "(?flags)" or "(?flags:" at ps->p (past "(?"): the flags changed in *fl;
 * true if a group follows (':'). */
static bool parse_flags(struct parser *ps, struct flags *fl)
{
    bool on = true, flag_after_minus = false;
    for (;; ps->p++) {
        switch (*ps->p) {
        case 'i':
            fl->icase = on;
            break;
        case 'm':
            fl->multiline = on;
            break;
        case 's':
            fl->dot_newline = on;
            break;
        case 'U': /* ungreedy: the same yes or no */
            break;
        case '-':
            if (!on)
                goto bad;
            on = false;
            continue;
        case ')':
        case ':':
            if (!on && !flag_after_minus)
                goto bad; /* "(?-)", "(?i-)" */
            return *ps->p++ == ':';
        default:
            goto bad;
        }
        flag_after_minus = !on;
    }
bad:
    fail(ps, "invalid or unsupported Perl syntax");
    return false;
}

static struct node *parse_group(struct parser *ps, struct flags *fl)
{
    ps->p++; /* '(' */
    struct flags inner = *fl;
    if (*ps->p == '?') {
        ps->p++;
        if (*ps->p == 'P' || *ps->p == '<') { /* a named group: the name does not matter */
            if (*ps->p == 'P')
                ps->p++;
            const char *end = *ps->p == '<' ? ps->p + 1 : NULL;
            while (end != NULL && (*end == '_' || (*end >= '0' && *end <= '9') ||
                                   ((*end | 0x20) >= 'a' && (*end | 0x20) <= 'z')))
                end++;
            if (end == NULL || end == ps->p + 1 || *end != '>') {
                fail(ps, "invalid named capture");
                return NULL;
            }
            ps->p = end + 1;
        } else if (!parse_flags(ps, &inner)) {
            *fl = inner; /* (?i): for the rest of the enclosing group */
            ps->flags_only = true;
            return ps->failed ? NULL : new_node(ps, N_EMPTY);
        }
    }
    if (++ps->depth > REGEX_MAX_DEPTH) {
        fail(ps, "groups nested too deeply");
        return NULL;
    }
    struct node *n = parse_alt(ps, &inner);
    ps->depth--;
    ps->flags_only = false; /* a group, whatever it held last */
    if (ps->failed)
        return NULL;
    if (*ps->p != ')') {
        fail(ps, "missing closing )");
        return NULL;
    }
    ps->p++;
    return n;
}

static struct node *parse_escape(struct parser *ps, const struct flags *fl)
{
    ps->p++; /* '\' */
    struct byteset s = {{0}};
    char c = *ps->p;
    if (c != '\0' && set_perl_class(&s, c)) {
        ps->p++;
        return set_node(ps, &s, fl);
    }
    static const char asserts[] = "bBAz";
    static const enum assertion kinds[] = {A_WORD, A_NOT_WORD, A_TEXT_START, A_TEXT_END};
    const char *k = c ? strchr(asserts, c) : NULL;
    if (k != NULL) {
        ps->p++;
        return assert_node(ps, kinds[k - asserts]);
    }
    int b = escaped_byte(ps);
    if (b < 0) {
        if (!ps->failed)
            escape_error(ps);
        return NULL;
    }
    set_add(&s, (unsigned)b);
    return set_node(ps, &s, fl);
}

/* "{n}", "{n,}" or "{n,m}" at ps->p: consumed, with its bounds; false (not
 * consumed) if it is not one, and then '{' is a literal, as in Go. */
static bool parse_interval(struct parser *ps, int *min, int *max)
{
    const char *p = ps->p + 1;
    long n = 0, m;
    int digits = 0;
    const char *first = p;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        n = n > 100000 ? n : n * 10 + (*p - '0');
    if (digits == 0 || (digits > 1 && *first == '0')) /* Go: "{01}" is literal text */
        return false;
    m = n;
    if (*p == ',') {
        p++;
        if (*p == '}') {
            m = -1;
        } else {
            m = 0;
            first = p;
            for (digits = 0; *p >= '0' && *p <= '9'; p++, digits++)
                m = m > 100000 ? m : m * 10 + (*p - '0');
            if (digits == 0 || (digits > 1 && *first == '0'))
                return false;
        }
    }
    if (*p != '}')
        return false;
    if (n > REGEX_MAX_REPEAT || m > REGEX_MAX_REPEAT || (m >= 0 && m < n)) {
        fail(ps, "invalid repeat count (at most %d)", REGEX_MAX_REPEAT);
        return false;
    }
    ps->p = p + 1;
    *min = (int)n;
    *max = (int)m;
    return true;
}

/* A repetition operator at ps->p: consumed (with a lazy '?' after it). */
static bool parse_repeat_op(struct parser *ps, int *min, int *max)
{
    switch (*ps->p) {
    case '*':
        *min = 0, *max = -1;
        break;
    case '+':
        *min = 1, *max = -1;
        break;
    case '?':
        *min = 0, *max = 1;
        break;
    case '{':
        if (!parse_interval(ps, min, max))
            return false;
        ps->p--; /* the common step below */
        break;
    default:
        return false;
    }
    ps->p++;
    if (*ps->p == '?')
        ps->p++;
    return true;
}

static struct node *parse_atom(struct parser *ps, struct flags *fl)
{
    struct byteset s = {{0}};
    switch (*ps->p) {
    case '(':
        return parse_group(ps, fl);
    case '[':
        return parse_bracket(ps, fl);
    case '\\':
        return parse_escape(ps, fl);
    case '.':
        ps->p++;
        set_range(&s, 0, 255);
        if (!fl->dot_newline)
            s.bits['\n' >> 3] &= (uint8_t) ~(1u << ('\n' & 7));
        return set_node(ps, &s, fl);
    case '^':
        ps->p++;
        return assert_node(ps, fl->multiline ? A_LINE_START : A_TEXT_START);
    case '$':
        ps->p++;
        return assert_node(ps, fl->multiline ? A_LINE_END : A_TEXT_END);
    case '*':
    case '+':
    case '?':
        fail(ps, "missing argument to repetition operator: %c", *ps->p);
        return NULL;
    case '{': {
        int min, max;
        const char *at = ps->p;
        if (parse_interval(ps, &min, &max)) {
            fail(ps, "missing argument to repetition operator: %.*s", (int)(ps->p - at), at);
            return NULL;
        }
        if (ps->failed)
            return NULL;
        break; /* a literal '{' */
    }
    default:
        break;
    }
    set_add(&s, (unsigned char)*ps->p++);
    return set_node(ps, &s, fl);
}

static struct node *parse_cat(struct parser *ps, struct flags *fl)
{
    struct node *cat = NULL;
    while (!ps->failed && *ps->p != '\0' && *ps->p != '|' && *ps->p != ')') {
        ps->flags_only = false;
        struct node *n = parse_atom(ps, fl);
        if (n == NULL)
            return NULL;
        int min, max;
        if (parse_repeat_op(ps, &min, &max)) {
            if (ps->flags_only) {
                fail(ps, "missing argument to repetition operator");
                return NULL;
            }
            int min2, max2;
            const char *at = ps->p;
            if (parse_repeat_op(ps, &min2, &max2)) {
                fail(ps, "invalid nested repetition operator: %.*s", (int)(ps->p - at), at);
                return NULL;
            }
            struct node *r = new_node(ps, N_REPEAT);
            if (r == NULL)
                return NULL;
            r->a = n;
            r->min = min;
            r->max = max;
            n = r;
        }
        if (ps->failed)
            return NULL;
        cat = cat == NULL ? n : pair(ps, N_CAT, cat, n);
    }
    if (ps->failed)
        return NULL;
    return cat != NULL ? cat : new_node(ps, N_EMPTY);
}

static struct node *parse_alt(struct parser *ps, struct flags *fl)
{
    struct node *n = parse_cat(ps, fl);
    while (n != NULL && *ps->p == '|') {
        ps->p++;
        struct node *b = parse_cat(ps, fl);
        n = b == NULL ? NULL : pair(ps, N_ALT, n, b);
    }
    return n;
}

/* Emitting the program. */

static int emit_insn(struct parser *ps, enum insn_op op)
{
    if (ps->n_insns == REGEX_MAX_INSNS) {
        fail(ps, "expression too large once its repetitions are expanded (over %d steps)",
             REGEX_MAX_INSNS);
        return -1;
    }
    ps->prog[ps->n_insns] = (struct insn){.op = (uint8_t)op};
    return ps->n_insns++;
}

/* Does n emit no instruction at all ("()", "(?i)", "(){5}")? */
static bool emits_nothing(const struct node *n)
{
    switch (n->kind) {
    case N_EMPTY:
        return true;
    case N_CAT:
        return emits_nothing(n->a) && emits_nothing(n->b);
    case N_REPEAT:
        return n->max == 0 || emits_nothing(n->a);
    default:
        return false;
    }
}

static void emit(struct parser *ps, const struct node *n)
{
    int at, jmp;
    if (ps->failed)
        return;
    switch (n->kind) {
    case N_EMPTY:
        break;
    case N_SET:
        if ((at = emit_insn(ps, I_SET)) >= 0)
            ps->prog[at].set = (uint16_t)n->value;
        break;
    case N_ASSERT:
        if ((at = emit_insn(ps, I_ASSERT)) >= 0)
            ps->prog[at].assertion = (uint8_t)n->value;
        break;
    case N_CAT:
        emit(ps, n->a);
        emit(ps, n->b);
        break;
    case N_ALT:
        if ((at = emit_insn(ps, I_SPLIT)) < 0)
            return;
        ps->prog[at].x = at + 1;
        emit(ps, n->a);
        if ((jmp = emit_insn(ps, I_JMP)) < 0)
            return;
        ps->prog[at].y = ps->n_insns;
        emit(ps, n->b);
        ps->prog[jmp].x = ps->n_insns;
        break;
    case N_REPEAT:
        /* a body of no instructions repeated is still none: without this,
         * "((){1000}){1000}..." multiplied its copies and never reached the
         * instruction cap */
        if (emits_nothing(n->a))
            break;
        for (int i = 0; i < n->min - (n->max < 0 && n->min > 0) && !ps->failed; i++)
            emit(ps, n->a);
        if (n->max < 0 && n->min > 0) { /* the last copy loops back: x+ */
            int start = ps->n_insns;
            emit(ps, n->a);
            if ((at = emit_insn(ps, I_SPLIT)) >= 0) {
                ps->prog[at].x = start;
                ps->prog[at].y = at + 1;
            }
        } else if (n->max < 0) { /* x* */
            if ((at = emit_insn(ps, I_SPLIT)) < 0)
                return;
            emit(ps, n->a);
            if ((jmp = emit_insn(ps, I_JMP)) < 0)
                return;
            ps->prog[jmp].x = at;
            ps->prog[at].x = at + 1;
            ps->prog[at].y = ps->n_insns;
        } else { /* up to max - min optional copies, each skipping to the end */
            int first = ps->n_insns;
            for (int i = n->min; i < n->max && !ps->failed; i++) {
                if ((at = emit_insn(ps, I_SPLIT)) >= 0) {
                    ps->prog[at].x = at + 1;
                    ps->prog[at].y = -1; /* patched below */
                }
                emit(ps, n->a);
            }
            for (int i = first; i < ps->n_insns && !ps->failed; i++)
                if (ps->prog[i].op == I_SPLIT && ps->prog[i].y == -1)
                    ps->prog[i].y = ps->n_insns;
        }
        break;
    }
}

int regex_compile(const char *pattern, struct regex **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strlen(pattern) > REGEX_MAX_LEN) {
        snprintf(err, errlen, "longer than %d bytes", REGEX_MAX_LEN);
        return REG_EINVAL;
    }
    struct parser *ps = calloc(1, sizeof(*ps));
    struct regex *re = calloc(1, sizeof(*re));
    if (ps == NULL || re == NULL) {
        free(ps);
        free(re);
        snprintf(err, errlen, "out of memory");
        return REG_ENOMEM;
    }
    ps->p = pattern;
    ps->err = err;
    ps->errlen = errlen;
    struct flags fl = {0};
    struct node *root = parse_alt(ps, &fl);
    if (!ps->failed && *ps->p == ')')
        fail(ps, "unexpected )");
    if (!ps->failed && (ps->prog = malloc(REGEX_MAX_INSNS * sizeof(*ps->prog))) == NULL)
        fail(ps, "out of memory");
    if (!ps->failed) {
        emit(ps, root);
        emit_insn(ps, I_MATCH);
    }
    if (!ps->failed) {
        re->n = ps->n_insns;
        re->prog = realloc(ps->prog, (size_t)re->n * sizeof(*re->prog));
        re->sets = malloc((size_t)(ps->n_sets ? ps->n_sets : 1) * sizeof(*re->sets));
        if (re->prog == NULL || re->sets == NULL) {
            if (re->prog == NULL)
                free(ps->prog);
            fail(ps, "out of memory");
        } else {
            memcpy(re->sets, ps->sets, (size_t)ps->n_sets * sizeof(*re->sets));
        }
    } else {
        free(ps->prog);
    }
    int rc = ps->failed ? REG_EINVAL : 0;
    free(ps);
    if (rc != 0) {
        regex_free(re);
        return rc;
    }
    *out = re;
    return 0;
}

void regex_free(struct regex *re)
{
    if (re == NULL)
        return;
    free(re->prog);
    free(re->sets);
    free(re);
}

/* The Pike VM. */

struct vm {
    const struct regex *re;
    const unsigned char *s;
    size_t len;
    size_t *mark; /* mark[pc] == pos + 1: pc is in the list for pos already */
    int *stack;
};

static bool holds(const struct vm *vm, enum assertion a, size_t pos)
{
    switch (a) {
    case A_TEXT_START:
        return pos == 0;
    case A_TEXT_END:
        return pos == vm->len;
    case A_LINE_START:
        return pos == 0 || vm->s[pos - 1] == '\n';
    case A_LINE_END:
        return pos == vm->len || vm->s[pos] == '\n';
    case A_WORD:
    case A_NOT_WORD: {
        bool before = pos > 0 && word_byte(vm->s[pos - 1]);
        bool after = pos < vm->len && word_byte(vm->s[pos]);
        return (before != after) == (a == A_WORD);
    }
    }
    return false;
}

/* Add the thread at pc, and what it reaches without reading, to list for
 * position pos. true: it reaches the match. */
static bool add_thread(struct vm *vm, int *list, int *n, int pc, size_t pos)
{
    int top = 0;
    vm->stack[top++] = pc;
    while (top > 0) {
        pc = vm->stack[--top];
        if (vm->mark[pc] == pos + 1)
            continue;
        vm->mark[pc] = pos + 1;
        const struct insn *in = &vm->re->prog[pc];
        switch (in->op) {
        case I_MATCH:
            return true;
        case I_JMP:
            vm->stack[top++] = in->x;
            break;
        case I_SPLIT:
            vm->stack[top++] = in->y;
            vm->stack[top++] = in->x;
            break;
        case I_ASSERT:
            if (holds(vm, (enum assertion)in->assertion, pos))
                vm->stack[top++] = pc + 1;
            break;
        case I_SET:
            list[(*n)++] = pc;
            break;
        }
    }
    return false;
}

bool regex_search(const struct regex *re, const char *s, size_t len)
{
    size_t n = (size_t)re->n;
    /* two lists, the marks, and a stack: every pc is pushed at most twice
     * per mark (a split's two arms); on the stack for the usual small
     * pattern */
    size_t bytes = n * sizeof(size_t) + (2 * n + (2 * n + 2)) * sizeof(int);
    size_t small[SEARCH_STACK_BYTES / sizeof(size_t)];
    void *mem = bytes <= sizeof(small) ? small : malloc(bytes);
    if (mem == NULL)
        return false;
    memset(mem, 0, n * sizeof(size_t)); /* the marks; the rest is written first */
    struct vm vm = {.re = re, .s = (const unsigned char *)s, .len = len, .mark = mem};
    int *cur = (int *)(vm.mark + n), *next = cur + n;
    vm.stack = next + n;
    int n_cur = 0, n_next;
    bool matched = false;
    for (size_t pos = 0; !matched; pos++) {
        /* a new thread starts at every position: the search is unanchored */
        if (add_thread(&vm, cur, &n_cur, 0, pos)) {
            matched = true;
            break;
        }
        if (pos == len)
            break;
        n_next = 0;
        unsigned char c = vm.s[pos];
        for (int i = 0; i < n_cur && !matched; i++) {
            const struct insn *in = &re->prog[cur[i]];
            if (set_has(&re->sets[in->set], c))
                matched = add_thread(&vm, next, &n_next, cur[i] + 1, pos + 1);
        }
        int *t = cur;
        cur = next;
        next = t;
        n_cur = n_next;
    }
    if (mem != small)
        free(mem);
    return matched;
}
