/* Unit tests for common/config.c: sources and precedence, validation, cross-checks, redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* ---- fixtures ---------------------------------------------------------- */

/* The environment config_load sees: "NAME=value" strings, NULL-terminated. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    size_t n = strlen(name);
    for (const char *const *e = fake_env; e != NULL && *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static char workdir[64];

/* Each test runs in an empty scratch directory, so ./config.ini is ours to write. */
static int group_setup(void **state)
{
    (void)state;
    snprintf(workdir, sizeof(workdir), "/tmp/test_config.XXXXXX");
    if (mkdtemp(workdir) == NULL || chdir(workdir) != 0)
        return -1;
    return 0;
}

static int remove_files(void **state)
{
    (void)state;
    unlink("config.ini");
    unlink("config/config.ini");
    rmdir("config");
    unlink("other.ini");
    return 0;
}

static int group_teardown(void **state)
{
    remove_files(state);
    if (chdir("/") != 0)
        return -1;
    return rmdir(workdir);
}

static void write_file(const char *path, const char *text)
{
    if (strchr(path, '/') != NULL)
        mkdir("config", 0700);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int load(const char *const *env, struct ez_config *cfg, char *err, size_t errlen)
{
    fake_env = env;
    memset(cfg, 0, sizeof(*cfg));
    return config_load(cfg, fake_getenv, err, errlen);
}

/* config_print's output; the caller frees it. */
static char *print_config(const struct ez_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print(cfg, f);
    assert_int_equal(fclose(f), 0);
    return text;
}

/* The printed value of one variable (from its "NAME=" line) into out. */
static void printed_value(const struct ez_config *cfg, const char *name, char *out, size_t outlen)
{
    char *text = print_config(cfg);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "\n%s=", name);
    /* Search with a leading newline so EZ_PG_DSN does not match EZ_LOG_PG_DSN. */
    size_t tlen = strlen(text);
    char *haystack = malloc(tlen + 2);
    assert_non_null(haystack);
    haystack[0] = '\n';
    memcpy(haystack + 1, text, tlen + 1);
    const char *line = strstr(haystack, prefix);
    assert_non_null(line);
    line += strlen(prefix);
    snprintf(out, outlen, "%.*s", (int)strcspn(line, "\n"), line);
    free(haystack);
    free(text);
}

/* Captures what the log writes to stderr between the two calls. */
static int saved_stderr = -1;
static FILE *captured;

static void capture_stderr(void)
{
    fflush(stderr);
    captured = tmpfile();
    assert_non_null(captured);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(captured), STDERR_FILENO) >= 0);
}

static void end_capture(char *out, size_t outlen)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    rewind(captured);
    size_t n = fread(out, 1, outlen - 1, captured);
    out[n] = '\0';
    fclose(captured);
}

/* ---- defaults and every key ------------------------------------------- */

static const char defaults_printed[] =
    "EZ_API_PORT=8080\n"
    "EZ_FCGI_LISTEN=127.0.0.1:9000\n"
    "EZ_FCGI_PROCESSES=2\n"
    "EZ_FCGI_THREADS=4\n"
    "EZ_MAX_BODY_BYTES=1048576\n"
    "EZ_PG_DSN=host=localhost user=postgres password=*** dbname=ezapi port=5432 sslmode=disable\n"
    "EZ_LOG_PG_DSN=\n"
    "EZ_REDIS_ADDR=localhost:6379\n"
    "EZ_REDIS_PASSWORD=\n"
    "EZ_REDIS_DB=0\n"
    "EZ_ZMQ_ENDPOINT=ipc:///tmp/ezapi-background.ipc\n"
    "EZ_CORS_ALLOW_ORIGINS=*\n"
    "EZ_ADMIN_TOKEN=\n"
    "EZ_INTERNAL_STATS_TOKEN=\n"
    "EZ_INTERNAL_ALLOW_ANON=false\n"
    "EZ_JWT_SECRET=\n"
    "EZ_LOG_LEVEL=info\n"
    "EZ_LOG_QUEUE=10000\n"
    "EZ_LOG_BATCH_SIZE=10\n"
    "EZ_LOG_FLUSH_MS=1000\n"
    "EZ_LOG_RETENTION_DAYS=30\n"
    "EZ_LOG_MAX_RECORDS=1000000\n"
    "EZ_LOG_PARTITIONING=off\n"
    "EZ_LOG_SPOOL_DIR=./data/spool\n"
    "EZ_SYNC_OUTBOX_ENABLED=true\n"
    "EZ_SYNC_OUTBOX_INTERVAL_SECONDS=5\n"
    "EZ_SYNC_OUTBOX_BATCH_SIZE=200\n"
    "EZ_SYNC_OUTBOX_MAX_RETRIES=10\n"
    "EZ_SYNC_RECONCILE_SECONDS=300\n"
    "EZ_MODEL_REGISTRY_ENABLED=false\n"
    "EZ_MODEL_REGISTRY_URL=https://models.dev/api.json\n"
    "EZ_MODEL_REGISTRY_REFRESH_SECONDS=1800\n"
    "EZ_MODEL_REGISTRY_CACHE_DIR=./data/model-registry\n"
    "EZ_QUOTA_RESET_INTERVAL_SECONDS=300\n"
    "EZ_OUTBOUND_ALLOW_PRIVATE=false\n";

