/*
 * dtype.c - storage dtypes of checkpoints and their conversion to f32.
 *
 * F16 and BF16 are decoded exactly (every half value is representable in
 * f32). Narrowing f32 -> F16/BF16 rounds to nearest, ties to even, as
 * PyTorch's .to(torch.float16 / torch.bfloat16) does, so files written by
 * graft match files written by torch bit for bit.
 */
#include "internal.h"
#include "kernels.h"

#include <string.h>
#include <strings.h>

/* Checkpoints are little-endian and F32 weights are used straight from the
 * mapping, so a big-endian host would need byte swapping everywhere. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "graft supports little-endian hosts only"
#endif

/* The SIMD conversions are compiled for their instruction set whatever the
 * build's baseline (target attributes) and run only when graft_cpu_isa()
 * says the CPU has it; every path gives the same bits as the scalar code
 * (tests/test_isa.c checks each path the machine can run). */
#if defined(__x86_64__) || defined(__i386__)
#define GRAFT_DTYPE_X86 1
#include <immintrin.h>
#endif

const char *graft_dtype_name(graft_dtype dt) {
    switch (dt) {
    case GRAFT_F32: return "F32";
    case GRAFT_F16: return "F16";
    case GRAFT_BF16: return "BF16";
    case GRAFT_I64: return "I64";
    case GRAFT_I32: return "I32";
    case GRAFT_U8: return "U8";
    }
    return "?";
}

int graft_dtype_parse_float(const char *s, graft_dtype *dt) {
    if (!strcasecmp(s, "f32") || !strcasecmp(s, "float32")) *dt = GRAFT_F32;
    else if (!strcasecmp(s, "f16") || !strcasecmp(s, "float16")) *dt = GRAFT_F16;
    else if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) *dt = GRAFT_BF16;
    else return -1;
    return 0;
}

size_t graft_dtype_size(graft_dtype dt) {
    switch (dt) {
    case GRAFT_F32: return 4;
    case GRAFT_F16: return 2;
    case GRAFT_BF16: return 2;
    case GRAFT_I64: return 8;
    case GRAFT_I32: return 4;
    case GRAFT_U8: return 1;
    }
    return 0;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float graft_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) {
        /* inf stays inf; a NaN keeps its payload and comes out quiet, which
         * is what the F16C instruction does, so scalar and SIMD paths agree. */
        if (mant == 0) return bits_f32(sign | 0x7f800000u);
        return bits_f32(sign | 0x7fc00000u | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign); /* +-0 */
        /* Subnormal: mant * 2^-24. Shift the leading one up to bit 10 to
         * renormalise; each shift lowers the exponent by one. */
        int e = -14;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            e--;
        }
        mant &= 0x3ffu;
        return bits_f32(sign | ((uint32_t)(e + 127) << 23) | (mant << 13));
    }
    return bits_f32(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

float graft_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t graft_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        /* NaN: keep the top payload bits and force the quiet bit so that a
         * payload living only in the low bits cannot turn into infinity. */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    /* 65520 (0x477ff000) lies halfway between the largest half 65504 (odd
     * mantissa) and 65536; ties-to-even sends it, and everything above, to inf. */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        /* Below the smallest normal half 2^-14: the result is the subnormal
         * round(|f| / 2^-24). 2^-25 itself is a tie and rounds to even, 0. */
        if (ax <= 0x33000000u) return sign;
        uint32_t e = ax >> 23;                       /* 102 ... 112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;   /* implicit one */
        uint32_t shift = 126 - e;                    /* 14 ... 24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++; /* may carry into the first normal: correct */
        return (uint16_t)(sign | q);
    }
    /* Normal: rebias the exponent and round the 13 dropped mantissa bits.
     * A carry out of the mantissa correctly bumps the exponent. */
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | ((r >> 13) - ((127u - 15u) << 10)));
}

uint16_t graft_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u); /* quiet NaN */
    /* Ties to even on the 16 dropped bits; values near FLT_MAX round to inf,
     * as IEEE rounding requires. */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Little-endian loads through memcpy: the source may sit at any byte offset
 * inside a mapping (safetensors does not align tensors). */
static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void store_u16(uint8_t *p, uint16_t h) {
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static void f16_block_scalar(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = graft_f16_to_f32(load_u16(src + 2 * i));
}

static void bf16_block_scalar(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = graft_bf16_to_f32(load_u16(src + 2 * i));
}

static void f16_from_f32_scalar(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) store_u16(dst + 2 * i, graft_f32_to_f16(src[i]));
}

static void bf16_from_f32_scalar(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) store_u16(dst + 2 * i, graft_f32_to_bf16(src[i]));
}

#ifdef GRAFT_DTYPE_X86
/* F16C: vcvtph2ps is exact and quiets a NaN keeping its payload, like
 * graft_f16_to_f32; vcvtps2ph with round-to-nearest-even is graft_f32_to_f16
 * (NaN: quiet bit forced, top payload bits kept; f32 subnormals give +-0). */
#define F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

__attribute__((target("avx,f16c"))) static void f16_block_f16c(float *dst, const uint8_t *src,
                                                               size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i))));
    f16_block_scalar(dst + i, src + 2 * i, n - i);
}

__attribute__((target("avx,f16c"))) static void f16_from_f32_f16c(uint8_t *dst, const float *src,
                                                                  size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + 2 * i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), F16_RNE));
    f16_from_f32_scalar(dst + 2 * i, src + i, n - i);
}

__attribute__((target("avx2"))) static void bf16_block_avx2(float *dst, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
    bf16_block_scalar(dst + i, src + 2 * i, n - i);
}

