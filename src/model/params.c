/*
 * params.c - the canonical parameter list of a config and the binding of the
 * typed weight struct to it.
 *
 * The table is the single place that knows which tensors an architecture
 * has and their shapes; loaders fill its data pointers, editors and the
 * gradient code address parameters by the names listed here (the Hugging
 * Face save_pretrained names), and graft_weights gives the forward pass
 * typed access to the same memory.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct table_builder {
    graft_param_table *t;
    int cap;
    bool oom;
} table_builder;

static void add(table_builder *b, const char *name, int ndim, int64_t d0, int64_t d1) {
    if (b->oom) return;
    if (b->t->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        graft_param *np = realloc(b->t->p, (size_t)cap * sizeof *np);
        if (!np) {
            b->oom = true;
            return;
        }
        b->t->p = np;
        b->cap = cap;
    }
    graft_param *p = &b->t->p[b->t->n];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    if (!p->name) {
        b->oom = true;
        return;
    }
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 0;
    /* dimensions are bounded by config validation, so this cannot overflow 64 bits */
    p->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1);
    b->t->n++;
}

/* Shapes that the table and the kernels rely on; loaders check files
 * against the table, so a config that passes here gives safe indexing. */
static graft_status check_config(const graft_config *cfg) {
    const int lim = 1 << 24;
    if (cfg->n_layer <= 0 || cfg->n_layer > 65536 || cfg->d_model <= 0 || cfg->d_model > lim || cfg->n_head <= 0 ||
        cfg->n_kv_head <= 0 || cfg->head_dim <= 0 || cfg->d_ff <= 0 || cfg->d_ff > lim || cfg->vocab_size <= 0 ||
        cfg->vocab_size > lim || cfg->n_ctx <= 0 || cfg->n_ctx > lim ||
        (int64_t)cfg->n_head * cfg->head_dim > lim)
        return graft_fail(GRAFT_ERR_INVALID, "config: a dimension is zero, negative or too large");
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        if (cfg->n_kv_head != cfg->n_head || cfg->n_head * cfg->head_dim != cfg->d_model)
            return graft_fail(GRAFT_ERR_INVALID,
                              "config: GPT-2 needs n_kv_head == n_head and n_head*head_dim == d_model");
    } else if (cfg->arch == GRAFT_ARCH_LLAMA) {
        if (cfg->n_head % cfg->n_kv_head != 0)
            return graft_fail(GRAFT_ERR_INVALID, "config: n_head %d is not a multiple of n_kv_head %d", cfg->n_head,
                              cfg->n_kv_head);
    } else {
        return graft_fail(GRAFT_ERR_INVALID, "config: unknown architecture %d", (int)cfg->arch);
    }
    return GRAFT_OK;
}

graft_status graft_param_table_init(graft_param_table *t, const graft_config *cfg) {
    memset(t, 0, sizeof *t);
    GRAFT_TRY(check_config(cfg));
    table_builder b = {t, 0, false};
    char nm[128];
    const int64_t C = cfg->d_model, F = cfg->d_ff, V = cfg->vocab_size;
    /* Order: transformers' named_parameters() order, so tables and files
     * list parameters the way users see them in PyTorch. */
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        add(&b, "transformer.wte.weight", 2, V, C);
        add(&b, "transformer.wpe.weight", 2, cfg->n_ctx, C);
        for (int i = 0; i < cfg->n_layer; i++) {
#define L(suffix, nd, a, c_)                                                   \
    do {                                                                       \
        snprintf(nm, sizeof nm, "transformer.h.%d.%s", i, suffix);             \
        add(&b, nm, nd, a, c_);                                                \
    } while (0)
            L("ln_1.weight", 1, C, 0);
            L("ln_1.bias", 1, C, 0);
            L("attn.c_attn.weight", 2, C, 3 * C); /* Conv1D: [in, out] */
            L("attn.c_attn.bias", 1, 3 * C, 0);
            L("attn.c_proj.weight", 2, C, C);
            L("attn.c_proj.bias", 1, C, 0);
            L("ln_2.weight", 1, C, 0);
            L("ln_2.bias", 1, C, 0);
            L("mlp.c_fc.weight", 2, C, F);
            L("mlp.c_fc.bias", 1, F, 0);
            L("mlp.c_proj.weight", 2, F, C);
            L("mlp.c_proj.bias", 1, C, 0);
#undef L
        }
        add(&b, "transformer.ln_f.weight", 1, C, 0);
        add(&b, "transformer.ln_f.bias", 1, C, 0);
    } else {
        const int64_t Q = (int64_t)cfg->n_head * cfg->head_dim, K = (int64_t)cfg->n_kv_head * cfg->head_dim;
        add(&b, "model.embed_tokens.weight", 2, V, C);
        for (int i = 0; i < cfg->n_layer; i++) {
#define L(suffix, nd, a, c_)                                                   \
    do {                                                                       \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", i, suffix);              \
        add(&b, nm, nd, a, c_);                                                \
    } while (0)
            L("self_attn.q_proj.weight", 2, Q, C); /* nn.Linear: [out, in] */
            L("self_attn.k_proj.weight", 2, K, C);
            L("self_attn.v_proj.weight", 2, K, C);
            L("self_attn.o_proj.weight", 2, C, Q);
            L("mlp.gate_proj.weight", 2, F, C);
            L("mlp.up_proj.weight", 2, F, C);
            L("mlp.down_proj.weight", 2, C, F);
            L("input_layernorm.weight", 1, C, 0);
            L("post_attention_layernorm.weight", 1, C, 0);
#undef L
        }
        add(&b, "model.norm.weight", 1, C, 0);
    }
    /* A tied head is the embedding itself and has no entry of its own. */
    if (!cfg->tied) add(&b, "lm_head.weight", 2, V, C);
    if (b.oom) {
        graft_param_table_free(t);
        return graft_fail(GRAFT_ERR_NOMEM, "parameter table: out of memory");
    }
    return GRAFT_OK;
}

