/*
 * test_kernels.c - every forward kernel against a naive double-precision
 * reference written here, and every backward kernel against central finite
 * differences of that double reference.
 *
 * Gradient method: for a kernel out = f(inputs) and a fixed random R, the
 * scalar L = sum(out * R) is evaluated in double by the reference; each input
 * entry is perturbed by +-h (h = 1e-5, in double, so the difference quotient
 * is accurate to ~1e-9) and (L+ - L-) / 2h is compared with the gradient the
 * float kernel returns for dout = R. Gradient buffers start non-zero and the
 * backward is called twice, so "accumulates" (+=) is checked: after call n the
 * buffer must be start + n * gradient. Inputs are drawn as floats and the
 * double copies are exact, so kernel and reference see the same numbers.
 *
 * The larger cases exceed the kernels' parallel thresholds, so the threaded
 * paths are checked too (gradients sampled there to keep the test fast), and
 * a few kernels are checked to give identical bits on 1 and 2 threads.
 */
#include "internal.h"
#include "kernels.h"
#include "test.h"

#include <stdint.h>

/* The vectorizable exp the kernels use (src/kernels/vmath.c). */
float graft_vexpf(float x);

/* ------------------------------------------------------------------ helpers */

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}
/* Random floats in [lo, hi) into f, with an exact double copy in d (if any). */
static void fill(float *f, double *d, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        f[i] = test_frand(lo, hi);
        if (d) d[i] = f[i];
    }
}
static double dotR(const double *a, const float *R, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * R[i];
    return s;
}

/* Compare float results with double references: |got - want| <= atol + rtol |want|. */
static void check_close(const char *what, const float *got, const double *want, size_t n,
                        double rtol, double atol) {
    int bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - want[i]);
        if (!(err <= atol + rtol * fabs(want[i]))) {
            if (bad < 3) fprintf(stderr, "  %s[%zu] = %.9g, want %.9g\n", what, i, got[i], want[i]);
            bad++;
        }
        if (err > worst) worst = err;
    }
    CHECK_MSG(bad == 0, "%s: %d of %zu entries off (worst abs error %.3g)", what, bad, n, worst);
}

/* L(params) in double; params are perturbed in place by the checker. */
typedef double (*loss_fn)(void *ctx);

#define FD_H 1e-5
#define G_RTOL 2e-3
#define G_ATOL 2e-4

/*
 * The backward kernels are called twice (to check accumulation) against the
 * same inputs, so the finite differences of the second round are the same
 * numbers: they are remembered here, keyed by the loss, the parameter
 * array, its length and a fingerprint of its contents (so a reused address
 * holding other values can never hit).
 */
typedef struct {
    loss_fn L;
    const double *p;
    size_t n, max_checks;
    double fingerprint;
    double *want;
} fd_memo;
static fd_memo fd_cache[8];
static int fd_next;

static double fingerprint(const double *p, size_t n) {
    double f = 0.0;
    for (size_t i = 0; i < n; i++) f += p[i] * (double)(i % 1021 + 1);
    return f;
}

/* Central differences of L with respect to every step-th entry of p. */
static const double *fd_grad(loss_fn L, void *ctx, double *p, size_t n, size_t step,
                             size_t max_checks) {
    const double f = fingerprint(p, n);
    for (int c = 0; c < 8; c++) {
        const fd_memo *m = &fd_cache[c];
        if (m->want && m->L == L && m->p == p && m->n == n && m->max_checks == max_checks &&
            m->fingerprint == f)
            return m->want;
    }
    double *want = dalloc(n / step + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i += step) {
        const double save = p[i];
        p[i] = save + FD_H;
        const double lp = L(ctx);
        p[i] = save - FD_H;
        const double lm = L(ctx);
        p[i] = save;
        want[j++] = (lp - lm) / (2.0 * FD_H);
    }
    fd_memo *m = &fd_cache[fd_next];
    fd_next = (fd_next + 1) % 8;
    free(m->want);
    *m = (fd_memo){L, p, n, max_checks, f, want};
    return want;
}

/*
 * Central differences of L with respect to p[i] for up to max_checks entries
 * (evenly strided), compared with (g[i] - g0[i]) / mult: the kernel gradient
 * accumulated `mult` times on top of g0 (g0 may be NULL for zero).
 */
static void check_grad(const char *what, loss_fn L, void *ctx, double *p, size_t n, const float *g,
                       const float *g0, double mult, size_t max_checks) {
    const size_t step = n > max_checks ? (n + max_checks - 1) / max_checks : 1;
    const double *fd = fd_grad(L, ctx, p, n, step, max_checks);
    int bad = 0, checked = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i += step) {
        const double want = fd[checked++];
        const double got = ((double)g[i] - (g0 ? (double)g0[i] : 0.0)) / mult;
        const double err = fabs(got - want);
        if (!(err <= G_ATOL + G_RTOL * fabs(want))) {
            if (bad < 3) fprintf(stderr, "  %s[%zu]: kernel %.7g, finite difference %.7g\n", what, i, got, want);
            bad++;
        }
        if (err > worst) worst = err;
    }
    CHECK_MSG(bad == 0, "%s: %d of %d gradient entries off (worst %.3g)", what, bad, checked, worst);
}

static void fd_cache_free(void) {
    for (int c = 0; c < 8; c++) {
        free(fd_cache[c].want);
        fd_cache[c].want = NULL;
    }
}

/* ------------------------------------------------------------------ vexpf */

static void test_vexpf(void) {
    double worst = 0.0;
    for (int i = 0; i <= 500000; i++) {
        const float x = -87.0f + (float)i * (175.3f / 500000.0f);
        const double want = exp((double)x), rel = fabs((double)graft_vexpf(x) - want) / want;
        if (rel > worst) worst = rel;
    }
    CHECK_MSG(worst < 2.5e-7, "graft_vexpf max relative error %.3g", worst);
    CHECK(graft_vexpf(0.0f) == 1.0f);
    CHECK(graft_vexpf(-100.0f) == 0.0f);
    CHECK(graft_vexpf(-INFINITY) == 0.0f);
    CHECK(isinf(graft_vexpf(100.0f)) && graft_vexpf(100.0f) > 0);
    CHECK(isnan(graft_vexpf(NAN)));
}

/* ------------------------------------------------------------------ linear */

typedef struct {
    double *x, *w, *b;
    const float *R;
    int M, K, N, layout;
} lin_ctx;

