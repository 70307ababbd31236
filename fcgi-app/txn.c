/* Transactions, PostgreSQL error mapping, operation-log and outbox rows for every write. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

PGconn *tx_begin(struct req *r)
{
    PGconn *c = db_get(&r->w->db);
    if (c == NULL) {
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        return NULL;
    }
    PGresult *res = PQexec(c, "BEGIN");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        log_error("event=begin_failed error=\"%s\"", PQerrorMessage(c));
    PQclear(res);
    if (!ok) {
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        return NULL;
    }
    return c;
}

void tx_rollback(struct req *r, PGconn *c)
{
    if (c == NULL)
        return;
    PGresult *res = PQexec(c, "ROLLBACK");
    PQclear(res);
    db_check(&r->w->db);
}

int tx_commit(struct req *r, PGconn *c)
{
    PGresult *res = PQexec(c, "COMMIT");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        log_error("event=commit_failed error=\"%s\"", PQerrorMessage(c));
    PQclear(res);
    if (!ok) {
        db_check(&r->w->db);
        return reply_error(r, 503, "unavailable", NULL, "the change could not be committed");
    }
    wctx_nudge_background(r->w);
    return EZ_OK;
}

/* JSON name of the column a constraint name points at: "masters_name_key" -> "name". */
static const char *constraint_field(const struct resource *res, const char *cons, char *buf,
                                    size_t len)
{
    if (cons == NULL || res == NULL)
        return NULL;
    size_t tl = strlen(res->table);
    const char *p = cons;
    if (strncmp(p, res->table, tl) == 0 && p[tl] == '_')
        p += tl + 1;
    snprintf(buf, len, "%s", p);
    static const char *const suffixes[] = {"_key", "_fkey", "_check", "_idx", NULL};
    for (int i = 0; suffixes[i]; i++) {
        size_t bl = strlen(buf), sl = strlen(suffixes[i]);
        if (bl > sl && strcmp(buf + bl - sl, suffixes[i]) == 0) {
            buf[bl - sl] = '\0';
            break;
        }
    }
    for (int i = 0; i < res->nfields; i++) {
        const char *col = res->fields[i].col;
        if (col[0] == '"')
            col++;
        if (strncmp(col, buf, strlen(buf)) == 0 &&
            (col[strlen(buf)] == '\0' || col[strlen(buf)] == '"'))
            return res->fields[i].name;
    }
    return NULL;
}

/* Answers the client for a failed statement, mapping SQLSTATE classes; never echoes SQL. */
static void reply_pg_error(struct rctx *x, PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    char buf[128], field[160];
    const char *f = constraint_field(x->res, cons, buf, sizeof(buf));
    if (f)
        snprintf(field, sizeof(field), "%s%s", x->prefix ? x->prefix : "", f);
    const char *fld = f ? field : NULL;
    if (state && strcmp(state, "23505") == 0) {
        reply_error(x->r, 409, "conflict", fld, "%s already exists", f ? f : "a row like this");
    } else if (state && strcmp(state, "23503") == 0) {
        reply_error(x->r, 409, "conflict", fld, "the change breaks a reference (%s)",
                    cons ? cons : "foreign key");
    } else if (state && (strcmp(state, "23514") == 0 || strcmp(state, "23502") == 0 ||
                         strncmp(state, "22", 2) == 0)) {
        reply_error(x->r, 400, "invalid_argument", fld, "invalid value (%s)",
                    cons ? cons : "out of range");
    } else if (state && strcmp(state, "40001") == 0) {
        reply_error(x->r, 409, "conflict", NULL, "concurrent change, retry");
    } else {
        log_error("event=query_failed state=%s error=\"%s\"", state ? state : "-",
                  PQresultErrorMessage(res));
        db_check(&x->r->w->db);
        reply_error(x->r, 503, "unavailable", NULL, "database error");
    }
}

PGresult *db_exec(struct rctx *x, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(x->c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    reply_pg_error(x, res);
    PQclear(res);
    return NULL;
}

int audit_write(struct rctx *x, const char *action, const char *resource, int64_t id,
                const cJSON *changes)
{
    char actor[48], idtxt[24];
    if (x->r->auth == AUTH_MASTER)
        snprintf(actor, sizeof(actor), "master:%lld", (long long)x->r->master_id);
    else if (x->r->auth == AUTH_ADMIN)
        snprintf(actor, sizeof(actor), "admin");
    else
        snprintf(actor, sizeof(actor), "system");
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    char *ch = changes ? json_render(changes) : NULL;
    const char *params[7] = {
        actor, action, resource, id > 0 ? idtxt : "", x->r->request_id, x->r->client_ip, ch};
    PGresult *res = db_exec(
        x,
        "INSERT INTO operation_logs (actor, action, resource, resource_id, "
        "request_id, client_ip, changes) VALUES ($1,$2,$3,$4,$5,$6,coalesce($7::jsonb, '{}'))",
        7, params);
    free(ch);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    return EZ_OK;
}

int outbox_add_payload(struct rctx *x, const char *resource, int64_t id, const char *action,
                       const cJSON *payload)
{
    char idtxt[24];
    snprintf(idtxt, sizeof(idtxt), "%lld", (long long)id);
    char *pl = payload ? json_render(payload) : NULL;
    const char *params[4] = {resource, id > 0 ? idtxt : NULL, action, pl};
    PGresult *res = db_exec(x,
                            "INSERT INTO sync_outbox (resource, resource_id, action, payload) "
                            "VALUES ($1, $2::bigint, $3, coalesce($4::jsonb, '{}'))",
                            4, params);
    free(pl);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    return EZ_OK;
}

int outbox_add(struct rctx *x, const char *resource, int64_t id, const char *action)
{
    return outbox_add_payload(x, resource, id, action, NULL);
}
