/*
 * cluster_link.h — the one server-to-server channel: persistent HTTP
 * connections from this server to the leader's HTTP API, on the front end's
 * event loop.
 *
 * Everything one server asks of another goes through here: writes and
 * ?consistent reads a follower received from a client (wrapped in
 * PUT /v1/internal/forward, so that the names of the original request travel
 * in headers that only the internal route reads), and commands a follower
 * proposes itself (check results of the checks it owns, batched into one
 * PUT /v1/internal/apply when several wait). Connections are kept open and
 * reused; a new one is opened only while every open one is busy, up to
 * LINK_MAX_CONNS, beyond which requests queue on the least busy. A change
 * of leader retires the old connections once their requests are answered.
 * With ACLs on, every request sent carries the acl_server_token
 * (link_send). With TLS configured every connection is HTTPS with mutual
 * TLS, to the leader's announced (HTTPS) address: link_conn_new, the one
 * place connections are made, goes through common_server_evcon_new. A
 * connection that closes or fails is replaced, never reopened (a new one
 * presents the certificate loaded now).
 *
 * Threads: everything runs on the front end's loop, except
 * cluster_link_propose, which any thread may call.
 */
#ifndef REGISTRYD_CLUSTER_LINK_H
#define REGISTRYD_CLUSTER_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "cluster.h"

struct event_base;
struct store;
struct cluster_link;

/* A connection is reused for this many seconds of silence at most. */
#define LINK_TIMEOUT_S 30
#define LINK_MAX_CONNS 64
/* At most this many commands travel in one PUT /v1/internal/apply. */
#define LINK_APPLY_BATCH 256

/* base and store are borrowed and outlive the link. */
int cluster_link_new(struct event_base *base, struct store *store, struct cluster *cluster,
                     struct cluster_link **out) __attribute__((warn_unused_result));
/* Answer every queued proposal with REG_ESHUTDOWN and free. NULL: no-op. */
void cluster_link_free(struct cluster_link *l);

/*
 * The leader's HTTP address as it announced it ("host:port" into addr), or
 * REG_ENOTLEADER when no leader is known and REG_ENOTFOUND when its
 * announcement has not reached this server yet.
 */
int cluster_link_leader_http(struct cluster_link *l, char *addr, size_t addrlen);

/* The answer to a request sent to the leader, borrowed for the duration of
 * the call; failed says why there is none (resp is then NULL, or holds no
 * answer): REG_ECONNECT, the leader could not be reached or did not
 * answer; REG_ELEADERLOST, a server that no longer leads stopped answering
 * and the request was given up (it may have been done); REG_ESHUTDOWN,
 * this server is stopping. 0: resp is the leader's answer. */
typedef void (*cluster_link_cb)(void *arg, struct evhttp_request *resp, int failed);

/* Who a forwarded request came from, and its body when that is a file. */
struct cluster_forward {
    const char *node, *node_addr;
    const char *node_meta;    /* its Meta as JSON text, or NULL */
    const char *client_token; /* borrowed; NULL: none */
    int body_fd;              /* -1: the body is req's input buffer; else a
                                 file of body_len bytes (borrowed; the link
                                 reads its own duplicate), sent to
                                 REG_FORWARD_SPOOLED_URI */
    uint64_t body_len;
    bool waited; /* a blocking query that waited here: the leader answers at
                    once (X-Registry-Waited) */
    bool again;  /* a read without a body, which may be sent again: given up
                    as the others' (REG_ELEADERLOST) once another server
                    leads, not waited for LINK_TIMEOUT_S */
};

/*
 * Send the client's request `req` (method, URI, body, which is moved) to the
 * leader wrapped in PUT /v1/internal/forward, naming the node that received
 * it, carrying the client's token for the leader's own ACL decision.
 * cb runs exactly once, later, unless this returns non-zero
 * (REG_ENOTLEADER/REG_ENOTFOUND as cluster_link_leader_http, REG_ENOMEM).
 */
int cluster_link_forward(struct cluster_link *l, struct evhttp_request *req,
                         const struct cluster_forward *from, cluster_link_cb cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Send `method uri` (no body) to the leader; cb as for cluster_link_forward,
 * with the same errors. For what a server asks the leader on its own behalf
 * (leaving the cluster).
 */
int cluster_link_request(struct cluster_link *l, enum evhttp_cmd_type method, const char *uri,
                         cluster_link_cb cb, void *arg) __attribute__((warn_unused_result));

/*
 * Propose an encoded command (taken; allocated with cluster_alloc) to the
 * leader from any thread. cb runs on the front end's thread with the
 * command's outcome, as for cluster_submit.
 */
void cluster_link_propose(struct cluster_link *l, void *buf, size_t len, cluster_done_cb cb,
                          void *arg);

/* The receiving side of PUT /v1/internal/apply: split a batch into its
 * commands. Returns the number of commands (<= max) or REG_EINVAL; each
 * cmds[i]/lens[i] points into body. */
int cluster_link_split_batch(const unsigned char *body, size_t len, const unsigned char **cmds,
                             size_t *lens, size_t max);

#endif
