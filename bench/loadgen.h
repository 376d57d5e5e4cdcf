/* loadgen.h -- shared declarations of aw-loadgen: options, clocks, latency
 * histograms, the messages between the parent and its client processes,
 * and the small WebSocket and token helpers used by both sides. */
#ifndef AW_LOADGEN_H
#define AW_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum target { TGT_AGENTWIRE, TGT_WS, TGT_SOCKETIO, TGT_NCHAN };
enum mode { MODE_FANOUT, MODE_IDLE, MODE_STORM, MODE_RESUME, MODE_ECHO };

#define MAX_PORTS 16

struct opts {
    enum target target;
    enum mode mode;
    const char *host;
    uint32_t host_addr; /* network order */
    uint16_t ports[MAX_PORTS];
    int nports;
    uint64_t users, conns_per_user, conns;
    int procs, source_addrs;
    const char *jwt_secret, *api_key;
    const char *token_file; /* --token-file: user i's token is line i + 1 */
    uint64_t events;
    double rate;
    int batch, publishers, pipeline, payload_bytes, concurrency;
    bool keyed; /* --keyed: every event carries an idempotency_key of its own */
    int echo_bytes, echo_window;
    int64_t hold_ms, duration_ms, timeout_ms, connect_timeout_ms;
};

extern struct opts opt;
extern const char *const target_names[];
extern const char *const mode_names[];

/* Microseconds of CLOCK_MONOTONIC. */
int64_t now_us(void);
/* User plus system CPU time of who (RUSAGE_SELF or RUSAGE_CHILDREN), µs. */
int64_t cpu_us(int who);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Log-linear latency histogram in microseconds: exact below 1024 µs, then
 * 128 buckets per power of two (under 0.8 % apart) up to 2^27 µs (134 s). */
#define HIST_LINEAR  1024
#define HIST_SUBBITS 7
#define HIST_OCTAVES 17
#define HIST_N       (HIST_LINEAR + HIST_OCTAVES * (1 << HIST_SUBBITS))

struct hist {
    uint64_t n, max, sum;
    uint64_t c[HIST_N];
};

void hist_add(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
/* The value at quantile q (0..1): a bucket's middle value. */
uint64_t hist_quantile(const struct hist *h, double q);

/* Events are numbered j = 0, 1, 2, ... in publish order; event j is for user
 * j % users with per-user index j / users + 1. Number of events of user u
 * among the first e. */
static inline uint64_t events_for_user(uint64_t u, uint64_t e)
{
    return e / opt.users + (u < e % opt.users ? 1 : 0);
}

/* Writes the decimal digits of v at o; returns the number written. */
size_t put_u64(char *o, uint64_t v);
/* The token of user u<u>: line u + 1 of --token-file when one was loaded,
 * else an HS256 JWT (opt.jwt_secret) expiring in an hour. Returns its length;
 * 0 (out empty) when it does not fit in cap. */
size_t make_jwt(char *out, size_t cap, uint64_t user);
/* Longest token line load_token_file accepts (the request path and the
 * Socket.IO connect message around it have room for it). */
#define TOKEN_FILE_MAX 400
/* Reads the tokens of users 0..users-1 from path, one per line (base64url and
 * '.' only; lines past the users-th are not read). Before fork. Returns NULL,
 * or what is wrong (a static message). */
const char *load_token_file(const char *path, uint64_t users);
size_t b64_encode(char *out, const unsigned char *in, size_t n, bool url);

/* Frame from the client: FIN set, masked with a fresh key. out needs
 * len + 14 bytes. Returns the frame's length. */
size_t ws_client_frame(unsigned char *out, int opcode, const void *payload, size_t len);
uint32_t fast_rand(void);

/* Client process <-> parent. Commands are single bytes on the command pipe;
 * reports are framed messages on the report pipe. */
enum { CMD_CLOSE = 'C', CMD_RECONNECT = 'R', CMD_ECHO = 'E', CMD_FINISH = 'F' };
enum { MSG_PROGRESS = 1, MSG_CONNECTED, MSG_CLOSED, MSG_RESUMED, MSG_FINAL };

struct cstats {
    uint64_t ready, failed, closed_by_server;
    uint64_t deliveries, order_errors, cross_user, duplicates, bad_frames, other_msgs;
    uint64_t echo_msgs, echo_bytes, echo_errors;
    uint64_t re_tried, re_ready, re_failed, resumed_false, resume_complete, replayed;
    int64_t t_first_connect, t_last_ready;
    int64_t t_first_delivery, t_last_delivery;
    int64_t t_resume_start, t_resume_done;
    int64_t cpu_us;
};

struct msg_head {
    uint32_t type, len;
};

/* Final report: head, cstats, then the delivery/echo latency histogram and
 * the resume completion histogram. */
#define MSG_FINAL_LEN (sizeof(struct cstats) + 2 * sizeof(struct hist))

int write_all(int fd, const void *buf, size_t n);

/* Runs one client process over connections [lo, hi); never returns. */
void child_main(int idx, uint64_t lo, uint64_t hi, int per_child_concurrency, int cmd_fd,
                int rep_fd);

/* Publishers, run by the parent: epoll tag for their descriptors. */
#define TAG_PUB 2u
void pubs_start(int ep, uint64_t j_begin, uint64_t j_end);
void pubs_event(uint32_t idx, uint32_t events);
void pubs_tick(void);
bool pubs_done(void);
int pubs_timeout_ms(void);
void pubs_stop(void);

struct pubstats {
    uint64_t published, errors, requests, reconnects;
    int64_t t_first, t_last_ack;
};
extern struct pubstats pubstats;

#endif
