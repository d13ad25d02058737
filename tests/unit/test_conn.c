/* Unit tests for libregistry's connection layer (conn.c) and what client.c
 * builds on it: address schemes and CONSUL_HTTP_SSL, TLS settings refused
 * with one line, a TLS handshake bounded by the deadline and the cancel fd
 * (a loopback listener that never answers), and streaming transfers
 * (reg__client_transfer) decoding Content-Length, chunked and
 * until-close bodies that arrive in small pieces from a loopback server.
 * Certificates and real handshakes are in tests/integration/test_client_tls.py. */
#define _GNU_SOURCE
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

#include "conn.h"
#include "internal.h" /* client/src: libregistry's private functions */
#include "registry/error.h"
#include "registry/registry.h"

/* A loopback listener; *port gets its port. */
static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A server that answers each of `n` connections with `answer`, written in
 * pieces of `piece` bytes, then closes. */
struct canned {
    int lfd, n;
    const char *answer;
    size_t piece;
    char request[4096];
};

static void *canned_serve(void *arg)
{
    struct canned *s = arg;
    for (int i = 0; i < s->n; i++) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        /* the request (a short body, in pieces: until 20 ms of quiet) */
        size_t have = 0;
        for (int k = 0; k < 20 && have < sizeof(s->request) - 1; k++) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, have ? 20 : 5000) <= 0) /* the rest of a body: 20 ms */
                break;
            ssize_t got = recv(fd, s->request + have, sizeof(s->request) - 1 - have, 0);
            if (got <= 0)
                break;
            have += (size_t)got;
        }
        s->request[have] = '\0';
        size_t len = strlen(s->answer);
        for (size_t off = 0; off < len; off += s->piece) {
            size_t k = len - off < s->piece ? len - off : s->piece;
            if (send(fd, s->answer + off, k, MSG_NOSIGNAL) != (ssize_t)k)
                break;
            usleep(1000); /* separate reads on the client's side */
        }
        close(fd);
    }
    return NULL;
}

/* ---- addresses ------------------------------------------------------------ */

static void test_address_forms(void **state)
{
    (void)state;
    unsetenv("CONSUL_HTTP_SSL");
    static const char *const ok[] = {"127.0.0.1:8500",         "http://127.0.0.1:8500",
                                     "https://127.0.0.1:8501", "HTTPS://h:1/",
                                     "https://[::1]:8501",     "http://a:1, https://b:2 ,c:3"};
    static const char *const bad[] = {"https://",  "https://127.0.0.1", "ftp://h:1",
                                      "http:/h:1", "https://h:1/v1",    "https://h:0"};
    setenv("REGISTRY_CACERT", "", 1); /* empty: the system's trust store */
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct reg_client *c = NULL;
        assert_int_equal(reg_client_new(&c, ok[i]), 0);
        reg_client_free(c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct reg_client *c = NULL;
        assert_int_equal(reg_client_new(&c, bad[i]), REG_EINVAL);
        assert_non_null(strstr(reg_client_errmsg(NULL), "invalid server address"));
    }
    unsetenv("REGISTRY_CACERT");
}

/* The environment's TLS files are read only for https addresses. */
static void test_env_files_checked_for_https_only(void **state)
{
    (void)state;
    struct reg_client *c = NULL;
    unsetenv("CONSUL_HTTP_SSL");
    setenv("REGISTRY_CACERT", "/nonexistent/ca.pem", 1);
    assert_int_equal(reg_client_new(&c, "127.0.0.1:1"), 0);
    reg_client_free(c);
    assert_int_equal(reg_client_new(&c, "https://127.0.0.1:1"), REG_EINVAL);
    assert_non_null(strstr(reg_client_errmsg(NULL), "/nonexistent/ca.pem"));
    unsetenv("REGISTRY_CACERT");
    setenv("CONSUL_CACERT", "/nonexistent/consul.pem", 1); /* the fallback */
    assert_int_equal(reg_client_new(&c, "https://127.0.0.1:1"), REG_EINVAL);
    assert_non_null(strstr(reg_client_errmsg(NULL), "/nonexistent/consul.pem"));
    setenv("CONSUL_HTTP_SSL", "true", 1); /* a bare address is https now */
    assert_int_equal(reg_client_new(&c, "127.0.0.1:1"), REG_EINVAL);
    unsetenv("CONSUL_CACERT");
    unsetenv("CONSUL_HTTP_SSL");
    setenv("REGISTRY_CLIENT_CERT", "/nonexistent/cert.pem", 1); /* without its key */
    assert_int_equal(reg_client_new(&c, "https://127.0.0.1:1"), REG_EINVAL);
    assert_non_null(strstr(reg_client_errmsg(NULL), "key"));
    unsetenv("REGISTRY_CLIENT_CERT");
}

