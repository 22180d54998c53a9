/* forward.c - forward and backward passes of GPT-2 and Llama blocks, the
 * embedding and the LM head, over the buffers of a graft_run.
 *
 * Each block has one forward and one backward function, written as the
 * straight list of kernel calls of the HF modules (modeling_gpt2.py,
 * modeling_llama.py). A forward may start at a site (the layers below keep
 * their saved activations) and a backward may stop at one, which is what
 * editors need: they train something at layer l and never touch the layers
 * below it. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hooks */

static void hooks_fwd(graft_run *r, int l, graft_site s, float *act) {
    for (graft_hook *h = r->hooks; h; h = h->next)
        if (h->layer == l && h->site == s && h->forward)
            h->forward(h, r, act, graft_site_dim(&r->m->cfg, s));
}

static void hooks_bwd(graft_run *r, int l, graft_site s, float *dact) {
    for (graft_hook *h = r->hooks; h; h = h->next)
        if (h->layer == l && h->site == s && h->backward)
            h->backward(h, r, dact, graft_site_dim(&r->m->cfg, s));
}

/* Write the new keys/values of the batch into the KV cache of layer l and
 * attend over everything cached so far (generation path). */
static void attend_cached(graft_run *r, int l, graft_layer_acts *a) {
    const graft_config *cfg = &r->m->cfg;
    graft_kv *kv = r->kv;
    int kvdim = kv->kv_dim, T = r->T;
    float *kc = kv->k + ((size_t)l * kv->n_ctx) * kvdim;
    float *vc = kv->v + ((size_t)l * kv->n_ctx) * kvdim;
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)(kv->len + t) * kvdim, a->k + (size_t)t * r->ldkv, (size_t)kvdim * sizeof(float));
        memcpy(vc + (size_t)(kv->len + t) * kvdim, a->v + (size_t)t * r->ldkv, (size_t)kvdim * sizeof(float));
    }
    graft_attention_cached(a->atty, a->q, r->ldq, kc, vc, kvdim, kv->len, T, cfg->n_head, cfg->n_kv_head,
                           cfg->head_dim);
}

/* dx += dy W^T, and dw/db when a gradient table asks for them. A matrix used
 * as stored (w NULL) takes no weight gradient: graft_run_backward converts
 * the model to f32 before any backward that has a table. */
static void lin_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, graft_wmat wm,
                    int M, int K, int N, graft_layout layout) {
    if (w)
        graft_linear_backward(dx, dw, db, dy, x, w, M, K, N, layout);
    else if (dx)
        graft_linear_backward_dx_w(dx, dy, wm, M, K, N, layout);
}

/* ---------------------------------------------------------------- GPT-2 block */

/* Every block computes rows [r0, T) (r0 > 0: a suffix pass, graft_run_set_row0;
 * the earlier rows keep what an earlier pass left). ROWS(p, w) is buffer p
 * of row width w from row r0 on; hooks always see whole buffers. */
#define ROWS(p, w) ((p) + (size_t)r0 * (size_t)(w))

