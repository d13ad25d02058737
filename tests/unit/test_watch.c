/* Unit tests for watch.c: which waiters a change wakes. A waiter of one
 * name wakes for that name only; a waiter of the names list wakes when the
 * change moved the list (or the whole store changed), not for a status
 * change; a catalog-wide waiter wakes for every change; each fires with
 * why (a change, its timeout, a restore's replaced store); a closed watch
 * refuses to park. Waits end when due and not before, waiters due together
 * sharing a timer: one woken or cancelled leaves the others' timeouts
 * alone, and a timeout's callback may park again or cancel another. */
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "registry/error.h"
#include "store.h"
#include "watch.h"

struct fired {
    int count;
    enum watch_why why;
};

static void on_fire(void *arg, enum watch_why why)
{
    struct fired *f = arg;
    f->count++;
    f->why = why;
}

static struct store_change change_of(const char *name, bool services)
{
    struct store_change c = {.index = 7, .n = 1, .services = services};
    strcpy(c.names[0], name);
    return c;
}

static void wakes_by_scope(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct watch *w;
    assert_int_equal(watch_new(base, &w), 0);
    struct fired web = {0}, db = {0}, names = {0}, all = {0};
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "web", 60000, on_fire, &web, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "db", 60000, on_fire, &db, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAMES, "ignored", 60000, on_fire, &names, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_ALL, NULL, 60000, on_fire, &all, NULL), 0);
    assert_int_equal(watch_parked(w), 4);

    /* a check of web changed state: web's and the catalog-wide waiter */
    struct store_change status = change_of("web", false);
    watch_notify(w, &status);
    assert_int_equal(web.count, 1);
    assert_int_equal(db.count, 0);
    assert_int_equal(names.count, 0);
    assert_int_equal(all.count, 1);
    assert_int_equal(web.why, WATCH_CHANGED);
    assert_int_equal(watch_parked(w), 2);

    /* db got a new tag: db's and the names list's */
    struct store_change tags = change_of("db", true);
    watch_notify(w, &tags);
    assert_int_equal(db.count, 1);
    assert_int_equal(names.count, 1);
    assert_int_equal(watch_parked(w), 0);

    /* a restore (index UINT64_MAX) wakes the names list too, and every
     * name's waiter, saying the store was replaced */
    assert_int_equal(watch_park(w, WATCH_ON_NAMES, NULL, 60000, on_fire, &names, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "web", 60000, on_fire, &web, NULL), 0);
    struct store_change restore = {.index = UINT64_MAX};
    watch_notify(w, &restore);
    assert_int_equal(names.count, 2);
    assert_int_equal(names.why, WATCH_REPLACED);
    assert_int_equal(web.count, 2);
    assert_int_equal(web.why, WATCH_REPLACED);

    /* a name waiter needs its name */
    assert_int_equal(watch_park(w, WATCH_ON_NAME, NULL, 60000, on_fire, &web, NULL), REG_EINVAL);

    /* a timeout fires as one */
    struct fired t = {0};
    assert_int_equal(watch_park(w, WATCH_ON_NAMES, NULL, 1, on_fire, &t, NULL), 0);
    event_base_dispatch(base);
    assert_int_equal(t.count, 1);
    assert_int_equal(t.why, WATCH_TIMEOUT);

    /* closing fires what is parked, then refuses */
    struct fired c = {0};
    assert_int_equal(watch_park(w, WATCH_ON_NAMES, NULL, 60000, on_fire, &c, NULL), 0);
    watch_close(w);
    assert_int_equal(c.count, 1);
    assert_int_equal(watch_park(w, WATCH_ON_ALL, NULL, 60000, on_fire, &c, NULL), REG_ESHUTDOWN);
    watch_free(w);
    event_base_free(base);
}

/* libevent keeps time by CLOCK_MONOTONIC_COARSE (a jiffy at a time: 4 ms
 * at HZ=250, 10 ms at HZ=100): "not before" is judged within that */
#define JIFFY 0.011

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timed {
    int count;
    enum watch_why why;
    double at;
    struct watch *w;
    struct watch_waiter *cancel; /* cancelled from this one's callback */
    bool park_again;             /* parks a new waiter (40 ms) from its callback */
    struct timed *again;
};

static void on_timed(void *arg, enum watch_why why)
{
    struct timed *t = arg;
    t->count++;
    t->why = why;
    t->at = now_s();
    if (t->cancel) {
        watch_cancel(t->cancel);
        t->cancel = NULL;
    }
    if (t->park_again) {
        t->park_again = false;
        assert_int_equal(watch_park(t->w, WATCH_ON_NAME, "web", 40, on_timed, t->again, NULL), 0);
    }
}

static void times_out_in_shared_slots(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct watch *w;
    assert_int_equal(watch_new(base, &w), 0);
    struct timed a = {.w = w}, b = {.w = w}, c = {.w = w}, d = {.w = w}, e = {.w = w};
    struct timed again = {.w = w};
    struct watch_waiter *wb, *wc;
    double t0 = now_s();
    /* a, b, c and d are due together (one slot); e later */
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "web", 50, on_timed, &a, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "db", 50, on_timed, &b, &wb), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAMES, NULL, 50, on_timed, &c, &wc), 0);
    assert_int_equal(watch_park(w, WATCH_ON_ALL, NULL, 50, on_timed, &d, NULL), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "web", 120, on_timed, &e, NULL), 0);
    assert_int_equal(watch_parked(w), 5);
    /* b is woken by a change and c cancelled: a and d still time out */
    struct store_change db = change_of("db", false);
    watch_notify(w, &db);
    assert_int_equal(b.count, 1);
    assert_int_equal(b.why, WATCH_CHANGED);
    assert_int_equal(d.count, 1); /* catalog-wide: woken too */
    assert_int_equal(watch_park(w, WATCH_ON_ALL, NULL, 50, on_timed, &d, NULL), 0);
    watch_cancel(wc);
    d.count = 0;
    assert_int_equal(watch_parked(w), 3); /* a, d (again), e */
    /* a's timeout parks a new waiter, from inside its slot's firing */
    a.park_again = true;
    a.again = &again;
    event_base_dispatch(base);
    /* everything ran out: a and d timed out (not before their 50 ms), e
     * after its 120 ms, the one a parked 40 ms after a */
    assert_int_equal(a.count, 1);
    assert_int_equal(a.why, WATCH_TIMEOUT);
    assert_true(a.at - t0 >= 0.050 - JIFFY);
    assert_int_equal(d.count, 1);
    assert_int_equal(d.why, WATCH_TIMEOUT);
    assert_int_equal(e.count, 1);
    assert_true(e.at - t0 >= 0.120 - JIFFY);
    assert_int_equal(again.count, 1);
    assert_int_equal(again.why, WATCH_TIMEOUT);
    assert_true(again.at - a.at >= 0.040 - JIFFY);
    assert_int_equal(c.count, 0); /* cancelled: never called */
    assert_int_equal(watch_parked(w), 0);

    /* a callback cancelling another waiter of its own slot: that one is
     * never called */
    struct timed f = {.w = w}, g = {.w = w};
    struct watch_waiter *wf, *wg;
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "x", 20, on_timed, &f, &wf), 0);
    assert_int_equal(watch_park(w, WATCH_ON_NAME, "y", 20, on_timed, &g, &wg), 0);
    f.cancel = wg;
    g.cancel = wf;
    event_base_dispatch(base);
    assert_int_equal(f.count + g.count, 1);
    assert_int_equal(watch_parked(w), 0);
    watch_free(w);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wakes_by_scope),
        cmocka_unit_test(times_out_in_shared_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
