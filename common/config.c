/* Settings of CONFIG.md from one table: environment > INI file (inih) > default, then cross-checks.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ini.h>

#include "log.h"

/*
 * Choices where CONFIG.md is silent (an operator's view):
 *  - Every source is validated, even a file value that the environment then
 *    overrides: a typo in the file is a latent outage, so it stops start-up.
 *  - An empty environment variable is a value: "" for strings (so
 *    EZ_ADMIN_TOKEN= turns the admin API off), an error for numbers, booleans
 *    and enums. An empty EZ_CONFIG_FILE counts as unset.
 *  - Bools and enums are case-insensitive; section and key names too.
 *  - Periods in seconds are capped at one year so that consumers converting
 *    them to milliseconds in int64 cannot overflow.
 *  - Control characters (other than tab) in a string are refused: they would
 *    end up in HTTP headers (CORS) or silently break a token comparison.
 *  - inih cuts lines at 200 bytes and reads the rest as a new line; a long
 *    line is an error here instead (long DSNs go in the environment). An
 *    indented line after a key is, for inih, more of that key's value; we
 *    refuse it rather than let "port = 1\n  threads = 4" become one value.
 *  - Inline comments need a space before the ';' (inih's rule).
 */

enum setting_type { T_INT, T_INT64, T_BOOL, T_STRING, T_SECRET, T_ENUM };

/* The value may embed a password (libpq keyword/URI form, URL userinfo): config_print masks it. */
#define F_MASK_PASSWORD 0x1u

struct setting {
    const char *env;
    const char *section;
    const char *key;
    enum setting_type type;
    size_t offset;
    /* Parsed by the same code as file and environment values, so defaults obey the bounds too. */
    const char *def;
    int64_t min, max;         /* T_INT, T_INT64 */
    const char *const *names; /* T_ENUM: value i is names[i]; NULL-terminated */
    unsigned flags;
};

/* Enum values are indexes into these lists: they must follow the C enums. */
static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const partitioning_names[] = {"off", "month", "day", NULL};
_Static_assert(EZ_LOG_DEBUG == 0 && EZ_LOG_INFO == 1 && EZ_LOG_WARN == 2 && EZ_LOG_ERROR == 3,
               "log_level_names follows enum ez_log_level");
_Static_assert(EZ_PART_OFF == 0 && EZ_PART_MONTH == 1 && EZ_PART_DAY == 2,
               "partitioning_names follows enum ez_partitioning");

/*
 * offsetof(field), refusing to compile unless the field has the C type its
 * setting type writes. (clang-format would split _Generic's "default:" and
 * box the initialiser macros, hence the fence.)
 */
// clang-format off
#define FIELD(field, ctype)                                                                        \
    (offsetof(struct ez_config, field) +                                                           \
     0 * sizeof(char[_Generic(((struct ez_config *)0)->field, ctype: 1, default: -1)]))

#define INT(env, sec, key, field, def, lo, hi)                                                     \
    {env, sec, key, T_INT, FIELD(field, int), def, lo, hi, NULL, 0}
#define INT64(env, sec, key, field, def, lo, hi)                                                   \
    {env, sec, key, T_INT64, FIELD(field, int64_t), def, lo, hi, NULL, 0}
#define BOOL(env, sec, key, field, def)                                                            \
    {env, sec, key, T_BOOL, FIELD(field, bool), def, 0, 0, NULL, 0}
#define STR(env, sec, key, field, def, flags)                                                      \
    {env, sec, key, T_STRING, FIELD(field, char *), def, 0, 0, NULL, flags}
#define SECRET(env, sec, key, field)                                                               \
    {env, sec, key, T_SECRET, FIELD(field, char *), "", 0, 0, NULL, 0}
#define ENUM(env, sec, key, field, def, names)                                                     \
    {env, sec, key, T_ENUM, FIELD(field, int), def, 0, 0, names, 0}
// clang-format on

#define YEAR_SECONDS 31536000

