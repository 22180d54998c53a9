/* tokenizer.c - the public tokenizer API: loading by path, finding the
 * tokenizer beside a model, and the kind-independent decode path. */
#define _GNU_SOURCE
#include "tokenizer.h"

#include <ctype.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ================================================================ pieces */

graft_status tok_pieces_alloc(graft_tokenizer *t, int n) {
    t->n_vocab = n;
    t->piece_off = calloc((size_t)n, sizeof *t->piece_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    if (!t->piece_off || !t->piece_len)
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for %d tokens", t->path, n);
    for (int i = 0; i < n; i++) t->piece_len[i] = -1;
    return GRAFT_OK;
}

/* ================================================================ loading */

/* Paths of a file pair in dir when both exist. When only one of them does,
 * *half names the missing one so the caller can say so. */
static bool pair_exists(const char *dir, const char *a, const char *b, char **pa, char **pb, const char **half) {
    *pa = graft_path_join(dir, a);
    *pb = b ? graft_path_join(dir, b) : NULL;
    bool ha = *pa && graft_path_exists(*pa), hb = b && *pb && graft_path_exists(*pb);
    if (ha && (!b || hb)) return true;
    if (b && ha != hb && !*half) *half = ha ? b : a;
    free(*pa);
    free(*pb);
    *pa = *pb = NULL;
    return false;
}

/* The folder layouts, in order of preference: HF fast tokenizer, HF slow
 * files, OpenAI's original names. */
static graft_status load_dir(graft_tokenizer *t, const char *dir) {
    char *a, *b;
    const char *half = NULL;
    graft_status st;
    if (pair_exists(dir, "tokenizer.json", NULL, &a, &b, &half)) {
        st = tok_gpt2_load_json(t, a);
    } else if (pair_exists(dir, "vocab.json", "merges.txt", &a, &b, &half) ||
               pair_exists(dir, "encoder.json", "vocab.bpe", &a, &b, &half)) {
        st = tok_gpt2_load_files(t, a, b);
    } else if (pair_exists(dir, "tokenizer.bin", NULL, &a, &b, &half)) {
        /* an HF folder fine-tuned from a llama2.c model keeps its tokenizer.bin */
        st = tok_llama2c_load(t, a);
    } else if (half) {
        return graft_fail(GRAFT_ERR_IO, "%s: %s is missing (the BPE files come in pairs: vocab.json + merges.txt, "
                          "encoder.json + vocab.bpe)", dir, half);
    } else {
        return graft_fail(GRAFT_ERR_IO,
                          "%s: no tokenizer in this folder (looked for tokenizer.json, "
                          "vocab.json + merges.txt, encoder.json + vocab.bpe, tokenizer.bin)", dir);
    }
    free(a);
    free(b);
    return st;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A tokenizer.json is known by its name or, failing that, by starting with
 * '{'; a llama2.c file starts with a small binary int32. */
static bool looks_like_json(const char *path) {
    if (has_suffix(path, ".json")) return true;
    if (has_suffix(path, ".bin")) return false;
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    int c;
    while ((c = fgetc(fp)) == ' ' || c == '\n' || c == '\r' || c == '\t') {}
    fclose(fp);
    return c == '{';
}

static graft_tokenizer *tok_new(const char *path) {
    graft_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    t->bos = t->eos = -1;
    return t;
}

graft_status tok_load_mem(const char *path, int kind, const void *a, size_t na, const void *b, size_t nb,
                          graft_tokenizer **out) {
    *out = NULL;
    graft_tokenizer *t = tok_new(path);
    if (!t) return GRAFT_ERR_NOMEM;
    graft_status st;
    if (kind == TOK_MEM_JSON) st = tok_gpt2_load_json_mem(t, path, a, na);
    else if (kind == TOK_MEM_PAIR) st = tok_gpt2_load_files_mem(t, "vocab.json", a, na, "merges.txt", b, nb);
    else st = tok_llama2c_load_mem(t, path, a, na);
    if (st != GRAFT_OK) {
        graft_tokenizer_free(t);
        return st;
    }
    *out = t;
    return GRAFT_OK;
}

graft_status graft_tokenizer_load(const char *path, graft_tokenizer **out) {
    if (!out) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_load: path is NULL");
    graft_tokenizer *t = tok_new(path);
    if (!t) return GRAFT_ERR_NOMEM;
    graft_status st;
    if (graft_path_is_dir(path)) st = load_dir(t, path);
    else if (!graft_path_exists(path)) st = graft_fail(GRAFT_ERR_IO, "%s: no such file or folder", path);
    else if (looks_like_json(path)) st = tok_gpt2_load_json(t, path);
    else st = tok_llama2c_load(t, path);
    if (st != GRAFT_OK) {
        graft_tokenizer_free(t);
        return st;
    }
    *out = t;
    return GRAFT_OK;
}

void graft_tokenizer_free(graft_tokenizer *tok) {
    if (!tok) return;
    tok_gpt2_free(&tok->bpe);
    tok_llama2c_free(&tok->spm);
    free(tok->piece_pool);
    free(tok->piece_off);
    free(tok->piece_len);
    free(tok->path);
    free(tok);
}

int graft_tokenizer_vocab_size(const graft_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

const char *graft_tokenizer_kind(const graft_tokenizer *tok) {
    if (!tok) return "";
    return tok->kind == TOK_LLAMA2C ? "llama2c-spm" : "gpt2-bpe";
}

int graft_tokenizer_bos(const graft_tokenizer *tok) { return tok ? tok->bos : -1; }
int graft_tokenizer_eos(const graft_tokenizer *tok) { return tok ? tok->eos : -1; }

/* ================================================================ finding */

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool is_tok_bin_name(const char *name) {
    return strlen(name) > 7 && strncmp(name, "tok", 3) == 0 && has_suffix(name, ".bin");
}

/* The first tok*.bin in dir by name (so the choice does not depend on
 * directory order), skipping the model file. malloc'ed path or NULL; NULL
 * with *oom set when an allocation failed (not the same as "none there"). */
static char *find_tok_bin(const char *dir, const char *model_path, bool *oom) {
    char *best = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOMEM) *oom = true;
        return NULL;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_tok_bin_name(de->d_name)) continue;
        if (best && strcmp(de->d_name, best) >= 0) continue;
        char *full = graft_path_join(dir, de->d_name);
        if (!full) *oom = true;
        bool ok = full && !graft_path_is_dir(full) && !same_file(full, model_path);
        free(full);
        if (!ok) continue;
        char *name = strdup(de->d_name);
        if (!name) {
            *oom = true;
            continue;
        }
        free(best);
        best = name;
    }
    closedir(d);
    if (!best) return NULL;
    char *full = graft_path_join(dir, best);
    if (!full) *oom = true;
    free(best);
    return full;
}

