/* fuzz_dataset.c - the dataset readers: the input's first byte picks the
 * format (auto, counterfact, zsre, jsonl, hallucination, temporal), the rest
 * is the file (graft_dataset_load). */
#include "fuzz.h"
#include "data/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const formats[] = {NULL, "counterfact", "zsre", "jsonl", "hallucination", "temporal"};
    if (size < 1) return 0;
    const char *fmt = formats[data[0] % 6];
    graft_dataset ds;
    memset(&ds, 0, sizeof ds);
    if (graft_dataset_load(fuzz_file("data.json", data + 1, size - 1), fmt, 1000, &ds) == GRAFT_OK)
        graft_dataset_free(&ds);
    return 0;
}
