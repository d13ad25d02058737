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
#include <signal.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "registry/balancer.h"
#include "registry/registry.h"

#define EXIT_SERVER 1
#define EXIT_USAGE 2

struct ctl {
    struct reg_client *client;
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
    char *s = calloc(1, len + 2);
    if (s == NULL)
        return NULL;
    json_array_foreach(tags, i, t)
    {
        if (i)
            strcat(s, ",");
        strcat(s, json_string_value(t) ?: "");
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

static char *read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = cap < (16u << 20) ? realloc(buf, cap *= 2) : NULL;
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
    }
    if (f != stdin)
        fclose(f);
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static int cmd_register(struct ctl *x)
{
    const char *file = NULL, *interval = NULL;
    json_t *body = json_object(), *check = json_object();
    json_t *tags = json_array(), *meta = json_object();
    int rc = EXIT_USAGE;
    for (int i = 0; i < x->argc; i += 2) {
        const char *a = x->argv[i], *v = i + 1 < x->argc ? x->argv[i + 1] : NULL;
        if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            if (!v) {
                usage_error("register: %s needs a file", a);
                goto out;
            }
            file = v;
        } else if (v == NULL) {
            usage_error("register: %s needs a value (or is unknown)", a);
            goto out;
        } else if (strcmp(a, "--name") == 0) {
            json_object_set_new(body, "Name", json_string(v));
        } else if (strcmp(a, "--id") == 0) {
            json_object_set_new(body, "ID", json_string(v));
        } else if (strcmp(a, "--address") == 0) {
            json_object_set_new(body, "Address", json_string(v));
        } else if (strcmp(a, "--port") == 0 || strcmp(a, "--weight") == 0) {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            bool port = strcmp(a, "--port") == 0;
            if (errno || *end || end == v || n < (port ? 1 : 1) || n > (port ? 65535 : 1000000)) {
                usage_error("register: %s \"%s\" is not a number in %s", a, v,
                            port ? "1..65535" : "1..1000000");
                goto out;
            }
            if (port)
                json_object_set_new(body, "Port", json_integer(n));
            else
                json_object_set_new(body, "Weights", json_pack("{s:I, s:i}", "Passing",
                                                               (json_int_t)n, "Warning", 1));
        } else if (strcmp(a, "--tag") == 0) {
            json_array_append_new(tags, json_string(v));
        } else if (strcmp(a, "--meta") == 0) {
            const char *eq = strchr(v, '=');
            if (eq == NULL || eq == v) {
                usage_error("register: --meta wants KEY=VALUE, not \"%s\"", v);
                goto out;
            }
            json_object_set_new(meta, strndupa(v, (size_t)(eq - v)), json_string(eq + 1));
        } else if (strcmp(a, "--ttl") == 0) {
            json_object_set_new(check, "TTL", json_string(v));
        } else if (strcmp(a, "--http") == 0) {
            json_object_set_new(check, "HTTP", json_string(v));
        } else if (strcmp(a, "--tcp") == 0) {
            json_object_set_new(check, "TCP", json_string(v));
        } else if (strcmp(a, "--interval") == 0) {
            interval = v;
        } else {
            usage_error("register: unknown option %s", a);
            goto out;
        }
    }
    char *text = NULL;
    if (file) {
        if (json_object_size(body) || json_array_size(tags) || json_object_size(check)) {
            usage_error("register: -f FILE or flags, not both");
            goto out;
        }
        size_t len;
        text = read_file(file, &len);
        if (text == NULL) {
            fprintf(stderr, "registryctl: cannot read %s: %s\n", file, strerror(errno));
            rc = EXIT_USAGE;
            goto out;
        }
    } else {
        if (json_object_get(body, "Name") == NULL) {
            usage_error("register: --name is required");
            goto out;
        }
        if (json_array_size(tags))
            json_object_set(body, "Tags", tags);
        if (json_object_size(meta))
            json_object_set(body, "Meta", meta);
        if (interval)
            json_object_set_new(check, "Interval", json_string(interval));
        if (json_object_size(check))
            json_object_set(body, "Check", check);
        text = json_dumps(body, JSON_COMPACT);
    }
    rc = put(x, "/v1/agent/service/register", text);
    free(text);
out:
    json_decref(body);
    json_decref(check);
    json_decref(tags);
    json_decref(meta);
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
                printf("{\"ID\": \"%s\", \"Address\": \"%s\", \"Port\": %d}\n", e.id,
                       e.address, e.port);
            else
                printf("%s %s:%d\n", e.id, e.address, e.port);
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(list[i].id, e.id) == 0)
                hits[i]++;
    }
    if (count > 1 && hits) {
        if (!x->json)
            printf("%-28s %-24s %-8s %s\n", "ID", "ADDRESS", "PICKS", "SHARE");
        for (size_t i = 0; i < n; i++) {
            if (x->json)
                printf("%s{\"ID\": \"%s\", \"Picks\": %ld}%s", i ? ", " : "[", list[i].id,
                       hits[i], i + 1 == n ? "]\n" : "");
            else
                printf("%-28s %-24s %-8ld %.1f%%\n", list[i].id, list[i].address, hits[i],
                       100.0 * (double)hits[i] / (double)count);
        }
    }
    free(hits);
    reg_balancer_free(b);
    reg_instances_free(list, n);
    return 0;
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
        printf("{\"Time\": \"%s\", \"Stale\": %s, \"Instances\": [", stamp,
               stale ? "true" : "false");
        for (size_t i = 0; i < n; i++)
            printf("%s{\"ID\": \"%s\", \"Address\": \"%s\", \"Port\": %d, \"Status\": \"%s\"}",
                   i ? ", " : "", list[i].id, list[i].address, list[i].port, list[i].status);
        printf("]}\n");
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

