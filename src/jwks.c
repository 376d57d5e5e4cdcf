/* jwks.c -- the identity provider's keys, kept fresh (jwks.h).
 *
 * libcurl's multi interface runs on the loop: curl tells us which sockets
 * to watch (on_socket: a uv_poll_t each) and when to call it back
 * (on_timer_set: one uv_timer_t); we hand readiness and timeouts back with
 * curl_multi_socket_action, and pick up finished transfers with
 * curl_multi_info_read. No thread, no blocking call after start-up. */
#include "jwks.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "aw.h"
#include "jwk.h"
#include "lock.h"
#include "log.h"

#define JWKS_MAX_BYTES  (1024 * 1024) /* a key set larger than this is refused */
#define JWKS_MAX_AGE_MS (24 * 3600 * 1000LL)
#define JWKS_USER_AGENT "agentwire"

struct jwks {
    uv_loop_t *loop;
    const config_t *cfg;
    jwt_verifier_t *v;
    bool has_dflt;
    jwt_alg_t dflt;
    /* a fetch */
    CURLM *multi;
    CURL *easy; /* in flight, or NULL */
    uv_timer_t curl_timer;
    bool handles_open;
    aw_buf_t body;
    bool too_big;
    int64_t max_age_s; /* the response's Cache-Control max-age, -1: none */
    char curl_err[CURL_ERROR_SIZE];
    /* schedule and state */
    int64_t next_ms;         /* the next refresh */
    int64_t last_attempt_ms; /* the last fetch started */
    int64_t last_ok_ms;      /* the keys in use were read then */
    int64_t retry_ms;        /* the wait after a failure, doubling */
    bool asked;              /* a token named an unknown kid */
    bool ok;                 /* the last refresh succeeded */
    char error[256];         /* why it did not, "" when it did */
    uint64_t fetches, failures, unknown_kids;
    size_t nkeys;
    struct timespec file_mtime;
};

typedef struct sock {
    uv_poll_t poll;
    jwks_t *j;
    curl_socket_t fd;
} sock_t;

static const char *source(const jwks_t *j)
{
    return j->cfg->jwks_url ? j->cfg->jwks_url : j->cfg->jwks_file;
}

static void on_skip(void *arg, const char *kid, const char *why)
{
    jwks_t *j = arg;
    log_kv(LOG_WARN | LOG_LIMITED, "key skipped", "source", source(j), "kid", kid, "why", why,
           NULL);
}

/* The next refresh after a success: the document's max-age, bounded by the
 * minimum interval and a day, or --jwks-refresh-ms without one. */
static void schedule_ok(jwks_t *j, int64_t now)
{
    int64_t every = j->max_age_s >= 0 ? j->max_age_s * 1000 : j->cfg->jwks_refresh_ms;
    if (every < j->cfg->jwks_min_interval_ms)
        every = j->cfg->jwks_min_interval_ms;
    if (every > JWKS_MAX_AGE_MS)
        every = JWKS_MAX_AGE_MS;
    j->next_ms = now + every;
    j->retry_ms = 0;
}

static void schedule_retry(jwks_t *j, int64_t now)
{
    int64_t lo = j->cfg->jwks_min_interval_ms, hi = j->cfg->jwks_refresh_ms;
    j->retry_ms = j->retry_ms ? j->retry_ms * 2 : lo;
    if (j->retry_ms > hi)
        j->retry_ms = hi > lo ? hi : lo;
    j->next_ms = now + j->retry_ms;
}

/* A document read: its keys replace the set in use. 0, or AW_EINVAL with
 * the reason in j->error (the keys in use stay). */
static int take(jwks_t *j, const char *doc, size_t len)
{
    jwt_keyset_t *ks;
    char why[256];
    if (jwk_parse_set(doc, len, j->has_dflt, j->dflt, &ks, on_skip, j, why, sizeof why) != AW_OK) {
        snprintf(j->error, sizeof j->error, "%s", why);
        return AW_EINVAL;
    }
    j->nkeys = jwt_keyset_count(ks);
    jwt_verifier_use_keys(j->v, ks);
    return AW_OK;
}

