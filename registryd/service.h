/*
 * service.h — registryd as a systemd service: sd_notify readiness
 * (Type=notify), STOPPING, and watchdog pings from the main loop. Without
 * libsystemd (the REGISTRY_SYSTEMD build option off or the library absent)
 * every function is a no-op, so the daemon builds and runs anywhere.
 */
#ifndef REGISTRYD_SERVICE_H
#define REGISTRYD_SERVICE_H

#include "common.h"

struct event_base;
struct service;

/* Start watchdog pings on base if the service manager asked for them
 * (WATCHDOG_USEC); *out is NULL otherwise. Returns 0 or REG_ENOMEM. */
int service_start(struct event_base *base, struct service **out) REG_MUSTCHECK;
void service_free(struct service *s);

/* READY=1 (with a status line), and STOPPING=1. */
void service_ready(const char *status);
void service_stopping(void);

#endif
