/* Log sink job: spool + group-commit acks for WIRE_LOGS; the writer thread does the COPY. */
#include "log_sink.h"

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
#include "log_dedup.h"
#include "log_writer.h"
#include "logrec.h"
#include "spool.h"
#include "wire.h"

/*
 * How the pieces fit (docs/log-pipeline.md has the whole story):
 *
 *  loop: receive (zmq_server_drain)  loop: run (same turn)     writer thread (log_writer.c)
 *  check the rows' shape             fsync the spool once      BEGIN; lock log_sink_progress
 *  append to the spool (no fsync)    ack every batch of the    COPY the synced batches
 *  push to the writer's queue        turn; mark them synced -> written_upto = last seq
 *  kick the job                      release written segments  COMMIT
 *
 * A spool frame is one accepted batch: its payload is the batch's COPY text
 * rows, its sequence is the batch's. Batches are never split across write
 * transactions, so written_upto (a batch sequence) says exactly which rows
 * are in the table. At start-up the spool is replayed after written_upto;
 * at every write the transaction re-reads written_upto under a row lock and
 * drops queued batches it already covers (a commit whose answer was lost),
 * so no batch is written twice and none that was acknowledged is skipped.
 */

/* A batch appended this turn, waiting for the group fsync before its ack. */
struct pend {
    unsigned char env[2][256];
    size_t envlen[2];
    int nenv;
    char seq[40];
    size_t seqlen;
    uint32_t nrows;
    bool dup; /* the same body as a batch spooled this turn: acked with it, not stored */
};

/*
 * A spooled batch with a key starts with the line "\.K <key>\n", then its
 * COPY rows; the writer gets the rows only. No COPY text row begins with
 * "\." (the worker escapes a backslash as "\\"). Batches spooled without a
 * key (JSON spoken directly, older workers, older spools) are rows only.
 */
#define KEY_LINE_PREFIX "\\.K "
#define KEY_LINE_LEN (sizeof(KEY_LINE_PREFIX) - 1 + LOG_DEDUP_KEY_HEX + 1)

/* The loop's own state; the queue and the write counters are the writer's (log_writer.h). */
static struct {
    struct spool *sp;
    struct log_conn conn; /* ctx->log_db, for written_upto before the spool numbers batches */
    bool ready;           /* accepting batches */
    bool progress_known;  /* written_upto was read from the log table since start */
    uint64_t known_upto;  /* the highest written_upto seen */
    uint64_t released_upto;
    uint64_t synced_upto; /* every batch up to this sequence is fsynced */
    bool waiting_logged;  /* "not ready: waiting for the log DB" was logged */

    struct pend *pend;
    size_t npend, pendcap;

    int64_t last_metrics_ms;
    uint64_t received;   /* records in WIRE_LOGS batches that arrived */
    uint64_t accepted;   /* records acknowledged (spooled and fsynced) */
    uint64_t rejected;   /* records refused with a nack (full, not ready, invalid, spool error) */
    uint64_t duplicates; /* records acked as the same body as a batch spooled before */
} S;

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
    S.rejected += p->nrows;
    send_reply(ctx, p, WIRE_NACK, json);
}

/*
 * The group commit: one fsync for every batch appended since the last one,
 * then the acks, and the writer may write them. A failed fsync nacks them
 * all and takes them out of the queue again (the spool cuts them off and
 * refuses further appends).
 */
static void commit_acks(struct bg_ctx *ctx)
{
    if (S.npend == 0)
        return;
    if (spool_sync(S.sp) != EZ_OK) {
        size_t appended = 0;
        for (size_t i = 0; i < S.npend; i++)
            appended += !S.pend[i].dup;
        log_writer_unpush(appended);
        for (size_t i = 0; i < S.npend; i++)
            nack(ctx, &S.pend[i], "spool", "the log spool could not be synced");
        S.ready = false;
        S.npend = 0;
        return;
    }
    log_writer_synced();
    S.synced_upto = spool_next_seq(S.sp) - 1;
    for (size_t i = 0; i < S.npend; i++) {
        if (S.pend[i].dup)
            S.duplicates += S.pend[i].nrows;
        else
            S.accepted += S.pend[i].nrows;
        send_reply(ctx, &S.pend[i], WIRE_ACK, NULL);
    }
    S.npend = 0;
}

