/* Unit tests for common/selector.c: the "unique hit" rule, normalisation, regex checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selector.h"

/* ---- fixtures: model lists of provider groups ---------------------------- */

static const char *const openai[] = {"gpt-4o", "gpt-4o-mini", "o3", NULL};
static const char *const moonshot[] = {"Moonshot/Kimi2", "moonshot/other", NULL};
static const char *const clash[] = {"Moonshot/Kimi2", "kimi2", NULL};
static const char *const dup[] = {"gpt-4o", "gpt-4o", NULL};
static const char *const empty[] = {NULL};
static const char *const odd[] = {"a", "ab", "b)", "x.y", "a)|(b)", NULL};

static size_t count(const char *const *models)
{
    size_t n = 0;
    while (models[n])
        n++;
    return n;
}

/* ---- selector_resolve: one row per case (type, value, models -> want or NULL) --- */

struct resolve_case {
    const char *type;
    const char *value;
    const char *const *models;
    const char *want; /* NULL = config_error */
};

static const struct resolve_case resolve_cases[] = {
    /* exact */
    {"exact", "gpt-4o", openai, "gpt-4o"},
    {"exact", "gpt-4", openai, NULL},
    {"exact", "GPT-4o", openai, NULL},
    {"exact", " gpt-4o", openai, NULL},
    {"exact", "gpt-4o", empty, NULL},
    {"exact", "gpt-4o", dup, "gpt-4o"}, /* the same id twice is one hit */
    /* normalize_exact: both sides lower-cased, trimmed, last path segment */
    {"normalize_exact", "kimi2", moonshot, "Moonshot/Kimi2"},
    {"normalize_exact", "  KIMI2 ", moonshot, "Moonshot/Kimi2"},
    {"normalize_exact", "other/Moonshot/kimi2", moonshot, "Moonshot/Kimi2"},
    {"normalize_exact", "kimi", moonshot, NULL},
    {"normalize_exact", "kimi2", clash, NULL}, /* two distinct ids normalise alike */
    {"normalize_exact", "GPT-4O-MINI", openai, "gpt-4o-mini"},
    /* regex: full match, exactly one id */
    {"regex", "gpt-4o-m.*", openai, "gpt-4o-mini"},
    {"regex", "o[0-9]", openai, "o3"},
    {"regex", "gpt-4", openai, NULL},     /* a prefix is not a full match */
    {"regex", "claude.*", openai, NULL},  /* zero hits */
    {"regex", "gpt-4o.*", openai, NULL},  /* several hits */
    {"regex", "gpt-4o|o3", openai, NULL}, /* alternation inside the anchors: two hits */
    {"regex", "x.y", odd, "x.y"},
    {"regex", "a|zz", odd, "a"},
    {"regex", "b\\)", odd, "b)"},
    {"regex", "a\\)\\|\\(b\\)", odd, "a)|(b)"},
    {"regex", "(", openai, NULL},   /* bad regex */
    {"regex", "a)|(b)", odd, NULL}, /* would escape the anchors: refused */
    /* unknown type */
    {"glob", "gpt-*", openai, NULL},
};

static void test_resolve_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(resolve_cases) / sizeof(resolve_cases[0]); i++) {
        const struct resolve_case *c = &resolve_cases[i];
        const char *got = "unset";
        int rc = selector_resolve(c->type, c->value, c->models, count(c->models), &got);
        if (c->want == NULL) {
            if (rc != -1 || got != NULL)
                fail_msg("case %zu (%s %s): want config_error, got %s", i, c->type, c->value,
                         got ? got : "NULL");
        } else {
            if (rc != 0 || got == NULL || strcmp(got, c->want) != 0)
                fail_msg("case %zu (%s %s): want %s, got %s", i, c->type, c->value, c->want,
                         got ? got : "NULL");
        }
    }
}

/* ---- selector_normalize ---------------------------------------------------- */

