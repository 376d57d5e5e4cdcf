/* api.c -- routes and handlers of the HTTP API. Events enter the hub through
 * hub_publish only; this file never touches a session other than the one
 * that asked (except through hub_disconnect_user). The API key is compared in
 * constant time; a user's JWT is accepted only by POST /api/v1/tickets. */
#include "api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "aw.h"
#include "bigstr.h"
#include "cluster.h"
#include "event.h"
#include "jalloc.h"
#include "jwks.h"
#include "lock.h"
#include "log.h"
#include "server.h"
#include "stored.h"
#include "web.h"

#define BATCH_MAX 1000

static void respond_error(session_t *s, int status, enum metrics_error code, const char *msg)
{
    aw_lock(); /* the metrics are the lock's (a publish may run under it shared) */
    s->srv->metrics.errors[code]++;
    aw_unlock();
    session_respond_error(s, status, metrics_error_name(code), msg);
}

/* 503 unavailable with Retry-After: the stream's home did not answer (the
 * request may be retried; a publish exactly, with its idempotency key). */
static void respond_unavailable(session_t *s, const char *msg, bool counted)
{
    aw_lock();
    if (!counted)
        s->srv->metrics.errors[ERR_UNAVAILABLE]++;
    aw_unlock();
    json_t *body = json_pack("{s:s, s:s}", "error", "unavailable", "message", msg);
    char *text = body ? jalloc_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        session_abort(s, "out of memory");
        return;
    }
    session_respond(s, 503, "application/json", text, strlen(text), "Retry-After: 1\r\n");
    free(text);
}

static bool api_key_ok(server_t *srv, const http_request_t *req)
{
    const char *tok = auth_bearer(http_header(req, "Authorization"));
    const char *key = srv->cfg->api_key;
    return tok && aw_consttime_eq(tok, strlen(tok), key, strlen(key));
}

/* Bodies this large are parsed without the shared lock (a batch of 1000
 * events: about a third of its time under the lock); smaller ones parse in
 * less time than letting go of the lock and taking it again costs. */
#define UNLOCKED_PARSE_MIN 8192

/* The request body; its long strings stay undecoded in lits (bigstr.h),
 * which the hub splices back when it serializes. The body, lits and the
 * parsed tree are this request's own: a caller may parse without the lock. */
static json_t *load_body(const http_request_t *req, bigstr_t *lits, json_error_t *jerr)
{
    return bigstr_loadb(lits, req->body, req->body_len, JSON_REJECT_DUPLICATES, jerr);
}

static void refuse_not_json(session_t *s, const json_error_t *jerr)
{
    char msg[200];
    snprintf(msg, sizeof msg, "body is not JSON: %s", jerr->text);
    respond_error(s, 400, ERR_INVALID_JSON, msg);
}

/* The parsed body, or NULL when it is not JSON (answered 400). */
static json_t *parse_body(session_t *s, const http_request_t *req, bigstr_t *lits)
{
    json_error_t jerr;
    json_t *body = load_body(req, lits, &jerr);
    if (!body)
        refuse_not_json(s, &jerr);
    return body;
}

/* ---- publishing: the broker answers, now (memory) or on a later loop turn (Redis) ---- */

/* What of a request's events needs no shared state (checks, and each event's
 * text, hub_prepare) is done first; with a large body, together with its
 * parse and without the lock. The answer is written as text from the slots,
 * not built as a JSON tree. */

typedef struct pub_slot {
    struct pub_wait *w;
    int status;                /* 0: published (seq, epoch, event_id), else the error's */
    enum metrics_error code;   /* the error's */
    char *message;             /* the error's (malloc'd) */
    size_t tail_off, tail_len; /* the event's text in the wait's tails */
    uint64_t seq;
    char epoch[HUB_EPOCH_LEN + 1];
    char event_id[HUB_EVENT_ID_LEN];
    char user[EVENT_MAX_ID + 1];
    char idem[IDEM_MAX_KEY + 1];
    bool has_idem;
    bool counted; /* its error is in the metrics */
} pub_slot_t;

