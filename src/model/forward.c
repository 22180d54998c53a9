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

/* ---------------------------------------------------------------- GPT-2 block */

/* x = in + attn(ln_1(in)); out = x + mlp(ln_2(x)), starting at site `from`. */
static void gpt2_block_forward(graft_run *r, int l, graft_site from) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T, C = cfg->d_model, F = cfg->d_ff;
    size_t TC = (size_t)T * C;

    if (from <= GRAFT_SITE_BLOCK_IN) {
        hooks_fwd(r, l, GRAFT_SITE_BLOCK_IN, a->in);
        graft_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, a->in, w->ln1_w, w->ln1_b, T, C, cfg->norm_eps);
        graft_linear_forward(a->qkv, a->ln1, w->qkv_w, w->qkv_b, T, C, 3 * C, GRAFT_W_KN);
        if (r->kv)
            attend_cached(r, l, a);
        else
            graft_attention_forward(a->atty, r->train ? a->att : NULL, a->q, r->ldq, a->k, a->v, r->ldkv, &r->seqs,
                                    cfg->n_head, cfg->n_kv_head, cfg->head_dim);
        graft_linear_forward(a->mid, a->atty, w->o_w, w->o_b, T, C, C, GRAFT_W_KN);
        graft_acc(a->mid, a->in, TC);
    }
    if (from <= GRAFT_SITE_MLP_IN) {
        graft_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, w->ln2_w, w->ln2_b, T, C, cfg->norm_eps);
        hooks_fwd(r, l, GRAFT_SITE_MLP_IN, a->ln2);
    }
    if (from <= GRAFT_SITE_MLP_PRE) {
        graft_linear_forward(a->pre, a->ln2, w->up_w, w->up_b, T, C, F, GRAFT_W_KN);
        hooks_fwd(r, l, GRAFT_SITE_MLP_PRE, a->pre);
    }
    if (from <= GRAFT_SITE_MLP_ACT) {
        graft_gelu_forward(a->act, a->pre, (size_t)T * F);
        hooks_fwd(r, l, GRAFT_SITE_MLP_ACT, a->act);
    }
    graft_linear_forward(a->mlp_out, a->act, w->down_w, w->down_b, T, F, C, GRAFT_W_KN);
    hooks_fwd(r, l, GRAFT_SITE_MLP_OUT, a->mlp_out);
    graft_add(a->out, a->mid, a->mlp_out, TC);
}

/* Backward of one GPT-2 block. On entry r->d_resid holds dL/d(out); on exit
 * dL/d(in), unless the pass stops inside the block at `stop` (stop < 0: never).
 * Returns 1 when it stopped. g may be NULL (activation gradients only). */
static int gpt2_block_backward(graft_run *r, int l, graft_layer_weights *g, int stop) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T, C = cfg->d_model, F = cfg->d_ff;
    size_t TC = (size_t)T * C, TF = (size_t)T * F;
    float *d_out = r->d_resid;

    /* out = mid + mlp_out: both branches receive d_out. */
    float *d_mlp = r->d_a;
    memcpy(d_mlp, d_out, TC * sizeof(float));
    hooks_bwd(r, l, GRAFT_SITE_MLP_OUT, d_mlp);
    if (stop == GRAFT_SITE_MLP_OUT) return 1;

    float *d_act = r->d_ff3;
    memset(d_act, 0, TF * sizeof(float));
    graft_linear_backward(d_act, g ? g->down_w : NULL, g ? g->down_b : NULL, d_mlp, a->act, w->down_w, T, F, C,
                          GRAFT_W_KN);
    hooks_bwd(r, l, GRAFT_SITE_MLP_ACT, d_act);
    if (stop == GRAFT_SITE_MLP_ACT) return 1;

    float *d_pre = r->d_ff1;
    memset(d_pre, 0, TF * sizeof(float));
    graft_gelu_backward(d_pre, d_act, a->pre, TF);
    hooks_bwd(r, l, GRAFT_SITE_MLP_PRE, d_pre);
    if (stop == GRAFT_SITE_MLP_PRE) return 1;

    float *d_ln2 = r->d_b;
    memset(d_ln2, 0, TC * sizeof(float));
    graft_linear_backward(d_ln2, g ? g->up_w : NULL, g ? g->up_b : NULL, d_pre, a->ln2, w->up_w, T, C, F, GRAFT_W_KN);
    hooks_bwd(r, l, GRAFT_SITE_MLP_IN, d_ln2);
    if (stop == GRAFT_SITE_MLP_IN) return 1;

    /* d_out becomes d_mid: the residual gradient plus the MLP branch. */
    graft_layernorm_backward(d_out, g ? g->ln2_w : NULL, g ? g->ln2_b : NULL, d_ln2, a->mid, w->ln2_w, a->ln2_mean,
                             a->ln2_rstd, T, C);

    float *d_atty = r->d_a;
    memset(d_atty, 0, TC * sizeof(float));
    graft_linear_backward(d_atty, g ? g->o_w : NULL, g ? g->o_b : NULL, d_out, a->atty, w->o_w, T, C, C, GRAFT_W_KN);
    float *d_qkv = r->d_qkv;
    memset(d_qkv, 0, TC * 3 * sizeof(float));
    graft_attention_backward(d_qkv, d_qkv + C, d_qkv + 2 * C, r->ldq, r->ldkv, d_atty, a->att, a->q, a->k, a->v,
                             &r->seqs, cfg->n_head, cfg->n_kv_head, cfg->head_dim);
    float *d_ln1 = r->d_b;
    memset(d_ln1, 0, TC * sizeof(float));
    graft_linear_backward(d_ln1, g ? g->qkv_w : NULL, g ? g->qkv_b : NULL, d_qkv, a->ln1, w->qkv_w, T, C, 3 * C,
                          GRAFT_W_KN);
    /* d_mid becomes d_in. */
    graft_layernorm_backward(d_out, g ? g->ln1_w : NULL, g ? g->ln1_b : NULL, d_ln1, a->in, w->ln1_w, a->ln1_mean,
                             a->ln1_rstd, T, C);
    hooks_bwd(r, l, GRAFT_SITE_BLOCK_IN, d_out);
    return stop == GRAFT_SITE_BLOCK_IN;
}

