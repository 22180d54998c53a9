/*
 * kernels.h - the compute kernels of graft: one forward and one backward per
 * operation, over explicit buffers (row-major float32).
 *
 * Conventions
 *  - Outputs first, then saved buffers, then inputs, then dims.
 *  - Backward kernels ACCUMULATE (+=) into every gradient output, so residual
 *    branches simply add and the caller zeroes gradients once. Any gradient
 *    output may be NULL when it is not wanted. Two exceptions, both noted at
 *    their declarations: graft_rope_backward transforms dx in place, and
 *    graft_crossentropy_backward overwrites its output.
 *  - Tokens of several sequences are packed into one [T, ...] matrix; a
 *    graft_seqs gives the sequence boundaries (attention is causal within
 *    each sequence and never crosses one).
 *  - Kernels never call BLAS from inside an OpenMP parallel region.
 */
#ifndef GRAFT_KERNELS_H
#define GRAFT_KERNELS_H

#include <stddef.h>

/* ------------------------------------------------------------------ streaming reads */

/*
 * A batch-1 product reads each weight once, so its speed is the rate memory
 * delivers rows. The hardware prefetcher alone did not keep up: on this
 * project's Zen 5 VM one thread read a 50257 x 768 matrix at 16 GB/s (F16)
 * and 7 GB/s (Q8_0, 34-byte blocks), against 22-26 GB/s once the GEMV loops
 * asked for the line GRAFT_PREFETCH_AHEAD bytes further on (bench/README.md).
 *
 * graft_prefetch is for rows streamed front to back (the dot-shaped GEMVs):
 * 16 KiB ahead, non-temporal (the line is used once and should not push
 * anything out of L2); on 2 threads an F32 dot GEMV read 59 GB/s so, against
 * 46 for 8 KiB kept in every level. graft_prefetch_band is for the axpy
 * kernels, which read four rows side by side: they ask for the rows about
 * GRAFT_PREFETCH_BAND_AHEAD bytes further down, kept in L1, which measured
 * the same or better than the streaming form there.
 */
#define GRAFT_PREFETCH_AHEAD 16384
#define graft_prefetch(p) __builtin_prefetch((const void *)(p), 0, 0)
#define GRAFT_PREFETCH_BAND_AHEAD 8192
#define graft_prefetch_band(p) __builtin_prefetch((const void *)(p), 0, 3)

/* ------------------------------------------------------------------ decode team (team.c) */

/* One parallel region for a whole batch-1 forward: body(arg) runs on the
 * calling thread while the other threads wait for jobs; GEMVs that find a
 * team (graft_team_active) share their rows out with graft_team_for, which
 * calls fn(arg, i0, i1) on the team's threads for disjoint runs of [0, n)
 * covering it (each thread its own share, then the back of the others') and
 * returns when all are done. Without a team (or with one thread)
 * graft_team_for calls fn(arg, 0, n) on the calling thread. */
typedef void (*graft_team_fn)(void *arg, int i0, int i1);
/* A GEMV of more weights than this is shared out (team or OpenMP); smaller
 * ones run on the calling thread, and a forward whose products are all
 * smaller (stories260K) opens no team. */
#define GRAFT_GEMV_PAR_MIN 65536
void graft_team_run(void (*body)(void *), void *arg);
int graft_team_active(void);
void graft_team_for(int n, graft_team_fn fn, void *arg);
/* Items [0, n) of a job: on the decode team when one runs on this thread
 * (graft_team_for), else (par != 0) on the OpenMP team, each thread a fixed
 * contiguous share, else fn(arg, 0, n) here. */
void graft_par_items(int par, int n, graft_team_fn fn, void *arg);

/* ------------------------------------------------------------------ scratch (scratch.c) */

/* A buffer of at least n floats kept for the calling thread between calls
 * (one per slot; freed when the thread ends), or NULL when out of memory. */
enum { GRAFT_SCRATCH_SLICE, GRAFT_SCRATCH_GEMV, GRAFT_SCRATCH_PACK_A, GRAFT_SCRATCH_PACK_B, GRAFT_SCRATCH_SLOTS };
float *graft_scratch(int slot, size_t n);

