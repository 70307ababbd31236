/*
 * The "log_retention" job (docs/log-pipeline.md, "Partitions and
 * retention"): EZ_LOG_RETENTION_DAYS removes the rows of request_logs whose
 * created_at is older than the cutoff, then EZ_LOG_MAX_RECORDS removes the
 * oldest rows (by created_at, then id) down to the cap. Range partitions
 * that hold only such rows are dropped whole; the rest goes in batched
 * DELETEs.
 *
 * A pass runs on a helper thread with its own connection, so that the long
 * statements (the cap's boundary scans as many rows as the cap) never hold
 * up the loop and the log sink's acknowledgements.
 */
#ifndef EZ_RETENTION_H
#define EZ_RETENTION_H

#include <stdint.h>
#include "config.h"

struct bg_ctx;

/* Rows per DELETE statement (each its own transaction). */
#define LOGRET_BATCH 10000
/*
 * A pass holds this session-level advisory lock (the bytes of "ezlogret"):
 * a second ezapi-background on the same log database skips its pass.
 */
#define LOGRET_LOCK "7312276170722141556"
/* Bound on each statement of a pass (the cap's boundary query is the long one). */
#define LOGRET_STATEMENT_TIMEOUT "10min"

/*
 * Every LOGPART_INTERVAL_MS (a minute) and at start: collects the previous
 * pass (its error goes through job_fail) and starts the next one, unless the
 * previous one is still running.
 */
int64_t log_retention_interval_ms(const struct ez_config *cfg);
int log_retention_run(struct bg_ctx *ctx);
/* Shutdown: asks a running pass to stop after its current statement, and waits for it. */
void log_retention_fini(struct bg_ctx *ctx);

#endif
