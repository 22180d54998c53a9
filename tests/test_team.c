/*
 * test_team.c - the decode team (kernels/team.c): one parallel region for a
 * batch-1 forward, GEMVs shared out over it.
 *
 * 1. graft_team_for gives every item to exactly one rank, rank 0 starting at
 *    the front, and uses the other ranks; a rank done with its share takes
 *    the back of another's (tail stealing); nested runs and calls outside a
 *    team run on the calling thread.
 * 2. GEMVs on a team (F32 both layouts, F16 both layouts, Q8_0) and the
 *    cached attention of one query give the same bits as on one thread: each
 *    output is computed by one thread in a fixed order.
 * 3. A decode of a GPT-2-shaped model (its head is big enough to open a team)
 *    gives the same logits and tokens on 2 threads as on 1, with and without
 *    a GRACE edit (hooks run on rank 0 inside the region).
 */
#include "engine.h"
#include "internal.h"
#include "kernels.h"
#include "test.h"
#include "test_util.h"

#include <stdint.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define N_ITEMS 1000

typedef struct shares {
    int owner[N_ITEMS];
    int calls[N_ITEMS];
    int active_inside; /* graft_team_active() seen by fn on rank 0 */
    int hold_others;   /* ranks > 0 wait in their first call until rank 0 stole */
    int hold_rank0;    /* rank 0 waits in its first call until another rank took items */
    int by_rank0;      /* items rank 0 has done */
    int by_others;     /* items the other ranks have done */
} shares;

