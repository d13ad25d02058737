/*
 * heap_trim.h — freed heap goes back to the kernel.
 *
 * glibc keeps what the process frees in its arenas for reuse: after a big
 * answer is rendered, a restore applied or a burst of registrations, the
 * resident size stays at its peak although most of it is free. At a
 * million instances that garbage was a third of the resident size. Two
 * measures: allocations of HEAP_TRIM_MMAP_MIN bytes and more are mapped on
 * their own (glibc otherwise raises that threshold as large blocks are
 * freed, and then serves them from the arenas, where they stay), so that
 * freeing one unmaps it; and a thread of its own calls malloc_trim every
 * interval, which returns the free pages inside the arenas (madvise). The
 * trim runs off the event loops: it holds each arena's lock for the time it
 * takes to walk its free chunks (well under a millisecond per 100 MB freed).
 */
#ifndef REGISTRYD_HEAP_TRIM_H
#define REGISTRYD_HEAP_TRIM_H

#include "common.h"

#define HEAP_TRIM_MMAP_MIN (1u << 20)

struct heap_trim;

/* Start trimming every interval_ms (0: only the mmap threshold is set).
 * Returns 0 or REG_ENOMEM / REG_EIO (the thread could not start). */
int heap_trim_start(unsigned interval_ms, struct heap_trim **out) REG_MUSTCHECK;
/* Stop the thread (it wakes at once) and free t. NULL: no-op. */
void heap_trim_stop(struct heap_trim *t);

#endif
