/*
 * Unit tests for the snapshot shapes (common/snapshot_shapes.c) against the
 * contract goldens in tests/contract/, the meta:models checksum, and the
 * outbox job's pure parts (row -> work, backoff).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot_shapes.h"
#include "../../background/outbox.h"
#include "../../background/snapshot.h"

/* ---- helpers -------------------------------------------------------------- */

/* tests/contract/<name> (run from the project root, as scripts/run-tests does). */
static cJSON *golden(const char *name)
{
    char path[512];
    const char *dir = getenv("EZ_CONTRACT_DIR");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/contract", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open golden %s (run from the project root)", path);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static int json_kind(const cJSON *j)
{
    if (cJSON_IsBool(j))
        return 1;
    if (cJSON_IsNumber(j))
        return 2;
    if (cJSON_IsString(j))
        return 3;
    if (cJSON_IsArray(j))
        return 4;
    if (cJSON_IsObject(j))
        return 5;
    return 0;
}

/*
 * Every member of want is in got with the same JSON type; members of got
 * that want lacks must be listed in extra (NULL-terminated, may be NULL).
 */
static void assert_same_shape(const cJSON *want, const cJSON *got, const char *const *extra)
{
    const cJSON *w;
    cJSON_ArrayForEach(w, want)
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        if (g == NULL)
            fail_msg("member %s missing", w->string);
        if (json_kind(g) != json_kind(w))
            fail_msg("member %s has the wrong type", w->string);
    }
    const cJSON *g;
    cJSON_ArrayForEach(g, got)
    {
        if (cJSON_GetObjectItemCaseSensitive(want, g->string))
            continue;
        bool allowed = false;
        for (int i = 0; extra && extra[i]; i++)
            if (strcmp(extra[i], g->string) == 0)
                allowed = true;
        if (!allowed)
            fail_msg("unexpected member %s", g->string);
    }
}

static cJSON *parse_owned(char *s)
{
    cJSON *j = cJSON_Parse(s);
    free(s);
    assert_non_null(j);
    return j;
}

/* ---- provider ------------------------------------------------------------- */

static const struct shape_provider golden_provider = {
    .id = 42,
    .api_key = "sk-123",
    .weight = 3,
    .status = "active",
    .auto_ban = true,
    .ban_until = 0,
    .group_id = 7,
    .group_name = "pg1",
    .type = "vertex-express",
    .base_url = "",
    .google_project = "proj-1",
    .google_location = "global",
    .models = "[\"gemini-3-pro-preview\"]",
    .route_group = "default",
    .group_status = "active",
};

static void test_provider_matches_golden(void **state)
{
    (void)state;
    static const char *const extra[] = {"weight", "ban_until", NULL};
    cJSON *want = golden("provider_snapshot.json");
    cJSON *got = parse_owned(shape_provider_json(&golden_provider));
    assert_same_shape(want, got, extra);
    /* Not only the types: the golden's values come out of the golden's row. */
    cJSON *w;
    cJSON_ArrayForEach(w, want)
    {
        cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        if (!cJSON_Compare(w, g, true))
            fail_msg("member %s differs", w->string);
    }
    assert_int_equal(cJSON_GetObjectItem(got, "weight")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(got, "ban_until")->valueint, 0);
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void test_provider_defaults(void **state)
{
    (void)state;
    struct shape_provider p = golden_provider;
    p.google_location = "";      /* vertex-express without a location: global */
    p.route_group = "";          /* empty route group: default */
    p.group_status = "disabled"; /* a disabled group disables its keys */
    p.ban_until = 1734464000;
    p.models = "not json"; /* defensive: an empty list */
    cJSON *got = parse_owned(shape_provider_json(&p));
    assert_string_equal(cJSON_GetObjectItem(got, "google_location")->valuestring, "global");
    assert_string_equal(cJSON_GetObjectItem(got, "group")->valuestring, "default");
    assert_string_equal(cJSON_GetObjectItem(got, "status")->valuestring, "disabled");
    assert_true(cJSON_GetObjectItem(got, "ban_until")->valuedouble == 1734464000.0);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(got, "models")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(got, "models")), 0);
    cJSON_Delete(got);

    p = golden_provider;
    p.type = "openai";
    p.google_location = "";
    p.status = "banned";
    got = parse_owned(shape_provider_json(&p));
    assert_string_equal(cJSON_GetObjectItem(got, "google_location")->valuestring, "");
    assert_string_equal(cJSON_GetObjectItem(got, "status")->valuestring, "banned");
    assert_string_equal(cJSON_GetObjectItem(got, "name")->valuestring, "pg1#42");
    cJSON_Delete(got);
}

