/* generate.c - teacher-forced scoring and KV-cached generation, the two ways
 * graft reads a model's behaviour. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- scoring */

/* Score targets (first_target, last] of ids[begin, end): the window's rows
 * predict the next token; only rows whose target is new are counted. */
static graft_status score_window(graft_run *r, const int *ids, int begin, int end, int first_new, double *sum,
                                 size_t *count) {
    int len = end - begin;
    GRAFT_TRY(graft_run_set_batch(r, ids + begin, &len, 1, NULL, 0));
    GRAFT_TRY(graft_run_forward(r));
    int *targets = malloc((size_t)len * sizeof(int));
    float *row_loss = malloc((size_t)len * sizeof(float));
    if (!targets || !row_loss) {
        free(targets);
        free(row_loss);
        return graft_fail(GRAFT_ERR_NOMEM, "score: out of memory");
    }
    for (int i = 0; i < len; i++) {
        int t = begin + i + 1; /* position of the token row i predicts */
        targets[i] = (t < end && t >= first_new) ? ids[t] : -1;
    }
    double unused;
    graft_status st = graft_run_loss(r, targets, NULL, &unused, row_loss);
    if (st == GRAFT_OK)
        for (int i = 0; i < len; i++)
            if (targets[i] >= 0) {
                *sum += row_loss[i];
                (*count)++;
            }
    free(targets);
    free(row_loss);
    return st;
}

