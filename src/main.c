/* main.c -- agentwire's entry point: configuration, development mode, the
 * verifier, then the server loop. The only file that exits the process. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "aw.h"
#include "config.h"
#include "jalloc.h"
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

static int load_verifier(server_t *srv, const config_t *cfg, char *err, size_t errlen)
{
    jwt_verifier_t *v = &srv->jwt;
    int rc;
    if (cfg->jwt_public_key_file) {
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
    if (jwt_verifier_set_issuer(v, cfg->jwt_issuer) != AW_OK ||
        jwt_verifier_set_audience(v, cfg->jwt_audience) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    return AW_OK;
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
    if (config_parse(&cfg, argc, argv, err, sizeof err) != AW_OK) {
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
    log_setup(cfg.log_format, cfg.log_level);
    if (cfg.dev_mode && enter_dev_mode(&cfg) != AW_OK) {
        fprintf(stderr, "agentwire: cannot make development secrets\n");
        return 1;
    }
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN); /* a dead peer or agent is an error code, not a kill */
    uv_loop_t *loop = uv_default_loop();
    int rc = server_init(&srv, loop, &cfg, err, sizeof err);
    if (rc == AW_OK)
        rc = load_verifier(&srv, &cfg, err, sizeof err);
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
