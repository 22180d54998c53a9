/* data.c - training data: reading and tokenizing JSONL rows or plain text
 * into sequences, the seeded validation split, per-epoch shuffles and
 * packing sequences into batches. */
#define _GNU_SOURCE
#include "train/train_impl.h"

#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ random numbers */

uint64_t train_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t train_rand_below(uint64_t *state, uint64_t n) {
    /* Reject the top sliver that would make some values more likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t x = train_rand(state);
        if (x < limit) return x % n;
    }
}

uint64_t train_epoch_rng(uint64_t seed, long epoch) {
    /* Mix (seed, epoch) once so neighbouring epochs start far apart. */
    uint64_t s = seed ^ ((uint64_t)epoch * 0xd1342543de82ef95ull) ^ 0x53485546464c45ull; /* "SHUFFLE" */
    return train_rand(&s);
}

uint64_t train_fnv1a(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ================================================================ loading */

typedef struct loader {
    train_data *d;
    const graft_tokenizer *tok;
    const char *path; /* as the user gave it, for messages */
    int bos, eos, seq_len, vocab;
    bool spm; /* SentencePiece: its dummy prefix already puts a space before the answer */
    tok_ids toks;
    train_seq *seq;
    int n_seq, cap_seq;
} loader;

static graft_status push_seq(loader *L, size_t off, int len, int n_prompt) {
    if (L->n_seq == L->cap_seq) {
        int cap = L->cap_seq ? 2 * L->cap_seq : 256;
        train_seq *s = realloc(L->seq, (size_t)cap * sizeof *s);
        if (!s) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", L->path);
        L->seq = s;
        L->cap_seq = cap;
    }
    if (L->n_seq == INT_MAX - 1) return graft_fail(GRAFT_ERR_RANGE, "%s: too many sequences", L->path);
    L->seq[L->n_seq++] = (train_seq){off, len, n_prompt};
    return GRAFT_OK;
}

/* Append the ids of text to L->toks; checks they fit the model. */
static graft_status append_text(loader *L, const char *text, size_t len, long row, const char *field) {
    int *ids = NULL;
    size_t n = 0;
    graft_status st = graft_tokenize(L->tok, text, len, &ids, &n);
    if (st != GRAFT_OK) {
        if (row > 0) return graft_fail_prefix(st, "%s: row %ld: field \"%s\"", L->path, row, field);
        return graft_fail_prefix(st, "%s", L->path);
    }
    if (!tok_ids_reserve(&L->toks, n)) {
        free(ids);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for the tokens", L->path);
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= L->vocab) {
            int bad = ids[i];
            free(ids);
            return graft_fail(GRAFT_ERR_RANGE, "%s: row %ld: field \"%s\": token id %d is outside the model's vocabulary of %d",
                              L->path, row, field, bad, L->vocab);
        }
        L->toks.v[L->toks.n++] = ids[i];
    }
    free(ids);
    return GRAFT_OK;
}

static graft_status push_id(loader *L, int id) {
    return tok_ids_push(&L->toks, id) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", L->path);
}

/* Offset of the first invalid UTF-8 byte in s[0..n), or -1. */
static long utf8_bad_at(const char *s, size_t n) {
    size_t bad = 0;
    return graft_utf8_valid(s, n, &bad) ? -1 : (long)bad;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A string field of a row: NULL with no error when absent. */
static graft_status row_field(loader *L, const cJSON *obj, long row, const char *name, const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return GRAFT_OK;
    if (!cJSON_IsString(v))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\" must be a string", L->path, row, name);
    long bad = utf8_bad_at(v->valuestring, strlen(v->valuestring));
    if (bad >= 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\" is not valid UTF-8 (byte %ld of the value)",
                          L->path, row, name, bad);
    *out = v;
    return GRAFT_OK;
}