static int rank_now(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static void record(void *arg, int i0, int i1) {
    shares *s = arg;
    const int r = rank_now();
    if (r != 0 && s->hold_others) {
        /* rank 0 gets through its own share (half the items on 2 threads) and
         * must then come for this rank's; give up after 10 s so a broken
         * team fails the checks instead of hanging */
        const double t0 = test_now_s();
        while (__atomic_load_n(&s->by_rank0, __ATOMIC_ACQUIRE) <= N_ITEMS / 2 && test_now_s() - t0 < 10.0) {
        }
    }
    if (r == 0 && s->hold_rank0) {
        /* the other ranks may still be starting (the first region creates
         * them): wait until one has done items, for at most 10 s */
        const double t0 = test_now_s();
        while (__atomic_load_n(&s->by_others, __ATOMIC_ACQUIRE) == 0 && test_now_s() - t0 < 10.0) {
        }
        s->hold_rank0 = 0;
    }
    for (int i = i0; i < i1; i++) {
        s->owner[i] = r;
        __atomic_fetch_add(&s->calls[i], 1, __ATOMIC_RELAXED);
        /* some microseconds per item, so that every rank gets to take part */
        for (volatile int spin = 0; spin < 5000; spin = spin + 1) {
        }
    }
    __atomic_fetch_add(r == 0 ? &s->by_rank0 : &s->by_others, i1 - i0, __ATOMIC_RELEASE);
}

static int nested_ran;

static void nested_body(void *arg) {
    (void)arg;
    nested_ran = graft_team_active(); /* still rank 0 of the outer team */
}

static void body_for(void *arg) {
    shares *s = arg;
    s->active_inside = graft_team_active();
    graft_team_for(N_ITEMS, record, s);
    graft_team_run(nested_body, NULL); /* no second region: runs here */
}

static void test_for(void) {
    shares *s = calloc(1, sizeof *s);
    s->hold_rank0 = 1;
    graft_team_run(body_for, s);
    CHECK(s->active_inside == 1);
    CHECK(nested_ran == 1);
    CHECK(!graft_team_active());
    int once = 1, used[2] = {0, 0};
    for (int i = 0; i < N_ITEMS; i++) {
        once &= s->calls[i] == 1;
        used[s->owner[i] != 0]++;
    }
    CHECK(once);
    CHECK(s->owner[0] == 0);
    CHECK_MSG(used[0] > 0 && used[1] > 0, "rank 0 took %d items, the others %d", used[0], used[1]);

    /* tail stealing (2 threads): the other rank is held in its first chunk,
     * so rank 0 finishes its own half and then takes the back of the other
     * half; every item is still done exactly once */
    if (graft_get_threads() == 2) {
        memset(s, 0, sizeof *s);
        s->hold_others = 1;
        graft_team_run(body_for, s);
        once = 1;
        int first_half = 1;
        for (int i = 0; i < N_ITEMS; i++) {
            once &= s->calls[i] == 1;
            if (i < N_ITEMS / 2) first_half &= s->owner[i] == 0;
        }
        CHECK(once);
        CHECK(first_half);
        CHECK_MSG(s->owner[N_ITEMS - 1] == 0 && s->by_rank0 > N_ITEMS / 2,
                  "rank 0 did %d items; the last one went to rank %d", s->by_rank0,
                  s->owner[N_ITEMS - 1]);
        /* the front of the other half stayed with its owner, if the owner got
         * to claim anything before rank 0 took it all (a late start) */
        CHECK(s->by_others == 0 || s->owner[N_ITEMS / 2] != 0);
    }

    /* outside a team: everything on the calling thread */
    memset(s, 0, sizeof *s);
    graft_team_for(N_ITEMS, record, s);
    int all_here = 1;
    for (int i = 0; i < N_ITEMS; i++) all_here &= s->calls[i] == 1 && s->owner[i] == 0;
    CHECK(all_here);
    free(s);
}

/* ------------------------------------------------------------------ GEMVs */

typedef struct gemv_case {
    graft_wmat w;
    graft_layout layout;
    int K, N;
    const float *x, *bias;
    float *y;
} gemv_case;

static void run_gemv(void *arg) {
    gemv_case *c = arg;
    CHECK(graft_team_active());
    graft_linear_forward_w(c->y, c->x, c->w, c->bias, 1, c->K, c->N, c->layout);
}

/* K x N: 320 x 416 (133,120 weights: shared out; a KN product's 5 bands
 * summed on rank 0) and 512 x 2600 (8 bands of 2600 sums: the sum shared out
 * too, in chunks that do not divide N). */
static void test_gemv(int K, int N) {
    const size_t n = (size_t)K * N;
    float *f = malloc(n * sizeof(float)), *x = malloc((size_t)K * sizeof(float));
    uint16_t *h = malloc(n * 2);
    uint8_t *q = malloc(n / 32 * 34);
    for (size_t i = 0; i < n; i++) {
        f[i] = test_frand(-1.0f, 1.0f);
        h[i] = graft_f32_to_f16(f[i]);
    }
    for (size_t b = 0; b < n / 32; b++) {
        const uint16_t d = graft_f32_to_f16(0.02f);
        memcpy(q + b * 34, &d, 2);
        for (int k = 0; k < 32; k++) q[b * 34 + 2 + k] = (uint8_t)(int8_t)(test_frand(-1.0f, 1.0f) * 127.0f);
    }
    for (int i = 0; i < K; i++) x[i] = test_frand(-1.0f, 1.0f);
    const struct {
        graft_wmat w;
        graft_layout layout;
        const char *name;
    } cases[] = {
        {{f, GRAFT_F32, 0}, GRAFT_W_KN, "F32 KN"},  {{f, GRAFT_F32, 0}, GRAFT_W_NK, "F32 NK"},
        {{f, GRAFT_F32, 1}, GRAFT_W_KN, "F32 transposed"}, {{h, GRAFT_F16, 0}, GRAFT_W_KN, "F16 KN"},
        {{h, GRAFT_F16, 0}, GRAFT_W_NK, "F16 NK"},  {{q, GRAFT_WMAT_Q8_0, 0}, GRAFT_W_NK, "Q8_0 NK"},
    };
    const int saved = graft_get_threads();
    float *bias = malloc((size_t)N * sizeof(float));
    for (int i = 0; i < N; i++) bias[i] = test_frand(-1.0f, 1.0f);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *y1 = malloc((size_t)N * sizeof(float)), *y2 = malloc((size_t)N * sizeof(float)),
              *y3 = malloc((size_t)N * sizeof(float));
        graft_set_threads(1);
        graft_linear_forward_w(y1, x, cases[c].w, NULL, 1, K, N, cases[c].layout);
        graft_set_threads(2);
        gemv_case g = {cases[c].w, cases[c].layout, K, N, x, NULL, y2};
        graft_team_run(run_gemv, &g);
        CHECK_MSG(memcmp(y1, y2, (size_t)N * sizeof(float)) == 0, "%s: team result differs from one thread",
                  cases[c].name);
        /* with a bias, added where each output is written: the same sums plus the bias, to the bit */
        g.bias = bias;
        g.y = y3;
        graft_team_run(run_gemv, &g);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += y3[i] != y1[i] + bias[i];
        CHECK_MSG(bad == 0, "%s: %d outputs with a bias are not the product plus the bias", cases[c].name, bad);
        free(y1), free(y2), free(y3);
    }
    free(bias);
    graft_set_threads(saved);
    free(f), free(x), free(h), free(q);
}

