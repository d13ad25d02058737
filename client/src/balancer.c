/*
 * balancer.c — see registry/balancer.h.
 *
 * One mutex guards a balancer; a pick is a few comparisons under it. The
 * instance array is kept sorted by ID so that start/finish and updates find
 * an instance by binary search, and statistics follow IDs across updates.
 */
#define _GNU_SOURCE
#include "registry/balancer.h"
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bnode {
    char id[128];
    char address[256];
    int port;
    uint64_t weight;       /* >= 1 */
    bool status_ok;        /* passing or warning */
    uint64_t added_ms;     /* for slow start; 0: present from the start */
    uint32_t inflight;
    double ewma_us;        /* peak-EWMA latency */
    uint64_t ewma_stamp_ms;
    uint32_t fail_run;
    uint64_t ejected_until_ms;
    uint64_t picks;        /* REG_WEIGHTED: picks so far (deadline (picks+1)/weight) */
};

struct reg_balancer {
    struct reg_balancer_options opt;
    pthread_mutex_t lock;
    struct bnode *v; /* sorted by id */
    size_t n;
    uint32_t *seq;   /* REG_WEIGHTED: one cycle of nginx's smooth WRR, precomputed */
    size_t seq_len, seq_pos;
    uint32_t *heap;  /* REG_WEIGHTED, lists too long to precompute: EDF heap */
    size_t n_bad;    /* status not ok */
    size_t n_ejected;
    uint64_t next_expiry_ms; /* earliest ejected_until, 0 if none */
    uint64_t rr;
    uint64_t rng;
    uint64_t vt_num, vt_den; /* REG_WEIGHTED virtual time: last popped deadline */
    bool updated_once;
    reg__skip_fn skip; /* set for one filtered pick, under the lock */
    void *skip_arg;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rnd(struct reg_balancer *b)
{
    uint64_t x = b->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void reg_balancer_defaults(struct reg_balancer_options *opt, enum reg_strategy strategy)
{
    memset(opt, 0, sizeof(*opt));
    opt->strategy = strategy;
    opt->panic_threshold = 0.5;
    opt->eject_after = 5;
    opt->eject_ms = 30000;
    opt->max_ejected = 0.5;
    opt->decay_ms = 10000;
}

static const char *const strategy_names[] = {"round_robin", "weighted", "least_connections",
                                             "latency"};

int reg_strategy_parse(const char *name, enum reg_strategy *out)
{
    for (int i = 0; i < 4; i++) {
        if (name && strcmp(name, strategy_names[i]) == 0) {
            *out = (enum reg_strategy)i;
            return 0;
        }
    }
    return REG_EINVAL;
}

const char *reg_strategy_name(enum reg_strategy s)
{
    return (unsigned)s < 4 ? strategy_names[s] : "unknown";
}

int reg_balancer_new(const struct reg_balancer_options *opt, struct reg_balancer **out)
{
    struct reg_balancer_options d;
    if (opt == NULL) {
        reg_balancer_defaults(&d, REG_ROUND_ROBIN);
        opt = &d;
    }
    if ((unsigned)opt->strategy > REG_LATENCY || opt->panic_threshold < 0 ||
        opt->panic_threshold > 1 || opt->max_ejected < 0 || opt->max_ejected > 1 || out == NULL)
        return REG_EINVAL;
    struct reg_balancer *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return REG_ENOMEM;
    b->opt = *opt;
    if (b->opt.decay_ms == 0)
        b->opt.decay_ms = 10000;
    b->rng = opt->seed ? opt->seed : ((uint64_t)time(NULL) << 20) ^ (uint64_t)(uintptr_t)b;
    if (b->rng == 0)
        b->rng = 1;
    b->vt_den = 1;
    /* adaptive: spin briefly before sleeping, as the critical sections are a
     * few dozen nanoseconds */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&b->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    *out = b;
    return 0;
}

void reg_balancer_free(struct reg_balancer *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->v);
    free(b->heap);
    free(b->seq);
    free(b);
}

/* nginx's smooth weighted round-robin, run for one whole cycle (sum of the
 * weights picks), so that a pick is one array read. NULL when the cycle is
 * too long to precompute (then the EDF heap, which has the same exactness
 * per cycle, serves instead). */
static uint32_t *smooth_wrr_cycle(const struct bnode *v, size_t n, size_t *len)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].weight;
    if (n == 0 || total > (1u << 20) || (double)total * (double)n > 5e7)
        return NULL;
    uint32_t *seq = malloc(total * sizeof(*seq));
    int64_t *cur = calloc(n, sizeof(*cur));
    if (seq == NULL || cur == NULL) {
        free(seq);
        free(cur);
        return NULL;
    }
    for (uint64_t t = 0; t < total; t++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            cur[i] += (int64_t)v[i].weight;
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int64_t)total;
        seq[t] = (uint32_t)best;
    }
    free(cur);
    *len = total;
    return seq;
}

