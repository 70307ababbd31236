/* Unit tests for request-log record validation, normalisation and COPY rendering (common/logrec).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "log.h"
#include "logrec.h"

/* 2026-01-03T09:07:57Z */
#define T0_US 1767431277000000LL

/* ---- the validation table: one record per row, expected outcome and field ---- */

struct vcase {
    const char *json;
    const char *field; /* NULL = valid */
};

static const struct vcase cases[] = {
    /* request_id */
    {"{\"request_id\":\"r1\"}", NULL},
    {"{}", "request_id"},
    {"{\"request_id\":null}", "request_id"},
    {"{\"request_id\":\"\"}", "request_id"},
    {"{\"request_id\":12}", "request_id"},
    {"{\"request_id\":\"a\\nb\"}", "request_id"},
    {"{\"Request_ID\":\"r1\"}", "request_id"}, /* names are case-sensitive */
    /* created_at */
    {"{\"request_id\":\"r\",\"created_at\":\"2026-01-03T09:07:57Z\"}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":\"2026-01-03T09:07:57.123+02:00\"}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":1767431277}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":1767431277.5}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":\"1767431277\"}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":null}", NULL},
    {"{\"request_id\":\"r\",\"created_at\":\"yesterday\"}", "created_at"},
    {"{\"request_id\":\"r\",\"created_at\":\"2026-01-03T09:07:57\"}", "created_at"},
    {"{\"request_id\":\"r\",\"created_at\":\"2026-02-30T00:00:00Z\"}", "created_at"},
    {"{\"request_id\":\"r\",\"created_at\":-5}", "created_at"},
    {"{\"request_id\":\"r\",\"created_at\":true}", "created_at"},
    {"{\"request_id\":\"r\",\"created_at\":1e300}", "created_at"},
    /* ids and counts */
    {"{\"request_id\":\"r\",\"master_id\":0,\"key_id\":9007199254740991}", NULL},
    {"{\"request_id\":\"r\",\"master_id\":-1}", "master_id"},
    {"{\"request_id\":\"r\",\"key_id\":\"12\"}", "key_id"},
    {"{\"request_id\":\"r\",\"key_id\":1.5}", "key_id"},
    {"{\"request_id\":\"r\",\"key_id\":9007199254740993}", "key_id"},
    {"{\"request_id\":\"r\",\"provider_group_id\":[1]}", "provider_group_id"},
    {"{\"request_id\":\"r\",\"api_key_id\":{}}", "api_key_id"},
    {"{\"request_id\":\"r\",\"latency_ms\":2147483647}", NULL},
    {"{\"request_id\":\"r\",\"latency_ms\":2147483648}", "latency_ms"},
    {"{\"request_id\":\"r\",\"ttfb_ms\":-1}", "ttfb_ms"},
    {"{\"request_id\":\"r\",\"prompt_tokens\":1e309}", "prompt_tokens"},
    {"{\"request_id\":\"r\",\"completion_tokens\":true}", "completion_tokens"},
    {"{\"request_id\":\"r\",\"total_tokens\":-0.5}", "total_tokens"},
    {"{\"request_id\":\"r\",\"total_tokens\":0}", NULL},
    /* status_code */
    {"{\"request_id\":\"r\",\"status_code\":100}", NULL},
    {"{\"request_id\":\"r\",\"status_code\":599}", NULL},
    {"{\"request_id\":\"r\",\"status_code\":99}", "status_code"},
    {"{\"request_id\":\"r\",\"status_code\":600}", "status_code"},
    {"{\"request_id\":\"r\",\"status_code\":\"200\"}", "status_code"},
    /* texts */
    {"{\"request_id\":\"r\",\"model\":\"gpt-4o\",\"namespace\":\"\"}", NULL},
    {"{\"request_id\":\"r\",\"model\":5}", "model"},
    {"{\"request_id\":\"r\",\"upstream_model\":false}", "upstream_model"},
    {"{\"request_id\":\"r\",\"provider_type\":[]}", "provider_type"},
    {"{\"request_id\":\"r\",\"error\":42}", "error"},
    {"{\"request_id\":\"r\",\"user_agent\":7}", "user_agent"},
    /* stream */
    {"{\"request_id\":\"r\",\"stream\":false}", NULL},
    {"{\"request_id\":\"r\",\"stream\":1}", "stream"},
    {"{\"request_id\":\"r\",\"stream\":\"true\"}", "stream"},
    /* client_ip */
    {"{\"request_id\":\"r\",\"client_ip\":\"10.0.0.1\"}", NULL},
    {"{\"request_id\":\"r\",\"client_ip\":\"2001:db8::1\"}", NULL},
    {"{\"request_id\":\"r\",\"client_ip\":\"10.0.0.256\"}", "client_ip"},
    {"{\"request_id\":\"r\",\"client_ip\":\"10.0.0.0/8\"}", "client_ip"},
    {"{\"request_id\":\"r\",\"client_ip\":\"\"}", "client_ip"},
    {"{\"request_id\":\"r\",\"client_ip\":\"localhost\"}", "client_ip"},
    {"{\"request_id\":\"r\",\"client_ip\":12}", "client_ip"},
    /* unknown fields are ignored, whatever their type */
    {"{\"request_id\":\"r\",\"extra\":{\"deep\":[1,2]},\"x\":null}", NULL},
};

