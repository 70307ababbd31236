/* The job table and the scheduler that runs it from the main loop (see docs/background.md). */
#include "jobs.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "bg.h"
#include "log.h"
#include "log_sink.h"
#include "model_registry.h"
#include "outbox.h"
#include "partitions.h"
#include "quota_reset.h"
#include "retention.h"
#include "snapshot.h"
#include "webhook.h"

/*
 * Every job of the daemon, run in this order when several are due at once.
 * A new job is one row here (plus its file and its prototypes in jobs.h).
 */
static struct bg_job job_table[] = {
    /*
     * First: a WIRE_LOGS message kicks it, and its run sends the acks after
     * the group fsync, so no other job may delay them (docs/log-pipeline.md).
     */
    {.name = "log_sink",
     .interval_ms = log_sink_interval_ms,
     .run = log_sink_run,
     .at_start = true,
     .init = log_sink_init,
     .fini = log_sink_fini},
    {.name = "heartbeat",
     .interval_ms = heartbeat_interval_ms,
     .run = heartbeat_run,
     .at_start = true},
    {.name = "redis_ping",
     .interval_ms = redis_ping_interval_ms,
     .run = redis_ping_run,
     .at_start = true},
    /* Snapshots: the full rebuild runs before the first outbox batch (docs/snapshots.md). */
    {.name = "snapshot",
     .interval_ms = snapshot_interval_ms,
     .run = snapshot_run,
     .at_start = true},
    {.name = "outbox", .interval_ms = outbox_interval_ms, .run = outbox_run, .at_start = true},
    {.name = "expiry", .interval_ms = expiry_interval_ms, .run = expiry_run, .at_start = true},
    {.name = "quota_reset",
     .interval_ms = quota_reset_interval_ms,
     .run = quota_reset_run,
     .at_start = true},
    {.name = "outbox_prune", .interval_ms = outbox_prune_interval_ms, .run = outbox_prune_run},
    /* request_logs upkeep (docs/log-pipeline.md): partitions first, so retention sees them. */
    {.name = "log_partitions",
     .interval_ms = log_partitions_interval_ms,
     .run = log_partitions_run,
     .at_start = true},
    {.name = "log_retention",
     .interval_ms = log_retention_interval_ms,
     .run = log_retention_run,
     .at_start = true,
     .fini = log_retention_fini},
    /* Its fetch runs on a helper thread that kicks it when done (docs/model-registry.md). */
    {.name = MODEL_REGISTRY_JOB,
     .interval_ms = model_registry_interval_ms,
     .run = model_registry_run,
     .at_start = true,
     .fini = model_registry_fini},
    /* Its POST runs on a thread of its own: a slow receiver never holds up the loop. */
    {.name = "webhook",
     .interval_ms = webhook_interval_ms,
     .run = webhook_run,
     .fini = webhook_fini},
};

#define N_JOBS EZ_ARRAY_LEN(job_table)

static int64_t job_interval(const struct bg_job *j, const struct ez_config *cfg)
{
    int64_t iv = j->interval_ms ? j->interval_ms(cfg) : 0;
    return iv > 0 ? iv : 0;
}

void jobs_schedule_init(struct bg_job *jobs, size_t n, const struct ez_config *cfg, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        struct bg_job *j = &jobs[i];
        j->cur_interval = job_interval(j, cfg);
        j->last_run = 0;
        j->failures = 0;
        j->failure_logged = false;
        j->last_err[0] = '\0';
        if (j->at_start)
            j->next_due = now;
        else if (j->cur_interval > 0)
            j->next_due = now + j->cur_interval;
        else
            j->next_due = JOB_NEVER;
    }
}

int64_t jobs_wait_ms(const struct bg_job *jobs, size_t n, int64_t now, int64_t max_ms)
{
    int64_t wait = max_ms;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].next_due == JOB_NEVER)
            continue;
        int64_t d = jobs[i].next_due - now;
        if (d < wait)
            wait = d;
    }
    return wait < 0 ? 0 : wait;
}

bool job_is_due(const struct bg_job *j, int64_t now)
{
    return j->next_due != JOB_NEVER && j->next_due <= now;
}

int job_finish(struct bg_job *j, int rc, const char *err, int64_t now)
{
    int level;

    j->last_run = now;
    /* From the end of the run: a slow job never piles up runs behind itself. */
    j->next_due = j->cur_interval > 0 ? now + j->cur_interval : JOB_NEVER;

    if (rc == EZ_OK) {
        level = j->failures == 0 ? -1 : (j->failure_logged ? EZ_LOG_INFO : EZ_LOG_DEBUG);
        j->failures = 0;
        j->failure_logged = false;
        j->last_err[0] = '\0';
        return level;
    }

    if (err == NULL)
        err = "";
    j->failures++;
    if (err[0] == '\0') {
        /* Already logged where it happened (e.g. a connection outage). */
        level = EZ_LOG_DEBUG;
    } else if (!j->failure_logged || strcmp(err, j->last_err) != 0) {
        level = EZ_LOG_WARN;
        j->failure_logged = true;
    } else {
        level = EZ_LOG_DEBUG;
    }
    snprintf(j->last_err, sizeof(j->last_err), "%s", err);
    return level;
}

int jobs_kick_at(struct bg_job *jobs, size_t n, const char *name, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(jobs[i].name, name) == 0) {
            if (jobs[i].next_due > now)
                jobs[i].next_due = now;
            return EZ_OK;
        }
    }
    return EZ_ERR;
}