/* graft_f32_to_bf16 on 8 lanes: NaN -> top half with the quiet bit, else
 * ties-to-even rounding of the low 16 bits (carries may reach inf). */
__attribute__((target("avx2"))) static inline __m256i bf16_round8(__m256i x) {
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), odd), 16);
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

__attribute__((target("avx2"))) static void bf16_from_f32_avx2(uint8_t *dst, const float *src,
                                                               size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = bf16_round8(_mm256_castps_si256(_mm256_loadu_ps(src + i)));
        const __m256i b = bf16_round8(_mm256_castps_si256(_mm256_loadu_ps(src + i + 8)));
        /* lanes hold 0..0xffff: the saturating pack is exact; it interleaves
         * 128-bit halves, which the permute puts back in order */
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i *)(void *)(dst + 2 * i), p);
    }
    bf16_from_f32_scalar(dst + 2 * i, src + i, n - i);
}

__attribute__((target("avx512f"))) static void f16_block_avx512(float *dst, const uint8_t *src,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(src + 2 * i))));
    f16_block_scalar(dst + i, src + 2 * i, n - i);
}

__attribute__((target("avx512f"))) static void f16_from_f32_avx512(uint8_t *dst, const float *src,
                                                                   size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + 2 * i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), F16_RNE));
    f16_from_f32_scalar(dst + 2 * i, src + i, n - i);
}

__attribute__((target("avx512f"))) static void bf16_block_avx512(float *dst, const uint8_t *src,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(src + 2 * i));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    bf16_block_scalar(dst + i, src + 2 * i, n - i);
}

/* Not AVX512_BF16's vcvtneps2bf16: it flushes subnormal inputs to zero,
 * which torch's rounding (and graft_f32_to_bf16) does not. */
__attribute__((target("avx512f"))) static void bf16_from_f32_avx512(uint8_t *dst, const float *src,
                                                                    size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i x = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                                      _mm512_set1_epi32(0x7f800000));
        const __m512i hi = _mm512_srli_epi32(x, 16);
        const __m512i odd = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd), 16);
        r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
        _mm256_storeu_si256((__m256i *)(void *)(dst + 2 * i), _mm512_cvtepi32_epi16(r));
    }
    bf16_from_f32_scalar(dst + 2 * i, src + i, n - i);
}
#endif /* GRAFT_DTYPE_X86 */

static void f16_block(float *dst, const uint8_t *src, size_t n) {
#ifdef GRAFT_DTYPE_X86
    switch (graft_cpu_isa_id()) {
    case GRAFT_ISA_AVX512: f16_block_avx512(dst, src, n); return;
    case GRAFT_ISA_AVX2: f16_block_f16c(dst, src, n); return;
    default: break;
    }
#endif
    f16_block_scalar(dst, src, n);
}

static void bf16_block(float *dst, const uint8_t *src, size_t n) {
#ifdef GRAFT_DTYPE_X86
    switch (graft_cpu_isa_id()) {
    case GRAFT_ISA_AVX512: bf16_block_avx512(dst, src, n); return;
    case GRAFT_ISA_AVX2: bf16_block_avx2(dst, src, n); return;
    default: break;
    }
#endif
    bf16_block_scalar(dst, src, n);
}

void graft_convert_from_f32(void *dst, const float *src, graft_dtype dt, size_t n) {
    uint8_t *d = dst;
    if (dt == GRAFT_F32) {
        memcpy(d, src, n * 4);
        return;
    }
    const int bf = dt == GRAFT_BF16;
    if (!bf && dt != GRAFT_F16) return; /* integer dtypes: not a float storage type */
#ifdef GRAFT_DTYPE_X86
    switch (graft_cpu_isa_id()) {
    case GRAFT_ISA_AVX512:
        if (bf) bf16_from_f32_avx512(d, src, n);
        else f16_from_f32_avx512(d, src, n);
        return;
    case GRAFT_ISA_AVX2:
        if (bf) bf16_from_f32_avx2(d, src, n);
        else f16_from_f32_f16c(d, src, n);
        return;
    default: break;
    }
#endif
    if (bf) bf16_from_f32_scalar(d, src, n);
    else f16_from_f32_scalar(d, src, n);
}

void graft_convert_to_f32(float *dst, const void *src, graft_dtype dt, size_t n) {
    const uint8_t *s = src;
    switch (dt) {
    case GRAFT_F32:
        memcpy(dst, s, n * 4); /* byte copy: src may be misaligned */
        return;
    case GRAFT_F16: f16_block(dst, s, n); return;
    case GRAFT_BF16: bf16_block(dst, s, n); return;
    case GRAFT_I64:
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        return;
    case GRAFT_I32:
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = (float)v;
        }
        return;
    case GRAFT_U8:
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return;
    }
}

/* Conversion is memory-bound; big embeddings (gpt2-xl: 80M elements) go
 * faster split over threads. Chunks are multiples of 64 elements so every
 * chunk but the first starts on a 64-byte boundary of dst. */
void graft_convert_to_f32_parallel(float *dst, const void *src, graft_dtype dt, size_t n) {
    const size_t chunk = (size_t)1 << 20;
    size_t n_chunks = (n + chunk - 1) / chunk;
    const uint8_t *s = src;
    size_t esz = graft_dtype_size(dt);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_chunks > 1)
#endif
    for (size_t c = 0; c < n_chunks; c++) {
        size_t begin = c * chunk, len = n - begin < chunk ? n - begin : chunk;
        graft_convert_to_f32(dst + begin, s + begin * esz, dt, len);
    }
}
