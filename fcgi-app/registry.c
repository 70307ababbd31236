/*
 * /admin/models/registry: the model registry's state (model_registry_state,
 * kept by the background's "model_registry" job) and the refresh trigger,
 * a ZeroMQ kick of that job. See docs/model-registry.md.
 *
 * "enabled" and "url" are this worker's configuration: both binaries read
 * the same file and environment, and the job itself does nothing while the
 * registry is disabled. The URL is shown as scheme://host:port only (a path
 * or query may carry a token); a file:// URL is shown whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include "handlers.h"
#include "log.h"
#include "outbound.h"
#include "wctx.h"
#include "wire.h"

/* The registry job's name (background/model_registry.h, not included across binaries). */
#define REGISTRY_JOB "model_registry"
/* How long a refresh waits for the connection to the background before answering 503. */
#define KICK_WAIT_MS 1000

static const char state_sql[] =
    "SELECT source, version, floor(extract(epoch FROM updated_at))::bigint, models, last_error "
    "FROM model_registry_state WHERE id = 1";

/* The state object of GET (and of the refresh's 202), or NULL after answering 503. */
static cJSON *registry_state(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        return NULL;
    }
    PGresult *res = PQexecParams(c, state_sql, 0, NULL, NULL, NULL, NULL, 0);
    cJSON *out = NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=registry_state_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database error");
        goto out;
    }
    const struct ez_config *cfg = r->w->cfg;
    out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "enabled", cfg->model_registry_enabled);
    char origin[256];
    if (strncmp(cfg->model_registry_url, "file://", 7) == 0)
        snprintf(origin, sizeof(origin), "%s", cfg->model_registry_url);
    else
        outbound_url_origin(cfg->model_registry_url, origin, sizeof(origin));
    cJSON_AddStringToObject(out, "url", origin);
    bool row = PQntuples(res) == 1;
    cJSON_AddStringToObject(out, "source", row ? PQgetvalue(res, 0, 0) : "");
    cJSON_AddStringToObject(out, "version", row ? PQgetvalue(res, 0, 1) : "");
    if (row && !PQgetisnull(res, 0, 2)) {
        char iso[40];
        ez_format_time(strtoll(PQgetvalue(res, 0, 2), NULL, 10), iso, sizeof(iso));
        cJSON_AddStringToObject(out, "updated_at", iso);
    } else {
        cJSON_AddNullToObject(out, "updated_at");
    }
    cJSON_AddNumberToObject(out, "models",
                            row ? (double)strtoll(PQgetvalue(res, 0, 3), NULL, 10) : 0);
    if (row && PQgetvalue(res, 0, 4)[0])
        cJSON_AddStringToObject(out, "last_error", PQgetvalue(res, 0, 4));
    else
        cJSON_AddNullToObject(out, "last_error");
out:
    PQclear(res);
    return out;
}

int registry_get(struct req *r)
{
    cJSON *out = registry_state(r);
    if (out == NULL)
        return EZ_ERR;
    reply_json(r, 200, out);
    cJSON_Delete(out);
    return EZ_OK;
}

/*
 * Sends [kick][model_registry] to the background. Unlike the outbox nudge
 * this one must arrive (the client is told 202), so it waits up to
 * KICK_WAIT_MS for the connection (a thread's socket connects lazily and
 * queues nothing while the background is away). 0 sent, -1 not.
 */
static int kick_registry(struct wctx *w)
{
    void *s = wctx_zmq(w);
    if (s == NULL)
        return EZ_ERR;
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLOUT};
    if (zmq_poll(&it, 1, KICK_WAIT_MS) <= 0 || !(it.revents & ZMQ_POLLOUT))
        return EZ_ERR;
    if (zmq_send(s, WIRE_KICK, strlen(WIRE_KICK), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return EZ_ERR;
    /* Once the first part is queued, the rest of the message always follows. */
    if (zmq_send(s, REGISTRY_JOB, strlen(REGISTRY_JOB), ZMQ_DONTWAIT) < 0)
        return EZ_ERR;
    return EZ_OK;
}

/*
 * POST /admin/models/registry/refresh: 202 with the current state once the
 * background has been asked to fetch now; the new state shows in GET when
 * the fetch is done (updated_at, version, last_error). 409 while the
 * registry is disabled; 503 when the background cannot be reached.
 */
int registry_refresh(struct req *r)
{
    if (!r->w->cfg->model_registry_enabled)
        return reply_error(r, 409, "conflict", NULL,
                           "the model registry is disabled (EZ_MODEL_REGISTRY_ENABLED=false)");
    if (kick_registry(r->w) != EZ_OK) {
        log_warn("event=registry_kick_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        return reply_error(r, 503, "unavailable", NULL, "the background service is unreachable");
    }
    cJSON *out = registry_state(r);
    if (out == NULL)
        return EZ_ERR;
    reply_json(r, 202, out);
    cJSON_Delete(out);
    return EZ_OK;
}
