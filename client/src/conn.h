/*
 * conn.h — libregistry's one way to open, use and close a connection: TCP,
 * or TLS over it (OpenSSL), on a non-blocking socket where every wait is a
 * poll() bounded by the caller's deadline and by this thread's cancel fd
 * (internal.h: reg__set_cancel_fd).
 *
 * Used by client.c for every request to a registry server, and by
 * registryctl (cli/http_call.c, the snapshot transfer) so that there is one
 * TLS implementation in the tree.
 *
 * Private to this source tree: not installed, hidden in the shared library.
 */
#ifndef REGISTRY_CONN_H
#define REGISTRY_CONN_H

#include <stdbool.h>
#include <stddef.h>

/* TLS settings shared by every connection of a client: an SSL_CTX (which
 * OpenSSL lets many threads use at once once it is configured) and the name
 * to verify. Reference-counted so that a connection in flight keeps the one
 * it started with when the client's settings change. */
struct reg__tls;

/*
 * Build TLS settings. ca_file: PEM file of trusted CAs (NULL: the system's
 * trust store); cert_file and key_file: a client certificate and its key
 * (both or neither); server_name: the name the server's certificate must
 * carry (NULL: the host of each address). Borrowed; copied as needed.
 * Returns 0 and *out (release with reg__tls_release), or REG_EINVAL
 * (unreadable or bad file, key that does not match the certificate, cert
 * without key) or REG_ENOMEM, with a one-line reason in why.
 */
int reg__tls_new(struct reg__tls **out, const char *ca_file, const char *cert_file,
                 const char *key_file, const char *server_name, char *why, size_t whylen);
/* Take one more reference (NULL: no-op); returns t. */
struct reg__tls *reg__tls_ref(struct reg__tls *t);
/* Drop a reference; the last one frees. NULL is a no-op. */
void reg__tls_release(struct reg__tls *t);

/* One open connection (plain when ssl is NULL). */
struct reg__conn {
    int fd;
    void *ssl;      /* SSL *, or NULL */
    bool fatal;     /* TLS failed: no close_notify on close */
    char peer[280]; /* "HOST:PORT", for messages */
};

/* Monotonic milliseconds: the clock every deadline here is on. */
long long reg__now_ms(void);

/*
 * Connect to host:port (a name is resolved with getaddrinfo; every address
 * is tried in turn) and, with tls, do the handshake, verifying the server's
 * chain and name; all before deadline. Returns 0 with *cn open, or
 * REG_ECONNECT (refused, unreachable, handshake or verification failed:
 * nothing was sent), REG_ETIMEDOUT (the connect or the handshake took too
 * long), REG_ESHUTDOWN (cancelled) or REG_ENOMEM, with a one-line
 * reason in why ("TLS handshake with 127.0.0.1:8501 failed: certificate
 * verify failed: unable to get local issuer certificate").
 */
int reg__conn_open(struct reg__conn *cn, const char *host, const char *port, struct reg__tls *tls,
                   long long deadline, char *why, size_t whylen);

/* Send all len bytes before deadline: 0, REG_ETIMEDOUT, REG_ESHUTDOWN or
 * REG_EIO (why says what the connection or TLS said). */
int reg__conn_send(struct reg__conn *cn, const void *buf, size_t len, long long deadline, char *why,
                   size_t whylen);

/* Receive up to cap bytes (at least one, unless the peer closed: then *got
 * is 0) before deadline: 0, REG_ETIMEDOUT, REG_ESHUTDOWN or REG_EIO. */
int reg__conn_recv(struct reg__conn *cn, void *buf, size_t cap, size_t *got, long long deadline,
                   char *why, size_t whylen);

/* Close (a TLS connection says close_notify first, without waiting). */
void reg__conn_close(struct reg__conn *cn);

/* The status of an answer whose first len bytes are at p ("HTTP/1.x NNN"
 * then a space, CR or the end): 100 to 999, or -1. No sscanf: its %d
 * overflows (undefined) on a long number, and it reads to a NUL. */
int reg__status_code(const char *p, size_t len);

#endif
