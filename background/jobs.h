/* The background's periodic jobs: one static table, a scheduler driven by the main loop. */
#ifndef EZ_JOBS_H
#define EZ_JOBS_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "util.h"

struct bg_ctx;

/* next_due value of a job that is not scheduled (not periodic and not kicked). */
#define JOB_NEVER INT64_MAX
/* Longest the loop sleeps even when no job is due (a safety net, not a timer). */
#define JOBS_MAX_WAIT_MS 60000
/* A run longer than this holds up the loop (and ZeroMQ replies): logged at warn. */
#define JOBS_SLOW_RUN_MS 1000

/*
 * One row of the job table. The first block is the definition (written in
 * jobs.c); the second is scheduler state (zero in the table, owned by the
 * scheduler). Times are monotonic milliseconds.
 */
struct bg_job {
    const char *name;
    /* Period for this configuration; <= 0 means "not periodic" (runs only when kicked). */
    int64_t (*interval_ms)(const struct ez_config *cfg);
    /*
     * One run. Returns EZ_OK, or EZ_ERR after job_fail(ctx, ...) so that the
     * scheduler logs the failure (once per streak of identical errors); EZ_ERR
     * without job_fail means the failure was already logged (e.g. by
     * bg_main_conn during an outage). Either way the job runs again at its
     * next interval.
     */
    int (*run)(struct bg_ctx *ctx);
    bool at_start; /* first run right at start-up instead of one interval later */
    /* Optional: called once before the loop (non-zero = refuse to start) and at shutdown. */
    int (*init)(struct bg_ctx *ctx);
    void (*fini)(struct bg_ctx *ctx);

    int64_t next_due;     /* JOB_NEVER when not scheduled */
    int64_t last_run;     /* end of the last run; 0 = never ran */
    int64_t cur_interval; /* interval_ms() as of the last (re)configuration */
    unsigned failures;    /* consecutive failed runs */
    bool failure_logged;  /* a warning was written for the current streak */
    char last_err[256];   /* error of the previous failed run, for de-duplication */
};

/*
 * Pure scheduling, on any array of jobs, with the time passed in: the
 * daemon's table uses these through the functions further down, the unit
 * tests call them directly.
 */

/* Sets cur_interval and the first next_due of every job for cfg at time now. */
void jobs_schedule_init(struct bg_job *jobs, size_t n, const struct ez_config *cfg, int64_t now);
/* Milliseconds until the earliest next_due (0 when one is overdue), at most max_ms. */
int64_t jobs_wait_ms(const struct bg_job *jobs, size_t n, int64_t now, int64_t max_ms);
/* True when j should run at time now. */
bool job_is_due(const struct bg_job *j, int64_t now);
/*
 * Bookkeeping after a run that ended at now with result rc (err: the message
 * job_fail set, "" if none). Schedules the next run one interval after now,
 * whatever rc was. Returns the level at which the outcome should be logged:
 * -1 = not at all, else an EZ_LOG_* value (warn for the first failure of a
 * streak or a changed error, info for a recovery after a logged failure,
 * debug otherwise).
 */
int job_finish(struct bg_job *j, int rc, const char *err, int64_t now);
/* Makes the job named name due at now. 0 ok, -1 no such job. */
int jobs_kick_at(struct bg_job *jobs, size_t n, const char *name, int64_t now) EZ_MUSTCHECK;
/*
 * Re-reads every interval from cfg (after SIGHUP). A job whose interval
 * changed is rescheduled one new interval after its last run (or after now
 * if it never ran), but not earlier than now. Returns how many changed.
 */
int jobs_reschedule(struct bg_job *jobs, size_t n, const struct ez_config *cfg, int64_t now);
/*
 * Runs, in table order, every job due at clock() when the pass starts; each
 * finishes with its own clock() reading. A job kicked during the pass (by a
 * job that ran before it) runs in the same pass if it comes later in the
 * table, else in the next one. Stops early when ctx->stop is set. Returns
 * the number of jobs run.
 */
int jobs_run_table(struct bg_job *jobs, size_t n, struct bg_ctx *ctx, int64_t (*clock)(void));

/* The daemon's job table (static in jobs.c). */

/* Monotonic milliseconds: the scheduler's clock. */
int64_t jobs_now_ms(void);
/* Schedules the table for cfg and calls each job's init. 0 ok, -1 an init failed (logged). */
int jobs_init(struct bg_ctx *ctx) EZ_MUSTCHECK;
/* Calls each job's fini, in reverse table order. */
void jobs_fini(struct bg_ctx *ctx);
/* Milliseconds the loop may sleep before a job is due (at most JOBS_MAX_WAIT_MS). */
int64_t jobs_timeout_ms(void);
/* Runs the jobs that are due now. */
void jobs_run_due(struct bg_ctx *ctx);
/* Makes a job due now (a ZeroMQ message asked for it). Unknown name: debug log, no-op. */
void jobs_kick(const char *name);
/* Applies new intervals after a configuration reload, logging each change. */
void jobs_config_changed(const struct ez_config *cfg);

/*
 * For a job's run function: records why the run failed (printf-style; keep
 * secrets out) and returns EZ_ERR, so that `return job_fail(ctx, ...)` reads
 * naturally. Newlines are folded and double quotes replaced.
 */
int job_fail(struct bg_ctx *ctx, const char *fmt, ...) EZ_PRINTF(2, 3);

/*
 * Job entry points. A new job: a file background/<job>.c with its run
 * function (and interval function), prototypes here, one row in jobs.c.
 */

/* heartbeat.c: upserts service_heartbeats for 'background' every 5 s. */
int64_t heartbeat_interval_ms(const struct ez_config *cfg);
int heartbeat_run(struct bg_ctx *ctx);

/* redis_ping.c: keeps the Redis connection alive and notices outages. */
int64_t redis_ping_interval_ms(const struct ez_config *cfg);
int redis_ping_run(struct bg_ctx *ctx);

#endif
