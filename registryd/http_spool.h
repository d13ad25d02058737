/*
 * http_spool.h — a request body written to a file as it arrives, instead of
 * held in memory by evhttp (libevent 2.1's server reads a whole body before
 * it calls the handler, and has no hook to stream one). Used for
 * PUT /v1/snapshot and a follower's forward of one, so that a restore can
 * be as large as the disk allows while the daemon's memory does not grow
 * with it.
 *
 * http_guard, which watches every connection's input, hands a request to a
 * spool when its request line names a spooled route and no byte of it has
 * reached evhttp yet; from then on every byte that arrives goes to the
 * spool. The spool reads the head (at most HTTP_SPOOL_HEAD_MAX bytes), then
 * the body — Content-Length or chunked — into an unlinked file in a
 * directory, and once the body is complete gives back the head with its
 * body framing replaced by "Content-Length: 0", followed by whatever arrived
 * after the body. The guard puts those back in front of evhttp, which parses
 * an empty-bodied request and calls the handler; the handler takes the file
 * (http_guard_take_body).
 *
 * A write that fails, or would leave the disk less than HTTP_SPOOL_KEEP_FREE,
 * does not stop the request: the file is dropped at once (its space given
 * back), the rest of the body is read and dropped, and the handler learns
 * the error (ENOSPC). Framing that
 * cannot be read, or a body beyond the limit, is SPOOL_BAD: the connection
 * is closed, as evhttp closes one it cannot parse.
 *
 * Threads: the front end's event_base thread only.
 */
#ifndef REGISTRYD_HTTP_SPOOL_H
#define REGISTRYD_HTTP_SPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

struct evbuffer;
struct http_spool;

#define HTTP_SPOOL_HEAD_MAX (64u << 10)
/* A body never takes the data disk below this much free space: the store
 * and the raft log keep theirs (store.c refuses writes below half of it). */
#define HTTP_SPOOL_KEEP_FREE (32ull << 20)

enum spool_state { SPOOL_MORE, SPOOL_DONE, SPOOL_BAD };

/* dir: where the body file is made (and unlinked at once); limit: body
 * bytes allowed, 0 for no limit. Returns 0 or REG_ENOMEM. */
int http_spool_new(const char *dir, uint64_t limit, struct http_spool **out) REG_MUSTCHECK;
/* Move every byte of in into the spool and read as far as they go. */
enum spool_state http_spool_feed(struct http_spool *sp, struct evbuffer *in);
/* The head has been read: the body is being read. */
bool http_spool_in_body(const struct http_spool *sp);
/* Once the head is read: the client waits for "100 Continue" before it
 * sends the body. True once; the caller sends it. */
bool http_spool_take_continue(struct http_spool *sp);
/* After SPOOL_DONE: append the rewritten head, then the bytes that followed
 * the body, to out. Returns 0 or REG_ENOMEM. */
int http_spool_release(struct http_spool *sp, struct evbuffer *out) REG_MUSTCHECK;
/* After SPOOL_DONE: the file (the caller owns fd; -1 if it could not be
 * made), the body's length, and the errno of a failed write or 0. */
void http_spool_take_file(struct http_spool *sp, int *fd, uint64_t *len, int *write_err);
/* A new file in dir, unlinked at once (its blocks go back when the
 * descriptor closes): the descriptor, or -errno. */
int http_spool_tmpfile(const char *dir);
/* Would n more bytes in dir leave its disk less than HTTP_SPOOL_KEEP_FREE?
 * (false when it cannot tell: the writes will say) */
bool http_spool_too_full(const char *dir, uint64_t n);
/* Why SPOOL_BAD. */
const char *http_spool_why(const struct http_spool *sp);
void http_spool_free(struct http_spool *sp);

#endif
