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

#include "cluster.h"
#include "log.h"
#include "registry/registry.h"

#define MAX_MEMBERS 9
#define RETRY_MS 300

struct formation {
    struct formation_options opt;
    char *join, *http_addr, *self_http;
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

/* GET /v1/internal/raft/self on one server. */
static int ask_self(struct reg_client *c, struct cluster_member *m)
{
    char *body = NULL;
    size_t len;
    int rc = reg_client_request(c, "GET", "/v1/internal/raft/self", NULL, 0, NULL, &body, &len,
                                NULL);
    if (rc != 0)
        return rc;
    json_t *j = json_loadb(body, len, 0, NULL);
    free(body);
    json_t *id = json_object_get(j, "ID");
    const char *raft = json_string_value(json_object_get(j, "Raft"));
    rc = json_is_integer(id) && raft ? 0 : REG_EPROTO;
    if (rc == 0) {
        m->id = (uint64_t)json_integer_value(id);
        snprintf(m->raft_addr, sizeof(m->raft_addr), "%s", raft);
    }
    json_decref(j);
    return rc;
}

static int cmp_member(const void *a, const void *b)
{
    uint64_t x = ((const struct cluster_member *)a)->id, y = ((const struct cluster_member *)b)->id;
    return x < y ? -1 : x > y;
}

/* Ask every --join server who it is until `expect` servers are known. */
static int discover(struct formation *f, struct cluster_member *members, size_t *n)
{
    uint64_t id;
    const char *raft;
    cluster_self(f->opt.cluster, &id, &raft);
    members[0].id = id;
    snprintf(members[0].raft_addr, sizeof(members[0].raft_addr), "%s", raft);
    *n = 1;
    while (!stopping(f) && *n < f->opt.bootstrap_expect) {
        for (const char *p = f->join ? f->join : ""; *p;) {
            char addr[300];
            size_t l = strcspn(p, ",");
            snprintf(addr, sizeof(addr), "%.*s", (int)(l < 299 ? l : 299), p);
            p += l + (p[l] == ',');
            struct reg_client *c;
            struct cluster_member m;
            if (reg_client_new(&c, addr) != 0)
                continue;
            reg_client_set_timeout(c, 1000);
            if (ask_self(c, &m) == 0) {
                bool known = false;
                for (size_t i = 0; i < *n; i++)
                    known |= members[i].id == m.id;
                if (!known && *n < MAX_MEMBERS)
                    members[(*n)++] = m;
            }
            reg_client_free(c);
        }
        if (*n < f->opt.bootstrap_expect)
            nap(f, RETRY_MS);
    }
    if (*n > f->opt.bootstrap_expect) {
        log_error("formation", "msg=\"found more servers than --bootstrap-expect\" found=%zu "
                               "expect=%u",
                  *n, f->opt.bootstrap_expect);
        return REG_ECONFIG;
    }
    qsort(members, *n, sizeof(*members), cmp_member);
    return stopping(f) ? REG_ESHUTDOWN : 0;
}

/* Ask the --join servers, in turn, to add this one (any member forwards to
 * the leader). */
static void join(struct formation *f)
{
    uint64_t id;
    const char *raft;
    cluster_self(f->opt.cluster, &id, &raft);
    char body[256];
    snprintf(body, sizeof(body), "{\"ID\": %llu, \"Raft\": \"%s\", \"HTTP\": \"%s\"}",
             (unsigned long long)id, raft, f->http_addr);
    struct reg_client *c;
    if (reg_client_new(&c, f->join) != 0)
        return;
    reg_client_set_timeout(c, 5000);
    while (!stopping(f)) {
        int rc = reg_client_request(c, "PUT", "/v1/internal/raft/join", body, strlen(body), NULL,
                                    NULL, NULL, NULL);
        if (rc == 0) {
            log_info("formation", "msg=\"joined the cluster\" via=%s", f->join);
            break;
        }
        log_debug("formation", "msg=\"join refused, retrying\" error=\"%s\"",
                  reg_client_errmsg(c));
        nap(f, RETRY_MS * 3);
    }
    reg_client_free(c);
}

/* Tell the cluster where this server's HTTP API is (through our own front
 * end, which forwards to the leader), retrying through elections. */
static void announce(struct formation *f)
{
    uint64_t id;
    const char *raft;
    cluster_self(f->opt.cluster, &id, &raft);
    char body[512];
    snprintf(body, sizeof(body), "{\"ID\": %llu, \"Raft\": \"%s\", \"HTTP\": \"%s\"}",
             (unsigned long long)id, raft, f->http_addr);
    struct reg_client *c;
    if (reg_client_new(&c, f->self_http) != 0)
        return;
    reg_client_set_timeout(c, 5000);
    while (!stopping(f) && reg_client_request(c, "PUT", "/v1/internal/raft/announce", body,
                                              strlen(body), NULL, NULL, NULL, NULL) != 0)
        nap(f, RETRY_MS * 3);
    reg_client_free(c);
}

static void *formation_thread(void *arg)
{
    struct formation *f = arg;
    struct cluster_member members[MAX_MEMBERS];
    size_t n = 0;
    char err[512] = "";
    bool fresh = cluster_fresh(f->opt.cluster);
    int rc = 0;
    if (fresh && f->opt.bootstrap_expect > 1) {
        rc = discover(f, members, &n);
        if (rc == 0)
            log_info("formation", "msg=\"bootstrapping a new cluster\" servers=%zu", n);
    }
    if (rc != 0)
        return NULL;
    rc = cluster_run(f->opt.cluster, members, n, err, sizeof(err));
    if (rc != 0) {
        log_error("formation", "msg=\"cannot start raft\" error=\"%s\"", err);
        return NULL;
    }
    if (fresh && f->opt.bootstrap_expect <= 1 && f->join)
        join(f);
    while (!stopping(f)) {
        if (cluster_wait_ready(f->opt.cluster, 200) == 0) {
            log_info("formation", "msg=\"cluster ready\"");
            break;
        }
    }
    announce(f);
    return NULL;
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
    if ((opt->join && f->join == NULL) || f->http_addr == NULL || f->self_http == NULL ||
        pthread_create(&f->thread, NULL, formation_thread, f) != 0) {
        snprintf(err, errlen, "cannot start the cluster formation thread");
        free(f->join);
        free(f->http_addr);
        free(f->self_http);
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
    free(f->join);
    free(f->http_addr);
    free(f->self_http);
    free(f);
}
