/*
 * The outbox job: claims pending sync_outbox rows (FOR UPDATE SKIP LOCKED),
 * republishes what they name from PostgreSQL's current state through
 * snapshot_apply, marks them done once Redis accepted the writes, and on
 * failure retries them with exponential backoff up to
 * EZ_SYNC_OUTBOX_MAX_RETRIES before marking them failed. Also the hourly
 * pruning of done rows. See docs/snapshots.md.
 */
#include "outbox.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"

/* ---- rows -> work (pure) -------------------------------------------------- */

/* Adds every string of payload[name] (a JSON list) to s. */
static void add_strings(const cJSON *payload, const char *name, struct snap_strs *s)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(payload, name);
    const cJSON *it;
    if (!cJSON_IsArray(list))
        return;
    cJSON_ArrayForEach(it, list)
    {
        if (cJSON_IsString(it) && it->valuestring[0])
            snap_strs_add(s, it->valuestring);
    }
}

/* A positive whole number, as ids are. */
static bool as_id(const cJSON *it, int64_t *out)
{
    if (!cJSON_IsNumber(it) || it->valuedouble < 1 || it->valuedouble > 9007199254740991.0 ||
        it->valuedouble != (double)(int64_t)it->valuedouble)
        return false;
    *out = (int64_t)it->valuedouble;
    return true;
}

static void add_ids(const cJSON *payload, const char *name, struct snap_ids *s)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(payload, name);
    const cJSON *it;
    int64_t id;
    if (!cJSON_IsArray(list))
        return;
    cJSON_ArrayForEach(it, list)
    {
        if (as_id(it, &id))
            snap_ids_add(s, id);
    }
}

enum outbox_row_kind outbox_row_to_work(const char *resource, int64_t id, bool has_id,
                                        const char *action, const char *payload,
                                        struct snap_work *w)
{
    enum outbox_row_kind kind = OUTBOX_ROW_WORK;
    cJSON *pl = payload ? cJSON_Parse(payload) : NULL;
    if (!cJSON_IsObject(pl)) {
        cJSON_Delete(pl);
        pl = cJSON_CreateObject();
    }
    bool del = action && strcmp(action, "delete") == 0;
    has_id = has_id && id > 0;

    if (strcmp(resource, "masters") == 0) {
        if (has_id)
            snap_ids_add(&w->masters, id);
        add_strings(pl, "token_hashes", &w->del_tokens);
    } else if (strcmp(resource, "master_keys") == 0) {
        if (has_id)
            snap_ids_add(&w->key_masters, id);
    } else if (strcmp(resource, "keys") == 0) {
        if (has_id)
            snap_ids_add(&w->keys, id);
        add_strings(pl, del ? "token_hashes" : "old_token_hashes", &w->del_tokens);
    } else if (strcmp(resource, "provider_groups") == 0) {
        if (has_id)
            snap_ids_add(&w->groups, id);
        add_ids(pl, "api_key_ids", &w->api_keys);
        add_strings(pl, "binding_keys", &w->binding_keys);
    } else if (strcmp(resource, "api_keys") == 0) {
        int64_t gid;
        if (has_id)
            snap_ids_add(&w->api_keys, id);
        if (as_id(cJSON_GetObjectItemCaseSensitive(pl, "group_id"), &gid))
            snap_ids_add(&w->binding_groups, gid);
    } else if (strcmp(resource, "bindings") == 0) {
        if (has_id)
            snap_ids_add(&w->bindings, id);
        add_strings(pl, "binding_keys", &w->binding_keys);
    } else if (strcmp(resource, "models") == 0) {
        if (has_id)
            snap_ids_add(&w->models, id);
        add_strings(pl, "names", &w->model_names);
    } else if (strcmp(resource, "features") == 0) {
        w->features = true;
    } else if (strcmp(resource, "namespaces") == 0) {
        /* Not published (docs/outbox.md): the row is simply done. */
    } else if (strcmp(resource, "all") == 0) {
        kind = OUTBOX_ROW_REBUILD;
    } else {
        kind = OUTBOX_ROW_UNKNOWN;
    }
    cJSON_Delete(pl);
    return kind;
}

int64_t outbox_backoff_seconds(int interval_seconds, int attempts)
{
    int64_t cap = interval_seconds > OUTBOX_BACKOFF_CAP_SECONDS ? interval_seconds
                                                                : OUTBOX_BACKOFF_CAP_SECONDS;
    int64_t d = interval_seconds > 0 ? interval_seconds : 1;
    for (int i = 0; i < attempts && d < cap; i++)
        d *= 2;
    return d < cap ? d : cap;
}

