/* aw.c -- error texts, clock, randomness and small byte helpers shared by all
 * modules. Holds no state. */
#include "aw.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *aw_strerror(int err)
{
    switch (err) {
#define AW_ERR_TEXT(name, value, text)                                                             \
    case value:                                                                                    \
        return text;
        AW_ERRNO_MAP(AW_ERR_TEXT)
#undef AW_ERR_TEXT
    }
    return "unknown error";
}

void aw_thread_name(pthread_t thread, const char *name)
{
    char cut[16];
    snprintf(cut, sizeof cut, "%s", name);
    pthread_setname_np(thread, cut);
}

int64_t aw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int aw_random_bytes(void *buf, size_t len)
{
    return RAND_bytes(buf, (int)len) == 1 ? AW_OK : AW_EIO;
}

void aw_hex(char *out, const void *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = in;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

bool aw_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

int aw_buf_reserve(aw_buf_t *b, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    return 0;
}

int aw_buf_append(const char *bytes, size_t n, void *buf)
{
    aw_buf_t *b = buf;
    if (n == 0)
        return 0;
    if (aw_buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

void aw_buf_free(aw_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
