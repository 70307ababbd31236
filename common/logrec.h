/*
 * Request-log records (DATA.md "Request log"): one field table drives the
 * validation of incoming JSON, the normalised JSON the worker forwards, and
 * the COPY text row the background writes. Shared by ezapi-fcgi (POST
 * /internal/logs), ezapi-background (the log sink re-validates what it
 * receives) and the unit tests.
 */
#ifndef EZ_LOGREC_H
#define EZ_LOGREC_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

/* Most records in one POST /internal/logs. */
#define LOGREC_MAX_BATCH 10000
#define LOGREC_REQUEST_ID_MAX 128 /* characters */
#define LOGREC_ERROR_MAX 4096     /* characters; longer errors are truncated */
#define LOGREC_USER_AGENT_MAX 512 /* characters; longer is refused */
/* namespace, model, upstream_model, provider_type: DATA.md gives no bound; this one is ours. */
#define LOGREC_TEXT_MAX 256
/* Largest unix time accepted (9999-12-31T23:59:59Z), as ez_parse_time. */
#define LOGREC_MAX_UNIX EZ_MAX_UNIX

/*
 * Redis hash where ezapi-background publishes the log pipeline's counters
 * every second (expiring after 60 s); /internal/metrics reads it. Fields
 * are listed in docs/log-pipeline.md.
 */
#define LOGREC_METRICS_KEY "ezapi:metrics:background"

/* The fields, in table (and COPY column) order. */
enum logrec_field {
    LR_REQUEST_ID = 0,
    LR_CREATED_AT,
    LR_MASTER_ID,
    LR_KEY_ID,
    LR_NAMESPACE,
    LR_MODEL,
    LR_UPSTREAM_MODEL,
    LR_PROVIDER_GROUP_ID,
    LR_API_KEY_ID,
    LR_PROVIDER_TYPE,
    LR_STATUS_CODE,
    LR_ERROR,
    LR_LATENCY_MS,
    LR_TTFB_MS,
    LR_PROMPT_TOKENS,
    LR_COMPLETION_TOKENS,
    LR_TOTAL_TOKENS,
    LR_STREAM,
    LR_CLIENT_IP,
    LR_USER_AGENT,
    LOGREC_NFIELDS
};

/*
 * Columns of a COPY row from logrec_copy_row: the fields in table order,
 * then received_at. (test_logrec checks it against the table.)
 */
#define LOGREC_COPY_COLUMNS                                                                        \
    "request_id, created_at, master_id, key_id, namespace, model, upstream_model, "                \
    "provider_group_id, api_key_id, provider_type, status_code, error, latency_ms, ttfb_ms, "      \
    "prompt_tokens, completion_tokens, total_tokens, stream, client_ip, user_agent, received_at"

/* Columns in LOGREC_COPY_COLUMNS (tabs in a row + 1). */
#define LOGREC_COPY_NCOLS 21

/*
 * First word of the worker's wire payload: "EZROWS2 <received_ms> <expires_ms>
 * <records> <batch key> <host>\n" then the records' COPY rows
 * (docs/log-pipeline.md). The batch key is the first LOGREC_BATCH_KEY_HEX
 * hex digits of the SHA-256 of the request body: the background acknowledges
 * a body it spooled recently without storing it again. LOGREC_WIRE_MAGIC_V1
 * (no key) is still read, from workers of the previous release.
 */
#define LOGREC_WIRE_MAGIC "EZROWS2"
#define LOGREC_WIRE_MAGIC_V1 "EZROWS1"
#define LOGREC_BATCH_KEY_HEX 32

/* One value: set = false is SQL NULL / JSON absent. i holds ints, bools (0/1) and times (us). */
struct logrec_val {
    bool set;
    int64_t i;
    char *s; /* owned; text fields only */
};

struct logrec {
    struct logrec_val v[LOGREC_NFIELDS];
};

/* The JSON name (also the SQL column) of field f. */
const char *logrec_field_name(enum logrec_field f);

/*
 * Validates and normalises one record (a JSON object) into *rec, which the
 * caller later frees with logrec_free (also after a failure). Rules:
 * request_id required, 1..128 characters without control characters;
 * created_at optional (RFC 3339 string, unix seconds as a number or a
 * string of digits; absent or null = default_created_us); ids and counts
 * non-negative integers (latency_ms, ttfb_ms at most 2^31-1, the rest at
 * most 2^53-1); status_code 100..599; error truncated to 4096 characters;
 * user_agent at most 512; client_ip an IPv4/IPv6 address (stored in
 * canonical form); stream a boolean; null = absent; unknown fields ignored.
 * Returns 0, or -1 with the JSON name of the offending field in field ("" when the
 * record itself is wrong) and a message in msg.
 */
int logrec_from_json(const cJSON *obj, int64_t default_created_us, struct logrec *rec, char *field,
                     size_t fieldlen, char *msg, size_t msglen) EZ_MUSTCHECK;
void logrec_free(struct logrec *rec);

/* The normalised record as JSON (created_at as RFC 3339 with microseconds). Caller deletes. */
cJSON *logrec_to_json(const struct logrec *rec);

/*
 * Appends one COPY text-format row (tab separated, \N for NULL, backslash
 * escapes, ending in a newline) of the columns LOGREC_COPY_COLUMNS.
 */
void logrec_copy_row(const struct logrec *rec, int64_t received_us, buf_t *out);
/* Appends s escaped for COPY text format (backslash, newline, CR, tab). */
void logrec_copy_escape(buf_t *out, const char *s);

/*
 * Time: RFC 3339 ("2026-01-03T09:07:57.123456Z", offsets, up to 9 fraction
 * digits, microseconds kept) or unix seconds (digits only). 0 ok, -1 bad or
 * outside 1970..9999.
 */
int logrec_parse_time(const char *s, int64_t *out_us) EZ_MUSTCHECK;
/* RFC 3339 UTC with the fraction trimmed ("...:57Z", "...:57.5Z"). out >= 40 bytes. */
void logrec_format_time(int64_t us, char *out, size_t outlen);
/* PostgreSQL timestamptz literal "2026-01-03 09:07:57.123456+00". out >= 40 bytes. */
void logrec_pg_time(int64_t us, char *out, size_t outlen);

/* Characters (code points) of a valid UTF-8 string. */
size_t logrec_utf8_chars(const char *s);
/* Byte length of the first max_chars characters of a valid UTF-8 string. */
size_t logrec_utf8_prefix(const char *s, size_t max_chars);

#endif
