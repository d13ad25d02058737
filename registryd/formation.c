/*
 * formation.c — see formation.h. Uses libregistry's HTTP client; every
 * request has a short timeout and the loop checks for stop between tries.
 */
#include <stddef.h>

#include "formation.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "acl.h"
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "registry/registry.h"
#include "tls.h"

#define MAX_MEMBERS CLUSTER_MAX_SERVERS
#define RETRY_MS 300
#define LEFT_OUT_CHECK_TURNS 10 /* of cluster_wait_ready's 200 ms: every 2 s */
#define LEFT_OUT_QUIET_TURNS 2  /* once ready: that many looks without a leader */

struct formation {
    struct formation_options opt;
    char *join, *http_addr, *self_http;
    char *ca_file, *cert_file, *key_file; /* all NULL: plain HTTP */
    pthread_t thread;
    int stop; /* atomic */
};

static bool stopping(struct formation *f)
{
    return __atomic_load_n(&f->stop, __ATOMIC_ACQUIRE) != 0;
}

static void nap(struct formation *f, int ms)
{
    for (int waited = 0; waited < ms && !stopping(f); waited += 50)
        usleep(50 * 1000);
}

/* A client for the server at addr (HOST:PORT, any scheme prefix dropped):
 * HTTPS with this server's certificate when TLS is on, else HTTP; with
 * the server token and timeout_ms. 0 or a REG_E* code (*out NULL). */
static int client_for(struct formation *f, const char *addr, int timeout_ms,
                      struct reg_client **out)
{
    char url[160];
    if (strncmp(addr, "http://", 7) == 0)
        addr += 7;
    else if (strncmp(addr, "https://", 8) == 0)
        addr += 8;
    /* the scheme is ours to say: never plain HTTP with TLS on, and no
     * CONSUL_HTTP_SSL from the environment turning it on without */
    snprintf(url, sizeof(url), "%s://%s", f->cert_file ? "https" : "http", addr);
    struct reg_client *c = NULL;
    int rc = reg_client_new(&c, url);
    if (rc == 0 && f->cert_file != NULL) {
        rc = reg_client_set_tls(c, f->ca_file, f->cert_file, f->key_file, tls_server_name());
        if (rc != 0)
            log_warn("formation", "msg=\"cannot set up TLS\" error=\"%s\"", reg_client_errmsg(c));
    }
    if (rc == 0)
        rc = reg_client_set_timeout(c, timeout_ms);
    if (rc == 0)
        rc = reg_client_set_token(c, acl_server_secret());
    if (rc != 0) {
        reg_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- the hello exchange ------------------------------------------------ */

static json_t *member_json(const struct cluster_member *m)
{
    return json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)m->id, "Raft", m->raft_addr, "HTTP",
                     m->http_addr);
}

/* A server as another one describes it: every field checked here. */
static int member_parse(const json_t *j, struct cluster_member *m)
{
    json_t *id = json_object_get(j, "ID");
    const char *raft = json_string_value(json_object_get(j, "Raft"));
    const char *http = json_string_value(json_object_get(j, "HTTP"));
    char host[64];
    unsigned short port;
    if (!json_is_integer(id) || json_integer_value(id) <= 0 || raft == NULL ||
        strlen(raft) >= sizeof(m->raft_addr) ||
        conf_split_hostport(raft, host, sizeof(host), &port) != 0 ||
        (http != NULL && strlen(http) >= sizeof(m->http_addr)))
        return REG_EINVAL;
    *m = (struct cluster_member){.id = (uint64_t)json_integer_value(id)};
    snprintf(m->raft_addr, sizeof(m->raft_addr), "%s", raft);
    snprintf(m->http_addr, sizeof(m->http_addr), "%s", http ? http : "");
    return 0;
}

/* A list of servers: at most CLUSTER_MAX_SERVERS, each valid. */
static int members_parse(const json_t *arr, struct cluster_member *out, size_t *n)
{
    *n = 0;
    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > CLUSTER_MAX_SERVERS)
        return REG_EINVAL;
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (member_parse(json_array_get(arr, i), &out[(*n)++]) != 0)
            return REG_EINVAL;
    return 0;
}

static json_t *members_json(const struct cluster_member *m, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n && arr; i++)
        json_array_append_new(arr, member_json(&m[i]));
    return arr;
}

/* This server, what it knows and (once raft runs) its configuration. */
static json_t *hello_json(struct cluster *c)
{
    struct cluster_member known[CLUSTER_MAX_SERVERS], conf[CLUSTER_MAX_SERVERS];
    size_t n = cluster_known(c, known, CLUSTER_MAX_SERVERS);
    size_t nc = cluster_configuration(c, conf, CLUSTER_MAX_SERVERS);
    n = n < CLUSTER_MAX_SERVERS ? n : CLUSTER_MAX_SERVERS;
    json_t *j = member_json(&known[0]);
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "Known", members_json(known, n));
    json_object_set_new(j, "Configuration", nc ? members_json(conf, nc) : json_null());
    return j;
}

