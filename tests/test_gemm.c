/*
 * test_gemm.c - graft_gemm (BLAS or built-in) and graft_gemm_builtin against
 * the double-precision graft_gemm_ref on odd shapes, all four transpose
 * combinations, alpha/beta variants, padded leading dimensions and NaN-filled
 * C with beta = 0; then graft_linear_forward/backward in both weight layouts
 * against naive double loops; then the thread-count knob.
 */
#include "internal.h"
#include "kernels.h"
#include "test.h"

#include <stdint.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static float *alloc_f(size_t n) {
    float *p = graft_alloc_aligned((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

#define SENTINEL 12345.0f

/*
 * One GEMM case. C has ldc = N + pad; the pad columns hold a sentinel that
 * must survive (no writes outside the M x N window). With beta == 0 the
 * window starts as NaN, which must not leak into the result.
 */
static int run_case(gemm_fn fn, const char *name, int ta, int tb, int M, int N, int K, float alpha,
                    float beta, int pad) {
    const int arows = ta ? K : M, acols = ta ? M : K;
    const int brows = tb ? N : K, bcols = tb ? K : N;
    const int lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
    float *A = alloc_f((size_t)arows * lda), *B = alloc_f((size_t)brows * ldb);
    float *C = alloc_f((size_t)M * ldc), *R = alloc_f((size_t)M * ldc);
    for (size_t i = 0; i < (size_t)arows * lda; i++) A[i] = frand();
    for (size_t i = 0; i < (size_t)brows * ldb; i++) B[i] = frand();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            const float c0 = j < N ? (beta == 0.0f ? NAN : frand()) : SENTINEL;
            C[(size_t)i * ldc + j] = R[(size_t)i * ldc + j] = c0;
        }
    fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    graft_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    int bad = 0;
    double worst = 0.0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < ldc; j++) {
            const float got = C[(size_t)i * ldc + j], want = R[(size_t)i * ldc + j];
            /* entries in [-1, 1): float rounding of a K-term sum is far below
             * 2e-6 K in practice; a wrong kernel is off by O(0.1) or more */
            const double tol = j < N ? 2e-6 * (K + 1) * (fabsf(alpha) + 1) + 1e-6 * fabs(want) : 0.0;
            const double err = fabs((double)got - (double)want);
            if (!(err <= tol)) { /* also catches NaN */
                if (bad < 3)
                    fprintf(stderr, "%s ta=%d tb=%d M=%d N=%d K=%d a=%g b=%g pad=%d: C[%d,%d] = %g, want %g\n",
                            name, ta, tb, M, N, K, alpha, beta, pad, i, j, got, want);
                bad++;
            }
            if (err > worst && j < N) worst = err;
        }
    }
    graft_free_aligned(A);
    graft_free_aligned(B);
    graft_free_aligned(C);
    graft_free_aligned(R);
    return bad;
}

