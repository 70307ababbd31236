/* Every route handler, grouped by the file that implements it. */
#ifndef EZ_HANDLERS_H
#define EZ_HANDLERS_H

#include "http.h"

/* health.c */
int health_get(struct req *r);
int status_test_get(struct req *r);

/* internal_metrics.c */
int internal_metrics_get(struct req *r);

#endif
