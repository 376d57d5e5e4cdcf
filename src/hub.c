/* hub.c -- the registry (user -> sessions, address -> count) and the only
 * delivery path. An event is stamped, serialized once into a shared frame and
 * queued on each open session of its user, in seq order. Sessions are never
 * freed here: a session closed during fan-out stays linked until its close
 * callback calls hub_detach on a later loop phase. */
#include "hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "bigstr.h"
#include "event.h"
#include "frame.h"
#include "lock.h"
#include "log.h"
#include "session.h"
#include "ws.h"

/* ---- shards, and the pool's lock ---- */

unsigned hub_shard(const hub_t *h, const char *user_id)
{
    if (h->_nshards == 1)
        return 0;
    uint64_t x = map_siphash(h->_k0, h->_k1, user_id, strlen(user_id));
    return (unsigned)(x >> 32) & (h->_nshards - 1);
}

unsigned hub_shards(const hub_t *h)
{
    return h->_nshards;
}

static hub_shard_t *shard_of(const hub_t *h, const hub_user_t *u)
{
    return &h->_shards[u->_shard];
}

/* The history pool, every user's ring, the idle list and their byte counts
 * are every shard's: while shards are held, they are read and changed only
 * under this lock (the lock alone covers them otherwise, and taking this
 * one too costs little). */
static void pool_lock(hub_t *h)
{
    if (h->_nshards > 1)
        uv_mutex_lock(&h->_pool_lock);
}

static void pool_unlock(hub_t *h)
{
    if (h->_nshards > 1)
        uv_mutex_unlock(&h->_pool_lock);
}

/* ---- idle streams ---- */

static void idle_push(hub_t *h, hub_user_t *u)
{
    if (u->_idle || u->_pending)
        return; /* events stamped and not yet sent keep the stream */
    u->_idle = true;
    u->_idle_next = NULL;
    u->_idle_prev = h->_idle_tail;
    if (h->_idle_tail)
        h->_idle_tail->_idle_next = u;
    else
        h->_idle_head = u;
    h->_idle_tail = u;
}

static void idle_remove(hub_t *h, hub_user_t *u)
{
    if (!u->_idle)
        return;
    if (u->_idle_prev)
        u->_idle_prev->_idle_next = u->_idle_next;
    else
        h->_idle_head = u->_idle_next;
    if (u->_idle_next)
        u->_idle_next->_idle_prev = u->_idle_prev;
    else
        h->_idle_tail = u->_idle_prev;
    u->_idle = false;
    u->_idle_prev = u->_idle_next = NULL;
}

/* history.c: a user's last event went (evicted or expired). */
static void on_history_empty(history_t *hist, void *ctx)
{
    hub_user_t *u = (hub_user_t *)((char *)hist - offsetof(hub_user_t, history));
    if (u->nconns == 0)
        idle_push(ctx, u);
}

/* A stream leaves memory: its record's bytes leave the cap's count. */
static void forget_user(hub_t *h, hub_user_t *u)
{
    idle_remove(h, u);
    history_clear(&h->history, &u->history);
    h->history.extra -= u->_cost;
}

/* Brings the memory held under the cap (events, rings, stream records) to
 * at most its limit minus `need`: idle streams first, then the oldest
 * events. `keep` (the stream being used) is never dropped. Under the pool's
 * lock. A shard holder may evict any shard's events (every ring is changed
 * under the pool's lock while shards are held) but not drop another
 * shard's stream: false when an idle stream would have to go. */
static bool make_room(hub_t *h, const hub_user_t *keep, size_t need)
{
    history_pool_t *p = &h->history;
    while (p->bytes + p->extra + need > p->max_bytes) {
        hub_user_t *u = h->_idle_head;
        if (u == keep)
            u = u->_idle_next;
        if (u && aw_in_shard()) {
            return false; /* the lock alone drops streams */
        } else if (u) {
            forget_user(h, u);
            h->streams_dropped++;
            /* u->id is the entry's key */
            map_remove(&shard_of(h, u)->users, u->id, strlen(u->id));
            free(u);
        } else if (!history_evict_oldest(p)) {
            return true; /* what is left belongs to connected users */
        }
    }
    return true;
}

