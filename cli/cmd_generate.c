/* cmd_generate.c - graft generate: continue a prompt with a KV cache. */
#include "cli.h"
#include "internal.h"
#include "edit/journal.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft generate [-m MODEL] [-p TEXT | --prompt-file F] [-n N] [--temp T] [--top-p P] [--seed S]\n"
          "                      [--tokenizer PATH] [--no-bos] [--ids]\n"
          "Prints the continuation of the prompt.\n"
          "  -m, --model PATH   HF folder or llama2.c .bin (default: $GRAFT_MODEL, else models/factpara)\n"
          "  -p, --prompt TEXT  the prompt (default: empty; generation starts from BOS)\n"
          "  --prompt-file F    the prompt is the contents of file F\n"
          "  -n, --tokens N     new tokens at most (default 64)\n"
          "  --temp T           sampling temperature; 0 is greedy (default 0)\n"
          "  --top-p P          nucleus sampling mass (default 1 = off)\n"
          "  --seed S           sampling seed (default 42)\n"
          "  --tokenizer PATH   tokenizer file or folder, when not beside the model\n"
          "  --no-bos           do not prepend BOS (llama2.c-style models get one by default)\n"
          "  --ids              print the generated token ids as a JSON array instead of text\n"
          "  --adaptor DIR      apply the edits of a run/adaptor folder (graft edit --out DIR)\n",
          out);
}

typedef struct {
    graft_tokenizer *tok;
    int prev;
} stream;

static int print_token(void *user, int id) {
    stream *s = user;
    const char *bytes;
    size_t len;
    if (graft_token_piece(s->tok, s->prev, id, &bytes, &len) == GRAFT_OK) {
        fwrite(bytes, 1, len, stdout);
        fflush(stdout);
    }
    s->prev = id;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},  {"prompt", required_argument, 0, 'p'},
                                         {"tokens", required_argument, 0, 'n'}, {"temp", required_argument, 0, 't'},
                                         {"top-p", required_argument, 0, 'P'},  {"seed", required_argument, 0, 's'},
                                         {"tokenizer", required_argument, 0, 'T'}, {"no-bos", no_argument, 0, 'B'},
                                         {"ids", no_argument, 0, 'I'},          {"adaptor", required_argument, 0, 'A'},
                                         {"help", no_argument, 0, 'h'},
                                         {"prompt-file", required_argument, 0, 'f'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *tok_path = NULL, *adaptor = NULL, *prompt_file = NULL;
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    int add_bos = -1, print_ids = 0, c;
    long lv;
    double dv;
    while ((c = getopt_long(argc, argv, "m:p:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'n':
            if (cli_parse_int("generate", "-n", optarg, 0, 1 << 20, &lv)) return 2;
            o.max_new_tokens = (int)lv;
            break;
        case 't':
            if (cli_parse_float("generate", "--temp", optarg, 0, 100, &dv)) return 2;
            o.temperature = (float)dv;
            break;
        case 'P':
            if (cli_parse_float("generate", "--top-p", optarg, 1e-6, 1, &dv)) return 2;
            o.top_p = (float)dv;
            break;
        case 's':
            if (cli_parse_int("generate", "--seed", optarg, 0, 0x7fffffffL, &lv)) return 2;
            o.seed = (uint64_t)lv;
            break;
        case 'T': tok_path = optarg; break;
        case 'B': add_bos = 0; break;
        case 'I': print_ids = 1; break;
        case 'A': adaptor = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        cli_fail("generate", "unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (prompt && prompt_file) {
        cli_fail("generate", "give at most one of --prompt and --prompt-file");
        usage(stderr);
        return 2;
    }
    graft_model *m = NULL;
    if (cli_load_model("generate", model, tok_path, &m)) return 1;
    graft_tokenizer *tok;
    graft_editor *ed = NULL;
    int rc = 1;
    /* declared before the first goto: done frees them */
    int *ids = NULL, *gen = NULL;
    size_t n = 0, n_gen = 0, len = prompt ? strlen(prompt) : 0;
    char *buf = NULL;
    if (adaptor) {
        graft_status ast = graft_adaptor_open(m, adaptor, &ed, NULL);
        if (ast != GRAFT_OK) {
            cli_fail_status("generate", ast);
            goto done;
        }
    }
    if (prompt_file) {
        /* a command-line argument holds at most 128 KiB on Linux; a file has no such limit */
        graft_status fst = graft_read_file(prompt_file, &buf, &len);
        if (fst != GRAFT_OK) {
            cli_fail_status("generate", fst);
            goto done;
        }
        prompt = buf;
    }
    if (cli_need_tokenizer("generate", m, &tok)) goto done;
    if (cli_encode("generate", tok, prompt ? prompt : "", len, add_bos, &ids, &n)) goto done;
    if (n == 0) {
        /* An empty prompt starts from BOS (or GPT-2's <|endoftext|>). */
        int start = graft_tokenizer_bos(tok) >= 0 ? graft_tokenizer_bos(tok) : graft_tokenizer_eos(tok);
        if (start < 0) {
            cli_fail("generate", "empty prompt and the tokenizer has no BOS/EOS token to start from");
            goto done;
        }
        free(ids);
        ids = malloc(sizeof *ids);
        if (!ids) goto done;
        ids[0] = start;
        n = 1;
    }
    stream s = {tok, ids[n - 1]};
    graft_status st = graft_editor_generate(ed, m, ids, n, &o, print_ids ? NULL : print_token, &s, &gen, &n_gen);
    if (st != GRAFT_OK) {
        if (!print_ids) fputc('\n', stdout);
        cli_fail_status("generate", st);
        goto done;
    }
    if (print_ids) {
        fputc('[', stdout);
        for (size_t i = 0; i < n_gen; i++) printf(i ? ", %d" : "%d", gen[i]);
        fputs("]\n", stdout);
    } else
        fputc('\n', stdout);
    rc = 0;
done:
    if (ed) ed->ops->free(ed);
    free(buf);
    free(ids);
    free(gen);
    graft_model_free(m);
    return rc;
}
