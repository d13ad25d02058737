/*
 * metrics.c — see metrics.h.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "cluster.h"
#include "health.h"
#include "http_cache.h"
#include "registry/error.h"
#include "store.h"
#include "watch.h"

#define HTTP_SERIES 256
static const double http_buckets[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 60};
#define NBUCKETS (sizeof(http_buckets) / sizeof(http_buckets[0]))
static const double fast_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                      0.005,   0.01,   0.025,   0.05,   0.1,   1};
#define NFAST (sizeof(fast_buckets) / sizeof(fast_buckets[0]))

/* A Prometheus histogram over the upper bounds `le` (n of them, at most
 * NFAST; one more bucket for +Inf). */
struct histogram {
    const double *le;
    size_t n;
    uint64_t bucket[NFAST + 1];
    double sum;
    uint64_t count;
};

static void observe(struct histogram *h, double seconds)
{
    size_t b = 0;
    while (b < h->n && seconds > h->le[b])
        b++;
    h->bucket[b]++;
    h->sum += seconds;
    h->count++;
}

static void render_histogram(struct evbuffer *out, const char *name, const char *help,
                             const struct histogram *h)
{
    uint64_t cum = 0;
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t b = 0; b < h->n; b++) {
        cum += h->bucket[b];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[b],
                            (unsigned long long)cum);
    }
    cum += h->bucket[h->n];
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
                        (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->count);
}

static struct {
    struct {
        const char *method, *route; /* static strings from the route tables */
        int status;
        uint64_t count;
    } http[HTTP_SERIES];
    int nhttp;
    struct histogram http_latency;
    struct histogram raft_apply;
    struct http_cache_stats cache;
    uint64_t conns_open, conns_refused, rate_limited[2]; /* [0] reads, [1] writes */
    uint64_t streams_parked;
    uint64_t streams;
    uint64_t snapshots;
    double snapshot_seconds;
} m = {
    .http_latency = {http_buckets, NBUCKETS, {0}, 0, 0},
    .raft_apply = {fast_buckets, NFAST, {0}, 0, 0},
};

/* The HTTP figures and the renderer: every HTTP worker thread writes them. */
static pthread_mutex_t http_lock = PTHREAD_MUTEX_INITIALIZER;

void metrics_http(const char *method, const char *route, int status, double seconds)
{
    pthread_mutex_lock(&http_lock);
    int i = 0;
    for (; i < m.nhttp; i++)
        if (m.http[i].status == status && m.http[i].route == route &&
            (m.http[i].method == method || strcmp(m.http[i].method, method) == 0))
            break;
    if (i == m.nhttp && m.nhttp < HTTP_SERIES) {
        m.http[i].method = method;
        m.http[i].route = route;
        m.http[i].status = status;
        m.nhttp++;
    }
    if (i < m.nhttp)
        m.http[i].count++;
    observe(&m.http_latency, seconds);
    pthread_mutex_unlock(&http_lock);
}

void metrics_http_conns(uint64_t open, uint64_t refused)
{
    pthread_mutex_lock(&http_lock);
    m.conns_open = open;
    m.conns_refused = refused;
    pthread_mutex_unlock(&http_lock);
}

void metrics_http_rate_limited(bool write)
{
    pthread_mutex_lock(&http_lock);
    m.rate_limited[write ? 1 : 0]++;
    pthread_mutex_unlock(&http_lock);
}

void metrics_http_stream_parked(void)
{
    pthread_mutex_lock(&http_lock);
    m.streams_parked++;
    pthread_mutex_unlock(&http_lock);
}

void metrics_http_streamed(void)
{
    pthread_mutex_lock(&http_lock);
    m.streams++;
    pthread_mutex_unlock(&http_lock);
}


/* ---- DNS: one shard per worker thread --------------------------------- */

/* Each shard has one writer (its worker): it bumps its counters with
 * relaxed atomic load + store (no locked instruction, no shared cache line),
 * and the renderer sums every shard with relaxed loads. Shards are never
 * freed: their counts are totals since start, so a released shard keeps
 * them and is handed to the next worker that asks. */