/* ------------------------------------------------------------------ instruction sets */

/*
 * The kernel sources listed in CMakeLists.txt (GRAFT_ISA_KERNELS) are
 * compiled once per instruction set with -DGRAFT_ISA_NAME=generic|avx2|avx512;
 * the names below then become graft_X_generic, graft_X_avx2, ... The plain
 * names are defined in kernels/isa.c, which calls the variant chosen at run
 * time (graft_cpu_isa). Inside a variant, kernels call each other's variant
 * of the same instruction set directly.
 */
#ifdef GRAFT_ISA_NAME
#define GRAFT_ISA_CAT_(f, isa) f##_##isa
#define GRAFT_ISA_CAT(f, isa) GRAFT_ISA_CAT_(f, isa)
#define graft_gemm_builtin GRAFT_ISA_CAT(graft_gemm_builtin, GRAFT_ISA_NAME)
#define graft_gemm_serial GRAFT_ISA_CAT(graft_gemm_serial, GRAFT_ISA_NAME)
#define graft_gemv_bias GRAFT_ISA_CAT(graft_gemv_bias, GRAFT_ISA_NAME)
#define graft_layernorm_forward GRAFT_ISA_CAT(graft_layernorm_forward, GRAFT_ISA_NAME)
#define graft_layernorm_backward GRAFT_ISA_CAT(graft_layernorm_backward, GRAFT_ISA_NAME)
#define graft_rmsnorm_forward GRAFT_ISA_CAT(graft_rmsnorm_forward, GRAFT_ISA_NAME)
#define graft_rmsnorm_backward GRAFT_ISA_CAT(graft_rmsnorm_backward, GRAFT_ISA_NAME)
#define graft_gelu_forward GRAFT_ISA_CAT(graft_gelu_forward, GRAFT_ISA_NAME)
#define graft_gelu_backward GRAFT_ISA_CAT(graft_gelu_backward, GRAFT_ISA_NAME)
#define graft_swiglu_forward GRAFT_ISA_CAT(graft_swiglu_forward, GRAFT_ISA_NAME)
#define graft_swiglu_backward GRAFT_ISA_CAT(graft_swiglu_backward, GRAFT_ISA_NAME)
#define graft_add GRAFT_ISA_CAT(graft_add, GRAFT_ISA_NAME)
#define graft_acc GRAFT_ISA_CAT(graft_acc, GRAFT_ISA_NAME)
#define graft_sum_bands GRAFT_ISA_CAT(graft_sum_bands, GRAFT_ISA_NAME)
#define graft_embed_forward GRAFT_ISA_CAT(graft_embed_forward, GRAFT_ISA_NAME)
#define graft_embed_backward GRAFT_ISA_CAT(graft_embed_backward, GRAFT_ISA_NAME)
#define graft_rope_forward GRAFT_ISA_CAT(graft_rope_forward, GRAFT_ISA_NAME)
#define graft_rope_backward GRAFT_ISA_CAT(graft_rope_backward, GRAFT_ISA_NAME)
#define graft_attention_att_size GRAFT_ISA_CAT(graft_attention_att_size, GRAFT_ISA_NAME)
#define graft_attention_forward GRAFT_ISA_CAT(graft_attention_forward, GRAFT_ISA_NAME)
#define graft_attention_backward GRAFT_ISA_CAT(graft_attention_backward, GRAFT_ISA_NAME)
#define graft_attention_cached GRAFT_ISA_CAT(graft_attention_cached, GRAFT_ISA_NAME)
#define graft_crossentropy_forward GRAFT_ISA_CAT(graft_crossentropy_forward, GRAFT_ISA_NAME)
#define graft_crossentropy_backward GRAFT_ISA_CAT(graft_crossentropy_backward, GRAFT_ISA_NAME)
#endif

/* Kernel paths, slowest first. */
typedef enum graft_isa {
    GRAFT_ISA_GENERIC = 0, /* baseline compiler output, any CPU */
    GRAFT_ISA_AVX2 = 1,    /* AVX2 + FMA + F16C */
    GRAFT_ISA_AVX512 = 2,  /* AVX-512 F/BW/VL/DQ (+ the AVX2 set) */
    GRAFT_ISA_COUNT = 3
} graft_isa;

