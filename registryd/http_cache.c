/*
 * http_cache.c — see http_cache.h. A chained hash table (grown by
 * doubling) over the entries, and a doubly linked list of them from most to
 * least recently used; eviction takes the list's tail until the bytes held
 * are within the budget.
 */
#define _GNU_SOURCE /* mremap */
#include "http_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hash.h"
#include "registry/error.h"

#define CACHE_MIN_BUCKETS 64

/* A body, shared by its entry and the replies still sending it
 * (http_cache_get_shared): freed with the last of them. */
struct cache_body {
    size_t refs; /* atomic: replies release it on their own threads */
    char *text;
    size_t cap; /* a reservation's size (http_cache_reserve), 0: malloc'd */
    size_t len;
};

struct cache_entry {
    struct cache_entry *chain;      /* next in the bucket */
    struct cache_entry *prev, *next; /* recency: prev is more recent */
    uint64_t hash, index;
    char *key;
    struct cache_body *body;
    size_t len;
    size_t cost;
};

struct http_cache {
    pthread_mutex_t lock; /* over everything below */
    struct cache_entry **buckets;
    size_t nbuckets; /* a power of two */
    struct cache_entry *head, *tail;
    struct http_cache_stats st;
};

int http_cache_new(size_t max_bytes, struct http_cache **out)
{
    struct http_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return REG_ENOMEM;
    c->buckets = calloc(CACHE_MIN_BUCKETS, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return REG_ENOMEM;
    }
    c->nbuckets = CACHE_MIN_BUCKETS;
    c->st.max_bytes = max_bytes;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

/* ---- reservations ---------------------------------------------------------
 * A reservation is mapped at the whole budget while its answer is written;
 * kept by the cache, it is cut to the pages its answer fills (so a cached
 * answer holds its own size of address space, also where the kernel counts
 * every mapping against a commit limit). Let go, it waits for the next big
 * render as the one spare, cut to at most RESERVE_KEEP bytes, and is grown
 * back (mremap) when taken: a render that writes into pages already there
 * takes no page faults, which were a fifth of the time of a 20 MB answer.
 * The spare counts against the budget: putting an answer evicts for it,
 * and so does the next lookup after the spare appeared (a spare that would
 * break the budget on its own is dropped); the stats count it. One spare
 * for the process: bodies outlive the cache that kept them (a reply may
 * still be sending one). Lock order: a cache's, then the spare's. */
#define RESERVE_KEEP ((size_t)32 << 20)

static struct {
    pthread_mutex_t lock;
    char *text;
    size_t cap; /* mapped, every page of it written */
} spare = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};
static size_t spare_cap; /* atomic: spare.cap, read without the lock */

