/*
 * queue.h — the one cross-thread hand-off: an intrusive FIFO under a mutex.
 * Producers on any thread push; the consumer takes the whole list at once
 * and walks it without the lock. The wake-up stays with the consumer's loop
 * (event_active for libevent, uv_async_send for libuv): push says whether the
 * queue was empty, so a producer need not wake a consumer that is already
 * due to drain it.
 *
 * A struct that travels embeds a struct queue_node and is found again with
 * queue_entry(node, type, member).
 */
#ifndef REGISTRYD_QUEUE_H
#define REGISTRYD_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct queue_node {
    struct queue_node *next;
};

struct queue {
    pthread_mutex_t lock;
    struct queue_node *head, **tail;
};

#define queue_entry(node, type, member) ((type *)((char *)(node) - offsetof(type, member)))

static inline void queue_init(struct queue *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = NULL;
    q->tail = &q->head;
}

static inline void queue_fini(struct queue *q)
{
    pthread_mutex_destroy(&q->lock);
}

/* Append n (any thread). Returns true if the queue was empty. */
static inline bool queue_push(struct queue *q, struct queue_node *n)
{
    n->next = NULL;
    pthread_mutex_lock(&q->lock);
    bool was_empty = q->head == NULL;
    *q->tail = n;
    q->tail = &n->next;
    pthread_mutex_unlock(&q->lock);
    return was_empty;
}

/* Take everything queued, oldest first (NULL if empty). */
static inline struct queue_node *queue_take(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    struct queue_node *all = q->head;
    q->head = NULL;
    q->tail = &q->head;
    pthread_mutex_unlock(&q->lock);
    return all;
}

#endif
