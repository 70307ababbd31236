/* Request-log record validation, normalisation and COPY rendering from one field table. */
#include "logrec.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "json.h"

enum lr_kind {
    K_REQUEST_ID, /* required text, 1..128 characters, no control characters */
    K_TIME,       /* RFC 3339 or unix seconds -> microseconds */
    K_ID,         /* integer 0..2^53-1 */
    K_INT4,       /* integer 0..2^31-1 (an SQL integer column) */
    K_BIGINT,     /* integer 0..2^53-1 (an SQL bigint column) */
    K_STATUS,     /* integer 100..599 */
    K_TEXT,       /* text of at most max characters, else refused */
    K_TEXT_TRUNC, /* text truncated to max characters */
    K_BOOL,
    K_IP, /* IPv4 or IPv6 address, canonical form */
};

struct lr_def {
    const char *name; /* JSON name and SQL column */
    enum lr_kind kind;
    int64_t max; /* characters for texts */
};

/* The table: order = enum logrec_field = COPY column order. */
static const struct lr_def defs[LOGREC_NFIELDS] = {
    [LR_REQUEST_ID] = {"request_id", K_REQUEST_ID, LOGREC_REQUEST_ID_MAX},
    [LR_CREATED_AT] = {"created_at", K_TIME, 0},
    [LR_MASTER_ID] = {"master_id", K_ID, 0},
    [LR_KEY_ID] = {"key_id", K_ID, 0},
    [LR_NAMESPACE] = {"namespace", K_TEXT, LOGREC_TEXT_MAX},
    [LR_MODEL] = {"model", K_TEXT, LOGREC_TEXT_MAX},
    [LR_UPSTREAM_MODEL] = {"upstream_model", K_TEXT, LOGREC_TEXT_MAX},
    [LR_PROVIDER_GROUP_ID] = {"provider_group_id", K_ID, 0},
    [LR_API_KEY_ID] = {"api_key_id", K_ID, 0},
    [LR_PROVIDER_TYPE] = {"provider_type", K_TEXT, LOGREC_TEXT_MAX},
    [LR_STATUS_CODE] = {"status_code", K_STATUS, 0},
    [LR_ERROR] = {"error", K_TEXT_TRUNC, LOGREC_ERROR_MAX},
    [LR_LATENCY_MS] = {"latency_ms", K_INT4, 0},
    [LR_TTFB_MS] = {"ttfb_ms", K_INT4, 0},
    [LR_PROMPT_TOKENS] = {"prompt_tokens", K_BIGINT, 0},
    [LR_COMPLETION_TOKENS] = {"completion_tokens", K_BIGINT, 0},
    [LR_TOTAL_TOKENS] = {"total_tokens", K_BIGINT, 0},
    [LR_STREAM] = {"stream", K_BOOL, 0},
    [LR_CLIENT_IP] = {"client_ip", K_IP, 0},
    [LR_USER_AGENT] = {"user_agent", K_TEXT, LOGREC_USER_AGENT_MAX},
};

const char *logrec_field_name(enum logrec_field f)
{
    return (f >= 0 && f < LOGREC_NFIELDS) ? defs[f].name : "";
}

/* ---- UTF-8 ---- */

size_t logrec_utf8_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

size_t logrec_utf8_prefix(const char *s, size_t max_chars)
{
    size_t chars = 0, i = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (; p[i]; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            if (chars == max_chars)
                break;
            chars++;
        }
    }
    return i;
}

/* ---- time ---- */

int logrec_parse_time(const char *s, int64_t *out_us)
{
    return ez_parse_time_us(s, out_us);
}

static void split_time(int64_t us, struct tm *tm, int64_t *frac)
{
    int64_t secs = us / 1000000;
    *frac = us % 1000000;
    if (*frac < 0) {
        *frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    gmtime_r(&t, tm);
}

void logrec_format_time(int64_t us, char *out, size_t outlen)
{
    struct tm tm;
    int64_t frac;
    split_time(us, &tm, &frac);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac == 0) {
        snprintf(out, outlen, "%sZ", base);
        return;
    }
    char f[8];
    snprintf(f, sizeof(f), "%06lld", (long long)frac);
    size_t fl = strlen(f);
    while (fl > 0 && f[fl - 1] == '0')
        f[--fl] = '\0';
    snprintf(out, outlen, "%s.%sZ", base, f);
}