static double lin_loss(void *vc) {
    const lin_ctx *c = vc;
    double L = 0.0;
    for (int i = 0; i < c->M; i++)
        for (int n = 0; n < c->N; n++) {
            double s = c->b ? c->b[n] : 0.0;
            for (int k = 0; k < c->K; k++) {
                const double w = c->layout == GRAFT_W_KN ? c->w[(size_t)k * c->N + n]
                                                         : c->w[(size_t)n * c->K + k];
                s += c->x[(size_t)i * c->K + k] * w;
            }
            L += s * c->R[(size_t)i * c->N + n];
        }
    return L;
}

static void test_linear_grad(int layout, int with_bias) {
    const int M = 4, K = 6, N = 5;
    float *x = test_falloc(M * K), *w = test_falloc(K * N), *b = test_falloc(N), *R = test_falloc(M * N);
    double *xd = dalloc(M * K), *wd = dalloc(K * N), *bd = dalloc(N);
    fill(x, xd, M * K, -1, 1);
    fill(w, wd, K * N, -1, 1);
    fill(b, bd, N, -1, 1);
    fill(R, NULL, M * N, -1, 1);
    float *dx = test_falloc(M * K), *dw = test_falloc(K * N), *db = test_falloc(N);
    float *dx0 = test_falloc(M * K), *dw0 = test_falloc(K * N), *db0 = test_falloc(N);
    fill(dx0, NULL, M * K, -1, 1);
    fill(dw0, NULL, K * N, -1, 1);
    fill(db0, NULL, N, -1, 1);
    memcpy(dx, dx0, sizeof(float) * M * K);
    memcpy(dw, dw0, sizeof(float) * K * N);
    memcpy(db, db0, sizeof(float) * N);
    lin_ctx c = {xd, wd, with_bias ? bd : NULL, R, M, K, N, layout};
    char what[64];
    for (int rep = 1; rep <= 2; rep++) {
        graft_linear_backward(dx, dw, with_bias ? db : NULL, R, x, w, M, K, N, (graft_layout)layout);
        snprintf(what, sizeof what, "linear(%s,bias=%d) dx x%d", layout ? "NK" : "KN", with_bias, rep);
        check_grad(what, lin_loss, &c, xd, M * K, dx, dx0, rep, 1000);
        snprintf(what, sizeof what, "linear(%s,bias=%d) dw x%d", layout ? "NK" : "KN", with_bias, rep);
        check_grad(what, lin_loss, &c, wd, K * N, dw, dw0, rep, 1000);
        if (with_bias) {
            snprintf(what, sizeof what, "linear(%s) db x%d", layout ? "NK" : "KN", rep);
            check_grad(what, lin_loss, &c, bd, N, db, db0, rep, 1000);
        }
    }
    if (!with_bias) CHECK(memcmp(db, db0, sizeof(float) * N) == 0); /* db NULL: untouched */
    graft_free_aligned(x); graft_free_aligned(w); graft_free_aligned(b); graft_free_aligned(R);
    graft_free_aligned(dx); graft_free_aligned(dw); graft_free_aligned(db);
    graft_free_aligned(dx0); graft_free_aligned(dw0); graft_free_aligned(db0);
    free(xd); free(wd); free(bd);
}

/* ------------------------------------------------------------------ norms */

typedef struct {
    double *x, *w, *b;
    const float *R;
    int T, C, rms;
    double eps;
    double *out, *mean, *rstd; /* reference outputs of the last evaluation */
} norm_ctx;

static void norm_ref(norm_ctx *c) {
    for (int t = 0; t < c->T; t++) {
        const double *x = c->x + (size_t)t * c->C;
        double *o = c->out + (size_t)t * c->C;
        if (c->rms) {
            double ss = 0.0;
            for (int i = 0; i < c->C; i++) ss += x[i] * x[i];
            const double r = 1.0 / sqrt(ss / c->C + c->eps);
            for (int i = 0; i < c->C; i++) o[i] = x[i] * r * c->w[i];
            c->rstd[t] = r;
        } else {
            double s = 0.0, v = 0.0;
            for (int i = 0; i < c->C; i++) s += x[i];
            const double mu = s / c->C;
            for (int i = 0; i < c->C; i++) v += (x[i] - mu) * (x[i] - mu);
            const double r = 1.0 / sqrt(v / c->C + c->eps);
            for (int i = 0; i < c->C; i++) o[i] = (x[i] - mu) * r * c->w[i] + c->b[i];
            c->mean[t] = mu;
            c->rstd[t] = r;
        }
    }
}

static double norm_loss(void *vc) {
    norm_ctx *c = vc;
    norm_ref(c);
    return dotR(c->out, c->R, (size_t)c->T * c->C);
}

