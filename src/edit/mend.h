/*
 * mend.h - MEND (Mitchell et al., ICLR 2022): a meta-trained gradient editor
 * (shared/docs/algorithms.md section 3; docs/MEND.md).
 *
 * A weight editor. For each edited matrix W_l (the MLP up- and
 * down-projections of the last three blocks by default) one forward +
 * backward of the edit gives, per token row t, the module input u_t and the
 * gradient at the module output delta_t. Rows where either is all zero are
 * dropped, the rest normalised with frozen per-dimension statistics and put
 * through a small network g of that weight shape (two residual low-rank
 * blocks with a FiLM scale/shift per edited layer):
 *
 *     z_t = [ norm_u(u_t), norm_d(delta_t) ]      (D = m + n)
 *     (u~_t, d~_t) = g_shape(z_t; mode = the layer's index among its shape)
 *     W_l <- W_l + alpha_l * sum_t d~_t u~_t^T    (the "+" of the official code)
 *
 * Sign: dL/dW = sum_t delta_t u_t^T, so with g the identity and alpha > 0
 * the "+" step climbs the loss; a trained editor learns a negative alpha (or
 * a g that flips). graft starts alpha at -init_lr so that an untrained editor
 * already descends (tests/test_mend.c checks both signs).
 *
 * Change record = the factors (u~, d~, alpha) of every matrix; apply and
 * replay write W += alpha * sum_t d~_t u~_t^T with one deterministic loop,
 * so replay is bit-exact, and undo is reset (base copies) + replay, as FT.
 *
 * Meta-training (graft mend-train, cli/cmd_mend.c) differentiates the
 * post-edit loss with respect to g and the alphas only: u and delta come from
 * the unedited model, so no second-order terms arise.
 */
#ifndef GRAFT_EDIT_MEND_H
#define GRAFT_EDIT_MEND_H

#include "editor.h"

#define GRAFT_MEND_MAX_LAYERS 8
#define GRAFT_MEND_PATH 1024

typedef struct graft_mend_opts {
    char dir[GRAFT_MEND_PATH]; /* trained editor folder (mend.json + mend.safetensors); "" = the model's
                                  own <model>/mend when it exists */
    int allow_untrained;       /* no trained editor: g at its identity init (tests, meta-training) */
    int n_layers;              /* edited blocks (0: the last three) */
    int layers[GRAFT_MEND_MAX_LAYERS];
    int rank;                  /* rank of g's blocks, capped at D (untrained editors; 64) */
    float init_lr;             /* |alpha| at init (1e-4); alpha starts negative, see above */
    uint64_t seed;             /* V's N(0,1) init (42) */
    float alpha_scale;         /* multiplies a trained editor's alphas: a step size calibrated after
                                  training, on held-out records (1; docs/MEND.md) */
} graft_mend_opts;

void graft_mend_opts_default(graft_mend_opts *o);
graft_status graft_mend_create(graft_model *m, const graft_mend_opts *o, graft_editor **out);
int graft_mend_is(const graft_editor *e);
/* Options JSON <-> struct (factory.c); keys: editor, allow_untrained,
 * layers, rank, init_lr, seed, alpha_scale. Unknown keys are errors. */
graft_status graft_mend_opts_from_json(const void *cjson, graft_mend_opts *o, const char *where);
graft_status graft_mend_opts_to_json(graft_editor *e, void *cjson);

/* ---------------------------------------------------------------- g, one block */

/*
 * One residual low-rank block of g over T rows of width D, rank R:
 *     a = h V^T            [T,R]   (V [R,D])
 *     pre = a U^T + b      [T,D]   (U [D,R], b [D])
 *     out = h + relu(pre * s + o)  (s, o [D]: the FiLM row of the mode)
 * a and pre are saved for the backward. out may not alias h.
 */
void graft_mend_block_forward(float *out, float *a, float *pre, const float *h, const float *U, const float *V,
                              const float *b, const float *s, const float *o, int T, int D, int R);
/* Backward of the block: dh = dout + (relu' * s * dout) U V (overwritten);
 * dU, dV, db, ds, do accumulate (+=). scratch: T*(D+R) floats. */
