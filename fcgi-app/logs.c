/* Request-log queries on the log DB: /admin/logs (list, purge), /admin/logs/stats, /v1/logs*. */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "log.h"
#include "logrec.h"
#include "resource.h"
#include "wctx.h"

#define LOGS_LIMIT_DEFAULT 50
#define LOGS_LIMIT_MAX 1000
/* Most groups /stats returns (an hourly breakdown of a year is 8,760). */
#define STATS_GROUPS_MAX 10000
/* DELETE works in batches of this many rows, each its own transaction... */
#define DELETE_BATCH 5000
/* ...and answers after this long even if older rows remain ("complete": false). */
#define DELETE_BUDGET_MS 20000
#define MAX_PARAMS 24

/*
 * Errors, for "errors" in the stats: an HTTP status of 400 or more, or a
 * non-empty error text (a stream cut short can end with 200 and an error).
 */
#define ERROR_SQL "(status_code >= 400 OR coalesce(error, '') <> '')"
/* created_at and received_at as text for json_time(): exact microseconds, UTC. */
#define TIME_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"

/* A WHERE clause and its parameters ($1...), built from the query string. */
struct logq {
    buf_t where;
    char *params[MAX_PARAMS];
    int n;
};

static void logq_init(struct logq *q)
{
    memset(q, 0, sizeof(*q));
    buf_init(&q->where);
    buf_puts(&q->where, " WHERE true");
}

static void logq_free(struct logq *q)
{
    for (int i = 0; i < q->n; i++)
        free(q->params[i]);
    buf_free(&q->where);
}

/* Adds "AND <col> <op> $n<cast>" with value (copied). */
static void logq_add(struct logq *q, const char *col, const char *op, const char *cast,
                     const char *value)
{
    q->params[q->n] = ez_strdup(value);
    q->n++;
    buf_printf(&q->where, " AND %s %s $%d%s", col, op, q->n, cast);
}

enum lf_kind { LF_ID, LF_TEXT, LF_STATUS };

/* Equality filters of API.md: query name = column. */
static const struct {
    const char *name;
    enum lf_kind kind;
} eq_filters[] = {
    {"master_id", LF_ID},       {"key_id", LF_ID},  {"provider_group_id", LF_ID},
    {"namespace", LF_TEXT},     {"model", LF_TEXT}, {"request_id", LF_TEXT},
    {"status_code", LF_STATUS},
};

/* Parses a ?since/?until/?before time into a timestamptz literal. Answers 400 itself. */
static int query_time(struct req *r, const char *name, char *out, size_t outlen, bool *given)
{
    const char *v = req_query(r, name);
    *given = v && *v;
    if (!*given)
        return EZ_OK;
    int64_t us;
    if (logrec_parse_time(v, &us) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", name,
                           "%s must be an RFC 3339 time or unix seconds", name);
    logrec_pg_time(us, out, outlen);
    return EZ_OK;
}

/*
 * The filters shared by the list and the stats. scope_master > 0 (tenant
 * API) restricts to that master and ignores a master_id filter. Answers 400
 * itself and returns -1 on a bad value.
 */
