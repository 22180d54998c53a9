/* ft.c - the fine-tuning baselines FT, FT-L and FT+EWC (see ft.h and
 * docs/FT_BASELINES.md; spec: shared/docs/algorithms.md section 5).
 *
 * One editor type serves all three: they differ only in what happens after
 * each Adam step (FT-L clamps into an L-inf ball) and in an extra gradient
 * term (EWC). Per edit:
 *   1. copy the trained tensors (W_before);
 *   2. EWC: the diagonal Fisher of the last ewc_window edits at W_before;
 *   3. up to `steps` Adam steps on the edit's loss, each re-running the model
 *      only from the lowest trained site up and stopping the backward there;
 *   4. delta = W - W_before, then W = W_before + delta (clamped for FT-L):
 *      the write replay repeats, so replays are bit-identical;
 *   5. the change record: the request, losses and the dense float delta of
 *      every trained tensor with its norms.
 *
 * Gradients are bound sparsely: graft_run_backward fills only the gradient
 * pointers that are not NULL, so only the trained tensors get a gradient
 * buffer and no other weight gradient is ever computed (for GPT-2 this skips
 * the 38M-element tied head gradient on every step).
 *
 * Adam: a dozen lines of our own. train/optim.c's AdamW works on a whole
 * parameter table with decay flags and chunked norms; an edit trains one or
 * two tensors and restarts the optimiser state every edit.
 */
#include "ft.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANGE_MAGIC 0x31445446u /* "FTD1" */
#define CHANGE_VERSION 1u

typedef struct ft_tensor {
    graft_param *p;   /* the model's parameter (data written in place) */
    float *base;      /* its values when the editor was created */
    float *before;    /* its values at the start of the current edit (EWC's w*) */
    float *grad, *m, *v;
    float *fisher;    /* EWC only */
    int layer;        /* -1: embeddings; n_layer: final norm / untied head */
    graft_site fwd;   /* the first site whose computation reads this tensor */
    graft_site stop;  /* the backward can stop at this site once it has this tensor's gradient */
} ft_tensor;

typedef struct ft_req {
    int *prompt, *target;
    int np, nt;
} ft_req;

typedef struct ft {
    graft_editor base;
    graft_ft_opts o;
    int n;
    ft_tensor *t;
    graft_grads grads; /* only grads.w is used: the sparse binding */
    int full_forward;  /* embeddings train: every pass starts at the embedding */
    int fwd_layer;
    graft_site fwd_site;
    int stop_layer;
    graft_site stop_site;
    graft_run *run;
    int run_cap, run_cap_out, run_seq;
    ft_req *hist; /* ring of the last ewc_window requests, oldest at hist_at */
    int n_hist, hist_at;
} ft;

/* A packed batch for one request in one loss layout. */
typedef struct ft_batch {
    int *ids, *rows, *tg;
    int lens[2], n_seq, T, n_out, longest;
} ft_batch;

/* ---------------------------------------------------------------- names and defaults */

static const char *const variant_names[] = {"ft", "ftl", "ewc"};
static const char *const loss_names[] = {"target_new", "prompt_last"};
static const char *const anchor_names[] = {"base", "edit"};

const char *graft_ft_method_name(graft_ft_variant v) {
    return (v >= GRAFT_FT_PLAIN && v <= GRAFT_FT_EWC) ? variant_names[v] : "?";
}

int graft_ft_variant_parse(const char *method) {
    for (int i = 0; i < 3; i++)
        if (method && !strcmp(method, variant_names[i])) return i;
    return -1;
}

void graft_ft_opts_default(graft_ft_opts *o, graft_ft_variant v) {
    memset(o, 0, sizeof *o);
    o->variant = v;
    /* EasyEdit FT (gpt2-xl.yaml) and ROME FT-L: Adam 5e-4, 25 steps, stop below 1e-2 */
    o->lr = 5e-4f;
    o->steps = 25;
    o->stop_loss = 1e-2f;
    /* FT-L is ROME's constrained FT: prompt_last loss, L-inf 5e-4. Plain FT
     * and EWC train on the ordinary teacher-forced target loss (FT-M). */
    o->loss = v == GRAFT_FT_L ? GRAFT_FT_LOSS_PROMPT_LAST : GRAFT_FT_LOSS_TARGET_NEW;
    o->linf = v == GRAFT_FT_L ? 5e-4f : 0.0f;
    o->linf_anchor = GRAFT_FT_ANCHOR_BASE;
    /* GRACE's ft_ewc.yaml: lambda 0.1 over the last 10 edits */
    o->ewc_lambda = v == GRAFT_FT_EWC ? 0.1f : 0.0f;
    o->ewc_window = v == GRAFT_FT_EWC ? 10 : 0;
    o->seed = 42;
}

static void layer_prefix(const graft_config *cfg, int l, char *buf, size_t n) {
    snprintf(buf, n, cfg->arch == GRAFT_ARCH_GPT2 ? "transformer.h.%d." : "model.layers.%d.", l);
}

/* ---------------------------------------------------------------- where a tensor sits */

/* The fields of a layer, the first forward site that reads each and the
 * backward site by which its gradient is complete (forward.c's order). */
static const struct {
    size_t off;
    graft_site fwd, stop;
} layer_fields[] = {
    {offsetof(graft_layer_weights, ln1_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, ln1_b), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, qkv_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, qkv_b), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, q_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, k_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, v_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, o_w), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, o_b), GRAFT_SITE_BLOCK_IN, GRAFT_SITE_BLOCK_IN},
    /* ln_2 runs from MLP_IN; its gradient is formed after the MLP_IN hook */
    {offsetof(graft_layer_weights, ln2_w), GRAFT_SITE_MLP_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, ln2_b), GRAFT_SITE_MLP_IN, GRAFT_SITE_BLOCK_IN},
    {offsetof(graft_layer_weights, gate_w), GRAFT_SITE_MLP_PRE, GRAFT_SITE_MLP_IN},
    {offsetof(graft_layer_weights, up_w), GRAFT_SITE_MLP_PRE, GRAFT_SITE_MLP_IN},
    {offsetof(graft_layer_weights, up_b), GRAFT_SITE_MLP_PRE, GRAFT_SITE_MLP_IN},
    {offsetof(graft_layer_weights, down_w), GRAFT_SITE_MLP_OUT, GRAFT_SITE_MLP_ACT},
    {offsetof(graft_layer_weights, down_b), GRAFT_SITE_MLP_OUT, GRAFT_SITE_MLP_ACT},
};

