/* cmd_tokenizer.c - graft tokenizer: learn a byte-level BPE from a text or
 * fact file (graft tokenizer learn), and measure how a tokenizer cuts such
 * files (graft tokenizer stats) - the numbers a vocabulary is chosen by. */
#include "cli.h"
#include "internal.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_save.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CMD "tokenizer"
#define MAX_DATA 16

static void usage(FILE *out) {
    fputs("usage: graft tokenizer learn --data FILE --vocab N --out DIR\n"
          "       graft tokenizer stats (--tokenizer PATH | --bytes) --data FILE [--data FILE ...]\n"
          "\n"
          "learn   learn a GPT-2 byte-level BPE of N ids from FILE and write DIR/tokenizer.json,\n"
          "        vocab.json and merges.txt (+ tokenizer_config.json, special_tokens_map.json);\n"
          "        any graft command loads it with --tokenizer DIR\n"
          "  --data FILE    plain text, or .jsonl rows {\"prompt\", \"answer\"} (learnt as\n"
          "                 prompt + \" \" + answer, one row a line) or {\"text\"}\n"
          "  --vocab N      ids in all: 256 bytes + N - 257 merges + <|endoftext|> (N >= 257);\n"
          "                 fewer when FILE runs out of pairs seen twice\n"
          "  --out DIR      output folder (made if missing)\n"
          "stats   tokens per line, and for prompt/answer rows tokens per prompt and per answer\n"
          "        (the answer as graft tokenize --target takes it: \" \" + answer after the\n"
          "        prompt) and the share of answers that are a single token\n"
          "  --tokenizer PATH  a tokenizer folder or file (as graft tokenize --tokenizer)\n"
          "  --bytes           the byte tokenizer of graft train --byte-tokenizer\n"
          "  --data FILE       as for learn; up to 16\n",
          out);
}

/* ================================================================ rows */

/* One row of a data file: a prompt and an answer, or a text (prompt NULL). */
typedef struct row {
    char *prompt, *answer, *text;
} row;

typedef struct rows {
    row *v;
    size_t n, cap;
    bool jsonl;
} rows;

static void rows_free(rows *r) {
    for (size_t i = 0; i < r->n; i++) free(r->v[i].prompt), free(r->v[i].answer), free(r->v[i].text);
    free(r->v);
    memset(r, 0, sizeof *r);
}

static bool rows_push(rows *r, row x) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        row *v = realloc(r->v, cap * sizeof *v);
        if (!v) return false;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = x;
    return true;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A string field of a JSON row: NULL when absent; -1 when not a string. */
static int str_field(const cJSON *obj, const char *name, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v)) return -1;
    *out = v->valuestring;
    return 0;
}

static int jsonl_row(const char *path, const char *line, size_t len, long lineno, rows *r) {
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    /* only white space may follow the object */
    for (const char *q = end; obj && q && q < line + len; q++)
        if (!is_space(*q)) {
            cJSON_Delete(obj);
            obj = NULL;
            end = q;
        }
    if (!obj) {
        size_t at = (end && end >= line && end <= line + len) ? (size_t)(end - line) : 0;
        return cli_fail(CMD, "%s: line %ld: not valid JSON (near character %zu of the line)", path, lineno, at + 1);
    }
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        return cli_fail(CMD, "%s: line %ld: not a JSON object (a row is {\"prompt\", \"answer\"} or {\"text\"})", path,
                        lineno);
    }
    const char *p = NULL, *a = NULL, *t = NULL;
    int rc = 1;
    const char *bad = str_field(obj, "prompt", &p) ? "prompt"
                    : str_field(obj, "answer", &a) ? "answer"
                    : str_field(obj, "text", &t)   ? "text"
                                                   : NULL;
    if (bad) cli_fail(CMD, "%s: line %ld: field \"%s\" is not a string", path, lineno, bad);
    else if (t && (p || a))
        cli_fail(CMD, "%s: line %ld: field \"%s\" given with \"text\"; a row is a text or a prompt and answer", path,
                 lineno, p ? "prompt" : "answer");
    else if (!t && !(p && a))
        cli_fail(CMD, "%s: line %ld: field \"%s\" is missing (a row needs \"text\", or \"prompt\" and \"answer\")", path,
                 lineno, p ? "answer" : a ? "prompt" : "text");
    else {
        row x = {0};
        if (t) x.text = strdup(t);
        else {
            /* prompt + " " + answer, one space unless one is already there,
             * as graft train joins them */
            size_t lp = strlen(p), la = strlen(a);
            bool sp = lp > 0 && la > 0 && !is_space(p[lp - 1]) && !is_space(a[0]);
            x.prompt = strdup(p);
            x.answer = strdup(a);
            x.text = malloc(lp + la + 2);
            if (x.text) snprintf(x.text, lp + la + 2, "%s%s%s", p, sp ? " " : "", a);
        }
        if (!x.text || (!t && (!x.prompt || !x.answer)) || !rows_push(r, x)) {
            free(x.prompt), free(x.answer), free(x.text);
            cli_fail(CMD, "%s: out of memory", path);
        } else rc = 0;
    }
    cJSON_Delete(obj);
    return rc;
}

