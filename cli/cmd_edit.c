/* cmd_edit.c - graft edit: stream edit requests into a model, journaling
 * every edit and measuring ES / ERR / TRR / generalisation as it goes. */
#include "cli.h"
#include "edit/journal.h"
#include "edit/stream.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft edit [-m MODEL] --data FILE --out RUN_DIR [options]\n"
          "Applies the edit requests of FILE in order and measures the model as it goes.\n"
          "  --method NAME        editing method: grace (default), melo, mend, ft, ftl, ewc, rome, memit, emmet\n"
          "  --format F           zsre | counterfact | hallucination | temporal | jsonl (default: detect)\n"
          "  --n N                edit only the first N requests (default: all)\n"
          "  --eval-every K       evaluate after every K edits (default 100)\n"
          "  --eval-at WHEN       every (every K edits, default) | each (after every edit) | end\n"
          "  --batch B            edits per step (GRACE: 1; MELO: edits per LoRA block)\n"
          "  --seed S             seed (GRACE cold init; default 42)\n"
          "  --resume             continue the run in RUN_DIR from its journal\n"
          "  --upstream FILE      TRR set: JSONL {prompt, answer} (default: the stream's locality prompts)\n"
          "  --upstream-n N       at most N upstream prompts (default 500)\n"
          "  --ppl-text FILE      upstream perplexity text (e.g. WikiText-2); --ppl-tokens N caps it (4096)\n"
          "  --err-sample N       per point, re-check at most N earlier edits, N rephrases and N prompts\n"
          "                       of each CounterFact score, evenly spread (default: all)\n"
          "  --tokenizer PATH     tokenizer, when not beside the model\n"
          "  --no-progress        no progress bar\n"
          "GRACE options:\n"
          "  --layer L            edited block (default: 3/4 of the depth, at most n_layer - 3)\n"
          "  --eps E              radius of a new key (1.0)\n"
          "  --lr LR              value learning rate (1.0)\n"
          "  --train MODE         success (default): train each value until greedy generation gives the\n"
          "                       target (rate halved on plateaus, one retry from the other init);\n"
          "                       fixed: the paper's loop of --n-iter constant-rate Adam steps\n"
          "  --max-iter N         success: value-training steps per edit at most (500)\n"
          "  --margin X           success: lead of the target logit at every position (0.5)\n"
          "  --n-iter N           fixed: value-training steps at most (100)\n"
          "  --no-early-stop      fixed: always run n-iter steps\n"
          "  --init warm|cold     value initialisation: the layer's own output (warm, default) or\n"
          "                       uniform [0,1) (cold, the paper's)\n"
          "  --replace MODE       rows a hit overwrites, key at row t: upto_key [0,t] (default),\n"
          "                       last [t] (EasyEdit), prompt [0,t) (the official code), all\n"
          "  --paper              the official GRACE loop: --train fixed --no-early-stop --init cold\n"
          "                       --replace prompt (n_iter 100 constant-rate Adam steps)\n"
          "  --require-success    stop with an error when an edit does not reproduce its target\n"
          "  --expand coverage|moving_average\n"
          "  --label-mean         compare labels by the mean of their ids (the official code's rule)\n"
          "  --key prompt_last|target_first   the key token (default prompt_last; target_first is the\n"
          "                       official hallucination setup, teacher-forced metrics only)\n"
          "MELO (--method melo; docs/MELO.md). --layer, --lr, --train, --n-iter, --max-iter, --margin\n"
          "and --seed apply as for GRACE (MELO defaults: lr 1e-3, n-iter 50, max-iter 200):\n"
          "  --radius R           init_radius of a new router cluster (default 0.1 sqrt(d_ff))\n"
          "  --rank K             LoRA rank per block (2)\n"
          "  --blocks N           LoRA blocks, one per batch (1024); the stream is checked against it\n"
          "  --grow-blocks        let the number of blocks grow past --blocks\n"
          "  --lora-layers L[,L]  LoRA blocks (default: the two above the router layer)\n"
          "  --step-size N        StepLR: the rate halves every N steps (20)\n"
          "  --label-sum          compare labels by the sum of their ids (the official code's rule)\n"
          "MEND (--method mend; docs/MEND.md):\n"
          "  --mend DIR           the trained editor (`graft mend-train`; default MODEL/mend when present)\n"
          /* --- FT baselines (src/edit/ft.c) --- */
          "FT baselines (--method ft | ftl | ewc; docs/FT_BASELINES.md):\n"
          "  --ft-layers L[,L..]  trained layers (GPT-2: 0; Llama: 2/3 of the depth); --layer L also works\n"
          "  --ft-modules M[,M..] modules of those layers (GPT-2: mlp.c_proj = weight+bias; Llama: mlp.down_proj)\n"
          "  --ft-params N[,N..]  explicit parameter names instead (e.g. transformer.h.0.mlp.c_proj.weight)\n"
          "  --ft-lr LR           Adam learning rate (5e-4)\n"
          "  --ft-steps N         steps at most (25)\n"
          "  --ft-stop-loss X     stop once the loss is below X (1e-2; 0: never)\n"
          "  --ft-early-stop      stop once the target is the teacher-forced argmax\n"
          "  --loss L             target_new (ft, ewc default) | prompt_last (ftl default)\n"
          "  --linf E             ftl: L-inf radius around the pre-stream weights (5e-4)\n"
          "  --linf-anchor A      ftl: base (pre-stream weights, default) | edit (each edit's start, as ROME)\n"
          "  --ewc-lambda L       ewc: penalty weight (0.1)\n"
          "  --ewc-window N       ewc: Fisher over the last N edits (10)\n"
          /* --- end FT --- */
          /* --- weight editors (src/edit/rome.c, memit.c; docs/WEIGHT_EDITORS.md) --- */
          "ROME / MEMIT / EMMET (--method rome | memit | emmet; docs/WEIGHT_EDITORS.md):\n"
          "  --stats FILE         key second moments from `graft stats` (default: C = I, said on stderr)\n"
          "  --layers A-B         edited layers (MEMIT/EMMET; ROME takes one: --layer L); default by depth\n"
          "  --no-rrome           ROME: the original asymmetric key (reproduces disabling edits)\n"
          "  --v-steps N          v* optimisation steps (20)\n"
          "  --v-lr LR            v* Adam learning rate (0.5)\n"
          "  --clamp X            |delta| <= X |v_init| (ROME 4, MEMIT/EMMET 0.75)\n"
          "  --kl X               weight of the KL essence term (0.0625)\n"
          "  --lambda X           mom2_update_weight (MEMIT 20000, EMMET 10000)\n"
          "  --emmet-lambda X     EMMET's lambda_e (0.1)\n"
          /* --- end weight editors --- */
          "Writes RUN_DIR/journal.sqlite (every edit, durable), results.jsonl (one line per evaluation\n"
          "point), summary.json, retention.svg and codebook.safetensors.\n",
          out);
}

