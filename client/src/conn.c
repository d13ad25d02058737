/*
 * conn.c — see conn.h.
 *
 * TLS runs over the same non-blocking socket as plain HTTP: SSL_connect,
 * SSL_read and SSL_write are retried after a poll() for whatever they want
 * (SSL_ERROR_WANT_READ: POLLIN, WANT_WRITE: POLLOUT), so the deadline and
 * the cancel fd bound a TLS request exactly as they bound a plain one.
 *
 * The socket is reached through a BIO of our own rather than OpenSSL's
 * socket BIO, whose write() would raise SIGPIPE in the application when the
 * server has gone: ours sends with MSG_NOSIGNAL, as the plain path does.
 *
 * OpenSSL's error queue is per thread: each operation clears it before it
 * starts and reads the reason from it when it fails.
 */
#define _GNU_SOURCE
#include "conn.h"
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "registry/error.h"

struct reg__tls {
    SSL_CTX *ctx;
    char *server_name; /* NULL: each address's host */
    int refs;          /* atomic */
};

long long reg__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A descriptor that, once readable, aborts this thread's requests (the
 * watcher's stop signal); -1 for none. See internal.h. */
static __thread int cancel_fd = -1;

void reg__set_cancel_fd(int fd)
{
    cancel_fd = fd;
}

static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - reg__now_ms();
        if (left <= 0)
            return REG_ETIMEDOUT;
        struct pollfd p[2] = {{fd, events, 0}, {cancel_fd, POLLIN, 0}};
        int r = poll(p, cancel_fd >= 0 ? 2 : 1, (int)(left > 60000 ? 60000 : left));
        if (r > 0 && cancel_fd >= 0 && (p[1].revents & POLLIN))
            return REG_ESHUTDOWN;
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return REG_EIO;
    }
}

/* ---- TLS settings -------------------------------------------------------- */

/* The first reason in this thread's OpenSSL error queue, or dflt. */
static const char *ssl_reason(const char *dflt)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : dflt;
}

static int tls_fail(SSL_CTX *ctx, char *why, size_t whylen, const char *what, const char *file)
{
    snprintf(why, whylen, "%s %s: %s", what, file, ssl_reason("unreadable"));
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return REG_EINVAL;
}

int reg__tls_new(struct reg__tls **out, const char *ca_file, const char *cert_file,
                 const char *key_file, const char *server_name, char *why, size_t whylen)
{
    if ((cert_file == NULL) != (key_file == NULL)) {
        snprintf(why, whylen, "a client certificate needs its key, and a key its certificate");
        return REG_EINVAL;
    }
    if (server_name != NULL && (*server_name == '\0' || strlen(server_name) > 253)) {
        snprintf(why, whylen, "invalid TLS server name \"%.64s\"", server_name);
        return REG_EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(why, whylen, "cannot set up TLS: %s", ssl_reason("out of memory"));
        ERR_clear_error();
        return REG_ENOMEM;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(why, whylen, "cannot set up TLS: %s", ssl_reason("TLS 1.2 unavailable"));
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return REG_ENOMEM;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* the server closes after its answer: a missing close_notify is the end
     * of the stream (the HTTP framing says whether the answer is whole) */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* OpenSSL's reason for a file it cannot open is vague: ask the system */
    const char *files[][2] = {
        {"CA file", ca_file}, {"client certificate", cert_file}, {"client key", key_file}};
    for (size_t i = 0; i < 3; i++)
        if (files[i][1] != NULL && access(files[i][1], R_OK) != 0) {
            snprintf(why, whylen, "cannot read %s %s: %s", files[i][0], files[i][1],
                     strerror(errno));
            SSL_CTX_free(ctx);
            return REG_EINVAL;
        }
    if (ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
            return tls_fail(ctx, why, whylen, "cannot load CA file", ca_file);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return tls_fail(ctx, why, whylen, "cannot load the system's", "trusted CAs");
    }
    if (cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
            return tls_fail(ctx, why, whylen, "cannot load client certificate", cert_file);
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 &&
            ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
            return tls_fail(ctx, why, whylen, "cannot load client key", key_file);
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(why, whylen, "client key %s does not match certificate %s", key_file,
                     cert_file);
            ERR_clear_error();
            SSL_CTX_free(ctx);
            return REG_EINVAL;
        }
    }
    struct reg__tls *t = calloc(1, sizeof(*t));
    char *name = server_name ? strdup(server_name) : NULL;
    if (t == NULL || (server_name && name == NULL)) {
        free(t);
        free(name);
        SSL_CTX_free(ctx);
        snprintf(why, whylen, "out of memory");
        return REG_ENOMEM;
    }
    t->ctx = ctx;
    t->server_name = name;
    t->refs = 1;
    *out = t;
    return 0;
}

