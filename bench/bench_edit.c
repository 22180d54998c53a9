/* bench_edit.c - per-edit time of every editing method, and the throughput of
 * the key statistics against a plain forward.
 *
 *   bench_edit [--model DIR | --shape gpt2] [--tokenizer PATH] [--stats FILE]
 *              [--methods grace,rome,...] [--runs N] [--data FILE] [--corpus FILE]
 *              [--opts METHOD=JSON ...] [--stats-tokens N]
 *
 * Per method, on a fresh editor over the same model: the first edit is timed
 * apart (ROME/MEMIT/EMMET generate their context templates and factor the key
 * covariance there, once per stream), then N further edits of the CounterFact
 * stream are applied in sequence and each is timed: median and best. Every
 * method edits the same requests; after a method, the editor's reset puts the
 * base weights back.
 *
 * Statistics: `graft stats`'s accumulation over the first --stats-tokens
 * tokens of the corpus, in tokens/s, against a forward over the same windows
 * through the same layers without the accumulation hooks, and against a
 * forward through the whole model; each median and best of N.
 *
 * --shape gpt2 builds GPT-2-124M shapes with random weights (seed 1) and the
 * real GPT-2 tokenizer (tests/data/gpt2-tokenizer by default); with random
 * weights the v* loss never reaches ROME's early-stop threshold, so every v*
 * runs its full step count (the worst case). Run from the repository root. */
#include "data/dataset.h"
#include "edit/editor.h"
#include "edit/eval.h"
#include "edit/locate.h"
#include "edit/stats.h"
#include "engine.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BENCH_LAYERS 256

static int fail(const char *what) {
    fprintf(stderr, "bench_edit: %s: %s\n", what, graft_last_error());
    return 1;
}

/* One timed forward pass over every window of `ids` through model mm (which
 * may be a shallow copy with fewer layers), hooks as installed on r. */
static graft_status forward_windows(graft_run *r, const int *ids, int n_tok, int window) {
    for (int at = 0; at < n_tok; at += window) {
        int len = n_tok - at < window ? n_tok - at : window, last = len - 1;
        GRAFT_TRY(graft_run_set_batch(r, ids + at, &len, 1, &last, 1));
        GRAFT_TRY(graft_run_forward(r));
    }
    return GRAFT_OK;
}