static void test_defaults(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512];
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    assert_string_equal(err, "");

    char *text = print_config(&cfg);
    assert_string_equal(text, defaults_printed);
    free(text);

    assert_int_equal(cfg.log_level, EZ_LOG_INFO);
    assert_int_equal(cfg.log_partitioning, EZ_PART_OFF);
    assert_string_equal(cfg.pg_dsn, "host=localhost user=postgres password=postgres dbname=ezapi "
                                    "port=5432 sslmode=disable");
    const char *strings[] = {cfg.fcgi_listen,
                             cfg.pg_dsn,
                             cfg.log_pg_dsn,
                             cfg.redis_addr,
                             cfg.redis_password,
                             cfg.zmq_endpoint,
                             cfg.cors_allow_origins,
                             cfg.admin_token,
                             cfg.internal_token,
                             cfg.jwt_secret,
                             cfg.log_spool_dir,
                             cfg.model_registry_url,
                             cfg.model_registry_cache_dir};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        assert_non_null(strings[i]);
    assert_ptr_equal(config_log_dsn(&cfg), cfg.pg_dsn);
    config_free(&cfg);
}

/* Every [section] key of CONFIG.md, set away from its default. */
static const char every_key_ini[] = "[server]\n"
                                    "port = 8081\n"
                                    "fcgi_listen = unix:/run/ezapi/fcgi.sock\n"
                                    "processes = 3\n"
                                    "threads = 16\n"
                                    "max_body_bytes = 2048\n"
                                    "[postgres]\n"
                                    "dsn = host=db user=app password=hunter2 dbname=ez\n"
                                    "log_dsn = postgres://log:s3cret@logdb/ezlog\n"
                                    "[redis]\n"
                                    "addr = redis.internal:6380\n"
                                    "password = redispw\n"
                                    "db = 2\n"
                                    "[background]\n"
                                    "zmq_endpoint = tcp://10.0.0.5:5555\n"
                                    "[cors]\n"
                                    "allow_origins = https://a.example,https://b.example\n"
                                    "[auth]\n"
                                    "admin_token = adm\n"
                                    "internal_token = int\n"
                                    "internal_allow_anon = yes\n"
                                    "jwt_secret = jwt\n"
                                    "[log]\n"
                                    "level = debug\n"
                                    "queue_capacity = 500\n"
                                    "batch_size = 50\n"
                                    "flush_ms = 250\n"
                                    "retention_days = 0\n"
                                    "max_records = 0\n"
                                    "partitioning = day\n"
                                    "spool_dir = /var/lib/ezapi/spool\n"
                                    "[sync]\n"
                                    "outbox_enabled = off\n"
                                    "outbox_interval_seconds = 7\n"
                                    "outbox_batch_size = 100\n"
                                    "outbox_max_retries = 0\n"
                                    "reconcile_seconds = 0\n"
                                    "[model_registry]\n"
                                    "enabled = on\n"
                                    "url = file:///etc/ezapi/models.json\n"
                                    "refresh_seconds = 10\n"
                                    "cache_dir = /var/cache/ezapi\n"
                                    "[quota]\n"
                                    "reset_interval_seconds = 60\n"
                                    "[security]\n"
                                    "outbound_allow_private = true\n";

