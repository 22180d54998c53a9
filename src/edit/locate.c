/* locate.c - machinery shared by the closed-form weight editors (locate.h):
 * context templates, v* optimisation, key probes, covariance factors,
 * low-rank updates with base copies, change records. */
#include "locate.h"

#include "linalg.h"
#include "stats.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEDIT_MAGIC 0x54444557u /* "WEDT" */
#define WEDIT_VERSION 1u
#define N_DIAG 11 /* doubles per request in a change record (graft_wedit_diag) */
#define PROBE_BUDGET 4096 /* tokens per probe forward */

/* ---------------------------------------------------------------- names and defaults */

const char *graft_wedit_method_name(graft_wedit_method m) {
    switch (m) {
    case GRAFT_WEDIT_ROME: return "rome";
    case GRAFT_WEDIT_MEMIT: return "memit";
    case GRAFT_WEDIT_EMMET: return "emmet";
    }
    return "?";
}

graft_wedit_method graft_wedit_method_parse(const char *name) {
    if (!strcmp(name, "rome")) return GRAFT_WEDIT_ROME;
    if (!strcmp(name, "memit")) return GRAFT_WEDIT_MEMIT;
    if (!strcmp(name, "emmet")) return GRAFT_WEDIT_EMMET;
    return (graft_wedit_method)0;
}

void graft_wedit_opts_default(graft_wedit_method meth, graft_wedit_opts *o) {
    memset(o, 0, sizeof *o);
    o->v_steps = 20;
    o->v_lr = 0.5f;
    o->kl_factor = 0.0625f;
    o->weight_decay = 0.5f;
    o->template_len = 10;
    o->seed = 42;
    o->rrome = 1;
    if (meth == GRAFT_WEDIT_ROME) {
        o->clamp = 4.0f;
        o->n_templates = 20;
    } else {
        o->clamp = 0.75f;
        o->n_templates = 5;
        o->mom2_update_weight = meth == GRAFT_WEDIT_MEMIT ? 20000.0 : 10000.0;
        o->emmet_lambda = meth == GRAFT_WEDIT_EMMET ? 0.1 : 0.0;
    }
}

int graft_wedit_center_layer(const graft_config *cfg) {
    int c = (int)floor(cfg->n_layer / 3.0 + 0.5);
    return c < 0 ? 0 : (c >= cfg->n_layer ? cfg->n_layer - 1 : c);
}

static int layer_range(const graft_config *cfg, int lo, int hi, int *layers) {
    int n = 0;
    for (int l = lo; l <= hi; l++)
        if (l >= 0 && l < cfg->n_layer) layers[n++] = l;
    return n;
}

int graft_wedit_default_layers(graft_wedit_method meth, const graft_config *cfg, int *layers) {
    int c = graft_wedit_center_layer(cfg);
    /* MEMIT spreads over three layers around ROME's (GPT-2 small: 3-5, the
     * depth ratio of the official GPT2-XL 13-17); ROME and EMMET edit one */
    return meth == GRAFT_WEDIT_MEMIT ? layer_range(cfg, c - 1, c + 1, layers) : layer_range(cfg, c, c, layers);
}

int graft_wedit_stats_layers(const graft_config *cfg, int *layers) {
    int c = graft_wedit_center_layer(cfg);
    return layer_range(cfg, c - 1, c + 1, layers);
}

/* ---------------------------------------------------------------- MEMIT / EMMET solve */

graft_status graft_lowrank_solve(const double *chol, double m_scale, int F, int C, int n, const double *K,
                                 const double *res, int emmet, double lambda_e, double *U, double *X) {
    if (n <= 0 || !(m_scale > 0)) return graft_fail(GRAFT_ERR_INVALID, "low-rank solve: %d keys, scale %g", n, m_scale);
    /* X = M^-1 K, one key per row */
    memcpy(X, K, (size_t)n * F * sizeof(double));
    if (chol) graft_chol_solve(chol, F, X, n);
    for (size_t i = 0; i < (size_t)n * F; i++) X[i] /= m_scale;
    /* D = K^T X (+ I for MEMIT, + lambda_e I for EMMET), n x n */
    double *D = malloc((size_t)n * n * sizeof(double)), *B = malloc((size_t)C * n * sizeof(double));
    if (!D || !B) {
        free(D), free(B);
        return graft_fail(GRAFT_ERR_NOMEM, "low-rank solve: out of memory");
    }
    graft_dgemm_nt(K, X, D, n, n, F);
    for (int i = 0; i < n; i++) D[(size_t)i * n + i] += emmet ? lambda_e : 1.0;
    /* U = Res D^-1: each output row o (a length-n row vector r_o) solves
     * D^T u_o^T = r_o^T. Transpose D in place, gather the C right-hand sides. */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double t = D[(size_t)i * n + j];
            D[(size_t)i * n + j] = D[(size_t)j * n + i];
            D[(size_t)j * n + i] = t;
        }
    for (int o = 0; o < C; o++)
        for (int j = 0; j < n; j++) B[(size_t)o * n + j] = res[(size_t)j * C + o];
    graft_status st = graft_lu_solve(D, n, B, C);
    if (st == GRAFT_OK)
        for (int o = 0; o < C; o++)
            for (int j = 0; j < n; j++) U[(size_t)j * C + o] = B[(size_t)o * n + j];
    else
        graft_fail_prefix(st, "%s: the %d x %d system of the keys", emmet ? "EMMET" : "MEMIT", n, n);
    free(D), free(B);
    return st;
}

/* ---------------------------------------------------------------- small helpers */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static int valid_id(const graft_config *cfg, int id) { return id >= 0 && id < cfg->vocab_size; }

