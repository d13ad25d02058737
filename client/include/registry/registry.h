/*
 * registry/registry.h — libregistry, the embeddable client of registryd (and
 * of anything that speaks Consul's /v1 HTTP API).
 *
 * Conventions (the same in every function):
 *   - Functions return 0 or a negative REG_E* code (registry/error.h).
 *   - A failed call leaves a one-line message for the client that made it,
 *     read with reg_client_errmsg(); it stays valid until that thread's next
 *     call on the same client.
 *   - Out-parameters are only written on success. What a function allocates
 *     for the caller is freed by the caller with the function the doc names.
 *   - Handles are opaque. There is no global state; a client may be used from
 *     several threads at once (each call opens its own connection).
 *
 * Dependencies: libc, jansson (for JSON) and OpenSSL (libssl, libcrypto:
 * for https:// servers), nothing else.
 */
#ifndef REGISTRY_REGISTRY_H
#define REGISTRY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct reg_client;

/*
 * Create a client. `addrs` is a comma-separated list of registry servers as
 * HOST:PORT or [IPV6]:PORT, each optionally prefixed with http:// or
 * https://; requests go to the first that answers (failover in order,
 * starting from the last one that worked). NULL means the
 * REGISTRY_HTTP_ADDR environment variable, or "127.0.0.1:8500". A bare
 * HOST:PORT is plain HTTP, unless CONSUL_HTTP_SSL is true (1, t, true, ...,
 * as Consul's api package reads it), which makes every address https, even
 * one written http://.
 *
 * When an address is https, the TLS settings come from the environment:
 * REGISTRY_CACERT (PEM file of trusted CAs; unset: the system's trust
 * store), REGISTRY_CLIENT_CERT and REGISTRY_CLIENT_KEY (a client
 * certificate, for servers that require one), REGISTRY_TLS_SERVER_NAME (the
 * name to verify instead of the address's host), each falling back to
 * Consul's CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY and
 * CONSUL_TLS_SERVER_NAME; reg_client_set_tls() replaces them. The server's
 * certificate is always verified (chain and name).
 *
 * On success *out is a new client, freed with reg_client_free().
 * Errors: REG_EINVAL (malformed address list; TLS files from the
 * environment unreadable or mismatched: the errmsg of a NULL client, i.e.
 * reg_client_errmsg(NULL), says which), REG_ENOMEM.
 */
REG_EXPORT int reg_client_new(struct reg_client **out, const char *addrs);

/* Free a client. NULL is a no-op. No call may be running on it. */
REG_EXPORT void reg_client_free(struct reg_client *c);

/* Per-request timeout in milliseconds (connect, send and receive together),
 * default 10000. A blocking query adds its own wait to this. */
REG_EXPORT int reg_client_set_timeout(struct reg_client *c, int ms);

/* Largest answer accepted, in bytes (at least 4096; default 64 MiB): a
 * larger one fails with REG_ETOOBIG. A whole-registry snapshot may need
 * more. */
REG_EXPORT int reg_client_set_max_response(struct reg_client *c, size_t bytes);

/*
 * Talk TLS to the servers: every address of c not written http:// is
 * https from now on. ca_file: PEM file of the CAs to trust (NULL: the
 * system's trust store); cert_file and key_file: a client certificate
 * (chain) and its key, in PEM, for servers that verify clients (both or
 * neither); server_name: the name the servers' certificates must carry
 * (NULL: the host of each address: a name is checked against the
 * certificate's DNS names and sent as SNI, an IP address against its IP
 * addresses). All borrowed: the files are read now. The server's chain and
 * name are always verified; a failure is REG_ECONNECT with the reason in
 * the errmsg ("TLS handshake with 127.0.0.1:8501 failed: certificate verify
 * failed: ..."). Replaces the settings of reg_client_new and of earlier
 * calls; safe while other threads use c (a request in flight finishes with
 * the settings it started with).
 * Errors: REG_EINVAL (a file missing or unreadable, not PEM, a key that
 * does not match the certificate, cert without key or key without cert:
 * one line in the errmsg), REG_ENOMEM.
 */
REG_EXPORT int reg_client_set_tls(struct reg_client *c, const char *ca_file,
                                  const char *cert_file, const char *key_file,
                                  const char *server_name);

/* Send `?token=` with every request (NULL: none). The string is copied. */
REG_EXPORT int reg_client_set_token(struct reg_client *c, const char *token);

/* The calling thread's last error message on this client ("" if none).
 * Borrowed: valid until this thread's next call on c. */
REG_EXPORT const char *reg_client_errmsg(const struct reg_client *c);

/*
 * One HTTP request. `path` is the path and query, e.g. "/v1/catalog/services".
 * body may be NULL. On a 2xx answer returns 0 and, if resp_body is not NULL,
 * sets *resp_body to a malloc'd, NUL-terminated copy of the body (free() it)
 * and *resp_len to its length. *status gets the HTTP status whenever one was
 * received (also on REG_ESERVER / REG_ENOTFOUND); *index the X-Consul-Index
 * header (0 if absent). status and index may be NULL.
 * Errors: REG_ECONNECT (no server reachable), REG_ETIMEDOUT, REG_EPROTO
 * (malformed answer), REG_ENOTFOUND (404), REG_ESERVER (any other non-2xx;
 * the server's one-line reason is the errmsg), REG_ENOMEM.
 */
