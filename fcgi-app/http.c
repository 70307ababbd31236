/* Request parsing (path, query, body) and response writing for the FastCGI worker. */
#include "http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "log.h"
#include "wctx.h"

const char *http_status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int http_percent_decode(char *s, bool plus_space)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (*p == '%') {
            int hi = hexval((unsigned char)p[1]);
            int lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);
            if (hi < 0 || lo < 0)
                return EZ_ERR;
            int c = hi * 16 + lo;
            if (c == 0)
                return EZ_ERR;
            *w++ = (char)c;
            p += 2;
        } else if (*p == '+' && plus_space) {
            *w++ = ' ';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return EZ_OK;
}

/*
 * Decodes the path, refuses encoded slashes and control bytes, collapses
 * repeated slashes, resolves "." and ".." and drops a trailing slash. Both
 * authentication and routing use this one result, so no spelling of a path
 * can reach a handler without the check its prefix requires.
 */
int http_normalize_path(const char *raw, char **out)
{
    size_t n = strcspn(raw, "?#");
    char *dec = ez_strndup(raw, n);
    /* An encoded slash would make one segment look like two after decoding. */
    if (strcasestr(dec, "%2f") || http_percent_decode(dec, false) != EZ_OK)
        goto bad;
    for (const char *p = dec; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\')
            goto bad;

    char *res = ez_malloc(strlen(dec) + 2);
    size_t len = 0;
    char *save = NULL;
    for (char *seg = strtok_r(dec, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (strcmp(seg, ".") == 0)
            continue;
        if (strcmp(seg, "..") == 0) {
            if (len == 0) {
                free(res);
                goto bad;
            }
            while (len > 0 && res[len - 1] != '/')
                len--;
            if (len > 0)
                len--; /* drop the slash too */
            continue;
        }
        res[len++] = '/';
        size_t sl = strlen(seg);
        memcpy(res + len, seg, sl);
        len += sl;
    }
    if (len == 0)
        res[len++] = '/';
    res[len] = '\0';
    free(dec);
    *out = res;
    return EZ_OK;
bad:
    free(dec);
    *out = NULL;
    return EZ_ERR;
}

static int parse_query(struct req *r, const char *qs)
{
    if (qs == NULL || *qs == '\0')
        return EZ_OK;
    char *copy = ez_strdup(qs);
    char *save = NULL;
    int rc = EZ_OK;
    for (char *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        if (r->nquery >= REQ_MAX_QUERY) {
            rc = EZ_ERR;
            break;
        }
        char *eq = strchr(pair, '=');
        char *val = eq ? eq + 1 : pair + strlen(pair);
        if (eq)
            *eq = '\0';
        char *k = ez_strdup(pair), *v = ez_strdup(val);
        if (http_percent_decode(k, true) != EZ_OK || http_percent_decode(v, true) != EZ_OK ||
            !ez_utf8_valid(k, strlen(k)) || !ez_utf8_valid(v, strlen(v))) {
            free(k);
            free(v);
            rc = EZ_ERR;
            break;
        }
        r->query[r->nquery].key = k;
        r->query[r->nquery].val = v;
        r->nquery++;
    }
    free(copy);
    return rc;
}

/* An incoming X-Request-ID is kept only when it is a sane token of <= 128 chars. */
static bool sane_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-_.:", *p))
            return false;
    return true;
}

static void set_request_id(struct req *r)
{
    const char *rid = req_env(r, "HTTP_X_REQUEST_ID");
    if (rid && sane_request_id(rid)) {
        snprintf(r->request_id, sizeof(r->request_id), "%s", rid);
        return;
    }
    unsigned char raw[16];
    static const char hex[] = "0123456789abcdef";
    uint64_t t = (uint64_t)ez_mono_us();
    /* Time-seeded fallback only when the OS refuses randomness: ids are not secrets. */
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(raw, 1, sizeof(raw), f) != sizeof(raw))
            log_debug("event=request_id_short_read");
        fclose(f);
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        r->request_id[2 * i] = hex[raw[i] >> 4];
        r->request_id[2 * i + 1] = hex[raw[i] & 15];
    }
    r->request_id[32] = '\0';
}

int req_init(struct req *r, FCGX_Request *fcgi, struct wctx *w)
{
    memset(r, 0, sizeof(*r));
    r->fcgi = fcgi;
    r->w = w;
    r->start_us = ez_mono_us();
    r->route_index = -1;
    buf_init(&r->extra_headers);
    r->method = req_env(r, "REQUEST_METHOD");
    if (r->method == NULL)
        r->method = "GET";
    set_request_id(r);
    ez_log_set_request_id(r->request_id);
    const char *ip = req_env(r, "REMOTE_ADDR");
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", ip ? ip : "");

    const char *uri = req_env(r, "REQUEST_URI");
    if (uri == NULL)
        uri = req_env(r, "DOCUMENT_URI");
    if (uri == NULL)
        uri = "/";
    if (http_normalize_path(uri, &r->path) != EZ_OK)
        return EZ_ERR;
    if (parse_query(r, req_env(r, "QUERY_STRING")) != EZ_OK)
        return EZ_ERR;
    return EZ_OK;
}

void req_finish(struct req *r)
{
    free(r->path);
    for (int i = 0; i < r->nquery; i++) {
        free(r->query[i].key);
        free(r->query[i].val);
    }
    for (int i = 0; i < r->nparams; i++)
        free(r->param_vals[i]);
    free(r->body);
    buf_free(&r->extra_headers);
    ez_log_set_request_id(NULL);
}

