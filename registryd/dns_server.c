/*
 * dns_server.c — see dns_server.h. Transport (UDP socket, TCP listener and
 * connections), the name → lookup mapping, and the per-service cache of
 * passing instances.
 *
 * Threads: dns_start starts dns_workers threads. Each owns a struct
 * dns_worker (its event_base, its UDP socket and TCP listener bound to
 * dns_addr with SO_REUSEPORT, its TCP connections, its caches, its buffers
 * and its metrics shard) and touches no other worker's. What they share is
 * struct dns_server, read-only once the threads run (options and domain),
 * and, through other modules: the store (each worker keeps one LMDB read
 * handle, renewed for each question and reset after it: a read transaction
 * per question, with no allocation or reader-table lock; the environment is
 * opened MDB_NOTLS), the metrics (a shard per worker), the cluster's status
 * (cluster_get_status copies it under its lock), ACL decisions (settings set
 * before the threads start; the resolution cache is locked) and logging
 * (one fprintf per line). dns_free stops every worker (an event activated
 * on its base from this thread), joins them, then frees their state.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "dns_server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>

#include "acl.h"
#include "cluster.h"
#include "config.h"
#include "dns_wire.h"
#include "duration.h"
#include "log.h"
#include "metrics.h"
#include "registry/error.h"
#include "store.h"
#include "strmap.h"

#define CACHE_MAX 10000     /* services kept decoded per worker; beyond that its cache restarts */
#define TCP_MAX_CONNS 512   /* over all workers; each takes its share (at least TCP_MIN_CONNS) */
#define TCP_MIN_CONNS 16
#define TCP_IDLE_SECONDS 10
#define TCP_QUERY_SECONDS 5 /* from a query's first byte to its last: a trickle cannot
                               hold a connection by sending a byte per idle timeout */
#define TCP_CLIENT_SHARE 4  /* one client address holds at most 1/4 of a worker's
                               connections (RFC 7766 6.2.2) */
#define TCP_QUEUED_MAX (256 * 1024) /* answer bytes queued for one connection before it
                                      stops being read: four of the largest */
#define UDP_VLEN 32         /* datagrams per recvmmsg/sendmmsg */
#define UDP_ROUNDS 4        /* recvmmsg calls per wake-up at most */

/* One answerable instance, decoded from the store. */
struct dns_inst {
    int family;             /* AF_INET, AF_INET6, or 0: Address is a host name */
    uint8_t ip[16];
    /* SRV target: HEX.addr.DC or NODE.node.DC, to be followed by the
     * domain asked (target_rel), or a host name (with its final dot) */
    char target[DNS_NAME_MAX + 1];
    uint8_t target_len; /* strlen(target), for target_rel ones (< 255) */
    bool target_rel;
    uint16_t port, weight;
    json_t *tags;           /* array of strings (owned) */
    json_t *meta;           /* object of strings (owned), for TXT */
    json_t *node;           /* its Node, a string (owned; NULL: this server's) */
    json_t *node_meta;      /* its node's Meta as the instance carries it (owned; NULL:
                             * none): node_meta_of says whose counts */
};

struct dns_service {
    char *name;       /* as stored (a query may differ in case) */
    uint64_t index;   /* store_name_index when decoded */
    size_t total;     /* instances of the name, answerable or not */
    size_t n;
    struct dns_inst *v;
};

struct tcp_conn {
    struct dns_worker *w;
    struct bufferevent *bev;
    struct tcp_conn *prev, *next;
    uint8_t peer[16];     /* the client's address, IPv4 as IPv4-mapped IPv6 */
    double partial_since; /* mono_seconds of an unfinished query's first read; 0: none */
    bool closing;         /* read no more; close once the answers queued are out */
};

/* Datagrams are read and answered UDP_VLEN at a time: one recvmmsg and one
 * sendmmsg instead of a recvfrom and a sendto per query (most of a query's
 * cost is the system calls). A query larger than DNS_UDP_MAX (the most we
 * advertise and accept) is dropped. */
struct udp_batch {
    struct mmsghdr in[UDP_VLEN], out[UDP_VLEN];
    struct iovec iin[UDP_VLEN], iout[UDP_VLEN];
    struct sockaddr_storage from[UDP_VLEN];
    uint8_t q[UDP_VLEN][DNS_UDP_MAX], a[UDP_VLEN][DNS_UDP_MAX];
};

/* One DNS thread and everything only it touches while it runs. */
/* Which records an answer holds already, by a 64-bit hash of their data
 * (a 64 KiB message has fewer records than slots); a generation number
 * empties it at once. */
#define SEEN_SLOTS 8192
struct seen_set {
    uint64_t hash[SEEN_SLOTS];
    uint32_t gen[SEEN_SLOTS];
    uint32_t cur;
    size_t count;
};

static struct seen_set *seen_reset(struct dns_worker *w);

/* Add (bytes, extra) to the set: false when it was there already. A full
 * set takes everything as new. */
static bool seen_add(struct seen_set *set, const char *bytes, size_t len, unsigned extra)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)bytes[i]) * 1099511628211ULL;
    h = (h ^ extra) * 1099511628211ULL;
    if (set->count >= SEEN_SLOTS / 2)
        return true;
    for (size_t i = (size_t)(h % SEEN_SLOTS);; i = (i + 1) % SEEN_SLOTS) {
        if (set->gen[i] != set->cur) {
            set->gen[i] = set->cur;
            set->hash[i] = h;
            set->count++;
            return true;
        }
        if (set->hash[i] == h)
            return false;
    }
}

struct dns_worker {
    struct dns_server *s; /* shared, read-only */
    unsigned id;
    pthread_t thread;
    bool started;         /* thread is to be joined */
    struct event_base *base;
    struct event *stop_ev; /* activated by dns_free: breaks the loop */
    evutil_socket_t udp_fd;
    struct event *udp_ev;
    struct evconnlistener *tcp;
    int tcp_conns;
    struct tcp_conn *conns; /* open TCP connections, freed with the worker */
    struct strmap *cache;
    struct strmap *lower;  /* lower-case service name -> its registered spelling (malloc'd) */
    uint64_t lower_index;  /* store_services_index the map was built at */
    struct strmap *lower_nodes; /* the same for node names */
    uint64_t lower_nodes_index; /* store_nodes_index that map was built at */
    struct dns_service none;    /* what a name without instances answers (never cached) */
    uint64_t rand_state;
    struct metrics_dns_shard *metrics;
    struct store_read *rd; /* reset between questions (read_begin renews it) */
    struct seen_set seen;  /* the records of the answer being built */
    uint8_t inbuf[65536], outbuf[65536]; /* TCP */
    struct udp_batch *udp;                /* UDP: one recvmmsg's worth */
};

static struct seen_set *seen_reset(struct dns_worker *w)
{
    struct seen_set *set = &w->seen;
    if (++set->cur == 0) { /* wrapped: old generations could match again */
        memset(set->gen, 0, sizeof(set->gen));
        set->cur = 1;
    }
    set->count = 0;
    return set;
}

/* Shared by the workers; not written once they run. */
struct dns_server {
    struct dns_options opt;
    char ns_addr[INET6_ADDRSTRLEN]; /* ns.DOMAIN's address: where DNS listens (node_addr
                                     * when that is a wildcard) */
    char *domain;   /* owned copy */
    size_t domain_len;
    char *alt_domain; /* answered as domain is, with names in it; NULL: none */
    size_t alt_domain_len;
    json_t *node_meta; /* this node's Meta (opt.node_meta), an object (owned) */
    int max_conns;  /* TCP connections per worker */
    unsigned nworkers;
    struct dns_worker **workers; /* nworkers, each allocated on its own */
};

/* ---- the cache of decoded services ------------------------------------- */

static void service_free(struct dns_service *svc)
{
    if (svc == NULL)
        return;
    for (size_t i = 0; i < svc->n; i++) {
        json_decref(svc->v[i].tags);
        json_decref(svc->v[i].meta);
        json_decref(svc->v[i].node);
        json_decref(svc->v[i].node_meta);
    }
    free(svc->v);
    free(svc->name);
    free(svc);
}

static void cache_free_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    service_free(value);
}

static void cache_clear(struct dns_worker *w)
{
    strmap_each(w->cache, cache_free_entry, NULL);
    strmap_free(w->cache);
    w->cache = strmap_new();
}

/* Labels of [a-z0-9_-], 1 to 63 bytes each, split by dots (dots allowed
 * only when `dots`), max bytes in all: what answer_name reads back as the
 * same name. Upper case is left out: a query arrives in lower case and
 * finds a node spelt so first, which may be another node. */
static bool plain_labels(const char *s, bool dots, size_t max)
{
    size_t len = strlen(s), label = 0;
    if (len == 0 || len > max || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        if (*p == '.' && dots && label > 0) {
            label = 0;
            continue;
        }
        if (++label > 63 || !((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                              *p == '-' || *p == '_'))
            return false;
    }
    return true;
}

/* The datacenter as a label of the names we give (SRV targets, the owners
 * of node Meta TXT): "" when it is not one DNS label, or so long that a
 * node's name would not fit beside it (a domain is at most 200 bytes). */
static const char *dc_label(const struct dns_server *s)
{
    size_t longest = s->domain_len > s->alt_domain_len ? s->domain_len : s->alt_domain_len;
    const char *dc = s->opt.datacenter ? s->opt.datacenter : "";
    if (!plain_labels(dc, false, 63) || longest + strlen(dc) + 40 >= DNS_NAME_MAX)
        dc = "";
    return dc;
}

/* Whether NODE.node.DC.DOMAIN names node: its name reads back as itself
 * (plain_labels, not below "_" labels answer_name takes for RFC 2782) and
 * fits beside either domain. */
static bool node_name_ok(const struct dns_server *s, const char *node)
{
    size_t longest = s->domain_len > s->alt_domain_len ? s->domain_len : s->alt_domain_len;
    return node != NULL && node[0] != '_' && plain_labels(node, true, 120) &&
           strlen(node) + strlen(dc_label(s)) + 7 + longest < DNS_NAME_MAX;
}

/* in's SRV target, as Consul names it: NODE.node.DC when the instance has
 * no address of its own (it answers at its node's) and node_name_ok, else
 * HEX.addr.DC (which any name fits); the domain follows when answered. */
static void srv_target(const struct dns_server *s, struct dns_inst *in, const char *node)
{
    const char *dc = dc_label(s);
    const char *dot = *dc ? "." : "";
    in->target_rel = true;
    if (node_name_ok(s, node)) {
        snprintf(in->target, sizeof(in->target), "%.*s.node%s%.*s", 120, node, dot, 63, dc);
    } else {
        int o = 0;
        for (int i = 0; i < (in->family == AF_INET ? 4 : 16); i++)
            o += snprintf(in->target + o, sizeof(in->target) - (size_t)o, "%02x", in->ip[i]);
        snprintf(in->target + o, sizeof(in->target) - (size_t)o, ".addr%s%.*s", dot, 63, dc);
    }
    in->target_len = (uint8_t)strlen(in->target);
}

static bool answerable(struct dns_server *s, json_t *checks)
{
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "Status"));
        if (st == NULL || strcmp(st, "critical") == 0)
            return false;
        if (strcmp(st, "warning") == 0 && !s->opt.allow_warning)
            return false;
    }
    return true;
}

