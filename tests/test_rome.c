/* test_rome.c - the closed-form weight editors (ROME / r-ROME, MEMIT, EMMET):
 *  - the MEMIT and EMMET solves against direct dense solves in double;
 *  - the v* objective's gradient (NLL + KL + weight decay, the KL gradient
 *    injected at the top block) against finite differences;
 *  - after a ROME edit W' k* + b = v* to fp32 precision, with the key r-ROME
 *    uses (template mean) or the original asymmetric one, checked directly;
 *  - an edit makes the target the greedy continuation on stories260K;
 *  - replay into a fresh editor and undo through the journal (reset +
 *    replay) give bit-identical weights; MEMIT/EMMET batches;
 *  - options JSON, bad change records. */
#include "edit/eval.h"
#include "edit/journal.h"
#include "edit/linalg.h"
#include "edit/locate.h"
#include "edit/stats.h"
#include "test.h"
#include "test_util.h"

#include <unistd.h>

static char dir[64];
static graft_tokenizer *tok;

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 12345;
static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static int encode(const char *text, int bos, int *ids) {
    int *raw = NULL;
    size_t n = 0;
    if (graft_tokenize(tok, text, strlen(text), &raw, &n) != GRAFT_OK) return 0;
    int k = 0;
    if (bos) ids[k++] = 1;
    for (size_t i = 0; i < n; i++) ids[k++] = raw[i];
    free(raw);
    return k;
}

static int greedy_is(graft_model *m, const int *p, int np, const int *t, int nt) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = nt;
    o.stop_at_eos = 0;
    int *out = NULL;
    size_t n = 0;
    if (graft_generate_ids(m, p, (size_t)np, &o, NULL, NULL, &out, &n) != GRAFT_OK) return 0;
    int ok = n == (size_t)nt && memcmp(out, t, (size_t)nt * sizeof(int)) == 0;
    free(out);
    return ok;
}

static size_t down_numel(const graft_model *m) { return (size_t)m->cfg.d_ff * m->cfg.d_model; }

/* copies of every layer's down-projection */
static float *snapshot(const graft_model *m) {
    size_t n = down_numel(m);
    float *s = malloc(n * m->cfg.n_layer * sizeof(float));
    for (int l = 0; l < m->cfg.n_layer; l++) memcpy(s + n * l, m->w.layers[l].down_w, n * sizeof(float));
    return s;
}

static int same_weights(const graft_model *m, const float *s) {
    size_t n = down_numel(m);
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (memcmp(s + n * l, m->w.layers[l].down_w, n * sizeof(float))) return 0;
    return 1;
}

/* W' k + b in double, in math orientation (C outputs), for either layout */
static void apply_down(const graft_model *m, int l, const double *k, double *out) {
    int C = m->cfg.d_model, F = m->cfg.d_ff;
    const float *W = m->w.layers[l].down_w, *b = m->w.layers[l].down_b;
    for (int o = 0; o < C; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < F; i++) s += (m->cfg.arch == GRAFT_ARCH_GPT2 ? W[(size_t)i * C + o] : W[(size_t)o * F + i]) * k[i];
        out[o] = s;
    }
}

/* max |a - b| / max |b| */
static double rel_err(const double *a, const double *b, int n) {
    double e = 0, mx = 0;
    for (int i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i])), mx = fmax(mx, fabs(b[i]));
    return mx > 0 ? e / mx : e;
}

static void write_corpus(const char *path) {
    static const char *const lines[] = {
        "Once upon a time, there was a little girl named Lily. She loved to play in the park with her friends.",
        "One day, she saw a big red ball under a tree. She wanted to play with it, but it was too high.",
        "Tom and Sam went to the shop to buy some milk and bread for their mom. It was a sunny day.",
        "The cat was sad because it could not find its toy. The dog helped the cat look for it everywhere.",
        "They played together all day and were very happy. At night they went to sleep in their warm beds.",
        "Ben had a little boat. He liked to sail it on the pond near his house when the wind was strong.",
    };
    FILE *f = fopen(path, "w");
    for (int rep = 0; rep < 8; rep++)
        for (int i = 0; i < 6; i++) fprintf(f, "%s\n", lines[(i + rep) % 6]);
    fclose(f);
}

