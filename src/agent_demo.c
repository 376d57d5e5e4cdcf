/* agent_demo.c -- the builtin:demo agent: it thinks, runs one real tool on
 * the user's text (a calculator when the text is arithmetic, word statistics
 * otherwise), streams the answer as partial_result pieces and completes, in
 * about a second. It emits JSON lines through runs_agent_line like any other
 * agent, so it exercises the same relay and order rules. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "agent.h"
#include "aw.h"
#include "jalloc.h"
#include "runs.h"

#define FIRST_STEP_MS 200 /* pauses between steps, so the run is visible unfolding */
#define STEP_MS       150
#define PIECE_BYTES   8

typedef struct demo_backend {
    agent_backend_t base; /* first: the backend is used through it */
    uv_loop_t *loop;
} demo_backend_t;

typedef struct demo_run {
    uv_timer_t timer;
    run_t *run;
    char *request_text; /* the user's words */
    char *answer;       /* final answer text */
    json_t *tool_params, *tool_results;
    const char *tool;
    int step;
    size_t sent; /* answer bytes streamed so far */
    bool stopping;
} demo_run_t;

/* ---- the calculator: + - * / ^, parentheses, unary minus ---- */

typedef struct calc {
    const char *p;
    bool bad;
} calc_t;

static double calc_sum(calc_t *c);

static void calc_space(calc_t *c)
{
    while (isspace((unsigned char)*c->p))
        c->p++;
}

static double calc_atom(calc_t *c)
{
    calc_space(c);
    if (*c->p == '-') {
        c->p++;
        return -calc_atom(c);
    }
    if (*c->p == '(') {
        c->p++;
        double v = calc_sum(c);
        calc_space(c);
        if (*c->p != ')')
            c->bad = true;
        else
            c->p++;
        return v;
    }
    char *end;
    double v = strtod(c->p, &end);
    if (end == c->p)
        c->bad = true;
    c->p = end;
    return v;
}

static double calc_power(calc_t *c)
{
    double v = calc_atom(c);
    calc_space(c);
    if (*c->p == '^') {
        c->p++;
        return pow(v, calc_power(c));
    }
    return v;
}

static double calc_product(calc_t *c)
{
    double v = calc_power(c);
    for (;;) {
        calc_space(c);
        char op = *c->p;
        if (op != '*' && op != '/')
            return v;
        c->p++;
        double rhs = calc_power(c);
        if (op == '/' && rhs == 0)
            c->bad = true;
        v = op == '*' ? v * rhs : (rhs != 0 ? v / rhs : 0);
    }
}

static double calc_sum(calc_t *c)
{
    double v = calc_product(c);
    for (;;) {
        calc_space(c);
        char op = *c->p;
        if (op != '+' && op != '-')
            return v;
        c->p++;
        double rhs = calc_product(c);
        v = op == '+' ? v + rhs : v - rhs;
    }
}

/* True when text is an arithmetic expression with at least one operator. */
static bool looks_arithmetic(const char *text)
{
    bool digit = false, op = false;
    for (const char *p = text; *p; p++) {
        if (isdigit((unsigned char)*p) || *p == '.')
            digit = true;
        else if (strchr("+-*/^", *p))
            op = true;
        else if (!strchr("() \t=?", *p))
            return false;
    }
    return digit && op;
}

static bool calculate(const char *text, double *out)
{
    char expr[512];
    snprintf(expr, sizeof expr, "%s", text);
    for (char *p = expr; *p; p++)
        if (*p == '=' || *p == '?')
            *p = ' ';
    calc_t c = {expr, false};
    *out = calc_sum(&c);
    calc_space(&c);
    return !c.bad && *c.p == '\0' && isfinite(*out);
}

/* ---- word statistics ---- */

