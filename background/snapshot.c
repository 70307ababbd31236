/*
 * Snapshot publisher: PostgreSQL rows -> the Redis keys of REDIS.md. The full
 * rebuild (the "snapshot" job, at start-up, every EZ_SYNC_RECONCILE_SECONDS
 * and whenever Redis lost config:version) and the incremental publish the
 * outbox job asks for share the SQL and the shape builders
 * (common/snapshot_shapes.c). Redis commands are pipelined. See docs/snapshots.md.
 */
#include "snapshot.h"

#include <cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"
#include "models_dev.h"
#include "selector.h"
#include "snapshot_shapes.h"

/* Commands appended before their replies are read. */
#define PIPE_CHUNK 1000
/* Field/value pairs per HSET while filling a temporary hash. */
#define HSET_PAIRS 500
/* Keys per SCAN step when reconciling auth:token:* and auth:master:*. */
#define SCAN_COUNT "1000"

#define TOKEN_PREFIX "auth:token:"
#define MASTER_PREFIX "auth:master:"
#define TMP_PREFIX "ezapi:tmp:"
#define REFRESH_CHANNEL "dp:config:refresh"

/* ---- resources ------------------------------------------------------------ */

enum {
    R_TOKENS = 1 << 0,
    R_MASTERS = 1 << 1,
    R_PROVIDERS = 1 << 2,
    R_BINDINGS = 1 << 3,
    R_MODELS = 1 << 4,
    R_FEATURES = 1 << 5,
    R_ALL = (1 << 6) - 1
};

/*
 * Per resource bit (in the order of ez_snapshot_resources, which names the
 * config:version field): the key the dp:config:refresh message names.
 */
static const struct {
    int bit;
    const char *active_key;
} resources[EZ_SNAPSHOT_NRESOURCES] = {
    {R_TOKENS, TOKEN_PREFIX "*"},      {R_MASTERS, MASTER_PREFIX "*"},
    {R_PROVIDERS, "config:providers"}, {R_BINDINGS, "config:bindings"},
    {R_MODELS, "meta:models"},         {R_FEATURES, "config:features"},
};

/* Process state (the daemon is single-threaded). */
static bool rebuild_ok_once; /* a full rebuild succeeded since start-up */
static bool rebuild_owed;    /* the last one failed (or could not run) */
static bool rebuild_asked;   /* an outbox row "all" asked for one */
static bool marker_lost;     /* an incremental publish found config:version gone */
static int64_t last_version; /* highest version this process issued */

/* ---- sets ----------------------------------------------------------------- */

void snap_ids_add(struct snap_ids *s, int64_t id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = ez_realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = id;
}

void snap_strs_add(struct snap_strs *s, const char *str)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = ez_realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = ez_strdup(str);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void ids_unique(struct snap_ids *s)
{
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(*s->v), cmp_id);
    size_t o = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] != s->v[o - 1])
            s->v[o++] = s->v[i];
    s->n = o;
}

static void strs_unique(struct snap_strs *s)
{
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    size_t o = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[o - 1]) != 0)
            s->v[o++] = s->v[i];
        else
            free(s->v[i]);
    }
    s->n = o;
}

static bool ids_has(const struct snap_ids *s, int64_t id)
{
    return s->n && bsearch(&id, s->v, s->n, sizeof(*s->v), cmp_id) != NULL;
}

static bool strs_has(const struct snap_strs *s, const char *str)
{
    return s->n && bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str) != NULL;
}

static void ids_free(struct snap_ids *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static void strs_free(struct snap_strs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

void snap_work_init(struct snap_work *w)
{
    memset(w, 0, sizeof(*w));
}

void snap_work_free(struct snap_work *w)
{
    ids_free(&w->keys);
    ids_free(&w->key_masters);
    strs_free(&w->del_tokens);
    ids_free(&w->masters);
    ids_free(&w->api_keys);
    ids_free(&w->groups);
    ids_free(&w->binding_groups);
    strs_free(&w->binding_keys);
    strs_free(&w->model_names);
    ids_free(&w->bindings);
    ids_free(&w->models);
    w->features = false;
}

bool snap_work_empty(const struct snap_work *w)
{
    return !w->keys.n && !w->key_masters.n && !w->del_tokens.n && !w->masters.n && !w->api_keys.n &&
           !w->groups.n && !w->binding_groups.n && !w->binding_keys.n && !w->model_names.n &&
           !w->bindings.n && !w->models.n && !w->features;
}

/* PostgreSQL array literals for ANY($1::bigint[]) / ANY($1::text[]). The caller frees. */
static char *ids_literal(const struct snap_ids *s)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{");
    for (size_t i = 0; i < s->n; i++)
        buf_printf(&b, "%s%lld", i ? "," : "", (long long)s->v[i]);
    buf_puts(&b, "}");
    return buf_steal(&b);
}

static char *strs_literal(const struct snap_strs *s)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{");
    for (size_t i = 0; i < s->n; i++) {
        buf_puts(&b, i ? ",\"" : "\"");
        for (const char *p = s->v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_append(&b, "\\", 1);
            buf_append(&b, p, 1);
        }
        buf_puts(&b, "\"");
    }
    buf_puts(&b, "}");
    return buf_steal(&b);
}

/* A token hash as stored: 64 lowercase hex digits (payloads are checked before a DEL). */
static bool is_token_hash(const char *h)
{
    size_t n = 0;
    for (; h[n]; n++)
        if (!isxdigit((unsigned char)h[n]) || isupper((unsigned char)h[n]))
            return false;
    return n == 64;
}

/* ---- PostgreSQL ----------------------------------------------------------- */

/* Runs sql with up to three text parameters; NULL on error (reason in err). */
static PGresult *query3(PGconn *conn, const char *what, const char *sql, int nparams,
                        const char *const params[3], char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    PQclear(res);
    return NULL;
}

static PGresult *query(PGconn *conn, const char *what, const char *sql, int nparams, const char *p1,
                       const char *p2, char *err, size_t errlen)
{
    const char *params[3] = {p1, p2, NULL};
    return query3(conn, what, sql, nparams, params, err, errlen);
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool col_bool(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col)[0] == 't';
}

static const char *col_str(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col); /* "" for NULL */
}

/* Child keys with what they inherit from their master (shape_key). */
static const char tokens_sql[] =
    "SELECT k.id, k.master_id, k.name, k.\"group\", k.status, "
    "array_to_json(k.scopes)::text, array_to_json(k.namespaces)::text, "
    "k.model_limits_enabled, array_to_json(k.model_limits)::text, "
    "array_to_json(k.allow_ips)::text, "
    "COALESCE(floor(extract(epoch FROM k.expires_at))::bigint, 0), k.quota_limit, k.quota_used, "
    "COALESCE(floor(extract(epoch FROM k.quota_reset_at))::bigint, 0), "
    "m.\"group\", m.status, array_to_json(m.namespaces)::text, m.default_namespace, "
    "k.token_hash, COALESCE(k.prev_token_hash, ''), "
    "COALESCE(floor(extract(epoch FROM k.prev_token_expires_at))::bigint, 0) "
    "FROM keys k JOIN masters m ON m.id = k.master_id";
/*
 * Incremental: the keys named, the keys of the masters named, and whichever
 * key holds a hash a payload asks to delete (a re-imported token must stay,
 * even when its deletion row is retried after the import was published).
 */
static const char tokens_where[] =
    " WHERE k.id = ANY($1::bigint[]) OR k.master_id = ANY($2::bigint[]) "
    "OR k.token_hash = ANY($3::text[]) OR k.prev_token_hash = ANY($3::text[])";

static const char masters_sql[] =
    "SELECT id, name, \"group\", status, epoch, global_qps, array_to_json(namespaces)::text, "
    "default_namespace FROM masters";
static const char masters_where[] = " WHERE id = ANY($1::bigint[])";

static const char providers_sql[] =
    "SELECT a.id, a.api_key, a.weight, a.status, a.auto_ban, "
    "COALESCE(floor(extract(epoch FROM a.ban_until))::bigint, 0), "
    "g.id, g.name, g.type, g.base_url, g.google_project, g.google_location, "
    "array_to_json(g.models)::text, g.\"group\", g.status "
    "FROM api_keys a JOIN provider_groups g ON g.id = a.group_id";
static const char providers_where[] = " WHERE a.id = ANY($1::bigint[])";

/*
 * Candidates: active bindings of active provider groups, with the group's
 * models and active API keys, ordered by binding key then group. updated_at
 * is the newest change among the binding, its group and the group's active keys.
 */
static const char bindings_sql[] =
    "WITH ak AS (SELECT group_id, array_agg(id ORDER BY id)::text AS ids, "
    "max(updated_at) AS updated_at FROM api_keys WHERE status = 'active' GROUP BY group_id) "
    "SELECT b.namespace, b.public_model, b.group_id, g.\"group\", b.weight, b.selector_type, "
    "b.selector_value, array_to_json(g.models)::text, COALESCE(ak.ids, '{}'), "
    "floor(extract(epoch FROM greatest(b.updated_at, g.updated_at, ak.updated_at)))::bigint "
    "FROM bindings b JOIN provider_groups g ON g.id = b.group_id "
    "LEFT JOIN ak ON ak.group_id = b.group_id "
    "WHERE b.status = 'active' AND g.status = 'active'";
static const char bindings_where[] =
    " AND (b.namespace, b.public_model) IN (SELECT split_part(k, '.', 1), "
    "substr(k, strpos(k, '.') + 1) FROM unnest($1::text[]) AS k)";
static const char bindings_order[] =
    " ORDER BY b.namespace COLLATE \"C\", b.public_model COLLATE \"C\", b.group_id";

static const char models_sql[] =
    "SELECT name, kind, context_window, cost_per_token, supports_vision, supports_functions, "
    "supports_tool_choice, supports_fim, supports_stream, max_output_tokens FROM models";
static const char models_where[] = " WHERE name = ANY($1::text[])";

static const char features_sql[] = "SELECT name, value FROM features ORDER BY name COLLATE \"C\"";

static const char registry_sql[] = "SELECT source, version FROM model_registry_state WHERE id = 1";

/* Registry entries (model_registry job) by upstream model id: the third step of the precedence. */
static const char registry_models_sql[] = "SELECT name, data::text FROM model_registry_models";
static const char registry_models_where[] = " WHERE name = ANY($1::text[])";

/* sql + where (+ tail) as one statement text; the caller frees. Only constant pieces. */
static char *sql_join(const char *a, const char *b, const char *c)
{
    buf_t s;
    buf_init(&s);
    buf_puts(&s, a);
    if (b)
        buf_puts(&s, b);
    if (c)
        buf_puts(&s, c);
    return buf_steal(&s);
}

/* ---- Redis pipeline ------------------------------------------------------- */

struct pipe {
    redisContext *c;
    size_t pending; /* commands sent whose replies are not read yet */
    size_t total;
    bool failed;
    char err[256];
};

static void pipe_init(struct pipe *p, redisContext *c)
{
    memset(p, 0, sizeof(*p));
    p->c = c;
}

static void pipe_fail(struct pipe *p, const char *msg)
{
    if (!p->failed)
        snprintf(p->err, sizeof(p->err), "redis: %s", msg ? msg : "unknown error");
    p->failed = true;
}

/* The first error in a reply (EXEC answers an array with one reply per command). */
static const char *reply_error(const redisReply *r)
{
    if (r == NULL)
        return "no reply";
    if (r->type == REDIS_REPLY_ERROR)
        return r->str;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            const char *e = reply_error(r->element[i]);
            if (e)
                return e;
        }
    return NULL;
}

