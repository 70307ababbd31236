/*
 * Request counters shared by all worker processes of one server: a
 * MAP_SHARED region made by the supervisor before it forks, updated with
 * atomic adds, so /internal/metrics answers the same whichever process serves it.
 */
#ifndef EZ_METRICS_H
#define EZ_METRICS_H

#include <stdint.h>
#include "util.h"

/* Maps the shared region for nroutes routes (+1 slot for "no route"). Once, before fork. */
int metrics_init(int nroutes) EZ_MUSTCHECK;
/* Counts one finished request: route index (-1 = none), status, duration. */
void metrics_observe(int route_index, int status, int64_t duration_us);
/* Appends the Prometheus text exposition of the request metrics to out. */
void metrics_render_prometheus(buf_t *out);
/* The same as JSON members of obj (a cJSON object; typed void to keep cJSON out of here). */
void metrics_render_json(void *obj);

#endif
