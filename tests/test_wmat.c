/*
 * test_wmat.c - weights used as stored (F16/BF16/Q8_0 read in place, and f32
 * stored transposed, wmat.c).
 *
 * 1. The kernels, on every instruction-set path this CPU runs: the linear
 *    map and its activation gradient for both layouts, batch 1 (the GEMV) and
 *    several rows (widened slices), against the double-precision reference
 *    on the widened matrix; the embedding gather.
 * 2. Whole models (random GPT-2 and Llama shapes saved as F16 and BF16):
 *    loaded as stored against the same file converted at load
 *    (GRAFT_WEIGHTS=f32): logits, greedy generation and activation gradients
 *    agree; after graft_model_need_f32 the logits are the same bits; a GRACE
 *    edit takes on a stored model; a weight editor converts it first.
 */
#include "engine.h"
#include "internal.h"
#include "kernels.h"
#include "test.h"
#include "test_util.h"
#include "model/save.h"

#include <stdint.h>
#include <unistd.h>

/* A stored matrix of R x L elements and its exact f32 widening. */
static void make_matrix(uint16_t *h, float *f, size_t n, int bf16) {
    for (size_t i = 0; i < n; i++) {
        const float v = test_frand(-1.0f, 1.0f);
        h[i] = bf16 ? graft_f32_to_bf16(v) : graft_f32_to_f16(v);
        f[i] = bf16 ? graft_bf16_to_f32(h[i]) : graft_f16_to_f32(h[i]);
    }
}

/* max |a - b| / (1 + |b|) */
static double rel_err(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        if (!(e <= worst)) worst = e; /* NaN counts as worst */
    }
    return worst;
}

