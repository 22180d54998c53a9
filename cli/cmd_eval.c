/* cmd_eval.c - graft eval: how well a model (optionally through an adaptor)
 * answers prompt -> answer pairs, under both accuracy definitions, and its
 * perplexity on a text. The fact model's quality figures come from here. */
#include "cli.h"
#include "edit/eval.h"
#include "edit/journal.h"
#include "internal.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft eval [-m MODEL] (--facts FILE.jsonl ... | --text FILE) [--n N] [--adaptor DIR] [--json]\n"
          "  --facts FILE   JSONL rows {\"prompt\", \"answer\"} (or \"target\"); may be repeated\n"
          "  --text FILE    also report the perplexity of this text (non-overlapping context windows)\n"
          "  --n N          at most N rows of each facts file (default: all)\n"
          "  --adaptor DIR  through the edits of a run/adaptor folder\n"
          "  --show-errors K  print up to K wrong answers per file\n"
          "Prints, per file: exact-match greedy accuracy (gen: the greedy continuation equals the\n"
          "answer's tokens) and teacher-forced token accuracy (tf).\n",
          out);
}

typedef struct {
    graft_eval_item *it;
    char **prompt;
    int n, cap;
} facts;

static graft_status load_facts(graft_tokenizer *tok, const char *path, long max, facts *f) {
    char *text = NULL;
    GRAFT_TRY(graft_read_file(path, &text, NULL));
    graft_status st = GRAFT_OK;
    int row = 0;
    for (char *line = strtok(text, "\n"); line && st == GRAFT_OK && (max <= 0 || f->n < max); line = strtok(NULL, "\n")) {
        row++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        cJSON *j = cJSON_Parse(line);
        const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
        if (!a) a = cJSON_GetObjectItem(j, "target");
        if (!j || !cJSON_IsString(p) || !cJSON_IsString(a)) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: want {\"prompt\": string, \"answer\": string}", path, row);
        } else {
            if (f->n == f->cap) {
                f->cap = f->cap ? 2 * f->cap : 256;
                f->it = realloc(f->it, (size_t)f->cap * sizeof *f->it);
                f->prompt = realloc(f->prompt, (size_t)f->cap * sizeof *f->prompt);
                if (!f->it || !f->prompt) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
            }
            if (st == GRAFT_OK) st = graft_encode_pair(tok, p->valuestring, a->valuestring, &f->it[f->n]);
            if (st == GRAFT_OK) f->prompt[f->n++] = strdup(p->valuestring);
            else graft_fail_prefix(st, "%s: row %d", path, row);
        }
        cJSON_Delete(j);
    }
    free(text);
    return st;
}

