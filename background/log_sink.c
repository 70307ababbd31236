/* Log sink job: spool + group-commit acks for WIRE_LOGS, exactly-once COPY into request_logs. */
#include "log_sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>
#include <cJSON.h>
#include "bg.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "logrec.h"
#include "spool.h"
#include "version.h"
#include "wire.h"

/*
 * How the pieces fit (docs/log-pipeline.md has the whole story):
 *
 *  receive (zmq_server_drain)      run (same loop turn)             PostgreSQL
 *  validate -> COPY rows           fsync the spool once             BEGIN
 *  append to the spool (no fsync)  ack every batch of this turn     lock log_sink_progress
 *  queue in memory, kick the job   write due batches ------------>  COPY rows
 *                                                                   written_upto = last seq
 *                                                                   COMMIT
 *
 * A spool frame is one accepted batch: its payload is the batch's COPY text
 * rows, its sequence is the batch's. Batches are never split across write
 * transactions, so written_upto (a batch sequence) says exactly which rows
 * are in the table. At start-up the spool is replayed after written_upto;
 * at every write the transaction re-reads written_upto under a row lock and
 * drops queued batches it already covers (a commit whose answer was lost),
 * so no batch is written twice and none that was acknowledged is skipped.
 */

/* One accepted batch waiting for the log table. */
struct qmsg {
    uint64_t seq;
    uint32_t nrows;
    char *rows; /* COPY text rows, owned */
    size_t len;
    int64_t arrived_ms; /* monotonic */
};

/* A batch appended this turn, waiting for the group fsync before its ack. */
struct pend {
    unsigned char env[2][256];
    size_t envlen[2];
    int nenv;
    char seq[40];
    size_t seqlen;
    uint32_t nrows;
};

/* Batch write durations (seconds): Prometheus histogram bounds. */
static const double write_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS EZ_ARRAY_LEN(write_buckets)

struct sink_metrics {
    uint64_t received;    /* records in WIRE_LOGS batches that arrived */
    uint64_t accepted;    /* records acknowledged (spooled and fsynced) */
    uint64_t rejected;    /* records refused with a nack (full, not ready, invalid, spool error) */
    uint64_t written;     /* records committed to request_logs */
    uint64_t quarantined; /* records the log table refused, set aside in the spool directory */
    uint64_t writes;      /* write transactions committed */
    uint64_t write_failures;
    uint64_t write_us_sum;
    uint64_t bucket[NBUCKETS]; /* not cumulative here; summed when published */
};

static struct {
    struct spool *sp;
    bool ready;          /* accepting batches */
    bool progress_known; /* written_upto was read from the log table since start */
    uint64_t written_upto;
    bool schema_checked;
    bool schema_bad;
    bool db_down;        /* a log DB outage is in progress and was logged */
    bool waiting_logged; /* "not ready: waiting for the log DB" was logged */

    struct qmsg *q;
    size_t qhead, qlen, qcap; /* live entries: q[qhead .. qlen) */
    uint64_t pending_rows;

    struct pend *pend;
    size_t npend, pendcap;

    /* Write retries. */
    int64_t next_attempt_ms;
    int64_t backoff_ms;
    bool failing;   /* a failure streak is in progress and was logged */
    size_t isolate; /* after a data error: this many writes of a single batch each */

    int64_t last_metrics_ms;
    struct sink_metrics m;
} S;

/* ---- queue ---- */

static size_t q_count(void)
{
    return S.qlen - S.qhead;
}

static struct qmsg *q_at(size_t i)
{
    return &S.q[S.qhead + i];
}

static void q_push(uint64_t seq, uint32_t nrows, char *rows, size_t len, int64_t now)
{
    if (S.qhead > 0 && S.qlen == S.qcap) {
        memmove(S.q, S.q + S.qhead, q_count() * sizeof(*S.q));
        S.qlen -= S.qhead;
        S.qhead = 0;
    }
    if (S.qlen == S.qcap) {
        S.qcap = S.qcap ? S.qcap * 2 : 64;
        S.q = ez_realloc(S.q, S.qcap * sizeof(*S.q));
    }
    S.q[S.qlen++] = (struct qmsg){seq, nrows, rows, len, now};
    S.pending_rows += nrows;
}

static void q_pop_front(void)
{
    struct qmsg *m = q_at(0);
    S.pending_rows -= m->nrows;
    free(m->rows);
    S.qhead++;
    if (S.qhead == S.qlen)
        S.qhead = S.qlen = 0;
}

static void q_pop_back(void)
{
    struct qmsg *m = &S.q[S.qlen - 1];
    S.pending_rows -= m->nrows;
    free(m->rows);
    S.qlen--;
    if (S.qhead == S.qlen)
        S.qhead = S.qlen = 0;
}