/* Every setting of CONFIG.md, in its order (config_print follows it). */
static const struct setting settings[] = {
    INT("EZ_API_PORT", "server", "port", api_port, "8080", 1, 65535),
    STR("EZ_FCGI_LISTEN", "server", "fcgi_listen", fcgi_listen, "127.0.0.1:9000", 0),
    INT("EZ_FCGI_PROCESSES", "server", "processes", fcgi_processes, "2", 1, 64),
    INT("EZ_FCGI_THREADS", "server", "threads", fcgi_threads, "4", 1, 256),
    INT64("EZ_MAX_BODY_BYTES", "server", "max_body_bytes", max_body_bytes, "1048576", 1024,
          1073741824),
    STR("EZ_PG_DSN", "postgres", "dsn", pg_dsn,
        "host=localhost user=postgres password=postgres dbname=ezapi port=5432 sslmode=disable",
        F_MASK_PASSWORD),
    STR("EZ_LOG_PG_DSN", "postgres", "log_dsn", log_pg_dsn, "", F_MASK_PASSWORD),
    STR("EZ_REDIS_ADDR", "redis", "addr", redis_addr, "localhost:6379", 0),
    SECRET("EZ_REDIS_PASSWORD", "redis", "password", redis_password),
    INT("EZ_REDIS_DB", "redis", "db", redis_db, "0", 0, 15),
    STR("EZ_ZMQ_ENDPOINT", "background", "zmq_endpoint", zmq_endpoint,
        "ipc:///tmp/ezapi-background.ipc", 0),
    STR("EZ_CORS_ALLOW_ORIGINS", "cors", "allow_origins", cors_allow_origins, "*", 0),
    SECRET("EZ_ADMIN_TOKEN", "auth", "admin_token", admin_token),
    SECRET("EZ_INTERNAL_STATS_TOKEN", "auth", "internal_token", internal_token),
    BOOL("EZ_INTERNAL_ALLOW_ANON", "auth", "internal_allow_anon", internal_allow_anon, "false"),
    SECRET("EZ_JWT_SECRET", "auth", "jwt_secret", jwt_secret),
    ENUM("EZ_LOG_LEVEL", "log", "level", log_level, "info", log_level_names),
    INT("EZ_LOG_QUEUE", "log", "queue_capacity", log_queue, "10000", 1, 10000000),
    INT("EZ_LOG_BATCH_SIZE", "log", "batch_size", log_batch_size, "10", 1, 100000),
    INT("EZ_LOG_FLUSH_MS", "log", "flush_ms", log_flush_ms, "1000", 1, 600000),
    INT("EZ_LOG_RETENTION_DAYS", "log", "retention_days", log_retention_days, "30", 0, 36500),
    INT64("EZ_LOG_MAX_RECORDS", "log", "max_records", log_max_records, "1000000", 0, 1000000000000),
    ENUM("EZ_LOG_PARTITIONING", "log", "partitioning", log_partitioning, "off", partitioning_names),
    STR("EZ_LOG_SPOOL_DIR", "log", "spool_dir", log_spool_dir, "./data/spool", 0),
    BOOL("EZ_SYNC_OUTBOX_ENABLED", "sync", "outbox_enabled", sync_outbox_enabled, "true"),
    INT("EZ_SYNC_OUTBOX_INTERVAL_SECONDS", "sync", "outbox_interval_seconds",
        sync_outbox_interval_seconds, "5", 1, YEAR_SECONDS),
    INT("EZ_SYNC_OUTBOX_BATCH_SIZE", "sync", "outbox_batch_size", sync_outbox_batch_size, "200", 1,
        10000),
    INT("EZ_SYNC_OUTBOX_MAX_RETRIES", "sync", "outbox_max_retries", sync_outbox_max_retries, "10",
        0, 1000),
    INT("EZ_SYNC_RECONCILE_SECONDS", "sync", "reconcile_seconds", sync_reconcile_seconds, "300", 0,
        YEAR_SECONDS),
    BOOL("EZ_MODEL_REGISTRY_ENABLED", "model_registry", "enabled", model_registry_enabled, "false"),
    STR("EZ_MODEL_REGISTRY_URL", "model_registry", "url", model_registry_url,
        "https://models.dev/api.json", F_MASK_PASSWORD),
    INT("EZ_MODEL_REGISTRY_REFRESH_SECONDS", "model_registry", "refresh_seconds",
        model_registry_refresh_seconds, "1800", 10, YEAR_SECONDS),
    STR("EZ_MODEL_REGISTRY_CACHE_DIR", "model_registry", "cache_dir", model_registry_cache_dir,
        "./data/model-registry", 0),
    INT("EZ_QUOTA_RESET_INTERVAL_SECONDS", "quota", "reset_interval_seconds",
        quota_reset_interval_seconds, "300", 1, YEAR_SECONDS),
    BOOL("EZ_OUTBOUND_ALLOW_PRIVATE", "security", "outbound_allow_private", outbound_allow_private,
         "false"),
};

