/*
 * http_cache.h — the render cache of the HTTP front end: rendered read
 * answers (JSON text) by cache key (path and the query parameters that
 * shape the answer), each valid while the store index it was rendered at is
 * current. Bounded in bytes (keys, bodies and bookkeeping), least recently
 * used out first; an answer larger than the whole budget is not kept.
 *
 * Threads: one cache for every HTTP worker thread: each call takes the
 * cache's mutex, and a shared body is released from any thread.
 */
#ifndef REGISTRYD_HTTP_CACHE_H
#define REGISTRYD_HTTP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct http_cache;

struct http_cache_stats {
    uint64_t hits;      /* lookups answered from the cache */
    uint64_t misses;    /* lookups that found nothing current */
    uint64_t evictions; /* entries dropped to stay within the budget */
    size_t bytes;       /* bytes held (keys, bodies, bookkeeping) */
    size_t entries;
    size_t max_bytes;   /* the budget; 0: nothing is cached */
};

/* A cache holding at most max_bytes. Returns 0 or REG_ENOMEM. */
int http_cache_new(size_t max_bytes, struct http_cache **out) REG_MUSTCHECK;
void http_cache_free(struct http_cache *c);

/* The answer cached for key at index: true with *body and *len set, else
 * false. The body stays valid, whatever the cache does, until
 * http_cache_release(*ref): a reply may send it without a copy. */
bool http_cache_get_shared(struct http_cache *c, const char *key, uint64_t index,
                           const char **body, size_t *len, void **ref);
void http_cache_release(void *ref);

/* Keep body[0..len) as key's answer at index, replacing any older one.
 * Takes key and body (malloc'd): kept, or freed when they do not fit. */
void http_cache_put(struct http_cache *c, char *key, uint64_t index, char *body, size_t len);

/* A reservation for a big answer (of the budget's size: address space, of
 * which only the pages written are memory), recycled from one let go where
 * one is spare, so its pages are already there. Its address never changes:
 * a reply may send from it while more is written. NULL: none (no budget, or
 * no address space). Give it to http_cache_put_reserved, or back with
 * http_cache_unreserve (used: bytes written). */
char *http_cache_reserve(struct http_cache *c, size_t *cap);
void http_cache_put_reserved(struct http_cache *c, char *key, uint64_t index, char *body,
                             size_t cap, size_t len);
void http_cache_unreserve(char *text, size_t cap, size_t used);

void http_cache_get_stats(struct http_cache *c, struct http_cache_stats *out);

#endif
