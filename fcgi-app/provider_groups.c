/*
 * /admin/provider-groups: upstream provider accounts (type, endpoint, served
 * models, route group). Choices where DATA.md is silent:
 *  - `type` is stored lower-cased and trimmed; an empty route `group` is
 *    stored as `default`; a `models` list may not repeat an id.
 *  - Deleting a group that bindings use answers 409 naming them unless
 *    `?force=true`, which deletes those bindings in the same transaction.
 *  - Deleting a group always deletes its API keys with it (an upstream
 *    credential means nothing without its provider's type and endpoint;
 *    keeping orphans would only leave dead providers behind). Each cascaded
 *    row gets its own operation-log row; the group's outbox row carries the
 *    API key ids and binding keys that Redis must drop (docs/outbox.md).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "resource.h"

static const char *const pg_status[] = {"active", "disabled", NULL};

static const char *const pg_types[] = {
    "openai",   "compatible", "anthropic",      "claude", "claude-code",
    "codex",    "gemini-cli", "antigravity",    "gemini", "google",
    "aistudio", "vertex",     "vertex-express", NULL,
};

/* s lower-cased with surrounding whitespace removed; the caller frees it. */
static char *normalize_type(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    char *out = ez_strndup(s, n);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

static const char *check_type(const char *v)
{
    char *t = normalize_type(v);
    bool ok = false;
    for (int i = 0; pg_types[i] && !ok; i++)
        ok = strcmp(pg_types[i], t) == 0;
    free(t);
    return ok ? NULL
              : "must be one of openai, compatible, anthropic, claude, claude-code, codex, "
                "gemini-cli, antigravity, gemini, google, aistudio, vertex, vertex-express";
}

/* An upstream model id: no whitespace or control characters (length is the field's). */
static const char *check_model_id(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain whitespace or control characters";
    return NULL;
}

static const struct field pg_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"name", "name", FT_TEXT, F_WRITE | F_REQ | F_SORT | F_FILTER, 1, 64, NULL, check_name},
    {"type", "type", FT_TEXT, F_WRITE | F_REQ | F_SORT | F_FILTER, 1, 64, NULL, check_type},
    {"base_url", "base_url", FT_TEXT, F_WRITE, 0, 2048, NULL, check_http_url},
    {"google_project", "google_project", FT_TEXT, F_WRITE, 0, 256, NULL, check_model_id},
    {"google_location", "google_location", FT_TEXT, F_WRITE, 0, 64, NULL, check_route_group},
    {"models", "models", FT_TEXTS, F_WRITE, 1, 255, NULL, check_model_id},
    {"group", "\"group\"", FT_TEXT, F_WRITE | F_SORT | F_FILTER, 0, 64, NULL, check_route_group},
    {"status", "status", FT_TEXT, F_WRITE | F_SORT, 0, 0, pg_status, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

static bool is_vertex(const char *type)
{
    return strcmp(type, "vertex") == 0 || strcmp(type, "vertex-express") == 0;
}

/*
 * Cross-field rules on the values the row will hold after the write (the
 * body's, else the stored ones): type normalised, base_url required for
 * compatible, google_location defaulting to global for vertex types, empty
 * route group meaning default, no repeated model id.
 */
static int pg_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    PGresult *cur = NULL;
    char *type = NULL;
    int rc = EZ_ERR;
    bool has;
    if (!x->create) {
        char idtxt[24];
        snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
        const char *params[1] = {idtxt};
        cur = db_exec(x,
                      "SELECT type, base_url, google_location FROM provider_groups "
                      "WHERE id = $1 FOR UPDATE",
                      1, params);
        if (cur == NULL)
            goto out;
        if (PQntuples(cur) != 1) {
            reply_error(x->r, 404, "not_found", NULL, "provider group %lld not found",
                        (long long)x->id);
            goto out;
        }
    }
    const char *t = wvals_get(vals, "type", &has);
    if (has) {
        type = normalize_type(t);
        wvals_set(vals, "type", FT_TEXT, type);
    } else {
        type = ez_strdup(cur ? PQgetvalue(cur, 0, 0) : "");
    }
    const char *url = wvals_get(vals, "base_url", &has);
    if (!has)
        url = cur ? PQgetvalue(cur, 0, 1) : "";
    if (strcmp(type, "compatible") == 0 && (url == NULL || *url == '\0')) {
        res_bad_field(x, "base_url", "is required for type compatible", NULL);
        goto out;
    }
    const char *loc = wvals_get(vals, "google_location", &has);
    if (!has)
        loc = cur ? PQgetvalue(cur, 0, 2) : "";
    if (is_vertex(type) && (loc == NULL || *loc == '\0'))
        wvals_set(vals, "google_location", FT_TEXT, "global");
    const char *grp = wvals_get(vals, "\"group\"", &has);
    if (has && grp && *grp == '\0')
        wvals_set(vals, "\"group\"", FT_TEXT, "default");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(body, "models");
    if (cJSON_IsArray(models)) {
        int i = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, models)
        {
            int j = 0;
            const cJSON *b;
            cJSON_ArrayForEach(b, models)
            {
                if (j >= i)
                    break;
                if (strcmp(a->valuestring, b->valuestring) == 0) {
                    char what[48];
                    snprintf(what, sizeof(what), "models[%d]", i);
                    res_bad_field(x, what, "repeats a model id", NULL);
                    goto out;
                }
                j++;
            }
            i++;
        }
    }
    rc = EZ_OK;
