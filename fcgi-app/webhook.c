/*
 * /admin/logs/webhook: the settings of the error-rate alert (the one row of
 * webhook_settings) and a synchronous test delivery. The background's
 * "webhook" job sends the real alerts (docs/webhook.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include "crypto.h"
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "outbound.h"
#include "resource.h"
#include "wctx.h"
#include "wire.h"

#define SECRET_MAX_CHARS 256
/* The test answers the admin synchronously: short, and well inside nginx's read timeout. */
#define TEST_TIMEOUT_MS 5000
#define TEST_CONNECT_TIMEOUT_MS 3000
/* How long a PUT waits for its thread's socket to connect before giving up the kick. */
#define KICK_WAIT_MS 250

enum wkind { W_BOOL, W_URL, W_SECRET, W_RATE, W_INT };

/*
 * The writable fields, in the order of the UPDATE's parameters. Everything
 * else in a body (secret_set, last_sent_at, id...) is ignored: the allow-list.
 */
static const struct wfield {
    const char *name;
    enum wkind kind;
    int64_t min, max;
} wfields[] = {
    {"enabled", W_BOOL, 0, 0},
    {"url", W_URL, 0, OUTBOUND_URL_MAX},
    {"secret", W_SECRET, 0, SECRET_MAX_CHARS},
    {"error_rate_threshold", W_RATE, 0, 1},
    {"min_requests", W_INT, 1, 1000000},
    {"window_seconds", W_INT, 10, 86400},
    {"cooldown_seconds", W_INT, 0, 604800},
};
#define NFIELDS EZ_ARRAY_LEN(wfields)

/* coalesce: a NULL parameter keeps the column. */
static const char update_sql[] =
    "UPDATE webhook_settings SET enabled = coalesce($1::boolean, enabled), "
    "url = coalesce($2, url), secret = coalesce($3, secret), "
    "error_rate_threshold = coalesce($4::double precision, error_rate_threshold), "
    "min_requests = coalesce($5::int, min_requests), "
    "window_seconds = coalesce($6::int, window_seconds), "
    "cooldown_seconds = coalesce($7::int, cooldown_seconds), updated_at = now() "
    "WHERE id = 1";

static const char select_sql[] =
    "SELECT enabled, url, secret <> '', error_rate_threshold, min_requests, window_seconds, "
    "cooldown_seconds, floor(extract(epoch FROM last_sent_at))::bigint "
    "FROM webhook_settings WHERE id = 1";

/* The GET shape from select_sql; a missing row renders the schema's defaults. */
static cJSON *render(PGresult *res)
{
    cJSON *o = cJSON_CreateObject();
    if (PQntuples(res) != 1) {
        cJSON_AddBoolToObject(o, "enabled", false);
        cJSON_AddStringToObject(o, "url", "");
        cJSON_AddBoolToObject(o, "secret_set", false);
        cJSON_AddNumberToObject(o, "error_rate_threshold", 0.5);
        cJSON_AddNumberToObject(o, "min_requests", 20);
        cJSON_AddNumberToObject(o, "window_seconds", 300);
        cJSON_AddNumberToObject(o, "cooldown_seconds", 900);
        cJSON_AddNullToObject(o, "last_sent_at");
        return o;
    }
    cJSON_AddBoolToObject(o, "enabled", PQgetvalue(res, 0, 0)[0] == 't');
    cJSON_AddStringToObject(o, "url", PQgetvalue(res, 0, 1));
    cJSON_AddBoolToObject(o, "secret_set", PQgetvalue(res, 0, 2)[0] == 't');
    cJSON_AddNumberToObject(o, "error_rate_threshold", strtod(PQgetvalue(res, 0, 3), NULL));
    cJSON_AddNumberToObject(o, "min_requests", strtod(PQgetvalue(res, 0, 4), NULL));
    cJSON_AddNumberToObject(o, "window_seconds", strtod(PQgetvalue(res, 0, 5), NULL));
    cJSON_AddNumberToObject(o, "cooldown_seconds", strtod(PQgetvalue(res, 0, 6), NULL));
    if (PQgetisnull(res, 0, 7)) {
        cJSON_AddNullToObject(o, "last_sent_at");
    } else {
        char iso[40];
        ez_format_time(strtoll(PQgetvalue(res, 0, 7), NULL, 10), iso, sizeof(iso));
        cJSON_AddStringToObject(o, "last_sent_at", iso);
    }
    return o;
}