static int build_filters(struct req *r, int64_t scope_master, struct logq *q)
{
    char num[24];
    if (scope_master > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)scope_master);
        logq_add(q, "master_id", "=", "::bigint", num);
    }
    for (size_t i = 0; i < EZ_ARRAY_LEN(eq_filters); i++) {
        const char *name = eq_filters[i].name;
        const char *v = req_query(r, name);
        if (v == NULL || *v == '\0')
            continue;
        if (scope_master > 0 && strcmp(name, "master_id") == 0)
            continue; /* a tenant sees only its own logs, whatever it asks */
        int64_t iv;
        switch (eq_filters[i].kind) {
        case LF_ID:
            if (ez_parse_int64(v, 0, INT64_MAX, &iv) != EZ_OK)
                return reply_error(r, 400, "invalid_argument", name,
                                   "%s must be a non-negative integer", name);
            logq_add(q, name, "=", "::bigint", v);
            break;
        case LF_STATUS:
            if (ez_parse_int64(v, 100, 599, &iv) != EZ_OK)
                return reply_error(r, 400, "invalid_argument", name,
                                   "%s must be an integer between 100 and 599", name);
            logq_add(q, name, "=", "::integer", v);
            break;
        case LF_TEXT:
            logq_add(q, name, "=", "::text", v);
            break;
        }
    }
    const char *sc = req_query(r, "status_class");
    if (sc && *sc) {
        if (strlen(sc) != 3 || sc[0] < '1' || sc[0] > '5' || strcmp(sc + 1, "xx") != 0)
            return reply_error(r, 400, "invalid_argument", "status_class",
                               "status_class must be one of 1xx, 2xx, 3xx, 4xx, 5xx");
        int lo = (sc[0] - '0') * 100;
        snprintf(num, sizeof(num), "%d", lo);
        logq_add(q, "status_code", ">=", "::integer", num);
        snprintf(num, sizeof(num), "%d", lo + 99);
        logq_add(q, "status_code", "<=", "::integer", num);
    }
    char t[48];
    bool given;
    if (query_time(r, "since", t, sizeof(t), &given) != EZ_OK)
        return EZ_ERR;
    if (given)
        logq_add(q, "created_at", ">=", "::timestamptz", t);
    if (query_time(r, "until", t, sizeof(t), &given) != EZ_OK)
        return EZ_ERR;
    if (given)
        logq_add(q, "created_at", "<", "::timestamptz", t);
    return EZ_OK;
}

/* The log DB connection, or NULL after answering 503. */
static PGconn *log_db(struct req *r)
{
    PGconn *c = db_get(&r->w->log_db);
    if (c == NULL)
        reply_error(r, 503, "unavailable", NULL, "log database unavailable");
    return c;
}

/* "2026-01-03T09:07:57.120000" (TIME_SQL) -> "2026-01-03T09:07:57.12Z"; "" -> null. */
static cJSON *json_time(const char *v)
{
    char out[48];
    snprintf(out, sizeof(out) - 1, "%s", v);
    if (strchr(out, '.')) {
        size_t n = strlen(out);
        while (n > 0 && out[n - 1] == '0')
            out[--n] = '\0';
        if (n > 0 && out[n - 1] == '.')
            out[--n] = '\0';
    }
    size_t len = strlen(out);
    snprintf(out + len, sizeof(out) - len, "Z");
    return cJSON_CreateString(out);
}

/* ---- list ---- */

enum col_kind { C_NUM, C_TEXT, C_BOOL, C_TIME };

/* The columns of a rendered log row: SQL expression, JSON name, kind. */
static const struct {
    const char *sql;
    const char *name;
    enum col_kind kind;
} list_cols[] = {
    {"id", "id", C_NUM},
    {"request_id", "request_id", C_TEXT},
    {TIME_SQL("created_at"), "created_at", C_TIME},
    {"master_id", "master_id", C_NUM},
    {"key_id", "key_id", C_NUM},
    {"namespace", "namespace", C_TEXT},
    {"model", "model", C_TEXT},
    {"upstream_model", "upstream_model", C_TEXT},
    {"provider_group_id", "provider_group_id", C_NUM},
    {"api_key_id", "api_key_id", C_NUM},
    {"provider_type", "provider_type", C_TEXT},
    {"status_code", "status_code", C_NUM},
    {"error", "error", C_TEXT},
    {"latency_ms", "latency_ms", C_NUM},
    {"ttfb_ms", "ttfb_ms", C_NUM},
    {"prompt_tokens", "prompt_tokens", C_NUM},
    {"completion_tokens", "completion_tokens", C_NUM},
    {"total_tokens", "total_tokens", C_NUM},
    {"stream", "stream", C_BOOL},
    {"client_ip", "client_ip", C_TEXT},
    {"user_agent", "user_agent", C_TEXT},
    {TIME_SQL("received_at"), "received_at", C_TIME},
};