/* x = in + attn(ln_1(in)); out = x + mlp(ln_2(x)), starting at site `from`. */
static void gpt2_block_forward(graft_run *r, int l, graft_site from, int r0) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T - r0, C = cfg->d_model, F = cfg->d_ff;
    size_t TC = (size_t)T * C;

    if (from <= GRAFT_SITE_BLOCK_IN) {
        hooks_fwd(r, l, GRAFT_SITE_BLOCK_IN, a->in);
        graft_layernorm_forward(ROWS(a->ln1, C), ROWS(a->ln1_mean, 1), ROWS(a->ln1_rstd, 1), ROWS(a->in, C), w->ln1_w,
                                w->ln1_b, T, C, cfg->norm_eps);
        graft_linear_forward_w(ROWS(a->qkv, 3 * C), ROWS(a->ln1, C), w->qkv_m, w->qkv_b, T, C, 3 * C, GRAFT_W_KN);
        if (r->kv)
            attend_cached(r, l, a);
        else
            graft_attention_forward(a->atty, r->train ? a->att : NULL, a->q, r->ldq, a->k, a->v, r->ldkv, &r->seqs,
                                    cfg->n_head, cfg->n_kv_head, cfg->head_dim, r0);
        graft_linear_forward_w(ROWS(a->mid, C), ROWS(a->atty, C), w->o_m, w->o_b, T, C, C, GRAFT_W_KN);
        graft_acc(ROWS(a->mid, C), ROWS(a->in, C), TC);
    }
    if (from <= GRAFT_SITE_MLP_IN) {
        graft_layernorm_forward(ROWS(a->ln2, C), ROWS(a->ln2_mean, 1), ROWS(a->ln2_rstd, 1), ROWS(a->mid, C), w->ln2_w,
                                w->ln2_b, T, C, cfg->norm_eps);
        hooks_fwd(r, l, GRAFT_SITE_MLP_IN, a->ln2);
    }
    if (from <= GRAFT_SITE_MLP_PRE) {
        graft_linear_forward_w(ROWS(a->pre, F), ROWS(a->ln2, C), w->up_m, w->up_b, T, C, F, GRAFT_W_KN);
        hooks_fwd(r, l, GRAFT_SITE_MLP_PRE, a->pre);
    }
    if (from <= GRAFT_SITE_MLP_ACT) {
        graft_gelu_forward(ROWS(a->act, F), ROWS(a->pre, F), (size_t)T * F);
        hooks_fwd(r, l, GRAFT_SITE_MLP_ACT, a->act);
    }
    graft_linear_forward_w(ROWS(a->mlp_out, C), ROWS(a->act, F), w->down_m, w->down_b, T, F, C, GRAFT_W_KN);
    hooks_fwd(r, l, GRAFT_SITE_MLP_OUT, a->mlp_out);
    graft_add(ROWS(a->out, C), ROWS(a->mid, C), ROWS(a->mlp_out, C), TC);
}

/* Backward of one GPT-2 block. On entry r->d_resid holds dL/d(out); on exit
 * dL/d(in), unless the pass stops inside the block at `stop` (stop < 0: never).
 * Returns 1 when it stopped. g may be NULL (activation gradients only); it is
 * NULL whenever r0 > 0. */
