/*
 * The request context of one FastCGI request and the helpers that answer it.
 * A handler gets a struct req, reads what it needs, and sends exactly one
 * response through reply_*; everything the struct owns dies in req_finish.
 */
#ifndef EZ_HTTP_H
#define EZ_HTTP_H

#include <fcgiapp.h>
#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include "util.h"

struct wctx;
struct route;

#define REQ_MAX_PARAMS 4
#define REQ_MAX_QUERY 32

enum auth_kind { AUTH_NONE = 0, AUTH_ADMIN, AUTH_MASTER, AUTH_INTERNAL };

struct kv {
    char *key; /* owned */
    char *val; /* owned */
};

struct req {
    FCGX_Request *fcgi;
    struct wctx *w; /* the thread's connections and config */

    const char *method; /* from the FastCGI env: valid until FCGX_Finish_r */
    char *path;         /* normalised (decoded, dot segments resolved); owned */
    struct kv query[REQ_MAX_QUERY];
    int nquery;
    char request_id[130];
    char client_ip[64];

    char *body; /* NUL-terminated copy of the request body, or NULL; owned */
    size_t body_len;

    /* Filled by the router before the handler runs. */
    const struct route *route;
    int route_index;
    const char *param_names[REQ_MAX_PARAMS];
    char *param_vals[REQ_MAX_PARAMS]; /* owned */
    int nparams;
    int64_t id;         /* value of ":id" when the pattern has one */
    int64_t sub_id;     /* value of the second id param (":key_id") */
    int64_t body_limit; /* the route's body limit (EZ_MAX_BODY_BYTES unless it says more) */

    /* Set by authentication. */
    enum auth_kind auth;
    int64_t master_id; /* AUTH_MASTER: the calling tenant */

    /* Response state. */
    int status;
    bool responded;
    buf_t extra_headers;
    int64_t start_us;
};

/* Reads the CGI environment into r (method, path, query, request id). */
int req_init(struct req *r, FCGX_Request *fcgi, struct wctx *w) EZ_MUSTCHECK;
void req_finish(struct req *r);

/* A CGI parameter (HTTP_AUTHORIZATION, CONTENT_TYPE, ...), or NULL. */
const char *req_env(const struct req *r, const char *name);
/* First value of a decoded query parameter, or NULL. */
const char *req_query(const struct req *r, const char *name);
/* A named route parameter (":name"), or NULL. */
const char *req_param(const struct req *r, const char *name);

/*
 * Reads the body up to limit bytes. Answers 413 itself (and returns -1)
 * when CONTENT_LENGTH exceeds the limit; 400 when the body is cut short.
 */
int req_read_body(struct req *r, int64_t limit) EZ_MUSTCHECK;
/*
 * The body as a strict JSON object (see json_parse_strict). Answers 415
 * (wrong content type), 400 invalid_json (empty, malformed, not an object)
 * itself and returns -1. The caller owns *out.
 */
int req_json_object(struct req *r, cJSON **out) EZ_MUSTCHECK;

/* Normalises a raw URI path into out (caller frees). -1 when the path is unusable. */
int http_normalize_path(const char *raw, char **out) EZ_MUSTCHECK;
/* Decodes %XX and (when plus_space) '+' in place. -1 on a bad escape or a NUL byte. */
int http_percent_decode(char *s, bool plus_space) EZ_MUSTCHECK;

/* Adds a response header line ("Name: value"). */
void reply_header(struct req *r, const char *name, const char *value);
/* Sends status with a JSON body (rendered from item; item stays the caller's). */
void reply_json(struct req *r, int status, const cJSON *item);
/* Sends status with an already rendered body of the given content type. */
void reply_raw(struct req *r, int status, const char *content_type, const char *body, size_t len);
/* Sends a status without body (204, preflight). */
void reply_empty(struct req *r, int status);
/*
 * Sends the error shape of API.md: {"error":{"code","message","field"?,"request_id"}}.
 * field may be NULL. Returns -1 so handlers can `return reply_error(...)`.
 */
int reply_error(struct req *r, int status, const char *code, const char *field, const char *fmt,
                ...) EZ_PRINTF(5, 6);

/* Text of a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