/* The log table already holds everything up to w: forget those batches. Returns rows dropped. */
static uint64_t q_drop_upto(uint64_t w)
{
    uint64_t rows = 0;
    while (q_count() > 0 && q_at(0)->seq <= w) {
        rows += q_at(0)->nrows;
        q_pop_front();
    }
    return rows;
}

/* ---- replies ---- */

static void send_reply(struct bg_ctx *ctx, const struct pend *p, const char *type, const char *json)
{
    void *r = ctx->router;
    if (r == NULL)
        return;
    for (int i = 0; i < p->nenv; i++) {
        if (zmq_send(r, p->env[i], p->envlen[i], ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            /* The worker is gone (or its queue is full): it has timed out and answered 503. */
            log_debug("event=log_reply_dropped type=%s error=\"%s\"", type,
                      zmq_strerror(zmq_errno()));
            return;
        }
    }
    if (zmq_send(r, type, strlen(type), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(r, p->seq, p->seqlen, ZMQ_DONTWAIT | (json ? ZMQ_SNDMORE : 0)) < 0 ||
        (json && zmq_send(r, json, strlen(json), ZMQ_DONTWAIT) < 0))
        log_warn("event=log_reply_failed type=%s error=\"%s\"", type, zmq_strerror(zmq_errno()));
}

static void nack(struct bg_ctx *ctx, const struct pend *p, const char *reason, const char *msg)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"error\":\"%s\",\"reason\":\"%s\"}", msg, reason);
    S.m.rejected += p->nrows;
    send_reply(ctx, p, WIRE_NACK, json);
}

/*
 * The group commit: one fsync for every batch appended since the last one,
 * then the acks. A failed fsync nacks them all and takes them out of the
 * queue again (the spool cuts them off and refuses further appends).
 */
static void commit_acks(struct bg_ctx *ctx)
{
    if (S.npend == 0)
        return;
    if (spool_sync(S.sp) != EZ_OK) {
        for (size_t i = S.npend; i-- > 0;) {
            q_pop_back();
            nack(ctx, &S.pend[i], "spool", "the log spool could not be synced");
        }
        S.ready = false;
        S.npend = 0;
        return;
    }
    for (size_t i = 0; i < S.npend; i++) {
        S.m.accepted += S.pend[i].nrows;
        send_reply(ctx, &S.pend[i], WIRE_ACK, NULL);
    }
    S.npend = 0;
}

/* ---- log DB ---- */

/* Like bg_main_conn for the log DB: outage logged once; log schema checked once. */
static PGconn *log_conn(struct bg_ctx *ctx)
{
    int saved = ez_log_min_level;
    if (S.db_down && ez_log_min_level > EZ_LOG_DEBUG && ez_log_min_level < EZ_LOG_ERROR)
        ez_log_min_level = EZ_LOG_ERROR; /* db_get's per-attempt warnings, during an outage */
    PGconn *c = db_get(&ctx->log_db);
    ez_log_min_level = saved;
    if (c == NULL) {
        if (!S.db_down)
            log_warn("event=pg_unavailable db=log msg=\"log records stay in the spool; "
                     "retrying\"");
        S.db_down = true;
        return NULL;
    }
    if (S.db_down) {
        log_info("event=pg_available db=log");
        S.db_down = false;
    }
    if (!S.schema_checked) {
        int v = db_log_schema_version(c);
        if (v < 0) {
            db_check(&ctx->log_db);
            if (ctx->log_db.conn == NULL)
                return NULL;
        }
        if (v < EZ_LOG_SCHEMA_VERSION) {
            log_error("event=log_schema_behind schema_version=%d required=%d "
                      "msg=\"the log database schema is older than this build: run "
                      "scripts/migrate\"",
                      v, EZ_LOG_SCHEMA_VERSION);
            S.schema_bad = true;
            ctx->exit_code = BG_EXIT_SCHEMA;
            ctx->stop = true;
            return NULL;
        }
        S.schema_checked = true;
    }
    if (PQclientEncoding(c) != pg_char_to_encoding("UTF8") && PQsetClientEncoding(c, "UTF8") != 0) {
        log_warn("event=log_db_encoding_failed error=\"%s\"", PQerrorMessage(c));
        db_check(&ctx->log_db);
        return NULL;
    }
    return c;
}

/* Learns written_upto: the spool never numbers a new batch at or below it. */
static void note_progress(uint64_t w)
{
    if (!S.progress_known || w > S.written_upto)
        S.written_upto = w;
    S.progress_known = true;
    if (spool_next_seq(S.sp) <= w) {
        if (!spool_was_fresh(S.sp) && spool_next_seq(S.sp) > 1)
            log_error("event=spool_behind_log_db next_seq=%llu written_upto=%llu "
                      "msg=\"the spool directory is older than the log table's progress (a "
                      "second log sink, or a restored spool?); numbering continues after "
                      "written_upto\"",
                      (unsigned long long)spool_next_seq(S.sp), (unsigned long long)w);
        spool_advance_seq(S.sp, w + 1);
    }
}

