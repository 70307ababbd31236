/* PostgreSQL connection slots that reconnect by themselves after the server comes back. */
#include "db.h"

#include <stdlib.h>
#include <string.h>
#include "log.h"

#define DB_RETRY_MS 500

void db_init(struct ez_db *db, const char *dsn)
{
    db->dsn = dsn;
    db->conn = NULL;
    db->last_attempt_ms = 0;
}

PGconn *db_get(struct ez_db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
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
        log_warn("event=pg_connect_failed error=\"%s\"", PQerrorMessage(c));
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

static int version_from(PGconn *conn, const char *sql)
{
    int v = -1;
    PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=schema_version_failed error=\"%s\"", PQresultErrorMessage(res));
        goto out;
    }
    v = PQgetisnull(res, 0, 0) ? 0 : atoi(PQgetvalue(res, 0, 0));
out:
    PQclear(res);
    return v;
}

int db_schema_version(PGconn *conn)
{
    return version_from(conn, "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 "
                              "ELSE (SELECT coalesce(max(version), 0) FROM schema_migrations) END");
}

int db_log_schema_version(PGconn *conn)
{
    return version_from(conn,
                        "SELECT CASE WHEN to_regclass('log_schema_migrations') IS NULL THEN 0 "
                        "ELSE (SELECT coalesce(max(version), 0) FROM log_schema_migrations) END");
}
