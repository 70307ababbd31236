/*
 * Child keys of a master: one resource table behind both
 * /admin/masters/:id/keys (admin) and /v1/tokens (the tenant, tenant.c),
 * always scoped to one master (rctx.scope_master): a key of another master
 * answers 404, never 403.
 *
 * Rules beyond the field table (DATA.md "Key"):
 * - The token (`sk-` + 64 hex) is returned once, on create and rotate; only
 *   its SHA-256 and a display prefix ("sk-abcd…") are stored.
 * - `group` absent on create, or "", takes the master's group at that time.
 * - `namespaces` must be a subset of the master's effective namespaces (its
 *   list, or [default_namespace] when the list is empty); empty means the
 *   master's. `model_limits` entries `ns.model` must name one of those
 *   namespaces too: a key never reaches beyond its master.
 * - `expires_at` must be in the future when written (null = never).
 * - `quota_reset_at` is computed here from `quota_reset_period`: the next
 *   calendar boundary in UTC (00:00 daily, Monday 00:00 weekly, the 1st
 *   00:00 monthly), NULL for none.
 * - `status` accepts active | disabled; expired and exhausted are set by the
 *   system (400 when a body tries) but can be filtered on. Extending the
 *   expiry of an expired key, or lifting the quota of an exhausted one above
 *   what it used, makes it active again unless the same body sets a status.
 * - At most max_child_keys keys per master (409). The master row is locked
 *   FOR UPDATE before counting, so two concurrent creates cannot both pass.
 * - A tenant (AUTH_MASTER) updating a key may not raise quota_limit above the
 *   key's current value, nor make a limited key unlimited (-1): 403 naming
 *   quota_limit (see tenant.c).
 * - Rotation keeps the id and settings; the old hash moves to prev_token_hash
 *   for grace_seconds (0 = it stops at once). The outbox row lists the hashes
 *   that stop now (old_token_hashes) so the background deletes them.
 */
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

#define GRACE_MAX 86400

static const char *const key_status[] = {"active", "disabled", "expired", "exhausted", NULL};
static const char *const key_periods[] = {"none", "daily", "weekly", "monthly", NULL};

/* <= 64 characters (UTF-8 code points), no control characters; may be empty. */
static const char *check_key_name(const char *v)
{
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
        if ((*p & 0xc0) != 0x80)
            chars++;
    }
    return chars > 64 ? "must be at most 64 characters" : NULL;
}

/* A scope: printable ASCII without spaces ("chat", "models:read"). */
static const char *check_scope(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return "must be printable ASCII without spaces";
    return NULL;
}

static const char *check_status_writable(const char *v)
{
    if (strcmp(v, "expired") == 0 || strcmp(v, "exhausted") == 0)
        return "expired and exhausted are set by the system (write active or disabled)";
    return NULL;
}

