/*
 * POST /internal/stats/flush: usage deltas from the data plane, applied once
 * per flush_id in one transaction with atomic increments. A key whose
 * quota_used reaches its quota_limit becomes `exhausted` (operation log by
 * actor system, outbox row so the snapshot follows).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

#define FLUSH_ID_MAX 128
#define FLUSH_ENTRIES_MAX 10000
#define TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z */

/* The arrays of one list, as PostgreSQL array literals ("{1,2,NULL}"). */
struct cols {
    buf_t id, requests, tokens, quota, last;
    int n;
};

static void cols_init(struct cols *c)
{
    buf_init(&c->id);
    buf_init(&c->requests);
    buf_init(&c->tokens);
    buf_init(&c->quota);
    buf_init(&c->last);
    c->n = 0;
}

static void cols_free(struct cols *c)
{
    buf_free(&c->id);
    buf_free(&c->requests);
    buf_free(&c->tokens);
    buf_free(&c->quota);
    buf_free(&c->last);
}

static void col_add(buf_t *b, bool first, const char *text)
{
    buf_puts(b, first ? "{" : ",");
    buf_puts(b, text);
}

static void cols_close(struct cols *c)
{
    buf_t *all[] = {&c->id, &c->requests, &c->tokens, &c->quota, &c->last};
    for (size_t i = 0; i < EZ_ARRAY_LEN(all); i++)
        buf_puts(all[i], c->n ? "}" : "{}");
}

/* A non-negative integer field (absent = 0). Answers 400 itself. */
static int count_field(struct req *r, const cJSON *e, const char *list, int idx, const char *name,
                       int64_t min, bool required, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, name);
    *out = 0;
    char field[64];
    snprintf(field, sizeof(field), "%s[%d].%s", list, idx, name);
    if (v == NULL) {
        if (required)
            return reply_error(r, 400, "invalid_argument", field, "%s is required", field);
        return EZ_OK;
    }
    if (!json_int_in(v, min, JSON_MAX_SAFE_INT, out))
        return reply_error(r, 400, "invalid_argument", field, "%s must be an integer in %lld..%lld",
                           field, (long long)min, (long long)JSON_MAX_SAFE_INT);
    return EZ_OK;
}

/* last_accessed_at: absent/null = none, unix seconds (number or string) or RFC 3339. */
static int time_field(struct req *r, const cJSON *e, const char *list, int idx, int64_t *out,
                      bool *present)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "last_accessed_at");
    *present = false;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    bool ok = cJSON_IsString(v) ? ez_parse_time(v->valuestring, out) == EZ_OK
                                : json_int_in(v, 0, TIME_MAX, out);
    if (!ok || *out < 0 || *out > TIME_MAX) {
        char field[64];
        snprintf(field, sizeof(field), "%s[%d].last_accessed_at", list, idx);
        return reply_error(r, 400, "invalid_argument", field,
                           "%s must be unix seconds or an RFC 3339 time", field);
    }
    *present = true;
    return EZ_OK;
}

/* Validates body[list] (absent/null = empty) into c. keys carry quota and last access. */
static int parse_list(struct req *r, const cJSON *body, const char *list, bool keys, struct cols *c)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, list);
    if (arr == NULL || cJSON_IsNull(arr)) {
        cols_close(c);
        return EZ_OK;
    }
    if (!cJSON_IsArray(arr))
        return reply_error(r, 400, "invalid_argument", list, "%s must be a list", list);
    if (cJSON_GetArraySize(arr) > FLUSH_ENTRIES_MAX)
        return reply_error(r, 400, "invalid_argument", list, "%s has more than %d entries", list,
                           FLUSH_ENTRIES_MAX);
    const char *idname = keys ? "key_id" : "master_id";
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, arr)
    {
        if (!cJSON_IsObject(e)) {
            char field[48];
            snprintf(field, sizeof(field), "%s[%d]", list, i);
            return reply_error(r, 400, "invalid_argument", field, "%s must be an object", field);
        }
        int64_t id, req_n, tok, quota = 0, last = 0;
        bool has_last = false;
        if (count_field(r, e, list, i, idname, 1, true, &id) != EZ_OK ||
            count_field(r, e, list, i, "requests", 0, false, &req_n) != EZ_OK ||
            count_field(r, e, list, i, "tokens", 0, false, &tok) != EZ_OK)
            return EZ_ERR;
        if (keys && (count_field(r, e, list, i, "quota_used", 0, false, &quota) != EZ_OK ||
                     time_field(r, e, list, i, &last, &has_last) != EZ_OK))
            return EZ_ERR;
        char t[24];
        bool first = c->n == 0;
        snprintf(t, sizeof(t), "%lld", (long long)id);
        col_add(&c->id, first, t);
        snprintf(t, sizeof(t), "%lld", (long long)req_n);
        col_add(&c->requests, first, t);
        snprintf(t, sizeof(t), "%lld", (long long)tok);
        col_add(&c->tokens, first, t);
        snprintf(t, sizeof(t), "%lld", (long long)quota);
        col_add(&c->quota, first, t);
        if (has_last)
            snprintf(t, sizeof(t), "%lld", (long long)last);
        col_add(&c->last, first, has_last ? t : "NULL");
        c->n++;
        i++;
    }
    cols_close(c);
    return EZ_OK;
}