/* CONSUL_HTTP_SSL as Go's strconv.ParseBool: against a plain server, a true
 * value makes the client start a TLS handshake (which fails), anything else
 * leaves it plain (and the request works). */
static void test_consul_http_ssl_values(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        bool tls;
    } cases[] = {{"1", true},    {"t", true},    {"T", true},     {"TRUE", true},
                 {"true", true}, {"True", true}, {"0", false},    {"false", false},
                 {"yes", false}, {"on", false},  {"tRUE", false}, {"", false}};
    int port;
    int lfd = listen_loopback(&port);
    struct canned s = {.lfd = lfd,
                       .n = (int)(sizeof(cases) / sizeof(cases[0])),
                       .answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                       .piece = 4096};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, canned_serve, &s), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        setenv("CONSUL_HTTP_SSL", cases[i].v, 1);
        struct reg_client *c = NULL;
        assert_int_equal(reg_client_new(&c, addr), 0);
        reg_client_set_timeout(c, 3000);
        int rc = reg_client_request(c, "GET", "/", NULL, 0, NULL, NULL, NULL, NULL);
        if (cases[i].tls) {
            assert_int_equal(rc, REG_ECONNECT);
            assert_non_null(strstr(reg_client_errmsg(c), "TLS handshake with 127.0.0.1:"));
        } else {
            assert_int_equal(rc, 0);
        }
        reg_client_free(c);
    }
    unsetenv("CONSUL_HTTP_SSL");
    pthread_join(th, NULL);
    close(lfd);
}

/* ---- TLS settings --------------------------------------------------------- */

static void test_tls_settings_refused_with_one_line(void **state)
{
    (void)state;
    char junk[] = "/tmp/test_conn_junk_XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not PEM\n", 8), 8);
    close(fd);
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, "https://127.0.0.1:1"), 0);
    const struct {
        const char *ca, *cert, *key, *name, *word;
    } cases[] = {
        {"/nonexistent/ca.pem", NULL, NULL, NULL, "cannot read CA file /nonexistent/ca.pem"},
        {junk, NULL, NULL, NULL, "cannot load CA file"},
        {NULL, junk, NULL, NULL, "needs its key"},
        {NULL, NULL, junk, NULL, "needs its key"},
        {NULL, "/nonexistent/c.pem", junk, NULL, "cannot read client certificate"},
        {NULL, junk, junk, NULL, "cannot load client certificate"},
        {NULL, NULL, NULL, "", "invalid TLS server name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            reg_client_set_tls(c, cases[i].ca, cases[i].cert, cases[i].key, cases[i].name),
            REG_EINVAL);
        const char *msg = reg_client_errmsg(c);
        assert_non_null(strstr(msg, cases[i].word));
        assert_null(strchr(msg, '\n'));
    }
    assert_int_equal(reg_client_set_tls(NULL, NULL, NULL, NULL, NULL), REG_EINVAL);
    /* the system's trust store, the address's host */
    assert_int_equal(reg_client_set_tls(c, NULL, NULL, NULL, NULL), 0);
    reg_client_free(c);
    unlink(junk);
}

/* Several threads share one client while its TLS settings are replaced:
 * each request keeps the context it started with (run under TSan in CI). */
#define SHARE_THREADS 4
#define SHARE_REQUESTS 10

struct share {
    struct reg_client *c;
    int failures_as_expected;
};