static double norm2f(const float *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

int graft_wedit_subject(const graft_edit_tok *req) {
    return (req->subject_last >= 0 && req->subject_last < req->n_prompt) ? req->subject_last : req->n_prompt - 1;
}

/* ---------------------------------------------------------------- context templates */

static void tpl_free(graft_templates *t) {
    free(t->off), free(t->len), free(t->ids), free(t->weight);
    memset(t, 0, sizeof *t);
}

static graft_status tpl_alloc(graft_templates *t, int n, int n_ids) {
    t->off = calloc((size_t)n, sizeof(int));
    t->len = calloc((size_t)n, sizeof(int));
    t->ids = calloc((size_t)(n_ids > 0 ? n_ids : 1), sizeof(int));
    t->weight = calloc((size_t)n, sizeof(double));
    if (!t->off || !t->len || !t->ids || !t->weight) {
        tpl_free(t);
        return graft_fail(GRAFT_ERR_NOMEM, "templates: out of memory");
    }
    t->n = n;
    t->n_ids = n_ids;
    return GRAFT_OK;
}

/* Template j applied to a request: [BOS] + prefix_j + prompt (the prompt's
 * own BOS, if it has the one templates share, stays in front). The subject
 * row moves by the prefix length. Returns the length. */
static int tpl_build(const graft_templates *t, int j, const graft_edit_tok *req, int *ids, int *subj) {
    int k = 0, p0 = 0;
    if (t->bos >= 0 && req->n_prompt > 0 && req->prompt[0] == t->bos) ids[k++] = t->bos, p0 = 1;
    memcpy(ids + k, t->ids + t->off[j], (size_t)t->len[j] * sizeof(int));
    k += t->len[j];
    memcpy(ids + k, req->prompt + p0, (size_t)(req->n_prompt - p0) * sizeof(int));
    *subj = graft_wedit_subject(req) + t->len[j];
    return k + req->n_prompt - p0;
}

static int tpl_max_len(const graft_templates *t) {
    int mx = 0;
    for (int j = 0; j < t->n; j++) mx = t->len[j] > mx ? t->len[j] : mx;
    return mx;
}

/* Tokens of "." as it follows a word: tokenize("Hello.") minus tokenize("Hello"). */
static int sep_tokens(graft_tokenizer *tok, int *out, int max) {
    int *a = NULL, *b = NULL, n = 0;
    size_t na = 0, nb = 0;
    if (graft_tokenize(tok, "Hello", 5, &a, &na) == GRAFT_OK && graft_tokenize(tok, "Hello.", 6, &b, &nb) == GRAFT_OK &&
        nb > na && memcmp(a, b, na * sizeof(int)) == 0)
        for (size_t i = na; i < nb && n < max; i++) out[n++] = b[i];
    free(a), free(b);
    graft_clear_error();
    return n;
}

/* top-k = 5 sampling from one logits row, as ROME's generate_fast does */
static int sample_topk(const float *logits, int V, uint64_t *rng) {
    enum { K = 5 };
    int idx[K];
    int k = 0;
    for (int v = 0; v < V; v++) {
        if (k < K) {
            int p = k++;
            while (p > 0 && logits[idx[p - 1]] < logits[v]) idx[p] = idx[p - 1], p--;
            idx[p] = v;
        } else if (logits[v] > logits[idx[K - 1]]) {
            int p = K - 1;
            while (p > 0 && logits[idx[p - 1]] < logits[v]) idx[p] = idx[p - 1], p--;
            idx[p] = v;
        }
    }
    double pr[K], sum = 0;
    for (int i = 0; i < k; i++) sum += pr[i] = exp((double)logits[idx[i]] - logits[idx[0]]);
    double u = rng_uniform(rng) * sum;
    for (int i = 0; i < k; i++) {
        if (u < pr[i]) return idx[i];
        u -= pr[i];
    }
    return idx[k - 1];
}

/*
 * Generate the templates once, with the weights as they are (the editor is
 * created on the unedited model). ROME: n sampled continuations of the
 * end-of-text / BOS token, half of length template_len/2 and half of
 * template_len (lengths count the start token), each + "."; uniform key
 * weights over "{}" and them. MEMIT/EMMET: one continuation of length
 * template_len per start word ("The", "Therefore", "Because", "I", "You",
 * cycled), + "."; "{}" weighs 1/2 and each generated prefix 1/(2n).
 */
static graft_status tpl_generate(graft_wedit *w) {
    graft_model *m = w->base.m;
    const graft_config *cfg = &m->cfg;
    graft_tokenizer *tok = graft_model_tokenizer(m);
    int V = cfg->vocab_size, n_gen = w->o.n_templates, L = w->o.template_len;
    int rome = w->method == GRAFT_WEDIT_ROME;
    int bos = (cfg->arch == GRAFT_ARCH_LLAMA && valid_id(cfg, cfg->bos_id)) ? cfg->bos_id : -1;
    int start_special = bos >= 0 ? bos : valid_id(cfg, cfg->eos_id) ? cfg->eos_id : valid_id(cfg, cfg->bos_id) ? cfg->bos_id : 0;
    static const char *const words[5] = {"The", "Therefore", "Because", "I", "You"};
    int sep[8], n_sep = tok ? sep_tokens(tok, sep, 8) : 0;

    /* start sequences: [special?] + word tokens */
    int maxlen = L + 16;
    int *seq = calloc((size_t)(n_gen > 0 ? n_gen : 1) * maxlen, sizeof(int));
    int *cur = calloc((size_t)(n_gen > 0 ? n_gen : 1), sizeof(int)), *want = calloc((size_t)(n_gen > 0 ? n_gen : 1), sizeof(int));
    int *skip = calloc((size_t)(n_gen > 0 ? n_gen : 1), sizeof(int));
    graft_status st = (seq && cur && want && skip) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "templates: out of memory");
    for (int g = 0; st == GRAFT_OK && g < n_gen; g++) {
        int *s = seq + (size_t)g * maxlen, k = 0, *wt = NULL;
        size_t nw = 0;
        if (!rome && tok && graft_tokenize(tok, words[g % 5], strlen(words[g % 5]), &wt, &nw) == GRAFT_OK && nw > 0 &&
            nw < 8) {
            if (bos >= 0) s[k++] = bos;
            skip[g] = k;
            for (size_t i = 0; i < nw; i++) s[k++] = wt[i];
        } else {
            s[k++] = start_special;
            skip[g] = 1;
        }
        free(wt);
        graft_clear_error();
        int out_len = rome ? (g < n_gen / 2 ? L / 2 : L) : L;
        int n_new = out_len - k;
        if (n_new < 1) n_new = 1;
        cur[g] = k;
        want[g] = k + n_new;
    }
    /* all sequences advance together: one packed forward per step */
    uint64_t rng = w->o.seed * 0x2545F4914F6CDD1Dull + 0x1234567ull;
    graft_run *r = NULL;
    int *ids = NULL, *lens = NULL, *rows = NULL, *who = NULL;
    if (st == GRAFT_OK && n_gen > 0) {
        int cap = n_gen * maxlen;
        st = graft_run_create(m, cap, n_gen, maxlen, 0, &r);
        ids = malloc((size_t)cap * sizeof(int));
        lens = malloc((size_t)n_gen * sizeof(int));
        rows = malloc((size_t)n_gen * sizeof(int));
        who = malloc((size_t)n_gen * sizeof(int));
        if (st == GRAFT_OK && (!ids || !lens || !rows || !who)) st = graft_fail(GRAFT_ERR_NOMEM, "templates: out of memory");
    }
    while (st == GRAFT_OK && n_gen > 0) {
        int ns = 0, T = 0;
        for (int g = 0; g < n_gen; g++) {
            if (cur[g] >= want[g]) continue;
            memcpy(ids + T, seq + (size_t)g * maxlen, (size_t)cur[g] * sizeof(int));
            lens[ns] = cur[g];
            T += cur[g];
            rows[ns] = T - 1;
            who[ns++] = g;
        }
        if (ns == 0) break;
        st = graft_run_set_batch(r, ids, lens, ns, rows, ns);
        if (st == GRAFT_OK) st = graft_run_forward(r);
        for (int i = 0; st == GRAFT_OK && i < ns; i++) {
            int g = who[i];
            seq[(size_t)g * maxlen + cur[g]++] = sample_topk(r->logits + (size_t)i * V, V, &rng);
        }
    }
    graft_run_free(r);
    free(ids), free(lens), free(rows), free(who);

    /* the prefixes: generated text without the start special token and
     * without end-of-text tokens inside it, then the separator */
    graft_templates *t = &w->tpl;
    if (st == GRAFT_OK) st = tpl_alloc(t, 1 + n_gen, n_gen * (maxlen + n_sep));
    if (st == GRAFT_OK) {
        t->bos = bos;
        int at = 0;
        for (int g = 0; g < n_gen; g++) {
            int j = 1 + g;
            t->off[j] = at;
            for (int i = skip[g]; i < cur[g]; i++) {
                int id = seq[(size_t)g * maxlen + i];
                if ((valid_id(cfg, cfg->eos_id) && id == cfg->eos_id) || (valid_id(cfg, cfg->bos_id) && id == cfg->bos_id))
                    continue;
                t->ids[at++] = id;
            }
            for (int i = 0; i < n_sep; i++) t->ids[at++] = sep[i];
            t->len[j] = at - t->off[j];
        }
        t->n_ids = at;
        for (int j = 0; j < t->n; j++)
            t->weight[j] = rome || n_gen == 0 ? 1.0 / t->n : (j == 0 ? 0.5 : 0.5 / n_gen);
        w->have_tpl = 1;
    }
    free(seq), free(cur), free(want), free(skip);
    return st;
}

graft_status graft_wedit_templates(graft_wedit *w) {
    if (w->have_tpl) return GRAFT_OK;
    return tpl_generate(w);
}

/* ---------------------------------------------------------------- v* */

typedef struct vs_ctx {
    graft_hook dh, kh;
    const int *rows; /* subject rows of every prompt (the KL prompt's too) */
    int n_rows;
    const float *delta;
    float *grad;
    int kl_row;        /* the KL prompt's subject row, or -1 */
    const float *g_h;  /* dKL/d(top block output) at kl_row, or NULL */
    int inject_here;   /* the edited layer is the top one: dh injects too */
} vs_ctx;

static void vs_dh_forward(graft_hook *h, graft_run *r, float *act, int dim) {
    vs_ctx *c = h->user;
    for (int i = 0; i < c->n_rows; i++) {
        float *a = act + (size_t)c->rows[i] * dim;
        for (int k = 0; k < dim; k++) a[k] += c->delta[k];
    }
}

/* The KL term's gradient enters at the top block's output: into the residual
 * gradient (flowing to the attention branch and below) and into the MLP
 * branch's copy, exactly as if the loss had produced it. */