/* written_upto without a lock, for start-up. 0 ok, -1 unknown (DB down: logged). */
static int read_progress(struct bg_ctx *ctx, uint64_t *w)
{
    PGconn *c = log_conn(ctx);
    if (c == NULL)
        return EZ_ERR;
    PGresult *res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1");
    int rc = EZ_ERR;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("event=log_progress_read_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&ctx->log_db);
    } else {
        *w = PQntuples(res) == 1 ? strtoull(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        rc = EZ_OK;
    }
    PQclear(res);
    return rc;
}

/*
 * Sets a batch the log table refuses (a data error the validator missed)
 * aside as <spool dir>/rejected-<seq>.copy, so that it does not block every
 * batch behind it. Returns 0 when the file is written.
 */
static int quarantine(struct bg_ctx *ctx, const struct qmsg *m)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/rejected-%020llu.copy", ctx->cfg->log_spool_dir,
             (unsigned long long)m->seq);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        log_error("event=log_quarantine_failed file=%s error=\"%s\"", path, strerror(errno));
        return EZ_ERR;
    }
    bool ok = fwrite(m->rows, 1, m->len, f) == m->len;
    ok = (fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        log_error("event=log_quarantine_failed file=%s error=\"%s\"", path, strerror(errno));
        return EZ_ERR;
    }
    log_error("event=log_batch_quarantined seq=%llu records=%u file=%s msg=\"the log table "
              "refused this batch; its rows are kept in the file (COPY text format, columns: "
              "%s)\"",
              (unsigned long long)m->seq, m->nrows, path, LOGREC_COPY_COLUMNS);
    return EZ_OK;
}

static void observe_write(int64_t us)
{
    S.m.writes++;
    S.m.write_us_sum += (uint64_t)us;
    double secs = (double)us / 1e6;
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (secs <= write_buckets[i]) {
            S.m.bucket[i]++;
            break;
        }
    }
}

enum write_result { WR_OK = 0, WR_RETRY = -1, WR_DATA = -2 };

/*
 * One transaction: lock the progress row, drop what it already covers,
 * COPY the oldest batches (whole batches, up to LOG_SINK_TXN_ROWS rows, or
 * max_msgs batches), move written_upto to the last one, commit. skip_only:
 * write no rows, only move written_upto past the head batch (quarantine).
 */
