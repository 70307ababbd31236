/*
 * POST /admin/import[?dry_run=true]: loads a New API migration file
 * (EXPORT-FORMAT.md, version 1.x) in one transaction. docs/import.md has the
 * mapping and every choice; in short:
 *
 * 1. The whole file is checked first. A file that is not of the format (top
 *    level, version, a list that is not a list, an entry that is not an
 *    object, a member of the wrong JSON type) answers 400 naming the path;
 *    nothing is written. A value of the right type that EZ-API cannot take
 *    is reported in "warnings" ("data.keys[3]: ...") and the entry skipped
 *    or the value adjusted, as the warning says.
 * 2. One transaction: namespaces, provider groups, API keys, masters (new
 *    master keys), keys (original tokens hashed), bindings, one operation-log
 *    row (action "import") and one outbox row "all". Existing rows are
 *    matched and left as they are (masters and provider groups by name, keys
 *    by token hash, API keys by group and secret, bindings by their unique
 *    triple), so importing the same file twice creates nothing the second
 *    time. dry_run runs the very same transaction and rolls it back, so its
 *    counts and warnings are exactly what an import would do.
 *
 * Secrets (upstream api_key, original_token, new master keys) never appear
 * in a warning, a log line or the operation log; new master keys are
 * returned once, in the answer.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "crypto.h"
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "resource.h"
#include "wctx.h"

/* Entries per list, and warnings kept in the answer (the rest are counted). */
#define IMPORT_MAX_ITEMS 100000
#define IMPORT_MAX_WARNINGS 1000
#define NAME_MAX_LEN 64
#define MASTER_QPS_MAX 1000000
#define MAX_CHILD_KEYS_MAX 100000

static const char *const group_types[] = {
    "openai",   "compatible", "anthropic",      "claude", "claude-code",
    "codex",    "gemini-cli", "antigravity",    "gemini", "google",
    "aistudio", "vertex",     "vertex-express", NULL,
};

/* Counts per resource. */
struct counts {
    long namespaces, provider_groups, api_keys, masters, keys, bindings;
};

/* One import in progress: the request, the plan (JSON handed to PostgreSQL), the tallies. */
struct imp {
    struct req *r;
    struct rctx x; /* the transaction (x.c) once open */
    bool dry_run;
    cJSON *warnings; /* strings "<item>: <message>" */
    long warnings_dropped;

    cJSON *namespaces;  /* names to create */
    cJSON *groups;      /* {name, type, base_url, models, route_group} */
    cJSON *api_keys;    /* {group_name, api_key, weight, status, auto_ban} */
    cJSON *masters;     /* {name, route_group, namespaces, default_namespace, ...} */
    cJSON *master_keys; /* name -> new plaintext master key (wiped at the end) */
    cJSON *keys;        /* {item, master_name, token_hash, ...} */
    cJSON *bindings;    /* {i, item, namespace, route_group, model, status} */
    cJSON *new_masters; /* answer: [{id, name, master_key}] */

    struct counts created, existing, skipped;
    long masters_updated;
};

/* ---- reporting ------------------------------------------------------------- */

static void warn(struct imp *m, const char *item, const char *fmt, ...) EZ_PRINTF(3, 4);

/* Adds "item: message" to the warnings (at most IMPORT_MAX_WARNINGS, then only counted). */
static void warn(struct imp *m, const char *item, const char *fmt, ...)
{
    if (cJSON_GetArraySize(m->warnings) >= IMPORT_MAX_WARNINGS) {
        m->warnings_dropped++;
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char line[700];
    snprintf(line, sizeof(line), "%s: %s", item, msg);
    cJSON_AddItemToArray(m->warnings, cJSON_CreateString(line));
}

/* Answers 400 naming path: the file is not of the format. Returns -1. */
static int bad(struct imp *m, const char *path, const char *what)
{
    return reply_error(m->r, 400, "invalid_argument", path, "%s %s", path, what);
}

/* ---- typed access: a wrong JSON type is a 400 naming the member ------------- */

/* "<base>.<key>" into out. */
static const char *member_path(char *out, size_t len, const char *base, const char *key)
{
    snprintf(out, len, "%s.%s", base, key);
    return out;
}

/* item[key] as a string; *out NULL when absent or null. */
static int get_str(struct imp *m, const cJSON *item, const char *base, const char *key,
                   const char **out)
{
    char path[160];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    if (!cJSON_IsString(v))
        return bad(m, member_path(path, sizeof(path), base, key), "must be a string");
    *out = v->valuestring;
    return EZ_OK;
}

/* item[key] as a boolean; dflt when absent or null. */
static int get_bool(struct imp *m, const cJSON *item, const char *base, const char *key, bool dflt,
                    bool *out)
{
    char path[160];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);
    *out = dflt;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    if (!cJSON_IsBool(v))
        return bad(m, member_path(path, sizeof(path), base, key), "must be true or false");
    *out = cJSON_IsTrue(v);
    return EZ_OK;
}

/* item[key] as a whole number; dflt (and *present false) when absent or null. */
static int get_int(struct imp *m, const cJSON *item, const char *base, const char *key,
                   int64_t dflt, int64_t *out, bool *present)
{
    char path[160];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);
    *out = dflt;
    if (present)
        *present = false;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    if (!json_int_in(v, -JSON_MAX_SAFE_INT, JSON_MAX_SAFE_INT, out))
        return bad(m, member_path(path, sizeof(path), base, key), "must be a whole number");
    if (present)
        *present = true;
    return EZ_OK;
}

/* item[key] as a list of strings; *out NULL when absent or null. */
static int get_list(struct imp *m, const cJSON *item, const char *base, const char *key,
                    const cJSON **out)
{
    char path[160];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    bool ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) <= IMPORT_MAX_ITEMS;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) ok = ok && cJSON_IsString(e);
    if (!ok)
        return bad(m, member_path(path, sizeof(path), base, key), "must be a list of strings");
    *out = v;
    return EZ_OK;
}

/* ---- value rules ------------------------------------------------------------ */

/*
 * s made a name ([A-Za-z0-9_.-], at most 64): any other byte becomes '-',
 * runs of '-' collapse, '-' at either end goes. out is "" when nothing is left.
 */
static void to_name(const char *s, char out[NAME_MAX_LEN + 1])
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && o < NAME_MAX_LEN;
         p++) {
        bool ok = isalnum(*p) || *p == '_' || *p == '.' || *p == '-';
        char c = ok && *p < 0x80 ? (char)*p : '-';
        if (c == '-' && (o == 0 || out[o - 1] == '-'))
            continue;
        out[o++] = c;
    }
    while (o > 0 && out[o - 1] == '-')
        o--;
    out[o] = '\0';
}

/* A route group from the file: "" -> "default"; otherwise made a name (warning when changed). */
static void route_group(struct imp *m, const char *item, const char *v, char out[NAME_MAX_LEN + 1])
{
    if (v == NULL || *v == '\0') {
        snprintf(out, NAME_MAX_LEN + 1, "default");
        return;
    }
    to_name(v, out);
    if (out[0] == '\0')
        snprintf(out, NAME_MAX_LEN + 1, "default");
    if (strcmp(out, v) != 0)
        warn(m, item, "route group \"%.64s\" is not a valid name; \"%s\" is used", v, out);
}

