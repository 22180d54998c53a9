/* mend.c - MEND: the editor (apply, replay, reset, export), the editor
 * network g (one forward and one backward per block over explicit buffers)
 * and the meta-training objective with its gradient in g and the alphas.
 * mend.h says what MEND does; docs/MEND.md how graft departs from the
 * official code and why. In short:
 *  - alpha starts at -init_lr (the official +1e-4 is an ascent step at init;
 *    its training has to cross zero first);
 *  - with no statistics yet (count < 2) the normalisation is the identity
 *    instead of a division by zero;
 *  - g, its FiLM modes and the statistics are per weight shape as in the
 *    official code; the gate projection of Llama is not edited.
 */
#include "mend.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANGE_MAGIC 0x31444e4du /* "MND1" */
#define CHANGE_VERSION 1u
#define MEND_STD_EPS 1e-7 /* norm(x) = (x - mean) / (std + eps), the official constant */
#define MAX_MATS (2 * GRAFT_MEND_MAX_LAYERS)

typedef struct mend_net {
    int m, n, D, R, n_modes;
    size_t numel;             /* flat parameter count */
    float *theta, *grad, *am, *av; /* flat: per block U [D,R], V [R,D], b [D], s [modes,D], o [modes,D] */
    double count, *mean, *m2; /* Welford over z = [u, delta], [D] each */
} mend_net;

/* Views of one block inside a flat vector (parameters or gradient). */
typedef struct blk_view {
    float *U, *V, *b, *s, *o;
} blk_view;

typedef struct mend_mat {
    graft_param *p;
    int layer, kind;     /* kind 0: up-projection (c_fc / up_proj), 1: down-projection */
    int net, mode;
    int m, n;            /* input and output widths */
    graft_layout layout; /* GPT-2 Conv1D [in,out]; Llama nn.Linear [out,in] */
    graft_site in_site, out_site;
    float *base;         /* the weights when the editor was created */
    float *saved;        /* meta-training: the weights before the temporary edit */
    float alpha, alpha_grad, alpha_m, alpha_v;
    float *delta;        /* [largest run cap, n]: the gradient at the module output, from the backward hook */
    graft_hook hook[2];  /* one per run (a hook sits in one run's list) */
} mend_mat;

typedef struct mend {
    graft_editor base;
    graft_mend_opts o;
    int n_mats, n_nets, trained, low_layer;
    mend_mat mats[MAX_MATS];
    mend_net nets[2];
    /* run[0]: the edit pass (apply, and the edit inside meta-training);
     * run[1]: the meta-training loss batch, kept across the edit so that the
     * pass on the edited weights re-runs only from the lowest edited site */
    graft_run *run[2];
    int run_cap[2], run_cap_out[2];
    int adam_t;
} mend;

/* One matrix's pass through g: the normalised input z and each block's
 * saved activations, [K, D] / [K, R]; out = h[2] holds (u~, d~). */
typedef struct mend_trace {
    int K;
    float *h[3], *a[2], *pre[2];
    float *slab;
} mend_trace;

/* ---------------------------------------------------------------- small helpers */

