/*
 * wmat.c - products with weight matrices kept as the checkpoint stores them
 * (F16 or BF16, read in place from the mapping), widened to f32 on the fly.
 *
 * A batch-1 decode reads every weight once per token and is bound by memory
 * bandwidth, so reading 2-byte weights and widening them in registers halves
 * its bytes against an f32 copy. Products of many rows (prefill, the backward
 * of an activation editor) are bound by arithmetic instead: there a slice of
 * the matrix is widened into a small f32 buffer and handed to the f32 GEMM,
 * which amortises the conversion over the rows.
 *
 * Two GEMV shapes cover both layouts and both directions:
 *   dot:  y[r] (+)= sum_l W[r][l] x[l]   rows of W against x (nn.Linear forward,
 *                                        Conv1D backward)
 *   axpy: y[l] (+)= sum_r x[r] W[r][l]   x-weighted sum of rows (Conv1D forward,
 *                                        nn.Linear backward)
 * GGUF's Q8_0 (blocks of 32 int8 weights and an F16 scale) runs the dot
 * shape directly: its blocks lie along the rows, which is the only way GGUF
 * stores matrices (a view marked `transposed` is the transpose of the
 * parameter graft's tables describe, e.g. GPT-2's Conv1D as llama.cpp writes it).
 * Each has an AVX-512, an AVX2 + F16C and a portable version, picked at run
 * time from cpuid (GRAFT_ISA=generic|avx2|avx512 forces a lower one, for the
 * tests and for measuring).
 *
 * The dot kernels take four rows per call but read them one after another,
 * so a thread's weights arrive as one sequential stream. Walking the four
 * rows side by side (four interleaved streams, x loaded once for all four)
 * read GPT-2's F16 matrices at about 70% of the rate of one stream and Q8_0's
 * at about 80% (2 threads, the AMD EPYC VM; bench/README.md); x is re-read from L1
 * instead, which costs nothing a memory-bound product notices.
 */
#include "internal.h"
#include "kernels.h"
#include "parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define WMAT_X86 1
#endif

#define AXPY_BANDS 8            /* bands of rows a large axpy-shaped GEMV is cut into */
#define AXPY_BAND_MIN_ROWS 64   /* rows of a band at least */
#define AXPY_CHUNK 256          /* Q8_0 axpy: columns one task accumulates */
#define PAR_MIN_ELEMS GRAFT_GEMV_PAR_MIN /* below this a product runs on the calling thread */
#define SLICE_FLOATS (1 << 20)  /* f32 buffer of a widened slice: 4 MiB */
#define SLICE_MIN_ROWS 128      /* rows of a slice at least: the GEMM's depth */

static inline uint16_t ld16(const uint16_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v); /* safetensors does not promise 2-byte alignment */
    return v;
}

static inline float widen(const uint16_t *p, int bf16) {
    return bf16 ? graft_bf16_to_f32(ld16(p)) : graft_f16_to_f32(ld16(p));
}

/* ------------------------------------------------------------------ portable */

static void dot4_generic(float out[4], const uint16_t *const r[4], const float *x, int L, int bf16) {
    for (int i = 0; i < 4; i++) {
        float s = 0.0f;
        for (int l = 0; l < L; l++) s += widen(r[i] + l, bf16) * x[l];
        out[i] = s;
    }
}

static void axpy_generic(float *acc, int w, const uint16_t *m, size_t ld, const float *x, int R, int bf16) {
    for (int r = 0; r < R; r++) {
        const uint16_t *row = m + (size_t)r * ld;
        const float xr = x[r];
        for (int j = 0; j < w; j++) acc[j] += xr * widen(row + j, bf16);
    }
}

/* Q8_0: 34-byte blocks, an F16 scale d then 32 int8 q; the weight is d * q. */
#define Q8_BLOCK 32
#define Q8_BYTES 34

static inline float q8_scale(const uint8_t *blk) { return graft_f16_to_f32(ld16((const uint16_t *)(const void *)blk)); }

void graft_q8_0_to_f32(float *dst, const void *src, size_t n) {
    const uint8_t *s = src;
    for (size_t b = 0; b < n / Q8_BLOCK; b++) {
        const uint8_t *blk = s + b * Q8_BYTES;
        const float d = q8_scale(blk);
        for (int k = 0; k < Q8_BLOCK; k++) dst[b * Q8_BLOCK + k] = d * (float)(int8_t)blk[2 + k];
    }
}

