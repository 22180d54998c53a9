/* cmd_mend.c - graft mend-train: meta-train a MEND editor for a model
 * (src/edit/mend.h; docs/MEND.md).
 *
 * Per step: one edit (x_e, y_e) drawn from the training records, its
 * equivalence examples (the record's rephrase with the same target, and by
 * default the edit prompt itself) and one locality text (a known fact of the
 * model, prompt + answer, never one of the same case). The editor's
 * graft_mend_meta_loss gives L = c_edit L_e + c_loc L_loc and its gradient in
 * g and the alphas; Adam steps every --accum edits. Validation on held-out
 * records (the last --val-n of the data, never trained on) with held-out
 * locality facts (every --loc-holdout-th row) picks the best editor, which is
 * what DIR holds; DIR/checkpoint holds the latest state for --resume. */
#include "cli.h"
#include "data/dataset.h"
#include "edit/eval.h"
#include "edit/mend.h"
#include "internal.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out) {
    fputs("usage: graft mend-train [-m MODEL] --data TRAIN.json --locality FACTS.jsonl --out DIR [options]\n"
          "Meta-trains a MEND editor (docs/MEND.md); `graft edit --method mend --mend DIR` uses it.\n"
          "data\n"
          "  --data FILE          edit records with a rephrase (CounterFact / zsRE training split;\n"
          "                       never the evaluated stream)\n"
          "  --locality FILE      JSONL {prompt, answer, case_id?}: facts the model knows\n"
          "  --val-n N            the last N records are held out for validation (100)\n"
          "  --loc-holdout K      every K-th locality row is held out: validation only (5)\n"
          "  --no-neighbour       the KL term sees only the known fact, not also the record's own\n"
          "                       neighbourhood prompt + true answer (default: both)\n"
          "  --edit-loss WHICH    both (default): L_e over the edit prompt and its rephrase;\n"
          "                       rephrase: over the rephrase only (the official setting)\n"
          "editor\n"
          "  --rank R             rank of g's blocks (64)\n"
          "  --layers L,L,..      edited blocks (default: the last three)\n"
          "  --init-lr X          |alpha| at init (1e-4; alpha starts negative: a descent step)\n"
          "training\n"
          "  --steps N            optimiser steps at most (20000)\n"
          "  --accum N            edits per optimiser step (5; official 10)\n"
          "  --lr-g LR            Adam rate of g (1e-4; the official 1e-6 is for GPT-2 XL-sized g)\n"
          "  --lr-alpha LR        Adam rate of the alphas (2e-5; official 1e-4)\n"
          "  --clip C             gradient-norm clip (100)\n"
          "  --c-edit X, --c-loc X  loss weights (0.1, 1.0)\n"
          "  --val-every K        validate every K steps (200)\n"
          "  --patience P         stop after P validations without improvement (10)\n"
          "  --max-minutes M      stop after M minutes of training (0: no limit)\n"
          "  --ckpt-every K       checkpoint every K steps (500)\n"
          "  --seed S             sampling and g's init (42)\n"
          "  --threads N          threads (default: all CPUs)\n"
          "  --resume             continue from DIR/checkpoint (give the same options)\n"
          "  --quiet              no progress bar\n"
          "evaluation (--eval-only: no training)\n"
          "  --eval-only          single edits, each on the unedited model: the first --eval-n records\n"
          "                       of --data (give held-out ones, e.g. data/facts/edit_stream.json) through\n"
          "                       the editor in DIR; ES and PS (greedy exact match of the target after the\n"
          "                       prompt / the rephrase), NS (the neighbourhood prompt keeps its answer) and\n"
          "                       the drawdown of the held-out locality facts' exact match\n"
          "  --eval-n N           edits evaluated (100)\n"
          "  --held-n N           held-out locality facts checked after every edit (200)\n"
          "  --eval-method M      another editor instead (e.g. ft), for comparison\n"
          "  --eval-opts JSON     its options (as graft edit's editor options)\n"
          "Writes DIR/mend.json + mend.safetensors (the best editor by validation loss),\n"
          "DIR/train_log.jsonl, DIR/loss.svg and DIR/checkpoint/. Ctrl-C checkpoints and stops.\n",
          out);
}

/* One training or validation case, in tokens. */
typedef struct mcase {
    graft_eval_item edit, para;
    int *nb, n_nb; /* the record's neighbourhood fact (prompt + answer) as one text, or none */
    long case_id;
} mcase;

typedef struct lfact {
    int *ids;
    int n;
    long case_id;
} lfact;