typedef struct pub_wait {
    session_wait_t base; /* first: the session, NULL once it is gone */
    pub_slot_t *slots;
    size_t n;
    size_t pending; /* answers still to come */
    bool batch;
    server_t *srv;
} pub_wait_t;

/* A request's events, checked and written out (pub_prepare). */
typedef struct pub_prep {
    pub_slot_t *slots;
    size_t n;
    aw_buf_t tails;
} pub_prep_t;

static void slot_error(pub_slot_t *slot, int status, enum metrics_error code, const char *msg)
{
    slot->status = status;
    slot->code = code;
    free(slot->message);
    slot->message = strdup(msg);
}

/* The checks of each event and its text: touches nothing shared. */
static int pub_prepare(pub_prep_t *p, json_t *events, const bigstr_t *lits, const char *idem_header)
{
    p->n = json_array_size(events);
    p->slots = calloc(p->n ? p->n : 1, sizeof *p->slots);
    if (!p->slots)
        return AW_ENOMEM;
    for (size_t i = 0; i < p->n; i++) {
        json_t *ev = json_array_get(events, i);
        pub_slot_t *slot = &p->slots[i];
        if (!json_is_object(ev)) {
            slot_error(slot, 422, ERR_INVALID_EVENT, "an event must be a JSON object");
            continue;
        }
        const char *user = json_string_value(json_object_get(ev, "user_id"));
        if (!event_id_valid(user)) {
            slot_error(slot, 422, ERR_INVALID_EVENT, "user_id (the target) is required");
            continue;
        }
        json_t *key = json_object_get(ev, "idempotency_key");
        const char *idem = idem_header;
        if (key) {
            idem = json_string_value(key);
            if (!idem || !*idem || strlen(idem) > IDEM_MAX_KEY) {
                slot_error(slot, 422, ERR_INVALID_EVENT,
                           "idempotency_key must be a string of 1 to 255 bytes");
                continue;
            }
        }
        /* copies: publishing drops user_id (the envelope's) and the key */
        snprintf(slot->user, sizeof slot->user, "%s", user);
        snprintf(slot->idem, sizeof slot->idem, "%s", idem ? idem : "");
        slot->has_idem = idem != NULL;
        json_object_del(ev, "idempotency_key");
        char why[200];
        slot->tail_off = p->tails.len;
        int rc = hub_prepare(ev, lits, &p->tails, why, sizeof why);
        if (rc == AW_EINVAL)
            slot_error(slot, 422, ERR_INVALID_EVENT, why);
        else if (rc != AW_OK)
            slot_error(slot, 503, ERR_UNAVAILABLE, "out of memory");
        slot->tail_len = p->tails.len - slot->tail_off;
    }
    return AW_OK;
}

/* The events' texts of a request go in a buffer of this thread's, kept
 * from one request to the next: a batch of large events writes megabytes
 * there, and a buffer malloc'd per request (mmap'd, past 1 MiB) had its
 * pages faulted in afresh each time, most of the server's CPU on 64 KiB
 * events. What was not used since the loop's last trim (api_trim, each
 * second) is freed. */
static _Thread_local aw_buf_t tl_tails;
static _Thread_local bool tl_tails_used;

static aw_buf_t tails_take(void)
{
    aw_buf_t b = tl_tails;
    memset(&tl_tails, 0, sizeof tl_tails);
    b.len = 0;
    tl_tails_used = true;
    return b;
}

static void tails_give(aw_buf_t *b, size_t keep_max)
{
    if (!tl_tails.data && b->cap <= keep_max) {
        tl_tails = *b;
        tl_tails.len = 0;
    } else {
        aw_buf_free(b);
    }
    memset(b, 0, sizeof *b);
}

void api_trim(void)
{
    if (!tl_tails_used)
        aw_buf_free(&tl_tails);
    tl_tails_used = false;
}

void api_release(void)
{
    aw_buf_free(&tl_tails);
    tl_tails_used = false;
}

static void slots_free(pub_slot_t *slots, size_t n)
{
    for (size_t i = 0; slots && i < n; i++)
        free(slots[i].message);
    free(slots);
}

