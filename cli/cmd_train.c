/* cmd_train.c - graft train: train a model from scratch or fine-tune one on a
 * text or JSONL file; writes a Hugging Face folder, checkpoints, a log and a
 * loss curve. The work is done by src/train (docs/TRAINING.md). */
#include "cli.h"
#include "internal.h"
#include "tokenizer/tokenizer_save.h"
#include "train/train.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t g_interrupt;

static void on_signal(int sig) {
    (void)sig;
    g_interrupt = 1;
}

static void usage(FILE *out) {
    fputs("usage: graft train --data FILE (--config CONFIG.json | --preset NAME | --init MODEL)\n"
          "                   [--tokenizer PATH | --byte-tokenizer] --out DIR [options]\n"
          "       graft train --out DIR --resume [--steps N] [--threads N] [--data FILE] ...\n"
          "Trains all parameters with AdamW and writes DIR as a Hugging Face model folder, plus\n"
          "DIR/checkpoint/, DIR/train_log.jsonl and DIR/loss.svg (see docs/TRAINING.md).\n"
          "\n"
          "data\n"
          "  --data FILE          .jsonl rows {\"text\": ...} or {\"prompt\": ..., \"answer\": ...};\n"
          "                       any other file is plain text cut into --seq-len windows\n"
          "  --val-frac F         fraction of sequences held out for validation (default 0.05)\n"
          "  --seq-len N          longest sequence / text window (default min(context, 256))\n"
          "  --prompt-weight W    loss weight of tokens that predict prompt tokens (default 0)\n"
          "model (one of)\n"
          "  --config FILE        an HF config.json (GPT-2 or Llama): train from scratch\n"
          "  --preset NAME        a named shape: gpt2, gpt2-medium, gpt2-tiny, llama-tiny, ...\n"
          "                       (with --byte-tokenizer its vocabulary becomes 257 bytes+EOS)\n"
          "  --init MODEL         fine-tune an HF folder or a llama2.c .bin\n"
          "  --tokenizer PATH     tokenizer (default: the one beside --init)\n"
          "  --byte-tokenizer     256 byte tokens + <|endoftext|> (id 256)\n"
          "length\n"
          "  --steps N            optimiser steps\n"
          "  --epochs E           passes over the training split (default 1; may be fractional)\n"
          "  --batch-tokens N     tokens per step, whole sequences packed (default 4096)\n"
          "  --micro-tokens N     tokens per forward/backward pass (default: the batch, split\n"
          "                       when its activations would pass 2 GiB)\n"
          "optimiser\n"
          "  --lr LR              peak learning rate (default 3e-4)\n"
          "  --min-lr LR          end of the cosine decay (default lr/10)\n"
          "  --warmup N           linear warmup steps (default 5% of the steps)\n"
          "  --wd W               weight decay of 2-D weight matrices (default 0.1)\n"
          "  --beta1 B, --beta2 B AdamW betas (default 0.9, 0.95)\n"
          "  --clip C             global gradient-norm clip, 0 = off (default 1.0)\n"
          "run\n"
          "  --out DIR            output folder (required)\n"
          "  --seed S             init, validation split and shuffles (default 1234)\n"
          "  --threads N          threads (default: all CPUs); results are reproducible for a\n"
          "                       given seed and thread count\n"
          "  --eval-every N       validation every N steps (default: 10 times per run)\n"
          "  --ckpt-every N       checkpoint every N steps (default: 5 times per run)\n"
          "  --dtype T            f32, f16 or bf16 for the final model.safetensors (default f32)\n"
          "  --resume             continue from DIR/checkpoint with its stored options; only\n"
          "                       --steps, --threads, --eval-every, --ckpt-every, --dtype,\n"
          "                       --stop-after, --data (the same file, moved) and --quiet may be given\n"
          "  --stop-after N       checkpoint and stop after step N, as if interrupted\n"
          "  --quiet              no progress on stderr\n"
          "Ctrl-C checkpoints and stops; --resume continues bit-identically.\n"
          "Exit status: 0 done (or stopped by --stop-after), 1 failure or interrupted, 2 usage.\n",
          out);
}