static bool any_warning(json_t *checks)
{
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "Status"));
        if (st && strcmp(st, "warning") == 0)
            return true;
    }
    return false;
}

struct decode {
    struct dns_server *s;
    struct store_read *rd;
    struct dns_service *svc;
    size_t cap;
};

static int decode_instance(json_t *inst, void *arg)
{
    struct decode *d = arg;
    struct dns_server *s = d->s;
    json_t *checks = NULL;
    d->svc->total++;
    const char *id = json_string_value(json_object_get(inst, "ID"));
    if (id == NULL || store_instance_checks(d->rd, id, &checks) != 0)
        return 0;
    if (!answerable(s, checks)) {
        json_decref(checks);
        return 0;
    }
    if (d->svc->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct dns_inst *v = realloc(d->svc->v, cap * sizeof(*v));
        if (v == NULL) {
            json_decref(checks);
            return REG_ENOMEM;
        }
        d->svc->v = v;
        d->cap = cap;
    }
    struct dns_inst *in = &d->svc->v[d->svc->n];
    memset(in, 0, sizeof(*in));
    const char *addr = json_string_value(json_object_get(inst, "Address"));
    bool node_addr = addr == NULL || *addr == '\0';
    if (node_addr) /* the node it was registered at */
        addr = json_string_value(json_object_get(inst, "NodeAddress"));
    if (addr == NULL || *addr == '\0')
        addr = s->opt.node_addr;
    if (inet_pton(AF_INET, addr, in->ip) == 1 || inet_pton(AF_INET6, addr, in->ip) == 1) {
        in->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
        const char *node = json_string_value(json_object_get(inst, "Node"));
        srv_target(s, in, node_addr ? (node ? node : s->opt.node) : NULL);
    } else {
        uint8_t wire[DNS_NAME_MAX];
        size_t l = strlen(addr);
        snprintf(in->target, sizeof(in->target), "%s%s", addr,
                 l && addr[l - 1] == '.' ? "" : ".");
        if (dns_name_to_wire(in->target, wire, sizeof(wire)) == 0) {
            json_decref(checks); /* not a usable name: cannot be answered */
            return 0;
        }
    }
    json_t *port = json_object_get(inst, "Port");
    in->port = (uint16_t)(json_is_integer(port) ? json_integer_value(port) : 0);
    json_t *weights = json_object_get(inst, "Weights");
    json_t *w = json_object_get(weights, any_warning(checks) ? "Warning" : "Passing");
    json_int_t wv = json_is_integer(w) ? json_integer_value(w) : 1;
    in->weight = (uint16_t)(wv < 0 ? 0 : wv > 65535 ? 65535 : wv);
    in->tags = json_incref(json_object_get(inst, "Tags"));
    in->meta = json_incref(json_object_get(inst, "Meta"));
    json_t *node = json_object_get(inst, "Node");
    in->node = json_is_string(node) ? json_incref(node) : NULL;
    json_t *node_meta = json_object_get(inst, "NodeMeta"); /* kept as its node's (store.c) */
    in->node_meta = json_object_size(node_meta) > 0 ? json_incref(node_meta) : NULL;
    d->svc->n++;
    json_decref(checks);
    return 0;
}

/* The decoded passing instances of `name` as of this read; borrowed (owned
 * by the cache). NULL on failure. */
static struct dns_service *lookup_service(struct dns_worker *w, struct store_read *rd,
                                          const char *name)
{
    uint64_t index = store_name_index(rd, name);
    if (index == 0) {
        /* no such name: not cached, so that queries for names that do not
         * exist (a flood of random ones) never push out those that do */
        struct dns_service *cached = w->cache ? strmap_get(w->cache, name) : NULL;
        if (cached != NULL) {
            strmap_del(w->cache, name);
            service_free(cached);
        }
        w->none = (struct dns_service){.name = (char *)"", .index = 0};
        return &w->none;
    }
    if (w->cache == NULL && (w->cache = strmap_new()) == NULL)
        return NULL; /* its restart failed (out of memory): try again */
    struct dns_service *svc = strmap_get(w->cache, name);
    if (svc && svc->index == index)
        return svc;
    if (svc) {
        strmap_del(w->cache, name);
        service_free(svc);
    }
    if (strmap_count(w->cache) >= CACHE_MAX) {
        cache_clear(w);
        if (w->cache == NULL)
            return NULL;
    }
    svc = calloc(1, sizeof(*svc));
    if (svc == NULL || (svc->name = strdup(name)) == NULL) {
        free(svc);
        return NULL;
    }
    svc->index = index;
    struct decode d = {w->s, rd, svc, 0};
    if (index != 0 && store_each_instance(rd, name, decode_instance, &d) != 0) {
        service_free(svc);
        return NULL;
    }
    if (strmap_put(w->cache, name, svc) != 0) {
        service_free(svc);
        return NULL;
    }
    return svc;
}

/* ---- names are looked up without case, as Consul does ------------------- */

static void lower_free_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

