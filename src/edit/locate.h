/*
 * locate.h - the locate-and-edit machinery shared by ROME / r-ROME, MEMIT and
 * EMMET (shared/docs/algorithms.md section 4): context templates, the value
 * optimisation v*, key probes, the covariance of the keys, low-rank weight
 * updates with base copies, and the change records of weight edits.
 *
 * All three edit the MLP down-projection (GPT-2 mlp.c_proj, Llama down_proj)
 * seen as a linear key -> value memory: the key k is its input (site
 * MLP_ACT, F wide), the value its output (site MLP_OUT, C wide). In math
 * orientation an update is dW (C x F) = U V^T = sum_j U_j V_j^T; it is added
 * to the stored matrix in its own layout ([F, C] for GPT-2 Conv1D, [C, F]
 * for Llama) by one deterministic loop, so a replay from the change record
 * performs exactly the float operations of the original edit.
 */
#ifndef GRAFT_LOCATE_H
#define GRAFT_LOCATE_H

#include "editor.h"

#include <cjson/cJSON.h>

typedef enum { GRAFT_WEDIT_ROME = 1, GRAFT_WEDIT_MEMIT = 2, GRAFT_WEDIT_EMMET = 3 } graft_wedit_method;

#define GRAFT_WEDIT_MAX_LAYERS 64

typedef struct graft_wedit_opts {
    int n_layers;                       /* 0: by depth (spec 10.1); ROME uses layers[0] only */
    int layers[GRAFT_WEDIT_MAX_LAYERS]; /* ascending */
    int v_steps;                        /* v* optimisation steps at most (20) */
    float v_lr;                         /* Adam learning rate of delta (0.5) */
    float clamp;                        /* clamp_norm_factor: |delta| <= clamp |v_init| (ROME 4, MEMIT/EMMET 0.75) */
    float kl_factor;                    /* weight of the KL essence term (0.0625) */
    float weight_decay;                 /* v_weight_decay (0.5) */
    double mom2_update_weight;          /* lambda of MEMIT (20000) / lambda_c of EMMET (10000) */
    double emmet_lambda;                /* lambda_e of EMMET (0.1) */
    double update_norm_lambda;          /* lambda_u of EMMET (0) */
    char stats[1024];                   /* graft stats file; "": C = I */
    int n_templates;                    /* generated context templates (ROME 20, MEMIT/EMMET 5) */
    int template_len;                   /* their length in tokens (10; ROME makes half of them len/2) */
    uint64_t seed;                      /* template sampling */
    int rrome;                          /* ROME: r-ROME's symmetric key (1) or the original asymmetric one (0) */
} graft_wedit_opts;

const char *graft_wedit_method_name(graft_wedit_method m);
/* 0 when the name is not one of rome, memit, emmet. */
graft_wedit_method graft_wedit_method_parse(const char *name);
/* Defaults of a method; layers are left unset (n_layers 0) and derived from
 * the model's depth at creation. */
void graft_wedit_opts_default(graft_wedit_method meth, graft_wedit_opts *o);
/* ROME's layer by depth ratio: round(n_layer / 3) (GPT-2 small: 4). */
int graft_wedit_center_layer(const graft_config *cfg);
/* The default layer list of a method (returns its length). */
int graft_wedit_default_layers(graft_wedit_method meth, const graft_config *cfg, int *layers);
/* Layers whose statistics cover every default: center-1 .. center+1. */
int graft_wedit_stats_layers(const graft_config *cfg, int *layers);

graft_status graft_wedit_create(graft_model *m, graft_wedit_method meth, const graft_wedit_opts *o, graft_editor **out);
/* Options from the editor-options JSON over the method's defaults (keys as
 * in the struct; "layer"/"layers" take a number, a list or "3-5"); unknown
 * keys are errors. */
graft_status graft_wedit_opts_from_json(graft_wedit_method meth, const graft_config *cfg, const cJSON *j, graft_wedit_opts *o,
                                        const char *where);
/* The canonical options (derived layers included) into a JSON object. */
graft_status graft_wedit_opts_to_json(graft_editor *e, cJSON *j);
/* The editor's options, derived layers filled in (any weight editor). */
void graft_wedit_get_opts(graft_editor *e, graft_wedit_opts *o);
/* 1 for editors made by graft_wedit_create. */
int graft_editor_is_wedit(const graft_editor *e);
/* A weight-edit change record as JSON (method, per-layer rank and |dW|_F,
 * cumulative |W - W0|_F, per-request v* loss, key norms, ...). malloc'ed. */
graft_status graft_wedit_describe(const uint8_t *change, size_t len, char **json);

/* ------------------------------------------------------------ diagnostics */

/* The quantities of the last ROME edit, for tests and analysis (double). */
typedef struct graft_rome_debug {
    int valid, layer, F, C, rrome;
    double *k_star;  /* [F] template-averaged key */
    double *k_plain; /* [F] key of the unprefixed prompt */
    double *k_used;  /* [F] the key in the denominator: k_star (r-ROME) or k_plain (original) */
    double *u;       /* [F] C^-1 k_star / |C^-1 k_star| */
    double *v_init;  /* [C] MLP output of the unprefixed prompt */
    double *v_star;  /* [C] v_init + delta */
    double *o_used;  /* [C] the output subtracted: template mean (r-ROME) or v_init (original) */
    double *w;       /* [C] (v_star - o_used) / (k_used . u) */
    double denom;    /* k_used . u */
} graft_rome_debug;
const graft_rome_debug *graft_rome_last(graft_editor *e);

/* ------------------------------------------------------------ the MEMIT / EMMET solve */