/* ---- the job -------------------------------------------------------------- */

static const char claim_sql[] =
    "SELECT id, resource, resource_id, action, payload::text FROM sync_outbox "
    "WHERE status = 'pending' AND next_attempt_at <= now() "
    "ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED";

static const char done_sql[] =
    "UPDATE sync_outbox SET status = 'done', last_error = '', updated_at = now() "
    "WHERE id = ANY($1::bigint[])";

/* The SQL twin of outbox_backoff_seconds, per row (each has its own attempts). */
static const char retry_sql[] =
    "UPDATE sync_outbox SET attempts = attempts + 1, "
    "status = CASE WHEN $2::boolean AND attempts + 1 <= $3::int THEN 'pending' ELSE 'failed' END, "
    "next_attempt_at = now() + make_interval(secs => least($4::float8 * power(2, attempts), "
    "greatest($4::float8, $5::float8))), "
    "last_error = $6, updated_at = now() "
    "WHERE id = ANY($1::bigint[])";

static const char unknown_sql[] =
    "UPDATE sync_outbox SET status = 'failed', attempts = attempts + 1, "
    "last_error = 'unknown resource', updated_at = now() WHERE id = ANY($1::bigint[])";

/* The caller checks res_ok() and reads the message from the result. */
static PGresult *exec_params(PGconn *conn, const char *sql, int n, const char *const *params)
{
    return PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
}

static bool res_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static void rollback(PGconn *conn)
{
    PGresult *r = PQexec(conn, "ROLLBACK");
    PQclear(r);
}

/* "{1,2,3}" */
static char *id_list(const struct snap_ids *s)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{");
    for (size_t i = 0; i < s->n; i++)
        buf_printf(&b, "%s%lld", i ? "," : "", (long long)s->v[i]);
    buf_puts(&b, "}");
    return buf_steal(&b);
}

/* Runs one of the row-marking statements over ids. 0 ok, -1 (err set). */
static int mark(PGconn *conn, const char *sql, const struct snap_ids *ids, const char *const *more,
                int nmore, char *err, size_t errlen)
{
    if (ids->n == 0)
        return EZ_OK;
    const char *params[6] = {NULL};
    char *lit = id_list(ids);
    params[0] = lit;
    for (int i = 0; i < nmore && i < 5; i++)
        params[i + 1] = more[i];
    PGresult *res = exec_params(conn, sql, 1 + nmore, params);
    int rc = EZ_OK;
    if (!res_ok(res)) {
        snprintf(err, errlen, "marking outbox rows: %s", PQresultErrorMessage(res));
        rc = EZ_ERR;
    }
    PQclear(res);
    free(lit);
    return rc;
}

/* What one batch did. */
struct batch_result {
    int claimed;
    long applied;
    bool redis_failed;
    bool rebuild; /* one is due: an "all" row, or Redis lost config:version */
    bool all_row;
    bool unavailable; /* Redis could not be reached; the batch was rolled back */
};

/*
 * Claims and applies one batch in one transaction. 0 ok (see *out), -1 on a
 * PostgreSQL error (err set; nothing was marked).
 */