static void test_norm(int rms, int T, int C, size_t max_checks) {
    const size_t n = (size_t)T * C;
    const float eps = 1e-5f;
    float *x = test_falloc(n), *w = test_falloc(C), *b = test_falloc(C), *R = test_falloc(n), *out = test_falloc(n);
    float *mean = test_falloc(T), *rstd = test_falloc(T);
    double *xd = dalloc(n), *wd = dalloc(C), *bd = dalloc(C);
    /* rows with an offset mean and spread scales exercise the centering */
    for (int t = 0; t < T; t++) {
        const float off = test_frand(-2, 2), sc = test_frand(0.2f, 3.0f);
        for (int i = 0; i < C; i++) {
            x[(size_t)t * C + i] = off + sc * test_frand(-1, 1);
            xd[(size_t)t * C + i] = x[(size_t)t * C + i];
        }
    }
    fill(w, wd, C, 0.5f, 1.5f);
    fill(b, bd, C, -0.5f, 0.5f);
    fill(R, NULL, n, -1, 1);
    norm_ctx c = {xd, wd, bd, R, T, C, rms, eps, dalloc(n), dalloc(T), dalloc(T)};
    norm_ref(&c);
    char what[80];
    const char *nm = rms ? "rmsnorm" : "layernorm";
    if (rms) graft_rmsnorm_forward(out, rstd, x, w, T, C, eps);
    else graft_layernorm_forward(out, mean, rstd, x, w, b, T, C, eps);
    snprintf(what, sizeof what, "%s T=%d C=%d out", nm, T, C);
    check_close(what, out, c.out, n, 2e-6, 2e-6);
    snprintf(what, sizeof what, "%s T=%d C=%d rstd", nm, T, C);
    check_close(what, rstd, c.rstd, T, 2e-6, 0);
    if (!rms) {
        snprintf(what, sizeof what, "%s T=%d C=%d mean", nm, T, C);
        check_close(what, mean, c.mean, T, 1e-6, 1e-7);
    }
    /* saved statistics are optional */
    float *out2 = test_falloc(n);
    if (rms) graft_rmsnorm_forward(out2, NULL, x, w, T, C, eps);
    else graft_layernorm_forward(out2, NULL, NULL, x, w, b, T, C, eps);
    CHECK(memcmp(out, out2, n * sizeof(float)) == 0);

    float *dx = test_falloc(n), *dw = test_falloc(C), *db = test_falloc(C);
    float *dx0 = test_falloc(n), *dw0 = test_falloc(C), *db0 = test_falloc(C);
    fill(dx0, NULL, n, -1, 1);
    fill(dw0, NULL, C, -1, 1);
    fill(db0, NULL, C, -1, 1);
    memcpy(dx, dx0, n * sizeof(float));
    memcpy(dw, dw0, C * sizeof(float));
    memcpy(db, db0, C * sizeof(float));
    for (int rep = 1; rep <= 2; rep++) {
        if (rms) graft_rmsnorm_backward(dx, dw, R, x, w, rstd, T, C);
        else graft_layernorm_backward(dx, dw, db, R, x, w, mean, rstd, T, C);
        snprintf(what, sizeof what, "%s T=%d C=%d dx x%d", nm, T, C, rep);
        check_grad(what, norm_loss, &c, xd, n, dx, dx0, rep, max_checks);
        snprintf(what, sizeof what, "%s T=%d C=%d dw x%d", nm, T, C, rep);
        check_grad(what, norm_loss, &c, wd, C, dw, dw0, rep, max_checks);
        if (!rms) {
            snprintf(what, sizeof what, "%s T=%d C=%d db x%d", nm, T, C, rep);
            check_grad(what, norm_loss, &c, bd, C, db, db0, rep, max_checks);
        }
    }
    /* weight gradients are split by column, never by row: the bits must not
     * depend on the thread count */
    if (n > 40000) {
        float *dwa = test_falloc(C), *dwb = test_falloc(C), *dba = test_falloc(C), *dbb = test_falloc(C);
        float *dxa = test_falloc(n), *dxb = test_falloc(n);
        const int saved = graft_get_threads();
        graft_set_threads(1);
        if (rms) graft_rmsnorm_backward(dxa, dwa, R, x, w, rstd, T, C);
        else graft_layernorm_backward(dxa, dwa, dba, R, x, w, mean, rstd, T, C);
        graft_set_threads(2);
        if (rms) graft_rmsnorm_backward(dxb, dwb, R, x, w, rstd, T, C);
        else graft_layernorm_backward(dxb, dwb, dbb, R, x, w, mean, rstd, T, C);
        graft_set_threads(saved);
        CHECK(memcmp(dwa, dwb, C * sizeof(float)) == 0 && memcmp(dba, dbb, C * sizeof(float)) == 0 &&
              memcmp(dxa, dxb, n * sizeof(float)) == 0);
        graft_free_aligned(dwa); graft_free_aligned(dwb); graft_free_aligned(dba);
        graft_free_aligned(dbb); graft_free_aligned(dxa); graft_free_aligned(dxb);
    }
    graft_free_aligned(x); graft_free_aligned(w); graft_free_aligned(b); graft_free_aligned(R);
    graft_free_aligned(out); graft_free_aligned(out2); graft_free_aligned(mean);
    graft_free_aligned(rstd); graft_free_aligned(dx); graft_free_aligned(dw);
    graft_free_aligned(db); graft_free_aligned(dx0); graft_free_aligned(dw0); graft_free_aligned(db0);
    free(xd); free(wd); free(bd); free(c.out); free(c.mean); free(c.rstd);
}

/* ------------------------------------------------------------------ activations */

static double gelu_ref(double u) {
    return 0.5 * u * (1.0 + tanh(sqrt(2.0 / M_PI) * (u + 0.044715 * u * u * u)));
}
static double silu_ref(double g) { return g / (1.0 + exp(-g)); }

typedef struct {
    double *a, *b; /* gelu: a = x; swiglu: a = gate, b = up */
    const float *R;
    size_t n;
} act_ctx;

static double gelu_loss(void *vc) {
    const act_ctx *c = vc;
    double L = 0.0;
    for (size_t i = 0; i < c->n; i++) L += gelu_ref(c->a[i]) * c->R[i];
    return L;
}
static double swiglu_loss(void *vc) {
    const act_ctx *c = vc;
    double L = 0.0;
    for (size_t i = 0; i < c->n; i++) L += silu_ref(c->a[i]) * c->b[i] * c->R[i];
    return L;
}

static void test_gelu(size_t n, size_t max_checks) {
    float *x = test_falloc(n), *out = test_falloc(n), *R = test_falloc(n), *dx = test_falloc(n), *dx0 = test_falloc(n);
    double *xd = dalloc(n), *ref = dalloc(n);
    fill(x, xd, n, -7, 7);
    if (n > 4) { /* the edges of the interesting range, exactly */
        x[0] = 0.0f; x[1] = -12.0f; x[2] = 12.0f; x[3] = 1e-4f;
        for (int i = 0; i < 4; i++) xd[i] = x[i];
    }
    fill(R, NULL, n, -1, 1);
    fill(dx0, NULL, n, -1, 1);
    memcpy(dx, dx0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) ref[i] = gelu_ref(xd[i]);
    graft_gelu_forward(out, x, n);
    char what[64];
    snprintf(what, sizeof what, "gelu n=%zu out", n);
    check_close(what, out, ref, n, 3e-6, 1e-7);
    act_ctx c = {xd, NULL, R, n};
    for (int rep = 1; rep <= 2; rep++) {
        graft_gelu_backward(dx, R, x, n);
        snprintf(what, sizeof what, "gelu n=%zu dx x%d", n, rep);
        check_grad(what, gelu_loss, &c, xd, n, dx, dx0, rep, max_checks);
    }
    graft_free_aligned(x); graft_free_aligned(out); graft_free_aligned(R);
    graft_free_aligned(dx); graft_free_aligned(dx0);
    free(xd); free(ref);
}

