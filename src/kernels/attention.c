/*
 * attention.c - causal multi-head attention over packed sequences, with
 * grouped KV heads (query head h reads KV head h / (H / KV)), its backward,
 * and the KV-cache variant used by generation.
 *
 * Layout of the saved probabilities `att` (graft_attention_att_size floats):
 * sequences in order; within sequence s (length L), heads in order; within
 * a head, an L x L row-major matrix whose row t holds the probabilities of
 * query t over keys 0..L-1 (entries u > t are 0). So the probability of
 * query t attending key u, head h, sequence s is at
 *     att[H * sum_{s' < s} len(s')^2  +  h * L^2  +  t * L  +  u].
 *
 * Everything is done in blocks of QB query rows so the work is matrix
 * products (the built-in GEMM on the calling thread, ~5x faster than
 * per-row dot products); only the key blocks at or below the diagonal are
 * visited, so the causal mask costs at most one partly wasted block a row.
 *  - forward with att: S = scale Q K^T goes straight into the att rows,
 *    softmax in place, O = P V.
 *  - forward without att (inference) and the KV-cache path: keys in tiles of
 *    KB with an online softmax (running max and sum per row, rescaling the
 *    partial output when the max grows), so the only scratch is one
 *    QB x KB tile on the stack, whatever the sequence length.
 *  - backward: with P from att and dO, per key tile
 *        dP = dO V^T,  dS = P (dP - rowsum(P dP)),
 *        dQ += scale dS K,  dK += scale dS^T Q,  dV += P^T dO,
 *    where rowsum(P dP) = dO . O is taken from O = P V recomputed per block
 *    (one extra product instead of a length-L buffer per row).
 * No heap memory is needed here (the GEMM's packing buffers aside, and the
 * GEMM falls back to a plain loop if it cannot get those).
 *
 * Threads: the forward splits (sequence, query head) pairs; the backward
 * splits (sequence, KV head) pairs, because the query heads that share a KV
 * head all add into the same dk/dv rows. Inner products run serially inside
 * a task, so BLAS is never entered from the parallel region.
 */
#include "kernels.h"
#include "parallel.h"

#include <math.h>
#include <string.h>

#define QB 64          /* query rows per block */
#define KB 256         /* keys per tile (and the width of the scratch tile) */
#define PAR_MIN_WORK 16384.0 /* multiply-adds below which one thread does it all */

size_t graft_attention_att_size(const graft_seqs *seqs, int n_head) {
    size_t total = 0;
    for (int s = 0; s < seqs->n; s++) {
        const size_t len = (size_t)(seqs->start[s + 1] - seqs->start[s]);
        total += (size_t)n_head * len * len;
    }
    return total;
}

static size_t seq_att_offset(const graft_seqs *seqs, int s, int n_head) {
    size_t off = 0;
    for (int i = 0; i < s; i++) {
        const size_t len = (size_t)(seqs->start[i + 1] - seqs->start[i]);
        off += (size_t)n_head * len * len;
    }
    return off;
}

static inline double attention_work(const graft_seqs *seqs, int H, int D) {
    double work = 0.0;
    for (int s = 0; s < seqs->n; s++) {
        const double len = seqs->start[s + 1] - seqs->start[s];
        work += len * len * H * D;
    }
    return work;
}

static inline float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Softmax of s[0..n) in place; s[n..total) set to 0 (the causal mask). */
static void softmax_row(float *s, int n, int total) {
    float m = -INFINITY;
    for (int u = 0; u < n; u++) m = s[u] > m ? s[u] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int u = 0; u < n; u++) {
        s[u] = graft_vexpf(s[u] - m);
        sum += s[u];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int u = 0; u < n; u++) s[u] *= inv;
    for (int u = n; u < total; u++) s[u] = 0.0f;
}

/*
 * Online-softmax attention of nq query rows at absolute positions
 * p0..p0+nq-1 over keys 0..p0+nq-1 (query at position p sees keys 0..p).
 * q rows stride ldq, k/v rows stride ldkv (already offset to this head),
 * out rows stride ldo. S is a QB x KB scratch tile.
 */
