/*
 * /admin/features: feature flags, name -> string value, published by the
 * background to Redis `config:features` (outbox resource "features").
 * The known flags, their types and defaults are the table below
 * (docs/features.md); other names must start with "x_".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

#define FEATURE_NAME_MAX 64
#define FEATURE_VALUE_MAX 256
#define FEATURES_PER_PUT_MAX 256
#define FEATURES_STORED_MAX 1000

enum ftkind { FK_BOOL, FK_INT, FK_STRING };

struct known_flag {
    const char *name;
    enum ftkind kind;
    const char *def;
    int64_t min, max; /* FK_INT only */
    const char *description;
};

/* Keep docs/features.md in step with this table. */
static const struct known_flag known_flags[] = {
    {"maintenance_mode", FK_BOOL, "false", 0, 0,
     "The data plane answers every new request with 503 while true."},
    {"log_sink_enabled", FK_BOOL, "true", 0, 0,
     "The data plane reports request logs to POST /internal/logs."},
    {"stats_flush_enabled", FK_BOOL, "true", 0, 0,
     "The data plane flushes usage counters to POST /internal/stats/flush "
     "(quotas are only enforced on what is flushed)."},
    {"stats_flush_interval_seconds", FK_INT, "10", 1, 3600,
     "Seconds between two usage flushes of the data plane."},
    {"strict_model_limits", FK_BOOL, "true", 0, 0,
     "A key with model_limits_enabled is refused models outside model_limits; "
     "false only logs the violation."},
};

static const char *kind_name(enum ftkind k)
{
    return k == FK_BOOL ? "bool" : k == FK_INT ? "int" : "string";
}

