/*
 * The "log_retention" job (retention.h). The job itself only starts passes
 * and collects them; a pass runs on a helper thread with its own connection
 * to the log database:
 *
 *   1. pg_try_advisory_lock(LOGRET_LOCK), else another daemon is at it: done;
 *   2. age (EZ_LOG_RETENTION_DAYS > 0): the cut is now() - days; every row
 *      with created_at < cut goes;
 *   3. cap (EZ_LOG_MAX_RECORDS > 0): the cut is the newest row that must go,
 *      the one after the cap newest (by created_at, then id); every row at or
 *      before it, in that order, goes. The cut is fixed before anything is
 *      deleted, so rows arriving meanwhile are never taken for old ones.
 *
 * For each cut, the range partitions whose upper bound is at or below it are
 * dropped whole (one transaction). The remaining rows are deleted partition
 * by partition (the default one, and range partitions starting at or before
 * the cut), oldest first, LOGRET_BATCH rows per statement, each statement its
 * own transaction, by ctid (a TID scan whatever the partition's size).
 */
#include "retention.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bg.h"
#include "db.h"
#include "jobs.h"
#include "log.h"
#include "partitions.h"
#include "util.h"

/* One pass, shared with its thread: inputs, then results once done is set. */
struct pass {
    char *dsn;
    int days;
    int64_t cap;
    atomic_bool stop; /* set by fini: end after the current statement */
    atomic_bool done; /* set by the thread as its last action */
    int rc;           /* EZ_OK or EZ_ERR (with err) */
    char err[512];
};

static struct pass *inflight;
static pthread_t inflight_tid;

/* What must go: created_at < ts, or created_at = ts and id <= id (id "0" for the age cut). */
struct cut {
    const char *reason; /* "retention_days" or "max_records", for the logs */
    char ts[64];        /* as PostgreSQL printed it; read back exactly */
    char id[24];
    int64_t us;
};

struct tally {
    uint64_t rows, parts;
};

int64_t log_retention_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return LOGPART_INTERVAL_MS;
}

/* ---- statements (helper thread) ---- */

/* The age cut: now() - days, in the database's clock. */
static int age_cut(PGconn *c, int days, struct cut *cut, char *err, size_t errlen)
{
    char d[16];
    snprintf(d, sizeof(d), "%d", days);
    const char *p[1] = {d};
    PGresult *res = PQexecParams(c,
                                 "SELECT t, (extract(epoch FROM t) * 1000000)::bigint FROM "
                                 "(SELECT now() - make_interval(days => $1::int) AS t) s",
                                 1, NULL, p, NULL, NULL, 0);
    int rc = EZ_ERR;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        snprintf(err, errlen, "retention cutoff: %s", PQresultErrorMessage(res));
    } else {
        cut->reason = "retention_days";
        snprintf(cut->ts, sizeof(cut->ts), "%s", PQgetvalue(res, 0, 0));
        snprintf(cut->id, sizeof(cut->id), "0");
        cut->us = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        rc = EZ_OK;
    }
    PQclear(res);
    return rc;
}

/*
 * The cap cut. 1 = set, 0 = the table is within the cap, -1 = error. ids
 * come from one sequence, so max - min + 1 bounds the row count: a table
 * well below the cap costs two index probes, not a scan.
 */
static int cap_cut(PGconn *c, int64_t cap, struct cut *cut, char *err, size_t errlen)
{
    char num[24];
    snprintf(num, sizeof(num), "%lld", (long long)cap);
    const char *p[1] = {num};
    int rc = -1;
    PGresult *res =
        PQexecParams(c, "SELECT coalesce(max(id) - min(id) + 1, 0) > $1::bigint FROM request_logs",
                     1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        snprintf(err, errlen, "bounding the row count: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        rc = 0;
        goto out;
    }
    PQclear(res);
    res = PQexecParams(c,
                       "SELECT created_at, id, (extract(epoch FROM created_at) * 1000000)::bigint "
                       "FROM request_logs ORDER BY created_at DESC, id DESC OFFSET $1::bigint "
                       "LIMIT 1",
                       1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "finding the newest row over the cap: %s", PQresultErrorMessage(res));
        goto out;
    }
    rc = 0;
    if (PQntuples(res) == 1) {
        cut->reason = "max_records";
        snprintf(cut->ts, sizeof(cut->ts), "%s", PQgetvalue(res, 0, 0));
        snprintf(cut->id, sizeof(cut->id), "%s", PQgetvalue(res, 0, 1));
        cut->us = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        rc = 1;
    }
out:
    PQclear(res);
    return rc;
}

