/*
 * The "webhook" job: the error-rate alert configured by /admin/logs/webhook.
 * Counts requests and errors over the window (log DB), decides, and hands the
 * signed POST to a thread so that a slow receiver never holds up the loop.
 * See docs/webhook.md.
 */
#include "webhook.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cJSON.h>
#include <zmq.h>
#include "bg.h"
#include "crypto.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "outbound.h"
#include "wire.h"
#include "zmq_server.h"

/* Session-level advisory lock, held from the decision to the bookkeeping of its delivery. */
#define WEBHOOK_LOCK "8603390863846894431" /* "webhook_" */
#define WEBHOOK_TIMEOUT_MS 10000
#define WEBHOOK_CONNECT_TIMEOUT_MS 5000
#define WEBHOOK_TOP_ERRORS 5
/* After consecutive failed deliveries the next attempt waits 15 s, 30 s, ... up to this. */
#define WEBHOOK_BACKOFF_MAX_MS 300000
/* The log-DB queries run on the loop (log acks wait behind them): bounded. */
#define WEBHOOK_QUERY_TIMEOUT "2000"
/* Records dated up to this far in the future (data-plane clock skew) still count. */
#define WEBHOOK_SKEW "60"

/* The window: (now - window_seconds, now + skew], on the log DB's clock. */
#define WINDOW_SQL                                                                                 \
    "created_at > now() - make_interval(secs => $1::int) "                                         \
    "AND created_at <= now() + make_interval(secs => " WEBHOOK_SKEW ")"
#define IS_ERROR_SQL "(coalesce(status_code, 0) >= 400 OR coalesce(error, '') <> '')"

static const char count_sql[] = "SELECT count(*), count(*) FILTER (WHERE " IS_ERROR_SQL ") "
                                "FROM request_logs WHERE " WINDOW_SQL;

/* An error is filed under its status code when it has one >= 400, else under its text. */
static const char top_sql[] =
    "SELECT CASE WHEN status_code >= 400 THEN status_code END, "
    "  CASE WHEN coalesce(status_code, 0) >= 400 THEN NULL ELSE left(error, 256) END, count(*) "
    "FROM request_logs WHERE " WINDOW_SQL " AND " IS_ERROR_SQL " "
    "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 5";

#define UTC_TEXT(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static const char settings_sql[] =
    "SELECT enabled, url, secret, error_rate_threshold, min_requests, window_seconds, "
    "  cooldown_seconds, "
    "  last_sent_at IS NULL OR last_sent_at <= now() - make_interval(secs => cooldown_seconds), "
    "  " UTC_TEXT("now()") ", " UTC_TEXT("last_sent_at") ", " UTC_TEXT(
        "updated_at") " "
                      "FROM webhook_settings WHERE id = 1";

struct settings {
    bool enabled;
    char *url, *secret; /* owned */
    double threshold;
    long long min_requests, window_s, cooldown_s;
    bool cooldown_over;
    char *now;          /* main DB time of this evaluation, owned */
    char *last_sent_at; /* owned, NULL when never sent */
    char *updated_at;   /* owned: tells a settings change since the last attempt */
};

struct window {
    long long requests, errors;
    double rate;
};

enum decision { BELOW_MIN_REQUESTS, BELOW_THRESHOLD, IN_COOLDOWN, BACKING_OFF, SEND };

enum { D_IDLE, D_RUNNING, D_DONE };

/*
 * The one delivery in flight. The thread reads url/body/sig_header/
 * allow_private, writes rc/resp, then sets state to D_DONE; it never touches
 * ctx, the connections or the log (the loop flips the log level).
 */
static struct {
    atomic_int state;
    pthread_t thread;
    char *url, *body, *sig_header;
    bool allow_private;
    /*
     * DEALER to the ROUTER's in-process endpoint for the kick when done
     * (NULL: the interval collects). Created and connected by the loop,
     * used by the thread, closed after the join (the join is the memory
     * barrier ZeroMQ asks for when a socket changes threads). A socket
     * opened, used and closed at once inside the thread was seen to lose the
     * kick in a full test run (the outcome came one interval late).
     */
    void *kick_sock;
    int rc;
    struct outbound_resp resp;
    /* main thread only */
    bool pending; /* joined, outcome not yet recorded */
    char *sent_at;
    char origin[300];
    struct window w;
    int lock_pid; /* backend holding the advisory lock, 0 = none */
} D;

