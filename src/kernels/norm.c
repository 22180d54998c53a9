/*
 * norm.c - LayerNorm (GPT-2) and RMSNorm (Llama), forward and backward.
 *
 * Row statistics are accumulated in double: rows are short (C <= a few
 * thousand), so it costs nothing measurable and keeps mean/variance exact
 * enough that the float result is the correctly rounded HF value in practice.
 *
 * Backward runs in two parallel passes: one over rows for dx, one over
 * column blocks for dw/db. Splitting the weight gradients by column means no
 * two threads ever add into the same dw entry (no atomics, no per-thread
 * copies to allocate) and the result does not depend on the thread count.
 */
#include "kernels.h"
#include "parallel.h"

#include <math.h>

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */
#define COL_BLOCK 64

void graft_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int T, int C, float eps) {
    GRAFT_PAR_FOR((double)T * C > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *o = out + (size_t)t * C;
        double s = 0.0;
        _Pragma("omp simd reduction(+ : s)")
        for (int c = 0; c < C; c++) s += xr[c];
        const double mu = s / C;
        double v = 0.0; /* two-pass biased variance: no cancellation */
        _Pragma("omp simd reduction(+ : v)")
        for (int c = 0; c < C; c++) {
            const double d = xr[c] - mu;
            v += d * d;
        }
        const double rs = 1.0 / sqrt(v / C + (double)eps);
        const float m = (float)mu, r = (float)rs;
        if (b) {
            _Pragma("omp simd")
            for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c] + b[c];
        } else {
            _Pragma("omp simd")
            for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c];
        }
        if (mean) mean[t] = m;
        if (rstd) rstd[t] = r;
    });
}

/*
 * With xhat = (x - mean) rstd and g = dout * w:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   dw += sum_t dout * xhat,  db += sum_t dout.
 */
void graft_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *w, const float *mean, const float *rstd, int T, int C) {
    const int par = (double)T * C > PAR_MIN_ELEMS;
    if (dx) {
        GRAFT_PAR_FOR(par,
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * C, *go = dout + (size_t)t * C;
            float *d = dx + (size_t)t * C;
            const float m = mean[t], r = rstd[t];
            double sg = 0.0, sgx = 0.0;
            _Pragma("omp simd reduction(+ : sg, sgx)")
            for (int c = 0; c < C; c++) {
                const float g = go[c] * w[c];
                sg += g;
                sgx += g * ((xr[c] - m) * r);
            }
            const float mg = (float)(sg / C), mgx = (float)(sgx / C);
            _Pragma("omp simd")
            for (int c = 0; c < C; c++) {
                const float xh = (xr[c] - m) * r;
                d[c] += r * (go[c] * w[c] - mg - xh * mgx);
            }
        });
    }
    if (dw || db) {
        const int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
        GRAFT_PAR_FOR(par,
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * COL_BLOCK, cn = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            float aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            for (int t = 0; t < T; t++) {
                const float *xr = x + (size_t)t * C + c0, *go = dout + (size_t)t * C + c0;
                const float m = mean[t], r = rstd[t];
                _Pragma("omp simd")
                for (int c = 0; c < cn; c++) {
                    aw[c] += go[c] * ((xr[c] - m) * r);
                    ab[c] += go[c];
                }
            }
            if (dw)
                for (int c = 0; c < cn; c++) dw[c0 + c] += aw[c];
            if (db)
                for (int c = 0; c < cn; c++) db[c0 + c] += ab[c];
        });
    }
}

void graft_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int C,
                           float eps) {
    GRAFT_PAR_FOR((double)T * C > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *o = out + (size_t)t * C;
        double ss = 0.0;
        _Pragma("omp simd reduction(+ : ss)")
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        const float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        /* HF LlamaRMSNorm: weight * (x * rstd), in that order */
        _Pragma("omp simd")
        for (int c = 0; c < C; c++) o[c] = w[c] * (xr[c] * r);
        if (rstd) rstd[t] = r;
    });
}

/*
 * out = x r w with r = (mean(x^2) + eps)^-1/2, dr/dx_c = -r^3 x_c / C, so with
 * g = dout * w:  dx = r * (g - x * r^2 * mean(g * x)),  dw += sum_t dout x r.
 */
void graft_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int T, int C) {
    const int par = (double)T * C > PAR_MIN_ELEMS;
    if (dx) {
        GRAFT_PAR_FOR(par,
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * C, *go = dout + (size_t)t * C;
            float *d = dx + (size_t)t * C;
            const float r = rstd[t];
            double sgx = 0.0;
            _Pragma("omp simd reduction(+ : sgx)")
            for (int c = 0; c < C; c++) sgx += (double)(go[c] * w[c]) * xr[c];
            const float k = (float)(sgx / C) * r * r;
            _Pragma("omp simd")
            for (int c = 0; c < C; c++) d[c] += r * (go[c] * w[c] - xr[c] * k);
        });
    }
    if (dw) {
        const int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
        GRAFT_PAR_FOR(par,
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * COL_BLOCK, cn = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            float aw[COL_BLOCK] = {0};
            for (int t = 0; t < T; t++) {
                const float *xr = x + (size_t)t * C + c0, *go = dout + (size_t)t * C + c0;
                const float r = rstd[t];
                _Pragma("omp simd")
                for (int c = 0; c < cn; c++) aw[c] += go[c] * (xr[c] * r);
            }
            for (int c = 0; c < cn; c++) dw[c0 + c] += aw[c];
        });
    }
}