/* store_name_cb: name into the map arg, under its lower-case spelling. */
static int add_lower(const char *name, void *arg)
{
    struct strmap *map = arg;
    char low[STORE_NAME_MAX + 1];
    size_t i = 0;
    for (; name[i] && i < STORE_NAME_MAX; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[i] = '\0';
    if (strmap_get(map, low) != NULL)
        return 0; /* two spellings of one name: the first (in byte order) answers */
    char *copy = strdup(name);
    if (copy == NULL || strmap_put(map, low, copy) != 0)
        free(copy);
    return 0;
}

/* A lower-case map (NULL: none) emptied and freed. */
static void lower_map_free(struct strmap *map)
{
    if (map != NULL)
        strmap_each(map, lower_free_entry, NULL);
    strmap_free(map);
}

/* The node named lname ignoring case (a query's name is lower case; a node
 * may be "Web-01"), as registered; NULL: no such node. The map is rebuilt
 * only when the set of node names changed: a query for a node that does
 * not exist costs one lookup in it, never a walk of the store. */
static const char *node_canonical(struct dns_worker *w, struct store_read *rd,
                                  const char *lname)
{
    uint64_t index = store_nodes_index(rd);
    if (w->lower_nodes == NULL || w->lower_nodes_index != index) {
        lower_map_free(w->lower_nodes);
        if ((w->lower_nodes = strmap_new()) == NULL)
            return NULL;
        w->lower_nodes_index = index;
        if (store_each_node_name(rd, add_lower, w->lower_nodes) != 0) {
            lower_map_free(w->lower_nodes); /* partial: not kept */
            w->lower_nodes = NULL;
            return NULL;
        }
    }
    char low[STORE_NAME_MAX + 1];
    size_t i = 0;
    for (; lname[i] && i < STORE_NAME_MAX; i++)
        low[i] = (char)tolower((unsigned char)lname[i]);
    low[i] = '\0';
    return strmap_get(w->lower_nodes, low);
}

/* The instances of the service whose name is `lname` ignoring case (the
 * query's name is lower case; a service may be registered as "Web"). The
 * map from lower-case names is rebuilt only when a name misses and the
 * store changed since it was built. */
static struct dns_service *lookup_service_ci(struct dns_worker *w, struct store_read *rd,
                                             const char *lname)
{
    struct dns_service *svc = lookup_service(w, rd, lname);
    if (svc == NULL || svc->total > 0)
        return svc;
    for (int pass = 0; pass < 2; pass++) {
        const char *canon = w->lower ? strmap_get(w->lower, lname) : NULL;
        if (canon != NULL && strcmp(canon, lname) != 0) {
            struct dns_service *other = lookup_service(w, rd, canon);
            if (other == NULL || other->total > 0)
                return other;
        }
        /* rebuilt when the names changed, not at every write: a miss costs
         * a walk of every name only once per change to the list */
        if (pass == 1 || (w->lower != NULL && w->lower_index == store_services_index(rd)))
            break;
        lower_map_free(w->lower);
        w->lower = strmap_new();
        if (w->lower == NULL)
            return NULL;
        w->lower_index = store_services_index(rd);
        store_each_name(rd, add_lower, w->lower);
    }
    return lookup_service(w, rd, lname); /* the cache entry may have moved */
}

/* ---- answering ---------------------------------------------------------- */

static uint64_t next_rand(struct dns_worker *w)
{
    uint64_t x = w->rand_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rand_state = x;
}

static bool has_tag(const struct dns_inst *in, const char *tag)
{
    size_t i;
    json_t *t;
    if (tag == NULL)
        return true;
    json_array_foreach(in->tags, i, t)
    {
        const char *v = json_string_value(t);
        if (v && strcasecmp(v, tag) == 0)
            return true;
    }
    return false;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

struct answer {
    struct dns_server *s; /* shared settings */
    struct dns_worker *w; /* this thread's caches */
    struct dns_msg m;
    const struct dns_query *q;
    int rcode;
    bool tcp;
    bool trimmed;       /* records left out: over UDP, TC only with enable_truncate;
                         * over TCP (no larger transport to retry on) never TC */
    size_t max_answers; /* UDP without EDNS: dns_udp_answer_limit; 0: no limit */
    bool max_is_policy; /* max_answers is dns_a_record_limit: what is left out is not
                         * truncation (no TC) */
    struct store_read *rd; /* the SOA serial is its store index, read when needed */
    const char *domain;    /* the domain asked about (dns_domain or dns_alt_domain), which
                            * the names answered are in */
    size_t domain_len;
};

/* A record did not fit: keep what did, over UDP (Consul fills what fits)
 * and over TCP alike (the message is then at its 64 KiB limit, and full of
 * answers rather than empty with TC). */
static void overflow(struct answer *a)
{
    a->trimmed = true;
}

static bool full(const struct answer *a)
{
    return a->trimmed;
}

/* The zone's SOA: in the authority section of negative answers (its TTL and
 * minimum are the negative TTL, RFC 2308), or as the answer at the apex. */
/* Our SOA, owned by owner (the domain, or a reverse zone's apex). */
static void add_soa_at(struct answer *a, int section, const char *owner, uint32_t ttl)
{
    struct dns_server *s = a->s;
    char mname[DNS_NAME_MAX + 8], rname[DNS_NAME_MAX + 16];
    snprintf(mname, sizeof(mname), "ns.%s", a->domain);
    snprintf(rname, sizeof(rname), "hostmaster.%s", a->domain);
    uint32_t serial = a->rd ? (uint32_t)store_index(a->rd) : 0;
    if (dns_msg_add_soa(&a->m, section, owner, ttl, mname, rname, serial,
                        s->opt.negative_ttl) != 0)
        overflow(a);
}

static void add_soa(struct answer *a, int section, uint32_t ttl)
{
    add_soa_at(a, section, a->domain, ttl);
}

/* in's SRV target in full, in the domain asked (out: TARGET_MAX bytes;
 * srv_target kept it short enough for either domain). */
#define TARGET_MAX (2 * DNS_NAME_MAX + 2)
static const char *full_target(const struct answer *a, const struct dns_inst *in, char *out)
{
    if (!in->target_rel)
        return in->target;
    /* per record of every SRV answer: no printf */
    memcpy(out, in->target, in->target_len);
    out[in->target_len] = '.';
    memcpy(out + in->target_len + 1, a->domain, a->domain_len + 1);
    return out;
}

static void add_addr(struct answer *a, int section, const char *name, const struct dns_inst *in,
                     uint16_t qtype)
{
    int rc = 0;
    if (in->family == AF_INET && (qtype == DNS_A || qtype == DNS_ANY))
        rc = dns_msg_add_a(&a->m, section, name, a->s->opt.ttl, in->ip);
    else if (in->family == AF_INET6 && (qtype == DNS_AAAA || qtype == DNS_ANY))
        rc = dns_msg_add_aaaa(&a->m, section, name, a->s->opt.ttl, in->ip);
    if (rc != 0)
        overflow(a);
}

/* One TXT record with an instance's (or node's) meta as key=value strings. */
static int add_meta_txt(struct answer *a, const char *owner, json_t *meta)
{
    const char *strs[64];
    char buf[64][256];
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v)
    {
        if (n == 64 || !json_is_string(v))
            break;
        snprintf(buf[n], sizeof(buf[n]), "%s=%s", k, json_string_value(v));
        strs[n] = buf[n];
        n++;
    }
    return dns_msg_add_txt(&a->m, DNS_ANSWER, owner, a->s->opt.ttl, strs, n);
}

/* The node named node's Meta as its instance in carries it (in NULL: none)
 * and as HTTP shows it (render_node): this node's is its configuration.
 * Borrowed; NULL or empty: none. */
static json_t *node_meta_of(const struct dns_server *s, const char *node, const struct dns_inst *in)
{
    if (s->opt.node != NULL && node != NULL && strcmp(node, s->opt.node) == 0)
        return s->node_meta;
    return in ? in->node_meta : NULL;
}

/* One node Meta pair as Consul's TXT record holds it (encodeKVasRFC1464):
 * RFC 1464's key=value, the key's ` and = and its leading and trailing
 * spaces quoted with `, the value's ` doubled; a key starting "rfc1035-"
 * (any case) gives the value alone. Into out (cap bytes); its length, or
 * SIZE_MAX when it does not fit. */
static size_t meta_txt(const char *key, const char *value, char *out, size_t cap)
{
    size_t o = 0, klen = strlen(key), lead = strspn(key, " "), trail = 0;
    while (trail < klen - lead && key[klen - 1 - trail] == ' ')
        trail++;
    if (strncasecmp(key, "rfc1035-", 8) == 0) {
        size_t l = strlen(value);
        if (l > cap)
            return SIZE_MAX;
        memcpy(out, value, l);
        return l;
    }
    for (size_t i = 0; i < klen; i++) {
        bool quote = key[i] == '`' || key[i] == '=' || i < lead || i >= klen - trail;
        if (o + 2 > cap)
            return SIZE_MAX;
        if (quote)
            out[o++] = '`';
        out[o++] = key[i];
    }
    if (o + 1 > cap)
        return SIZE_MAX;
    out[o++] = '=';
    for (const char *v = value; *v; v++) {
        if (o + 2 > cap)
            return SIZE_MAX;
        if (*v == '`')
            out[o++] = '`';
        out[o++] = *v;
    }
    return o;
}

/* A node's Meta as TXT records owned by owner, one per pair, in section;
 * at most max records (0: no limit). The records that fit go in: in the
 * answer a record that does not sets the answer trimmed (TC as for any
 * record); in the additional section it is left out with the rest
 * (additional data is not owed, RFC 2181 9). *left_out (if not NULL) is
 * set when a record was left out either way. Returns the records added. */
static size_t add_node_meta(struct answer *a, int section, const char *owner, json_t *meta,
                            size_t max, bool *left_out)
{
    char text[4096]; /* a pair is at most 128 + 512 bytes (http_check_meta), doubled */
    size_t added = 0;
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v)
    {
        size_t len;
        if (!json_is_string(v) ||
            (len = meta_txt(k, json_string_value(v), text, sizeof(text))) == SIZE_MAX)
            continue;
        if (max > 0 && added == max) {
            if (left_out)
                *left_out = true;
            break;
        }
        if (dns_msg_add_txt_split(&a->m, section, owner, a->s->opt.ttl, text, len) != 0) {
            if (section == DNS_ANSWER)
                overflow(a);
            if (left_out)
                *left_out = true;
            break;
        }
        added++;
    }
    return added;
}

/* DNS answers as the default token allows (acl_default_token, else the
 * anonymous token): false, with NXDOMAIN set, when it may not read name. */
static bool dns_acl_allows(struct answer *a, struct store_read *rd, enum acl_resource res,
                           const char *name)
{
    if (!acl_enabled())
        return true;
    struct acl_authz z;
    bool ok = acl_resolve(rd, NULL, &z) == 0 && acl_allowed(&z, res, name, ACL_READ);
    acl_authz_fini(&z);
    if (!ok)
        a->rcode = DNS_NXDOMAIN;
    return ok;
}

/* After an SRV answer's records and their targets' addresses, the Meta of
 * the nodes of the instances answered (idx[0..n)), each node's once, as
 * TXT records owned by NODE.node.DC.DOMAIN (Consul's, whatever the SRV
 * target): in the room those leave, none pushing a record out. */
static void add_srv_node_meta(struct answer *a, const struct dns_service *svc, const size_t *idx,
                              size_t n)
{
    const struct dns_server *s = a->s;
    struct seen_set *seen = seen_reset(a->w);
    const char *dc = dc_label(s);
    for (size_t k = 0; k < n; k++) {
        const struct dns_inst *in = &svc->v[idx[k]];
        const char *node = in->node ? json_string_value(in->node) : s->opt.node;
        json_t *meta = node_meta_of(s, node, in);
        if (json_object_size(meta) == 0 || !node_name_ok(s, node) ||
            !seen_add(seen, node, strlen(node), 1))
            continue;
        char owner[DNS_NAME_MAX + 2];
        snprintf(owner, sizeof(owner), "%s.node%s%s.%s", node, *dc ? "." : "", dc, a->domain);
        bool left_out = false;
        add_node_meta(a, DNS_ADDITIONAL, owner, meta, 0, &left_out);
        if (left_out)
            break; /* full: what follows would not fit either */
    }
}