uint64_t graft_mend_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double gauss(uint64_t *s) {
    double u1 = ((double)(graft_mend_rand(s) >> 11) + 0.5) * 0x1.0p-53;
    double u2 = (double)(graft_mend_rand(s) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void graft_mend_opts_default(graft_mend_opts *o) {
    memset(o, 0, sizeof *o);
    o->rank = 64;
    o->init_lr = 1e-4f;
    o->seed = 42;
    o->alpha_scale = 1.0f;
}

static blk_view view(const mend_net *nt, float *flat, int k) {
    size_t D = (size_t)nt->D, R = (size_t)nt->R, M = (size_t)nt->n_modes;
    size_t per = 2 * D * R + D + 2 * M * D;
    float *p = flat + (size_t)k * per;
    blk_view v = {p, p + D * R, p + 2 * D * R, p + 2 * D * R + D, p + 2 * D * R + D + M * D};
    return v;
}

/* ---------------------------------------------------------------- g: one block */

void graft_mend_block_forward(float *out, float *a, float *pre, const float *h, const float *U, const float *V,
                              const float *b, const float *s, const float *o, int T, int D, int R) {
    if (T <= 0) return;
    graft_gemm(0, 1, T, R, D, 1.0f, h, D, V, D, 0.0f, a, R);
    graft_gemm(0, 1, T, D, R, 1.0f, a, R, U, R, 0.0f, pre, D);
    for (int t = 0; t < T; t++) {
        float *pr = pre + (size_t)t * D, *y = out + (size_t)t * D;
        const float *x = h + (size_t)t * D;
        for (int j = 0; j < D; j++) {
            pr[j] += b[j];
            float f = pr[j] * s[j] + o[j];
            y[j] = x[j] + (f > 0.0f ? f : 0.0f);
        }
    }
}

void graft_mend_block_backward(float *dh, float *dU, float *dV, float *db, float *ds, float *d_o, const float *dout,
                               const float *h, const float *a, const float *pre, const float *U, const float *V,
                               const float *s, const float *o, int T, int D, int R, float *scratch) {
    if (T <= 0) return;
    float *dp = scratch, *da = scratch + (size_t)T * D;
    /* through the ReLU and the FiLM: dq = dout where pre*s+o >= 0. The
     * derivative at exactly 0 is taken as 1, as the official clamp(min=0)
     * does: with U = 0 at init every pre-activation is exactly 0, and a
     * derivative of 0 there would keep g at its init for ever */
    for (int t = 0; t < T; t++) {
        const float *pr = pre + (size_t)t * D, *g = dout + (size_t)t * D;
        float *q = dp + (size_t)t * D;
        for (int j = 0; j < D; j++) {
            float dq = (pr[j] * s[j] + o[j] >= 0.0f) ? g[j] : 0.0f;
            ds[j] += dq * pr[j];
            d_o[j] += dq;
            q[j] = dq * s[j];
            db[j] += q[j];
        }
    }
    graft_gemm(1, 0, D, R, T, 1.0f, dp, D, a, R, 1.0f, dU, R);
    graft_gemm(0, 0, T, R, D, 1.0f, dp, D, U, R, 0.0f, da, R);
    graft_gemm(1, 0, R, D, T, 1.0f, da, R, h, D, 1.0f, dV, D);
    /* the residual path, then the low-rank path (dh may alias dout: dp is
     * already taken from it) */
    if (dh != dout) memcpy(dh, dout, (size_t)T * D * sizeof(float));
    graft_gemm(0, 0, T, D, R, 1.0f, da, R, V, D, 1.0f, dh, D);
}

void graft_mend_welford(double *count, double *mean, double *m2, const float *x, int n, int D) {
    for (int t = 0; t < n; t++) {
        double k = ++*count;
        const float *r = x + (size_t)t * D;
        for (int j = 0; j < D; j++) {
            double d = (double)r[j] - mean[j];
            mean[j] += d / k;
            m2[j] += d * ((double)r[j] - mean[j]);
        }
    }
}

/* z <- (z - mean) / (std + eps) per dimension; the identity until two rows
 * have been seen (an untrained editor has no statistics). */
static void normalise(const mend_net *nt, float *z, int K) {
    if (nt->count < 2) return;
    int D = nt->D;
    for (int j = 0; j < D; j++) {
        double sd = sqrt(nt->m2[j] / (nt->count - 1.0)) + MEND_STD_EPS;
        float mu = (float)nt->mean[j], inv = (float)(1.0 / sd);
        for (int t = 0; t < K; t++) z[(size_t)t * D + j] = (z[(size_t)t * D + j] - mu) * inv;
    }
}

/* ---------------------------------------------------------------- the weight write */

/* The longest row of an edited matrix in either layout (write_update's scratch). */
static size_t widest(const graft_config *cfg) { return (size_t)(cfg->d_ff > cfg->d_model ? cfg->d_ff : cfg->d_model); }

/* W += alpha * sum_t u~_t d~_t^T in W's layout, the one write of apply,
 * replay and meta-training. Every element sums its K products in row order
 * in float, then adds alpha times the sum: independent of threads and BLAS,
 * so a replay is bit-identical. ut [K, ldu] (m used), dt [K, ldd] (n used). */
static void write_update(float *W, graft_layout lay, int m, int n, float alpha, const float *ut, int ldu,
                         const float *dt, int ldd, int K, float *acc) {
    if (K <= 0) return;
    int rows = lay == GRAFT_W_KN ? m : n, cols = lay == GRAFT_W_KN ? n : m;
    const float *A = lay == GRAFT_W_KN ? ut : dt, *B = lay == GRAFT_W_KN ? dt : ut;
    int lda = lay == GRAFT_W_KN ? ldu : ldd, ldb = lay == GRAFT_W_KN ? ldd : ldu;
    for (int i = 0; i < rows; i++) {
        memset(acc, 0, (size_t)cols * sizeof(float));
        for (int t = 0; t < K; t++) {
            float c = A[(size_t)t * lda + i];
            const float *b = B + (size_t)t * ldb;
            for (int j = 0; j < cols; j++) acc[j] += c * b[j];
        }
        float *w = W + (size_t)i * cols;
        for (int j = 0; j < cols; j++) w[j] += alpha * acc[j];
    }
}

/* ---------------------------------------------------------------- runs and capture */

static void delta_hook(graft_hook *h, graft_run *r, float *dact, int dim) {
    mend_mat *mt = h->user;
    (void)dim;
    memcpy(mt->delta, dact, (size_t)r->T * mt->n * sizeof(float));
}

static graft_status ensure_run(mend *me, int w, int T, int n_out) {
    if (me->run[w] && me->run_cap[w] >= T && me->run_cap_out[w] >= n_out) return GRAFT_OK;
    int cap = T > me->run_cap[w] ? T : me->run_cap[w];
    int cap_out = n_out > me->run_cap_out[w] ? n_out : me->run_cap_out[w];
    if (cap < 128) cap = 128;
    if (cap_out < 128) cap_out = 128;
    if (cap_out > cap) cap = cap_out;
    graft_run_free(me->run[w]);
    me->run[w] = NULL;
    me->run_cap[w] = me->run_cap_out[w] = 0;
    int other = me->run_cap[1 - w], dcap = cap > other ? cap : other;
    for (int i = 0; i < me->n_mats; i++) {
        graft_free_aligned(me->mats[i].delta);
        me->mats[i].delta = graft_calloc_aligned((size_t)dcap * me->mats[i].n * sizeof(float));
        if (!me->mats[i].delta) return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    }
    GRAFT_TRY(graft_run_create(me->base.m, cap, cap_out, cap, 1, &me->run[w]));
    for (int i = 0; i < me->n_mats; i++) graft_run_add_hook(me->run[w], &me->mats[i].hook[w]);
    me->run_cap[w] = cap;
    me->run_cap_out[w] = cap_out;
    return GRAFT_OK;
}

/* A packed batch of (prompt + target[:-1]) sequences whose target rows carry
 * the loss, optionally followed by one locality text whose every row is an
 * out row (targets -1). */
typedef struct mend_batch {
    int *ids, *lens, *rows, *tg;
    int T, n_seq, n_out, n_tgt_rows, loc_row0; /* out rows [n_tgt_rows, n_out) are the locality rows */
} mend_batch;

static void batch_free(mend_batch *b) {
    free(b->ids), free(b->lens), free(b->rows), free(b->tg);
    memset(b, 0, sizeof *b);
}

static graft_status batch_build(const graft_model *m, const graft_mend_example *ex, int n_ex, const int *loc, int n_loc,
                                const int *loc_lens, int n_loc_seq, mend_batch *b) {
    memset(b, 0, sizeof *b);
    int T = n_loc, n_out = n_loc;
    for (int i = 0; i < n_ex; i++) {
        if (ex[i].n_prompt < 1 || ex[i].n_target < 1)
            return graft_fail(GRAFT_ERR_INVALID, "MEND: an example needs a prompt and a target (got %d and %d tokens)",
                              ex[i].n_prompt, ex[i].n_target);
        int L = ex[i].n_prompt + ex[i].n_target - 1;
        if (L > m->cfg.n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "MEND: prompt + target is %d tokens; the context is %d", L + 1,
                              m->cfg.n_ctx);
        T += L;
        n_out += ex[i].n_target;
    }
    if (!loc_lens) loc_lens = &n_loc, n_loc_seq = n_loc > 0;
    int sum = 0;
    for (int i = 0; i < n_loc_seq; i++) {
        if (loc_lens[i] < 1 || loc_lens[i] > m->cfg.n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "MEND: locality text of %d tokens; the context is %d", loc_lens[i], m->cfg.n_ctx);
        sum += loc_lens[i];
    }
    if (sum != n_loc) return graft_fail(GRAFT_ERR_INVALID, "MEND: locality lengths sum to %d, not %d", sum, n_loc);
    b->ids = malloc((size_t)(T + 1) * sizeof(int));
    b->lens = malloc((size_t)(n_ex + n_loc_seq + 1) * sizeof(int));
    b->rows = malloc((size_t)(n_out + 1) * sizeof(int));
    b->tg = malloc((size_t)(n_out + 1) * sizeof(int));
    if (!b->ids || !b->lens || !b->rows || !b->tg) {
        batch_free(b);
        return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    }
    int at = 0, o = 0;
    for (int i = 0; i < n_ex; i++) {
        int np = ex[i].n_prompt, nt = ex[i].n_target;
        memcpy(b->ids + at, ex[i].prompt, (size_t)np * sizeof(int));
        memcpy(b->ids + at + np, ex[i].target, (size_t)(nt - 1) * sizeof(int));
        for (int k = 0; k < nt; k++) {
            b->rows[o] = at + np - 1 + k;
            b->tg[o++] = ex[i].target[k];
        }
        b->lens[b->n_seq++] = np + nt - 1;
        at += np + nt - 1;
    }
    b->n_tgt_rows = o;
    b->loc_row0 = at;
    if (n_loc > 0) {
        memcpy(b->ids + at, loc, (size_t)n_loc * sizeof(int));
        for (int k = 0; k < n_loc; k++) {
            b->rows[o] = at + k;
            b->tg[o++] = -1;
        }
        for (int i = 0; i < n_loc_seq; i++) b->lens[b->n_seq++] = loc_lens[i];
        at += n_loc;
    }
    b->T = at;
    b->n_out = o;
    return GRAFT_OK;
}

static graft_status batch_forward(mend *me, int w, const mend_batch *b) {
    GRAFT_TRY(ensure_run(me, w, b->T, b->n_out));
    GRAFT_TRY(graft_run_set_batch(me->run[w], b->ids, b->lens, b->n_seq, b->rows, b->n_out));
    return graft_run_forward(me->run[w]);
}

/* Mean NLL over the examples, each the mean over its target rows (rows
 * [0, n_tgt_rows) of the logits; weights w_i = 1 / (n_ex * nt_i)), and
 * whether every target row's argmax is its target. */
static void example_losses(const graft_run *r, const graft_mend_example *ex, int n_ex, double *loss, int *all_ok,
                           float *dlogits, double scale) {
    int V = r->m->cfg.vocab_size, o = 0;
    double acc = 0;
    int ok = 1;
    for (int i = 0; i < n_ex; i++) {
        double w = 1.0 / ((double)n_ex * ex[i].n_target);
        for (int k = 0; k < ex[i].n_target; k++, o++) {
            const float *z = r->logits + (size_t)o * V;
            int tgt = ex[i].target[k], best = 0;
            float mx = z[0];
            for (int v = 1; v < V; v++)
                if (z[v] > mx) mx = z[v], best = v;
            ok &= best == tgt;
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
            double lse = mx + log(se);
            acc += w * (lse - z[tgt]);
            if (dlogits) {
                float *d = dlogits + (size_t)o * V;
                for (int v = 0; v < V; v++) d[v] = (float)(scale * w * exp((double)z[v] - lse));
                d[tgt] -= (float)(scale * w);
            }
        }
    }
    *loss = acc;
    if (all_ok) *all_ok = ok;
}

/* Softmax of logit rows [row0, row0 + n) into p (double). */
static void softmax_rows(const graft_run *r, int row0, int n, double *p) {
    int V = r->m->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        const float *z = r->logits + (size_t)(row0 + i) * V;
        double *q = p + (size_t)i * V;
        float mx = z[0];
        for (int v = 1; v < V; v++)
            if (z[v] > mx) mx = z[v];
        double s = 0;
        for (int v = 0; v < V; v++) s += (q[v] = exp((double)z[v] - mx));
        for (int v = 0; v < V; v++) q[v] /= s;
    }
}

/* ---------------------------------------------------------------- the edit step */

static void trace_free(mend_trace *tr) {
    graft_free_aligned(tr->slab);
    memset(tr, 0, sizeof *tr);
}

/* The rows of the edit (rows [0, T) of the last backward) for matrix mt:
 * keep t when u_t and delta_t are both non-zero; z_t = [u_t, delta_t].
 * Welford update when update_stats, then normalise and run g (mode of mt),
 * keeping the trace. */
static graft_status edit_factors(mend *me, mend_mat *mt, int T, int update_stats, mend_trace *tr) {
    mend_net *nt = &me->nets[mt->net];
    int D = nt->D, R = nt->R, m = mt->m, n = mt->n;
    memset(tr, 0, sizeof *tr);
    const float *u = graft_run_site(me->run[0], mt->layer, mt->in_site);
    size_t per = (size_t)3 * D + 2 * (size_t)R + (size_t)2 * D;
    tr->slab = graft_alloc_aligned(((size_t)(T > 0 ? T : 1)) * per * sizeof(float));
    if (!tr->slab) return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    int K = 0;
    float *z = tr->slab;
    for (int t = 0; t < T; t++) {
        const float *ur = u + (size_t)t * m, *dr = mt->delta + (size_t)t * n;
        int nzu = 0, nzd = 0;
        for (int j = 0; j < m && !nzu; j++) nzu = ur[j] != 0.0f;
        for (int j = 0; j < n && !nzd; j++) nzd = dr[j] != 0.0f;
        if (!nzu || !nzd) continue;
        memcpy(z + (size_t)K * D, ur, (size_t)m * sizeof(float));
        memcpy(z + (size_t)K * D + m, dr, (size_t)n * sizeof(float));
        K++;
    }
    tr->K = K;
    float *p = tr->slab + (size_t)K * D;
    tr->h[0] = z;
    tr->h[1] = p, p += (size_t)K * D;
    tr->h[2] = p, p += (size_t)K * D;
    tr->pre[0] = p, p += (size_t)K * D;
    tr->pre[1] = p, p += (size_t)K * D;
    tr->a[0] = p, p += (size_t)K * R;
    tr->a[1] = p;
    if (update_stats) graft_mend_welford(&nt->count, nt->mean, nt->m2, z, K, D);
    normalise(nt, z, K);
    for (int k = 0; k < 2; k++) {
        blk_view v = view(nt, nt->theta, k);
        graft_mend_block_forward(tr->h[k + 1], tr->a[k], tr->pre[k], tr->h[k], v.U, v.V, v.b,
                                 v.s + (size_t)mt->mode * D, v.o + (size_t)mt->mode * D, K, D, R);
    }
    return GRAFT_OK;
}

/* Forward + backward of one edit on the current weights: the edit loss
 * (mean target NLL) and delta captured at every edited matrix. */
static graft_status edit_pass(mend *me, const graft_mend_example *ex, double *loss, int *T) {
    mend_batch b;
    GRAFT_TRY(batch_build(me->base.m, ex, 1, NULL, 0, NULL, 0, &b));
    graft_status st = batch_forward(me, 0, &b);
    if (st == GRAFT_OK) st = graft_run_loss(me->run[0], b.tg, NULL, loss, NULL);
    if (st == GRAFT_OK) st = graft_run_backward(me->run[0], b.tg, NULL, NULL, me->low_layer, GRAFT_SITE_MLP_PRE);
    *T = b.T;
    batch_free(&b);
    return st;
}

/* ---------------------------------------------------------------- change records */

/* Layout (little-endian, native floats):
 *   u32 magic, u32 version, u32 n_mats, i32 reproduced,
 *   f64 loss_first, f64 loss_last, i32 n_prompt, i32 n_target, i32 prompt[], i32 target[],
 *   per matrix: i32 layer, i32 kind, i32 K, i32 m, i32 n, f32 alpha,
 *               f32 u~[K*m], f32 d~[K*n]   (what replay writes) */
static graft_status put_mat(graft_blob *b, const mend_mat *mt, const mend_trace *tr, int D) {
    int32_t h[5] = {mt->layer, mt->kind, tr->K, mt->m, mt->n};
    GRAFT_TRY(graft_blob_put(b, h, sizeof h));
    GRAFT_TRY(graft_blob_put(b, &mt->alpha, sizeof(float)));
    for (int t = 0; t < tr->K; t++)
        GRAFT_TRY(graft_blob_put(b, tr->h[2] + (size_t)t * D, (size_t)mt->m * sizeof(float)));
    for (int t = 0; t < tr->K; t++)
        GRAFT_TRY(graft_blob_put(b, tr->h[2] + (size_t)t * D + mt->m, (size_t)mt->n * sizeof(float)));
    return GRAFT_OK;
}

static graft_status mend_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change) {
    mend *me = (mend *)e;
    memset(info, 0, sizeof *info);
    graft_mend_example ex = {req->prompt, req->target, req->n_prompt, req->n_target};
    int T = 0;
    GRAFT_TRY(edit_pass(me, &ex, &info->loss_first, &T));
    mend_trace tr[MAX_MATS];
    memset(tr, 0, sizeof tr);
    graft_status st = GRAFT_OK;
    for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) st = edit_factors(me, &me->mats[i], T, 0, &tr[i]);
    float *acc = NULL;
    if (st == GRAFT_OK) {
        acc = malloc(widest(&e->m->cfg) * sizeof(float));
        if (!acc) st = graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    }
    /* every factor is computed before any weight moves: the edit's u and
     * delta all come from the unedited model, as in the official code */
    for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) {
        mend_mat *mt = &me->mats[i];
        int D = me->nets[mt->net].D;
        write_update(mt->p->data, mt->layout, mt->m, mt->n, mt->alpha, tr[i].h[2], D, tr[i].h[2] + mt->m, D, tr[i].K,
                     acc);
    }
    free(acc);
    if (st == GRAFT_OK) {
        mend_batch b;
        st = batch_build(e->m, &ex, 1, NULL, 0, NULL, 0, &b);
        if (st == GRAFT_OK) st = batch_forward(me, 0, &b);
        if (st == GRAFT_OK) example_losses(me->run[0], &ex, 1, &info->loss_last, &info->reproduced, NULL, 0);
        batch_free(&b);
    }
    if (st == GRAFT_OK) {
        info->iterations = 1;
        snprintf(info->action, sizeof info->action, "mend");
        uint32_t h[3] = {CHANGE_MAGIC, CHANGE_VERSION, (uint32_t)me->n_mats};
        int32_t rep = info->reproduced, np = req->n_prompt, ntg = req->n_target;
        if ((st = graft_blob_put(change, h, sizeof h)) == GRAFT_OK && (st = graft_blob_put(change, &rep, 4)) == GRAFT_OK &&
            (st = graft_blob_put(change, &info->loss_first, 8)) == GRAFT_OK &&
            (st = graft_blob_put(change, &info->loss_last, 8)) == GRAFT_OK &&
            (st = graft_blob_put(change, &np, 4)) == GRAFT_OK && (st = graft_blob_put(change, &ntg, 4)) == GRAFT_OK &&
            (st = graft_blob_put(change, req->prompt, (size_t)np * 4)) == GRAFT_OK)
            st = graft_blob_put(change, req->target, (size_t)ntg * 4);
        for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) {
            st = put_mat(change, &me->mats[i], &tr[i], me->nets[me->mats[i].net].D);
            info->rows_changed += tr[i].K;
        }
    }
    for (int i = 0; i < me->n_mats; i++) trace_free(&tr[i]);
    if (st != GRAFT_OK) return st;
    e->n_edits++;
    return GRAFT_OK;
}