struct reg__tls *reg__tls_ref(struct reg__tls *t)
{
    if (t != NULL)
        __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
    return t;
}

void reg__tls_release(struct reg__tls *t)
{
    if (t == NULL || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    SSL_CTX_free(t->ctx);
    free(t->server_name);
    free(t);
}

/* ---- our socket BIO: send(MSG_NOSIGNAL), recv ---------------------------- */

static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *buf, int len)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(fd, buf, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    if (n == 0)
        BIO_set_flags(b, BIO_FLAGS_IN_EOF); /* for BIO_CTRL_EOF, as OpenSSL's socket BIO */
    return (int)n;
}

/* FLUSH (nothing is buffered) and EOF (what SSL_OP_IGNORE_UNEXPECTED_EOF
 * asks before it takes a close without close_notify as the end). */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    if (cmd == BIO_CTRL_EOF)
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    return 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_sock_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "registry socket");
    if (m == NULL)
        return;
    if (BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1) {
        BIO_meth_free(m);
        return;
    }
    sock_method = m;
}

/* ---- connections --------------------------------------------------------- */

/* Why the last SSL_* call on ssl failed, for a message. */
static const char *ssl_why(SSL *ssl, int err, int sys_errno, char *buf, size_t len)
{
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    } else if (err == SSL_ERROR_SYSCALL) {
        snprintf(buf, len, "%s", sys_errno ? strerror(sys_errno) : "connection closed");
    } else {
        unsigned long e = ERR_peek_last_error();
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        snprintf(buf, len, "%s", r ? r : "TLS error");
        if (e && ERR_GET_REASON(e) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
            snprintf(buf, len, "%s (the server wants a client certificate)", r);
    }
    ERR_clear_error();
    return buf;
}

/* Wait for what SSL wants after err; 0 to retry, else a REG_E* code. */
static int ssl_wait(struct reg__conn *cn, int err, long long deadline)
{
    if (err == SSL_ERROR_WANT_READ)
        return wait_fd(cn->fd, POLLIN, deadline);
    if (err == SSL_ERROR_WANT_WRITE)
        return wait_fd(cn->fd, POLLOUT, deadline);
    return REG_EIO;
}

static int tls_start(struct reg__conn *cn, struct reg__tls *tls, const char *host,
                     long long deadline, char *why, size_t whylen)
{
    pthread_once(&sock_method_once, make_sock_method);
    ERR_clear_error();
    SSL *ssl = SSL_new(tls->ctx);
    BIO *bio = sock_method ? BIO_new(sock_method) : NULL;
    if (ssl == NULL || bio == NULL) {
        SSL_free(ssl);
        BIO_free(bio);
        ERR_clear_error();
        snprintf(why, whylen, "TLS with %s: out of memory", cn->peer);
        return REG_ENOMEM;
    }
    BIO_set_data(bio, (void *)(intptr_t)cn->fd);
    SSL_set_bio(ssl, bio, bio);
    cn->ssl = ssl;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    /* Verify the name we were given, else the address's host: an IP literal
     * against the certificate's IP addresses (and no SNI, which may not be
     * an address: RFC 6066), a name against its DNS names. */
    const char *name = tls->server_name ? tls->server_name : host;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                   : SSL_set1_host(ssl, name) == 1 && SSL_set_tlsext_host_name(ssl, name) == 1;
    if (ok != 1) {
        snprintf(why, whylen, "TLS with %s: cannot verify the name \"%.64s\"", cn->peer, name);
        ERR_clear_error();
        return REG_ECONNECT;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(ssl);
        if (r == 1)
            return 0;
        int saved = errno, err = SSL_get_error(ssl, r);
        int w = ssl_wait(cn, err, deadline);
        if (w == 0)
            continue;
        char buf[200];
        if (w == REG_EIO) {
            cn->fatal = true;
            snprintf(why, whylen, "TLS handshake with %s failed: %s", cn->peer,
                     ssl_why(ssl, err, saved, buf, sizeof(buf)));
            return REG_ECONNECT;
        }
        snprintf(why, whylen, "TLS handshake with %s: %s", cn->peer,
                 w == REG_ETIMEDOUT ? "timed out" : "cancelled");
        ERR_clear_error();
        return w;
    }
}

