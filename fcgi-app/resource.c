/* Table-driven CRUD, list and batch shared by every admin and tenant resource. */
#include "resource.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "json.h"
#include "log.h"
#include "wctx.h"

#define BATCH_MAX 1000
#define PAGE_SIZE_MAX 200

/* ---- values about to be written ---- */

void wvals_set(struct wvals *w, const char *col, enum ftype type, const char *text)
{
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->v[i].col, col) == 0) {
            free(w->v[i].text);
            w->v[i].text = text ? ez_strdup(text) : NULL;
            return;
        }
    }
    if (w->n >= WVAL_MAX) {
        log_error("event=wvals_overflow col=%s", col);
        abort(); /* a field table larger than WVAL_MAX is a programming error */
    }
    w->v[w->n].f = NULL;
    w->v[w->n].col = col;
    w->v[w->n].type = type;
    w->v[w->n].text = text ? ez_strdup(text) : NULL;
    w->n++;
}

const char *wvals_get(const struct wvals *w, const char *col, bool *present)
{
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->v[i].col, col) == 0) {
            if (present)
                *present = true;
            return w->v[i].text;
        }
    }
    if (present)
        *present = false;
    return NULL;
}

void wvals_free(struct wvals *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->v[i].text);
    w->n = 0;
}

/* ---- validation ---- */

int res_bad_field(struct rctx *x, const char *field, const char *msg, const char *detail)
{
    char name[160];
    snprintf(name, sizeof(name), "%s%s", x->prefix ? x->prefix : "", field);
    return reply_error(x->r, 400, "invalid_argument", name, "%s %s%s", name, msg,
                       detail ? detail : "");
}

static int bad(struct rctx *x, const struct field *f, const char *msg, const char *detail)
{
    return res_bad_field(x, f->name, msg, detail);
}

char *res_new_secret(struct req *r, const char *prefix, char hash[65], char *display, size_t dlen)
{
    char *s = ez_new_secret(prefix);
    if (s == NULL) {
        reply_error(r, 503, "unavailable", NULL, "no randomness available for a new secret");
        return NULL;
    }
    ez_sha256_hex(s, strlen(s), hash);
    /* Enough to tell keys apart in a list, far too little to use one. */
    snprintf(display, dlen, "%.7s\xe2\x80\xa6", s);
    return s;
}

static bool in_choices(const char *const *choices, const char *v)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0)
            return true;
    return false;
}

/* Checks one string against the field's length, choices and rule. */
static int check_string(struct rctx *x, const struct field *f, const char *s)
{
    size_t n = strlen(s);
    if ((int64_t)n < f->min || (f->max > 0 && (int64_t)n > f->max))
        return bad(x, f, "has a bad length", NULL);
    if (f->choices && !in_choices(f->choices, s))
        return bad(x, f, "is not one of the accepted values", NULL);
    if (f->check) {
        const char *msg = f->check(s);
        if (msg)
            return bad(x, f, "is invalid: ", msg);
    }
    return EZ_OK;
}

/* Validates one JSON value for field f and stores its text form in vals. */
static int take_value(struct rctx *x, const struct field *f, const cJSON *v, struct wvals *vals)
{
    char tmp[64];
    int64_t iv;
    switch (f->type) {
    case FT_TEXT:
        if (!cJSON_IsString(v))
            return bad(x, f, "must be a string", NULL);
        if (check_string(x, f, v->valuestring) != EZ_OK)
            return EZ_ERR;
        wvals_set(vals, f->col, f->type, v->valuestring);
        break;
    case FT_ID:
    case FT_INT:
        if (!json_int_in(v, f->type == FT_ID ? 1 : f->min,
                         f->type == FT_ID ? JSON_MAX_SAFE_INT : f->max, &iv)) {
            snprintf(tmp, sizeof(tmp), " (%lld..%lld)", (long long)(f->type == FT_ID ? 1 : f->min),
                     (long long)(f->type == FT_ID ? JSON_MAX_SAFE_INT : f->max));
            return bad(x, f, "must be a whole number in range", tmp);
        }
        snprintf(tmp, sizeof(tmp), "%lld", (long long)iv);
        wvals_set(vals, f->col, f->type, tmp);
        break;
    case FT_FLOAT:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < (double)f->min ||
            v->valuedouble > (double)f->max)
            return bad(x, f, "must be a number in range", NULL);
        snprintf(tmp, sizeof(tmp), "%.17g", v->valuedouble);
        wvals_set(vals, f->col, f->type, tmp);
        break;
    case FT_BOOL:
        if (!cJSON_IsBool(v))
            return bad(x, f, "must be true or false", NULL);
        wvals_set(vals, f->col, f->type, cJSON_IsTrue(v) ? "true" : "false");
        break;
    case FT_TIME: {
        int64_t t;
        if (!cJSON_IsString(v) || ez_parse_time(v->valuestring, &t) != EZ_OK)
            return bad(x, f, "must be an RFC 3339 time", NULL);
        char iso[40];
        ez_format_time(t, iso, sizeof(iso));
        wvals_set(vals, f->col, f->type, iso);
        break;
    }
    case FT_TEXTS: {
        if (!cJSON_IsArray(v))
            return bad(x, f, "must be a list of strings", NULL);
        if (cJSON_GetArraySize(v) > 1000)
            return bad(x, f, "has too many elements", NULL);
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            if (!cJSON_IsString(e))
                return bad(x, f, "must be a list of strings", NULL);
            if (check_string(x, f, e->valuestring) != EZ_OK)
                return EZ_ERR;
        }
        char *s = json_render(v);
        wvals_set(vals, f->col, f->type, s);
        free(s);
        break;
    }
    }
    /* Remember which field the value came from (audit and error messages). */
    for (int i = 0; i < vals->n; i++)
        if (strcmp(vals->v[i].col, f->col) == 0)
            vals->v[i].f = f;
    return EZ_OK;
}

