/*
 * registryctl — every registryd operation from a shell.
 *
 * Verbs are rows of one table (name, handler, usage); each handler gets the
 * arguments after the verb with the global options already taken out.
 * Output: a table for people, --json for scripts. Exit status: 0 success,
 * 1 the server (or the network) said no — its one-line reason on stderr —
 * and 2 a usage error.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <signal.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <pthread.h>

#include "http_call.h"
#include "registry/balancer.h"
#include "registry/registry.h"
#include "registry/resilience.h"
#include "internal.h"

#define EXIT_SERVER 1
#define EXIT_USAGE 2

struct ctl {
    struct reg_client *client;
    const char *addrs; /* --http-addr or REGISTRY_HTTP_ADDR as given, or NULL */
    bool json;
    int argc; /* verb arguments, global options removed */
    char **argv;
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("registryctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see registryctl --help)\n", stderr);
    return EXIT_USAGE;
}

static int server_error(struct ctl *x, int rc)
{
    const char *msg = reg_client_errmsg(x->client);
    fprintf(stderr, "registryctl: %s\n", *msg ? msg : reg_strerror(rc));
    return EXIT_SERVER;
}

/* GET path and parse the JSON answer; prints errors itself. */
static int get_json(struct ctl *x, const char *path, json_t **out)
{
    char *body = NULL;
    size_t len = 0;
    int rc = reg_client_request(x->client, "GET", path, NULL, 0, NULL, &body, &len, NULL);
    if (rc != 0)
        return server_error(x, rc);
    json_error_t jerr;
    *out = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    free(body);
    if (*out == NULL) {
        fprintf(stderr, "registryctl: unexpected answer from %s: %s\n", path, jerr.text);
        return EXIT_SERVER;
    }
    return 0;
}

static int put(struct ctl *x, const char *path, const char *body)
{
    int rc = reg_client_request(x->client, "PUT", path, body, body ? strlen(body) : 0, NULL, NULL,
                                NULL, NULL);
    if (rc != 0)
        return server_error(x, rc);
    if (x->json)
        printf("{\"ok\": true}\n");
    return 0;
}

/* The n bytes at p as UTF-8 text (malloc'd, *len bytes, NUL-terminated):
 * what is not UTF-8 becomes U+FFFD, as Go's encoding/json writes it (a
 * body that was not valid UTF-8 made --json print nothing at all). */
static char *utf8_text(const char *p, size_t n, size_t *len)
{
    char *out = malloc(n * 3 + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        bool ok = k > 0 && i + k <= n;
        for (size_t m = 1; ok && m < k; m++)
            ok = ((unsigned char)p[i + m] >> 6) == 0x2;
        if (ok && k > 1) { /* no overlong forms, surrogates or code points past U+10FFFF */
            unsigned cp = k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
            for (size_t m = 1; m < k; m++)
                cp = (cp << 6) | ((unsigned char)p[i + m] & 0x3Fu);
            ok = (k == 2 && cp >= 0x80) || (k == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ||
                 (k == 4 && cp >= 0x10000 && cp <= 0x10FFFF);
        }
        if (ok) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* One line of JSON (taken): what --json prints for a stream of events,
 * every string escaped (a server's text never makes its own fields). */
static void print_json_line(json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (s != NULL)
        printf("%s\n", s);
    else
        fprintf(stderr, "registryctl: out of memory\n");
    free(s);
    json_decref(v);
}

static void print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (s)
        puts(s);
    free(s);
}

/* GET path; print the JSON with --json, else the table `rows` prints. */
static int show(struct ctl *x, const char *path, void (*rows)(json_t *v))
{
    json_t *v;
    int rc = get_json(x, path, &v);
    if (rc != 0)
        return rc;
    if (x->json)
        print_json(v);
    else
        rows(v);
    json_decref(v);
    return 0;
}

static char *join_tags(json_t *tags)
{
    size_t i, len = 0;
    json_t *t;
    json_array_foreach(tags, i, t) len += strlen(json_string_value(t) ?: "") + 1;
    char *s = calloc(1, len + 2), *end = s;
    if (s == NULL)
        return NULL;
    json_array_foreach(tags, i, t)
    {
        const char *tag = json_string_value(t) ?: "";
        size_t n = strlen(tag);
        if (i)
            *end++ = ',';
        memcpy(end, tag, n + 1); /* appended where the last ended: linear */
        end += n;
    }
    if (len == 0)
        strcpy(s, "-");
    return s;
}

static int encode(const char *in, char *out, size_t len)
{
    if (reg_url_encode(in, out, len) != 0)
        return usage_error("argument too long: %.40s...", in);
    return 0;
}

/* ---- verbs -------------------------------------------------------------- */

static void service_rows(json_t *v)
{
    printf("%-32s %s\n", "NAME", "TAGS");
    const char *name;
    json_t *tags;
    json_object_foreach(v, name, tags)
    {
        char *t = join_tags(tags);
        printf("%-32s %s\n", name, t ? t : "");
        free(t);
    }
}

static int cmd_services(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("services takes no arguments");
    return show(x, "/v1/catalog/services", service_rows);
}

static const char *aggregate(json_t *checks)
{
    const char *st = "passing";
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *s = json_string_value(json_object_get(c, "Status"));
        if (s && strcmp(s, "critical") == 0)
            return "critical";
        if (s && strcmp(s, "warning") == 0)
            st = "warning";
    }
    return st;
}

static void instance_rows(json_t *v)
{
    printf("%-28s %-20s %-6s %-9s %s\n", "ID", "ADDRESS", "PORT", "STATUS", "TAGS");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        json_t *svc = json_object_get(e, "Service");
        const char *addr = json_string_value(json_object_get(svc, "Address"));
        if (addr == NULL || *addr == '\0')
            addr = json_string_value(json_object_get(json_object_get(e, "Node"), "Address"));
        char *t = join_tags(json_object_get(svc, "Tags"));
        printf("%-28s %-20s %-6lld %-9s %s\n", json_string_value(json_object_get(svc, "ID")) ?: "",
               addr ? addr : "", (long long)json_integer_value(json_object_get(svc, "Port")),
               aggregate(json_object_get(e, "Checks")), t ? t : "");
        free(t);
    }
}

static int cmd_instances(struct ctl *x)
{
    const char *name = NULL, *tag = NULL;
    bool passing = false;
    for (int i = 0; i < x->argc; i++) {
        if (strcmp(x->argv[i], "--passing") == 0)
            passing = true;
        else if (strcmp(x->argv[i], "--tag") == 0 && i + 1 < x->argc)
            tag = x->argv[++i];
        else if (x->argv[i][0] == '-')
            return usage_error("instances: unknown option %s", x->argv[i]);
        else if (name == NULL)
            name = x->argv[i];
        else
            return usage_error("instances: one service name, please");
    }
    if (name == NULL)
        return usage_error("instances: which service? (registryctl instances NAME)");
    char enc[600], etag[600] = "", path[1400];
    if (encode(name, enc, sizeof(enc)) || (tag && encode(tag, etag, sizeof(etag))))
        return EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/health/service/%s%s%s%s", enc,
             passing ? "?passing=1" : "", tag ? (passing ? "&tag=" : "?tag=") : "", etag);
    return show(x, path, instance_rows);
}

static void check_rows(json_t *v)
{
    printf("%-32s %-20s %-9s %-8s %s\n", "CHECK", "SERVICE", "STATUS", "CHANGED", "OUTPUT");
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c)
    {
        const char *out = json_string_value(json_object_get(c, "Output")) ?: "";
        size_t olen = strcspn(out, "\r\n");
        printf("%-32s %-20s %-9s %-8lld %.*s%s\n",
               json_string_value(json_object_get(c, "CheckID")) ?: "",
               json_string_value(json_object_get(c, "ServiceID")) ?: "",
               json_string_value(json_object_get(c, "Status")) ?: "",
               (long long)json_integer_value(json_object_get(c, "ModifyIndex")),
               (int)(olen > 60 ? 60 : olen), out, olen > 60 || out[olen] ? "..." : "");
    }
}

static int cmd_checks(struct ctl *x)
{
    if (x->argc > 1)
        return usage_error("checks: at most one service name");
    char path[700], enc[600];
    if (x->argc == 1) {
        if (encode(x->argv[0], enc, sizeof(enc)))
            return EXIT_USAGE;
        snprintf(path, sizeof(path), "/v1/health/checks/%s", enc);
    } else {
        snprintf(path, sizeof(path), "/v1/health/state/any");
    }
    return show(x, path, check_rows);
}

/* The whole of path ("-": stdin), NUL-terminated, at most max bytes. NULL
 * with errno set (EFBIG beyond max, ENOMEM, or what fopen/fread said). */
