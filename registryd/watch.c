/*
 * watch.c — see watch.h. Waiters hang in per-key lists in a fixed-size
 * chained hash table; the names-list and catalog-wide lists are separate. Firing unlinks the
 * waiter before its callback runs, so a callback may park a new waiter.
 *
 * Wait expiry: waiters due in the same WATCH_TICK_MS share one timer (a
 * "slot", found by its tick in a second hash table), so a waiter costs no
 * entry in libevent's timer heap. A change that wakes 10,000 waiters
 * empties a few hundred slots instead of taking 10,000 entries out of a
 * heap of 10,000 (a walk down it each, the cache misses of which were a
 * twentieth of such a fan-out's CPU). A wait ends up to WATCH_TICK_MS
 * late, well inside the wait/16 of jitter Consul allows it.
 */
#include "hash.h"
#include "watch.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "mailbox.h"
#include "registry/error.h"
#include "store.h"

#define WATCH_BUCKETS 4096
#define WATCH_SLOTS 4096  /* hash chains of the timer slots */
#define WATCH_TICK_MS 10  /* the slots' width */

/* The waiters due in one tick, and the one timer for them. */
struct watch_slot {
    struct watch *w;
    uint64_t tick;                /* due at tick * WATCH_TICK_MS (CLOCK_MONOTONIC ms) */
    struct event *timer;
    struct watch_waiter *waiters; /* via tprev/tnext */
    struct watch_slot *next;      /* in its hash chain */
    bool firing;                  /* slot_due runs: it frees the slot */
};

struct watch_waiter {
    struct watch *w;
    struct watch_waiter *prev, *next;   /* in its list */
    struct watch_waiter **head;         /* the list it hangs in */
    struct watch_slot *slot;            /* when it times out */
    struct watch_waiter *tprev, *tnext; /* in slot->waiters */
    watch_fire_cb cb;
    void *arg;
    char *key; /* WATCH_ON_NAME's name, else NULL */
};

struct watch {
    struct event_base *base;
    struct watch_waiter *buckets[WATCH_BUCKETS];
    struct watch_waiter *names; /* WATCH_ON_NAMES */
    struct watch_waiter *global; /* WATCH_ON_ALL */
    struct watch_slot *slots[WATCH_SLOTS];
    size_t parked;
    bool closed; /* watch_close: nothing parks any more */
};

/* Waiters parked in every watch of the process (the HTTP workers' own). */
static size_t parked_total;

static void count_parked(struct watch *w, long delta)
{
    w->parked += (size_t)delta;
    __atomic_add_fetch(&parked_total, (size_t)delta, __ATOMIC_RELAXED);
}

static unsigned hash_key(const char *s)
{
    return (unsigned)(hash_table_str(s) % WATCH_BUCKETS);
}

int watch_new(struct event_base *base, struct watch **out)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return REG_ENOMEM;
    w->base = base;
    *out = w;
    return 0;
}

static void unlink_waiter(struct watch_waiter *wt)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        *wt->head = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    count_parked(wt->w, -1);
}

/* ---- timer slots ---- */

static void slot_unhash(struct watch_slot *sl)
{
    struct watch_slot **pp = &sl->w->slots[sl->tick % WATCH_SLOTS];
    while (*pp != sl)
        pp = &(*pp)->next;
    *pp = sl->next;
}

static void slot_free(struct watch_slot *sl)
{
    event_free(sl->timer);
    free(sl);
}

static void fire(struct watch_waiter *wt, enum watch_why why);

/* A slot's tick has come: its waiters time out. It leaves the table
 * first, so that what their callbacks park goes to a new slot. */
static void slot_due(evutil_socket_t fd, short what, void *arg)
{
    struct watch_slot *sl = arg;
    (void)fd;
    (void)what;
    slot_unhash(sl);
    sl->firing = true;
    while (sl->waiters) /* fire() takes each out (a callback may cancel others) */
        fire(sl->waiters, WATCH_TIMEOUT);
    slot_free(sl);
}

/* The slot of tick, made (its timer set) if there is none; NULL: no memory. */
static struct watch_slot *slot_get(struct watch *w, uint64_t tick, uint64_t now_ms)
{
    struct watch_slot **chain = &w->slots[tick % WATCH_SLOTS];
    for (struct watch_slot *sl = *chain; sl; sl = sl->next)
        if (sl->tick == tick)
            return sl;
    struct watch_slot *sl = calloc(1, sizeof(*sl));
    if (sl == NULL)
        return NULL;
    sl->w = w;
    sl->tick = tick;
    sl->timer = evtimer_new(w->base, slot_due, sl);
    /* libevent counts from the time it cached when this loop turn began:
     * brought to now, so that a slot made late in a long turn (a fan-out)
     * does not come due early by the turn's length */
    event_base_update_cache_time(w->base);
    uint64_t in_ms = tick * WATCH_TICK_MS - now_ms;
    struct timeval tv = {(time_t)(in_ms / 1000), (suseconds_t)(in_ms % 1000) * 1000};
    if (sl->timer == NULL || evtimer_add(sl->timer, &tv) != 0) {
        if (sl->timer)
            event_free(sl->timer);
        free(sl);
        return NULL;
    }
    sl->next = *chain;
    *chain = sl;
    return sl;
}

