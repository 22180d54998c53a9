/*
 * bench_gemm.c - GFLOP/s of graft_gemm (the compiled-in backend) and of
 * graft_gemm_builtin on the shapes of a GPT-2 MLP projection: K = 768,
 * N = 3072, M (tokens) from 1 (decode) to 512, for both weight layouts
 * (GRAFT_W_KN: B stored [K, N]; GRAFT_W_NK: B stored [N, K], used transposed).
 *
 * The built-in GEMM is timed on every kernel path this CPU runs (generic,
 * avx2, avx512: src/kernels/isa.c), or only on the one GRAFT_ISA names.
 *
 * Every result is first checked against graft_gemm_ref on a sample of rows,
 * so a fast but wrong kernel cannot post a number. Each timing is 5 runs
 * after one warm-up; best and median are printed.
 *
 * usage: bench_gemm [threads]   (default: all online CPUs)
 */
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Compare up to 16 rows of C (all when M <= 16) with the double reference. */
static int validate(const float *C, const float *A, const float *B, int M, int N, int K,
                    int transB, float *ref_row) {
    const int ldb = transB ? K : N;
    const int step = M <= 16 ? 1 : M / 16;
    for (int i = 0; i < M; i += step) {
        graft_gemm_ref(0, transB, 1, N, K, 1.0f, A + (size_t)i * K, K, B, ldb, 0.0f, ref_row, N);
        for (int j = 0; j < N; j++) {
            const float got = C[(size_t)i * N + j], want = ref_row[j];
            /* inputs in [-1, 1], K = 768: float rounding stays below ~5e-4 even
             * in the worst case; a wrong kernel is off by O(1). */
            if (!(fabsf(got - want) <= 2e-3f + 1e-4f * fabsf(want))) {
                fprintf(stderr, "mismatch at row %d col %d: %g vs %g\n", i, j, got, want);
                return 0;
            }
        }
    }
    return 1;
}

static int bench_one(const char *name, gemm_fn fn, const float *A, const float *B, float *C,
                     int M, int N, int K, int transB, float *ref_row, double *best, double *med) {
    const int ldb = transB ? K : N;
    for (size_t i = 0; i < (size_t)M * N; i++) C[i] = NAN; /* beta = 0 must overwrite */
    fn(0, transB, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N);
    if (!validate(C, A, B, M, N, K, transB, ref_row)) {
        fprintf(stderr, "%s: wrong result at M=%d transB=%d\n", name, M, transB);
        return 0;
    }
    double t[RUNS];
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now_s();
        fn(0, transB, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N);
        t[r] = now_s() - t0;
    }
    qsort(t, RUNS, sizeof t[0], cmp_double);
    const double flop = 2.0 * M * N * K;
    *best = flop / t[0] * 1e-9;
    *med = flop / t[RUNS / 2] * 1e-9;
    return 1;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 0;
    graft_set_threads(threads);
    const int K = 768, N = 3072;
    const int Ms[] = {1, 8, 32, 64, 128, 256, 512};
    const int nM = (int)(sizeof Ms / sizeof Ms[0]);
    const int Mmax = Ms[nM - 1];

    float *A = graft_alloc_aligned((size_t)Mmax * K * sizeof(float));
    float *B = graft_alloc_aligned((size_t)K * N * sizeof(float));
    float *C = graft_alloc_aligned((size_t)Mmax * N * sizeof(float));
    float *ref_row = graft_alloc_aligned((size_t)N * sizeof(float));
    if (!A || !B || !C || !ref_row) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)Mmax * K; i++) A[i] = frand();
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = frand();

    /* the built-in GEMM's paths: all this CPU runs, or the one GRAFT_ISA names */
    const graft_isa start = graft_cpu_isa_id();
    graft_isa paths[GRAFT_ISA_COUNT];
    int np = 0;
    for (int i = 0; i < GRAFT_ISA_COUNT; i++)
        if (getenv("GRAFT_ISA") ? i == (int)start : graft_cpu_isa_supported((graft_isa)i))
            paths[np++] = (graft_isa)i;

    printf("bench_gemm: K=%d N=%d, %d threads, backend %s, kernel path %s; GFLOP/s (best / median of %d)\n",
           K, N, graft_get_threads(), graft_gemm_backend(), graft_isa_name(start), RUNS);
    printf("%-6s %5s  %-22s", "layout", "M", graft_gemm_has_blas() ? "OpenBLAS" : "graft_gemm");
    for (int p = 0; p < np; p++) {
        char h[40];
        snprintf(h, sizeof h, "builtin %s", graft_isa_name(paths[p]));
        printf("  %-22s", h);
    }
    printf("\n");
    int ok = 1;
    for (int transB = 0; transB <= 1; transB++) {
        for (int mi = 0; mi < nM; mi++) {
            const int M = Ms[mi];
            double b = 0, m = 0;
            graft_cpu_isa_set(start);
            ok &= bench_one("graft_gemm", graft_gemm_has_blas() ? graft_gemm_blas : graft_gemm, A, B, C, M, N, K,
                            transB, ref_row, &b, &m);
            printf("%-6s %5d  %8.1f / %-11.1f", transB ? "NK" : "KN", M, b, m);
            for (int p = 0; p < np; p++) {
                graft_cpu_isa_set(paths[p]);
                ok &= bench_one(graft_isa_name(paths[p]), graft_gemm_builtin, A, B, C, M, N, K, transB,
                                ref_row, &b, &m);
                printf("  %8.1f / %-11.1f", b, m);
            }
            graft_cpu_isa_set(start);
            printf("\n");
            fflush(stdout);
        }
    }
    graft_free_aligned(A);
    graft_free_aligned(B);
    graft_free_aligned(C);
    graft_free_aligned(ref_row);
    return ok ? 0 : 1;
}