/*
 * Pacing of attempts, whatever the cooldown says: the delivery thread kicks
 * the job when done, so without this a failing receiver (or cooldown 0)
 * would be hit in a tight loop. The next attempt waits backoff_ms after the
 * previous one (one interval after a success, doubling after failures),
 * unless the settings changed since (the admin fixed something: retry now).
 */
static struct {
    int64_t last_attempt_ms; /* jobs_now_ms() at the last start; 0 = none */
    int64_t backoff_ms;
    unsigned failures;
    char settings_stamp[64]; /* updated_at at the last attempt */
} P;

/* last_sent_at for which the "suppressed by cooldown" line was written (once per alert). */
static char cooldown_logged_for[64];
static bool log_db_failing;

int64_t webhook_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return WEBHOOK_INTERVAL_MS;
}

/* ---- small helpers ---- */

/* Keeps a message on one log line inside its quotes. */
static void clean_for_log(char *s)
{
    for (; *s; s++)
        if (*s == '"')
            *s = '\'';
        else if ((unsigned char)*s < 0x20)
            *s = ' ';
}

static void settings_free(struct settings *s)
{
    free(s->url);
    free(s->secret);
    free(s->now);
    free(s->last_sent_at);
    free(s->updated_at);
    memset(s, 0, sizeof(*s));
}

static void delivery_free(void)
{
    free(D.url);
    free(D.body);
    free(D.sig_header);
    free(D.sent_at);
    outbound_resp_free(&D.resp);
    D.url = D.body = D.sig_header = D.sent_at = NULL;
    D.pending = false;
}

/* Runs one statement expecting tuples or a command; NULL with job_fail set on error. */
static PGresult *exec(struct bg_ctx *ctx, PGconn *c, const char *what, const char *sql, int n,
                      const char *const *params)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    job_fail(ctx, "webhook: %s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    return NULL;
}

/* ---- the advisory lock ---- */

/* 1 acquired, 0 another daemon holds it, -1 error (job_fail set). */
static int lock_try(struct bg_ctx *ctx, PGconn *c)
{
    const char *p[1] = {WEBHOOK_LOCK};
    PGresult *res = exec(ctx, c, "lock", "SELECT pg_try_advisory_lock($1::bigint)", 1, p);
    if (res == NULL) {
        db_check(&ctx->main_db);
        return -1;
    }
    bool got = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (got)
        D.lock_pid = PQbackendPID(c);
    return got ? 1 : 0;
}