/* Learn the sender of a hello and every server it knows. */
static int learn_from(struct cluster *c, const json_t *hello, struct cluster_member *conf,
                      size_t *n_conf)
{
    struct cluster_member sender, known[CLUSTER_MAX_SERVERS];
    size_t n;
    if (member_parse(hello, &sender) != 0 ||
        members_parse(json_object_get(hello, "Known"), known, &n) != 0 ||
        members_parse(json_object_get(hello, "Configuration"), conf, n_conf) != 0)
        return REG_EINVAL;
    int rc = cluster_learn(c, &sender);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = cluster_learn(c, &known[i]);
    return rc;
}

int formation_hello_answer(struct cluster *c, const json_t *body, json_t **out, char *err,
                           size_t errlen)
{
    struct cluster_member conf[CLUSTER_MAX_SERVERS];
    size_t n_conf;
    int rc = learn_from(c, body, conf, &n_conf);
    if (rc == REG_EINVAL) {
        snprintf(err, errlen, "A hello needs {\"ID\", \"Raft\", \"HTTP\", \"Known\": [...]} "
                              "with at most %d servers", CLUSTER_MAX_SERVERS);
        return rc;
    }
    if (rc == REG_ETOOBIG)
        log_warn("formation", "msg=\"more servers than a cluster may hold\" max=%d",
                 CLUSTER_MAX_SERVERS);
    *out = hello_json(c);
    return *out ? 0 : REG_ENOMEM;
}

/* Say hello to the server at addr; learn what it knows. *n_conf: the size
 * of its configuration (conf) if it runs raft already. */
static int say_hello(struct formation *f, const char *addr, struct cluster_member *conf,
                     size_t *n_conf)
{
    struct reg_client *rc_client;
    char *text = NULL, *resp = NULL;
    size_t len;
    int status = 0;
    *n_conf = 0;
    json_t *hello = hello_json(f->opt.cluster);
    if (hello == NULL || (text = json_dumps(hello, JSON_COMPACT)) == NULL) {
        json_decref(hello);
        return REG_ENOMEM;
    }
    json_decref(hello);
    int rc = client_for(f, addr, 1000, &rc_client);
    if (rc == 0) {
        rc = reg_client_request(rc_client, "PUT", "/v1/internal/raft/hello", text, strlen(text),
                                &status, &resp, &len, NULL);
        if (rc != 0)
            log_debug("formation", "msg=\"hello not answered\" to=%s error=\"%s\"", addr,
                      reg_client_errmsg(rc_client));
        reg_client_free(rc_client);
    }
    free(text);
    if (rc == 0) {
        json_t *j = json_loadb(resp, len, 0, NULL);
        rc = j ? learn_from(f->opt.cluster, j, conf, n_conf) : REG_EPROTO;
        json_decref(j);
    }
    free(resp);
    return rc;
}

static int cmp_member(const void *a, const void *b)
{
    uint64_t x = ((const struct cluster_member *)a)->id, y = ((const struct cluster_member *)b)->id;
    return x < y ? -1 : x > y;
}

/* Every address worth a hello: the --join list, then every server learned
 * of (its HTTP address), this one excepted (when --join names it as this
 * server names itself). Returns how many (<= max). */
static size_t hello_targets(struct formation *f, char (*out)[128], size_t max)
{
    size_t n = 0;
    for (const char *p = f->join ? f->join : ""; *p && n < max;) {
        size_t l = strcspn(p, ",");
        bool self = (strlen(f->http_addr) == l && strncmp(p, f->http_addr, l) == 0) ||
                    (strlen(f->self_http) == l && strncmp(p, f->self_http, l) == 0);
        if (l > 0 && l < 128 && !self)
            snprintf(out[n++], 128, "%.*s", (int)l, p);
        p += l + (p[l] == ',');
    }
    struct cluster_member known[CLUSTER_MAX_SERVERS];
    size_t k = cluster_known(f->opt.cluster, known, CLUSTER_MAX_SERVERS);
    for (size_t i = 1; i < k && i < CLUSTER_MAX_SERVERS && n < max; i++)
        if (known[i].http_addr[0] != '\0')
            snprintf(out[n++], 128, "%s", known[i].http_addr);
    return n;
}

enum outcome { BOOTSTRAP, JOIN, FAILED };

/* Say hello to addr: -1 if no running cluster answered, else whether its
 * configuration (conf, *n_conf) lists this server. */