static char *read_file(const char *path, size_t *len, size_t max)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n > max) {
            err = EFBIG;
        } else if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                err = ENOMEM;
            else
                buf = nb;
        }
        if (err) {
            free(buf);
            buf = NULL;
        }
    }
    if (buf && ferror(f)) {
        err = errno ? errno : EIO;
        free(buf);
        buf = NULL;
    }
    if (f != stdin)
        fclose(f);
    if (buf == NULL) {
        errno = err;
        return NULL;
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* What `register` was told: a file, or the pieces of a body. */
struct register_args {
    const char *file, *interval;
    json_t *body, *check, *tags, *meta;
};

/* One flag of `register` and its value; 0, or -1 after a usage error. */
static int register_flag(struct register_args *g, const char *a, const char *v)
{
    static const struct {
        const char *flag, *key;
        bool check; /* a key of the body's Check, else of the body */
    } keys[] = {{"--name", "Name", false}, {"--id", "ID", false},   {"--address", "Address", false},
                {"--ttl", "TTL", true},    {"--http", "HTTP", true}, {"--tcp", "TCP", true}};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        if (strcmp(a, keys[k].flag) == 0) {
            json_object_set_new(keys[k].check ? g->check : g->body, keys[k].key, json_string(v));
            return 0;
        }
    if (strcmp(a, "--port") == 0 || strcmp(a, "--weight") == 0) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        bool port = strcmp(a, "--port") == 0;
        if (errno || *end || end == v || n < 1 || n > (port ? 65535 : 1000000)) {
            usage_error("register: %s \"%s\" is not a number in %s", a, v,
                        port ? "1..65535" : "1..1000000");
            return -1;
        }
        if (port)
            json_object_set_new(g->body, "Port", json_integer(n));
        else
            json_object_set_new(g->body, "Weights",
                                json_pack("{s:I, s:i}", "Passing", (json_int_t)n, "Warning", 1));
    } else if (strcmp(a, "--tag") == 0) {
        json_array_append_new(g->tags, json_string(v));
    } else if (strcmp(a, "--meta") == 0) {
        const char *eq = strchr(v, '=');
        if (eq == NULL || eq == v) {
            usage_error("register: --meta wants KEY=VALUE, not \"%s\"", v);
            return -1;
        }
        json_object_set_new(g->meta, strndupa(v, (size_t)(eq - v)), json_string(eq + 1));
    } else if (strcmp(a, "--interval") == 0) {
        g->interval = v;
    } else {
        usage_error("register: unknown option %s", a);
        return -1;
    }
    return 0;
}

/* The request body: the file's text, or one built from the flags
 * (malloc'd), or NULL after an error (reported). */
static char *register_body(struct register_args *g, int *rc)
{
    if (g->file) {
        if (json_object_size(g->body) || json_array_size(g->tags) || json_object_size(g->check)) {
            usage_error("register: -f FILE or flags, not both");
            return NULL;
        }
        size_t len;
        char *text = read_file(g->file, &len, 16u << 20);
        if (text == NULL)
            fprintf(stderr, "registryctl: cannot read %s: %s\n", g->file, strerror(errno));
        return text;
    }
    if (json_object_get(g->body, "Name") == NULL) {
        usage_error("register: --name is required");
        return NULL;
    }
    if (json_array_size(g->tags))
        json_object_set(g->body, "Tags", g->tags);
    if (json_object_size(g->meta))
        json_object_set(g->body, "Meta", g->meta);
    if (g->interval)
        json_object_set_new(g->check, "Interval", json_string(g->interval));
    if (json_object_size(g->check))
        json_object_set(g->body, "Check", g->check);
    char *text = json_dumps(g->body, JSON_COMPACT);
    if (text == NULL)
        *rc = EXIT_FAILURE;
    return text;
}

static int cmd_register(struct ctl *x)
{
    struct register_args g = {.body = json_object(), .check = json_object(),
                              .tags = json_array(), .meta = json_object()};
    int rc = EXIT_USAGE;
    char *text = NULL;
    for (int i = 0; i < x->argc; i += 2) {
        const char *a = x->argv[i], *v = i + 1 < x->argc ? x->argv[i + 1] : NULL;
        if (v == NULL) {
            bool file_flag = strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0;
            usage_error(file_flag ? "register: %s needs a file"
                                  : "register: %s needs a value (or is unknown)",
                        a);
            goto out;
        }
        if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0)
            g.file = v;
        else if (register_flag(&g, a, v) != 0)
            goto out;
    }
    text = register_body(&g, &rc);
    if (text != NULL)
        rc = put(x, "/v1/agent/service/register", text);
out:
    free(text);
    json_decref(g.body);
    json_decref(g.check);
    json_decref(g.tags);
    json_decref(g.meta);
    return rc;
}

/* VERB A B [--OPTION TEXT]: the shape of `check` and `maint`. */
static int two_args_one_option(struct ctl *x, const char *verb, const char *option,
                               const char **a, const char **b, const char **opt)
{
    *a = *b = *opt = NULL;
    for (int i = 0; i < x->argc; i++) {
        if (strcmp(x->argv[i], option) == 0 && i + 1 < x->argc)
            *opt = x->argv[++i];
        else if (x->argv[i][0] == '-')
            return usage_error("%s: unknown option %s", verb, x->argv[i]);
        else if (*a == NULL)
            *a = x->argv[i];
        else if (*b == NULL)
            *b = x->argv[i];
        else
            return usage_error("%s: too many arguments", verb);
    }
    return 0;
}

/* PUT /v1/agent/PREFIX/ID SEP... with id and an optional text parameter encoded. */
static int put_encoded(struct ctl *x, const char *prefix, const char *id, const char *query,
                       const char *param, const char *text)
{
    char enc[600], etext[1800] = "", path[2700];
    if (encode(id, enc, sizeof(enc)) || (text && encode(text, etext, sizeof(etext))))
        return EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/agent/%s/%s%s%s%s", prefix, enc, query,
             text ? param : "", etext);
    return put(x, path, NULL);
}

static int cmd_deregister(struct ctl *x)
{
    if (x->argc != 1)
        return usage_error("deregister: one service ID, please");
    return put_encoded(x, "service/deregister", x->argv[0], "", "", NULL);
}

static int cmd_check(struct ctl *x)
{
    const char *verb, *id, *note;
    if (two_args_one_option(x, "check", "--note", &verb, &id, &note) != 0)
        return EXIT_USAGE;
    if (verb == NULL || id == NULL ||
        (strcmp(verb, "pass") && strcmp(verb, "warn") && strcmp(verb, "fail")))
        return usage_error("check: use check pass|warn|fail CHECK_ID [--note TEXT]");
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "check/%s", verb);
    return put_encoded(x, prefix, id, "", "?note=", note);
}

static int cmd_maint(struct ctl *x)
{
    const char *id, *mode, *reason;
    if (two_args_one_option(x, "maint", "--reason", &id, &mode, &reason) != 0)
        return EXIT_USAGE;
    if (id == NULL || mode == NULL || (strcmp(mode, "on") && strcmp(mode, "off")))
        return usage_error("maint: use maint SERVICE_ID on|off [--reason TEXT]");
    return put_encoded(x, "service/maintenance", id,
                       strcmp(mode, "on") == 0 ? "?enable=true" : "?enable=false", "&reason=",
                       reason);
}

static int cmd_leader(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("leader takes no arguments");
    json_t *v;
    int rc = get_json(x, "/v1/status/leader", &v);
    if (rc != 0)
        return rc;
    if (x->json)
        print_json(v);
    else
        printf("%s\n", json_string_value(v) && *json_string_value(v) ? json_string_value(v)
                                                                      : "(no leader)");
    json_decref(v);
    return 0;
}

