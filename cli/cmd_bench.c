/* cmd_bench.c - graft bench: the speed and memory of the engine on a model or
 * on random weights of a named shape. Every figure is the median and the best
 * of several runs, because these machines are noisy (steal time). */
#include "cli.h"
#include "engine.h"
#include "kernels.h"
#include "model/save.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out) {
    fputs("usage: graft bench [-m MODEL | --shape NAME] [--runs N] [--threads N] [--prefill T]\n"
          "                   [--batch B] [--seq T] [--decode N] [--no-step] [--json] [--dtype D] [--write DIR]\n"
          "Measures, median and best of N runs (default 5):\n"
          "  prefill forward, batch 1 x T tokens (default 256)  -> ms per token\n"
          "  forward + backward with all parameter gradients, B x T (default 4 x 64) -> ms per step\n"
          "  KV-cached greedy decode of N tokens (default 64) at batch 1 -> tokens per second\n"
          "  and the peak resident memory of the process.\n"
          "  --shape NAME   random weights: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl (1.5B), gpt2-tiny, llama-tiny\n"
          "  --dtype D      with --shape: f32 (default), f16 or bf16; the random model is written to a\n"
          "                 temporary folder in that dtype and loaded from it, weights used as stored\n"
          "  --write DIR    with --shape: write the random model to DIR as an HF folder (in --dtype) and\n"
          "                 stop; for the peers' benchmarks (graft export --gguf) and for -m DIR runs\n"
          "  --no-step      skip the forward+backward step (it needs a second copy of the weights for gradients)\n",
          out);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and best (smallest) of n samples; sorts them. */
static void summarize(double *v, int n, double *median, double *best) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *best = v[0];
    *median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill_ids(int *ids, int n, int V, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int)((seed >> 33) % (uint64_t)V);
    }
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* Write *m as an HF folder in dtype to a temporary folder and load it back,
 * so that the weights are used as a checkpoint of that dtype is (mapped, as
 * stored). The folder is removed at once: the mapping outlives the names. */