static void test_swiglu(size_t n, size_t max_checks) {
    float *g = test_falloc(n), *u = test_falloc(n), *out = test_falloc(n), *R = test_falloc(n);
    float *dg = test_falloc(n), *du = test_falloc(n), *dg0 = test_falloc(n), *du0 = test_falloc(n);
    double *gd = dalloc(n), *ud = dalloc(n), *ref = dalloc(n);
    fill(g, gd, n, -9, 9);
    fill(u, ud, n, -2, 2);
    fill(R, NULL, n, -1, 1);
    fill(dg0, NULL, n, -1, 1);
    fill(du0, NULL, n, -1, 1);
    memcpy(dg, dg0, n * sizeof(float));
    memcpy(du, du0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) ref[i] = silu_ref(gd[i]) * ud[i];
    graft_swiglu_forward(out, g, u, n);
    char what[64];
    snprintf(what, sizeof what, "swiglu n=%zu out", n);
    check_close(what, out, ref, n, 3e-6, 1e-7);
    act_ctx c = {gd, ud, R, n};
    for (int rep = 1; rep <= 2; rep++) {
        graft_swiglu_backward(dg, du, R, g, u, n);
        snprintf(what, sizeof what, "swiglu n=%zu dgate x%d", n, rep);
        check_grad(what, swiglu_loss, &c, gd, n, dg, dg0, rep, max_checks);
        snprintf(what, sizeof what, "swiglu n=%zu dup x%d", n, rep);
        check_grad(what, swiglu_loss, &c, ud, n, du, du0, rep, max_checks);
    }
    /* either gradient alone */
    float *dg1 = test_falloc(n), *du1 = test_falloc(n);
    graft_swiglu_backward(dg1, NULL, R, g, u, n);
    graft_swiglu_backward(NULL, du1, R, g, u, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += !(fabsf(dg1[i] - (dg[i] - dg0[i]) / 2) <= 1e-5f * (1 + fabsf(dg1[i])));
        bad += !(fabsf(du1[i] - (du[i] - du0[i]) / 2) <= 1e-5f * (1 + fabsf(du1[i])));
    }
    CHECK_MSG(bad == 0, "swiglu backward with one NULL gradient: %d entries differ", bad);
    graft_free_aligned(g); graft_free_aligned(u); graft_free_aligned(out); graft_free_aligned(R);
    graft_free_aligned(dg); graft_free_aligned(du); graft_free_aligned(dg0); graft_free_aligned(du0);
    graft_free_aligned(dg1); graft_free_aligned(du1);
    free(gd); free(ud); free(ref);
}

/* ------------------------------------------------------------------ RoPE */

typedef struct {
    double *x;
    const float *R;
    const int *pos;
    int T, H, D, ld, interleaved;
    double theta;
    double *out;
} rope_ctx;

/* exact math: angle = pos * theta^(-2j/D) in double */
static void rope_ref(rope_ctx *c) {
    const int half = c->D / 2;
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++) {
            const double *x = c->x + (size_t)t * c->ld + (size_t)h * c->D;
            double *o = c->out + (size_t)t * c->ld + (size_t)h * c->D;
            for (int j = 0; j < half; j++) {
                const double ang = c->pos[t] * pow(c->theta, -2.0 * j / c->D);
                const int i0 = c->interleaved ? 2 * j : j, i1 = c->interleaved ? 2 * j + 1 : j + half;
                o[i0] = x[i0] * cos(ang) - x[i1] * sin(ang);
                o[i1] = x[i0] * sin(ang) + x[i1] * cos(ang);
            }
        }
}

static double rope_loss(void *vc) {
    rope_ctx *c = vc;
    rope_ref(c);
    double L = 0.0;
    for (int t = 0; t < c->T; t++)
        for (int i = 0; i < c->H * c->D; i++)
            L += c->out[(size_t)t * c->ld + i] * c->R[(size_t)t * c->ld + i];
    return L;
}

static void test_rope(int interleaved, int T, int H, int D, size_t max_checks) {
    const int ld = H * D + 5; /* strided rows, like q inside a fused qkv row */
    const size_t n = (size_t)T * ld;
    int *pos = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) pos[t] = t < 5 ? (int[]){0, 3, 7, 100, 2047}[t] : (t * 37) % 300;
    float *x = test_falloc(n), *R = test_falloc(n), *g = test_falloc(n);
    double *xd = dalloc(n);
    fill(x, xd, n, -1, 1);
    fill(R, NULL, n, -1, 1);
    rope_ctx c = {xd, R, pos, T, H, D, ld, interleaved, 10000.0, dalloc(n)};
    rope_ref(&c);
    float *y = test_falloc(n);
    memcpy(y, x, n * sizeof(float));
    graft_rope_forward(y, ld, pos, T, H, D, 10000.0f, interleaved);
    /* the kernel rounds angles to float like HF and llama2.c: at position p
     * the angle is off by up to ~p * 6e-8 rad, which bounds the tolerance */
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < ld; i++) {
            const size_t k = (size_t)t * ld + i;
            if (i >= H * D) { /* the gap columns are not touched */
                bad += y[k] != x[k];
                continue;
            }
            const double tol = 2e-6 + 2.0 * pos[t] * 6e-8;
            if (!(fabs(y[k] - c.out[k]) <= tol)) {
                if (bad < 3) fprintf(stderr, "  rope[%d,%d] = %.9g want %.9g\n", t, i, y[k], c.out[k]);
                bad++;
            }
        }
    CHECK_MSG(bad == 0, "rope(interleaved=%d) forward: %d entries off", interleaved, bad);
    /* backward: the gradient of sum(rope(x) R) w.r.t. x, computed in place
     * from dx = R (a transform, not an accumulation) */
    memcpy(g, R, n * sizeof(float));
    graft_rope_backward(g, ld, pos, T, H, D, 10000.0f, interleaved);
    bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = H * D; i < ld; i++) bad += g[(size_t)t * ld + i] != R[(size_t)t * ld + i];
    CHECK_MSG(bad == 0, "rope backward touched %d gap entries", bad);
    char what[64];
    snprintf(what, sizeof what, "rope(interleaved=%d) dx", interleaved);
    /* check only the head columns: zero the gap in a copy of g */
    float *gh = test_falloc(n);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < H * D; i++) gh[(size_t)t * ld + i] = g[(size_t)t * ld + i];
    check_grad(what, rope_loss, &c, xd, n, gh, NULL, 1, max_checks);
    /* forward then backward with the same input is the identity */
    memcpy(g, y, n * sizeof(float));
    graft_rope_backward(g, ld, pos, T, H, D, 10000.0f, interleaved);
    bad = 0;
    for (size_t k = 0; k < n; k++) bad += !(fabsf(g[k] - x[k]) <= 2e-6f);
    CHECK_MSG(bad == 0, "rope backward(forward(x)) != x in %d entries", bad);
    graft_free_aligned(x); graft_free_aligned(R); graft_free_aligned(g); graft_free_aligned(y);
    graft_free_aligned(gh);
    free(xd); free(c.out); free(pos);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    double *q, *k, *v; /* may point into one fused buffer */
    int ldq, ldkv;
    const float *R; /* [T, H*D] */
    const graft_seqs *seqs;
    int H, KV, D;
    double *out, *att; /* reference outputs of the last evaluation */
} attn_ctx;

