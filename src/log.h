/* log.h -- structured logs on stderr, one line per record, as JSON or text.
 *
 * A record is a message and key/value pairs: log_kv(LOG_INFO, "connect",
 * "user", id, "#conns", (long long)n, NULL). A key that starts with '#' takes
 * a long long value (the '#' is not printed); other keys take a string (NULL
 * prints as null). Never pass a token or secret as a value. */
#ifndef AW_LOG_H
#define AW_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Or'ed into the level of a kind of line that peers can make the server
 * repeat (refusals, protocol errors, agent output): at most the rate limit
 * of such lines per second and message, the first line after a suppressed
 * stretch carries "suppressed" (how many were dropped). */
#define LOG_LIMITED 0x100
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* per_second: lines of one LOG_LIMITED kind per second, 0 for no limit. */
void log_setup(enum log_format format, enum log_level level, long long per_second);

/* level: a log_level, optionally | LOG_LIMITED. msg must be a string
 * literal: limited kinds are told apart by its address. */
void log_kv(int level, const char *msg, ...);

/* Parse names ("debug", "info", "warn", "error"; "json", "text"). 0 or AW_EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

#endif
