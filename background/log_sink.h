/*
 * The log sink job (docs/log-pipeline.md): takes the workers' WIRE_LOGS
 * batches, appends them to the spool, acknowledges them after one fsync per
 * loop turn (group commit) and hands them to the writer thread
 * (log_writer.h), which COPYs them into request_logs.
 */
#ifndef EZ_LOG_SINK_H
#define EZ_LOG_SINK_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "util.h"

struct bg_ctx;

/* The job's tick: acks go out at once (every logs message kicks it), this paces the rest. */
#define LOG_SINK_TICK_MS 100
/* Longest SIGTERM waits for the log database before leaving records in the spool. */
#define LOG_SINK_DRAIN_MS 10000
/* The metrics hash in Redis is rewritten this often, and expires after LOG_SINK_METRICS_TTL_S. */
#define LOG_SINK_METRICS_MS 1000
#define LOG_SINK_METRICS_TTL_S 60

/*
 * Job table entry points (jobs.c). The job is kicked by every WIRE_LOGS
 * message, so that acknowledgements go out in the same loop turn; each run
 * also passes the flush settings to the writer, releases written spool
 * segments and publishes the metrics. The writer keeps EZ_LOG_BATCH_SIZE
 * and EZ_LOG_FLUSH_MS itself, so the tick is fixed (LOG_SINK_TICK_MS).
 */
int64_t log_sink_interval_ms(const struct ez_config *cfg);
/*
 * Opens the spool, replays what is not yet in the log table, starts the
 * writer thread. -1 = refuse to start (logged).
 */
int log_sink_init(struct bg_ctx *ctx);
int log_sink_run(struct bg_ctx *ctx);
/* SIGTERM: acknowledges, then writes everything queued (at most LOG_SINK_DRAIN_MS), closes. */
void log_sink_fini(struct bg_ctx *ctx);

/*
 * zmq_server.c hands over one WIRE_LOGS message: the reply envelope (nenv
 * frames: the peer identity, and the empty delimiter of a REQ peer), the
 * seq frame and the payload frame (NULL/0 when missing). Either replies
 * [nack][seq][{"error","reason"}] at once, or spools the batch and replies
 * [ack][seq] once the next group fsync succeeded (in log_sink_run), or, for
 * a body it spooled recently (log_dedup.h), acks without storing it again.
 * Borrowed buffers: everything needed later is copied.
 */
void log_sink_receive(struct bg_ctx *ctx, const void *const *env, const size_t *envlens, int nenv,
                      const void *seq, size_t seqlen, const void *payload, size_t len);

#endif