static void pub_prep_free(pub_prep_t *p, size_t keep_max)
{
    slots_free(p->slots, p->n);
    tails_give(&p->tails, keep_max);
}

/* Appends slot's answer: its receipt, or its error (with its status in a
 * batch). */
static int answer_item(aw_buf_t *b, const pub_slot_t *slot, bool with_status)
{
    if (!slot->status) {
        char text[40 + HUB_EPOCH_LEN + HUB_EVENT_ID_LEN + 24];
        int n = snprintf(text, sizeof text, "{\"seq\":%llu,\"epoch\":\"%s\",\"event_id\":\"%s\"}",
                         (unsigned long long)slot->seq, slot->epoch, slot->event_id);
        return aw_buf_append(text, (size_t)n, b);
    }
    json_t *o = json_pack("{s:s, s:s}", "error", metrics_error_name(slot->code), "message",
                          slot->message ? slot->message : "out of memory");
    if (o && with_status)
        json_object_set_new(o, "status", json_integer(slot->status));
    int rc = o ? json_dump_callback(o, aw_buf_append, b, JSON_COMPACT) : -1;
    json_decref(o);
    return rc;
}

/* The answer's text: the receipt or error of one event, or the array of a
 * batch's. */
static int answer_text(const pub_wait_t *w, aw_buf_t *b)
{
    if (!w->batch)
        return answer_item(b, &w->slots[0], false);
    int rc = aw_buf_reserve(b, w->n * 96 + 2) ? -1 : aw_buf_append("[", 1, b);
    for (size_t i = 0; rc == 0 && i < w->n; i++)
        rc = (i ? aw_buf_append(",", 1, b) : 0) || answer_item(b, &w->slots[i], true) ? -1 : 0;
    return rc ? rc : aw_buf_append("]", 1, b);
}

/* Batches at least this large write their answer without the lock, when
 * they are answered before publish_all returns (from a broker's callback,
 * the caller may be in the middle of shared state). */
#define UNLOCKED_ANSWER_MIN 64

static void pub_answer(pub_wait_t *w, bool may_unlock)
{
    session_t *s = w->base.s;
    bool uncounted = false; /* the broker's refusals: counted here, once each */
    for (size_t i = 0; i < w->n && !uncounted; i++)
        uncounted = w->slots[i].status && !w->slots[i].counted;
    if (uncounted)
        aw_lock();
    for (size_t i = 0; i < w->n; i++) {
        if (w->slots[i].status && !w->slots[i].counted)
            w->srv->metrics.errors[w->slots[i].code]++;
        w->slots[i].counted = true;
    }
    if (uncounted)
        aw_unlock();
    if (s) {
        size_t down = 0;
        for (size_t i = 0; i < w->n; i++)
            down += w->slots[i].status == 503;
        if (w->batch && down > 0 && down == w->n) {
            respond_unavailable(s, "the Redis shards of these events did not answer",
                                true); /* each event's error is counted */
        } else {
            aw_buf_t text = {0};
            int depth = may_unlock && w->n >= UNLOCKED_ANSWER_MIN ? aw_lock_suspend() : 0;
            int rc = answer_text(w, &text);
            aw_lock_resume(depth);
            int status = w->batch || !w->slots[0].status ? 200 : w->slots[0].status;
            if (rc != 0)
                session_abort(s, "out of memory");
            else
                session_respond(s, status, "application/json", text.data, text.len,
                                status == 503 ? "Retry-After: 1\r\n" : NULL);
            aw_buf_free(&text);
        }
    }
    slots_free(w->slots, w->n);
    session_http_release(&w->base);
}

static void pub_done(pub_wait_t *w, bool may_unlock)
{
    if (--w->pending == 0)
        pub_answer(w, may_unlock);
}

