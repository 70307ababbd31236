/* The log writer thread: exactly-once COPY of spooled batches into request_logs. */
#include "log_writer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "logrec.h"
#include "util.h"
#include "version.h"

const double log_writer_buckets[LOG_WRITER_NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                        0.5,   1,    2.5,   5,    10};

/* One spooled batch waiting for the log table. */
struct qmsg {
    uint64_t seq;
    uint32_t nrows;
    char *rows; /* COPY text rows, owned by the queue */
    size_t len;
    int64_t arrived_ms; /* monotonic */
};

/* A batch in the transaction being written: borrowed from the queue's head (see the header). */
struct wmsg {
    uint64_t seq;
    uint32_t nrows;
    const char *rows;
    size_t len;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* new synced batches, new settings, stop */
    pthread_t thread;
    bool started;

    /* Under mu. The queue's live entries are q[qhead .. qlen); the first nsynced are synced. */
    struct qmsg *q;
    size_t qhead, qlen, qcap;
    size_t nsynced;
    uint64_t queued_rows, synced_rows;
    int64_t batch_size, flush_ms;
    bool stopping;
    int64_t drain_deadline_ms;
    struct log_writer_status st; /* queued_* are filled in by log_writer_status */

    /* The writer thread's own. */
    struct ez_db db;
    struct log_conn conn;
    char *spool_dir;
    struct wmsg *batch;
    size_t batchcap;
    int64_t next_attempt_ms, backoff_ms;
    bool failing;   /* a failure streak is in progress and was logged */
    size_t isolate; /* after a data error: this many writes of a single batch each */
} W;

static int64_t now_ms(void)
{
    return ez_mono_us() / 1000;
}

/* ---- connection ---- */

PGconn *log_conn_get(struct log_conn *lc)
{
    if (lc->schema_bad)
        return NULL;
    lc->db->quiet = lc->down; /* the outage was logged once: its retries go to debug */
    PGconn *c = db_get(lc->db);
    if (c == NULL) {
        if (!lc->down)
            log_warn("event=pg_unavailable db=log msg=\"log records stay in the spool; "
                     "retrying\"");
        lc->down = true;
        return NULL;
    }
    if (lc->down) {
        log_info("event=pg_available db=log");
        lc->down = false;
    }
    if (!lc->schema_checked) {
        int v = db_log_schema_version(c);
        if (v < 0) {
            db_check(lc->db);
            if (lc->db->conn == NULL)
                return NULL;
        }
        if (v < EZ_LOG_SCHEMA_VERSION) {
            log_error("event=log_schema_behind schema_version=%d required=%d "
                      "msg=\"the log database schema is older than this build: run "
                      "scripts/migrate\"",
                      v, EZ_LOG_SCHEMA_VERSION);
            lc->schema_bad = true;
            return NULL;
        }
        lc->schema_checked = true;
    }
    if (PQclientEncoding(c) != pg_char_to_encoding("UTF8") && PQsetClientEncoding(c, "UTF8") != 0) {
        log_warn("event=log_db_encoding_failed error=\"%s\"", PQerrorMessage(c));
        db_check(lc->db);
        return NULL;
    }
    return c;
}

/* ---- queue (every function here runs under mu) ---- */

static size_t q_count(void)
{
    return W.qlen - W.qhead;
}

static void q_pop_front(void)
{
    struct qmsg *m = &W.q[W.qhead];
    W.queued_rows -= m->nrows;
    W.synced_rows -= m->nrows;
    W.nsynced--;
    free(m->rows);
    W.qhead++;
    if (W.qhead == W.qlen)
        W.qhead = W.qlen = 0;
}

/* The table holds everything up to w: forget those batches. Returns the rows dropped. */
static uint64_t q_drop_upto(uint64_t w)
{
    uint64_t rows = 0;
    while (W.nsynced > 0 && W.q[W.qhead].seq <= w) {
        rows += W.q[W.qhead].nrows;
        q_pop_front();
    }
    return rows;
}

/* Borrows the oldest synced batches: whole batches, up to LOG_WRITER_TXN_ROWS rows or max_msgs. */
static size_t q_take(size_t max_msgs)
{
    size_t n = 0;
    uint64_t rows = 0;
    while (n < W.nsynced && n < max_msgs) {
        const struct qmsg *m = &W.q[W.qhead + n];
        if (n > 0 && rows + m->nrows > LOG_WRITER_TXN_ROWS)
            break;
        if (n == W.batchcap) {
            W.batchcap = W.batchcap ? W.batchcap * 2 : 64;
            W.batch = ez_realloc(W.batch, W.batchcap * sizeof(*W.batch));
        }
        W.batch[n++] = (struct wmsg){m->seq, m->nrows, m->rows, m->len};
        rows += m->nrows;
    }
    return n;
}

