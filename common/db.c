/* PostgreSQL connection slots that reconnect by themselves after the server comes back. */
#include "db.h"

#include <poll.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"

#define DB_RETRY_MS 500

void db_init(struct ez_db *db, const char *dsn)
{
    db->dsn = dsn;
    db->conn = NULL;
    db->last_attempt_ms = 0;
    db->quiet = false;
}

/*
 * An idle connection whose socket is readable has been told something: a
 * notification, or (after a server restart) a termination message and EOF.
 * Reading it here costs one poll() and spares the next query a failure.
 */
static bool idle_conn_alive(PGconn *c)
{
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return true;
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN, .revents = 0};
    if (poll(&p, 1, 0) <= 0)
        return true;
    if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK)
        return false;
    /* Only a notification is expected on an idle connection; anything else is the goodbye. */
    int notes = 0;
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
        PQfreemem(n);
        notes++;
    }
    return notes > 0;
}

PGconn *db_get(struct ez_db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK && idle_conn_alive(db->conn))
        return db->conn;
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    int64_t now = ez_now_ms();
    if (db->last_attempt_ms && now - db->last_attempt_ms < DB_RETRY_MS)
        return NULL;
    db->last_attempt_ms = now;

    /* connect_timeout bounds a request's wait while the server is unreachable. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {db->dsn, "3", "ezapi", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        /* PQerrorMessage never contains the password. */
        EZ_LOG_AT(db->quiet ? EZ_LOG_DEBUG : EZ_LOG_WARN, "event=pg_connect_failed error=\"%s\"",
                  PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    db->conn = c;
    db->last_attempt_ms = 0;
    return c;
}

void db_check(struct ez_db *db)
{
    if (db->conn && PQstatus(db->conn) != CONNECTION_OK) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
}

void db_close(struct ez_db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
}

/*
 * Highest version in the tracking table, 0 when the table does not exist.
 * Two statements: PostgreSQL resolves table names in a CASE branch even when
 * the branch is not taken, so one query cannot test and read at once.
 */
int db_command(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? EZ_OK : EZ_ERR;
    if (rc != EZ_OK)
        snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

static int version_from(PGconn *conn, const char *table)
{
    int v = -1;
    const char *params[1] = {table};
    PGresult *res =
        PQexecParams(conn, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=schema_version_failed error=\"%s\"", PQresultErrorMessage(res));
        goto out;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        v = 0;
        goto out;
    }
    PQclear(res);
    /* The table name is one of two constants below, never input. */
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT coalesce(max(version), 0) FROM %s", table);
    res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=schema_version_failed error=\"%s\"", PQresultErrorMessage(res));
        goto out;
    }
    v = atoi(PQgetvalue(res, 0, 0));
out:
    PQclear(res);
    return v;
}

int db_schema_version(PGconn *conn)
{
    return version_from(conn, "schema_migrations");
}

int db_log_schema_version(PGconn *conn)
{
    return version_from(conn, "log_schema_migrations");
}
