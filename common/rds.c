/* Redis connection slots (hiredis) that reconnect by themselves; errors drop the context. */
#include "rds.h"

#include <poll.h>
#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"

#define RDS_RETRY_MS 500

void rds_init(struct ez_rds *r, const char *addr, const char *password, int db)
{
    r->addr = addr;
    r->password = password;
    r->db = db;
    r->ctx = NULL;
    r->last_attempt_ms = 0;
    r->quiet = false;
}

/* Splits "host:port" (the config validated it) into host and port. */
static void split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= hostlen)
        n = hostlen - 1;
    memcpy(host, addr, n);
    host[n] = '\0';
    *port = colon ? atoi(colon + 1) : 6379;
}

static int rds_command_ok(redisContext *c, const char *what, redisReply *reply)
{
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        log_warn("event=redis_%s_failed error=\"%s\"", what, reply ? reply->str : c->errstr);
        return EZ_ERR;
    }
    return EZ_OK;
}

/*
 * Workers and jobs never subscribe, so an idle context has nothing to read:
 * a readable socket means the server closed it (a Redis restart). Dropping it
 * here spares the next command a failure.
 */
static bool idle_ctx_alive(redisContext *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN, .revents = 0};
    return poll(&p, 1, 0) == 0;
}

redisContext *rds_get(struct ez_rds *r)
{
    if (r->ctx && r->ctx->err == 0 && idle_ctx_alive(r->ctx))
        return r->ctx;
    rds_close(r);
    int64_t now = ez_now_ms();
    if (r->last_attempt_ms && now - r->last_attempt_ms < RDS_RETRY_MS)
        return NULL;
    r->last_attempt_ms = now;

    char host[256];
    int port;
    split_addr(r->addr, host, sizeof(host), &port);
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    redisReply *reply = NULL;
    if (c == NULL || c->err) {
        EZ_LOG_AT(r->quiet ? EZ_LOG_DEBUG : EZ_LOG_WARN,
                  "event=redis_connect_failed addr=%s error=\"%s\"", r->addr,
                  c ? c->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(c, tv);
    if (r->password[0]) {
        reply = redisCommand(c, "AUTH %s", r->password);
        if (rds_command_ok(c, "auth", reply) != EZ_OK)
            goto fail;
        freeReplyObject(reply);
        reply = NULL;
    }
    if (r->db != 0) {
        reply = redisCommand(c, "SELECT %d", r->db);
        if (rds_command_ok(c, "select", reply) != EZ_OK)
            goto fail;
        freeReplyObject(reply);
        reply = NULL;
    }
    r->ctx = c;
    r->last_attempt_ms = 0;
    return c;
fail:
    if (reply)
        freeReplyObject(reply);
    if (c)
        redisFree(c);
    return NULL;
}

void rds_check(struct ez_rds *r)
{
    if (r->ctx && r->ctx->err)
        rds_close(r);
}

void rds_close(struct ez_rds *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
}
