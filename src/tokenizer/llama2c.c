/* llama2c.c - the tokenizer of llama2.c (tokenizer.bin, tok512.bin): a
 * SentencePiece vocabulary with scores, encoded the way run.c does. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* llama2.c's fixed special ids, and its byte-fallback tokens <0x00>.. at 3.. */
#define L2C_BOS 1
#define L2C_EOS 2
#define L2C_BYTE0 3
/* run.c only merges pairs scoring above its initial best of -1e10. */
#define L2C_MIN_SCORE -1e10f

/* ================================================================ file */

static int32_t rd_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float rd_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* Validate the record at *off and step past it. */
static graft_status check_record(const char *path, const uint8_t *d, size_t size, int max_len, int index, size_t *off) {
    size_t o = *off;
    if (size - o < 8)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: token %d: truncated record (%zu of 8 header bytes)", path,
                          o, index, size - o);
    int32_t len = rd_i32(d + o + 4);
    if (len < 0 || len > max_len)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: token %d: length %d outside [0, max_token_length %d]",
                          path, o + 4, index, len, max_len);
    if ((size_t)len > size - o - 8)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: offset %zu: token %d: its %d bytes run past the end of the file (%zu bytes)", path,
                          o + 8, index, len, size);
    *off = o + 8 + (size_t)len;
    return GRAFT_OK;
}

