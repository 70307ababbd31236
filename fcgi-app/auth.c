/* Admin bearer token, tenant master keys and the internal token, compared in constant time. */
#include "auth.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "wctx.h"

/* The token after "Bearer " (case-insensitive scheme), or NULL. Points into the env. */
static const char *bearer_token(const struct req *r)
{
    const char *h = req_env(r, "HTTP_AUTHORIZATION");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static int auth_admin(struct req *r)
{
    const char *want = r->w->cfg->admin_token;
    if (want[0] == '\0')
        return reply_error(r, 401, "unauthorized", NULL, "the admin API is disabled");
    const char *got = bearer_token(r);
    if (got == NULL || !ez_ct_streq(got, want))
        return reply_error(r, 401, "unauthorized", NULL, "missing or invalid admin token");
    r->auth = AUTH_ADMIN;
    return EZ_OK;
}

static int auth_internal(struct req *r)
{
    const struct ez_config *cfg = r->w->cfg;
    if (cfg->internal_token[0] == '\0') {
        if (cfg->internal_allow_anon) {
            r->auth = AUTH_INTERNAL;
            return EZ_OK;
        }
        return reply_error(r, 401, "unauthorized", NULL,
                           "internal API closed: no internal token configured");
    }
    const char *got = req_env(r, "HTTP_X_INTERNAL_TOKEN");
    if (got == NULL || !ez_ct_streq(got, cfg->internal_token))
        return reply_error(r, 401, "unauthorized", NULL, "missing or invalid internal token");
    r->auth = AUTH_INTERNAL;
    return EZ_OK;
}

/*
 * A master key is looked up by its SHA-256: the hash of whatever was sent is
 * compared by the index, so the plaintext is never compared byte by byte.
 */
static int auth_master(struct req *r)
{
    const char *tok = bearer_token(r);
    if (tok == NULL || strlen(tok) > 256)
        return reply_error(r, 401, "unauthorized", NULL, "missing or invalid master key");
    char hash[65];
    ez_sha256_hex(tok, strlen(tok), hash);
    PGconn *c = db_get(&r->w->db);
    if (c == NULL)
        return reply_error(r, 503, "unavailable", NULL, "database unavailable");
    const char *params[1] = {hash};
    PGresult *res = PQexecParams(c, "SELECT id, status FROM masters WHERE key_hash = $1", 1, NULL,
                                 params, NULL, NULL, 0);
    int rc = EZ_ERR;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("event=master_auth_query_failed error=\"%s\"", PQresultErrorMessage(res));
        db_check(&r->w->db);
        reply_error(r, 503, "unavailable", NULL, "database unavailable");
        goto out;
    }
    if (PQntuples(res) != 1) {
        reply_error(r, 401, "unauthorized", NULL, "missing or invalid master key");
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "active") != 0) {
        reply_error(r, 403, "forbidden", NULL, "master is suspended");
        goto out;
    }
    r->master_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    r->auth = AUTH_MASTER;
    rc = EZ_OK;
out:
    PQclear(res);
    return rc;
}

int auth_check(struct req *r, enum auth_kind kind)
{
    switch (kind) {
    case AUTH_NONE:
        return EZ_OK;
    case AUTH_ADMIN:
        return auth_admin(r);
    case AUTH_INTERNAL:
        return auth_internal(r);
    case AUTH_MASTER:
        return auth_master(r);
    }
    return reply_error(r, 401, "unauthorized", NULL, "unauthorized");
}
