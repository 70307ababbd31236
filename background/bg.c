/* The daemon's context: connections with once-per-outage logging, schema check, config reload. */
#include "bg.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "jobs.h"
#include "log.h"
#include "version.h"
#include "zmq_server.h"

void bg_ctx_init(struct bg_ctx *ctx, struct ez_config *cfg)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = cfg;
    db_init(&ctx->main_db, cfg->pg_dsn);
    db_init(&ctx->log_db, config_log_dsn(cfg));
    rds_init(&ctx->redis, cfg->redis_addr, cfg->redis_password, cfg->redis_db);
    if (gethostname(ctx->hostname, sizeof(ctx->hostname) - 1) != 0)
        snprintf(ctx->hostname, sizeof(ctx->hostname), "unknown");
    ctx->exit_code = BG_EXIT_OK;
}

void bg_ctx_free(struct bg_ctx *ctx)
{
    zmq_server_close(ctx);
    db_close(&ctx->main_db);
    db_close(&ctx->log_db);
    rds_close(&ctx->redis);
    if (ctx->cfg) {
        config_free(ctx->cfg);
        free(ctx->cfg);
        ctx->cfg = NULL;
    }
}

/* Verifies the main schema once, on the first live connection. 0 ok or retry later, -1 fatal. */
static int check_schema(struct bg_ctx *ctx, PGconn *conn)
{
    int v = db_schema_version(conn);
    if (v < 0) {
        /* Logged by db_schema_version. A lost connection: try again on the next use. */
        db_check(&ctx->main_db);
        if (ctx->main_db.conn == NULL)
            return EZ_OK;
        /*
         * The server answered but the version cannot be read (no
         * schema_migrations table, no permission): running against an
         * unknown schema is what this check exists to prevent.
         */
        log_error("event=schema_unknown required=%d "
                  "msg=\"cannot read the schema version: run scripts/migrate\"",
                  EZ_SCHEMA_VERSION);
        ctx->exit_code = BG_EXIT_SCHEMA;
        ctx->stop = true;
        return EZ_ERR;
    }
    if (v < EZ_SCHEMA_VERSION) {
        log_error("event=schema_behind schema_version=%d required=%d "
                  "msg=\"database schema is older than this build: run scripts/migrate\"",
                  v, EZ_SCHEMA_VERSION);
        ctx->exit_code = BG_EXIT_SCHEMA;
        ctx->stop = true;
        return EZ_ERR;
    }
    ctx->schema_checked = true;
    log_info("event=schema_ok schema_version=%d required=%d", v, EZ_SCHEMA_VERSION);
    return EZ_OK;
}

PGconn *bg_main_conn(struct bg_ctx *ctx)
{
    if (ctx->stop && ctx->exit_code == BG_EXIT_SCHEMA)
        return NULL;
    /* During an outage the jobs retry every few seconds: reported once here, retries at debug. */
    ctx->main_db.quiet = ctx->main_db_down;
    PGconn *conn = db_get(&ctx->main_db);

    if (conn == NULL) {
        if (!ctx->main_db_down) {
            log_warn("event=pg_unavailable db=main msg=\"retrying in the background; "
                     "further failures logged at debug\"");
            ctx->main_db_down = true;
        } else {
            log_debug("event=pg_unavailable db=main");
        }
        return NULL;
    }
    if (ctx->main_db_down) {
        log_info("event=pg_available db=main");
        ctx->main_db_down = false;
    }
    if (!ctx->schema_checked) {
        if (check_schema(ctx, conn) != EZ_OK)
            return NULL;
        if (!ctx->schema_checked)
            return NULL; /* could not read the version; the connection may be gone */
    }
    return conn;
}

redisContext *bg_redis(struct bg_ctx *ctx)
{
    ctx->redis.quiet = ctx->redis_down;
    redisContext *c = rds_get(&ctx->redis);

    if (c == NULL) {
        if (!ctx->redis_down) {
            log_warn("event=redis_unavailable addr=%s msg=\"retrying in the background; "
                     "further failures logged at debug\"",
                     ctx->cfg->redis_addr);
            ctx->redis_down = true;
        } else {
            log_debug("event=redis_unavailable addr=%s", ctx->cfg->redis_addr);
        }
        return NULL;
    }
    if (ctx->redis_down) {
        log_info("event=redis_available addr=%s", ctx->cfg->redis_addr);
        ctx->redis_down = false;
    }
    return c;
}

/* ---- configuration reload ---- */

/* Settings the running daemon cannot change: connections and sockets are built from them. */
static const struct {
    const char *env;
    size_t off;
} restart_strings[] = {
    {"EZ_PG_DSN", offsetof(struct ez_config, pg_dsn)},
    {"EZ_LOG_PG_DSN", offsetof(struct ez_config, log_pg_dsn)},
    {"EZ_REDIS_ADDR", offsetof(struct ez_config, redis_addr)},
    {"EZ_REDIS_PASSWORD", offsetof(struct ez_config, redis_password)},
    {"EZ_ZMQ_ENDPOINT", offsetof(struct ez_config, zmq_endpoint)},
    {"EZ_LOG_SPOOL_DIR", offsetof(struct ez_config, log_spool_dir)},
};

static char **str_field(struct ez_config *cfg, size_t off)
{
    return (char **)((char *)cfg + off);
}