/* Runs select_sql on c and renders it; NULL after answering 503. */
static cJSON *fetch(struct req *r, PGconn *c)
{
    PGresult *res = PQexecParams(c, select_sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=webhook_read_failed error=\"%s\"", PQresultErrorMessage(res));
        PQclear(res);
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database error");
        return NULL;
    }
    cJSON *o = render(res);
    PQclear(res);
    return o;
}

int webhook_get(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    cJSON *o = fetch(r, c);
    if (o == NULL)
        return EZ_ERR;
    reply_json(r, 200, o);
    cJSON_Delete(o);
    return EZ_OK;
}

/* ---- PUT ---- */

/* Characters (UTF-8 code points) of a string that the strict parser already checked. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static const char *check_secret(const char *s)
{
    if (utf8_chars(s) > SECRET_MAX_CHARS)
        return "is longer than 256 characters";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return "may not contain control characters";
    return NULL;
}

/*
 * Validates one present field into its parameter text (*out, owned) and its
 * audit value. Answers 400 itself. The URL rule may resolve the host (DNS),
 * which is why this runs before the transaction.
 */
static int take(struct req *r, const struct wfield *f, const cJSON *v, char **out, cJSON *changes)
{
    char num[64];
    int64_t iv;
    switch (f->kind) {
    case W_BOOL:
        if (!cJSON_IsBool(v))
            return reply_error(r, 400, "invalid_argument", f->name, "%s must be true or false",
                               f->name);
        *out = ez_strdup(cJSON_IsTrue(v) ? "true" : "false");
        cJSON_AddBoolToObject(changes, f->name, cJSON_IsTrue(v));
        return EZ_OK;
    case W_RATE:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble > 1)
            return reply_error(r, 400, "invalid_argument", f->name,
                               "%s must be a number from 0 to 1", f->name);
        snprintf(num, sizeof(num), "%.17g", v->valuedouble);
        *out = ez_strdup(num);
        cJSON_AddNumberToObject(changes, f->name, v->valuedouble);
        return EZ_OK;
    case W_INT:
        if (!json_int_in(v, f->min, f->max, &iv))
            return reply_error(r, 400, "invalid_argument", f->name,
                               "%s must be a whole number in range (%lld..%lld)", f->name,
                               (long long)f->min, (long long)f->max);
        snprintf(num, sizeof(num), "%lld", (long long)iv);
        *out = ez_strdup(num);
        cJSON_AddNumberToObject(changes, f->name, (double)iv);
        return EZ_OK;
    case W_SECRET: {
        /* null and "" clear it; the audit row never holds the value. */
        const char *s = cJSON_IsNull(v) ? "" : cJSON_IsString(v) ? v->valuestring : NULL;
        if (s == NULL)
            return reply_error(r, 400, "invalid_argument", f->name,
                               "secret must be a string or null");
        const char *msg = check_secret(s);
        if (msg)
            return reply_error(r, 400, "invalid_argument", f->name, "secret %s", msg);
        *out = ez_strdup(s);
        cJSON_AddStringToObject(changes, f->name, s[0] ? "[redacted]" : "");
        return EZ_OK;
    }
    case W_URL: {
        const char *s = cJSON_IsNull(v) ? "" : cJSON_IsString(v) ? v->valuestring : NULL;
        if (s == NULL)
            return reply_error(r, 400, "invalid_argument", f->name, "url must be a string or null");
        char err[320];
        if (s[0] != '\0' &&
            outbound_check_url(s, r->w->cfg->outbound_allow_private, err, sizeof(err)) != EZ_OK)
            return reply_error(r, 400, "invalid_argument", f->name, "url %s", err);
        *out = ez_strdup(s);
        cJSON_AddStringToObject(changes, f->name, s);
        return EZ_OK;
    }
    }
    return reply_error(r, 400, "invalid_argument", f->name, "unsupported field");
}

