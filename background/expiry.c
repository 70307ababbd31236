/*
 * The "expiry" job: state that changes with time alone. Active keys past
 * expires_at become expired (audited as actor "system", action "expire"); a
 * rotated key forgets its previous token once the grace period is over. Each
 * change writes its outbox row in the same transaction, then the outbox job
 * is kicked, so Redis follows within one run.
 */
#include <stdio.h>
#include <stdlib.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "outbox.h"

/* Transaction-level advisory lock: a second ezapi-background skips the run. */
#define EXPIRY_LOCK "7311355660399047785" /* "expiry" */

static const char expire_sql[] =
    "WITH exp AS ("
    "  UPDATE keys SET status = 'expired', updated_at = now() "
    "  WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= now() "
    "  RETURNING id), "
    "ol AS (INSERT INTO operation_logs (actor, action, resource, resource_id, changes) "
    "  SELECT 'system', 'expire', 'keys', id::text, '{\"status\": \"expired\"}'::jsonb FROM exp), "
    "ob AS (INSERT INTO sync_outbox (resource, resource_id, action) "
    "  SELECT 'keys', id, 'upsert' FROM exp) "
    "SELECT count(*) FROM exp";

/*
 * The previous hash goes into the outbox payload: once cleared it cannot be
 * read back, and its auth:token entry must go. The UPDATE re-checks the hash
 * so that a rotation committed meanwhile is left alone.
 */
static const char grace_sql[] =
    "WITH old AS (SELECT id, prev_token_hash FROM keys "
    "  WHERE prev_token_hash IS NOT NULL AND prev_token_expires_at <= now()), "
    "g AS (UPDATE keys k SET prev_token_hash = NULL, prev_token_expires_at = NULL "
    "  FROM old WHERE k.id = old.id AND k.prev_token_hash = old.prev_token_hash "
    "  AND k.prev_token_expires_at <= now() "
    "  RETURNING k.id, old.prev_token_hash AS old_hash), "
    "ob AS (INSERT INTO sync_outbox (resource, resource_id, action, payload) "
    "  SELECT 'keys', id, 'upsert', "
    "  jsonb_build_object('old_token_hashes', jsonb_build_array(old_hash)) FROM g) "
    "SELECT count(*) FROM g";

int64_t expiry_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return EXPIRY_MS;
}

/* Runs sql (no parameters) expecting one count; -1 on error with err set. */
static long run_count(PGconn *conn, const char *what, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    long n = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    else
        snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    return n;
}

int expiry_run(struct bg_ctx *ctx)
{
    char err[512] = "";
    long expired = -1, graced = -1;
    int rc = EZ_ERR;
    PGresult *res = NULL;

    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR; /* outage logged by bg_main_conn */

    res = PQexec(conn, "BEGIN");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, sizeof(err), "BEGIN: %s", PQresultErrorMessage(res));
        PQclear(res);
        db_check(&ctx->main_db);
        return job_fail(ctx, "expiry: %s", err);
    }
    PQclear(res);

    const char *lp[1] = {EXPIRY_LOCK};
    res = PQexecParams(conn, "SELECT pg_try_advisory_xact_lock($1::bigint)", 1, NULL, lp, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof(err), "lock: %s", PQresultErrorMessage(res));
        goto out;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        rc = EZ_OK; /* another instance runs it */
        goto out;
    }
    PQclear(res);
    res = NULL;

    if ((expired = run_count(conn, "expire keys", expire_sql, err, sizeof(err))) < 0 ||
        (graced = run_count(conn, "end grace periods", grace_sql, err, sizeof(err))) < 0)
        goto out;
    res = PQexec(conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, sizeof(err), "COMMIT: %s", PQresultErrorMessage(res));
        PQclear(res);
        db_check(&ctx->main_db);
        return job_fail(ctx, "expiry: %s", err);
    }
    PQclear(res);
    if (expired > 0 || graced > 0) {
        log_info("event=keys_expired expired=%ld grace_ended=%ld", expired, graced);
        jobs_kick("outbox");
    }
    return EZ_OK;
out:
    PQclear(res);
    res = PQexec(conn, "ROLLBACK");
    PQclear(res);
    if (rc == EZ_OK)
        return EZ_OK;
    db_check(&ctx->main_db);
    return job_fail(ctx, "expiry: %s", err);
}