static const char every_key_printed[] =
    "EZ_API_PORT=8081\n"
    "EZ_FCGI_LISTEN=unix:/run/ezapi/fcgi.sock\n"
    "EZ_FCGI_PROCESSES=3\n"
    "EZ_FCGI_THREADS=16\n"
    "EZ_MAX_BODY_BYTES=2048\n"
    "EZ_PG_DSN=host=db user=app password=*** dbname=ez\n"
    "EZ_LOG_PG_DSN=postgres://log:***@logdb/ezlog\n"
    "EZ_REDIS_ADDR=redis.internal:6380\n"
    "EZ_REDIS_PASSWORD=(set)\n"
    "EZ_REDIS_DB=2\n"
    "EZ_ZMQ_ENDPOINT=tcp://10.0.0.5:5555\n"
    "EZ_CORS_ALLOW_ORIGINS=https://a.example,https://b.example\n"
    "EZ_ADMIN_TOKEN=(set)\n"
    "EZ_INTERNAL_STATS_TOKEN=(set)\n"
    "EZ_INTERNAL_ALLOW_ANON=true\n"
    "EZ_JWT_SECRET=(set)\n"
    "EZ_LOG_LEVEL=debug\n"
    "EZ_LOG_QUEUE=500\n"
    "EZ_LOG_BATCH_SIZE=50\n"
    "EZ_LOG_FLUSH_MS=250\n"
    "EZ_LOG_RETENTION_DAYS=0\n"
    "EZ_LOG_MAX_RECORDS=0\n"
    "EZ_LOG_PARTITIONING=day\n"
    "EZ_LOG_SPOOL_DIR=/var/lib/ezapi/spool\n"
    "EZ_SYNC_OUTBOX_ENABLED=false\n"
    "EZ_SYNC_OUTBOX_INTERVAL_SECONDS=7\n"
    "EZ_SYNC_OUTBOX_BATCH_SIZE=100\n"
    "EZ_SYNC_OUTBOX_MAX_RETRIES=0\n"
    "EZ_SYNC_RECONCILE_SECONDS=0\n"
    "EZ_MODEL_REGISTRY_ENABLED=true\n"
    "EZ_MODEL_REGISTRY_URL=file:///etc/ezapi/models.json\n"
    "EZ_MODEL_REGISTRY_REFRESH_SECONDS=10\n"
    "EZ_MODEL_REGISTRY_CACHE_DIR=/var/cache/ezapi\n"
    "EZ_QUOTA_RESET_INTERVAL_SECONDS=60\n"
    "EZ_OUTBOUND_ALLOW_PRIVATE=true\n";

static void test_every_key_from_file(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512];
    write_file("config.ini", every_key_ini);
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    char *text = print_config(&cfg);
    assert_string_equal(text, every_key_printed);
    free(text);
    /* The struct holds the real values; only the printout is masked. */
    assert_string_equal(cfg.admin_token, "adm");
    assert_string_equal(cfg.redis_password, "redispw");
    assert_string_equal(cfg.log_pg_dsn, "postgres://log:s3cret@logdb/ezlog");
    assert_int_equal(cfg.log_level, EZ_LOG_DEBUG);
    assert_int_equal(cfg.log_partitioning, EZ_PART_DAY);
    assert_string_equal(config_log_dsn(&cfg), "postgres://log:s3cret@logdb/ezlog");
    config_free(&cfg);
}

/* ---- precedence and file location ------------------------------------- */

static void test_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *file; /* ./config.ini, NULL = none */
        const char *env[3];
        int port, threads, processes;
    } cases[] = {
        {NULL, {NULL}, 8080, 4, 2},
        {"[server]\nport = 9001\nthreads = 8\n", {NULL}, 9001, 8, 2},
        {"[server]\nport = 9001\nthreads = 8\n", {"EZ_API_PORT=9002", NULL}, 9002, 8, 2},
        {"[server]\nport = 9001\n", {"EZ_FCGI_THREADS=5", "EZ_FCGI_PROCESSES=7", NULL}, 9001, 5, 7},
        {NULL, {"EZ_FCGI_THREADS=5", NULL}, 8080, 5, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ez_config cfg;
        char err[512];
        remove_files(NULL);
        if (cases[i].file != NULL)
            write_file("config.ini", cases[i].file);
        assert_int_equal(load(cases[i].env, &cfg, err, sizeof(err)), 0);
        assert_int_equal(cfg.api_port, cases[i].port);
        assert_int_equal(cfg.fcgi_threads, cases[i].threads);
        assert_int_equal(cfg.fcgi_processes, cases[i].processes);
        config_free(&cfg);
    }
}

static void test_file_locations(void **state)
{
    (void)state;
    static const struct {
        const char *root, *sub, *other; /* ./config.ini, ./config/config.ini, ./other.ini */
        const char *env[2];
        int port;
    } cases[] = {
        {NULL, "[server]\nport=2002\n", NULL, {NULL}, 2002},
        {"[server]\nport=2001\n", "[server]\nport=2002\n", NULL, {NULL}, 2001},
        {"[server]\nport=2001\n",
         NULL,
         "[server]\nport=2003\n",
         {"EZ_CONFIG_FILE=other.ini"},
         2003},
        {"[server]\nport=2001\n", NULL, "[server]\nport=2003\n", {"EZ_CONFIG_FILE="}, 2001},
        {NULL, NULL, "[server]\nport=2003\n", {NULL}, 8080},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ez_config cfg;
        char err[512];
        remove_files(NULL);
        if (cases[i].root)
            write_file("config.ini", cases[i].root);
        if (cases[i].sub)
            write_file("config/config.ini", cases[i].sub);
        if (cases[i].other)
            write_file("other.ini", cases[i].other);
        assert_int_equal(load(cases[i].env, &cfg, err, sizeof(err)), 0);
        assert_int_equal(cfg.api_port, cases[i].port);
        config_free(&cfg);
    }
}