static cJSON *render_value(PGresult *res, int row, int col, enum col_kind kind)
{
    if (PQgetisnull(res, row, col))
        return cJSON_CreateNull();
    const char *v = PQgetvalue(res, row, col);
    switch (kind) {
    case C_NUM:
        return cJSON_CreateNumber(strtod(v, NULL));
    case C_TEXT:
        return cJSON_CreateString(v);
    case C_BOOL:
        return cJSON_CreateBool(v[0] == 't');
    case C_TIME:
        return json_time(v);
    }
    return cJSON_CreateNull();
}

static int logs_list_scoped(struct req *r, int64_t scope_master)
{
    struct logq q;
    buf_t sql;
    PGresult *res = NULL;
    cJSON *out = NULL;
    int64_t limit = LOGS_LIMIT_DEFAULT, before = 0;
    int rc = EZ_ERR;
    logq_init(&q);
    buf_init(&sql);

    const char *v = req_query(r, "limit");
    if (v && *v && ez_parse_int64(v, 1, LOGS_LIMIT_MAX, &limit) != EZ_OK) {
        reply_error(r, 400, "invalid_argument", "limit", "limit must be 1..%d", LOGS_LIMIT_MAX);
        goto out;
    }
    v = req_query(r, "before_id");
    if (v && *v && ez_parse_int64(v, 1, INT64_MAX, &before) != EZ_OK) {
        reply_error(r, 400, "invalid_argument", "before_id",
                    "before_id must be a positive integer");
        goto out;
    }
    if (build_filters(r, scope_master, &q) != EZ_OK)
        goto out;
    if (before > 0) {
        char num[24];
        snprintf(num, sizeof(num), "%lld", (long long)before);
        logq_add(&q, "id", "<", "::bigint", num);
    }
    PGconn *c = log_db(r);
    if (c == NULL)
        goto out;
    buf_puts(&sql, "SELECT ");
    for (size_t i = 0; i < EZ_ARRAY_LEN(list_cols); i++)
        buf_printf(&sql, "%s%s", i ? ", " : "", list_cols[i].sql);
    /* One row more than asked tells whether there is a next page. */
    buf_printf(&sql, " FROM request_logs%s ORDER BY id DESC LIMIT %lld", q.where.data,
               (long long)limit + 1);
    res = PQexecParams(c, sql.data, q.n, NULL, (const char *const *)q.params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=logs_list_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->log_db);
        reply_error(r, 503, "unavailable", NULL, "log database error");
        goto out;
    }
    out = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    int rows = PQntuples(res);
    int shown = rows > limit ? (int)limit : rows;
    for (int i = 0; i < shown; i++) {
        cJSON *it = cJSON_CreateObject();
        for (size_t k = 0; k < EZ_ARRAY_LEN(list_cols); k++)
            cJSON_AddItemToObject(it, list_cols[k].name,
                                  render_value(res, i, (int)k, list_cols[k].kind));
        cJSON_AddItemToArray(items, it);
    }
    if (rows > limit)
        cJSON_AddNumberToObject(out, "next_before_id", strtod(PQgetvalue(res, shown - 1, 0), NULL));
    else
        cJSON_AddNullToObject(out, "next_before_id");
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(out);
    buf_free(&sql);
    logq_free(&q);
    return rc;
}

/* ---- stats ---- */

/*
 * group_by values. expr is the grouping key, computed in the scan; out
 * renders it (k) as answered; order sorts the items after the totals row.
 * hour and day group on the timestamp (8-byte sort keys) and are rendered
 * as RFC 3339 texts only for the few resulting groups. "|| ''" and "+ 0"
 * keep the planner from reading the window through the (model|master_id|
 * key_id, created_at) indexes just to get the rows in key order: on a large
 * window that is one random heap access per row (about 1 million buffers
 * for 5 million rows), far slower than reading the created_at range and
 * sorting (docs/log-pipeline.md, "The stats query"). The filters still use
 * the plain columns, and so their indexes.
 */
