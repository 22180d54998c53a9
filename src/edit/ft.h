/*
 * ft.h - the fine-tuning baselines (shared/docs/algorithms.md section 5):
 *
 *   "ft"   plain fine-tuning of chosen weights on the edit with Adam
 *          (EasyEdit's FT: layer 0 mlp.c_proj of GPT-2, lr 5e-4, 25 steps);
 *   "ftl"  the same with an L-infinity clamp after every step (ROME's FT-L):
 *          no trained weight ever leaves [W0 - linf, W0 + linf], W0 being the
 *          weights before the stream (or, as the official code has it,
 *          before each edit: linf_anchor "edit");
 *   "ewc"  fine-tuning plus the EWC penalty lambda * sum_i F_i (w_i - w*_i)^2,
 *          F the diagonal Fisher (mean squared gradient) of the last
 *          ewc_window edits at the current weights and w* the weights before
 *          this edit (GRACE's FT+EWC, with its bugs fixed; docs/FT_BASELINES.md).
 *
 * All three are weight editors: they write into the model's tensors, need no
 * hooks at inference, and undo by reset (restore the base copies of every
 * trained tensor) + replay of the edits still live. A change record holds the
 * dense float delta of every trained tensor; apply ends by writing
 * W = W_before + delta (then the clamp, for FT-L) and replay performs exactly
 * that operation, so a replayed model is bit-identical to the edited one.
 */
#ifndef GRAFT_EDIT_FT_H
#define GRAFT_EDIT_FT_H

#include "editor.h"

typedef enum { GRAFT_FT_PLAIN = 0, GRAFT_FT_L, GRAFT_FT_EWC } graft_ft_variant;

typedef enum {
    GRAFT_FT_LOSS_TARGET_NEW = 0, /* teacher-forced CE over the target tokens of prompt + target (FT-M) */
    GRAFT_FT_LOSS_PROMPT_LAST     /* every target token scored at the last prompt position (ROME's FT-L) */
} graft_ft_loss;

typedef enum {
    GRAFT_FT_ANCHOR_BASE = 0, /* the L-inf ball is centred on the weights before the stream */
    GRAFT_FT_ANCHOR_EDIT      /* ... on the weights before each edit (ROME/EasyEdit code) */
} graft_ft_anchor;

#define GRAFT_FT_MAX_LIST 32
#define GRAFT_FT_NAME_LEN 128

typedef struct graft_ft_opts {
    graft_ft_variant variant;
    /* Which tensors train: either explicit canonical parameter names, or
     * layers x modules, a module selecting every parameter of a layer whose
     * name is "<layer prefix><module>" or starts with "<layer prefix><module>."
     * (EasyEdit's rule: "mlp.c_proj" is weight and bias). Empty lists take
     * the defaults of the model's shape (graft_ft_create fills them in). */
    int n_params;
    char params[GRAFT_FT_MAX_LIST][GRAFT_FT_NAME_LEN];
    int n_layers;
    int layers[GRAFT_FT_MAX_LIST];
    int n_modules;
    char modules[GRAFT_FT_MAX_LIST][64];
    graft_ft_loss loss;
    float lr;          /* Adam learning rate (PyTorch defaults otherwise) */
    int steps;         /* optimiser steps at most */
    float stop_loss;   /* stop once the loss is below this (1e-2, as ROME/EasyEdit; 0: never) */
    int early_stop;    /* stop once the teacher-forced argmax reproduces the target (GRACE's FT rule) */
    float linf;        /* FT-L: radius of the L-inf ball (> 0); unused otherwise */
    graft_ft_anchor linf_anchor;
    float ewc_lambda;  /* FT+EWC: penalty weight */
    int ewc_window;    /* FT+EWC: the Fisher is estimated over this many previous edits */
    uint64_t seed;     /* recorded only: fine-tuning draws no random numbers */
} graft_ft_opts;

/* "ft", "ftl", "ewc" <-> variant (-1 when the name is not one of them). */
const char *graft_ft_method_name(graft_ft_variant v);
int graft_ft_variant_parse(const char *method);

/* Defaults of a variant; the tensor lists stay empty until graft_ft_create
 * resolves them for the model (GPT-2: layer 0 mlp.c_proj; Llama: layer
 * 2/3 of the depth, mlp.down_proj.weight, as EasyEdit's llama-7b FT). */
void graft_ft_opts_default(graft_ft_opts *o, graft_ft_variant v);
graft_status graft_ft_create(graft_model *m, const graft_ft_opts *o, graft_editor **out);
/* The resolved options (lists filled in). */
void graft_ft_get_opts(graft_editor *e, graft_ft_opts *o);
/* Is e one of the FT editors? */
int graft_ft_is(const graft_editor *e);

/* Options from a JSON object (unknown keys are errors), and back. The JSON
 * keys: params, layers (or layer), modules, loss, lr, steps, stop_loss,
 * early_stop, linf, linf_anchor, ewc_lambda, ewc_window, seed. */
struct cJSON;
graft_status graft_ft_opts_from_json(graft_ft_variant v, const struct cJSON *j, graft_ft_opts *o, const char *where);
graft_status graft_ft_opts_to_json(graft_editor *e, struct cJSON *j);

/* Introspection: the trained tensors (model parameters), their base copies
 * and what the last apply did. */
int graft_ft_n_tensors(graft_editor *e);
graft_param *graft_ft_tensor(graft_editor *e, int i, const float **base);

/* The EWC penalty lambda * sum F (theta - star)^2 over n elements; its
 * gradient is added into grad (when not NULL). */
double graft_ewc_penalty(const float *theta, const float *star, const float *fisher, size_t n, double lambda,
                         float *grad);

/* For tests: estimate the Fisher of the editor's current history at the
 * current weights and anchor w* there (what apply does first), then, after
 * the caller moved the weights, evaluate the edit objective (loss on req plus
 * the penalty) and its gradient into grads[i] (numel of tensor i each). */
graft_status graft_ft_debug_anchor(graft_editor *e);
graft_status graft_ft_debug_objective(graft_editor *e, const graft_edit_tok *req, double *objective,
                                      float *const *grads);

#endif /* GRAFT_EDIT_FT_H */
