/* libFuzzer target: path normalisation, query decoding and route matching on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "http.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char *path = NULL;
    if (http_normalize_path(s, &path) == EZ_OK) {
        char allow[128];
        (void)router_auth_for_path(path);
        (void)router_match("GET", path, allow, sizeof(allow));
        (void)router_match("POST", path, allow, sizeof(allow));
        free(path);
    }
    if (http_percent_decode(s, true) == EZ_OK)
        (void)strlen(s);
    free(s);
    return 0;
}