static void vs_inject(vs_ctx *c, graft_run *r, float *dact, int dim) {
    if (!c->g_h || c->kl_row < 0) return;
    float *dr = r->d_resid + (size_t)c->kl_row * dim, *da = dact + (size_t)c->kl_row * dim;
    for (int k = 0; k < dim; k++) dr[k] += c->g_h[k], da[k] += c->g_h[k];
}

static void vs_dh_backward(graft_hook *h, graft_run *r, float *dact, int dim) {
    vs_ctx *c = h->user;
    if (c->inject_here) vs_inject(c, r, dact, dim);
    for (int i = 0; i < c->n_rows; i++) {
        const float *d = dact + (size_t)c->rows[i] * dim;
        for (int k = 0; k < dim; k++) c->grad[k] += d[k];
    }
}

static void vs_kh_backward(graft_hook *h, graft_run *r, float *dact, int dim) { vs_inject(h->user, r, dact, dim); }

/* log-softmax of one logits row, in double */
static void log_softmax(const float *z, int V, double *out) {
    double mx = z[0];
    for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++) out[v] = (double)z[v] - lse;
}

void graft_vstar_free(graft_vstar *vs) {
    free(vs->v_init), free(vs->delta), free(vs->keys), free(vs->outs);
    memset(vs, 0, sizeof *vs);
}

/* Everything one v* optimisation needs: the packed batch of rewriting
 * prompts and the KL prompt in a train-mode run, and scratch. */
typedef struct vs_state {
    graft_wedit *w;
    int layer, nT, n_out, C, V;
    int *ids, *lens, *rows, *tg, *subj;
    float *wts, *grad, *gz, *dlnf, *gh;
    double *lp0, *lp;
    double vn2; /* |v_init|^2 */
    graft_run *r;
    vs_ctx c;
} vs_state;

static void vs_free(vs_state *v) {
    graft_run_free(v->r);
    free(v->ids), free(v->lens), free(v->rows), free(v->tg), free(v->subj);
    free(v->wts), free(v->grad), free(v->gz), free(v->dlnf), free(v->gh), free(v->lp0), free(v->lp);
    memset(v, 0, sizeof *v);
}

/* Build the batch, run the unedited pass (keys, outputs, v_init, the KL
 * reference p_0) and install the hooks. vs receives keys/outs/v_init and a
 * zero delta. */
static graft_status vs_setup(vs_state *v, graft_wedit *w, int layer, int resid, const graft_edit_tok *req, graft_vstar *vs) {
    memset(v, 0, sizeof *v);
    memset(vs, 0, sizeof *vs);
    graft_model *m = w->base.m;
    const graft_config *cfg = &m->cfg;
    int C = w->C, F = w->F, V = cfg->vocab_size, top = cfg->n_layer - 1;
    const graft_templates *t = &w->tpl;
    int nT = t->n, nt = req->n_target, s = graft_wedit_subject(req);
    v->w = w, v->layer = layer, v->nT = nT, v->C = C, v->V = V;
    /* the rewriting prompts T(P) + y[:-1], then the KL prompt: the prompt up
     * to the subject (causal: what follows it never reaches its row) */
    int T = 0, maxlen = 0;
    for (int j = 0; j < nT; j++) {
        int len = t->len[j] + req->n_prompt + nt - 1;
        if (len > cfg->n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "v*: template %d + prompt + target is %d tokens; the context is %d", j, len,
                              cfg->n_ctx);
        T += len;
        maxlen = len > maxlen ? len : maxlen;
    }
    T += s + 1;
    int n_seq = nT + 1, n_out = nT * nt + 1;
    v->n_out = n_out;
    v->ids = malloc((size_t)T * sizeof(int));
    v->lens = malloc((size_t)n_seq * sizeof(int));
    v->rows = malloc((size_t)n_out * sizeof(int));
    v->tg = malloc((size_t)n_out * sizeof(int));
    v->subj = malloc((size_t)n_seq * sizeof(int));
    v->wts = malloc((size_t)n_out * sizeof(float));
    v->grad = calloc((size_t)C, sizeof(float));
    v->gz = malloc((size_t)V * sizeof(float));
    v->dlnf = malloc((size_t)C * sizeof(float));
    v->gh = malloc((size_t)C * sizeof(float));
    v->lp0 = malloc((size_t)V * sizeof(double));
    v->lp = malloc((size_t)V * sizeof(double));
    vs->v_init = calloc((size_t)C, sizeof(float));
    vs->delta = calloc((size_t)C, sizeof(float));
    vs->keys = malloc((size_t)nT * F * sizeof(float));
    vs->outs = malloc((size_t)nT * C * sizeof(float));
    if (!v->ids || !v->lens || !v->rows || !v->tg || !v->subj || !v->wts || !v->grad || !v->gz || !v->dlnf || !v->gh ||
        !v->lp0 || !v->lp || !vs->v_init || !vs->delta || !vs->keys || !vs->outs)
        return graft_fail(GRAFT_ERR_NOMEM, "v*: out of memory");
    int at = 0, o = 0;
    for (int j = 0; j < nT; j++) {
        int sr, plen = tpl_build(t, j, req, v->ids + at, &sr);
        memcpy(v->ids + at + plen, req->target, (size_t)(nt - 1) * sizeof(int));
        v->lens[j] = plen + nt - 1;
        v->subj[j] = at + sr;
        for (int i = 0; i < nt; i++) {
            v->rows[o] = at + plen - 1 + i;
            v->tg[o] = req->target[i];
            v->wts[o++] = 1.0f / (float)(nt * nT);
        }
        at += v->lens[j];
    }
    memcpy(v->ids + at, req->prompt, (size_t)(s + 1) * sizeof(int));
    v->lens[nT] = s + 1;
    v->subj[nT] = at + s;
    v->rows[o] = at + s;
    v->tg[o] = -1;
    v->wts[o] = 0.0f;
    GRAFT_TRY(graft_run_create(m, T, n_out, maxlen > s + 1 ? maxlen : s + 1, 1, &v->r));
    graft_run *r = v->r;
    GRAFT_TRY(graft_run_set_batch(r, v->ids, v->lens, n_seq, v->rows, n_out));

    GRAFT_TRY(graft_run_forward(r));
    const float *act = graft_run_site(r, layer, GRAFT_SITE_MLP_ACT), *mo = r->layers[layer].mlp_out;
    for (int j = 0; j < nT; j++) {
        memcpy(vs->keys + (size_t)j * F, act + (size_t)v->subj[j] * F, (size_t)F * sizeof(float));
        memcpy(vs->outs + (size_t)j * C, mo + (size_t)v->subj[j] * C, (size_t)C * sizeof(float));
    }
    memcpy(vs->v_init, resid ? r->layers[layer].out + (size_t)v->subj[0] * C : vs->outs, (size_t)C * sizeof(float));
    vs->nT = nT;
    log_softmax(r->logits + (size_t)(n_out - 1) * V, V, v->lp0);
    double vn = norm2f(vs->v_init, C);
    v->vn2 = vn * vn;

    vs_ctx *c = &v->c;
    c->rows = v->subj;
    c->n_rows = n_seq;
    c->delta = vs->delta;
    c->grad = v->grad;
    c->kl_row = w->o.kl_factor > 0 ? v->subj[nT] : -1;
    c->g_h = w->o.kl_factor > 0 ? v->gh : NULL;
    c->inject_here = layer == top;
    c->dh = (graft_hook){.layer = layer, .site = GRAFT_SITE_MLP_OUT, .forward = vs_dh_forward, .backward = vs_dh_backward, .user = c};
    c->kh = (graft_hook){.layer = top, .site = GRAFT_SITE_MLP_OUT, .backward = vs_kh_backward, .user = c};
    graft_run_add_hook(r, &c->dh);
    if (c->g_h && layer != top) graft_run_add_hook(r, &c->kh);
    return GRAFT_OK;
}

/* The objective at delta (which the hook adds; it must be vs->delta's storage):
 *   L = mean_j NLL_j + kl_factor KL(p_delta || p_0) + weight_decay |delta| / |v_init|^2 */