/* wt no longer times out; its slot goes with its last waiter. */
static void slot_leave(struct watch_waiter *wt)
{
    struct watch_slot *sl = wt->slot;
    if (sl == NULL)
        return;
    if (wt->tprev)
        wt->tprev->tnext = wt->tnext;
    else
        sl->waiters = wt->tnext;
    if (wt->tnext)
        wt->tnext->tprev = wt->tprev;
    wt->slot = NULL;
    if (sl->waiters == NULL && !sl->firing) {
        slot_unhash(sl);
        slot_free(sl);
    }
}

static void destroy_waiter(struct watch_waiter *wt)
{
    slot_leave(wt);
    free(wt->key);
    free(wt);
}

static void fire(struct watch_waiter *wt, enum watch_why why)
{
    watch_fire_cb cb = wt->cb;
    void *arg = wt->arg;
    unlink_waiter(wt);
    destroy_waiter(wt);
    cb(arg, why);
}

int watch_park(struct watch *w, enum watch_on on, const char *key, uint64_t wait_ms,
               watch_fire_cb cb, void *arg, struct watch_waiter **out)
{
    if (on != WATCH_ON_NAME)
        key = NULL;
    else if (key == NULL)
        return REG_EINVAL;
    if (w->closed)
        return REG_ESHUTDOWN;
    struct watch_waiter *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        return REG_ENOMEM;
    wt->w = w;
    wt->cb = cb;
    wt->arg = arg;
    if (key != NULL && (wt->key = strdup(key)) == NULL) {
        free(wt);
        return REG_ENOMEM;
    }
    uint64_t now_ms = mono_ms();
    if (wait_ms > (uint64_t)1 << 40) /* ~35 years: no sum below overflows */
        wait_ms = (uint64_t)1 << 40;
    wt->slot = slot_get(w, (now_ms + wait_ms + WATCH_TICK_MS - 1) / WATCH_TICK_MS, now_ms);
    if (wt->slot == NULL) {
        free(wt->key);
        free(wt);
        return REG_ENOMEM;
    }
    wt->tnext = wt->slot->waiters;
    if (wt->tnext)
        wt->tnext->tprev = wt;
    wt->slot->waiters = wt;
    wt->head = on == WATCH_ON_NAME    ? &w->buckets[hash_key(key)]
               : on == WATCH_ON_NAMES ? &w->names
                                      : &w->global;
    wt->next = *wt->head;
    if (wt->next)
        wt->next->prev = wt;
    *wt->head = wt;
    count_parked(w, 1);
    if (out)
        *out = wt;
    return 0;
}

void watch_cancel(struct watch_waiter *wt)
{
    if (wt == NULL)
        return;
    unlink_waiter(wt);
    destroy_waiter(wt);
}

/* Fire every waiter of list *head whose key matches (NULL: all of them). */
static void fire_list(struct watch_waiter **head, const char *key, enum watch_why why)
{
    /* Detach matching waiters first: callbacks may park new ones here. */
    struct watch_waiter *ready = NULL;
    for (struct watch_waiter *wt = *head, *next; wt; wt = next) {
        next = wt->next;
        if (key == NULL || strcmp(wt->key, key) == 0) {
            unlink_waiter(wt);
            count_parked(wt->w, 1); /* fire() unlinks again: keep the count right */
            wt->next = ready;
            wt->prev = NULL;
            wt->head = &ready;
            if (ready)
                ready->prev = wt;
            ready = wt;
        }
    }
    while (ready)
        fire(ready, why);
}

void watch_notify(struct watch *w, const struct store_change *chg)
{
    enum watch_why why = chg->index == UINT64_MAX ? WATCH_REPLACED : WATCH_CHANGED;
    if (chg->index == UINT64_MAX || chg->many) { /* the whole store, or a node, changed */
        for (int b = 0; b < WATCH_BUCKETS; b++)
            fire_list(&w->buckets[b], NULL, why);
    } else {
        for (int i = 0; i < chg->n; i++)
            if (chg->names[i][0])
                fire_list(&w->buckets[hash_key(chg->names[i])], chg->names[i], why);
    }
    if (chg->index == UINT64_MAX || chg->services)
        fire_list(&w->names, NULL, why);
    fire_list(&w->global, NULL, why);
}

/* A change on its way to a watch (watch_notify_via). */
struct change_item {
    struct mailbox_item item; /* first */
    struct watch *w;
    struct store_change chg;
};

static void change_run(struct mailbox_item *it)
{
    struct change_item *c = (struct change_item *)it;
    watch_notify(c->w, &c->chg);
    free(c);
}

int watch_notify_via(struct mailbox *mb, struct watch *w, const struct store_change *chg)
{
    struct change_item *c = malloc(sizeof(*c));
    if (c == NULL)
        return REG_ENOMEM;
    *c = (struct change_item){.item = {.run = change_run}, .w = w, .chg = *chg};
    mailbox_post(mb, &c->item);
    return 0;
}

size_t watch_parked(const struct watch *w)
{
    return w->parked;
}

size_t watch_parked_total(void)
{
    return __atomic_load_n(&parked_total, __ATOMIC_RELAXED);
}

void watch_close(struct watch *w)
{
    w->closed = true;
    for (int b = 0; b < WATCH_BUCKETS; b++)
        fire_list(&w->buckets[b], NULL, WATCH_CHANGED);
    fire_list(&w->names, NULL, WATCH_CHANGED);
    fire_list(&w->global, NULL, WATCH_CHANGED);
}

void watch_free(struct watch *w)
{
    if (w == NULL)
        return;
    watch_close(w);
    free(w);
}
