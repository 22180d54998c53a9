/* embed.c - token (+ learned position) embedding lookup and its gradient. */
#include "kernels.h"
#include "parallel.h"

#include <string.h>

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */
#define COL_BLOCK 64

/* ids and pos are trusted to be in range (the model code validates token ids
 * against the vocabulary and positions against n_ctx before calling).
 * pos == NULL with a wpe means positions 0..T-1. */
void graft_embed_forward(float *out, const int *ids, const int *pos, const float *wte,
                         const float *wpe, int T, int C) {
    GRAFT_PAR_FOR((double)T * C > PAR_MIN_ELEMS,
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * C;
        const float *e = wte + (size_t)ids[t] * C;
        if (wpe) {
            const float *p = wpe + (size_t)(pos ? pos[t] : t) * C;
            _Pragma("omp simd")
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            memcpy(o, e, (size_t)C * sizeof(float));
        }
    });
}

/* The same token (or position) can occur in several rows, so rows cannot be
 * split across threads without atomics; the columns can: each thread owns a
 * column block of every embedding row, and the sum order stays fixed. */
void graft_embed_backward(float *dwte, float *dwpe, const float *dout, const int *ids,
                          const int *pos, int T, int C) {
    if (!dwte && !dwpe) return;
    const int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
    GRAFT_PAR_FOR((double)T * C > PAR_MIN_ELEMS,
    for (int blk = 0; blk < nblk; blk++) {
        const int c0 = blk * COL_BLOCK, cn = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        for (int t = 0; t < T; t++) {
            const float *g = dout + (size_t)t * C + c0;
            if (dwte) {
                float *d = dwte + (size_t)ids[t] * C + c0;
                _Pragma("omp simd")
                for (int c = 0; c < cn; c++) d[c] += g[c];
            }
            if (dwpe) {
                float *d = dwpe + (size_t)(pos ? pos[t] : t) * C + c0;
                _Pragma("omp simd")
                for (int c = 0; c < cn; c++) d[c] += g[c];
            }
        }
    });
}
