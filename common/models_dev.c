/* Parser of the models.dev api.json format into flat {model id -> capability} entries. */
#include "models_dev.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "json.h"
#include "util.h"

/* Case-insensitive substring test on ASCII (model ids and families are ASCII in practice). */
static bool contains_ci(const char *s, const char *needle)
{
    if (s == NULL)
        return false;
    size_t n = strlen(needle);
    for (; *s; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

/* A usable model id: 1..MODELS_DEV_ID_MAX bytes, no control characters or spaces. */
static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MODELS_DEV_ID_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* obj[a][b] as a finite, non-negative number, else 0. */
static double num_at(const cJSON *obj, const char *a, const char *b)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(obj, a);
    const cJSON *v = b ? cJSON_GetObjectItemCaseSensitive(o, b) : o;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
        return 0;
    return v->valuedouble;
}

/* A token count: a whole number within the JSON-safe range, else 0. */
static double count_at(const cJSON *obj, const char *a, const char *b)
{
    double v = num_at(obj, a, b);
    if (v > (double)JSON_MAX_SAFE_INT)
        return 0;
    return floor(v);
}

static bool list_has_ci(const cJSON *list, const char *s)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (cJSON_IsString(e) && strcasecmp(e->valuestring, s) == 0)
            return true;
    }
    return false;
}

/*
 * models.dev has no "kind": embedding and rerank models are told apart by
 * their id or family, the rest are chat models.
 */
static const char *entry_kind(const char *id, const cJSON *entry)
{
    const cJSON *fam = cJSON_GetObjectItemCaseSensitive(entry, "family");
    const char *family = cJSON_IsString(fam) ? fam->valuestring : NULL;
    if (contains_ci(id, "rerank") || contains_ci(family, "rerank"))
        return "rerank";
    if (contains_ci(id, "embed") || contains_ci(family, "embed"))
        return "embedding";
    return "chat";
}

cJSON *models_dev_capability(const char *id, const char *provider, const cJSON *entry)
{
    cJSON *cap = cJSON_CreateObject();
    cJSON_AddStringToObject(cap, "kind", entry_kind(id, entry));
    double ctx = count_at(entry, "limit", "context");
    double out = count_at(entry, "limit", "output");
    double cost = num_at(entry, "cost", "input") / MODELS_DEV_PRICE_UNIT;
    if (ctx > 0)
        cJSON_AddNumberToObject(cap, "context_window", ctx);
    if (out > 0)
        cJSON_AddNumberToObject(cap, "max_output_tokens", out);
    if (cost > 0)
        cJSON_AddNumberToObject(cap, "cost_per_token", cost);

    /* Vision: an image input modality; older entries only say "attachment". */
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(entry, "modalities");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(mods, "input");
    bool vision = cJSON_IsArray(input)
                      ? list_has_ci(input, "image")
                      : cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "attachment"));
    bool tools = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "tool_call"));
    cJSON_AddBoolToObject(cap, "supports_vision", vision);
    cJSON_AddBoolToObject(cap, "supports_functions", tools);
    /* models.dev has one flag for tool use; a model that calls tools takes tool_choice too. */
    cJSON_AddBoolToObject(cap, "supports_tool_choice", tools);
    /* Neither fill-in-the-middle nor streaming is described by models.dev: not claimed. */
    cJSON_AddBoolToObject(cap, "supports_fim", false);
    cJSON_AddBoolToObject(cap, "supports_stream", false);

    cJSON_AddStringToObject(cap, "provider", provider ? provider : "");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
    cJSON_AddStringToObject(cap, "display_name", cJSON_IsString(name) ? name->valuestring : id);
    return cap;
}

/* One usable entry of the document, in document order (seq). */
struct md_entry {
    const char *id;
    const char *provider;
    const cJSON *entry;
    size_t seq;
};

/* By id, then document order: the first entry of an id is the one kept. */
static int cmp_entry(const void *a, const void *b)
{
    const struct md_entry *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Appends the usable entries of one provider to *v (grown as needed). */
static void collect_provider(const char *provider, const cJSON *models, struct md_entry **v,
                             size_t *n, size_t *cap)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        if (m->string == NULL || !cJSON_IsObject(m) || !id_ok(m->string))
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 256;
            *v = ez_realloc(*v, *cap * sizeof(**v));
        }
        (*v)[*n] = (struct md_entry){m->string, provider, m, *n};
        (*n)++;
    }
}

/*
 * The entries are sorted rather than looked up in the growing object: cJSON
 * finds members by a linear search, and the real document has thousands.
 */
cJSON *models_dev_parse(const char *text, size_t len, size_t *count, char *err, size_t errlen)
{
    struct md_entry *v = NULL;
    size_t n = 0, cap = 0, kept = 0;
    cJSON *flat = NULL;
    *count = 0;
    if (text == NULL || len == 0) {
        snprintf(err, errlen, "empty document");
        return NULL;
    }
    cJSON *doc = cJSON_ParseWithLength(text, len);
    if (doc == NULL) {
        snprintf(err, errlen, "not valid JSON");
        return NULL;
    }
    if (!cJSON_IsObject(doc)) {
        snprintf(err, errlen, "not a models.dev document (expected an object of providers)");
        goto out;
    }
    const cJSON *prov;
    cJSON_ArrayForEach(prov, doc)
    {
        const cJSON *models = cJSON_GetObjectItemCaseSensitive(prov, "models");
        if (prov->string != NULL && cJSON_IsObject(prov) && cJSON_IsObject(models))
            collect_provider(prov->string, models, &v, &n, &cap);
    }
    if (n == 0) {
        snprintf(err, errlen, "no models found (not a models.dev document?)");
        goto out;
    }
    qsort(v, n, sizeof(*v), cmp_entry);
    flat = cJSON_CreateObject();
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i].id, v[i - 1].id) == 0)
            continue;
        cJSON_AddItemToObject(flat, v[i].id,
                              models_dev_capability(v[i].id, v[i].provider, v[i].entry));
        kept++;
    }
    *count = kept;
out:
    free(v);
    cJSON_Delete(doc);
    return flat;
}

static int64_t int_member(const cJSON *cap, const char *name)
{
    int64_t v = 0;
    if (!json_int_in(cJSON_GetObjectItemCaseSensitive(cap, name), 0, JSON_MAX_SAFE_INT, &v))
        return 0;
    return v;
}

int models_dev_to_shape(const cJSON *cap, struct shape_model *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = "chat";
    if (!cJSON_IsObject(cap))
        return EZ_ERR;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(cap, "kind");
    if (cJSON_IsString(kind) && kind->valuestring[0])
        out->kind = kind->valuestring;
    out->context_window = int_member(cap, "context_window");
    out->max_output_tokens = int_member(cap, "max_output_tokens");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(cap, "cost_per_token");
    if (cJSON_IsNumber(cost) && isfinite(cost->valuedouble) && cost->valuedouble > 0)
        out->cost_per_token = cost->valuedouble;
    out->supports_vision = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "supports_vision"));
    out->supports_functions =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "supports_functions"));
    out->supports_tool_choice =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "supports_tool_choice"));
    out->supports_fim = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "supports_fim"));
    out->supports_stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "supports_stream"));
    return EZ_OK;
}
