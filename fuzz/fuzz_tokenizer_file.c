/* fuzz_tokenizer_file.c - tokenizer files: the input's first byte picks which
 * (tokenizer.json, a llama2.c tokenizer.bin, or vocab.json + merges.txt split
 * at the first NUL byte), the rest is the file. tok_load_mem runs the loaders
 * graft_tokenizer_load runs on the files' contents, on the input in place (no
 * file per input). A tokenizer that loads must also encode and decode a fixed
 * text. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] % 3;
    data++, size--;
    static const int kinds[] = {TOK_MEM_JSON, TOK_MEM_LLAMA2C, TOK_MEM_PAIR};
    static const char *const names[] = {"tokenizer.json", "tokenizer.bin", "vocab.json"};
    const uint8_t *b = NULL;
    size_t na = size, nb = 0;
    if (kind == 2) {
        const uint8_t *nul = memchr(data, 0, size);
        na = nul ? (size_t)(nul - data) : size;
        b = nul ? nul + 1 : data + size;
        nb = nul ? size - na - 1 : 0;
    }
    graft_tokenizer *tok = NULL;
    if (tok_load_mem(names[kind], kinds[kind], data, na, b, nb, &tok) == GRAFT_OK) {
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
