/*
 * request_logs partitions (docs/log-pipeline.md, "Partitions and retention"):
 * the "log_partitions" job, which keeps range partitions ready ahead of time
 * for EZ_LOG_PARTITIONING=month|day, and the catalog helpers it shares with
 * the "log_retention" job (retention.c).
 *
 * request_logs is always partitioned by RANGE (created_at) with a DEFAULT
 * partition (sql/log/002): mode off never adds range partitions, so every row
 * lives in the default one. Periods are UTC days or months.
 */
#ifndef EZ_PARTITIONS_H
#define EZ_PARTITIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include "config.h"

struct bg_ctx;

/* Partitions kept ready: the current period and this many after it. */
#define LOGPART_AHEAD 2
/* Both jobs run this often, and once at start. */
#define LOGPART_INTERVAL_MS 60000
/*
 * The upkeep runs under a transaction-level advisory lock (the bytes of
 * "ezlogprt"): a second ezapi-background on the same log database skips it
 * instead of creating the same partitions. Retention has its own lock.
 */
#define LOGPART_LOCK "7312276170722013812"
/*
 * DDL waits this long for its table locks, then gives up until the next
 * run: the upkeep runs on the daemon's loop, and a COPY of the log sink
 * queued behind a waiting ATTACH or DROP waits as long.
 */
#define LOGMAINT_LOCK_TIMEOUT "1s"
/* Bound on every statement of the upkeep. */
#define LOGMAINT_STATEMENT_TIMEOUT "60s"

/* Bounds of a range partition in unix microseconds; unbounded sides use these. */
#define LOGPART_MIN INT64_MIN
#define LOGPART_MAX INT64_MAX

/* One range partition of request_logs. */
struct logpart {
    char *name; /* as regclass prints it: quoted, qualified when needed; owned */
    int64_t lo_us, hi_us;
};

/* The range partitions (sorted by lo_us), the default partition, and the DB's clock. */
struct logpart_list {
    struct logpart *v;
    size_t n;
    char *default_name; /* NULL when there is no default partition; owned */
    int64_t now_us;     /* now() of the log database */
};

/*
 * Reads the partitions of request_logs. 0 ok; -1 with err (request_logs is
 * not partitioned: the log schema predates 002; or a query failed).
 */
int logpart_list_read(PGconn *c, struct logpart_list *l, char *err, size_t errlen);
void logpart_list_free(struct logpart_list *l);

/* Start of the UTC period (enum ez_partitioning, not off) that contains t_us. Pure. */
int64_t logpart_period_start(int mode, int64_t t_us);
/* Start of the period after the one starting at start_us. Pure. */
int64_t logpart_period_next(int mode, int64_t start_us);
/*
 * The parts of [a, b) that no partition of v (sorted by lo_us, not
 * overlapping) covers, in order, into gaps[] (at most max). Returns their
 * number. Pure.
 */
size_t logpart_gaps(const struct logpart *v, size_t n, int64_t a, int64_t b, int64_t (*gaps)[2],
                    size_t max);
/*
 * The name of the partition for [lo, hi): request_logs_pYYYYMM for a whole
 * month, request_logs_pYYYYMMDD for a whole day, else
 * request_logs_pYYYYMMDD_YYYYMMDD (with HHMMSS when a bound is not at
 * midnight). Pure.
 */
void logpart_name(int64_t lo_us, int64_t hi_us, char *out, size_t outlen);
/* A timestamptz literal for t_us, UTC: "2026-11-26 00:00:00.000000+00". Pure. */
void logpart_ts(int64_t t_us, char *out, size_t outlen);

/* The "log_partitions" job: every LOGPART_INTERVAL_MS and at start. */
int64_t log_partitions_interval_ms(const struct ez_config *cfg);
int log_partitions_run(struct bg_ctx *ctx);

#endif