/* Reads every writable field present in body into vals; answers 400 itself. */
static int collect(struct rctx *x, const cJSON *body, struct wvals *vals)
{
    const struct resource *res = x->res;
    for (int i = 0; i < res->nfields; i++) {
        const struct field *f = &res->fields[i];
        bool writable = (f->flags & F_WRITE) || (x->create && (f->flags & F_CREATE));
        if (!writable)
            continue; /* the allow-list: anything else in the body is ignored */
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, f->name);
        if (v == NULL) {
            if (x->create && (f->flags & F_REQ))
                return bad(x, f, "is required", NULL);
            continue;
        }
        if (cJSON_IsNull(v)) {
            if (!(f->flags & F_NULL))
                return bad(x, f, "may not be null", NULL);
            wvals_set(vals, f->col, f->type, NULL);
            vals->v[vals->n - 1].f = f;
            continue;
        }
        if (take_value(x, f, v, vals) != EZ_OK)
            return EZ_ERR;
    }
    return EZ_OK;
}

/* The audit record of a write: the accepted fields, secrets redacted. */
static cJSON *audit_changes(const struct wvals *vals, const cJSON *body)
{
    cJSON *ch = cJSON_CreateObject();
    for (int i = 0; i < vals->n; i++) {
        const struct field *f = vals->v[i].f;
        if (f == NULL)
            continue;
        if (f->flags & F_SECRET) {
            cJSON_AddStringToObject(ch, f->name, "[redacted]");
            continue;
        }
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, f->name);
        if (v)
            cJSON_AddItemToObject(ch, f->name, cJSON_Duplicate(v, 1));
    }
    return ch;
}

/* ---- SQL text from the tables (identifiers only; every value is a parameter) ---- */

static void placeholder(buf_t *b, enum ftype t, int n)
{
    switch (t) {
    case FT_TEXTS:
        buf_printf(b, "ARRAY(SELECT jsonb_array_elements_text($%d::jsonb))", n);
        break;
    case FT_TIME:
        buf_printf(b, "$%d::timestamptz", n);
        break;
    case FT_BOOL:
        buf_printf(b, "$%d::boolean", n);
        break;
    case FT_ID:
    case FT_INT:
        buf_printf(b, "$%d::bigint", n);
        break;
    case FT_FLOAT:
        buf_printf(b, "$%d::double precision", n);
        break;
    case FT_TEXT:
        buf_printf(b, "$%d", n);
        break;
    }
}

void res_select_cols(const struct resource *res, buf_t *out)
{
    bool first = true;
    for (int i = 0; i < res->nfields; i++) {
        const struct field *f = &res->fields[i];
        if (f->flags & F_HIDDEN)
            continue;
        if (!first)
            buf_puts(out, ", ");
        first = false;
        if (f->type == FT_TEXTS)
            buf_printf(out, "array_to_json(%s)::text", f->col);
        else if (f->type == FT_TIME)
            buf_printf(out, "floor(extract(epoch FROM %s))::bigint", f->col);
        else
            buf_puts(out, f->col);
    }
}

char *mask_secret(const char *s)
{
    size_t n = strlen(s);
    if (n <= 8)
        return ez_strdup("****");
    buf_t b;
    buf_init(&b);
    /* Enough to recognise a key, never enough to use it. */
    buf_printf(&b, "%.4s\xe2\x80\xa6%s", s, s + n - 4);
    return buf_steal(&b);
}