/* Read FILE into rows; *data keeps the file's bytes (the learning text of a
 * plain-text file). Exit-code style: 0 ok, 1 failed (message printed). */
static int read_rows(const char *path, rows *r, char **data, size_t *size) {
    memset(r, 0, sizeof *r);
    graft_status st = graft_read_file(path, data, size);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    r->jsonl = has_suffix(path, ".jsonl") || has_suffix(path, ".ndjson");
    long lineno = 0;
    for (size_t pos = 0; pos < *size;) {
        const char *s = *data + pos;
        const char *nl = memchr(s, '\n', *size - pos);
        size_t len = nl ? (size_t)(nl - s) : *size - pos;
        pos += len + 1;
        lineno++;
        size_t k = 0;
        while (k < len && is_space(s[k])) k++;
        if (k == len) continue; /* blank lines are no rows */
        if (r->jsonl) {
            if (jsonl_row(path, s, len, lineno, r)) goto fail;
        } else {
            row x = {.text = strndup(s, len)};
            if (!x.text || !rows_push(r, x)) {
                free(x.text);
                cli_fail(CMD, "%s: out of memory", path);
                goto fail;
            }
        }
    }
    if (r->n == 0) {
        cli_fail(CMD, "%s: no rows (the file is empty or blank)", path);
        goto fail;
    }
    return 0;
fail:
    rows_free(r);
    free(*data);
    *data = NULL;
    return 1;
}

/* ================================================================ stats */

typedef struct tok_counts {
    size_t lines, pa_rows, single;
    double line_tok, line_bytes, prompt_tok, answer_tok;
} tok_counts;

static int measure(const char *path, graft_tokenizer *tok, const rows *r, tok_counts *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < r->n; i++) {
        const row *x = &r->v[i];
        int *ids = NULL, *tids = NULL;
        size_t n = 0, nt = 0;
        graft_status st = graft_tokenize(tok, x->text, strlen(x->text), &ids, &n);
        free(ids);
        c->line_tok += (double)n;
        c->line_bytes += (double)strlen(x->text);
        c->lines++;
        if (st == GRAFT_OK && x->prompt) {
            ids = NULL;
            st = graft_tokenize_pair(tok, x->prompt, x->answer, &ids, &n, &tids, &nt, NULL);
            if (st == GRAFT_OK) {
                c->pa_rows++;
                c->prompt_tok += (double)n;
                c->answer_tok += (double)nt;
                c->single += nt == 1;
            }
            free(ids);
            free(tids);
        }
        if (st != GRAFT_OK) return cli_fail(CMD, "%s: row %zu: %s", path, i + 1, graft_last_error());
    }
    return 0;
}

static void print_counts(const char *path, const tok_counts *c) {
    printf("%s: %zu lines, %.2f tokens per line (%.1f bytes)", path, c->lines, c->line_tok / (double)c->lines,
           c->line_bytes / (double)c->lines);
    if (c->pa_rows)
        printf("; %.2f tokens per prompt, %.2f per answer, %.1f%% single-token answers", c->prompt_tok / (double)c->pa_rows,
               c->answer_tok / (double)c->pa_rows, 100.0 * (double)c->single / (double)c->pa_rows);
    putchar('\n');
}

/* ================================================================ learn */

/* The learning text: a plain file as it is; JSONL rows one a line. */
static char *learning_text(const rows *r, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < r->n; i++) total += strlen(r->v[i].text) + 1;
    char *s = malloc(total + 1);
    if (!s) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t l = strlen(r->v[i].text);
        memcpy(s + k, r->v[i].text, l);
        k += l;
        s[k++] = '\n';
    }
    s[k] = '\0';
    *len = k;
    return s;
}