/* Reads every pending reply, recording the first error. */
static void pipe_drain(struct pipe *p)
{
    while (p->pending > 0) {
        redisReply *r = NULL;
        if (redisGetReply(p->c, (void **)&r) != REDIS_OK) {
            pipe_fail(p, p->c->errstr);
            p->pending = 0; /* the context is dead: those replies will never come */
            return;
        }
        p->pending--;
        const char *e = reply_error(r);
        if (e)
            pipe_fail(p, e);
        freeReplyObject(r);
    }
}

static bool pipe_dead(struct pipe *p)
{
    if (p->c->err) {
        pipe_fail(p, p->c->errstr);
        return true;
    }
    return false;
}

static void pipe_sent(struct pipe *p)
{
    p->pending++;
    p->total++;
    if (p->pending >= PIPE_CHUNK)
        pipe_drain(p);
}

static void pipe_argv(struct pipe *p, int argc, const char **argv, const size_t *lens)
{
    if (pipe_dead(p))
        return;
    if (redisAppendCommandArgv(p->c, argc, argv, lens) != REDIS_OK) {
        pipe_fail(p, p->c->errstr);
        return;
    }
    pipe_sent(p);
}

/* A command from a constant format; every variable part goes through %s / %b. */
static void pipe_cmd(struct pipe *p, const char *fmt, ...)
{
    va_list ap;
    if (pipe_dead(p))
        return;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(p->c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        pipe_fail(p, p->c->errstr);
        return;
    }
    pipe_sent(p);
}

/* An argument vector for redisAppendCommandArgv (strings borrowed). */
struct args {
    int n, cap;
    const char **v;
    size_t *len;
};

static void args_add(struct args *a, const char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->v = ez_realloc(a->v, (size_t)a->cap * sizeof(*a->v));
        a->len = ez_realloc(a->len, (size_t)a->cap * sizeof(*a->len));
    }
    a->v[a->n] = s;
    a->len[a->n] = strlen(s);
    a->n++;
}

static void args_free(struct args *a)
{
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* HSET key <fields> as one command; EXPIREAT key at when at > 0. */
static void pipe_hset_fields(struct pipe *p, const char *key, const struct shape_fields *f,
                             int64_t expire_at)
{
    struct args a = {0};
    args_add(&a, "HSET");
    args_add(&a, key);
    for (size_t i = 0; i < f->n; i++) {
        args_add(&a, f->name[i]);
        args_add(&a, f->value[i]);
    }
    pipe_argv(p, a.n, a.v, a.len);
    args_free(&a);
    if (expire_at > 0) {
        char at[24];
        snprintf(at, sizeof(at), "%lld", (long long)expire_at);
        pipe_cmd(p, "EXPIREAT %s %s", key, at);
    }
}

/*
 * Fills a whole hash for a rebuild: pairs go to TMP_PREFIX<key> in HSETs of
 * HSET_PAIRS; hw_commit swaps it in with MULTI { UNLINK key; RENAME tmp key }
 * so that readers see the old or the new hash, never none or half of one.
 */
struct hwriter {
    struct pipe *p;
    char key[64];
    char tmp[80];
    struct args a;
    char **owned;
    size_t nowned, capowned;
    size_t fields;
};

static void hw_begin(struct hwriter *w, struct pipe *p, const char *key)
{
    memset(w, 0, sizeof(*w));
    w->p = p;
    snprintf(w->key, sizeof(w->key), "%s", key);
    snprintf(w->tmp, sizeof(w->tmp), TMP_PREFIX "%s", key);
    /* A rebuild that died half-way may have left it. */
    pipe_cmd(p, "UNLINK %s", w->tmp);
}

static void hw_flush(struct hwriter *w)
{
    if (w->a.n > 2)
        pipe_argv(w->p, w->a.n, w->a.v, w->a.len);
    for (size_t i = 0; i < w->nowned; i++)
        free(w->owned[i]);
    w->nowned = 0;
    w->a.n = 0;
}

static void hw_own(struct hwriter *w, char *s)
{
    if (w->nowned == w->capowned) {
        w->capowned = w->capowned ? w->capowned * 2 : 2 * HSET_PAIRS + 2;
        w->owned = ez_realloc(w->owned, w->capowned * sizeof(*w->owned));
    }
    w->owned[w->nowned++] = s;
    args_add(&w->a, s);
}

/* Adds field=value (both copied). */
static void hw_add(struct hwriter *w, const char *field, const char *value)
{
    if (w->a.n == 0) {
        args_add(&w->a, "HSET");
        args_add(&w->a, w->tmp);
    }
    hw_own(w, ez_strdup(field));
    hw_own(w, ez_strdup(value));
    w->fields++;
    if ((w->a.n - 2) / 2 >= HSET_PAIRS)
        hw_flush(w);
}

static void hw_commit(struct hwriter *w)
{
    hw_flush(w);
    if (w->fields == 0) {
        /* RENAME needs an existing source: an empty hash is no key at all. */
        pipe_cmd(w->p, "UNLINK %s", w->key);
    } else {
        pipe_cmd(w->p, "MULTI");
        pipe_cmd(w->p, "UNLINK %s", w->key);
        pipe_cmd(w->p, "RENAME %s %s", w->tmp, w->key);
        pipe_cmd(w->p, "EXEC");
    }
    args_free(&w->a);
    free(w->owned);
    w->owned = NULL;
}

/* ---- versions and notifications ------------------------------------------- */

/*
 * The next version: unix milliseconds, but always above anything this
 * process issued and anything already in config:version (another instance,
 * an earlier run, a clock step back). Versions are decimal strings.
 */
static int64_t next_version(redisContext *c)
{
    redisReply *r = redisCommand(c, "HVALS %s", SNAP_MARKER_KEY);
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING) {
                int64_t v = strtoll(e->str, NULL, 10);
                if (v > last_version)
                    last_version = v;
            }
        }
    }
    if (r)
        freeReplyObject(r);
    int64_t v = ez_now_ms();
    if (v <= last_version)
        v = last_version + 1;
    last_version = v;
    return v;
}

