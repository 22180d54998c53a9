/* fuzz_config.c - config.json of a Hugging Face folder (graft_config_from_json). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    graft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    graft_config_from_json(&cfg, text, "config.json");
    free(text);
    return 0;
}
