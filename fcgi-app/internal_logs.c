/* POST /internal/logs: validate a batch of request logs and hand it to the background's spool. */
#include "handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zmq.h>
#include "crypto.h"
#include "json.h"
#include "log.h"
#include "logrec.h"
#include "wctx.h"
#include "wire.h"

/*
 * How long a request waits for the background: to get its batch onto the
 * socket (a thread's DEALER connects lazily, and reconnects within ~100 ms
 * after a background restart), and then for the ack that follows the
 * background's group fsync. Past either: 503, Retry-After: 1.
 */
#define LOGS_CONNECT_WAIT_MS 250
#define LOGS_ACK_TIMEOUT_MS 3000
/*
 * The batch carries "expires_at" = send time + LOGS_ACK_TIMEOUT_MS -
 * LOGS_EXPIRY_MARGIN_MS (wall clock): a background that only gets to it
 * later refuses it without spooling, so that a batch this worker answered
 * 503 for is not written anyway. The margin leaves the background time for
 * its fsync and the ack. The batch also names this host: the background
 * applies expires_at only to batches from its own host (one clock); across
 * hosts a clock skew must not refuse batches.
 */
#define LOGS_EXPIRY_MARGIN_MS 1000

/* This host's name, for the batch's "host" (the background compares it with its own). */
static const char *host_name(void)
{
    static _Thread_local char name[256];
    if (name[0] == '\0' && gethostname(name, sizeof(name) - 1) != 0)
        snprintf(name, sizeof(name), "unknown");
    return name;
}

/*
 * Sequence of this thread's WIRE_LOGS messages. The DEALER socket is the
 * thread's own, so a reply carrying another seq belongs to an earlier
 * request that timed out: it is read and dropped.
 */
static _Thread_local uint64_t wire_seq;

enum fwd_result { FWD_ACK, FWD_NACK, FWD_NO_PEER, FWD_TIMEOUT };

static int64_t mono_ms(void)
{
    return ez_mono_us() / 1000;
}

/* Reads one whole message; keeps its first two frames (type, seq). 0 ok, -1 none/error. */
static int recv_reply(void *s, char *type, size_t typelen, char *seq, size_t seqlen, char *extra,
                      size_t extralen)
{
    int idx = 0;
    bool more = true;
    type[0] = seq[0] = extra[0] = '\0';
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, idx == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            return EZ_ERR;
        }
        size_t n = zmq_msg_size(&m);
        char *dst = idx == 0 ? type : idx == 1 ? seq : idx == 2 ? extra : NULL;
        size_t cap = idx == 0 ? typelen : idx == 1 ? seqlen : extralen;
        if (dst) {
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(dst, zmq_msg_data(&m), k);
            dst[k] = '\0';
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        idx++;
    }
    return EZ_OK;
}

/*
 * Sends [logs][seq][payload] on the thread's DEALER and waits for the
 * matching [ack|nack][seq]. why gets the nack's JSON (or a reason).
 */
static enum fwd_result forward(struct wctx *w, const char *payload, size_t len, char *why,
                               size_t whylen)
{
    void *s = wctx_zmq(w);
    why[0] = '\0';
    if (s == NULL) {
        snprintf(why, whylen, "no ZeroMQ socket");
        return FWD_NO_PEER;
    }
    char seq[24];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)++wire_seq);

    /* ZMQ_IMMEDIATE: with no background connected the first frame is refused (EAGAIN). */
    int64_t send_deadline = mono_ms() + LOGS_CONNECT_WAIT_MS;
    for (;;) {
        if (zmq_send(s, WIRE_LOGS, strlen(WIRE_LOGS), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
            break;
        int err = zmq_errno();
        int64_t left = send_deadline - mono_ms();
        if ((err != EAGAIN && err != EINTR) || left <= 0) {
            snprintf(why, whylen, "background not connected (%s)", zmq_strerror(err));
            return FWD_NO_PEER;
        }
        zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLOUT};
        (void)zmq_poll(&pi, 1, (long)left);
    }
    /* The other parts of a message whose first part was queued are always queued too. */
    if (zmq_send(s, seq, strlen(seq), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s, payload, len, ZMQ_DONTWAIT) < 0) {
        snprintf(why, whylen, "send failed (%s)", zmq_strerror(zmq_errno()));
        return FWD_NO_PEER;
    }

    int64_t deadline = mono_ms() + LOGS_ACK_TIMEOUT_MS;
    for (;;) {
        char type[16], rseq[32], extra[256];
        while (recv_reply(s, type, sizeof(type), rseq, sizeof(rseq), extra, sizeof(extra)) ==
               EZ_OK) {
            bool is_ack = strcmp(type, WIRE_ACK) == 0, is_nack = strcmp(type, WIRE_NACK) == 0;
            if ((is_ack || is_nack) && strcmp(rseq, seq) == 0) {
                if (is_nack)
                    snprintf(why, whylen, "%s", extra);
                return is_ack ? FWD_ACK : FWD_NACK;
            }
            log_debug("event=log_stale_reply type=%s seq=%s want=%s", type, rseq, seq);
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, (long)left) < 0 && zmq_errno() != EINTR)
            break;
    }
    snprintf(why, whylen, "no answer within %d ms", LOGS_ACK_TIMEOUT_MS);
    return FWD_TIMEOUT;
}

