/*
 * mailbox.h — run work on another event loop's thread: any thread posts an
 * item; the loop that owns the mailbox runs it, oldest first, on its own
 * thread (queue.h's FIFO, woken with event_active, which is thread-safe
 * once evthread_use_pthreads() has been called).
 *
 * The HTTP front end's worker threads get what the cluster and the store
 * deliver on the main loop this way (write completions, changes for
 * blocking queries), and are told to stop.
 *
 * An item embeds struct mailbox_item and is found again with queue_entry.
 * Threads: mailbox_post from any thread; the rest on the owner's thread
 * (mailbox_free after that thread has stopped, from the thread that
 * stopped it).
 */
#ifndef REGISTRYD_MAILBOX_H
#define REGISTRYD_MAILBOX_H

#include "common.h"
#include "queue.h"

struct event_base;
struct mailbox;

struct mailbox_item {
    struct queue_node node;
    void (*run)(struct mailbox_item *it); /* owns it from then on */
};

/* Returns 0 or REG_ENOMEM. */
int mailbox_new(struct event_base *base, struct mailbox **out) REG_MUSTCHECK;
/* Run it->run(it) soon on the owner's loop. Never fails. */
void mailbox_post(struct mailbox *mb, struct mailbox_item *it);
/* The owner's loop has stopped for good (its thread joined): run what is
 * queued now, and from now on run each item as it is posted, on the
 * posting thread (which then must be the only one using the owner's
 * state: the main loop, at shutdown). */
void mailbox_close(struct mailbox *mb);
/* Run what is still queued (on the calling thread), then free. NULL: no-op. */
void mailbox_free(struct mailbox *mb);

#endif
