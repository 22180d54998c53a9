/* bpe_learn.c - learning a GPT-2 byte-level BPE tokenizer from text.
 *
 * The learned tokenizer is an ordinary GPT-2 BPE for gpt2_encode.c: the text
 * is split at <|endoftext|> and cut into words by the same pre-tokenizer
 * (tok_gpt2_pretok_next), so the words counted here are the words the encoder
 * will see. Ids 0..255 are the bytes (id b is byte b, as in
 * graft_tokenizer_create_bytes), merge r makes id 256 + r, and the last id is
 * <|endoftext|>.
 *
 * Training is the classic greedy loop over distinct words with their counts:
 * merge the most frequent adjacent pair everywhere, repeat. The pair counts
 * are kept up to date incrementally: each pair lists the words it occurs in,
 * so a merge rewrites only those words, and a max-heap with lazy deletion
 * finds the next pair. Counts only grow for the pairs a merge creates (those
 * holding the new id), and they are pushed then; an entry whose count has
 * dropped since it was pushed is re-pushed with its real count when popped.
 *
 * Choices that fix the result (documented in graft.h):
 *  - ties in count go to the pair whose left token's bytes come first in
 *    byte-wise (unsigned, memcmp) order, a shorter token before any longer
 *    one it begins; then the same on the right token. Token bytes are unique
 *    (next point), so this orders all pairs and no hash order leaks in;
 *  - a pair whose concatenation is already a token is never merged: a second
 *    rule for the same bytes would need no new id, and a vocabulary of
 *    257 + k ids then has exactly k merges;
 *  - a pair must occur at least twice (LEARN_MIN_COUNT): a merge seen once
 *    spells one word, it does not compress the text.
 */
#define _GNU_SOURCE /* memmem */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EOT_TEXT "<|endoftext|>"
#define LEARN_MIN_COUNT 2
#define LEARN_MAX_VOCAB (1 << 20)

typedef struct lword {
    size_t off;    /* first symbol in learner.sym */
    int len;       /* symbols now (shrinks as pairs merge) */
    int stamp;     /* the last merge step that rewrote this word */
    int64_t count; /* occurrences in the text */
} lword;

typedef struct lpair {
    int a, b;
    int stamp; /* the last merge step that created occurrences of it */
    bool banned; /* its concatenation is already a token */
    int64_t count;
    int *where; /* words it occurs (or occurred) in; may repeat, may be stale */
    int n_where, cap_where;
} lpair;

typedef struct lheap_e {
    int64_t count;
    int pair;
} lheap_e;

typedef struct learner {
    const char *what; /* for messages */
    /* distinct words of the text */
    lword *words;
    int n_words, cap_words;
    int *sym;
    /* pairs */
    lpair *pairs;
    int n_pairs, cap_pairs;
    tok_pairmap index; /* (a, b) -> pair number, stored as the rank */
    lheap_e *heap;
    size_t n_heap, cap_heap;
    int *touched; /* pairs created by the current merge */
    int n_touched, cap_touched;
    /* tokens: the bytes of each id and a bytes -> id map over them */
    char **tok;
    int *tok_len;
    int n_tok;
    tok_map tok_ids;
    char byte_str[256];
    int *merge_a, *merge_b; /* merge r: (merge_a[r], merge_b[r]) -> 256 + r */
    int n_merges;
    int64_t last_count;
    int n_skipped;
} learner;

static graft_status oom(const learner *L) {
    return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory learning a BPE", L->what);
}

/* Grow *p (elements of size `size`, capacity *cap) to hold `need`. */
static bool grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return true;
    int c = *cap ? *cap : 16;
    while (c < need) {
        if (c > INT32_MAX / 2) return false;
        c *= 2;
    }
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* ================================================================ order */

static int cmp_tok(const learner *L, int x, int y) {
    if (x == y) return 0;
    int lx = L->tok_len[x], ly = L->tok_len[y];
    int c = memcmp(L->tok[x], L->tok[y], (size_t)(lx < ly ? lx : ly));
    if (c) return c;
    return (lx > ly) - (lx < ly);
}

/* Is heap entry p to be merged before q? */
static bool entry_before(const learner *L, const lheap_e *p, const lheap_e *q) {
    if (p->count != q->count) return p->count > q->count;
    const lpair *x = &L->pairs[p->pair], *y = &L->pairs[q->pair];
    int c = cmp_tok(L, x->a, y->a);
    if (c == 0) c = cmp_tok(L, x->b, y->b);
    return c < 0;
}