static void test_linear(const char *isa, int bf16, graft_layout layout, int M, int K, int N) {
    const size_t nw = (size_t)K * N;
    uint16_t *h = malloc(nw * 2 + 2);
    float *f = malloc(nw * sizeof(float)), *x = malloc((size_t)M * K * sizeof(float)),
          *b = malloc((size_t)N * sizeof(float)), *y = malloc((size_t)M * N * sizeof(float)),
          *yr = malloc((size_t)M * N * sizeof(float)), *dy = malloc((size_t)M * N * sizeof(float)),
          *dx = malloc((size_t)M * K * sizeof(float)), *dxr = malloc((size_t)M * K * sizeof(float));
    /* odd byte offset of the 2-byte elements: safetensors does not align */
    uint16_t *hs = (uint16_t *)(void *)((uint8_t *)h + 1);
    uint16_t *tmp = malloc(nw * 2);
    make_matrix(tmp, f, nw, bf16);
    memcpy(hs, tmp, nw * 2);
    float *f32 = malloc(nw * sizeof(float)); /* the widened matrix as an f32 view: the same products */
    memcpy(f32, f, nw * sizeof(float));
    for (int i = 0; i < M * K; i++) x[i] = test_frand(-1.0f, 1.0f);
    for (int i = 0; i < N; i++) b[i] = test_frand(-1.0f, 1.0f);
    for (int i = 0; i < M * N; i++) dy[i] = test_frand(-1.0f, 1.0f), y[i] = NAN;
    for (int i = 0; i < M * K; i++) dx[i] = dxr[i] = test_frand(-1.0f, 1.0f);
    const graft_wmat w = {hs, bf16 ? GRAFT_BF16 : GRAFT_F16, 0};

    graft_linear_forward_w(y, x, w, b, M, K, N, layout);
    float *y32 = malloc((size_t)M * N * sizeof(float));
    graft_linear_forward_w(y32, x, (graft_wmat){f32, GRAFT_F32, 0}, b, M, K, N, layout);
    for (int i = 0; i < M; i++) memcpy(yr + (size_t)i * N, b, (size_t)N * sizeof(float));
    if (layout == GRAFT_W_KN)
        graft_gemm_ref(0, 0, M, N, K, 1.0f, x, K, f, N, 1.0f, yr, N);
    else
        graft_gemm_ref(0, 1, M, N, K, 1.0f, x, K, f, K, 1.0f, yr, N);
    const double ef = rel_err(y, yr, (size_t)M * N);
    CHECK_MSG(ef < 2e-5, "%s %s %s forward M=%d K=%d N=%d: error %g", isa, bf16 ? "BF16" : "F16",
              layout == GRAFT_W_KN ? "KN" : "NK", M, K, N, ef);
    const double e32 = rel_err(y32, yr, (size_t)M * N);
    CHECK_MSG(e32 < 2e-5, "%s F32 %s forward M=%d K=%d N=%d: error %g", isa, layout == GRAFT_W_KN ? "KN" : "NK", M, K,
              N, e32);
    /* f32 stored transposed (GPT-2's Conv1D in an F32 GGUF): the same map and activation gradient */
    const int R0 = layout == GRAFT_W_KN ? K : N, C0 = layout == GRAFT_W_KN ? N : K;
    float *f32t = malloc(nw * sizeof(float)), *dxt = malloc((size_t)M * K * sizeof(float)),
          *dxt_ref = malloc((size_t)M * K * sizeof(float));
    for (int r = 0; r < R0; r++)
        for (int c = 0; c < C0; c++) f32t[(size_t)c * R0 + r] = f[(size_t)r * C0 + c];
    graft_linear_forward_w(y32, x, (graft_wmat){f32t, GRAFT_F32, 1}, b, M, K, N, layout);
    const double e32t = rel_err(y32, yr, (size_t)M * N);
    CHECK_MSG(e32t < 2e-5, "%s F32 transposed %s forward M=%d K=%d N=%d: error %g", isa,
              layout == GRAFT_W_KN ? "KN" : "NK", M, K, N, e32t);
    memcpy(dxt, dx, (size_t)M * K * sizeof(float));
    memcpy(dxt_ref, dx, (size_t)M * K * sizeof(float));
    graft_linear_backward_dx_w(dxt, dy, (graft_wmat){f32t, GRAFT_F32, 1}, M, K, N, layout);
    if (layout == GRAFT_W_KN)
        graft_gemm_ref(0, 1, M, K, N, 1.0f, dy, N, f, N, 1.0f, dxt_ref, K);
    else
        graft_gemm_ref(0, 0, M, K, N, 1.0f, dy, N, f, K, 1.0f, dxt_ref, K);
    const double e32b = rel_err(dxt, dxt_ref, (size_t)M * K);
    CHECK_MSG(e32b < 2e-5, "%s F32 transposed %s dx M=%d K=%d N=%d: error %g", isa,
              layout == GRAFT_W_KN ? "KN" : "NK", M, K, N, e32b);
    free(f32t), free(dxt), free(dxt_ref);
    free(y32), free(f32);
    /* the stored [K][N] as the transposed view of a [N, K] parameter, widened */
    float *t = malloc(nw * sizeof(float));
    graft_wmat_to_f32(t, (graft_wmat){hs, w.dtype, 1}, (size_t)N, (size_t)K);
    int bad = 0;
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) bad += t[(size_t)n * K + k] != f[(size_t)k * N + n];
    CHECK_MSG(bad == 0, "graft_wmat_to_f32 %s transposed %dx%d: %d entries differ", bf16 ? "BF16" : "F16", K, N, bad);
    free(t);

    graft_linear_backward_dx_w(dx, dy, w, M, K, N, layout);
    if (layout == GRAFT_W_KN)
        graft_gemm_ref(0, 1, M, K, N, 1.0f, dy, N, f, N, 1.0f, dxr, K);
    else
        graft_gemm_ref(0, 0, M, K, N, 1.0f, dy, N, f, K, 1.0f, dxr, K);
    const double eb = rel_err(dx, dxr, (size_t)M * K);
    CHECK_MSG(eb < 2e-5, "%s %s %s dx M=%d K=%d N=%d: error %g", isa, bf16 ? "BF16" : "F16",
              layout == GRAFT_W_KN ? "KN" : "NK", M, K, N, eb);
    free(h), free(tmp), free(f), free(x), free(b), free(y), free(yr), free(dy), free(dx), free(dxr);
}