#define N_SETTINGS EZ_ARRAY_LEN(settings)

/* Default file locations, tried in order when EZ_CONFIG_FILE is not set. */
static const char *const default_files[] = {"./config.ini", "./config/config.ini"};

/* State of one config_load call: where each value came from, and inih's reading position. */
struct load_ctx {
    struct ez_config *cfg;
    char *err;
    size_t errlen;
    bool failed;

    /* Origin of each setting's current value, for error messages. */
    int file_line[N_SETTINGS]; /* 0 = not from the file */
    bool from_env[N_SETTINGS];

    /* The INI file being read; inih only reports lines through our reader. */
    const char *path;
    FILE *fp;
    int lineno;
    int read_errno;
    bool line_indented;    /* the current raw line starts with a blank */
    bool section_seen;     /* a [section] line came since the last key */
    char last_section[64]; /* section and key of the last value handed to us, */
    char last_key[64];     /* to recognise inih's continuation lines */
};

/* Records the first error only: later ones are usually consequences of it. Returns -1. */
static int EZ_PRINTF(2, 3) set_error(struct load_ctx *ctx, const char *fmt, ...)
{
    if (ctx->failed)
        return EZ_ERR;
    ctx->failed = true;
    if (ctx->err != NULL && ctx->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, ctx->errlen, fmt, ap);
        va_end(ap);
    }
    return EZ_ERR;
}

/* " ([log] partitioning in FILE:LINE)" for a value from the file, "" for the environment. */
static void describe_origin(const struct load_ctx *ctx, size_t i, char *out, size_t outlen)
{
    const struct setting *s = &settings[i];
    if (ctx->from_env[i])
        out[0] = '\0';
    else if (ctx->file_line[i] > 0)
        snprintf(out, outlen, " ([%s] %s in %s:%d)", s->section, s->key, ctx->path,
                 ctx->file_line[i]);
    else
        snprintf(out, outlen, " (built-in default)");
}

/* A value fit for an error message: bounded, with control characters shown as '?'. */
static void quote_value(const char *value, char *out, size_t outlen)
{
    enum { MAX_SHOWN = 80 };
    size_t n = 0;
    for (const char *p = value; *p && n + 1 < outlen && n < MAX_SHOWN; p++)
        out[n++] = iscntrl((unsigned char)*p) ? '?' : *p;
    out[n] = '\0';
    if (strlen(value) > n && outlen > n + 3)
        memcpy(out + n, "...", 4);
}

/*
 * Fails setting i with `ENV: "value" <problem> (origin)`. value NULL (or a
 * secret) leaves the value out, so that secrets never reach a message.
 */
