/* /admin/namespaces: the first part of a model reference; deleting one in use is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "resource.h"

static const char *const ns_status[] = {"active", "disabled", NULL};

static const struct field ns_fields[] = {
    {"id", "id", FT_ID, F_SORT, 0, 0, NULL, NULL},
    {"name", "name", FT_TEXT, F_CREATE | F_REQ | F_SORT | F_FILTER, 1, 64, NULL, check_ns_name},
    {"description", "description", FT_TEXT, F_WRITE, 0, 512, NULL, NULL},
    {"status", "status", FT_TEXT, F_WRITE | F_SORT, 0, 0, ns_status, NULL},
    {"created_at", "created_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
    {"updated_at", "updated_at", FT_TIME, F_SORT, 0, 0, NULL, NULL},
};

/*
 * A namespace is in use while a master, key or binding names it. The answer
 * lists who (a few of each), so the operator knows what to change first.
 */
static int ns_before_delete(struct rctx *x)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)x->id);
    const char *params[1] = {idtxt};
    PGresult *res =
        db_exec(x,
                "WITH n AS (SELECT name FROM namespaces WHERE id = $1) "
                "SELECT (SELECT name FROM n), "
                " (SELECT string_agg(m.name, ',') FROM (SELECT masters.name FROM masters, n "
                "   WHERE n.name = ANY(masters.namespaces) OR masters.default_namespace = n.name "
                "   ORDER BY masters.id LIMIT 10) m), "
                " (SELECT string_agg(k.id::text, ',') FROM (SELECT keys.id FROM keys, n "
                "   WHERE n.name = ANY(keys.namespaces) ORDER BY keys.id LIMIT 10) k), "
                " (SELECT string_agg(b.id::text, ',') FROM (SELECT bindings.id FROM bindings, n "
                "   WHERE bindings.namespace = n.name ORDER BY bindings.id LIMIT 10) b)",
                1, params);
    if (res == NULL)
        return EZ_ERR;
    int rc = EZ_OK;
    if (strcmp(PQgetvalue(res, 0, 0), "default") == 0) {
        rc = reply_error(x->r, 409, "conflict", "name", "the default namespace cannot be deleted");
    } else if (!PQgetisnull(res, 0, 1) || !PQgetisnull(res, 0, 2) || !PQgetisnull(res, 0, 3)) {
        rc = reply_error(x->r, 409, "conflict", "name",
                         "namespace in use by masters [%s], keys [%s], bindings [%s]",
                         PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return rc;
}

static const struct resource ns_resource = {
    .name = "namespaces",
    .table = "namespaces",
    .fields = ns_fields,
    .nfields = (int)EZ_ARRAY_LEN(ns_fields),
    .default_sort = "id",
    .before_delete = ns_before_delete,
};

int namespaces_list(struct req *r)
{
    return res_list(r, &ns_resource, 0);
}

int namespaces_create(struct req *r)
{
    return res_create(r, &ns_resource, 0);
}

int namespaces_get(struct req *r)
{
    return res_get(r, &ns_resource, r->id, 0);
}

int namespaces_update(struct req *r)
{
    return res_update(r, &ns_resource, r->id, 0);
}

int namespaces_delete(struct req *r)
{
    return res_delete(r, &ns_resource, r->id, 0);
}