static void test_validation_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *o = NULL;
        char perr[128];
        if (json_parse_strict(cases[i].json, strlen(cases[i].json), &o, perr, sizeof(perr)) != 0)
            fail_msg("case %zu does not parse: %s", i, cases[i].json);
        struct logrec rec;
        char field[64] = "", msg[256] = "";
        int rc = logrec_from_json(o, T0_US, &rec, field, sizeof(field), msg, sizeof(msg));
        if (cases[i].field == NULL && rc != 0)
            fail_msg("case %zu (%s) refused: %s", i, cases[i].json, msg);
        if (cases[i].field != NULL) {
            if (rc == 0)
                fail_msg("case %zu (%s) accepted", i, cases[i].json);
            if (strcmp(field, cases[i].field) != 0)
                fail_msg("case %zu (%s): field %s, expected %s", i, cases[i].json, field,
                         cases[i].field);
            /* The message names the field. */
            assert_non_null(strstr(msg, cases[i].field));
        }
        logrec_free(&rec);
        cJSON_Delete(o);
    }
}

static void test_not_an_object(void **state)
{
    (void)state;
    cJSON *a = cJSON_CreateArray();
    struct logrec rec;
    char field[64] = "x", msg[256];
    assert_int_equal(logrec_from_json(a, T0_US, &rec, field, sizeof(field), msg, sizeof(msg)), -1);
    assert_string_equal(field, "");
    logrec_free(&rec);
    cJSON_Delete(a);
}

/* ---- normalisation ---- */

static struct logrec parse_ok(const char *json)
{
    cJSON *o = NULL;
    char perr[128], field[64], msg[256];
    assert_int_equal(json_parse_strict(json, strlen(json), &o, perr, sizeof(perr)), 0);
    struct logrec rec;
    if (logrec_from_json(o, T0_US, &rec, field, sizeof(field), msg, sizeof(msg)) != 0)
        fail_msg("refused: %s", msg);
    cJSON_Delete(o);
    return rec;
}

static void test_lengths(void **state)
{
    (void)state;
    /* request_id: 128 characters (multi-byte ones count as one) pass, 129 do not. */
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"request_id\":\"");
    for (int i = 0; i < 128; i++)
        buf_puts(&b, "\xc3\xa9");
    buf_puts(&b, "\"}");
    struct logrec rec = parse_ok(b.data);
    assert_int_equal(logrec_utf8_chars(rec.v[LR_REQUEST_ID].s), 128);
    logrec_free(&rec);

    buf_reset(&b);
    buf_puts(&b, "{\"request_id\":\"");
    for (int i = 0; i < 129; i++)
        buf_puts(&b, "x");
    buf_puts(&b, "\"}");
    cJSON *o = NULL;
    char perr[64], field[64], msg[256];
    assert_int_equal(json_parse_strict(b.data, b.len, &o, perr, sizeof(perr)), 0);
    assert_int_equal(logrec_from_json(o, T0_US, &rec, field, sizeof(field), msg, sizeof(msg)), -1);
    assert_string_equal(field, "request_id");
    logrec_free(&rec);
    cJSON_Delete(o);

    /* user_agent: 512 ok, 513 refused. */
    for (int n = 512; n <= 513; n++) {
        buf_reset(&b);
        buf_puts(&b, "{\"request_id\":\"r\",\"user_agent\":\"");
        for (int i = 0; i < n; i++)
            buf_puts(&b, "u");
        buf_puts(&b, "\"}");
        o = NULL;
        assert_int_equal(json_parse_strict(b.data, b.len, &o, perr, sizeof(perr)), 0);
        int rc = logrec_from_json(o, T0_US, &rec, field, sizeof(field), msg, sizeof(msg));
        assert_int_equal(rc, n == 512 ? 0 : -1);
        if (rc != 0)
            assert_string_equal(field, "user_agent");
        logrec_free(&rec);
        cJSON_Delete(o);
    }

    /* model: LOGREC_TEXT_MAX characters ok, one more refused. */
    buf_reset(&b);
    buf_puts(&b, "{\"request_id\":\"r\",\"model\":\"");
    for (int i = 0; i <= LOGREC_TEXT_MAX; i++)
        buf_puts(&b, "m");
    buf_puts(&b, "\"}");
    o = NULL;
    assert_int_equal(json_parse_strict(b.data, b.len, &o, perr, sizeof(perr)), 0);
    assert_int_equal(logrec_from_json(o, T0_US, &rec, field, sizeof(field), msg, sizeof(msg)), -1);
    assert_string_equal(field, "model");
    logrec_free(&rec);
    cJSON_Delete(o);
    buf_free(&b);
}

