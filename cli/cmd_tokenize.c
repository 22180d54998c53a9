/* cmd_tokenize.c - graft tokenize: text -> ids (JSON array), or ids -> text. */
#include "cli.h"
#include "internal.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft tokenize [-m MODEL | --tokenizer PATH]\n"
          "                      (--text TEXT [--target T] | --text-file F | --decode 1,2,3) [--bos]\n"
          "  --text TEXT     print the token ids of TEXT as a JSON array (no BOS unless --bos)\n"
          "  --text-file F   the same for the contents of file F (texts longer than a command line allows)\n"
          "  --target T      with --text PROMPT: the edit's tokens, as every editor and metric takes them:\n"
          "                  {\"prompt\": [...], \"target\": [...], \"merged\": false} (docs/GRACE.md)\n"
          "  --decode IDS    print the text of a comma-separated id list\n",
          out);
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},  {"text", required_argument, 0, 't'},
                                         {"decode", required_argument, 0, 'd'}, {"tokenizer", required_argument, 0, 'T'},
                                         {"bos", no_argument, 0, 'B'},          {"help", no_argument, 0, 'h'},
                                         {"target", required_argument, 0, 'g'},
                                         {"text-file", required_argument, 0, 'f'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL, *decode = NULL, *tok_path = NULL, *target = NULL, *file = NULL;
    int bos = 0, c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 'd': decode = optarg; break;
        case 'T': tok_path = optarg; break;
        case 'B': bos = 1; break;
        case 'g': target = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((text != NULL) + (file != NULL) + (decode != NULL) != 1 || optind < argc || (target && !text)) {
        cli_fail("tokenize", target && !text ? "--target needs --text (the prompt)"
                                             : "give exactly one of --text, --text-file or --decode");
        usage(stderr);
        return 2;
    }
    /* A tokenizer alone is enough; the model is loaded only to find one. */
    graft_tokenizer *tok = NULL, *owned = NULL;
    graft_model *m = NULL;
    graft_status st;
    if (tok_path) {
        st = graft_tokenizer_load(tok_path, &owned);
        if (st != GRAFT_OK) return cli_fail_status("tokenize", st);
        tok = owned;
    } else {
        if (cli_load_model("tokenize", model, NULL, &m)) return 1;
        if (cli_need_tokenizer("tokenize", m, &tok)) {
            graft_model_free(m);
            return 1;
        }
    }
    int rc = 1;
    int *ids = NULL;
    size_t n = 0, text_len = text ? strlen(text) : 0;
    char *buf = NULL;
    if (file) {
        /* a command-line argument holds at most 128 KiB on Linux; a file has no such limit */
        st = graft_read_file(file, &buf, &text_len);
        if (st != GRAFT_OK) {
            cli_fail_status("tokenize", st);
            goto done;
        }
        text = buf;
    }
    if (text && target) {
        int *t = NULL, merged = 0;
        size_t nt = 0;
        st = graft_tokenize_pair(tok, text, target, &ids, &n, &t, &nt, &merged);
        if (st != GRAFT_OK) {
            cli_fail_status("tokenize", st);
            goto done;
        }
        int b = bos || !strcmp(graft_tokenizer_kind(tok), "llama2c-spm") ? graft_tokenizer_bos(tok) : -1;
        fputs("{\"prompt\": [", stdout);
        if (b >= 0) printf("%d", b);
        for (size_t i = 0; i < n; i++) printf(i || b >= 0 ? ", %d" : "%d", ids[i]);
        fputs("], \"target\": [", stdout);
        for (size_t i = 0; i < nt; i++) printf(i ? ", %d" : "%d", t[i]);
        printf("], \"merged\": %s}\n", merged ? "true" : "false");
        free(t);
    } else if (text) {
        if (cli_encode("tokenize", tok, text, text_len, bos, &ids, &n)) goto done;
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        fputs("]\n", stdout);
    } else {
        if (cli_parse_ids("tokenize", decode, &ids, &n)) goto done;
        char *out = NULL;
        size_t len = 0;
        st = graft_detokenize(tok, ids, n, &out, &len);
        if (st != GRAFT_OK) {
            cli_fail_status("tokenize", st);
            goto done;
        }
        fwrite(out, 1, len, stdout);
        fputc('\n', stdout);
        free(out);
    }
    rc = 0;
done:
    free(ids);
    free(buf);
    graft_tokenizer_free(owned);
    graft_model_free(m);
    return rc;
}