/*
 * Keeps the running value of every restart-only setting in fresh. The
 * strings are swapped, not copied: the connection slots borrow the old
 * pointers, which thereby stay alive in the new struct, and config_free of
 * the old struct releases the unused new strings. Returns how many differed.
 */
static int keep_restart_settings(struct ez_config *old, struct ez_config *fresh)
{
    int differed = 0;
    for (size_t i = 0; i < EZ_ARRAY_LEN(restart_strings); i++) {
        char **o = str_field(old, restart_strings[i].off);
        char **f = str_field(fresh, restart_strings[i].off);
        if (strcmp(*o, *f) != 0) {
            log_warn("event=config_needs_restart key=%s msg=\"changed, keeps its start-up value "
                     "until ezapi-background restarts\"",
                     restart_strings[i].env);
            differed++;
        }
        char *tmp = *o;
        *o = *f;
        *f = tmp;
    }
    if (old->redis_db != fresh->redis_db) {
        log_warn("event=config_needs_restart key=EZ_REDIS_DB old=%d new=%d", old->redis_db,
                 fresh->redis_db);
        fresh->redis_db = old->redis_db;
        differed++;
    }
    if (old->max_body_bytes != fresh->max_body_bytes) {
        log_warn("event=config_needs_restart key=EZ_MAX_BODY_BYTES old=%lld new=%lld",
                 (long long)old->max_body_bytes, (long long)fresh->max_body_bytes);
        fresh->max_body_bytes = old->max_body_bytes;
        differed++;
    }
    return differed;
}

/* The value of `name` in a config_print dump, as a pointer into text, with its length. */
static const char *find_setting(const char *text, const char *name, size_t namelen, size_t *vlen)
{
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > namelen && strncmp(line, name, namelen) == 0 && line[namelen] == '=') {
            *vlen = len - namelen - 1;
            return line + namelen + 1;
        }
        line = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static int diff_one_way(const char *from, const char *to, bool report_same_name,
                        void (*fn)(const char *, const char *, const char *, void *), void *arg,
                        bool from_is_before)
{
    int n = 0;
    const char *line = from;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *eq = memchr(line, '=', len);
        if (eq) {
            size_t namelen = (size_t)(eq - line);
            size_t vlen = len - namelen - 1;
            size_t ovlen = 0;
            const char *other = find_setting(to, line, namelen, &ovlen);
            bool differs = other == NULL || ovlen != vlen || memcmp(other, eq + 1, vlen) != 0;
            /* Present on both sides: reported by the first pass only. */
            if (differs && (other == NULL || report_same_name)) {
                char *name = ez_strndup(line, namelen);
                char *mine = ez_strndup(eq + 1, vlen);
                char *theirs = other ? ez_strndup(other, ovlen) : NULL;
                if (from_is_before)
                    fn(name, mine, theirs, arg);
                else
                    fn(name, theirs, mine, arg);
                free(name);
                free(mine);
                free(theirs);
                n++;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return n;
}

int bg_config_diff(const char *before, const char *after,
                   void (*fn)(const char *name, const char *oldv, const char *newv, void *arg),
                   void *arg)
{
    /* Changed or removed settings, then settings that only exist after. */
    int n = diff_one_way(before, after, true, fn, arg, true);
    n += diff_one_way(after, before, false, fn, arg, false);
    return n;
}

static bool is_secret_name(const char *name)
{
    static const char *const marks[] = {"DSN", "PASSWORD", "TOKEN", "SECRET"};
    for (size_t i = 0; i < EZ_ARRAY_LEN(marks); i++)
        if (strstr(name, marks[i]))
            return true;
    return false;
}

static void log_change(const char *name, const char *oldv, const char *newv, void *arg)
{
    (void)arg;
    if (is_secret_name(name))
        log_info("event=config_changed key=%s", name);
    else
        log_info("event=config_changed key=%s old=\"%s\" new=\"%s\"", name, oldv ? oldv : "",
                 newv ? newv : "");
}

/* config_print into a string the caller frees. */
static char *config_dump(const struct ez_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return ez_strdup("");
    config_print(cfg, f);
    fclose(f);
    return text ? text : ez_strdup("");
}

int bg_reload_config(struct bg_ctx *ctx)
{
    char err[512] = "";
    struct ez_config *fresh = ez_calloc(1, sizeof(*fresh));
    struct ez_config *old = ctx->cfg;
    char *before = NULL;
    char *after = NULL;
    int changed = -1;

    log_info("event=config_reload");
    if (config_load(fresh, NULL, err, sizeof(err)) != EZ_OK) {
        log_error("event=config_reload_failed error=\"%s\" msg=\"keeping the running "
                  "configuration\"",
                  err);
        config_free(fresh);
        free(fresh);
        return EZ_ERR;
    }

    /*
     * What the reload did is logged at the more verbose of the old and new
     * levels, so that turning the level down to warn still records the change.
     */
    ez_log_min_level = old->log_level < fresh->log_level ? old->log_level : fresh->log_level;
    /* Dump before the swap below puts the file's restart-only values into old. */
    before = config_dump(old);
    keep_restart_settings(old, fresh);
    after = config_dump(fresh);
    changed = bg_config_diff(before, after, log_change, NULL);

    ctx->cfg = fresh;
    config_free(old);
    free(old);

    jobs_config_changed(fresh);
    log_info("event=config_reloaded changes=%d", changed);
    ez_log_min_level = fresh->log_level;

    free(before);
    free(after);
    return changed;
}
