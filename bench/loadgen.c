/* aw-loadgen -- load generator of the agentwire benchmark. The parent forks
 * client processes that hold the WebSocket subscribers, runs the publishers
 * itself, decides when the run is over and prints one JSON result line. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loadgen.h"

#define TAG_KID      1u
#define KID_BUF      (256u * 1024)
#define STALL_US     5000000
#define FINISH_GRACE 15000000

struct opts opt;
const char *const target_names[] = {"agentwire", "ws", "socketio", "nchan"};
const char *const mode_names[] = {"fanout", "idle", "storm", "resume", "echo"};

struct kid {
    pid_t pid;
    int cmd, rep;
    char *buf;
    size_t len;
    struct cstats st;
    bool connected, closed, resumed, final_, dead;
    struct hist *lat, *rlat;
};

static struct kid *kids;
static int nkids, ep;
static int64_t t_start, deadline, last_progress;
static bool timed_out;

static void usage(FILE *f)
{
    fputs(
        "Usage: aw-loadgen --target agentwire|ws|socketio|nchan --port P --mode MODE [OPTION]...\n"
        "Load generator of the agentwire benchmark: WebSocket subscribers in --procs client\n"
        "processes (one epoll loop each), HTTP publishers in the parent. Progress goes to\n"
        "stderr; one JSON result object is the last line on stdout.\n"
        "\n"
        "Modes:\n"
        "  fanout   connect all, publish --events, wait for every delivery (or --timeout-ms)\n"
        "  idle     connect all, print {\"phase\":\"ready\",...}, hold --hold-ms, finish\n"
        "  storm    open all connections with --concurrency handshakes in flight\n"
        "           (kept open until the end); reports handshakes_per_s\n"
        "  resume   (agentwire) connect, publish --events, close all, publish --events\n"
        "           again, reconnect with since/epoch; reports reconnects_per_s\n"
        "  echo     (agentwire, ws) --echo-window messages of --echo-bytes in flight per\n"
        "           connection for --duration-ms\n"
        "\n"
        "Options:\n"
        "  --target T            agentwire, ws, socketio or nchan\n"
        "  --host A              IPv4 address of the server [127.0.0.1]\n"
        "  --port P[,P2...]      server port; several ports (idle, storm, echo only):\n"
        "                        connections go round-robin to them\n"
        "  --mode M              fanout, idle, storm, resume or echo\n"
        "  --users U             users u0..u(U-1) [100]\n"
        "  --conns-per-user C    connections per user; connections = U*C [1]\n"
        "  --procs N             client processes [enough for <= 15000 connections each]\n"
        "  --source-addrs K      bind connections round-robin to 127.0.0.1..127.0.0.K [1];\n"
        "                        towards 127.x.x.x the source ports (10000-65535, shared\n"
        "                        out between the processes) are chosen by aw-loadgen\n"
        "  --jwt-secret S        HS256 secret for the user tokens (agentwire, ws, socketio)\n"
        "  --token-file FILE     user tokens, one per line, instead of minting HS256 ones:\n"
        "                        user u<i> sends line i+1, so the file needs --users lines\n"
        "                        (any algorithm, e.g. ES256; sub u<i> as the minted ones)\n"
        "  --api-key K           publisher key, sent as Authorization: Bearer K\n"
        "  --events E            fanout/resume: events in total, round-robin over users [10000]\n"
        "  --rate R              fanout/resume: events/s to publish, 0 = as fast as answered [0]\n"
        "  --batch B             events per publish request, 1 = single-event endpoint [1]\n"
        "  --publishers P        publisher connections; user u is published by u % P [1]\n"
        "  --pipeline D          requests in flight per publisher connection [1]\n"
        "  --payload-bytes N     pad each event's JSON to about N bytes [0]\n"
        "  --keyed               (agentwire) each event carries an idempotency_key of its own\n"
        "  --concurrency N       handshakes in flight at once, over all processes, in every\n"
        "                        connect phase (storm, resume reconnect, and the others) [500]\n"
        "  --connect-timeout-ms MS  a connection not ready after MS fails [15000]\n"
        "  --hold-ms MS          idle: how long to hold the connections [10000]\n"
        "  --echo-bytes N        echo: message size [64]\n"
        "  --echo-window W       echo: messages in flight per connection [1]\n"
        "  --duration-ms MS      echo: measuring time [5000]\n"
        "  --timeout-ms MS       bound of the whole run [120000 + hold-ms + duration-ms]\n"
        "  --help                print this help and exit\n"
        "\n"
        "latency_us: deliveries (now - bt, bt = CLOCK_MONOTONIC when the publish request\n"
        "was written; resume: the first, live phase), echo round trips, idle and storm:\n"
        "socket() to ready. resume_latency_us: reconnect to the last missed event.\n"
        "elapsed_s: fanout first publish to last delivery; resume the reconnect phase;\n"
        "echo the measuring time. loadgen_cpu_s: user+system CPU of all its processes.\n"
        "Exit status: 0 run completed (missing deliveries are in the JSON), 1 fatal error,\n"
        "2 usage error.\n",
        f);
}

static void bad_usage(const char *fmt, const char *arg)
{
    fputs("aw-loadgen: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'aw-loadgen --help'.\n", stderr);
    exit(2);
}

static uint64_t num(const char *name, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        bad_usage("bad number for %s", name);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "%%s must be a number from %llu to %llu", (unsigned long long)min,
                 (unsigned long long)max);
        bad_usage(msg, name);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum {
        O_TARGET = 256,
        O_PORT,
        O_HOST,
        O_MODE,
        O_USERS,
        O_CPU,
        O_PROCS,
        O_SRC,
        O_SECRET,
        O_TOKENS,
        O_KEY,
        O_EVENTS,
        O_RATE,
        O_BATCH,
        O_PUBS,
        O_PIPE,
        O_PAYLOAD,
        O_CONC,
        O_HOLD,
        O_EBYTES,
        O_EWIN,
        O_DUR,
        O_TIMEOUT,
        O_CTIMEOUT,
        O_KEYED,
        O_HELP,
    };
    static const struct option lo[] = {
        {"target", required_argument, 0, O_TARGET},
        {"port", required_argument, 0, O_PORT},
        {"host", required_argument, 0, O_HOST},
        {"mode", required_argument, 0, O_MODE},
        {"users", required_argument, 0, O_USERS},
        {"conns-per-user", required_argument, 0, O_CPU},
        {"procs", required_argument, 0, O_PROCS},
        {"source-addrs", required_argument, 0, O_SRC},
        {"jwt-secret", required_argument, 0, O_SECRET},
        {"token-file", required_argument, 0, O_TOKENS},
        {"api-key", required_argument, 0, O_KEY},
        {"events", required_argument, 0, O_EVENTS},
        {"rate", required_argument, 0, O_RATE},
        {"batch", required_argument, 0, O_BATCH},
        {"publishers", required_argument, 0, O_PUBS},
        {"pipeline", required_argument, 0, O_PIPE},
        {"payload-bytes", required_argument, 0, O_PAYLOAD},
        {"keyed", no_argument, 0, O_KEYED},
        {"concurrency", required_argument, 0, O_CONC},
        {"hold-ms", required_argument, 0, O_HOLD},
        {"echo-bytes", required_argument, 0, O_EBYTES},
        {"echo-window", required_argument, 0, O_EWIN},
        {"duration-ms", required_argument, 0, O_DUR},
        {"timeout-ms", required_argument, 0, O_TIMEOUT},
        {"connect-timeout-ms", required_argument, 0, O_CTIMEOUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    opt.host = "127.0.0.1";
    opt.users = 100;
    opt.conns_per_user = 1;
    opt.source_addrs = 1;
    opt.events = 10000;
    opt.batch = 1;
    opt.publishers = 1;
    opt.pipeline = 1;
    opt.concurrency = 500;
    opt.hold_ms = 10000;
    opt.echo_bytes = 64;
    opt.echo_window = 1;
    opt.duration_ms = 5000;
    opt.connect_timeout_ms = 15000;
    int have_target = 0, have_mode = 0, have_timeout = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case O_TARGET: {
            int k = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, target_names[i]) == 0)
                    k = i;
            if (k < 0)
                bad_usage("unknown target '%s'", optarg);
            opt.target = (enum target)k;
            have_target = 1;
            break;
        }
        case O_MODE: {
            int k = -1;
            for (int i = 0; i < 5; i++)
                if (strcmp(optarg, mode_names[i]) == 0)
                    k = i;
            if (k < 0)
                bad_usage("unknown mode '%s'", optarg);
            opt.mode = (enum mode)k;
            have_mode = 1;
            break;
        }
        case O_PORT: {
            char *s = strdup(optarg), *save = NULL;
            opt.nports = 0;
            for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (opt.nports == MAX_PORTS)
                    bad_usage("%s: too many ports", optarg);
                opt.ports[opt.nports++] = (uint16_t)num("--port", t, 1, 65535);
            }
            free(s);
            if (!opt.nports)
                bad_usage("bad --port '%s'", optarg);
            break;
        }
        case O_HOST: {
            struct in_addr a;
            if (inet_pton(AF_INET, optarg, &a) != 1)
                bad_usage("--host must be an IPv4 address, not '%s'", optarg);
            opt.host = optarg;
            break;
        }
        case O_USERS:
            opt.users = num("--users", optarg, 1, 100000000);
            break;
        case O_CPU:
            opt.conns_per_user = num("--conns-per-user", optarg, 1, 10000000);
            break;
        case O_PROCS:
            opt.procs = (int)num("--procs", optarg, 1, 256);
            break;
        case O_SRC:
            opt.source_addrs = (int)num("--source-addrs", optarg, 1, 254);
            break;
        case O_SECRET:
            opt.jwt_secret = optarg;
            break;
        case O_TOKENS:
            opt.token_file = optarg;
            break;
        case O_KEY:
            opt.api_key = optarg;
            break;
        case O_EVENTS:
            opt.events = num("--events", optarg, 0, 2000000000);
            break;
        case O_RATE: {
            char *end;
            errno = 0;
            double r = strtod(optarg, &end);
            if (errno || *end || !*optarg || !(r >= 0) || isinf(r))
                bad_usage("bad --rate '%s'", optarg);
            opt.rate = r;
            break;
        }
        case O_BATCH:
            opt.batch = (int)num("--batch", optarg, 1, 100000);
            break;
        case O_PUBS:
            opt.publishers = (int)num("--publishers", optarg, 1, 1024);
            break;
        case O_PIPE:
            opt.pipeline = (int)num("--pipeline", optarg, 1, 100000);
            break;
        case O_PAYLOAD:
            opt.payload_bytes = (int)num("--payload-bytes", optarg, 0, 16 << 20);
            break;
        case O_KEYED:
            opt.keyed = true;
            break;
        case O_CONC:
            opt.concurrency = (int)num("--concurrency", optarg, 1, 10000000);
            break;
        case O_HOLD:
            opt.hold_ms = (int64_t)num("--hold-ms", optarg, 0, 86400000);
            break;
        case O_EBYTES:
            opt.echo_bytes = (int)num("--echo-bytes", optarg, 1, 16 << 20);
            break;
        case O_EWIN:
            opt.echo_window = (int)num("--echo-window", optarg, 1, 100000);
            break;
        case O_DUR:
            opt.duration_ms = (int64_t)num("--duration-ms", optarg, 1, 86400000);
            break;
        case O_TIMEOUT:
            opt.timeout_ms = (int64_t)num("--timeout-ms", optarg, 1, 864000000);
            have_timeout = 1;
            break;
        case O_CTIMEOUT:
            opt.connect_timeout_ms = (int64_t)num("--connect-timeout-ms", optarg, 1, 86400000);
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            if (optopt)
                fprintf(stderr, "aw-loadgen: option needs a value or is unknown: %s\n",
                        argv[optind - 1]);
            else
                fprintf(stderr, "aw-loadgen: unknown option %s\n", argv[optind - 1]);
            fputs("Try 'aw-loadgen --help'.\n", stderr);
            exit(2);
        }
    }
    if (optind < argc)
        bad_usage("unexpected argument '%s'", argv[optind]);
    if (!have_target)
        bad_usage("%s", "--target is required");
    if (!have_mode)
        bad_usage("%s", "--mode is required");
    if (!opt.nports)
        bad_usage("%s", "--port is required");
    struct in_addr a;
    inet_pton(AF_INET, opt.host, &a);
    opt.host_addr = a.s_addr;
    bool publishes = opt.mode == MODE_FANOUT || opt.mode == MODE_RESUME;
    if (opt.nports > 1 && publishes)
        bad_usage("several ports only in idle, storm and echo modes (%s publishes)",
                  mode_names[opt.mode]);
    if (opt.mode == MODE_RESUME && opt.target != TGT_AGENTWIRE)
        bad_usage("%s", "--mode resume needs --target agentwire");
    if (opt.keyed && opt.target != TGT_AGENTWIRE)
        bad_usage("%s", "--keyed is for --target agentwire");
    if (opt.mode == MODE_ECHO && opt.target != TGT_AGENTWIRE && opt.target != TGT_WS)
        bad_usage("--target %s has no echo endpoint", target_names[opt.target]);
    if (opt.target == TGT_NCHAN && opt.batch != 1)
        bad_usage("%s", "nchan has no batch publish: --batch must be 1");
    if (opt.target != TGT_NCHAN && !opt.jwt_secret && !opt.token_file)
        bad_usage("--target %s needs --jwt-secret or --token-file", target_names[opt.target]);
    if (publishes && opt.target != TGT_NCHAN && !opt.api_key)
        bad_usage("--mode %s needs --api-key", mode_names[opt.mode]);
    if (opt.users > UINT32_MAX)
        bad_usage("%s", "too many users");
    opt.conns = opt.users * opt.conns_per_user;
    if (opt.conns > 10000000)
        bad_usage("%s", "more than 10000000 connections");
    if (publishes && opt.events / opt.users >= UINT32_MAX / 2)
        bad_usage("%s", "too many events per user");
    if (opt.token_file && opt.target != TGT_NCHAN) {
        const char *why = load_token_file(opt.token_file, opt.users);
        if (why)
            bad_usage("%s", why);
    }
    if (!opt.procs)
        opt.procs = (int)((opt.conns + 14999) / 15000);
    if ((uint64_t)opt.procs > opt.conns)
        opt.procs = (int)opt.conns;
    if (!have_timeout)
        opt.timeout_ms = 120000 + (opt.mode == MODE_IDLE ? opt.hold_ms : 0) +
                         (opt.mode == MODE_ECHO ? opt.duration_ms : 0);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        (uint64_t)rl.rlim_cur < (opt.conns + (uint64_t)opt.procs - 1) / (uint64_t)opt.procs + 16)
        logmsg("warning: %llu connections per process, descriptor limit %llu",
               (unsigned long long)((opt.conns + (uint64_t)opt.procs - 1) / (uint64_t)opt.procs),
               (unsigned long long)rl.rlim_cur);
}

static void spawn_kids(void)
{
    kids = calloc((size_t)opt.procs, sizeof *kids);
    if (!kids) {
        logmsg("out of memory");
        exit(1);
    }
    nkids = opt.procs;
    uint64_t per = opt.conns / (uint64_t)nkids, extra = opt.conns % (uint64_t)nkids;
    uint64_t lo = 0;
    int conc_per = opt.concurrency / nkids, conc_extra = opt.concurrency % nkids;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < nkids; i++) {
        uint64_t hi = lo + per + ((uint64_t)i < extra ? 1 : 0);
        int cmdp[2], repp[2];
        if (pipe2(cmdp, O_CLOEXEC) != 0 || pipe2(repp, O_CLOEXEC) != 0) {
            logmsg("pipe: %s", strerror(errno));
            exit(1);
        }
        pid_t pid = fork();
        if (pid < 0) {
            logmsg("fork: %s", strerror(errno));
            exit(1);
        }
        if (pid == 0) {
            close(cmdp[1]);
            close(repp[0]);
            for (int k = 0; k < i; k++) {
                close(kids[k].cmd);
                close(kids[k].rep);
            }
            close(ep);
            int c = conc_per + (i < conc_extra ? 1 : 0);
            child_main(i, lo, hi, c < 1 ? 1 : c, cmdp[0], repp[1]);
            _exit(1);
        }
        close(cmdp[0]);
        close(repp[1]);
        kids[i].pid = pid;
        kids[i].cmd = cmdp[1];
        kids[i].rep = repp[0];
        kids[i].buf = malloc(KID_BUF);
        kids[i].lat = calloc(1, sizeof(struct hist));
        kids[i].rlat = calloc(1, sizeof(struct hist));
        if (!kids[i].buf || !kids[i].lat || !kids[i].rlat) {
            logmsg("out of memory");
            exit(1);
        }
        fcntl(repp[0], F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)TAG_KID << 32 | i};
        epoll_ctl(ep, EPOLL_CTL_ADD, repp[0], &ev);
        lo = hi;
    }
}

static void kid_message(struct kid *k, uint32_t type, const char *p, uint32_t len)
{
    if (len < sizeof(struct cstats))
        return;
    memcpy(&k->st, p, sizeof k->st);
    switch (type) {
    case MSG_CONNECTED:
        k->connected = true;
        break;
    case MSG_CLOSED:
        k->closed = true;
        break;
    case MSG_RESUMED:
        k->resumed = true;
        break;
    case MSG_FINAL:
        if (len >= MSG_FINAL_LEN) {
            memcpy(k->lat, p + sizeof(struct cstats), sizeof(struct hist));
            memcpy(k->rlat, p + sizeof(struct cstats) + sizeof(struct hist), sizeof(struct hist));
        }
        k->final_ = true;
        break;
    default:
        break;
    }
}

static void kid_read(struct kid *k)
{
    for (;;) {
        ssize_t r = read(k->rep, k->buf + k->len, KID_BUF - k->len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (r == 0) {
            if (!k->final_ && !k->dead)
                logmsg("client process %d ended without its final report", (int)(k - kids));
            k->dead = true;
            epoll_ctl(ep, EPOLL_CTL_DEL, k->rep, NULL);
            return;
        }
        k->len += (size_t)r;
        size_t off = 0;
        while (k->len - off >= sizeof(struct msg_head)) {
            struct msg_head h;
            memcpy(&h, k->buf + off, sizeof h);
            if (h.len > KID_BUF - sizeof h) {
                logmsg("bad report from client process %d", (int)(k - kids));
                k->dead = true;
                return;
            }
            if (k->len - off < sizeof h + h.len)
                break;
            kid_message(k, h.type, k->buf + off + sizeof h, h.len);
            off += sizeof h + h.len;
        }
        memmove(k->buf, k->buf + off, k->len - off);
        k->len -= off;
    }
}

static void sum_stats(struct cstats *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < nkids; i++) {
        const struct cstats *k = &kids[i].st;
        s->ready += k->ready;
        s->failed += k->failed;
        s->closed_by_server += k->closed_by_server;
        s->deliveries += k->deliveries;
        s->order_errors += k->order_errors;
        s->cross_user += k->cross_user;
        s->duplicates += k->duplicates;
        s->bad_frames += k->bad_frames;
        s->other_msgs += k->other_msgs;
        s->echo_msgs += k->echo_msgs;
        s->echo_bytes += k->echo_bytes;
        s->echo_errors += k->echo_errors;
        s->re_tried += k->re_tried;
        s->re_ready += k->re_ready;
        s->re_failed += k->re_failed;
        s->resumed_false += k->resumed_false;
        s->resume_complete += k->resume_complete;
        s->replayed += k->replayed;
        s->cpu_us += k->cpu_us;
#define MINT(f)                                                                                    \
    if (k->f && (!s->f || k->f < s->f))                                                            \
    s->f = k->f
#define MAXT(f)                                                                                    \
    if (k->f > s->f)                                                                               \
    s->f = k->f
        MINT(t_first_connect);
        MAXT(t_last_ready);
        MINT(t_first_delivery);
        MAXT(t_last_delivery);
        MINT(t_resume_start);
        MAXT(t_resume_done);
#undef MINT
#undef MAXT
    }
}

static uint64_t expected_deliveries(uint64_t e)
{
    return e * opt.conns_per_user;
}

static void progress(void)
{
    int64_t now = now_us();
    if (now - last_progress < 1000000)
        return;
    last_progress = now;
    struct cstats s;
    sum_stats(&s);
    char extra[256] = "";
    if (opt.mode == MODE_FANOUT || opt.mode == MODE_RESUME)
        snprintf(extra, sizeof extra, " published %llu deliveries %llu",
                 (unsigned long long)pubstats.published, (unsigned long long)s.deliveries);
    if (opt.mode == MODE_ECHO)
        snprintf(extra, sizeof extra, " echoes %llu", (unsigned long long)s.echo_msgs);
    if (opt.mode == MODE_RESUME && s.re_tried)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " reconnected %llu resumed %llu", (unsigned long long)s.re_ready,
                 (unsigned long long)s.resume_complete);
    logmsg("%.1fs connected %llu/%llu failed %llu closed %llu%s", (double)(now - t_start) / 1e6,
           (unsigned long long)s.ready, (unsigned long long)opt.conns, (unsigned long long)s.failed,
           (unsigned long long)s.closed_by_server, extra);
}

static void poll_once(int timeout_ms)
{
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t tag = (uint32_t)(evs[i].data.u64 >> 32), idx = (uint32_t)evs[i].data.u64;
        if (tag == TAG_KID)
            kid_read(&kids[idx]);
        else if (tag == TAG_PUB)
            pubs_event(idx, evs[i].events);
    }
    pubs_tick();
    progress();
}

/* Runs the loop until pred() holds or until the deadline. */
static bool wait_until(bool (*pred)(void), int64_t until)
{
    for (;;) {
        if (pred())
            return true;
        int64_t now = now_us();
        if (now >= until)
            return false;
        int64_t ms = (until - now + 999) / 1000;
        int t = pubs_timeout_ms();
        poll_once(ms < t ? (int)ms : t);
    }
}

