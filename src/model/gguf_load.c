/*
 * gguf_load.c - a graft model from a GGUF file as llama.cpp's converter
 * (convert_hf_to_gguf.py) writes Llama and GPT-2: the hyperparameters from
 * `{arch}.*` metadata, the weights from llama.cpp's tensor names, the
 * tokenizer from `tokenizer.ggml.*`.
 *
 * Two layout differences are undone on load so that graft's kernels see the
 * Hugging Face layout its parameter table describes:
 *  - GPT-2: the converter transposes the Conv1D matrices (c_attn, c_proj,
 *    c_fc, mlp.c_proj) to [out, in]; graft keeps Conv1D's [in, out].
 *  - Llama: the converter reorders q/k rows from HF's rotate-half RoPE pairs
 *    (j, j+D/2) to interleaved pairs (2j, 2j+1); graft puts them back and
 *    uses rotate-half (rope_interleaved = 0), so an HF folder converted to
 *    GGUF gives bit-identical logits in graft.
 * F32 tensors that need neither are used in place from the (private,
 * copy-on-write) mapping. In models of 64 MiB or more (GRAFT_WEIGHTS decides,
 * graft_keep_stored_weights) whole F16/BF16/Q8_0 matrices and transposed F32
 * ones stay in the mapping too, read as stored by wmat.c; everything else is
 * converted into one heap slab (graft_model_need_f32 converts the rest when
 * an editor or the trainer wants f32).
 */
#include "model/gguf.h"

#include "model/save.h"
#include "tokenizer/tokenizer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ the plan */

typedef struct plan_builder {
    const graft_param_table *t;
    graft_gguf_slot *s;
    int n, cap;
    const char *missing;
    bool oom;
} plan_builder;

static void slot(plan_builder *b, const char *gguf, const char *param, graft_gguf_xform x, int heads) {
    if (b->oom || b->missing) return;
    const graft_param *p = graft_param_find(b->t, param);
    if (!p) {
        b->missing = param;
        return;
    }
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        graft_gguf_slot *ns = realloc(b->s, (size_t)cap * sizeof *ns);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    graft_gguf_slot *s = &b->s[b->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", gguf);
    s->p = p;
    s->x = x;
    s->heads = heads;
    s->n_dims = p->ndim;
    if (p->ndim == 1) {
        s->ne[0] = p->shape[0];
        s->ne[1] = 1;
    } else if (x == GGUF_X_TRANSPOSE) {
        s->ne[0] = p->shape[0]; /* in */
        s->ne[1] = p->shape[1]; /* out: the GGUF rows */
    } else {
        s->ne[0] = p->shape[1];
        s->ne[1] = p->shape[0];
    }
}

graft_status graft_gguf_plan(const graft_config *cfg, const graft_param_table *t, bool with_tied_output,
                             graft_gguf_slot **out, int *n) {
    plan_builder b = {.t = t};
    char g[64], p[128];
#define S(gfmt, pfmt, x, h)                                                    \
    do {                                                                       \
        snprintf(g, sizeof g, gfmt, i);                                        \
        snprintf(p, sizeof p, pfmt, i);                                        \
        slot(&b, g, p, x, h);                                                  \
    } while (0)
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        slot(&b, "token_embd.weight", "transformer.wte.weight", GGUF_X_NONE, 0);
        slot(&b, "position_embd.weight", "transformer.wpe.weight", GGUF_X_NONE, 0);
        for (int i = 0; i < cfg->n_layer; i++) {
            S("blk.%d.attn_norm.weight", "transformer.h.%d.ln_1.weight", GGUF_X_NONE, 0);
            S("blk.%d.attn_norm.bias", "transformer.h.%d.ln_1.bias", GGUF_X_NONE, 0);
            S("blk.%d.attn_qkv.weight", "transformer.h.%d.attn.c_attn.weight", GGUF_X_TRANSPOSE, 0);
            S("blk.%d.attn_qkv.bias", "transformer.h.%d.attn.c_attn.bias", GGUF_X_NONE, 0);
            S("blk.%d.attn_output.weight", "transformer.h.%d.attn.c_proj.weight", GGUF_X_TRANSPOSE, 0);
            S("blk.%d.attn_output.bias", "transformer.h.%d.attn.c_proj.bias", GGUF_X_NONE, 0);
            S("blk.%d.ffn_norm.weight", "transformer.h.%d.ln_2.weight", GGUF_X_NONE, 0);
            S("blk.%d.ffn_norm.bias", "transformer.h.%d.ln_2.bias", GGUF_X_NONE, 0);
            S("blk.%d.ffn_up.weight", "transformer.h.%d.mlp.c_fc.weight", GGUF_X_TRANSPOSE, 0);
            S("blk.%d.ffn_up.bias", "transformer.h.%d.mlp.c_fc.bias", GGUF_X_NONE, 0);
            S("blk.%d.ffn_down.weight", "transformer.h.%d.mlp.c_proj.weight", GGUF_X_TRANSPOSE, 0);
            S("blk.%d.ffn_down.bias", "transformer.h.%d.mlp.c_proj.bias", GGUF_X_NONE, 0);
        }
        slot(&b, "output_norm.weight", "transformer.ln_f.weight", GGUF_X_NONE, 0);
        slot(&b, "output_norm.bias", "transformer.ln_f.bias", GGUF_X_NONE, 0);
        if (!cfg->tied) slot(&b, "output.weight", "lm_head.weight", GGUF_X_NONE, 0);
        else if (with_tied_output) slot(&b, "output.weight", "transformer.wte.weight", GGUF_X_NONE, 0);
    } else {
        slot(&b, "token_embd.weight", "model.embed_tokens.weight", GGUF_X_NONE, 0);
        for (int i = 0; i < cfg->n_layer; i++) {
            S("blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight", GGUF_X_NONE, 0);
            S("blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight", GGUF_X_ROPE, cfg->n_head);
            S("blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight", GGUF_X_ROPE, cfg->n_kv_head);
            S("blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight", GGUF_X_NONE, 0);
            S("blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight", GGUF_X_NONE, 0);
            S("blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight", GGUF_X_NONE, 0);
            S("blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight", GGUF_X_NONE, 0);
            S("blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight", GGUF_X_NONE, 0);
            S("blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight", GGUF_X_NONE, 0);
        }
        slot(&b, "output_norm.weight", "model.norm.weight", GGUF_X_NONE, 0);
        if (!cfg->tied) slot(&b, "output.weight", "lm_head.weight", GGUF_X_NONE, 0);
    }
#undef S
    if (b.oom || b.missing) {
        free(b.s);
        return b.oom ? graft_fail(GRAFT_ERR_NOMEM, "GGUF tensor plan: out of memory")
                     : graft_fail(GRAFT_ERR_INTERNAL, "GGUF tensor plan: no parameter %s", b.missing);
    }
    *out = b.s;
    *n = b.n;
    return GRAFT_OK;
}