static graft_status find_beside_bin(const char *model_path, graft_tokenizer **out) {
    char *dir = graft_path_dirname(model_path);
    if (!dir) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", model_path);
    char *cand = graft_path_join(dir, "tokenizer.bin");
    bool oom = !cand;
    if (cand && (!graft_path_exists(cand) || same_file(cand, model_path))) {
        free(cand);
        cand = find_tok_bin(dir, model_path, &oom);
    }
    graft_status st;
    if (oom) { /* not "no tokenizer": the caller would drop it silently */
        free(cand);
        free(dir);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory while looking for its tokenizer", model_path);
    }
    if (cand) st = graft_tokenizer_load(cand, out);
    else
        st = graft_fail(GRAFT_ERR_IO, "%s: no tokenizer beside the model (looked for tokenizer.bin and tok*.bin in %s)",
                        model_path, dir);
    free(cand);
    free(dir);
    return st;
}

graft_status graft_tokenizer_find(const char *model_path, graft_tokenizer **out) {
    if (!out) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_find: out is NULL");
    *out = NULL;
    if (!model_path) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_find: model path is NULL");
    if (graft_path_is_dir(model_path)) return graft_tokenizer_load(model_path, out);
    if (!graft_path_exists(model_path))
        return graft_fail(GRAFT_ERR_IO, "%s: no such model file or folder to find a tokenizer for", model_path);
    return find_beside_bin(model_path, out);
}

/* ================================================================ encode / decode */

