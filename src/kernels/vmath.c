/*
 * vmath.c - a vectorizable single-precision exp for the kernels' hot loops
 * (GELU, SiLU, softmax, cross-entropy).
 *
 * glibc's expf is accurate but scalar (about 3 ns a call here): the softmax
 * of a 1024-token attention or of a 50257-word vocabulary row would spend
 * more time in expf than in the matrix products around it. This version is
 * pure arithmetic and bit operations, so the compiler turns a loop of calls
 * into AVX-512/AVX2 code (0.35 ns per element measured), and it is declared
 * `omp declare simd` so loops in other files call its vector variant.
 *
 * Accuracy: max relative error about 8e-8 (1.3 ulp) on [-87, 88.3], checked
 * against double exp in tests/test_kernels.c. Edges: 0 below -87.5 (the
 * true value is under 1e-38, which no softmax caller can observe), results
 * between -87.5 and -87.3 are subnormal, x in (88.3, 88.72] saturates at
 * e^88.3, +inf above 88.72 (where expf overflows too), NaN stays NaN.
 *
 * Compiled once, with -ffp-contract=off (CMakeLists.txt): GCC emits the
 * scalar function and a SIMD clone per instruction set (SSE, AVX, AVX2,
 * AVX-512), which the kernels of each ISA path call, and without contraction
 * into FMA they all compute the same operations in the same order, so a
 * lane and the scalar tail of a loop give the same bits, and so do the
 * generic, avx2 and avx512 paths (tests/test_isa.c).
 */
#include "kernels.h"

#include <stdint.h>
#include <string.h>

#pragma omp declare simd notinbranch
float graft_vexpf(float x) {
    /* Clamp so 2^n below stays a normal float; the edges are fixed up last. */
    const float xc = x < -87.5f ? -87.5f : (x > 88.3f ? 88.3f : x);
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: the integer lands in the
     * low mantissa bits of t, read without a float->int conversion (which
     * would be undefined for NaN). */
    const float t = xc * 1.44269504088896341f + 12582912.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const float n = t - 12582912.0f;
    /* r = x - n ln 2 in two steps (Cody-Waite) so r keeps full precision. */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.42860676533018704e-06f;
    /* e^r on |r| <= 0.347: Taylor to degree 7, truncation error < 6e-9. */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n from the exponent field; unsigned, so NaN garbage cannot overflow. */
    const uint32_t sb = (tb - 0x4B400000u + 127u) << 23;
    float s;
    memcpy(&s, &sb, sizeof s);
    float e = p * s;
    e = x < -87.5f ? 0.0f : e;
    e = x > 88.72f ? __builtin_inff() : e;
    return e;
}