static const struct field key_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"master_id", "master_id", FT_ID, 0, 0, 0, NULL, NULL},
    {"name", "name", FT_TEXT, F_WRITE | F_SORT, 0, 0, NULL, check_key_name},
    {"group", "\"group\"", FT_TEXT, F_WRITE | F_SORT | F_FILTER, 0, 64, NULL, check_route_group},
    {"scopes", "scopes", FT_TEXTS, F_WRITE | F_FILTER, 1, 64, NULL, check_scope},
    {"namespaces", "namespaces", FT_TEXTS, F_WRITE | F_FILTER, 1, 64, NULL, check_ns_name},
    {"model_limits_enabled", "model_limits_enabled", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"model_limits", "model_limits", FT_TEXTS, F_WRITE, 1, 200, NULL, check_model_ref},
    {"allow_ips", "allow_ips", FT_TEXTS, F_WRITE, 1, 64, NULL, check_ip_or_cidr},
    {"expires_at", "expires_at", FT_TIME, F_WRITE | F_NULL | F_SORT, 0, 0, NULL, NULL},
    {"quota_limit", "quota_limit", FT_INT, F_WRITE | F_SORT, -1, JSON_MAX_SAFE_INT, NULL, NULL},
    {"quota_used", "quota_used", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"quota_reset_period", "quota_reset_period", FT_TEXT, F_WRITE | F_FILTER, 0, 0, key_periods,
     NULL},
    {"quota_reset_at", "quota_reset_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"status", "status", FT_TEXT, F_WRITE | F_SORT, 0, 0, key_status, check_status_writable},
    {"token_prefix", "token_prefix", FT_TEXT, 0, 0, 0, NULL, NULL},
    {"token_hash", "token_hash", FT_TEXT, F_HIDDEN, 0, 0, NULL, NULL},
    {"prev_token_hash", "prev_token_hash", FT_TEXT, F_HIDDEN, 0, 0, NULL, NULL},
    {"prev_token_expires_at", "prev_token_expires_at", FT_TIME, F_HIDDEN, 0, 0, NULL, NULL},
    {"last_accessed_at", "last_accessed_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"request_count", "request_count", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"token_count", "token_count", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

static int key_before_write(struct rctx *x, const cJSON *body, struct wvals *vals);
static int key_before_delete(struct rctx *x);

static const struct resource key_resource = {
    .name = "keys",
    .table = "keys",
    .fields = key_fields,
    .nfields = (int)EZ_ARRAY_LEN(key_fields),
    .default_sort = "id",
    .scope_col = "master_id",
    .before_write = key_before_write,
    .before_delete = key_before_delete,
};

static void i64s(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld", (long long)v);
}

/* The next quota reset after now on UTC calendar boundaries; 0 for "none". */
static int64_t next_reset(const char *period, int64_t now)
{
    if (strcmp(period, "none") == 0)
        return 0;
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    tm.tm_isdst = 0;
    if (strcmp(period, "daily") == 0) {
        tm.tm_mday += 1;
    } else if (strcmp(period, "weekly") == 0) {
        int d = (8 - tm.tm_wday) % 7; /* days to the next Monday */
        tm.tm_mday += d ? d : 7;
    } else {
        tm.tm_mday = 1;
        tm.tm_mon += 1;
    }
    return (int64_t)timegm(&tm); /* normalises day and month overflow */
}

/* Every element of the JSON list text must be in allowed; else 400 naming field. */
static int check_subset(struct rctx *x, const char *field, const char *list_json,
                        const cJSON *allowed, bool model_refs)
{
    cJSON *list = cJSON_Parse(list_json);
    int rc = EZ_OK;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const char *v = e->valuestring;
        char ns[80];
        if (model_refs) {
            const char *dot = strchr(v, '.');
            if (dot == NULL)
                continue; /* a bare model: resolved in the key's namespaces */
            snprintf(ns, sizeof(ns), "%.*s", (int)(dot - v), v);
            v = ns;
        }
        if (!json_list_has(allowed, v)) {
            rc = res_bad_field(x, field, "reaches beyond the master's namespaces: ", v);
            break;
        }
    }
    cJSON_Delete(list);
    return rc;
}

/* The master's group, effective namespaces (its list, or [default_namespace]) and key limit. */
#define MASTER_VIEW_SQL                                                                            \
    "SELECT \"group\", array_to_json(CASE WHEN cardinality(namespaces) = 0 "                       \
    "THEN ARRAY[default_namespace] ELSE namespaces END)::text, max_child_keys "                    \
    "FROM masters WHERE id = $1"

/*
 * Cross-row rules on create and update (see the file comment). The master
 * row is locked first (FOR UPDATE on create: the key count; FOR SHARE on
 * update: its namespaces), then the key row, the same order as every other
 * writer of these tables.
 */
static int key_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    int rc = EZ_ERR;
    PGresult *res = NULL;
    cJSON *eff = NULL;
    char *token = NULL;
    char mid[24], kid[24], mgroup[80], cur_status[16] = "";
    int64_t cur_quota = -1, cur_used = 0, now = ez_now_unix();
    i64s(mid, sizeof(mid), x->scope_master);
    i64s(kid, sizeof(kid), x->id);
    const char *mp[1] = {mid};

    res =
        db_exec(x, x->create ? MASTER_VIEW_SQL " FOR UPDATE" : MASTER_VIEW_SQL " FOR SHARE", 1, mp);
    if (res == NULL)
        goto out;
    if (PQntuples(res) != 1) {
        reply_error(x->r, 404, "not_found", NULL, "masters %lld not found",
                    (long long)x->scope_master);
        goto out;
    }
    snprintf(mgroup, sizeof(mgroup), "%s", PQgetvalue(res, 0, 0));
    eff = cJSON_Parse(PQgetvalue(res, 0, 1));
    int64_t max_keys = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    res = NULL;

    if (x->create) {
        /* Counted after the lock: a separate statement sees the creates committed meanwhile. */
        res = db_exec(x, "SELECT count(*) FROM keys WHERE master_id = $1", 1, mp);
        if (res == NULL)
            goto out;
        int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (n >= max_keys) {
            reply_error(x->r, 409, "conflict", NULL,
                        "the master has %lld keys; max_child_keys is %lld", (long long)n,
                        (long long)max_keys);
            goto out;
        }
        wvals_set(vals, "master_id", FT_ID, mid);
    } else {
        const char *kp[2] = {kid, mid};
        res = db_exec(x,
                      "SELECT quota_limit, quota_used, status FROM keys "
                      "WHERE id = $1 AND master_id = $2 FOR UPDATE",
                      2, kp);
        if (res == NULL)
            goto out;
        if (PQntuples(res) != 1) {
            reply_error(x->r, 404, "not_found", NULL, "keys %lld not found", (long long)x->id);
            goto out;
        }
        cur_quota = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        cur_used = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        snprintf(cur_status, sizeof(cur_status), "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    res = NULL;

    bool given = false;
    const char *g = wvals_get(vals, "\"group\"", &given);
    if ((x->create && !given) || (given && g && *g == '\0'))
        wvals_set(vals, "\"group\"", FT_TEXT, mgroup);

    const char *v = wvals_get(vals, "namespaces", &given);
    if (given && check_subset(x, "namespaces", v, eff, false) != EZ_OK)
        goto out;
    v = wvals_get(vals, "model_limits", &given);
    if (given && check_subset(x, "model_limits", v, eff, true) != EZ_OK)
        goto out;

    bool exp_given = false;
    const char *exp = wvals_get(vals, "expires_at", &exp_given);
    int64_t t;
    if (exp && (ez_parse_time(exp, &t) != EZ_OK || t <= now)) {
        res_bad_field(x, "expires_at", "must be in the future", NULL);
        goto out;
    }

    const char *period = wvals_get(vals, "quota_reset_period", &given);
    if (given && period) {
        int64_t at = next_reset(period, now);
        char iso[40];
        if (at > 0)
            ez_format_time(at, iso, sizeof(iso));
        wvals_set(vals, "quota_reset_at", FT_TIME, at > 0 ? iso : NULL);
    }

    bool quota_given = false;
    const char *q = wvals_get(vals, "quota_limit", &quota_given);
    int64_t new_quota = q ? strtoll(q, NULL, 10) : cur_quota;
    if (!x->create && quota_given && x->r->auth == AUTH_MASTER && cur_quota != -1 &&
        (new_quota == -1 || new_quota > cur_quota)) {
        reply_error(x->r, 403, "forbidden", "quota_limit",
                    "quota_limit may not be raised above %lld by the tenant", (long long)cur_quota);
        goto out;
    }

    bool status_given = false;
    (void)wvals_get(vals, "status", &status_given);
    if (!x->create && !status_given &&
        ((strcmp(cur_status, "expired") == 0 && exp_given) ||
         (strcmp(cur_status, "exhausted") == 0 && quota_given &&
          (new_quota == -1 || new_quota > cur_used))))
        wvals_set(vals, "status", FT_TEXT, "active");

    if (x->create) {
        char hash[65], prefix[32];
        token = res_new_secret(x->r, "sk-", hash, prefix, sizeof(prefix));
        if (token == NULL)
            goto out;
        wvals_set(vals, "token_hash", FT_TEXT, hash);
        wvals_set(vals, "token_prefix", FT_TEXT, prefix);
        cJSON_Delete(x->extra_out);
        x->extra_out = cJSON_CreateObject();
        cJSON_AddStringToObject(x->extra_out, "token", token);
    }
    rc = EZ_OK;
out:
    ez_secret_free(token);
    PQclear(res);
    cJSON_Delete(eff);
    return rc;
}

/* The deleted key's token hashes (current and in-grace previous) go into the outbox row. */
static int key_before_delete(struct rctx *x)
{
    char kid[24];
    i64s(kid, sizeof(kid), x->id);
    const char *params[1] = {kid};
    PGresult *res = db_exec(x,
                            "SELECT token_hash, prev_token_hash FROM keys WHERE id = $1 "
                            "FOR UPDATE",
                            1, params);
    if (res == NULL)
        return EZ_ERR;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return reply_error(x->r, 404, "not_found", NULL, "keys %lld not found", (long long)x->id);
    }
    cJSON *hashes = cJSON_CreateArray();
    cJSON_AddItemToArray(hashes, cJSON_CreateString(PQgetvalue(res, 0, 0)));
    if (!PQgetisnull(res, 0, 1))
        cJSON_AddItemToArray(hashes, cJSON_CreateString(PQgetvalue(res, 0, 1)));
    PQclear(res);
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = cJSON_CreateObject();
    cJSON_AddItemToObject(x->outbox_payload, "token_hashes", hashes);
    return EZ_OK;
}

/* ---- scoped handlers (admin and tenant) ---- */

/* Answers 404 (or 503) itself unless the master exists. */
static int master_exists_or_reply(struct req *r, int64_t master_id)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    char mid[24];
    i64s(mid, sizeof(mid), master_id);
    const char *params[1] = {mid};
    PGresult *res =
        PQexecParams(c, "SELECT 1 FROM masters WHERE id = $1", 1, NULL, params, NULL, NULL, 0);
    int rc = EZ_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=master_lookup_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        rc = reply_error(r, 503, "unavailable", NULL, "database unavailable");
    } else if (PQntuples(res) != 1) {
        rc = reply_error(r, 404, "not_found", NULL, "masters %lld not found", (long long)master_id);
    }
    PQclear(res);
    return rc;
}

