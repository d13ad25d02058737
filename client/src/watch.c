/*
 * watch.c — watchers (see registry/registry.h): a thread per watcher doing
 * blocking queries, a pipe to stop it at once, and for REG_WATCH_LOOP a pipe
 * the application polls to have changes delivered on its own thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "duration_parse.h"
#include "internal.h"
#include "registry/registry.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000

struct reg_watch {
    struct reg_client *client;
    char *service, *tag, *wait;
    uint64_t wait_ms; /* wait, parsed */
    bool passing_only;
    enum reg_watch_mode mode;
    reg_watch_cb cb;
    void *arg;
    pthread_t thread;
    bool started;
    int stop_pipe[2], notify_pipe[2];

    pthread_mutex_t lock; /* guards what follows */
    struct reg_instance *list;
    size_t n;
    bool have, stale, pending;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static bool same_strs(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool same_instance(const struct reg_instance *a, const struct reg_instance *b)
{
    if (!same_strs(a->id, b->id) || !same_strs(a->address, b->address) || a->port != b->port ||
        a->weight != b->weight || !same_strs(a->status, b->status) || a->ntags != b->ntags ||
        a->nmeta != b->nmeta)
        return false;
    for (size_t i = 0; i < a->ntags; i++)
        if (!same_strs(a->tags[i], b->tags[i]))
            return false;
    for (size_t i = 0; i < 2 * a->nmeta; i++)
        if (!same_strs(a->meta[i], b->meta[i]))
            return false;
    return true;
}

static bool same_list(const struct reg_instance *a, size_t na, const struct reg_instance *b,
                      size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!same_instance(&a[i], &b[i]))
            return false;
    return true;
}

static char **copy_strs(char **v, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; out && i < n; i++) {
        if ((out[i] = strdup(v[i] ? v[i] : "")) == NULL) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

int reg_instances_copy(const struct reg_instance *list, size_t n, struct reg_instance **out)
{
    struct reg_instance *v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL)
        return REG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct reg_instance *s = &list[i];
        struct reg_instance *d = &v[i];
        d->id = dup_or_null(s->id);
        d->service = dup_or_null(s->service);
        d->address = dup_or_null(s->address);
        d->status = dup_or_null(s->status);
        d->port = s->port;
        d->weight = s->weight;
        d->ntags = s->ntags;
        d->nmeta = s->nmeta;
        d->tags = copy_strs(s->tags, s->ntags);
        d->meta = copy_strs(s->meta, 2 * s->nmeta);
        if (!d->id || !d->service || !d->address || !d->status || !d->tags || !d->meta) {
            reg_instances_free(v, i + 1);
            return REG_ENOMEM;
        }
    }
    *out = v;
    return 0;
}

/* Tell the application; called on the watcher thread with lock held. */
static void announce(struct reg_watch *w)
{
    if (w->mode == REG_WATCH_LOOP) {
        w->pending = true;
        char one = 1;
        (void)!write(w->notify_pipe[1], &one, 1); /* full pipe: already signalled */
    }
}

/* Sleep ms or until stopped; true if stopped. */
static bool nap(struct reg_watch *w, int ms)
{
    struct pollfd p = {w->stop_pipe[0], POLLIN, 0};
    return poll(&p, 1, ms) > 0;
}

/* A server that answers at once without progress (no X-Consul-Index, or
 * the same one: a proxy that strips it, a server that does not block) is
 * asked again at most this often, not as fast as it answers. */
