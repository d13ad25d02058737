/*
 * hostport.h — the one parser of "HOST:PORT" / "[IPv6]:PORT" addresses,
 * shared by libregistry (its server list) and registryd (listen addresses,
 * --join, announced addresses), so that both accept exactly the same forms.
 *
 * Private to this source tree: not installed, hidden in the shared library.
 */
#ifndef REGISTRY_HOSTPORT_H
#define REGISTRY_HOSTPORT_H

#include <stddef.h>

/* Split the len bytes at s (no terminator needed): a non-empty host (an
 * IPv6 address only in brackets, which are removed) of fewer than hostlen
 * bytes, then ':' and a port of 1-5 digits in 1..65535. Returns 0, or
 * REG_EINVAL (host and *port untouched). */
int reg__split_hostport(const char *s, size_t len, char *host, size_t hostlen,
                        unsigned short *port);

#endif
