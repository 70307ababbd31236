/*
 * /admin/masters: tenants, their master keys, suspend/activate/rotate/revoke,
 * and their realtime counters (read from the data plane's Redis keys).
 *
 * Rules beyond the field table (DATA.md "Master"):
 * - `status` and `epoch` are never taken from a POST/PUT body: status moves
 *   through /manage and /batch (suspend | activate), epoch only through
 *   revoke_keys.
 * - `namespaces` lists existing namespaces (no duplicates); empty means
 *   [default_namespace]. `default_namespace` must exist and be listed when
 *   the list is non-empty. A PUT is validated on the merged state (the row
 *   plus the changes). On create, a non-empty list without a
 *   default_namespace makes the first listed namespace the default; on PUT
 *   the admin must name one if the current default is no longer listed.
 * - Narrowing a master's namespaces while some of its keys still name a
 *   removed one is refused (409 naming the keys): a key never reaches beyond
 *   its master.
 * - `group` "" is stored as "default".
 * - Lowering max_child_keys below the current number of keys is allowed:
 *   existing keys keep working; it only blocks new keys until enough are
 *   deleted.
 * - The master key (`mk-` + 64 hex) is returned once, on create and on
 *   rotate_key; only its SHA-256 and a display prefix ("mk-abcd…") are kept.
 * - Delete cascades the master's keys; the outbox row carries their token
 *   hashes so the background can drop the auth:token:* keys (docs/outbox.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "handlers.h"
#include "json.h"
#include "keys.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

#define MASTER_QPS_MAX 1000000

static const char *const master_status[] = {"active", "suspended", NULL};

static const struct field master_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"name", "name", FT_TEXT, F_WRITE | F_REQ | F_SORT, 1, 64, NULL, check_name},
    {"group", "\"group\"", FT_TEXT, F_WRITE | F_SORT | F_FILTER, 0, 64, NULL, check_route_group},
    {"namespaces", "namespaces", FT_TEXTS, F_WRITE | F_FILTER, 1, 64, NULL, check_ns_name},
    {"default_namespace", "default_namespace", FT_TEXT, F_WRITE | F_FILTER, 1, 64, NULL,
     check_ns_name},
    {"max_child_keys", "max_child_keys", FT_INT, F_WRITE | F_SORT, 0, 100000, NULL, NULL},
    {"global_qps", "global_qps", FT_INT, F_WRITE | F_SORT, 0, MASTER_QPS_MAX, NULL, NULL},
    {"status", "status", FT_TEXT, F_SORT, 0, 0, master_status, NULL},
    {"epoch", "epoch", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"key_hash", "key_hash", FT_TEXT, F_HIDDEN, 0, 0, NULL, NULL},
    {"key_prefix", "key_prefix", FT_TEXT, 0, 0, 0, NULL, NULL},
    {"request_count", "request_count", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"token_count", "token_count", FT_INT, F_SORT, 0, 0, NULL, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

static int master_before_write(struct rctx *x, const cJSON *body, struct wvals *vals);
static int master_after_write(struct rctx *x, const cJSON *body);
static int master_before_delete(struct rctx *x);

static const struct resource master_resource = {
    .name = "masters",
    .table = "masters",
    .fields = master_fields,
    .nfields = (int)EZ_ARRAY_LEN(master_fields),
    .default_sort = "id",
    .before_write = master_before_write,
    .after_write = master_after_write,
    .before_delete = master_before_delete,
};

static void i64s(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld", (long long)v);
}

/*
 * Every namespace in the JSON list (text) must exist: locks them against a
 * concurrent delete (FOR KEY SHARE) and answers 400 naming field otherwise.
 */