static const struct {
    const char *name;
    const char *expr;
    const char *out;
    const char *order;
} group_keys[] = {
    {"model", "model || ''", "k", "3 DESC, k NULLS LAST"},
    {"master", "master_id + 0", "k", "3 DESC, k NULLS LAST"},
    {"key", "key_id + 0", "k", "3 DESC, k NULLS LAST"},
    {"provider_group", "provider_group_id", "k", "3 DESC, k NULLS LAST"},
    {"status_code", "status_code", "k", "3 DESC, k NULLS LAST"},
    {"hour", "date_trunc('hour', created_at AT TIME ZONE 'UTC')",
     "to_char(k, 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')", "k"},
    {"day", "date_trunc('day', created_at AT TIME ZONE 'UTC')",
     "to_char(k, 'YYYY-MM-DD\"T\"00:00:00\"Z\"')", "k"},
};

/* Columns 2.. of a stats row, in order. */
static const char *const stat_names[] = {"requests",          "errors",        "prompt_tokens",
                                         "completion_tokens", "total_tokens",  "avg_latency_ms",
                                         "p50_latency_ms",    "p95_latency_ms"};

/* A stats row as JSON; key (owned, may be NULL) goes first, as in API.md. */
static cJSON *render_stats(PGresult *res, int row, cJSON *key)
{
    cJSON *o = cJSON_CreateObject();
    if (key)
        cJSON_AddItemToObject(o, "key", key);
    for (size_t i = 0; i < EZ_ARRAY_LEN(stat_names); i++)
        cJSON_AddItemToObject(o, stat_names[i], render_value(res, row, (int)i + 2, C_NUM));
    return o;
}

static cJSON *zero_totals(void)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < EZ_ARRAY_LEN(stat_names); i++) {
        if (i < 5)
            cJSON_AddNumberToObject(o, stat_names[i], 0);
        else
            cJSON_AddNullToObject(o, stat_names[i]);
    }
    return o;
}

static int logs_stats_scoped(struct req *r, int64_t scope_master)
{
    struct logq q;
    buf_t sql;
    PGresult *res = NULL;
    cJSON *out = NULL;
    int rc = EZ_ERR;
    int gk = -1;
    logq_init(&q);
    buf_init(&sql);

    const char *g = req_query(r, "group_by");
    if (g && *g) {
        for (size_t i = 0; i < EZ_ARRAY_LEN(group_keys); i++)
            if (strcmp(g, group_keys[i].name) == 0)
                gk = (int)i;
        if (gk < 0) {
            reply_error(r, 400, "invalid_argument", "group_by",
                        "group_by must be one of model, master, key, provider_group, "
                        "status_code, hour, day");
            goto out;
        }
    }
    if (build_filters(r, scope_master, &q) != EZ_OK)
        goto out;
    PGconn *c = log_db(r);
    if (c == NULL)
        goto out;
    /*
     * One scan of the window, read by its created_at range (see group_keys),
     * sorted once by key: GROUPING SETS ((k), ()) gives the groups and the
     * totals row (is_total = 1, first). Percentiles are continuous
     * (percentile_cont, both from one sort per group) over the rows that
     * have a latency. The scan hands on only what the aggregates need, the
     * error test already applied, so that the sort of the rows stays narrow.
     */
    buf_printf(&sql,
               "SELECT %s AS is_total, %s, count(*), count(*) FILTER (WHERE err), "
               "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
               "coalesce(sum(total_tokens), 0), avg(latency_ms)::float8, "
               "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), "
               "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) "
               "FROM (SELECT %s AS k, " ERROR_SQL " AS err, prompt_tokens, completion_tokens, "
               "total_tokens, latency_ms FROM request_logs%s) s ",
               gk >= 0 ? "GROUPING(k)" : "1", gk >= 0 ? group_keys[gk].out : "NULL",
               gk >= 0 ? group_keys[gk].expr : "NULL", q.where.data);
    if (gk >= 0) {
        buf_printf(&sql, "GROUP BY GROUPING SETS ((k), ()) ORDER BY 1 DESC, %s LIMIT %d",
                   group_keys[gk].order, STATS_GROUPS_MAX + 1);
    }
    res = PQexecParams(c, sql.data, q.n, NULL, (const char *const *)q.params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=logs_stats_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->log_db);
        reply_error(r, 503, "unavailable", NULL, "log database error");
        goto out;
    }
    out = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    cJSON *totals = NULL;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), "1") == 0) {
            if (totals == NULL)
                totals = render_stats(res, i, NULL);
            continue;
        }
        /* Keys are strings whatever the grouping ("1001", "200", "gpt-4o"); null for no value. */
        cJSON *it = render_stats(res, i, render_value(res, i, 1, C_TEXT));
        cJSON_AddItemToArray(items, it);
    }
    cJSON_AddItemToObject(out, "totals", totals ? totals : zero_totals());
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(out);
    buf_free(&sql);
    logq_free(&q);
    return rc;
}