static int gpt2_block_backward(graft_run *r, int l, graft_layer_weights *g, int stop, int r0) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T - r0, C = cfg->d_model, F = cfg->d_ff;
    size_t TC = (size_t)T * C, TF = (size_t)T * F;
    float *d_out = r->d_resid;

    /* out = mid + mlp_out: both branches receive d_out. */
    float *d_mlp = r->d_a;
    memcpy(ROWS(d_mlp, C), ROWS(d_out, C), TC * sizeof(float));
    hooks_bwd(r, l, GRAFT_SITE_MLP_OUT, d_mlp);
    if (stop == GRAFT_SITE_MLP_OUT) return 1;

    float *d_act = r->d_ff3;
    memset(ROWS(d_act, F), 0, TF * sizeof(float));
    lin_bwd(ROWS(d_act, F), g ? g->down_w : NULL, g ? g->down_b : NULL, ROWS(d_mlp, C), ROWS(a->act, F),
                          w->down_w, w->down_m, T, F, C, GRAFT_W_KN);
    hooks_bwd(r, l, GRAFT_SITE_MLP_ACT, d_act);
    if (stop == GRAFT_SITE_MLP_ACT) return 1;

    float *d_pre = r->d_ff1;
    memset(ROWS(d_pre, F), 0, TF * sizeof(float));
    graft_gelu_backward(ROWS(d_pre, F), ROWS(d_act, F), ROWS(a->pre, F), TF);
    hooks_bwd(r, l, GRAFT_SITE_MLP_PRE, d_pre);
    if (stop == GRAFT_SITE_MLP_PRE) return 1;

    float *d_ln2 = r->d_b;
    memset(ROWS(d_ln2, C), 0, TC * sizeof(float));
    lin_bwd(ROWS(d_ln2, C), g ? g->up_w : NULL, g ? g->up_b : NULL, ROWS(d_pre, F), ROWS(a->ln2, C),
                          w->up_w, w->up_m, T, C, F, GRAFT_W_KN);
    hooks_bwd(r, l, GRAFT_SITE_MLP_IN, d_ln2);
    if (stop == GRAFT_SITE_MLP_IN) return 1;

    /* d_out becomes d_mid: the residual gradient plus the MLP branch. */
    graft_layernorm_backward(ROWS(d_out, C), g ? g->ln2_w : NULL, g ? g->ln2_b : NULL, ROWS(d_ln2, C), ROWS(a->mid, C),
                             w->ln2_w, ROWS(a->ln2_mean, 1), ROWS(a->ln2_rstd, 1), T, C);

    float *d_atty = r->d_a;
    memset(ROWS(d_atty, C), 0, TC * sizeof(float));
    lin_bwd(ROWS(d_atty, C), g ? g->o_w : NULL, g ? g->o_b : NULL, ROWS(d_out, C), ROWS(a->atty, C),
                          w->o_w, w->o_m, T, C, C, GRAFT_W_KN);
    float *d_qkv = r->d_qkv;
    memset(ROWS(d_qkv, 3 * C), 0, TC * 3 * sizeof(float));
    graft_attention_backward(d_qkv, d_qkv + C, d_qkv + 2 * C, r->ldq, r->ldkv, d_atty, a->att, a->q, a->k, a->v,
                             &r->seqs, cfg->n_head, cfg->n_kv_head, cfg->head_dim, r0);
    float *d_ln1 = r->d_b;
    memset(ROWS(d_ln1, C), 0, TC * sizeof(float));
    lin_bwd(ROWS(d_ln1, C), g ? g->qkv_w : NULL, g ? g->qkv_b : NULL, ROWS(d_qkv, 3 * C),
                          ROWS(a->ln1, C), w->qkv_w, w->qkv_m, T, C, 3 * C, GRAFT_W_KN);
    /* d_mid becomes d_in. */
    graft_layernorm_backward(ROWS(d_out, C), g ? g->ln1_w : NULL, g ? g->ln1_b : NULL, ROWS(d_ln1, C), ROWS(a->in, C),
                             w->ln1_w, ROWS(a->ln1_mean, 1), ROWS(a->ln1_rstd, 1), T, C);
    hooks_bwd(r, l, GRAFT_SITE_BLOCK_IN, d_out);
    return stop == GRAFT_SITE_BLOCK_IN;
}

/* ---------------------------------------------------------------- Llama block */

