/* The "webhook" job (webhook.c): the error-rate alert of /admin/logs/webhook (docs/webhook.md). */
#ifndef EZ_WEBHOOK_H
#define EZ_WEBHOOK_H

#include <stdint.h>
#include "config.h"

struct bg_ctx;

/* Evaluation period. A settings change (PUT) also kicks the job over ZeroMQ. */
#define WEBHOOK_INTERVAL_MS 15000

/*
 * Every interval: when webhook_settings says enabled, counts requests and
 * errors in request_logs over the last window_seconds (log DB); when
 * requests >= min_requests, error_rate >= error_rate_threshold and the
 * cooldown since last_sent_at is over, POSTs the signed error_rate event.
 * The POST runs on a thread of its own so the loop (and the log acks) never
 * wait for a receiver; the thread kicks the job when it is done, and that
 * run records the outcome (last_sent_at on a 2xx only). A session advisory lock held from
 * evaluation to that bookkeeping keeps a second daemon from sending the same alert.
 */
int64_t webhook_interval_ms(const struct ez_config *cfg);
int webhook_run(struct bg_ctx *ctx);
/* Waits for a delivery in flight (bounded by its timeout) and records it. */
void webhook_fini(struct bg_ctx *ctx);

#endif
