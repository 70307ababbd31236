/* Pure builders of the Redis contract shapes (REDIS.md); see snapshot_shapes.h. */
#include "snapshot_shapes.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "selector.h"
#include "util.h"

const char *const ez_snapshot_resources[EZ_SNAPSHOT_NRESOURCES] = {
    "tokens", "masters", "providers", "bindings", "models", "features"};

void shape_fields_free(struct shape_fields *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->value[i]);
    f->n = 0;
}

const char *shape_fields_get(const struct shape_fields *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->name[i], name) == 0)
            return f->value[i];
    return NULL;
}

static void add_str(struct shape_fields *f, const char *name, const char *value)
{
    if (f->n >= SHAPE_MAX_FIELDS)
        abort(); /* a programming error: the shapes have fixed, smaller field counts */
    f->name[f->n] = name;
    f->value[f->n] = ez_strdup(value ? value : "");
    f->n++;
}

static void add_int(struct shape_fields *f, const char *name, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    add_str(f, name, buf);
}

static const char *or_default(const char *s, const char *dflt)
{
    return (s && s[0]) ? s : dflt;
}

/* A JSON list that PostgreSQL rendered for an empty array (or nothing at all). */
static bool list_empty(const char *json)
{
    if (json == NULL)
        return true;
    while (*json == ' ')
        json++;
    if (*json != '[')
        return true;
    json++;
    while (*json == ' ')
        json++;
    return *json == ']';
}

/* ["ns"] as JSON text (malloc'd). */
static char *one_item_list(const char *item)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateString(item ? item : ""));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    if (s == NULL)
        abort();
    return s;
}

const char *shape_key_status(const struct shape_key *k, int64_t now)
{
    if (k->status == NULL || strcmp(k->status, "active") != 0)
        return k->status ? k->status : "disabled";
    if (k->master_status && strcmp(k->master_status, "active") != 0)
        return "suspended";
    if (k->expires_at > 0 && k->expires_at <= now)
        return "expired";
    if (k->quota_limit >= 0 && k->quota_used >= k->quota_limit)
        return "exhausted";
    return "active";
}

void shape_token_fields(const struct shape_key *k, int64_t now, struct shape_fields *out)
{
    out->n = 0;
    add_int(out, "key_id", k->key_id);
    add_int(out, "master_id", k->master_id);
    add_str(out, "name", k->name);
    add_str(out, "group", or_default(k->group, or_default(k->master_group, SHAPE_DEFAULT_GROUP)));
    add_str(out, "status", shape_key_status(k, now));
    add_str(out, "scopes", list_empty(k->scopes) ? "[]" : k->scopes);
    /* A key without its own namespaces has its master's (which default to [default_namespace]). */
    if (!list_empty(k->namespaces)) {
        add_str(out, "namespaces", k->namespaces);
    } else if (!list_empty(k->master_namespaces)) {
        add_str(out, "namespaces", k->master_namespaces);
    } else {
        char *one = one_item_list(or_default(k->master_default_namespace, "default"));
        add_str(out, "namespaces", one);
        free(one);
    }
    add_str(out, "model_limits_enabled", k->model_limits_enabled ? "1" : "0");
    add_str(out, "model_limits", list_empty(k->model_limits) ? "[]" : k->model_limits);
    add_str(out, "allow_ips", list_empty(k->allow_ips) ? "[]" : k->allow_ips);
    add_int(out, "expires_at", k->expires_at > 0 ? k->expires_at : 0);
    add_int(out, "quota_limit", k->quota_limit < 0 ? -1 : k->quota_limit);
    add_int(out, "quota_used", k->quota_used);
    add_int(out, "quota_reset_at", k->quota_reset_at > 0 ? k->quota_reset_at : 0);
}

void shape_master_fields(const struct shape_master *m, struct shape_fields *out)
{
    out->n = 0;
    add_str(out, "name", m->name);
    add_str(out, "group", or_default(m->group, SHAPE_DEFAULT_GROUP));
    add_str(out, "status", m->status);
    add_int(out, "epoch", m->epoch);
    add_int(out, "global_qps", m->global_qps);
    if (!list_empty(m->namespaces)) {
        add_str(out, "namespaces", m->namespaces);
    } else {
        char *one = one_item_list(or_default(m->default_namespace, "default"));
        add_str(out, "namespaces", one);
        free(one);
    }
    add_str(out, "default_namespace", or_default(m->default_namespace, "default"));
}

/* Parses a JSON list of strings; anything else gives an empty array. Never NULL. */
static cJSON *string_list(const char *json)
{
    cJSON *a = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return cJSON_CreateArray();
    }
    return a;
}

static char *render(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s == NULL)
        abort(); /* cJSON only fails here on out of memory */
    return s;
}

