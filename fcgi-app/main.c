/* ezapi-fcgi: loads the config, opens the FastCGI socket, and supervises prefork workers. */
#include <errno.h>
#include <fcgiapp.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#include <cJSON.h>
#include "config.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "version.h"
#include "worker.h"

#define MAX_PROCS 64
#define STOP_GRACE_SECS 30

static pid_t children[MAX_PROCS];
static int64_t started_at[MAX_PROCS];

static void usage(void)
{
    fprintf(stderr, "usage: ezapi-fcgi [--check-config | --print-config | --print-routes | "
                    "--version]\n");
}

static void print_routes(void)
{
    for (int i = 0; i < router_nroutes; i++)
        printf("%s %s\n", router_routes[i].method, router_routes[i].pattern);
}

/*
 * Refuses to serve a schema older than this build needs. PostgreSQL being
 * down is not fatal (health answers 503 until it returns); an old schema is.
 */
static int check_schema(const struct ez_config *cfg)
{
    struct ez_db db;
    db_init(&db, cfg->pg_dsn);
    PGconn *c = db_get(&db);
    if (c == NULL) {
        log_warn("event=schema_check_skipped reason=\"postgres unreachable\"");
        return EZ_OK;
    }
    int v = db_schema_version(c);
    db_close(&db);
    if (v < EZ_SCHEMA_VERSION) {
        log_error("event=schema_behind have=%d need=%d hint=\"run scripts/migrate\"", v,
                  EZ_SCHEMA_VERSION);
        fprintf(stderr,
                "ezapi-fcgi: database schema is at version %d, this build needs %d: "
                "run scripts/migrate\n",
                v, EZ_SCHEMA_VERSION);
        return EZ_ERR;
    }
    return EZ_OK;
}

/* "host:port" or "unix:/path" -> what FCGX_OpenSocket takes; tightens a unix socket's mode. */
static int open_listen(const struct ez_config *cfg)
{
    const char *addr = cfg->fcgi_listen;
    bool is_unix = strncmp(addr, "unix:", 5) == 0;
    const char *path = is_unix ? addr + 5 : addr;
    if (is_unix)
        unlink(path);
    int fd = FCGX_OpenSocket(path, 1024);
    if (fd < 0) {
        log_error("event=listen_failed addr=%s error=\"%s\"", addr, strerror(errno));
        return -1;
    }
    /* Only nginx (same user or group) may talk FastCGI to us. */
    if (is_unix && chmod(path, 0660) != 0)
        log_warn("event=chmod_failed path=%s error=\"%s\"", path, strerror(errno));
    return fd;
}

static pid_t spawn(int slot, int fd, const struct ez_config *cfg)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("event=fork_failed error=\"%s\"", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        exit(worker_process_run(fd, cfg));
    }
    children[slot] = pid;
    started_at[slot] = ez_mono_us();
    return pid;
}

static void stop_children(int n)
{
    for (int i = 0; i < n; i++)
        if (children[i] > 0)
            kill(children[i], SIGTERM);
    int64_t deadline = ez_mono_us() + STOP_GRACE_SECS * 1000000LL;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) {
            if (children[i] <= 0)
                continue;
            if (waitpid(children[i], NULL, WNOHANG) == children[i])
                children[i] = 0;
            else
                alive++;
        }
        if (alive == 0)
            return;
        if (ez_mono_us() > deadline) {
            for (int i = 0; i < n; i++)
                if (children[i] > 0)
                    kill(children[i], SIGKILL);
            deadline = INT64_MAX;
        }
        usleep(20 * 1000);
    }
}

/* Replaces a child that died; one that died young waits a second so a crash loop stays slow. */
static void reap_and_respawn(int n, int fd, const struct ez_config *cfg, bool stopping)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (children[i] != pid)
                continue;
            children[i] = 0;
            if (stopping)
                break;
            log_warn("event=worker_died pid=%d status=%d", (int)pid, status);
            if (ez_mono_us() - started_at[i] < 1000000)
                sleep(1);
            spawn(i, fd, cfg);
        }
    }
}

static int supervise(int n, int fd, const struct ez_config *cfg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < n; i++)
        if (spawn(i, fd, cfg) < 0)
            return 1;
    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("event=supervisor_stopping signal=%d", sig);
            stop_children(n);
            return 0;
        }
        if (sig == SIGHUP)
            log_info("event=sighup note=\"restart the workers to apply a new config\"");
        reap_and_respawn(n, fd, cfg, false);
    }
}

int main(int argc, char **argv)
{
    ez_log_set_process("fcgi");
    const char *mode = argc > 1 ? argv[1] : NULL;
    if (mode && strcmp(mode, "--version") == 0) {
        printf("ezapi-fcgi %s\n", EZ_VERSION);
        return 0;
    }
    if (mode && strcmp(mode, "--print-routes") == 0) {
        print_routes();
        return 0;
    }
    if (mode && strcmp(mode, "--check-config") != 0 && strcmp(mode, "--print-config") != 0) {
        usage();
        return 2;
    }
    struct ez_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    char err[512];
    if (config_load(&cfg, NULL, err, sizeof(err)) != EZ_OK) {
        fprintf(stderr, "ezapi-fcgi: configuration error: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    ez_log_min_level = cfg.log_level;
    if (mode && strcmp(mode, "--print-config") == 0) {
        config_print(&cfg, stdout);
        config_free(&cfg);
        return 0;
    }
    if (mode) {
        printf("configuration ok\n");
        config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = 1, fd = -1;
    if (router_selfcheck() != EZ_OK || check_schema(&cfg) != EZ_OK)
        goto out;
    if (FCGX_Init() != 0 || (fd = open_listen(&cfg)) < 0)
        goto out;
    if (metrics_init(router_nroutes) != EZ_OK)
        goto out;
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    log_info("event=start version=%s listen=%s processes=%d threads=%d libpq=%d hiredis=%d.%d "
             "zmq=%d.%d.%d cjson=%s openssl=\"%s\"",
             EZ_VERSION, cfg.fcgi_listen, cfg.fcgi_processes, cfg.fcgi_threads, PQlibVersion(),
             HIREDIS_MAJOR, HIREDIS_MINOR, major, minor, patch, cJSON_Version(),
             OpenSSL_version(OPENSSL_VERSION));
    rc = supervise(cfg.fcgi_processes, fd, &cfg);
out:
    if (fd >= 0)
        close(fd);
    config_free(&cfg);
    return rc;
}