static void on_receipt(void *arg, int rc, const hub_receipt_t *r)
{
    pub_slot_t *slot = arg;
    pub_wait_t *w = slot->w;
    if (rc == AW_OK) {
        slot->status = 0;
        slot->seq = r->seq;
        memcpy(slot->epoch, r->epoch, sizeof slot->epoch);
        memcpy(slot->event_id, r->event_id, sizeof slot->event_id);
    } else {
        if (rc == AW_EINVAL)
            slot_error(slot, 422, ERR_INVALID_EVENT, r->error);
        else if (rc == AW_ECONFLICT)
            slot_error(slot, 409, ERR_RUN_ORDER, r->error);
        else
            slot_error(slot, 503, ERR_UNAVAILABLE, rc == AW_ENOMEM ? "out of memory" : r->error);
        /* counted when answered: this may run under a shard lock */
    }
    pub_done(w, false);
}

/* Requests with fewer events publish under the lock they already hold:
 * letting go of it and taking a shard lock and then the lock again costs
 * more, on two cores, than a few events' fan-out (docs/architecture.md). */
#define SHARDED_MIN 16

/* Publishes the prepared events through the broker and answers when every
 * one has its answer. Takes p's slots. */
static void publish_all(session_t *s, json_t *events, pub_prep_t *p, const bigstr_t *lits,
                        bool batch)
{
    server_t *srv = s->srv;
    size_t n = p->n;
    pub_wait_t *w = (pub_wait_t *)session_http_hold(s, sizeof *w);
    broker_pub_t *items = w ? calloc(n ? n : 1, sizeof *items) : NULL;
    if (!items) {
        if (w)
            session_http_release(&w->base);
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    w->slots = p->slots;
    w->n = n;
    p->slots = NULL;
    p->n = 0;
    w->batch = batch;
    w->srv = srv;
    w->pending = n + 1; /* answers may come before this returns */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        pub_slot_t *slot = &w->slots[i];
        slot->w = w;
        if (slot->status) { /* refused before publishing: counted when answered */
            w->pending--;
            continue;
        }
        items[m++] = (broker_pub_t){.user = slot->user,
                                    .ev = json_array_get(events, i),
                                    .idem = slot->has_idem ? slot->idem : NULL,
                                    .tail = p->tails.data + slot->tail_off,
                                    .tail_len = slot->tail_len,
                                    .arg = slot};
    }
    /* under the lock shared (one request of a connection's read, see
     * session.c) the shards cost nothing more, whatever the size */
    bool sharded =
        (m >= SHARDED_MIN || aw_in_shared()) && broker_memory_shardable(srv->broker, items, m);
    if (sharded) {
        broker_memory_publish_sharded(srv->broker, items, m, on_receipt);
    } else {
        aw_lock();
        srv->hub.literals = lits; /* for a broker that serializes events itself */
        broker_publish(srv->broker, items, m, on_receipt);
        srv->hub.literals = NULL;
        aw_unlock();
    }
    free(items);
    pub_done(w, true);
}

typedef struct list_wait {
    session_wait_t base;
    char user[EVENT_MAX_ID * 3 + 1]; /* as the route decoded it */
    bool kick;
} list_wait_t;

static void on_user_list(void *arg, int rc, json_t *list)
{
    list_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc != AW_OK) {
        respond_unavailable(s, "the user's stream did not answer", false);
    } else if (s) {
        json_t *body = w->kick ? json_pack("{s:s, s:I}", "user_id", w->user, "disconnected",
                                           (json_int_t)json_array_size(list))
                               : json_pack("{s:s, s:O}", "user_id", w->user, "connections", list);
        if (w->kick)
            log_kv(LOG_INFO, "kick", "user", w->user, "#connections",
                   (long long)json_array_size(list), NULL);
        session_respond_json(s, 200, body);
        json_decref(body);
    }
    session_http_release(&w->base);
}