int hub_init(hub_t *h, const config_t *cfg, metrics_t *m)
{
    memset(h, 0, sizeof *h);
    h->_cfg = cfg;
    h->_metrics = m;
    history_pool_init(&h->history, (uint32_t)cfg->history_size, cfg->history_ttl_ms,
                      (size_t)cfg->history_memory_bytes);
    h->history.on_empty = on_history_empty;
    h->history.ctx = h;
    uint8_t node[4];
    if (aw_random_bytes(node, sizeof node) != AW_OK)
        return AW_EIO;
    aw_hex(h->_node, node, sizeof node);
    uint64_t keys[2];
    if (aw_random_bytes((uint8_t *)keys, sizeof keys) != AW_OK)
        return AW_EIO;
    h->_k0 = keys[0], h->_k1 = keys[1];
    h->_nshards = aw_shards();
    h->_shards = aligned_alloc(64, h->_nshards * sizeof *h->_shards);
    if (!h->_shards || uv_mutex_init(&h->_pool_lock) != 0) {
        free(h->_shards);
        h->_shards = NULL;
        return AW_ENOMEM;
    }
    memset(h->_shards, 0, h->_nshards * sizeof *h->_shards);
    for (unsigned i = 0; i < h->_nshards; i++) {
        h->_shards[i].next_event = (uint64_t)i << 42; /* 48 bits in the id: 6 for the shard */
        if (map_init(&h->_shards[i].users) != AW_OK)
            return AW_ENOMEM;
    }
    return AW_OK;
}

void hub_dispose(hub_t *h)
{
    history_pool_dispose(&h->history);
    for (unsigned i = 0; h->_shards && i < h->_nshards; i++) {
        map_dispose(&h->_shards[i].users, free);
        aw_buf_free(&h->_shards[i].scratch);
    }
    if (h->_shards)
        uv_mutex_destroy(&h->_pool_lock);
    free(h->_shards);
    h->_shards = NULL;
    aw_buf_free(&h->_scratch);
}

hub_user_t *hub_user_find(const hub_t *h, const char *user_id)
{
    return map_get(&h->_shards[hub_shard(h, user_id)].users, user_id, strlen(user_id));
}

uint64_t hub_published(const hub_t *h)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < h->_nshards; i++)
        n += h->_shards[i].published;
    return n;
}

uint64_t hub_delivered(const hub_t *h)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < h->_nshards; i++)
        n += h->_shards[i].delivered;
    return n;
}

/* hub_user, which a shard holder may call: *again is set when the stream
 * would need room made under the memory cap (see make_room). */
static hub_user_t *user_get(hub_t *h, const char *user_id, bool *again)
{
    hub_user_t *u = hub_user_find(h, user_id);
    if (u)
        return u;
    u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    uint8_t raw[HUB_EPOCH_LEN / 2];
    if (aw_random_bytes(raw, sizeof raw) != AW_OK) {
        free(u);
        return NULL;
    }
    aw_hex(u->epoch, raw, sizeof raw);
    u->last_active_ms = aw_now_ms();
    size_t len = strlen(user_id);
    u->_shard = hub_shard(h, user_id);
    map_t *users = &shard_of(h, u)->users;
    map_entry_t *e = map_put(users, user_id, len, u);
    if (!e) {
        free(u);
        return NULL;
    }
    u->id = e->key;
    /* the record, its map entry (key included) and its share of buckets */
    u->_cost = AW_ALLOC_COST(sizeof *u) + AW_ALLOC_COST(sizeof *e + len + 1) + 2 * sizeof(void *);
    pool_lock(h);
    h->history.extra += u->_cost;
    idle_push(h, u);
    if (!make_room(h, u, 0)) { /* a shard holder: the lock alone makes room */
        idle_remove(h, u);
        h->history.extra -= u->_cost;
        pool_unlock(h);
        map_remove(users, u->id, len);
        free(u);
        *again = true;
        return NULL;
    }
    pool_unlock(h);
    if (h->load)
        h->load(h->load_ctx, h, u);
    return u;
}