int main(int argc, char **argv) {
    const char *model = NULL, *shape = NULL, *tokp = NULL, *stats = NULL, *data = "data/facts/edit_stream.json";
    const char *methods = "grace,rome,memit,emmet,ft,ftl,ewc", *corpus = "data/facts/heldout_text.txt";
    const char *mopts[16][2];
    int n_mopts = 0, runs = 5;
    long stats_tokens = 8192;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = v, i++;
        else if (!strcmp(a, "--shape") && v) shape = v, i++;
        else if (!strcmp(a, "--tokenizer") && v) tokp = v, i++;
        else if (!strcmp(a, "--stats") && v) stats = v, i++;
        else if (!strcmp(a, "--methods") && v) methods = v, i++;
        else if (!strcmp(a, "--runs") && v) runs = atoi(v), i++;
        else if (!strcmp(a, "--data") && v) data = v, i++;
        else if (!strcmp(a, "--corpus") && v) corpus = v, i++;
        else if (!strcmp(a, "--stats-tokens") && v) stats_tokens = atol(v), i++;
        else if (!strcmp(a, "--opts") && v && strchr(v, '=') && n_mopts < 16) {
            mopts[n_mopts][0] = strndup(v, (size_t)(strchr(v, '=') - v));
            mopts[n_mopts++][1] = strchr(v, '=') + 1;
            i++;
        } else {
            fprintf(stderr, "usage: bench_edit [--model DIR | --shape gpt2] [--tokenizer PATH] [--stats FILE] "
                            "[--methods LIST] [--runs N] [--data FILE] [--corpus FILE] [--opts METHOD=JSON] "
                            "[--stats-tokens N]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 63) runs = 5;
    graft_set_threads(0);
    graft_model *m = NULL;
    graft_tokenizer *tok = NULL;
    if (shape) {
        graft_config cfg;
        if (graft_config_preset(shape, &cfg) != GRAFT_OK || graft_model_create_random(&cfg, 1, 0.02f, &m) != GRAFT_OK)
            return fail(shape);
        if (graft_tokenizer_load(tokp ? tokp : "tests/data/gpt2-tokenizer", &tok) != GRAFT_OK) return fail("tokenizer");
        graft_model_set_tokenizer(m, tok);
    } else {
        if (graft_model_load(model ? model : "models/factbase", &m) != GRAFT_OK) return fail("model");
        if (tokp) {
            if (graft_tokenizer_load(tokp, &tok) != GRAFT_OK) return fail("tokenizer");
            graft_model_set_tokenizer(m, tok);
        }
    }
    tok = (graft_tokenizer *)graft_model_tokenizer(m);
    if (!tok) return fail("no tokenizer beside the model (--tokenizer)");
    graft_model_info info;
    graft_model_get_info(m, &info);
    printf("model: %s (%d layers, d_model %d, %.1f M parameters), %d threads, GEMM %s\n",
           shape ? shape : model ? model : "models/factbase", info.n_layer, info.d_model, info.n_params / 1e6,
           graft_get_threads(), graft_gemm_backend());

    /* the requests: the stream's first runs + 1 */
    graft_dataset ds;
    if (graft_dataset_load(data, "auto", runs + 1, &ds) != GRAFT_OK) return fail(data);
    int n_req = ds.n;
    graft_eval_item *items = calloc((size_t)n_req, sizeof *items);
    graft_edit_tok *reqs = calloc((size_t)n_req, sizeof *reqs);
    for (int i = 0; i < n_req; i++) {
        if (graft_encode_pair(tok, ds.req[i].prompt, ds.req[i].target, &items[i]) != GRAFT_OK) return fail("encode");
        reqs[i] = (graft_edit_tok){items[i].prompt, items[i].n_prompt, items[i].target, items[i].n_target,
                                   graft_subject_last(tok, ds.req[i].prompt, ds.req[i].subject)};
    }
    printf("\nper-edit time, %d sequential CounterFact edits after the first (%s), ms:\n", n_req - 1, data);
    printf("| method | first edit | median | best | edits reproduced |\n|---|---:|---:|---:|---:|\n");
    char *list = strdup(methods);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        /* default options, plus --stats for the weight editors, plus --opts */
        char json[1024] = "{}";
        for (int k = 0; k < n_mopts; k++)
            if (!strcmp(mopts[k][0], name)) snprintf(json, sizeof json, "%s", mopts[k][1]);
        if (stats && (!strcmp(name, "rome") || !strcmp(name, "memit") || !strcmp(name, "emmet")) && !strstr(json, "\"stats\"")) {
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%s", json);
            snprintf(json, sizeof json, "{\"stats\": \"%.400s\"%s%.500s", stats, strcmp(tmp, "{}") ? ", " : "",
                     strcmp(tmp, "{}") ? tmp + 1 : "}");
        }
        graft_editor *e = NULL;
        if (graft_editor_create(m, name, json, &e) != GRAFT_OK) return fail(name);
        double t[64], first = 0;
        int ok = 0;
        for (int i = 0; i < n_req; i++) {
            graft_edit_info ei;
            graft_blob ch = {0};
            double t0 = now_ms();
            if (e->ops->apply(e, &reqs[i], &ei, &ch) != GRAFT_OK) return fail(name);
            double dt = now_ms() - t0;
            graft_blob_free(&ch);
            if (i == 0) first = dt;
            else t[i - 1] = dt, ok += ei.reproduced != 0;
        }
        double md, bs;
        med_best(t, n_req - 1, &md, &bs);
        printf("| %s | %.1f | %.1f | %.1f | %d/%d |\n", name, first, md, bs, ok, n_req - 1);
        fflush(stdout);
        if (e->ops->reset) e->ops->reset(e);
        e->ops->free(e);
    }
    free(list);

    /* statistics throughput */
    if (stats_tokens > 0) {
        graft_mapped_file cf;
        if (graft_map_file(corpus, &cf) != GRAFT_OK) return fail(corpus);
        int *ids = NULL;
        size_t nt = 0;
        if (graft_tokenize(tok, (const char *)cf.data, cf.size, &ids, &nt) != GRAFT_OK) return fail("tokenize corpus");
        graft_unmap_file(&cf);
        if ((long)nt > stats_tokens) nt = (size_t)stats_tokens;
        /* graft stats reads a file: write the cut corpus back as text (the
         * tokenizers here re-tokenize their own output to the same ids) */
        char out[] = "/tmp/graft-bench-stats-XXXXXX", cpath[] = "/tmp/graft-bench-corpus-XXXXXX";
        int fd = mkstemp(out), fd2 = mkstemp(cpath);
        if (fd < 0 || fd2 < 0) return fail("mkstemp");
        close(fd);
        char *text = NULL;
        size_t tl = 0;
        if (graft_detokenize(tok, ids, nt, &text, &tl) != GRAFT_OK) return fail("detokenize");
        if (write(fd2, text, tl) != (ssize_t)tl) return fail("write corpus");
        close(fd2);
        free(text);
        graft_stats_opts so;
        graft_stats_opts_default(&so);
        so.corpus = cpath;
        so.out = out;
        so.progress = 0;
        so.checkpoint_every_s = 1e9;
        int window = info.n_ctx, lay[MAX_BENCH_LAYERS], nl = graft_wedit_stats_layers(&m->cfg, lay);
        double t_stats[64], t_same[64], t_full[64];
        graft_stats_result res = {0};
        for (int r = 0; r < runs; r++) {
            double t0 = now_ms();
            if (graft_stats_compute(m, &so, &res) != GRAFT_OK) return fail("stats");
            t_stats[r] = now_ms() - t0;
        }
        /* the same windows through the layers graft stats runs (up to its
         * highest layer: a shallow copy of the model), with no hooks, and
         * through the whole model */
        graft_model shallow = *m;
        shallow.cfg.n_layer = lay[nl - 1] + 1;
        for (int pass = 0; pass < 2; pass++) {
            graft_run *r = NULL;
            if (graft_run_create(pass ? m : &shallow, window, 1, window, 0, &r) != GRAFT_OK) return fail("run");
            for (int k = 0; k < runs; k++) {
                double t0 = now_ms();
                if (forward_windows(r, ids, (int)nt, window) != GRAFT_OK) return fail("forward");
                (pass ? t_full : t_same)[k] = now_ms() - t0;
            }
            graft_run_free(r);
        }
        double ms, bs, mf, bf, mw, bw;
        med_best(t_stats, runs, &ms, &bs);
        med_best(t_same, runs, &mf, &bf);
        med_best(t_full, runs, &mw, &bw);
        double n = (double)res.tokens_run;
        printf("\nkey statistics over %s (%.0f tokens, windows of %d), tokens/s (median / best of %d):\n", corpus, n, window,
               runs);
        printf("| | median | best | time vs the plain forward of the same layers |\n|---|---:|---:|---:|\n");
        printf("| graft stats (layers %d-%d, fp64 sums) | %.0f | %.0f | %.2fx |\n", lay[0], lay[nl - 1], n / ms * 1e3,
               n / bs * 1e3, ms / mf);
        printf("| plain forward, layers 0-%d | %.0f | %.0f | 1 |\n", lay[nl - 1], n / mf * 1e3, n / bf * 1e3);
        printf("| plain forward, all %d layers | %.0f | %.0f | %.2fx |\n", info.n_layer, n / mw * 1e3, n / bw * 1e3, mw / mf);
        unlink(out);
        unlink(cpath);
        free(ids);
    }
    for (int i = 0; i < n_req; i++) graft_eval_item_free(&items[i]);
    free(items), free(reqs);
    graft_dataset_free(&ds);
    graft_model_free(m);
    return 0;
}