static graft_editor *make(graft_model *m, const char *method, const char *json) {
    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, method, json, &e));
    return e;
}

/* ---------------------------------------------------------------- 1. the MEMIT / EMMET solves */

static void test_solver(void) {
    enum { F = 7, C = 5, N = 3 };
    double A[F * F], Cm[F * F], L[F * F], K[N * F], R[N * C], U[N * C], X[N * F];
    for (int trial = 0; trial < 4; trial++) {
        /* a random SPD second moment, keys and residuals */
        double G[F * 2 * F];
        for (int i = 0; i < F * 2 * F; i++) G[i] = urand();
        for (int i = 0; i < F; i++)
            for (int j = 0; j < F; j++) {
                double s = 0;
                for (int p = 0; p < 2 * F; p++) s += G[i * 2 * F + p] * G[j * 2 * F + p];
                Cm[i * F + j] = s / (2 * F);
            }
        for (int i = 0; i < N * F; i++) K[i] = urand() * 3;
        for (int i = 0; i < N * C; i++) R[i] = urand();
        memcpy(L, Cm, sizeof L);
        CHECK_OK(graft_chol(L, F));
        double lam = trial == 0 ? 1.0 : 20.0;
        int identity = trial == 3;

        /* MEMIT: dW = R K^T (lam C + K K^T)^-1 directly, by LU on the F x F system */
        CHECK_OK(graft_lowrank_solve(identity ? NULL : L, lam, F, C, N, K, R, 0, 0.0, U, X));
        double dW[C * F], dD[C * F];
        for (int o = 0; o < C; o++)
            for (int i = 0; i < F; i++) {
                double s = 0;
                for (int j = 0; j < N; j++) s += U[j * C + o] * X[j * F + i];
                dW[o * F + i] = s;
            }
        for (int i = 0; i < F; i++)
            for (int k = 0; k < F; k++) {
                double s = lam * (identity ? (i == k) : Cm[i * F + k]);
                for (int j = 0; j < N; j++) s += K[j * F + i] * K[j * F + k];
                A[i * F + k] = s;
            }
        for (int o = 0; o < C; o++)
            for (int i = 0; i < F; i++) {
                double s = 0;
                for (int j = 0; j < N; j++) s += R[j * C + o] * K[j * F + i];
                dD[o * F + i] = s;
            }
        double Acopy[F * F];
        memcpy(Acopy, A, sizeof A);
        CHECK_OK(graft_lu_solve(Acopy, F, dD, C)); /* A symmetric: row o of dW solves A x = (R K^T)_o */
        CHECK_MSG(rel_err(dW, dD, C * F) < 1e-10, "MEMIT trial %d: Woodbury vs dense %g", trial, rel_err(dW, dD, C * F));
        /* normal equations: dW (lam C + K K^T) = R K^T */
        double res = 0, mx = 0;
        for (int o = 0; o < C; o++)
            for (int k = 0; k < F; k++) {
                double s = 0, t = 0;
                for (int i = 0; i < F; i++) s += dW[o * F + i] * A[i * F + k];
                for (int j = 0; j < N; j++) t += R[j * C + o] * K[j * F + k];
                res = fmax(res, fabs(s - t));
                mx = fmax(mx, fabs(t));
            }
        CHECK_MSG(res < 1e-10 * mx, "MEMIT trial %d: normal-equation residual %g", trial, res);

        /* EMMET with lambda_e = 0: the constraints hold exactly, dW K_j = R_j */
        CHECK_OK(graft_lowrank_solve(identity ? NULL : L, lam, F, C, N, K, R, 1, 0.0, U, X));
        double worst = 0;
        for (int j = 0; j < N; j++)
            for (int o = 0; o < C; o++) {
                double s = 0;
                for (int i = 0; i < F; i++) {
                    double d = 0;
                    for (int q = 0; q < N; q++) d += U[q * C + o] * X[q * F + i];
                    s += d * K[j * F + i];
                }
                worst = fmax(worst, fabs(s - R[j * C + o]));
            }
        CHECK_MSG(worst < 1e-9, "EMMET trial %d: constraint residual %g", trial, worst);

        /* EMMET with lambda_e = 0.1 against the formula, with M^-1 by LU */
        double le = 0.1;
        CHECK_OK(graft_lowrank_solve(identity ? NULL : L, lam, F, C, N, K, R, 1, le, U, X));
        double Mi_K[N * F], M[F * F], D[N * N], Dt[C * N];
        for (int i = 0; i < F * F; i++) M[i] = lam * (identity ? (i / F == i % F) : Cm[i]);
        memcpy(Mi_K, K, sizeof K);
        CHECK_OK(graft_lu_solve(M, F, Mi_K, N));
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double s = a == b ? le : 0;
                for (int i = 0; i < F; i++) s += K[a * F + i] * Mi_K[b * F + i];
                D[a * N + b] = s;
            }
        for (int o = 0; o < C; o++)
            for (int j = 0; j < N; j++) Dt[o * N + j] = R[j * C + o];
        CHECK_OK(graft_lu_solve(D, N, Dt, C)); /* D symmetric: row o = (R D^-1)_o */
        for (int o = 0; o < C; o++)
            for (int i = 0; i < F; i++) {
                double s = 0, t = 0;
                for (int j = 0; j < N; j++) s += Dt[o * N + j] * Mi_K[j * F + i], t += U[j * C + o] * X[j * F + i];
                dD[o * F + i] = s;
                dW[o * F + i] = t;
            }
        CHECK_MSG(rel_err(dW, dD, C * F) < 1e-10, "EMMET trial %d: vs dense %g", trial, rel_err(dW, dD, C * F));
    }
    /* the Cholesky itself, on a size that exercises the blocked path */
    int n = 150;
    double *a = malloc((size_t)n * n * sizeof(double)), *l = malloc((size_t)n * n * sizeof(double));
    double *b = malloc((size_t)n * sizeof(double)), *x = malloc((size_t)n * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = urand() + (i == j ? n : 0);
    memcpy(l, a, (size_t)n * n * sizeof(double));
    CHECK_OK(graft_chol(l, n));
    for (int i = 0; i < n; i++) b[i] = x[i] = urand();
    graft_chol_solve(l, n, x, 1);
    double e = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += a[i * n + j] * x[j];
        e = fmax(e, fabs(s - b[i]));
    }
    CHECK_MSG(e < 1e-10, "Cholesky solve residual %g", e);
    a[0] = -1;
    memcpy(l, a, (size_t)n * n * sizeof(double));
    CHECK_FAILS(graft_chol(l, n), GRAFT_ERR_INVALID, "not positive definite");
    free(a), free(l), free(b), free(x);
}