static graft_status mend_replay(graft_editor *e, const uint8_t *change, size_t len) {
    mend *me = (mend *)e;
    graft_blob_reader rd = {change, len, 0, "MEND change record"};
    uint32_t h[3];
    int32_t rep, np, ntg;
    double l0, l1;
    GRAFT_TRY(graft_blob_get(&rd, h, sizeof h));
    if (h[0] != CHANGE_MAGIC || h[1] != CHANGE_VERSION)
        return graft_fail(GRAFT_ERR_FORMAT, "MEND change record: bad magic or version (%08x, %u)", h[0], h[1]);
    if ((int)h[2] != me->n_mats)
        return graft_fail(GRAFT_ERR_FORMAT, "MEND change record: %u matrices, the editor edits %d", h[2], me->n_mats);
    GRAFT_TRY(graft_blob_get(&rd, &rep, 4));
    GRAFT_TRY(graft_blob_get(&rd, &l0, 8));
    GRAFT_TRY(graft_blob_get(&rd, &l1, 8));
    GRAFT_TRY(graft_blob_get(&rd, &np, 4));
    GRAFT_TRY(graft_blob_get(&rd, &ntg, 4));
    if (np < 0 || ntg < 0 || (size_t)np + (size_t)ntg > (len - rd.at) / 4)
        return graft_fail(GRAFT_ERR_FORMAT, "MEND change record: bad request lengths %d, %d", np, ntg);
    rd.at += ((size_t)np + (size_t)ntg) * 4;
    /* validate the whole record before the first write, so a bad record
     * leaves the weights alone */
    size_t at0 = rd.at;
    for (int pass = 0; pass < 2; pass++) {
        rd.at = at0;
        float *acc = NULL;
        if (pass == 1) {
            acc = malloc(widest(&e->m->cfg) * sizeof(float));
            if (!acc) return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
        }
        for (int i = 0; i < me->n_mats; i++) {
            mend_mat *mt = &me->mats[i];
            int32_t mh[5];
            float alpha;
            graft_status st = graft_blob_get(&rd, mh, sizeof mh);
            if (st == GRAFT_OK) st = graft_blob_get(&rd, &alpha, 4);
            if (st == GRAFT_OK && (mh[0] != mt->layer || mh[1] != mt->kind || mh[3] != mt->m || mh[4] != mt->n ||
                                   mh[2] < 0 || (size_t)mh[2] * (size_t)(mt->m + mt->n) > (len - rd.at) / 4))
                st = graft_fail(GRAFT_ERR_FORMAT, "MEND change record: matrix %d is (layer %d, kind %d, %d rows, %dx%d); "
                                "the editor has (layer %d, kind %d, %dx%d)", i, mh[0], mh[1], mh[2], mh[3], mh[4],
                                mt->layer, mt->kind, mt->m, mt->n);
            if (st != GRAFT_OK) {
                free(acc);
                return st;
            }
            size_t off = rd.at, nu = (size_t)mh[2] * mt->m, nd = (size_t)mh[2] * mt->n;
            rd.at += (nu + nd) * 4;
            if (pass == 1) {
                /* the factors sit at any byte offset of the caller's buffer:
                 * copy them out rather than read floats in place */
                float *cu = malloc((nu + nd + 1) * sizeof(float));
                if (!cu) {
                    free(acc);
                    return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
                }
                memcpy(cu, change + off, (nu + nd) * sizeof(float));
                write_update(mt->p->data, mt->layout, mt->m, mt->n, alpha, cu, mt->m, cu + nu, mt->n, mh[2], acc);
                free(cu);
            }
        }
        free(acc);
    }
    e->n_edits++;
    return GRAFT_OK;
}

