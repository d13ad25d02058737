/*
 * main.c — registryd: configuration, start-up order, signals, shutdown.
 *
 * Start-up: config (all errors before anything starts) -> data dir (locked)
 * -> store -> raft (waits until this server leads and has replayed its log)
 * -> HTTP listener -> one "ready" line. SIGTERM/SIGINT stop the loop; parked
 * and in-flight requests are answered, then everything is freed in reverse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acl.h"
#include "check_target.h"
#include "cluster.h"
#include "cluster_link.h"
#include "config.h"
#include "http_api.h"
#include "log.h"
#include "metrics.h"
#include "registry/error.h"
#include "recovery.h"
#include "store.h"
#include "watch.h"
#include "health.h"
#include "dns_server.h"
#include "formation.h"
#include "service.h"

/* Who hears about applied changes: blocking queries and the checker. */
struct change_listeners {
    struct watch *watch;
    struct health *health;
};

static void on_change(void *arg, const struct store_change *chg)
{
    struct change_listeners *l = arg;
    if (l->watch != NULL)
        watch_notify(l->watch, chg);
    health_notify(l->health, chg);
}

/* What SIGTERM needs to leave the cluster first (leave_on_terminate). */
struct leaving {
    struct event_base *base;
    struct cluster *cluster;
    bool enabled, started;
    struct event *retry;
    int tries;
};

static void left(void *arg, int status)
{
    struct leaving *l = arg;
    if (status != 0)
        log_warn("main", "msg=\"could not leave the cluster\" error=\"%s\"",
                 reg_strerror(status));
    else
        log_info("main", "msg=\"left the cluster\"");
    event_base_loopexit(l->base, NULL);
}

static void leave_answered(void *arg, struct evhttp_request *resp)
{
    int code = resp ? evhttp_request_get_response_code(resp) : 0;
    left(arg, code == 200 ? 0 : code == 0 ? REG_ECONNECT : REG_ESERVER);
}

#define LEAVE_RETRY_MS 100
#define LEAVE_TRIES 50 /* a server that just joined may not know the leader's address yet */

/* A follower asks the leader, over the server-to-server channel, to remove
 * it; the front end keeps running meanwhile. */
static void leave_via_leader(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct leaving *l = arg;
    struct cluster_status st;
    cluster_get_status(l->cluster, &st);
    char uri[96];
    snprintf(uri, sizeof(uri), "/v1/operator/raft/peer?id=%llu", (unsigned long long)st.self_id);
    int rc = cluster_link_request(cluster_get_link(l->cluster), EVHTTP_REQ_DELETE, uri,
                                  leave_answered, l);
    if (rc == 0)
        return;
    struct timeval tv = {0, LEAVE_RETRY_MS * 1000};
    if ((rc == REG_ENOTLEADER || rc == REG_ENOTFOUND) && ++l->tries < LEAVE_TRIES &&
        event_add(l->retry, &tv) == 0)
        return;
    left(l, rc);
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
        .self_preservation_share = c->self_preservation_share,
        .self_preservation_window_ms = c->self_preservation_window_ms,
        .self_preservation_min = c->self_preservation_min,
    };
}

/* Settings a reload applies at once (conf_diff reports every other change
 * as needing a restart; the running conf keeps its start-up values). */
static const char *const live_keys[] = {"log_level", "check_max_concurrent",
                                        "check_update_interval", "self_preservation_share",
                                        "self_preservation_window", "self_preservation_min"};

