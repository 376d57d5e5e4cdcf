/* tls.c -- OpenSSL server contexts and connections over memory BIOs. Owns
 * the SSL objects; knows nothing of libuv, sessions or HTTP. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"

struct tls_conn {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer, read by OpenSSL */
    BIO *wbio; /* ciphertext for the peer, written by OpenSSL */
};

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    /* the offer is a list of length-prefixed names */
    for (unsigned int i = 0; i < inlen && i + 1 + in[i] <= inlen; i += 1 + in[i]) {
        if (in[i] == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
}

static void ssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[160];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s '%s': %s", what, file, e ? buf : "unknown error");
    ERR_clear_error();
}

int tls_ctx_load(tls_ctx_t *t, const char *cert_file, const char *key_file, char *err,
                 size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context");
        return AW_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections hold no buffers */
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_reason(err, errlen, "--tls-cert", cert_file);
        SSL_CTX_free(ctx);
        return AW_EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_reason(err, errlen, "--tls-key", key_file);
        SSL_CTX_free(ctx);
        return AW_EINVAL;
    }
    SSL_CTX_free(t->_ctx); /* connections made with it keep their own reference */
    t->_ctx = ctx;
    return AW_OK;
}

void tls_ctx_dispose(tls_ctx_t *t)
{
    SSL_CTX_free(t->_ctx);
    t->_ctx = NULL;
}

tls_conn_t *tls_conn_new(tls_ctx_t *t)
{
    tls_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ssl = SSL_new(t->_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        SSL_free(c->ssl);
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        free(c);
        return NULL;
    }
    BIO_set_mem_eof_return(c->rbio, -1);   /* empty means "want more", not EOF */
    SSL_set_bio(c->ssl, c->rbio, c->wbio); /* the SSL owns both BIOs now */
    SSL_set_accept_state(c->ssl);
    return c;
}

void tls_conn_free(tls_conn_t *c)
{
    if (c) {
        SSL_free(c->ssl);
        free(c);
    }
}

int tls_conn_feed(tls_conn_t *c, const char *data, size_t len,
                  void (*on_plain)(void *arg, char *p, size_t n), void *arg)
{
    if (len && BIO_write(c->rbio, data, (int)len) != (int)len)
        return AW_ENOMEM;
    char buf[16384];
    for (;;) {
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n > 0) {
            on_plain(arg, buf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return AW_OK;
        return AW_EPROTO; /* a bad handshake, a bad record, or the peer's close_notify */
    }
}

int tls_conn_encrypt(tls_conn_t *c, const void *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t done = 0;
        if (SSL_write_ex(c->ssl, (const char *)data + off, len - off, &done) != 1) {
            ERR_clear_error();
            return AW_EPROTO;
        }
        off += done;
    }
    return AW_OK;
}

frame_t *tls_conn_take_out(tls_conn_t *c)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return NULL;
    frame_t *f = frame_alloc(n);
    if (!f)
        return NULL;
    BIO_read(c->wbio, f->data, (int)n);
    return f;
}
