/* GET /internal/metrics: Prometheus text (0.0.4) or ?format=json. */
#include "handlers.h"

#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "metrics.h"
#include "snapshot_shapes.h"
#include "wctx.h"

/*
 * Snapshot publishing as the background reports it: outbox backlog from
 * sync_outbox (-1 = PostgreSQL unreachable), the rest from its bookkeeping
 * keys in Redis (-1 = unknown: Redis unreachable or never published).
 */
struct sync_metrics {
    long long pending, failed, applied;
    long long publishes[EZ_SNAPSHOT_NRESOURCES];
    long long published_at[EZ_SNAPSHOT_NRESOURCES];
};

/* Both counts can use the partial indexes on pending and failed rows. */
static const char outbox_counts_sql[] =
    "SELECT (SELECT count(*) FROM sync_outbox WHERE status = 'pending'), "
    "(SELECT count(*) FROM sync_outbox WHERE status = 'failed')";

/*
 * Both reads below try twice: a connection that broke while idle (the
 * server restarted) fails its first command, is dropped, and a fresh one
 * answers. Only a real outage leaves the values unknown.
 */
static void read_outbox_counts(struct wctx *w, struct sync_metrics *m)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = db_get(&w->db);
        if (c == NULL)
            return;
        PGresult *res = PQexecParams(c, outbox_counts_sql, 0, NULL, NULL, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        if (ok) {
            m->pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            m->failed = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        } else if (attempt == 1) {
            log_warn("event=metrics_outbox_failed error=\"%s\"", PQresultErrorMessage(res));
        }
        PQclear(res);
        if (ok)
            return;
        db_check(&w->db);
    }
}

/* One Redis command with one string argument; NULL when Redis cannot answer. */
static redisReply *redis_cmd(struct wctx *w, const char *fmt, const char *arg)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *c = rds_get(&w->redis);
        if (c == NULL)
            return NULL;
        redisReply *r = redisCommand(c, fmt, arg);
        if (r)
            return r;
        rds_check(&w->redis);
    }
    return NULL;
}

/* Fills out[i] from field ez_snapshot_resources[i] of an HGETALL reply. */
static void hash_values(const redisReply *r, long long *out)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        for (int k = 0; k < EZ_SNAPSHOT_NRESOURCES; k++)
            if (r->element[i]->str && strcmp(r->element[i]->str, ez_snapshot_resources[k]) == 0 &&
                r->element[i + 1]->str)
                out[k] = strtoll(r->element[i + 1]->str, NULL, 10);
}

static void read_snapshot_stats(struct wctx *w, struct sync_metrics *m)
{
    redisReply *r = redis_cmd(w, "HGETALL %s", EZ_SNAPSHOT_PUBLISHES_KEY);
    if (r == NULL)
        return;
    hash_values(r, m->publishes);
    freeReplyObject(r);
    r = redis_cmd(w, "HGETALL %s", EZ_SNAPSHOT_PUBLISHED_AT_KEY);
    hash_values(r, m->published_at);
    if (r)
        freeReplyObject(r);
    r = redis_cmd(w, "GET %s", EZ_OUTBOX_APPLIED_KEY);
    if (r && r->type == REDIS_REPLY_STRING)
        m->applied = strtoll(r->str, NULL, 10);
    else if (r && r->type == REDIS_REPLY_NIL)
        m->applied = 0;
    if (r)
        freeReplyObject(r);
}

static void read_sync_metrics(struct wctx *w, struct sync_metrics *m)
{
    m->pending = m->failed = m->applied = -1;
    for (int k = 0; k < EZ_SNAPSHOT_NRESOURCES; k++)
        m->publishes[k] = m->published_at[k] = -1;
    read_outbox_counts(w, m);
    read_snapshot_stats(w, m);
}

static void sync_metrics_json(cJSON *root, const struct sync_metrics *m)
{
    cJSON *o = cJSON_AddObjectToObject(root, "outbox");
    cJSON_AddNumberToObject(o, "pending", (double)m->pending);
    cJSON_AddNumberToObject(o, "failed", (double)m->failed);
    cJSON_AddNumberToObject(o, "applied", (double)m->applied);
    cJSON *s = cJSON_AddObjectToObject(root, "snapshot");
    for (int k = 0; k < EZ_SNAPSHOT_NRESOURCES; k++) {
        cJSON *one = cJSON_AddObjectToObject(s, ez_snapshot_resources[k]);
        cJSON_AddNumberToObject(one, "publishes", (double)m->publishes[k]);
        cJSON_AddNumberToObject(one, "last_published_at", (double)m->published_at[k]);
    }
}