/* ================================================================ metadata */

typedef struct hp {
    const graft_gguf *g;
    const char *path;
    const char *arch;
} hp;

static const graft_gguf_kv *arch_kv(const hp *h, const char *suffix, char *key, size_t cap) {
    snprintf(key, cap, "%s.%s", h->arch, suffix);
    return graft_gguf_find(h->g, key);
}

static bool is_int_type(uint32_t t) {
    return t == GGUF_V_UINT8 || t == GGUF_V_INT8 || t == GGUF_V_UINT16 || t == GGUF_V_INT16 || t == GGUF_V_UINT32 ||
           t == GGUF_V_INT32 || t == GGUF_V_UINT64 || t == GGUF_V_INT64;
}

static bool is_signed_type(uint32_t t) {
    return t == GGUF_V_INT8 || t == GGUF_V_INT16 || t == GGUF_V_INT32 || t == GGUF_V_INT64;
}

/* An integer key `{arch}.suffix` in [lo, hi] (any integer type). */
static graft_status get_int(const hp *h, const char *suffix, bool required, int def, int lo, int hi, int *out) {
    char key[128];
    const graft_gguf_kv *kv = arch_kv(h, suffix, key, sizeof key);
    if (!kv) {
        if (required) return graft_fail(GRAFT_ERR_FORMAT, "%s: required key '%s' is missing", h->path, key);
        *out = def;
        return GRAFT_OK;
    }
    if (!is_int_type(kv->type))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': must be an integer, not %s", h->path, kv->pos,
                          key, graft_gguf_vtype_name(kv->type));
    bool neg = is_signed_type(kv->type) && kv->num.i < 0;
    if (neg || kv->num.u < (uint64_t)lo || kv->num.u > (uint64_t)hi)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': %s%" PRIu64 " is outside [%d, %d]", h->path,
                          kv->val_pos, key, neg ? "-" : "", neg ? (uint64_t)(-(kv->num.i + 1)) + 1 : kv->num.u, lo,
                          hi);
    *out = (int)kv->num.u;
    return GRAFT_OK;
}

static graft_status get_float(const hp *h, const char *suffix, float def, float *out) {
    char key[128];
    const graft_gguf_kv *kv = arch_kv(h, suffix, key, sizeof key);
    if (!kv) {
        *out = def;
        return GRAFT_OK;
    }
    if (kv->type != GGUF_V_FLOAT32 && kv->type != GGUF_V_FLOAT64)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': must be a float, not %s", h->path, kv->pos,
                          key, graft_gguf_vtype_name(kv->type));
    if (!(kv->num.f > 0) || kv->num.f > 1e30)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': %g must be a positive number", h->path,
                          kv->val_pos, key, kv->num.f);
    *out = (float)kv->num.f;
    return GRAFT_OK;
}