/* NAME[.TAG] lookups: A/AAAA/ANY or SRV over the passing instances. */
static void answer_service(struct answer *a, struct store_read *rd, const char *name,
                           const char *tag)
{
    struct dns_server *s = a->s;
    struct dns_service *svc = lookup_service_ci(a->w, rd, name);
    if (svc == NULL) {
        a->rcode = DNS_SERVFAIL;
        return;
    }
    /* as Consul's health query under the DNS token: service:read on the
     * service's own name (the query's may differ in case), and, since an
     * instance shows its node, node:read on that */
    struct acl_authz z;
    bool acl = acl_enabled();
    if (acl && acl_resolve(rd, NULL, &z) != 0) {
        acl_authz_fini(&z);
        a->rcode = DNS_SERVFAIL; /* fail closed */
        return;
    }
    if (acl && !acl_allowed(&z, ACL_RES_SERVICE, svc->name, ACL_READ)) {
        acl_authz_fini(&z);
        a->rcode = DNS_NXDOMAIN;
        return;
    }
    /* shuffled order of the matching instances */
    size_t small[64];
    size_t *idx = svc->n <= 64 ? small : malloc(svc->n * sizeof(*idx)), n = 0;
    if (idx == NULL) {
        if (acl)
            acl_authz_fini(&z);
        a->rcode = DNS_SERVFAIL;
        return;
    }
    for (size_t i = 0; i < svc->n; i++)
        if (has_tag(&svc->v[i], tag) &&
            (!acl || acl_allowed(&z, ACL_RES_NODE,
                                 svc->v[i].node ? json_string_value(svc->v[i].node)
                                 : s->opt.node  ? s->opt.node
                                                : "",
                                 ACL_READ)))
            idx[n++] = i;
    if (acl)
        acl_authz_fini(&z);
    if (n == 0) {
        /* unknown, all critical, or no instance with the tag: Consul's NXDOMAIN */
        if (idx != small)
            free(idx);
        a->rcode = DNS_NXDOMAIN;
        return;
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = next_rand(a->w) % i, t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
    /* At most max_answers records of the asked type (a random few, as
     * Consul's udp_answer_limit), counted as they are added: instances
     * without a record of that type take no place. The same record twice
     * (two instances at one address and port) is one record (RFC 2181 5). */
    size_t cap = a->max_answers > 0 ? a->max_answers : SIZE_MAX;
    bool limited = false;
    const char *owner = a->q->qname;
    uint16_t qt = a->q->qtype;
    size_t answers = 0;
    struct seen_set *seen = seen_reset(a->w);
    if (qt == DNS_SRV) {
        /* Each SRV keeps room for its target's address in the additional
         * section (as Consul trims, keeping the extras in step): a trimmed
         * answer of SRV records alone cost the client a query per target.
         * The room asked before the SRV is written is the record with its
         * owner uncompressed (the most); what is kept once it is written,
         * what the record will take (its owner is then, most often, a
         * pointer to the SRV's target: a third of the room was wasted). */
        size_t cap0 = a->m.cap, reserved = 0;
        char target[TARGET_MAX];
        for (size_t k = 0; k < n && !full(a); k++) {
            const struct dns_inst *in = &svc->v[idx[k]];
            if (!seen_add(seen, in->target, strlen(in->target), in->port))
                continue;
            if (answers == cap) {
                limited = true;
                break;
            }
            const char *name = full_target(a, in, target);
            size_t extra = in->family == 0 ? 0
                                            : strlen(name) + 2 + 10 +
                                                  (in->family == AF_INET ? 4 : 16);
            if (reserved + extra > cap0 - a->m.len) {
                overflow(a);
                break;
            }
            a->m.cap = cap0 - reserved - extra;
            int rc = dns_msg_add_srv(&a->m, DNS_ANSWER, owner, s->opt.ttl, 1, in->weight,
                                     in->port, name);
            a->m.cap = cap0;
            if (rc != 0) {
                overflow(a);
            } else {
                size_t owner_len = dns_msg_name_len(&a->m, name);
                if (in->family != 0 && owner_len > 0)
                    extra = owner_len + 10 + (in->family == AF_INET ? 4 : 16);
                reserved += extra;
                idx[answers++] = idx[k]; /* the answered, in order, for the additionals */
            }
        }
        seen = seen_reset(a->w); /* a target named twice gets its address once */
        for (size_t k = 0; k < answers; k++) { /* their room is kept, trimmed or not */
            const struct dns_inst *in = &svc->v[idx[k]];
            if (in->family != 0 && seen_add(seen, in->target, strlen(in->target), 0))
                add_addr(a, DNS_ADDITIONAL, full_target(a, in, target), in,
                         in->family == AF_INET ? DNS_A : DNS_AAAA);
        }
        if (s->opt.enable_additional_node_meta_txt)
            add_srv_node_meta(a, svc, idx, answers);
    } else if (qt == DNS_TXT) {
        for (size_t k = 0; k < n && !full(a); k++) {
            if (json_object_size(svc->v[idx[k]].meta) == 0)
                continue; /* nothing to say: no record (NODATA if none has meta) */
            if (answers == cap) {
                limited = true;
                break;
            }
            if (add_meta_txt(a, owner, svc->v[idx[k]].meta) != 0)
                overflow(a);
            else
                answers++;
        }
    } else if (qt == DNS_A || qt == DNS_AAAA || qt == DNS_ANY) {
        /* A name has either addresses or one CNAME (RFC 1034 3.6.2): an
         * instance addressed by host name is the CNAME only when no
         * instance has an address, as Consul */
        bool any_ip = false;
        for (size_t k = 0; k < n && !any_ip; k++)
            any_ip = svc->v[idx[k]].family != 0;
        for (size_t k = 0; k < n && !full(a); k++) {
            const struct dns_inst *in = &svc->v[idx[k]];
            bool fits = any_ip ? (in->family == AF_INET && qt != DNS_AAAA) ||
                                     (in->family == AF_INET6 && qt != DNS_A)
                               : answers == 0;
            if (!fits || !seen_add(seen, (const char *)in->ip,
                                   in->family == AF_INET ? 4 : in->family == AF_INET6 ? 16 : 0,
                                   (unsigned)in->family))
                continue;
            if (answers == cap) {
                limited = true;
                break;
            }
            size_t before = a->m.counts[DNS_ANSWER];
            if (in->family == 0) { /* a CNAME to its host name (one: a name has one) */
                if (dns_msg_add_cname(&a->m, DNS_ANSWER, owner, s->opt.ttl, in->target) != 0)
                    overflow(a);
            } else {
                add_addr(a, DNS_ANSWER, owner, in, qt);
            }
            answers += a->m.counts[DNS_ANSWER] - before;
        }
    }
    if (idx != small)
        free(idx);
    if (answers == 0 && !full(a))
        add_soa(a, DNS_AUTHORITY, a->s->opt.negative_ttl); /* NODATA: no record of this type */
    if (limited && !a->max_is_policy)
        a->trimmed = true;
}

/* HEX.addr.DOMAIN: the targets of SRV answers. */
static void answer_addr(struct answer *a, const char *hex, size_t len)
{
    struct dns_inst in = {0};
    if (len != 8 && len != 32) {
        a->rcode = DNS_NXDOMAIN;
        return;
    }
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            a->rcode = DNS_NXDOMAIN;
            return;
        }
        in.ip[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    in.family = len == 8 ? AF_INET : AF_INET6;
    size_t before = a->m.counts[DNS_ANSWER];
    add_addr(a, DNS_ANSWER, a->q->qname, &in, a->q->qtype);
    if (a->m.counts[DNS_ANSWER] == before && !full(a))
        add_soa(a, DNS_AUTHORITY, a->s->opt.negative_ttl);
}

/* An address (IPv4/IPv6 literal or host name) as an answer for owner:
 * A/AAAA of the matching family (of the type asked; either as glue in the
 * additional section), or a CNAME for a host name. */
static size_t add_literal(struct answer *a, const char *owner, const char *addr, int section)
{
    struct dns_inst in = {0};
    size_t before = a->m.counts[section];
    if (inet_pton(AF_INET, addr, in.ip) == 1)
        in.family = AF_INET;
    else if (inet_pton(AF_INET6, addr, in.ip) == 1)
        in.family = AF_INET6;
    if (in.family != 0) {
        add_addr(a, section, owner, &in, section == DNS_ADDITIONAL ? DNS_ANY : a->q->qtype);
    } else if (*addr && section == DNS_ANSWER &&
               (a->q->qtype == DNS_A || a->q->qtype == DNS_AAAA || a->q->qtype == DNS_ANY)) {
        char target[DNS_NAME_MAX + 2];
        uint8_t wire[DNS_NAME_MAX];
        snprintf(target, sizeof(target), "%s.", addr);
        if (dns_name_to_wire(target, wire, sizeof(wire)) != 0 &&
            dns_msg_add_cname(&a->m, section, owner, a->s->opt.ttl, target) != 0)
            overflow(a);
    }
    return a->m.counts[section] - before;
}

/* The registry's own servers, as Consul answers consul.service.DOMAIN:
 * the raft configuration's addresses, SRV with the raft port. */
static void answer_servers(struct answer *a)
{
    struct dns_server *s = a->s;
    struct cluster_status st;
    if (s->opt.cluster == NULL) {
        a->rcode = DNS_NXDOMAIN;
        return;
    }
    cluster_get_status(s->opt.cluster, &st);
    int n = st.n_servers > 0 ? st.n_servers : 1;
    size_t answers = 0;
    for (int i = 0; i < n && !full(a); i++) {
        char host[64];
        unsigned short port = 0;
        const char *addr = st.n_servers > 0 ? st.servers[i].addr : st.self_addr;
        if (conf_split_hostport(addr, host, sizeof(host), &port) != 0)
            continue;
        struct dns_inst in = {0};
        if (inet_pton(AF_INET, host, in.ip) != 1)
            continue;
        in.family = AF_INET;
        if (a->q->qtype == DNS_SRV) {
            char target[TARGET_MAX];
            srv_target(s, &in, NULL);
            full_target(a, &in, target);
            if (dns_msg_add_srv(&a->m, DNS_ANSWER, a->q->qname, s->opt.ttl, 1, 1, port,
                                target) != 0)
                overflow(a);
            else
                answers++;
            add_addr(a, DNS_ADDITIONAL, target, &in, DNS_A);
        } else {
            size_t before = a->m.counts[DNS_ANSWER];
            add_addr(a, DNS_ANSWER, a->q->qname, &in, a->q->qtype);
            answers += a->m.counts[DNS_ANSWER] - before;
        }
    }
    if (answers == 0 && !full(a))
        add_soa(a, DNS_AUTHORITY, s->opt.negative_ttl);
}

struct node_find {
    const char *name; /* lower case */
    char node[STORE_NAME_MAX + 1]; /* the node's own name, as found */
    char addr[STORE_NAME_MAX + 1];
    json_t *meta; /* its NodeMeta (a new reference), or NULL */
    bool found;
};

static int find_node(json_t *rec, void *arg)
{
    struct node_find *f = arg;
    const char *node = json_string_value(json_object_get(rec, "Node"));
    const char *addr = json_string_value(json_object_get(rec, "NodeAddress"));
    if (node == NULL || addr == NULL || strcasecmp(node, f->name) != 0)
        return 0;
    snprintf(f->node, sizeof(f->node), "%s", node);
    snprintf(f->addr, sizeof(f->addr), "%s", addr);
    json_t *meta = json_object_get(rec, "NodeMeta");
    f->meta = json_is_object(meta) ? json_incref(meta) : NULL;
    f->found = true;
    return 1; /* the first: the smallest instance ID (store_each_instance_on's order) */
}

/* Another server of the cluster, by the node name, address and meta it
 * announced (the catalog lists every server as a node). */
static void find_server_node(struct dns_server *s, struct store_read *rd, struct node_find *f)
{
    struct cluster_status st;
    if (s->opt.cluster == NULL)
        return;
    cluster_get_status(s->opt.cluster, &st);
    for (int i = 0; i < st.n_servers && !f->found; i++) {
        json_t *rec = NULL;
        if (store_get_server(rd, st.servers[i].addr, &rec) != 0)
            continue;
        const char *node = json_string_value(json_object_get(rec, "Node"));
        const char *addr = json_string_value(json_object_get(rec, "Address"));
        if (node != NULL && addr != NULL && strcasecmp(node, f->name) == 0) {
            snprintf(f->node, sizeof(f->node), "%s", node);
            snprintf(f->addr, sizeof(f->addr), "%s", addr);
            json_t *meta = json_object_get(rec, "NodeMeta"); /* {string: string} (record.c) */
            f->meta = json_object_size(meta) > 0 ? json_incref(meta) : NULL;
            f->found = true;
        }
        json_decref(rec);
    }
}

/* NODE.node[.DC].DOMAIN: the node's address, and its Meta as TXT records
 * (Consul's handleNodeQuery): TXT the Meta alone, ANY both, A/AAAA the
 * address with the Meta in the additional section where room is left
 * (enable_additional_node_meta_txt). A node at a host name is a CNAME,
 * with no other data beside it (RFC 1034 3.6.2) but for TXT asked. */
static void answer_node(struct answer *a, struct store_read *rd, const char *name)
{
    struct dns_server *s = a->s;
    struct node_find f = {.name = name};
    if (s->opt.node != NULL && strcasecmp(name, s->opt.node) == 0) {
        snprintf(f.node, sizeof(f.node), "%s", s->opt.node);
        snprintf(f.addr, sizeof(f.addr), "%s", s->opt.node_addr);
        f.meta = json_incref(s->node_meta);
        f.found = true;
    }
    /* DNS names ignore case, node names do not: the name as asked first
     * (a node spelt so wins over one that differs in case), else its
     * spelling as registered (node_canonical); its catalog record, else
     * the instance of the smallest ID on it gives the address */
    for (int pass = 0; pass < 2 && !f.found; pass++) {
        const char *as = pass == 0 ? name : node_canonical(a->w, rd, name);
        if (as == NULL || (pass == 1 && strcmp(as, name) == 0))
            break;
        json_t *rec = NULL;
        if (store_get_node(rd, as, &rec) == 0)
            find_node(rec, &f);
        json_decref(rec);
        if (!f.found)
            store_each_instance_on(rd, as, find_node, &f);
    }
    if (!f.found)
        find_server_node(s, rd, &f);
    if (!f.found) {
        a->rcode = DNS_NXDOMAIN;
        return;
    }
    if (!dns_acl_allows(a, rd, ACL_RES_NODE, f.node)) {
        json_decref(f.meta);
        return; /* node:read on the node's own name (the query's may differ in case) */
    }
    uint16_t qt = a->q->qtype;
    uint8_t ip[16];
    bool at_ip = inet_pton(AF_INET, f.addr, ip) == 1 || inet_pton(AF_INET6, f.addr, ip) == 1;
    /* the answer holds max_answers records at most, as a service's (UDP
     * without EDNS: udp_answer_limit, as Consul trims every answer) */
    size_t max = a->max_is_policy ? 0 : a->max_answers, n = 0;
    bool limited = false;
    if (qt != DNS_TXT)
        n = add_literal(a, a->q->qname, f.addr, DNS_ANSWER);
    if (qt == DNS_TXT || (qt == DNS_ANY && at_ip)) {
        if (!full(a) && (max == 0 || n < max))
            n += add_node_meta(a, DNS_ANSWER, a->q->qname, f.meta, max ? max - n : 0, &limited);
        else if (json_object_size(f.meta) > 0)
            limited = true;
    } else if ((qt == DNS_A || qt == DNS_AAAA) && n > 0 && at_ip &&
               s->opt.enable_additional_node_meta_txt) {
        add_node_meta(a, DNS_ADDITIONAL, a->q->qname, f.meta, 0, NULL);
    }
    json_decref(f.meta);
    if (limited)
        a->trimmed = true;
    if (n == 0 && !full(a))
        add_soa(a, DNS_AUTHORITY, s->opt.negative_ttl); /* NODATA */
}

struct ptr_find {
    struct answer *a;
    int family;
    uint8_t ip[16];
    json_t *names; /* target -> true */
};

/* Is text the address p looks for (compared as addresses: "fd00::7" is
 * "fd00:0:0::7")? */
static bool same_addr(const struct ptr_find *p, const char *text)
{
    uint8_t bin[16];
    return text != NULL && inet_pton(p->family, text, bin) == 1 &&
           memcmp(bin, p->ip, p->family == AF_INET ? 4 : 16) == 0;
}

/* Could a node record's text (JSON as stored) have p's address as its
 * NodeAddress? Every "NodeAddress" key in it is looked at (one may be in
 * its Meta); a value with an escape is decoded to be sure. */
static bool node_text_may_match(const char *text, size_t len, void *arg)
{
    static const char key[] = "\"NodeAddress\"";
    const char *end = text + len, *c = text;
    while ((c = memmem(c, (size_t)(end - c), key, sizeof(key) - 1)) != NULL) {
        c += sizeof(key) - 1;
        while (c < end && (*c == ' ' || *c == ':'))
            c++;
        if (c >= end || *c != '"')
            continue;
        const char *v = ++c, *q = memchr(v, '"', (size_t)(end - v));
        if (q == NULL)
            return true;
        char addr[INET6_ADDRSTRLEN];
        size_t n = (size_t)(q - v);
        if (memchr(v, '\\', n) != NULL)
            return true;
        if (n < sizeof(addr)) {
            memcpy(addr, v, n);
            addr[n] = '\0';
            if (same_addr(arg, addr))
                return true;
        }
    }
    return false;
}

static int find_ptr(json_t *rec, void *arg)
{
    struct ptr_find *p = arg;
    struct dns_server *s = p->a->s;
    char target[DNS_PNAME_MAX];
    const char *node = json_string_value(json_object_get(rec, "Node"));
    const char *naddr = json_string_value(json_object_get(rec, "NodeAddress"));
    const char *addr = json_string_value(json_object_get(rec, "Address"));
    const char *svc = json_string_value(json_object_get(rec, "Service"));
    if (node && same_addr(p, naddr)) {
        snprintf(target, sizeof(target), "%s.node.%s.%s", node, s->opt.datacenter, s->domain);
        json_object_set_new(p->names, target, json_true());
    }
    if (svc && same_addr(p, addr)) {
        snprintf(target, sizeof(target), "%s.service.%s", svc, s->domain);
        json_object_set_new(p->names, target, json_true());
    }
    return 0;
}

/* The address a reverse name stands for: D.C.B.A.in-addr.arpa. or 32
 * nibbles of ip6.arpa. (least significant first). 0 or -1. */
static int reverse_addr(const char *qname, struct ptr_find *p)
{
    size_t n = strlen(qname);
    if (n > 14 && strcmp(qname + n - 14, ".in-addr.arpa.") == 0) {
        /* four labels of 1-3 digits, no sign, no leading zero (sscanf's %u
         * took "+1" and "01": other names for the same address) */
        const char *c = qname;
        for (int i = 3; i >= 0; i--) {
            unsigned v = 0;
            int digits = 0;
            for (; *c >= '0' && *c <= '9' && digits < 4; c++, digits++)
                v = v * 10 + (unsigned)(*c - '0');
            if (digits == 0 || digits > 3 || v > 255 || *c != '.' ||
                (digits > 1 && c[-digits] == '0'))
                return -1;
            c++;
            p->ip[i] = (uint8_t)v;
        }
        if (strcmp(c, "in-addr.arpa.") != 0)
            return -1;
        p->family = AF_INET;
        return 0;
    }
    if (n != 64 + 9 || strcmp(qname + 64, "ip6.arpa.") != 0)
        return -1;
    p->family = AF_INET6;
    memset(p->ip, 0, 16);
    for (int i = 0; i < 32; i++) {
        int h = hexval(qname[2 * i]);
        if (h < 0 || qname[2 * i + 1] != '.')
            return -1;
        int byte = 15 - i / 2; /* the first nibble is the last address nibble */
        p->ip[byte] |= (uint8_t)(i % 2 == 0 ? h : h << 4);
    }
    return 0;
}

/* Whether qname is a name above whole addresses in a reverse zone (1 to 3
 * labels of a byte before in-addr.arpa, 1 to 31 nibbles before ip6.arpa):
 * an empty non-terminal, or the apex of a reverse zone delegated here. */
static bool reverse_partial(const char *qname)
{
    size_t n = strlen(qname), labels = 0;
    const char *end;
    bool v4 = n > 14 && strcmp(qname + n - 14, ".in-addr.arpa.") == 0;
    if (v4)
        end = qname + n - 13;
    else if (n > 10 && strcmp(qname + n - 10, ".ip6.arpa.") == 0)
        end = qname + n - 9;
    else
        return false;
    for (const char *c = qname; c < end; labels++) {
        const char *dot = strchr(c, '.');
        size_t len = (size_t)(dot - c);
        if (v4) {
            unsigned v = 0;
            for (size_t i = 0; i < len; i++)
                v = isdigit((unsigned char)c[i]) ? v * 10 + (unsigned)(c[i] - '0') : 1000;
            if (len == 0 || len > 3 || v > 255 || (len > 1 && c[0] == '0'))
                return false;
        } else if (len != 1 || hexval(c[0]) < 0) {
            return false;
        }
        c = dot + 1;
    }
    return labels >= 1 && labels < (v4 ? 4u : 32u);
}

/* A name with no records of its own under ours (an empty non-terminal):
 * NOERROR with no data and the SOA (RFC 8020: NXDOMAIN would say nothing
 * exists below it, and resolvers minimising their queries stop there). A
 * reverse zone's apex (apex_owner) answers SOA and NS, so that a zone
 * delegated or stubbed to us there loads. */
static void answer_empty(struct answer *a, const char *apex_owner)
{
    struct dns_server *s = a->s;
    if (apex_owner != NULL && a->q->qtype == DNS_SOA) {
        add_soa_at(a, DNS_ANSWER, apex_owner, s->opt.ttl);
    } else if (apex_owner != NULL && a->q->qtype == DNS_NS) {
        char ns[DNS_NAME_MAX + 8];
        snprintf(ns, sizeof(ns), "ns.%s", a->domain);
        if (dns_msg_add_ns(&a->m, DNS_ANSWER, apex_owner, s->opt.ttl, ns) != 0)
            overflow(a);
        else
            add_literal(a, ns, s->ns_addr, DNS_ADDITIONAL);
    } else {
        add_soa(a, DNS_AUTHORITY, s->opt.negative_ttl);
    }
}

/* D.C.B.A.in-addr.arpa / ip6.arpa: the nodes and services with that address. */
static void answer_ptr(struct answer *a, struct store_read *rd, const char *qname)
{
    struct dns_server *s = a->s;
    struct ptr_find p = {.a = a};
    /* A reverse answer names nodes and services: only for a default token
     * that may read every node (node_prefix "" read, or default allow). */
    if (!dns_acl_allows(a, rd, ACL_RES_NODE, ""))
        return;
    if (reverse_addr(qname, &p) != 0) {
        if (reverse_partial(qname)) {
            answer_empty(a, qname);
            return;
        }
        a->rcode = DNS_NXDOMAIN; /* with the reverse zone's SOA, as below (RFC 2308) */
        add_soa_at(a, DNS_AUTHORITY, strchr(qname, '.') + 1, s->opt.negative_ttl);
        return;
    }
    /* Negative answers carry the SOA of the reverse zone the name is in
     * (RFC 2308 3), its parent here (every partial reverse name answers as
     * an apex: answer_empty): with the forward domain's, out of the zone
     * forwarded to us, unbound dropped it and kept the NXDOMAIN its own
     * time, whatever --dns-negative-ttl said. */
    const char *apex = strchr(qname, '.') + 1;
    p.names = json_object();
    if (s->opt.node != NULL && same_addr(&p, s->opt.node_addr)) {
        char target[DNS_PNAME_MAX];
        snprintf(target, sizeof(target), "%s.node.%s.%s", s->opt.node, s->opt.datacenter,
                 s->domain);
        json_object_set_new(p.names, target, json_true());
    }
    /* the catalog's nodes: only those whose text may hold the address are
     * decoded (a PTR query was a decode of every node) */
    store_each_node_pre(rd, node_text_may_match, find_ptr, &p);
    char text[INET6_ADDRSTRLEN]; /* the instances at that address, from their index */
    if (inet_ntop(p.family, p.ip, text, sizeof(text)) != NULL)
        store_each_instance_at(rd, text, find_ptr, &p);
    if (json_object_size(p.names) == 0) {
        a->rcode = DNS_NXDOMAIN;
        add_soa_at(a, DNS_AUTHORITY, apex, s->opt.negative_ttl);
    } else if (a->q->qtype != DNS_PTR && a->q->qtype != DNS_ANY) {
        add_soa_at(a, DNS_AUTHORITY, apex, s->opt.negative_ttl); /* NODATA */
    } else {
        const char *t;
        json_t *v;
        uint8_t wire[DNS_NAME_MAX];
        json_object_foreach(p.names, t, v)
        {
            /* a name no DNS name can spell (a label over 63 bytes) is left
             * out: it made the whole answer look too big for the message */
            if (dns_name_to_wire(t, wire, sizeof(wire)) == 0)
                continue;
            if (!full(a) && dns_msg_add_ptr(&a->m, DNS_ANSWER, qname, s->opt.ttl, t) != 0)
                overflow(a);
        }
        if (a->m.counts[DNS_ANSWER] == 0 && !full(a))
            add_soa_at(a, DNS_AUTHORITY, apex, s->opt.negative_ttl); /* NODATA */
    }
    json_decref(p.names);
}

/* The apex: SOA, NS (this server, "ns.DOMAIN", with its address as glue). */
static void answer_apex(struct answer *a)
{
    struct dns_server *s = a->s;
    char ns[DNS_NAME_MAX + 8];
    snprintf(ns, sizeof(ns), "ns.%s", a->domain);
    if (a->q->qtype == DNS_SOA) {
        add_soa(a, DNS_ANSWER, s->opt.ttl);
    } else if (a->q->qtype == DNS_NS || a->q->qtype == DNS_ANY) {
        if (dns_msg_add_ns(&a->m, DNS_ANSWER, a->domain, s->opt.ttl, ns) != 0)
            overflow(a);
        else
            add_literal(a, ns, s->ns_addr, DNS_ADDITIONAL);
    } else {
        add_soa(a, DNS_AUTHORITY, s->opt.negative_ttl);
    }
}

/* Map the name under our domain (rel: "web.service", no trailing dot). */
/* labels[0..n-1], split in place by answer_name, joined again with dots:
 * the parts of a name that may hold dots (a node's, a tag's). */
static char *join_labels(char **labels, int n)
{
    for (int i = 0; i + 1 < n; i++)
        labels[i][strlen(labels[i])] = '.';
    return labels[0];
}

static bool is_kind(const char *label)
{
    return strcmp(label, "service") == 0 || strcmp(label, "node") == 0 ||
           strcmp(label, "addr") == 0;
}

static void answer_name(struct answer *a, struct store_read *rd, char *rel)
{
    struct dns_server *s = a->s;
    char *labels[DNS_NAME_MAX / 2 + 1]; /* a name of 255 bytes has at most 127 labels */
    int n = 0;
    if (*rel == '\0') {
        answer_apex(a);
        return;
    }
    if (strcmp(rel, "ns") == 0) { /* the name our NS and SOA records give */
        if (add_literal(a, a->q->qname, s->ns_addr, DNS_ANSWER) == 0 && !full(a))
            add_soa(a, DNS_AUTHORITY, s->opt.negative_ttl);
        return;
    }
    for (char *p = rel; n < (int)(sizeof(labels) / sizeof(labels[0]));) {
        labels[n++] = p;
        char *dot = strchr(p, '.');
        if (dot == NULL)
            break;
        *dot = '\0';
        p = dot + 1;
    }
    /* dc, and NAME.KIND.DC.dc (Consul 1.15's explicit locality): as DC,
     * NAME.KIND.DC */
    if (n == 1 && strcmp(labels[0], "dc") == 0) {
        answer_empty(a, NULL);
        return;
    }
    if (n >= 2 && strcmp(labels[n - 1], "dc") == 0 && s->opt.datacenter != NULL &&
        strcasecmp(labels[n - 2], s->opt.datacenter) == 0)
        n--;
    /* service, node, addr, DC and KIND.DC have names below them only; so
     * has _TAG[.DC] (the parent of RFC 2782's _NAME._TAG without
     * "service": NXDOMAIN there would deny the names below, RFC 8020) */
    bool dc1 = s->opt.datacenter != NULL && strcasecmp(labels[n - 1], s->opt.datacenter) == 0;
    if ((n == 1 && (is_kind(labels[0]) || dc1 || labels[0][0] == '_')) ||
        (n == 2 && (is_kind(labels[0]) || labels[0][0] == '_') && dc1)) {
        answer_empty(a, NULL);
        return;
    }
    /* _NAME._TAG[.DC]: RFC 2782's form without its "service" label, which
     * Consul takes as optional (before the DC is taken off a KIND.DC: a
     * node named "_a._b" is _a._b.node.DC) */
    if ((n == 2 || (n == 3 && dc1)) && labels[0][0] == '_' && labels[1][0] == '_') {
        labels[2] = "service";
        n = 3;
    } else if (n >= 3 && dc1 && is_kind(labels[n - 2])) {
        n--; /* NAME.KIND.DC: this datacenter's */
    }
    const char *kind = labels[n - 1];
    int parts = n - 1; /* the labels before the kind */
    if (strcmp(kind, "service") == 0 && parts == 1 && s->opt.server_service != NULL &&
        strcasecmp(labels[0], s->opt.server_service) == 0) {
        if (dns_acl_allows(a, rd, ACL_RES_SERVICE, s->opt.server_service))
            answer_servers(a);
    } else if (strcmp(kind, "node") == 0 && parts >= 1) {
        /* a node's name may hold dots (a host's full name, as PTR gives
         * it): Consul joins the labels */
        answer_node(a, rd, join_labels(labels, parts)); /* it checks node:read */
    } else if (strcmp(kind, "service") == 0 && parts == 1) {
        answer_service(a, rd, labels[0], NULL);
        if (a->rcode == DNS_NXDOMAIN && labels[0][0] == '_') {
            /* no service of that name: the _TAG of RFC 2782's
             * _NAME._TAG.service, an empty non-terminal */
            a->rcode = DNS_NOERROR;
            answer_empty(a, NULL);
        }
    } else if (strcmp(kind, "service") == 0 && parts == 2 && labels[0][0] == '_' &&
               labels[1][0] == '_') { /* RFC 2782 */
        const char *tag = labels[1] + 1;
        answer_service(a, rd, labels[0] + 1, strcmp(tag, "tcp") == 0 ? NULL : tag);
    } else if (strcmp(kind, "service") == 0 && parts >= 2) {
        /* TAG.NAME.service: a tag may hold dots (Consul joins the labels) */
        answer_service(a, rd, labels[parts - 1], join_labels(labels, parts - 1));
    } else if (strcmp(kind, "addr") == 0 && parts == 1) {
        answer_addr(a, labels[0], strlen(labels[0]));
    } else {
        a->rcode = DNS_NXDOMAIN;
    }
    if (a->rcode == DNS_NXDOMAIN)
        add_soa(a, DNS_AUTHORITY, a->s->opt.negative_ttl);
}

/* The worker's read handle, renewed: the store as it is now (reset it
 * after use). NULL on failure. */
static struct store_read *read_begin(struct dns_worker *w)
{
    if (w->rd != NULL && store_read_renew(w->rd) == 0)
        return w->rd;
    store_read_end(w->rd);
    w->rd = NULL;
    if (store_read_begin(w->s->opt.store, &w->rd) != 0)
        w->rd = NULL;
    return w->rd;
}

/* Is name (len bytes, lower case) the domain (0) or below it (1)? -1: neither. */
static int within(const char *name, size_t len, const char *domain, size_t dlen)
{
    if (strcmp(name, domain) == 0)
        return 0;
    return len > dlen && name[len - dlen - 1] == '.' && strcmp(name + len - dlen, domain) == 0
               ? 1
               : -1;
}

/* Answer one query: the response goes to out (cap bytes, the transport's
 * limit); returns its length, or 0 when the packet must be dropped. */
static size_t answer_query(struct dns_worker *w, const uint8_t *pkt, size_t len, uint8_t *out,
                           size_t cap, bool tcp)
{
    struct dns_server *s = w->s;
    struct dns_query q;
    int rc = dns_parse_query(pkt, len, &q);
    if (rc == DNS_EDROP)
        return 0;
    if (rc == DNS_EFORMERR || rc == DNS_ENOTIMP) /* with the question and OPT that parsed */
        return dns_msg_error(out, cap, &q, rc == DNS_EFORMERR ? DNS_FORMERR : DNS_NOTIMP);
    struct answer a = {.s = s, .w = w, .q = &q, .rcode = DNS_NOERROR, .tcp = tcp,
                       .domain = s->domain, .domain_len = s->domain_len};
    if (!tcp) {
        size_t limit = q.edns ? (q.edns_size < DNS_UDP_MAX ? q.edns_size : DNS_UDP_MAX)
                              : DNS_UDP_MIN;
        if (limit < DNS_UDP_MIN)
            limit = DNS_UDP_MIN;
        if (cap > limit)
            cap = limit;
        if (limit == DNS_UDP_MIN) /* Consul limits the count only for 512-byte answers */
            a.max_answers = s->opt.udp_answer_limit;
    }
    /* a_record_limit: a few addresses whatever the transport (a resolver
     * may refuse to cache more: BIND keeps at most 100 records of a type) */
    if (s->opt.a_record_limit > 0 &&
        (q.qtype == DNS_A || q.qtype == DNS_AAAA || q.qtype == DNS_ANY) &&
        (a.max_answers == 0 || a.max_answers > s->opt.a_record_limit)) {
        a.max_answers = s->opt.a_record_limit;
        a.max_is_policy = true;
    }
    if (dns_msg_init(&a.m, out, cap, &q, DNS_NOERROR) != 0)
        return dns_msg_header_only(out, &q, DNS_SERVFAIL);
    size_t opt_room = q.edns ? dns_opt_len(&q) : 0;
    a.m.cap -= opt_room; /* keep room for our OPT record (with the client's subnet) */

    if (q.edns && q.edns_version != 0) {
        a.rcode = DNS_BADVERS; /* RFC 6891 6.1.3: we speak version 0 */
    } else if (q.qclass != 1 && q.qclass != 255) {
        a.rcode = DNS_REFUSED;
    } else if (q.qtype == DNS_AXFR || q.qtype == DNS_IXFR) {
        a.rcode = DNS_NOTIMP; /* no zone transfers (Consul's answer too) */
    } else {
        size_t nl = strlen(q.qname);
        /* the longer domain first: one may be below the other (Consul's
         * trimDomain) */
        int depth = within(q.qname, nl, s->domain, s->domain_len);
        int alt = s->alt_domain ? within(q.qname, nl, s->alt_domain, s->alt_domain_len) : -1;
        if (alt >= 0 && (depth < 0 || s->alt_domain_len > s->domain_len)) {
            depth = alt;
            a.domain = s->alt_domain;
            a.domain_len = s->alt_domain_len;
        }
        bool apex = depth == 0, inside = depth >= 0;
        bool reverse = (nl > 14 && strcmp(q.qname + nl - 14, ".in-addr.arpa.") == 0) ||
                       (nl > 10 && strcmp(q.qname + nl - 10, ".ip6.arpa.") == 0);
        struct store_read *rd;
        if (!reverse && !inside) {
            a.rcode = DNS_REFUSED;
        } else if (!cluster_caught_up(s->opt.cluster)) {
            /* the store is being rebuilt: "nothing there" would be a lie a
             * resolver caches; SERVFAIL sends it to another server */
            a.rcode = DNS_SERVFAIL;
        } else if ((rd = read_begin(w)) == NULL) {
            a.rcode = DNS_SERVFAIL;
        } else if (reverse) {
            a.rd = rd; /* the SOA's serial, as on the forward side */
            answer_ptr(&a, rd, q.qname);
            a.rd = NULL;
            store_read_reset(rd);
        } else {
            a.rd = rd;
            char rel[DNS_PNAME_MAX] = "";
            if (!apex) {
                size_t rl = nl - a.domain_len - 1; /* < nl < DNS_PNAME_MAX */
                memcpy(rel, q.qname, rl);
                rel[rl] = '\0';
            }
            answer_name(&a, rd, rel);
            a.rd = NULL;
            store_read_reset(rd);
        }
    }
    /* What fit is there; TC says there is more over TCP: with
     * enable_truncate, and always when not one answer fit (a record larger
     * than the message would otherwise vanish without a sign) */
    if (a.trimmed && !tcp && (s->opt.enable_truncate || a.m.counts[DNS_ANSWER] == 0))
        dns_msg_set_tc(&a.m);
    a.m.buf[3] = (uint8_t)((a.m.buf[3] & 0xF0) | (a.rcode & 0xF));
    if (a.rcode == DNS_REFUSED)
        a.m.buf[2] &= (uint8_t)~0x04; /* not our zone: no authority claimed */
    a.m.cap += opt_room;
    if (q.edns)
        dns_msg_add_opt(&a.m, &q, DNS_UDP_MAX, a.rcode);
    return dns_msg_finish(&a.m);
}

/* Answer and count (rcode, seconds since t0, when the packet was read) in
 * the worker's metrics shard. */
static size_t answer_counted(struct dns_worker *w, double t0, const uint8_t *in, size_t len,
                             uint8_t *out, size_t cap, bool tcp)
{
    size_t n = answer_query(w, in, len, out, cap, tcp);
    if (n >= DNS_HEADER_LEN)
        metrics_dns(w->metrics, out[3] & 0xF, mono_seconds() - t0);
    return n;
}

/* ---- UDP ---------------------------------------------------------------- */

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    struct dns_worker *w = arg;
    struct udp_batch *b = w->udp;
    (void)what;
    for (int round = 0; round < UDP_ROUNDS; round++) {
        for (int i = 0; i < UDP_VLEN; i++) {
            b->iin[i] = (struct iovec){b->q[i], sizeof(b->q[i])};
            b->in[i].msg_hdr = (struct msghdr){.msg_name = &b->from[i],
                                               .msg_namelen = sizeof(b->from[i]),
                                               .msg_iov = &b->iin[i],
                                               .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, b->in, UDP_VLEN, 0, NULL);
        if (n <= 0)
            return; /* EAGAIN, or an ICMP error from an earlier reply */
        int k = 0;
        double t0 = mono_seconds(); /* the whole batch was read now */
        for (int i = 0; i < n; i++) {
            if (b->in[i].msg_hdr.msg_flags & MSG_TRUNC)
                continue;
            size_t len = answer_counted(w, t0, b->q[i], b->in[i].msg_len, b->a[k],
                                        sizeof(b->a[k]), false);
            if (len == 0)
                continue;
            b->iout[k] = (struct iovec){b->a[k], len};
            b->out[k].msg_hdr = (struct msghdr){.msg_name = &b->from[i],
                                                .msg_namelen = b->in[i].msg_hdr.msg_namelen,
                                                .msg_iov = &b->iout[k],
                                                .msg_iovlen = 1};
            k++;
        }
        for (int sent = 0; sent < k;) {
            int r = sendmmsg(fd, b->out + sent, (unsigned)(k - sent), 0);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break; /* the socket buffer is full: the rest is lost, as UDP may */
            sent += r > 0 ? r : 1; /* one that cannot be sent is skipped */
        }
        if (n < UDP_VLEN)
            return;
    }
}

/* ---- TCP ---------------------------------------------------------------- */

static void tcp_close(struct tcp_conn *c)
{
    struct dns_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    free(c);
    w->tcp_conns--;
}

/* The client sent its last query (EOF), or a message that is none: the
 * answers already queued still go out (a client may send its queries and
 * shut its side), then the connection closes. The idle timeout still
 * bounds a client that does not read them. */
static void tcp_close_when_sent(struct tcp_conn *c)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        tcp_close(c);
        return;
    }
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0); /* on_tcp_drained once empty */
}

