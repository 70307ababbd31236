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
int masters_list(struct req *r);
int masters_create(struct req *r);
int masters_batch(struct req *r);
int masters_get(struct req *r);
int masters_update(struct req *r);
int masters_delete(struct req *r);
int masters_manage(struct req *r);
int masters_realtime(struct req *r);
int master_keys_list(struct req *r);
int master_keys_create(struct req *r);
int master_keys_get(struct req *r);
int master_keys_update(struct req *r);
int master_keys_delete(struct req *r);
int master_keys_rotate(struct req *r);
int tenant_self(struct req *r);
int tenant_tokens_list(struct req *r);
int tenant_tokens_create(struct req *r);
int tenant_tokens_get(struct req *r);
int tenant_tokens_update(struct req *r);
int tenant_tokens_delete(struct req *r);
int tenant_tokens_rotate(struct req *r);
int tenant_realtime(struct req *r);
/* -- end masters -- */

/* -- provider_groups.c, api_keys.c, models.c, bindings.c -- */
int provider_groups_list(struct req *r);
int provider_groups_create(struct req *r);
int provider_groups_get(struct req *r);
int provider_groups_update(struct req *r);
int provider_groups_delete(struct req *r);
int api_keys_list(struct req *r);
int api_keys_create(struct req *r);
int api_keys_get(struct req *r);
int api_keys_update(struct req *r);
int api_keys_delete(struct req *r);
int api_keys_batch(struct req *r);
int models_list(struct req *r);
int models_create(struct req *r);
int models_get(struct req *r);
int models_update(struct req *r);
int models_delete(struct req *r);
int models_batch(struct req *r);
/* registry.c */
int registry_get(struct req *r);
int registry_refresh(struct req *r);
int bindings_list(struct req *r);
int bindings_create(struct req *r);
int bindings_get(struct req *r); /* adds "resolved" */
int bindings_update(struct req *r);
int bindings_delete(struct req *r);
int bindings_batch(struct req *r);
/* -- end providers -- */

/* -- features.c, operation_logs.c, stats.c -- */
/* features.c */
int features_get(struct req *r);
int features_put(struct req *r);
/* operation_logs.c */
int operation_logs_list(struct req *r);
/* stats.c */
int stats_get(struct req *r);
/* stats_flush.c */
int stats_flush_post(struct req *r);
/* -- end features -- */

/* -- logs: internal_logs.c, logs.c -- */
/* internal_logs.c */
int internal_logs_post(struct req *r);
/*
 * For /internal/metrics: appends the background's log pipeline counters
 * (Redis hash LOGREC_METRICS_KEY) as Prometheus text to prom and/or as a
 * "log_pipeline" object to json (either may be NULL).
 */
void logs_metrics_append(struct req *r, buf_t *prom, cJSON *json);
/* logs.c */
int logs_list(struct req *r);
int logs_delete(struct req *r);
int logs_stats(struct req *r);
int tenant_logs_list(struct req *r);
int tenant_logs_stats(struct req *r);
/* webhook.c: the error-rate alert's settings and test delivery */
int webhook_get(struct req *r);
int webhook_put(struct req *r);
int webhook_test(struct req *r);
/* -- end logs -- */

/* -- import.c, tenant_stats.c -- */
int import_post(struct req *r);
int tenant_stats(struct req *r);
/* -- end import -- */

#endif