/* Validates every known field present in body. params[i] stays NULL for absent ones. */
static int collect(struct req *r, const cJSON *body, char *params[NFIELDS], cJSON *changes)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, wfields[i].name);
        if (v == NULL)
            continue;
        if (cJSON_IsNull(v) && wfields[i].kind != W_URL && wfields[i].kind != W_SECRET)
            return reply_error(r, 400, "invalid_argument", wfields[i].name, "%s may not be null",
                               wfields[i].name);
        if (take(r, &wfields[i], v, &params[i], changes) != EZ_OK)
            return EZ_ERR;
    }
    return EZ_OK;
}

/*
 * enabled = true needs a URL, with the row's current values for what the
 * body leaves out. Locks the row (FOR UPDATE) for the rest of the
 * transaction. Answers 400/503 itself.
 */
static int check_enabled_url(struct rctx *x, char *params[NFIELDS])
{
    PGresult *res = db_exec(
        x, "INSERT INTO webhook_settings (id) VALUES (1) ON CONFLICT (id) DO NOTHING", 0, NULL);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    res = db_exec(x, "SELECT enabled, url <> '' FROM webhook_settings WHERE id = 1 FOR UPDATE", 0,
                  NULL);
    if (res == NULL)
        return EZ_ERR;
    bool enabled = PQgetvalue(res, 0, 0)[0] == 't';
    bool has_url = PQgetvalue(res, 0, 1)[0] == 't';
    PQclear(res);
    if (params[0])
        enabled = strcmp(params[0], "true") == 0;
    if (params[1])
        has_url = params[1][0] != '\0';
    if (enabled && !has_url)
        return reply_error(x->r, 400, "invalid_argument", "url",
                           "url is required while enabled is true");
    return EZ_OK;
}

/*
 * Best effort [kick][webhook] after a change, so that new settings are
 * evaluated now rather than at the next 15 s tick (which stays the fallback).
 */
static void kick_webhook(struct wctx *w)
{
    void *s = wctx_zmq(w);
    if (s == NULL)
        return;
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLOUT};
    if (zmq_poll(&it, 1, KICK_WAIT_MS) <= 0 || !(it.revents & ZMQ_POLLOUT) ||
        zmq_send(s, WIRE_KICK, strlen(WIRE_KICK), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s, "webhook", 7, ZMQ_DONTWAIT) < 0)
        log_debug("event=webhook_kick_not_sent error=\"%s\"", zmq_strerror(zmq_errno()));
}

int webhook_put(struct req *r)
{
    cJSON *body = NULL, *changes = cJSON_CreateObject(), *out = NULL;
    char *params[NFIELDS] = {NULL};
    PGresult *res = NULL;
    PGconn *c = NULL;
    struct rctx x = {.r = r, .prefix = ""};
    int rc = EZ_ERR;

    if (req_json_object(r, &body) != EZ_OK || collect(r, body, params, changes) != EZ_OK)
        goto out;
    if (cJSON_GetArraySize(changes) == 0) {
        rc = webhook_get(r); /* nothing to change: no transaction, no audit row */
        goto out;
    }
    if ((c = tx_begin(r)) == NULL)
        goto out;
    x.c = c;
    if (check_enabled_url(&x, params) != EZ_OK)
        goto fail;
    if ((res = db_exec(&x, update_sql, (int)NFIELDS, (const char *const *)params)) == NULL)
        goto fail;
    if (audit_write(&x, "update", "webhook", 0, changes) != EZ_OK)
        goto fail;
    if ((out = fetch(r, c)) == NULL)
        goto fail;
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    log_info("event=webhook_settings_updated fields=%d", cJSON_GetArraySize(changes));
    kick_webhook(r->w);
    reply_json(r, 200, out);
    rc = EZ_OK;
    goto out;
fail:
    tx_rollback(r, c);
out:
    PQclear(res);
    for (size_t i = 0; i < NFIELDS; i++)
        free(params[i]);
    cJSON_Delete(out);
    cJSON_Delete(changes);
    cJSON_Delete(body);
    return rc;
}

/* ---- POST /admin/logs/webhook/test ---- */

/* The test event: the error_rate shape with zero counts, so receivers can test their parser. */
static char *test_body(int64_t window_s)
{
    char when[40];
    ez_format_time(ez_now_unix(), when, sizeof(when));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "test");
    cJSON_AddNumberToObject(o, "window_seconds", (double)window_s);
    cJSON_AddNumberToObject(o, "requests", 0);
    cJSON_AddNumberToObject(o, "errors", 0);
    cJSON_AddNumberToObject(o, "error_rate", 0);
    cJSON_AddItemToObject(o, "top_errors", cJSON_CreateArray());
    cJSON_AddStringToObject(o, "time", when);
    cJSON_AddStringToObject(o, "message", "EZ-API webhook test");
    char *s = json_render(o);
    cJSON_Delete(o);
    return s;
}