static graft_status load_locality(graft_tokenizer *tok, const char *path, lfact **out, int *n_out) {
    char *text = NULL;
    size_t size = 0;
    *out = NULL;
    *n_out = 0;
    GRAFT_TRY(graft_read_file(path, &text, &size));
    int cap = 1024, n = 0;
    lfact *f = malloc((size_t)cap * sizeof *f);
    graft_status st = f ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    int line = 0;
    for (char *s = text, *e; st == GRAFT_OK && s && *s; s = e ? e + 1 : NULL) {
        e = strchr(s, '\n');
        if (e) *e = 0;
        line++;
        if (!*s) continue;
        cJSON *j = cJSON_Parse(s);
        const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
        const cJSON *c = cJSON_GetObjectItem(j, "case_id");
        if (!cJSON_IsString(p) || !cJSON_IsString(a)) {
            cJSON_Delete(j);
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: line %d: want {\"prompt\": ..., \"answer\": ...}", path, line);
            break;
        }
        graft_eval_item it;
        st = graft_encode_pair(tok, p->valuestring, a->valuestring, &it);
        if (st == GRAFT_OK) {
            if (n == cap) {
                lfact *nf = realloc(f, (size_t)(cap *= 2) * sizeof *f);
                if (!nf) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
                else f = nf;
            }
        }
        if (st == GRAFT_OK) {
            /* the whole fact as one text: every row carries the KL term */
            int *ids = malloc((size_t)(it.n_prompt + it.n_target) * sizeof(int));
            if (!ids) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
            else {
                memcpy(ids, it.prompt, (size_t)it.n_prompt * sizeof(int));
                memcpy(ids + it.n_prompt, it.target, (size_t)it.n_target * sizeof(int));
                f[n++] = (lfact){ids, it.n_prompt + it.n_target, cJSON_IsNumber(c) ? (long)c->valuedouble : -1};
            }
            graft_eval_item_free(&it);
        }
        cJSON_Delete(j);
    }
    free(text);
    if (st != GRAFT_OK) {
        for (int i = 0; i < n; i++) free(f[i].ids);
        free(f);
        return st;
    }
    *out = f;
    *n_out = n;
    return GRAFT_OK;
}

typedef struct mt_opts {
    const char *data, *loc_path, *out;
    int val_n, loc_holdout, rephrase_only, no_neighbour, rank, n_layers, layers[GRAFT_MEND_MAX_LAYERS];
    double init_lr, lr_g, lr_alpha, clip, c_edit, c_loc, max_minutes;
    long steps, accum, val_every, patience, ckpt_every, seed, threads;
    int resume, quiet;
    /* --eval-only: single-edit evaluation of an editor */
    int eval_only, eval_n, held_n;
    const char *eval_method, *eval_opts;
} mt_opts;

/* A locality fact for case c from the rows with (i % K == 0) == held: never
 * the edited case itself. */
static int pick_loc(uint64_t *rng, const lfact *lf, int n_lf, int K, int held, long case_id) {
    for (int tries = 0; tries < 1000; tries++) {
        int i = (int)(graft_mend_rand(rng) % (uint64_t)n_lf);
        if (((i % K) == 0) != held) continue;
        if (case_id >= 0 && lf[i].case_id == case_id) continue;
        return i;
    }
    return -1;
}

/* The locality sequences of a step: the known fact, then (with_nb) the
 * record's neighbourhood fact; malloc'ed ids, lens[2], count. */
static graft_status locality_text(const mcase *c, const lfact *f, int with_nb, int **ids, int *lens, int *n) {
    int nb = with_nb && c->n_nb > 0;
    *ids = malloc((size_t)(f->n + (nb ? c->n_nb : 0)) * sizeof(int));
    if (!*ids) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    memcpy(*ids, f->ids, (size_t)f->n * sizeof(int));
    lens[0] = f->n;
    *n = 1;
    if (nb) {
        memcpy(*ids + f->n, c->nb, (size_t)c->n_nb * sizeof(int));
        lens[(*n)++] = c->n_nb;
    }
    return GRAFT_OK;
}

typedef struct val_result {
    double loss, l_loc, es_tf, ps_tf, loc_same;
} val_result;

static graft_status validate(graft_editor *e, const mt_opts *o, const mcase *cs, int n_cases, int first,
                             const lfact *lf, int n_lf, val_result *v) {
    memset(v, 0, sizeof *v);
    uint64_t rng = 0x5eed0000ull + (uint64_t)o->seed; /* the same locality facts at every validation */
    for (int i = first; i < n_cases; i++) {
        const mcase *c = &cs[i];
        int li = pick_loc(&rng, lf, n_lf, o->loc_holdout, 1, c->case_id);
        if (li < 0) return graft_fail(GRAFT_ERR_INVALID, "mend-train: no held-out locality fact left");
        graft_mend_example ed = {c->edit.prompt, c->edit.target, c->edit.n_prompt, c->edit.n_target};
        graft_mend_example pa = {c->para.prompt, c->para.target, c->para.n_prompt, c->para.n_target};
        graft_mend_loss a, b;
        int *loc = NULL, lens[2], nl = 0;
        GRAFT_TRY(locality_text(c, &lf[li], !o->no_neighbour, &loc, lens, &nl));
        graft_status st = graft_mend_meta_loss(e, &ed, &ed, 1, loc, lens[0] + (nl > 1 ? lens[1] : 0), lens, nl,
                                               o->c_edit, o->c_loc, 0, 0, &a);
        free(loc);
        GRAFT_TRY(st);
        GRAFT_TRY(graft_mend_meta_loss(e, &ed, &pa, 1, NULL, 0, NULL, 0, o->c_edit, o->c_loc, 0, 0, &b));
        double le = o->rephrase_only ? b.l_edit : 0.5 * (a.l_edit + b.l_edit);
        v->loss += o->c_edit * le + o->c_loc * a.l_loc;
        v->l_loc += a.l_loc;
        v->es_tf += a.edit_ok;
        v->ps_tf += b.edit_ok;
        v->loc_same += a.loc_same;
    }
    int n = n_cases - first;
    v->loss /= n, v->l_loc /= n, v->es_tf /= n, v->ps_tf /= n, v->loc_same /= n;
    return GRAFT_OK;
}