const char *req_env(const struct req *r, const char *name)
{
    return FCGX_GetParam(name, r->fcgi->envp);
}

const char *req_query(const struct req *r, const char *name)
{
    for (int i = 0; i < r->nquery; i++)
        if (strcmp(r->query[i].key, name) == 0)
            return r->query[i].val;
    return NULL;
}

const char *req_param(const struct req *r, const char *name)
{
    for (int i = 0; i < r->nparams; i++)
        if (strcmp(r->param_names[i], name) == 0)
            return r->param_vals[i];
    return NULL;
}

int req_read_body(struct req *r, int64_t limit)
{
    if (r->body)
        return EZ_OK;
    const char *cl = req_env(r, "CONTENT_LENGTH");
    int64_t want = 0;
    if (cl && *cl && ez_parse_int64(cl, 0, INT64_MAX, &want) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", NULL, "bad Content-Length");
    if (want > limit)
        return reply_error(r, 413, "payload_too_large", NULL, "request body exceeds %lld bytes",
                           (long long)limit);
    r->body = ez_malloc((size_t)want + 1);
    size_t got = 0;
    while (got < (size_t)want) {
        int n = FCGX_GetStr(r->body + got, (int)((size_t)want - got), r->fcgi->in);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    r->body[got] = '\0';
    r->body_len = got;
    if (got != (size_t)want)
        return reply_error(r, 400, "invalid_argument", NULL, "request body was cut short");
    return EZ_OK;
}

static bool content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

int req_json_object(struct req *r, cJSON **out)
{
    *out = NULL;
    if (req_read_body(r, r->body_limit ? r->body_limit : r->w->cfg->max_body_bytes) != EZ_OK)
        return EZ_ERR;
    if (r->body_len == 0)
        return reply_error(r, 400, "invalid_json", NULL, "a JSON object body is required");
    if (!content_type_is(req_env(r, "CONTENT_TYPE"), "application/json"))
        return reply_error(r, 415, "unsupported_media_type", NULL,
                           "Content-Type must be application/json");
    char err[128];
    cJSON *root = NULL;
    if (json_parse_strict(r->body, r->body_len, &root, err, sizeof(err)) != EZ_OK)
        return reply_error(r, 400, "invalid_json", NULL, "%s", err);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return reply_error(r, 400, "invalid_json", NULL, "the body must be a JSON object");
    }
    *out = root;
    return EZ_OK;
}

void reply_header(struct req *r, const char *name, const char *value)
{
    buf_printf(&r->extra_headers, "%s: %s\r\n", name, value);
}

/* CORS: an allowed Origin is echoed (or "*" when every origin is allowed). */
static void cors_headers(struct req *r, buf_t *h)
{
    const char *origin = req_env(r, "HTTP_ORIGIN");
    if (origin == NULL || *origin == '\0')
        return;
    const char *allow = r->w->cfg->cors_allow_origins;
    bool ok = false, any = false;
    char *copy = ez_strdup(allow), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t tl = strlen(tok);
        while (tl && tok[tl - 1] == ' ')
            tok[--tl] = '\0';
        if (strcmp(tok, "*") == 0)
            any = ok = true;
        else if (strcmp(tok, origin) == 0)
            ok = true;
    }
    free(copy);
    if (!ok)
        return;
    /* Origins are echoed only when listed, so no unchecked header text goes out. */
    buf_printf(h, "Access-Control-Allow-Origin: %s\r\n", any ? "*" : origin);
    if (!any)
        buf_puts(h, "Vary: Origin\r\n");
    buf_puts(h, "Access-Control-Allow-Headers: Authorization, Content-Type, X-Request-ID, "
                "X-Internal-Token\r\n"
                "Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n"
                "Access-Control-Expose-Headers: X-Request-ID\r\n"
                "Access-Control-Max-Age: 600\r\n");
}

void reply_raw(struct req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->responded) {
        log_error("event=double_response status=%d", status);
        return;
    }
    r->responded = true;
    r->status = status;
    buf_t h;
    buf_init(&h);
    buf_printf(&h, "Status: %d %s\r\nX-Request-ID: %s\r\n", status, http_status_text(status),
               r->request_id);
    if (content_type)
        buf_printf(&h, "Content-Type: %s\r\nContent-Length: %zu\r\n", content_type, len);
    buf_puts(&h, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    cors_headers(r, &h);
    if (r->extra_headers.len)
        buf_append(&h, r->extra_headers.data, r->extra_headers.len);
    buf_puts(&h, "\r\n");
    FCGX_PutStr(h.data, (int)h.len, r->fcgi->out);
    if (body && len)
        FCGX_PutStr(body, (int)len, r->fcgi->out);
    buf_free(&h);
}

void reply_json(struct req *r, int status, const cJSON *item)
{
    char *s = json_render(item);
    reply_raw(r, status, "application/json", s, strlen(s));
    free(s);
}

void reply_empty(struct req *r, int status)
{
    reply_raw(r, status, NULL, NULL, 0);
}

int reply_error(struct req *r, int status, const char *code, const char *field, const char *fmt,
                ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "code", code);
    cJSON_AddStringToObject(err, "message", msg);
    if (field)
        cJSON_AddStringToObject(err, "field", field);
    cJSON_AddStringToObject(err, "request_id", r->request_id);
    reply_json(r, status, root);
    cJSON_Delete(root);
    if (status >= 500)
        log_error("event=error_response status=%d code=%s msg=\"%s\"", status, code, msg);
    return EZ_ERR;
}
