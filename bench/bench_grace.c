/* bench_grace.c - GRACE's cost:
 *   1. per value-training step, against one forward of the layers above the
 *      site (the unit a step cannot beat by much: a step is that forward plus
 *      a backward of activation gradients only): the default replacement
 *      (upto_key: rows [0, t], every row recomputed), replace_last (a suffix
 *      pass: only rows from the key on), and a full forward every step (the
 *      reference implementations' way). A step's time is (time of N steps -
 *      time of 0 steps) / N in the fixed loop, so the unedited pass, codebook
 *      work and allocation are not counted in it;
 *   2. lookup overhead of codebooks of 1k, 10k and 100k keys against the
 *      unedited forward of a 32-token prompt (GPT-2 shapes only).
 * Each figure: median and best of 5 runs.
 *
 *   bench_grace [--model DIR [--layer L]] [--quick]
 *
 * Without --model: GPT-2-124M shapes, random weights, a 24+4-token edit at
 * layer 8 (of 12). With --model: the first CounterFact edit of
 * data/facts/edit_stream.json, tokenised as graft edit does (run from the
 * repository root). */
#include "data/dataset.h"
#include "edit/editor.h"
#include "edit/eval.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

/* One fixed-loop edit of n_iter steps (no early stop) in ms. */
static double edit_ms(graft_model *m, const graft_edit_tok *req, int layer, grace_replace rep, int full, int n_iter) {
    graft_grace_opts o;
    graft_grace_opts_default(&o);
    o.layer = layer;
    o.train = GRACE_TRAIN_FIXED;
    o.n_iter = n_iter;
    o.early_stop = 0;
    o.replace = rep;
    o.full_passes = full;
    graft_editor *e = NULL;
    if (graft_grace_create(m, &o, &e) != GRAFT_OK) return -1;
    graft_edit_info info;
    graft_blob ch = {0};
    double t0 = now_ms();
    graft_status st = e->ops->apply(e, req, &info, &ch);
    double t = now_ms() - t0;
    if (st != GRAFT_OK) fprintf(stderr, "%s\n", graft_last_error());
    graft_blob_free(&ch);
    e->ops->free(e);
    return t;
}

