/*
 * fuzz_client_response — libFuzzer target for libregistry's reading of
 * server answers: the HTTP/1.x answer parser (status line, headers,
 * Content-Length, chunked decoding in place) and the /v1/health/service
 * decoder (JSON -> struct reg_instance). The input is the raw answer as
 * recv_all leaves it (one spare byte, '\0', after it); an input that starts
 * with '[' is also decoded as a body by itself, so that mutations of the JSON
 * are not lost to broken framing. The same bytes also go through the
 * streaming chunked decoder (registryctl's snapshot transfers) whole and
 * split in two at every 97th offset: the data and the verdict must not depend
 * on where the pieces break. See fuzz_dns_query.c for the build modes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "registry/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void instances(const char *body, size_t len)
{
    struct reg_instance *v = NULL;
    size_t n = 0;
    if (reg__parse_instances(NULL, body, len, &v, &n) != 0) {
        if (v != NULL)
            __builtin_trap(); /* an error leaves *out alone */
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct reg_instance *in = &v[i];
        if (!in->id || !in->service || !in->address || !in->status || !in->tags || !in->meta)
            __builtin_trap();
        if (strcmp(in->status, "passing") && strcmp(in->status, "warning") &&
            strcmp(in->status, "critical"))
            __builtin_trap();
        for (size_t j = 0; j < in->ntags; j++)
            if (in->tags[j] == NULL)
                __builtin_trap();
        for (size_t j = 0; j < 2 * in->nmeta; j++)
            if (in->meta[j] == NULL)
                __builtin_trap();
    }
    reg_instances_free(v, n);
}

struct collected {
    char *buf;
    size_t len;
};

static int collect(void *arg, const char *b, size_t n)
{
    struct collected *c = arg;
    memcpy(c->buf + c->len, b, n); /* never more than the input: sized so */
    c->len += n;
    return 0;
}

/* Feed data whole, then in two pieces split at `at`: same result. */
static void dechunk(const uint8_t *data, size_t size, size_t at, char *one, char *two)
{
    struct reg__dechunker d1 = {0}, d2 = {0};
    struct collected c1 = {one, 0}, c2 = {two, 0};
    uint64_t u1 = 0, u2 = 0;
    int r1 = reg__dechunk_feed(&d1, (const char *)data, size, collect, &c1, &u1);
    int r2 = reg__dechunk_feed(&d2, (const char *)data, at, collect, &c2, &u2);
    if (r2 == 0)
        r2 = reg__dechunk_feed(&d2, (const char *)data + at, size - at, collect, &c2, &u2);
    if (r1 != r2 || u1 != u2 || u1 != c1.len || c1.len > size || d1.state != d2.state ||
        memcmp(one, two, c1.len) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *one = malloc(size + 1), *two = malloc(size + 1);
    if (one != NULL && two != NULL)
        for (size_t at = 0; at <= size; at += 97)
            dechunk(data, size, at, one, two);
    free(one);
    free(two);

    char *raw = malloc(size + 1);
    if (raw == NULL)
        return 0;
    memcpy(raw, data, size);
    raw[size] = '\0';
    int status = 0;
    char *body = NULL;
    size_t blen = 0;
    uint64_t index = 0;
    int rc = reg__parse_response(NULL, raw, size, &status, &body, &blen, &index);
    if (rc == 0) {
        if (body == NULL || blen > size || body[blen] != '\0' || status < 200 || status > 299)
            __builtin_trap();
        instances(body, blen);
    } else if (body != NULL) {
        __builtin_trap(); /* no body is handed out with an error */
    }
    free(body);
    free(raw);
    if (size > 0 && data[0] == '[')
        instances((const char *)data, size);
    return 0;
}