cJSON *res_render_row(const struct resource *res, PGresult *pg, int row)
{
    cJSON *o = cJSON_CreateObject();
    int col = 0;
    for (int i = 0; i < res->nfields; i++) {
        const struct field *f = &res->fields[i];
        if (f->flags & F_HIDDEN)
            continue;
        int c = col++;
        if (PQgetisnull(pg, row, c)) {
            cJSON_AddNullToObject(o, f->name);
            continue;
        }
        const char *v = PQgetvalue(pg, row, c);
        switch (f->type) {
        case FT_ID:
        case FT_INT:
            cJSON_AddNumberToObject(o, f->name, (double)strtoll(v, NULL, 10));
            break;
        case FT_FLOAT:
            cJSON_AddNumberToObject(o, f->name, strtod(v, NULL));
            break;
        case FT_BOOL:
            cJSON_AddBoolToObject(o, f->name, v[0] == 't');
            break;
        case FT_TIME: {
            char iso[40];
            ez_format_time(strtoll(v, NULL, 10), iso, sizeof(iso));
            cJSON_AddStringToObject(o, f->name, iso);
            break;
        }
        case FT_TEXTS: {
            cJSON *arr = cJSON_Parse(v);
            cJSON_AddItemToObject(o, f->name, arr ? arr : cJSON_CreateArray());
            break;
        }
        case FT_TEXT:
            if (f->flags & F_SECRET) {
                char *m = mask_secret(v);
                cJSON_AddStringToObject(o, f->name, m);
                free(m);
            } else {
                cJSON_AddStringToObject(o, f->name, v);
            }
            break;
        }
    }
    return o;
}

/*
 * res_fetch runs as a named prepared statement on each connection: a
 * primary-key read is the hottest admin query, and parsing, analysing and
 * planning it anew took about two thirds of PostgreSQL's time for it
 * (docs/bench.md). Each worker thread owns its connection, so the record of
 * what is prepared is thread-local; it belongs to one connection (pointer
 * and backend pid), so a reconnect starts empty and prepares again.
 * Statement names carry a hash of their text: a name that already exists
 * on the server holds the same SQL, so "already exists" counts as prepared.
 * Prepared statements survive a rolled-back transaction.
 */
#define FETCH_STMTS 32
#define SQLSTATE_NO_STATEMENT "26000"     /* invalid_sql_statement_name */
#define SQLSTATE_STATEMENT_EXISTS "42P05" /* duplicate_prepared_statement */

struct fetch_stmts {
    const PGconn *conn;
    int backend_pid;
    int n;
    char names[FETCH_STMTS][64];
};
static _Thread_local struct fetch_stmts fetch_stmts;

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static bool sqlstate_is(const PGresult *res, const char *code)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return st != NULL && strcmp(st, code) == 0;
}

/*
 * The prepared statement for sql on conn, preparing it on first use: true
 * with its name in name, false when it could not be prepared (the caller
 * runs the SQL unprepared, which reports any error itself).
 */
static bool fetch_prepared(PGconn *conn, const struct resource *res, const char *sql, int nparams,
                           char name[64])
{
    struct fetch_stmts *fs = &fetch_stmts;
    int pid = PQbackendPID(conn);
    if (fs->conn != conn || fs->backend_pid != pid) {
        fs->conn = conn;
        fs->backend_pid = pid;
        fs->n = 0;
    }
    snprintf(name, 64, "ez_fetch_%.32s_%08x", res->table, fnv1a(sql));
    for (int i = 0; i < fs->n; i++)
        if (strcmp(fs->names[i], name) == 0)
            return true;
    if (fs->n == FETCH_STMTS)
        return false; /* more distinct reads than expected: simply not prepared */
    PGresult *pr = PQprepare(conn, name, sql, nparams, NULL);
    bool ok = PQresultStatus(pr) == PGRES_COMMAND_OK || sqlstate_is(pr, SQLSTATE_STATEMENT_EXISTS);
    PQclear(pr);
    if (ok)
        snprintf(fs->names[fs->n++], sizeof(fs->names[0]), "%s", name);
    return ok;
}

