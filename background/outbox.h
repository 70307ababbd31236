/*
 * The outbox job: applies pending sync_outbox rows (docs/outbox.md) to Redis
 * through the snapshot publisher, with retries and backoff; its upkeep
 * (pruning done rows); and the time-driven key state job (expiry.c), which
 * feeds it. See docs/snapshots.md.
 */
#ifndef EZ_OUTBOX_H
#define EZ_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>
#include "config.h"
#include "snapshot.h"

struct bg_ctx;

/* Longest one run keeps applying batches before it yields to the loop (and kicks itself). */
#define OUTBOX_RUN_BUDGET_MS 2000
/* Backoff ceiling: a row waits at most max(this, the interval) between attempts. */
#define OUTBOX_BACKOFF_CAP_SECONDS 600
/* Done rows are deleted once this old, by the "outbox_prune" job, every hour. */
#define OUTBOX_KEEP_DONE_SECONDS 86400
#define OUTBOX_PRUNE_MS 3600000

/* What outbox_row_to_work made of a row. */
enum outbox_row_kind {
    OUTBOX_ROW_WORK = 0,    /* added to the work (possibly nothing: namespaces) */
    OUTBOX_ROW_REBUILD = 1, /* resource "all": a full rebuild */
    OUTBOX_ROW_UNKNOWN = -1 /* unknown resource: marked failed at once */
};

/*
 * Adds what one outbox row asks for to w (docs/outbox.md): resource and
 * action as stored, id = resource_id (has_id false when NULL), payload the
 * JSON text (malformed or not an object: taken as {}). Pure; for the tests too.
 */
enum outbox_row_kind outbox_row_to_work(const char *resource, int64_t id, bool has_id,
                                        const char *action, const char *payload,
                                        struct snap_work *w);

/*
 * Seconds until the next attempt of a row that has failed `attempts` times
 * before this failure: interval * 2^attempts, at most
 * max(OUTBOX_BACKOFF_CAP_SECONDS, interval). Pure.
 */
int64_t outbox_backoff_seconds(int interval_seconds, int attempts);

/* The "outbox" job: every EZ_SYNC_OUTBOX_INTERVAL_SECONDS and at once on a worker's nudge. */
int64_t outbox_interval_ms(const struct ez_config *cfg);
int outbox_run(struct bg_ctx *ctx);

/* The "outbox_prune" job: deletes done rows older than a day, hourly. */
int64_t outbox_prune_interval_ms(const struct ez_config *cfg);
int outbox_prune_run(struct bg_ctx *ctx);

/*
 * expiry.c, the "expiry" job (every EXPIRY_MS): active keys past expires_at
 * become expired (operation log by actor "system", action "expire"), and a
 * rotated key's previous token is forgotten once its grace period is over;
 * each change writes its outbox row and kicks the outbox job.
 */
#define EXPIRY_MS 5000
int64_t expiry_interval_ms(const struct ez_config *cfg);
int expiry_run(struct bg_ctx *ctx);

#endif