static void free_facts(facts *f) {
    for (int i = 0; i < f->n; i++) graft_eval_item_free(&f->it[i]), free(f->prompt[i]);
    free(f->it), free(f->prompt);
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"facts", required_argument, 0, 'f'},
                                         {"text", required_argument, 0, 't'},  {"n", required_argument, 0, 'n'},
                                         {"adaptor", required_argument, 0, 'A'}, {"json", no_argument, 0, 'j'},
                                         {"show-errors", required_argument, 0, 'E'}, {"tokenizer", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL, *adaptor = NULL, *tok_path = NULL, *files[16];
    int nf = 0, json = 0, c;
    long max = 0, show = 0;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'f':
            if (nf == 16) return cli_fail("eval", "at most 16 --facts files");
            files[nf++] = optarg;
            break;
        case 't': text = optarg; break;
        case 'n': if (cli_parse_int("eval", "--n", optarg, 1, 1L << 30, &max)) return 2; break;
        case 'A': adaptor = optarg; break;
        case 'j': json = 1; break;
        case 'E': if (cli_parse_int("eval", "--show-errors", optarg, 0, 1L << 20, &show)) return 2; break;
        case 'T': tok_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (nf == 0 && !text)) {
        cli_fail("eval", "give --facts FILE and/or --text FILE");
        usage(stderr);
        return 2;
    }
    graft_model *m = NULL;
    if (cli_load_model("eval", model, tok_path, &m)) return 1;
    graft_tokenizer *tok;
    graft_editor *e = NULL;
    int rc = 1;
    if (cli_need_tokenizer("eval", m, &tok)) goto done;
    graft_status st = adaptor ? graft_adaptor_open(m, adaptor, &e, NULL) : GRAFT_OK;
    if (st != GRAFT_OK) {
        cli_fail_status("eval", st);
        goto done;
    }
    if (json) printf("{");
    for (int k = 0; k < nf; k++) {
        facts f = {0};
        st = load_facts(tok, files[k], max, &f);
        int total = 0;
        for (int i = 0; i < f.n; i++) total += f.it[i].n_target;
        int *tf = malloc((size_t)(total + 1) * sizeof(int)), *gen = malloc((size_t)(total + 1) * sizeof(int));
        if (st == GRAFT_OK && (!tf || !gen)) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        if (st == GRAFT_OK) st = graft_eval_tf(m, e, f.it, f.n, tf);
        if (st == GRAFT_OK) st = graft_eval_gen(m, e, f.it, f.n, gen);
        if (st != GRAFT_OK) {
            free(tf), free(gen), free_facts(&f);
            cli_fail_status("eval", st);
            goto done;
        }
        double tf_sum = 0;
        int exact = 0, at = 0, shown = 0;
        for (int i = 0; i < f.n; i++) {
            int good = 0, all = 1;
            for (int t = 0; t < f.it[i].n_target; t++) {
                good += tf[at + t] == f.it[i].target[t];
                all &= gen[at + t] == f.it[i].target[t];
            }
            tf_sum += (double)good / f.it[i].n_target;
            exact += all;
            if (!all && shown < show) {
                char *want = NULL, *got = NULL;
                size_t wl, gl;
                graft_detokenize(tok, f.it[i].target, (size_t)f.it[i].n_target, &want, &wl);
                graft_detokenize(tok, gen + at, (size_t)f.it[i].n_target, &got, &gl);
                fprintf(stderr, "  wrong: %s ->%s (want%s)\n", f.prompt[i], got ? got : "?", want ? want : "?");
                free(want), free(got);
                shown++;
            }
            at += f.it[i].n_target;
        }
        double acc_gen = f.n ? (double)exact / f.n : NAN, acc_tf = f.n ? tf_sum / f.n : NAN;
        if (json)
            printf("%s\"%s\": {\"n\": %d, \"exact_match_gen\": %.6f, \"token_acc_tf\": %.6f}", k ? ", " : "", files[k], f.n,
                   acc_gen, acc_tf);
        else
            printf("%-48s n %6d   exact-match (gen) %.4f   token accuracy (tf) %.4f\n", files[k], f.n, acc_gen, acc_tf);
        free(tf), free(gen), free_facts(&f);
    }
    if (text) {
        char *buf = NULL;
        size_t len = 0;
        int *ids = NULL;
        size_t n = 0;
        double nll = 0;
        size_t cnt = 0;
        st = graft_read_file(text, &buf, &len);
        if (st == GRAFT_OK) st = graft_tokenize(tok, buf, len, &ids, &n);
        if (st == GRAFT_OK) st = graft_eval_nll(m, e, ids, n, m->cfg.n_ctx, &nll, &cnt);
        free(buf), free(ids);
        if (st != GRAFT_OK) {
            cli_fail_status("eval", st);
            goto done;
        }
        if (json)
            printf("%s\"%s\": {\"tokens\": %zu, \"nll\": %.6f, \"ppl\": %.6f}", nf ? ", " : "", text, cnt, nll, exp(nll));
        else
            printf("%-48s tokens %zu   nll %.4f   perplexity %.4f\n", text, cnt, nll, exp(nll));
    }
    if (json) printf("}\n");
    rc = 0;
done:
    if (e) e->ops->free(e);
    graft_model_free(m);
    return rc;
}
