/* main.c -- agentwire's entry point: configuration, development mode, the
 * verifier, then the server loop. The only file that exits the process. */
#include <linux/capability.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aw.h"
#include "config.h"
#include "jalloc.h"
#include "jwks.h"
#include "log.h"
#include "server.h"

#define AGENTWIRE_VERSION "0.1.0"

static char *random_hex(size_t bytes)
{
    uint8_t raw[64];
    char *out = malloc(2 * bytes + 1);
    if (!out || bytes > sizeof raw || aw_random_bytes(raw, bytes) != AW_OK) {
        free(out);
        return NULL;
    }
    aw_hex(out, raw, bytes);
    return out;
}

/* Development mode: make up a secret and an API key and say so loudly. */
static int enter_dev_mode(config_t *cfg)
{
    cfg->jwt_secret = random_hex(32);
    cfg->api_key = random_hex(24);
    if (!cfg->jwt_secret || !cfg->api_key)
        return AW_ENOMEM;
    char claims[128], token[1024];
    snprintf(claims, sizeof claims, "{\"sub\":\"demo\",\"exp\":%lld}",
             (long long)(aw_now_ms() / 1000 + 24 * 3600));
    if (jwt_sign_hs256(token, sizeof token, cfg->jwt_secret, strlen(cfg->jwt_secret), claims) !=
        AW_OK)
        return AW_EINVAL;
    printf("\n"
           "  *** DEVELOPMENT MODE: random secrets, not for production ***\n"
           "  No --jwt-secret/--jwt-public-key and no --api-key were given, so these were\n"
           "  made up for this run only. Configure both to leave development mode.\n\n"
           "  JWT secret (HS256): %s\n"
           "  API key:            %s\n"
           "  Token for 'demo':   %s\n\n",
           cfg->jwt_secret, cfg->api_key, token);
    fflush(stdout);
    return AW_OK;
}