hub_user_t *hub_user(hub_t *h, const char *user_id)
{
    bool again = false;
    return user_get(h, user_id, &again);
}

int hub_admit(const hub_t *h, const char *user_id)
{
    if (h->_cfg->max_connections > 0 && h->nconns >= (uint64_t)h->_cfg->max_connections)
        return AW_ELIMIT;
    const hub_user_t *u = hub_user_find(h, user_id);
    if (u && u->nconns >= (uint64_t)h->_cfg->max_connections_per_user)
        return AW_ELIMIT;
    return AW_OK;
}

hub_user_t *hub_attach(hub_t *h, session_t *s, const char *user_id)
{
    hub_user_t *u = hub_user(h, user_id);
    if (!u)
        return NULL;
    s->_user_prev = NULL;
    s->_user_next = u->_conns;
    if (u->_conns)
        u->_conns->_user_prev = s;
    u->_conns = s;
    if (u->nconns++ == 0)
        h->nusers_live++;
    idle_remove(h, u);
    h->nconns++;
    s->user = u;
    s->_last_seq = u->seq; /* events from here on are live for it */
    return u;
}

void hub_detach(hub_t *h, session_t *s)
{
    hub_user_t *u = s->user;
    if (!u)
        return;
    if (s->_user_prev)
        s->_user_prev->_user_next = s->_user_next;
    else
        u->_conns = s->_user_next;
    if (s->_user_next)
        s->_user_next->_user_prev = s->_user_prev;
    s->_user_next = s->_user_prev = NULL;
    if (--u->nconns == 0) {
        h->nusers_live--;
        if (history_first_seq(&u->history) == 0)
            idle_push(h, u);
    }
    u->last_active_ms = aw_now_ms();
    h->nconns--;
    /* s->user stays set: logs after detach still name the user. The stream
     * (seq, epoch) outlives its connections so that numbering never restarts. */
}

static const char *const envelope_fields[] = {"seq", "epoch", "event_id", "timestamp", "user_id"};

/* Appends s as a JSON string. Ids have no control characters (event.c), so
 * only the quote and the backslash need escaping. */
static int append_string(aw_buf_t *b, const char *str)
{
    int rc = aw_buf_append("\"", 1, b);
    while (rc == 0 && *str) {
        size_t run = strcspn(str, "\"\\");
        rc = aw_buf_append(str, run, b);
        str += run;
        if (rc == 0 && *str) {
            rc = aw_buf_append(*str == '"' ? "\\\"" : "\\\\", 2, b);
            str++;
        }
    }
    return rc ? rc : aw_buf_append("\"", 1, b);
}

/* Puts the long strings back in place of their placeholders (bigstr.h) in
 * b from offset `from` on. */
static int splice_literals(aw_buf_t *b, const bigstr_t *lits, size_t from)
{
    size_t len = b->len - from;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return AW_ENOMEM;
    memcpy(copy, b->data + from, len);
    b->len = from;
    int rc = bigstr_splice(lits, copy, len, aw_buf_append, b);
    free(copy);
    return rc ? AW_ENOMEM : AW_OK;
}

/* Appends the publisher's fields of ev (its envelope-named ones dropped) as
 * the text that follows the envelope: "}" when there are none, else
 * ",<fields>}". */
static int dump_fields(aw_buf_t *b, json_t *ev, const bigstr_t *lits)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(envelope_fields); i++)
        json_object_del(ev, envelope_fields[i]);
    size_t body = b->len;
    if (json_dump_callback(ev, aw_buf_append, b, JSON_COMPACT) != 0)
        return AW_ENOMEM;
    if (lits && lits->n && splice_literals(b, lits, body) != AW_OK)
        return AW_ENOMEM;
    if (b->len == body + 2) /* "{}": nothing but the envelope */
        b->data[body] = '}', b->len = body + 1;
    else
        b->data[body] = ',';
    return AW_OK;
}

int hub_prepare(json_t *ev, const bigstr_t *lits, aw_buf_t *out, char *why, size_t whylen)
{
    if (event_validate(ev, why, whylen) != AW_OK)
        return AW_EINVAL;
    size_t from = out->len;
    int rc = dump_fields(out, ev, lits);
    if (rc != AW_OK)
        out->len = from;
    return rc;
}

