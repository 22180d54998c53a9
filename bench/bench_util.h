/* bench_util.h - the timing helpers every bench program shares: a monotonic
 * clock in ms and the median / best of a set of runs (the figures
 * bench/README.md records). Header-only: each bench is its own executable. */
#ifndef GRAFT_BENCH_UTIL_H
#define GRAFT_BENCH_UTIL_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and smallest of v[0..n) (times: the best is the smallest); v is
 * left as it was (at most 64 values). */
static inline void med_best(const double *v0, int n, double *med, double *best) {
    double v[64];
    if (n > 64) n = 64;
    memcpy(v, v0, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    *best = v[0];
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
