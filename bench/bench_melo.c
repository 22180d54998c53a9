/* bench_melo.c - MELO's cost:
 *   1. inference overhead at batch 1: greedy generation of 32 new tokens
 *      after a 32-token prompt, unedited against a MELO editor holding 1,000
 *      trained blocks (a) with the prompt outside every radius (router lookup
 *      only) and (b) routed to a block (lookup + rank-k LoRA on two layers at
 *      every token, the worst case). Runs interleave so drift hits all alike;
 *   2. per-batch edit time: a batch of 1 and of 4 edits, default training
 *      (until a 0.5 logit margin) and the official fixed 50 steps.
 * Each figure: median and best of 5 runs.
 *
 *   bench_melo [--model DIR] [--quick]
 *
 * Without --model: GPT-2-124M shapes, random weights (router at layer 8,
 * LoRA on 9 and 10). With --model: that model, and for part 2 the first
 * CounterFact edits of data/facts/edit_stream.json (run from the repository
 * root). */
#include "data/dataset.h"
#include "edit/editor.h"
#include "edit/eval.h"
#include "edit/melo.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 5

static double gen_ms(graft_model *m, graft_editor *e, const int *prompt, int n, int new_tokens) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = new_tokens;
    o.stop_at_eos = 0;
    int *out = NULL;
    size_t n_out = 0;
    double t0 = now_ms();
    graft_status st = graft_editor_generate(e, m, prompt, (size_t)n, &o, NULL, NULL, &out, &n_out);
    double t = now_ms() - t0;
    if (st != GRAFT_OK) fprintf(stderr, "%s\n", graft_last_error());
    free(out);
    return t;
}

static double batch_ms(graft_model *m, const char *opts, const graft_edit_tok *reqs, int n, int *iters) {
    graft_editor *e = NULL;
    if (graft_editor_create(m, "melo", opts, &e) != GRAFT_OK) {
        fprintf(stderr, "%s\n", graft_last_error());
        return -1;
    }
    graft_edit_info info;
    graft_blob ch = {0};
    double t0 = now_ms();
    graft_status st = n == 1 ? e->ops->apply(e, reqs, &info, &ch) : e->ops->apply_batch(e, reqs, n, &info, &ch);
    double t = now_ms() - t0;
    if (st != GRAFT_OK) fprintf(stderr, "%s\n", graft_last_error());
    *iters = info.iterations;
    graft_blob_free(&ch);
    e->ops->free(e);
    return t;
}

