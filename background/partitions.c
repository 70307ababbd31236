/*
 * The "log_partitions" job and the partition catalog helpers (partitions.h,
 * docs/log-pipeline.md "Partitions and retention").
 *
 * Each run (at start, then every minute) makes sure that request_logs has a
 * DEFAULT partition, and with EZ_LOG_PARTITIONING=month|day that the current
 * UTC period and the LOGPART_AHEAD next ones are covered by range
 * partitions. Only the uncovered parts of a period are created, so switching
 * between day and month never collides with partitions made under the other
 * mode. Rows that already sit in the default partition for a new range are
 * moved into it in the same transaction (PostgreSQL refuses to attach a
 * range that the default partition holds rows for).
 */
#include "partitions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "util.h"

#define DAY_US 86400000000LL
#define MAX_GAPS 16

/* ---- pure helpers: periods, gaps, names ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void utc_tm(int64_t t_us, struct tm *tm, int *usec)
{
    int64_t secs = floor_div(t_us, 1000000);
    time_t t = (time_t)secs;
    gmtime_r(&t, tm);
    if (usec)
        *usec = (int)(t_us - secs * 1000000);
}

static int64_t tm_us(struct tm *tm)
{
    return (int64_t)timegm(tm) * 1000000;
}

int64_t logpart_period_start(int mode, int64_t t_us)
{
    if (mode == EZ_PART_DAY)
        return floor_div(t_us, DAY_US) * DAY_US;
    struct tm tm;
    utc_tm(t_us, &tm, NULL);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return tm_us(&tm);
}

int64_t logpart_period_next(int mode, int64_t start_us)
{
    if (mode == EZ_PART_DAY)
        return start_us + DAY_US;
    struct tm tm;
    utc_tm(start_us, &tm, NULL);
    tm.tm_mon++; /* timegm normalises December + 1 */
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return tm_us(&tm);
}

size_t logpart_gaps(const struct logpart *v, size_t n, int64_t a, int64_t b, int64_t (*gaps)[2],
                    size_t max)
{
    size_t k = 0;
    int64_t cur = a;
    for (size_t i = 0; i < n && cur < b; i++) {
        if (v[i].hi_us <= cur)
            continue;
        if (v[i].lo_us >= b)
            break;
        if (v[i].lo_us > cur && k < max) {
            gaps[k][0] = cur;
            gaps[k][1] = v[i].lo_us;
            k++;
        }
        cur = v[i].hi_us;
    }
    if (cur < b && k < max) {
        gaps[k][0] = cur;
        gaps[k][1] = b;
        k++;
    }
    return k;
}

void logpart_ts(int64_t t_us, char *out, size_t outlen)
{
    struct tm tm;
    int usec;
    utc_tm(t_us, &tm, &usec);
    snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
}