void logrec_pg_time(int64_t us, char *out, size_t outlen)
{
    struct tm tm;
    int64_t frac;
    split_time(us, &tm, &frac);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%06lld+00", base, (long long)frac);
}

/* ---- validation ---- */

struct verr {
    char *field;
    size_t fieldlen;
    char *msg;
    size_t msglen;
};

static int EZ_PRINTF(3, 4) fail(struct verr *e, const char *field, const char *fmt, ...)
{
    if (e->field && e->fieldlen)
        snprintf(e->field, e->fieldlen, "%s", field);
    if (e->msg && e->msglen) {
        char tmp[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        snprintf(e->msg, e->msglen, "%s %s", field, tmp);
    }
    return EZ_ERR;
}

static int take_int(const struct lr_def *d, const cJSON *item, int64_t min, int64_t max,
                    struct logrec_val *v, struct verr *e)
{
    int64_t x;
    if (!json_int_in(item, min, max, &x))
        return fail(e, d->name, "must be an integer between %lld and %lld", (long long)min,
                    (long long)max);
    v->set = true;
    v->i = x;
    return EZ_OK;
}

static int take_time(const struct lr_def *d, const cJSON *item, struct logrec_val *v,
                     struct verr *e)
{
    int64_t us;
    if (cJSON_IsString(item)) {
        if (logrec_parse_time(item->valuestring, &us) != EZ_OK)
            return fail(e, d->name, "must be an RFC 3339 time or unix seconds");
    } else if (cJSON_IsNumber(item)) {
        double x = item->valuedouble;
        if (!isfinite(x) || x < 0 || x > (double)LOGREC_MAX_UNIX)
            return fail(e, d->name, "must be an RFC 3339 time or unix seconds");
        us = (int64_t)floor(x * 1e6 + 0.5);
    } else {
        return fail(e, d->name, "must be an RFC 3339 time or unix seconds");
    }
    v->set = true;
    v->i = us;
    return EZ_OK;
}

static int take_text(const struct lr_def *d, const cJSON *item, struct logrec_val *v,
                     struct verr *e)
{
    if (!cJSON_IsString(item))
        return fail(e, d->name, "must be a string");
    const char *s = item->valuestring;
    size_t chars = logrec_utf8_chars(s);
    if (d->kind == K_REQUEST_ID) {
        if (chars < 1 || chars > (size_t)d->max)
            return fail(e, d->name, "must be 1 to %lld characters", (long long)d->max);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
            if (*p < 0x20 || *p == 0x7f)
                return fail(e, d->name, "must not contain control characters");
    } else if (d->kind == K_TEXT && chars > (size_t)d->max) {
        return fail(e, d->name, "must be at most %lld characters", (long long)d->max);
    }
    size_t len = (d->kind == K_TEXT_TRUNC && chars > (size_t)d->max)
                     ? logrec_utf8_prefix(s, (size_t)d->max)
                     : strlen(s);
    v->set = true;
    v->s = ez_strndup(s, len);
    return EZ_OK;
}

static int take_ip(const struct lr_def *d, const cJSON *item, struct logrec_val *v, struct verr *e)
{
    unsigned char addr[16];
    char canon[INET6_ADDRSTRLEN];
    if (!cJSON_IsString(item))
        return fail(e, d->name, "must be a string");
    const char *s = item->valuestring;
    if (strlen(s) < INET6_ADDRSTRLEN && inet_pton(AF_INET, s, addr) == 1) {
        inet_ntop(AF_INET, addr, canon, sizeof(canon));
    } else if (strlen(s) < INET6_ADDRSTRLEN && inet_pton(AF_INET6, s, addr) == 1) {
        inet_ntop(AF_INET6, addr, canon, sizeof(canon));
    } else {
        return fail(e, d->name, "must be an IPv4 or IPv6 address");
    }
    v->set = true;
    v->s = ez_strdup(canon);
    return EZ_OK;
}

static int take_value(const struct lr_def *d, const cJSON *item, struct logrec_val *v,
                      struct verr *e)
{
    switch (d->kind) {
    case K_REQUEST_ID:
    case K_TEXT:
    case K_TEXT_TRUNC:
        return take_text(d, item, v, e);
    case K_TIME:
        return take_time(d, item, v, e);
    case K_ID:
    case K_BIGINT:
        return take_int(d, item, 0, JSON_MAX_SAFE_INT, v, e);
    case K_INT4:
        return take_int(d, item, 0, 2147483647, v, e);
    case K_STATUS:
        return take_int(d, item, 100, 599, v, e);
    case K_BOOL:
        if (!cJSON_IsBool(item))
            return fail(e, d->name, "must be a boolean");
        v->set = true;
        v->i = cJSON_IsTrue(item) ? 1 : 0;
        return EZ_OK;
    case K_IP:
        return take_ip(d, item, v, e);
    }
    return fail(e, d->name, "has an unknown type");
}

int logrec_from_json(const cJSON *obj, int64_t default_created_us, struct logrec *rec, char *field,
                     size_t fieldlen, char *msg, size_t msglen)
{
    struct verr e = {field, fieldlen, msg, msglen};
    memset(rec, 0, sizeof(*rec));
    if (!cJSON_IsObject(obj))
        return fail(&e, "", "a record must be a JSON object");
    for (int i = 0; i < LOGREC_NFIELDS; i++) {
        const struct lr_def *d = &defs[i];
        /* Case-sensitive: "Request_ID" is an unknown field, like any other. */
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, d->name);
        if (item == NULL || cJSON_IsNull(item)) {
            if (d->kind == K_REQUEST_ID)
                return fail(&e, d->name, "is required");
            continue;
        }
        if (take_value(d, item, &rec->v[i], &e) != EZ_OK)
            return EZ_ERR;
    }
    if (!rec->v[LR_CREATED_AT].set) {
        rec->v[LR_CREATED_AT].set = true;
        rec->v[LR_CREATED_AT].i = default_created_us;
    }
    return EZ_OK;
}

