/* Unit tests for the worker's pure core: path normalisation, routing, strict JSON, crypto vectors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "crypto.h"
#include "http.h"
#include "json.h"
#include "router.h"
#include "util.h"

/* Raw request path -> normalised path (NULL = refused with 400). */
static const struct {
    const char *raw;
    const char *want;
} norm_cases[] = {
    {"/", "/"},
    {"/admin/masters", "/admin/masters"},
    {"//admin//masters/", "/admin/masters"},
    {"/admin/./masters", "/admin/masters"},
    {"/admin/x/../masters", "/admin/masters"},
    {"/admin/x/%2e%2e/masters", "/admin/masters"},
    {"/admin/masters?page=2", "/admin/masters"},
    {"/%61dmin/masters", "/admin/masters"},
    {"/admin%2Fmasters", NULL},
    {"/admin%2fmasters", NULL},
    {"/..", NULL},
    {"/admin/../../etc", NULL},
    {"/a%00b", NULL},
    {"/a%zz", NULL},
    {"/a%0Ab", NULL},
    {"/a\\b", NULL},
};

static void test_normalize_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < EZ_ARRAY_LEN(norm_cases); i++) {
        char *out = NULL;
        int rc = http_normalize_path(norm_cases[i].raw, &out);
        if (norm_cases[i].want == NULL) {
            assert_int_equal(rc, EZ_ERR);
            assert_null(out);
        } else {
            assert_int_equal(rc, EZ_OK);
            assert_string_equal(out, norm_cases[i].want);
        }
        free(out);
    }
}

static void test_percent_decode_query(void **state)
{
    (void)state;
    char a[] = "a+b%20c%2B";
    assert_int_equal(http_percent_decode(a, true), EZ_OK);
    assert_string_equal(a, "a b c+");
    char b[] = "x%";
    assert_int_equal(http_percent_decode(b, true), EZ_ERR);
}

static void test_auth_kind_by_prefix_any_case(void **state)
{
    (void)state;
    assert_int_equal(router_auth_for_path("/admin/masters"), AUTH_ADMIN);
    assert_int_equal(router_auth_for_path("/ADMIN/masters"), AUTH_ADMIN);
    assert_int_equal(router_auth_for_path("/Admin"), AUTH_ADMIN);
    assert_int_equal(router_auth_for_path("/v1/self"), AUTH_MASTER);
    assert_int_equal(router_auth_for_path("/V1/tokens"), AUTH_MASTER);
    assert_int_equal(router_auth_for_path("/internal/metrics"), AUTH_INTERNAL);
    assert_int_equal(router_auth_for_path("/health"), AUTH_NONE);
    assert_int_equal(router_auth_for_path("/administrator"), AUTH_NONE);
}

static void test_route_table_consistent(void **state)
{
    (void)state;
    assert_int_equal(router_selfcheck(), EZ_OK);
    assert_true(router_nroutes > 50);
}

static void test_route_match_404_405(void **state)
{
    (void)state;
    char allow[128];
    int i = router_match("GET", "/admin/masters/12", allow, sizeof(allow));
    assert_true(i >= 0);
    assert_string_equal(router_routes[i].pattern, "/admin/masters/:id");
    i = router_match("GET", "/admin/masters/12/keys/7", allow, sizeof(allow));
    assert_true(i >= 0);
    assert_string_equal(router_routes[i].pattern, "/admin/masters/:id/keys/:key_id");
    assert_int_equal(router_match("GET", "/admin/nothing", allow, sizeof(allow)), -1);
    assert_int_equal(router_match("PATCH", "/admin/masters", allow, sizeof(allow)), -2);
    assert_non_null(strstr(allow, "GET"));
    assert_non_null(strstr(allow, "POST"));
    /* A literal segment beats ':id': the literal route owns the path, whatever the order. */
    i = router_match("GET", "/admin/models/registry", allow, sizeof(allow));
    assert_true(i >= 0);
    assert_string_equal(router_routes[i].pattern, "/admin/models/registry");
    assert_int_equal(router_match("PUT", "/admin/models/registry", allow, sizeof(allow)), -2);
    assert_string_equal(allow, "GET, OPTIONS");
    assert_int_equal(router_match("DELETE", "/admin/masters/batch", allow, sizeof(allow)), -2);
    assert_string_equal(allow, "POST, OPTIONS");
    /* ...but only the path it spells: other ids still reach the :id routes. */
    i = router_match("PUT", "/admin/models/gpt-4o", allow, sizeof(allow));
    assert_true(i >= 0);
    assert_string_equal(router_routes[i].pattern, "/admin/models/:id");
    assert_int_equal(router_match("PATCH", "/admin/models/7", allow, sizeof(allow)), -2);
    assert_string_equal(allow, "GET, PUT, DELETE, OPTIONS");
}