#define FIELD(base, off) ((float **)((char *)(base) + (off)))

/* Find the model field that holds p's data and bind the gradient buffer to
 * the same field of the sparse gradient struct. */
static graft_status bind_tensor(ft *f, ft_tensor *t) {
    const graft_model *m = f->base.m;
    const graft_weights *w = &m->w;
    graft_weights *gw = &f->grads.w;
    const float *d = t->p->data;
    int L = m->cfg.n_layer;
    int found = 0;
    if (d == w->wte) {
        gw->wte = t->grad;
        if (w->lm_head == w->wte) gw->lm_head = t->grad; /* tied: the head's gradient lands here too */
        t->layer = -1, found = 1;
    } else if (d == w->wpe) {
        gw->wpe = t->grad;
        t->layer = -1, found = 1;
    } else if (d == w->lnf_w || d == w->lnf_b || d == w->lm_head) {
        if (d == w->lnf_w) gw->lnf_w = t->grad;
        else if (d == w->lnf_b) gw->lnf_b = t->grad;
        else gw->lm_head = t->grad;
        t->layer = L, found = 1;
    }
    for (int l = 0; l < L && !found; l++)
        for (size_t k = 0; k < sizeof layer_fields / sizeof layer_fields[0]; k++) {
            if (*FIELD(&w->layers[l], layer_fields[k].off) != d) continue;
            *FIELD(&gw->layers[l], layer_fields[k].off) = t->grad;
            t->layer = l;
            t->fwd = layer_fields[k].fwd;
            t->stop = layer_fields[k].stop;
            found = 1;
            break;
        }
    if (!found) return graft_fail(GRAFT_ERR_INTERNAL, "FT: parameter %s is not bound to the model", t->p->name);
    return GRAFT_OK;
}

/* Where the passes of an edit start and stop: the lowest trained layer. */
static void plan_passes(ft *f) {
    int L = f->base.m->cfg.n_layer, low = L + 1;
    for (int i = 0; i < f->n; i++)
        if (f->t[i].layer < low) low = f->t[i].layer;
    f->full_forward = low < 0;
    if (low < 0) {
        f->stop_layer = -1;
        f->stop_site = GRAFT_SITE_BLOCK_IN;
        return;
    }
    if (low >= L) {
        /* head only: re-run the last down-projection (cheap) and the head */
        f->fwd_layer = f->stop_layer = L - 1;
        f->fwd_site = f->stop_site = GRAFT_SITE_MLP_OUT;
        return;
    }
    f->fwd_layer = f->stop_layer = low;
    f->fwd_site = f->stop_site = GRAFT_SITE_MLP_OUT;
    for (int i = 0; i < f->n; i++) {
        if (f->t[i].layer != low) continue;
        if (f->t[i].fwd < f->fwd_site) f->fwd_site = f->t[i].fwd;
        if (f->t[i].stop < f->stop_site) f->stop_site = f->t[i].stop;
    }
}

/* ---------------------------------------------------------------- tensor selection */

static int module_matches(const char *name, const char *prefix, const char *module) {
    size_t lp = strlen(prefix), lm = strlen(module);
    if (strncmp(name, prefix, lp) || strncmp(name + lp, module, lm)) return 0;
    char c = name[lp + lm];
    return c == '\0' || c == '.';
}

static graft_status add_tensor(ft *f, graft_param *p, int *cap) {
    for (int i = 0; i < f->n; i++)
        if (f->t[i].p == p) return graft_fail(GRAFT_ERR_INVALID, "FT: parameter %s is selected twice", p->name);
    if (f->n == *cap) {
        int nc = *cap ? 2 * *cap : 8;
        ft_tensor *nt = realloc(f->t, (size_t)nc * sizeof *nt);
        if (!nt) return graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
        f->t = nt;
        *cap = nc;
    }
    memset(&f->t[f->n], 0, sizeof f->t[f->n]);
    f->t[f->n++].p = p;
    return GRAFT_OK;
}

static graft_status select_tensors(ft *f) {
    graft_model *m = f->base.m;
    const graft_config *cfg = &m->cfg;
    graft_ft_opts *o = &f->o;
    int cap = 0;
    if (o->n_params > 0) {
        if (o->n_layers || o->n_modules)
            return graft_fail(GRAFT_ERR_INVALID, "FT: give either params or layers/modules, not both");
        for (int i = 0; i < o->n_params; i++) {
            graft_param *p = graft_param_find(&m->params, o->params[i]);
            if (!p)
                return graft_fail(GRAFT_ERR_INVALID, "FT: the model has no parameter '%s' (names as in save_pretrained, e.g. %s)",
                                  o->params[i], m->params.p[m->params.n > 2 ? 2 : 0].name);
            GRAFT_TRY(add_tensor(f, p, &cap));
        }
        return GRAFT_OK;
    }
    if (o->n_layers == 0) {
        o->n_layers = 1;
        o->layers[0] = cfg->arch == GRAFT_ARCH_GPT2 ? 0 : (2 * cfg->n_layer) / 3;
    }
    if (o->n_modules == 0) {
        o->n_modules = 1;
        snprintf(o->modules[0], sizeof o->modules[0], "%s", cfg->arch == GRAFT_ARCH_GPT2 ? "mlp.c_proj" : "mlp.down_proj");
    }
    for (int a = 0; a < o->n_layers; a++) {
        int l = o->layers[a];
        if (l < 0 || l >= cfg->n_layer)
            return graft_fail(GRAFT_ERR_INVALID, "FT: layer %d outside [0, %d)", l, cfg->n_layer);
        char prefix[64];
        layer_prefix(cfg, l, prefix, sizeof prefix);
        for (int b = 0; b < o->n_modules; b++) {
            int hits = 0;
            for (int i = 0; i < m->params.n; i++)
                if (module_matches(m->params.p[i].name, prefix, o->modules[b])) {
                    GRAFT_TRY(add_tensor(f, &m->params.p[i], &cap));
                    hits++;
                }
            if (!hits)
                return graft_fail(GRAFT_ERR_INVALID, "FT: module '%s' matches no parameter of layer %d (names start with '%s', e.g. %smlp.%s)",
                                  o->modules[b], l, prefix, prefix,
                                  cfg->arch == GRAFT_ARCH_GPT2 ? "c_proj" : "down_proj");
        }
    }
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- small numerics */

/* Adam with PyTorch's defaults (beta 0.9/0.999, eps 1e-8, no weight decay),
 * step t >= 1. Element-wise, so the result does not depend on threads. */
static void adam_step(float *p, const float *g, float *m, float *v, size_t n, int t, float lr) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float step = lr / (1.0f - powf(b1, (float)t)), ibc2 = 1.0f / sqrtf(1.0f - powf(b2, (float)t));
#ifdef _OPENMP
#pragma omp parallel for simd schedule(static) if (n > 65536)
#endif
    for (size_t i = 0; i < n; i++) {
        float mi = b1 * m[i] + (1.0f - b1) * g[i];
        float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * mi / (sqrtf(vi) * ibc2 + eps);
    }
}

