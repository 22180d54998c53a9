/*
 * model.c - the graft_model handle: loading by path kind, info, tokenizer
 * ownership, and random models for benchmarks and gradient tests.
 */
#define _GNU_SOURCE /* sincos */
#include "internal.h"
#include "model/gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

graft_status graft_model_load(const char *path, graft_model **out) {
    if (!out) return graft_fail(GRAFT_ERR_INVALID, "graft_model_load: out is NULL");
    *out = NULL;
    if (!path) return graft_fail(GRAFT_ERR_INVALID, "graft_model_load: path is NULL");
    if (!graft_path_exists(path)) return graft_fail(GRAFT_ERR_IO, "%s: no such file or directory", path);
    graft_model *m = calloc(1, sizeof *m);
    if (!m) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    m->path = strdup(path);
    if (!m->path) {
        free(m);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    /* A folder is a Hugging Face checkpoint; a single file is a GGUF file
     * (known by its magic or its .gguf name) or a llama2.c .bin (a bare
     * .safetensors has no config to give it shape). */
    size_t plen = strlen(path);
    bool gguf = !graft_path_is_dir(path) &&
                (graft_is_gguf_file(path) || (plen >= 5 && strcmp(path + plen - 5, ".gguf") == 0));
    graft_status st = graft_path_is_dir(path) ? graft_load_hf(m, path)
                      : gguf                  ? graft_load_gguf(m, path)
                                              : graft_load_llama2c(m, path);
    if (st != GRAFT_OK) {
        graft_model_free(m);
        return st;
    }
    /* A GGUF file carries its own tokenizer (or none). */
    if (gguf) {
        *out = m;
        return GRAFT_OK;
    }
    /* The tokenizer beside the model. None at all is fine (ids still work,
     * or the caller hands one over); one that is there but broken is an error
     * the user must see, not a silent fallback. */
    st = graft_tokenizer_find(path, &m->tok);
    if (st == GRAFT_ERR_IO) {
        m->tok = NULL;
        graft_clear_error();
    } else if (st != GRAFT_OK) {
        graft_model_free(m);
        return st;
    }
    *out = m;
    return GRAFT_OK;
}

void graft_model_free(graft_model *m) {
    if (!m) return;
    graft_weights_unbind(&m->w);
    graft_param_table_free(&m->params);
    graft_st_close(&m->st);
    graft_unmap_file(&m->bin);
    graft_free_aligned(m->heap_slab);
    graft_free_aligned(m->f32_slab);
    graft_tokenizer_free(m->tok);
    free(m->path);
    free(m);
}

/* The weights' type as loaded: a Q8_0 GGUF (format "gguf-q8_0") has no graft_dtype. */
static const char *src_dtype_name(const graft_model *m) {
    return m->format && !strcmp(m->format, "gguf-q8_0") ? "Q8_0" : graft_dtype_name(m->src_dtype);
}

void graft_model_get_info(const graft_model *m, graft_model_info *info) {
    memset(info, 0, sizeof *info);
    if (!m) return;
    const graft_config *c = &m->cfg;
    info->arch = c->arch;
    info->arch_name = c->arch == GRAFT_ARCH_GPT2 ? "gpt2" : "llama";
    info->format = m->format;
    info->dtype = src_dtype_name(m);
    info->n_layer = c->n_layer;
    info->d_model = c->d_model;
    info->n_head = c->n_head;
    info->n_kv_head = c->n_kv_head;
    info->head_dim = c->head_dim;
    info->d_ff = c->d_ff;
    info->vocab_size = c->vocab_size;
    info->n_ctx = c->n_ctx;
    info->tied_embeddings = c->tied;
    info->n_params = (int64_t)graft_param_table_numel(&m->params); /* a tied head has no entry */
    info->mapped_bytes = m->mapped_bytes;
    info->heap_bytes = m->heap_bytes;
}

bool graft_keep_stored_weights(size_t stored_bytes) {
    const char *v = getenv("GRAFT_WEIGHTS");
    if (v && !strcasecmp(v, "f32")) return false;
    if (v && !strcasecmp(v, "stored")) return true;
    return stored_bytes >= GRAFT_STORED_MIN_BYTES;
}

graft_status graft_model_need_f32(graft_model *m) {
    size_t floats = 0;
    for (int i = 0; i < m->params.n; i++) {
        const graft_param *p = &m->params.p[i];
        if (!p->data && p->stored.data) floats += (p->numel + 15) / 16 * 16;
    }
    if (floats == 0) return GRAFT_OK;
    if (m->f32_slab) return graft_fail(GRAFT_ERR_INTERNAL, "need_f32: stored tensors left after conversion");
    size_t bytes;
    if (!graft_mul_size(floats, sizeof(float), &bytes) || !(m->f32_slab = graft_alloc_aligned(bytes)))
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory converting %zu MiB of %s weights to f32",
                          m->path ? m->path : "model", floats * sizeof(float) >> 20, src_dtype_name(m));
    size_t off = 0;
    for (int i = 0; i < m->params.n; i++) {
        graft_param *p = &m->params.p[i];
        if (p->data || !p->stored.data) continue;
        p->data = m->f32_slab + off;
        off += (p->numel + 15) / 16 * 16;
        const size_t rows = (size_t)p->shape[0], cols = p->ndim == 2 ? (size_t)p->shape[1] : 1;
        graft_wmat_to_f32(p->data, p->stored, rows, cols);
        m->heap_bytes += p->numel * sizeof(float);
        m->mapped_bytes -= graft_wmat_row_bytes(p->stored.dtype, cols) * rows;
    }
    /* Rebind in place: runs and editors hold pointers to m->w.layers. */
    graft_weights w;
    graft_status st = graft_weights_bind(&w, &m->cfg, &m->params);
    if (st != GRAFT_OK) return st;
    memcpy(m->w.layers, w.layers, (size_t)m->cfg.n_layer * sizeof *w.layers);
    graft_layer_weights *keep = m->w.layers;
    free(w.layers);
    m->w = w;
    m->w.layers = keep;
    return GRAFT_OK;
}