static void q8_quantize_generic(signed char *q, float *d, const float *x, size_t n) {
    for (size_t b = 0; b < n / Q8_BLOCK; b++) {
        const float *xb = x + b * Q8_BLOCK;
        float amax = 0.0f;
        for (int k = 0; k < Q8_BLOCK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        const float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        d[b] = scale;
        for (int k = 0; k < Q8_BLOCK; k++) q[b * Q8_BLOCK + k] = (int8_t)lrintf(xb[k] * inv); /* |.| <= 127 */
    }
}

static void dot4_q8_generic(float out[4], const uint8_t *const r[4], const float *x, int L) {
    for (int i = 0; i < 4; i++) {
        float s = 0.0f;
        for (int b = 0; b < L / Q8_BLOCK; b++) {
            const uint8_t *blk = r[i] + (size_t)b * Q8_BYTES;
            float bs = 0.0f;
            for (int k = 0; k < Q8_BLOCK; k++) bs += (float)(int8_t)blk[2 + k] * x[b * Q8_BLOCK + k];
            s += q8_scale(blk) * bs;
        }
        out[i] = s;
    }
}

/* acc[0..w) += sum_r x[r] W[r][l0 + j], W in Q8_0 rows; l0 and w are whole
 * blocks (the callers' chunks are multiples of 32). Portable only: it serves
 * the activation gradient of a quantised matrix at batch 1, a rare shape. */
static void axpy_q8_generic(float *acc, int w, const uint8_t *m, size_t ld, int l0, const float *x, int R) {
    for (int r = 0; r < R; r++) {
        const uint8_t *row = m + (size_t)r * ld + (size_t)(l0 / Q8_BLOCK) * Q8_BYTES;
        for (int b = 0; b < w / Q8_BLOCK; b++) {
            const uint8_t *blk = row + (size_t)b * Q8_BYTES;
            const float f = x[r] * q8_scale(blk);
            for (int k = 0; k < Q8_BLOCK; k++) acc[b * Q8_BLOCK + k] += f * (float)(int8_t)blk[2 + k];
        }
    }
}

#ifdef WMAT_X86
/* ------------------------------------------------------------------ AVX2 + F16C */

__attribute__((target("avx2,fma,f16c"))) static inline __m256 wide8(const uint16_t *p, int bf16) {
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

__attribute__((target("avx2,fma,f16c"))) static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four rows, one after the other (see the top of the file), a 64-byte line
 * of a row per step in four chains of sums, so the multiply-adds' latency
 * never paces the stream. */
__attribute__((target("avx2,fma,f16c"))) static void dot4_avx2(float out[4], const uint16_t *const r[4],
                                                               const float *x, int L, int bf16) {
    for (int i = 0; i < 4; i++) {
        const uint16_t *p = r[i];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int l = 0;
        for (; l + 32 <= L; l += 32) {
            graft_prefetch((const char *)(p + l) + GRAFT_PREFETCH_AHEAD);
            a0 = _mm256_fmadd_ps(wide8(p + l, bf16), _mm256_loadu_ps(x + l), a0);
            a1 = _mm256_fmadd_ps(wide8(p + l + 8, bf16), _mm256_loadu_ps(x + l + 8), a1);
            a2 = _mm256_fmadd_ps(wide8(p + l + 16, bf16), _mm256_loadu_ps(x + l + 16), a2);
            a3 = _mm256_fmadd_ps(wide8(p + l + 24, bf16), _mm256_loadu_ps(x + l + 24), a3);
        }
        for (; l + 8 <= L; l += 8) {
            if ((l & 31) == 0) graft_prefetch((const char *)(p + l) + GRAFT_PREFETCH_AHEAD);
            a0 = _mm256_fmadd_ps(wide8(p + l, bf16), _mm256_loadu_ps(x + l), a0);
        }
        float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; l < L; l++) s += widen(p + l, bf16) * x[l];
        out[i] = s;
    }
}

/* acc[0..w) += sum_r x[r] W[r][0..w): one row after another, sums in acc
 * (L1), so the weights are one sequential stream when the rows are whole
 * (ld == w, as in every caller) and the prefetch GRAFT_PREFETCH_AHEAD bytes
 * on is the stream's own next lines. Four rows side by side, sharing each
 * load and store of acc, read GPT-2's F16 Conv1D matrices about a fifth
 * slower (decode of an F16 safetensors folder, 2 threads). Every sum is the
 * same chain of multiply-adds, row by row, as it was. */
__attribute__((target("avx2,fma,f16c"))) static void axpy_avx2(float *acc, int w, const uint16_t *m, size_t ld,
                                                               const float *x, int R, int bf16) {
    for (int r = 0; r < R; r++) {
        const uint16_t *p = m + (size_t)r * ld;
        const __m256 xr = _mm256_set1_ps(x[r]);
        int j = 0;
        for (; j + 16 <= w; j += 16) {
            if ((j & 31) == 0) /* once per 64-byte line */
                graft_prefetch((const char *)(p + j) + GRAFT_PREFETCH_AHEAD);
            _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(xr, wide8(p + j, bf16), _mm256_loadu_ps(acc + j)));
            _mm256_storeu_ps(acc + j + 8, _mm256_fmadd_ps(xr, wide8(p + j + 8, bf16), _mm256_loadu_ps(acc + j + 8)));
        }
        for (; j < w; j++) acc[j] = acc[j] + x[r] * widen(p + j, bf16);
    }
}