/* x moved into [a - eps, a + eps], where the bounds are the floats closest to
 * a -+ eps that keep |x - a| <= eps exactly: a + eps rounded to nearest may
 * lie above the real a + eps, and then the float just below it does not
 * (rounding is off by at most half an ulp). The differences are exact in
 * double for the weights and radii of interest (exponents within 29 binades). */
static inline float ball(float x, float a, float eps) {
    double d = (double)x - (double)a;
    if (d > eps) {
        float hi = a + eps;
        return (double)hi - (double)a > eps ? nextafterf(hi, -INFINITY) : hi;
    }
    if (d < -(double)eps) {
        float lo = a - eps;
        return (double)a - (double)lo > eps ? nextafterf(lo, INFINITY) : lo;
    }
    return x;
}

static void clamp_tensor(float *w, const float *anchor, size_t n, float eps) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > 65536)
#endif
    for (size_t i = 0; i < n; i++) w[i] = ball(w[i], anchor[i], eps);
}

/* The one write of an edit, shared by apply and replay: w = prev + d, then
 * the FT-L clamp. prev may alias w (replay). */
static void write_tensor(const ft *f, const ft_tensor *t, const float *prev, const float *d) {
    float *w = t->p->data;
    size_t n = t->p->numel;
    int clamp = f->o.variant == GRAFT_FT_L;
    int at_base = f->o.linf_anchor == GRAFT_FT_ANCHOR_BASE;
    float eps = f->o.linf;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > 65536)
#endif
    for (size_t i = 0; i < n; i++) {
        float p = prev[i];
        float x = p + d[i];
        if (clamp) x = ball(x, at_base ? t->base[i] : p, eps);
        w[i] = x;
    }
}

double graft_ewc_penalty(const float *theta, const float *star, const float *fisher, size_t n, double lambda,
                         float *grad) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)theta[i] - (double)star[i];
        s += (double)fisher[i] * d * d;
        if (grad) grad[i] += (float)(2.0 * lambda * fisher[i] * d);
    }
    return lambda * s;
}

/* ---------------------------------------------------------------- batches and passes */

static void batch_free(ft_batch *b) {
    free(b->ids), free(b->rows), free(b->tg);
    memset(b, 0, sizeof *b);
}

/* The request in a loss layout:
 *   target_new:  prompt + target[:-1]; row n_prompt-1+i predicts target[i];
 *   prompt_last: the prompt; its last row predicts every target token. A run
 *                needs at least as many tokens as logit rows, so a target
 *                longer than the prompt gets a filler sequence of its own
 *                (attention never crosses sequences and its rows carry no
 *                loss, so it changes no gradient). */
static graft_status batch_build(const ft *f, const int *p, int np, const int *t, int nt, graft_ft_loss mode,
                                ft_batch *b) {
    memset(b, 0, sizeof *b);
    const graft_config *cfg = &f->base.m->cfg;
    if (np < 1 || nt < 1)
        return graft_fail(GRAFT_ERR_INVALID, "FT: an edit needs a prompt and a target (got %d and %d tokens)", np, nt);
    int pad = 0;
    if (mode == GRAFT_FT_LOSS_TARGET_NEW) {
        b->T = np + nt - 1;
        b->lens[0] = b->T;
        b->n_seq = 1;
    } else {
        pad = nt > np ? nt - np : 0;
        b->T = np + pad;
        b->lens[0] = np;
        b->lens[1] = pad;
        b->n_seq = pad ? 2 : 1;
    }
    if (b->lens[0] > cfg->n_ctx || pad > cfg->n_ctx)
        return graft_fail(GRAFT_ERR_RANGE, "FT: prompt + target is %d tokens; the context is %d", np + nt, cfg->n_ctx);
    b->longest = b->lens[0] > pad ? b->lens[0] : pad;
    b->n_out = nt;
    b->ids = malloc((size_t)b->T * sizeof(int));
    b->rows = malloc((size_t)nt * sizeof(int));
    b->tg = malloc((size_t)nt * sizeof(int));
    if (!b->ids || !b->rows || !b->tg) {
        batch_free(b);
        return graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    }
    memcpy(b->ids, p, (size_t)np * sizeof(int));
    if (mode == GRAFT_FT_LOSS_TARGET_NEW)
        memcpy(b->ids + np, t, (size_t)(nt - 1) * sizeof(int));
    else
        for (int i = 0; i < pad; i++) b->ids[np + i] = p[0];
    for (int i = 0; i < nt; i++) b->rows[i] = mode == GRAFT_FT_LOSS_TARGET_NEW ? np - 1 + i : np - 1;
    memcpy(b->tg, t, (size_t)nt * sizeof(int));
    return GRAFT_OK;
}

static graft_status ensure_run(ft *f, const ft_batch *b) {
    if (f->run && f->run_cap >= b->T && f->run_cap_out >= b->n_out && f->run_seq >= b->longest) return GRAFT_OK;
    int cap = b->T > f->run_cap ? b->T : f->run_cap;
    if (cap < 64) cap = 64;
    int cap_out = b->n_out > f->run_cap_out ? b->n_out : f->run_cap_out;
    if (cap_out < 16) cap_out = 16;
    graft_run_free(f->run);
    f->run = NULL;
    f->run_cap = f->run_cap_out = f->run_seq = 0;
    GRAFT_TRY(graft_run_create(f->base.m, cap, cap_out, cap, 1, &f->run));
    f->run_cap = cap;
    f->run_cap_out = cap_out;
    f->run_seq = cap;
    return GRAFT_OK;
}

/* Set the batch and run the whole model. */
static graft_status pass_full(ft *f, const ft_batch *b) {
    GRAFT_TRY(ensure_run(f, b));
    GRAFT_TRY(graft_run_set_batch(f->run, b->ids, b->lens, b->n_seq, b->rows, b->n_out));
    return graft_run_forward(f->run);
}

