/* bench_grace.c - GRACE on GPT-2-124M shapes (random weights):
 *   1. edit latency (n_iter 100, no early stop): training the value over the
 *      layers above the site only, against a full forward every step (the
 *      reference implementations' way), as a ratio measured in one run;
 *   2. lookup overhead of codebooks of 1k, 10k and 100k keys against the
 *      unedited forward of a 32-token prompt;
 * Each figure: median and best of 5 runs. Usage: bench_grace [--quick] */
#include "edit/editor.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    graft_set_threads(0);
    graft_config cfg;
    graft_config_preset("gpt2", &cfg);
    graft_model *m = NULL;
    if (graft_model_create_random(&cfg, 1, 0.02f, &m) != GRAFT_OK) {
        fprintf(stderr, "%s\n", graft_last_error());
        return 1;
    }
    int prompt[24], target[4];
    for (int i = 0; i < 24; i++) prompt[i] = (i * 7919 + 13) % cfg.vocab_size;
    for (int i = 0; i < 4; i++) target[i] = (i * 104729 + 7) % cfg.vocab_size;
    graft_edit_tok req = {prompt, 24, target, 4, -1};
    printf("GRACE on GPT-2-124M shapes (random weights), %d threads, GEMM %s, layer 8 (of 12), c_fc value\n",
           graft_get_threads(), graft_gemm_backend());

    /* 1. edit latency */
    int runs = quick ? 1 : RUNS;
    double fast[RUNS], full[RUNS], ratio[RUNS];
    for (int r = 0; r < runs; r++) {
        for (int mode = 0; mode < 2; mode++) {
            graft_grace_opts o;
            graft_grace_opts_default(&o);
            o.layer = 8;
            o.n_iter = quick ? 10 : 100;
            o.early_stop = 0;
            o.full_passes = mode;
            graft_editor *e = NULL;
            graft_grace_create(m, &o, &e);
            graft_edit_info info;
            graft_blob ch = {0};
            double t0 = now_ms();
            graft_status st = e->ops->apply(e, &req, &info, &ch);
            double t = now_ms() - t0;
            if (st != GRAFT_OK) fprintf(stderr, "%s\n", graft_last_error());
            (mode ? full : fast)[r] = t;
            graft_blob_free(&ch);
            e->ops->free(e);
        }
        ratio[r] = full[r] / fast[r];
    }
    double m1, b1, m2, b2, m3, b3;
    med_best(fast, runs, &m1, &b1);
    med_best(full, runs, &m2, &b2);
    med_best(ratio, runs, &m3, &b3);
    printf("edit latency, %d Adam steps on a 24+4-token edit:\n", quick ? 10 : 100);
    printf("  layers above the site only   median %8.1f ms  best %8.1f ms\n", m1, b1);
    printf("  full forward every step      median %8.1f ms  best %8.1f ms\n", m2, b2);
    printf("  speed-up (full / above-only) median %8.2fx  (per-run ratios; best %.2fx)\n", m3, ratio[runs - 1]);

    /* 2. lookup overhead: prompt of 32 tokens, keys far from any query */
    int n32 = 32, last = 31, ids[32];
    for (int i = 0; i < 32; i++) ids[i] = (i * 31 + 5) % cfg.vocab_size;
    graft_run *run = NULL;
    graft_run_create(m, 32, 1, 32, 0, &run);
    graft_run_set_batch(run, ids, &n32, 1, &last, 1);
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