__attribute__((target("avx2,fma,f16c"))) static inline __m256 q8_wide8(const uint8_t *q) {
    int64_t v;
    memcpy(&v, q, 8);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)));
}

__attribute__((target("avx2,fma,f16c"))) static void dot4_q8_avx2(float out[4], const uint8_t *const r[4],
                                                                  const float *x, int L) {
    for (int i = 0; i < 4; i++) { /* rows one after another (top of the file) */
        __m256 a = _mm256_setzero_ps();
        for (int b = 0; b < L / Q8_BLOCK; b++) {
            const float *xb = x + b * Q8_BLOCK;
            const uint8_t *blk = r[i] + (size_t)b * Q8_BYTES;
            graft_prefetch(blk + GRAFT_PREFETCH_AHEAD);
            __m256 s = _mm256_mul_ps(q8_wide8(blk + 2), _mm256_loadu_ps(xb));
            s = _mm256_fmadd_ps(q8_wide8(blk + 10), _mm256_loadu_ps(xb + 8), s);
            s = _mm256_fmadd_ps(q8_wide8(blk + 18), _mm256_loadu_ps(xb + 16), s);
            s = _mm256_fmadd_ps(q8_wide8(blk + 26), _mm256_loadu_ps(xb + 24), s);
            a = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(ld16((const uint16_t *)(const void *)blk))), s, a);
        }
        out[i] = hsum8(a);
    }
}

/* q8_quantize_generic eight lanes at a time, with the same result: the same
 * scale, x * (1 / scale) rounded to nearest even (the default MXCSR mode,
 * as lrintf's) and |q| <= 127, so the saturating packs never clip. x is
 * quantised once per batch-1 Q8_0 product, on the decode team's rank 0 while
 * the others wait: the scalar loop (a libm call per element) was 2% of a
 * GPT-2 Q8_0 decode step. */
__attribute__((target("avx2,fma"))) static void q8_quantize_avx2(signed char *q, float *d, const float *x,
                                                                 size_t n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b < n / Q8_BLOCK; b++) {
        const float *xb = x + b * Q8_BLOCK;
        const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16),
                     v3 = _mm256_loadu_ps(xb + 24);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                       _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float scale = _mm_cvtss_f32(h) / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        d[b] = scale;
        const __m256 iv = _mm256_set1_ps(inv);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, iv)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, iv)),
                      i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, iv)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, iv));
        /* the packs work within 128-bit lanes: 4-byte groups come out as
         * i0[0:4] i1[0:4] i2[0:4] i3[0:4] | i0[4:8] i1[4:8] ...; put them in order */
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(void *)(q + b * Q8_BLOCK), _mm256_permutevar8x32_epi32(p, order));
    }
}

/* The integer Q8_0 x Q8_0 dot of four rows, x rounded to Q8_0 blocks
 * (graft_q8_0_quantize): per block |x| (unsigned) times the weights carrying
 * x's sign, summed to 32 bits by Q8_PRODUCT(ux, sw), then one multiply-add of
 * the two scales. One body for the AVX2 and the VNNI kernels, which differ
 * only in that product and in the instructions their target allows. Even
 * and odd blocks go to two chains of sums: with one, the multiply-add's
 * latency held a thread to about 8 weights a cycle, no faster than memory. */
#define Q8_INT_BLOCK(Q8_PRODUCT, acc, b)                                                          \
    do {                                                                                          \
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(xq + (b) * Q8_BLOCK)); \
        const uint8_t *blk = row + (size_t)(b) * Q8_BYTES;                                        \
        graft_prefetch(blk + GRAFT_PREFETCH_AHEAD);                                               \
        const __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));          \
        const __m256i p = Q8_PRODUCT(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv));              \
        const float sc = _cvtsh_ss(ld16((const uint16_t *)(const void *)blk)) * xd[b];            \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(sc), _mm256_cvtepi32_ps(p), acc);                    \
    } while (0)
#define Q8_INT_DOT4(Q8_PRODUCT)                                                                    \
    do {                                                                                           \
        const int nb = L / Q8_BLOCK;                                                               \
        for (int i = 0; i < 4; i++) { /* rows one after another (top of the file) */             \
            const uint8_t *row = r[i];                                                             \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;                                              \
            int b = 0;                                                                             \
            for (; b + 2 <= nb; b += 2) {                                                          \
                Q8_INT_BLOCK(Q8_PRODUCT, a0, b);                                                   \
                Q8_INT_BLOCK(Q8_PRODUCT, a1, b + 1);                                               \
            }                                                                                      \
            if (b < nb) Q8_INT_BLOCK(Q8_PRODUCT, a0, b);                                           \
            out[i] = hsum8(_mm256_add_ps(a0, a1));                                                 \
        }                                                                                          \
    } while (0)

