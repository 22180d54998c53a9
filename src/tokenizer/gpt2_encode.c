/* gpt2_encode.c - GPT-2 encoding: added-token splitting, the pre-tokenizer
 * regex as a state machine, and byte-level BPE merges. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ================================================================ pre-tokenizer */

/* Character classes of the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Bytes that are not valid UTF-8 count as OTHER, so any input has a split. */
enum { CC_SPACE, CC_LETTER, CC_NUMBER, CC_OTHER };

/* \s as Python's `regex` module (used by OpenAI's encoder) defines it: the
 * Unicode White_Space property. */
static bool is_white_space(int32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int ascii_class(uint8_t c) {
    if (c == ' ' || (c >= 9 && c <= 13)) return CC_SPACE;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CC_LETTER;
    if (c >= '0' && c <= '9') return CC_NUMBER;
    return CC_OTHER;
}

static int char_class(const uint8_t *s, size_t n, size_t i, size_t *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return ascii_class(s[i]);
    }
    int32_t cp;
    *len = tok_utf8_decode(s + i, n - i, &cp);
    if (cp < 0) return CC_OTHER;
    if (is_white_space(cp)) return CC_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return CC_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return CC_NUMBER;
    default:
        return CC_OTHER;
    }
}

/* Length of 's 't 're 've 'm 'll 'd at s (which starts with '), or 0. The
 * pattern is case-sensitive: "'LL" is not a contraction. */
static size_t contraction_len(const uint8_t *s, size_t n) {
    if (n < 2) return 0;
    if (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd') return 2;
    if (n >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') || (s[1] == 'l' && s[2] == 'l')))
        return 3;
    return 0;
}

/* End of the run of class `cls` that continues at j. */
static size_t run_end(const uint8_t *s, size_t n, size_t j, int cls) {
    while (j < n) {
        size_t l;
        if (char_class(s, n, j, &l) != cls) break;
        j += l;
    }
    return j;
}

/* A whitespace run starting at i (first char l0 bytes). \s+(?!\S) backs off
 * one character when the run is followed by non-space, so that character
 * can lead the next word (" world"); a lone one falls through to \s+. */
static size_t space_end(const uint8_t *s, size_t n, size_t i, size_t l0) {
    size_t last = i, j = i + l0;
    while (j < n) {
        size_t l;
        if (char_class(s, n, j, &l) != CC_SPACE) break;
        last = j;
        j += l;
    }
    return (j == n || last == i) ? j : last;
}

size_t tok_gpt2_pretok_next(const uint8_t *s, size_t n, size_t i) {
    size_t l0;
    int c0 = char_class(s, n, i, &l0);
    if (s[i] == '\'') {
        size_t k = contraction_len(s + i, n - i);
        if (k) return i + k;
    }
    if (s[i] == ' ' && i + 1 < n) {
        size_t l1;
        int c1 = char_class(s, n, i + 1, &l1);
        if (c1 != CC_SPACE) return run_end(s, n, i + 1 + l1, c1);
    }
    if (c0 != CC_SPACE) return run_end(s, n, i + l0, c0);
    return space_end(s, n, i, l0);
}

/* ================================================================ BPE */

static bool bpe_pair(const void *ctx, int a, int b, int *rank, int *merged) {
    return tok_pairmap_get(&((const tok_bpe *)ctx)->merges, a, b, rank, merged);
}

/* BPE of one pre-tokenizer word, appended to out. */
static graft_status bpe_word(const tok_bpe *bpe, tok_merge_work *w, const uint8_t *s, size_t n, tok_ids *out) {
    if (n == 1) return tok_ids_push(out, bpe->byte_id[s[0]]) ? GRAFT_OK : GRAFT_ERR_NOMEM;
    int *ids = tok_merge_ids(w, n);
    if (!ids) return GRAFT_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) ids[i] = bpe->byte_id[s[i]];
    return tok_merge_run(w, n, bpe_pair, bpe, out) ? GRAFT_OK : GRAFT_ERR_NOMEM;
}

/* ================================================================ encoding */

/* Words up to this long are remembered for the rest of one call: natural
 * text repeats its words, and a hit costs one hash lookup. */
#define CACHE_WORD_MAX 64
#define CACHE_ENTRIES_MAX (1u << 20)

typedef struct enc_ctx {
    const tok_bpe *bpe;
    tok_merge_work work;
    tok_map cache; /* word -> (offset of its ids in out) << 8 | count */
    tok_ids *out;
} enc_ctx;

static graft_status encode_word(enc_ctx *c, const uint8_t *s, size_t n) {
    int64_t v;
    bool cacheable = n <= CACHE_WORD_MAX && c->cache.e;
    if (cacheable && tok_map_get(&c->cache, (const char *)s, n, &v)) {
        size_t off = (size_t)(v >> 8), cnt = (size_t)(v & 0xFF);
        if (!tok_ids_reserve(c->out, cnt)) return GRAFT_ERR_NOMEM;
        memcpy(c->out->v + c->out->n, c->out->v + off, cnt * sizeof(int));
        c->out->n += cnt;
        return GRAFT_OK;
    }
    size_t start = c->out->n;
    GRAFT_TRY(bpe_word(c->bpe, &c->work, s, n, c->out));
    /* A failed insertion only costs speed later, so it is not an error. */
    if (cacheable && c->cache.count < CACHE_ENTRIES_MAX)
        tok_map_put(&c->cache, (const char *)s, n, (int64_t)(start << 8 | (c->out->n - start)));
    return GRAFT_OK;
}

static graft_status encode_segment(enc_ctx *c, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t j = tok_gpt2_pretok_next(s, n, i);
        GRAFT_TRY(encode_word(c, s + i, j - i));
        i = j;
    }
    return GRAFT_OK;
}