/* The path the kernels run: the best this CPU supports, or the one named by
 * the environment variable GRAFT_ISA=generic|avx2|avx512 (read once; an
 * unknown name, or a path the CPU lacks, prints a warning on stderr and the
 * best supported path is used), or the last graft_cpu_isa_set. */
graft_isa graft_cpu_isa_id(void);
/* Its name: "generic", "avx2" or "avx512". */
const char *graft_cpu_isa(void);
const char *graft_isa_name(graft_isa isa);
/* Name -> path; -1 when the name is none of the three. */
int graft_isa_parse(const char *name);
/* 1 when this build and this CPU can run the path. */
int graft_cpu_isa_supported(graft_isa isa);
/* Switch every kernel to a path (tests, benchmarks); -1 (and no change)
 * when the CPU cannot run it. Not to be called while kernels run. */
int graft_cpu_isa_set(graft_isa isa);

/* Layout of a stored weight matrix of a linear map R^K -> R^N. */
typedef enum graft_layout {
    GRAFT_W_KN = 0, /* stored [K, N] (HF GPT-2 Conv1D): y = x W     */
    GRAFT_W_NK = 1  /* stored [N, K] (nn.Linear, LM head): y = x W^T */
} graft_layout;

/* ------------------------------------------------------------------ GEMM */

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op(X) = X or X^T.
 * A is M x K after op, B is K x N after op. lda/ldb/ldc are row strides. */
void graft_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);
/* 1 when graft_gemm hands products of several rows to BLAS, 0 when the
 * built-in GEMM runs them (no BLAS compiled in, the AVX-512 path, or
 * GRAFT_GEMM=builtin; gemm.c says why). */
int graft_gemm_uses_blas(void);
/* BLAS's sgemm itself (the built-in GEMM when no BLAS is compiled in), for
 * the benchmarks that time both; graft_gemm_has_blas: 1 when compiled in. */
