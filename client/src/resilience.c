/*
 * resilience.c — see registry/resilience.h.
 *
 * A policy owns: the service breaker, one breaker per instance (an
 * open-addressing table keyed by a hash of the instance ID, entries created
 * at the first attempt; past 256 entries, idle closed ones are dropped when
 * the table would grow, so that instance churn cannot grow it without
 * bound), the retry budget
 * (ten time buckets of calls and retries) and the bulkhead count. One mutex
 * guards all of it; the balancer is locked inside it (policy, then
 * balancer: never the other way), so that a pick sees breaker states that
 * cannot change under it.
 *
 * A call holds only what is its own: its deadline, the hashes of the
 * instances it tried (to retry elsewhere), the running attempt. Time comes
 * from the policy's clock, so that tests drive every mechanism with a fake
 * one.
 */
#define _GNU_SOURCE
#include "registry/resilience.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 10
#define MAX_ATTEMPTS 16

struct window {
    uint64_t slot[BUCKETS]; /* which bucket-length period each bucket holds */
    uint32_t a[BUCKETS];    /* breaker: calls; budget: calls */
    uint32_t b[BUCKETS];    /* breaker: failures; budget: retries */
};

struct breaker {
    enum reg_breaker_state state;
    uint64_t opened_at_us;
    unsigned consecutive;
    unsigned running; /* attempts out now (an entry with any is kept) */
    unsigned trials_started, trials_ok;
    struct window w;
    uint64_t opened, half_opened, closed, attempts, failures;
};

struct inode {     /* one instance's breaker in the table */
    uint64_t hash; /* 0: empty slot */
    char *id;
    struct breaker br;
};

struct reg_policy {
    struct reg_policy_options opt;
    struct reg_balancer *bal;
    pthread_mutex_t lock;
    pthread_cond_t room; /* the bulkhead has room */
    struct breaker service;
    struct inode *tab;
    size_t tab_cap, tab_n;
    struct window budget;
    unsigned in_flight;
    double limit; /* bulkhead limit now (adaptive) */
    uint64_t rng;
    struct reg_policy_stats st;
};

