/*
 * GET /admin/operation-logs: the audit trail, newest first, with cursor
 * pagination (?limit, ?before_id) and equality filters. since is inclusive,
 * until exclusive: [since, until).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "log.h"
#include "wctx.h"

#define OPLOG_LIMIT_DEFAULT 50
#define OPLOG_LIMIT_MAX 1000
#define OPLOG_FILTER_MAX 256

/* Text filters: query name = column (equality). */
static const char *const text_filters[] = {"actor", "action", "resource", "resource_id"};

/* Parses a time filter into RFC 3339 text for a timestamptz parameter; answers 400 itself. */
static int time_filter(struct req *r, const char *name, char *out, size_t len, bool *present,
                       int64_t *t)
{
    *present = false;
    const char *v = req_query(r, name);
    if (v == NULL || *v == '\0')
        return EZ_OK;
    if (ez_parse_time(v, t) != EZ_OK || *t < 0 || *t > EZ_MAX_UNIX)
        return reply_error(r, 400, "invalid_argument", name,
                           "%s must be an RFC 3339 time or unix seconds", name);
    ez_format_time(*t, out, len);
    *present = true;
    return EZ_OK;
}

static cJSON *render_item(PGresult *res, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)strtoll(PQgetvalue(res, i, 0), NULL, 10));
    static const char *const names[] = {"actor",       "action",     "resource",
                                        "resource_id", "request_id", "client_ip"};
    for (int k = 0; k < 6; k++)
        cJSON_AddStringToObject(o, names[k], PQgetvalue(res, i, 1 + k));
    cJSON *ch = cJSON_Parse(PQgetvalue(res, i, 7));
    cJSON_AddItemToObject(o, "changes", ch ? ch : cJSON_CreateObject());
    char iso[40];
    ez_format_time(strtoll(PQgetvalue(res, i, 8), NULL, 10), iso, sizeof(iso));
    cJSON_AddStringToObject(o, "created_at", iso);
    return o;
}

int operation_logs_list(struct req *r)
{
    int64_t limit = OPLOG_LIMIT_DEFAULT, before = 0, t_since = 0, t_until = 0;
    const char *v = req_query(r, "limit");
    if (v && *v && ez_parse_int64(v, 1, OPLOG_LIMIT_MAX, &limit) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", "limit", "limit must be 1..%d",
                           OPLOG_LIMIT_MAX);
    v = req_query(r, "before_id");
    if (v && *v && ez_parse_int64(v, 1, INT64_MAX, &before) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", "before_id",
                           "before_id must be a positive integer");

    const char *params[8];
    char since[40], until[40], beforetxt[24];
    int n = 0;
    buf_t sql;
    buf_init(&sql);
    buf_puts(&sql, "SELECT id, actor, action, resource, resource_id, request_id, client_ip, "
                   "changes::text, floor(extract(epoch FROM created_at))::bigint "
                   "FROM operation_logs WHERE true");
    for (size_t i = 0; i < EZ_ARRAY_LEN(text_filters); i++) {
        const char *f = text_filters[i];
        v = req_query(r, f);
        if (v == NULL || *v == '\0')
            continue;
        if (strlen(v) > OPLOG_FILTER_MAX || !ez_utf8_valid(v, strlen(v))) {
            buf_free(&sql);
            return reply_error(r, 400, "invalid_argument", f,
                               "%s must be UTF-8 text of at most %d bytes", f, OPLOG_FILTER_MAX);
        }
        params[n++] = v;
        buf_printf(&sql, " AND %s = $%d", f, n);
    }
    bool has_since, has_until;
    if (time_filter(r, "since", since, sizeof(since), &has_since, &t_since) != EZ_OK ||
        time_filter(r, "until", until, sizeof(until), &has_until, &t_until) != EZ_OK) {
        buf_free(&sql);
        return EZ_ERR;
    }
    if (has_since && has_until && t_since > t_until) {
        buf_free(&sql);
        return reply_error(r, 400, "invalid_argument", "since", "since is after until");
    }
    if (has_since) {
        params[n++] = since;
        buf_printf(&sql, " AND created_at >= $%d::timestamptz", n);
    }
    if (has_until) {
        params[n++] = until;
        buf_printf(&sql, " AND created_at < $%d::timestamptz", n);
    }
    if (before > 0) {
        snprintf(beforetxt, sizeof(beforetxt), "%lld", (long long)before);
        params[n++] = beforetxt;
        buf_printf(&sql, " AND id < $%d::bigint", n);
    }
    /* One row more than asked tells whether another page exists. */
    buf_printf(&sql, " ORDER BY id DESC LIMIT %lld", (long long)limit + 1);

    int rc = EZ_ERR;
    PGresult *res = NULL;
    cJSON *out = NULL;
    PGconn *c = db_get(&r->w->db);
    if (c == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        goto out;
    }
    res = PQexecParams(c, sql.data, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=operation_logs_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database error");
        goto out;
    }
    int rows = PQntuples(res);
    bool more = rows > limit;
    if (more)
        rows = (int)limit;
    out = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (int i = 0; i < rows; i++)
        cJSON_AddItemToArray(items, render_item(res, i));
    if (more)
        cJSON_AddNumberToObject(out, "next_before_id",
                                (double)strtoll(PQgetvalue(res, rows - 1, 0), NULL, 10));
    else
        cJSON_AddNullToObject(out, "next_before_id");
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(out);
    buf_free(&sql);
    return rc;
}