static graft_status vs_loss(vs_state *v, const float *delta, double *loss) {
    graft_wedit *w = v->w;
    graft_model *m = w->base.m;
    const graft_config *cfg = &m->cfg;
    graft_run *r = v->r;
    int C = v->C, V = v->V;
    GRAFT_TRY(graft_run_forward_from(r, v->layer, GRAFT_SITE_MLP_OUT));
    double nll;
    GRAFT_TRY(graft_run_loss(r, v->tg, v->wts, &nll, NULL));
    /* KL(p_delta || p_0) at the subject of the KL prompt, and its gradient
     * w.r.t. the logits: p (log p - log p0 - KL), scaled by kl_factor */
    double kl = 0;
    if (v->c.g_h) {
        int ko = v->n_out - 1;
        log_softmax(r->logits + (size_t)ko * V, V, v->lp);
        for (int i = 0; i < V; i++) kl += exp(v->lp[i]) * (v->lp[i] - v->lp0[i]);
        for (int i = 0; i < V; i++) v->gz[i] = (float)(w->o.kl_factor * exp(v->lp[i]) * (v->lp[i] - v->lp0[i] - kl));
        /* back through the LM head and the final norm to the top block's
         * output, where the backward hook injects it */
        memset(v->dlnf, 0, (size_t)C * sizeof(float));
        graft_linear_backward_dx_w(v->dlnf, v->gz, m->w.lm_head_m, 1, C, V, GRAFT_W_NK);
        memset(v->gh, 0, (size_t)C * sizeof(float));
        if (cfg->arch == GRAFT_ARCH_GPT2)
            graft_layernorm_backward(v->gh, NULL, NULL, v->dlnf, r->head_in + (size_t)ko * C, m->w.lnf_w, r->lnf_mean + ko,
                                     r->lnf_rstd + ko, 1, C);
        else
            graft_rmsnorm_backward(v->gh, NULL, v->dlnf, r->head_in + (size_t)ko * C, m->w.lnf_w, r->lnf_rstd + ko, 1, C);
    }
    double dn = norm2f(delta, C);
    *loss = nll + w->o.kl_factor * kl + (v->vn2 > 0 ? w->o.weight_decay * dn / v->vn2 : 0);
    return GRAFT_OK;
}

/* dL/d(delta) into v->grad, after vs_loss at the same delta. */
static graft_status vs_grad(vs_state *v, const float *delta) {
    int C = v->C;
    memset(v->grad, 0, (size_t)C * sizeof(float));
    GRAFT_TRY(graft_run_backward(v->r, v->tg, v->wts, NULL, v->layer, GRAFT_SITE_MLP_OUT));
    double dn = norm2f(delta, C), wd = v->w->o.weight_decay;
    if (dn > 0 && v->vn2 > 0)
        for (int k = 0; k < C; k++) v->grad[k] += (float)(wd * delta[k] / (dn * v->vn2));
    return GRAFT_OK;
}

graft_status graft_wedit_vstar(graft_wedit *w, int layer, int resid, const graft_edit_tok *req, graft_vstar *vs) {
    vs_state v;
    int C = w->C;
    graft_status st = vs_setup(&v, w, layer, resid, req, vs);
    float *am = calloc((size_t)C, sizeof(float)), *av = calloc((size_t)C, sizeof(float));
    if (st == GRAFT_OK && (!am || !av)) st = graft_fail(GRAFT_ERR_NOMEM, "v*: out of memory");
    vs->loss_first = vs->loss_last = NAN;
    double max_norm = st == GRAFT_OK ? w->o.clamp * sqrt(v.vn2) : 0;
    float *delta = vs->delta;
    for (int it = 0; st == GRAFT_OK && it < w->o.v_steps; it++) {
        /* the reference loop: compute L; stop below 0.05 or at the last step
         * (so at most steps - 1 updates); else backward, Adam, projection */
        double loss;
        if ((st = vs_loss(&v, delta, &loss))) break;
        if (it == 0) vs->loss_first = loss;
        vs->loss_last = loss;
        if (loss < 5e-2 || it == w->o.v_steps - 1) break;
        if ((st = vs_grad(&v, delta))) break;
        /* Adam, PyTorch defaults (beta 0.9 / 0.999, eps 1e-8) */
        int step = it + 1;
        double c1 = 1.0 - pow(0.9, step), c2 = 1.0 - pow(0.999, step);
        for (int k = 0; k < C; k++) {
            float g = v.grad[k];
            am[k] = 0.9f * am[k] + 0.1f * g;
            av[k] = 0.999f * av[k] + 0.001f * g * g;
            delta[k] -= (float)(w->o.v_lr * (am[k] / c1) / (sqrt(av[k] / c2) + 1e-8));
        }
        vs->steps = step;
        /* projection onto the ball |delta| <= clamp |v_init| */
        double nd = norm2f(delta, C);
        if (nd > max_norm && nd > 0)
            for (int k = 0; k < C; k++) delta[k] = (float)(delta[k] * (max_norm / nd));
    }
    free(am), free(av);
    vs_free(&v);
    if (st != GRAFT_OK) graft_vstar_free(vs);
    return st;
}

graft_status graft_wedit_vstar_objective(graft_wedit *w, int layer, int resid, const graft_edit_tok *req, const float *delta,
                                         double *loss, float *grad) {
    GRAFT_TRY(graft_wedit_templates(w));
    vs_state v;
    graft_vstar vs;
    graft_status st = vs_setup(&v, w, layer, resid, req, &vs);
    if (st == GRAFT_OK) {
        memcpy(vs.delta, delta, (size_t)w->C * sizeof(float));
        st = vs_loss(&v, vs.delta, loss);
    }
    if (st == GRAFT_OK && grad) {
        st = vs_grad(&v, vs.delta);
        if (st == GRAFT_OK) memcpy(grad, v.grad, (size_t)w->C * sizeof(float));
    }
    vs_free(&v);
    graft_vstar_free(&vs);
    return st;
}

/* ---------------------------------------------------------------- key probes */

typedef struct probe_ctx {
    graft_hook kh, hh;
    int ns;
    const int *subj, *req_of, *tpl_of;
    const double *weight;
    double *K, *H;
    int F, C;
} probe_ctx;

static void probe_key(graft_hook *h, graft_run *r, float *act, int dim) {
    probe_ctx *p = h->user;
    for (int s = 0; s < p->ns; s++) {
        double wt = p->weight[p->tpl_of[s]];
        double *k = p->K + (size_t)p->req_of[s] * dim;
        const float *a = act + (size_t)p->subj[s] * dim;
        for (int i = 0; i < dim; i++) k[i] += wt * a[i];
    }
}

/* the block output is mid + mlp_out, added in float as the block does */
static void probe_out(graft_hook *h, graft_run *r, float *act, int dim) {
    probe_ctx *p = h->user;
    const float *mid = r->layers[h->layer].mid;
    for (int s = 0; s < p->ns; s++) {
        if (p->tpl_of[s] != 0) continue;
        size_t row = (size_t)p->subj[s] * dim;
        double *o = p->H + (size_t)p->req_of[s] * dim;
        for (int i = 0; i < dim; i++) o[i] = (double)(mid[row + i] + act[row + i]);
    }
}

