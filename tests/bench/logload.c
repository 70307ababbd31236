/*
 * bench-logload: the load program of scripts/bench.d/30-logs (built there
 * with cc; needs libcurl and libpq).
 *
 *   bench-logload ingest URL TOKEN DSN RECORDS BATCH CLIENTS PREFIX
 *       POSTs RECORDS records to URL/internal/logs in batches of BATCH from
 *       CLIENTS threads (one keep-alive connection each), then waits until
 *       log_sink_progress.written_upto has moved by the number of accepted
 *       batches (one POST = one spool batch), i.e. until every row is in
 *       PostgreSQL. A 503 (the pipeline is full: EZ_LOG_QUEUE records wait for
 *       PostgreSQL) is retried after 5 ms, doubling per attempt up to
 *       RETRY_MAX_US, as a data plane backs off (counted). Retrying every 5 ms
 *       made the clients re-send batches the workers parse again, taking CPU
 *       from the writer the bench measures.
 *       Prints: records= batches= seconds= acked_seconds= records_per_s=
 *       p50_ms= p99_ms= retries= errors=
 *
 *   bench-logload copy DSN MIN_ID MAX_ID CHUNK
 *       Reads the rows MIN_ID < id <= MAX_ID of request_logs (every column
 *       but id, COPY text), then times COPYing them back into request_logs,
 *       CHUNK rows per COPY (each its own transaction), on one connection:
 *       the anchor of the ingestion figure.
 *       Prints: rows= seconds= rows_per_s=
 *
 * Figures are printed, never judged.
 */
