/* lockstat.c -- counters of the one lock (lock.h), built only with
 * -DAW_LOCK_STATS=ON. Every counter here is read and written with the lock
 * held, so none needs to be atomic; the clock is read once per outermost
 * acquisition and release (CLOCK_MONOTONIC and the holder's
 * CLOCK_THREAD_CPUTIME_ID), once more when the acquisition had to wait.
 *
 * Histograms are log2 buckets of nanoseconds, each split in four (a bucket
 * spans at most a quarter of its lower bound): the JSON line names each
 * non-empty bucket by its lower bound, [lo_ns, count]. */
#include "lock.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBUCKETS  252 /* 4 exact buckets under 4 ns, then 4 per octave up to 2^64 */
#define MAX_SITES 128

typedef struct lockstat {
    uint64_t acquisitions, contended, wait_ns, wait_max_ns, hold_ns, hold_max_ns, hold_cpu_ns;
    uint64_t hold_hist[NBUCKETS], wait_hist[NBUCKETS];
} lockstat_t;

static lockstat_t st;
static aw_lock_site_t *sites; /* every site that took the lock, newest first */
static aw_lock_site_t *holder;
static uint64_t held_since, held_cpu_since, started_ns;
static unsigned loops;
static uv_signal_t sigusr2;

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

/* The holder's own CPU time: when a hold's wall time exceeds it, the
 * holder was preempted or blocked in a system call while holding the lock. */
static uint64_t cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static unsigned bucket(uint64_t ns)
{
    if (ns < 4)
        return (unsigned)ns;
    unsigned k = 63u - (unsigned)__builtin_clzll(ns); /* 2..63 */
    return 4 * k - 4 + (unsigned)((ns >> (k - 2)) & 3);
}

static uint64_t bucket_lo(unsigned b)
{
    if (b < 4)
        return b;
    unsigned k = b / 4 + 1, sub = b % 4;
    return (uint64_t)(4 + sub) << (k - 2);
}

static uint64_t bucket_hi(unsigned b) /* exclusive */
{
    return b < 4 ? b + 1 : bucket_lo(b) + ((uint64_t)1 << (b / 4 - 1));
}

uint64_t aw_lockstat_now_ns(void)
{
    return now_ns();
}

/* Shard locks are held in parallel: their counters are atomic. */
static _Atomic uint64_t shard_acq, shard_contended, shard_wait_ns, shard_hold_ns;

void aw_lockstat_shard_acquired(bool contended, uint64_t wait_ns)
{
    atomic_fetch_add_explicit(&shard_acq, 1, memory_order_relaxed);
    if (contended) {
        atomic_fetch_add_explicit(&shard_contended, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&shard_wait_ns, wait_ns, memory_order_relaxed);
    }
}

void aw_lockstat_shard_released(uint64_t hold_ns)
{
    atomic_fetch_add_explicit(&shard_hold_ns, hold_ns, memory_order_relaxed);
}

void aw_lockstat_acquire(bool (*trylock)(void), void (*lock)(void), aw_lock_site_t *site)
{
    uint64_t t0 = 0;
    bool contended = !trylock();
    if (contended) {
        t0 = now_ns();
        lock();
    }
    uint64_t t1 = now_ns();
    /* held from here */
    if (!site->listed) {
        site->listed = true;
        site->next = sites;
        sites = site;
    }
    st.acquisitions++;
    site->acquisitions++;
    if (contended) {
        uint64_t w = t1 - t0;
        st.contended++;
        st.wait_ns += w;
        if (w > st.wait_max_ns)
            st.wait_max_ns = w;
        st.wait_hist[bucket(w)]++;
        site->contended++;
        site->wait_ns += w;
    }
    holder = site;
    held_since = t1;
    held_cpu_since = cpu_ns();
}

void aw_lockstat_release(void (*unlock)(void))
{
    uint64_t h = now_ns() - held_since, c = cpu_ns() - held_cpu_since;
    st.hold_ns += h;
    st.hold_cpu_ns += c;
    holder->hold_cpu_ns += c;
    if (h > st.hold_max_ns)
        st.hold_max_ns = h;
    st.hold_hist[bucket(h)]++;
    holder->hold_ns += h;
    if (h > holder->hold_max_ns)
        holder->hold_max_ns = h;
    holder = NULL;
    unlock();
}

static void on_sigusr2(uv_signal_t *sig, int signum)
{
    (void)sig, (void)signum;
    aw_lockstat_dump("SIGUSR2");
}

void aw_lockstat_start(uv_loop_t *loop, unsigned nloops)
{
    started_ns = now_ns();
    loops = nloops;
    uv_signal_init(loop, &sigusr2);
    uv_signal_start(&sigusr2, on_sigusr2, SIGUSR2);
    uv_unref((uv_handle_t *)&sigusr2); /* never keeps the loop alive */
}