void graft_mend_block_backward(float *dh, float *dU, float *dV, float *db, float *ds, float *d_o, const float *dout,
                               const float *h, const float *a, const float *pre, const float *U, const float *V,
                               const float *s, const float *o, int T, int D, int R, float *scratch);

/* Welford running mean and M2 per dimension over rows x [n, D]. */
void graft_mend_welford(double *count, double *mean, double *m2, const float *x, int n, int D);

/* ---------------------------------------------------------------- introspection */

typedef struct graft_mend_info {
    int n_mats, n_nets, rank, trained;
    int64_t n_params;     /* parameters of every g plus the alphas */
    double stat_count[2]; /* Welford rows seen per net */
} graft_mend_info;
void graft_mend_get_info(graft_editor *e, graft_mend_info *info);
/* Matrix i: its parameter, layer, kind (0 up, 1 down), alpha (settable) and
 * alpha's gradient accumulator (meta-training). */
graft_param *graft_mend_mat(graft_editor *e, int i, int *layer, int *kind, float **alpha, float **alpha_grad);
/* Net j's flat parameter vector and gradient (same layout), numel. */
float *graft_mend_net_params(graft_editor *e, int j, float **grad, size_t *numel);
/* Net j's statistics: count, mean[D], m2[D] (double, settable) and D, m. */
void graft_mend_net_stats(graft_editor *e, int j, double **count, double **mean, double **m2, int *D, int *m);

/* ---------------------------------------------------------------- meta-training */

typedef struct graft_mend_example {
    const int *prompt, *target;
    int n_prompt, n_target;
} graft_mend_example;

typedef struct graft_mend_loss {
    double l_edit, l_loc, total; /* c_edit * l_edit + c_loc * l_loc */
    double l_edit_before;        /* the equivalence loss before the edit */
    int edit_ok;                 /* every equivalence example's target is the teacher-forced argmax after the edit */
    int loc_same;                /* the locality argmax is unchanged at every row */
} graft_mend_loss;

/*
 * The meta-training objective of one step on the current (base) weights:
 * edit with (x_e, y_e), then L_e = mean over equiv[] of their target NLL
 * under the edited weights, L_loc = token-level KL(p_base || p_edited) over
 * every row of the locality texts loc[n_loc] (n_loc_seq sequences of
 * loc_lens[] tokens, each attending only to itself; loc_lens NULL: one),
 * L = c_edit L_e + c_loc L_loc.
 * The weights are restored before it returns. With grads != 0 the gradient
 * of L accumulates into every net's gradient and the alphas' (see
 * graft_mend_net_params, graft_mend_mat); with update_stats the Welford statistics take the
 * edit's rows first (training mode).
 */
graft_status graft_mend_meta_loss(graft_editor *e, const graft_mend_example *edit, const graft_mend_example *equiv,
                                  int n_equiv, const int *loc, int n_loc, const int *loc_lens, int n_loc_seq,
                                  double c_edit, double c_loc, int grads, int update_stats, graft_mend_loss *out);
void graft_mend_zero_grad(graft_editor *e);
/*
 * One optimiser step: the accumulated gradients are divided by `accum`, their
 * joint L2 norm clipped to `clip` (0: none), then Adam (PyTorch defaults) with
 * rate lr_g on the nets and lr_alpha on the alphas; gradients are zeroed.
 * Returns the norm before clipping.
 */
double graft_mend_opt_step(graft_editor *e, int accum, double clip, float lr_g, float lr_alpha);

/* Save the trained editor to dir (mend.json + mend.safetensors); with
 * optimiser != 0 the Adam moments and step go along (checkpoints). extra_json:
 * an object merged into mend.json (training settings, NULL: none). */
graft_status graft_mend_save(graft_editor *e, const char *dir, int optimiser, const char *extra_json);
/* Load the nets, alphas and statistics (and the Adam state when present and
 * optimiser != 0) of a folder written by graft_mend_save into e, whose
 * matrices and ranks must match. */
graft_status graft_mend_load(graft_editor *e, const char *dir, int optimiser);

/* splitmix64, for the trainer's sampling (its whole state is one integer). */
uint64_t graft_mend_rand(uint64_t *state);

#endif /* GRAFT_EDIT_MEND_H */
