/*
 * http_render.c — see http_render.h. A render is a job: the request, its
 * read transaction, a resumable cursor over raw records, and the text not
 * yet sent. Each record becomes its fragment's text (reused when the bytes
 * hash the same, rendered through the jansson code of http_catalog.c and
 * http_api.c otherwise); the job emits them with the separators json_dumps
 * would put between them (JSON_COMPACT: "," and nothing else).
 *
 * Fragments live in one strmap per kind and one LRU list, bounded in
 * bytes. A fragment records what its answer's selectors need without a
 * tree: an instance's tags (?tag=), whether its checks pass (?passing), a
 * check's status (/v1/health/state/:state), and what else it was rendered
 * from (an instance's node, whose node-level checks it shows; a check's
 * service, whose tags it shows).
 */
#include "http_render.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "filter.h"
#include "hash.h"
#include "http_internal.h"
#include "metrics.h"
#include "record.h"
#include "registry/error.h"
#include "strmap.h"

enum frag_kind { FRAG_HEALTH, FRAG_CATALOG, FRAG_AGENT, FRAG_CHECK, FRAG_KINDS };

struct frag {
    struct frag *prev, *next; /* LRU, most recently used first */
    enum frag_kind kind;
    uint64_t own_sig; /* of its own record's bytes */
    uint64_t sig;     /* of every byte it was rendered from */
    uint64_t used;    /* monotonic seconds of its last use */
    bool passing;     /* health: every check in it passes */
    size_t bytes;     /* what it costs the budget */
    size_t len;       /* of text */
    size_t key_len;   /* agent and check: bytes of "key": leading text */
    size_t tags_len;  /* of tags */
    const char *id;   /* the map's key */
    const char *ref;  /* health: the instance's Node; check: its ServiceID */
    const char *status; /* check: its Status */
    const char *tags; /* instance: Tags, each NUL-terminated */
    const char *text; /* the element (agent, check: "key":element) */
    char data[];      /* id, ref, status, tags and text */
};

struct http_render {
    /* Every HTTP worker thread renders from this one store: the lock is
     * held to find, use or keep a fragment, never while rendering one. */
    pthread_mutex_t lock;
    struct strmap *map[FRAG_KINDS];
    /* per kind: a list, most recently used first, and its share of the
     * budget (health entries, the discovery path, get half) */
    struct frag *head[FRAG_KINDS], *tail[FRAG_KINDS];
    size_t kind_bytes[FRAG_KINDS], kind_max[FRAG_KINDS];
    size_t bytes, max_bytes, entries;
    uint64_t now; /* monotonic seconds, at the start of the current render */
    uint64_t seed; /* keys the signatures: bytes chosen to collide do not */
};

int http_render_new(size_t max_bytes, struct http_render **out)
{
    struct http_render *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return REG_ENOMEM;
    for (int k = 0; k < FRAG_KINDS; k++) {
        if ((h->map[k] = strmap_new()) == NULL) {
            http_render_free(h);
            return REG_ENOMEM;
        }
    }
    if (getrandom(&h->seed, sizeof(h->seed), 0) != (ssize_t)sizeof(h->seed))
        h->seed = (uint64_t)time(NULL) * HASH_FNV64_PRIME;
    pthread_mutex_init(&h->lock, NULL);
    h->max_bytes = max_bytes;
    h->kind_max[FRAG_HEALTH] = max_bytes / 2;
    h->kind_max[FRAG_CATALOG] = h->kind_max[FRAG_AGENT] = h->kind_max[FRAG_CHECK] = max_bytes / 6;
    *out = h;
    return 0;
}