static void on_tcp_read(struct bufferevent *bev, void *arg)
{
    struct tcp_conn *c = arg;
    struct dns_worker *w = c->w;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        /* a client that sends queries and reads no answers stops being read
         * (on_tcp_drained reads on): a 40-byte query can ask for 64 KiB */
        if (evbuffer_get_length(bufferevent_get_output(bev)) >= TCP_QUEUED_MAX) {
            bufferevent_disable(bev, EV_READ);
            return;
        }
        uint8_t lenbuf[2];
        size_t have = evbuffer_get_length(in);
        size_t len = evbuffer_copyout(in, lenbuf, 2) == 2 ? (size_t)(lenbuf[0] << 8 | lenbuf[1])
                                                         : SIZE_MAX;
        /* a query has TCP_QUERY_SECONDS from its first byte to its last: a
         * trickle of bytes cannot hold the connection (the read timeout is
         * that long while one is unfinished, the idle one otherwise) */
        if (c->partial_since != 0 && mono_seconds() - c->partial_since > TCP_QUERY_SECONDS) {
            tcp_close(c);
            return;
        }
        if (len == SIZE_MAX || have < 2 + len) {
            if (have > 0 && c->partial_since == 0) {
                c->partial_since = mono_seconds();
                struct timeval q = {TCP_QUERY_SECONDS, 0}, idle = {TCP_IDLE_SECONDS, 0};
                bufferevent_set_timeouts(bev, &q, &idle);
            }
            return;
        }
        if (c->partial_since != 0) {
            c->partial_since = 0;
            struct timeval idle = {TCP_IDLE_SECONDS, 0};
            bufferevent_set_timeouts(bev, &idle, &idle);
        }
        evbuffer_drain(in, 2);
        evbuffer_remove(in, w->inbuf, len);
        size_t out = answer_counted(w, mono_seconds(), w->inbuf, len, w->outbuf + 2,
                                    sizeof(w->outbuf) - 2, true);
        if (out == 0) {
            tcp_close_when_sent(c); /* not a query: nothing sensible to say */
            return;
        }
        w->outbuf[0] = (uint8_t)(out >> 8);
        w->outbuf[1] = (uint8_t)out;
        bufferevent_write(bev, w->outbuf, out + 2);
    }
}