/* ---- the weighted heap (earliest deadline first) ------------------------ */

/* Does a's next deadline come before b's? (picks+1)/weight, exact. */
static bool earlier(const struct reg_balancer *b, uint32_t x, uint32_t y)
{
    const struct bnode *a = &b->v[x], *c = &b->v[y];
    unsigned __int128 l = (unsigned __int128)(a->picks + 1) * c->weight;
    unsigned __int128 r = (unsigned __int128)(c->picks + 1) * a->weight;
    return l < r || (l == r && x < y);
}

static void heap_down(struct reg_balancer *b, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < b->n && earlier(b, b->heap[l], b->heap[m]))
            m = l;
        if (r < b->n && earlier(b, b->heap[r], b->heap[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = b->heap[i];
        b->heap[i] = b->heap[m];
        b->heap[m] = t;
        i = m;
    }
}

static void heap_build(struct reg_balancer *b)
{
    for (size_t i = 0; i < b->n; i++)
        b->heap[i] = (uint32_t)i;
    for (size_t i = b->n / 2; i-- > 0;)
        heap_down(b, i);
}

/* ---- eligibility -------------------------------------------------------- */

static void expire_ejections(struct reg_balancer *b, uint64_t now)
{
    if (b->next_expiry_ms == 0 || now < b->next_expiry_ms)
        return;
    b->n_ejected = 0;
    b->next_expiry_ms = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct bnode *x = &b->v[i];
        if (x->ejected_until_ms > now) {
            b->n_ejected++;
            if (b->next_expiry_ms == 0 || x->ejected_until_ms < b->next_expiry_ms)
                b->next_expiry_ms = x->ejected_until_ms;
        } else {
            x->ejected_until_ms = 0;
        }
    }
}

static bool in_panic(const struct reg_balancer *b)
{
    size_t healthy = b->n - b->n_bad - b->n_ejected;
    return (double)healthy < b->opt.panic_threshold * (double)b->n;
}

/* May x take this pick? Health (unless in panic), then slow start: a new
 * instance is let through with probability growing from 10% to 100%. */
static bool eligible(struct reg_balancer *b, const struct bnode *x, bool panic, uint64_t now)
{
    if (b->skip && b->skip(b->skip_arg, x->id))
        return false;
    if (!panic && (!x->status_ok || x->ejected_until_ms > now))
        return false;
    if (b->opt.slow_start_ms && x->added_ms && now - x->added_ms < b->opt.slow_start_ms) {
        double f = 0.1 + 0.9 * (double)(now - x->added_ms) / b->opt.slow_start_ms;
        return (double)(rnd(b) >> 11) / 9007199254740992.0 < f;
    }
    return true;
}

/* ---- strategies --------------------------------------------------------- */

static double latency_cost(const struct reg_balancer *b, const struct bnode *x, uint64_t now)
{
    double ewma = x->ewma_us;
    if (ewma > 0 && now > x->ewma_stamp_ms) /* idle decay toward zero */
        ewma *= exp(-(double)(now - x->ewma_stamp_ms) / b->opt.decay_ms);
    if (ewma <= 0)
        return (double)x->inflight; /* nothing measured: count in-flight requests */
    return ewma * (x->inflight + 1);
}

static double load_of(const struct reg_balancer *b, const struct bnode *x, uint64_t now)
{
    return b->opt.strategy == REG_LATENCY ? latency_cost(b, x, now) : (double)x->inflight;
}

/* A random eligible index, or -1 after a few misses. */
static long random_eligible(struct reg_balancer *b, bool panic, uint64_t now)
{
    for (int tries = 0; tries < 16; tries++) {
        size_t i = rnd(b) % b->n;
        if (eligible(b, &b->v[i], panic, now))
            return (long)i;
    }
    return -1;
}

