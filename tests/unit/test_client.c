/* Unit tests for libregistry's transport and response parsing (client.c):
 * how long a blocking query may take (the wait= table shared with the
 * daemon's test_duration.c), the HTTP answer parser, the /v1/health/service
 * decoder, and a blocking query against a slow loopback server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "duration_cases.h"
#include "hostport.h"
#include "internal.h" /* client/src: libregistry's private functions */
#include "registry/error.h"
#include "registry/registry.h"

/* ---- how long the server may hold a request ---------------------------- */

/* One host:port parser for client and daemon: the forms both accept. */
static void test_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *host;
        unsigned port;
    } ok[] = {{"127.0.0.1:8500", "127.0.0.1", 8500}, {"[::1]:53", "::1", 53},
              {"localhost:1", "localhost", 1}, {"a:65535", "a", 65535}};
    static const char *const bad[] = {"", ":80", "host", "host:", "host:0", "host:65536",
                                      "host:+80", "host: 80", "::1:53", "[::1]53", "[::1]:",
                                      "h:123456", "[]:80"};
    char host[64];
    unsigned short port;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(reg__split_hostport(ok[i].in, strlen(ok[i].in), host, sizeof(host), &port),
                         0);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(reg__split_hostport(bad[i], strlen(bad[i]), host, sizeof(host), &port),
                         REG_EINVAL);
    /* length-delimited: a list is split without copies */
    assert_int_equal(reg__split_hostport("a:1,b:2", 3, host, sizeof(host), &port), 0);
    assert_string_equal(host, "a");
    /* a host that does not fit is refused, not cut */
    assert_int_equal(reg__split_hostport("abcdefgh:1", 10, host, 8, &port), REG_EINVAL);
}

static void test_wait_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_DURATION_CASES; i++) {
        const struct duration_case *t = &duration_cases[i];
        char path[200];
        snprintf(path, sizeof(path), "/v1/health/service/web?x=1&index=7&wait=%s", t->text);
        /* 0 is the server's default (5m), as Consul's: a watch given
         * "0s" timed out each query it made and went stale */
        uint64_t want = !t->ok ? 0 : t->ms == 0 ? 300000 : t->ms > 600000 ? 600000 : t->ms;
        uint64_t got = reg__query_wait_ms(path);
        if (got != want)
            fail_msg("wait=%s: %llu ms, want %llu", t->text, (unsigned long long)got,
                     (unsigned long long)want);
    }
}

static void test_wait_query_forms(void **state)
{
    (void)state;
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?index=7&wait=1m30s"), 90000);
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?wait=1m30s&index=7"), 90000);
    /* index without wait: the server's default, 5m; beyond 10m: capped */
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?index=7"), 300000);
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?index=7&wait=0s"), 300000);
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?index=7&wait=1h"), 600000);
    /* not a blocking query: the server answers at once */
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?wait=1m30s"), 0);
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web?index=0&wait=1m"), 0);
    assert_int_equal(reg__query_wait_ms("/v1/health/service/web"), 0);
    assert_int_equal(reg__query_wait_ms(NULL), 0);
    /* only the query's own parameters count, the last one wins */
    assert_int_equal(reg__query_wait_ms("/v1/kv/wait=9h?index=3&wait=2s"), 2000);
    assert_int_equal(reg__query_wait_ms("/v1/x?index=3&await=9m&wait=1s&wait=3s"), 3000);
    assert_int_equal(reg__query_wait_ms("/v1/x?index=3&wait=10s#frag"), 10000);
}

/* ---- the HTTP answer parser --------------------------------------------- */

static int parse(const char *text, int *status, char **body, size_t *blen, uint64_t *index)
{
    size_t len = strlen(text);
    char *raw = malloc(len + 1); /* as recv_all: one spare byte */
    memcpy(raw, text, len + 1);
    int rc = reg__parse_response(NULL, raw, len, status, body, blen, index);
    free(raw);
    return rc;
}