struct metrics_dns_shard {
    uint64_t rcode[16];
    uint64_t bucket[NFAST + 1];
    uint64_t sum_ns, count;
    bool in_use;                    /* under dns_shards.lock */
    struct metrics_dns_shard *next; /* written once, before publication */
} __attribute__((aligned(64)));

static struct {
    pthread_mutex_t lock;
    struct metrics_dns_shard *head;
} dns_shards = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct metrics_dns_shard *metrics_dns_shard_new(void)
{
    struct metrics_dns_shard *sh;
    pthread_mutex_lock(&dns_shards.lock);
    for (sh = dns_shards.head; sh != NULL && sh->in_use; sh = sh->next)
        ;
    if (sh == NULL && (sh = aligned_alloc(64, sizeof(*sh))) != NULL) {
        memset(sh, 0, sizeof(*sh));
        sh->next = dns_shards.head;
        dns_shards.head = sh;
    }
    if (sh != NULL)
        sh->in_use = true;
    pthread_mutex_unlock(&dns_shards.lock);
    return sh;
}

void metrics_dns_shard_release(struct metrics_dns_shard *sh)
{
    if (sh == NULL)
        return;
    pthread_mutex_lock(&dns_shards.lock);
    sh->in_use = false;
    pthread_mutex_unlock(&dns_shards.lock);
}

static void bump(uint64_t *x, uint64_t by)
{
    __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + by, __ATOMIC_RELAXED);
}

void metrics_dns(struct metrics_dns_shard *sh, int rcode, double seconds)
{
    if (sh == NULL)
        return;
    size_t b = 0;
    while (b < NFAST && seconds > fast_buckets[b])
        b++;
    bump(&sh->rcode[rcode & 15], 1);
    bump(&sh->bucket[b], 1);
    bump(&sh->sum_ns, seconds > 0 ? (uint64_t)(seconds * 1e9) : 0);
    bump(&sh->count, 1);
}

/* Every shard summed: answers by rcode and the latency histogram. */
static void dns_totals(uint64_t rcode[16], struct histogram *h)
{
    memset(rcode, 0, 16 * sizeof(*rcode));
    *h = (struct histogram){fast_buckets, NFAST, {0}, 0, 0};
    uint64_t sum_ns = 0;
    pthread_mutex_lock(&dns_shards.lock);
    for (const struct metrics_dns_shard *sh = dns_shards.head; sh != NULL; sh = sh->next) {
        for (int r = 0; r < 16; r++)
            rcode[r] += __atomic_load_n(&sh->rcode[r], __ATOMIC_RELAXED);
        for (size_t b = 0; b <= NFAST; b++)
            h->bucket[b] += __atomic_load_n(&sh->bucket[b], __ATOMIC_RELAXED);
        sum_ns += __atomic_load_n(&sh->sum_ns, __ATOMIC_RELAXED);
        h->count += __atomic_load_n(&sh->count, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&dns_shards.lock);
    h->sum = (double)sum_ns / 1e9;
}

void metrics_raft_snapshot(double seconds)
{
    pthread_mutex_lock(&http_lock);
    m.snapshots++;
    m.snapshot_seconds += seconds;
    pthread_mutex_unlock(&http_lock);
}

void metrics_raft_apply(double seconds)
{
    pthread_mutex_lock(&http_lock);
    observe(&m.raft_apply, seconds);
    pthread_mutex_unlock(&http_lock);
}

static const char *rcode_name(int rcode)
{
    static const char *const names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                        "NOTIMP", "REFUSED"};
    return rcode < 6 ? names[rcode] : "OTHER";
}

/* One gauge, in either format. */
static void gauge(struct evbuffer *out, json_t *gauges, const char *name, const char *help,
                  double value)
{
    if (gauges) {
        json_array_append_new(gauges, json_pack("{s:s, s:f, s:{}}", "Name", name, "Value", value,
                                                "Labels"));
        return;
    }
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name,
                        value);
}