static long pick_least(struct reg_balancer *b, bool panic, uint64_t now)
{
    long best = -1;
    double best_load = 0;
    if (b->n <= 8) { /* exact: scan, ties at random (reservoir) */
        unsigned ties = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (!eligible(b, &b->v[i], panic, now))
                continue;
            double l = load_of(b, &b->v[i], now);
            if (best < 0 || l < best_load) {
                best = (long)i;
                best_load = l;
                ties = 1;
            } else if (l == best_load && rnd(b) % ++ties == 0) {
                best = (long)i;
            }
        }
        return best;
    }
    long x = random_eligible(b, panic, now), y = random_eligible(b, panic, now);
    if (x >= 0 && y == x && b->n > 1) /* two distinct choices when possible */
        y = random_eligible(b, panic, now);
    if (x < 0 || y < 0)
        return x >= 0 ? x : y;
    double lx = load_of(b, &b->v[x], now), ly = load_of(b, &b->v[y], now);
    if (lx == ly)
        return rnd(b) & 1 ? x : y;
    return lx < ly ? x : y;
}

static long pick_round_robin(struct reg_balancer *b, bool panic, uint64_t now)
{
    for (size_t k = 0; k < b->n; k++) {
        size_t i = (size_t)(b->rr++ % b->n);
        if (eligible(b, &b->v[i], panic, now))
            return (long)i;
    }
    return -1;
}

static long pick_weighted(struct reg_balancer *b, bool panic, uint64_t now)
{
    if (b->seq) {
        for (size_t k = 0; k < b->n; k++) {
            uint32_t i = b->seq[b->seq_pos];
            b->seq_pos = b->seq_pos + 1 == b->seq_len ? 0 : b->seq_pos + 1;
            if (eligible(b, &b->v[i], panic, now))
                return (long)i;
        }
        return -1;
    }
    for (size_t k = 0; k < b->n; k++) {
        uint32_t i = b->heap[0];
        struct bnode *x = &b->v[i];
        b->vt_num = x->picks + 1; /* virtual time advances to this deadline */
        b->vt_den = x->weight;
        x->picks++;
        heap_down(b, 0);
        if (eligible(b, x, panic, now))
            return (long)i;
    }
    return -1;
}

