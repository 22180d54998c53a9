/* elementwise.c - residual adds, gradient accumulation, the sum of a banded GEMV. */
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

/* graft_sum_bands: columns [c0, c1) in chunks of SUM_CHUNK, each summed over
 * the bands into part's row 0 (vector adds), then written to y. */
#define SUM_CHUNK 256
#define SUM_PAR_MIN 16384 /* band sums below this cost less than a team job's hand-off */

typedef struct sum_job {
    float *y;
    int incy;
    float alpha, beta;
    const float *bias;
    float *part;
    int nb, N;
} sum_job;

static void sum_chunks(void *arg, int c0, int c1) {
    const sum_job *j = arg;
    const int l0 = c0 * SUM_CHUNK, l1 = c1 * SUM_CHUNK < j->N ? c1 * SUM_CHUNK : j->N, n = l1 - l0;
    float *restrict a = j->part + l0;
    for (int b = 1; b < j->nb; b++) {
        const float *restrict p = j->part + (size_t)b * j->N + l0;
#pragma omp simd
        for (int l = 0; l < n; l++) a[l] += p[l];
    }
    for (int l = 0; l < n; l++) {
        float *yp = j->y + (size_t)(l0 + l) * j->incy;
        *yp = j->bias ? j->alpha * a[l] + j->bias[l0 + l]
              : j->beta == 0.0f ? j->alpha * a[l] : j->alpha * a[l] + j->beta * *yp;
    }
}

void graft_sum_bands(float *y, int incy, float alpha, float beta, const float *bias, float *part, int nb, int N) {
    if (N <= 0 || nb <= 0) return;
    sum_job j = {y, incy, alpha, beta, bias, part, nb, N};
    graft_par_items(graft_team_active() && (double)nb * N > SUM_PAR_MIN, (N + SUM_CHUNK - 1) / SUM_CHUNK,
                    sum_chunks, &j);
}