static int process_batch(struct bg_ctx *ctx, PGconn *conn, struct batch_result *out, char *err,
                         size_t errlen)
{
    const struct ez_config *cfg = ctx->cfg;
    struct snap_work w;
    struct snap_ids work_ids = {0}, unknown_ids = {0};
    PGresult *res = NULL;
    char limit[16], sapply[512] = "";
    int rc = EZ_ERR;
    bool in_tx = false;

    memset(out, 0, sizeof(*out));
    snap_work_init(&w);
    res = PQexec(conn, "BEGIN");
    if (!res_ok(res)) {
        snprintf(err, errlen, "BEGIN: %s", PQresultErrorMessage(res));
        goto out;
    }
    in_tx = true;
    PQclear(res);

    snprintf(limit, sizeof(limit), "%d", cfg->sync_outbox_batch_size);
    const char *cp[1] = {limit};
    res = exec_params(conn, claim_sql, 1, cp);
    if (!res_ok(res)) {
        snprintf(err, errlen, "claiming outbox rows: %s", PQresultErrorMessage(res));
        goto out;
    }
    out->claimed = PQntuples(res);
    for (int i = 0; i < out->claimed; i++) {
        int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        bool has_id = !PQgetisnull(res, i, 2);
        int64_t rid = has_id ? strtoll(PQgetvalue(res, i, 2), NULL, 10) : 0;
        enum outbox_row_kind k = outbox_row_to_work(
            PQgetvalue(res, i, 1), rid, has_id, PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), &w);
        if (k == OUTBOX_ROW_UNKNOWN) {
            log_warn("event=outbox_unknown_resource id=%lld resource=\"%.64s\"", (long long)id,
                     PQgetvalue(res, i, 1));
            snap_ids_add(&unknown_ids, id);
            continue;
        }
        if (k == OUTBOX_ROW_REBUILD)
            out->rebuild = out->all_row = true;
        snap_ids_add(&work_ids, id);
    }
    PQclear(res);
    res = NULL;
    if (out->claimed == 0) {
        rc = EZ_OK;
        goto out;
    }

    int arc = snapshot_apply(ctx, conn, &w, sapply, sizeof(sapply));
    if (arc == SNAP_ERR_PG) {
        snprintf(err, errlen, "%s", sapply);
        goto out;
    }
    if (arc == SNAP_ERR_UNAVAILABLE) {
        /* Nothing was attempted: the rows go back untouched (the outage is logged). */
        out->unavailable = true;
        rc = EZ_OK;
        in_tx = false;
        rollback(conn);
        goto out;
    }
    if (mark(conn, unknown_sql, &unknown_ids, NULL, 0, err, errlen) != EZ_OK)
        goto out;
    if (arc == SNAP_ERR_REDIS) {
        /* Every row of the batch shares the failure: they were published together. */
        char enabled[2], maxr[16], iv[16], cap[16];
        snprintf(enabled, sizeof(enabled), "%s", cfg->sync_outbox_enabled ? "t" : "f");
        snprintf(maxr, sizeof(maxr), "%d", cfg->sync_outbox_max_retries);
        snprintf(iv, sizeof(iv), "%d", cfg->sync_outbox_interval_seconds);
        snprintf(cap, sizeof(cap), "%d", OUTBOX_BACKOFF_CAP_SECONDS);
        const char *more[5] = {enabled, maxr, iv, cap, sapply};
        if (mark(conn, retry_sql, &work_ids, more, 5, err, errlen) != EZ_OK)
            goto out;
        out->redis_failed = true;
        out->rebuild = out->all_row = false;
    } else {
        if (mark(conn, done_sql, &work_ids, NULL, 0, err, errlen) != EZ_OK)
            goto out;
        out->applied = (long)work_ids.n;
        if (arc == SNAP_NO_MARKER)
            out->rebuild = true;
    }
    rc = EZ_OK;
out:
    PQclear(res);
    res = NULL;
    if (in_tx) {
        if (rc == EZ_OK) {
            res = PQexec(conn, "COMMIT");
            if (!res_ok(res)) {
                snprintf(err, errlen, "COMMIT: %s", PQresultErrorMessage(res));
                rc = EZ_ERR;
                out->applied = 0;
                out->rebuild = out->all_row = false;
            }
            PQclear(res);
        } else {
            rollback(conn);
        }
    }
    if (rc == EZ_OK && out->redis_failed)
        snprintf(err, errlen, "%s", sapply);
    snap_work_free(&w);
    free(work_ids.v);
    free(unknown_ids.v);
    return rc;
}

int64_t outbox_interval_ms(const struct ez_config *cfg)
{
    return (int64_t)cfg->sync_outbox_interval_seconds * 1000;
}

/* The last Redis failure of a batch, until a batch gets through ("" = none). */
static char last_redis_error[512];

/* True when some pending row is waiting out a backoff (or on error: keep the streak). */
static bool retries_waiting(struct bg_ctx *ctx)
{
    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return true;
    PGresult *res = PQexec(conn, "SELECT EXISTS (SELECT 1 FROM sync_outbox "
                                 "WHERE status = 'pending' AND attempts > 0)");
    bool waiting = !res_ok(res) || PQgetvalue(res, 0, 0)[0] == 't';
    if (!res_ok(res))
        db_check(&ctx->main_db);
    PQclear(res);
    return waiting;
}

/* Counts applied rows for /internal/metrics (best effort: a lost increment is no harm). */
static void count_applied(struct bg_ctx *ctx, long n)
{
    redisContext *c = n > 0 ? bg_redis(ctx) : NULL;
    if (c == NULL)
        return;
    char num[24];
    snprintf(num, sizeof(num), "%ld", n);
    redisReply *r = redisCommand(c, "INCRBY %s %s", EZ_OUTBOX_APPLIED_KEY, num);
    if (r == NULL)
        rds_check(&ctx->redis);
    else
        freeReplyObject(r);
}