static int EZ_PRINTF(4, 5)
    value_error(struct load_ctx *ctx, size_t i, const char *value, const char *fmt, ...)
{
    char problem[256], origin[512], shown[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof(problem), fmt, ap);
    va_end(ap);
    describe_origin(ctx, i, origin, sizeof(origin));
    if (value == NULL || settings[i].type == T_SECRET)
        return set_error(ctx, "%s: the value %s%s", settings[i].env, problem, origin);
    quote_value(value, shown, sizeof(shown));
    return set_error(ctx, "%s: \"%s\" %s%s", settings[i].env, shown, problem, origin);
}

/* "1..256": every numeric setting has both bounds, so the message can always say them. */
static void describe_range(const struct setting *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%" PRId64 "..%" PRId64, s->min, s->max);
}

/* Whole-string decimal: 0 ok, -1 not a number, -2 a number beyond int64 (ERANGE). */
static int parse_decimal(const char *v, int64_t *out)
{
    /* strtoll would skip leading blanks: " 80" is a typo, not 80. */
    if (!(isdigit((unsigned char)v[0]) ||
          ((v[0] == '-' || v[0] == '+') && isdigit((unsigned char)v[1]))))
        return -1;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end != '\0')
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = n;
    return 0;
}

static int apply_number(struct load_ctx *ctx, size_t i, const char *value, void *dest)
{
    const struct setting *s = &settings[i];
    char range[64];
    int64_t n = 0;
    int rc = parse_decimal(value, &n);
    describe_range(s, range, sizeof(range));
    if (rc == -1)
        return value_error(ctx, i, value, "is not an integer (accepted: %s)", range);
    if (rc == -2 || n < s->min || n > s->max)
        return value_error(ctx, i, value, "is out of range (accepted: %s)", range);
    if (s->type == T_INT)
        *(int *)dest = (int)n;
    else
        *(int64_t *)dest = n;
    return EZ_OK;
}

static int apply_bool(struct load_ctx *ctx, size_t i, const char *value, bool *dest)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t k = 0; k < EZ_ARRAY_LEN(yes); k++) {
        if (strcasecmp(value, yes[k]) == 0) {
            *dest = true;
            return EZ_OK;
        }
        if (strcasecmp(value, no[k]) == 0) {
            *dest = false;
            return EZ_OK;
        }
    }
    return value_error(ctx, i, value,
                       "is not a boolean (accepted: true, false, 1, 0, yes, no, on, off)");
}

static int apply_enum(struct load_ctx *ctx, size_t i, const char *value, int *dest)
{
    const char *const *names = settings[i].names;
    char list[128] = "";
    for (int k = 0; names[k] != NULL; k++) {
        if (strcasecmp(value, names[k]) == 0) {
            *dest = k;
            return EZ_OK;
        }
        size_t used = strlen(list);
        snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "", names[k]);
    }
    return value_error(ctx, i, value, "is not one of %s", list);
}

static int apply_string(struct load_ctx *ctx, size_t i, const char *value, char **dest)
{
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return value_error(ctx, i, NULL, "contains a control character");
    /* inih's buffer dies with the callback, and the environment may change: keep a copy. */
    free(*dest);
    *dest = ez_strdup(value);
    return EZ_OK;
}

/* Parses value for setting i into ctx->cfg. 0 ok, -1 with the error recorded. */
static int apply_value(struct load_ctx *ctx, size_t i, const char *value)
{
    void *dest = (char *)ctx->cfg + settings[i].offset;
    switch (settings[i].type) {
    case T_INT:
    case T_INT64:
        return apply_number(ctx, i, value, dest);
    case T_BOOL:
        return apply_bool(ctx, i, value, dest);
    case T_ENUM:
        return apply_enum(ctx, i, value, dest);
    case T_STRING:
    case T_SECRET:
        return apply_string(ctx, i, value, dest);
    }
    return set_error(ctx, "%s: internal error: unknown setting type", settings[i].env);
}

static int find_setting(const char *section, const char *key)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcasecmp(settings[i].section, section) == 0 && strcasecmp(settings[i].key, key) == 0)
            return (int)i;
    return -1;
}

static bool known_section(const char *section)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcasecmp(settings[i].section, section) == 0)
            return true;
    return false;
}

