/* Per-thread worker state: every connection a request may use, owned by its thread. */
#ifndef EZ_WCTX_H
#define EZ_WCTX_H

#include "config.h"
#include "db.h"
#include "rds.h"

struct wctx {
    const struct ez_config *cfg;
    struct ez_db db;     /* main PostgreSQL */
    struct ez_db log_db; /* log PostgreSQL (same DSN as db when no separate log DB) */
    struct ez_rds redis;
    void *zmq_ctx;  /* the process's ZeroMQ context (shared, thread-safe) */
    void *zmq_sock; /* this thread's DEALER to the background, or NULL */
};

/* The thread's DEALER socket, connected lazily. NULL when ZeroMQ failed. */
void *wctx_zmq(struct wctx *w);
/* Tells the background the outbox has rows (fire and forget). */
void wctx_nudge_background(struct wctx *w);

#endif