/* AVX2 (CPUs without AVX-512 VNNI): pairs summed to 16 bits (at most
 * 2 x 127 x 128, no saturation), then to 32 bits. */
__attribute__((target("avx2"))) static inline __m256i q8_product_avx2(__m256i ux, __m256i sw) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ux, sw), _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,f16c"))) static void dot4_q8_avx2i(float out[4], const uint8_t *const r[4],
                                                                   const int8_t *xq, const float *xd, int L) {
    Q8_INT_DOT4(q8_product_avx2);
}

/* ------------------------------------------------------------------ AVX-512 */

__attribute__((target("avx512f"))) static inline __m512 wide16(const uint16_t *p, int bf16) {
    const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
    if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* As dot4_avx2, two 64-byte lines of a row per step: four chains of sums
 * (two left the widening and multiply-adds at a fifth less than the old
 * four-row kernel on weights in cache). */
__attribute__((target("avx512f"))) static void dot4_avx512(float out[4], const uint16_t *const r[4], const float *x,
                                                           int L, int bf16) {
    for (int i = 0; i < 4; i++) {
        const uint16_t *p = r[i];
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int l = 0;
        for (; l + 64 <= L; l += 64) {
            graft_prefetch((const char *)(p + l) + GRAFT_PREFETCH_AHEAD);
            graft_prefetch((const char *)(p + l + 32) + GRAFT_PREFETCH_AHEAD);
            a0 = _mm512_fmadd_ps(wide16(p + l, bf16), _mm512_loadu_ps(x + l), a0);
            a1 = _mm512_fmadd_ps(wide16(p + l + 16, bf16), _mm512_loadu_ps(x + l + 16), a1);
            a2 = _mm512_fmadd_ps(wide16(p + l + 32, bf16), _mm512_loadu_ps(x + l + 32), a2);
            a3 = _mm512_fmadd_ps(wide16(p + l + 48, bf16), _mm512_loadu_ps(x + l + 48), a3);
        }
        for (; l + 16 <= L; l += 16) {
            if ((l & 31) == 0) graft_prefetch((const char *)(p + l) + GRAFT_PREFETCH_AHEAD);
            a0 = _mm512_fmadd_ps(wide16(p + l, bf16), _mm512_loadu_ps(x + l), a0);
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; l < L; l++) s += widen(p + l, bf16) * x[l];
        out[i] = s;
    }
}

/* As axpy_avx2, a 64-byte line of the row per step. */
__attribute__((target("avx512f"))) static void axpy_avx512(float *acc, int w, const uint16_t *m, size_t ld,
                                                           const float *x, int R, int bf16) {
    for (int r = 0; r < R; r++) {
        const uint16_t *p = m + (size_t)r * ld;
        const __m512 xr = _mm512_set1_ps(x[r]);
        int j = 0;
        for (; j + 32 <= w; j += 32) {
            graft_prefetch((const char *)(p + j) + GRAFT_PREFETCH_AHEAD);
            _mm512_storeu_ps(acc + j, _mm512_fmadd_ps(xr, wide16(p + j, bf16), _mm512_loadu_ps(acc + j)));
            _mm512_storeu_ps(acc + j + 16,
                             _mm512_fmadd_ps(xr, wide16(p + j + 16, bf16), _mm512_loadu_ps(acc + j + 16)));
        }
        for (; j < w; j++) acc[j] = acc[j] + x[r] * widen(p + j, bf16);
    }
}

__attribute__((target("avx512f,f16c"))) static void dot4_q8_avx512(float out[4], const uint8_t *const r[4],
                                                                    const float *x, int L) {
    for (int i = 0; i < 4; i++) { /* rows one after another (top of the file) */
        __m512 a = _mm512_setzero_ps();
        for (int b = 0; b < L / Q8_BLOCK; b++) {
            const uint8_t *blk = r[i] + (size_t)b * Q8_BYTES;
            graft_prefetch(blk + GRAFT_PREFETCH_AHEAD);
            const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(blk + 2))));
            const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(blk + 18))));
            const __m512 s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + b * Q8_BLOCK + 16),
                                             _mm512_mul_ps(q0, _mm512_loadu_ps(x + b * Q8_BLOCK)));
            a = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(ld16((const uint16_t *)(const void *)blk))), s, a);
        }
        out[i] = _mm512_reduce_add_ps(a);
    }
}
/* Q8_0 x Q8_0 with AVX-512 VNNI (256-bit): x quantised per block like the
 * weights, then per block one dpbusd of |x| against the weights carrying x's
 * sign (Q8_INT_DOT4). A third of the work of widening the weights to floats,
 * at the price of rounding x to 8 bits (about 0.4% per element, as
 * llama.cpp's Q8_0 dot does); used for batch-1 products only. */