int jobs_reschedule(struct bg_job *jobs, size_t n, const struct ez_config *cfg, int64_t now)
{
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        struct bg_job *j = &jobs[i];
        int64_t iv = job_interval(j, cfg);
        if (iv == j->cur_interval)
            continue;
        changed++;
        j->cur_interval = iv;
        if (iv <= 0) {
            /* No longer periodic; a pending kick (due now or earlier) still runs. */
            if (j->next_due > now)
                j->next_due = JOB_NEVER;
            continue;
        }
        int64_t base = j->last_run ? j->last_run : now;
        int64_t due = base + iv;
        if (due < now)
            due = now;
        /* Never postpone a job that is already due (kicked or at start). */
        if (j->next_due <= now)
            continue;
        j->next_due = due;
    }
    return changed;
}

int jobs_run_table(struct bg_job *jobs, size_t n, struct bg_ctx *ctx, int64_t (*clock)(void))
{
    int ran = 0;
    int64_t start = clock();

    for (size_t i = 0; i < n && !ctx->stop; i++) {
        struct bg_job *j = &jobs[i];
        if (!job_is_due(j, start))
            continue;
        ctx->job_err[0] = '\0';
        /* Not due while it runs, so that a kick arriving meanwhile shows up and is kept. */
        j->next_due = JOB_NEVER;
        int64_t t0 = clock();
        int rc = j->run(ctx);
        int64_t t1 = clock();
        ran++;
        int64_t kicked = j->next_due;
        int level = job_finish(j, rc == EZ_OK ? EZ_OK : EZ_ERR, ctx->job_err, t1);
        if (kicked < j->next_due)
            j->next_due = kicked;
        unsigned failures = rc == EZ_OK ? 0 : j->failures;

        if (t1 - t0 > JOBS_SLOW_RUN_MS)
            log_warn("event=job_slow job=%s ms=%lld", j->name, (long long)(t1 - t0));
        else
            log_debug("event=job_run job=%s ok=%s ms=%lld", j->name, rc == EZ_OK ? "true" : "false",
                      (long long)(t1 - t0));

        if (level < 0)
            continue;
        if (rc == EZ_OK) {
            EZ_LOG_AT(level, "event=job_recovered job=%s", j->name);
        } else {
            EZ_LOG_AT(level, "event=job_failed job=%s failures=%u error=\"%s\" retry_ms=%lld",
                      j->name, failures, j->last_err[0] ? j->last_err : "see above",
                      (long long)j->cur_interval);
        }
    }
    return ran;
}

int64_t jobs_now_ms(void)
{
    return ez_mono_us() / 1000;
}

int jobs_init(struct bg_ctx *ctx)
{
    int64_t now = jobs_now_ms();
    jobs_schedule_init(job_table, N_JOBS, ctx->cfg, now);
    for (size_t i = 0; i < N_JOBS; i++) {
        struct bg_job *j = &job_table[i];
        if (j->init && j->init(ctx) != EZ_OK) {
            log_error("event=job_init_failed job=%s", j->name);
            /* Undo the ones already initialised. */
            while (i-- > 0)
                if (job_table[i].fini)
                    job_table[i].fini(ctx);
            return EZ_ERR;
        }
        if (j->cur_interval > 0)
            log_info("event=job_scheduled job=%s interval_ms=%lld", j->name,
                     (long long)j->cur_interval);
        else
            log_info("event=job_scheduled job=%s interval_ms=0 periodic=false", j->name);
    }
    return EZ_OK;
}

void jobs_fini(struct bg_ctx *ctx)
{
    for (size_t i = N_JOBS; i-- > 0;)
        if (job_table[i].fini)
            job_table[i].fini(ctx);
}

int64_t jobs_timeout_ms(void)
{
    return jobs_wait_ms(job_table, N_JOBS, jobs_now_ms(), JOBS_MAX_WAIT_MS);
}

void jobs_run_due(struct bg_ctx *ctx)
{
    (void)jobs_run_table(job_table, N_JOBS, ctx, jobs_now_ms);
}

void jobs_kick(const char *name)
{
    if (jobs_kick_at(job_table, N_JOBS, name, jobs_now_ms()) != EZ_OK)
        log_debug("event=job_kick_ignored job=%s reason=unknown_job", name);
    else
        log_debug("event=job_kicked job=%s", name);
}

void jobs_config_changed(const struct ez_config *cfg)
{
    int64_t old[N_JOBS];
    for (size_t i = 0; i < N_JOBS; i++)
        old[i] = job_table[i].cur_interval;
    if (jobs_reschedule(job_table, N_JOBS, cfg, jobs_now_ms()) == 0)
        return;
    for (size_t i = 0; i < N_JOBS; i++)
        if (old[i] != job_table[i].cur_interval)
            log_info("event=job_interval_changed job=%s old_ms=%lld new_ms=%lld", job_table[i].name,
                     (long long)old[i], (long long)job_table[i].cur_interval);
}

int job_fail(struct bg_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->job_err, sizeof(ctx->job_err), fmt, ap);
    va_end(ap);
    /* Library messages end in newlines and may quote things: keep the log line whole. */
    size_t len = strlen(ctx->job_err);
    while (len > 0 && (ctx->job_err[len - 1] == '\n' || ctx->job_err[len - 1] == ' '))
        ctx->job_err[--len] = '\0';
    for (char *p = ctx->job_err; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
        else if (*p == '"')
            *p = '\'';
    }
    if (ctx->job_err[0] == '\0')
        snprintf(ctx->job_err, sizeof(ctx->job_err), "unspecified error");
    return EZ_ERR;
}