/* A string key; *s NULL when absent. */
static graft_status get_string(const graft_gguf *g, const char *path, const char *key, const char **s, size_t *n) {
    const graft_gguf_kv *kv = graft_gguf_find(g, key);
    *s = NULL;
    *n = 0;
    if (!kv) return GRAFT_OK;
    if (kv->type != GGUF_V_STRING)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': must be a string, not %s", path, kv->pos, key,
                          graft_gguf_vtype_name(kv->type));
    *s = kv->str;
    *n = (size_t)kv->str_len;
    return GRAFT_OK;
}

static bool str_is(const char *s, size_t n, const char *want) { return s && n == strlen(want) && !memcmp(s, want, n); }

/* A token id key (tokenizer.ggml.bos_token_id ...): -1 when absent. */
static graft_status get_token_id(const graft_gguf *g, const char *path, const char *key, int *out) {
    const graft_gguf_kv *kv = graft_gguf_find(g, key);
    *out = -1;
    if (!kv) return GRAFT_OK;
    if (!is_int_type(kv->type) || (is_signed_type(kv->type) && kv->num.i < 0) || kv->num.u > (1u << 26))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': not a token id", path, kv->pos, key);
    *out = (int)kv->num.u;
    return GRAFT_OK;
}

static graft_status parse_config(const graft_gguf *g, const char *path, graft_config *cfg) {
    const char *arch;
    size_t alen;
    GRAFT_TRY(get_string(g, path, "general.architecture", &arch, &alen));
    if (!arch) return graft_fail(GRAFT_ERR_FORMAT, "%s: required key 'general.architecture' is missing", path);
    memset(cfg, 0, sizeof *cfg);
    hp h = {g, path, NULL};
    if (str_is(arch, alen, "llama")) {
        cfg->arch = GRAFT_ARCH_LLAMA;
        h.arch = "llama";
    } else if (str_is(arch, alen, "gpt2")) {
        cfg->arch = GRAFT_ARCH_GPT2;
        h.arch = "gpt2";
    } else {
        const graft_gguf_kv *kv = graft_gguf_find(g, "general.architecture");
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: offset %zu: key 'general.architecture': \"%.*s\" is not supported (llama, gpt2)", path,
                          kv->val_pos, (int)(alen > 64 ? 64 : alen), arch);
    }
    const int lim = 1 << 24;
    GRAFT_TRY(get_int(&h, "block_count", true, 0, 1, 65536, &cfg->n_layer));
    GRAFT_TRY(get_int(&h, "embedding_length", true, 0, 1, lim, &cfg->d_model));
    GRAFT_TRY(get_int(&h, "attention.head_count", true, 0, 1, lim, &cfg->n_head));
    GRAFT_TRY(get_int(&h, "context_length", true, 0, 1, lim, &cfg->n_ctx));
    char key[128];
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        GRAFT_TRY(get_int(&h, "feed_forward_length", false, 4 * cfg->d_model, 1, lim, &cfg->d_ff));
        GRAFT_TRY(get_float(&h, "attention.layer_norm_epsilon", 1e-5f, &cfg->norm_eps));
        if (cfg->d_model % cfg->n_head != 0)
            return graft_fail(GRAFT_ERR_FORMAT, "%s: gpt2.embedding_length %d is not divisible by head_count %d", path,
                              cfg->d_model, cfg->n_head);
        cfg->n_kv_head = cfg->n_head;
        cfg->head_dim = cfg->d_model / cfg->n_head;
    } else {
        GRAFT_TRY(get_int(&h, "feed_forward_length", true, 0, 1, lim, &cfg->d_ff));
        GRAFT_TRY(get_int(&h, "attention.head_count_kv", false, cfg->n_head, 1, lim, &cfg->n_kv_head));
        if (cfg->n_head % cfg->n_kv_head != 0)
            return graft_fail(GRAFT_ERR_FORMAT, "%s: llama.attention.head_count %d is not a multiple of head_count_kv %d",
                              path, cfg->n_head, cfg->n_kv_head);
        int def_hd = cfg->d_model / cfg->n_head, vd, rot;
        GRAFT_TRY(get_int(&h, "attention.key_length", false, def_hd, 1, lim, &cfg->head_dim));
        GRAFT_TRY(get_int(&h, "attention.value_length", false, cfg->head_dim, 1, lim, &vd));
        GRAFT_TRY(get_int(&h, "rope.dimension_count", false, cfg->head_dim, 1, lim, &rot));
        if (vd != cfg->head_dim)
            return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: llama.attention.value_length %d differs from key_length %d",
                              path, vd, cfg->head_dim);
        if (rot != cfg->head_dim)
            return graft_fail(GRAFT_ERR_UNSUPPORTED,
                              "%s: llama.rope.dimension_count %d is not the head size %d (partial RoPE is not supported)",
                              path, rot, cfg->head_dim);
        if (cfg->head_dim % 2 != 0)
            return graft_fail(GRAFT_ERR_FORMAT, "%s: head size %d is odd; RoPE rotates pairs", path, cfg->head_dim);
        if ((int64_t)cfg->n_head * cfg->head_dim > lim)
            return graft_fail(GRAFT_ERR_FORMAT, "%s: head_count x key_length is too large", path);
        GRAFT_TRY(get_float(&h, "attention.layer_norm_rms_epsilon", 1e-5f, &cfg->norm_eps));
        GRAFT_TRY(get_float(&h, "rope.freq_base", 10000.0f, &cfg->rope_theta));
        const char *sc;
        size_t scn;
        snprintf(key, sizeof key, "llama.rope.scaling.type");
        GRAFT_TRY(get_string(g, path, key, &sc, &scn));
        if (sc && !str_is(sc, scn, "none"))
            return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: %s is \"%.*s\"; only plain RoPE is supported", path, key,
                              (int)(scn > 32 ? 32 : scn), sc);
        int experts;
        GRAFT_TRY(get_int(&h, "expert_count", false, 0, 0, lim, &experts));
        if (experts > 0)
            return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: llama.expert_count is %d; mixture-of-experts is not supported",
                              path, experts);
        cfg->rope_interleaved = 0; /* q/k rows are permuted back on load */
    }
    GRAFT_TRY(get_token_id(g, path, "tokenizer.ggml.bos_token_id", &cfg->bos_id));
    GRAFT_TRY(get_token_id(g, path, "tokenizer.ggml.eos_token_id", &cfg->eos_id));
    return GRAFT_OK;
}

