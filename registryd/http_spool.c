/*
 * http_spool.c — see http_spool.h.
 */
#include "http_spool.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "registry/error.h"

enum phase {
    PH_LINE,       /* the request line */
    PH_HEADERS,    /* header lines, up to the empty one */
    PH_BODY,       /* Content-Length bytes */
    PH_CHUNK_SIZE, /* a chunk-size line */
    PH_CHUNK_DATA, /* chunk bytes */
    PH_CHUNK_END,  /* the CRLF after a chunk */
    PH_TRAILER,    /* trailer lines after the last chunk */
    PH_DONE
};

struct http_spool {
    char dir[PATH_MAX];
    uint64_t limit;
    struct evbuffer *in;   /* received, not read yet */
    struct evbuffer *head; /* the head evhttp will see */
    enum phase ph;
    size_t head_bytes;
    bool chunked, has_length, want_continue;
    uint64_t left;    /* of the body (Content-Length) or of the chunk */
    uint64_t written; /* body bytes read */
    uint64_t next_look; /* written at which free space is looked at again */
    int fd;
    int err; /* errno of the first failed write */
    char why[128];
};

int http_spool_new(const char *dir, uint64_t limit, struct http_spool **out)
{
    struct http_spool *sp = calloc(1, sizeof(*sp));
    if (sp == NULL)
        return REG_ENOMEM;
    snprintf(sp->dir, sizeof(sp->dir), "%s", dir && *dir ? dir : "/tmp");
    sp->limit = limit;
    sp->fd = -1;
    sp->in = evbuffer_new();
    sp->head = evbuffer_new();
    if (sp->in == NULL || sp->head == NULL) {
        http_spool_free(sp);
        return REG_ENOMEM;
    }
    *out = sp;
    return 0;
}

void http_spool_free(struct http_spool *sp)
{
    if (sp == NULL)
        return;
    if (sp->in)
        evbuffer_free(sp->in);
    if (sp->head)
        evbuffer_free(sp->head);
    if (sp->fd >= 0)
        close(sp->fd);
    free(sp);
}

static enum spool_state bad(struct http_spool *sp, const char *why)
{
    snprintf(sp->why, sizeof(sp->why), "%s", why);
    return SPOOL_BAD;
}

/* The next line of the head or of the chunk framing, or NULL for not yet. */
static char *next_line(struct http_spool *sp, size_t *n, size_t max, bool *too_long)
{
    char *line = evbuffer_readln(sp->in, n, EVBUFFER_EOL_CRLF);
    *too_long = line == NULL && evbuffer_get_length(sp->in) > max;
    return line;
}

static bool header_is(const char *line, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    *value = v;
    return true;
}

static bool value_is(const char *v, const char *want)
{
    size_t n = strlen(want), len = strlen(v);
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len == n && strncasecmp(v, want, n) == 0;
}

/* A head line evhttp would read as this one: no control characters (a NUL
 * would cut it short here, and an empty line in the head given back would
 * end it early: what follows would become a request of its own). */
static bool clean_line(const char *line, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

/* One header line: the framing ones are read and dropped, the rest kept. */
static enum spool_state header(struct http_spool *sp, const char *line)
{
    const char *v;
    if (header_is(line, "Content-Length", &v)) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 ||
            (sp->has_length && n != sp->left))
            return bad(sp, "invalid Content-Length");
        sp->has_length = true;
        sp->left = n;
        return SPOOL_MORE;
    }
    if (header_is(line, "Transfer-Encoding", &v)) {
        if (!value_is(v, "chunked"))
            return bad(sp, "unsupported Transfer-Encoding");
        sp->chunked = true;
        return SPOOL_MORE;
    }
    if (header_is(line, "Expect", &v)) {
        sp->want_continue = value_is(v, "100-continue");
        return SPOOL_MORE;
    }
    if (evbuffer_add_printf(sp->head, "%s\r\n", line) < 0)
        return bad(sp, "out of memory");
    return SPOOL_MORE;
}

