/*
 * loss.c - token-level cross-entropy over logits [T, V].
 *
 * The row max is subtracted before exponentiating (no overflow), the
 * exponentials are summed in double (V is ~50k for GPT-2: a float sum would
 * lose ~1e-4 relative), and the log and the final difference are taken in
 * double. exp itself is graft_vexpf (float, ~1 ulp), which vectorizes.
 *
 * Targets < 0 are ignored rows (loss 0, gradient 0). A target >= V is a
 * caller bug the kernel cannot report; it yields NaN (loss and gradient row)
 * rather than reading out of bounds.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

#pragma omp declare simd notinbranch
float graft_vexpf(float x);

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */

static float row_max(const float *x, int V) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static double row_sumexp(const float *x, int V, float m) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < V; i++) s += (double)graft_vexpf(x[i] - m);
    return s;
}

void graft_crossentropy_forward(float *loss, const float *logits, const int *target, int T, int V) {
#pragma omp parallel for schedule(static) if ((double)T * V > PAR_MIN_ELEMS)
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
        const float m = row_max(x, V);
        const double lse = (double)m + log(row_sumexp(x, V, m));
        loss[t] = (float)(lse - (double)x[y]);
    }
}

/* dloss == NULL means dloss = 1 for every row.
 * dlogits may alias logits: every row is fully read (max, sum) before any
 * element of it is written, and each element is read before it is overwritten. */
void graft_crossentropy_backward(float *dlogits, const float *logits, const int *target,
                                 const float *dloss, int T, int V) {
#pragma omp parallel for schedule(static) if ((double)T * V > PAR_MIN_ELEMS)
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
        const float m = row_max(x, V);
        const double sum = row_sumexp(x, V, m);
        const float k = (float)((double)g / sum);
        const float xy = x[y]; /* saved: the loop below may overwrite it */
#pragma omp simd
        for (int i = 0; i < V; i++) d[i] = graft_vexpf(x[i] - m) * k;
        /* the one-hot term in double, so p_y - 1 keeps its precision when
         * p_y is close to 1 */
        d[y] = (float)((double)graft_vexpf(xy - m) * (double)g / sum - (double)g);
    }
}
