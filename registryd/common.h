/*
 * common.h — small pieces every module of the daemon shares, one copy each:
 * the must-check attribute (STYLE.md: "_mustcheck_" on every function whose
 * result matters), the one way to open a connection to another server (HTTP,
 * or HTTPS with mutual TLS), the deferred free of a libevent HTTP
 * connection and the reading of a KEY:VALUE setting as JSON.
 * Hashes are hash.h's, host:port parsing config.h's (conf_split_hostport),
 * the server-to-server HTTP client cluster_link.h's.
 */
#ifndef REGISTRYD_COMMON_H
#define REGISTRYD_COMMON_H

/* Front-end threads serving HTTP at most (http_workers): each holds an
 * LMDB reader slot and two listener entries (http_guard.c). */
#define REG_MAX_HTTP_WORKERS 64

struct event_base;
struct evhttp_connection;
struct json_t;

/* The caller must look at the result (gcc and clang warn, -Werror fails). */
#define REG_MUSTCHECK __attribute__((warn_unused_result))

/* Whether to free, at exit, memory that dies with the process anyway.
 * Sanitizer builds do, so that leak checks see everything; others leave
 * the checker's per-check state to the OS (freeing a million checks one
 * by one costs seconds of a clean stop). */
#if defined(__SANITIZE_ADDRESS__)
#define REG_FREE_AT_EXIT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define REG_FREE_AT_EXIT 1
#endif
#endif
/* Where a follower forwards a request whose body the HTTP guard wrote to a
 * file (a snapshot restore): the leader's guard writes it to a file too. */
#define REG_FORWARD_SPOOLED_URI "/v1/internal/forward?spool"

#ifndef REG_FREE_AT_EXIT
#define REG_FREE_AT_EXIT 0
#endif

/* A KEY:VALUE list as config.h stores it ("key:value" lines joined by '\n',
 * or NULL: none; node_meta) as a JSON object of strings: a new reference,
 * NULL when out of memory. A line without a colon is left out. */
struct json_t *common_kvlist_object(const char *lines);

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
 * With TLS the connection's SSL comes from the client context of the
 * moment: evhttp would reconnect a closed one with that same SSL, hence
 * with the certificate it started with. Callers replace a connection that
 * closed or failed, so that a certificate reloaded on SIGHUP is presented
 * from the next connection on.
 */
struct evhttp_connection *common_server_evcon_new(struct event_base *base, const char *host,
                                                  unsigned short port) REG_MUSTCHECK;

/* An HTTP method's name ("GET", ... "OPTIONS"; "OTHER" for the rest), for
 * routing, forwarding and logs. t is an enum evhttp_cmd_type. */
const char *common_method_name(int t);

/* An event loop for the HTTP front end (the main loop and each HTTP
 * worker's): with epoll's change list, evhttp's enabling and disabling of
 * reading and writing around each request costs one epoll_ctl per loop turn
 * instead of up to four per request. libevent's one caveat, descriptors
 * cloned with dup() polled on the same loop, does not arise: the one dup()
 * (a snapshot file a follower sends to the leader, cluster_link.c) is read,
 * never polled. NULL: out of memory. */
struct event_base *common_front_end_base_new(void);

/* Frees a loop once everything that owned events on it is gone. A TLS
 * bufferevent that wrote on the loop's last turn (libevent's OpenSSL
 * bufferevents always defer their write callback) has that callback queued,
 * holding a reference on the connection; event_base_free drops queued
 * callbacks without running them, and the connection, its SSL and buffers
 * leak. A few non-blocking turns run them, and the finalizers they lead
 * to, first. NULL: nothing. */
void common_base_free(struct event_base *base);

/* Before joining a SO_REUSEPORT group (the DNS and HTTP worker threads'
 * listeners), make sure nobody holds the address: another process (of this
 * user) already serving it would otherwise share its traffic with us
 * silently. type: SOCK_STREAM or SOCK_DGRAM. 0, or -1 with errno
 * (EADDRINUSE). */
struct sockaddr_storage;
int common_addr_free(const struct sockaddr_storage *ss, int sslen, int type);

/* TCP_NODELAY on a listening socket, which every connection it accepts
 * inherits (Linux): an answer written in more than one piece (above 16 KiB,
 * TLS records, a DNS message after its length) goes out at once instead of
 * waiting for the ACK of the piece before, which the client delays by up
 * to 40 ms. Best effort (not TCP: nothing to do). */
void common_listener_nodelay(int fd);

#endif