enum {
    O_DATA = 256, O_VAL, O_CONFIG, O_PRESET, O_INIT, O_TOK, O_BYTES, O_OUT, O_STEPS, O_EPOCHS, O_BATCH, O_MICRO,
    O_SEQ, O_LR, O_MINLR, O_WARMUP, O_WD, O_B1, O_B2, O_CLIP, O_PW, O_SEED, O_THREADS, O_EVAL, O_CKPT, O_RESUME,
    O_DTYPE, O_STOP, O_QUIET, O_HELP
};

/* Options that --resume may take; every other one is fixed by the checkpoint. */
static bool resume_allows(int c) {
    return c == O_OUT || c == O_STEPS || c == O_THREADS || c == O_EVAL || c == O_CKPT || c == O_DTYPE ||
           c == O_STOP || c == O_DATA || c == O_QUIET || c == O_RESUME;
}

static int parse_dtype(const char *s, graft_dtype *dt) {
    if (!strcmp(s, "f32") || !strcmp(s, "F32")) *dt = GRAFT_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "F16")) *dt = GRAFT_F16;
    else if (!strcmp(s, "bf16") || !strcmp(s, "BF16")) *dt = GRAFT_BF16;
    else return cli_fail("train", "--dtype wants f32, f16 or bf16, got '%s'", s);
    return 0;
}

/* The model to train: from a config file, a preset or a checkpoint, with its tokenizer attached. */
static int make_model(const char *config, const char *preset, const char *init, const char *tok_path,
                      bool byte_tok, uint64_t seed, graft_model **out) {
    *out = NULL;
    graft_status st;
    graft_tokenizer *tok = NULL;
    if (byte_tok) st = graft_tokenizer_create_bytes(&tok);
    else if (tok_path) st = graft_tokenizer_load(tok_path, &tok);
    else st = GRAFT_OK;
    if (st != GRAFT_OK) return cli_fail_status("train", st);
    if (init) {
        st = graft_model_load(init, out);
        if (st != GRAFT_OK) {
            graft_tokenizer_free(tok);
            return cli_fail_status("train", st);
        }
        if (tok) graft_model_set_tokenizer(*out, tok);
        if (!graft_model_tokenizer(*out)) {
            graft_model_free(*out);
            *out = NULL;
            return cli_fail("train", "no tokenizer found beside %s; give one with --tokenizer PATH or --byte-tokenizer", init);
        }
        return 0;
    }
    if (!tok) return cli_fail("train", "a model trained from scratch needs --tokenizer PATH or --byte-tokenizer");
    graft_config cfg;
    if (config) {
        char *text = NULL;
        st = graft_read_file(config, &text, NULL);
        if (st == GRAFT_OK) st = graft_config_from_json(&cfg, text, config);
        free(text);
    } else {
        st = graft_config_preset(preset, &cfg);
        /* A preset names a shape; its GPT-2 vocabulary makes no sense with bytes. */
        if (st == GRAFT_OK && byte_tok) cfg.vocab_size = graft_tokenizer_vocab_size(tok);
    }
    if (st != GRAFT_OK) {
        graft_tokenizer_free(tok);
        return cli_fail_status("train", st);
    }
    /* The model's special ids follow the tokenizer it is trained with. */
    cfg.bos_id = graft_tokenizer_bos(tok);
    cfg.eos_id = graft_tokenizer_eos(tok);
    st = graft_train_init_model(&cfg, seed, out);
    if (st != GRAFT_OK) {
        graft_tokenizer_free(tok);
        return cli_fail_status("train", st);
    }
    graft_model_set_tokenizer(*out, tok);
    return 0;
}

