/*
 * http_call.c — see http_call.h. One connection per request, through
 * libregistry's connection layer (client/src/conn.h: the same non-blocking
 * socket and poll() code as every libregistry request); every wait is
 * bounded by what is left of the request's time limit.
 */
#define _GNU_SOURCE
#include "http_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"

/* Where the head ends and how long the body is (-1: until EOF). */
static const char *head_end(const char *buf, size_t len, long *content_length)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return NULL;
    *content_length = -1;
    for (const char *line = memchr(buf, '\n', (size_t)(end - buf)); line && line < end;
         line = memchr(line, '\n', (size_t)(end - line))) {
        line++;
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            *content_length = strtol(line + 15, NULL, 10);
    }
    return end + 4;
}

int http_call(const char *address, int port, const struct http_request *req, uint64_t timeout_ms,
              struct http_answer *ans)
{
    memset(ans, 0, sizeof(*ans));
    long long deadline = reg__now_ms() + (long long)timeout_ms;
    char service[16], why[400];
    snprintf(service, sizeof(service), "%d", port);
    struct reg__conn cn;
    int rc = reg__conn_open(&cn, address, service, NULL, deadline, why, sizeof(why));
    if (rc != 0)
        return rc;
    size_t cap = 1024 + req->body_len + strlen(req->path);
    for (size_t i = 0; i < req->nheaders; i++)
        cap += strlen(req->headers[i]) + 2;
    char *buf = malloc(cap);
    if (buf == NULL) {
        reg__conn_close(&cn);
        return REG_ENOMEM;
    }
    int len = snprintf(buf, cap, "%s %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n",
                       req->method, req->path, address, port);
    bool has_length = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        len += snprintf(buf + len, cap - (size_t)len, "%s\r\n", req->headers[i]);
        has_length |= strncasecmp(req->headers[i], "Content-Length:", 15) == 0;
    }
    if (req->body && !has_length)
        len += snprintf(buf + len, cap - (size_t)len, "Content-Length: %zu\r\n", req->body_len);
    len += snprintf(buf + len, cap - (size_t)len, "\r\n");
    rc = reg__conn_send(&cn, buf, (size_t)len, deadline, why, sizeof(why));
    free(buf);
    if (rc == 0 && req->body)
        rc = reg__conn_send(&cn, req->body, req->body_len, deadline, why, sizeof(why));
    if (rc != 0) {
        reg__conn_close(&cn);
        return rc;
    }
    size_t got = 0, size = 4096;
    buf = malloc(size);
    const char *body = NULL;
    long clen = -1;
    while (buf) {
        if (body && clen >= 0 && got - (size_t)(body - buf) >= (size_t)clen)
            break;
        if (got + 1 >= size) {
            size_t off = body ? (size_t)(body - buf) : 0;
            char *bigger = size < (64u << 20) ? realloc(buf, size * 2) : NULL;
            if (bigger == NULL) {
                rc = REG_ETOOBIG;
                break;
            }
            buf = bigger;
            size *= 2;
            if (body)
                body = buf + off;
        }
        size_t n = 0;
        if ((rc = reg__conn_recv(&cn, buf + got, size - got - 1, &n, deadline, why,
                                 sizeof(why))) != 0)
            break;
        if (n == 0)
            break;
        got += n;
        if (body == NULL)
            body = head_end(buf, got, &clen);
    }
    reg__conn_close(&cn);
    if (buf == NULL)
        return REG_ENOMEM;
    buf[got] = '\0';
    if (rc == 0 && body == NULL)
        rc = got ? REG_EPROTO : REG_EIO; /* closed before a whole head */
    int status = rc == 0 ? reg__status_code(buf, got) : 0;
    if (rc == 0 && status < 0)
        rc = REG_EPROTO;
    if (rc == 0 && clen >= 0 && got - (size_t)(body - buf) < (size_t)clen)
        rc = REG_EIO; /* cut short */
    if (rc != 0) {
        free(buf);
        return rc;
    }
    size_t blen = got - (size_t)(body - buf);
    if (clen >= 0 && (size_t)clen < blen)
        blen = (size_t)clen;
    memmove(buf, body, blen);
    buf[blen] = '\0';
    ans->status = status;
    ans->body = buf;
    ans->body_len = blen;
    return 0;
}

static bool idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0;
}

enum reg_outcome http_verdict(const char *method, int rc, const struct http_answer *ans)
{
    bool again = idempotent(method);
    if (rc == REG_ECONNECT)
        return REG_OUTCOME_RETRYABLE;
    if (rc != 0)
        return again ? REG_OUTCOME_RETRYABLE : REG_OUTCOME_FAILURE;
    if (ans->status == 503)
        return REG_OUTCOME_RETRYABLE;
    if (ans->status >= 500)
        return again ? REG_OUTCOME_RETRYABLE : REG_OUTCOME_FAILURE;
    return REG_OUTCOME_SUCCESS;
}

const char *http_strerror(int rc)
{
    switch (rc) {
    case REG_ECONNECT:
        return "connection refused or unreachable";
    case REG_ETIMEDOUT:
        return "timed out";
    case REG_EIO:
        return "connection reset or closed early";
    case REG_EPROTO:
        return "not an HTTP answer";
    default:
        return reg_strerror(rc);
    }
}