static int cmd_pick(struct ctl *x)
{
    const char *name = NULL, *strategy = "round_robin", *tag = NULL;
    long count = 1;
    for (int i = 0; i < x->argc; i++) {
        const char *a = x->argv[i];
        if (strcmp(a, "--strategy") == 0 && i + 1 < x->argc)
            strategy = x->argv[++i];
        else if (strcmp(a, "--tag") == 0 && i + 1 < x->argc)
            tag = x->argv[++i];
        else if (strcmp(a, "-n") == 0 && i + 1 < x->argc) {
            char *end;
            count = strtol(x->argv[++i], &end, 10);
            if (*end || count < 1 || count > 10000000)
                return usage_error("pick: -n wants a number from 1 to 10000000");
        } else if (a[0] == '-')
            return usage_error("pick: unknown option %s", a);
        else if (name == NULL)
            name = a;
        else
            return usage_error("pick: one service name, please");
    }
    struct reg_balancer_options o;
    enum reg_strategy s;
    if (name == NULL)
        return usage_error("pick: which service? (registryctl pick NAME)");
    if (reg_strategy_parse(strategy, &s) != 0)
        return usage_error("pick: --strategy is round_robin, weighted, least_connections "
                           "or latency");
    struct reg_instance *list;
    size_t n;
    int rc = reg_health_service(x->client, name, tag, true, 0, NULL, &list, &n, NULL);
    if (rc != 0)
        return server_error(x, rc);
    if (n == 0) {
        reg_instances_free(list, n);
        fprintf(stderr, "registryctl: no passing instance of %s\n", name);
        return EXIT_SERVER;
    }
    struct reg_balancer *b;
    reg_balancer_defaults(&o, s);
    if (reg_balancer_new(&o, &b) != 0 || reg_balancer_update(b, list, n) != 0) {
        reg_instances_free(list, n);
        fprintf(stderr, "registryctl: out of memory\n");
        return EXIT_SERVER;
    }
    long *hits = calloc(n, sizeof(long));
    struct reg_endpoint e;
    for (long k = 0; hits && k < count && reg_balancer_pick(b, &e) == 0; k++) {
        if (count == 1) {
            if (x->json)
                print_json_line(json_pack("{s:s, s:s, s:i}", "ID", e.id, "Address", e.address,
                                          "Port", e.port));
            else
                printf("%s %s:%d\n", e.id, e.address, e.port);
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(list[i].id, e.id) == 0)
                hits[i]++;
    }
    if (count > 1 && hits) {
        json_t *arr = x->json ? json_array() : NULL;
        if (!x->json)
            printf("%-28s %-24s %-8s %s\n", "ID", "ADDRESS", "PICKS", "SHARE");
        for (size_t i = 0; i < n; i++) {
            if (x->json)
                json_array_append_new(arr, json_pack("{s:s, s:I}", "ID", list[i].id, "Picks",
                                                     (json_int_t)hits[i]));
            else
                printf("%-28s %-24s %-8ld %.1f%%\n", list[i].id, list[i].address, hits[i],
                       100.0 * (double)hits[i] / (double)count);
        }
        if (x->json)
            print_json_line(arr);
    }
    free(hits);
    reg_balancer_free(b);
    reg_instances_free(list, n);
    return 0;
}

/* ---- call: an HTTP request through discovery and the resilience layer ---- */

/* "250ms", "2s", "1m" or a plain number of milliseconds -> ms; -1 if bad. */
static long parse_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        ;
    else if (strcmp(end, "s") == 0)
        v *= 1000;
    else if (strcmp(end, "m") == 0)
        v *= 60000;
    else
        return -1;
    return v >= 1 && v <= 86400000 ? (long)v : -1;
}

#define CALL_MAX_HEADERS 32

/* What every thread of one `call` shares; the counters are atomics. */
struct call_job {
    struct reg_policy *policy;
    struct http_request req;
    const struct reg_instance *list;
    size_t n;
    long total, next;     /* requests to send; next to take (atomic) */
    uint64_t *latency_us; /* per request */
    int *result;          /* per request: 0, a REG_E* code, or the HTTP status >= 400 */
    unsigned *attempts;   /* per request */
    long *inst_attempts, *inst_failures; /* per instance (atomic) */
    struct http_answer last;             /* single request: the answer that ended it */
    int last_rc;
    char last_where[400];
};

struct call_attempt_ctx {
    struct call_job *job;
    struct http_answer ans;
    int rc;
    char where[400];
};

