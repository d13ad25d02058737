/*
 * watch.c — see watch.h. Waiters hang in per-key lists in a fixed-size
 * chained hash table; the names-list and catalog-wide lists are separate. Firing unlinks the
 * waiter before its callback runs, so a callback may park a new waiter.
 */
#include "hash.h"
#include "watch.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox.h"
#include "registry/error.h"
#include "store.h"

#define WATCH_BUCKETS 4096

struct watch_waiter {
    struct watch *w;
    struct watch_waiter *prev, *next; /* in its list */
    struct watch_waiter **head;       /* the list it hangs in */
    struct event *timer;
    watch_fire_cb cb;
    void *arg;
    char *key; /* WATCH_ON_NAME's name, else NULL */
};

struct watch {
    struct event_base *base;
    struct watch_waiter *buckets[WATCH_BUCKETS];
    struct watch_waiter *names; /* WATCH_ON_NAMES */
    struct watch_waiter *global; /* WATCH_ON_ALL */
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

static void destroy_waiter(struct watch_waiter *wt)
{
    event_free(wt->timer);
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

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fire(arg, WATCH_TIMEOUT);
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
    wt->timer = evtimer_new(w->base, timer_cb, wt);
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
    if (wt->timer == NULL || evtimer_add(wt->timer, &tv) != 0) {
        if (wt->timer)
            event_free(wt->timer);
        free(wt->key);
        free(wt);
        return REG_ENOMEM;
    }
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
