/*
 * tls.c — the CA, certificate and key, as three shared OpenSSL contexts
 * (see tls.h). One mutex guards the pointers; contexts are reference
 * counted, so a reload never pulls one from under a connection.
 */
#include "tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "registry/error.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *ca_file, *cert_file, *key_file;
    bool verify_incoming;
    int min_version;
    char server_name[300];
    SSL_CTX *api, *peer_server, *client;
} tls;

/* OpenSSL's oldest queued reason, or a fallback. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

enum ctx_role { ROLE_API, ROLE_PEER_SERVER, ROLE_CLIENT };

static SSL_CTX *build(enum ctx_role role, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(role == ROLE_CLIENT ? TLS_client_method() : TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", ossl_reason());
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, tls.min_version) != 1) {
        snprintf(err, errlen, "tls_min_version: %s", ossl_reason());
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_load_verify_locations(ctx, tls.ca_file, NULL) != 1) {
        snprintf(err, errlen, "tls_ca_file: %.200s: %s", tls.ca_file, ossl_reason());
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_file) != 1) {
        snprintf(err, errlen, "tls_cert_file: %.200s: %s", tls.cert_file, ossl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, tls.key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls_key_file: %.200s: %s", tls.key_file, ossl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls_key_file: %.200s does not match tls_cert_file: %s",
                 tls.key_file, ossl_reason());
        goto fail;
    }
    switch (role) {
    case ROLE_API: {
        /* ask every client for a certificate, so that servers calling
         * internal routes present theirs; require one only when told */
        int mode = SSL_VERIFY_PEER | (tls.verify_incoming ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        SSL_CTX_set_verify(ctx, mode, NULL);
        STACK_OF(X509_NAME) *cas = SSL_load_client_CA_file(tls.ca_file);
        if (cas != NULL)
            SSL_CTX_set_client_CA_list(ctx, cas);
        static const unsigned char sid[] = "registryd-api";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
        break;
    }
    case ROLE_PEER_SERVER: {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        static const unsigned char sid[] = "registryd-raft";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
        break;
    }
    case ROLE_CLIENT:
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        break;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Build all three from the files named in `tls`; swap them in. */
static int build_all(char *err, size_t errlen)
{
    SSL_CTX *api = build(ROLE_API, err, errlen);
    SSL_CTX *peer = api ? build(ROLE_PEER_SERVER, err, errlen) : NULL;
    SSL_CTX *client = peer ? build(ROLE_CLIENT, err, errlen) : NULL;
    if (client == NULL) {
        SSL_CTX_free(api);
        SSL_CTX_free(peer);
        return REG_ECONFIG;
    }
    pthread_mutex_lock(&lock);
    SSL_CTX *old[3] = {tls.api, tls.peer_server, tls.client};
    tls.api = api;
    tls.peer_server = peer;
    tls.client = client;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 3; i++)
        SSL_CTX_free(old[i]);
    return 0;
}

int tls_start(const struct tls_opts *o, char *err, size_t errlen)
{
    if (o->ca_file == NULL || o->cert_file == NULL || o->key_file == NULL)
        return 0;
    const char *v = o->min_version ? o->min_version : "TLSv1_2";
    tls.min_version = strcasecmp(v, "TLSv1_3") == 0 || strcasecmp(v, "tls13") == 0
                          ? TLS1_3_VERSION
                          : TLS1_2_VERSION;
    tls.verify_incoming = o->verify_incoming;
    const char *dom = o->domain ? o->domain : "registry.";
    size_t dl = strlen(dom);
    if (dl > 0 && dom[dl - 1] == '.')
        dl--;
    snprintf(tls.server_name, sizeof(tls.server_name), "server.%s.%.*s",
             o->datacenter ? o->datacenter : "dc1", (int)dl, dom);
    tls.ca_file = strdup(o->ca_file);
    tls.cert_file = strdup(o->cert_file);
    tls.key_file = strdup(o->key_file);
    if (tls.ca_file == NULL || tls.cert_file == NULL || tls.key_file == NULL) {
        tls_stop();
        snprintf(err, errlen, "TLS: out of memory");
        return REG_ENOMEM;
    }
    int rc = build_all(err, errlen);
    if (rc != 0)
        tls_stop();
    return rc;
}

int tls_reload(char *err, size_t errlen)
{
    if (!tls_enabled())
        return 0;
    return build_all(err, errlen);
}

void tls_stop(void)
{
    pthread_mutex_lock(&lock);
    SSL_CTX *old[3] = {tls.api, tls.peer_server, tls.client};
    tls.api = tls.peer_server = tls.client = NULL;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 3; i++)
        SSL_CTX_free(old[i]);
    free(tls.ca_file);
    free(tls.cert_file);
    free(tls.key_file);
    tls.ca_file = tls.cert_file = tls.key_file = NULL;
}

bool tls_enabled(void)
{
    pthread_mutex_lock(&lock);
    bool on = tls.client != NULL;
    pthread_mutex_unlock(&lock);
    return on;
}

static SSL_CTX *ref(SSL_CTX **which)
{
    pthread_mutex_lock(&lock);
    SSL_CTX *ctx = *which;
    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&lock);
    return ctx;
}

SSL_CTX *tls_api_ctx(void)
{
    return ref(&tls.api);
}

SSL_CTX *tls_peer_server_ctx(void)
{
    return ref(&tls.peer_server);
}

SSL_CTX *tls_client_ctx(void)
{
    return ref(&tls.client);
}

SSL *tls_client_ssl(void)
{
    SSL_CTX *ctx = tls_client_ctx();
    if (ctx == NULL)
        return NULL;
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (ssl == NULL)
        return NULL;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, tls.server_name) != 1 ||
        SSL_set_tlsext_host_name(ssl, tls.server_name) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

const char *tls_server_name(void)
{
    return tls.server_name;
}

bool tls_peer_is_server(SSL *ssl)
{
    if (ssl == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return false;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert == NULL)
        return false;
    bool ok = X509_check_host(cert, tls.server_name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                              NULL) == 1;
    X509_free(cert);
    return ok;
}
