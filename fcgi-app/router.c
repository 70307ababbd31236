/* Route matching and the per-request pipeline that precedes every handler. */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "auth.h"
#include "log.h"
#include "wctx.h"

/* Compares one pattern segment with one path segment; ':name' matches any non-empty segment. */
static bool seg_match(const char *pat, size_t plen, const char *seg, size_t slen)
{
    if (plen > 0 && pat[0] == ':')
        return slen > 0;
    return plen == slen && memcmp(pat, seg, plen) == 0;
}

/*
 * Walks pattern and path segment by segment. Returns -1 when they differ,
 * else the number of literal (not ':name') segments of the pattern.
 */
static int path_match(const char *pattern, const char *path)
{
    const char *p = pattern, *s = path;
    int literals = 0;
    for (;;) {
        while (*p == '/')
            p++;
        while (*s == '/')
            s++;
        if (*p == '\0' || *s == '\0')
            return *p == '\0' && *s == '\0' ? literals : -1;
        size_t pl = strcspn(p, "/"), sl = strcspn(s, "/");
        if (!seg_match(p, pl, s, sl))
            return -1;
        literals += p[0] != ':';
        p += pl;
        s += sl;
    }
}

/*
 * Of the routes matching path, those with the most literal segments own it:
 * the method is looked up, and Allow is built, among them only. So PUT
 * /admin/models/registry is a 405 of the registry route (Allow: GET), not a
 * PUT of the model "registry" (a 400 for a bad id). One pass: a match with
 * more literals than the best so far starts the Allow list again.
 */
int router_match(const char *method, const char *path, char *allow, size_t allowlen)
{
    int best = -1, found = -1;
    size_t alen = 0;
    if (allowlen)
        allow[0] = '\0';
    for (int i = 0; i < router_nroutes; i++) {
        const struct route *rt = &router_routes[i];
        int n = path_match(rt->pattern, path);
        if (n < 0 || n < best)
            continue;
        if (n > best) {
            best = n;
            found = -1;
            alen = 0;
            if (allowlen)
                allow[0] = '\0';
        }
        if (found < 0 && strcmp(rt->method, method) == 0)
            found = i; /* the first of equals wins; keep going for a more literal route */
        if (strstr(allow, rt->method) == NULL && alen + strlen(rt->method) + 3 < allowlen) {
            alen += (size_t)snprintf(allow + alen, allowlen - alen, "%s%s", alen ? ", " : "",
                                     rt->method);
        }
    }
    if (found >= 0)
        return found;
    if (best >= 0 && alen + 10 < allowlen)
        snprintf(allow + alen, allowlen - alen, ", OPTIONS");
    return best >= 0 ? -2 : -1;
}

enum auth_kind router_auth_for_path(const char *path)
{
    const char *seg = path + (path[0] == '/');
    size_t n = strcspn(seg, "/");
    /* Case-insensitive so that "/ADMIN/..." is never served without the admin check. */
    if (n == 5 && strncasecmp(seg, "admin", 5) == 0)
        return AUTH_ADMIN;
    if (n == 2 && strncasecmp(seg, "v1", 2) == 0)
        return AUTH_MASTER;
    if (n == 8 && strncasecmp(seg, "internal", 8) == 0)
        return AUTH_INTERNAL;
    return AUTH_NONE;
}

int router_selfcheck(void)
{
    for (int i = 0; i < router_nroutes; i++) {
        const struct route *rt = &router_routes[i];
        if (rt->pattern[0] != '/' || rt->handler == NULL) {
            log_error("event=route_table_bad index=%d pattern=%s", i, rt->pattern);
            return EZ_ERR;
        }
        if (router_auth_for_path(rt->pattern) != rt->auth) {
            log_error("event=route_auth_mismatch pattern=%s", rt->pattern);
            return EZ_ERR;
        }
    }
    return EZ_OK;
}

/* Path parameters named "id" or "*_id" are positive 64-bit integers. */
static bool is_id_param(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, "id") == 0 || (n > 3 && strcmp(name + n - 3, "_id") == 0);
}

/* Copies the ':name' segments of the matched pattern into r; answers 400 on a bad id. */
static int bind_params(struct req *r, const struct route *rt)
{
    const char *p = rt->pattern, *s = r->path;
    int ids = 0;
    for (;;) {
        while (*p == '/')
            p++;
        while (*s == '/')
            s++;
        if (*p == '\0')
            return EZ_OK;
        size_t pl = strcspn(p, "/"), sl = strcspn(s, "/");
        if (p[0] == ':' && r->nparams < REQ_MAX_PARAMS) {
            /* The name points into the static table: no copy needed. */
            static _Thread_local char names[REQ_MAX_PARAMS][32];
            snprintf(names[r->nparams], sizeof(names[0]), "%.*s", (int)(pl - 1), p + 1);
            r->param_names[r->nparams] = names[r->nparams];
            r->param_vals[r->nparams] = ez_strndup(s, sl);
            const char *name = names[r->nparams], *val = r->param_vals[r->nparams];
            r->nparams++;
            if (is_id_param(name)) {
                int64_t v;
                if (ez_parse_int64(val, 1, INT64_MAX, &v) != EZ_OK)
                    return reply_error(r, 400, "invalid_argument", name,
                                       "%s must be a positive integer", name);
                if (ids++ == 0)
                    r->id = v;
                else
                    r->sub_id = v;
            }
        }
        p += pl;
        s += sl;
    }
}

void router_dispatch(struct req *r)
{
    if (strcmp(r->method, "OPTIONS") == 0) {
        /* Preflight carries no credentials by design: answer it before authentication. */
        reply_empty(r, 204);
        return;
    }
    enum auth_kind kind = router_auth_for_path(r->path);
    if (auth_check(r, kind) != EZ_OK)
        return;
    char allow[128];
    const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
    int idx = router_match(method, r->path, allow, sizeof(allow));
    if (idx == -1) {
        reply_error(r, 404, "not_found", NULL, "no such route");
        return;
    }
    if (idx == -2) {
        reply_header(r, "Allow", allow);
        reply_error(r, 405, "method_not_allowed", NULL, "method %s not allowed here", r->method);
        return;
    }
    r->route = &router_routes[idx];
    r->route_index = idx;
    r->body_limit = r->route->body_limit;
    if (bind_params(r, r->route) != EZ_OK)
        return;
    r->route->handler(r);
    if (!r->responded) {
        log_error("event=handler_no_response route=\"%s %s\"", r->route->method, r->route->pattern);
        reply_error(r, 500, "internal", NULL, "internal error");
    }
}
