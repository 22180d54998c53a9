/* cmd_export.c - graft export: merge the edits of a run/adaptor folder into
 * the model and write the result as a complete Hugging Face folder, so an
 * edited model can be served by anything that reads save_pretrained output
 * (and by graft itself, with identical logits in F32), and/or as a GGUF file
 * for llama.cpp (--gguf; without --adaptor it converts the model as it is).
 *
 * Only weight editors (FT, FT-L, FT+EWC, ROME, MEMIT, ...) can be merged:
 * their edits are weight deltas. An activation editor such as GRACE keeps a
 * codebook that decides per input whether to replace an activation; no
 * weight matrix can express that, so export refuses and points at
 * --adaptor, which serves those edits at inference. */
#include "cli.h"
#include "edit/journal.h"
#include "model/gguf.h"
#include "model/save.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft export [-m MODEL] --adaptor DIR --out NEWDIR [--dtype f32|f16|bf16] [--tokenizer PATH]\n"
          "       graft export [-m MODEL] [--adaptor DIR] --gguf OUT.gguf [--out NEWDIR] [...]\n"
          "Replays the edit journal of DIR (a `graft edit` run folder) into MODEL and writes the edited\n"
          "model to NEWDIR as a Hugging Face folder: config.json, model.safetensors, generation_config.json,\n"
          "the tokenizer files, and graft_export.json (what was merged). Undone edits are not included.\n"
          "  -m, --model PATH   the model the edits were made on (default: $GRAFT_MODEL, else models/factpara)\n"
          "  --adaptor DIR      the run/adaptor folder (its journal.sqlite)\n"
          "  --out NEWDIR       where to write the edited model (must not already hold a model)\n"
          "  --gguf OUT.gguf    also (or only) write a GGUF v3 file in llama.cpp's layout, tokenizer\n"
          "                     embedded (docs/GGUF.md); without --adaptor the model is converted as is\n"
          "  --dtype D          f32 (default; reloads with identical logits), f16 or bf16\n"
          "  --tokenizer PATH   tokenizer to write alongside, when not beside the model\n"
          "Only weight-editing methods can be exported; GRACE edits are served with --adaptor DIR.\n",
          out);
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"adaptor", required_argument, 0, 'a'},
                                         {"out", required_argument, 0, 'o'},   {"dtype", required_argument, 0, 'd'},
                                         {"tokenizer", required_argument, 0, 'T'}, {"gguf", required_argument, 0, 'g'},
                                         {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *model = NULL, *dir = NULL, *out = NULL, *tok = NULL, *gguf = NULL;
    graft_dtype dt = GRAFT_F32;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'a': dir = optarg; break;
        case 'o': out = optarg; break;
        case 'T': tok = optarg; break;
        case 'g': gguf = optarg; break;
        case 'd':
            if (graft_dtype_parse_float(optarg, &dt)) {
                cli_fail("export", "--dtype wants f32, f16 or bf16, got '%s'", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    /* --gguf alone converts a model; an HF folder is written only from edits */
    if (optind < argc || (!gguf && (!dir || !out))) {
        cli_fail("export", optind < argc ? "unexpected argument '%s'" : "--adaptor and --out (or --gguf) are required%s",
                 optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    if (out && !dir) {
        cli_fail("export", "--out writes an edited model and needs --adaptor (to convert a model, use --gguf)");
        usage(stderr);
        return 2;
    }
    if (!model) model = cli_default_model();
    if (out && model && !strcmp(model, out))
        return cli_fail("export", "--out is the model itself; write the edited model elsewhere");
    if (out && graft_dir_holds_model(out))
        return cli_fail("export", "%s already holds a model; choose another --out (export never overwrites a model)", out);
    if (gguf && model && !strcmp(model, gguf))
        return cli_fail("export", "--gguf is the model itself; write the GGUF file elsewhere");
    if (gguf && graft_path_exists(gguf))
        return cli_fail("export", "%s already exists; choose another --gguf (export never overwrites a model)", gguf);

    graft_model *m = NULL;
    if (cli_load_model("export", model, tok, &m)) return 1;
    graft_editor *e = NULL;
    graft_status st = GRAFT_OK;
    int rc = 1;
    if (!dir) {
        /* a conversion: the model as loaded */
        if ((st = graft_model_save_gguf(m, gguf, dt)) != GRAFT_OK) cli_fail_status("export", st);
        else {
            fprintf(stderr, "graft export: wrote %s (GGUF v3, %s%s)\n", gguf, graft_dtype_name(dt),
                    graft_model_tokenizer(m) ? ", tokenizer embedded" : ", no tokenizer: give one with --tokenizer");
            rc = 0;
        }
        graft_model_free(m);
        return rc;
    }
    st = graft_adaptor_open(m, dir, &e, NULL);
    if (st != GRAFT_OK)
        cli_fail_status("export", st);
    else if (e->ops->attach) {
        /* an activation editor (GRACE, MELO: MELO resets too, so `reset` does
         * not tell them apart): its state is not a weight delta. (A
         * PostgreSQL URI is shown without its password.) */
        char *shown = graft_journal_is_uri(dir) ? graft_journal_redact(dir) : NULL;
        const char *d = shown ? shown : dir;
        cli_fail("export",
                 "%s holds %s edits, which act on activations through hooks (a codebook, or LoRA blocks chosen "
                 "per input) and cannot be merged into the weights; serve them with --adaptor %s (graft "
                 "generate/score/serve), or save their state with `graft edits export FILE --adaptor %s`",
                 d, e->ops->name, d, d);
        free(shown);
    }
    else if (out && ((st = graft_model_save_hf(m, out, dt)) != GRAFT_OK ||
                     (st = graft_export_provenance(out, model, dir, e, e->n_edits, dt)) != GRAFT_OK))
        cli_fail_status("export", st);
    else if (gguf && (st = graft_model_save_gguf(m, gguf, dt)) != GRAFT_OK)
        cli_fail_status("export", st);
    else {
        fprintf(stderr, "graft export: merged %lld %s edit%s into %s%s%s (%s)\n", (long long)e->n_edits,
                e->ops->name, e->n_edits == 1 ? "" : "s", out ? out : "", out && gguf ? " and " : "",
                gguf ? gguf : "", graft_dtype_name(dt));
        rc = 0;
    }
    if (e) e->ops->free(e);
    graft_model_free(m);
    return rc;
}