/*
 * inih reader (fgets-like). It exists because Debian's inih is built without
 * INI_HANDLER_LINENO and silently splits lines longer than its buffer: we
 * count lines ourselves and turn an over-long line into an error.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct load_ctx *ctx = stream;
    if (fgets(str, num, ctx->fp) == NULL) {
        if (ferror(ctx->fp))
            ctx->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ctx->lineno++;
    size_t len = strlen(str);
    if (len > 0 && str[len - 1] != '\n') {
        /* The buffer filled up: fine if the line ends right here, too long otherwise. */
        int c = fgetc(ctx->fp);
        if (c != EOF && c != '\n') {
            while (c != EOF && c != '\n')
                c = fgetc(ctx->fp);
            set_error(ctx,
                      "%s:%d: line longer than %d characters; give this value in the "
                      "environment instead",
                      ctx->path, ctx->lineno, num - 1);
            str[0] = '\0';
        }
    }
    const char *start = str;
    if (ctx->lineno == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0)
        start += 3; /* UTF-8 BOM, which inih skips too */
    ctx->line_indented = (*start == ' ' || *start == '\t');
    /* inih takes an indented "[x]" after a key as more of that key's value, not as a section. */
    const char *text = start + strspn(start, " \t");
    if (*text == '[' && (!ctx->line_indented || ctx->section_seen || ctx->last_key[0] == '\0'))
        ctx->section_seen = true;
    return str;
}

/* True when inih hands us an indented line as more of the previous key's value. */
static bool is_continuation(const struct load_ctx *ctx, const char *section, const char *key)
{
    return ctx->line_indented && !ctx->section_seen && ctx->last_key[0] != '\0' &&
           strcmp(ctx->last_key, key) == 0 && strcmp(ctx->last_section, section) == 0;
}

static void warn_unknown(const struct load_ctx *ctx, const char *section, const char *key)
{
    if (known_section(section))
        log_warn("event=config_unknown_key at=%s:%d section=%s key=%s action=ignored", ctx->path,
                 ctx->lineno, section, key);
    else
        log_warn("event=config_unknown_section at=%s:%d section=%s key=%s action=ignored",
                 ctx->path, ctx->lineno, section[0] ? section : "(none)", key);
}

/* inih handler: value lives only during this call (apply_value copies what it keeps). */
static int on_ini_value(void *user, const char *section, const char *key, const char *value)
{
    struct load_ctx *ctx = user;
    if (ctx->failed)
        return 1; /* inih reads on after an error; the first one is what we report */
    bool continuation = is_continuation(ctx, section, key);
    snprintf(ctx->last_section, sizeof(ctx->last_section), "%s", section);
    snprintf(ctx->last_key, sizeof(ctx->last_key), "%s", key);
    ctx->section_seen = false;
    if (continuation) {
        set_error(ctx,
                  "%s:%d: indented line continues [%s] %s; multi-line values are not "
                  "supported, remove the indentation",
                  ctx->path, ctx->lineno, section, key);
        return 0;
    }
    int i = find_setting(section, key);
    if (i < 0) {
        warn_unknown(ctx, section, key);
        return 1;
    }
    if (ctx->file_line[i] > 0)
        log_warn("event=config_duplicate_key at=%s:%d section=%s key=%s previous_line=%d "
                 "action=last_wins",
                 ctx->path, ctx->lineno, settings[i].section, settings[i].key, ctx->file_line[i]);
    ctx->file_line[i] = ctx->lineno;
    return apply_value(ctx, (size_t)i, value) == EZ_OK;
}

/*
 * Opens the INI file in force: EZ_CONFIG_FILE (must exist), else the first
 * default location that exists. *fp stays NULL when there is no file at all.
 */