static int hello_lists_self(struct formation *f, const char *addr,
                            struct cluster_member *conf, size_t *n_conf)
{
    uint64_t self;
    const char *raft;
    cluster_self(f->opt.cluster, &self, &raft);
    if (say_hello(f, addr, conf, n_conf) != 0 || *n_conf == 0)
        return -1;
    for (size_t i = 0; i < *n_conf; i++)
        if (conf[i].id == self)
            return 1;
    return 0;
}

/* Say hello around until `expect` servers are known (bootstrap them), or a
 * running cluster is found (adopt its configuration if it lists this
 * server, else join it). */
static enum outcome discover(struct formation *f, struct cluster_member *members, size_t *n)
{
    while (!stopping(f)) {
        char targets[MAX_MEMBERS + 16][128];
        size_t nt = hello_targets(f, targets, sizeof(targets) / sizeof(targets[0]));
        for (size_t t = 0; t < nt && !stopping(f); t++) {
            struct cluster_member conf[CLUSTER_MAX_SERVERS];
            size_t n_conf = 0;
            int listed = hello_lists_self(f, targets[t], conf, &n_conf);
            if (listed < 0)
                continue;
            if (!listed) {
                log_info("formation", "msg=\"found a running cluster; joining it\" via=%s",
                         targets[t]);
                return JOIN;
            }
            memcpy(members, conf, n_conf * sizeof(*members));
            *n = n_conf;
            log_info("formation", "msg=\"adopting the configuration of a running cluster\" "
                                  "via=%s servers=%zu", targets[t], n_conf);
            return BOOTSTRAP;
        }
        *n = cluster_known(f->opt.cluster, members, MAX_MEMBERS);
        if (*n > f->opt.bootstrap_expect) {
            log_error("formation", "msg=\"found more servers than --bootstrap-expect; not "
                                   "bootstrapping\" found=%zu expect=%u",
                      *n, f->opt.bootstrap_expect);
            return FAILED;
        }
        if (*n == f->opt.bootstrap_expect) {
            qsort(members, *n, sizeof(*members), cmp_member);
            return BOOTSTRAP;
        }
        nap(f, RETRY_MS);
    }
    return FAILED;
}

/* Ask the --join servers, in turn, to add this one (any member forwards to
 * the leader). */
static void join(struct formation *f)
{
    uint64_t id;
    const char *raft;
    cluster_self(f->opt.cluster, &id, &raft);
    char body[512];
    snprintf(body, sizeof(body), "{\"ID\": %llu, \"Raft\": \"%s\", \"HTTP\": \"%s\"}",
             (unsigned long long)id, raft, f->http_addr);
    /* Any server known will do (each forwards to the leader): the --join
     * list and every server learned of while forming. */
    char targets[MAX_MEMBERS + 16][128];
    size_t nt = hello_targets(f, targets, sizeof(targets) / sizeof(targets[0]));
    bool said = false;
    for (size_t t = 0; !stopping(f); t = (t + 1) % (nt ? nt : 1)) {
        if (nt == 0) { /* looked again each round: a server may become known */
            nt = hello_targets(f, targets, sizeof(targets) / sizeof(targets[0]));
            if (nt == 0 && !said) {
                log_warn("formation", "msg=\"nothing to join: --join names only this server "
                                      "and no other server is known; waiting (give --join a "
                                      "member of the cluster)\"");
                said = true;
            }
        }
        struct reg_client *c;
        int rc = nt ? client_for(f, targets[t], 5000, &c) : REG_EINVAL;
        if (rc == 0) {
            rc = reg_client_request(c, "PUT", "/v1/internal/raft/join", body, strlen(body), NULL,
                                    NULL, NULL, NULL);
            if (rc != 0)
                log_debug("formation", "msg=\"join refused, retrying\" via=%s error=\"%s\"",
                          targets[t], reg_client_errmsg(c));
            reg_client_free(c);
        }
        if (rc == 0) {
            log_info("formation", "msg=\"joined the cluster\" via=%s", targets[t]);
            break;
        }
        if (t + 1 == nt || nt == 0)
            nap(f, RETRY_MS * 3);
    }
}

/* Does a running cluster this server knows of leave it out of its
 * configuration? So it is when it left (registryctl leave) or was removed
 * and then started again with its raft state: that state may still list
 * it, but the cluster sends it nothing, and it would wait for a leader for
 * good. */
static bool left_out(struct formation *f)
{
    char targets[MAX_MEMBERS + 16][128];
    size_t nt = hello_targets(f, targets, sizeof(targets) / sizeof(targets[0]));
    for (size_t t = 0; t < nt && !stopping(f); t++) {
        struct cluster_member conf[CLUSTER_MAX_SERVERS];
        size_t n_conf = 0;
        if (hello_lists_self(f, targets[t], conf, &n_conf) == 0)
            return true; /* one running server that does not list it is enough */
    }
    return false;
}

