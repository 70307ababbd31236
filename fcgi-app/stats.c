/*
 * GET /admin/stats: counts of every resource (one statement on the main DB),
 * the last 24 hours of request logs (one statement on the log DB), the outbox
 * backlog and the time of the last snapshot publish (Redis).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "log.h"
#include "wctx.h"

/*
 * Redis hash written by the background's snapshot publisher after every
 * successful publish: field = resource (tokens, masters, providers, bindings,
 * models, features), value = unix seconds of that publish. The admin stats
 * report the newest value as snapshot.last_published_at (null when the hash
 * is missing, e.g. before the first publish or after Redis restarted empty).
 */
#define SNAPSHOT_PUBLISHED_AT_KEY "ezapi:snapshot:published_at"

/*
 * Keys: an active key whose expires_at has passed counts as expired (the
 * expiry job may not have flipped its status yet), so the four statuses add
 * up to total.
 */
static const char *const main_counts_sql =
    "SELECT m.total, m.active, m.suspended, "
    "       k.total, k.active, k.disabled, k.expired, k.exhausted, "
    "       (SELECT count(*) FROM provider_groups), "
    "       a.total, a.active, a.banned, "
    "       (SELECT count(*) FROM bindings), "
    "       (SELECT count(*) FROM models), "
    "       (SELECT count(*) FROM namespaces), "
    "       o.pending, o.failed "
    "FROM (SELECT count(*) AS total, "
    "             count(*) FILTER (WHERE status = 'active') AS active, "
    "             count(*) FILTER (WHERE status = 'suspended') AS suspended "
    "      FROM masters) m, "
    "     (SELECT count(*) AS total, "
    "             count(*) FILTER (WHERE status = 'active' "
    "                              AND (expires_at IS NULL OR expires_at > now())) AS active, "
    "             count(*) FILTER (WHERE status = 'disabled') AS disabled, "
    "             count(*) FILTER (WHERE status = 'expired' "
    "                              OR (status = 'active' AND expires_at <= now())) AS expired, "
    "             count(*) FILTER (WHERE status = 'exhausted') AS exhausted "
    "      FROM keys) k, "
    "     (SELECT count(*) AS total, "
    "             count(*) FILTER (WHERE status = 'active') AS active, "
    "             count(*) FILTER (WHERE status = 'banned') AS banned "
    "      FROM api_keys) a, "
    "     (SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
    "             count(*) FILTER (WHERE status = 'failed') AS failed "
    "      FROM sync_outbox WHERE status IN ('pending', 'failed')) o";

/*
 * An error is a request answered with a status >= 400, or one without a
 * status that carries an error message (the data plane gave up).
 */
static const char *const last_24h_sql =
    "SELECT count(*), "
    "       count(*) FILTER (WHERE status_code >= 400 "
    "                        OR (status_code IS NULL AND coalesce(error, '') <> '')), "
    "       coalesce(sum(total_tokens), 0) "
    "FROM request_logs WHERE created_at >= now() - interval '24 hours'";

static double num(PGresult *res, int col)
{
    return (double)strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

static void add_counts(cJSON *obj, PGresult *res, int col, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        cJSON_AddNumberToObject(obj, names[i], num(res, col + i));
}

/* The newest publish time in SNAPSHOT_PUBLISHED_AT_KEY, or -1 (none, or Redis down). */
static int64_t last_published_at(struct wctx *w)
{
    redisContext *c = rds_get(&w->redis);
    if (c == NULL)
        return -1;
    redisReply *rep = redisCommand(c, "HVALS %s", SNAPSHOT_PUBLISHED_AT_KEY);
    int64_t best = -1;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        log_warn("event=stats_redis_failed error=\"%s\"",
                 rep ? rep->str : (c->errstr[0] ? c->errstr : "no reply"));
        if (rep == NULL)
            rds_check(&w->redis);
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *e = rep->element[i];
            int64_t v;
            if (e->type == REDIS_REPLY_STRING &&
                ez_parse_int64(e->str, 0, 253402300799LL, &v) == EZ_OK && v > best)
                best = v;
        }
    }
    if (rep)
        freeReplyObject(rep);
    return best;
}

int stats_get(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    PGresult *res = PQexecParams(c, main_counts_sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        log_error("event=stats_failed error=\"%s\"", PQresultErrorMessage(res));
        PQclear(res);
        db_check(&r->w->db);
        return reply_error(r, 503, "unavailable", NULL, "database error");
    }
    cJSON *out = cJSON_CreateObject();
    static const char *const m_names[] = {"total", "active", "suspended", NULL};
    static const char *const k_names[] = {"total",   "active",    "disabled",
                                          "expired", "exhausted", NULL};
    static const char *const a_names[] = {"total", "active", "banned", NULL};
    static const char *const o_names[] = {"pending", "failed", NULL};
    add_counts(cJSON_AddObjectToObject(out, "masters"), res, 0, m_names);
    add_counts(cJSON_AddObjectToObject(out, "keys"), res, 3, k_names);
    cJSON_AddNumberToObject(out, "provider_groups", num(res, 8));
    add_counts(cJSON_AddObjectToObject(out, "api_keys"), res, 9, a_names);
    cJSON_AddNumberToObject(out, "bindings", num(res, 12));
    cJSON_AddNumberToObject(out, "models", num(res, 13));
    cJSON_AddNumberToObject(out, "namespaces", num(res, 14));
    cJSON *outbox = cJSON_CreateObject();
    add_counts(outbox, res, 15, o_names);
    PQclear(res);

    /* The log DB may be a separate server: when it is down the rest is still worth showing. */
    PGconn *lc = db_get(&r->w->log_db);
    res = lc ? PQexecParams(lc, last_24h_sql, 0, NULL, NULL, NULL, NULL, 0) : NULL;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        cJSON *l = cJSON_AddObjectToObject(out, "last_24h");
        static const char *const l_names[] = {"requests", "errors", "total_tokens", NULL};
        add_counts(l, res, 0, l_names);
    } else {
        if (lc) {
            log_error("event=stats_log_db_failed error=\"%s\"", PQresultErrorMessage(res));
            db_check(&r->w->log_db);
        }
        cJSON_AddNullToObject(out, "last_24h");
    }
    PQclear(res);

    cJSON_AddItemToObject(out, "outbox", outbox);
    cJSON *snap = cJSON_AddObjectToObject(out, "snapshot");
    int64_t pub = last_published_at(r->w);
    if (pub >= 0) {
        char iso[40];
        ez_format_time(pub, iso, sizeof(iso));
        cJSON_AddStringToObject(snap, "last_published_at", iso);
    } else {
        cJSON_AddNullToObject(snap, "last_published_at");
    }
    reply_json(r, 200, out);
    cJSON_Delete(out);
    return EZ_OK;
}