static int open_config_file(struct load_ctx *ctx, const char *(*getenv_fn)(const char *), FILE **fp)
{
    const char *named = getenv_fn("EZ_CONFIG_FILE");
    *fp = NULL;
    if (named != NULL && named[0] != '\0') {
        ctx->path = named;
        *fp = fopen(named, "r");
        if (*fp == NULL)
            return set_error(ctx, "EZ_CONFIG_FILE: cannot open \"%s\": %s", named, strerror(errno));
        return EZ_OK;
    }
    for (size_t k = 0; k < EZ_ARRAY_LEN(default_files); k++) {
        *fp = fopen(default_files[k], "r");
        if (*fp != NULL) {
            ctx->path = default_files[k];
            return EZ_OK;
        }
        /* Absent is fine; present but unreadable is a mistake worth stopping for. */
        if (errno != ENOENT)
            return set_error(ctx, "cannot open %s: %s", default_files[k], strerror(errno));
    }
    return EZ_OK;
}

static int load_file(struct load_ctx *ctx, const char *(*getenv_fn)(const char *))
{
    FILE *fp = NULL;
    if (open_config_file(ctx, getenv_fn, &fp) != EZ_OK)
        return EZ_ERR;
    if (fp == NULL)
        return EZ_OK;
    ctx->fp = fp;
    int rc = ini_parse_stream(read_line, ctx, on_ini_value, ctx);
    fclose(fp);
    ctx->fp = NULL;
    if (ctx->failed)
        return EZ_ERR;
    if (ctx->read_errno != 0)
        return set_error(ctx, "cannot read %s: %s", ctx->path, strerror(ctx->read_errno));
    if (rc > 0)
        return set_error(ctx, "%s:%d: expected \"key = value\", \"[section]\" or a comment",
                         ctx->path, rc);
    if (rc < 0)
        return set_error(ctx, "cannot parse %s (inih error %d)", ctx->path, rc);
    return EZ_OK;
}

static int load_defaults(struct load_ctx *ctx)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (apply_value(ctx, i, settings[i].def) != EZ_OK)
            return EZ_ERR;
    return EZ_OK;
}

static int load_env(struct load_ctx *ctx, const char *(*getenv_fn)(const char *))
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *value = getenv_fn(settings[i].env);
        if (value == NULL)
            continue;
        ctx->from_env[i] = true;
        if (apply_value(ctx, i, value) != EZ_OK)
            return EZ_ERR;
    }
    return EZ_OK;
}

/* host:port with a non-empty host (IPv6 in brackets) and a port in 1..65535. */
static bool is_host_port(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v)
        return false;
    size_t hostlen = (size_t)(colon - v);
    bool bracketed = v[0] == '[' && v[hostlen - 1] == ']' && hostlen > 2;
    if (!bracketed && memchr(v, ':', hostlen) != NULL)
        return false; /* a bare IPv6 address: where does the port start? */
    for (const char *p = v; p < colon; p++)
        if (isspace((unsigned char)*p))
            return false;
    int64_t port = 0;
    return parse_decimal(colon + 1, &port) == 0 && colon[1] != '+' && colon[1] != '-' &&
           port >= 1 && port <= 65535;
}

static const char *check_host_port(const char *v)
{
    return is_host_port(v) ? NULL : "is not host:port (port 1..65535)";
}

static const char *check_listen(const char *v)
{
    /* sockaddr_un.sun_path holds 108 bytes with the NUL. */
    enum { UNIX_PATH_MAX_LEN = 107 };
    if (strncmp(v, "unix:", 5) == 0) {
        size_t len = strlen(v + 5);
        if (len == 0)
            return "is not host:port or unix:/path (the path is empty)";
        return len <= UNIX_PATH_MAX_LEN ? NULL : "has a unix socket path over 107 bytes";
    }
    return is_host_port(v) ? NULL : "is not host:port (port 1..65535) or unix:/path";
}

/* True when v is one of the prefixes followed by something. */
static bool has_scheme(const char *v, const char *const *prefixes, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(prefixes[k]);
        if (strncmp(v, prefixes[k], len) == 0 && v[len] != '\0')
            return true;
    }
    return false;
}

