/* grace.c - GRACE (Hartvigsen et al., NeurIPS 2023): a codebook of
 * (key, value, radius) at one layer of a frozen model.
 *
 * A key is the input of the wrapped linear module at the key token; a value
 * replaces that module's output. At inference the query (the module input at
 * the key token) is compared with every key; when the nearest key lies within
 * its radius, its value is written into the output rows the replacement mode
 * names. Otherwise nothing is touched, so the output is bit-identical to the
 * unedited model.
 *
 * Editing follows the official code (shared/docs/algorithms.md section 1):
 * codebook maintenance once per edit (add / split on a label conflict /
 * expand on agreement), then n_iter Adam steps on the one value being
 * trained. graft departs from it only where section 1.8 lists bugs: labels
 * are compared as exact token sequences (mean-of-ids is a compatibility
 * flag), the key position is an explicit argument, and on an exact distance
 * tie the newer entry wins (the official torch.min picks the older one, which
 * makes a re-edit of the same prompt with a new answer ineffective).
 *
 * Speed: the query and everything below the edited layer are fixed during
 * value training, so each step re-runs only the layers from the value site
 * up (graft_run_forward_from) and the backward stops at that site.
 */
#include "editor.h"
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct grace_row {
    float eps;
    int *label;
    int n_label;
    int deleted;
} grace_row;

typedef struct grace {
    graft_editor base;
    graft_grace_opts o;
    graft_site key_site, val_site;
    int kd, vd;
    /* the codebook: rows are never reordered, undo marks them deleted */
    int n, cap;
    float *keys; /* [cap, kd] */
    float *vals; /* [cap, vd] */
    grace_row *rows;
    /* per-batch hook state */
    graft_hook hook;
    int *key_pos, n_key_pos, key_pos_cap; /* n_key_pos 0: last token of every sequence */
    int *match, match_cap;                /* per sequence: the row that replaced, or -1 */
    int last_hits;
    /* editing state */
    int train_row;
    float *vgrad, *adam_m, *adam_v; /* [vd] */
    graft_run *run;
    int run_cap;
} grace;

#define CHANGE_MAGIC 0x45435247u /* "GRCE" */
#define CHANGE_VERSION 1u

/* ---------------------------------------------------------------- options */

void graft_grace_opts_default(graft_grace_opts *o) {
    memset(o, 0, sizeof *o);
    o->layer = -1;
    o->eps_init = 1.0f;
    o->edit_lr = 1.0f;
    o->n_iter = 100;
    o->early_stop = 1;
    o->train = GRACE_TRAIN_SUCCESS;
    o->max_iter = 500;
    o->margin = 0.5f;
    o->init = GRACE_INIT_WARM;
    o->replace = GRACE_REPLACE_UPTO_KEY;
    o->expand = GRACE_EXPAND_COVERAGE;
    o->seed = 42;
}

void graft_grace_sites(const graft_config *cfg, graft_site *key_site, graft_site *value_site) {
    if (cfg->arch == GRAFT_ARCH_GPT2) {
        *key_site = GRAFT_SITE_MLP_IN;
        *value_site = GRAFT_SITE_MLP_PRE;
    } else {
        *key_site = GRAFT_SITE_MLP_ACT;
        *value_site = GRAFT_SITE_MLP_OUT;
    }
}

/* ---------------------------------------------------------------- codebook */

static float sqdist(const float *a, const float *b, int n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int i = 0; i < n; i++) {
        float d = a[i] - b[i];
        acc += d * d;
    }
    return acc;
}

/* Nearest live row to q: index (or -1 when the codebook is empty) and the
 * Euclidean distance. Ties go to the newer row. */
static int nearest(const grace *g, const float *q, float *dist) {
    int best = -1;
    float bd = INFINITY;
    /* Large codebooks are scanned by all threads, each over a contiguous
     * slice; merging the slices in order keeps "ties go to the newer row"
     * whatever the thread count. Hooks run outside any parallel region. */
    if (g->n >= 4096) {
#pragma omp parallel
        {
            int lb = -1;
            float ld = INFINITY;
#pragma omp for schedule(static) nowait
            for (int i = 0; i < g->n; i++) {
                if (g->rows[i].deleted) continue;
                float d = sqdist(q, g->keys + (size_t)i * g->kd, g->kd);
                if (d <= ld) ld = d, lb = i;
            }
#pragma omp critical
            if (lb >= 0 && (ld < bd || (ld == bd && lb > best))) bd = ld, best = lb;
        }
    } else {
        for (int i = 0; i < g->n; i++) {
            if (g->rows[i].deleted) continue;
            float d = sqdist(q, g->keys + (size_t)i * g->kd, g->kd);
            if (d <= bd) bd = d, best = i;
        }
    }
    *dist = best >= 0 ? sqrtf(bd) : INFINITY;
    return best;
}

