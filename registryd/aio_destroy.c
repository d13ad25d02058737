/*
 * aio_destroy.c — io_destroy(2) off the raft thread (see aio_destroy.h).
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "aio_destroy.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "registry/error.h"

#define QUEUE_MAX 64 /* contexts waiting; a server closes one every few seconds */

typedef long (*syscall_fn)(long, ...);

static pthread_once_t real_once = PTHREAD_ONCE_INIT;
static syscall_fn real_syscall;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queued = PTHREAD_COND_INITIALIZER;
static pthread_cond_t drained = PTHREAD_COND_INITIALIZER;
static unsigned long queue[QUEUE_MAX];
static int n_queued;
static int n_running; /* taken off the queue, not yet returned */
static bool started;

static void find_real(void)
{
    real_syscall = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
}

/* Found while the process is still one thread (the executable's
 * constructors run before main): dlsym takes the loader's lock, which a
 * thread inside dlopen holds, and that thread could be calling syscall().
 * A library's constructor that calls syscall() before this one still finds
 * it through real_once. */
__attribute__((constructor)) static void find_real_early(void)
{
    pthread_once(&real_once, find_real);
}

static void *run(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (n_queued == 0)
            pthread_cond_wait(&queued, &lock);
        unsigned long ctx = queue[--n_queued];
        n_running++;
        pthread_mutex_unlock(&lock);
        real_syscall(SYS_io_destroy, ctx);
        pthread_mutex_lock(&lock);
        n_running--;
        if (n_queued == 0 && n_running == 0)
            pthread_cond_broadcast(&drained);
    }
    return NULL;
}

int aio_destroy_start(void)
{
    pthread_once(&real_once, find_real);
    if (real_syscall == NULL)
        return REG_ENOMEM;
    pthread_mutex_lock(&lock);
    int rc = 0;
    if (!started) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, NULL) == 0) {
            pthread_setname_np(t, "aio-destroy"); /* top -H */
            pthread_detach(t);
            started = true;
        } else {
            rc = REG_ENOMEM;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

void aio_destroy_drain(void)
{
    pthread_mutex_lock(&lock);
    while (n_queued > 0 || n_running > 0)
        pthread_cond_wait(&drained, &lock);
    pthread_mutex_unlock(&lock);
}

/* Hand ctx to the thread; false: it cannot take it. */
static bool hand_over(unsigned long ctx)
{
    pthread_mutex_lock(&lock);
    bool taken = started && n_queued < QUEUE_MAX;
    if (taken) {
        queue[n_queued++] = ctx;
        pthread_cond_signal(&queued);
    }
    pthread_mutex_unlock(&lock);
    return taken;
}

/* libc's syscall(2) with up to six arguments, as the kernel takes them;
 * reading six of them whatever the call passed is what libc's own does. */
long syscall(long number, ...)
{
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_io_destroy && hand_over((unsigned long)a[0]))
        return 0;
    if (real_syscall == NULL)
        pthread_once(&real_once, find_real);
    if (real_syscall == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