static void test_named_file_missing(void **state)
{
    (void)state;
    static const char *const env[] = {"EZ_CONFIG_FILE=./nope.ini", NULL};
    struct ez_config cfg;
    char err[512];
    write_file("config.ini", "[server]\nport = 9001\n"); /* no fallback to the default file */
    assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err,
                        "EZ_CONFIG_FILE: cannot open \"./nope.ini\": No such file or directory");
}

static void test_named_file_is_directory(void **state)
{
    (void)state;
    static const char *const env[] = {"EZ_CONFIG_FILE=.", NULL};
    struct ez_config cfg;
    char err[512];
    assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot read .: Is a directory");
}

/* ---- bad values ------------------------------------------------------- */

static void test_bad_env_values(void **state)
{
    (void)state;
    static const struct {
        const char *var;
        const char *err;
    } cases[] = {
        {"EZ_FCGI_THREADS=abc", "EZ_FCGI_THREADS: \"abc\" is not an integer (accepted: 1..256)"},
        {"EZ_FCGI_THREADS=0", "EZ_FCGI_THREADS: \"0\" is out of range (accepted: 1..256)"},
        {"EZ_FCGI_THREADS=257", "EZ_FCGI_THREADS: \"257\" is out of range (accepted: 1..256)"},
        {"EZ_FCGI_PROCESSES=65", "EZ_FCGI_PROCESSES: \"65\" is out of range (accepted: 1..64)"},
        {"EZ_API_PORT=", "EZ_API_PORT: \"\" is not an integer (accepted: 1..65535)"},
        {"EZ_API_PORT= 80", "EZ_API_PORT: \" 80\" is not an integer (accepted: 1..65535)"},
        {"EZ_API_PORT=80 ", "EZ_API_PORT: \"80 \" is not an integer (accepted: 1..65535)"},
        {"EZ_API_PORT=0x50", "EZ_API_PORT: \"0x50\" is not an integer (accepted: 1..65535)"},
        {"EZ_API_PORT=65536", "EZ_API_PORT: \"65536\" is out of range (accepted: 1..65535)"},
        {"EZ_REDIS_DB=16", "EZ_REDIS_DB: \"16\" is out of range (accepted: 0..15)"},
        {"EZ_REDIS_DB=-1", "EZ_REDIS_DB: \"-1\" is out of range (accepted: 0..15)"},
        {"EZ_MAX_BODY_BYTES=1023",
         "EZ_MAX_BODY_BYTES: \"1023\" is out of range (accepted: 1024..1073741824)"},
        {"EZ_MAX_BODY_BYTES=99999999999999999999",
         "EZ_MAX_BODY_BYTES: \"99999999999999999999\" is out of range (accepted: "
         "1024..1073741824)"},
        {"EZ_LOG_MAX_RECORDS=1000000000001",
         "EZ_LOG_MAX_RECORDS: \"1000000000001\" is out of range (accepted: 0..1000000000000)"},
        {"EZ_LOG_QUEUE=10000001",
         "EZ_LOG_QUEUE: \"10000001\" is out of range (accepted: 1..10000000)"},
        {"EZ_LOG_FLUSH_MS=0", "EZ_LOG_FLUSH_MS: \"0\" is out of range (accepted: 1..600000)"},
        {"EZ_SYNC_OUTBOX_MAX_RETRIES=1001",
         "EZ_SYNC_OUTBOX_MAX_RETRIES: \"1001\" is out of range (accepted: 0..1000)"},
        {"EZ_SYNC_RECONCILE_SECONDS=-1",
         "EZ_SYNC_RECONCILE_SECONDS: \"-1\" is out of range (accepted: 0..31536000)"},
        {"EZ_MODEL_REGISTRY_REFRESH_SECONDS=9",
         "EZ_MODEL_REGISTRY_REFRESH_SECONDS: \"9\" is out of range (accepted: 10..31536000)"},
        {"EZ_LOG_PARTITIONING=week", "EZ_LOG_PARTITIONING: \"week\" is not one of off, month, day"},
        {"EZ_LOG_LEVEL=verbose",
         "EZ_LOG_LEVEL: \"verbose\" is not one of debug, info, warn, error"},
        {"EZ_INTERNAL_ALLOW_ANON=maybe",
         "EZ_INTERNAL_ALLOW_ANON: \"maybe\" is not a boolean (accepted: true, false, 1, 0, yes, "
         "no, on, off)"},
        {"EZ_SYNC_OUTBOX_ENABLED=",
         "EZ_SYNC_OUTBOX_ENABLED: \"\" is not a boolean (accepted: true, false, 1, 0, yes, no, "
         "on, off)"},
        {"EZ_CORS_ALLOW_ORIGINS=https://a.example\r\nX-Evil: 1",
         "EZ_CORS_ALLOW_ORIGINS: the value contains a control character"},
        /* A secret is never echoed, even when it is the bad value. */
        {"EZ_ADMIN_TOKEN=tok3n\n", "EZ_ADMIN_TOKEN: the value contains a control character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].var, NULL};
        struct ez_config cfg;
        char err[512];
        assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
        assert_string_equal(err, cases[i].err);
        /* Nothing of the fresh struct leaks into the caller's on failure. */
        static const struct ez_config zero;
        assert_memory_equal(&cfg, &zero, sizeof(cfg));
    }
}

/* A line longer than inih's buffer; the caller frees it. */
static char *long_line_ini(void)
{
    char *text = malloc(512);
    assert_non_null(text);
    snprintf(text, 512, "[postgres]\ndsn = host=db password=%0300d\n[server]\nport = 1\n", 7);
    return text;
}

static void test_bad_file_values(void **state)
{
    (void)state;
    static const struct {
        const char *ini;
        const char *err;
    } cases[] = {
        {"[log]\npartitioning = week\n",
         "EZ_LOG_PARTITIONING: \"week\" is not one of off, month, day ([log] partitioning in "
         "./config.ini:2)"},
        {"; comment\n[server]\n\nthreads = abc\n",
         "EZ_FCGI_THREADS: \"abc\" is not an integer (accepted: 1..256) ([server] threads in "
         "./config.ini:4)"},
        {"[auth]\ninternal_allow_anon = maybe\n",
         "EZ_INTERNAL_ALLOW_ANON: \"maybe\" is not a boolean (accepted: true, false, 1, 0, yes, "
         "no, on, off) ([auth] internal_allow_anon in ./config.ini:2)"},
        {"[server]\nport =\n",
         "EZ_API_PORT: \"\" is not an integer (accepted: 1..65535) ([server] port in "
         "./config.ini:2)"},
        {"[server]\nport = 8080\nthis is not ini\n",
         "./config.ini:3: expected \"key = value\", \"[section]\" or a comment"},
        {"[server\nport = 8080\n", "./config.ini:1: expected \"key = value\", \"[section]\" or a "
                                   "comment"},
        /* inih would fold these lines into the previous key's value. */
        {"[server]\nport = 8080\n  threads = 4\n",
         "./config.ini:3: indented line continues [server] port; multi-line values are not "
         "supported, remove the indentation"},
        {"[server]\nport = 8080\n  [log]\n",
         "./config.ini:3: indented line continues [server] port; multi-line values are not "
         "supported, remove the indentation"},
        /* Every source is validated, even a file value the environment overrides. */
        {"[server]\nport = http\n",
         "EZ_API_PORT: \"http\" is not an integer (accepted: 1..65535) ([server] port in "
         "./config.ini:2)"},
    };
    static const char *const env[] = {"EZ_API_PORT=80", NULL};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ez_config cfg;
        char err[512];
        write_file("config.ini", cases[i].ini);
        assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
        assert_string_equal(err, cases[i].err);
    }
}