static bool heap_push(learner *L, int pair) {
    if (L->n_heap == L->cap_heap) {
        size_t cap = L->cap_heap ? L->cap_heap * 2 : 1024;
        lheap_e *h = realloc(L->heap, cap * sizeof *h);
        if (!h) return false;
        L->heap = h;
        L->cap_heap = cap;
    }
    lheap_e e = {L->pairs[pair].count, pair};
    size_t i = L->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!entry_before(L, &e, &L->heap[p])) break;
        L->heap[i] = L->heap[p];
        i = p;
    }
    L->heap[i] = e;
    return true;
}

static lheap_e heap_pop(learner *L) {
    lheap_e top = L->heap[0], last = L->heap[--L->n_heap];
    size_t i = 0, n = L->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && entry_before(L, &L->heap[c + 1], &L->heap[c])) c++;
        if (!entry_before(L, &L->heap[c], &last)) break;
        L->heap[i] = L->heap[c];
        i = c;
    }
    if (n > 0) L->heap[i] = last;
    return top;
}

/* ================================================================ pairs */

/* The number of pair (a, b), made (count 0) when new; -1 when out of memory. */
static int pair_of(learner *L, int a, int b) {
    int idx, unused;
    if (tok_pairmap_get(&L->index, a, b, &idx, &unused)) return idx;
    if (!grow((void **)&L->pairs, &L->cap_pairs, L->n_pairs + 1, sizeof *L->pairs)) return -1;
    idx = L->n_pairs;
    if (!tok_pairmap_put(&L->index, a, b, idx, 0)) return -1;
    L->pairs[L->n_pairs++] = (lpair){.a = a, .b = b, .stamp = -1};
    return idx;
}

/* Note that word w holds pair p (words are added one at a time, so a
 * repeat is always the last entry). */
static bool pair_note_word(lpair *p, int w) {
    if (p->n_where > 0 && p->where[p->n_where - 1] == w) return true;
    if (!grow((void **)&p->where, &p->cap_where, p->n_where + 1, sizeof *p->where)) return false;
    p->where[p->n_where++] = w;
    return true;
}

/* ================================================================ words */

/* Count the words of s[0..n), which starts at byte `base` of the text. */
static graft_status add_words(learner *L, const uint8_t *s, size_t n, size_t base, tok_map *seen, size_t *n_sym) {
    for (size_t i = 0; i < n;) {
        size_t j = tok_gpt2_pretok_next(s, n, i);
        size_t len = j - i;
        /* a one-byte word has no pair to count */
        if (len >= 2) {
            if (len > INT32_MAX / 2)
                return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: byte offset %zu: a pre-tokenizer word of %zu bytes is "
                                  "too long to learn from", L->what, base + i, len);
            int64_t w;
            if (tok_map_get(seen, (const char *)s + i, len, &w)) {
                L->words[w].count++;
            } else {
                if (!grow((void **)&L->words, &L->cap_words, L->n_words + 1, sizeof *L->words) ||
                    !tok_map_put(seen, (const char *)s + i, len, L->n_words))
                    return oom(L);
                /* off holds the word's text offset until the symbols are laid out */
                L->words[L->n_words++] = (lword){.off = base + i, .len = (int)len, .stamp = -1, .count = 1};
                *n_sym += len;
            }
        }
        i = j;
    }
    return GRAFT_OK;
}

/* The distinct words of the text with their counts, each spelled in byte ids. */
static graft_status count_words(learner *L, const char *text, size_t len) {
    tok_map seen = {0};
    if (!tok_map_init(&seen, len / 64 + 16)) return oom(L);
    size_t n_sym = 0, eot_len = strlen(EOT_TEXT);
    const uint8_t *s = (const uint8_t *)text;
    graft_status st = GRAFT_OK;
    /* The encoder takes <|endoftext|> out before pre-tokenising, leftmost
     * first; so must the learner, or it would learn merges of its bytes. */
    for (size_t pos = 0; pos < len && st == GRAFT_OK;) {
        const char *hit = len - pos >= eot_len ? memmem(text + pos, len - pos, EOT_TEXT, eot_len) : NULL;
        size_t end = hit ? (size_t)(hit - text) : len;
        st = add_words(L, s + pos, end - pos, pos, &seen, &n_sym);
        pos = hit ? end + eot_len : len;
    }
    tok_map_free(&seen);
    if (st != GRAFT_OK) return st;
    L->sym = malloc((n_sym ? n_sym : 1) * sizeof *L->sym);
    if (!L->sym) return oom(L);
    size_t k = 0;
    for (int w = 0; w < L->n_words; w++) {
        const uint8_t *p = s + L->words[w].off;
        L->words[w].off = k;
        for (int i = 0; i < L->words[w].len; i++) L->sym[k++] = p[i];
    }
    return GRAFT_OK;
}

