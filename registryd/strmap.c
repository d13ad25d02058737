/* strmap.c — see strmap.h. Keyed hashing (hash_table_str), singly linked chains. */
#include "hash.h"
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/error.h"

struct strmap_entry {
    struct strmap_entry *next;
    uint64_t hash;
    void *value;
    char key[];
};

struct strmap {
    struct strmap_entry **buckets;
    size_t nbuckets, count;
};

struct strmap *strmap_new(void)
{
    struct strmap *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

void strmap_free(struct strmap *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct strmap_entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    free(m);
}

static struct strmap_entry **find(const struct strmap *m, const char *key, uint64_t h)
{
    struct strmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0)
            break;
    return pp;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_entry **pp = find(m, key, hash_table_str(key));
    return *pp ? (*pp)->value : NULL;
}

static int grow(struct strmap *m)
{
    size_t n = m->nbuckets * 2;
    struct strmap_entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct strmap_entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int strmap_put(struct strmap *m, const char *key, void *value)
{
    uint64_t h = hash_table_str(key);
    struct strmap_entry **pp = find(m, key, h);
    if (*pp) {
        (*pp)->value = value;
        return 0;
    }
    size_t len = strlen(key);
    struct strmap_entry *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return REG_ENOMEM;
    e->next = NULL;
    e->hash = h;
    e->value = value;
    memcpy(e->key, key, len + 1);
    *pp = e;
    if (++m->count > m->nbuckets)
        (void)grow(m); /* a failed grow only costs speed */
    return 0;
}

void *strmap_del(struct strmap *m, const char *key)
{
    struct strmap_entry **pp = find(m, key, hash_table_str(key)), *e = *pp;
    if (e == NULL)
        return NULL;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

size_t strmap_count(const struct strmap *m)
{
    return m->count;
}

void strmap_each(const struct strmap *m, void (*fn)(const char *key, void *value, void *arg),
                 void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct strmap_entry *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, arg);
}