/* When the next write is due (monotonic ms); INT64_MAX while nothing synced waits. */
static int64_t due_at(void)
{
    if (W.nsynced == 0)
        return INT64_MAX;
    int64_t t = W.q[W.qhead].arrived_ms + W.flush_ms;
    if (W.stopping || W.synced_rows >= (uint64_t)W.batch_size)
        t = 0;
    return t > W.next_attempt_ms ? t : W.next_attempt_ms;
}

void log_writer_push(uint64_t seq, uint32_t nrows, char *rows, size_t len, int64_t now)
{
    pthread_mutex_lock(&W.mu);
    if (W.qhead > 0 && W.qlen == W.qcap) {
        memmove(W.q, W.q + W.qhead, q_count() * sizeof(*W.q));
        W.qlen -= W.qhead;
        W.qhead = 0;
    }
    if (W.qlen == W.qcap) {
        W.qcap = W.qcap ? W.qcap * 2 : 64;
        W.q = ez_realloc(W.q, W.qcap * sizeof(*W.q));
    }
    W.q[W.qlen++] = (struct qmsg){seq, nrows, rows, len, now};
    W.queued_rows += nrows;
    pthread_mutex_unlock(&W.mu);
}

void log_writer_unpush(size_t n)
{
    pthread_mutex_lock(&W.mu);
    while (n-- > 0 && q_count() > W.nsynced) {
        struct qmsg *m = &W.q[W.qlen - 1];
        W.queued_rows -= m->nrows;
        free(m->rows);
        W.qlen--;
    }
    if (W.qhead == W.qlen)
        W.qhead = W.qlen = 0;
    pthread_mutex_unlock(&W.mu);
}

void log_writer_synced(void)
{
    pthread_mutex_lock(&W.mu);
    if (W.nsynced < q_count()) {
        W.nsynced = q_count();
        W.synced_rows = W.queued_rows;
        pthread_cond_signal(&W.wake);
    }
    pthread_mutex_unlock(&W.mu);
}

uint64_t log_writer_queued_rows(void)
{
    pthread_mutex_lock(&W.mu);
    uint64_t n = W.queued_rows;
    pthread_mutex_unlock(&W.mu);
    return n;
}

void log_writer_status(struct log_writer_status *st)
{
    pthread_mutex_lock(&W.mu);
    *st = W.st;
    st->queued_rows = W.queued_rows;
    st->queued_batches = q_count();
    pthread_mutex_unlock(&W.mu);
}

void log_writer_settings(int64_t batch_size, int64_t flush_ms)
{
    pthread_mutex_lock(&W.mu);
    if (W.batch_size != batch_size || W.flush_ms != flush_ms) {
        W.batch_size = batch_size;
        W.flush_ms = flush_ms;
        pthread_cond_signal(&W.wake);
    }
    pthread_mutex_unlock(&W.mu);
}

/* ---- writing (the writer thread) ---- */

/*
 * Sets a batch the log table refuses (a data error the validator missed)
 * aside as <spool dir>/rejected-<seq>.copy, so that it does not block every
 * batch behind it. Returns 0 when the file is written.
 */
static int quarantine(const struct wmsg *m)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/rejected-%020llu.copy", W.spool_dir,
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

/* Under mu. */
static void observe_write(int64_t us)
{
    W.st.writes++;
    W.st.write_us_sum += (uint64_t)us;
    double secs = (double)us / 1e6;
    for (size_t i = 0; i < LOG_WRITER_NBUCKETS; i++) {
        if (secs <= log_writer_buckets[i]) {
            W.st.bucket[i]++;
            break;
        }
    }
}

/* Locks the progress row and reads written_upto (recreating the row if someone deleted it). */
static int lock_progress(PGconn *c, uint64_t *w, PGresult **resp)
{
    PGresult *res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1 FOR UPDATE");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
        PQclear(res);
        res = PQexec(c, "INSERT INTO log_sink_progress (id, written_upto) VALUES (1, 0) "
                        "ON CONFLICT (id) DO NOTHING");
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            *resp = res;
            return EZ_ERR;
        }
        PQclear(res);
        res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1 FOR UPDATE");
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        *resp = res;
        return EZ_ERR;
    }
    *w = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return EZ_OK;
}