static bool never(void)
{
    return false;
}

static bool all_connected(void)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].connected && !kids[i].dead)
            return false;
    return true;
}

static bool all_closed(void)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].closed && !kids[i].dead)
            return false;
    return true;
}

static bool all_resumed(void)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].resumed && !kids[i].dead)
            return false;
    return true;
}

static bool all_final(void)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].final_ && !kids[i].dead)
            return false;
    return true;
}

static bool all_dead(void)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].dead)
            return false;
    return true;
}

static uint64_t want_deliveries;
static uint64_t stall_count;
static int64_t stall_since;

/* All expected deliveries arrived, or publishing is over and nothing has
 * arrived for a while (publish errors, dropped connections). */
static bool deliveries_done(void)
{
    struct cstats s;
    sum_stats(&s);
    if (all_dead())
        return true;
    if (!pubs_done())
        return false; /* every answer counted, even after the last delivery */
    if (s.deliveries >= want_deliveries)
        return true;
    int64_t now = now_us();
    if (s.deliveries != stall_count || !stall_since) {
        stall_count = s.deliveries;
        stall_since = now;
        return false;
    }
    return now - stall_since >= STALL_US;
}

static void wait_deliveries(uint64_t want)
{
    want_deliveries = want;
    stall_count = 0;
    stall_since = 0;
    if (!wait_until(deliveries_done, deadline))
        timed_out = true;
}

