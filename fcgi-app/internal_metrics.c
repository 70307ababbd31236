/* GET /internal/metrics: Prometheus text (0.0.4) or ?format=json. */
#include "handlers.h"

#include <string.h>
#include "metrics.h"
#include "wctx.h"

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
    if (fmt && strcmp(fmt, "json") == 0) {
        cJSON *root = cJSON_CreateObject();
        metrics_render_json(root);
        cJSON_AddNumberToObject(root, "pg_up", pg);
        cJSON_AddNumberToObject(root, "redis_up", rd);
        reply_json(r, 200, root);
        cJSON_Delete(root);
        return EZ_OK;
    }
    if (fmt && strcmp(fmt, "prometheus") != 0)
        return reply_error(r, 400, "invalid_argument", "format",
                           "format must be prometheus or json");
    buf_t out;
    buf_init(&out);
    metrics_render_prometheus(&out);
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