/* ---------------------------------------------------------------- Llama block */

/* x = in + o(attn(rope(q), rope(k), v)) on RMS(in); out = x + down(silu(gate) * up) on RMS(x). */
static void llama_block_forward(graft_run *r, int l, graft_site from) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T, C = cfg->d_model, F = cfg->d_ff;
    int qdim = cfg->n_head * cfg->head_dim, kvdim = cfg->n_kv_head * cfg->head_dim;
    size_t TC = (size_t)T * C;

    if (from <= GRAFT_SITE_BLOCK_IN) {
        hooks_fwd(r, l, GRAFT_SITE_BLOCK_IN, a->in);
        graft_rmsnorm_forward(a->ln1, a->ln1_rstd, a->in, w->ln1_w, T, C, cfg->norm_eps);
        graft_linear_forward(a->q, a->ln1, w->q_w, NULL, T, C, qdim, GRAFT_W_NK);
        graft_linear_forward(a->k, a->ln1, w->k_w, NULL, T, C, kvdim, GRAFT_W_NK);
        graft_linear_forward(a->v, a->ln1, w->v_w, NULL, T, C, kvdim, GRAFT_W_NK);
        graft_rope_forward(a->q, r->ldq, r->pos, T, cfg->n_head, cfg->head_dim, cfg->rope_theta, cfg->rope_interleaved);
        graft_rope_forward(a->k, r->ldkv, r->pos, T, cfg->n_kv_head, cfg->head_dim, cfg->rope_theta,
                           cfg->rope_interleaved);
        if (r->kv)
            attend_cached(r, l, a);
        else
            graft_attention_forward(a->atty, r->train ? a->att : NULL, a->q, r->ldq, a->k, a->v, r->ldkv, &r->seqs,
                                    cfg->n_head, cfg->n_kv_head, cfg->head_dim);
        graft_linear_forward(a->mid, a->atty, w->o_w, NULL, T, qdim, C, GRAFT_W_NK);
        graft_acc(a->mid, a->in, TC);
    }
    if (from <= GRAFT_SITE_MLP_IN) {
        graft_rmsnorm_forward(a->ln2, a->ln2_rstd, a->mid, w->ln2_w, T, C, cfg->norm_eps);
        hooks_fwd(r, l, GRAFT_SITE_MLP_IN, a->ln2);
    }
    if (from <= GRAFT_SITE_MLP_PRE) {
        graft_linear_forward(a->pre, a->ln2, w->up_w, NULL, T, C, F, GRAFT_W_NK);
        graft_linear_forward(a->gate, a->ln2, w->gate_w, NULL, T, C, F, GRAFT_W_NK);
        hooks_fwd(r, l, GRAFT_SITE_MLP_PRE, a->pre);
    }
    if (from <= GRAFT_SITE_MLP_ACT) {
        graft_swiglu_forward(a->act, a->gate, a->pre, (size_t)T * F);
        hooks_fwd(r, l, GRAFT_SITE_MLP_ACT, a->act);
    }
    graft_linear_forward(a->mlp_out, a->act, w->down_w, NULL, T, F, C, GRAFT_W_NK);
    hooks_fwd(r, l, GRAFT_SITE_MLP_OUT, a->mlp_out);
    graft_add(a->out, a->mid, a->mlp_out, TC);
}

