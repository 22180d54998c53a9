/* melo.c - MELO: a vector-database router and block-partitioned LoRA
 * (melo.h says what each part does; shared/docs/algorithms.md section 2 is
 * the spec this follows).
 *
 * Where graft departs from the official code, and why:
 *  - labels are compared as exact token sequences (the official sum of ids
 *    calls "ab" and "ba" the same answer; label_sum_compat restores it);
 *  - each block is its own pair of tensors instead of a slice of one rank-r
 *    matrix (the same arithmetic: scale * (x A_m) B_m), so capacity can grow;
 *  - a query counts as inside a radius up to a slack of 1e-4 of its norm,
 *    for the reason GRACE has one (grace.c, hit_slack): the edge of an
 *    expanded cluster is exactly a trained query, and the same prompt through
 *    another path (KV-cached generation, a packed batch) differs in its last
 *    bits;
 *  - on an exact distance tie the newer cluster / point wins, so a re-edit of
 *    the same prompt (a split at distance 0) routes to the new block;
 *  - training stops once every target token leads by `margin` (train
 *    success, the default) instead of always running num_iter steps.
 */
#include "melo.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cluster {
    float *center; /* [qd] */
    float radius;
    int *label, n_label;
    int n_pts, cap_pts;
    float *pts;    /* [cap_pts, qd] */
    int *pt_block; /* -1: a dummy point (every real point was forgotten) */
} cluster;

typedef struct melo {
    graft_editor base;
    graft_melo_opts o;
    int qd, in, out, k;
    float scale, a_bound;
    /* blocks: blk[m] holds, for each LoRA layer i, A_i [in*k] then B_i [k*out] */
    int n_blocks, cap_blocks;
    float **blk;
    size_t blk_floats;
    /* the router */
    int n_cl, cap_cl;
    cluster *cl;
    int n_conflicts, n_forgotten;
    /* hooks: the router at (layer, MLP_PRE); per LoRA layer the LoRA at
     * MLP_PRE and its input gradient at MLP_IN */
    graft_hook db_hook, pre_hook[GRAFT_MELO_MAX_LORA], in_hook[GRAFT_MELO_MAX_LORA];
    int *key_pos, n_key_pos, key_pos_cap; /* n_key_pos 0: last token of every sequence */
    int *route, route_cap;                /* per sequence: its block, or -1 */
    int force;                            /* -2: route by the router; else every sequence here */
    int last_routed;
    /* training: scratch sized by the run the hooks are attached to */
    int grad_block;           /* the block whose gradient accumulates (-1: none) */
    float *gblk, *adam_m, *adam_v; /* [blk_floats] */
    float *h[GRAFT_MELO_MAX_LORA], *dh[GRAFT_MELO_MAX_LORA]; /* [rows, k] */
    int h_cap;
    graft_run *run;
    int run_cap, run_out, run_len;
} melo;

#define CHANGE_MAGIC 0x4f4c454du /* "MELO" */
#define CHANGE_VERSION 1u

static const graft_editor_ops melo_ops;

/* ---------------------------------------------------------------- options */

void graft_melo_opts_default(graft_melo_opts *o) {
    memset(o, 0, sizeof *o);
    o->layer = -1;
    o->rank = 2;
    o->blocks = 1024;
    o->init_radius = 0; /* 0: graft_melo_create picks the model's default */
    o->edit_lr = 1e-3f;
    o->n_iter = 50;
    o->step_size = 20;
    o->gamma = 0.5f;
    o->train = MELO_TRAIN_SUCCESS;
    o->max_iter = 200;
    o->margin = 0.5f;
    o->seed = 42;
}

int graft_melo_is(const graft_editor *e) { return e && e->ops == &melo_ops; }
void graft_melo_get_opts(graft_editor *e, graft_melo_opts *o) { *o = ((melo *)e)->o; }

void graft_melo_capacity(graft_editor *e, int *used, int *total, int *grow) {
    melo *g = (melo *)e;
    *used = g->n_blocks;
    *total = g->o.blocks;
    *grow = g->o.grow;
}

/* ---------------------------------------------------------------- router */

static float l2(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = a[i] - b[i];
        acc += d * d;
    }
    return sqrtf(acc);
}

/* Nearest of the first n clusters (ties: the newer); -1 when n is 0. */
static int nearest_cluster(const melo *g, int n, const float *q, float *dist) {
    int best = -1;
    float bd = INFINITY;
    for (int c = 0; c < n; c++) {
        float d = l2(q, g->cl[c].center, g->qd);
        if (d <= bd) bd = d, best = c;
    }
    *dist = bd;
    return best;
}

static float slack(const float *q, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += q[i] * q[i];
    return 1e-4f * sqrtf(s);
}

int graft_melo_route(graft_editor *e, const float *q) {
    melo *g = (melo *)e;
    float d;
    int c = nearest_cluster(g, g->n_cl, q, &d);
    if (c < 0 || !(d <= g->cl[c].radius + slack(q, g->qd))) return -1;
    const cluster *C = &g->cl[c];
    int best = -1;
    float bd = INFINITY;
    for (int p = 0; p < C->n_pts; p++) {
        float dp = l2(q, C->pts + (size_t)p * g->qd, g->qd);
        if (dp <= bd) bd = dp, best = p;
    }
    return best >= 0 ? C->pt_block[best] : -1;
}

static int labels_match(const melo *g, const cluster *c, const int *label, int n) {
    if (g->o.label_sum_compat) { /* the official rule: sums of the ids */
        long a = 0, b = 0;
        for (int i = 0; i < c->n_label; i++) a += c->label[i];
        for (int i = 0; i < n; i++) b += label[i];
        return a == b;
    }
    return c->n_label == n && !memcmp(c->label, label, (size_t)n * sizeof(int));
}

static graft_status add_point(melo *g, cluster *c, const float *q, int block) {
    if (c->n_pts == c->cap_pts) {
        int cap = c->cap_pts ? 2 * c->cap_pts : 4;
        float *p = realloc(c->pts, (size_t)cap * g->qd * sizeof(float));
        if (p) c->pts = p;
        int *b = realloc(c->pt_block, (size_t)cap * sizeof(int));
        if (b) c->pt_block = b;
        if (!p || !b) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        c->cap_pts = cap;
    }
    memcpy(c->pts + (size_t)c->n_pts * g->qd, q, (size_t)g->qd * sizeof(float));
    c->pt_block[c->n_pts++] = block;
    return GRAFT_OK;
}