static int load_verifier(server_t *srv, uv_loop_t *loop, const config_t *cfg, char *err,
                         size_t errlen)
{
    jwt_verifier_t *v = &srv->jwt;
    int rc;
    if (cfg->jwks_url || cfg->jwks_file) {
        jwt_keyset_t *none = jwt_keyset_new();
        if (!none || jwt_verifier_init_keys(v, none) != AW_OK) {
            jwt_keyset_free(none);
            snprintf(err, errlen, "out of memory");
            return AW_ENOMEM;
        }
        char why[384];
        rc = jwks_open(&srv->jwks, loop, cfg, v, why, sizeof why);
        if (rc != AW_OK) {
            snprintf(err, errlen, "%s: %s", cfg->jwks_url ? "--jwks-url" : "--jwks-file", why);
            return rc;
        }
    } else if (cfg->jwt_public_key_file) {
        FILE *f = fopen(cfg->jwt_public_key_file, "rb");
        if (!f) {
            snprintf(err, errlen, "--jwt-public-key: cannot open '%s'", cfg->jwt_public_key_file);
            return AW_EINVAL;
        }
        char pem[16384];
        size_t n = fread(pem, 1, sizeof pem, f);
        fclose(f);
        char why[160] = "";
        rc = jwt_verifier_init_pem(v, cfg->jwt_alg, pem, n, why, sizeof why);
        if (rc != AW_OK) {
            snprintf(err, errlen, "--jwt-public-key: %s", why);
            return rc;
        }
    } else {
        rc = jwt_verifier_init_secret(v, cfg->jwt_secret, strlen(cfg->jwt_secret));
        if (rc != AW_OK) {
            snprintf(err, errlen, "--jwt-secret: %s", aw_strerror(rc));
            return rc;
        }
    }
    v->leeway_s = cfg->jwt_leeway_s;
    v->allow_high_s = cfg->jwt_allow_high_s;
    if (jwt_verifier_set_issuer(v, cfg->jwt_issuer) != AW_OK ||
        jwt_verifier_set_audience(v, cfg->jwt_audience) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    return AW_OK;
}

/* Overwrites s in place: the bytes /proc/<pid>/cmdline and environ show. */
static void wipe(char *s)
{
    for (; *s; s++)
        *(volatile char *)s = '*';
}

/* Secrets given on the command line or in the environment were copied by
 * config_parse; their original bytes are overwritten so that
 * /proc/<pid>/cmdline (readable by every local user) and environ no longer
 * show them, and the variables are removed (docs/operations.md: prefer the
 * *-file options). */
/* Redis URLs are secret only when they hold a password (redis://:PW@...). */
static void wipe_if(char *value, bool always)
{
    if (always || strchr(value, '@'))
        wipe(value);
}

static void scrub_secrets(int argc, char **argv)
{
    static const char *const flags[] = {"--jwt-secret", "--api-key", "--redis"};
    static const char *const vars[] = {"AGENTWIRE_JWT_SECRET", "AGENTWIRE_API_KEY",
                                       "AGENTWIRE_REDIS"};
    for (int i = 1; i < argc; i++) {
        for (size_t k = 0; k < AW_ARRAY_LEN(flags); k++) {
            size_t n = strlen(flags[k]);
            bool always = k < 2;
            if (strncmp(argv[i], flags[k], n) != 0)
                continue;
            if (argv[i][n] == '=')
                wipe_if(argv[i] + n + 1, always);
            else if (argv[i][n] == '\0' && i + 1 < argc)
                wipe_if(argv[i + 1], always);
        }
    }
    for (size_t k = 0; k < AW_ARRAY_LEN(vars); k++) {
        size_t n = strlen(vars[k]);
        bool always = k < 2;
        for (char **e = environ; *e; e++)
            if (strncmp(*e, vars[k], n) == 0 && (*e)[n] == '=' && (always || strchr(*e, '@'))) {
                wipe(*e + n + 1);
                unsetenv(vars[k]);
                break;
            }
        if (always)
            unsetenv(vars[k]);
    }
}

/* Agents are the server's children and may be compromised or
 * prompt-injected: they must not read its memory (the secrets are there).
 * Non-dumpable makes /proc/<pid>/{environ,mem,maps,fd} need CAP_SYS_PTRACE,
 * which the server gives up, for itself and for every child (bounding set).
 * Each step may fail without privilege; then there was nothing to give up. */
static void harden_process(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0);
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &h, d) == 0) {
        uint32_t bit = 1u << (CAP_SYS_PTRACE % 32);
        struct __user_cap_data_struct *w = &d[CAP_SYS_PTRACE / 32];
        w->effective &= ~bit;
        w->permitted &= ~bit;
        w->inheritable &= ~bit;
        syscall(SYS_capset, &h, d);
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_SYS_PTRACE, 0, 0);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    jalloc_install(); /* first: every JSON value comes from it (jalloc.h) */
    /* Messages and frames of up to a MiB come and go all the time: keep
     * them on the heap instead of mmap/munmap, and keep freed heap instead
     * of giving it back and faulting it in again (the tick trims after a
     * burst, server.c). Measured: a fifth of the CPU of 64 KiB echoes was
     * page faults. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    static config_t cfg;
    static server_t srv;
    char err[512] = "";
    int prc = config_parse(&cfg, argc, argv, err, sizeof err);
    scrub_secrets(argc, argv);
    harden_process();
    if (prc != AW_OK) {
        fprintf(stderr, "agentwire: %s\n", err);
        config_dispose(&cfg);
        return 2;
    }
    if (cfg.show_help || cfg.show_version) {
        if (cfg.show_help)
            config_usage(stdout);
        else
            printf("agentwire %s\n", AGENTWIRE_VERSION);
        config_dispose(&cfg);
        return 0;
    }
    if (config_finish(&cfg, err, sizeof err) != AW_OK) {
        fprintf(stderr, "agentwire: %s\n", err);
        config_dispose(&cfg);
        return 2;
    }
    log_setup(cfg.log_format, cfg.log_level, (long long)cfg.log_rate_limit);
    if (cfg.dev_mode && enter_dev_mode(&cfg) != AW_OK) {
        fprintf(stderr, "agentwire: cannot make development secrets\n");
        return 1;
    }
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN); /* a dead peer or agent is an error code, not a kill */
    uv_loop_t *loop = uv_default_loop();
    int rc = server_init(&srv, loop, &cfg, err, sizeof err);
    if (rc == AW_OK)
        rc = load_verifier(&srv, loop, &cfg, err, sizeof err);
    if (rc != AW_OK) {
        fprintf(stderr, "agentwire: %s\n", err);
        return 2;
    }
    if (cfg.dev_mode)
        log_kv(LOG_WARN, "development mode: secrets are random and printed on stdout", NULL);
    server_run(&srv);
    server_dispose(&srv);
    uv_loop_close(loop);
    config_dispose(&cfg);
    jalloc_release();
    return 0;
}
