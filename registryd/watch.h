/*
 * watch.h — blocking queries: parked requests keyed by what they watch.
 *
 * A waiter watches one service name, the list of names and their tags
 * (/v1/catalog/services), or everything (catalog-wide reads). watch_notify
 * wakes the waiters of the names a change touched, the list's waiters when
 * the change moved the list (store_change.services), and the catalog-wide
 * waiters — never the waiters of other services (the fix for
 * hashicorp/consul#1244). A parked waiter costs one timer in libevent's heap
 * and no CPU until it fires.
 *
 * Threads: the thread of the watch's event_base only (each HTTP worker has
 * its own watch), except watch_parked_total.
 */
#ifndef REGISTRYD_WATCH_H
#define REGISTRYD_WATCH_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct mailbox;
struct store_change;
struct watch;
struct watch_waiter;

/* Why a waiter fired. */
enum watch_why {
    WATCH_CHANGED,  /* what it watches changed (or may have: recheck) */
    WATCH_TIMEOUT,  /* its wait expired */
    WATCH_REPLACED, /* the whole store was replaced (a restore): answer at once,
                     * as Consul abandons every blocking query then */
};

/* Called once, with why it fired. */
typedef void (*watch_fire_cb)(void *arg, enum watch_why why);

int watch_new(struct event_base *base, struct watch **out) REG_MUSTCHECK;
/* Fires every waiter (so each request gets its reply); from then on
 * watch_park fails with REG_ESHUTDOWN (the request is answered at once). */
void watch_close(struct watch *w);
/* Closes (above), then frees. NULL: no-op. */
void watch_free(struct watch *w);

/* What a waiter watches. */
enum watch_on {
    WATCH_ON_ALL,   /* any change */
    WATCH_ON_NAME,  /* the service named by key */
    WATCH_ON_NAMES, /* the service names and their tags */
};

/* Park a waiter for at most wait_ms on what `on` says (key: the name for
 * WATCH_ON_NAME, else ignored; copied). Returns 0, REG_ENOMEM,
 * REG_EINVAL (WATCH_ON_NAME without a key) or REG_ESHUTDOWN (closed). */
int watch_park(struct watch *w, enum watch_on on, const char *key, uint64_t wait_ms,
               watch_fire_cb cb, void *arg, struct watch_waiter **out);
/* Remove a waiter that has not fired; its callback is not called. */
void watch_cancel(struct watch_waiter *wt);

void watch_notify(struct watch *w, const struct store_change *chg);
/* watch_notify(w, chg) later, on the loop that owns mb (mailbox.h), which
 * must be w's; chg is copied. From any thread. Returns 0 or REG_ENOMEM
 * (nothing posted). */
int watch_notify_via(struct mailbox *mb, struct watch *w,
                     const struct store_change *chg) REG_MUSTCHECK;
size_t watch_parked(const struct watch *w);
/* Waiters parked in every watch of the process (any thread). */
size_t watch_parked_total(void);

#endif
