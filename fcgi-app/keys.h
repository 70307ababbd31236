/*
 * What the tenant API (tenant.c) shares with the admin API: the child-key
 * resource of keys.c, scoped to one master, and the master views of masters.c.
 * The admin routes pass the master of the path (/admin/masters/:id/keys), the
 * tenant routes the caller (r->master_id); the code behind them is the same.
 * Every function answers the request itself (exactly one response) and
 * returns 0, or -1 after answering an error.
 */
#ifndef EZ_KEYS_H
#define EZ_KEYS_H

#include <cJSON.h>
#include <libpq-fe.h>
#include "http.h"

/* keys.c: list / issue / read / update / delete / rotate a key of master_id. */
int keys_list_for(struct req *r, int64_t master_id);
int keys_create_for(struct req *r, int64_t master_id);
int keys_get_for(struct req *r, int64_t master_id, int64_t key_id);
int keys_update_for(struct req *r, int64_t master_id, int64_t key_id);
int keys_delete_for(struct req *r, int64_t master_id, int64_t key_id);
/* POST .../rotate {"grace_seconds": 0..86400}: 200 with the key and its new `token`. */
int keys_rotate_for(struct req *r, int64_t master_id, int64_t key_id);

/* masters.c: the master as the API renders it (no secrets), or NULL when missing or on error. */
cJSON *masters_fetch_json(struct req *r, PGconn *c, int64_t id);
/* masters.c: GET .../realtime of master_id from the data plane's Redis counters. */
int masters_realtime_reply(struct req *r, int64_t master_id);

#endif
