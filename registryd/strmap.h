/*
 * strmap.h — a small string-keyed hash map (chaining, power-of-two buckets,
 * grows at load factor 1). Keys are copied; values are borrowed pointers.
 * Not thread-safe: each map belongs to one thread.
 */
#ifndef REGISTRYD_STRMAP_H
#define REGISTRYD_STRMAP_H

#include <stddef.h>

struct strmap;

/* Returns NULL when out of memory. */
struct strmap *strmap_new(void);
/* Frees the map and its keys, not the values. NULL is a no-op. */
void strmap_free(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Insert or replace. Returns 0 or REG_ENOMEM. */
int strmap_put(struct strmap *m, const char *key, void *value);
/* Remove key; returns its value, or NULL if absent. */
void *strmap_del(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);
/* Call fn for every entry; fn must not change the map. */
void strmap_each(const struct strmap *m, void (*fn)(const char *key, void *value, void *arg),
                 void *arg);

#endif