static graft_status jsonl_row(loader *L, const char *line, size_t len, long row) {
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (obj && end) {
        /* only whitespace may follow the object */
        for (const char *p = end; p < line + len; p++)
            if (*p != ' ' && *p != '\t' && *p != '\r') {
                cJSON_Delete(obj);
                obj = NULL;
                end = p;
                break;
            }
    }
    if (!obj) {
        size_t at = (end && end >= line && end <= line + len) ? (size_t)(end - line) : 0;
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: not valid JSON (near character %zu of the line)", L->path,
                          row, at + 1);
    }
    graft_status st = GRAFT_OK;
    const cJSON *text = NULL, *prompt = NULL, *answer = NULL;
    if (!cJSON_IsObject(obj)) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: not a JSON object", L->path, row);
        goto done;
    }
    if ((st = row_field(L, obj, row, "text", &text)) != GRAFT_OK) goto done;
    if ((st = row_field(L, obj, row, "prompt", &prompt)) != GRAFT_OK) goto done;
    if ((st = row_field(L, obj, row, "answer", &answer)) != GRAFT_OK) goto done;
    if (!text && !prompt && !answer) {
        st = graft_fail(GRAFT_ERR_FORMAT,
                        "%s: row %ld: field \"text\" is missing (a row needs \"text\", or \"prompt\" and \"answer\")",
                        L->path, row);
        goto done;
    }
    if (text && (prompt || answer)) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\" given with \"text\"; a row is either text or a prompt and answer",
                        L->path, row, prompt ? "prompt" : "answer");
        goto done;
    }
    if (!text && (!prompt || !answer)) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\" is missing (a row with \"%s\" needs it too)",
                        L->path, row, prompt ? "answer" : "prompt", prompt ? "prompt" : "answer");
        goto done;
    }
    /* Other fields may hold anything, but not broken text: the whole line
     * must be UTF-8. */
    long bad = utf8_bad_at(line, len);
    if (bad >= 0) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: not valid UTF-8 (byte %ld of the line)", L->path, row, bad);
        goto done;
    }
    const char *main_field = text ? "text" : "answer";
    const cJSON *main_val = text ? text : answer;
    if (main_val->valuestring[0] == '\0') {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\" is empty", L->path, row, main_field);
        goto done;
    }
    size_t off = L->toks.n;
    if (L->bos >= 0 && (st = push_id(L, L->bos)) != GRAFT_OK) goto done;
    if (prompt && (st = append_text(L, prompt->valuestring, strlen(prompt->valuestring), row, "prompt")) != GRAFT_OK)
        goto done;
    size_t n_prompt = L->toks.n - off;
    /* prompt + " " + answer, the convention of the editing literature
     * (EasyEdit, ROME): the answer is tokenized on its own with its leading
     * space, so its first token is the one an editor targets (" French").
     * A SentencePiece tokenizer adds that space itself ("_French"). */
    const char *mv = main_val->valuestring;
    size_t mlen = strlen(mv);
    bool join = !L->spm && prompt && prompt->valuestring[0] && !is_space(prompt->valuestring[strlen(prompt->valuestring) - 1]) &&
                !is_space(mv[0]);
    char *spaced = NULL;
    if (join) {
        if (!(spaced = malloc(mlen + 2))) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", L->path);
            goto done;
        }
        spaced[0] = ' ';
        memcpy(spaced + 1, mv, mlen + 1);
        mv = spaced;
        mlen++;
    }
    st = append_text(L, mv, mlen, row, main_field);
    free(spaced);
    if (st != GRAFT_OK) goto done;
    if (L->eos >= 0 && (st = push_id(L, L->eos)) != GRAFT_OK) goto done;
    size_t n = L->toks.n - off;
    if (n > (size_t)L->seq_len) {
        if (prompt && n_prompt >= (size_t)L->seq_len)
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"prompt\" is %zu tokens, longer than the context of %d tokens (--seq-len)",
                            L->path, row, n_prompt, L->seq_len);
        else
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\": the row is %zu tokens%s, longer than the context of %d tokens (--seq-len)",
                            L->path, row, main_field, n, L->eos >= 0 ? " with EOS" : "", L->seq_len);
        goto done;
    }
    if (n < 2) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %ld: field \"%s\": the row is a single token; nothing to predict",
                        L->path, row, main_field);
        goto done;
    }
    st = push_seq(L, off, (int)n, (int)n_prompt);
done:
    cJSON_Delete(obj);
    return st;
}

static graft_status load_jsonl(loader *L, const char *text, size_t size) {
    long row = 0;
    for (size_t pos = 0; pos < size;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - s) : size - pos;
        pos += len + 1;
        row++;
        size_t k = 0;
        while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == len) continue; /* blank lines separate nothing; skip them */
        GRAFT_TRY(jsonl_row(L, s, len, row));
    }
    if (L->n_seq == 0) return graft_fail(GRAFT_ERR_FORMAT, "%s: no rows", L->path);
    return GRAFT_OK;
}