static bool publish_done(void)
{
    return pubs_done();
}

static void command(char c)
{
    for (int i = 0; i < nkids; i++)
        if (!kids[i].dead && write_all(kids[i].cmd, &c, 1) != 0)
            kids[i].dead = true;
}

static void print_hist(const char *name, const struct hist *h)
{
    printf(",\"%s\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu,"
           "\"mean\":%.0f,\"n\":%llu}",
           name, (unsigned long long)hist_quantile(h, 0.5),
           (unsigned long long)hist_quantile(h, 0.9), (unsigned long long)hist_quantile(h, 0.99),
           (unsigned long long)hist_quantile(h, 0.999), (unsigned long long)h->max,
           h->n ? (double)h->sum / (double)h->n : 0.0, (unsigned long long)h->n);
}

static double secs(int64_t us)
{
    return (double)us / 1e6;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        logmsg("epoll_create1: %s", strerror(errno));
        return 1;
    }
    t_start = now_us();
    deadline = t_start + opt.timeout_ms * 1000;
    last_progress = t_start;
    spawn_kids();

    /* connect phase */
    if (!wait_until(all_connected, deadline))
        timed_out = true;
    int64_t t_connected = now_us();
    struct cstats cs;
    sum_stats(&cs);
    int64_t connect_cpu = cpu_us(RUSAGE_SELF) + cs.cpu_us;
    logmsg("%.1fs connect phase over: %llu ready, %llu failed", secs(t_connected - t_start),
           (unsigned long long)cs.ready, (unsigned long long)cs.failed);

    /* what a complete run delivers, also reported when a phase times out */
    uint64_t expected = opt.mode == MODE_FANOUT   ? expected_deliveries(opt.events)
                        : opt.mode == MODE_RESUME ? expected_deliveries(2 * opt.events)
                                                  : 0;
    int64_t t_pub = 0, t_echo0 = 0, t_echo1 = 0;
    if (!timed_out) {
        switch (opt.mode) {
        case MODE_IDLE:
            printf("{\"phase\":\"ready\",\"connected\":%llu}\n", (unsigned long long)cs.ready);
            fflush(stdout);
            {
                int64_t until = now_us() + opt.hold_ms * 1000;
                if (until > deadline) {
                    until = deadline;
                    timed_out = true;
                }
                wait_until(never, until);
            }
            break;
        case MODE_STORM:
            break;
        case MODE_FANOUT:
            t_pub = now_us();
            pubs_start(ep, 0, opt.events);
            wait_deliveries(expected);
            break;
        case MODE_RESUME:
            t_pub = now_us();
            pubs_start(ep, 0, opt.events);
            wait_deliveries(expected_deliveries(opt.events));
            if (timed_out)
                break;
            command(CMD_CLOSE);
            if (!wait_until(all_closed, deadline)) {
                timed_out = true;
                break;
            }
            logmsg("%.1fs all closed; publishing %llu more", secs(now_us() - t_start),
                   (unsigned long long)opt.events);
            pubs_start(ep, opt.events, 2 * opt.events);
            if (!wait_until(publish_done, deadline)) {
                timed_out = true;
                break;
            }
            logmsg("%.1fs reconnecting", secs(now_us() - t_start));
            command(CMD_RECONNECT);
            if (!wait_until(all_resumed, deadline))
                timed_out = true;
            break;
        case MODE_ECHO:
            t_echo0 = now_us();
            command(CMD_ECHO);
            {
                int64_t until = t_echo0 + opt.duration_ms * 1000;
                if (until > deadline) {
                    until = deadline;
                    timed_out = true;
                }
                wait_until(never, until);
            }
            t_echo1 = now_us();
            break;
        }
    }
    if (timed_out)
        logmsg("timeout (--timeout-ms %lld) reached", (long long)opt.timeout_ms);
    pubs_stop();

    /* finish */
    command(CMD_FINISH);
    if (!wait_until(all_final, now_us() + FINISH_GRACE))
        logmsg("some client processes did not report");
    for (int i = 0; i < nkids; i++) {
        if (!kids[i].final_)
            kill(kids[i].pid, SIGKILL);
        waitpid(kids[i].pid, NULL, 0);
    }
    int64_t cpu_total = cpu_us(RUSAGE_SELF) + cpu_us(RUSAGE_CHILDREN);

    struct cstats s;
    sum_stats(&s);
    struct hist *lat = calloc(1, sizeof *lat), *rlat = calloc(1, sizeof *rlat);
    if (!lat || !rlat)
        return 1;
    for (int i = 0; i < nkids; i++) {
        hist_merge(lat, kids[i].lat);
        hist_merge(rlat, kids[i].rlat);
    }

    double connect_s = secs((s.t_last_ready ? s.t_last_ready : t_connected) -
                            (s.t_first_connect ? s.t_first_connect : t_start));
    double hs = connect_s > 0 ? (double)s.ready / connect_s : 0;
    uint64_t missing = expected > s.deliveries ? expected - s.deliveries : 0;
    double elapsed = 0, rate = 0;
    if (opt.mode == MODE_FANOUT || opt.mode == MODE_RESUME) {
        int64_t first = pubstats.t_first ? pubstats.t_first : t_pub;
        if (opt.mode == MODE_FANOUT) {
            int64_t last = s.t_last_delivery > first ? s.t_last_delivery : first;
            elapsed = secs(last - first);
            rate = elapsed > 0 ? (double)s.deliveries / elapsed : 0;
        }
        if (opt.mode == MODE_RESUME && s.t_resume_done > s.t_resume_start) {
            elapsed = secs(s.t_resume_done - s.t_resume_start);
            rate = (double)s.replayed / elapsed;
        }
    } else if (opt.mode == MODE_ECHO) {
        elapsed = secs(t_echo1 - t_echo0);
    } else {
        elapsed = secs(now_us() - t_start);
    }

    printf("{\"target\":\"%s\",\"mode\":\"%s\",\"connections\":%llu,\"connected\":%llu,"
           "\"connect_failed\":%llu,\"closed_by_server\":%llu,\"procs\":%d",
           target_names[opt.target], mode_names[opt.mode], (unsigned long long)opt.conns,
           (unsigned long long)s.ready, (unsigned long long)(opt.conns - s.ready),
           (unsigned long long)s.closed_by_server, nkids);
    printf(",\"events_published\":%llu,\"publish_errors\":%llu,\"publish_requests\":%llu,"
           "\"publish_reconnects\":%llu",
           (unsigned long long)pubstats.published, (unsigned long long)pubstats.errors,
           (unsigned long long)pubstats.requests, (unsigned long long)pubstats.reconnects);
    printf(",\"deliveries_expected\":%llu,\"deliveries\":%llu,\"missing\":%llu,"
           "\"order_errors\":%llu,\"cross_user\":%llu,\"duplicates\":%llu,\"bad_frames\":%llu",
           (unsigned long long)expected, (unsigned long long)s.deliveries,
           (unsigned long long)missing, (unsigned long long)s.order_errors,
           (unsigned long long)s.cross_user, (unsigned long long)s.duplicates,
           (unsigned long long)s.bad_frames);
    printf(",\"elapsed_s\":%.3f,\"deliveries_per_s\":%.0f", elapsed, rate);
    if (opt.mode == MODE_FANOUT && pubstats.t_first && pubstats.t_last_ack > pubstats.t_first) {
        double ps = secs(pubstats.t_last_ack - pubstats.t_first);
        printf(",\"publish_s\":%.3f,\"publish_events_per_s\":%.0f", ps,
               (double)(pubstats.published + pubstats.errors) / ps);
    }
    print_hist("latency_us", lat);
    printf(",\"loadgen_cpu_s\":%.3f,\"connect_cpu_s\":%.3f,\"connect_s\":%.3f,"
           "\"handshakes_per_s\":%.0f",
           secs(cpu_total), secs(connect_cpu), connect_s, hs);
    if (opt.mode == MODE_RESUME) {
        double rs = secs(s.t_resume_done - s.t_resume_start);
        if (rs < 0)
            rs = 0;
        printf(",\"reconnects\":%llu,\"reconnect_failed\":%llu,\"resumed_false\":%llu,"
               "\"resume_complete\":%llu,\"replayed\":%llu,\"resume_s\":%.3f,"
               "\"reconnects_per_s\":%.0f,\"replayed_per_s\":%.0f",
               (unsigned long long)s.re_ready, (unsigned long long)s.re_failed,
               (unsigned long long)s.resumed_false, (unsigned long long)s.resume_complete,
               (unsigned long long)s.replayed, rs, rs > 0 ? (double)s.re_ready / rs : 0,
               rs > 0 ? (double)s.replayed / rs : 0);
        print_hist("resume_latency_us", rlat);
    }
    if (opt.mode == MODE_ECHO)
        printf(",\"echo_msgs\":%llu,\"echo_errors\":%llu,\"echo_msgs_per_s\":%.0f,"
               "\"echo_mb_per_s\":%.2f",
               (unsigned long long)s.echo_msgs, (unsigned long long)s.echo_errors,
               elapsed > 0 ? (double)s.echo_msgs / elapsed : 0,
               elapsed > 0 ? (double)s.echo_bytes / elapsed / 1e6 : 0);
    printf(",\"timed_out\":%s}\n", timed_out ? "true" : "false");
    fflush(stdout);
    for (int i = 0; i < nkids; i++) {
        free(kids[i].buf);
        free(kids[i].lat);
        free(kids[i].rlat);
        close(kids[i].cmd);
        close(kids[i].rep);
    }
    free(kids);
    free(lat);
    free(rlat);
    close(ep);
    return 0;
}
