/*
 * gguf_write.c - a graft model as a GGUF v3 file in llama.cpp's naming and
 * layout (what convert_hf_to_gguf.py writes for the same Hugging Face
 * model), so llama.cpp can run an edited model. docs/GGUF.md lists the
 * bytes.
 *
 * The header, metadata and tensor infos are built in memory first (their
 * size decides where the data section starts), then the tensors are
 * streamed out one at a time, converted to the file's layout (GPT-2 Conv1D
 * matrices transposed to [out, in], Llama q/k rows in interleaved RoPE
 * order) and dtype. The file is written as path.tmp, synced and renamed, so
 * a reader never sees half a file.
 */
#define _GNU_SOURCE
#include "model/gguf.h"

#include "model/save.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGNMENT 32

/* llama.cpp's general.file_type values (llama_ftype). */
#define FTYPE_ALL_F32 0
#define FTYPE_MOSTLY_F16 1
#define FTYPE_MOSTLY_BF16 32

/* GGUF token types (llama_token_type). */
#define TT_NORMAL 1
#define TT_UNKNOWN 2
#define TT_CONTROL 3
#define TT_UNUSED 5
#define TT_BYTE 6

/* ================================================================ metadata */

typedef struct meta {
    graft_sbuf b;
    uint64_t n;
} meta;

static void w_u32(graft_sbuf *b, uint32_t v) { graft_sb_add(b, &v, 4); }
static void w_u64(graft_sbuf *b, uint64_t v) { graft_sb_add(b, &v, 8); }
static void w_str(graft_sbuf *b, const char *s, size_t n) {
    w_u64(b, n);
    graft_sb_add(b, s, n);
}

static void key(meta *m, const char *k, uint32_t type) {
    w_str(&m->b, k, strlen(k));
    w_u32(&m->b, type);
    m->n++;
}

static void kv_str(meta *m, const char *k, const char *v) {
    key(m, k, GGUF_V_STRING);
    w_str(&m->b, v, strlen(v));
}

static void kv_u32(meta *m, const char *k, uint32_t v) {
    key(m, k, GGUF_V_UINT32);
    w_u32(&m->b, v);
}

static void kv_f32(meta *m, const char *k, float v) {
    key(m, k, GGUF_V_FLOAT32);
    graft_sb_add(&m->b, &v, 4);
}

static void kv_bool(meta *m, const char *k, bool v) {
    key(m, k, GGUF_V_BOOL);
    uint8_t x = v;
    graft_sb_add(&m->b, &x, 1);
}

static void kv_array(meta *m, const char *k, uint32_t elem, uint64_t n) {
    key(m, k, GGUF_V_ARRAY);
    w_u32(&m->b, elem);
    w_u64(&m->b, n);
}

static void hparams(meta *m, const graft_config *c) {
    const char *a = c->arch == GRAFT_ARCH_GPT2 ? "gpt2" : "llama";
    char k[96];
#define K(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
    kv_u32(m, K("context_length"), (uint32_t)c->n_ctx);
    kv_u32(m, K("embedding_length"), (uint32_t)c->d_model);
    kv_u32(m, K("block_count"), (uint32_t)c->n_layer);
    kv_u32(m, K("feed_forward_length"), (uint32_t)c->d_ff);
    kv_u32(m, K("attention.head_count"), (uint32_t)c->n_head);
    if (c->arch == GRAFT_ARCH_GPT2) {
        kv_f32(m, K("attention.layer_norm_epsilon"), c->norm_eps);
    } else {
        kv_u32(m, K("attention.head_count_kv"), (uint32_t)c->n_kv_head);
        kv_f32(m, K("rope.freq_base"), c->rope_theta);
        kv_f32(m, K("attention.layer_norm_rms_epsilon"), c->norm_eps);
        if (c->head_dim * c->n_head != c->d_model) {
            kv_u32(m, K("attention.key_length"), (uint32_t)c->head_dim);
            kv_u32(m, K("attention.value_length"), (uint32_t)c->head_dim);
        }
        kv_u32(m, K("rope.dimension_count"), (uint32_t)c->head_dim);
        kv_u32(m, K("vocab_size"), (uint32_t)c->vocab_size);
    }
#undef K
}