static enum reg_outcome call_attempt(void *arg, const struct reg_endpoint *e, uint64_t timeout_ms,
                                     uint64_t remaining_ms)
{
    (void)remaining_ms;
    struct call_attempt_ctx *a = arg;
    struct call_job *j = a->job;
    free(a->ans.body);
    a->rc = http_call(e->address, e->port, &j->req, timeout_ms, &a->ans);
    snprintf(a->where, sizeof(a->where), "%s (%s:%d)", e->id, e->address, e->port);
    enum reg_outcome o = http_verdict(j->req.method, a->rc, &a->ans);
    for (size_t i = 0; i < j->n; i++) {
        if (strcmp(j->list[i].id, e->id) == 0) {
            __atomic_add_fetch(&j->inst_attempts[i], 1, __ATOMIC_RELAXED);
            if (o != REG_OUTCOME_SUCCESS)
                __atomic_add_fetch(&j->inst_failures[i], 1, __ATOMIC_RELAXED);
        }
    }
    return o;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void *call_worker(void *arg)
{
    struct call_job *j = arg;
    for (;;) {
        long k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (k >= j->total)
            break;
        struct call_attempt_ctx a = {.job = j};
        uint64_t t0 = wall_us();
        int rc = reg_call(j->policy, call_attempt, &a, &j->attempts[k]);
        j->latency_us[k] = wall_us() - t0;
        j->result[k] = rc == 0 && a.ans.status >= 400 ? a.ans.status : rc;
        if (j->total == 1) { /* keep the answer to print it */
            j->last = a.ans;
            j->last_rc = a.rc;
            memcpy(j->last_where, a.where, sizeof(a.where));
        } else {
            free(a.ans.body);
        }
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The summary of -n/-c: outcomes by reason, attempts, latency, instances. */
static void call_summary(struct ctl *x, struct call_job *j, double seconds)
{
    long ok = 0, by[7] = {0}; /* deadline, budget, breaker, bulkhead, failed, http, other */
    uint64_t attempts = 0;
    for (long k = 0; k < j->total; k++) {
        int r = j->result[k];
        attempts += j->attempts[k];
        if (r == 0)
            ok++;
        else if (r == REG_EDEADLINE)
            by[0]++;
        else if (r == REG_EBUDGET)
            by[1]++;
        else if (r == REG_EOPEN)
            by[2]++;
        else if (r == REG_EBULKHEAD)
            by[3]++;
        else if (r == REG_EFAILED)
            by[4]++;
        else if (r >= 400)
            by[5]++;
        else
            by[6]++;
    }
    qsort(j->latency_us, (size_t)j->total, sizeof(uint64_t), cmp_u64);
    double p50 = j->latency_us[(j->total - 1) / 2] / 1000.0;
    double p99 = j->latency_us[(j->total * 99 + 99) / 100 - 1] / 1000.0;
    struct reg_policy_stats st;
    reg_policy_stats(j->policy, &st);
    static const char *const reason[7] = {"deadline", "budget",     "breaker_open", "bulkhead",
                                          "failed",   "http_error", "other"};
    if (x->json) {
        json_t *o = json_object(), *f = json_object(), *inst = json_array();
        for (int i = 0; i < 7; i++)
            json_object_set_new(f, reason[i], json_integer(by[i]));
        for (size_t i = 0; i < j->n; i++) {
            struct reg_breaker_stats bs = {0};
            reg_policy_instance_stats(j->policy, j->list[i].id, &bs);
            json_array_append_new(inst, json_pack("{s:s, s:s, s:i, s:I, s:I, s:s, s:I}", "ID",
                                                  j->list[i].id, "Address", j->list[i].address,
                                                  "Port", j->list[i].port, "Attempts",
                                                  (json_int_t)j->inst_attempts[i], "Failures",
                                                  (json_int_t)j->inst_failures[i], "Breaker",
                                                  reg_breaker_state_name(bs.state), "BreakerOpened",
                                                  (json_int_t)bs.opened));
        }
        json_object_set_new(o, "Requests", json_integer(j->total));
        json_object_set_new(o, "Succeeded", json_integer(ok));
        json_object_set_new(o, "Failed", f);
        json_object_set_new(o, "Attempts", json_integer((json_int_t)attempts));
        json_object_set_new(o, "AttemptsPerCall", json_real((double)attempts / j->total));
        json_object_set_new(o, "P50Ms", json_real(p50));
        json_object_set_new(o, "P99Ms", json_real(p99));
        json_object_set_new(o, "Seconds", json_real(seconds));
        json_object_set_new(o, "BudgetExhausted", json_integer((json_int_t)st.budget_exhausted));
        json_object_set_new(o, "InstanceBreakerOpened",
                            json_integer((json_int_t)st.instance_opened));
        json_object_set_new(o, "InstanceBreakerClosed",
                            json_integer((json_int_t)st.instance_closed));
        json_object_set_new(o, "ServiceBreakerOpened", json_integer((json_int_t)st.service_opened));
        json_object_set_new(o, "Instances", inst);
        print_json(o);
        json_decref(o);
        return;
    }
    printf("requests     %ld in %.2f s (%.0f/s)\n", j->total, seconds, j->total / seconds);
    printf("succeeded    %ld (%.2f%%)\n", ok, 100.0 * ok / j->total);
    printf("failed       %ld", j->total - ok);
    for (int i = 0; i < 7; i++)
        if (by[i])
            printf(" %s=%ld", reason[i], by[i]);
    printf("\nattempts     %llu (%.2f per request), budget exhausted %llu\n",
           (unsigned long long)attempts, (double)attempts / j->total,
           (unsigned long long)st.budget_exhausted);
    printf("latency      p50 %.1f ms, p99 %.1f ms\n", p50, p99);
    printf("breakers     instance opened %llu closed %llu, service opened %llu\n\n",
           (unsigned long long)st.instance_opened, (unsigned long long)st.instance_closed,
           (unsigned long long)st.service_opened);
    printf("%-28s %-22s %-9s %-9s %s\n", "INSTANCE", "ADDRESS", "ATTEMPTS", "FAILURES", "BREAKER");
    for (size_t i = 0; i < j->n; i++) {
        struct reg_breaker_stats bs = {0};
        char addr[300];
        reg_policy_instance_stats(j->policy, j->list[i].id, &bs);
        snprintf(addr, sizeof(addr), "%s:%d", j->list[i].address, j->list[i].port);
        printf("%-28s %-22s %-9ld %-9ld %s (opened %llu)\n", j->list[i].id, addr,
               j->inst_attempts[i], j->inst_failures[i], reg_breaker_state_name(bs.state),
               (unsigned long long)bs.opened);
    }
}

static int cmd_call(struct ctl *x)
{
    const char *name = NULL, *path = "/", *method = NULL, *data = NULL, *strategy = "round_robin",
               *tag = NULL;
    const char *headers[CALL_MAX_HEADERS];
    size_t nheaders = 0;
    long retries = 2, timeout = 1000, deadline = 5000, total = 1, conc = 1;
    bool have_path = false;
    for (int i = 0; i < x->argc; i++) {
        const char *a = x->argv[i], *v = i + 1 < x->argc ? x->argv[i + 1] : NULL;
        bool takes = a[0] == '-' && strcmp(a, "-") != 0;
        if (takes && v == NULL)
            return usage_error("call: %s needs a value (or is unknown)", a);
        if (strcmp(a, "-X") == 0)
            method = v;
        else if (strcmp(a, "-d") == 0)
            data = v;
        else if (strcmp(a, "-H") == 0) {
            if (nheaders == CALL_MAX_HEADERS || strchr(v, ':') == NULL || strpbrk(v, "\r\n") ||
                *v == ' ' || *v == '\t') /* a leading space continues the line before */
                return usage_error("call: -H wants \"Name: value\" (at most %d)", CALL_MAX_HEADERS);
            /* the request's framing is registryctl's own: a second Host or
             * a Content-Length against the body would make it ambiguous */
            static const char *const framing[] = {"Host", "Content-Length", "Transfer-Encoding",
                                                  "Connection"};
            size_t nl = strcspn(v, ":");
            while (nl > 0 && (v[nl - 1] == ' ' || v[nl - 1] == '\t'))
                nl--;
            for (size_t f = 0; f < sizeof(framing) / sizeof(framing[0]); f++)
                if (strlen(framing[f]) == nl && strncasecmp(v, framing[f], nl) == 0)
                    return usage_error("call: -H %s: registryctl sets that header itself",
                                       framing[f]);
            headers[nheaders++] = v;
        } else if (strcmp(a, "--strategy") == 0)
            strategy = v;
        else if (strcmp(a, "--tag") == 0)
            tag = v;
        else if (strcmp(a, "--retries") == 0) {
            char *end;
            retries = strtol(v, &end, 10);
            if (*end || *v == '\0' || retries < 0 || retries > 15)
                return usage_error("call: --retries wants a number from 0 to 15");
        } else if (strcmp(a, "--timeout") == 0) {
            if ((timeout = parse_ms(v)) < 0)
                return usage_error("call: --timeout wants a duration such as 500ms or 2s");
        } else if (strcmp(a, "--deadline") == 0) {
            if ((deadline = parse_ms(v)) < 0)
                return usage_error("call: --deadline wants a duration such as 5s");
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "-c") == 0) {
            char *end;
            long k = strtol(v, &end, 10);
            if (*end || *v == '\0' || k < 1 || k > (a[1] == 'n' ? 10000000 : 1000))
                return usage_error("call: %s wants a number from 1 to %s", a,
                                   a[1] == 'n' ? "10000000" : "1000");
            *(a[1] == 'n' ? &total : &conc) = k;
        } else if (takes)
            return usage_error("call: unknown option %s", a);
        else {
            if (name == NULL) {
                name = a;
            } else if (!have_path) {
                path = a;
                have_path = true;
            } else
                return usage_error("call: one service and one path, please");
            continue;
        }
        i++;
    }
    if (name == NULL)
        return usage_error("call: which service? (registryctl call SERVICE [PATH])");
    if (path[0] != '/' || strpbrk(path, " \r\n"))
        return usage_error("call: the path must start with / and hold no spaces");
    if (method == NULL)
        method = data ? "POST" : "GET";
    if (method[0] == '\0' || strpbrk(method, " \r\n/:"))
        return usage_error("call: -X wants a method such as GET or POST");
    enum reg_strategy s;
    if (reg_strategy_parse(strategy, &s) != 0)
        return usage_error("call: --strategy is round_robin, weighted, least_connections "
                           "or latency");
    if (conc > total)
        conc = total;
    struct reg_instance *list;
    size_t n;
    int rc = reg_health_service(x->client, name, tag, true, 0, NULL, &list, &n, NULL);
    if (rc != 0)
        return server_error(x, rc);
    if (n == 0) {
        reg_instances_free(list, n);
        fprintf(stderr, "registryctl: no passing instance of %s\n", name);
        return EXIT_SERVER;
    }
    struct reg_balancer_options bo;
    struct reg_policy_options po;
    struct reg_balancer *b = NULL;
    struct reg_policy *p = NULL;
    reg_balancer_defaults(&bo, s);
    bo.eject_after = 0; /* the instance breakers eject, and take instances back on trial */
    reg_policy_defaults(&po);
    po.max_attempts = (unsigned)retries + 1;
    po.attempt_timeout_ms = (unsigned)timeout;
    po.deadline_ms = (unsigned)deadline;
    struct call_job j = {.req = {method, path, headers, nheaders, data, data ? strlen(data) : 0},
                         .list = list,
                         .n = n,
                         .total = total};
    j.latency_us = calloc((size_t)total, sizeof(uint64_t));
    j.result = calloc((size_t)total, sizeof(int));
    j.attempts = calloc((size_t)total, sizeof(unsigned));
    j.inst_attempts = calloc(n, sizeof(long));
    j.inst_failures = calloc(n, sizeof(long));
    pthread_t *threads = calloc((size_t)conc, sizeof(pthread_t));
    int ret = EXIT_SERVER;
    if (!j.latency_us || !j.result || !j.attempts || !j.inst_attempts || !j.inst_failures ||
        !threads || reg_balancer_new(&bo, &b) != 0 || reg_balancer_update(b, list, n) != 0 ||
        reg_policy_new(&po, b, &p) != 0) {
        fprintf(stderr, "registryctl: out of memory\n");
        goto out;
    }
    j.policy = p;
    uint64_t t0 = wall_us();
    long started = 0;
    for (long i = 0; i < conc; i++) {
        if (pthread_create(&threads[i], NULL, call_worker, &j) != 0)
            break;
        started++;
    }
    if (started == 0)
        call_worker(&j);
    for (long i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    double seconds = (wall_us() - t0) / 1e6;
    long ok = 0;
    for (long k = 0; k < total; k++)
        ok += j.result[k] == 0;
    ret = ok == total ? 0 : EXIT_SERVER;
    if (total > 1) {
        call_summary(x, &j, seconds);
    } else if (x->json) {
        size_t blen = 0;
        char *body = utf8_text(j.last.body ? j.last.body : "", j.last.body_len, &blen);
        json_t *o = body ? json_pack("{s:i, s:s, s:i, s:f, s:s, s:s%}", "Status", j.last.status,
                                     "Instance", j.last_where, "Attempts", (int)j.attempts[0],
                                     "LatencyMs", j.latency_us[0] / 1000.0, "Result",
                                     j.result[0] > 0 ? "http_error" : reg_strerror(j.result[0]),
                                     "Body", body, blen)
                         : NULL;
        free(body);
        if (o) {
            print_json(o);
        } else {
            fprintf(stderr, "registryctl: out of memory\n");
            ret = EXIT_SERVER;
        }
        json_decref(o);
    } else if (j.result[0] == 0 || j.last.status >= 400) {
        if (j.last.body)
            fwrite(j.last.body, 1, j.last.body_len, stdout);
        if (j.last.status >= 400)
            fprintf(stderr, "registryctl: %s answered HTTP %d\n", j.last_where, j.last.status);
    } else {
        char last[512] = "";
        if (j.attempts[0] > 0)
            snprintf(last, sizeof(last), "; last attempt: %s from %s",
                     j.last.status ? "HTTP error" : http_strerror(j.last_rc), j.last_where);
        if (j.last.status)
            snprintf(last, sizeof(last), "; last attempt: HTTP %d from %s", j.last.status,
                     j.last_where);
        fprintf(stderr, "registryctl: call to %s failed: %s after %u attempt%s%s\n", name,
                reg_strerror(j.result[0]), j.attempts[0], j.attempts[0] == 1 ? "" : "s", last);
    }
out:
    free(j.last.body);
    free(threads);
    free(j.latency_us);
    free(j.result);
    free(j.attempts);
    free(j.inst_attempts);
    free(j.inst_failures);
    reg_policy_free(p);
    reg_balancer_free(b);
    reg_instances_free(list, n);
    return ret;
}

static volatile sig_atomic_t watch_stop;

static void on_watch_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

static void print_change(void *arg, const struct reg_instance *list, size_t n, bool stale)
{
    struct ctl *x = arg;
    time_t now = time(NULL);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
    if (x->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:s}", "ID", list[i].id,
                                                 "Address", list[i].address, "Port",
                                                 list[i].port, "Status", list[i].status));
        print_json_line(json_pack("{s:s, s:b, s:o}", "Time", stamp, "Stale", stale,
                                  "Instances", arr));
    } else {
        printf("%s %zu instance%s%s:", stamp, n, n == 1 ? "" : "s",
               stale ? " (stale: no server reachable, keeping the last list)" : "");
        for (size_t i = 0; i < n; i++)
            printf(" %s@%s:%d", list[i].id, list[i].address, list[i].port);
        printf("\n");
    }
    fflush(stdout);
}

