/*
 * The data-plane contract shapes (REDIS.md) as pure builders: the fields of
 * auth:token / auth:master hashes, the provider, binding and model JSON, the
 * meta:models checksum and the dp:config:refresh message. No I/O: the
 * background's publisher (background/snapshot.c) feeds them rows read from
 * PostgreSQL, the unit tests feed them fixtures and compare with the goldens.
 * Every char * they return is malloc'd and owned by the caller.
 */
#ifndef EZ_SNAPSHOT_SHAPES_H
#define EZ_SNAPSHOT_SHAPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The control plane's own bookkeeping in Redis, written by the background's
 * publisher and read by the workers (/internal/metrics, /admin/stats).
 */
#define EZ_SNAPSHOT_PUBLISHED_AT_KEY "ezapi:snapshot:published_at" /* resource -> unix seconds */
#define EZ_SNAPSHOT_PUBLISHES_KEY "ezapi:snapshot:publishes"       /* resource -> count */
#define EZ_OUTBOX_APPLIED_KEY "ezapi:outbox:applied" /* outbox rows applied (counter) */

/* The published resources: config:version fields and dp:config:refresh "resource" values. */
#define EZ_SNAPSHOT_NRESOURCES 6
extern const char *const ez_snapshot_resources[EZ_SNAPSHOT_NRESOURCES];

/* Route group used where a stored one is empty (DATA.md: empty means default). */
#define SHAPE_DEFAULT_GROUP "default"

/* A hash's fields: names are static strings, values are owned (shape_fields_free). */
#define SHAPE_MAX_FIELDS 16
struct shape_fields {
    size_t n;
    const char *name[SHAPE_MAX_FIELDS];
    char *value[SHAPE_MAX_FIELDS];
};
void shape_fields_free(struct shape_fields *f);
/* The value of field name, or NULL. */
const char *shape_fields_get(const struct shape_fields *f, const char *name);

/*
 * A child key and what it inherits from its master, as stored. JSON lists
 * are JSON text ("[]" when empty), as PostgreSQL's array_to_json renders them.
 * Times are unix seconds, 0 = none.
 */
struct shape_key {
    int64_t key_id;
    int64_t master_id;
    const char *name;
    const char *group;      /* "" = the master's */
    const char *status;     /* active | disabled | expired | exhausted */
    const char *scopes;     /* JSON list */
    const char *namespaces; /* JSON list; "[]" = the master's */
    bool model_limits_enabled;
    const char *model_limits; /* JSON list */
    const char *allow_ips;    /* JSON list */
    int64_t expires_at;
    int64_t quota_limit; /* -1 = unlimited */
    int64_t quota_used;
    int64_t quota_reset_at;
    const char *master_group;      /* "" = default */
    const char *master_status;     /* active | suspended */
    const char *master_namespaces; /* JSON list; "[]" = [default_namespace] */
    const char *master_default_namespace;
};

/*
 * The status the data plane sees for a key at time now: the stored status,
 * except that an active key is published as "suspended" while its master is,
 * "expired" once expires_at has passed and "exhausted" once a limited quota is
 * used up (the expiry job and the stats flush then store the same). Static string.
 */
const char *shape_key_status(const struct shape_key *k, int64_t now);

/* The auth:token:<sha256> fields of k at time now (REDIS.md, 14 fields). */
void shape_token_fields(const struct shape_key *k, int64_t now, struct shape_fields *out);

/* A master as stored (JSON list as text, "[]" = [default_namespace]). */
struct shape_master {
    const char *name;
    const char *group;
    const char *status;
    int64_t epoch;
    int64_t global_qps;
    const char *namespaces;
    const char *default_namespace;
};

/* The auth:master:<id> fields (REDIS.md, 7 fields). */
void shape_master_fields(const struct shape_master *m, struct shape_fields *out);

/* One API key with its provider group, as stored. */
struct shape_provider {
    int64_t id; /* API key id */
    const char *api_key;
    int64_t weight;
    const char *status; /* API key: active | disabled | banned */
    bool auto_ban;
    int64_t ban_until; /* unix, 0 = none */
    int64_t group_id;
    const char *group_name;
    const char *type;
    const char *base_url;
    const char *google_project;
    const char *google_location;
    const char *models;       /* JSON list */
    const char *route_group;  /* "" = default */
    const char *group_status; /* active | disabled */
};

/*
 * The config:providers value of p (contract provider_snapshot.json, plus
 * weight and ban_until). A disabled provider group publishes its keys as
 * "disabled"; vertex / vertex-express without a location get "global".
 */
char *shape_provider_json(const struct shape_provider *p);

/* One candidate of a binding key: an active binding of an active provider group. */
struct shape_candidate {
    int64_t group_id;
    const char *route_group; /* "" = default */
    int64_t weight;
    const char *selector_type;
    const char *selector_value; /* "" = the public model */
    const char *const *models;  /* the group's model ids */
    size_t nmodels;
    const int64_t *key_ids; /* the group's active API keys */
    size_t nkeys;
};

/*
 * The config:bindings value of namespace.public_model (contract, REDIS.md
 * "Binding snapshot"): each candidate resolved by selector_resolve_binding
 * (common/selector.h). A candidate that resolves is "active"; one with an
 * error is "error" (error config_error or no_provider, upstreams {}). The
 * binding is "active" when at least one candidate is, else "error".
 * n must be >= 1 (a key without candidates is not published).
 */
char *shape_binding_json(const char *ns, const char *public_model, int64_t updated_at,
                         const struct shape_candidate *c, size_t n);

/* A Model row (DATA.md "Model"). */
struct shape_model {
    const char *kind; /* "" = chat */
    int64_t context_window;
    double cost_per_token;
    bool supports_vision;
    bool supports_functions;
    bool supports_tool_choice;
    bool supports_fim;
    bool supports_stream;
    int64_t max_output_tokens;
};

/*
 * The meta:models value of binding key `name` (contract model_snapshot.json):
 * name and kind, the rest only when non-zero / true. m NULL = no Model
 * applies: {"name": name, "kind": "chat"}.
 */
char *shape_model_json(const char *name, const struct shape_model *m);

/*
 * meta:models_meta.checksum: lowercase hex SHA-256 over the n fields sorted
 * by name (byte order), each contributing name "\n" value "\n". n may be 0.
 */
void shape_models_checksum(const char *const *names, const char *const *values, size_t n,
                           char out[65]);

/* The meta:models_meta fields (contract models_meta.json, 6 string fields). */
void shape_models_meta_fields(const char *version, int64_t updated_at, const char *source,
                              const char *checksum, const char *upstream_url,
                              const char *upstream_ref, struct shape_fields *out);

/* The dp:config:refresh message (contract: resource, version, active_key, timestamp). */
char *shape_refresh_json(const char *resource, const char *version, const char *active_key,
                         int64_t timestamp);

#endif
