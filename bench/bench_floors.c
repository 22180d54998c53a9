/*
 * bench_floors.c - the machine's own limits, against which the speed figures
 * of bench/README.md are judged (issue 18: every figure with its ratio to its
 * floor): which vector extensions the CPU has, the memory bandwidth it
 * sustains (a read pass, the floor of decode, which streams every weight once
 * per token: the faster of a plain pass and one with software prefetch; and
 * STREAM's triad a = b + s c), and the sgemm throughput of the
 * compiled-in backend and of the built-in GEMM (the floor of prefill and
 * training, which are matrix products).
 *
 * Arrays of 256 MiB each (far past any cache); every figure is the best and
 * the median of 5 timed runs after one warm-up, on 1 thread and on T threads.
 * Bytes: read = 4n, triad = 12n (STREAM's count: the write-allocate read of a
 * is not counted). sgemm: 2 M N K flops, M = N = K = 1024, result checked on
 * a few rows against graft_gemm_ref; the built-in GEMM on every kernel path
 * the CPU runs (generic, avx2, avx512), or only on the one GRAFT_ISA names.
 *
 * usage: bench_floors [threads]   (default: all online CPUs)
 */
#include "bench_util.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 5
#define NFLOAT (64u << 20) /* 256 MiB of floats per array: 64 MiB read 80 GB/s on the Zen 5 VM, its L3 serving part of it */

static void cpu_line(void) {
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                const char *c = strchr(line, ':');
                if (c) snprintf(model, sizeof model, "%s", c + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    __builtin_cpu_init();
    printf("cpu: %s\nflags:%s%s%s%s%s%s%s\n", model, __builtin_cpu_supports("avx2") ? " avx2" : "",
           __builtin_cpu_supports("fma") ? " fma" : "", __builtin_cpu_supports("f16c") ? " f16c" : "",
           __builtin_cpu_supports("avx512f") ? " avx512f" : "", __builtin_cpu_supports("avx512bw") ? " avx512bw" : "",
           __builtin_cpu_supports("avx512vnni") ? " avx512vnni" : "",
           __builtin_cpu_supports("avx512bf16") ? " avx512bf16" : "");
    printf("kernel path: %s (paths this CPU runs:%s%s%s)\n", graft_cpu_isa(), " generic",
           graft_cpu_isa_supported(GRAFT_ISA_AVX2) ? " avx2" : "",
           graft_cpu_isa_supported(GRAFT_ISA_AVX512) ? " avx512" : "");
}

/* A sum the compiler cannot drop: one pass reading every byte of a. */
static double read_pass(const float *a, size_t n, int threads) {
    float s = 0;
    /* simd: many partial sums, or the loop waits on one add chain, not on memory */
#pragma omp parallel for simd num_threads(threads) reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += a[i];
    return s;
}

/* The same, asking for each line GRAFT_PREFETCH_AHEAD bytes before it is
 * read, as graft's GEMVs do (kernels.h): on the Zen 5 VM this read 57 GB/s
 * where the plain pass read 52, so the floor is the faster of the two. */
static double read_pass_prefetch(const float *a, size_t n, int threads) {
    float s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i += 16) {
        graft_prefetch(a + i + GRAFT_PREFETCH_AHEAD / sizeof(float));
        float t = 0;
#pragma omp simd reduction(+ : t)
        for (int j = 0; j < 16; j++) t += a[i + j];
        s += t;
    }
    return s;
}