static graft_status mend_reset(graft_editor *e) {
    mend *me = (mend *)e;
    for (int i = 0; i < me->n_mats; i++)
        memcpy(me->mats[i].p->data, me->mats[i].base, me->mats[i].p->numel * sizeof(float));
    e->n_edits = 0;
    return GRAFT_OK;
}

/* The cumulative delta W - W_base of every edited matrix under its own name,
 * as FT exports. */
static graft_status mend_export(graft_editor *e, const char *path) {
    mend *me = (mend *)e;
    graft_st_write_item items[MAX_MATS];
    float *bufs[MAX_MATS] = {0};
    graft_status st = GRAFT_OK;
    for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) {
        const mend_mat *mt = &me->mats[i];
        bufs[i] = malloc(mt->p->numel * sizeof(float));
        if (!bufs[i]) {
            st = graft_fail(GRAFT_ERR_NOMEM, "MEND export: out of memory");
            break;
        }
        for (size_t j = 0; j < mt->p->numel; j++) bufs[i][j] = mt->p->data[j] - mt->base[j];
        memset(&items[i], 0, sizeof items[i]);
        items[i].name = mt->p->name;
        items[i].dtype = GRAFT_F32;
        items[i].ndim = mt->p->ndim;
        for (int d = 0; d < mt->p->ndim; d++) items[i].shape[d] = mt->p->shape[d];
        items[i].data = bufs[i];
    }
    if (st == GRAFT_OK) {
        char n_edits[32];
        snprintf(n_edits, sizeof n_edits, "%lld", (long long)e->n_edits);
        const char *meta[] = {"editor", "mend", "content", "delta = edited - base weights", "edits", n_edits};
        st = graft_st_write(path, items, me->n_mats, meta, 3);
    }
    for (int i = 0; i < me->n_mats; i++) free(bufs[i]);
    return st;
}

static void net_free(mend_net *nt) {
    graft_free_aligned(nt->theta), graft_free_aligned(nt->grad), graft_free_aligned(nt->am), graft_free_aligned(nt->av);
    free(nt->mean), free(nt->m2);
    memset(nt, 0, sizeof *nt);
}

static void mend_free(graft_editor *e) {
    mend *me = (mend *)e;
    if (!me) return;
    for (int i = 0; i < me->n_mats; i++) {
        graft_free_aligned(me->mats[i].base), graft_free_aligned(me->mats[i].saved);
        graft_free_aligned(me->mats[i].delta);
    }
    for (int j = 0; j < me->n_nets; j++) net_free(&me->nets[j]);
    graft_run_free(me->run[0]);
    graft_run_free(me->run[1]);
    free(me);
}

static const graft_editor_ops mend_ops = {.name = "mend",
                                          .apply = mend_apply,
                                          .replay = mend_replay,
                                          .revert = NULL,
                                          .reset = mend_reset,
                                          .attach = NULL,
                                          .detach = NULL,
                                          .set_keys = NULL,
                                          .export_st = mend_export,
                                          .free = mend_free,
                                          .apply_batch = NULL};

int graft_mend_is(const graft_editor *e) { return e && e->ops == &mend_ops; }

/* ---------------------------------------------------------------- create */

static graft_param *param_of(graft_model *m, const float *data) {
    for (int i = 0; i < m->params.n; i++)
        if (m->params.p[i].data == data) return &m->params.p[i];
    return NULL;
}

static graft_status net_alloc(mend_net *nt, int m, int n, int rank, int n_modes, uint64_t seed) {
    nt->m = m, nt->n = n, nt->D = m + n;
    nt->R = rank < nt->D ? rank : nt->D;
    nt->n_modes = n_modes;
    size_t D = (size_t)nt->D, R = (size_t)nt->R;
    nt->numel = 2 * (2 * D * R + D + 2 * (size_t)n_modes * D);
    nt->theta = graft_calloc_aligned(nt->numel * sizeof(float));
    nt->grad = graft_calloc_aligned(nt->numel * sizeof(float));
    nt->am = graft_calloc_aligned(nt->numel * sizeof(float));
    nt->av = graft_calloc_aligned(nt->numel * sizeof(float));
    nt->mean = calloc(D, sizeof(double));
    nt->m2 = calloc(D, sizeof(double));
    if (!nt->theta || !nt->grad || !nt->am || !nt->av || !nt->mean || !nt->m2)
        return graft_fail(GRAFT_ERR_NOMEM, "MEND: cannot allocate g (%zu parameters)", nt->numel);
    /* the official init: U = 0, V ~ N(0, 1), b = 0, FiLM s = 1, o = 0, so g
     * is exactly the identity */
    uint64_t s = seed;
    for (int k = 0; k < 2; k++) {
        blk_view v = view(nt, nt->theta, k);
        for (size_t i = 0; i < R * D; i++) v.V[i] = (float)gauss(&s);
        for (size_t i = 0; i < (size_t)n_modes * D; i++) v.s[i] = 1.0f;
    }
    return GRAFT_OK;
}

/* Read dir/mend.json (NULL j when absent). */
static graft_status read_meta(const char *dir, cJSON **j) {
    *j = NULL;
    char *path = graft_path_join(dir, "mend.json"), *text = NULL;
    if (!path) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    graft_status st = graft_read_file(path, &text, NULL);
    if (st == GRAFT_OK) {
        *j = cJSON_Parse(text);
        if (!*j || !cJSON_IsObject(*j)) {
            cJSON_Delete(*j);
            *j = NULL;
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: not a JSON object", path);
        }
    } else
        st = graft_fail_prefix(st, "MEND editor %s", dir);
    free(text), free(path);
    return st;
}

