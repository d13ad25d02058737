/*
 * server.c — see server.h. The start-up order, and why:
 *   data dir (created, locked; missing raft state refused unless recovering)
 *   -> store -> raft (a single server waits until it leads and has replayed
 *   its log; a cluster member starts raft from the formation thread)
 *   -> checker -> HTTP -> DNS -> signals -> formation (the others must reach
 *   this server's HTTP API before it can form a cluster) -> HTTP worker
 *   threads -> "ready" (an HTTP answer before then would come from a server
 *   whose DNS is not listening yet and that SIGTERM would kill outright).
 * Stopping goes in reverse: the checker first (it submits to the cluster),
 * parked blocking queries are answered while the cluster can still say who
 * leads, then the cluster, the front end and the store.
 */
#define _GNU_SOURCE
#include "server.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_target.h"
#include "cluster.h"
#include "cluster_files.h"
#include "config.h"
#include "dns_server.h"
#include "formation.h"
#include "health.h"
#include "heap_trim.h"
#include "http_api.h"
#include "http_workers.h"
#include "leave.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "recovery.h"
#include "registry/error.h"
#include "service.h"
#include "store.h"
#include "tls.h"
#include "watch.h"

/* Who hears about applied changes: blocking queries (the main loop's and
 * the HTTP worker threads') and the checker. */
struct change_listeners {
    struct watch *watch;     /* the main loop's; NULL once stopping */
    struct mailbox *mailbox; /* the main loop's: its watch is told through it */
    struct http_workers *http;
    struct health *health;
};

/* The other workers and the checker first, this loop's own blocking
 * queries last, from its mailbox: after the write answers this loop turn
 * gives (cluster.c's out_cb). Waking 5,000 parked queries takes this loop
 * some 60 ms; done here and first, the other workers started theirs only
 * after it, and the writer waited for it too. A query asked after its
 * write's answer needs no wake: the store already holds the change. */
static void on_change(void *arg, const struct store_change *chg)
{
    struct change_listeners *l = arg;
    http_workers_notify(l->http, chg);
    health_notify(l->health, chg);
    if (l->watch != NULL && watch_notify_via(l->mailbox, l->watch, chg) != 0)
        watch_notify(l->watch, chg); /* no memory to queue it: wake them now */
}

/* What SIGTERM needs to leave the cluster first (leave_on_terminate,
 * leave.h), and what stops the server once PUT /v1/agent/leave has left
 * (http_operator.c). */
struct leaving {
    struct event_base *base;
    struct cluster *cluster;
    bool enabled; /* SIGTERM leaves first (leave_on_terminate, in a cluster) */
    bool started;
    struct leave *leaves; /* leave.h's list: the one SIGTERM started */
    struct event *asked;  /* PUT /v1/agent/leave done: stop (from any thread) */
};

#define HEAP_TRIM_INTERVAL_MS 5000 /* heap_trim.h */
#define LEAVE_GRACE_MS 10000       /* SIGTERM: leave or not, stop within 10 s */

static void left(void *arg, int status, const char *why)
{
    struct leaving *l = arg;
    if (status != 0)
        log_warn("server", "msg=\"could not leave the cluster\" error=\"%s\"", why);
    else
        log_info("server", "msg=\"left the cluster\"");
    event_base_loopexit(l->base, NULL);
}

/* The main loop's way to the cluster's changes: direct. */
static void leave_change(void *ctx, bool transfer, uint64_t id, cluster_done_cb cb, void *arg)
{
    if (transfer)
        cluster_transfer_leadership(ctx, 0, cb, arg);
    else
        cluster_remove(ctx, id, cb, arg);
}

/* SIGHUP: read the configuration again and apply what can change live
 * (live_keys: the log level and the checker's limits); say which other
 * changes need a restart. */
struct reload {
    int argc;
    char **argv;
    struct conf *current;
    struct health *health;
};