/* The event's frame, its envelope stamped first: the envelope is written as
 * text ahead of the publisher's fields (whose own envelope-named fields are
 * dropped), which spares building and freeing five JSON values per event.
 * The fields come prepared (tail, hub_prepare) or are serialized here. */
static frame_t *serialize(hub_t *h, hub_user_t *u, json_t *ev, const char *tail, size_t tail_len,
                          hub_receipt_t *out)
{
    hub_shard_t *sh = shard_of(h, u);
    aw_buf_t *b = &sh->scratch;
    out->seq = u->_stamped + 1;
    memcpy(out->epoch, u->epoch, sizeof out->epoch);
    snprintf(out->event_id, sizeof out->event_id, "ev_%s%012llx", h->_node,
             (unsigned long long)++sh->next_event);
    char head[160];
    int n = snprintf(head, sizeof head,
                     "{\"seq\":%llu,\"epoch\":\"%s\",\"event_id\":\"%s\",\"timestamp\":%lld,"
                     "\"user_id\":",
                     (unsigned long long)out->seq, u->epoch, out->event_id, (long long)aw_now_ms());
    b->len = 0;
    if (aw_buf_append(head, (size_t)n, b) != 0 || append_string(b, u->id) != 0)
        return NULL;
    if (!tail) {
        if (dump_fields(b, ev, h->literals) != AW_OK)
            return NULL;
        return frame_ws(WS_OP_TEXT, b->data, b->len);
    }
    /* the envelope and the prepared fields, copied once, into the frame */
    return frame_ws_parts(WS_OP_TEXT, b->data, b->len, tail, tail_len);
}

/* Event seq of u (frame f) exists from here on: it is the stream's newest
 * and joins the history. AW_EAGAIN (nothing changed): a shard holder would
 * have to drop an idle stream to stay under the memory cap. */
static int keep(hub_t *h, hub_user_t *u, uint64_t seq, frame_t *f)
{
    int64_t now = aw_now_ms();
    pool_lock(h);
    if (!make_room(h, u, AW_ALLOC_COST(sizeof *f + f->len) + 64)) {
        pool_unlock(h);
        return AW_EAGAIN;
    }
    idle_remove(h, u);
    int rc = history_append(&h->history, &u->history, seq, f, now);
    pool_unlock(h);
    if (rc != AW_OK)
        log_kv(LOG_WARN | LOG_LIMITED, "history append failed", "user", u->id, NULL);
    u->seq = seq;
    if (u->_stamped < seq)
        u->_stamped = seq;
    u->last_active_ms = now;
    shard_of(h, u)->published++;
    return AW_OK;
}

/* The one delivery path: the frame of event seq is queued on every open
 * session of u that is live (not the echo endpoint, not still syncing). */
static size_t fanout(hub_t *h, hub_user_t *u, frame_t *f, uint64_t seq)
{
    size_t n = 0;
    bool first = true;
    for (session_t *s = u->_conns; s; s = s->_user_next) {
        if (s->echo || s->syncing)
            continue;
        if (h->send(h->send_ctx, s, f, seq, first) == AW_OK)
            n++;
        first = false;
    }
    shard_of(h, u)->delivered += n;
    return n;
}

/* Event seq of u (frame f, whose reference this takes) joins the history
 * and reaches every live session of u: AW_OK and how many in *n, or
 * AW_EAGAIN from keep (nothing sent). */
static int deliver(hub_t *h, hub_user_t *u, uint64_t seq, frame_t *f, size_t *n)
{
    int rc = keep(h, u, seq, f);
    *n = rc == AW_OK ? fanout(h, u, f, seq) : 0;
    frame_unref(f);
    return rc;
}