static void test_long_line(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512];
    char *ini = long_line_ini();
    write_file("config.ini", ini);
    free(ini);
    assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "./config.ini:2: line longer than "));
    assert_null(strstr(err, "0000007")); /* the value (a password here) stays out */
}

static void test_indentation_that_is_not_continuation(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512];
    /* The first key after a section and indented comments are what they look like. */
    write_file("config.ini", "[server]\n  port = 9001\n  ; a comment\n[log]\n\tlevel = warn\n");
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.api_port, 9001);
    assert_int_equal(cfg.log_level, EZ_LOG_WARN);
    config_free(&cfg);
}

/* ---- warnings --------------------------------------------------------- */

static void test_unknown_keys_only_warn(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512], log[4096];
    write_file("config.ini", "orphan = 1\n"
                             "[server]\n"
                             "port = 9001\n"
                             "thread = 4\n"
                             "[nosuch]\n"
                             "token = secretvalue\n");
    capture_stderr();
    int rc = load(env, &cfg, err, sizeof(err));
    end_capture(log, sizeof(log));
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.api_port, 9001);
    assert_non_null(strstr(log, "event=config_unknown_section at=./config.ini:1 section=(none) "
                                "key=orphan"));
    assert_non_null(strstr(log, "event=config_unknown_key at=./config.ini:4 section=server "
                                "key=thread"));
    assert_non_null(strstr(log, "event=config_unknown_section at=./config.ini:6 section=nosuch "
                                "key=token"));
    assert_null(strstr(log, "secretvalue"));
    config_free(&cfg);
}