__attribute__((target("avx2,avx512f,avx512vl,avx512vnni"))) static inline __m256i q8_product_vnni(__m256i ux,
                                                                                                    __m256i sw) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, sw);
}

__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni"))) static void
dot4_q8_vnni(float out[4], const uint8_t *const r[4], const int8_t *xq, const float *xd, int L) {
    Q8_INT_DOT4(q8_product_vnni);
}
#endif /* WMAT_X86 */

/* ------------------------------------------------------------------ dispatch */

typedef struct wkernels {
    const char *name;
    void (*dot4)(float out[4], const uint16_t *const r[4], const float *x, int L, int bf16);
    void (*axpy)(float *acc, int w, const uint16_t *m, size_t ld, const float *x, int R, int bf16);
    void (*dot4_q8)(float out[4], const uint8_t *const r[4], const float *x, int L);
} wkernels;

static const wkernels k_generic = {"generic", dot4_generic, axpy_generic, dot4_q8_generic};
#ifdef WMAT_X86
static const wkernels k_avx2 = {"avx2", dot4_avx2, axpy_avx2, dot4_q8_avx2};
static const wkernels k_avx512 = {"avx512", dot4_avx512, axpy_avx512, dot4_q8_avx512};
#endif

/* The path follows the kernels' (isa.c: cpuid, GRAFT_ISA, graft_cpu_isa_set),
 * so one setting moves every kernel. */
static const wkernels *kernels_pick(void) {
#ifdef WMAT_X86
    switch (graft_cpu_isa_id()) {
    case GRAFT_ISA_AVX512: return &k_avx512;
    case GRAFT_ISA_AVX2: return &k_avx2;
    default: break;
    }
#endif
    return &k_generic;
}

/* Batch-1 Q8_0 products round x to Q8_0 blocks and run integer dots (as
 * llama.cpp's Q8_0 dot does): AVX-512 VNNI where the CPU has it, else the
 * AVX2 form; GRAFT_NO_VNNI=1 keeps the kernels that widen the weights to
 * floats (x exact) on every path. */
typedef void (*dot4_q8i_fn)(float out[4], const uint8_t *const r[4], const int8_t *xq, const float *xd, int L);

/* 1: the CPU has AVX-512 VNNI; 2: GRAFT_NO_VNNI is set (not "0"). Read once. */
static int q8_flags(void) {
    static int flags = -1;
    int f = __atomic_load_n(&flags, __ATOMIC_RELAXED);
    if (f < 0) {
        f = 0;
#ifdef WMAT_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) f |= 1;
#endif
        const char *e = getenv("GRAFT_NO_VNNI");
        if (e && strcmp(e, "0") != 0) f |= 2;
        __atomic_store_n(&flags, f, __ATOMIC_RELAXED);
    }
    return f;
}

/* The integer Q8_0 kernel of the current path, or NULL; its name in *name
 * when name is not NULL (the path's name when there is none). */
static dot4_q8i_fn q8_int_kernel(const char **name) {
    const wkernels *k = kernels_pick();
    const char *nm = k->name;
    dot4_q8i_fn fn = NULL;
#ifdef WMAT_X86
    const int f = q8_flags();
    if (k != &k_generic && !(f & 2)) {
        const int vnni = k == &k_avx512 && (f & 1);
        nm = vnni ? "avx512+vnni" : k == &k_avx512 ? "avx512+int8" : "avx2+int8";
        fn = vnni ? dot4_q8_vnni : dot4_q8_avx2i;
    }
#endif
    if (name) *name = nm;
    return fn;
}

void graft_q8_0_quantize(signed char *q, float *d, const float *x, size_t n) {
#ifdef WMAT_X86
    if (kernels_pick() != &k_generic) {
        q8_quantize_avx2(q, d, x, n);
        return;
    }
#endif
    q8_quantize_generic(q, d, x, n);
}

const char *graft_wmat_isa(void) {
    const char *name;
    q8_int_kernel(&name);
    return name;
}

/* ------------------------------------------------------------------ GEMV */

size_t graft_wmat_row_bytes(int dtype, size_t n) {
    switch (dtype) {
    case GRAFT_F32: return n * 4;
    case GRAFT_F16:
    case GRAFT_BF16: return n * 2;
    case GRAFT_WMAT_Q8_0: return n / Q8_BLOCK * Q8_BYTES;
    }
    return 0;
}

/* One GEMV: y (+)= W x over rows (dot) or columns (axpy) of a stored matrix. */
typedef struct gemv_job {
    const wkernels *k;
    float *y;
    float beta;
    const graft_wmat *w;
    size_t ld;
    const float *x;
    int R, L;
    const int8_t *xq; /* x rounded to Q8_0 (the integer Q8_0 kernels), else NULL */
    const float *xd;
    dot4_q8i_fn q8i;
    float *part; /* axpy: nb partial rows of L sums, one per band of rows */
    int nb;
    const float *bias; /* added to each output by the thread that computes it (beta 0), or NULL */
} gemv_job;