graft_status graft_wedit_probe(graft_wedit *w, const graft_edit_tok *reqs, int n, int key_layer, double *K, int h_layer,
                               double *H) {
    graft_model *m = w->base.m;
    const graft_config *cfg = &m->cfg;
    const graft_templates *t = &w->tpl;
    int nT = t->n, maxlen = 0;
    for (int i = 0; i < n; i++) {
        int len = tpl_max_len(t) + reqs[i].n_prompt;
        if (len > cfg->n_ctx) return graft_fail(GRAFT_ERR_RANGE, "keys: template + prompt is %d tokens; the context is %d", len, cfg->n_ctx);
        maxlen = len > maxlen ? len : maxlen;
    }
    memset(K, 0, (size_t)n * w->F * sizeof(double));
    if (H) memset(H, 0, (size_t)n * w->C * sizeof(double));
    int cap = PROBE_BUDGET > maxlen ? PROBE_BUDGET : maxlen;
    int total = n * nT;
    /* only the layers up to the highest probed one run: a shallow model copy
     * with fewer layers shares every weight */
    graft_model shallow = *m;
    int hi = key_layer > h_layer ? key_layer : h_layer;
    shallow.cfg.n_layer = hi + 1;
    graft_run *r = NULL;
    GRAFT_TRY(graft_run_create(&shallow, cap, 1, maxlen, 0, &r));
    int *ids = malloc((size_t)cap * sizeof(int)), *lens = malloc((size_t)cap * sizeof(int));
    int *subj = malloc((size_t)cap * sizeof(int)), *req_of = malloc((size_t)cap * sizeof(int)), *tpl_of = malloc((size_t)cap * sizeof(int));
    graft_status st = (ids && lens && subj && req_of && tpl_of) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "keys: out of memory");
    probe_ctx p = {.subj = subj, .req_of = req_of, .tpl_of = tpl_of, .weight = t->weight, .K = K, .H = H, .F = w->F, .C = w->C};
    p.kh = (graft_hook){.layer = key_layer, .site = GRAFT_SITE_MLP_ACT, .forward = probe_key, .user = &p};
    p.hh = (graft_hook){.layer = h_layer, .site = GRAFT_SITE_MLP_OUT, .forward = probe_out, .user = &p};
    graft_run_add_hook(r, &p.kh);
    if (H) graft_run_add_hook(r, &p.hh);
    int done = 0;
    while (st == GRAFT_OK && done < total) {
        int T = 0, ns = 0;
        while (done + ns < total) {
            int q = (done + ns) / nT, j = (done + ns) % nT;
            int len = t->len[j] + reqs[q].n_prompt;
            if (T + len > cap) break;
            int sr;
            tpl_build(t, j, &reqs[q], ids + T, &sr);
            subj[ns] = T + sr;
            req_of[ns] = q;
            tpl_of[ns] = j;
            lens[ns++] = len;
            T += len;
        }
        p.ns = ns;
        int last = T - 1;
        st = graft_run_set_batch(r, ids, lens, ns, &last, 1);
        if (st == GRAFT_OK) st = graft_run_forward(r);
        done += ns;
    }
    graft_run_free(r);
    free(ids), free(lens), free(subj), free(req_of), free(tpl_of);
    return st;
}

/* ---------------------------------------------------------------- covariance */