void graft_param_table_free(graft_param_table *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->p[i].name);
    free(t->p);
    t->p = NULL;
    t->n = 0;
}

graft_param *graft_param_find(const graft_param_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->p[i].name, name) == 0) return &t->p[i];
    return NULL;
}

size_t graft_param_table_numel(const graft_param_table *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += t->p[i].numel;
    return n;
}

/* The data of a parameter that the table must have; NULL marks a bug. */
static float *need(const graft_param_table *t, const char *name, bool *missing) {
    graft_param *p = graft_param_find(t, name);
    if (!p || !p->data) {
        *missing = true;
        return NULL;
    }
    return p->data;
}

/* A matrix: its f32 data, NULL while it is used as stored, and in *view what
 * the forward reads (the f32 data, else the stored tensor). */
static float *need_mat(const graft_param_table *t, const char *name, graft_wmat *view, bool *missing) {
    graft_param *p = graft_param_find(t, name);
    if (p && p->data) {
        *view = (graft_wmat){p->data, GRAFT_F32, 0};
        return p->data;
    }
    if (p && p->stored.data) {
        *view = p->stored;
        return NULL;
    }
    *missing = true;
    return NULL;
}

graft_status graft_weights_bind(graft_weights *w, const graft_config *cfg, const graft_param_table *t) {
    memset(w, 0, sizeof *w);
    w->layers = calloc((size_t)cfg->n_layer, sizeof *w->layers);
    if (!w->layers) return graft_fail(GRAFT_ERR_NOMEM, "weights: out of memory");
    bool miss = false;
    char nm[128];
#define P(fmt) (snprintf(nm, sizeof nm, fmt, i), need(t, nm, &miss))
#define PM(fmt, view) (snprintf(nm, sizeof nm, fmt, i), need_mat(t, nm, &(view), &miss))
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        w->wte = need_mat(t, "transformer.wte.weight", &w->wte_m, &miss);
        w->wpe = need(t, "transformer.wpe.weight", &miss);
        w->lnf_w = need(t, "transformer.ln_f.weight", &miss);
        w->lnf_b = need(t, "transformer.ln_f.bias", &miss);
        for (int i = 0; i < cfg->n_layer; i++) {
            graft_layer_weights *l = &w->layers[i];
            l->ln1_w = P("transformer.h.%d.ln_1.weight");
            l->ln1_b = P("transformer.h.%d.ln_1.bias");
            l->qkv_w = PM("transformer.h.%d.attn.c_attn.weight", l->qkv_m);
            l->qkv_b = P("transformer.h.%d.attn.c_attn.bias");
            l->o_w = PM("transformer.h.%d.attn.c_proj.weight", l->o_m);
            l->o_b = P("transformer.h.%d.attn.c_proj.bias");
            l->ln2_w = P("transformer.h.%d.ln_2.weight");
            l->ln2_b = P("transformer.h.%d.ln_2.bias");
            l->up_w = PM("transformer.h.%d.mlp.c_fc.weight", l->up_m);
            l->up_b = P("transformer.h.%d.mlp.c_fc.bias");
            l->down_w = PM("transformer.h.%d.mlp.c_proj.weight", l->down_m);
            l->down_b = P("transformer.h.%d.mlp.c_proj.bias");
        }
    } else {
        w->wte = need_mat(t, "model.embed_tokens.weight", &w->wte_m, &miss);
        w->lnf_w = need(t, "model.norm.weight", &miss);
        for (int i = 0; i < cfg->n_layer; i++) {
            graft_layer_weights *l = &w->layers[i];
            l->ln1_w = P("model.layers.%d.input_layernorm.weight");
            l->q_w = PM("model.layers.%d.self_attn.q_proj.weight", l->q_m);
            l->k_w = PM("model.layers.%d.self_attn.k_proj.weight", l->k_m);
            l->v_w = PM("model.layers.%d.self_attn.v_proj.weight", l->v_m);
            l->o_w = PM("model.layers.%d.self_attn.o_proj.weight", l->o_m);
            l->ln2_w = P("model.layers.%d.post_attention_layernorm.weight");
            l->gate_w = PM("model.layers.%d.mlp.gate_proj.weight", l->gate_m);
            l->up_w = PM("model.layers.%d.mlp.up_proj.weight", l->up_m);
            l->down_w = PM("model.layers.%d.mlp.down_proj.weight", l->down_m);
        }
    }
#undef P
#undef PM
    if (cfg->tied) {
        w->lm_head = w->wte;
        w->lm_head_m = w->wte_m;
    } else {
        w->lm_head = need_mat(t, "lm_head.weight", &w->lm_head_m, &miss);
    }
    if (miss) {
        graft_weights_unbind(w);
        return graft_fail(GRAFT_ERR_INTERNAL, "weights: a parameter of the table has no data");
    }
    return GRAFT_OK;
}

void graft_weights_unbind(graft_weights *w) {
    if (!w) return;
    free(w->layers);
    memset(w, 0, sizeof *w);
}
