/* Redis keep-alive job: holds the connection later jobs use and notices outages early. */
#include <string.h>
#include "bg.h"
#include "jobs.h"
#include "log.h"

#define REDIS_PING_MS 5000

int64_t redis_ping_interval_ms(const struct ez_config *cfg)
{
    (void)cfg;
    return REDIS_PING_MS;
}

/* PING on the shared connection; an error drops it so the next run reconnects. */
int redis_ping_run(struct bg_ctx *ctx)
{
    redisReply *reply = NULL;
    int rc = EZ_ERR;

    redisContext *c = bg_redis(ctx);
    if (c == NULL)
        return EZ_ERR; /* outage logged once by bg_redis */

    reply = redisCommand(c, "PING");
    if (reply == NULL) {
        rc = job_fail(ctx, "redis PING failed: %s", c->errstr);
        rds_check(&ctx->redis);
        goto out;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        rc = job_fail(ctx, "redis PING failed: %s", reply->str);
        goto out;
    }
    rc = EZ_OK;
out:
    if (reply)
        freeReplyObject(reply);
    return rc;
}