static int publish(hub_t *h, const char *user_id, json_t *ev, const char *tail, size_t tail_len,
                   bool gated, hub_receipt_t *out, frame_t **frame)
{
    out->error[0] = '\0';
    out->gated = false;
    if (!event_id_valid(user_id)) {
        snprintf(out->error, sizeof out->error, "user_id (the target) is required");
        return AW_EINVAL;
    }
    if (!tail && event_validate(ev, out->error, sizeof out->error) != AW_OK)
        return AW_EINVAL;
    if (h->gate && !gated) {
        int rc = h->gate(h->gate_ctx, user_id, ev, aw_now_ms(), out->error, sizeof out->error);
        if (rc == AW_EAGAIN)
            return AW_EAGAIN; /* a shard holder may not gate it: nothing changed */
        if (rc != AW_OK)
            return AW_ECONFLICT;
        out->gated = true;
    }
    bool again = false;
    hub_user_t *u = user_get(h, user_id, &again);
    if (again)
        return AW_EAGAIN;
    frame_t *f = u ? serialize(h, u, ev, tail, tail_len, out) : NULL;
    if (!f)
        return AW_ENOMEM;
    out->recipients = 0;
    if (!frame)
        return deliver(h, u, out->seq, f, &out->recipients);
    /* stamped, kept back: no one sees it before hub_send_recorded */
    *frame = f;
    u->_stamped = out->seq;
    u->_pending++;
    u->last_active_ms = aw_now_ms();
    idle_remove(h, u);
    return AW_OK;
}

int hub_publish(hub_t *h, const char *user_id, json_t *ev, hub_receipt_t *out)
{
    return publish(h, user_id, ev, NULL, 0, false, out, NULL);
}

int hub_publish_prepared(hub_t *h, const char *user_id, json_t *ev, const char *tail,
                         size_t tail_len, bool gated, hub_receipt_t *out)
{
    return publish(h, user_id, ev, tail, tail_len, gated, out, NULL);
}

int hub_publish_record(hub_t *h, const char *user_id, json_t *ev, const char *tail, size_t tail_len,
                       bool gated, hub_receipt_t *out, frame_t **frame)
{
    return publish(h, user_id, ev, tail, tail_len, gated, out, frame);
}

void hub_restore_head(hub_t *h, hub_user_t *u, const char *epoch, uint64_t seq)
{
    (void)h;
    snprintf(u->epoch, sizeof u->epoch, "%s", epoch);
    u->seq = u->_stamped = seq;
}

int hub_restore(hub_t *h, hub_user_t *u, uint64_t seq, int64_t ts_ms, const char *json, size_t len)
{
    frame_t *f = frame_ws(WS_OP_TEXT, json, len);
    if (!f)
        return AW_ENOMEM;
    idle_remove(h, u);
    make_room(h, u, AW_ALLOC_COST(sizeof *f + f->len) + 64);
    int rc = history_append(&h->history, &u->history, seq, f, ts_ms);
    frame_unref(f);
    return rc;
}

/* An event stamped by hub_publish_record is settled (sent or taken back). */
static void settled(hub_t *h, hub_user_t *u)
{
    u->_pending--;
    if (!u->_pending && u->nconns == 0 && history_first_seq(&u->history) == 0)
        idle_push(h, u);
}

size_t hub_send_recorded(hub_t *h, const char *user_id, frame_t *f, uint64_t seq)
{
    hub_user_t *u = hub_user_find(h, user_id); /* kept while pending */
    if (!u) {
        frame_unref(f);
        return 0;
    }
    size_t n;
    deliver(h, u, seq, f, &n); /* under the lock alone: kept */
    settled(h, u);
    return n;
}

void hub_unrecord(hub_t *h, const char *user_id, uint64_t seq, frame_t *f)
{
    hub_user_t *u = hub_user_find(h, user_id);
    frame_unref(f);
    if (!u)
        return;
    if (u->_stamped >= seq)
        u->_stamped = seq - 1; /* never seen: the seq is stamped again */
    settled(h, u);
}

int hub_accept(hub_t *h, const char *user_id, uint64_t seq, const char *json, size_t len,
               size_t *recipients)
{
    hub_user_t *u = hub_user(h, user_id);
    frame_t *f = u ? frame_ws(WS_OP_TEXT, json, len) : NULL;
    if (!f)
        return AW_ENOMEM;
    size_t n;
    deliver(h, u, seq, f, &n); /* under the lock alone: kept */
    if (recipients)
        *recipients = n;
    return AW_OK;
}