void http_render_free(struct http_render *h)
{
    if (h == NULL)
        return;
    for (int k = 0; k < FRAG_KINDS; k++) {
        for (struct frag *f = h->head[k], *next; f != NULL; f = next) {
            next = f->next;
            free(f);
        }
        strmap_free(h->map[k]);
    }
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- signatures ---------------------------------------------------------- */

/* h extended by n bytes at p (and their count): order matters. SipHash
 * keyed by h, which starts from the random seed. A seeded Murmur-style
 * hash (what this was) has collisions that hold whatever the seed (pairs
 * of 8-byte blocks whose differences cancel), and records carry bytes that
 * clients and health endpoints choose: two versions of a record that sign
 * alike would have the memo serve the old one. */
static uint64_t sig_add(uint64_t h, const void *p, size_t n)
{
    const uint64_t key[2] = {h, 0x7369676e61747572ULL};
    return hash_siphash(key, p, n, 1, 3);
}

/* ---- the fragment store -------------------------------------------------- */

static void lru_unlink(struct http_render *h, struct frag *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        h->head[f->kind] = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        h->tail[f->kind] = f->prev;
    f->prev = f->next = NULL;
}

static void lru_push(struct http_render *h, struct frag *f)
{
    f->next = h->head[f->kind];
    f->prev = NULL;
    if (f->next)
        f->next->prev = f;
    h->head[f->kind] = f;
    if (h->tail[f->kind] == NULL)
        h->tail[f->kind] = f;
}

static void frag_drop(struct http_render *h, struct frag *f)
{
    lru_unlink(h, f);
    strmap_del(h->map[f->kind], f->id);
    h->bytes -= f->bytes;
    h->kind_bytes[f->kind] -= f->bytes;
    h->entries--;
    free(f);
}

static struct frag *frag_get(struct http_render *h, enum frag_kind kind, const char *id)
{
    return strmap_get(h->map[kind], id);
}

static void frag_touch(struct http_render *h, struct frag *f)
{
    f->used = h->now;
    if (h->head[f->kind] != f) {
        lru_unlink(h, f);
        lru_push(h, f);
    }
}

/* What a new fragment holds besides its text. */
struct frag_info {
    uint64_t own_sig, sig;
    const char *ref, *status;
    const char *tags;
    size_t tags_len;
    bool passing;
    size_t key_len;
};

/* Seconds unused before a fragment may make room for another. */
#define FRAG_IDLE_S 10

/* strmap's own cost per key, roughly: a node and the key's copy. */
#define FRAG_OVERHEAD 48

/* Keep text as id's fragment of this kind (replacing an older one), if
 * the budget allows. Out of memory only means no fragment. */
static void frag_put(struct http_render *h, enum frag_kind kind, const char *id,
                     const struct frag_info *fi, const char *text, size_t len)
{
    struct frag *old = frag_get(h, kind, id);
    if (old != NULL)
        frag_drop(h, old);
    size_t idn = strlen(id) + 1, refn = fi->ref ? strlen(fi->ref) + 1 : 0;
    size_t stn = fi->status ? strlen(fi->status) + 1 : 0;
    size_t bytes = sizeof(struct frag) + idn + refn + stn + fi->tags_len + len + FRAG_OVERHEAD +
                   idn;
    if (bytes > h->kind_max[kind] / 4)
        return;
    /* Full: make room only from fragments idle for a while. A listing
     * bigger than the share, walked again and again, then keeps reusing
     * the part that fits, where plain LRU would evict each fragment just
     * before its next use. */
    while (h->kind_bytes[kind] + bytes > h->kind_max[kind]) {
        struct frag *t = h->tail[kind];
        if (t == NULL || t->used + FRAG_IDLE_S > h->now)
            return;
        frag_drop(h, t);
    }
    struct frag *f = malloc(sizeof(*f) + idn + refn + stn + fi->tags_len + len);
    if (f == NULL)
        return;
    char *p = f->data;
    f->id = memcpy(p, id, idn);
    p += idn;
    f->ref = refn ? memcpy(p, fi->ref, refn) : NULL;
    p += refn;
    f->status = stn ? memcpy(p, fi->status, stn) : NULL;
    p += stn;
    f->tags = fi->tags_len ? memcpy(p, fi->tags, fi->tags_len) : NULL;
    p += fi->tags_len;
    f->text = memcpy(p, text, len);
    f->kind = kind;
    f->own_sig = fi->own_sig;
    f->sig = fi->sig;
    f->used = h->now;
    f->passing = fi->passing;
    f->bytes = bytes;
    f->len = len;
    f->key_len = fi->key_len;
    f->tags_len = fi->tags_len;
    if (strmap_put(h->map[kind], f->id, f) != 0) {
        free(f);
        return;
    }
    lru_push(h, f);
    h->bytes += bytes;
    h->kind_bytes[kind] += bytes;
    h->entries++;
}

/* inst's Tags as NUL-terminated strings one after another (malloc'd; NULL
 * with *len 0 when there are none or no memory). */
static char *tags_blob(json_t *inst, size_t *len)
{
    json_t *tags = json_object_get(inst, "Tags"), *t;
    size_t i, n = 0;
    json_array_foreach(tags, i, t) n += strlen(json_string_value(t) ? json_string_value(t) : "") + 1;
    *len = 0;
    char *b = n ? malloc(n) : NULL;
    if (b == NULL)
        return NULL;
    json_array_foreach(tags, i, t)
    {
        const char *s = json_string_value(t) ? json_string_value(t) : "";
        size_t sn = strlen(s) + 1;
        memcpy(b + *len, s, sn);
        *len += sn;
    }
    return b;
}

/* ---- jobs ---------------------------------------------------------------- */

enum route_kind { R_HEALTH, R_CATALOG, R_AGENT_SERVICES, R_AGENT_CHECKS, R_STATE };

struct job {
    struct http_req *r;
    struct http_render *h;
    struct store_read *rd;
    struct store_iter *it;
    enum route_kind kind;
    struct filter *f;
    bool select;       /* ?filter= or ?node-meta=: trees per record */
    bool passing;      /* ?passing */
    const char *state; /* R_STATE: the status asked for, NULL: any */
    char *key;         /* render cache key, or NULL */
    uint64_t index;
    struct evbuffer *out; /* rendered, not sent */
    /* everything rendered, for the render cache; out takes it from there
     * (see flush), so a cached answer is written once, not twice */
    char *all;
    size_t all_len, all_cap, all_max;
    size_t all_out;       /* of all: bytes already in out */
    bool all_fixed;       /* all is reserved at all_max: it never moves */
    bool all_off;         /* too big for the cache */
    size_t n;             /* elements emitted */
    bool streaming;
    struct evhttp_connection *evcon;
    struct http_server *srv; /* for the close callback */
    struct event *later; /* the next slice when a slice sent nothing */
    struct event *park;  /* the client has not taken a slice for a while */
    uint64_t read_at;    /* when the walk's read was begun or renewed */
    int rc;              /* REG_ENOMEM / REG_ESTORE cut it short */
    /* node-level checks' signature, for the last node asked (one txn) */
    char memo_node[STORE_NAME_MAX + 1];
    uint64_t memo_sig;
    bool memo_valid;
};

static void all_free(struct job *j);

static void job_free(struct job *j)
{
    if (j->evcon)
        http_on_client_gone(j->srv, j->evcon, NULL, NULL);
    if (j->later)
        event_free(j->later);
    if (j->park)
        event_free(j->park);
    store_iter_end(j->it);
    store_read_end(j->rd);
    filter_free(j->f);
    if (j->out)
        evbuffer_free(j->out);
    all_free(j);
    free(j->key);
    free(j);
}

/* A render kept for the cache is written once, into all, and out takes
 * it from there a slice at a time (flush). While all is small it may move
 * (realloc), so out copies it; once it outgrows ALL_SMALL it is reserved at
 * the cache's whole budget (address space, not memory: untouched pages cost
 * nothing) and never moves again, so out refers to it without a copy. Each
 * slice's reference is written to the socket before the next slice runs
 * (stream_next), and the last slice is copied, so the cache may own and
 * drop all once the job is done. */
#define ALL_SMALL ((size_t)1 << 20)

static void all_drop(struct job *j);

static void flush(struct job *j, bool last)
{
    if (j->all == NULL || j->all_out == j->all_len)
        return;
    const char *p = j->all + j->all_out;
    size_t n = j->all_len - j->all_out;
    int rc = last || !j->all_fixed ? evbuffer_add(j->out, p, n)
                                   : evbuffer_add_reference(j->out, p, n, NULL, NULL);
    if (rc != 0)
        j->rc = REG_ENOMEM;
    j->all_out = j->all_len;
}

static void all_free(struct job *j)
{
    if (j->all_fixed)
        http_cache_unreserve(j->all, j->all_cap, j->all_len);
    else
        free(j->all);
}

/* all is not kept: what out has not taken is copied to it. */
static void all_drop(struct job *j)
{
    flush(j, true);
    all_free(j);
    j->all = NULL;
    j->all_fixed = false;
    j->all_off = true;
}

/* Room in all for n more bytes; false: all is dropped. */
static bool all_room(struct job *j, size_t n)
{
    if (j->all_len + n > j->all_max) {
        all_drop(j);
        return false;
    }
    if (j->all_len + n <= j->all_cap)
        return true;
    if (j->all_fixed) { /* a reservation never moves: out may refer to it */
        all_drop(j);
        return false;
    }
    size_t cap = j->all_cap ? j->all_cap * 2 : 4096;
    while (cap < j->all_len + n)
        cap *= 2;
    char *b;
    if (cap > ALL_SMALL) {
        /* nothing in all is referred to yet (out copied what it took) */
        if ((b = http_cache_reserve(j->r->srv->cache, &cap)) != NULL && cap >= j->all_len + n) {
            memcpy(b, j->all, j->all_len);
            free(j->all);
            j->all_fixed = true;
            j->all_max = cap;
        } else if (b != NULL) { /* the budget shrank under this render */
            http_cache_unreserve(b, cap, 0);
            b = NULL;
        }
    } else {
        b = realloc(j->all, cap);
    }
    if (b == NULL) {
        all_drop(j);
        return false;
    }
    j->all = b;
    j->all_cap = cap;
    return true;
}

static void add(struct job *j, const char *s, size_t n)
{
    if (!j->all_off && j->key != NULL && all_room(j, n)) {
        memcpy(j->all + j->all_len, s, n);
        j->all_len += n;
        return;
    }
    if (evbuffer_add(j->out, s, n) != 0)
        j->rc = REG_ENOMEM;
}

static void emit(struct job *j, const char *s, size_t n)
{
    if (j->n++ > 0)
        add(j, ",", 1);
    add(j, s, n);
}

/* A tree through the request's ?filter= and ?node-meta=. */
static bool selected(struct job *j, json_t *obj)
{
    return !j->select || http_filter_keep(j->r, j->f, obj);
}

/* Every ?tag= among the NUL-separated tags (http_has_tags without a tree). */
static bool tags_match(struct http_req *r, const char *tags, size_t len)
{
    for (int i = 0; i < r->n_params; i++) {
        if (strcmp(r->params[i].key, "tag") != 0 || r->params[i].value == NULL)
            continue;
        bool found = false;
        for (size_t o = 0; o < len && !found; o += strlen(tags + o) + 1)
            found = strcasecmp(tags + o, r->params[i].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

static json_t *decode(enum record_kind kind, const void *raw, size_t len)
{
    char why[200];
    json_t *obj;
    return record_decode(kind, raw, len, &obj, why, sizeof(why)) == 0 ? obj : NULL;
}

/* text of obj (compact), with "key": first when key != NULL. */
static char *dump(json_t *obj, const char *key, size_t *len, size_t *key_len)
{
    char *t = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    *key_len = 0;
    if (t == NULL || key == NULL) {
        *len = t ? strlen(t) : 0;
        return t;
    }
    json_t *ks = json_string(key);
    char *k = ks ? json_dumps(ks, JSON_ENCODE_ANY) : NULL;
    json_decref(ks);
    size_t kn = k ? strlen(k) : 0, tn = strlen(t);
    char *all = k ? malloc(kn + 1 + tn + 1) : NULL;
    if (all != NULL) {
        memcpy(all, k, kn);
        all[kn] = ':';
        memcpy(all + kn + 1, t, tn + 1);
        *len = kn + 1 + tn;
        *key_len = kn + 1;
    }
    free(k);
    free(t);
    return all;
}

struct sig_acc {
    uint64_t h;
};

static int add_check_sig(const char *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    struct sig_acc *a = arg;
    a->h = sig_add(sig_add(a->h, key, klen), val, vlen);
    return 0;
}

/* The signature of an instance's health entry: its bytes (own), its
 * checks', and its node's checks'. 0 or REG_ESTORE. */
static int health_sig(struct job *j, const char *id, const char *node, uint64_t own,
                      uint64_t *out)
{
    struct sig_acc a = {own};
    int rc = store_owner_checks_raw(j->rd, id, NULL, add_check_sig, &a);
    if (rc != 0)
        return rc;
    if (node != NULL && *node) {
        if (!j->memo_valid || strcmp(j->memo_node, node) != 0) {
            struct sig_acc n = {j->h->seed ^ 0x6e6f6465};
            if ((rc = store_owner_checks_raw(j->rd, NULL, node, add_check_sig, &n)) != 0)
                return rc;
            snprintf(j->memo_node, sizeof(j->memo_node), "%s", node);
            j->memo_sig = n.h;
            j->memo_valid = true;
        }
        a.h = hash_mix64(a.h ^ j->memo_sig);
    }
    *out = a.h;
    return 0;
}

/* A check's signature: its bytes (own) and its instance's. */
static uint64_t check_sig(struct job *j, const char *sid, uint64_t own)
{
    const void *raw;
    size_t len;
    if (sid == NULL || *sid == '\0' || /* a node's own check: no instance */
        store_get_raw(j->rd, false, sid, strlen(sid), &raw, &len) != 0)
        return hash_mix64(own + 1);
    return sig_add(own, raw, len);
}

static void instance_record(struct job *j, const char *id, const void *raw, size_t rawlen)
{
    struct http_render *h = j->h;
    enum frag_kind fk = j->kind == R_HEALTH    ? FRAG_HEALTH
                        : j->kind == R_CATALOG ? FRAG_CATALOG
                                               : FRAG_AGENT;
    uint64_t own = sig_add(h->seed ^ (uint64_t)fk, raw, rawlen), sig = own;
    if (!j->select) {
        pthread_mutex_lock(&h->lock);
        struct frag *fr = frag_get(h, fk, id);
        if (fr != NULL && fr->own_sig == own &&
            (fk != FRAG_HEALTH ||
             (health_sig(j, id, fr->ref, own, &sig) == 0 && sig == fr->sig))) {
            frag_touch(h, fr);
            if (fk == FRAG_AGENT || (tags_match(j->r, fr->tags, fr->tags_len) &&
                                     (fk != FRAG_HEALTH || !j->passing || fr->passing)))
                emit(j, fr->text, fr->len);
            pthread_mutex_unlock(&h->lock);
            return;
        }
        pthread_mutex_unlock(&h->lock);
    }
    json_t *inst = decode(RECORD_INSTANCE, raw, rawlen), *e = NULL;
    if (inst == NULL)
        return; /* damaged: skipped, as the store's own walk does */
    const char *node = json_string_value(json_object_get(inst, "Node"));
    const char *iid = json_string_value(json_object_get(inst, "ID"));
    bool passing = true, keep = true, sig_ok = true;
    if (fk == FRAG_HEALTH) {
        sig_ok = health_sig(j, id, node, own, &sig) == 0;
        e = render_health_entry(j->r->srv, j->rd, inst, &passing);
        keep = http_has_tags(j->r, inst) && (!j->passing || passing);
    } else if (fk == FRAG_CATALOG) {
        e = render_service_node(j->r->srv, inst);
        keep = http_has_tags(j->r, inst);
    } else if (iid != NULL) {
        e = render_agent_service(j->r->srv, inst);
    }
    if (e == NULL) {
        json_decref(inst);
        return;
    }
    keep = keep && selected(j, e);
    size_t len, key_len;
    char *text = dump(e, fk == FRAG_AGENT ? iid : NULL, &len, &key_len);
    if (text == NULL) {
        j->rc = REG_ENOMEM;
    } else {
        if (sig_ok && !j->select) {
            size_t tl = 0;
            char *tags = fk == FRAG_AGENT ? NULL : tags_blob(inst, &tl);
            struct frag_info fi = {own, sig, node ? node : "", NULL, tags, tl, passing, key_len};
            pthread_mutex_lock(&h->lock);
            frag_put(h, fk, id, &fi, text, len);
            pthread_mutex_unlock(&h->lock);
            free(tags);
        }
        if (keep)
            emit(j, text, len);
    }
    free(text);
    json_decref(e);
    json_decref(inst);
}

static void check_record(struct job *j, const char *id, const void *raw, size_t rawlen)
{
    struct http_render *h = j->h;
    uint64_t own = sig_add(h->seed ^ (uint64_t)FRAG_CHECK, raw, rawlen);
    bool keyed = j->kind == R_AGENT_CHECKS;
    if (!j->select) {
        pthread_mutex_lock(&h->lock);
        struct frag *fr = frag_get(h, FRAG_CHECK, id);
        if (fr != NULL && fr->own_sig == own && check_sig(j, fr->ref, own) == fr->sig) {
            frag_touch(h, fr);
            if (j->state == NULL || strcmp(fr->status, j->state) == 0)
                emit(j, fr->text + (keyed ? 0 : fr->key_len),
                     fr->len - (keyed ? 0 : fr->key_len));
            pthread_mutex_unlock(&h->lock);
            return;
        }
        pthread_mutex_unlock(&h->lock);
    }
    json_t *check = decode(RECORD_CHECK, raw, rawlen), *inst = NULL;
    if (check == NULL)
        return;
    const char *sid = json_string_value(json_object_get(check, "ServiceID"));
    const char *cid = json_string_value(json_object_get(check, "CheckID"));
    const char *st = json_string_value(json_object_get(check, "Status"));
    if (cid == NULL) {
        json_decref(check);
        return;
    }
    store_get_instance(j->rd, sid, &inst);
    json_t *e = render_check(check, inst);
    bool keep = (j->state == NULL || (st != NULL && strcmp(st, j->state) == 0)) && selected(j, e);
    size_t len, key_len;
    char *text = dump(e, cid, &len, &key_len);
    if (text == NULL) {
        j->rc = REG_ENOMEM;
    } else {
        if (!j->select) {
            struct frag_info fi = {own, check_sig(j, sid, own), sid, st ? st : "", NULL, 0, false,
                                   key_len};
            pthread_mutex_lock(&h->lock);
            frag_put(h, FRAG_CHECK, id, &fi, text, len);
            pthread_mutex_unlock(&h->lock);
        }
        if (keep)
            emit(j, keyed ? text : text + key_len, keyed ? len : len - key_len);
    }
    free(text);
    json_decref(e);
    json_decref(inst);
    json_decref(check);
}


/* Render for up to a slice (to the end when !sliced). Returns true when the
 * answer is complete (or cut short: j->rc). */
static bool run_slice(struct job *j, bool sliced)
{
    uint64_t t0 = now_us();
    for (unsigned i = 1; j->rc == 0; i++) {
        if (sliced && (i & 15) == 0 && now_us() - t0 > HTTP_RENDER_SLICE_US)
            return false;
        const char *k;
        size_t kl, vl;
        const void *v;
        int rc = store_iter_next(j->it, &k, &kl, &v, &vl);
        if (rc == REG_ENOTFOUND)
            break;
        if (rc != 0) {
            j->rc = rc;
            break;
        }
        char id[STORE_NAME_MAX + 1];
        if (kl == 0 || kl > STORE_NAME_MAX || memchr(k, '\0', kl) != NULL)
            continue;
        memcpy(id, k, kl);
        id[kl] = '\0';
        if (j->kind == R_AGENT_CHECKS || j->kind == R_STATE)
            check_record(j, id, v, vl);
        else
            instance_record(j, id, v, vl);
    }
    bool object = j->kind == R_AGENT_SERVICES || j->kind == R_AGENT_CHECKS;
    add(j, object ? "}" : "]", 1);
    return true;
}


/* The answer is complete: into the render cache (whole, and only whole). */
static void keep_answer(struct job *j)
{
    if (j->key != NULL && !j->all_off && j->all != NULL && j->rc == 0) {
        if (j->all_fixed)
            http_cache_put_reserved(j->r->srv->cache, j->key, j->index, j->all, j->all_cap,
                                    j->all_len);
        else
            http_cache_put(j->r->srv->cache, j->key, j->index, j->all, j->all_len);
        j->key = NULL;
        j->all = NULL;
    }
}

static void stream_closed(struct evhttp_connection *evcon, void *arg)
{
    struct job *j = arg;
    struct http_req *r = j->r;
    (void)evcon;
    j->evcon = NULL; /* its close callback is being run */
    job_free(j);
    http_stream_end(r, true);
}

static void stream_next(struct evhttp_connection *evcon, void *arg);

/*
 * A stream's read is held no longer than HTTP_STREAM_READ_MAX_US at a
 * time. While a read is open LMDB reuses no page a write frees, and each
 * write frees about 30 (a path in each B-tree it changes), so one client
 * that reads a large answer slowly, or stops reading, grew the store file
 * and the resident size with every write until its connection timed out.
 * A stream that waits that long for its client parks its walk (the read is
 * reset); one that renders that long renews it. Either way the walk goes
 * on from where it was, in what the store holds then: entries after that
 * point may show writes made while the answer was sent (each entry is
 * still whole, and X-Consul-Index is still the index at the start, so a
 * blocking query on it sees those writes as new), and the answer is not
 * kept for the render cache (unless no write came in between).
 */
static void stream_park(evutil_socket_t fd, short what, void *arg)
{
    struct job *j = arg;
    (void)fd;
    (void)what;
    if (store_iter_parked(j->it))
        return;
    int rc = store_iter_park(j->it); /* the read is reset even when the walk is lost */
    if (j->rc == 0)
        j->rc = rc;
    metrics_http_stream_parked();
}

/* After a chunk is handed to evhttp: the walk parks when the read has been
 * open HTTP_STREAM_READ_MAX_US, unless the client takes the chunk first. */
static void arm_park(struct job *j)
{
    uint64_t open = now_us() - j->read_at;
    struct timeval left = {0, 0};
    if (open < HTTP_STREAM_READ_MAX_US)
        left.tv_usec = (suseconds_t)(HTTP_STREAM_READ_MAX_US - open);
    evtimer_add(j->park, &left);
}

/* Before a slice of a stream: a parked walk unparks, an old read is
 * renewed. If a write came in between, the answer is one the cache must
 * not keep; all may be let go now, as the last slice's reference to it
 * has been written. */
static void stream_renew(struct job *j)
{
    if (j->rc == 0 && !store_iter_parked(j->it) &&
        now_us() - j->read_at > HTTP_STREAM_READ_MAX_US)
        j->rc = store_iter_park(j->it);
    if (j->rc != 0 || !store_iter_parked(j->it))
        return;
    bool moved;
    if ((j->rc = store_iter_unpark(j->it, &moved)) != 0)
        return;
    j->read_at = now_us();
    if (!moved)
        return;
    j->memo_valid = false;
    if (!j->all_off && j->all != NULL)
        all_drop(j);
    j->all_off = true;
}

static void stream_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_next(NULL, arg);
}

/* The last piece is out: render and send the next. */
static void stream_next(struct evhttp_connection *evcon, void *arg)
{
    struct job *j = arg;
    (void)evcon;
    evtimer_del(j->park);
    stream_renew(j);
    bool done = j->rc == 0 && run_slice(j, true);
    flush(j, done);
    if (j->rc != 0) {
        /* cut short: the body is not valid JSON; the client sees a broken
         * answer rather than a wrong one */
        struct http_req *r = j->r;
        job_free(j);
        http_stream_end(r, false);
        return;
    }
    if (evbuffer_get_length(j->out) > 0) {
        /* an empty chunk would end the body */
        evhttp_send_reply_chunk_with_cb(j->r->req, j->out, done ? NULL : stream_next,
                                        done ? NULL : j);
        if (!done)
            arm_park(j);
    } else if (!done) {
        struct timeval now = {0, 0};
        evtimer_add(j->later, &now);
        return;
    }
    if (done) {
        struct http_req *r = j->r;
        keep_answer(j);
        job_free(j);
        http_stream_end(r, false);
    }
}

/* ---- GET /v1/catalog/services ---------------------------------------------
 * Rendered straight from the store's summary of tags per name
 * (store_each_name_summary): one record per name, never an instance, so a
 * cold answer costs what it lists. The text is what json_dumps makes of
 * the jansson path's object (http_catalog.c), which a token that trims the
 * answer, ?filter= and ?node-meta= still take. */

struct textbuf {
    char *p;
    size_t len, cap;
    int rc;
};

static void tb_add(struct textbuf *b, const void *s, size_t n)
{
    if (b->rc != 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->rc = REG_ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* s as a JSON string, escaped as json_dumps escapes it. */
static void tb_string(struct textbuf *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\')
        i++;
    if (i == n) { /* nothing to escape: the common case */
        tb_add(b, "\"", 1);
        tb_add(b, s, n);
        tb_add(b, "\"", 1);
        return;
    }
    json_t *js = json_stringn(s, n);
    char *t = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    if (t == NULL)
        b->rc = REG_ENOMEM;
    else
        tb_add(b, t, strlen(t));
    free(t);
    json_decref(js);
}

static int add_services_name(const char *name, const char *json, size_t len, void *arg)
{
    struct textbuf *b = arg;
    if (b->len > 1)
        tb_add(b, ",", 1);
    tb_string(b, name, strlen(name));
    tb_add(b, ":", 1);
    tb_add(b, json, len);
    return b->rc;
}

static bool is_catalog_services(struct http_req *r)
{
    return strcmp(r->route->path, "/v1/catalog/services") == 0 && !http_has_param(r, "filter") &&
           !http_has_param(r, "node-meta");
}

static bool render_services(struct http_req *r, struct store_read *rd, char *key, uint64_t index)
{
    struct textbuf b = {NULL, 0, 0, 0};
    struct evbuffer *out = evbuffer_new();
    tb_add(&b, "{", 1);
    int rc = out == NULL ? REG_ENOMEM : store_each_name_summary(rd, add_services_name, &b);
    tb_add(&b, "}", 1);
    rc = rc != 0 ? rc : b.rc;
    store_read_end(rd);
    if (rc == 0 && evbuffer_add(out, b.p, b.len) != 0)
        rc = REG_ENOMEM;
    if (rc != 0) {
        http_fail(r, 500, "Render failed: %s", reg_strerror(rc));
        free(b.p);
        free(key);
        if (out)
            evbuffer_free(out);
        http_finish_read(r, NULL, index);
        return true;
    }
    if (key != NULL) /* valid while the names and tags stay (run_read_in) */
        http_cache_put(r->srv->cache, key, r->cache_version, b.p, b.len); /* takes both */
    else
        free(b.p);
    http_finish_read(r, out, index);
    return true;
}

static bool route_kind_of(const char *path, enum route_kind *out)
{
    static const struct {
        const char *path;
        enum route_kind kind;
    } routes[] = {
        {"/v1/health/service/", R_HEALTH},       {"/v1/catalog/service/", R_CATALOG},
        {"/v1/agent/services", R_AGENT_SERVICES}, {"/v1/agent/checks", R_AGENT_CHECKS},
        {"/v1/health/state/", R_STATE},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(path, routes[i].path) == 0) {
            *out = routes[i].kind;
            return true;
        }
    }
    return false;
}

bool http_render_start(struct http_req *r, struct store_read *rd, char *key, uint64_t index)
{
    enum route_kind kind;
    struct http_render *h = r->srv->render;
    if (h == NULL || r->route->read == NULL || http_acl_bypass_cache(r))
        return false;
    if (is_catalog_services(r))
        return render_services(r, rd, key, index);
    if (!route_kind_of(r->route->path, &kind))
        return false;
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return false;
    j->r = r;
    j->h = h;
    j->rd = rd;
    j->read_at = now_us(); /* the caller began rd just now */
    j->kind = kind;
    j->key = key;
    j->index = index;
    bool passing;
    j->passing = kind == R_HEALTH && http_passing(r, &passing) == 0 && passing;
    pthread_mutex_lock(&h->lock);
    h->now = now_us() / 1000000u;
    pthread_mutex_unlock(&h->lock);
    struct http_cache_stats cs;
    http_cache_get_stats(r->srv->cache, &cs);
    j->all_max = cs.max_bytes;
    if (kind == R_STATE) {
        const char *state = http_health_state(r); /* NULL: r->status says why */
        j->state = state && strcmp(state, "any") != 0 ? state : NULL;
    }
    if (r->status == 0 && http_filter_compile(r, &j->f) == 0)
        j->select = j->f != NULL || http_has_param(r, "node-meta");
    int rc = 0;
    if (r->status == 0) {
        /* a state's checks through the store's index of them: the answer
         * costs what it lists, not every check */
        enum store_iter_kind ik = kind == R_HEALTH || kind == R_CATALOG ? STORE_ITER_NAME
                                  : kind == R_AGENT_SERVICES            ? STORE_ITER_INSTANCES
                                  : kind == R_STATE && j->state != NULL ? STORE_ITER_STATE
                                                                        : STORE_ITER_CHECKS;
        if ((j->out = evbuffer_new()) == NULL ||
            (j->later = evtimer_new(r->srv->opt.base, stream_later, j)) == NULL ||
            (j->park = evtimer_new(r->srv->opt.base, stream_park, j)) == NULL)
            rc = REG_ENOMEM;
        else
            rc = store_iter_begin(rd, ik, ik == STORE_ITER_STATE ? j->state : r->arg, &j->it);
        if (rc != 0)
            http_fail(r, 500, "Render failed: %s", reg_strerror(rc));
    }
    if (r->status != 0) {
        j->key = NULL; /* the caller's key is freed with the job */
        free(key);
        job_free(j);
        http_finish_read(r, NULL, index);
        return true;
    }
    bool object = kind == R_AGENT_SERVICES || kind == R_AGENT_CHECKS;
    add(j, object ? "{" : "[", 1);
    if (kind == R_STATE && (j->state == NULL || strcmp(j->state, "passing") == 0)) {
        json_t *serf = render_serf_check(r->srv, NULL);
        if (selected(j, serf)) {
            size_t len, kl;
            char *t = dump(serf, NULL, &len, &kl);
            if (t != NULL)
                emit(j, t, len);
            else
                j->rc = REG_ENOMEM;
            free(t);
        }
        json_decref(serf);
    }
    /* a forwarded read streams back to the follower as to any client: its
     * channel's idle timeout sees every chunk */
    bool done = run_slice(j, true);
    flush(j, done);
    if (done && j->rc == 0) {
        struct evbuffer *out = j->out;
        j->out = NULL;
        keep_answer(j);
        job_free(j);
        http_finish_read(r, out, index);
        return true;
    }
    if (j->rc != 0) {
        http_fail(r, 500, "Render failed: %s", reg_strerror(j->rc));
        job_free(j);
        http_finish_read(r, NULL, index);
        return true;
    }
    metrics_http_streamed();
    j->streaming = true;
    j->evcon = evhttp_request_get_connection(r->req);
    j->srv = r->srv;
    http_on_client_gone(j->srv, j->evcon, stream_closed, j);
    http_stream_start_at(r, "application/json", index);
    evhttp_send_reply_chunk_with_cb(r->req, j->out, stream_next, j);
    arm_park(j);
    return true;
}