/*
 * One run: a full rebuild first when one is due (start-up, Redis found
 * empty, a failed one, an "all" row), then batches until the backlog is
 * empty or OUTBOX_RUN_BUDGET_MS passed (then the job kicks itself so that
 * ZeroMQ messages are served in between). While Redis is unreachable no row
 * is claimed: nothing was attempted, so nothing counts against the retries.
 */
int outbox_run(struct bg_ctx *ctx)
{
    char err[512] = "";
    const char *reason = NULL;
    int rc = EZ_OK;
    long applied = 0;
    int64_t t0 = jobs_now_ms();

    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR; /* outage logged by bg_main_conn */
    if (bg_redis(ctx) == NULL)
        return EZ_ERR; /* outage logged by bg_redis; rows wait, attempts untouched */
    int taken = snapshot_lock(ctx, conn);
    if (taken <= 0)
        return taken < 0 ? EZ_ERR : EZ_OK;

    if (snapshot_rebuild_due(ctx, &reason) && snapshot_rebuild(ctx, reason) != EZ_OK)
        rc = EZ_ERR; /* job_fail set; the batches still run (they never write the marker) */

    for (;;) {
        struct batch_result br;
        conn = bg_main_conn(ctx);
        if (conn == NULL) {
            rc = EZ_ERR;
            break;
        }
        if (process_batch(ctx, conn, &br, err, sizeof(err)) != EZ_OK) {
            db_check(&ctx->main_db);
            rc = job_fail(ctx, "outbox: %s", err);
            break;
        }
        applied += br.applied;
        if (br.unavailable) {
            rc = EZ_ERR; /* logged once per outage by bg_redis */
            break;
        }
        if (br.redis_failed) {
            log_debug("event=outbox_batch_failed rows=%d error=\"%s\"", br.claimed, err);
            snprintf(last_redis_error, sizeof(last_redis_error), "%s", err);
            rc = job_fail(ctx, "outbox: rows not applied, retrying with backoff: %s", err);
            break;
        }
        if (br.applied > 0)
            last_redis_error[0] = '\0';
        if (br.rebuild) {
            if (br.all_row)
                snapshot_request_rebuild();
            if (snapshot_rebuild_due(ctx, &reason) && snapshot_rebuild(ctx, reason) != EZ_OK) {
                rc = EZ_ERR;
                break;
            }
        }
        if (br.claimed < ctx->cfg->sync_outbox_batch_size)
            break;
        if (jobs_now_ms() - t0 >= OUTBOX_RUN_BUDGET_MS) {
            jobs_kick("outbox");
            break;
        }
    }
    /*
     * Rows waiting out their backoff after a Redis failure: the streak goes
     * on (one warning per streak, not one per retry), until a row gets through.
     */
    if (rc == EZ_OK && last_redis_error[0]) {
        if (retries_waiting(ctx))
            rc = job_fail(ctx, "outbox: rows not applied, retrying with backoff: %s",
                          last_redis_error);
        else
            last_redis_error[0] = '\0'; /* they ended failed (or were resolved by a rebuild) */
    }
    count_applied(ctx, applied);
    if (applied > 0)
        log_debug("event=outbox_applied rows=%ld ms=%lld", applied,
                  (long long)(jobs_now_ms() - t0));
    conn = ctx->main_db.conn;
    if (conn)
        snapshot_unlock(ctx, conn);
    return rc;
}

int64_t outbox_prune_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return OUTBOX_PRUNE_MS;
}

/* Deletes done rows older than a day, 10,000 at a time so that no statement runs long. */
int outbox_prune_run(struct bg_ctx *ctx)
{
    char keep[24];
    long total = 0;
    snprintf(keep, sizeof(keep), "%d", OUTBOX_KEEP_DONE_SECONDS);
    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR;
    for (;;) {
        const char *p[1] = {keep};
        PGresult *res =
            exec_params(conn,
                        "DELETE FROM sync_outbox WHERE id IN (SELECT id FROM sync_outbox "
                        "WHERE status = 'done' AND updated_at < now() - "
                        "make_interval(secs => $1::int) LIMIT 10000)",
                        1, p);
        if (!res_ok(res)) {
            int rc = job_fail(ctx, "outbox prune: %s", PQresultErrorMessage(res));
            PQclear(res);
            db_check(&ctx->main_db);
            return rc;
        }
        long n = strtol(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        total += n;
        if (n < 10000)
            break;
    }
    if (total > 0)
        log_info("event=outbox_pruned rows=%ld", total);
    return EZ_OK;
}