/* The upper bound of the bucket that holds the q-quantile. */
static uint64_t quantile(const uint64_t *hist, double q)
{
    uint64_t n = 0;
    for (unsigned b = 0; b < NBUCKETS; b++)
        n += hist[b];
    if (n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)n), seen = 0;
    if (want >= n)
        want = n - 1;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        seen += hist[b];
        if (seen > want)
            return bucket_hi(b);
    }
    return 0;
}

static void put_hist(FILE *f, const char *name, const uint64_t *hist)
{
    fprintf(f, ",\"%s\":[", name);
    bool first = true;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        if (!hist[b])
            continue;
        fprintf(f, "%s[%llu,%llu]", first ? "" : ",", (unsigned long long)bucket_lo(b),
                (unsigned long long)hist[b]);
        first = false;
    }
    fputc(']', f);
}

static int by_hold(const void *a, const void *b)
{
    const aw_lock_site_t *x = a, *y = b;
    return x->hold_ns < y->hold_ns ? 1 : x->hold_ns > y->hold_ns ? -1 : 0;
}

void aw_lockstat_dump(const char *why)
{
    static lockstat_t copy; /* the dump runs on the main loop only */
    static aw_lock_site_t copies[MAX_SITES];
    size_t n = 0;
    aw_lock();
    uint64_t now = now_ns();
    copy = st;
    for (aw_lock_site_t *s = sites; s && n < MAX_SITES; s = s->next)
        copies[n++] = *s;
    aw_unlock();
    qsort(copies, n, sizeof *copies, by_hold);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return;
    fprintf(f,
            "{\"lockstat\":\"%s\",\"threads\":%u,\"t_ns\":%llu,\"elapsed_ns\":%llu,"
            "\"acquisitions\":%llu,\"contended\":%llu,\"wait_ns\":%llu,\"wait_max_ns\":%llu,"
            "\"wait_p50_ns\":%llu,\"wait_p99_ns\":%llu,\"hold_ns\":%llu,\"hold_cpu_ns\":%llu,"
            "\"hold_max_ns\":%llu,"
            "\"hold_p50_ns\":%llu,\"hold_p99_ns\":%llu,\"hold_p999_ns\":%llu",
            why, loops, (unsigned long long)now, (unsigned long long)(now - started_ns),
            (unsigned long long)copy.acquisitions, (unsigned long long)copy.contended,
            (unsigned long long)copy.wait_ns, (unsigned long long)copy.wait_max_ns,
            (unsigned long long)quantile(copy.wait_hist, 0.50),
            (unsigned long long)quantile(copy.wait_hist, 0.99), (unsigned long long)copy.hold_ns,
            (unsigned long long)copy.hold_cpu_ns, (unsigned long long)copy.hold_max_ns,
            (unsigned long long)quantile(copy.hold_hist, 0.50),
            (unsigned long long)quantile(copy.hold_hist, 0.99),
            (unsigned long long)quantile(copy.hold_hist, 0.999));
    put_hist(f, "hold_hist", copy.hold_hist);
    put_hist(f, "wait_hist", copy.wait_hist);
    fprintf(f,
            ",\"shards\":{\"n\":%u,\"acquisitions\":%llu,\"contended\":%llu,\"wait_ns\":%llu,"
            "\"hold_ns\":%llu}",
            aw_shards(), (unsigned long long)atomic_load(&shard_acq),
            (unsigned long long)atomic_load(&shard_contended),
            (unsigned long long)atomic_load(&shard_wait_ns),
            (unsigned long long)atomic_load(&shard_hold_ns));
    fputs(",\"sites\":[", f);
    for (size_t i = 0; i < n; i++) {
        const aw_lock_site_t *s = &copies[i];
        const char *file = strrchr(s->file, '/');
        fprintf(f,
                "%s{\"site\":\"%s:%d %s\",\"acquisitions\":%llu,\"contended\":%llu,"
                "\"wait_ns\":%llu,\"hold_ns\":%llu,\"hold_cpu_ns\":%llu,\"hold_max_ns\":%llu}",
                i ? "," : "", file ? file + 1 : s->file, s->line, s->func,
                (unsigned long long)s->acquisitions, (unsigned long long)s->contended,
                (unsigned long long)s->wait_ns, (unsigned long long)s->hold_ns,
                (unsigned long long)s->hold_cpu_ns, (unsigned long long)s->hold_max_ns);
    }
    fputs("]}\n", f);
    if (fclose(f) == 0) {
        /* one write: the line is not interleaved with the log's */
        for (size_t off = 0; off < len;) {
            ssize_t w = write(STDERR_FILENO, buf + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    free(buf);
}