/* x = in + o(attn(rope(q), rope(k), v)) on RMS(in); out = x + down(silu(gate) * up) on RMS(x). */
static void llama_block_forward(graft_run *r, int l, graft_site from, int r0) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T - r0, C = cfg->d_model, F = cfg->d_ff;
    int qdim = cfg->n_head * cfg->head_dim, kvdim = cfg->n_kv_head * cfg->head_dim;
    size_t TC = (size_t)T * C;

    if (from <= GRAFT_SITE_BLOCK_IN) {
        hooks_fwd(r, l, GRAFT_SITE_BLOCK_IN, a->in);
        graft_rmsnorm_forward(ROWS(a->ln1, C), ROWS(a->ln1_rstd, 1), ROWS(a->in, C), w->ln1_w, T, C, cfg->norm_eps);
        graft_linear_forward_w(ROWS(a->q, r->ldq), ROWS(a->ln1, C), w->q_m, NULL, T, C, qdim, GRAFT_W_NK);
        graft_linear_forward_w(ROWS(a->k, r->ldkv), ROWS(a->ln1, C), w->k_m, NULL, T, C, kvdim, GRAFT_W_NK);
        graft_linear_forward_w(ROWS(a->v, r->ldkv), ROWS(a->ln1, C), w->v_m, NULL, T, C, kvdim, GRAFT_W_NK);
        graft_rope_forward(ROWS(a->q, r->ldq), r->ldq, r->pos + r0, T, cfg->n_head, cfg->head_dim, cfg->rope_theta,
                           cfg->rope_interleaved);
        graft_rope_forward(ROWS(a->k, r->ldkv), r->ldkv, r->pos + r0, T, cfg->n_kv_head, cfg->head_dim, cfg->rope_theta,
                           cfg->rope_interleaved);
        if (r->kv)
            attend_cached(r, l, a);
        else
            graft_attention_forward(a->atty, r->train ? a->att : NULL, a->q, r->ldq, a->k, a->v, r->ldkv, &r->seqs,
                                    cfg->n_head, cfg->n_kv_head, cfg->head_dim, r0);
        graft_linear_forward_w(ROWS(a->mid, C), ROWS(a->atty, qdim), w->o_m, NULL, T, qdim, C, GRAFT_W_NK);
        graft_acc(ROWS(a->mid, C), ROWS(a->in, C), TC);
    }
    if (from <= GRAFT_SITE_MLP_IN) {
        graft_rmsnorm_forward(ROWS(a->ln2, C), ROWS(a->ln2_rstd, 1), ROWS(a->mid, C), w->ln2_w, T, C, cfg->norm_eps);
        hooks_fwd(r, l, GRAFT_SITE_MLP_IN, a->ln2);
    }
    if (from <= GRAFT_SITE_MLP_PRE) {
        graft_linear_forward_w(ROWS(a->pre, F), ROWS(a->ln2, C), w->up_m, NULL, T, C, F, GRAFT_W_NK);
        graft_linear_forward_w(ROWS(a->gate, F), ROWS(a->ln2, C), w->gate_m, NULL, T, C, F, GRAFT_W_NK);
        hooks_fwd(r, l, GRAFT_SITE_MLP_PRE, a->pre);
    }
    if (from <= GRAFT_SITE_MLP_ACT) {
        graft_swiglu_forward(ROWS(a->act, F), ROWS(a->gate, F), ROWS(a->pre, F), (size_t)T * F);
        hooks_fwd(r, l, GRAFT_SITE_MLP_ACT, a->act);
    }
    graft_linear_forward_w(ROWS(a->mlp_out, C), ROWS(a->act, F), w->down_m, NULL, T, F, C, GRAFT_W_NK);
    hooks_fwd(r, l, GRAFT_SITE_MLP_OUT, a->mlp_out);
    graft_add(ROWS(a->out, C), ROWS(a->mid, C), ROWS(a->mlp_out, C), TC);
}

