/* libFuzzer target: the strict JSON body parser must never crash, leak or accept junk silently. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[128];
    cJSON *root = NULL;
    if (json_parse_strict((const char *)data, size, &root, err, sizeof(err)) == EZ_OK) {
        char *s = json_render(root);
        free(s);
        cJSON_Delete(root);
    }
    return 0;
}
