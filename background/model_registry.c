/*
 * The "model_registry" job (docs/model-registry.md). The fetch runs on a
 * helper thread: an HTTP fetch may take seconds, and the daemon's only
 * thread also acknowledges log batches, which must never wait behind it.
 * The thread reads the document (http(s) through common/outbound.c, file://
 * directly), parses it (common/models_dev.c), keeps the last good copy in
 * the cache directory (or falls back to it), then kicks the job over the
 * ROUTER's in-process endpoint. The next run stores the result in one
 * transaction with an outbox row "all", so that meta:models is rebuilt with
 * the registry step of the capability precedence.
 */
#include "model_registry.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include "bg.h"
#include "crypto.h"
#include "jobs.h"
#include "json.h"
#include "log.h"
#include "models_dev.h"
#include "outbound.h"
#include "wire.h"
#include "zmq_server.h"

/* One fetch: inputs copied from the configuration, outputs read once done is set. */
struct reg_fetch {
    /* inputs (owned copies: the configuration may be replaced meanwhile) */
    char *url;
    char *cache_dir;
    bool allow_private;
    /*
     * DEALER connected to the ROUTER's in-process endpoint by the main thread
     * before the fetch starts, used by the fetch thread only to kick the job,
     * closed by the main thread after the join (pthread_join is the barrier a
     * socket needs to change threads). NULL = no kick (the interval brings the
     * job back). A socket made and closed inside the thread could lose its
     * message: the ROUTER drops a peer that is gone before it was attached.
     */
    void *kick_sock;

    /* outputs */
    char *flat;   /* JSON text {model id: capability}, or NULL */
    size_t count; /* entries in flat */
    char version[13];
    bool from_cache; /* flat is the cached copy (the fetch failed) */
    char error[512]; /* why the fetch failed; "" when it did not */
    atomic_bool done;
};

/* The fetch in flight (or finished, not yet collected). Only the main thread touches these. */
static struct reg_fetch *inflight;
static pthread_t inflight_tid;

void model_registry_version(const char *body, size_t len, char out[13])
{
    char hex[65];
    ez_sha256_hex(body, len, hex);
    memcpy(out, hex, 12);
    out[12] = '\0';
}

int64_t model_registry_interval_ms(const struct ez_config *cfg)
{
    return (int64_t)cfg->model_registry_refresh_seconds * 1000;
}

/* ---- the fetch thread ------------------------------------------------------ */

/*
 * Reads a whole regular file of at most MODEL_REGISTRY_MAX_BYTES into *out
 * (NUL-terminated, caller frees). 0 ok, -1 with err set (the path may be
 * named: it is the operator's own configuration, never a secret).
 */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    int rc = EZ_ERR;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return EZ_ERR;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_size > MODEL_REGISTRY_MAX_BYTES) {
        snprintf(err, errlen, "%s is larger than %ld bytes", path, MODEL_REGISTRY_MAX_BYTES);
        goto out;
    }
    size_t want = (size_t)st.st_size, got = 0;
    buf = ez_malloc(want + 1);
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "short");
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
    rc = EZ_OK;
out:
    free(buf);
    close(fd);
    return rc;
}

/* file:///abs/path, file://localhost/abs/path or file://rel/path -> the path. */
static const char *file_url_path(const char *url)
{
    const char *p = url + strlen("file://");
    if (strncmp(p, "localhost/", 10) == 0)
        p += strlen("localhost");
    return p;
}

/* GETs an http(s) URL through the outbound rules (public addresses only, unless allowed). */
static int http_get(const struct reg_fetch *f, char **out, size_t *len, char *err, size_t errlen)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    struct outbound_req req = {
        .method = "GET",
        .url = f->url,
        .headers = headers,
        .timeout_ms = MODEL_REGISTRY_TIMEOUT_MS,
        .connect_timeout_ms = MODEL_REGISTRY_CONNECT_TIMEOUT_MS,
        .allow_private = f->allow_private,
        /* a larger body aborts the transfer (an error, never a cut document) */
        .max_response_bytes = (size_t)MODEL_REGISTRY_MAX_BYTES,
    };
    struct outbound_resp resp = {0};
    char origin[160];
    int rc = EZ_ERR;
    outbound_url_origin(f->url, origin, sizeof(origin));
    if (outbound_request(&req, &resp) != EZ_OK) {
        snprintf(err, errlen, "fetch from %s failed: %s", origin, resp.error);
        goto out;
    }
    if (resp.status != 200) {
        snprintf(err, errlen, "fetch from %s answered HTTP %ld", origin, resp.status);
        goto out;
    }
    *out = resp.body ? resp.body : ez_strdup("");
    *len = resp.body ? resp.body_len : 0;
    resp.body = NULL;
    rc = EZ_OK;
out:
    outbound_resp_free(&resp);
    return rc;
}