graft_status graft_mend_create(graft_model *m, const graft_mend_opts *opts, graft_editor **out) {
    *out = NULL;
    GRAFT_TRY(graft_model_need_f32(m)); /* this editor trains or writes f32 weights */
    const graft_config *cfg = &m->cfg;
    graft_mend_opts o = *opts;
    if (!o.dir[0] && !o.allow_untrained && m->path) {
        /* the editor shipped with the model, <model>/mend */
        char *d = graft_path_join(m->path, "mend"), *f = d ? graft_path_join(d, "mend.json") : NULL;
        if (f && graft_path_exists(f)) snprintf(o.dir, sizeof o.dir, "%s", d);
        free(d), free(f);
    }
    if (!o.dir[0] && !o.allow_untrained)
        return graft_fail(GRAFT_ERR_INVALID,
                          "MEND needs a trained editor: give --mend DIR (a folder written by `graft mend-train`); "
                          "an untrained MEND is only a scaled gradient step (allow it with the option allow_untrained)");
    cJSON *meta = NULL;
    if (o.dir[0]) {
        GRAFT_TRY(read_meta(o.dir, &meta));
        const cJSON *lay = cJSON_GetObjectItem(meta, "layers"), *rk = cJSON_GetObjectItem(meta, "rank");
        const cJSON *C = cJSON_GetObjectItem(meta, "d_model"), *F = cJSON_GetObjectItem(meta, "d_ff");
        const cJSON *L = cJSON_GetObjectItem(meta, "n_layer");
        int ok = cJSON_IsArray(lay) && cJSON_GetArraySize(lay) >= 1 && cJSON_GetArraySize(lay) <= GRAFT_MEND_MAX_LAYERS &&
                 cJSON_IsNumber(rk) && cJSON_IsNumber(C) && cJSON_IsNumber(F) && cJSON_IsNumber(L);
        if (!ok) {
            cJSON_Delete(meta);
            return graft_fail(GRAFT_ERR_FORMAT, "%s/mend.json: want layers, rank, d_model, d_ff and n_layer", o.dir);
        }
        if (C->valueint != cfg->d_model || F->valueint != cfg->d_ff || L->valueint != cfg->n_layer) {
            cJSON_Delete(meta);
            return graft_fail(GRAFT_ERR_INVALID, "%s: the editor was trained for a model with n_layer %d, d_model %d, d_ff %d; this one has %d, %d, %d",
                              o.dir, L->valueint, C->valueint, F->valueint, cfg->n_layer, cfg->d_model, cfg->d_ff);
        }
        /* the statistics and g belong to the model they were trained on: an
         * editor of another model of the same shape is refused (editors
         * written before the fingerprint was recorded carry none) */
        const cJSON *fpj = cJSON_GetObjectItem(meta, "model_fingerprint");
        char fp[128];
        graft_model_fingerprint(m, fp, sizeof fp);
        if (cJSON_IsString(fpj) && strcmp(fpj->valuestring, fp)) {
            graft_status bad = graft_fail(GRAFT_ERR_INVALID, "%s: the editor was trained on another model (fingerprint '%s'; "
                                          "this model's is '%s')", o.dir, fpj->valuestring, fp);
            cJSON_Delete(meta);
            return bad;
        }
        int n = cJSON_GetArraySize(lay);
        if (o.n_layers) {
            int same = o.n_layers == n;
            for (int i = 0; same && i < n; i++) same = o.layers[i] == cJSON_GetArrayItem(lay, i)->valueint;
            if (!same) {
                cJSON_Delete(meta);
                return graft_fail(GRAFT_ERR_INVALID, "MEND: the layers given differ from those the editor in %s was trained on", o.dir);
            }
        }
        o.n_layers = n;
        for (int i = 0; i < n; i++) o.layers[i] = cJSON_GetArrayItem(lay, i)->valueint;
        o.rank = rk->valueint;
        o.allow_untrained = 0;
    }
    cJSON_Delete(meta);
    if (o.n_layers == 0) {
        int n = cfg->n_layer < 3 ? cfg->n_layer : 3;
        o.n_layers = n;
        for (int i = 0; i < n; i++) o.layers[i] = cfg->n_layer - n + i;
    }
    if (o.n_layers < 0 || o.n_layers > GRAFT_MEND_MAX_LAYERS || o.rank < 1 || !(o.init_lr >= 0))
        return graft_fail(GRAFT_ERR_INVALID, "MEND: 1..%d layers, rank >= 1 and init_lr >= 0 (got %d, %d, %g)",
                          GRAFT_MEND_MAX_LAYERS, o.n_layers, o.rank, (double)o.init_lr);
    for (int i = 0; i < o.n_layers; i++) {
        if (o.layers[i] < 0 || o.layers[i] >= cfg->n_layer)
            return graft_fail(GRAFT_ERR_INVALID, "MEND: layer %d outside [0, %d)", o.layers[i], cfg->n_layer);
        for (int k = 0; k < i; k++)
            if (o.layers[k] == o.layers[i]) return graft_fail(GRAFT_ERR_INVALID, "MEND: layer %d given twice", o.layers[i]);
    }
    mend *me = calloc(1, sizeof *me);
    if (!me) return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    me->base.ops = &mend_ops;
    me->base.m = m;
    me->o = o;
    me->low_layer = cfg->n_layer;
    graft_layout lay = cfg->arch == GRAFT_ARCH_GPT2 ? GRAFT_W_KN : GRAFT_W_NK;
    graft_status st = GRAFT_OK;
    /* matrices in order up, down per layer; nets by (m, n) shape */
    int modes[2] = {0, 0};
    for (int i = 0; i < o.n_layers && st == GRAFT_OK; i++) {
        int l = o.layers[i];
        if (l < me->low_layer) me->low_layer = l;
        for (int kind = 0; kind < 2; kind++) {
            mend_mat *mt = &me->mats[me->n_mats++];
            mt->layer = l;
            mt->kind = kind;
            mt->layout = lay;
            mt->m = kind == 0 ? cfg->d_model : cfg->d_ff;
            mt->n = kind == 0 ? cfg->d_ff : cfg->d_model;
            mt->in_site = kind == 0 ? GRAFT_SITE_MLP_IN : GRAFT_SITE_MLP_ACT;
            mt->out_site = kind == 0 ? GRAFT_SITE_MLP_PRE : GRAFT_SITE_MLP_OUT;
            mt->p = param_of(m, kind == 0 ? m->w.layers[l].up_w : m->w.layers[l].down_w);
            if (!mt->p) {
                st = graft_fail(GRAFT_ERR_INTERNAL, "MEND: the MLP matrices of layer %d are not model parameters", l);
                break;
            }
            mt->net = (cfg->d_model == cfg->d_ff) ? 0 : kind;
            mt->mode = modes[mt->net]++;
            mt->alpha = -o.init_lr;
            for (int w = 0; w < 2; w++)
                mt->hook[w] = (graft_hook){.layer = l, .site = mt->out_site, .forward = NULL, .backward = delta_hook, .user = mt};
            size_t bytes = mt->p->numel * sizeof(float);
            mt->base = graft_alloc_aligned(bytes);
            mt->saved = graft_alloc_aligned(bytes);
            if (!mt->base || !mt->saved) {
                st = graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
                break;
            }
            memcpy(mt->base, mt->p->data, bytes);
        }
    }
    me->n_nets = cfg->d_model == cfg->d_ff ? 1 : 2;
    for (int j = 0; j < me->n_nets && st == GRAFT_OK; j++) {
        int mm = j == 0 ? cfg->d_model : cfg->d_ff, nn = j == 0 ? cfg->d_ff : cfg->d_model;
        st = net_alloc(&me->nets[j], mm, nn, o.rank, modes[j], o.seed + 7919u * (uint64_t)j);
    }
    if (st == GRAFT_OK && o.dir[0]) {
        st = graft_mend_load(&me->base, o.dir, 0);
        me->trained = st == GRAFT_OK;
    }
    /* a calibrated step size: the change records keep the scaled alphas, so
     * replay does not depend on this option */
    for (int i = 0; st == GRAFT_OK && i < me->n_mats; i++) me->mats[i].alpha *= o.alpha_scale;
    if (st != GRAFT_OK) {
        mend_free(&me->base);
        return st;
    }
    *out = &me->base;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- introspection */

void graft_mend_get_info(graft_editor *e, graft_mend_info *info) {
    mend *me = (mend *)e;
    memset(info, 0, sizeof *info);
    info->n_mats = me->n_mats;
    info->n_nets = me->n_nets;
    info->rank = me->nets[0].R;
    info->trained = me->trained;
    info->n_params = me->n_mats;
    for (int j = 0; j < me->n_nets; j++) {
        info->n_params += (int64_t)me->nets[j].numel;
        info->stat_count[j] = me->nets[j].count;
    }
}

graft_param *graft_mend_mat(graft_editor *e, int i, int *layer, int *kind, float **alpha, float **alpha_grad) {
    mend *me = (mend *)e;
    if (i < 0 || i >= me->n_mats) return NULL;
    if (layer) *layer = me->mats[i].layer;
    if (kind) *kind = me->mats[i].kind;
    if (alpha) *alpha = &me->mats[i].alpha;
    if (alpha_grad) *alpha_grad = &me->mats[i].alpha_grad;
    return me->mats[i].p;
}

float *graft_mend_net_params(graft_editor *e, int j, float **grad, size_t *numel) {
    mend *me = (mend *)e;
    if (j < 0 || j >= me->n_nets) return NULL;
    if (grad) *grad = me->nets[j].grad;
    if (numel) *numel = me->nets[j].numel;
    return me->nets[j].theta;
}

void graft_mend_net_stats(graft_editor *e, int j, double **count, double **mean, double **m2, int *D, int *m) {
    mend *me = (mend *)e;
    mend_net *nt = &me->nets[j];
    if (count) *count = &nt->count;
    if (mean) *mean = nt->mean;
    if (m2) *m2 = nt->m2;
    if (D) *D = nt->D;
    if (m) *m = nt->m;
}

/* ---------------------------------------------------------------- meta-training */

void graft_mend_zero_grad(graft_editor *e) {
    mend *me = (mend *)e;
    for (int j = 0; j < me->n_nets; j++) memset(me->nets[j].grad, 0, me->nets[j].numel * sizeof(float));
    for (int i = 0; i < me->n_mats; i++) me->mats[i].alpha_grad = 0;
}

/* dL/d(u~, d~) and dL/dalpha of one matrix from the loss pass's rows
 * (u'_s the matrix input, delta'_s the output gradient, s < S):
 * G = sum_s u'_s delta'_s^T is dL/dW, the edit adds alpha sum_t u~_t d~_t^T,
 * so with A[s][t] = delta'_s . d~_t and B[s][t] = u'_s . u~_t:
 *   dL/dalpha = sum A .* B,  dL/du~_t = alpha sum_s A[s][t] u'_s,
 *   dL/dd~_t = alpha sum_s B[s][t] delta'_s.
 * Never forms the m x n matrix G. dout [K, D]. */
static void edit_backward(const mend_mat *mt, const mend_trace *tr, int D, const float *u1, const float *d1, int S,
                          float *AB, float *dout, float *dalpha) {
    int K = tr->K, m = mt->m, n = mt->n;
    float *A = AB, *B = AB + (size_t)S * K;
    graft_gemm(0, 1, S, K, n, 1.0f, d1, n, tr->h[2] + m, D, 0.0f, A, K);
    graft_gemm(0, 1, S, K, m, 1.0f, u1, m, tr->h[2], D, 0.0f, B, K);
    double s = 0;
    for (size_t i = 0; i < (size_t)S * K; i++) s += (double)A[i] * B[i];
    *dalpha += (float)s;
    graft_gemm(1, 0, K, m, S, mt->alpha, A, K, u1, m, 0.0f, dout, D);
    graft_gemm(1, 0, K, n, S, mt->alpha, B, K, d1, n, 0.0f, dout + m, D);
}

/* Backward through g for one matrix: dout [K, D] (overwritten) into the
 * net's gradient. */
static graft_status g_backward(mend *me, const mend_mat *mt, const mend_trace *tr, float *dout) {
    mend_net *nt = &me->nets[mt->net];
    int D = nt->D, R = nt->R, K = tr->K;
    float *scratch = graft_alloc_aligned(((size_t)K * (D + R) + 1) * sizeof(float));
    if (!scratch) return graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    for (int k = 1; k >= 0; k--) {
        blk_view v = view(nt, nt->theta, k), g = view(nt, nt->grad, k);
        size_t md = (size_t)mt->mode * D;
        graft_mend_block_backward(dout, g.U, g.V, g.b, g.s + md, g.o + md, dout, tr->h[k], tr->a[k], tr->pre[k], v.U,
                                  v.V, v.s + md, v.o + md, K, D, R, scratch);
    }
    graft_free_aligned(scratch);
    return GRAFT_OK;
}

graft_status graft_mend_meta_loss(graft_editor *e, const graft_mend_example *edit, const graft_mend_example *equiv,
                                  int n_equiv, const int *loc, int n_loc, const int *loc_lens, int n_loc_seq,
                                  double c_edit, double c_loc, int grads,
                                  int update_stats, graft_mend_loss *out) {
    mend *me = (mend *)e;
    graft_model *m = e->m;
    int V = m->cfg.vocab_size;
    memset(out, 0, sizeof *out);
    mend_batch b;
    GRAFT_TRY(batch_build(m, equiv, n_equiv, loc, n_loc, loc_lens, n_loc_seq, &b));
    mend_trace tr[MAX_MATS];
    memset(tr, 0, sizeof tr);
    double *p_base = malloc(((size_t)n_loc * V + 1) * sizeof(double));
    float *dlogits = calloc((size_t)b.n_out * V + 1, sizeof(float));
    int *base_arg = malloc(((size_t)n_loc + 1) * sizeof(int));
    float *acc = malloc(widest(&m->cfg) * sizeof(float));
    graft_status st = (p_base && dlogits && base_arg && acc) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
    int written = 0, T = 0;
    double l_edit_pass = 0;
    /* 1. the unedited model on the loss batch: p_base and the loss before */
    if (st == GRAFT_OK) st = batch_forward(me, 1, &b);
    if (st == GRAFT_OK) {
        example_losses(me->run[1], equiv, n_equiv, &out->l_edit_before, NULL, NULL, 0);
        softmax_rows(me->run[1], b.n_tgt_rows, n_loc, p_base);
        for (int i = 0; i < n_loc; i++) {
            const double *p = p_base + (size_t)i * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (p[v] > p[best]) best = v;
            base_arg[i] = best;
        }
    }
    /* 2. the edit: u, delta from the unedited model, then g */
    if (st == GRAFT_OK) st = edit_pass(me, edit, &l_edit_pass, &T);
    for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) st = edit_factors(me, &me->mats[i], T, update_stats, &tr[i]);
    /* 3. the edited weights (temporarily) */
    if (st == GRAFT_OK) {
        for (int i = 0; i < me->n_mats; i++) {
            mend_mat *mt = &me->mats[i];
            int D = me->nets[mt->net].D;
            memcpy(mt->saved, mt->p->data, mt->p->numel * sizeof(float));
            write_update(mt->p->data, mt->layout, mt->m, mt->n, mt->alpha, tr[i].h[2], D, tr[i].h[2] + mt->m, D, tr[i].K,
                         acc);
        }
        written = 1;
    }
    /* 4. the losses on the edited model and their gradient at the logits:
     * nothing below the lowest edited matrix changed, so the loss batch
     * re-runs from there */
    if (st == GRAFT_OK) st = graft_run_forward_from(me->run[1], me->low_layer, GRAFT_SITE_MLP_PRE);
    if (st == GRAFT_OK) {
        const graft_run *r = me->run[1];
        example_losses(r, equiv, n_equiv, &out->l_edit, &out->edit_ok, dlogits, c_edit);
        double kl = 0;
        int same = 1;
        double w = n_loc ? 1.0 / n_loc : 0;
        for (int i = 0; i < n_loc; i++) {
            const float *z = r->logits + (size_t)(b.n_tgt_rows + i) * V;
            const double *p = p_base + (size_t)i * V;
            float *d = dlogits + (size_t)(b.n_tgt_rows + i) * V;
            float mx = z[0];
            int best = 0;
            for (int v = 1; v < V; v++)
                if (z[v] > mx) mx = z[v], best = v;
            same &= best == base_arg[i];
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
            double lse = mx + log(se);
            for (int v = 0; v < V; v++) {
                double lq = (double)z[v] - lse;
                if (p[v] > 0) kl += w * p[v] * (log(p[v]) - lq);
                d[v] = (float)(c_loc * w * (exp(lq) - p[v]));
            }
        }
        out->l_loc = kl;
        out->loc_same = same;
        out->total = c_edit * out->l_edit + c_loc * out->l_loc;
    }
    /* 5. backward to the lowest edited matrix, then through the edit and g */
    if (st == GRAFT_OK && grads) {
        st = graft_run_backward_dlogits(me->run[1], dlogits, NULL, me->low_layer, GRAFT_SITE_MLP_PRE);
        for (int i = 0; i < me->n_mats && st == GRAFT_OK; i++) {
            mend_mat *mt = &me->mats[i];
            int D = me->nets[mt->net].D, K = tr[i].K, S = b.T;
            if (K == 0) continue;
            float *AB = graft_alloc_aligned((size_t)2 * S * K * sizeof(float));
            float *dout = graft_alloc_aligned((size_t)K * D * sizeof(float));
            if (!AB || !dout) st = graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
            else {
                edit_backward(mt, &tr[i], D, graft_run_site(me->run[1], mt->layer, mt->in_site), mt->delta, S, AB, dout,
                              &mt->alpha_grad);
                st = g_backward(me, mt, &tr[i], dout);
            }
            graft_free_aligned(AB), graft_free_aligned(dout);
        }
    }
    /* 6. back to the weights before the step */
    if (written)
        for (int i = 0; i < me->n_mats; i++) memcpy(me->mats[i].p->data, me->mats[i].saved, me->mats[i].p->numel * sizeof(float));
    for (int i = 0; i < me->n_mats; i++) trace_free(&tr[i]);
    free(p_base), free(dlogits), free(base_arg), free(acc);
    batch_free(&b);
    return st;
}