/* A secret-like value: 1..max bytes, no whitespace or control characters. */
static bool secret_ok(const char *v, size_t max)
{
    size_t n = strlen(v);
    if (n == 0 || n > max)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* An upstream model id as provider groups keep them (provider_groups.c). */
static bool model_id_ok(const char *v)
{
    return secret_ok(v, 255);
}

/* A key scope: printable ASCII without spaces, at most 64 (keys.c). */
static bool scope_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* Adds s to the JSON string list unless it is there. */
static void add_unique(cJSON *list, const char *s)
{
    if (!json_list_has(list, s))
        cJSON_AddItemToArray(list, cJSON_CreateString(s));
}

/* The object of arr whose member key equals v, or NULL (linear: groups are few). */
static cJSON *find_by(cJSON *arr, const char *key, const char *v)
{
    cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, key);
        if (cJSON_IsString(s) && strcmp(s->valuestring, v) == 0)
            return e;
    }
    return NULL;
}

/*
 * The elements of list that pass ok(), as a new JSON list without repeats;
 * each refused one is reported as "<what> "<value>" is not valid; dropped"
 * (only for lists that hold no secret).
 */
static cJSON *filter_list(struct imp *m, const char *item, const cJSON *list,
                          bool (*ok)(const char *), const char *what)
{
    cJSON *out = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (ok(e->valuestring))
            add_unique(out, e->valuestring);
        else
            warn(m, item, "%s \"%.80s\" is not valid; dropped", what, e->valuestring);
    }
    return out;
}

static bool ns_ok(const char *v)
{
    return check_ns_name(v) == NULL;
}

static bool ip_ok(const char *v)
{
    return check_ip_or_cidr(v) == NULL;
}

static bool model_ref_ok(const char *v)
{
    return check_model_ref(v) == NULL;
}

/* ---- plan: providers -> provider groups + API keys --------------------------- */

/* The provider's type among ours, "compatible" for an unknown one with a base_url, or NULL. */
static const char *provider_type(struct imp *m, const char *item, const char *type,
                                 const char *base_url)
{
    char t[64] = "";
    size_t o = 0;
    for (const char *p = type ? type : ""; *p && o + 1 < sizeof(t); p++)
        if (!isspace((unsigned char)*p))
            t[o++] = (char)tolower((unsigned char)*p);
    t[o] = '\0';
    for (int i = 0; group_types[i]; i++)
        if (strcmp(group_types[i], t) == 0)
            return group_types[i];
    if (base_url && *base_url) {
        warn(m, item, "provider type \"%.40s\" is not supported; imported as \"compatible\"", t);
        return "compatible";
    }
    warn(m, item, "provider type \"%.40s\" is not supported and there is no base_url; skipped", t);
    return NULL;
}

/*
 * The provider group an entry goes into: its own (named after it), or, for a
 * key split from a multi-key channel, the one named after original_name that
 * the channel's keys share. A name another entry already took gets
 * "-<original_id>" (or "-<index>").
 */
static cJSON *provider_group(struct imp *m, const char *item, int idx, const cJSON *p,
                             const char *name, const char *type, const char *base_url,
                             const char *rg, bool multi, const char *orig_name)
{
    char gname[NAME_MAX_LEN + 1], alt[NAME_MAX_LEN + 1];
    int64_t oid = idx;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(p, "original_id");
    if (cJSON_IsNumber(o))
        oid = (int64_t)o->valuedouble;
    to_name(multi ? orig_name : name, gname);
    if (gname[0] == '\0')
        snprintf(gname, sizeof(gname), "provider-%lld", (long long)oid);
    else if (strcmp(gname, multi ? orig_name : name) != 0)
        warn(m, item, "\"%.64s\" is not a valid provider group name; \"%s\" is used",
             multi ? orig_name : name, gname);

    cJSON *g = find_by(m->groups, "name", gname);
    if (g && multi && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "multi"))) {
        /* Another key of the same channel: the first one's settings stand. */
        const char *gt = cJSON_GetObjectItemCaseSensitive(g, "type")->valuestring;
        const char *gb = cJSON_GetObjectItemCaseSensitive(g, "base_url")->valuestring;
        const char *gr = cJSON_GetObjectItemCaseSensitive(g, "route_group")->valuestring;
        if (strcmp(gt, type) != 0 || strcmp(gb, base_url) != 0 || strcmp(gr, rg) != 0)
            warn(m, item,
                 "differs from the first key of multi-key channel \"%s\" (type, "
                 "base_url or group); the first one's settings are used",
                 gname);
        return g;
    }
    if (g) {
        snprintf(alt, sizeof(alt), "%.*s-%lld", 40, gname, (long long)oid);
        warn(m, item, "provider group name \"%s\" is taken by another entry; \"%s\" is used", gname,
             alt);
        snprintf(gname, sizeof(gname), "%s", alt);
        if (find_by(m->groups, "name", gname)) {
            warn(m, item, "provider group name \"%s\" is taken too; skipped", gname);
            return NULL;
        }
    }
    g = cJSON_CreateObject();
    cJSON_AddNumberToObject(g, "i", cJSON_GetArraySize(m->groups));
    cJSON_AddStringToObject(g, "name", gname);
    cJSON_AddStringToObject(g, "type", type);
    cJSON_AddStringToObject(g, "base_url", base_url);
    cJSON_AddArrayToObject(g, "models");
    cJSON_AddStringToObject(g, "route_group", rg);
    cJSON_AddBoolToObject(g, "multi", multi);
    cJSON_AddItemToArray(m->groups, g);
    return g;
}

/* The members of a provider entry, type-checked (400 on a wrong type). */
struct provider_in {
    const char *name, *type, *base_url, *api_key, *primary_group, *status, *original_name;
    const cJSON *models, *all_groups;
    int64_t weight;
    bool weight_given, auto_ban, multi;
};

static int read_provider(struct imp *m, const cJSON *p, const char *item, struct provider_in *in)
{
    int64_t ignored;
    if (get_str(m, p, item, "name", &in->name) || get_str(m, p, item, "type", &in->type) ||
        get_str(m, p, item, "base_url", &in->base_url) ||
        get_str(m, p, item, "api_key", &in->api_key) ||
        get_str(m, p, item, "primary_group", &in->primary_group) ||
        get_str(m, p, item, "status", &in->status) ||
        get_str(m, p, item, "original_name", &in->original_name) ||
        get_list(m, p, item, "models", &in->models) ||
        get_list(m, p, item, "all_groups", &in->all_groups) ||
        get_int(m, p, item, "weight", 1, &in->weight, &in->weight_given) ||
        get_int(m, p, item, "priority", 0, &ignored, NULL) ||
        get_int(m, p, item, "original_id", 0, &ignored, NULL) ||
        get_int(m, p, item, "multi_key_index", 0, &ignored, NULL) ||
        get_bool(m, p, item, "auto_ban", true, &in->auto_ban) ||
        get_bool(m, p, item, "is_multi_key", false, &in->multi))
        return EZ_ERR;
    return EZ_OK;
}

