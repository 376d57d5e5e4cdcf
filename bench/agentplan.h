/* agentplan.h -- the events of one benchmark agent run, shared by the agent
 * load generator (aw-agentload, which publishes them itself) and the exec
 * agent (aw-agentexec, which prints them for agentwire's exec backend), so
 * that both make the same events from the same plan.
 *
 * A run is agent_started, then n events: agent_thinking, partial_result and
 * tool_executing/tool_completed pairs in a random (seeded) mix, the last one
 * agent_completed. Event i (1..n) is due interval_us * i after the start.
 * Every text (reasoning, content, a tool's query and summary, the final
 * response) is 20-200 characters of lower-case words: nothing to escape.
 *
 * Each event carries the benchmark's own fields, written by the caller:
 *   "bu":"u<user>"  the user it is for (a subscriber checks it is itself)
 *   "bi":<index>    per-user index 1, 2, 3, ... over all its runs (order, loss)
 *   "bt":<time>     BT_BASE + CLOCK_MONOTONIC in µs when it was written to the
 *                   socket or pipe (always 16 digits: it is patched in place)
 */
#ifndef AW_AGENTPLAN_H
#define AW_AGENTPLAN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define BT_BASE   1000000000000000ull /* bt = BT_BASE + µs: 16 digits for 31 years of uptime */
#define BT_DIGITS 16

enum akind { AK_THINK, AK_PARTIAL, AK_TOOL_EXEC, AK_TOOL_DONE, AK_COMPLETED };

struct aplan {
    uint64_t seed;
    uint32_t n;           /* events after agent_started, agent_completed included (>= 1) */
    uint32_t interval_us; /* between two events */
    uint32_t bmin, bmax;  /* text length */
    uint32_t tool_pm;     /* per mille: an event opens a tool call (its answer is the next event) */
    uint32_t think_pm;    /* per mille: agent_thinking, else partial_result */
};

struct agen {
    uint64_t rng;
    uint32_t i; /* events made so far */
    int tool;   /* index of the open tool call's name, -1: none */
    int64_t tool_t0;
};

