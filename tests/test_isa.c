/*
 * test_isa.c - the run-time choice of kernel paths (src/kernels/isa.c) and
 * every path this machine can run:
 *  - the path API: names, the refusal of a path the CPU lacks, the switch;
 *  - graft_gemm_builtin and graft_gemm_serial on each path against the
 *    double-precision graft_gemm_ref, all four transposes, odd sizes;
 *  - each other multi-ISA kernel on each path against the generic path, to
 *    rounding (the generic path itself is checked against double references
 *    by test_kernels, which CTest also runs with GRAFT_ISA=generic|avx2), and
 *    bit for bit between 1 and 2 threads on the same path;
 *  - graft_vexpf: its SIMD clones and the scalar form give the same bits;
 *  - F16/BF16 <-> F32 conversion bit-exact on every path (every 16-bit
 *    pattern one way, a structured and random set of floats the other).
 * No timing here (bench/bench_gemm and bench/bench_floors time the paths).
 */
#include "internal.h"
#include "kernels.h"
#include "test.h"

#include <stdint.h>

static void fill(float *f, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) f[i] = test_frand(lo, hi);
}

static int n_isa;                       /* paths this machine runs */
static graft_isa isas[GRAFT_ISA_COUNT]; /* generic first */

/* ------------------------------------------------------------------ the API */

static void test_api(void) {
    CHECK(graft_isa_parse("generic") == GRAFT_ISA_GENERIC);
    CHECK(graft_isa_parse("avx2") == GRAFT_ISA_AVX2);
    CHECK(graft_isa_parse("avx512") == GRAFT_ISA_AVX512);
    CHECK(graft_isa_parse("sse9") == -1);
    CHECK(graft_isa_parse("") == -1);
    CHECK(graft_isa_parse(NULL) == -1);
    for (int i = 0; i < GRAFT_ISA_COUNT; i++) CHECK(graft_isa_parse(graft_isa_name((graft_isa)i)) == i);
    CHECK(graft_cpu_isa_supported(GRAFT_ISA_GENERIC));
    /* the paths are nested: a CPU that runs avx512 runs avx2 */
    CHECK(!graft_cpu_isa_supported(GRAFT_ISA_AVX512) || graft_cpu_isa_supported(GRAFT_ISA_AVX2));
    /* The default is the best path unless the environment forced one. */
    const char *env = getenv("GRAFT_ISA");
    const graft_isa cur = graft_cpu_isa_id();
    CHECK(graft_cpu_isa_supported(cur));
    CHECK(!strcmp(graft_cpu_isa(), graft_isa_name(cur)));
    if (!env || graft_isa_parse(env) < 0 || !graft_cpu_isa_supported((graft_isa)graft_isa_parse(env)))
        for (int i = cur + 1; i < GRAFT_ISA_COUNT; i++) CHECK(!graft_cpu_isa_supported((graft_isa)i));
    else
        CHECK(cur == (graft_isa)graft_isa_parse(env));
    /* refusals change nothing */
    CHECK(graft_cpu_isa_set((graft_isa)-1) == -1);
    CHECK(graft_cpu_isa_set(GRAFT_ISA_COUNT) == -1);
    CHECK(graft_cpu_isa_id() == cur);
    for (int i = 0; i < GRAFT_ISA_COUNT; i++) {
        if (graft_cpu_isa_supported((graft_isa)i)) {
            CHECK(graft_cpu_isa_set((graft_isa)i) == 0);
            CHECK(graft_cpu_isa_id() == (graft_isa)i);
            isas[n_isa++] = (graft_isa)i;
        } else {
            CHECK(graft_cpu_isa_set((graft_isa)i) == -1);
            CHECK(graft_cpu_isa_id() != (graft_isa)i);
        }
    }
    printf("paths this CPU runs:");
    for (int i = 0; i < n_isa; i++) printf(" %s", graft_isa_name(isas[i]));
    printf(" (chosen at start: %s)\n", graft_isa_name(cur));
    graft_cpu_isa_set(cur);
}

/* ------------------------------------------------------------------ GEMM */

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);