/* ================================================================ tensor data */

static size_t row_bytes(const graft_gguf_tensor *t) {
    switch (t->type) {
    case GGUF_T_F32: return (size_t)t->ne[0] * 4;
    case GGUF_T_F16:
    case GGUF_T_BF16: return (size_t)t->ne[0] * 2;
    case GGUF_T_Q8_0: return (size_t)t->ne[0] / 32 * 34;
    }
    return 0;
}

/* Rows [row0, row0 + rows) of t as f32 (rows of ne[0] elements). */
static void rows_to_f32(float *dst, const graft_gguf_tensor *t, size_t row0, size_t rows) {
    size_t rb = row_bytes(t), n = rows * (size_t)t->ne[0];
    const uint8_t *src = t->data + row0 * rb;
    switch (t->type) {
    case GGUF_T_F32: graft_convert_to_f32(dst, src, GRAFT_F32, n); break;
    case GGUF_T_F16: graft_convert_to_f32(dst, src, GRAFT_F16, n); break;
    case GGUF_T_BF16: graft_convert_to_f32(dst, src, GRAFT_BF16, n); break;
    case GGUF_T_Q8_0: graft_q8_0_to_f32(dst, src, n); break;
    }
}

/* One parameter and where its data comes from. */
typedef struct src_ref {
    const graft_gguf_tensor *t;
    graft_gguf_xform x;
    int heads;
    size_t row0; /* a slice of a fused tensor (Llama attn_qkv) */
} src_ref;

static bool in_place(const src_ref *r) {
    return r->t->type == GGUF_T_F32 && r->x == GGUF_X_NONE && r->row0 == 0 &&
           ((uintptr_t)r->t->data % sizeof(float)) == 0;
}

/* F16, BF16 and Q8_0 matrices the forward can read where they lie: whole
 * tensors, as the file stores them or transposed (GPT-2's Conv1D), not
 * GPT-2's position table (added as floats). q/k rows that need RoPE's
 * reordering and slices of a fused qkv are converted. F32 matrices that need
 * no transposing are in place anyway; transposed ones (GPT-2's Conv1D) are
 * read as the file lays them out too, which spares the copy and lets a
 * decode stream whole rows (the dot-shaped GEMV). */
static bool storable(const src_ref *r, const graft_param *p) {
    if (r->t->type == GGUF_T_F32) {
        if (r->x != GGUF_X_TRANSPOSE || ((uintptr_t)r->t->data % sizeof(float)) != 0) return false;
    } else if (r->t->type != GGUF_T_F16 && r->t->type != GGUF_T_BF16 && r->t->type != GGUF_T_Q8_0)
        return false;
    if (p->ndim != 2 || r->row0 != 0 || (r->x != GGUF_X_NONE && r->x != GGUF_X_TRANSPOSE)) return false;
    const size_t n = strlen(p->name);
    return !(n >= 10 && !strcmp(p->name + n - 10, "wpe.weight"));
}

static graft_wmat stored_view(const src_ref *r) {
    const int dt = r->t->type == GGUF_T_F32    ? GRAFT_F32
                   : r->t->type == GGUF_T_F16  ? GRAFT_F16
                   : r->t->type == GGUF_T_BF16 ? GRAFT_BF16
                                               : GRAFT_WMAT_Q8_0;
    return (graft_wmat){r->t->data, dt, r->x == GGUF_X_TRANSPOSE};
}