/* The gauges, as Prometheus text into out, or as Consul's JSON into gauges. */
static void render_gauges(const struct metrics_sources *src, const struct health_stats *h,
                          struct evbuffer *out, json_t *gauges)
{
    struct cluster_status st;
    struct health_stats hs = *h;
    uint64_t instances = 0, checks = 0, bytes = 0;
    cluster_get_status(src->cluster, &st);
    store_stats(src->store, &instances, &checks, &bytes);
    gauge(out, gauges, "registryd_raft_leader", "1 if this server leads its raft cluster",
          st.is_leader);
    gauge(out, gauges, "registryd_raft_known_leader", "1 if this server knows a leader",
          st.known_leader);
    gauge(out, gauges, "registryd_raft_term", "current raft term", (double)st.term);
    gauge(out, gauges, "registryd_raft_commit_index", "raft commit index",
          (double)st.commit_index);
    gauge(out, gauges, "registryd_raft_applied_index", "last raft index applied to the store",
          (double)st.applied_index);
    gauge(out, gauges, "registryd_raft_last_contact_seconds",
          "time since this server last heard from a leader", st.last_contact_ms / 1000.0);
    gauge(out, gauges, "registryd_raft_servers", "servers in the raft configuration",
          st.n_servers);
    gauge(out, gauges, "registryd_raft_servers_alive",
          "servers this one heard answer in the last 3 s (itself included)",
          cluster_servers_alive(src->cluster));
    gauge(out, gauges, "registryd_blocking_queries_parked", "blocking queries waiting",
          (double)watch_parked_total());
    gauge(out, gauges, "registryd_store_instances", "service instances stored",
          (double)instances);
    gauge(out, gauges, "registryd_store_checks", "checks stored", (double)checks);
    gauge(out, gauges, "registryd_store_bytes", "bytes the LMDB store uses", (double)bytes);
    gauge(out, gauges, "registryd_checks_passing", "checks this server probes, passing",
          (double)hs.passing);
    gauge(out, gauges, "registryd_checks_warning", "checks this server probes, warning",
          (double)hs.warning);
    gauge(out, gauges, "registryd_checks_critical", "checks this server probes, critical",
          (double)hs.critical);
    gauge(out, gauges, "registryd_checker_lag_p99_seconds",
          "p99 lateness of probes against their schedule (last 10-20 s)",
          hs.late_p99_ms / 1000.0);
    gauge(out, gauges, "registryd_self_preservation",
          "1 while automatic deregistration is held", hs.self_preservation);
    gauge(out, gauges, "registryd_http_cache_bytes",
          "bytes of rendered HTTP answers kept for reuse", (double)m.cache.bytes);
    gauge(out, gauges, "registryd_http_cache_max_bytes", "the render cache's budget (http_cache_size)",
          (double)m.cache.max_bytes);
    gauge(out, gauges, "registryd_http_cache_entries", "rendered HTTP answers kept",
          (double)m.cache.entries);
    gauge(out, gauges, "registryd_http_conns_open", "HTTP connections open (all clients)",
          (double)m.conns_open);
}