static graft_status reload_as(graft_model **m, graft_dtype dtype) {
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/graft-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return graft_fail(GRAFT_ERR_IO, "%s: cannot create a temporary folder: %s", dir, strerror(errno));
    rmdir(dir); /* graft_model_save_hf creates it */
    graft_status st = graft_model_save_hf(*m, dir, dtype);
    graft_model *loaded = NULL;
    if (st == GRAFT_OK) st = graft_model_load(dir, &loaded);
    static const char *const files[] = {"model.safetensors", "config.json", "generation_config.json", NULL};
    for (int i = 0; files[i]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    if (st != GRAFT_OK) return st;
    graft_model_free(*m);
    *m = loaded;
    return GRAFT_OK;
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"shape", required_argument, 0, 'S'},   {"runs", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"prefill", required_argument, 0, 'p'}, {"batch", required_argument, 0, 'b'},
        {"seq", required_argument, 0, 'q'},   {"decode", required_argument, 0, 'd'},  {"no-step", no_argument, 0, 'N'},
        {"json", no_argument, 0, 'j'},        {"help", no_argument, 0, 'h'},          {"dtype", required_argument, 0, 'D'},
        {"write", required_argument, 0, 'W'},   {0, 0, 0, 0}};
    const char *model = NULL, *shape = NULL;
    graft_dtype dtype = GRAFT_F32;
    const char *write_dir = NULL;
    long runs = 5, threads = 0, prefill = 256, batch = 4, seq = 64, decode = 64;
    int json = 0, no_step = 0, c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'S': shape = optarg; break;
        case 'r': if (cli_parse_int("bench", "--runs", optarg, 1, 1000, &runs)) return 2; break;
        case 't': if (cli_parse_int("bench", "--threads", optarg, 0, 1024, &threads)) return 2; break;
        case 'p': if (cli_parse_int("bench", "--prefill", optarg, 1, 1 << 20, &prefill)) return 2; break;
        case 'b': if (cli_parse_int("bench", "--batch", optarg, 1, 1024, &batch)) return 2; break;
        case 'q': if (cli_parse_int("bench", "--seq", optarg, 1, 1 << 20, &seq)) return 2; break;
        case 'd': if (cli_parse_int("bench", "--decode", optarg, 1, 1 << 20, &decode)) return 2; break;
        case 'N': no_step = 1; break;
        case 'W': write_dir = optarg; break;
        case 'D':
            if (graft_dtype_parse_float(optarg, &dtype)) {
                cli_fail("bench", "--dtype: '%s' is not f32, f16 or bf16", optarg);
                return 2;
            }
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (model && shape) || ((write_dir || dtype != GRAFT_F32) && !shape)) {
        cli_fail("bench", "give either -m MODEL or --shape NAME (--write and --dtype need --shape; a model file is "
                          "timed in the dtype it is stored in)");
        usage(stderr);
        return 2;
    }
    graft_set_threads((int)threads);
    graft_model *m = NULL;
    graft_status st;
    if (shape) {
        graft_config cfg;
        st = graft_config_preset(shape, &cfg);
        if (st == GRAFT_OK) {
            if (!json) fprintf(stderr, "graft bench: drawing random %s weights...\n", shape);
            st = graft_model_create_random(&cfg, 1, 0.02f, &m);
        }
        if (st == GRAFT_OK && write_dir) {
            st = graft_model_save_hf(m, write_dir, dtype);
            graft_model_free(m);
            if (st != GRAFT_OK) return cli_fail_status("bench", st);
            fprintf(stderr, "graft bench: wrote random %s weights (%s) to %s\n", shape, graft_dtype_name(dtype), write_dir);
            return 0;
        }
        if (st == GRAFT_OK && dtype != GRAFT_F32) st = reload_as(&m, dtype);
        if (st != GRAFT_OK) return cli_fail_status("bench", st);
    } else if (cli_load_model("bench", model, NULL, &m))
        return 1;

    const graft_config *cfg = &m->cfg;
    if (prefill > cfg->n_ctx) prefill = cfg->n_ctx;
    if (seq > cfg->n_ctx) seq = cfg->n_ctx;
    if (decode + 1 > cfg->n_ctx) decode = cfg->n_ctx - 1;
    int rc = 1;
    double *t = calloc((size_t)runs, sizeof *t);
    int *ids = malloc((size_t)(prefill > batch * seq ? prefill : batch * seq) * sizeof *ids);
    graft_run *r = NULL;
    graft_grads g;
    memset(&g, 0, sizeof g);
    double pre_med = 0, pre_best = 0, step_med = -1, step_best = -1, dec_med = 0, dec_best = 0;
    if (!t || !ids) {
        cli_fail("bench", "out of memory");
        goto done;
    }

    /* Prefill: one forward over batch 1 x prefill tokens, logits for the last row. */
    int len = (int)prefill, last = len - 1;
    fill_ids(ids, len, cfg->vocab_size, 11);
    if ((st = graft_run_create(m, len, 1, len, 0, &r)) != GRAFT_OK) goto fail;
    if ((st = graft_run_set_batch(r, ids, &len, 1, &last, 1)) != GRAFT_OK) goto fail;
    graft_run_forward(r); /* warm-up: page in the weights, start the thread pool */
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        graft_run_forward(r);
        t[i] = (now_ms() - t0) / len;
    }
    summarize(t, (int)runs, &pre_med, &pre_best);
    graft_run_free(r);
    r = NULL;
    if (!json) fprintf(stderr, "  prefill %ld tokens: median %.3f ms/token, best %.3f\n", prefill, pre_med, pre_best);

    /* Decode: greedy generation with the KV cache after a 1-token prompt.
     * Before the step: that one converts weights used as stored to f32
     * (gradients need them), and decode is measured on the model as loaded. */
    for (int i = -1; i < runs; i++) {
        graft_gen_opts o;
        graft_gen_opts_default(&o);
        o.max_new_tokens = (int)decode;
        o.stop_at_eos = 0;
        int start = 0, *out = NULL;
        size_t n = 0;
        double t0 = now_ms();
        st = graft_generate_ids(m, &start, 1, &o, NULL, NULL, &out, &n);
        double ms = now_ms() - t0;
        free(out);
        if (st != GRAFT_OK) goto fail;
        if (i >= 0) t[i] = n ? 1000.0 * (double)n / ms : 0;
    }
    summarize(t, (int)runs, &dec_med, &dec_best);
    dec_best = t[runs - 1]; /* for a rate, the best is the largest */
    if (!json) fprintf(stderr, "  decode %ld tokens: median %.1f tokens/s, best %.1f\n", decode, dec_med, dec_best);

    /* Training-style step: forward + backward with every parameter gradient. */
    if (!no_step) {
        int B = (int)batch, T = (int)seq, total = B * T;
        int *lens = malloc((size_t)B * sizeof *lens), *targets = malloc((size_t)total * sizeof *targets);
        if (!lens || !targets) {
            free(lens);
            free(targets);
            cli_fail("bench", "out of memory");
            goto done;
        }
        for (int b = 0; b < B; b++) lens[b] = T;
        fill_ids(ids, total, cfg->vocab_size, 12);
        for (int i = 0; i < total; i++) targets[i] = (i % T == T - 1) ? -1 : ids[i + 1];
        st = graft_run_create(m, total, total, T, 1, &r);
        if (st == GRAFT_OK) st = graft_grads_create(m, &g);
        if (st == GRAFT_OK) st = graft_run_set_batch(r, ids, lens, B, NULL, 0);
        for (int i = -1; st == GRAFT_OK && i < runs; i++) {
            double t0 = now_ms();
            graft_grads_zero(&g);
            st = graft_run_forward(r);
            if (st == GRAFT_OK) st = graft_run_backward(r, targets, NULL, &g, -1, GRAFT_SITE_BLOCK_IN);
            if (i >= 0) t[i] = now_ms() - t0;
        }
        free(lens);
        free(targets);
        if (st != GRAFT_OK) goto fail;
        summarize(t, (int)runs, &step_med, &step_best);
        graft_grads_free(&g);
        graft_run_free(r);
        r = NULL;
        if (!json) fprintf(stderr, "  fwd+bwd %ldx%ld: median %.1f ms/step, best %.1f\n", batch, seq, step_med, step_best);
    }

    graft_model_info info;
    graft_model_get_info(m, &info);
    if (json) {
        printf("{\"model\": \"%s\", \"params\": %lld, \"dtype\": \"%s\", \"threads\": %d, \"gemm\": \"%s\", "
               "\"isa\": \"%s\", \"stored_kernels\": \"%s\", \"runs\": %ld, "
               "\"prefill_tokens\": %ld, \"prefill_ms_per_token\": %.4f, \"prefill_ms_per_token_best\": %.4f, "
               "\"step_batch\": %ld, \"step_seq\": %ld, \"step_ms\": %.2f, \"step_ms_best\": %.2f, "
               "\"decode_tokens\": %ld, \"decode_tok_s\": %.2f, \"decode_tok_s_best\": %.2f, \"peak_rss_mb\": %.1f}\n",
               shape ? shape : (model ? model : "default"), (long long)info.n_params, info.dtype, graft_get_threads(),
               graft_gemm_backend(), graft_cpu_isa(), graft_wmat_isa(), runs, prefill, pre_med, pre_best, batch, seq,
               step_med, step_best, decode, dec_med, dec_best, peak_rss_mb());
    } else {
        printf("model            %s (%.1f M parameters, %s), %d threads, GEMM %s, kernels %s (stored weights %s), %ld runs\n",
               shape ? shape : (model ? model : "default"), info.n_params / 1e6, info.dtype, graft_get_threads(),
               graft_gemm_backend(), graft_cpu_isa(), graft_wmat_isa(), runs);
        printf("prefill 1x%-5ld  %.3f ms/token median, %.3f best\n", prefill, pre_med, pre_best);
        if (step_med >= 0) printf("fwd+bwd %ldx%-5ld %.1f ms/step median, %.1f best\n", batch, seq, step_med, step_best);
        printf("decode  %-7ld  %.1f tokens/s median, %.1f best\n", decode, dec_med, dec_best);
        printf("peak RSS         %.1f MiB\n", peak_rss_mb());
    }
    rc = 0;
    goto done;
fail:
    cli_fail_status("bench", st);
done:
    graft_grads_free(&g);
    graft_run_free(r);
    free(t);
    free(ids);
    graft_model_free(m);
    return rc;
}