/* One provider entry: its group (made or shared) gets its models, the API key is planned. */
static int plan_provider(struct imp *m, const cJSON *p, int idx)
{
    char item[64], rg[NAME_MAX_LEN + 1];
    struct provider_in in = {0};
    snprintf(item, sizeof(item), "data.providers[%d]", idx);
    if (read_provider(m, p, item, &in) != EZ_OK)
        return EZ_ERR;

    if (in.api_key == NULL || !secret_ok(in.api_key, 4096)) {
        warn(m, item, "api_key is missing, empty, too long or holds whitespace; skipped");
        m->skipped.api_keys++;
        return EZ_OK;
    }
    const char *base_url = in.base_url ? in.base_url : "";
    if (check_http_url(base_url) != NULL) {
        warn(m, item, "base_url is not an http(s) URL; ignored");
        base_url = "";
    }
    const char *type = provider_type(m, item, in.type, base_url);
    if (type == NULL || (strcmp(type, "compatible") == 0 && *base_url == '\0')) {
        if (type != NULL)
            warn(m, item, "a compatible provider needs a base_url; skipped");
        m->skipped.api_keys++;
        return EZ_OK;
    }
    route_group(m, item, in.primary_group, rg);
    const cJSON *e;
    cJSON_ArrayForEach(e, in.all_groups)
    {
        char other[NAME_MAX_LEN + 1];
        to_name(e->valuestring, other);
        if (*e->valuestring && strcmp(other, rg) != 0) {
            warn(m, item,
                 "serves only its primary_group \"%s\" (a provider group has one "
                 "route group); \"%.64s\" of all_groups is not served",
                 rg, e->valuestring);
        }
    }
    bool multi = in.multi && in.original_name && in.original_name[0];
    cJSON *g = provider_group(m, item, idx, p, in.name ? in.name : "", type, base_url, rg, multi,
                              in.original_name);
    if (g == NULL) {
        m->skipped.api_keys++;
        return EZ_OK;
    }
    cJSON *models = cJSON_GetObjectItemCaseSensitive(g, "models");
    cJSON_ArrayForEach(e, in.models)
    {
        if (model_id_ok(e->valuestring))
            add_unique(models, e->valuestring);
        else
            warn(m, item, "model \"%.80s\" is not a valid model id; dropped", e->valuestring);
    }

    int64_t w = in.weight < 1 ? 1 : in.weight > 1000 ? 1000 : in.weight;
    if (in.weight_given && w != in.weight && in.weight != 0)
        warn(m, item, "weight %lld is out of range 1..1000; %lld is used", (long long)in.weight,
             (long long)w);
    const char *status = "active";
    if (in.status && strcmp(in.status, "active") != 0) {
        if (strcmp(in.status, "disabled") != 0)
            warn(m, item, "status \"%.20s\" is unknown; imported as disabled", in.status);
        status = "disabled";
    }
    const char *gname = cJSON_GetObjectItemCaseSensitive(g, "name")->valuestring;
    cJSON *k = cJSON_CreateObject();
    cJSON_AddNumberToObject(k, "i", idx);
    cJSON_AddStringToObject(k, "item", item);
    cJSON_AddStringToObject(k, "group_name", gname);
    cJSON_AddStringToObject(k, "api_key", in.api_key);
    cJSON_AddNumberToObject(k, "weight", (double)w);
    cJSON_AddStringToObject(k, "status", status);
    cJSON_AddBoolToObject(k, "auto_ban", in.auto_ban);
    cJSON_AddItemToArray(m->api_keys, k);
    return EZ_OK;
}

/* ---- plan: masters ------------------------------------------------------------ */

/* The namespaces of a master entry: valid ones kept, the default settled (DATA.md). */
static cJSON *master_namespaces(struct imp *m, const char *item, const cJSON *list,
                                const char *def_in, char def[NAME_MAX_LEN + 1])
{
    cJSON *ns = list ? filter_list(m, item, list, ns_ok, "namespace") : cJSON_CreateArray();
    if (def_in && *def_in && ns_ok(def_in)) {
        snprintf(def, NAME_MAX_LEN + 1, "%s", def_in);
    } else {
        if (def_in && *def_in)
            warn(m, item, "default_namespace \"%.64s\" is not a valid namespace name; dropped",
                 def_in);
        snprintf(def, NAME_MAX_LEN + 1, "%s",
                 cJSON_GetArraySize(ns) > 0 ? cJSON_GetArrayItem(ns, 0)->valuestring : "default");
    }
    if (cJSON_GetArraySize(ns) > 0 && !json_list_has(ns, def)) {
        warn(m, item, "default_namespace \"%s\" is not among its namespaces; added to them", def);
        cJSON_AddItemToArray(ns, cJSON_CreateString(def));
    }
    return ns;
}

/* A new master key for name: the plaintext kept for the answer, hash and prefix planned. */
static int new_master_key(struct imp *m, const char *name, cJSON *row)
{
    char *key = ez_new_secret("mk-");
    if (key == NULL)
        return reply_error(m->r, 503, "unavailable", NULL, "no randomness available for a new key");
    char hash[65], prefix[32];
    ez_sha256_hex(key, strlen(key), hash);
    snprintf(prefix, sizeof(prefix), "%.7s\xe2\x80\xa6", key);
    cJSON_AddStringToObject(row, "key_hash", hash);
    cJSON_AddStringToObject(row, "key_prefix", prefix);
    cJSON_AddStringToObject(m->master_keys, name, key);
    ez_secret_free(key);
    return EZ_OK;
}

static int plan_master(struct imp *m, const cJSON *p, int idx)
{
    char item[64], name[NAME_MAX_LEN + 1], rg[NAME_MAX_LEN + 1], def[NAME_MAX_LEN + 1];
    const char *name_in, *group, *def_in, *status;
    const cJSON *nslist;
    int64_t max_keys, qps;
    bool max_given;
    snprintf(item, sizeof(item), "data.masters[%d]", idx);
    if (get_str(m, p, item, "name", &name_in) || get_str(m, p, item, "group", &group) ||
        get_str(m, p, item, "default_namespace", &def_in) ||
        get_str(m, p, item, "status", &status) || get_list(m, p, item, "namespaces", &nslist) ||
        get_int(m, p, item, "max_child_keys", 10, &max_keys, &max_given) ||
        get_int(m, p, item, "global_qps", 0, &qps, NULL))
        return EZ_ERR;

    to_name(name_in, name);
    if (name[0] == '\0') {
        warn(m, item, "has no usable name; skipped");
        m->skipped.masters++;
        return EZ_OK;
    }
    if (strcmp(name, name_in) != 0)
        warn(m, item,
             "name \"%.64s\" is not a valid name; \"%s\" is used (keys still refer to "
             "it by the original)",
             name_in, name);
    if (find_by(m->masters, "name", name)) {
        warn(m, item, "master \"%s\" appears twice; this entry is skipped", name);
        m->skipped.masters++;
        return EZ_OK;
    }
    route_group(m, item, group, rg);
    cJSON *ns = master_namespaces(m, item, nslist, def_in, def);
    const cJSON *e;
    cJSON_ArrayForEach(e, ns) add_unique(m->namespaces, e->valuestring);
    add_unique(m->namespaces, def);
    if (max_keys < 0 || max_keys > MAX_CHILD_KEYS_MAX) {
        int64_t c = max_keys < 0 ? 0 : MAX_CHILD_KEYS_MAX;
        warn(m, item, "max_child_keys %lld is out of range; %lld is used", (long long)max_keys,
             (long long)c);
        max_keys = c;
    }
    if (qps < 0 || qps > MASTER_QPS_MAX) {
        int64_t c = qps < 0 ? 0 : MASTER_QPS_MAX;
        warn(m, item, "global_qps %lld is out of range; %lld is used", (long long)qps,
             (long long)c);
        qps = c;
    }
    const char *st = "active";
    if (status && strcmp(status, "active") != 0) {
        if (strcmp(status, "suspended") != 0)
            warn(m, item, "status \"%.20s\" is unknown; imported as suspended", status);
        st = "suspended";
    }
    cJSON *row = cJSON_CreateObject();
    cJSON_AddNumberToObject(row, "i", idx);
    cJSON_AddStringToObject(row, "name", name);
    cJSON_AddStringToObject(row, "original_name", name_in);
    cJSON_AddStringToObject(row, "route_group", rg);
    cJSON_AddItemToObject(row, "namespaces", ns);
    cJSON_AddStringToObject(row, "default_namespace", def);
    cJSON_AddNumberToObject(row, "max_child_keys", (double)max_keys);
    cJSON_AddNumberToObject(row, "global_qps", (double)qps);
    cJSON_AddStringToObject(row, "status", st);
    cJSON_AddItemToArray(m->masters, row);
    return new_master_key(m, name, row);
}

