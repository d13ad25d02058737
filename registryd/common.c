/*
 * common.c — see common.h.
 */
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "log.h"
#include "tls.h"

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

struct evhttp_connection *common_server_evcon_new(struct event_base *base, const char *host,
                                                  unsigned short port)
{
    if (!tls_enabled())
        return evhttp_connection_base_new(base, NULL, host, port);
    SSL *ssl = tls_client_ssl(); /* verifies server.DC.DOMAIN, presents ours */
    if (ssl == NULL)
        return NULL;
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    /* a server closing an idle connection without close_notify is an end,
     * not an error */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    struct evhttp_connection *evcon =
        evhttp_connection_base_bufferevent_new(base, NULL, bev, host, port);
    if (evcon == NULL)
        bufferevent_free(bev); /* and the SSL with it */
    return evcon;
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

void common_listener_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Before joining a SO_REUSEPORT group, make sure there is none: another
 * process (of this user) already serving dns_addr would otherwise share
 * its traffic with us silently. A plain bind fails with EADDRINUSE when
 * anyone holds the address (TCP: anyone listening; SO_REUSEADDR so that
 * connections in TIME_WAIT from a previous run do not count). */
int common_addr_free(const struct sockaddr_storage *ss, int sslen, int type)
{
    int one = 1;
    evutil_socket_t fd = socket(ss->ss_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = (type == SOCK_STREAM &&
              setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) ||
                     bind(fd, (const struct sockaddr *)ss, (socklen_t)sslen) != 0
                 ? -1
                 : 0;
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

struct event_base *common_front_end_base_new(void)
{
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

void common_base_free(struct event_base *base)
{
    if (base == NULL)
        return;
    /* 1: nothing left pending or active */
    for (int turn = 0; turn < 8 && event_base_loop(base, EVLOOP_NONBLOCK) == 0; turn++)
        ;
    event_base_free(base);
}

json_t *common_kvlist_object(const char *lines)
{
    json_t *o = json_object();
    for (const char *p = lines; p && *p && o;) {
        size_t n = strcspn(p, "\n");
        const char *colon = memchr(p, ':', n);
        char *k = colon ? strndup(p, (size_t)(colon - p)) : NULL;
        if (k)
            json_object_set_new(o, k, json_stringn(colon + 1, n - (size_t)(colon - p) - 1));
        free(k);
        p += n + (p[n] == '\n');
    }
    return o;
}