/* ---- body parsing ---- */

static bool content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/*
 * The batch as the worker sends it: the COPY rows of the validated records
 * (docs/log-pipeline.md, "Wire protocol"), so that the single-threaded
 * background only checks their shape instead of parsing and validating again.
 */
struct rows_out {
    buf_t rows;
    int n;
};

/* Validates record k; appends its COPY row to out. Answers 400 itself. */
static int take_record(struct req *r, const cJSON *item, int k, int64_t now_us,
                       struct rows_out *out)
{
    struct logrec rec;
    char field[64], msg[256], full[96];
    if (!cJSON_IsObject(item)) {
        snprintf(full, sizeof(full), "logs[%d]", k);
        return reply_error(r, 400, "invalid_argument", full, "%s must be a JSON object", full);
    }
    if (logrec_from_json(item, now_us, &rec, field, sizeof(field), msg, sizeof(msg)) != EZ_OK) {
        logrec_free(&rec);
        snprintf(full, sizeof(full), "logs[%d]%s%s", k, field[0] ? "." : "", field);
        return reply_error(r, 400, "invalid_argument", full, "logs[%d].%s", k, msg);
    }
    /* now_us is also the receipt time (received_at) of every record of the batch. */
    logrec_copy_row(&rec, now_us, &out->rows);
    out->n++;
    logrec_free(&rec);
    return EZ_OK;
}

static int too_many(struct req *r)
{
    return reply_error(r, 400, "invalid_argument", "logs", "at most %d records per request",
                       LOGREC_MAX_BATCH);
}

/* {"logs": [record, ...]} */
static int parse_json_body(struct req *r, int64_t now_us, struct rows_out *out)
{
    cJSON *root = NULL;
    char err[128];
    int rc = EZ_ERR;
    if (r->body_len == 0)
        return reply_error(r, 400, "invalid_json", NULL, "a JSON object body is required");
    if (json_parse_strict(r->body, r->body_len, &root, err, sizeof(err)) != EZ_OK)
        return reply_error(r, 400, "invalid_json", NULL, "%s", err);
    if (!cJSON_IsObject(root)) {
        reply_error(r, 400, "invalid_json", NULL, "the body must be a JSON object");
        goto out;
    }
    const cJSON *logs = cJSON_GetObjectItemCaseSensitive(root, "logs");
    if (logs == NULL || cJSON_IsNull(logs)) {
        reply_error(r, 400, "invalid_argument", "logs", "logs is required");
        goto out;
    }
    if (!cJSON_IsArray(logs)) {
        reply_error(r, 400, "invalid_argument", "logs", "logs must be an array of records");
        goto out;
    }
    int n = cJSON_GetArraySize(logs);
    if (n == 0) {
        reply_error(r, 400, "invalid_argument", "logs", "logs must hold at least one record");
        goto out;
    }
    if (n > LOGREC_MAX_BATCH) {
        too_many(r);
        goto out;
    }
    int k = 0;
    for (const cJSON *it = logs->child; it; it = it->next, k++)
        if (take_record(r, it, k, now_us, out) != EZ_OK)
            goto out;
    rc = EZ_OK;
out:
    cJSON_Delete(root);
    return rc;
}

/* NDJSON: one record per line; blank lines (and a final newline) are skipped. */
static int parse_ndjson_body(struct req *r, int64_t now_us, struct rows_out *out)
{
    const char *p = r->body, *end = r->body + r->body_len;
    int k = 0, line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        const char *a = p, *b = le;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\r'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        p = nl ? nl + 1 : end;
        if (a == b)
            continue;
        if (k >= LOGREC_MAX_BATCH)
            return too_many(r);
        cJSON *item = NULL;
        char err[128], field[32];
        snprintf(field, sizeof(field), "logs[%d]", k);
        if (json_parse_strict(a, (size_t)(b - a), &item, err, sizeof(err)) != EZ_OK)
            return reply_error(r, 400, "invalid_json", field, "%s (line %d): %s", field, line, err);
        int rc = take_record(r, item, k, now_us, out);
        cJSON_Delete(item);
        if (rc != EZ_OK)
            return EZ_ERR;
        k++;
    }
    if (k == 0)
        return reply_error(r, 400, "invalid_argument", "logs", "no records in the body");
    return EZ_OK;
}