/* ---- plan: keys ---------------------------------------------------------------- */

/* The members of a key entry, type-checked (400 on a wrong type). */
struct key_in {
    const char *master_ref, *token, *group, *status, *expires_at;
    const cJSON *scopes, *namespaces, *model_limits, *allow_ips;
    bool mle, unlimited, plaintext;
    int64_t quota_limit, quota_used;
};

static int read_key(struct imp *m, const cJSON *p, const char *item, struct key_in *in)
{
    if (get_str(m, p, item, "master_ref", &in->master_ref) ||
        get_str(m, p, item, "original_token", &in->token) ||
        get_str(m, p, item, "group", &in->group) || get_str(m, p, item, "status", &in->status) ||
        get_str(m, p, item, "expires_at", &in->expires_at) ||
        get_list(m, p, item, "scopes", &in->scopes) ||
        get_list(m, p, item, "namespaces", &in->namespaces) ||
        get_list(m, p, item, "model_limits", &in->model_limits) ||
        get_list(m, p, item, "allow_ips", &in->allow_ips) ||
        get_bool(m, p, item, "model_limits_enabled", false, &in->mle) ||
        get_bool(m, p, item, "unlimited_quota", false, &in->unlimited) ||
        get_bool(m, p, item, "_token_plaintext_available", true, &in->plaintext) ||
        get_int(m, p, item, "quota_limit", -1, &in->quota_limit, NULL) ||
        get_int(m, p, item, "quota_used", 0, &in->quota_used, NULL))
        return EZ_ERR;
    return EZ_OK;
}

/* The key's display name: "newapi-<_original_id>" when the file has one, else "". */
static void key_name(const cJSON *p, char *out, size_t len)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(p, "_original_id");
    out[0] = '\0';
    if (cJSON_IsNumber(o))
        snprintf(out, len, "newapi-%lld", (long long)o->valuedouble);
    else if (cJSON_IsString(o) && o->valuestring[0])
        snprintf(out, len, "newapi-%.50s", o->valuestring);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '-';
}

/* Status and quota of a key entry, settled (warnings for what is changed). */
static void key_quota_status(struct imp *m, const char *item, struct key_in *in, cJSON *row)
{
    int64_t limit = in->unlimited ? -1 : in->quota_limit;
    if (limit < -1) {
        warn(m, item, "quota_limit %lld is out of range; unlimited (-1) is used", (long long)limit);
        limit = -1;
    }
    int64_t used = in->quota_used;
    if (used < 0) {
        warn(m, item, "quota_used %lld is negative; 0 is used", (long long)used);
        used = 0;
    }
    static const char *const ok[] = {"active", "disabled", "expired", "exhausted", NULL};
    const char *st = NULL;
    for (int i = 0; ok[i] && in->status; i++)
        if (strcmp(ok[i], in->status) == 0)
            st = ok[i];
    if (st == NULL) {
        if (in->status)
            warn(m, item, "status \"%.20s\" is unknown; imported as disabled", in->status);
        st = in->status ? "disabled" : "active";
    }
    cJSON_AddNumberToObject(row, "quota_limit", (double)limit);
    cJSON_AddNumberToObject(row, "quota_used", (double)used);
    cJSON_AddStringToObject(row, "status", st);
}

static int plan_key(struct imp *m, const cJSON *p, int idx)
{
    char item[64], name[80], rg[NAME_MAX_LEN + 1] = "";
    struct key_in in = {0};
    snprintf(item, sizeof(item), "data.keys[%d]", idx);
    if (read_key(m, p, item, &in) != EZ_OK)
        return EZ_ERR;
    if (in.master_ref == NULL || in.master_ref[0] == '\0') {
        warn(m, item, "has no master_ref; skipped");
        m->skipped.keys++;
        return EZ_OK;
    }
    if (!in.plaintext || in.token == NULL || !secret_ok(in.token, 512)) {
        warn(m, item,
             "has no usable original_token (missing, empty, over 512 characters or "
             "with whitespace): it could not be kept usable; skipped");
        m->skipped.keys++;
        return EZ_OK;
    }
    int64_t exp = 0;
    if (in.expires_at && *in.expires_at && ez_parse_time(in.expires_at, &exp) != EZ_OK) {
        warn(m, item, "expires_at is not an RFC 3339 time; skipped");
        m->skipped.keys++;
        return EZ_OK;
    }
    if (in.group && *in.group)
        route_group(m, item, in.group, rg);
    char hash[65], prefix[32];
    ez_sha256_hex(in.token, strlen(in.token), hash);
    snprintf(prefix, sizeof(prefix), "%.7s\xe2\x80\xa6", in.token);
    key_name(p, name, sizeof(name));

    cJSON *row = cJSON_CreateObject();
    cJSON_AddNumberToObject(row, "i", idx);
    cJSON_AddStringToObject(row, "item", item);
    cJSON_AddStringToObject(row, "master_ref", in.master_ref);
    cJSON_AddStringToObject(row, "name", name);
    cJSON_AddStringToObject(row, "route_group", rg); /* "" = the master's, settled later */
    cJSON_AddItemToObject(row, "scopes",
                          in.scopes ? filter_list(m, item, in.scopes, scope_ok, "scope")
                                    : cJSON_CreateArray());
    cJSON_AddItemToObject(row, "namespaces",
                          in.namespaces ? filter_list(m, item, in.namespaces, ns_ok, "namespace")
                                        : cJSON_CreateArray());
    cJSON_AddBoolToObject(row, "model_limits_enabled", in.mle);
    cJSON_AddItemToObject(row, "model_limits",
                          in.model_limits
                              ? filter_list(m, item, in.model_limits, model_ref_ok, "model limit")
                              : cJSON_CreateArray());
    cJSON_AddItemToObject(row, "allow_ips",
                          in.allow_ips
                              ? filter_list(m, item, in.allow_ips, ip_ok, "allow_ips entry")
                              : cJSON_CreateArray());
    if (exp > 0) {
        char iso[40];
        ez_format_time(exp, iso, sizeof(iso));
        cJSON_AddStringToObject(row, "expires_at", iso);
    } else {
        cJSON_AddNullToObject(row, "expires_at");
    }
    key_quota_status(m, item, &in, row);
    cJSON_AddStringToObject(row, "token_hash", hash);
    cJSON_AddStringToObject(row, "token_prefix", prefix);
    cJSON_AddItemToArray(m->keys, row);
    return EZ_OK;
}

