/* Shared-memory request metrics and their Prometheus / JSON rendering. */
#include "metrics.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include "log.h"
#include "router.h"

/* Status codes tracked one by one; anything else falls in the last slot ("other"). */
static const int tracked_status[] = {200, 201, 202, 204, 400, 401, 403, 404,
                                     405, 409, 413, 415, 429, 500, 503, 0};
#define NSTATUS ((int)EZ_ARRAY_LEN(tracked_status))
/* Histogram bucket upper bounds in seconds (Prometheus convention: cumulative). */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,   0.1,   0.25,   0.5,   1,    2.5};
#define NBUCKETS ((int)EZ_ARRAY_LEN(bucket_le))

struct route_metrics {
    uint64_t count[NSTATUS];
    uint64_t bucket[NBUCKETS + 1]; /* last = +Inf */
    uint64_t sum_us;
};

static struct route_metrics *shared;
static int nslots;

int metrics_init(int nroutes)
{
    nslots = nroutes + 1;
    size_t size = (size_t)nslots * sizeof(struct route_metrics);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        log_error("event=metrics_mmap_failed");
        return EZ_ERR;
    }
    memset(p, 0, size);
    shared = p;
    return EZ_OK;
}

static int status_slot(int status)
{
    for (int i = 0; i < NSTATUS - 1; i++)
        if (tracked_status[i] == status)
            return i;
    return NSTATUS - 1;
}

void metrics_observe(int route_index, int status, int64_t duration_us)
{
    if (shared == NULL)
        return;
    int slot = route_index >= 0 && route_index < nslots - 1 ? route_index : nslots - 1;
    struct route_metrics *m = &shared[slot];
    __atomic_add_fetch(&m->count[status_slot(status)], 1, __ATOMIC_RELAXED);
    double secs = (double)duration_us / 1e6;
    int b = 0;
    while (b < NBUCKETS && secs > bucket_le[b])
        b++;
    __atomic_add_fetch(&m->bucket[b], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->sum_us, (uint64_t)(duration_us > 0 ? duration_us : 0), __ATOMIC_RELAXED);
}

static void route_label(int slot, char *out, size_t len)
{
    if (slot < nslots - 1)
        snprintf(out, len, "%s %s", router_routes[slot].method, router_routes[slot].pattern);
    else
        snprintf(out, len, "unmatched");
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void metrics_render_prometheus(buf_t *out)
{
    char label[160];
    buf_puts(out, "# HELP ezapi_http_requests_total HTTP requests by route and status.\n"
                  "# TYPE ezapi_http_requests_total counter\n");
    for (int s = 0; shared && s < nslots; s++) {
        route_label(s, label, sizeof(label));
        for (int i = 0; i < NSTATUS; i++) {
            uint64_t v = load(&shared[s].count[i]);
            if (v == 0)
                continue;
            if (tracked_status[i])
                buf_printf(out, "ezapi_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                           label, tracked_status[i], (unsigned long long)v);
            else
                buf_printf(out, "ezapi_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                           label, (unsigned long long)v);
        }
    }
    buf_puts(out,
             "# HELP ezapi_http_request_duration_seconds Request handling time in the worker.\n"
             "# TYPE ezapi_http_request_duration_seconds histogram\n");
    for (int s = 0; shared && s < nslots; s++) {
        uint64_t total = 0;
        for (int b = 0; b <= NBUCKETS; b++)
            total += load(&shared[s].bucket[b]);
        if (total == 0)
            continue;
        route_label(s, label, sizeof(label));
        uint64_t cum = 0;
        for (int b = 0; b < NBUCKETS; b++) {
            cum += load(&shared[s].bucket[b]);
            buf_printf(out,
                       "ezapi_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                       label, bucket_le[b], (unsigned long long)cum);
        }
        buf_printf(out,
                   "ezapi_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                   "ezapi_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                   "ezapi_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                   label, (unsigned long long)total, label, (double)load(&shared[s].sum_us) / 1e6,
                   label, (unsigned long long)total);
    }
}

void metrics_render_json(void *obj)
{
    cJSON *root = obj;
    cJSON *reqs = cJSON_AddArrayToObject(root, "http_requests");
    char label[160];
    for (int s = 0; shared && s < nslots; s++) {
        route_label(s, label, sizeof(label));
        for (int i = 0; i < NSTATUS; i++) {
            uint64_t v = load(&shared[s].count[i]);
            if (v == 0)
                continue;
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "route", label);
            if (tracked_status[i])
                cJSON_AddNumberToObject(row, "status", tracked_status[i]);
            else
                cJSON_AddStringToObject(row, "status", "other");
            cJSON_AddNumberToObject(row, "count", (double)v);
            cJSON_AddItemToArray(reqs, row);
        }
    }
}
