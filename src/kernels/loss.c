/*
 * loss.c - token-level cross-entropy over logits [T, V].
 *
 * The row max is subtracted before exponentiating (no overflow; found in the
 * same pass, see row_max_sumexp), the exponentials are summed in double (V is ~50k for GPT-2: a float sum would
 * lose ~1e-4 relative), and the log and the final difference are taken in
 * double. exp itself is graft_vexpf (float, ~1 ulp), which vectorizes.
 *
 * Targets < 0 are ignored rows (loss 0, gradient 0). A target >= V is a
 * caller bug the kernel cannot report; it yields NaN (loss and gradient row)
 * rather than reading out of bounds.
 */
#include "kernels.h"
#include "parallel.h"

#include <math.h>
#include <string.h>

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */

#define CE_CHUNK 2048 /* floats per chunk: stays in L1 between its two reads */

/*
 * One pass over the row from memory: *m = max, return sum exp(x - *m) in
 * double. Each chunk is read twice while it is in L1 (its max, then its
 * exponentials); when a chunk raises the running max, the sum so far is
 * rescaled. Reading the V-long row from memory once instead of twice
 * matters: a [T, 50257] logits matrix does not fit in any cache.
 */
static double row_max_sumexp(const float *x, int V, float *m_out) {
    float m = -INFINITY;
    double s = 0.0;
    for (int c0 = 0; c0 < V; c0 += CE_CHUNK) {
        const int cn = V - c0 < CE_CHUNK ? V - c0 : CE_CHUNK;
        const float *xc = x + c0;
        float cm = -INFINITY;
#pragma omp simd reduction(max : cm)
        for (int i = 0; i < cn; i++) cm = xc[i] > cm ? xc[i] : cm;
        if (cm > m) {
            if (s != 0.0) s *= exp((double)m - (double)cm);
            m = cm;
        }
        double cs = 0.0;
#pragma omp simd reduction(+ : cs)
        for (int i = 0; i < cn; i++) cs += (double)graft_vexpf(xc[i] - m);
        s += cs;
    }
    *m_out = m;
    return s;
}

void graft_crossentropy_forward(float *loss, const float *logits, const int *target, int T, int V) {
    GRAFT_PAR_FOR((double)T * V > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        const int y = target[t];
        if (y < 0) {
            loss[t] = 0.0f;
            continue;
        }
        if (y >= V) {
            loss[t] = NAN;
            continue;
        }
        const float *x = logits + (size_t)t * V;
        float m;
        const double sum = row_max_sumexp(x, V, &m);
        const double lse = (double)m + log(sum);
        loss[t] = (float)(lse - (double)x[y]);
    });
}

/* dloss == NULL means dloss = 1 for every row.
 * dlogits may alias logits: every row is fully read (max, sum) before any
 * element of it is written, and each element is read before it is
 * overwritten. Two passes over the row: statistics, then the gradient. */
void graft_crossentropy_backward(float *dlogits, const float *logits, const int *target,
                                 const float *dloss, int T, int V) {
    GRAFT_PAR_FOR((double)T * V > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        const int y = target[t];
        float *d = dlogits + (size_t)t * V;
        if (y < 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        if (y >= V) {
            for (int i = 0; i < V; i++) d[i] = NAN;
            continue;
        }
        const float *x = logits + (size_t)t * V;
        const float g = dloss ? dloss[t] : 1.0f;
        float m;
        const double sum = row_max_sumexp(x, V, &m);
        const float k = (float)((double)g / sum);
        const float xy = x[y]; /* saved: the loop below may overwrite it */
        _Pragma("omp simd")
        for (int i = 0; i < V; i++) d[i] = graft_vexpf(x[i] - m) * k;
        /* the one-hot term in double, so p_y - 1 keeps its precision when
         * p_y is close to 1 */
        d[y] = (float)((double)graft_vexpf(xy - m) * (double)g / sum - (double)g);
    });
}
