/* PostgreSQL connections that heal themselves, and small libpq helpers. */
#ifndef EZ_DB_H
#define EZ_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include "util.h"

/* One connection slot: the DSN it uses and the live connection (or NULL). */
struct ez_db {
    const char *dsn; /* borrowed from the config */
    PGconn *conn;
    int64_t last_attempt_ms; /* throttles reconnect attempts while the server is down */
    /*
     * Set by the owner while an outage it has already reported goes on:
     * db_get logs failed connection attempts at debug instead of warn.
     */
    bool quiet;
};

void db_init(struct ez_db *db, const char *dsn);
/*
 * Returns a usable connection, reconnecting when the previous one broke
 * (with a connect timeout of a few seconds, and at most one attempt per
 * 500 ms while the server stays down), or NULL when PostgreSQL is unreachable.
 */
PGconn *db_get(struct ez_db *db);
/* Call after a failed query: drops the connection if it is broken. */
void db_check(struct ez_db *db);
void db_close(struct ez_db *db);

/*
 * Runs a statement that takes no parameters (BEGIN, COMMIT, DDL whose
 * identifiers the caller made from constants and dates, never input). On
 * failure writes "<what>: <server message>" into err and returns -1.
 */
int db_command(PGconn *conn, const char *sql, const char *what, char *err,
               size_t errlen) EZ_MUSTCHECK;

/* Highest applied migration in schema_migrations, or -1 (error logged). */
int db_schema_version(PGconn *conn);
/* Same for the log DB's log_schema_migrations. */
int db_log_schema_version(PGconn *conn);

#endif