static graft_status check_tensor(const char *path, const graft_gguf_tensor *t, int n_dims, int64_t ne0, int64_t ne1) {
    if (t->type != GGUF_T_F32 && t->type != GGUF_T_F16 && t->type != GGUF_T_BF16 && t->type != GGUF_T_Q8_0)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: offset %zu: tensor '%s': type %s (%u) is not supported (F32, F16, BF16, Q8_0)", path,
                          t->pos, t->name, graft_gguf_type_name(t->type), t->type);
    bool ok = t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == 1 && t->ne[3] == 1 &&
              (n_dims == 2 || t->n_dims == 1 || t->ne[1] == 1);
    if (!ok)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: offset %zu: tensor '%s': dimensions [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                          "] but the metadata implies [%" PRId64 ", %" PRId64 "]",
                          path, t->pos, t->name, t->ne[0], t->ne[1], t->ne[2], t->ne[3], ne0, ne1);
    return GRAFT_OK;
}

static bool same_tensor_bytes(const graft_gguf_tensor *a, const graft_gguf_tensor *b) {
    return a->type == b->type && a->nbytes == b->nbytes && a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1] &&
           memcmp(a->data, b->data, a->nbytes) == 0;
}

#define SLAB_ALIGN 16 /* floats: each converted tensor starts on a 64-byte line */

static graft_status bind_weights(graft_model *m, const graft_gguf *g, const char *path) {
    graft_config *cfg = &m->cfg;
    graft_gguf_slot *plan = NULL;
    int n_plan = 0;
    src_ref *refs = NULL;
    bool *used = NULL;
    float *tmp = NULL;
    graft_status st = graft_gguf_plan(cfg, &m->params, false, &plan, &n_plan);
    if (st != GRAFT_OK) return st;
    refs = calloc((size_t)n_plan + 1, sizeof *refs);
    used = calloc((size_t)g->n_tensors + 1, sizeof *used);
    if (!refs || !used) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* the tied head: present in GPT-2 files (a copy of the embedding) */
    const graft_gguf_tensor *emb = graft_gguf_find_tensor(g, "token_embd.weight");
    const graft_gguf_tensor *outw = graft_gguf_find_tensor(g, "output.weight");
    if (outw && emb && cfg->tied && !same_tensor_bytes(outw, emb)) {
        st = graft_fail(GRAFT_ERR_INTERNAL, "%s: tied head with a distinct output.weight", path);
        goto done;
    }
    if (outw && cfg->tied) used[outw - g->tensors] = true;

    size_t slab_floats = 0, storable_bytes = 0;
    for (int i = 0; i < n_plan; i++) {
        const graft_gguf_slot *s = &plan[i];
        src_ref *r = &refs[i];
        r->t = graft_gguf_find_tensor(g, s->name);
        r->x = s->x;
        r->heads = s->heads;
        if (!r->t && cfg->arch == GRAFT_ARCH_LLAMA) {
            /* fused q/k/v (rows q, then k, then v) as some converters write */
            int layer;
            char which = 0, fused[64];
            if (sscanf(s->name, "blk.%d.attn_%c.weight", &layer, &which) == 2 && (which == 'q' || which == 'k' ||
                                                                                  which == 'v')) {
                snprintf(fused, sizeof fused, "blk.%d.attn_qkv.weight", layer);
                const graft_gguf_tensor *f = graft_gguf_find_tensor(g, fused);
                if (f) {
                    int64_t Q = (int64_t)cfg->n_head * cfg->head_dim, K = (int64_t)cfg->n_kv_head * cfg->head_dim;
                    st = check_tensor(path, f, 2, s->ne[0], Q + 2 * K);
                    if (st != GRAFT_OK) goto done;
                    r->t = f;
                    r->row0 = (size_t)(which == 'q' ? 0 : which == 'k' ? Q : Q + K);
                    used[f - g->tensors] = true;
                    continue;
                }
            }
        }
        if (!r->t) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: tensor '%s' is missing (the metadata implies it)", path, s->name);
            goto done;
        }
        st = check_tensor(path, r->t, s->n_dims, s->ne[0], s->ne[1]);
        if (st != GRAFT_OK) goto done;
        used[r->t - g->tensors] = true;
        if (storable(r, s->p)) storable_bytes += r->t->nbytes;
    }
    const bool keep = graft_keep_stored_weights(storable_bytes);
    for (int i = 0; i < n_plan; i++)
        if (!in_place(&refs[i]) && !(keep && storable(&refs[i], plan[i].p)))
            slab_floats += (plan[i].p->numel + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
    /* A tensor graft would not use means a variant it does not implement
     * (biases in Llama projections, RoPE frequency factors, ...). */
    for (uint64_t j = 0; j < g->n_tensors; j++) {
        if (used[j]) continue;
        st = graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: offset %zu: tensor '%s' is not a parameter of %s models", path,
                        g->tensors[j].pos, g->tensors[j].name, cfg->arch == GRAFT_ARCH_GPT2 ? "GPT-2" : "Llama");
        goto done;
    }
    if (slab_floats > 0) {
        size_t bytes;
        if (!graft_mul_size(slab_floats, sizeof(float), &bytes) || !(m->heap_slab = graft_alloc_aligned(bytes))) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for %zu converted weights", path, slab_floats);
            goto done;
        }
    }
    size_t off = 0, counts[4] = {0, 0, 0, 0}; /* F32, F16, BF16, Q8_0 */
    for (int i = 0; i < n_plan; i++) {
        graft_param *p = (graft_param *)plan[i].p;
        const src_ref *r = &refs[i];
        counts[r->t->type == GGUF_T_F32 ? 0 : r->t->type == GGUF_T_F16 ? 1 : r->t->type == GGUF_T_BF16 ? 2 : 3] +=
            p->numel;
        if (in_place(r)) {
            p->data = (float *)(uintptr_t)r->t->data;
            m->mapped_bytes += p->numel * sizeof(float);
            continue;
        }
        if (keep && storable(r, p)) { /* read in place by the forward (wmat.c) */
            p->stored = stored_view(r);
            m->mapped_bytes += r->t->nbytes;
            continue;
        }
        p->data = m->heap_slab + off;
        off += (p->numel + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
        m->heap_bytes += p->numel * sizeof(float);
        size_t rows = p->ndim == 1 ? 1 : (size_t)plan[i].ne[1], cols = (size_t)plan[i].ne[0];
        if (r->x == GGUF_X_NONE) {
            rows_to_f32(p->data, r->t, r->row0, rows);
            continue;
        }
        free(tmp);
        tmp = malloc(p->numel * sizeof(float));
        if (!tmp) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        rows_to_f32(tmp, r->t, r->row0, rows);
        if (r->x == GGUF_X_ROPE) {
            graft_rope_permute_rows(p->data, tmp, r->heads, cfg->head_dim, cols, 1);
        } else { /* GGUF [out rows][in] -> graft Conv1D [in][out] */
            for (size_t o = 0; o < rows; o++)
                for (size_t k = 0; k < cols; k++) p->data[k * rows + o] = tmp[o * cols + k];
        }
    }
    m->src_dtype = GRAFT_F32;
    if (counts[1] > counts[0] && counts[1] >= counts[2]) m->src_dtype = GRAFT_F16;
    if (counts[2] > counts[0] && counts[2] > counts[1]) m->src_dtype = GRAFT_BF16;
    m->format = counts[3] > counts[0] && counts[3] > counts[1] && counts[3] > counts[2] ? "gguf-q8_0" : "gguf";
    st = graft_weights_bind(&m->w, cfg, &m->params);
done:
    free(tmp);
    free(used);
    free(refs);
    free(plan);
    return st;
}