static void test_gemm_fn(gemm_fn fn, const char *name) {
    /* Shapes chosen to hit: GEMV paths (M or N = 1), K = 1, edge tiles in
     * every direction, K across the packing depth (256; 768 on AVX-512,
     * where 1700 = two full slices and a ragged one), M across the row
     * block (256 rows for AVX-512), N across the column block (4096), small
     * M with in-place B (M <= 32), the square bulk path and GEMVs whose
     * k-major case runs in bands of rows. */
    static const int shapes[][3] = {
        {1, 1, 1},    {1, 7, 3},     {3, 1, 7},    {7, 17, 3},   {17, 3, 129}, {64, 64, 64},
        {129, 65, 300}, {300, 129, 17}, {1, 300, 129}, {129, 1, 300}, {33, 300, 1}, {9, 40, 513},
        {17, 70, 300}, {32, 96, 64},  {3, 4100, 5}, {300, 300, 300}, {2, 2, 2},  {8, 33, 257},
        {1, 300, 700}, {700, 1, 300}, /* GEMVs big enough for bands of rows (k-major) */
        {37, 150, 1700},
    };
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}, {2.0f, 0.0f}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    int cases = 0, failed = 0;
    for (int s = 0; s < nshapes; s++) {
        for (int t = 0; t < 4; t++) {
            const int ta = t & 1, tb = t >> 1;
            /* alpha/beta and padding rotate with the shape so every
             * combination is seen without a full cartesian product */
            const int v = (s + t) % 4;
            const int pad = (s + t) % 3 == 0 ? 0 : 5;
            const int bad = run_case(fn, name, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                                     ab[v][0], ab[v][1], pad);
            cases++;
            failed += bad != 0;
        }
    }
    /* every alpha/beta variant on one mid-size shape, all transposes, padded */
    for (int v = 0; v < 4; v++)
        for (int t = 0; t < 4; t++) {
            failed += run_case(fn, name, t & 1, t >> 1, 45, 77, 131, ab[v][0], ab[v][1], 3) != 0;
            cases++;
        }
    CHECK_MSG(failed == 0, "%s: %d of %d cases wrong", name, failed, cases);
    printf("%s: %d cases\n", name, cases);

    /* degenerate sizes: K = 0 gives C = beta C; alpha = 0 likewise; M = 0 is a no-op */
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8}, C[4] = {NAN, NAN, NAN, NAN};
    fn(0, 0, 2, 2, 0, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    CHECK(C[0] == 0.0f && C[1] == 0.0f && C[2] == 0.0f && C[3] == 0.0f);
    float C2[4] = {1, 2, 3, 4};
    fn(0, 0, 2, 2, 2, 0.0f, A, 2, B, 2, 2.0f, C2, 2);
    CHECK(C2[0] == 2.0f && C2[1] == 4.0f && C2[2] == 6.0f && C2[3] == 8.0f);
    fn(0, 0, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C2, 2);
    CHECK(C2[0] == 2.0f && C2[3] == 8.0f);
    /* exact small case: [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50] */
    fn(0, 0, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C2, 2);
    CHECK(C2[0] == 19.0f && C2[1] == 22.0f && C2[2] == 43.0f && C2[3] == 50.0f);
    /* A^T B^T: A^T = [1 3; 2 4], B^T = [5 7; 6 8] -> [23 31; 34 46] */
    fn(1, 1, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C2, 2);
    CHECK(C2[0] == 23.0f && C2[1] == 31.0f && C2[2] == 34.0f && C2[3] == 46.0f);
}

/* The built-in GEMM gives every tile to exactly one thread, with a fixed
 * summation order: the result must not depend on the thread count. */
static void test_builtin_deterministic(void) {
    const int M = 200, N = 300, K = 520;
    float *A = alloc_f((size_t)M * K), *B = alloc_f((size_t)N * K);
    float *C1 = alloc_f((size_t)M * N), *C2 = alloc_f((size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = frand();
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = frand();
    const int saved = graft_get_threads();
    graft_set_threads(1);
    graft_gemm_builtin(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
    graft_set_threads(2);
    graft_gemm_builtin(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
    graft_set_threads(saved);
    CHECK(memcmp(C1, C2, (size_t)M * N * sizeof(float)) == 0);
    graft_free_aligned(A);
    graft_free_aligned(B);
    graft_free_aligned(C1);
    graft_free_aligned(C2);
}

/* graft_gemm called from inside an OpenMP parallel region (e.g. by a caller
 * that parallelizes over requests) must still be correct. */
static void test_gemm_in_parallel(void) {
    const int M = 40, N = 50, K = 60;
    float *A = alloc_f((size_t)M * K), *B = alloc_f((size_t)K * N), *R = alloc_f((size_t)M * N);
    float *C[2] = {alloc_f((size_t)M * N), alloc_f((size_t)M * N)};
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = frand();
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = frand();
    graft_gemm_ref(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, R, N);
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; i++) graft_gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C[i], N);
    int bad = 0;
    for (int c = 0; c < 2; c++)
        for (size_t i = 0; i < (size_t)M * N; i++) bad += !(fabsf(C[c][i] - R[i]) <= 1e-4f);
    CHECK_MSG(bad == 0, "%d wrong entries from graft_gemm inside a parallel region", bad);
    graft_free_aligned(A);
    graft_free_aligned(B);
    graft_free_aligned(R);
    graft_free_aligned(C[0]);
    graft_free_aligned(C[1]);
}

/* ------------------------------------------------------------------ linear */

static double wval(const float *w, int layout, int K, int N, int k, int n) {
    return layout == GRAFT_W_KN ? w[(size_t)k * N + n] : w[(size_t)n * K + k];
}

static int count_bad(const float *got, const double *want, size_t n, double rtol, double atol,
                     const char *what) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabs((double)got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
            if (bad < 3) fprintf(stderr, "%s[%zu] = %.9g, want %.9g\n", what, i, got[i], want[i]);
            bad++;
        }
    }
    return bad;
}

