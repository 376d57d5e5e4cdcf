/* base64.h -- base64 (RFC 4648 section 4) and base64url (section 5) codecs.
 * Pure: no I/O, no globals, no allocation; the caller owns every buffer. */
#ifndef AW_BASE64_H
#define AW_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Bytes needed to encode n bytes with padding, plus one for the NUL. */
#define BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4 + 1)
/* Upper bound of bytes that n characters decode to. */
#define BASE64_DECODED_MAX(n) (((n) + 3) / 4 * 3)

/* Standard alphabet with '=' padding; writes a NUL. Returns the length
 * written (without the NUL). out must hold BASE64_ENCODED_SIZE(n) bytes. */
size_t base64_encode(char *out, const uint8_t *in, size_t n);

/* URL alphabet, no padding; writes a NUL. Returns the length written. */
size_t base64url_encode(char *out, const uint8_t *in, size_t n);

/* URL alphabet; padding is optional but, when present, must be correct.
 * Rejects characters outside the alphabet, a length of 1 mod 4, and
 * non-zero trailing bits. out must hold BASE64_DECODED_MAX(n) bytes.
 * Returns 0 and sets *outlen, or AW_EMALFORMED. */
int base64url_decode(uint8_t *out, size_t *outlen, const char *in, size_t n);

/* Standard alphabet, padding required (used for Sec-WebSocket-Key).
 * Same results as base64url_decode. */
int base64_decode(uint8_t *out, size_t *outlen, const char *in, size_t n);

#endif