/* Groups [g0, g1) of four rows: y[r] = beta y[r] + sum_l W[r][l] x[l]. */
static void dot_groups(void *arg, int g0, int g1) {
    const gemv_job *j = arg;
    const int bf16 = j->w->dtype == GRAFT_BF16, q8 = j->w->dtype == GRAFT_WMAT_Q8_0;
    const uint8_t *m = j->w->data;
    for (int g = g0; g < g1; g++) {
        const int r0 = 4 * g, nr = j->R - r0 < 4 ? j->R - r0 : 4;
        /* rows past the edge repeat row r0; their sums are dropped */
        const uint8_t *rows[4];
        for (int i = 0; i < 4; i++) rows[i] = m + (size_t)(r0 + (i < nr ? i : 0)) * j->ld;
        float s[4];
        if (j->xq)
            j->q8i(s, rows, j->xq, j->xd, j->L);
        else if (q8)
            j->k->dot4_q8(s, rows, j->x, j->L);
        else
            j->k->dot4(s, (const uint16_t *const *)rows, j->x, j->L, bf16);
        for (int i = 0; i < nr; i++)
            j->y[r0 + i] = j->beta != 0.0f ? j->y[r0 + i] + s[i] : j->bias ? j->bias[r0 + i] + s[i] : s[i];
    }
}

/* Q8_0, chunks [c0, c1) of AXPY_CHUNK columns: y[l] = beta y[l] + sum_r x[r] W[r][l],
 * each chunk walking every row (the backward of a Q8_0 nn.Linear only). */
static void axpy_q8_chunks(void *arg, int c0, int c1) {
    const gemv_job *j = arg;
    for (int c = c0; c < c1; c++) {
        const int l0 = c * AXPY_CHUNK, n = j->L - l0 < AXPY_CHUNK ? j->L - l0 : AXPY_CHUNK;
        float acc[AXPY_CHUNK];
        for (int i = 0; i < n; i++) acc[i] = j->beta == 0.0f ? 0.0f : j->y[l0 + i];
        axpy_q8_generic(acc, n, j->w->data, j->ld, l0, j->x, j->R);
        memcpy(j->y + l0, acc, (size_t)n * sizeof(float));
    }
}

/* Bands [b0, b1) of rows, band b = rows [R b / nb, R (b + 1) / nb): its
 * x-weighted sum of whole rows into partial row b. */
static void axpy_bands(void *arg, int b0, int b1) {
    const gemv_job *j = arg;
    const int bf16 = j->w->dtype == GRAFT_BF16;
    const size_t ld2 = j->ld / 2;
    for (int b = b0; b < b1; b++) {
        const int r0 = (int)((long long)j->R * b / j->nb), r1 = (int)((long long)j->R * (b + 1) / j->nb);
        float *acc = j->part + (size_t)b * j->L;
        memset(acc, 0, (size_t)j->L * sizeof(float));
        j->k->axpy(acc, j->L, (const uint16_t *)j->w->data + (size_t)r0 * ld2, ld2, j->x + r0, r1 - r0, bf16);
    }
}

/* items [0, n) of a job, shared out when the product is big enough */
static void gemv_run(int n, graft_team_fn fn, gemv_job *j) {
    graft_par_items((double)j->R * j->L > PAR_MIN_ELEMS, n, fn, j);
}

/* y[r] = beta y[r] + sum_l W[r][l] x[l] for r < R (beta 0 or 1); rows are
 * ld bytes apart. */
static void gemv_dot(float *y, float beta, const float *bias, const graft_wmat *w, size_t ld, const float *x,
                     int R, int L) {
    gemv_job j = {kernels_pick(), y, beta, w, ld, x, R, L, NULL, NULL, NULL, NULL, 1, bias};
    /* x quantised once for every row (the integer kernels; L <= 32768 keeps it on the stack) */
    j.q8i = w->dtype == GRAFT_WMAT_Q8_0 && L <= 32768 ? q8_int_kernel(NULL) : NULL;
    int8_t xq[j.q8i ? L : 1];
    float xd[j.q8i ? L / Q8_BLOCK : 1];
    if (j.q8i) {
        graft_q8_0_quantize(xq, xd, x, (size_t)L);
        j.xq = xq;
        j.xd = xd;
    }
    gemv_run((R + 3) / 4, dot_groups, &j);
}

/* y[l] = beta y[l] + sum_r x[r] W[r][l] for l < L (with a bias: bias[l] +
 * the sum, beta 0).
 *
 * Whole rows in bands: each thread streams a contiguous run of rows into its
 * own partial sums, added up at the end. Splitting the columns instead (every
 * thread walking every row for its share of columns) read GPT-2's Conv1D
 * matrices at half the rate of the dot-shaped GEMV on 2 threads (22 against
 * 46 GB/s, F16); bands read them at 42-44. The number of bands comes from
 * the shape alone, so the sums do not depend on the thread count. */
