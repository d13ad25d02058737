/* Unit tests for aio_destroy.c: the executable's syscall() hands io_destroy
 * to a thread of its own once started (the context is gone once that thread
 * is done), runs it in place before, and passes every other call through,
 * result and errno included. */
#include <errno.h>
#include <linux/aio_abi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aio_destroy.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A context that exists answers io_getevents (no events); a destroyed one
 * is EINVAL. */
static bool ctx_alive(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    return syscall(SYS_io_getevents, ctx, 0L, 1L, &ev, &zero) == 0;
}

static void other_calls_pass_through(void **state)
{
    (void)state;
    assert_int_equal(syscall(SYS_getpid), getpid());
    errno = 0;
    assert_int_equal(syscall(SYS_close, -1), -1);
    assert_int_equal(errno, EBADF);
}

static void destroy_without_the_thread_runs_in_place(void **state)
{
    (void)state;
    /* before aio_destroy_start: as libc's */
    aio_context_t ctx = 0;
    assert_int_equal(syscall(SYS_io_setup, 1L, &ctx), 0);
    assert_true(ctx_alive(ctx));
    assert_int_equal(syscall(SYS_io_destroy, ctx), 0);
    assert_false(ctx_alive(ctx));
}

static void destroy_runs_on_the_thread(void **state)
{
    (void)state;
    assert_int_equal(aio_destroy_start(), 0);
    assert_int_equal(aio_destroy_start(), 0); /* idempotent */
    enum { N = 8 };
    aio_context_t ctx[N] = {0};
    for (int i = 0; i < N; i++)
        assert_int_equal(syscall(SYS_io_setup, 1L, &ctx[i]), 0);
    double t0 = now();
    for (int i = 0; i < N; i++)
        assert_int_equal(syscall(SYS_io_destroy, ctx[i]), 0);
    double handed = now() - t0;
    aio_destroy_drain();
    double done = now() - t0;
    for (int i = 0; i < N; i++)
        assert_false(ctx_alive(ctx[i]));
    /* for the record (not asserted): the caller waits for none of the RCU
     * grace periods each destroy takes */
    print_message("handed over in %.3f ms, destroyed in %.1f ms\n", handed * 1e3, done * 1e3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(other_calls_pass_through),
        cmocka_unit_test(destroy_without_the_thread_runs_in_place),
        cmocka_unit_test(destroy_runs_on_the_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