/* The counters and histograms as Prometheus text. */
static void render_prometheus_counters(const struct health_stats *hs, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP registryd_checker_probes_total probes completed\n"
                             "# TYPE registryd_checker_probes_total counter\n"
                             "registryd_checker_probes_total %llu\n",
                        (unsigned long long)hs->probes);
    evbuffer_add_printf(out, "# HELP registryd_http_requests_total HTTP requests by route "
                             "and status\n# TYPE registryd_http_requests_total counter\n");
    for (int i = 0; i < m.nhttp; i++)
        evbuffer_add_printf(out,
                            "registryd_http_requests_total{method=\"%s\",route=\"%s\","
                            "code=\"%d\"} %llu\n",
                            m.http[i].method, m.http[i].route, m.http[i].status,
                            (unsigned long long)m.http[i].count);
    static const char *const cache_help[] = {
        "reads answered from the render cache", "cacheable reads rendered anew",
        "rendered answers dropped to stay within http_cache_size"};
    static const char *const cache_name[] = {"hits", "misses", "evictions"};
    const uint64_t cache_count[] = {m.cache.hits, m.cache.misses, m.cache.evictions};
    for (int i = 0; i < 3; i++)
        evbuffer_add_printf(out, "# HELP registryd_http_cache_%s_total %s\n"
                                 "# TYPE registryd_http_cache_%s_total counter\n"
                                 "registryd_http_cache_%s_total %llu\n",
                            cache_name[i], cache_help[i], cache_name[i], cache_name[i],
                            (unsigned long long)cache_count[i]);
    evbuffer_add_printf(out, "# HELP registryd_http_conns_rejected_total connections closed at "
                             "once for being over http_max_conns_per_client\n"
                             "# TYPE registryd_http_conns_rejected_total counter\n"
                             "registryd_http_conns_rejected_total %llu\n",
                        (unsigned long long)m.conns_refused);
    evbuffer_add_printf(out, "# HELP registryd_http_rate_limited_total requests answered 429 by "
                             "http_read_rate or http_write_rate\n"
                             "# TYPE registryd_http_rate_limited_total counter\n"
                             "registryd_http_rate_limited_total{kind=\"read\"} %llu\n"
                             "registryd_http_rate_limited_total{kind=\"write\"} %llu\n",
                        (unsigned long long)m.rate_limited[0],
                        (unsigned long long)m.rate_limited[1]);
    evbuffer_add_printf(out, "# HELP registryd_http_streams_total answers streamed in pieces "
                             "(too big to render in one slice of the loop)\n"
                             "# TYPE registryd_http_streams_total counter\n"
                             "registryd_http_streams_total %llu\n",
                        (unsigned long long)m.streams);
    evbuffer_add_printf(out, "# HELP registryd_http_streams_parked_total times a streamed "
                             "answer let its read of the store go while its client was slow\n"
                             "# TYPE registryd_http_streams_parked_total counter\n"
                             "registryd_http_streams_parked_total %llu\n",
                        (unsigned long long)m.streams_parked);
    evbuffer_add_printf(out, "# HELP registryd_raft_snapshots_total raft snapshots taken (each "
                             "a copy of the whole store)\n"
                             "# TYPE registryd_raft_snapshots_total counter\n"
                             "registryd_raft_snapshots_total %llu\n"
                             "# HELP registryd_raft_snapshot_seconds_total seconds spent taking "
                             "raft snapshots\n"
                             "# TYPE registryd_raft_snapshot_seconds_total counter\n"
                             "registryd_raft_snapshot_seconds_total %.6f\n",
                        (unsigned long long)m.snapshots, m.snapshot_seconds);
    render_histogram(out, "registryd_http_request_duration_seconds",
                     "time from request to reply (blocking queries included)",
                     &m.http_latency);
    uint64_t dns_rcode[16];
    struct histogram dns_latency;
    dns_totals(dns_rcode, &dns_latency);
    evbuffer_add_printf(out, "# HELP registryd_dns_answers_total DNS answers by rcode\n"
                             "# TYPE registryd_dns_answers_total counter\n");
    for (int r = 0; r < 16; r++)
        if (dns_rcode[r])
            evbuffer_add_printf(out, "registryd_dns_answers_total{rcode=\"%s\"} %llu\n",
                                rcode_name(r), (unsigned long long)dns_rcode[r]);
    render_histogram(out, "registryd_dns_answer_duration_seconds",
                     "time from a DNS packet to its answer", &dns_latency);
    render_histogram(out, "registryd_raft_apply_duration_seconds",
                     "time from submitting a write to raft to its outcome (quorum, fsync, apply)",
                     &m.raft_apply);
}