static void print_summary(const graft_train_result *r, const char *out) {
    char val[96] = "";
    if (!isnan(r->val_loss)) {
        if (!isnan(r->first_val_loss))
            snprintf(val, sizeof val, ", val loss %.4f (from %.4f)", r->val_loss, r->first_val_loss);
        else
            snprintf(val, sizeof val, ", val loss %.4f", r->val_loss);
    }
    if (r->finished)
        printf("done: step %ld/%ld, train loss %.4f%s, %.1f s, %.0f tokens/s; model in %s\n", r->step, r->total_steps,
               r->last_loss, val, r->wall_s, r->tokens_per_s, out);
    else
        printf("stopped: step %ld/%ld, train loss %.4f%s, %.1f s, %.0f tokens/s; checkpoint in %s/checkpoint "
               "(continue with --resume)\n",
               r->step, r->total_steps, r->last_loss, val, r->wall_s, r->tokens_per_s, out);
}

int cmd_train(int argc, char **argv) {
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA},         {"val-frac", required_argument, 0, O_VAL},
        {"config", required_argument, 0, O_CONFIG},     {"preset", required_argument, 0, O_PRESET},
        {"init", required_argument, 0, O_INIT},         {"tokenizer", required_argument, 0, O_TOK},
        {"byte-tokenizer", no_argument, 0, O_BYTES},    {"out", required_argument, 0, O_OUT},
        {"steps", required_argument, 0, O_STEPS},       {"epochs", required_argument, 0, O_EPOCHS},
        {"batch-tokens", required_argument, 0, O_BATCH}, {"micro-tokens", required_argument, 0, O_MICRO},
        {"seq-len", required_argument, 0, O_SEQ},       {"lr", required_argument, 0, O_LR},
        {"min-lr", required_argument, 0, O_MINLR},      {"warmup", required_argument, 0, O_WARMUP},
        {"wd", required_argument, 0, O_WD},             {"beta1", required_argument, 0, O_B1},
        {"beta2", required_argument, 0, O_B2},          {"clip", required_argument, 0, O_CLIP},
        {"prompt-weight", required_argument, 0, O_PW},  {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS},   {"eval-every", required_argument, 0, O_EVAL},
        {"ckpt-every", required_argument, 0, O_CKPT},   {"resume", no_argument, 0, O_RESUME},
        {"dtype", required_argument, 0, O_DTYPE},       {"stop-after", required_argument, 0, O_STOP},
        {"quiet", no_argument, 0, O_QUIET},             {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    graft_train_opts o;
    graft_train_opts_default(&o);
    const char *config = NULL, *preset = NULL, *init = NULL, *tok_path = NULL;
    bool byte_tok = false, resume = false, quiet = false, dtype_given = false;
    const char *fixed_opt = NULL; /* an option --resume may not take */
    long x;
    double f;
    int c;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c != '?' && c != 'h' && c != O_HELP && !resume_allows(c) && !fixed_opt) {
            for (const struct option *p = opts; p->name; p++)
                if (p->val == c) fixed_opt = p->name;
        }
#define INT_OPT(name, lo, hi, dst)                                                                                    \
    do {                                                                                                              \
        if (cli_parse_int("train", name, optarg, lo, hi, &x)) return 2;                                               \
        dst = x;                                                                                                      \
    } while (0)
