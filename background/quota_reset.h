/* The "quota_reset" job (quota_reset.c): periodic quota resets on UTC calendar boundaries. */
#ifndef EZ_QUOTA_RESET_H
#define EZ_QUOTA_RESET_H

#include <stdint.h>
#include "config.h"

struct bg_ctx;

/* Keys reset per transaction: bounds lock time and the size of one outbox burst. */
#define QUOTA_RESET_BATCH 1000
/* A run stops starting batches after this long and kicks itself to go on next turn. */
#define QUOTA_RESET_BUDGET_MS 1000

/*
 * Every EZ_QUOTA_RESET_INTERVAL_SECONDS, and at start-up: keys with a
 * quota_reset_period other than none whose quota_reset_at has passed get
 * quota_used = 0, exhausted -> active (unless quota_limit is 0), and
 * quota_reset_at = the next boundary after now; operation log (actor
 * "system", action "quota_reset") and an outbox row per key, then the outbox
 * job is kicked. See docs/background.md.
 */
int64_t quota_reset_interval_ms(const struct ez_config *cfg);
int quota_reset_run(struct bg_ctx *ctx);

#endif