static void test_response_content_length(void **state)
{
    (void)state;
    int status = 0;
    char *body = NULL;
    size_t blen = 0;
    uint64_t index = 0;
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nContent-Length: 5\r\n\r\n"
                           "[1,2]trailing",
                           &status, &body, &blen, &index),
                     0);
    assert_int_equal(status, 200);
    assert_int_equal(index, 42);
    assert_int_equal(blen, 5);
    assert_string_equal(body, "[1,2]");
    free(body);
    /* header names are case-insensitive; no length: up to the close */
    assert_int_equal(
        parse("HTTP/1.0 200 OK\r\nx-consul-index:   7\r\n\r\n{}", &status, &body, &blen, &index),
        0);
    assert_int_equal(index, 7);
    assert_string_equal(body, "{}");
    free(body);
}

static void test_response_chunked(void **state)
{
    (void)state;
    char *body = NULL;
    size_t blen = 0;
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\n[1,\r\na; ext=1\r\n2,3,4,5,6]\r\n0\r\n\r\n",
                           NULL, &body, &blen, NULL),
                     0);
    assert_string_equal(body, "[1,2,3,4,5,6]");
    assert_int_equal(blen, 13);
    free(body);
    body = NULL;
    /* a chunk longer than what arrived, a missing terminator, a bad size */
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab", NULL,
                           &body, &blen, NULL),
                     REG_EPROTO);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", NULL,
                           &body, &blen, NULL),
                     REG_EPROTO);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL,
                           &body, &blen, NULL),
                     REG_EPROTO);
    assert_null(body);
}

static void test_response_errors(void **state)
{
    (void)state;
    int status = 0;
    char *body = NULL;
    size_t blen = 0;
    assert_int_equal(parse("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno such x", &status,
                           &body, &blen, NULL),
                     REG_ENOTFOUND);
    assert_int_equal(status, 404);
    assert_null(body);
    assert_int_equal(parse("HTTP/1.1 500 Internal\r\n\r\nNo path to datacenter\r\nmore", &status,
                           &body, &blen, NULL),
                     REG_ESERVER);
    assert_int_equal(status, 500);
    assert_string_equal(reg_client_errmsg(NULL), "500: No path to datacenter");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", &status, &body, &blen, NULL),
        REG_EPROTO);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", &status, &body, &blen, NULL),
                     REG_EPROTO);
    assert_int_equal(parse("SSH-2.0-OpenSSH\r\n\r\n", &status, &body, &blen, NULL), REG_EPROTO);
    assert_int_equal(parse("", &status, &body, &blen, NULL), REG_EPROTO);
    assert_null(body);
}

/* ---- /v1/health/service answers ---------------------------------------- */

static const char *const HEALTH_ANSWER =
    "[{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},"
    "  \"Service\":{\"ID\":\"web-1\",\"Service\":\"web\",\"Address\":\"\",\"Port\":8080,"
    "    \"Tags\":[\"v1\",\"canary\"],\"Meta\":{\"zone\":\"a\"},"
    "    \"Weights\":{\"Passing\":10,\"Warning\":2}},"
    "  \"Checks\":[{\"Status\":\"passing\"},{\"Status\":\"warning\"}]},"
    " {\"Node\":{\"Address\":\"10.0.0.2\"},"
    "  \"Service\":{\"ID\":\"web-2\",\"Service\":\"web\",\"Address\":\"10.9.9.9\",\"Port\":81},"
    "  \"Checks\":[{\"Status\":\"warning\"},{\"Status\":\"critical\"},{\"Status\":\"passing\"}]},"
    " {\"Service\":{\"ID\":\"web-3\",\"Tags\":[1,null],\"Meta\":{\"k\":5}},\"Checks\":[]},"
    " 17]";