static struct health_limits health_limits_of(const struct conf *c)
{
    return (struct health_limits){
        .max_concurrent = c->check_max_concurrent,
        .check_update_interval_ms = c->check_update_interval_ms,
        .deregister_min_ms = c->check_deregister_min_ms,
        .self_preservation_share = c->self_preservation_share,
        .self_preservation_window_ms = c->self_preservation_window_ms,
        .self_preservation_min = c->self_preservation_min,
    };
}

/* Settings a reload applies at once (conf_diff reports every other change
 * as needing a restart; the running conf keeps its start-up values). */
static const char *const live_keys[] = {"log_level",
                                        "check_max_concurrent",
                                        "check_update_interval",
                                        "check_deregister_min",
                                        "self_preservation_share",
                                        "self_preservation_window",
                                        "self_preservation_min"};

static void not_applied(const char *key, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof(live_keys) / sizeof(live_keys[0]); i++)
        if (strcmp(key, live_keys[i]) == 0)
            return;
    log_warn("server", "msg=\"setting changed in the configuration; restart to apply\" key=%s",
             key);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct reload *rl = arg;
    struct conf fresh;
    char err[512] = "";
    (void)sig;
    (void)what;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = conf_load(&fresh, rl->argc, rl->argv, devnull ? devnull : stderr, err, sizeof(err));
    if (devnull)
        fclose(devnull);
    if (rc != 0) {
        log_error("server", "msg=\"reload failed; keeping the running configuration\" error=\"%s\"",
                  err);
    } else {
        if (fresh.log_level != rl->current->log_level) {
            log_init(fresh.log_level);
            rl->current->log_level = fresh.log_level;
            log_warn("server", "msg=\"log level changed\" log_level=%s",
                     log_level_name(fresh.log_level));
        }
        struct health_limits limits = health_limits_of(&fresh);
        health_set_limits(rl->health, &limits);
        /* certificates: the same files read again (renewed in place);
         * connections already open keep the material they started with */
        char terr[512] = "";
        if (tls_reload(terr, sizeof(terr)) != 0)
            log_error("server", "msg=\"TLS reload failed; keeping the loaded certificates\" "
                                "error=\"%s\"", terr);
        else if (tls_enabled())
            log_info("server", "msg=\"TLS certificates reloaded\"");
        conf_diff(rl->current, &fresh, not_applied, NULL);
        log_info("server", "msg=\"configuration reloaded\"");
    }
    conf_fini(&fresh);
}

/* Leave the cluster, then stop (within LEAVE_GRACE_MS, left or not).
 * False when leaving has started already or cannot. */
static bool start_leaving(struct leaving *l)
{
    if (l->started)
        return false;
    l->started = true;
    log_info("server", "msg=\"leaving the cluster before shutting down\"");
    struct leave_via via = {.cluster = l->cluster,
                            .link = cluster_get_link(l->cluster),
                            .change = leave_change,
                            .ctx = l->cluster};
    if (leave_start(l->base, &via, LEAVE_GRACE_MS, left, l, &l->leaves) != 0)
        return false;
    struct timeval grace = {LEAVE_GRACE_MS / 1000 + 1, 0}; /* should the leave not end */
    event_base_loopexit(l->base, &grace);
    return true;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct leaving *l = arg;
    (void)what;
    if (l->enabled && sig == SIGTERM && start_leaving(l))
        return;
    log_info("server", "msg=\"shutting down\" signal=%d", (int)sig);
    event_base_loopexit(l->base, NULL);
}

/* PUT /v1/agent/leave has taken this server out of its cluster (or it
 * was alone): stop, on the main loop. */
static void on_stop_asked(evutil_socket_t fd, short what, void *arg)
{
    struct leaving *l = arg;
    (void)fd;
    (void)what;
    log_info("server", "msg=\"left the cluster as asked (PUT /v1/agent/leave); shutting down\"");
    struct timeval flush = {0, 200 * 1000}; /* the answer reaches the client first */
    event_base_loopexit(l->base, &flush);
}