int reg__conn_open(struct reg__conn *cn, const char *host, const char *port, struct reg__tls *tls,
                   long long deadline, char *why, size_t whylen)
{
    cn->fd = -1;
    cn->ssl = NULL;
    cn->fatal = false;
    snprintf(cn->peer, sizeof(cn->peer), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(why, whylen, "connect %s: %s", cn->peer, gai_strerror(gai));
        return REG_ECONNECT;
    }
    int rc = REG_ECONNECT;
    for (struct addrinfo *a = ai; a && rc != 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(why, whylen, "connect %s: %s", cn->peer, strerror(errno));
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            rc = 0;
        } else if (errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int err = 0;
            socklen_t len = sizeof(err);
            if (w == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
                rc = 0;
            else if (w == REG_ESHUTDOWN || w == REG_ETIMEDOUT)
                rc = w;
            snprintf(why, whylen, "connect %s: %s", cn->peer,
                     w == REG_ETIMEDOUT   ? "connect timed out"
                     : w == REG_ESHUTDOWN ? "cancelled"
                                          : strerror(err));
        } else {
            snprintf(why, whylen, "connect %s: %s", cn->peer, strerror(errno));
        }
        if (rc == 0)
            cn->fd = fd;
        else
            close(fd);
        if (rc == REG_ESHUTDOWN || rc == REG_ETIMEDOUT)
            break;
    }
    freeaddrinfo(ai);
    if (rc != 0 || tls == NULL)
        return rc;
    rc = tls_start(cn, tls, host, deadline, why, whylen);
    if (rc != 0)
        reg__conn_close(cn);
    return rc;
}


/* After an SSL_read/SSL_write that did not complete: wait for what it
 * wants; a real failure marks cn unusable and says why. */
static int ssl_io_wait(struct reg__conn *cn, int err, int saved_errno, long long deadline,
                       char *why, size_t whylen)
{
    int w = ssl_wait(cn, err, deadline);
    if (w == REG_EIO) {
        char b[200];
        cn->fatal = true;
        snprintf(why, whylen, "TLS connection to %s failed: %s", cn->peer,
                 ssl_why(cn->ssl, err, saved_errno, b, sizeof(b)));
    }
    return w;
}

int reg__conn_send(struct reg__conn *cn, const void *buf, size_t len, long long deadline, char *why,
                   size_t whylen)
{
    const char *p = buf;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        int w;
        if (cn->ssl != NULL) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_write(cn->ssl, p, (int)chunk);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            int saved = errno, err = SSL_get_error(cn->ssl, n);
            if (err == SSL_ERROR_SYSCALL) {
                /* TLS 1.3: the server judges our certificate after the
                 * handshake; its alert may be waiting while our write meets
                 * the closed connection. Read it for the real reason. */
                char c;
                ERR_clear_error();
                if (SSL_read(cn->ssl, &c, 1) <= 0 && ERR_peek_last_error() != 0)
                    err = SSL_ERROR_SSL;
            }
            w = ssl_io_wait(cn, err, saved, deadline, why, whylen);
        } else {
            ssize_t n = send(cn->fd, p, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                w = wait_fd(cn->fd, POLLOUT, deadline);
            } else {
                snprintf(why, whylen, "%s: %s", cn->peer, n < 0 ? strerror(errno) : "closed");
                w = REG_EIO;
            }
        }
        if (w != 0)
            return w;
    }
    return 0;
}

int reg__conn_recv(struct reg__conn *cn, void *buf, size_t cap, size_t *got, long long deadline,
                   char *why, size_t whylen)
{
    if (cap > (1u << 30))
        cap = 1u << 30;
    for (;;) {
        int w;
        if (cn->ssl != NULL) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_read(cn->ssl, buf, (int)cap);
            if (n > 0) {
                *got = (size_t)n;
                return 0;
            }
            int saved = errno, err = SSL_get_error(cn->ssl, n);
            if (err == SSL_ERROR_ZERO_RETURN) {
                *got = 0;
                return 0;
            }
            w = ssl_io_wait(cn, err, saved, deadline, why, whylen);
        } else {
            ssize_t n = recv(cn->fd, buf, cap, 0);
            if (n >= 0) {
                *got = (size_t)n;
                return 0;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                w = wait_fd(cn->fd, POLLIN, deadline);
            } else {
                snprintf(why, whylen, "%s: %s", cn->peer, strerror(errno));
                w = REG_EIO;
            }
        }
        if (w != 0)
            return w;
    }
}

void reg__conn_close(struct reg__conn *cn)
{
    if (cn->ssl != NULL) {
        ERR_clear_error();
        if (!cn->fatal && SSL_is_init_finished((SSL *)cn->ssl))
            (void)SSL_shutdown(cn->ssl); /* one non-blocking try: no wait for the peer's */
        ERR_clear_error();
        SSL_free(cn->ssl); /* frees the BIO too */
        cn->ssl = NULL;
    }
    if (cn->fd >= 0)
        close(cn->fd);
    cn->fd = -1;
}

int reg__status_code(const char *p, size_t len)
{
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return -1;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        code = code * 10 + (p[i] - '0');
    }
    if (len > 12 && p[12] != ' ' && p[12] != '\r')
        return -1;
    return code >= 100 ? code : -1;
}