bool http_spool_too_full(const char *dir, uint64_t n)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return false; /* cannot tell: the writes will say */
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    return avail < HTTP_SPOOL_KEEP_FREE || avail - HTTP_SPOOL_KEEP_FREE < n;
}

int http_spool_tmpfile(const char *dir)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/.spool-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static void give_up_file(struct http_spool *sp, int err)
{
    sp->err = err;
    if (sp->fd >= 0)
        close(sp->fd); /* unlinked: its blocks are free again */
    sp->fd = -1;
}

#define SPOOL_LOOK_EVERY (4u << 20)

/* The head has ended: open the file and choose how the body is framed. */
static enum spool_state head_done(struct http_spool *sp)
{
    if (sp->chunked && sp->has_length)
        return bad(sp, "both Content-Length and chunked");
    if (sp->has_length && sp->limit != 0 && sp->left > sp->limit)
        return bad(sp, "body beyond its limit");
    sp->fd = http_spool_tmpfile(sp->dir);
    if (sp->fd < 0) {
        sp->err = -sp->fd;
        sp->fd = -1;
    }
    if (sp->fd >= 0 && http_spool_too_full(sp->dir, sp->has_length ? sp->left : 0))
        give_up_file(sp, ENOSPC);
    sp->next_look = SPOOL_LOOK_EVERY;
    if (sp->chunked) {
        sp->ph = PH_CHUNK_SIZE;
    } else if (sp->has_length && sp->left > 0) {
        sp->ph = PH_BODY;
    } else {
        sp->want_continue = false; /* no body to wait for */
        sp->ph = PH_DONE;
    }
    return SPOOL_MORE;
}

/* Up to n body bytes at the front of in go to the file. */
static enum spool_state body_bytes(struct http_spool *sp, uint64_t n)
{
    size_t have = evbuffer_get_length(sp->in);
    if (n > have)
        n = have;
    if (sp->limit != 0 && sp->written + n > sp->limit)
        return bad(sp, "body beyond its limit");
    uint64_t todo = n;
    if (sp->fd >= 0 && sp->written + n >= sp->next_look) {
        sp->next_look = sp->written + n + SPOOL_LOOK_EVERY;
        if (http_spool_too_full(sp->dir, SPOOL_LOOK_EVERY))
            give_up_file(sp, ENOSPC);
    }
    while (todo > 0 && sp->fd >= 0 && sp->err == 0) {
        int w = evbuffer_write_atmost(sp->in, sp->fd,
                                      (ev_ssize_t)(todo > INT_MAX ? INT_MAX : todo));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            give_up_file(sp, w < 0 ? errno : EIO);
        else
            todo -= (uint64_t)w;
    }
    if (todo > 0) /* the file failed: the rest is read and dropped */
        evbuffer_drain(sp->in, (size_t)todo);
    sp->written += n;
    sp->left -= n;
    return SPOOL_MORE;
}