static enum write_result write_txn(struct bg_ctx *ctx, size_t max_msgs, bool skip_only,
                                   size_t *tried, char *err, size_t errlen)
{
    PGresult *res = NULL;
    enum write_result rc = WR_RETRY;
    size_t nmsg = 0;
    uint64_t rows = 0, last = 0;
    int64_t t0 = ez_mono_us();

    err[0] = '\0';
    PGconn *c = log_conn(ctx);
    if (c == NULL) {
        snprintf(err, errlen, "log database unavailable");
        return WR_RETRY;
    }
    res = PQexec(c, "BEGIN; SET LOCAL statement_timeout = 30000");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1 FOR UPDATE");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto fail;
    if (PQntuples(res) != 1) {
        /* The migration inserts the row; recreate it if someone deleted it. */
        PQclear(res);
        res = PQexec(c, "INSERT INTO log_sink_progress (id, written_upto) VALUES (1, 0) "
                        "ON CONFLICT (id) DO NOTHING RETURNING written_upto");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            goto fail;
        PQclear(res);
        res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1 FOR UPDATE");
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            goto fail;
    }
    uint64_t w = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    res = NULL;
    note_progress(w);
    uint64_t dropped = q_drop_upto(w);
    if (dropped > 0) {
        /* A previous commit went through although its answer was lost. */
        S.m.written += dropped;
        log_info("event=log_batches_already_written written_upto=%llu records=%llu",
                 (unsigned long long)w, (unsigned long long)dropped);
    }
    if (q_count() == 0) {
        res = PQexec(c, "COMMIT");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto fail;
        PQclear(res);
        return WR_OK;
    }

    if (skip_only) {
        nmsg = 1;
        last = q_at(0)->seq;
    } else {
        while (nmsg < q_count() && nmsg < max_msgs &&
               (nmsg == 0 || rows + q_at(nmsg)->nrows <= LOG_SINK_TXN_ROWS)) {
            rows += q_at(nmsg)->nrows;
            last = q_at(nmsg)->seq;
            nmsg++;
        }
        *tried = nmsg;
        res = PQexec(c, "COPY request_logs (" LOGREC_COPY_COLUMNS ") FROM STDIN");
        if (PQresultStatus(res) != PGRES_COPY_IN)
            goto fail;
        PQclear(res);
        res = NULL;
        for (size_t i = 0; i < nmsg; i++) {
            if (PQputCopyData(c, q_at(i)->rows, (int)q_at(i)->len) != 1) {
                snprintf(err, errlen, "COPY data: %s", PQerrorMessage(c));
                goto fail;
            }
        }
        if (PQputCopyEnd(c, NULL) != 1) {
            snprintf(err, errlen, "COPY end: %s", PQerrorMessage(c));
            goto fail;
        }
        res = PQgetResult(c);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            goto fail;
        PQclear(res);
        /* Drain the end of the COPY exchange. */
        while ((res = PQgetResult(c)) != NULL)
            PQclear(res);
    }

    char lastbuf[24];
    snprintf(lastbuf, sizeof(lastbuf), "%llu", (unsigned long long)last);
    const char *params[1] = {lastbuf};
    res = PQexecParams(c, "UPDATE log_sink_progress SET written_upto = $1 WHERE id = 1", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    res = PQexec(c, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);

    /* Committed: the batches are in the table. */
    for (size_t i = 0; i < nmsg; i++) {
        if (skip_only)
            S.m.quarantined += q_at(0)->nrows;
        else
            S.m.written += q_at(0)->nrows;
        q_pop_front();
    }
    S.written_upto = last;
    if (!skip_only)
        observe_write(ez_mono_us() - t0);
    if (spool_release(S.sp, last) < 0)
        log_warn("event=spool_release_failed written_upto=%llu", (unsigned long long)last);
    log_debug("event=log_batch_written batches=%zu records=%llu written_upto=%llu us=%lld", nmsg,
              (unsigned long long)rows, (unsigned long long)last, (long long)(ez_mono_us() - t0));
    return WR_OK;

fail:
    if (err[0] == '\0') {
        const char *msg = res ? PQresultErrorMessage(res) : "";
        snprintf(err, errlen, "%s", (msg && *msg) ? msg : PQerrorMessage(c));
    }
    if (res) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        /* 22xxx data exception, 23xxx integrity violation: this data will never go in. */
        if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
            rc = WR_DATA;
        PQclear(res);
    }
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    db_check(&ctx->log_db);
    S.m.write_failures++;
    return rc;
}

/* A write attempt with the failure bookkeeping: backoff, once-per-streak logs, poison batches. */
static int write_once(struct bg_ctx *ctx, int64_t now)
{
    char err[512];
    size_t tried = 0;
    enum write_result r = write_txn(ctx, S.isolate ? 1 : SIZE_MAX, false, &tried, err, sizeof(err));
    if (r == WR_DATA && tried == 0)
        r = WR_RETRY; /* not from the rows themselves */
    if (r == WR_DATA && tried > 1) {
        /* One of these batches is refused by the table: retry them one at a time to find it. */
        S.isolate = tried;
        log_warn("event=log_write_data_error batches=%zu error=\"%s\" msg=\"retrying batch by "
                 "batch\"",
                 tried, err);
        return EZ_ERR;
    }
    if (r == WR_DATA) {
        /* This one batch will never go in: set it aside, then move written_upto past it. */
        log_error("event=log_write_refused seq=%llu error=\"%s\"", (unsigned long long)q_at(0)->seq,
                  err);
        if (quarantine(ctx, q_at(0)) == EZ_OK)
            r = write_txn(ctx, 1, true, &tried, err, sizeof(err));
        else
            r = WR_RETRY;
    }
    if (r == WR_OK) {
        if (S.isolate > 0)
            S.isolate--;
        if (S.failing)
            log_info("event=log_write_recovered queued_records=%llu",
                     (unsigned long long)S.pending_rows);
        S.failing = false;
        S.backoff_ms = 0;
        S.next_attempt_ms = 0;
        return EZ_OK;
    }
    S.backoff_ms = S.backoff_ms ? S.backoff_ms * 2 : LOG_SINK_BACKOFF_MIN_MS;
    if (S.backoff_ms > LOG_SINK_BACKOFF_MAX_MS)
        S.backoff_ms = LOG_SINK_BACKOFF_MAX_MS;
    S.next_attempt_ms = now + S.backoff_ms;
    if (!S.failing) {
        if (!S.db_down)
            log_warn("event=log_write_failed error=\"%s\" queued_records=%llu retry_ms=%lld", err,
                     (unsigned long long)S.pending_rows, (long long)S.backoff_ms);
        S.failing = true;
    } else {
        log_debug("event=log_write_failed error=\"%s\" retry_ms=%lld", err,
                  (long long)S.backoff_ms);
    }
    return EZ_ERR;
}