#define NUM_OPT(name, lo, hi, dst)                                                                                    \
    do {                                                                                                              \
        if (cli_parse_float("train", name, optarg, lo, hi, &f)) return 2;                                             \
        dst = f;                                                                                                      \
    } while (0)
        switch (c) {
        case O_DATA: o.data_path = optarg; break;
        case O_VAL: NUM_OPT("--val-frac", 0, 0.999, o.val_frac); break;
        case O_CONFIG: config = optarg; break;
        case O_PRESET: preset = optarg; break;
        case O_INIT: init = optarg; break;
        case O_TOK: tok_path = optarg; break;
        case O_BYTES: byte_tok = true; break;
        case O_OUT: o.out_dir = optarg; break;
        case O_STEPS: INT_OPT("--steps", 1, 1L << 40, o.steps); break;
        case O_EPOCHS: NUM_OPT("--epochs", 1e-6, 1e6, o.epochs); break;
        case O_BATCH: INT_OPT("--batch-tokens", 2, 1 << 24, o.batch_tokens); break;
        case O_MICRO: INT_OPT("--micro-tokens", 2, 1 << 24, o.micro_tokens); break;
        case O_SEQ: INT_OPT("--seq-len", 2, 1 << 24, o.seq_len); break;
        case O_LR: NUM_OPT("--lr", 1e-12, 10, o.lr); break;
        case O_MINLR: NUM_OPT("--min-lr", 0, 10, o.min_lr); break;
        case O_WARMUP: INT_OPT("--warmup", 0, 1L << 40, o.warmup); break;
        case O_WD: NUM_OPT("--wd", 0, 10, o.wd); break;
        case O_B1: NUM_OPT("--beta1", 0, 0.9999999, o.beta1); break;
        case O_B2: NUM_OPT("--beta2", 0, 0.9999999, o.beta2); break;
        case O_CLIP: NUM_OPT("--clip", 0, 1e9, o.clip); break;
        case O_PW: NUM_OPT("--prompt-weight", 0, 1e6, o.prompt_weight); break;
        case O_SEED: {
            char *end;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (!*optarg || *end || optarg[0] == '-') {
                cli_fail("train", "--seed wants a non-negative integer, got '%s'", optarg);
                return 2;
            }
            o.seed = (uint64_t)s;
            break;
        }
        case O_THREADS: INT_OPT("--threads", 1, 4096, o.threads); break;
        case O_EVAL: INT_OPT("--eval-every", 1, 1L << 40, o.eval_every); break;
        case O_CKPT: INT_OPT("--ckpt-every", 1, 1L << 40, o.ckpt_every); break;
        case O_RESUME: resume = true; break;
        case O_DTYPE:
            if (parse_dtype(optarg, &o.dtype)) return 2;
            dtype_given = true;
            break;
        case O_STOP: INT_OPT("--stop-after", 1, 1L << 40, o.stop_after); break;
        case O_QUIET: quiet = true; break;
        case 'h':
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
#undef INT_OPT
#undef NUM_OPT
    }
    if (optind < argc) {
        cli_fail("train", "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!o.out_dir) {
        cli_fail("train", "--out DIR is required");
        usage(stderr);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* The first Ctrl-C asks for a checkpoint; a second one kills at once. */
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    graft_train_result res;
    graft_status st;
    if (resume) {
        if (fixed_opt) {
            cli_fail("train", "--%s cannot be given with --resume: the checkpoint's options are used", fixed_opt);
            return 2;
        }
        graft_train_resume_opts ro;
        graft_train_resume_opts_default(&ro);
        ro.data_path = o.data_path;
        ro.threads = o.threads;
        ro.steps = o.steps;
        ro.eval_every = o.eval_every;
        ro.ckpt_every = o.ckpt_every;
        if (dtype_given) ro.dtype = (int)o.dtype;
        ro.stop_after = o.stop_after;
        ro.progress = !quiet;
        ro.interrupt = &g_interrupt;
        st = graft_train_resume(o.out_dir, &ro, &res);
    } else {
        if (!o.data_path) {
            cli_fail("train", "--data FILE is required");
            usage(stderr);
            return 2;
        }
        if ((config != NULL) + (preset != NULL) + (init != NULL) != 1) {
            cli_fail("train", "give exactly one of --config, --preset, --init");
            return 2;
        }
        if (byte_tok && tok_path) {
            cli_fail("train", "give --tokenizer or --byte-tokenizer, not both");
            return 2;
        }
        if (o.threads > 0) graft_set_threads(o.threads);
        graft_model *m = NULL;
        if (make_model(config, preset, init, tok_path, byte_tok, o.seed, &m)) return 1;
        o.progress = !quiet;
        o.interrupt = &g_interrupt;
        st = graft_train(m, &o, &res);
        graft_model_free(m);
    }
    if (st != GRAFT_OK) return cli_fail_status("train", st);
    print_summary(&res, o.out_dir);
    if (!res.finished && g_interrupt) return 1;
    return 0;
}
