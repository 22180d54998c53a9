/*
 * eval.h - measuring a model through an editor: teacher-forced predictions
 * (EasyEdit's token accuracy), greedy generation (GRACE's exact match) and
 * perplexity, on (prompt, target) items in tokens.
 */
#ifndef GRAFT_EVAL_H
#define GRAFT_EVAL_H

#include "editor.h"

typedef struct graft_eval_item {
    int *prompt;
    int n_prompt;
    int *target;
    int n_target;
} graft_eval_item;

/*
 * Tokenize a (prompt, target) pair the way every editor and metric in graft
 * does: prompt = [BOS if the tokenizer's models expect one] + its tokens;
 * target = the tokens that follow the prompt's when prompt and target are
 * encoded as one text (graft_tokenize_pair: one space joins them unless
 * either side has whitespace there). A SentencePiece target thus never
 * carries a dummy-prefix piece the model would not emit mid-text.
 */
graft_status graft_encode_pair(graft_tokenizer *tok, const char *prompt, const char *target, graft_eval_item *it);
void graft_eval_item_free(graft_eval_item *it);
/* Index of the last token of `subject` inside the encoded prompt (as
 * graft_encode_pair encodes it), or -1 when the subject is not in the prompt. */
int graft_subject_last(graft_tokenizer *tok, const char *prompt, const char *subject);

/* Teacher forcing: pred receives, item after item, the argmax at each target
 * position (sum of n_target ints). The key of each item is its last prompt
 * token. e may be NULL (the unedited model). */
graft_status graft_eval_tf(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *pred);
/* Teacher forcing: the summed NLL (nats) of each item's target tokens given
 * its prompt, into nll[n] (CounterFact's NLL(new) vs NLL(true) comparisons). */
graft_status graft_eval_seq_nll(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, double *nll);
/* Greedy generation of n_target tokens after each prompt; gen as pred.
 * Where it is provably the same thing (the teacher-forced argmax is the
 * target at every position, leading by a margin rounding cannot overturn,
 * and the editor acts alike in both passes) generation is read off one
 * packed teacher-forced pass; every other item is generated token by token. */
graft_status graft_eval_gen(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *gen);
/* Both at once (the teacher-forced predictions come from the same pass). */
graft_status graft_eval_tf_gen(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *tf, int *gen);
/* Mean NLL of a token stream in non-overlapping windows of `window` tokens,
 * through the editor with each window's key at its last token (GRACE's
 * upstream convention). */
graft_status graft_eval_nll(graft_model *m, graft_editor *e, const int *ids, size_t n, int window, double *nll,
                            size_t *count);

#endif
