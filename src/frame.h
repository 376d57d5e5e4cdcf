/* frame.h -- a ready-to-send byte string (a WebSocket frame, or an HTTP
 * response) shared by reference count.
 *
 * A frame starts with one reference, held by whoever made it. Every outgoing
 * queue that holds it takes one (frame_ref) and drops it when the bytes have
 * been written or the queue is discarded (frame_unref); history will take one
 * while it retains the event. At zero the frame is freed. Fan-out to N
 * connections therefore copies no payload bytes. Event frames are shared by
 * the queues of several loops (threads), so the count is atomic; the bytes
 * and the variants are never written after the frame is handed out. */
#ifndef AW_FRAME_H
#define AW_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct frame {
    _Atomic uint32_t refs; /* private: references held */
    uint32_t len;          /* read-only: bytes in data */
    struct frame **_vars;  /* private: compressed variants by window bits (deflate.c) */
    int32_t _class;        /* private: size class in the frame cache, or -1 */
    uint8_t data[];
} frame_t;

/* Allocates a frame of len bytes (contents unset) with one reference. Large
 * frames come from the calling thread's frame cache when it has one. */
frame_t *frame_alloc(size_t len);

/* The frame cache: large frames (messages and events of a few KiB and more)
 * freed on a thread that has a cache go back to it, in size classes a
 * quarter of a power of two apart, and the next frame of that class reuses
 * the memory as it is. Without it, large frames come and go faster than
 * glibc likes: its heap shrinks and grows, and every page of every frame is
 * faulted in again. Each event loop thread attaches one cache of at most
 * limit bytes (which each trim may change); frame_cache_trim (once a
 * second) frees what stayed unused since the previous trim;
 * frame_cache_detach frees it all. Threads without
 * a cache (and builds with AddressSanitizer, which must see every free)
 * use malloc and free. */
void frame_cache_attach(size_t limit);
/* Frees what stayed unused since the last trim; limit becomes the cache's
 * new bound (what it holds beyond it is freed too). */
void frame_cache_trim(size_t limit);
void frame_cache_detach(void);
/* Bytes the calling thread's cache holds. */
size_t frame_cache_bytes(void);

/* Makes f (one reference, not shared yet) able to hold len bytes, keeping its
 * first `keep` bytes; may move it. NULL when out of memory (f is left as it
 * was). */
frame_t *frame_grow(frame_t *f, size_t len, size_t keep);

/* The variant cached for window bits wb (9..15), or NULL. */
frame_t *frame_variant(const frame_t *f, uint8_t wb);

/* Caches v (a reference is taken; v may be f itself, meaning "no better
 * variant") as f's variant for wb. Freed with f. */
void frame_set_variant(frame_t *f, uint8_t wb, frame_t *v);

/* A server WebSocket frame (FIN set, unmasked) around payload[0..len).
 * Returns NULL when out of memory. */
frame_t *frame_ws(uint8_t opcode, const void *payload, size_t len);

/* The same around a payload in two parts, a[0..alen) then b[0..blen). */
frame_t *frame_ws_parts(uint8_t opcode, const void *a, size_t alen, const void *b, size_t blen);

/* A raw byte string (HTTP responses). NULL when out of memory. */
frame_t *frame_raw(const void *bytes, size_t len);

/* The payload of a frame made by frame_ws (skips its header). */
const uint8_t *frame_ws_payload(const frame_t *f, size_t *len);

static inline frame_t *frame_ref(frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void frame_unref(frame_t *f);

#endif
