/*
 * http_call.h — one plain-HTTP request to one endpoint within a time limit,
 * for `registryctl call` and the resilience benchmark (tests/bench/), and
 * the verdict a resilient call (registry/resilience.h) should get for it.
 *
 * HTTP/1.0 with Connection: close, so that the answer ends with the
 * connection (no chunked encoding to undo); Content-Length is honoured when
 * present. Blocking, but never beyond the time limit: libregistry's
 * connection layer (client/src/conn.h), non-blocking sockets and poll() for
 * the connect, the send and every read.
 */
#ifndef REGISTRYCTL_HTTP_CALL_H
#define REGISTRYCTL_HTTP_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/resilience.h"

struct http_request {
    const char *method;         /* borrowed, like everything here */
    const char *path;           /* path and query */
    const char *const *headers; /* nheaders "Name: value" lines */
    size_t nheaders;
    const char *body; /* may be NULL */
    size_t body_len;
};

struct http_answer {
    int status; /* 0 when none was received */
    char *body; /* malloc'd, NUL-terminated (free it); NULL when none */
    size_t body_len;
};

/*
 * Send req to address:port (an IP literal, or a name resolved with
 * getaddrinfo) and read the answer, all within timeout_ms. On 0, *ans holds
 * the answer (any status). Errors: REG_ECONNECT (refused or unreachable:
 * nothing was sent), REG_ETIMEDOUT, REG_EIO (reset or closed mid-way),
 * REG_EPROTO (not HTTP), REG_ENOMEM. *ans is zeroed on error.
 */
int http_call(const char *address, int port, const struct http_request *req, uint64_t timeout_ms,
              struct http_answer *ans);

/* A short message for what http_call returned ("connection refused", ...). */
const char *http_strerror(int rc);

/* The verdict for an attempt that returned rc (and ans): connection refused
 * and 503 are always retryable (the request was not processed); timeouts,
 * resets, 502, 504 and other 5xx only for idempotent methods (GET, HEAD,
 * PUT, DELETE, OPTIONS); anything else is a success as far as the instance's
 * health goes (a 404 is the caller's problem, not the instance's). */
enum reg_outcome http_verdict(const char *method, int rc, const struct http_answer *ans);

#endif
