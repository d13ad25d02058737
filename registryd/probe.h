/*
 * probe.h — one probe of an HTTP/HTTPS or TCP health check, on the checker's
 * event loop: connect (and for HTTP, send the check's request and read at
 * most PROBE_OUTPUT_MAX bytes of the answer), then say passing (2xx, or a
 * TCP connect), warning (429) or critical, with Consul's output text.
 *
 * A probe is owned by its caller until its callback runs; the callback runs
 * exactly once, on the loop, never inside probe_start, unless the probe is
 * cancelled first. The probe frees itself after its callback.
 */
#ifndef REGISTRYD_PROBE_H
#define REGISTRYD_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/ssl.h>

struct bufferevent;

struct event_base;
struct probe;

#define PROBE_OUTPUT_MAX 4096 /* Consul keeps at most 4 KiB of check output */

enum probe_status { PROBE_PASSING, PROBE_WARNING, PROBE_CRITICAL };

/* What every probe of one checker shares: its loop and TLS contexts.
 * ssl_verify/ssl_noverify carry no certificate and trust the system's CAs;
 * with agent_tls (enable_agent_tls_for_checks), TLS probes use tls.h's
 * client context instead: this server's certificate, trusting tls_ca_file
 * (taken at each probe's start, so that a reload's new files apply). */
struct probe_env {
    struct event_base *base;
    SSL_CTX *ssl_verify, *ssl_noverify;
    bool agent_tls;
    bool enable_scripts; /* enable_script_checks: script probes may run */
    struct store *store; /* borrowed: alias probes read it */
};

/* 0, or REG_ENOMEM. base is borrowed. */
int probe_env_init(struct probe_env *e, struct event_base *base)
    __attribute__((warn_unused_result));
void probe_env_fini(struct probe_env *e);

/* A client session for a check's TLS connection to host (the address the
 * check names; borrowed). The name sent as SNI and verified is the check's
 * TLSServerName if set, else host: a DNS name must be in the certificate's
 * subjectAltName, an IP literal among its IP addresses (and is not sent as
 * SNI, RFC 6066). TLSSkipVerify verifies nothing. The context is the one
 * probe_env says. Returns a new SSL, or NULL with a critical output in err. */
SSL *probe_tls_new(const struct probe_env *e, json_t *def, const char *host, char *err,
                   size_t errlen);

/* Why a TLS connection failed, for a check's output: OpenSSL's reason and,
 * when certificate verification failed, what it found ("Hostname mismatch").
 * bev is the connection's bufferevent (a plain one has nothing to say); its
 * queue of OpenSSL errors is drained. Writes "" if nothing is known. */
void probe_tls_why(struct bufferevent *bev, char *out, size_t len);

/* output: NUL-terminated, borrowed for the call (the callee may edit it). */
typedef void (*probe_done_cb)(void *arg, enum probe_status status, char *output);

enum probe_kind {
    PROBE_HTTP,
    PROBE_TCP,
    PROBE_UDP,   /* probe_udp.h */
    PROBE_GRPC,  /* probe_h2.h */
    PROBE_H2PING, /* probe_h2.h */
    PROBE_SCRIPT, /* probe_script.h: only with enable_scripts */
    PROBE_ALIAS   /* probe_alias.h */
};

/*
 * Start a probe of the check definition def (borrowed; read for HTTP, Method,
 * Header, Body, TLSSkipVerify, TLSServerName or TCP). Returns the probe, or NULL with the
 * reason (a critical output) in err when it cannot even start.
 */
struct probe *probe_start(const struct probe_env *e, enum probe_kind kind, json_t *def,
                          uint64_t timeout_ms, probe_done_cb cb, void *arg, char *err,
                          size_t errlen);
/* Cancel a probe whose callback has not run: it never will. */
void probe_cancel(struct probe *p);

#endif
