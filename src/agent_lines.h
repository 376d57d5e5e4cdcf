/* agent_lines.h -- splits an agent's byte stream (a pipe, a response body)
 * into lines, for the exec and http backends.
 *
 * Pure: bytes in, complete lines out through callbacks; no I/O, no globals.
 * A line ends at "\n"; a "\r" just before it is removed too, and the last
 * line of a stream needs no "\n" (agent_lines_finish delivers it). A line
 * longer than max_line_bytes (not counting its "\r\n") is never delivered:
 * on_too_long is called once for it and its bytes are skipped up to its
 * "\n". Memory is bounded by max_line_bytes + 1 (a partial line waiting for
 * more bytes); a line that arrives whole is delivered without a copy. */
#ifndef AW_AGENT_LINES_H
#define AW_AGENT_LINES_H

#include <stdbool.h>
#include <stddef.h>

#define AGENT_LINES_DEFAULT_MAX 1048576 /* max_line_bytes when 0 is given */

/* A complete line, without its terminator; may be empty (len 0). line is
 * valid only during the call and is not NUL-terminated. */
typedef void (*agent_lines_line_cb)(void *user, const char *line, size_t len);

/* A line longer than max_line_bytes was dropped. seen is how many of its
 * bytes had been seen when that was known (> max_line_bytes). */
typedef void (*agent_lines_too_long_cb)(void *user, size_t seen);

typedef struct agent_lines {
    /* read-only, set by agent_lines_init */
    size_t max_line_bytes; /* [1, SIZE_MAX - 2] */
    agent_lines_line_cb on_line;
    agent_lines_too_long_cb on_too_long; /* may be NULL */
    void *user;                          /* first argument of both callbacks */
    /* private */
    char *_buf;     /* the partial line: bytes after the last "\n" */
    size_t _len;    /* bytes in _buf, [0, max_line_bytes + 1] */
    size_t _cap;    /* bytes allocated to _buf */
    bool _skipping; /* inside a too-long line: drop bytes up to "\n" */
} agent_lines_t;

/* Sets up a splitter; allocates nothing until a partial line must be kept.
 * max_line_bytes 0 means AGENT_LINES_DEFAULT_MAX. */
void agent_lines_init(agent_lines_t *l, size_t max_line_bytes, agent_lines_line_cb on_line,
                      agent_lines_too_long_cb on_too_long, void *user);

/* Feeds data[0..len), calling on_line for every line it completes, in order.
 * The callbacks must not feed, finish or dispose this splitter.
 * 0, or AW_ENOMEM: the partial line could not be kept and is dropped as if
 * too long (on_too_long is not called); the splitter remains usable. */
int agent_lines_feed(agent_lines_t *l, const char *data, size_t len);

/* End of stream: delivers the last line if it had no "\n" (an empty tail
 * is not a line). The splitter may then be fed a new stream. */
void agent_lines_finish(agent_lines_t *l);

/* Frees the partial line buffer; no callback is called. */
void agent_lines_dispose(agent_lines_t *l);

#endif
