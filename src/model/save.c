/*
 * save.c - a model as a Hugging Face folder: config.json the way
 * transformers' save_pretrained writes it, model.safetensors under the
 * canonical names, generation_config.json and the tokenizer files; plus the
 * string buffer and Python-style number printing those writers share.
 */
#define _GNU_SOURCE
#include "model/save.h"

#include "tokenizer/tokenizer_save.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The transformers release whose save_pretrained output these files follow
 * (the same one that wrote the test fixture). */
#define HF_TRANSFORMERS_VERSION "4.45.2"

/* ================================================================ text buffers */

void graft_sb_add(graft_sbuf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (n + 1 > b->cap - b->len || !b->s) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void graft_sb_str(graft_sbuf *b, const char *s) { graft_sb_add(b, s, strlen(s)); }

void graft_sb_printf(graft_sbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        graft_sb_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    graft_sb_add(b, big, (size_t)n);
    free(big);
}

void graft_sb_json_str(graft_sbuf *b, const char *s, size_t n) {
    graft_sb_add(b, "\"", 1);
    size_t run = 0; /* bytes copied in one go between escapes */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\t') esc = "\\t";
        else if (c == '\r') esc = "\\r";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", c);
            esc = u;
        }
        if (!esc) {
            run++;
            continue;
        }
        graft_sb_add(b, s + i - run, run);
        run = 0;
        graft_sb_str(b, esc);
    }
    graft_sb_add(b, s + n - run, run);
    graft_sb_add(b, "\"", 1);
}