static void adam(float *p, const float *g, float *mm, float *vv, size_t n, int t, float lr, float scale) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float step = lr / (1.0f - powf(b1, (float)t)), ibc2 = 1.0f / sqrtf(1.0f - powf(b2, (float)t));
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * scale;
        mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
        vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
        p[i] -= step * mm[i] / (sqrtf(vv[i]) * ibc2 + eps);
    }
}

double graft_mend_opt_step(graft_editor *e, int accum, double clip, float lr_g, float lr_alpha) {
    mend *me = (mend *)e;
    double inv = 1.0 / (accum > 0 ? accum : 1), ss = 0;
    for (int j = 0; j < me->n_nets; j++)
        for (size_t i = 0; i < me->nets[j].numel; i++) ss += (double)me->nets[j].grad[i] * me->nets[j].grad[i];
    for (int i = 0; i < me->n_mats; i++) ss += (double)me->mats[i].alpha_grad * me->mats[i].alpha_grad;
    double norm = sqrt(ss) * inv;
    double scale = inv;
    if (clip > 0 && norm > clip) scale *= clip / norm;
    me->adam_t++;
    for (int j = 0; j < me->n_nets; j++)
        adam(me->nets[j].theta, me->nets[j].grad, me->nets[j].am, me->nets[j].av, me->nets[j].numel, me->adam_t, lr_g,
             (float)scale);
    for (int i = 0; i < me->n_mats; i++) {
        mend_mat *mt = &me->mats[i];
        adam(&mt->alpha, &mt->alpha_grad, &mt->alpha_m, &mt->alpha_v, 1, me->adam_t, lr_alpha, (float)scale);
    }
    graft_mend_zero_grad(e);
    return norm;
}

