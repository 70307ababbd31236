/* Strict JSON parsing: what cJSON tolerates but an API must refuse. */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Depth of brackets outside strings; cJSON recurses, so cap it before parsing. */
static int depth_ok(const char *s, size_t len)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > JSON_MAX_DEPTH)
                return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

/* An escaped NUL would silently truncate the C string cJSON hands back. */
static int has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 5 < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' &&
            s[i + 5] == '0')
            return 1;
        i++; /* skip the escaped character so "\\\\u0000" is not misread */
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int keys_unique(const cJSON *obj)
{
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n < 2)
        return 1;
    const char **names = ez_malloc(n * sizeof(*names));
    size_t i = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        names[i++] = c->string;
    qsort(names, n, sizeof(*names), cmp_str);
    int ok = 1;
    for (i = 1; i < n && ok; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            ok = 0;
    free(names);
    return ok;
}

static int no_duplicates(const cJSON *item)
{
    if (cJSON_IsObject(item) && !keys_unique(item))
        return 0;
    for (const cJSON *c = item->child; c; c = c->next)
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && !no_duplicates(c))
            return 0;
    return 1;
}

int json_parse_strict(const char *body, size_t len, cJSON **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!ez_utf8_valid(body, len)) {
        snprintf(err, errlen, "body is not valid UTF-8 text");
        return EZ_ERR;
    }
    if (!depth_ok(body, len)) {
        snprintf(err, errlen, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
        return EZ_ERR;
    }
    if (has_nul_escape(body, len)) {
        snprintf(err, errlen, "JSON strings may not contain \\u0000");
        return EZ_ERR;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root == NULL) {
        snprintf(err, errlen, "malformed JSON near byte %zu",
                 end && end >= body ? (size_t)(end - body) : (size_t)0);
        return EZ_ERR;
    }
    for (const char *p = end; p < body + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            snprintf(err, errlen, "unexpected data after the JSON value");
            cJSON_Delete(root);
            return EZ_ERR;
        }
    }
    if (!no_duplicates(root)) {
        snprintf(err, errlen, "duplicate key in a JSON object");
        cJSON_Delete(root);
        return EZ_ERR;
    }
    *out = root;
    return EZ_OK;
}

bool json_int_in(const cJSON *item, int64_t min, int64_t max, int64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double d = item->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return false;
    if (d < -(double)JSON_MAX_SAFE_INT || d > (double)JSON_MAX_SAFE_INT)
        return false;
    int64_t v = (int64_t)d;
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool json_list_has(const cJSON *list, const char *s)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (cJSON_IsString(e) && strcmp(e->valuestring, s) == 0)
            return true;
    }
    return false;
}

char *json_render(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    if (s == NULL) {
        fprintf(stderr, "fatal: out of memory rendering JSON\n");
        abort();
    }
    return s;
}