/* ---- job ---- */

static int64_t tick_ms(const struct ez_config *cfg)
{
    int64_t t = cfg->log_flush_ms / 4;
    return t < 5 ? 5 : t > 250 ? 250 : t;
}

int64_t log_sink_interval_ms(const struct ez_config *cfg)
{
    return tick_ms(cfg);
}

/* Due: a full batch waits, or the oldest record would wait past the flush interval by the next
 * tick. */
static bool write_due(const struct ez_config *cfg, int64_t now)
{
    if (q_count() == 0 || now < S.next_attempt_ms)
        return false;
    if (S.pending_rows >= (uint64_t)cfg->log_batch_size)
        return true;
    return now >= q_at(0)->arrived_ms + cfg->log_flush_ms - tick_ms(cfg);
}

static int replay_one(uint64_t seq, const void *payload, size_t len, void *arg)
{
    int64_t now = *(int64_t *)arg;
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((const char *)payload)[i] == '\n';
    char *copy = ez_malloc(len ? len : 1);
    memcpy(copy, payload, len);
    q_push(seq, n, copy, len, now);
    return EZ_OK;
}

/* A fresh spool learns its sequence from the log table before it numbers anything. */
static void try_ready(struct bg_ctx *ctx)
{
    if (S.ready || spool_is_broken(S.sp))
        return;
    uint64_t w;
    if (!S.progress_known) {
        if (read_progress(ctx, &w) != EZ_OK) {
            if (!S.waiting_logged)
                log_warn("event=log_sink_waiting msg=\"new spool: log batches are refused until "
                         "the log database tells where numbering continues\"");
            S.waiting_logged = true;
            return;
        }
        note_progress(w);
    }
    if (spool_begin(S.sp) != EZ_OK)
        return;
    S.ready = true;
    log_info("event=log_sink_ready next_seq=%llu written_upto=%llu queued_records=%llu",
             (unsigned long long)spool_next_seq(S.sp), (unsigned long long)S.written_upto,
             (unsigned long long)S.pending_rows);
}

int log_sink_init(struct bg_ctx *ctx)
{
    char err[512];
    uint64_t w = 0;
    memset(&S, 0, sizeof(S));
    if (spool_open(ctx->cfg->log_spool_dir, 0, &S.sp, err, sizeof(err)) != EZ_OK) {
        log_error("event=log_sink_init_failed error=\"%s\"", err);
        return EZ_ERR;
    }
    /* One attempt now: replaying after written_upto skips what is already in the table. */
    if (read_progress(ctx, &w) == EZ_OK)
        note_progress(w);
    if (ctx->stop)
        return EZ_OK; /* log schema behind: the daemon is stopping */
    int64_t now = jobs_now_ms();
    if (spool_replay(S.sp, S.progress_known ? S.written_upto : 0, replay_one, &now) != EZ_OK) {
        log_error("event=log_sink_init_failed error=\"spool replay failed\"");
        return EZ_ERR;
    }
    struct spool_stats st;
    spool_get_stats(S.sp, &st);
    log_info("event=log_spool_opened dir=%s segments=%llu bytes=%llu truncated_bytes=%llu "
             "replayed_batches=%zu replayed_records=%llu written_upto=%s%llu",
             ctx->cfg->log_spool_dir, (unsigned long long)st.segments, (unsigned long long)st.bytes,
             (unsigned long long)st.truncated, q_count(), (unsigned long long)S.pending_rows,
             S.progress_known ? "" : "unknown:", (unsigned long long)S.written_upto);
    /* A used spool knows its own sequence; a fresh one must learn it from the log table. */
    if (!spool_was_fresh(S.sp) || S.progress_known) {
        if (spool_begin(S.sp) != EZ_OK)
            return EZ_ERR;
        S.ready = true;
        log_info("event=log_sink_ready next_seq=%llu queued_records=%llu",
                 (unsigned long long)spool_next_seq(S.sp), (unsigned long long)S.pending_rows);
    } else {
        try_ready(ctx);
    }
    return EZ_OK;
}

static void publish_metrics(struct bg_ctx *ctx);

int log_sink_run(struct bg_ctx *ctx)
{
    if (S.sp == NULL)
        return EZ_OK;
    commit_acks(ctx);
    if (!S.ready)
        try_ready(ctx);

    int64_t start = jobs_now_ms(), now = start;
    while (!ctx->stop && write_due(ctx->cfg, now) && now - start < LOG_SINK_RUN_BUDGET_MS) {
        if (write_once(ctx, now) != EZ_OK && S.isolate == 0)
            break;
        now = jobs_now_ms();
    }
    if (now - S.last_metrics_ms >= LOG_SINK_METRICS_MS) {
        S.last_metrics_ms = now;
        publish_metrics(ctx);
    }
    return EZ_OK;
}