/* http_options.stop: any thread. */
static void ask_stop(void *arg)
{
    struct leaving *l = arg;
    if (l->asked != NULL)
        event_active(l->asked, EV_TIMEOUT, 1);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

struct server {
    struct conf *conf;
    char dev_dir[32];
    const char *data_dir;
    int lock_fd;
    bool clustered;
    char advertise[320]; /* the API address other servers reach this one at */
    char self_http[320]; /* where this process reaches its own API (the same scheme) */
    char node_host[256]; /* this node's address, as instances without one get */

    struct event_base *base;
    struct event *sigterm, *sigint, *sighup;
    struct service *service;
    struct store *store;
    struct watch *watch;
    struct cluster *cluster;
    struct http_workers *http;
    struct health *health;
    struct dns_server *dns;
    struct formation *formation;
    struct recovery *recovery;
    struct heap_trim *heap_trim;
    struct leaving leaving;
    struct change_listeners listeners;
    struct reload reload;
    uint64_t raft_fingerprint; /* nonzero: the store may be kept (store.h) */
    uint64_t applied_at_stop;  /* written by the raft thread as it stops */
};

/* The data dir: made (or a fresh temporary one for --dev) and locked. */
static int open_data_dir(struct server *s)
{
    struct conf *conf = s->conf;
    char err[512] = "";
    if (conf->dev) {
        snprintf(s->dev_dir, sizeof(s->dev_dir), "/tmp/registryd-dev-XXXXXX");
        if (mkdtemp(s->dev_dir) == NULL) {
            s->dev_dir[0] = '\0';
            log_error("server", "msg=\"cannot create dev data dir\" error=\"%s\"", strerror(errno));
            return REG_EIO;
        }
        s->data_dir = s->dev_dir;
    } else {
        s->data_dir = conf->data_dir;
        if (mkdir_p(s->data_dir) != 0) {
            log_error("server", "msg=\"cannot create data dir\" data_dir=%s error=\"%s\"",
                      s->data_dir, strerror(errno));
            return REG_EIO;
        }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", s->data_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) { /* read-only file system, LOCK a directory, no permission... */
        log_error("server", "msg=\"cannot open the data dir's lock file\" path=%s error=\"%s\"",
                  path, strerror(errno));
        return REG_EIO;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            log_error("server", "msg=\"data dir is in use by another registryd\" data_dir=%s",
                      s->data_dir);
        else
            log_error("server", "msg=\"cannot lock the data dir\" path=%s error=\"%s\"", path,
                      strerror(errno));
        return REG_EIO;
    }
    /* After a clean stop, with the raft files as it left them, the store
     * is kept instead of rebuilt (store.h); else recovery (single server)
     * keeps the old file aside to compare the rebuilt one with. */
    snprintf(path, sizeof(path), "%s/raft", s->data_dir);
    if (cluster_files_heal(path, err, sizeof(err)) != 0) { /* a crash while raft started */
        log_error("server", "msg=\"refusing to start\" error=\"%s\"", err);
        return REG_EIO;
    }
    s->raft_fingerprint = conf->dev ? 0 : cluster_files_fingerprint(path);
    snprintf(path, sizeof(path), "%s/store/data.mdb.prev", s->data_dir);
    bool kept_aside = access(path, F_OK) == 0;
    snprintf(path, sizeof(path), "%s/store/data.mdb", s->data_dir);
    if (kept_aside || conf->recover_from_store ||
        !store_restart_possible(path, s->raft_fingerprint))
        s->raft_fingerprint = 0;
    if (!conf->dev && !s->clustered && s->raft_fingerprint == 0 &&
        recovery_before(s->data_dir, conf->recover_from_store, &s->recovery, err, sizeof(err)) !=
            0) {
        log_error("server", "msg=\"refusing to start\" error=\"%s\"", err);
        return REG_ECONFIG;
    }
    return 0;
}

/* The addresses this server is known by, derived from the listen addresses.
 * Other servers reach this one at its API address: with TLS configured the
 * HTTPS listener (server-to-server traffic is then mutual TLS only, never
 * plain HTTP), else the plain one. A wildcard listener is announced with
 * the raft address's host and reached from inside at loopback. The node's
 * own address comes from the plain listener, else the HTTPS one. */
static void derive_addresses(struct server *s)
{
    const struct conf *conf = s->conf;
    const char *api = conf->tls_cert_file != NULL && conf->https_addr != NULL
                          ? conf->https_addr
                          : conf->http_addr;
    const char *node_api = conf->http_addr ? conf->http_addr : conf->https_addr;
    char hh[256], rh[256];
    unsigned short hp, rp;
    bool wildcard = conf_split_hostport(api, hh, sizeof(hh), &hp) == 0 &&
                    (strcmp(hh, "0.0.0.0") == 0 || strcmp(hh, "::") == 0);
    snprintf(s->advertise, sizeof(s->advertise), "%s", api);
    if (wildcard && conf->raft_addr &&
        conf_split_hostport(conf->raft_addr, rh, sizeof(rh), &rp) == 0)
        snprintf(s->advertise, sizeof(s->advertise), "%s:%u", rh, hp);
    snprintf(s->self_http, sizeof(s->self_http), "%s", api);
    if (wildcard)
        snprintf(s->self_http, sizeof(s->self_http), "127.0.0.1:%u", hp);
    if (conf_split_hostport(node_api, s->node_host, sizeof(s->node_host), &hp) != 0 ||
        strcmp(s->node_host, "0.0.0.0") == 0 || strcmp(s->node_host, "::") == 0)
        snprintf(s->node_host, sizeof(s->node_host), "127.0.0.1");
}

static struct tls_opts tls_opts_of(const struct conf *conf)
{
    return (struct tls_opts){
        .ca_file = conf->tls_ca_file,
        .cert_file = conf->tls_cert_file,
        .key_file = conf->tls_key_file,
        .verify_incoming = conf->tls_verify_incoming,
        .min_version = conf->tls_min_version,
        .datacenter = conf->datacenter,
        .domain = conf->dns_domain,
    };
}

int server_check_files(const struct conf *conf, char *err, size_t errlen)
{
    struct tls_opts o = tls_opts_of(conf);
    int rc = tls_start(&o, err, errlen);
    tls_stop();
    return rc;
}

/* The TLS material (tls.c), before anything listens or connects. */
static int start_tls(struct server *s)
{
    const struct conf *conf = s->conf;
    char err[512] = "";
    struct tls_opts o = tls_opts_of(conf);
    int rc = tls_start(&o, err, sizeof(err));
    if (rc != 0) {
        log_error("server", "msg=\"cannot load the TLS files\" error=\"%s\"", err);
        return rc;
    }
    if (s->clustered && !tls_enabled() && conf->cluster_key == NULL)
        log_warn("server", "msg=\"the raft port accepts any peer: neither TLS nor cluster_key_file "
                           "is configured; firewall it so that only the servers reach it\"");
    return 0;
}

/* Store, event loop, blocking queries and raft. */
static int start_store_and_cluster(struct server *s)
{
    const struct conf *conf = s->conf;
    char err[512] = "", path[4096];
    snprintf(path, sizeof(path), "%s/store", s->data_dir);
    if (store_open(path, s->raft_fingerprint, &s->store, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"cannot open store\" error=\"%s\"", err);
        return REG_ESTORE;
    }
    s->base = common_front_end_base_new();
    if (s->base == NULL || watch_new(s->base, &s->watch) != 0 ||
        mailbox_new(s->base, &s->listeners.mailbox) != 0) {
        log_error("server", "msg=\"cannot create event loop\"");
        return REG_ENOMEM;
    }
    s->listeners.watch = s->watch;
    struct cluster_options copt = {
        .data_dir = s->data_dir,
        .raft_addr = conf->raft_addr,
        .avoid_addrs = {conf->http_addr, conf->https_addr, conf->dns_addr},
        .store = s->store,
        .base = s->base,
        .on_change = on_change,
        .change_arg = &s->listeners,
        .on_applied = metrics_raft_apply,
        .http_addr = s->advertise,
        .node = conf->node,
        .node_addr = s->node_host,
        .node_meta = conf->node_meta,
        .snapshot_threshold = conf->raft_snapshot_threshold,
        .snapshot_compression = conf->raft_snapshot_compression,
        .reuse_applied = store_reused_applied(s->store),
        .applied_at_stop = &s->applied_at_stop,
        .cluster_key = conf->cluster_key,
    };
    if (copt.reuse_applied > 0)
        log_info("server", "msg=\"store kept from the last clean stop\" applied_index=%llu",
                 (unsigned long long)copt.reuse_applied);
    /* A single server starts raft here and is its own leader before it
     * serves; a cluster member serves first (the others must reach it) and
     * forms or joins the cluster on the formation thread. */
    int rc = s->clustered ? cluster_new(&copt, &s->cluster, err, sizeof(err))
                          : cluster_start(&copt, &s->cluster, err, sizeof(err));
    if (rc != 0) {
        log_error("server", "msg=\"cannot start raft\" error=\"%s\"", err);
        return rc;
    }
    if (s->recovery &&
        recovery_after(s->recovery, s->store, s->cluster, s->base, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"refusing to start\" error=\"%s\"", err);
        return REG_ECONFIG;
    }
    return 0;
}

static int start_checker(struct server *s)
{
    const struct conf *conf = s->conf;
    char err[512] = "";
    /* Checks may not aim at this server's own listeners (nor at what
     * check_deny_cidrs names). */
    uint64_t self_id;
    const char *self_raft = NULL;
    cluster_self(s->cluster, &self_id, &self_raft);
    const char *own[5];
    size_t n_own = 0;
    const char *listening[] = {conf->http_addr, conf->https_addr, conf->dns_addr, self_raft};
    for (size_t i = 0; i < sizeof(listening) / sizeof(listening[0]); i++)
        if (listening[i] != NULL) /* http_addr or https_addr may be off */
            own[n_own++] = listening[i];
    own[n_own] = NULL;
    if (check_target_configure(conf->check_deny_cidrs, conf->check_allow_cidrs, own, err,
                               sizeof(err)) != 0) {
        log_error("server", "msg=\"bad check address lists\" error=\"%s\"", err);
        return REG_ECONFIG;
    }
    struct health_options health_opt = {
        .store = s->store,
        .cluster = s->cluster,
        .limits = health_limits_of(conf),
        .enable_script_checks = conf->enable_script_checks,
        .agent_tls = conf->enable_agent_tls_for_checks && tls_enabled(),
    };
    if (health_start(&health_opt, &s->health, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"cannot start the health checker\" error=\"%s\"", err);
        return REG_ENOMEM;
    }
    s->listeners.health = s->health;
    return 0;
}

/* The HTTP front end, on the main loop and http_workers - 1 threads; DNS,
 * on its own threads. */
static int start_front_end(struct server *s)
{
    const struct conf *conf = s->conf;
    char err[512] = "";
    struct http_options hopt = {
        .addr = conf->http_addr,
        .https_addr = conf->https_addr,
        .advertise = s->advertise,
        .max_body_size = conf->max_body_size,
        .cache_size = conf->http_cache_size,
        .render_cache_size = conf->http_render_cache_size,
        .max_snapshot_size = conf->max_snapshot_size,
        .spool_dir = s->data_dir,
        .head_timeout_ms = conf->http_head_timeout_ms,
        .body_timeout_ms = conf->http_body_timeout_ms,
        .max_conns_per_client = conf->http_max_conns_per_client,
        .read_rate = conf->http_read_rate,
        .write_rate = conf->http_write_rate,
        .node = conf->node,
        .node_addr = s->node_host,
        .datacenter = conf->datacenter,
        .node_meta = conf->node_meta,
        .enable_script_checks = conf->enable_script_checks,
        .dns_addr = conf->dns_addr,
        .dns_domain = conf->dns_domain,
        .base = s->base,
        .store = s->store,
        .cluster = s->cluster,
        .watch = s->watch,
        .health = s->health,
        .stop = ask_stop,
        .stop_arg = &s->leaving,
    };
    if (http_workers_start(&hopt, conf->http_workers, &s->http, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"cannot start HTTP API\" error=\"%s\"", err);
        return REG_EIO;
    }
    s->listeners.http = s->http;
    struct dns_options dopt = {
        .addr = conf->dns_addr,
        .domain = conf->dns_domain,
        .alt_domain = conf->dns_alt_domain,
        .ttl = (uint32_t)(conf->dns_ttl_ms / 1000),
        .negative_ttl = (uint32_t)(conf->dns_negative_ttl_ms / 1000),
        .allow_warning = conf->dns_allow_warning && !conf->dns_only_passing,
        .udp_answer_limit = conf->dns_udp_answer_limit,
        .a_record_limit = conf->dns_a_record_limit,
        .node = conf->node,
        .datacenter = conf->datacenter,
        .server_service = conf->dns_server_service,
        .cluster = s->cluster,
        .enable_truncate = conf->dns_enable_truncate,
        .enable_additional_node_meta_txt = conf->dns_enable_additional_node_meta_txt,
        .node_meta = conf->node_meta,
        .node_addr = s->node_host,
        .store = s->store,
        .workers = conf->dns_workers,
    };
    if (dns_start(&dopt, &s->dns, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"cannot start DNS\" error=\"%s\"", err);
        return REG_EIO;
    }
    return 0;
}

/* SIGTERM/SIGINT (leave first when asked), SIGHUP (reload), the watchdog. */
static int install_signals(struct server *s, int argc, char **argv)
{
    s->leaving = (struct leaving){.base = s->base,
                                  .cluster = s->cluster,
                                  .enabled = s->clustered && s->cluster != NULL &&
                                             s->conf->leave_on_terminate};
    s->leaving.asked = event_new(s->base, -1, 0, on_stop_asked, &s->leaving);
    s->reload = (struct reload){argc, argv, s->conf, s->health};
    s->sigterm = evsignal_new(s->base, SIGTERM, on_signal, &s->leaving);
    s->sigint = evsignal_new(s->base, SIGINT, on_signal, &s->leaving);
    s->sighup = evsignal_new(s->base, SIGHUP, on_sighup, &s->reload);
    if (s->leaving.asked == NULL || s->sighup == NULL || event_add(s->sighup, NULL) != 0 ||
        service_start(s->base, &s->service) != 0) {
        log_error("server", "msg=\"cannot install SIGHUP or the watchdog\"");
        return REG_EIO;
    }
    if (!s->sigterm || !s->sigint || evsignal_add(s->sigterm, NULL) != 0 ||
        evsignal_add(s->sigint, NULL) != 0) {
        log_error("server", "msg=\"cannot install signal handlers\"");
        return REG_EIO;
    }
    return 0;
}

static int start_formation(struct server *s)
{
    char err[512] = "";
    struct formation_options fopt = {
        .cluster = s->cluster,
        .http_addr = s->advertise,
        .self_http = s->self_http,
        .bootstrap_expect = s->conf->bootstrap_expect,
        .join = s->conf->join,
        .tls_ca_file = s->conf->tls_ca_file,
        .tls_cert_file = s->conf->tls_cert_file,
        .tls_key_file = s->conf->tls_key_file,
    };
    if (formation_start(&fopt, &s->formation, err, sizeof(err)) != 0) {
        log_error("server", "msg=\"cannot form the cluster\" error=\"%s\"", err);
        return REG_ENOMEM;
    }
    return 0;
}

int server_start(struct conf *conf, int argc, char **argv, struct server **out)
{
    struct server *s = calloc(1, sizeof(*s));
    *out = s;
    if (s == NULL)
        return REG_ENOMEM;
    s->conf = conf;
    s->lock_fd = -1;
    s->clustered = conf->bootstrap_expect > 1 || conf->join != NULL;
    derive_addresses(s);
    int rc;
    if ((rc = heap_trim_start(HEAP_TRIM_INTERVAL_MS, &s->heap_trim)) != 0) {
        log_error("server", "msg=\"cannot start the heap trimmer\" error=\"%s\"",
                  reg_strerror(rc));
        return rc;
    }
    if ((rc = start_tls(s)) != 0 || (rc = open_data_dir(s)) != 0 ||
        (rc = start_store_and_cluster(s)) != 0 ||
        (rc = start_checker(s)) != 0 || (rc = start_front_end(s)) != 0 ||
        (rc = install_signals(s, argc, argv)) != 0 ||
        (s->clustered && (rc = start_formation(s)) != 0))
        return rc;
    char err[256];
    if ((rc = http_workers_serve(s->http, err, sizeof(err))) != 0) {
        log_error("http", "msg=\"cannot start the HTTP workers\" error=\"%s\"", err);
        return rc;
    }
    service_ready("serving");
    log_info("server", "msg=\"ready\" version=%s node=%s http_addr=%s https_addr=%s data_dir=%s%s",
             REGISTRYD_VERSION, conf->node, conf->http_addr ? conf->http_addr : "off",
             conf->https_addr ? conf->https_addr : "off", s->data_dir,
             conf->dev ? " dev=true" : "");
    return 0;
}

/* Raft has stopped: leave the record that lets the next start keep the
 * store (store.h), unless raft never ran or the store missed an apply. */
static void mark_store_clean(struct server *s)
{
    if (s->store == NULL || s->conf->dev || s->applied_at_stop == 0)
        return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/raft", s->data_dir);
    uint64_t fp = cluster_files_fingerprint(path);
    if (fp != 0 && store_mark_clean(s->store, s->applied_at_stop, fp) == 0)
        log_debug("server", "msg=\"store marked clean for the next start\" applied_index=%llu",
                  (unsigned long long)s->applied_at_stop);
}

int server_run(struct server *s)
{
    if (event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0) {
        log_error("server", "msg=\"event loop failed\"");
        return REG_EIO;
    }
    return 0;
}

void server_stop(struct server *s)
{
    if (s == NULL)
        return;
    service_stopping();
    /* Reverse order; parked and in-flight requests get their answers. The
     * checker goes first: it submits to the cluster. */
    s->listeners.health = NULL;
    formation_free(s->formation);
    dns_free(s->dns);
    health_stop(s->health); /* freed once no HTTP worker can call it (TTL updates) */
    /* Parked blocking queries are answered now, while the cluster can still
     * say who leads; changes the cluster delivers while it stops go nowhere. */
    s->listeners.watch = NULL;
    s->listeners.http = NULL;
    mailbox_free(s->listeners.mailbox); /* what is queued reaches the watch */
    s->listeners.mailbox = NULL;
    watch_free(s->watch);
    http_workers_stop(s->http);
    health_free(s->health);
    cluster_free(s->cluster);
    mark_store_clean(s);
    http_workers_free(s->http);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sigint)
        event_free(s->sigint);
    if (s->sighup)
        event_free(s->sighup);
    /* Stopping already: a second SIGTERM or SIGINT (a second Ctrl-C) is
     * ignored, not the default's end by the signal halfway through (freeing
     * the events put the default back) */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    leave_free_all(&s->leaving.leaves); /* the cluster calls back no more */
    if (s->leaving.asked)
        event_free(s->leaving.asked);
    service_free(s->service);
    common_base_free(s->base);
    store_free(s->store);
    recovery_free(s->recovery);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->dev_dir[0] != '\0')
        nftw(s->dev_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    tls_stop();
    heap_trim_stop(s->heap_trim);
    free(s);
}