/*
 * Sets config:version only if it exists: an incremental publish must never
 * create the marker, which means "a full snapshot is here".
 */
static const char set_versions_if_marked[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "redis.call('HSET', KEYS[1], unpack(ARGV)) return 1";

/*
 * Sets the version of every resource in mask, the publish bookkeeping, and
 * PUBLISHes one dp:config:refresh per resource. conditional: only if the
 * marker exists (*marked tells). Pipelined on p; drains it. 0 ok, -1 (p->err).
 */
static int publish_versions(struct pipe *p, int mask, int64_t version, bool conditional,
                            bool *marked)
{
    char ver[24], ts[24];
    int64_t now = ez_now_unix();
    snprintf(ver, sizeof(ver), "%lld", (long long)version);
    snprintf(ts, sizeof(ts), "%lld", (long long)now);
    *marked = true;

    struct args a = {0};
    if (conditional) {
        args_add(&a, "EVAL");
        args_add(&a, set_versions_if_marked);
        args_add(&a, "1");
    } else {
        args_add(&a, "HSET");
    }
    args_add(&a, SNAP_MARKER_KEY);
    for (size_t i = 0; i < EZ_ARRAY_LEN(resources); i++) {
        if (mask & resources[i].bit) {
            args_add(&a, ez_snapshot_resources[i]);
            args_add(&a, ver);
        }
    }
    pipe_drain(p);
    if (p->failed || pipe_dead(p)) {
        args_free(&a);
        return EZ_ERR;
    }
    /* Run on its own: its answer decides whether a rebuild is owed. */
    redisReply *r = redisCommandArgv(p->c, a.n, a.v, a.len);
    args_free(&a);
    const char *e = r ? reply_error(r) : p->c->errstr;
    if (e) {
        pipe_fail(p, e);
        if (r)
            freeReplyObject(r);
        return EZ_ERR;
    }
    if (conditional && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        *marked = false;
    freeReplyObject(r);

    for (size_t i = 0; i < EZ_ARRAY_LEN(resources); i++) {
        if (!(mask & resources[i].bit))
            continue;
        char *msg = shape_refresh_json(ez_snapshot_resources[i], ver, resources[i].active_key, now);
        pipe_cmd(p, "HSET %s %s %s", EZ_SNAPSHOT_PUBLISHED_AT_KEY, ez_snapshot_resources[i], ts);
        pipe_cmd(p, "HINCRBY %s %s 1", EZ_SNAPSHOT_PUBLISHES_KEY, ez_snapshot_resources[i]);
        pipe_cmd(p, "PUBLISH %s %s", REFRESH_CHANNEL, msg);
        free(msg);
    }
    pipe_drain(p);
    return p->failed ? EZ_ERR : EZ_OK;
}

/* ---- shapes from rows ----------------------------------------------------- */

/* Column order of tokens_sql. */
enum {
    TK_ID,
    TK_MASTER_ID,
    TK_NAME,
    TK_GROUP,
    TK_STATUS,
    TK_SCOPES,
    TK_NAMESPACES,
    TK_MLE,
    TK_MODEL_LIMITS,
    TK_ALLOW_IPS,
    TK_EXPIRES,
    TK_QLIMIT,
    TK_QUSED,
    TK_QRESET,
    TK_M_GROUP,
    TK_M_STATUS,
    TK_M_NAMESPACES,
    TK_M_DEFAULT_NS,
    TK_HASH,
    TK_PREV_HASH,
    TK_PREV_EXPIRES
};

/*
 * Writes the auth:token entries of every row: the current hash, and the
 * previous one while its grace period lasts (with an EXPIREAT at its end, so
 * it goes on time even if the expiry job is late); a previous hash past its
 * grace is deleted. Each published hash is added to published.
 */
static void publish_token_rows(struct pipe *p, const PGresult *res, int64_t now,
                               struct snap_strs *published)
{
    char key[sizeof(TOKEN_PREFIX) + 65];
    for (int i = 0; i < PQntuples(res); i++) {
        struct shape_key k = {
            .key_id = col_i64(res, i, TK_ID),
            .master_id = col_i64(res, i, TK_MASTER_ID),
            .name = col_str(res, i, TK_NAME),
            .group = col_str(res, i, TK_GROUP),
            .status = col_str(res, i, TK_STATUS),
            .scopes = col_str(res, i, TK_SCOPES),
            .namespaces = col_str(res, i, TK_NAMESPACES),
            .model_limits_enabled = col_bool(res, i, TK_MLE),
            .model_limits = col_str(res, i, TK_MODEL_LIMITS),
            .allow_ips = col_str(res, i, TK_ALLOW_IPS),
            .expires_at = col_i64(res, i, TK_EXPIRES),
            .quota_limit = col_i64(res, i, TK_QLIMIT),
            .quota_used = col_i64(res, i, TK_QUSED),
            .quota_reset_at = col_i64(res, i, TK_QRESET),
            .master_group = col_str(res, i, TK_M_GROUP),
            .master_status = col_str(res, i, TK_M_STATUS),
            .master_namespaces = col_str(res, i, TK_M_NAMESPACES),
            .master_default_namespace = col_str(res, i, TK_M_DEFAULT_NS),
        };
        struct shape_fields f = {0};
        shape_token_fields(&k, now, &f);

        const char *hash = col_str(res, i, TK_HASH);
        snprintf(key, sizeof(key), TOKEN_PREFIX "%s", hash);
        pipe_hset_fields(p, key, &f, 0);
        snap_strs_add(published, hash);

        const char *prev = col_str(res, i, TK_PREV_HASH);
        int64_t prev_until = col_i64(res, i, TK_PREV_EXPIRES);
        if (prev[0] && strcmp(prev, hash) != 0) {
            snprintf(key, sizeof(key), TOKEN_PREFIX "%s", prev);
            if (prev_until > now) {
                pipe_hset_fields(p, key, &f, prev_until);
                snap_strs_add(published, prev);
            } else {
                pipe_cmd(p, "UNLINK %s", key);
            }
        }
        shape_fields_free(&f);
    }
}

enum { MS_ID, MS_NAME, MS_GROUP, MS_STATUS, MS_EPOCH, MS_QPS, MS_NAMESPACES, MS_DEFAULT_NS };

static void master_row_fields(const PGresult *res, int i, struct shape_fields *f)
{
    struct shape_master m = {
        .name = col_str(res, i, MS_NAME),
        .group = col_str(res, i, MS_GROUP),
        .status = col_str(res, i, MS_STATUS),
        .epoch = col_i64(res, i, MS_EPOCH),
        .global_qps = col_i64(res, i, MS_QPS),
        .namespaces = col_str(res, i, MS_NAMESPACES),
        .default_namespace = col_str(res, i, MS_DEFAULT_NS),
    };
    shape_master_fields(&m, f);
}

enum {
    PV_ID,
    PV_API_KEY,
    PV_WEIGHT,
    PV_STATUS,
    PV_AUTO_BAN,
    PV_BAN_UNTIL,
    PV_GROUP_ID,
    PV_GROUP_NAME,
    PV_TYPE,
    PV_BASE_URL,
    PV_PROJECT,
    PV_LOCATION,
    PV_MODELS,
    PV_ROUTE_GROUP,
    PV_GROUP_STATUS
};

static char *provider_row_json(const PGresult *res, int i)
{
    struct shape_provider pv = {
        .id = col_i64(res, i, PV_ID),
        .api_key = col_str(res, i, PV_API_KEY),
        .weight = col_i64(res, i, PV_WEIGHT),
        .status = col_str(res, i, PV_STATUS),
        .auto_ban = col_bool(res, i, PV_AUTO_BAN),
        .ban_until = col_i64(res, i, PV_BAN_UNTIL),
        .group_id = col_i64(res, i, PV_GROUP_ID),
        .group_name = col_str(res, i, PV_GROUP_NAME),
        .type = col_str(res, i, PV_TYPE),
        .base_url = col_str(res, i, PV_BASE_URL),
        .google_project = col_str(res, i, PV_PROJECT),
        .google_location = col_str(res, i, PV_LOCATION),
        .models = col_str(res, i, PV_MODELS),
        .route_group = col_str(res, i, PV_ROUTE_GROUP),
        .group_status = col_str(res, i, PV_GROUP_STATUS),
    };
    return shape_provider_json(&pv);
}

/* Models by name, for the capability lookup of binding keys. */
enum {
    MD_NAME,
    MD_KIND,
    MD_CTX,
    MD_COST,
    MD_VISION,
    MD_FUNCS,
    MD_TOOL,
    MD_FIM,
    MD_STREAM,
    MD_MAXOUT
};

struct model_index {
    const PGresult *res;
    int *order; /* row numbers sorted by name */
    int n;
    /* Models only: the registry entries (name, data), indexed the same way; NULL = none. */
    const struct model_index *registry;
};

static int cmp_model_row(const void *a, const void *b, void *arg)
{
    const PGresult *res = arg;
    return strcmp(PQgetvalue(res, *(const int *)a, MD_NAME),
                  PQgetvalue(res, *(const int *)b, MD_NAME));
}

static void model_index_init(struct model_index *mi, const PGresult *res)
{
    mi->res = res;
    mi->n = res ? PQntuples(res) : 0;
    mi->order = ez_malloc(((size_t)mi->n + 1) * sizeof(int));
    for (int i = 0; i < mi->n; i++)
        mi->order[i] = i;
    if (mi->n > 1)
        qsort_r(mi->order, (size_t)mi->n, sizeof(int), cmp_model_row, (void *)res);
}

static int model_find(const struct model_index *mi, const char *name)
{
    int lo = 0, hi = mi->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(PQgetvalue(mi->res, mi->order[mid], MD_NAME), name);
        if (c == 0)
            return mi->order[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/*
 * The registry entry of an upstream model: its exact id, else its
 * normalize_exact form ("OpenAI/GPT-4o" -> "gpt-4o"). -1 when none.
 */
static int registry_find(const struct model_index *ri, const char *upstream)
{
    int row = model_find(ri, upstream);
    if (row >= 0)
        return row;
    char *norm = selector_normalize(upstream);
    row = model_find(ri, norm);
    free(norm);
    return row;
}

/*
 * The registry's capability for binding key bkey: the entry of the upstream
 * model that the first candidate (in group order) with an entry resolves to
 * (the selector alone decides; API keys do not matter for what a model can
 * do). NULL when no candidate leads to one.
 */
static char *registry_json_for(const struct model_index *ri, const char *bkey, const char *pm,
                               const struct shape_candidate *c, size_t n)
{
    if (ri == NULL || ri->n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *type =
            c[i].selector_type && c[i].selector_type[0] ? c[i].selector_type : "exact";
        const char *value =
            c[i].selector_value && c[i].selector_value[0] ? c[i].selector_value : pm;
        const char *up = NULL;
        if (selector_resolve(type, value, c[i].models, c[i].nmodels, &up) != 0)
            continue;
        int row = registry_find(ri, up);
        if (row < 0)
            continue;
        cJSON *cap = cJSON_Parse(col_str(ri->res, row, 1));
        struct shape_model m;
        int ok = models_dev_to_shape(cap, &m);
        char *json = ok == EZ_OK ? shape_model_json(bkey, &m) : NULL;
        cJSON_Delete(cap);
        if (json)
            return json;
    }
    return NULL;
}

/*
 * The meta:models value of binding key ns.pm (DATA.md "Model"): the Model
 * named "ns.pm", else the one named "pm", else the registry's entry for the
 * resolved upstream model, else {"name", "kind": "chat"}.
 */
static char *model_json_for(const struct model_index *mi, const char *bkey, const char *pm,
                            const struct shape_candidate *c, size_t n)
{
    int row = model_find(mi, bkey);
    if (row < 0)
        row = model_find(mi, pm);
    if (row < 0) {
        char *reg = registry_json_for(mi->registry, bkey, pm, c, n);
        return reg ? reg : shape_model_json(bkey, NULL);
    }
    const PGresult *r = mi->res;
    struct shape_model m = {
        .kind = col_str(r, row, MD_KIND),
        .context_window = col_i64(r, row, MD_CTX),
        .cost_per_token = strtod(col_str(r, row, MD_COST), NULL),
        .supports_vision = col_bool(r, row, MD_VISION),
        .supports_functions = col_bool(r, row, MD_FUNCS),
        .supports_tool_choice = col_bool(r, row, MD_TOOL),
        .supports_fim = col_bool(r, row, MD_FIM),
        .supports_stream = col_bool(r, row, MD_STREAM),
        .max_output_tokens = col_i64(r, row, MD_MAXOUT),
    };
    return shape_model_json(bkey, &m);
}

enum {
    BD_NS,
    BD_PM,
    BD_GROUP_ID,
    BD_ROUTE_GROUP,
    BD_WEIGHT,
    BD_SEL_TYPE,
    BD_SEL_VALUE,
    BD_MODELS,
    BD_KEY_IDS,
    BD_UPDATED
};

/* "{1,2,3}" -> ids (malloc'd, *n set). */
static int64_t *parse_id_array(const char *s, size_t *n)
{
    size_t cap = 4;
    int64_t *v = ez_malloc(cap * sizeof(*v));
    *n = 0;
    while (*s) {
        if (*s == '-' || (*s >= '0' && *s <= '9')) {
            char *end;
            long long x = strtoll(s, &end, 10);
            if (*n == cap) {
                cap *= 2;
                v = ez_realloc(v, cap * sizeof(*v));
            }
            v[(*n)++] = x;
            s = end;
        } else {
            s++;
        }
    }
    return v;
}

/* One compiled binding key: its config:bindings and meta:models values. */
struct compiled {
    char key[160]; /* "ns.pm" */
    char *binding;
    char *model;
};

/*
 * Compiles rows [from, to) of a bindings_sql result (one binding key, one
 * row per candidate) with the selector (through shape_binding_json).
 */
static void compile_binding(const PGresult *res, int from, int to, const struct model_index *mi,
                            struct compiled *out)
{
    size_t n = (size_t)(to - from);
    struct shape_candidate *c = ez_calloc(n, sizeof(*c));
    cJSON **models = ez_calloc(n, sizeof(*models));
    const char ***names = ez_calloc(n, sizeof(*names));
    int64_t **keys = ez_calloc(n, sizeof(*keys));
    int64_t updated = 0;
    const char *ns = col_str(res, from, BD_NS);
    const char *pm = col_str(res, from, BD_PM);

    for (size_t i = 0; i < n; i++) {
        int row = from + (int)i;
        models[i] = cJSON_Parse(col_str(res, row, BD_MODELS));
        int nm = cJSON_IsArray(models[i]) ? cJSON_GetArraySize(models[i]) : 0;
        names[i] = ez_calloc((size_t)nm + 1, sizeof(char *));
        size_t k = 0;
        const cJSON *it;
        if (nm > 0) {
            cJSON_ArrayForEach(it, models[i])
            {
                if (cJSON_IsString(it))
                    names[i][k++] = it->valuestring;
            }
        }
        c[i].models = names[i];
        c[i].nmodels = k;
        keys[i] = parse_id_array(col_str(res, row, BD_KEY_IDS), &c[i].nkeys);
        c[i].key_ids = keys[i];
        c[i].group_id = col_i64(res, row, BD_GROUP_ID);
        c[i].route_group = col_str(res, row, BD_ROUTE_GROUP);
        c[i].weight = col_i64(res, row, BD_WEIGHT);
        c[i].selector_type = col_str(res, row, BD_SEL_TYPE);
        c[i].selector_value = col_str(res, row, BD_SEL_VALUE);
        int64_t u = col_i64(res, row, BD_UPDATED);
        if (u > updated)
            updated = u;
    }
    snprintf(out->key, sizeof(out->key), "%s.%s", ns, pm);
    out->binding = shape_binding_json(ns, pm, updated, c, n);
    out->model = model_json_for(mi, out->key, pm, c, n);

    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(models[i]);
        free(names[i]);
        free(keys[i]);
    }
    free(models);
    free(names);
    free(keys);
    free(c);
}

/* Calls fn for each binding key of a bindings_sql result (rows are grouped by key). */
static void for_each_binding(const PGresult *res, const struct model_index *mi,
                             void (*fn)(struct compiled *, void *), void *arg)
{
    int n = PQntuples(res);
    for (int from = 0; from < n;) {
        int to = from + 1;
        while (to < n && strcmp(col_str(res, to, BD_NS), col_str(res, from, BD_NS)) == 0 &&
               strcmp(col_str(res, to, BD_PM), col_str(res, from, BD_PM)) == 0)
            to++;
        struct compiled cb = {0};
        compile_binding(res, from, to, mi, &cb);
        fn(&cb, arg);
        free(cb.binding);
        free(cb.model);
        from = to;
    }
}

/* meta:models_meta from the registry state and the checksum of meta:models. */
static void models_meta_fields(const PGresult *reg, int64_t version, const char *checksum,
                               struct shape_fields *f)
{
    char ver[24];
    snprintf(ver, sizeof(ver), "%lld", (long long)version);
    const char *source = "";
    const char *ref = "";
    if (reg && PQntuples(reg) == 1) {
        source = col_str(reg, 0, 0);
        ref = col_str(reg, 0, 1);
    }
    shape_models_meta_fields(ver, ez_now_unix(), source[0] ? source : "manual", checksum, "", ref,
                             f);
}

/* Writes meta:models_meta (fixed field set: HSET replaces every field). */
static void write_models_meta(struct pipe *p, const PGresult *reg, int64_t version,
                              const char *checksum)
{
    struct shape_fields f = {0};
    models_meta_fields(reg, version, checksum, &f);
    pipe_hset_fields(p, "meta:models_meta", &f, 0);
    shape_fields_free(&f);
}

/* ---- incremental publish -------------------------------------------------- */

/* Adds column 0 of every row (an id) to s. */
static void add_ids_from(struct snap_ids *s, const PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++)
        snap_ids_add(s, col_i64(res, i, 0));
}

static void add_strs_from(struct snap_strs *s, const PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++)
        snap_strs_add(s, col_str(res, i, 0));
}

/* Runs a query taking one array literal and adds column 0 of its rows to an id or string set. */
static int expand(PGconn *conn, const char *what, const char *sql, const char *lit,
                  struct snap_ids *ids, struct snap_strs *strs, char *err, size_t errlen)
{
    PGresult *res = query(conn, what, sql, 1, lit, NULL, err, errlen);
    if (res == NULL)
        return EZ_ERR;
    if (ids)
        add_ids_from(ids, res);
    else
        add_strs_from(strs, res);
    PQclear(res);
    return EZ_OK;
}

/* Follows dependencies (docs/outbox.md): groups -> keys and bindings, models -> binding keys. */
static int expand_work(PGconn *conn, struct snap_work *w, char *err, size_t errlen)
{
    char *lit = NULL;
    int rc = EZ_ERR;

    /* Ids name the current state; the payload names what a change left behind. */
    ids_unique(&w->bindings);
    if (w->bindings.n) {
        lit = ids_literal(&w->bindings);
        if (expand(conn, "binding keys",
                   "SELECT namespace || '.' || public_model FROM bindings "
                   "WHERE id = ANY($1::bigint[])",
                   lit, NULL, &w->binding_keys, err, errlen) != EZ_OK)
            goto out;
        free(lit);
        lit = NULL;
    }
    ids_unique(&w->models);
    if (w->models.n) {
        lit = ids_literal(&w->models);
        if (expand(conn, "model names", "SELECT name FROM models WHERE id = ANY($1::bigint[])", lit,
                   NULL, &w->model_names, err, errlen) != EZ_OK)
            goto out;
        free(lit);
        lit = NULL;
    }
    ids_unique(&w->groups);
    if (w->groups.n) {
        lit = ids_literal(&w->groups);
        if (expand(conn, "group api keys",
                   "SELECT id FROM api_keys WHERE group_id = ANY($1::bigint[])", lit, &w->api_keys,
                   NULL, err, errlen) != EZ_OK)
            goto out;
        for (size_t i = 0; i < w->groups.n; i++)
            snap_ids_add(&w->binding_groups, w->groups.v[i]);
        free(lit);
        lit = NULL;
    }
    ids_unique(&w->api_keys);
    if (w->api_keys.n) {
        lit = ids_literal(&w->api_keys);
        if (expand(conn, "api key groups",
                   "SELECT DISTINCT group_id FROM api_keys WHERE id = ANY($1::bigint[])", lit,
                   &w->binding_groups, NULL, err, errlen) != EZ_OK)
            goto out;
        free(lit);
        lit = NULL;
    }
    ids_unique(&w->binding_groups);
    if (w->binding_groups.n) {
        lit = ids_literal(&w->binding_groups);
        if (expand(conn, "group bindings",
                   "SELECT DISTINCT namespace || '.' || public_model FROM bindings "
                   "WHERE group_id = ANY($1::bigint[])",
                   lit, NULL, &w->binding_keys, err, errlen) != EZ_OK)
            goto out;
        free(lit);
        lit = NULL;
    }
    strs_unique(&w->model_names);
    if (w->model_names.n) {
        /* A Model "ns.m" serves that binding key; a Model "m" every binding key ending in it. */
        lit = strs_literal(&w->model_names);
        if (expand(conn, "model bindings",
                   "SELECT DISTINCT namespace || '.' || public_model FROM bindings "
                   "WHERE namespace || '.' || public_model = ANY($1::text[]) "
                   "OR public_model = ANY($1::text[])",
                   lit, NULL, &w->binding_keys, err, errlen) != EZ_OK)
            goto out;
        free(lit);
        lit = NULL;
    }
    /* A master's group, status and namespaces show in its keys' auth:token entries. */
    ids_unique(&w->masters);
    for (size_t i = 0; i < w->masters.n; i++)
        snap_ids_add(&w->key_masters, w->masters.v[i]);
    ids_unique(&w->keys);
    ids_unique(&w->key_masters);
    strs_unique(&w->del_tokens);
    strs_unique(&w->binding_keys);
    rc = EZ_OK;
out:
    free(lit);
    return rc;
}

static int apply_tokens(PGconn *conn, struct pipe *p, const struct snap_work *w, int64_t now,
                        char *err, size_t errlen)
{
    struct snap_strs published = {0};
    char *sql = sql_join(tokens_sql, tokens_where, NULL);
    const char *params[3] = {ids_literal(&w->keys), ids_literal(&w->key_masters),
                             strs_literal(&w->del_tokens)};
    PGresult *res = query3(conn, "tokens", sql, 3, params, err, errlen);
    int rc = EZ_ERR;

    if (res == NULL)
        goto out;
    publish_token_rows(p, res, now, &published);
    strs_unique(&published);
    for (size_t i = 0; i < w->del_tokens.n; i++) {
        const char *h = w->del_tokens.v[i];
        /* A hash some key still has (e.g. re-imported) stays; junk in a payload is ignored. */
        if (!is_token_hash(h) || strs_has(&published, h))
            continue;
        pipe_cmd(p, "UNLINK " TOKEN_PREFIX "%s", h);
    }
    rc = EZ_OK;
out:
    PQclear(res);
    for (int i = 0; i < 3; i++)
        free((char *)params[i]);
    free(sql);
    strs_free(&published);
    return rc;
}

static int apply_masters(PGconn *conn, struct pipe *p, const struct snap_work *w, char *err,
                         size_t errlen)
{
    char *lit = ids_literal(&w->masters);
    char *sql = sql_join(masters_sql, masters_where, NULL);
    PGresult *res = query(conn, "masters", sql, 1, lit, NULL, err, errlen);
    int rc = EZ_ERR;
    if (res == NULL)
        goto out;
    struct snap_ids found = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        char key[48];
        struct shape_fields f = {0};
        snprintf(key, sizeof(key), MASTER_PREFIX "%lld", (long long)col_i64(res, i, MS_ID));
        master_row_fields(res, i, &f);
        pipe_hset_fields(p, key, &f, 0);
        shape_fields_free(&f);
        snap_ids_add(&found, col_i64(res, i, MS_ID));
    }
    ids_unique(&found);
    for (size_t i = 0; i < w->masters.n; i++) {
        if (!ids_has(&found, w->masters.v[i])) {
            char id[24];
            snprintf(id, sizeof(id), "%lld", (long long)w->masters.v[i]);
            pipe_cmd(p, "UNLINK " MASTER_PREFIX "%s", id);
        }
    }
    ids_free(&found);
    rc = EZ_OK;
out:
    PQclear(res);
    free(lit);
    free(sql);
    return rc;
}

