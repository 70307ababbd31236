/*
 * /admin/bindings: routing of `namespace.public_model` to a provider group
 * (one candidate each). GET /admin/bindings/:id adds "resolved": the
 * upstream model each active API key of the group would be sent, computed
 * with common/selector.c exactly as the snapshot publisher does.
 * Choices where DATA.md is silent:
 *  - an absent or empty selector_value is stored as the public model (on
 *    update: the public model the row will have); it does not follow later
 *    renames of public_model, so what is stored is what routes;
 *  - "resolved.status" is "inactive" when the binding or its group is
 *    disabled (the resolution is still shown, to help fix it before enabling),
 *    else "ok" or "error"; only API keys with status `active` are providers.
 * The outbox payload {"binding_keys": [...]} names the old and new
 * "ns.public_model" keys, since a moved binding's old key cannot be found
 * from PostgreSQL afterwards (docs/outbox.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "resource.h"
#include "selector.h"
#include "wctx.h"

static const char *const b_status[] = {"active", "disabled", NULL};
static const char *const b_selector_types[] = {"exact", "regex", "normalize_exact", NULL};

static const struct field b_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"namespace", "namespace", FT_TEXT, F_WRITE | F_REQ | F_SORT | F_FILTER, 1, 64, NULL,
     check_ns_name},
    {"public_model", "public_model", FT_TEXT, F_WRITE | F_REQ | F_SORT | F_FILTER, 1, 64, NULL,
     check_name},
    {"group_id", "group_id", FT_ID, F_WRITE | F_REQ | F_SORT | F_FILTER, 0, 0, NULL, NULL},
    {"weight", "weight", FT_INT, F_WRITE | F_SORT, 1, 1000, NULL, NULL},
    {"selector_type", "selector_type", FT_TEXT, F_WRITE | F_SORT | F_FILTER, 0, 0, b_selector_types,
     NULL},
    {"selector_value", "selector_value", FT_TEXT, F_WRITE, 0, SELECTOR_VALUE_MAX, NULL, NULL},
    {"status", "status", FT_TEXT, F_WRITE | F_SORT, 0, 0, b_status, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

/* True when `sql` with one parameter returns a row; -1 after answering on a DB error. */
static int exists(struct rctx *x, const char *sql, const char *param)
{
    const char *params[1] = {param};
    PGresult *res = db_exec(x, sql, 1, params);
    if (res == NULL)
        return -1;
    int found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/* Adds "ns.m" to the payload's binding_keys unless already there. */
static void add_key(struct rctx *x, const char *ns, const char *pm)
{
    if (x->outbox_payload == NULL)
        x->outbox_payload = cJSON_CreateObject();
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(x->outbox_payload, "binding_keys");
    if (arr == NULL)
        arr = cJSON_AddArrayToObject(x->outbox_payload, "binding_keys");
    buf_t k;
    buf_init(&k);
    buf_printf(&k, "%s.%s", ns, pm);
    const cJSON *e;
    bool dup = false;
    cJSON_ArrayForEach(e, arr)
    {
        if (strcmp(e->valuestring, k.data) == 0)
            dup = true;
    }
    if (!dup)
        cJSON_AddItemToArray(arr, cJSON_CreateString(k.data));
    buf_free(&k);
}

/*
 * Rules on the row as it will be after the write (body values, else stored
 * ones): namespace and group exist (400), selector_value defaults to the
 * public model, a regex compiles, (namespace, public_model, group_id) is
 * free (409). Also records the old and new binding keys for the outbox.
 */
static int b_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    PGresult *cur = NULL;
    int rc = EZ_ERR;
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    if (!x->create) {
        const char *params[1] = {idtxt};
        cur = db_exec(x,
                      "SELECT namespace, public_model, group_id, selector_type, selector_value "
                      "FROM bindings WHERE id = $1 FOR UPDATE",
                      1, params);
        if (cur == NULL)
            goto out;
        if (PQntuples(cur) != 1) {
            reply_error(x->r, 404, "not_found", NULL, "binding %lld not found", (long long)x->id);
            goto out;
        }
    }
    bool has_ns, has_pm, has_gid, has_st, has_sv;
    const char *ns = wvals_get(vals, "namespace", &has_ns);
    const char *pm = wvals_get(vals, "public_model", &has_pm);
    const char *gid = wvals_get(vals, "group_id", &has_gid);
    const char *st = wvals_get(vals, "selector_type", &has_st);
    const char *sv = wvals_get(vals, "selector_value", &has_sv);
    if (!has_ns)
        ns = PQgetvalue(cur, 0, 0);
    if (!has_pm)
        pm = PQgetvalue(cur, 0, 1);
    if (!has_gid)
        gid = PQgetvalue(cur, 0, 2);
    if (!has_st)
        st = cur ? PQgetvalue(cur, 0, 3) : "exact";
    if (!has_sv)
        sv = cur ? PQgetvalue(cur, 0, 4) : "";
    if (has_ns) {
        int e = exists(x, "SELECT 1 FROM namespaces WHERE name = $1 FOR SHARE", ns);
        if (e < 0)
            goto out;
        if (e == 0) {
            res_bad_field(x, "namespace", "names no existing namespace", NULL);
            goto out;
        }
    }
    if (has_gid) {
        int e = exists(x, "SELECT 1 FROM provider_groups WHERE id = $1::bigint FOR SHARE", gid);
        if (e < 0)
            goto out;
        if (e == 0) {
            res_bad_field(x, "group_id", "names no existing provider group", NULL);
            goto out;
        }
    }
    if (sv == NULL || *sv == '\0') {
        wvals_set(vals, "selector_value", FT_TEXT, pm);
        sv = wvals_get(vals, "selector_value", NULL);
    }
    if (strcmp(st, "regex") == 0) {
        char why[128];
        if (selector_regex_check(sv, why, sizeof(why)) != 0) {
            res_bad_field(x, "selector_value", "is not a valid POSIX extended regex: ", why);
            goto out;
        }
    }
    if (has_ns || has_pm || has_gid) {
        const char *params[4] = {ns, pm, gid, idtxt};
        PGresult *dup = db_exec(x,
                                "SELECT id FROM bindings WHERE namespace = $1 AND "
                                "public_model = $2 AND group_id = $3::bigint AND id <> $4::bigint",
                                4, params);
        if (dup == NULL)
            goto out;
        if (PQntuples(dup) > 0) {
            char name[160];
            snprintf(name, sizeof(name), "%spublic_model", x->prefix);
            reply_error(x->r, 409, "conflict", name,
                        "binding %s.%s to provider group %s already exists (id %s)", ns, pm, gid,
                        PQgetvalue(dup, 0, 0));
            PQclear(dup);
            goto out;
        }
        PQclear(dup);
    }
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = NULL;
    if (cur)
        add_key(x, PQgetvalue(cur, 0, 0), PQgetvalue(cur, 0, 1));
    add_key(x, ns, pm);
    rc = EZ_OK;
out:
    PQclear(cur);
    return rc;
}