int keys_list_for(struct req *r, int64_t master_id)
{
    if (master_exists_or_reply(r, master_id) != EZ_OK)
        return EZ_ERR;
    return res_list(r, &key_resource, master_id);
}

int keys_create_for(struct req *r, int64_t master_id)
{
    return res_create(r, &key_resource, master_id);
}

int keys_get_for(struct req *r, int64_t master_id, int64_t key_id)
{
    return res_get(r, &key_resource, key_id, master_id);
}

int keys_update_for(struct req *r, int64_t master_id, int64_t key_id)
{
    return res_update(r, &key_resource, key_id, master_id);
}

int keys_delete_for(struct req *r, int64_t master_id, int64_t key_id)
{
    return res_delete(r, &key_resource, key_id, master_id);
}

/* grace_seconds from an optional body ({} or no body: 0). Answers 400/413/415 itself. */
static int parse_grace(struct req *r, int64_t *grace)
{
    *grace = 0;
    if (req_read_body(r, r->body_limit ? r->body_limit : r->w->cfg->max_body_bytes) != EZ_OK)
        return EZ_ERR;
    if (r->body_len == 0)
        return EZ_OK;
    cJSON *body = NULL;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(body, "grace_seconds");
    int rc = EZ_OK;
    if (g && !cJSON_IsNull(g) && !json_int_in(g, 0, GRACE_MAX, grace))
        rc = reply_error(r, 400, "invalid_argument", "grace_seconds",
                         "grace_seconds must be a whole number in range (0..%d)", GRACE_MAX);
    cJSON_Delete(body);
    return rc;
}

