/*
 * isa.c - which instruction set the kernels run, chosen at run time.
 *
 * The kernel sources are compiled once per path (CMakeLists.txt,
 * GRAFT_ISA_KERNELS): generic (the build's baseline), avx2 (AVX2 + FMA +
 * F16C) and avx512 (AVX-512 F/BW/VL/DQ). The plain kernel names defined
 * here call the variant of the current path through one table, so a binary
 * built on any machine runs on any x86-64 CPU and uses what it has.
 *
 * The path is chosen once, on first use: the best one cpuid reports (with
 * the OS saving the wide registers, which __builtin_cpu_supports checks),
 * unless GRAFT_ISA names another. A name that is unknown, or a path this CPU
 * cannot run, is a warning on stderr and the best path is used: a wrong
 * environment must not stop a program, nor let it run an instruction the
 * CPU lacks. graft_cpu_isa_set switches later (tests, benchmarks).
 */
#include "kernels.h"

#ifdef GRAFT_ISA_X86
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One entry per kernel, in the order of kernels.h. */
#define GRAFT_ISA_FNS(X)                                                                           \
    X(graft_gemm_builtin)                                                                          \
    X(graft_gemm_serial)                                                                           \
    X(graft_gemv_bias)                                                                             \
    X(graft_layernorm_forward)                                                                     \
    X(graft_layernorm_backward)                                                                    \
    X(graft_rmsnorm_forward)                                                                       \
    X(graft_rmsnorm_backward)                                                                      \
    X(graft_gelu_forward)                                                                          \
    X(graft_gelu_backward)                                                                         \
    X(graft_swiglu_forward)                                                                        \
    X(graft_swiglu_backward)                                                                       \
    X(graft_add)                                                                                   \
    X(graft_acc)                                                                                   \
    X(graft_sum_bands)                                                                             \
    X(graft_embed_forward)                                                                         \
    X(graft_embed_backward)                                                                        \
    X(graft_rope_forward)                                                                          \
    X(graft_rope_backward)                                                                         \
    X(graft_attention_att_size)                                                                    \
    X(graft_attention_forward)                                                                     \
    X(graft_attention_backward)                                                                    \
    X(graft_attention_cached)                                                                      \
    X(graft_crossentropy_forward)                                                                  \
    X(graft_crossentropy_backward)

/* The variants: graft_X_generic, graft_X_avx2, graft_X_avx512, each of the
 * type of graft_X (typeof: one list above instead of three prototypes). */
#define GRAFT_DECL(f, isa) extern __typeof__(f) f##_##isa;
#define GRAFT_DECL_GENERIC(f) GRAFT_DECL(f, generic)
GRAFT_ISA_FNS(GRAFT_DECL_GENERIC)
#ifdef GRAFT_ISA_X86
#define GRAFT_DECL_AVX2(f) GRAFT_DECL(f, avx2)
#define GRAFT_DECL_AVX512(f) GRAFT_DECL(f, avx512)
GRAFT_ISA_FNS(GRAFT_DECL_AVX2)
GRAFT_ISA_FNS(GRAFT_DECL_AVX512)
#endif

typedef struct isa_table {
#define GRAFT_FIELD(f) __typeof__(f) *f;
    GRAFT_ISA_FNS(GRAFT_FIELD)
#undef GRAFT_FIELD
} isa_table;

#define GRAFT_ENTRY_GENERIC(f) .f = f##_generic,
static const isa_table table_generic = {GRAFT_ISA_FNS(GRAFT_ENTRY_GENERIC)};
#ifdef GRAFT_ISA_X86
#define GRAFT_ENTRY_AVX2(f) .f = f##_avx2,
#define GRAFT_ENTRY_AVX512(f) .f = f##_avx512,
static const isa_table table_avx2 = {GRAFT_ISA_FNS(GRAFT_ENTRY_AVX2)};
static const isa_table table_avx512 = {GRAFT_ISA_FNS(GRAFT_ENTRY_AVX512)};
#endif