/* The binding key of row x->id into the outbox payload (status changes, deletes). */
static int add_stored_key(struct rctx *x)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    const char *params[1] = {idtxt};
    PGresult *res =
        db_exec(x, "SELECT namespace, public_model FROM bindings WHERE id = $1", 1, params);
    if (res == NULL)
        return EZ_ERR;
    if (PQntuples(res) == 1)
        add_key(x, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    PQclear(res);
    return EZ_OK;
}

/* Batch enable/disable skip before_write: name the key here when nothing did. */
static int b_after_write(struct rctx *x, const cJSON *body)
{
    (void)body;
    return x->outbox_payload ? EZ_OK : add_stored_key(x);
}

static int b_before_delete(struct rctx *x)
{
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = NULL;
    return add_stored_key(x);
}

static const struct resource b_resource = {
    .name = "bindings",
    .table = "bindings",
    .fields = b_fields,
    .nfields = (int)EZ_ARRAY_LEN(b_fields),
    .default_sort = "id",
    .before_write = b_before_write,
    .after_write = b_after_write,
    .before_delete = b_before_delete,
    .search_col = "public_model",
};

/* A JSON list as returned by array_to_json()::text; NULL when not a list. */
static cJSON *parse_list(const char *text)
{
    cJSON *a = cJSON_Parse(text);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

/*
 * "resolved" of binding id: {"status", "error", "upstreams"} from its group's
 * models and active API keys. NULL on a database error (logged).
 */
static cJSON *resolve(struct req *r, PGconn *c, int64_t id)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    const char *params[1] = {idtxt};
    PGresult *res = PQexecParams(
        c,
        "SELECT b.status, g.status, b.selector_type, b.selector_value, "
        " array_to_json(g.models)::text, "
        " (SELECT coalesce(json_agg(k.id ORDER BY k.id), '[]'::json)::text FROM api_keys k "
        "   WHERE k.group_id = g.id AND k.status = 'active') "
        "FROM bindings b JOIN provider_groups g ON g.id = b.group_id WHERE b.id = $1",
        1, NULL, params, NULL, NULL, 0);
    cJSON *out = NULL, *models = NULL, *keys = NULL;
    const char **mv = NULL;
    int64_t *kv = NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=binding_resolve_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        goto out;
    }
    out = cJSON_CreateObject();
    cJSON *up = cJSON_CreateObject();
    if (PQntuples(res) != 1) {
        /* Deleted between the two reads: nothing routes there. */
        cJSON_AddStringToObject(out, "status", "inactive");
        cJSON_AddStringToObject(out, "error", "");
        cJSON_AddItemToObject(out, "upstreams", up);
        goto out;
    }
    models = parse_list(PQgetvalue(res, 0, 4));
    keys = parse_list(PQgetvalue(res, 0, 5));
    int nm = models ? cJSON_GetArraySize(models) : 0, nk = keys ? cJSON_GetArraySize(keys) : 0;
    mv = ez_calloc((size_t)nm + 1, sizeof(*mv));
    kv = ez_calloc((size_t)nk + 1, sizeof(*kv));
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, models)
    {
        if (cJSON_IsString(e))
            mv[i++] = e->valuestring;
    }
    nm = i;
    i = 0;
    cJSON_ArrayForEach(e, keys)
    {
        if (cJSON_IsNumber(e))
            kv[i++] = (int64_t)e->valuedouble;
    }
    nk = i;
    const char *err = selector_resolve_binding(PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), mv,
                                               (size_t)nm, kv, (size_t)nk, up);
    bool active = strcmp(PQgetvalue(res, 0, 0), "active") == 0 &&
                  strcmp(PQgetvalue(res, 0, 1), "active") == 0;
    cJSON_AddStringToObject(out, "status", !active ? "inactive" : *err ? "error" : "ok");
    cJSON_AddStringToObject(out, "error", err);
    cJSON_AddItemToObject(out, "upstreams", up);