/* ---------------------------------------------------------------- 2. the v* gradient */

static void grad_check(graft_model *m, const char *method, const char *json, int layer, int resid, const graft_edit_tok *req,
                       const char *what) {
    graft_editor *e = make(m, method, json);
    if (!e) return;
    int C = m->cfg.d_model;
    float *d = malloc((size_t)C * sizeof(float)), *g = malloc((size_t)C * sizeof(float)), *dp = malloc((size_t)C * sizeof(float));
    for (int k = 0; k < C; k++) d[k] = (float)(0.3 * urand());
    double L0;
    CHECK_OK(graft_wedit_vstar_objective((graft_wedit *)e, layer, resid, req, d, &L0, g));
    double worst = 0;
    for (int trial = 0; trial < 3; trial++) {
        /* a random unit direction */
        double *u = malloc((size_t)C * sizeof(double)), nn = 0, gd = 0;
        for (int k = 0; k < C; k++) u[k] = urand(), nn += u[k] * u[k];
        nn = sqrt(nn);
        for (int k = 0; k < C; k++) u[k] /= nn, gd += g[k] * u[k];
        double h = 2e-2, Lp, Lm;
        for (int k = 0; k < C; k++) dp[k] = (float)(d[k] + h * u[k]);
        CHECK_OK(graft_wedit_vstar_objective((graft_wedit *)e, layer, resid, req, dp, &Lp, NULL));
        for (int k = 0; k < C; k++) dp[k] = (float)(d[k] - h * u[k]);
        CHECK_OK(graft_wedit_vstar_objective((graft_wedit *)e, layer, resid, req, dp, &Lm, NULL));
        double fd = (Lp - Lm) / (2 * h);
        worst = fmax(worst, fabs(fd - gd) / (fabs(fd) + 1e-2));
        free(u);
    }
    CHECK_MSG(worst < 2e-2, "%s: v* gradient vs finite differences, worst relative error %g", what, worst);
    free(d), free(g), free(dp);
    e->ops->free(e);
}