static void attn_ref(attn_ctx *c) {
    const int H = c->H, D = c->D, group = H / c->KV;
    const double scale = 1.0 / sqrt((double)D);
    size_t aoff = 0;
    double *sc = dalloc(4096);
    for (int s = 0; s < c->seqs->n; s++) {
        const int r0 = c->seqs->start[s], len = c->seqs->start[s + 1] - r0;
        for (int h = 0; h < H; h++) {
            const int g = h / group;
            for (int t = 0; t < len; t++) {
                const double *q = c->q + (size_t)(r0 + t) * c->ldq + (size_t)h * D;
                double m = -INFINITY, sum = 0.0;
                for (int u = 0; u <= t; u++) {
                    const double *k = c->k + (size_t)(r0 + u) * c->ldkv + (size_t)g * D;
                    double d = 0.0;
                    for (int i = 0; i < D; i++) d += q[i] * k[i];
                    sc[u] = d * scale;
                    if (sc[u] > m) m = sc[u];
                }
                for (int u = 0; u <= t; u++) sum += (sc[u] = exp(sc[u] - m));
                double *o = c->out + (size_t)(r0 + t) * H * D + (size_t)h * D;
                for (int i = 0; i < D; i++) o[i] = 0.0;
                double *arow = c->att + aoff + (size_t)h * len * len + (size_t)t * len;
                for (int u = 0; u < len; u++) arow[u] = 0.0;
                for (int u = 0; u <= t; u++) {
                    const double p = sc[u] / sum;
                    arow[u] = p;
                    const double *v = c->v + (size_t)(r0 + u) * c->ldkv + (size_t)g * D;
                    for (int i = 0; i < D; i++) o[i] += p * v[i];
                }
            }
        }
        aoff += (size_t)H * len * len;
    }
    free(sc);
}

static double attn_loss(void *vc) {
    attn_ctx *c = vc;
    attn_ref(c);
    return dotR(c->out, c->R, (size_t)c->seqs->start[c->seqs->n] * c->H * c->D);
}

/*
 * fused = 1: q, k and v live in one [T, H*D + 2*KV*D] buffer (GPT-2's c_attn
 * output, generalized to grouped KV), so all three have the same row stride
 * and the gradient buffer has the same shape. fused = 0: separate contiguous
 * buffers, ldq = H*D, ldkv = KV*D.
 */