static void flash_block(float *out, int ldo, const float *q, int ldq, const float *k,
                        const float *v, int ldkv, int p0, int nq, int D, float scale, float *S) {
    float m[QB], l[QB];
    for (int r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        memset(out + (size_t)r * ldo, 0, (size_t)D * sizeof(float));
    }
    const int nk = p0 + nq;
    for (int u0 = 0; u0 < nk; u0 += KB) {
        const int kt = nk - u0 < KB ? nk - u0 : KB;
        graft_gemm_serial(0, 1, nq, kt, D, scale, q, ldq, k + (size_t)u0 * ldkv, ldkv, 0.0f, S, KB);
        for (int r = 0; r < nq; r++) {
            float *sr = S + (size_t)r * KB;
            int valid = p0 + r + 1 - u0; /* keys of this tile that row r may see */
            if (valid > kt) valid = kt;
            if (valid <= 0) {
                memset(sr, 0, (size_t)kt * sizeof(float));
                continue;
            }
            float cm = -INFINITY;
            for (int u = 0; u < valid; u++) cm = sr[u] > cm ? sr[u] : cm;
            if (cm > m[r]) { /* the max grew: rescale what was accumulated */
                const float corr = graft_vexpf(m[r] - cm); /* 0 on the first tile */
                l[r] *= corr;
                float *o = out + (size_t)r * ldo;
                for (int d = 0; d < D; d++) o[d] *= corr;
                m[r] = cm;
            }
            const float mr = m[r];
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int u = 0; u < valid; u++) {
                sr[u] = graft_vexpf(sr[u] - mr);
                sum += sr[u];
            }
            l[r] += sum;
            for (int u = valid; u < kt; u++) sr[u] = 0.0f;
        }
        graft_gemm_serial(0, 0, nq, D, kt, 1.0f, S, KB, v + (size_t)u0 * ldkv, ldkv, 1.0f, out, ldo);
    }
    for (int r = 0; r < nq; r++) {
        const float inv = 1.0f / l[r];
        float *o = out + (size_t)r * ldo;
        for (int d = 0; d < D; d++) o[d] *= inv;
    }
}

void graft_attention_forward(float *out, float *att, const float *q, int ldq, const float *k,
                             const float *v, int ldkv, const graft_seqs *seqs, int n_head,
                             int n_kv_head, int head_dim, int from) {
    const int H = n_head, D = head_dim, HD = H * D;
    if (seqs->n <= 0 || H <= 0 || D <= 0) return;
    const int group = H / n_kv_head;
    const float scale = 1.0f / sqrtf((float)D);
    const int ntask = seqs->n * H;
    /* Longer sequences cost quadratically more: dynamic scheduling. */
    GRAFT_PAR_FOR_DYNAMIC(attention_work(seqs, H, D) > PAR_MIN_WORK,
    for (int task = 0; task < ntask; task++) {
        const int s = task / H, h = task % H, g = h / group;
        const int r0 = seqs->start[s], len = seqs->start[s + 1] - r0;
        const float *qh = q + (size_t)r0 * ldq + (size_t)h * D;
        const float *kh = k + (size_t)r0 * ldkv + (size_t)g * D;
        const float *vh = v + (size_t)r0 * ldkv + (size_t)g * D;
        float *oh = out + (size_t)r0 * HD + (size_t)h * D;
        if (att) {
            float *ah = att + seq_att_offset(seqs, s, H) + (size_t)h * len * len;
            for (int t0 = from; t0 < len; t0 += QB) {
                const int nq = len - t0 < QB ? len - t0 : QB, t1 = t0 + nq;
                float *arows = ah + (size_t)t0 * len;
                /* scores of these rows against keys 0..t1-1, in place in att */
                graft_gemm_serial(0, 1, nq, t1, D, scale, qh + (size_t)t0 * ldq, ldq, kh, ldkv, 0.0f,
                                  arows, len);
                for (int r = 0; r < nq; r++) softmax_row(arows + (size_t)r * len, t0 + r + 1, len);
                graft_gemm_serial(0, 0, nq, D, t1, 1.0f, arows, len, vh, ldkv, 0.0f,
                                  oh + (size_t)t0 * HD, HD);
            }
        } else {
            float S[QB * KB];
            for (int t0 = from; t0 < len; t0 += QB) {
                const int nq = len - t0 < QB ? len - t0 : QB;
                flash_block(oh + (size_t)t0 * HD, HD, qh + (size_t)t0 * ldq, ldq, kh, vh, ldkv, t0,
                            nq, D, scale, S);
            }
        }
    });
}