/* GET .../connections and POST .../disconnect: every node's connections. */
static void list_user(session_t *s, const char *user, bool kick)
{
    list_wait_t *w = (list_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    snprintf(w->user, sizeof w->user, "%s", user);
    w->kick = kick;
    (kick ? broker_disconnect : broker_connections)(s->srv->broker, user, on_user_list, w);
}

typedef struct hist_wait {
    session_wait_t base;
    char user[EVENT_MAX_ID * 3 + 1];
} hist_wait_t;

static void on_history_read(void *arg, int rc, const char *epoch, uint64_t seq, uint64_t first,
                            const char *const *events, const size_t *lens, size_t n)
{
    hist_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc != AW_OK) {
        respond_unavailable(s, "the user's stream did not answer", false);
    } else if (s) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        json_t *head = json_pack("{s:s, s:o, s:I, s:I}", "user_id", w->user, "epoch",
                                 epoch ? json_string(epoch) : json_null(), "seq", (json_int_t)seq,
                                 "first_seq", (json_int_t)first);
        char *text = head ? jalloc_dumps(head, JSON_COMPACT) : NULL;
        json_decref(head);
        if (f && text) {
            fprintf(f, "%.*s,\"events\":[", (int)(strlen(text) - 1), text);
            for (size_t i = 0; i < n; i++) {
                if (i)
                    fputc(',', f);
                fwrite(events[i], 1, lens[i], f);
            }
            fputs("]}", f);
        }
        free(text);
        if (f)
            fclose(f);
        if (buf)
            session_respond(s, 200, "application/json", buf, len, NULL);
        else
            respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        free(buf);
    }
    session_http_release(&w->base);
}

/* Parses the body and prepares its events (pub_prepare); a large body
 * without the lock. The events (one, or the batch's), or NULL when the
 * request was refused (answered). */
static json_t *parse_and_prepare(session_t *s, const http_request_t *req, bool batch,
                                 bigstr_t *lits, pub_prep_t *p)
{
    const char *idem = batch ? NULL : http_header(req, "Idempotency-Key");
    bool idem_bad = idem && (!*idem || strlen(idem) > IDEM_MAX_KEY);
    json_error_t jerr;
    int depth = req->body_len >= UNLOCKED_PARSE_MIN ? aw_lock_suspend() : 0;
    json_t *body = load_body(req, lits, &jerr);
    bool shape = body && !idem_bad &&
                 (!batch || (json_is_array(body) && json_array_size(body) <= BATCH_MAX));
    json_t *events = !shape ? NULL : batch ? json_incref(body) : json_pack("[O]", body);
    int rc = events ? pub_prepare(p, events, lits, idem) : AW_OK;
    aw_lock_resume(depth);
    if (!body) {
        refuse_not_json(s, &jerr);
    } else if (idem_bad) {
        respond_error(s, 400, ERR_BAD_REQUEST, "Idempotency-Key must be 1 to 255 bytes");
    } else if (!shape) {
        respond_error(s, json_is_array(body) ? 413 : 422,
                      json_is_array(body) ? ERR_TOO_LARGE : ERR_INVALID_EVENT,
                      "a batch is a JSON array of at most 1000 events");
    } else if (!events || rc != AW_OK) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        json_decref(events);
        events = NULL;
    }
    json_decref(body);
    return events;
}

static void publish_request(session_t *s, const http_request_t *req, bool batch)
{
    bigstr_t lits = {0};
    pub_prep_t p = {.tails = tails_take()};
    json_t *events = parse_and_prepare(s, req, batch, &lits, &p);
    if (events)
        publish_all(s, events, &p, &lits, batch);
    /* the tree and the texts are this request's own: a large one is freed
     * without the lock */
    int depth = req->body_len >= UNLOCKED_PARSE_MIN ? aw_lock_suspend() : 0;
    json_decref(events);
    /* the texts are at most about the body: twice the largest, as grown */
    pub_prep_free(&p, 2 * (size_t)s->srv->cfg->max_request_bytes);
    bigstr_free(&lits);
    aw_lock_resume(depth);
}

static void on_publish(session_t *s, const http_request_t *req)
{
    publish_request(s, req, false);
}

static void on_batch(session_t *s, const http_request_t *req)
{
    publish_request(s, req, true);
}

static void on_connections(session_t *s, const char *user)
{
    list_user(s, user, false);
}

static void on_disconnect(session_t *s, const char *user)
{
    list_user(s, user, true);
}

typedef struct ticket_wait {
    session_wait_t base;
    int64_t expires;
} ticket_wait_t;