static void test_error_truncated_on_characters(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"request_id\":\"r\",\"error\":\"");
    /* 4100 two-byte characters: truncated to 4096 characters, never inside one. */
    for (int i = 0; i < 4100; i++)
        buf_puts(&b, "\xc3\xa9");
    buf_puts(&b, "\"}");
    struct logrec rec = parse_ok(b.data);
    assert_int_equal(logrec_utf8_chars(rec.v[LR_ERROR].s), LOGREC_ERROR_MAX);
    assert_int_equal(strlen(rec.v[LR_ERROR].s), 2 * LOGREC_ERROR_MAX);
    assert_true(ez_utf8_valid(rec.v[LR_ERROR].s, strlen(rec.v[LR_ERROR].s)));
    logrec_free(&rec);

    /* Exactly 4096: kept whole. */
    buf_reset(&b);
    buf_puts(&b, "{\"request_id\":\"r\",\"error\":\"");
    for (int i = 0; i < 4096; i++)
        buf_puts(&b, "e");
    buf_puts(&b, "\"}");
    rec = parse_ok(b.data);
    assert_int_equal(strlen(rec.v[LR_ERROR].s), 4096);
    logrec_free(&rec);
    buf_free(&b);
}

static void test_defaults_and_canonical_forms(void **state)
{
    (void)state;
    struct logrec rec = parse_ok("{\"request_id\":\"r\",\"client_ip\":\"::FFFF:10.1.2.3\"}");
    assert_true(rec.v[LR_CREATED_AT].set);
    assert_int_equal(rec.v[LR_CREATED_AT].i, T0_US); /* default: receipt time */
    assert_string_equal(rec.v[LR_CLIENT_IP].s, "::ffff:10.1.2.3");
    assert_false(rec.v[LR_MODEL].set);
    assert_false(rec.v[LR_STREAM].set);
    logrec_free(&rec);

    rec = parse_ok("{\"request_id\":\"r\",\"client_ip\":\"2001:DB8:0:0:0:0:0:1\","
                   "\"created_at\":\"2026-01-03T11:07:57.25+02:00\"}");
    assert_string_equal(rec.v[LR_CLIENT_IP].s, "2001:db8::1");
    assert_int_equal(rec.v[LR_CREATED_AT].i, T0_US + 250000);
    logrec_free(&rec);

    rec = parse_ok("{\"request_id\":\"r\",\"created_at\":1767431277.25}");
    assert_int_equal(rec.v[LR_CREATED_AT].i, T0_US + 250000);
    logrec_free(&rec);
}

/* The normalised JSON the worker forwards parses back to the same record. */
static void test_json_roundtrip(void **state)
{
    (void)state;
    const char *in = "{\"request_id\":\"req-1\",\"created_at\":\"2026-01-03T09:07:57.000123Z\","
                     "\"master_id\":1,\"key_id\":2,\"namespace\":\"ns\",\"model\":\"m\","
                     "\"upstream_model\":\"um\",\"provider_group_id\":3,\"api_key_id\":4,"
                     "\"provider_type\":\"openai\",\"status_code\":200,\"error\":\"\","
                     "\"latency_ms\":10,\"ttfb_ms\":5,\"prompt_tokens\":7,"
                     "\"completion_tokens\":8,\"total_tokens\":15,\"stream\":true,"
                     "\"client_ip\":\"1.2.3.4\",\"user_agent\":\"ua\",\"ignored\":1}";
    struct logrec a = parse_ok(in);
    cJSON *j = logrec_to_json(&a);
    assert_null(cJSON_GetObjectItem(j, "ignored"));
    assert_string_equal(cJSON_GetObjectItem(j, "created_at")->valuestring,
                        "2026-01-03T09:07:57.000123Z");
    char *s = json_render(j);
    cJSON_Delete(j);
    struct logrec b = parse_ok(s);
    free(s);
    for (int i = 0; i < LOGREC_NFIELDS; i++) {
        assert_int_equal(a.v[i].set, b.v[i].set);
        assert_int_equal(a.v[i].i, b.v[i].i);
        if (a.v[i].s)
            assert_string_equal(a.v[i].s, b.v[i].s);
        else
            assert_null(b.v[i].s);
    }
    logrec_free(&a);
    logrec_free(&b);
}

/* ---- COPY rendering ---- */

