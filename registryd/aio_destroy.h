/*
 * aio_destroy.h — io_destroy(2) off the raft thread.
 *
 * libraft's uv io writes its log through a kernel AIO context per open
 * segment and destroys the context, on the raft thread, each time it closes
 * a segment (every 8 MiB of log, on every server at about the same index).
 * io_destroy returns only after one or two RCU grace periods: 30-40 ms
 * here, during which no write commits anywhere in the cluster. Those stalls
 * were most of the p99 of writes.
 *
 * libraft makes the call through libc's syscall(). This module defines
 * syscall() in the executable, whose symbols come before libc's: it hands
 * io_destroy to a thread of its own and returns 0 at once (libraft has let
 * go of the context: it ignores the result and never uses the context
 * again), and passes every other call on to libc's syscall() unchanged,
 * errno included. When the thread cannot take it (not started, queue full),
 * io_destroy runs where it was called, as before.
 *
 * Threads: any.
 */
#ifndef REGISTRYD_AIO_DESTROY_H
#define REGISTRYD_AIO_DESTROY_H

#include "common.h"

/* Start the thread (the raft thread's io_destroy calls go to it from then
 * on). Idempotent. Returns 0 or REG_ENOMEM (no thread: calls stay where
 * they are made). */
int aio_destroy_start(void) REG_MUSTCHECK;

/* Wait until every io_destroy handed to the thread so far has returned. */
void aio_destroy_drain(void);

#endif