/* One case on the current path; returns the number of wrong entries. */
static int gemm_case(gemm_fn fn, int ta, int tb, int M, int N, int K, float alpha, float beta, int pad) {
    const int arows = ta ? K : M, acols = ta ? M : K;
    const int brows = tb ? N : K, bcols = tb ? K : N;
    const int lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
    float *A = test_falloc((size_t)arows * lda), *B = test_falloc((size_t)brows * ldb);
    float *C = test_falloc((size_t)M * ldc), *R = test_falloc((size_t)M * ldc);
    fill(A, (size_t)arows * lda, -1, 1);
    fill(B, (size_t)brows * ldb, -1, 1);
    for (size_t i = 0; i < (size_t)M * ldc; i++) {
        const int col = (int)(i % (size_t)ldc);
        C[i] = R[i] = col >= N ? 777.0f : (beta == 0.0f ? NAN : test_frand(-1, 1));
    }
    fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    graft_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    int bad = 0;
    for (size_t i = 0; i < (size_t)M * ldc; i++) {
        const int col = (int)(i % (size_t)ldc);
        const double tol = col < N ? 2e-6 * (K + 1) * (fabs(alpha) + 1) + 1e-6 * fabs(R[i]) : 0.0;
        if (!(fabs((double)C[i] - (double)R[i]) <= tol)) bad++;
    }
    graft_free_aligned(A);
    graft_free_aligned(B);
    graft_free_aligned(C);
    graft_free_aligned(R);
    return bad;
}

static void test_gemm_paths(void) {
    static const int Ms[] = {1, 3, 17, 64, 130};
    static const int NKs[][2] = {{1, 7}, {5, 3}, {33, 129}, {67, 301}, {129, 17}};
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}};
    for (int p = 0; p < n_isa; p++) {
        graft_cpu_isa_set(isas[p]);
        int cases = 0, failed = 0;
        for (int f = 0; f < 2; f++) {
            const gemm_fn fn = f ? graft_gemm_serial : graft_gemm_builtin;
            for (int m = 0; m < 5; m++)
                for (int nk = 0; nk < 5; nk++)
                    for (int t = 0; t < 4; t++) {
                        const int v = (m + nk + t) % 3, pad = (m + t) % 2 ? 3 : 0;
                        const int bad = gemm_case(fn, t & 1, t >> 1, Ms[m], NKs[nk][0], NKs[nk][1],
                                                  ab[v][0], ab[v][1], pad);
                        if (bad && failed < 5)
                            fprintf(stderr, "%s %s ta=%d tb=%d M=%d N=%d K=%d: %d wrong\n",
                                    graft_cpu_isa(), f ? "serial" : "builtin", t & 1, t >> 1, Ms[m],
                                    NKs[nk][0], NKs[nk][1], bad);
                        failed += bad != 0;
                        cases++;
                    }
        }
        /* the big blocks: K over the packing depth, N over one B block */
        for (int t = 0; t < 4; t++, cases++)
            failed += gemm_case(graft_gemm_builtin, t & 1, t >> 1, 130, 515, 263, 1.0f, 0.0f, 1) != 0;
        CHECK_MSG(failed == 0, "GEMM on %s: %d of %d cases wrong", graft_cpu_isa(), failed, cases);
        printf("gemm %s: %d cases\n", graft_cpu_isa(), cases);
    }
}

/* ------------------------------------------------------------------ other kernels */

/* Every kernel's outputs on fixed inputs, on the current path. */
typedef struct outs {
    float *v[32];
    size_t n[32];
    int count;
} outs;

static float *out_new(outs *o, size_t n) {
    o->n[o->count] = n;
    return o->v[o->count++] = test_falloc(n);
}

static void outs_free(outs *o) {
    for (int i = 0; i < o->count; i++) graft_free_aligned(o->v[i]);
    o->count = 0;
}

#define T_ 70
#define C_ 203 /* odd, over the norms' column block */
#define V_ 1001
#define H_ 4
#define KV_ 2
#define D_ 16