static int apply_providers(PGconn *conn, struct pipe *p, const struct snap_work *w, char *err,
                           size_t errlen)
{
    char *lit = ids_literal(&w->api_keys);
    char *sql = sql_join(providers_sql, providers_where, NULL);
    PGresult *res = query(conn, "providers", sql, 1, lit, NULL, err, errlen);
    int rc = EZ_ERR;
    if (res == NULL)
        goto out;
    struct snap_ids found = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        char *json = provider_row_json(res, i);
        pipe_cmd(p, "HSET config:providers %s %s", col_str(res, i, PV_ID), json);
        free(json);
        snap_ids_add(&found, col_i64(res, i, PV_ID));
    }
    ids_unique(&found);
    for (size_t i = 0; i < w->api_keys.n; i++) {
        if (!ids_has(&found, w->api_keys.v[i])) {
            char id[24];
            snprintf(id, sizeof(id), "%lld", (long long)w->api_keys.v[i]);
            pipe_cmd(p, "HDEL config:providers %s", id);
        }
    }
    ids_free(&found);
    rc = EZ_OK;
out:
    PQclear(res);
    free(lit);
    free(sql);
    return rc;
}

struct binding_sink {
    struct pipe *p;
    struct snap_strs written;
};

static void write_binding_field(struct compiled *cb, void *arg)
{
    struct binding_sink *s = arg;
    pipe_cmd(s->p, "HSET config:bindings %s %s", cb->key, cb->binding);
    pipe_cmd(s->p, "HSET meta:models %s %s", cb->key, cb->model);
    snap_strs_add(&s->written, cb->key);
}