int internal_logs_post(struct req *r)
{
    struct rows_out out;
    buf_t wire;
    int rc = EZ_ERR;
    buf_init(&out.rows);
    out.n = 0;
    buf_init(&wire);

    /* 8 x EZ_MAX_BODY_BYTES (API.md); the route table's body_limit says the same for the default.
     */
    if (req_read_body(r, 8 * r->w->cfg->max_body_bytes) != EZ_OK)
        goto out;
    const char *ct = req_env(r, "CONTENT_TYPE");
    bool ndjson =
        content_type_is(ct, "application/x-ndjson") || content_type_is(ct, "application/ndjson");
    if (!ndjson && !content_type_is(ct, "application/json")) {
        reply_error(r, 415, "unsupported_media_type", NULL,
                    "Content-Type must be application/json or application/x-ndjson");
        goto out;
    }
    if (!ez_utf8_valid(r->body, r->body_len)) {
        reply_error(r, 400, "invalid_json", NULL, "the body is not valid UTF-8");
        goto out;
    }

    int64_t now_ms = ez_now_ms();
    if ((ndjson ? parse_ndjson_body(r, now_ms * 1000, &out)
                : parse_json_body(r, now_ms * 1000, &out)) != EZ_OK)
        goto out;
    int n = out.n;

    /* Stamped after parsing: the budget starts when the batch leaves for the background. */
    /* The same body posted again (a retry) has the same key: see LOGREC_WIRE_MAGIC. */
    char key[65];
    ez_sha256_hex(r->body, r->body_len, key);
    key[LOGREC_BATCH_KEY_HEX] = '\0';
    buf_printf(&wire, LOGREC_WIRE_MAGIC " %lld %lld %d %s %s\n", (long long)now_ms,
               (long long)(ez_now_ms() + LOGS_ACK_TIMEOUT_MS - LOGS_EXPIRY_MARGIN_MS), n, key,
               host_name());
    buf_append(&wire, out.rows.data, out.rows.len);
    char why[256];
    enum fwd_result fr = forward(r->w, wire.data, wire.len, why, sizeof(why));
    if (fr == FWD_ACK) {
        cJSON *resp = cJSON_CreateObject();
        cJSON_AddNumberToObject(resp, "accepted", n);
        reply_json(r, 202, resp);
        cJSON_Delete(resp);
        rc = EZ_OK;
        goto out;
    }
    /* Nothing was accepted: the data plane keeps the batch and retries. */
    reply_header(r, "Retry-After", "1");
    if (fr == FWD_NACK) {
        log_warn("event=log_batch_refused records=%d reply=%s", n, why);
        bool full = strstr(why, "\"full\"") != NULL;
        reply_error(r, 503, "unavailable", NULL, "%s",
                    full ? "the log pipeline is full; retry later"
                         : "the log pipeline refused the batch; retry later");
    } else {
        log_warn("event=log_batch_not_forwarded records=%d error=\"%s\"", n, why);
        reply_error(r, 503, "unavailable", NULL,
                    fr == FWD_NO_PEER ? "the log pipeline is unavailable; retry later"
                                      : "the log pipeline did not confirm in time; retry later");
    }
out:
    buf_free(&out.rows);
    buf_free(&wire);
    return rc;
}

/* ---- background metrics for /internal/metrics ---- */

struct bg_metric {
    const char *field; /* in the Redis hash */
    const char *name;  /* Prometheus name */
    const char *type;
    const char *help;
};

static const struct bg_metric bg_metrics[] = {
    {"records_received_total", "ezapi_log_records_received_total", "counter",
     "Log records the background received from the workers."},
    {"records_accepted_total", "ezapi_log_records_accepted_total", "counter",
     "Log records acknowledged (spooled and fsynced)."},
    {"records_rejected_total", "ezapi_log_records_rejected_total", "counter",
     "Log records the background refused (pipeline full, not ready, invalid, spool error)."},
    {"records_duplicate_total", "ezapi_log_records_duplicate_total", "counter",
     "Log records acknowledged as a body spooled before (a retry), not stored again."},
    {"batch_keys", "ezapi_log_batch_keys", "gauge",
     "Batch keys the background remembers to recognise retried bodies."},
    {"records_written_total", "ezapi_log_records_written_total", "counter",
     "Log records written to the log table."},
    {"records_quarantined_total", "ezapi_log_records_quarantined_total", "counter",
     "Log records the log table refused, set aside in the spool directory."},
    {"records_queued", "ezapi_log_records_queued", "gauge",
     "Accepted log records not yet in the log table."},
    {"batches_queued", "ezapi_log_batches_queued", "gauge",
     "Accepted log batches not yet in the log table."},
    {"spool_bytes", "ezapi_log_spool_bytes", "gauge", "Size of the log spool on disk."},
    {"spool_segments", "ezapi_log_spool_segments", "gauge", "Segment files in the log spool."},
    {"spool_fsyncs_total", "ezapi_log_spool_fsyncs_total", "counter",
     "fsync calls made by the log spool (one per group commit)."},
    {"spool_truncated_bytes_total", "ezapi_log_spool_truncated_bytes_total", "counter",
     "Bytes of torn or corrupt spool tails cut off at start-up."},
    {"batch_write_failures_total", "ezapi_log_batch_write_failures_total", "counter",
     "Failed log write transactions (retried)."},
    {"written_upto", "ezapi_log_sink_written_upto", "gauge",
     "Spool sequence up to which batches are in the log table."},
    {"ready", "ezapi_log_sink_ready", "gauge", "1 when the log sink accepts batches."},
};