/* ================================================================ tokenizer */

/* The strings of a string array (validated when the file was opened). */
static graft_status string_array(const graft_gguf *g, const char *key, uint64_t max, const graft_gguf_kv **kvp,
                                 const char ***s, size_t **len) {
    const graft_gguf_kv *kv = graft_gguf_find(g, key);
    *kvp = kv;
    *s = NULL;
    *len = NULL;
    if (!kv) return GRAFT_OK;
    if (kv->type != GGUF_V_ARRAY || kv->elem_type != GGUF_V_STRING)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': must be an array of strings", g->f.path,
                          kv->pos, key);
    if (kv->n > max)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': %" PRIu64 " entries (at most %" PRIu64 ")",
                          g->f.path, kv->pos, key, kv->n, max);
    *s = malloc((size_t)(kv->n ? kv->n : 1) * sizeof **s);
    *len = malloc((size_t)(kv->n ? kv->n : 1) * sizeof **len);
    if (!*s || !*len) {
        free(*s), free(*len);
        *s = NULL;
        *len = NULL;
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", g->f.path);
    }
    const uint8_t *p = kv->arr;
    for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t l;
        memcpy(&l, p, 8);
        (*s)[i] = (const char *)p + 8;
        (*len)[i] = (size_t)l;
        p += 8 + l;
    }
    return GRAFT_OK;
}

/* A numeric array of exactly n entries of one of the given 4-byte types. */
static graft_status num_array(const graft_gguf *g, const char *key, uint64_t n, uint32_t t1, uint32_t t2,
                              const uint8_t **out) {
    const graft_gguf_kv *kv = graft_gguf_find(g, key);
    *out = NULL;
    if (!kv) return GRAFT_OK;
    if (kv->type != GGUF_V_ARRAY || (kv->elem_type != t1 && kv->elem_type != t2))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: key '%s': must be an array of %s", g->f.path, kv->pos,
                          key, graft_gguf_vtype_name(t1));
    if (kv->n != n)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: offset %zu: key '%s': %" PRIu64 " entries but tokenizer.ggml.tokens has %" PRIu64,
                          g->f.path, kv->pos, key, kv->n, n);
    *out = kv->arr;
    return GRAFT_OK;
}