/* COPYs the rows of W.batch[0 .. n). */
static int copy_rows(PGconn *c, size_t n, PGresult **resp, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, "COPY request_logs (" LOGREC_COPY_COLUMNS ") FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        *resp = res;
        return EZ_ERR;
    }
    PQclear(res);
    for (size_t i = 0; i < n; i++) {
        if (PQputCopyData(c, W.batch[i].rows, (int)W.batch[i].len) != 1) {
            snprintf(err, errlen, "COPY data: %s", PQerrorMessage(c));
            return EZ_ERR;
        }
    }
    if (PQputCopyEnd(c, NULL) != 1) {
        snprintf(err, errlen, "COPY end: %s", PQerrorMessage(c));
        return EZ_ERR;
    }
    res = PQgetResult(c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        *resp = res;
        return EZ_ERR;
    }
    PQclear(res);
    while ((res = PQgetResult(c)) != NULL) /* the end of the COPY exchange */
        PQclear(res);
    return EZ_OK;
}

enum write_result { WR_OK = 0, WR_RETRY = -1, WR_DATA = -2 };

/*
 * One transaction: lock the progress row, drop the batches it already
 * covers, COPY the oldest synced batches (see q_take), move written_upto to
 * the last one, commit. skip_only: write no rows, only move written_upto
 * past the head batch (quarantine). *tried: the batches the COPY held.
 */
static enum write_result write_txn(size_t max_msgs, bool skip_only, size_t *tried, char *err,
                                   size_t errlen)
{
    PGresult *res = NULL;
    enum write_result rc = WR_RETRY;
    uint64_t w = 0, rows = 0;
    int64_t t0 = ez_mono_us();

    err[0] = '\0';
    PGconn *c = log_conn_get(&W.conn);
    if (c == NULL) {
        snprintf(err, errlen, "log database unavailable");
        return WR_RETRY;
    }
    if (db_command(c, "BEGIN; SET LOCAL statement_timeout = 30000", "begin", err, errlen) != EZ_OK)
        goto fail;
    if (lock_progress(c, &w, &res) != EZ_OK)
        goto fail;

    pthread_mutex_lock(&W.mu);
    if (w > W.st.db_upto)
        W.st.db_upto = w;
    uint64_t dropped = q_drop_upto(w);
    W.st.written += dropped;
    size_t nmsg = q_take(skip_only ? 1 : max_msgs);
    pthread_mutex_unlock(&W.mu);
    if (dropped > 0) /* a previous commit went through although its answer was lost */
        log_info("event=log_batches_already_written written_upto=%llu records=%llu",
                 (unsigned long long)w, (unsigned long long)dropped);
    if (nmsg == 0) {
        if (db_command(c, "COMMIT", "commit", err, errlen) != EZ_OK)
            goto fail;
        return WR_OK;
    }

    uint64_t last = W.batch[nmsg - 1].seq;
    for (size_t i = 0; i < nmsg; i++)
        rows += W.batch[i].nrows;
    if (!skip_only) {
        *tried = nmsg;
        if (copy_rows(c, nmsg, &res, err, errlen) != EZ_OK)
            goto fail;
    }
    char lastbuf[24];
    snprintf(lastbuf, sizeof(lastbuf), "%llu", (unsigned long long)last);
    const char *params[1] = {lastbuf};
    res = PQexecParams(c, "UPDATE log_sink_progress SET written_upto = $1 WHERE id = 1", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    res = NULL;
    if (db_command(c, "COMMIT", "commit", err, errlen) != EZ_OK)
        goto fail;

    /* Committed: the batches are in the table. Only this thread pops the head. */
    int64_t us = ez_mono_us() - t0;
    pthread_mutex_lock(&W.mu);
    for (size_t i = 0; i < nmsg; i++)
        q_pop_front();
    if (skip_only)
        W.st.quarantined += rows;
    else
        W.st.written += rows;
    W.st.written_upto = last;
    if (last > W.st.db_upto)
        W.st.db_upto = last;
    if (!skip_only)
        observe_write(us);
    pthread_mutex_unlock(&W.mu);
    log_debug("event=log_batch_written batches=%zu records=%llu written_upto=%llu us=%lld", nmsg,
              (unsigned long long)rows, (unsigned long long)last, (long long)us);
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
    db_check(&W.db);
    pthread_mutex_lock(&W.mu);
    W.st.write_failures++;
    pthread_mutex_unlock(&W.mu);
    return rc;
}

/* After a failed write: the next attempt waits twice as long as the last, within the bounds. */
static void back_off(int64_t now, const char *err)
{
    W.backoff_ms = W.backoff_ms ? W.backoff_ms * 2 : LOG_WRITER_BACKOFF_MIN_MS;
    if (W.backoff_ms > LOG_WRITER_BACKOFF_MAX_MS)
        W.backoff_ms = LOG_WRITER_BACKOFF_MAX_MS;
    W.next_attempt_ms = now + W.backoff_ms;
    if (!W.failing) {
        if (!W.conn.down)
            log_warn("event=log_write_failed error=\"%s\" queued_records=%llu retry_ms=%lld", err,
                     (unsigned long long)log_writer_queued_rows(), (long long)W.backoff_ms);
        W.failing = true;
    } else {
        log_debug("event=log_write_failed error=\"%s\" retry_ms=%lld", err,
                  (long long)W.backoff_ms);
    }
}

/* A write attempt with the failure bookkeeping: backoff, once-per-streak logs, poison batches. */
static void write_once(int64_t now)
{
    char err[512];
    size_t tried = 0;
    enum write_result r = write_txn(W.isolate ? 1 : SIZE_MAX, false, &tried, err, sizeof(err));
    if (r == WR_DATA && tried == 0)
        r = WR_RETRY; /* not from the rows themselves */
    if (r == WR_DATA && tried > 1) {
        /* One of these batches is refused by the table: retry them one at a time to find it. */
        W.isolate = tried;
        log_warn("event=log_write_data_error batches=%zu error=\"%s\" msg=\"retrying batch by "
                 "batch\"",
                 tried, err);
        return;
    }
    if (r == WR_DATA) {
        /* This one batch (the head, still queued) will never go in: set it aside, skip it. */
        log_error("event=log_write_refused seq=%llu error=\"%s\"",
                  (unsigned long long)W.batch[0].seq, err);
        r = quarantine(&W.batch[0]) == EZ_OK ? write_txn(1, true, &tried, err, sizeof(err))
                                             : WR_RETRY;
    }
    if (r != WR_OK) {
        back_off(now, err);
        return;
    }
    if (W.isolate > 0)
        W.isolate--;
    if (W.failing)
        log_info("event=log_write_recovered queued_records=%llu",
                 (unsigned long long)log_writer_queued_rows());
    W.failing = false;
    W.backoff_ms = 0;
    W.next_attempt_ms = 0;
}

/* Under mu: sleeps until at_ms (monotonic), a signal of wake, or spuriously. */
static void wait_until(int64_t at_ms)
{
    if (at_ms == INT64_MAX) {
        pthread_cond_wait(&W.wake, &W.mu);
        return;
    }
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (at_ms % 1000) * 1000000L};
    pthread_cond_timedwait(&W.wake, &W.mu, &ts);
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        int64_t now = now_ms();
        if (W.st.schema_bad || (W.stopping && (W.nsynced == 0 || now >= W.drain_deadline_ms)))
            break;
        int64_t at = due_at();
        if (at <= now) {
            pthread_mutex_unlock(&W.mu);
            write_once(now);
            pthread_mutex_lock(&W.mu);
            W.st.schema_bad = W.conn.schema_bad;
            continue;
        }
        if (W.stopping && at > W.drain_deadline_ms)
            at = W.drain_deadline_ms;
        wait_until(at);
    }
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