/* YYYYMMDD, plus HHMMSS when t is not at midnight. */
static void name_part(int64_t t_us, char *out, size_t outlen)
{
    struct tm tm;
    utc_tm(t_us, &tm, NULL);
    if (t_us % DAY_US == 0)
        snprintf(out, outlen, "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    else
        snprintf(out, outlen, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void logpart_name(int64_t lo_us, int64_t hi_us, char *out, size_t outlen)
{
    char a[80], b[80];
    struct tm tm;
    utc_tm(lo_us, &tm, NULL);
    if (logpart_period_start(EZ_PART_MONTH, lo_us) == lo_us &&
        logpart_period_next(EZ_PART_MONTH, lo_us) == hi_us) {
        snprintf(out, outlen, "request_logs_p%04d%02d", tm.tm_year + 1900, tm.tm_mon + 1);
        return;
    }
    name_part(lo_us, a, sizeof(a));
    if (lo_us % DAY_US == 0 && hi_us == lo_us + DAY_US) {
        snprintf(out, outlen, "request_logs_p%s", a);
        return;
    }
    name_part(hi_us, b, sizeof(b));
    snprintf(out, outlen, "request_logs_p%s_%s", a, b);
}

/* ---- catalog ---- */

/* The default partition (if any) and now(); no row when request_logs is not partitioned. */
static const char default_sql[] =
    "SELECT d.oid::regclass::text, (extract(epoch FROM now()) * 1000000)::bigint "
    "FROM pg_partitioned_table pt LEFT JOIN pg_class d ON d.oid = pt.partdefid "
    "WHERE pt.partrelid = 'request_logs'::regclass";

/*
 * Range bounds as unix microseconds, parsed back from the catalog's own
 * rendering (FOR VALUES FROM ('...') TO ('...')). NULL = unbounded on that
 * side (MINVALUE/MAXVALUE, or -infinity/infinity).
 */
static const char ranges_sql[] =
    "WITH p AS ("
    "  SELECT c.oid::regclass::text AS name, regexp_match(pg_get_expr(c.relpartbound, c.oid), "
    "    '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') AS m "
    "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "  WHERE i.inhparent = 'request_logs'::regclass), "
    "b AS ("
    "  SELECT name, CASE WHEN m[1] LIKE '''%' THEN btrim(m[1], '''')::timestamptz END AS lo, "
    "  CASE WHEN m[2] LIKE '''%' THEN btrim(m[2], '''')::timestamptz END AS hi "
    "  FROM p WHERE m IS NOT NULL) "
    "SELECT name, "
    "  CASE WHEN lo IS NULL OR lo = '-infinity' THEN NULL "
    "    WHEN lo = 'infinity' THEN 9223372036854775807 "
    "    ELSE (extract(epoch FROM lo) * 1000000)::bigint END, "
    "  CASE WHEN hi IS NULL OR hi = 'infinity' THEN NULL "
    "    WHEN hi = '-infinity' THEN -9223372036854775807 "
    "    ELSE (extract(epoch FROM hi) * 1000000)::bigint END "
    "FROM b ORDER BY 2 NULLS FIRST";

static int64_t num_or(const PGresult *res, int row, int col, int64_t dflt)
{
    if (PQgetisnull(res, row, col))
        return dflt;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

int logpart_list_read(PGconn *c, struct logpart_list *l, char *err, size_t errlen)
{
    int rc = EZ_ERR;
    memset(l, 0, sizeof(*l));
    PGresult *res = PQexecParams(c, default_sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "reading the partitions: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQntuples(res) != 1) {
        snprintf(err, errlen,
                 "request_logs is not partitioned: the log schema is older than "
                 "sql/log/002 (run scripts/migrate)");
        goto out;
    }
    if (!PQgetisnull(res, 0, 0))
        l->default_name = ez_strdup(PQgetvalue(res, 0, 0));
    l->now_us = num_or(res, 0, 1, 0);
    PQclear(res);

    res = PQexecParams(c, ranges_sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "reading the partition bounds: %s", PQresultErrorMessage(res));
        goto out;
    }
    l->n = (size_t)PQntuples(res);
    l->v = ez_malloc((l->n ? l->n : 1) * sizeof(*l->v));
    for (size_t i = 0; i < l->n; i++) {
        l->v[i].name = ez_strdup(PQgetvalue(res, (int)i, 0));
        l->v[i].lo_us = num_or(res, (int)i, 1, LOGPART_MIN);
        l->v[i].hi_us = num_or(res, (int)i, 2, LOGPART_MAX);
    }
    rc = EZ_OK;
out:
    PQclear(res);
    if (rc != EZ_OK)
        logpart_list_free(l);
    return rc;
}

void logpart_list_free(struct logpart_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    free(l->default_name);
    memset(l, 0, sizeof(*l));
}

/* ---- the upkeep's transaction ---- */

static void rollback(PGconn *c)
{
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
}

/*
 * Opens the upkeep's transaction: BEGIN, lock and statement timeouts,
 * pg_try_advisory_xact_lock(LOGPART_LOCK). Returns 1 when this daemon may
 * work, 0 when another holds the lock, -1 on error (err set); rolled back
 * unless 1.
 */
static int upkeep_begin(PGconn *c, char *err, size_t errlen)
{
    if (db_command(c,
                   "BEGIN; SET LOCAL lock_timeout = '" LOGMAINT_LOCK_TIMEOUT "'; "
                   "SET LOCAL statement_timeout = '" LOGMAINT_STATEMENT_TIMEOUT "'",
                   "BEGIN", err, errlen) != EZ_OK) {
        rollback(c);
        return -1;
    }
    const char *p[1] = {LOGPART_LOCK};
    PGresult *res =
        PQexecParams(c, "SELECT pg_try_advisory_xact_lock($1::bigint)", 1, NULL, p, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        snprintf(err, errlen, "advisory lock: %s", PQresultErrorMessage(res));
    else
        rc = PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
    PQclear(res);
    if (rc != 1)
        rollback(c);
    return rc;
}

/* COMMIT (or ROLLBACK when commit is false). 0 ok, -1 with err. */
static int upkeep_end(PGconn *c, bool commit, char *err, size_t errlen)
{
    if (!commit) {
        rollback(c);
        return EZ_OK;
    }
    if (db_command(c, "COMMIT", "COMMIT", err, errlen) != EZ_OK) {
        rollback(c);
        return EZ_ERR;
    }
    return EZ_OK;
}

/* ---- the job ---- */

int64_t log_partitions_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return LOGPART_INTERVAL_MS;
}

/* The columns of request_logs, quoted, in order (for moving rows out of the default). */
static char *column_list(PGconn *c, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(
        c,
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'request_logs'::regclass AND attnum > 0 AND NOT attisdropped",
        0, NULL, NULL, NULL, NULL, 0);
    char *cols = NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        cols = ez_strdup(PQgetvalue(res, 0, 0));
    else
        snprintf(err, errlen, "reading the columns: %s", PQresultErrorMessage(res));
    PQclear(res);
    return cols;
}

/*
 * Creates the partition [lo, hi) inside the open maintenance transaction:
 * an ordinary table shaped like request_logs, filled with the rows the
 * default partition holds for that range, then attached (which builds its
 * indexes and checks that the default holds no more rows of the range).
 * Bounds are formatted from integers by logpart_ts: DDL takes no parameters.
 */
static int create_partition(PGconn *c, const struct logpart_list *l, const char *cols, int64_t lo,
                            int64_t hi, char *err, size_t errlen)
{
    char name[200], lo_s[96], hi_s[96];
    buf_t sql;
    PGresult *res = NULL;
    int rc = EZ_ERR;
    long moved = 0;
    buf_init(&sql);
    logpart_name(lo, hi, name, sizeof(name));
    logpart_ts(lo, lo_s, sizeof(lo_s));
    logpart_ts(hi, hi_s, sizeof(hi_s));

    buf_printf(&sql, "CREATE TABLE %s (LIKE request_logs INCLUDING DEFAULTS)", name);
    if (db_command(c, sql.data, "CREATE TABLE", err, errlen) != EZ_OK)
        goto out;
    if (l->default_name) {
        const char *p[2] = {lo_s, hi_s};
        buf_reset(&sql);
        buf_printf(&sql,
                   "WITH moved AS (DELETE FROM %s WHERE created_at >= $1::timestamptz AND "
                   "created_at < $2::timestamptz RETURNING %s) "
                   "INSERT INTO %s (%s) SELECT %s FROM moved",
                   l->default_name, cols, name, cols, cols);
        res = PQexecParams(c, sql.data, 2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "moving rows out of the default partition: %s",
                     PQresultErrorMessage(res));
            goto out;
        }
        moved = strtol(PQcmdTuples(res), NULL, 10);
    }
    buf_reset(&sql);
    buf_printf(&sql,
               "ALTER TABLE request_logs ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')",
               name, lo_s, hi_s);
    if (db_command(c, sql.data, "ATTACH PARTITION", err, errlen) != EZ_OK)
        goto out;
    log_info("event=log_partition_created name=%s from=\"%s\" to=\"%s\" moved_rows=%ld", name, lo_s,
             hi_s, moved);
    rc = EZ_OK;
out:
    PQclear(res);
    buf_free(&sql);
    return rc;
}

/* Every part of the current period and the LOGPART_AHEAD next ones that no partition covers. */
static size_t missing_ranges(int mode, const struct logpart_list *l, int64_t (*gaps)[2], size_t max)
{
    size_t n = 0;
    int64_t start = logpart_period_start(mode, l->now_us);
    for (int k = 0; k <= LOGPART_AHEAD && n < max; k++) {
        int64_t next = logpart_period_next(mode, start);
        n += logpart_gaps(l->v, l->n, start, next, gaps + n, max - n);
        start = next;
    }
    return n;
}

/*
 * One maintenance transaction: (re)creates the default partition if it is
 * missing, then the missing range partitions. The list is read under the
 * advisory lock, so two daemons never try to create the same one.
 */
static int upkeep(PGconn *c, int mode, char *err, size_t errlen)
{
    struct logpart_list l = {0};
    int64_t gaps[MAX_GAPS][2];
    char *cols = NULL;
    int rc = EZ_ERR;
    bool commit = false;

    int locked = upkeep_begin(c, err, errlen);
    if (locked <= 0)
        return locked == 0 ? EZ_OK : EZ_ERR; /* 0: another daemon does it */
    if (logpart_list_read(c, &l, err, errlen) != EZ_OK)
        goto out;
    if (l.default_name == NULL) {
        /* Without it a row outside every range would make its whole batch unwritable. */
        if (db_command(c, "CREATE TABLE request_logs_default PARTITION OF request_logs DEFAULT",
                       "creating the default partition", err, errlen) != EZ_OK)
            goto out;
        log_warn("event=log_partition_created name=request_logs_default msg=\"the default "
                 "partition was missing\"");
        l.default_name = ez_strdup("request_logs_default");
        commit = true;
    }
    size_t n = mode == EZ_PART_OFF ? 0 : missing_ranges(mode, &l, gaps, MAX_GAPS);
    if (n > 0) {
        if ((cols = column_list(c, err, errlen)) == NULL)
            goto out;
        /*
         * The parent first, then the default partition, in the order of a
         * DROP of a partition (retention), so the two never deadlock. The
         * default is locked before moving rows, so that none for a new range
         * slips in meanwhile.
         */
        char lock[256];
        snprintf(lock, sizeof(lock),
                 "LOCK TABLE request_logs IN SHARE UPDATE EXCLUSIVE MODE; "
                 "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE",
                 l.default_name);
        if (db_command(c, lock, "locking request_logs", err, errlen) != EZ_OK)
            goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (create_partition(c, &l, cols, gaps[i][0], gaps[i][1], err, errlen) != EZ_OK)
            goto out;
    commit = commit || n > 0;
    rc = EZ_OK;
out:
    if (upkeep_end(c, rc == EZ_OK && commit, err, errlen) != EZ_OK)
        rc = EZ_ERR;
    free(cols);
    logpart_list_free(&l);
    return rc;
}

int log_partitions_run(struct bg_ctx *ctx)
{
    char err[512] = "";
    PGconn *c = db_get(&ctx->log_db);
    if (c == NULL)
        return job_fail(ctx, "log database unavailable");
    if (upkeep(c, ctx->cfg->log_partitioning, err, sizeof(err)) != EZ_OK) {
        db_check(&ctx->log_db);
        return job_fail(ctx, "log partitions: %s", err);
    }
    return EZ_OK;
}