static int namespaces_exist(struct rctx *x, const char *field, const char *list_json)
{
    const char *params[1] = {list_json};
    PGresult *res = db_exec(x,
                            "SELECT id FROM namespaces WHERE name IN "
                            "(SELECT jsonb_array_elements_text($1::jsonb)) FOR KEY SHARE",
                            1, params);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    res = db_exec(x,
                  "SELECT v FROM jsonb_array_elements_text($1::jsonb) v WHERE NOT EXISTS "
                  "(SELECT 1 FROM namespaces n WHERE n.name = v) LIMIT 1",
                  1, params);
    if (res == NULL)
        return EZ_ERR;
    int rc = EZ_OK;
    if (PQntuples(res) > 0)
        rc = res_bad_field(x, field,
                           "names a namespace that does not exist: ", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/*
 * Cross-field and cross-row rules on the merged state (see the file comment);
 * on create also the master key (returned once through x->extra_out).
 */
static int master_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    PGresult *res = NULL;
    cJSON *cur_ns = NULL, *new_ns = NULL, *eff = NULL;
    char *cur_def = NULL, *eff_json = NULL, *key = NULL;
    int rc = EZ_ERR;
    char idtxt[24];
    i64s(idtxt, sizeof(idtxt), x->id);

    if (x->create) {
        cur_ns = cJSON_CreateArray();
        cur_def = ez_strdup("default");
    } else {
        const char *params[1] = {idtxt};
        res = db_exec(x,
                      "SELECT array_to_json(namespaces)::text, default_namespace FROM masters "
                      "WHERE id = $1 FOR UPDATE",
                      1, params);
        if (res == NULL)
            goto out;
        if (PQntuples(res) != 1) {
            reply_error(x->r, 404, "not_found", NULL, "masters %lld not found", (long long)x->id);
            goto out;
        }
        cur_ns = cJSON_Parse(PQgetvalue(res, 0, 0));
        cur_def = ez_strdup(PQgetvalue(res, 0, 1));
        PQclear(res);
        res = NULL;
        if (cur_ns == NULL)
            cur_ns = cJSON_CreateArray();
    }

    bool ns_given = false, def_given = false;
    const char *ns_text = wvals_get(vals, "namespaces", &ns_given);
    const char *def_text = wvals_get(vals, "default_namespace", &def_given);
    new_ns = ns_given ? cJSON_Parse(ns_text) : cJSON_Duplicate(cur_ns, 1);
    if (new_ns == NULL)
        new_ns = cJSON_CreateArray();

    if (ns_given) {
        const cJSON *e;
        int i = 0;
        cJSON_ArrayForEach(e, new_ns)
        {
            const cJSON *f;
            int j = 0;
            cJSON_ArrayForEach(f, new_ns)
            {
                if (j++ >= i)
                    break;
                if (strcmp(f->valuestring, e->valuestring) == 0) {
                    res_bad_field(x, "namespaces", "lists a namespace twice: ", e->valuestring);
                    goto out;
                }
            }
            i++;
        }
        if (namespaces_exist(x, "namespaces", ns_text) != EZ_OK)
            goto out;
    }

    const char *def = def_given ? def_text : cur_def;
    if (!def_given && x->create && cJSON_GetArraySize(new_ns) > 0 && !json_list_has(new_ns, def)) {
        /* A new master listing namespaces without naming a default: the first one. */
        def = cJSON_GetArrayItem(new_ns, 0)->valuestring;
        wvals_set(vals, "default_namespace", FT_TEXT, def);
        def_given = true;
    }
    if (cJSON_GetArraySize(new_ns) > 0 && !json_list_has(new_ns, def)) {
        res_bad_field(x, "default_namespace", "must be one of namespaces", NULL);
        goto out;
    }
    if (def_given) {
        cJSON *one = cJSON_CreateArray();
        cJSON_AddItemToArray(one, cJSON_CreateString(def));
        char *one_json = json_render(one);
        cJSON_Delete(one);
        int r1 = namespaces_exist(x, "default_namespace", one_json);
        free(one_json);
        if (r1 != EZ_OK)
            goto out;
    }

    /* Narrowing: no key of this master may keep a namespace it no longer has. */
    if (!x->create && (ns_given || def_given)) {
        eff = cJSON_GetArraySize(new_ns) > 0 ? cJSON_Duplicate(new_ns, 1) : cJSON_CreateArray();
        if (cJSON_GetArraySize(eff) == 0)
            cJSON_AddItemToArray(eff, cJSON_CreateString(def));
        eff_json = json_render(eff);
        const char *params[2] = {idtxt, eff_json};
        res = db_exec(x,
                      "SELECT string_agg(id::text, ',') FROM (SELECT id FROM keys "
                      "WHERE master_id = $1 AND NOT namespaces <@ "
                      "ARRAY(SELECT jsonb_array_elements_text($2::jsonb)) ORDER BY id LIMIT 10) k",
                      2, params);
        if (res == NULL)
            goto out;
        if (!PQgetisnull(res, 0, 0)) {
            char name[160];
            snprintf(name, sizeof(name), "%snamespaces", x->prefix ? x->prefix : "");
            reply_error(x->r, 409, "conflict", name,
                        "keys [%s] use namespaces the master would no longer have",
                        PQgetvalue(res, 0, 0));
            goto out;
        }
    }

    bool group_given = false;
    const char *group = wvals_get(vals, "\"group\"", &group_given);
    if (group_given && group && *group == '\0') {
        wvals_set(vals, "\"group\"", FT_TEXT, "default");
        /* wvals_set keeps the slot and its field: the audit still shows what was sent. */
    }

    if (x->create) {
        char hash[65], prefix[32];
        key = res_new_secret(x->r, "mk-", hash, prefix, sizeof(prefix));
        if (key == NULL)
            goto out;
        wvals_set(vals, "key_hash", FT_TEXT, hash);
        wvals_set(vals, "key_prefix", FT_TEXT, prefix);
        cJSON_Delete(x->extra_out);
        x->extra_out = cJSON_CreateObject();
        cJSON_AddStringToObject(x->extra_out, "master_key", key);
    }
    rc = EZ_OK;
out:
    ez_secret_free(key);
    PQclear(res);
    cJSON_Delete(cur_ns);
    cJSON_Delete(new_ns);
    cJSON_Delete(eff);
    free(cur_def);
    free(eff_json);
    return rc;
}

/*
 * Beyond the framework's ("masters", id) row: a status change (batch
 * suspend/activate) or a namespace change also republishes the master's
 * tokens ("master_keys", id), which carry what the data plane enforces.
 */
static int master_after_write(struct rctx *x, const cJSON *body)
{
    if (x->create)
        return EZ_OK;
    bool status_change = x->action && strncmp(x->action, "batch_", 6) == 0;
    bool ns_change =
        !status_change && (cJSON_GetObjectItemCaseSensitive(body, "namespaces") ||
                           cJSON_GetObjectItemCaseSensitive(body, "default_namespace"));
    if (status_change || ns_change)
        return outbox_add(x, "master_keys", x->id, "upsert");
    return EZ_OK;
}

/*
 * The master row is locked first so that no key can be issued meanwhile;
 * then every token hash of its keys (current and in-grace previous) goes into
 * the delete row's payload: after the cascade nothing else remembers them.
 */
static int master_before_delete(struct rctx *x)
{
    char idtxt[24];
    i64s(idtxt, sizeof(idtxt), x->id);
    const char *params[1] = {idtxt};
    PGresult *res = db_exec(x, "SELECT id FROM masters WHERE id = $1 FOR UPDATE", 1, params);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    res = db_exec(x,
                  "SELECT coalesce(jsonb_agg(h ORDER BY h), '[]')::text FROM ("
                  " SELECT token_hash AS h FROM keys WHERE master_id = $1"
                  " UNION ALL SELECT prev_token_hash FROM keys"
                  " WHERE master_id = $1 AND prev_token_hash IS NOT NULL) t",
                  1, params);
    if (res == NULL)
        return EZ_ERR;
    cJSON *hashes = cJSON_Parse(PQgetvalue(res, 0, 0));
    PQclear(res);
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = cJSON_CreateObject();
    cJSON_AddItemToObject(x->outbox_payload, "token_hashes", hashes ? hashes : cJSON_CreateArray());
    return EZ_OK;
}

/* ---- handlers ---- */

int masters_list(struct req *r)
{
    return res_list(r, &master_resource, 0);
}

int masters_create(struct req *r)
{
    return res_create(r, &master_resource, 0);
}

int masters_get(struct req *r)
{
    return res_get(r, &master_resource, r->id, 0);
}

int masters_update(struct req *r)
{
    return res_update(r, &master_resource, r->id, 0);
}

int masters_delete(struct req *r)
{
    return res_delete(r, &master_resource, r->id, 0);
}

int masters_batch(struct req *r)
{
    static const char *const acts[] = {"suspend", "activate", NULL};
    static const char *const vals[] = {"suspended", "active", NULL};
    return res_batch(r, &master_resource, acts, vals);
}

cJSON *masters_fetch_json(struct req *r, PGconn *c, int64_t id)
{
    struct rctx x;
    memset(&x, 0, sizeof(x));
    x.r = r;
    x.c = c;
    x.res = &master_resource;
    x.prefix = "";
    return res_fetch(&x, id);
}

/*
 * One manage action inside the open transaction of x: the row change, its
 * outbox rows and its audit row. Answers 404 itself for a missing master.
 * *new_key receives the new master key after rotate_key (caller frees).
 */
static int manage_apply(struct rctx *x, const char *action, char **new_key)
{
    char idtxt[24], actname[48];
    i64s(idtxt, sizeof(idtxt), x->id);
    snprintf(actname, sizeof(actname), "manage_%s", action);
    PGresult *res = NULL;
    cJSON *changes = cJSON_CreateObject();
    bool rotate = strcmp(action, "rotate_key") == 0, revoke = strcmp(action, "revoke_keys") == 0;
    int rc = EZ_ERR;

    if (rotate) {
        char hash[65], prefix[32];
        *new_key = res_new_secret(x->r, "mk-", hash, prefix, sizeof(prefix));
        if (*new_key == NULL)
            goto out;
        const char *params[3] = {idtxt, hash, prefix};
        res = db_exec(x,
                      "UPDATE masters SET key_hash = $2, key_prefix = $3, updated_at = now() "
                      "WHERE id = $1 RETURNING id",
                      3, params);
        cJSON_AddStringToObject(changes, "master_key", "[redacted]");
    } else if (revoke) {
        const char *params[1] = {idtxt};
        res = db_exec(x,
                      "UPDATE masters SET epoch = epoch + 1, updated_at = now() WHERE id = $1 "
                      "RETURNING epoch",
                      1, params);
    } else {
        const char *st = strcmp(action, "suspend") == 0 ? "suspended" : "active";
        const char *params[2] = {idtxt, st};
        res = db_exec(x,
                      "UPDATE masters SET status = $2, updated_at = now() WHERE id = $1 "
                      "RETURNING id",
                      2, params);
        cJSON_AddStringToObject(changes, "status", st);
    }
    if (res == NULL)
        goto out;
    if (PQntuples(res) != 1) {
        reply_error(x->r, 404, "not_found", NULL, "masters %lld not found", (long long)x->id);
        goto out;
    }
    if (revoke) {
        cJSON_AddNumberToObject(changes, "epoch", (double)strtoll(PQgetvalue(res, 0, 0), NULL, 10));
        PQclear(res);
        const char *params[1] = {idtxt};
        res = db_exec(x,
                      "UPDATE keys SET status = 'disabled', updated_at = now() "
                      "WHERE master_id = $1 AND status <> 'disabled' RETURNING id",
                      1, params);
        if (res == NULL)
            goto out;
        cJSON_AddNumberToObject(changes, "keys_disabled", PQntuples(res));
    }
    /* Tokens carry the master's status and follow a revoke; a new master key changes neither. */
    if (audit_write(x, actname, "masters", x->id, changes) != EZ_OK ||
        outbox_add(x, "masters", x->id, "upsert") != EZ_OK ||
        (!rotate && outbox_add(x, "master_keys", x->id, "upsert") != EZ_OK))
        goto out;
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(changes);
    return rc;
}

/*
 * POST /admin/masters/:id/manage {"action": suspend | activate | rotate_key |
 * revoke_keys}: 200 with the master (plus the new master_key after
 * rotate_key; the old key stops at once since authentication reads the hash
 * from PostgreSQL). revoke_keys disables every child key and bumps epoch.
 */
int masters_manage(struct req *r)
{
    static const char *const actions[] = {"suspend", "activate", "rotate_key", "revoke_keys", NULL};
    cJSON *body = NULL, *row = NULL;
    char *new_key = NULL;
    PGconn *c = NULL;
    int rc = EZ_ERR;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(body, "action");
    const char *action = NULL;
    for (int i = 0; cJSON_IsString(act) && actions[i]; i++)
        if (strcmp(act->valuestring, actions[i]) == 0)
            action = actions[i];
    if (action == NULL) {
        reply_error(r, 400, "invalid_argument", "action",
                    "action must be one of suspend, activate, rotate_key, revoke_keys");
        goto out;
    }
    c = tx_begin(r);
    if (c == NULL)
        goto out;
    struct rctx x;
    memset(&x, 0, sizeof(x));
    x.r = r;
    x.c = c;
    x.res = &master_resource;
    x.prefix = "";
    x.id = r->id;
    x.action = action;
    if (manage_apply(&x, action, &new_key) != EZ_OK) {
        tx_rollback(r, c);
        goto out;
    }
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    row = res_fetch(&x, r->id);
    if (row == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database error");
        goto out;
    }
    if (new_key)
        cJSON_AddStringToObject(row, "master_key", new_key);
    reply_json(r, 200, row);
    rc = EZ_OK;
out:
    ez_secret_free(new_key);
    cJSON_Delete(row);
    cJSON_Delete(body);
    return rc;
}

/* ---- realtime counters (REDIS.md "Keys written by the data plane") ---- */

#define RT_WINDOW 60

/* Integer value of a string/integer reply; 0 for nil, errors and non-numbers. */
static int64_t reply_int(const redisReply *rp)
{
    if (rp == NULL)
        return 0;
    if (rp->type == REDIS_REPLY_INTEGER)
        return rp->integer > 0 ? rp->integer : 0;
    if (rp->type != REDIS_REPLY_STRING)
        return 0;
    int64_t v;
    if (ez_parse_int64(rp->str, 0, INT64_MAX, &v) != EZ_OK)
        return 0;
    return v;
}

/*
 * Sends the realtime reads of master id as one pipeline: HMGET of the
 * totals, one HGET per second of the last RT_WINDOW whole seconds before
 * now, EXISTS of the throttle flag. Fills replies[RT_WINDOW + 2] (the caller
 * frees them). Returns -1 on an I/O error, after dropping the connection.
 */
static int rt_read(struct ez_rds *slot, long long id, int64_t now, redisReply **replies)
{
    redisContext *rds = rds_get(slot);
    if (rds == NULL)
        return EZ_ERR;
    redisAppendCommand(rds, "HMGET rt:master:%lld requests tokens errors last_request_at", id);
    for (int i = 1; i <= RT_WINDOW; i++)
        redisAppendCommand(rds, "HGET rt:master:%lld:s:%lld requests", id, (long long)(now - i));
    redisAppendCommand(rds, "EXISTS rt:master:%lld:limited", id);
    for (int n = 0; n < RT_WINDOW + 2; n++) {
        void *rp = NULL;
        if (redisGetReply(rds, &rp) != REDIS_OK) {
            log_warn("event=realtime_redis_failed error=\"%s\"", rds->errstr);
            rds_close(slot); /* a context that failed is never reused */
            return EZ_ERR;
        }
        replies[n] = rp;
        if (replies[n]->type == REDIS_REPLY_ERROR)
            log_warn("event=realtime_redis_reply_error master_id=%lld error=\"%s\"", id,
                     replies[n]->str);
    }
    return EZ_OK;
}

static void rt_free(redisReply **replies, int n)
{
    for (int i = 0; i < n; i++) {
        if (replies[i])
            freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}

/*
 * GET .../realtime: the master's running totals (rt:master:<id>), the
 * requests of the last 10 and 60 whole seconds (now-N .. now-1, pipelined)
 * and the throttle flag. 404 when the master does not exist; 503 naming
 * Redis when it cannot be read (zeros would look like an idle tenant). A
 * connection that went stale (Redis restarted) is replaced once, so the
 * first request after a restart does not fail.
 */
int masters_realtime_reply(struct req *r, int64_t master_id)
{
    PGresult *pg = NULL;
    redisReply *replies[RT_WINDOW + 2] = {0};
    int rc = EZ_ERR;
    cJSON *out = NULL;
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    char idtxt[24];
    i64s(idtxt, sizeof(idtxt), master_id);
    const char *params[1] = {idtxt};
    pg = PQexecParams(c, "SELECT global_qps FROM masters WHERE id = $1", 1, NULL, params, NULL,
                      NULL, 0);
    if (PQresultStatus(pg) != PGRES_TUPLES_OK) {
        log_error("event=realtime_query_failed error=\"%s\"", PQresultErrorMessage(pg));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        goto out;
    }
    if (PQntuples(pg) != 1) {
        reply_error(r, 404, "not_found", NULL, "masters %lld not found", (long long)master_id);
        goto out;
    }
    int64_t global_qps = strtoll(PQgetvalue(pg, 0, 0), NULL, 10);

    long long id = (long long)master_id;
    int64_t now = ez_now_unix();
    bool had_conn = r->w->redis.ctx != NULL;
    int got = rt_read(&r->w->redis, id, now, replies);
    if (got != EZ_OK && had_conn) {
        rt_free(replies, RT_WINDOW + 2);
        got = rt_read(&r->w->redis, id, now, replies);
    }
    if (got != EZ_OK) {
        reply_error(r, 503, "unavailable", NULL, "redis unavailable: realtime counters unknown");
        goto out;
    }

    const redisReply *tot = replies[0];
    const redisReply *f[4] = {NULL, NULL, NULL, NULL};
    if (tot->type == REDIS_REPLY_ARRAY && tot->elements == 4)
        for (int i = 0; i < 4; i++)
            f[i] = tot->element[i];
    int64_t s10 = 0, s60 = 0;
    for (int i = 1; i <= RT_WINDOW; i++) {
        int64_t v = reply_int(replies[i]);
        if (i <= 10)
            s10 += v;
        s60 += v;
    }
    out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "master_id", (double)master_id);
    cJSON_AddNumberToObject(out, "requests", (double)reply_int(f[0]));
    cJSON_AddNumberToObject(out, "tokens", (double)reply_int(f[1]));
    cJSON_AddNumberToObject(out, "errors", (double)reply_int(f[2]));
    cJSON_AddNumberToObject(out, "qps_10s", (double)s10 / 10.0);
    cJSON_AddNumberToObject(out, "qps_60s", (double)s60 / 60.0);
    cJSON_AddNumberToObject(out, "global_qps", (double)global_qps);
    cJSON_AddBoolToObject(out, "limited", reply_int(replies[RT_WINDOW + 1]) > 0);
    int64_t last = reply_int(f[3]);
    if (last > 0) {
        char iso[40];
        ez_format_time(last, iso, sizeof(iso));
        cJSON_AddStringToObject(out, "last_request_at", iso);
    } else {
        cJSON_AddNullToObject(out, "last_request_at");
    }
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    rt_free(replies, RT_WINDOW + 2);
    PQclear(pg);
    cJSON_Delete(out);
    return rc;
}

int masters_realtime(struct req *r)
{
    return masters_realtime_reply(r, r->id);
}