graft_status graft_score_ids(graft_model *m, const int *ids, size_t n, int stride, double *mean_nll,
                             size_t *n_scored) {
    *mean_nll = 0.0;
    *n_scored = 0;
    if (n < 2) return graft_fail(GRAFT_ERR_INVALID, "score: need at least 2 tokens, got %zu", n);
    int W = m->cfg.n_ctx;
    if (stride <= 0) stride = W / 2 > 0 ? W / 2 : 1;
    if (stride > W) stride = W;
    int win = n < (size_t)W ? (int)n : W;
    graft_run *r = NULL;
    GRAFT_TRY(graft_run_create(m, win, win, win, 0, &r));
    double sum = 0.0;
    size_t count = 0;
    graft_status st = GRAFT_OK;
    /* Sliding windows (the usual strided perplexity): each window after the
     * first sees up to W - stride tokens of context, and every token from
     * position 1 on is scored exactly once. */
    size_t begin = 0, next_target = 1;
    for (;;) {
        size_t end = begin + (size_t)W < n ? begin + (size_t)W : n;
        st = score_window(r, ids, (int)begin, (int)end, (int)next_target, &sum, &count);
        if (st != GRAFT_OK || end == n) break;
        next_target = end;
        begin += (size_t)stride;
    }
    graft_run_free(r);
    if (st != GRAFT_OK) return st;
    *mean_nll = count ? sum / (double)count : 0.0;
    *n_scored = count;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- sampling */

void graft_gen_opts_default(graft_gen_opts *o) {
    o->max_new_tokens = 64;
    o->temperature = 0.0f;
    o->top_p = 1.0f;
    o->seed = 42;
    o->stop_at_eos = 1;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

/* Argmax; ties go to the lowest id, as torch.argmax does, and a NaN never
 * wins (a NaN in x[0] gives 0). Sixteen running maxima that the compiler
 * turns into vector max instructions, then the first index holding the
 * largest: the one-at-a-time loop took 36 us over GPT-2's 50257 logits, part
 * of every decode step, against 11. */
static int argmax(const float *x, int n) {
    if (n <= 1 || isnan(x[0])) return 0;
    float m[16];
    for (int j = 0; j < 16; j++) m[j] = x[0];
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float mx = m[0];
    for (int j = 1; j < 16; j++) mx = m[j] > mx ? m[j] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

typedef struct {
    float p;
    int id;
} prob_id;

static int by_prob_desc(const void *a, const void *b) {
    float pa = ((const prob_id *)a)->p, pb = ((const prob_id *)b)->p;
    return (pa < pb) - (pa > pb);
}

/* Sample from softmax(logits / temp), restricted to the smallest set of top
 * tokens whose mass reaches top_p. `scratch` holds V entries. */
static int sample(const float *logits, int V, float temp, float top_p, uint64_t *rng, prob_id *scratch) {
    float mx = logits[argmax(logits, V)];
    double z = 0.0;
    for (int i = 0; i < V; i++) {
        scratch[i].p = expf((logits[i] - mx) / temp);
        scratch[i].id = i;
        z += scratch[i].p;
    }
    int n = V;
    if (top_p < 1.0f) {
        qsort(scratch, (size_t)V, sizeof *scratch, by_prob_desc);
        double acc = 0.0;
        for (n = 0; n < V; n++) {
            acc += scratch[n].p / z;
            if (acc >= top_p) {
                n++;
                break;
            }
        }
        if (n > V) n = V;
        z = 0.0;
        for (int i = 0; i < n; i++) z += scratch[i].p;
    }
    double u = uniform01(rng) * z, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += scratch[i].p;
        if (u < acc) return scratch[i].id;
    }
    return scratch[n - 1].id;
}

/* ---------------------------------------------------------------- generation */

/* One forward of a generation, between the caller's before/after calls. */
static graft_status step(graft_run *r, int i, const graft_step_hooks *h, void *user) {
    graft_status st = h && h->before ? h->before(user, r, i) : GRAFT_OK;
    if (st == GRAFT_OK) st = graft_run_forward(r);
    if (h && h->after) h->after(user, r, i);
    return st;
}

graft_status graft_generate_ids(graft_model *m, const int *prompt, size_t n, const graft_gen_opts *opts,
                                graft_token_cb cb, void *user, int **out, size_t *n_out) {
    return graft_generate_run(m, prompt, n, opts, cb, user, NULL, NULL, out, n_out);
}

graft_status graft_generate_run(graft_model *m, const int *prompt, size_t n, const graft_gen_opts *opts,
                                graft_token_cb cb, void *user, const graft_step_hooks *hooks, void *step_user,
                                int **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    graft_gen_opts o;
    if (opts)
        o = *opts;
    else
        graft_gen_opts_default(&o);
    if (n == 0) return graft_fail(GRAFT_ERR_INVALID, "generate: the prompt is empty (give at least one token, e.g. BOS)");
    if (o.temperature < 0.0f || !(o.top_p > 0.0f && o.top_p <= 1.0f) || o.max_new_tokens < 0)
        return graft_fail(GRAFT_ERR_INVALID, "generate: need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 0");
    const graft_config *cfg = &m->cfg;
    if (n > (size_t)cfg->n_ctx)
        return graft_fail(GRAFT_ERR_RANGE, "generate: the prompt has %zu tokens; the model's context is %d", n, cfg->n_ctx);

    size_t want = n + (size_t)o.max_new_tokens;
    int ctx = want < (size_t)cfg->n_ctx ? (int)want : cfg->n_ctx;
    graft_kv kv;
    GRAFT_TRY(graft_kv_create(cfg, ctx, &kv));
    graft_run *r = NULL;
    int *gen = malloc(((size_t)o.max_new_tokens + 1) * sizeof(int));
    prob_id *scratch = o.temperature > 0.0f ? malloc((size_t)cfg->vocab_size * sizeof *scratch) : NULL;
    graft_status st = GRAFT_OK;
    if (!gen || (o.temperature > 0.0f && !scratch))
        st = graft_fail(GRAFT_ERR_NOMEM, "generate: out of memory");
    if (st == GRAFT_OK) st = graft_run_create(m, (int)n, 1, (int)n, 0, &r);
    size_t made = 0;
    if (st == GRAFT_OK) {
        r->kv = &kv;
        uint64_t rng = o.seed;
        int bos_stops = m->format && !strcmp(m->format, "llama2c");
        int len = (int)n, last = len - 1;
        st = graft_run_set_batch(r, prompt, &len, 1, &last, 1);
        if (st == GRAFT_OK) st = step(r, 0, hooks, step_user);
        while (st == GRAFT_OK && made < (size_t)o.max_new_tokens) {
            int id = o.temperature == 0.0f ? argmax(r->logits, cfg->vocab_size)
                                           : sample(r->logits, cfg->vocab_size, o.temperature, o.top_p, &rng, scratch);
            /* llama2.c's run.c also ends a story at BOS, which delimits its training texts. */
            if (o.stop_at_eos && (id == cfg->eos_id || (bos_stops && id == cfg->bos_id))) break;
            gen[made++] = id;
            if (cb && cb(user, id)) break;
            if (kv.len >= kv.n_ctx) break; /* context full */
            if (made == (size_t)o.max_new_tokens) break; /* no logits needed past the last token */
            int one = 1, row = 0;
            st = graft_run_set_batch(r, &id, &one, 1, &row, 1);
            if (st == GRAFT_OK) st = step(r, (int)made, hooks, step_user);
        }
    }
    graft_run_free(r);
    graft_kv_free(&kv);
    free(scratch);
    if (st != GRAFT_OK) {
        free(gen);
        return st;
    }
    *out = gen;
    *n_out = made;
    return GRAFT_OK;
}