/*
 * Issues a new token for the key inside the open transaction of x; the
 * hashes that stop working now are listed in the outbox row's payload.
 * *tok receives the plaintext (caller wipes and frees).
 */
static int rotate_apply(struct rctx *x, int64_t key_id, int64_t grace, char **tok)
{
    char kid[24], mid[24], gtxt[24], hash[65], prefix[32];
    i64s(kid, sizeof(kid), key_id);
    i64s(mid, sizeof(mid), x->scope_master);
    i64s(gtxt, sizeof(gtxt), grace);
    cJSON *payload = NULL, *changes = NULL;
    int rc = EZ_ERR;
    const char *sel[2] = {kid, mid};
    PGresult *res = db_exec(x,
                            "SELECT token_hash, prev_token_hash FROM keys "
                            "WHERE id = $1 AND master_id = $2 FOR UPDATE",
                            2, sel);
    if (res == NULL)
        goto out;
    if (PQntuples(res) != 1) {
        reply_error(x->r, 404, "not_found", NULL, "keys %lld not found", (long long)key_id);
        goto out;
    }
    cJSON *old = cJSON_CreateArray();
    payload = cJSON_CreateObject();
    cJSON_AddItemToObject(payload, "old_token_hashes", old);
    /* A previous token still in its grace period is replaced: it stops now. */
    if (!PQgetisnull(res, 0, 1))
        cJSON_AddItemToArray(old, cJSON_CreateString(PQgetvalue(res, 0, 1)));
    if (grace == 0)
        cJSON_AddItemToArray(old, cJSON_CreateString(PQgetvalue(res, 0, 0)));
    PQclear(res);
    res = NULL;

    *tok = res_new_secret(x->r, "sk-", hash, prefix, sizeof(prefix));
    if (*tok == NULL)
        goto out;
    const char *upd[4] = {kid, hash, prefix, gtxt};
    res = db_exec(x,
                  "UPDATE keys SET "
                  " prev_token_hash = CASE WHEN $4::int > 0 THEN token_hash END,"
                  " prev_token_expires_at = CASE WHEN $4::int > 0"
                  "   THEN now() + make_interval(secs => $4::int) END,"
                  " token_hash = $2, token_prefix = $3, updated_at = now() "
                  "WHERE id = $1",
                  4, upd);
    if (res == NULL)
        goto out;
    changes = cJSON_CreateObject();
    cJSON_AddNumberToObject(changes, "grace_seconds", (double)grace);
    cJSON_AddStringToObject(changes, "token", "[redacted]");
    x->id = key_id;
    if (audit_write(x, "rotate", "keys", key_id, changes) != EZ_OK ||
        outbox_add_payload(x, "keys", key_id, "upsert",
                           cJSON_GetArraySize(old) > 0 ? payload : NULL) != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(payload);
    cJSON_Delete(changes);
    return rc;
}

int keys_rotate_for(struct req *r, int64_t master_id, int64_t key_id)
{
    int64_t grace;
    if (parse_grace(r, &grace) != EZ_OK)
        return EZ_ERR;
    PGconn *c = tx_begin(r);
    if (c == NULL)
        return EZ_ERR;
    struct rctx x;
    memset(&x, 0, sizeof(x));
    x.r = r;
    x.c = c;
    x.res = &key_resource;
    x.prefix = "";
    x.scope_master = master_id;
    x.action = "rotate";
    char *tok = NULL;
    cJSON *row = NULL;
    int rc = EZ_ERR;
    if (rotate_apply(&x, key_id, grace, &tok) != EZ_OK) {
        tx_rollback(r, c);
        goto out;
    }
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    row = res_fetch(&x, key_id);
    if (row == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database error");
        goto out;
    }
    cJSON_AddStringToObject(row, "token", tok);
    reply_json(r, 200, row);
    rc = EZ_OK;
out:
    ez_secret_free(tok);
    cJSON_Delete(row);
    return rc;
}

/* ---- admin routes: /admin/masters/:id/keys[/:key_id] ---- */

int master_keys_list(struct req *r)
{
    return keys_list_for(r, r->id);
}

int master_keys_create(struct req *r)
{
    return keys_create_for(r, r->id);
}

int master_keys_get(struct req *r)
{
    return keys_get_for(r, r->id, r->sub_id);
}

int master_keys_update(struct req *r)
{
    return keys_update_for(r, r->id, r->sub_id);
}

int master_keys_delete(struct req *r)
{
    return keys_delete_for(r, r->id, r->sub_id);
}

int master_keys_rotate(struct req *r)
{
    return keys_rotate_for(r, r->id, r->sub_id);
}