static const char *const isa_names[GRAFT_ISA_COUNT] = {"generic", "avx2", "avx512"};

static const isa_table *isa_tables(graft_isa isa) {
#ifdef GRAFT_ISA_X86
    if (isa == GRAFT_ISA_AVX512) return &table_avx512;
    if (isa == GRAFT_ISA_AVX2) return &table_avx2;
#endif
    (void)isa;
    return &table_generic;
}

const char *graft_isa_name(graft_isa isa) {
    return isa >= 0 && isa < GRAFT_ISA_COUNT ? isa_names[isa] : "?";
}

int graft_isa_parse(const char *name) {
    for (int i = 0; i < GRAFT_ISA_COUNT; i++)
        if (name && !strcmp(name, isa_names[i])) return i;
    return -1;
}

int graft_cpu_isa_supported(graft_isa isa) {
    if (isa == GRAFT_ISA_GENERIC) return 1;
#ifdef GRAFT_ISA_X86
    __builtin_cpu_init();
    /* F16C from cpuid leaf 1 (clang's __builtin_cpu_supports has no "f16c");
     * it needs the AVX state, which "avx2" already requires the OS to save. */
    unsigned a, b, c, d;
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (isa == GRAFT_ISA_AVX2) return avx2;
    if (isa == GRAFT_ISA_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

static graft_isa best_isa(void) {
    for (int i = GRAFT_ISA_COUNT - 1; i > 0; i--)
        if (graft_cpu_isa_supported((graft_isa)i)) return (graft_isa)i;
    return GRAFT_ISA_GENERIC;
}

/* The current path and its table; written once by choose() (under
 * pthread_once) and by graft_cpu_isa_set, read by every kernel call. */
static graft_isa g_isa = GRAFT_ISA_GENERIC; /* atomic accesses only */
static const isa_table *g_table;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void set_isa(graft_isa isa) {
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    __atomic_store_n(&g_table, isa_tables(isa), __ATOMIC_RELEASE);
}

static void choose(void) {
    graft_isa isa = best_isa();
    const char *env = getenv("GRAFT_ISA");
    if (env && *env) {
        const int want = graft_isa_parse(env);
        if (want < 0)
            fprintf(stderr, "graft: warning: GRAFT_ISA=%s is not one of generic, avx2, avx512; using %s\n",
                    env, isa_names[isa]);
        else if (!graft_cpu_isa_supported((graft_isa)want))
            fprintf(stderr, "graft: warning: GRAFT_ISA=%s, but this CPU cannot run it; using %s\n", env,
                    isa_names[isa]);
        else
            isa = (graft_isa)want;
    }
    set_isa(isa);
}

static inline const isa_table *table(void) {
    const isa_table *t = __atomic_load_n(&g_table, __ATOMIC_ACQUIRE);
    if (__builtin_expect(t != NULL, 1)) return t;
    pthread_once(&g_once, choose);
    return __atomic_load_n(&g_table, __ATOMIC_ACQUIRE);
}

graft_isa graft_cpu_isa_id(void) {
    table();
    return __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
}

const char *graft_cpu_isa(void) { return isa_names[graft_cpu_isa_id()]; }

int graft_cpu_isa_set(graft_isa isa) {
    pthread_once(&g_once, choose); /* the environment's warning, once, even here */
    if (isa < 0 || isa >= GRAFT_ISA_COUNT || !graft_cpu_isa_supported(isa)) return -1;
    set_isa(isa);
    return 0;
}

/* ------------------------------------------------------------------ the kernels */

void graft_gemm_builtin(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    table()->graft_gemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void graft_gemm_serial(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc) {
    table()->graft_gemm_serial(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void graft_gemv_bias(float *y, const float *x, const float *w, const float *b, int K, int N, int kmajor) {
    table()->graft_gemv_bias(y, x, w, b, K, N, kmajor);
}

void graft_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int T, int C, float eps) {
    table()->graft_layernorm_forward(out, mean, rstd, x, w, b, T, C, eps);
}

void graft_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *w, const float *mean, const float *rstd, int T, int C) {
    table()->graft_layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, T, C);
}

void graft_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int C,
                           float eps) {
    table()->graft_rmsnorm_forward(out, rstd, x, w, T, C, eps);
}

void graft_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int T, int C) {
    table()->graft_rmsnorm_backward(dx, dw, dout, x, w, rstd, T, C);
}