char *shape_provider_json(const struct shape_provider *p)
{
    char name[160];
    const char *type = p->type ? p->type : "";
    const char *loc = p->google_location ? p->google_location : "";
    if (loc[0] == '\0' && (strcmp(type, "vertex") == 0 || strcmp(type, "vertex-express") == 0))
        loc = "global";
    const char *status = p->status ? p->status : "disabled";
    if (p->group_status && strcmp(p->group_status, "active") != 0)
        status = "disabled";
    snprintf(name, sizeof(name), "%s#%lld", p->group_name ? p->group_name : "", (long long)p->id);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)p->id);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "base_url", p->base_url ? p->base_url : "");
    cJSON_AddStringToObject(o, "api_key", p->api_key ? p->api_key : "");
    cJSON_AddStringToObject(o, "google_project", p->google_project ? p->google_project : "");
    cJSON_AddStringToObject(o, "google_location", loc);
    cJSON_AddNumberToObject(o, "group_id", (double)p->group_id);
    cJSON_AddStringToObject(o, "group", or_default(p->route_group, SHAPE_DEFAULT_GROUP));
    cJSON_AddItemToObject(o, "models", string_list(p->models));
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddBoolToObject(o, "auto_ban", p->auto_ban);
    cJSON_AddNumberToObject(o, "weight", (double)p->weight);
    cJSON_AddNumberToObject(o, "ban_until", (double)(p->ban_until > 0 ? p->ban_until : 0));
    return render(o);
}

char *shape_binding_json(const char *ns, const char *public_model, int64_t updated_at,
                         const struct shape_candidate *c, size_t n)
{
    bool any_ok = false;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "namespace", ns);
    cJSON_AddStringToObject(o, "public_model", public_model);
    cJSON *status = cJSON_AddStringToObject(o, "status", "active");
    cJSON_AddNumberToObject(o, "updated_at", (double)updated_at);
    cJSON *cands = cJSON_AddArrayToObject(o, "candidates");

    for (size_t i = 0; i < n; i++) {
        const char *value = or_default(c[i].selector_value, public_model);
        const char *type = or_default(c[i].selector_type, "exact");
        cJSON *up = cJSON_CreateObject();
        const char *err = selector_resolve_binding(type, value, c[i].models, c[i].nmodels,
                                                   c[i].key_ids, c[i].nkeys, up);
        bool ok = err[0] == '\0';
        if (!ok) {
            /* The selector leaves it empty on error; make sure of it. */
            cJSON_Delete(up);
            up = cJSON_CreateObject();
        }
        any_ok = any_ok || ok;

        cJSON *cand = cJSON_CreateObject();
        cJSON_AddNumberToObject(cand, "group_id", (double)c[i].group_id);
        cJSON_AddStringToObject(cand, "route_group",
                                or_default(c[i].route_group, SHAPE_DEFAULT_GROUP));
        cJSON_AddNumberToObject(cand, "weight", (double)c[i].weight);
        cJSON_AddStringToObject(cand, "selector_type", type);
        cJSON_AddStringToObject(cand, "selector_value", value);
        cJSON_AddStringToObject(cand, "status", ok ? "active" : "error");
        if (!ok)
            cJSON_AddStringToObject(cand, "error", err);
        cJSON_AddItemToObject(cand, "upstreams", up);
        cJSON_AddItemToArray(cands, cand);
    }
    if (!any_ok)
        cJSON_SetValuestring(status, "error");
    return render(o);
}

char *shape_model_json(const char *name, const struct shape_model *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "kind", m ? or_default(m->kind, "chat") : "chat");
    if (m) {
        if (m->context_window > 0)
            cJSON_AddNumberToObject(o, "context_window", (double)m->context_window);
        if (m->cost_per_token > 0)
            cJSON_AddNumberToObject(o, "cost_per_token", m->cost_per_token);
        if (m->supports_vision)
            cJSON_AddBoolToObject(o, "supports_vision", true);
        if (m->supports_functions)
            cJSON_AddBoolToObject(o, "supports_functions", true);
        if (m->supports_tool_choice)
            cJSON_AddBoolToObject(o, "supports_tool_choice", true);
        if (m->supports_fim)
            cJSON_AddBoolToObject(o, "supports_fim", true);
        if (m->supports_stream)
            cJSON_AddBoolToObject(o, "supports_stream", true);
        if (m->max_output_tokens > 0)
            cJSON_AddNumberToObject(o, "max_output_tokens", (double)m->max_output_tokens);
    }
    return render(o);
}

/* qsort_r over indices into a names array (byte order, as the checksum defines). */
static int by_name(const void *a, const void *b, void *arg)
{
    const char *const *names = arg;
    return strcmp(names[*(const size_t *)a], names[*(const size_t *)b]);
}

void shape_models_checksum(const char *const *names, const char *const *values, size_t n,
                           char out[65])
{
    size_t *order = ez_malloc((n ? n : 1) * sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), by_name, (void *)names);

    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        buf_puts(&b, names[order[i]]);
        buf_append(&b, "\n", 1);
        buf_puts(&b, values[order[i]]);
        buf_append(&b, "\n", 1);
    }
    ez_sha256_hex(b.data ? b.data : "", b.len, out);
    buf_free(&b);
    free(order);
}

void shape_models_meta_fields(const char *version, int64_t updated_at, const char *source,
                              const char *checksum, const char *upstream_url,
                              const char *upstream_ref, struct shape_fields *out)
{
    out->n = 0;
    add_str(out, "version", version);
    add_int(out, "updated_at", updated_at);
    add_str(out, "source", source);
    add_str(out, "checksum", checksum);
    add_str(out, "upstream_url", upstream_url);
    add_str(out, "upstream_ref", upstream_ref);
}

char *shape_refresh_json(const char *resource, const char *version, const char *active_key,
                         int64_t timestamp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "resource", resource);
    cJSON_AddStringToObject(o, "version", version);
    cJSON_AddStringToObject(o, "active_key", active_key);
    cJSON_AddNumberToObject(o, "timestamp", (double)timestamp);
    return render(o);
}