static void test_instances(void **state)
{
    (void)state;
    struct reg_instance *v = NULL;
    size_t n = 0;
    assert_int_equal(reg__parse_instances(NULL, HEALTH_ANSWER, strlen(HEALTH_ANSWER), &v, &n), 0);
    assert_int_equal(n, 3); /* 17, not an object, has no ID to call it by: skipped */
    assert_string_equal(v[0].id, "web-1");
    assert_string_equal(v[0].service, "web");
    assert_string_equal(v[0].address, "10.0.0.1"); /* empty: the node's */
    assert_int_equal(v[0].port, 8080);
    assert_string_equal(v[0].status, "warning");
    assert_int_equal(v[0].weight, 2); /* Weights.Warning when warning */
    assert_int_equal(v[0].ntags, 2);
    assert_string_equal(v[0].tags[1], "canary");
    assert_int_equal(v[0].nmeta, 1);
    assert_string_equal(v[0].meta[0], "zone");
    assert_string_equal(v[0].meta[1], "a");
    assert_string_equal(v[1].address, "10.9.9.9");
    assert_string_equal(v[1].status, "critical"); /* the worst check */
    assert_int_equal(v[1].weight, 1);             /* no Weights: 1 */
    assert_string_equal(v[2].status, "passing");  /* no checks */
    assert_string_equal(v[2].address, "");
    assert_string_equal(v[2].tags[0], ""); /* non-strings become "" */
    assert_string_equal(v[2].meta[1], "");
    reg_instances_free(v, n);

    v = NULL;
    assert_int_equal(reg__parse_instances(NULL, "[]", 2, &v, &n), 0);
    assert_int_equal(n, 0);
    reg_instances_free(v, n);
    v = NULL;
    assert_int_equal(reg__parse_instances(NULL, "{\"a\":1}", 7, &v, &n), REG_EPROTO);
    assert_int_equal(reg__parse_instances(NULL, "[1,", 3, &v, &n), REG_EPROTO);
    assert_int_equal(reg__parse_instances(NULL, "", 0, &v, &n), REG_EPROTO);
    assert_null(v);
}

/* A listening socket on a free loopback port; its "127.0.0.1:port" in addr. */
static int listen_loopback(char addr[64])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(addr, 64, "127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

/* ---- a blocking query against a slow server ----------------------------- */

struct slow_server {
    int lfd;
    int delay_ms;
    char request[1024];
};

static void *slow_serve(void *arg)
{
    struct slow_server *s = arg;
    struct pollfd p = {s->lfd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1)
        return NULL;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t len = 0;
    while (len < sizeof(s->request) - 1 && strstr(s->request, "\r\n\r\n") == NULL) {
        struct pollfd q = {fd, POLLIN, 0};
        if (poll(&q, 1, 5000) != 1)
            break;
        ssize_t n = recv(fd, s->request + len, sizeof(s->request) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        s->request[len] = '\0';
    }
    usleep((useconds_t)s->delay_ms * 1000);
    static const char answer[] = "HTTP/1.1 200 OK\r\nX-Consul-Index: 9\r\nContent-Length: 2\r\n"
                                 "Connection: close\r\n\r\n[]";
    ssize_t w = send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL);
    (void)w;
    close(fd);
    return NULL;
}

/* The server holds a blocking query for its wait; the client must wait that
 * long on top of its own timeout. wait=0m2s was read as 0 (the number before
 * the first unit, in that unit), so the client gave up after timeout + 1 s. */
static void test_blocking_query_outlasts_timeout(void **state)
{
    (void)state;
    struct slow_server s = {.delay_ms = 1600};
    char addr[64];
    s.lfd = listen_loopback(addr);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_serve, &s), 0);
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, addr), 0);
    assert_int_equal(reg_client_set_timeout(c, 300), 0);
    struct reg_instance *v = NULL;
    size_t n = 99;
    uint64_t index = 0;
    int rc = reg_health_service(c, "web", NULL, false, 8, "0m2s", &v, &n, &index);
    if (rc != 0)
        fail_msg("blocking query: %s (%s)", reg_strerror(rc), reg_client_errmsg(c));
    assert_int_equal(n, 0);
    assert_int_equal(index, 9);
    assert_non_null(strstr(s.request, "index=8&wait=0m2s"));
    reg_instances_free(v, n);
    reg_client_free(c);
    pthread_join(t, NULL);
    close(s.lfd);
}