static graft_status count_pairs(learner *L) {
    if (!tok_pairmap_init(&L->index, 4096)) return oom(L);
    for (int w = 0; w < L->n_words; w++) {
        const int *s = L->sym + L->words[w].off;
        for (int i = 0; i + 1 < L->words[w].len; i++) {
            int p = pair_of(L, s[i], s[i + 1]);
            if (p < 0 || !pair_note_word(&L->pairs[p], w)) return oom(L);
            L->pairs[p].count += L->words[w].count;
        }
    }
    for (int p = 0; p < L->n_pairs; p++)
        if (L->pairs[p].count >= LEARN_MIN_COUNT && !heap_push(L, p)) return oom(L);
    return GRAFT_OK;
}

/* ================================================================ tokens */

/* Token n_tok := a + b (tok and tok_len are sized for every merge allowed). */
static graft_status add_token(learner *L, int a, int b) {
    int la = L->tok_len[a], lb = L->tok_len[b];
    char *s = malloc((size_t)la + (size_t)lb);
    if (!s) return oom(L);
    memcpy(s, L->tok[a], (size_t)la);
    memcpy(s + la, L->tok[b], (size_t)lb);
    L->tok[L->n_tok] = s;
    L->tok_len[L->n_tok] = la + lb;
    if (!tok_map_put(&L->tok_ids, s, (size_t)(la + lb), L->n_tok)) return oom(L);
    L->n_tok++;
    return GRAFT_OK;
}

/* Is the concatenation of tokens a and b already a token? */
static bool concat_exists(const learner *L, int a, int b, char *buf) {
    int la = L->tok_len[a], lb = L->tok_len[b];
    memcpy(buf, L->tok[a], (size_t)la);
    memcpy(buf + la, L->tok[b], (size_t)lb);
    int64_t id;
    return tok_map_get(&L->tok_ids, buf, (size_t)(la + lb), &id);
}

/* ================================================================ merging */

/* Rewrite word w with (a, b) -> z; the pair counts follow. */
static graft_status merge_word(learner *L, int w, int a, int b, int z, int step) {
    lword *wd = &L->words[w];
    int *s = L->sym + wd->off;
    int n = wd->len;
    bool has = false;
    for (int i = 0; i + 1 < n && !has; i++) has = s[i] == a && s[i + 1] == b;
    if (!has) return GRAFT_OK; /* a stale entry of the pair's word list */
    int64_t c = wd->count;
    /* Take the word's pairs out, merge, put the new word's pairs in: words
     * are short, and this stays right for overlaps such as "a a a". */
    for (int i = 0; i + 1 < n; i++) {
        int p = pair_of(L, s[i], s[i + 1]);
        if (p < 0) return oom(L);
        L->pairs[p].count -= c;
    }
    int k = 0;
    for (int i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            s[k++] = z;
            i += 2;
        } else {
            s[k++] = s[i++];
        }
    }
    wd->len = k;
    for (int i = 0; i + 1 < k; i++) {
        int p = pair_of(L, s[i], s[i + 1]);
        if (p < 0) return oom(L);
        lpair *q = &L->pairs[p];
        q->count += c;
        if (s[i] != z && s[i + 1] != z) continue;
        /* a pair holding z is new: this word joins its list, and it goes on
         * the heap once the merge is done */
        if (!pair_note_word(q, w)) return oom(L);
        if (q->stamp != step) {
            q->stamp = step;
            if (!grow((void **)&L->touched, &L->cap_touched, L->n_touched + 1, sizeof *L->touched)) return oom(L);
            L->touched[L->n_touched++] = p;
        }
    }
    return GRAFT_OK;
}

