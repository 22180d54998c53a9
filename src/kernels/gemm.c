/*
 * gemm.c - the GEMM entry point (BLAS when compiled in, else the built-in
 * one) and the double-precision reference used as the test oracle.
 */
#include "internal.h"
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef GRAFT_USE_OPENBLAS
#include <cblas.h>
#endif
#include <stdlib.h>
#include <string.h>

/* Which GEMM runs the products of several rows. Where the built-in GEMM
 * runs its AVX-512 kernels it beats OpenBLAS 0.3.21 on the 2-core EPYC these
 * figures come from (1024^3: 304-388 GFLOP/s against 185-202; K=768,
 * N=3072, M=256: 369-383 against 193-201; bench/README.md), so it runs there;
 * on the AVX2 path OpenBLAS is 3-11% ahead at M=64 and keeps those products.
 * GRAFT_GEMM=openblas|builtin decides instead (benchmarks, comparisons). */
int graft_gemm_uses_blas(void) {
#ifdef GRAFT_USE_OPENBLAS
    static int forced = -2;
    int f = __atomic_load_n(&forced, __ATOMIC_RELAXED);
    if (f == -2) {
        const char *e = getenv("GRAFT_GEMM");
        f = e && !strcmp(e, "openblas") ? 1 : e && !strcmp(e, "builtin") ? 0 : -1;
        __atomic_store_n(&forced, f, __ATOMIC_RELAXED);
    }
    if (f >= 0) return f;
    return graft_cpu_isa_id() != GRAFT_ISA_AVX512;
#else
    return 0;
#endif
}

void graft_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef GRAFT_USE_OPENBLAS
    if (M <= 0 || N <= 0) return;
#ifdef _OPENMP
    /* BLAS and OpenMP pools must not nest: inside a parallel region use the
     * built-in GEMM on the calling thread; a GEMV on a decode team's rank 0
     * shares its rows with the team (team.c). */
    if (omp_in_parallel() && M == 1 && graft_team_active()) {
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (omp_in_parallel()) {
        graft_gemm_serial(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    if (K <= 0 || alpha == 0.0f) {
        /* BLAS would do the same, but this keeps beta == 0 exact and cheap. */
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M == 1) {
        /* Decode: one row times a matrix is a GEMV, bound by reading the
         * matrix once. The built-in GEMV reads it at the same speed as
         * OpenBLAS's, and decides for itself when a product is too small for
         * a second thread: OpenBLAS's sgemv opened a parallel region for the
         * 64 x 64 matrices of stories260K, whose wake-ups cost more than the
         * products (2 threads decoded 4x slower than 1). */
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (!graft_gemm_uses_blas()) {
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void graft_gemm_blas(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef GRAFT_USE_OPENBLAS
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
#else
    graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

int graft_gemm_has_blas(void) {
#ifdef GRAFT_USE_OPENBLAS
    return 1;
#else
    return 0;
#endif
}

void graft_gemm_ref(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const double b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
            }
            float *c = C + (size_t)i * ldc + j;
            const double r = (double)alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c);
            *c = (float)r;
        }
    }
}