/* Re-run the batch already set from the lowest trained site up. */
static graft_status pass_again(ft *f) {
    if (f->full_forward) return graft_run_forward(f->run);
    return graft_run_forward_from(f->run, f->fwd_layer, f->fwd_site);
}

static void grads_zero(ft *f) {
    for (int i = 0; i < f->n; i++) memset(f->t[i].grad, 0, f->t[i].p->numel * sizeof(float));
}

static graft_status backward(ft *f, const ft_batch *b) {
    return graft_run_backward(f->run, b->tg, NULL, &f->grads, f->stop_layer, f->stop_site);
}

static int argmax_row(const float *x, int n) {
    int best = 0;
    for (int v = 1; v < n; v++)
        if (x[v] > x[best]) best = v;
    return best;
}

/* The logits of a target_new pass reproduce the target at every row. */
static int rows_reproduce(const graft_run *r, const int *t, int nt) {
    int V = r->m->cfg.vocab_size;
    for (int i = 0; i < nt; i++)
        if (argmax_row(r->logits + (size_t)i * V, V) != t[i]) return 0;
    return 1;
}

/* Teacher-forced check on the current weights with a pass of its own. */
static graft_status reproduces(ft *f, const graft_edit_tok *req, int *ok, double *loss) {
    ft_batch tb;
    GRAFT_TRY(batch_build(f, req->prompt, req->n_prompt, req->target, req->n_target, GRAFT_FT_LOSS_TARGET_NEW, &tb));
    graft_status st = pass_full(f, &tb);
    if (st == GRAFT_OK && loss) st = graft_run_loss(f->run, tb.tg, NULL, loss, NULL);
    if (st == GRAFT_OK) *ok = rows_reproduce(f->run, tb.tg, tb.n_out);
    batch_free(&tb);
    return st;
}

/* ---------------------------------------------------------------- EWC */

static void hist_clear(ft *f) {
    for (int i = 0; i < f->n_hist; i++) {
        ft_req *h = &f->hist[(f->hist_at + i) % f->o.ewc_window];
        free(h->prompt), free(h->target);
        memset(h, 0, sizeof *h);
    }
    f->n_hist = f->hist_at = 0;
}

/* Remember a request (EWC only), dropping the oldest beyond the window. */
static graft_status hist_push(ft *f, const int *p, int np, const int *t, int nt) {
    if (f->o.variant != GRAFT_FT_EWC) return GRAFT_OK;
    int W = f->o.ewc_window;
    int *pc = malloc((size_t)np * sizeof(int)), *tc = malloc((size_t)nt * sizeof(int));
    if (!pc || !tc) {
        free(pc), free(tc);
        return graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    }
    memcpy(pc, p, (size_t)np * sizeof(int));
    memcpy(tc, t, (size_t)nt * sizeof(int));
    ft_req *slot;
    if (f->n_hist == W) {
        slot = &f->hist[f->hist_at];
        free(slot->prompt), free(slot->target);
        f->hist_at = (f->hist_at + 1) % W;
    } else
        slot = &f->hist[(f->hist_at + f->n_hist++) % W];
    *slot = (ft_req){pc, tc, np, nt};
    return GRAFT_OK;
}

/* F = mean over the remembered edits of the squared gradient of each one's
 * loss at the current weights, each gradient computed on its own. (The
 * official code squares running sums of gradients, divides by the window
 * even when fewer edits exist, and counts the current edit too.) */
static graft_status estimate_fisher(ft *f) {
    for (int i = 0; i < f->n; i++) memset(f->t[i].fisher, 0, f->t[i].p->numel * sizeof(float));
    if (f->n_hist == 0) return GRAFT_OK;
    for (int k = 0; k < f->n_hist; k++) {
        const ft_req *h = &f->hist[(f->hist_at + k) % f->o.ewc_window];
        ft_batch b;
        GRAFT_TRY(batch_build(f, h->prompt, h->np, h->target, h->nt, f->o.loss, &b));
        graft_status st = pass_full(f, &b);
        if (st == GRAFT_OK) {
            grads_zero(f);
            st = backward(f, &b);
        }
        batch_free(&b);
        if (st != GRAFT_OK) return st;
        for (int i = 0; i < f->n; i++) {
            float *F = f->t[i].fisher;
            const float *g = f->t[i].grad;
            for (size_t j = 0; j < f->t[i].p->numel; j++) F[j] += g[j] * g[j];
        }
    }
    float inv = 1.0f / (float)f->n_hist;
    for (int i = 0; i < f->n; i++)
        for (size_t j = 0; j < f->t[i].p->numel; j++) f->t[i].fisher[j] *= inv;
    return GRAFT_OK;
}

static double add_penalty(ft *f) {
    double s = 0;
    if (f->o.variant != GRAFT_FT_EWC || f->n_hist == 0) return 0;
    for (int i = 0; i < f->n; i++)
        s += graft_ewc_penalty(f->t[i].p->data, f->t[i].before, f->t[i].fisher, f->t[i].p->numel, f->o.ewc_lambda,
                               f->t[i].grad);
    return s;
}

/* ---------------------------------------------------------------- change records */

/* Layout (little-endian, native floats):
 *   u32 magic, u32 version, u32 variant, u32 n_tensors,
 *   f64 loss_first, f64 loss_last, i32 iterations, i32 reproduced,
 *   i32 n_prompt, i32 n_target, i32 prompt[], i32 target[],
 *   per tensor: u32 name_len, name, u64 numel,
 *               f64 |delta|_F, f64 max|delta|, f64 |W - W_base|_F after,
 *               f32 delta[numel]   (what replay adds) */
typedef struct rec_head {
    uint32_t magic, version, variant, n_tensors;
    double loss_first, loss_last;
    int32_t iterations, reproduced, np, nt;
} rec_head;

static graft_status put_head(graft_blob *b, const ft *f, const graft_edit_info *info, const graft_edit_tok *req) {
    uint32_t h[4] = {CHANGE_MAGIC, CHANGE_VERSION, (uint32_t)f->o.variant, (uint32_t)f->n};
    int32_t iv[4] = {info->iterations, info->reproduced, req->n_prompt, req->n_target};
    GRAFT_TRY(graft_blob_put(b, h, sizeof h));
    GRAFT_TRY(graft_blob_put(b, &info->loss_first, sizeof(double)));
    GRAFT_TRY(graft_blob_put(b, &info->loss_last, sizeof(double)));
    GRAFT_TRY(graft_blob_put(b, iv, sizeof iv));
    GRAFT_TRY(graft_blob_put(b, req->prompt, (size_t)req->n_prompt * sizeof(int32_t)));
    return graft_blob_put(b, req->target, (size_t)req->n_target * sizeof(int32_t));
}

