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
 * Each query row is one pass over its keys in chunks of ATT_CHUNK with an
 * online softmax (running max and sum, rescaling the partial output when the
 * max grows): no buffer proportional to the sequence length is needed, so
 * the kernels allocate nothing and cannot fail. The same row routine serves
 * the forward (with or without att) and the KV-cache path, so cached decoding
 * reproduces the full forward bit for bit.
 *
 * Threads: the forward splits (sequence, query head) pairs; the backward
 * splits (sequence, KV head) pairs, because the query heads that share a KV
 * head all add into the same dk/dv rows.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

#pragma omp declare simd notinbranch
float graft_vexpf(float x);

#define ATT_CHUNK 64
#define PAR_MIN_WORK 16384 /* multiply-adds below which one thread does it all */

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

static inline float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/*
 * One query row: out[D] = softmax(scale * q . k_u for u < n) applied to v_u.
 * k and v point at key 0 of this head (row stride ldkv). When arow is not
 * NULL the n normalized probabilities are written to it.
 */
static void attend_row(float *out, float *arow, const float *q, const float *k, const float *v,
                       int ldkv, int n, int D, float scale) {
    float sc[ATT_CHUNK];
    float m = -INFINITY; /* running max of the scores */
    float l = 0.0f;      /* running sum of exp(score - m) */
    for (int d = 0; d < D; d++) out[d] = 0.0f;
    for (int c0 = 0; c0 < n; c0 += ATT_CHUNK) {
        const int cn = n - c0 < ATT_CHUNK ? n - c0 : ATT_CHUNK;
        float cm = -INFINITY;
        for (int u = 0; u < cn; u++) {
            sc[u] = scale * dot(q, k + (size_t)(c0 + u) * ldkv, D);
            cm = sc[u] > cm ? sc[u] : cm;
        }
        if (arow) memcpy(arow + c0, sc, (size_t)cn * sizeof(float));
        if (cm > m) { /* the max grew: rescale what was accumulated so far */
            const float corr = graft_vexpf(m - cm); /* 0 on the first chunk */
            l *= corr;
            for (int d = 0; d < D; d++) out[d] *= corr;
            m = cm;
        }
        float cl = 0.0f;
#pragma omp simd reduction(+ : cl)
        for (int u = 0; u < cn; u++) {
            sc[u] = graft_vexpf(sc[u] - m);
            cl += sc[u];
        }
        l += cl;
        for (int u = 0; u < cn; u++) {
            const float p = sc[u];
            const float *vu = v + (size_t)(c0 + u) * ldkv;
#pragma omp simd
            for (int d = 0; d < D; d++) out[d] += p * vu[d];
        }
    }
    const float inv = 1.0f / l;
    for (int d = 0; d < D; d++) out[d] *= inv;
    if (arow) {
#pragma omp simd
        for (int u = 0; u < n; u++) arow[u] = graft_vexpf(arow[u] - m) * inv;
    }
}

void graft_attention_forward(float *out, float *att, const float *q, int ldq, const float *k,
                             const float *v, int ldkv, const graft_seqs *seqs, int n_head,
                             int n_kv_head, int head_dim) {
    const int H = n_head, D = head_dim, HD = H * D;
    const int group = H / n_kv_head;
    const float scale = 1.0f / sqrtf((float)D);
    const int ntask = seqs->n * H;
    double work = 0.0;
    for (int s = 0; s < seqs->n; s++) {
        const double len = seqs->start[s + 1] - seqs->start[s];
        work += len * len * H * D;
    }
    /* Longer sequences cost quadratically more: dynamic scheduling. */
#pragma omp parallel for schedule(dynamic, 1) if (work > PAR_MIN_WORK)
    for (int task = 0; task < ntask; task++) {
        const int s = task / H, h = task % H, g = h / group;
        const int r0 = seqs->start[s], len = seqs->start[s + 1] - r0;
        float *abase = att ? att + seq_att_offset(seqs, s, H) + (size_t)h * len * len : NULL;
        const float *kh = k + (size_t)r0 * ldkv + (size_t)g * D;
        const float *vh = v + (size_t)r0 * ldkv + (size_t)g * D;
        for (int t = 0; t < len; t++) {
            float *arow = abase ? abase + (size_t)t * len : NULL;
            attend_row(out + (size_t)(r0 + t) * HD + (size_t)h * D, arow,
                       q + (size_t)(r0 + t) * ldq + (size_t)h * D, kh, vh, ldkv, t + 1, D, scale);
            if (arow)
                for (int u = t + 1; u < len; u++) arow[u] = 0.0f;
        }
    }
}

