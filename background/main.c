/* ezapi-background: command line, start-up checks, signals and the main loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>
#include <cJSON.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include "bg.h"
#include "config.h"
#include "jobs.h"
#include "log.h"
#include "version.h"
#include "zmq_server.h"

/* Set by the handlers, acted on by the loop (handlers do nothing else). */
static volatile sig_atomic_t got_stop; /* the signal number of SIGTERM/SIGINT, or 0 */
static volatile sig_atomic_t got_hup;
/* Self-pipe: a signal arriving just before zmq_poll still wakes it at once. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    if (signo == SIGHUP)
        got_hup = 1;
    else
        got_stop = signo;
    if (sig_pipe[1] >= 0) {
        ssize_t w = write(sig_pipe[1], "s", 1);
        (void)w; /* a full pipe already guarantees a wake-up */
    }
    errno = saved;
}

static int install_signals(void)
{
    struct sigaction sa;

    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_error("event=signal_setup_failed error=\"pipe2: %s\"", strerror(errno));
        return EZ_ERR;
    }
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    sa.sa_flags = 0; /* no SA_RESTART: zmq_poll returns EINTR */
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGHUP, &sa, NULL) != 0) {
        log_error("event=signal_setup_failed error=\"sigaction: %s\"", strerror(errno));
        return EZ_ERR;
    }
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        log_error("event=signal_setup_failed error=\"sigaction: %s\"", strerror(errno));
        return EZ_ERR;
    }
    return EZ_OK;
}

static void drain_sig_pipe(void)
{
    char buf[64];
    while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
        ;
}

static void close_sig_pipe(void)
{
    for (int i = 0; i < 2; i++) {
        if (sig_pipe[i] >= 0)
            close(sig_pipe[i]);
        sig_pipe[i] = -1;
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: ezapi-background [--check-config | --print-config | --version | --help]\n"
                 "  (no option)      run the daemon; configuration from the environment and\n"
                 "                   config.ini (see CONFIG.md); SIGTERM stops, SIGHUP reloads\n"
                 "  --check-config   validate the configuration, exit 0 when valid, 1 when not\n"
                 "  --print-config   print the configuration in force (secrets hidden)\n"
                 "  --version        print the version\n");
}

/* Checks only the daemon cares about, beyond config_load's own. 0 ok, -1 with err set. */
static int check_daemon_config(const struct ez_config *cfg, char *err, size_t errlen)
{
    const char *ep = cfg->zmq_endpoint;
    char path[128];

    if (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0) {
        snprintf(err, errlen,
                 "EZ_ZMQ_ENDPOINT: \"%s\" is not accepted; use ipc:///path or "
                 "tcp://host:port",
                 ep);
        return EZ_ERR;
    }
    if (zmq_server_ipc_path(ep, path, sizeof(path)) < 0) {
        snprintf(err, errlen, "EZ_ZMQ_ENDPOINT: the ipc path must be 1-107 characters");
        return EZ_ERR;
    }
    return EZ_OK;
}

static void log_start(const struct ez_config *cfg)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int pqv = PQlibVersion();
    int zmaj, zmin, zpat;
    zmq_version(&zmaj, &zmin, &zpat);
    log_info("event=start version=%s schema=%d libpq=%d.%d hiredis=%d.%d.%d zmq=%d.%d.%d "
             "openssl=\"%s\" cjson=%s endpoint=%s log_level=%s",
             EZ_VERSION, EZ_SCHEMA_VERSION, pqv / 10000, pqv % 10000, HIREDIS_MAJOR, HIREDIS_MINOR,
             HIREDIS_PATCH, zmaj, zmin, zpat, OpenSSL_version(OPENSSL_VERSION), cJSON_Version(),
             cfg->zmq_endpoint,
             (cfg->log_level >= 0 && cfg->log_level < 4) ? levels[cfg->log_level] : "?");
}