graft_tokenizer *graft_model_tokenizer(graft_model *m) { return m ? m->tok : NULL; }

void graft_model_set_tokenizer(graft_model *m, graft_tokenizer *tok) {
    if (!m) return;
    if (m->tok != tok) graft_tokenizer_free(m->tok);
    m->tok = tok;
}

/* ---------------------------------------------------------------- random models */

/* splitmix64 (Steele, Lea, Flood 2014): a 64-bit counter passed through a
 * bijective mixer. Tiny, fast, and its output depends only on the seed, so
 * the same seed gives the same weights on every platform. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, shifted by half a step so 0 never
 * occurs (Box-Muller takes its log). */
static double uniform01(uint64_t *state) { return ((double)(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53; }

/* Box-Muller: two uniforms give two independent standard normals. */
static void fill_normal(float *x, size_t n, float std, uint64_t *state) {
    const double two_pi = 6.283185307179586476925286766559;
    for (size_t i = 0; i < n; i += 2) {
        double r = std * sqrt(-2.0 * log(uniform01(state)));
        double s, c;
        sincos(two_pi * uniform01(state), &s, &c);
        x[i] = (float)(r * c);
        if (i + 1 < n) x[i + 1] = (float)(r * s);
    }
}

/* Tensors are filled in fixed chunks, each with its own generator seeded
 * from (seed, tensor, chunk): the weights depend only on the seed, never on
 * the thread count, and big presets (gpt2-xl: 1.5e9 draws) fill in parallel. */
#define RANDOM_CHUNK ((size_t)1 << 16)

static void fill_normal_tensor(float *x, size_t n, float std, uint64_t seed, int tensor) {
    size_t n_chunks = (n + RANDOM_CHUNK - 1) / RANDOM_CHUNK;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_chunks > 1)
#endif
    for (size_t c = 0; c < n_chunks; c++) {
        uint64_t st = seed ^ ((uint64_t)tensor << 40) ^ c;
        st = splitmix64(&st); /* decorrelate neighbouring (tensor, chunk) pairs */
        size_t begin = c * RANDOM_CHUNK, len = n - begin < RANDOM_CHUNK ? n - begin : RANDOM_CHUNK;
        fill_normal(x + begin, len, std, &st);
    }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

graft_status graft_model_create_random(const graft_config *cfg, uint64_t seed, float std, graft_model **out) {
    if (!out || !cfg) return graft_fail(GRAFT_ERR_INVALID, "graft_model_create_random: NULL argument");
    *out = NULL;
    if (!(std >= 0.0f) || !isfinite(std))
        return graft_fail(GRAFT_ERR_INVALID, "graft_model_create_random: std %g must be finite and >= 0", (double)std);
    graft_model *m = calloc(1, sizeof *m);
    if (!m) return graft_fail(GRAFT_ERR_NOMEM, "random model: out of memory");
    m->cfg = *cfg;
    graft_status st = graft_param_table_init(&m->params, &m->cfg);
    if (st != GRAFT_OK) {
        graft_model_free(m);
        return st;
    }
    /* One slab, each tensor starting on a 64-byte line. */
    size_t floats = 0;
    for (int i = 0; i < m->params.n; i++) floats += (m->params.p[i].numel + 15) / 16 * 16;
    size_t bytes;
    if (!graft_mul_size(floats, sizeof(float), &bytes) || !(m->heap_slab = graft_alloc_aligned(bytes))) {
        graft_model_free(m);
        return graft_fail(GRAFT_ERR_NOMEM, "random model: out of memory for %zu weights", floats);
    }
    size_t off = 0;
    for (int i = 0; i < m->params.n; i++) {
        graft_param *p = &m->params.p[i];
        p->data = m->heap_slab + off;
        off += (p->numel + 15) / 16 * 16;
        if (p->ndim == 1 && ends_with(p->name, ".bias")) {
            memset(p->data, 0, p->numel * sizeof(float));
        } else if (p->ndim == 1) {
            /* every 1-D weight is a LayerNorm/RMSNorm gain */
            for (size_t k = 0; k < p->numel; k++) p->data[k] = 1.0f;
        } else {
            fill_normal_tensor(p->data, p->numel, std, seed, i);
        }
        m->heap_bytes += p->numel * sizeof(float);
    }
    m->format = "random";
    m->src_dtype = GRAFT_F32;
    st = graft_weights_bind(&m->w, &m->cfg, &m->params);
    if (st != GRAFT_OK) {
        graft_model_free(m);
        return st;
    }
    *out = m;
    return GRAFT_OK;
}
