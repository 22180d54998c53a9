/* cmd_score.c - graft score: mean next-token NLL and perplexity of a text. */
#include "cli.h"
#include "internal.h"
#include "edit/eval.h"
#include "edit/journal.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft score [-m MODEL] (--text TEXT | --text-file FILE | --ids 1,2,3) [--stride N]\n"
          "                   [--tokenizer PATH] [--no-bos]\n"
          "Prints {\"tokens\": N, \"scored\": K, \"nll\": mean NLL in nats, \"ppl\": exp(nll)}.\n"
          "Texts longer than the context are scored in sliding windows (each token once).\n"
          "  --stride N   step between windows (default: half the context)\n"
          "  --no-bos     do not prepend BOS to text (llama2.c-style models get one by default)\n"
          "  --adaptor DIR  score through the edits of a run/adaptor folder (non-overlapping windows,\n"
          "               each window's key at its last token, GRACE's upstream convention)\n",
          out);
}

int cmd_score(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},     {"text", required_argument, 0, 't'},
                                         {"text-file", required_argument, 0, 'f'}, {"ids", required_argument, 0, 'i'},
                                         {"stride", required_argument, 0, 's'},    {"tokenizer", required_argument, 0, 'T'},
                                         {"no-bos", no_argument, 0, 'B'},          {"adaptor", required_argument, 0, 'A'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL, *file = NULL, *ids_arg = NULL, *tok_path = NULL, *adaptor = NULL;
    long stride = 0;
    int add_bos = -1, c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 'i': ids_arg = optarg; break;
        case 's':
            if (cli_parse_int("score", "--stride", optarg, 1, 1 << 24, &stride)) return 2;
            break;
        case 'T': tok_path = optarg; break;
        case 'B': add_bos = 0; break;
        case 'A': adaptor = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((text != NULL) + (file != NULL) + (ids_arg != NULL) != 1 || optind < argc) {
        cli_fail("score", "give exactly one of --text, --text-file, --ids");
        usage(stderr);
        return 2;
    }
    graft_model *m = NULL;
    if (cli_load_model("score", model, tok_path, &m)) return 1;
    int rc = 1, *ids = NULL;
    size_t n = 0;
    char *buf = NULL;
    if (ids_arg) {
        if (cli_parse_ids("score", ids_arg, &ids, &n)) goto done;
    } else {
        graft_tokenizer *tok;
        if (cli_need_tokenizer("score", m, &tok)) goto done;
        size_t len;
        if (file) {
            graft_status st = graft_read_file(file, &buf, &len);
            if (st != GRAFT_OK) {
                cli_fail_status("score", st);
                goto done;
            }
            text = buf;
        } else
            len = strlen(text);
        if (cli_encode("score", tok, text, len, add_bos, &ids, &n)) goto done;
    }
    double nll;
    size_t scored;
    graft_status st;
    if (adaptor) {
        graft_editor *ed = NULL;
        st = graft_adaptor_open(m, adaptor, &ed, NULL);
        if (st == GRAFT_OK) st = graft_eval_nll(m, ed, ids, n, m->cfg.n_ctx, &nll, &scored);
        if (ed) ed->ops->free(ed);
    } else
        st = graft_score_ids(m, ids, n, (int)stride, &nll, &scored);
    if (st != GRAFT_OK) {
        cli_fail_status("score", st);
        goto done;
    }
    printf("{\"tokens\": %zu, \"scored\": %zu, \"nll\": %.6f, \"ppl\": %.6f}\n", n, scored, nll, exp(nll));
    rc = 0;
done:
    free(ids);
    free(buf);
    graft_model_free(m);
    return rc;
}
