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

struct tags_walk {
    json_t *seen; /* tag -> true, in order of first appearance */
    bool any;
};

static int add_tags(json_t *inst, void *arg)
{
    struct tags_walk *t = arg;
    size_t i;
    json_t *tag;
    t->any = true;
    json_array_foreach(json_object_get(inst, "Tags"), i, tag)
        json_object_set_new(t->seen, json_string_value(tag), json_true());
    return 0;
}

/* The tags of name's instances as read now (NULL: none readable). */
static json_t *compute_tags(struct store_read *rd, const char *name, int *rc)
{
    struct tags_walk t = {json_object(), false};
    json_t *arr = json_array();
    *rc = 0;
    if (t.seen == NULL || arr == NULL) {
        json_decref(t.seen);
        json_decref(arr);
        *rc = REG_ENOMEM;
        return NULL;
    }
    store_each_instance(rd, name, add_tags, &t);
    const char *k;
    json_t *v;
    json_object_foreach(t.seen, k, v) json_array_append_new(arr, json_string(k));
    json_decref(t.seen);
    if (!t.any) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int http_listing_service_tags(struct http_listing *l, struct store_read *rd, const char *name,
                              json_t **out)
{
    uint64_t index = store_name_index(rd, name);
    struct name_tags *e = strmap_get(l->names, name);
    int rc;
    if (e != NULL && e->index == index && index != 0) {
        e->seen = l->gen;
        *out = e->tags;
        return 0;
    }
    json_t *tags = compute_tags(rd, name, &rc);
    if (rc != 0)
        return rc;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL || strmap_put(l->names, name, e) != 0) {
            free(e);
            json_decref(tags);
            return REG_ENOMEM;
        }
    }
    json_decref(e->tags);
    e->tags = tags;
    e->index = index;
    e->seen = l->gen;
    *out = e->tags;
    return 0;
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
