/* run.c - the activation buffers of a packed batch (graft_run), KV caches and
 * gradient tables. Everything a run needs is carved out of one allocation,
 * sized up front, so an out-of-memory shows at creation and never mid-pass. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

static const char *const site_names[GRAFT_N_SITES] = {"block_in", "mlp_in", "mlp_pre", "mlp_act",
                                                      "mlp_out"};

const char *graft_site_name(graft_site s) {
    return (s >= 0 && s < GRAFT_N_SITES) ? site_names[s] : "?";
}

int graft_site_parse(const char *name) {
    for (int i = 0; i < GRAFT_N_SITES; i++)
        if (!strcmp(name, site_names[i])) return i;
    return -1;
}

int graft_site_dim(const graft_config *cfg, graft_site s) {
    return (s == GRAFT_SITE_MLP_PRE || s == GRAFT_SITE_MLP_ACT) ? cfg->d_ff : cfg->d_model;
}

/* ---------------------------------------------------------------- slab carving */

/* Two passes over the same code: the first (base == NULL) only counts floats,
 * the second hands out pointers. Each buffer starts on a 16-float (64-byte)
 * boundary so kernels see aligned rows. */
typedef struct carver {
    float *base;
    size_t used;
} carver;

static float *carve(carver *c, size_t n) {
    size_t at = c->used;
    c->used += (n + 15) & ~(size_t)15;
    return c->base ? c->base + at : NULL;
}

static int *carve_int(carver *c, size_t n) { return (int *)carve(c, n); }

static void layout_run(graft_run *r, carver *c) {
    const graft_config *cfg = &r->m->cfg;
    size_t T = (size_t)r->cap, C = (size_t)cfg->d_model, F = (size_t)cfg->d_ff;
    size_t qdim = (size_t)cfg->n_head * cfg->head_dim, kvdim = (size_t)cfg->n_kv_head * cfg->head_dim;
    size_t V = (size_t)cfg->vocab_size, NO = (size_t)r->cap_out;
    int gpt2 = cfg->arch == GRAFT_ARCH_GPT2;
    int L = cfg->n_layer;

    r->ids = carve_int(c, T);
    r->pos = carve_int(c, T);
    r->seq_start = carve_int(c, T + 1);
    r->out_rows = carve_int(c, NO);
    r->embed = carve(c, T * C);

    /* In inference mode all layers share one buffer set, except the residual
     * stream, which ping-pongs between two buffers. */
    int n_sets = r->train ? L : 1;
    graft_layer_acts set[1];
    float *pingpong[2] = {NULL, NULL};
    if (!r->train) {
        pingpong[0] = carve(c, T * C);
        pingpong[1] = carve(c, T * C);
    }
    for (int l = 0; l < L; l++) {
        graft_layer_acts *a = r->layers ? &r->layers[l] : &set[0];
        if (l < n_sets) {
            memset(a, 0, sizeof *a);
            a->ln1 = carve(c, T * C);
            a->ln1_mean = carve(c, T);
            a->ln1_rstd = carve(c, T);
            if (gpt2) {
                a->qkv = carve(c, T * 3 * C);
                if (a->qkv) {
                    a->q = a->qkv;
                    a->k = a->qkv + C;
                    a->v = a->qkv + 2 * C;
                }
            } else {
                a->q = carve(c, T * qdim);
                a->k = carve(c, T * kvdim);
                a->v = carve(c, T * kvdim);
            }
            if (r->train) a->att = carve(c, (size_t)cfg->n_head * T * (size_t)r->max_seq_len);
            a->atty = carve(c, T * qdim);
            a->mid = carve(c, T * C);
            a->ln2 = carve(c, T * C);
            a->ln2_mean = carve(c, T);
            a->ln2_rstd = carve(c, T);
            a->pre = carve(c, T * F);
            if (!gpt2) a->gate = carve(c, T * F);
            a->act = carve(c, T * F);
            a->mlp_out = carve(c, T * C);
            a->out = r->train ? carve(c, T * C) : pingpong[l & 1];
        } else if (r->layers) {
            r->layers[l] = r->layers[0];
            r->layers[l].out = pingpong[l & 1];
        }
        if (r->layers) r->layers[l].in = l == 0 ? r->embed : r->layers[l - 1].out;
    }
    r->head_in = carve(c, NO * C);
    r->lnf = carve(c, NO * C);
    r->lnf_mean = carve(c, NO);
    r->lnf_rstd = carve(c, NO);
    r->logits = carve(c, NO * V);
    if (r->train) {
        size_t qkvw = gpt2 ? 3 * C : qdim + 2 * kvdim;
        r->d_resid = carve(c, T * C);
        r->d_a = carve(c, T * (C > qdim ? C : qdim));
        r->d_b = carve(c, T * (C > qdim ? C : qdim));
        r->d_qkv = carve(c, T * qkvw);
        r->d_ff1 = carve(c, T * F);
        r->d_ff2 = carve(c, T * F);
        r->d_ff3 = carve(c, T * F);
        r->d_logits = carve(c, NO * V);
    }
}