static graft_status load_text(loader *L, const char *text, size_t size) {
    GRAFT_TRY(append_text(L, text, size, 0, "text"));
    size_t n = L->toks.n;
    if (n < 2) return graft_fail(GRAFT_ERR_FORMAT, "%s: the text is %zu token(s); training needs at least 2", L->path, n);
    /* Windows overlap by one token: the last token of a window is the first
     * (unpredicted) one of the next, so every token after the first is a
     * target exactly once. */
    size_t stride = (size_t)L->seq_len - 1;
    for (size_t start = 0; start + 1 < n; start += stride) {
        size_t len = n - start < (size_t)L->seq_len ? n - start : (size_t)L->seq_len;
        GRAFT_TRY(push_seq(L, start, (int)len, 0));
    }
    return GRAFT_OK;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

graft_status train_data_load(train_data *d, const char *path, const graft_tokenizer *tok, int bos, int eos,
                             int seq_len, int vocab_size) {
    memset(d, 0, sizeof *d);
    if (!path || !tok) return graft_fail(GRAFT_ERR_INVALID, "training data: no file or no tokenizer");
    if (seq_len < 2) return graft_fail(GRAFT_ERR_INVALID, "training data: seq_len %d must be at least 2", seq_len);
    char *text = NULL;
    size_t size = 0;
    GRAFT_TRY(graft_read_file(path, &text, &size));
    char *abs = realpath(path, NULL);
    d->path = abs ? abs : strdup(path);
    d->bytes = size;
    d->hash = train_fnv1a(text, size);
    d->jsonl = has_suffix(path, ".jsonl") || has_suffix(path, ".ndjson");
    loader L = {.d = d, .tok = tok, .path = path, .bos = bos, .eos = eos, .seq_len = seq_len, .vocab = vocab_size,
                .spm = strcmp(graft_tokenizer_kind(tok), "llama2c-spm") == 0};
    graft_status st = d->path ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    if (st == GRAFT_OK) st = d->jsonl ? load_jsonl(&L, text, size) : load_text(&L, text, size);
    free(text);
    d->tok = L.toks.v;
    d->n_tok = L.toks.n;
    d->seq = L.seq;
    d->n_seq = L.n_seq;
    if (st != GRAFT_OK) train_data_free(d);
    return st;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

graft_status train_data_split(train_data *d, double val_frac, uint64_t seed) {
    if (!(val_frac >= 0 && val_frac < 1))
        return graft_fail(GRAFT_ERR_INVALID, "val_frac %g must be in [0, 1)", val_frac);
    int n = d->n_seq;
    int n_val = (int)llround(val_frac * n);
    if (val_frac > 0 && n_val == 0) n_val = 1;
    if (n_val >= n)
        return graft_fail(GRAFT_ERR_INVALID, "%s: %d sequence(s) and val_frac %g leave nothing to train on", d->path, n,
                          val_frac);
    int *all = malloc((size_t)n * sizeof *all);
    free(d->train);
    free(d->val);
    d->train = malloc((size_t)(n - n_val) * sizeof *d->train);
    d->val = malloc((size_t)(n_val ? n_val : 1) * sizeof *d->val);
    if (!all || !d->train || !d->val) {
        free(all);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", d->path);
    }
    for (int i = 0; i < n; i++) all[i] = i;
    /* The first n_val of a seeded partial shuffle are held out. */
    uint64_t rng = seed ^ 0x76616c5f73706c74ull; /* "val_splt" */
    for (int i = 0; i < n_val; i++) {
        int j = i + (int)train_rand_below(&rng, (uint64_t)(n - i));
        int t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    memcpy(d->val, all, (size_t)n_val * sizeof *all);
    memcpy(d->train, all + n_val, (size_t)(n - n_val) * sizeof *all);
    qsort(d->val, (size_t)n_val, sizeof *d->val, cmp_int);
    qsort(d->train, (size_t)(n - n_val), sizeof *d->train, cmp_int);
    d->n_val = n_val;
    d->n_train = n - n_val;
    free(all);
    return GRAFT_OK;
}

void train_data_free(train_data *d) {
    free(d->path);
    free(d->tok);
    free(d->seq);
    free(d->train);
    free(d->val);
    memset(d, 0, sizeof *d);
}

void train_shuffle(const train_data *d, int *perm, uint64_t *rng) {
    int n = d->n_train;
    memcpy(perm, d->train, (size_t)n * sizeof *perm);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)train_rand_below(rng, (uint64_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int train_pack(const train_data *d, const int *perm, int n, int cursor, int batch_tokens) {
    long total = 0;
    int k = 0;
    while (cursor + k < n) {
        int len = d->seq[perm[cursor + k]].len;
        if (k > 0 && total + len > batch_tokens) break;
        total += len;
        k++;
    }
    return k;
}