/* Body -> accepted or refused by the strict parser. */
static const struct {
    const char *body;
    int ok;
} json_cases[] = {
    {"{\"a\":1}", 1},
    {"  {\"a\":[1,2,{\"b\":null}]}\n", 1},
    {"{\"a\":\"\\u00e9\"}", 1},
    {"{\"a\":\"x\\\\u0000\"}", 1}, /* an escaped backslash, then literal text */
    {"{\"a\":1,\"a\":2}", 0},
    {"{\"o\":{\"k\":1,\"k\":1}}", 0},
    {"{\"a\":", 0},
    {"{\"a\":1} x", 0},
    {"{\"a\":\"\\u0000\"}", 0},
    {"\xff\xfe", 0},
    {"{\"a\":\"\xc0\xaf\"}", 0}, /* overlong '/' */
    {"", 0},
};

static void test_json_strict(void **state)
{
    (void)state;
    for (size_t i = 0; i < EZ_ARRAY_LEN(json_cases); i++) {
        cJSON *root = NULL;
        char err[128];
        const char *b = json_cases[i].body;
        int rc = json_parse_strict(b, strlen(b), &root, err, sizeof(err));
        assert_int_equal(rc, json_cases[i].ok ? EZ_OK : EZ_ERR);
        if (root)
            cJSON_Delete(root);
    }
    /* Nesting past the limit is refused before cJSON recurses. */
    char deep[2 * (JSON_MAX_DEPTH + 2) + 1];
    size_t n = JSON_MAX_DEPTH + 2;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    cJSON *root = NULL;
    char err[128];
    assert_int_equal(json_parse_strict(deep, strlen(deep), &root, err, sizeof(err)), EZ_ERR);
}

static void test_json_int_in(void **state)
{
    (void)state;
    cJSON *v = cJSON_Parse("[12, 1.5, 1e309, -1, 9007199254740993, \"12\"]");
    int64_t out;
    assert_true(json_int_in(cJSON_GetArrayItem(v, 0), 0, 100, &out));
    assert_int_equal(out, 12);
    assert_false(json_int_in(cJSON_GetArrayItem(v, 1), 0, 100, &out));
    assert_false(json_int_in(cJSON_GetArrayItem(v, 2), 0, INT64_MAX, &out));
    assert_false(json_int_in(cJSON_GetArrayItem(v, 3), 0, 100, &out));
    assert_false(json_int_in(cJSON_GetArrayItem(v, 4), 0, INT64_MAX, &out));
    assert_false(json_int_in(cJSON_GetArrayItem(v, 5), 0, 100, &out));
    cJSON_Delete(v);
}

static void test_sha256_hmac_vectors(void **state)
{
    (void)state;
    char out[65];
    /* FIPS 180-2 examples. */
    ez_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ez_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* RFC 4231 test case 2. */
    ez_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, out);
    assert_string_equal(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_secrets_and_ct_compare(void **state)
{
    (void)state;
    char *a = ez_new_secret("sk-"), *b = ez_new_secret("sk-");
    assert_non_null(a);
    assert_int_equal(strlen(a), 3 + 64);
    assert_memory_equal(a, "sk-", 3);
    assert_string_not_equal(a, b);
    assert_true(ez_ct_streq(a, a));
    assert_false(ez_ct_streq(a, b));
    assert_false(ez_ct_streq("abc", "abcd"));
    assert_false(ez_ct_streq("", "x"));
    ez_secret_free(a);
    ez_secret_free(b);
}

static void test_parse_time(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(ez_parse_time("2026-01-03T09:07:57Z", &t), EZ_OK);
    assert_int_equal(t, 1767431277);
    assert_int_equal(ez_parse_time("2026-01-03T10:07:57+01:00", &t), EZ_OK);
    assert_int_equal(t, 1767431277);
    assert_int_equal(ez_parse_time("1767431277", &t), EZ_OK);
    assert_int_equal(t, 1767431277);
    assert_int_equal(ez_parse_time("2025-02-29T00:00:00Z", &t), EZ_ERR);
    assert_int_equal(ez_parse_time("2024-02-29T00:00:00Z", &t), EZ_OK);
    assert_int_equal(ez_parse_time("yesterday", &t), EZ_ERR);
    assert_int_equal(ez_parse_time("-5", &t), EZ_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_path),
        cmocka_unit_test(test_percent_decode_query),
        cmocka_unit_test(test_auth_kind_by_prefix_any_case),
        cmocka_unit_test(test_route_table_consistent),
        cmocka_unit_test(test_route_match_404_405),
        cmocka_unit_test(test_json_strict),
        cmocka_unit_test(test_json_int_in),
        cmocka_unit_test(test_sha256_hmac_vectors),
        cmocka_unit_test(test_secrets_and_ct_compare),
        cmocka_unit_test(test_parse_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