static void test_vstar_grad(graft_model *stories) {
    graft_model *m = test_tiny_gpt2(3, 7);
    CHECK_MSG(m != NULL, "a tiny random GPT-2: %s", graft_last_error());
    if (!m) return;
    int p[] = {5, 9, 11, 3, 20}, t[] = {7, 8};
    graft_edit_tok req = {p, 5, t, 2, 2};
    const char *j = "{\"n_templates\": 4, \"kl_factor\": 2.0}";
    grad_check(m, "rome", j, 2, 0, &req, "GPT-2 ROME, top layer (KL injected in the delta hook)");
    grad_check(m, "rome", j, 0, 0, &req, "GPT-2 ROME, layer 0 (KL injected at the top block)");
    grad_check(m, "memit", j, 1, 1, &req, "GPT-2 MEMIT z, layer 1");
    grad_check(m, "rome", "{\"n_templates\": 4, \"kl_factor\": 0}", 1, 0, &req, "GPT-2 ROME, no KL");
    graft_model_free(m);
    int sp[64], st[8];
    int ns = encode("Lily and her mom went to the", 1, sp), nt = encode("park", 0, st);
    graft_edit_tok sreq = {sp, ns, st, nt, 1};
    grad_check(stories, "rome", "{\"n_templates\": 4, \"kl_factor\": 1.0}", 2, 0, &sreq, "stories260K ROME, layer 2");
}

/* ---------------------------------------------------------------- 3. ROME: W' k* = v*, keys, greedy */

