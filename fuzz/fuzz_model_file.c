/* fuzz_model_file.c - a single-file checkpoint through graft_model_load: GGUF
 * (an input starting with "GGUF") or a llama2.c .bin (anything else). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int gguf = size >= 4 && !memcmp(data, "GGUF", 4);
    graft_model *m = NULL;
    if (graft_model_load(fuzz_file(gguf ? "x.gguf" : "x.bin", data, size), &m) == GRAFT_OK) {
        graft_model_info info;
        graft_model_get_info(m, &info);
        graft_model_free(m);
    }
    return 0;
}