static void test_attention(const int *lens, int nseq, int H, int KV, int D, int fused, float amp,
                           size_t max_checks) {
    int *start = malloc(sizeof(int) * (nseq + 1));
    start[0] = 0;
    for (int s = 0; s < nseq; s++) start[s + 1] = start[s] + lens[s];
    const int T = start[nseq], HD = H * D;
    const graft_seqs seqs = {nseq, start};
    const int W = HD + 2 * KV * D;
    int ldq, ldkv;
    size_t nq, nkv;
    float *bufq, *bufk, *bufv;      /* allocations */
    float *q, *k, *v;               /* views */
    double *dq_, *dk_, *dv_;        /* double copies (allocations) */
    double *qd, *kd, *vd;           /* double views */
    if (fused) {
        ldq = ldkv = W;
        nq = (size_t)T * W;
        nkv = 0;
        bufq = test_falloc(nq);
        bufk = bufv = NULL;
        dq_ = dalloc(nq);
        dk_ = dv_ = NULL;
        fill(bufq, dq_, nq, -amp, amp);
        q = bufq; k = bufq + HD; v = bufq + HD + KV * D;
        qd = dq_; kd = dq_ + HD; vd = dq_ + HD + KV * D;
    } else {
        ldq = HD;
        ldkv = KV * D;
        nq = (size_t)T * HD;
        nkv = (size_t)T * KV * D;
        bufq = test_falloc(nq); bufk = test_falloc(nkv); bufv = test_falloc(nkv);
        dq_ = dalloc(nq); dk_ = dalloc(nkv); dv_ = dalloc(nkv);
        fill(bufq, dq_, nq, -amp, amp);
        fill(bufk, dk_, nkv, -amp, amp);
        fill(bufv, dv_, nkv, -1.5f, 1.5f);
        q = bufq; k = bufk; v = bufv;
        qd = dq_; kd = dk_; vd = dv_;
        if (amp > 5.0f) {
            /* keys past the first key tile of the online softmax (256) get
             * 3x the norm, so a later tile raises the running max by far
             * more than exp's range (88): skipping the rescale overflows */
            for (int s = 0; s < nseq; s++)
                for (int t = 256; t < lens[s]; t++)
                    for (int i = 0; i < KV * D; i++) {
                        const size_t e = (size_t)(start[s] + t) * ldkv + i;
                        k[e] *= 3.0f;
                        kd[e] = k[e];
                    }
        }
    }
    float *R = test_falloc((size_t)T * HD), *out = test_falloc((size_t)T * HD);
    fill(R, NULL, (size_t)T * HD, -1, 1);
    const size_t asz = graft_attention_att_size(&seqs, H);
    size_t want_asz = 0;
    for (int s = 0; s < nseq; s++) want_asz += (size_t)H * lens[s] * lens[s];
    CHECK(asz == want_asz);
    float *att = test_falloc(asz);
    for (size_t i = 0; i < asz; i++) att[i] = NAN; /* every entry must be written */
    attn_ctx c = {qd, kd, vd, ldq, ldkv, R, &seqs, H, KV, D, dalloc((size_t)T * HD), dalloc(asz)};
    attn_ref(&c);

    char what[96];
    snprintf(what, sizeof what, "attention(H=%d KV=%d D=%d fused=%d T=%d) out", H, KV, D, fused, T);
    graft_attention_forward(out, att, q, ldq, k, v, ldkv, &seqs, H, KV, D, 0);
    /* float scores carry ~|score| * 1e-7 absolute error, and softmax turns
     * that into relative error of the probabilities: scale with amp^2 */
    const double sharp = amp * amp > 4.0f ? amp * amp / 4.0 : 1.0;
    check_close(what, out, c.out, (size_t)T * HD, 1e-5 * sharp, 2e-6 * sharp);
    snprintf(what, sizeof what, "attention(H=%d KV=%d T=%d) att", H, KV, T);
    check_close(what, att, c.att, asz, 1e-5 * sharp, 1e-7 * sharp);
    /* without att (the online-softmax path) the output is the same up to
     * rounding */
    float *out2 = test_falloc((size_t)T * HD);
    graft_attention_forward(out2, NULL, q, ldq, k, v, ldkv, &seqs, H, KV, D, 0);
    snprintf(what, sizeof what, "attention(H=%d KV=%d T=%d) out without att", H, KV, T);
    check_close(what, out2, c.out, (size_t)T * HD, 1e-5 * sharp, 2e-6 * sharp);

    /* backward into gradient buffers shaped like q/k/v, starting non-zero */
    float *gq, *gk, *gv, *g0q = NULL, *g0k = NULL, *g0v = NULL, *gbufq, *gbufk = NULL, *gbufv = NULL;
    if (fused) {
        gbufq = test_falloc(nq);
        g0q = test_falloc(nq);
        fill(g0q, NULL, nq, -1, 1);
        memcpy(gbufq, g0q, nq * sizeof(float));
        gq = gbufq; gk = gbufq + HD; gv = gbufq + HD + KV * D;
    } else {
        gbufq = test_falloc(nq); gbufk = test_falloc(nkv); gbufv = test_falloc(nkv);
        g0q = test_falloc(nq); g0k = test_falloc(nkv); g0v = test_falloc(nkv);
        fill(g0q, NULL, nq, -1, 1);
        fill(g0k, NULL, nkv, -1, 1);
        fill(g0v, NULL, nkv, -1, 1);
        memcpy(gbufq, g0q, nq * sizeof(float));
        memcpy(gbufk, g0k, nkv * sizeof(float));
        memcpy(gbufv, g0v, nkv * sizeof(float));
        gq = gbufq; gk = gbufk; gv = gbufv;
    }
    for (int rep = 1; rep <= 2; rep++) {
        graft_attention_backward(gq, gk, gv, ldq, ldkv, R, att, q, k, v, &seqs, H, KV, D, 0);
        if (fused) {
            /* one sweep over the whole fused row covers dq, dk and dv, and
             * checks that nothing outside the used columns moves */
            snprintf(what, sizeof what, "attention(H=%d KV=%d fused T=%d) dqkv x%d", H, KV, T, rep);
            check_grad(what, attn_loss, &c, dq_, nq, gbufq, g0q, rep, max_checks);
        } else {
            snprintf(what, sizeof what, "attention(H=%d KV=%d T=%d) dq x%d", H, KV, T, rep);
            check_grad(what, attn_loss, &c, dq_, nq, gbufq, g0q, rep, max_checks);
            snprintf(what, sizeof what, "attention(H=%d KV=%d T=%d) dk x%d", H, KV, T, rep);
            check_grad(what, attn_loss, &c, dk_, nkv, gbufk, g0k, rep, max_checks);
            snprintf(what, sizeof what, "attention(H=%d KV=%d T=%d) dv x%d", H, KV, T, rep);
            check_grad(what, attn_loss, &c, dv_, nkv, gbufv, g0v, rep, max_checks);
        }
    }

    /* KV-cache decoding of the last sequence reproduces the forward rows
     * (same math, different blocking: equal up to rounding) */
    const int ls = nseq - 1, r0 = start[ls], len = lens[ls];
    const int splits[][2] = {{0, len}, {len - 1, 1}, {len / 2, len - len / 2}};
    for (int sp = 0; sp < 3; sp++) {
        const int past = splits[sp][0], n_new = splits[sp][1];
        if (n_new <= 0) continue;
        float *oc = test_falloc((size_t)n_new * HD);
        graft_attention_cached(oc, q + (size_t)(r0 + past) * ldq, ldq, k + (size_t)r0 * ldkv,
                               v + (size_t)r0 * ldkv, ldkv, past, n_new, H, KV, D);
        int bad = 0;
        for (size_t i = 0; i < (size_t)n_new * HD; i++) {
            const float want = out[(size_t)(r0 + past) * HD + i];
            bad += !(fabsf(oc[i] - want) <= 2e-6f * (float)sharp * (1 + fabsf(want)));
        }
        CHECK_MSG(bad == 0, "attention_cached(past=%d, n_new=%d): %d entries differ", past, n_new, bad);
        graft_free_aligned(oc);
    }

    /* Suffix passes (from > 0): rows from `from` of each sequence on are
     * recomputed and match the full pass; earlier query rows keep their
     * out/att rows and give no gradient; keys before `from` get no dk/dv. */
    {
        int minlen = lens[0];
        for (int s = 1; s < nseq; s++) minlen = lens[s] < minlen ? lens[s] : minlen;
        const int from = minlen / 2 + 1 < minlen ? minlen / 2 + 1 : minlen - 1;
        float *o3 = test_falloc((size_t)T * HD), *a3 = test_falloc(asz);
        for (size_t i = 0; i < (size_t)T * HD; i++) o3[i] = 7.0f;
        memcpy(a3, att, asz * sizeof(float));
        graft_attention_forward(o3, a3, q, ldq, k, v, ldkv, &seqs, H, KV, D, from);
        int bad_new = 0, bad_old = 0;
        for (int s = 0; s < nseq; s++)
            for (int t = 0; t < lens[s]; t++)
                for (int i = 0; i < HD; i++) {
                    const size_t e = (size_t)(start[s] + t) * HD + i;
                    if (t < from) bad_old += o3[e] != 7.0f;
                    else bad_new += !(fabsf(o3[e] - out[e]) <= 2e-6f * (float)sharp * (1 + fabsf(out[e])));
                }
        CHECK_MSG(bad_new == 0 && bad_old == 0, "attention from %d (T=%d): %d recomputed rows differ, %d earlier changed",
                  from, T, bad_new, bad_old);
        /* gradients: the full backward of a loss on rows >= from only */
        float *Rs = test_falloc((size_t)T * HD);
        memcpy(Rs, R, (size_t)T * HD * sizeof(float));
        for (int s = 0; s < nseq; s++)
            for (int t = 0; t < from; t++) memset(Rs + (size_t)(start[s] + t) * HD, 0, (size_t)HD * sizeof(float));
        const size_t nb = fused ? nq : nq + 2 * nkv;
        float *full = test_falloc(nb), *part = test_falloc(nb);
        memset(full, 0, nb * sizeof(float));
        for (size_t i = 0; i < nb; i++) part[i] = 3.0f;
        float *fq = full, *pq = part;
        float *fk = fused ? full + HD : full + nq, *fv = fused ? full + HD + KV * D : full + nq + nkv;
        float *pk = fused ? part + HD : part + nq, *pv = fused ? part + HD + KV * D : part + nq + nkv;
        /* the suffix pass adds into its rows: zero them, leave the rest at 3 */
        for (int s = 0; s < nseq; s++)
            for (int t = from; t < lens[s]; t++) {
                const size_t row = (size_t)(start[s] + t);
                memset(pq + row * ldq, 0, (size_t)HD * sizeof(float));
                memset(pk + row * ldkv, 0, (size_t)KV * D * sizeof(float));
                memset(pv + row * ldkv, 0, (size_t)KV * D * sizeof(float));
            }
        graft_attention_backward(fq, fk, fv, ldq, ldkv, Rs, att, q, k, v, &seqs, H, KV, D, 0);
        graft_attention_backward(pq, pk, pv, ldq, ldkv, R, att, q, k, v, &seqs, H, KV, D, from);
        int bad_g = 0, bad_keep = 0;
        for (int s = 0; s < nseq; s++)
            for (int t = 0; t < lens[s]; t++) {
                const size_t row = (size_t)(start[s] + t);
                const float *g3[3][2] = {{fq + row * ldq, pq + row * ldq}, {fk + row * ldkv, pk + row * ldkv},
                                         {fv + row * ldkv, pv + row * ldkv}};
                for (int b = 0; b < 3; b++)
                    for (int i = 0; i < (b ? KV * D : HD); i++) {
                        if (t < from) bad_keep += g3[b][1][i] != 3.0f;
                        else bad_g += !(fabsf(g3[b][1][i] - g3[b][0][i]) <= 1e-5f * (float)sharp * (1 + fabsf(g3[b][0][i])));
                    }
            }
        CHECK_MSG(bad_g == 0 && bad_keep == 0,
                  "attention backward from %d (T=%d fused=%d): %d gradients differ, %d earlier entries touched", from, T,
                  fused, bad_g, bad_keep);
        graft_free_aligned(o3); graft_free_aligned(a3); graft_free_aligned(Rs);
        graft_free_aligned(full); graft_free_aligned(part);
    }

    /* the forward result does not depend on the thread count */
    const int saved = graft_get_threads();
    graft_set_threads(1);
    graft_attention_forward(out2, att, q, ldq, k, v, ldkv, &seqs, H, KV, D, 0);
    graft_set_threads(saved);
    CHECK(memcmp(out, out2, sizeof(float) * T * HD) == 0);

    graft_free_aligned(bufq); graft_free_aligned(bufk); graft_free_aligned(bufv);
    graft_free_aligned(R); graft_free_aligned(out); graft_free_aligned(out2); graft_free_aligned(att);
    graft_free_aligned(gbufq); graft_free_aligned(gbufk); graft_free_aligned(gbufv);
    graft_free_aligned(g0q); graft_free_aligned(g0k); graft_free_aligned(g0v);
    free(dq_); free(dk_); free(dv_); free(c.out); free(c.att); free(start);
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
    double *wte, *wpe;
    const int *ids, *pos;
    const float *R;
    int T, C;
} emb_ctx;