static void no_cb(void *arg, const struct reg_instance *list, size_t n, bool stale)
{
    (void)arg, (void)list, (void)n, (void)stale;
}

/* wait goes into the query string: only a duration may (no connection is
 * made for a bad one, so the unreachable address does not matter). */
static void test_wait_must_be_a_duration(void **state)
{
    (void)state;
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, "127.0.0.1:1"), 0);
    struct reg_instance *v = NULL;
    size_t n = 0;
    static const char *const bad[] = {"30s&passing=1", "30", "", "1m30s#x", "forever"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = reg_health_service(c, "web", NULL, false, 8, bad[i], &v, &n, NULL);
        if (rc != REG_EINVAL)
            fail_msg("wait \"%s\": %s", bad[i], reg_strerror(rc));
        assert_non_null(strstr(reg_client_errmsg(c), "invalid wait"));
    }
    assert_null(v);
    struct reg_watch *w = NULL;
    assert_int_equal(reg_watch_new(c, "web", NULL, false, "30s&x", REG_WATCH_LOOP, no_cb, NULL, &w),
                     REG_EINVAL);
    assert_null(w);
    reg_client_free(c);
}

/* ---- a watch of a server whose index rises without change -------------- */

struct rising_server {
    int lfd;
    volatile int stop;
    int requests;
};

/* Answers every request at once, each with a higher X-Consul-Index and the
 * same (empty) list, as a server whose index moves with other services'
 * writes would; counts the requests. */
static void *rising_serve(void *arg)
{
    struct rising_server *s = arg;
    while (!s->stop) {
        struct pollfd p = {s->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) != 1)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        char req[2048];
        size_t len = 0;
        req[0] = '\0';
        while (len < sizeof(req) - 1 && strstr(req, "\r\n\r\n") == NULL) {
            struct pollfd q = {fd, POLLIN, 0};
            ssize_t n = poll(&q, 1, 2000) == 1 ? recv(fd, req + len, sizeof(req) - 1 - len, 0) : 0;
            if (n <= 0)
                break;
            len += (size_t)n;
            req[len] = '\0';
        }
        s->requests++;
        char answer[256];
        int alen = snprintf(answer, sizeof(answer),
                            "HTTP/1.1 200 OK\r\nX-Consul-Index: %d\r\nContent-Length: 2\r\n"
                            "Connection: close\r\n\r\n[]", 10 + s->requests);
        ssize_t w = send(fd, answer, (size_t)alen, MSG_NOSIGNAL);
        (void)w;
        close(fd);
    }
    return NULL;
}

/* It asked as fast as the server answered (thousands a second): an answer
 * that changed nothing, early, waits UNCHANGED_MIN_MS before the next. */
static void test_watch_paces_an_index_rising_without_change(void **state)
{
    (void)state;
    struct rising_server s = {0};
    char addr[64];
    s.lfd = listen_loopback(addr);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, rising_serve, &s), 0);
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, addr), 0);
    struct reg_watch *w = NULL;
    assert_int_equal(reg_watch_new(c, "web", NULL, false, "10s", REG_WATCH_THREAD, no_cb, NULL,
                                   &w),
                     0);
    usleep(1000 * 1000);
    reg_watch_free(w);
    s.stop = 1;
    pthread_join(t, NULL);
    close(s.lfd);
    reg_client_free(c);
    /* ~10 in the second at 100 ms apart; it was hundreds or more */
    if (s.requests < 3 || s.requests > 20)
        fail_msg("%d requests in 1 s", s.requests);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_wait_table),
        cmocka_unit_test(test_wait_query_forms),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_instances),
        cmocka_unit_test(test_blocking_query_outlasts_timeout),
        cmocka_unit_test(test_wait_must_be_a_duration),
        cmocka_unit_test(test_watch_paces_an_index_rising_without_change),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