void logrec_free(struct logrec *rec)
{
    for (int i = 0; i < LOGREC_NFIELDS; i++) {
        free(rec->v[i].s);
        rec->v[i].s = NULL;
        rec->v[i].set = false;
    }
}

/* ---- output ---- */

cJSON *logrec_to_json(const struct logrec *rec)
{
    cJSON *o = cJSON_CreateObject();
    char t[48];
    for (int i = 0; i < LOGREC_NFIELDS; i++) {
        const struct logrec_val *v = &rec->v[i];
        const struct lr_def *d = &defs[i];
        if (!v->set)
            continue;
        switch (d->kind) {
        case K_REQUEST_ID:
        case K_TEXT:
        case K_TEXT_TRUNC:
        case K_IP:
            cJSON_AddStringToObject(o, d->name, v->s);
            break;
        case K_TIME:
            logrec_format_time(v->i, t, sizeof(t));
            cJSON_AddStringToObject(o, d->name, t);
            break;
        case K_BOOL:
            cJSON_AddBoolToObject(o, d->name, v->i != 0);
            break;
        case K_ID:
        case K_INT4:
        case K_BIGINT:
        case K_STATUS:
            cJSON_AddNumberToObject(o, d->name, (double)v->i);
            break;
        }
    }
    return o;
}

void logrec_copy_escape(buf_t *out, const char *s)
{
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *esc = NULL;
        switch (*p) {
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            continue;
        }
        buf_append(out, run, (size_t)(p - run));
        buf_append(out, esc, 2);
        run = p + 1;
    }
    buf_puts(out, run);
}

void logrec_copy_row(const struct logrec *rec, int64_t received_us, buf_t *out)
{
    char t[48];
    for (int i = 0; i < LOGREC_NFIELDS; i++) {
        const struct logrec_val *v = &rec->v[i];
        if (i > 0)
            buf_append(out, "\t", 1);
        if (!v->set) {
            buf_append(out, "\\N", 2);
            continue;
        }
        switch (defs[i].kind) {
        case K_REQUEST_ID:
        case K_TEXT:
        case K_TEXT_TRUNC:
        case K_IP:
            logrec_copy_escape(out, v->s);
            break;
        case K_TIME:
            logrec_pg_time(v->i, t, sizeof(t));
            buf_puts(out, t);
            break;
        case K_BOOL:
            buf_append(out, v->i ? "t" : "f", 1);
            break;
        case K_ID:
        case K_INT4:
        case K_BIGINT:
        case K_STATUS:
            buf_printf(out, "%lld", (long long)v->i);
            break;
        }
    }
    logrec_pg_time(received_us, t, sizeof(t));
    buf_printf(out, "\t%s\n", t);
}