static int labels_equal(const grace *g, const grace_row *r, const int *label, int n) {
    if (g->o.label_mean_compat) {
        /* the official comparison: mean of the label ids as floats */
        double a = 0, b = 0;
        for (int i = 0; i < r->n_label; i++) a += r->label[i];
        for (int i = 0; i < n; i++) b += label[i];
        return r->n_label && n && (float)(a / r->n_label) == (float)(b / n);
    }
    return r->n_label == n && memcmp(r->label, label, (size_t)n * sizeof *label) == 0;
}

static graft_status grow(grace *g) {
    if (g->n < g->cap) return GRAFT_OK;
    int cap = g->cap ? g->cap * 2 : 64;
    float *k = realloc(g->keys, (size_t)cap * g->kd * sizeof(float));
    if (k) g->keys = k;
    float *v = realloc(g->vals, (size_t)cap * g->vd * sizeof(float));
    if (v) g->vals = v;
    grace_row *r = realloc(g->rows, (size_t)cap * sizeof *r);
    if (r) g->rows = r;
    if (!k || !v || !r) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: cannot grow the codebook to %d entries", cap);
    g->cap = cap;
    return GRAFT_OK;
}

/* Append a row; the label is copied. */
static graft_status add_row(grace *g, const float *key, const float *val, float eps, const int *label, int n_label) {
    GRAFT_TRY(grow(g));
    int i = g->n;
    grace_row *r = &g->rows[i];
    memset(r, 0, sizeof *r);
    r->label = malloc((size_t)(n_label > 0 ? n_label : 1) * sizeof(int));
    if (!r->label) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    if (n_label) memcpy(r->label, label, (size_t)n_label * sizeof(int));
    r->n_label = n_label;
    r->eps = eps;
    memcpy(g->keys + (size_t)i * g->kd, key, (size_t)g->kd * sizeof(float));
    memcpy(g->vals + (size_t)i * g->vd, val, (size_t)g->vd * sizeof(float));
    g->n++;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- the hook */

/* A query counts as inside a radius up to a slack of 1e-4 of its norm. The
 * same prompt computed by another path (KV-cache generation, a packed
 * evaluation batch, the training run) differs in its last bits, and GRACE
 * puts queries exactly on a radius: an expanded ball's edge is the new query
 * (eps = d), and a re-edit of the same prompt with another answer splits at
 * d = 0 (radius 0). Without the slack such an edit holds in the pass that
 * trained it and misses in generation (seen in a 10,000-edit CounterFact
 * stream: 10 of 3,000 edits, every one a split at d = 0 or an expand). */
static float hit_slack(const float *q, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += q[i] * q[i];
    return 1e-4f * sqrtf(s);
}

/* Which rows of sequence s (rows [b, e), key at b + t) a hit overwrites. */
static void replaced_range(const grace *g, int b, int e, int t, int *lo, int *hi) {
    switch (g->o.replace) {
    case GRACE_REPLACE_LAST: *lo = b + t, *hi = b + t + 1; break;
    case GRACE_REPLACE_PROMPT: *lo = b, *hi = b + t; break; /* [0, t): the key row itself is kept */
    case GRACE_REPLACE_UPTO_KEY: *lo = b, *hi = b + t + 1; break;
    default: *lo = b, *hi = e; break;
    }
}

static void grace_forward(graft_hook *h, graft_run *r, float *act, int dim) {
    grace *g = h->user;
    const float *qbase = graft_run_site(r, h->layer, g->key_site);
    int ns = r->seqs.n;
    g->last_hits = 0;
    for (int s = 0; s < ns; s++) {
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        int t = g->n_key_pos ? (s < g->n_key_pos ? g->key_pos[s] : -1) : e - b - 1;
        g->match[s] = -1;
        if (t < 0 || t >= e - b || g->n == 0) continue;
        float d;
        const float *q = qbase + (size_t)(b + t) * g->kd;
        int j = nearest(g, q, &d);
        if (j < 0 || !(d <= g->rows[j].eps + hit_slack(q, g->kd))) continue;
        g->match[s] = j;
        g->last_hits++;
        int lo, hi;
        replaced_range(g, b, e, t, &lo, &hi);
        for (int row = lo; row < hi; row++)
            memcpy(act + (size_t)row * dim, g->vals + (size_t)j * g->vd, (size_t)dim * sizeof(float));
    }
}

/* Replaced rows depend on nothing below: their gradient goes to the value
 * being trained (if it is that row's value) and stops here. */
static void grace_backward(graft_hook *h, graft_run *r, float *dact, int dim) {
    grace *g = h->user;
    for (int s = 0; s < r->seqs.n; s++) {
        int j = g->match[s];
        if (j < 0) continue;
        int b = r->seqs.start[s], e = r->seqs.start[s + 1];
        int t = g->n_key_pos ? g->key_pos[s] : e - b - 1;
        int lo, hi;
        replaced_range(g, b, e, t, &lo, &hi);
        for (int row = lo; row < hi; row++) {
            float *d = dact + (size_t)row * dim;
            if (j == g->train_row && g->vgrad)
                for (int i = 0; i < dim; i++) g->vgrad[i] += d[i];
            memset(d, 0, (size_t)dim * sizeof(float));
        }
    }
}

/* A run holds at most cap sequences, so match[] sized by cap never overflows. */
static graft_status grace_attach(graft_editor *e, graft_run *r) {
    grace *g = (grace *)e;
    if (r->cap + 1 > g->match_cap) {
        int cap = r->cap + 1;
        int *m = realloc(g->match, (size_t)cap * sizeof(int));
        if (!m) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
        g->match = m;
        g->match_cap = cap;
    }
    graft_run_remove_hook(r, &g->hook);
    graft_run_add_hook(r, &g->hook);
    return GRAFT_OK;
}

static void grace_detach(graft_editor *e, graft_run *r) { graft_run_remove_hook(r, &((grace *)e)->hook); }

static graft_status grace_set_keys(graft_editor *e, const int *key_pos, int n_seq) {
    grace *g = (grace *)e;
    if (n_seq > g->key_pos_cap) {
        int *k = realloc(g->key_pos, (size_t)n_seq * sizeof(int));
        if (!k) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
        g->key_pos = k;
        g->key_pos_cap = n_seq;
    }
    if (n_seq) memcpy(g->key_pos, key_pos, (size_t)n_seq * sizeof(int));
    g->n_key_pos = n_seq;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- change records */

/* Record layout (little-endian, native floats):
 *   u32 magic, u32 version, u32 n_entries, then per entry
 *   i32 row, u8 is_new,
 *   [if !is_new] f32 old_eps, f32 old_key[kd], f32 old_val[vd]
 *   f32 new_eps, f32 new_key[kd], f32 new_val[vd], i32 n_label, i32 label[n_label] */
typedef struct snapshot {
    int row, is_new;
    float eps;
    float *key, *val;
} snapshot;

static graft_status snap_take(const grace *g, int row, int is_new, snapshot *s) {
    s->row = row;
    s->is_new = is_new;
    s->key = malloc((size_t)g->kd * sizeof(float));
    s->val = malloc((size_t)g->vd * sizeof(float));
    if (!s->key || !s->val) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    if (!is_new) {
        s->eps = g->rows[row].eps;
        memcpy(s->key, g->keys + (size_t)row * g->kd, (size_t)g->kd * sizeof(float));
        memcpy(s->val, g->vals + (size_t)row * g->vd, (size_t)g->vd * sizeof(float));
    }
    return GRAFT_OK;
}

static void snap_free(snapshot *s) {
    free(s->key);
    free(s->val);
    s->key = s->val = NULL;
}

static graft_status write_change(const grace *g, snapshot *snaps, int n, graft_blob *b) {
    uint32_t hdr[3] = {CHANGE_MAGIC, CHANGE_VERSION, (uint32_t)n};
    GRAFT_TRY(graft_blob_put(b, hdr, sizeof hdr));
    for (int i = 0; i < n; i++) {
        snapshot *s = &snaps[i];
        int32_t row = s->row;
        uint8_t is_new = (uint8_t)s->is_new;
        GRAFT_TRY(graft_blob_put(b, &row, sizeof row));
        GRAFT_TRY(graft_blob_put(b, &is_new, 1));
        if (!is_new) {
            GRAFT_TRY(graft_blob_put(b, &s->eps, sizeof(float)));
            GRAFT_TRY(graft_blob_put(b, s->key, (size_t)g->kd * sizeof(float)));
            GRAFT_TRY(graft_blob_put(b, s->val, (size_t)g->vd * sizeof(float)));
        }
        const grace_row *r = &g->rows[s->row];
        int32_t nl = r->n_label;
        GRAFT_TRY(graft_blob_put(b, &r->eps, sizeof(float)));
        GRAFT_TRY(graft_blob_put(b, g->keys + (size_t)s->row * g->kd, (size_t)g->kd * sizeof(float)));
        GRAFT_TRY(graft_blob_put(b, g->vals + (size_t)s->row * g->vd, (size_t)g->vd * sizeof(float)));
        GRAFT_TRY(graft_blob_put(b, &nl, sizeof nl));
        GRAFT_TRY(graft_blob_put(b, r->label, (size_t)nl * sizeof(int32_t)));
    }
    return GRAFT_OK;
}

/* Walk a change record; apply the new state (replay) or the old one (revert;
 * revert == 2: forget, an apply that was never journaled: its new rows are
 * dropped rather than marked deleted, since no later record names them). */
static graft_status apply_change(grace *g, const uint8_t *data, size_t len, int revert) {
    int first_new = g->n;
    graft_blob_reader rd = {data, len, 0, "GRACE change record"};
    uint32_t hdr[3];
    GRAFT_TRY(graft_blob_get(&rd, hdr, sizeof hdr));
    if (hdr[0] != CHANGE_MAGIC || hdr[1] != CHANGE_VERSION)
        return graft_fail(GRAFT_ERR_FORMAT, "GRACE change record: bad magic/version (%08x, %u)", hdr[0], hdr[1]);
    size_t kb = (size_t)g->kd * sizeof(float), vb = (size_t)g->vd * sizeof(float);
    float *key = malloc(kb), *val = malloc(vb), *okey = malloc(kb), *oval = malloc(vb);
    int *label = NULL;
    graft_status st = (key && val && okey && oval) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    for (uint32_t i = 0; st == GRAFT_OK && i < hdr[2]; i++) {
        int32_t row, nl;
        uint8_t is_new;
        float eps, oeps = 0;
        if ((st = graft_blob_get(&rd, &row, sizeof row)) || (st = graft_blob_get(&rd, &is_new, 1))) break;
        if (!is_new && ((st = graft_blob_get(&rd, &oeps, sizeof oeps)) || (st = graft_blob_get(&rd, okey, kb)) ||
                        (st = graft_blob_get(&rd, oval, vb))))
            break;
        if ((st = graft_blob_get(&rd, &eps, sizeof eps)) || (st = graft_blob_get(&rd, key, kb)) ||
            (st = graft_blob_get(&rd, val, vb)) || (st = graft_blob_get(&rd, &nl, sizeof nl)))
            break;
        if (nl < 0 || (size_t)nl > (rd.len - rd.at) / sizeof(int32_t)) {
            st = graft_fail(GRAFT_ERR_FORMAT, "GRACE change record: truncated or bad label length %d at byte %zu", nl, rd.at);
            break;
        }
        free(label);
        label = malloc((size_t)(nl ? nl : 1) * sizeof(int));
        if (!label || (st = graft_blob_get(&rd, label, (size_t)nl * sizeof(int32_t)))) {
            if (!label) st = graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
            break;
        }
        if (!revert) {
            if (is_new) {
                if (row != g->n) {
                    st = graft_fail(GRAFT_ERR_FORMAT, "GRACE change record adds row %d but the codebook has %d rows", row,
                                    g->n);
                    break;
                }
                st = add_row(g, key, val, eps, label, nl);
            } else if (row < 0 || row >= g->n) {
                st = graft_fail(GRAFT_ERR_FORMAT, "GRACE change record changes row %d of %d", row, g->n);
            } else {
                g->rows[row].eps = eps;
                memcpy(g->keys + (size_t)row * g->kd, key, kb);
                memcpy(g->vals + (size_t)row * g->vd, val, vb);
            }
        } else {
            if (row < 0 || row >= g->n) {
                st = graft_fail(GRAFT_ERR_FORMAT, "GRACE undo: row %d of %d", row, g->n);
            } else if (is_new && revert == 2) {
                if (row < first_new) first_new = row;
            } else if (is_new) {
                g->rows[row].deleted = 1; /* rows keep their index: later records name them */
            } else {
                g->rows[row].eps = oeps;
                memcpy(g->keys + (size_t)row * g->kd, okey, kb);
                memcpy(g->vals + (size_t)row * g->vd, oval, vb);
            }
        }
    }
    if (st == GRAFT_OK && rd.at != rd.len)
        st = graft_fail(GRAFT_ERR_FORMAT, "GRACE change record: %zu trailing bytes", rd.len - rd.at);
    /* an apply appends its new rows at the end: forgetting it drops them */
    if (st == GRAFT_OK && revert == 2) {
        for (int i = first_new; i < g->n; i++) free(g->rows[i].label);
        g->n = first_new;
    }
    free(key), free(val), free(okey), free(oval), free(label);
    return st;
}

static graft_status grace_replay(graft_editor *e, const uint8_t *d, size_t n) {
    GRAFT_TRY(apply_change((grace *)e, d, n, 0));
    e->n_edits++;
    return GRAFT_OK;
}

static graft_status grace_revert(graft_editor *e, const uint8_t *d, size_t n) { return apply_change((grace *)e, d, n, 1); }

/* the apply counted itself in n_edits (which seeds a cold value): so does the forget */
static graft_status grace_forget(graft_editor *e, const uint8_t *d, size_t n) {
    GRAFT_TRY(apply_change((grace *)e, d, n, 2));
    e->n_edits--;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- editing */

static graft_status ensure_run(grace *g, int T) {
    if (g->run && g->run_cap >= T) return GRAFT_OK;
    graft_run_free(g->run);
    g->run = NULL;
    int cap = T < 64 ? 64 : T;
    GRAFT_TRY(graft_run_create(g->base.m, cap, cap, cap, 1, &g->run));
    g->run_cap = cap;
    return GRAFT_OK;
}

/* One training evaluation: the layers from the value site up (only the rows
 * from the replaced one on, see train_value), the loss and the margin. */
static graft_status value_eval(grace *g, graft_run *r, const graft_edit_tok *req, double *loss, float *margin,
                               float *lead) {
    GRAFT_TRY(g->o.full_passes ? graft_run_forward(r) : graft_run_forward_from(r, g->o.layer, g->val_site));
    GRAFT_TRY(graft_run_loss(r, req->target, NULL, loss, NULL));
    *margin = graft_edit_min_margin(r, req->target, req->n_target, lead);
    return GRAFT_OK;
}

/* One Adam step on the value; w: per-position loss weights (NULL: the mean). */
static graft_status value_step(grace *g, graft_run *r, const graft_edit_tok *req, const float *w, float *val, int t,
                               float lr) {
    memset(g->vgrad, 0, (size_t)g->vd * sizeof(float));
    /* the backward stops at the value either way: autograd in the reference
     * implementations also ends at the trained tensor */
    GRAFT_TRY(graft_run_backward(r, req->target, w, NULL, g->o.layer, g->val_site));
    graft_edit_adam_step(val, g->vgrad, g->adam_m, g->adam_v, g->vd, t, lr);
    return GRAFT_OK;
}

/* Does greedy generation through the editor, as `graft edit` measures edit
 * success, produce the target? The training run's hook is detached meanwhile
 * (a hook sits in one run's list at a time). */
static graft_status generates_target(grace *g, graft_run *r, const graft_edit_tok *req, int key, int *ok) {
    graft_editor *e = &g->base;
    int *gen = malloc((size_t)req->n_target * sizeof(int));
    if (!gen) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    graft_eval_item it = {(int *)req->prompt, req->n_prompt, (int *)req->target, req->n_target};
    grace_detach(e, r);
    int saved = g->train_row;
    g->train_row = -1;
    graft_status st = graft_eval_gen(e->m, e, &it, 1, gen);
    g->train_row = saved;
    *ok = st == GRAFT_OK && !memcmp(gen, req->target, (size_t)req->n_target * sizeof(int));
    free(gen);
    if (st == GRAFT_OK) st = grace_attach(e, r);
    if (st == GRAFT_OK) st = grace_set_keys(e, &key, 1);
    return st;
}

/*
 * Train row c's value for the request (the run holds its teacher-forced
 * batch, unedited activations cached). The value enters at the replaced rows
 * and causal attention keeps every earlier row as it is, so each step
 * recomputes only the layers from the value site up, and in them only the
 * rows from the first replaced one on (a suffix pass), with activation
 * gradients only: the weights are frozen.
 *
 * fixed (the official loop): Adam at a constant rate for n_iter steps,
 * stopping early once the teacher-forced argmax is the target.
 *
 * success (graft's default): an attempt trains with Adam and halves its rate
 * whenever the loss has not improved for a while; it succeeds once every
 * target position leads by `margin` and greedy generation through the editor
 * (exactly what edit success measures) produces the target. A failed attempt
 * is retried from the other initialisation (v_alt; NULL: the row's value
 * before this edit), within max_iter steps in all. When every attempt fails
 * the value of lowest loss is kept and the edit is reported not reproduced.
 * docs/GRACE.md gives the measurements behind these choices.
 */
#define PLATEAU_STEPS 8    /* steps without a 1% better loss before the rate halves */
#define RATE_HALVINGS 5    /* an attempt ends after this many */
#define SHORT_WEIGHT 4.0f  /* extra loss weight of a position short of the margin */
static graft_status train_value(grace *g, graft_run *r, const graft_edit_tok *req, int c, int key, const float *v_alt,
                                graft_edit_info *info) {
    graft_editor *e = &g->base;
    float *val = g->vals + (size_t)c * g->vd;
    size_t vb = (size_t)g->vd * sizeof(float);
    int lo, hi, first_out = req->n_prompt - 1;
    replaced_range(g, 0, r->T, key, &lo, &hi);
    float *start = malloc(vb), *best = malloc(vb), *lead = malloc(2 * (size_t)req->n_target * sizeof(float));
    float *w = lead ? lead + req->n_target : NULL;
    if (!start || !best || !lead) {
        free(start), free(best), free(lead);
        return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    }
    memcpy(start, val, vb);
    graft_status st = grace_attach(e, r);
    if (st == GRAFT_OK) st = grace_set_keys(e, &key, 1);
    if (st == GRAFT_OK && !g->o.full_passes) st = graft_run_set_row0(r, lo < first_out ? lo : first_out);
    g->train_row = c;
    double loss = 0, best_loss = INFINITY;
    float margin = -INFINITY;
    int fixed = g->o.train == GRACE_TRAIN_FIXED, attempts = fixed ? 1 : 2, steps = 0;
    info->reproduced = 0;
    for (int a = 0; st == GRAFT_OK && a < attempts && !info->reproduced; a++) {
        if (a == 1) memcpy(val, v_alt ? v_alt : start, vb);
        memset(g->adam_m, 0, vb);
        memset(g->adam_v, 0, vb);
        float lr = g->o.edit_lr, want = g->o.margin;
        double att_best = INFINITY;
        int since = 0, halvings = 0;
        for (int it = 0;; it++) {
            if ((st = value_eval(g, r, req, &loss, &margin, lead))) break;
            if (loss < best_loss) best_loss = loss, memcpy(best, val, vb);
            if (fixed) {
                info->reproduced = margin > 0;
                if (it == g->o.n_iter || (g->o.early_stop && info->reproduced)) break;
            } else {
                if (margin >= want) {
                    int ok = 0;
                    if ((st = generates_target(g, r, req, key, &ok))) break;
                    if (ok) {
                        info->reproduced = 1;
                        break;
                    }
                    want = 2 * want + 0.1f; /* rounding between the two passes: lead by more */
                }
                if (loss < 0.99 * att_best) att_best = loss, since = 0;
                else if (++since >= PLATEAU_STEPS) {
                    lr *= 0.5f, since = 0;
                    if (++halvings > RATE_HALVINGS) break;
                }
                if (steps >= (a + 1) * g->o.max_iter / attempts) break; /* each attempt its share */
            }
            /* success: the positions still short of the margin weigh more
             * (a mean over many target tokens dilutes the one that is stuck) */
            if (!fixed) {
                double sum = 0;
                for (int i = 0; i < req->n_target; i++) sum += w[i] = 1.0f + (lead[i] < want ? SHORT_WEIGHT : 0.0f);
                for (int i = 0; i < req->n_target; i++) w[i] = (float)(w[i] / sum);
            }
            if ((st = value_step(g, r, req, fixed ? NULL : w, val, it + 1, lr))) break;
            steps++;
        }
    }
    /* a failure keeps the value of lowest loss (re-evaluated so the reported
     * loss is that value's), and says whether generation gives the target
     * after all (a lead below the margin is still a lead) */
    if (st == GRAFT_OK && !info->reproduced && !fixed) {
        if (best_loss < loss) {
            memcpy(val, best, vb);
            st = value_eval(g, r, req, &loss, &margin, lead);
        }
        if (st == GRAFT_OK && margin > 0) st = generates_target(g, r, req, key, &info->reproduced);
    }
    info->iterations = steps;
    info->loss_last = loss;
    g->train_row = -1;
    grace_detach(e, r);
    grace_set_keys(e, NULL, 0);
    free(start), free(best), free(lead);
    return st;
}

static graft_status grace_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info,
                                graft_blob *change) {
    grace *g = (grace *)e;
    const graft_config *cfg = &e->m->cfg;
    memset(info, 0, sizeof *info);
    if (req->n_prompt < 1 || req->n_target < 1)
        return graft_fail(GRAFT_ERR_INVALID, "GRACE: an edit needs a prompt and a target (got %d and %d tokens)",
                          req->n_prompt, req->n_target);
    int T = req->n_prompt + req->n_target - 1;
    if (T > cfg->n_ctx)
        return graft_fail(GRAFT_ERR_RANGE, "GRACE: prompt + target is %d tokens; the context is %d", T + 1, cfg->n_ctx);
    GRAFT_TRY(ensure_run(g, T));
    graft_run *r = g->run;

    /* Teacher forcing: input prompt + target[:-1]; the rows from the key
     * token on predict the target tokens. */
    int *ids = malloc((size_t)T * sizeof(int)), *rows = malloc((size_t)req->n_target * sizeof(int));
    snapshot snaps[2];
    memset(snaps, 0, sizeof snaps);
    int n_snaps = 0;
    graft_status st = (ids && rows) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    if (st != GRAFT_OK) goto done;
    memcpy(ids, req->prompt, (size_t)req->n_prompt * sizeof(int));
    memcpy(ids + req->n_prompt, req->target, (size_t)(req->n_target - 1) * sizeof(int));
    for (int i = 0; i < req->n_target; i++) rows[i] = req->n_prompt - 1 + i;
    int t = req->n_prompt - 1 + e->key_after_prompt;
    if (t >= T) {
        st = graft_fail(GRAFT_ERR_INVALID, "GRACE: the key is the first target token, so the target needs 2+ tokens");
        goto done;
    }
    if ((st = graft_run_set_batch(r, ids, &T, 1, rows, req->n_target))) goto done;

    /* 1. The unedited pass (hook detached): query, warm value, first loss. */
    grace_detach(e, r);
    if ((st = graft_run_forward(r))) goto done;
    if ((st = graft_run_loss(r, req->target, NULL, &info->loss_first, NULL))) goto done;
    float *q = malloc((size_t)g->kd * sizeof(float)), *v0 = malloc((size_t)g->vd * sizeof(float));
    if (!q || !v0) {
        free(q), free(v0);
        st = graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
        goto done;
    }
    memcpy(q, graft_run_site(r, g->o.layer, g->key_site) + (size_t)t * g->kd, (size_t)g->kd * sizeof(float));
    if (g->o.init == GRACE_INIT_WARM)
        memcpy(v0, graft_run_site(r, g->o.layer, g->val_site) + (size_t)t * g->vd, (size_t)g->vd * sizeof(float));
    else {
        /* seeded by (seed, edit index), not a running state: a stream resumed
         * from its journal draws exactly what an uninterrupted one would */
        uint64_t rng = g->o.seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(e->n_edits + 1));
        for (int i = 0; i < g->vd; i++) v0[i] = (float)graft_edit_uniform01(&rng);
    }

    /* 2. Codebook maintenance, once per edit. */
    float d;
    int j = nearest(g, q, &d), c;
    if (j < 0 || d > g->o.eps_init + g->rows[j].eps) {
        st = snap_take(g, g->n, 1, &snaps[n_snaps++]);
        if (st == GRAFT_OK) st = add_row(g, q, v0, g->o.eps_init, req->target, req->n_target);
        c = g->n - 1;
        snprintf(info->action, sizeof info->action, "add");
        info->rows_added = 1;
    } else if (!labels_equal(g, &g->rows[j], req->target, req->n_target)) {
        /* conflict: both balls shrink to touch halfway */
        st = snap_take(g, j, 0, &snaps[n_snaps++]);
        if (st == GRAFT_OK) st = snap_take(g, g->n, 1, &snaps[n_snaps++]);
        if (st == GRAFT_OK) st = add_row(g, q, v0, d / 2.0f, req->target, req->n_target);
        if (st == GRAFT_OK) g->rows[j].eps = d / 2.0f - 1e-5f;
        c = g->n - 1;
        snprintf(info->action, sizeof info->action, "split");
        info->rows_added = 1;
        info->rows_changed = 1;
    } else {
        /* same answer: grow the nearest ball to cover the query, train its value further */
        st = snap_take(g, j, 0, &snaps[n_snaps++]);
        if (st == GRAFT_OK && d > g->rows[j].eps) {
            if (g->o.expand == GRACE_EXPAND_MOVING_AVERAGE) {
                float *k = g->keys + (size_t)j * g->kd;
                for (int i = 0; i < g->kd; i++) k[i] = 0.5f * k[i] + 0.5f * q[i];
            }
            g->rows[j].eps = d;
        }
        c = j;
        snprintf(info->action, sizeof info->action, "expand");
        info->rows_changed = 1;
    }
    free(q);
    if (st != GRAFT_OK) {
        free(v0);
        goto done;
    }
    /* A retry starts from the other initialisation: the layer's own output
     * when the first was cold, a cold draw when it was warm; an expanded row
     * restarts from its value before this edit. */
    float *v_alt = c == j ? NULL : v0; /* c == j: expand */
    if (c == j)
        ;
    else if (g->o.init == GRACE_INIT_COLD)
        memcpy(v0, graft_run_site(r, g->o.layer, g->val_site) + (size_t)t * g->vd, (size_t)g->vd * sizeof(float));
    else {
        uint64_t rng = g->o.seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(e->n_edits + 1));
        for (int i = 0; i < g->vd; i++) v0[i] = (float)graft_edit_uniform01(&rng);
    }

    /* 3. Train the value (train_value). */
    if (st == GRAFT_OK) st = train_value(g, r, req, c, t, v_alt, info);
    free(v0);
    if (st == GRAFT_OK) st = write_change(g, snaps, n_snaps, change);
    if (st == GRAFT_OK) e->n_edits++;
done:
    for (int i = 0; i < n_snaps; i++) snap_free(&snaps[i]);
    free(ids);
    free(rows);
    return st;
}