void graft_gemm_blas(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);
int graft_gemm_has_blas(void);
/* The built-in blocked GEMM (used when no BLAS is compiled in; tests compare both). */
void graft_gemm_builtin(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* The built-in GEMM on the calling thread only: for use inside an OpenMP
 * parallel region (attention's per-head products), where BLAS must not run. */
void graft_gemm_serial(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);
/* y[N] = x[K] W + b for one row x, b NULL for none: W [K, N] (kmajor) or
 * [N, K], unit strides; the built-in GEMV, shared out on a decode team. The
 * bias is added where each output is written, so a decode step's linear map
 * no longer copies the bias into y first (serial work on the team's rank 0,
 * reading the bias from the mapping: about 1% of a GPT-2 F32 token). */
void graft_gemv_bias(float *y, const float *x, const float *w, const float *b, int K, int N, int kmajor);
/* exp(x) in float, about 1 ulp, written so that loops over it vectorize
 * (declare simd: such loops call its SIMD clones; every clone and the scalar
 * form return the same bits, see vmath.c). */
#pragma omp declare simd notinbranch
float graft_vexpf(float x);
/* Naive triple loop in double precision: the test oracle. */
void graft_gemm_ref(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* ------------------------------------------------------------------ linear */

/* y[M,N] = x[M,K] . W (+ b[N] when b != NULL). Overwrites y. */
void graft_linear_forward(float *y, const float *x, const float *w, const float *b, int M, int K,
                          int N, graft_layout layout);
/* dx[M,K] += dy W^T ; dw += x^T dy (in w's layout) ; db[N] += sum over rows of dy. */
void graft_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int M, int K, int N, graft_layout layout);

/* A weight matrix as the checkpoint stores it, read in place: dtype is a
 * graft_dtype (internal.h: GRAFT_F32, GRAFT_F16, GRAFT_BF16) or
 * GRAFT_WMAT_Q8_0 (GGUF's blocks of 32 int8 weights with an F16 scale, along
 * the rows). transposed: the data is the transpose of the parameter as graft's
 * table describes it (GPT-2's Conv1D [in, out] as GGUF stores it, [out, in]).
 * F16/BF16 elements need not be aligned (safetensors does not align tensors). */
#define GRAFT_WMAT_Q8_0 64
typedef struct graft_wmat {
    const void *data;
    int dtype;
    int transposed;
} graft_wmat;

/* Bytes of one stored row of n elements (n a multiple of 32 for Q8_0). */
size_t graft_wmat_row_bytes(int dtype, size_t n);
/* The parameter [rows, cols] as f32 (rows * cols floats) from its stored view. */
void graft_wmat_to_f32(float *dst, graft_wmat w, size_t rows, size_t cols);
/* n (a multiple of 32) Q8_0 weights as f32. */
void graft_q8_0_to_f32(float *dst, const void *src, size_t n);
/* x (n a multiple of 32) quantised the way Q8_0 stores weights: per block of
 * 32, d = max|x| / 127 and q = round(x / d). The batch-1 Q8_0 product on a
 * CPU with AVX-512 VNNI multiplies these with the weights' int8 blocks. */
void graft_q8_0_quantize(signed char *q, float *d, const float *x, size_t n);

/* graft_linear_forward for a stored matrix (wmat.c): F32 goes to the f32
 * kernels; F16/BF16 are widened on the fly (M == 1: in registers; more rows:
 * slices widened into a buffer, then the f32 GEMM). */
void graft_linear_forward_w(float *y, const float *x, graft_wmat w, const float *b, int M, int K, int N,
                            graft_layout layout);
/* dx[M,K] += dy[M,N] W^T for a stored matrix (activation gradients only:
 * stored weights take no gradient). */
void graft_linear_backward_dx_w(float *dx, const float *dy, graft_wmat w, int M, int K, int N, graft_layout layout);
/* graft_embed_forward with a stored token embedding. */
void graft_embed_forward_w(float *out, const int *ids, const int *pos, graft_wmat wte, const float *wpe, int T,
                           int C);
/* The path the stored-weight kernels run: the kernels' path (graft_cpu_isa),
 * "avx512+vnni" where Q8_0 products use AVX-512 VNNI. */
const char *graft_wmat_isa(void);

/* ------------------------------------------------------------------ norms */

/* LayerNorm over rows of C: out = (x - mean) * rstd * w + b, biased variance.
 * mean/rstd [T] are saved for backward (may be NULL when not needed). */
void graft_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int T, int C, float eps);
void graft_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *w, const float *mean, const float *rstd, int T, int C);
/* RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). rstd [T] saved. */
void graft_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int C,
                           float eps);
void graft_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int T, int C);

/* ------------------------------------------------------------------ activations */

/* gelu_new (tanh approximation), exactly HF's formula. */
void graft_gelu_forward(float *out, const float *x, size_t n);
void graft_gelu_backward(float *dx, const float *dout, const float *x, size_t n);
/* out = silu(gate) * up. */
void graft_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void graft_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n);

/* ------------------------------------------------------------------ elementwise */

void graft_add(float *out, const float *a, const float *b, size_t n); /* out = a + b (may alias) */
void graft_acc(float *dst, const float *src, size_t n);                /* dst += src */
/* The end of a GEMV done in bands of rows (nb partial rows of N sums, part
 * [nb][N]): y[n * incy] = alpha * sum_b part[b][n] + beta * y[n * incy]
 * (beta 0: y is not read; with a bias, + bias[n] in place of the beta
 * term), the bands added in order b = 0, 1, ... whoever
 * does it. part's row 0 is overwritten. On a decode team big sums are shared
 * out in column chunks: done on rank 0 alone, it was 3% of a GPT-2 decode
 * from an F16 folder, with the other rank idle. */
void graft_sum_bands(float *y, int incy, float alpha, float beta, const float *bias, float *part, int nb, int N);

/* ------------------------------------------------------------------ embedding */

/* out[t] = wte[ids[t]] (+ wpe[pos[t]] when wpe != NULL); pos NULL means
 * positions 0..T-1. Ids are trusted (graft_run_set_batch validates them). */
void graft_embed_forward(float *out, const int *ids, const int *pos, const float *wte,
                         const float *wpe, int T, int C);