static int tokenizer_learn(int argc, char **argv) {
    static const struct option opts[] = {{"data", required_argument, 0, 'd'}, {"vocab", required_argument, 0, 'v'},
                                         {"out", required_argument, 0, 'o'},  {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *data = NULL, *out = NULL;
    long vocab = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'v':
            if (cli_parse_int(CMD, "--vocab", optarg, 257, 1 << 20, &vocab)) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "learn: unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!data || !*data || !out || !*out || !vocab) {
        cli_fail(CMD, "learn: %s is required", !data || !*data ? "--data FILE" : !out || !*out ? "--out DIR" : "--vocab N");
        usage(stderr);
        return 2;
    }
    rows r;
    char *file = NULL, *text = NULL;
    size_t size = 0, len = 0;
    if (read_rows(data, &r, &file, &size)) return 1;
    int rc = 1;
    graft_tokenizer *tok = NULL;
    const char *learn_from = file;
    len = size;
    if (r.jsonl) {
        if (!(text = learning_text(&r, &len))) {
            cli_fail(CMD, "%s: out of memory", data);
            goto done;
        }
        learn_from = text;
    }
    tok_learn_stats ls;
    double t0 = graft_now_s();
    graft_status st = tok_bpe_learn(learn_from, len, (int)vocab, &ls, &tok);
    double secs = graft_now_s() - t0;
    if (st != GRAFT_OK) {
        cli_fail(CMD, "%s: %s: %s", data, graft_status_str(st), graft_last_error());
        goto done;
    }
    st = graft_mkdir_p(out);
    if (st == GRAFT_OK) st = graft_tokenizer_save(tok, out);
    if (st != GRAFT_OK) {
        cli_fail_status(CMD, st);
        goto done;
    }
    int n_vocab = graft_tokenizer_vocab_size(tok);
    printf("learned %d tokens: 256 bytes + %d merges + <|endoftext|> (id %d), from %zu bytes, %d distinct words, "
           "in %.2f s\n", n_vocab, ls.n_merges, n_vocab - 1, len, ls.n_words, secs);
    if (n_vocab < vocab) printf("(asked for %ld: no pair is left that occurs twice)\n", vocab);
    if (ls.n_merges > 0)
        printf("the last merge joined a pair seen %lld times; %d pairs were passed over (their bytes were already a "
               "token)\n", (long long)ls.last_count, ls.n_skipped);
    tok_counts cnt;
    if (measure(data, tok, &r, &cnt)) goto done;
    print_counts(data, &cnt);
    printf("wrote %s/tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json\n", out);
    rc = 0;
done:
    graft_tokenizer_free(tok);
    free(text);
    free(file);
    rows_free(&r);
    return rc;
}

/* ================================================================ stats */

static int tokenizer_stats(int argc, char **argv) {
    static const struct option opts[] = {{"data", required_argument, 0, 'd'}, {"tokenizer", required_argument, 0, 'T'},
                                         {"bytes", no_argument, 0, 'b'},       {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *files[MAX_DATA], *tok_path = NULL;
    int n_files = 0, bytes = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (n_files == MAX_DATA) {
                cli_fail(CMD, "stats: at most %d --data files", MAX_DATA);
                return 2;
            }
            files[n_files++] = optarg;
            break;
        case 'T': tok_path = optarg; break;
        case 'b': bytes = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "stats: unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!n_files || (tok_path != NULL) == bytes) {
        cli_fail(CMD, "stats: %s", !n_files ? "--data FILE is required" : "give exactly one of --tokenizer or --bytes");
        usage(stderr);
        return 2;
    }
    graft_tokenizer *tok = NULL;
    graft_status st = bytes ? graft_tokenizer_create_bytes(&tok) : graft_tokenizer_load(tok_path, &tok);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    printf("tokenizer %s: %d ids\n", bytes ? "<bytes>" : tok_path, graft_tokenizer_vocab_size(tok));
    int rc = 0;
    for (int i = 0; i < n_files && rc == 0; i++) {
        rows r;
        char *file = NULL;
        size_t size = 0;
        tok_counts cnt;
        if (read_rows(files[i], &r, &file, &size) || measure(files[i], tok, &r, &cnt)) rc = 1;
        else print_counts(files[i], &cnt);
        free(file);
        rows_free(&r);
    }
    graft_tokenizer_free(tok);
    return rc;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        cli_fail(CMD, "give a subcommand: learn or stats");
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    /* getopt starts at argv[1]: the subcommand's name is argv[0] */
    if (!strcmp(argv[1], "learn")) return tokenizer_learn(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stats")) return tokenizer_stats(argc - 1, argv + 1);
    cli_fail(CMD, "unknown subcommand '%s' (learn or stats)", argv[1]);
    usage(stderr);
    return 2;
}