/* ---------------------------------------------------------------- save / load */

graft_status graft_mend_save(graft_editor *e, const char *dir, int optimiser, const char *extra_json) {
    mend *me = (mend *)e;
    const graft_config *cfg = &e->m->cfg;
    GRAFT_TRY(graft_mkdir_p(dir));
    enum { PER_NET = 14 };
    graft_st_write_item items[2 * PER_NET + 8];
    char names[2 * PER_NET + 8][48];
    int n = 0;
    float alpha[MAX_MATS], am[MAX_MATS], av[MAX_MATS];
    float *stats[2][2] = {{0}};
    graft_status st = GRAFT_OK;
#define ITEM(nm, ptr, nd, d0, d1)                                                                                      \
    do {                                                                                                               \
        memset(&items[n], 0, sizeof items[n]);                                                                         \
        snprintf(names[n], sizeof names[n], "%s", nm);                                                                 \
        items[n].name = names[n];                                                                                      \
        items[n].dtype = GRAFT_F32;                                                                                    \
        items[n].ndim = nd;                                                                                            \
        items[n].shape[0] = d0;                                                                                        \
        items[n].shape[1] = d1;                                                                                        \
        items[n].data = ptr;                                                                                           \
        n++;                                                                                                           \
    } while (0)
    for (int j = 0; j < me->n_nets && st == GRAFT_OK; j++) {
        mend_net *nt = &me->nets[j];
        char nm[48];
        for (int k = 0; k < 2; k++) {
            blk_view v = view(nt, nt->theta, k);
            snprintf(nm, sizeof nm, "net%d.block%d.U", j, k);
            ITEM(nm, v.U, 2, nt->D, nt->R);
            snprintf(nm, sizeof nm, "net%d.block%d.V", j, k);
            ITEM(nm, v.V, 2, nt->R, nt->D);
            snprintf(nm, sizeof nm, "net%d.block%d.b", j, k);
            ITEM(nm, v.b, 1, nt->D, 0);
            snprintf(nm, sizeof nm, "net%d.block%d.film_scale", j, k);
            ITEM(nm, v.s, 2, nt->n_modes, nt->D);
            snprintf(nm, sizeof nm, "net%d.block%d.film_shift", j, k);
            ITEM(nm, v.o, 2, nt->n_modes, nt->D);
        }
        stats[j][0] = malloc((size_t)nt->D * sizeof(float));
        stats[j][1] = malloc((size_t)nt->D * sizeof(float));
        if (!stats[j][0] || !stats[j][1]) {
            st = graft_fail(GRAFT_ERR_NOMEM, "MEND: out of memory");
            break;
        }
        for (int i = 0; i < nt->D; i++) stats[j][0][i] = (float)nt->mean[i], stats[j][1][i] = (float)nt->m2[i];
        snprintf(nm, sizeof nm, "net%d.stat_mean", j);
        ITEM(nm, stats[j][0], 1, nt->D, 0);
        snprintf(nm, sizeof nm, "net%d.stat_m2", j);
        ITEM(nm, stats[j][1], 1, nt->D, 0);
        if (optimiser) {
            snprintf(nm, sizeof nm, "net%d.adam_m", j);
            ITEM(nm, nt->am, 1, (int64_t)nt->numel, 0);
            snprintf(nm, sizeof nm, "net%d.adam_v", j);
            ITEM(nm, nt->av, 1, (int64_t)nt->numel, 0);
        }
    }
    for (int i = 0; i < me->n_mats; i++) alpha[i] = me->mats[i].alpha, am[i] = me->mats[i].alpha_m, av[i] = me->mats[i].alpha_v;
    if (st == GRAFT_OK) {
        ITEM("alpha", alpha, 1, me->n_mats, 0);
        if (optimiser) {
            ITEM("alpha.adam_m", am, 1, me->n_mats, 0);
            ITEM("alpha.adam_v", av, 1, me->n_mats, 0);
        }
    }
#undef ITEM
    char *path = NULL, *jpath = NULL, *text = NULL;
    cJSON *j = NULL;
    if (st == GRAFT_OK) {
        path = graft_path_join(dir, "mend.safetensors");
        jpath = graft_path_join(dir, "mend.json");
        const char *meta[] = {"editor", "mend"};
        st = path && jpath ? graft_st_write(path, items, n, meta, 1) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (st == GRAFT_OK) {
        j = extra_json ? cJSON_Parse(extra_json) : cJSON_CreateObject();
        if (!j || !cJSON_IsObject(j)) st = graft_fail(GRAFT_ERR_INVALID, "MEND save: extra JSON is not an object");
    }
    if (st == GRAFT_OK) {
        cJSON_AddStringToObject(j, "format", "graft-mend");
        cJSON_AddNumberToObject(j, "version", 1);
        cJSON_AddStringToObject(j, "arch", cfg->arch == GRAFT_ARCH_GPT2 ? "gpt2" : "llama");
        cJSON_AddNumberToObject(j, "n_layer", cfg->n_layer);
        cJSON_AddNumberToObject(j, "d_model", cfg->d_model);
        cJSON_AddNumberToObject(j, "d_ff", cfg->d_ff);
        char fp[128];
        graft_model_fingerprint(e->m, fp, sizeof fp);
        cJSON_AddStringToObject(j, "model_fingerprint", fp);
        cJSON *lay = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < me->o.n_layers; i++) graft_json_push(lay, cJSON_CreateNumber(me->o.layers[i]));
        cJSON_AddNumberToObject(j, "rank", me->o.rank);
        cJSON *cnt = cJSON_AddArrayToObject(j, "stat_count");
        for (int k = 0; k < me->n_nets; k++) graft_json_push(cnt, cJSON_CreateNumber(me->nets[k].count));
        cJSON *mats = cJSON_AddArrayToObject(j, "matrices");
        for (int i = 0; i < me->n_mats; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "param", me->mats[i].p->name);
            cJSON_AddNumberToObject(x, "net", me->mats[i].net);
            cJSON_AddNumberToObject(x, "mode", me->mats[i].mode);
            cJSON_AddNumberToObject(x, "alpha", me->mats[i].alpha);
            graft_json_push(mats, x);
        }
        cJSON_AddStringToObject(j, "sign", "W += alpha * sum_t u~_t d~_t^T");
        if (optimiser) cJSON_AddNumberToObject(j, "adam_t", me->adam_t);
        text = cJSON_Print(j);
        st = text ? graft_write_file_atomic(jpath, text, strlen(text)) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    cJSON_Delete(j);
    free(text), free(path), free(jpath);
    for (int k = 0; k < 2; k++) free(stats[k][0]), free(stats[k][1]);
    return st;
}

/* load_tensor's answer for an optional tensor that is absent (not an error:
 * a shipped editor carries no optimiser state). */
#define MISSING GRAFT_ERR_IO