static void test_copy_row(void **state)
{
    (void)state;
    struct logrec rec = parse_ok("{\"request_id\":\"r\\\\1\",\"created_at\":1767431277,"
                                 "\"error\":\"line1\\nline2\\tt\\r\\\\.\",\"status_code\":502,"
                                 "\"stream\":false,\"model\":\"\\\\N\"}");
    buf_t b;
    buf_init(&b);
    logrec_copy_row(&rec, T0_US + 1500, &b);
    assert_string_equal(b.data,
                        "r\\\\1\t2026-01-03 09:07:57.000000+00\t\\N\t\\N\t\\N\t\\\\N\t\\N\t\\N\t"
                        "\\N\t\\N\t502\tline1\\nline2\\tt\\r\\\\.\t\\N\t\\N\t\\N\t\\N\t\\N\tf\t"
                        "\\N\t\\N\t2026-01-03 09:07:57.001500+00\n");
    /* One line, tab-separated into exactly the columns of LOGREC_COPY_COLUMNS. */
    int tabs = 0, nl = 0;
    for (size_t i = 0; i < b.len; i++) {
        tabs += b.data[i] == '\t';
        nl += b.data[i] == '\n';
    }
    assert_int_equal(nl, 1);
    assert_int_equal(tabs, LOGREC_NFIELDS); /* NFIELDS + received_at columns */
    buf_free(&b);
    logrec_free(&rec);
}

static void test_copy_columns_follow_table(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < LOGREC_NFIELDS; i++)
        buf_printf(&b, "%s%s", i ? ", " : "", logrec_field_name((enum logrec_field)i));
    buf_puts(&b, ", received_at");
    assert_string_equal(b.data, LOGREC_COPY_COLUMNS);
    buf_free(&b);
}

/* ---- time ---- */

static void test_parse_time(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(logrec_parse_time("2026-01-03T09:07:57Z", &us), 0);
    assert_int_equal(us, T0_US);
    assert_int_equal(logrec_parse_time("2026-01-03t09:07:57z", &us), 0);
    assert_int_equal(logrec_parse_time("2026-01-03 09:07:57Z", &us), 0);
    assert_int_equal(logrec_parse_time("2026-01-03T09:07:57.1Z", &us), 0);
    assert_int_equal(us, T0_US + 100000);
    assert_int_equal(logrec_parse_time("2026-01-03T09:07:57.123456789Z", &us), 0);
    assert_int_equal(us, T0_US + 123456);
    assert_int_equal(logrec_parse_time("2026-01-03T04:07:57-05:00", &us), 0);
    assert_int_equal(us, T0_US);
    assert_int_equal(logrec_parse_time("0", &us), 0);
    assert_int_equal(us, 0);
    assert_int_equal(logrec_parse_time("1767431277", &us), 0);
    assert_int_equal(us, T0_US);
    assert_int_equal(logrec_parse_time("2024-02-29T00:00:00Z", &us), 0);

    static const char *const bad[] = {
        "",
        "-1",
        "+5",
        " 5",
        "99999999999999",
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-03T24:00:00Z",
        "2026-01-03T09:07:57",
        "2026-01-03T09:07:57.Z",
        "2026-01-03T09:07:57.1234567890Z",
        "2026-01-03T09:07:57+0100",
        "2026-01-03T09:07:57Zjunk",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",
        "2026/01/03T09:07:57Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (logrec_parse_time(bad[i], &us) == 0)
            fail_msg("accepted bad time \"%s\"", bad[i]);
}

static void test_format_time(void **state)
{
    (void)state;
    char out[48];
    logrec_format_time(T0_US, out, sizeof(out));
    assert_string_equal(out, "2026-01-03T09:07:57Z");
    logrec_format_time(T0_US + 500000, out, sizeof(out));
    assert_string_equal(out, "2026-01-03T09:07:57.5Z");
    logrec_format_time(T0_US + 1, out, sizeof(out));
    assert_string_equal(out, "2026-01-03T09:07:57.000001Z");
    logrec_pg_time(T0_US + 1, out, sizeof(out));
    assert_string_equal(out, "2026-01-03 09:07:57.000001+00");
    logrec_format_time(0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00Z");
}

static void test_utf8_helpers(void **state)
{
    (void)state;
    assert_int_equal(logrec_utf8_chars(""), 0);
    assert_int_equal(logrec_utf8_chars("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), 4);
    assert_int_equal(logrec_utf8_prefix("a\xc3\xa9\xe2\x82\xac", 2), 3);
    assert_int_equal(logrec_utf8_prefix("abc", 5), 3);
    assert_int_equal(logrec_utf8_prefix("abc", 0), 0);
}

int main(void)
{
    ez_log_min_level = EZ_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation_table),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_error_truncated_on_characters),
        cmocka_unit_test(test_defaults_and_canonical_forms),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_copy_row),
        cmocka_unit_test(test_copy_columns_follow_table),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_utf8_helpers),
    };
    return cmocka_run_group_tests_name("logrec", tests, NULL, NULL);
}
