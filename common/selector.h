/*
 * Binding selectors: which upstream model a binding resolves to among the
 * models a provider group serves (DATA.md "Binding", the "unique hit" rule).
 * Pure code, no I/O: the worker uses it to validate and to show a binding's
 * resolution; the background uses it to build the binding snapshot's
 * candidates (REDIS.md).
 */
#ifndef EZ_SELECTOR_H
#define EZ_SELECTOR_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Candidate errors as published in the binding snapshot (REDIS.md). */
#define SELECTOR_OK ""
#define SELECTOR_CONFIG_ERROR "config_error"
#define SELECTOR_NO_PROVIDER "no_provider"

/* Longest selector value accepted (bounds the cost of compiling a regex). */
#define SELECTOR_VALUE_MAX 1024

/* True when t is "exact", "normalize_exact" or "regex". */
bool selector_type_valid(const char *t);

/*
 * The normalize_exact form of s: surrounding whitespace trimmed, only what
 * follows the last '/' kept (trimmed again), lower-cased ASCII.
 * "Moonshot/Kimi2" -> "kimi2". The caller frees the result.
 */
char *selector_normalize(const char *s);

/*
 * Checks that value is usable as a regex selector: it compiles as a POSIX
 * extended regex on its own and once anchored as ^(value)$ (so that an
 * unbalanced ')' cannot escape the anchors). Returns 0, or -1 with regerror's
 * reason in err (never the value itself).
 */
int selector_regex_check(const char *value, char *err, size_t errlen);

/*
 * Resolves a selector against the n model ids of a provider group.
 * exact: value equals an id; normalize_exact: equal after selector_normalize
 * on both sides; regex: ^(value)$ matches the whole id. Exactly one distinct
 * id must hit. Returns 0 with *out pointing at that entry of models
 * (borrowed), or -1 (zero or several hits, unknown type, bad regex: a
 * config_error) with *out = NULL.
 */
int selector_resolve(const char *type, const char *value, const char *const *models, size_t n,
                     const char **out);

/*
 * A binding candidate's resolution: for each of the group's active API keys
 * (key_ids, nkeys), "<key id>": upstream model is added to upstreams (an
 * object owned by the caller; left empty on error). Returns SELECTOR_OK,
 * SELECTOR_CONFIG_ERROR (the selector hits zero or several models; checked
 * first, as it is a configuration fault whatever the keys) or
 * SELECTOR_NO_PROVIDER (no active API key). The string is static.
 */
const char *selector_resolve_binding(const char *type, const char *value, const char *const *models,
                                     size_t nmodels, const int64_t *key_ids, size_t nkeys,
                                     cJSON *upstreams);

#endif