static void *share_worker(void *arg)
{
    struct share *sh = arg;
    for (int i = 0; i < SHARE_REQUESTS; i++) {
        int rc = reg_client_request(sh->c, "GET", "/", NULL, 0, NULL, NULL, NULL, NULL);
        if (rc == REG_ECONNECT && strstr(reg_client_errmsg(sh->c), "TLS handshake with"))
            __atomic_add_fetch(&sh->failures_as_expected, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_threads_share_a_client(void **state)
{
    (void)state;
    int port;
    int lfd = listen_loopback(&port); /* plain HTTP: every handshake fails, after SSL_new */
    struct canned srv = {.lfd = lfd,
                         .n = SHARE_THREADS * SHARE_REQUESTS,
                         .answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                         .piece = 4096};
    pthread_t server, th[SHARE_THREADS];
    assert_int_equal(pthread_create(&server, NULL, canned_serve, &srv), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "https://127.0.0.1:%d", port);
    struct share sh = {0};
    assert_int_equal(reg_client_new(&sh.c, addr), 0);
    reg_client_set_timeout(sh.c, 5000);
    for (int i = 0; i < SHARE_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, share_worker, &sh), 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(reg_client_set_tls(sh.c, NULL, NULL, NULL, i % 2 ? "x.example" : NULL), 0);
        usleep(2000);
    }
    for (int i = 0; i < SHARE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_join(server, NULL);
    assert_int_equal(sh.failures_as_expected, SHARE_THREADS * SHARE_REQUESTS);
    reg_client_free(sh.c);
    close(lfd);
}

/* ---- a handshake within the deadline and the cancel fd ------------------- */

static void test_handshake_bounded_by_deadline_and_cancel(void **state)
{
    (void)state;
    int port;
    int lfd = listen_loopback(&port); /* accepts (the kernel does) and never speaks */
    char sport[8], why[400];
    snprintf(sport, sizeof(sport), "%d", port);
    struct reg__tls *tls = NULL;
    assert_int_equal(reg__tls_new(&tls, NULL, NULL, NULL, NULL, why, sizeof(why)), 0);
    struct reg__conn cn;
    long long t0 = reg__now_ms();
    assert_int_equal(reg__conn_open(&cn, "127.0.0.1", sport, tls, t0 + 300, why, sizeof(why)),
                     REG_ETIMEDOUT);
    long long took = reg__now_ms() - t0;
    assert_true(took >= 290 && took < 3000);
    assert_non_null(strstr(why, "TLS handshake with 127.0.0.1:"));
    /* the cancel fd ends it at once, deadline or not */
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    reg__set_cancel_fd(p[0]);
    t0 = reg__now_ms();
    assert_int_equal(reg__conn_open(&cn, "127.0.0.1", sport, tls, t0 + 30000, why, sizeof(why)),
                     REG_ESHUTDOWN);
    assert_true(reg__now_ms() - t0 < 3000);
    reg__set_cancel_fd(-1);
    close(p[0]);
    close(p[1]);
    reg__tls_release(tls);
    close(lfd);
}

/* ---- streaming transfers --------------------------------------------------- */

struct sink {
    char buf[8192];
    size_t len;
    uint64_t last_done, last_total;
    int calls;
};

static int sink_write(void *arg, const char *b, size_t n)
{
    struct sink *s = arg;
    if (s->len + n >= sizeof(s->buf))
        return REG_ETOOBIG;
    memcpy(s->buf + s->len, b, n);
    s->len += n;
    return 0;
}

static void sink_progress(void *arg, uint64_t done, uint64_t total)
{
    struct sink *s = arg;
    assert_true(done >= s->last_done);
    s->last_done = done;
    s->last_total = total;
    s->calls++;
}

static const char *upload_data = "0123456789abcdef";
static int source_read(void *arg, char *b, size_t cap, size_t *got)
{
    size_t *off = arg; /* not struct sink: the upload test has its own */
    size_t left = strlen(upload_data) - *off;
    *got = left < cap ? left : cap;
    if (*got > 5)
        *got = 5; /* small pieces */
    memcpy(b, upload_data + *off, *got);
    *off += *got;
    return 0;
}

static int transfer(const char *answer, size_t piece, struct sink *s, char *request, size_t reqlen)
{
    int port;
    int lfd = listen_loopback(&port);
    struct canned srv = {.lfd = lfd, .n = 1, .answer = answer, .piece = piece};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, canned_serve, &srv), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, addr), 0);
    reg_client_set_timeout(c, 5000);
    struct reg__transfer t = {.download = sink_write, .progress = sink_progress, .arg = s};
    int status = 0;
    int rc = reg__client_transfer(c, "GET", "/v1/snapshot", &t, &status);
    if (rc != 0)
        snprintf(s->buf, sizeof(s->buf), "%s", reg_client_errmsg(c));
    reg_client_free(c);
    pthread_join(th, NULL);
    close(lfd);
    if (request)
        snprintf(request, reqlen, "%s", srv.request);
    return rc;
}

