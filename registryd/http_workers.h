/*
 * http_workers.h — the HTTP front end on N threads (http_workers).
 *
 * Worker 0 is the main loop's own HTTP server (where the cluster delivers
 * completions, signals and everything else run); workers 1..N-1 each have
 * a thread with its own event loop, listeners on the same addresses
 * (SO_REUSEPORT: the kernel spreads connections), blocking-query watch,
 * channel to the leader for forwarded requests, and LMDB read
 * transactions. They share the rate limits, the per-client connection
 * counts, the cache of rendered answers and the per-record JSON big
 * answers are made of (http_api.h's http_shared). What the cluster delivers on the main loop reaches a
 * worker through its mailbox (mailbox.h): write completions, and every
 * applied change for its blocking queries (http_workers_notify).
 *
 * Threads: everything here on the main loop's thread.
 */
#ifndef REGISTRYD_HTTP_WORKERS_H
#define REGISTRYD_HTTP_WORKERS_H

#include "common.h"
#include "http_api.h"

struct http_workers;
struct store_change;

/* Start n servers (1..REG_MAX_HTTP_WORKERS) from opt (worker 0's: base, watch
 * and link of the main loop). 0, or REG_EIO / REG_EINVAL / REG_ENOMEM with
 * err set. */
int http_workers_start(const struct http_options *opt, unsigned n, struct http_workers **out,
                       char *err, size_t errlen) REG_MUSTCHECK;
/* Start workers 1..n-1's threads: the last step of start-up. Their
 * listeners are bound from http_workers_start (an address in use is an
 * error there) but nothing is accepted before this, so that an answer over
 * HTTP means the server is up: its DNS listening, its signals handled.
 * Worker 0 serves once the main loop runs. 0, or REG_ENOMEM with err. */
int http_workers_serve(struct http_workers *w, char *err, size_t errlen) REG_MUSTCHECK;
/* Wake the blocking queries chg concerns on workers 1..n-1 (worker 0's
 * watch is the caller's). */
void http_workers_notify(struct http_workers *w, const struct store_change *chg);
/* At shutdown, before the cluster stops: answer the worker threads'
 * blocking queries, then stop those threads (their loops stay, so that
 * completions the cluster delivers while it stops still reach them). */
void http_workers_stop(struct http_workers *w);
/* After the cluster has stopped: free every server. NULL: no-op. */
void http_workers_free(struct http_workers *w);

#endif
