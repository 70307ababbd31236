/*
 * The "quota_reset" job: keys whose quota period ended start a new one.
 * quota_used goes back to 0, an exhausted key becomes active again (unless
 * its quota_limit is 0: it would be exhausted at once), and quota_reset_at
 * moves to the next UTC calendar boundary after now (not after the old
 * value: a daemon that was down for days resets once, not once per missed
 * period). Each key gets its outbox row in the same transaction, so Redis
 * follows within one outbox run; keys that actually had usage or changed
 * status also get an operation-log row (actor "system", action
 * "quota_reset"). Done in batches of QUOTA_RESET_BATCH keys per transaction.
 */
#include "quota_reset.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "util.h"

/* Transaction-level advisory lock: a second ezapi-background skips the run. */
#define QUOTA_RESET_LOCK "8175563244202783604" /* "quotarst" */

/*
 * One batch. SKIP LOCKED: a key that a stats flush or an admin write holds
 * right now is left for the next run instead of waiting (and never
 * deadlocks against a flush that locks keys in another order). The old
 * values come from the locked rows, so they are the ones being replaced.
 * Boundaries are computed in UTC from the transaction's now(): date_trunc
 * 'week' is the ISO week (Monday), the same rule as keys.c's next_reset().
 */
static const char batch_sql[] =
    "WITH due AS (SELECT id, quota_used AS old_used, status AS old_status FROM keys "
    "  WHERE quota_reset_period <> 'none' AND quota_reset_at <= now() "
    "  ORDER BY quota_reset_at, id LIMIT $1::int FOR UPDATE SKIP LOCKED), "
    "r AS (UPDATE keys k SET quota_used = 0, updated_at = now(), "
    "    status = CASE WHEN k.status = 'exhausted' AND k.quota_limit <> 0 "
    "                  THEN 'active' ELSE k.status END, "
    "    quota_reset_at = (CASE k.quota_reset_period "
    "        WHEN 'daily' THEN date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day' "
    "        WHEN 'weekly' THEN date_trunc('week', now() AT TIME ZONE 'UTC') + interval '1 week' "
    "        ELSE date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month' "
    "        END) AT TIME ZONE 'UTC' "
    "  FROM due WHERE k.id = due.id "
    "  RETURNING k.id, due.old_used, due.old_status, k.status, k.quota_reset_at), "
    "ol AS (INSERT INTO operation_logs (actor, action, resource, resource_id, changes) "
    "  SELECT 'system', 'quota_reset', 'keys', id::text, "
    "    jsonb_build_object('quota_used', 0, 'previous_quota_used', old_used, "
    "      'quota_reset_at', to_char(quota_reset_at AT TIME ZONE 'UTC', "
    "                                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) "
    "    || CASE WHEN status <> old_status THEN jsonb_build_object('status', status) "
    "            ELSE '{}'::jsonb END "
    "  FROM r WHERE old_used > 0 OR status <> old_status), "
    "ob AS (INSERT INTO sync_outbox (resource, resource_id, action) "
    "  SELECT 'keys', id, 'upsert' FROM r) "
    "SELECT count(*), count(*) FILTER (WHERE old_used > 0), "
    "  count(*) FILTER (WHERE status <> old_status) FROM r";

/* What the run did, for its log line. */
struct reset_counts {
    long keys;        /* quota_reset_at moved */
    long used;        /* of which had quota_used > 0 */
    long reactivated; /* exhausted -> active */
};

int64_t quota_reset_interval_ms(const struct ez_config *cfg)
{
    return (int64_t)cfg->quota_reset_interval_seconds * 1000;
}

/* 1 = lock taken, 0 = another instance holds it, -1 = error (err set). */
static int try_lock(PGconn *conn, char *err, size_t errlen)
{
    const char *lp[1] = {QUOTA_RESET_LOCK};
    PGresult *res = PQexecParams(conn, "SELECT pg_try_advisory_xact_lock($1::bigint)", 1, NULL, lp,
                                 NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        rc = PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
    else
        snprintf(err, errlen, "lock: %s", PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

/* Resets up to QUOTA_RESET_BATCH keys, adding to *c; the number reset or -1 (err set). */
static long reset_batch(PGconn *conn, struct reset_counts *c, char *err, size_t errlen)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", QUOTA_RESET_BATCH);
    const char *params[1] = {limit};
    PGresult *res = PQexecParams(conn, batch_sql, 1, NULL, params, NULL, NULL, 0);
    long n = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        c->keys += n;
        c->used += strtol(PQgetvalue(res, 0, 1), NULL, 10);
        c->reactivated += strtol(PQgetvalue(res, 0, 2), NULL, 10);
    } else {
        snprintf(err, errlen, "reset keys: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
    return n;
}

/*
 * One transaction: lock, one batch, commit. Returns the number of keys reset,
 * 0 when another instance holds the lock, -1 on error (err set, rolled back).
 */
static long one_transaction(PGconn *conn, struct reset_counts *c, char *err, size_t errlen)
{
    struct reset_counts mine = {0, 0, 0};
    long n = -1;

    if (db_command(conn, "BEGIN", "BEGIN", err, errlen) != EZ_OK)
        return -1;
    int locked = try_lock(conn, err, errlen);
    if (locked <= 0) {
        n = locked; /* 0: the other instance does the work */
        goto out;
    }
    if ((n = reset_batch(conn, &mine, err, errlen)) < 0)
        goto out;
    if (db_command(conn, "COMMIT", "COMMIT", err, errlen) != EZ_OK)
        return -1; /* a failed COMMIT ends the transaction */
    /* Counted only once committed, so the log line never claims a rolled-back batch. */
    c->keys += mine.keys;
    c->used += mine.used;
    c->reactivated += mine.reactivated;
    return n;
out:
    PQclear(PQexec(conn, "ROLLBACK"));
    return n;
}

int quota_reset_run(struct bg_ctx *ctx)
{
    char err[512] = "";
    struct reset_counts c = {0, 0, 0};
    bool more = false;
    long n;

    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR; /* outage logged by bg_main_conn */

    int64_t start = ez_mono_us();
    while ((n = one_transaction(conn, &c, err, sizeof(err))) == QUOTA_RESET_BATCH) {
        /* Jobs run on the loop: leave room for ZeroMQ messages and other jobs. */
        if (ez_mono_us() - start > (int64_t)QUOTA_RESET_BUDGET_MS * 1000) {
            more = true;
            break;
        }
    }

    if (c.keys > 0) {
        log_info("event=quota_reset keys=%ld had_usage=%ld reactivated=%ld more=%s", c.keys, c.used,
                 c.reactivated, more ? "true" : "false");
        jobs_kick("outbox"); /* committed batches go out even if a later one failed */
    }
    if (more)
        jobs_kick("quota_reset");
    if (n < 0) {
        db_check(&ctx->main_db);
        return job_fail(ctx, "quota_reset: %s", err);
    }
    return EZ_OK;
}