/* The vocabulary size is not stored: it is the number of records. */
static graft_status count_records(const char *path, const uint8_t *d, size_t size, int *max_len, int *n) {
    if (size < 4)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset 0: %zu bytes, too short for the int32 max_token_length", path,
                          size);
    *max_len = rd_i32(d);
    if (*max_len <= 0 || *max_len > (1 << 16))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: offset 0: max_token_length %d is not plausible (not a llama2.c tokenizer?)", path,
                          *max_len);
    int count = 0;
    for (size_t off = 4; off < size; count++) {
        if (count == INT32_MAX / 4) return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: too many tokens", path, off);
        GRAFT_TRY(check_record(path, d, size, *max_len, count, &off));
    }
    if (count <= L2C_BYTE0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: only %d tokens; <unk>, BOS and EOS need ids 0..2", path, count);
    *n = count;
    return GRAFT_OK;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xHH>" exactly: a byte-fallback token standing for one raw byte. */
static int byte_token_value(const char *s, int32_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

static graft_status alloc_spm(graft_tokenizer *t, int n, size_t raw_bytes) {
    tok_spm *s = &t->spm;
    s->raw = malloc(raw_bytes ? raw_bytes : 1);
    s->raw_off = malloc((size_t)n * sizeof *s->raw_off);
    s->raw_len = malloc((size_t)n * sizeof *s->raw_len);
    s->score = malloc((size_t)n * sizeof *s->score);
    s->rank = malloc((size_t)n * sizeof *s->rank);
    t->piece_pool = malloc(raw_bytes ? raw_bytes : 1);
    if (!s->raw || !s->raw_off || !s->raw_len || !s->score || !s->rank || !t->piece_pool ||
        !tok_map_init(&s->lookup, (size_t)n))
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
    return tok_pieces_alloc(t, n);
}

/* Raw pieces (for merging) and decoded pieces (bytes, BOS/EOS empty). */
static graft_status read_pieces(graft_tokenizer *t, const uint8_t *d, size_t size) {
    tok_spm *s = &t->spm;
    size_t k = 0;
    for (size_t off = 4, id = 0; off < size; id++) {
        int32_t len = rd_i32(d + off + 4);
        s->score[id] = rd_f32(d + off);
        s->raw_off[id] = k;
        s->raw_len[id] = len;
        memcpy(s->raw + k, d + off + 8, (size_t)len);
        if (len > s->max_len) s->max_len = len;
        int byte = byte_token_value(s->raw + k, len);
        t->piece_off[id] = k;
        t->piece_len[id] = (id == L2C_BOS || id == L2C_EOS) ? 0 : byte >= 0 ? 1 : len;
        if (byte >= 0) t->piece_pool[k] = (char)byte;
        else memcpy(t->piece_pool + k, d + off + 8, (size_t)len);
        /* run.c finds one of equal pieces by bsearch; graft takes the lowest id. */
        if (!tok_map_put_first(&s->lookup, s->raw + k, (size_t)len, (int64_t)id))
            return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
        k += (size_t)len;
        off += 8 + (size_t)len;
    }
    return GRAFT_OK;
}

typedef struct scored_id {
    float score;
    int id;
} scored_id;

static int cmp_score_desc(const void *pa, const void *pb) {
    const scored_id *a = pa, *b = pb;
    return (a->score < b->score) - (a->score > b->score);
}

/* Rank = position of the score in descending order, equal scores sharing a
 * rank so that the merge loop falls back to leftmost, as run.c's scan does.
 * Tokens run.c would never pick (score <= -1e10, NaN) and tokens whose text
 * is not themselves (byte fallback, BOS, EOS) never result from a merge. */
static graft_status rank_scores(graft_tokenizer *t) {
    tok_spm *s = &t->spm;
    int n = t->n_vocab, m = 0;
    scored_id *order = malloc((size_t)n * sizeof *order);
    if (!order) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
    for (int id = 0; id < n; id++) {
        s->rank[id] = -1;
        bool special = id == L2C_BOS || id == L2C_EOS || byte_token_value(s->raw + s->raw_off[id], s->raw_len[id]) >= 0;
        if (!special && s->score[id] > L2C_MIN_SCORE) order[m++] = (scored_id){s->score[id], id};
    }
    qsort(order, (size_t)m, sizeof *order, cmp_score_desc);
    for (int i = 0, r = 0; i < m; i++) {
        if (i > 0 && order[i].score != order[i - 1].score) r++;
        s->rank[order[i].id] = r;
    }
    free(order);
    return GRAFT_OK;
}

graft_status tok_llama2c_load_mem(graft_tokenizer *t, const char *path, const void *data, size_t size) {
    int max_len = 0, n = 0;
    t->kind = TOK_LLAMA2C;
    const uint8_t *d = data;
    graft_status st = count_records(path, d, size, &max_len, &n);
    if (st == GRAFT_OK) st = alloc_spm(t, n, size - 4 - (size_t)n * 8);
    if (st == GRAFT_OK) st = read_pieces(t, d, size);
    if (st == GRAFT_OK) st = rank_scores(t);
    t->spm.header_max_len = max_len;
    t->bos = L2C_BOS;
    t->eos = L2C_EOS;
    return st;
}

graft_status tok_llama2c_load(graft_tokenizer *t, const char *path) {
    char *data = NULL;
    size_t size = 0;
    GRAFT_TRY(graft_read_file(path, &data, &size));
    graft_status st = tok_llama2c_load_mem(t, path, data, size);
    free(data);
    return st;
}

graft_status tok_llama2c_to_mem(const graft_tokenizer *t, char **data, size_t *size) {
    const tok_spm *s = &t->spm;
    size_t n = 4;
    for (int id = 0; id < t->n_vocab; id++) n += 8 + (size_t)s->raw_len[id];
    uint8_t *d = malloc(n);
    if (!d) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
    int32_t mx = s->header_max_len > s->max_len ? s->header_max_len : s->max_len;
    memcpy(d, &mx, 4);
    size_t k = 4;
    for (int id = 0; id < t->n_vocab; id++) {
        int32_t len = s->raw_len[id];
        memcpy(d + k, &s->score[id], 4);
        memcpy(d + k + 4, &len, 4);
        memcpy(d + k + 8, s->raw + s->raw_off[id], (size_t)len);
        k += 8 + (size_t)len;
    }
    *data = (char *)d;
    *size = n;
    return GRAFT_OK;
}

void tok_llama2c_free(tok_spm *s) {
    free(s->raw);
    free(s->raw_off);
    free(s->raw_len);
    free(s->score);
    free(s->rank);
    tok_map_free(&s->lookup);
    memset(s, 0, sizeof *s);
}

/* ================================================================ encoding */

typedef struct spm_ctx {
    const tok_spm *spm;
    char *cat; /* 2 * max_len bytes */
} spm_ctx;

/* run.c merges two tokens when the concatenation of their pieces is a token. */
static bool spm_pair(const void *vctx, int a, int b, int *rank, int *merged) {
    const spm_ctx *c = vctx;
    const tok_spm *s = c->spm;
    size_t la = (size_t)s->raw_len[a], lb = (size_t)s->raw_len[b];
    memcpy(c->cat, s->raw + s->raw_off[a], la);
    memcpy(c->cat + la, s->raw + s->raw_off[b], lb);
    int64_t id;
    if (!tok_map_get(&s->lookup, c->cat, la + lb, &id) || s->rank[id] < 0) return false;
    *rank = s->rank[id];
    *merged = (int)id;
    return true;
}

/* Append the token of s[0..n), or one byte-fallback token per byte. */
static graft_status push_piece(const graft_tokenizer *t, const uint8_t *s, size_t n, size_t at, int *ids, size_t *k) {
    int64_t id;
    if (tok_map_get(&t->spm.lookup, (const char *)s, n, &id)) {
        ids[(*k)++] = (int)id;
        return GRAFT_OK;
    }
    for (size_t i = 0; i < n; i++) {
        int b = L2C_BYTE0 + s[i];
        if (b >= t->n_vocab)
            return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: byte 0x%02X at text offset %zu has no token (vocab size %d)",
                              t->path, s[i], at + i, t->n_vocab);
        ids[(*k)++] = b;
    }
    return GRAFT_OK;
}

/* Initial symbols: the dummy-prefix space (unless the text continues earlier
 * text), then each code point (run.c's grouping: a byte plus up to 3
 * continuation bytes, not validated). */
static graft_status initial_symbols(const graft_tokenizer *t, const uint8_t *s, size_t n, bool dummy, int *ids,
                                    size_t *k) {
    *k = 0;
    if (dummy) GRAFT_TRY(push_piece(t, (const uint8_t *)" ", 1, 0, ids, k));
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < 4 && (s[j] & 0xC0) == 0x80) j++;
        GRAFT_TRY(push_piece(t, s + i, j - i, i, ids, k));
        i = j;
    }
    return GRAFT_OK;
}

graft_status tok_llama2c_encode(const graft_tokenizer *t, const char *text, size_t len, bool dummy, tok_ids *out) {
    if (len == 0) return GRAFT_OK;
    tok_merge_work w = {0};
    spm_ctx c = {&t->spm, malloc(2 * (size_t)t->spm.max_len + 1)};
    /* Each byte yields at most one symbol, plus the dummy prefix. */
    int *ids = (len < SIZE_MAX - 1) ? tok_merge_ids(&w, len + 1) : NULL;
    size_t k = 0;
    graft_status st = GRAFT_OK;
    if (!c.cat || !ids)
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory (or text too long) encoding %zu bytes", t->path, len);
    if (st == GRAFT_OK) st = initial_symbols(t, (const uint8_t *)text, len, dummy, ids, &k);
    if (st == GRAFT_OK && !tok_merge_run(&w, k, spm_pair, &c, out))
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory (or text too long) encoding %zu bytes", t->path, len);
    tok_merge_free(&w);
    free(c.cat);
    return st;
}
