/*
 * cluster_peers.c — peer liveness and rendezvous ownership (see
 * cluster_peers.h). A peer's connection is freed only with no request
 * pending on it, and never inside its own callback.
 */
#include "cluster_peers.h"

#include "acl.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "check_rules.h"
#include "cluster.h"
#include "common.h"
#include "config.h"
#include "duration.h"
#include "hash.h"
#include "log.h"
#include "registry/error.h"
#include "store.h"

struct peer {
    uint64_t id;
    char http[128];
    struct evhttp_connection *evcon; /* kept open between probes */
    bool probing;
    uint64_t alive_until; /* ms */
};

struct cluster_peers {
    struct event_base *base;
    struct store *store;
    struct cluster *cluster;
    struct event *tick;
    struct peer peers[CLUSTER_MAX_SERVERS]; /* front-end thread */
    int n;

    struct probe_req *inflight;

    pthread_mutex_t lock; /* guards the published view below */
    bool leader;
    uint64_t self_id;
    int n_live, n_probed;
    uint64_t live[CLUSTER_MAX_SERVERS];
    uint64_t probed[CLUSTER_MAX_SERVERS]; /* peers with an address to probe */
};

/* A probe in flight: names its peer by id (the array may change). Kept in
 * a list, because a connection freed with a probe pending never calls it
 * back: what is left at the end is freed with the peers. */
struct probe_req {
    struct cluster_peers *p;
    uint64_t id;
    struct probe_req *prev, *next;
};

static void drop_conn(struct cluster_peers *p, struct peer *peer)
{
    common_free_evcon_later(p->base, peer->evcon);
    peer->evcon = NULL;
}

static struct peer *find(struct cluster_peers *p, uint64_t id)
{
    for (int i = 0; i < p->n; i++)
        if (p->peers[i].id == id)
            return &p->peers[i];
    return NULL;
}

/* Publish who is alive now; st (when given) refreshes leadership too. */
static void publish(struct cluster_peers *p, const struct cluster_status *st)
{
    uint64_t now = mono_ms();
    pthread_mutex_lock(&p->lock);
    if (st != NULL) {
        p->leader = st->is_leader;
        p->self_id = st->self_id;
    }
    p->n_live = 0;
    p->n_probed = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->peers[i].alive_until >= now)
            p->live[p->n_live++] = p->peers[i].id;
        if (p->peers[i].http[0])
            p->probed[p->n_probed++] = p->peers[i].id;
    }
    pthread_mutex_unlock(&p->lock);
}

static void req_unlink(struct cluster_peers *p, struct probe_req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        p->inflight = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

static void probe_done(struct evhttp_request *req, void *arg)
{
    struct probe_req *q = arg;
    struct cluster_peers *p = q->p;
    req_unlink(p, q);
    struct peer *peer = find(p, q->id);
    if (peer != NULL) {
        peer->probing = false;
        bool was_alive = peer->alive_until >= mono_ms();
        if (req && evhttp_request_get_response_code(req) == 200)
            peer->alive_until = mono_ms() + PEERS_ALIVE_MS;
        else
            drop_conn(p, peer); /* a fresh connection next time */
        if (!was_alive && peer->alive_until >= mono_ms())
            publish(p, NULL); /* a peer came alive: share its checks now */
    }
    free(q);
}

static void probe(struct cluster_peers *p, struct peer *peer)
{
    char host[128];
    unsigned short port;
    if (peer->probing || conf_split_hostport(peer->http, host, sizeof(host), &port) != 0)
        return;
    if (peer->evcon == NULL) {
        /* mutual TLS when on; a failed probe drops the connection, so the
         * next one takes the current certificate (common.h) */
        peer->evcon = common_server_evcon_new(p->base, host, port);
        if (peer->evcon == NULL)
            return;
        evhttp_connection_set_timeout(peer->evcon, PEERS_ALIVE_MS / 1000);
        evhttp_connection_set_retries(peer->evcon, 0);
    }
    struct probe_req *q = calloc(1, sizeof(*q));
    struct evhttp_request *req = q ? evhttp_request_new(probe_done, q) : NULL;
    if (req == NULL) {
        free(q);
        return;
    }
    *q = (struct probe_req){.p = p, .id = peer->id, .next = p->inflight};
    if (p->inflight)
        p->inflight->prev = q;
    p->inflight = q;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", peer->http);
    if (acl_server_secret()) /* internal routes answer servers only */
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Consul-Token",
                          acl_server_secret());
    peer->probing = true;
    if (evhttp_make_request(peer->evcon, req, EVHTTP_REQ_GET, "/v1/internal/raft/self") != 0) {
        peer->probing = false; /* req freed by libevent, without its callback */
        req_unlink(p, q);
        free(q);
    }
}