static void not_applied(const char *key, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof(live_keys) / sizeof(live_keys[0]); i++)
        if (strcmp(key, live_keys[i]) == 0)
            return;
    log_warn("main", "msg=\"setting changed in the configuration; restart to apply\" key=%s",
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
        log_error("main", "msg=\"reload failed; keeping the running configuration\" error=\"%s\"",
                  err);
    } else {
        if (fresh.log_level != rl->current->log_level) {
            log_init(fresh.log_level);
            rl->current->log_level = fresh.log_level;
            log_warn("main", "msg=\"log level changed\" log_level=%s",
                     log_level_name(fresh.log_level));
        }
        struct health_limits limits = health_limits_of(&fresh);
        health_set_limits(rl->health, &limits);
        conf_diff(rl->current, &fresh, not_applied, NULL);
        log_info("main", "msg=\"configuration reloaded\"");
    }
    conf_fini(&fresh);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct leaving *l = arg;
    (void)what;
    if (l->enabled && sig == SIGTERM && !l->started && l->cluster) {
        struct cluster_status st;
        cluster_get_status(l->cluster, &st);
        l->started = true;
        log_info("main", "msg=\"leaving the cluster before shutting down\"");
        struct timeval grace = {10, 0}; /* leave or not, stop within 10 s */
        event_base_loopexit(l->base, &grace);
        if (st.is_leader) {
            cluster_remove(l->cluster, st.self_id, left, l);
            return;
        }
        l->retry = evtimer_new(l->base, leave_via_leader, l);
        if (l->retry != NULL) {
            leave_via_leader(-1, 0, l);
            return;
        }
    }
    log_info("main", "msg=\"shutting down\" signal=%d", (int)sig);
    event_base_loopexit(l->base, NULL);
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