/* --- FT baselines: "a,b,c" as a JSON array of numbers (nums) or strings --- */
static int ft_list(cJSON *eo, const char *key, const char *arg, int nums) {
    cJSON *a = cJSON_CreateArray();
    char *copy = strdup(arg), *save = NULL;
    int rc = a && copy ? 0 : cli_fail("edit", "out of memory");
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (nums && cli_parse_int("edit", key, tok, 0, 1 << 16, &v)) rc = 1;
        else graft_json_push(a, nums ? cJSON_CreateNumber((double)v) : cJSON_CreateString(tok));
    }
    free(copy);
    if (rc || !cJSON_GetArraySize(a)) {
        cJSON_Delete(a);
        return rc ? rc : cli_fail("edit", "--ft-%s wants a comma-separated list", key);
    }
    cJSON_DeleteItemFromObject(eo, key);
    graft_json_put(eo, key, a);
    return 0;
}
/* --- end FT --- */

/* Say which edits did not take (summary.json's failed_rows): a failed edit
 * is never silent. */
static void report_failed(const char *dir) {
    char *path = graft_path_join(dir, "summary.json"), *text = NULL;
    cJSON *j = path && graft_read_file(path, &text, NULL) == GRAFT_OK ? cJSON_Parse(text) : NULL;
    const cJSON *n = cJSON_GetObjectItem(j, "failed_edits"), *rows = cJSON_GetObjectItem(j, "failed_rows");
    const cJSON *all = cJSON_GetObjectItem(j, "n_requests");
    if (cJSON_IsNumber(n) && n->valueint > 0) {
        fprintf(stderr, "graft edit: %d of %d edits did not take (greedy generation right after the edit missed the "
                        "target); data rows:", n->valueint, cJSON_IsNumber(all) ? all->valueint : 0);
        int k = 0;
        const cJSON *r;
        cJSON_ArrayForEach(r, rows) {
            if (k++ == 20) {
                fprintf(stderr, " ... (all in summary.json)");
                break;
            }
            fprintf(stderr, " %d", r->valueint);
        }
        fputc('\n', stderr);
    } else if (cJSON_IsNumber(n))
        fprintf(stderr, "graft edit: every edit took (greedy generation gave each target right after its edit)\n");
    cJSON_Delete(j);
    free(text), free(path);
}

