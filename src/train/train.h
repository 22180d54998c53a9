/*
 * train.h - full-parameter training and fine-tuning of GPT-2 and Llama
 * models on graft's own forward/backward engine (internal; used by
 * `graft train` and the tests). docs/TRAINING.md describes the options, the
 * data formats and the checkpoint layout for users.
 *
 * A run reads a data file, tokenizes it into sequences, keeps a seeded
 * validation split apart, and takes AdamW steps on packed batches of whole
 * sequences. Everything it writes lives in one output folder:
 *   OUT/                 the final model as a Hugging Face folder
 *   OUT/checkpoint/      the latest checkpoint (an HF folder too, plus the
 *                        optimiser moments and trainer_state.json)
 *   OUT/train_log.jsonl  one JSON object per step
 *   OUT/loss.svg         train and validation loss against step
 * For the same data, options, seed and thread count a run gives the same
 * bytes, and a run interrupted and resumed from a checkpoint ends with the
 * same weights as one that never stopped.
 */
#ifndef GRAFT_TRAIN_H
#define GRAFT_TRAIN_H

#include "engine.h"

#include <signal.h>

typedef struct graft_train_opts {
    const char *data_path;  /* .jsonl/.ndjson: rows; anything else: plain text */
    const char *out_dir;
    double val_frac;        /* fraction of sequences held out (default 0.05) */
    long steps;             /* optimiser steps; 0: use epochs */
    double epochs;          /* passes over the training split when steps == 0 (default 1) */
    int seq_len;            /* longest sequence / text window; 0: min(n_ctx, 256) */
    int batch_tokens;       /* tokens per optimiser step, at most (default 4096) */
    int micro_tokens;       /* tokens per forward/backward pass; 0: auto (memory bound) */
    double lr;              /* peak learning rate (default 3e-4) */
    double min_lr;          /* cosine floor; < 0: lr / 10 */
    long warmup;            /* linear warmup steps; < 0: 5% of the steps */
    double wd;              /* decoupled weight decay on 2-D weight matrices (default 0.1) */
    double beta1, beta2, eps; /* AdamW (0.9, 0.95, 1e-8) */
    double clip;            /* global gradient-norm clip; 0: off (default 1.0) */
    double prompt_weight;   /* loss weight of tokens predicting prompt tokens (default 0) */
    uint64_t seed;          /* validation split and per-epoch shuffles (default 1234) */
    int threads;            /* <= 0: all CPUs */
    long eval_every;        /* validation every N steps; 0: about 10 times per run */
    long ckpt_every;        /* checkpoint every N steps; 0: about 5 times per run */
    graft_dtype dtype;      /* dtype of the final model.safetensors (F32, F16, BF16) */
    long stop_after;        /* > 0: checkpoint and stop after this step, as if interrupted */
    int progress;           /* progress on stderr: 1 yes */
    volatile sig_atomic_t *interrupt; /* non-zero: checkpoint and stop at the next step */
} graft_train_opts;

void graft_train_opts_default(graft_train_opts *o);

/* What a resumed run may change; zero/negative fields keep the checkpoint's. */
typedef struct graft_train_resume_opts {
    const char *data_path;  /* NULL: the checkpoint's; another path must hold the same bytes */
    int threads;            /* 0: the checkpoint's thread count (needed for bit-identical results) */
    long steps;             /* 0: the checkpoint's total; another total changes the schedule */
    long eval_every, ckpt_every;
    int dtype;              /* -1: the checkpoint's */
    long stop_after;
    int progress;
    volatile sig_atomic_t *interrupt;
} graft_train_resume_opts;

void graft_train_resume_opts_default(graft_train_resume_opts *o);

typedef struct graft_train_result {
    long step, total_steps; /* where the run stands */
    int finished;           /* 1: all steps done and the final model written; 0: stopped at a checkpoint */
    double first_loss;      /* train loss of step 1 */
    double last_loss;       /* mean train loss of the last (up to) 10 steps */
    double first_val_loss;  /* validation loss before step 1 (NAN: no validation split) */
    double val_loss;        /* the last validation loss (NAN: none) */
    long n_train, n_val;    /* sequences in each split */
    double wall_s;          /* wall time of this call */
    double tokens_per_s;    /* tokens through forward+backward per second, this call */
    long tokens;            /* tokens trained on in this call */
} graft_train_result;

/*
 * A fresh model for training from scratch: weights N(0, 0.02), norms 1,
 * biases 0, and the residual output projections (GPT-2 attn.c_proj and
 * mlp.c_proj, Llama o_proj and down_proj) scaled by 1/sqrt(2 n_layer), the
 * GPT-2 initialisation. Deterministic in seed.
 */
graft_status graft_train_init_model(const graft_config *cfg, uint64_t seed, graft_model **out);

/*
 * Train m (which must carry its tokenizer: graft_model_set_tokenizer) with
 * opts. The weights of m are updated in place. Fails with GRAFT_ERR_INVALID
 * if opts->out_dir already holds a checkpoint (resume it instead).
 */
graft_status graft_train(graft_model *m, const graft_train_opts *opts, graft_train_result *res);

/* Continue the run whose checkpoint is in out_dir/checkpoint. */
graft_status graft_train_resume(const char *out_dir, const graft_train_resume_opts *ro, graft_train_result *res);

/* Learning rate of 1-based step `step`: linear warmup to lr over `warmup`
 * steps, then cosine decay to min_lr at step `total`. */
double graft_train_lr_at(long step, long total, long warmup, double lr, double min_lr);

#endif /* GRAFT_TRAIN_H */
