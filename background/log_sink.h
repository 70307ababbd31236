/*
 * The log sink job (docs/log-pipeline.md): takes the workers' WIRE_LOGS
 * batches, appends them to the spool, acknowledges them after one fsync per
 * loop turn (group commit), and writes them to request_logs with COPY,
 * moving log_sink_progress.written_upto in the same transaction.
 */
#ifndef EZ_LOG_SINK_H
#define EZ_LOG_SINK_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "util.h"

struct bg_ctx;

/* Most rows in one write transaction (a backlog is written in transactions of this size). */
#define LOG_SINK_TXN_ROWS 10000
/* Longest the loop spends writing in one run before it goes back to the socket. */
#define LOG_SINK_RUN_BUDGET_MS 200
/* Longest SIGTERM waits for the log database before leaving records in the spool. */
#define LOG_SINK_DRAIN_MS 10000
/* Retry delays after a failed write: doubling from the first to the last. */
#define LOG_SINK_BACKOFF_MIN_MS 200
#define LOG_SINK_BACKOFF_MAX_MS 5000
/* The metrics hash in Redis is rewritten this often, and expires after LOG_SINK_METRICS_TTL_S. */
#define LOG_SINK_METRICS_MS 1000
#define LOG_SINK_METRICS_TTL_S 60

/*
 * Job table entry points (jobs.c). The interval is a tick of a quarter of
 * EZ_LOG_FLUSH_MS (5..250 ms): each run writes the queue when
 * EZ_LOG_BATCH_SIZE records are waiting or the oldest would otherwise wait
 * longer than EZ_LOG_FLUSH_MS, so the loop's poll timeout honours the
 * flush deadline. The job is also kicked by every WIRE_LOGS message, so
 * that acknowledgements go out in the same loop turn.
 */
int64_t log_sink_interval_ms(const struct ez_config *cfg);
/* Opens the spool, replays what is not yet in the log table. -1 = refuse to start (logged). */
int log_sink_init(struct bg_ctx *ctx);
int log_sink_run(struct bg_ctx *ctx);
/* SIGTERM: acknowledges, then writes everything queued (at most LOG_SINK_DRAIN_MS), closes. */
void log_sink_fini(struct bg_ctx *ctx);

/*
 * zmq_server.c hands over one WIRE_LOGS message: the reply envelope (nenv
 * frames: the peer identity, and the empty delimiter of a REQ peer), the
 * seq frame and the payload frame (NULL/0 when missing). Either replies
 * [nack][seq][{"error","reason"}] at once, or spools the batch and replies
 * [ack][seq] once the next group fsync succeeded (in log_sink_run). Borrowed
 * buffers: everything needed later is copied.
 */
void log_sink_receive(struct bg_ctx *ctx, const void *const *env, const size_t *envlens, int nenv,
                      const void *seq, size_t seqlen, const void *payload, size_t len);

#endif
