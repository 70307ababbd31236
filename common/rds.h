/* Redis connections (hiredis) that heal themselves. */
#ifndef EZ_RDS_H
#define EZ_RDS_H

#include <hiredis.h>
#include "util.h"

struct ez_rds {
    const char *addr;     /* host:port, borrowed */
    const char *password; /* borrowed */
    int db;
    redisContext *ctx;
    int64_t last_attempt_ms;
    bool quiet; /* an outage the owner reported goes on: connect failures logged at debug */
};

void rds_init(struct ez_rds *r, const char *addr, const char *password, int db);
/* Usable context or NULL (reconnect throttled like db_get). 1 s command timeout. */
redisContext *rds_get(struct ez_rds *r);
/* Call after a failed command: a context with an error is dropped, never reused. */
void rds_check(struct ez_rds *r);
void rds_close(struct ez_rds *r);

#endif