static void settled(jwks_t *j, int rc, int64_t now)
{
    j->fetches++;
    if (rc == AW_OK) {
        bool was = j->ok;
        j->ok = true;
        j->error[0] = '\0';
        j->last_ok_ms = now;
        schedule_ok(j, now);
        log_kv(was ? LOG_DEBUG : LOG_INFO, "keys read", "source", source(j), "#keys",
               (long long)j->nkeys, NULL);
        return;
    }
    j->ok = false;
    j->failures++;
    schedule_retry(j, now);
    log_kv(LOG_WARN | LOG_LIMITED, "cannot refresh the keys: keeping the last good ones", "source",
           source(j), "error", j->error, "#keys", (long long)j->nkeys, NULL);
}

/* ---- the file ---- */

static int read_file(jwks_t *j, bool if_changed)
{
    const char *path = j->cfg->jwks_file;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(j->error, sizeof j->error, "%s: cannot read it", path);
        return AW_EINVAL;
    }
    if (if_changed && st.st_mtim.tv_sec == j->file_mtime.tv_sec &&
        st.st_mtim.tv_nsec == j->file_mtime.tv_nsec)
        return AW_OK; /* unchanged: the keys in use are its keys */
    FILE *f = fopen(path, "rb");
    aw_buf_t b = {0};
    char chunk[8192];
    size_t n;
    bool big = false;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((big = b.len + n > JWKS_MAX_BYTES) || aw_buf_append(chunk, n, &b) != 0)
            break;
    if (f)
        fclose(f);
    int rc;
    if (!f || big) {
        snprintf(j->error, sizeof j->error, "%s: %s", path,
                 f ? "larger than 1 MiB" : "cannot read it");
        rc = AW_EINVAL;
    } else {
        rc = take(j, b.data ? b.data : "", b.len);
        if (rc != AW_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", j->error);
            snprintf(j->error, sizeof j->error, "%.100s: %.150s", path, why);
        } else {
            j->file_mtime = st.st_mtim;
        }
    }
    aw_buf_free(&b);
    return rc;
}

/* ---- the URL ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    jwks_t *j = arg;
    size_t len = size * n;
    if (j->body.len + len > JWKS_MAX_BYTES) {
        j->too_big = true;
        return 0; /* aborts the transfer */
    }
    return aw_buf_append(p, len, &j->body) == 0 ? len : 0;
}

/* Cache-Control: max-age=N (no-cache and no-store: 0). */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    jwks_t *j = arg;
    size_t len = size * n;
    static const char name[] = "cache-control:";
    if (len > sizeof name && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[256];
        snprintf(v, sizeof v, "%.*s", (int)(len - (sizeof name - 1)), p + sizeof name - 1);
        for (char *c = v; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        const char *m = strstr(v, "max-age=");
        if (m)
            j->max_age_s = strtoll(m + 8, NULL, 10);
        else if (strstr(v, "no-cache") || strstr(v, "no-store"))
            j->max_age_s = 0;
    }
    return len;
}

static CURL *make_easy(jwks_t *j)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    const config_t *cfg = j->cfg;
    j->body.len = 0;
    j->too_big = false;
    j->max_age_s = -1;
    j->curl_err[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, cfg->jwks_url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->jwks_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->jwks_timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cfg->jwks_ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->jwks_ca_file);
    curl_easy_setopt(e, CURLOPT_USERAGENT, JWKS_USER_AGENT);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->curl_err);
    return e;
}

