/*
 * tls.h — registryd's TLS material: the CA, this server's certificate and
 * key, loaded into OpenSSL contexts for every TLS connection registryd makes
 * or accepts.
 *
 * Three contexts, built from the same three files:
 *   - the API context (HTTPS listener): asks for a client certificate, and
 *     requires one signed by the CA when tls_verify_incoming;
 *   - the peer-server context (the raft port's proxy, accepting side):
 *     requires a certificate signed by the CA, whose name the caller checks
 *     with tls_peer_is_server();
 *   - the client context (every connection a server opens to another:
 *     raft, forwarding, formation, liveness): presents this server's
 *     certificate and verifies the other's against the CA and the name
 *     server.DATACENTER.DOMAIN (Consul's verify_server_hostname).
 *
 * The contexts are global and shared by every thread. tls_reload() (SIGHUP)
 * builds new ones from the files and swaps them in: connections already
 * open keep the context they started with (OpenSSL counts references);
 * new ones get the new material. Getters return a reference the caller
 * releases with SSL_CTX_free().
 */
#ifndef REGISTRYD_TLS_H
#define REGISTRYD_TLS_H

#include "common.h"

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct tls_opts {
    const char *ca_file, *cert_file, *key_file; /* all NULL: TLS off */
    bool verify_incoming;
    const char *min_version;                    /* "TLSv1_2"/"tls12" or "TLSv1_3"/"tls13" */
    const char *datacenter;                     /* server name: server.DC.DOMAIN */
    const char *domain;                         /* with or without its trailing dot */
};

/* Load the files and build the contexts (copies what it keeps). With no
 * files, TLS stays off and returns 0. REG_ECONFIG with a one-line message
 * naming the file and OpenSSL's reason. */
int tls_start(const struct tls_opts *o, char *err, size_t errlen) REG_MUSTCHECK;

/* Read the files again; on success the new contexts serve new connections.
 * On failure the old ones stay (REG_ECONFIG and why). */
int tls_reload(char *err, size_t errlen) REG_MUSTCHECK;

/* Free the contexts (connections still open keep theirs). */
void tls_stop(void);

/* Whether TLS material is configured (then server-to-server traffic is
 * mutual TLS only). */
bool tls_enabled(void);

/* New references (SSL_CTX_free them), or NULL when TLS is off. */
SSL_CTX *tls_api_ctx(void);
SSL_CTX *tls_peer_server_ctx(void);
SSL_CTX *tls_client_ctx(void);

/* A new client-side SSL from tls_client_ctx() that verifies the peer's
 * name is server.DC.DOMAIN (and sends it as SNI). NULL if TLS is off or
 * out of memory. */
SSL *tls_client_ssl(void);

/* The name every server's certificate carries: "server.dc1.registry". */
const char *tls_server_name(void);

/* After a completed handshake: did the peer present a certificate that
 * the CA signed and that names server.DC.DOMAIN? */
bool tls_peer_is_server(SSL *ssl);

#endif