static void test_transfer_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *answer;
        const char *body;
        uint64_t total;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello worldTRAILING", "hello world", 11},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n"
         "0\r\n\r\n",
         "hello world", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
         "0123456789", 0},
        {"HTTP/1.0 200 OK\r\n\r\nuntil the end", "until the end", 0},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t piece = 1; piece <= 4096; piece *= 64) {
            struct sink s = {.len = 0};
            char req[4096];
            assert_int_equal(transfer(cases[i].answer, piece, &s, req, sizeof(req)), 0);
            s.buf[s.len] = '\0';
            assert_string_equal(s.buf, cases[i].body);
            assert_int_equal(s.last_total, cases[i].total);
            assert_int_equal(s.last_done, strlen(cases[i].body));
            assert_non_null(strstr(req, "GET /v1/snapshot HTTP/1.1\r\n"));
        }
    }
}

static void test_transfer_errors(void **state)
{
    (void)state;
    static const struct {
        const char *answer;
        int rc;
        const char *word;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", REG_EPROTO, "cut short after 5"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", REG_EPROTO,
         "cut short"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", REG_EPROTO,
         "malformed chunked body"},
        {"HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\nPermission denied", REG_ESERVER,
         "403: Permission denied"},
        {"HTTP/1.1 404 Not Found\r\n\r\n", REG_ENOTFOUND, "404"},
        {"garbage\r\n\r\n", REG_EPROTO, "malformed HTTP answer"},
        {"", REG_EPROTO, "malformed HTTP answer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sink s = {.len = 0};
        assert_int_equal(transfer(cases[i].answer, 3, &s, NULL, 0), cases[i].rc);
        if (strstr(s.buf, cases[i].word) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, s.buf, cases[i].word);
    }
}

static void test_transfer_upload(void **state)
{
    (void)state;
    int port;
    int lfd = listen_loopback(&port);
    struct canned srv = {.lfd = lfd,
                         .n = 1,
                         .answer = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue",
                         .piece = 4096};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, canned_serve, &srv), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    struct reg_client *c = NULL;
    assert_int_equal(reg_client_new(&c, addr), 0);
    assert_int_equal(reg_client_set_token(c, "s e/cret"), 0);
    size_t off = 0;
    struct reg__transfer t = {
        .upload = source_read, .upload_len = strlen(upload_data), .arg = &off};
    int status = 0;
    assert_int_equal(reg__client_transfer(c, "PUT", "/v1/snapshot", &t, &status), 0);
    assert_int_equal(status, 200);
    assert_int_equal(off, strlen(upload_data));
    reg_client_free(c);
    pthread_join(th, NULL);
    close(lfd);
    assert_non_null(strstr(srv.request, "PUT /v1/snapshot?token=s%20e%2Fcret HTTP/1.1\r\n"));
    assert_non_null(strstr(srv.request, "Content-Length: 16\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_forms),
        cmocka_unit_test(test_env_files_checked_for_https_only),
        cmocka_unit_test(test_consul_http_ssl_values),
        cmocka_unit_test(test_tls_settings_refused_with_one_line),
        cmocka_unit_test(test_threads_share_a_client),
        cmocka_unit_test(test_handshake_bounded_by_deadline_and_cancel),
        cmocka_unit_test(test_transfer_bodies),
        cmocka_unit_test(test_transfer_errors),
        cmocka_unit_test(test_transfer_upload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