/* ---- progress ---- */

/* The log schema is behind this build (logged): the daemon exits like for the main schema. */
static void schema_behind(struct bg_ctx *ctx)
{
    ctx->exit_code = BG_EXIT_SCHEMA;
    ctx->stop = true;
}

/* Learns written_upto: the spool never numbers a new batch at or below it. */
static void note_progress(uint64_t w)
{
    if (!S.progress_known || w > S.known_upto)
        S.known_upto = w;
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
    PGconn *c = log_conn_get(&S.conn);
    if (c == NULL) {
        if (S.conn.schema_bad)
            schema_behind(ctx);
        return EZ_ERR;
    }
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

/* ---- job ---- */

int64_t log_sink_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return LOG_SINK_TICK_MS;
}

/* What replay_one needs: the time to stamp, and what the log table already holds. */
struct replay_arg {
    int64_t now_ms;
    bool skip_known; /* batches up to upto are in the table: remember their keys only */
    uint64_t upto;
};

/*
 * A spooled batch: its key is remembered (a retry of a body spooled before
 * the restart is still recognised, written or not), and unless the table has
 * it already, its rows go back into the writer's queue.
 */
static int replay_one(uint64_t seq, const void *payload, size_t len, void *arg)
{
    const struct replay_arg *ra = arg;
    const char *p = payload;
    if (len >= KEY_LINE_LEN && memcmp(p, KEY_LINE_PREFIX, sizeof(KEY_LINE_PREFIX) - 1) == 0 &&
        p[KEY_LINE_LEN - 1] == '\n') {
        char key[LOG_DEDUP_KEY_HEX + 1];
        memcpy(key, p + sizeof(KEY_LINE_PREFIX) - 1, LOG_DEDUP_KEY_HEX);
        key[LOG_DEDUP_KEY_HEX] = '\0';
        log_dedup_add(key, seq, ra->now_ms);
        p += KEY_LINE_LEN;
        len -= KEY_LINE_LEN;
    }
    if (ra->skip_known && seq <= ra->upto)
        return EZ_OK;
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += p[i] == '\n';
    char *copy = ez_malloc(len ? len : 1);
    memcpy(copy, p, len);
    log_writer_push(seq, n, copy, len, ra->now_ms);
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
            if (!S.waiting_logged && !ctx->stop)
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
             (unsigned long long)spool_next_seq(S.sp), (unsigned long long)S.known_upto,
             (unsigned long long)log_writer_queued_rows());
}

int log_sink_init(struct bg_ctx *ctx)
{
    char err[512];
    uint64_t w = 0;
    memset(&S, 0, sizeof(S));
    S.conn.db = &ctx->log_db;
    if (spool_open(ctx->cfg->log_spool_dir, 0, &S.sp, err, sizeof(err)) != EZ_OK) {
        log_error("event=log_sink_init_failed error=\"%s\"", err);
        return EZ_ERR;
    }
    /* DSNs keep their start-up strings across SIGHUP (bg.h): the writer may borrow this one. */
    log_writer_init(config_log_dsn(ctx->cfg), ctx->cfg->log_spool_dir);
    log_dedup_init(LOG_DEDUP_CAP, LOG_DEDUP_TTL_MS);
    log_writer_settings(ctx->cfg->log_batch_size, ctx->cfg->log_flush_ms);
    /* One attempt now: replaying after written_upto skips what is already in the table. */
    if (read_progress(ctx, &w) == EZ_OK)
        note_progress(w);
    if (ctx->stop)
        return EZ_OK; /* log schema behind: the daemon is stopping */
    /* From the start of the spool: the keys of written batches still in it count too. */
    struct replay_arg ra = {jobs_now_ms(), S.progress_known, S.known_upto};
    if (spool_replay(S.sp, 0, replay_one, &ra) != EZ_OK) {
        log_error("event=log_sink_init_failed error=\"spool replay failed\"");
        return EZ_ERR;
    }
    log_writer_synced(); /* replayed batches are on disk already */
    S.synced_upto = spool_next_seq(S.sp) - 1;
    struct spool_stats st;
    struct log_writer_status ws;
    spool_get_stats(S.sp, &st);
    log_writer_status(&ws);
    log_info("event=log_spool_opened dir=%s segments=%llu bytes=%llu truncated_bytes=%llu "
             "replayed_batches=%llu replayed_records=%llu written_upto=%s%llu",
             ctx->cfg->log_spool_dir, (unsigned long long)st.segments, (unsigned long long)st.bytes,
             (unsigned long long)st.truncated, (unsigned long long)ws.queued_batches,
             (unsigned long long)ws.queued_rows,
             S.progress_known ? "" : "unknown:", (unsigned long long)S.known_upto);
    /* A used spool knows its own sequence; a fresh one must learn it from the log table. */
    if (!spool_was_fresh(S.sp) || S.progress_known) {
        if (spool_begin(S.sp) != EZ_OK)
            return EZ_ERR;
        S.ready = true;
        log_info("event=log_sink_ready next_seq=%llu queued_records=%llu",
                 (unsigned long long)spool_next_seq(S.sp), (unsigned long long)ws.queued_rows);
    } else {
        try_ready(ctx);
    }
    return log_writer_start();
}