static graft_status merge_pair(learner *L, int p) {
    int a = L->pairs[p].a, b = L->pairs[p].b, step = L->n_merges;
    GRAFT_TRY(add_token(L, a, b));
    int z = L->n_tok - 1;
    L->last_count = L->pairs[p].count;
    L->n_touched = 0;
    /* The pair's word list is not touched while it is walked: only pairs
     * holding z gain words, and (a, b) does not hold z. */
    int *where = L->pairs[p].where, n_where = L->pairs[p].n_where;
    for (int i = 0; i < n_where; i++) {
        int w = where[i];
        if (L->words[w].stamp == step) continue;
        L->words[w].stamp = step;
        GRAFT_TRY(merge_word(L, w, a, b, z, step));
    }
    /* (a, b) is gone everywhere and cannot come back: no later merge makes a
     * or b again. */
    free(L->pairs[p].where);
    L->pairs[p].where = NULL;
    L->pairs[p].n_where = L->pairs[p].cap_where = 0;
    for (int i = 0; i < L->n_touched; i++) {
        int q = L->touched[i];
        if (L->pairs[q].count >= LEARN_MIN_COUNT && !heap_push(L, q)) return oom(L);
    }
    return GRAFT_OK;
}

static graft_status learn_merges(learner *L, int n_merges_max) {
    /* merge_a/merge_b are sized once: one slot per merge allowed */
    L->merge_a = malloc(((size_t)n_merges_max + 1) * sizeof *L->merge_a);
    L->merge_b = malloc(((size_t)n_merges_max + 1) * sizeof *L->merge_b);
    int max_len = 2;
    for (int w = 0; w < L->n_words; w++)
        if (L->words[w].len > max_len) max_len = L->words[w].len;
    char *buf = malloc((size_t)max_len);
    if (!L->merge_a || !L->merge_b || !buf) {
        free(buf);
        return oom(L);
    }
    graft_status st = GRAFT_OK;
    while (st == GRAFT_OK && L->n_merges < n_merges_max && L->n_heap > 0) {
        lheap_e e = heap_pop(L);
        lpair *p = &L->pairs[e.pair];
        if (p->banned || p->count < LEARN_MIN_COUNT) continue;
        if (p->count != e.count) {
            /* Dropped since pushed: back in at its real count. (A count that
             * grew was pushed when it grew, so a lower entry is stale.) */
            if (p->count < e.count && !heap_push(L, e.pair)) st = oom(L);
            continue;
        }
        /* A merged pair's bytes are no longer than the word it came from. */
        if (concat_exists(L, p->a, p->b, buf)) {
            p->banned = true;
            L->n_skipped++;
            continue;
        }
        L->merge_a[L->n_merges] = p->a;
        L->merge_b[L->n_merges] = p->b;
        st = merge_pair(L, e.pair);
        if (st == GRAFT_OK) L->n_merges++;
    }
    free(buf);
    return st;
}

/* ================================================================ result */

static graft_status build_tokenizer(const learner *L, size_t text_len, graft_tokenizer **out) {
    int n_vocab = 256 + L->n_merges + 1, eot = n_vocab - 1;
    size_t eot_len = strlen(EOT_TEXT), pool_len = eot_len;
    for (int id = 0; id < L->n_tok; id++) pool_len += (size_t)L->tok_len[id];
    graft_tokenizer *t = calloc(1, sizeof *t);
    char name[64];
    snprintf(name, sizeof name, "<BPE learned from %zu bytes>", text_len);
    if (!t || !(t->path = strdup(name))) {
        free(t);
        return oom(L);
    }
    t->kind = TOK_GPT2_BPE;
    graft_status st = tok_pieces_alloc(t, n_vocab);
    if (st == GRAFT_OK) {
        t->piece_pool = malloc(pool_len);
        t->bpe.added = calloc(1, sizeof *t->bpe.added);
        if (!t->piece_pool || !t->bpe.added || !(t->bpe.added[0].text = strdup(EOT_TEXT)))
            st = oom(L);
        else t->bpe.n_added = 1; /* from here graft_tokenizer_free releases it */
    }
    if (st == GRAFT_OK && !tok_pairmap_init(&t->bpe.merges, (size_t)L->n_merges)) st = oom(L);
    for (int r = 0; r < L->n_merges && st == GRAFT_OK; r++)
        if (!tok_pairmap_put(&t->bpe.merges, L->merge_a[r], L->merge_b[r], r, 256 + r)) st = oom(L);
    if (st != GRAFT_OK) {
        graft_tokenizer_free(t);
        return st;
    }
    size_t off = 0;
    for (int id = 0; id < L->n_tok; id++) {
        memcpy(t->piece_pool + off, L->tok[id], (size_t)L->tok_len[id]);
        t->piece_off[id] = off;
        t->piece_len[id] = L->tok_len[id];
        off += (size_t)L->tok_len[id];
    }
    memcpy(t->piece_pool + off, EOT_TEXT, eot_len);
    t->piece_off[eot] = off;
    t->piece_len[eot] = (int32_t)eot_len;
    for (int b = 0; b < 256; b++) t->bpe.byte_id[b] = b;
    tok_added *a = &t->bpe.added[0];
    a->len = eot_len;
    a->id = eot;
    /* the one added token starts with '<': the index of added tokens by
     * first byte holds it under that byte only */
    for (int c = 0; c <= 256; c++) t->bpe.added_start[c] = c <= (uint8_t)EOT_TEXT[0] ? 0 : 1;
    t->bos = t->eos = eot;
    *out = t;
    return GRAFT_OK;
}