static void run_kernels(outs *o) {
    uint64_t saved = test_rng;
    test_rng = 0x1234567887654321ull; /* the same inputs on every path */
    const size_t TC = (size_t)T_ * C_;
    float *x = test_falloc(TC), *w = test_falloc(C_), *b = test_falloc(C_), *dout = test_falloc(TC), *y = test_falloc(TC);
    fill(x, TC, -3, 3);
    fill(w, C_, 0.5f, 1.5f);
    fill(b, C_, -0.5f, 0.5f);
    fill(dout, TC, -1, 1);
    fill(y, TC, -2, 2);

    /* norms */
    float *ln = out_new(o, TC), *mean = out_new(o, T_), *rstd = out_new(o, T_);
    graft_layernorm_forward(ln, mean, rstd, x, w, b, T_, C_, 1e-5f);
    float *dx = out_new(o, TC), *dw = out_new(o, C_), *db = out_new(o, C_);
    graft_layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, T_, C_);
    float *rms = out_new(o, TC), *rr = out_new(o, T_);
    graft_rmsnorm_forward(rms, rr, x, w, T_, C_, 1e-6f);
    float *rdx = out_new(o, TC), *rdw = out_new(o, C_);
    graft_rmsnorm_backward(rdx, rdw, dout, x, w, rr, T_, C_);

    /* activations (over the parallel threshold: 70 * 203 * 3 elements) */
    const size_t NA = 3 * TC;
    float *ax = test_falloc(NA), *au = test_falloc(NA), *ad = test_falloc(NA);
    fill(ax, NA, -6, 6);
    fill(au, NA, -2, 2);
    fill(ad, NA, -1, 1);
    float *g = out_new(o, NA), *gd = out_new(o, NA);
    graft_gelu_forward(g, ax, NA);
    graft_gelu_backward(gd, ad, ax, NA);
    float *s = out_new(o, NA), *sdg = out_new(o, NA), *sdu = out_new(o, NA);
    graft_swiglu_forward(s, ax, au, NA);
    graft_swiglu_backward(sdg, sdu, ad, ax, au, NA);

    /* elementwise, embedding */
    float *sum = out_new(o, TC);
    graft_add(sum, x, y, TC);
    graft_acc(sum, dout, TC);
    int ids[T_], pos[T_];
    for (int t = 0; t < T_; t++) {
        ids[t] = (int)(test_rand64() % 50);
        pos[t] = (t * 7) % T_;
    }
    float *wte = test_falloc((size_t)50 * C_), *wpe = test_falloc(TC);
    fill(wte, (size_t)50 * C_, -1, 1);
    fill(wpe, TC, -1, 1);
    float *emb = out_new(o, TC), *dwte = out_new(o, (size_t)50 * C_), *dwpe = out_new(o, TC);
    graft_embed_forward(emb, ids, pos, wte, wpe, T_, C_);
    graft_embed_backward(dwte, dwpe, dout, ids, pos, T_, C_);

    /* rope on a [T, H*D] block, both pairings, forward then backward */
    float *rp = out_new(o, (size_t)T_ * H_ * D_);
    fill(rp, (size_t)T_ * H_ * D_, -1, 1);
    graft_rope_forward(rp, H_ * D_, pos, T_, H_, D_, 10000.0f, 0);
    graft_rope_backward(rp, H_ * D_, pos, T_, H_, D_, 500000.0f, 1);

    /* attention: two packed sequences, GQA, fused qkv rows */
    const int starts[] = {0, 23, T_};
    const graft_seqs seqs = {2, starts};
    const int ld = (H_ + 2 * KV_) * D_;
    float *qkv = test_falloc((size_t)T_ * ld);
    fill(qkv, (size_t)T_ * ld, -1.5f, 1.5f);
    const float *q = qkv, *k = qkv + H_ * D_, *v = qkv + (H_ + KV_) * D_;
    const size_t na = graft_attention_att_size(&seqs, H_);
    float *ao = out_new(o, (size_t)T_ * H_ * D_), *att = out_new(o, na);
    graft_attention_forward(ao, att, q, ld, k, v, ld, &seqs, H_, KV_, D_, 0);
    float *ao2 = out_new(o, (size_t)T_ * H_ * D_); /* inference path: online softmax */
    graft_attention_forward(ao2, NULL, q, ld, k, v, ld, &seqs, H_, KV_, D_, 0);
    float *dqkv = out_new(o, (size_t)T_ * ld);
    graft_attention_backward(dqkv, dqkv + H_ * D_, dqkv + (H_ + KV_) * D_, ld, ld, dout, att, q, k, v,
                             &seqs, H_, KV_, D_, 0);
    float *ac = out_new(o, (size_t)5 * H_ * D_); /* 5 new rows after 40 cached */
    graft_attention_cached(ac, q + (size_t)40 * ld, ld, k, v, ld, 40, 5, H_, KV_, D_);

    /* cross-entropy over a V-wide row (odd, over one chunk) */
    float *logits = test_falloc((size_t)8 * V_);
    fill(logits, (size_t)8 * V_, -8, 8);
    int target[8] = {0, 5, V_ - 1, -1, 17, 400, 999, 3};
    float *loss = out_new(o, 8), *dl = out_new(o, (size_t)8 * V_);
    graft_crossentropy_forward(loss, logits, target, 8, V_);
    graft_crossentropy_backward(dl, logits, target, NULL, 8, V_);

    graft_free_aligned(x); graft_free_aligned(w); graft_free_aligned(b);
    graft_free_aligned(dout); graft_free_aligned(y);
    graft_free_aligned(ax); graft_free_aligned(au); graft_free_aligned(ad);
    graft_free_aligned(wte); graft_free_aligned(wpe); graft_free_aligned(qkv);
    graft_free_aligned(logits);
    test_rng = saved;
}