static size_t page_up(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* Unmap all of text after its first `keep` bytes (one page at least): the
 * size it is left with. */
static size_t reserve_cut(char *text, size_t cap, size_t keep)
{
    keep = page_up(keep ? keep : 1);
    if (keep >= cap)
        return cap;
    munmap(text + keep, cap - keep);
    return keep;
}

static size_t spare_bytes(void)
{
    return __atomic_load_n(&spare_cap, __ATOMIC_RELAXED);
}

/* The spare, taken out of the pool (NULL: none). */
static char *spare_take(size_t *cap)
{
    pthread_mutex_lock(&spare.lock);
    char *text = spare.text;
    *cap = spare.cap;
    spare.text = NULL;
    spare.cap = 0;
    __atomic_store_n(&spare_cap, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&spare.lock);
    return text;
}

static void spare_drop(void)
{
    size_t cap;
    char *text = spare_take(&cap);
    if (text != NULL)
        munmap(text, cap);
}

char *http_cache_reserve(struct http_cache *c, size_t *cap)
{
    pthread_mutex_lock(&c->lock);
    size_t want = page_up(c->st.max_bytes);
    pthread_mutex_unlock(&c->lock);
    if (want == 0)
        return NULL;
    size_t have;
    char *text = spare_take(&have);
    if (text != NULL && have > want) /* the budget shrank since */
        have = reserve_cut(text, have, want);
    if (text != NULL && have < want) {
        void *m = mremap(text, have, want, MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            munmap(text, have);
        text = m == MAP_FAILED ? NULL : m;
    }
    if (text == NULL) {
        void *m = mmap(NULL, want, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        text = m;
    }
    *cap = want;
    return text;
}

void http_cache_unreserve(char *text, size_t cap, size_t used)
{
    if (text == NULL)
        return;
    if (used == 0) {
        munmap(text, cap);
        return;
    }
    cap = reserve_cut(text, cap, used < RESERVE_KEEP ? used : RESERVE_KEEP);
    pthread_mutex_lock(&spare.lock);
    if (spare.text == NULL || spare.cap < cap) { /* the one with more pages stays */
        char *old = spare.text;
        size_t old_cap = spare.cap;
        spare.text = text;
        spare.cap = cap;
        __atomic_store_n(&spare_cap, cap, __ATOMIC_RELAXED);
        text = old;
        cap = old_cap;
    }
    pthread_mutex_unlock(&spare.lock);
    if (text != NULL)
        munmap(text, cap);
}

static void body_drop(char *text, size_t cap, size_t len)
{
    if (cap != 0)
        http_cache_unreserve(text, cap, len);
    else
        free(text);
}

void http_cache_release(void *ref)
{
    struct cache_body *b = ref;
    if (b != NULL && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        body_drop(b->text, b->cap, b->len);
        free(b);
    }
}

static void entry_free(struct cache_entry *e)
{
    free(e->key);
    http_cache_release(e->body);
    free(e);
}

void http_cache_free(struct http_cache *c)
{
    if (c == NULL)
        return;
    for (struct cache_entry *e = c->head, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&c->lock);
    free(c->buckets);
    free(c);
}

static struct cache_entry **find(struct http_cache *c, const char *key, uint64_t h)
{
    struct cache_entry **p = &c->buckets[h & (c->nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->chain;
    return p;
}

static void unlink_lru(struct http_cache *c, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(struct http_cache *c, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

/* Take e out of the table and the list, and free it. */
static void remove_entry(struct http_cache *c, struct cache_entry *e)
{
    struct cache_entry **p = find(c, e->key, e->hash);
    *p = e->chain;
    unlink_lru(c, e);
    c->st.bytes -= e->cost;
    c->st.entries--;
    entry_free(e);
}

/* Double the table when it holds more entries than buckets (best effort:
 * without memory, chains just grow longer). */
static void maybe_grow(struct http_cache *c)
{
    if (c->st.entries <= c->nbuckets)
        return;
    size_t n = c->nbuckets * 2;
    struct cache_entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (struct cache_entry *e = c->buckets[i], *next; e; e = next) {
            next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

/* The entry current for key at index (made the most recent), or NULL. */
/* Evict, least recently used first, until `more` bytes fit beside the
 * entries and the spare; the spare goes when the entries alone leave no
 * room for it. */
static void make_room(struct http_cache *c, size_t more)
{
    while (c->tail && c->st.bytes + spare_bytes() + more > c->st.max_bytes) {
        remove_entry(c, c->tail);
        c->st.evictions++;
    }
    if (c->st.bytes + spare_bytes() + more > c->st.max_bytes)
        spare_drop();
}

static struct cache_entry *lookup(struct http_cache *c, const char *key, uint64_t index)
{
    struct cache_entry *e = *find(c, key, hash_table_str(key));
    if (e == NULL || e->index != index) {
        c->st.misses++;
        return NULL;
    }
    if (c->head != e) {
        unlink_lru(c, e);
        push_front(c, e);
    }
    c->st.hits++;
    return e;
}

bool http_cache_get_shared(struct http_cache *c, const char *key, uint64_t index,
                           const char **body, size_t *len, void **ref)
{
    pthread_mutex_lock(&c->lock);
    make_room(c, 0); /* a spare let go since the last put */
    struct cache_entry *e = lookup(c, key, index);
    if (e == NULL) {
        pthread_mutex_unlock(&c->lock);
        return false;
    }
    *body = e->body->text;
    *len = e->len;
    __atomic_add_fetch(&e->body->refs, 1, __ATOMIC_RELAXED);
    *ref = e->body;
    pthread_mutex_unlock(&c->lock);
    return true;
}

static void put_locked(struct http_cache *c, char *key, uint64_t index, char *body, size_t cap,
                       size_t len);

void http_cache_put(struct http_cache *c, char *key, uint64_t index, char *body, size_t len)
{
    pthread_mutex_lock(&c->lock);
    put_locked(c, key, index, body, 0, len);
    pthread_mutex_unlock(&c->lock);
}

void http_cache_put_reserved(struct http_cache *c, char *key, uint64_t index, char *body,
                             size_t cap, size_t len)
{
    /* kept, it holds the pages its answer fills (those an earlier, longer
     * answer left are not this one's) */
    cap = reserve_cut(body, cap, len);
    pthread_mutex_lock(&c->lock);
    put_locked(c, key, index, body, cap, len);
    pthread_mutex_unlock(&c->lock);
}

static void put_locked(struct http_cache *c, char *key, uint64_t index, char *body, size_t cap,
                       size_t len)
{
    uint64_t h = hash_table_str(key);
    struct cache_entry *old = *find(c, key, h);
    if (old && old->index > index) { /* another thread kept a newer answer */
        free(key);
        body_drop(body, cap, len);
        return;
    }
    if (old)
        remove_entry(c, old); /* stale: its answer is about to be replaced */
    size_t cost = sizeof(struct cache_entry) + strlen(key) + 1 + len + 1;
    struct cache_entry *e = cost <= c->st.max_bytes ? calloc(1, sizeof(*e)) : NULL;
    struct cache_body *cb = e ? malloc(sizeof(*cb)) : NULL;
    if (cb == NULL) {
        free(e);
        free(key);
        body_drop(body, cap, len);
        return;
    }
    cb->refs = 1;
    cb->text = body;
    cb->cap = cap;
    cb->len = len;
    make_room(c, cost);
    e->hash = h;
    e->index = index;
    e->key = key;
    e->body = cb;
    e->len = len;
    e->cost = cost;
    struct cache_entry **slot = &c->buckets[h & (c->nbuckets - 1)];
    e->chain = *slot;
    *slot = e;
    push_front(c, e);
    c->st.bytes += cost;
    c->st.entries++;
    maybe_grow(c);
}

void http_cache_get_stats(struct http_cache *c, struct http_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    pthread_mutex_unlock(&c->lock);
    out->bytes += spare_bytes();
}
