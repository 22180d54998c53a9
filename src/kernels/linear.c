/*
 * linear.c - y = x W + b and its gradients, for weights stored either way
 * (GPT-2 Conv1D [K, N] or nn.Linear [N, K]); everything heavy is a GEMM, so
 * the stored layout only picks the transpose flag, never a copy.
 */
#include "internal.h"
#include "kernels.h"
#include "parallel.h"

#include <string.h>

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */

void graft_linear_forward(float *y, const float *x, const float *w, const float *b, int M, int K,
                          int N, graft_layout layout) {
    if (M <= 0 || N <= 0) return;
    if (M == 1) { /* a decode step: the GEMV, the bias added where each output is written */
        graft_gemv_bias(y, x, w, b, K, N, layout == GRAFT_W_KN);
        return;
    }
    float beta = 0.0f;
    if (b) {
        /* Start from the bias and let the GEMM add onto it (beta = 1): one
         * pass over y instead of a GEMM pass plus a bias pass. */
        GRAFT_PAR_FOR((double)M * N > PAR_MIN_ELEMS,
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, b, (size_t)N * sizeof(float)););
        beta = 1.0f;
    }
    if (layout == GRAFT_W_KN)
        graft_gemm(0, 0, M, N, K, 1.0f, x, K, w, N, beta, y, N);
    else
        graft_gemm(0, 1, M, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void graft_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int M, int K, int N, graft_layout layout) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    if (dx) { /* dx[M,K] += dy[M,N] W^T */
        if (layout == GRAFT_W_KN)
            graft_gemm(0, 1, M, K, N, 1.0f, dy, N, w, N, 1.0f, dx, K);
        else
            graft_gemm(0, 0, M, K, N, 1.0f, dy, N, w, K, 1.0f, dx, K);
    }
    if (dw) {
        if (layout == GRAFT_W_KN) /* dW[K,N] += x^T dy */
            graft_gemm(1, 0, K, N, M, 1.0f, x, K, dy, N, 1.0f, dw, N);
        else /* dW[N,K] += dy^T x */
            graft_gemm(1, 0, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
    }
    if (db) {
        /* Column sums of dy. Threads split the columns (not the rows), so no
         * two threads touch the same db entry and the summation order, hence
         * the result, does not depend on the thread count. */
        const int nblk = (N + 63) / 64;
        GRAFT_PAR_FOR((double)M * N > PAR_MIN_ELEMS,
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * 64, cn = N - c0 < 64 ? N - c0 : 64;
            float acc[64] = {0};
            for (int i = 0; i < M; i++) {
                const float *row = dy + (size_t)i * N + c0;
                _Pragma("omp simd")
                for (int c = 0; c < cn; c++) acc[c] += row[c];
            }
            for (int c = 0; c < cn; c++) db[c0 + c] += acc[c];
        });
    }
}
