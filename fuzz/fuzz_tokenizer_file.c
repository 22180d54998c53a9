/* fuzz_tokenizer_file.c - tokenizer files: the input's first byte picks which
 * (tokenizer.json, a llama2.c tokenizer.bin, or vocab.json + merges.txt split
 * at the first NUL byte), the rest is the file. A tokenizer that loads must
 * also encode and decode a fixed text. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] % 3;
    data++, size--;
    const char *path;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tok%d", fuzz_dir(), kind);
    mkdir(dir, 0700);
    char name[400];
    if (kind == 0) {
        snprintf(name, sizeof name, "tok0/tokenizer.json");
        fuzz_file(name, data, size);
        path = dir;
    } else if (kind == 1) {
        path = fuzz_file("tokenizer.bin", data, size);
    } else {
        const uint8_t *nul = memchr(data, 0, size);
        size_t a = nul ? (size_t)(nul - data) : size;
        fuzz_file("tok2/vocab.json", data, a);
        fuzz_file("tok2/merges.txt", nul ? nul + 1 : data + size, nul ? size - a - 1 : 0);
        path = dir;
    }
    graft_tokenizer *tok = NULL;
    if (graft_tokenizer_load(path, &tok) == GRAFT_OK) {
        static const char text[] = "Hello world, caf\xc3\xa9 12345!\n";
        int *ids = NULL;
        size_t n = 0;
        if (graft_tokenize(tok, text, sizeof text - 1, &ids, &n) == GRAFT_OK) {
            char *back = NULL;
            size_t len = 0;
            if (graft_detokenize(tok, ids, n, &back, &len) == GRAFT_OK) free(back);
            free(ids);
        }
        graft_tokenizer_free(tok);
    }
    return 0;
}
