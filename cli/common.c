/* common.c - what every subcommand shares: finding and loading the model,
 * reading text, parsing id lists, and reporting errors the same way. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "graft %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail_status(const char *cmd, graft_status st) {
    return cli_fail(cmd, "%s: %s", graft_status_str(st), graft_last_error());
}

/* The model used when -m is absent: $GRAFT_MODEL, else the embedded fact model
 * of the source tree graft was built from: models/factpara (the paraphrase
 * fact model, issue 10), or models/factbase where that is missing. */
const char *cli_default_model(void) {
    const char *env = getenv("GRAFT_MODEL");
    if (env && *env) return env;
    static char path[PATH_MAX];
    static const char *const order[] = {"factpara", "factbase"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/models/%s", GRAFT_SOURCE_DIR, order[i]);
        if (access(path, F_OK) == 0) return path;
    }
    return NULL;
}

int cli_load_model(const char *cmd, const char *path, const char *tok_path, graft_model **m) {
    *m = NULL;
    if (!path) path = cli_default_model();
    if (!path) return cli_fail(cmd, "no model given: use -m PATH (an HF folder or a llama2.c .bin) or set GRAFT_MODEL");
    graft_status st = graft_model_load(path, m);
    if (st != GRAFT_OK) return cli_fail_status(cmd, st);
    if (tok_path) {
        graft_tokenizer *tok = NULL;
        st = graft_tokenizer_load(tok_path, &tok);
        if (st != GRAFT_OK) {
            graft_model_free(*m);
            *m = NULL;
            return cli_fail_status(cmd, st);
        }
        graft_model_set_tokenizer(*m, tok);
    }
    return 0;
}

int cli_need_tokenizer(const char *cmd, graft_model *m, graft_tokenizer **tok) {
    *tok = graft_model_tokenizer(m);
    if (!*tok) return cli_fail(cmd, "no tokenizer found beside the model; give one with --tokenizer PATH");
    return 0;
}

int cli_parse_ids(const char *cmd, const char *s, int **ids, size_t *n) {
    size_t cap = 16, k = 0;
    int *v = malloc(cap * sizeof *v);
    if (!v) return cli_fail(cmd, "out of memory");
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < INT_MIN || x > INT_MAX) {
            free(v);
            return cli_fail(cmd, "bad token id list at character %ld: '%.20s'", (long)(p - s), p);
        }
        if (k == cap) {
            int *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return cli_fail(cmd, "out of memory");
            }
            v = nv;
        }
        v[k++] = (int)x;
        p = end;
    }
    *ids = v;
    *n = k;
    return 0;
}

/* Encode text, with BOS first for tokenizers whose models expect one
 * (llama2.c / SentencePiece); GPT-2 has no BOS convention. */
int cli_encode(const char *cmd, graft_tokenizer *tok, const char *text, size_t len, int add_bos, int **ids,
               size_t *n) {
    int *raw = NULL;
    size_t nraw = 0;
    graft_status st = graft_tokenize(tok, text, len, &raw, &nraw);
    if (st != GRAFT_OK) return cli_fail_status(cmd, st);
    int bos = graft_tokenizer_bos(tok);
    if (add_bos < 0) add_bos = !strcmp(graft_tokenizer_kind(tok), "llama2c-spm");
    if (!add_bos || bos < 0) {
        *ids = raw;
        *n = nraw;
        return 0;
    }
    int *v = malloc((nraw + 1) * sizeof *v);
    if (!v) {
        free(raw);
        return cli_fail(cmd, "out of memory");
    }
    v[0] = bos;
    if (nraw) memcpy(v + 1, raw, nraw * sizeof *v);
    free(raw);
    *ids = v;
    *n = nraw + 1;
    return 0;
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || *end || errno || x < lo || x > hi)
        return cli_fail(cmd, "%s wants an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
    *out = x;
    return 0;
}

int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno || !(x >= lo && x <= hi))
        return cli_fail(cmd, "%s wants a number in [%g, %g], got '%s'", opt, lo, hi, s);
    *out = x;
    return 0;
}

/* Print s as a JSON string literal (escaping control bytes; other bytes as-is). */
void cli_print_json_string(FILE *out, const char *s, size_t n) {
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c == '\n') fputs("\\n", out);
        else if (c == '\t') fputs("\\t", out);
        else if (c == '\r') fputs("\\r", out);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

int cli_trim(char *s) {
    if (!s) return 0;
    size_t n = strlen(s), a = 0;
    while (a < n && strchr(" \t\r\n", s[a])) a++;
    while (n > a && strchr(" \t\r\n", s[n - 1])) n--;
    if (a == 0 && s[n] == '\0') return 0;
    memmove(s, s + a, n - a);
    s[n - a] = '\0';
    return 1;
}
