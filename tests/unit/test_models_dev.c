/*
 * Unit tests for the models.dev parser (common/models_dev.c): the sample
 * document in tests/fixtures/, the capability mapping of one entry, the
 * "first provider wins" rule, what is skipped, what is refused, and the way
 * back from a stored capability to a shape_model.
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

#include "models_dev.h"

/* tests/fixtures/<name> (run from the project root, as scripts/run-tests does). */
static char *fixture(const char *name, size_t *len)
{
    char path[512];
    const char *dir = getenv("EZ_FIXTURE_DIR");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open fixture %s (run from the project root)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static cJSON *parse_str(const char *s, size_t *count, char *err, size_t errlen)
{
    return models_dev_parse(s, strlen(s), count, err, errlen);
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static bool flag(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsBool(v));
    return cJSON_IsTrue(v);
}

/* ---- the sample document -------------------------------------------------- */

static void test_sample_document(void **state)
{
    (void)state;
    size_t len, count = 0;
    char err[128] = "";
    char *text = fixture("models-dev-sample.json", &len);
    cJSON *flat = models_dev_parse(text, len, &count, err, sizeof(err));
    assert_non_null(flat);
    assert_int_equal(count, 7);
    assert_int_equal(cJSON_GetArraySize(flat), 7);

    const cJSON *g = cJSON_GetObjectItemCaseSensitive(flat, "gpt-4o");
    assert_non_null(g);
    assert_string_equal(str(g, "kind"), "chat");
    assert_true(num(g, "context_window") == 128000);
    assert_true(num(g, "max_output_tokens") == 16384);
    assert_true(num(g, "cost_per_token") == 2.5 / 1000000.0);
    assert_true(flag(g, "supports_vision"));
    assert_true(flag(g, "supports_functions"));
    assert_true(flag(g, "supports_tool_choice"));
    assert_false(flag(g, "supports_fim"));
    assert_false(flag(g, "supports_stream"));
    assert_string_equal(str(g, "provider"), "openai");
    assert_string_equal(str(g, "display_name"), "GPT-4o");

    const cJSON *e = cJSON_GetObjectItemCaseSensitive(flat, "text-embedding-3-small");
    assert_string_equal(str(e, "kind"), "embedding");
    assert_false(flag(e, "supports_vision"));
    assert_false(flag(e, "supports_functions"));

    const cJSON *r = cJSON_GetObjectItemCaseSensitive(flat, "deepseek-reasoner");
    assert_string_equal(str(r, "kind"), "chat");
    assert_false(flag(r, "supports_functions"));
    assert_false(flag(r, "supports_vision"));
    assert_true(num(r, "max_output_tokens") == 32768);
    assert_string_equal(str(r, "provider"), "deepseek");

    const cJSON *c = cJSON_GetObjectItemCaseSensitive(flat, "claude-sonnet-4-20250514");
    assert_true(flag(c, "supports_vision")); /* "image" among several input modalities */
    assert_true(num(c, "context_window") == 200000);

    cJSON_Delete(flat);
    free(text);
}

/* The flat object is sorted by id (byte order): the same document stores the same way. */
static void test_sorted_output(void **state)
{
    (void)state;
    size_t len, count;
    char err[128];
    char *text = fixture("models-dev-sample.json", &len);
    cJSON *flat = models_dev_parse(text, len, &count, err, sizeof(err));
    assert_non_null(flat);
    const cJSON *m, *prev = NULL;
    cJSON_ArrayForEach(m, flat)
    {
        if (prev)
            assert_true(strcmp(prev->string, m->string) < 0);
        prev = m;
    }
    cJSON_Delete(flat);
    free(text);
}

/* ---- rules ---------------------------------------------------------------- */

static void test_first_provider_wins(void **state)
{
    (void)state;
    size_t count;
    char err[128];
    cJSON *flat = parse_str("{\"b\": {\"models\": {\"m\": {\"limit\": {\"context\": 1}}}},"
                            " \"a\": {\"models\": {\"m\": {\"limit\": {\"context\": 2}},"
                            " \"n\": {}}}}",
                            &count, err, sizeof(err));
    assert_non_null(flat);
    assert_int_equal(count, 2);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(flat, "m");
    assert_string_equal(str(m, "provider"), "b");
    assert_true(num(m, "context_window") == 1);
    /* an entry without details still gets a chat capability, named after its id */
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(flat, "n");
    assert_string_equal(str(n, "kind"), "chat");
    assert_string_equal(str(n, "display_name"), "n");
    assert_null(cJSON_GetObjectItemCaseSensitive(n, "context_window"));
    cJSON_Delete(flat);
}

static void test_bad_entries_are_skipped(void **state)
{
    (void)state;
    size_t count;
    char err[128];
    cJSON *flat = parse_str(
        "{\"x\": [], \"y\": {\"models\": []}, \"z\": {\"id\": \"z\"},"
        " \"p\": {\"models\": {\"\": {}, \"has space\": {}, \"ctl\\u0001\": {}, \"s\": \"str\","
        " \"ok\": {\"limit\": {\"context\": -5, \"output\": 1e300}, \"cost\": {\"input\": \"1\"},"
        " \"tool_call\": \"yes\", \"attachment\": true}}}}",
        &count, err, sizeof(err));
    assert_non_null(flat);
    assert_int_equal(count, 1);
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(flat, "ok");
    assert_non_null(ok);
    /* negative, huge and non-number values are not published */
    assert_null(cJSON_GetObjectItemCaseSensitive(ok, "context_window"));
    assert_null(cJSON_GetObjectItemCaseSensitive(ok, "max_output_tokens"));
    assert_null(cJSON_GetObjectItemCaseSensitive(ok, "cost_per_token"));
    assert_false(flag(ok, "supports_functions")); /* only JSON true counts */
    assert_true(flag(ok, "supports_vision"));     /* attachment, when no modalities */
    cJSON_Delete(flat);
}

static void test_long_id_is_skipped(void **state)
{
    (void)state;
    char id[MODELS_DEV_ID_MAX + 2];
    memset(id, 'a', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    char doc[1024];
    snprintf(doc, sizeof(doc), "{\"p\": {\"models\": {\"%s\": {}, \"short\": {}}}}", id);
    size_t count;
    char err[128];
    cJSON *flat = parse_str(doc, &count, err, sizeof(err));
    assert_non_null(flat);
    assert_int_equal(count, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(flat, id));
    cJSON_Delete(flat);
}

static void test_kinds(void **state)
{
    (void)state;
    size_t count;
    char err[128];
    cJSON *flat = parse_str("{\"p\": {\"models\": {\"bge-reranker-v2\": {},"
                            " \"voyage-3\": {\"family\": \"Embedding\"}, \"chatty\": {}}}}",
                            &count, err, sizeof(err));
    assert_non_null(flat);
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(flat, "bge-reranker-v2"), "kind"),
                        "rerank");
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(flat, "voyage-3"), "kind"),
                        "embedding");
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(flat, "chatty"), "kind"), "chat");
    cJSON_Delete(flat);
}

