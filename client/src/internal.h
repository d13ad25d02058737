/*
 * internal.h — what libregistry's modules share and users do not see.
 */
#ifndef REGISTRY_INTERNAL_H
#define REGISTRY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Make this thread's requests return REG_ESHUTDOWN as soon as fd becomes
 * readable (-1: never). Used by the watcher thread to stop promptly. */
void reg__set_cancel_fd(int fd);

/* reg_balancer_pick that never returns an instance for which skip(arg, id)
 * is true (called with the balancer's lock held: it must not call back into
 * the balancer). REG_ENOTFOUND when every instance is skipped. */
struct reg_balancer;
struct reg_endpoint;
typedef _Bool (*reg__skip_fn)(void *arg, const char *id);
int reg__balancer_pick_filtered(struct reg_balancer *b, struct reg_endpoint *out,
                                reg__skip_fn skip, void *arg);

/* How long the server may hold a request for this path before answering, in
 * ms, read as the server reads it: 0 unless it has index=N > 0; then its
 * wait= (duration_parse.h; 5m if absent, capped at 10m; 0 if invalid: the
 * server answers 400 at once), jitter not included. */
uint64_t reg__query_wait_ms(const char *path);

struct reg_client;
struct reg_instance;

/* Parse a whole HTTP/1.x answer: raw[0..len) plus one writable byte at
 * raw[len] (which recv_all leaves as '\0'); decodes a chunked body in place.
 * status, index (X-Consul-Index) and body/body_len (a malloc'ed, terminated
 * copy, taken by the caller) are set when non-NULL. 2xx: 0; other status:
 * REG_ENOTFOUND (404) or REG_ESERVER; malformed: REG_EPROTO. c (may be NULL)
 * gets the message. */
int reg__parse_response(struct reg_client *c, char *raw, size_t len, int *status, char **body,
                        size_t *body_len, uint64_t *index);

/* Parse a /v1/health/service answer (JSON array of {Node, Service, Checks})
 * into *out (free with reg_instances_free) and *n. Returns 0, REG_EPROTO (not
 * a JSON array) or REG_ENOMEM; c (may be NULL) gets the message. */
int reg__parse_instances(struct reg_client *c, const char *body, size_t len,
                         struct reg_instance **out, size_t *n);

/*
 * Incremental decoder of a "Transfer-Encoding: chunked" body, for answers
 * that stream (reg__client_transfer): feed it the bytes after the head in
 * pieces of any size; the data goes to out(arg, buf, len) (NULL: dropped)
 * and *used counts it. Returns 0 (d->state is REG__CH_DONE after the last
 * chunk; trailers are not read), REG_EPROTO (malformed: stop), or what out
 * returned. Start from a zeroed struct.
 */
struct reg__dechunker {
    enum { REG__CH_SIZE, REG__CH_EXT, REG__CH_DATA, REG__CH_DATA_END, REG__CH_DONE } state;
    uint64_t left; /* REG__CH_SIZE: the size so far; REG__CH_DATA: bytes to pass on */
    int digits;
};
int reg__dechunk_feed(struct reg__dechunker *d, const char *in, size_t len,
                      int (*out)(void *arg, const char *buf, size_t len), void *arg,
                      uint64_t *used);

/*
 * One request whose bodies stream instead of sitting in memory (registryctl's
 * snapshot save and restore, which may move gigabytes). With upload, the
 * request body is upload_len bytes that upload(arg, buf, cap, &got) fills in
 * pieces (0, or a negative code that ends the transfer); a 2xx answer's body
 * goes to download(arg, buf, len) as it arrives (NULL: dropped); progress
 * (may be NULL) gets (arg, bytes moved, total or 0 if unknown) after each
 * piece, for the request body while it is sent, then for the answer's.
 * Servers are tried in order, as reg_client_request does, until one accepts
 * the connection; then there is no failover (the body has been consumed).
 * Each wait is bounded by the client's timeout, counted from the last
 * progress rather than from the start, so a large transfer that keeps
 * moving is never cut off. *status (may be NULL) gets the HTTP status.
 * Returns what reg_client_request returns, or the code a callback gave.
 */
struct reg__transfer {
    int (*upload)(void *arg, char *buf, size_t cap, size_t *got);
    uint64_t upload_len;
    int (*download)(void *arg, const char *buf, size_t len);
    void (*progress)(void *arg, uint64_t done, uint64_t total);
    void *arg;
};
int reg__client_transfer(struct reg_client *c, const char *method, const char *path,
                         const struct reg__transfer *t, int *status);

#endif