graft_status graft_wedit_cov(graft_wedit *w, int layer, double shift, graft_cov **out) {
    graft_cov *c = &w->cov[layer];
    *out = c;
    if (c->ready && c->shift == shift) return GRAFT_OK;
    free(c->chol);
    memset(c, 0, sizeof *c);
    const char *name = graft_wedit_method_name(w->method);
    if (!w->o.stats[0]) {
        /* said once per process: a stream may rebuild its editor several times */
        static int said;
        if (!said && !w->warned)
            fprintf(stderr,
                    "graft %s: no statistics file (--stats, from `graft stats`): using C = I, i.e. no covariance "
                    "adjustment; edits will be less specific\n",
                    name);
        said = w->warned = 1;
        c->identity = 1;
        c->shift = shift;
        c->ready = 1;
        return GRAFT_OK;
    }
    int F = w->F;
    double *mom2 = NULL;
    int64_t count = 0;
    GRAFT_TRY(graft_stats_load(w->o.stats, w->base.m, layer, &mom2, &count));
    double *a = malloc((size_t)F * F * sizeof(double));
    if (!a) {
        free(mom2);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    double md = 0;
    for (int i = 0; i < F; i++) md += mom2[(size_t)i * F + i];
    md /= F;
    /* A second moment from fewer tokens than F (or with dead units) is
     * singular: retry with a small ridge, and say so. */
    double ridge = 0;
    graft_status st = GRAFT_ERR_INVALID;
    for (int tries = 0; tries < 8 && st != GRAFT_OK; tries++) {
        memcpy(a, mom2, (size_t)F * F * sizeof(double));
        for (int i = 0; i < F; i++) a[(size_t)i * F + i] += shift + ridge;
        st = graft_chol(a, F);
        if (st != GRAFT_OK) ridge = ridge == 0 ? 1e-8 * (md > 0 ? md : 1) : ridge * 100;
    }
    free(mom2);
    if (st != GRAFT_OK) {
        free(a);
        return graft_fail_prefix(st, "%s: layer %d", w->o.stats, layer);
    }
    if (ridge > 0)
        fprintf(stderr, "graft %s: the key second moment of layer %d (%s, %lld tokens) is singular; added %.3g to its diagonal\n",
                name, layer, w->o.stats, (long long)count, ridge);
    c->chol = a;
    c->shift = shift;
    c->ready = 1;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- target check */

graft_status graft_wedit_eval_target(graft_wedit *w, const graft_edit_tok *req, double *loss, int *reproduced) {
    graft_model *m = w->base.m;
    int T = req->n_prompt + req->n_target - 1, nt = req->n_target, V = m->cfg.vocab_size;
    if (T > m->cfg.n_ctx) return graft_fail(GRAFT_ERR_RANGE, "prompt + target is %d tokens; the context is %d", T + 1, m->cfg.n_ctx);
    int *ids = malloc((size_t)T * sizeof(int)), *rows = malloc((size_t)nt * sizeof(int));
    graft_run *r = NULL;
    graft_status st = (ids && rows) ? graft_run_create(m, T, nt, T, 0, &r) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK) {
        memcpy(ids, req->prompt, (size_t)req->n_prompt * sizeof(int));
        memcpy(ids + req->n_prompt, req->target, (size_t)(nt - 1) * sizeof(int));
        for (int i = 0; i < nt; i++) rows[i] = req->n_prompt - 1 + i;
        st = graft_run_set_batch(r, ids, &T, 1, rows, nt);
    }
    if (st == GRAFT_OK) st = graft_run_forward(r);
    if (st == GRAFT_OK) st = graft_run_loss(r, req->target, NULL, loss, NULL);
    if (st == GRAFT_OK) {
        *reproduced = 1;
        for (int i = 0; i < nt; i++) {
            const float *z = r->logits + (size_t)i * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (z[v] > z[best]) best = v;
            *reproduced &= best == req->target[i];
        }
    }
    graft_run_free(r);
    free(ids), free(rows);
    return st;
}

/* ---------------------------------------------------------------- weight updates */

graft_status graft_wedit_apply_update(graft_wedit *w, graft_wedit_update *up) {
    graft_model *m = w->base.m;
    int C = w->C, F = w->F, n = up->n, l = up->layer;
    if (l < 0 || l >= m->cfg.n_layer || n < 1) return graft_fail(GRAFT_ERR_INVALID, "weight update: layer %d, rank %d", l, n);
    float *W = m->w.layers[l].down_w;
    size_t numel = (size_t)F * C;
    if (!w->base_w[l]) {
        w->base_w[l] = malloc(numel * sizeof(float));
        if (!w->base_w[l]) return graft_fail(GRAFT_ERR_NOMEM, "out of memory for the base copy of layer %d", l);
        memcpy(w->base_w[l], W, numel * sizeof(float));
    }
    const float *U = up->U, *Vv = up->V;
    /* one thread per stored row, a fixed order within it: the same float
     * result whatever the thread count, in apply and in replay */
    if (m->cfg.arch == GRAFT_ARCH_GPT2) { /* [F, C]: W[i][o] += sum_j V[j][i] U[j][o] */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < F; i++) {
            float *row = W + (size_t)i * C;
            for (int o = 0; o < C; o++) {
                double s = 0;
                for (int j = 0; j < n; j++) s += (double)Vv[(size_t)j * F + i] * (double)U[(size_t)j * C + o];
                row[o] += (float)s;
            }
        }
    } else { /* [C, F]: W[o][i] += sum_j U[j][o] V[j][i] */
#pragma omp parallel for schedule(static)
        for (int o = 0; o < C; o++) {
            float *row = W + (size_t)o * F;
            for (int i = 0; i < F; i++) {
                double s = 0;
                for (int j = 0; j < n; j++) s += (double)U[(size_t)j * C + o] * (double)Vv[(size_t)j * F + i];
                row[i] += (float)s;
            }
        }
    }
    /* |U V^T|_F^2 = sum_jk (U_j.U_k)(V_j.V_k) */
    double fro = 0;
    for (int j = 0; j < n; j++)
        for (int k = 0; k < n; k++) {
            double uu = 0, vv = 0;
            for (int o = 0; o < C; o++) uu += (double)U[(size_t)j * C + o] * U[(size_t)k * C + o];
            for (int i = 0; i < F; i++) vv += (double)Vv[(size_t)j * F + i] * Vv[(size_t)k * F + i];
            fro += uu * vv;
        }
    up->dw_fro = sqrt(fro > 0 ? fro : 0);
    double dist = 0;
    const float *B = w->base_w[l];
    for (size_t i = 0; i < numel; i++) {
        double d = (double)W[i] - B[i];
        dist += d * d;
    }
    up->dist_fro = sqrt(dist);
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- change records */

/* Layout (little-endian, native floats):
 *   u32 magic, u32 version, u32 method, u32 n_updates, u32 n_req, u32 C, u32 F
 *   templates: i32 n, i32 bos, i32 n_ids, i32 len[n], i32 ids[n_ids], f64 weight[n]
 *   per update: i32 layer, i32 rank, f64 dw_fro, f64 dist_fro, f32 U[rank*C], f32 V[rank*F]
 *   per request: f64 diag[N_DIAG]
 * The templates travel in every record, so a replayed editor continues with
 * exactly the templates the original run generated. */
graft_status graft_wedit_write_change(graft_wedit *w, const graft_wedit_update *ups, int n_ups, const graft_wedit_diag *d,
                                      int n_req, graft_blob *b) {
    const graft_templates *t = &w->tpl;
    uint32_t hdr[7] = {WEDIT_MAGIC, WEDIT_VERSION, (uint32_t)w->method, (uint32_t)n_ups, (uint32_t)n_req, (uint32_t)w->C,
                       (uint32_t)w->F};
    int32_t th[3] = {t->n, t->bos, t->n_ids};
    GRAFT_TRY(graft_blob_put(b, hdr, sizeof hdr));
    GRAFT_TRY(graft_blob_put(b, th, sizeof th));
    GRAFT_TRY(graft_blob_put(b, t->len, (size_t)t->n * sizeof(int32_t)));
    GRAFT_TRY(graft_blob_put(b, t->ids, (size_t)t->n_ids * sizeof(int32_t)));
    GRAFT_TRY(graft_blob_put(b, t->weight, (size_t)t->n * sizeof(double)));
    for (int k = 0; k < n_ups; k++) {
        const graft_wedit_update *u = &ups[k];
        int32_t lh[2] = {u->layer, u->n};
        double nd[2] = {u->dw_fro, u->dist_fro};
        GRAFT_TRY(graft_blob_put(b, lh, sizeof lh));
        GRAFT_TRY(graft_blob_put(b, nd, sizeof nd));
        GRAFT_TRY(graft_blob_put(b, u->U, (size_t)u->n * w->C * sizeof(float)));
        GRAFT_TRY(graft_blob_put(b, u->V, (size_t)u->n * w->F * sizeof(float)));
    }
    for (int i = 0; i < n_req; i++) {
        double v[N_DIAG] = {d[i].v_loss_first, d[i].v_loss_last, d[i].v_steps, d[i].key_norm, d[i].key_plain_norm,
                            d[i].delta_norm, d[i].v_init_norm, d[i].denom, d[i].loss_before, d[i].loss_after,
                            d[i].reproduced};
        GRAFT_TRY(graft_blob_put(b, v, sizeof v));
    }
    return GRAFT_OK;
}

/* A parsed record; arrays point into the record bytes (copied where alignment matters). */
typedef struct parsed_change {
    uint32_t method, n_ups, n_req, C, F;
    graft_templates tpl;
    graft_wedit_update *ups;
    double *diag; /* [n_req, N_DIAG] */
} parsed_change;

static void parsed_free(parsed_change *p) {
    tpl_free(&p->tpl);
    for (uint32_t k = 0; p->ups && k < p->n_ups; k++) free(p->ups[k].U), free(p->ups[k].V);
    free(p->ups);
    free(p->diag);
    memset(p, 0, sizeof *p);
}

static graft_status check_count(graft_blob_reader *rd, int64_t n, size_t elem, const char *what) {
    if (n < 0 || (uint64_t)n > (rd->len - rd->at) / elem)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: truncated or bad %s count %lld at byte %zu", rd->what, what, (long long)n, rd->at);
    return GRAFT_OK;
}

static graft_status parse_change(const uint8_t *data, size_t len, parsed_change *p) {
    memset(p, 0, sizeof *p);
    graft_blob_reader rd = {data, len, 0, "weight-edit change record"};
    uint32_t hdr[7];
    GRAFT_TRY(graft_blob_get(&rd, hdr, sizeof hdr));
    if (hdr[0] != WEDIT_MAGIC || hdr[1] != WEDIT_VERSION)
        return graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: bad magic/version (%08x, %u)", hdr[0], hdr[1]);
    p->method = hdr[2], p->n_ups = hdr[3], p->n_req = hdr[4], p->C = hdr[5], p->F = hdr[6];
    int32_t th[3];
    graft_status st = graft_blob_get(&rd, th, sizeof th);
    if (!st) st = check_count(&rd, th[0], sizeof(int32_t), "template");
    if (!st) st = check_count(&rd, th[2], sizeof(int32_t), "template token");
    if (!st && th[0] < 1) st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: %d templates", th[0]);
    if (!st) st = tpl_alloc(&p->tpl, th[0], th[2]);
    if (!st) {
        p->tpl.bos = th[1];
        st = graft_blob_get(&rd, p->tpl.len, (size_t)th[0] * sizeof(int32_t));
    }
    if (!st) st = graft_blob_get(&rd, p->tpl.ids, (size_t)th[2] * sizeof(int32_t));
    if (!st) st = graft_blob_get(&rd, p->tpl.weight, (size_t)th[0] * sizeof(double));
    if (!st) {
        int at = 0;
        for (int j = 0; j < th[0]; j++) {
            if (p->tpl.len[j] < 0 || p->tpl.len[j] > th[2] - at) {
                st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: template %d has a bad length", j);
                break;
            }
            p->tpl.off[j] = at;
            at += p->tpl.len[j];
        }
        if (!st && at != th[2]) st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: template lengths do not add up");
    }
    if (!st) st = check_count(&rd, p->n_ups, 2 * sizeof(int32_t) + 2 * sizeof(double), "update");
    if (!st) {
        p->ups = calloc(p->n_ups ? p->n_ups : 1, sizeof *p->ups);
        if (!p->ups) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    for (uint32_t k = 0; !st && k < p->n_ups; k++) {
        graft_wedit_update *u = &p->ups[k];
        int32_t lh[2];
        double nd[2];
        if ((st = graft_blob_get(&rd, lh, sizeof lh)) || (st = graft_blob_get(&rd, nd, sizeof nd))) break;
        u->layer = lh[0], u->n = lh[1], u->dw_fro = nd[0], u->dist_fro = nd[1];
        if (u->n < 1 || (st = check_count(&rd, (int64_t)u->n * (p->C + p->F), sizeof(float), "update value"))) {
            if (!st) st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: rank %d", u->n);
            break;
        }
        u->U = malloc((size_t)u->n * p->C * sizeof(float));
        u->V = malloc((size_t)u->n * p->F * sizeof(float));
        if (!u->U || !u->V) {
            st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = graft_blob_get(&rd, u->U, (size_t)u->n * p->C * sizeof(float)))) break;
        if ((st = graft_blob_get(&rd, u->V, (size_t)u->n * p->F * sizeof(float)))) break;
    }
    if (!st) st = check_count(&rd, p->n_req, N_DIAG * sizeof(double), "request");
    if (!st) {
        p->diag = malloc(((size_t)p->n_req * N_DIAG + 1) * sizeof(double));
        if (!p->diag) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else st = graft_blob_get(&rd, p->diag, (size_t)p->n_req * N_DIAG * sizeof(double));
    }
    if (!st && rd.at != rd.len) st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: %zu trailing bytes", rd.len - rd.at);
    if (st) parsed_free(p);
    return st;
}

graft_status graft_wedit_replay(graft_editor *e, const uint8_t *data, size_t len) {
    graft_wedit *w = (graft_wedit *)e;
    parsed_change p;
    GRAFT_TRY(parse_change(data, len, &p));
    graft_status st = GRAFT_OK;
    if (p.method != (uint32_t)w->method || p.C != (uint32_t)w->C || p.F != (uint32_t)w->F)
        st = graft_fail(GRAFT_ERR_INVALID, "weight-edit change record: made by %s on C=%u F=%u; this is %s on C=%d F=%d",
                        graft_wedit_method_name((graft_wedit_method)p.method), p.C, p.F, e->ops->name, w->C, w->F);
    for (uint32_t k = 0; !st && k < p.n_ups; k++)
        if (p.ups[k].layer < 0 || p.ups[k].layer >= e->m->cfg.n_layer)
            st = graft_fail(GRAFT_ERR_FORMAT, "weight-edit change record: layer %d of %d", p.ups[k].layer, e->m->cfg.n_layer);
    for (uint32_t k = 0; !st && k < p.n_ups; k++) {
        graft_wedit_update u = p.ups[k];
        st = graft_wedit_apply_update(w, &u);
    }
    if (!st && !w->have_tpl) {
        w->tpl = p.tpl;
        memset(&p.tpl, 0, sizeof p.tpl);
        w->have_tpl = 1;
    }
    parsed_free(&p);
    if (!st) e->n_edits++;
    return st;
}

graft_status graft_wedit_describe(const uint8_t *change, size_t len, char **json) {
    *json = NULL;
    parsed_change p;
    GRAFT_TRY(parse_change(change, len, &p));
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "method", graft_wedit_method_name((graft_wedit_method)p.method));
    cJSON_AddNumberToObject(j, "templates", p.tpl.n);
    cJSON *ups = cJSON_AddArrayToObject(j, "updates");
    for (uint32_t k = 0; k < p.n_ups; k++) {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddNumberToObject(u, "layer", p.ups[k].layer);
        cJSON_AddNumberToObject(u, "rank", p.ups[k].n);
        cJSON_AddNumberToObject(u, "dw_fro", p.ups[k].dw_fro);
        cJSON_AddNumberToObject(u, "w_dist_fro", p.ups[k].dist_fro);
        graft_json_push(ups, u);
    }
    static const char *const names[N_DIAG] = {"v_loss_first", "v_loss_last", "v_steps", "key_norm", "key_plain_norm",
                                              "delta_norm", "v_init_norm", "denom", "loss_before", "loss_after", "reproduced"};
    cJSON *rq = cJSON_AddArrayToObject(j, "requests");
    for (uint32_t i = 0; i < p.n_req; i++) {
        cJSON *d = cJSON_CreateObject();
        for (int k = 0; k < N_DIAG; k++) {
            double v = p.diag[(size_t)i * N_DIAG + k];
            if (isfinite(v)) cJSON_AddNumberToObject(d, names[k], v);
            else cJSON_AddNullToObject(d, names[k]);
        }
        graft_json_push(rq, d);
    }
    *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    parsed_free(&p);
    return *json ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
}

