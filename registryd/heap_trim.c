/*
 * heap_trim.c — see heap_trim.h.
 */
#include "heap_trim.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "registry/error.h"

struct heap_trim {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    unsigned interval_ms;
};

static void *trim_main(void *arg)
{
    struct heap_trim *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += t->interval_ms / 1000;
        until.tv_nsec += (long)(t->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        int rc = 0;
        while (!t->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&t->wake, &t->lock, &until);
        if (t->stop)
            break;
        pthread_mutex_unlock(&t->lock);
        malloc_trim(0);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int heap_trim_start(unsigned interval_ms, struct heap_trim **out)
{
    *out = NULL;
    mallopt(M_MMAP_THRESHOLD, HEAP_TRIM_MMAP_MIN);
    if (interval_ms == 0)
        return 0;
    struct heap_trim *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return REG_ENOMEM;
    t->interval_ms = interval_ms;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&t->lock, NULL);
    int rc = pthread_cond_init(&t->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_create(&t->thread, NULL, trim_main, t) != 0) {
        if (rc == 0)
            pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return REG_EIO;
    }
    *out = t;
    return 0;
}

void heap_trim_stop(struct heap_trim *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