/* ---- handlers ---- */

int logs_list(struct req *r)
{
    return logs_list_scoped(r, 0);
}

int logs_stats(struct req *r)
{
    return logs_stats_scoped(r, 0);
}

int tenant_logs_list(struct req *r)
{
    return logs_list_scoped(r, r->master_id);
}

int tenant_logs_stats(struct req *r)
{
    return logs_stats_scoped(r, r->master_id);
}

/*
 * DELETE /admin/logs?before=<time>: purges records created before the
 * time, DELETE_BATCH rows per transaction so that no lock or WAL burst is
 * huge, for at most DELETE_BUDGET_MS ("complete": false when rows remain;
 * the call can simply be repeated). The operation log row (main DB) is
 * written after the purge, with the count.
 */
int logs_delete(struct req *r)
{
    char t[48];
    bool given;
    PGconn *mc = NULL;
    PGresult *res = NULL;
    cJSON *changes = NULL, *out = NULL;
    int rc = EZ_ERR;
    if (query_time(r, "before", t, sizeof(t), &given) != EZ_OK)
        return EZ_ERR;
    if (!given)
        return reply_error(r, 400, "invalid_argument", "before",
                           "before (RFC 3339 time or unix seconds) is required");
    /* The audit goes to the main DB: make sure it is there before deleting anything. */
    mc = tx_begin(r);
    if (mc == NULL)
        return EZ_ERR;
    PGconn *c = log_db(r);
    if (c == NULL)
        goto out;

    long long deleted = 0;
    bool complete = false;
    int64_t start = ez_mono_us() / 1000;
    const char *params[1] = {t};
    char sql[256];
    snprintf(sql, sizeof(sql),
             "DELETE FROM request_logs WHERE id IN (SELECT id FROM request_logs "
             "WHERE created_at < $1::timestamptz ORDER BY id LIMIT %d)",
             DELETE_BATCH);
    for (;;) {
        res = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            log_error("event=logs_delete_failed deleted=%lld error=\"%s\"", deleted,
                      PQresultErrorMessage(res));
            db_check(&r->w->log_db);
            reply_error(r, 503, "unavailable", NULL, "log database error");
            goto out;
        }
        long long n = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        res = NULL;
        deleted += n;
        if (n < DELETE_BATCH) {
            complete = true;
            break;
        }
        if (ez_mono_us() / 1000 - start >= DELETE_BUDGET_MS)
            break;
    }
    log_info("event=logs_deleted before=\"%s\" deleted=%lld complete=%s", t, deleted,
             complete ? "true" : "false");

    changes = cJSON_CreateObject();
    cJSON_AddStringToObject(changes, "before", req_query(r, "before"));
    cJSON_AddNumberToObject(changes, "deleted", (double)deleted);
    struct rctx x = {.r = r, .c = mc, .action = "delete"};
    if (audit_write(&x, "delete", "request_logs", 0, changes) != EZ_OK)
        goto out; /* answered */
    if (tx_commit(r, mc) != EZ_OK) {
        mc = NULL;
        goto out; /* answered */
    }
    mc = NULL;
    out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "deleted", (double)deleted);
    cJSON_AddBoolToObject(out, "complete", complete);
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    if (mc)
        tx_rollback(r, mc);
    PQclear(res);
    cJSON_Delete(changes);
    cJSON_Delete(out);
    return rc;
}
