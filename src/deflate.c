/* deflate.c -- permessage-deflate negotiation and the zlib work behind it.
 * Owns the shared compressor streams and the inflate streams it is handed;
 * caches compressed variants on shared frames. Never sees a socket. */
#include "deflate.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aw.h"
#include "ws.h"

/* ---- negotiation (RFC 7692 section 7) ---- */

typedef struct offer {
    bool server_no_ctx, client_no_ctx;
    int server_bits; /* 0: not offered */
    int client_bits; /* 0: not offered, -1: offered without a value */
    bool bad;
} offer_t;

/* Parses the parameters of one offer: "; name[=value]" until ',' or end. */
static const char *parse_params(const char *p, offer_t *o)
{
    while (*p && *p != ',') {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        if (!*p || *p == ',')
            break;
        char name[40], value[16] = "";
        size_t n = 0;
        while (*p && *p != '=' && *p != ';' && *p != ',' && *p != ' ' && n < sizeof name - 1)
            name[n++] = *p++;
        name[n] = '\0';
        while (*p == ' ')
            p++;
        bool has_value = *p == '=';
        if (has_value) {
            p++;
            bool quoted = *p == '"';
            p += quoted;
            size_t v = 0;
            while (*p && *p != ';' && *p != ',' && *p != '"' && *p != ' ' && v < sizeof value - 1)
                value[v++] = *p++;
            value[v] = '\0';
            if (quoted && *p == '"')
                p++;
        }
        while (*p && *p != ';' && *p != ',')
            p++; /* anything left of this parameter makes it bad below */
        int bits = has_value && isdigit((unsigned char)value[0]) ? atoi(value) : 0;
        bool bits_ok = bits >= 8 && bits <= 15 && strlen(value) <= 2;
        if (strcasecmp(name, "server_no_context_takeover") == 0 && !has_value && !o->server_no_ctx)
            o->server_no_ctx = true;
        else if (strcasecmp(name, "client_no_context_takeover") == 0 && !has_value &&
                 !o->client_no_ctx)
            o->client_no_ctx = true;
        else if (strcasecmp(name, "server_max_window_bits") == 0 && bits_ok && !o->server_bits)
            o->server_bits = bits;
        else if (strcasecmp(name, "client_max_window_bits") == 0 && !o->client_bits &&
                 (!has_value || bits_ok))
            o->client_bits = has_value ? bits : -1;
        else
            o->bad = true; /* unknown, repeated or invalid: decline this offer */
    }
    return p;
}

bool deflate_negotiate(const char *offers, uint8_t client_max_bits, deflate_params_t *out,
                       char *resp, size_t resplen)
{
    for (const char *p = offers; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *name = p;
        while (*p && *p != ';' && *p != ',' && *p != ' ')
            p++;
        size_t nlen = (size_t)(p - name);
        offer_t o = {0};
        p = parse_params(p, &o);
        if (nlen != 18 || strncasecmp(name, "permessage-deflate", 18) != 0 || o.bad)
            continue;
        if (o.server_bits == 8)
            continue; /* zlib's raw deflate cannot keep a 256-byte window */
        out->server_window_bits = (uint8_t)(o.server_bits ? o.server_bits : 15);
        out->client_no_context_takeover = o.client_no_ctx;
        int cbits = 15;
        if (o.client_bits) /* the client lets us choose: at most what it said */
            cbits = o.client_bits > 0 && o.client_bits < client_max_bits ? o.client_bits
                                                                         : client_max_bits;
        if (cbits < 9)
            cbits = 9;
        out->client_window_bits = (uint8_t)cbits;
        int n = snprintf(resp, resplen, "permessage-deflate; server_no_context_takeover");
        if (o.client_no_ctx)
            n += snprintf(resp + n, resplen - (size_t)n, "; client_no_context_takeover");
        if (o.server_bits)
            n += snprintf(resp + n, resplen - (size_t)n, "; server_max_window_bits=%d",
                          out->server_window_bits);
        if (o.client_bits)
            snprintf(resp + n, resplen - (size_t)n, "; client_max_window_bits=%d", cbits);
        return true;
    }
    return false;
}

/* ---- compression of shared frames ---- */

void deflater_init(deflater_t *d, size_t min_bytes)
{
    memset(d, 0, sizeof *d);
    d->min_bytes = min_bytes;
}

void deflater_dispose(deflater_t *d)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(d->_streams); i++) {
        if (d->_streams[i]) {
            deflateEnd(d->_streams[i]);
            free(d->_streams[i]);
        }
    }
}

static z_stream *compressor(deflater_t *d, uint8_t wb)
{
    if (!d->_streams[wb]) {
        z_stream *zs = calloc(1, sizeof *zs);
        /* memLevel 8 and the default level: see docs/benchmarks.md for why */
        if (!zs || deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -wb, 8,
                                Z_DEFAULT_STRATEGY) != Z_OK) {
            free(zs);
            return NULL;
        }
        d->_streams[wb] = zs;
    }
    return d->_streams[wb];
}