static int llama_block_backward(graft_run *r, int l, graft_layer_weights *g, int stop, int r0) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T - r0, C = cfg->d_model, F = cfg->d_ff;
    int qdim = cfg->n_head * cfg->head_dim, kvdim = cfg->n_kv_head * cfg->head_dim;
    size_t TC = (size_t)T * C, TF = (size_t)T * F;
    float *d_out = r->d_resid;

    float *d_mlp = r->d_a;
    memcpy(ROWS(d_mlp, C), ROWS(d_out, C), TC * sizeof(float));
    hooks_bwd(r, l, GRAFT_SITE_MLP_OUT, d_mlp);
    if (stop == GRAFT_SITE_MLP_OUT) return 1;

    float *d_act = r->d_ff3;
    memset(ROWS(d_act, F), 0, TF * sizeof(float));
    lin_bwd(ROWS(d_act, F), g ? g->down_w : NULL, NULL, ROWS(d_mlp, C), ROWS(a->act, F), w->down_w, w->down_m, T, F,
                          C, GRAFT_W_NK);
    hooks_bwd(r, l, GRAFT_SITE_MLP_ACT, d_act);
    if (stop == GRAFT_SITE_MLP_ACT) return 1;

    float *d_up = r->d_ff1, *d_gate = r->d_ff2;
    memset(ROWS(d_up, F), 0, TF * sizeof(float));
    memset(ROWS(d_gate, F), 0, TF * sizeof(float));
    graft_swiglu_backward(ROWS(d_gate, F), ROWS(d_up, F), ROWS(d_act, F), ROWS(a->gate, F), ROWS(a->pre, F), TF);
    hooks_bwd(r, l, GRAFT_SITE_MLP_PRE, d_up);
    if (stop == GRAFT_SITE_MLP_PRE) return 1;

    float *d_ln2 = r->d_b;
    memset(ROWS(d_ln2, C), 0, TC * sizeof(float));
    lin_bwd(ROWS(d_ln2, C), g ? g->up_w : NULL, NULL, ROWS(d_up, F), ROWS(a->ln2, C), w->up_w, w->up_m, T, C, F,
                          GRAFT_W_NK);
    lin_bwd(ROWS(d_ln2, C), g ? g->gate_w : NULL, NULL, ROWS(d_gate, F), ROWS(a->ln2, C), w->gate_w, w->gate_m, T,
                          C, F, GRAFT_W_NK);
    hooks_bwd(r, l, GRAFT_SITE_MLP_IN, d_ln2);
    if (stop == GRAFT_SITE_MLP_IN) return 1;

    graft_rmsnorm_backward(ROWS(d_out, C), g ? g->ln2_w : NULL, ROWS(d_ln2, C), ROWS(a->mid, C), w->ln2_w,
                           ROWS(a->ln2_rstd, 1), T, C);

    float *d_atty = r->d_a;
    memset(ROWS(d_atty, qdim), 0, (size_t)T * qdim * sizeof(float));
    lin_bwd(ROWS(d_atty, qdim), g ? g->o_w : NULL, NULL, ROWS(d_out, C), ROWS(a->atty, qdim), w->o_w, w->o_m, T,
                          qdim, C, GRAFT_W_NK);
    /* dq, dk, dv: three [T_all, dim] blocks of d_qkv */
    float *dq = r->d_qkv, *dk = dq + (size_t)r->T * qdim, *dv = dk + (size_t)r->T * kvdim;
    memset(ROWS(dq, qdim), 0, (size_t)T * qdim * sizeof(float));
    memset(ROWS(dk, kvdim), 0, (size_t)T * kvdim * sizeof(float));
    memset(ROWS(dv, kvdim), 0, (size_t)T * kvdim * sizeof(float));
    graft_attention_backward(dq, dk, dv, qdim, kvdim, d_atty, a->att, a->q, a->k, a->v, &r->seqs, cfg->n_head,
                             cfg->n_kv_head, cfg->head_dim, r0);
    graft_rope_backward(ROWS(dq, qdim), qdim, r->pos + r0, T, cfg->n_head, cfg->head_dim, cfg->rope_theta,
                        cfg->rope_interleaved);
    graft_rope_backward(ROWS(dk, kvdim), kvdim, r->pos + r0, T, cfg->n_kv_head, cfg->head_dim, cfg->rope_theta,
                        cfg->rope_interleaved);
    float *d_ln1 = r->d_b;
    memset(ROWS(d_ln1, C), 0, TC * sizeof(float));
    lin_bwd(ROWS(d_ln1, C), g ? g->q_w : NULL, NULL, ROWS(dq, qdim), ROWS(a->ln1, C), w->q_w, w->q_m, T, C, qdim,
                          GRAFT_W_NK);
    lin_bwd(ROWS(d_ln1, C), g ? g->k_w : NULL, NULL, ROWS(dk, kvdim), ROWS(a->ln1, C), w->k_w, w->k_m, T, C,
                          kvdim, GRAFT_W_NK);
    lin_bwd(ROWS(d_ln1, C), g ? g->v_w : NULL, NULL, ROWS(dv, kvdim), ROWS(a->ln1, C), w->v_w, w->v_m, T, C,
                          kvdim, GRAFT_W_NK);
    graft_rmsnorm_backward(ROWS(d_out, C), g ? g->ln1_w : NULL, ROWS(d_ln1, C), ROWS(a->in, C), w->ln1_w,
                           ROWS(a->ln1_rstd, 1), T, C);
    hooks_bwd(r, l, GRAFT_SITE_BLOCK_IN, d_out);
    return stop == GRAFT_SITE_BLOCK_IN;
}

