/*
 * /v1 (tenant API): a master, authenticated by its master key (auth.c sets
 * r->master_id; a suspended master gets 403 there), sees itself, manages its
 * own child keys (/v1/tokens, the same resource code as
 * /admin/masters/:id/keys in keys.c, scoped to the caller) and reads its
 * realtime counters. Another master's key id answers 404, never 403.
 *
 * What a tenant may not do to its keys (API.md: "A tenant may not widen a key
 * beyond its own namespaces, nor set quota_limit beyond what the admin
 * allowed"), enforced in keys.c:
 * - namespaces (and the namespace part of model_limits) must stay within the
 *   master's own namespaces: 400 naming the field (the admin API applies the
 *   same rule);
 * - on PUT, quota_limit may be lowered but not raised above the key's current
 *   value, and a limited key may not be made unlimited (-1): 403 forbidden
 *   naming quota_limit. Our reading of "what the admin allowed" is the key's
 *   current limit; a new key (POST) is the tenant's own and may carry any
 *   quota_limit, within max_child_keys (409 past it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "keys.h"
#include "log.h"
#include "wctx.h"

/*
 * GET /v1/self: the master (no secrets) plus "key_count" and the summed
 * "quota_used" of its keys; request_count and token_count are the master's
 * usage totals from the stats flushes.
 */
int tenant_self(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    cJSON *m = masters_fetch_json(r, c, r->master_id);
    PGresult *res = NULL;
    int rc = EZ_ERR;
    if (m == NULL) {
        if (db_get(&r->w->db) == NULL)
            reply_error(r, 503, "unavailable", NULL, "database unavailable");
        else /* deleted between authentication and now */
            reply_error(r, 404, "not_found", NULL, "master not found");
        goto out;
    }
    char mid[24];
    snprintf(mid, sizeof(mid), "%lld", (long long)r->master_id);
    const char *params[1] = {mid};
    res = PQexecParams(c,
                       "SELECT count(*), coalesce(sum(quota_used), 0) FROM keys "
                       "WHERE master_id = $1",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=self_query_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        goto out;
    }
    cJSON_AddNumberToObject(m, "key_count", (double)strtoll(PQgetvalue(res, 0, 0), NULL, 10));
    cJSON_AddNumberToObject(m, "quota_used", (double)strtoll(PQgetvalue(res, 0, 1), NULL, 10));
    reply_json(r, 200, m);
    rc = EZ_OK;
out:
    PQclear(res);
    cJSON_Delete(m);
    return rc;
}

int tenant_tokens_list(struct req *r)
{
    return keys_list_for(r, r->master_id);
}

int tenant_tokens_create(struct req *r)
{
    return keys_create_for(r, r->master_id);
}

int tenant_tokens_get(struct req *r)
{
    return keys_get_for(r, r->master_id, r->id);
}

int tenant_tokens_update(struct req *r)
{
    return keys_update_for(r, r->master_id, r->id);
}

int tenant_tokens_delete(struct req *r)
{
    return keys_delete_for(r, r->master_id, r->id);
}

int tenant_tokens_rotate(struct req *r)
{
    return keys_rotate_for(r, r->master_id, r->id);
}

int tenant_realtime(struct req *r)
{
    return masters_realtime_reply(r, r->master_id);
}
