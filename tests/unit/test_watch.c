/* Unit tests for watch.c: which waiters a change wakes. A waiter of one
 * name wakes for that name only; a waiter of the names list wakes when the
 * change moved the list (or the whole store changed), not for a status
 * change; a catalog-wide waiter wakes for every change; each fires with
 * why (a change, its timeout, a restore's replaced store); a closed watch
 * refuses to park. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wakes_by_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