/* ---- plan: bindings ------------------------------------------------------------ */

static int plan_binding(struct imp *m, const cJSON *p, int idx)
{
    char item[64], rg[NAME_MAX_LEN + 1];
    const char *ns, *group, *model, *status;
    snprintf(item, sizeof(item), "data.bindings[%d]", idx);
    if (get_str(m, p, item, "namespace", &ns) || get_str(m, p, item, "route_group", &group) ||
        get_str(m, p, item, "model", &model) || get_str(m, p, item, "status", &status))
        return EZ_ERR;
    if (ns == NULL || *ns == '\0')
        ns = "default";
    if (!ns_ok(ns)) {
        warn(m, item, "namespace \"%.64s\" is not a valid namespace name; skipped", ns);
        m->skipped.bindings++;
        return EZ_OK;
    }
    if (model == NULL || check_name(model) != NULL) {
        warn(m, item,
             "model \"%.80s\" cannot be a public model name (1-64 of A-Z a-z 0-9 _ . -);"
             " skipped",
             model ? model : "");
        m->skipped.bindings++;
        return EZ_OK;
    }
    route_group(m, item, group, rg);
    const char *st = "active";
    if (status && strcmp(status, "active") != 0) {
        if (strcmp(status, "disabled") != 0)
            warn(m, item, "status \"%.20s\" is unknown; imported as disabled", status);
        st = "disabled";
    }
    add_unique(m->namespaces, ns);
    cJSON *row = cJSON_CreateObject();
    cJSON_AddNumberToObject(row, "i", idx);
    cJSON_AddStringToObject(row, "item", item);
    cJSON_AddStringToObject(row, "namespace", ns);
    cJSON_AddStringToObject(row, "route_group", rg);
    cJSON_AddStringToObject(row, "model", model);
    cJSON_AddStringToObject(row, "status", st);
    cJSON_AddItemToArray(m->bindings, row);
    return EZ_OK;
}

/* ---- the whole file ------------------------------------------------------------- */

/* data[name] as a list of objects (absent or null = empty); 400 otherwise. */
static int data_list(struct imp *m, const cJSON *data, const char *name, const cJSON **out)
{
    char path[64];
    snprintf(path, sizeof(path), "data.%s", name);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, name);
    *out = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return EZ_OK;
    if (!cJSON_IsArray(v))
        return bad(m, path, "must be a list");
    if (cJSON_GetArraySize(v) > IMPORT_MAX_ITEMS)
        return bad(m, path, "has too many entries (at most 100000)");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsObject(e)) {
            snprintf(path, sizeof(path), "data.%s[%d]", name, i);
            return bad(m, path, "must be an object");
        }
        i++;
    }
    *out = v;
    return EZ_OK;
}

/* Runs plan(m, entry, index) for each entry of list. */
static int plan_each(struct imp *m, const cJSON *list,
                     int (*plan)(struct imp *, const cJSON *, int))
{
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (plan(m, e, i++) != EZ_OK)
            return EZ_ERR;
    }
    return EZ_OK;
}

/* One entry of drop_repeats: its key text and its position. */
struct rep_key {
    char *key;
    int idx;
};

static int cmp_rep(const void *a, const void *b)
{
    const struct rep_key *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/*
 * Later entries that repeat an earlier one's key (the members named, joined)
 * are removed from arr with a warning each, counted in *skipped.
 */
static void drop_repeats(struct imp *m, cJSON *arr, const char *const *members, const char *what,
                         long *skipped)
{
    int n = cJSON_GetArraySize(arr);
    if (n < 2)
        return;
    struct rep_key *v = ez_calloc((size_t)n, sizeof(*v));
    bool *drop = ez_calloc((size_t)n, sizeof(bool));
    cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, arr)
    {
        buf_t b;
        buf_init(&b);
        for (int k = 0; members[k]; k++) {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, members[k]);
            buf_puts(&b, cJSON_IsString(s) ? s->valuestring : "");
            buf_append(&b, "\n", 1);
        }
        v[i].key = buf_steal(&b);
        v[i].idx = i;
        i++;
    }
    qsort(v, (size_t)n, sizeof(*v), cmp_rep);
    for (int k = 1; k < n; k++)
        if (strcmp(v[k].key, v[k - 1].key) == 0)
            drop[v[k].idx] = true;
    i = 0;
    for (cJSON *row = arr->child; row != NULL; i++) {
        cJSON *next = row->next;
        if (drop[i]) {
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(row, "item");
            warn(m, cJSON_IsString(it) ? it->valuestring : "data", "repeats an earlier %s; skipped",
                 what);
            cJSON_Delete(cJSON_DetachItemViaPointer(arr, row));
            (*skipped)++;
        }
        row = next;
    }
    for (int k = 0; k < n; k++)
        free(v[k].key);
    free(v);
    free(drop);
}

/* The exporter's own warnings (a list of strings), passed on as "export: ...". */
static int file_warnings(struct imp *m, const cJSON *body)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "warnings");
    bool ok = list == NULL || cJSON_IsNull(list) || cJSON_IsArray(list);
    const cJSON *e;
    cJSON_ArrayForEach(e, list) ok = ok && cJSON_IsString(e);
    if (!ok)
        return bad(m, "warnings", "must be a list of strings");
    cJSON_ArrayForEach(e, list) warn(m, "export", "%.400s", e->valuestring);
    return EZ_OK;
}

/* Checks the version and the shape of the file, then plans every entry. -1 after answering. */
static int plan_file(struct imp *m, const cJSON *body)
{
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(body, "version");
    if (!cJSON_IsString(ver))
        return bad(m, "version", "is required (a string such as \"1.0.0\")");
    if ((strcmp(ver->valuestring, "1") != 0 && strncmp(ver->valuestring, "1.", 2) != 0) ||
        strlen(ver->valuestring) > 32)
        return bad(m, "version", "is not a supported version (1.x)");
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(body, "source");
    const char *type = NULL;
    if (src && !cJSON_IsNull(src) && !cJSON_IsObject(src))
        return bad(m, "source", "must be an object");
    if (get_str(m, src, "source", "type", &type) != EZ_OK)
        return EZ_ERR;
    if (type && strcmp(type, "newapi") != 0 && strcmp(type, "oneapi") != 0)
        warn(m, "source.type", "\"%.40s\" is not newapi or oneapi; read as the same format", type);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(body, "data");
    if (!cJSON_IsObject(data))
        return bad(m, "data", "is required (an object)");
    const cJSON *providers, *masters, *keys, *bindings;
    if (file_warnings(m, body) != EZ_OK || data_list(m, data, "providers", &providers) ||
        data_list(m, data, "masters", &masters) || data_list(m, data, "keys", &keys) ||
        data_list(m, data, "bindings", &bindings))
        return EZ_ERR;
    if (plan_each(m, providers, plan_provider) || plan_each(m, masters, plan_master) ||
        plan_each(m, keys, plan_key) || plan_each(m, bindings, plan_binding))
        return EZ_ERR;
    static const char *const ak_members[] = {"group_name", "api_key", NULL};
    static const char *const key_members[] = {"token_hash", NULL};
    static const char *const b_members[] = {"namespace", "route_group", "model", NULL};
    drop_repeats(m, m->api_keys, ak_members, "API key of the same provider group",
                 &m->skipped.api_keys);
    drop_repeats(m, m->keys, key_members, "key with the same token", &m->skipped.keys);
    drop_repeats(m, m->bindings, b_members, "binding", &m->skipped.bindings);
    return EZ_OK;
}