int cmd_edit(int argc, char **argv) {
    enum { O_METHOD = 256, O_DATA, O_FORMAT, O_N, O_EVERY, O_AT, O_BATCH, O_SEED, O_OUT, O_RESUME, O_UP, O_UPN,
           O_PPL, O_PPLN, O_ERRS, O_TOK, O_NOPROG, O_LAYER, O_EPS, O_LR, O_NITER, O_NOES, O_INIT, O_REPLACE, O_EXPAND,
           O_LMEAN, O_KEY, O_TRAIN, O_MAXIT, O_MARGIN, O_REQ, O_PAPER,
           O_M_RADIUS, O_M_RANK, O_M_BLOCKS, O_M_GROW, O_M_LORA, O_M_STEP, O_M_LSUM, O_MEND_DIR,
           /* --- FT baselines --- */
           O_FT_LAYERS, O_FT_MODULES, O_FT_PARAMS, O_FT_LR, O_FT_STEPS, O_FT_STOP, O_FT_ES, O_FT_LOSS, O_FT_LINF,
           O_FT_ANCHOR, O_FT_EWCL, O_FT_EWCW,
           /* --- weight editors --- */
           O_W_STATS, O_W_LAYERS, O_W_NORROME, O_W_VSTEPS, O_W_VLR, O_W_CLAMP, O_W_KL, O_W_LAMBDA, O_W_ELAMBDA };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"method", required_argument, 0, O_METHOD},
        {"data", required_argument, 0, O_DATA}, {"format", required_argument, 0, O_FORMAT},
        {"n", required_argument, 0, O_N}, {"eval-every", required_argument, 0, O_EVERY},
        {"eval-at", required_argument, 0, O_AT}, {"batch", required_argument, 0, O_BATCH},
        {"seed", required_argument, 0, O_SEED}, {"out", required_argument, 0, O_OUT},
        {"resume", no_argument, 0, O_RESUME}, {"upstream", required_argument, 0, O_UP},
        {"upstream-n", required_argument, 0, O_UPN}, {"ppl-text", required_argument, 0, O_PPL},
        {"ppl-tokens", required_argument, 0, O_PPLN}, {"err-sample", required_argument, 0, O_ERRS},
        {"tokenizer", required_argument, 0, O_TOK}, {"no-progress", no_argument, 0, O_NOPROG},
        {"layer", required_argument, 0, O_LAYER}, {"eps", required_argument, 0, O_EPS},
        {"lr", required_argument, 0, O_LR}, {"n-iter", required_argument, 0, O_NITER},
        {"no-early-stop", no_argument, 0, O_NOES}, {"init", required_argument, 0, O_INIT},
        {"replace", required_argument, 0, O_REPLACE}, {"expand", required_argument, 0, O_EXPAND},
        {"label-mean", no_argument, 0, O_LMEAN}, {"key", required_argument, 0, O_KEY},
        {"train", required_argument, 0, O_TRAIN}, {"max-iter", required_argument, 0, O_MAXIT},
        {"margin", required_argument, 0, O_MARGIN}, {"require-success", no_argument, 0, O_REQ},
        {"paper", no_argument, 0, O_PAPER},
        {"radius", required_argument, 0, O_M_RADIUS}, {"rank", required_argument, 0, O_M_RANK},
        {"blocks", required_argument, 0, O_M_BLOCKS}, {"grow-blocks", no_argument, 0, O_M_GROW},
        {"lora-layers", required_argument, 0, O_M_LORA}, {"step-size", required_argument, 0, O_M_STEP},
        {"label-sum", no_argument, 0, O_M_LSUM}, {"mend", required_argument, 0, O_MEND_DIR},
        /* --- FT baselines --- */
        {"ft-layers", required_argument, 0, O_FT_LAYERS}, {"ft-modules", required_argument, 0, O_FT_MODULES},
        {"ft-params", required_argument, 0, O_FT_PARAMS}, {"ft-lr", required_argument, 0, O_FT_LR},
        {"ft-steps", required_argument, 0, O_FT_STEPS}, {"ft-stop-loss", required_argument, 0, O_FT_STOP},
        {"ft-early-stop", no_argument, 0, O_FT_ES}, {"loss", required_argument, 0, O_FT_LOSS},
        {"linf", required_argument, 0, O_FT_LINF}, {"linf-anchor", required_argument, 0, O_FT_ANCHOR},
        {"ewc-lambda", required_argument, 0, O_FT_EWCL}, {"ewc-window", required_argument, 0, O_FT_EWCW},
        /* --- end FT --- */
        /* --- weight editors --- */
        {"stats", required_argument, 0, O_W_STATS}, {"layers", required_argument, 0, O_W_LAYERS},
        {"no-rrome", no_argument, 0, O_W_NORROME}, {"v-steps", required_argument, 0, O_W_VSTEPS},
        {"v-lr", required_argument, 0, O_W_VLR}, {"clamp", required_argument, 0, O_W_CLAMP},
        {"kl", required_argument, 0, O_W_KL}, {"lambda", required_argument, 0, O_W_LAMBDA},
        {"emmet-lambda", required_argument, 0, O_W_ELAMBDA},
        /* --- end weight editors --- */
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    graft_stream_opts o;
    graft_stream_opts_default(&o);
    const char *model = NULL, *tok = NULL;
    cJSON *eo = cJSON_CreateObject(); /* editor options, as the factory reads them */
    long v;
    double d;
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case O_METHOD: o.method = optarg; break;
        case O_DATA: o.data_path = optarg; break;
        case O_FORMAT: o.format = optarg; break;
        case O_N: if (cli_parse_int("edit", "--n", optarg, 1, 1L << 30, &o.n)) goto out; break;
        case O_EVERY: if (cli_parse_int("edit", "--eval-every", optarg, 1, 1L << 30, &v)) goto out; o.eval_every = (int)v; break;
        case O_AT:
            if (!strcmp(optarg, "every")) o.eval_at = GRAFT_EVAL_EVERY;
            else if (!strcmp(optarg, "each")) o.eval_at = GRAFT_EVAL_EACH;
            else if (!strcmp(optarg, "end")) o.eval_at = GRAFT_EVAL_END;
            else { cli_fail("edit", "--eval-at wants each, end or every, got '%s'", optarg); goto out; }
            break;
        case O_BATCH: if (cli_parse_int("edit", "--batch", optarg, 1, 1 << 20, &v)) goto out; o.batch = (int)v; break;
        case O_SEED: if (cli_parse_int("edit", "--seed", optarg, 0, 0x7fffffffL, &v)) goto out; o.seed = (uint64_t)v;
            cJSON_AddNumberToObject(eo, "seed", (double)v); break;
        case O_OUT: o.out_dir = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_UP: o.upstream_path = optarg; break;
        case O_UPN: if (cli_parse_int("edit", "--upstream-n", optarg, 1, 1L << 30, &o.upstream_n)) goto out; break;
        case O_PPL: o.ppl_path = optarg; break;
        case O_PPLN: if (cli_parse_int("edit", "--ppl-tokens", optarg, 2, 1L << 30, &o.ppl_tokens)) goto out; break;
        case O_ERRS: if (cli_parse_int("edit", "--err-sample", optarg, 1, 1L << 30, &o.err_sample)) goto out; break;
        case O_TOK: tok = optarg; break;
        case O_NOPROG: o.progress = 0; break;
        case O_LAYER: if (cli_parse_int("edit", "--layer", optarg, 0, 1 << 16, &v)) goto out; cJSON_AddNumberToObject(eo, "layer", (double)v); break;
        case O_EPS: if (cli_parse_float("edit", "--eps", optarg, 1e-9, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "eps_init", d); break;
        case O_LR: if (cli_parse_float("edit", "--lr", optarg, 1e-9, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "edit_lr", d); break;
        case O_NITER: if (cli_parse_int("edit", "--n-iter", optarg, 0, 1 << 20, &v)) goto out; cJSON_AddNumberToObject(eo, "n_iter", (double)v); break;
        case O_NOES: cJSON_AddBoolToObject(eo, "early_stop", 0); break;
        case O_INIT: cJSON_AddStringToObject(eo, "init", optarg); break;
        case O_REPLACE: cJSON_AddStringToObject(eo, "replace", optarg); break;
        case O_EXPAND: cJSON_AddStringToObject(eo, "expand", optarg); break;
        case O_LMEAN: cJSON_AddBoolToObject(eo, "label_mean_compat", 1); break;
        case O_KEY: cJSON_AddStringToObject(eo, "key", optarg); break;
        case O_TRAIN: cJSON_AddStringToObject(eo, "train", optarg); break;
        case O_MAXIT: if (cli_parse_int("edit", "--max-iter", optarg, 0, 1 << 20, &v)) goto out; cJSON_AddNumberToObject(eo, "max_iter", (double)v); break;
        case O_MARGIN: if (cli_parse_float("edit", "--margin", optarg, 0, 1e6, &d)) goto out; cJSON_AddNumberToObject(eo, "margin", d); break;
        case O_REQ: o.require_success = 1; break;
        case O_PAPER: /* later --train/--init/--replace still win: the JSON keeps the last value */
            cJSON_DeleteItemFromObject(eo, "train"), cJSON_DeleteItemFromObject(eo, "init");
            cJSON_DeleteItemFromObject(eo, "replace"), cJSON_DeleteItemFromObject(eo, "early_stop");
            cJSON_AddStringToObject(eo, "train", "fixed"), cJSON_AddStringToObject(eo, "init", "cold");
            cJSON_AddStringToObject(eo, "replace", "prompt"), cJSON_AddBoolToObject(eo, "early_stop", 0);
            break;
        case O_M_RADIUS: if (cli_parse_float("edit", "--radius", optarg, 1e-9, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "init_radius", d); break;
        case O_M_RANK: if (cli_parse_int("edit", "--rank", optarg, 1, 64, &v)) goto out; cJSON_AddNumberToObject(eo, "rank", (double)v); break;
        case O_M_BLOCKS: if (cli_parse_int("edit", "--blocks", optarg, 1, 1 << 24, &v)) goto out; cJSON_AddNumberToObject(eo, "blocks", (double)v); break;
        case O_M_GROW: cJSON_AddBoolToObject(eo, "grow", 1); break;
        case O_M_LORA: if (ft_list(eo, "lora_layers", optarg, 1)) goto out; break;
        case O_M_STEP: if (cli_parse_int("edit", "--step-size", optarg, 0, 1 << 20, &v)) goto out; cJSON_AddNumberToObject(eo, "step_size", (double)v); break;
        case O_M_LSUM: cJSON_AddBoolToObject(eo, "label_sum_compat", 1); break;
        case O_MEND_DIR: cJSON_AddStringToObject(eo, "editor", optarg); break;
        /* --- FT baselines --- */
        case O_FT_LAYERS: if (ft_list(eo, "layers", optarg, 1)) goto out; break;
        case O_FT_MODULES: if (ft_list(eo, "modules", optarg, 0)) goto out; break;
        case O_FT_PARAMS: if (ft_list(eo, "params", optarg, 0)) goto out; break;
        case O_FT_LR: if (cli_parse_float("edit", "--ft-lr", optarg, 1e-12, 1e6, &d)) goto out; cJSON_AddNumberToObject(eo, "lr", d); break;
        case O_FT_STEPS: if (cli_parse_int("edit", "--ft-steps", optarg, 0, 1 << 20, &v)) goto out; cJSON_AddNumberToObject(eo, "steps", (double)v); break;
        case O_FT_STOP: if (cli_parse_float("edit", "--ft-stop-loss", optarg, 0, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "stop_loss", d); break;
        case O_FT_ES: cJSON_AddBoolToObject(eo, "early_stop", 1); break;
        case O_FT_LOSS: cJSON_AddStringToObject(eo, "loss", optarg); break;
        case O_FT_LINF: if (cli_parse_float("edit", "--linf", optarg, 1e-12, 1e6, &d)) goto out; cJSON_AddNumberToObject(eo, "linf", d); break;
        case O_FT_ANCHOR: cJSON_AddStringToObject(eo, "linf_anchor", optarg); break;
        case O_FT_EWCL: if (cli_parse_float("edit", "--ewc-lambda", optarg, 0, 1e30, &d)) goto out; cJSON_AddNumberToObject(eo, "ewc_lambda", d); break;
        case O_FT_EWCW: if (cli_parse_int("edit", "--ewc-window", optarg, 1, 100000, &v)) goto out; cJSON_AddNumberToObject(eo, "ewc_window", (double)v); break;
        /* --- end FT --- */
        /* --- weight editors --- */
        case O_W_STATS: cJSON_AddStringToObject(eo, "stats", optarg); break;
        case O_W_LAYERS: cJSON_AddStringToObject(eo, "layers", optarg); break;
        case O_W_NORROME: cJSON_AddBoolToObject(eo, "rrome", 0); break;
        case O_W_VSTEPS: if (cli_parse_int("edit", "--v-steps", optarg, 0, 1 << 20, &v)) goto out; cJSON_AddNumberToObject(eo, "v_steps", (double)v); break;
        case O_W_VLR: if (cli_parse_float("edit", "--v-lr", optarg, 1e-12, 1e6, &d)) goto out; cJSON_AddNumberToObject(eo, "v_lr", d); break;
        case O_W_CLAMP: if (cli_parse_float("edit", "--clamp", optarg, 1e-9, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "clamp", d); break;
        case O_W_KL: if (cli_parse_float("edit", "--kl", optarg, 0, 1e9, &d)) goto out; cJSON_AddNumberToObject(eo, "kl_factor", d); break;
        case O_W_LAMBDA: if (cli_parse_float("edit", "--lambda", optarg, 0, 1e30, &d)) goto out; cJSON_AddNumberToObject(eo, "mom2_update_weight", d); break;
        case O_W_ELAMBDA: if (cli_parse_float("edit", "--emmet-lambda", optarg, 0, 1e30, &d)) goto out; cJSON_AddNumberToObject(eo, "emmet_lambda", d); break;
        /* --- end weight editors --- */
        case 'h': usage(stdout); rc = 0; goto out;
        default: usage(stderr); goto out;
        }
    }
    if (optind < argc || !o.data_path || !o.out_dir) {
        cli_fail("edit", optind < argc ? "unexpected argument '%s'" : "--data and --out are required%s",
                 optind < argc ? argv[optind] : "");
        usage(stderr);
        goto out;
    }
    if (graft_journal_is_uri(o.out_dir)) {
        /* a run writes results and plots beside its journal: it needs a folder */
        cli_fail("edit", "--out is a run folder (journal, results, plots), not a PostgreSQL URI; copy the run's "
                         "journal there afterwards with graft edits import RUN_DIR --adaptor URI");
        goto out;
    }
    char *opts_json = cJSON_PrintUnformatted(eo);
    o.editor_opts = opts_json;
    graft_model *m = NULL;
    rc = 1;
    if (cli_load_model("edit", model, tok, &m) == 0) {
        o.model_path = model ? model : cli_default_model();
        graft_status st = graft_stream_run(m, &o);
        if (st != GRAFT_OK)
            cli_fail_status("edit", st);
        else {
            fprintf(stderr, "graft edit: done; results in %s (results.jsonl, summary.json, retention.svg)\n", o.out_dir);
            report_failed(o.out_dir);
            rc = 0;
        }
    }
    graft_model_free(m);
    free(opts_json);
out:
    cJSON_Delete(eo);
    return rc;
}