out:
    free(type);
    PQclear(cur);
    return rc;
}

/* Appends the comma-joined first column of res to b (at most max entries, then "..."). */
static void join_ids(buf_t *b, PGresult *res, int max)
{
    for (int i = 0; i < PQntuples(res) && i < max; i++)
        buf_printf(b, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
    if (PQntuples(res) > max)
        buf_puts(b, ",...");
}

/* One operation-log row per row deleted along with the group. */
static int audit_cascade(struct rctx *x, const char *resource, PGresult *res)
{
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddStringToObject(ch, "cascade", "provider_groups");
    cJSON_AddNumberToObject(ch, "group_id", (double)x->id);
    int rc = EZ_OK;
    for (int i = 0; i < PQntuples(res) && rc == EZ_OK; i++)
        rc = audit_write(x, x->action ? x->action : "delete", resource,
                         strtoll(PQgetvalue(res, i, 0), NULL, 10), ch);
    cJSON_Delete(ch);
    return rc;
}

/*
 * In-use check and cascade (same transaction as the group's DELETE): bindings
 * refuse the delete unless ?force=true; API keys always go with the group.
 */
static int pg_before_delete(struct rctx *x)
{
    const char *force_q = req_query(x->r, "force");
    bool force = false;
    if (force_q && *force_q) {
        if (strcmp(force_q, "true") == 0)
            force = true;
        else if (strcmp(force_q, "false") != 0)
            return reply_error(x->r, 400, "invalid_argument", "force",
                               "force must be true or false");
    }
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    const char *params[1] = {idtxt};
    PGresult *b = NULL, *k = NULL;
    cJSON *payload = NULL;
    buf_t ids;
    buf_init(&ids);
    int rc = EZ_ERR;
    b = db_exec(x,
                "SELECT id, namespace || '.' || public_model FROM bindings WHERE group_id = $1 "
                "ORDER BY id FOR UPDATE",
                1, params);
    if (b == NULL)
        goto out;
    if (PQntuples(b) > 0 && !force) {
        join_ids(&ids, b, 50);
        reply_error(x->r, 409, "conflict", x->prefix[0] ? x->prefix : NULL,
                    "provider group %lld is used by bindings [%s]; delete them first or use "
                    "?force=true",
                    (long long)x->id, ids.data);
        goto out;
    }
    payload = cJSON_CreateObject();
    cJSON *keys = cJSON_AddArrayToObject(payload, "binding_keys");
    for (int i = 0; i < PQntuples(b); i++)
        cJSON_AddItemToArray(keys, cJSON_CreateString(PQgetvalue(b, i, 1)));
    if (PQntuples(b) > 0) {
        PQclear(b);
        b = db_exec(x, "DELETE FROM bindings WHERE group_id = $1 RETURNING id", 1, params);
        if (b == NULL || audit_cascade(x, "bindings", b) != EZ_OK)
            goto out;
    }
    k = db_exec(x, "DELETE FROM api_keys WHERE group_id = $1 RETURNING id", 1, params);
    if (k == NULL || audit_cascade(x, "api_keys", k) != EZ_OK)
        goto out;
    cJSON *kids = cJSON_AddArrayToObject(payload, "api_key_ids");
    for (int i = 0; i < PQntuples(k); i++)
        cJSON_AddItemToArray(kids,
                             cJSON_CreateNumber((double)strtoll(PQgetvalue(k, i, 0), NULL, 10)));
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = payload;
    payload = NULL;
    rc = EZ_OK;
out:
    cJSON_Delete(payload);
    buf_free(&ids);
    PQclear(b);
    PQclear(k);
    return rc;
}

static const struct resource pg_resource = {
    .name = "provider_groups",
    .table = "provider_groups",
    .fields = pg_fields,
    .nfields = (int)EZ_ARRAY_LEN(pg_fields),
    .default_sort = "id",
    .before_write = pg_before_write,
    .before_delete = pg_before_delete,
};

int provider_groups_list(struct req *r)
{
    return res_list(r, &pg_resource, 0);
}

int provider_groups_create(struct req *r)
{
    return res_create(r, &pg_resource, 0);
}

int provider_groups_get(struct req *r)
{
    return res_get(r, &pg_resource, r->id, 0);
}

int provider_groups_update(struct req *r)
{
    return res_update(r, &pg_resource, r->id, 0);
}

int provider_groups_delete(struct req *r)
{
    return res_delete(r, &pg_resource, r->id, 0);
}