/* Copy tensor `name` of the archive into dst (numel floats), checking size. */
static graft_status load_tensor(const graft_st_archive *a, const char *name, float *dst, size_t numel, const char *dir,
                                int required) {
    const graft_st_tensor *t = graft_st_find(a, name);
    if (!t) return required ? graft_fail(GRAFT_ERR_FORMAT, "%s/mend.safetensors: no tensor '%s'", dir, name) : MISSING;
    if (t->numel != numel || t->dtype != GRAFT_F32)
        return graft_fail(GRAFT_ERR_FORMAT, "%s/mend.safetensors: tensor '%s' has %zu elements (%s), want %zu F32", dir,
                          name, t->numel, graft_dtype_name(t->dtype), numel);
    graft_convert_to_f32(dst, t->data, GRAFT_F32, numel);
    return GRAFT_OK;
}

graft_status graft_mend_load(graft_editor *e, const char *dir, int optimiser) {
    mend *me = (mend *)e;
    cJSON *meta = NULL;
    GRAFT_TRY(read_meta(dir, &meta));
    const cJSON *rk = cJSON_GetObjectItem(meta, "rank"), *cnt = cJSON_GetObjectItem(meta, "stat_count");
    const cJSON *at = cJSON_GetObjectItem(meta, "adam_t");
    graft_status st = GRAFT_OK;
    if (!cJSON_IsNumber(rk) || rk->valueint != me->o.rank || !cJSON_IsArray(cnt) || cJSON_GetArraySize(cnt) != me->n_nets)
        st = graft_fail(GRAFT_ERR_FORMAT, "%s/mend.json: rank or stat_count do not match this editor (rank %d, %d nets)",
                        dir, me->o.rank, me->n_nets);
    char *path = graft_path_join(dir, "mend.safetensors");
    graft_st_archive a;
    memset(&a, 0, sizeof a);
    if (st == GRAFT_OK) st = path ? graft_st_open(path, &a) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    int opened = st == GRAFT_OK;
    for (int j = 0; j < me->n_nets && st == GRAFT_OK; j++) {
        mend_net *nt = &me->nets[j];
        char nm[48];
        for (int k = 0; k < 2 && st == GRAFT_OK; k++) {
            blk_view v = view(nt, nt->theta, k);
            size_t D = (size_t)nt->D, R = (size_t)nt->R, M = (size_t)nt->n_modes;
            snprintf(nm, sizeof nm, "net%d.block%d.U", j, k);
            st = load_tensor(&a, nm, v.U, D * R, dir, 1);
            snprintf(nm, sizeof nm, "net%d.block%d.V", j, k);
            if (st == GRAFT_OK) st = load_tensor(&a, nm, v.V, D * R, dir, 1);
            snprintf(nm, sizeof nm, "net%d.block%d.b", j, k);
            if (st == GRAFT_OK) st = load_tensor(&a, nm, v.b, D, dir, 1);
            snprintf(nm, sizeof nm, "net%d.block%d.film_scale", j, k);
            if (st == GRAFT_OK) st = load_tensor(&a, nm, v.s, M * D, dir, 1);
            snprintf(nm, sizeof nm, "net%d.block%d.film_shift", j, k);
            if (st == GRAFT_OK) st = load_tensor(&a, nm, v.o, M * D, dir, 1);
        }
        float *tmp = st == GRAFT_OK ? malloc((size_t)nt->D * sizeof(float)) : NULL;
        if (st == GRAFT_OK && !tmp) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        snprintf(nm, sizeof nm, "net%d.stat_mean", j);
        if (st == GRAFT_OK && (st = load_tensor(&a, nm, tmp, (size_t)nt->D, dir, 1)) == GRAFT_OK)
            for (int i = 0; i < nt->D; i++) nt->mean[i] = tmp[i];
        snprintf(nm, sizeof nm, "net%d.stat_m2", j);
        if (st == GRAFT_OK && (st = load_tensor(&a, nm, tmp, (size_t)nt->D, dir, 1)) == GRAFT_OK)
            for (int i = 0; i < nt->D; i++) nt->m2[i] = tmp[i];
        free(tmp);
        if (st == GRAFT_OK) nt->count = cJSON_GetArrayItem(cnt, j)->valuedouble;
        if (st == GRAFT_OK && optimiser) {
            snprintf(nm, sizeof nm, "net%d.adam_m", j);
            graft_status s1 = load_tensor(&a, nm, nt->am, nt->numel, dir, 0);
            snprintf(nm, sizeof nm, "net%d.adam_v", j);
            graft_status s2 = s1 == GRAFT_OK ? load_tensor(&a, nm, nt->av, nt->numel, dir, 0) : s1;
            if (s1 != GRAFT_OK && s1 != MISSING) st = s1;
            else if (s2 != GRAFT_OK && s2 != MISSING) st = s2;
        }
    }
    float alpha[MAX_MATS], am[MAX_MATS], av[MAX_MATS];
    if (st == GRAFT_OK) st = load_tensor(&a, "alpha", alpha, (size_t)me->n_mats, dir, 1);
    if (st == GRAFT_OK)
        for (int i = 0; i < me->n_mats; i++) me->mats[i].alpha = alpha[i];
    if (st == GRAFT_OK && optimiser && load_tensor(&a, "alpha.adam_m", am, (size_t)me->n_mats, dir, 0) == GRAFT_OK &&
        load_tensor(&a, "alpha.adam_v", av, (size_t)me->n_mats, dir, 0) == GRAFT_OK) {
        for (int i = 0; i < me->n_mats; i++) me->mats[i].alpha_m = am[i], me->mats[i].alpha_v = av[i];
        me->adam_t = cJSON_IsNumber(at) ? at->valueint : 0;
    }
    if (opened) graft_st_close(&a);
    free(path);
    cJSON_Delete(meta);
    return st;
}

/* ---------------------------------------------------------------- options JSON */

graft_status graft_mend_opts_from_json(const void *cjson, graft_mend_opts *o, const char *where) {
    graft_mend_opts_default(o);
    const cJSON *it;
    cJSON_ArrayForEach(it, (const cJSON *)cjson) {
        const char *k = it->string;
        int ok = 1, num = cJSON_IsNumber(it);
        if (!strcmp(k, "editor")) {
            ok = cJSON_IsString(it) && strlen(it->valuestring) < sizeof o->dir;
            if (ok) snprintf(o->dir, sizeof o->dir, "%s", it->valuestring);
        } else if (!strcmp(k, "allow_untrained")) ok = cJSON_IsBool(it), o->allow_untrained = cJSON_IsTrue(it);
        else if (!strcmp(k, "rank")) ok = num && it->valuedouble >= 1, o->rank = it->valueint;
        else if (!strcmp(k, "init_lr")) ok = num && it->valuedouble >= 0, o->init_lr = (float)it->valuedouble;
        else if (!strcmp(k, "seed")) ok = num, o->seed = (uint64_t)it->valuedouble;
        else if (!strcmp(k, "alpha_scale")) ok = num && it->valuedouble > 0, o->alpha_scale = (float)it->valuedouble;
        else if (!strcmp(k, "layers")) {
            int n = cJSON_GetArraySize(it);
            ok = cJSON_IsArray(it) && n >= 1 && n <= GRAFT_MEND_MAX_LAYERS;
            for (int i = 0; ok && i < n; i++) {
                const cJSON *x = cJSON_GetArrayItem(it, i);
                ok = cJSON_IsNumber(x);
                if (ok) o->layers[i] = x->valueint;
            }
            if (ok) o->n_layers = n;
        } else
            return graft_fail(GRAFT_ERR_INVALID, "%s: unknown MEND option '%s'", where, k);
        if (!ok) return graft_fail(GRAFT_ERR_INVALID, "%s: MEND option '%s' has a bad value", where, k);
    }
    return GRAFT_OK;
}

graft_status graft_mend_opts_to_json(graft_editor *e, void *cjson) {
    const graft_mend_opts *o = &((mend *)e)->o;
    cJSON *j = cjson;
    int ok = 1;
    if (o->dir[0]) ok &= cJSON_AddStringToObject(j, "editor", o->dir) != NULL;
    ok &= cJSON_AddBoolToObject(j, "allow_untrained", o->allow_untrained) != NULL;
    cJSON *a = cJSON_AddArrayToObject(j, "layers");
    for (int i = 0; a && i < o->n_layers; i++) ok &= graft_json_push(a, cJSON_CreateNumber(o->layers[i]));
    ok &= a != NULL;
    ok &= cJSON_AddNumberToObject(j, "rank", o->rank) != NULL;
    ok &= cJSON_AddNumberToObject(j, "init_lr", o->init_lr) != NULL;
    ok &= cJSON_AddNumberToObject(j, "seed", (double)o->seed) != NULL;
    ok &= cJSON_AddNumberToObject(j, "alpha_scale", o->alpha_scale) != NULL;
    return ok ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
}