/* Releases the lock if this session still holds it (a reconnect has dropped it already). */
static void lock_release(struct bg_ctx *ctx)
{
    PGconn *c = ctx->main_db.conn;
    if (D.lock_pid == 0 || c == NULL || PQstatus(c) != CONNECTION_OK ||
        PQbackendPID(c) != D.lock_pid) {
        D.lock_pid = 0;
        return;
    }
    D.lock_pid = 0;
    const char *p[1] = {WEBHOOK_LOCK};
    PGresult *res =
        PQexecParams(c, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("event=webhook_unlock_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&ctx->main_db);
    }
    PQclear(res);
}

/* ---- settings and the window ---- */

static char *dup_or_null(PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : ez_strdup(PQgetvalue(res, 0, col));
}

/* Reads row 1 (a missing row counts as disabled). 0 ok, -1 job_fail set. */
static int settings_read(struct bg_ctx *ctx, PGconn *c, struct settings *s)
{
    memset(s, 0, sizeof(*s));
    PGresult *res = exec(ctx, c, "read settings", settings_sql, 0, NULL);
    if (res == NULL) {
        db_check(&ctx->main_db);
        return EZ_ERR;
    }
    if (PQntuples(res) == 1) {
        s->enabled = PQgetvalue(res, 0, 0)[0] == 't';
        s->url = ez_strdup(PQgetvalue(res, 0, 1));
        s->secret = ez_strdup(PQgetvalue(res, 0, 2));
        s->threshold = strtod(PQgetvalue(res, 0, 3), NULL);
        s->min_requests = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
        s->window_s = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
        s->cooldown_s = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
        s->cooldown_over = PQgetvalue(res, 0, 7)[0] == 't';
        s->now = dup_or_null(res, 8);
        s->last_sent_at = dup_or_null(res, 9);
        s->updated_at = dup_or_null(res, 10);
    }
    PQclear(res);
    return EZ_OK;
}

static enum decision decide(const struct settings *s, const struct window *w)
{
    if (w->requests < s->min_requests || w->requests == 0)
        return BELOW_MIN_REQUESTS;
    if (w->rate < s->threshold)
        return BELOW_THRESHOLD;
    if (!s->cooldown_over)
        return IN_COOLDOWN;
    bool changed = strcmp(P.settings_stamp, s->updated_at ? s->updated_at : "") != 0;
    if (P.last_attempt_ms != 0 && !changed && jobs_now_ms() - P.last_attempt_ms < P.backoff_ms)
        return BACKING_OFF;
    return SEND;
}

/* [{"status_code": 500, "count": 3} | {"error": "...", "count": 2}, ...] from top_sql. */
static cJSON *render_top(PGresult *res)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *o = cJSON_CreateObject();
        if (!PQgetisnull(res, i, 0))
            cJSON_AddNumberToObject(o, "status_code", strtod(PQgetvalue(res, i, 0), NULL));
        else
            cJSON_AddStringToObject(o, "error", PQgetvalue(res, i, 1));
        cJSON_AddNumberToObject(o, "count", strtod(PQgetvalue(res, i, 2), NULL));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/* The log DB connection, its per-attempt warnings silenced while it keeps failing. */
static PGconn *log_conn(struct bg_ctx *ctx)
{
    ctx->log_db.quiet = log_db_failing;
    PGconn *c = db_get(&ctx->log_db);
    log_db_failing = c == NULL;
    return c;
}

/*
 * Counts the window into w and decides; when the decision is SEND, also
 * renders the top errors into *top. One read-only snapshot, so the counts
 * and the top errors agree. 0 ok, -1 job_fail set.
 */
static int window_eval(struct bg_ctx *ctx, const struct settings *s, struct window *w,
                       enum decision *d, cJSON **top)
{
    PGresult *res = NULL;
    char win[24];
    int rc = EZ_ERR;
    PGconn *c = log_conn(ctx);
    if (c == NULL)
        return job_fail(ctx, "webhook: the log database is unavailable");
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return job_fail(ctx, "webhook: the log database connection is busy");
    res = PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                    "SET LOCAL statement_timeout = " WEBHOOK_QUERY_TIMEOUT);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        job_fail(ctx, "webhook: BEGIN on the log database: %s", PQresultErrorMessage(res));
        goto out;
    }
    PQclear(res);
    snprintf(win, sizeof(win), "%lld", s->window_s);
    const char *p[1] = {win};
    if ((res = exec(ctx, c, "count the window", count_sql, 1, p)) == NULL)
        goto out;
    w->requests = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    w->errors = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    w->rate = w->requests > 0 ? (double)w->errors / (double)w->requests : 0.0;
    PQclear(res);
    res = NULL;
    *d = decide(s, w);
    if (*d == SEND) {
        if ((res = exec(ctx, c, "top errors", top_sql, 1, p)) == NULL)
            goto out;
        *top = render_top(res);
    }
    rc = EZ_OK;
out:
    PQclear(res);
    res = PQexec(c, rc == EZ_OK ? "COMMIT" : "ROLLBACK");
    PQclear(res);
    if (rc != EZ_OK)
        db_check(&ctx->log_db);
    return rc;
}

/* ---- the alert ---- */

/* The error_rate event (API.md). Caller frees. top is consumed. */
static char *alert_body(const struct settings *s, const struct window *w, cJSON *top)
{
    char when[40];
    ez_format_time(ez_now_unix(), when, sizeof(when));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "error_rate");
    cJSON_AddNumberToObject(o, "window_seconds", (double)s->window_s);
    cJSON_AddNumberToObject(o, "requests", (double)w->requests);
    cJSON_AddNumberToObject(o, "errors", (double)w->errors);
    cJSON_AddNumberToObject(o, "error_rate", round(w->rate * 10000.0) / 10000.0);
    cJSON_AddItemToObject(o, "top_errors", top ? top : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "time", when);
    char *body = json_render(o);
    cJSON_Delete(o);
    return body;
}

