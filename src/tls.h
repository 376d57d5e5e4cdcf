/* tls.h -- TLS for client connections with OpenSSL over memory BIOs: the
 * socket code hands ciphertext in and gets plaintext back, and hands
 * plaintext in and gets ciphertext to write. No sockets here. TLS 1.2 and
 * 1.3, ALPN http/1.1, and a context that can be reloaded (SIGHUP) while
 * connections made with the old one live on (OpenSSL counts its users). */
#ifndef AW_TLS_H
#define AW_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "frame.h"

typedef struct tls_ctx {
    void *_ctx; /* SSL_CTX *, replaced on reload */
} tls_ctx_t;

/* Loads (or reloads) the certificate chain and key (PEM files). On failure
 * the previous context, if any, stays in use; AW_EINVAL and a one-line
 * reason in err. */
int tls_ctx_load(tls_ctx_t *t, const char *cert_file, const char *key_file, char *err,
                 size_t errlen);
void tls_ctx_dispose(tls_ctx_t *t);

typedef struct tls_conn tls_conn_t;

/* A server-side TLS connection on the current context. NULL when out of
 * memory. */
tls_conn_t *tls_conn_new(tls_ctx_t *t);
void tls_conn_free(tls_conn_t *c);

/* Feeds ciphertext; each run of decrypted bytes goes to on_plain(arg, p, n).
 * 0, or AW_EPROTO when the peer broke TLS (close the socket after writing
 * what tls_conn_take_out gives: it may hold an alert). */
int tls_conn_feed(tls_conn_t *c, const char *data, size_t len,
                  void (*on_plain)(void *arg, char *p, size_t n), void *arg);

/* Encrypts plaintext for sending. 0 or AW_EPROTO. */
int tls_conn_encrypt(tls_conn_t *c, const void *data, size_t len);

/* All ciphertext waiting to be written (handshake, records, alerts) as a
 * new frame, or NULL when there is none. */
frame_t *tls_conn_take_out(tls_conn_t *c);

#endif
