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
    /* -- end masters -- */

    /* -- provider groups, api keys, models, bindings -- */
    /* -- end providers -- */

    /* -- features, operation logs, stats -- */
    /* -- end features -- */

    /* -- request logs, internal logs (log pipeline) -- */
    /* -- end logs -- */
};

const int router_nroutes = (int)EZ_ARRAY_LEN(router_routes);