/* A transfer ended: its keys, or why not. */
static int fetched(jwks_t *j, CURL *e, CURLcode res)
{
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        snprintf(j->error, sizeof j->error, "%.100s: %.150s", j->cfg->jwks_url,
                 j->too_big       ? "larger than 1 MiB"
                 : j->curl_err[0] ? j->curl_err
                                  : curl_easy_strerror(res));
        return AW_EINVAL;
    }
    if (status != 200) {
        snprintf(j->error, sizeof j->error, "%s: HTTP status %ld", j->cfg->jwks_url, status);
        return AW_EINVAL;
    }
    int rc = take(j, j->body.data ? j->body.data : "", j->body.len);
    if (rc != AW_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", j->error);
        snprintf(j->error, sizeof j->error, "%.100s: %.150s", j->cfg->jwks_url, why);
    }
    return rc;
}

static void check_done(jwks_t *j)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(j->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode res = m->data.result;
        curl_multi_remove_handle(j->multi, e);
        settled(j, fetched(j, e, res), aw_now_ms());
        curl_easy_cleanup(e);
        j->easy = NULL;
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_t *k = p->data;
    jwks_t *j = k->j;
    int flags = status < 0 ? CURL_CSELECT_ERR : 0;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    aw_lock(); /* the keys are read by every loop's upgrades */
    curl_multi_socket_action(j->multi, k->fd, flags, &running);
    check_done(j);
    aw_unlock();
}

static void free_sock(uv_handle_t *h)
{
    free(h->data);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    jwks_t *j = userp;
    sock_t *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            uv_poll_stop(&k->poll);
            uv_close((uv_handle_t *)&k->poll, free_sock);
            curl_multi_assign(j->multi, fd, NULL);
        }
        return 0;
    }
    if (!k) {
        if (!(k = calloc(1, sizeof *k)))
            return -1;
        k->j = j;
        k->fd = fd;
        if (uv_poll_init_socket(j->loop, &k->poll, fd) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        curl_multi_assign(j->multi, fd, k);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&k->poll, ev, on_poll);
    return 0;
}