static graft_status add_cluster(melo *g, const float *q, float radius, const int *label, int n_label, int block) {
    if (g->n_cl == g->cap_cl) {
        int cap = g->cap_cl ? 2 * g->cap_cl : 64;
        cluster *c = realloc(g->cl, (size_t)cap * sizeof *c);
        if (!c) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        g->cl = c;
        g->cap_cl = cap;
    }
    cluster *c = &g->cl[g->n_cl];
    memset(c, 0, sizeof *c);
    c->center = malloc((size_t)g->qd * sizeof(float));
    c->label = malloc((size_t)(n_label > 0 ? n_label : 1) * sizeof(int));
    if (!c->center || !c->label) {
        free(c->center), free(c->label);
        return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    }
    g->n_cl++; /* owned from here: freed with the router */
    memcpy(c->center, q, (size_t)g->qd * sizeof(float));
    if (n_label) memcpy(c->label, label, (size_t)n_label * sizeof(int));
    c->n_label = n_label;
    c->radius = radius;
    return add_point(g, c, q, block);
}

/* The spec's update of one batch (algorithms.md 2.3): nearest clusters are
 * found once against the router as it was before the batch; then each query
 * adds a cluster (too far), expands its nearest (same label: the centre
 * becomes the mean of the points, the radius covers them all) or splits it
 * (another label: both radii meet halfway, the old cluster forgets the points
 * now outside it). */
graft_status graft_melo_router_update(graft_editor *e, const float *queries, const int *const *labels,
                                      const int *n_labels, int n, int block) {
    melo *g = (melo *)e;
    int qd = g->qd;
    float r0 = g->o.init_radius;
    if (g->n_cl == 0) {
        for (int i = 0; i < n; i++)
            GRAFT_TRY(add_cluster(g, queries + (size_t)i * qd, r0, labels[i], n_labels[i], block));
        return GRAFT_OK;
    }
    int n0 = g->n_cl, *near = malloc((size_t)n * sizeof(int));
    float *dist = malloc((size_t)n * sizeof(float));
    graft_status st = near && dist ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    for (int i = 0; st == GRAFT_OK && i < n; i++) near[i] = nearest_cluster(g, n0, queries + (size_t)i * qd, &dist[i]);
    for (int i = 0; st == GRAFT_OK && i < n; i++) {
        const float *q = queries + (size_t)i * qd;
        int c = near[i];
        float d = dist[i];
        if (d > g->cl[c].radius + r0) {
            st = add_cluster(g, q, r0, labels[i], n_labels[i], block);
        } else if (labels_match(g, &g->cl[c], labels[i], n_labels[i])) {
            cluster *C = &g->cl[c];
            if ((st = add_point(g, C, q, block))) break;
            for (int j = 0; j < qd; j++) {
                double s = 0;
                for (int p = 0; p < C->n_pts; p++) s += C->pts[(size_t)p * qd + j];
                C->center[j] = (float)(s / C->n_pts);
            }
            float far = r0;
            for (int p = 0; p < C->n_pts; p++) {
                float dp = l2(C->pts + (size_t)p * qd, C->center, qd);
                if (dp > far) far = dp;
            }
            C->radius = far;
        } else {
            if ((st = add_cluster(g, q, d / 2.0f + 1e-5f, labels[i], n_labels[i], block))) break;
            cluster *C = &g->cl[c]; /* after add_cluster: the array may have moved */
            C->radius = d / 2.0f - 1e-5f;
            int kept = 0;
            for (int p = 0; p < C->n_pts; p++) {
                if (l2(C->pts + (size_t)p * qd, C->center, qd) > C->radius) {
                    g->n_forgotten++;
                    continue;
                }
                memmove(C->pts + (size_t)kept * qd, C->pts + (size_t)p * qd, (size_t)qd * sizeof(float));
                C->pt_block[kept++] = C->pt_block[p];
            }
            C->n_pts = kept;
            if (kept == 0) st = add_point(g, C, C->center, -1);
            g->n_conflicts++;
        }
    }
    free(near), free(dist);
    return st;
}

static void router_free(melo *g) {
    for (int c = 0; c < g->n_cl; c++) free(g->cl[c].center), free(g->cl[c].label), free(g->cl[c].pts), free(g->cl[c].pt_block);
    free(g->cl);
    g->cl = NULL;
    g->n_cl = g->cap_cl = 0;
    g->n_conflicts = g->n_forgotten = 0;
}

/* ---------------------------------------------------------------- blocks */

static float *blk_A(const melo *g, int m, int i) { return g->blk[m] + (size_t)i * ((size_t)g->in * g->k + (size_t)g->k * g->out); }
static float *blk_B(const melo *g, int m, int i) { return blk_A(g, m, i) + (size_t)g->in * g->k; }

/* Append block m (== n_blocks): A ~ U(-1/sqrt(r), 1/sqrt(r)) with r the
 * total rank blocks * k (PyTorch's kaiming_uniform(a=sqrt 5) on the official
 * (in x r) tensor), drawn from (seed, m) so a replay or resume draws the
 * same; B = 0 (an exact no-op until trained). data: the block's floats to
 * install instead (replay). */
static graft_status add_block(melo *g, const float *data) {
    if (g->n_blocks == g->cap_blocks) {
        int cap = g->cap_blocks ? 2 * g->cap_blocks : 64;
        float **b = realloc(g->blk, (size_t)cap * sizeof *b);
        if (!b) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        g->blk = b;
        g->cap_blocks = cap;
    }
    int m = g->n_blocks;
    float *p = malloc(g->blk_floats * sizeof(float));
    if (!p) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory for block %d", m);
    g->blk[m] = p;
    g->n_blocks++;
    if (data) {
        memcpy(p, data, g->blk_floats * sizeof(float));
        return GRAFT_OK;
    }
    uint64_t rng = g->o.seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(m + 1));
    for (int i = 0; i < g->o.n_lora; i++) {
        float *A = blk_A(g, m, i), *B = blk_B(g, m, i);
        for (size_t j = 0; j < (size_t)g->in * g->k; j++) A[j] = (float)((2.0 * graft_edit_uniform01(&rng) - 1.0) * g->a_bound);
        memset(B, 0, (size_t)g->k * g->out * sizeof(float));
    }
    return GRAFT_OK;
}

