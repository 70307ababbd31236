/* The route table: one line per endpoint. Auth must match the path prefix (checked at start). */
#include "router.h"
#include "handlers.h"
#include "util.h"

const struct route router_routes[] = {
    {"GET", "/health", health_get, AUTH_NONE, 0},
    {"GET", "/api/status/test", status_test_get, AUTH_NONE, 0},
    {"GET", "/internal/metrics", internal_metrics_get, AUTH_INTERNAL, 0},

    {"GET", "/admin/namespaces", namespaces_list, AUTH_ADMIN, 0},
    {"POST", "/admin/namespaces", namespaces_create, AUTH_ADMIN, 0},
    {"GET", "/admin/namespaces/:id", namespaces_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/namespaces/:id", namespaces_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/namespaces/:id", namespaces_delete, AUTH_ADMIN, 0},

    /* -- masters, keys, tenant API (masters.c, keys.c, tenant.c) -- */
    {"GET", "/admin/masters", masters_list, AUTH_ADMIN, 0},
    {"POST", "/admin/masters", masters_create, AUTH_ADMIN, 0},
    {"POST", "/admin/masters/batch", masters_batch, AUTH_ADMIN, 0},
    {"GET", "/admin/masters/:id", masters_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/masters/:id", masters_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/masters/:id", masters_delete, AUTH_ADMIN, 0},
    {"POST", "/admin/masters/:id/manage", masters_manage, AUTH_ADMIN, 0},
    {"GET", "/admin/masters/:id/realtime", masters_realtime, AUTH_ADMIN, 0},
    {"GET", "/admin/masters/:id/keys", master_keys_list, AUTH_ADMIN, 0},
    {"POST", "/admin/masters/:id/keys", master_keys_create, AUTH_ADMIN, 0},
    {"GET", "/admin/masters/:id/keys/:key_id", master_keys_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/masters/:id/keys/:key_id", master_keys_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/masters/:id/keys/:key_id", master_keys_delete, AUTH_ADMIN, 0},
    {"POST", "/admin/masters/:id/keys/:key_id/rotate", master_keys_rotate, AUTH_ADMIN, 0},
    {"GET", "/v1/self", tenant_self, AUTH_MASTER, 0},
    {"GET", "/v1/tokens", tenant_tokens_list, AUTH_MASTER, 0},
    {"POST", "/v1/tokens", tenant_tokens_create, AUTH_MASTER, 0},
    {"GET", "/v1/tokens/:id", tenant_tokens_get, AUTH_MASTER, 0},
    {"PUT", "/v1/tokens/:id", tenant_tokens_update, AUTH_MASTER, 0},
    {"DELETE", "/v1/tokens/:id", tenant_tokens_delete, AUTH_MASTER, 0},
    {"POST", "/v1/tokens/:id/rotate", tenant_tokens_rotate, AUTH_MASTER, 0},
    {"GET", "/v1/realtime", tenant_realtime, AUTH_MASTER, 0},
    /* -- end masters -- */

    /* -- provider groups, api keys, models, bindings -- */
    {"GET", "/admin/provider-groups", provider_groups_list, AUTH_ADMIN, 0},
    {"POST", "/admin/provider-groups", provider_groups_create, AUTH_ADMIN, 0},
    {"GET", "/admin/provider-groups/:id", provider_groups_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/provider-groups/:id", provider_groups_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/provider-groups/:id", provider_groups_delete, AUTH_ADMIN, 0},
    {"GET", "/admin/api-keys", api_keys_list, AUTH_ADMIN, 0},
    {"POST", "/admin/api-keys", api_keys_create, AUTH_ADMIN, 0},
    {"POST", "/admin/api-keys/batch", api_keys_batch, AUTH_ADMIN, 0},
    {"GET", "/admin/api-keys/:id", api_keys_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/api-keys/:id", api_keys_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/api-keys/:id", api_keys_delete, AUTH_ADMIN, 0},
    {"GET", "/admin/models", models_list, AUTH_ADMIN, 0},
    {"POST", "/admin/models", models_create, AUTH_ADMIN, 0},
    {"POST", "/admin/models/batch", models_batch, AUTH_ADMIN, 0},
    /* registry.c: its literal segment owns the path over /admin/models/:id (router_match) */
    {"GET", "/admin/models/registry", registry_get, AUTH_ADMIN, 0},
    {"POST", "/admin/models/registry/refresh", registry_refresh, AUTH_ADMIN, 0},
    {"GET", "/admin/models/:id", models_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/models/:id", models_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/models/:id", models_delete, AUTH_ADMIN, 0},
    {"GET", "/admin/bindings", bindings_list, AUTH_ADMIN, 0},
    {"POST", "/admin/bindings", bindings_create, AUTH_ADMIN, 0},
    {"POST", "/admin/bindings/batch", bindings_batch, AUTH_ADMIN, 0},
    {"GET", "/admin/bindings/:id", bindings_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/bindings/:id", bindings_update, AUTH_ADMIN, 0},
    {"DELETE", "/admin/bindings/:id", bindings_delete, AUTH_ADMIN, 0},
    /* -- end providers -- */

    /* -- features, operation logs, stats -- */
    {"GET", "/admin/features", features_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/features", features_put, AUTH_ADMIN, 0},
    {"GET", "/admin/operation-logs", operation_logs_list, AUTH_ADMIN, 0},
    {"GET", "/admin/stats", stats_get, AUTH_ADMIN, 0},
    /* up to 10000 keys + 10000 masters per flush: more than the default 1 MiB */
    {"POST", "/internal/stats/flush", stats_flush_post, AUTH_INTERNAL, 4 << 20},
    /* -- end features -- */

    /* -- request logs, internal logs (log pipeline) -- */
    /* body limit 8 x EZ_MAX_BODY_BYTES: the handler computes it from the configuration */
    {"POST", "/internal/logs", internal_logs_post, AUTH_INTERNAL, 8 * 1048576},
    {"GET", "/admin/logs", logs_list, AUTH_ADMIN, 0},
    {"DELETE", "/admin/logs", logs_delete, AUTH_ADMIN, 0},
    {"GET", "/admin/logs/stats", logs_stats, AUTH_ADMIN, 0},
    {"GET", "/admin/logs/webhook", webhook_get, AUTH_ADMIN, 0},
    {"PUT", "/admin/logs/webhook", webhook_put, AUTH_ADMIN, 0},
    {"POST", "/admin/logs/webhook/test", webhook_test, AUTH_ADMIN, 0},
    {"GET", "/v1/logs", tenant_logs_list, AUTH_MASTER, 0},
    {"GET", "/v1/logs/stats", tenant_logs_stats, AUTH_MASTER, 0},
    /* -- end logs -- */

    /* -- import (import.c), tenant stats (tenant_stats.c) -- */
    /* a migration file may be large: 8 x EZ_MAX_BODY_BYTES, computed by the handler */
    {"POST", "/admin/import", import_post, AUTH_ADMIN, 8 * 1048576},
    {"GET", "/v1/stats", tenant_stats, AUTH_MASTER, 0},
    /* -- end import -- */
};

const int router_nroutes = (int)EZ_ARRAY_LEN(router_routes);
