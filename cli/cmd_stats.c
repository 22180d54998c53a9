/* cmd_stats.c - graft stats: the second moment C = E[k k^T] of the MLP
 * down-projection inputs over a text corpus, for ROME / MEMIT / EMMET. */
#include "cli.h"
#include "internal.h"
#include "edit/stats.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft stats [-m MODEL] --corpus FILE --out FILE.safetensors [options]\n"
          "Streams the corpus through the model in windows of its context and accumulates, in double,\n"
          "the uncentered second moment of the down-projection inputs (the ROME/MEMIT keys) of each\n"
          "layer over every token. Computed once; give it to `graft edit --method rome|memit|emmet\n"
          "--stats FILE`.\n"
          "  --layers L       layers: 4, 3-5, 2,4,7 or all (default: the weight editors' defaults,\n"
          "                   round(n_layer/3) +- 1; GPT-2 small: 3-5)\n"
          "  --max-tokens N   stop after N tokens (default: the whole corpus)\n"
          "  --window N       tokens per forward pass (default: the model's context)\n"
          "  --resume         continue an interrupted run from FILE.safetensors.ckpt\n"
          "  --checkpoint-every S   seconds between checkpoints (default 300)\n"
          "  --tokenizer PATH tokenizer, when not beside the model\n"
          "  --no-progress    no progress bar\n"
          "Prints {\"tokens\", \"windows\", \"seconds\", \"tokens_per_s\", \"out\"} on success.\n",
          out);
}

int cmd_stats(int argc, char **argv) {
    enum { O_CORPUS = 256, O_LAYERS, O_MAXTOK, O_WINDOW, O_OUT, O_RESUME, O_CKPT, O_TOK, O_NOPROG };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"corpus", required_argument, 0, O_CORPUS},
        {"layers", required_argument, 0, O_LAYERS}, {"max-tokens", required_argument, 0, O_MAXTOK},
        {"window", required_argument, 0, O_WINDOW}, {"out", required_argument, 0, O_OUT},
        {"resume", no_argument, 0, O_RESUME},       {"checkpoint-every", required_argument, 0, O_CKPT},
        {"tokenizer", required_argument, 0, O_TOK}, {"no-progress", no_argument, 0, O_NOPROG},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    graft_stats_opts o;
    graft_stats_opts_default(&o);
    const char *model = NULL, *tok = NULL, *layers = NULL;
    long v;
    double d;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case O_CORPUS: o.corpus = optarg; break;
        case O_LAYERS: layers = optarg; break;
        case O_MAXTOK:
            if (cli_parse_int("stats", "--max-tokens", optarg, 1, 0x7fffffffffffffffL, &v)) return 2;
            o.max_tokens = v;
            break;
        case O_WINDOW:
            if (cli_parse_int("stats", "--window", optarg, 2, 1 << 20, &v)) return 2;
            o.window = (int)v;
            break;
        case O_OUT: o.out = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_CKPT:
            if (cli_parse_float("stats", "--checkpoint-every", optarg, 0, 1e9, &d)) return 2;
            o.checkpoint_every_s = d;
            break;
        case O_TOK: tok = optarg; break;
        case O_NOPROG: o.progress = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !o.corpus || !o.out) {
        cli_fail("stats", optind < argc ? "unexpected argument '%s'" : "--corpus and --out are required%s",
                 optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    graft_model *m = NULL;
    if (cli_load_model("stats", model, tok, &m)) return 1;
    int rc = 1, lay[256], n_lay = 0;
    if (layers) {
        graft_model_info info;
        graft_model_get_info(m, &info);
        graft_status st = graft_parse_layers(layers, info.n_layer, lay, &n_lay, 256);
        if (st != GRAFT_OK) {
            cli_fail_status("stats", st);
            graft_model_free(m);
            return 2;
        }
        o.layers = lay;
        o.n_layers = n_lay;
    }
    o.model_name = model ? model : cli_default_model();
    graft_stats_result res;
    graft_status st = graft_stats_compute(m, &o, &res);
    if (st != GRAFT_OK)
        cli_fail_status("stats", st);
    else {
        printf("{\"tokens\": %lld, \"windows\": %lld, \"seconds\": %.3f, \"tokens_per_s\": %.1f, \"out\": ", (long long)res.tokens,
               (long long)res.windows, res.seconds, res.seconds > 0 ? (double)res.tokens_run / res.seconds : 0.0);
        cli_print_json_string(stdout, o.out, strlen(o.out));
        printf("}\n");
        rc = 0;
    }
    graft_model_free(m);
    return rc;
}