/* mkdir -p for the cache directory (0755). */
static int make_dirs(const char *dir)
{
    char *p = ez_strdup(dir);
    int rc = EZ_OK;
    for (char *s = p + 1; *s && rc == EZ_OK; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = EZ_ERR;
        *s = '/';
    }
    if (rc == EZ_OK && mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = EZ_ERR;
    free(p);
    return rc;
}

/*
 * Replaces the cached copy with body: written to a temporary file, synced,
 * then renamed over the old one, so that a crash leaves the old copy or the
 * new one, never half of one. Failures are logged (the fetch still counts).
 */
static void cache_write(const char *dir, const char *body, size_t len)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, MODEL_REGISTRY_CACHE_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    if (make_dirs(dir) != EZ_OK) {
        log_warn("event=model_registry_cache_failed dir=%s error=\"%s\"", dir, strerror(errno));
        return;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    size_t off = 0;
    while (ok && off < len) {
        ssize_t n = write(fd, body + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok)
            off += (size_t)n;
    }
    ok = ok && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        log_warn("event=model_registry_cache_failed path=%s error=\"%s\"", path, strerror(errno));
        unlink(tmp);
    }
}

/* Parses body into the outputs of f. 0 ok, -1 with err set. */
static int take_document(struct reg_fetch *f, const char *body, size_t len, char *err,
                         size_t errlen)
{
    char why[160];
    size_t count = 0;
    cJSON *flat = models_dev_parse(body, len, &count, why, sizeof(why));
    if (flat == NULL) {
        snprintf(err, errlen, "the document is not usable: %s", why);
        return EZ_ERR;
    }
    f->flat = json_render(flat);
    cJSON_Delete(flat);
    f->count = count;
    model_registry_version(body, len, f->version);
    return EZ_OK;
}

/* Tells the job its result is ready: [kick][job] to the ROUTER's in-process endpoint. */
static void kick_job(void *s)
{
    if (s == NULL)
        return;
    if (zmq_send(s, WIRE_KICK, strlen(WIRE_KICK), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s, MODEL_REGISTRY_JOB, strlen(MODEL_REGISTRY_JOB), ZMQ_DONTWAIT) < 0)
        log_warn("event=model_registry_kick_failed error=\"%s\"", zmq_strerror(zmq_errno()));
}

/* A DEALER connected to the ROUTER's in-process endpoint, or NULL (logged). */
static void *kick_socket(void *zmq_ctx)
{
    void *s = zmq_ctx ? zmq_socket(zmq_ctx, ZMQ_DEALER) : NULL;
    if (s == NULL)
        return NULL;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(s, ZS_SELF_ENDPOINT) != 0) {
        log_warn("event=model_registry_kick_failed error=\"%s\"", zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static void *fetch_main(void *arg)
{
    struct reg_fetch *f = arg;
    char *body = NULL;
    size_t len = 0;
    char err[sizeof(f->error)] = "";
    int rc;

    if (strncmp(f->url, "file://", 7) == 0)
        rc = read_file(file_url_path(f->url), &body, &len, err, sizeof(err));
    else
        rc = http_get(f, &body, &len, err, sizeof(err));
    if (rc == EZ_OK && take_document(f, body, len, err, sizeof(err)) == EZ_OK)
        cache_write(f->cache_dir, body, len);
    free(body);
    body = NULL;

    if (f->flat == NULL) {
        /* The fetch failed: the last good copy, if there is one, stands in. */
        char path[4096], cerr[256];
        snprintf(f->error, sizeof(f->error), "%s", err[0] ? err : "unknown error");
        snprintf(path, sizeof(path), "%s/%s", f->cache_dir, MODEL_REGISTRY_CACHE_FILE);
        if (read_file(path, &body, &len, cerr, sizeof(cerr)) == EZ_OK &&
            take_document(f, body, len, cerr, sizeof(cerr)) == EZ_OK)
            f->from_cache = true;
        free(body);
    }
    atomic_store(&f->done, true);
    kick_job(f->kick_sock);
    return NULL;
}

/* Frees a fetch whose thread was joined (or never started). */
static void fetch_free(struct reg_fetch *f)
{
    if (f == NULL)
        return;
    if (f->kick_sock)
        zmq_close(f->kick_sock);
    free(f->url);
    free(f->cache_dir);
    free(f->flat);
    free(f);
}

/* Starts a fetch for the current configuration. 0 ok, -1 (job_fail). */
static int fetch_start(struct bg_ctx *ctx)
{
    struct reg_fetch *f = ez_calloc(1, sizeof(*f));
    f->url = ez_strdup(ctx->cfg->model_registry_url);
    f->cache_dir = ez_strdup(ctx->cfg->model_registry_cache_dir);
    f->allow_private = ctx->cfg->outbound_allow_private;
    f->kick_sock = kick_socket(ctx->zmq_ctx);
    atomic_init(&f->done, false);
    int err = pthread_create(&inflight_tid, NULL, fetch_main, f);
    if (err != 0) {
        fetch_free(f);
        return job_fail(ctx, "model_registry: cannot start the fetch thread: %s", strerror(err));
    }
    inflight = f;
    return EZ_OK;
}

/* The finished fetch, joined and handed over (caller frees), or NULL while none is done. */
static struct reg_fetch *fetch_collect(void)
{
    if (inflight == NULL || !atomic_load(&inflight->done))
        return NULL;
    pthread_join(inflight_tid, NULL);
    struct reg_fetch *f = inflight;
    inflight = NULL;
    return f;
}

void model_registry_fini(struct bg_ctx *ctx)
{
    (void)ctx;
    if (inflight == NULL)
        return;
    pthread_join(inflight_tid, NULL);
    fetch_free(inflight);
    inflight = NULL;
}

/* ---- storing -------------------------------------------------------------- */

/* Runs one statement of the job's transaction; -1 with err set. The result is cleared. */
static int exec(PGconn *conn, const char *what, const char *sql, int n, const char *const *params,
                char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? EZ_OK : EZ_ERR;
    if (rc != EZ_OK)
        snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

/* The stored version (locking the state row), into out. -1 with err set. */
static int current_version(PGconn *conn, char *out, size_t outlen, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn,
                                 "SELECT version, models, "
                                 "EXISTS (SELECT 1 FROM model_registry_models) "
                                 "FROM model_registry_state WHERE id = 1 FOR UPDATE",
                                 0, NULL, NULL, NULL, NULL, 0);
    int rc = EZ_ERR;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        snprintf(err, errlen, "read state: %s",
                 PQresultStatus(res) == PGRES_TUPLES_OK ? "no state row (run scripts/migrate)"
                                                        : PQresultErrorMessage(res));
        goto out;
    }
    /* Anything stored at all counts as a version, so that "disabled" clears it. */
    bool any = strcmp(PQgetvalue(res, 0, 1), "0") != 0 || PQgetvalue(res, 0, 2)[0] == 't';
    snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0)[0] || !any ? PQgetvalue(res, 0, 0) : "?");
    rc = EZ_OK;