/* A DEALER connected to the ROUTER's in-process endpoint, or NULL. */
static void *kick_socket(void *zmq_ctx)
{
    void *k = zmq_ctx ? zmq_socket(zmq_ctx, ZMQ_DEALER) : NULL;
    if (k == NULL)
        return NULL;
    int linger = 0;
    zmq_setsockopt(k, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(k, ZS_SELF_ENDPOINT) != 0) {
        log_warn("event=webhook_kick_socket_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        zmq_close(k);
        return NULL;
    }
    return k;
}

/*
 * [kick][webhook], so that the outcome is recorded now rather than one
 * interval later. Silent on failure: the thread may not log (the loop flips
 * the log level), and the next interval collects anyway.
 */
static void kick_self(void *k)
{
    if (k != NULL && zmq_send(k, WIRE_KICK, strlen(WIRE_KICK), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        (void)zmq_send(k, "webhook", 7, ZMQ_DONTWAIT);
}

static void *deliver(void *arg)
{
    (void)arg;
    const char *headers[4];
    int n = 0;
    headers[n++] = "Content-Type: application/json";
    headers[n++] = "X-EZ-Event: error_rate";
    if (D.sig_header)
        headers[n++] = D.sig_header;
    headers[n] = NULL;
    struct outbound_req req = {.method = "POST",
                               .url = D.url,
                               .headers = headers,
                               .body = D.body,
                               .body_len = strlen(D.body),
                               .timeout_ms = WEBHOOK_TIMEOUT_MS,
                               .connect_timeout_ms = WEBHOOK_CONNECT_TIMEOUT_MS,
                               .allow_private = D.allow_private};
    D.rc = outbound_request(&req, &D.resp);
    atomic_store(&D.state, D_DONE);
    kick_self(D.kick_sock);
    return NULL;
}

/* Hands the signed body to the delivery thread. body is consumed. 0 ok, -1 job_fail set. */
static int delivery_start(struct bg_ctx *ctx, const struct settings *s, const struct window *w,
                          char *body)
{
    D.url = ez_strdup(s->url);
    D.body = body;
    if (s->secret[0] != '\0') {
        char hex[65];
        ez_hmac_sha256_hex(s->secret, strlen(s->secret), body, strlen(body), hex);
        buf_t h;
        buf_init(&h);
        buf_printf(&h, "X-EZ-Signature: sha256=%s", hex);
        D.sig_header = buf_steal(&h);
    }
    D.allow_private = ctx->cfg->outbound_allow_private;
    D.kick_sock = kick_socket(ctx->zmq_ctx);
    D.sent_at = ez_strdup(s->now ? s->now : "now");
    D.w = *w;
    outbound_url_origin(s->url, D.origin, sizeof(D.origin));
    memset(&D.resp, 0, sizeof(D.resp));
    atomic_store(&D.state, D_RUNNING);
    int err = pthread_create(&D.thread, NULL, deliver, NULL);
    if (err != 0) {
        atomic_store(&D.state, D_IDLE);
        if (D.kick_sock)
            zmq_close(D.kick_sock);
        D.kick_sock = NULL;
        delivery_free();
        return job_fail(ctx, "webhook: cannot start the delivery thread: %s", strerror(err));
    }
    P.last_attempt_ms = jobs_now_ms();
    snprintf(P.settings_stamp, sizeof(P.settings_stamp), "%s", s->updated_at ? s->updated_at : "");
    log_info("event=webhook_alert_sending origin=%s requests=%lld errors=%lld error_rate=%.4f "
             "threshold=%.4f window_seconds=%lld",
             D.origin, w->requests, w->errors, w->rate, s->threshold, s->window_s);
    return EZ_OK;
}

/* Joins a finished delivery thread; its outcome becomes pending. */
static void delivery_join(void)
{
    pthread_join(D.thread, NULL);
    atomic_store(&D.state, D_IDLE);
    if (D.kick_sock)
        zmq_close(D.kick_sock);
    D.kick_sock = NULL;
    D.pending = true;
}

/*
 * Records a joined delivery: last_sent_at on a 2xx only, one log line
 * either way (origin only: a URL's path may be a token), then releases the
 * lock. 0 ok; -1 (job_fail set) leaves it pending for the next run.
 */
static int delivery_record(struct bg_ctx *ctx, PGconn *c)
{
    bool ok = D.rc == EZ_OK && D.resp.status >= 200 && D.resp.status < 300;
    P.failures = ok ? 0 : P.failures + 1;
    P.backoff_ms = WEBHOOK_INTERVAL_MS;
    for (unsigned i = 1; i < P.failures && P.backoff_ms < WEBHOOK_BACKOFF_MAX_MS; i++)
        P.backoff_ms *= 2;
    if (P.backoff_ms > WEBHOOK_BACKOFF_MAX_MS)
        P.backoff_ms = WEBHOOK_BACKOFF_MAX_MS;
    if (ok) {
        const char *p[1] = {D.sent_at};
        PGresult *res = exec(ctx, c, "set last_sent_at",
                             "UPDATE webhook_settings SET last_sent_at = $1::timestamptz "
                             "WHERE id = 1",
                             1, p);
        if (res == NULL) {
            db_check(&ctx->main_db);
            return EZ_ERR;
        }
        PQclear(res);
        log_info("event=webhook_alert_sent origin=%s status=%ld requests=%lld errors=%lld "
                 "error_rate=%.4f last_sent_at=%s",
                 D.origin, D.resp.status, D.w.requests, D.w.errors, D.w.rate, D.sent_at);
    } else {
        char err[256];
        if (D.rc == EZ_OK)
            snprintf(err, sizeof(err), "the receiver answered HTTP %ld", D.resp.status);
        else
            snprintf(err, sizeof(err), "%s", D.resp.error);
        clean_for_log(err);
        log_warn("event=webhook_alert_failed origin=%s status=%ld error=\"%s\" failures=%u "
                 "retry_in_s=%lld",
                 D.origin, D.resp.status, err, P.failures, (long long)(P.backoff_ms / 1000));
    }
    lock_release(ctx);
    delivery_free();
    return EZ_OK;
}

/* Logged once per alert sent: the rate is still over the threshold, but the cooldown runs. */
static void note_cooldown(const struct settings *s, const struct window *w)
{
    const char *last = s->last_sent_at ? s->last_sent_at : "";
    if (strcmp(cooldown_logged_for, last) == 0)
        return;
    snprintf(cooldown_logged_for, sizeof(cooldown_logged_for), "%s", last);
    log_info("event=webhook_alert_suppressed reason=cooldown requests=%lld errors=%lld "
             "error_rate=%.4f last_sent_at=%s cooldown_seconds=%lld",
             w->requests, w->errors, w->rate, last, s->cooldown_s);
}

static const char *decision_name(enum decision d)
{
    static const char *const names[] = {"below_min_requests", "below_threshold", "cooldown",
                                        "backing_off", "send"};
    return names[d];
}

/* Under the lock: reads the settings, evaluates, and starts a delivery when due. */
static int evaluate(struct bg_ctx *ctx, PGconn *c)
{
    struct settings s;
    struct window w = {0, 0, 0.0};
    enum decision d = BELOW_MIN_REQUESTS;
    cJSON *top = NULL;
    bool keep_lock = false;
    int rc = EZ_ERR;

    if (settings_read(ctx, c, &s) != EZ_OK)
        goto out;
    if (!s.enabled || s.url == NULL || s.url[0] == '\0') {
        log_debug("event=webhook_evaluated enabled=false");
        rc = EZ_OK;
        goto out;
    }
    if (window_eval(ctx, &s, &w, &d, &top) != EZ_OK)
        goto out;
    log_debug("event=webhook_evaluated requests=%lld errors=%lld error_rate=%.4f decision=%s",
              w.requests, w.errors, w.rate, decision_name(d));
    if (d == IN_COOLDOWN)
        note_cooldown(&s, &w);
    if (d != SEND) {
        rc = EZ_OK;
        goto out;
    }
    char *body = alert_body(&s, &w, top);
    top = NULL; /* consumed */
    rc = delivery_start(ctx, &s, &w, body);
    keep_lock = rc == EZ_OK; /* until the outcome is recorded */
out:
    cJSON_Delete(top);
    settings_free(&s);
    if (!keep_lock)
        lock_release(ctx);
    return rc;
}

int webhook_run(struct bg_ctx *ctx)
{
    if (atomic_load(&D.state) == D_RUNNING)
        return EZ_OK; /* one delivery at a time; collected when it ends */
    if (atomic_load(&D.state) == D_DONE)
        delivery_join();
    PGconn *c = bg_main_conn(ctx);
    if (c == NULL)
        return EZ_ERR; /* outage logged by bg_main_conn; a pending outcome waits */
    if (D.pending && delivery_record(ctx, c) != EZ_OK)
        return EZ_ERR;
    int got = lock_try(ctx, c);
    if (got <= 0)
        return got == 0 ? EZ_OK : EZ_ERR; /* 0: another daemon evaluates */
    return evaluate(ctx, c);
}

void webhook_fini(struct bg_ctx *ctx)
{
    int st = atomic_load(&D.state);
    if (st == D_RUNNING)
        log_info("event=webhook_waiting msg=\"an alert delivery is in flight (at most %d s)\"",
                 WEBHOOK_TIMEOUT_MS / 1000);
    if (st != D_IDLE)
        delivery_join();
    if (!D.pending)
        return;
    PGconn *c = bg_main_conn(ctx);
    if (c == NULL || delivery_record(ctx, c) != EZ_OK) {
        log_warn("event=webhook_outcome_lost origin=%s msg=\"last_sent_at not updated\"", D.origin);
        delivery_free();
    }
}