int main(int argc, char **argv) {
    int quick = 0, layer = -1;
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc) layer = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_grace [--model DIR [--layer L]] [--quick]\n");
            return 2;
        }
    }
    graft_set_threads(0);
    graft_model *m = NULL;
    graft_config cfg;
    graft_eval_item item = {0};
    graft_edit_tok req;
    int prompt[24], target[4];
    if (model) {
        graft_dataset ds;
        if (graft_model_load(model, &m) != GRAFT_OK || graft_dataset_load("data/facts/edit_stream.json", "auto", 1, &ds) != GRAFT_OK ||
            graft_encode_pair(graft_model_tokenizer(m), ds.req[0].prompt, ds.req[0].target, &item) != GRAFT_OK) {
            fprintf(stderr, "%s\n", graft_last_error());
            return 1;
        }
        graft_dataset_free(&ds);
        cfg = m->cfg;
        req = (graft_edit_tok){item.prompt, item.n_prompt, item.target, item.n_target, -1};
    } else {
        graft_config_preset("gpt2", &cfg);
        if (graft_model_create_random(&cfg, 1, 0.02f, &m) != GRAFT_OK) {
            fprintf(stderr, "%s\n", graft_last_error());
            return 1;
        }
        for (int i = 0; i < 24; i++) prompt[i] = (i * 7919 + 13) % cfg.vocab_size;
        for (int i = 0; i < 4; i++) target[i] = (i * 104729 + 7) % cfg.vocab_size;
        req = (graft_edit_tok){prompt, 24, target, 4, -1};
        if (layer < 0) layer = 8;
    }
    if (layer < 0) { /* the editor's default */
        graft_editor *e = NULL;
        graft_grace_create(m, NULL, &e);
        graft_grace_stats st;
        graft_grace_get_stats(e, &st);
        layer = st.layer;
        e->ops->free(e);
    }
    graft_site ks, vs;
    graft_grace_sites(&cfg, &ks, &vs);
    printf("GRACE on %s, %d threads, GEMM %s, layer %d (of %d), value at %s; edit of %d + %d tokens\n",
           model ? model : "GPT-2-124M shapes (random weights)", graft_get_threads(), graft_gemm_backend(), layer,
           cfg.n_layer, graft_site_name(vs), req.n_prompt, req.n_target);

    /* 1. one forward of the layers above the site, on the edit's batch */
    int runs = quick ? 1 : RUNS, T = req.n_prompt + req.n_target - 1, rows[64];
    int *ids = malloc((size_t)T * sizeof(int));
    memcpy(ids, req.prompt, (size_t)req.n_prompt * sizeof(int));
    memcpy(ids + req.n_prompt, req.target, (size_t)(req.n_target - 1) * sizeof(int));
    for (int i = 0; i < req.n_target; i++) rows[i] = req.n_prompt - 1 + i;
    graft_run *run = NULL;
    graft_run_create(m, T, T, T, 1, &run);
    graft_run_set_batch(run, ids, &T, 1, rows, req.n_target);
    graft_run_forward(run);
    double fa[RUNS];
    for (int r = 0; r < runs; r++) {
        double t0 = now_ms();
        for (int k = 0; k < 20; k++) graft_run_forward_from(run, layer, vs);
        fa[r] = (now_ms() - t0) / 20;
    }
    double fam, fab;
    med_best(fa, runs, &fam, &fab);
    graft_run_free(run);
    free(ids);

    int steps = quick ? 10 : 100;
    printf("per value-training step (fixed loop, %d steps minus 0 steps, median / best of %d, ms), against one forward\n"
           "of the layers above the site (%.3f / %.3f ms):\n", steps, runs, fam, fab);
    const char *names[3] = {"upto_key (default): every row", "last: suffix pass from the key", "full forward every step"};
    const grace_replace reps[3] = {GRACE_REPLACE_UPTO_KEY, GRACE_REPLACE_LAST, GRACE_REPLACE_UPTO_KEY};
    for (int k = 0; k < 3; k++) {
        double per[RUNS];
        for (int r = 0; r < runs; r++) {
            double t0 = edit_ms(m, &req, layer, reps[k], k == 2, 0), tn = edit_ms(m, &req, layer, reps[k], k == 2, steps);
            per[r] = (tn - t0) / steps;
        }
        double pm, pb;
        med_best(per, runs, &pm, &pb);
        printf("  %-32s %8.3f / %8.3f   (%.2fx the forward above)\n", names[k], pm, pb, pm / fam);
    }
    graft_eval_item_free(&item);
    if (model) {
        graft_model_free(m);
        return 0;
    }

    /* 2. lookup overhead: prompt of 32 tokens, keys far from any query */
    int n32 = 32, last = 31, ids32[32];
    for (int i = 0; i < 32; i++) ids32[i] = (i * 31 + 5) % cfg.vocab_size;
    run = NULL;
    graft_run_create(m, 32, 1, 32, 0, &run);
    graft_run_set_batch(run, ids32, &n32, 1, &last, 1);
    const int sizes[3] = {1000, 10000, 100000};
    printf("lookup overhead, forward of a 32-token prompt (median / best ms, overhead of medians):\n");
    double base[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ms();
        graft_run_forward(run);
        base[r] = now_ms() - t0;
    }
    double bm, bb;
    med_best(base, RUNS, &bm, &bb);
    printf("  unedited                 %8.2f / %8.2f\n", bm, bb);
    for (int k = 0; k < (quick ? 1 : 3); k++) {
        graft_grace_opts o;
        graft_grace_opts_default(&o);
        o.layer = 8;
        graft_editor *e = NULL;
        graft_grace_create(m, &o, &e);
        graft_grace_add_random_rows(e, sizes[k], 10.0f, 1e-3f, 99);
        e->ops->attach(e, run);
        e->ops->set_keys(e, &last, 1);
        double t[RUNS], b2v[RUNS];
        for (int r = 0; r < RUNS; r++) {
            /* interleave with unedited passes so drift hits both alike */
            e->ops->detach(e, run);
            double t0 = now_ms();
            graft_run_forward(run);
            b2v[r] = now_ms() - t0;
            e->ops->attach(e, run);
            t0 = now_ms();
            graft_run_forward(run);
            t[r] = now_ms() - t0;
        }
        double tm, tb, bm2, bb2;
        med_best(t, RUNS, &tm, &tb);
        med_best(b2v, RUNS, &bm2, &bb2);
        printf("  %6d keys               %8.2f / %8.2f   (+%.1f%% vs the interleaved unedited %.2f)\n", sizes[k], tm, tb,
               100.0 * (tm - bm2) / bm2, bm2);
        e->ops->detach(e, run);
        e->ops->free(e);
    }
    graft_run_free(run);
    graft_model_free(m);
    return 0;
}
