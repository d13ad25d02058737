/*
 * leave.c — see leave.h.
 */
#include "leave.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "cluster_link.h"
#include "duration.h"
#include "log.h"
#include "registry/error.h"

#define LEAVE_RETRY_MS 1000  /* a pending attempt unanswered this long: another */
#define LEAVE_AGAIN_MS 250   /* after a failed attempt */
#define LEAVE_HANDED_MS 150  /* after a hand-over: the status has caught up (polled every 50 ms) */

struct leave {
    struct leave **list; /* its owner's list */
    struct leave *prev, *next;
    struct leave_via via;
    leave_done_cb *done; /* NULL once called */
    void *done_arg;
    struct event *again;
    uint64_t self, until_ms;
    int refs;         /* the leave until done, and each attempt not yet called back */
    bool handed_over; /* leading, it has tried to hand leadership over */
    char why[320];    /* the last failure */
};

static void leave_free(struct leave *lv)
{
    if (lv->prev)
        lv->prev->next = lv->next;
    else
        *lv->list = lv->next;
    if (lv->next)
        lv->next->prev = lv->prev;
    if (lv->again)
        event_free(lv->again);
    free(lv);
}

static void unref(struct leave *lv)
{
    if (--lv->refs == 0)
        leave_free(lv);
}

static void finish(struct leave *lv, int status)
{
    leave_done_cb *done = lv->done;
    if (done == NULL)
        return;
    lv->done = NULL;
    event_del(lv->again);
    if (status != 0 && !lv->why[0])
        snprintf(lv->why, sizeof(lv->why), "%s", reg_strerror(status));
    done(lv->done_arg, status, status == 0 ? "" : lv->why);
    unref(lv); /* the leave's own */
}

/* The next attempt after delay_ms, or the end with status once the
 * deadline has passed. */
static void next_attempt(struct leave *lv, int status, uint64_t delay_ms)
{
    if (lv->done == NULL)
        return;
    uint64_t now = mono_ms();
    if (now >= lv->until_ms) {
        finish(lv, status);
        return;
    }
    uint64_t left = lv->until_ms - now;
    if (delay_ms > left) /* on_again ends it at the deadline */
        delay_ms = left;
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)(delay_ms % 1000) * 1000};
    if (event_add(lv->again, &tv) != 0)
        finish(lv, REG_ENOMEM);
}

static void failed(struct leave *lv, int status, const char *why)
{
    if (lv->done == NULL)
        return;
    if (why != lv->why)
        snprintf(lv->why, sizeof(lv->why), "%s", why);
    next_attempt(lv, status, LEAVE_AGAIN_MS);
}

static void removed(void *arg, int status)
{
    struct leave *lv = arg;
    if (status == 0)
        finish(lv, 0);
    else if (status == REG_EINVAL) /* the last voter: final */
        finish(lv, status);
    else
        failed(lv, status, reg_strerror(status));
    unref(lv);
}

/* Leadership handed over (or not): the next attempt looks who leads. */
static void handed_over(void *arg, int status)
{
    struct leave *lv = arg;
    if (lv->done != NULL) {
        if (status == 0)
            log_info("cluster", "msg=\"leaving: leadership handed over\"");
        else
            log_info("cluster", "msg=\"leaving: no voter took leadership; removing this server "
                                "as the leader\" error=\"%s\"",
                     reg_strerror(status));
        next_attempt(lv, status, LEAVE_HANDED_MS);
    }
    unref(lv);
}

static void answered(void *arg, struct evhttp_request *resp, int failure)
{
    struct leave *lv = arg;
    int code = failure ? 0 : evhttp_request_get_response_code(resp);
    if (code == 200 || code == 404) { /* 404: out of the configuration already */
        finish(lv, 0);
    } else {
        char why[320];
        snprintf(why, sizeof(why), "%s",
                 failure == REG_ELEADERLOST ? "the former leader stopped answering"
                                            : "the leader did not answer");
        struct evbuffer *in = resp ? evhttp_request_get_input_buffer(resp) : NULL;
        if (code != 0) {
            char text[280] = "";
            ev_ssize_t n = in ? evbuffer_copyout(in, text, sizeof(text) - 1) : 0;
            text[n > 0 ? (size_t)n : 0] = '\0';
            text[strcspn(text, "\r\n")] = '\0';
            snprintf(why, sizeof(why), "the leader answered %d: %s", code, text);
        }
        failed(lv, code ? REG_ESERVER : REG_ECONNECT, why);
    }
    unref(lv);
}