/* ---- the transaction ---------------------------------------------------------------- */

/* Runs sql with one jsonb parameter (arr rendered) and optional second text parameter. */
static PGresult *exec_json(struct imp *m, const char *sql, const cJSON *arr, const char *p2)
{
    char *j = json_render(arr);
    const char *params[2] = {j, p2};
    PGresult *res = db_exec(&m->x, sql, p2 ? 2 : 1, params);
    free(j);
    return res;
}

/* Runs sql with the plan array arr; *n = rows returned. -1 after answering. */
static int exec_count(struct imp *m, const char *sql, const cJSON *arr, const char *p2, long *n)
{
    PGresult *res = exec_json(m, sql, arr, p2);
    if (res == NULL)
        return EZ_ERR;
    *n = PQntuples(res);
    PQclear(res);
    return EZ_OK;
}

static int db_namespaces(struct imp *m)
{
    long n;
    if (exec_count(m,
                   "INSERT INTO namespaces (name, description) "
                   "SELECT v, 'Created by import' FROM jsonb_array_elements_text($1::jsonb) v "
                   "ON CONFLICT (name) DO NOTHING RETURNING id",
                   m->namespaces, NULL, &n) != EZ_OK)
        return EZ_ERR;
    m->created.namespaces = n;
    return EZ_OK;
}

static int db_groups(struct imp *m)
{
    long n;
    if (exec_count(m,
                   "INSERT INTO provider_groups (name, type, base_url, models, \"group\") "
                   "SELECT x.name, x.type, x.base_url, "
                   "ARRAY(SELECT jsonb_array_elements_text(x.models)), x.route_group "
                   "FROM jsonb_to_recordset($1::jsonb) AS x(i integer, name text, type text, "
                   "base_url text, models jsonb, route_group text) ORDER BY x.i "
                   "ON CONFLICT (name) DO NOTHING RETURNING id",
                   m->groups, NULL, &n) != EZ_OK)
        return EZ_ERR;
    m->created.provider_groups = n;
    m->existing.provider_groups = cJSON_GetArraySize(m->groups) - n;
    return EZ_OK;
}

/* API keys go into their group (made now or matched by name) unless it has that secret. */
static int db_api_keys(struct imp *m)
{
    long n;
    if (exec_count(m,
                   "INSERT INTO api_keys (group_id, api_key, weight, status, auto_ban) "
                   "SELECT g.id, x.api_key, x.weight, x.status, x.auto_ban "
                   "FROM jsonb_to_recordset($1::jsonb) AS x(i integer, group_name text, "
                   "api_key text, weight integer, status text, auto_ban boolean) "
                   "JOIN provider_groups g ON g.name = x.group_name "
                   "WHERE NOT EXISTS (SELECT 1 FROM api_keys a "
                   "                  WHERE a.group_id = g.id AND a.api_key = x.api_key) "
                   "ORDER BY x.i RETURNING id",
                   m->api_keys, NULL, &n) != EZ_OK)
        return EZ_ERR;
    m->created.api_keys = n;
    m->existing.api_keys = cJSON_GetArraySize(m->api_keys) - n;
    return EZ_OK;
}

/* New masters get the keys planned for them; the answer lists them (keys unless dry_run). */
static int db_masters(struct imp *m)
{
    PGresult *res =
        exec_json(m,
                  "INSERT INTO masters (name, \"group\", namespaces, default_namespace, "
                  "max_child_keys, global_qps, status, key_hash, key_prefix) "
                  "SELECT x.name, x.route_group, "
                  "ARRAY(SELECT jsonb_array_elements_text(x.namespaces)), "
                  "x.default_namespace, x.max_child_keys, x.global_qps, x.status, "
                  "x.key_hash, x.key_prefix "
                  "FROM jsonb_to_recordset($1::jsonb) AS x(i integer, name text, "
                  "route_group text, namespaces jsonb, default_namespace text, "
                  "max_child_keys integer, global_qps integer, status text, "
                  "key_hash text, key_prefix text) ORDER BY x.i "
                  "ON CONFLICT (name) DO NOTHING RETURNING id, name",
                  m->masters, NULL);
    if (res == NULL)
        return EZ_ERR;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 1);
        cJSON *o = cJSON_CreateObject();
        if (m->dry_run)
            cJSON_AddNullToObject(o, "id");
        else
            cJSON_AddNumberToObject(o, "id", (double)strtoll(PQgetvalue(res, i, 0), NULL, 10));
        cJSON_AddStringToObject(o, "name", name);
        const cJSON *key = cJSON_GetObjectItemCaseSensitive(m->master_keys, name);
        if (!m->dry_run && cJSON_IsString(key))
            cJSON_AddStringToObject(o, "master_key", key->valuestring);
        cJSON_AddItemToArray(m->new_masters, o);
    }
    m->created.masters = PQntuples(res);
    m->existing.masters = cJSON_GetArraySize(m->masters) - PQntuples(res);
    PQclear(res);
    return EZ_OK;
}

/* The master a key's master_ref names: a master of the file by its original name, else as is. */
static const char *master_name_for(struct imp *m, const char *ref, char buf[NAME_MAX_LEN + 1])
{
    const cJSON *row = find_by(m->masters, "original_name", ref);
    if (row)
        return cJSON_GetObjectItemCaseSensitive(row, "name")->valuestring;
    to_name(ref, buf);
    return buf;
}