static void on_ticket_issued(void *arg, int rc, const char *id)
{
    ticket_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc == AW_ELIMIT) {
        respond_error(s, 429, ERR_TOO_MANY_TICKETS,
                      "too many unused tickets; use or let expire the ones issued");
    } else if (s && rc != AW_OK) {
        respond_unavailable(s, "cannot issue a ticket now", false);
    } else if (s) {
        json_t *body = json_pack("{s:s, s:I}", "ticket", id, "expires_at", (json_int_t)w->expires);
        session_respond_json(s, 200, body);
        json_decref(body);
    }
    session_http_release(&w->base);
}

static void on_ticket(session_t *s, const http_request_t *req)
{
    server_t *srv = s->srv;
    const char *tok = auth_bearer(http_header(req, "Authorization"));
    auth_result_t r;
    if (!tok || auth_token(&srv->jwt, tok, strlen(tok), aw_now_ms(), &r) != AW_OK) {
        respond_error(s, 401, ERR_UNAUTHORIZED, "a ticket needs the user's JWT as Bearer");
        return;
    }
    int64_t now = aw_now_ms();
    int64_t expires = now + srv->cfg->ticket_ttl_ms;
    int64_t token_exp = r.expires_ms - srv->jwt.leeway_s * 1000;
    if (token_exp <= now) { /* accepted within the leeway, but a ticket could never be used */
        respond_error(s, 401, ERR_UNAUTHORIZED, "the token has expired");
        return;
    }
    ticket_wait_t *w = (ticket_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    w->expires = expires < token_exp ? expires : token_exp;
    broker_ticket_issue(srv->broker, r.user, w->expires, token_exp, on_ticket_issued, w);
}

/* GET /api/v1/history?user_id=&since=: the retained events, as the very
 * bytes that were sent, joined into one JSON document without re-parsing. */
static void on_history(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID + 1], since_text[32];
    if (http_query_get(req->query, "user_id", user, sizeof user) != AW_OK ||
        !event_id_valid(user)) {
        respond_error(s, 422, ERR_INVALID_EVENT, "user_id is required");
        return;
    }
    uint64_t since = 0;
    int rc = http_query_get(req->query, "since", since_text, sizeof since_text);
    if (rc == AW_OK) {
        char *end;
        since = strtoull(since_text, &end, 10);
        if (end == since_text || *end || since_text[0] == '-' || since == UINT64_MAX) {
            respond_error(s, 422, ERR_INVALID_EVENT, "since must be a non-negative integer");
            return;
        }
    } else if (rc != AW_ENOTFOUND) {
        respond_error(s, 422, ERR_INVALID_EVENT, "since must be a non-negative integer");
        return;
    }
    hist_wait_t *w = (hist_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    snprintf(w->user, sizeof w->user, "%s", user);
    broker_history(s->srv->broker, user, since, on_history_read, w);
}

/* POST /api/v1/dev/token {"name"}: a user token for the demo page, in
 * development mode only (the server made its secret up and printed it). */
static void on_dev_token(session_t *s, const http_request_t *req)
{
    const config_t *cfg = s->srv->cfg;
    if (!cfg->dev_mode) {
        respond_error(s, 404, ERR_NOT_FOUND, "only in development mode");
        return;
    }
    bigstr_t lits = {0};
    json_t *body = parse_body(s, req, &lits);
    bigstr_free(&lits); /* a long name is refused below: it reads as a placeholder */
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    size_t n = name ? strlen(name) : 0;
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]);
    if (!ok) {
        respond_error(s, 400, ERR_BAD_REQUEST, "name must be 1 to 64 of A-Z a-z 0-9 _ . -");
        json_decref(body);
        return;
    }
    int64_t exp_s = aw_now_ms() / 1000 + 3600;
    char claims[160], token[1024];
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%lld}", name, (long long)exp_s);
    if (jwt_sign_hs256(token, sizeof token, cfg->jwt_secret, strlen(cfg->jwt_secret), claims) !=
        AW_OK) {
        respond_error(s, 503, ERR_UNAVAILABLE, "cannot sign a token");
        json_decref(body);
        return;
    }
    json_t *out = json_pack("{s:s, s:s, s:I}", "token", token, "user_id", name, "expires_at",
                            (json_int_t)exp_s * 1000);
    session_respond_json(s, 200, out);
    json_decref(out);
    json_decref(body);
}