REG_EXPORT int reg_client_request(struct reg_client *c, const char *method, const char *path,
                                  const char *body, size_t body_len, int *status,
                                  char **resp_body, size_t *resp_len, uint64_t *index);

/* One instance of a service, as discovery returns it. */
struct reg_instance {
    char *id;
    char *service;
    char *address;   /* the instance's address, or its node's when it has none */
    int port;
    char **tags;     /* ntags strings */
    size_t ntags;
    char **meta;     /* nmeta key/value pairs: meta[2*i] key, meta[2*i+1] value */
    size_t nmeta;
    int weight;      /* Weights.Passing (Weights.Warning when warning) */
    char *status;    /* aggregate of its checks: "passing", "warning" or "critical" */
};

/*
 * Look up the instances of `service` (/v1/health/service/NAME). tag may be
 * NULL; passing_only keeps only instances whose checks all pass. For a
 * blocking query pass the index of a previous answer in wait_index and a
 * duration such as "30s" or "1m30s" in wait (NULL: 5m; else 0 and NULL;
 * REG_EINVAL if wait is not a duration). On success *out is an array of *n
 * instances (free with reg_instances_free) and *index the answer's index
 * (may be NULL).
 */
REG_EXPORT int reg_health_service(struct reg_client *c, const char *service, const char *tag,
                                  bool passing_only, uint64_t wait_index, const char *wait,
                                  struct reg_instance **out, size_t *n, uint64_t *index);

/* Free what reg_health_service returned. NULL is a no-op. */
REG_EXPORT void reg_instances_free(struct reg_instance *list, size_t n);

/* Register an instance: `json` is a body in Consul's register format. */
REG_EXPORT int reg_register_json(struct reg_client *c, const char *json);

/* Deregister the instance with this ID. REG_ENOTFOUND if there is none. */
REG_EXPORT int reg_deregister(struct reg_client *c, const char *service_id);

/*
 * Watchers: keep a service's instance list fresh with blocking queries.
 *
 * A watcher runs its blocking queries on a thread of its own (started by
 * reg_watch_new) and tells the application about every change through
 * `cb(arg, list, n, stale)`: `list` is borrowed for the duration of the call.
 * Errors are retried with exponential backoff (100 ms to 30 s, full jitter);
 * meanwhile the last good list stays in force ("fail static") and the
 * callback is called once with stale = true to say so.
 *
 * Where the callback runs depends on `mode`:
 *   REG_WATCH_THREAD  on the watcher's thread.
 *   REG_WATCH_LOOP    on the application's thread, from reg_watch_dispatch(),
 *                     which the application calls when reg_watch_fd() is
 *                     readable (poll(), select(), or an event_new() in
 *                     libevent). No callback ever runs on another thread.
 */
struct reg_watch;
typedef void (*reg_watch_cb)(void *arg, const struct reg_instance *list, size_t n, bool stale);

enum reg_watch_mode { REG_WATCH_THREAD, REG_WATCH_LOOP };

/* Start watching `service` (tag may be NULL). The client must outlive the
 * watcher and is used from the watcher's thread only while it runs; give a
 * watcher a client of its own if other threads use one too. `wait` is the
 * blocking query's wait ("30s" if NULL; REG_EINVAL if not a duration). */
REG_EXPORT int reg_watch_new(struct reg_client *c, const char *service, const char *tag,
                             bool passing_only, const char *wait, enum reg_watch_mode mode,
                             reg_watch_cb cb, void *arg, struct reg_watch **out);
/* REG_WATCH_LOOP: readable when reg_watch_dispatch has something to deliver. */
REG_EXPORT int reg_watch_fd(const struct reg_watch *w);
/* REG_WATCH_LOOP: deliver what changed since the last call (non-blocking). */
REG_EXPORT void reg_watch_dispatch(struct reg_watch *w);
/* A copy of the current list (free with reg_instances_free); *stale says
 * whether the last refresh failed. REG_ENOTFOUND before the first answer. */
REG_EXPORT int reg_watch_snapshot(struct reg_watch *w, struct reg_instance **out, size_t *n,
                                  bool *stale);
/* Stop the thread (promptly: an in-flight blocking query is abandoned) and
 * free the watcher. NULL is a no-op. Not from inside its own callback. */
REG_EXPORT void reg_watch_free(struct reg_watch *w);

/* Copy n instances (free with reg_instances_free). */
REG_EXPORT int reg_instances_copy(const struct reg_instance *list, size_t n,
                                  struct reg_instance **out);

/* URL-encode src into dst (dstlen bytes, NUL-terminated). REG_ETOOBIG if it
 * does not fit. For building paths for reg_client_request. */
REG_EXPORT int reg_url_encode(const char *src, char *dst, size_t dstlen);

#ifdef __cplusplus
}
#endif
#endif /* REGISTRY_REGISTRY_H */