/* The counters as Consul's JSON (its /v1/agent/metrics has no histograms). */
static void render_json_counters(json_t *counters)
{
    for (int i = 0; i < m.nhttp; i++) {
        char code[8];
        snprintf(code, sizeof(code), "%d", m.http[i].status);
        json_array_append_new(counters, json_pack("{s:s, s:I, s:{s:s, s:s, s:s}}", "Name",
                                                  "registryd.http.requests", "Count",
                                                  (json_int_t)m.http[i].count, "Labels",
                                                  "method", m.http[i].method, "route",
                                                  m.http[i].route, "code", code));
    }
    static const char *const cache_name[] = {"registryd.http.cache.hits",
                                             "registryd.http.cache.misses",
                                             "registryd.http.cache.evictions"};
    const uint64_t cache_count[] = {m.cache.hits, m.cache.misses, m.cache.evictions};
    for (int i = 0; i < 3; i++)
        json_array_append_new(counters, json_pack("{s:s, s:I, s:{}}", "Name", cache_name[i],
                                                  "Count", (json_int_t)cache_count[i], "Labels"));
    json_array_append_new(counters, json_pack("{s:s, s:I, s:{}}", "Name",
                                              "registryd.http.conns.rejected", "Count",
                                              (json_int_t)m.conns_refused, "Labels"));
    for (int w = 0; w < 2; w++)
        json_array_append_new(counters, json_pack("{s:s, s:I, s:{s:s}}", "Name",
                                                  "registryd.http.rate_limited", "Count",
                                                  (json_int_t)m.rate_limited[w], "Labels", "kind",
                                                  w ? "write" : "read"));
    json_array_append_new(counters, json_pack("{s:s, s:I, s:{}}", "Name",
                                              "registryd.http.streams", "Count",
                                              (json_int_t)m.streams, "Labels"));
    json_array_append_new(counters, json_pack("{s:s, s:I, s:{}}", "Name",
                                              "registryd.http.streams_parked", "Count",
                                              (json_int_t)m.streams_parked, "Labels"));
    json_array_append_new(counters, json_pack("{s:s, s:I, s:{}}", "Name",
                                              "registryd.raft.snapshots", "Count",
                                              (json_int_t)m.snapshots, "Labels"));
    uint64_t dns_rcode[16];
    struct histogram dns_latency;
    dns_totals(dns_rcode, &dns_latency);
    for (int r = 0; r < 16; r++)
        if (dns_rcode[r])
            json_array_append_new(counters,
                                  json_pack("{s:s, s:I, s:{s:s}}", "Name", "registryd.dns.answers",
                                            "Count", (json_int_t)dns_rcode[r], "Labels",
                                            "rcode", rcode_name(r)));
}

int metrics_render(const struct metrics_sources *src, bool prometheus, struct evbuffer *out)
{
    struct health_stats hs;
    struct http_cache_stats cache = {0};
    health_get_stats(src->health, &hs);
    if (src->cache != NULL) /* read now: not kept up to date on every cached answer */
        http_cache_get_stats(src->cache, &cache);
    pthread_mutex_lock(&http_lock);
    m.cache = cache;
    if (prometheus) {
        render_gauges(src, &hs, out, NULL);
        render_prometheus_counters(&hs, out);
        pthread_mutex_unlock(&http_lock);
        return 0;
    }
    json_t *gauges = json_array(), *counters = json_array();
    render_gauges(src, &hs, NULL, gauges);
    render_json_counters(counters);
    pthread_mutex_unlock(&http_lock);
    char stamp[64];
    time_t now = time(NULL);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S +0000 UTC", gmtime(&now));
    json_t *doc = json_pack("{s:s, s:o, s:o, s:[], s:[]}", "Timestamp", stamp, "Gauges", gauges,
                            "Counters", counters, "Points", "Samples");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return REG_ENOMEM;
    evbuffer_add(out, text, strlen(text));
    free(text);
    return 0;
}