void log_sink_fini(struct bg_ctx *ctx)
{
    if (S.sp == NULL)
        return;
    commit_acks(ctx);
    if (q_count() > 0 && !S.schema_bad) {
        int64_t deadline = jobs_now_ms() + LOG_SINK_DRAIN_MS;
        log_info("event=log_sink_draining queued_records=%llu", (unsigned long long)S.pending_rows);
        S.next_attempt_ms = 0;
        while (q_count() > 0) {
            int64_t now = jobs_now_ms();
            if (now >= deadline)
                break;
            if (now < S.next_attempt_ms) {
                int64_t wait =
                    S.next_attempt_ms < deadline ? S.next_attempt_ms - now : deadline - now;
                usleep((useconds_t)(wait * 1000));
                continue;
            }
            (void)write_once(ctx, now);
        }
        if (q_count() > 0)
            log_warn("event=log_sink_drain_incomplete queued_records=%llu msg=\"left in the "
                     "spool; written after the next start\"",
                     (unsigned long long)S.pending_rows);
        else
            log_info("event=log_sink_drained written_upto=%llu",
                     (unsigned long long)S.written_upto);
    }
    publish_metrics(ctx);
    while (q_count() > 0)
        q_pop_front();
    free(S.q);
    free(S.pend);
    spool_close(S.sp);
    memset(&S, 0, sizeof(S));
}

/* ---- receive ---- */

/*
 * The shape of COPY rows from a worker: exactly n lines ending in '\n', each
 * of LOGREC_COPY_NCOLS tab-separated columns, no other control byte (COPY
 * escapes them), valid UTF-8. The worker validated every value; this only
 * keeps a malformed message from reaching the spool as a torn or shifted row.
 */
static bool rows_shape_ok(const char *p, size_t len, int n)
{
    if (len == 0 || p[len - 1] != '\n' || !ez_utf8_valid(p, len))
        return false;
    int lines = 0, tabs = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20)
            continue;
        if (c == '\t') {
            tabs++;
        } else if (c == '\n') {
            if (tabs != LOGREC_COPY_NCOLS - 1 || ++lines > n)
                return false;
            tabs = 0;
        } else {
            return false;
        }
    }
    return lines == n;
}

/*
 * A batch in the worker's format (LOGREC_WIRE_MAGIC): the header is parsed and
 * the rows only checked for shape, not validated again: the single-threaded
 * loop also fsyncs, acks and COPYs. Same results as batch_rows.
 */
static int wire_rows(const char *hostname, const char *payload, size_t len, buf_t *rows,
                     uint32_t *nrows, char *msg, size_t msglen)
{
    const char *nl = memchr(payload, '\n', len);
    char head[512];
    size_t hlen = nl ? (size_t)(nl - payload) : 0;
    long long received_ms, expires_ms;
    int n, off = 0;
    if (nl == NULL || hlen >= sizeof(head)) {
        snprintf(msg, msglen, "the payload header is malformed");
        return EZ_ERR;
    }
    memcpy(head, payload, hlen);
    head[hlen] = '\0';
    if (sscanf(head, LOGREC_WIRE_MAGIC " %lld %lld %d %n", &received_ms, &expires_ms, &n, &off) !=
            3 ||
        off == 0 || received_ms < 0 || received_ms > LOGREC_MAX_UNIX * 1000) {
        snprintf(msg, msglen, "the payload header is malformed");
        return EZ_ERR;
    }
    *nrows = n > 0 ? (uint32_t)n : 0; /* also on failure: the refused records are counted */
    /* Only a batch from this host shares our clock: across hosts, skew must not refuse batches. */
    if (strcmp(head + off, hostname) == 0 && ez_now_ms() > expires_ms) {
        snprintf(msg, msglen, "expired %lld ms ago", (long long)(ez_now_ms() - expires_ms));
        return 1;
    }
    if (n < 1 || n > LOGREC_MAX_BATCH) {
        snprintf(msg, msglen, "a batch holds 1 to %d records", LOGREC_MAX_BATCH);
        return EZ_ERR;
    }
    const char *body = nl + 1;
    size_t blen = len - hlen - 1;
    if (!rows_shape_ok(body, blen, n)) {
        snprintf(msg, msglen, "the rows are not %d COPY rows of %d columns", n, LOGREC_COPY_NCOLS);
        return EZ_ERR;
    }
    buf_append(rows, body, blen);
    return EZ_OK;
}