static const char *check_zmq_endpoint(const char *v)
{
    static const char *const ok[] = {"ipc://", "tcp://", "inproc://"};
    return has_scheme(v, ok, EZ_ARRAY_LEN(ok)) ? NULL
                                               : "is not an ipc://, tcp:// or inproc:// endpoint";
}

static const char *check_registry_url(const char *v)
{
    static const char *const ok[] = {"http://", "https://", "file://"};
    return has_scheme(v, ok, EZ_ARRAY_LEN(ok)) ? NULL
                                               : "is not an http://, https:// or file:// URL";
}

static const char *check_directory(const char *v)
{
    return v[0] != '\0' ? NULL : "is empty (a directory is required)";
}

/* Redis-style sanity checks on the final values, whatever their source. */
static const struct {
    const char *env;
    const char *(*check)(const char *value); /* NULL = fine, else the problem */
} cross_checks[] = {
    {"EZ_FCGI_LISTEN", check_listen},
    {"EZ_REDIS_ADDR", check_host_port},
    {"EZ_ZMQ_ENDPOINT", check_zmq_endpoint},
    {"EZ_LOG_SPOOL_DIR", check_directory},
    {"EZ_MODEL_REGISTRY_URL", check_registry_url},
    {"EZ_MODEL_REGISTRY_CACHE_DIR", check_directory},
};

static int cross_check(struct load_ctx *ctx)
{
    for (size_t k = 0; k < EZ_ARRAY_LEN(cross_checks); k++) {
        for (size_t i = 0; i < N_SETTINGS; i++) {
            if (strcmp(settings[i].env, cross_checks[k].env) != 0)
                continue;
            const char *value = *(char **)((char *)ctx->cfg + settings[i].offset);
            const char *problem = cross_checks[k].check(value);
            if (problem != NULL)
                return value_error(ctx, i, value, "%s", problem);
        }
    }
    return EZ_OK;
}

static const char *default_getenv(const char *name)
{
    return getenv(name);
}

int config_load(struct ez_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                size_t errlen)
{
    struct ez_config fresh = {0};
    struct load_ctx ctx = {.cfg = &fresh, .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (getenv_fn == NULL)
        getenv_fn = default_getenv;

    /* Lowest precedence first: each later source overwrites what it sets. */
    if (load_defaults(&ctx) != EZ_OK || load_file(&ctx, getenv_fn) != EZ_OK ||
        load_env(&ctx, getenv_fn) != EZ_OK || cross_check(&ctx) != EZ_OK) {
        config_free(&fresh);
        return EZ_ERR;
    }
    log_info("event=config_loaded file=%s", ctx.path ? ctx.path : "(none)");
    *cfg = fresh;
    return EZ_OK;
}

void config_free(struct ez_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].type != T_STRING && settings[i].type != T_SECRET)
            continue;
        char **field = (char **)((char *)cfg + settings[i].offset);
        free(*field);
        *field = NULL;
    }
}

static bool is_password_key(const char *key, size_t len)
{
    return (len == 8 && strncmp(key, "password", 8) == 0) ||
           (len == 11 && strncmp(key, "sslpassword", 11) == 0);
}

/* End of a libpq conninfo value: 'quoted' or bare, with backslash escapes in both. */
static const char *skip_conninfo_value(const char *p)
{
    if (*p == '\'') {
        for (p++; *p && *p != '\''; p++)
            if (*p == '\\' && p[1] != '\0')
                p++;
        return *p ? p + 1 : p;
    }
    for (; *p && !isspace((unsigned char)*p); p++)
        if (*p == '\\' && p[1] != '\0')
            p++;
    return p;
}