static void gemv_axpy(float *y, float beta, const float *bias, const graft_wmat *w, size_t ld, const float *x, int R,
                      int L) {
    gemv_job j = {kernels_pick(), y, beta, w, ld, x, R, L, NULL, NULL, NULL, NULL, 1, NULL};
    if (w->dtype != GRAFT_WMAT_Q8_0 && (double)R * L > PAR_MIN_ELEMS) {
        j.nb = R / AXPY_BAND_MIN_ROWS < AXPY_BANDS ? R / AXPY_BAND_MIN_ROWS : AXPY_BANDS;
        if (j.nb > 1 && !(j.part = graft_scratch(GRAFT_SCRATCH_GEMV, (size_t)j.nb * L))) j.nb = 1;
    }
    if (bias && j.nb <= 1) { /* the paths that sum into y: start y from the bias */
        memcpy(y, bias, (size_t)L * sizeof(float));
        j.beta = beta = 1.0f;
        bias = NULL;
    }
    if (w->dtype == GRAFT_WMAT_Q8_0) {
        gemv_run((L + AXPY_CHUNK - 1) / AXPY_CHUNK, axpy_q8_chunks, &j);
        return;
    }
    if (j.nb <= 1) { /* small, or no room for the partial sums: one band, into y */
        if (beta == 0.0f) memset(y, 0, (size_t)L * sizeof(float));
        j.k->axpy(y, L, w->data, ld / 2, x, R, w->dtype == GRAFT_BF16);
        return;
    }
    gemv_run(j.nb, axpy_bands, &j);
    graft_sum_bands(y, 1, 1.0f, beta, bias, j.part, j.nb, L);
}

/* ------------------------------------------------------------------ widened slices */

/* Stored rows [r0, r0 + nr) of L elements each as f32. */
static void rows_f32(float *dst, const graft_wmat *w, size_t r0, size_t nr, size_t L) {
    const size_t rb = graft_wmat_row_bytes(w->dtype, L);
    const uint8_t *src = (const uint8_t *)w->data + r0 * rb;
    if (w->dtype == GRAFT_WMAT_Q8_0)
        graft_q8_0_to_f32(dst, src, nr * L);
    else
        graft_convert_to_f32(dst, src, (graft_dtype)w->dtype, nr * L);
}

/* The same split over threads when large (the conversion is memory-bound). */
static void widen_rows(float *dst, const graft_wmat *w, size_t r0, size_t nr, size_t L) {
    GRAFT_PAR_FOR((double)nr * L > PAR_MIN_ELEMS,
    for (size_t i = 0; i < nr; i++) rows_f32(dst + i * L, w, r0 + i, 1, L);
    );
}

void graft_wmat_to_f32(float *dst, graft_wmat w, size_t rows, size_t cols) {
    if (!w.transposed) {
        widen_rows(dst, &w, 0, rows, cols);
        return;
    }
    /* stored [cols][rows]: widen a stored row 32 elements at a time (one Q8_0
     * block) and scatter them down a column */
    const size_t rb = graft_wmat_row_bytes(w.dtype, rows);
    for (size_t c = 0; c < cols; c++)
        for (size_t r0 = 0; r0 < rows; r0 += Q8_BLOCK) {
            const size_t n = rows - r0 < Q8_BLOCK ? rows - r0 : Q8_BLOCK;
            const uint8_t *src = (const uint8_t *)w.data + c * rb + graft_wmat_row_bytes(w.dtype, r0);
            float v[Q8_BLOCK];
            if (w.dtype == GRAFT_WMAT_Q8_0)
                graft_q8_0_to_f32(v, src, Q8_BLOCK);
            else
                graft_convert_to_f32(v, src, (graft_dtype)w.dtype, n);
            for (size_t i = 0; i < n; i++) dst[(r0 + i) * cols + c] = v[i];
        }
}

static int slice_rows(int L) {
    const int n = SLICE_FLOATS / (L > 0 ? L : 1);
    return n < SLICE_MIN_ROWS ? SLICE_MIN_ROWS : n;
}

/* A transposed view stores the parameter's transpose: the other layout. */
static graft_layout stored_layout(const graft_wmat *w, graft_layout layout) {
    if (!w->transposed) return layout;
    return layout == GRAFT_W_KN ? GRAFT_W_NK : GRAFT_W_KN;
}

/* ------------------------------------------------------------------ entry points */