static void test_duplicate_key_last_wins(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512], log[4096];
    write_file("config.ini", "[server]\nport = 9001\nport = 9002\n");
    capture_stderr();
    int rc = load(env, &cfg, err, sizeof(err));
    end_capture(log, sizeof(log));
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.api_port, 9002);
    assert_non_null(strstr(log, "event=config_duplicate_key at=./config.ini:3 section=server "
                                "key=port previous_line=2"));
    config_free(&cfg);
}

/* ---- accepted values -------------------------------------------------- */

static void test_good_values(void **state)
{
    (void)state;
    static const struct {
        const char *var;
        const char *name;
        const char *printed;
    } cases[] = {
        {"EZ_INTERNAL_ALLOW_ANON=TRUE", "EZ_INTERNAL_ALLOW_ANON", "true"},
        {"EZ_INTERNAL_ALLOW_ANON=Yes", "EZ_INTERNAL_ALLOW_ANON", "true"},
        {"EZ_INTERNAL_ALLOW_ANON=on", "EZ_INTERNAL_ALLOW_ANON", "true"},
        {"EZ_INTERNAL_ALLOW_ANON=1", "EZ_INTERNAL_ALLOW_ANON", "true"},
        {"EZ_SYNC_OUTBOX_ENABLED=Off", "EZ_SYNC_OUTBOX_ENABLED", "false"},
        {"EZ_SYNC_OUTBOX_ENABLED=NO", "EZ_SYNC_OUTBOX_ENABLED", "false"},
        {"EZ_SYNC_OUTBOX_ENABLED=0", "EZ_SYNC_OUTBOX_ENABLED", "false"},
        {"EZ_SYNC_OUTBOX_ENABLED=false", "EZ_SYNC_OUTBOX_ENABLED", "false"},
        {"EZ_LOG_LEVEL=WARN", "EZ_LOG_LEVEL", "warn"},
        {"EZ_LOG_LEVEL=error", "EZ_LOG_LEVEL", "error"},
        {"EZ_LOG_PARTITIONING=Month", "EZ_LOG_PARTITIONING", "month"},
        {"EZ_API_PORT=1", "EZ_API_PORT", "1"},
        {"EZ_API_PORT=65535", "EZ_API_PORT", "65535"},
        {"EZ_MAX_BODY_BYTES=1073741824", "EZ_MAX_BODY_BYTES", "1073741824"},
        {"EZ_LOG_MAX_RECORDS=1000000000000", "EZ_LOG_MAX_RECORDS", "1000000000000"},
        {"EZ_REDIS_DB=15", "EZ_REDIS_DB", "15"},
        {"EZ_LOG_RETENTION_DAYS=36500", "EZ_LOG_RETENTION_DAYS", "36500"},
        {"EZ_SYNC_RECONCILE_SECONDS=0", "EZ_SYNC_RECONCILE_SECONDS", "0"},
        {"EZ_REDIS_ADDR=[::1]:6379", "EZ_REDIS_ADDR", "[::1]:6379"},
        {"EZ_FCGI_LISTEN=[::1]:9000", "EZ_FCGI_LISTEN", "[::1]:9000"},
        {"EZ_FCGI_LISTEN=0.0.0.0:9000", "EZ_FCGI_LISTEN", "0.0.0.0:9000"},
        {"EZ_FCGI_LISTEN=unix:/run/ezapi.sock", "EZ_FCGI_LISTEN", "unix:/run/ezapi.sock"},
        {"EZ_ZMQ_ENDPOINT=inproc://bg", "EZ_ZMQ_ENDPOINT", "inproc://bg"},
        {"EZ_ZMQ_ENDPOINT=tcp://*:5555", "EZ_ZMQ_ENDPOINT", "tcp://*:5555"},
        {"EZ_MODEL_REGISTRY_URL=http://registry.local/api.json", "EZ_MODEL_REGISTRY_URL",
         "http://registry.local/api.json"},
        {"EZ_CORS_ALLOW_ORIGINS=", "EZ_CORS_ALLOW_ORIGINS", ""},
        {"EZ_LOG_PG_DSN=host=logs dbname=ezlog", "EZ_LOG_PG_DSN", "host=logs dbname=ezlog"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].var, NULL};
        struct ez_config cfg;
        char err[512], value[256];
        assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
        printed_value(&cfg, cases[i].name, value, sizeof(value));
        assert_string_equal(value, cases[i].printed);
        config_free(&cfg);
    }
}

/* ---- cross-checks ----------------------------------------------------- */

