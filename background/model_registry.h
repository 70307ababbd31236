/*
 * The "model_registry" job: fetches the models.dev registry
 * (EZ_MODEL_REGISTRY_URL), keeps its entries in model_registry_models and its
 * state in model_registry_state, and has meta:models republished so that the
 * registry step of the capability precedence (DATA.md "Model") applies.
 * See docs/model-registry.md.
 */
#ifndef EZ_MODEL_REGISTRY_H
#define EZ_MODEL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

struct bg_ctx;

/* The job's name in the table, and what a worker's kick names. */
#define MODEL_REGISTRY_JOB "model_registry"
/* model_registry_state.source once the registry has been loaded (meta:models_meta.source). */
#define MODEL_REGISTRY_SOURCE "models.dev"
/* Largest registry document accepted (the real one is a few MiB). */
#define MODEL_REGISTRY_MAX_BYTES (32L * 1024 * 1024)
/* Whole fetch, DNS included; and the connection alone. */
#define MODEL_REGISTRY_TIMEOUT_MS 20000L
#define MODEL_REGISTRY_CONNECT_TIMEOUT_MS 5000L
/* The last good copy, inside EZ_MODEL_REGISTRY_CACHE_DIR. */
#define MODEL_REGISTRY_CACHE_FILE "models-dev.json"

/*
 * Every EZ_MODEL_REGISTRY_REFRESH_SECONDS, at start and when kicked. While
 * the registry is disabled a run only makes sure nothing of it is stored.
 */
int64_t model_registry_interval_ms(const struct ez_config *cfg);
int model_registry_run(struct bg_ctx *ctx);
/* Waits for a fetch still in flight (bounded by MODEL_REGISTRY_TIMEOUT_MS) and frees it. */
void model_registry_fini(struct bg_ctx *ctx);

/* The registry version of a document: the first 12 hex digits of its SHA-256. Pure. */
void model_registry_version(const char *body, size_t len, char out[13]);

#endif