out:
    PQclear(res);
    return rc;
}

/* Replaces the stored entries with flat; the state follows; an outbox "all" republishes. */
static int replace_entries(PGconn *conn, const struct reg_fetch *f, const char *last_error,
                           char *err, size_t errlen)
{
    char count[24];
    snprintf(count, sizeof(count), "%zu", f->count);
    const char *ins[1] = {f->flat};
    const char *st[4] = {MODEL_REGISTRY_SOURCE, f->version, count, last_error};
    if (exec(conn, "clear entries", "DELETE FROM model_registry_models", 0, NULL, err, errlen) ||
        exec(conn, "store entries",
             "INSERT INTO model_registry_models (name, data) "
             "SELECT key, value FROM jsonb_each($1::jsonb)",
             1, ins, err, errlen) ||
        exec(conn, "store state",
             "UPDATE model_registry_state SET source = $1, version = $2, updated_at = now(), "
             "models = $3::integer, last_error = $4 WHERE id = 1",
             4, st, err, errlen) ||
        exec(conn, "outbox", "INSERT INTO sync_outbox (resource) VALUES ('all')", 0, NULL, err,
             errlen))
        return EZ_ERR;
    return EZ_OK;
}

/*
 * What a finished fetch changes, inside the caller's transaction. *changed
 * tells whether entries were replaced (meta:models must be rebuilt).
 */
static int store_fetch(PGconn *conn, const struct reg_fetch *f, bool *changed, char *err,
                       size_t errlen)
{
    char cur[64];
    *changed = false;
    if (current_version(conn, cur, sizeof(cur), err, errlen) != EZ_OK)
        return EZ_ERR;
    if (f->flat != NULL && strcmp(cur, f->version) != 0) {
        *changed = true;
        return replace_entries(conn, f, f->error, err, errlen);
    }
    if (f->flat != NULL && f->error[0] == '\0') {
        /* The same document again: only the time of the last good fetch moves. */
        char count[24];
        snprintf(count, sizeof(count), "%zu", f->count);
        const char *p[2] = {MODEL_REGISTRY_SOURCE, count};
        return exec(conn, "store state",
                    "UPDATE model_registry_state SET source = $1, updated_at = now(), "
                    "models = $2::integer, last_error = '' WHERE id = 1",
                    2, p, err, errlen);
    }
    /* Failed, and the stored entries are already the best copy there is: keep them. */
    const char *p[1] = {f->error};
    return exec(conn, "store error", "UPDATE model_registry_state SET last_error = $1 WHERE id = 1",
                1, p, err, errlen);
}