/* ---------------------------------------------------------------- reset / export / lifetime */

graft_status graft_wedit_reset(graft_editor *e) {
    graft_wedit *w = (graft_wedit *)e;
    for (int l = 0; l < e->m->cfg.n_layer; l++)
        if (w->base_w[l]) memcpy(e->m->w.layers[l].down_w, w->base_w[l], (size_t)w->F * w->C * sizeof(float));
    e->n_edits = 0;
    return GRAFT_OK;
}

static const char *down_name(const graft_model *m, int l) {
    for (int i = 0; i < m->params.n; i++)
        if (m->params.p[i].data == m->w.layers[l].down_w) return m->params.p[i].name;
    return NULL;
}

/* The cumulative deltas W - W0 of every edited matrix, named "<param>.delta",
 * in the checkpoint's own layout. */
graft_status graft_wedit_export(graft_editor *e, const char *path) {
    graft_wedit *w = (graft_wedit *)e;
    graft_model *m = e->m;
    int L = m->cfg.n_layer, n = 0;
    size_t numel = (size_t)w->F * w->C;
    graft_st_write_item *items = calloc((size_t)L, sizeof *items);
    float **bufs = calloc((size_t)L, sizeof *bufs);
    char (*names)[160] = calloc((size_t)L, sizeof *names);
    graft_status st = (items && bufs && names) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    char layers[GRAFT_WEDIT_MAX_LAYERS * 5 + 8] = "";
    size_t la = 0;
    for (int l = 0; st == GRAFT_OK && l < L; l++) {
        if (!w->base_w[l]) continue;
        const float *W = m->w.layers[l].down_w;
        bufs[n] = malloc(numel * sizeof(float));
        if (!bufs[n]) {
            st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < numel; i++) bufs[n][i] = W[i] - w->base_w[l][i];
        const char *pn = down_name(m, l);
        snprintf(names[n], sizeof names[0], "%s.delta", pn ? pn : "down_proj");
        int gpt2 = m->cfg.arch == GRAFT_ARCH_GPT2;
        items[n] = (graft_st_write_item){names[n], GRAFT_F32, 2, {gpt2 ? w->F : w->C, gpt2 ? w->C : w->F}, bufs[n]};
        if (la < sizeof layers - 8) la += (size_t)snprintf(layers + la, sizeof layers - la, "%s%d", n ? "," : "", l);
        n++;
    }
    if (st == GRAFT_OK) {
        char ne[32];
        snprintf(ne, sizeof ne, "%lld", (long long)e->n_edits);
        const char *meta[] = {"editor", e->ops->name, "layers", layers, "edits", ne, "content", "W - W0 of each edited matrix"};
        st = graft_st_write(path, items, n, meta, 4);
    }
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(items), free(bufs), free(names);
    return st;
}

static void dbg_free(graft_rome_debug *d) {
    free(d->k_star), free(d->k_plain), free(d->k_used), free(d->u);
    free(d->v_init), free(d->v_star), free(d->o_used), free(d->w);
    memset(d, 0, sizeof *d);
}

void graft_wedit_free(graft_editor *e) {
    graft_wedit *w = (graft_wedit *)e;
    if (!w) return;
    int L = e->m->cfg.n_layer;
    for (int l = 0; l < L; l++) {
        if (w->base_w) free(w->base_w[l]);
        if (w->cov) free(w->cov[l].chol);
    }
    free(w->base_w), free(w->cov);
    tpl_free(&w->tpl);
    dbg_free(&w->dbg);
    free(w);
}

int graft_editor_is_wedit(const graft_editor *e) {
    return e && (e->ops == &graft_rome_ops || e->ops == &graft_memit_ops || e->ops == &graft_emmet_ops);
}

void graft_wedit_get_opts(graft_editor *e, graft_wedit_opts *o) { *o = ((graft_wedit *)e)->o; }

const graft_rome_debug *graft_rome_last(graft_editor *e) {
    return graft_editor_is_wedit(e) ? &((graft_wedit *)e)->dbg : NULL;
}

