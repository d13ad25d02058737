/*
 * http_api.h — the Consul-shaped /v1 HTTP API on libevent's evhttp.
 *
 * Reads run on the front-end thread against LMDB read transactions; writes
 * are validated and normalised here, encoded as commands and submitted to
 * the cluster; the reply is sent when the command has been applied.
 * Catalog and health reads are blocking queries (watch.h).
 *
 * Two listeners may serve the same routes: plain HTTP and HTTPS (TLS from
 * tls.h's API context). Internal routes (/v1/internal/..., which carry the
 * forwarded-request envelope) answer only servers: with TLS configured, a
 * request that arrived over TLS from a peer whose CA-signed certificate
 * names server.DC.DOMAIN (and, with ACLs on, carries acl_server_token
 * too); anything else is 403.
 */
#ifndef REGISTRYD_HTTP_API_H
#define REGISTRYD_HTTP_API_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct store;
struct cluster;
struct watch;
struct health;
struct http_server;
struct http_shared;
struct mailbox;
struct cluster_link;

struct http_options {
    const char *addr;        /* listen "host:port" (plain HTTP), or NULL */
    const char *https_addr;  /* listen "host:port" (HTTPS, tls_api_ctx()), or NULL */
    const char *advertise;   /* where other servers reach this one's API */
    size_t max_body_size;    /* bytes; larger bodies get 413 */
    size_t max_snapshot_size; /* bytes; PUT /v1/snapshot's own limit */
    const char *spool_dir;    /* PUT /v1/snapshot bodies are written here (the data dir) */
    uint64_t head_timeout_ms; /* a request head must arrive within this; 0: no limit */
    uint64_t body_timeout_ms; /* and then its body within this; 0: no limit */
    unsigned max_conns_per_client; /* open connections per client IP; 0: no limit */
    double read_rate, write_rate; /* requests a second (GET/HEAD, others); 0: no limit */
    size_t cache_size;       /* bytes of rendered answers kept (http_cache.h) */
    size_t render_cache_size; /* bytes of per-record JSON kept (http_render.h) */
    const char *node;        /* this server's node name */
    const char *node_addr;   /* address reported for the node */
    const char *datacenter;
    const char *node_meta;   /* "key:value" lines joined by '\n', or NULL */
    bool enable_script_checks; /* registrations may carry Args */
    const char *dns_addr;    /* shown in /v1/agent/self's DebugConfig */
    const char *dns_domain;
    struct event_base *base; /* borrowed */
    struct store *store;     /* borrowed */
    struct cluster *cluster; /* borrowed */
    struct watch *watch;     /* borrowed */
    struct health *health;   /* borrowed; TTL heartbeats, checker state */
    /* PUT /v1/agent/leave, once this server has left its cluster:
     * stop(stop_arg) stops the process, from any thread; it returns at
     * once */
    void (*stop)(void *stop_arg);
    void *stop_arg;
    /* With several HTTP workers (http_workers.h), each runs one server on
     * its own loop (base, watch); these say which and what it shares: */
    unsigned worker;          /* its index, 0 for the main loop's */
    bool reuse_port;          /* listen with SO_REUSEPORT (more than one worker) */
    struct mailbox *mailbox;  /* its loop's (NULL on the main loop): where the
                                 cluster's completions are handed back */
    struct cluster_link *link; /* its own channel to the leader (NULL: the
                                  cluster's, on the main loop) */
    struct http_shared *shared; /* rate limits and per-client counts of every
                                   worker (NULL: its own) */
};

/* What every worker's server shares (made from opt's limits). Any thread
 * uses it (a mutex). 0 or REG_ENOMEM. Free after every server using it. */
int http_shared_new(const struct http_options *opt, struct http_shared **out) REG_MUSTCHECK;
void http_shared_free(struct http_shared *sh);

/* Bind and start serving, on addr and/or https_addr (at least one).
 * Returns 0 or REG_EIO / REG_EINVAL / REG_ENOMEM with err set. */
int http_start(const struct http_options *opt, struct http_server **out, char *err,
               size_t errlen) REG_MUSTCHECK;
void http_free(struct http_server *s);

/* A node id shaped like Consul's (a UUID), stable for a node name (out:
 * 37 bytes or more). */
void http_node_id(const char *node, char *out, size_t len);
/* The node name and address of the server at raft_addr, as it announced
 * them (this server's own, as configured); "" when not known (an older
 * server's announcement). addr may be NULL; so may meta, else *meta is its
 * node's meta (a new reference; NULL: none announced). */
struct store_read;
void http_server_node(struct http_server *srv, struct store_read *rd, const char *raft_addr,
                      char *node, size_t len, char *addr, size_t alen, struct json_t **meta);

#endif
