/* durable.c -- the writer thread and its groups (durable.h).
 *
 * Ownership: jobs being gathered (open_*) belong to the loop; the group
 * handed over (group) belongs to the writer until it sets `written`, then
 * to the loop again, which answers it on the async wake-up. Everything the
 * two threads share is under mu. */
#include "durable.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "log.h"

/* A row holds one user's consecutive events of a group, up to this many
 * bytes (a single larger event gets a row of its own). */
#define ROW_MAX_BYTES (256 * 1024)

typedef struct job {
    struct job *next;
    durable_done_fn fn;
    void *arg;
    size_t n;
    durable_ev_t evs[];
} job_t;

struct durable {
    uv_loop_t *loop;
    store_t *w, *r; /* the writer's connection, the loop's reader */
    uint64_t keep;
    uv_thread_t thread;
    bool thread_started, handles_open, armed;
    uv_async_t async;
    uv_check_t check;
    uv_idle_t idle;
    /* the loop's */
    job_t *open_head, *open_tail;
    size_t waiting; /* jobs submitted and not answered */
    /* shared, under mu */
    uv_mutex_t mu;
    uv_cond_t cv;
    job_t *group;
    bool written, stop, trim_asked;
    int result;
    char error[256];
    int64_t trim_before, trim_idem_before;
    uint64_t trim_max;
    durable_stats_t stats;
    /* the writer's */
    aw_buf_t row;
    const durable_ev_t **sorted;
    size_t sorted_cap;
};

