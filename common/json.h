/* Strict JSON input on top of cJSON: UTF-8, depth, duplicate keys, NUL escapes. */
#ifndef EZ_JSON_H
#define EZ_JSON_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define JSON_MAX_DEPTH 32
/* Integers above 2^53 cannot round-trip through cJSON's double: refused as out of range. */
#define JSON_MAX_SAFE_INT 9007199254740991LL

/*
 * Parses body (len bytes) strictly: valid UTF-8 without NUL bytes or \u0000
 * escapes, nesting at most JSON_MAX_DEPTH, no duplicate keys in any object,
 * nothing but whitespace after the value. On success *out is the tree (the
 * caller frees it with cJSON_Delete) and 0 is returned; otherwise -1 with a
 * short reason (no input echoed) in err.
 */
int json_parse_strict(const char *body, size_t len, cJSON **out, char *err,
                      size_t errlen) EZ_MUSTCHECK;

/* True when item is a number that is a whole value within [min, max]. */
bool json_int_in(const cJSON *item, int64_t min, int64_t max, int64_t *out);

/* True when the JSON list holds the string s. */
bool json_list_has(const cJSON *list, const char *s);

/* Renders item compactly; the caller frees the string with free(). */
char *json_render(const cJSON *item);

#endif
