/*
 * fuzz_spool.c — a request head and body as the HTTP guard hands them to
 * the spool (http_spool.h): the first byte sets how the rest is cut into
 * the reads the network delivered, the rest is the bytes. Whatever
 * arrives, the spool ends in one of its three states; a finished one
 * gives evhttp a head that frames no body, and never wrote more body bytes
 * than came in.
 */
#define _GNU_SOURCE /* memmem */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "http_spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] % 64;
    data++, size--;
    struct http_spool *sp;
    if (http_spool_new("/tmp", 1 << 20, &sp) != 0)
        return 0;
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    enum spool_state st = SPOOL_MORE;
    for (size_t at = 0; at < size && st == SPOOL_MORE; at += piece) {
        size_t n = size - at < piece ? size - at : piece;
        evbuffer_add(in, data + at, n);
        st = http_spool_feed(sp, in);
        if (evbuffer_get_length(in) != 0) /* every byte is taken */
            __builtin_trap();
    }
    if (st == SPOOL_BAD && http_spool_why(sp)[0] == '\0')
        __builtin_trap();
    if (st == SPOOL_DONE) {
        int fd, err;
        uint64_t len;
        http_spool_take_file(sp, &fd, &len, &err);
        if (len > size || http_spool_release(sp, out) != 0)
            __builtin_trap();
        size_t n = evbuffer_get_length(out);
        const char *text = (const char *)evbuffer_pullup(out, -1);
        const char *end = text ? memmem(text, n, "\r\n\r\n", 4) : NULL;
        static const char last[] = "Content-Length: 0\r\n\r\n";
        if (end == NULL || (size_t)(end + 4 - text) < sizeof(last) - 1 ||
            memcmp(end + 4 - (sizeof(last) - 1), last, sizeof(last) - 1) != 0)
            __builtin_trap();
        if (fd >= 0)
            close(fd);
    }
    evbuffer_free(in);
    evbuffer_free(out);
    http_spool_free(sp);
    return 0;
}