void graft_sb_pyfloat(graft_sbuf *b, double v, bool f32) {
    if (isnan(v)) {
        graft_sb_str(b, "NaN");
        return;
    }
    if (isinf(v)) {
        graft_sb_str(b, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == 0) {
        graft_sb_str(b, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    /* Shortest round-tripping digits, then laid out the way repr() does:
     * positional for exponents in [-4, 16), otherwise d.ddde+XX. */
    char e[40];
    int maxp = f32 ? 9 : 17;
    for (int p = 1; p <= maxp; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        double back = strtod(e, NULL);
        if (f32 ? (float)back == (float)v : back == v) break;
    }
    bool neg = e[0] == '-';
    const char *m = e + neg;
    char digits[24];
    int nd = 0;
    const char *p = m;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 23) digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    if (neg) graft_sb_add(b, "-", 1);
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) graft_sb_add(b, i < nd ? &digits[i] : "0", 1);
            graft_sb_add(b, ".", 1);
            if (nd > exp10 + 1) graft_sb_add(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else graft_sb_add(b, "0", 1);
        } else {
            graft_sb_str(b, "0.");
            for (int i = 0; i < -exp10 - 1; i++) graft_sb_add(b, "0", 1);
            graft_sb_add(b, digits, (size_t)nd);
        }
    } else {
        graft_sb_add(b, digits, 1);
        if (nd > 1) {
            graft_sb_add(b, ".", 1);
            graft_sb_add(b, digits + 1, (size_t)(nd - 1));
        }
        graft_sb_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

void graft_sb_free(graft_sbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

graft_status graft_sb_write_file(const graft_sbuf *b, const char *path) {
    if (b->oom) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory building the file", path);
    return graft_write_file_atomic(path, b->s ? b->s : "", b->len);
}

/* ================================================================ config.json */

/* One "key": value line; values are pre-rendered JSON. */
typedef struct kv {
    const char *key;
    char *val;
} kv;

typedef struct kv_list {
    kv items[40];
    int n;
    bool oom;
} kv_list;

static void put(kv_list *l, const char *key, graft_sbuf *val) {
    if (val->oom || l->n == (int)(sizeof l->items / sizeof l->items[0])) {
        l->oom = true;
        graft_sb_free(val);
        return;
    }
    l->items[l->n].key = key;
    l->items[l->n].val = val->s;
    l->n++;
    memset(val, 0, sizeof *val);
}

static void put_raw(kv_list *l, const char *key, const char *json) {
    graft_sbuf v = {0};
    graft_sb_str(&v, json);
    put(l, key, &v);
}

static void put_int(kv_list *l, const char *key, long x) {
    graft_sbuf v = {0};
    graft_sb_printf(&v, "%ld", x);
    put(l, key, &v);
}

/* A token id, or null when unknown (-1). */
static void put_id(kv_list *l, const char *key, int id) {
    if (id < 0) put_raw(l, key, "null");
    else put_int(l, key, id);
}

static void put_float(kv_list *l, const char *key, double x, bool f32) {
    graft_sbuf v = {0};
    graft_sb_pyfloat(&v, x, f32);
    put(l, key, &v);
}

static void put_str(kv_list *l, const char *key, const char *s) {
    graft_sbuf v = {0};
    graft_sb_json_str(&v, s, strlen(s));
    put(l, key, &v);
}

static int cmp_kv(const void *a, const void *b) { return strcmp(((const kv *)a)->key, ((const kv *)b)->key); }

static const char *torch_dtype_name(graft_dtype dt) {
    return dt == GRAFT_F16 ? "float16" : dt == GRAFT_BF16 ? "bfloat16" : "float32";
}

graft_status graft_config_to_json(const graft_config *cfg, graft_dtype dtype, char **out) {
    *out = NULL;
    kv_list l = {.n = 0};
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        /* GPT2Config.__init__'s keys. The dropout and summary_* values are
         * the class defaults: graft trains without dropout, but a config that
         * says so would differ from what transformers writes for this shape. */
        put_str(&l, "activation_function", "gelu_new");
        put_raw(&l, "architectures", "[\n    \"GPT2LMHeadModel\"\n  ]");
        put_float(&l, "attn_pdrop", 0.1, false);
        put_id(&l, "bos_token_id", cfg->bos_id);
        put_float(&l, "embd_pdrop", 0.1, false);
        put_id(&l, "eos_token_id", cfg->eos_id);
        put_float(&l, "initializer_range", 0.02, false);
        put_float(&l, "layer_norm_epsilon", cfg->norm_eps, true);
        put_str(&l, "model_type", "gpt2");
        put_int(&l, "n_embd", cfg->d_model);
        put_int(&l, "n_head", cfg->n_head);
        if (cfg->d_ff == 4 * cfg->d_model) put_raw(&l, "n_inner", "null");
        else put_int(&l, "n_inner", cfg->d_ff);
        put_int(&l, "n_layer", cfg->n_layer);
        put_int(&l, "n_positions", cfg->n_ctx);
        put_raw(&l, "reorder_and_upcast_attn", "false");
        put_float(&l, "resid_pdrop", 0.1, false);
        put_raw(&l, "scale_attn_by_inverse_layer_idx", "false");
        put_raw(&l, "scale_attn_weights", "true");
        put_raw(&l, "summary_activation", "null");
        put_float(&l, "summary_first_dropout", 0.1, false);
        put_raw(&l, "summary_proj_to_labels", "true");
        put_str(&l, "summary_type", "cls_index");
        put_raw(&l, "summary_use_proj", "true");
        /* PretrainedConfig and GPT2Config both default to tied: only an
         * untied model carries the key. */
        if (!cfg->tied) put_raw(&l, "tie_word_embeddings", "false");
    } else if (cfg->arch == GRAFT_ARCH_LLAMA) {
        put_raw(&l, "architectures", "[\n    \"LlamaForCausalLM\"\n  ]");
        put_raw(&l, "attention_bias", "false");
        put_float(&l, "attention_dropout", 0.0, false);
        put_id(&l, "bos_token_id", cfg->bos_id);
        put_id(&l, "eos_token_id", cfg->eos_id);
        put_int(&l, "head_dim", cfg->head_dim);
        put_str(&l, "hidden_act", "silu");
        put_int(&l, "hidden_size", cfg->d_model);
        put_float(&l, "initializer_range", 0.02, false);
        put_int(&l, "intermediate_size", cfg->d_ff);
        put_int(&l, "max_position_embeddings", cfg->n_ctx);
        put_raw(&l, "mlp_bias", "false");
        put_str(&l, "model_type", "llama");
        put_int(&l, "num_attention_heads", cfg->n_head);
        put_int(&l, "num_hidden_layers", cfg->n_layer);
        put_int(&l, "num_key_value_heads", cfg->n_kv_head);
        put_int(&l, "pretraining_tp", 1);
        put_float(&l, "rms_norm_eps", cfg->norm_eps, true);
        put_raw(&l, "rope_scaling", "null");
        put_float(&l, "rope_theta", cfg->rope_theta, true);
        /* LlamaConfig defaults to untied while PretrainedConfig defaults to
         * tied, so the key differs from one of them either way. */
        put_raw(&l, "tie_word_embeddings", cfg->tied ? "true" : "false");
    } else {
        return graft_fail(GRAFT_ERR_INVALID, "config.json: unknown architecture %d", (int)cfg->arch);
    }
    put_str(&l, "torch_dtype", torch_dtype_name(dtype));
    put_str(&l, "transformers_version", HF_TRANSFORMERS_VERSION);
    put_raw(&l, "use_cache", "true");
    put_int(&l, "vocab_size", cfg->vocab_size);

    graft_status st = GRAFT_OK;
    graft_sbuf b = {0};
    if (!l.oom) {
        /* json.dumps(sort_keys=True, indent=2) */
        qsort(l.items, (size_t)l.n, sizeof l.items[0], cmp_kv);
        graft_sb_str(&b, "{\n");
        for (int i = 0; i < l.n; i++) {
            graft_sb_str(&b, "  ");
            graft_sb_json_str(&b, l.items[i].key, strlen(l.items[i].key));
            graft_sb_str(&b, ": ");
            graft_sb_str(&b, l.items[i].val);
            graft_sb_str(&b, i + 1 < l.n ? ",\n" : "\n");
        }
        graft_sb_str(&b, "}\n");
    }
    for (int i = 0; i < l.n; i++) free(l.items[i].val);
    if (l.oom || b.oom) {
        graft_sb_free(&b);
        st = graft_fail(GRAFT_ERR_NOMEM, "config.json: out of memory");
    } else {
        *out = b.s;
    }
    return st;
}

static graft_status write_generation_config(const graft_config *cfg, const char *dir) {
    /* GenerationConfig.from_model_config keeps the special ids that are set. */
    graft_sbuf b = {0};
    graft_sb_str(&b, "{\n  \"_from_model_config\": true,\n");
    if (cfg->bos_id >= 0) graft_sb_printf(&b, "  \"bos_token_id\": %d,\n", cfg->bos_id);
    if (cfg->eos_id >= 0) graft_sb_printf(&b, "  \"eos_token_id\": %d,\n", cfg->eos_id);
    graft_sb_str(&b, "  \"transformers_version\": \"" HF_TRANSFORMERS_VERSION "\"\n}\n");
    char *path = graft_path_join(dir, "generation_config.json");
    graft_status st = path ? graft_sb_write_file(&b, path) : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    free(path);
    graft_sb_free(&b);
    return st;
}

/* ================================================================ weights */

void graft_rope_permute_rows(float *dst, const float *src, int n_heads, int head_dim, size_t cols, int to_half) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < half; j++)
            for (int c = 0; c < 2; c++) {
                size_t inter = (size_t)h * head_dim + 2 * j + c;  /* llama2.c row */
                size_t rot = (size_t)h * head_dim + c * half + j; /* HF row */
                size_t from = to_half ? inter : rot, to = to_half ? rot : inter;
                memcpy(dst + to * cols, src + from * cols, cols * sizeof(float));
            }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static graft_status write_weights(const graft_model *m, const char *dir, graft_dtype dtype) {
    const graft_param_table *t = &m->params;
    const graft_config *cfg = &m->cfg;
    graft_st_write_item *items = calloc((size_t)t->n + 1, sizeof *items);
    float **owned = calloc((size_t)t->n + 1, sizeof *owned);
    char *path = graft_path_join(dir, "model.safetensors");
    graft_status st = GRAFT_OK;
    if (!items || !owned || !path) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < t->n; i++) {
        const graft_param *p = &t->p[i];
        graft_st_write_item *it = &items[i];
        it->name = p->name;
        it->dtype = dtype;
        it->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) it->shape[d] = p->shape[d];
        it->data = p->data;
        /* HF Llama rotates halves; llama2.c weights pair neighbours. The
         * q/k rows are reordered so the saved model computes the same thing. */
        bool q = ends_with(p->name, ".self_attn.q_proj.weight"), k = ends_with(p->name, ".self_attn.k_proj.weight");
        if (cfg->arch == GRAFT_ARCH_LLAMA && cfg->rope_interleaved && (q || k)) {
            owned[i] = malloc(p->numel * sizeof(float));
            if (!owned[i]) {
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
                goto done;
            }
            graft_rope_permute_rows(owned[i], p->data, q ? cfg->n_head : cfg->n_kv_head, cfg->head_dim,
                                    (size_t)p->shape[1], 1);
            it->data = owned[i];
        }
    }
    static const char *const meta[] = {"format", "pt"};
    st = graft_st_write(path, items, t->n, meta, 1);