static graft_status get_head(graft_blob_reader *rd, const ft *f, rec_head *h) {
    uint32_t u[4];
    int32_t iv[4];
    GRAFT_TRY(graft_blob_get(rd, u, sizeof u));
    if (u[0] != CHANGE_MAGIC || u[1] != CHANGE_VERSION)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: bad magic/version (%08x, %u)", u[0], u[1]);
    if (u[2] != (uint32_t)f->o.variant)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: written by '%s', replayed into '%s'",
                          graft_ft_method_name((graft_ft_variant)(u[2] < 3 ? u[2] : 3)),
                          graft_ft_method_name(f->o.variant));
    if (u[3] != (uint32_t)f->n)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: %u tensors; this editor trains %d", u[3], f->n);
    h->magic = u[0], h->version = u[1], h->variant = u[2], h->n_tensors = u[3];
    GRAFT_TRY(graft_blob_get(rd, &h->loss_first, sizeof(double)));
    GRAFT_TRY(graft_blob_get(rd, &h->loss_last, sizeof(double)));
    GRAFT_TRY(graft_blob_get(rd, iv, sizeof iv));
    h->iterations = iv[0], h->reproduced = iv[1], h->np = iv[2], h->nt = iv[3];
    if (h->np < 1 || h->nt < 1 || (size_t)h->np + (size_t)h->nt > (rd->len - rd->at) / sizeof(int32_t))
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: truncated or bad request lengths (%d, %d) at byte %zu",
                          h->np, h->nt, rd->at);
    return GRAFT_OK;
}

/* Check tensor i's header in the record against the editor; leaves the
 * reader at its delta. */
static graft_status get_tensor_head(graft_blob_reader *rd, const ft_tensor *t) {
    uint32_t nl;
    uint64_t numel;
    double norms[3];
    GRAFT_TRY(graft_blob_get(rd, &nl, sizeof nl));
    size_t want = strlen(t->p->name);
    if (nl != want || nl > rd->len - rd->at || memcmp(rd->p + rd->at, t->p->name, nl) != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: at byte %zu expected tensor %s", rd->at, t->p->name);
    rd->at += nl;
    GRAFT_TRY(graft_blob_get(rd, &numel, sizeof numel));
    if (numel != t->p->numel)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: %s has %llu elements; the model's has %zu", t->p->name,
                          (unsigned long long)numel, t->p->numel);
    GRAFT_TRY(graft_blob_get(rd, norms, sizeof norms));
    if (t->p->numel * sizeof(float) > rd->len - rd->at)
        return graft_fail(GRAFT_ERR_FORMAT, "FT change record: truncated in the delta of %s (byte %zu)", t->p->name, rd->at);
    return GRAFT_OK;
}

static graft_status ft_replay(graft_editor *e, const uint8_t *data, size_t len) {
    ft *f = (ft *)e;
    graft_blob_reader rd = {data, len, 0, "FT change record"};
    rec_head h;
    /* pass 1: the whole record is well formed before any weight changes */
    GRAFT_TRY(get_head(&rd, f, &h));
    size_t req_at = rd.at;
    rd.at += ((size_t)h.np + (size_t)h.nt) * sizeof(int32_t);
    for (int i = 0; i < f->n; i++) {
        GRAFT_TRY(get_tensor_head(&rd, &f->t[i]));
        rd.at += f->t[i].p->numel * sizeof(float);
    }
    if (rd.at != rd.len) return graft_fail(GRAFT_ERR_FORMAT, "FT change record: %zu trailing bytes", rd.len - rd.at);
    /* pass 2: apply (the delta goes through the grad buffer: blob data need not be aligned) */
    int *p = malloc((size_t)h.np * sizeof(int)), *t = malloc((size_t)h.nt * sizeof(int));
    if (!p || !t) {
        free(p), free(t);
        return graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    }
    memcpy(p, data + req_at, (size_t)h.np * sizeof(int));
    memcpy(t, data + req_at + (size_t)h.np * sizeof(int), (size_t)h.nt * sizeof(int));
    rd.at = req_at + ((size_t)h.np + (size_t)h.nt) * sizeof(int32_t);
    graft_status st = GRAFT_OK;
    for (int i = 0; i < f->n && st == GRAFT_OK; i++) {
        ft_tensor *ti = &f->t[i];
        st = get_tensor_head(&rd, ti);
        if (st == GRAFT_OK) st = graft_blob_get(&rd, ti->grad, ti->p->numel * sizeof(float));
        if (st == GRAFT_OK) write_tensor(f, ti, ti->p->data, ti->grad);
    }
    if (st == GRAFT_OK) st = hist_push(f, p, h.np, t, h.nt);
    free(p), free(t);
    if (st == GRAFT_OK) e->n_edits++;
    return st;
}

/* ---------------------------------------------------------------- apply */

