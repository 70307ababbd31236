/*
 * The shared machinery behind every admin resource: a field table per
 * resource drives validation, SQL column lists, JSON rendering, list
 * queries (pagination, q, filters, sort), partial updates and batch.
 * A resource file supplies its table, its extra rules as hooks, and routes.
 */
#ifndef EZ_RESOURCE_H
#define EZ_RESOURCE_H

#include <cJSON.h>
#include <libpq-fe.h>
#include "http.h"

/* Field flags. */
#define F_WRITE 0x001  /* taken from a body on create and update */
#define F_CREATE 0x002 /* taken from a body on create only */
#define F_NULL 0x004   /* JSON null clears it (SQL NULL) */
#define F_REQ 0x008    /* required on create */
#define F_HIDDEN 0x010 /* never rendered */
#define F_SORT 0x020   /* allowed in ?sort= */
#define F_FILTER 0x040 /* ?<name>= filters on equality */
#define F_SECRET 0x080 /* rendered masked, redacted in audit */

enum ftype {
    FT_ID,    /* bigint id */
    FT_TEXT,  /* text */
    FT_INT,   /* integer within [min, max] */
    FT_BOOL,  /* boolean */
    FT_FLOAT, /* double within [min, max] */
    FT_TEXTS, /* text[]: list of strings, each within [0, max] chars */
    FT_TIME,  /* timestamptz (RFC 3339 in JSON) */
};

/* Extra rule for one value: NULL when fine, else a message (static string). */
typedef const char *(*value_check_fn)(const char *value);

struct field {
    const char *name; /* JSON name */
    const char *col;  /* SQL column, quoted when needed ("\"group\"") */
    enum ftype type;
    unsigned flags;
    int64_t min, max;           /* ints: range; texts: length range (max 0 = no limit) */
    const char *const *choices; /* NULL-terminated allowed values (text, or list elements) */
    value_check_fn check;       /* per value (list: per element) */
};

/* One value about to be written: column and text form (NULL = SQL NULL). */
struct wval {
    const struct field *f; /* NULL for an extra column set by a hook */
    const char *col;
    enum ftype type;
    char *text; /* owned; NULL = SQL NULL */
};

#define WVAL_MAX 48
struct wvals {
    struct wval v[WVAL_MAX];
    int n;
};

/* Adds a value (copied). For hooks: generated columns such as key_hash. */
void wvals_set(struct wvals *w, const char *col, enum ftype type, const char *text);
/* The value given for a column, or NULL when absent; *present tells which. */
const char *wvals_get(const struct wvals *w, const char *col, bool *present);
void wvals_free(struct wvals *w);

struct resource;

/* A write in progress: the request, the connection (inside BEGIN) and where errors point. */
struct wctx;
struct rctx {
    struct req *r;
    PGconn *c;
    const struct resource *res;
    const char *prefix; /* "" or "items[3]." for field names in errors */
    int64_t id;         /* the row written (0 before insert) */
    bool create;
    cJSON *extra_out;     /* hook output merged into the response (e.g. master_key); owned */
    int64_t scope_master; /* >0: restrict to this master's rows (tenant API) */
    const char *action;   /* audit action of the write in progress ("create", "batch_suspend"...) */
    /*
     * Set by a hook (cJSON object, owned): the payload of the outbox row the
     * framework writes for this change, e.g. the token hashes a deletion must
     * remove from Redis (docs/outbox.md). Consumed by that row; NULL = {}.
     */
    cJSON *outbox_payload;
};

struct resource {
    const char *name;  /* resource name in operation logs and the outbox */
    const char *table; /* SQL table */
    const struct field *fields;
    int nfields;
    const char *default_sort; /* "id" */
    const char *scope_col;    /* column compared with rctx.scope_master, or NULL */
    /*
     * Called after the body is validated field by field and before the SQL
     * write: cross-field and cross-row rules, generated columns. body is the
     * item; vals holds what will be written. Returns -1 after answering.
     */
    int (*before_write)(struct rctx *x, const cJSON *body, struct wvals *vals);
    /* Called after the row is written (same transaction). Returns -1 after answering. */
    int (*after_write)(struct rctx *x, const cJSON *body);
    /* Called before a delete (same transaction): in-use checks. Returns -1 after answering. */
    int (*before_delete)(struct rctx *x);
    /* Outbox resource written for each change ("masters"...); NULL = res->name. */
    const char *outbox;
    /* Column ?q= searches (substring, literal); NULL = "name" when the resource has one. */
    const char *search_col;
};

