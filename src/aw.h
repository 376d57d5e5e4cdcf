/* aw.h -- what every agentwire module shares: error codes, time, randomness.
 *
 * Actions return 0 (AW_OK) or a negative AW_E* code from AW_ERRNO_MAP;
 * predicates return bool. Codecs keep "need more bytes" (AW_EAGAIN), "peer
 * broke the protocol" (AW_EPROTO and friends) and "caller bug" (AW_EINVAL)
 * apart. Nothing here does I/O except aw_random_bytes. */
#ifndef AW_H
#define AW_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AW_ERRNO_MAP(X)                                                                            \
    X(OK, 0, "ok")                                                                                 \
    X(AGAIN, -1, "need more bytes")                                                                \
    X(PROTO, -2, "protocol violation")                                                             \
    X(UTF8, -3, "invalid UTF-8")                                                                   \
    X(TOOBIG, -4, "too large")                                                                     \
    X(INVAL, -5, "invalid argument")                                                               \
    X(NOMEM, -6, "out of memory")                                                                  \
    X(MALFORMED, -7, "malformed input")                                                            \
    X(ALG, -8, "algorithm not allowed")                                                            \
    X(SIG, -9, "bad signature")                                                                    \
    X(EXPIRED, -10, "expired")                                                                     \
    X(NOTYET, -11, "not yet valid")                                                                \
    X(ISS, -12, "wrong issuer")                                                                    \
    X(AUD, -13, "wrong audience")                                                                  \
    X(CLAIMS, -14, "missing or invalid claim")                                                     \
    X(LIMIT, -15, "limit reached")                                                                 \
    X(NOTFOUND, -16, "not found")                                                                  \
    X(IO, -17, "I/O error")                                                                        \
    X(CLOSED, -18, "closed")                                                                       \
    X(HEADERS, -19, "request head too large")                                                      \
    X(UNAVAIL, -20, "unavailable")                                                                 \
    X(CONFLICT, -21, "conflict")

enum {
#define AW_ERR_ENUM(name, value, text) AW_E##name = value,
    AW_ERRNO_MAP(AW_ERR_ENUM)
#undef AW_ERR_ENUM
};
#define AW_OK AW_EOK

/* Static text for an AW_E* code; never NULL. */
const char *aw_strerror(int err);

/* Wall clock in milliseconds since the Unix epoch. */
int64_t aw_now_ms(void);

/* Names a thread just created (uv_thread_t is pthread_t on Unix), as ps
 * -L, top -H and perf show it (Linux keeps 15 bytes). Named by its creator,
 * so the name is there before the creator goes on. */
void aw_thread_name(pthread_t thread, const char *name);

/* Fills buf with len cryptographically random bytes. 0 or AW_EIO. */
int aw_random_bytes(void *buf, size_t len);

/* Writes 2*len lowercase hex digits and a NUL to out (size >= 2*len+1). */
void aw_hex(char *out, const void *in, size_t len);

/* Constant-time comparison of two byte strings; different lengths differ. */
bool aw_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/* What malloc(n) really takes, roughly: glibc's 8-byte header, rounded up
 * to 16. Memory caps count allocations with it. */
#define AW_ALLOC_COST(n) ((((size_t)(n) + 8 + 15) / 16) * 16)

#define AW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A growable byte buffer: the one way this code base accumulates bytes of
 * unknown length (serializations, message fragments). Zero-initialize. */
typedef struct aw_buf {
    char *data;
    size_t len, cap;
} aw_buf_t;

/* Appends n bytes (data may be NULL when n is 0), doubling the capacity as
 * needed. 0, or -1 when out of memory (the buffer is then unchanged). Its
 * shape is jansson's json_dump_callback_t: pass an aw_buf_t * as arg. */
int aw_buf_append(const char *bytes, size_t n, void *buf);

/* Makes room for n more bytes after len (doubling, as append does). 0 or -1
 * (out of memory; unchanged). */
int aw_buf_reserve(aw_buf_t *b, size_t n);

/* Frees the bytes and zeroes the buffer. */
void aw_buf_free(aw_buf_t *b);

#endif