/* The queued answers fell to half of TCP_QUEUED_MAX: answer what waits. */
static void on_tcp_drained(struct bufferevent *bev, void *arg)
{
    struct tcp_conn *c = arg;
    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            tcp_close(c);
        return;
    }
    if (bufferevent_get_enabled(bev) & EV_READ)
        return;
    bufferevent_enable(bev, EV_READ);
    on_tcp_read(bev, arg);
}

static void on_tcp_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct tcp_conn *c = arg;
    /* the client's end of its stream: what it asked is still answered;
     * an error or a timeout ends the connection now */
    if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) && !c->closing)
        tcp_close_when_sent(c);
    else
        tcp_close(c);
}

/* sa's address as IPv6 (IPv4 mapped) into out. */
static void peer_key(const struct sockaddr *sa, int salen, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET6 && salen >= (int)sizeof(struct sockaddr_in6)) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET && salen >= (int)sizeof(struct sockaddr_in)) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

/* Whether the client at peer holds its share of w's connections. */
static bool client_at_cap(const struct dns_worker *w, const uint8_t peer[16])
{
    int cap = w->s->max_conns / TCP_CLIENT_SHARE, held = 0;
    if (cap < 1)
        cap = 1;
    for (const struct tcp_conn *c = w->conns; c; c = c->next)
        if (memcmp(c->peer, peer, 16) == 0 && ++held >= cap)
            return true;
    return false;
}

