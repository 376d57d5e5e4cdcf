/* log.c -- writes structured log records to stderr. The only module that
 * formats log lines; it keeps just the chosen format and level. Records are
 * written with one fwrite each so concurrent writers never interleave lines. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aw.h"

static enum log_format log_fmt = LOG_FORMAT_TEXT;
static enum log_level log_min = LOG_INFO;
static long long log_rate = 20;

#define LOG_KINDS 64 /* limited kinds tracked; more than the code has */

/* One limited kind: lines written in the current second, and dropped. */
typedef struct kind {
    const char *msg;
    long long second;
    long long written;
    long long suppressed;
} kind_t;

static kind_t kinds[LOG_KINDS];
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER; /* loops log from threads */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_format format, enum log_level level, long long per_second)
{
    log_fmt = format;
    log_min = level;
    log_rate = per_second;
}

/* Decides whether a line of a limited kind goes out now. Returns false to
 * drop it; *report is the count dropped before it, to print with it. */
static bool admit(const char *msg, long long *report)
{
    *report = 0;
    if (log_rate <= 0)
        return true;
    long long now = aw_now_ms() / 1000;
    bool ok = true;
    pthread_mutex_lock(&kinds_lock);
    kind_t *k = NULL;
    for (size_t i = 0; i < LOG_KINDS && !k; i++)
        if (kinds[i].msg == msg || !kinds[i].msg)
            k = &kinds[i];
    if (k) {
        if (!k->msg || k->second != now) {
            k->msg = msg;
            k->second = now;
            k->written = 0;
        }
        if (k->written >= log_rate) {
            k->suppressed++;
            ok = false;
        } else {
            k->written++;
            *report = k->suppressed;
            k->suppressed = 0;
        }
    }
    pthread_mutex_unlock(&kinds_lock);
    return ok;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return AW_OK;
        }
    }
    return AW_EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else
        return AW_EINVAL;
    return AW_OK;
}

typedef struct line {
    char buf[2048];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len; /* keep room for the closing "}\n" */
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

/* JSON string body: escapes quotes, backslashes and control bytes. */
static void put_escaped(line_t *l, const char *s)
{
    char esc[8];
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(l, esc, 6);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
}

static void put_time(line_t *l)
{
    char ts[40];
    int64_t ms = aw_now_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(ms % 1000));
    puts_(l, ts);
}

/* A text-format value: bare when it is plain, else quoted with quotes,
 * backslashes and control bytes escaped, so no value can forge a field or
 * a line. */
static void put_text_value(line_t *l, const char *val)
{
    bool plain = *val != '\0';
    for (const char *p = val; *p && plain; p++)
        plain = (unsigned char)*p > 0x20 && *p != 0x7f && *p != '"' && *p != '\\' && *p != '=';
    if (plain) {
        puts_(l, val);
        return;
    }
    puts_(l, "\"");
    char esc[8];
    for (const char *p = val; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            put(l, esc, 4);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
    puts_(l, "\"");
}

void log_kv(int level_flags, const char *msg, ...)
{
    enum log_level level = (enum log_level)(level_flags & 0xff);
    if (level < log_min)
        return;
    long long suppressed = 0;
    if ((level_flags & LOG_LIMITED) && !admit(msg, &suppressed))
        return;
    line_t l = {.len = 0};
    bool json = log_fmt == LOG_FORMAT_JSON;
    if (json) {
        puts_(&l, "{\"ts\":\"");
        put_time(&l);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[level]);
        puts_(&l, "\",\"msg\":\"");
        put_escaped(&l, msg);
        puts_(&l, "\"");
    } else {
        put_time(&l);
        puts_(&l, " ");
        puts_(&l, level_names[level]);
        puts_(&l, " ");
        puts_(&l, msg);
    }
    va_list ap;
    va_start(ap, msg);
    for (const char *key; (key = va_arg(ap, const char *)) != NULL;) {
        char num[32];
        const char *val;
        bool is_num = key[0] == '#';
        if (is_num) {
            key++;
            snprintf(num, sizeof num, "%lld", va_arg(ap, long long));
            val = num;
        } else {
            val = va_arg(ap, const char *);
        }
        if (json) {
            puts_(&l, ",\"");
            put_escaped(&l, key);
            puts_(&l, "\":");
            if (is_num || !val) {
                puts_(&l, val ? val : "null");
            } else {
                puts_(&l, "\"");
                put_escaped(&l, val);
                puts_(&l, "\"");
            }
        } else {
            puts_(&l, " ");
            puts_(&l, key);
            puts_(&l, "=");
            put_text_value(&l, val ? val : "-");
        }
    }
    va_end(ap);
    if (suppressed) {
        char num[48];
        snprintf(num, sizeof num, json ? ",\"suppressed\":%lld" : " suppressed=%lld", suppressed);
        puts_(&l, num);
    }
    if (json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    fwrite(l.buf, 1, l.len, stderr);
}
