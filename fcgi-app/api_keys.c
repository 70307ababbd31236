/*
 * /admin/api-keys: upstream credentials inside a provider group, each one a
 * data-plane provider `<group name>#<id>`. The secret `api_key` is
 * write-only: rendered masked, redacted in operation logs, never logged.
 * Outbox payloads (docs/outbox.md) name what cannot be read back from the
 * key's row afterwards: a deletion carries {"group_id": <its group>,
 * "binding_keys": [that group's binding keys]}; an update that moves the key
 * to another group carries the same shape with the group it left and the
 * binding keys of both groups (the new group is the row's current one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "json.h"
#include "resource.h"

static const char *const ak_status[] = {"active", "disabled", "banned", NULL};

/* A credential goes into an HTTP header at the data plane: no whitespace or control characters. */
static const char *check_secret(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain whitespace or control characters";
    return NULL;
}

static const struct field ak_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"group_id", "group_id", FT_ID, F_WRITE | F_REQ | F_SORT | F_FILTER, 0, 0, NULL, NULL},
    {"api_key", "api_key", FT_TEXT, F_WRITE | F_REQ | F_SECRET, 1, 4096, NULL, check_secret},
    {"weight", "weight", FT_INT, F_WRITE | F_SORT, 1, 1000, NULL, NULL},
    {"status", "status", FT_TEXT, F_WRITE | F_SORT, 0, 0, ak_status, NULL},
    {"auto_ban", "auto_ban", FT_BOOL, F_WRITE | F_FILTER, 0, 0, NULL, NULL},
    {"ban_until", "ban_until", FT_TIME, F_WRITE | F_NULL | F_SORT, 0, 0, NULL, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

/* Adds the binding keys ("ns.model") of the groups in ids (1 or 2) to arr. */
static int add_binding_keys(struct rctx *x, const char *const *ids, int n, cJSON *arr)
{
    const char *params[2] = {ids[0], n > 1 ? ids[1] : ids[0]};
    PGresult *res = db_exec(x,
                            "SELECT DISTINCT namespace || '.' || public_model FROM bindings "
                            "WHERE group_id IN ($1::bigint, $2::bigint) ORDER BY 1",
                            2, params);
    if (res == NULL)
        return EZ_ERR;
    for (int i = 0; i < PQntuples(res); i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(PQgetvalue(res, i, 0)));
    PQclear(res);
    return EZ_OK;
}

/*
 * group_id must name an existing provider group (400, not the foreign key's
 * 409: it is a bad value in this request). On update, a changed group_id
 * sets the outbox payload: the group left and both groups' binding keys.
 */
static int ak_before_write(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    (void)body;
    bool has;
    const char *gid = wvals_get(vals, "group_id", &has);
    if (!has)
        return EZ_OK;
    const char *params[1] = {gid};
    PGresult *res =
        db_exec(x, "SELECT 1 FROM provider_groups WHERE id = $1::bigint FOR SHARE", 1, params);
    if (res == NULL)
        return EZ_ERR;
    bool exists = PQntuples(res) == 1;
    PQclear(res);
    if (!exists) {
        char name[160];
        snprintf(name, sizeof(name), "%sgroup_id", x->prefix);
        return reply_error(x->r, 400, "invalid_argument", name,
                           "%s: provider group %s does not exist", name, gid);
    }
    if (x->create)
        return EZ_OK;
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    params[0] = idtxt;
    res = db_exec(x, "SELECT group_id FROM api_keys WHERE id = $1 FOR UPDATE", 1, params);
    if (res == NULL)
        return EZ_ERR;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return reply_error(x->r, 404, "not_found", NULL, "api key %lld not found",
                           (long long)x->id);
    }
    char old[24];
    snprintf(old, sizeof(old), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (strcmp(old, gid) == 0)
        return EZ_OK;
    cJSON *pl = cJSON_CreateObject();
    cJSON_AddNumberToObject(pl, "group_id", (double)strtoll(old, NULL, 10));
    const char *both[2] = {old, gid};
    if (add_binding_keys(x, both, 2, cJSON_AddArrayToObject(pl, "binding_keys")) != EZ_OK) {
        cJSON_Delete(pl);
        return EZ_ERR;
    }
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = pl;
    return EZ_OK;
}

/* The deleted key's group and its binding keys cannot be read back afterwards. */
static int ak_before_delete(struct rctx *x)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    const char *params[1] = {idtxt};
    PGresult *res = db_exec(x, "SELECT group_id FROM api_keys WHERE id = $1", 1, params);
    if (res == NULL)
        return EZ_ERR;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return reply_error(x->r, 404, "not_found", x->prefix[0] ? x->prefix : NULL,
                           "api key %lld not found", (long long)x->id);
    }
    char gid[24];
    snprintf(gid, sizeof(gid), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    cJSON *pl = cJSON_CreateObject();
    cJSON_AddNumberToObject(pl, "group_id", (double)strtoll(gid, NULL, 10));
    const char *one[1] = {gid};
    if (add_binding_keys(x, one, 1, cJSON_AddArrayToObject(pl, "binding_keys")) != EZ_OK) {
        cJSON_Delete(pl);
        return EZ_ERR;
    }
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = pl;
    return EZ_OK;
}

static const struct resource ak_resource = {
    .name = "api_keys",
    .table = "api_keys",
    .fields = ak_fields,
    .nfields = (int)EZ_ARRAY_LEN(ak_fields),
    .default_sort = "id",
    .before_write = ak_before_write,
    .before_delete = ak_before_delete,
};

int api_keys_list(struct req *r)
{
    return res_list(r, &ak_resource, 0);
}

int api_keys_create(struct req *r)
{
    return res_create(r, &ak_resource, 0);
}

int api_keys_get(struct req *r)
{
    return res_get(r, &ak_resource, r->id, 0);
}

int api_keys_update(struct req *r)
{
    return res_update(r, &ak_resource, r->id, 0);
}

int api_keys_delete(struct req *r)
{
    return res_delete(r, &ak_resource, r->id, 0);
}

int api_keys_batch(struct req *r)
{
    return res_batch(r, &ak_resource, NULL, NULL);
}
