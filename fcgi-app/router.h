/*
 * The route table and the one place that runs before every handler:
 * preflight, authentication, 404/405, path-parameter parsing.
 */
#ifndef EZ_ROUTER_H
#define EZ_ROUTER_H

#include "http.h"

typedef int (*handler_fn)(struct req *r);

struct route {
    const char *method;
    const char *pattern; /* "/admin/masters/:id/keys/:key_id" */
    handler_fn handler;
    enum auth_kind auth;
    int64_t body_limit; /* 0 = EZ_MAX_BODY_BYTES; request logs take more */
};

/* The table (routes.c) and its size. */
extern const struct route router_routes[];
extern const int router_nroutes;

/*
 * Checks the table against itself (each route's auth matches its prefix,
 * patterns well formed). Returns -1 and logs when the table is inconsistent.
 */
int router_selfcheck(void) EZ_MUSTCHECK;

/* The authentication a normalised path requires, from its first segment (any case). */
enum auth_kind router_auth_for_path(const char *path);

/*
 * Finds the route for method + path. Returns its index; -1 when no pattern
 * matches (404); -2 when patterns match but not the method (405), with the
 * allowed methods written into allow (comma separated).
 */
int router_match(const char *method, const char *path, char *allow, size_t allowlen);

/* Runs one request through preflight, auth, routing and the handler. */
void router_dispatch(struct req *r);

#endif