static bool droppable(const struct logpart *p, const struct cut *cut)
{
    return p->hi_us != LOGPART_MAX && p->hi_us <= cut->us;
}

/*
 * Drops, in one transaction, every range partition that ends at or before
 * the cut: all its rows must go, and DROP is instant where DELETE is not.
 */
static int drop_partitions(PGconn *c, const struct cut *cut, struct tally *t, char *err,
                           size_t errlen)
{
    struct logpart_list l = {0};
    buf_t sql;
    size_t n = 0;
    int rc = EZ_ERR;
    buf_init(&sql);
    if (logpart_list_read(c, &l, err, errlen) != EZ_OK)
        goto out;
    for (size_t i = 0; i < l.n; i++)
        if (droppable(&l.v[i], cut))
            buf_printf(&sql, "DROP TABLE %s; ", l.v[i].name); /* regclass text: quoted */
    if (sql.len == 0) {
        rc = EZ_OK;
        goto out;
    }
    buf_puts(&sql, "COMMIT");
    if (db_command(c, "BEGIN", "BEGIN", err, errlen) != EZ_OK ||
        db_command(c, sql.data, "dropping old partitions", err, errlen) != EZ_OK) {
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            PQclear(PQexec(c, "ROLLBACK"));
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (droppable(&l.v[i], cut)) {
            log_info("event=log_partition_dropped name=%s reason=%s", l.v[i].name, cut->reason);
            n++;
        }
    }
    t->parts += n;
    rc = EZ_OK;
out:
    logpart_list_free(&l);
    buf_free(&sql);
    return rc;
}

/* One batch in partition part: its oldest LOGRET_BATCH rows at or before the cut. */
static long delete_batch(PGconn *c, const char *part, const struct cut *cut, char *err,
                         size_t errlen)
{
    buf_t sql;
    buf_init(&sql);
    buf_printf(&sql,
               "DELETE FROM %s WHERE ctid = ANY(ARRAY("
               "SELECT ctid FROM %s WHERE created_at <= $1::timestamptz "
               "AND (created_at < $1::timestamptz OR id <= $2::bigint) "
               "ORDER BY created_at, id LIMIT %d))",
               part, part, LOGRET_BATCH);
    const char *p[2] = {cut->ts, cut->id};
    PGresult *res = PQexecParams(c, sql.data, 2, NULL, p, NULL, NULL, 0);
    long n = -1;
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
        n = strtol(PQcmdTuples(res), NULL, 10);
    else
        snprintf(err, errlen, "deleting from %s: %s", part, PQresultErrorMessage(res));
    PQclear(res);
    buf_free(&sql);
    return n;
}

/* Removes everything at or before the cut. */
static int purge(PGconn *c, const struct pass *p, const struct cut *cut, struct tally *t, char *err,
                 size_t errlen)
{
    struct logpart_list l = {0};
    int rc = EZ_ERR;
    if (drop_partitions(c, cut, t, err, errlen) != EZ_OK)
        return EZ_ERR;
    if (logpart_list_read(c, &l, err, errlen) != EZ_OK)
        return EZ_ERR;
    /* Index n stands for the default partition. */
    for (size_t i = 0; i <= l.n; i++) {
        const char *part = i < l.n ? l.v[i].name : l.default_name;
        if (part == NULL || (i < l.n && l.v[i].lo_us > cut->us))
            continue;
        long n;
        do {
            if (atomic_load(&p->stop)) {
                rc = EZ_OK;
                goto out;
            }
            if ((n = delete_batch(c, part, cut, err, errlen)) < 0)
                goto out;
            t->rows += (uint64_t)n;
        } while (n == LOGRET_BATCH);
    }
    rc = EZ_OK;
out:
    logpart_list_free(&l);
    return rc;
}

