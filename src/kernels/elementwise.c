/* elementwise.c - residual adds and gradient accumulation. */
#include "kernels.h"
#include "parallel.h"

#define PAR_MIN_ELEMS 65536 /* below this a parallel region costs more than it saves */

/* No restrict: out may alias a or b (x = x + y in the residual stream). */
void graft_add(float *out, const float *a, const float *b, size_t n) {
    const long long nn = (long long)n;
    GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
    for (long long i = 0; i < nn; i++) out[i] = a[i] + b[i];);
}

void graft_acc(float *dst, const float *src, size_t n) {
    const long long nn = (long long)n;
    GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
    for (long long i = 0; i < nn; i++) dst[i] += src[i];);
}