static inline uint64_t agen_rand(struct agen *g)
{
    /* splitmix64: small, fast, the same on both sides */
    uint64_t z = (g->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void agen_init(struct agen *g, const struct aplan *p)
{
    g->rng = p->seed;
    g->i = 0;
    g->tool = -1;
    g->tool_t0 = 0;
}

/* The kind of the next event (i = g->i + 1); advances g->i. */
static inline enum akind agen_next(struct agen *g, const struct aplan *p)
{
    uint32_t i = ++g->i;
    if (i >= p->n)
        return AK_COMPLETED;
    if (g->tool >= 0)
        return AK_TOOL_DONE;
    uint32_t r = (uint32_t)(agen_rand(g) % 1000);
    if (r < p->tool_pm && i + 1 < p->n)
        return AK_TOOL_EXEC;
    return r < p->tool_pm + p->think_pm ? AK_THINK : AK_PARTIAL;
}

static const char *const agen_words[] = {
    "the",    "agent", "reads", "file",   "and",   "then",  "checks", "whether",
    "result", "looks", "right", "so",     "next",  "step",  "is",     "to",
    "query",  "table", "with",  "filter", "on",    "user",  "id",     "answer",
    "says",   "three", "rows",  "match",  "which", "means", "plan",   "works",
};
static const char *const agen_tools[] = {"web_search", "read_file", "run_python", "sql_query"};

/* Writes a text of random length in [bmin, bmax] at o; returns its length. */
static inline size_t agen_text(struct agen *g, const struct aplan *p, char *o)
{
    uint32_t span = p->bmax > p->bmin ? p->bmax - p->bmin + 1 : 1;
    size_t len = p->bmin + (size_t)(agen_rand(g) % span), n = 0;
    uint64_t r = 0;
    int bits = 0;
    while (n < len) {
        if (bits < 5) {
            r = agen_rand(g);
            bits = 64;
        }
        const char *w = agen_words[r & 31];
        r >>= 5;
        bits -= 5;
        size_t wl = strlen(w);
        if (n && n < len)
            o[n++] = ' ';
        for (size_t k = 0; k < wl && n < len; k++)
            o[n++] = w[k];
    }
    if (len && o[len - 1] == ' ')
        o[len - 1] = '.';
    return len;
}

#define AGEN_PUT(s)                                                                                \
    do {                                                                                           \
        memcpy(o + n, s, sizeof(s) - 1);                                                           \
        n += sizeof(s) - 1;                                                                        \
    } while (0)

/* The type and type-specific fields of event kind k (no braces), e.g.
 * "type":"agent_thinking","reasoning":"..." ; o needs 2 * bmax + 200 bytes.
 * now_ms: for a tool call's duration. */
static inline size_t agen_body(struct agen *g, const struct aplan *p, enum akind k, char *o,
                               int64_t now_ms)
{
    size_t n = 0;
    switch (k) {
    case AK_THINK:
        AGEN_PUT("\"type\":\"agent_thinking\",\"reasoning\":\"");
        n += agen_text(g, p, o + n);
        o[n++] = '"';
        break;
    case AK_PARTIAL:
        AGEN_PUT("\"type\":\"partial_result\",\"content\":\"");
        n += agen_text(g, p, o + n);
        o[n++] = '"';
        break;
    case AK_TOOL_EXEC:
        g->tool = (int)(agen_rand(g) % 4);
        g->tool_t0 = now_ms;
        n += (size_t)sprintf(o + n, "\"type\":\"tool_executing\",\"tool_name\":\"%s\",",
                             agen_tools[g->tool]);
        AGEN_PUT("\"parameters\":{\"query\":\"");
        n += agen_text(g, p, o + n);
        AGEN_PUT("\"}");
        break;
    case AK_TOOL_DONE: {
        int t = g->tool >= 0 ? g->tool : 0;
        int64_t d = now_ms - g->tool_t0;
        n += (size_t)sprintf(o + n,
                             "\"type\":\"tool_completed\",\"tool_name\":\"%s\",\"duration\":%lld,",
                             agen_tools[t], (long long)(d > 0 ? d : 0));
        AGEN_PUT("\"results\":{\"items\":3,\"summary\":\"");
        n += agen_text(g, p, o + n);
        AGEN_PUT("\"}");
        g->tool = -1;
        break;
    }
    case AK_COMPLETED:
        AGEN_PUT("\"type\":\"agent_completed\",\"status\":\"success\",\"final_response\":\"");
        n += agen_text(g, p, o + n);
        o[n++] = '"';
        break;
    }
    return n;
}

/* The run request's user_request for an exec agent, and its parser. */
static inline int aplan_format(char *o, size_t cap, const struct aplan *p, uint64_t bi0)
{
    return snprintf(o, cap,
                    "aw-bench seed=%llu n=%u iv=%u bmin=%u bmax=%u tool=%u think=%u b0=%llu",
                    (unsigned long long)p->seed, p->n, p->interval_us, p->bmin, p->bmax, p->tool_pm,
                    p->think_pm, (unsigned long long)bi0);
}

static inline int aplan_parse(const char *s, struct aplan *p, uint64_t *bi0)
{
    unsigned long long seed, b0;
    unsigned n, iv, bmin, bmax, tool, think;
    const char *h = strstr(s, "aw-bench ");
    if (!h || sscanf(h, "aw-bench seed=%llu n=%u iv=%u bmin=%u bmax=%u tool=%u think=%u b0=%llu",
                     &seed, &n, &iv, &bmin, &bmax, &tool, &think, &b0) != 8)
        return -1;
    if (n < 1 || n > 1000000 || iv > 60000000 || bmin > bmax || bmax > 4096 || tool + think > 1000)
        return -1;
    p->seed = seed;
    p->n = n;
    p->interval_us = iv;
    p->bmin = bmin;
    p->bmax = bmax;
    p->tool_pm = tool;
    p->think_pm = think;
    *bi0 = b0;
    return 0;
}

#endif
