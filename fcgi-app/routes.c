/* The route table: one line per endpoint. Auth must match the path prefix (checked at start). */
#include "router.h"
#include "handlers.h"
#include "util.h"

const struct route router_routes[] = {
    {"GET", "/health", health_get, AUTH_NONE, 0},
    {"GET", "/api/status/test", status_test_get, AUTH_NONE, 0},
    {"GET", "/internal/metrics", internal_metrics_get, AUTH_INTERNAL, 0},
};

const int router_nroutes = (int)EZ_ARRAY_LEN(router_routes);