static int by_user_seq(const void *a, const void *b)
{
    const durable_ev_t *x = *(const durable_ev_t *const *)a, *y = *(const durable_ev_t *const *)b;
    int c = strcmp(x->user, y->user);
    return c ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* One user's events ev[0..n) of a group, seq ascending: rows, runs, head. */
static int write_user(durable_t *d, const durable_ev_t *const *ev, size_t n, int64_t ts,
                      char *error, size_t errlen)
{
    const char *user = ev[0]->user;
    char epoch[32];
    uint64_t head;
    int rc = store_stream(d->w, user, epoch, sizeof epoch, &head);
    if (rc == AW_OK && strcmp(epoch, ev[0]->epoch) != 0)
        rc = store_stream_reset(d->w, user, ev[0]->epoch); /* a new epoch: old rows go */
    else if (rc == AW_ENOTFOUND)
        rc = AW_OK;
    for (size_t i = 0; rc == AW_OK && i < n;) {
        uint64_t first = ev[i]->seq, last = first;
        d->row.len = 0;
        for (; rc == AW_OK && i < n; i++) {
            if (d->row.len &&
                (ev[i]->seq != last + 1 || d->row.len + 1 + ev[i]->len > ROW_MAX_BYTES))
                break;
            if (memchr(ev[i]->json, '\n', ev[i]->len)) {
                snprintf(error, errlen, "an event with a line break"); /* never: compact JSON */
                rc = AW_EINVAL;
                break;
            }
            if ((d->row.len && aw_buf_append("\n", 1, &d->row) != 0) ||
                aw_buf_append(ev[i]->json, ev[i]->len, &d->row) != 0) {
                snprintf(error, errlen, "out of memory");
                rc = AW_ENOMEM;
                break;
            }
            last = ev[i]->seq;
            if (ev[i]->run == DURABLE_RUN_OPEN)
                rc = store_run_open(d->w, user, ev[i]->run_id, ev[i]->thread_id);
            else if (ev[i]->run == DURABLE_RUN_CLOSED)
                rc = store_run_closed(d->w, user, ev[i]->run_id);
            if (rc == AW_OK && ev[i]->idem)
                rc = store_idem_put(d->w, user, ev[i]->idem, ev[i]->seq, ev[i]->epoch,
                                    ev[i]->event_id, ts);
        }
        if (rc == AW_OK)
            rc = store_append(d->w, user, first, last, ts, d->row.data, d->row.len);
    }
    if (rc == AW_OK)
        rc = store_head(d->w, user, ev[n - 1]->epoch, ev[n - 1]->seq, d->keep);
    return rc;
}

/* Writes a group in one transaction; 0, or the error in d->error. */
static int write_group(durable_t *d, job_t *g, char *error, size_t errlen)
{
    size_t n = 0;
    for (job_t *j = g; j; j = j->next)
        n += j->n;
    if (n > d->sorted_cap) {
        const durable_ev_t **s = realloc(d->sorted, n * sizeof *s);
        if (!s) {
            snprintf(error, errlen, "out of memory");
            return AW_ENOMEM;
        }
        d->sorted = s;
        d->sorted_cap = n;
    }
    n = 0;
    for (job_t *j = g; j; j = j->next)
        for (size_t i = 0; i < j->n; i++)
            d->sorted[n++] = &j->evs[i];
    qsort(d->sorted, n, sizeof *d->sorted, by_user_seq);
    int64_t ts = aw_now_ms();
    int rc = store_begin(d->w);
    for (size_t i = 0, k; rc == AW_OK && i < n; i = k) {
        for (k = i + 1; k < n && strcmp(d->sorted[k]->user, d->sorted[i]->user) == 0; k++)
            ;
        rc = write_user(d, d->sorted + i, k - i, ts, error, errlen);
    }
    if (rc == AW_OK)
        rc = store_commit(d->w);
    if (rc != AW_OK) {
        if (!error[0])
            snprintf(error, errlen, "%s", store_error(d->w));
        store_rollback(d->w);
        return AW_EIO;
    }
    if (d->row.cap > 4 * ROW_MAX_BYTES)
        aw_buf_free(&d->row);
    return AW_OK;
}

static void writer(void *arg)
{
    durable_t *d = arg;
    uv_mutex_lock(&d->mu);
    for (;;) {
        if (d->group && !d->written) {
            job_t *g = d->group;
            char error[256] = "";
            uv_mutex_unlock(&d->mu);
            int rc = write_group(d, g, error, sizeof error);
            uv_mutex_lock(&d->mu);
            d->result = rc;
            snprintf(d->error, sizeof d->error, "%s", error);
            d->written = true;
            d->stats.events = store_events(d->w);
            d->stats.bytes = store_bytes(d->w);
            if (rc == AW_OK)
                d->stats.groups++;
            else
                d->stats.failures++;
            uv_async_send(&d->async);
            uv_cond_broadcast(&d->cv); /* durable_wait */
            continue;
        }
        if (d->stop)
            break;
        if (d->trim_asked) {
            d->trim_asked = false;
            int64_t before = d->trim_before, idem_before = d->trim_idem_before;
            uint64_t max = d->trim_max;
            uv_mutex_unlock(&d->mu);
            long gone = AW_EIO;
            if (store_begin(d->w) == AW_OK) {
                gone = store_trim(d->w, before, max);
                if (gone >= 0 && store_idem_trim(d->w, idem_before) < 0)
                    gone = AW_EIO;
                if (gone < 0 || store_commit(d->w) != AW_OK) {
                    gone = AW_EIO;
                    store_rollback(d->w);
                }
            }
            if (gone < 0)
                log_kv(LOG_ERROR | LOG_LIMITED, "cannot trim the store", "error", store_error(d->w),
                       NULL);
            uv_mutex_lock(&d->mu);
            d->stats.events = store_events(d->w);
            d->stats.bytes = store_bytes(d->w);
            if (gone > 0)
                d->stats.trimmed += (uint64_t)gone;
            continue;
        }
        uv_cond_wait(&d->cv, &d->mu);
    }
    uv_mutex_unlock(&d->mu);
}

/* Hands the jobs gathered so far to the writer, if it is free. */
static void flush(durable_t *d)
{
    if (d->armed) {
        uv_check_stop(&d->check);
        uv_idle_stop(&d->idle);
        d->armed = false;
    }
    if (!d->open_head)
        return;
    uv_mutex_lock(&d->mu);
    if (!d->group && !d->stop) {
        d->group = d->open_head;
        d->written = false;
        d->open_head = d->open_tail = NULL;
        uv_cond_signal(&d->cv);
    }
    uv_mutex_unlock(&d->mu);
}

static void on_check(uv_check_t *h)
{
    flush(h->data);
}

static void on_idle(uv_idle_t *h)
{
    flush(h->data);
}

/* Answers jobs newest first (a failure): each owner takes its events back
 * in the reverse of the order it stamped them. */
static void fail_list(durable_t *d, job_t *list, int rc, const char *error)
{
    job_t *rev = NULL;
    while (list) {
        job_t *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        job_t *next = rev->next;
        d->waiting--;
        rev->fn(rev->arg, rc, error);
        free(rev);
        rev = next;
    }
}

static void answer_group(durable_t *d)
{
    uv_mutex_lock(&d->mu);
    job_t *g = d->written ? d->group : NULL;
    int rc = d->result;
    char error[256];
    snprintf(error, sizeof error, "%s", d->error);
    if (g)
        d->group = NULL;
    uv_mutex_unlock(&d->mu);
    if (!g)
        return;
    if (rc == AW_OK) {
        while (g) {
            job_t *next = g->next;
            d->waiting--;
            g->fn(g->arg, AW_OK, NULL);
            free(g);
            g = next;
        }
    } else {
        /* what was gathered meanwhile was stamped after this group */
        job_t *later = d->open_head;
        d->open_head = d->open_tail = NULL;
        fail_list(d, later, AW_EIO, error);
        fail_list(d, g, AW_EIO, error);
    }
    flush(d);
}

static void on_written(uv_async_t *h)
{
    answer_group(h->data);
}

void durable_wait(durable_t *d)
{
    while (!durable_idle(d)) {
        flush(d);
        uv_mutex_lock(&d->mu);
        if (!d->group) {
            uv_mutex_unlock(&d->mu);
            return; /* stopped */
        }
        while (!d->written)
            uv_cond_wait(&d->cv, &d->mu);
        uv_mutex_unlock(&d->mu);
        answer_group(d);
    }
}

int durable_open(durable_t **out, uv_loop_t *loop, const char *dir, enum store_sync sync,
                 uint64_t keep, char *err, size_t errlen)
{
    *out = NULL;
    durable_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    d->loop = loop;
    d->keep = keep;
    int rc = store_open(&d->w, dir, sync, err, errlen);
    if (rc == AW_OK)
        rc = store_open_reader(&d->r, dir, err, errlen);
    if (rc != AW_OK) {
        store_close(d->w);
        free(d);
        return rc;
    }
    d->stats.events = store_events(d->w);
    d->stats.bytes = store_bytes(d->w);
    uv_mutex_init(&d->mu);
    uv_cond_init(&d->cv);
    /* the writer signals the async handle only for a group, none yet */
    if (uv_thread_create(&d->thread, writer, d) != 0) {
        snprintf(err, errlen, "cannot start the store's writer thread");
        durable_close(d);
        return AW_EIO;
    }
    d->thread_started = true;
    aw_thread_name(d->thread, "aw-store");
    uv_async_init(loop, &d->async, on_written);
    uv_check_init(loop, &d->check);
    uv_idle_init(loop, &d->idle);
    d->async.data = d->check.data = d->idle.data = d;
    d->handles_open = true;
    *out = d;
    return AW_OK;
}

int durable_submit(durable_t *d, const durable_ev_t *evs, size_t n, durable_done_fn fn, void *arg)
{
    job_t *j = malloc(sizeof *j + n * sizeof *evs);
    if (!j)
        return AW_ENOMEM;
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    j->n = n;
    memcpy(j->evs, evs, n * sizeof *evs);
    if (d->open_tail)
        d->open_tail->next = j;
    else
        d->open_head = j;
    d->open_tail = j;
    d->waiting++;
    if (!d->armed && d->handles_open) {
        /* the check ends this turn's gathering; the idle keeps the loop
         * from sleeping on a job submitted after the check ran */
        uv_check_start(&d->check, on_check);
        uv_idle_start(&d->idle, on_idle);
        d->armed = true;
    }
    return AW_OK;
}

bool durable_idle(durable_t *d)
{
    return d->waiting == 0;
}

void durable_trim(durable_t *d, int64_t before_ms, uint64_t max_bytes, int64_t idem_before_ms)
{
    uv_mutex_lock(&d->mu);
    d->trim_asked = true;
    d->trim_before = before_ms;
    d->trim_idem_before = idem_before_ms;
    d->trim_max = max_bytes;
    uv_cond_signal(&d->cv);
    uv_mutex_unlock(&d->mu);
}

store_t *durable_reader(durable_t *d)
{
    return d->r;
}

void durable_stats(durable_t *d, durable_stats_t *out)
{
    uv_mutex_lock(&d->mu);
    *out = d->stats;
    uv_mutex_unlock(&d->mu);
}

void durable_stop(durable_t *d)
{
    if (!d)
        return;
    if (d->thread_started) {
        uv_mutex_lock(&d->mu);
        d->stop = true;
        uv_cond_signal(&d->cv);
        uv_mutex_unlock(&d->mu);
        uv_thread_join(&d->thread);
        d->thread_started = false;
    }
    if (d->handles_open) {
        d->handles_open = false;
        d->armed = false;
        uv_close((uv_handle_t *)&d->async, NULL);
        uv_close((uv_handle_t *)&d->check, NULL);
        uv_close((uv_handle_t *)&d->idle, NULL);
    }
}

void durable_close(durable_t *d)
{
    if (!d)
        return;
    durable_stop(d);
    /* a group the writer wrote but the loop never answered, then the rest:
     * their owners only free what they hold */
    job_t *g = d->group;
    d->group = NULL;
    if (g) {
        job_t *t = g;
        while (t->next)
            t = t->next;
        t->next = d->open_head;
        d->open_head = g;
    }
    fail_list(d, d->open_head, AW_ECLOSED, "the server stopped");
    d->open_head = d->open_tail = NULL;
    store_close(d->r);
    store_close(d->w);
    aw_buf_free(&d->row);
    free(d->sorted);
    uv_cond_destroy(&d->cv);
    uv_mutex_destroy(&d->mu);
    free(d);
}