static void test_linear(int layout, int M, int K, int N, int with_bias) {
    float *x = alloc_f((size_t)M * K), *w = alloc_f((size_t)K * N), *b = alloc_f(N);
    float *y = alloc_f((size_t)M * N), *dy = alloc_f((size_t)M * N);
    float *dx = alloc_f((size_t)M * K), *dw = alloc_f((size_t)K * N), *db = alloc_f(N);
    float *dx0 = alloc_f((size_t)M * K), *dw0 = alloc_f((size_t)K * N), *db0 = alloc_f(N);
    double *ry = malloc(sizeof(double) * (size_t)M * N), *rdx = malloc(sizeof(double) * (size_t)M * K);
    double *rdw = malloc(sizeof(double) * (size_t)K * N), *rdb = malloc(sizeof(double) * N);
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = frand();
    for (size_t i = 0; i < (size_t)K * N; i++) w[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    for (size_t i = 0; i < (size_t)M * N; i++) dy[i] = frand();
    /* gradients start non-zero: backward must add, not overwrite */
    for (size_t i = 0; i < (size_t)M * K; i++) dx[i] = dx0[i] = frand();
    for (size_t i = 0; i < (size_t)K * N; i++) dw[i] = dw0[i] = frand();
    for (int i = 0; i < N; i++) db[i] = db0[i] = frand();

    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            double s = with_bias ? b[n] : 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)i * K + k] * wval(w, layout, K, N, k, n);
            ry[(size_t)i * N + n] = s;
        }
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += (double)dy[(size_t)i * N + n] * wval(w, layout, K, N, k, n);
            rdx[(size_t)i * K + k] = s;
        }
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) {
            double s = 0.0;
            for (int i = 0; i < M; i++) s += (double)x[(size_t)i * K + k] * dy[(size_t)i * N + n];
            /* stored in w's layout */
            rdw[layout == GRAFT_W_KN ? (size_t)k * N + n : (size_t)n * K + k] = s;
        }
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        for (int i = 0; i < M; i++) s += dy[(size_t)i * N + n];
        rdb[n] = s;
    }

    char what[96];
    const double tol = 3e-6 * (K > M ? (K > N ? K : N) : (M > N ? M : N));
    snprintf(what, sizeof what, "linear %s M=%d K=%d N=%d bias=%d y", layout ? "NK" : "KN", M, K, N,
             with_bias);
    graft_linear_forward(y, x, w, with_bias ? b : NULL, M, K, N, (graft_layout)layout);
    CHECK_MSG(count_bad(y, ry, (size_t)M * N, 1e-5, tol, what) == 0, "%s", what);

    /* twice: each call adds the same gradient again */
    for (int rep = 1; rep <= 2; rep++) {
        graft_linear_backward(dx, dw, with_bias ? db : NULL, dy, x, w, M, K, N, (graft_layout)layout);
        double *e = malloc(sizeof(double) * (size_t)(M * K > K * N ? M * K : K * N));
        for (size_t i = 0; i < (size_t)M * K; i++) e[i] = dx0[i] + rep * rdx[i];
        snprintf(what, sizeof what, "linear %s M=%d K=%d N=%d dx (call %d)", layout ? "NK" : "KN", M, K, N, rep);
        CHECK_MSG(count_bad(dx, e, (size_t)M * K, 1e-5, rep * tol, what) == 0, "%s", what);
        for (size_t i = 0; i < (size_t)K * N; i++) e[i] = dw0[i] + rep * rdw[i];
        snprintf(what, sizeof what, "linear %s M=%d K=%d N=%d dw (call %d)", layout ? "NK" : "KN", M, K, N, rep);
        CHECK_MSG(count_bad(dw, e, (size_t)K * N, 1e-5, rep * tol, what) == 0, "%s", what);
        for (int i = 0; i < N; i++) e[i] = db0[i] + (with_bias ? rep * rdb[i] : 0.0);
        snprintf(what, sizeof what, "linear %s M=%d K=%d N=%d db (call %d)", layout ? "NK" : "KN", M, K, N, rep);
        CHECK_MSG(count_bad(db, e, (size_t)N, 1e-5, rep * tol, what) == 0, "%s", what);
        free(e);
    }
    /* only db wanted: dx and dw may be NULL */
    if (with_bias) {
        for (int i = 0; i < N; i++) db[i] = 0.0f;
        graft_linear_backward(NULL, NULL, db, dy, x, w, M, K, N, (graft_layout)layout);
        CHECK_MSG(count_bad(db, rdb, (size_t)N, 1e-5, tol, "db only") == 0, "db only");
    }

    graft_free_aligned(x); graft_free_aligned(w); graft_free_aligned(b);
    graft_free_aligned(y); graft_free_aligned(dy);
    graft_free_aligned(dx); graft_free_aligned(dw); graft_free_aligned(db);
    graft_free_aligned(dx0); graft_free_aligned(dw0); graft_free_aligned(db0);
    free(ry); free(rdx); free(rdw); free(rdb);
}