/*
 * The registry entries the candidates of a bindings_sql result may resolve
 * to: every model id their groups serve, exact and normalised. NULL on error.
 */
static PGresult *registry_for_bindings(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    struct snap_strs ids = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *models = cJSON_Parse(col_str(res, i, BD_MODELS));
        const cJSON *it;
        cJSON_ArrayForEach(it, models)
        {
            if (!cJSON_IsString(it))
                continue;
            char *norm = selector_normalize(it->valuestring);
            snap_strs_add(&ids, it->valuestring);
            snap_strs_add(&ids, norm);
            free(norm);
        }
        cJSON_Delete(models);
    }
    strs_unique(&ids);
    char *lit = strs_literal(&ids);
    char *sql = sql_join(registry_models_sql, registry_models_where, NULL);
    PGresult *reg = query(conn, "registry models", sql, 1, lit, NULL, err, errlen);
    free(sql);
    free(lit);
    strs_free(&ids);
    return reg;
}

static int apply_bindings(PGconn *conn, struct pipe *p, const struct snap_work *w, char *err,
                          size_t errlen)
{
    struct snap_strs names = {0};
    struct model_index mi = {0}, ri = {0};
    struct binding_sink sink = {.p = p};
    char *klit = strs_literal(&w->binding_keys);
    char *nlit = NULL;
    char *sql = sql_join(bindings_sql, bindings_where, bindings_order);
    char *msql = sql_join(models_sql, models_where, NULL);
    PGresult *res = NULL, *mres = NULL, *rres = NULL;
    int rc = EZ_ERR;

    res = query(conn, "bindings", sql, 1, klit, NULL, err, errlen);
    if (res == NULL)
        goto out;
    rres = registry_for_bindings(conn, res, err, errlen);
    if (rres == NULL)
        goto out;
    /* The Models a key's capability may come from: "ns.pm" and "pm". */
    for (size_t i = 0; i < w->binding_keys.n; i++) {
        const char *k = w->binding_keys.v[i];
        const char *dot = strchr(k, '.');
        snap_strs_add(&names, k);
        if (dot)
            snap_strs_add(&names, dot + 1);
    }
    nlit = strs_literal(&names);
    mres = query(conn, "models", msql, 1, nlit, NULL, err, errlen);
    if (mres == NULL)
        goto out;
    model_index_init(&mi, mres);
    model_index_init(&ri, rres);
    mi.registry = &ri;
    for_each_binding(res, &mi, write_binding_field, &sink);
    strs_unique(&sink.written);
    /* A key with no candidate left leaves both hashes. */
    for (size_t i = 0; i < w->binding_keys.n; i++) {
        const char *k = w->binding_keys.v[i];
        if (!strs_has(&sink.written, k)) {
            pipe_cmd(p, "HDEL config:bindings %s", k);
            pipe_cmd(p, "HDEL meta:models %s", k);
        }
    }
    rc = EZ_OK;
out:
    free(mi.order);
    free(ri.order);
    strs_free(&names);
    strs_free(&sink.written);
    PQclear(res);
    PQclear(mres);
    PQclear(rres);
    free(klit);
    free(nlit);
    free(sql);
    free(msql);
    return rc;
}

