/* Every route handler, grouped by the file that implements it. */
#ifndef EZ_HANDLERS_H
#define EZ_HANDLERS_H

#include "http.h"

/* health.c */
int health_get(struct req *r);
int status_test_get(struct req *r);

/* internal_metrics.c */
int internal_metrics_get(struct req *r);

/* namespaces.c */
int namespaces_list(struct req *r);
int namespaces_create(struct req *r);
int namespaces_get(struct req *r);
int namespaces_update(struct req *r);
int namespaces_delete(struct req *r);

/* -- masters.c, keys.c, tenant.c -- */
/* -- end masters -- */

/* -- provider_groups.c, api_keys.c, models.c, bindings.c -- */
/* -- end providers -- */

/* -- features.c, operation_logs.c, stats.c -- */
/* -- end features -- */

/* -- logs: internal_logs.c, logs.c -- */
/* -- end logs -- */

#endif
