/* optim.c - AdamW, the learning-rate schedule and the global gradient norm. */
#include "train/train_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements per chunk of the gradient norm: the chunking, not the thread
 * count, fixes the order of the sums, so the norm is the same bits however
 * many threads computed it. */
#define NORM_CHUNK ((size_t)1 << 16)

double graft_train_lr_at(long step, long total, long warmup, double lr, double min_lr) {
    if (warmup > 0 && step <= warmup) return lr * (double)step / (double)warmup;
    if (total <= warmup) return lr;
    double p = (double)(step - warmup) / (double)(total - warmup);
    if (p > 1) p = 1;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.14159265358979323846 * p));
}

bool train_param_decays(const graft_param *p) {
    /* Norm gains and biases are 1-D. Embeddings are looked up, not
     * multiplied: decaying them shrinks rare tokens towards zero for nothing.
     * An untied lm_head is an ordinary matrix and decays. */
    if (p->ndim != 2) return false;
    return !strstr(p->name, ".wte.") && !strstr(p->name, ".wpe.") && !strstr(p->name, "embed_tokens");
}

graft_status train_adamw_init(train_adamw *o, const graft_param_table *params) {
    memset(o, 0, sizeof *o);
    o->n = params->n;
    o->m = calloc((size_t)o->n + 1, sizeof *o->m);
    o->v = calloc((size_t)o->n + 1, sizeof *o->v);
    o->decay = calloc((size_t)o->n + 1, sizeof *o->decay);
    o->numel = calloc((size_t)o->n + 1, sizeof *o->numel);
    size_t total = 0, chunks = 0;
    for (int i = 0; i < o->n; i++) {
        total += (params->p[i].numel + 15) & ~(size_t)15;
        chunks += (params->p[i].numel + NORM_CHUNK - 1) / NORM_CHUNK;
    }
    size_t bytes;
    if (!o->m || !o->v || !o->decay || !o->numel || !graft_mul_size(total, 2 * sizeof(float), &bytes) ||
        !(o->slab = graft_calloc_aligned(bytes)) || !(o->partial = calloc(chunks + 1, sizeof *o->partial))) {
        train_adamw_free(o);
        return graft_fail(GRAFT_ERR_NOMEM, "AdamW: cannot allocate the moments (%zu MiB)", (total * 8) >> 20);
    }
    o->n_chunks = chunks;
    size_t at = 0;
    for (int i = 0; i < o->n; i++) {
        const graft_param *p = &params->p[i];
        o->numel[i] = p->numel;
        o->decay[i] = train_param_decays(p);
        o->m[i] = o->slab + at;
        at += (p->numel + 15) & ~(size_t)15;
        o->v[i] = o->slab + at;
        at += (p->numel + 15) & ~(size_t)15;
    }
    return GRAFT_OK;
}

void train_adamw_free(train_adamw *o) {
    graft_free_aligned(o->slab);
    free(o->m);
    free(o->v);
    free(o->decay);
    free(o->numel);
    free(o->partial);
    memset(o, 0, sizeof *o);
}

double train_grad_norm(train_adamw *o, const graft_grads *g) {
    /* Chunk c of tensor i: partial[base_i + c]. */
    size_t base = 0;
    for (int i = 0; i < o->n; i++) {
        const float *x = g->t.p[i].data;
        size_t n = o->numel[i], nc = (n + NORM_CHUNK - 1) / NORM_CHUNK;
        double *part = o->partial + base;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nc > 1)
#endif
        for (size_t c = 0; c < nc; c++) {
            size_t a = c * NORM_CHUNK, b = a + NORM_CHUNK < n ? a + NORM_CHUNK : n;
            double s = 0;
            for (size_t k = a; k < b; k++) s += (double)x[k] * x[k];
            part[c] = s;
        }
        base += nc;
    }
    double s = 0;
    for (size_t c = 0; c < base; c++) s += o->partial[c];
    return sqrt(s);
}

void train_adamw_step(train_adamw *o, graft_param_table *params, const graft_grads *g, double lr, double grad_scale,
                      double beta1, double beta2, double eps, double wd) {
    o->t++;
    /* torch.optim.AdamW: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
     * v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). */
    const double bc1 = 1.0 - pow(beta1, (double)o->t), bc2 = 1.0 - pow(beta2, (double)o->t);
    const float step_size = (float)(lr / bc1), inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    const float b1 = (float)beta1, b2 = (float)beta2, ob1 = (float)(1.0 - beta1), ob2 = (float)(1.0 - beta2);
    const float fe = (float)eps, gs = (float)grad_scale;
    for (int i = 0; i < o->n; i++) {
        float *p = params->p[i].data, *m = o->m[i], *v = o->v[i];
        const float *gr = g->t.p[i].data;
        const float keep = o->decay[i] ? (float)(1.0 - lr * wd) : 1.0f;
        size_t n = o->numel[i];
        /* Element-wise: the result does not depend on how threads split it. */
#ifdef _OPENMP
#pragma omp parallel for simd schedule(static) if (n > 32768)
#endif
        for (size_t k = 0; k < n; k++) {
            float gk = gr[k] * gs;
            float mk = b1 * m[k] + ob1 * gk;
            float vk = b2 * v[k] + ob2 * gk * gk;
            m[k] = mk;
            v[k] = vk;
            p[k] = p[k] * keep - step_size * mk / (sqrtf(vk) * inv_bc2_sqrt + fe);
        }
    }
}