int main(int argc, char **argv)
{
    struct conf conf = {0};
    char err[512] = "";
    char dev_dir[] = "/tmp/registryd-dev-XXXXXX";
    const char *data_dir;
    struct event_base *base = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL;
    struct service *service = NULL;
    struct store *store = NULL;
    struct watch *watch = NULL;
    struct cluster *cluster = NULL;
    struct http_server *http = NULL;
    struct health *health = NULL;
    struct dns_server *dns = NULL;
    struct formation *formation = NULL;
    struct recovery *recovery = NULL;
    struct leaving leaving = {0};
    struct change_listeners listeners = {0};
    int lock_fd = -1, status = 1;

    int rc = conf_load(&conf, argc, argv, stdout, err, sizeof(err));
    if (rc == REG_EEXIT) {
        conf_fini(&conf);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "registryd: %s\n", err);
        conf_fini(&conf);
        return 2;
    }
    if (conf.check_only) {
        printf("configuration OK\n");
        conf_fini(&conf);
        return 0;
    }
    log_init(conf.log_level);
    signal(SIGPIPE, SIG_IGN);
    struct acl_config acl_cfg = {
        .enabled = conf.acl_enabled,
        .default_allow = strcmp(conf.acl_default_policy, "allow") == 0,
        .initial_management = conf.acl_initial_management_token,
        .default_token = conf.acl_default_token,
        .server_token = conf.acl_server_token,
    };
    if (acl_configure(&acl_cfg) != 0) {
        log_error("main", "msg=\"cannot configure ACLs\"");
        goto out;
    }
    if (evthread_use_pthreads() != 0) {
        log_error("main", "msg=\"libevent threading unavailable\"");
        goto out;
    }

    if (conf.dev) {
        if (mkdtemp(dev_dir) == NULL) {
            log_error("main", "msg=\"cannot create dev data dir\" error=\"%s\"", strerror(errno));
            goto out;
        }
        data_dir = dev_dir;
    } else {
        data_dir = conf.data_dir;
        if (mkdir_p(data_dir) != 0) {
            log_error("main", "msg=\"cannot create data dir\" data_dir=%s error=\"%s\"", data_dir,
                      strerror(errno));
            goto out;
        }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", data_dir);
    lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0) { /* read-only file system, LOCK a directory, no permission... */
        log_error("main", "msg=\"cannot open the data dir's lock file\" path=%s error=\"%s\"",
                  path, strerror(errno));
        goto out;
    }
    if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            log_error("main", "msg=\"data dir is in use by another registryd\" data_dir=%s",
                      data_dir);
        else
            log_error("main", "msg=\"cannot lock the data dir\" path=%s error=\"%s\"", path,
                      strerror(errno));
        goto out;
    }
    bool clustered = conf.bootstrap_expect > 1 || conf.join != NULL;
    if (!conf.dev && !clustered &&
        recovery_before(data_dir, conf.recover_from_store, &recovery, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"refusing to start\" error=\"%s\"", err);
        goto out;
    }

    snprintf(path, sizeof(path), "%s/store", data_dir);
    if (store_open(path, &store, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"cannot open store\" error=\"%s\"", err);
        goto out;
    }
    base = event_base_new();
    if (base == NULL || watch_new(base, &watch) != 0) {
        log_error("main", "msg=\"cannot create event loop\"");
        goto out;
    }
    struct cluster_options copt = {
        .data_dir = data_dir,
        .raft_addr = conf.raft_addr,
        .store = store,
        .base = base,
        .on_change = on_change,
        .change_arg = &listeners,
        .on_applied = metrics_raft_apply,
    };
    listeners.watch = watch;
    /* The HTTP address other servers forward to: a wildcard listener is
     * announced with the raft address's host. */
    char advertise[320];
    {
        char hh[256], rh[256];
        unsigned short hp, rp;
        snprintf(advertise, sizeof(advertise), "%s", conf.http_addr);
        if (conf_split_hostport(conf.http_addr, hh, sizeof(hh), &hp) == 0 &&
            (strcmp(hh, "0.0.0.0") == 0 || strcmp(hh, "::") == 0) && conf.raft_addr &&
            conf_split_hostport(conf.raft_addr, rh, sizeof(rh), &rp) == 0)
            snprintf(advertise, sizeof(advertise), "%s:%u", rh, hp);
    }
    copt.http_addr = advertise;
    /* Where this process reaches its own HTTP API (to forward what the
     * checker finds when another server leads). */
    char self_http[320];
    {
        char hh[256];
        unsigned short hp;
        snprintf(self_http, sizeof(self_http), "%s", conf.http_addr);
        if (conf_split_hostport(conf.http_addr, hh, sizeof(hh), &hp) == 0 &&
            (strcmp(hh, "0.0.0.0") == 0 || strcmp(hh, "::") == 0))
            snprintf(self_http, sizeof(self_http), "127.0.0.1:%u", hp);
    }
    copt.snapshot_threshold = conf.raft_snapshot_threshold;
    /* A single server starts raft here and is its own leader before it
     * serves; a cluster member serves first (the others must reach it) and
     * forms or joins the cluster on the formation thread. */
    int crc = clustered ? cluster_new(&copt, &cluster, err, sizeof(err))
                        : cluster_start(&copt, &cluster, err, sizeof(err));
    if (crc != 0) {
        log_error("main", "msg=\"cannot start raft\" error=\"%s\"", err);
        goto out;
    }
    if (recovery && recovery_after(recovery, store, cluster, base, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"refusing to start\" error=\"%s\"", err);
        goto out;
    }
    struct health_options health_opt = {
        .store = store,
        .cluster = cluster,
        .limits = health_limits_of(&conf),
        .enable_script_checks = conf.enable_script_checks,
    };
    {
        /* Checks may not aim at this server's own listeners (nor at what
         * check_deny_cidrs names). */
        uint64_t self_id;
        const char *self_raft = NULL;
        cluster_self(cluster, &self_id, &self_raft);
        const char *own[] = {conf.http_addr, conf.dns_addr, self_raft, NULL};
        if (check_target_configure(conf.check_deny_cidrs, conf.check_allow_cidrs, own, err,
                                   sizeof(err)) != 0) {
            log_error("main", "msg=\"bad check address lists\" error=\"%s\"", err);
            goto out;
        }
    }
    if (health_start(&health_opt, &health, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"cannot start the health checker\" error=\"%s\"", err);
        goto out;
    }
    listeners.health = health;

    char host[256];
    unsigned short port;
    if (conf_split_hostport(conf.http_addr, host, sizeof(host), &port) != 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct http_options hopt = {
        .addr = conf.http_addr,
        .max_body_size = conf.max_body_size,
        .max_snapshot_size = conf.max_snapshot_size,
        .head_timeout_ms = conf.http_head_timeout_ms,
        .body_timeout_ms = conf.http_body_timeout_ms,
        .node = conf.node,
        .node_addr = host,
        .datacenter = conf.datacenter,
        .node_meta = conf.node_meta,
        .enable_script_checks = conf.enable_script_checks,
        .dns_addr = conf.dns_addr,
        .dns_domain = conf.dns_domain,
        .base = base,
        .store = store,
        .cluster = cluster,
        .watch = watch,
        .health = health,
    };
    if (http_start(&hopt, &http, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"cannot start HTTP API\" error=\"%s\"", err);
        goto out;
    }
    struct dns_options dopt = {
        .addr = conf.dns_addr,
        .domain = conf.dns_domain,
        .ttl = (uint32_t)(conf.dns_ttl_ms / 1000),
        .negative_ttl = (uint32_t)(conf.dns_negative_ttl_ms / 1000),
        .allow_warning = conf.dns_allow_warning,
        .udp_answer_limit = conf.dns_udp_answer_limit,
        .node = conf.node,
        .datacenter = conf.datacenter,
        .server_service = conf.dns_server_service,
        .cluster = cluster,
        .enable_truncate = conf.dns_enable_truncate,
        .node_addr = host,
        .base = base,
        .store = store,
    };
    if (dns_start(&dopt, &dns, err, sizeof(err)) != 0) {
        log_error("main", "msg=\"cannot start DNS\" error=\"%s\"", err);
        goto out;
    }
    leaving = (struct leaving){.base = base, .cluster = cluster,
                               .enabled = clustered && conf.leave_on_terminate};
    sigterm = evsignal_new(base, SIGTERM, on_signal, &leaving);
    sigint = evsignal_new(base, SIGINT, on_signal, &leaving);
    struct reload reload = {argc, argv, &conf, health};
    sighup = evsignal_new(base, SIGHUP, on_sighup, &reload);
    if (sighup == NULL || event_add(sighup, NULL) != 0 || service_start(base, &service) != 0) {
        log_error("main", "msg=\"cannot install SIGHUP or the watchdog\"");
        goto out;
    }
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) != 0 || evsignal_add(sigint, NULL) != 0) {
        log_error("main", "msg=\"cannot install signal handlers\"");
        goto out;
    }
    if (clustered) {
        struct formation_options fopt = {
            .cluster = cluster,
            .http_addr = advertise,
            .self_http = self_http,
            .bootstrap_expect = conf.bootstrap_expect,
            .join = conf.join,
        };
        if (formation_start(&fopt, &formation, err, sizeof(err)) != 0) {
            log_error("main", "msg=\"cannot form the cluster\" error=\"%s\"", err);
            goto out;
        }
    }
    service_ready("serving");
    log_info("main", "msg=\"ready\" version=%s node=%s http_addr=%s data_dir=%s%s",
             REGISTRYD_VERSION, conf.node, conf.http_addr, data_dir, conf.dev ? " dev=true" : "");
    if (event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY) < 0) {
        log_error("main", "msg=\"event loop failed\"");
        goto out;
    }
    status = 0;

out:
    service_stopping();
    /* Reverse order; parked and in-flight requests get their answers. The
     * checker goes first: it submits to the cluster. */
    listeners.health = NULL;
    formation_free(formation);
    dns_free(dns);
    health_free(health);
    /* Parked blocking queries are answered now, while the cluster can still
     * say who leads; changes the cluster delivers while it stops go nowhere. */
    listeners.watch = NULL;
    watch_free(watch);
    cluster_free(cluster);
    http_free(http);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sighup)
        event_free(sighup);
    if (leaving.retry)
        event_free(leaving.retry);
    service_free(service);
    if (base)
        event_base_free(base);
    store_free(store);
    recovery_free(recovery);
    if (lock_fd >= 0)
        close(lock_fd);
    if (conf.dev && dev_dir[strlen(dev_dir) - 1] != 'X')
        nftw(dev_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (status == 0)
        log_info("main", "msg=\"stopped\"");
    acl_shutdown();
    conf_fini(&conf);
    return status;
}