int main(int argc, char **argv) {
    int quick = 0;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else {
            fprintf(stderr, "usage: bench_melo [--model DIR] [--quick]\n");
            return 2;
        }
    }
    graft_set_threads(0);
    graft_model *m = NULL;
    const char *base_opts = "{}";
    if (model) {
        if (graft_model_load(model, &m) != GRAFT_OK) {
            fprintf(stderr, "%s\n", graft_last_error());
            return 1;
        }
    } else {
        graft_config cfg;
        graft_config_preset("gpt2", &cfg);
        if (graft_model_create_random(&cfg, 1, 0.02f, &m) != GRAFT_OK) {
            fprintf(stderr, "%s\n", graft_last_error());
            return 1;
        }
        base_opts = "{\"layer\": 8}";
    }
    int runs = quick ? 2 : RUNS, V = m->cfg.vocab_size, np = m->cfg.n_ctx < 64 ? m->cfg.n_ctx / 2 : 32;
    int new_tokens = np, prompt[32];
    for (int i = 0; i < np; i++) prompt[i] = (i * 7919 + 13) % V;

    /* 1. inference overhead */
    char far_opts[128], near_opts[128];
    snprintf(far_opts, sizeof far_opts, "%.*s%s\"init_radius\": 1e-3}", (int)strlen(base_opts) - 1, base_opts,
             strlen(base_opts) > 2 ? ", " : "");
    snprintf(near_opts, sizeof near_opts, "%.*s%s\"init_radius\": 1e9}", (int)strlen(base_opts) - 1, base_opts,
             strlen(base_opts) > 2 ? ", " : "");
    graft_editor *far = NULL, *near = NULL;
    if (graft_editor_create(m, "melo", far_opts, &far) != GRAFT_OK || graft_editor_create(m, "melo", near_opts, &near) != GRAFT_OK ||
        graft_melo_add_random(far, 1000, 10.0f, 7) != GRAFT_OK || graft_melo_add_random(near, 1000, 10.0f, 7) != GRAFT_OK) {
        fprintf(stderr, "%s\n", graft_last_error());
        return 1;
    }
    graft_melo_stats ms;
    graft_melo_get_stats(far, &ms);
    graft_melo_opts mo;
    graft_melo_get_opts(far, &mo);
    printf("MELO on %s, %d threads, GEMM %s; router at layer %d (query %d floats), LoRA rank %d on %d layers\n",
           model ? model : "GPT-2-124M shapes (random weights)", graft_get_threads(), graft_gemm_backend(), ms.layer,
           ms.query_dim, mo.rank, mo.n_lora);
    gen_ms(m, NULL, prompt, np, 4); /* warm-up */
    double t0[RUNS], t1[RUNS], t2[RUNS];
    for (int r = 0; r < runs; r++) {
        t0[r] = gen_ms(m, NULL, prompt, np, new_tokens);
        t1[r] = gen_ms(m, far, prompt, np, new_tokens);
        t2[r] = gen_ms(m, near, prompt, np, new_tokens);
    }
    double m0, b0, m1, b1, m2, b2;
    med_best(t0, runs, &m0, &b0);
    med_best(t1, runs, &m1, &b1);
    med_best(t2, runs, &m2, &b2);
    printf("greedy generation, %d-token prompt + %d new tokens, batch 1 (median / best of %d, ms):\n", np, new_tokens, runs);
    printf("  unedited                                 %8.2f / %8.2f\n", m0, b0);
    printf("  1,000 blocks, prompt outside every radius %8.2f / %8.2f   (%+.1f%%)\n", m1, b1, 100.0 * (m1 - m0) / m0);
    printf("  1,000 blocks, prompt routed to a block    %8.2f / %8.2f   (%+.1f%%)\n", m2, b2, 100.0 * (m2 - m0) / m0);
    far->ops->free(far), near->ops->free(near);

    /* 2. per-batch edit time */
    graft_eval_item items[4];
    graft_edit_tok reqs[4];
    int tg[4][4];
    memset(items, 0, sizeof items);
    graft_dataset ds;
    int have = 0;
    if (model && graft_dataset_load("data/facts/edit_stream.json", "auto", 4, &ds) == GRAFT_OK) {
        for (int i = 0; i < 4 && i < ds.n; i++)
            if (graft_encode_pair(graft_model_tokenizer(m), ds.req[i].prompt, ds.req[i].target, &items[i]) == GRAFT_OK) have++;
        graft_dataset_free(&ds);
    }
    for (int i = 0; i < 4; i++) {
        if (i < have) {
            reqs[i] = (graft_edit_tok){items[i].prompt, items[i].n_prompt, items[i].target, items[i].n_target, -1};
        } else {
            for (int k = 0; k < 4; k++) tg[i][k] = (i * 131 + k * 104729 + 7) % V;
            reqs[i] = (graft_edit_tok){prompt + i, np - 4, tg[i], 4, -1};
        }
    }
    char fixed[160];
    snprintf(fixed, sizeof fixed, "%.*s%s\"train\": \"fixed\", \"n_iter\": 50}", (int)strlen(base_opts) - 1, base_opts,
             strlen(base_opts) > 2 ? ", " : "");
    const char *what[2] = {"default (until a 0.5 margin)", "fixed 50 steps (official)"};
    const char *optv[2] = {base_opts, fixed};
    printf("per-batch edit time (median / best of %d, ms; steps taken):\n", runs);
    for (int w = 0; w < 2; w++)
        for (int bsz = 1; bsz <= 4; bsz += 3) {
            double t[RUNS];
            int it = 0;
            for (int r = 0; r < runs; r++) t[r] = batch_ms(m, optv[w], reqs, bsz, &it);
            double tm, tb;
            med_best(t, runs, &tm, &tb);
            printf("  %-30s batch %d  %8.1f / %8.1f   (%d steps)\n", what[w], bsz, tm, tb, it);
        }
    for (int i = 0; i < 4; i++) graft_eval_item_free(&items[i]);
    graft_model_free(m);
    return 0;
}