/* Sleeps in zmq_poll until a message, a signal or the next due job; runs what woke it. */
static void run_loop(struct bg_ctx *ctx)
{
    while (!ctx->stop) {
        if (got_stop) {
            log_info("event=signal signal=%s action=stop", got_stop == SIGINT ? "INT" : "TERM");
            break;
        }
        if (got_hup) {
            got_hup = 0;
            log_info("event=signal signal=HUP action=reload");
            (void)bg_reload_config(ctx);
        }

        zmq_pollitem_t items[2] = {
            {.socket = ctx->router, .events = ZMQ_POLLIN},
            {.socket = NULL, .fd = sig_pipe[0], .events = ZMQ_POLLIN},
        };
        int rc = zmq_poll(items, 2, (long)jobs_timeout_ms());
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            log_error("event=zmq_poll_failed error=\"%s\"", zmq_strerror(zmq_errno()));
            ctx->exit_code = BG_EXIT_FAILURE;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            drain_sig_pipe();
        if (items[0].revents & ZMQ_POLLIN)
            zmq_server_drain(ctx);
        jobs_run_due(ctx);
    }
}

int main(int argc, char **argv)
{
    enum { RUN, CHECK, PRINT } mode = RUN;
    char err[512] = "";
    struct bg_ctx ctx = {0};
    bool ctx_ready = false;
    bool jobs_ready = false;
    int code = BG_EXIT_FAILURE;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check-config") == 0 || strcmp(argv[i], "-t") == 0) {
            mode = CHECK;
        } else if (strcmp(argv[i], "--print-config") == 0) {
            mode = PRINT;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("ezapi-background %s (schema %d, log schema %d)\n", EZ_VERSION,
                   EZ_SCHEMA_VERSION, EZ_LOG_SCHEMA_VERSION);
            return BG_EXIT_OK;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return BG_EXIT_OK;
        } else {
            fprintf(stderr, "ezapi-background: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return BG_EXIT_CONFIG;
        }
    }

    ez_log_set_process("background");
    struct ez_config *cfg = ez_calloc(1, sizeof(*cfg));
    if (config_load(cfg, NULL, err, sizeof(err)) != EZ_OK ||
        check_daemon_config(cfg, err, sizeof(err)) != EZ_OK) {
        fprintf(stderr, "ezapi-background: configuration error: %s\n", err);
        config_free(cfg);
        free(cfg);
        return mode == CHECK ? BG_EXIT_FAILURE : BG_EXIT_CONFIG;
    }
    if (mode != RUN) {
        if (mode == PRINT)
            config_print(cfg, stdout);
        else
            fprintf(stderr, "ezapi-background: configuration ok\n");
        config_free(cfg);
        free(cfg);
        return BG_EXIT_OK;
    }

    ez_log_min_level = cfg->log_level;
    log_start(cfg);
    if (install_signals() != EZ_OK) {
        config_free(cfg);
        free(cfg);
        close_sig_pipe();
        return BG_EXIT_FAILURE;
    }
    bg_ctx_init(&ctx, cfg); /* ctx owns cfg from here */
    ctx_ready = true;

    /*
     * Refuse an old schema before listening. PostgreSQL being down is no
     * reason not to start: the heartbeat keeps trying and the first
     * successful connection does this check.
     */
    (void)bg_main_conn(&ctx);
    if (ctx.stop)
        goto out;
    (void)bg_redis(&ctx);

    if (zmq_server_open(&ctx) != EZ_OK)
        goto out;
    if (jobs_init(&ctx) != EZ_OK)
        goto out;
    jobs_ready = true;
    log_info("event=ready");

    run_loop(&ctx);
    code = ctx.exit_code;
    log_info("event=stopping exit_code=%d", code);
out:
    if (ctx.stop && ctx.exit_code != BG_EXIT_OK)
        code = ctx.exit_code;
    if (jobs_ready)
        jobs_fini(&ctx);
    if (ctx_ready)
        bg_ctx_free(&ctx);
    close_sig_pipe();
    log_info("event=stopped exit_code=%d", code);
    return code;
}
