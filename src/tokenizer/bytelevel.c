/* bytelevel.c - a tokenizer of bare bytes: GPT-2 byte-level BPE with no
 * merges, for models trained from scratch without a vocabulary of their own. */
#include "tokenizer.h"
#include "tokenizer/tokenizer_save.h"

#include <stdlib.h>
#include <string.h>

#define EOT_TEXT "<|endoftext|>"
#define EOT_ID 256

graft_status graft_tokenizer_create_bytes(graft_tokenizer **out) {
    if (!out) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_create_bytes: out is NULL");
    *out = NULL;
    graft_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup("<byte-level>"))) {
        free(t);
        return graft_fail(GRAFT_ERR_NOMEM, "byte-level tokenizer: out of memory");
    }
    t->kind = TOK_GPT2_BPE;
    graft_status st = tok_pieces_alloc(t, EOT_ID + 1);
    size_t eot_len = strlen(EOT_TEXT);
    if (st == GRAFT_OK) {
        /* The pool holds the 256 bytes in order, then the special token's text. */
        t->piece_pool = malloc(256 + eot_len);
        t->bpe.added = calloc(1, sizeof *t->bpe.added);
        if (!t->piece_pool || !t->bpe.added || !(t->bpe.added[0].text = strdup(EOT_TEXT)) ||
            !tok_pairmap_init(&t->bpe.merges, 0))
            st = graft_fail(GRAFT_ERR_NOMEM, "byte-level tokenizer: out of memory");
    }
    if (st != GRAFT_OK) {
        if (t->bpe.added && t->bpe.added[0].text) t->bpe.n_added = 1; /* so that free releases it */
        graft_tokenizer_free(t);
        return st;
    }
    for (int b = 0; b < 256; b++) {
        t->piece_pool[b] = (char)b;
        t->piece_off[b] = (size_t)b;
        t->piece_len[b] = 1;
        t->bpe.byte_id[b] = b;
    }
    memcpy(t->piece_pool + 256, EOT_TEXT, eot_len);
    t->piece_off[EOT_ID] = 256;
    t->piece_len[EOT_ID] = (int32_t)eot_len;
    /* The special token is matched verbatim in input text, as HF does. */
    tok_added *a = &t->bpe.added[0];
    a->len = eot_len;
    a->id = EOT_ID;
    t->bpe.n_added = 1;
    for (int c = 0; c <= 256; c++) t->bpe.added_start[c] = c <= (uint8_t)EOT_TEXT[0] ? 0 : 1;
    t->bos = t->eos = EOT_ID;
    *out = t;
    return GRAFT_OK;
}