#define NO_PROGRESS_MIN_MS 1000
#define UNCHANGED_MIN_MS 100

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *watch_thread(void *arg)
{
    struct reg_watch *w = arg;
    uint64_t index = 0;
    int backoff = 0;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)w;
    reg__set_cancel_fd(w->stop_pipe[0]);
    for (;;) {
        struct reg_instance *list = NULL;
        size_t n = 0;
        uint64_t new_index = 0, asked = mono_ms();
        int rc = reg_health_service(w->client, w->service, w->tag, w->passing_only, index,
                                    w->wait, &list, &n, &new_index);
        if (rc == REG_ESHUTDOWN || nap(w, 0))
            break;
        if (rc != 0) {
            pthread_mutex_lock(&w->lock);
            /* the first failure in a row is told, also before any list:
             * an empty stale one then (a watch of an unreachable server
             * said nothing, for ever) */
            bool tell = !w->stale;
            w->stale = true;
            if (tell)
                announce(w);
            pthread_mutex_unlock(&w->lock);
            if (tell && w->mode == REG_WATCH_THREAD)
                w->cb(w->arg, w->list, w->n, true); /* the list is only replaced here */
            backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2)
                              : BACKOFF_MIN_MS;
            index = 0; /* start afresh: the next answer is immediate */
            if (nap(w, (int)(rand_r(&seed) % (unsigned)backoff) + 1))
                break;
            continue;
        }
        backoff = 0;
        if (new_index < index)
            new_index = 0; /* the index went backwards (a restored server): reset */
        pthread_mutex_lock(&w->lock);
        bool changed = !w->have || w->stale || !same_list(w->list, w->n, list, n);
        if (changed) {
            reg_instances_free(w->list, w->n);
            w->list = list;
            w->n = n;
            w->have = true;
            w->stale = false;
            announce(w);
        }
        pthread_mutex_unlock(&w->lock);
        if (!changed)
            reg_instances_free(list, n);
        else if (w->mode == REG_WATCH_THREAD)
            w->cb(w->arg, w->list, w->n, false);
        /* no progress, and answered before the wait was out: it did not
         * block; ask again no sooner than the wait or NO_PROGRESS_MIN_MS.
         * An index that rose with nothing changed (a server whose index
         * moves with other services' writes, say): no sooner than
         * UNCHANGED_MIN_MS, or the watch asks as fast as the server
         * answers */
        uint64_t took = mono_ms() - asked;
        uint64_t least = w->wait_ms > 0 && w->wait_ms < NO_PROGRESS_MIN_MS ? w->wait_ms
                                                                           : NO_PROGRESS_MIN_MS;
        if (new_index != 0 && new_index != index && !changed)
            least = least < UNCHANGED_MIN_MS ? least : UNCHANGED_MIN_MS;
        if ((new_index == 0 || new_index == index || !changed) && took < least &&
            nap(w, (int)(least - took)))
            break;
        index = new_index;
    }
    return NULL;
}

static int pipe_nonblock(int fds[2])
{
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : REG_EIO;
}

int reg_watch_new(struct reg_client *c, const char *service, const char *tag, bool passing_only,
                  const char *wait, enum reg_watch_mode mode, reg_watch_cb cb, void *arg,
                  struct reg_watch **out)
{
    uint64_t wait_ms;
    if (c == NULL || service == NULL || cb == NULL || out == NULL ||
        (mode != REG_WATCH_THREAD && mode != REG_WATCH_LOOP) ||
        (wait && reg__duration_parse(wait, strlen(wait), &wait_ms) != 0))
        return REG_EINVAL; /* a bad wait would fail every query, forever */
    struct reg_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return REG_ENOMEM;
    w->stop_pipe[0] = w->stop_pipe[1] = w->notify_pipe[0] = w->notify_pipe[1] = -1;
    w->client = c;
    w->service = strdup(service);
    w->tag = dup_or_null(tag);
    w->wait = strdup(wait ? wait : "30s");
    w->wait_ms = wait ? wait_ms : 30000;
    w->passing_only = passing_only;
    w->mode = mode;
    w->cb = cb;
    w->arg = arg;
    pthread_mutex_init(&w->lock, NULL);
    if (w->service == NULL || (tag && w->tag == NULL) || w->wait == NULL ||
        pipe_nonblock(w->stop_pipe) != 0 || pipe_nonblock(w->notify_pipe) != 0 ||
        pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        reg_watch_free(w);
        return REG_ENOMEM;
    }
    w->started = true;
    *out = w;
    return 0;
}

int reg_watch_fd(const struct reg_watch *w)
{
    return w ? w->notify_pipe[0] : -1;
}

void reg_watch_dispatch(struct reg_watch *w)
{
    char buf[64];
    while (read(w->notify_pipe[0], buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&w->lock);
    struct reg_instance *copy = NULL;
    size_t n = w->n;
    bool stale = w->stale, deliver = w->pending;
    w->pending = false;
    if (deliver && reg_instances_copy(w->list, w->n, &copy) != 0)
        deliver = false;
    pthread_mutex_unlock(&w->lock);
    if (deliver) {
        w->cb(w->arg, copy, n, stale);
        reg_instances_free(copy, n);
    }
}

int reg_watch_snapshot(struct reg_watch *w, struct reg_instance **out, size_t *n, bool *stale)
{
    pthread_mutex_lock(&w->lock);
    int rc = w->have ? reg_instances_copy(w->list, w->n, out) : REG_ENOTFOUND;
    if (rc == 0) {
        *n = w->n;
        if (stale)
            *stale = w->stale;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void reg_watch_free(struct reg_watch *w)
{
    if (w == NULL)
        return;
    if (w->started) {
        char one = 1;
        (void)!write(w->stop_pipe[1], &one, 1);
        pthread_join(w->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (w->stop_pipe[i] >= 0)
            close(w->stop_pipe[i]);
        if (w->notify_pipe[i] >= 0)
            close(w->notify_pipe[i]);
    }
    reg_instances_free(w->list, w->n);
    pthread_mutex_destroy(&w->lock);
    free(w->service);
    free(w->tag);
    free(w->wait);
    free(w);
}