static void on_tcp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct dns_worker *w = arg;
    uint8_t peer[16];
    peer_key(sa, salen, peer);
    struct tcp_conn *c = w->tcp_conns < w->s->max_conns && !client_at_cap(w, peer)
                             ? calloc(1, sizeof(*c))
                             : NULL;
    if (c)
        c->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    if (c == NULL || c->bev == NULL) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->w = w;
    memcpy(c->peer, peer, 16);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->tcp_conns++;
    struct timeval idle = {TCP_IDLE_SECONDS, 0};
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    bufferevent_setcb(c->bev, on_tcp_read, on_tcp_drained, on_tcp_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, TCP_QUEUED_MAX / 2, 0);
    bufferevent_enable(c->bev, EV_READ);
}

/* ---- workers ------------------------------------------------------------ */

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct dns_worker *w = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(w->base);
}

static void *worker_main(void *arg)
{
    struct dns_worker *w = arg;
    if (event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0)
        log_error("dns", "msg=\"event loop failed\" worker=%u", w->id);
    return NULL;
}

/* Free a worker whose thread has been joined (or never started). */
static void worker_free(struct dns_worker *w)
{
    if (w == NULL)
        return;
    while (w->conns)
        tcp_close(w->conns);
    if (w->tcp)
        evconnlistener_free(w->tcp);
    if (w->udp_ev)
        event_free(w->udp_ev);
    if (w->udp_fd >= 0)
        close(w->udp_fd);
    if (w->stop_ev)
        event_free(w->stop_ev);
    common_base_free(w->base);
    if (w->cache)
        cache_clear(w);
    strmap_free(w->cache);
    lower_map_free(w->lower);
    lower_map_free(w->lower_nodes);
    metrics_dns_shard_release(w->metrics);
    store_read_end(w->rd);
    free(w->udp);
    free(w);
}