/* The options and counters a checkpoint carries, as mend.json's extra object. */
static char *extra_json(const mt_opts *o, long step, uint64_t rng, double best, long since_best, double best_step,
                        const val_result *bv) {
    cJSON *j = cJSON_CreateObject();
    cJSON *t = cJSON_AddObjectToObject(j, "training");
    cJSON_AddStringToObject(t, "data", o->data);
    cJSON_AddStringToObject(t, "locality", o->loc_path);
    cJSON_AddNumberToObject(t, "val_n", o->val_n);
    cJSON_AddNumberToObject(t, "loc_holdout", o->loc_holdout);
    cJSON_AddStringToObject(t, "edit_loss", o->rephrase_only ? "rephrase" : "both");
    cJSON_AddBoolToObject(t, "neighbour_in_kl", !o->no_neighbour);
    cJSON_AddNumberToObject(t, "accum", (double)o->accum);
    cJSON_AddNumberToObject(t, "lr_g", o->lr_g);
    cJSON_AddNumberToObject(t, "lr_alpha", o->lr_alpha);
    cJSON_AddNumberToObject(t, "clip", o->clip);
    cJSON_AddNumberToObject(t, "c_edit", o->c_edit);
    cJSON_AddNumberToObject(t, "c_loc", o->c_loc);
    cJSON_AddNumberToObject(t, "init_lr", o->init_lr);
    cJSON_AddNumberToObject(t, "seed", (double)o->seed);
    cJSON_AddNumberToObject(t, "step", (double)step);
    char rs[32];
    snprintf(rs, sizeof rs, "%llu", (unsigned long long)rng);
    cJSON_AddStringToObject(t, "rng", rs);
    cJSON_AddNumberToObject(t, "best_val_loss", best);
    cJSON_AddNumberToObject(t, "best_step", best_step);
    cJSON_AddNumberToObject(t, "since_best", (double)since_best);
    if (bv) {
        cJSON_AddNumberToObject(t, "val_es_tf", bv->es_tf);
        cJSON_AddNumberToObject(t, "val_ps_tf", bv->ps_tf);
        cJSON_AddNumberToObject(t, "val_loc_same", bv->loc_same);
        cJSON_AddNumberToObject(t, "val_kl", bv->l_loc);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* Plot train and validation loss from the log. */
static void plot_log(const char *out) {
    char *path = graft_path_join(out, "train_log.jsonl"), *svg = graft_path_join(out, "loss.svg"), *text = NULL;
    if (!path || !svg || graft_read_file(path, &text, NULL) != GRAFT_OK) {
        free(path), free(svg);
        return;
    }
    int cap = 4096, n = 0;
    double *x = malloc((size_t)cap * sizeof(double)), *tr = malloc((size_t)cap * sizeof(double));
    double *va = malloc((size_t)cap * sizeof(double));
    for (char *s = text, *e; x && tr && va && s && *s && n < cap; s = e ? e + 1 : NULL) {
        e = strchr(s, '\n');
        if (e) *e = 0;
        cJSON *j = cJSON_Parse(s);
        const cJSON *a = cJSON_GetObjectItem(j, "step"), *b = cJSON_GetObjectItem(j, "train_loss");
        const cJSON *c = cJSON_GetObjectItem(j, "val_loss");
        if (cJSON_IsNumber(a) && cJSON_IsNumber(b) && cJSON_IsNumber(c))
            x[n] = a->valuedouble, tr[n] = b->valuedouble, va[n++] = c->valuedouble;
        cJSON_Delete(j);
    }
    if (n > 0) {
        graft_series s[2] = {{"train (mean since last point)", x, tr, n, 0, 1}, {"validation", x, va, n, 0, 2}};
        graft_svg_line_plot(svg, "MEND meta-training: L = c_edit L_e + c_loc L_loc", "optimiser step", "loss", s, 2,
                            NAN, NAN);
    }
    free(x), free(tr), free(va), free(text), free(path), free(svg);
}

static int parse_layers(const char *s, mt_opts *o) {
    o->n_layers = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        long v;
        if (o->n_layers == GRAFT_MEND_MAX_LAYERS || cli_parse_int("mend-train", "--layers", t, 0, 1 << 16, &v)) {
            free(copy);
            return 1;
        }
        o->layers[o->n_layers++] = (int)v;
    }
    free(copy);
    return o->n_layers ? 0 : cli_fail("mend-train", "--layers wants a comma-separated list");
}

static int train(graft_model *m, const mt_opts *o);
static int evaluate(graft_model *m, const mt_opts *o);

int cmd_mend(int argc, char **argv) {
    enum { O_DATA = 256, O_LOC, O_OUT, O_VALN, O_LOCH, O_ELOSS, O_RANK, O_LAYERS, O_INITLR, O_STEPS, O_ACCUM, O_LRG,
           O_LRA, O_CLIP, O_CE, O_CL, O_VALE, O_PAT, O_MAXM, O_CKPT, O_SEED, O_THR, O_RESUME, O_QUIET, O_TOK, O_NONB, O_EVAL, O_EVALN, O_HELDN, O_EMETH, O_EOPTS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, O_DATA},
        {"locality", required_argument, 0, O_LOC}, {"out", required_argument, 0, O_OUT},
        {"val-n", required_argument, 0, O_VALN}, {"loc-holdout", required_argument, 0, O_LOCH},
        {"edit-loss", required_argument, 0, O_ELOSS}, {"rank", required_argument, 0, O_RANK},
        {"layers", required_argument, 0, O_LAYERS}, {"init-lr", required_argument, 0, O_INITLR},
        {"steps", required_argument, 0, O_STEPS}, {"accum", required_argument, 0, O_ACCUM},
        {"lr-g", required_argument, 0, O_LRG}, {"lr-alpha", required_argument, 0, O_LRA},
        {"clip", required_argument, 0, O_CLIP}, {"c-edit", required_argument, 0, O_CE},
        {"c-loc", required_argument, 0, O_CL}, {"val-every", required_argument, 0, O_VALE},
        {"patience", required_argument, 0, O_PAT}, {"max-minutes", required_argument, 0, O_MAXM},
        {"ckpt-every", required_argument, 0, O_CKPT}, {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THR}, {"resume", no_argument, 0, O_RESUME},
        {"quiet", no_argument, 0, O_QUIET}, {"tokenizer", required_argument, 0, O_TOK},
        {"no-neighbour", no_argument, 0, O_NONB}, {"eval-only", no_argument, 0, O_EVAL}, {"eval-n", required_argument, 0, O_EVALN},
        {"held-n", required_argument, 0, O_HELDN}, {"eval-method", required_argument, 0, O_EMETH},
        {"eval-opts", required_argument, 0, O_EOPTS},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    mt_opts o = {0};
    o.eval_n = 100, o.held_n = 200, o.eval_method = "mend";
    o.val_n = 100, o.loc_holdout = 5, o.rank = 64, o.init_lr = 1e-4, o.lr_g = 1e-4, o.lr_alpha = 2e-5, o.clip = 100;
    o.c_edit = 0.1, o.c_loc = 1.0, o.steps = 20000, o.accum = 5, o.val_every = 200, o.patience = 10;
    o.ckpt_every = 500, o.seed = 42;
    const char *model = NULL, *tok = NULL;
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case O_DATA: o.data = optarg; break;
        case O_LOC: o.loc_path = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_TOK: tok = optarg; break;
        case O_VALN: if (cli_parse_int("mend-train", "--val-n", optarg, 1, 1 << 20, &v)) return 2; o.val_n = (int)v; break;
        case O_LOCH: if (cli_parse_int("mend-train", "--loc-holdout", optarg, 2, 1 << 20, &v)) return 2; o.loc_holdout = (int)v; break;
        case O_ELOSS:
            if (strcmp(optarg, "both") && strcmp(optarg, "rephrase")) {
                cli_fail("mend-train", "--edit-loss wants both or rephrase, got '%s'", optarg);
                return 2;
            }
            o.rephrase_only = !strcmp(optarg, "rephrase");
            break;
        case O_RANK: if (cli_parse_int("mend-train", "--rank", optarg, 1, 1 << 16, &v)) return 2; o.rank = (int)v; break;
        case O_LAYERS: if (parse_layers(optarg, &o)) return 2; break;
        case O_INITLR: if (cli_parse_float("mend-train", "--init-lr", optarg, 0, 1e3, &o.init_lr)) return 2; break;
        case O_STEPS: if (cli_parse_int("mend-train", "--steps", optarg, 0, 1L << 30, &o.steps)) return 2; break;
        case O_ACCUM: if (cli_parse_int("mend-train", "--accum", optarg, 1, 1 << 20, &o.accum)) return 2; break;
        case O_LRG: if (cli_parse_float("mend-train", "--lr-g", optarg, 0, 10, &o.lr_g)) return 2; break;
        case O_LRA: if (cli_parse_float("mend-train", "--lr-alpha", optarg, 0, 10, &o.lr_alpha)) return 2; break;
        case O_CLIP: if (cli_parse_float("mend-train", "--clip", optarg, 0, 1e12, &o.clip)) return 2; break;
        case O_CE: if (cli_parse_float("mend-train", "--c-edit", optarg, 0, 1e6, &o.c_edit)) return 2; break;
        case O_CL: if (cli_parse_float("mend-train", "--c-loc", optarg, 0, 1e6, &o.c_loc)) return 2; break;
        case O_VALE: if (cli_parse_int("mend-train", "--val-every", optarg, 1, 1L << 30, &o.val_every)) return 2; break;
        case O_PAT: if (cli_parse_int("mend-train", "--patience", optarg, 1, 1L << 30, &o.patience)) return 2; break;
        case O_MAXM: if (cli_parse_float("mend-train", "--max-minutes", optarg, 0, 1e7, &o.max_minutes)) return 2; break;
        case O_CKPT: if (cli_parse_int("mend-train", "--ckpt-every", optarg, 1, 1L << 30, &o.ckpt_every)) return 2; break;
        case O_SEED: if (cli_parse_int("mend-train", "--seed", optarg, 0, 0x7fffffffL, &o.seed)) return 2; break;
        case O_THR: if (cli_parse_int("mend-train", "--threads", optarg, 1, 4096, &o.threads)) return 2; break;
        case O_RESUME: o.resume = 1; break;
        case O_QUIET: o.quiet = 1; break;
        case O_EVAL: o.eval_only = 1; break;
        case O_NONB: o.no_neighbour = 1; break;
        case O_EVALN: if (cli_parse_int("mend-train", "--eval-n", optarg, 1, 1 << 24, &v)) return 2; o.eval_n = (int)v; break;
        case O_HELDN: if (cli_parse_int("mend-train", "--held-n", optarg, 0, 1 << 24, &v)) return 2; o.held_n = (int)v; break;
        case O_EMETH: o.eval_method = optarg; break;
        case O_EOPTS: o.eval_opts = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !o.data || !o.loc_path || !o.out) {
        cli_fail("mend-train", optind < argc ? "unexpected argument '%s'" : "--data, --locality and --out are required%s",
                 optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    if (o.threads > 0) graft_set_threads((int)o.threads);
    graft_model *m = NULL;
    if (cli_load_model("mend-train", model, tok, &m)) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = o.eval_only ? evaluate(m, &o) : train(m, &o);
    graft_model_free(m);
    return rc;
}

static int train(graft_model *m, const mt_opts *o) {
    graft_tokenizer *tok;
    if (cli_need_tokenizer("mend-train", m, &tok)) return 1;
    graft_dataset ds = {0};
    graft_status st = graft_dataset_load(o->data, NULL, 0, &ds);
    if (st != GRAFT_OK) return cli_fail_status("mend-train", st);
    lfact *lf = NULL;
    int n_lf = 0, rc = 1;
    mcase *cs = calloc((size_t)ds.n + 1, sizeof *cs);
    graft_editor *e = NULL;
    FILE *log = NULL;
    char *ckdir = graft_path_join(o->out, "checkpoint"), *logpath = graft_path_join(o->out, "train_log.jsonl");
    st = cs && ckdir && logpath ? load_locality(tok, o->loc_path, &lf, &n_lf) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    int n = 0, n_long = 0;
    graft_model_info mi;
    graft_model_get_info(m, &mi);
    const int ctx = mi.n_ctx;
    for (int i = 0; st == GRAFT_OK && i < n_lf; i++)
        if (lf[i].n > ctx) st = graft_fail(GRAFT_ERR_RANGE, "%s: a locality fact of %d tokens; the context is %d", o->loc_path, lf[i].n, ctx);
    for (int i = 0; st == GRAFT_OK && i < ds.n; i++) {
        const graft_edit_request *r = &ds.req[i];
        if (r->n_rephrases < 1) continue; /* no equivalence example */
        st = graft_encode_pair(tok, r->prompt, r->target, &cs[n].edit);
        if (st == GRAFT_OK) st = graft_encode_pair(tok, r->rephrases[0], r->target, &cs[n].para);
        if (st == GRAFT_OK && r->n_loc > 0) {
            graft_eval_item it;
            st = graft_encode_pair(tok, r->loc_prompts[0], r->loc_answers[0], &it);
            if (st == GRAFT_OK) {
                cs[n].nb = malloc((size_t)(it.n_prompt + it.n_target) * sizeof(int));
                if (!cs[n].nb) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
                else {
                    memcpy(cs[n].nb, it.prompt, (size_t)it.n_prompt * sizeof(int));
                    memcpy(cs[n].nb + it.n_prompt, it.target, (size_t)it.n_target * sizeof(int));
                    cs[n].n_nb = it.n_prompt + it.n_target;
                }
                graft_eval_item_free(&it);
            }
        }
        /* a record that does not fit the context (the edit, its rephrase or
         * its neighbourhood fact) is skipped and counted, not fatal:
         * CounterFact's longest prompts exceed small models' contexts */
        if (st == GRAFT_OK && (cs[n].edit.n_prompt + cs[n].edit.n_target - 1 > ctx ||
                               cs[n].para.n_prompt + cs[n].para.n_target - 1 > ctx || cs[n].n_nb > ctx)) {
            graft_eval_item_free(&cs[n].edit), graft_eval_item_free(&cs[n].para), free(cs[n].nb);
            memset(&cs[n], 0, sizeof cs[n]);
            n_long++;
            continue;
        }
        if (st == GRAFT_OK) cs[n++].case_id = r->case_id;
    }
    if (st != GRAFT_OK) goto out;
    if (n_long) fprintf(stderr, "graft mend-train: %d records skipped: longer than the model's context (%d tokens)\n", n_long, ctx);
    if (n <= o->val_n + 10 || n_lf < 2 * o->loc_holdout) {
        cli_fail("mend-train", "%d usable records (with a rephrase) and %d locality facts: too few for --val-n %d", n,
                 n_lf, o->val_n);
        goto done;
    }
    int n_train = n - o->val_n;
    fprintf(stderr, "graft mend-train: %d training edits, %d validation edits (records %d..%d), %d locality facts "
                    "(every %d-th held out)\n", n_train, o->val_n, n_train, n - 1, n_lf, o->loc_holdout);

    graft_mend_opts mo;
    graft_mend_opts_default(&mo);
    mo.allow_untrained = 1;
    mo.rank = o->rank;
    mo.init_lr = (float)o->init_lr;
    mo.seed = (uint64_t)o->seed;
    mo.n_layers = o->n_layers;
    memcpy(mo.layers, o->layers, sizeof mo.layers);
    if ((st = graft_mend_create(m, &mo, &e)) != GRAFT_OK) goto out;
    if ((st = graft_mkdir_p(o->out)) != GRAFT_OK) goto out;

    long step = 0, since_best = 0;
    double best = INFINITY, best_step = 0;
    uint64_t rng = (uint64_t)o->seed * 0x9e3779b97f4a7c15ull + 1;
    if (o->resume) {
        char *mj = graft_path_join(ckdir, "mend.json"), *text = NULL;
        st = mj ? graft_read_file(mj, &text, NULL) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        cJSON *j = st == GRAFT_OK ? cJSON_Parse(text) : NULL;
        const cJSON *t = cJSON_GetObjectItem(j, "training");
        const cJSON *js = cJSON_GetObjectItem(t, "step"), *jr = cJSON_GetObjectItem(t, "rng");
        if (st == GRAFT_OK && (!cJSON_IsNumber(js) || !cJSON_IsString(jr)))
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: no training step / rng to resume from", mj);
        if (st == GRAFT_OK) {
            step = (long)js->valuedouble;
            rng = strtoull(jr->valuestring, NULL, 10);
            best = cJSON_GetObjectItem(t, "best_val_loss")->valuedouble;
            best_step = cJSON_GetObjectItem(t, "best_step")->valuedouble;
            since_best = (long)cJSON_GetObjectItem(t, "since_best")->valuedouble;
            st = graft_mend_load(e, ckdir, 1);
        }
        cJSON_Delete(j);
        free(text), free(mj);
        if (st != GRAFT_OK) goto out;
        fprintf(stderr, "graft mend-train: resumed at step %ld (best validation loss %.5g at step %.0f)\n", step, best,
                best_step);
    }
    log = fopen(logpath, o->resume ? "a" : "w");
    if (!log) {
        cli_fail("mend-train", "cannot write %s", logpath);
        goto done;
    }
    graft_progress pg;
    graft_progress_start(&pg, "mend-train", o->steps, step);
    pg.enabled = !o->quiet;
    double t0 = graft_now_s(), tr_loss = 0, tr_le = 0, tr_ll = 0, tr_ok = 0;
    long tr_n = 0;
    int stopped = 0;
    graft_mend_zero_grad(e);
    while (step < o->steps && !g_stop) {
        for (long a = 0; a < o->accum && st == GRAFT_OK; a++) {
            int ci = (int)(graft_mend_rand(&rng) % (uint64_t)n_train);
            const mcase *c = &cs[ci];
            int li = pick_loc(&rng, lf, n_lf, o->loc_holdout, 0, c->case_id);
            graft_mend_example ed = {c->edit.prompt, c->edit.target, c->edit.n_prompt, c->edit.n_target};
            graft_mend_example eq[2] = {{c->para.prompt, c->para.target, c->para.n_prompt, c->para.n_target}, ed};
            graft_mend_loss L;
            int *loc = NULL, lens[2] = {0, 0}, nl = 0;
            if (li >= 0) st = locality_text(c, &lf[li], !o->no_neighbour, &loc, lens, &nl);
            if (st == GRAFT_OK)
                st = graft_mend_meta_loss(e, &ed, eq, o->rephrase_only ? 1 : 2, loc, lens[0] + lens[1], lens, nl,
                                          o->c_edit, o->c_loc, 1, 1, &L);
            free(loc);
            if (st != GRAFT_OK) break;
            tr_loss += L.total, tr_le += L.l_edit, tr_ll += L.l_loc, tr_ok += L.edit_ok;
            tr_n++;
        }
        if (st != GRAFT_OK) break;
        double gn = graft_mend_opt_step(e, (int)o->accum, o->clip, (float)o->lr_g, (float)o->lr_alpha);
        if (!isfinite(gn)) {
            st = graft_fail(GRAFT_ERR_INTERNAL, "mend-train: non-finite gradient at step %ld (lower --lr-g?)", step);
            break;
        }
        step++;
        char extra[128];
        snprintf(extra, sizeof extra, "L %.4f L_e %.3f KL %.4f ok %.2f", tr_loss / tr_n, tr_le / tr_n, tr_ll / tr_n,
                 tr_ok / tr_n);
        graft_progress_update(&pg, step, extra);
        double minutes = (graft_now_s() - t0) / 60.0;
        int out_of_time = o->max_minutes > 0 && minutes >= o->max_minutes;
        if (step % o->val_every == 0 || step == o->steps || out_of_time) {
            val_result vr;
            if ((st = validate(e, o, cs, n, n_train, lf, n_lf, &vr)) != GRAFT_OK) break;
            int better = vr.loss < best;
            if (better) best = vr.loss, best_step = (double)step, since_best = 0;
            else since_best++;
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "step", (double)step);
            cJSON_AddNumberToObject(j, "train_loss", tr_loss / tr_n);
            cJSON_AddNumberToObject(j, "train_l_edit", tr_le / tr_n);
            cJSON_AddNumberToObject(j, "train_kl", tr_ll / tr_n);
            cJSON_AddNumberToObject(j, "train_edit_ok", tr_ok / tr_n);
            cJSON_AddNumberToObject(j, "val_loss", vr.loss);
            cJSON_AddNumberToObject(j, "val_es_tf", vr.es_tf);
            cJSON_AddNumberToObject(j, "val_ps_tf", vr.ps_tf);
            cJSON_AddNumberToObject(j, "val_kl", vr.l_loc);
            cJSON_AddNumberToObject(j, "val_loc_same", vr.loc_same);
            cJSON_AddNumberToObject(j, "grad_norm", gn);
            cJSON *al = cJSON_AddArrayToObject(j, "alpha");
            graft_mend_info info;
            graft_mend_get_info(e, &info);
            for (int i = 0; i < info.n_mats; i++) {
                float *ap;
                graft_mend_mat(e, i, NULL, NULL, &ap, NULL);
                graft_json_push(al, cJSON_CreateNumber(*ap));
            }
            cJSON_AddNumberToObject(j, "minutes", (double)(long)(minutes * 100) / 100);
            char *line = cJSON_PrintUnformatted(j);
            if (line) fprintf(log, "%s\n", line), fflush(log);
            free(line);
            cJSON_Delete(j);
            if (!o->quiet) {
                graft_progress_end(&pg);
                fprintf(stderr, "step %ld: val loss %.5f (ES_tf %.3f, PS_tf %.3f, KL %.5f, loc argmax kept %.3f)%s\n",
                        step, vr.loss, vr.es_tf, vr.ps_tf, vr.l_loc, vr.loc_same, better ? " best" : "");
                graft_progress_start(&pg, "mend-train", o->steps, step);
            }
            tr_loss = tr_le = tr_ll = tr_ok = 0, tr_n = 0;
            if (better) {
                char *x = extra_json(o, step, rng, best, since_best, best_step, &vr);
                st = graft_mend_save(e, o->out, 0, x);
                free(x);
                if (st != GRAFT_OK) break;
            }
            plot_log(o->out);
            if (since_best >= o->patience) {
                fprintf(stderr, "graft mend-train: early stop at step %ld: no better validation loss for %ld checks "
                                "(best %.5f at step %.0f)\n", step, since_best, best, best_step);
                stopped = 1;
                break;
            }
            if (out_of_time) {
                fprintf(stderr, "graft mend-train: stopping after %.1f minutes (--max-minutes)\n", minutes);
                stopped = 1;
                break;
            }
        }
        if (step % o->ckpt_every == 0) {
            char *x = extra_json(o, step, rng, best, since_best, best_step, NULL);
            st = graft_mend_save(e, ckdir, 1, x);
            free(x);
            if (st != GRAFT_OK) break;
        }
    }
    graft_progress_end(&pg);
    if (st == GRAFT_OK) {
        /* the state at the stop, for --resume */
        char *x = extra_json(o, step, rng, best, since_best, best_step, NULL);
        st = graft_mend_save(e, ckdir, 1, x);
        free(x);
    }
    if (st == GRAFT_OK) {
        if (g_stop) fprintf(stderr, "graft mend-train: interrupted at step %ld; checkpoint in %s\n", step, ckdir);
        else if (!stopped) fprintf(stderr, "graft mend-train: %ld steps done\n", step);
        fprintf(stderr, "graft mend-train: best editor (validation loss %.5f at step %.0f) in %s\n", best, best_step,
                o->out);
        rc = g_stop ? 1 : 0;
    }
out:
    if (st != GRAFT_OK) rc = cli_fail_status("mend-train", st);
done:
    if (log) fclose(log);
    if (e) e->ops->free(e);
    for (int i = 0; cs && i < ds.n; i++)
        graft_eval_item_free(&cs[i].edit), graft_eval_item_free(&cs[i].para), free(cs[i].nb);
    free(cs);
    for (int i = 0; i < n_lf; i++) free(lf[i].ids);
    free(lf);
    free(ckdir), free(logpath);
    graft_dataset_free(&ds);
    return rc;
}

/* ---------------------------------------------------------------- --eval-only */

/* Greedy exact match of each item's target (1/0 per item into ok). */
static graft_status exact_match(graft_model *m, const graft_eval_item *it, int n, int *ok) {
    int total = 0;
    for (int i = 0; i < n; i++) total += it[i].n_target;
    int *gen = malloc((size_t)(total ? total : 1) * sizeof(int));
    if (!gen) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    graft_status st = graft_eval_gen(m, NULL, it, n, gen);
    for (int i = 0, at = 0; st == GRAFT_OK && i < n; at += it[i++].n_target)
        ok[i] = !memcmp(gen + at, it[i].target, (size_t)it[i].n_target * sizeof(int));
    free(gen);
    return st;
}

static int evaluate(graft_model *m, const mt_opts *o) {
    graft_tokenizer *tok;
    if (cli_need_tokenizer("mend-train", m, &tok)) return 1;
    graft_dataset ds = {0};
    graft_status st = graft_dataset_load(o->data, NULL, o->eval_n, &ds);
    if (st != GRAFT_OK) return cli_fail_status("mend-train", st);
    int rc = 1, n = ds.n, n_held = 0;
    graft_eval_item *held = NULL, *one = calloc(3, sizeof *one);
    int *held_ok0 = NULL, *held_ok = NULL, *ok = calloc(3, sizeof(int));
    graft_editor *e = NULL;
    char *tmp_opts = NULL, *text = NULL;
    /* held-out locality facts: the rows mend-train never trained on */
    st = graft_read_file(o->loc_path, &text, NULL);
    if (st == GRAFT_OK) {
        held = calloc((size_t)o->held_n + 1, sizeof *held);
        int line = 0;
        for (char *s = text, *nl; held && s && *s && n_held < o->held_n; s = nl ? nl + 1 : NULL, line++) {
            nl = strchr(s, '\n');
            if (nl) *nl = 0;
            if (line % o->loc_holdout) continue;
            cJSON *j = cJSON_Parse(s);
            const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
            if (cJSON_IsString(p) && cJSON_IsString(a) &&
                graft_encode_pair(tok, p->valuestring, a->valuestring, &held[n_held]) == GRAFT_OK)
                n_held++;
            cJSON_Delete(j);
        }
        held_ok0 = calloc((size_t)n_held + 1, sizeof(int));
        held_ok = calloc((size_t)n_held + 1, sizeof(int));
        if (!held || !held_ok0 || !held_ok || !one || !ok) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (st == GRAFT_OK) st = exact_match(m, held, n_held, held_ok0);
    if (st == GRAFT_OK) {
        const char *opts = o->eval_opts;
        if (!opts && !strcmp(o->eval_method, "mend")) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "editor", o->out);
            opts = tmp_opts = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
        }
        st = graft_editor_create(m, o->eval_method, opts, &e);
    }
    int base0 = 0;
    for (int i = 0; i < n_held; i++) base0 += held_ok0[i];
    double es = 0, ps = 0, ns = 0, dd = 0, worst_dd = 0, t0 = graft_now_s();
    int n_ps = 0, n_ns = 0, es_before = 0;
    graft_progress pg;
    graft_progress_start(&pg, "single edits", n, 0);
    pg.enabled = !o->quiet;
    for (int i = 0; st == GRAFT_OK && i < n; i++) {
        const graft_edit_request *r = &ds.req[i];
        int k = 0;
        st = graft_encode_pair(tok, r->prompt, r->target, &one[k++]);
        if (st == GRAFT_OK && r->n_rephrases > 0) st = graft_encode_pair(tok, r->rephrases[0], r->target, &one[k++]);
        if (st == GRAFT_OK && r->n_loc > 0) st = graft_encode_pair(tok, r->loc_prompts[0], r->loc_answers[0], &one[k++]);
        int pre_ok[3] = {0, 0, 0};
        if (st == GRAFT_OK) st = exact_match(m, one, k, pre_ok);
        es_before += pre_ok[0];
        graft_edit_info info;
        graft_blob ch = {0};
        graft_edit_tok req = {one[0].prompt, one[0].n_prompt, one[0].target, one[0].n_target, -1};
        if (st == GRAFT_OK) st = e->ops->apply(e, &req, &info, &ch);
        graft_blob_free(&ch);
        if (st == GRAFT_OK) st = exact_match(m, one, k, ok);
        if (st == GRAFT_OK) st = exact_match(m, held, n_held, held_ok);
        if (st == GRAFT_OK) {
            es += ok[0];
            if (r->n_rephrases > 0) ps += ok[1], n_ps++;
            if (r->n_loc > 0) ns += ok[k - 1] == pre_ok[k - 1] && ok[k - 1], n_ns += pre_ok[k - 1];
            int now = 0;
            for (int h = 0; h < n_held; h++) now += held_ok[h];
            double d = n_held ? (double)(base0 - now) / n_held : 0;
            dd += d;
            if (d > worst_dd) worst_dd = d;
        }
        if (e && e->ops->reset) {
            graft_status s2 = e->ops->reset(e);
            if (st == GRAFT_OK) st = s2;
        }
        for (int q = 0; q < 3; q++) graft_eval_item_free(&one[q]);
        char extra[96];
        snprintf(extra, sizeof extra, "ES %.3f", es / (i + 1));
        graft_progress_update(&pg, i + 1, extra);
    }
    graft_progress_end(&pg);
    if (st == GRAFT_OK && e && !e->ops->reset)
        st = graft_fail(GRAFT_ERR_UNSUPPORTED, "--eval-only needs a weight editor (one that resets)");
    if (st == GRAFT_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", o->eval_method);
        if (o->eval_opts) cJSON_AddStringToObject(j, "options", o->eval_opts);
        cJSON_AddStringToObject(j, "data", o->data);
        cJSON_AddNumberToObject(j, "n_edits", n);
        cJSON_AddNumberToObject(j, "es_before", (double)es_before / n);
        cJSON_AddNumberToObject(j, "es", es / n);
        cJSON_AddNumberToObject(j, "ps", n_ps ? ps / n_ps : 0);
        cJSON_AddNumberToObject(j, "ns_kept", n_ns ? ns / n_ns : 0);
        cJSON_AddNumberToObject(j, "held_n", n_held);
        cJSON_AddNumberToObject(j, "held_acc_before", n_held ? (double)base0 / n_held : 0);
        cJSON_AddNumberToObject(j, "held_drawdown_mean", dd / n);
        cJSON_AddNumberToObject(j, "held_drawdown_worst", worst_dd);
        cJSON_AddNumberToObject(j, "seconds", graft_now_s() - t0);
        char *js = cJSON_Print(j);
        if (js) printf("%s\n", js);
        char name[128];
        snprintf(name, sizeof name, "eval_single_%s.json", o->eval_method);
        char *path = graft_path_join(o->out, name);
        if (js && path && graft_mkdir_p(o->out) == GRAFT_OK) st = graft_write_file_atomic(path, js, strlen(js));
        free(path), free(js);
        cJSON_Delete(j);
        rc = st == GRAFT_OK ? 0 : 1;
    }
    if (st != GRAFT_OK) rc = cli_fail_status("mend-train", st);
    if (e) e->ops->free(e);
    for (int i = 0; held && i < n_held; i++) graft_eval_item_free(&held[i]);
    free(held), free(held_ok0), free(held_ok), free(one), free(ok), free(tmp_opts), free(text);
    graft_dataset_free(&ds);
    return rc;
}
