/* The background daemon's shared context and the helpers every job uses. */
#ifndef EZ_BG_H
#define EZ_BG_H

#include <stdbool.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <hiredis.h>
#include "config.h"
#include "db.h"
#include "rds.h"

/* Exit codes of ezapi-background (docs/background.md). */
#define BG_EXIT_OK 0
#define BG_EXIT_FAILURE 1 /* could not start: bind failed, a job's init failed */
#define BG_EXIT_CONFIG 2  /* bad configuration or command line */
#define BG_EXIT_SCHEMA 3  /* the main schema is behind this build: run scripts/migrate */

/*
 * One per process, owned by main(). Jobs and the ZeroMQ handlers run one
 * after another on the main loop, so nothing here is locked. The helper
 * threads (the log writer, the registry fetch, the webhook POST) never touch
 * this context: each has its own connections and hands results over under
 * its own lock or atomics.
 */
struct bg_ctx {
    /*
     * The configuration in force, owned by the context. Replaced as a whole on
     * SIGHUP: jobs read it at each run and never keep pointers into it across
     * runs. Settings that need a restart (DSNs, Redis address, endpoint) keep
     * their start-up value and their strings stay at the same address, so the
     * connection slots below may borrow them.
     */
    struct ez_config *cfg;
    struct ez_db main_db;
    struct ez_db log_db; /* config_log_dsn(): the main DSN when no separate log DB */
    struct ez_rds redis;
    void *zmq_ctx;      /* ZeroMQ context, or NULL before zmq_server_open */
    void *router;       /* the ROUTER socket workers talk to, or NULL */
    char ipc_path[108]; /* socket file this process bound (removed at close), or "" */

    char hostname[256];
    bool stop;           /* set by code (not a signal handler) to leave the loop */
    int exit_code;       /* BG_EXIT_*; meaningful once stop is set */
    bool schema_checked; /* main schema version verified on a live connection */
    bool main_db_down;   /* an outage is in progress and was logged */
    bool redis_down;
    /* Rate limit of zmq_server's "dropped message" warnings, one slot per reason. */
    int64_t zs_warn_ms[4];
    unsigned zs_suppressed[4];

    char job_err[512]; /* set by job_fail(); read by the scheduler */
};

/*
 * Fills ctx for cfg (whose ownership passes to ctx): connection slots
 * initialised but not connected, no sockets yet.
 */
void bg_ctx_init(struct bg_ctx *ctx, struct ez_config *cfg);
/* Closes every connection and socket and frees the configuration. Idempotent. */
void bg_ctx_free(struct bg_ctx *ctx);

/*
 * The main PostgreSQL connection, or NULL while it is unreachable. Logs an
 * outage once at warn when it starts and once at info when it ends (repeated
 * connection failures in between are not logged at warn). On the first
 * successful connection, checks the schema version: when it is behind this
 * build, logs an error, sets ctx->stop with BG_EXIT_SCHEMA and returns NULL.
 * After a failed query, call db_check(&ctx->main_db).
 */
PGconn *bg_main_conn(struct bg_ctx *ctx);
/* The Redis connection or NULL, with the same once-per-outage logging. */
redisContext *bg_redis(struct bg_ctx *ctx);

/*
 * Re-reads the configuration (SIGHUP). On error logs it and keeps the old
 * one. Otherwise installs the new configuration, logs each changed setting
 * (values of DSNs, passwords, tokens and secrets are never logged), keeps the
 * start-up value of settings that need a restart (with a warning when they
 * changed), applies the log level and tells the scheduler about new intervals.
 * Returns the number of settings applied, or -1 when the reload failed.
 */
int bg_reload_config(struct bg_ctx *ctx);

/*
 * Lines of `EZ_NAME=value` (as config_print writes them) that differ between
 * before and after: calls fn(name, old, new, arg) for each, old or new being
 * NULL when the setting is missing on that side. Pure; exposed for the tests.
 * Returns the number of differences.
 */
int bg_config_diff(const char *before, const char *after,
                   void (*fn)(const char *name, const char *oldv, const char *newv, void *arg),
                   void *arg);

#endif