void graft_attention_backward(float *dq, float *dk, float *dv, int ldq, int ldkv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              const graft_seqs *seqs, int n_head, int n_kv_head, int head_dim,
                              int from) {
    if (!dq && !dk && !dv) return;
    const int H = n_head, KV = n_kv_head, D = head_dim, HD = H * D;
    if (seqs->n <= 0 || H <= 0 || D <= 0) return;
    const int group = H / KV;
    const float scale = 1.0f / sqrtf((float)D);
    const int ntask = seqs->n * KV;
    GRAFT_PAR_FOR_DYNAMIC(attention_work(seqs, H, D) > PAR_MIN_WORK,
    for (int task = 0; task < ntask; task++) {
        const int s = task / KV, g = task % KV;
        const int r0 = seqs->start[s], len = seqs->start[s + 1] - r0;
        const size_t kvoff = (size_t)r0 * ldkv + (size_t)g * D;
        const float *kg = k + kvoff, *vg = v + kvoff;
        float *dkg = dk ? dk + kvoff : NULL, *dvg = dv ? dv + kvoff : NULL;
        float S[QB * KB], rs[QB];
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float *ah = att + seq_att_offset(seqs, s, H) + (size_t)h * len * len;
            const float *qh = q + (size_t)r0 * ldq + (size_t)h * D;
            const float *doh = dout + (size_t)r0 * HD + (size_t)h * D;
            float *dqh = dq ? dq + (size_t)r0 * ldq + (size_t)h * D : NULL;
            for (int t0 = from; t0 < len; t0 += QB) {
                const int nq = len - t0 < QB ? len - t0 : QB, t1 = t0 + nq;
                const float *P = ah + (size_t)t0 * len;
                const float *qb = qh + (size_t)t0 * ldq, *dob = doh + (size_t)t0 * HD;
                if (dq || dk) {
                    /* rs[r] = sum_u P dP = dO_r . O_r, with O = P V recomputed
                     * KB columns at a time through the scratch tile */
                    for (int r = 0; r < nq; r++) rs[r] = 0.0f;
                    for (int d0 = 0; d0 < D; d0 += KB) {
                        const int dn = D - d0 < KB ? D - d0 : KB;
                        graft_gemm_serial(0, 0, nq, dn, t1, 1.0f, P, len, vg + d0, ldkv, 0.0f, S, KB);
                        for (int r = 0; r < nq; r++)
                            rs[r] += dot(dob + (size_t)r * HD + d0, S + (size_t)r * KB, dn);
                    }
                }
                /* key tiles end at `from` so that keys before it (constants
                 * of a suffix pass) feed dQ but receive no dK/dV */
                for (int u0 = 0, kt; u0 < t1; u0 += kt) {
                    const int lim = u0 < from ? from : t1;
                    kt = lim - u0 < KB ? lim - u0 : KB;
                    const float *Pt = P + u0;
                    const int kv_grad = u0 >= from;
                    if (dvg && kv_grad) /* dV += P^T dO */
                        graft_gemm_serial(1, 0, kt, D, nq, 1.0f, Pt, len, dob, HD, 1.0f,
                                          dvg + (size_t)u0 * ldkv, ldkv);
                    if (!dq && !dk) continue;
                    /* dP = dO V^T, then dS = P (dP - rs) in place */
                    graft_gemm_serial(0, 1, nq, kt, D, 1.0f, dob, HD, vg + (size_t)u0 * ldkv, ldkv,
                                      0.0f, S, KB);
                    for (int r = 0; r < nq; r++) {
                        float *sr = S + (size_t)r * KB;
                        const float *pr = Pt + (size_t)r * len;
                        const float rr = rs[r];
                        _Pragma("omp simd")
                        for (int u = 0; u < kt; u++) sr[u] = pr[u] * (sr[u] - rr);
                    }
                    if (dqh) /* dQ += scale dS K */
                        graft_gemm_serial(0, 0, nq, D, kt, scale, S, KB, kg + (size_t)u0 * ldkv, ldkv,
                                          1.0f, dqh + (size_t)t0 * ldq, ldq);
                    if (dkg && kv_grad) /* dK += scale dS^T Q */
                        graft_gemm_serial(1, 0, kt, D, nq, scale, S, KB, qb, ldq, 1.0f,
                                          dkg + (size_t)u0 * ldkv, ldkv);
                }
            }
        }
    });
}

/* The cached attention's tasks (query block x head), for a decode team. */
typedef struct cached_job {
    float *out;
    const float *q, *kcache, *vcache;
    int ldq, ldkv, past, n_new, H, D, group;
    float scale;
} cached_job;

static void cached_tasks(void *arg, int t0, int t1) {
    const cached_job *j = arg;
    const int HD = j->H * j->D;
    for (int task = t0; task < t1; task++) {
        const int b = task / j->H, h = task % j->H, g = h / j->group;
        const int i0 = b * QB, nq = j->n_new - i0 < QB ? j->n_new - i0 : QB;
        float S[QB * KB];
        flash_block(j->out + (size_t)i0 * HD + (size_t)h * j->D, HD, j->q + (size_t)i0 * j->ldq + (size_t)h * j->D,
                    j->ldq, j->kcache + (size_t)g * j->D, j->vcache + (size_t)g * j->D, j->ldkv, j->past + i0, nq,
                    j->D, j->scale, S);
    }
}

void graft_attention_cached(float *out, const float *q, int ldq, const float *kcache,
                            const float *vcache, int ldkv, int past, int n_new, int n_head,
                            int n_kv_head, int head_dim) {
    const int H = n_head, D = head_dim;
    if (n_new <= 0 || H <= 0 || D <= 0) return;
    cached_job j = {out, q, kcache, vcache, ldq, ldkv, past, n_new, H, D, H / n_kv_head, 1.0f / sqrtf((float)D)};
    const int ntask = (n_new + QB - 1) / QB * H;
    const double work = (double)n_new * (past + n_new) * H * D;
    if (work > PAR_MIN_WORK && graft_team_active()) /* a decode step's heads, on its team */
        graft_team_for(ntask, cached_tasks, &j);
    else
        GRAFT_PAR_FOR_DYNAMIC(work > PAR_MIN_WORK, for (int t = 0; t < ntask; t++) cached_tasks(&j, t, t + 1););
}
