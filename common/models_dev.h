/*
 * The models.dev registry format (https://models.dev/api.json) turned into
 * what EZ-API publishes: a flat map {upstream model id -> capability}, the
 * capability having the members of a Model (DATA.md) plus where it came
 * from. Pure code, no I/O: the background's model_registry job feeds it the
 * fetched text and stores the result in model_registry_models; the
 * snapshot publisher turns a stored capability back into a shape_model.
 * See docs/model-registry.md.
 */
#ifndef EZ_MODELS_DEV_H
#define EZ_MODELS_DEV_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include "snapshot_shapes.h"

/* Longest model id kept (longer ids are skipped: no public model could bind to them). */
#define MODELS_DEV_ID_MAX 255
/* USD prices in models.dev are per million tokens. */
#define MODELS_DEV_PRICE_UNIT 1000000.0

/*
 * Parses the text (len bytes, need not be NUL-terminated) of a models.dev
 * api.json: an object {provider id: {"models": {model id: entry}}}.
 * Returns a new object {model id: capability} (the caller owns it) and
 * sets *count to its size; NULL with a short reason in err when the text
 * is not JSON, not an object of providers, or holds no model at all (an
 * empty registry is refused: it would wipe every stored entry).
 *
 * A capability is {"kind", "context_window", "max_output_tokens",
 * "cost_per_token", "supports_vision", "supports_functions",
 * "supports_tool_choice", "supports_fim", "supports_stream", "provider",
 * "display_name"}, numbers only when positive, booleans always present.
 * When one id appears under several providers, the first in document order
 * wins. Providers or entries of the wrong shape, and ids that are empty,
 * longer than MODELS_DEV_ID_MAX or hold control characters, are skipped.
 */
cJSON *models_dev_parse(const char *text, size_t len, size_t *count, char *err, size_t errlen);

/*
 * The capability of one models.dev entry (id is the entry's key, provider
 * the provider's). Always returns an object (the caller owns it).
 */
cJSON *models_dev_capability(const char *id, const char *provider, const cJSON *entry);

/*
 * Reads a stored capability (as models_dev_capability makes it) into out.
 * out->kind borrows from cap. Members that are missing or of the wrong type
 * read as zero / false; kind defaults to "chat". Returns -1 when cap is not
 * an object (out is then zeroed with kind "chat").
 */
int models_dev_to_shape(const cJSON *cap, struct shape_model *out);

#endif