static int pick(struct reg_balancer *b, struct reg_endpoint *out, reg__skip_fn skip, void *arg)
{
    if (b == NULL || out == NULL)
        return REG_EINVAL;
    uint64_t now = now_ms();
    pthread_mutex_lock(&b->lock);
    if (b->n == 0) {
        pthread_mutex_unlock(&b->lock);
        return REG_ENOTFOUND;
    }
    b->skip = skip;
    b->skip_arg = arg;
    expire_ejections(b, now);
    bool panic = in_panic(b);
    long i;
    switch (b->opt.strategy) {
    case REG_WEIGHTED:
        i = pick_weighted(b, panic, now);
        break;
    case REG_LEAST_CONN:
    case REG_LATENCY:
        i = pick_least(b, panic, now);
        break;
    default:
        i = pick_round_robin(b, panic, now);
        break;
    }
    if (i < 0 && skip == NULL) { /* nothing eligible right now (slow start dice, ejections): any */
        i = (long)(rnd(b) % b->n);
    } else if (i < 0) { /* any the filter lets through, from a random start */
        size_t start = (size_t)(rnd(b) % b->n);
        for (size_t k = 0; k < b->n && i < 0; k++) {
            size_t j = (start + k) % b->n;
            if (!skip(arg, b->v[j].id))
                i = (long)j;
        }
    }
    b->skip = NULL;
    b->skip_arg = NULL;
    if (i < 0) {
        pthread_mutex_unlock(&b->lock);
        return REG_ENOTFOUND;
    }
    const struct bnode *x = &b->v[i];
    memcpy(out->id, x->id, sizeof(out->id));
    memcpy(out->address, x->address, sizeof(out->address));
    out->port = x->port;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

int reg_balancer_pick(struct reg_balancer *b, struct reg_endpoint *out)
{
    return pick(b, out, NULL, NULL);
}

int reg__balancer_pick_filtered(struct reg_balancer *b, struct reg_endpoint *out, reg__skip_fn skip,
                                void *arg)
{
    return pick(b, out, skip, arg);
}

/* ---- reports ------------------------------------------------------------ */

static int cmp_node(const void *a, const void *b)
{
    return strcmp(((const struct bnode *)a)->id, ((const struct bnode *)b)->id);
}

static struct bnode *find(struct reg_balancer *b, const char *id)
{
    struct bnode key;
    snprintf(key.id, sizeof(key.id), "%s", id);
    return b->n ? bsearch(&key, b->v, b->n, sizeof(*b->v), cmp_node) : NULL;
}

void reg_balancer_start(struct reg_balancer *b, const struct reg_endpoint *e)
{
    if (b == NULL || e == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    struct bnode *x = find(b, e->id);
    if (x)
        x->inflight++;
    pthread_mutex_unlock(&b->lock);
}

void reg_balancer_finish(struct reg_balancer *b, const struct reg_endpoint *e,
                         uint64_t latency_us, bool success)
{
    if (b == NULL || e == NULL)
        return;
    uint64_t now = now_ms();
    pthread_mutex_lock(&b->lock);
    struct bnode *x = find(b, e->id);
    if (x == NULL) {
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (x->inflight > 0)
        x->inflight--;
    double rtt = (double)latency_us;
    if (!success) /* a failure costs like a slow answer */
        rtt = fmax(rtt, fmax(2 * x->ewma_us, 1e6));
    double w = x->ewma_stamp_ms ? exp(-(double)(now - x->ewma_stamp_ms) / b->opt.decay_ms) : 0;
    double decayed = x->ewma_us * w;
    x->ewma_us = rtt > decayed ? rtt : decayed * w + rtt * (1 - w);
    x->ewma_stamp_ms = now;
    if (success) {
        x->fail_run = 0;
    } else if (b->opt.eject_after && ++x->fail_run >= b->opt.eject_after &&
               x->ejected_until_ms <= now &&
               (double)(b->n_ejected + 1) <= b->opt.max_ejected * (double)b->n) {
        x->fail_run = 0;
        x->ejected_until_ms = now + b->opt.eject_ms;
        b->n_ejected++;
        if (b->next_expiry_ms == 0 || x->ejected_until_ms < b->next_expiry_ms)
            b->next_expiry_ms = x->ejected_until_ms;
    }
    pthread_mutex_unlock(&b->lock);
}

void reg_balancer_counts(struct reg_balancer *b, size_t *total, size_t *ejected)
{
    pthread_mutex_lock(&b->lock);
    expire_ejections(b, now_ms());
    if (total)
        *total = b->n;
    if (ejected)
        *ejected = b->n_ejected;
    pthread_mutex_unlock(&b->lock);
}

/* ---- updates ------------------------------------------------------------ */

int reg_balancer_update(struct reg_balancer *b, const struct reg_instance *list, size_t n)
{
    if (b == NULL || (list == NULL && n > 0))
        return REG_EINVAL;
    struct bnode *v = calloc(n ? n : 1, sizeof(*v));
    uint32_t *heap = calloc(n ? n : 1, sizeof(*heap));
    if (v == NULL || heap == NULL) {
        free(v);
        free(heap);
        return REG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(v[i].id, sizeof(v[i].id), "%s", list[i].id ? list[i].id : "");
        snprintf(v[i].address, sizeof(v[i].address), "%s", list[i].address ? list[i].address : "");
        v[i].port = list[i].port;
        v[i].weight = list[i].weight > 0 ? (uint64_t)list[i].weight : 1;
        v[i].status_ok = list[i].status == NULL || strcmp(list[i].status, "critical") != 0;
    }
    qsort(v, n, sizeof(*v), cmp_node);
    uint64_t now = now_ms();
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        struct bnode *old = find(b, v[i].id);
        if (old) { /* statistics follow the instance */
            v[i].added_ms = old->added_ms;
            v[i].inflight = old->inflight;
            v[i].ewma_us = old->ewma_us;
            v[i].ewma_stamp_ms = old->ewma_stamp_ms;
            v[i].fail_run = old->fail_run;
            v[i].ejected_until_ms = old->ejected_until_ms;
            v[i].picks = old->picks;
            if (old->weight != v[i].weight) /* keep its place in virtual time */
                v[i].picks = (uint64_t)((unsigned __int128)b->vt_num * v[i].weight / b->vt_den);
        } else {
            v[i].added_ms = b->updated_once ? now : 0;
            v[i].picks = (uint64_t)((unsigned __int128)b->vt_num * v[i].weight / b->vt_den);
        }
    }
    free(b->v);
    free(b->heap);
    free(b->seq);
    b->v = v;
    b->heap = heap;
    b->n = n;
    b->seq = b->opt.strategy == REG_WEIGHTED ? smooth_wrr_cycle(v, n, &b->seq_len) : NULL;
    b->seq_pos = 0;
    b->n_bad = 0;
    for (size_t i = 0; i < n; i++)
        b->n_bad += !v[i].status_ok;
    b->next_expiry_ms = 1; /* recount ejections at the next pick */
    expire_ejections(b, now);
    heap_build(b);
    b->updated_once = true;
    pthread_mutex_unlock(&b->lock);
    return 0;
}