static void test_rome_stories(graft_model *m, const char *stats) {
    int F = m->cfg.d_ff, C = m->cfg.d_model;
    int p[64], t[8];
    int np = encode("Once upon a time, there was a little girl named", 1, p), nt = encode("Tom", 0, t);
    CHECK(!greedy_is(m, p, np, t, nt));
    float *base = snapshot(m);
    char json[1200];
    snprintf(json, sizeof json, "{\"stats\": \"%s\"}", stats);
    graft_editor *e = make(m, "rome", json);
    if (!e) return;
    graft_edit_info info;
    graft_blob ch = {0};
    graft_edit_tok req = {p, np, t, nt, -1};
    CHECK_OK(e->ops->apply(e, &req, &info, &ch));
    CHECK_MSG(info.reproduced && info.loss_last < info.loss_first, "rome: reproduced %d, loss %.3f -> %.3f", info.reproduced,
              info.loss_first, info.loss_last);
    CHECK_MSG(greedy_is(m, p, np, t, nt), "rome: greedy generation does not give the target");
    const graft_rome_debug *d = graft_rome_last(e);
    CHECK(d && d->valid && d->rrome && d->layer == 2);
    double *out = malloc((size_t)C * sizeof(double));
    /* r-ROME: the update's key is the template mean, and W' k* = v* */
    CHECK(memcmp(d->k_used, d->k_star, (size_t)F * sizeof(double)) == 0);
    CHECK(rel_err(d->k_star, d->k_plain, F) > 1e-3);
    apply_down(m, d->layer, d->k_star, out);
    CHECK_MSG(rel_err(out, d->v_star, C) < 1e-5, "r-ROME: |W'k* - v*| / |v*| = %g", rel_err(out, d->v_star, C));
    /* u is C^-1 k* normalised: C u is parallel to k* */
    double *mom2 = NULL;
    int64_t cnt;
    CHECK_OK(graft_stats_load(stats, m, d->layer, &mom2, &cnt));
    if (mom2) {
        double dot = 0, n1 = 0, n2 = 0;
        for (int i = 0; i < F; i++) {
            double s = 0;
            for (int k = 0; k < F; k++) s += mom2[(size_t)i * F + k] * d->u[k];
            dot += s * d->k_star[i], n1 += s * s, n2 += d->k_star[i] * d->k_star[i];
        }
        CHECK_NEAR(dot / sqrt(n1 * n2), 1.0, 1e-6);
        free(mom2);
    }
    char *desc = NULL;
    CHECK_OK(graft_wedit_describe(ch.data, ch.len, &desc));
    CHECK(desc && strstr(desc, "\"dw_fro\"") && strstr(desc, "\"v_loss_last\"") && strstr(desc, "\"key_norm\""));
    free(desc);
    /* reset: the base weights, bit for bit */
    CHECK_OK(e->ops->reset(e));
    CHECK(same_weights(m, base));
    e->ops->free(e);
    graft_blob_free(&ch);

    /* the original asymmetric key: k and o of the unprefixed prompt in the
     * denominator, so W' k = v* holds and W' k* = v* does not */
    snprintf(json, sizeof json, "{\"stats\": \"%s\", \"rrome\": false}", stats);
    e = make(m, "rome", json);
    if (!e) return;
    CHECK_OK(e->ops->apply(e, &req, &info, &ch));
    d = graft_rome_last(e);
    CHECK(d && d->valid && !d->rrome);
    CHECK(memcmp(d->k_used, d->k_plain, (size_t)F * sizeof(double)) == 0);
    CHECK(memcmp(d->o_used, d->v_init, (size_t)C * sizeof(double)) == 0);
    apply_down(m, d->layer, d->k_plain, out);
    CHECK_MSG(rel_err(out, d->v_star, C) < 1e-5, "ROME: |W'k - v*| / |v*| = %g", rel_err(out, d->v_star, C));
    apply_down(m, d->layer, d->k_star, out);
    CHECK_MSG(rel_err(out, d->v_star, C) > 1e-3, "ROME: W'k* = v* even with the asymmetric key (%g)", rel_err(out, d->v_star, C));
    CHECK_OK(e->ops->reset(e));
    CHECK(same_weights(m, base));
    e->ops->free(e);
    graft_blob_free(&ch);
    free(out);
    free(base);
}

/* GPT-2 layout ([F, C] Conv1D, with the c_proj bias) on a tiny random model:
 * W' k* + b = v* at the top layer and at layer 0, without statistics. */
static void test_rome_gpt2(void) {
    graft_config c;
    graft_config_preset("gpt2-tiny", &c);
    c.vocab_size = 64;
    c.n_layer = 3;
    graft_model *m = NULL;
    CHECK_OK(graft_model_create_random(&c, 11, 0.2f, &m));
    if (!m) return;
    for (int i = 0; i < c.d_model; i++) m->w.layers[0].down_b[i] = m->w.layers[2].down_b[i] = (float)(0.1 * urand());
    int p[] = {5, 9, 11, 3, 20, 4}, t[] = {7, 8};
    graft_edit_tok req = {p, 6, t, 2, 3};
    double *out = malloc((size_t)c.d_model * sizeof(double));
    for (int k = 0; k < 2; k++) {
        graft_editor *e = make(m, "rome", k ? "{\"layer\": 0, \"n_templates\": 6}" : "{\"layer\": 2, \"n_templates\": 6}");
        if (!e) break;
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &req, &info, &ch));
        const graft_rome_debug *d = graft_rome_last(e);
        apply_down(m, d->layer, d->k_star, out);
        CHECK_MSG(rel_err(out, d->v_star, c.d_model) < 1e-5, "GPT-2 layer %d: |W'k* + b - v*| / |v*| = %g", d->layer,
                  rel_err(out, d->v_star, c.d_model));
        CHECK(info.loss_last < info.loss_first);
        CHECK_OK(e->ops->reset(e));
        e->ops->free(e);
        graft_blob_free(&ch);
    }
    free(out);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- 4. replay and undo */