static void test_normalize(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"Moonshot/Kimi2", "kimi2"}, {"kimi2", "kimi2"}, {"  A/B/C  ", "c"}, {"a/ B ", "b"},
        {"trailing/", ""},           {"", ""},           {"   ", ""},        {"NoSlash", "noslash"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = selector_normalize(cases[i][0]);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("normalize(\"%s\") = \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
        free(got);
    }
}

/* ---- selector_regex_check ---------------------------------------------------- */

static void test_regex_check(void **state)
{
    (void)state;
    static const char *const good[] = {"gpt-4o",        "gpt-.*", "(a|b)c", "[)]", "[^)]x", "[]a)]",
                                       "[[:alpha:])]+", "a\\)",   "a{1,3}", "()",  NULL};
    static const char *const bad[] = {"(",      "[",  "a{2,1}", "*a",   "\\",
                                      "a)|(b)", "a)", ")",      "(a))", NULL};
    char err[128];
    for (int i = 0; good[i]; i++)
        if (selector_regex_check(good[i], err, sizeof(err)) != 0)
            fail_msg("regex \"%s\" refused: %s", good[i], err);
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        if (selector_regex_check(bad[i], err, sizeof(err)) != -1)
            fail_msg("regex \"%s\" accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    /* An over-long value is refused before regcomp sees it. */
    char *big = malloc(SELECTOR_VALUE_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', SELECTOR_VALUE_MAX + 1);
    big[SELECTOR_VALUE_MAX + 1] = '\0';
    assert_int_equal(selector_regex_check(big, err, sizeof(err)), -1);
    free(big);
}

static void test_type_valid(void **state)
{
    (void)state;
    assert_true(selector_type_valid("exact"));
    assert_true(selector_type_valid("normalize_exact"));
    assert_true(selector_type_valid("regex"));
    assert_false(selector_type_valid("Exact"));
    assert_false(selector_type_valid(""));
    assert_false(selector_type_valid(NULL));
}

/* ---- selector_resolve_binding: the candidate's upstreams and error ------------- */

struct binding_case {
    const char *type;
    const char *value;
    const char *const *models;
    const int64_t *keys;
    size_t nkeys;
    const char *want_error;
    const char *want_upstreams; /* rendered JSON */
};

static const int64_t two_keys[] = {42, 43};
static const int64_t one_key[] = {7};

static const struct binding_case binding_cases[] = {
    {"exact", "gpt-4o", openai, two_keys, 2, "", "{\"42\":\"gpt-4o\",\"43\":\"gpt-4o\"}"},
    {"exact", "gpt-5", openai, two_keys, 2, "config_error", "{}"},
    {"normalize_exact", "kimi2", moonshot, one_key, 1, "", "{\"7\":\"Moonshot/Kimi2\"}"},
    {"regex", "o.", openai, one_key, 1, "", "{\"7\":\"o3\"}"},
    {"regex", "gpt.*", openai, one_key, 1, "config_error", "{}"},
    {"regex", "nothing", openai, one_key, 1, "config_error", "{}"},
    {"regex", "((", openai, one_key, 1, "config_error", "{}"},
    {"exact", "gpt-4o", openai, NULL, 0, "no_provider", "{}"},
    /* config_error wins over no_provider: it is what the operator must fix */
    {"exact", "gpt-5", openai, NULL, 0, "config_error", "{}"},
};

static void test_resolve_binding(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(binding_cases) / sizeof(binding_cases[0]); i++) {
        const struct binding_case *c = &binding_cases[i];
        cJSON *up = cJSON_CreateObject();
        const char *err = selector_resolve_binding(c->type, c->value, c->models, count(c->models),
                                                   c->keys, c->nkeys, up);
        char *json = cJSON_PrintUnformatted(up);
        if (strcmp(err, c->want_error) != 0 || strcmp(json, c->want_upstreams) != 0)
            fail_msg("case %zu: got error \"%s\" upstreams %s, want \"%s\" %s", i, err, json,
                     c->want_error, c->want_upstreams);
        free(json);
        cJSON_Delete(up);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_cases),   cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_regex_check),     cmocka_unit_test(test_type_valid),
        cmocka_unit_test(test_resolve_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