static void learner_free(learner *L) {
    free(L->words);
    free(L->sym);
    if (L->pairs)
        for (int p = 0; p < L->n_pairs; p++) free(L->pairs[p].where);
    free(L->pairs);
    tok_pairmap_free(&L->index);
    free(L->heap);
    free(L->touched);
    if (L->tok)
        for (int id = 256; id < L->n_tok; id++) free(L->tok[id]);
    free(L->tok);
    free(L->tok_len);
    tok_map_free(&L->tok_ids);
    free(L->merge_a);
    free(L->merge_b);
}

graft_status tok_bpe_learn(const char *text, size_t len, int vocab_size, tok_learn_stats *stats,
                           graft_tokenizer **out) {
    const char *fn = "graft_tokenizer_learn_bpe";
    if (stats) memset(stats, 0, sizeof *stats);
    if (!out) return graft_fail(GRAFT_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!text && len > 0) return graft_fail(GRAFT_ERR_INVALID, "%s: text is NULL", fn);
    if (vocab_size < 257 || vocab_size > LEARN_MAX_VOCAB)
        return graft_fail(GRAFT_ERR_INVALID,
                          "%s: vocab_size %d is out of range: it must be at least 257 (256 bytes and <|endoftext|>) "
                          "and at most %d", fn, vocab_size, LEARN_MAX_VOCAB);
    if (len == 0) return graft_fail(GRAFT_ERR_INVALID, "%s: the text is empty; there is nothing to learn from", fn);
    learner L = {.what = fn};
    graft_status st = GRAFT_OK;
    int n_merges_max = vocab_size - 257;
    size_t n_tok_max = 256 + (size_t)n_merges_max;
    L.tok = calloc(n_tok_max, sizeof *L.tok);
    L.tok_len = calloc(n_tok_max, sizeof *L.tok_len);
    if (!L.tok || !L.tok_len || !tok_map_init(&L.tok_ids, n_tok_max)) st = oom(&L);
    for (int b = 0; b < 256 && st == GRAFT_OK; b++) {
        /* the byte tokens' bytes live in L itself; merged tokens are malloc'ed */
        L.byte_str[b] = (char)b;
        L.tok[b] = &L.byte_str[b];
        L.tok_len[b] = 1;
        if (!tok_map_put(&L.tok_ids, L.tok[b], 1, b)) st = oom(&L);
    }
    L.n_tok = 256;
    if (st == GRAFT_OK) st = count_words(&L, text, len);
    if (st == GRAFT_OK) st = count_pairs(&L);
    if (st == GRAFT_OK) st = learn_merges(&L, n_merges_max);
    if (st == GRAFT_OK) st = build_tokenizer(&L, len, out);
    if (st == GRAFT_OK && stats) {
        stats->n_words = L.n_words;
        stats->n_merges = L.n_merges;
        stats->n_skipped = L.n_skipped;
        stats->last_count = L.last_count;
    }
    learner_free(&L);
    return st;
}

graft_status graft_tokenizer_learn_bpe(const char *text, size_t len, int vocab_size, graft_tokenizer **out) {
    return tok_bpe_learn(text, len, vocab_size, NULL, out);
}