static int llama_block_backward(graft_run *r, int l, graft_layer_weights *g, int stop) {
    const graft_config *cfg = &r->m->cfg;
    const graft_layer_weights *w = &r->m->w.layers[l];
    graft_layer_acts *a = &r->layers[l];
    int T = r->T, C = cfg->d_model, F = cfg->d_ff;
    int qdim = cfg->n_head * cfg->head_dim, kvdim = cfg->n_kv_head * cfg->head_dim;
    size_t TC = (size_t)T * C, TF = (size_t)T * F;
    float *d_out = r->d_resid;

    float *d_mlp = r->d_a;
    memcpy(d_mlp, d_out, TC * sizeof(float));
    hooks_bwd(r, l, GRAFT_SITE_MLP_OUT, d_mlp);
    if (stop == GRAFT_SITE_MLP_OUT) return 1;

    float *d_act = r->d_ff3;
    memset(d_act, 0, TF * sizeof(float));
    graft_linear_backward(d_act, g ? g->down_w : NULL, NULL, d_mlp, a->act, w->down_w, T, F, C, GRAFT_W_NK);
    hooks_bwd(r, l, GRAFT_SITE_MLP_ACT, d_act);
    if (stop == GRAFT_SITE_MLP_ACT) return 1;

    float *d_up = r->d_ff1, *d_gate = r->d_ff2;
    memset(d_up, 0, TF * sizeof(float));
    memset(d_gate, 0, TF * sizeof(float));
    graft_swiglu_backward(d_gate, d_up, d_act, a->gate, a->pre, TF);
    hooks_bwd(r, l, GRAFT_SITE_MLP_PRE, d_up);
    if (stop == GRAFT_SITE_MLP_PRE) return 1;

    float *d_ln2 = r->d_b;
    memset(d_ln2, 0, TC * sizeof(float));
    graft_linear_backward(d_ln2, g ? g->up_w : NULL, NULL, d_up, a->ln2, w->up_w, T, C, F, GRAFT_W_NK);
    graft_linear_backward(d_ln2, g ? g->gate_w : NULL, NULL, d_gate, a->ln2, w->gate_w, T, C, F, GRAFT_W_NK);
    hooks_bwd(r, l, GRAFT_SITE_MLP_IN, d_ln2);
    if (stop == GRAFT_SITE_MLP_IN) return 1;

    graft_rmsnorm_backward(d_out, g ? g->ln2_w : NULL, d_ln2, a->mid, w->ln2_w, a->ln2_rstd, T, C);

    float *d_atty = r->d_a;
    memset(d_atty, 0, (size_t)T * qdim * sizeof(float));
    graft_linear_backward(d_atty, g ? g->o_w : NULL, NULL, d_out, a->atty, w->o_w, T, qdim, C, GRAFT_W_NK);
    float *dq = r->d_qkv, *dk = dq + (size_t)T * qdim, *dv = dk + (size_t)T * kvdim;
    memset(dq, 0, (size_t)T * (qdim + 2 * kvdim) * sizeof(float));
    graft_attention_backward(dq, dk, dv, qdim, kvdim, d_atty, a->att, a->q, a->k, a->v, &r->seqs, cfg->n_head,
                             cfg->n_kv_head, cfg->head_dim);
    graft_rope_backward(dq, qdim, r->pos, T, cfg->n_head, cfg->head_dim, cfg->rope_theta, cfg->rope_interleaved);
    graft_rope_backward(dk, kvdim, r->pos, T, cfg->n_kv_head, cfg->head_dim, cfg->rope_theta, cfg->rope_interleaved);
    float *d_ln1 = r->d_b;
    memset(d_ln1, 0, TC * sizeof(float));
    graft_linear_backward(d_ln1, g ? g->q_w : NULL, NULL, dq, a->ln1, w->q_w, T, C, qdim, GRAFT_W_NK);
    graft_linear_backward(d_ln1, g ? g->k_w : NULL, NULL, dk, a->ln1, w->k_w, T, C, kvdim, GRAFT_W_NK);
    graft_linear_backward(d_ln1, g ? g->v_w : NULL, NULL, dv, a->ln1, w->v_w, T, C, kvdim, GRAFT_W_NK);
    graft_rmsnorm_backward(d_out, g ? g->ln1_w : NULL, d_ln1, a->in, w->ln1_w, a->ln1_rstd, T, C);
    hooks_bwd(r, l, GRAFT_SITE_BLOCK_IN, d_out);
    return stop == GRAFT_SITE_BLOCK_IN;
}

