/*
 * Configuration: every setting of CONFIG.md, read from the environment, then
 * the INI file (inih), then the defaults, from one table. Parsed into a fresh
 * struct, cross-checked, then used.
 */
#ifndef EZ_CONFIG_H
#define EZ_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include "util.h"

enum ez_partitioning { EZ_PART_OFF = 0, EZ_PART_MONTH, EZ_PART_DAY };

/* All strings are owned by the struct (config_free releases them); never NULL, "" when empty. */
struct ez_config {
    /* [server] */
    int api_port;
    char *fcgi_listen;
    int fcgi_processes;
    int fcgi_threads;
    int64_t max_body_bytes;
    /* [postgres] */
    char *pg_dsn;
    char *log_pg_dsn; /* "" = main DB */
    /* [redis] */
    char *redis_addr;
    char *redis_password; /* secret */
    int redis_db;
    /* [background] */
    char *zmq_endpoint;
    /* [cors] */
    char *cors_allow_origins;
    /* [auth] */
    char *admin_token;    /* secret; "" = admin API off */
    char *internal_token; /* secret */
    bool internal_allow_anon;
    char *jwt_secret; /* secret, reserved */
    /* [log] */
    int log_level; /* enum ez_log_level */
    int log_queue;
    int log_batch_size;
    int log_flush_ms;
    int log_retention_days;
    int64_t log_max_records;
    int log_partitioning; /* enum ez_partitioning */
    char *log_spool_dir;
    /* [sync] */
    bool sync_outbox_enabled;
    int sync_outbox_interval_seconds;
    int sync_outbox_batch_size;
    int sync_outbox_max_retries;
    int sync_reconcile_seconds;
    /* [model_registry] */
    bool model_registry_enabled;
    char *model_registry_url;
    int model_registry_refresh_seconds;
    char *model_registry_cache_dir;
    /* [quota] */
    int quota_reset_interval_seconds;
    /* [security] */
    bool outbound_allow_private;
};

/*
 * Loads the configuration into *cfg (zeroed by the caller or fresh).
 * getenv_fn lets the unit tests supply an environment (NULL = getenv).
 * On a bad value writes one message naming the variable and the accepted
 * values into err (errlen bytes) and returns -1; warnings (unknown INI key,
 * with file:line) go to the log. Returns 0 on success.
 */
int config_load(struct ez_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                size_t errlen) EZ_MUSTCHECK;
void config_free(struct ez_config *cfg);

/* Prints every setting as `EZ_NAME=value`, secrets shown as "(set)" or "". */
void config_print(const struct ez_config *cfg, FILE *out);

/* The log DB DSN in force: log_pg_dsn, or the main DSN when that is empty. */
const char *config_log_dsn(const struct ez_config *cfg);

#endif
