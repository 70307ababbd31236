/*
 * Redis snapshots for the data plane (REDIS.md): the atomic full rebuild and
 * the incremental publisher the outbox job drives. Both read PostgreSQL's
 * current state, so publishing the same thing twice is harmless.
 * See docs/snapshots.md.
 */
#ifndef EZ_SNAPSHOT_H
#define EZ_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include "config.h"
#include "snapshot_shapes.h"
#include "util.h"

struct bg_ctx;

/* Results of snapshot_apply. */
#define SNAP_OK 0
#define SNAP_ERR_PG (-1)          /* a query failed: nothing is known to be published */
#define SNAP_ERR_REDIS (-2)       /* Redis refused or lost a write: retry later */
#define SNAP_ERR_UNAVAILABLE (-3) /* no Redis connection: nothing was attempted */
#define SNAP_NO_MARKER 1          /* applied, but Redis has no config:version: rebuild owed */

/* The marker of a complete snapshot (bookkeeping keys: common/snapshot_shapes.h). */
#define SNAP_MARKER_KEY "config:version"

/* PostgreSQL advisory lock held by whichever job publishes (outbox, full rebuild). */
#define SNAP_ADVISORY_LOCK 0x657a736e6170LL /* "ezsnap" */

/* A growable set of ids or strings; duplicates are removed when published. */
struct snap_ids {
    int64_t *v;
    size_t n, cap;
};
struct snap_strs {
    char **v;
    size_t n, cap;
};

/* What a batch of outbox rows asks to publish (docs/outbox.md, docs/snapshots.md). */
struct snap_work {
    struct snap_ids keys;           /* child keys: their auth:token entries */
    struct snap_ids key_masters;    /* masters: every auth:token of their keys */
    struct snap_strs del_tokens;    /* token hashes to delete unless a key still has them */
    struct snap_ids masters;        /* auth:master:<id> (deleted when the row is gone) */
    struct snap_ids api_keys;       /* config:providers fields */
    struct snap_ids groups;         /* provider groups: their API keys and binding keys */
    struct snap_ids binding_groups; /* groups whose binding keys are recomputed */
    struct snap_strs binding_keys;  /* config:bindings + meta:models fields "ns.model" */
    struct snap_strs model_names;   /* models: the binding keys whose capability uses them */
    struct snap_ids bindings;       /* binding ids: their current binding key */
    struct snap_ids models;         /* model ids: their current name */
    bool features;                  /* config:features */
};

void snap_work_init(struct snap_work *w);
void snap_work_free(struct snap_work *w);
void snap_ids_add(struct snap_ids *s, int64_t id);
void snap_strs_add(struct snap_strs *s, const char *str);
/* True when w asks for nothing. */
bool snap_work_empty(const struct snap_work *w);

/*
 * Publishes what w names from PostgreSQL's current state, reading through
 * conn inside the caller's transaction (READ COMMITTED), then sets
 * config:version of each resource it touched, ezapi:snapshot:published_at,
 * and PUBLISHes dp:config:refresh. Returns SNAP_OK, SNAP_NO_MARKER (written,
 * but Redis had lost config:version: the caller must run a full rebuild),
 * SNAP_ERR_PG (the caller's transaction is aborted), SNAP_ERR_REDIS (an
 * attempt failed) or SNAP_ERR_UNAVAILABLE (Redis cannot be reached: nothing
 * was tried); on error err holds the reason (no secrets).
 */
int snapshot_apply(struct bg_ctx *ctx, PGconn *conn, struct snap_work *w, char *err, size_t errlen);

/*
 * Full rebuild from one REPEATABLE READ snapshot: every hash written under a
 * temporary key and RENAMEd over the live one, token and master keys
 * reconciled with SCAN, all six versions set, and the outbox rows the
 * snapshot already covered (pending or failed, committed before it) marked
 * done. reason is logged. 0 ok, -1 with job_fail set (or the outage logged).
 * The caller holds the advisory lock and has no transaction open on the
 * main connection.
 */
int snapshot_rebuild(struct bg_ctx *ctx, const char *reason);

/*
 * True when a full rebuild is due now: one failed or never ran in this
 * process, or Redis has no config:version (restarted empty). Sets *reason.
 * Redis errors: false (the next run looks again).
 */
bool snapshot_rebuild_due(struct bg_ctx *ctx, const char **reason);

/* Asks for a full rebuild (outbox resource "all"): snapshot_rebuild_due says so until one succeeds.
 */
void snapshot_request_rebuild(void);

/* Tries the publishing advisory lock on conn. 1 taken, 0 held elsewhere, -1 error (job_fail). */
int snapshot_lock(struct bg_ctx *ctx, PGconn *conn);
void snapshot_unlock(struct bg_ctx *ctx, PGconn *conn);

/* The "snapshot" job: periodic full rebuild every EZ_SYNC_RECONCILE_SECONDS (0 = start only). */
int64_t snapshot_interval_ms(const struct ez_config *cfg);
int snapshot_run(struct bg_ctx *ctx);

#endif