/* Unknown values (-1) are left out: Prometheus reads a missing series as "no data". */
static void sync_metrics_prometheus(buf_t *out, const struct sync_metrics *m)
{
    if (m->pending >= 0)
        buf_printf(out,
                   "# HELP ezapi_outbox_pending Outbox rows waiting to be applied to Redis.\n"
                   "# TYPE ezapi_outbox_pending gauge\nezapi_outbox_pending %lld\n"
                   "# HELP ezapi_outbox_failed Outbox rows that used up their retries "
                   "(the next full rebuild repairs Redis).\n"
                   "# TYPE ezapi_outbox_failed gauge\nezapi_outbox_failed %lld\n",
                   m->pending, m->failed);
    if (m->applied >= 0)
        buf_printf(out,
                   "# HELP ezapi_outbox_applied_total Outbox rows applied to Redis.\n"
                   "# TYPE ezapi_outbox_applied_total counter\nezapi_outbox_applied_total %lld\n",
                   m->applied);
    buf_puts(out, "# HELP ezapi_snapshot_publishes_total Snapshot publishes per resource.\n"
                  "# TYPE ezapi_snapshot_publishes_total counter\n");
    for (int k = 0; k < EZ_SNAPSHOT_NRESOURCES; k++)
        if (m->publishes[k] >= 0)
            buf_printf(out, "ezapi_snapshot_publishes_total{resource=\"%s\"} %lld\n",
                       ez_snapshot_resources[k], m->publishes[k]);
    buf_puts(out, "# HELP ezapi_snapshot_last_publish_timestamp_seconds Unix time of the last "
                  "snapshot publish per resource.\n"
                  "# TYPE ezapi_snapshot_last_publish_timestamp_seconds gauge\n");
    for (int k = 0; k < EZ_SNAPSHOT_NRESOURCES; k++)
        if (m->published_at[k] >= 0)
            buf_printf(out, "ezapi_snapshot_last_publish_timestamp_seconds{resource=\"%s\"} %lld\n",
                       ez_snapshot_resources[k], m->published_at[k]);
}

static int pg_up(struct wctx *w)
{
    return db_get(&w->db) != NULL;
}

static int redis_up(struct wctx *w)
{
    return rds_get(&w->redis) != NULL;
}

int internal_metrics_get(struct req *r)
{
    const char *fmt = req_query(r, "format");
    int pg = pg_up(r->w), rd = redis_up(r->w);
    if (fmt && strcmp(fmt, "json") != 0 && strcmp(fmt, "prometheus") != 0)
        return reply_error(r, 400, "invalid_argument", "format",
                           "format must be prometheus or json");
    struct sync_metrics sm;
    read_sync_metrics(r->w, &sm);
    if (fmt && strcmp(fmt, "json") == 0) {
        cJSON *root = cJSON_CreateObject();
        metrics_render_json(root);
        sync_metrics_json(root, &sm);
        logs_metrics_append(r, NULL, root); /* log pipeline (internal_logs.c) */
        cJSON_AddNumberToObject(root, "pg_up", pg);
        cJSON_AddNumberToObject(root, "redis_up", rd);
        reply_json(r, 200, root);
        cJSON_Delete(root);
        return EZ_OK;
    }
    buf_t out;
    buf_init(&out);
    metrics_render_prometheus(&out);
    sync_metrics_prometheus(&out, &sm);
    logs_metrics_append(r, &out, NULL); /* log pipeline (internal_logs.c) */
    buf_printf(&out,
               "# HELP ezapi_pg_up Main PostgreSQL reachable from this worker.\n"
               "# TYPE ezapi_pg_up gauge\nezapi_pg_up %d\n"
               "# HELP ezapi_redis_up Redis reachable from this worker.\n"
               "# TYPE ezapi_redis_up gauge\nezapi_redis_up %d\n",
               pg, rd);
    reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    buf_free(&out);
    return EZ_OK;
}
