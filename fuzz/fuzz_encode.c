/* fuzz_encode.c - GPT-2 byte-level BPE on arbitrary bytes (tests/data's real
 * GPT-2 files): encoding never fails and decoding gives the input back, byte
 * for byte (the round-trip property; a violation aborts, which libFuzzer
 * reports). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static graft_tokenizer *tok;
    if (!tok && graft_tokenizer_load(fuzz_data("gpt2-tokenizer"), &tok) != GRAFT_OK) {
        fprintf(stderr, "fuzz_encode: %s\n", graft_last_error());
        abort();
    }
    int *ids = NULL;
    size_t n = 0;
    if (graft_tokenize(tok, (const char *)data, size, &ids, &n) != GRAFT_OK) {
        fprintf(stderr, "fuzz_encode: encoding %zu bytes failed: %s\n", size, graft_last_error());
        abort();
    }
    char *back = NULL;
    size_t len = 0;
    if (graft_detokenize(tok, ids, n, &back, &len) != GRAFT_OK || len != size || (size && memcmp(back, data, size))) {
        fprintf(stderr, "fuzz_encode: %zu bytes -> %zu ids -> %zu bytes, not the input\n", size, n, len);
        abort();
    }
    free(back);
    free(ids);
    return 0;
}