/*
 * Validates the worker's batch and renders its COPY rows. 0 ok with *nrows;
 * -1 with msg; 1 when the batch expired (its worker has given up: see
 * LOGS_EXPIRY_MARGIN_MS in fcgi-app/internal_logs.c).
 */
static int batch_rows(const char *hostname, const void *payload, size_t len, buf_t *rows,
                      uint32_t *nrows, char *msg, size_t msglen)
{
    cJSON *root = NULL;
    char perr[128];
    int rc = EZ_ERR;
    size_t mlen = sizeof(LOGREC_WIRE_MAGIC) - 1;
    if (len > mlen && memcmp(payload, LOGREC_WIRE_MAGIC " ", mlen + 1) == 0)
        return wire_rows(hostname, payload, len, rows, nrows, msg, msglen);
    /* JSON: a batch spoken directly (tests, older workers); validated in full. */
    if (json_parse_strict(payload, len, &root, perr, sizeof(perr)) != EZ_OK) {
        snprintf(msg, msglen, "payload is not valid JSON: %s", perr);
        return EZ_ERR;
    }
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(root, "received_at");
    const cJSON *logs = cJSON_GetObjectItemCaseSensitive(root, "logs");
    int64_t received_ms;
    if (!json_int_in(ra, 0, LOGREC_MAX_UNIX * 1000, &received_ms) || !cJSON_IsArray(logs)) {
        snprintf(msg, msglen, "payload needs received_at and logs");
        goto out;
    }
    int n = cJSON_GetArraySize(logs);
    *nrows = (uint32_t)n; /* also on failure: the refused records are counted */
    /* Only a batch from this host shares our clock: across hosts, skew must not refuse batches. */
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "expires_at");
    const cJSON *host = cJSON_GetObjectItemCaseSensitive(root, "host");
    int64_t expires_ms;
    if (ex && cJSON_IsString(host) && strcmp(host->valuestring, hostname) == 0 &&
        json_int_in(ex, 0, INT64_MAX / 2, &expires_ms) && ez_now_ms() > expires_ms) {
        snprintf(msg, msglen, "expired %lld ms ago", (long long)(ez_now_ms() - expires_ms));
        rc = 1;
        goto out;
    }
    if (n < 1 || n > LOGREC_MAX_BATCH) {
        snprintf(msg, msglen, "a batch holds 1 to %d records", LOGREC_MAX_BATCH);
        goto out;
    }
    int k = 0;
    for (const cJSON *it = logs->child; it; it = it->next, k++) {
        struct logrec rec;
        char field[64], why[256];
        if (logrec_from_json(it, received_ms * 1000, &rec, field, sizeof(field), why,
                             sizeof(why)) != EZ_OK) {
            logrec_free(&rec);
            snprintf(msg, msglen, "logs[%d]: %s", k, why);
            goto out;
        }
        logrec_copy_row(&rec, received_ms * 1000, rows);
        logrec_free(&rec);
    }
    rc = EZ_OK;
out:
    cJSON_Delete(root);
    return rc;
}

void log_sink_receive(struct bg_ctx *ctx, const void *const *env, const size_t *envlens, int nenv,
                      const void *seq, size_t seqlen, const void *payload, size_t len)
{
    struct pend p;
    memset(&p, 0, sizeof(p));
    p.nenv = nenv > 2 ? 2 : nenv;
    for (int i = 0; i < p.nenv; i++) {
        p.envlen[i] = envlens[i] < sizeof(p.env[i]) ? envlens[i] : sizeof(p.env[i]);
        memcpy(p.env[i], env[i], p.envlen[i]);
    }
    if (seq == NULL || seqlen == 0 || seqlen >= sizeof(p.seq) || payload == NULL) {
        /* Without a usable seq the worker could not match a reply; it times out (503). */
        log_warn("event=log_batch_malformed msg=\"a logs message needs [seq][payload]\"");
        return;
    }
    memcpy(p.seq, seq, seqlen);
    p.seqlen = seqlen;

    buf_t rows;
    buf_init(&rows);
    uint32_t n = 0;
    char msg[384];
    int br = batch_rows(ctx->hostname, payload, len, &rows, &n, msg, sizeof(msg));
    p.nrows = n;
    S.m.received += n;
    if (br == 1) {
        log_warn("event=log_batch_expired detail=\"%s\" msg=\"its worker has answered 503; not "
                 "spooled\"",
                 msg);
        nack(ctx, &p, "expired", "the batch arrived too late");
        buf_free(&rows);
        return;
    }
    if (br != EZ_OK) {
        log_warn("event=log_batch_invalid error=\"%s\"", msg);
        nack(ctx, &p, "invalid", "the batch is invalid");
        buf_free(&rows);
        return;
    }
    if (S.sp == NULL || !S.ready || spool_is_broken(S.sp)) {
        nack(ctx, &p, "not_ready", "the log pipeline is not ready");
        buf_free(&rows);
        return;
    }
    /* A batch larger than the whole queue still goes into an empty pipeline. */
    if (S.pending_rows > 0 && S.pending_rows + n > (uint64_t)ctx->cfg->log_queue) {
        nack(ctx, &p, "full", "the log pipeline is full");
        buf_free(&rows);
        return;
    }
    uint64_t s;
    if (spool_append(S.sp, rows.data, rows.len, &s) != EZ_OK) {
        nack(ctx, &p, "spool", "the log spool could not be written");
        buf_free(&rows);
        return;
    }
    size_t rlen = rows.len;
    q_push(s, n, buf_steal(&rows), rlen, jobs_now_ms());
    if (S.npend == S.pendcap) {
        S.pendcap = S.pendcap ? S.pendcap * 2 : 64;
        S.pend = ez_realloc(S.pend, S.pendcap * sizeof(*S.pend));
    }
    S.pend[S.npend++] = p;
    jobs_kick("log_sink");
}