static json_t *word_stats(const char *text)
{
    json_t *counts = json_object();
    size_t words = 0, chars = strlen(text);
    for (const char *p = text; *p;) {
        while (*p && !isalnum((unsigned char)*p))
            p++;
        char word[64];
        size_t n = 0;
        while (*p && (isalnum((unsigned char)*p) || *p == '\'')) {
            if (n < sizeof word - 1)
                word[n++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (!n)
            continue;
        word[n] = '\0';
        words++;
        json_t *c = json_object_get(counts, word);
        json_object_set_new(counts, word, json_integer(c ? json_integer_value(c) + 1 : 1));
    }
    json_t *top = json_array();
    for (int k = 0; k < 3; k++) { /* the three most frequent words, first seen first */
        const char *best = NULL;
        json_int_t best_n = 0;
        const char *key;
        json_t *v;
        json_object_foreach(counts, key, v)
        {
            if (json_integer_value(v) > best_n) {
                best = key;
                best_n = json_integer_value(v);
            }
        }
        if (!best)
            break;
        json_array_append_new(top, json_pack("{s:s, s:I}", "word", best, "count", best_n));
        json_object_del(counts, best);
    }
    json_decref(counts);
    return json_pack("{s:I, s:I, s:o}", "words", (json_int_t)words, "characters", (json_int_t)chars,
                     "top_words", top);
}

/* ---- the run's steps ---- */

static void emit(demo_run_t *d, json_t *ev)
{
    char *line = jalloc_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (line)
        runs_agent_line(d->run, line, strlen(line));
    free(line);
}

/* Picks the tool and its parameters. */
static void plan(demo_run_t *d)
{
    double v;
    bool calc = looks_arithmetic(d->request_text) && calculate(d->request_text, &v);
    d->tool = calc ? "calculator" : "word_stats";
    d->tool_params = json_pack("{s:s}", calc ? "expression" : "text", d->request_text);
}

/* Runs the tool for real; returns how long it took in milliseconds. */
static double run_tool(demo_run_t *d)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double v;
    if (strcmp(d->tool, "calculator") == 0 && calculate(d->request_text, &v)) {
        char num[64];
        snprintf(num, sizeof num, "%.12g", v);
        d->tool_results = json_pack("{s:f, s:s}", "value", v, "text", num);
        size_t n = strlen(d->request_text) + strlen(num) + 64;
        d->answer = malloc(n);
        snprintf(d->answer, n, "%s = %s", d->request_text, num);
    } else {
        d->tool_results = word_stats(d->request_text);
        json_t *top = json_array_get(json_object_get(d->tool_results, "top_words"), 0);
        size_t n = 256;
        d->answer = malloc(n);
        snprintf(d->answer, n,
                 "Your message has %lld words and %lld characters. The most frequent word is "
                 "\"%s\".",
                 (long long)json_integer_value(json_object_get(d->tool_results, "words")),
                 (long long)json_integer_value(json_object_get(d->tool_results, "characters")),
                 top ? json_string_value(json_object_get(top, "word")) : "(none)");
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
}

static void demo_free(uv_handle_t *h)
{
    demo_run_t *d = h->data;
    run_t *run = d->run;
    free(d->request_text);
    free(d->answer);
    json_decref(d->tool_params);
    json_decref(d->tool_results);
    free(d);
    runs_agent_ended(run, NULL);
}

static void demo_end(demo_run_t *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, demo_free);
}

static void on_step(uv_timer_t *t)
{
    demo_run_t *d = t->data;
    switch (d->step++) {
    case 0:
        emit(d, json_pack("{s:s, s:s}", "type", "agent_thinking", "reasoning",
                          strcmp(d->tool, "calculator") == 0
                              ? "This is arithmetic: I will use the calculator."
                              : "This is text: I will count its words."));
        return;
    case 1:
        emit(d, json_pack("{s:s, s:s, s:O}", "type", "tool_executing", "tool_name", d->tool,
                          "parameters", d->tool_params));
        return;
    case 2: {
        double ms = run_tool(d);
        emit(d, json_pack("{s:s, s:s, s:O, s:f}", "type", "tool_completed", "tool_name", d->tool,
                          "results", d->tool_results, "duration", ms));
        return;
    }
    default:
        break;
    }
    size_t len = strlen(d->answer);
    if (d->sent < len) {
        size_t n = len - d->sent < PIECE_BYTES ? len - d->sent : PIECE_BYTES;
        while (d->sent + n < len && ((unsigned char)d->answer[d->sent + n] & 0xC0) == 0x80)
            n++; /* never split a UTF-8 character */
        json_t *piece = json_stringn(d->answer + d->sent, n);
        d->sent += n;
        emit(d, json_pack("{s:s, s:o}", "type", "partial_result", "content", piece));
        return;
    }
    emit(d, json_pack("{s:s, s:s, s:s}", "type", "agent_completed", "status", "success",
                      "final_response", d->answer));
    demo_end(d);
}

static int demo_start(agent_backend_t *b, run_t *run, const char *request, size_t len)
{
    (void)b;
    json_error_t jerr;
    json_t *req = json_loadb(request, len, 0, &jerr);
    const char *text = json_string_value(json_object_get(req, "user_request"));
    demo_run_t *d = calloc(1, sizeof *d);
    if (!d || !text) {
        free(d);
        json_decref(req);
        return AW_ENOMEM;
    }
    d->run = run;
    d->request_text = strdup(text);
    json_decref(req);
    plan(d);
    run->agent = d;
    uv_timer_init(((demo_backend_t *)b)->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_step, FIRST_STEP_MS, STEP_MS);
    return AW_OK;
}

static void demo_stop(agent_backend_t *b, run_t *run, bool graceful)
{
    (void)b;
    (void)graceful; /* nothing outlives the timer: stopping is immediate */
    if (run->agent)
        demo_end(run->agent);
}

static void demo_dispose(agent_backend_t *b)
{
    free(b);
}

int agent_demo_create(const agent_options_t *opts, agent_backend_t **out)
{
    demo_backend_t *db = calloc(1, sizeof *db);
    if (!db)
        return AW_ENOMEM;
    db->base.kind = "builtin";
    db->base.name = "demo";
    db->base.start = demo_start;
    db->base.stop = demo_stop;
    db->base.dispose = demo_dispose;
    db->loop = opts->loop;
    *out = &db->base;
    return AW_OK;
}