static int cmd_watch(struct ctl *x)
{
    const char *name = NULL, *tag = NULL;
    bool all = false;
    for (int i = 0; i < x->argc; i++) {
        if (strcmp(x->argv[i], "--tag") == 0 && i + 1 < x->argc)
            tag = x->argv[++i];
        else if (strcmp(x->argv[i], "--all") == 0)
            all = true;
        else if (x->argv[i][0] == '-')
            return usage_error("watch: unknown option %s", x->argv[i]);
        else if (name == NULL)
            name = x->argv[i];
        else
            return usage_error("watch: one service name, please");
    }
    if (name == NULL)
        return usage_error("watch: which service? (registryctl watch NAME)");
    struct sigaction sa = {.sa_handler = on_watch_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct reg_watch *w;
    reg_client_set_timeout(x->client, 2000);
    if (reg_watch_new(x->client, name, tag, !all, "30s", REG_WATCH_THREAD, print_change, x,
                      &w) != 0) {
        fprintf(stderr, "registryctl: cannot start the watcher\n");
        return EXIT_SERVER;
    }
    while (!watch_stop)
        usleep(100 * 1000); /* the signal may land on any thread: poll the flag */
    reg_watch_free(w);
    return 0;
}

/* Progress of a snapshot transfer on stderr, for people: only when stderr
 * is a terminal and not with --json; redrawn at most 4 times a second, and
 * once at the end. */
struct progress {
    const char *what; /* "saving", "restoring" */
    bool on, upload;
    int64_t start_ms, last_ms, moved_ms; /* moved_ms: when done last grew */
    uint64_t done, total;
    FILE *f; /* the file being written or read */
    int err; /* errno of a failed read or write */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *human_bytes(double v, char *buf, size_t len)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

/* One line, redrawn in place: bytes done / total, percent, rate (over the
 * time the bytes took: a restore's apply afterwards does not dilute it). */
static void progress_draw(struct progress *p, bool force, bool final)
{
    int64_t now = mono_ms();
    if (!p->on || (!force && now - p->last_ms < 250))
        return;
    p->last_ms = now;
    double secs = (double)(p->moved_ms - p->start_ms) / 1000.0;
    char done[32], total[32], rate[32];
    human_bytes((double)p->done, done, sizeof(done));
    human_bytes(secs > 0.001 ? (double)p->done / secs : 0, rate, sizeof(rate));
    if (p->done == 0 && !p->upload && !final)
        fprintf(stderr, "\r%s snapshot: waiting for the server\033[K", p->what);
    else if (p->total)
        fprintf(stderr, "\r%s snapshot: %s / %s (%3d%%), %s/s%s\033[K", p->what, done,
                human_bytes((double)p->total, total, sizeof(total)),
                (int)(p->done * 100 / p->total), rate,
                p->upload && p->done == p->total && !final ? "; the server is applying it"
                                                           : "");
    else
        fprintf(stderr, "\r%s snapshot: %s, %s/s\033[K", p->what, done, rate);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

static void snapshot_progress(void *arg, uint64_t done, uint64_t total)
{
    struct progress *p = arg;
    p->done = done;
    p->total = total;
    p->moved_ms = mono_ms();
    progress_draw(p, p->upload && done == total, false);
}

static int snapshot_write(void *arg, const char *buf, size_t len)
{
    struct progress *p = arg;
    if (fwrite(buf, 1, len, p->f) == len)
        return 0;
    p->err = errno ? errno : EIO;
    return REG_EIO;
}

static int snapshot_read(void *arg, char *buf, size_t cap, size_t *got)
{
    struct progress *p = arg;
    *got = fread(buf, 1, cap, p->f);
    if (*got > 0)
        return 0;
    p->err = ferror(p->f) ? (errno ? errno : EIO) : EIO; /* shorter than it was */
    return REG_EIO;
}

/* save streams the answer into FILE.tmp, renamed to FILE once whole (a
 * failed save leaves no half file); restore streams the file as the body.
 * Neither holds the snapshot in memory. */
/* Whether the file saved is framed as registryd's snapshots are
 * (snapshot.h: "RSNAP002", version 2, a 40-byte header; "RSNAPEND" 20
 * bytes from the end). The checksum and records are the restore's to check;
 * this catches an empty, cut or foreign answer (it was "saved"). */
static bool snapshot_framed(const char *path, const char **why)
{
    FILE *f = fopen(path, "rb");
    unsigned char head[40], tail[20];
    long size = -1;
    bool ok = f != NULL && fread(head, 1, sizeof(head), f) == sizeof(head) &&
              fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 60 &&
              fseek(f, size - 20, SEEK_SET) == 0 && fread(tail, 1, sizeof(tail), f) == sizeof(tail);
    if (f)
        fclose(f);
    *why = !ok ? "shorter than a snapshot's header and trailer"
           : memcmp(head, "RSNAP002", 8) != 0 ? "not a registryd snapshot (no RSNAP002 header)"
           : head[8] != 2 || head[12] != 40   ? "a snapshot format this registryctl does not know"
           : memcmp(tail, "RSNAPEND", 8) != 0 ? "cut short (no RSNAPEND trailer)"
                                              : NULL;
    return *why == NULL;
}

static int cmd_snapshot(struct ctl *x)
{
    if (x->argc != 2 || (strcmp(x->argv[0], "save") && strcmp(x->argv[0], "restore")))
        return usage_error("snapshot: use snapshot save FILE | snapshot restore FILE");
    const char *file = x->argv[1];
    bool save = strcmp(x->argv[0], "save") == 0;
    /* a large registry takes a while to copy, check and apply: the usual
     * 10 s would give up on a restore that is going well */
    reg_client_set_timeout(x->client, 10 * 60 * 1000);
    struct progress p = {.what = save ? "saving" : "restoring",
                         .on = !x->json && isatty(STDERR_FILENO),
                         .start_ms = mono_ms()};
    p.last_ms = p.moved_ms = p.start_ms;
    p.upload = !save;
    struct reg__transfer t = {.progress = snapshot_progress, .arg = &p};
    char *tmp = NULL, *stdin_data = NULL;
    if (save) {
        if (asprintf(&tmp, "%s.tmp", file) < 0)
            return server_error(x, REG_ENOMEM);
        p.f = fopen(tmp, "wb");
        t.download = snapshot_write;
    } else if (strcmp(file, "-") == 0) { /* stdin: its length is known once read */
        size_t len;
        stdin_data = read_file(file, &len, SIZE_MAX / 2);
        p.f = stdin_data ? fmemopen(stdin_data, len ? len : 1, "rb") : NULL;
        t.upload = snapshot_read;
        t.upload_len = p.total = len;
    } else {
        struct stat st;
        p.f = fopen(file, "rb");
        if (p.f && (fstat(fileno(p.f), &st) != 0 || !S_ISREG(st.st_mode))) {
            fclose(p.f);
            p.f = NULL;
            errno = EINVAL;
        }
        if (p.f) {
            t.upload = snapshot_read;
            t.upload_len = p.total = (uint64_t)st.st_size;
        }
    }
    if (p.f == NULL) {
        fprintf(stderr, "registryctl: cannot %s %s: %s\n", save ? "write" : "read",
                save ? tmp : file, strerror(errno));
        free(tmp);
        free(stdin_data);
        return save ? EXIT_SERVER : EXIT_USAGE;
    }
    progress_draw(&p, true, false);
    int rc = reg__client_transfer(x->client, save ? "GET" : "PUT", "/v1/snapshot", &t, NULL);
    if (p.done > 0)
        progress_draw(&p, true, true);
    else if (p.on) /* nothing moved: clear the "waiting" line */
        fprintf(stderr, "\r\033[K");
    bool closed = fclose(p.f) == 0;
    free(stdin_data);
    if (save && rc == 0 && !closed)
        p.err = errno ? errno : EIO;
    const char *bad = NULL;
    if (save && rc == 0 && p.err == 0 && !snapshot_framed(tmp, &bad)) {
        unlink(tmp);
        free(tmp);
        fprintf(stderr, "registryctl: the server's answer is %s; %s was not written\n", bad, file);
        return EXIT_SERVER;
    }
    if (save && rc == 0 && p.err == 0 && rename(tmp, file) != 0)
        p.err = errno;
    if (save && (rc != 0 || p.err != 0))
        unlink(tmp);
    free(tmp);
    if (p.err != 0) {
        fprintf(stderr, "registryctl: cannot %s %s: %s\n", save ? "write" : "read", file,
                strerror(p.err));
        return EXIT_SERVER;
    }
    if (rc != 0)
        return server_error(x, rc);
    if (x->json)
        printf("{\"ok\": true, \"bytes\": %llu}\n", (unsigned long long)p.done);
    else if (save)
        printf("saved %llu bytes to %s\n", (unsigned long long)p.done, file);
    else
        printf("restored %s\n", file);
    return 0;
}

static void raft_rows(json_t *v)
{
    printf("%-12s %-22s %-9s %s\n", "ID", "ADDRESS", "STATE", "VOTER");
    size_t i;
    json_t *srv;
    json_array_foreach(json_object_get(v, "Servers"), i, srv)
    printf("%-12s %-22s %-9s %s\n", json_string_value(json_object_get(srv, "ID")) ?: "-",
           json_string_value(json_object_get(srv, "Address")) ?: "-",
           json_is_true(json_object_get(srv, "Leader")) ? "leader" : "follower",
           json_is_true(json_object_get(srv, "Voter")) ? "true" : "false");
}

static int cmd_raft(struct ctl *x)
{
    if (x->argc == 1 && strcmp(x->argv[0], "list") == 0)
        return show(x, "/v1/operator/raft/configuration?stale", raft_rows);
    if (x->argc == 2 && strcmp(x->argv[0], "remove") == 0) {
        char enc[600], path[700];
        if (encode(x->argv[1], enc, sizeof(enc)))
            return EXIT_USAGE;
        bool by_id = strspn(x->argv[1], "0123456789") == strlen(x->argv[1]);
        snprintf(path, sizeof(path), "/v1/operator/raft/peer?%s=%s", by_id ? "id" : "address",
                 enc);
        int rc = reg_client_request(x->client, "DELETE", path, NULL, 0, NULL, NULL, NULL, NULL);
        return rc != 0 ? server_error(x, rc) : 0;
    }
    if ((x->argc == 1 || x->argc == 2) && strcmp(x->argv[0], "transfer-leader") == 0) {
        char path[96] = "/v1/operator/raft/transfer-leader";
        if (x->argc == 2) {
            if (strspn(x->argv[1], "0123456789") != strlen(x->argv[1]) || !*x->argv[1] ||
                strlen(x->argv[1]) > 20)
                return usage_error("raft transfer-leader: ID is a raft server id (a number)");
            snprintf(path + strlen(path), sizeof(path) - strlen(path), "?id=%s", x->argv[1]);
        }
        int rc = reg_client_request(x->client, "POST", path, NULL, 0, NULL, NULL, NULL, NULL);
        if (rc != 0)
            return server_error(x, rc);
        if (x->json)
            printf("{\"ok\": true}\n");
        else
            printf("Leadership transferred\n");
        return 0;
    }
    return usage_error("raft: use raft list | raft remove ID|HOST:PORT | raft transfer-leader [ID]");
}

static int cmd_members(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("members takes no arguments");
    return show(x, "/v1/operator/raft/configuration?stale", raft_rows);
}

#define LEAVE_WAIT_MS 15000 /* the server stops within 10 s, left or not */

/* Leave the cluster and stop, as `consul leave`: PUT /v1/agent/leave, then
 * wait for the server to stop answering. */
static int cmd_leave(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("leave takes no arguments");
    /* with a list, another server would be the one to leave (or to be
     * watched for stopping) when the first does not answer */
    if (x->addrs != NULL && strchr(x->addrs, ',') != NULL)
        return usage_error("leave takes one server: --http-addr HOST:PORT, not a list");
    int rc = reg_client_request(x->client, "PUT", "/v1/agent/leave", NULL, 0, NULL, NULL, NULL,
                                NULL);
    if (rc != 0)
        return server_error(x, rc);
    /* each look at most a second: a server that accepts and never answers
     * must not stretch the wait */
    (void)reg_client_set_timeout(x->client, 1000);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (now = t0; (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 <
                   LEAVE_WAIT_MS;
         clock_gettime(CLOCK_MONOTONIC, &now)) {
        usleep(100 * 1000);
        if (reg_client_request(x->client, "GET", "/v1/status/leader", NULL, 0, NULL, NULL, NULL,
                               NULL) == REG_ECONNECT) {
            printf("Graceful leave complete: the server has stopped\n");
            return 0;
        }
    }
    fprintf(stderr, "registryctl: the server was asked to leave and has not stopped after %d s\n",
            LEAVE_WAIT_MS / 1000);
    return EXIT_SERVER;
}

static int cmd_metrics(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("metrics takes no arguments");
    if (x->json) {
        json_t *v;
        int rc = get_json(x, "/v1/agent/metrics", &v);
        if (rc == 0) {
            print_json(v);
            json_decref(v);
        }
        return rc;
    }
    char *body = NULL;
    size_t len = 0;
    int rc = reg_client_request(x->client, "GET", "/v1/agent/metrics?format=prometheus", NULL, 0,
                                NULL, &body, &len, NULL);
    if (rc != 0)
        return server_error(x, rc);
    fwrite(body, 1, len, stdout);
    free(body);
    return 0;
}

/* ---- acl ---------------------------------------------------------------- */

/* method path [JSON body] -> the JSON answer (new reference), or an exit
 * status with the reason printed. */
static int call_json(struct ctl *x, const char *method, const char *path, json_t *body,
                     json_t **out)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, *resp = NULL;
    size_t len = 0;
    *out = NULL; /* also when it fails: callers free it either way */
    if (body && text == NULL)
        return EXIT_SERVER;
    int rc = reg_client_request(x->client, method, path, text, text ? strlen(text) : 0, NULL, &resp,
                                &len, NULL);
    free(text);
    if (rc != 0)
        return server_error(x, rc);
    json_error_t jerr;
    *out = json_loadb(resp ? resp : "null", resp ? len : 4, JSON_DECODE_ANY, &jerr);
    free(resp);
    if (*out == NULL) {
        fprintf(stderr, "registryctl: unexpected answer from %s: %s\n", path, jerr.text);
        return EXIT_SERVER;
    }
    return 0;
}

static const char *jget(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void token_show(struct ctl *x, json_t *t)
{
    if (x->json) {
        print_json(t);
        return;
    }
    printf("AccessorID:   %s\n", jget(t, "AccessorID"));
    if (json_object_get(t, "SecretID"))
        printf("SecretID:     %s   (shown once: keep it now)\n", jget(t, "SecretID"));
    printf("Description:  %s\n", jget(t, "Description"));
    printf("Policies:    ");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(t, "Policies"), i, p)
        printf(" %s (%s)", jget(p, "Name"), jget(p, "ID"));
    printf("\n");
    /* what only some tokens have, as consul acl token read shows it */
    json_t *svc = json_object_get(t, "ServiceIdentities"),
           *node = json_object_get(t, "NodeIdentities");
    if (json_array_size(svc) > 0) {
        printf("Service Identities:");
        json_array_foreach(svc, i, p)
        {
            json_t *dcs = json_object_get(p, "Datacenters"), *dc;
            size_t j;
            printf(" %s (Datacenters:", jget(p, "ServiceName"));
            if (json_array_size(dcs) == 0)
                printf(" all");
            json_array_foreach(dcs, j, dc) printf(" %s", json_string_value(dc));
            printf(")");
        }
        printf("\n");
    }
    if (json_array_size(node) > 0) {
        printf("Node Identities:");
        json_array_foreach(node, i, p)
            printf(" %s (Datacenter: %s)", jget(p, "NodeName"), jget(p, "Datacenter"));
        printf("\n");
    }
    if (json_object_get(t, "ExpirationTime"))
        printf("Expires:      %s\n", jget(t, "ExpirationTime"));
}

static void policy_show(struct ctl *x, json_t *p)
{
    if (x->json) {
        print_json(p);
        return;
    }
    printf("ID:           %s\nName:         %s\nDescription:  %s\n", jget(p, "ID"), jget(p, "Name"),
           jget(p, "Description"));
    if (json_object_get(p, "Rules"))
        printf("Rules:\n%s\n", jget(p, "Rules"));
}

static int acl_path(char *out, size_t len, const char *prefix, const char *id)
{
    char enc[512];
    if (encode(id, enc, sizeof(enc)) != 0)
        return EXIT_USAGE;
    snprintf(out, len, "%s%s", prefix, enc);
    return 0;
}

/* GET or DELETE one policy or token (prefix + id). A delete says so, unless
 * --json, and leaves *out NULL; a read leaves the answer for the caller to
 * show. */
static int acl_one(struct ctl *x, const char *method, const char *prefix, const char *id,
                   const char *kind, json_t **out)
{
    char path[600];
    int rc = acl_path(path, sizeof(path), prefix, id);
    if (rc != 0)
        return rc;
    rc = call_json(x, method, path, NULL, out);
    if (rc == 0 && strcmp(method, "DELETE") == 0 && !x->json) {
        printf("deleted %s %s\n", kind, id);
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

static int acl_policy(struct ctl *x, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    json_t *out = NULL;
    int rc;
    if (strcmp(sub, "create") == 0) {
        const char *name = NULL, *desc = "", *rules = NULL, *file = NULL;
        for (int i = 1; i < argc; i++) {
            if (i + 1 >= argc)
                return usage_error("acl policy create: %s needs a value", argv[i]);
            if (strcmp(argv[i], "--name") == 0)
                name = argv[++i];
            else if (strcmp(argv[i], "--description") == 0)
                desc = argv[++i];
            else if (strcmp(argv[i], "--rules") == 0)
                rules = argv[++i];
            else if (strcmp(argv[i], "--rules-file") == 0)
                file = argv[++i];
            else
                return usage_error("acl policy create: unknown option %s", argv[i]);
        }
        if (name == NULL || (rules == NULL) == (file == NULL))
            return usage_error("acl policy create --name N (--rules TEXT | --rules-file FILE)");
        char *text = NULL;
        if (file) {
            size_t len;
            text = read_file(file, &len, 64u << 10); /* a policy holds at most 64 KiB of rules */
            if (text == NULL) {
                fprintf(stderr, "registryctl: cannot read %s: %s\n", file, strerror(errno));
                return EXIT_USAGE;
            }
        }
        json_t *body = json_pack("{s:s, s:s, s:s}", "Name", name, "Description", desc, "Rules",
                                 file ? text : rules);
        free(text);
        rc = call_json(x, "PUT", "/v1/acl/policy", body, &out);
        json_decref(body);
    } else if (strcmp(sub, "list") == 0 && argc == 1) {
        rc = call_json(x, "GET", "/v1/acl/policies", NULL, &out);
        if (rc == 0 && !x->json) {
            printf("%-36s  %-24s %s\n", "ID", "NAME", "DESCRIPTION");
            size_t i;
            json_t *p;
            json_array_foreach(out, i, p)
                printf("%-36s  %-24s %s\n", jget(p, "ID"), jget(p, "Name"), jget(p, "Description"));
            json_decref(out);
            return 0;
        }
    } else if (strcmp(sub, "read") == 0 &&
               (argc == 2 || (argc == 3 && !strcmp(argv[1], "--name")))) {
        rc = acl_one(x, "GET", argc == 3 ? "/v1/acl/policy/name/" : "/v1/acl/policy/",
                     argv[argc - 1], "policy", &out);
    } else if (strcmp(sub, "delete") == 0 && argc == 2) {
        rc = acl_one(x, "DELETE", "/v1/acl/policy/", argv[1], "policy", &out);
    } else {
        return usage_error("acl policy create|list|read|delete");
    }
    if (rc == 0 && out != NULL)
        policy_show(x, out);
    json_decref(out);
    return rc;
}

static int acl_token(struct ctl *x, int argc, char **argv)
{
    const char *sub = argc > 0 ? argv[0] : "";
    json_t *out = NULL;
    int rc;
    if (strcmp(sub, "create") == 0) {
        json_t *body = json_pack("{s:s, s:[]}", "Description", "", "Policies");
        for (int i = 1; i < argc; i++) {
            if (i + 1 >= argc) {
                json_decref(body);
                return usage_error("acl token create: %s needs a value", argv[i]);
            }
            if (strcmp(argv[i], "--description") == 0)
                json_object_set_new(body, "Description", json_string(argv[++i]));
            else if (strcmp(argv[i], "--policy") == 0)
                json_array_append_new(json_object_get(body, "Policies"),
                                      json_pack("{s:s}", "Name", argv[++i]));
            else if (strcmp(argv[i], "--policy-id") == 0)
                json_array_append_new(json_object_get(body, "Policies"),
                                      json_pack("{s:s}", "ID", argv[++i]));
            else {
                json_decref(body);
                return usage_error("acl token create: unknown option %s", argv[i]);
            }
        }
        rc = call_json(x, "PUT", "/v1/acl/token", body, &out);
        json_decref(body);
    } else if (strcmp(sub, "list") == 0 && argc == 1) {
        rc = call_json(x, "GET", "/v1/acl/tokens", NULL, &out);
        if (rc == 0 && !x->json) {
            printf("%-36s  %s\n", "ACCESSOR ID", "DESCRIPTION");
            size_t i;
            json_t *t;
            json_array_foreach(out, i, t)
                printf("%-36s  %s\n", jget(t, "AccessorID"), jget(t, "Description"));
            json_decref(out);
            return 0;
        }
    } else if (strcmp(sub, "self") == 0 && argc == 1) {
        rc = call_json(x, "GET", "/v1/acl/token/self", NULL, &out);
    } else if (strcmp(sub, "read") == 0 && argc == 2) {
        rc = acl_one(x, "GET", "/v1/acl/token/", argv[1], "token", &out);
    } else if (strcmp(sub, "delete") == 0 && argc == 2) {
        rc = acl_one(x, "DELETE", "/v1/acl/token/", argv[1], "token", &out);
    } else {
        return usage_error("acl token create|list|read|delete|self");
    }
    if (rc == 0 && out != NULL)
        token_show(x, out);
    json_decref(out);
    return rc;
}

static int cmd_acl(struct ctl *x)
{
    if (x->argc == 1 && strcmp(x->argv[0], "bootstrap") == 0) {
        json_t *out = NULL;
        int rc = call_json(x, "PUT", "/v1/acl/bootstrap", NULL, &out);
        if (rc == 0)
            token_show(x, out);
        json_decref(out);
        return rc;
    }
    if (x->argc >= 1 && strcmp(x->argv[0], "policy") == 0)
        return acl_policy(x, x->argc - 1, x->argv + 1);
    if (x->argc >= 1 && strcmp(x->argv[0], "token") == 0)
        return acl_token(x, x->argc - 1, x->argv + 1);
    return usage_error("acl bootstrap | acl policy ... | acl token ...");
}

static const struct verb {
    const char *name;
    int (*run)(struct ctl *x);
    const char *usage;
} verbs[] = {
    {"services", cmd_services, "services                          list services and their tags"},
    {"instances", cmd_instances,
     "instances NAME [--passing] [--tag T]  list a service's instances and health"},
    {"checks", cmd_checks,
     "checks [SERVICE]                  list checks: status, output, last change"},
    {"register", cmd_register,
     "register --name N [--id ID] [--address A] [--port P] [--tag T]... [--meta K=V]...\n"
     "         [--weight W] [--ttl D | --http URL --interval D | --tcp H:P --interval D]\n"
     "register -f FILE.json                register (Consul's body format; - for stdin)"},
    {"deregister", cmd_deregister, "deregister ID                     remove an instance"},
    {"check", cmd_check, "check pass|warn|fail CHECK_ID [--note TEXT]  update a TTL check"},
    {"maint", cmd_maint, "maint SERVICE_ID on|off [--reason TEXT]  maintenance mode"},
    {"leader", cmd_leader, "leader                            print the raft leader's address"},
    {"pick", cmd_pick,
     "pick NAME [--strategy S] [--tag T] [-n N]  choose instances as libregistry would\n"
     "         (S: round_robin, weighted, least_connections, latency); -n N: distribution"},
    {"call", cmd_call,
     "call SERVICE [PATH] [-X M] [-d DATA] [-H 'K: V']... [--strategy S] [--tag T]\n"
     "         [--retries N] [--timeout D] [--deadline D] [-n N] [-c C]\n"
     "                                   send HTTP requests to a service through discovery,\n"
     "                                   retries, breakers and deadlines; -n/-c: a summary"},
    {"snapshot", cmd_snapshot,
     "snapshot save FILE | snapshot restore FILE  save or restore the whole registry"},
    {"members", cmd_members,
     "members                           the cluster's servers: address, leader or follower"},
    {"raft", cmd_raft,
     "raft list | raft remove ID|HOST:PORT  cluster members; remove a dead one\n"
     "  raft transfer-leader [ID]         hand leadership to voter ID (or the most up to date)"},
    {"leave", cmd_leave, "leave                             take this server out of its cluster and stop it"},
    {"metrics", cmd_metrics,
     "metrics                           the server's metrics (Prometheus text, or --json)"},
    {"watch", cmd_watch,
     "watch NAME [--tag T] [--all]      print the instance list at every change (Ctrl-C ends)"},
    {"acl", cmd_acl,
     "acl bootstrap                     make the first management token (once)\n"
     "  acl policy create --name N (--rules TEXT | --rules-file FILE) [--description D]\n"
     "  acl policy list | read ID | read --name N | delete ID\n"
     "  acl token create [--description D] [--policy NAME]... [--policy-id ID]...\n"
     "  acl token list | read ACCESSOR | delete ACCESSOR | self"},
};

/* The TLS options, in reg_client_set_tls's order, and where their defaults
 * come from. */
static const struct {
    const char *flag, *what, *env, *consul_env;
} tls_flags[] = {
    {"--ca-file", "FILE", "REGISTRY_CACERT", "CONSUL_CACERT"},
    {"--client-cert", "FILE", "REGISTRY_CLIENT_CERT", "CONSUL_CLIENT_CERT"},
    {"--client-key", "FILE", "REGISTRY_CLIENT_KEY", "CONSUL_CLIENT_KEY"},
    {"--tls-server-name", "NAME", "REGISTRY_TLS_SERVER_NAME", "CONSUL_TLS_SERVER_NAME"},
};

/* Which TLS option a is (as "--flag" or "--flag=VALUE"), or -1. */
static int tls_option(const char *a)
{
    for (int k = 0; k < 4; k++) {
        size_t n = strlen(tls_flags[k].flag);
        if (strncmp(a, tls_flags[k].flag, n) == 0 && (a[n] == '\0' || a[n] == '='))
            return k;
    }
    return -1;
}

static void print_help(void)
{
    printf("Usage: registryctl [--http-addr [https://]HOST:PORT] [TLS OPTIONS] [--token TOKEN]\n"
           "                   [--json] VERB [ARGS]\n\n"
           "Talks to registryd's HTTP API: --http-addr, else $REGISTRY_HTTP_ADDR, else\n"
           "127.0.0.1:8500 (a comma-separated list fails over in order), with the ACL\n"
           "token --token, else $REGISTRY_HTTP_TOKEN (none: the server's default token).\n"
           "An https:// address (or CONSUL_HTTP_SSL=true, or any TLS option) is HTTPS;\n"
           "the server's certificate is always verified.\n\n"
           "Verbs:\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        printf("  %s\n", verbs[i].usage);
    printf("\nOptions:\n"
           "  --http-addr ADDR        server(s) to talk to: HOST:PORT, http://HOST:PORT or\n"
           "                          https://HOST:PORT\n"
           "  --token TOKEN           ACL token (SecretID) sent with every request\n"
           "  --ca-file FILE          CA certificates (PEM) to verify the server with\n"
           "                          ($REGISTRY_CACERT, $CONSUL_CACERT; else the system's)\n"
           "  --client-cert FILE      client certificate (PEM), for servers that require one\n"
           "                          ($REGISTRY_CLIENT_CERT, $CONSUL_CLIENT_CERT)\n"
           "  --client-key FILE       its private key ($REGISTRY_CLIENT_KEY, $CONSUL_CLIENT_KEY)\n"
           "  --tls-server-name NAME  name the server's certificate must carry, instead of\n"
           "                          the address's host ($REGISTRY_TLS_SERVER_NAME,\n"
           "                          $CONSUL_TLS_SERVER_NAME)\n"
           "  --json                  print JSON instead of tables\n"
           "  --help, -h              this text\n"
           "  --version               print the version\n\n"
           "Exit status: 0 success, 1 the server refused or could not be reached,\n"
           "2 usage error.\n");
}

int main(int argc, char **argv)
{
    struct ctl x = {0};
    const char *addr = NULL, *verb = NULL, *token = getenv("REGISTRY_HTTP_TOKEN");
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, rc, tls_flag;
    bool want_help = false, tls_given = false;
    const char *tls_val[4] = {NULL, NULL, NULL, NULL};
    if (rest == NULL)
        return EXIT_SERVER;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            want_help = true;
        } else if (strcmp(a, "--version") == 0) {
            printf("registryctl %s\n", REGISTRY_VERSION);
            free(rest);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            x.json = true;
        } else if (strcmp(a, "--http-addr") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return usage_error("--http-addr needs HOST:PORT");
            }
            addr = argv[++i];
        } else if (strncmp(a, "--http-addr=", 12) == 0) {
            addr = a + 12;
        } else if ((tls_flag = tls_option(a)) >= 0) {
            const char *eq = strchr(a, '=');
            if (eq == NULL && i + 1 >= argc) {
                free(rest);
                return usage_error("%s needs a %s", a, tls_flags[tls_flag].what);
            }
            tls_val[tls_flag] = eq ? eq + 1 : argv[++i];
            if (*tls_val[tls_flag] == '\0') {
                free(rest);
                return usage_error("%.*s needs a %s", (int)strcspn(a, "="), a,
                                   tls_flags[tls_flag].what);
            }
            tls_given = true;
        } else if (strcmp(a, "--token") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return usage_error("--token needs a token");
            }
            token = argv[++i];
        } else if (strncmp(a, "--token=", 8) == 0) {
            token = a + 8;
        } else if (verb == NULL && a[0] != '-') {
            verb = a;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (want_help && verb == NULL) {
        print_help();
        free(rest);
        return 0;
    }
    if (verb == NULL) {
        free(rest);
        return usage_error("which verb?");
    }
    const struct verb *v = NULL;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(verbs[i].name, verb) == 0)
            v = &verbs[i];
    if (v == NULL) {
        free(rest);
        return usage_error("unknown verb \"%s\"", verb);
    }
    if (want_help) { /* registryctl VERB --help: that verb's usage */
        printf("Usage: registryctl [--http-addr ADDR] [TLS OPTIONS] [--token TOKEN] [--json] %s\n",
               v->usage);
        free(rest);
        return 0;
    }
    if (addr != NULL && *addr == '\0') { /* an empty variable, not the default server */
        free(rest);
        return usage_error("--http-addr is empty");
    }
    rc = reg_client_new(&x.client, addr);
    x.addrs = addr ? addr : getenv("REGISTRY_HTTP_ADDR");
    if (rc != 0) {
        free(rest);
        if (strncmp(reg_client_errmsg(NULL), "TLS", 3) == 0) /* the TLS environment */
            return usage_error("%s", reg_client_errmsg(NULL));
        return usage_error("invalid --http-addr / REGISTRY_HTTP_ADDR \"%s\"",
                           addr ? addr : getenv("REGISTRY_HTTP_ADDR"));
    }
    if (tls_given) { /* a TLS flag means TLS; the environment fills in the rest */
        for (size_t k = 0; k < 4; k++)
            if (tls_val[k] == NULL) {
                tls_val[k] = getenv(tls_flags[k].env);
                if (tls_val[k] == NULL || *tls_val[k] == '\0')
                    tls_val[k] = getenv(tls_flags[k].consul_env);
                if (tls_val[k] != NULL && *tls_val[k] == '\0')
                    tls_val[k] = NULL;
            }
        if (reg_client_set_tls(x.client, tls_val[0], tls_val[1], tls_val[2], tls_val[3]) != 0) {
            usage_error("%s", reg_client_errmsg(x.client));
            reg_client_free(x.client);
            free(rest);
            return EXIT_USAGE;
        }
    }
    if (token != NULL && *token != '\0' && reg_client_set_token(x.client, token) != 0) {
        reg_client_free(x.client);
        free(rest);
        return usage_error("invalid --token / REGISTRY_HTTP_TOKEN");
    }
    x.argc = nrest;
    x.argv = rest;
    rc = v->run(&x);
    reg_client_free(x.client);
    free(rest);
    return rc;
}