static void test_kernel_paths(void) {
    const int threads = graft_get_threads();
    outs ref = {0};
    graft_cpu_isa_set(GRAFT_ISA_GENERIC);
    run_kernels(&ref);
    for (int p = 0; p < n_isa; p++) {
        graft_cpu_isa_set(isas[p]);
        outs a = {0}, one = {0};
        run_kernels(&a);
        /* the same path on one thread: the same bits */
        graft_set_threads(1);
        run_kernels(&one);
        graft_set_threads(threads);
        for (int i = 0; i < ref.count; i++) {
            size_t bad = 0, diff = 0;
            double worst = 0.0;
            for (size_t j = 0; j < ref.n[i]; j++) {
                const double r = ref.v[i][j], e = fabs((double)a.v[i][j] - r);
                /* float kernels with float sums of <= ~200 terms */
                if (!(e <= 2e-5 * (1.0 + fabs(r)))) bad++;
                if (e > worst) worst = e;
                diff += memcmp(&a.v[i][j], &one.v[i][j], sizeof(float)) != 0;
            }
            CHECK_MSG(bad == 0, "%s output %d vs generic: %zu of %zu off (worst %.3g)", graft_cpu_isa(), i,
                      bad, ref.n[i], worst);
            CHECK_MSG(diff == 0, "%s output %d: %zu entries differ between %d and 1 threads",
                      graft_cpu_isa(), i, diff, threads);
        }
        printf("kernels %s: %d outputs match generic\n", graft_cpu_isa(), ref.count);
        outs_free(&a);
        outs_free(&one);
    }
    outs_free(&ref);
}

/* ------------------------------------------------------------------ graft_vexpf */

/* The loop below calls graft_vexpf's SIMD clone (the kernels' form); the
 * call through a volatile pointer is the scalar function. */
static void test_vexpf_clones(void) {
    enum { N = 4099 };
    float *x = test_falloc(N), *v = test_falloc(N);
    for (int i = 0; i < N; i++) x[i] = -95.0f + 190.0f * (float)i / N;
    x[7] = NAN;
    x[8] = INFINITY;
    x[9] = -INFINITY;
#pragma omp simd
    for (int i = 0; i < N; i++) v[i] = graft_vexpf(x[i]);
    float (*volatile scalar)(float) = graft_vexpf;
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const float s = scalar(x[i]);
        bad += memcmp(&s, &v[i], sizeof s) != 0 && !(isnan(s) && isnan(v[i]));
    }
    CHECK_MSG(bad == 0, "graft_vexpf: %d of %d SIMD results differ from the scalar ones", bad, N);
    graft_free_aligned(x);
    graft_free_aligned(v);
}

/* ------------------------------------------------------------------ dtypes */