done:
    if (owned)
        for (int i = 0; i < t->n; i++) free(owned[i]);
    free(owned);
    free(items);
    free(path);
    return st;
}

graft_status graft_model_save_hf(const graft_model *m, const char *dir, graft_dtype dtype) {
    /* The writers read f32 arrays. Converting weights kept as stored changes
     * no value of the model, only where its floats live. */
    GRAFT_TRY(graft_model_need_f32((graft_model *)(uintptr_t)m));
    if (!m || !dir) return graft_fail(GRAFT_ERR_INVALID, "graft_model_save_hf: NULL argument");
    if (dtype != GRAFT_F32 && dtype != GRAFT_F16 && dtype != GRAFT_BF16)
        return graft_fail(GRAFT_ERR_INVALID, "%s: weights can be saved as F32, F16 or BF16, not %s", dir,
                          graft_dtype_name(dtype));
    GRAFT_TRY(graft_mkdir_p(dir));
    char *text = NULL;
    GRAFT_TRY(graft_config_to_json(&m->cfg, dtype, &text));
    char *path = graft_path_join(dir, "config.json");
    graft_status st = path ? graft_write_file_atomic(path, text, strlen(text))
                           : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    free(path);
    free(text);
    if (st == GRAFT_OK) st = write_weights(m, dir, dtype);
    if (st == GRAFT_OK) st = write_generation_config(&m->cfg, dir);
    if (st == GRAFT_OK && m->tok) st = graft_tokenizer_save_hf(m->tok, dir, m->cfg.n_ctx);
    return st;
}

int graft_dir_holds_model(const char *dir) {
    static const char *const names[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = graft_path_join(dir, names[i]);
        int there = p && graft_path_exists(p);
        free(p);
        if (there) return 1;
    }
    return 0;
}