static graft_status ft_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change) {
    ft *f = (ft *)e;
    memset(info, 0, sizeof *info);
    snprintf(info->action, sizeof info->action, "%s", graft_ft_method_name(f->o.variant));
    ft_batch b;
    GRAFT_TRY(batch_build(f, req->prompt, req->n_prompt, req->target, req->n_target, f->o.loss, &b));
    for (int i = 0; i < f->n; i++) memcpy(f->t[i].before, f->t[i].p->data, f->t[i].p->numel * sizeof(float));

    graft_status st = GRAFT_OK;
    if (f->o.variant == GRAFT_FT_EWC) st = estimate_fisher(f);
    if (st == GRAFT_OK) st = pass_full(f, &b);
    for (int i = 0; i < f->n; i++) {
        memset(f->t[i].m, 0, f->t[i].p->numel * sizeof(float));
        memset(f->t[i].v, 0, f->t[i].p->numel * sizeof(float));
    }
    for (int it = 0; st == GRAFT_OK; it++) {
        if (it > 0 && (st = pass_again(f))) break;
        double loss;
        if ((st = graft_run_loss(f->run, b.tg, NULL, &loss, NULL))) break;
        if (it == 0) info->loss_first = loss;
        info->loss_last = loss;
        if (it == f->o.steps || (f->o.stop_loss > 0 && loss < f->o.stop_loss)) break;
        if (f->o.early_stop) {
            int ok = 0;
            if (f->o.loss == GRAFT_FT_LOSS_TARGET_NEW)
                ok = rows_reproduce(f->run, b.tg, b.n_out);
            else if ((st = reproduces(f, req, &ok, NULL)) || (!ok && (st = pass_full(f, &b))))
                break; /* the check replaced the batch: restore it */
            if (ok) break;
        }
        grads_zero(f);
        if ((st = backward(f, &b))) break;
        add_penalty(f);
        for (int i = 0; i < f->n; i++) {
            ft_tensor *t = &f->t[i];
            adam_step(t->p->data, t->grad, t->m, t->v, t->p->numel, it + 1, f->o.lr);
            if (f->o.variant == GRAFT_FT_L)
                clamp_tensor(t->p->data, f->o.linf_anchor == GRAFT_FT_ANCHOR_BASE ? t->base : t->before, t->p->numel,
                             f->o.linf);
        }
        info->iterations = it + 1;
    }
    batch_free(&b);
    if (st != GRAFT_OK) {
        /* leave the model as it was */
        for (int i = 0; i < f->n; i++) memcpy(f->t[i].p->data, f->t[i].before, f->t[i].p->numel * sizeof(float));
        return st;
    }

    /* The final write, the same operation replay performs. */
    for (int i = 0; i < f->n; i++) {
        ft_tensor *t = &f->t[i];
        float *d = t->grad;
        for (size_t j = 0; j < t->p->numel; j++) d[j] = t->p->data[j] - t->before[j];
        write_tensor(f, t, t->before, d);
    }
    /* Outcome on the written weights (teacher-forced, whatever the loss layout). */
    double tf_loss;
    st = reproduces(f, req, &info->reproduced, &tf_loss);
    if (st == GRAFT_OK && f->o.loss == GRAFT_FT_LOSS_TARGET_NEW) info->loss_last = tf_loss;
    info->rows_changed = f->n;

    if (st == GRAFT_OK) st = put_head(change, f, info, req);
    for (int i = 0; i < f->n && st == GRAFT_OK; i++) {
        ft_tensor *t = &f->t[i];
        uint32_t nl = (uint32_t)strlen(t->p->name);
        uint64_t numel = t->p->numel;
        double dn = 0, dmax = 0, drift = 0;
        for (size_t j = 0; j < t->p->numel; j++) {
            double d = (double)t->p->data[j] - t->before[j], r = (double)t->p->data[j] - t->base[j];
            dn += d * d;
            drift += r * r;
            if (fabs(d) > dmax) dmax = fabs(d);
        }
        double norms[3] = {sqrt(dn), dmax, sqrt(drift)};
        if ((st = graft_blob_put(change, &nl, sizeof nl)) || (st = graft_blob_put(change, t->p->name, nl)) ||
            (st = graft_blob_put(change, &numel, sizeof numel)) || (st = graft_blob_put(change, norms, sizeof norms)))
            break;
        st = graft_blob_put(change, t->grad, t->p->numel * sizeof(float));
    }
    if (st == GRAFT_OK) st = hist_push(f, req->prompt, req->n_prompt, req->target, req->n_target);
    if (st != GRAFT_OK) {
        for (int i = 0; i < f->n; i++) memcpy(f->t[i].p->data, f->t[i].before, f->t[i].p->numel * sizeof(float));
        return st;
    }
    e->n_edits++;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- reset, export, free */

static graft_status ft_reset(graft_editor *e) {
    ft *f = (ft *)e;
    for (int i = 0; i < f->n; i++) memcpy(f->t[i].p->data, f->t[i].base, f->t[i].p->numel * sizeof(float));
    hist_clear(f);
    e->n_edits = 0;
    return GRAFT_OK;
}

/* The cumulative delta W - W_base of every trained tensor, under the
 * parameter's own name: adding it to the base checkpoint gives the edited
 * weights (up to rounding; `graft export` writes the edited model itself). */
static graft_status ft_export(graft_editor *e, const char *path) {
    ft *f = (ft *)e;
    graft_st_write_item *items = calloc((size_t)f->n, sizeof *items);
    float **bufs = calloc((size_t)f->n, sizeof *bufs);
    graft_status st = (items && bufs) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "FT export: out of memory");
    for (int i = 0; i < f->n && st == GRAFT_OK; i++) {
        const ft_tensor *t = &f->t[i];
        bufs[i] = malloc(t->p->numel * sizeof(float));
        if (!bufs[i]) {
            st = graft_fail(GRAFT_ERR_NOMEM, "FT export: out of memory");
            break;
        }
        for (size_t j = 0; j < t->p->numel; j++) bufs[i][j] = t->p->data[j] - t->base[j];
        items[i].name = t->p->name;
        items[i].dtype = GRAFT_F32;
        items[i].ndim = t->p->ndim;
        for (int d = 0; d < t->p->ndim; d++) items[i].shape[d] = t->p->shape[d];
        items[i].data = bufs[i];
    }
    if (st == GRAFT_OK) {
        char n_edits[32];
        snprintf(n_edits, sizeof n_edits, "%lld", (long long)e->n_edits);
        const char *meta[] = {"editor", graft_ft_method_name(f->o.variant), "content", "delta = edited - base weights",
                              "edits", n_edits};
        st = graft_st_write(path, items, f->n, meta, 3);
    }
    for (int i = 0; bufs && i < f->n; i++) free(bufs[i]);
    free(bufs);
    free(items);
    return st;
}

static void ft_free(graft_editor *e) {
    ft *f = (ft *)e;
    if (!f) return;
    for (int i = 0; f->t && i < f->n; i++) {
        ft_tensor *t = &f->t[i];
        graft_free_aligned(t->base), graft_free_aligned(t->before), graft_free_aligned(t->grad);
        graft_free_aligned(t->m), graft_free_aligned(t->v), graft_free_aligned(t->fisher);
    }
    free(f->t);
    if (f->hist) hist_clear(f);
    free(f->hist);
    free(f->grads.w.layers);
    graft_run_free(f->run);
    free(f);
}

static const graft_editor_ops ft_ops[3] = {
#define FT_OPS(nm)                                                                                                     \
    {.name = nm, .apply = ft_apply, .replay = ft_replay, .revert = NULL, .reset = ft_reset, .attach = NULL,            \
     .detach = NULL, .set_keys = NULL, .export_st = ft_export, .free = ft_free}
    FT_OPS("ft"), FT_OPS("ftl"), FT_OPS("ewc")
#undef FT_OPS
};

/* Equality only: ordering pointers into different objects is undefined. */
int graft_ft_is(const graft_editor *e) {
    return e && (e->ops == &ft_ops[0] || e->ops == &ft_ops[1] || e->ops == &ft_ops[2]);
}