static const struct known_flag *known_flag(const char *name)
{
    for (size_t i = 0; i < EZ_ARRAY_LEN(known_flags); i++)
        if (strcmp(known_flags[i].name, name) == 0)
            return &known_flags[i];
    return NULL;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > FEATURE_NAME_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* The shortest text that reads back as the same double. */
static void number_text(double d, char *out, size_t len)
{
    if (d == floor(d) && fabs(d) <= (double)JSON_MAX_SAFE_INT) {
        snprintf(out, len, "%lld", (long long)d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

/*
 * The string form of a JSON value for flag `name`, checked against the flag's
 * kind. Returns NULL with *msg set when the value is refused. out holds
 * converted numbers; strings point into v.
 */
static const char *flag_value(const char *name, const cJSON *v, char *out, size_t len,
                              const char **msg)
{
    const char *s = NULL;
    if (cJSON_IsString(v)) {
        s = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        s = cJSON_IsTrue(v) ? "true" : "false";
    } else if (cJSON_IsNumber(v)) {
        number_text(v->valuedouble, out, len);
        s = out;
    } else {
        *msg = "must be a string, a number, true, false or null";
        return NULL;
    }
    if (strlen(s) > FEATURE_VALUE_MAX) {
        *msg = "is longer than 256 characters";
        return NULL;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *msg = "may not contain control characters";
            return NULL;
        }
    }
    const struct known_flag *k = known_flag(name);
    int64_t iv;
    if (k && k->kind == FK_BOOL && strcmp(s, "true") != 0 && strcmp(s, "false") != 0) {
        *msg = "must be true or false";
        return NULL;
    }
    if (k && k->kind == FK_INT && ez_parse_int64(s, k->min, k->max, &iv) != EZ_OK) {
        static _Thread_local char m[96];
        snprintf(m, sizeof(m), "must be a whole number in %lld..%lld", (long long)k->min,
                 (long long)k->max);
        *msg = m;
        return NULL;
    }
    return s;
}

/* {"features": merged map, "known": {name: {default, description, type}}} from a SELECT name,
 * value. */
static cJSON *render_features(PGresult *rows)
{
    cJSON *out = cJSON_CreateObject();
    cJSON *feat = cJSON_AddObjectToObject(out, "features");
    cJSON *known = cJSON_AddObjectToObject(out, "known");
    for (size_t i = 0; i < EZ_ARRAY_LEN(known_flags); i++) {
        const struct known_flag *k = &known_flags[i];
        cJSON_AddStringToObject(feat, k->name, k->def);
        cJSON *o = cJSON_AddObjectToObject(known, k->name);
        cJSON_AddStringToObject(o, "default", k->def);
        cJSON_AddStringToObject(o, "description", k->description);
        cJSON_AddStringToObject(o, "type", kind_name(k->kind));
    }
    for (int i = 0; i < PQntuples(rows); i++) {
        const char *name = PQgetvalue(rows, i, 0);
        cJSON *v = cJSON_CreateString(PQgetvalue(rows, i, 1));
        if (cJSON_GetObjectItemCaseSensitive(feat, name))
            cJSON_ReplaceItemInObjectCaseSensitive(feat, name, v); /* keeps the table's order */
        else
            cJSON_AddItemToObject(feat, name, v);
    }
    return out;
}

static const char *const select_features = "SELECT name, value FROM features ORDER BY name";

int features_get(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    PGresult *rows = PQexecParams(c, select_features, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(rows) != PGRES_TUPLES_OK) {
        log_error("event=features_read_failed error=\"%s\"", PQresultErrorMessage(rows));
        PQclear(rows);
        db_check(&r->w->db);
        return reply_error(r, 503, "unavailable", NULL, "database error");
    }
    cJSON *out = render_features(rows);
    PQclear(rows);
    reply_json(r, 200, out);
    cJSON_Delete(out);
    return EZ_OK;
}

/*
 * Validates the body into upserts ({name: value}) and deletes ([name]);
 * changes records both for the operation log. Answers 400 itself.
 */
static int collect_flags(struct req *r, const cJSON *body, cJSON *upserts, cJSON *deletes,
                         cJSON *changes)
{
    if (cJSON_GetArraySize(body) > FEATURES_PER_PUT_MAX)
        return reply_error(r, 400, "invalid_argument", NULL, "at most %d flags per request",
                           FEATURES_PER_PUT_MAX);
    const cJSON *v;
    cJSON_ArrayForEach(v, body)
    {
        const char *name = v->string;
        /* The name as the error's field, cut at a UTF-8 boundary when it is too long. */
        char field[FEATURE_NAME_MAX + 16];
        size_t cut = strlen(name);
        if (cut > FEATURE_NAME_MAX + 8) {
            cut = FEATURE_NAME_MAX + 8;
            while (cut > 0 && ((unsigned char)name[cut] & 0xC0) == 0x80)
                cut--;
        }
        snprintf(field, sizeof(field), "%.*s", (int)cut, name);
        if (!valid_name(name))
            return reply_error(r, 400, "invalid_argument", field,
                               "flag names are 1..64 characters of a-z, 0-9 and _");
        if (known_flag(name) == NULL && strncmp(name, "x_", 2) != 0)
            return reply_error(r, 400, "invalid_argument", field,
                               "unknown feature flag %s (custom flags start with x_)", name);
        if (cJSON_IsNull(v)) {
            cJSON_AddItemToArray(deletes, cJSON_CreateString(name));
            cJSON_AddNullToObject(changes, name);
            continue;
        }
        char num[64];
        const char *msg = NULL;
        const char *s = flag_value(name, v, num, sizeof(num), &msg);
        if (s == NULL)
            return reply_error(r, 400, "invalid_argument", field, "%s %s", name, msg);
        cJSON_AddStringToObject(upserts, name, s);
        cJSON_AddStringToObject(changes, name, s);
    }
    return EZ_OK;
}

int features_put(struct req *r)
{
    cJSON *body = NULL, *upserts = NULL, *deletes = NULL, *changes = NULL, *out = NULL;
    char *up_txt = NULL, *del_txt = NULL;
    PGresult *res = NULL;
    PGconn *c = NULL;
    struct rctx x = {.r = r, .prefix = ""};
    int rc = EZ_ERR;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;
    upserts = cJSON_CreateObject();
    deletes = cJSON_CreateArray();
    changes = cJSON_CreateObject();
    if (collect_flags(r, body, upserts, deletes, changes) != EZ_OK)
        goto out;
    if (cJSON_GetArraySize(changes) == 0) {
        /* Nothing to change: no transaction, no log rows; answer the current map. */
        rc = features_get(r);
        goto out;
    }
    c = tx_begin(r);
    if (c == NULL)
        goto out;
    x.c = c;
    up_txt = json_render(upserts);
    del_txt = json_render(deletes);
    const char *params[2] = {up_txt, del_txt};
    res = db_exec(&x,
                  "WITH d AS (DELETE FROM features WHERE name IN "
                  "  (SELECT jsonb_array_elements_text($2::jsonb))), "
                  "u AS (INSERT INTO features (name, value) "
                  "  SELECT key, value FROM jsonb_each_text($1::jsonb) "
                  "  ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()) "
                  "SELECT 1",
                  2, params);
    if (res == NULL)
        goto fail;
    PQclear(res);
    res = NULL;
    if (audit_write(&x, "update", "features", 0, changes) != EZ_OK ||
        outbox_add(&x, "features", 0, "upsert") != EZ_OK)
        goto fail;
    res = db_exec(&x, select_features, 0, NULL);
    if (res == NULL)
        goto fail;
    if (PQntuples(res) > FEATURES_STORED_MAX) {
        reply_error(r, 400, "invalid_argument", NULL, "at most %d stored feature flags",
                    FEATURES_STORED_MAX);
        goto fail;
    }
    out = render_features(res);
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    log_info("event=features_updated count=%d", cJSON_GetArraySize(changes));
    reply_json(r, 200, out);
    rc = EZ_OK;
    goto out;
fail:
    tx_rollback(r, c);
out:
    PQclear(res);
    free(up_txt);
    free(del_txt);
    cJSON_Delete(out);
    cJSON_Delete(changes);
    cJSON_Delete(deletes);
    cJSON_Delete(upserts);
    cJSON_Delete(body);
    return rc;
}