/* ---- life cycle (the loop) ---- */

void log_writer_init(const char *dsn, const char *spool_dir)
{
    memset(&W, 0, sizeof(W));
    pthread_mutex_init(&W.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines come from ez_mono_us */
    pthread_cond_init(&W.wake, &ca);
    pthread_condattr_destroy(&ca);
    db_init(&W.db, dsn);
    W.conn.db = &W.db;
    W.spool_dir = ez_strdup(spool_dir);
    W.batch_size = 1;
}

int log_writer_start(void)
{
    /* Signals stay with the loop (its self-pipe wakes zmq_poll). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&W.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error("event=log_writer_start_failed error=\"%s\"", strerror(rc));
        return EZ_ERR;
    }
    W.started = true;
    return EZ_OK;
}

uint64_t log_writer_stop(int64_t drain_ms)
{
    pthread_mutex_lock(&W.mu);
    W.stopping = true;
    W.drain_deadline_ms = now_ms() + drain_ms;
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.mu);
    if (W.started)
        pthread_join(W.thread, NULL);
    W.started = false;
    return log_writer_queued_rows();
}

void log_writer_free(void)
{
    while (q_count() > 0) {
        free(W.q[W.qhead].rows);
        W.qhead++;
    }
    free(W.q);
    free(W.batch);
    free(W.spool_dir);
    db_close(&W.db);
    pthread_cond_destroy(&W.wake);
    pthread_mutex_destroy(&W.mu);
    memset(&W, 0, sizeof(W));
}
