/*
 * common.c — see common.h.
 */
#include "common.h"

#include <event2/event.h>
#include <event2/http.h>

#include "log.h"

static void free_evcon_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evhttp_connection_free(arg);
}

void common_free_evcon_later(struct event_base *base, struct evhttp_connection *evcon)
{
    if (evcon == NULL)
        return;
    if (event_base_once(base, -1, EV_TIMEOUT, free_evcon_cb, evcon, NULL) != 0) {
        log_warn("common", "msg=\"cannot defer a connection's free; leaking it\"");
    }
}

const char *common_method_name(int t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}