/* Both phases, under the pass's advisory lock. */
static int run_pass(PGconn *c, struct pass *p, struct tally *t)
{
    struct cut cut;
    if (p->days > 0) {
        if (age_cut(c, p->days, &cut, p->err, sizeof(p->err)) != EZ_OK ||
            purge(c, p, &cut, t, p->err, sizeof(p->err)) != EZ_OK)
            return EZ_ERR;
    }
    if (p->cap > 0 && !atomic_load(&p->stop)) {
        int r = cap_cut(c, p->cap, &cut, p->err, sizeof(p->err));
        if (r < 0 || (r == 1 && purge(c, p, &cut, t, p->err, sizeof(p->err)) != EZ_OK))
            return EZ_ERR;
    }
    return EZ_OK;
}

static void *pass_main(void *arg)
{
    struct pass *p = arg;
    struct ez_db db;
    struct tally t = {0, 0};
    int64_t t0 = ez_mono_us();
    const char *lp[1] = {LOGRET_LOCK};
    PGresult *res = NULL;

    p->rc = EZ_ERR;
    db_init(&db, p->dsn);
    PGconn *c = db_get(&db);
    if (c == NULL) {
        snprintf(p->err, sizeof(p->err), "log database unavailable");
        goto out;
    }
    if (db_command(c,
                   "SET lock_timeout = '" LOGMAINT_LOCK_TIMEOUT "'; "
                   "SET statement_timeout = '" LOGRET_STATEMENT_TIMEOUT "'",
                   "session settings", p->err, sizeof(p->err)) != EZ_OK)
        goto out;
    res = PQexecParams(c, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, lp, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(p->err, sizeof(p->err), "advisory lock: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        p->rc = EZ_OK; /* another daemon's pass is running */
        goto out;
    }
    p->rc = run_pass(c, p, &t);
    /* The session lock goes with the connection (db_close below). */
    if (t.rows > 0 || t.parts > 0)
        log_info("event=log_retention_done rows_deleted=%llu partitions_dropped=%llu ms=%lld",
                 (unsigned long long)t.rows, (unsigned long long)t.parts,
                 (long long)((ez_mono_us() - t0) / 1000));
out:
    PQclear(res);
    db_close(&db);
    atomic_store(&p->done, true);
    return NULL;
}

/* ---- the job (loop side) ---- */

static void pass_free(struct pass *p)
{
    if (p == NULL)
        return;
    free(p->dsn);
    free(p);
}

/* Joins a finished pass. Returns it (the caller frees it), or NULL when none or still running. */
static struct pass *pass_collect(void)
{
    if (inflight == NULL || !atomic_load(&inflight->done))
        return NULL;
    pthread_join(inflight_tid, NULL);
    struct pass *p = inflight;
    inflight = NULL;
    return p;
}

static int pass_start(struct bg_ctx *ctx)
{
    struct pass *p = ez_malloc(sizeof(*p));
    memset(p, 0, sizeof(*p));
    p->dsn = ez_strdup(config_log_dsn(ctx->cfg));
    p->days = ctx->cfg->log_retention_days;
    p->cap = ctx->cfg->log_max_records;
    atomic_init(&p->stop, false);
    atomic_init(&p->done, false);
    int e = pthread_create(&inflight_tid, NULL, pass_main, p);
    if (e != 0) {
        pass_free(p);
        return job_fail(ctx, "log retention: cannot start its thread: %s", strerror(e));
    }
    inflight = p;
    return EZ_OK;
}

int log_retention_run(struct bg_ctx *ctx)
{
    if (inflight != NULL && !atomic_load(&inflight->done))
        return EZ_OK; /* a long pass: the next run looks again */
    struct pass *prev = pass_collect();
    int rc = EZ_OK;
    if (ctx->cfg->log_retention_days > 0 || ctx->cfg->log_max_records > 0)
        rc = pass_start(ctx);
    if (rc == EZ_OK && prev && prev->rc != EZ_OK)
        rc = job_fail(ctx, "log retention: %s", prev->err);
    pass_free(prev);
    return rc;
}

void log_retention_fini(struct bg_ctx *ctx)
{
    (void)ctx;
    if (inflight == NULL)
        return;
    atomic_store(&inflight->stop, true);
    pthread_join(inflight_tid, NULL);
    pass_free(inflight);
    inflight = NULL;
}