static void blocks_free(melo *g) {
    for (int m = 0; m < g->n_blocks; m++) free(g->blk[m]);
    free(g->blk);
    g->blk = NULL;
    g->n_blocks = g->cap_blocks = 0;
}

graft_status graft_melo_block(graft_editor *e, int m, int i, float **A, float **B, int *in, int *k, int *out) {
    melo *g = (melo *)e;
    if (m < 0 || m >= g->n_blocks || i < 0 || i >= g->o.n_lora)
        return graft_fail(GRAFT_ERR_RANGE, "MELO: no block %d / LoRA layer %d (%d blocks, %d layers)", m, i, g->n_blocks,
                          g->o.n_lora);
    *A = blk_A(g, m, i), *B = blk_B(g, m, i);
    *in = g->in, *k = g->k, *out = g->out;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- hooks */

static int lora_index(const melo *g, int layer) {
    for (int i = 0; i < g->o.n_lora; i++)
        if (g->o.lora_layers[i] == layer) return i;
    return -1;
}

/* The router: every sequence's block, from its query (the module output at
 * its key row). A sequence without a key in this pass (a KV-cached
 * generation step) keeps the block its prompt was routed to. */
static void db_forward(graft_hook *h, graft_run *r, float *act, int dim) {
    melo *g = h->user;
    (void)dim;
    g->last_routed = 0;
    for (int s = 0; s < r->seqs.n; s++) {
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        if (g->force != -2) {
            g->route[s] = g->force;
        } else {
            int t = g->n_key_pos ? (s < g->n_key_pos ? g->key_pos[s] : -1) : e - b - 1;
            if (t >= 0 && t < e - b) g->route[s] = graft_melo_route(&g->base, act + (size_t)(b + t) * g->qd);
        }
        g->last_routed += g->route[s] >= 0;
    }
}

/* y += scale * (x A_m) B_m on every row of a routed sequence (from row0 on:
 * a suffix pass leaves the earlier rows as they are). x A_m is kept for the
 * backward. */
static void lora_forward(graft_hook *h, graft_run *r, float *act, int dim) {
    melo *g = h->user;
    int i = lora_index(g, h->layer), k = g->k, in = g->in;
    const float *x = graft_run_site(r, h->layer, GRAFT_SITE_MLP_IN);
    float hv[64];
    for (int s = 0; s < r->seqs.n; s++) {
        int m = g->route[s];
        if (m < 0 || m >= g->n_blocks) continue;
        const float *A = blk_A(g, m, i), *B = blk_B(g, m, i);
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        for (int row = b > r->row0 ? b : r->row0; row < e; row++) {
            const float *xr = x + (size_t)row * in;
            for (int j = 0; j < k; j++) hv[j] = 0.0f;
            for (int c = 0; c < in; c++) {
                const float *a = A + (size_t)c * k;
                for (int j = 0; j < k; j++) hv[j] += xr[c] * a[j];
            }
            if (row < g->h_cap)
                for (int j = 0; j < k; j++) g->h[i][(size_t)row * k + j] = hv[j];
            float *y = act + (size_t)row * dim;
            for (int j = 0; j < k; j++) {
                float w = g->scale * hv[j];
                const float *bj = B + (size_t)j * g->out;
                for (int o = 0; o < dim; o++) y[o] += w * bj[o];
            }
        }
    }
}

/* dy at the module output: dB += scale h^T dy, dh = scale dy B^T, dA += x^T dh
 * (only for the block being trained); dh is kept for the input gradient. */
static void lora_backward(graft_hook *h, graft_run *r, float *dact, int dim) {
    melo *g = h->user;
    int i = lora_index(g, h->layer), k = g->k, in = g->in;
    const float *x = graft_run_site(r, h->layer, GRAFT_SITE_MLP_IN);
    for (int s = 0; s < r->seqs.n; s++) {
        int m = g->route[s];
        if (m < 0 || m >= g->n_blocks) continue;
        const float *B = blk_B(g, m, i);
        float *gA = m == g->grad_block && g->gblk ? g->gblk + (blk_A(g, m, i) - g->blk[m]) : NULL;
        float *gB = gA ? gA + (size_t)in * k : NULL;
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        for (int row = b > r->row0 ? b : r->row0; row < e && row < g->h_cap; row++) {
            const float *dy = dact + (size_t)row * dim, *hv = g->h[i] + (size_t)row * k;
            float *dh = g->dh[i] + (size_t)row * k;
            for (int j = 0; j < k; j++) {
                const float *bj = B + (size_t)j * g->out;
                float acc = 0.0f;
                for (int o = 0; o < dim; o++) acc += dy[o] * bj[o];
                dh[j] = g->scale * acc;
                if (gB) {
                    float w = g->scale * hv[j];
                    float *gbj = gB + (size_t)j * g->out;
                    for (int o = 0; o < dim; o++) gbj[o] += w * dy[o];
                }
            }
            if (gA) {
                const float *xr = x + (size_t)row * in;
                for (int c = 0; c < in; c++)
                    for (int j = 0; j < k; j++) gA[(size_t)c * k + j] += xr[c] * dh[j];
            }
        }
    }
}

/* The LoRA path's share of the module input's gradient: dx += dh A^T. */
static void lora_in_backward(graft_hook *h, graft_run *r, float *dact, int dim) {
    melo *g = h->user;
    int i = lora_index(g, h->layer), k = g->k;
    for (int s = 0; s < r->seqs.n; s++) {
        int m = g->route[s];
        if (m < 0 || m >= g->n_blocks) continue;
        const float *A = blk_A(g, m, i);
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        for (int row = b > r->row0 ? b : r->row0; row < e && row < g->h_cap; row++) {
            const float *dh = g->dh[i] + (size_t)row * k;
            float *dx = dact + (size_t)row * dim;
            for (int c = 0; c < dim; c++) {
                float acc = 0.0f;
                for (int j = 0; j < k; j++) acc += dh[j] * A[(size_t)c * k + j];
                dx[c] += acc;
            }
        }
    }
}

static graft_status melo_attach(graft_editor *e, graft_run *r) {
    melo *g = (melo *)e;
    if (r->cap + 1 > g->route_cap) {
        int cap = r->cap + 1;
        int *p = realloc(g->route, (size_t)cap * sizeof(int));
        if (!p) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        g->route = p;
        g->route_cap = cap;
    }
    for (int s = 0; s < g->route_cap; s++) g->route[s] = -1;
    if (r->cap > g->h_cap) {
        for (int i = 0; i < g->o.n_lora; i++) {
            float *a = realloc(g->h[i], (size_t)r->cap * g->k * sizeof(float));
            if (a) g->h[i] = a;
            float *b = realloc(g->dh[i], (size_t)r->cap * g->k * sizeof(float));
            if (b) g->dh[i] = b;
            if (!a || !b) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        }
        g->h_cap = r->cap;
    }
    graft_run_remove_hook(r, &g->db_hook);
    graft_run_add_hook(r, &g->db_hook);
    for (int i = 0; i < g->o.n_lora; i++) {
        graft_run_remove_hook(r, &g->pre_hook[i]), graft_run_remove_hook(r, &g->in_hook[i]);
        graft_run_add_hook(r, &g->pre_hook[i]), graft_run_add_hook(r, &g->in_hook[i]);
    }
    return GRAFT_OK;
}

static void melo_detach(graft_editor *e, graft_run *r) {
    melo *g = (melo *)e;
    graft_run_remove_hook(r, &g->db_hook);
    for (int i = 0; i < g->o.n_lora; i++) graft_run_remove_hook(r, &g->pre_hook[i]), graft_run_remove_hook(r, &g->in_hook[i]);
}

static graft_status melo_set_keys(graft_editor *e, const int *key_pos, int n_seq) {
    melo *g = (melo *)e;
    if (n_seq > g->key_pos_cap) {
        int *k = realloc(g->key_pos, (size_t)n_seq * sizeof(int));
        if (!k) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        g->key_pos = k;
        g->key_pos_cap = n_seq;
    }
    if (n_seq) memcpy(g->key_pos, key_pos, (size_t)n_seq * sizeof(int));
    g->n_key_pos = n_seq;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- training */

/* The packed teacher-forced batch of n requests in the editor's train run:
 * prompt + target[:-1] per sequence, the rows from the last prompt token on
 * predicting the target. targets[] receives the concatenated targets. */
static graft_status set_train_batch(melo *g, const graft_edit_tok *reqs, int n, int **targets_out) {
    const graft_config *cfg = &g->base.m->cfg;
    int T = 0, no = 0, maxlen = 0;
    for (int s = 0; s < n; s++) {
        if (reqs[s].n_prompt < 1 || reqs[s].n_target < 1)
            return graft_fail(GRAFT_ERR_INVALID, "MELO: request %d needs a prompt and a target (got %d and %d tokens)", s,
                              reqs[s].n_prompt, reqs[s].n_target);
        int len = reqs[s].n_prompt + reqs[s].n_target - 1;
        if (len > cfg->n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "MELO: request %d has %d tokens; the context is %d", s, len + 1, cfg->n_ctx);
        T += len, no += reqs[s].n_target;
        if (len > maxlen) maxlen = len;
    }
    if (!g->run || g->run_cap < T || g->run_out < no || g->run_len < maxlen) {
        graft_run_free(g->run);
        g->run = NULL;
        int cap = T < 64 ? 64 : T;
        GRAFT_TRY(graft_run_create(g->base.m, cap, no < cap ? cap : no, cap, 1, &g->run));
        g->run_cap = cap, g->run_out = no < cap ? cap : no, g->run_len = cap;
    }
    int *ids = malloc((size_t)T * sizeof(int)), *lens = malloc((size_t)n * sizeof(int));
    int *rows = malloc((size_t)no * sizeof(int)), *tg = malloc((size_t)no * sizeof(int));
    graft_status st = ids && lens && rows && tg ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    for (int s = 0, t = 0, o = 0; st == GRAFT_OK && s < n; s++) {
        const graft_edit_tok *q = &reqs[s];
        memcpy(ids + t, q->prompt, (size_t)q->n_prompt * sizeof(int));
        memcpy(ids + t + q->n_prompt, q->target, (size_t)(q->n_target - 1) * sizeof(int));
        for (int j = 0; j < q->n_target; j++) rows[o] = t + q->n_prompt - 1 + j, tg[o++] = q->target[j];
        lens[s] = q->n_prompt + q->n_target - 1;
        t += lens[s];
    }
    if (st == GRAFT_OK) st = graft_run_set_batch(g->run, ids, lens, n, rows, no);
    free(ids), free(lens), free(rows);
    if (st == GRAFT_OK) *targets_out = tg;
    else free(tg);
    return st;
}

static int first_lora(const melo *g) {
    int l = g->o.lora_layers[0];
    for (int i = 1; i < g->o.n_lora; i++)
        if (g->o.lora_layers[i] < l) l = g->o.lora_layers[i];
    return l;
}

/* Forward the LoRA layers up (routing forced to block m), the loss, and with
 * grad, the block's gradient into gblk. The run holds the batch and a full
 * forward of it. */
static graft_status step_eval(melo *g, const int *tg, int n_out, int m, int grad, double *loss, float *margin) {
    graft_run *r = g->run;
    g->force = m;
    for (int s = 0; s < r->seqs.n; s++) g->route[s] = m;
    int l0 = first_lora(g);
    graft_status st = graft_run_forward_from(r, l0, GRAFT_SITE_MLP_PRE);
    if (st == GRAFT_OK) st = graft_run_loss(r, tg, NULL, loss, NULL);
    if (st == GRAFT_OK && margin) *margin = graft_edit_min_margin(r, tg, n_out, NULL);
    if (st == GRAFT_OK && grad) {
        memset(g->gblk, 0, g->blk_floats * sizeof(float));
        g->grad_block = m;
        st = graft_run_backward(r, tg, NULL, NULL, l0, GRAFT_SITE_MLP_PRE);
        g->grad_block = -1;
    }
    return st;
}

graft_status graft_melo_loss_grad(graft_editor *e, const graft_edit_tok *reqs, int n, int m, double *loss, float **gA,
                                  float **gB) {
    melo *g = (melo *)e;
    if (m < 0 || m >= g->n_blocks) return graft_fail(GRAFT_ERR_RANGE, "MELO: no block %d", m);
    int *tg = NULL, n_out = 0;
    for (int s = 0; s < n; s++) n_out += reqs[s].n_target;
    GRAFT_TRY(set_train_batch(g, reqs, n, &tg));
    graft_status st = melo_attach(e, g->run);
    g->force = -1;
    if (st == GRAFT_OK) st = graft_run_forward(g->run);
    if (st == GRAFT_OK) st = step_eval(g, tg, n_out, m, gA != NULL, loss, NULL);
    for (int i = 0; st == GRAFT_OK && gA && i < g->o.n_lora; i++) {
        const float *ga = g->gblk + (blk_A(g, m, i) - g->blk[m]);
        memcpy(gA[i], ga, (size_t)g->in * g->k * sizeof(float));
        memcpy(gB[i], ga + (size_t)g->in * g->k, (size_t)g->k * g->out * sizeof(float));
    }
    melo_detach(e, g->run);
    g->force = -2;
    free(tg);
    return st;
}

/* ---------------------------------------------------------------- change records */

/* u32 magic, u32 version, i32 block (as numbered when written), i32 n, i32 qd, i32 n_lora, i32 in, i32 k,
 * i32 out, then per request f32 query[qd], i32 n_label, i32 label[n_label],
 * then the block's floats (per LoRA layer A [in*k], B [k*out]). */
static graft_status write_change(const melo *g, int block, const float *queries, const graft_edit_tok *reqs, int n,
                                 graft_blob *b) {
    uint32_t hdr[2] = {CHANGE_MAGIC, CHANGE_VERSION};
    int32_t dims[7] = {block, n, g->qd, g->o.n_lora, g->in, g->k, g->out};
    GRAFT_TRY(graft_blob_put(b, hdr, sizeof hdr));
    GRAFT_TRY(graft_blob_put(b, dims, sizeof dims));
    for (int i = 0; i < n; i++) {
        int32_t nl = reqs[i].n_target;
        GRAFT_TRY(graft_blob_put(b, queries + (size_t)i * g->qd, (size_t)g->qd * sizeof(float)));
        GRAFT_TRY(graft_blob_put(b, &nl, sizeof nl));
        GRAFT_TRY(graft_blob_put(b, reqs[i].target, (size_t)nl * sizeof(int32_t)));
    }
    return graft_blob_put(b, g->blk[block], g->blk_floats * sizeof(float));
}

static graft_status melo_replay(graft_editor *e, const uint8_t *data, size_t len) {
    melo *g = (melo *)e;
    graft_blob_reader rd = {data, len, 0, "MELO change record"};
    uint32_t hdr[2];
    int32_t dims[7];
    GRAFT_TRY(graft_blob_get(&rd, hdr, sizeof hdr));
    if (hdr[0] != CHANGE_MAGIC || hdr[1] != CHANGE_VERSION)
        return graft_fail(GRAFT_ERR_FORMAT, "MELO change record: bad magic/version (%08x, %u)", hdr[0], hdr[1]);
    GRAFT_TRY(graft_blob_get(&rd, dims, sizeof dims));
    if (dims[2] != g->qd || dims[3] != g->o.n_lora || dims[4] != g->in || dims[5] != g->k || dims[6] != g->out)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "MELO change record: shapes (query %d, %d LoRA layers, %d x %d x %d) differ from the editor's "
                          "(%d, %d, %d x %d x %d)",
                          dims[2], dims[3], dims[4], dims[5], dims[6], g->qd, g->o.n_lora, g->in, g->k, g->out);
    /* The block is the next one, whatever number the record was written
     * with: after an undo the batches still live are replayed without the
     * undone one, and every later block moves down by one, its router points
     * with it (they are re-derived from the queries here). */
    int n = dims[1];
    if (n < 1 || (size_t)n > (rd.len - rd.at) / ((size_t)g->qd * sizeof(float)))
        return graft_fail(GRAFT_ERR_FORMAT, "MELO change record: bad request count %d", n);
    float *q = malloc((size_t)n * g->qd * sizeof(float));
    int **labels = calloc((size_t)n, sizeof *labels), *nl = malloc((size_t)n * sizeof(int));
    graft_status st = q && labels && nl ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    for (int i = 0; st == GRAFT_OK && i < n; i++) {
        int32_t k;
        if ((st = graft_blob_get(&rd, q + (size_t)i * g->qd, (size_t)g->qd * sizeof(float)))) break;
        if ((st = graft_blob_get(&rd, &k, sizeof k))) break;
        if (k < 0 || (size_t)k > (rd.len - rd.at) / sizeof(int32_t)) {
            st = graft_fail(GRAFT_ERR_FORMAT, "MELO change record: bad label length %d at byte %zu", k, rd.at);
            break;
        }
        nl[i] = k;
        labels[i] = malloc((size_t)(k ? k : 1) * sizeof(int));
        if (!labels[i]) st = graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
        else st = graft_blob_get(&rd, labels[i], (size_t)k * sizeof(int32_t));
    }
    if (st == GRAFT_OK && rd.len - rd.at != g->blk_floats * sizeof(float))
        st = graft_fail(GRAFT_ERR_FORMAT, "MELO change record: %zu bytes of block weights, want %zu", rd.len - rd.at,
                        g->blk_floats * sizeof(float));
    if (st == GRAFT_OK) st = graft_melo_router_update(e, q, (const int *const *)labels, nl, n, g->n_blocks);
    if (st == GRAFT_OK) st = add_block(g, (const float *)(rd.p + rd.at));
    if (st == GRAFT_OK) e->n_edits += n;
    for (int i = 0; labels && i < n; i++) free(labels[i]);
    free(q), free(labels), free(nl);
    return st;
}

static graft_status melo_reset(graft_editor *e) {
    melo *g = (melo *)e;
    router_free(g);
    blocks_free(g);
    e->n_edits = 0;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- editing */

static graft_status melo_apply_batch(graft_editor *e, const graft_edit_tok *reqs, int n, graft_edit_info *info,
                                     graft_blob *change) {
    melo *g = (melo *)e;
    memset(info, 0, sizeof *info);
    if (n < 1) return graft_fail(GRAFT_ERR_INVALID, "MELO: an empty batch");
    if (g->n_blocks >= g->o.blocks && !g->o.grow)
        return graft_fail(GRAFT_ERR_RANGE,
                          "MELO: all %d blocks are trained (one per edit batch); ask for more with --blocks N or let "
                          "capacity grow with --grow-blocks",
                          g->o.blocks);
    int *tg = NULL, n_out = 0;
    for (int s = 0; s < n; s++) n_out += reqs[s].n_target;
    GRAFT_TRY(set_train_batch(g, reqs, n, &tg));
    graft_run *r = g->run;
    float *q = malloc((size_t)n * g->qd * sizeof(float));
    const int **labels = malloc((size_t)n * sizeof *labels);
    int *nl = malloc((size_t)n * sizeof(int));
    graft_status st = q && labels && nl ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    /* 1. The unedited pass: queries (router layer output at each key row) and the first loss. */
    if (st == GRAFT_OK) st = melo_attach(e, r);
    g->force = -1;
    if (st == GRAFT_OK) st = graft_run_forward(r);
    if (st == GRAFT_OK) st = graft_run_loss(r, tg, NULL, &info->loss_first, NULL);
    for (int s = 0; st == GRAFT_OK && s < n; s++) {
        int key = r->seqs.start[s] + reqs[s].n_prompt - 1;
        memcpy(q + (size_t)s * g->qd, graft_run_site(r, g->o.layer, GRAFT_SITE_MLP_PRE) + (size_t)key * g->qd,
               (size_t)g->qd * sizeof(float));
        labels[s] = reqs[s].target;
        nl[s] = reqs[s].n_target;
    }
    /* 2. The router, once per batch; 3. a new block, trained with the batch routed to it. */
    int m = g->n_blocks, cl0 = g->n_cl, conf0 = g->n_conflicts;
    if (st == GRAFT_OK) st = graft_melo_router_update(e, q, labels, nl, n, m);
    if (st == GRAFT_OK) st = add_block(g, NULL);
    if (st == GRAFT_OK) {
        memset(g->adam_m, 0, g->blk_floats * sizeof(float)); /* Adam re-created per batch */
        memset(g->adam_v, 0, g->blk_floats * sizeof(float));
        float lr = g->o.edit_lr, margin = -INFINITY;
        int fixed = g->o.train == MELO_TRAIN_FIXED, limit = fixed ? g->o.n_iter : g->o.max_iter;
        double loss = info->loss_first;
        for (int it = 0;; it++) {
            int last = it == limit;
            if ((st = step_eval(g, tg, n_out, m, 0, &loss, &margin))) break;
            info->reproduced = margin > 0;
            if (last || (!fixed && margin >= g->o.margin)) break;
            if ((st = step_eval(g, tg, n_out, m, 1, &loss, NULL))) break;
            graft_edit_adam_step(g->blk[m], g->gblk, g->adam_m, g->adam_v, g->blk_floats, it + 1, lr);
            info->iterations = it + 1;
            if (g->o.step_size > 0 && (it + 1) % g->o.step_size == 0) lr *= g->o.gamma;
        }
        info->loss_last = loss;
    }
    melo_detach(e, r);
    g->force = -2;
    info->rows_added = g->n_cl - cl0;
    info->rows_changed = n - info->rows_added + (g->n_conflicts - conf0);
    snprintf(info->action, sizeof info->action, "%s", g->n_conflicts > conf0 ? "split" : g->n_cl - cl0 == n ? "add" : "expand");
    if (st == GRAFT_OK) st = write_change(g, m, q, reqs, n, change);
    if (st == GRAFT_OK) e->n_edits += n;
    if (st != GRAFT_OK && g->n_blocks > m) {
        /* a failed batch leaves no block behind; the router is rebuilt by the
         * caller's reset + replay if it matters (the stream stops anyway) */
        free(g->blk[m]);
        g->n_blocks = m;
    }
    free(q), free(labels), free(nl), free(tg);
    return st;
}

static graft_status melo_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change) {
    return melo_apply_batch(e, req, 1, info, change);
}

/* ---------------------------------------------------------------- export */

static graft_status melo_export(graft_editor *e, const char *path) {
    melo *g = (melo *)e;
    int nb = g->n_blocks, nc = g->n_cl, np = 0;
    size_t nlab = 0;
    for (int c = 0; c < nc; c++) np += g->cl[c].n_pts, nlab += (size_t)g->cl[c].n_label;
    int L = g->o.n_lora;
    size_t na = (size_t)g->in * g->k, nbf = (size_t)g->k * g->out;
    float *A = malloc(((size_t)nb * na + 1) * L * sizeof(float)), *B = malloc(((size_t)nb * nbf + 1) * L * sizeof(float));
    float *cen = malloc(((size_t)nc * g->qd + 1) * sizeof(float)), *rad = malloc(((size_t)nc + 1) * sizeof(float));
    float *pts = malloc(((size_t)np * g->qd + 1) * sizeof(float)), *pb = malloc(((size_t)np + 1) * sizeof(float));
    float *pc = malloc(((size_t)np + 1) * sizeof(float)), *off = malloc(((size_t)nc + 1) * sizeof(float));
    float *lab = malloc((nlab + 1) * sizeof(float));
    graft_status st = A && B && cen && rad && pts && pb && pc && off && lab ? GRAFT_OK
                                                                          : graft_fail(GRAFT_ERR_NOMEM, "MELO export: out of memory");
    if (st == GRAFT_OK) {
        for (int i = 0; i < L; i++)
            for (int m = 0; m < nb; m++) {
                memcpy(A + ((size_t)i * nb + m) * na, blk_A(g, m, i), na * sizeof(float));
                memcpy(B + ((size_t)i * nb + m) * nbf, blk_B(g, m, i), nbf * sizeof(float));
            }
        size_t at = 0, pt = 0;
        for (int c = 0; c < nc; c++) {
            const cluster *C = &g->cl[c];
            memcpy(cen + (size_t)c * g->qd, C->center, (size_t)g->qd * sizeof(float));
            rad[c] = C->radius;
            off[c] = (float)at;
            for (int j = 0; j < C->n_label; j++) lab[at++] = (float)C->label[j]; /* ids < 2^24 are exact */
            for (int p = 0; p < C->n_pts; p++, pt++) {
                memcpy(pts + pt * g->qd, C->pts + (size_t)p * g->qd, (size_t)g->qd * sizeof(float));
                pb[pt] = (float)C->pt_block[p];
                pc[pt] = (float)c;
            }
        }
        off[nc] = (float)at;
        enum { MAXI = 9 + 2 * GRAFT_MELO_MAX_LORA };
        graft_st_write_item items[MAXI];
        char names[2 * GRAFT_MELO_MAX_LORA][48];
        int ni = 0;
        for (int i = 0; i < L; i++) {
            snprintf(names[2 * i], sizeof names[0], "lora.%d.A", g->o.lora_layers[i]);
            snprintf(names[2 * i + 1], sizeof names[0], "lora.%d.B", g->o.lora_layers[i]);
            items[ni++] = (graft_st_write_item){names[2 * i], GRAFT_F32, 3, {nb, g->in, g->k}, A + (size_t)i * nb * na};
            items[ni++] = (graft_st_write_item){names[2 * i + 1], GRAFT_F32, 3, {nb, g->k, g->out}, B + (size_t)i * nb * nbf};
        }
        items[ni++] = (graft_st_write_item){"router.centers", GRAFT_F32, 2, {nc, g->qd}, cen};
        items[ni++] = (graft_st_write_item){"router.radius", GRAFT_F32, 1, {nc}, rad};
        items[ni++] = (graft_st_write_item){"router.points", GRAFT_F32, 2, {np, g->qd}, pts};
        items[ni++] = (graft_st_write_item){"router.point_block", GRAFT_F32, 1, {np}, pb};
        items[ni++] = (graft_st_write_item){"router.point_cluster", GRAFT_F32, 1, {np}, pc};
        items[ni++] = (graft_st_write_item){"router.label_offsets", GRAFT_F32, 1, {nc + 1}, off};
        items[ni++] = (graft_st_write_item){"router.label_ids", GRAFT_F32, 1, {(int64_t)at}, lab};
        char layer[16], scale[32], radius[32];
        snprintf(layer, sizeof layer, "%d", g->o.layer);
        snprintf(scale, sizeof scale, "%.9g", g->scale);
        snprintf(radius, sizeof radius, "%.9g", g->o.init_radius);
        const char *meta[] = {"editor", "melo", "router_layer", layer, "router_site", "mlp_pre", "lora_site", "mlp_pre",
                              "scale", scale, "init_radius", radius};
        st = graft_st_write(path, items, ni, meta, 6);
    }
    free(A), free(B), free(cen), free(rad), free(pts), free(pb), free(pc), free(off), free(lab);
    return st;
}

static void melo_free(graft_editor *e) {
    melo *g = (melo *)e;
    if (!g) return;
    router_free(g);
    blocks_free(g);
    for (int i = 0; i < GRAFT_MELO_MAX_LORA; i++) free(g->h[i]), free(g->dh[i]);
    free(g->key_pos), free(g->route), free(g->gblk), free(g->adam_m), free(g->adam_v);
    graft_run_free(g->run);
    free(g);
}

static const graft_editor_ops melo_ops = {
    .name = "melo",
    .apply = melo_apply,
    .replay = melo_replay,
    .revert = NULL, /* undo = reset + replay: the router update is re-run without the batch */
    .reset = melo_reset,
    .attach = melo_attach,
    .detach = melo_detach,
    .set_keys = melo_set_keys,
    .export_st = melo_export,
    .free = melo_free,
    .apply_batch = melo_apply_batch,
};

/* A default radius per model family, from the router-space distances measured
 * in docs/MELO.md: the query is a pre-activation row whose scale grows with
 * the width, so the default is a fraction of sqrt(d_ff). */
static float default_radius(const graft_config *cfg) { return 0.1f * sqrtf((float)cfg->d_ff); }

graft_status graft_melo_create(graft_model *m, const graft_melo_opts *o, graft_editor **out) {
    *out = NULL;
    melo *g = calloc(1, sizeof *g);
    if (!g) return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    g->base.ops = &melo_ops;
    g->base.m = m;
    if (o)
        g->o = *o;
    else
        graft_melo_opts_default(&g->o);
    const graft_config *cfg = &m->cfg;
    if (g->o.layer < 0) g->o.layer = graft_edit_default_layer(cfg);
    if (g->o.n_lora == 0)
        for (int l = g->o.layer + 1; l < cfg->n_layer && g->o.n_lora < 2; l++) g->o.lora_layers[g->o.n_lora++] = l;
    if (!(g->o.init_radius > 0)) g->o.init_radius = default_radius(cfg);
    const char *bad = NULL;
    if (g->o.layer >= cfg->n_layer) bad = "the router layer is outside the model";
    else if (g->o.n_lora < 1) bad = "no block above the router layer for LoRA";
    else if (g->o.rank < 1 || g->o.rank > 64) bad = "rank must be in [1, 64]";
    else if (g->o.blocks < 1) bad = "blocks must be at least 1";
    else if (!(g->o.edit_lr > 0) || g->o.n_iter < 0 || g->o.max_iter < 0 || !(g->o.gamma > 0)) bad = "lr, gamma > 0 and step counts >= 0";
    for (int i = 0; !bad && i < g->o.n_lora; i++) {
        int l = g->o.lora_layers[i];
        if (l <= g->o.layer || l >= cfg->n_layer) bad = "every LoRA layer must lie above the router layer, inside the model";
        for (int j = 0; j < i && !bad; j++)
            if (g->o.lora_layers[j] == l) bad = "a LoRA layer is listed twice";
    }
    if (bad) {
        int layer = g->o.layer;
        free(g);
        return graft_fail(GRAFT_ERR_INVALID, "MELO: %s (router layer %d, model of %d layers)", bad, layer, cfg->n_layer);
    }
    g->qd = cfg->d_ff; /* the up-projection's output */
    g->in = cfg->d_model;
    g->out = cfg->d_ff;
    g->k = g->o.rank;
    /* the official code scales A_m and B_m by sqrt(num_block) each */
    g->scale = (float)g->o.blocks;
    g->a_bound = 1.0f / sqrtf((float)g->o.blocks * (float)g->k);
    g->blk_floats = (size_t)g->o.n_lora * ((size_t)g->in * g->k + (size_t)g->k * g->out);
    g->force = -2;
    g->grad_block = -1;
    g->db_hook = (graft_hook){.layer = g->o.layer, .site = GRAFT_SITE_MLP_PRE, .forward = db_forward, .user = g};
    for (int i = 0; i < g->o.n_lora; i++) {
        g->pre_hook[i] = (graft_hook){.layer = g->o.lora_layers[i], .site = GRAFT_SITE_MLP_PRE, .forward = lora_forward,
                                      .backward = lora_backward, .user = g};
        g->in_hook[i] = (graft_hook){.layer = g->o.lora_layers[i], .site = GRAFT_SITE_MLP_IN, .backward = lora_in_backward,
                                     .user = g};
    }
    g->gblk = calloc(g->blk_floats, sizeof(float));
    g->adam_m = calloc(g->blk_floats, sizeof(float));
    g->adam_v = calloc(g->blk_floats, sizeof(float));
    g->route = malloc(64 * sizeof(int));
    g->route_cap = 64;
    if (!g->gblk || !g->adam_m || !g->adam_v || !g->route) {
        melo_free(&g->base);
        return graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    }
    for (int s = 0; s < 64; s++) g->route[s] = -1;
    *out = &g->base;
    return GRAFT_OK;
}

graft_status graft_melo_add_random(graft_editor *e, int n, float scale, uint64_t seed) {
    melo *g = (melo *)e;
    float *q = malloc((size_t)g->qd * sizeof(float));
    graft_status st = q ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "MELO: out of memory");
    for (int b = 0; st == GRAFT_OK && b < n; b++) {
        for (int i = 0; i < g->qd; i++) { /* Box-Muller */
            double u1 = graft_edit_uniform01(&seed), u2 = graft_edit_uniform01(&seed);
            q[i] = scale * (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
        }
        int label = b, m = g->n_blocks;
        st = add_cluster(g, q, g->o.init_radius, &label, 1, m);
        if (st == GRAFT_OK) st = add_block(g, NULL);
        for (int i = 0; st == GRAFT_OK && i < g->o.n_lora; i++) {
            float *B = blk_B(g, m, i);
            for (size_t j = 0; j < (size_t)g->k * g->out; j++) B[j] = (float)(graft_edit_uniform01(&seed) - 0.5) * 1e-3f;
        }
    }
    free(q);
    return st;
}

void graft_melo_get_stats(graft_editor *e, graft_melo_stats *s) {
    melo *g = (melo *)e;
    memset(s, 0, sizeof *s);
    s->n_blocks = g->n_blocks;
    s->n_clusters = g->n_cl;
    for (int c = 0; c < g->n_cl; c++) s->n_points += g->cl[c].n_pts;
    s->n_conflicts = g->n_conflicts;
    s->n_forgotten = g->n_forgotten;
    s->query_dim = g->qd;
    s->layer = g->o.layer;
    s->last_routed = g->last_routed;
}

/* ---------------------------------------------------------------- options JSON */

static const char *const train_names[] = {"success", "fixed"};

graft_status graft_melo_opts_from_json(const void *cjson, graft_melo_opts *o, const char *where) {
    graft_melo_opts_default(o);
    const cJSON *it;
    cJSON_ArrayForEach(it, (const cJSON *)cjson) {
        const char *k = it->string;
        int ok = 1, num = cJSON_IsNumber(it);
        if (!strcmp(k, "layer")) ok = num, o->layer = it->valueint;
        else if (!strcmp(k, "rank")) ok = num, o->rank = it->valueint;
        else if (!strcmp(k, "blocks")) ok = num && it->valuedouble >= 1, o->blocks = it->valueint;
        else if (!strcmp(k, "grow")) ok = cJSON_IsBool(it), o->grow = cJSON_IsTrue(it);
        else if (!strcmp(k, "init_radius")) ok = num && it->valuedouble > 0, o->init_radius = (float)it->valuedouble;
        else if (!strcmp(k, "edit_lr")) ok = num, o->edit_lr = (float)it->valuedouble;
        else if (!strcmp(k, "n_iter")) ok = num, o->n_iter = it->valueint;
        else if (!strcmp(k, "step_size")) ok = num, o->step_size = it->valueint;
        else if (!strcmp(k, "gamma")) ok = num, o->gamma = (float)it->valuedouble;
        else if (!strcmp(k, "max_iter")) ok = num, o->max_iter = it->valueint;
        else if (!strcmp(k, "margin")) ok = num && it->valuedouble >= 0, o->margin = (float)it->valuedouble;
        else if (!strcmp(k, "label_sum_compat")) ok = cJSON_IsBool(it), o->label_sum_compat = cJSON_IsTrue(it);
        else if (!strcmp(k, "seed")) ok = num, o->seed = (uint64_t)it->valuedouble;
        else if (!strcmp(k, "train")) {
            ok = cJSON_IsString(it) && (!strcmp(it->valuestring, "success") || !strcmp(it->valuestring, "fixed"));
            if (ok) o->train = strcmp(it->valuestring, "success") ? MELO_TRAIN_FIXED : MELO_TRAIN_SUCCESS;
        } else if (!strcmp(k, "lora_layers")) {
            int n = cJSON_GetArraySize(it);
            ok = cJSON_IsArray(it) && n >= 1 && n <= GRAFT_MELO_MAX_LORA;
            for (int i = 0; ok && i < n; i++) {
                const cJSON *x = cJSON_GetArrayItem(it, i);
                ok = cJSON_IsNumber(x);
                if (ok) o->lora_layers[i] = x->valueint;
            }
            if (ok) o->n_lora = n;
        } else
            return graft_fail(GRAFT_ERR_INVALID, "%s: unknown MELO option '%s'", where, k);
        if (!ok)
            return graft_fail(GRAFT_ERR_INVALID, "%s: MELO option '%s' has a bad value%s", where, k,
                              !strcmp(k, "train") ? " (want success or fixed)"
                              : !strcmp(k, "lora_layers") ? " (want a list of 1 to 8 layer numbers)"
                                                          : "");
    }
    return GRAFT_OK;
}

graft_status graft_melo_opts_to_json(graft_editor *e, void *cjson) {
    const graft_melo_opts *o = &((melo *)e)->o;
    cJSON *j = cjson, *ll = cJSON_CreateArray();
    if (!ll) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    for (int i = 0; i < o->n_lora; i++) graft_json_push(ll, cJSON_CreateNumber(o->lora_layers[i]));
    cJSON_AddNumberToObject(j, "layer", o->layer);
    graft_json_put(j, "lora_layers", ll);
    cJSON_AddNumberToObject(j, "rank", o->rank);
    cJSON_AddNumberToObject(j, "blocks", o->blocks);
    cJSON_AddBoolToObject(j, "grow", o->grow);
    cJSON_AddNumberToObject(j, "init_radius", o->init_radius);
    cJSON_AddNumberToObject(j, "edit_lr", o->edit_lr);
    cJSON_AddStringToObject(j, "train", train_names[o->train]);
    cJSON_AddNumberToObject(j, "n_iter", o->n_iter);
    cJSON_AddNumberToObject(j, "max_iter", o->max_iter);
    cJSON_AddNumberToObject(j, "margin", o->margin);
    cJSON_AddNumberToObject(j, "step_size", o->step_size);
    cJSON_AddNumberToObject(j, "gamma", o->gamma);
    cJSON_AddBoolToObject(j, "label_sum_compat", o->label_sum_compat);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    return GRAFT_OK;
}