static const char *const bucket_les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                         "0.5",   "1",    "2.5",   "5",    "10"};

static const char *hash_get(const redisReply *h, const char *field)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (h->element[i]->str && strcmp(h->element[i]->str, field) == 0)
            return h->element[i + 1]->str;
    return NULL;
}

static double num(const char *s)
{
    return s ? strtod(s, NULL) : 0;
}

void logs_metrics_append(struct req *r, buf_t *prom, cJSON *json)
{
    redisReply *h = NULL;
    /* Twice at most: a connection that died while idle (Redis restarted) fails once. */
    for (int attempt = 0; attempt < 2 && h == NULL; attempt++) {
        redisContext *c = rds_get(&r->w->redis);
        if (c == NULL)
            break;
        h = redisCommand(c, "HGETALL %s", LOGREC_METRICS_KEY);
        if (h == NULL)
            rds_check(&r->w->redis);
    }
    bool up = h && h->type == REDIS_REPLY_ARRAY && h->elements >= 2;
    double age = up ? ((double)ez_now_ms() - num(hash_get(h, "updated_at_ms"))) / 1000.0 : -1;

    if (json) {
        cJSON *o = cJSON_AddObjectToObject(json, "log_pipeline");
        cJSON_AddBoolToObject(o, "background_metrics_up", up);
        if (up) {
            cJSON_AddNumberToObject(o, "age_seconds", age);
            for (size_t i = 0; i < EZ_ARRAY_LEN(bg_metrics); i++)
                cJSON_AddNumberToObject(o, bg_metrics[i].field,
                                        num(hash_get(h, bg_metrics[i].field)));
            cJSON_AddNumberToObject(o, "batch_writes_total",
                                    num(hash_get(h, "batch_writes_total")));
            cJSON_AddNumberToObject(o, "batch_write_seconds_sum",
                                    num(hash_get(h, "batch_write_us_sum")) / 1e6);
        }
    }
    if (prom) {
        buf_printf(prom,
                   "# HELP ezapi_log_background_metrics_up 1 when the background's log metrics "
                   "were found in Redis.\n# TYPE ezapi_log_background_metrics_up gauge\n"
                   "ezapi_log_background_metrics_up %d\n",
                   up ? 1 : 0);
        if (up) {
            buf_printf(prom,
                       "# HELP ezapi_log_background_metrics_age_seconds Age of the background's "
                       "log metrics.\n# TYPE ezapi_log_background_metrics_age_seconds gauge\n"
                       "ezapi_log_background_metrics_age_seconds %.3f\n",
                       age);
            for (size_t i = 0; i < EZ_ARRAY_LEN(bg_metrics); i++) {
                const struct bg_metric *m = &bg_metrics[i];
                buf_printf(prom, "# HELP %s %s\n# TYPE %s %s\n%s %.0f\n", m->name, m->help, m->name,
                           m->type, m->name, num(hash_get(h, m->field)));
            }
            const char *hn = "ezapi_log_batch_write_duration_seconds";
            buf_printf(prom,
                       "# HELP %s Duration of log write transactions (COPY + progress + commit).\n"
                       "# TYPE %s histogram\n",
                       hn, hn);
            for (size_t i = 0; i < EZ_ARRAY_LEN(bucket_les); i++) {
                char f[48];
                snprintf(f, sizeof(f), "batch_write_le_%s", bucket_les[i]);
                buf_printf(prom, "%s_bucket{le=\"%s\"} %.0f\n", hn, bucket_les[i],
                           num(hash_get(h, f)));
            }
            double count = num(hash_get(h, "batch_writes_total"));
            buf_printf(prom, "%s_bucket{le=\"+Inf\"} %.0f\n%s_sum %.6f\n%s_count %.0f\n", hn, count,
                       hn, num(hash_get(h, "batch_write_us_sum")) / 1e6, hn, count);
        }
    }
    if (h)
        freeReplyObject(h);
}
