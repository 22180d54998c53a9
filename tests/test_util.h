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

/* Last-row logits of a prompt (out: vocab_size floats), through the editor
 * when e != NULL, its key at the last token. */
static inline void test_last_logits(graft_model *m, graft_editor *e, const int *ids, int n, float *out) {
    graft_run *r = NULL;
    graft_run_create(m, n, 1, n, 0, &r);
    int last = n - 1;
    graft_run_set_batch(r, ids, &n, 1, &last, 1);
    if (e) {
        e->ops->attach(e, r);
        e->ops->set_keys(e, &last, 1);
    }
    graft_run_forward(r);
    memcpy(out, r->logits, (size_t)m->cfg.vocab_size * sizeof(float));
    if (e) {
        e->ops->detach(e, r);
        e->ops->set_keys(e, NULL, 0);
    }
    graft_run_free(r);
}

/* A random GPT-2 of the "gpt2-tiny" preset with a 64-id vocabulary and
 * n_layer blocks (NULL if it could not be made: callers CHECK it). */
static inline graft_model *test_tiny_gpt2(int n_layer, uint64_t seed) {
    graft_config c;
    if (graft_config_preset("gpt2-tiny", &c) != GRAFT_OK) return NULL;
    c.vocab_size = 64;
    c.n_layer = n_layer;
    graft_model *m = NULL;
    return graft_model_create_random(&c, seed, 0.2f, &m) == GRAFT_OK ? m : NULL;
}

#endif