static int parse_flush_id(struct req *r, const cJSON *body, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "flush_id");
    if (!cJSON_IsString(v))
        return reply_error(r, 400, "invalid_argument", "flush_id", "flush_id must be a string");
    size_t n = strlen(v->valuestring);
    if (n < 1 || n > FLUSH_ID_MAX)
        return reply_error(r, 400, "invalid_argument", "flush_id",
                           "flush_id must be 1..%d characters", FLUSH_ID_MAX);
    for (const unsigned char *p = (const unsigned char *)v->valuestring; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return reply_error(r, 400, "invalid_argument", "flush_id",
                               "flush_id may not contain control characters");
    *out = v->valuestring;
    return EZ_OK;
}

/*
 * Locks the rows of table named in ids in id order, so that concurrent
 * flushes touching the same rows queue up instead of deadlocking.
 */
static int lock_rows(struct rctx *x, const char *table, const char *ids)
{
    char sql[128];
    snprintf(sql, sizeof(sql),
             "SELECT 1 FROM %s WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE", table);
    const char *params[1] = {ids};
    PGresult *res = db_exec(x, sql, 1, params);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    return EZ_OK;
}

/* Runs a statement answering one bigint; -1 after answering the error. */
static int64_t exec_count(struct rctx *x, const char *sql, int n, const char *const *params)
{
    PGresult *res = db_exec(x, sql, n, params);
    if (res == NULL)
        return -1;
    int64_t v = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return v;
}

/* Key deltas: duplicates of one key_id in a flush add up; last access never goes back. */
static const char *const keys_update_sql =
    "WITH d AS (SELECT id, sum(r) AS r, sum(t) AS t, sum(q) AS q, max(a) AS a "
    "           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], "
    "                       $5::bigint[]) AS u(id, r, t, q, a) GROUP BY id), "
    "     u AS (UPDATE keys k SET request_count = k.request_count + d.r, "
    "                  token_count = k.token_count + d.t, "
    "                  quota_used = k.quota_used + d.q, "
    "                  last_accessed_at = CASE WHEN d.a IS NULL THEN k.last_accessed_at "
    "                      ELSE greatest(k.last_accessed_at, "
    "                                    least(to_timestamp(d.a), now())) END "
    "           FROM d WHERE k.id = d.id RETURNING k.id) "
    "SELECT (SELECT count(*) FROM d) - (SELECT count(*) FROM u)";

/*
 * active -> exhausted for the flushed keys whose quota is used up. The
 * operation-log row mirrors audit_write (actor "system": an internal call).
 */
static const char *const keys_exhaust_sql =
    "WITH e AS (UPDATE keys SET status = 'exhausted', updated_at = now() "
    "           WHERE id = ANY($1::bigint[]) AND status = 'active' AND quota_limit >= 0 "
    "             AND quota_used >= quota_limit "
    "           RETURNING id, quota_used, quota_limit), "
    "     a AS (INSERT INTO operation_logs (actor, action, resource, resource_id, request_id, "
    "                                       client_ip, changes) "
    "           SELECT 'system', 'exhaust', 'keys', id::text, $2, $3, "
    "                  jsonb_build_object('status', 'exhausted', 'quota_used', quota_used, "
    "                                     'quota_limit', quota_limit) FROM e), "
    "     o AS (INSERT INTO sync_outbox (resource, resource_id, action) "
    "           SELECT 'keys', id, 'upsert' FROM e) "
    "SELECT count(*) FROM e";

