/* aw-agentexec -- the exec agent of the agent-shaped benchmark (bench/agents.mjs).
 *
 *   agentwire --agent 'exec:/path/to/aw-agentexec'
 *
 * agentwire starts it once per run and writes the run request as one JSON
 * line on its stdin. The user's message (user_request) holds the run's plan,
 * made by aw-agentload (see agentplan.h: "aw-bench seed=... n=... iv=..."):
 * the agent prints the plan's n events, one JSON line each, event i at
 * start + i * iv, stamped with the time it is written ("bt"), then exits.
 *
 * In C, libc only, because one process runs per run: a node or Python agent
 * would spend tens of milliseconds of CPU and megabytes of memory just to
 * start, on the same two cores as the server it is measuring. Each line is
 * one write(2) on the pipe, as an agent that flushes every event does.
 *
 * Bounded: it exits after its n events, on any write error (the server
 * closed the pipe), when its parent dies (PR_SET_PDEATHSIG), and at the
 * latest 30 s after the plan's end (alarm). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "agentplan.h"

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_until(int64_t t_us)
{
    struct timespec ts = {.tv_sec = t_us / 1000000, .tv_nsec = (long)(t_us % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The string value of "key":"..." in a JSON line (no escapes expected). */
static int json_str(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < cap) {
        if (*p == '\\')
            return -1;
        out[n++] = *p++;
    }
    out[n] = '\0';
    return *p == '"' ? 0 : -1;
}

static void fail(const char *why)
{
    fprintf(stderr, "aw-agentexec: %s\n", why);
    const char *line =
        "{\"type\":\"agent_completed\",\"status\":\"error\",\"final_response\":\"bad plan\"}\n";
    write_all(line, strlen(line));
    exit(1);
}

int main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    alarm(120); /* until the plan is known */
    int64_t t0 = mono_us();

    char req[8192];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(0, req + len, sizeof req - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (memchr(req + len - (size_t)r, '\n', (size_t)r) || len == sizeof req - 1)
            break;
    }
    req[len] = '\0';
    char user[128], plan_text[512];
    struct aplan p = {0};
    uint64_t bi = 0;
    if (json_str(req, "user_id", user, sizeof user) != 0 ||
        json_str(req, "user_request", plan_text, sizeof plan_text) != 0 ||
        aplan_parse(plan_text, &p, &bi) != 0)
        fail("the run request holds no aw-bench plan");
    alarm((unsigned)(((uint64_t)p.n * p.interval_us) / 1000000 + 30));

    struct agen g;
    agen_init(&g, &p);
    char *line = malloc(2 * (size_t)p.bmax + 512 + strlen(user));
    if (!line)
        fail("out of memory");
    for (uint32_t i = 1; i <= p.n; i++) {
        sleep_until(t0 + (int64_t)i * p.interval_us);
        enum akind k = agen_next(&g, &p);
        size_t n = 0;
        line[n++] = '{';
        n += agen_body(&g, &p, k, line + n, mono_us() / 1000);
        n += (size_t)sprintf(line + n, ",\"bu\":\"%s\",\"bi\":%llu,\"bt\":", user,
                             (unsigned long long)bi++);
        n += (size_t)sprintf(line + n, "%llu}\n",
                             (unsigned long long)(BT_BASE + (uint64_t)mono_us()));
        if (write_all(line, n) != 0)
            return 1; /* the server is gone or stopped reading */
    }
    free(line);
    return 0;
}
