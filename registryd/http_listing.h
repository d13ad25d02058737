/*
 * http_listing.h — what listings over the whole registry reuse between
 * renders, so that a listing costs what changed since the last one, not
 * what the registry holds: per service name, the tags of its instances and
 * the nodes they are on, remembered with the name's index
 * (store_name_index) and recomputed only when that index moves.
 *
 * Threads: one per front-end loop, used from that loop only.
 */
#ifndef REGISTRYD_HTTP_LISTING_H
#define REGISTRYD_HTTP_LISTING_H

#include <jansson.h>

#include "common.h"
#include "store.h"

struct http_listing;

/* Returns 0 or REG_ENOMEM. */
int http_listing_new(struct http_listing **out) REG_MUSTCHECK;
void http_listing_free(struct http_listing *l);

/*
 * The distinct tags of name's instances, in the order of their first
 * appearance walking the instances as store_each_instance does — the
 * array GET /v1/catalog/services shows for the name. *out: a borrowed
 * reference valid until the next call (json_incref to keep it), or NULL
 * when no instance of name could be read. Returns 0 or REG_ENOMEM.
 */
int http_listing_service_tags(struct http_listing *l, struct store_read *rd, const char *name,
                              json_t **out) REG_MUSTCHECK;

/*
 * The nodes name's instances are on: an object node -> the instance with
 * the smallest ID on that node (what a walk of every instance in ID order
 * meets first). *out: borrowed as for http_listing_service_tags, NULL when
 * no instance of name could be read. Returns 0 or REG_ENOMEM.
 */
int http_listing_service_nodes(struct http_listing *l, struct store_read *rd, const char *name,
                               json_t **out) REG_MUSTCHECK;

/* A listing walk over every name is done: forget names it did not see
 * (gone from the store), when they are many. */
void http_listing_sweep(struct http_listing *l);

/* Names remembered (for tests). */
size_t http_listing_count(const struct http_listing *l);

#endif