typedef struct {
    const char *prompt, *target, *subject;
} fact;

static const fact facts[] = {
    {"Lily and her mom went to the", "shop", "Lily"},
    {"The dog liked to eat", "cake", "dog"},
    {"Tom played with his", "cat", "Tom"},
};

static void encode_fact(const fact *f, int *p, int *np, int *t, int *nt, graft_edit_tok *r) {
    *np = encode(f->prompt, 1, p);
    *nt = encode(f->target, 0, t);
    *r = (graft_edit_tok){p, *np, t, *nt, graft_subject_last(tok, f->prompt, f->subject)};
}

static void journal_edit(graft_journal *j, int seq, const graft_edit_info *info, const graft_blob *ch) {
    graft_journal_entry en = {0};
    en.seq = seq;
    en.kind = "edit";
    en.method = "weights";
    en.request = "{}";
    en.info = *info;
    en.change = ch->data;
    en.change_len = ch->len;
    CHECK_OK(graft_journal_append(j, &en));
}

static void test_replay_undo(graft_model *m, const char *method, const char *json, int batch) {
    float *base = snapshot(m);
    char jdir[128];
    snprintf(jdir, sizeof jdir, "%s/journal_%s", dir, method);
    graft_journal *j = NULL;
    CHECK_OK(graft_journal_open(jdir, 1, &j));
    if (!j) return;
    CHECK_OK(graft_journal_set_meta(j, "method", method));
    CHECK_OK(graft_journal_set_meta(j, "editor_options", json));
    graft_editor *e = make(m, method, json);
    if (!e) return;
    int p[3][64], t[3][8], np[3], nt[3];
    graft_edit_tok r[3];
    for (int i = 0; i < 3; i++) encode_fact(&facts[i], p[i], &np[i], t[i], &nt[i], &r[i]);
    CHECK(r[0].subject_last >= 1 && r[0].subject_last < np[0] - 3 && r[2].subject_last >= 1);
    graft_blob ch[3] = {{0}};
    graft_edit_info info;
    float *w2 = NULL;
    int n_rec = 0;
    if (batch) {
        /* one batch of two, then one more */
        CHECK_OK(e->ops->apply_batch(e, r, 2, &info, &ch[0]));
        journal_edit(j, 0, &info, &ch[0]);
        w2 = snapshot(m);
        CHECK_OK(e->ops->apply(e, &r[2], &info, &ch[1]));
        journal_edit(j, 1, &info, &ch[1]);
        n_rec = 2;
    } else {
        for (int i = 0; i < 3; i++) {
            CHECK_OK(e->ops->apply(e, &r[i], &info, &ch[i]));
            journal_edit(j, i, &info, &ch[i]);
            if (i == 1) w2 = snapshot(m);
        }
        n_rec = 3;
    }
    CHECK(!same_weights(m, base));
    float *w3 = snapshot(m);

    /* a fresh editor replaying the records on the base weights: bit-identical */
    CHECK_OK(e->ops->reset(e));
    CHECK(same_weights(m, base));
    graft_editor *e2 = make(m, method, json);
    for (int i = 0; e2 && i < n_rec; i++) CHECK_OK(e2->ops->replay(e2, ch[i].data, ch[i].len));
    CHECK_MSG(same_weights(m, w3), "%s: replayed weights differ from the applied ones", method);
    if (e2) e2->ops->free(e2);

    /* reopening the folder (editor rebuilt from the journal's options) */
    CHECK_OK(e->ops->reset(e));
    graft_editor *e3 = NULL;
    CHECK_OK(graft_adaptor_open(m, jdir, &e3, NULL));
    CHECK(same_weights(m, w3));
    if (e3) {
        CHECK_OK(e3->ops->reset(e3));
        e3->ops->free(e3);
    }
    CHECK(same_weights(m, base));

    /* undo through the journal: reset + replay of the live edits */
    CHECK_OK(graft_journal_replay(j, e, NULL, NULL));
    CHECK(same_weights(m, w3));
    CHECK_OK(graft_journal_undo(j, e, n_rec)); /* the last edit */
    CHECK_MSG(same_weights(m, w2), "%s: undo of the last edit does not restore the weights before it", method);
    for (int id = n_rec - 1; id >= 1; id--) CHECK_OK(graft_journal_undo(j, e, id));
    CHECK_MSG(same_weights(m, base), "%s: undoing every edit does not restore the base weights", method);
    CHECK(e->n_edits == 0);

    /* a truncated or foreign record is an error, and changes nothing */
    graft_editor *e4 = make(m, method, json);
    if (e4) {
        CHECK_FAILS(e4->ops->replay(e4, ch[0].data, ch[0].len - 5), GRAFT_ERR_FORMAT, "truncated");
        CHECK(same_weights(m, base));
        uint8_t junk[64] = {1, 2, 3};
        CHECK_FAILS(e4->ops->replay(e4, junk, sizeof junk), GRAFT_ERR_FORMAT, "magic");
        e4->ops->free(e4);
    }
    graft_journal_close(j);
    e->ops->free(e);
    for (int i = 0; i < 3; i++) graft_blob_free(&ch[i]);
    free(base), free(w2), free(w3);
}