static void test_refused_documents(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "not json",
        "[1, 2]",
        "\"x\"",
        "{}",
        "{\"p\": {\"models\": {}}}",
        "{\"p\": 1}",
        "{\"p\": {\"models\": {\"a\": 1}}}",
        "{\"p\": {\"models\": {}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t count = 99;
        char err[128] = "";
        cJSON *flat = parse_str(bad[i], &count, err, sizeof(err));
        if (flat != NULL)
            fail_msg("document %zu was accepted", i);
        assert_int_equal(count, 0);
        assert_true(err[0] != '\0');
    }
    /* the length is honoured: a valid prefix followed by garbage outside it */
    const char *s = "{\"p\": {\"models\": {\"a\": {}}}}GARBAGE";
    size_t count;
    char err[128];
    cJSON *flat = models_dev_parse(s, strlen(s) - strlen("GARBAGE"), &count, err, sizeof(err));
    assert_non_null(flat);
    assert_int_equal(count, 1);
    cJSON_Delete(flat);
    assert_null(models_dev_parse(NULL, 0, &count, err, sizeof(err)));
}

/* ---- back to a shape_model -------------------------------------------------- */

static void test_to_shape_round_trip(void **state)
{
    (void)state;
    size_t len, count;
    char err[128];
    char *text = fixture("models-dev-sample.json", &len);
    cJSON *flat = models_dev_parse(text, len, &count, err, sizeof(err));
    assert_non_null(flat);
    /* stored as jsonb and read back as text: the same after a print/parse round trip */
    char *stored = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(flat, "gpt-4o"));
    cJSON *cap = cJSON_Parse(stored);
    struct shape_model m;
    assert_int_equal(models_dev_to_shape(cap, &m), 0);
    assert_string_equal(m.kind, "chat");
    assert_int_equal(m.context_window, 128000);
    assert_int_equal(m.max_output_tokens, 16384);
    assert_true(m.cost_per_token == 2.5 / 1000000.0);
    assert_true(m.supports_vision && m.supports_functions && m.supports_tool_choice);
    assert_false(m.supports_fim || m.supports_stream);

    char *json = shape_model_json("ns.gpt", &m);
    cJSON *pub = cJSON_Parse(json);
    assert_string_equal(str(pub, "name"), "ns.gpt");
    assert_string_equal(str(pub, "kind"), "chat");
    assert_true(num(pub, "context_window") == 128000);
    /* provider and display_name stay in the registry: not contract members */
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "provider"));
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "display_name"));
    assert_null(cJSON_GetObjectItemCaseSensitive(pub, "supports_fim"));

    cJSON_Delete(pub);
    free(json);
    cJSON_Delete(cap);
    free(stored);
    cJSON_Delete(flat);
    free(text);
}

static void test_to_shape_tolerates_bad_members(void **state)
{
    (void)state;
    struct shape_model m;
    cJSON *cap = cJSON_Parse("{\"kind\": \"\", \"context_window\": -1, \"max_output_tokens\": 1.5,"
                             " \"cost_per_token\": \"x\", \"supports_vision\": 1}");
    assert_int_equal(models_dev_to_shape(cap, &m), 0);
    assert_string_equal(m.kind, "chat");
    assert_int_equal(m.context_window, 0);
    assert_int_equal(m.max_output_tokens, 0);
    assert_true(m.cost_per_token == 0);
    assert_false(m.supports_vision);
    cJSON_Delete(cap);

    cJSON *arr = cJSON_Parse("[]");
    assert_int_equal(models_dev_to_shape(arr, &m), -1);
    assert_string_equal(m.kind, "chat");
    cJSON_Delete(arr);
    assert_int_equal(models_dev_to_shape(NULL, &m), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_document),
        cmocka_unit_test(test_sorted_output),
        cmocka_unit_test(test_first_provider_wins),
        cmocka_unit_test(test_bad_entries_are_skipped),
        cmocka_unit_test(test_long_id_is_skipped),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_refused_documents),
        cmocka_unit_test(test_to_shape_round_trip),
        cmocka_unit_test(test_to_shape_tolerates_bad_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
