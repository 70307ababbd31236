/*
 * /admin/models: model capabilities published for the data plane, named by a
 * public model `m` or a binding key `ns.m`. `source` is read-only (rows made
 * here are `manual`); an empty `kind` is stored as `chat`. The outbox payload
 * {"names": [...]} lists the old and new names, since a renamed or deleted
 * model's `meta:models` entries cannot be found from PostgreSQL afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "resource.h"

static const char *const model_kinds[] = {"", "chat", "embedding", "rerank", "other", NULL};
static const char *const model_sources[] = {"manual", "registry", NULL};

static const struct field model_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"name", "name", FT_TEXT, F_WRITE | F_REQ | F_SORT, 1, 255, NULL, check_model_ref},
    {"kind", "kind", FT_TEXT, F_WRITE | F_SORT | F_FILTER, 0, 0, model_kinds, NULL},
    {"context_window", "context_window", FT_INT, F_WRITE | F_SORT, 0, JSON_MAX_SAFE_INT, NULL,
     NULL},
    {"cost_per_token", "cost_per_token", FT_FLOAT, F_WRITE | F_SORT, 0, 1000000, NULL, NULL},
    {"supports_vision", "supports_vision", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"supports_functions", "supports_functions", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"supports_tool_choice", "supports_tool_choice", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"supports_fim", "supports_fim", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"supports_stream", "supports_stream", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"max_output_tokens", "max_output_tokens", FT_INT, F_WRITE | F_SORT, 0, JSON_MAX_SAFE_INT, NULL,
     NULL},
    {"source", "source", FT_TEXT, F_SORT | F_FILTER, 0, 0, model_sources, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

/* Adds s to the JSON string list arr unless it is already there. */
static void add_name(cJSON *arr, const char *s)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (strcmp(e->valuestring, s) == 0)
            return;
    }
    cJSON_AddItemToArray(arr, cJSON_CreateString(s));
}

/* The stored name of model x->id into the payload's names; 404 when it is gone. */
static int add_stored_name(struct rctx *x, cJSON *names)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    const char *params[1] = {idtxt};
    PGresult *res = db_exec(x, "SELECT name FROM models WHERE id = $1 FOR UPDATE", 1, params);
    if (res == NULL)
        return EZ_ERR;
    int rc = EZ_OK;
    if (PQntuples(res) == 1)
        add_name(names, PQgetvalue(res, 0, 0));
    else
        rc = reply_error(x->r, 404, "not_found", x->prefix[0] ? x->prefix : NULL,
                         "model %lld not found", (long long)x->id);
    PQclear(res);
    return rc;
}

/* Sets the outbox payload {"names": [old?, new?]}. */
static cJSON *payload_names(struct rctx *x)
{
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = cJSON_CreateObject();
    return cJSON_AddArrayToObject(x->outbox_payload, "names");
}

static int model_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    bool has;
    const char *kind = wvals_get(vals, "kind", &has);
    if (has && kind && *kind == '\0')
        wvals_set(vals, "kind", FT_TEXT, "chat");
    cJSON *names = payload_names(x);
    if (!x->create && add_stored_name(x, names) != EZ_OK)
        return EZ_ERR;
    const char *name = wvals_get(vals, "name", &has);
    if (has && name)
        add_name(names, name);
    return EZ_OK;
}

static int model_before_delete(struct rctx *x)
{
    return add_stored_name(x, payload_names(x));
}

static const struct resource model_resource = {
    .name = "models",
    .table = "models",
    .fields = model_fields,
    .nfields = (int)EZ_ARRAY_LEN(model_fields),
    .default_sort = "id",
    .before_write = model_before_write,
    .before_delete = model_before_delete,
};

int models_list(struct req *r)
{
    return res_list(r, &model_resource, 0);
}

int models_create(struct req *r)
{
    return res_create(r, &model_resource, 0);
}

int models_get(struct req *r)
{
    return res_get(r, &model_resource, r->id, 0);
}

int models_update(struct req *r)
{
    return res_update(r, &model_resource, r->id, 0);
}

int models_delete(struct req *r)
{
    return res_delete(r, &model_resource, r->id, 0);
}

int models_batch(struct req *r)
{
    return res_batch(r, &model_resource, NULL, NULL);
}
