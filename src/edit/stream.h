/*
 * stream.h - lifelong editing runs: a stream of edit requests applied in
 * order, each journaled before it counts, with the field's metrics measured
 * at evaluation points (shared/docs/algorithms.md section 6).
 *
 * Metrics, each under two definitions, named in every output:
 *   tf  = teacher-forced token accuracy (EasyEdit): the fraction of target
 *         tokens that are the argmax given the prompt and the true previous
 *         target tokens;
 *   gen = exact-match greedy generation (GRACE): the n_target greedy tokens
 *         after the prompt equal the target.
 *   ES   the edit just applied (mean over the edits since the last point);
 *   ERR  all edits so far (or an even sample of --err-sample of them);
 *   TRR  upstream prompts: agreement with the unedited model's predictions
 *        (locality pairs of the stream, or --upstream FILE);
 *   GEN  rephrased prompts of the edits so far produce the target;
 *   PPL  upstream perplexity on a text (--ppl-text), GRACE's convention.
 */
#ifndef GRAFT_STREAM_H
#define GRAFT_STREAM_H

#include "editor.h"

typedef enum { GRAFT_EVAL_EVERY = 0, GRAFT_EVAL_EACH, GRAFT_EVAL_END } graft_eval_at;

typedef struct graft_stream_opts {
    const char *model_path;   /* recorded in the journal's meta */
    const char *data_path;
    const char *format;       /* NULL: auto */
    long n;                   /* edits to apply (0: all) */
    int eval_every;           /* K */
    graft_eval_at eval_at;
    int batch;                /* edits per step (GRACE: 1) */
    uint64_t seed;
    const char *out_dir;
    int resume;
    const char *method;       /* "grace" */
    const char *editor_opts;  /* JSON */
    const char *upstream_path; /* JSONL {prompt, answer|target}; NULL: the stream's locality pairs */
    long upstream_n;          /* cap (0: 500) */
    const char *ppl_path;     /* NULL: no perplexity */
    long ppl_tokens;          /* cap (0: 4096) */
    long err_sample;          /* 0: every edit at every point */
    int progress;
    int require_success;      /* an edit that did not reproduce its target is an error */
} graft_stream_opts;

void graft_stream_opts_default(graft_stream_opts *o);
/* The editor options for `method` on the model in model_path: the user's JSON
 * (NULL: none) with what MODEL/editing.json gives for that method filled in
 * (options given win). *merged is malloc'ed, or NULL when the model folder
 * has no editing.json (use the user's options as they are). */
graft_status graft_edit_model_defaults(const char *model_path, const char *method, const char *user, char **merged);
graft_status graft_stream_run(graft_model *m, const graft_stream_opts *o);

#endif