/*
 * For query t of head h with probabilities p_u (u <= t) and upstream dO_t:
 *   dv_u += p_u dO_t
 *   dp_u  = dO_t . v_u
 *   ds_u  = p_u (dp_u - sum_w p_w dp_w)           (softmax backward)
 *   dq_t += scale sum_u ds_u k_u,   dk_u += scale ds_u q_t.
 * sum_w p_w dp_w needs every dp first; rather than a length-L buffer, dp is
 * computed twice (one extra D-long dot per key).
 */
void graft_attention_backward(float *dq, float *dk, float *dv, int ldq, int ldkv, const float *dout,
                              const float *att, const float *q, const float *k, const float *v,
                              const graft_seqs *seqs, int n_head, int n_kv_head, int head_dim) {
    if (!dq && !dk && !dv) return;
    const int H = n_head, KV = n_kv_head, D = head_dim, HD = H * D;
    const int group = H / KV;
    const float scale = 1.0f / sqrtf((float)D);
    const int ntask = seqs->n * KV;
    double work = 0.0;
    for (int s = 0; s < seqs->n; s++) {
        const double len = seqs->start[s + 1] - seqs->start[s];
        work += len * len * H * D;
    }
#pragma omp parallel for schedule(dynamic, 1) if (work > PAR_MIN_WORK)
    for (int task = 0; task < ntask; task++) {
        const int s = task / KV, g = task % KV;
        const int r0 = seqs->start[s], len = seqs->start[s + 1] - r0;
        const size_t kvoff = (size_t)r0 * ldkv + (size_t)g * D;
        const float *kg = k + kvoff, *vg = v + kvoff;
        float *dkg = dk ? dk + kvoff : NULL, *dvg = dv ? dv + kvoff : NULL;
        float dqa[D];
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float *abase = att + seq_att_offset(seqs, s, H) + (size_t)h * len * len;
            for (int t = 0; t < len; t++) {
                const float *p = abase + (size_t)t * len;
                const float *go = dout + (size_t)(r0 + t) * HD + (size_t)h * D;
                const float *qt = q + (size_t)(r0 + t) * ldq + (size_t)h * D;
                float psum = 0.0f;
                for (int u = 0; u <= t; u++) psum += p[u] * dot(go, vg + (size_t)u * ldkv, D);
                for (int d = 0; d < D; d++) dqa[d] = 0.0f;
                for (int u = 0; u <= t; u++) {
                    const float pu = p[u];
                    const float *vu = vg + (size_t)u * ldkv;
                    if (dvg) {
                        float *dvu = dvg + (size_t)u * ldkv;
#pragma omp simd
                        for (int d = 0; d < D; d++) dvu[d] += pu * go[d];
                    }
                    const float ds = scale * pu * (dot(go, vu, D) - psum);
                    const float *ku = kg + (size_t)u * ldkv;
#pragma omp simd
                    for (int d = 0; d < D; d++) dqa[d] += ds * ku[d];
                    if (dkg) {
                        float *dku = dkg + (size_t)u * ldkv;
#pragma omp simd
                        for (int d = 0; d < D; d++) dku[d] += ds * qt[d];
                    }
                }
                if (dq) {
                    float *dqt = dq + (size_t)(r0 + t) * ldq + (size_t)h * D;
#pragma omp simd
                    for (int d = 0; d < D; d++) dqt[d] += dqa[d];
                }
            }
        }
    }
}

void graft_attention_cached(float *out, const float *q, int ldq, const float *kcache,
                            const float *vcache, int ldkv, int past, int n_new, int n_head,
                            int n_kv_head, int head_dim) {
    const int H = n_head, D = head_dim, HD = H * D;
    const int group = H / n_kv_head;
    const float scale = 1.0f / sqrtf((float)D);
    const int ntask = n_new * H;
    const double work = (double)n_new * (past + n_new) * H * D;
#pragma omp parallel for schedule(dynamic, 1) if (work > PAR_MIN_WORK)
    for (int task = 0; task < ntask; task++) {
        const int i = task / H, h = task % H, g = h / group;
        attend_row(out + (size_t)i * HD + (size_t)h * D, NULL, q + (size_t)i * ldq + (size_t)h * D,
                   kcache + (size_t)g * D, vcache + (size_t)g * D, ldkv, past + i + 1, D, scale);
    }
}
