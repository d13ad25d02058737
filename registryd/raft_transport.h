/*
 * raft_transport.h — registryd's own libraft transport (struct
 * raft_uv_transport): the raft port, and the connections this server opens
 * to the others' raft ports. It replaces libraft's stock TCP transport so
 * that no byte from an unauthenticated or malformed peer ever reaches
 * libraft.
 *
 * Every connection, before libraft sees it:
 *   - is authenticated: mutual TLS (tls.h, the peer must be
 *     server.DC.DOMAIN) when TLS is configured, else an HMAC-SHA256
 *     challenge-response in both directions over the cluster key, else
 *     nothing (the port must then be firewalled);
 *   - carries libraft's handshake (protocol, server id, address), read here
 *     with every length bounded and under a deadline; the id must be
 *     allowed by the caller (a member of the configuration).
 * With TLS, libraft is given one end of a socketpair and the bytes are
 * proxied through the TLS session; without, the TCP stream itself.
 *
 * Threads: everything runs on the raft thread's uv loop.
 */
#ifndef REGISTRYD_RAFT_TRANSPORT_H
#define REGISTRYD_RAFT_TRANSPORT_H

#include "common.h"

#include <stdbool.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

struct transport_options {
    /* Shared secret (>= 32 chars; copied), used when TLS is off. NULL: no
     * HMAC exchange. */
    const char *cluster_key;
    /* May a server with this id talk to us? Called on the raft thread for
     * each authenticated incoming connection. NULL: any id. */
    bool (*allow)(void *arg, uint64_t id);
    void *allow_arg;
    /* A socket already bound to the raft address (held since the port was
     * chosen, so that nothing else could take it), listened on instead of
     * binding anew: *bound_fd, set to -1 once the listener has it (until
     * then the caller owns it). NULL or -1: bind the address. */
    int *bound_fd;
};

/* Fill t's methods and state (t is borrowed and must outlive
 * transport_fini). TLS is used when tls_enabled() at this moment.
 * 0 or REG_ENOMEM. */
int transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                   const struct transport_options *o) REG_MUSTCHECK;

/* Free what transport_init allocated; after libraft closed the transport
 * (its close callback fired), or if libraft never used it. */
void transport_fini(struct raft_uv_transport *t);

#endif
