/*
 * gemm_builtin.c - graft's own single-precision GEMM, used when no BLAS is
 * compiled in (and compared against BLAS by the tests and the benchmark).
 *
 * The classic packed design (Goto / BLIS): for each KC-deep slice of K,
 * KC x NB blocks of op(B) are packed into NR-wide column panels and an MC x KC
 * block of op(A) into MR-tall row panels; a register-tiled MR x NR micro-
 * kernel then sweeps them. Packing turns every transpose combination and any
 * leading dimension into the same unit-stride streams, so one micro-kernel
 * serves all four cases, and zero padding of the edge panels lets it always
 * run full tiles (partial tiles are written back through a small buffer).
 *
 * Cache plan (Ice Lake / Zen class: 32-48 KB L1d, 1-2 MB L2): an A micro-
 * panel (MR x KC: 24 KB on the AVX-512 path) stays in L1 while the micro-
 * kernel streams the NR panels of one NB-wide block of packed B (KC x NB,
 * 384 KB) from L2.
 *
 * Threads: one parallel region. The team packs A (all row panels of an MC x
 * KC block) together; then each thread claims whole B blocks, packs each into
 * its own buffer and sweeps every row panel over it, prefetching the block it
 * claimed next meanwhile (see gemm_driver).
 *
 * Decode-sized products (M == 1 or N == 1) go to a GEMV that reads the matrix
 * once; small M with an untransposed B reads B in place instead of packing it,
 * because then packing would cost as much memory traffic as the product.
 */
#include "internal.h"
#include "kernels.h"
#include "parallel.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/*
 * KC is the depth of one packed slice, NB the columns of packed B that one
 * thread sweeps (its L2 block, KC x NB floats). NB = 128 rather than 256:
 * GPT-2's N = 768 products then split into 6 blocks instead of 3, which two
 * threads shared 2 : 1. The AVX-512 path takes K = 768 in one slice (A micro-
 * panel 24 KB in L1, B block 384 KB in L2), so C is written once per product
 * and each weight row is packed in one pass: GPT-2 prefill products with the
 * weights coming from memory ran at 305-315 GFLOP/s against 255-270 with
 * KC = 256, NB = 256 (2 threads, Zen 5, bench/README.md). The AVX2 path keeps
 * KC = 256 (Intel L2s down to 256 KB); NB = 128 gave it 167-176 against 150.
 */
#if defined(__AVX512F__)
#define MR 8
#define NR 32
#define KC 768
#elif defined(__AVX2__) && defined(__FMA__)
#define MR 6
#define NR 16
#define KC 256
#else
#define MR 4
#define NR 8
#define KC 256
#endif

#define MC (MR * 64) /* rows of A packed at once (B is packed again for each) */
#define NC 4096      /* columns of B packed at once (multiple of NR and NB) */
#define NB 128       /* columns of packed B one tile sweeps (L2 block) */
#define DIRECT_B_MAX_M (8 * MR) /* up to this M, an untransposed B is read in place */

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PARALLEL_MIN_FMA (64.0 * 64.0 * 64.0)

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ------------------------------------------------------------------ C = beta C */

/* beta == 0 writes zeros without reading C (C may hold NaN garbage). */
static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

static void gemm_unblocked(int transA, int transB, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C,
                           int ldc);

/* ------------------------------------------------------------------ GEMV */

#define GEMV_CHUNK 128 /* columns one task accumulates (small k-major products) */
#define GEMV_BANDS 8 /* bands of rows a large k-major GEMV is cut into */
#define GEMV_BAND_MIN_ROWS 64

/* acc[0..w) += sum over k of x[k] * m[k*ld + j]; four rows per pass so each
 * accumulator load/store is shared by four multiply-adds. Every 16 columns
 * (a line of each row) it asks for the same line of the rows `ahead` further
 * down: prefetches spread through the loop keep the memory queue busy
 * without flooding it. The inner loops are branch-free: GCC vectorizes them. */