/* ---- models --------------------------------------------------------------- */

static void test_model_matches_golden(void **state)
{
    (void)state;
    cJSON *want = golden("model_snapshot.json");
    struct shape_model m = {
        .kind = "chat",
        .context_window = 128000,
        .supports_vision = true,
        .supports_functions = true,
        .supports_tool_choice = true,
        .supports_fim = true,
        .max_output_tokens = 8192,
    };
    cJSON *got = parse_owned(shape_model_json("ns.m", &m));
    assert_true(cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void test_model_omits_zero_fields(void **state)
{
    (void)state;
    struct shape_model m = {.kind = "", .cost_per_token = 0.5, .supports_stream = true};
    cJSON *got = parse_owned(shape_model_json("default.x", &m));
    assert_int_equal(cJSON_GetArraySize(got), 4);
    assert_string_equal(cJSON_GetObjectItem(got, "kind")->valuestring, "chat");
    assert_true(cJSON_GetObjectItem(got, "cost_per_token")->valuedouble == 0.5);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(got, "supports_stream")));
    assert_null(cJSON_GetObjectItem(got, "context_window"));
    assert_null(cJSON_GetObjectItem(got, "supports_vision"));
    cJSON_Delete(got);

    /* No Model applies: the fallback. */
    got = parse_owned(shape_model_json("ns.m", NULL));
    cJSON *want = cJSON_Parse("{\"name\":\"ns.m\",\"kind\":\"chat\"}");
    assert_true(cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void test_models_meta_matches_golden(void **state)
{
    (void)state;
    cJSON *want = golden("models_meta.json");
    struct shape_fields f = {0};
    shape_models_meta_fields("1734464000123", 1734464000, "manual",
                             "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "",
                             "", &f);
    /* A hash: every field is a string, and the set is exactly the golden's. */
    assert_int_equal(f.n, (size_t)cJSON_GetArraySize(want));
    cJSON *w;
    cJSON_ArrayForEach(w, want)
    {
        assert_true(cJSON_IsString(w));
        if (shape_fields_get(&f, w->string) == NULL)
            fail_msg("models_meta field %s missing", w->string);
    }
    assert_string_equal(shape_fields_get(&f, "updated_at"), "1734464000");
    shape_fields_free(&f);
    cJSON_Delete(want);
}

static void test_checksum(void **state)
{
    (void)state;
    char sum[65];
    /* Sorted by name whatever the input order; each field is name \n value \n. */
    const char *names[] = {"b.y", "a.x"};
    const char *values[] = {"v2", "{\"k\":1}"};
    shape_models_checksum(names, values, 2, sum);
    assert_string_equal(sum, "e3b201e0a402a2ec38636679387738c97dc27e93658e675dcc187bc15ef01332");
    shape_models_checksum(NULL, NULL, 0, sum);
    assert_string_equal(sum, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* Byte order, not locale order: "B" sorts before "a". */
    const char *n2[] = {"a", "B"};
    const char *v2[] = {"1", "2"};
    char s1[65], s2[65];
    shape_models_checksum(n2, v2, 2, s1);
    const char *n3[] = {"B", "a"};
    const char *v3[] = {"2", "1"};
    shape_models_checksum(n3, v3, 2, s2);
    assert_string_equal(s1, s2);
}

/* ---- tokens and masters --------------------------------------------------- */

static const char *const token_field_names[] = {
    "key_id",       "master_id",     "name",       "group",
    "status",       "scopes",        "namespaces", "model_limits_enabled",
    "model_limits", "allow_ips",     "expires_at", "quota_limit",
    "quota_used",   "quota_reset_at"};

static struct shape_key base_key(void)
{
    struct shape_key k = {
        .key_id = 5,
        .master_id = 2,
        .name = "ci",
        .group = "",
        .status = "active",
        .scopes = "[\"chat\"]",
        .namespaces = "[]",
        .model_limits_enabled = true,
        .model_limits = "[\"default.gpt-4o\"]",
        .allow_ips = "[]",
        .expires_at = 0,
        .quota_limit = -1,
        .quota_used = 10,
        .quota_reset_at = 0,
        .master_group = "",
        .master_status = "active",
        .master_namespaces = "[]",
        .master_default_namespace = "team",
    };
    return k;
}

static void test_token_fields(void **state)
{
    (void)state;
    struct shape_key k = base_key();
    struct shape_fields f = {0};
    shape_token_fields(&k, 1000, &f);
    assert_int_equal(f.n, EZ_ARRAY_LEN(token_field_names));
    for (size_t i = 0; i < EZ_ARRAY_LEN(token_field_names); i++)
        if (shape_fields_get(&f, token_field_names[i]) == NULL)
            fail_msg("token field %s missing", token_field_names[i]);
    assert_string_equal(shape_fields_get(&f, "key_id"), "5");
    assert_string_equal(shape_fields_get(&f, "group"), "default");
    assert_string_equal(shape_fields_get(&f, "status"), "active");
    /* No namespaces of its own, none on the master: [default_namespace]. */
    assert_string_equal(shape_fields_get(&f, "namespaces"), "[\"team\"]");
    assert_string_equal(shape_fields_get(&f, "model_limits_enabled"), "1");
    assert_string_equal(shape_fields_get(&f, "allow_ips"), "[]");
    assert_string_equal(shape_fields_get(&f, "expires_at"), "0");
    assert_string_equal(shape_fields_get(&f, "quota_limit"), "-1");
    shape_fields_free(&f);

    /* Inheritance: the master's group and namespaces; the key's own win. */
    k.master_group = "vip";
    k.master_namespaces = "[\"a\",\"b\"]";
    shape_token_fields(&k, 1000, &f);
    assert_string_equal(shape_fields_get(&f, "group"), "vip");
    assert_string_equal(shape_fields_get(&f, "namespaces"), "[\"a\",\"b\"]");
    shape_fields_free(&f);
    k.group = "own";
    k.namespaces = "[\"b\"]";
    shape_token_fields(&k, 1000, &f);
    assert_string_equal(shape_fields_get(&f, "group"), "own");
    assert_string_equal(shape_fields_get(&f, "namespaces"), "[\"b\"]");
    shape_fields_free(&f);
}

static void test_key_status(void **state)
{
    (void)state;
    struct shape_key k = base_key();
    assert_string_equal(shape_key_status(&k, 1000), "active");
    k.status = "disabled";
    assert_string_equal(shape_key_status(&k, 1000), "disabled");
    k.status = "exhausted";
    assert_string_equal(shape_key_status(&k, 1000), "exhausted");

    k = base_key();
    k.master_status = "suspended";
    assert_string_equal(shape_key_status(&k, 1000), "suspended");

    k = base_key();
    k.expires_at = 1000;
    assert_string_equal(shape_key_status(&k, 999), "active");
    assert_string_equal(shape_key_status(&k, 1000), "expired");

    k = base_key();
    k.quota_limit = 10;
    k.quota_used = 9;
    assert_string_equal(shape_key_status(&k, 1000), "active");
    k.quota_used = 10;
    assert_string_equal(shape_key_status(&k, 1000), "exhausted");
    k.quota_limit = 0; /* a zero quota allows nothing */
    k.quota_used = 0;
    assert_string_equal(shape_key_status(&k, 1000), "exhausted");
}

static void test_master_fields(void **state)
{
    (void)state;
    struct shape_master m = {.name = "acme",
                             .group = "",
                             .status = "active",
                             .epoch = 3,
                             .global_qps = 50,
                             .namespaces = "[]",
                             .default_namespace = "default"};
    static const char *const names[] = {"name",       "group",      "status",           "epoch",
                                        "global_qps", "namespaces", "default_namespace"};
    struct shape_fields f = {0};
    shape_master_fields(&m, &f);
    assert_int_equal(f.n, EZ_ARRAY_LEN(names));
    for (size_t i = 0; i < EZ_ARRAY_LEN(names); i++)
        assert_non_null(shape_fields_get(&f, names[i]));
    assert_string_equal(shape_fields_get(&f, "group"), "default");
    assert_string_equal(shape_fields_get(&f, "epoch"), "3");
    assert_string_equal(shape_fields_get(&f, "namespaces"), "[\"default\"]");
    shape_fields_free(&f);
}

/* ---- bindings ------------------------------------------------------------- */

static const char *const openai_models[] = {"gpt-4o", "gpt-4o-mini"};
static const int64_t two_keys[] = {42, 43};

static void test_binding_shape(void **state)
{
    (void)state;
    struct shape_candidate c[3] = {
        /* resolves: both keys serve gpt-4o */
        {.group_id = 7,
         .route_group = "",
         .weight = 1,
         .selector_type = "exact",
         .selector_value = "",
         .models = openai_models,
         .nmodels = 2,
         .key_ids = two_keys,
         .nkeys = 2},
        /* regex hitting both models: config_error */
        {.group_id = 8,
         .route_group = "vip",
         .weight = 5,
         .selector_type = "regex",
         .selector_value = "gpt-4o.*",
         .models = openai_models,
         .nmodels = 2,
         .key_ids = two_keys,
         .nkeys = 2},
        /* no active API key: no_provider */
        {.group_id = 9,
         .route_group = "default",
         .weight = 2,
         .selector_type = "exact",
         .selector_value = "gpt-4o",
         .models = openai_models,
         .nmodels = 2,
         .key_ids = NULL,
         .nkeys = 0},
    };
    cJSON *got = parse_owned(shape_binding_json("ns", "gpt-4o", 1734464000, c, 3));
    cJSON *want = cJSON_Parse(
        "{\"namespace\":\"ns\",\"public_model\":\"gpt-4o\",\"status\":\"active\","
        "\"updated_at\":1734464000,\"candidates\":["
        "{\"group_id\":7,\"route_group\":\"default\",\"weight\":1,\"selector_type\":\"exact\","
        "\"selector_value\":\"gpt-4o\",\"status\":\"active\","
        "\"upstreams\":{\"42\":\"gpt-4o\",\"43\":\"gpt-4o\"}},"
        "{\"group_id\":8,\"route_group\":\"vip\",\"weight\":5,\"selector_type\":\"regex\","
        "\"selector_value\":\"gpt-4o.*\",\"status\":\"error\",\"error\":\"config_error\","
        "\"upstreams\":{}},"
        "{\"group_id\":9,\"route_group\":\"default\",\"weight\":2,\"selector_type\":\"exact\","
        "\"selector_value\":\"gpt-4o\",\"status\":\"error\",\"error\":\"no_provider\","
        "\"upstreams\":{}}]}");
    assert_non_null(want);
    if (!cJSON_Compare(want, got, true)) {
        char *s = cJSON_Print(got);
        fprintf(stderr, "got: %s\n", s);
        free(s);
        fail();
    }
    cJSON_Delete(want);
    cJSON_Delete(got);

    /* Only failing candidates: the binding itself reports the error. */
    got = parse_owned(shape_binding_json("ns", "gpt-4o", 0, &c[2], 1));
    assert_string_equal(cJSON_GetObjectItem(got, "status")->valuestring, "error");
    cJSON_Delete(got);

    /* normalize_exact through the selector. */
    static const char *const moon[] = {"Moonshot/Kimi2"};
    struct shape_candidate n = {.group_id = 1,
                                .selector_type = "normalize_exact",
                                .selector_value = "KIMI2",
                                .models = moon,
                                .nmodels = 1,
                                .key_ids = two_keys,
                                .nkeys = 1,
                                .weight = 1};
    got = parse_owned(shape_binding_json("default", "kimi", 0, &n, 1));
    cJSON *cand = cJSON_GetArrayItem(cJSON_GetObjectItem(got, "candidates"), 0);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cand, "upstreams"), "42")->valuestring,
        "Moonshot/Kimi2");
    cJSON_Delete(got);
}

