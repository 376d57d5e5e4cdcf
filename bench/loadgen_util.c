/* loadgen_util.c -- clocks, histograms, tokens and client frames. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "loadgen.h"

int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cpu_us(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return 0;
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

void logmsg(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    fputs("aw-loadgen: ", stderr);
    fwrite(buf, 1, (size_t)n, stderr);
}

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e >= 10 + HIST_OCTAVES)
        return HIST_N - 1;
    unsigned sub = (unsigned)(v >> (e - HIST_SUBBITS)) - (1u << HIST_SUBBITS);
    return HIST_LINEAR + (e - 10) * (1u << HIST_SUBBITS) + sub;
}

static uint64_t hist_value(unsigned i)
{
    if (i < HIST_LINEAR)
        return i;
    unsigned k = i - HIST_LINEAR;
    unsigned e = 10 + k / (1u << HIST_SUBBITS);
    uint64_t sub = k % (1u << HIST_SUBBITS) + (1u << HIST_SUBBITS);
    uint64_t width = 1ull << (e - HIST_SUBBITS);
    return sub * width + width / 2;
}

void hist_add(struct hist *h, uint64_t v)
{
    h->c[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_N; i++)
        dst->c[i] += src->c[i];
    dst->n += src->n;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->c[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

size_t put_u64(char *o, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        o[i] = tmp[n - 1 - i];
    return n;
}

size_t b64_encode(char *out, const unsigned char *in, size_t n, bool url)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char urlsafe[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *a = url ? urlsafe : std;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* --token-file: the tokens of users 0..n_file_tokens-1, in one block. */
static char *file_tokens;
static size_t *file_token_off;
static uint64_t n_file_tokens;

static bool token_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

const char *load_token_file(const char *path, uint64_t users)
{
    static char err[512];
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, sizeof err, "--token-file %s: %s", path, strerror(errno));
        return err;
    }
    size_t cap = 1 << 16, len = 0;
    char *blk = malloc(cap);
    size_t *off = malloc((size_t)(users + 1) * sizeof *off);
    char *line = NULL;
    size_t linecap = 0;
    uint64_t n = 0;
    err[0] = '\0';
    while (n < users) {
        ssize_t r = getline(&line, &linecap, f);
        if (r < 0)
            break;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r'))
            line[--r] = '\0';
        if (r == 0) {
            snprintf(err, sizeof err, "--token-file %s: line %llu is empty", path,
                     (unsigned long long)n + 1);
            break;
        }
        if (r > TOKEN_FILE_MAX) {
            snprintf(err, sizeof err, "--token-file %s: line %llu is longer than %d bytes", path,
                     (unsigned long long)n + 1, TOKEN_FILE_MAX);
            break;
        }
        for (ssize_t i = 0; i < r && !err[0]; i++)
            if (!token_char((unsigned char)line[i]))
                snprintf(
                    err, sizeof err,
                    "--token-file %s: line %llu is not a JWT (byte %zd is not base64url or '.')",
                    path, (unsigned long long)n + 1, i + 1);
        if (err[0])
            break;
        if (!blk || !off) {
            snprintf(err, sizeof err, "--token-file %s: out of memory", path);
            break;
        }
        if (len + (size_t)r + 1 > cap) {
            while (len + (size_t)r + 1 > cap)
                cap *= 2;
            char *nb = realloc(blk, cap);
            if (!nb) {
                snprintf(err, sizeof err, "--token-file %s: out of memory", path);
                break;
            }
            blk = nb;
        }
        off[n++] = len;
        memcpy(blk + len, line, (size_t)r + 1);
        len += (size_t)r + 1;
    }
    bool rerr = ferror(f);
    free(line);
    fclose(f);
    if (!err[0] && rerr)
        snprintf(err, sizeof err, "--token-file %s: read error", path);
    if (!err[0] && n < users)
        snprintf(
            err, sizeof err,
            "--token-file %s has %llu token(s); users u0..u%llu need %llu (user u<i> uses line "
            "i + 1)",
            path, (unsigned long long)n, (unsigned long long)users - 1, (unsigned long long)users);
    if (err[0]) {
        free(blk);
        free(off);
        return err;
    }
    file_tokens = blk;
    file_token_off = off;
    n_file_tokens = n;
    return NULL;
}

size_t make_jwt(char *out, size_t cap, uint64_t user)
{
    if (file_tokens) {
        out[0] = '\0';
        if (user >= n_file_tokens)
            return 0;
        const char *t = file_tokens + file_token_off[user];
        size_t n = strlen(t);
        if (n + 1 > cap)
            return 0;
        memcpy(out, t, n + 1);
        return n;
    }
    static int64_t exp;
    if (!exp)
        exp = (int64_t)time(NULL) + 3600;
    static const char head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char claims[96];
    int cl = snprintf(claims, sizeof claims, "{\"sub\":\"u%llu\",\"exp\":%lld}",
                      (unsigned long long)user, (long long)exp);
    if (cap < 256 || cl < 0)
        return 0;
    size_t n = b64_encode(out, (const unsigned char *)head, sizeof head - 1, true);
    out[n++] = '.';
    n += b64_encode(out + n, (const unsigned char *)claims, (size_t)cl, true);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    const char *secret = opt.jwt_secret ? opt.jwt_secret : "";
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)out, n, mac, &maclen);
    out[n++] = '.';
    n += b64_encode(out + n, mac, maclen, true);
    return n;
}

uint32_t fast_rand(void)
{
    static uint64_t s;
    if (!s)
        s = ((uint64_t)now_us() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32) | 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (uint32_t)(s >> 16);
}

size_t ws_client_frame(unsigned char *out, int opcode, const void *payload, size_t len)
{
    size_t h = 0;
    out[h++] = (unsigned char)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[h++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t key = fast_rand();
    unsigned char k[4];
    memcpy(k, &key, 4);
    memcpy(out + h, k, 4);
    h += 4;
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = p[i] ^ k[i & 3];
    return h + len;
}

int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