/* Q8_0 rows (blocks along the row, as GGUF stores every matrix) and
 * transposed views: y = x W for a parameter W [K, N] stored as its transpose
 * [N][K] (GPT-2's Conv1D in GGUF), and for W [N, K] stored as is. */
static void test_q8(const char *isa, int M, int K, int N) {
    const size_t nb = (size_t)N * (K / 32), bytes = nb * 34;
    uint8_t *q = malloc(bytes + 1), *qs = q + 1; /* odd address: GGUF aligns tensors, but rows need not be */
    for (size_t b = 0; b < nb; b++) {
        const uint16_t d = graft_f32_to_f16(0.01f + 0.02f * fabsf(test_frand(-1.0f, 1.0f)));
        memcpy(qs + b * 34, &d, 2);
        for (int k = 0; k < 32; k++) qs[b * 34 + 2 + k] = (uint8_t)(int8_t)(test_frand(-1.0f, 1.0f) * 127.0f);
    }
    float *f = malloc((size_t)N * K * sizeof(float)), *ft = malloc((size_t)N * K * sizeof(float));
    graft_q8_0_to_f32(f, qs, (size_t)N * K); /* [N][K] */
    float *x = malloc((size_t)M * K * sizeof(float)), *y = malloc((size_t)M * N * sizeof(float)),
          *yr = malloc((size_t)M * N * sizeof(float)), *dy = malloc((size_t)M * N * sizeof(float)),
          *dx = malloc((size_t)M * K * sizeof(float)), *dxr = malloc((size_t)M * K * sizeof(float));
    for (int i = 0; i < M * K; i++) x[i] = test_frand(-1.0f, 1.0f), dx[i] = dxr[i] = test_frand(-1.0f, 1.0f);
    for (int i = 0; i < M * N; i++) dy[i] = test_frand(-1.0f, 1.0f);
    for (int tr = 0; tr < 2; tr++) {
        /* tr = 0: parameter [N, K] (NK) stored as is; tr = 1: parameter [K, N] (KN) stored transposed */
        const graft_wmat w = {qs, GRAFT_WMAT_Q8_0, tr};
        const graft_layout lay = tr ? GRAFT_W_KN : GRAFT_W_NK;
        graft_linear_forward_w(y, x, w, NULL, M, K, N, lay);
        /* batch 1 on an integer path (avx512+vnni, avx512+int8, avx2+int8) multiplies x rounded to
         * Q8_0 (as llama.cpp's Q8_0 dot does): the reference takes the same rounded x, and the exact
         * product stays close */
        const int xq8 = M == 1 && strchr(graft_wmat_isa(), '+') != NULL;
        float *xr = malloc((size_t)M * K * sizeof(float));
        memcpy(xr, x, (size_t)M * K * sizeof(float));
        if (xq8) {
            signed char *xq = malloc((size_t)K);
            float *xd = malloc((size_t)K / 32 * sizeof(float));
            graft_q8_0_quantize(xq, xd, x, (size_t)K);
            for (int k = 0; k < K; k++) xr[k] = xd[k / 32] * (float)xq[k];
            free(xq), free(xd);
            graft_gemm_ref(0, 1, M, N, K, 1.0f, x, K, f, K, 0.0f, yr, N);
            CHECK_MSG(rel_err(y, yr, (size_t)N) < 0.25, "%s Q8_0 x Q8_0 far from the exact product: %g", isa,
                      rel_err(y, yr, (size_t)N));
        }
        graft_gemm_ref(0, 1, M, N, K, 1.0f, xr, K, f, K, 0.0f, yr, N);
        free(xr);
        CHECK_MSG(rel_err(y, yr, (size_t)M * N) < 2e-5, "%s Q8_0 %s forward M=%d K=%d N=%d: error %g", isa,
                  tr ? "transposed" : "NK", M, K, N, rel_err(y, yr, (size_t)M * N));
        memcpy(dx, dxr, (size_t)M * K * sizeof(float));
        float *dref = malloc((size_t)M * K * sizeof(float));
        memcpy(dref, dxr, (size_t)M * K * sizeof(float));
        graft_linear_backward_dx_w(dx, dy, w, M, K, N, lay);
        graft_gemm_ref(0, 0, M, K, N, 1.0f, dy, N, f, K, 1.0f, dref, K);
        CHECK_MSG(rel_err(dx, dref, (size_t)M * K) < 2e-5, "%s Q8_0 %s dx M=%d: error %g", isa, tr ? "transposed" : "NK",
                  M, rel_err(dx, dref, (size_t)M * K));
        free(dref);
        /* the parameter as f32 */
        graft_wmat_to_f32(ft, w, tr ? (size_t)K : (size_t)N, tr ? (size_t)N : (size_t)K);
        int bad = 0;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) bad += (tr ? ft[(size_t)k * N + n] : ft[(size_t)n * K + k]) != f[(size_t)n * K + k];
        CHECK_MSG(bad == 0, "graft_wmat_to_f32 Q8_0 %s: %d entries differ", tr ? "transposed" : "as is", bad);
    }
    free(q), free(f), free(ft), free(x), free(y), free(yr), free(dy), free(dx), free(dxr);
}

