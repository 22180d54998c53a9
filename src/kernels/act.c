/*
 * act.c - GELU (GPT-2's gelu_new) and SwiGLU (Llama's silu(gate) * up).
 *
 * Both are written through the logistic function, which needs only exp:
 *   0.5 (1 + tanh(y)) = sigmoid(2y),  so  gelu_new(u) = u * sigmoid(2y),
 *   y = sqrt(2/pi) (u + 0.044715 u^3);   silu(g) = g * sigmoid(g).
 * That is HF's formula rearranged exactly (not a further approximation), and
 * graft_vexpf vectorizes where libm's tanhf/expf would not.
 */
#include "kernels.h"
#include "parallel.h"

#define PAR_MIN_ELEMS 32768 /* below this a parallel region costs more than it saves */
#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

void graft_gelu_forward(float *out, const float *x, size_t n) {
    const long long nn = (long long)n;
    GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
    for (long long i = 0; i < nn; i++) {
        const float u = x[i];
        const float y = GELU_K * (u + GELU_A * u * u * u);
        out[i] = u / (1.0f + graft_vexpf(-2.0f * y));
    });
}

/* d/du [u s] with s = sigmoid(2y): s + u * 2 s (1 - s) * dy/du,
 * dy/du = sqrt(2/pi) (1 + 3 * 0.044715 u^2). */
void graft_gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    if (!dx) return;
    const long long nn = (long long)n;
    GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
    for (long long i = 0; i < nn; i++) {
        const float u = x[i];
        const float y = GELU_K * (u + GELU_A * u * u * u);
        const float s = 1.0f / (1.0f + graft_vexpf(-2.0f * y));
        const float dy = GELU_K * (1.0f + 3.0f * GELU_A * u * u);
        dx[i] += dout[i] * (s + 2.0f * u * s * (1.0f - s) * dy);
    });
}

void graft_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    const long long nn = (long long)n;
    GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
    for (long long i = 0; i < nn; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + graft_vexpf(-g)) * up[i];
    });
}

/* silu'(g) = s (1 + g (1 - s)), s = sigmoid(g). */
void graft_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n) {
    const long long nn = (long long)n;
    if (dgate && dup) {
        GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
        for (long long i = 0; i < nn; i++) {
            const float g = gate[i];
            const float s = 1.0f / (1.0f + graft_vexpf(-g));
            dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
            dup[i] += dout[i] * g * s;
        });
    } else if (dgate) {
        GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
        for (long long i = 0; i < nn; i++) {
            const float g = gate[i];
            const float s = 1.0f / (1.0f + graft_vexpf(-g));
            dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        });
    } else if (dup) {
        GRAFT_PAR_FOR_SIMD(nn > PAR_MIN_ELEMS,
        for (long long i = 0; i < nn; i++) {
            const float g = gate[i];
            dup[i] += dout[i] * g / (1.0f + graft_vexpf(-g));
        });
    }
}