static double emb_loss(void *vc) {
    const emb_ctx *c = vc;
    double L = 0.0;
    for (int t = 0; t < c->T; t++)
        for (int i = 0; i < c->C; i++) {
            double e = c->wte[(size_t)c->ids[t] * c->C + i];
            if (c->wpe) e += c->wpe[(size_t)c->pos[t] * c->C + i];
            L += e * c->R[(size_t)t * c->C + i];
        }
    return L;
}

static void test_embedding(int T, int C, int V, int n_ctx, int with_wpe, size_t max_checks) {
    int *ids = malloc(sizeof(int) * T), *pos = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) {
        ids[t] = (t * 7 + t / 3) % V; /* repeats: several rows hit one embedding row */
        pos[t] = (t * 5) % n_ctx;
    }
    ids[0] = V - 1; /* the last row of the table too */
    float *wte = test_falloc((size_t)V * C), *wpe = test_falloc((size_t)n_ctx * C), *R = test_falloc((size_t)T * C);
    float *out = test_falloc((size_t)T * C);
    double *wted = dalloc((size_t)V * C), *wped = dalloc((size_t)n_ctx * C);
    fill(wte, wted, (size_t)V * C, -1, 1);
    fill(wpe, wped, (size_t)n_ctx * C, -1, 1);
    fill(R, NULL, (size_t)T * C, -1, 1);
    graft_embed_forward(out, ids, pos, wte, with_wpe ? wpe : NULL, T, C);
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++) {
            float e = wte[(size_t)ids[t] * C + i];
            if (with_wpe) e += wpe[(size_t)pos[t] * C + i];
            bad += out[(size_t)t * C + i] != e; /* one float add: exact */
        }
    CHECK_MSG(bad == 0, "embedding forward (wpe=%d): %d entries wrong", with_wpe, bad);

    float *dwte = test_falloc((size_t)V * C), *dwpe = test_falloc((size_t)n_ctx * C);
    float *dwte0 = test_falloc((size_t)V * C), *dwpe0 = test_falloc((size_t)n_ctx * C);
    fill(dwte0, NULL, (size_t)V * C, -1, 1);
    fill(dwpe0, NULL, (size_t)n_ctx * C, -1, 1);
    memcpy(dwte, dwte0, sizeof(float) * V * C);
    memcpy(dwpe, dwpe0, sizeof(float) * n_ctx * C);
    emb_ctx c = {wted, with_wpe ? wped : NULL, ids, pos, R, T, C};
    char what[64];
    for (int rep = 1; rep <= 2; rep++) {
        graft_embed_backward(dwte, with_wpe ? dwpe : NULL, R, ids, pos, T, C);
        snprintf(what, sizeof what, "embedding(T=%d wpe=%d) dwte x%d", T, with_wpe, rep);
        check_grad(what, emb_loss, &c, wted, (size_t)V * C, dwte, dwte0, rep, max_checks);
        if (with_wpe) {
            snprintf(what, sizeof what, "embedding(T=%d) dwpe x%d", T, rep);
            check_grad(what, emb_loss, &c, wped, (size_t)n_ctx * C, dwpe, dwpe0, rep, max_checks);
        }
    }
    if (!with_wpe) CHECK(memcmp(dwpe, dwpe0, sizeof(float) * n_ctx * C) == 0);
    /* a frozen token table: only dwpe */
    if (with_wpe) {
        float *d2 = test_falloc((size_t)n_ctx * C);
        graft_embed_backward(NULL, d2, R, ids, pos, T, C);
        bad = 0;
        for (size_t i = 0; i < (size_t)n_ctx * C; i++)
            bad += !(fabsf(d2[i] - (dwpe[i] - dwpe0[i]) / 2) <= 1e-5f);
        CHECK_MSG(bad == 0, "embedding backward with dwte NULL: %d entries differ", bad);
        graft_free_aligned(d2);
    }
    graft_free_aligned(wte); graft_free_aligned(wpe); graft_free_aligned(R); graft_free_aligned(out);
    graft_free_aligned(dwte); graft_free_aligned(dwpe); graft_free_aligned(dwte0);
    graft_free_aligned(dwpe0);
    free(wted); free(wped); free(ids); free(pos);
}

/* ------------------------------------------------------------------ cross-entropy */

typedef struct {
    double *logits;
    const int *target;
    const float *dloss;
    int T, V;
} ce_ctx;

static double ce_ref_row(const double *x, int V, int y) {
    double m = -INFINITY, s = 0.0;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V; i++) s += exp(x[i] - m);
    return m + log(s) - x[y];
}

