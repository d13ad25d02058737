/*
 * metrics.h — counters and histograms of the front end (HTTP requests by
 * route and status, their latency, DNS answers by rcode), and the rendering
 * of every metric registryd has — these plus the cluster's, the checker's,
 * the store's and the blocking queries' — for GET /v1/agent/metrics, as
 * Prometheus text (?format=prometheus) or Consul's JSON.
 *
 * Threads: the HTTP figures are written by every HTTP worker thread (and
 * the raft apply times on the main loop) under one mutex, which the
 * rendering holds too. DNS answers are
 * counted on the DNS worker threads, each into its own shard (one writer
 * per shard, relaxed atomics), summed when rendered.
 */
#ifndef REGISTRYD_METRICS_H
#define REGISTRYD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct http_cache;
struct cluster;
struct health;
struct store;

/* One HTTP request ended: route pattern ("unmatched" if none), status,
 * seconds from arrival to the reply. */
void metrics_http(const char *method, const char *route, int status, double seconds);
/* A DNS worker's counters: taken at its start, released at its end (the
 * counts stay in the totals; a later worker may reuse the shard). NULL when
 * out of memory (metrics_dns then counts nothing). Any thread. */
struct metrics_dns_shard;
struct metrics_dns_shard *metrics_dns_shard_new(void);
void metrics_dns_shard_release(struct metrics_dns_shard *sh);
/* One DNS answer with this rcode, seconds from packet to answer; only the
 * thread that holds sh calls this. */
void metrics_dns(struct metrics_dns_shard *sh, int rcode, double seconds);
/* The HTTP front end's connections: open now (counted per client), and
 * refused since start for being over http_max_conns_per_client. */
void metrics_http_conns(uint64_t open, uint64_t refused);
/* One request answered 429 by http_read_rate (write=false) or
 * http_write_rate (write=true). */
void metrics_http_rate_limited(bool write);
/* A streamed answer's read of the store was let go while its client was
 * slow to take the next piece (http_render.c: stream_park). */
void metrics_http_stream_parked(void);
/* An answer too big to render in one slice began streaming (http_render.c). */
void metrics_http_streamed(void);
/* One write through raft: seconds from submission to its outcome. */
void metrics_raft_apply(double seconds);
/* One raft snapshot taken: seconds to copy the store (cluster.c). */
void metrics_raft_snapshot(double seconds);

struct metrics_sources {
    struct cluster *cluster;
    struct health *health;
    struct store *store;
    struct http_cache *cache; /* the render cache, read as the metrics are */
};

/* Append every metric to out, as Prometheus text or as Consul's JSON. */
int metrics_render(const struct metrics_sources *src, bool prometheus, struct evbuffer *out);

#endif