static void on_curl_timeout(uv_timer_t *t)
{
    jwks_t *j = t->data;
    int running;
    aw_lock();
    curl_multi_socket_action(j->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(j);
    aw_unlock();
}

static int on_timer_set(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    jwks_t *j = userp;
    if (!j->handles_open)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&j->curl_timer);
    else
        uv_timer_start(&j->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void start_fetch(jwks_t *j, int64_t now)
{
    j->last_attempt_ms = now;
    j->asked = false;
    CURL *e = make_easy(j);
    if (!e || curl_multi_add_handle(j->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        snprintf(j->error, sizeof j->error, "cannot start a transfer");
        settled(j, AW_EINVAL, now);
        return;
    }
    j->easy = e;
}

/* A token named a key the set lacks: the keys may have rotated. The loop's
 * tick fetches them, at most once per --jwks-min-interval-ms. */
static void on_unknown_kid(void *ctx)
{
    jwks_t *j = ctx;
    j->unknown_kids++;
    j->asked = true;
}

void jwks_tick(jwks_t *j, int64_t now)
{
    if (!j || j->easy)
        return;
    bool due = now >= j->next_ms;
    bool asked = j->asked && now - j->last_attempt_ms >= j->cfg->jwks_min_interval_ms;
    if (!due && !asked)
        return;
    if (j->cfg->jwks_file) {
        j->last_attempt_ms = now;
        j->asked = false;
        settled(j, read_file(j, !asked), now);
        return;
    }
    if (j->handles_open)
        start_fetch(j, now);
}

int jwks_open(jwks_t **out, uv_loop_t *loop, const config_t *cfg, jwt_verifier_t *v, char *err,
              size_t errlen)
{
    *out = NULL;
    jwks_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    j->loop = loop;
    j->cfg = cfg;
    j->v = v;
    j->has_dflt = cfg->jwt_alg_name != NULL;
    j->dflt = cfg->jwt_alg;
    j->max_age_s = -1;
    int64_t now = aw_now_ms();
    int rc;
    if (cfg->jwks_file) {
        rc = read_file(j, false);
    } else {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errlen, "cannot start libcurl");
            free(j);
            return AW_EINVAL;
        }
        CURL *e = make_easy(j); /* start-up: the one blocking fetch */
        rc = e ? fetched(j, e, curl_easy_perform(e)) : AW_ENOMEM;
        if (!e)
            snprintf(j->error, sizeof j->error, "out of memory");
        curl_easy_cleanup(e);
    }
    if (rc != AW_OK) {
        snprintf(err, errlen, "no keys: %s", j->error);
        jwks_free(j);
        return AW_EINVAL;
    }
    settled(j, AW_OK, now);
    v->on_unknown_kid = on_unknown_kid;
    v->unknown_ctx = j;
    if (cfg->jwks_url) {
        j->multi = curl_multi_init();
        if (!j->multi) {
            snprintf(err, errlen, "out of memory");
            jwks_free(j);
            return AW_ENOMEM;
        }
        curl_multi_setopt(j->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(j->multi, CURLMOPT_SOCKETDATA, j);
        curl_multi_setopt(j->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
        curl_multi_setopt(j->multi, CURLMOPT_TIMERDATA, j);
        uv_timer_init(loop, &j->curl_timer);
        j->curl_timer.data = j;
        j->handles_open = true;
    }
    *out = j;
    return AW_OK;
}

json_t *jwks_describe(jwks_t *j)
{
    json_t *d = json_pack("{s:s, s:I, s:b}", "source", source(j), "keys", (json_int_t)j->nkeys,
                          "fresh", j->ok);
    if (d && j->last_ok_ms)
        json_object_set_new(d, "read_at", json_integer(j->last_ok_ms));
    if (d && !j->ok)
        json_object_set_new(d, "error", json_string(j->error));
    return d;
}

void jwks_metrics(jwks_t *j, FILE *f)
{
    int64_t age = j->last_ok_ms ? (aw_now_ms() - j->last_ok_ms) / 1000 : -1;
    fprintf(f,
            "# HELP agentwire_jwks_keys Keys in use from --jwks-url or --jwks-file.\n"
            "# TYPE agentwire_jwks_keys gauge\nagentwire_jwks_keys %zu\n"
            "# HELP agentwire_jwks_up 1 when the last refresh of the keys succeeded.\n"
            "# TYPE agentwire_jwks_up gauge\nagentwire_jwks_up %d\n"
            "# HELP agentwire_jwks_age_seconds Seconds since the keys in use were read.\n"
            "# TYPE agentwire_jwks_age_seconds gauge\nagentwire_jwks_age_seconds %lld\n"
            "# HELP agentwire_jwks_refreshes_total Refreshes of the keys tried.\n"
            "# TYPE agentwire_jwks_refreshes_total counter\nagentwire_jwks_refreshes_total %llu\n"
            "# HELP agentwire_jwks_refresh_failures_total Refreshes that failed (the last good "
            "keys stayed).\n"
            "# TYPE agentwire_jwks_refresh_failures_total counter\n"
            "agentwire_jwks_refresh_failures_total %llu\n"
            "# HELP agentwire_jwks_unknown_kid_total Tokens naming a key the set lacks.\n"
            "# TYPE agentwire_jwks_unknown_kid_total counter\nagentwire_jwks_unknown_kid_total "
            "%llu\n",
            j->nkeys, j->ok ? 1 : 0, (long long)age, (unsigned long long)j->fetches,
            (unsigned long long)j->failures, (unsigned long long)j->unknown_kids);
}

void jwks_stop(jwks_t *j)
{
    if (!j || !j->handles_open)
        return;
    if (j->easy) { /* its sockets' handles close through on_socket */
        curl_multi_remove_handle(j->multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    j->handles_open = false;
    uv_close((uv_handle_t *)&j->curl_timer, NULL);
}

void jwks_free(jwks_t *j)
{
    if (!j)
        return;
    if (j->v && j->v->unknown_ctx == j) {
        j->v->on_unknown_kid = NULL;
        j->v->unknown_ctx = NULL;
    }
    if (j->multi)
        curl_multi_cleanup(j->multi);
    if (j->cfg->jwks_url)
        curl_global_cleanup();
    aw_buf_free(&j->body);
    free(j);
}
