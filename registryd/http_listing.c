/*
 * http_listing.c — see http_listing.h. A strmap from service name to the
 * name's tags at the index they were computed at, plus the sweep
 * generation that last asked for it.
 */
#include "http_listing.h"

#include <stdlib.h>
#include <string.h>

#include "registry/error.h"
#include "strmap.h"

struct name_tags {
    uint64_t index; /* store_name_index when computed */
    uint64_t seen;  /* generation of the last walk that asked */
    json_t *tags;   /* array of strings (owned), NULL: no readable instance */
    json_t *nodes;  /* node -> smallest-ID instance there (owned), or NULL */
};

struct http_listing {
    struct strmap *names; /* name -> struct name_tags */
    uint64_t gen;         /* bumped by every sweep */
};

int http_listing_new(struct http_listing **out)
{
    struct http_listing *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->names = strmap_new()) == NULL) {
        free(l);
        return REG_ENOMEM;
    }
    l->gen = 1;
    *out = l;
    return 0;
}

static void free_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    struct name_tags *e = value;
    json_decref(e->tags);
    json_decref(e->nodes);
    free(e);
}

void http_listing_free(struct http_listing *l)
{
    if (l == NULL)
        return;
    strmap_each(l->names, free_entry, NULL);
    strmap_free(l->names);
    free(l);
}

struct name_walk {
    json_t *seen;  /* tag -> true, in order of first appearance */
    json_t *nodes; /* node -> smallest-ID instance */
    bool any;
};

static int add_instance(json_t *inst, void *arg)
{
    struct name_walk *t = arg;
    size_t i;
    json_t *tag;
    t->any = true;
    json_array_foreach(json_object_get(inst, "Tags"), i, tag)
        json_object_set_new(t->seen, json_string_value(tag), json_true());
    const char *node = json_string_value(json_object_get(inst, "Node"));
    if (node != NULL) {
        json_t *have = json_object_get(t->nodes, node);
        const char *id = json_string_value(json_object_get(inst, "ID"));
        const char *have_id = have ? json_string_value(json_object_get(have, "ID")) : NULL;
        /* by_name lists IDs in the order of the services table: the first
         * met is the smallest, but compare to be sure of it */
        if (have == NULL || (id && have_id && strcmp(id, have_id) < 0))
            json_object_set(t->nodes, node, inst);
    }
    return 0;
}

/* Read name's instances now into e (tags and nodes both NULL: none). */
static int compute(struct store_read *rd, const char *name, struct name_tags *e)
{
    struct name_walk t = {json_object(), json_object(), false};
    json_t *arr = json_array();
    if (t.seen == NULL || t.nodes == NULL || arr == NULL) {
        json_decref(t.seen);
        json_decref(t.nodes);
        json_decref(arr);
        return REG_ENOMEM;
    }
    store_each_instance(rd, name, add_instance, &t);
    const char *k;
    json_t *v;
    json_object_foreach(t.seen, k, v) json_array_append_new(arr, json_string(k));
    json_decref(t.seen);
    json_decref(e->tags);
    json_decref(e->nodes);
    e->tags = t.any ? arr : NULL;
    e->nodes = t.any ? t.nodes : NULL;
    if (!t.any) {
        json_decref(arr);
        json_decref(t.nodes);
    }
    return 0;
}

/* name's entry, read again if the name changed since. */
static int entry_of(struct http_listing *l, struct store_read *rd, const char *name,
                    struct name_tags **out)
{
    uint64_t index = store_name_index(rd, name);
    struct name_tags *e = strmap_get(l->names, name);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL || strmap_put(l->names, name, e) != 0) {
            free(e);
            return REG_ENOMEM;
        }
    }
    if (e->index != index || index == 0) {
        int rc = compute(rd, name, e);
        if (rc != 0) {
            e->index = 0; /* read again next time */
            return rc;
        }
        e->index = index;
    }
    e->seen = l->gen;
    *out = e;
    return 0;
}

int http_listing_service_tags(struct http_listing *l, struct store_read *rd, const char *name,
                              json_t **out)
{
    struct name_tags *e;
    int rc = entry_of(l, rd, name, &e);
    if (rc == 0)
        *out = e->tags;
    return rc;
}

int http_listing_service_nodes(struct http_listing *l, struct store_read *rd, const char *name,
                               json_t **out)
{
    struct name_tags *e;
    int rc = entry_of(l, rd, name, &e);
    if (rc == 0)
        *out = e->nodes;
    return rc;
}

struct sweep {
    uint64_t gen;
    char **doomed;
    size_t n, cap;
};

static void collect_stale(const char *key, void *value, void *arg)
{
    struct sweep *s = arg;
    struct name_tags *e = value;
    if (e->seen == s->gen || s->n == s->cap)
        return;
    s->doomed[s->n] = strdup(key);
    if (s->doomed[s->n] != NULL)
        s->n++;
}

void http_listing_sweep(struct http_listing *l)
{
    size_t total = strmap_count(l->names);
    struct sweep s = {l->gen, NULL, 0, 0};
    l->gen++;
    /* cheap to keep a few forgotten names; sweep when they could be many */
    if (total < 1024)
        return;
    s.cap = total;
    s.doomed = malloc(total * sizeof(*s.doomed));
    if (s.doomed == NULL)
        return;
    strmap_each(l->names, collect_stale, &s);
    for (size_t i = 0; i < s.n; i++) {
        struct name_tags *e = strmap_del(l->names, s.doomed[i]);
        if (e != NULL)
            free_entry(NULL, e, NULL);
        free(s.doomed[i]);
    }
    free(s.doomed);
}

size_t http_listing_count(const struct http_listing *l)
{
    return strmap_count(l->names);
}