static void test_dtype_paths(void) {
    /* every 16-bit pattern, at an odd byte offset (unaligned source), with a
     * length that leaves a scalar tail */
    const size_t n = 65536 + 13;
    uint8_t *h = malloc(2 * n + 1);
    float *f = test_falloc(n), *fl = test_falloc(n);
    uint8_t *o = malloc(4 * n + 1), *want = malloc(4 * n + 1);
    if (!h || !o || !want) exit(1);
    for (size_t i = 0; i < n; i++) {
        const uint16_t u = (uint16_t)(i * 40503u); /* odd multiplier: a permutation of 0..65535 */
        h[1 + 2 * i] = (uint8_t)u;
        h[2 + 2 * i] = (uint8_t)(u >> 8);
    }
    /* floats to narrow: every exponent and sign with mantissas at and
     * around each rounding boundary, plus random bits */
    const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (size_t i = 0; i < n; i++) {
        const uint32_t bits = i < 65536 ? (uint32_t)i << 16 | lows[i % 9] : (uint32_t)test_rand64();
        memcpy(&fl[i], &bits, 4);
    }
    fl[0] = 65520.0f; /* halfway to inf in F16 */
    fl[1] = 5.9604645e-8f / 2;
    const graft_dtype dts[2] = {GRAFT_F16, GRAFT_BF16};
    for (int p = 0; p < n_isa; p++) {
        graft_cpu_isa_set(isas[p]);
        for (int d = 0; d < 2; d++) {
            const graft_dtype dt = dts[d];
            /* widening */
            graft_convert_to_f32(f, h + 1, dt, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                const uint16_t u = (uint16_t)(h[1 + 2 * i] | h[2 + 2 * i] << 8);
                const float w = dt == GRAFT_F16 ? graft_f16_to_f32(u) : graft_bf16_to_f32(u);
                bad += memcmp(&w, &f[i], 4) != 0;
            }
            CHECK_MSG(bad == 0, "%s: %s -> F32: %zu of %zu differ from the scalar conversion",
                      graft_cpu_isa(), graft_dtype_name(dt), bad, n);
            /* narrowing, to an odd address */
            graft_convert_from_f32(o + 1, fl, dt, n);
            bad = 0;
            for (size_t i = 0; i < n; i++) {
                const uint16_t u = dt == GRAFT_F16 ? graft_f32_to_f16(fl[i]) : graft_f32_to_bf16(fl[i]);
                bad += (uint16_t)(o[1 + 2 * i] | o[2 + 2 * i] << 8) != u;
            }
            CHECK_MSG(bad == 0, "%s: F32 -> %s: %zu of %zu differ from the scalar conversion",
                      graft_cpu_isa(), graft_dtype_name(dt), bad, n);
            /* short lengths: only the tail, nothing written past n */
            for (size_t m = 0; m < 40; m += 3) {
                memset(want, 0xAB, 2 * 41);
                memset(o, 0xAB, 2 * 41);
                graft_convert_from_f32(o, fl + 100, dt, m);
                for (size_t i = 0; i < m; i++) {
                    const uint16_t u = dt == GRAFT_F16 ? graft_f32_to_f16(fl[100 + i]) : graft_f32_to_bf16(fl[100 + i]);
                    want[2 * i] = (uint8_t)u;
                    want[2 * i + 1] = (uint8_t)(u >> 8);
                }
                CHECK_MSG(!memcmp(o, want, 2 * 41), "%s: F32 -> %s, n=%zu", graft_cpu_isa(),
                          graft_dtype_name(dt), m);
            }
        }
        /* F32 is a byte copy */
        graft_convert_from_f32(o + 1, fl, GRAFT_F32, 100);
        CHECK(!memcmp(o + 1, fl, 400));
    }
    free(h);
    free(o);
    free(want);
    graft_free_aligned(f);
    graft_free_aligned(fl);
}

int main(void) {
    test_seed(0x853C49E6748FEA9Bull); /* this file's sequence, as before */
    graft_set_threads(2);
    test_api();
    test_gemm_paths();
    test_kernel_paths();
    test_vexpf_clones();
    test_dtype_paths();
    return test_finish("test_isa");
}