static int cmd_snapshot(struct ctl *x)
{
    if (x->argc != 2 || (strcmp(x->argv[0], "save") && strcmp(x->argv[0], "restore")))
        return usage_error("snapshot: use snapshot save FILE | snapshot restore FILE");
    const char *file = x->argv[1];
    if (strcmp(x->argv[0], "save") == 0) {
        char *body = NULL;
        size_t len = 0;
        int rc = reg_client_request(x->client, "GET", "/v1/snapshot", NULL, 0, NULL, &body, &len,
                                    NULL);
        if (rc != 0)
            return server_error(x, rc);
        FILE *f = fopen(file, "wb");
        bool ok = f && fwrite(body, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = false;
        free(body);
        if (!ok) {
            fprintf(stderr, "registryctl: cannot write %s: %s\n", file, strerror(errno));
            return EXIT_SERVER;
        }
        if (!x->json)
            printf("saved %zu bytes to %s\n", len, file);
        return 0;
    }
    size_t len;
    char *data = read_file(file, &len);
    if (data == NULL) {
        fprintf(stderr, "registryctl: cannot read %s: %s\n", file, strerror(errno));
        return EXIT_USAGE;
    }
    int rc = reg_client_request(x->client, "PUT", "/v1/snapshot", data, len, NULL, NULL, NULL,
                                NULL);
    free(data);
    if (rc != 0)
        return server_error(x, rc);
    if (!x->json)
        printf("restored %s\n", file);
    return 0;
}

static void raft_rows(json_t *v)
{
    printf("%-12s %-22s %-9s %s\n", "ID", "ADDRESS", "STATE", "VOTER");
    size_t i;
    json_t *srv;
    json_array_foreach(json_object_get(v, "Servers"), i, srv)
    printf("%-12s %-22s %-9s %s\n", json_string_value(json_object_get(srv, "ID")),
           json_string_value(json_object_get(srv, "Address")),
           json_is_true(json_object_get(srv, "Leader")) ? "leader" : "follower",
           json_is_true(json_object_get(srv, "Voter")) ? "true" : "false");
}

static int cmd_raft(struct ctl *x)
{
    if (x->argc == 1 && strcmp(x->argv[0], "list") == 0)
        return show(x, "/v1/operator/raft/configuration", raft_rows);
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
    return usage_error("raft: use raft list | raft remove ID|HOST:PORT");
}

static int cmd_members(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("members takes no arguments");
    return show(x, "/v1/operator/raft/configuration", raft_rows);
}

/* Leave the cluster: the server we talk to asks the leader to remove it. */
static int cmd_leave(struct ctl *x)
{
    if (x->argc != 0)
        return usage_error("leave takes no arguments");
    json_t *self;
    int rc = get_json(x, "/v1/internal/raft/self", &self);
    if (rc != 0)
        return rc;
    char enc[600], path[700];
    reg_url_encode(json_string_value(json_object_get(self, "Raft")) ?: "", enc, sizeof(enc));
    json_decref(self);
    snprintf(path, sizeof(path), "/v1/operator/raft/peer?address=%s", enc);
    rc = reg_client_request(x->client, "DELETE", path, NULL, 0, NULL, NULL, NULL, NULL);
    return rc != 0 ? server_error(x, rc) : 0;
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

static const struct verb {
    const char *name;
    int (*run)(struct ctl *x);
    const char *usage;
} verbs[] = {
    {"services", cmd_services, "services                          list services and their tags"},
    {"instances", cmd_instances,
     "instances NAME [--passing] [--tag T]  list a service's instances and health"},
    {"checks", cmd_checks, "checks [SERVICE]                  list checks: status, output, last change"},
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
    {"snapshot", cmd_snapshot,
     "snapshot save FILE | snapshot restore FILE  save or restore the whole registry"},
    {"members", cmd_members, "members                           the cluster's servers: address, leader or follower"},
    {"raft", cmd_raft, "raft list | raft remove ID|HOST:PORT  cluster members"},
    {"leave", cmd_leave, "leave                             take this server out of its cluster"},
    {"metrics", cmd_metrics, "metrics                           the server's metrics (Prometheus text, or --json)"},
    {"watch", cmd_watch,
     "watch NAME [--tag T] [--all]      print the instance list at every change (Ctrl-C ends)"},
};

static void print_help(void)
{
    printf("Usage: registryctl [--http-addr HOST:PORT] [--json] VERB [ARGS]\n\n"
           "Talks to registryd's HTTP API: --http-addr, else $REGISTRY_HTTP_ADDR, else\n"
           "127.0.0.1:8500 (a comma-separated list fails over in order).\n\n"
           "Verbs:\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        printf("  %s\n", verbs[i].usage);
    printf("\nOptions:\n"
           "  --http-addr HOST:PORT   server(s) to talk to\n"
           "  --json                  print JSON instead of tables\n"
           "  --help, -h              this text\n"
           "  --version               print the version\n\n"
           "Exit status: 0 success, 1 the server refused or could not be reached,\n"
           "2 usage error.\n");
}

int main(int argc, char **argv)
{
    struct ctl x = {0};
    const char *addr = NULL, *verb = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, rc;
    bool want_help = false;
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
        printf("Usage: registryctl [--http-addr HOST:PORT] [--json] %s\n", v->usage);
        free(rest);
        return 0;
    }
    rc = reg_client_new(&x.client, addr);
    if (rc != 0) {
        free(rest);
        return usage_error("invalid --http-addr / REGISTRY_HTTP_ADDR \"%s\"",
                           addr ? addr : getenv("REGISTRY_HTTP_ADDR"));
    }
    x.argc = nrest;
    x.argv = rest;
    rc = v->run(&x);
    reg_client_free(x.client);
    free(rest);
    return rc;
}