/* Every second: the voters (but this one), their HTTP addresses as they
 * announced them, a probe of each; then publish who is alive. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cluster_peers *p = arg;
    struct cluster_status st;
    cluster_get_status(p->cluster, &st);
    struct peer old[CLUSTER_MAX_SERVERS];
    int nold = p->n;
    memcpy(old, p->peers, sizeof(old));
    p->n = 0;
    struct store_read *rd = NULL;
    for (int i = 0; i < st.n_servers && i < CLUSTER_MAX_SERVERS; i++) {
        if (!st.servers[i].voter || st.servers[i].id == st.self_id)
            continue;
        struct peer *peer = &p->peers[p->n++];
        *peer = (struct peer){.id = st.servers[i].id};
        for (int j = 0; j < nold; j++)
            if (old[j].id == peer->id) {
                *peer = old[j]; /* what we knew, with its connection */
                old[j].evcon = NULL;
            }
        json_t *server = NULL;
        if (rd != NULL || store_read_begin(p->store, &rd) == 0)
            store_get_server(rd, st.servers[i].addr, &server);
        const char *http = json_string_value(json_object_get(server, "HTTP"));
        if (http && strcmp(http, peer->http) != 0) { /* moved: a new connection */
            snprintf(peer->http, sizeof(peer->http), "%s", http);
            if (!peer->probing)
                drop_conn(p, peer);
        }
        json_decref(server);
        if (peer->http[0])
            probe(p, peer);
    }
    if (rd)
        store_read_end(rd);
    for (int j = 0; j < nold; j++) /* peers that left the configuration */
        drop_conn(p, &old[j]);
    publish(p, &st);
}

bool cluster_peers_owns(struct cluster_peers *p, const char *check_id, bool ttl)
{
    pthread_mutex_lock(&p->lock);
    bool mine;
    if (ttl || p->n_live == 0) {
        mine = p->leader;
    } else {
        mine = rules_rendezvous_self(hash_fnv1a64(check_id), p->self_id, p->live,
                                     (size_t)p->n_live);
    }
    pthread_mutex_unlock(&p->lock);
    return mine;
}

bool cluster_peers_alive(struct cluster_peers *p, uint64_t id)
{
    if (p == NULL)
        return true;
    pthread_mutex_lock(&p->lock);
    bool alive = id == p->self_id;
    bool probed = false;
    for (int i = 0; i < p->n_probed && !alive; i++)
        probed = probed || p->probed[i] == id;
    for (int i = 0; i < p->n_live && !alive; i++)
        alive = p->live[i] == id;
    pthread_mutex_unlock(&p->lock);
    return alive || !probed;
}

int cluster_peers_n_alive(struct cluster_peers *p)
{
    if (p == NULL)
        return 1;
    pthread_mutex_lock(&p->lock);
    int n = 1 + p->n_live;
    pthread_mutex_unlock(&p->lock);
    return n;
}

int cluster_peers_new(struct event_base *base, struct store *store, struct cluster *cluster,
                      struct cluster_peers **out)
{
    struct cluster_peers *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return REG_ENOMEM;
    p->base = base;
    p->store = store;
    p->cluster = cluster;
    pthread_mutex_init(&p->lock, NULL);
    p->tick = event_new(base, -1, EV_PERSIST, tick_cb, p);
    struct timeval tv = {PEERS_PROBE_MS / 1000, (PEERS_PROBE_MS % 1000) * 1000};
    if (p->tick == NULL || event_add(p->tick, &tv) != 0) {
        cluster_peers_free(p);
        return REG_ENOMEM;
    }
    event_active(p->tick, EV_TIMEOUT, 0); /* the first look at once */
    *out = p;
    return 0;
}

void cluster_peers_free(struct cluster_peers *p)
{
    if (p == NULL)
        return;
    if (p->tick)
        event_free(p->tick);
    /* Pending probes are dropped with their connections (evhttp does not
     * call them back). */
    for (int i = 0; i < p->n; i++)
        if (p->peers[i].evcon)
            evhttp_connection_free(p->peers[i].evcon);
    while (p->inflight) {
        struct probe_req *q = p->inflight;
        p->inflight = q->next;
        free(q);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}