/* ---------------------------------------------------------------- create */

graft_status graft_ft_create(graft_model *m, const graft_ft_opts *o, graft_editor **out) {
    *out = NULL;
    GRAFT_TRY(graft_model_need_f32(m)); /* this editor trains or writes f32 weights */
    if (!o || o->variant < GRAFT_FT_PLAIN || o->variant > GRAFT_FT_EWC)
        return graft_fail(GRAFT_ERR_INVALID, "FT: no options or an unknown variant");
    const char *name = graft_ft_method_name(o->variant);
    if (!(o->lr > 0) || o->steps < 0 || !(o->stop_loss >= 0))
        return graft_fail(GRAFT_ERR_INVALID, "%s: lr must be > 0, steps >= 0, stop_loss >= 0 (got %g, %d, %g)", name,
                          (double)o->lr, o->steps, (double)o->stop_loss);
    if (o->variant == GRAFT_FT_L && !(o->linf > 0))
        return graft_fail(GRAFT_ERR_INVALID, "ftl: linf (the L-inf radius) must be > 0, got %g", (double)o->linf);
    if (o->variant == GRAFT_FT_EWC && (!(o->ewc_lambda >= 0) || o->ewc_window < 1 || o->ewc_window > 100000))
        return graft_fail(GRAFT_ERR_INVALID, "ewc: ewc_lambda must be >= 0 and ewc_window in [1, 100000] (got %g, %d)",
                          (double)o->ewc_lambda, o->ewc_window);
    if (o->n_params < 0 || o->n_params > GRAFT_FT_MAX_LIST || o->n_layers < 0 || o->n_layers > GRAFT_FT_MAX_LIST ||
        o->n_modules < 0 || o->n_modules > GRAFT_FT_MAX_LIST)
        return graft_fail(GRAFT_ERR_INVALID, "%s: at most %d params, layers and modules", name, GRAFT_FT_MAX_LIST);
    ft *f = calloc(1, sizeof *f);
    if (!f) return graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    f->base.ops = &ft_ops[o->variant];
    f->base.m = m;
    f->o = *o;
    if (o->variant != GRAFT_FT_L) f->o.linf = 0;
    if (o->variant != GRAFT_FT_EWC) f->o.ewc_lambda = 0, f->o.ewc_window = 0;
    graft_status st = select_tensors(f);
    if (st == GRAFT_OK) {
        f->grads.w.layers = calloc((size_t)m->cfg.n_layer, sizeof *f->grads.w.layers);
        if (!f->grads.w.layers) st = graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    }
    if (st == GRAFT_OK && f->o.variant == GRAFT_FT_EWC) {
        f->hist = calloc((size_t)f->o.ewc_window, sizeof *f->hist);
        if (!f->hist) st = graft_fail(GRAFT_ERR_NOMEM, "FT: out of memory");
    }
    for (int i = 0; i < f->n && st == GRAFT_OK; i++) {
        ft_tensor *t = &f->t[i];
        size_t bytes = t->p->numel * sizeof(float);
        t->base = graft_alloc_aligned(bytes);
        t->before = graft_alloc_aligned(bytes);
        t->grad = graft_calloc_aligned(bytes);
        t->m = graft_alloc_aligned(bytes);
        t->v = graft_alloc_aligned(bytes);
        if (f->o.variant == GRAFT_FT_EWC) t->fisher = graft_calloc_aligned(bytes);
        if (!t->base || !t->before || !t->grad || !t->m || !t->v || (f->o.variant == GRAFT_FT_EWC && !t->fisher)) {
            st = graft_fail(GRAFT_ERR_NOMEM, "FT: cannot allocate the state of %s (%zu MiB)", t->p->name,
                            (6 * bytes) >> 20);
            break;
        }
        memcpy(t->base, t->p->data, bytes);
        st = bind_tensor(f, t);
    }
    if (st != GRAFT_OK) {
        ft_free(&f->base);
        return st;
    }
    plan_passes(f);
    *out = &f->base;
    return GRAFT_OK;
}

void graft_ft_get_opts(graft_editor *e, graft_ft_opts *o) { *o = ((ft *)e)->o; }

int graft_ft_n_tensors(graft_editor *e) { return ((ft *)e)->n; }

graft_param *graft_ft_tensor(graft_editor *e, int i, const float **base) {
    ft *f = (ft *)e;
    if (i < 0 || i >= f->n) return NULL;
    if (base) *base = f->t[i].base;
    return f->t[i].p;
}

/* ---------------------------------------------------------------- test hooks */

graft_status graft_ft_debug_anchor(graft_editor *e) {
    ft *f = (ft *)e;
    for (int i = 0; i < f->n; i++) memcpy(f->t[i].before, f->t[i].p->data, f->t[i].p->numel * sizeof(float));
    return f->o.variant == GRAFT_FT_EWC ? estimate_fisher(f) : GRAFT_OK;
}

graft_status graft_ft_debug_objective(graft_editor *e, const graft_edit_tok *req, double *objective,
                                      float *const *grads) {
    ft *f = (ft *)e;
    ft_batch b;
    GRAFT_TRY(batch_build(f, req->prompt, req->n_prompt, req->target, req->n_target, f->o.loss, &b));
    double loss = 0;
    graft_status st = pass_full(f, &b);
    if (st == GRAFT_OK) st = graft_run_loss(f->run, b.tg, NULL, &loss, NULL);
    if (st == GRAFT_OK) {
        grads_zero(f);
        st = backward(f, &b);
    }
    if (st == GRAFT_OK) {
        *objective = loss + add_penalty(f);
        for (int i = 0; grads && i < f->n; i++)
            if (grads[i]) memcpy(grads[i], f->t[i].grad, f->t[i].p->numel * sizeof(float));
    }
    batch_free(&b);
    return st;
}

/* ---------------------------------------------------------------- options JSON */

static int name_index(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* "3", "1-3", "0,2,5" (ranges inclusive) into o->layers; 0 on a bad string. */
static int parse_layer_string(const char *s, graft_ft_opts *o) {
    int n = 0;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || a < 0 || a > 65535) return 0;
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            if (end == s + 1 || b < a || b > 65535) return 0;
            s = end;
        }
        for (long l = a; l <= b; l++) {
            if (n == GRAFT_FT_MAX_LIST) return 0;
            o->layers[n++] = (int)l;
        }
        if (*s == ',') s++;
        else if (*s) return 0;
    }
    o->n_layers = n;
    return n > 0;
}