static enum spool_state step(struct http_spool *sp, bool *progress)
{
    size_t n = 0;
    bool too_long;
    char *line;
    enum spool_state st = SPOOL_MORE;
    *progress = false;
    switch (sp->ph) {
    case PH_LINE:
    case PH_HEADERS:
        line = next_line(sp, &n, HTTP_SPOOL_HEAD_MAX - sp->head_bytes, &too_long);
        if (line == NULL)
            return too_long ? bad(sp, "request head too long") : SPOOL_MORE;
        sp->head_bytes += n + 2;
        if (sp->head_bytes > HTTP_SPOOL_HEAD_MAX)
            st = bad(sp, "request head too long");
        else if (!clean_line(line, n))
            st = bad(sp, "control character in the request head");
        else if (sp->ph == PH_HEADERS && n > 0 && line[0] != ' ' && line[0] != '\t' &&
                 strchr(line, ':') == NULL)
            st = bad(sp, "header line without a colon");
        else if (sp->ph == PH_LINE) {
            sp->ph = PH_HEADERS;
            if (evbuffer_add_printf(sp->head, "%s\r\n", line) < 0)
                st = bad(sp, "out of memory");
        } else if (n == 0)
            st = head_done(sp);
        else
            st = header(sp, line);
        free(line);
        break;
    case PH_BODY:
    case PH_CHUNK_DATA:
        if (evbuffer_get_length(sp->in) == 0)
            return SPOOL_MORE;
        st = body_bytes(sp, sp->left);
        if (sp->left == 0)
            sp->ph = sp->ph == PH_BODY ? PH_DONE : PH_CHUNK_END;
        break;
    case PH_CHUNK_SIZE:
        line = next_line(sp, &n, 1024, &too_long);
        if (line == NULL)
            return too_long ? bad(sp, "chunk size line too long") : SPOOL_MORE;
        {
            char *end;
            errno = 0;
            unsigned long long size = strtoull(line, &end, 16);
            bool ok = n > 0 && ((*line >= '0' && *line <= '9') ||
                                (*line >= 'a' && *line <= 'f') || (*line >= 'A' && *line <= 'F')) &&
                      errno == 0 && (*end == '\0' || *end == ';' || *end == ' ' || *end == '\t');
            free(line);
            if (!ok)
                return bad(sp, "invalid chunk size");
            sp->left = size;
            sp->ph = size == 0 ? PH_TRAILER : PH_CHUNK_DATA;
        }
        break;
    case PH_CHUNK_END:
        line = next_line(sp, &n, 2, &too_long);
        if (line == NULL)
            return too_long ? bad(sp, "chunk not followed by CRLF") : SPOOL_MORE;
        free(line);
        if (n != 0)
            return bad(sp, "chunk not followed by CRLF");
        sp->ph = PH_CHUNK_SIZE;
        break;
    case PH_TRAILER:
        line = next_line(sp, &n, HTTP_SPOOL_HEAD_MAX, &too_long);
        if (line == NULL)
            return too_long ? bad(sp, "trailer too long") : SPOOL_MORE;
        free(line);
        if (n == 0)
            sp->ph = PH_DONE;
        break;
    case PH_DONE:
        return SPOOL_DONE;
    }
    *progress = st == SPOOL_MORE;
    return st;
}

enum spool_state http_spool_feed(struct http_spool *sp, struct evbuffer *in)
{
    if (in && evbuffer_add_buffer(sp->in, in) != 0)
        return bad(sp, "out of memory");
    bool progress = true;
    enum spool_state st = SPOOL_MORE;
    while (progress && st == SPOOL_MORE && sp->ph != PH_DONE)
        st = step(sp, &progress);
    return st == SPOOL_MORE && sp->ph == PH_DONE ? SPOOL_DONE : st;
}

bool http_spool_in_body(const struct http_spool *sp)
{
    return sp->ph != PH_LINE && sp->ph != PH_HEADERS;
}

bool http_spool_take_continue(struct http_spool *sp)
{
    bool want = sp->want_continue && sp->ph != PH_LINE && sp->ph != PH_HEADERS;
    if (want)
        sp->want_continue = false;
    return want;
}

int http_spool_release(struct http_spool *sp, struct evbuffer *out)
{
    if (evbuffer_add_buffer(out, sp->head) != 0 ||
        evbuffer_add(out, "Content-Length: 0\r\n\r\n", 21) != 0 ||
        evbuffer_add_buffer(out, sp->in) != 0)
        return REG_ENOMEM;
    return 0;
}

void http_spool_take_file(struct http_spool *sp, int *fd, uint64_t *len, int *write_err)
{
    *fd = sp->fd;
    *len = sp->written;
    *write_err = sp->err;
    sp->fd = -1;
}

const char *http_spool_why(const struct http_spool *sp)
{
    return sp->why;
}