#define MAX_VOCAB (1u << 26)
#define SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's space */

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * llama.cpp's "llama" vocab (SentencePiece pieces with U+2581 for spaces,
 * scores, types) as the llama2.c tokenizer graft has: the same pieces with
 * plain spaces, the same scores. That tokenizer keeps llama2.c's fixed ids
 * (<unk> 0, <s> 1, </s> 2, byte tokens <0x00>..<0xFF> at 3..258), which is
 * the layout of Llama's own vocabulary; other layouts are refused.
 */
static graft_status spm_tokenizer(const graft_gguf *g, graft_tokenizer *t, const char **tok, const size_t *len,
                                  int n) {
    const char *path = g->f.path;
    const uint8_t *scores = NULL;
    GRAFT_TRY(num_array(g, "tokenizer.ggml.scores", (uint64_t)n, GGUF_V_FLOAT32, GGUF_V_FLOAT32, &scores));
    int bos, eos;
    GRAFT_TRY(get_token_id(g, path, "tokenizer.ggml.bos_token_id", &bos));
    GRAFT_TRY(get_token_id(g, path, "tokenizer.ggml.eos_token_id", &eos));
    if ((bos >= 0 && bos != 1) || (eos >= 0 && eos != 2) || n < 259)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: the llama vocabulary has %d tokens, bos %d, eos %d; graft's SentencePiece tokenizer "
                          "needs bos 1, eos 2 and the byte tokens at 3..258",
                          path, n, bos, eos);
    for (int b = 0; b < 256; b++) {
        const char *s = tok[3 + b];
        if (len[3 + b] != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || hexval(s[3]) * 16 + hexval(s[4]) != b ||
            hexval(s[3]) < 0 || hexval(s[4]) < 0)
            return graft_fail(GRAFT_ERR_UNSUPPORTED,
                              "%s: tokenizer.ggml.tokens[%d] is \"%.*s\", not the byte token <0x%02X> graft's "
                              "SentencePiece tokenizer expects there",
                              path, 3 + b, (int)(len[3 + b] > 32 ? 32 : len[3 + b]), s, b);
    }
    /* the llama2.c tokenizer.bin image: int32 max length, then score, length, bytes */
    size_t total = 4, max_len = 1;
    for (int i = 0; i < n; i++) total += 8 + len[i];
    uint8_t *img = malloc(total);
    if (!img) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    size_t k = 4;
    for (int i = 0; i < n; i++) {
        float sc = 0.0f;
        if (scores) memcpy(&sc, scores + 4 * (size_t)i, 4);
        size_t at = k + 8, l = 0;
        for (size_t j = 0; j < len[i];) {
            if (len[i] - j >= 3 && !memcmp(tok[i] + j, SPM_SPACE, 3)) {
                img[at + l++] = ' ';
                j += 3;
            } else {
                img[at + l++] = (uint8_t)tok[i][j++];
            }
        }
        if (l > (size_t)INT32_MAX / 2) {
            free(img);
            return graft_fail(GRAFT_ERR_FORMAT, "%s: tokenizer.ggml.tokens[%d] is too long", path, i);
        }
        int32_t l32 = (int32_t)l;
        memcpy(img + k, &sc, 4);
        memcpy(img + k + 4, &l32, 4);
        if (l > max_len) max_len = l;
        k = at + l;
    }
    int32_t mx = (int32_t)(max_len > (1 << 16) ? (1 << 16) : max_len);
    memcpy(img, &mx, 4);
    graft_status st = max_len > (1 << 16) ? graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: a token is longer than 65536 bytes", path)
                                          : tok_llama2c_load_mem(t, path, img, k);
    free(img);
    return st;
}

