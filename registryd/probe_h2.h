/*
 * probe_h2.h — Consul's HTTP/2 checks on nghttp2 (Debian's libnghttp2):
 *   GRPC    grpc.health.v1.Health/Check on "HOST:PORT[/SERVICE]", over h2c or,
 *           with GRPCUseTLS, TLS (ALPN h2): SERVING is passing, anything else
 *           (another status, a grpc-status error, no answer) critical
 *   H2PING  an HTTP/2 PING on "HOST:PORT", over TLS unless H2PingUseTLS is
 *           false: the PING's ACK is passing
 * TLSSkipVerify and TLSServerName as for HTTPS checks. Used by probe.c for
 * PROBE_GRPC and PROBE_H2PING; runs on the checker's loop.
 */
#ifndef REGISTRYD_PROBE_H2_H
#define REGISTRYD_PROBE_H2_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct probe_env;
struct probe_h2;

typedef void (*probe_h2_cb)(void *arg, bool passing, const char *output);

/* grpc: a GRPC check, else H2PING. def (borrowed) is the check definition;
 * env (borrowed): the checker's loop and TLS (probe_tls_new).
 * 0 and *out, or -1 with the reason in err (nothing started). The callback
 * runs once, later, never from inside this call, unless probe_h2_free. */
int probe_h2_start(const struct probe_env *env, bool grpc, json_t *def, uint64_t timeout_ms, probe_h2_cb cb, void *arg,
                   struct probe_h2 **out, char *err, size_t errlen);
void probe_h2_free(struct probe_h2 *p);

#endif