/* ---------------------------------------------------------------- embedding and head */

static void embed_forward(graft_run *r) {
    const graft_config *cfg = &r->m->cfg;
    graft_embed_forward_w(r->embed, r->ids, r->pos, r->m->w.wte_m, cfg->arch == GRAFT_ARCH_GPT2 ? r->m->w.wpe : NULL,
                          r->T, cfg->d_model);
}

/* Final norm and LM head on the out rows only: the rows are gathered first,
 * so a 256-token prompt whose last logits are wanted pays the head for one row
 * (the head is a third of GPT-2 small's FLOPs per token). */
static void head_forward(graft_run *r) {
    const graft_config *cfg = &r->m->cfg;
    int C = cfg->d_model, NO = r->n_out;
    const float *top = r->layers[cfg->n_layer - 1].out;
    for (int i = 0; i < NO; i++)
        memcpy(r->head_in + (size_t)i * C, top + (size_t)r->out_rows[i] * C, (size_t)C * sizeof(float));
    if (cfg->arch == GRAFT_ARCH_GPT2)
        graft_layernorm_forward(r->lnf, r->lnf_mean, r->lnf_rstd, r->head_in, r->m->w.lnf_w, r->m->w.lnf_b, NO, C,
                                cfg->norm_eps);
    else
        graft_rmsnorm_forward(r->lnf, r->lnf_rstd, r->head_in, r->m->w.lnf_w, NO, C, cfg->norm_eps);
    graft_linear_forward_w(r->logits, r->lnf, r->m->w.lm_head_m, NULL, NO, C, cfg->vocab_size, GRAFT_W_NK);
}

/* ---------------------------------------------------------------- drivers */

static void block_forward(graft_run *r, int l, graft_site from, int r0) {
    if (r->m->cfg.arch == GRAFT_ARCH_GPT2)
        gpt2_block_forward(r, l, from, r0);
    else
        llama_block_forward(r, l, from, r0);
}

static void forward_all(void *arg) {
    graft_run *r = arg;
    embed_forward(r);
    for (int l = 0; l < r->m->cfg.n_layer; l++) block_forward(r, l, GRAFT_SITE_BLOCK_IN, 0);
    head_forward(r);
}

graft_status graft_run_forward(graft_run *r) {
    if (r->T <= 0) return graft_fail(GRAFT_ERR_INVALID, "forward: no batch set");
    /* One row (a decode step): its products are GEMVs, each too short to pay
     * for a parallel region of its own; one region holds the whole step
     * (kernels/team.c). Several rows: GEMMs, each with its own region. */
    const graft_config *c = &r->m->cfg;
    const double widest = fmax((double)c->d_model * fmax(c->d_ff, 3.0 * c->d_model), (double)c->d_model * c->vocab_size);
    if (r->T == 1 && widest > GRAFT_GEMV_PAR_MIN)
        graft_team_run(forward_all, r);
    else
        forward_all(r);
    if (r->kv) r->kv->len += r->T;
    return GRAFT_OK;
}

