/*
 * http_guard.h — the HTTP listener under attack: accept back-off when file
 * descriptors run out, and deadlines for a complete request head and body
 * that a trickle of bytes cannot extend (slowloris). The idle timeout of
 * evhttp still covers connections that send nothing.
 *
 * How: every accepted connection's bufferevent is made here
 * (evhttp_set_bevcb; a plain socket bufferevent like evhttp's own) with a
 * callback on its input buffer that watches the bytes in: the first byte of
 * a request starts the head deadline, the blank line that ends the head
 * starts the body deadline, and the request reaching its handler
 * (http_guard_request_read) ends both. One timer sweeps the deadlines; one
 * that has passed shuts the socket down, and evhttp frees the connection as
 * for any client that went away. The guard holds a reference on each
 * bufferevent, dropped once evhttp has let go of it (its callbacks cleared);
 * the socket closes then, within one sweep.
 *
 * HTTPS: a listener attached with a TLS context getter gets a server-side
 * bufferevent_openssl per connection, its SSL made from the context the
 * getter returns at accept time (so certificates reloaded on SIGHUP serve
 * new connections while open ones keep theirs). The guard watches the
 * decrypted bytes; a TLS connection's head deadline starts at accept, so
 * that a handshake trickled byte by byte is cut like a trickled head.
 *
 * Connections per client: every accepted connection is counted under its
 * peer's IP address (IPv4-mapped IPv6 as IPv4) until it closes, across every
 * listener attached to the guard (attach each HTTP/HTTPS listener to the
 * same guard so that one cap covers them all). One beyond
 * max_conns_per_client is shut as soon as accepted: on the same loop turn,
 * before anything it sent is read (what it sent is discarded), so a client
 * cannot starve others by holding thousands of idle connections. The count
 * drops when the guard sees evhttp let go of a connection: at the next
 * sweep, or at once for a client at its cap (its closed connections are
 * looked for before a new one is refused, so quick open-request-close
 * clients are judged by what they really hold open). Counts and refusals go
 * to metrics_http_conns().
 *
 * Threads: a guard runs on its event_base's thread only (each HTTP worker
 * has its own); the per-client counts are shared by every worker's guard
 * under a mutex (http_guard_clients), and a worker at a client's cap
 * reaps that client's connections closed unused on any worker.
 */
#ifndef REGISTRYD_HTTP_GUARD_H
#define REGISTRYD_HTTP_GUARD_H

#include <stdint.h>

#include "common.h"

struct evhttp;
struct evhttp_request;
struct evconnlistener;
struct event_base;
struct ssl_ctx_st;
struct http_guard;

struct http_guard_clients;

struct http_guard_options {
    struct event_base *base;  /* borrowed */
    /* Per-client counts shared by the guards of every HTTP worker thread
     * (borrowed, outliving them); NULL: the guard keeps its own. */
    struct http_guard_clients *clients;
    uint64_t head_timeout_ms; /* first byte to end of head; 0: none */
    uint64_t body_timeout_ms; /* end of head to complete body; 0: none */
    uint64_t accept_pause_ms; /* accepting pauses this long on EMFILE/ENFILE */
    /* Body bytes a request may send: PUT /v1/snapshot snapshot_body_max,
     * any other body_max (evhttp's own cap is global, so it is set to the
     * larger; this keeps the smaller for every other route). 0: no limit. */
    uint64_t body_max, snapshot_body_max;
    unsigned max_conns_per_client; /* per client IP address; 0: no limit */
    const char *spool_dir; /* where snapshot bodies are written (borrowed) */
};

/* A request body the guard wrote to a file (http_spool.h): fd -1 when the
 * body is in evhttp's input buffer as usual. */
struct http_body_file {
    int fd;         /* owned by whoever took it */
    uint64_t len;   /* bytes */
    int write_err;  /* errno of a failed write (the file is incomplete), or 0 */
};

/* The per-client counts several guards share (any thread; a mutex).
 * 0 or REG_ENOMEM. Free after every guard that uses it. */
int http_guard_clients_new(struct http_guard_clients **out) REG_MUSTCHECK;
void http_guard_clients_free(struct http_guard_clients *t);

/* Returns 0 or REG_ENOMEM. */
int http_guard_new(const struct http_guard_options *opt, struct http_guard **out);
/* Call after evhttp_free (which frees the connections first). NULL: no-op. */
void http_guard_free(struct http_guard *g);

/* A TLS context getter: a new reference (SSL_CTX_free'd by the guard) to
 * the context new connections use, or NULL. */
#define GUARD_FRONTS 4
typedef struct ssl_ctx_st *(*http_guard_tls_ctx_fn)(void);

/* Guard http's connections and the listener it accepts them on (both
 * borrowed; the guard must outlive them). tls_ctx NULL: plain HTTP; else
 * every connection is TLS (one whose SSL cannot be made, out of memory or no
 * context, is left to evhttp, which makes a plain one: the HTTPS front end
 * must refuse requests that arrive without an SSL). One guard serves up to
 * GUARD_FRONTS evhttp instances (HTTP and HTTPS). Returns 0 or REG_ENOMEM. */
int http_guard_attach(struct http_guard *g, struct evhttp *http, struct evconnlistener *l,
                      http_guard_tls_ctx_fn tls_ctx) REG_MUSTCHECK;

/* evhttp has one close callback per connection, and the guard holds it
 * (it lets go of a connection the moment evhttp frees it, rather than
 * finding out by looking at every connection): a handler that must know
 * when its client goes (a streamed answer) sets cb here instead, for the
 * connection of a request the guard has seen read (cb NULL: none). cb runs
 * as evhttp frees the connection. Returns 0, or REG_ENOTFOUND (not one of
 * the guard's: use evhttp_connection_set_closecb). */
int http_guard_on_close(struct http_guard *g, struct evhttp_connection *evcon,
                        void (*cb)(struct evhttp_connection *, void *), void *arg);
/* The request has been read in full (its handler runs): its deadlines end.
 * *body gets the file its body was written to, if it was (the caller owns
 * it then), else fd -1. */
void http_guard_request_read(struct http_guard *g, struct evhttp_request *req,
                             struct http_body_file *body);

#endif