/* Runs the fetch prepared (or unprepared, see fetch_prepared); the caller checks the result. */
static PGresult *fetch_exec(struct rctx *x, const char *sql, int n, const char *const *params)
{
    char name[64];
    if (!fetch_prepared(x->c, x->res, sql, n, name))
        return PQexecParams(x->c, sql, n, NULL, params, NULL, NULL, 0);
    PGresult *res = PQexecPrepared(x->c, name, n, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && sqlstate_is(res, SQLSTATE_NO_STATEMENT)) {
        /* Dropped behind our back (DISCARD ALL, a pooler): forget them all, prepare again later. */
        fetch_stmts.n = 0;
        if (PQtransactionStatus(x->c) == PQTRANS_IDLE) {
            PQclear(res);
            res = PQexecParams(x->c, sql, n, NULL, params, NULL, NULL, 0);
        }
    }
    return res;
}

/* SELECT <cols> FROM t WHERE id = $1 [AND scope = $2]; NULL when missing or failed. */
cJSON *res_fetch(struct rctx *x, int64_t id)
{
    buf_t sql;
    buf_init(&sql);
    buf_puts(&sql, "SELECT ");
    res_select_cols(x->res, &sql);
    buf_printf(&sql, " FROM %s WHERE id = $1", x->res->table);
    char idtxt[24], scope[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    snprintf(scope, sizeof(scope), "%lld", (long long)x->scope_master);
    const char *params[2] = {idtxt, scope};
    int n = 1;
    if (x->scope_master > 0 && x->res->scope_col) {
        buf_printf(&sql, " AND %s = $2", x->res->scope_col);
        n = 2;
    }
    cJSON *out = NULL;
    PGresult *res = fetch_exec(x, sql.data, n, params);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=fetch_failed table=%s error=\"%s\"", x->res->table,
                  PQresultErrorMessage(res));
        db_check(&x->r->w->db);
        goto out;
    }
    if (PQntuples(res) == 1)
        out = res_render_row(x->res, res, 0);
out:
    PQclear(res);
    buf_free(&sql);
    return out;
}

/* ---- one-row writes inside an open transaction ---- */