graft_status graft_run_forward_from(graft_run *r, int layer, graft_site site) {
    const graft_config *cfg = &r->m->cfg;
    if (!r->train) return graft_fail(GRAFT_ERR_INVALID, "forward_from needs a run created with train=1");
    if (layer < 0 || layer >= cfg->n_layer || site < 0 || site >= GRAFT_N_SITES)
        return graft_fail(GRAFT_ERR_INVALID, "forward_from: no site (%d, %d)", layer, (int)site);
    int r0 = r->row0, C = cfg->d_model;
    if (site == GRAFT_SITE_BLOCK_IN) {
        /* The block input is produced below the block: by the embedding, or by
         * the residual add of the previous block (whose halves are saved). */
        if (layer == 0)
            embed_forward(r);
        else {
            graft_layer_acts *p = &r->layers[layer - 1];
            graft_add(ROWS(p->out, C), ROWS(p->mid, C), ROWS(p->mlp_out, C), (size_t)(r->T - r0) * C);
        }
    }
    block_forward(r, layer, site, r0);
    for (int l = layer + 1; l < cfg->n_layer; l++) block_forward(r, l, GRAFT_SITE_BLOCK_IN, r0);
    head_forward(r);
    return GRAFT_OK;
}

/* Per-row loss weights: the given ones, or 1/count over rows with a target. */
static graft_status row_weights(graft_run *r, const int *targets, const float *weights, float *dst) {
    int counted = 0;
    for (int i = 0; i < r->n_out; i++) counted += targets[i] >= 0;
    for (int i = 0; i < r->n_out; i++) {
        if (targets[i] >= r->m->cfg.vocab_size)
            return graft_fail(GRAFT_ERR_RANGE, "target id %d of row %d is outside the vocabulary", targets[i], i);
        if (targets[i] < 0)
            dst[i] = 0.0f;
        else
            dst[i] = weights ? weights[i] : (counted ? 1.0f / (float)counted : 0.0f);
    }
    return GRAFT_OK;
}

graft_status graft_run_loss(graft_run *r, const int *targets, const float *weights, double *loss, float *row_loss) {
    int NO = r->n_out;
    float *w = malloc((size_t)NO * 2 * sizeof(float));
    if (!w) return graft_fail(GRAFT_ERR_NOMEM, "loss: out of memory");
    float *rl = w + NO;
    graft_status st = row_weights(r, targets, weights, w);
    if (st == GRAFT_OK) {
        graft_crossentropy_forward(rl, r->logits, targets, NO, r->m->cfg.vocab_size);
        double acc = 0.0;
        for (int i = 0; i < NO; i++) acc += (double)w[i] * rl[i];
        *loss = acc;
        if (row_loss) memcpy(row_loss, rl, (size_t)NO * sizeof(float));
    }
    free(w);
    return st;
}

static graft_status backward_from_dlogits(graft_run *r, graft_grads *g, int stop_layer, graft_site stop_site);

graft_status graft_run_backward(graft_run *r, const int *targets, const float *weights, graft_grads *g,
                                int stop_layer, graft_site stop_site) {
    const graft_config *cfg = &r->m->cfg;
    if (!r->train) return graft_fail(GRAFT_ERR_INVALID, "backward needs a run created with train=1");
    if (g) GRAFT_TRY(graft_model_need_f32(r->m)); /* weight gradients are taken against f32 weights */
    if (stop_layer < -1 || stop_layer >= cfg->n_layer)
        return graft_fail(GRAFT_ERR_INVALID, "backward: stop layer %d outside [-1, %d)", stop_layer, cfg->n_layer);
    int NO = r->n_out, V = cfg->vocab_size;
    if (r->row0 > 0 && g)
        return graft_fail(GRAFT_ERR_INVALID, "backward: a suffix pass (row0 %d) takes activation gradients only", r->row0);

    float *dloss = malloc((size_t)NO * sizeof(float));
    if (!dloss) return graft_fail(GRAFT_ERR_NOMEM, "backward: out of memory");
    graft_status st = row_weights(r, targets, weights, dloss);
    if (st != GRAFT_OK) {
        free(dloss);
        return st;
    }
    graft_crossentropy_backward(r->d_logits, r->logits, targets, dloss, NO, V);
    free(dloss);
    return backward_from_dlogits(r, g, stop_layer, stop_site);
}

