/*
 * http_render.h — the big read answers rendered as text, not as jansson
 * trees, and not all in one turn of the event loop:
 *   GET /v1/health/service/:name, /v1/catalog/service/:name,
 *       /v1/agent/services, /v1/agent/checks, /v1/health/state/:state
 *
 * Each answer is the concatenation of per-record encodings (an instance's
 * health entry, ServiceNode or agent service; a check) kept in a bounded
 * store of fragments, each valid for the exact LMDB bytes it was rendered
 * from (a keyed hash of the instance's record and of every check record the
 * fragment shows). So an answer costs what changed since the last one plus
 * a walk of raw records, and fragments need no invalidation: one rendered
 * from other bytes is simply not used.
 *
 * A render that is not done within a slice of time (HTTP_RENDER_SLICE_US)
 * goes on as a chunked reply, one slice per turn of the loop, from the same
 * read transaction (one store index), so that other clients are served
 * between pieces. The answer, once complete, goes into the render cache
 * like any other.
 *
 * The bytes are the same as the jansson path (http_catalog.c, http_agent.c)
 * produces: ?filter= and ?node-meta= select on a tree rendered by that same
 * code per record, and answers an ACL token trims still take that path
 * (tests/integration/test_render.py compares both).
 *
 * Threads: one fragment store for every HTTP worker thread (a mutex, held
 * to find, use or keep a fragment, never while rendering one); a render
 * (a job) belongs to the thread of the request it answers.
 */
#ifndef REGISTRYD_HTTP_RENDER_H
#define REGISTRYD_HTTP_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "store.h"

struct http_server;
struct http_req;

/* Bytes of fragments kept at most (ids, text and bookkeeping): half for
 * health entries, a sixth for each other kind. */
#define HTTP_RENDER_FRAGMENT_BYTES (64u << 20)
/* How long one piece of a render may hold the event loop. */
#define HTTP_RENDER_SLICE_US 1000
/* How long a streamed answer's read of the store may stay open at a time
 * (http_render.c: stream_park); below a second (a timeval's usec). */
#define HTTP_STREAM_READ_MAX_US 250000

struct http_render;

/* A fragment store of at most max_bytes. Returns 0 or REG_ENOMEM. */
int http_render_new(size_t max_bytes, struct http_render **out) REG_MUSTCHECK;
void http_render_free(struct http_render *h);

/*
 * Answer r (a read, the render cache missed) if its route is one of the
 * above and no ACL token trims the answer: returns true and then owns r, rd
 * and key (the render cache key, or NULL: not cached), replying and freeing
 * them now or later. false: nothing was taken; the caller renders as usual.
 */
bool http_render_start(struct http_req *r, struct store_read *rd, char *key, uint64_t index);

/* Element renderers shared with the jansson path (http_catalog.c). New
 * references. render_health_entry: NULL when the checks cannot be read;
 * *passing: every check in it passes. */
json_t *render_service_node(struct http_server *srv, json_t *inst);
json_t *render_health_entry(struct http_server *srv, struct store_read *rd, json_t *inst,
                            bool *passing);
/* Every ?tag= is among inst's Tags (case-insensitive). */
bool http_has_tags(struct http_req *r, json_t *inst);
/* /v1/health/state/:state's state ("any", "passing", "warning",
 * "critical"), or NULL with a 400 in r->status. */
const char *http_health_state(struct http_req *r);

#endif