graft_status graft_wedit_create(graft_model *m, graft_wedit_method meth, const graft_wedit_opts *o, graft_editor **out) {
    *out = NULL;
    GRAFT_TRY(graft_model_need_f32(m)); /* this editor trains or writes f32 weights */
    const graft_config *cfg = &m->cfg;
    const graft_editor_ops *ops = meth == GRAFT_WEDIT_ROME    ? &graft_rome_ops
                                  : meth == GRAFT_WEDIT_MEMIT ? &graft_memit_ops
                                  : meth == GRAFT_WEDIT_EMMET ? &graft_emmet_ops
                                                              : NULL;
    if (!ops) return graft_fail(GRAFT_ERR_INVALID, "weight editor: unknown method %d", (int)meth);
    const char *name = ops->name;
    graft_wedit_opts op;
    if (o)
        op = *o;
    else
        graft_wedit_opts_default(meth, &op);
    if (op.n_layers <= 0) op.n_layers = graft_wedit_default_layers(meth, cfg, op.layers);
    if (op.n_layers > GRAFT_WEDIT_MAX_LAYERS)
        return graft_fail(GRAFT_ERR_INVALID, "%s: at most %d layers", name, GRAFT_WEDIT_MAX_LAYERS);
    if (meth == GRAFT_WEDIT_ROME && op.n_layers != 1)
        return graft_fail(GRAFT_ERR_INVALID, "rome: edits exactly one layer (got %d); use memit for several", op.n_layers);
    for (int i = 0; i < op.n_layers; i++) {
        if (op.layers[i] < 0 || op.layers[i] >= cfg->n_layer)
            return graft_fail(GRAFT_ERR_INVALID, "%s: layer %d outside [0, %d)", name, op.layers[i], cfg->n_layer);
        if (i && op.layers[i] <= op.layers[i - 1])
            return graft_fail(GRAFT_ERR_INVALID, "%s: layers must be ascending and distinct", name);
    }
    if (op.v_steps < 0 || !(op.v_lr > 0) || !(op.clamp > 0) || !(op.kl_factor >= 0) || !(op.weight_decay >= 0) ||
        op.n_templates < 0 || op.n_templates > 1000 || op.template_len < 2 || op.template_len > 256)
        return graft_fail(GRAFT_ERR_INVALID,
                          "%s: want v_steps >= 0, v_lr > 0, clamp > 0, kl_factor >= 0, weight_decay >= 0, "
                          "0 <= n_templates <= 1000, 2 <= template_len <= 256",
                          name);
    if (meth != GRAFT_WEDIT_ROME &&
        (!(op.mom2_update_weight >= 0) || !(op.emmet_lambda >= 0) || !(op.update_norm_lambda >= 0) ||
         !(op.mom2_update_weight + op.update_norm_lambda > 0) || (meth == GRAFT_WEDIT_EMMET && !(op.mom2_update_weight > 0))))
        return graft_fail(GRAFT_ERR_INVALID, "%s: want mom2_update_weight > 0 and lambdas >= 0", name);
    for (int i = 0; op.stats[0] && i < op.n_layers; i++) GRAFT_TRY(graft_stats_load(op.stats, m, op.layers[i], NULL, NULL));
    graft_wedit *w = calloc(1, sizeof *w);
    if (!w) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", name);
    w->base.ops = ops;
    w->base.m = m;
    w->method = meth;
    w->o = op;
    w->C = cfg->d_model;
    w->F = cfg->d_ff;
    w->base_w = calloc((size_t)cfg->n_layer, sizeof *w->base_w);
    w->cov = calloc((size_t)cfg->n_layer, sizeof *w->cov);
    if (!w->base_w || !w->cov) {
        graft_wedit_free(&w->base);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", name);
    }
    *out = &w->base;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- options as JSON */

static graft_status layers_from_json(const cJSON *it, const graft_config *cfg, graft_wedit_opts *o, const char *where) {
    if (cJSON_IsNumber(it)) {
        o->n_layers = 1;
        o->layers[0] = it->valueint;
        return GRAFT_OK;
    }
    if (cJSON_IsString(it)) {
        graft_status st = graft_parse_layers(it->valuestring, cfg->n_layer, o->layers, &o->n_layers, GRAFT_WEDIT_MAX_LAYERS);
        return st ? graft_fail_prefix(st, "%s", where) : GRAFT_OK;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) < 1 || cJSON_GetArraySize(it) > GRAFT_WEDIT_MAX_LAYERS)
        return graft_fail(GRAFT_ERR_INVALID, "%s: 'layers' wants a number, a list of 1..%d numbers or a string like \"3-5\"",
                          where, GRAFT_WEDIT_MAX_LAYERS);
    o->n_layers = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, it) {
        if (!cJSON_IsNumber(x)) return graft_fail(GRAFT_ERR_INVALID, "%s: 'layers' holds a non-number", where);
        o->layers[o->n_layers++] = x->valueint;
    }
    return GRAFT_OK;
}

graft_status graft_wedit_opts_from_json(graft_wedit_method meth, const graft_config *cfg, const cJSON *j, graft_wedit_opts *o,
                                        const char *where) {
    graft_wedit_opts_default(meth, o);
    const char *name = graft_wedit_method_name(meth);
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        const char *k = it->string;
        int ok = 1;
        if (!strcmp(k, "layer") || !strcmp(k, "layers")) GRAFT_TRY(layers_from_json(it, cfg, o, where));
        else if (!strcmp(k, "v_steps")) ok = cJSON_IsNumber(it), o->v_steps = it->valueint;
        else if (!strcmp(k, "v_lr")) ok = cJSON_IsNumber(it), o->v_lr = (float)it->valuedouble;
        else if (!strcmp(k, "clamp")) ok = cJSON_IsNumber(it), o->clamp = (float)it->valuedouble;
        else if (!strcmp(k, "kl_factor")) ok = cJSON_IsNumber(it), o->kl_factor = (float)it->valuedouble;
        else if (!strcmp(k, "weight_decay")) ok = cJSON_IsNumber(it), o->weight_decay = (float)it->valuedouble;
        else if (!strcmp(k, "n_templates")) ok = cJSON_IsNumber(it), o->n_templates = it->valueint;
        else if (!strcmp(k, "template_len")) ok = cJSON_IsNumber(it), o->template_len = it->valueint;
        else if (!strcmp(k, "seed")) ok = cJSON_IsNumber(it) && it->valuedouble >= 0, o->seed = (uint64_t)it->valuedouble;
        else if (!strcmp(k, "stats")) {
            ok = cJSON_IsString(it) && strlen(it->valuestring) < sizeof o->stats;
            if (ok) snprintf(o->stats, sizeof o->stats, "%s", it->valuestring);
        } else if (!strcmp(k, "rrome") && meth == GRAFT_WEDIT_ROME) ok = cJSON_IsBool(it), o->rrome = cJSON_IsTrue(it);
        else if (!strcmp(k, "mom2_update_weight") && meth != GRAFT_WEDIT_ROME)
            ok = cJSON_IsNumber(it), o->mom2_update_weight = it->valuedouble;
        else if (!strcmp(k, "emmet_lambda") && meth == GRAFT_WEDIT_EMMET) ok = cJSON_IsNumber(it), o->emmet_lambda = it->valuedouble;
        else if (!strcmp(k, "update_norm_lambda") && meth == GRAFT_WEDIT_EMMET)
            ok = cJSON_IsNumber(it), o->update_norm_lambda = it->valuedouble;
        else
            return graft_fail(GRAFT_ERR_INVALID, "%s: unknown %s option '%s'", where, name, k);
        if (!ok) return graft_fail(GRAFT_ERR_INVALID, "%s: %s option '%s' has a bad value", where, name, k);
    }
    return GRAFT_OK;
}

graft_status graft_wedit_opts_to_json(graft_editor *e, cJSON *j) {
    const graft_wedit *w = (const graft_wedit *)e;
    const graft_wedit_opts *o = &w->o;
    int ok = 1;
    if (w->method == GRAFT_WEDIT_ROME)
        ok &= cJSON_AddNumberToObject(j, "layer", o->layers[0]) != NULL;
    else {
        cJSON *a = cJSON_AddArrayToObject(j, "layers");
        ok &= a != NULL;
        for (int i = 0; ok && i < o->n_layers; i++) ok &= graft_json_push(a, cJSON_CreateNumber(o->layers[i]));
    }
    ok &= cJSON_AddNumberToObject(j, "v_steps", o->v_steps) != NULL;
    ok &= cJSON_AddNumberToObject(j, "v_lr", o->v_lr) != NULL;
    ok &= cJSON_AddNumberToObject(j, "clamp", o->clamp) != NULL;
    ok &= cJSON_AddNumberToObject(j, "kl_factor", o->kl_factor) != NULL;
    ok &= cJSON_AddNumberToObject(j, "weight_decay", o->weight_decay) != NULL;
    if (w->method != GRAFT_WEDIT_ROME) ok &= cJSON_AddNumberToObject(j, "mom2_update_weight", o->mom2_update_weight) != NULL;
    if (w->method == GRAFT_WEDIT_EMMET) {
        ok &= cJSON_AddNumberToObject(j, "emmet_lambda", o->emmet_lambda) != NULL;
        ok &= cJSON_AddNumberToObject(j, "update_norm_lambda", o->update_norm_lambda) != NULL;
    }
    ok &= cJSON_AddStringToObject(j, "stats", o->stats) != NULL;
    ok &= cJSON_AddNumberToObject(j, "n_templates", o->n_templates) != NULL;
    ok &= cJSON_AddNumberToObject(j, "template_len", o->template_len) != NULL;
    ok &= cJSON_AddNumberToObject(j, "seed", (double)o->seed) != NULL;
    if (w->method == GRAFT_WEDIT_ROME) ok &= cJSON_AddBoolToObject(j, "rrome", o->rrome) != NULL;
    return ok ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
}