graft_status graft_run_create(graft_model *m, int cap, int cap_out, int max_seq_len, int train,
                              graft_run **out) {
    *out = NULL;
    if (cap <= 0 || cap_out <= 0 || max_seq_len <= 0)
        return graft_fail(GRAFT_ERR_INVALID, "graft_run_create: capacities must be positive (cap %d, cap_out %d, max_seq_len %d)",
                          cap, cap_out, max_seq_len);
    if (max_seq_len > cap) max_seq_len = cap;
    graft_run *r = calloc(1, sizeof *r);
    if (!r) return graft_fail(GRAFT_ERR_NOMEM, "graft_run_create: out of memory");
    r->m = m;
    r->cap = cap;
    r->cap_out = cap_out;
    r->max_seq_len = max_seq_len;
    r->train = train ? 1 : 0;
    const graft_config *cfg = &m->cfg;
    r->ldq = cfg->arch == GRAFT_ARCH_GPT2 ? 3 * cfg->d_model : cfg->n_head * cfg->head_dim;
    r->ldkv = cfg->arch == GRAFT_ARCH_GPT2 ? 3 * cfg->d_model : cfg->n_kv_head * cfg->head_dim;

    carver c = {NULL, 0};
    layout_run(r, &c);
    r->slab_floats = c.used;
    r->slab = graft_alloc_aligned(c.used * sizeof(float));
    r->layers = calloc((size_t)cfg->n_layer, sizeof *r->layers);
    if (!r->slab || !r->layers) {
        size_t mb = c.used * sizeof(float) >> 20;
        graft_run_free(r);
        return graft_fail(GRAFT_ERR_NOMEM, "graft_run_create: cannot allocate %zu MiB of activations for %d tokens",
                          mb, cap);
    }
    c.base = r->slab;
    c.used = 0;
    layout_run(r, &c);
    *out = r;
    return GRAFT_OK;
}

void graft_run_free(graft_run *r) {
    if (!r) return;
    graft_free_aligned(r->slab);
    free(r->layers);
    free(r);
}

graft_status graft_run_set_batch(graft_run *r, const int *ids, const int *lens, int n_seq,
                                 const int *out_rows, int n_out) {
    const graft_config *cfg = &r->m->cfg;
    if (n_seq <= 0) return graft_fail(GRAFT_ERR_INVALID, "batch: no sequences");
    if (r->kv && n_seq != 1)
        return graft_fail(GRAFT_ERR_INVALID, "batch: a KV-cached run takes exactly one sequence");
    long total = 0;
    for (int s = 0; s < n_seq; s++) {
        if (lens[s] <= 0) return graft_fail(GRAFT_ERR_INVALID, "batch: sequence %d is empty", s);
        int past = r->kv ? r->kv->len : 0;
        if ((long)past + lens[s] > cfg->n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "sequence %d has %d tokens (+%d cached): longer than the model's context of %d",
                              s, lens[s], past, cfg->n_ctx);
        if (r->kv && past + lens[s] > r->kv->n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "sequence of %d tokens does not fit the KV cache (%d of %d used)",
                              lens[s], past, r->kv->n_ctx);
        if (r->train && lens[s] > r->max_seq_len)
            return graft_fail(GRAFT_ERR_RANGE, "sequence %d has %d tokens: more than this run was sized for (%d)",
                              s, lens[s], r->max_seq_len);
        total += lens[s];
    }
    if (total > r->cap)
        return graft_fail(GRAFT_ERR_RANGE, "batch of %ld tokens exceeds the run's capacity of %d", total, r->cap);
    int T = (int)total;
    if (out_rows == NULL) n_out = T;
    if (n_out <= 0 || n_out > r->cap_out || n_out > T)
        return graft_fail(GRAFT_ERR_RANGE, "batch asks for %d logit rows; the run holds %d and the batch has %d tokens",
                          n_out, r->cap_out, T);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= cfg->vocab_size)
            return graft_fail(GRAFT_ERR_RANGE, "token id %d at position %d is outside the vocabulary [0, %d)",
                              ids[t], t, cfg->vocab_size);
    for (int i = 0; out_rows && i < n_out; i++)
        if (out_rows[i] < 0 || out_rows[i] >= T)
            return graft_fail(GRAFT_ERR_RANGE, "logit row %d (index %d) is outside the batch of %d tokens", out_rows[i], i, T);

    r->T = T;
    r->row0 = 0;
    memcpy(r->ids, ids, (size_t)T * sizeof *ids);
    int t = 0, past = r->kv ? r->kv->len : 0;
    for (int s = 0; s < n_seq; s++) {
        r->seq_start[s] = t;
        for (int j = 0; j < lens[s]; j++, t++) r->pos[t] = past + j;
    }
    r->seq_start[n_seq] = T;
    r->seqs.n = n_seq;
    r->seqs.start = r->seq_start;
    r->n_out = n_out;
    for (int i = 0; i < n_out; i++) r->out_rows[i] = out_rows ? out_rows[i] : i;
    return GRAFT_OK;
}