/* graft_q8_0_quantize on the current path against its definition: per block
 * of 32, d = max|x| / 127 and q = x / d rounded to nearest, ties to even.
 * Blocks: random at several magnitudes, all zero, and max|x| = 127 (d = 1)
 * with halves, where only ties-to-even gives the expected integers. */
static void test_q8_quantize(const char *isa) {
    enum { NB = 40, N = NB * 32 };
    float x[N], d[NB], dr[NB];
    signed char q[N], qr[N];
    for (int b = 0; b < NB; b++) {
        const float mag = b % 5 == 0 ? 0.0f : powf(10.0f, (float)(b % 7) - 3.0f);
        for (int k = 0; k < 32; k++) x[b * 32 + k] = mag * test_frand(-1.0f, 1.0f);
    }
    for (int k = 0; k < 32; k++) x[7 * 32 + k] = k == 0 ? -127.0f : (float)(k - 16) + 0.5f; /* ties */
    for (int b = 0; b < NB; b++) {
        float amax = 0.0f;
        for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(x[b * 32 + k]));
        dr[b] = amax / 127.0f;
        const float inv = dr[b] > 0.0f ? 1.0f / dr[b] : 0.0f;
        for (int k = 0; k < 32; k++) qr[b * 32 + k] = (signed char)lrintf(x[b * 32 + k] * inv);
    }
    CHECK_MSG(qr[7 * 32 + 16] == 0 && qr[7 * 32 + 19] == 4 && qr[7 * 32 + 12] == -4, "tie block built wrong");
    memset(q, 0x55, sizeof q);
    graft_q8_0_quantize(q, d, x, N);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += q[i] != qr[i];
    for (int b = 0; b < NB; b++) bad += d[b] != dr[b];
    CHECK_MSG(bad == 0, "%s graft_q8_0_quantize: %d values differ from the definition", isa, bad);
}

static void test_embed(int bf16) {
    const int V = 37, C = 45, T = 6;
    uint16_t *h = malloc((size_t)V * C * 2);
    float *f = malloc((size_t)V * C * sizeof(float)), *wpe = malloc((size_t)T * C * sizeof(float));
    float *o = malloc((size_t)T * C * sizeof(float)), *r = malloc((size_t)T * C * sizeof(float));
    make_matrix(h, f, (size_t)V * C, bf16);
    for (int i = 0; i < T * C; i++) wpe[i] = test_frand(-1.0f, 1.0f);
    const int ids[6] = {0, 36, 5, 5, 17, 1};
    graft_embed_forward_w(o, ids, NULL, (graft_wmat){h, bf16 ? GRAFT_BF16 : GRAFT_F16, 0}, wpe, T, C);
    graft_embed_forward(r, ids, NULL, f, wpe, T, C);
    CHECK(memcmp(o, r, (size_t)T * C * sizeof(float)) == 0);
    free(h), free(f), free(wpe), free(o), free(r);
}

/* ------------------------------------------------------------------ models */

static char *tmp_model_dir(const char *tag) {
    char *d = malloc(256);
    snprintf(d, 256, "/tmp/graft_test_wmat_%d_%s", (int)getpid(), tag);
    return d;
}