/* cont: the text continues earlier text (no SentencePiece dummy prefix). */
static graft_status encode(const graft_tokenizer *tok, const char *text, size_t len, bool cont, int **ids, size_t *n) {
    if (!ids || !n) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenize: ids or n is NULL");
    *ids = NULL;
    *n = 0;
    if (!tok) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenize: tokenizer is NULL");
    if (!text && len > 0) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenize: text is NULL");
    tok_ids out = {0};
    if (!tok_ids_reserve(&out, len / 4 + 16)) return graft_fail(GRAFT_ERR_NOMEM, "graft_tokenize: out of memory");
    graft_status st = tok->kind == TOK_LLAMA2C ? tok_llama2c_encode(tok, text, len, !cont, &out)
                                               : tok_gpt2_encode(tok, text, len, &out);
    if (st != GRAFT_OK) {
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n = out.n;
    return GRAFT_OK;
}

graft_status graft_tokenize(const graft_tokenizer *tok, const char *text, size_t len, int **ids, size_t *n) {
    return encode(tok, text, len, false, ids, n);
}

static bool ends_space(const char *s, size_t n) { return n > 0 && isspace((unsigned char)s[n - 1]); }

graft_status graft_tokenize_pair(const graft_tokenizer *tok, const char *prompt, const char *target, int **p,
                                 size_t *np, int **t, size_t *nt, int *merged) {
    if (!p || !np || !t || !nt || !prompt || !target)
        return graft_fail(GRAFT_ERR_INVALID, "graft_tokenize_pair: NULL argument");
    *p = *t = NULL;
    *np = *nt = 0;
    if (merged) *merged = 0;
    size_t lp = strlen(prompt), lt = strlen(target);
    /* one space between words, unless either side already has whitespace
     * there (" kite" is taken as written) or the prompt is empty */
    bool space = lp > 0 && lt > 0 && !ends_space(prompt, lp) && !isspace((unsigned char)target[0]);
    size_t lj = lt + (space ? 1 : 0);
    char *text = malloc(lp + lj + 1);
    if (!text) return graft_fail(GRAFT_ERR_NOMEM, "graft_tokenize_pair: out of memory");
    memcpy(text, prompt, lp);
    if (space) text[lp] = ' ';
    memcpy(text + lp + (space ? 1 : 0), target, lt + 1);
    int *all = NULL;
    size_t na = 0;
    graft_status st = encode(tok, prompt, lp, false, p, np);
    if (st == GRAFT_OK) st = encode(tok, text, lp + lj, false, &all, &na);
    if (st == GRAFT_OK) {
        bool prefix = na >= *np && !memcmp(all, *p, *np * sizeof(int));
        if (prefix) {
            /* the usual case: the target's tokens as they stand after the prompt */
            *nt = na - *np;
            *t = malloc((*nt ? *nt : 1) * sizeof(int));
            if (!*t) st = graft_fail(GRAFT_ERR_NOMEM, "graft_tokenize_pair: out of memory");
            else if (*nt) memcpy(*t, all + *np, *nt * sizeof(int));
        } else {
            /* the prompt's last token merges with the target's first (e.g. a
             * prompt ending in a space): keep the prompt's own tokens, which is
             * what a user who types that prompt sends, and encode the rest of
             * the text as its continuation */
            if (merged) *merged = 1;
            st = encode(tok, text + lp, lj, true, t, nt);
        }
    }
    free(all);
    free(text);
    if (st != GRAFT_OK) {
        free(*p), free(*t);
        *p = *t = NULL;
        *np = *nt = 0;
    }
    return st;
}

static graft_status piece_at(const graft_tokenizer *tok, int prev, int id, size_t pos, const char **bytes,
                             size_t *len) {
    if (id < 0 || id >= tok->n_vocab || tok->piece_len[id] < 0) {
        const char *why = (id < 0 || id >= tok->n_vocab) ? "is out of range" : "has no token";
        if (pos == SIZE_MAX)
            return graft_fail(GRAFT_ERR_RANGE, "%s: token id %d %s (vocab size %d)", tok->path, id, why, tok->n_vocab);
        return graft_fail(GRAFT_ERR_RANGE, "%s: token id %d at position %zu %s (vocab size %d)", tok->path, id, pos,
                          why, tok->n_vocab);
    }
    const char *p = tok->piece_pool + tok->piece_off[id];
    size_t l = (size_t)tok->piece_len[id];
    /* llama2.c: the dummy-prefix space of the first word is not text. */
    if (tok->kind == TOK_LLAMA2C && prev == tok->bos && l > 0 && p[0] == ' ') {
        p++;
        l--;
    }
    *bytes = p;
    *len = l;
    return GRAFT_OK;
}

graft_status graft_token_piece(const graft_tokenizer *tok, int prev, int id, const char **bytes, size_t *len) {
    if (!tok || !bytes || !len) return graft_fail(GRAFT_ERR_INVALID, "graft_token_piece: NULL argument");
    return piece_at(tok, prev, id, SIZE_MAX, bytes, len);
}

graft_status graft_detokenize(const graft_tokenizer *tok, const int *ids, size_t n, char **text, size_t *len) {
    if (!text) return graft_fail(GRAFT_ERR_INVALID, "graft_detokenize: text is NULL");
    *text = NULL;
    if (len) *len = 0;
    if (!tok) return graft_fail(GRAFT_ERR_INVALID, "graft_detokenize: tokenizer is NULL");
    if (!ids && n > 0) return graft_fail(GRAFT_ERR_INVALID, "graft_detokenize: ids is NULL");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t l = 0;
        GRAFT_TRY(piece_at(tok, i ? ids[i - 1] : -1, ids[i], i, &p, &l));
        total += l;
    }
    char *s = malloc(total + 1);
    if (!s) return graft_fail(GRAFT_ERR_NOMEM, "graft_detokenize: out of memory for %zu bytes", total);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t l = 0;
        piece_at(tok, i ? ids[i - 1] : -1, ids[i], i, &p, &l);
        memcpy(s + k, p, l);
        k += l;
    }
    s[k] = '\0';
    *text = s;
    if (len) *len = k;
    return GRAFT_OK;
}