/* The leftmost, then longest, added token at or after `from`. */
static const tok_added *find_added(const tok_bpe *b, const uint8_t *s, size_t n, size_t from, size_t *at) {
    if (b->n_added == 0) return NULL;
    for (size_t i = from; i < n; i++) {
        for (int k = b->added_start[s[i]]; k < b->added_start[s[i] + 1]; k++) {
            const tok_added *a = &b->added[k];
            if (a->len <= n - i && memcmp(a->text, s + i, a->len) == 0) {
                *at = i;
                return a;
            }
        }
    }
    return NULL;
}

static bool space_char_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    return char_class(s, n, i, len) == CC_SPACE;
}

/* Where whitespace ending at `end` (and not before `lo`) begins. */
static size_t trim_space_back(const uint8_t *s, size_t lo, size_t end) {
    while (end > lo) {
        size_t k = end - 1, len;
        while (k > lo && end - k < 4 && (s[k] & 0xC0) == 0x80) k--;
        if (!space_char_at(s, end, k, &len) || k + len != end) break;
        end = k;
    }
    return end;
}

static size_t skip_space(const uint8_t *s, size_t n, size_t i) {
    size_t len;
    while (i < n && space_char_at(s, n, i, &len)) i += len;
    return i;
}

static graft_status encode_all(enc_ctx *c, const uint8_t *s, size_t len) {
    for (size_t pos = 0; pos < len;) {
        size_t at = len;
        const tok_added *a = find_added(c->bpe, s, len, pos, &at);
        size_t seg_end = at, next = a ? at + a->len : len;
        /* HF's lstrip/rstrip: the token absorbs the whitespace beside it. */
        if (a && a->lstrip) seg_end = trim_space_back(s, pos, seg_end);
        if (a && a->rstrip) next = skip_space(s, len, next);
        GRAFT_TRY(encode_segment(c, s + pos, seg_end - pos));
        if (a && !tok_ids_push(c->out, a->id)) return GRAFT_ERR_NOMEM;
        pos = next;
    }
    return GRAFT_OK;
}

graft_status tok_gpt2_encode(const graft_tokenizer *t, const char *text, size_t len, tok_ids *out) {
    enc_ctx c = {.bpe = &t->bpe, .out = out};
    if (!tok_map_init(&c.cache, len / 16 < 4096 ? len / 16 : 4096)) c.cache.e = NULL;
    graft_status st = encode_all(&c, (const uint8_t *)text, len);
    tok_map_free(&c.cache);
    tok_merge_free(&c.work);
    if (st == GRAFT_ERR_NOMEM)
        return graft_fail(st, "%s: out of memory (or a word too long) encoding %zu bytes", t->path, len);
    return st;
}