/* ---------------------------------------------------------------- export */

static graft_status grace_export(graft_editor *e, const char *path) {
    grace *g = (grace *)e;
    int n = g->n > 0 ? g->n : 0;
    size_t total_labels = 0;
    for (int i = 0; i < n; i++) total_labels += (size_t)g->rows[i].n_label;
    float *eps = malloc(((size_t)n + 1) * sizeof(float)), *del = malloc(((size_t)n + 1) * sizeof(float));
    float *off = malloc(((size_t)n + 1) * sizeof(float)), *lab = malloc((total_labels + 1) * sizeof(float));
    graft_status st = (eps && del && off && lab) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "GRACE export: out of memory");
    if (st == GRAFT_OK) {
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            eps[i] = g->rows[i].eps;
            del[i] = (float)g->rows[i].deleted;
            off[i] = (float)at;
            /* token ids < 2^24 are exact in F32; safetensors keeps one dtype family here */
            for (int k = 0; k < g->rows[i].n_label; k++) lab[at++] = (float)g->rows[i].label[k];
        }
        off[n] = (float)at;
        char layer[16], kd[16], vd[16];
        snprintf(layer, sizeof layer, "%d", g->o.layer);
        snprintf(kd, sizeof kd, "%d", g->kd);
        snprintf(vd, sizeof vd, "%d", g->vd);
        const char *meta[] = {"editor", "grace", "layer", layer, "key_site", graft_site_name(g->key_site), "value_site",
                              graft_site_name(g->val_site), "key_dim", kd, "value_dim", vd};
        graft_st_write_item items[] = {
            {"keys", GRAFT_F32, 2, {n, g->kd}, g->keys},
            {"values", GRAFT_F32, 2, {n, g->vd}, g->vals},
            {"eps", GRAFT_F32, 1, {n}, eps},
            {"deleted", GRAFT_F32, 1, {n}, del},
            {"label_offsets", GRAFT_F32, 1, {n + 1}, off},
            {"label_ids", GRAFT_F32, 1, {(int64_t)at}, lab},
        };
        st = graft_st_write(path, items, 6, meta, 6);
    }
    free(eps), free(del), free(off), free(lab);
    return st;
}