graft_status graft_gguf_tokenizer(const graft_gguf *g, graft_tokenizer **out) {
    *out = NULL;
    const char *path = g->f.path;
    const char *model;
    size_t mlen;
    GRAFT_TRY(get_string(g, path, "tokenizer.ggml.model", &model, &mlen));
    if (!model || str_is(model, mlen, "none") || str_is(model, mlen, "no_vocab")) return GRAFT_OK;
    bool gpt2 = str_is(model, mlen, "gpt2"), llama = str_is(model, mlen, "llama");
    if (!gpt2 && !llama) {
        const graft_gguf_kv *kv = graft_gguf_find(g, "tokenizer.ggml.model");
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: offset %zu: key 'tokenizer.ggml.model': \"%.*s\" is not supported (gpt2, llama)", path,
                          kv->val_pos, (int)(mlen > 32 ? 32 : mlen), model);
    }
    if (gpt2) {
        /* graft's byte-level BPE pre-tokenises with GPT-2's regex; another
         * pre-tokenizer would split text differently */
        const char *pre;
        size_t plen;
        GRAFT_TRY(get_string(g, path, "tokenizer.ggml.pre", &pre, &plen));
        if (pre && !str_is(pre, plen, "gpt-2")) {
            const graft_gguf_kv *kv = graft_gguf_find(g, "tokenizer.ggml.pre");
            return graft_fail(GRAFT_ERR_UNSUPPORTED,
                              "%s: offset %zu: key 'tokenizer.ggml.pre': \"%.*s\" is not supported (graft's byte-level "
                              "BPE uses GPT-2's pre-tokenizer, \"gpt-2\")",
                              path, kv->val_pos, (int)(plen > 32 ? 32 : plen), pre);
        }
    }
    const graft_gguf_kv *tkv, *mkv;
    const char **tok = NULL, **merges = NULL;
    size_t *len = NULL, *mlens = NULL;
    const uint8_t *types = NULL;
    graft_tokenizer *t = calloc(1, sizeof *t);
    graft_status st = t && (t->path = strdup(path)) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    if (st == GRAFT_OK) {
        t->bos = t->eos = -1;
        st = string_array(g, "tokenizer.ggml.tokens", MAX_VOCAB, &tkv, &tok, &len);
    }
    if (st == GRAFT_OK && (!tkv || tkv->n == 0))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: tokenizer.ggml.model is set but tokenizer.ggml.tokens is %s", path,
                        tkv ? "empty" : "missing");
    if (st == GRAFT_OK) st = num_array(g, "tokenizer.ggml.token_type", tkv->n, GGUF_V_INT32, GGUF_V_UINT32, &types);
    if (st == GRAFT_OK && gpt2) {
        st = string_array(g, "tokenizer.ggml.merges", MAX_VOCAB * 4ull, &mkv, &merges, &mlens);
        if (st == GRAFT_OK && !mkv)
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: a gpt2 tokenizer needs tokenizer.ggml.merges", path);
        int32_t *ty = NULL;
        if (st == GRAFT_OK && types) {
            /* the array may sit at any byte offset: copy it out aligned */
            ty = malloc((size_t)tkv->n * sizeof *ty);
            if (!ty) st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
            else memcpy(ty, types, (size_t)tkv->n * sizeof *ty);
        }
        if (st == GRAFT_OK)
            st = tok_gpt2_load_list(t, path, (int)tkv->n, tok, len, ty, (size_t)mkv->n, merges, mlens);
        free(ty);
        int bos, eos;
        if (st == GRAFT_OK) st = get_token_id(g, path, "tokenizer.ggml.bos_token_id", &bos);
        if (st == GRAFT_OK) st = get_token_id(g, path, "tokenizer.ggml.eos_token_id", &eos);
        if (st == GRAFT_OK && bos >= 0 && bos < t->n_vocab) t->bos = bos;
        if (st == GRAFT_OK && eos >= 0 && eos < t->n_vocab) t->eos = eos;
    } else if (st == GRAFT_OK) {
        st = spm_tokenizer(g, t, tok, len, (int)tkv->n);
    }
    free(tok);
    free(len);
    free(merges);
    free(mlens);
    if (st != GRAFT_OK) {
        graft_tokenizer_free(t);
        return st;
    }
    *out = t;
    return GRAFT_OK;
}

/* ================================================================ the model */

graft_status graft_load_gguf(graft_model *m, const char *path) {
    graft_gguf g;
    GRAFT_TRY(graft_gguf_open(path, &g));
    graft_status st = parse_config(&g, path, &m->cfg);
    /* vocabulary size and tying come from the tensors */
    const graft_gguf_tensor *emb = graft_gguf_find_tensor(&g, "token_embd.weight");
    const graft_gguf_tensor *outw = graft_gguf_find_tensor(&g, "output.weight");
    if (st == GRAFT_OK && !emb) st = graft_fail(GRAFT_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", path);
    if (st == GRAFT_OK && (emb->n_dims != 2 || emb->ne[1] > (1 << 24) || emb->ne[0] != m->cfg.d_model))
        st = graft_fail(GRAFT_ERR_FORMAT,
                        "%s: offset %zu: tensor 'token_embd.weight': dimensions [%" PRId64 ", %" PRId64
                        "] are not [embedding_length %d, vocabulary]",
                        path, emb->pos, emb->ne[0], emb->ne[1], m->cfg.d_model);
    if (st == GRAFT_OK) {
        m->cfg.vocab_size = (int)emb->ne[1];
        m->cfg.tied = !outw || same_tensor_bytes(outw, emb);
        st = graft_param_table_init(&m->params, &m->cfg);
    }
    if (st == GRAFT_OK) st = bind_weights(m, &g, path);
    if (st == GRAFT_OK) st = graft_gguf_tokenizer(&g, &m->tok);
    if (st == GRAFT_OK && m->tok) {
        if (m->cfg.bos_id < 0) m->cfg.bos_id = m->tok->bos;
        if (m->cfg.eos_id < 0) m->cfg.eos_id = m->tok->eos;
    }
    /* the weights may point into the mapping: the model keeps it */
    m->bin = g.f;
    memset(&g.f, 0, sizeof g.f);
    graft_gguf_close(&g);
    return st;
}