static void publish_metrics(struct bg_ctx *ctx);

/* What the writer did since the last run: progress to learn, segments to release, schema. */
static void follow_writer(struct bg_ctx *ctx)
{
    struct log_writer_status ws;
    log_writer_status(&ws);
    if (ws.schema_bad && !ctx->stop)
        schema_behind(ctx);
    if (ws.db_upto > S.known_upto)
        note_progress(ws.db_upto);
    if (ws.written_upto > S.released_upto) {
        if (spool_release(S.sp, ws.written_upto) < 0)
            log_warn("event=spool_release_failed written_upto=%llu",
                     (unsigned long long)ws.written_upto);
        S.released_upto = ws.written_upto;
    }
}

int log_sink_run(struct bg_ctx *ctx)
{
    if (S.sp == NULL)
        return EZ_OK;
    commit_acks(ctx);
    if (!S.ready)
        try_ready(ctx);
    log_writer_settings(ctx->cfg->log_batch_size, ctx->cfg->log_flush_ms);
    int64_t now = jobs_now_ms();
    follow_writer(ctx);
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
    uint64_t queued = log_writer_queued_rows();
    bool drain = queued > 0 && !(ctx->stop && ctx->exit_code == BG_EXIT_SCHEMA);
    if (drain)
        log_info("event=log_sink_draining queued_records=%llu", (unsigned long long)queued);
    uint64_t left = log_writer_stop(drain ? LOG_SINK_DRAIN_MS : 0);
    follow_writer(ctx);
    if (drain && left > 0)
        log_warn("event=log_sink_drain_incomplete queued_records=%llu msg=\"left in the "
                 "spool; written after the next start\"",
                 (unsigned long long)left);
    else if (drain)
        log_info("event=log_sink_drained written_upto=%llu", (unsigned long long)S.released_upto);
    publish_metrics(ctx);
    log_writer_free();
    log_dedup_free();
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

/* A batch as received: its COPY rows, its record count and its key ("" when it has none). */
struct batch {
    buf_t rows;
    uint32_t nrows;
    char key[LOG_DEDUP_KEY_HEX + 1];
};

/*
 * The header line of the worker's format: LOGREC_WIRE_MAGIC (with the batch
 * key) or LOGREC_WIRE_MAGIC_V1 (without). *host points into head. 0 or -1.
 */
static int parse_header(const char *head, long long *received_ms, long long *expires_ms, int *n,
                        char *key, const char **host)
{
    int off = 0;
    key[0] = '\0';
    if (sscanf(head, LOGREC_WIRE_MAGIC_V1 " %lld %lld %d %n", received_ms, expires_ms, n, &off) ==
            3 &&
        off > 0) {
        *host = head + off;
        return EZ_OK;
    }
    if (sscanf(head, LOGREC_WIRE_MAGIC " %lld %lld %d %n", received_ms, expires_ms, n, &off) != 3 ||
        off == 0)
        return EZ_ERR;
    const char *k = head + off;
    for (int i = 0; i < LOG_DEDUP_KEY_HEX; i++)
        if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
            return EZ_ERR;
    if (k[LOG_DEDUP_KEY_HEX] != ' ')
        return EZ_ERR;
    memcpy(key, k, LOG_DEDUP_KEY_HEX);
    key[LOG_DEDUP_KEY_HEX] = '\0';
    *host = k + LOG_DEDUP_KEY_HEX + 1;
    return EZ_OK;
}

/*
 * A batch in the worker's format: the header is parsed and the rows only
 * checked for shape, not validated again (the worker did; doing it twice was
 * the loop's main CPU cost). Same results as batch_rows.
 */
static int wire_rows(const char *hostname, const char *payload, size_t len, struct batch *b,
                     char *msg, size_t msglen)
{
    const char *nl = memchr(payload, '\n', len);
    char head[512];
    size_t hlen = nl ? (size_t)(nl - payload) : 0;
    long long received_ms, expires_ms;
    const char *host;
    int n;
    if (nl == NULL || hlen >= sizeof(head)) {
        snprintf(msg, msglen, "the payload header is malformed");
        return EZ_ERR;
    }
    memcpy(head, payload, hlen);
    head[hlen] = '\0';
    if (parse_header(head, &received_ms, &expires_ms, &n, b->key, &host) != EZ_OK ||
        received_ms < 0 || received_ms > LOGREC_MAX_UNIX * 1000) {
        snprintf(msg, msglen, "the payload header is malformed");
        return EZ_ERR;
    }
    b->nrows = n > 0 ? (uint32_t)n : 0; /* also on failure: the refused records are counted */
    /* Only a batch from this host shares our clock: across hosts, skew must not refuse batches. */
    if (strcmp(host, hostname) == 0 && ez_now_ms() > expires_ms) {
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
    buf_append(&b->rows, body, blen);
    return EZ_OK;
}

/*
 * Validates the worker's batch and renders its COPY rows into b. 0 ok;
 * -1 with msg; 1 when the batch expired (its worker has given up: see
 * LOGS_EXPIRY_MARGIN_MS in fcgi-app/internal_logs.c).
 */
static int batch_rows(const char *hostname, const void *payload, size_t len, struct batch *b,
                      char *msg, size_t msglen)
{
    cJSON *root = NULL;
    char perr[128];
    int rc = EZ_ERR;
    /* Both magics have this length and differ in their last character only. */
    size_t mlen = sizeof(LOGREC_WIRE_MAGIC) - 1;
    if (len > mlen && memcmp(payload, LOGREC_WIRE_MAGIC, mlen - 1) == 0)
        return wire_rows(hostname, payload, len, b, msg, msglen);
    /* JSON: a batch spoken directly (tests, older workers); validated in full, no key. */
    b->key[0] = '\0';
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
    b->nrows = (uint32_t)n; /* also on failure: the refused records are counted */
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
        logrec_copy_row(&rec, received_ms * 1000, &b->rows);
        logrec_free(&rec);
    }
    rc = EZ_OK;
out:
    cJSON_Delete(root);
    return rc;
}

static void pend_add(const struct pend *p)
{
    if (S.npend == S.pendcap) {
        S.pendcap = S.pendcap ? S.pendcap * 2 : 64;
        S.pend = ez_realloc(S.pend, S.pendcap * sizeof(*S.pend));
    }
    S.pend[S.npend++] = *p;
    jobs_kick("log_sink");
}

/*
 * A batch whose key the sink spooled recently: the same body again. It is
 * acknowledged without being stored twice: at once when the first copy is
 * fsynced already, else with the first copy's group commit (and refused with
 * it if that fsync fails). Returns false when the batch is new.
 */
static bool accept_duplicate(struct bg_ctx *ctx, const struct pend *p, const char *key)
{
    uint64_t first;
    if (key[0] == '\0' || !log_dedup_find(key, jobs_now_ms(), &first))
        return false;
    log_info("event=log_batch_duplicate records=%u first_seq=%llu msg=\"the same body was "
             "spooled before; acknowledged, not stored again\"",
             p->nrows, (unsigned long long)first);
    struct pend d = *p;
    d.dup = true;
    if (first <= S.synced_upto) {
        S.duplicates += d.nrows;
        send_reply(ctx, &d, WIRE_ACK, NULL);
    } else {
        pend_add(&d);
    }
    return true;
}

/* Appends a new batch to the spool (its key line first), queues its rows for the writer. */
static void spool_batch(struct bg_ctx *ctx, const struct pend *p, struct batch *b)
{
    /* A batch larger than the whole queue still goes into an empty pipeline. */
    uint64_t queued = log_writer_queued_rows();
    if (queued > 0 && queued + b->nrows > (uint64_t)ctx->cfg->log_queue) {
        nack(ctx, p, "full", "the log pipeline is full");
        return;
    }
    buf_t frame;
    buf_init(&frame);
    if (b->key[0])
        buf_printf(&frame, KEY_LINE_PREFIX "%s\n", b->key);
    buf_append(&frame, b->rows.data, b->rows.len);
    uint64_t s;
    int rc = spool_append(S.sp, frame.data, frame.len, &s);
    buf_free(&frame);
    if (rc != EZ_OK) {
        nack(ctx, p, "spool", "the log spool could not be written");
        return;
    }
    size_t rlen = b->rows.len;
    log_writer_push(s, b->nrows, buf_steal(&b->rows), rlen, jobs_now_ms());
    if (b->key[0])
        log_dedup_add(b->key, s, jobs_now_ms());
    pend_add(p);
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

    struct batch b;
    memset(&b, 0, sizeof(b));
    buf_init(&b.rows);
    char msg[384];
    int br = batch_rows(ctx->hostname, payload, len, &b, msg, sizeof(msg));
    p.nrows = b.nrows;
    S.received += b.nrows;
    if (br == 1) {
        log_warn("event=log_batch_expired detail=\"%s\" msg=\"its worker has answered 503; not "
                 "spooled\"",
                 msg);
        nack(ctx, &p, "expired", "the batch arrived too late");
    } else if (br != EZ_OK) {
        log_warn("event=log_batch_invalid error=\"%s\"", msg);
        nack(ctx, &p, "invalid", "the batch is invalid");
    } else if (S.sp == NULL || !S.ready || spool_is_broken(S.sp)) {
        nack(ctx, &p, "not_ready", "the log pipeline is not ready");
    } else if (!accept_duplicate(ctx, &p, b.key)) {
        spool_batch(ctx, &p, &b);
    }
    buf_free(&b.rows);
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
    struct log_writer_status ws;
    spool_get_stats(S.sp, &st);
    log_writer_status(&ws);

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
    FIELD_U("records_received_total", S.received);
    FIELD_U("records_accepted_total", S.accepted);
    FIELD_U("records_rejected_total", S.rejected);
    FIELD_U("records_duplicate_total", S.duplicates);
    FIELD_U("batch_keys", log_dedup_count());
    FIELD_U("records_written_total", ws.written);
    FIELD_U("records_quarantined_total", ws.quarantined);
    FIELD_U("records_queued", ws.queued_rows);
    FIELD_U("batches_queued", ws.queued_batches);
    FIELD_U("spool_bytes", st.bytes);
    FIELD_U("spool_segments", st.segments);
    FIELD_U("spool_fsyncs_total", st.fsyncs);
    FIELD_U("spool_truncated_bytes_total", st.truncated);
    FIELD_U("batch_writes_total", ws.writes);
    FIELD_U("batch_write_failures_total", ws.write_failures);
    FIELD_U("batch_write_us_sum", ws.write_us_sum);
    uint64_t cum = 0;
    static const char *const bucket_names[LOG_WRITER_NBUCKETS] = {
        "batch_write_le_0.005", "batch_write_le_0.01", "batch_write_le_0.025",
        "batch_write_le_0.05",  "batch_write_le_0.1",  "batch_write_le_0.25",
        "batch_write_le_0.5",   "batch_write_le_1",    "batch_write_le_2.5",
        "batch_write_le_5",     "batch_write_le_10"};
    for (size_t i = 0; i < LOG_WRITER_NBUCKETS; i++) {
        cum += ws.bucket[i];
        FIELD_U(bucket_names[i], cum);
    }
    FIELD_U("written_upto", S.known_upto);
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