int hub_stream_reset(hub_t *h, const char *user_id, const char *epoch, uint64_t seq)
{
    hub_user_t *u = hub_user(h, user_id);
    if (!u)
        return AW_ENOMEM;
    history_clear(&h->history, &u->history);
    snprintf(u->epoch, sizeof u->epoch, "%s", epoch);
    u->seq = u->_stamped = seq;
    for (session_t *s = u->_conns; s; s = s->_user_next)
        if (s->syncing)
            s->_last_seq = seq;
    return AW_OK;
}

int hub_event_body(hub_t *h, json_t *ev, const char **out, size_t *len)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(envelope_fields); i++)
        json_object_del(ev, envelope_fields[i]);
    h->_scratch.len = 0;
    if (json_dump_callback(ev, aw_buf_append, &h->_scratch, JSON_COMPACT) != 0)
        return AW_ENOMEM;
    if (h->literals && h->literals->n && splice_literals(&h->_scratch, h->literals, 0) != AW_OK)
        return AW_ENOMEM;
    *out = h->_scratch.data;
    *len = h->_scratch.len;
    return AW_OK;
}

size_t hub_disconnect_user(hub_t *h, const char *user_id, uint16_t code, const char *reason)
{
    hub_user_t *u = hub_user_find(h, user_id);
    size_t n = 0;
    for (session_t *s = u ? u->_conns : NULL; s; s = s->_user_next) {
        if (s->state == SESSION_OPEN) { /* states change under the lock only */
            session_close(s, code, reason);
            n++;
        }
    }
    return n;
}

void hub_each_session(hub_t *h, const char *user_id, void (*fn)(session_t *s, void *arg), void *arg)
{
    hub_user_t *u = hub_user_find(h, user_id);
    for (session_t *s = u ? u->_conns : NULL; s; s = s->_user_next)
        fn(s, arg);
}

bool hub_can_resume(const hub_t *h, hub_user_t *u, uint64_t since, const char *epoch)
{
    if (!epoch || strcmp(epoch, u->epoch) != 0 || since > u->seq)
        return false;
    if (since == u->seq)
        return true;
    uint64_t first = history_first_seq(&u->history);
    if (first && first <= since + 1 && history_last_seq(&u->history) == u->seq)
        return true;
    /* older storage holds every event it has up to u->seq */
    uint64_t older = h->older_first ? h->older_first(h->load_ctx, u) : 0;
    return older && older <= since + 1;
}

uint64_t hub_first_seq(const hub_t *h, hub_user_t *u)
{
    uint64_t first = history_first_seq(&u->history);
    if (first == 1 || !h->older_first)
        return first;
    uint64_t older = h->older_first(h->load_ctx, u);
    return older && (!first || older < first) ? older : first;
}

frame_t *hub_history_get(const hub_t *h, hub_user_t *u, uint64_t seq, bool *owned)
{
    frame_t *f = history_get(&u->history, seq);
    *owned = !f && h->older;
    if (*owned && !(f = h->older(h->load_ctx, u, seq)))
        *owned = false;
    return f;
}

/* The predicate also takes a stream it accepts off the cap's count. */
static bool user_idle(const void *value, void *arg)
{
    hub_user_t *u = (hub_user_t *)value;
    hub_t *h = arg;
    if (u->nconns != 0 || u->_pending || history_first_seq(&u->history) != 0 ||
        h->_sweep_now - u->last_active_ms < h->history.ttl_ms)
        return false;
    forget_user(h, u);
    return true;
}

void hub_sweep(hub_t *h, int64_t now_ms)
{
    history_expire(&h->history, now_ms);
    h->_sweep_now = now_ms;
    for (unsigned i = 0; i < h->_nshards; i++)
        if (map_remove_if(&h->_shards[i].users, user_idle, h, free) > 0)
            map_shrink(&h->_shards[i].users);
}

size_t hub_nstreams(const hub_t *h)
{
    size_t n = 0;
    for (unsigned i = 0; i < h->_nshards; i++)
        n += h->_shards[i].users.count;
    return n;
}
