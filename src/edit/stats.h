/*
 * stats.h - second-moment statistics C = E[k k^T] of the MLP down-projection
 * inputs (the ROME/MEMIT "keys", site MLP_ACT), over every token of a text
 * corpus (shared/docs/algorithms.md 4.1c). Computed once per model and reused
 * by every closed-form edit: ROME solves with C, MEMIT and EMMET with
 * lambda C + K K^T.
 *
 * The corpus is read in chunks that end at a line break, each tokenized on
 * its own, and the token stream is cut into consecutive windows of the
 * model's context (llama-family models get a BOS in front of every window;
 * its row is not counted). Sums are accumulated in double: each window's
 * K^T K is one float GEMM (<= n_ctx rows), added into double accumulators.
 *
 * Long runs are resumable: every checkpoint_every_s seconds the partial sums
 * and the position in the corpus are written atomically to OUT.ckpt; a run
 * started with resume = 1 continues from it and ends with exactly the sums an
 * uninterrupted run would have (the same windows, added in the same order).
 *
 * The output is safetensors: per layer l, "layer.{l}.mom2" F32 [F, F] (the
 * mean, symmetric) and "layer.{l}.count" F32 [1]; metadata token_count,
 * corpus, model, fingerprint (graft_model_fingerprint), layers, site, window.
 */
#ifndef GRAFT_STATS_H
#define GRAFT_STATS_H

#include "internal.h"

typedef struct graft_stats_opts {
    const char *corpus;         /* a UTF-8 text file */
    const char *out;            /* the .safetensors to write; the checkpoint is OUT.ckpt */
    const int *layers;          /* NULL / n_layers 0: the layers the weight editors use by default */
    int n_layers;
    int64_t max_tokens;         /* count at most this many tokens (0: the whole corpus) */
    int window;                 /* tokens per forward pass, BOS included (0: the model's context) */
    int resume;                 /* continue from OUT.ckpt (an error when it is absent or made otherwise) */
    int progress;               /* a progress bar on stderr */
    double checkpoint_every_s;  /* seconds between checkpoints (300); <= 0: after every window */
    int64_t stop_after_windows; /* testing: checkpoint and return (finished = 0) after this many windows */
    const char *model_name;     /* the "model" metadata entry (e.g. the model path) */
} graft_stats_opts;

typedef struct graft_stats_result {
    int64_t tokens;  /* tokens counted so far (all sessions) */
    int64_t windows; /* forward passes so far */
    int64_t tokens_run; /* tokens counted by this call */
    double seconds;  /* wall time of this call */
    int finished;    /* the output file is written (0: stopped early, checkpoint kept) */
} graft_stats_result;

void graft_stats_opts_default(graft_stats_opts *o);
graft_status graft_stats_compute(graft_model *m, const graft_stats_opts *o, graft_stats_result *res);

/* Parse a layer list: "3", "3-5", "2,4,7", "all". Up to max entries. */
graft_status graft_parse_layers(const char *s, int n_layer, int *layers, int *n, int max);

/*
 * Load layer `layer`'s second moment from a stats file as a malloc'ed double
 * [F*F] (symmetric) and its token count. Checks the tensor's shape against the
 * model and, when the file records one, the model fingerprint. With mom2 NULL
 * it only checks (editors do so when they are created, so a wrong file is
 * named before the first edit rather than inside it).
 */
graft_status graft_stats_load(const char *path, const graft_model *m, int layer, double **mom2, int64_t *count);

#endif
