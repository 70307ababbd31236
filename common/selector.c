/* Binding selector resolution (exact, normalize_exact, regex) under the "unique hit" rule. */
#include "selector.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

bool selector_type_valid(const char *t)
{
    return t != NULL && (strcmp(t, "exact") == 0 || strcmp(t, "normalize_exact") == 0 ||
                         strcmp(t, "regex") == 0);
}

/* [*b, *e) without leading and trailing whitespace. */
static void trim(const char **b, const char **e)
{
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

char *selector_normalize(const char *s)
{
    const char *b = s, *e = s + strlen(s);
    trim(&b, &e);
    for (const char *p = e; p > b; p--) {
        if (p[-1] == '/') {
            b = p;
            break;
        }
    }
    trim(&b, &e);
    char *out = ez_strndup(b, (size_t)(e - b));
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

/* Compiles ^(value)$; 0 or -1 with the reason in err (may be NULL). */
static int compile_anchored(regex_t *re, const char *value, char *err, size_t errlen)
{
    size_t n = strlen(value);
    char *pat = ez_malloc(n + 5);
    snprintf(pat, n + 5, "^(%s)$", value);
    int rc = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    free(pat);
    if (rc != 0) {
        if (err && errlen)
            regerror(rc, re, err, errlen);
        return -1;
    }
    return 0;
}

/*
 * True when a ')' closes no '(' in value, outside bracket expressions and
 * escapes. glibc takes such a ')' as a literal in a bare ERE, but inside
 * ^(...)$ it would close our group: "a)|(b)" would become ^(a)|(b))$ and
 * match every id starting with "a".
 */
static bool stray_close_paren(const char *v)
{
    int depth = 0;
    for (const char *p = v; *p; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return false; /* trailing backslash: regcomp refuses it */
            p++;
        } else if (*p == '[') {
            /* Bracket expression: an initial '^' and ']' are members, as are [:x:] [=x=] [.x.]. */
            p++;
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']') {
                if (*p == '[' && (p[1] == ':' || p[1] == '=' || p[1] == '.')) {
                    char close = p[1];
                    const char *q = p + 2;
                    while (*q && !(q[0] == close && q[1] == ']'))
                        q++;
                    if (*q == '\0')
                        return false; /* unterminated: regcomp refuses it */
                    p = q + 2;
                    continue;
                }
                p++;
            }
            if (*p == '\0')
                return false;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')') {
            if (depth == 0)
                return true;
            depth--;
        }
    }
    return false;
}

int selector_regex_check(const char *value, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (strlen(value) > SELECTOR_VALUE_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "longer than %d characters", SELECTOR_VALUE_MAX);
        return -1;
    }
    regex_t re;
    /* On its own first, so that the reason names the user's pattern, not our wrapping. */
    int rc = regcomp(&re, value, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        if (err && errlen)
            regerror(rc, &re, err, errlen);
        return -1;
    }
    regfree(&re);
    if (stray_close_paren(value)) {
        if (err && errlen)
            snprintf(err, errlen, "Unmatched ) or \\)");
        return -1;
    }
    if (compile_anchored(&re, value, err, errlen) != 0)
        return -1;
    regfree(&re);
    return 0;
}

/* Records one hit; false once two distinct ids have hit (no need to look further). */
static bool add_hit(const char **hit, bool *several, const char *model)
{
    if (*hit == NULL)
        *hit = model;
    else if (strcmp(*hit, model) != 0)
        *several = true;
    return !*several;
}

int selector_resolve(const char *type, const char *value, const char *const *models, size_t n,
                     const char **out)
{
    const char *hit = NULL;
    bool several = false;
    *out = NULL;
    if (type == NULL || value == NULL)
        return -1;
    if (strcmp(type, "exact") == 0) {
        for (size_t i = 0; i < n; i++)
            if (strcmp(models[i], value) == 0 && !add_hit(&hit, &several, models[i]))
                break;
    } else if (strcmp(type, "normalize_exact") == 0) {
        char *want = selector_normalize(value);
        for (size_t i = 0; i < n; i++) {
            char *have = selector_normalize(models[i]);
            bool eq = strcmp(have, want) == 0;
            free(have);
            if (eq && !add_hit(&hit, &several, models[i]))
                break;
        }
        free(want);
    } else if (strcmp(type, "regex") == 0) {
        regex_t re;
        if (selector_regex_check(value, NULL, 0) != 0 || compile_anchored(&re, value, NULL, 0) != 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (regexec(&re, models[i], 0, NULL, 0) == 0 && !add_hit(&hit, &several, models[i]))
                break;
        regfree(&re);
    } else {
        return -1;
    }
    if (hit == NULL || several)
        return -1;
    *out = hit;
    return 0;
}

const char *selector_resolve_binding(const char *type, const char *value, const char *const *models,
                                     size_t nmodels, const int64_t *key_ids, size_t nkeys,
                                     cJSON *upstreams)
{
    const char *model;
    if (selector_resolve(type, value, models, nmodels, &model) != 0)
        return SELECTOR_CONFIG_ERROR;
    if (nkeys == 0)
        return SELECTOR_NO_PROVIDER;
    for (size_t i = 0; i < nkeys; i++) {
        char id[24];
        snprintf(id, sizeof(id), "%lld", (long long)key_ids[i]);
        cJSON_DeleteItemFromObjectCaseSensitive(upstreams, id);
        cJSON_AddStringToObject(upstreams, id, model);
    }
    return SELECTOR_OK;
}