/* A change's callback ends this wait; should none come, the deadline does. */
static void await_change(struct leave *lv)
{
    uint64_t now = mono_ms();
    uint64_t left = lv->until_ms > now ? lv->until_ms - now : 0;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    event_add(lv->again, &tv);
}

static void attempt(struct leave *lv)
{
    struct cluster_status st;
    cluster_get_status(lv->via.cluster, &st);
    /* alone (or the last), or in no cluster yet (one still forming, with
     * no leader): nothing to leave. Following a leader, it asks it whatever
     * its status says: a server that just joined may not have the
     * configuration that lists the others yet. */
    if (st.n_servers <= 1 && (st.is_leader || !st.known_leader)) {
        finish(lv, 0);
        return;
    }
    if (st.is_leader && !lv->handed_over) {
        lv->handed_over = true;
        lv->refs++;
        await_change(lv);
        lv->via.change(lv->via.ctx, true, 0, handed_over, lv);
        return;
    }
    if (st.is_leader) {
        if (!cluster_removal_keeps_quorum(&st, lv->self, lv->why, sizeof(lv->why))) {
            finish(lv, REG_EINVAL); /* final: as DELETE /v1/operator/raft/peer's 409 */
            return;
        }
        lv->refs++;
        await_change(lv);
        lv->via.change(lv->via.ctx, false, lv->self, removed, lv);
        return;
    }
    char uri[96];
    snprintf(uri, sizeof(uri), "/v1/operator/raft/peer?id=%llu", (unsigned long long)lv->self);
    lv->refs += 2; /* the attempt's, and ours across it (it may answer at once) */
    int rc = cluster_link_request(lv->via.link, EVHTTP_REQ_DELETE, uri, answered, lv);
    if (rc != 0) {
        lv->refs--;
        failed(lv, rc, rc == REG_ENOMEM ? "out of memory" : "no leader known");
    } else if (lv->done != NULL) {
        /* this one may still come back; either answer will do */
        next_attempt(lv, REG_ETIMEDOUT, LEAVE_RETRY_MS);
    }
    unref(lv);
}

static void on_again(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct leave *lv = arg;
    if (lv->done == NULL)
        return;
    if (mono_ms() >= lv->until_ms) {
        if (!lv->why[0])
            snprintf(lv->why, sizeof(lv->why), "no answer in time");
        finish(lv, REG_ETIMEDOUT);
        return;
    }
    attempt(lv);
}

int leave_start(struct event_base *base, const struct leave_via *via, uint64_t within_ms,
                leave_done_cb *done, void *arg, struct leave **list)
{
    struct leave *lv = calloc(1, sizeof(*lv));
    if (lv == NULL || (lv->again = evtimer_new(base, on_again, lv)) == NULL) {
        free(lv);
        return REG_ENOMEM;
    }
    const char *raft;
    cluster_self(via->cluster, &lv->self, &raft);
    lv->via = *via;
    lv->done = done;
    lv->done_arg = arg;
    lv->refs = 1;
    lv->until_ms = mono_ms() + within_ms;
    lv->list = list;
    lv->next = *list;
    if (lv->next)
        lv->next->prev = lv;
    *list = lv;
    struct timeval now = {0, 0};
    if (event_add(lv->again, &now) != 0) {
        lv->done = NULL;
        leave_free(lv);
        return REG_ENOMEM;
    }
    return 0;
}

void leave_free_all(struct leave **list)
{
    while (*list != NULL) {
        struct leave *lv = *list;
        if (lv->done != NULL) {
            snprintf(lv->why, sizeof(lv->why), "the server is stopping");
            lv->refs++; /* finish drops the leave's own: the struct stays for below */
            finish(lv, REG_ESHUTDOWN);
        }
        leave_free(lv);
    }
}
