/* GET /health (real checks of every dependency) and GET /api/status/test. */
#include "handlers.h"

#include <string.h>
#include "db.h"
#include "log.h"
#include "version.h"
#include "wctx.h"

/* The background is "silent" when its heartbeat is older than this. */
#define BACKGROUND_SILENT_SECS 30

/*
 * Main DB check, and the background's heartbeat read in the same round trip.
 * Returns 0 when PostgreSQL answered; *bg_age is the heartbeat's age in
 * seconds, or -1 when there is none.
 */
static int check_main_db(struct wctx *w, long long *bg_age)
{
    *bg_age = -1;
    PGconn *c = db_get(&w->db);
    if (c == NULL)
        return EZ_ERR;
    PGresult *res = PQexecParams(
        c,
        "SELECT extract(epoch FROM now() - max(beat_at))::bigint FROM service_heartbeats "
        "WHERE name = 'background'",
        0, NULL, NULL, NULL, NULL, 0);
    int rc = EZ_ERR;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("event=health_pg_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&w->db);
        goto out;
    }
    if (!PQgetisnull(res, 0, 0))
        *bg_age = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    rc = EZ_OK;
out:
    PQclear(res);
    return rc;
}

static int check_log_db(struct wctx *w)
{
    PGconn *c = db_get(&w->log_db);
    if (c == NULL)
        return EZ_ERR;
    PGresult *res = PQexecParams(c, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? EZ_OK : EZ_ERR;
    if (rc != EZ_OK) {
        log_warn("event=health_log_db_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&w->log_db);
    }
    PQclear(res);
    return rc;
}

static int check_redis(struct wctx *w)
{
    redisContext *c = rds_get(&w->redis);
    if (c == NULL)
        return EZ_ERR;
    redisReply *reply = redisCommand(c, "PING");
    int rc = reply && reply->type == REDIS_REPLY_STATUS ? EZ_OK : EZ_ERR;
    if (reply)
        freeReplyObject(reply);
    if (rc != EZ_OK)
        rds_check(&w->redis);
    return rc;
}

int health_get(struct req *r)
{
    long long bg_age;
    bool pg_ok = check_main_db(r->w, &bg_age) == EZ_OK;
    bool log_ok = check_log_db(r->w) == EZ_OK;
    bool redis_ok = check_redis(r->w) == EZ_OK;
    bool bg_ok = pg_ok && bg_age >= 0 && bg_age <= BACKGROUND_SILENT_SECS;

    cJSON *root = cJSON_CreateObject();
    const char *status = !pg_ok || !log_ok       ? "unavailable"
                         : (!redis_ok || !bg_ok) ? "degraded"
                                                 : "ok";
    cJSON_AddStringToObject(root, "status", status);
    cJSON *checks = cJSON_AddObjectToObject(root, "checks");
    cJSON_AddStringToObject(checks, "postgres", pg_ok ? "ok" : "down");
    cJSON_AddStringToObject(checks, "redis", redis_ok ? "ok" : "down");
    cJSON_AddStringToObject(checks, "log_db", log_ok ? "ok" : "down");
    cJSON_AddStringToObject(checks, "background",
                            bg_ok        ? "ok"
                            : !pg_ok     ? "unknown"
                            : bg_age < 0 ? "missing"
                                         : "silent");
    reply_json(r, pg_ok && log_ok ? 200 : 503, root);
    cJSON_Delete(root);
    return EZ_OK;
}

int status_test_get(struct req *r)
{
    char now[40];
    ez_format_time(ez_now_unix(), now, sizeof(now));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", "ok");
    cJSON_AddStringToObject(root, "service", "ez-api");
    cJSON_AddStringToObject(root, "version", EZ_VERSION);
    cJSON_AddStringToObject(root, "time", now);
    reply_json(r, 200, root);
    cJSON_Delete(root);
    return EZ_OK;
}