/* config:features is small: always replaced as a whole (temporary key + RENAME). */
static int write_features(PGconn *conn, struct pipe *p, char *err, size_t errlen)
{
    PGresult *res = query(conn, "features", features_sql, 0, NULL, NULL, err, errlen);
    if (res == NULL)
        return EZ_ERR;
    struct hwriter hw;
    hw_begin(&hw, p, "config:features");
    for (int i = 0; i < PQntuples(res); i++)
        hw_add(&hw, col_str(res, i, 0), col_str(res, i, 1));
    hw_commit(&hw);
    PQclear(res);
    return EZ_OK;
}

/* Checksum of meta:models as Redis holds it now (after an incremental change). */
static int redis_models_checksum(struct pipe *p, char out[65])
{
    redisReply *r = redisCommand(p->c, "HGETALL meta:models");
    const char *e = r ? reply_error(r) : p->c->errstr;
    if (e || r->type != REDIS_REPLY_ARRAY) {
        pipe_fail(p, e ? e : "HGETALL meta:models: unexpected reply");
        if (r)
            freeReplyObject(r);
        return EZ_ERR;
    }
    size_t n = r->elements / 2;
    const char **names = ez_malloc((n + 1) * sizeof(char *));
    const char **values = ez_malloc((n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        names[i] = r->element[2 * i]->str;
        values[i] = r->element[2 * i + 1]->str;
    }
    shape_models_checksum(names, values, n, out);
    free(names);
    free(values);
    freeReplyObject(r);
    return EZ_OK;
}

int snapshot_apply(struct bg_ctx *ctx, PGconn *conn, struct snap_work *w, char *err, size_t errlen)
{
    struct pipe p;
    PGresult *reg = NULL;
    int mask = 0;
    int rc = SNAP_ERR_PG;
    int64_t now = ez_now_unix();

    err[0] = '\0';
    if (expand_work(conn, w, err, errlen) != EZ_OK)
        return SNAP_ERR_PG;
    if (snap_work_empty(w))
        return SNAP_OK;

    redisContext *c = bg_redis(ctx);
    if (c == NULL) {
        snprintf(err, errlen, "redis unavailable");
        return SNAP_ERR_UNAVAILABLE;
    }
    pipe_init(&p, c);

    if (w->keys.n || w->key_masters.n || w->del_tokens.n) {
        if (apply_tokens(conn, &p, w, now, err, errlen) != EZ_OK)
            goto out;
        mask |= R_TOKENS;
    }
    if (w->masters.n) {
        if (apply_masters(conn, &p, w, err, errlen) != EZ_OK)
            goto out;
        mask |= R_MASTERS;
    }
    if (w->api_keys.n) {
        if (apply_providers(conn, &p, w, err, errlen) != EZ_OK)
            goto out;
        mask |= R_PROVIDERS;
    }
    if (w->binding_keys.n) {
        if (apply_bindings(conn, &p, w, err, errlen) != EZ_OK)
            goto out;
        mask |= R_BINDINGS | R_MODELS;
    }
    if (w->features) {
        if (write_features(conn, &p, err, errlen) != EZ_OK)
            goto out;
        mask |= R_FEATURES;
    }
    if (mask & R_MODELS) {
        reg = query(conn, "registry state", registry_sql, 0, NULL, NULL, err, errlen);
        if (reg == NULL)
            goto out;
    }

    rc = SNAP_ERR_REDIS;
    pipe_drain(&p);
    if (p.failed)
        goto out;
    if (mask == 0) {
        /* E.g. a provider group without keys or bindings: nothing of it is published. */
        rc = SNAP_OK;
        goto out;
    }
    int64_t version = next_version(c);
    if (mask & R_MODELS) {
        char sum[65];
        if (redis_models_checksum(&p, sum) != EZ_OK)
            goto out;
        write_models_meta(&p, reg, version, sum);
    }
    bool marked = true;
    if (publish_versions(&p, mask, version, true, &marked) != EZ_OK)
        goto out;
    if (!marked) {
        marker_lost = true;
        rc = SNAP_NO_MARKER;
    } else {
        rc = SNAP_OK;
    }
    log_debug("event=snapshot_applied resources=0x%x commands=%zu version=%lld", mask, p.total,
              (long long)version);
out:
    if (rc == SNAP_ERR_REDIS) {
        snprintf(err, errlen, "%s", p.err[0] ? p.err : "redis error");
        rds_check(&ctx->redis);
    }
    PQclear(reg);
    return rc;
}

/* ---- full rebuild --------------------------------------------------------- */

/* Everything a rebuild reads, from one REPEATABLE READ transaction. */
struct rebuild_data {
    PGresult *tokens, *masters, *providers, *bindings, *models, *features, *registry, *covered;
    PGresult *registry_models;
};

static void rebuild_data_free(struct rebuild_data *d)
{
    PQclear(d->tokens);
    PQclear(d->masters);
    PQclear(d->providers);
    PQclear(d->bindings);
    PQclear(d->models);
    PQclear(d->features);
    PQclear(d->registry);
    PQclear(d->covered);
    PQclear(d->registry_models);
    memset(d, 0, sizeof(*d));
}

static int exec_simple(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = query(conn, sql, sql, 0, NULL, NULL, err, errlen);
    if (res == NULL)
        return EZ_ERR;
    PQclear(res);
    return EZ_OK;
}

static int rebuild_read(PGconn *conn, struct rebuild_data *d, char *err, size_t errlen)
{
    char *bsql = sql_join(bindings_sql, bindings_order, NULL);
    int rc = EZ_ERR;

    if (exec_simple(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen) != EZ_OK)
        goto out;
    /*
     * The outbox rows this snapshot already contains: pending or failed rows
     * committed before it. Read first, so that the snapshot is taken here.
     */
    if (!(d->covered = query(conn, "covered outbox rows",
                             "SELECT COALESCE(array_agg(id ORDER BY id), '{}')::text "
                             "FROM sync_outbox WHERE status IN ('pending', 'failed')",
                             0, NULL, NULL, err, errlen)) ||
        !(d->tokens = query(conn, "tokens", tokens_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->masters = query(conn, "masters", masters_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->providers = query(conn, "providers", providers_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->bindings = query(conn, "bindings", bsql, 0, NULL, NULL, err, errlen)) ||
        !(d->models = query(conn, "models", models_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->features = query(conn, "features", features_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->registry = query(conn, "registry state", registry_sql, 0, NULL, NULL, err, errlen)) ||
        !(d->registry_models =
              query(conn, "registry models", registry_models_sql, 0, NULL, NULL, err, errlen)))
        goto out;
    if (exec_simple(conn, "COMMIT", err, errlen) != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    if (rc != EZ_OK) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
    free(bsql);
    return rc;
}

/* Binding keys and their model values, collected for the meta:models hash and its checksum. */
struct rebuild_bindings {
    struct hwriter *bind;
    struct hwriter *models;
    size_t n, cap;
    char **names;
    char **values;
};

static void collect_binding(struct compiled *cb, void *arg)
{
    struct rebuild_bindings *rb = arg;
    hw_add(rb->bind, cb->key, cb->binding);
    hw_add(rb->models, cb->key, cb->model);
    if (rb->n == rb->cap) {
        rb->cap = rb->cap ? rb->cap * 2 : 256;
        rb->names = ez_realloc(rb->names, rb->cap * sizeof(char *));
        rb->values = ez_realloc(rb->values, rb->cap * sizeof(char *));
    }
    rb->names[rb->n] = ez_strdup(cb->key);
    rb->values[rb->n] = cb->model;
    cb->model = NULL; /* kept for the checksum */
    rb->n++;
}

/*
 * Deletes the keys matching prefix* whose suffix is not in keep (sorted),
 * walking the keyspace with SCAN. Returns the number deleted, -1 on error.
 */
static long reconcile(struct pipe *p, const char *prefix, const struct snap_strs *keep)
{
    char pattern[64];
    char cursor[32] = "0";
    long deleted = 0;
    size_t plen = strlen(prefix);
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    do {
        redisReply *r = redisCommand(p->c, "SCAN %s MATCH %s COUNT " SCAN_COUNT, cursor, pattern);
        const char *e = r ? reply_error(r) : p->c->errstr;
        if (e || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            pipe_fail(p, e ? e : "SCAN: unexpected reply");
            if (r)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            if (k == NULL || strncmp(k, prefix, plen) != 0 || strs_has(keep, k + plen))
                continue;
            pipe_cmd(p, "UNLINK %s", k);
            deleted++;
        }
        freeReplyObject(r);
        pipe_drain(p);
        if (p->failed)
            return -1;
    } while (strcmp(cursor, "0") != 0);
    return deleted;
}

/* Marks the outbox rows the snapshot covered as done (they are published now). */
static long mark_covered(PGconn *conn, const PGresult *covered, char *err, size_t errlen)
{
    const char *ids = PQntuples(covered) == 1 ? col_str(covered, 0, 0) : "{}";
    if (strcmp(ids, "{}") == 0)
        return 0;
    PGresult *res = query(conn, "mark covered outbox rows",
                          "UPDATE sync_outbox SET status = 'done', updated_at = now() "
                          "WHERE id = ANY($1::bigint[]) AND status IN ('pending', 'failed')",
                          1, ids, NULL, err, errlen);
    if (res == NULL)
        return -1;
    long n = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return n;
}

/* Writes everything in d to Redis. 0 ok, -1 (p->err). */
static int rebuild_write(struct pipe *p, const struct rebuild_data *d, int64_t version, int64_t now,
                         long *stale_tokens, long *stale_masters)
{
    struct snap_strs token_keep = {0}, master_keep = {0};
    struct model_index mi = {0}, ri = {0};
    struct hwriter hw_prov, hw_bind, hw_models, hw_meta;
    struct rebuild_bindings rb = {.bind = &hw_bind, .models = &hw_models};
    int rc = EZ_ERR;

    /* Per-key entries first: they are written in place, then the stale ones go. */
    publish_token_rows(p, d->tokens, now, &token_keep);
    for (int i = 0; i < PQntuples(d->masters); i++) {
        char key[48];
        struct shape_fields f = {0};
        const char *id = col_str(d->masters, i, MS_ID);
        snprintf(key, sizeof(key), MASTER_PREFIX "%s", id);
        /* DEL first: a rebuild also repairs a hash that gained stray fields. */
        pipe_cmd(p, "MULTI");
        pipe_cmd(p, "DEL %s", key);
        master_row_fields(d->masters, i, &f);
        pipe_hset_fields(p, key, &f, 0);
        pipe_cmd(p, "EXEC");
        shape_fields_free(&f);
        snap_strs_add(&master_keep, id);
    }

    hw_begin(&hw_prov, p, "config:providers");
    for (int i = 0; i < PQntuples(d->providers); i++) {
        char *json = provider_row_json(d->providers, i);
        hw_add(&hw_prov, col_str(d->providers, i, PV_ID), json);
        free(json);
    }
    hw_commit(&hw_prov);

    model_index_init(&mi, d->models);
    model_index_init(&ri, d->registry_models);
    mi.registry = &ri;
    hw_begin(&hw_bind, p, "config:bindings");
    hw_begin(&hw_models, p, "meta:models");
    for_each_binding(d->bindings, &mi, collect_binding, &rb);
    hw_commit(&hw_bind);
    hw_commit(&hw_models);

    char sum[65];
    shape_models_checksum((const char *const *)rb.names, (const char *const *)rb.values, rb.n, sum);
    struct shape_fields mf = {0};
    models_meta_fields(d->registry, version, sum, &mf);
    hw_begin(&hw_meta, p, "meta:models_meta");
    for (size_t i = 0; i < mf.n; i++)
        hw_add(&hw_meta, mf.name[i], mf.value[i]);
    hw_commit(&hw_meta);
    shape_fields_free(&mf);

    struct hwriter hw_feat;
    hw_begin(&hw_feat, p, "config:features");
    for (int i = 0; i < PQntuples(d->features); i++)
        hw_add(&hw_feat, col_str(d->features, i, 0), col_str(d->features, i, 1));
    hw_commit(&hw_feat);

    pipe_drain(p);
    if (p->failed)
        goto out;
    strs_unique(&token_keep);
    strs_unique(&master_keep);
    if ((*stale_tokens = reconcile(p, TOKEN_PREFIX, &token_keep)) < 0 ||
        (*stale_masters = reconcile(p, MASTER_PREFIX, &master_keep)) < 0)
        goto out;
    rc = EZ_OK;
out:
    for (size_t i = 0; i < rb.n; i++) {
        free(rb.names[i]);
        free(rb.values[i]);
    }
    free(rb.names);
    free(rb.values);
    free(mi.order);
    free(ri.order);
    strs_free(&token_keep);
    strs_free(&master_keep);
    return rc;
}

int snapshot_rebuild(struct bg_ctx *ctx, const char *reason)
{
    struct rebuild_data d = {0};
    struct pipe p;
    char err[512] = "";
    long stale_tokens = 0, stale_masters = 0;
    int rc = EZ_ERR;
    int64_t t0 = ez_mono_us();

    rebuild_owed = true; /* until it succeeds */
    rebuild_asked = false;
    marker_lost = false;
    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL)
        return EZ_ERR; /* outage logged by bg_main_conn */
    redisContext *c = bg_redis(ctx);
    if (c == NULL)
        return EZ_ERR; /* outage logged by bg_redis */

    if (rebuild_read(conn, &d, err, sizeof(err)) != EZ_OK) {
        db_check(&ctx->main_db);
        rc = job_fail(ctx, "snapshot rebuild: %s", err);
        goto out;
    }
    int64_t t_read = ez_mono_us();

    pipe_init(&p, c);
    /* Issued before the data so that meta:models_meta carries it too. */
    int64_t version = next_version(c);
    if (rebuild_write(&p, &d, version, ez_now_unix(), &stale_tokens, &stale_masters) != EZ_OK) {
        rds_check(&ctx->redis);
        rc = job_fail(ctx, "snapshot rebuild: %s", p.err);
        goto out;
    }
    bool marked;
    if (publish_versions(&p, R_ALL, version, false, &marked) != EZ_OK) {
        rds_check(&ctx->redis);
        rc = job_fail(ctx, "snapshot rebuild: %s", p.err);
        goto out;
    }
    rebuild_owed = false;
    rebuild_ok_once = true;

    long covered = mark_covered(conn, d.covered, err, sizeof(err));
    if (covered < 0) {
        /* Harmless: those rows are applied again, from the same current state. */
        db_check(&ctx->main_db);
        log_warn("event=snapshot_mark_covered_failed error=\"%s\"", err);
        covered = 0;
    }
    log_info("event=snapshot_rebuilt reason=%s version=%lld tokens=%d masters=%d providers=%d "
             "binding_rows=%d features=%d stale_tokens=%ld stale_masters=%ld outbox_covered=%ld "
             "commands=%zu read_ms=%lld total_ms=%lld",
             reason, (long long)version, PQntuples(d.tokens), PQntuples(d.masters),
             PQntuples(d.providers), PQntuples(d.bindings), PQntuples(d.features), stale_tokens,
             stale_masters, covered, p.total, (long long)((t_read - t0) / 1000),
             (long long)((ez_mono_us() - t0) / 1000));
    rc = EZ_OK;
out:
    rebuild_data_free(&d);
    return rc;
}

void snapshot_request_rebuild(void)
{
    rebuild_asked = true;
}

bool snapshot_rebuild_due(struct bg_ctx *ctx, const char **reason)
{
    if (!rebuild_ok_once) {
        *reason = "start";
        return true;
    }
    if (rebuild_asked) {
        *reason = "requested";
        return true;
    }
    if (marker_lost) {
        *reason = "redis_empty";
        return true;
    }
    if (rebuild_owed) {
        *reason = "retry";
        return true;
    }
    redisContext *c = bg_redis(ctx);
    if (c == NULL)
        return false;
    redisReply *r = redisCommand(c, "EXISTS %s", SNAP_MARKER_KEY);
    bool missing = r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
    if (r == NULL)
        rds_check(&ctx->redis);
    if (r)
        freeReplyObject(r);
    if (missing)
        *reason = "redis_empty";
    return missing;
}

/* ---- locking and the job -------------------------------------------------- */

int snapshot_lock(struct bg_ctx *ctx, PGconn *conn)
{
    char key[24], err[256];
    snprintf(key, sizeof(key), "%lld", (long long)SNAP_ADVISORY_LOCK);
    PGresult *res = query(conn, "advisory lock", "SELECT pg_try_advisory_lock($1::bigint)", 1, key,
                          NULL, err, sizeof(err));
    if (res == NULL) {
        db_check(&ctx->main_db);
        return job_fail(ctx, "%s", err);
    }
    int taken = col_bool(res, 0, 0) ? 1 : 0;
    PQclear(res);
    if (!taken)
        log_debug("event=snapshot_lock_busy msg=\"another ezapi-background publishes\"");
    return taken;
}

void snapshot_unlock(struct bg_ctx *ctx, PGconn *conn)
{
    char key[24], err[256];
    snprintf(key, sizeof(key), "%lld", (long long)SNAP_ADVISORY_LOCK);
    PGresult *res = query(conn, "advisory unlock", "SELECT pg_advisory_unlock($1::bigint)", 1, key,
                          NULL, err, sizeof(err));
    if (res == NULL) {
        /* A dropped connection released it anyway. */
        db_check(&ctx->main_db);
        return;
    }
    PQclear(res);
}

int64_t snapshot_interval_ms(const struct ez_config *cfg)
{
    return (int64_t)cfg->sync_reconcile_seconds * 1000;
}

/*
 * The "snapshot" job: a full rebuild at start-up and every
 * EZ_SYNC_RECONCILE_SECONDS. Another instance holding the lock is publishing
 * already: nothing to do. A failure leaves the rebuild owed, and the outbox
 * job (every EZ_SYNC_OUTBOX_INTERVAL_SECONDS) tries again.
 */
int snapshot_run(struct bg_ctx *ctx)
{
    PGconn *conn = bg_main_conn(ctx);
    if (conn == NULL) {
        rebuild_owed = true;
        return EZ_ERR;
    }
    int taken = snapshot_lock(ctx, conn);
    if (taken <= 0) {
        rebuild_owed = rebuild_owed || taken < 0;
        return taken < 0 ? EZ_ERR : EZ_OK;
    }
    int rc = snapshot_rebuild(ctx, rebuild_ok_once ? "periodic" : "start");
    /* The rebuild may have dropped a broken connection: unlock only a live one. */
    conn = ctx->main_db.conn;
    if (conn)
        snapshot_unlock(ctx, conn);
    return rc;
}