/*
 * The closed forms of MEMIT and EMMET for one layer, as dW = U X^T with
 * X = M^-1 K. M = m_scale * (L L^T) where L is a Cholesky factor (F x F), or
 * M = m_scale * I when chol is NULL. K holds n keys (n x F), res n residuals
 * (n x C); both row per request. Outputs U (n x C) and X (n x F), row per
 * request.
 *   MEMIT: U = Res (I + K^T X)^-1          =>  dW = Res K^T (M + K K^T)^-1
 *   EMMET: U = Res (K^T X + lambda_e I)^-1  =>  dW = Res (K^T M^-1 K + lambda_e I)^-1 K^T M^-1
 * (MEMIT by the Woodbury identity: only an n x n system beside M's factor.)
 */
graft_status graft_lowrank_solve(const double *chol, double m_scale, int F, int C, int n, const double *K,
                                 const double *res, int emmet, double lambda_e, double *U, double *X);

/* ------------------------------------------------------------ internals shared by rome.c and memit.c */

typedef struct graft_templates {
    int n;          /* templates; the first is the empty "{}" one */
    int *off, *len; /* each template's prefix tokens: ids[off[j] .. off[j]+len[j]) */
    int *ids;
    int n_ids;
    double *weight; /* key-averaging weight of each template (sums to 1) */
    int bos;        /* prompts starting with this token keep it in front of the prefix (-1: none) */
} graft_templates;

typedef struct graft_cov {
    int ready, identity;
    double shift;  /* the factor is of C + shift I */
    double *chol;  /* [F, F] lower Cholesky factor */
} graft_cov;

typedef struct graft_wedit {
    graft_editor base;
    graft_wedit_method method;
    graft_wedit_opts o;
    int C, F;
    graft_templates tpl;
    int have_tpl;
    float **base_w; /* [n_layer] the down-projection before the first edit (NULL: untouched) */
    graft_cov *cov; /* [n_layer] */
    int warned;
    graft_rome_debug dbg;
} graft_wedit;

/* Per-request diagnostics of a weight edit (journaled in the change record). */
typedef struct graft_wedit_diag {
    double v_loss_first, v_loss_last; /* v* objective at its first and last step */
    double v_steps;                   /* Adam steps taken */
    double key_norm;                  /* |k*| (template average at the first edited layer) */
    double key_plain_norm;            /* |k| of the unprefixed prompt */
    double delta_norm, v_init_norm;   /* |delta|, |v_init| */
    double denom;                     /* ROME: k . u; NaN otherwise */
    double loss_before, loss_after;   /* target NLL of the plain prompt before / after the edit */
    double reproduced;                /* greedy argmax equals the target afterwards */
} graft_wedit_diag;

typedef struct graft_wedit_update {
    int layer, n;
    float *U; /* [n, C] */
    float *V; /* [n, F] */
    double dw_fro, dist_fro; /* |dW|_F of this update; |W - W0|_F after it */
} graft_wedit_update;

typedef struct graft_vstar {
    int nT;
    float *v_init;  /* [C] */
    float *delta;   /* [C] */
    float *keys;    /* [nT, F] keys at the layer, subject row of every template (unedited pass) */
    float *outs;    /* [nT, C] MLP outputs there */
    double loss_first, loss_last;
    int steps;
} graft_vstar;

graft_status graft_wedit_templates(graft_wedit *w);
int graft_wedit_subject(const graft_edit_tok *req);
/* v* at `layer`: delta added at MLP_OUT; resid = 0 takes v_init from the MLP
 * output (ROME), resid = 1 from the block output (MEMIT's z). */
graft_status graft_wedit_vstar(graft_wedit *w, int layer, int resid, const graft_edit_tok *req, graft_vstar *vs);
void graft_vstar_free(graft_vstar *vs);
/* The v* objective (and its gradient when grad != NULL) at a given delta, on
 * the current weights: for finite-difference checks. */
graft_status graft_wedit_vstar_objective(graft_wedit *w, int layer, int resid, const graft_edit_tok *req, const float *delta,
                                         double *loss, float *grad);
/* Keys at key_layer averaged over the templates with their weights (K, n x F)
 * and the block output of h_layer at the unprefixed prompt (H, n x C; NULL to skip). */
graft_status graft_wedit_probe(graft_wedit *w, const graft_edit_tok *reqs, int n, int key_layer, double *K, int h_layer,
                               double *H);
/* The covariance factor of a layer (loaded and factored once). */
graft_status graft_wedit_cov(graft_wedit *w, int layer, double shift, graft_cov **out);
/* Target NLL (mean over target tokens) of the plain prompt and whether greedy reproduces it. */
graft_status graft_wedit_eval_target(graft_wedit *w, const graft_edit_tok *req, double *loss, int *reproduced);
/* Add U V^T to a layer's down-projection (base copy on first touch); fills up->dw_fro / dist_fro. */
graft_status graft_wedit_apply_update(graft_wedit *w, graft_wedit_update *up);
graft_status graft_wedit_write_change(graft_wedit *w, const graft_wedit_update *ups, int n_ups, const graft_wedit_diag *d,
                                      int n_req, graft_blob *b);
/* ops shared by the three editors */
graft_status graft_wedit_replay(graft_editor *e, const uint8_t *change, size_t len);
graft_status graft_wedit_reset(graft_editor *e);
graft_status graft_wedit_export(graft_editor *e, const char *path);
void graft_wedit_free(graft_editor *e);

extern const graft_editor_ops graft_rome_ops, graft_memit_ops, graft_emmet_ops;

#endif