void graft_linear_forward_w(float *y, const float *x, graft_wmat w, const float *b, int M, int K, int N,
                            graft_layout layout) {
    if (w.dtype == GRAFT_F32) { /* f32 as stored (a transposed view: the other layout) */
        graft_linear_forward(y, x, w.data, b, M, K, N, stored_layout(&w, layout));
        return;
    }
    if (M <= 0 || N <= 0) return;
    layout = stored_layout(&w, layout);
    const int L = layout == GRAFT_W_NK ? K : N, R = layout == GRAFT_W_NK ? N : K;
    const size_t ld = graft_wmat_row_bytes(w.dtype, (size_t)L);
    if (M == 1 && layout == GRAFT_W_NK) {
        /* W [N, K]: one dot per output, the bias added by the thread that
         * computes it (a copy first was serial work on the decode team's
         * rank 0, reading the bias from the mapping) */
        gemv_dot(y, 0.0f, b, &w, ld, x, N, K);
        return;
    }
    if (M == 1) { /* W [K, N]: rows of W weighted by x, the bias added with the band sums */
        gemv_axpy(y, 0.0f, b, &w, ld, x, K, N);
        return;
    }
    float beta = 0.0f;
    if (b) {
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, b, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    /* Slices of whole rows of W, widened, then the f32 GEMM. */
    const int sr = slice_rows(L);
    float *buf = graft_scratch(GRAFT_SCRATCH_SLICE, (size_t)(sr < R ? sr : R) * L);
    if (!buf) { /* no room for a slice: one row at a time through the GEMV */
        for (int i = 0; i < M; i++) {
            float *yi = y + (size_t)i * N;
            if (layout == GRAFT_W_NK)
                gemv_dot(yi, beta, NULL, &w, ld, x + (size_t)i * K, N, K);
            else
                gemv_axpy(yi, beta, NULL, &w, ld, x + (size_t)i * K, K, N);
        }
        return;
    }
    for (int r0 = 0; r0 < R; r0 += sr) {
        const int nr = R - r0 < sr ? R - r0 : sr;
        widen_rows(buf, &w, r0, nr, L);
        if (layout == GRAFT_W_NK) /* outputs r0.. : y[:, r0:r0+nr] = x buf^T */
            graft_gemm(0, 1, M, nr, K, 1.0f, x, K, buf, K, beta, y + r0, N);
        else /* inputs r0.. : y += x[:, r0:r0+nr] buf */
            graft_gemm(0, 0, M, N, nr, 1.0f, x + r0, K, buf, N, r0 == 0 ? beta : 1.0f, y, N);
    }
}

void graft_linear_backward_dx_w(float *dx, const float *dy, graft_wmat w, int M, int K, int N, graft_layout layout) {
    if (w.dtype == GRAFT_F32) {
        graft_linear_backward(dx, NULL, NULL, dy, NULL, w.data, M, K, N, stored_layout(&w, layout));
        return;
    }
    if (M <= 0 || N <= 0 || K <= 0) return;
    layout = stored_layout(&w, layout);
    const int L = layout == GRAFT_W_NK ? K : N, R = layout == GRAFT_W_NK ? N : K;
    const size_t ld = graft_wmat_row_bytes(w.dtype, (size_t)L);
    const int sr = slice_rows(L);
    float *buf = M == 1 ? NULL : graft_scratch(GRAFT_SCRATCH_SLICE, (size_t)(sr < R ? sr : R) * L);
    if (!buf) { /* batch 1, or no room for a slice: GEMVs row by row */
        for (int i = 0; i < M; i++) {
            float *dxi = dx + (size_t)i * K;
            const float *dyi = dy + (size_t)i * N;
            if (layout == GRAFT_W_NK) /* dx[k] += sum_n dy[n] W[n][k] */
                gemv_axpy(dxi, 1.0f, NULL, &w, ld, dyi, N, K);
            else /* W [K, N]: dx[k] += W[k] . dy */
                gemv_dot(dxi, 1.0f, NULL, &w, ld, dyi, K, N);
        }
        return;
    }
    for (int r0 = 0; r0 < R; r0 += sr) {
        const int nr = R - r0 < sr ? R - r0 : sr;
        widen_rows(buf, &w, r0, nr, L);
        if (layout == GRAFT_W_NK) /* dx += dy[:, r0:r0+nr] buf */
            graft_gemm(0, 0, M, K, nr, 1.0f, dy + r0, N, buf, K, 1.0f, dx, K);
        else /* dx[:, r0:r0+nr] += dy buf^T */
            graft_gemm(0, 1, M, nr, N, 1.0f, dy, N, buf, N, 1.0f, dx + r0, K);
    }
}

void graft_embed_forward_w(float *out, const int *ids, const int *pos, graft_wmat wte, const float *wpe, int T,
                           int C) {
    if (wte.dtype == GRAFT_F32 && !wte.transposed) {
        graft_embed_forward(out, ids, pos, wte.data, wpe, T, C);
        return;
    }
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * C;
        rows_f32(o, &wte, (size_t)ids[t], 1, (size_t)C); /* embeddings are never stored transposed */
        if (wpe) {
            const float *p = wpe + (size_t)(pos ? pos[t] : t) * C;
            for (int c = 0; c < C; c++) o[c] += p[c];
        }
    }
}