out:
    free(mv);
    free(kv);
    cJSON_Delete(models);
    cJSON_Delete(keys);
    PQclear(res);
    return out;
}

int bindings_list(struct req *r)
{
    return res_list(r, &b_resource, 0);
}

int bindings_create(struct req *r)
{
    return res_create(r, &b_resource, 0);
}

/* GET /admin/bindings/:id: the row plus its resolution. */
int bindings_get(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    struct rctx x;
    memset(&x, 0, sizeof(x));
    x.r = r;
    x.c = c;
    x.res = &b_resource;
    x.prefix = "";
    cJSON *row = res_fetch(&x, r->id), *resolved = NULL;
    if (row == NULL) {
        if (db_get(&r->w->db) == NULL)
            return reply_error(r, 503, "unavailable", NULL, "database unavailable");
        return reply_error(r, 404, "not_found", NULL, "bindings %lld not found", (long long)r->id);
    }
    resolved = resolve(r, c, r->id);
    if (resolved == NULL) {
        cJSON_Delete(row);
        return reply_error(r, 503, "unavailable", NULL, "database error");
    }
    cJSON_AddItemToObject(row, "resolved", resolved);
    reply_json(r, 200, row);
    cJSON_Delete(row);
    return EZ_OK;
}

int bindings_update(struct req *r)
{
    return res_update(r, &b_resource, r->id, 0);
}

int bindings_delete(struct req *r)
{
    return res_delete(r, &b_resource, r->id, 0);
}

int bindings_batch(struct req *r)
{
    return res_batch(r, &b_resource, NULL, NULL);
}