/* A UDP socket bound to ss, in the SO_REUSEPORT group of dns_addr: -1 with
 * errno on failure. */
static evutil_socket_t udp_socket(const struct sockaddr_storage *ss, int sslen)
{
    int one = 1, rcvbuf = 4 << 20;
    evutil_socket_t fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)ss, (socklen_t)sslen) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)); /* best effort */
    return fd;
}

/* Build worker id: its loop, its sockets bound, its caches. */
static int worker_new(struct dns_server *s, unsigned id, const struct sockaddr_storage *ss,
                      int sslen, struct dns_worker **out, char *err, size_t errlen)
{
    struct dns_worker *w = calloc(1, sizeof(*w));
    *out = w;
    if (w == NULL)
        return REG_ENOMEM;
    w->s = s;
    w->id = id;
    w->udp_fd = -1;
    w->rand_state = ((uint64_t)time(NULL) * 2654435761u + (uint64_t)getpid() + 1) ^
                    ((uint64_t)(id + 1) * 0x9E3779B97F4A7C15ull);
    w->cache = strmap_new();
    w->lower = strmap_new();
    w->metrics = metrics_dns_shard_new();
    w->udp = malloc(sizeof(*w->udp));
    w->base = event_base_new();
    if (w->cache == NULL || w->lower == NULL || w->metrics == NULL || w->udp == NULL ||
        w->base == NULL)
        return REG_ENOMEM;
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    if (w->stop_ev == NULL)
        return REG_ENOMEM;
    w->udp_fd = udp_socket(ss, sslen);
    if (w->udp_fd < 0) {
        snprintf(err, errlen, "dns_addr %s (udp): %s", s->opt.addr, strerror(errno));
        return REG_EIO;
    }
    w->udp_ev = event_new(w->base, w->udp_fd, EV_READ | EV_PERSIST, on_udp, w);
    if (w->udp_ev == NULL || event_add(w->udp_ev, NULL) != 0)
        return REG_ENOMEM;
    w->tcp = evconnlistener_new_bind(w->base, on_tcp_accept, w,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                     1024, (const struct sockaddr *)ss, sslen);
    if (w->tcp == NULL) {
        snprintf(err, errlen, "dns_addr %s (tcp): %s", s->opt.addr, strerror(errno));
        return REG_EIO;
    }
    common_listener_nodelay(evconnlistener_get_fd(w->tcp));
    return 0;
}

/* ---- life cycle --------------------------------------------------------- */

int dns_start(const struct dns_options *opt, struct dns_server **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss), rc;
    *out = NULL;
    if (evutil_parse_sockaddr_port(opt->addr, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(err, errlen, "dns_addr %s: not a numeric HOST:PORT", opt->addr);
        return REG_EIO;
    }
    if (common_addr_free(&ss, sslen, SOCK_DGRAM) != 0) {
        snprintf(err, errlen, "dns_addr %s (udp): %s", opt->addr, strerror(errno));
        return REG_EIO;
    }
    if (common_addr_free(&ss, sslen, SOCK_STREAM) != 0) {
        snprintf(err, errlen, "dns_addr %s (tcp): %s", opt->addr, strerror(errno));
        return REG_EIO;
    }
    struct dns_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return REG_ENOMEM;
    s->opt = *opt;
    /* the name server a resolver is told of is this DNS listener (the HTTP
     * node address only when DNS listens on every address) */
    if (evutil_inet_ntop(ss.ss_family,
                         ss.ss_family == AF_INET
                             ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                             : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
                         s->ns_addr, sizeof(s->ns_addr)) == NULL ||
        strcmp(s->ns_addr, "0.0.0.0") == 0 || strcmp(s->ns_addr, "::") == 0)
        snprintf(s->ns_addr, sizeof(s->ns_addr), "%s", opt->node_addr ? opt->node_addr : "");
    s->nworkers = opt->workers ? opt->workers : 1;
    s->max_conns = TCP_MAX_CONNS / (int)s->nworkers;
    if (s->max_conns < TCP_MIN_CONNS)
        s->max_conns = TCP_MIN_CONNS;
    s->domain = strdup(opt->domain);
    if (opt->alt_domain != NULL && *opt->alt_domain != '\0' &&
        strcmp(opt->alt_domain, opt->domain) != 0 &&
        (s->alt_domain = strdup(opt->alt_domain)) == NULL) {
        dns_free(s);
        return REG_ENOMEM;
    }
    s->workers = calloc(s->nworkers, sizeof(*s->workers));
    s->node_meta = common_kvlist_object(opt->node_meta);
    if (s->domain == NULL || s->workers == NULL || s->node_meta == NULL) {
        dns_free(s);
        return REG_ENOMEM;
    }
    s->domain_len = strlen(s->domain);
    s->alt_domain_len = s->alt_domain ? strlen(s->alt_domain) : 0;
    /* every socket first, so that a bind error leaves no thread behind */
    for (unsigned i = 0; i < s->nworkers; i++) {
        if ((rc = worker_new(s, i, &ss, sslen, &s->workers[i], err, errlen)) != 0) {
            if (rc == REG_ENOMEM)
                snprintf(err, errlen, "dns: out of memory starting worker %u", i);
            dns_free(s);
            return rc;
        }
        if (i == 0) { /* port 0: the others join the port the first one got */
            socklen_t l = sizeof(ss);
            if (getsockname(s->workers[0]->udp_fd, (struct sockaddr *)&ss, &l) != 0) {
                snprintf(err, errlen, "dns_addr %s: %s", opt->addr, strerror(errno));
                dns_free(s);
                return REG_EIO;
            }
        }
    }
    /* workers take no signals: they stay with the main loop's handlers */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct dns_worker *w = s->workers[i];
        if ((rc = pthread_create(&w->thread, NULL, worker_main, w)) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, errlen, "dns: cannot start worker %u: %s", i, strerror(rc));
            dns_free(s);
            return REG_EIO;
        }
        w->started = true;
        char name[16];
        snprintf(name, sizeof(name), "dns-%u", i); /* visible in top -H and /proc */
        pthread_setname_np(w->thread, name);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    log_info("dns", "msg=\"listening\" dns_addr=%s domain=%s alt_domain=%s workers=%u", opt->addr,
             s->domain, s->alt_domain ? s->alt_domain : "none",
             s->nworkers);
    *out = s;
    return 0;
}

void dns_free(struct dns_server *s)
{
    if (s == NULL)
        return;
    /* stop all, then join: the workers wind down in parallel */
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        if (s->workers[i] && s->workers[i]->started)
            event_active(s->workers[i]->stop_ev, EV_READ, 0);
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        struct dns_worker *w = s->workers[i];
        if (w && w->started)
            pthread_join(w->thread, NULL);
        worker_free(w);
    }
    free(s->workers);
    free(s->domain);
    free(s->alt_domain);
    json_decref(s->node_meta);
    free(s);
}