static void grace_free(graft_editor *e) {
    grace *g = (grace *)e;
    if (!g) return;
    for (int i = 0; i < g->n; i++) free(g->rows[i].label);
    free(g->rows), free(g->keys), free(g->vals);
    free(g->key_pos), free(g->match);
    free(g->vgrad), free(g->adam_m), free(g->adam_v);
    graft_run_free(g->run);
    free(g);
}

static const graft_editor_ops grace_ops = {
    .name = "grace",
    .apply = grace_apply,
    .replay = grace_replay,
    .revert = grace_revert,
    .forget = grace_forget,
    .reset = NULL, /* rows are index-addressed: undo reverts in place instead */
    .attach = grace_attach,
    .detach = grace_detach,
    .set_keys = grace_set_keys,
    .export_st = grace_export,
    .free = grace_free,
};

graft_status graft_grace_create(graft_model *m, const graft_grace_opts *o, graft_editor **out) {
    *out = NULL;
    grace *g = calloc(1, sizeof *g);
    if (!g) return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    g->base.ops = &grace_ops;
    g->base.m = m;
    if (o)
        g->o = *o;
    else
        graft_grace_opts_default(&g->o);
    const graft_config *cfg = &m->cfg;
    if (g->o.layer < 0) g->o.layer = graft_edit_default_layer(cfg);
    if (g->o.layer >= cfg->n_layer || g->o.n_iter < 0 || !(g->o.eps_init > 0) || !(g->o.edit_lr > 0)) {
        int layer = g->o.layer;
        free(g);
        return graft_fail(GRAFT_ERR_INVALID, "GRACE: layer %d outside [0, %d), or n_iter < 0, eps <= 0, lr <= 0", layer,
                          cfg->n_layer);
    }
    graft_grace_sites(cfg, &g->key_site, &g->val_site);
    g->kd = graft_site_dim(cfg, g->key_site);
    g->vd = graft_site_dim(cfg, g->val_site);
    g->base.key_after_prompt = g->o.key_target_first ? 1 : 0;
    g->base.gen_differs = g->o.key_target_first || g->o.replace == GRACE_REPLACE_ALL;
    g->train_row = -1;
    g->hook.layer = g->o.layer;
    g->hook.site = g->val_site;
    g->hook.forward = grace_forward;
    g->hook.backward = grace_backward;
    g->hook.user = g;
    g->vgrad = calloc((size_t)g->vd, sizeof(float));
    g->adam_m = calloc((size_t)g->vd, sizeof(float));
    g->adam_v = calloc((size_t)g->vd, sizeof(float));
    g->match = calloc(64, sizeof(int));
    g->match_cap = 64;
    if (!g->vgrad || !g->adam_m || !g->adam_v || !g->match) {
        grace_free(&g->base);
        return graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    }
    *out = &g->base;
    return GRAFT_OK;
}