#include <curl/curl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RETRIES 2000
#define RETRY_MIN_US 5000
#define RETRY_MAX_US 160000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg, const char *detail)
{
    fprintf(stderr, "bench-logload: %s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("out of memory", NULL);
    return p;
}

/* ---- ingest ---- */

struct load {
    const char *url, *token, *prefix;
    long records, batch, batches;
    atomic_long next; /* next batch number to send */
    atomic_long ok_batches, ok_records, retries, errors;
    double *lat; /* seconds per accepted POST, by batch number (-1 = none) */
};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static const char *const models[] = {
    "gpt-4o",         "gpt-4o-mini",   "claude-3-5-sonnet", "o3-mini",
    "gemini-1.5-pro", "llama-3.1-70b", "mistral-large",     "qwen"};

/* A realistic record: every field the data plane usually sends. */
static int render_record(char *out, size_t cap, const char *prefix, long b, long i)
{
    long k = b * 7919 + i * 104729;
    int lat = (int)(k % 3000) + 20;
    int pt = (int)(k % 1500), ct = (int)(k % 700);
    return snprintf(out, cap,
                    "{\"request_id\":\"%s-%ld-%ld\",\"namespace\":\"bench\",\"model\":\"%s\","
                    "\"upstream_model\":\"%s\",\"master_id\":%ld,\"key_id\":%ld,"
                    "\"provider_group_id\":%ld,\"api_key_id\":%ld,\"provider_type\":\"openai\","
                    "\"status_code\":%d,\"latency_ms\":%d,\"ttfb_ms\":%d,\"prompt_tokens\":%d,"
                    "\"completion_tokens\":%d,\"total_tokens\":%d,\"stream\":%s,"
                    "\"client_ip\":\"10.%ld.%ld.%ld\",\"user_agent\":\"bench-logload/1.0\"}",
                    prefix, b, i, models[k % 8], models[k % 8], 1000 + k % 50, 5000 + k % 500,
                    70 + k % 3, 80 + k % 5, k % 53 == 0 ? 500 : (k % 31 == 0 ? 429 : 200), lat,
                    lat / 3, pt, ct, pt + ct, k % 2 ? "true" : "false", k % 200, (k / 7) % 250,
                    (k / 11) % 250);
}

/* Records in batch b (the last one may be short). */
static long batch_records(const struct load *L, long b)
{
    return (b + 1) * L->batch > L->records ? L->records - b * L->batch : L->batch;
}

static char *render_body(const struct load *L, long b, size_t *len)
{
    long n = batch_records(L, b);
    size_t cap = 64 + (size_t)n * 640, off = 0;
    char *body = xmalloc(cap);
    off += (size_t)snprintf(body, cap, "{\"logs\":[");
    for (long i = 0; i < n; i++) {
        if (i)
            body[off++] = ',';
        off += (size_t)render_record(body + off, cap - off, L->prefix, b, i);
    }
    off += (size_t)snprintf(body + off, cap - off, "]}");
    *len = off;
    return body;
}

static void *client_main(void *arg)
{
    struct load *L = arg;
    char url[1024], tok[512];
    snprintf(url, sizeof(url), "%s/internal/logs", L->url);
    snprintf(tok, sizeof(tok), "X-Internal-Token: %s", L->token);
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, tok);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    for (;;) {
        long b = atomic_fetch_add(&L->next, 1);
        if (b >= L->batches)
            break;
        size_t len;
        char *body = render_body(L, b, &len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
        useconds_t backoff = RETRY_MIN_US;
        for (int attempt = 0;; attempt++) {
            double t0 = now_s();
            CURLcode rc = curl_easy_perform(h);
            double t1 = now_s();
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            if (rc == CURLE_OK && status == 202) {
                L->lat[b] = t1 - t0;
                atomic_fetch_add(&L->ok_batches, 1);
                atomic_fetch_add(&L->ok_records, batch_records(L, b));
                break;
            }
            if (rc == CURLE_OK && status == 503 && attempt < MAX_RETRIES) {
                atomic_fetch_add(&L->retries, 1);
                usleep(backoff);
                backoff = backoff * 2 > RETRY_MAX_US ? RETRY_MAX_US : backoff * 2;
                continue;
            }
            atomic_fetch_add(&L->errors, 1);
            if (atomic_load(&L->errors) <= 3)
                fprintf(stderr, "bench-logload: batch %ld: %s, HTTP %ld\n", b,
                        curl_easy_strerror(rc), status);
            break;
        }
        free(body);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return NULL;
}

static long long written_upto(PGconn *c)
{
    PGresult *res = PQexec(c, "SELECT written_upto FROM log_sink_progress WHERE id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        die("reading log_sink_progress", PQerrorMessage(c));
    long long w = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return w;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, long n, double p)
{
    if (n == 0)
        return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return sorted[i];
}

static int ingest(char **argv)
{
    struct load L;
    memset(&L, 0, sizeof(L));
    L.url = argv[0];
    L.token = argv[1];
    const char *dsn = argv[2];
    L.records = atol(argv[3]);
    L.batch = atol(argv[4]);
    long clients = atol(argv[5]);
    L.prefix = argv[6];
    if (L.records < 1 || L.batch < 1 || clients < 1)
        die("RECORDS, BATCH and CLIENTS must be >= 1", NULL);
    L.batches = (L.records + L.batch - 1) / L.batch;
    L.lat = xmalloc((size_t)L.batches * sizeof(double));
    for (long i = 0; i < L.batches; i++)
        L.lat[i] = -1;

    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        die("connecting to the log database", PQerrorMessage(c));
    long long w0 = written_upto(c);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_t *tid = xmalloc((size_t)clients * sizeof(*tid));
    double t0 = now_s();
    for (long i = 0; i < clients; i++)
        if (pthread_create(&tid[i], NULL, client_main, &L) != 0)
            die("pthread_create", NULL);
    for (long i = 0; i < clients; i++)
        pthread_join(tid[i], NULL);
    double t_acked = now_s();
    long long target = w0 + atomic_load(&L.ok_batches);
    while (written_upto(c) < target) {
        if (now_s() - t_acked > 300)
            die("the rows did not reach the table within 300 s", NULL);
        usleep(2000);
    }
    double t_done = now_s();

    long n = 0;
    for (long i = 0; i < L.batches; i++)
        if (L.lat[i] >= 0)
            L.lat[n++] = L.lat[i];
    qsort(L.lat, (size_t)n, sizeof(double), cmp_double);
    long ok_records = atomic_load(&L.ok_records);
    printf("records=%ld batches=%ld seconds=%.3f acked_seconds=%.3f records_per_s=%.0f "
           "p50_ms=%.2f p99_ms=%.2f retries=%ld errors=%ld\n",
           ok_records, atomic_load(&L.ok_batches), t_done - t0, t_acked - t0,
           (double)ok_records / (t_done - t0), pct(L.lat, n, 0.50) * 1000,
           pct(L.lat, n, 0.99) * 1000, atomic_load(&L.retries), atomic_load(&L.errors));
    PQfinish(c);
    curl_global_cleanup();
    free(tid);
    free(L.lat);
    return 0;
}

/* ---- copy (the anchor) ---- */

static PGresult *must(PGconn *c, PGresult *res, ExecStatusType want, const char *what)
{
    if (PQresultStatus(res) != want)
        die(what, PQerrorMessage(c));
    return res;
}

static int copy_anchor(char **argv)
{
    const char *dsn = argv[0];
    long long min_id = atoll(argv[1]), max_id = atoll(argv[2]);
    long chunk = atol(argv[3]);
    if (chunk < 1)
        die("CHUNK must be >= 1", NULL);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        die("connecting to the log database", PQerrorMessage(c));

    PGresult *res = must(c,
                         PQexec(c, "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) "
                                   "FROM pg_attribute WHERE attrelid = 'request_logs'::regclass "
                                   "AND attnum > 0 AND NOT attisdropped AND attname <> 'id'"),
                         PGRES_TUPLES_OK, "reading the columns");
    char *cols = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);

    /* The rows, one COPY text line each. */
    size_t cap = 1024, n = 0;
    char **rows = xmalloc(cap * sizeof(*rows));
    size_t qlen = strlen(cols) + 256;
    char *q = xmalloc(qlen);
    snprintf(q, qlen, "COPY (SELECT %s FROM request_logs WHERE id > %lld AND id <= %lld) TO STDOUT",
             cols, min_id, max_id);
    PQclear(must(c, PQexec(c, q), PGRES_COPY_OUT, "COPY TO"));
    char *line;
    int len;
    while ((len = PQgetCopyData(c, &line, 0)) > 0) {
        if (n == cap) {
            cap *= 2;
            rows = realloc(rows, cap * sizeof(*rows));
            if (rows == NULL)
                die("out of memory", NULL);
        }
        rows[n++] = line;
    }
    PQclear(must(c, PQgetResult(c), PGRES_COMMAND_OK, "COPY TO end"));

    snprintf(q, qlen, "COPY request_logs (%s) FROM STDIN", cols);
    double t0 = now_s();
    for (size_t i = 0; i < n; i += (size_t)chunk) {
        PQclear(must(c, PQexec(c, q), PGRES_COPY_IN, "COPY FROM"));
        for (size_t j = i; j < n && j < i + (size_t)chunk; j++)
            if (PQputCopyData(c, rows[j], (int)strlen(rows[j])) != 1)
                die("COPY data", PQerrorMessage(c));
        if (PQputCopyEnd(c, NULL) != 1)
            die("COPY end", PQerrorMessage(c));
        PQclear(must(c, PQgetResult(c), PGRES_COMMAND_OK, "COPY FROM end"));
    }
    double secs = now_s() - t0;
    printf("rows=%zu seconds=%.3f rows_per_s=%.0f\n", n, secs, secs > 0 ? (double)n / secs : 0);
    for (size_t i = 0; i < n; i++)
        PQfreemem(rows[i]);
    free(rows);
    free(q);
    free(cols);
    PQfinish(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 9 && strcmp(argv[1], "ingest") == 0)
        return ingest(argv + 2);
    if (argc == 6 && strcmp(argv[1], "copy") == 0)
        return copy_anchor(argv + 2);
    fprintf(stderr, "usage: bench-logload ingest URL TOKEN DSN RECORDS BATCH CLIENTS PREFIX\n"
                    "       bench-logload copy DSN MIN_ID MAX_ID CHUNK\n");
    return 2;
}
