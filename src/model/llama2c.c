/*
 * llama2c.c - Karpathy's llama2.c legacy (version 0) checkpoint.
 *
 * Layout: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len; a negative vocab_size means the
 * classifier is stored separately), then f32 arrays with the layer index
 * outermost:
 *   token_embedding [V, C], rms_att [L, C], wq [L, C, C], wk [L, KVD, C],
 *   wv [L, KVD, C], wo [L, C, C], rms_ffn [L, C], w1 [L, F, C],
 *   w2 [L, C, F], w3 [L, F, C], rms_final [C],
 *   freq_cis_real, freq_cis_imag [seq_len * head_size / 2 each] (unused),
 *   wcls [V, C] only when untied.
 * All matrices are [out, in], like nn.Linear. The file is mapped and every
 * parameter points at its slice: nothing is copied.
 *
 * llama2.c pairs RoPE dimensions as (x[2j], x[2j+1]). HF's converter
 * permutes q/k rows to make that rotate-half; we keep llama2.c's order and
 * set rope_interleaved = 1 instead, so the weights are the file's bytes.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "graft supports little-endian hosts only"
#endif

#define HEADER_BYTES 28
/* First word of the newer llama2.c export versions ("ak42" little-endian). */
#define LLAMA2C_MAGIC 0x616b3432u

static int32_t le32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

/* Overflow-checked a*b+c on element counts. */
static bool mad(size_t a, size_t b, size_t *acc) {
    size_t p;
    if (!graft_mul_size(a, b, &p) || *acc + p < *acc) return false;
    *acc += p;
    return true;
}

graft_status graft_load_llama2c(graft_model *m, const char *path) {
    GRAFT_TRY(graft_map_file(path, &m->bin));
    const uint8_t *buf = m->bin.data;
    size_t size = m->bin.size;
    if (size < HEADER_BYTES)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: file is %zu bytes, shorter than the %d-byte llama2.c header", path,
                          size, HEADER_BYTES);
    if ((uint32_t)le32(buf) == LLAMA2C_MAGIC)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: llama2.c export version 1/2 (magic \"ak42\" at offset 0) is not supported; "
                          "export with --version 0 (legacy)",
                          path);

    static const char *const field[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                         "n_kv_heads", "vocab_size", "seq_len"};
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = le32(buf + 4 * i);
    /* Bounds far above any llama2.c model: a value past them is garbage, and
     * keeping products small makes the size arithmetic below obviously safe. */
    const int32_t lim = 1 << 24;
    for (int i = 0; i < 7; i++) {
        /* only vocab_size may be negative (its sign flags the classifier) */
        int64_t v = i == 5 && h[i] < 0 ? -(int64_t)h[i] : h[i];
        if (v <= 0 || v > lim || (i == 2 && v > 65536))
            return graft_fail(GRAFT_ERR_FORMAT, "%s: header field %s = %d (int32 at offset %d) is not a plausible size",
                              path, field[i], (int)h[i], 4 * i);
    }
    const int C = h[0], F = h[1], L = h[2], H = h[3], KV = h[4], S = h[6];
    const bool shared = h[5] > 0;
    const int V = shared ? h[5] : -h[5];
    if (C % H != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header: dim %d (offset 0) is not divisible by n_heads %d (offset 12)",
                          path, C, H);
    if (KV > H || H % KV != 0)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: header: n_heads %d (offset 12) is not a multiple of n_kv_heads %d (offset 16)", path, H,
                          KV);
    const int D = C / H;
    if (D % 2 != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header: head size %d = dim/n_heads is odd; RoPE needs pairs", path, D);
    const size_t KVD = (size_t)KV * (size_t)D;

    /* Element counts of every section, in file order. */
    size_t n = 0;
    bool ok = mad((size_t)V, (size_t)C, &n)                    /* token_embedding */
              && mad((size_t)L, (size_t)C, &n)                 /* rms_att */
              && mad((size_t)L * C, (size_t)C, &n)             /* wq */
              && mad((size_t)L * KVD, (size_t)C, &n)           /* wk */
              && mad((size_t)L * KVD, (size_t)C, &n)           /* wv */
              && mad((size_t)L * C, (size_t)C, &n)             /* wo */
              && mad((size_t)L, (size_t)C, &n)                 /* rms_ffn */
              && mad((size_t)L * F, (size_t)C, &n)             /* w1 */
              && mad((size_t)L * C, (size_t)F, &n)             /* w2 */
              && mad((size_t)L * F, (size_t)C, &n)             /* w3 */
              && mad(1, (size_t)C, &n)                         /* rms_final */
              && mad(2, (size_t)S * (size_t)(D / 2), &n);      /* freq_cis real + imag */
    size_t n_cls = n;
    ok = ok && mad((size_t)V, (size_t)C, &n_cls);
    size_t want_shared, want_cls;
    ok = ok && graft_mul_size(n, 4, &want_shared) && graft_mul_size(n_cls, 4, &want_cls) &&
         want_cls + HEADER_BYTES > want_cls;
    if (!ok) return graft_fail(GRAFT_ERR_FORMAT, "%s: header sizes overflow", path);
    want_shared += HEADER_BYTES;
    want_cls += HEADER_BYTES;
    size_t want = shared ? want_shared : want_cls;
    if (size != want) {
        size_t other = shared ? want_cls : want_shared;
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: file is %zu bytes but the header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                          "n_kv_heads %d, vocab_size %d, seq_len %d) implies %zu bytes with a %s classifier%s",
                          path, size, C, F, L, H, KV, (int)h[5], S, want, shared ? "shared" : "separate",
                          size == other ? (shared ? "; the size fits a separate classifier: is vocab_size's sign wrong?"
                                                  : "; the size fits a shared classifier: is vocab_size's sign wrong?")
                                        : (size < want ? " (truncated?)" : " (trailing bytes?)"));
    }

    graft_config *cfg = &m->cfg;
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = GRAFT_ARCH_LLAMA;
    cfg->d_model = C;
    cfg->d_ff = F;
    cfg->n_layer = L;
    cfg->n_head = H;
    cfg->n_kv_head = KV;
    cfg->head_dim = D;
    cfg->vocab_size = V;
    cfg->n_ctx = S;
    cfg->norm_eps = 1e-5f;      /* hard-coded in llama2.c's rmsnorm */
    cfg->rope_theta = 10000.0f; /* hard-coded in llama2.c */
    cfg->rope_interleaved = 1;
    cfg->tied = shared;
    cfg->bos_id = 1; /* llama2.c's sentencepiece convention */
    cfg->eos_id = 2;
    GRAFT_TRY(graft_param_table_init(&m->params, cfg));

    /* Offsets (in floats from the start of the data) of each stacked section. */
    float *base = (float *)(void *)(m->bin.data + HEADER_BYTES); /* page + 28: 4-byte aligned */
    size_t off = 0;
    const size_t o_emb = off;
    off += (size_t)V * C;
    const size_t o_rms_att = off;
    off += (size_t)L * C;
    const size_t o_wq = off;
    off += (size_t)L * C * C;
    const size_t o_wk = off;
    off += (size_t)L * KVD * C;
    const size_t o_wv = off;
    off += (size_t)L * KVD * C;
    const size_t o_wo = off;
    off += (size_t)L * C * C;
    const size_t o_rms_ffn = off;
    off += (size_t)L * C;
    const size_t o_w1 = off;
    off += (size_t)L * F * C;
    const size_t o_w2 = off;
    off += (size_t)L * C * F;
    const size_t o_w3 = off;
    off += (size_t)L * F * C;
    const size_t o_rms_final = off;
    off += (size_t)C;
    off += 2 * (size_t)S * (size_t)(D / 2); /* RoPE tables: recomputed by the forward */
    const size_t o_cls = off;

    char nm[128];