static double ce_loss(void *vc) {
    const ce_ctx *c = vc;
    double L = 0.0;
    for (int t = 0; t < c->T; t++)
        if (c->target[t] >= 0) L += ce_ref_row(c->logits + (size_t)t * c->V, c->V, c->target[t]) * c->dloss[t];
    return L;
}

static void test_crossentropy(int T, int V, float spread, size_t max_checks) {
    int *target = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) target[t] = (t % 3 == 1) ? -1 : (int)((t * 7919u + 3) % (unsigned)V);
    target[0] = V - 1;
    const size_t n = (size_t)T * V;
    float *x = test_falloc(n), *loss = test_falloc(T), *dl = test_falloc(T), *g = test_falloc(n), *g2 = test_falloc(n);
    double *xd = dalloc(n), *ref = dalloc(T);
    fill(x, xd, n, -spread, spread);
    fill(dl, NULL, T, 0.2f, 1.5f);
    for (int t = 0; t < T; t++) ref[t] = target[t] < 0 ? 0.0 : ce_ref_row(xd + (size_t)t * V, V, target[t]);
    for (int t = 0; t < T; t++) loss[t] = NAN;
    graft_crossentropy_forward(loss, x, target, T, V);
    char what[64];
    snprintf(what, sizeof what, "crossentropy T=%d V=%d loss", T, V);
    check_close(what, loss, ref, T, 2e-6, 2e-6);
    for (int t = 0; t < T; t++)
        if (target[t] < 0) CHECK(loss[t] == 0.0f);

    /* backward overwrites: start from garbage */
    for (size_t i = 0; i < n; i++) g[i] = 7.0f;
    graft_crossentropy_backward(g, x, target, dl, T, V);
    ce_ctx c = {xd, target, dl, T, V};
    snprintf(what, sizeof what, "crossentropy T=%d V=%d dlogits", T, V);
    check_grad(what, ce_loss, &c, xd, n, g, NULL, 1, max_checks);
    int zero = 1;
    for (int t = 0; t < T; t++)
        if (target[t] < 0)
            for (int i = 0; i < V; i++) zero &= g[(size_t)t * V + i] == 0.0f;
    CHECK_MSG(zero, "ignored rows must get zero gradient");
    /* in place: dlogits == logits */
    memcpy(g2, x, n * sizeof(float));
    graft_crossentropy_backward(g2, g2, target, dl, T, V);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(fabsf(g2[i] - g[i]) <= 1e-7f + 1e-6f * fabsf(g[i]));
    CHECK_MSG(bad == 0, "crossentropy backward in place differs in %d entries", bad);
    /* a target outside the vocabulary is reported as NaN, not read */
    int bad_t[1] = {V};
    float l1 = 0.0f;
    graft_crossentropy_forward(&l1, x, bad_t, 1, V);
    CHECK(isnan(l1));
    graft_free_aligned(x); graft_free_aligned(loss); graft_free_aligned(dl);
    graft_free_aligned(g); graft_free_aligned(g2);
    free(xd); free(ref); free(target);
}

/* ------------------------------------------------------------------ add / acc */

static void test_elementwise(size_t n) {
    float *a = test_falloc(n), *b = test_falloc(n), *o = test_falloc(n), *a2 = test_falloc(n);
    fill(a, NULL, n, -3, 3);
    fill(b, NULL, n, -3, 3);
    memcpy(a2, a, n * sizeof(float));
    graft_add(o, a, b, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += o[i] != a[i] + b[i]; /* one rounding: exact */
    graft_add(a2, a2, b, n); /* out may alias an input (residual stream) */
    for (size_t i = 0; i < n; i++) bad += a2[i] != o[i];
    memcpy(a2, a, n * sizeof(float));
    graft_acc(a2, b, n);
    for (size_t i = 0; i < n; i++) bad += a2[i] != o[i];
    CHECK_MSG(bad == 0, "graft_add/graft_acc n=%zu: %d entries wrong", n, bad);
    graft_free_aligned(a); graft_free_aligned(b); graft_free_aligned(o); graft_free_aligned(a2);
}

/* ------------------------------------------------------------------ main */

int main(void) {
    /* CTest also runs this with GRAFT_ISA=generic and =avx2 (tests/CMakeLists.txt) */
    const char *isa = getenv("GRAFT_ISA");
    if (isa && strcmp(isa, graft_cpu_isa())) {
        printf("GRAFT_ISA=%s: this CPU cannot run that path; skipped\n", isa);
        return 77;
    }
    graft_set_threads(0);
    printf("kernel path %s, %d threads\n", graft_cpu_isa(), graft_get_threads());
    test_vexpf();
    test_elementwise(1000);
    test_elementwise(100003); /* above the parallel threshold */

    for (int layout = 0; layout <= 1; layout++) {
        test_linear_grad(layout, 1);
        test_linear_grad(layout, 0);
    }

    test_norm(0, 3, 37, 1000);  /* layernorm, full check */
    test_norm(0, 48, 1024, 60); /* layernorm, parallel paths, sampled */
    test_norm(1, 3, 37, 1000);  /* rmsnorm */
    test_norm(1, 48, 1024, 60);

    test_gelu(101, 1000);
    test_gelu(40000, 200);
    test_swiglu(101, 1000);
    test_swiglu(40000, 200);

    test_rope(1, 5, 3, 8, 1000);
    test_rope(0, 5, 3, 8, 1000);
    test_rope(1, 130, 4, 32, 300);
    test_rope(0, 130, 4, 32, 300);

    /* 3 packed sequences of different lengths, GQA H=4 KV=2, fused strided qkv */
    const int lens_a[] = {5, 3, 7};
    test_attention(lens_a, 3, 4, 2, 8, 1, 1.5f, 100000);
    /* plain multi-head, separate buffers, lengths over one softmax chunk (64)
     * and above the parallel threshold; gradients sampled */
    const int lens_b[] = {70, 1, 9};
    test_attention(lens_b, 3, 3, 3, 16, 0, 1.5f, 150);
    /* GQA with 4 query heads per KV head, fused, long sequence */
    const int lens_c[] = {2, 131};
    test_attention(lens_c, 2, 4, 1, 4, 1, 1.5f, 150);
    /* longer than one key tile (256), with a sharp softmax: scores in the
     * hundreds, so a tile whose max exceeds the running max must rescale
     * or exp overflows */
    const int lens_d[] = {300, 3};
    test_attention(lens_d, 2, 2, 1, 8, 0, 12.0f, 40);

    test_embedding(7, 9, 11, 8, 1, 100000);
    test_embedding(7, 9, 11, 8, 0, 100000);
    test_embedding(64, 768, 50, 70, 1, 300);

    test_crossentropy(6, 13, 4.0f, 100000);
    test_crossentropy(3, 50257, 6.0f, 150);

    fd_cache_free();
    return test_finish("test_kernels");
}