/* Registry disabled: removes whatever a previous configuration stored. */
static int store_cleared(PGconn *conn, bool *changed, char *err, size_t errlen)
{
    char cur[64];
    *changed = false;
    if (current_version(conn, cur, sizeof(cur), err, errlen) != EZ_OK)
        return EZ_ERR;
    if (cur[0] == '\0')
        return EZ_OK;
    *changed = true;
    if (exec(conn, "clear entries", "DELETE FROM model_registry_models", 0, NULL, err, errlen) ||
        exec(conn, "clear state",
             "UPDATE model_registry_state SET source = '', version = '', updated_at = NULL, "
             "models = 0, last_error = '' WHERE id = 1",
             0, NULL, err, errlen) ||
        exec(conn, "outbox", "INSERT INTO sync_outbox (resource) VALUES ('all')", 0, NULL, err,
             errlen))
        return EZ_ERR;
    return EZ_OK;
}

/*
 * Runs store (store_fetch with f, or store_cleared when f is NULL) in one
 * transaction. 0 ok, -1 with err set (the transaction rolled back).
 */
static int in_transaction(struct bg_ctx *ctx, PGconn *conn, const struct reg_fetch *f,
                          bool *changed, char *err, size_t errlen)
{
    if (exec(conn, "BEGIN", "BEGIN", 0, NULL, err, errlen) != EZ_OK) {
        db_check(&ctx->main_db);
        return EZ_ERR;
    }
    int rc =
        f ? store_fetch(conn, f, changed, err, errlen) : store_cleared(conn, changed, err, errlen);
    if (rc == EZ_OK)
        rc = exec(conn, "COMMIT", "COMMIT", 0, NULL, err, errlen);
    if (rc != EZ_OK) {
        PGresult *res = PQexec(conn, "ROLLBACK");
        PQclear(res);
        db_check(&ctx->main_db);
        *changed = false;
    }
    return rc;
}

/*
 * Why the last fetch failed, "" after a success. A run that only starts a
 * fetch reports it again, so that the scheduler neither logs a recovery that
 * has not happened nor repeats the warning (one per streak, docs/background.md).
 */
static char last_failure[600];

static int fail(struct bg_ctx *ctx, const char *msg)
{
    snprintf(last_failure, sizeof(last_failure), "%s", msg);
    return job_fail(ctx, "%s", msg);
}

/* Stores a finished fetch and logs what happened. Frees f. */
static int finish_fetch(struct bg_ctx *ctx, struct reg_fetch *f)
{
    char err[512] = "", msg[600];
    bool changed = false;
    int rc = EZ_ERR;
    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL) {
        /* Outage logged by bg_main_conn; the next run fetches again. */
        fetch_free(f);
        return EZ_ERR;
    }
    if (in_transaction(ctx, conn, f, &changed, err, sizeof(err)) != EZ_OK) {
        snprintf(msg, sizeof(msg), "model_registry: %s", err);
        rc = fail(ctx, msg);
        goto out;
    }
    if (changed)
        jobs_kick("outbox");
    if (f->error[0]) {
        /* The scheduler logs it (once per streak); last_error shows it in the API. */
        snprintf(msg, sizeof(msg), "model_registry: %s%s", f->error,
                 f->flat ? " (the last good copy stays in use)" : "");
        rc = fail(ctx, msg);
        goto out;
    }
    last_failure[0] = '\0';
    log_info("event=model_registry_refreshed version=%s models=%zu changed=%s", f->version,
             f->count, changed ? "true" : "false");
    rc = EZ_OK;
out:
    fetch_free(f);
    return rc;
}

int model_registry_run(struct bg_ctx *ctx)
{
    struct reg_fetch *done = fetch_collect();
    if (done != NULL && ctx->cfg->model_registry_enabled)
        return finish_fetch(ctx, done);
    fetch_free(done); /* a result that arrived after the registry was disabled */

    if (!ctx->cfg->model_registry_enabled) {
        char err[512] = "";
        bool changed = false;
        last_failure[0] = '\0';
        PGconn *conn = bg_main_conn(ctx);
        if (conn == NULL)
            return EZ_ERR; /* outage logged by bg_main_conn */
        if (in_transaction(ctx, conn, NULL, &changed, err, sizeof(err)) != EZ_OK)
            return job_fail(ctx, "model_registry: %s", err);
        if (changed) {
            log_info("event=model_registry_cleared reason=disabled");
            jobs_kick("outbox");
        }
        return EZ_OK;
    }
    if (inflight == NULL && fetch_start(ctx) != EZ_OK)
        return EZ_ERR;
    /* Fetching: its kick brings the job back with the result. */
    return last_failure[0] ? job_fail(ctx, "%s", last_failure) : EZ_OK;
}
