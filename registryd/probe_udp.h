/*
 * probe_udp.h — the UDP check of Consul: send a datagram to HOST:PORT on a
 * connected socket and wait up to the timeout. A reply, or silence until
 * the timeout, is passing (UDP services need not answer); an ICMP error
 * (port unreachable: ECONNREFUSED on the socket) is critical.
 * Used by probe.c for PROBE_UDP; runs on the checker's loop.
 */
#ifndef REGISTRYD_PROBE_UDP_H
#define REGISTRYD_PROBE_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct probe_udp;

/* passing: true/false; output: NUL-terminated, borrowed for the call. */
typedef void (*probe_udp_cb)(void *arg, bool passing, const char *output);

/* Start; 0 and *out, or -1 with the reason in err (nothing started). The
 * callback runs once, later, unless probe_udp_free comes first. */
int probe_udp_start(struct event_base *base, const char *addr, uint64_t timeout_ms,
                    probe_udp_cb cb, void *arg, struct probe_udp **out, char *err, size_t errlen);
/* Free (cancels a pending callback). NULL is a no-op. */
void probe_udp_free(struct probe_udp *u);

#endif
