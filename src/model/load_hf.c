/*
 * load_hf.c - a Hugging Face model folder: config.json plus model.safetensors
 * (or shards listed by model.safetensors.index.json).
 *
 * F32 tensors are used in place from the private mapping: nothing is copied,
 * and pages are faulted in on first use. F16/BF16 tensors (and F32 tensors
 * that happen to sit at an address that is not 4-byte aligned) are
 * converted into one heap slab, so the whole model is two allocations at
 * most however many tensors it has.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Tensors that checkpoints carry but that are not parameters. */
static bool ignorable(const graft_config *cfg, const char *name) {
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        /* causal-mask buffers saved by older transformers and on the hub */
        if (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias")) return true;
    } else {
        /* RoPE frequency buffer saved by older LlamaForCausalLM versions */
        if (ends_with(name, ".rotary_emb.inv_freq")) return true;
    }
    /* A tied model uses the embedding as its head; a stored copy is ignored,
     * as transformers ties it over whatever the file holds. */
    return cfg->tied && strcmp(name, "lm_head.weight") == 0;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* F16/BF16 matrices stay in the mapping and the forward widens them as it
 * reads them: half the bytes of an f32 copy, per decoded token and in memory.
 * Vectors (norms, biases) and GPT-2's position table are small and are added
 * as floats, so they are converted. */
static bool storable(const graft_config *cfg, const graft_param *p, const graft_st_tensor *x) {
    if (x->dtype != GRAFT_F16 && x->dtype != GRAFT_BF16) return false;
    if (p->ndim != 2) return false;
    return !(cfg->arch == GRAFT_ARCH_GPT2 && ends_with(p->name, "wpe.weight"));
}

#define SLAB_ALIGN 16 /* floats: each converted tensor starts on a 64-byte line */

graft_status graft_load_hf(graft_model *m, const char *dir) {
    graft_status st;
    const graft_st_tensor **src = NULL;
    bool *used = NULL;
    char *cfg_text = NULL;
    char *cfg_path = graft_path_join(dir, "config.json");
    if (!cfg_path) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);

    st = graft_read_file(cfg_path, &cfg_text, NULL);
    if (st == GRAFT_OK) st = graft_config_from_json(&m->cfg, cfg_text, cfg_path);
    free(cfg_text);
    if (st != GRAFT_OK) goto done;
    st = graft_st_open_dir(dir, &m->st);
    if (st != GRAFT_OK) goto done;
    st = graft_param_table_init(&m->params, &m->cfg);
    if (st != GRAFT_OK) goto done;

    const graft_st_archive *a = &m->st;
    /* Name the file in messages; for shards the folder stands for the set. */
    const char *where = a->n_files == 1 ? a->files[0].path : dir;
    const graft_param_table *t = &m->params;
    src = calloc((size_t)t->n + 1, sizeof *src);
    used = calloc((size_t)a->n_tensors + 1, sizeof *used);
    if (!src || !used) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }

    /* Pass 1: find and check every tensor before touching any memory. */
    size_t slab_floats = 0;
    size_t count_by_dtype[3] = {0, 0, 0}, storable_bytes = 0;
    static const char prefix[] = "transformer.";
    for (int i = 0; i < t->n; i++) {
        const graft_param *p = &t->p[i];
        const graft_st_tensor *x = graft_st_find(a, p->name);
        /* Hub GPT-2 files were saved from the inner GPT2Model: no prefix. */
        const char *alt = NULL;
        if (m->cfg.arch == GRAFT_ARCH_GPT2 && strncmp(p->name, prefix, sizeof prefix - 1) == 0) {
            alt = p->name + sizeof prefix - 1;
            if (!x) x = graft_st_find(a, alt);
        }
        if (!x) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: tensor '%s'%s%s%s is missing (config.json needs it)", where,
                            p->name, alt ? " (or '" : "", alt ? alt : "", alt ? "')" : "");
            goto done;
        }
        if (x->dtype != GRAFT_F32 && x->dtype != GRAFT_F16 && x->dtype != GRAFT_BF16) {
            st = graft_fail(GRAFT_ERR_UNSUPPORTED,
                            "%s: tensor '%s' (file offset %zu) has dtype %s; weights must be F32, F16 or BF16",
                            a->files[x->file_index].path, x->name, x->file_offset, graft_dtype_name(x->dtype));
            goto done;
        }
        bool same = x->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = x->shape[d] == p->shape[d];
        if (!same) {
            char want[96], got[160];
            fmt_shape(want, sizeof want, p->ndim, p->shape);
            fmt_shape(got, sizeof got, x->ndim, x->shape);
            st = graft_fail(GRAFT_ERR_FORMAT,
                            "%s: tensor '%s' (file offset %zu) has shape %s but config.json implies %s",
                            a->files[x->file_index].path, x->name, x->file_offset, got, want);
            goto done;
        }
        src[i] = x;
        used[x - a->tensors] = true;
        count_by_dtype[x->dtype] += x->numel;
        if (storable(&m->cfg, p, x)) storable_bytes += x->numel * graft_dtype_size(x->dtype);
    }
    const bool keep = graft_keep_stored_weights(storable_bytes);
    for (int i = 0; i < t->n; i++) {
        const graft_st_tensor *x = src[i];
        const bool in_place = (x->dtype == GRAFT_F32 && ((uintptr_t)x->data % sizeof(float)) == 0) ||
                              (keep && storable(&m->cfg, &t->p[i], x));
        if (!in_place) slab_floats += (t->p[i].numel + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
    }
    /* A tensor that is neither a parameter nor a known buffer means the file
     * is a variant graft does not implement (biases in Llama projections,
     * an extra head...); running without it would give wrong outputs. */
    for (int j = 0; j < a->n_tensors; j++) {
        if (used[j] || ignorable(&m->cfg, a->tensors[j].name)) continue;
        st = graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: tensor '%s' (file offset %zu) is not a parameter of %s models",
                        a->files[a->tensors[j].file_index].path, a->tensors[j].name, a->tensors[j].file_offset,
                        m->cfg.arch == GRAFT_ARCH_GPT2 ? "GPT-2" : "Llama");
        goto done;
    }

    /* Pass 2: point at the mapping or convert into the slab. */
    if (slab_floats > 0) {
        size_t bytes;
        if (!graft_mul_size(slab_floats, sizeof(float), &bytes) || !(m->heap_slab = graft_alloc_aligned(bytes))) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for %zu converted weights", dir, slab_floats);
            goto done;
        }
    }
    size_t slab_off = 0;
    for (int i = 0; i < t->n; i++) {
        graft_param *p = &t->p[i];
        const graft_st_tensor *x = src[i];
        if (x->dtype == GRAFT_F32 && ((uintptr_t)x->data % sizeof(float)) == 0) {
            /* the mapping is private and writable: editors may patch in place */
            p->data = (float *)(uintptr_t)x->data;
            m->mapped_bytes += p->numel * sizeof(float);
        } else if (keep && storable(&m->cfg, p, x)) {
            /* read in place by the forward; converted only if something
             * needs floats (graft_model_need_f32) */
            p->stored = (graft_wmat){x->data, (int)x->dtype, 0};
            m->mapped_bytes += p->numel * graft_dtype_size(x->dtype);
        } else {
            p->data = m->heap_slab + slab_off;
            graft_convert_to_f32_parallel(p->data, x->data, x->dtype, p->numel);
            slab_off += (p->numel + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
            m->heap_bytes += p->numel * sizeof(float);
        }
    }
    /* Mixed files are rare; report the dtype that holds most parameters. */
    m->src_dtype = GRAFT_F32;
    if (count_by_dtype[GRAFT_F16] > count_by_dtype[m->src_dtype]) m->src_dtype = GRAFT_F16;
    if (count_by_dtype[GRAFT_BF16] > count_by_dtype[m->src_dtype]) m->src_dtype = GRAFT_BF16;
    m->format = "hf-safetensors";
    st = graft_weights_bind(&m->w, &m->cfg, &m->params);

done:
    free(used);
    free(src);
    free(cfg_path);
    return st;
}