/* The optional body must be a JSON object when present; its content is ignored. */
static int test_read_body(struct req *r)
{
    if (req_read_body(r, r->body_limit ? r->body_limit : r->w->cfg->max_body_bytes) != EZ_OK)
        return EZ_ERR;
    if (r->body_len == 0)
        return EZ_OK;
    cJSON *b = NULL;
    if (req_json_object(r, &b) != EZ_OK)
        return EZ_ERR;
    cJSON_Delete(b);
    return EZ_OK;
}

/* Reads url, secret and window into the caller's strings (owned). Answers 503/400 itself. */
static int test_settings(struct req *r, char **url, char **secret, int64_t *window_s)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    PGresult *res =
        PQexecParams(c, "SELECT url, secret, window_seconds FROM webhook_settings WHERE id = 1", 0,
                     NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=webhook_read_failed error=\"%s\"", PQresultErrorMessage(res));
        PQclear(res);
        db_check(&r->w->db);
        return reply_error(r, 503, "unavailable", NULL, "database error");
    }
    if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] == '\0') {
        PQclear(res);
        return reply_error(r, 400, "invalid_argument", "url",
                           "no webhook url is configured (PUT /admin/logs/webhook first)");
    }
    *url = ez_strdup(PQgetvalue(res, 0, 0));
    *secret = ez_strdup(PQgetvalue(res, 0, 1));
    *window_s = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    return EZ_OK;
}

/* Sends the signed test event and answers {"delivered", "status", "error"} (always 200). */
static void test_deliver(struct req *r, const char *url, const char *secret, int64_t window_s)
{
    struct outbound_resp resp = {0};
    char sig[96] = "", hex[65], origin[300], err[300];
    char *body = test_body(window_s);
    if (secret[0] != '\0') {
        ez_hmac_sha256_hex(secret, strlen(secret), body, strlen(body), hex);
        snprintf(sig, sizeof(sig), "X-EZ-Signature: sha256=%s", hex);
    }
    const char *headers[] = {"Content-Type: application/json", "X-EZ-Event: test",
                             sig[0] ? sig : NULL, NULL};
    struct outbound_req req = {.method = "POST",
                               .url = url,
                               .headers = headers,
                               .body = body,
                               .body_len = strlen(body),
                               .timeout_ms = TEST_TIMEOUT_MS,
                               .connect_timeout_ms = TEST_CONNECT_TIMEOUT_MS,
                               .allow_private = r->w->cfg->outbound_allow_private};
    int rc = outbound_request(&req, &resp);
    bool delivered = rc == EZ_OK && resp.status >= 200 && resp.status < 300;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "delivered", delivered);
    if (resp.status > 0)
        cJSON_AddNumberToObject(o, "status", (double)resp.status);
    else
        cJSON_AddNullToObject(o, "status");
    if (delivered) {
        cJSON_AddNullToObject(o, "error");
    } else {
        if (rc == EZ_OK)
            snprintf(err, sizeof(err), "the receiver answered HTTP %ld", resp.status);
        else
            snprintf(err, sizeof(err), "%s", resp.error);
        cJSON_AddStringToObject(o, "error", err);
    }
    outbound_url_origin(url, origin, sizeof(origin));
    log_info("event=webhook_test origin=%s delivered=%s status=%ld", origin,
             delivered ? "true" : "false", resp.status);
    /* A failed delivery is the receiver's outcome, not a fault of ours: still 200. */
    reply_json(r, 200, o);
    cJSON_Delete(o);
    outbound_resp_free(&resp);
    free(body);
}

int webhook_test(struct req *r)
{
    char *url = NULL, *secret = NULL;
    int64_t window_s = 0;
    int rc = EZ_ERR;
    if (test_read_body(r) != EZ_OK || test_settings(r, &url, &secret, &window_s) != EZ_OK)
        goto out;
    test_deliver(r, url, secret, window_s);
    rc = EZ_OK;
out:
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
    free(url);
    return rc;
}