/* ---------------------------------------------------------------- embedding and head */

static void embed_forward(graft_run *r) {
    const graft_config *cfg = &r->m->cfg;
    graft_embed_forward(r->embed, r->ids, r->pos, r->m->w.wte, cfg->arch == GRAFT_ARCH_GPT2 ? r->m->w.wpe : NULL,
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
    graft_linear_forward(r->logits, r->lnf, r->m->w.lm_head, NULL, NO, C, cfg->vocab_size, GRAFT_W_NK);
}

/* ---------------------------------------------------------------- drivers */

static void block_forward(graft_run *r, int l, graft_site from) {
    if (r->m->cfg.arch == GRAFT_ARCH_GPT2)
        gpt2_block_forward(r, l, from);
    else
        llama_block_forward(r, l, from);
}

graft_status graft_run_forward(graft_run *r) {
    if (r->T <= 0) return graft_fail(GRAFT_ERR_INVALID, "forward: no batch set");
    embed_forward(r);
    for (int l = 0; l < r->m->cfg.n_layer; l++) block_forward(r, l, GRAFT_SITE_BLOCK_IN);
    head_forward(r);
    if (r->kv) r->kv->len += r->T;
    return GRAFT_OK;
}

graft_status graft_run_forward_from(graft_run *r, int layer, graft_site site) {
    const graft_config *cfg = &r->m->cfg;
    if (!r->train) return graft_fail(GRAFT_ERR_INVALID, "forward_from needs a run created with train=1");
    if (layer < 0 || layer >= cfg->n_layer || site < 0 || site >= GRAFT_N_SITES)
        return graft_fail(GRAFT_ERR_INVALID, "forward_from: no site (%d, %d)", layer, (int)site);
    if (site == GRAFT_SITE_BLOCK_IN) {
        /* The block input is produced below the block: by the embedding, or by
         * the residual add of the previous block (whose halves are saved). */
        if (layer == 0)
            embed_forward(r);
        else {
            graft_layer_acts *p = &r->layers[layer - 1];
            graft_add(p->out, p->mid, p->mlp_out, (size_t)r->T * cfg->d_model);
        }
    }
    block_forward(r, layer, site);
    for (int l = layer + 1; l < cfg->n_layer; l++) block_forward(r, l, GRAFT_SITE_BLOCK_IN);
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

graft_status graft_run_backward(graft_run *r, const int *targets, const float *weights, graft_grads *g,
                                int stop_layer, graft_site stop_site) {
    const graft_config *cfg = &r->m->cfg;
    if (!r->train) return graft_fail(GRAFT_ERR_INVALID, "backward needs a run created with train=1");
    if (stop_layer < -1 || stop_layer >= cfg->n_layer)
        return graft_fail(GRAFT_ERR_INVALID, "backward: stop layer %d outside [-1, %d)", stop_layer, cfg->n_layer);
    int C = cfg->d_model, NO = r->n_out, V = cfg->vocab_size;

    float *dloss = malloc((size_t)NO * sizeof(float));
    if (!dloss) return graft_fail(GRAFT_ERR_NOMEM, "backward: out of memory");
    graft_status st = row_weights(r, targets, weights, dloss);
    if (st != GRAFT_OK) {
        free(dloss);
        return st;
    }
    graft_crossentropy_backward(r->d_logits, r->logits, targets, dloss, NO, V);
    free(dloss);

    /* LM head: d_lnf [n_out, C] lives in d_b's first rows (T >= n_out). */
    float *d_lnf = r->d_b;
    memset(d_lnf, 0, (size_t)NO * C * sizeof(float));
    graft_linear_backward(d_lnf, g ? g->w.lm_head : NULL, NULL, r->d_logits, r->lnf, r->m->w.lm_head, NO, C, V,
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
        int stopped = cfg->arch == GRAFT_ARCH_GPT2 ? gpt2_block_backward(r, l, gl, stop)
                                                   : llama_block_backward(r, l, gl, stop);
        if (stopped) return GRAFT_OK;
    }
    if (stop_layer < 0 && g)
        graft_embed_backward(g->w.wte, cfg->arch == GRAFT_ARCH_GPT2 ? g->w.wpe : NULL, r->d_resid, r->ids, r->pos, r->T,
                             C);
    return GRAFT_OK;
}
