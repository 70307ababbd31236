/* Heartbeat job: tells the workers' /health that the background is alive (service_heartbeats). */
#include <stdio.h>
#include <unistd.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "version.h"

/* The worker's /health calls the background silent when beat_at is more than 30 s old. */
#define HEARTBEAT_MS 5000

static const char upsert_sql[] =
    "INSERT INTO service_heartbeats (name, pid, host, version, beat_at) "
    "VALUES ($1, $2, $3, $4, now()) "
    "ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, "
    "version = EXCLUDED.version, beat_at = EXCLUDED.beat_at";

int64_t heartbeat_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return HEARTBEAT_MS;
}

/*
 * One upsert of the 'background' row. PostgreSQL unreachable: bg_main_conn
 * has logged the outage once, the job just fails quietly and tries again in
 * 5 s. A failed statement is reported through job_fail.
 */
int heartbeat_run(struct bg_ctx *ctx)
{
    PGresult *res = NULL;
    char pid[24];
    int rc = EZ_ERR;

    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR;

    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    const char *params[4] = {"background", pid, ctx->hostname, EZ_VERSION};
    res = PQexecParams(conn, upsert_sql, 4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = job_fail(ctx, "heartbeat upsert failed: %s", PQresultErrorMessage(res));
        db_check(&ctx->main_db);
        goto out;
    }
    rc = EZ_OK;
out:
    PQclear(res);
    return rc;
}
