/* numerics.c - the small numerics GRACE and MELO share: their default layer,
 * the seeded uniform draw, Adam, and the target's smallest logit lead. One
 * copy, so both editors train with exactly the same arithmetic. */
#include "editor.h"

#include <math.h>

int graft_edit_default_layer(const graft_config *cfg) {
    /* 3/4 of the depth (the official GPT2-XL config: 35 of 48), but with at
     * least two blocks above: later target tokens see the edit only through
     * the attention of the blocks above the edited one (MELO's LoRA sits there) */
    int three_q = (3 * cfg->n_layer) / 4, two_above = cfg->n_layer - 3;
    return three_q < two_above ? three_q : two_above > 0 ? two_above : 0;
}

double graft_edit_uniform01(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

float graft_edit_min_margin(const graft_run *r, const int *target, int n, float *lead) {
    int V = r->m->cfg.vocab_size;
    float worst = INFINITY;
    for (int i = 0; i < n; i++) {
        const float *row = r->logits + (size_t)i * V;
        float other = -INFINITY;
        for (int v = 0; v < V; v++)
            if (v != target[i] && row[v] > other) other = row[v];
        float m = row[target[i]] - other;
        if (lead) lead[i] = m;
        if (!(m >= worst)) worst = m; /* NaN counts as a failure */
    }
    return worst;
}

void graft_edit_adam_step(float *p, const float *grad, float *m, float *v, size_t n, int t, float lr) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * grad[i];
        v[i] = b2 * v[i] + (1 - b2) * grad[i] * grad[i];
        p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
    }
}