static void test_cross_checks(void **state)
{
    (void)state;
    static const struct {
        const char *var;
        const char *err;
    } cases[] = {
        {"EZ_REDIS_ADDR=localhost",
         "EZ_REDIS_ADDR: \"localhost\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=localhost:0",
         "EZ_REDIS_ADDR: \"localhost:0\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=localhost:65536",
         "EZ_REDIS_ADDR: \"localhost:65536\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=localhost:+80",
         "EZ_REDIS_ADDR: \"localhost:+80\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=localhost:redis",
         "EZ_REDIS_ADDR: \"localhost:redis\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=:6379", "EZ_REDIS_ADDR: \":6379\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=::1:6379", "EZ_REDIS_ADDR: \"::1:6379\" is not host:port (port 1..65535)"},
        {"EZ_REDIS_ADDR=", "EZ_REDIS_ADDR: \"\" is not host:port (port 1..65535)"},
        {"EZ_FCGI_LISTEN=9000",
         "EZ_FCGI_LISTEN: \"9000\" is not host:port (port 1..65535) or unix:/path"},
        {"EZ_FCGI_LISTEN=:9000",
         "EZ_FCGI_LISTEN: \":9000\" is not host:port (port 1..65535) or unix:/path"},
        {"EZ_FCGI_LISTEN=unix:",
         "EZ_FCGI_LISTEN: \"unix:\" is not host:port or unix:/path (the path is empty)"},
        {"EZ_ZMQ_ENDPOINT=udp://x:1",
         "EZ_ZMQ_ENDPOINT: \"udp://x:1\" is not an ipc://, tcp:// or inproc:// endpoint"},
        {"EZ_ZMQ_ENDPOINT=ipc://",
         "EZ_ZMQ_ENDPOINT: \"ipc://\" is not an ipc://, tcp:// or inproc:// endpoint"},
        {"EZ_MODEL_REGISTRY_URL=ftp://models.dev/api.json",
         "EZ_MODEL_REGISTRY_URL: \"ftp://models.dev/api.json\" is not an http://, https:// or "
         "file:// URL"},
        {"EZ_MODEL_REGISTRY_URL=models.dev/api.json",
         "EZ_MODEL_REGISTRY_URL: \"models.dev/api.json\" is not an http://, https:// or file:// "
         "URL"},
        {"EZ_LOG_SPOOL_DIR=", "EZ_LOG_SPOOL_DIR: \"\" is empty (a directory is required)"},
        {"EZ_MODEL_REGISTRY_CACHE_DIR=",
         "EZ_MODEL_REGISTRY_CACHE_DIR: \"\" is empty (a directory is required)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].var, NULL};
        struct ez_config cfg;
        char err[512];
        assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
        assert_string_equal(err, cases[i].err);
    }
}

static void test_unix_socket_path_too_long(void **state)
{
    (void)state;
    /* sun_path holds 107 bytes and a NUL: 107 is fine, 108 is not. */
    static const struct {
        size_t path_len;
        int rc;
    } cases[] = {{107, 0}, {108, -1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char var[256] = "EZ_FCGI_LISTEN=unix:/";
        memset(var + strlen(var), 'a', cases[i].path_len - 1);
        const char *env[] = {var, NULL};
        struct ez_config cfg;
        char err[512];
        assert_int_equal(load(env, &cfg, err, sizeof(err)), cases[i].rc);
        if (cases[i].rc == 0) {
            config_free(&cfg);
            continue;
        }
        /* The echoed value is cut short rather than flooding the message. */
        assert_non_null(strstr(err, "EZ_FCGI_LISTEN: \"unix:/aaaa"));
        assert_non_null(strstr(err, "aaa...\" has a unix socket path over 107 bytes"));
    }
}

static void test_cross_check_names_file(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg;
    char err[512];
    write_file("config.ini", "[redis]\naddr = nohost\n");
    assert_int_equal(load(env, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "EZ_REDIS_ADDR: \"nohost\" is not host:port (port 1..65535) ([redis] "
                             "addr in ./config.ini:2)");
}

/* ---- printing --------------------------------------------------------- */

static void test_print_hides_secrets(void **state)
{
    (void)state;
    static const char *const env[] = {
        "EZ_ADMIN_TOKEN=adm-XYZZY",    "EZ_INTERNAL_STATS_TOKEN=int-XYZZY",
        "EZ_JWT_SECRET=jwt-XYZZY",     "EZ_REDIS_PASSWORD=redis-XYZZY",
        "EZ_PG_DSN=password=pg-XYZZY", NULL};
    struct ez_config cfg;
    char err[512];
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    char *text = print_config(&cfg);
    assert_null(strstr(text, "XYZZY"));
    assert_non_null(strstr(text, "\nEZ_ADMIN_TOKEN=(set)\n"));
    assert_non_null(strstr(text, "\nEZ_INTERNAL_STATS_TOKEN=(set)\n"));
    assert_non_null(strstr(text, "\nEZ_JWT_SECRET=(set)\n"));
    assert_non_null(strstr(text, "\nEZ_REDIS_PASSWORD=(set)\n"));
    free(text);
    config_free(&cfg);
}

static void test_print_masks_passwords(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        const char *printed;
    } cases[] = {
        {"host=a password=secret dbname=x", "host=a password=*** dbname=x"},
        {"password=secret", "password=***"},
        {"host=a password = 'se cret\\' x' dbname=x", "host=a password = *** dbname=x"},
        {"host=a password=se\\ cret dbname=x", "host=a password=*** dbname=x"},
        {"host=a sslpassword=k", "host=a sslpassword=***"},
        {"host=a dbname=password", "host=a dbname=password"},
        {"  host=a\tpassword=p  ", "  host=a\tpassword=***  "},
        {"host=a", "host=a"},
        {"", ""},
        {"postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"},
        {"postgresql://u:p%40ss@h/db?sslmode=disable&password=q",
         "postgresql://u:***@h/db?sslmode=disable&password=***"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"postgresql:///db?host=/tmp&password=x", "postgresql:///db?host=/tmp&password=***"},
        {"postgresql://h/db?passwords=x", "postgresql://h/db?passwords=x"},
    };
    static const char *const vars[] = {"EZ_PG_DSN", "EZ_LOG_PG_DSN"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t v = 0; v < 2; v++) {
            char var[256];
            snprintf(var, sizeof(var), "%s=%s", vars[v], cases[i].value);
            const char *env[] = {var, NULL};
            struct ez_config cfg;
            char err[512], value[256];
            assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
            printed_value(&cfg, vars[v], value, sizeof(value));
            assert_string_equal(value, cases[i].printed);
            config_free(&cfg);
        }
    }
}

static void test_print_masks_url_userinfo(void **state)
{
    (void)state;
    static const char *const env[] = {
        "EZ_MODEL_REGISTRY_URL=https://bot:tok@models.example/api.json", NULL};
    struct ez_config cfg;
    char err[512], value[256];
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    printed_value(&cfg, "EZ_MODEL_REGISTRY_URL", value, sizeof(value));
    assert_string_equal(value, "https://bot:***@models.example/api.json");
    config_free(&cfg);
}

/* ---- ownership and API edges ------------------------------------------ */

static void test_free_is_safe(void **state)
{
    (void)state;
    static const char *const env[] = {NULL};
    struct ez_config cfg = {0};
    char err[512];
    config_free(&cfg);
    config_free(NULL);
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    config_free(&cfg);
    config_free(&cfg);
    assert_null(cfg.pg_dsn);
}

static void test_log_dsn(void **state)
{
    (void)state;
    static const char *const env[] = {"EZ_LOG_PG_DSN=host=logs", NULL};
    struct ez_config cfg;
    char err[512];
    assert_int_equal(load(env, &cfg, err, sizeof(err)), 0);
    assert_string_equal(config_log_dsn(&cfg), "host=logs");
    config_free(&cfg);
}

static void test_no_err_buffer(void **state)
{
    (void)state;
    static const char *const env[] = {"EZ_API_PORT=x", NULL};
    struct ez_config cfg = {0};
    fake_env = env;
    assert_int_equal(config_load(&cfg, fake_getenv, NULL, 0), -1);
}

static void test_null_getenv_reads_process_env(void **state)
{
    (void)state;
    struct ez_config cfg = {0};
    char err[512];
    assert_int_equal(setenv("EZ_FCGI_THREADS", "13", 1), 0);
    int rc = config_load(&cfg, NULL, err, sizeof(err));
    unsetenv("EZ_FCGI_THREADS");
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.fcgi_threads, 13);
    config_free(&cfg);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, remove_files, remove_files)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_every_key_from_file),
        T(test_precedence),
        T(test_file_locations),
        T(test_named_file_missing),
        T(test_named_file_is_directory),
        T(test_bad_env_values),
        T(test_bad_file_values),
        T(test_long_line),
        T(test_indentation_that_is_not_continuation),
        T(test_unknown_keys_only_warn),
        T(test_duplicate_key_last_wins),
        T(test_good_values),
        T(test_cross_checks),
        T(test_unix_socket_path_too_long),
        T(test_cross_check_names_file),
        T(test_print_hides_secrets),
        T(test_print_masks_passwords),
        T(test_print_masks_url_userinfo),
        T(test_free_is_safe),
        T(test_log_dsn),
        T(test_no_err_buffer),
        T(test_null_getenv_reads_process_env),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
