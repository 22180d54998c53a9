/*
 * test_util.h - helpers the editor tests share: text to ids with an optional
 * BOS, and "is the greedy continuation exactly this target" through an
 * editor (NULL: the plain model).
 */
#ifndef GRAFT_TEST_UTIL_H
#define GRAFT_TEST_UTIL_H

#include "edit/editor.h"

#include <stdlib.h>
#include <string.h>

/* ids <- [bos] + encode(text); returns the count (0 on failure). ids must
 * hold the result. */
static inline int test_encode(graft_tokenizer *tok, const char *text, int bos, int *ids) {
    int *raw = NULL;
    size_t n = 0;
    if (graft_tokenize(tok, text, strlen(text), &raw, &n) != GRAFT_OK) return 0;
    int k = 0;
    if (bos) ids[k++] = graft_tokenizer_bos(tok);
    for (size_t i = 0; i < n; i++) ids[k++] = raw[i];
    free(raw);
    return k;
}

static inline int test_greedy_is(graft_model *m, graft_editor *e, const int *p, int np, const int *t, int nt) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = nt;
    o.stop_at_eos = 0;
    int *out = NULL;
    size_t n = 0;
    if (graft_editor_generate(e, m, p, (size_t)np, &o, NULL, NULL, &out, &n) != GRAFT_OK) return 0;
    int ok = n == (size_t)nt && memcmp(out, t, (size_t)nt * sizeof(int)) == 0;
    free(out);
    return ok;
}

#endif
