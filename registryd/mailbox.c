/*
 * mailbox.c — see mailbox.h.
 */
#include "mailbox.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>

#include "registry/error.h"

struct mailbox {
    struct queue q;
    struct event *wake;
    bool closed; /* atomic: posts run at once on the posting thread */
};

static void drain(struct mailbox *mb)
{
    struct queue_node *n = queue_take(&mb->q);
    while (n != NULL) {
        struct queue_node *next = n->next;
        struct mailbox_item *it = queue_entry(n, struct mailbox_item, node);
        it->run(it);
        n = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain(arg);
}

int mailbox_new(struct event_base *base, struct mailbox **out)
{
    struct mailbox *mb = calloc(1, sizeof(*mb));
    if (mb == NULL)
        return REG_ENOMEM;
    queue_init(&mb->q);
    mb->wake = event_new(base, -1, 0, on_wake, mb);
    if (mb->wake == NULL) {
        queue_fini(&mb->q);
        free(mb);
        return REG_ENOMEM;
    }
    *out = mb;
    return 0;
}

void mailbox_post(struct mailbox *mb, struct mailbox_item *it)
{
    if (__atomic_load_n(&mb->closed, __ATOMIC_ACQUIRE)) {
        it->run(it);
        return;
    }
    if (queue_push(&mb->q, &it->node))
        event_active(mb->wake, EV_READ, 0);
}

void mailbox_close(struct mailbox *mb)
{
    __atomic_store_n(&mb->closed, true, __ATOMIC_RELEASE);
    drain(mb);
}

void mailbox_free(struct mailbox *mb)
{
    if (mb == NULL)
        return;
    drain(mb);
    event_free(mb->wake);
    queue_fini(&mb->q);
    free(mb);
}