/* graft_sum_bands on a team against the sum written out, band by band in
 * order: equal to the bit, with a stride, alpha and beta. */
typedef struct sum_case {
    float *y, *part;
    const float *bias;
    int incy, nb, N;
    float alpha, beta;
} sum_case;

static void run_sum(void *arg) {
    sum_case *c = arg;
    graft_sum_bands(c->y, c->incy, c->alpha, c->beta, c->bias, c->part, c->nb, c->N);
}

static void test_sum_bands(void) {
    const int nb = 8, N = 3001, incy = 3;
    float *part = malloc((size_t)nb * N * sizeof(float)), *keep = malloc((size_t)nb * N * sizeof(float)),
          *bias = malloc((size_t)N * sizeof(float)), *y = malloc((size_t)N * incy * sizeof(float)),
          *ref = malloc((size_t)N * incy * sizeof(float));
    for (int i = 0; i < nb * N; i++) keep[i] = test_frand(-1.0f, 1.0f);
    for (int i = 0; i < N; i++) bias[i] = test_frand(-1.0f, 1.0f);
    const int saved = graft_get_threads();
    graft_set_threads(2);
    for (int with_bias = 0; with_bias < 2; with_bias++) { /* y = 0.5 sum + 2 y, then 0.5 sum + bias */
        memcpy(part, keep, (size_t)nb * N * sizeof(float));
        for (int i = 0; i < N * incy; i++) y[i] = ref[i] = test_frand(-1.0f, 1.0f);
        for (int l = 0; l < N; l++) {
            float a = keep[l];
            for (int b = 1; b < nb; b++) a += keep[(size_t)b * N + l];
            float *r = ref + (size_t)l * incy;
            *r = with_bias ? 0.5f * a + bias[l] : 0.5f * a + 2.0f * *r;
        }
        sum_case c = {y, part, with_bias ? bias : NULL, incy, nb, N, 0.5f, 2.0f};
        graft_team_run(run_sum, &c);
        CHECK_MSG(memcmp(y, ref, (size_t)N * incy * sizeof(float)) == 0, "graft_sum_bands on a team differs (bias %d)",
                  with_bias);
    }
    graft_set_threads(saved);
    free(part), free(keep), free(bias), free(y), free(ref);
}

/* Attention of one new query over a long cache: its heads on the team. */
typedef struct att_case {
    float *out;
    const float *q, *k, *v;
    int past, H, KV, D;
} att_case;

static void run_att(void *arg) {
    att_case *c = arg;
    graft_attention_cached(c->out, c->q, c->H * c->D, c->k, c->v, c->KV * c->D, c->past, 1, c->H, c->KV, c->D);
}

static void test_attention(void) {
    const int past = 300, H = 8, KV = 4, D = 32; /* 301 x 8 x 32 multiply-adds: shared out */
    float *q = malloc((size_t)H * D * sizeof(float)), *k = malloc((size_t)(past + 1) * KV * D * sizeof(float)),
          *v = malloc((size_t)(past + 1) * KV * D * sizeof(float)), *o1 = malloc((size_t)H * D * sizeof(float)),
          *o2 = malloc((size_t)H * D * sizeof(float));
    for (int i = 0; i < H * D; i++) q[i] = test_frand(-1.0f, 1.0f);
    for (int i = 0; i < (past + 1) * KV * D; i++) k[i] = test_frand(-1.0f, 1.0f), v[i] = test_frand(-1.0f, 1.0f);
    const int saved = graft_get_threads();
    graft_set_threads(1);
    att_case c = {o1, q, k, v, past, H, KV, D};
    run_att(&c);
    graft_set_threads(2);
    c.out = o2;
    graft_team_run(run_att, &c);
    graft_set_threads(saved);
    CHECK_MSG(memcmp(o1, o2, (size_t)H * D * sizeof(float)) == 0, "cached attention on a team differs");
    free(q), free(k), free(v), free(o1), free(o2);
}

