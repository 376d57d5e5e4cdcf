/* agent_lines.c -- the line splitter of agent output (see agent_lines.h).
 * Owns only the buffer of one partial line. Never does I/O, never keeps
 * more than max_line_bytes + 1 bytes, and never calls back for a line that
 * is not complete (or ended by agent_lines_finish). */
#include "agent_lines.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"

#define AGENT_LINES_MIN_CAP 256

void agent_lines_init(agent_lines_t *l, size_t max_line_bytes, agent_lines_line_cb on_line,
                      agent_lines_too_long_cb on_too_long, void *user)
{
    memset(l, 0, sizeof *l);
    if (max_line_bytes == 0)
        max_line_bytes = AGENT_LINES_DEFAULT_MAX;
    if (max_line_bytes > SIZE_MAX - 2)
        max_line_bytes = SIZE_MAX - 2; /* so that max + 1 bytes can be counted */
    l->max_line_bytes = max_line_bytes;
    l->on_line = on_line;
    l->on_too_long = on_too_long;
    l->user = user;
}

void agent_lines_dispose(agent_lines_t *l)
{
    free(l->_buf);
    l->_buf = NULL;
    l->_len = l->_cap = 0;
    l->_skipping = false;
}

/* Hands out one complete line: drops a final "\r", enforces the limit. */
static void deliver(agent_lines_t *l, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len <= l->max_line_bytes)
        l->on_line(l->user, line, len);
    else if (l->on_too_long)
        l->on_too_long(l->user, len);
}

/* Makes room for n more bytes in the partial line (the caller checked the
 * limit, so the buffer never grows past max_line_bytes + 1). */
static int reserve(agent_lines_t *l, size_t n)
{
    size_t cap = l->_cap ? l->_cap : AGENT_LINES_MIN_CAP;
    size_t want = l->_len + n;
    char *buf;

    if (want <= l->_cap)
        return 0;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (cap > l->max_line_bytes + 1)
        cap = l->max_line_bytes + 1;
    buf = realloc(l->_buf, cap);
    if (!buf)
        return AW_ENOMEM;
    l->_buf = buf;
    l->_cap = cap;
    return 0;
}

/* Adds a piece of the current line to the buffer. Past max + 1 bytes the
 * line is too long even if a "\r" ends it; returns false then (the line is
 * reported and forgotten). *err is set on allocation failure. */
static bool keep(agent_lines_t *l, const char *data, size_t n, int *err)
{
    if (n > l->max_line_bytes + 1 - l->_len) {
        if (l->on_too_long)
            l->on_too_long(l->user, l->_len + n);
        l->_len = 0;
        return false;
    }
    if (reserve(l, n) != 0) {
        *err = AW_ENOMEM;
        l->_len = 0;
        return false;
    }
    if (n > 0)
        memcpy(l->_buf + l->_len, data, n);
    l->_len += n;
    return true;
}

/* Handles data[0..n), the bytes of one line up to (not including) its "\n"
 * when eol is true, or the start of a line that goes on when it is false. */
static int piece(agent_lines_t *l, const char *data, size_t n, bool eol)
{
    int err = 0;

    if (l->_skipping) {
        l->_skipping = !eol;
        return 0;
    }
    if (eol && l->_len == 0) {
        deliver(l, data, n); /* the common case: a whole line, no copy */
        return 0;
    }
    if (!keep(l, data, n, &err)) {
        l->_skipping = !eol;
        return err;
    }
    if (eol) {
        size_t len = l->_len;

        l->_len = 0;
        deliver(l, l->_buf, len);
    }
    return 0;
}

int agent_lines_feed(agent_lines_t *l, const char *data, size_t len)
{
    int err = 0;

    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        int rc = piece(l, data, n, nl != NULL);

        if (rc != 0)
            err = rc;
        if (!nl)
            break;
        data += n + 1;
        len -= n + 1;
    }
    return err;
}

void agent_lines_finish(agent_lines_t *l)
{
    size_t len = l->_len;

    l->_len = 0;
    if (!l->_skipping && len > 0)
        deliver(l, l->_buf, len);
    l->_skipping = false;
}