static const char *const masters_update_sql =
    "WITH d AS (SELECT id, sum(r) AS r, sum(t) AS t "
    "           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, r, t) "
    "           GROUP BY id), "
    "     u AS (UPDATE masters m SET request_count = m.request_count + d.r, "
    "                  token_count = m.token_count + d.t "
    "           FROM d WHERE m.id = d.id RETURNING m.id) "
    "SELECT (SELECT count(*) FROM d) - (SELECT count(*) FROM u)";

int stats_flush_post(struct req *r)
{
    cJSON *body = NULL, *out = NULL;
    struct cols keys, masters;
    cols_init(&keys);
    cols_init(&masters);
    PGconn *c = NULL;
    struct rctx x = {.r = r, .prefix = ""};
    const char *flush_id = NULL;
    PGresult *res = NULL;
    bool fresh = false;
    int rc = EZ_ERR;
    int64_t unknown_keys = 0, unknown_masters = 0, exhausted = 0;

    if (req_json_object(r, &body) != EZ_OK)
        goto out;
    if (parse_flush_id(r, body, &flush_id) != EZ_OK ||
        parse_list(r, body, "keys", true, &keys) != EZ_OK ||
        parse_list(r, body, "masters", false, &masters) != EZ_OK)
        goto out;

    c = tx_begin(r);
    if (c == NULL)
        goto out;
    x.c = c;
    const char *fid[1] = {flush_id};
    res = db_exec(&x,
                  "INSERT INTO stats_flushes (flush_id) VALUES ($1) "
                  "ON CONFLICT (flush_id) DO NOTHING RETURNING 1",
                  1, fid);
    if (res == NULL)
        goto fail;
    fresh = PQntuples(res) == 1;
    PQclear(res);
    if (!fresh) {
        /* Applied before (or by a concurrent request that committed first): change nothing. */
        tx_rollback(r, c);
        out = cJSON_CreateObject();
        cJSON_AddFalseToObject(out, "applied");
        cJSON_AddTrueToObject(out, "duplicate");
        reply_json(r, 200, out);
        rc = EZ_OK;
        goto out;
    }
    if (keys.n > 0) {
        const char *kp[5] = {keys.id.data, keys.requests.data, keys.tokens.data, keys.quota.data,
                             keys.last.data};
        const char *ep[3] = {keys.id.data, r->request_id, r->client_ip};
        if (lock_rows(&x, "keys", keys.id.data) != EZ_OK ||
            (unknown_keys = exec_count(&x, keys_update_sql, 5, kp)) < 0 ||
            (exhausted = exec_count(&x, keys_exhaust_sql, 3, ep)) < 0)
            goto fail;
    }
    if (masters.n > 0) {
        const char *mp[3] = {masters.id.data, masters.requests.data, masters.tokens.data};
        if (lock_rows(&x, "masters", masters.id.data) != EZ_OK ||
            (unknown_masters = exec_count(&x, masters_update_sql, 3, mp)) < 0)
            goto fail;
    }
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    if (exhausted > 0 || unknown_keys > 0 || unknown_masters > 0)
        log_info("event=stats_flush keys=%d masters=%d exhausted=%lld unknown_keys=%lld "
                 "unknown_masters=%lld",
                 keys.n, masters.n, (long long)exhausted, (long long)unknown_keys,
                 (long long)unknown_masters);
    out = cJSON_CreateObject();
    cJSON_AddTrueToObject(out, "applied");
    cJSON_AddNumberToObject(out, "unknown_keys", (double)unknown_keys);
    cJSON_AddNumberToObject(out, "unknown_masters", (double)unknown_masters);
    cJSON_AddNumberToObject(out, "exhausted", (double)exhausted);
    reply_json(r, 200, out);
    rc = EZ_OK;
    goto out;
fail:
    tx_rollback(r, c);
out:
    cJSON_Delete(out);
    cJSON_Delete(body);
    cols_free(&keys);
    cols_free(&masters);
    return rc;
}