/* ---------------------------------------------------------------- 5. MEMIT / EMMET batches on stories260K */

static void test_batch(graft_model *m, const char *method, const char *json) {
    float *base = snapshot(m);
    graft_editor *e = make(m, method, json);
    if (!e) return;
    int p[3][64], t[3][8], np[3], nt[3];
    graft_edit_tok r[3];
    /* the subject at the last prompt token (the fallback): in a 5-layer
     * model a delta at an early subject token barely reaches a target several
     * tokens later through the one or two attention layers above */
    for (int i = 0; i < 3; i++) encode_fact(&facts[i], p[i], &np[i], t[i], &nt[i], &r[i]), r[i].subject_last = -1;
    graft_edit_info info;
    graft_blob ch = {0};
    CHECK_OK(e->ops->apply_batch(e, r, 3, &info, &ch));
    int ok = 0;
    for (int i = 0; i < 3; i++) ok += greedy_is(m, p[i], np[i], t[i], nt[i]);
    CHECK_MSG(ok == 3, "%s: %d of 3 batch edits are the greedy continuation (%s, loss %.3f -> %.3f)", method, ok, info.action,
              info.loss_first, info.loss_last);
    char *desc = NULL;
    CHECK_OK(graft_wedit_describe(ch.data, ch.len, &desc));
    CHECK(desc && strstr(desc, "\"rank\":3"));
    free(desc);
    CHECK_OK(e->ops->reset(e));
    CHECK(same_weights(m, base));
    e->ops->free(e);
    graft_blob_free(&ch);
    free(base);
}

/* ---------------------------------------------------------------- 6. options */

