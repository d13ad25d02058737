/*
 * formation.h — how a server becomes part of a cluster, on a thread of its
 * own while the front end already serves.
 *
 * With --bootstrap-expect N, servers say hello to each other
 * (PUT /v1/internal/raft/hello): a hello carries the servers the sender
 * knows and is answered with the servers the receiver knows, and each side
 * keeps what it learns (cluster_learn). A server asks its --join servers and
 * every server it has learned of, so in any connected join graph every
 * server learns all N, and all N bootstrap the same configuration (sorted
 * by id). A server that hears of a configuration already bootstrapped
 * adopts it if it is listed there, and joins it otherwise; a hello that
 * shows more than N servers stops formation with an error (never two
 * clusters from one graph).
 *
 * With --join alone a server starts raft empty and asks a member to add it
 * (PUT /v1/internal/raft/join, forwarded to the leader); a server that has
 * raft state already just restarts with it.
 *
 * Addresses (--join, announced ones) are HOST:PORT of the servers' API:
 * with TLS configured, their HTTPS listeners, spoken to with mutual TLS
 * (an http:// or https:// prefix given to --join is ignored: the scheme
 * follows this server's TLS setting, never plain HTTP when TLS is on).
 */
#ifndef REGISTRYD_FORMATION_H
#define REGISTRYD_FORMATION_H

#include "common.h"

#include <stddef.h>

#include <jansson.h>

struct cluster;
struct formation;

struct formation_options {
    struct cluster *cluster;
    const char *http_addr;     /* ours, told to the others */
    const char *self_http;     /* where we reach our own front end (loopback if wildcard) */
    unsigned bootstrap_expect; /* > 1: form a new cluster of that many */
    const char *join;          /* API addresses, comma-separated */
    /* With TLS (all three set), every request goes over HTTPS with this
     * server's certificate and verifies the other's name server.DC.DOMAIN
     * (tls_server_name()); the addresses are then HTTPS ones. NULL: HTTP. */
    const char *tls_ca_file, *tls_cert_file, *tls_key_file;
};

int formation_start(const struct formation_options *opt, struct formation **out, char *err,
                    size_t errlen) REG_MUSTCHECK;
/*
 * The receiving side of a hello, for the HTTP layer: learn the sender and
 * what it knows from `body` (borrowed), and answer with this server, what
 * it knows and, once raft runs, its configuration (*out, new reference).
 * REG_EINVAL with a message in err for a malformed hello.
 */
int formation_hello_answer(struct cluster *c, const json_t *body, json_t **out, char *err,
                           size_t errlen);

/* Stop (abandoning what is not done) and free. NULL is a no-op. */
void formation_free(struct formation *f);

#endif