/* libpq keyword form: "host=h password=secret" -> "host=h password=***". */
static void mask_conninfo(const char *s, buf_t *b)
{
    const char *p = s;
    while (*p) {
        const char *start = p;
        while (isspace((unsigned char)*p))
            p++;
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t keylen = (size_t)(p - key);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') {
            buf_append(b, start, (size_t)(p - start)); /* not key=value: keep as written */
            continue;
        }
        for (p++; isspace((unsigned char)*p); p++)
            ;
        buf_append(b, start, (size_t)(p - start));
        const char *value = p;
        p = skip_conninfo_value(p);
        if (is_password_key(key, keylen))
            buf_puts(b, "***");
        else
            buf_append(b, value, (size_t)(p - value));
    }
}

/* URI form: "scheme://user:secret@host/db?password=x" -> "scheme://user:***@host/db?password=***".
 */
static void mask_uri(const char *s, const char *authority, buf_t *b)
{
    size_t auth_len = strcspn(authority, "/?#");
    const char *at = NULL;
    for (const char *p = authority; p < authority + auth_len; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(authority, ':', (size_t)(at - authority)) : NULL;
    const char *p = s;
    if (colon != NULL) {
        buf_append(b, s, (size_t)(colon + 1 - s));
        buf_puts(b, "***");
        p = at;
    }
    /* Query parameters: libpq accepts ?password=... too. */
    bool in_query = false;
    while (*p) {
        bool param_start = in_query && (p[-1] == '?' || p[-1] == '&');
        size_t keylen = strcspn(p, "=&#");
        if (param_start && p[keylen] == '=' && is_password_key(p, keylen)) {
            buf_append(b, p, keylen + 1);
            buf_puts(b, "***");
            p += keylen + 1;
            p += strcspn(p, "&#");
            continue;
        }
        if (*p == '?')
            in_query = true;
        else if (*p == '#')
            in_query = false;
        buf_append(b, p, 1);
        p++;
    }
}

/* Appends value to b with every embedded password replaced by "***". */
static void mask_passwords(const char *value, buf_t *b)
{
    /* A URI starts with a scheme (letter, then letters, digits, + - .) and "://". */
    const char *p = value;
    if (isalpha((unsigned char)*p)) {
        while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
            p++;
        if (strncmp(p, "://", 3) == 0) {
            mask_uri(value, p + 3, b);
            return;
        }
    }
    mask_conninfo(value, b);
}

/* The printable form of setting i: secrets as "(set)"/"", passwords masked. */
static void format_setting(const struct ez_config *cfg, const struct setting *s, buf_t *b)
{
    const void *src = (const char *)cfg + s->offset;
    const char *str = NULL;
    switch (s->type) {
    case T_INT:
        buf_printf(b, "%d", *(const int *)src);
        return;
    case T_INT64:
        buf_printf(b, "%" PRId64, *(const int64_t *)src);
        return;
    case T_BOOL:
        buf_puts(b, *(const bool *)src ? "true" : "false");
        return;
    case T_ENUM: {
        int v = *(const int *)src;
        int count = 0;
        while (s->names[count] != NULL)
            count++;
        if (v >= 0 && v < count)
            buf_puts(b, s->names[v]);
        else
            buf_printf(b, "%d", v);
        return;
    }
    case T_SECRET:
        str = *(char *const *)src;
        buf_puts(b, str != NULL && str[0] != '\0' ? "(set)" : "");
        return;
    case T_STRING:
        str = *(char *const *)src;
        if (str == NULL)
            return;
        if (s->flags & F_MASK_PASSWORD)
            mask_passwords(str, b);
        else
            buf_puts(b, str);
        return;
    }
}

void config_print(const struct ez_config *cfg, FILE *out)
{
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        buf_reset(&b);
        format_setting(cfg, &settings[i], &b);
        fprintf(out, "%s=%s\n", settings[i].env, b.data ? b.data : "");
    }
    buf_free(&b);
}

const char *config_log_dsn(const struct ez_config *cfg)
{
    if (cfg->log_pg_dsn != NULL && cfg->log_pg_dsn[0] != '\0')
        return cfg->log_pg_dsn;
    return cfg->pg_dsn != NULL ? cfg->pg_dsn : "";
}