static int run_returning_id(struct rctx *x, buf_t *sql, const struct wvals *vals, int extra,
                            const char *const *extra_params, int64_t *id)
{
    const char *params[WVAL_MAX + 4];
    int n = 0;
    for (int i = 0; i < vals->n; i++)
        params[n++] = vals->v[i].text;
    for (int i = 0; i < extra; i++)
        params[n++] = extra_params[i];
    PGresult *res = db_exec(x, sql->data, n, params);
    if (res == NULL)
        return EZ_ERR;
    int rc = EZ_OK;
    if (PQntuples(res) != 1) {
        /* In a batch the prefix names the failing entry ("ids[3]"). */
        reply_error(x->r, 404, "not_found", x->prefix && x->prefix[0] ? x->prefix : NULL,
                    "%s not found", x->res->name);
        rc = EZ_ERR;
    } else {
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return rc;
}

/* The framework's outbox row for a change, carrying (and consuming) a hook's x->outbox_payload. */
static int outbox_row(struct rctx *x, int64_t id, const char *action)
{
    int rc = outbox_add_payload(x, x->res->outbox ? x->res->outbox : x->res->name, id, action,
                                x->outbox_payload);
    cJSON_Delete(x->outbox_payload);
    x->outbox_payload = NULL;
    return rc;
}

/* Validates item and inserts it; audit + outbox rows follow. Sets x->id. */
static int insert_one(struct rctx *x, const cJSON *item, const char *action)
{
    struct wvals vals = {.n = 0};
    buf_t sql;
    buf_init(&sql);
    cJSON *changes = NULL;
    int rc = EZ_ERR;
    x->create = true;
    x->id = 0;
    x->action = action;
    if (!cJSON_IsObject(item)) {
        reply_error(x->r, 400, "invalid_argument", x->prefix[0] ? x->prefix : NULL,
                    "each item must be an object");
        goto out;
    }
    if (collect(x, item, &vals) != EZ_OK)
        goto out;
    if (x->res->before_write && x->res->before_write(x, item, &vals) != EZ_OK)
        goto out;
    buf_printf(&sql, "INSERT INTO %s (", x->res->table);
    for (int i = 0; i < vals.n; i++)
        buf_printf(&sql, "%s%s", i ? ", " : "", vals.v[i].col);
    buf_puts(&sql, ") VALUES (");
    for (int i = 0; i < vals.n; i++) {
        if (i)
            buf_puts(&sql, ", ");
        placeholder(&sql, vals.v[i].type, i + 1);
    }
    buf_puts(&sql, ") RETURNING id");
    if (vals.n == 0) {
        buf_reset(&sql);
        buf_printf(&sql, "INSERT INTO %s DEFAULT VALUES RETURNING id", x->res->table);
    }
    if (run_returning_id(x, &sql, &vals, 0, NULL, &x->id) != EZ_OK)
        goto out;
    if (x->res->after_write && x->res->after_write(x, item) != EZ_OK)
        goto out;
    changes = audit_changes(&vals, item);
    if (audit_write(x, action, x->res->name, x->id, changes) != EZ_OK ||
        outbox_row(x, x->id, "upsert") != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    cJSON_Delete(changes);
    wvals_free(&vals);
    buf_free(&sql);
    return rc;
}

/* Partial update of row id from body; absent fields keep their value. */
static int update_one(struct rctx *x, int64_t id, const cJSON *body, const char *action)
{
    struct wvals vals = {.n = 0};
    buf_t sql;
    buf_init(&sql);
    cJSON *changes = NULL;
    int rc = EZ_ERR;
    x->create = false;
    x->id = id;
    x->action = action;
    if (collect(x, body, &vals) != EZ_OK)
        goto out;
    if (x->res->before_write && x->res->before_write(x, body, &vals) != EZ_OK)
        goto out;
    buf_printf(&sql, "UPDATE %s SET ", x->res->table);
    for (int i = 0; i < vals.n; i++) {
        buf_printf(&sql, "%s = ", vals.v[i].col);
        placeholder(&sql, vals.v[i].type, i + 1);
        buf_puts(&sql, ", ");
    }
    char idtxt[24], scope[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    snprintf(scope, sizeof(scope), "%lld", (long long)x->scope_master);
    const char *extra[2] = {idtxt, scope};
    int nextra = 1;
    buf_printf(&sql, "updated_at = now() WHERE id = $%d", vals.n + 1);
    if (x->scope_master > 0 && x->res->scope_col) {
        buf_printf(&sql, " AND %s = $%d", x->res->scope_col, vals.n + 2);
        nextra = 2;
    }
    buf_puts(&sql, " RETURNING id");
    int64_t got;
    if (run_returning_id(x, &sql, &vals, nextra, extra, &got) != EZ_OK)
        goto out;
    if (x->res->after_write && x->res->after_write(x, body) != EZ_OK)
        goto out;
    changes = audit_changes(&vals, body);
    if (audit_write(x, action, x->res->name, id, changes) != EZ_OK ||
        outbox_row(x, id, "upsert") != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    cJSON_Delete(changes);
    wvals_free(&vals);
    buf_free(&sql);
    return rc;
}

static int delete_one(struct rctx *x, int64_t id, const char *action)
{
    x->id = id;
    x->create = false;
    x->action = action;
    cJSON *row = res_fetch(x, id);
    if (row == NULL)
        return reply_error(x->r, 404, "not_found", x->prefix[0] ? x->prefix : NULL,
                           "%s %lld not found", x->res->name, (long long)id);
    cJSON_Delete(row);
    if (x->res->before_delete && x->res->before_delete(x) != EZ_OK)
        return EZ_ERR;
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    const char *params[1] = {idtxt};
    buf_t sql;
    buf_init(&sql);
    buf_printf(&sql, "DELETE FROM %s WHERE id = $1", x->res->table);
    PGresult *res = db_exec(x, sql.data, 1, params);
    buf_free(&sql);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    if (audit_write(x, action, x->res->name, id, NULL) != EZ_OK ||
        outbox_row(x, id, "delete") != EZ_OK)
        return EZ_ERR;
    return EZ_OK;
}

static int set_status_one(struct rctx *x, int64_t id, const char *status, const char *action)
{
    x->create = false;
    x->action = action;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "status", status);
    /* Status changes go through the same path as an update so hooks and audit apply. */
    const struct field *sf = NULL;
    for (int i = 0; i < x->res->nfields; i++)
        if (strcmp(x->res->fields[i].name, "status") == 0)
            sf = &x->res->fields[i];
    int rc = EZ_ERR;
    if (sf == NULL || sf->choices == NULL || !in_choices(sf->choices, status)) {
        reply_error(x->r, 400, "invalid_argument", "action", "action not supported here");
        goto out;
    }
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    const char *params[2] = {status, idtxt};
    buf_t sql;
    buf_init(&sql);
    buf_printf(&sql, "UPDATE %s SET status = $1, updated_at = now() WHERE id = $2 RETURNING id",
               x->res->table);
    int64_t got;
    struct wvals none = {.n = 0};
    (void)params;
    int r1 = run_returning_id(x, &sql, &none, 2, params, &got);
    buf_free(&sql);
    if (r1 != EZ_OK)
        goto out;
    x->id = id;
    if (x->res->after_write && x->res->after_write(x, body) != EZ_OK)
        goto out;
    if (audit_write(x, action, x->res->name, id, body) != EZ_OK ||
        outbox_row(x, id, "upsert") != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    cJSON_Delete(body);
    return rc;
}

/* ---- handlers ---- */

static void rctx_init(struct rctx *x, struct req *r, const struct resource *res, PGconn *c,
                      int64_t scope_master)
{
    memset(x, 0, sizeof(*x));
    x->r = r;
    x->c = c;
    x->res = res;
    x->prefix = "";
    x->scope_master = scope_master;
}

/* Sends the row (plus hook output such as a new secret) with status. */
static void reply_row(struct rctx *x, int status)
{
    cJSON *row = res_fetch(x, x->id);
    if (row == NULL) {
        reply_error(x->r, 503, "unavailable", NULL, "database error");
        return;
    }
    if (x->extra_out) {
        cJSON *e;
        cJSON_ArrayForEach(e, x->extra_out)
        {
            cJSON_DeleteItemFromObjectCaseSensitive(row, e->string);
            cJSON_AddItemToObject(row, e->string, cJSON_Duplicate(e, 1));
        }
    }
    reply_json(x->r, status, row);
    cJSON_Delete(row);
}

int res_get(struct req *r, const struct resource *res, int64_t id, int64_t scope_master)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    struct rctx x;
    rctx_init(&x, r, res, c, scope_master);
    cJSON *row = res_fetch(&x, id);
    if (row == NULL) {
        if (db_get(&r->w->db) == NULL)
            return reply_error(r, 503, "unavailable", NULL, "database unavailable");
        return reply_error(r, 404, "not_found", NULL, "%s %lld not found", res->name,
                           (long long)id);
    }
    reply_json(r, 200, row);
    cJSON_Delete(row);
    return EZ_OK;
}

/* One create (id 0) or partial update in its own transaction, answered with the row. */
static int write_single(struct req *r, const struct resource *res, int64_t id, int64_t scope_master)
{
    cJSON *body = NULL;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;
    PGconn *c = tx_begin(r);
    if (c == NULL) {
        cJSON_Delete(body);
        return EZ_ERR;
    }
    struct rctx x;
    rctx_init(&x, r, res, c, scope_master);
    int rc = id == 0 ? insert_one(&x, body, "create") : update_one(&x, id, body, "update");
    if (rc == EZ_OK)
        rc = tx_commit(r, c);
    else
        tx_rollback(r, c);
    if (rc == EZ_OK)
        reply_row(&x, id == 0 ? 201 : 200);
    cJSON_Delete(x.extra_out);
    cJSON_Delete(x.outbox_payload);
    cJSON_Delete(body);
    return rc;
}

int res_create(struct req *r, const struct resource *res, int64_t scope_master)
{
    return write_single(r, res, 0, scope_master);
}

int res_update(struct req *r, const struct resource *res, int64_t id, int64_t scope_master)
{
    return write_single(r, res, id, scope_master);
}

int res_delete(struct req *r, const struct resource *res, int64_t id, int64_t scope_master)
{
    PGconn *c = tx_begin(r);
    if (c == NULL)
        return EZ_ERR;
    struct rctx x;
    rctx_init(&x, r, res, c, scope_master);
    int rc = delete_one(&x, id, "delete");
    if (rc == EZ_OK)
        rc = tx_commit(r, c);
    else
        tx_rollback(r, c);
    if (rc == EZ_OK)
        reply_empty(r, 204);
    cJSON_Delete(x.extra_out);
    cJSON_Delete(x.outbox_payload);
    return rc;
}

/* ---- lists ---- */

int parse_paging(struct req *r, int64_t *page, int64_t *size)
{
    const char *p = req_query(r, "page"), *s = req_query(r, "page_size");
    *page = 1;
    *size = 20;
    if (p && ez_parse_int64(p, 1, 1000000, page) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", "page", "page must be 1..1000000");
    if (s && ez_parse_int64(s, 1, PAGE_SIZE_MAX, size) != EZ_OK)
        return reply_error(r, 400, "invalid_argument", "page_size", "page_size must be 1..%d",
                           PAGE_SIZE_MAX);
    return EZ_OK;
}

char *like_escape(const char *q)
{
    buf_t b;
    buf_init(&b);
    for (const char *p = q; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            buf_append(&b, "\\", 1);
        buf_append(&b, p, 1);
    }
    return buf_steal(&b);
}

static const struct field *field_named(const struct resource *res, const char *name)
{
    for (int i = 0; i < res->nfields; i++)
        if (strcmp(res->fields[i].name, name) == 0)
            return &res->fields[i];
    return NULL;
}

/* Builds the WHERE clause from q, status and the F_FILTER fields; answers 400 itself. */
static int list_where(struct req *r, const struct resource *res, int64_t scope_master, buf_t *where,
                      char **params, int *n)
{
    buf_puts(where, " WHERE true");
    if (scope_master > 0 && res->scope_col) {
        params[*n] = ez_malloc(24);
        snprintf(params[*n], 24, "%lld", (long long)scope_master);
        buf_printf(where, " AND %s = $%d", res->scope_col, ++*n);
    }
    const char *q = req_query(r, "q");
    const char *qcol = res->search_col;
    if (qcol == NULL && field_named(res, "name"))
        qcol = "name";
    if (q && *q && qcol) {
        params[*n] = like_escape(q);
        buf_printf(where, " AND %s ILIKE '%%' || $%d || '%%' ESCAPE '\\'", qcol, ++*n);
    }
    for (int i = 0; i < res->nfields; i++) {
        const struct field *f = &res->fields[i];
        bool is_status = strcmp(f->name, "status") == 0;
        if (!(f->flags & F_FILTER) && !is_status)
            continue;
        const char *v = req_query(r, f->name);
        if (v == NULL || *v == '\0')
            continue;
        int64_t iv;
        if (f->type == FT_ID || f->type == FT_INT) {
            if (ez_parse_int64(v, INT64_MIN, INT64_MAX, &iv) != EZ_OK)
                return reply_error(r, 400, "invalid_argument", f->name, "%s must be an integer",
                                   f->name);
        } else if (f->type == FT_BOOL) {
            if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
                return reply_error(r, 400, "invalid_argument", f->name, "%s must be true or false",
                                   f->name);
        } else if (f->choices && !in_choices(f->choices, v)) {
            return reply_error(r, 400, "invalid_argument", f->name,
                               "%s is not one of the accepted values", f->name);
        }
        params[*n] = ez_strdup(v);
        if (f->type == FT_TEXTS)
            buf_printf(where, " AND $%d = ANY(%s)", ++*n, f->col);
        else
            buf_printf(where, " AND %s = $%d%s", f->col, ++*n,
                       f->type == FT_BOOL ? "::boolean" : "");
    }
    return EZ_OK;
}

static int list_order(struct req *r, const struct resource *res, buf_t *order)
{
    const char *s = req_query(r, "sort");
    if (s == NULL || *s == '\0')
        s = res->default_sort ? res->default_sort : "id";
    bool desc = s[0] == '-';
    const char *name = desc ? s + 1 : s;
    const struct field *f = field_named(res, name);
    if (f == NULL || !(strcmp(name, "id") == 0 || (f->flags & F_SORT)))
        return reply_error(r, 400, "invalid_argument", "sort", "cannot sort by that field");
    buf_printf(order, " ORDER BY %s %s, id %s", f->col, desc ? "DESC" : "ASC",
               desc ? "DESC" : "ASC");
    return EZ_OK;
}

int res_list(struct req *r, const struct resource *res, int64_t scope_master)
{
    int64_t page, size;
    if (parse_paging(r, &page, &size) != EZ_OK)
        return EZ_ERR;
    char *params[REQ_MAX_QUERY + 4] = {0};
    int n = 0, rc = EZ_ERR;
    buf_t where, order, sql;
    buf_init(&where);
    buf_init(&order);
    buf_init(&sql);
    PGresult *rows = NULL, *cnt = NULL;
    cJSON *out = NULL;
    if (list_where(r, res, scope_master, &where, params, &n) != EZ_OK ||
        list_order(r, res, &order) != EZ_OK)
        goto out;
    PGconn *c = db_get(&r->w->db);
    if (c == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        goto out;
    }
    buf_puts(&sql, "SELECT ");
    res_select_cols(res, &sql);
    buf_printf(&sql, " FROM %s%s%s LIMIT %lld OFFSET %lld", res->table, where.data, order.data,
               (long long)size, (long long)((page - 1) * size));
    rows = PQexecParams(c, sql.data, n, NULL, (const char *const *)params, NULL, NULL, 0);
    buf_reset(&sql);
    buf_printf(&sql, "SELECT count(*) FROM %s%s", res->table, where.data);
    cnt = PQexecParams(c, sql.data, n, NULL, (const char *const *)params, NULL, NULL, 0);
    if (PQresultStatus(rows) != PGRES_TUPLES_OK || PQresultStatus(cnt) != PGRES_TUPLES_OK) {
        log_error("event=list_failed table=%s error=\"%s\"", res->table,
                  PQresultErrorMessage(PQresultStatus(rows) != PGRES_TUPLES_OK ? rows : cnt));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database error");
        goto out;
    }
    out = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    for (int i = 0; i < PQntuples(rows); i++)
        cJSON_AddItemToArray(items, res_render_row(res, rows, i));
    cJSON_AddNumberToObject(out, "total", (double)strtoll(PQgetvalue(cnt, 0, 0), NULL, 10));
    cJSON_AddNumberToObject(out, "page", (double)page);
    cJSON_AddNumberToObject(out, "page_size", (double)size);
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    for (int i = 0; i < n; i++)
        free(params[i]);
    PQclear(rows);
    PQclear(cnt);
    cJSON_Delete(out);
    buf_free(&where);
    buf_free(&order);
    buf_free(&sql);
    return rc;
}

/* ---- batch ---- */

/* Maps a batch status action to the status it sets, or NULL. */
static const char *status_for_action(const char *action, const char *const *acts,
                                     const char *const *vals)
{
    if (strcmp(action, "enable") == 0)
        return "active";
    if (strcmp(action, "disable") == 0)
        return "disabled";
    for (int i = 0; acts && acts[i]; i++)
        if (strcmp(acts[i], action) == 0)
            return vals[i];
    return NULL;
}

static int batch_run(struct rctx *x, const char *action, const cJSON *list, bool by_id,
                     const char *status, cJSON *items)
{
    char prefix[48], actname[48];
    snprintf(actname, sizeof(actname), "batch_%s", action);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        snprintf(prefix, sizeof(prefix), by_id ? "ids[%d]" : "items[%d].", k);
        x->prefix = prefix;
        int64_t id = 0;
        if (by_id && !json_int_in(e, 1, JSON_MAX_SAFE_INT, &id))
            return reply_error(x->r, 400, "invalid_argument", prefix,
                               "%s must be a positive integer", prefix);
        int rc;
        if (!by_id)
            rc = insert_one(x, e, actname);
        else if (status)
            rc = set_status_one(x, id, status, actname);
        else
            rc = delete_one(x, id, actname);
        if (rc != EZ_OK)
            return EZ_ERR;
        if (status || !by_id) {
            cJSON *row = res_fetch(x, x->id);
            if (row && x->extra_out) {
                cJSON *ex;
                cJSON_ArrayForEach(ex, x->extra_out)
                    cJSON_AddItemToObject(row, ex->string, cJSON_Duplicate(ex, 1));
            }
            cJSON_AddItemToArray(items, row ? row : cJSON_CreateNull());
        } else {
            cJSON_AddItemToArray(items, cJSON_CreateNumber((double)id));
        }
        cJSON_Delete(x->extra_out);
        x->extra_out = NULL;
        k++;
    }
    return EZ_OK;
}

int res_batch(struct req *r, const struct resource *res, const char *const *status_actions,
              const char *const *status_values)
{
    cJSON *body = NULL, *out = NULL;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;
    int rc = EZ_ERR;
    PGconn *c = NULL;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(body, "action");
    if (!cJSON_IsString(act)) {
        reply_error(r, 400, "invalid_argument", "action", "action is required");
        goto out;
    }
    const char *action = act->valuestring;
    bool create = strcmp(action, "create") == 0, del = strcmp(action, "delete") == 0;
    const char *status =
        create || del ? NULL : status_for_action(action, status_actions, status_values);
    if (!create && !del && status == NULL) {
        reply_error(r, 400, "invalid_argument", "action", "unknown batch action");
        goto out;
    }
    const char *listname = create ? "items" : "ids";
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, listname);
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    if (n < 1 || n > BATCH_MAX) {
        reply_error(r, 400, "invalid_argument", listname, "%s must be a list of 1..%d entries",
                    listname, BATCH_MAX);
        goto out;
    }
    c = tx_begin(r);
    if (c == NULL)
        goto out;
    struct rctx x;
    rctx_init(&x, r, res, c, 0);
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "action", action);
    cJSON_AddNumberToObject(out, "count", n);
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    if (batch_run(&x, action, list, !create, status, items) != EZ_OK) {
        cJSON_Delete(x.extra_out);
        cJSON_Delete(x.outbox_payload);
        tx_rollback(r, c);
        goto out;
    }
    if (tx_commit(r, c) != EZ_OK)
        goto out;
    reply_json(r, 200, out);
    rc = EZ_OK;
out:
    cJSON_Delete(out);
    cJSON_Delete(body);
    return rc;
}