float *graft_run_site(graft_run *r, int layer, graft_site site) {
    graft_layer_acts *a = &r->layers[layer];
    switch (site) {
    case GRAFT_SITE_BLOCK_IN: return a->in;
    case GRAFT_SITE_MLP_IN: return a->ln2;
    case GRAFT_SITE_MLP_PRE: return a->pre;
    case GRAFT_SITE_MLP_ACT: return a->act;
    case GRAFT_SITE_MLP_OUT: return a->mlp_out;
    default: return NULL;
    }
}

void graft_run_add_hook(graft_run *r, graft_hook *h) {
    h->next = NULL;
    graft_hook **p = &r->hooks;
    while (*p) p = &(*p)->next;
    *p = h;
}

void graft_run_remove_hook(graft_run *r, graft_hook *h) {
    for (graft_hook **p = &r->hooks; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            h->next = NULL;
            return;
        }
}

/* ---------------------------------------------------------------- KV cache */

graft_status graft_kv_create(const graft_config *cfg, int n_ctx, graft_kv *kv) {
    memset(kv, 0, sizeof *kv);
    if (n_ctx <= 0 || n_ctx > cfg->n_ctx) n_ctx = cfg->n_ctx;
    kv->n_ctx = n_ctx;
    kv->kv_dim = cfg->n_kv_head * cfg->head_dim;
    size_t n = (size_t)cfg->n_layer * n_ctx * kv->kv_dim;
    kv->k = graft_alloc_huge(n * sizeof(float));
    kv->v = graft_alloc_huge(n * sizeof(float));
    if (!kv->k || !kv->v) {
        graft_kv_free(kv);
        return graft_fail(GRAFT_ERR_NOMEM, "KV cache: cannot allocate %zu MiB", 2 * n * sizeof(float) >> 20);
    }
    return GRAFT_OK;
}

void graft_kv_free(graft_kv *kv) {
    graft_free_aligned(kv->k);
    graft_free_aligned(kv->v);
    memset(kv, 0, sizeof *kv);
}

/* ---------------------------------------------------------------- gradients */

graft_status graft_grads_create(const graft_model *m, graft_grads *g) {
    memset(g, 0, sizeof *g);
    GRAFT_TRY(graft_param_table_init(&g->t, &m->cfg));
    size_t total = 0;
    for (int i = 0; i < g->t.n; i++) total += (g->t.p[i].numel + 15) & ~(size_t)15;
    g->slab = graft_calloc_aligned(total * sizeof(float));
    if (!g->slab) {
        graft_grads_free(g);
        return graft_fail(GRAFT_ERR_NOMEM, "gradients: cannot allocate %zu MiB", total * sizeof(float) >> 20);
    }
    size_t at = 0;
    for (int i = 0; i < g->t.n; i++) {
        g->t.p[i].data = g->slab + at;
        at += (g->t.p[i].numel + 15) & ~(size_t)15;
    }
    graft_status st = graft_weights_bind(&g->w, &m->cfg, &g->t);
    if (st != GRAFT_OK) graft_grads_free(g);
    return st;
}

void graft_grads_zero(graft_grads *g) {
    for (int i = 0; i < g->t.n; i++) memset(g->t.p[i].data, 0, g->t.p[i].numel * sizeof(float));
}

void graft_grads_free(graft_grads *g) {
    graft_weights_unbind(&g->w);
    graft_free_aligned(g->slab);
    graft_param_table_free(&g->t);
    memset(g, 0, sizeof *g);
}

graft_status graft_run_set_row0(graft_run *r, int row) {
    if (!r->train || r->kv) return graft_fail(GRAFT_ERR_INVALID, "suffix pass: needs a train run without a KV cache");
    if (row < 0 || row >= r->T) return graft_fail(GRAFT_ERR_RANGE, "suffix pass: row %d outside the batch of %d", row, r->T);
    if (row > 0 && r->seqs.n != 1)
        return graft_fail(GRAFT_ERR_INVALID, "suffix pass: the batch has %d sequences; it takes one", r->seqs.n);
    for (int i = 0; row > 0 && i < r->n_out; i++)
        if (r->out_rows[i] < row)
            return graft_fail(GRAFT_ERR_INVALID, "suffix pass: logit row %d comes before row %d", r->out_rows[i], row);
    r->row0 = row;
    return GRAFT_OK;
}
