/*
 * train_impl.h - the pieces of the trainer, shared between its sources:
 * data (data.c), optimiser (optim.c), checkpoints (ckpt.c), log, loss curve
 * and progress (report.c), and the training loop (train.c).
 */
#ifndef GRAFT_TRAIN_IMPL_H
#define GRAFT_TRAIN_IMPL_H

#include "train/train.h"

#include <stdio.h>

/* ================================================================ random numbers */

/* splitmix64: the whole generator state is one integer, so checkpoints store
 * it exactly and every platform draws the same numbers. */
uint64_t train_rand(uint64_t *state);
/* Uniform integer in [0, n) without modulo bias. */
uint64_t train_rand_below(uint64_t *state, uint64_t n);
/* The generator state that shuffles epoch e. */
uint64_t train_epoch_rng(uint64_t seed, long epoch);

/* ================================================================ data */

/* One training sequence: tok[off .. off+len). Rows i (0 <= i < len-1)
 * predict token i+1; those with i+1 < n_prompt predict prompt tokens (or
 * BOS), weighted by prompt_weight, the others by 1. */
typedef struct train_seq {
    size_t off;
    int len;
    int n_prompt;
} train_seq;

typedef struct train_data {
    char *path;             /* absolute path when it could be resolved */
    bool jsonl;
    size_t bytes;           /* file size and FNV-1a hash: a resumed run checks */
    uint64_t hash;          /* that the file is the one it started with */
    int *tok;
    size_t n_tok;
    train_seq *seq;
    int n_seq;
    int *train, n_train;    /* sequence indices of each split, ascending */
    int *val, n_val;
} train_data;

/* Read and tokenize path into sequences of at most seq_len tokens. JSONL rows
 * become BOS? + prompt + answer + EOS (or BOS? + text + EOS); plain text is
 * one token stream cut into windows of seq_len tokens overlapping by one, so
 * every token but the first is predicted once. eos/bos < 0: none. */
graft_status train_data_load(train_data *d, const char *path, const graft_tokenizer *tok, int bos, int eos,
                             int seq_len, int vocab_size);
/* Hold out round(val_frac * n) sequences (at least 1 when val_frac > 0),
 * chosen by seed. */
graft_status train_data_split(train_data *d, double val_frac, uint64_t seed);
void train_data_free(train_data *d);
/* FNV-1a 64 of a buffer. */
uint64_t train_fnv1a(const void *p, size_t n);

/* The training order of an epoch: a Fisher-Yates shuffle of the training
 * split drawn from rng (which is advanced). */
void train_shuffle(const train_data *d, int *perm, uint64_t *rng);
/* How many sequences of perm[cursor..n) go in the next batch: whole
 * sequences, in order, while they fit in batch_tokens (at least one). */
int train_pack(const train_data *d, const int *perm, int n, int cursor, int batch_tokens);

/* ================================================================ optimiser */

typedef struct train_adamw {
    int n;             /* parameter tensors, in the model's table order */
    float **m, **v;    /* first and second moments */
    bool *decay;       /* weight decay applies */
    size_t *numel;
    float *slab;
    double *partial;   /* per-chunk sums of squares (deterministic norm) */
    size_t n_chunks;
    long t;            /* steps taken */
} train_adamw;

graft_status train_adamw_init(train_adamw *o, const graft_param_table *params);
void train_adamw_free(train_adamw *o);
/* Global L2 norm of all gradients, summed in a fixed order (independent of
 * the thread count). */
double train_grad_norm(train_adamw *o, const graft_grads *g);
/* One AdamW step (PyTorch's formulation) with gradients multiplied by
 * grad_scale (clipping). */
void train_adamw_step(train_adamw *o, graft_param_table *params, const graft_grads *g, double lr, double grad_scale,
                      double beta1, double beta2, double eps, double wd);
/* Whether a parameter gets weight decay: 2-D matrices except the token and
 * position embeddings. */
bool train_param_decays(const graft_param *p);

/* ================================================================ history, log, curve */

typedef struct train_point {
    long step;
    double loss;
} train_point;

typedef struct train_hist {
    train_point *p;
    size_t n, cap;
} train_hist;

bool train_hist_push(train_hist *h, long step, double loss);
void train_hist_free(train_hist *h);

/* Write OUT/loss.svg from the two histories (atomically). */
graft_status train_write_svg(const char *path, const train_hist *train, const train_hist *val);
/* Keep the lines of the log with step <= step (a resumed run rewinds it to
 * its checkpoint) and refill the histories from them. A missing log is
 * empty. */
graft_status train_log_rewind(const char *path, long step, train_hist *train, train_hist *val);

typedef struct train_progress {
    bool on, tty, started;
    graft_progress bar;
} train_progress;

void train_progress_init(train_progress *p, bool on);
/* The bar, from step `step` of `total` (at most 4 redraws a second on a
 * terminal, a plain line every ~5% otherwise). */
void train_progress_start(train_progress *p, long step, long total);
void train_progress_step(train_progress *p, long step, double loss, double tok_s);
/* A line of its own above the bar. */
void train_progress_note(train_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void train_progress_end(train_progress *p);

double train_now(void);

/* ================================================================ checkpoints */

/* Where a run stands, and the resolved options it runs with: everything a
 * resumed run needs besides the weights and the optimiser moments. */
typedef struct train_state {
    graft_train_opts o;      /* resolved; o.data_path/o.out_dir are not stored */
    long step, total_steps;
    long epoch;              /* the epoch being drawn from */
    int cursor;              /* next position in that epoch's order */
    uint64_t epoch_rng;      /* generator state that shuffled that epoch */
    long tokens_seen;
    double elapsed_s;        /* training time of all sessions so far */
    long adam_t;
    int rope_interleaved;    /* llama2.c RoPE: the saved q/k rows are permuted */
    char tokenizer_file[32]; /* "tokenizer.json" or "tokenizer.bin" */
    char *data_path;         /* owned */
    size_t data_bytes;
    uint64_t data_hash;
    int n_seq, n_train, n_val;
} train_state;

/* Write OUT/checkpoint atomically: everything goes into a fresh
 * OUT/checkpoint.tmp, which then replaces OUT/checkpoint in one rename (an
 * exchange where the filesystem has one); a crash at any point leaves the
 * previous checkpoint whole (in checkpoint/, or checkpoint.old/ in the
 * instant between the two renames of the fallback). */
graft_status train_ckpt_write(const char *out_dir, const graft_model *m, const train_adamw *opt, const train_state *s);
/* The folder holding the latest complete checkpoint under out_dir
 * (malloc'ed), or GRAFT_ERR_IO when there is none. */
graft_status train_ckpt_find(const char *out_dir, char **dir);
graft_status train_state_read(const char *ckpt_dir, train_state *s);
void train_state_free(train_state *s);
/* Fill the moments from ckpt_dir/optimizer.safetensors. */
graft_status train_adamw_load(train_adamw *o, const graft_param_table *params, const char *ckpt_dir);

#endif /* GRAFT_TRAIN_IMPL_H */
