/*
 * probe_udp.c — see probe_udp.h. One non-blocking connected UDP socket and
 * one event (read or timeout) per probe.
 */
#include "probe_udp.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "check_target.h"
#include "config.h"

struct probe_udp {
    evutil_socket_t fd;
    struct event *ev;
    probe_udp_cb cb;
    void *arg;
    char addr[300];
};

void probe_udp_free(struct probe_udp *u)
{
    if (u == NULL)
        return;
    if (u->ev)
        event_free(u->ev);
    if (u->fd >= 0)
        close(u->fd);
    free(u);
}

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
    struct probe_udp *u = arg;
    char out[400], buf[512];
    if (what & EV_TIMEOUT) { /* no answer and no ICMP error: the port is open */
        snprintf(out, sizeof(out), "UDP connect %s: Success", u->addr);
        u->cb(u->arg, true, out);
        return;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n >= 0) {
        snprintf(out, sizeof(out), "UDP connect %s: Success", u->addr);
        u->cb(u->arg, true, out);
    } else if (errno == EAGAIN || errno == EINTR) {
        return; /* spurious; the event stays armed (persist) */
    } else {
        snprintf(out, sizeof(out), "read udp %s: %s", u->addr, strerror(errno));
        u->cb(u->arg, false, out);
    }
}

int probe_udp_start(struct event_base *base, const char *addr, uint64_t timeout_ms,
                    probe_udp_cb cb, void *arg, struct probe_udp **out, char *err, size_t errlen)
{
    char host[256], portstr[8];
    unsigned short port;
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = 0}, *ai = NULL;
    *out = NULL;
    if (addr == NULL || conf_split_hostport(addr, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "UDP %s: not HOST:PORT", addr ? addr : "");
        return -1;
    }
    snprintf(portstr, sizeof(portstr), "%u", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai); /* blocking for names, as TCP probes */
    if (gai != 0 || ai == NULL) {
        snprintf(err, errlen, "UDP %s: %s", addr, gai_strerror(gai));
        return -1;
    }
    char why[200];
    if (check_target_sockaddr(ai->ai_addr, why, sizeof(why)) != 0) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "UDP %s: refused: %s", addr, why);
        return -1;
    }
    struct probe_udp *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    u->cb = cb;
    u->arg = arg;
    snprintf(u->addr, sizeof(u->addr), "%s", addr);
    u->fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = u->fd < 0 ? -1 : connect(u->fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    static const char ping[] = "ping"; /* any payload: services may ignore it */
    if (rc != 0 || send(u->fd, ping, sizeof(ping) - 1, 0) < 0) {
        snprintf(err, errlen, "dial udp %s: %s", addr, strerror(errno));
        probe_udp_free(u);
        return -1;
    }
    u->ev = event_new(base, u->fd, EV_READ | EV_PERSIST, on_udp, u);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (u->ev == NULL || event_add(u->ev, &tv) != 0) {
        snprintf(err, errlen, "out of memory");
        probe_udp_free(u);
        return -1;
    }
    *out = u;
    return 0;
}