void graft_embed_backward(float *dwte, float *dwpe, const float *dout, const int *ids,
                          const int *pos, int T, int C);

/* ------------------------------------------------------------------ RoPE */

/* Rotate n_heads heads of head_dim in each of T rows of x (row stride ld) in
 * place, at positions pos[T]. Angle for pair j: pos * theta^(-2j/head_dim).
 * interleaved=1: pairs (x[2j], x[2j+1]) (llama2.c); interleaved=0: pairs
 * (x[j], x[j+D/2]) (HF rotate_half). */
void graft_rope_forward(float *x, int ld, const int *pos, int T, int n_heads, int head_dim,
                        float theta, int interleaved);
/* The gradient through the rotation: rotates dx back by -angle, IN PLACE
 * (not an accumulation). */
void graft_rope_backward(float *dx, int ld, const int *pos, int T, int n_heads, int head_dim,
                         float theta, int interleaved);

/* ------------------------------------------------------------------ attention */

/* Packed sequences: sequence s occupies rows [start[s], start[s+1]); start[n] = T. */
typedef struct graft_seqs {
    int n;
    const int *start;
} graft_seqs;

/* Floats needed for the saved attention probabilities: sum_s H * len_s^2. */
size_t graft_attention_att_size(const graft_seqs *seqs, int n_head);

/*
 * Causal multi-head attention with grouped KV heads (n_head % n_kv_head == 0) (query head h reads KV
 * head h / (H/KV)), scale 1/sqrt(D). q rows have stride ldq (H*D used), k and
 * v rows stride ldkv (KV*D used). out [T, H*D] (stride H*D) is overwritten.
 * att (size graft_attention_att_size) receives the probabilities for
 * backward, or is NULL when no backward will follow.
 * from > 0 (a suffix pass): the query rows before row `from` of each sequence
 * are left as they are (their out and att rows stay from an earlier pass);
 * the later rows still attend to every key.
 */
void graft_attention_forward(float *out, float *att, const float *q, int ldq, const float *k,
                             const float *v, int ldkv, const graft_seqs *seqs, int n_head,
                             int n_kv_head, int head_dim, int from);
/* dq/dk/dv (same strides as q/k/v) += gradients given dout [T, H*D]. Needs
 * the att probabilities of the forward; their layout, for sequence s of
 * length L_s, head h, query row t and key u <= t:
 *   att[H * sum_{s' < s} L_{s'}^2 + h * L_s^2 + t * L_s + u].
 * from > 0: only query rows from row `from` of each sequence on carry a
 * gradient, and keys before it are constants: their dk/dv rows are not
 * touched (dq of the later rows still sums over every key). */
void graft_attention_backward(float *dq, float *dk, float *dv, int ldq, int ldkv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              const graft_seqs *seqs, int n_head, int n_kv_head, int head_dim,
                              int from);
/*
 * Attention of n_new query rows (positions past..past+n_new-1 of one
 * sequence) over a KV cache holding past+n_new rows (stride ldkv); causal.
 * Used by generation. out [n_new, H*D] overwritten.
 */
void graft_attention_cached(float *out, const float *q, int ldq, const float *kcache,
                            const float *vcache, int ldkv, int past, int n_new, int n_head,
                            int n_kv_head, int head_dim);

/* ------------------------------------------------------------------ loss */

/* loss[t] = logsumexp(logits[t]) - logits[t][target[t]] (natural log, computed
 * in double); rows whose target is < 0 get loss 0. logits [T, V]. */
void graft_crossentropy_forward(float *loss, const float *logits, const int *target, int T, int V);
/* dlogits[t] = (softmax(logits[t]) - onehot(target[t])) * dloss[t]; OVERWRITES
 * dlogits (it may alias logits, to save a [T, V] buffer). Rows with target < 0
 * get zeros; dloss NULL means 1 for every row; a target >= V gives NaN rows
 * (never an out-of-bounds read). */
void graft_crossentropy_backward(float *dlogits, const float *logits, const int *target,
                                 const float *dloss, int T, int V);

#endif /* GRAFT_KERNELS_H */