void graft_gelu_forward(float *out, const float *x, size_t n) { table()->graft_gelu_forward(out, x, n); }

void graft_gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    table()->graft_gelu_backward(dx, dout, x, n);
}

void graft_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    table()->graft_swiglu_forward(out, gate, up, n);
}

void graft_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n) {
    table()->graft_swiglu_backward(dgate, dup, dout, gate, up, n);
}

void graft_add(float *out, const float *a, const float *b, size_t n) { table()->graft_add(out, a, b, n); }

void graft_acc(float *dst, const float *src, size_t n) { table()->graft_acc(dst, src, n); }

void graft_sum_bands(float *y, int incy, float alpha, float beta, const float *bias, float *part, int nb, int N) {
    table()->graft_sum_bands(y, incy, alpha, beta, bias, part, nb, N);
}

void graft_embed_forward(float *out, const int *ids, const int *pos, const float *wte,
                         const float *wpe, int T, int C) {
    table()->graft_embed_forward(out, ids, pos, wte, wpe, T, C);
}

void graft_embed_backward(float *dwte, float *dwpe, const float *dout, const int *ids,
                          const int *pos, int T, int C) {
    table()->graft_embed_backward(dwte, dwpe, dout, ids, pos, T, C);
}

void graft_rope_forward(float *x, int ld, const int *pos, int T, int n_heads, int head_dim,
                        float theta, int interleaved) {
    table()->graft_rope_forward(x, ld, pos, T, n_heads, head_dim, theta, interleaved);
}

void graft_rope_backward(float *dx, int ld, const int *pos, int T, int n_heads, int head_dim,
                         float theta, int interleaved) {
    table()->graft_rope_backward(dx, ld, pos, T, n_heads, head_dim, theta, interleaved);
}

size_t graft_attention_att_size(const graft_seqs *seqs, int n_head) {
    return table()->graft_attention_att_size(seqs, n_head);
}

void graft_attention_forward(float *out, float *att, const float *q, int ldq, const float *k,
                             const float *v, int ldkv, const graft_seqs *seqs, int n_head,
                             int n_kv_head, int head_dim, int from) {
    table()->graft_attention_forward(out, att, q, ldq, k, v, ldkv, seqs, n_head, n_kv_head, head_dim,
                                     from);
}

void graft_attention_backward(float *dq, float *dk, float *dv, int ldq, int ldkv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              const graft_seqs *seqs, int n_head, int n_kv_head, int head_dim,
                              int from) {
    table()->graft_attention_backward(dq, dk, dv, ldq, ldkv, dout, att, q, k, v, seqs, n_head,
                                      n_kv_head, head_dim, from);
}

void graft_attention_cached(float *out, const float *q, int ldq, const float *kcache,
                            const float *vcache, int ldkv, int past, int n_new, int n_head,
                            int n_kv_head, int head_dim) {
    table()->graft_attention_cached(out, q, ldq, kcache, vcache, ldkv, past, n_new, n_head, n_kv_head,
                                    head_dim);
}

void graft_crossentropy_forward(float *loss, const float *logits, const int *target, int T, int V) {
    table()->graft_crossentropy_forward(loss, logits, target, T, V);
}

void graft_crossentropy_backward(float *dlogits, const float *logits, const int *target,
                                 const float *dloss, int T, int V) {
    table()->graft_crossentropy_backward(dlogits, logits, target, dloss, T, V);
}