/* tokenizer.ggml.*: a GPT-2 BPE as llama.cpp's "gpt2" model (byte-level
 * token spellings, "a b" merges in rank order), a llama2.c tokenizer as its
 * "llama" model (SentencePiece pieces with U+2581 for spaces, scores, token
 * types). Ids past the tokenizer's own (a model vocabulary padded beyond the
 * tokenizer) are "[PAD<id>]" tokens of type UNUSED, as the converter writes. */
static graft_status tokenizer_meta(meta *m, const graft_tokenizer *t, int n_vocab) {
    const bool bpe = t->kind == TOK_GPT2_BPE;
    char pad[32];
    kv_str(m, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    kv_str(m, "tokenizer.ggml.pre", bpe ? "gpt-2" : "default");
    int32_t enc[256];
    tok_gpt2_byte_to_unicode(enc);
    bool *added = calloc((size_t)n_vocab + 1, sizeof *added);
    if (!added) return graft_fail(GRAFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
    if (bpe)
        for (int k = 0; k < t->bpe.n_added; k++)
            if (t->bpe.added[k].id >= 0 && t->bpe.added[k].id < n_vocab) added[t->bpe.added[k].id] = true;

    kv_array(m, "tokenizer.ggml.tokens", GGUF_V_STRING, (uint64_t)n_vocab);
    for (int id = 0; id < n_vocab; id++) {
        bool have = id < t->n_vocab && t->piece_len[id] >= 0;
        if (!have) {
            int k = snprintf(pad, sizeof pad, "[PAD%d]", id);
            w_str(&m->b, pad, (size_t)k);
        } else if (bpe) {
            const char *p = t->piece_pool + t->piece_off[id];
            size_t n = (size_t)t->piece_len[id];
            if (added[id]) {
                w_str(&m->b, p, n); /* added tokens are their text */
            } else {
                char *s = malloc(4 * n + 1);
                if (!s) {
                    free(added);
                    return graft_fail(GRAFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
                }
                size_t k = 0;
                for (size_t i = 0; i < n; i++) k += tok_utf8_encode(enc[(uint8_t)p[i]], s + k);
                w_str(&m->b, s, k);
                free(s);
            }
        } else if (id == t->bos || id == t->eos) {
            const char *s = id == t->bos ? "<s>" : "</s>";
            w_str(&m->b, s, strlen(s));
        } else {
            const tok_spm *s = &t->spm;
            const char *p = s->raw + s->raw_off[id];
            size_t n = (size_t)s->raw_len[id], spaces = 0;
            for (size_t i = 0; i < n; i++) spaces += p[i] == ' ';
            w_u64(&m->b, n + 2 * spaces);
            for (size_t i = 0; i < n; i++) {
                if (p[i] == ' ') graft_sb_add(&m->b, "\xe2\x96\x81", 3);
                else graft_sb_add(&m->b, p + i, 1);
            }
        }
    }
    kv_array(m, "tokenizer.ggml.token_type", GGUF_V_INT32, (uint64_t)n_vocab);
    for (int id = 0; id < n_vocab; id++) {
        int32_t ty = TT_NORMAL;
        if (id >= t->n_vocab || t->piece_len[id] < 0) ty = TT_UNUSED;
        else if (bpe) ty = added[id] ? TT_CONTROL : TT_NORMAL;
        else if (id == t->bos || id == t->eos) ty = TT_CONTROL;
        else if (id >= 3 && id < 3 + 256) ty = TT_BYTE; /* llama2.c: <0x00>.. at 3.. */
        else if (id == 0) ty = TT_UNKNOWN;
        graft_sb_add(&m->b, &ty, 4);
    }
    free(added);
    if (!bpe) {
        kv_array(m, "tokenizer.ggml.scores", GGUF_V_FLOAT32, (uint64_t)n_vocab);
        for (int id = 0; id < n_vocab; id++) {
            float sc = id < t->n_vocab ? t->spm.score[id] : -1e9f;
            graft_sb_add(&m->b, &sc, 4);
        }
    } else {
        /* merges in rank order */
        const tok_pairmap *pm = &t->bpe.merges;
        size_t n = 0;
        int64_t *order = malloc((pm->count + 1) * sizeof *order);
        if (!order) return graft_fail(GRAFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
        for (size_t i = 0; i < pm->cap && pm->e; i++)
            if (pm->e[i].rank >= 0) order[n++] = (int64_t)i;
        /* counting sort by rank: ranks are 0..n-1 unless rules repeated */
        int64_t *by_rank = malloc((n + 1) * sizeof *by_rank);
        int max_rank = -1;
        for (size_t i = 0; i < n; i++)
            if (pm->e[order[i]].rank > max_rank) max_rank = pm->e[order[i]].rank;
        int64_t *slot = by_rank ? calloc((size_t)max_rank + 2, sizeof *slot) : NULL;
        if (!by_rank || !slot) {
            free(order), free(by_rank), free(slot);
            return graft_fail(GRAFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
        }
        for (size_t i = 0; i < n; i++) slot[pm->e[order[i]].rank] = (int64_t)order[i] + 1;
        size_t k = 0;
        for (int r = 0; r <= max_rank; r++)
            if (slot[r]) by_rank[k++] = slot[r] - 1;
        kv_array(m, "tokenizer.ggml.merges", GGUF_V_STRING, (uint64_t)k);
        graft_status st = GRAFT_OK;
        for (size_t i = 0; i < k && st == GRAFT_OK; i++) {
            uint64_t key64 = pm->e[by_rank[i]].key;
            int a = (int)(uint32_t)(key64 >> 32), b = (int)(uint32_t)key64;
            if (a < 0 || a >= t->n_vocab || b < 0 || b >= t->n_vocab || t->piece_len[a] < 0 || t->piece_len[b] < 0) {
                st = graft_fail(GRAFT_ERR_INTERNAL, "GGUF tokenizer: a merge names a token that does not exist");
                break;
            }
            size_t la = (size_t)t->piece_len[a], lb = (size_t)t->piece_len[b];
            char *s = malloc(4 * (la + lb) + 2);
            if (!s) {
                st = graft_fail(GRAFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
                break;
            }
            size_t q = 0;
            for (size_t j = 0; j < la; j++) q += tok_utf8_encode(enc[(uint8_t)t->piece_pool[t->piece_off[a] + j]], s + q);
            s[q++] = ' ';
            for (size_t j = 0; j < lb; j++) q += tok_utf8_encode(enc[(uint8_t)t->piece_pool[t->piece_off[b] + j]], s + q);
            w_str(&m->b, s, q);
            free(s);
        }
        free(order);
        free(by_rank);
        free(slot);
        GRAFT_TRY(st);
    }
    if (t->bos >= 0) kv_u32(m, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
    if (t->eos >= 0) kv_u32(m, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
    if (!bpe) kv_u32(m, "tokenizer.ggml.unknown_token_id", 0);
    kv_bool(m, "tokenizer.ggml.add_bos_token", !bpe);
    kv_bool(m, "tokenizer.ggml.add_eos_token", false);
    return GRAFT_OK;
}

/* ================================================================ tensors */

static uint32_t ggml_type_of(graft_dtype dt, int n_dims) {
    /* 1-D tensors (norms, biases) stay F32, as llama.cpp's converter keeps them */
    if (n_dims == 1 || dt == GRAFT_F32) return GGUF_T_F32;
    return dt == GRAFT_F16 ? GGUF_T_F16 : GGUF_T_BF16;
}

static size_t tensor_bytes(const graft_gguf_slot *s, uint32_t type) {
    size_t n = (size_t)s->ne[0] * (size_t)s->ne[1];
    return n * (type == GGUF_T_F32 ? 4 : 2);
}

/* The slot's data in the file's layout, as f32 (src itself when nothing changes). */
static const float *file_layout(const graft_config *cfg, const graft_gguf_slot *s, float *tmp) {
    const graft_param *p = s->p;
    if (s->x == GGUF_X_NONE) return p->data;
    size_t rows = (size_t)s->ne[1], cols = (size_t)s->ne[0];
    if (s->x == GGUF_X_TRANSPOSE) { /* graft [in = cols][out = rows] -> [out][in] */
        for (size_t o = 0; o < rows; o++)
            for (size_t k = 0; k < cols; k++) tmp[o * cols + k] = p->data[k * rows + o];
        return tmp;
    }
    /* q/k: HF rotate-half rows -> interleaved pairs; a llama2.c model's rows are interleaved already */
    if (cfg->rope_interleaved) return p->data;
    graft_rope_permute_rows(tmp, p->data, s->heads, cfg->head_dim, cols, 0);
    return tmp;
}

static graft_status write_all(FILE *fp, const char *tmp_path, const void *d, size_t n) {
    if (n && fwrite(d, 1, n, fp) != n)
        return graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", tmp_path, strerror(errno));
    return GRAFT_OK;
}

static graft_status write_tensor(FILE *fp, const char *tmp_path, const float *x, size_t n, uint32_t type) {
    if (type == GGUF_T_F32) return write_all(fp, tmp_path, x, n * sizeof(float));
    uint16_t buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 4096 ? n - i : 4096;
        graft_convert_from_f32(buf, x + i, type == GGUF_T_F16 ? GRAFT_F16 : GRAFT_BF16, k);
        GRAFT_TRY(write_all(fp, tmp_path, buf, k * 2));
        i += k;
    }
    return GRAFT_OK;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

graft_status graft_model_save_gguf(const graft_model *m, const char *path, graft_dtype dtype) {
    /* The writers read f32 arrays. Converting weights kept as stored changes
     * no value of the model, only where its floats live. */
    GRAFT_TRY(graft_model_need_f32((graft_model *)(uintptr_t)m));
    if (!m || !path) return graft_fail(GRAFT_ERR_INVALID, "graft_model_save_gguf: NULL argument");
    if (dtype != GRAFT_F32 && dtype != GRAFT_F16 && dtype != GRAFT_BF16)
        return graft_fail(GRAFT_ERR_INVALID, "%s: GGUF weights can be written as F32, F16 or BF16, not %s", path,
                          graft_dtype_name(dtype));
    const graft_config *cfg = &m->cfg;
    graft_gguf_slot *plan = NULL;
    int n_plan = 0;
    GRAFT_TRY(graft_gguf_plan(cfg, &m->params, true, &plan, &n_plan));

    meta md = {0};
    kv_str(&md, "general.architecture", cfg->arch == GRAFT_ARCH_GPT2 ? "gpt2" : "llama");
    char name[256];
    snprintf(name, sizeof name, "%s", m->path ? base_name(m->path) : "graft model");
    kv_str(&md, "general.name", name);
    kv_u32(&md, "general.file_type",
           dtype == GRAFT_F32 ? FTYPE_ALL_F32 : dtype == GRAFT_F16 ? FTYPE_MOSTLY_F16 : FTYPE_MOSTLY_BF16);
    kv_u32(&md, "general.alignment", ALIGNMENT);
    hparams(&md, cfg);
    graft_status st = GRAFT_OK;
    if (m->tok && m->tok->n_vocab > cfg->vocab_size)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: the tokenizer has %d ids but the model only %d; GGUF holds one vocabulary",
                        path, m->tok->n_vocab, cfg->vocab_size);
    else if (m->tok) st = tokenizer_meta(&md, m->tok, cfg->vocab_size);

    /* tensor infos; data offsets packed in plan order, each aligned */
    graft_sbuf info = {0};
    uint64_t off = 0;
    size_t max_numel = 0;
    for (int i = 0; i < n_plan && st == GRAFT_OK; i++) {
        const graft_gguf_slot *s = &plan[i];
        uint32_t type = ggml_type_of(dtype, s->n_dims);
        w_str(&info, s->name, strlen(s->name));
        w_u32(&info, (uint32_t)s->n_dims);
        for (int d = 0; d < s->n_dims; d++) w_u64(&info, (uint64_t)s->ne[d]);
        w_u32(&info, type);
        w_u64(&info, off);
        off += (tensor_bytes(s, type) + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
        if (s->p->numel > max_numel) max_numel = s->p->numel;
    }
    graft_sbuf head = {0};
    graft_sb_add(&head, "GGUF", 4);
    w_u32(&head, 3);
    w_u64(&head, (uint64_t)n_plan);
    w_u64(&head, md.n);
    if (st == GRAFT_OK && (md.b.oom || info.oom || head.oom))
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory building the GGUF header", path);

    size_t plen = strlen(path);
    char *tmp_path = malloc(plen + 5);
    float *tmp = st == GRAFT_OK ? malloc((max_numel ? max_numel : 1) * sizeof(float)) : NULL;
    FILE *fp = NULL;
    if (st == GRAFT_OK && (!tmp_path || !tmp)) st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    if (st == GRAFT_OK) {
        memcpy(tmp_path, path, plen);
        memcpy(tmp_path + plen, ".tmp", 5);
        fp = fopen(tmp_path, "wb");
        if (!fp) st = graft_fail(GRAFT_ERR_IO, "%s: cannot create: %s", tmp_path, strerror(errno));
    }
    static const uint8_t zeros[ALIGNMENT] = {0};
    size_t pos = 0;
    if (st == GRAFT_OK) st = write_all(fp, tmp_path, head.s, head.len);
    if (st == GRAFT_OK) st = write_all(fp, tmp_path, md.b.s, md.b.len);
    if (st == GRAFT_OK) st = write_all(fp, tmp_path, info.s, info.len);
    pos = head.len + md.b.len + info.len;
    if (st == GRAFT_OK) st = write_all(fp, tmp_path, zeros, (ALIGNMENT - pos % ALIGNMENT) % ALIGNMENT);
    for (int i = 0; i < n_plan && st == GRAFT_OK; i++) {
        const graft_gguf_slot *s = &plan[i];
        uint32_t type = ggml_type_of(dtype, s->n_dims);
        size_t nb = tensor_bytes(s, type);
        st = write_tensor(fp, tmp_path, file_layout(cfg, s, tmp), s->p->numel, type);
        if (st == GRAFT_OK) st = write_all(fp, tmp_path, zeros, (ALIGNMENT - nb % ALIGNMENT) % ALIGNMENT);
    }
    if (fp) {
        if (st == GRAFT_OK && (fflush(fp) != 0 || fsync(fileno(fp)) != 0))
            st = graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", tmp_path, strerror(errno));
        if (fclose(fp) != 0 && st == GRAFT_OK)
            st = graft_fail(GRAFT_ERR_IO, "%s: close failed: %s", tmp_path, strerror(errno));
        if (st == GRAFT_OK && rename(tmp_path, path) != 0)
            st = graft_fail(GRAFT_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp_path, strerror(errno));
        if (st != GRAFT_OK) unlink(tmp_path);
    }
    free(tmp);
    free(tmp_path);
    graft_sb_free(&head);
    graft_sb_free(&info);
    graft_sb_free(&md.b);
    free(plan);
    return st;
}
