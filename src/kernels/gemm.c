/*
 * gemm.c - the GEMM entry point (BLAS when compiled in, else the built-in
 * one) and the double-precision reference used as the test oracle.
 */
#include "internal.h"
#include "kernels.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef GRAFT_USE_OPENBLAS
#include <cblas.h>
#endif

#ifdef GRAFT_USE_OPENBLAS
#ifdef _OPENMP
/* The built-in GEMM on the calling thread only (gemm_builtin.c). */
#endif

/* beta == 0 must not read C (it may hold NaN garbage). Reference BLAS
 * promises that, and OpenBLAS's GEMM zero-fills for beta == 0, but some of
 * its GEMV kernels have scaled y by 0 (NaN * 0 = NaN): y is zeroed first.
 * (tests/test_gemm.c checks both with NaN-filled outputs.) */
static void zero_c(int M, int N, float *C, int ldc) {
    for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
}
#endif

void graft_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef GRAFT_USE_OPENBLAS
    if (M <= 0 || N <= 0) return;
#ifdef _OPENMP
    /* BLAS and OpenMP pools must not nest: inside a parallel region use the
     * built-in GEMM on the calling thread. */
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
        /* Decode: one row times a matrix is a GEMV, which OpenBLAS does
         * faster than its GEMM path for a 1-row A. */
        const int incx = transA ? lda : 1;
        if (beta == 0.0f) zero_c(1, N, C, ldc);
        if (!transB) /* B [K, N]: y = B^T x */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, incx, beta, C, 1);
        else /* B [N, K]: y = B x */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, incx, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