/* Compresses payload into a new frame with RSV1 set, or NULL. */
static frame_t *compress_frame(z_stream *zs, uint8_t opcode, const uint8_t *payload, size_t len)
{
    size_t cap = deflateBound(zs, (uLong)len) + 16;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return NULL;
    deflateReset(zs); /* no context takeover: each message stands alone */
    zs->next_in = (Bytef *)payload;
    zs->avail_in = (uInt)len;
    zs->next_out = buf;
    zs->avail_out = (uInt)cap;
    int rc = deflate(zs, Z_SYNC_FLUSH);
    size_t out = cap - zs->avail_out;
    frame_t *f = NULL;
    /* a sync flush ends with 00 00 ff ff, which the sender removes (7.2.1) */
    if (rc == Z_OK && zs->avail_in == 0 && out >= 4 && out - 4 < len) {
        f = frame_ws(opcode, buf, out - 4);
        if (f)
            f->data[0] |= 0x40; /* RSV1: compressed */
    }
    free(buf);
    return f;
}

frame_t *deflater_frame(deflater_t *d, frame_t *f, uint8_t wb)
{
    uint8_t opcode = f->data[0] & 0x0F;
    if (opcode != WS_OP_TEXT && opcode != WS_OP_BINARY)
        return f;
    size_t len;
    const uint8_t *payload = frame_ws_payload(f, &len);
    if (len < d->min_bytes || wb < 9 || wb > 15)
        return f;
    frame_t *z = frame_variant(f, wb);
    if (z)
        return z;
    z_stream *zs = compressor(d, wb);
    z = zs ? compress_frame(zs, opcode, payload, len) : NULL;
    frame_set_variant(f, wb, z ? z : f); /* remember "does not shrink" too */
    if (!z)
        return f;
    frame_unref(z); /* f's cache holds it now */
    return z;
}

/* ---- inflation of client messages ---- */

void deflate_inflate_free(z_stream *zs)
{
    if (zs) {
        inflateEnd(zs);
        free(zs);
    }
}

int deflate_inflate(z_stream **zsp, uint8_t window_bits, bool reset_after, const uint8_t *in,
                    size_t n, size_t limit, uint8_t **out, size_t *outlen)
{
    if (!*zsp) {
        z_stream *zs = calloc(1, sizeof *zs);
        if (!zs || inflateInit2(zs, -(int)window_bits) != Z_OK) {
            free(zs);
            return AW_ENOMEM;
        }
        *zsp = zs;
    }
    z_stream *zs = *zsp;
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    size_t cap = n * 4 + 64 < limit + 1 ? n * 4 + 64 : limit + 1;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return AW_ENOMEM;
    size_t got = 0;
    int rc = AW_OK;
    bool ended = false; /* the message's last block had BFINAL set */
    for (int part = 0; part < 2 && rc == AW_OK && !ended; part++) {
        zs->next_in = (Bytef *)(part ? tail : in);
        zs->avail_in = (uInt)(part ? sizeof tail : n);
        while (zs->avail_in > 0 || zs->avail_out == 0) {
            if (got == cap) {
                if (cap > limit) {
                    rc = AW_ETOOBIG;
                    break;
                }
                size_t ncap = cap * 2 < limit + 1 ? cap * 2 : limit + 1;
                uint8_t *nb = realloc(buf, ncap);
                if (!nb) {
                    rc = AW_ENOMEM;
                    break;
                }
                buf = nb;
                cap = ncap;
            }
            zs->next_out = buf + got;
            zs->avail_out = (uInt)(cap - got);
            int z = inflate(zs, Z_SYNC_FLUSH);
            got = cap - zs->avail_out;
            if (z == Z_STREAM_END) {
                /* RFC 7692 section 7.2.3.4: a sender may end a message with
                 * a final block; the tail we appended is then not read, but
                 * anything else after the final block is garbage. */
                ended = true;
                if (part == 0 && zs->avail_in > 0)
                    rc = AW_EPROTO;
                break;
            }
            if (z == Z_NEED_DICT || z == Z_DATA_ERROR || z == Z_MEM_ERROR) {
                rc = z == Z_MEM_ERROR ? AW_ENOMEM : AW_EPROTO;
                break;
            }
            if (z == Z_BUF_ERROR && zs->avail_in == 0 && zs->avail_out > 0)
                break;
            if (got > limit) {
                rc = AW_ETOOBIG;
                break;
            }
        }
    }
    if (rc == AW_OK && got > limit)
        rc = AW_ETOOBIG;
    if (reset_after || rc != AW_OK) {
        inflateReset(zs);
    } else if (ended) {
        /* The stream ended, but with context takeover the next message may
         * refer to this one's bytes: start a new stream over the window. */
        static _Thread_local Bytef window[1 << 15];
        uInt wlen = sizeof window;
        if (inflateGetDictionary(zs, window, &wlen) != Z_OK || inflateReset(zs) != Z_OK ||
            (wlen && inflateSetDictionary(zs, window, wlen) != Z_OK))
            rc = AW_ENOMEM;
    }
    if (rc != AW_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *outlen = got;
    return AW_OK;
}