static void rm_model_dir(const char *d) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", d);
}

static graft_model *load_as(const char *dir, const char *weights) {
    setenv("GRAFT_WEIGHTS", weights, 1);
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(dir, &m));
    unsetenv("GRAFT_WEIGHTS");
    return m;
}

/* Logits of all rows of ids[n], and the gradient of their summed loss at the
 * input of layer 0 (activations only, as GRACE takes it). */
static void forward_backward(graft_model *m, const int *ids, int n, float *logits, float *dres) {
    graft_run *r = NULL;
    CHECK_OK(graft_run_create(m, n, n, n, 1, &r));
    if (!r) return;
    CHECK_OK(graft_run_set_batch(r, ids, &n, 1, NULL, 0));
    CHECK_OK(graft_run_forward(r));
    const size_t V = (size_t)m->cfg.vocab_size;
    memcpy(logits, r->logits, (size_t)n * V * sizeof(float));
    int targets[64];
    for (int i = 0; i < n; i++) targets[i] = i + 1 < n ? ids[i + 1] : -1;
    CHECK_OK(graft_run_backward(r, targets, NULL, NULL, 0, GRAFT_SITE_BLOCK_IN));
    memcpy(dres, r->d_resid, (size_t)n * m->cfg.d_model * sizeof(float));
    graft_run_free(r);
}

static int grace_took;

/* Whether a GRACE edit at layer 1 makes greedy decoding give its target. */
static int grace_takes(const char *dir, const char *weights) {
    graft_model *m = load_as(dir, weights);
    graft_editor *e = NULL;
    int took = -1;
    if (m) CHECK_OK(graft_editor_create(m, "grace", "{\"layer\": 1}", &e));
    if (e) {
        if (!strcmp(weights, "stored")) CHECK(m->w.layers[0].down_w == NULL);
        const int prompt[4] = {5, 9, 2, 7}, target[2] = {11, 13};
        graft_edit_tok req = {.prompt = prompt, .n_prompt = 4, .target = target, .n_target = 2, .subject_last = -1};
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &req, &info, &ch));
        took = test_greedy_is(m, e, prompt, 4, target, 2);
        graft_blob_free(&ch);
        e->ops->free(e);
    }
    graft_model_free(m);
    return took;
}