struct reg_call {
    struct reg_policy *p;
    uint64_t start_us, deadline_us;
    uint64_t tried[MAX_ATTEMPTS];
    unsigned attempts;
    bool running;       /* an attempt is out */
    bool over;          /* no more attempts */
    bool service_trial; /* admitted as a half-open trial of the service breaker */
    int result;
    bool attempt_trial; /* the running attempt is a half-open trial of its instance */
    struct reg_endpoint ep;
    uint64_t attempt_start_us;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t mono_us(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_us(const struct reg_policy *p)
{
    return p->opt.clock_us(p->opt.clock_arg);
}

static uint64_t rnd(struct reg_policy *p)
{
    uint64_t x = p->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

const char *reg_breaker_state_name(enum reg_breaker_state s)
{
    static const char *const names[] = {"closed", "open", "half_open"};
    return (unsigned)s < 3 ? names[s] : "unknown";
}

/* ---- sliding windows ---------------------------------------------------- */

/* The bucket for `now`, emptied if it last held an older period. */
static unsigned window_bucket(struct window *w, uint64_t now, unsigned window_ms)
{
    uint64_t len = (uint64_t)window_ms * 1000 / BUCKETS;
    if (len == 0)
        len = 1;
    uint64_t slot = now / len + 1; /* +1: slot 0 means "never used" */
    unsigned i = (unsigned)(slot % BUCKETS);
    if (w->slot[i] != slot) {
        w->slot[i] = slot;
        w->a[i] = 0;
        w->b[i] = 0;
    }
    return i;
}

static void window_sum(struct window *w, uint64_t now, unsigned window_ms, uint64_t *a, uint64_t *b)
{
    uint64_t len = (uint64_t)window_ms * 1000 / BUCKETS;
    if (len == 0)
        len = 1;
    uint64_t slot = now / len + 1;
    *a = *b = 0;
    for (unsigned i = 0; i < BUCKETS; i++) {
        if (w->slot[i] != 0 && w->slot[i] + BUCKETS > slot) {
            *a += w->a[i];
            *b += w->b[i];
        }
    }
}

/* ---- breakers ----------------------------------------------------------- */

static void transition(struct reg_policy *p, struct breaker *br, const char *id,
                       enum reg_breaker_state to, uint64_t now)
{
    enum reg_breaker_state from = br->state;
    br->state = to;
    br->consecutive = 0;
    br->trials_started = br->trials_ok = 0;
    if (to == REG_BREAKER_OPEN) {
        br->opened_at_us = now;
        br->opened++;
        id ? p->st.instance_opened++ : p->st.service_opened++;
    } else if (to == REG_BREAKER_HALF_OPEN) {
        br->half_opened++;
        id ? p->st.instance_half_opened++ : p->st.service_half_opened++;
    } else {
        memset(&br->w, 0, sizeof(br->w)); /* a fresh start */
        br->closed++;
        id ? p->st.instance_closed++ : p->st.service_closed++;
    }
    if (p->opt.on_state)
        p->opt.on_state(p->opt.state_arg, id, from, to);
}

/* Open long enough? Then half-open. */
static void breaker_tick(struct reg_policy *p, struct breaker *br, const char *id,
                         const struct reg_breaker_options *o, uint64_t now)
{
    if (br->state == REG_BREAKER_OPEN && now - br->opened_at_us >= (uint64_t)o->open_ms * 1000)
        transition(p, br, id, REG_BREAKER_HALF_OPEN, now);
}

/* May a call (or attempt) go through now? Does not take a trial slot. */
static bool breaker_allows(struct reg_policy *p, struct breaker *br, const char *id,
                           const struct reg_breaker_options *o, uint64_t now)
{
    if (!o->enabled)
        return true;
    breaker_tick(p, br, id, o, now);
    if (br->state == REG_BREAKER_CLOSED)
        return true;
    /* half-open: one trial at a time (each started trial has succeeded), so
     * that a black hole stalls one call per recovery period, not several */
    return br->state == REG_BREAKER_HALF_OPEN && br->trials_started < o->half_open_calls &&
           br->trials_started == br->trials_ok;
}

static void breaker_record(struct reg_policy *p, struct breaker *br, const char *id,
                           const struct reg_breaker_options *o, bool failed, bool trial,
                           uint64_t latency_us, uint64_t now)
{
    br->attempts++;
    if (o->slow_call_ms && latency_us >= (uint64_t)o->slow_call_ms * 1000)
        failed = true;
    br->failures += failed;
    if (!o->enabled)
        return;
    if (br->state == REG_BREAKER_HALF_OPEN) {
        if (!trial) /* admitted before the breaker opened: its verdict is old news */
            return;
        if (failed)
            transition(p, br, id, REG_BREAKER_OPEN, now);
        else if (++br->trials_ok >= o->half_open_calls)
            transition(p, br, id, REG_BREAKER_CLOSED, now);
        return;
    }
    if (br->state != REG_BREAKER_CLOSED)
        return;
    unsigned i = window_bucket(&br->w, now, o->window_ms);
    br->w.a[i]++;
    br->w.b[i] += failed;
    br->consecutive = failed ? br->consecutive + 1 : 0;
    if (o->consecutive_failures && br->consecutive >= o->consecutive_failures) {
        transition(p, br, id, REG_BREAKER_OPEN, now);
        return;
    }
    if (failed && o->failure_rate > 0) {
        uint64_t calls, failures;
        window_sum(&br->w, now, o->window_ms, &calls, &failures);
        if (calls >= o->min_calls && calls > 0 &&
            (double)failures >= o->failure_rate * (double)calls)
            transition(p, br, id, REG_BREAKER_OPEN, now);
    }
}

/* ---- the instance table ------------------------------------------------- */

static struct inode *inode_find(struct reg_policy *p, uint64_t h, const char *id)
{
    if (p->tab_cap == 0)
        return NULL;
    for (size_t i = h & (p->tab_cap - 1);; i = (i + 1) & (p->tab_cap - 1)) {
        struct inode *x = &p->tab[i];
        if (x->hash == 0)
            return NULL;
        if (x->hash == h && strcmp(x->id, id) == 0)
            return x;
    }
}

/* A closed breaker with nothing in its window remembers nothing that
 * matters: its entry may go (instances come and go over a process's life). */
static bool inode_idle(struct reg_policy *p, struct inode *x, uint64_t now)
{
    if (x->br.state != REG_BREAKER_CLOSED || x->br.consecutive || x->br.running)
        return false;
    uint64_t calls, failures;
    window_sum(&x->br.w, now, p->opt.instance_breaker.window_ms, &calls, &failures);
    return calls == 0;
}

static struct inode *inode_get(struct reg_policy *p, uint64_t h, const char *id, uint64_t now)
{
    struct inode *x = inode_find(p, h, id);
    if (x)
        return x;
    if (2 * (p->tab_n + 1) > p->tab_cap) { /* keep the load under one half */
        size_t live = 0;
        for (size_t k = 0; k < p->tab_cap; k++) /* past 256 entries, drop the idle */
            if (p->tab[k].hash && (p->tab_n < 256 || !inode_idle(p, &p->tab[k], now)))
                live++;
        size_t cap = 16;
        while (2 * (live + 1) > cap)
            cap *= 2;
        if (cap <= p->tab_cap && live == p->tab_n)
            cap = 2 * p->tab_cap;
        struct inode *t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return NULL;
        for (size_t k = 0; k < p->tab_cap; k++) {
            if (p->tab[k].hash == 0)
                continue;
            if (p->tab_n >= 256 && inode_idle(p, &p->tab[k], now)) {
                free(p->tab[k].id);
                continue;
            }
            size_t i = p->tab[k].hash & (cap - 1);
            while (t[i].hash)
                i = (i + 1) & (cap - 1);
            t[i] = p->tab[k];
        }
        free(p->tab);
        p->tab = t;
        p->tab_cap = cap;
        p->tab_n = live;
    }
    char *copy = strdup(id);
    if (copy == NULL)
        return NULL;
    size_t i = h & (p->tab_cap - 1);
    while (p->tab[i].hash)
        i = (i + 1) & (p->tab_cap - 1);
    x = &p->tab[i];
    x->hash = h;
    x->id = copy;
    p->tab_n++;
    return x;
}

/* ---- policy ------------------------------------------------------------- */

static void breaker_defaults(struct reg_breaker_options *o)
{
    o->enabled = true;
    o->failure_rate = 0.5;
    o->window_ms = 10000;
    o->min_calls = 20;
    o->consecutive_failures = 5;
    o->open_ms = 5000;
    o->half_open_calls = 3;
    o->slow_call_ms = 0;
}

void reg_policy_defaults(struct reg_policy_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->max_attempts = 3;
    opt->attempt_timeout_ms = 1000;
    opt->deadline_ms = 5000;
    opt->backoff_base_ms = 10;
    opt->backoff_cap_ms = 1000;
    opt->budget_ratio = 0.2;
    opt->budget_min_per_s = 10;
    opt->budget_window_ms = 10000;
    breaker_defaults(&opt->instance_breaker);
    opt->instance_breaker.min_calls = 10;
    breaker_defaults(&opt->service_breaker);
    opt->service_breaker.consecutive_failures = 0;
}

static bool breaker_options_ok(const struct reg_breaker_options *o)
{
    return !o->enabled || (o->failure_rate >= 0 && o->failure_rate <= 1 && o->window_ms > 0 &&
                           o->half_open_calls > 0);
}

int reg_policy_new(const struct reg_policy_options *opt, struct reg_balancer *b,
                   struct reg_policy **out)
{
    struct reg_policy_options d;
    if (opt == NULL) {
        reg_policy_defaults(&d);
        opt = &d;
    }
    if (b == NULL || out == NULL || opt->max_attempts == 0 || opt->max_attempts > MAX_ATTEMPTS ||
        opt->budget_ratio < 0 || opt->budget_window_ms == 0 ||
        !breaker_options_ok(&opt->instance_breaker) || !breaker_options_ok(&opt->service_breaker) ||
        (opt->adaptive_concurrency && opt->max_concurrent == 0))
        return REG_EINVAL;
    struct reg_policy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return REG_ENOMEM;
    p->opt = *opt;
    if (p->opt.clock_us == NULL)
        p->opt.clock_us = mono_us;
    p->bal = b;
    p->rng = opt->seed ? opt->seed : mono_us(NULL) ^ (uint64_t)(uintptr_t)p;
    if (p->rng == 0)
        p->rng = 1;
    p->limit = opt->adaptive_concurrency ? (opt->max_concurrent + 1) / 2 : opt->max_concurrent;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return REG_ENOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&p->room, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return REG_ENOMEM;
    }
    *out = p;
    return 0;
}

void reg_policy_free(struct reg_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->tab_cap; i++)
        free(p->tab[i].id);
    free(p->tab);
    pthread_cond_destroy(&p->room);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* ---- the bulkhead ------------------------------------------------------- */

static bool bulkhead_full(const struct reg_policy *p)
{
    return p->opt.max_concurrent && p->in_flight >= (unsigned)p->limit;
}

/* Wait for room up to max_wait_ms of real time (the fake clock cannot wake a
 * condition variable). Called with the lock held. */
static bool bulkhead_wait(struct reg_policy *p)
{
    if (!bulkhead_full(p))
        return true;
    if (p->opt.max_wait_ms == 0)
        return false;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += p->opt.max_wait_ms / 1000;
    until.tv_nsec += (long)(p->opt.max_wait_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (bulkhead_full(p))
        if (pthread_cond_timedwait(&p->room, &p->lock, &until) == ETIMEDOUT)
            return !bulkhead_full(p);
    return true;
}

/* AIMD: +1 per `limit` good calls, x0.9 on a bad one. */
static void bulkhead_adapt(struct reg_policy *p, bool good)
{
    if (!p->opt.adaptive_concurrency)
        return;
    double max = p->opt.max_concurrent;
    p->limit = good ? p->limit + 1.0 / p->limit : p->limit * 0.9;
    if (p->limit < 1)
        p->limit = 1;
    if (p->limit > max)
        p->limit = max;
}

/* ---- calls -------------------------------------------------------------- */

int reg_call_begin(struct reg_policy *p, struct reg_call **out)
{
    if (p == NULL || out == NULL)
        return REG_EINVAL;
    struct reg_call *c = malloc(sizeof(*c));
    if (c == NULL)
        return REG_ENOMEM;
    pthread_mutex_lock(&p->lock);
    uint64_t now = now_us(p);
    const struct reg_breaker_options *so = &p->opt.service_breaker;
    if (!breaker_allows(p, &p->service, NULL, so, now)) {
        p->st.breaker_rejected++;
        pthread_mutex_unlock(&p->lock);
        free(c);
        return REG_EOPEN;
    }
    if (!bulkhead_wait(p)) {
        p->st.bulkhead_rejected++;
        pthread_mutex_unlock(&p->lock);
        free(c);
        return REG_EBULKHEAD;
    }
    now = now_us(p); /* the wait may have taken a while: ask the breaker again */
    if (!breaker_allows(p, &p->service, NULL, so, now)) {
        p->st.breaker_rejected++;
        pthread_mutex_unlock(&p->lock);
        free(c);
        return REG_EOPEN;
    }
    c->service_trial = so->enabled && p->service.state == REG_BREAKER_HALF_OPEN;
    if (c->service_trial)
        p->service.trials_started++;
    p->in_flight++;
    p->st.calls++;
    unsigned i = window_bucket(&p->budget, now, p->opt.budget_window_ms);
    p->budget.a[i]++; /* a deposit: this call may earn the service a retry */
    pthread_mutex_unlock(&p->lock);
    c->p = p;
    c->start_us = now;
    c->deadline_us = now + (uint64_t)p->opt.deadline_ms * 1000;
    c->attempts = 0;
    c->running = false;
    c->over = false;
    c->result = REG_EFAILED;
    *out = c;
    return 0;
}

struct skip_ctx {
    struct reg_policy *p;
    const struct reg_call *c; /* NULL: do not skip what the call tried */
    uint64_t now;
};

/* Balancer filter: skip open instances and, first, those this call tried.
 * Runs under both locks. */
static bool skip_instance(void *arg, const char *id)
{
    struct skip_ctx *k = arg;
    uint64_t h = hash_id(id);
    if (k->c) {
        for (unsigned i = 0; i < k->c->attempts; i++)
            if (k->c->tried[i] == h)
                return true;
    }
    struct inode *x = inode_find(k->p, h, id);
    return x && !breaker_allows(k->p, &x->br, x->id, &k->p->opt.instance_breaker, k->now);
}

static bool trial_attempt(const struct reg_policy *p, const struct inode *x)
{
    return p->opt.instance_breaker.enabled && x->br.state == REG_BREAKER_HALF_OPEN;
}

int reg_call_attempt(struct reg_call *c, struct reg_endpoint *e, uint64_t *timeout_ms)
{
    if (c == NULL || e == NULL || timeout_ms == NULL || c->running || c->over)
        return REG_EINVAL;
    struct reg_policy *p = c->p;
    pthread_mutex_lock(&p->lock);
    uint64_t now = now_us(p);
    if (now >= c->deadline_us) {
        c->over = true;
        c->result = REG_EDEADLINE;
        pthread_mutex_unlock(&p->lock);
        return REG_EDEADLINE;
    }
    struct skip_ctx k = {p, c, now};
    int rc = reg__balancer_pick_filtered(p->bal, e, skip_instance, &k);
    if (rc == REG_ENOTFOUND && c->attempts > 0) { /* every instance tried: repeat one */
        k.c = NULL;
        rc = reg__balancer_pick_filtered(p->bal, e, skip_instance, &k);
    }
    if (rc != 0) {
        size_t total = 0;
        reg_balancer_counts(p->bal, &total, NULL);
        rc = total ? REG_EOPEN : REG_ENOTFOUND;
        c->over = true;
        c->result = rc;
        pthread_mutex_unlock(&p->lock);
        return rc;
    }
    uint64_t h = hash_id(e->id);
    struct inode *x = inode_get(p, h, e->id, now);
    if (x)
        x->br.running++;
    c->attempt_trial = x && trial_attempt(p, x);
    if (c->attempt_trial)
        x->br.trials_started++;
    c->tried[c->attempts++] = h;
    p->st.attempts++;
    if (c->attempts > 1)
        p->st.retries++;
    pthread_mutex_unlock(&p->lock);
    reg_balancer_start(p->bal, e);
    c->ep = *e;
    c->running = true;
    c->attempt_start_us = now;
    uint64_t left = (c->deadline_us - now + 999) / 1000;
    uint64_t t = p->opt.attempt_timeout_ms ? p->opt.attempt_timeout_ms : left;
    *timeout_ms = t < left ? t : left;
    if (*timeout_ms == 0)
        *timeout_ms = 1;
    return 0;
}

/* Would a retry be within the budget? Takes it if so. Lock held. */
static bool budget_withdraw(struct reg_policy *p, uint64_t now)
{
    uint64_t calls, retries;
    window_sum(&p->budget, now, p->opt.budget_window_ms, &calls, &retries);
    double allowed = p->opt.budget_ratio * (double)calls +
                     (double)p->opt.budget_min_per_s * p->opt.budget_window_ms / 1000.0;
    if ((double)retries + 1 > allowed)
        return false;
    p->budget.b[window_bucket(&p->budget, now, p->opt.budget_window_ms)]++;
    return true;
}

int reg_call_report(struct reg_call *c, enum reg_outcome o, uint64_t latency_us, bool *retry,
                    uint64_t *backoff_ms)
{
    if (c == NULL || retry == NULL || !c->running)
        return REG_EINVAL;
    struct reg_policy *p = c->p;
    bool ok = o == REG_OUTCOME_SUCCESS;
    reg_balancer_finish(p->bal, &c->ep, latency_us, ok);
    c->running = false;
    *retry = false;
    if (backoff_ms)
        *backoff_ms = 0;
    pthread_mutex_lock(&p->lock);
    uint64_t now = now_us(p);
    struct inode *x = inode_find(p, c->tried[c->attempts - 1], c->ep.id);
    if (x) {
        if (x->br.running)
            x->br.running--;
        breaker_record(p, &x->br, x->id, &p->opt.instance_breaker, !ok, c->attempt_trial,
                       latency_us, now);
    }
    if (ok) {
        c->over = true;
        c->result = 0;
    } else if (o == REG_OUTCOME_FAILURE || c->attempts >= p->opt.max_attempts) {
        c->over = true;
        c->result = now >= c->deadline_us ? REG_EDEADLINE : REG_EFAILED;
    } else {
        /* full jitter: uniform in [0, min(cap, base * 2^(retry-1))] */
        uint64_t ceil = (uint64_t)p->opt.backoff_base_ms << (c->attempts - 1);
        if (ceil > p->opt.backoff_cap_ms)
            ceil = p->opt.backoff_cap_ms;
        uint64_t wait = ceil ? rnd(p) % (ceil + 1) : 0;
        c->over = true;
        if (now + wait * 1000 >= c->deadline_us) {
            c->result = REG_EDEADLINE;
        } else if (!budget_withdraw(p, now)) {
            p->st.budget_exhausted++;
            c->result = REG_EBUDGET;
        } else {
            c->over = false;
            *retry = true;
            if (backoff_ms)
                *backoff_ms = wait;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return 0;
}

uint64_t reg_call_remaining_ms(const struct reg_call *c)
{
    uint64_t now = now_us(c->p);
    return now >= c->deadline_us ? 0 : (c->deadline_us - now) / 1000;
}

unsigned reg_call_attempts(const struct reg_call *c)
{
    return c->attempts;
}

int reg_call_end(struct reg_call *c)
{
    if (c == NULL)
        return REG_EINVAL;
    struct reg_policy *p = c->p;
    if (c->running) { /* abandoned mid-attempt: a failure, no retry */
        bool retry;
        reg_call_report(c, REG_OUTCOME_FAILURE,
                        p->opt.clock_us(p->opt.clock_arg) - c->attempt_start_us, &retry, NULL);
    }
    int result = c->over ? c->result : REG_EFAILED;
    pthread_mutex_lock(&p->lock);
    uint64_t now = now_us(p);
    uint64_t latency = now - c->start_us;
    if (result == 0)
        p->st.succeeded++;
    else
        p->st.failed++;
    if (result == REG_EDEADLINE)
        p->st.deadline_exceeded++;
    const struct reg_breaker_options *so = &p->opt.service_breaker;
    /* the service breaker judges calls; every instance's breaker open is a
     * failure of the service, an empty instance list is not (nothing to protect) */
    if (c->attempts > 0 || result == 0 || result == REG_EOPEN)
        breaker_record(p, &p->service, NULL, so, result != 0, c->service_trial, latency, now);
    else if (c->service_trial && p->service.trials_started > 0)
        p->service.trials_started--; /* give the trial back */
    bool slow = so->slow_call_ms && latency >= (uint64_t)so->slow_call_ms * 1000;
    bulkhead_adapt(p, result == 0 && !slow);
    p->in_flight--;
    pthread_cond_broadcast(&p->room); /* the adaptive limit may have grown by more than one */
    pthread_mutex_unlock(&p->lock);
    free(c);
    return result;
}

/* ---- blocking ----------------------------------------------------------- */

int reg_call(struct reg_policy *p, reg_attempt_fn fn, void *arg, unsigned *attempts)
{
    if (p == NULL || fn == NULL)
        return REG_EINVAL;
    struct reg_call *c;
    int rc = reg_call_begin(p, &c);
    if (rc != 0) {
        if (attempts)
            *attempts = 0;
        return rc;
    }
    for (;;) {
        struct reg_endpoint e;
        uint64_t timeout, backoff;
        bool retry;
        if (reg_call_attempt(c, &e, &timeout) != 0)
            break;
        uint64_t t0 = now_us(p);
        enum reg_outcome o = fn(arg, &e, timeout, reg_call_remaining_ms(c));
        reg_call_report(c, o, now_us(p) - t0, &retry, &backoff);
        if (!retry)
            break;
        struct timespec ts = {(time_t)(backoff / 1000), (long)(backoff % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (attempts)
        *attempts = c->attempts;
    return reg_call_end(c);
}

/* ---- stats -------------------------------------------------------------- */

int reg_policy_stats(struct reg_policy *p, struct reg_policy_stats *out)
{
    if (p == NULL || out == NULL)
        return REG_EINVAL;
    pthread_mutex_lock(&p->lock);
    breaker_tick(p, &p->service, NULL, &p->opt.service_breaker, now_us(p));
    *out = p->st;
    out->service_state = p->service.state;
    out->in_flight = p->in_flight;
    out->concurrency_limit = (unsigned)p->limit;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int reg_policy_instance_stats(struct reg_policy *p, const char *id, struct reg_breaker_stats *out)
{
    if (p == NULL || id == NULL || out == NULL)
        return REG_EINVAL;
    pthread_mutex_lock(&p->lock);
    struct inode *x = inode_find(p, hash_id(id), id);
    if (x == NULL) {
        pthread_mutex_unlock(&p->lock);
        return REG_ENOTFOUND;
    }
    breaker_tick(p, &x->br, x->id, &p->opt.instance_breaker, now_us(p));
    out->state = x->br.state;
    out->opened = x->br.opened;
    out->half_opened = x->br.half_opened;
    out->closed = x->br.closed;
    out->attempts = x->br.attempts;
    out->failures = x->br.failures;
    pthread_mutex_unlock(&p->lock);
    return 0;
}
