/*
 * http_workers.c — see http_workers.h.
 */
#define _GNU_SOURCE
#include "http_workers.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_link.h"
#include "log.h"
#include "mailbox.h"
#include "registry/error.h"
#include "store.h"
#include "watch.h"

struct worker {
    struct http_workers *all;
    unsigned index;
    struct event_base *base; /* own (index > 0) */
    struct watch *watch;
    struct cluster_link *link;
    struct mailbox *mailbox;
    struct http_server *srv;
    pthread_t thread;
    bool running; /* thread started and not yet joined */
};

struct http_workers {
    unsigned n;
    struct http_shared *shared;
    struct worker w[]; /* n */
};

void http_workers_notify(struct http_workers *all, const struct store_change *chg)
{
    for (unsigned i = 1; all != NULL && i < all->n; i++) {
        if (watch_notify_via(all->w[i].mailbox, all->w[i].watch, chg) != 0)
            /* parked queries of this worker wake at their wait's end */
            log_limited(LOG_WARN, "http", "msg=\"out of memory: a change reaches a worker's "
                                          "blocking queries late\" worker=%u", i);
    }
}

/* The last item a worker's loop runs: its blocking queries answered, the
 * loop left. */
struct stop_item {
    struct mailbox_item item; /* first */
    struct worker *w;
};

static void stop_run(struct mailbox_item *it)
{
    struct worker *w = ((struct stop_item *)it)->w;
    free(it);
    watch_close(w->watch);
    event_base_loopbreak(w->base);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0)
        log_error("http", "msg=\"worker event loop failed\" worker=%u", w->index);
    return NULL;
}

/* Worker i > 0: its loop and what hangs on it, its server, its thread. */
static int worker_start(struct http_workers *all, unsigned i, const struct http_options *base_opt,
                        char *err, size_t errlen)
{
    struct worker *w = &all->w[i];
    w->all = all;
    w->index = i;
    w->base = common_front_end_base_new();
    if (w->base == NULL || watch_new(w->base, &w->watch) != 0 ||
        mailbox_new(w->base, &w->mailbox) != 0 ||
        cluster_link_new(w->base, base_opt->store, base_opt->cluster, &w->link) != 0) {
        snprintf(err, errlen, "HTTP worker %u: out of memory", i);
        return REG_ENOMEM;
    }
    struct http_options o = *base_opt;
    o.worker = i;
    o.base = w->base;
    o.watch = w->watch;
    o.mailbox = w->mailbox;
    o.link = w->link;
    return http_start(&o, &w->srv, err, errlen);
}

int http_workers_serve(struct http_workers *all, char *err, size_t errlen)
{
    for (unsigned i = 1; i < all->n; i++) {
        struct worker *w = &all->w[i];
        if (w->running)
            continue;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "HTTP worker %u: cannot start its thread", i);
            return REG_ENOMEM;
        }
        w->running = true;
        char name[16];
        snprintf(name, sizeof(name), "http-%u", i);
        pthread_setname_np(w->thread, name); /* for top -H and the tests */
    }
    return 0;
}

int http_workers_start(const struct http_options *opt, unsigned n, struct http_workers **out,
                       char *err, size_t errlen)
{
    if (n < 1 || n > REG_MAX_HTTP_WORKERS) {
        snprintf(err, errlen, "http_workers: %u is not within 1..%d", n, REG_MAX_HTTP_WORKERS);
        return REG_EINVAL;
    }
    struct http_workers *all = calloc(1, sizeof(*all) + n * sizeof(all->w[0]));
    *out = all;
    if (all == NULL || http_shared_new(opt, &all->shared) != 0) {
        snprintf(err, errlen, "out of memory");
        return REG_ENOMEM;
    }
    all->n = n;
    struct http_options o = *opt;
    o.shared = all->shared;
    o.reuse_port = n > 1;
    o.worker = 0;
    all->w[0] = (struct worker){.all = all, .base = opt->base, .watch = opt->watch};
    int rc = http_start(&o, &all->w[0].srv, err, errlen);
    if (rc != 0)
        return rc;
    for (unsigned i = 1; i < n; i++) /* in worker 0's SO_REUSEPORT groups */
        if ((rc = worker_start(all, i, &o, err, errlen)) != 0)
            return rc;
    if (n > 1)
        log_info("http", "msg=\"serving on worker threads\" workers=%u", n);
    return 0;
}

void http_workers_stop(struct http_workers *all)
{
    if (all == NULL)
        return;
    for (unsigned i = 1; i < all->n; i++) {
        struct worker *w = &all->w[i];
        if (!w->running)
            continue;
        struct stop_item *it = malloc(sizeof(*it));
        if (it != NULL) {
            *it = (struct stop_item){.item = {.run = stop_run}, .w = w};
            mailbox_post(w->mailbox, &it->item);
        } else {
            event_base_loopbreak(w->base); /* thread-safe; queries are answered at free */
        }
    }
    for (unsigned i = 1; i < all->n; i++) {
        struct worker *w = &all->w[i];
        if (w->running)
            pthread_join(w->thread, NULL);
        w->running = false;
        /* What the cluster still delivers (its stop answers every write in
         * flight) runs at once, here on the main loop's thread, while the
         * cluster exists: queued until http_workers_free, a reply would
         * read the freed cluster's status. */
        if (w->mailbox != NULL)
            mailbox_close(w->mailbox);
        /* Forwards still in flight are answered now (they fail), while
         * the cluster they ask about still exists. */
        cluster_link_free(w->link);
        w->link = NULL;
    }
}

void http_workers_free(struct http_workers *all)
{
    if (all == NULL)
        return;
    http_workers_stop(all); /* if not yet */
    for (unsigned i = all->n; i-- > 1;) {
        struct worker *w = &all->w[i];
        /* What the cluster handed back while it stopped, then the server. */
        mailbox_free(w->mailbox);
        watch_free(w->watch);
        http_free(w->srv);
        common_base_free(w->base);
    }
    http_free(all->w[0].srv);
    http_shared_free(all->shared);
    free(all);
}
