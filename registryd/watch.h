/*
 * watch.h — blocking queries: parked requests keyed by what they watch.
 *
 * A waiter watches one service name, or everything (key NULL: catalog-wide
 * reads such as /v1/catalog/services). watch_notify wakes the waiters of the
 * names a change touched and the catalog-wide waiters — never the waiters of
 * other services (the fix for hashicorp/consul#1244). A parked waiter costs
 * one timer in libevent's heap and no CPU until it fires.
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

/* Called once: the watched thing changed (timed_out false) or wait expired. */
typedef void (*watch_fire_cb)(void *arg, bool timed_out);

int watch_new(struct event_base *base, struct watch **out) REG_MUSTCHECK;
/* Fires every waiter (so each request gets its reply); from then on
 * watch_park fails with REG_ESHUTDOWN (the request is answered at once). */
void watch_close(struct watch *w);
/* Closes (above), then frees. NULL: no-op. */
void watch_free(struct watch *w);

/* Park a waiter for at most wait_ms. key is copied. Returns 0, REG_ENOMEM
 * or REG_ESHUTDOWN (closed). */
int watch_park(struct watch *w, const char *key, uint64_t wait_ms, watch_fire_cb cb, void *arg,
               struct watch_waiter **out);
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