graft_status graft_ft_opts_from_json(graft_ft_variant v, const cJSON *j, graft_ft_opts *o, const char *where) {
    graft_ft_opts_default(o, v);
    const char *mname = graft_ft_method_name(v);
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        const char *k = it->string;
        int ok = 1;
        if (!strcmp(k, "params") || !strcmp(k, "modules") || (!strcmp(k, "layers") && !cJSON_IsString(it))) {
            ok = cJSON_IsArray(it) && cJSON_GetArraySize(it) <= GRAFT_FT_MAX_LIST;
            int n = 0;
            const cJSON *x;
            cJSON_ArrayForEach(x, it) {
                if (!ok) break;
                if (!strcmp(k, "layers")) {
                    ok = cJSON_IsNumber(x) && x->valuedouble == (double)x->valueint;
                    if (ok) o->layers[n] = x->valueint;
                } else {
                    size_t cap = !strcmp(k, "params") ? GRAFT_FT_NAME_LEN : sizeof o->modules[0];
                    ok = cJSON_IsString(x) && x->valuestring[0] && strlen(x->valuestring) < cap;
                    if (ok) snprintf(!strcmp(k, "params") ? o->params[n] : o->modules[n], cap, "%s", x->valuestring);
                }
                n++;
            }
            if (!strcmp(k, "params")) o->n_params = n;
            else if (!strcmp(k, "modules")) o->n_modules = n;
            else o->n_layers = n;
        } else if (!strcmp(k, "layers") && cJSON_IsString(it)) {
            /* the CLI's shared --layers flag: "3", "1-3" or "0,2" */
            ok = parse_layer_string(it->valuestring, o);
        } else if (!strcmp(k, "layer")) {
            /* the CLI's --layer (shared with GRACE): one layer */
            ok = cJSON_IsNumber(it);
            o->n_layers = 1;
            o->layers[0] = it->valueint;
        } else if (!strcmp(k, "loss")) {
            int idx = cJSON_IsString(it) ? name_index(it->valuestring, loss_names, 2) : -1;
            ok = idx >= 0;
            if (ok) o->loss = (graft_ft_loss)idx;
        } else if (!strcmp(k, "lr") || !strcmp(k, "edit_lr")) {
            ok = cJSON_IsNumber(it);
            o->lr = (float)it->valuedouble;
        } else if (!strcmp(k, "steps") || !strcmp(k, "n_iter")) {
            ok = cJSON_IsNumber(it);
            o->steps = it->valueint;
        } else if (!strcmp(k, "stop_loss")) {
            ok = cJSON_IsNumber(it);
            o->stop_loss = (float)it->valuedouble;
        } else if (!strcmp(k, "early_stop")) {
            ok = cJSON_IsBool(it);
            o->early_stop = cJSON_IsTrue(it);
        } else if (!strcmp(k, "seed")) {
            ok = cJSON_IsNumber(it);
            o->seed = (uint64_t)it->valuedouble;
        } else if (v == GRAFT_FT_L && !strcmp(k, "linf")) {
            ok = cJSON_IsNumber(it);
            o->linf = (float)it->valuedouble;
        } else if (v == GRAFT_FT_L && !strcmp(k, "linf_anchor")) {
            int idx = cJSON_IsString(it) ? name_index(it->valuestring, anchor_names, 2) : -1;
            ok = idx >= 0;
            if (ok) o->linf_anchor = (graft_ft_anchor)idx;
        } else if (v == GRAFT_FT_EWC && !strcmp(k, "ewc_lambda")) {
            ok = cJSON_IsNumber(it);
            o->ewc_lambda = (float)it->valuedouble;
        } else if (v == GRAFT_FT_EWC && !strcmp(k, "ewc_window")) {
            ok = cJSON_IsNumber(it);
            o->ewc_window = it->valueint;
        } else {
            const char *owner = !strcmp(k, "linf") || !strcmp(k, "linf_anchor")   ? " (an ftl option)"
                                : !strcmp(k, "ewc_lambda") || !strcmp(k, "ewc_window") ? " (an ewc option)"
                                                                                      : "";
            return graft_fail(GRAFT_ERR_INVALID, "%s: unknown %s option '%s'%s", where, mname, k, owner);
        }
        if (!ok) return graft_fail(GRAFT_ERR_INVALID, "%s: %s option '%s' has a bad value", where, mname, k);
    }
    return GRAFT_OK;
}

graft_status graft_ft_opts_to_json(graft_editor *e, cJSON *j) {
    const graft_ft_opts *o = &((ft *)e)->o;
    int ok = 1;
    if (o->n_params > 0) {
        cJSON *a = cJSON_AddArrayToObject(j, "params");
        for (int i = 0; a && i < o->n_params; i++) ok &= graft_json_push(a, cJSON_CreateString(o->params[i]));
        ok &= a != NULL;
    } else {
        cJSON *a = cJSON_AddArrayToObject(j, "layers"), *b = cJSON_AddArrayToObject(j, "modules");
        for (int i = 0; a && i < o->n_layers; i++) ok &= graft_json_push(a, cJSON_CreateNumber(o->layers[i]));
        for (int i = 0; b && i < o->n_modules; i++) ok &= graft_json_push(b, cJSON_CreateString(o->modules[i]));
        ok &= a && b;
    }
    ok &= cJSON_AddStringToObject(j, "loss", loss_names[o->loss]) != NULL;
    ok &= cJSON_AddNumberToObject(j, "lr", o->lr) != NULL;
    ok &= cJSON_AddNumberToObject(j, "steps", o->steps) != NULL;
    ok &= cJSON_AddNumberToObject(j, "stop_loss", o->stop_loss) != NULL;
    ok &= cJSON_AddBoolToObject(j, "early_stop", o->early_stop) != NULL;
    if (o->variant == GRAFT_FT_L) {
        ok &= cJSON_AddNumberToObject(j, "linf", o->linf) != NULL;
        ok &= cJSON_AddStringToObject(j, "linf_anchor", anchor_names[o->linf_anchor]) != NULL;
    }
    if (o->variant == GRAFT_FT_EWC) {
        ok &= cJSON_AddNumberToObject(j, "ewc_lambda", o->ewc_lambda) != NULL;
        ok &= cJSON_AddNumberToObject(j, "ewc_window", o->ewc_window) != NULL;
    }
    ok &= cJSON_AddNumberToObject(j, "seed", (double)o->seed) != NULL;
    return ok ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
}
