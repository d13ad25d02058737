/*
 * common.h — small pieces every module of the daemon shares, one copy each:
 * the must-check attribute (STYLE.md: "_mustcheck_" on every function whose
 * result matters), the one way to open a connection to another server (HTTP,
 * or HTTPS with mutual TLS) and the deferred free of a libevent HTTP
 * connection.
 * Hashes are hash.h's, host:port parsing config.h's (conf_split_hostport),
 * the server-to-server HTTP client cluster_link.h's.
 */
#ifndef REGISTRYD_COMMON_H
#define REGISTRYD_COMMON_H

struct event_base;
struct evhttp_connection;

/* The caller must look at the result (gcc and clang warn, -Werror fails). */
#define REG_MUSTCHECK __attribute__((warn_unused_result))

/*
 * Free an outgoing HTTP connection on the next turn of base's loop: never
 * from inside one of its own callbacks (libevent still uses it there).
 * Pending requests are dropped without their callbacks, as
 * evhttp_connection_free does. If the free cannot be scheduled (out of
 * memory) the connection is leaked, with a warning: a leak is better than a
 * use after free.
 */
void common_free_evcon_later(struct event_base *base, struct evhttp_connection *evcon);

/*
 * A connection to another server's HTTP API at host:port (on base): with
 * TLS configured (tls_enabled()), HTTPS with mutual TLS — this server's
 * certificate presented, the peer's verified against the CA and the name
 * server.DC.DOMAIN —, else plain HTTP. NULL when out of memory. Free it
 * with evhttp_connection_free / common_free_evcon_later.
 *
 * With TLS the connection carries one TLS session: once closed (failure,
 * idle timeout, the peer going away) it must not be used again, as evhttp
 * would reconnect with an SSL whose session has ended; make a new one.
 */
struct evhttp_connection *common_server_evcon_new(struct event_base *base, const char *host,
                                                  unsigned short port) REG_MUSTCHECK;

/* An HTTP method's name ("GET", ... "OPTIONS"; "OTHER" for the rest), for
 * routing, forwarding and logs. t is an enum evhttp_cmd_type. */
const char *common_method_name(int t);

#endif