/* The part of the backward below the loss: r->d_logits [n_out, V] holds
 * dL/dlogits; shared by the cross-entropy backward and callers that bring
 * their own loss gradient (MEND's KL locality term). */
static graft_status backward_from_dlogits(graft_run *r, graft_grads *g, int stop_layer, graft_site stop_site) {
    const graft_config *cfg = &r->m->cfg;
    int C = cfg->d_model, NO = r->n_out, V = cfg->vocab_size;

    /* LM head: d_lnf [n_out, C] lives in d_b's first rows (T >= n_out). */
    float *d_lnf = r->d_b;
    memset(d_lnf, 0, (size_t)NO * C * sizeof(float));
    lin_bwd(d_lnf, g ? g->w.lm_head : NULL, NULL, r->d_logits, r->lnf, r->m->w.lm_head, r->m->w.lm_head_m, NO, C, V,
            GRAFT_W_NK);
    const float *x = r->head_in;
    float *d_x = r->d_ff1; /* [n_out, C] fits in [T, F] */
    memset(d_x, 0, (size_t)NO * C * sizeof(float));
    if (cfg->arch == GRAFT_ARCH_GPT2)
        graft_layernorm_backward(d_x, g ? g->w.lnf_w : NULL, g ? g->w.lnf_b : NULL, d_lnf, x, r->m->w.lnf_w,
                                 r->lnf_mean, r->lnf_rstd, NO, C);
    else
        graft_rmsnorm_backward(d_x, g ? g->w.lnf_w : NULL, d_lnf, x, r->m->w.lnf_w, r->lnf_rstd, NO, C);
    memset(r->d_resid, 0, (size_t)r->T * C * sizeof(float));
    for (int i = 0; i < NO; i++) graft_acc(r->d_resid + (size_t)r->out_rows[i] * C, d_x + (size_t)i * C, (size_t)C);

    int lowest = stop_layer < 0 ? 0 : stop_layer;
    for (int l = cfg->n_layer - 1; l >= lowest; l--) {
        int stop = (l == stop_layer) ? (int)stop_site : -1;
        graft_layer_weights *gl = g ? &g->w.layers[l] : NULL;
        int stopped = cfg->arch == GRAFT_ARCH_GPT2 ? gpt2_block_backward(r, l, gl, stop, r->row0)
                                                   : llama_block_backward(r, l, gl, stop, r->row0);
        if (stopped) return GRAFT_OK;
    }
    if (stop_layer < 0 && g)
        graft_embed_backward(g->w.wte, cfg->arch == GRAFT_ARCH_GPT2 ? g->w.wpe : NULL, r->d_resid, r->ids, r->pos, r->T,
                             C);
    return GRAFT_OK;
}

graft_status graft_run_backward_dlogits(graft_run *r, const float *dlogits, graft_grads *g, int stop_layer,
                                        graft_site stop_site) {
    const graft_config *cfg = &r->m->cfg;
    if (!r->train) return graft_fail(GRAFT_ERR_INVALID, "backward needs a run created with train=1");
    if (g) GRAFT_TRY(graft_model_need_f32(r->m)); /* weight gradients are taken against f32 weights */
    if (stop_layer < -1 || stop_layer >= cfg->n_layer)
        return graft_fail(GRAFT_ERR_INVALID, "backward: stop layer %d outside [-1, %d)", stop_layer, cfg->n_layer);
    if (r->row0 > 0 && g)
        return graft_fail(GRAFT_ERR_INVALID, "backward: a suffix pass (row0 %d) takes activation gradients only", r->row0);
    memcpy(r->d_logits, dlogits, (size_t)r->n_out * cfg->vocab_size * sizeof(float));
    return backward_from_dlogits(r, g, stop_layer, stop_site);
}