static void test_refresh_message(void **state)
{
    (void)state;
    cJSON *got = parse_owned(shape_refresh_json("bindings", "17", "config:bindings", 1734464000));
    cJSON *want = cJSON_Parse("{\"resource\":\"bindings\",\"version\":\"17\","
                              "\"active_key\":\"config:bindings\",\"timestamp\":1734464000}");
    assert_true(cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
}

/* ---- outbox rows ---------------------------------------------------------- */

static bool has_id(const struct snap_ids *s, int64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == id)
            return true;
    return false;
}

static bool has_str(const struct snap_strs *s, const char *v)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], v) == 0)
            return true;
    return false;
}

static void test_outbox_rows(void **state)
{
    (void)state;
    struct snap_work w;
    snap_work_init(&w);
    assert_true(snap_work_empty(&w));

    assert_int_equal(
        outbox_row_to_work("keys", 5, true, "upsert", "{\"old_token_hashes\":[\"aa\"]}", &w),
        OUTBOX_ROW_WORK);
    assert_true(has_id(&w.keys, 5));
    assert_true(has_str(&w.del_tokens, "aa"));
    outbox_row_to_work("keys", 6, true, "delete", "{\"token_hashes\":[\"bb\", 3, null]}", &w);
    assert_true(has_str(&w.del_tokens, "bb"));
    assert_int_equal(w.del_tokens.n, 2);

    outbox_row_to_work("masters", 2, true, "delete", "{\"token_hashes\":[\"cc\"]}", &w);
    assert_true(has_id(&w.masters, 2));
    assert_true(has_str(&w.del_tokens, "cc"));
    outbox_row_to_work("master_keys", 3, true, "upsert", "{}", &w);
    assert_true(has_id(&w.key_masters, 3));

    outbox_row_to_work("provider_groups", 7, true, "delete",
                       "{\"api_key_ids\":[42, -1, 1.5],\"binding_keys\":[\"ns.m\"]}", &w);
    assert_true(has_id(&w.groups, 7));
    assert_true(has_id(&w.api_keys, 42));
    assert_int_equal(w.api_keys.n, 1);
    assert_true(has_str(&w.binding_keys, "ns.m"));
    outbox_row_to_work("api_keys", 44, true, "delete", "{\"group_id\": 8}", &w);
    assert_true(has_id(&w.api_keys, 44));
    assert_true(has_id(&w.binding_groups, 8));

    outbox_row_to_work("bindings", 9, true, "upsert", "{\"binding_keys\":[\"a.b\",\"c.d\"]}", &w);
    assert_true(has_id(&w.bindings, 9));
    assert_true(has_str(&w.binding_keys, "c.d"));
    outbox_row_to_work("models", 11, true, "delete", "{\"names\":[\"m\"]}", &w);
    assert_true(has_id(&w.models, 11));
    assert_true(has_str(&w.model_names, "m"));

    assert_false(w.features);
    outbox_row_to_work("features", 0, false, "upsert", NULL, &w);
    assert_true(w.features);
    snap_work_free(&w);

    /* Nothing to publish, a rebuild, an unknown resource, a broken payload. */
    snap_work_init(&w);
    assert_int_equal(outbox_row_to_work("namespaces", 1, true, "upsert", "{}", &w),
                     OUTBOX_ROW_WORK);
    assert_true(snap_work_empty(&w));
    assert_int_equal(outbox_row_to_work("all", 0, false, "upsert", "{}", &w), OUTBOX_ROW_REBUILD);
    assert_int_equal(outbox_row_to_work("bogus", 1, true, "upsert", "{}", &w), OUTBOX_ROW_UNKNOWN);
    assert_int_equal(outbox_row_to_work("keys", 4, true, "upsert", "[1, 2", &w), OUTBOX_ROW_WORK);
    assert_true(has_id(&w.keys, 4));
    assert_int_equal(w.del_tokens.n, 0);
    /* A NULL resource_id (or 0) names nothing. */
    outbox_row_to_work("masters", 0, false, "upsert", "{}", &w);
    assert_int_equal(w.masters.n, 0);
    snap_work_free(&w);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(outbox_backoff_seconds(5, 0), 5);
    assert_int_equal(outbox_backoff_seconds(5, 1), 10);
    assert_int_equal(outbox_backoff_seconds(5, 3), 40);
    assert_int_equal(outbox_backoff_seconds(5, 10), OUTBOX_BACKOFF_CAP_SECONDS);
    assert_int_equal(outbox_backoff_seconds(5, 1000), OUTBOX_BACKOFF_CAP_SECONDS);
    /* An interval above the cap is never shortened. */
    assert_int_equal(outbox_backoff_seconds(3600, 2), 3600);
    assert_int_equal(outbox_backoff_seconds(1, 2), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provider_matches_golden),
        cmocka_unit_test(test_provider_defaults),
        cmocka_unit_test(test_model_matches_golden),
        cmocka_unit_test(test_model_omits_zero_fields),
        cmocka_unit_test(test_models_meta_matches_golden),
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_token_fields),
        cmocka_unit_test(test_key_status),
        cmocka_unit_test(test_master_fields),
        cmocka_unit_test(test_binding_shape),
        cmocka_unit_test(test_refresh_message),
        cmocka_unit_test(test_outbox_rows),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