static void axpy_rows(float *restrict acc, int w, int K, const float *m, int ld,
                      const float *restrict x) {
    const size_t ahead = (size_t)(GRAFT_PREFETCH_BAND_AHEAD / (w * (int)sizeof(float) + 1) + 4) * (size_t)ld;
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        const float *r0 = m + (size_t)k * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
        const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
        int j0 = 0;
        for (; j0 + 16 <= w; j0 += 16) {
            graft_prefetch_band(r0 + ahead + j0);
            graft_prefetch_band(r1 + ahead + j0);
            graft_prefetch_band(r2 + ahead + j0);
            graft_prefetch_band(r3 + ahead + j0);
#pragma omp simd
            for (int j = j0; j < j0 + 16; j++) acc[j] += x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j];
        }
#pragma omp simd
        for (int j = j0; j < w; j++) acc[j] += x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j];
    }
    for (; k < K; k++) {
        const float *r0 = m + (size_t)k * ld;
        const float x0 = x[k];
#pragma omp simd
        for (int j = 0; j < w; j++) acc[j] += x0 * r0[j];
    }
}

/* out[i] = dot(x, r_i) for four rows at once (one load of x feeds four chains). */
static void dot4(float out[4], int K, const float *restrict x, const float *r0, const float *r1,
                 const float *r2, const float *r3) {
    /* 16 lanes per row (one cache line) that GCC keeps in registers */
    float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        graft_prefetch((const char *)(r0 + k) + GRAFT_PREFETCH_AHEAD);
        graft_prefetch((const char *)(r1 + k) + GRAFT_PREFETCH_AHEAD);
        graft_prefetch((const char *)(r2 + k) + GRAFT_PREFETCH_AHEAD);
        graft_prefetch((const char *)(r3 + k) + GRAFT_PREFETCH_AHEAD);
#pragma omp simd
        for (int j = 0; j < 16; j++) {
            const float xk = x[k + j];
            a0[j] += xk * r0[k + j];
            a1[j] += xk * r1[k + j];
            a2[j] += xk * r2[k + j];
            a3[j] += xk * r3[k + j];
        }
    }
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (int j = 0; j < 16; j++) {
        s0 += a0[j];
        s1 += a1[j];
        s2 += a2[j];
        s3 += a3[j];
    }
    for (; k < K; k++) {
        const float xk = x[k];
        s0 += xk * r0[k];
        s1 += xk * r1[k];
        s2 += xk * r2[k];
        s3 += xk * r3[k];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* One GEMV (below), its items shared out over threads. */
typedef struct gemv_job {
    int N, K, ld, incy;
    float alpha, beta;
    const float *m, *x;
    const float *bias; /* y[n] = alpha acc + bias[n] instead of the beta term, or NULL */
    float *y;
    float *part; /* k-major in bands: nb partial rows of N sums */
    int nb;
} gemv_job;

/* y[n] = alpha acc + (bias[n] or beta y[n]); beta 0 does not read y */
static inline void put_y(const gemv_job *g, int n, float acc) {
    float *yp = g->y + (size_t)n * g->incy;
    *yp = g->bias ? g->alpha * acc + g->bias[n] : g->beta == 0.0f ? g->alpha * acc : g->alpha * acc + g->beta * *yp;
}

/* k-major: bands [b0, b1) of rows, band b = rows [K b / nb, K (b + 1) / nb),
 * each summed over whole rows into partial row b. */
static void gemv_bands(void *arg, int b0, int b1) {
    const gemv_job *g = arg;
    for (int b = b0; b < b1; b++) {
        const int k0 = (int)((long long)g->K * b / g->nb), k1 = (int)((long long)g->K * (b + 1) / g->nb);
        float *acc = g->part + (size_t)b * g->N;
        memset(acc, 0, (size_t)g->N * sizeof(float));
        axpy_rows(acc, g->N, k1 - k0, g->m + (size_t)k0 * g->ld, g->ld, g->x + k0);
    }
}

/* k-major: chunks [c0, c1) of GEMV_CHUNK columns, each walking all rows of
 * the matrix (contiguous GEMV_CHUNK-float segments, prefetcher friendly). */
static void gemv_chunks(void *arg, int c0, int c1) {
    const gemv_job *g = arg;
    for (int c = c0; c < c1; c++) {
        const int n0 = c * GEMV_CHUNK, w = imin(GEMV_CHUNK, g->N - n0);
        float acc[GEMV_CHUNK];
        for (int j = 0; j < w; j++) acc[j] = 0.0f;
        axpy_rows(acc, w, g->K, g->m + n0, g->ld, g->x);
        for (int j = 0; j < w; j++) put_y(g, n0 + j, acc[j]);
    }
}

/* n-major: groups [q0, q1) of four rows, one dot product each. */
static void gemv_groups(void *arg, int q0, int q1) {
    const gemv_job *g = arg;
    for (int q = q0; q < q1; q++) {
        const int n0 = q * 4, nn = imin(4, g->N - n0);
        /* rows past the edge repeat row n0; their results are dropped */
        const float *r[4];
        for (int i = 0; i < 4; i++) r[i] = g->m + (size_t)(n0 + (i < nn ? i : 0)) * g->ld;
        float s[4];
        dot4(s, g->K, g->x, r[0], r[1], r[2], r[3]);
        for (int j = 0; j < nn; j++) put_y(g, n0 + j, s[j]);
    }
}

/*
 * y[n] = alpha * sum_k x[k] * Mat(k, n) + beta * y[n] for n < N, k < K, where
 * Mat(k, n) = m[k*ld + n] (kmajor) or m[n*ld + k]; x is unit-stride, y has
 * stride incy. The matrix is read exactly once, which is what bounds a GEMV.
 * Big ones run on the decode team when one is running (team.c), else on the
 * OpenMP team.
 */
static void gemv(int N, int K, float alpha, const float *m, int ld, int kmajor, const float *x,
                 float beta, const float *bias, float *y, int incy, int threads) {
    const int big = (double)N * K > GRAFT_GEMV_PAR_MIN, par = threads && big;
    gemv_job g = {N, K, ld, incy, alpha, beta, m, x, bias, y, NULL, 1};
    graft_team_fn fn = kmajor ? gemv_chunks : gemv_groups;
    int n = kmajor ? (N + GEMV_CHUNK - 1) / GEMV_CHUNK : (N + 3) / 4;
    if (kmajor && big) {
        /* Whole rows in bands: each thread streams a contiguous run of rows
         * into its own partial sums, added up below. Splitting the columns
         * (every thread walking every row for its share) read GPT-2's Conv1D
         * matrices at 33-37 GB/s on 2 threads, against 41-47 for the dot
         * shape. The bands come from the shape alone, never from the thread
         * count, so the sums are the same on any team (or none). */
        g.nb = imin(GEMV_BANDS, K / GEMV_BAND_MIN_ROWS);
        if (g.nb > 1 && (g.part = graft_scratch(GRAFT_SCRATCH_GEMV, (size_t)g.nb * N)) != NULL) {
            fn = gemv_bands;
            n = g.nb;
        }
    }
    graft_par_items(par, n, fn, &g);
    if (fn == gemv_bands) graft_sum_bands(y, incy, alpha, beta, bias, g.part, g.nb, N);
}

/* ------------------------------------------------------------------ packing */

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
/* Transpose the 8 x 8 block src[i*lds + j] into dst[j*ldd + i]: unpack pairs
 * of rows, gather 4 x 4 blocks per 128-bit lane, then swap the lanes. */
static void transpose8(float *restrict dst, int ldd, const float *src, int lds) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (size_t)i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[m] (m < 4): column m of rows 0-3 in the low lane, column m+4 in the
     * high one; u[4 + m]: the same for rows 4-7 */
    for (int h = 0; h < 8; h += 4) {
        u[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
        u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
        u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
        u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        _mm256_storeu_ps(dst + (size_t)m * ldd, _mm256_permute2f128_ps(u[m], u[4 + m], 0x20));
        _mm256_storeu_ps(dst + (size_t)(4 + m) * ldd, _mm256_permute2f128_ps(u[m], u[4 + m], 0x31));
    }
}
#endif
#if defined(__AVX512F__)
/*
 * Transpose the 16 x 16 block src[i*lds + j] into dst[j*ldd + i]. Four
 * shuffle stages: unpack pairs of rows, combine them into 4 x 4 blocks per
 * 128-bit lane, then move the lanes across the four row groups.
 */
static void transpose16(float *restrict dst, int ldd, const float *src, int lds) {
    __m512 b[4][4];
    for (int g = 0; g < 4; g++) {
        const __m512 r0 = _mm512_loadu_ps(src + (size_t)(4 * g) * lds);
        const __m512 r1 = _mm512_loadu_ps(src + (size_t)(4 * g + 1) * lds);
        const __m512 r2 = _mm512_loadu_ps(src + (size_t)(4 * g + 2) * lds);
        const __m512 r3 = _mm512_loadu_ps(src + (size_t)(4 * g + 3) * lds);
        const __m512 lo01 = _mm512_unpacklo_ps(r0, r1), hi01 = _mm512_unpackhi_ps(r0, r1);
        const __m512 lo23 = _mm512_unpacklo_ps(r2, r3), hi23 = _mm512_unpackhi_ps(r2, r3);
        /* lane L of b[g][m] = column 4L+m of rows 4g..4g+3 */
        b[g][0] = _mm512_shuffle_ps(lo01, lo23, 0x44);
        b[g][1] = _mm512_shuffle_ps(lo01, lo23, 0xEE);
        b[g][2] = _mm512_shuffle_ps(hi01, hi23, 0x44);
        b[g][3] = _mm512_shuffle_ps(hi01, hi23, 0xEE);
    }
    for (int m = 0; m < 4; m++) {
        const __m512 c0 = _mm512_shuffle_f32x4(b[0][m], b[1][m], 0x44);
        const __m512 c1 = _mm512_shuffle_f32x4(b[0][m], b[1][m], 0xEE);
        const __m512 c2 = _mm512_shuffle_f32x4(b[2][m], b[3][m], 0x44);
        const __m512 c3 = _mm512_shuffle_f32x4(b[2][m], b[3][m], 0xEE);
        _mm512_storeu_ps(dst + (size_t)m * ldd, _mm512_shuffle_f32x4(c0, c2, 0x88));
        _mm512_storeu_ps(dst + (size_t)(4 + m) * ldd, _mm512_shuffle_f32x4(c0, c2, 0xDD));
        _mm512_storeu_ps(dst + (size_t)(8 + m) * ldd, _mm512_shuffle_f32x4(c1, c3, 0x88));
        _mm512_storeu_ps(dst + (size_t)(12 + m) * ldd, _mm512_shuffle_f32x4(c1, c3, 0xDD));
    }
}
#define TRANSPOSE_BLOCK 16
#define transpose_block transpose16
#elif defined(__AVX2__) && defined(__FMA__)
#define TRANSPOSE_BLOCK 8
#define transpose_block transpose8
#endif

/* MR rows [i0, i0+mr) x cols [k0, k0+kc) of op(A) -> dst[k*MR + r], zero padded. */
static void pack_a(float *restrict dst, const float *A, int lda, int transA, int i0, int mr, int k0,
                   int kc) {
    if (!transA) {
#if MR == 8 && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
        if (mr == MR) {
            /* 8 x 8 register transposes: the element loop below stored one
             * float at a time, 5% of a GPT-2 prefill */
            const float *src = A + (size_t)i0 * lda + k0;
            int k = 0;
            for (; k + 8 <= kc; k += 8) transpose8(dst + (size_t)k * MR, MR, src + k, lda);
            for (; k < kc; k++)
                for (int r = 0; r < MR; r++) dst[k * MR + r] = src[(size_t)r * lda + k];
            return;
        }
#endif
        for (int r = 0; r < mr; r++) {
            const float *src = A + (size_t)(i0 + r) * lda + k0;
            for (int k = 0; k < kc; k++) dst[k * MR + r] = src[k];
        }
        for (int r = mr; r < MR; r++)
            for (int k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
    } else {
        for (int k = 0; k < kc; k++) {
            const float *src = A + (size_t)(k0 + k) * lda + i0;
            float *d = dst + k * MR;
            for (int r = 0; r < mr; r++) d[r] = src[r];
            for (int r = mr; r < MR; r++) d[r] = 0.0f;
        }
    }
}

/* rows [k0, k0+kc) x NR cols [j0, j0+nr) of op(B) -> dst[k*NR + c], zero padded. */
static void pack_b(float *restrict dst, const float *B, int ldb, int transB, int k0, int kc, int j0,
                   int nr) {
#ifdef TRANSPOSE_BLOCK
    if (transB && nr == NR) {
        /* B stored [N, K] (nn.Linear weights): full panels are transposed in
         * square register blocks, several times faster than element copies,
         * which matters when M is small and packing dominates. */
        const float *src = B + (size_t)j0 * ldb + k0;
        int k = 0;
        for (; k + TRANSPOSE_BLOCK <= kc; k += TRANSPOSE_BLOCK)
            for (int c = 0; c < NR; c += TRANSPOSE_BLOCK)
                transpose_block(dst + (size_t)k * NR + c, NR, src + (size_t)c * ldb + k, ldb);
        for (; k < kc; k++)
            for (int c = 0; c < NR; c++) dst[(size_t)k * NR + c] = src[(size_t)c * ldb + k];
        return;
    }
#endif
    if (!transB) {
        for (int k = 0; k < kc; k++) {
            const float *src = B + (size_t)(k0 + k) * ldb + j0;
            float *d = dst + k * NR;
            for (int c = 0; c < nr; c++) d[c] = src[c];
            for (int c = nr; c < NR; c++) d[c] = 0.0f;
        }
    } else {
        /* B is stored [N, K]: transpose in 16-deep strips so the destination
         * lines being filled stay in L1 while all NR source rows are read. */
        for (int kb = 0; kb < kc; kb += 16) {
            const int ke = imin(kc, kb + 16);
            for (int c = 0; c < nr; c++) {
                const float *src = B + (size_t)(j0 + c) * ldb + k0;
                for (int k = kb; k < ke; k++) dst[k * NR + c] = src[k];
            }
            for (int c = nr; c < NR; c++)
                for (int k = kb; k < ke; k++) dst[k * NR + c] = 0.0f;
        }
    }
}

/* ------------------------------------------------------------------ micro-kernels */

/*
 * C[MR, NR] (row stride ldc) = alpha * sum_k a[k*MR + r] * b[k*ldbp + c]
 *                              + beta * C   (C not read when beta == 0).
 */
#if defined(__AVX512F__)

static void ukernel(int kc, const float *restrict a, const float *restrict b, int ldbp,
                    float *restrict C, int ldc, float alpha, float beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
#define GRAFT_ROW(r)                                                                               \
    do {                                                                                           \
        const __m512 av = _mm512_set1_ps(a[r]);                                                    \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                                                \
    } while (0)
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        GRAFT_ROW(0);
        GRAFT_ROW(1);
        GRAFT_ROW(2);
        GRAFT_ROW(3);
        GRAFT_ROW(4);
        GRAFT_ROW(5);
        GRAFT_ROW(6);
        GRAFT_ROW(7);
        a += MR;
        b += ldbp;
    }
#undef GRAFT_ROW
    const __m512 va = _mm512_set1_ps(alpha);
#define GRAFT_STORE(r)                                                                             \
    do {                                                                                           \
        float *cr = C + (size_t)(r) * ldc;                                                         \
        if (beta == 0.0f) {                                                                        \
            _mm512_storeu_ps(cr, _mm512_mul_ps(va, c##r##0));                                      \
            _mm512_storeu_ps(cr + 16, _mm512_mul_ps(va, c##r##1));                                 \
        } else {                                                                                   \
            const __m512 vb = _mm512_set1_ps(beta);                                                \
            _mm512_storeu_ps(cr, _mm512_fmadd_ps(va, c##r##0, _mm512_mul_ps(vb, _mm512_loadu_ps(cr)))); \
            _mm512_storeu_ps(cr + 16,                                                              \
                             _mm512_fmadd_ps(va, c##r##1, _mm512_mul_ps(vb, _mm512_loadu_ps(cr + 16)))); \
        }                                                                                          \
    } while (0)
    GRAFT_STORE(0);
    GRAFT_STORE(1);
    GRAFT_STORE(2);
    GRAFT_STORE(3);
    GRAFT_STORE(4);
    GRAFT_STORE(5);
    GRAFT_STORE(6);
    GRAFT_STORE(7);
#undef GRAFT_STORE
}

#elif defined(__AVX2__) && defined(__FMA__)

static void ukernel(int kc, const float *restrict a, const float *restrict b, int ldbp,
                    float *restrict C, int ldc, float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define GRAFT_ROW(r)                                                                               \
    do {                                                                                           \
        const __m256 av = _mm256_broadcast_ss(a + (r));                                            \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                                \
    } while (0)
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        GRAFT_ROW(0);
        GRAFT_ROW(1);
        GRAFT_ROW(2);
        GRAFT_ROW(3);
        GRAFT_ROW(4);
        GRAFT_ROW(5);
        a += MR;
        b += ldbp;
    }
#undef GRAFT_ROW
    const __m256 va = _mm256_set1_ps(alpha);
#define GRAFT_STORE(r)                                                                             \
    do {                                                                                           \
        float *cr = C + (size_t)(r) * ldc;                                                         \
        if (beta == 0.0f) {                                                                        \
            _mm256_storeu_ps(cr, _mm256_mul_ps(va, c##r##0));                                      \
            _mm256_storeu_ps(cr + 8, _mm256_mul_ps(va, c##r##1));                                  \
        } else {                                                                                   \
            const __m256 vb = _mm256_set1_ps(beta);                                                \
            _mm256_storeu_ps(cr, _mm256_fmadd_ps(va, c##r##0, _mm256_mul_ps(vb, _mm256_loadu_ps(cr)))); \
            _mm256_storeu_ps(cr + 8,                                                               \
                             _mm256_fmadd_ps(va, c##r##1, _mm256_mul_ps(vb, _mm256_loadu_ps(cr + 8)))); \
        }                                                                                          \
    } while (0)
    GRAFT_STORE(0);
    GRAFT_STORE(1);
    GRAFT_STORE(2);
    GRAFT_STORE(3);
    GRAFT_STORE(4);
    GRAFT_STORE(5);
#undef GRAFT_STORE
}

#else

/* Portable fallback: the compiler may vectorize the NR-wide inner loop. */
static void ukernel(int kc, const float *restrict a, const float *restrict b, int ldbp,
                    float *restrict C, int ldc, float alpha, float beta) {
    float acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++) acc[r][c] = 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++) {
            const float ar = a[r];
            for (int c = 0; c < NR; c++) acc[r][c] += ar * b[c];
        }
        a += MR;
        b += ldbp;
    }
    for (int r = 0; r < MR; r++) {
        float *cr = C + (size_t)r * ldc;
        for (int c = 0; c < NR; c++)
            cr[c] = beta == 0.0f ? alpha * acc[r][c] : alpha * acc[r][c] + beta * cr[c];
    }
}

#endif

/* A tile that may be cut by the matrix edge: full tiles go straight to C,
 * partial ones through a buffer so nothing outside C is read or written. */
static void tile(int kc, const float *a, const float *b, int ldbp, float *C, int ldc, int mr,
                 int nr, float alpha, float beta) {
    if (mr == MR && nr == NR) {
        ukernel(kc, a, b, ldbp, C, ldc, alpha, beta);
        return;
    }
    float buf[MR * NR] __attribute__((aligned(64)));
    ukernel(kc, a, b, ldbp, buf, NR, 1.0f, 0.0f);
    for (int r = 0; r < mr; r++) {
        float *cr = C + (size_t)r * ldc;
        const float *br = buf + r * NR;
        if (beta == 0.0f)
            for (int c = 0; c < nr; c++) cr[c] = alpha * br[c];
        else
            for (int c = 0; c < nr; c++) cr[c] = alpha * br[c] + beta * cr[c];
    }
}

/* ------------------------------------------------------------------ unblocked fallback */

/* Used only when the packing buffers cannot be allocated: slow but correct,
 * and the kernels have no way to report an allocation failure. */
static void gemm_unblocked(int transA, int transB, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C,
                           int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) {
                const float av = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const float bv = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += av * bv;
            }
            float *c = C + (size_t)i * ldc + j;
            *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
        }
    }
}

/* ------------------------------------------------------------------ driver */

#ifdef _OPENMP
static int omp_threads(void) { return omp_get_max_threads(); }
static int omp_thread(void) { return omp_get_thread_num(); }
static int omp_team(void) { return omp_get_num_threads(); }
#else
static int omp_threads(void) { return 1; }
static int omp_thread(void) { return 0; }
static int omp_team(void) { return 1; }
#endif

/* Part `part` of `parts` of the lines of op(B)'s block rows [k0, k0+kc) x
 * cols [j0, j0+nb): asked into the cache a little at a time, one part per
 * row panel of the block being computed. */
static void prefetch_b(const float *B, int ldb, int transB, int k0, int kc, int j0, int nb,
                       int part, int parts) {
    const int per = 64 / (int)sizeof(float);
    /* stored rows: [N, K] when transposed, else [K, N] */
    const int rows = transB ? nb : kc, len = transB ? kc : nb;
    const int lines = (len + per - 1) / per;
    const long long total = (long long)rows * lines;
    const long long l0 = total * part / parts, l1 = total * (part + 1) / parts;
    for (long long l = l0; l < l1; l++) {
        const int r = (int)(l / lines), c = (int)(l % lines) * per;
        const float *row = transB ? B + (size_t)(j0 + r) * ldb + k0 : B + (size_t)(k0 + r) * ldb + j0;
        __builtin_prefetch(row + c, 0, 2);
    }
}


/* threads = 0: everything on the calling thread (for kernels that are
 * already parallel over independent tasks, e.g. attention heads). */
static void gemm_driver(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc,
                        int threads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    if (M == 1 || N == 1) {
        /* M == 1: C row = alpha * a op(B) + beta C, a = row 0 of op(A).
         * N == 1: C column = alpha * op(A) b + beta C, b = column 0 of op(B). */
        const float *x = M == 1 ? A : B;
        const int incx = M == 1 ? (transA ? lda : 1) : (transB ? 1 : ldb);
        float *xbuf = NULL;
        if (incx != 1) { /* gather a strided vector once */
            xbuf = graft_alloc_aligned((size_t)K * sizeof(float));
            if (!xbuf) {
                gemm_unblocked(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                return;
            }
            for (int k = 0; k < K; k++) xbuf[k] = x[(size_t)k * incx];
            x = xbuf;
        }
        if (M == 1)
            gemv(N, K, alpha, B, ldb, !transB, x, beta, NULL, C, 1, threads);
        else
            gemv(M, K, alpha, A, lda, transA, x, beta, NULL, C, ldc, threads);
        graft_free_aligned(xbuf);
        return;
    }

    const int direct_b = !transB && M <= DIRECT_B_MAX_M;
    const int kc_max = imin(K, KC);
    const int mc_max = imin(M, MC);
    const int npan_m_max = (mc_max + MR - 1) / MR;
    const int par = threads && (double)M * N * K > PARALLEL_MIN_FMA;
    const int nthr = GRAFT_PAR_WANTED(par) ? omp_threads() : 1;
    /* Packed A is shared by the team; each thread packs the B blocks it
     * sweeps into its own slot. Both live in the calling thread's scratch: a
     * fresh multi-megabyte buffer per product faults its pages in again. */
    float *bp = graft_scratch(GRAFT_SCRATCH_PACK_B, (size_t)nthr * NB * kc_max);
    float *ap = graft_scratch(GRAFT_SCRATCH_PACK_A, (size_t)npan_m_max * MR * kc_max);
    if (!bp || !ap) {
        gemm_unblocked(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }

    /* B blocks are claimed from a counter, one ahead: a thread that the OS
     * preempts (two cores shared with other work) does not stall the other,
     * and the block claimed next is known while this one is computed, so its
     * weights (in memory, where a prefill finds them) are prefetched during
     * the tiles. Packing every block up front, with a barrier before the
     * tiles, left both threads waiting on memory at once; now one thread's
     * packing overlaps the other's tiles. GPT-2 prefill products with cold
     * weights: 330-355 GFLOP/s against 255-270 before (2 threads, Zen 5);
     * the prefetch is the smaller part of that (2-3%). Two counters, used by
     * alternate phases, so one can be reset while the other is in use. */
    int claims[2] = {0, 0};
    GRAFT_PAR_REGION(par,
        const int tid = omp_thread(), nth_now = omp_team();
        int phase = 0; /* this thread's count of (jc, pc, ic) steps: the same on every thread */
        float *mybp = bp + (size_t)tid * NB * kc_max;
        for (int jc = 0; jc < N; jc += NC) {
            const int nc = imin(NC, N - jc);
            const int npan_n = (nc + NR - 1) / NR;
            const int nblk = (nc + NB - 1) / NB;
            for (int pc = 0; pc < K; pc += KC) {
                const int kc = imin(KC, K - pc);
                /* Later K slices add onto what the first one wrote. */
                const float beta_eff = pc == 0 ? beta : 1.0f;
                for (int ic = 0; ic < M; ic += MC, phase++) {
                    const int mc = imin(MC, M - ic);
                    const int npan_m = (mc + MR - 1) / MR;
                    int *claim = &claims[phase & 1];
_Pragma("omp single nowait")
                    claims[(phase + 1) & 1] = 0; /* its last users passed the barrier below */
                    /* the first block is claimed now and prefetched while
                     * this thread packs its share of A */
                    int jb = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED);
                    const int p0 = npan_m * tid / nth_now, p1 = npan_m * (tid + 1) / nth_now;
                    for (int p = p0; p < p1; p++) {
                        if (jb < nblk)
                            prefetch_b(B, ldb, transB, pc, kc, jc + jb * NB, imin(NB, nc - jb * NB), p - p0,
                                       p1 - p0);
                        pack_a(ap + (size_t)p * MR * kc, A, lda, transA, ic + p * MR,
                               imin(MR, mc - p * MR), pc, kc);
                    }
_Pragma("omp barrier")
                    while (jb < nblk) {
                        const int next = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED);
                        const int q0 = jb * (NB / NR), q1 = imin(npan_n, q0 + NB / NR);
                        for (int q = q0; q < q1; q++) {
                            const int nr = imin(NR, nc - q * NR);
                            if (direct_b && nr == NR) continue; /* read in place */
                            pack_b(mybp + (size_t)(q - q0) * NR * kc, B, ldb, transB, pc, kc,
                                   jc + q * NR, nr);
                        }
                        for (int p = 0; p < npan_m; p++) {
                            if (next < nblk)
                                prefetch_b(B, ldb, transB, pc, kc, jc + next * NB,
                                           imin(NB, nc - next * NB), p, npan_m);
                            const int mr = imin(MR, mc - p * MR);
                            const float *a = ap + (size_t)p * MR * kc;
                            float *crow = C + (size_t)(ic + p * MR) * ldc + jc;
                            for (int q = q0; q < q1; q++) {
                                const int nr = imin(NR, nc - q * NR);
                                const float *b;
                                int ldbp;
                                if (direct_b && nr == NR) {
                                    b = B + (size_t)pc * ldb + jc + q * NR;
                                    ldbp = ldb;
                                } else {
                                    b = mybp + (size_t)(q - q0) * NR * kc;
                                    ldbp = NR;
                                }
                                tile(kc, a, b, ldbp, crow + q * NR, ldc, mr, nr, alpha, beta_eff);
                            }
                        }
                        jb = next;
                    }
                    /* ap is packed again next phase: everyone must be done with it */
_Pragma("omp barrier")
                }
            }
        }
    );
}

void graft_gemm_builtin(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_driver(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1);
}

void graft_gemv_bias(float *y, const float *x, const float *w, const float *b, int K, int N, int kmajor) {
    if (N <= 0) return;
    /* threads 1: graft_par_items runs it here when inside another region;
     * K = 0 leaves sums of zero, so y = b (or 0) */
    gemv(N, K, 1.0f, w, kmajor ? N : K, kmajor, x, 0.0f, b, y, 1, 1);
}

/* Same contract as graft_gemm_builtin, but never starts threads. */
void graft_gemm_serial(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_driver(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 0);
}