/* ---- metrics ---- */

/*
 * Rewrites the Redis hash LOGREC_METRICS_KEY (see logrec.h) with the
 * counters; the workers' /internal/metrics reads it. Best effort: skipped
 * while Redis is down (bg_redis logs the outage once).
 */
static void publish_metrics(struct bg_ctx *ctx)
{
    redisContext *rc = bg_redis(ctx);
    if (rc == NULL)
        return;
    struct spool_stats st;
    spool_get_stats(S.sp, &st);

    enum { MAXF = 40 };
    char vals[MAXF][32];
    const char *argv[2 + 2 * MAXF];
    size_t argl[2 + 2 * MAXF];
    int n = 0;
    argv[n++] = "HSET";
    argv[n++] = LOGREC_METRICS_KEY;
#define FIELD_U(name, v)                                                                           \
    do {                                                                                           \
        int i_ = (n - 2) / 2;                                                                      \
        snprintf(vals[i_], sizeof(vals[i_]), "%llu", (unsigned long long)(v));                     \
        argv[n++] = name;                                                                          \
        argv[n++] = vals[i_];                                                                      \
    } while (0)
    FIELD_U("records_received_total", S.m.received);
    FIELD_U("records_accepted_total", S.m.accepted);
    FIELD_U("records_rejected_total", S.m.rejected);
    FIELD_U("records_written_total", S.m.written);
    FIELD_U("records_quarantined_total", S.m.quarantined);
    FIELD_U("records_queued", S.pending_rows);
    FIELD_U("batches_queued", q_count());
    FIELD_U("spool_bytes", st.bytes);
    FIELD_U("spool_segments", st.segments);
    FIELD_U("spool_fsyncs_total", st.fsyncs);
    FIELD_U("spool_truncated_bytes_total", st.truncated);
    FIELD_U("batch_writes_total", S.m.writes);
    FIELD_U("batch_write_failures_total", S.m.write_failures);
    FIELD_U("batch_write_us_sum", S.m.write_us_sum);
    uint64_t cum = 0;
    static const char *const bucket_names[NBUCKETS] = {
        "batch_write_le_0.005", "batch_write_le_0.01", "batch_write_le_0.025",
        "batch_write_le_0.05",  "batch_write_le_0.1",  "batch_write_le_0.25",
        "batch_write_le_0.5",   "batch_write_le_1",    "batch_write_le_2.5",
        "batch_write_le_5",     "batch_write_le_10"};
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += S.m.bucket[i];
        FIELD_U(bucket_names[i], cum);
    }
    FIELD_U("written_upto", S.written_upto);
    FIELD_U("ready", S.ready ? 1 : 0);
    FIELD_U("pid", (unsigned long long)getpid());
    FIELD_U("updated_at_ms", (unsigned long long)ez_now_ms());
#undef FIELD_U
    for (int i = 0; i < n; i++)
        argl[i] = strlen(argv[i]);

    redisAppendCommandArgv(rc, n, argv, argl);
    redisAppendCommand(rc, "EXPIRE %s %d", LOGREC_METRICS_KEY, LOG_SINK_METRICS_TTL_S);
    for (int i = 0; i < 2; i++) {
        redisReply *reply = NULL;
        if (redisGetReply(rc, (void **)&reply) != REDIS_OK) {
            log_debug("event=log_metrics_publish_failed error=\"%s\"", rc->errstr);
            rds_check(&ctx->redis);
            return;
        }
        if (reply && reply->type == REDIS_REPLY_ERROR)
            log_debug("event=log_metrics_publish_failed error=\"%s\"", reply->str);
        freeReplyObject(reply);
    }
}
