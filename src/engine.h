/*
 * engine.h - the forward and backward passes of graft's transformers.
 *
 * A graft_run holds the activations of one packed batch: several token
 * sequences laid end to end in T rows (no padding), attention causal within
 * each sequence. With train=1 every layer keeps its activations, so a
 * backward pass can follow; with train=0 the layers share one set of buffers
 * (inference at a fraction of the memory).
 *
 * Editors work through two mechanisms:
 *  - hooks at a (layer, site): called on the activation right after it is
 *    computed (forward) and on its gradient (backward); GRACE and MELO read
 *    keys and replace values there;
 *  - the weights themselves (ROME, MEMIT, FT write deltas into model tensors).
 *
 * Editors that optimise something at layer l need only the layers above l:
 * graft_run_forward_from() re-runs from a site using the cached activations
 * below it, and graft_run_backward() stops at a given (layer, site).
 */
#ifndef GRAFT_ENGINE_H
#define GRAFT_ENGINE_H

#include "internal.h"
#include "kernels.h"

/* Activation sites inside block l (the names editors use). */
typedef enum graft_site {
    GRAFT_SITE_BLOCK_IN = 0, /* residual stream entering the block    [T, C]   */
    GRAFT_SITE_MLP_IN,       /* normalised MLP input (ln_2 / post_attention_layernorm) [T, C] */
    GRAFT_SITE_MLP_PRE,      /* up-projection output: GPT-2 c_fc before GELU, Llama up_proj [T, F] */
    GRAFT_SITE_MLP_ACT,      /* input of the down-projection: gelu(pre) / silu(gate)*up [T, F] */
    GRAFT_SITE_MLP_OUT,      /* down-projection output, before the residual add [T, C] */
    GRAFT_N_SITES
} graft_site;

const char *graft_site_name(graft_site s);
/* Parse "block_in", "mlp_in", "mlp_pre", "mlp_act", "mlp_out"; -1 if unknown. */
int graft_site_parse(const char *name);
/* Width of a site's rows (C or F). */
int graft_site_dim(const graft_config *cfg, graft_site s);

typedef struct graft_run graft_run;
typedef struct graft_hook graft_hook;

struct graft_hook {
    int layer;
    graft_site site;
    /* After the site's activation act [T, dim] is computed; may overwrite rows. */
    void (*forward)(graft_hook *h, graft_run *r, float *act, int dim);
    /* With the gradient dact [T, dim] of the loss w.r.t. the (possibly
     * replaced) activation, before it flows further down. A hook that replaced
     * rows takes their gradient and zeroes them (nothing below produced them). */
    void (*backward)(graft_hook *h, graft_run *r, float *dact, int dim);
    void *user;
    graft_hook *next; /* hooks form a list, called in order */
};

/* Per-layer activation buffers. Which are used depends on the architecture. */
typedef struct graft_layer_acts {
    float *in;                  /* [T,C] block input (aliases the previous block's out) */
    float *ln1, *ln1_mean, *ln1_rstd;
    float *q, *k, *v;           /* q [T,H*D] (ld ldq), k/v [T,KV*D] (ld ldkv), after RoPE */
    float *qkv;                 /* GPT-2: fused [T,3C]; q/k/v point into it */
    float *att;                 /* attention probabilities (train only) */
    float *atty;                /* [T,H*D] attention output before the out-projection */
    float *mid;                 /* [T,C] residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *pre;                 /* [T,F] c_fc out / up_proj out */
    float *gate;                /* [T,F] Llama gate_proj out */
    float *act;                 /* [T,F] input of down-projection */
    float *mlp_out;             /* [T,C] */
    float *out;                 /* [T,C] block output */
} graft_layer_acts;

/* A KV cache for generation: one sequence, up to n_ctx positions. */
typedef struct graft_kv {
    int n_ctx, len;     /* capacity and filled positions */
    int kv_dim;         /* KV*D */
    float *k, *v;       /* [n_layer][n_ctx][kv_dim] each */
} graft_kv;

graft_status graft_kv_create(const graft_config *cfg, int n_ctx, graft_kv *kv);
void graft_kv_free(graft_kv *kv);

struct graft_run {
    graft_model *m;
    int train;        /* keep per-layer activations for backward */
    int cap;          /* token capacity of the buffers */
    int cap_out;      /* capacity of logits rows */
    /* the batch */
    int T;
    int *ids, *pos, *seq_start; /* [cap], [cap], [cap+1] */
    graft_seqs seqs;
    int n_out;        /* rows whose logits are computed */
    int *out_rows;    /* [cap_out] indices into 0..T-1 */
    int ldq, ldkv;
    /* activations */
    float *embed;     /* [T,C] input of block 0 */
    graft_layer_acts *layers;
    float *head_in;   /* [n_out,C] top-block rows gathered for the head */
    float *lnf, *lnf_mean, *lnf_rstd; /* [n_out,C] final norm of the out rows */
    float *logits;    /* [n_out,V] */
    /* backward scratch */
    float *d_resid, *d_a, *d_b, *d_qkv, *d_ff1, *d_ff2, *d_ff3, *d_logits;
    /* generation */
    graft_kv *kv;     /* when set (train=0): attention reads/writes this cache */
    graft_hook *hooks;
    float *slab;      /* one allocation carved into the buffers above */
    size_t slab_floats;
    int max_seq_len;  /* longest sequence the att buffer was sized for */
    int row0;         /* suffix passes: first row forward_from/backward recompute (0: all) */
};