/* ------------------------------------------------------------------ a decode */

/* Greedy tokens and the logits of every step (n_new rows of V). The prompt
 * but its last token is one batch; every step after it, the prompt's last
 * token first, is a batch of one row: the team's steps. */
static void decode(graft_model *m, graft_editor *e, const int *prompt, int np, int n_new, int *out_ids,
                   float *out_logits) {
    const int V = m->cfg.vocab_size;
    graft_kv kv;
    CHECK_OK(graft_kv_create(&m->cfg, np + n_new, &kv));
    graft_run *r = NULL;
    CHECK_OK(graft_run_create(m, np, 1, np + n_new, 0, &r));
    if (!r) return;
    r->kv = &kv;
    if (e) e->ops->attach(e, r);
    int n0 = np - 1, last = np - 2, one = 1, zero = 0;
    CHECK_OK(graft_run_set_batch(r, prompt, &n0, 1, &last, 1));
    CHECK_OK(graft_run_forward(r));
    int next = prompt[np - 1];
    for (int s = 0; s < n_new; s++) {
        CHECK_OK(graft_run_set_batch(r, &next, &one, 1, &zero, 1));
        if (e) e->ops->set_keys(e, &zero, 1);
        CHECK_OK(graft_run_forward(r));
        memcpy(out_logits + (size_t)s * V, r->logits, (size_t)V * sizeof(float));
        int best = 0;
        for (int v = 1; v < V; v++)
            if (r->logits[v] > r->logits[best]) best = v;
        out_ids[s] = next = best;
    }
    if (e) {
        e->ops->set_keys(e, NULL, 0);
        e->ops->detach(e, r);
    }
    graft_run_free(r);
    graft_kv_free(&kv);
}

static void test_decode(void) {
    graft_config cfg;
    CHECK_OK(graft_config_preset("gpt2-tiny", &cfg)); /* head 64 x 50257: a team opens */
    cfg.vocab_size = 2048;                         /* 131,072 weights: still one */
    graft_model *m = NULL;
    CHECK_OK(graft_model_create_random(&cfg, 5, 0.1f, &m));
    if (!m) return;
    const int prompt[4] = {5, 9, 2, 7}, target[1] = {11}, n_new = 6, V = cfg.vocab_size;
    int t1[6], t2[6];
    float *l1 = malloc((size_t)n_new * V * sizeof(float)), *l2 = malloc((size_t)n_new * V * sizeof(float));
    const int saved = graft_get_threads();
    for (int with_edit = 0; with_edit < 2; with_edit++) {
        graft_editor *e = NULL;
        if (with_edit) { /* the prompt's next token becomes 11: GRACE's hook fires on a team step */
            CHECK_OK(graft_editor_create(m, "grace", "{\"layer\": 1}", &e));
            if (!e) break;
            graft_edit_tok req = {.prompt = prompt, .n_prompt = 4, .target = target, .n_target = 1, .subject_last = -1};
            graft_edit_info info;
            graft_blob ch = {0};
            CHECK_OK(e->ops->apply(e, &req, &info, &ch));
            graft_blob_free(&ch);
            CHECK(info.reproduced);
        }
        graft_set_threads(1);
        decode(m, e, prompt, 4, n_new, t1, l1);
        graft_set_threads(2);
        decode(m, e, prompt, 4, n_new, t2, l2);
        CHECK(memcmp(t1, t2, sizeof t1) == 0);
        CHECK_MSG(memcmp(l1, l2, (size_t)n_new * V * sizeof(float)) == 0,
                  "decode logits on 2 threads differ from 1 (edit %d)", with_edit);
        if (with_edit)
            CHECK_MSG(t2[0] == target[0], "GRACE edit not followed on a team: %d, want %d", t2[0], target[0]);
        else
            CHECK_MSG(t2[0] != target[0], "the unedited model already gives the target");
        if (e) e->ops->free(e);
    }
    graft_set_threads(saved);
    free(l1), free(l2);
    graft_model_free(m);
}

int main(void) {
    test_seed(20261206);
    if (graft_get_threads() < 2) graft_set_threads(2); /* a team needs two */
    test_for();
    test_gemv(320, 416);
    test_gemv(512, 2600);
    test_sum_bands();
    test_attention();
    test_decode();
    return test_finish("test_team");
}