static void triad(float *a, const float *b, const float *c, size_t n, float s, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void report(const char *what, int threads, const double *ms, double units, const char *unit) {
    double med, best;
    med_best(ms, RUNS, &med, &best);
    printf("%-28s %2d thread%s  best %8.1f %s  median %8.1f %s\n", what, threads, threads > 1 ? "s" : " ",
           units / best / 1e6, unit, units / med / 1e6, unit);
}

static void bandwidth(int threads) {
    float *a = graft_alloc_aligned((size_t)NFLOAT * sizeof(float)), *b = graft_alloc_aligned((size_t)NFLOAT * sizeof(float)),
          *c = graft_alloc_aligned((size_t)NFLOAT * sizeof(float));
    if (!a || !b || !c) {
        fprintf(stderr, "bench_floors: out of memory\n");
        exit(1);
    }
    /* first touch by the same threads and schedule as the timed loops */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < NFLOAT; i++) a[i] = 1.0f, b[i] = 2.0f, c[i] = (float)(i & 7);
    double ms[RUNS], ms_plain[RUNS], ms_pf[RUNS], sink = 0;
    for (int r = -1; r < RUNS; r++) {
        double t0 = now_ms();
        sink += read_pass(b, NFLOAT, threads);
        double t1 = now_ms();
        sink += read_pass_prefetch(b, NFLOAT, threads);
        if (r < 0) continue;
        ms_plain[r] = t1 - t0;
        ms_pf[r] = now_ms() - t1;
        ms[r] = ms_pf[r] < ms_plain[r] ? ms_pf[r] : ms_plain[r];
    }
    report("read, hardware prefetch", threads, ms_plain, 4.0 * NFLOAT, "GB/s");
    report("read, software prefetch", threads, ms_pf, 4.0 * NFLOAT, "GB/s");
    report("read (decode floor)", threads, ms, 4.0 * NFLOAT, "GB/s");
    for (int r = -1; r < RUNS; r++) {
        double t0 = now_ms();
        triad(a, b, c, NFLOAT, 0.5f, threads);
        if (r >= 0) ms[r] = now_ms() - t0;
    }
    report("triad a = b + s c", threads, ms, 12.0 * NFLOAT, "GB/s");
    if (sink == 42.0) printf("%f\n", a[7]); /* keeps the passes */
    graft_free_aligned(a), graft_free_aligned(b), graft_free_aligned(c);
}

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

static void sgemm(const char *name, gemm_fn fn, int threads) {
    const int n = 1024;
    float *A = graft_alloc_aligned((size_t)n * n * sizeof(float)), *B = graft_alloc_aligned((size_t)n * n * sizeof(float)),
          *C = graft_alloc_aligned((size_t)n * n * sizeof(float)), *ref = malloc((size_t)n * sizeof(float));
    if (!A || !B || !C || !ref) {
        fprintf(stderr, "bench_floors: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < (size_t)n * n; i++) A[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (size_t i = 0; i < (size_t)n * n; i++) B[i] = (float)((i * 40503u) % 1000) / 500.0f - 1.0f;
    omp_set_num_threads(threads);
    double ms[RUNS];
    for (int r = -1; r < RUNS; r++) {
        double t0 = now_ms();
        fn(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        if (r >= 0) ms[r] = now_ms() - t0;
    }
    /* a fast wrong kernel posts no number */
    for (int i = 0; i < n; i += n / 4) {
        graft_gemm_ref(0, 0, 1, n, n, 1.0f, A + (size_t)i * n, n, B, n, 0.0f, ref, n);
        for (int j = 0; j < n; j++)
            if (!(fabsf(C[(size_t)i * n + j] - ref[j]) <= 1e-2f + 1e-4f * fabsf(ref[j]))) {
                fprintf(stderr, "bench_floors: %s is wrong at (%d, %d): %g vs %g\n", name, i, j, C[(size_t)i * n + j], ref[j]);
                exit(1);
            }
    }
    char what[64];
    snprintf(what, sizeof what, "sgemm 1024^3 %s", name);
    report(what, threads, ms, 2.0 * n * n * (double)n, "GFLOP/s");
    graft_free_aligned(A), graft_free_aligned(B), graft_free_aligned(C);
    free(ref);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_num_procs();
    if (threads < 1) threads = 1;
    cpu_line();
    for (int t = 1; t <= threads; t = t == threads ? threads + 1 : threads) {
        bandwidth(t);
        if (graft_gemm_has_blas()) sgemm("openblas", graft_gemm_blas, t);
        const graft_isa start = graft_cpu_isa_id();
        for (int i = 0; i < GRAFT_ISA_COUNT; i++) {
            if (getenv("GRAFT_ISA") ? i != (int)start : graft_cpu_isa_set((graft_isa)i) != 0) continue;
            char name[32];
            snprintf(name, sizeof name, "builtin %s", graft_isa_name((graft_isa)i));
            sgemm(name, graft_gemm_builtin, t);
        }
        graft_cpu_isa_set(start);
    }
    return 0;
}