/*
 * Allocate a run for up to `cap` tokens in total, `cap_out` logit rows and
 * sequences of at most max_seq_len tokens (att buffer size). train=1 keeps
 * all activations and allocates backward scratch.
 */
graft_status graft_run_create(graft_model *m, int cap, int cap_out, int max_seq_len, int train,
                              graft_run **out);
void graft_run_free(graft_run *r);

/*
 * Set the batch: n_seq sequences, lens[s] tokens each, ids concatenated.
 * Positions restart at 0 for each sequence (or continue from kv->len when a
 * KV cache is attached). Logits are computed for the out rows: when out_rows
 * is NULL, for every row (n_out is then T). Validates ids and lengths.
 */
graft_status graft_run_set_batch(graft_run *r, const int *ids, const int *lens, int n_seq,
                                 const int *out_rows, int n_out);

/* The activation buffer of (layer, site) in this run, [T, graft_site_dim]. In
 * inference runs the layers share buffers, so it is valid only while layer
 * `layer` is being computed (i.e. inside that layer's hooks). */
float *graft_run_site(graft_run *r, int layer, graft_site site);

/* Attach / detach a hook (not owned). */
void graft_run_add_hook(graft_run *r, graft_hook *h);
void graft_run_remove_hook(graft_run *r, graft_hook *h);

/* Full forward: embeddings, all blocks, final norm and logits of the out rows. */
graft_status graft_run_forward(graft_run *r);
/*
 * Forward from (layer, site) upwards, reusing the activations below that a
 * previous graft_run_forward() of the same batch left (train mode only). The
 * step that produces the site is recomputed from its saved inputs and the
 * site's hooks run again, so a hook may change what it writes between calls.
 */
graft_status graft_run_forward_from(graft_run *r, int layer, graft_site site);

/*
 * Suffix passes (editors): declare that only rows [row, T) of the batch can
 * change from now on, because whatever an editor changes enters at `row` or
 * later (causal attention: earlier rows never see it). graft_run_forward_from
 * then recomputes only those rows above its site (attending to the cached
 * keys and values of the earlier ones), and graft_run_backward takes
 * activation gradients through those rows only. One-sequence train runs,
 * activation gradients only (grads NULL); every out row must be >= row.
 * graft_run_set_batch resets it to 0 (every row).
 */
graft_status graft_run_set_row0(graft_run *r, int row);

/*
 * Mean cross-entropy of the out rows against targets[n_out] (target < 0:
 * ignored), each row weighted by weights[n_out] (NULL: equal weights over the
 * counted rows, i.e. the mean). Returns the weighted loss in *loss and stores
 * the per-row losses in row_loss (may be NULL).
 */
graft_status graft_run_loss(graft_run *r, const int *targets, const float *weights, double *loss,
                            float *row_loss);

/* Gradients of all parameters, bound to the model's layout. */
typedef struct graft_grads {
    graft_param_table t; /* same names/shapes as the model's parameters, heap data */
    graft_weights w;
    float *slab;
} graft_grads;

graft_status graft_grads_create(const graft_model *m, graft_grads *g);
void graft_grads_zero(graft_grads *g);
void graft_grads_free(graft_grads *g);

/*
 * Backward of  loss = sum_i weights[i] * CE(out row i, targets[i])  (the same
 * targets/weights given to graft_run_loss; weights NULL = mean). Gradients
 * accumulate into g (NULL: only activation gradients, for hooks). The pass
 * stops once the gradient at (stop_layer, stop_site) has been delivered to its
 * hooks; stop_layer = -1 goes all the way down, including the embeddings.
 */
graft_status graft_run_backward(graft_run *r, const int *targets, const float *weights,
                                graft_grads *g, int stop_layer, graft_site stop_site);

/* The same backward from a caller-given loss gradient dlogits [n_out, V]
 * (losses that are not a cross-entropy against one target per row, e.g.
 * MEND's KL locality term). */
graft_status graft_run_backward_dlogits(graft_run *r, const float *dlogits, graft_grads *g, int stop_layer,
                                        graft_site stop_site);

/* Generation with callbacks around every forward (step 0 is the prompt, then
 * one per generated token): `before` lets editors install hooks and set key
 * positions on the run; `after` (may be NULL) is called after every forward
 * whose `before` was called, whether either failed, so a caller can hold a
 * lock across exactly one step (graft serve serialises steps of concurrent
 * requests). graft_generate_ids is this with no hooks. */
typedef struct graft_step_hooks {
    graft_status (*before)(void *user, graft_run *r, int step);
    void (*after)(void *user, graft_run *r, int step);
} graft_step_hooks;
graft_status graft_generate_run(graft_model *m, const int *prompt, size_t n, const graft_gen_opts *opts,
                                graft_token_cb cb, void *user, const graft_step_hooks *hooks, void *step_user,
                                int **out, size_t *n_out);

#endif /* GRAFT_ENGINE_H */