static void test_options(graft_model *m) {
    graft_editor *e = make(m, "memit", "{\"layers\": \"1-3\", \"mom2_update_weight\": 500, \"seed\": 7}");
    char *js = NULL, *js2 = NULL;
    if (e) {
        CHECK_OK(graft_editor_opts_json(e, &js));
        CHECK(js && strstr(js, "\"layers\":[1,2,3]") && strstr(js, "\"mom2_update_weight\":500") && strstr(js, "\"seed\":7"));
        graft_editor *e2 = make(m, "memit", js);
        if (e2) {
            CHECK_OK(graft_editor_opts_json(e2, &js2));
            CHECK(js2 && !strcmp(js, js2));
            e2->ops->free(e2);
        }
        e->ops->free(e);
    }
    free(js), free(js2);
    e = make(m, "rome", NULL);
    if (e) {
        graft_wedit_opts o;
        graft_wedit_get_opts(e, &o);
        CHECK(o.n_layers == 1 && o.layers[0] == 2 && o.rrome == 1 && o.clamp == 4.0f && o.n_templates == 20);
        e->ops->free(e);
    }
    e = make(m, "emmet", "{}");
    if (e) {
        graft_wedit_opts o;
        graft_wedit_get_opts(e, &o);
        CHECK(o.n_layers == 1 && o.mom2_update_weight == 10000 && o.emmet_lambda == 0.1 && o.clamp == 0.75f);
        e->ops->free(e);
    }
    /* GPT-2 small by depth ratio: ROME 4, MEMIT 3-5 */
    graft_config c;
    graft_config_preset("gpt2", &c);
    int ly[8];
    CHECK(graft_wedit_default_layers(GRAFT_WEDIT_ROME, &c, ly) == 1 && ly[0] == 4);
    CHECK(graft_wedit_default_layers(GRAFT_WEDIT_MEMIT, &c, ly) == 3 && ly[0] == 3 && ly[2] == 5);
    graft_editor *bad = NULL;
    CHECK_FAILS(graft_editor_create(m, "rome", "{\"layers\": [1, 2]}", &bad), GRAFT_ERR_INVALID, "exactly one layer");
    CHECK_FAILS(graft_editor_create(m, "rome", "{\"lambda\": 3}", &bad), GRAFT_ERR_INVALID, "unknown rome option 'lambda'");
    CHECK_FAILS(graft_editor_create(m, "memit", "{\"layers\": \"2-9\"}", &bad), GRAFT_ERR_INVALID, "not a range");
    CHECK_FAILS(graft_editor_create(m, "memit", "{\"rrome\": false}", &bad), GRAFT_ERR_INVALID, "unknown memit option");
    CHECK_FAILS(graft_editor_create(m, "emmet", "{\"v_lr\": -1}", &bad), GRAFT_ERR_INVALID, "v_lr > 0");
    /* a missing statistics file fails when the editor is created, with the
     * file's name (not later, inside the first edit of a stream) */
    CHECK_FAILS(graft_editor_create(m, "rome", "{\"stats\": \"/nonexistent/stats.safetensors\"}", &bad), GRAFT_ERR_IO,
                "/nonexistent/stats.safetensors");
    CHECK(bad == NULL);
}

int main(void) {
    graft_set_threads(2);
    snprintf(dir, sizeof dir, "/tmp/graft_rome_XXXXXX");
    if (!mkdtemp(dir)) TEST_SKIP("no temporary directory");
    test_solver();

    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(path, &m));
    if (!m) return test_finish("test_rome");
    tok = graft_model_tokenizer(m);
    if (!tok) TEST_SKIP("stories260K has no tokenizer beside it");

    /* statistics from a tiny corpus (enough tokens for a full-rank 172 x 172) */
    char corpus[256], stats[256];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(stats, sizeof stats, "%s/stats.safetensors", dir);
    write_corpus(corpus);
    graft_stats_opts so;
    graft_stats_opts_default(&so);
    so.corpus = corpus;
    so.out = stats;
    so.progress = 0;
    so.window = 128;
    so.layers = NULL;
    int all[5] = {0, 1, 2, 3, 4};
    so.layers = all;
    so.n_layers = 5;
    graft_stats_result sr;
    CHECK_OK(graft_stats_compute(m, &so, &sr));

    test_vstar_grad(m);
    test_rome_stories(m, stats);
    test_rome_gpt2();

    char json[1400];
    snprintf(json, sizeof json, "{\"stats\": \"%s\", \"v_steps\": 8, \"n_templates\": 6}", stats);
    test_replay_undo(m, "rome", json, 0);
    snprintf(json, sizeof json, "{\"stats\": \"%s\", \"v_steps\": 8, \"mom2_update_weight\": 100}", stats);
    test_replay_undo(m, "memit", json, 1);
    snprintf(json, sizeof json, "{\"stats\": \"%s\", \"mom2_update_weight\": 10, \"v_steps\": 30}", stats);
    test_batch(m, "memit", json);
    snprintf(json, sizeof json, "{\"stats\": \"%s\", \"mom2_update_weight\": 30}", stats);
    test_batch(m, "emmet", json);
    test_options(m);

    graft_model_free(m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return test_finish("test_rome");
}