/* Row of the masters result (sorted by name, byte order) named name, or -1. */
static int master_row(const PGresult *res, const char *name)
{
    int lo = 0, hi = PQntuples(res) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(PQgetvalue(res, mid, 1), name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/*
 * Keeps the elements of the key's list member that stay within the master's
 * effective namespaces (for model limits, the namespace part of "ns.model").
 */
static void within_master(struct imp *m, cJSON *row, const char *member, const cJSON *eff,
                          bool model_refs)
{
    const char *item = cJSON_GetObjectItemCaseSensitive(row, "item")->valuestring;
    cJSON *list = cJSON_GetObjectItemCaseSensitive(row, member);
    cJSON *keep = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        char ns[80];
        const char *dot = model_refs ? strchr(e->valuestring, '.') : NULL;
        snprintf(ns, sizeof(ns), "%.*s", dot ? (int)(dot - e->valuestring) : 79, e->valuestring);
        if ((model_refs && dot == NULL) || json_list_has(eff, ns))
            cJSON_AddItemToArray(keep, cJSON_CreateString(e->valuestring));
        else
            warn(m, item, "%s \"%.80s\" reaches beyond the master's namespaces; dropped",
                 model_refs ? "model limit" : "namespace", e->valuestring);
    }
    cJSON_ReplaceItemInObjectCaseSensitive(row, member, keep);
}

/* The masters the keys name, locked, sorted by name: id, name, group, effective namespaces. */
static PGresult *key_masters(struct imp *m)
{
    cJSON *names = cJSON_CreateArray();
    cJSON *row;
    cJSON_ArrayForEach(row, m->keys)
    {
        char buf[NAME_MAX_LEN + 1];
        const char *ref = cJSON_GetObjectItemCaseSensitive(row, "master_ref")->valuestring;
        const char *name = master_name_for(m, ref, buf);
        cJSON_AddStringToObject(row, "master_name", name);
        cJSON_AddItemToArray(names, cJSON_CreateString(name));
    }
    PGresult *res = exec_json(m,
                              "SELECT id, name, \"group\", array_to_json(CASE WHEN "
                              "cardinality(namespaces) = 0 THEN ARRAY[default_namespace] "
                              "ELSE namespaces END)::text FROM masters "
                              "WHERE name IN (SELECT jsonb_array_elements_text($1::jsonb)) "
                              "ORDER BY name COLLATE \"C\" FOR UPDATE",
                              names, NULL);
    cJSON_Delete(names);
    return res;
}

/*
 * Keys: each attached to its master (a new one of this file or an existing
 * one), narrowed to the master's namespaces, then inserted unless a key has
 * that token already. A master given more keys than max_child_keys has that
 * limit raised to its key count (the import keeps every key usable).
 */
static int db_keys(struct imp *m)
{
    PGresult *ms = key_masters(m);
    if (ms == NULL)
        return EZ_ERR;
    cJSON *ins = cJSON_CreateArray(), *ids = cJSON_CreateArray();
    cJSON *row;
    int rc = EZ_ERR;
    cJSON_ArrayForEach(row, m->keys)
    {
        const char *item = cJSON_GetObjectItemCaseSensitive(row, "item")->valuestring;
        const char *name = cJSON_GetObjectItemCaseSensitive(row, "master_name")->valuestring;
        int mr = master_row(ms, name);
        if (mr < 0) {
            warn(m, item, "master_ref names no master of the file or of EZ-API; skipped");
            m->skipped.keys++;
            continue;
        }
        cJSON *eff = cJSON_Parse(PQgetvalue(ms, mr, 3));
        within_master(m, row, "namespaces", eff, false);
        within_master(m, row, "model_limits", eff, true);
        cJSON_Delete(eff);
        cJSON *rg = cJSON_GetObjectItemCaseSensitive(row, "route_group");
        if (rg->valuestring[0] == '\0')
            cJSON_SetValuestring(rg, PQgetvalue(ms, mr, 2));
        cJSON_AddNumberToObject(row, "master_id", (double)strtoll(PQgetvalue(ms, mr, 0), NULL, 10));
        if (!json_list_has(ids, PQgetvalue(ms, mr, 0)))
            cJSON_AddItemToArray(ids, cJSON_CreateString(PQgetvalue(ms, mr, 0)));
        cJSON_AddItemReferenceToArray(ins, row);
    }
    long n;
    if (exec_count(
            m,
            "INSERT INTO keys (master_id, name, \"group\", scopes, namespaces, "
            "model_limits_enabled, model_limits, allow_ips, expires_at, quota_limit, "
            "quota_used, status, token_hash, token_prefix) "
            "SELECT x.master_id, x.name, x.route_group, "
            "ARRAY(SELECT jsonb_array_elements_text(x.scopes)), "
            "ARRAY(SELECT jsonb_array_elements_text(x.namespaces)), x.model_limits_enabled, "
            "ARRAY(SELECT jsonb_array_elements_text(x.model_limits)), "
            "ARRAY(SELECT jsonb_array_elements_text(x.allow_ips)), x.expires_at, "
            "x.quota_limit, x.quota_used, x.status, x.token_hash, x.token_prefix "
            "FROM jsonb_to_recordset($1::jsonb) AS x(i integer, master_id bigint, name text, "
            "route_group text, scopes jsonb, namespaces jsonb, model_limits_enabled boolean, "
            "model_limits jsonb, allow_ips jsonb, expires_at timestamptz, quota_limit bigint, "
            "quota_used bigint, status text, token_hash text, token_prefix text) ORDER BY x.i "
            "ON CONFLICT (token_hash) DO NOTHING RETURNING id",
            ins, NULL, &n) != EZ_OK)
        goto out;
    m->created.keys = n;
    m->existing.keys = cJSON_GetArraySize(ins) - n;
    PGresult *up =
        exec_json(m,
                  "UPDATE masters ms SET max_child_keys = least(c.n, 100000), "
                  "updated_at = now() FROM (SELECT master_id, count(*) AS n FROM keys "
                  "WHERE master_id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint) "
                  "GROUP BY master_id) c "
                  "WHERE ms.id = c.master_id AND c.n > ms.max_child_keys "
                  "RETURNING ms.name, ms.max_child_keys",
                  ids, NULL);
    if (up == NULL)
        goto out;
    for (int i = 0; i < PQntuples(up); i++)
        warn(m, "data.keys", "master \"%s\" has more keys than its max_child_keys; raised to %s",
             PQgetvalue(up, i, 0), PQgetvalue(up, i, 1));
    m->masters_updated = PQntuples(up);
    PQclear(up);
    rc = EZ_OK;
out:
    cJSON_Delete(ins);
    cJSON_Delete(ids);
    PQclear(ms);
    return rc;
}

/*
 * A binding entry becomes one Binding per provider group of this file whose
 * route group is its route_group and whose models hold its model (exact
 * selector on that model). An entry that no group serves is reported.
 */
static int db_bindings(struct imp *m)
{
    cJSON *groups = cJSON_CreateArray();
    const cJSON *g;
    cJSON_ArrayForEach(g, m->groups) cJSON_AddItemToArray(
        groups, cJSON_CreateString(cJSON_GetObjectItemCaseSensitive(g, "name")->valuestring));
    char *gl = json_render(groups);
    cJSON_Delete(groups);
    int rc = EZ_ERR;
    long pairs = 0, n;
    PGresult *res = exec_json(m,
                              "SELECT x.i, count(g.id) FROM jsonb_to_recordset($1::jsonb) "
                              "AS x(i integer, route_group text, model text) "
                              "LEFT JOIN provider_groups g ON g.\"group\" = x.route_group "
                              "AND x.model = ANY(g.models) "
                              "AND g.name IN (SELECT jsonb_array_elements_text($2::jsonb)) "
                              "GROUP BY x.i ORDER BY x.i",
                              m->bindings, gl);
    if (res == NULL)
        goto out;
    for (int i = 0; i < PQntuples(res); i++) {
        long c = strtol(PQgetvalue(res, i, 1), NULL, 10);
        pairs += c;
        if (c > 0)
            continue;
        char item[64];
        snprintf(item, sizeof(item), "data.bindings[%s]", PQgetvalue(res, i, 0));
        warn(m, item,
             "no provider group of this file serves its model in its route group; "
             "skipped");
        m->skipped.bindings++;
    }
    PQclear(res);
    if (exec_count(m,
                   "INSERT INTO bindings (namespace, public_model, group_id, selector_type, "
                   "selector_value, status) "
                   "SELECT x.namespace, x.model, g.id, 'exact', x.model, x.status "
                   "FROM jsonb_to_recordset($1::jsonb) AS x(i integer, namespace text, "
                   "route_group text, model text, status text) "
                   "JOIN provider_groups g ON g.\"group\" = x.route_group "
                   "AND x.model = ANY(g.models) "
                   "AND g.name IN (SELECT jsonb_array_elements_text($2::jsonb)) "
                   "ORDER BY x.i, g.id ON CONFLICT (namespace, public_model, group_id) DO NOTHING "
                   "RETURNING id",
                   m->bindings, gl, &n) != EZ_OK)
        goto out;
    m->created.bindings = n;
    m->existing.bindings = pairs - n;
    rc = EZ_OK;
out:
    free(gl);
    return rc;
}

static cJSON *counts_json(const struct counts *c, bool with_ns)
{
    cJSON *o = cJSON_CreateObject();
    if (with_ns)
        cJSON_AddNumberToObject(o, "namespaces", (double)c->namespaces);
    cJSON_AddNumberToObject(o, "provider_groups", (double)c->provider_groups);
    cJSON_AddNumberToObject(o, "api_keys", (double)c->api_keys);
    cJSON_AddNumberToObject(o, "masters", (double)c->masters);
    cJSON_AddNumberToObject(o, "keys", (double)c->keys);
    cJSON_AddNumberToObject(o, "bindings", (double)c->bindings);
    return o;
}

/* The operation-log row: counts and where the file came from; no secret, no entry. */
static int audit(struct imp *m, const cJSON *body)
{
    cJSON *ch = cJSON_CreateObject();
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(body, "source");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(body, "version");
    cJSON_AddStringToObject(ch, "version", ver->valuestring);
    if (cJSON_IsObject(src)) {
        /* Only the three documented strings: the rest of the object is the file's, not ours. */
        static const char *const keep[] = {"type", "version", "exported_at", NULL};
        cJSON *o = cJSON_AddObjectToObject(ch, "source");
        for (int i = 0; keep[i]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, keep[i]);
            if (cJSON_IsString(v) && strlen(v->valuestring) <= 64)
                cJSON_AddStringToObject(o, keep[i], v->valuestring);
        }
    }
    cJSON_AddItemToObject(ch, "created", counts_json(&m->created, true));
    cJSON_AddItemToObject(ch, "existing", counts_json(&m->existing, false));
    cJSON_AddItemToObject(ch, "skipped", counts_json(&m->skipped, false));
    cJSON_AddNumberToObject(ch, "warnings",
                            (double)(cJSON_GetArraySize(m->warnings) + m->warnings_dropped));
    int rc = audit_write(&m->x, "import", "import", 0, ch);
    cJSON_Delete(ch);
    return rc;
}

