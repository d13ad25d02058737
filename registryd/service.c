/*
 * service.c — see service.h.
 */
#include "service.h"

#include <stdlib.h>

#include <event2/event.h>

#include "log.h"
#include "registry/error.h"

#ifdef REGISTRY_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

struct service {
    struct event *watchdog;
};

#ifdef REGISTRY_HAVE_SYSTEMD
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1"); /* the loop turns: the daemon is alive */
}
#endif

int service_start(struct event_base *base, struct service **out)
{
    *out = NULL;
#ifdef REGISTRY_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    struct service *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return REG_ENOMEM;
    s->watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, s);
    uint64_t half = usec / 2;
    struct timeval tv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
    if (s->watchdog == NULL || event_add(s->watchdog, &tv) != 0) {
        service_free(s);
        return REG_ENOMEM;
    }
    log_info("main", "msg=\"watchdog on\" interval_ms=%llu", (unsigned long long)(half / 1000));
    *out = s;
#else
    (void)base;
#endif
    return 0;
}

void service_free(struct service *s)
{
    if (s == NULL)
        return;
    if (s->watchdog)
        event_free(s->watchdog);
    free(s);
}

void service_ready(const char *status)
{
#ifdef REGISTRY_HAVE_SYSTEMD
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
#else
    (void)status;
#endif
}

void service_stopping(void)
{
#ifdef REGISTRY_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
}