void graft_grace_get_opts(graft_editor *e, graft_grace_opts *o) { *o = ((grace *)e)->o; }

graft_status graft_grace_add_random_rows(graft_editor *e, int n, float scale, float eps, uint64_t seed) {
    grace *g = (grace *)e;
    float *key = malloc((size_t)g->kd * sizeof(float)), *val = calloc((size_t)g->vd, sizeof(float));
    int label = 0;
    graft_status st = (key && val) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "GRACE: out of memory");
    for (int i = 0; st == GRAFT_OK && i < n; i++) {
        for (int k = 0; k < g->kd; k++) { /* Box-Muller */
            double u1 = graft_edit_uniform01(&seed), u2 = graft_edit_uniform01(&seed);
            key[k] = scale * (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
        }
        label = i;
        st = add_row(g, key, val, eps, &label, 1);
    }
    free(key), free(val);
    return st;
}

void graft_grace_get_stats(graft_editor *e, graft_grace_stats *s) {
    grace *g = (grace *)e;
    memset(s, 0, sizeof *s);
    for (int i = 0; i < g->n; i++) s->n_keys += !g->rows[i].deleted;
    s->n_rows = g->n;
    s->key_dim = g->kd;
    s->value_dim = g->vd;
    s->layer = g->o.layer;
    s->last_hits = g->last_hits;
}

graft_status graft_grace_row(graft_editor *e, int i, const float **key, const float **value, float *eps,
                             const int **label, int *n_label, int *deleted) {
    grace *g = (grace *)e;
    if (i < 0 || i >= g->n) return graft_fail(GRAFT_ERR_RANGE, "GRACE: no row %d (codebook has %d)", i, g->n);
    *key = g->keys + (size_t)i * g->kd;
    *value = g->vals + (size_t)i * g->vd;
    *eps = g->rows[i].eps;
    *label = g->rows[i].label;
    *n_label = g->rows[i].n_label;
    *deleted = g->rows[i].deleted;
    return GRAFT_OK;
}