/* Every write of the import, in the open transaction. -1 after answering. */
static int run_import(struct imp *m, const cJSON *body)
{
    if (db_namespaces(m) || db_groups(m) || db_api_keys(m) || db_masters(m) || db_keys(m) ||
        db_bindings(m) || audit(m, body))
        return EZ_ERR;
    const struct counts *c = &m->created;
    bool changed = c->namespaces || c->provider_groups || c->api_keys || c->masters || c->keys ||
                   c->bindings || m->masters_updated;
    /* One full rebuild republishes everything the import touched (docs/outbox.md "all"). */
    if (changed && outbox_add(&m->x, "all", 0, "upsert") != EZ_OK)
        return EZ_ERR;
    return EZ_OK;
}

static void reply_result(struct imp *m)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "dry_run", m->dry_run);
    cJSON_AddItemToObject(out, "created", counts_json(&m->created, true));
    cJSON *up = cJSON_AddObjectToObject(out, "updated");
    cJSON_AddNumberToObject(up, "masters", (double)m->masters_updated);
    cJSON_AddItemToObject(out, "existing", counts_json(&m->existing, false));
    cJSON_AddItemToObject(out, "skipped", counts_json(&m->skipped, false));
    cJSON_AddItemReferenceToObject(out, "masters", m->new_masters);
    if (m->warnings_dropped > 0) {
        char line[96];
        snprintf(line, sizeof(line), "(%ld more warnings not shown)", m->warnings_dropped);
        cJSON_AddItemToArray(m->warnings, cJSON_CreateString(line));
    }
    cJSON_AddItemReferenceToObject(out, "warnings", m->warnings);
    reply_json(m->r, 200, out);
    cJSON_Delete(out);
}

/* Wipes the plaintext master keys before they are freed. */
static void wipe_master_keys(cJSON *keys)
{
    cJSON *e;
    cJSON_ArrayForEach(e, keys)
    {
        if (cJSON_IsString(e))
            explicit_bzero(e->valuestring, strlen(e->valuestring));
    }
}

int import_post(struct req *r)
{
    struct imp m;
    memset(&m, 0, sizeof(m));
    m.r = r;
    cJSON *body = NULL;
    int rc = EZ_ERR;
    const char *dr = req_query(r, "dry_run");
    if (dr && strcmp(dr, "true") != 0 && strcmp(dr, "false") != 0 && strcmp(dr, "1") != 0 &&
        strcmp(dr, "0") != 0)
        return reply_error(r, 400, "invalid_argument", "dry_run", "dry_run must be true or false");
    m.dry_run = dr && (strcmp(dr, "true") == 0 || strcmp(dr, "1") == 0);
    /* 8 x EZ_MAX_BODY_BYTES (the route table says the same for the default). */
    r->body_limit = 8 * r->w->cfg->max_body_bytes;
    if (req_json_object(r, &body) != EZ_OK)
        return EZ_ERR;

    m.warnings = cJSON_CreateArray();
    m.namespaces = cJSON_CreateArray();
    m.groups = cJSON_CreateArray();
    m.api_keys = cJSON_CreateArray();
    m.masters = cJSON_CreateArray();
    m.master_keys = cJSON_CreateObject();
    m.keys = cJSON_CreateArray();
    m.bindings = cJSON_CreateArray();
    m.new_masters = cJSON_CreateArray();
    if (plan_file(&m, body) != EZ_OK)
        goto out;

    PGconn *c = tx_begin(r);
    if (c == NULL)
        goto out;
    m.x.r = r;
    m.x.c = c;
    m.x.prefix = "";
    m.x.action = "import";
    if (run_import(&m, body) != EZ_OK) {
        tx_rollback(r, c);
        goto out;
    }
    if (m.dry_run)
        tx_rollback(r, c); /* the same writes, undone: the counts are what an import would do */
    else if (tx_commit(r, c) != EZ_OK)
        goto out;
    if (!m.dry_run)
        log_info("event=import_done masters=%ld keys=%ld provider_groups=%ld api_keys=%ld "
                 "bindings=%ld warnings=%d",
                 m.created.masters, m.created.keys, m.created.provider_groups, m.created.api_keys,
                 m.created.bindings, cJSON_GetArraySize(m.warnings));
    reply_result(&m);
    rc = EZ_OK;
out:
    wipe_master_keys(m.master_keys);
    cJSON_Delete(m.master_keys);
    cJSON_Delete(m.warnings);
    cJSON_Delete(m.namespaces);
    cJSON_Delete(m.groups);
    cJSON_Delete(m.api_keys);
    cJSON_Delete(m.masters);
    cJSON_Delete(m.keys);
    cJSON_Delete(m.bindings);
    cJSON_Delete(m.new_masters);
    cJSON_Delete(body);
    return rc;
}