static void on_metrics(session_t *s)
{
    server_t *srv = s->srv;
    size_t len;
    const hub_t *h = &srv->hub;
    metrics_gauges_t g = {
        .connections = h->nconns,
        .users = h->nusers_live,
        .streams = hub_nstreams(h),
        .history_events = h->history.entries,
        .history_bytes = h->history.bytes + h->history.extra,
        .history_evicted = h->history.evicted,
        .streams_dropped = h->streams_dropped,
        .tickets = srv->tickets._map.count,
        .idempotency_keys = srv->idem._map.count,
        .body_bytes = srv->body_bytes_in_flight,
    };
    server_sum_counters(srv);
    char *text = metrics_render(&srv->metrics, &g, &len);
    if (text && (srv->cluster || srv->durable || srv->jwks)) { /* more modules' lines follow */
        char *all = NULL;
        size_t alen = 0;
        FILE *f = open_memstream(&all, &alen);
        if (f) {
            fwrite(text, 1, len, f);
            if (srv->cluster)
                cluster_metrics(srv->cluster, f);
            stored_metrics(srv, f);
            if (srv->jwks)
                jwks_metrics(srv->jwks, f);
            fclose(f);
        }
        free(text);
        text = all;
        len = alen;
    }
    if (!text) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    session_respond(s, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
}

/* /readyz: 200 when this node can serve (not draining, its broker's
 * shards answering), 503 with the reason otherwise; in cluster mode the
 * shards' state and durability follow. */
static void on_readyz(session_t *s)
{
    char why[256];
    bool ready = !s->srv->draining && broker_ready(s->srv->broker, why, sizeof why);
    json_t *detail = broker_describe(s->srv->broker);
    if (s->srv->jwks) { /* the keys: stale ones still verify, so ready stays as it is */
        if (!detail)
            detail = json_object();
        if (detail)
            json_object_set_new(detail, "jwks", jwks_describe(s->srv->jwks));
    }
    if (!detail) {
        if (ready)
            session_respond(s, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL);
        else
            respond_error(s, 503, ERR_UNAVAILABLE, s->srv->draining ? "draining" : why);
        return;
    }
    if (ready) {
        json_object_set_new(detail, "status", json_string("ready"));
    } else {
        s->srv->metrics.errors[ERR_UNAVAILABLE]++;
        json_object_set_new(detail, "error", json_string("unavailable"));
        json_object_set_new(detail, "message", json_string(s->srv->draining ? "draining" : why));
    }
    session_respond_json(s, ready ? 200 : 503, detail);
    json_decref(detail);
}

/* Matches "/api/v1/users/{id}/<action>"; writes the decoded id. */
static const char *user_route(const char *path, char *user, size_t ulen)
{
    static const char prefix[] = "/api/v1/users/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return NULL;
    const char *id = path + sizeof prefix - 1, *slash = strchr(id, '/');
    if (!slash || slash == id || (size_t)(slash - id) >= ulen)
        return NULL;
    int n = http_path_decode(user, id, (size_t)(slash - id));
    if (n <= 0 || !event_id_valid(user))
        return NULL;
    return slash + 1;
}

/* The routes of /api/v1/: the method each takes, and whether it is
 * authenticated by its own means (a user's JWT, development mode) instead of
 * the API key. One table for the head check and for the dispatch. */
enum route_id {
    R_TICKETS,
    R_DEV_TOKEN,
    R_PUBLISH,
    R_BATCH,
    R_HISTORY,
    R_CONNECTIONS,
    R_DISCONNECT
};

static const struct route {
    const char *name; /* the path, or the action of /api/v1/users/{id}/<action> */
    bool per_user;
    enum http_method method;
    bool keyless;
} routes[] = {
    [R_TICKETS] = {"/api/v1/tickets", false, HTTP_POST, true},
    [R_DEV_TOKEN] = {"/api/v1/dev/token", false, HTTP_POST, true},
    [R_PUBLISH] = {"/api/v1/publish", false, HTTP_POST, false},
    [R_BATCH] = {"/api/v1/publish/batch", false, HTTP_POST, false},
    [R_HISTORY] = {"/api/v1/history", false, HTTP_GET, false},
    [R_CONNECTIONS] = {"connections", true, HTTP_GET, false},
    [R_DISCONNECT] = {"disconnect", true, HTTP_POST, false},
};

/* The route of path (writing the decoded user id of per-user routes), or -1. */
static int route_find(const char *path, char *user, size_t ulen)
{
    const char *action = user_route(path, user, ulen);
    for (size_t i = 0; i < AW_ARRAY_LEN(routes); i++) {
        const char *want = routes[i].per_user ? action : path;
        if (want && strcmp(want, routes[i].name) == 0)
            return (int)i;
    }
    return -1;
}

/* Checks credential, route and method of a /api/v1/ request: its route, or
 * -1 once answered with 401, 404 or 405. */
static int route_check(session_t *s, const http_request_t *req, char *user, size_t ulen)
{
    int r = route_find(req->path, user, ulen);
    if ((r < 0 || !routes[r].keyless) && !api_key_ok(s->srv, req)) {
        respond_error(s, 401, ERR_UNAUTHORIZED, "missing or wrong API key");
        return -1;
    }
    if (r < 0) {
        respond_error(s, 404, ERR_NOT_FOUND, "no such API route");
        return -1;
    }
    if (req->method != routes[r].method) {
        respond_error(s, 405, ERR_METHOD_NOT_ALLOWED, "method not allowed on this route");
        return -1;
    }
    return r;
}

static void api_v1(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID * 3 + 1];
    switch (route_check(s, req, user, sizeof user)) {
    case R_TICKETS:
        on_ticket(s, req);
        break;
    case R_DEV_TOKEN:
        on_dev_token(s, req);
        break;
    case R_PUBLISH:
        on_publish(s, req);
        break;
    case R_BATCH:
        on_batch(s, req);
        break;
    case R_HISTORY:
        on_history(s, req);
        break;
    case R_CONNECTIONS:
        on_connections(s, user);
        break;
    case R_DISCONNECT:
        on_disconnect(s, user);
        break;
    default:
        break; /* answered */
    }
}

