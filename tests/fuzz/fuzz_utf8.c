/* fuzz_utf8.c -- libFuzzer target for src/utf8.c.
 *
 * The input is the text. Invariants:
 *  - utf8_valid (one-shot, at every alignment 0..7) == the reference decoder
 *    of fuzz_common.h;
 *  - utf8_feed byte by byte returns true exactly for the prefixes the
 *    reference calls extensible, and stays false (sticky) once false;
 *  - utf8_feed in chunks split at points derived from the input gives the
 *    same answers at each chunk end, and utf8_complete at the end == valid.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t bad_at;
    bool complete;
    fz_utf8_scan(data, size, &bad_at, &complete);
    const bool valid = bad_at == SIZE_MAX && complete;

    /* one-shot, at every alignment: ascii_run reads 8 bytes at a time */
    uint8_t *buf = malloc(size + 8);
    FUZZ_CHECK(buf != NULL);
    for (size_t a = 0; a < 8; a++) {
        if (size)
            memcpy(buf + a, data, size);
        FUZZ_CHECK(utf8_valid(buf + a, size) == valid);
    }
    free(buf);
    /* exact-size copy, so that ASan catches any read past the end */
    uint8_t *exact = fz_dup(data, size);
    FUZZ_CHECK(utf8_valid(exact, size) == valid);

    /* byte by byte */
    utf8_state_t st;
    utf8_init(&st);
    for (size_t i = 0; i < size; i++) {
        bool ok = utf8_feed(&st, exact + i, 1);
        FUZZ_CHECK(ok == (i + 1 < bad_at));
    }
    FUZZ_CHECK(utf8_complete(&st) == valid);
    /* sticky: nothing fed later repairs an invalid text */
    if (bad_at != SIZE_MAX) {
        FUZZ_CHECK(!utf8_feed(&st, (const uint8_t *)"a", 1));
        FUZZ_CHECK(!utf8_complete(&st));
    }

    /* chunks at input-derived points; each chunk is its own exact allocation */
    fz_rng_t g;
    fz_rng_seed(&g, size ? (uint64_t)data[0] << 8 | data[size - 1] : 0);
    for (int round = 0; round < 3; round++) {
        size_t off = 0;
        utf8_state_t cs; /* zero-initialising works like utf8_init */
        memset(&cs, 0, sizeof(cs));
        if (round == 0)
            utf8_init(&cs);
        while (off < size) {
            size_t max = round == 2 ? 3 : size - off;
            size_t n = fz_rng_range(&g, 0, max < size - off ? max : size - off);
            uint8_t *chunk = fz_dup(exact + off, n);
            bool ok = utf8_feed(&cs, chunk, n);
            free(chunk);
            off += n;
            FUZZ_CHECK(ok == (off < bad_at));
        }
        FUZZ_CHECK(utf8_complete(&cs) == valid);
    }
    free(exact);
    return 0;
}