static void test_threads(void) {
    const char *be = graft_gemm_backend();
    CHECK(strcmp(be, "openblas") == 0 || strcmp(be, "builtin") == 0);
    const int saved = graft_get_threads();
    graft_set_threads(1);
    CHECK(graft_get_threads() == 1);
    graft_set_threads(0); /* all online CPUs */
#ifdef _OPENMP
    CHECK(graft_get_threads() == (int)sysconf(_SC_NPROCESSORS_ONLN));
#endif
    graft_set_threads(saved);
    CHECK(graft_get_threads() == saved);
}

int main(void) {
    /* CTest also runs this with GRAFT_ISA=generic and =avx2 (tests/CMakeLists.txt) */
    const char *isa = getenv("GRAFT_ISA");
    if (isa && strcmp(isa, graft_cpu_isa())) {
        printf("GRAFT_ISA=%s: this CPU cannot run that path; skipped\n", isa);
        return 77;
    }
    graft_set_threads(0);
    printf("backend: %s, kernel path %s, %d threads\n", graft_gemm_backend(), graft_cpu_isa(), graft_get_threads());
    test_gemm_fn(graft_gemm_builtin, "graft_gemm_builtin");
    test_gemm_fn(graft_gemm, "graft_gemm");
    test_builtin_deterministic();
    test_gemm_in_parallel();
    for (int layout = 0; layout <= 1; layout++) {
        test_linear(layout, 1, 9, 13, 1);   /* decode row */
        test_linear(layout, 5, 7, 6, 1);
        test_linear(layout, 5, 7, 6, 0);
        test_linear(layout, 64, 40, 600, 1); /* large enough for the parallel db path */
        test_linear(layout, 37, 129, 70, 1);
    }
    test_threads();
    return test_finish("test_gemm");
}