bool api_shared_ok(session_t *s, const http_request_t *req)
{
    server_t *srv = s->srv;
    if (req->method != HTTP_POST || !broker_memory_direct(srv->broker))
        return false;
    char user[EVENT_MAX_ID * 3 + 1];
    int r = route_find(req->path, user, sizeof user);
    return r == R_PUBLISH || r == R_BATCH;
}

bool api_admit_body(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID * 3 + 1];
    int r = -1;
    if (strncmp(req->path, "/api/v1/", 8) == 0 && (r = route_check(s, req, user, sizeof user)) < 0)
        return false;
    if (r < 0 || routes[r].method != HTTP_POST) {
        respond_error(s, 413, ERR_TOO_LARGE, "this route takes no request body");
        return false;
    }
    return true;
}

void api_handle(session_t *s, const http_request_t *req)
{
    const char *p = req->path;
    const web_file_t *file;
    if (strncmp(p, "/api/v1/", 8) == 0) {
        api_v1(s, req);
    } else if (strcmp(p, "/healthz") == 0) {
        session_respond(s, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (strcmp(p, "/readyz") == 0) {
        on_readyz(s);
    } else if (strcmp(p, "/metrics") == 0) {
        if (s->srv->cfg->metrics_public || api_key_ok(s->srv, req))
            on_metrics(s);
        else
            respond_error(s, 401, ERR_UNAUTHORIZED,
                          "/metrics needs the API key (or --metrics-public on)");
    } else if (req->method == HTTP_GET && (file = web_find(p)) != NULL) {
        session_respond(s, 200, file->content_type, file->data, file->len, NULL);
    } else {
        respond_error(s, 404, ERR_NOT_FOUND, "not found");
    }
}
