/*
 * The log writer (docs/log-pipeline.md): the queue of spooled log batches
 * and the thread that COPYs them into request_logs, moving
 * log_sink_progress.written_upto in the same transaction.
 *
 * Why a thread: a write transaction of 1,000 rows takes tens of
 * milliseconds. On the single-threaded loop it held up the group fsync and
 * the acks of every batch that arrived meanwhile, so the workers waited for
 * PostgreSQL after all. The writer has its own log DB connection; the loop
 * keeps the spool, the acks and everything else, and the two share only the
 * queue below, under one mutex.
 *
 * Ownership: the loop (log_sink.c) pushes batches and calls every function
 * here except those the writer runs itself; batch rows pass to the queue on
 * log_writer_push. The writer only reads batches the loop has marked synced
 * (log_writer_synced), and only the loop takes unsynced batches back
 * (log_writer_unpush), so neither frees rows the other is reading.
 */
#ifndef EZ_LOG_WRITER_H
#define EZ_LOG_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include "db.h"

/* Most rows in one write transaction (a backlog is written in transactions of this size). */
#define LOG_WRITER_TXN_ROWS 2000
/* Retry delays after a failed write: doubling from the first to the last. */
#define LOG_WRITER_BACKOFF_MIN_MS 200
#define LOG_WRITER_BACKOFF_MAX_MS 5000

/*
 * A log DB connection slot with its outage and schema state; one per thread
 * (the loop's borrows ctx->log_db, the writer has its own).
 */
struct log_conn {
    struct ez_db *db;
    bool down;           /* an outage is in progress and was logged */
    bool schema_checked; /* log_schema_migrations verified on this slot */
    bool schema_bad;     /* the log schema is behind this build (logged at error) */
};

/*
 * The connection, or NULL while the log DB is unreachable (logged once per
 * outage) or its schema is behind (schema_bad set). Client encoding UTF8.
 */
PGconn *log_conn_get(struct log_conn *lc);

/* Batch write durations (seconds): Prometheus histogram bounds. */
#define LOG_WRITER_NBUCKETS 11
extern const double log_writer_buckets[LOG_WRITER_NBUCKETS];

/* What the writer reports; a consistent copy taken under the queue lock. */
struct log_writer_status {
    uint64_t queued_rows;    /* records queued, synced or not */
    uint64_t queued_batches; /* batches queued */
    uint64_t written_upto;   /* last batch sequence this process committed (0: none yet) */
    uint64_t db_upto;        /* highest written_upto read from the table (0: not read yet) */
    bool schema_bad;         /* the writer stopped: the log schema is behind */
    uint64_t written;        /* records committed to request_logs */
    uint64_t quarantined;    /* records the table refused, set aside in the spool directory */
    uint64_t writes;         /* write transactions committed */
    uint64_t write_failures;
    uint64_t write_us_sum;
    uint64_t bucket[LOG_WRITER_NBUCKETS]; /* not cumulative */
};

/*
 * Sets up the queue (empty) for the log DB at dsn (borrowed for the life of
 * the writer) and the spool directory (copied; rejected batches go there).
 */
void log_writer_init(const char *dsn, const char *spool_dir);
/* Starts the thread. -1 when it cannot be created (logged). */
int log_writer_start(void);
/* EZ_LOG_BATCH_SIZE and EZ_LOG_FLUSH_MS in force (they may change on SIGHUP). */
void log_writer_settings(int64_t batch_size, int64_t flush_ms);

/* Appends a batch (not yet synced); rows (len bytes, nrows lines) pass to the queue. */
void log_writer_push(uint64_t seq, uint32_t nrows, char *rows, size_t len, int64_t now_ms);
/* Takes back the last n batches pushed (all unsynced): their fsync failed. */
void log_writer_unpush(size_t n);
/* Every batch pushed so far is durable: the writer may write them. */
void log_writer_synced(void);
/* Records queued, synced or not (for the EZ_LOG_QUEUE bound). */
uint64_t log_writer_queued_rows(void);
void log_writer_status(struct log_writer_status *st);

/*
 * SIGTERM: the writer writes every synced batch, retrying for at most
 * drain_ms, then the thread is joined. Returns the records left queued.
 * Safe when the thread never started.
 */
uint64_t log_writer_stop(int64_t drain_ms);
/* Frees the queue and closes the writer's connection; after log_writer_stop. */
void log_writer_free(void);

#endif