static void test_model(const char *preset, graft_dtype dt) {
    graft_config cfg;
    CHECK_OK(graft_config_preset(preset, &cfg));
    graft_model *src = NULL;
    CHECK_OK(graft_model_create_random(&cfg, 11, 0.05f, &src));
    if (!src) return;
    char tag[64];
    snprintf(tag, sizeof tag, "%s_%s", preset, graft_dtype_name(dt));
    char *dir = tmp_model_dir(tag);
    rm_model_dir(dir);
    CHECK_OK(graft_model_save_hf(src, dir, dt));
    graft_model *st = load_as(dir, "stored"), *f32 = load_as(dir, "f32");
    if (st && f32) {
        CHECK(st->w.layers[0].down_w == NULL && st->w.layers[0].down_m.dtype == (int)dt);
        CHECK(f32->w.layers[0].down_w != NULL && f32->w.layers[0].down_m.dtype == GRAFT_F32);
        const int n = 9;
        int ids[9];
        for (int i = 0; i < n; i++) ids[i] = (i * 37 + 3) % cfg.vocab_size;
        const size_t nl = (size_t)n * cfg.vocab_size, nd = (size_t)n * cfg.d_model;
        float *l1 = malloc(nl * sizeof(float)), *l2 = malloc(nl * sizeof(float)), *l3 = malloc(nl * sizeof(float));
        float *d1 = malloc(nd * sizeof(float)), *d2 = malloc(nd * sizeof(float));
        forward_backward(st, ids, n, l1, d1);
        forward_backward(f32, ids, n, l2, d2);
        CHECK_MSG(rel_err(l1, l2, nl) < 1e-4, "%s logits: stored vs f32 error %g", tag, rel_err(l1, l2, nl));
        CHECK_MSG(rel_err(d1, d2, nd) < 1e-4, "%s activation gradient: error %g", tag, rel_err(d1, d2, nd));
        CHECK(st->w.layers[0].down_w == NULL); /* an activation backward converts nothing */

        /* greedy decode (batch-1 GEMVs) gives the same tokens */
        graft_gen_opts o;
        graft_gen_opts_default(&o);
        o.max_new_tokens = 12;
        o.stop_at_eos = 0;
        int *g1 = NULL, *g2 = NULL;
        size_t n1 = 0, n2 = 0;
        CHECK_OK(graft_generate_ids(st, ids, 3, &o, NULL, NULL, &g1, &n1));
        CHECK_OK(graft_generate_ids(f32, ids, 3, &o, NULL, NULL, &g2, &n2));
        CHECK_MSG(n1 == n2 && n1 == 12 && memcmp(g1, g2, n1 * sizeof(int)) == 0, "%s: greedy tokens differ", tag);
        free(g1), free(g2);

        /* converted later: the same bits as converted at load */
        CHECK_OK(graft_model_need_f32(st));
        forward_backward(st, ids, n, l3, d1);
        CHECK_MSG(memcmp(l3, l2, nl * sizeof(float)) == 0, "%s: logits after need_f32 differ from an f32 load", tag);
        free(l1), free(l2), free(l3), free(d1), free(d2);
    }
    graft_model_free(st);
    graft_model_free(f32);

    /* editors: GRACE keeps the weights as stored and edits them as it does
     * f32 ones; FT converts them first */
    const int took = grace_takes(dir, "stored"), took32 = grace_takes(dir, "f32");
    CHECK_MSG(took == took32, "%s: a GRACE edit took %d on stored weights, %d on f32", tag, took, took32);
    grace_took += took;
    graft_model *m = load_as(dir, "stored");
    if (m) {
        graft_editor *e = NULL;
        CHECK_OK(graft_editor_create(m, "ft", "{}", &e));
        CHECK(m->w.layers[0].down_w != NULL && m->w.layers[0].down_m.data == m->w.layers[0].down_w);
        if (e) e->ops->free(e);
    }
    graft_model_free(m);
    graft_model_free(src);
    rm_model_dir(dir);
    free(dir);
}

int main(void) {
    test_seed(0x2545F4914F6CDD1Dull);
    graft_set_threads(0);
    static const char *const isas[] = {"generic", "avx2", "avx512"};
    static const int shapes[][3] = {{1, 64, 48}, {1, 130, 300}, {1, 768, 257}, {1, 17, 1},
                                    {2, 33, 65}, {5, 130, 129}, {67, 96, 200}};
    int ran = 0;
    for (int i = 0; i < 3; i++) {
        if (graft_cpu_isa_set((graft_isa)graft_isa_parse(isas[i])) != 0) {
            printf("%s: not on this CPU, skipped\n", isas[i]);
            continue;
        }
        ran++;
        for (int bf16 = 0; bf16 < 2; bf16++)
            for (int lay = 0; lay < 2; lay++)
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                    test_linear(isas[i], bf16, (graft_layout)lay, shapes[s][0], shapes[s][1], shapes[s][2]);
        test_embed(0);
        test_embed(1);
        test_q8_quantize(isas[i]);
        test_q8(isas[i], 1, 64, 48);
        test_q8(isas[i], 1, 768, 131);
        test_q8(isas[i], 3, 96, 70);
        test_q8(isas[i], 40, 160, 33);
        CHECK(strncmp(graft_wmat_isa(), isas[i], strlen(isas[i])) == 0);
    }
    CHECK(ran >= 1);
    /* back to the best path for the model tests */
    for (int i = GRAFT_ISA_COUNT - 1; i >= 0 && graft_cpu_isa_set((graft_isa)i) != 0; i--) {
    }
    test_model("gpt2-tiny", GRAFT_F16);
    test_model("gpt2-tiny", GRAFT_BF16);
    test_model("llama-tiny", GRAFT_F16);
    test_model("llama-tiny", GRAFT_BF16);
    CHECK_MSG(grace_took >= 2, "GRACE edits took on %d of 4 stored models", grace_took);
    return test_finish("test_wmat");
}
