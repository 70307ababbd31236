/*
 * GET /v1/stats: the calling master's keys by status (main DB) and its usage
 * from request_logs (log DB), always filtered by the caller's master_id.
 *
 * Choices where API.md is silent:
 * - "today" starts at 00:00 UTC; "last_7d" and "last_30d" are the rolling
 *   7 x 24 and 30 x 24 hours before now.
 * - errors: an HTTP status of 400 or more, or a non-empty error text (as
 *   /v1/logs/stats counts them); tokens: the sum of total_tokens.
 * - by_model covers the last 30 days, by public model (a record without a
 *   model counts under ""), most requests first, at most BY_MODEL_MAX rows.
 * - keys: "total" and one count per status (active, disabled, expired,
 *   exhausted), zeros included.
 * - The log DB being unreachable answers 503: without it there is little to show.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "log.h"
#include "wctx.h"

#define BY_MODEL_MAX "100"
#define ERROR_SQL "(status_code >= 400 OR coalesce(error, '') <> '')"

static const char keys_sql[] =
    "SELECT count(*), count(*) FILTER (WHERE status = 'active'), "
    "count(*) FILTER (WHERE status = 'disabled'), count(*) FILTER (WHERE status = 'expired'), "
    "count(*) FILTER (WHERE status = 'exhausted') FROM keys WHERE master_id = $1";

/* One scan of the last 30 days; the shorter windows are filters of it. */
static const char windows_sql[] =
    "SELECT count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') "
    "                                             AT TIME ZONE 'UTC'), "
    "  count(*) FILTER (WHERE " ERROR_SQL " AND created_at >= "
    "                   date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), "
    "  coalesce(sum(total_tokens) FILTER (WHERE created_at >= "
    "           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0), "
    "  count(*) FILTER (WHERE created_at >= now() - interval '7 days'), "
    "  count(*) FILTER (WHERE " ERROR_SQL " AND created_at >= now() - interval '7 days'), "
    "  coalesce(sum(total_tokens) FILTER (WHERE created_at >= now() - interval '7 days'), 0), "
    "  count(*), count(*) FILTER (WHERE " ERROR_SQL "), coalesce(sum(total_tokens), 0) "
    "FROM request_logs WHERE master_id = $1 AND created_at >= now() - interval '30 days'";

static const char by_model_sql[] =
    "SELECT coalesce(model, ''), count(*), count(*) FILTER (WHERE " ERROR_SQL "), "
    "coalesce(sum(total_tokens), 0) FROM request_logs "
    "WHERE master_id = $1 AND created_at >= now() - interval '30 days' "
    "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT " BY_MODEL_MAX;

static double num(const PGresult *res, int row, int col)
{
    return (double)strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* {"requests", "errors", "tokens"} from columns col..col+2 of row. */
static cJSON *usage(const PGresult *res, int row, int col)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests", num(res, row, col));
    cJSON_AddNumberToObject(o, "errors", num(res, row, col + 1));
    cJSON_AddNumberToObject(o, "tokens", num(res, row, col + 2));
    return o;
}

/* Runs a one-parameter query; NULL after logging and answering 503. */
static PGresult *run(struct req *r, struct ez_db *db, const char *what, const char *sql,
                     const char *mid)
{
    PGconn *c = db_get(db);
    if (c == NULL) {
        reply_error(r, 503, "unavailable", NULL, "%s unavailable",
                    db == &r->w->log_db ? "log database" : "database");
        return NULL;
    }
    const char *params[1] = {mid};
    PGresult *res = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return res;
    log_error("event=tenant_stats_failed query=%s error=\"%s\"", what, PQresultErrorMessage(res));
    PQclear(res);
    db_check(db);
    reply_error(r, 503, "unavailable", NULL, "database error");
    return NULL;
}

int tenant_stats(struct req *r)
{
    PGresult *keys = NULL, *win = NULL, *models = NULL;
    cJSON *out = NULL;
    int rc = EZ_ERR;
    char mid[24];
    snprintf(mid, sizeof(mid), "%lld", (long long)r->master_id);

    if (!(keys = run(r, &r->w->db, "keys", keys_sql, mid)) ||
        !(win = run(r, &r->w->log_db, "windows", windows_sql, mid)) ||
        !(models = run(r, &r->w->log_db, "by_model", by_model_sql, mid)))
        goto out;

    out = cJSON_CreateObject();
    cJSON *k = cJSON_AddObjectToObject(out, "keys");
    static const char *const key_names[] = {"total", "active", "disabled", "expired", "exhausted"};
    for (int i = 0; i < 5; i++)
        cJSON_AddNumberToObject(k, key_names[i], num(keys, 0, i));
    cJSON_AddItemToObject(out, "today", usage(win, 0, 0));
    cJSON_AddItemToObject(out, "last_7d", usage(win, 0, 3));
    cJSON_AddItemToObject(out, "last_30d", usage(win, 0, 6));
    cJSON *by = cJSON_AddArrayToObject(out, "by_model");
    for (int i = 0; i < PQntuples(models); i++) {
        cJSON *m = usage(models, i, 1);
        cJSON_AddStringToObject(m, "model", PQgetvalue(models, i, 0));
        cJSON_AddItemToArray(by, m);
    }
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    PQclear(keys);
    PQclear(win);
    PQclear(models);
    cJSON_Delete(out);
    return rc;
}
