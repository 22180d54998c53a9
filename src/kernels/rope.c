/*
 * rope.c - rotary position embedding, in place, in both pairings:
 *   interleaved = 1: pairs (x[2j], x[2j+1])      (llama2.c checkpoints)
 *   interleaved = 0: pairs (x[j], x[j + D/2])    (HF rotate_half)
 * Pair j of a head at position p turns by angle p * theta^(-2j/D).
 *
 * The angles are computed in float the way HF and llama2.c do
 * (inv_freq = 1 / theta^(2j/D) in float, angle = pos * inv_freq in float),
 * so the rotation matches their reference outputs, not just the math.
 * cos/sin depend on (row, j) only, so they are computed once per row and
 * shared by all heads.
 */
#include "kernels.h"
#include "parallel.h"

#include <math.h>

#define PAR_MIN_ELEMS 16384 /* below this a parallel region costs more than it saves */

/* dir = +1 rotates by +angle (forward), -1 by -angle (backward: the
 * transpose of a rotation is the rotation back). */
static void rope_apply(float *x, int ld, const int *pos, int T, int n_heads, int head_dim,
                       float theta, int interleaved, float dir) {
    const int half = head_dim / 2;
    if (T <= 0 || half <= 0) return;
    float inv_freq[half];
    for (int j = 0; j < half; j++)
        inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);

    GRAFT_PAR_FOR((double)T * n_heads * head_dim > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        float cs[half], sn[half];
        const float p = (float)pos[t];
        for (int j = 0; j < half; j++) {
            const float ang = p * inv_freq[j];
            cs[j] = cosf(ang);
            sn[j] = dir * sinf(ang);
        }
        float *row = x + (size_t)t * ld;
        for (int h = 0; h < n_heads; h++) {
            float *hx = row + (size_t)h * head_dim;
            if (interleaved) {
                for (int j = 0; j < half; j++) {
                    const float a = hx[2 * j], b = hx[2 * j + 1];
                    hx[2 * j] = a * cs[j] - b * sn[j];
                    hx[2 * j + 1] = a * sn[j] + b * cs[j];
                }
            } else {
                float *lo = hx, *hi = hx + half;
                _Pragma("omp simd")
                for (int j = 0; j < half; j++) {
                    const float a = lo[j], b = hi[j];
                    lo[j] = a * cs[j] - b * sn[j];
                    hi[j] = a * sn[j] + b * cs[j];
                }
            }
        }
    });
}

void graft_rope_forward(float *x, int ld, const int *pos, int T, int n_heads, int head_dim,
                        float theta, int interleaved) {
    rope_apply(x, ld, pos, T, n_heads, head_dim, theta, interleaved, 1.0f);
}

void graft_rope_backward(float *dx, int ld, const int *pos, int T, int n_heads, int head_dim,
                         float theta, int interleaved) {
    if (!dx) return;
    rope_apply(dx, ld, pos, T, n_heads, head_dim, theta, interleaved, -1.0f);
}
