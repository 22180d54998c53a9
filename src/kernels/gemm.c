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
        /* Decode: one row times a matrix is a GEMV, bound by reading the
         * matrix once. The built-in GEMV reads it at the same speed as
         * OpenBLAS's, and decides for itself when a product is too small for
         * a second thread: OpenBLAS's sgemv opened a parallel region for the
         * 64 x 64 matrices of stories260K, whose wake-ups cost more than the
         * products (2 threads decoded 4x slower than 1). */
        graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