#define SET(name_, offset_)                                                                     \
    do {                                                                                        \
        graft_param *p_ = graft_param_find(&m->params, name_);                                  \
        if (!p_) return graft_fail(GRAFT_ERR_INTERNAL, "%s: no parameter %s", path, name_);     \
        p_->data = base + (offset_);                                                            \
        m->mapped_bytes += p_->numel * sizeof(float);                                           \
    } while (0)
#define SETL(fmt_, offset_)                                                                     \
    do {                                                                                        \
        snprintf(nm, sizeof nm, fmt_, i);                                                       \
        SET(nm, offset_);                                                                       \
    } while (0)
    SET("model.embed_tokens.weight", o_emb);
    for (int i = 0; i < L; i++) {
        const size_t li = (size_t)i;
        SETL("model.layers.%d.input_layernorm.weight", o_rms_att + li * C);
        SETL("model.layers.%d.self_attn.q_proj.weight", o_wq + li * C * C);
        SETL("model.layers.%d.self_attn.k_proj.weight", o_wk + li * KVD * C);
        SETL("model.layers.%d.self_attn.v_proj.weight", o_wv + li * KVD * C);
        SETL("model.layers.%d.self_attn.o_proj.weight", o_wo + li * C * C);
        SETL("model.layers.%d.post_attention_layernorm.weight", o_rms_ffn + li * C);
        SETL("model.layers.%d.mlp.gate_proj.weight", o_w1 + li * F * C); /* w1 */
        SETL("model.layers.%d.mlp.down_proj.weight", o_w2 + li * C * F); /* w2 */
        SETL("model.layers.%d.mlp.up_proj.weight", o_w3 + li * F * C);   /* w3 */
    }
    SET("model.norm.weight", o_rms_final);
    if (!shared) SET("lm_head.weight", o_cls);
#undef SETL
#undef SET

    m->src_dtype = GRAFT_F32;
    m->format = "llama2c";
    return graft_weights_bind(&m->w, cfg, &m->params);
}