/* Generic handlers: everything a plain resource needs. */
int res_list(struct req *r, const struct resource *res, int64_t scope_master);
int res_get(struct req *r, const struct resource *res, int64_t id, int64_t scope_master);
int res_create(struct req *r, const struct resource *res, int64_t scope_master);
int res_update(struct req *r, const struct resource *res, int64_t id, int64_t scope_master);
int res_delete(struct req *r, const struct resource *res, int64_t id, int64_t scope_master);
/* POST /R/batch: create | delete | enable | disable (+ extra status actions given). */
int res_batch(struct req *r, const struct resource *res, const char *const *status_actions,
              const char *const *status_values);

/* Pieces for resource files that need more than the generic handlers. */

/* Opens a transaction on the main DB; answers 503 itself when unavailable. */
PGconn *tx_begin(struct req *r) EZ_MUSTCHECK;
/* Commits; answers the mapped error itself on failure. Nudges the background after commit. */
int tx_commit(struct req *r, PGconn *c) EZ_MUSTCHECK;
void tx_rollback(struct req *r, PGconn *c);

/* Runs a statement; on failure answers the mapped error (409/400/404/503) and returns NULL. */
PGresult *db_exec(struct rctx *x, const char *sql, int n, const char *const *params) EZ_MUSTCHECK;
/* Like db_exec but for SELECTs whose result is checked for rows by the caller. */

/* Operation-log row in the current transaction. changes may be NULL. */
int audit_write(struct rctx *x, const char *action, const char *resource, int64_t id,
                const cJSON *changes) EZ_MUSTCHECK;
/*
 * Outbox row in the current transaction: resource + id name what the
 * background republishes from PostgreSQL's current state; payload (may be
 * NULL) carries what a deletion must remove from Redis (docs/outbox.md).
 */
int outbox_add(struct rctx *x, const char *resource, int64_t id, const char *action) EZ_MUSTCHECK;
int outbox_add_payload(struct rctx *x, const char *resource, int64_t id, const char *action,
                       const cJSON *payload) EZ_MUSTCHECK;

/* Renders the row with the given id as JSON (NULL when missing). */
cJSON *res_fetch(struct rctx *x, int64_t id);
/* The SELECT column list of a resource's rendered fields. */
void res_select_cols(const struct resource *res, buf_t *out);
/* Renders row `row` of res (columns as produced by res_select_cols). */
cJSON *res_render_row(const struct resource *res, PGresult *pg, int row);

/*
 * Answers 400 naming a field (with the batch prefix, "items[3].name"): the
 * message reads "<field> <msg><detail>". Returns -1 for `return res_bad_field(...)`.
 */
int res_bad_field(struct rctx *x, const char *field, const char *msg, const char *detail);

/*
 * A new secret (master key "mk-", token "sk-") with its stored forms: the
 * lowercase hex SHA-256 into hash and the display prefix ("sk-abcd…") into
 * display. Returns the plaintext (free it with ez_secret_free) or NULL after
 * answering 503 when the OS gives no randomness.
 */
char *res_new_secret(struct req *r, const char *prefix, char hash[65], char *display, size_t dlen);

/* Masks a secret for display: "sk-1…9xyz". Caller frees. */
char *mask_secret(const char *s);

/* Common value rules. */
const char *check_name(const char *v);        /* [A-Za-z0-9_.-]{1,64} */
const char *check_route_group(const char *v); /* "" or a name */
const char *check_ns_name(const char *v);     /* [a-z0-9_-]{1,64} */
const char *check_http_url(const char *v);    /* "" or http(s)://host... */
const char *check_model_ref(const char *v);   /* "ns.model" or "model" */
const char *check_ip_or_cidr(const char *v);

/* Parses ?page and ?page_size (answers 400 itself). */
int parse_paging(struct req *r, int64_t *page, int64_t *size) EZ_MUSTCHECK;
/* Escapes LIKE wildcards so a ?q= search is literal. Caller frees. */
char *like_escape(const char *q);

#endif