/* Tell the cluster where this server's HTTP API is (through our own front
 * end, which forwards to the leader). True once done. */
static bool announce(struct formation *f)
{
    json_t *j = cluster_announcement(f->opt.cluster);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    struct reg_client *c;
    if (body == NULL || client_for(f, f->self_http, 5000, &c) != 0) {
        free(body);
        return false;
    }
    int rc = reg_client_request(c, "PUT", "/v1/internal/raft/announce", body, strlen(body), NULL,
                                NULL, NULL, NULL);
    reg_client_free(c);
    free(body);
    return rc == 0;
}

static void *formation_thread(void *arg)
{
    struct formation *f = arg;
    struct cluster_member members[MAX_MEMBERS];
    size_t n = 0;
    char err[512] = "";
    bool fresh = cluster_fresh(f->opt.cluster);
    enum outcome how = fresh && f->opt.join ? JOIN : BOOTSTRAP;
    if (fresh && f->opt.bootstrap_expect > 1) {
        how = discover(f, members, &n);
        if (how == BOOTSTRAP)
            log_info("formation", "msg=\"bootstrapping a new cluster\" servers=%zu", n);
    }
    if (how == FAILED)
        return NULL;
    if (how == JOIN)
        n = 0; /* start empty; the leader adds this server and sends it the log */
    int rc = cluster_run(f->opt.cluster, members, n, err, sizeof(err));
    if (rc != 0) {
        log_error("formation", "msg=\"cannot start raft\" error=\"%s\"", err);
        return NULL;
    }
    if (how == JOIN)
        join(f);
    for (unsigned waited = 0; !stopping(f); waited++) {
        if (cluster_wait_ready(f->opt.cluster, 200) == 0) {
            log_info("formation", "msg=\"cluster ready\"");
            break;
        }
        /* a restart without a leader for a while: left out? join again */
        if (!fresh && waited % LEFT_OUT_CHECK_TURNS == LEFT_OUT_CHECK_TURNS - 1 && left_out(f)) {
            log_info("formation", "msg=\"this server is not in its cluster's configuration (it "
                                  "left or was removed): joining it again\"");
            join(f);
        }
    }
    /* Then announce (again through elections), and watch: a server removed
     * while it was down may take one stale message from a leader at its
     * restart (and report ready), then hear from nobody. Without a leader
     * for LEFT_OUT_QUIET_TURNS looks, it asks whether the cluster still
     * lists it, and joins again if not. */
    bool announced = false;
    for (unsigned quiet = 0; !stopping(f);) {
        if (!announced) /* (a forward waits some 4 s for a leader) */
            announced = announce(f);
        nap(f, announced ? 200 * LEFT_OUT_CHECK_TURNS : RETRY_MS * 3);
        struct cluster_status st;
        cluster_get_status(f->opt.cluster, &st);
        quiet = st.known_leader ? 0 : quiet + 1;
        if (quiet >= LEFT_OUT_QUIET_TURNS && left_out(f)) {
            log_info("formation", "msg=\"this server is not in its cluster's configuration (it "
                                  "left or was removed): joining it again\"");
            join(f);
            quiet = 0;
            announced = false; /* its record says it was removed */
        }
    }
    return NULL;
}

static void free_strings(struct formation *f)
{
    free(f->join);
    free(f->http_addr);
    free(f->self_http);
    free(f->ca_file);
    free(f->cert_file);
    free(f->key_file);
}

int formation_start(const struct formation_options *opt, struct formation **out, char *err,
                    size_t errlen)
{
    struct formation *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return REG_ENOMEM;
    f->opt = *opt;
    f->join = opt->join ? strdup(opt->join) : NULL;
    f->http_addr = strdup(opt->http_addr);
    f->self_http = strdup(opt->self_http ? opt->self_http : opt->http_addr);
    bool tls = opt->tls_ca_file && opt->tls_cert_file && opt->tls_key_file;
    if (tls) {
        f->ca_file = strdup(opt->tls_ca_file);
        f->cert_file = strdup(opt->tls_cert_file);
        f->key_file = strdup(opt->tls_key_file);
    }
    if ((opt->join && f->join == NULL) || f->http_addr == NULL || f->self_http == NULL ||
        (tls && (f->ca_file == NULL || f->cert_file == NULL || f->key_file == NULL)) ||
        pthread_create(&f->thread, NULL, formation_thread, f) != 0) {
        snprintf(err, errlen, "cannot start the cluster formation thread");
        free_strings(f);
        free(f);
        return REG_ENOMEM;
    }
    *out = f;
    return 0;
}

void formation_free(struct formation *f)
{
    if (f == NULL)
        return;
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    pthread_join(f->thread, NULL);
    free_strings(f);
    free(f);
}
