/* test_bpe_learn.c - learning a byte-level BPE (src/tokenizer/bpe_learn.c):
 * a hand-checked merge order, a slow reference learner on random texts
 * (invalid UTF-8 and <|endoftext|> included), round trips, saving and
 * reloading, determinism, the merge count, bad arguments, and the speed on
 * the fact corpus. */
#include "internal.h"
#include "test.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_save.h"

#include <time.h>
#include <unistd.h>

#define EOT "<|endoftext|>"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16) % n;
}

static graft_tokenizer *learn(const char *text, size_t len, int vocab) {
    graft_tokenizer *t = NULL;
    CHECK_OK(graft_tokenizer_learn_bpe(text, len, vocab, &t));
    return t;
}

/* The bytes of id as a NUL-terminated string in buf (tokens here are short). */
static const char *piece(const graft_tokenizer *t, int id, char *buf, size_t size) {
    const char *p = NULL;
    size_t n = 0;
    if (graft_token_piece(t, -1, id, &p, &n) != GRAFT_OK || n >= size) return "<none>";
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static bool encodes_as(const graft_tokenizer *t, const char *text, const int *want, size_t n_want) {
    int *ids = NULL;
    size_t n = 0;
    bool ok = graft_tokenize(t, text, strlen(text), &ids, &n) == GRAFT_OK && n == n_want &&
              memcmp(ids, want, n * sizeof *ids) == 0;
    free(ids);
    return ok;
}

static bool round_trips(const graft_tokenizer *t, const char *s, size_t n) {
    int *ids = NULL;
    size_t k = 0;
    char *back = NULL;
    size_t blen = 0;
    bool ok = graft_tokenize(t, s, n, &ids, &k) == GRAFT_OK;
    for (size_t i = 0; ok && i < k; i++) ok = ids[i] >= 0 && ids[i] < graft_tokenizer_vocab_size(t);
    ok = ok && graft_detokenize(t, ids, k, &back, &blen) == GRAFT_OK && blen == n && memcmp(back, s, n) == 0;
    free(ids);
    free(back);
    return ok;
}

/* The merge rule of each rank: (a, b) -> id, read from the loaded table. */
typedef struct rule {
    int a, b, id;
} rule;

static int rules_of(const graft_tokenizer *t, rule *out, int max) {
    const tok_pairmap *pm = &t->bpe.merges;
    int n = 0;
    for (size_t i = 0; i < pm->cap; i++) {
        const tok_pair_entry *e = &pm->e[i];
        if (e->rank < 0) continue;
        n++;
        if (e->rank < max) out[e->rank] = (rule){(int)(uint32_t)(e->key >> 32), (int)(uint32_t)e->key, e->id};
    }
    return n;
}

/* ================================================================ hand-checked */

static void check_hand(void) {
    /* Words (each "\n" is a one-byte word of its own): hug x3, pug, pun, bun,
     * hugs. Pairs: ug 5, hu 4, pu 2, un 2, bu 1, gs 1 -> merge u+g (256).
     * Then h+ug 4 (257). Then un 2 (258); every pair left is seen once, so
     * learning stops at 259 ids however many are asked for. */
    const char *text = "hug\nhug\nhug\npug\npun\nbun\nhugs\n";
    graft_tokenizer *t = learn(text, strlen(text), 400);
    if (!t) return;
    char buf[64];
    CHECK(graft_tokenizer_vocab_size(t) == 260);
    CHECK(strcmp(piece(t, 256, buf, sizeof buf), "ug") == 0);
    CHECK(strcmp(piece(t, 257, buf, sizeof buf), "hug") == 0);
    CHECK(strcmp(piece(t, 258, buf, sizeof buf), "un") == 0);
    CHECK(strcmp(piece(t, 259, buf, sizeof buf), EOT) == 0);
    CHECK(graft_tokenizer_bos(t) == 259 && graft_tokenizer_eos(t) == 259);
    rule r[3];
    CHECK(rules_of(t, r, 3) == 3);
    CHECK(r[0].a == 'u' && r[0].b == 'g' && r[0].id == 256);
    CHECK(r[1].a == 'h' && r[1].b == 256 && r[1].id == 257);
    CHECK(r[2].a == 'u' && r[2].b == 'n' && r[2].id == 258);
    CHECK(encodes_as(t, "hugs", (int[]){257, 's'}, 2));
    CHECK(encodes_as(t, "bun" EOT "pug", (int[]){'b', 258, 259, 'p', 256}, 5));
    /* a space starts a word: " hug" is not "hug" */
    CHECK(encodes_as(t, " hug", (int[]){' ', 257}, 2));
    graft_tokenizer_free(t);

    /* Ties: equal counts go by the left token's bytes, unsigned (0x7A 'z'
     * before 0xC3, the first byte of "é"), then by the right token. */
    const char *ties = "\xc3\xa9\nxb\nzz\nxa\n\xc3\xa9\nxb\nzz\nxa\n";
    t = learn(ties, strlen(ties), 261);
    if (!t) return;
    CHECK(graft_tokenizer_vocab_size(t) == 261);
    CHECK(strcmp(piece(t, 256, buf, sizeof buf), "xa") == 0);
    CHECK(strcmp(piece(t, 257, buf, sizeof buf), "xb") == 0);
    CHECK(strcmp(piece(t, 258, buf, sizeof buf), "zz") == 0);
    CHECK(strcmp(piece(t, 259, buf, sizeof buf), "\xc3\xa9") == 0);
    graft_tokenizer_free(t);

    /* A token sorts before a longer one it begins. Words: abc x2, ab x2,
     * ax x2 -> a+b 4 (256); then (ab, c) and (a, x) tie at 2, and "a" comes
     * before "ab": a+x (257), then ab+c (258). */
    const char *pre = "abc\nabc\nab\nab\nax\nax\n";
    t = learn(pre, strlen(pre), 300);
    if (!t) return;
    CHECK(graft_tokenizer_vocab_size(t) == 260);
    CHECK(strcmp(piece(t, 256, buf, sizeof buf), "ab") == 0);
    CHECK(strcmp(piece(t, 257, buf, sizeof buf), "ax") == 0);
    CHECK(strcmp(piece(t, 258, buf, sizeof buf), "abc") == 0);
    graft_tokenizer_free(t);

    /* Overlapping pairs merge left to right, as the encoder does: "aaa" is
     * "aa" + "a". */
    const char *run = "aaa\naaa\n";
    t = learn(run, strlen(run), 258);
    if (t) {
        CHECK(strcmp(piece(t, 256, buf, sizeof buf), "aa") == 0);
        CHECK(encodes_as(t, "aaa", (int[]){256, 'a'}, 2));
    }
    graft_tokenizer_free(t);
}

/* ================================================================ reference */

/* A slow learner with the documented rules: recount every pair of every
 * word occurrence before each merge. Fills rules[0..k) and returns k. */
typedef struct ref_tok {
    char *s;
    int n;
} ref_tok;

static int ref_learn(const char *text, size_t len, int max_merges, rule *rules, ref_tok *toks) {
    /* every word occurrence, in order (no counting: the recount is exhaustive) */
    int cap_w = (int)len + 1, n_w = 0;
    int **w = calloc((size_t)cap_w, sizeof *w), *wl = calloc((size_t)cap_w, sizeof *wl);
    size_t eot = strlen(EOT);
    for (size_t pos = 0; pos < len;) {
        const char *hit = NULL;
        for (size_t i = pos; i + eot <= len && !hit; i++)
            if (memcmp(text + i, EOT, eot) == 0) hit = text + i;
        size_t end = hit ? (size_t)(hit - text) : len;
        for (size_t i = pos; i < end;) {
            size_t j = pos + tok_gpt2_pretok_next((const uint8_t *)text + pos, end - pos, i - pos);
            w[n_w] = malloc((j - i) * sizeof(int));
            for (size_t k = i; k < j; k++) w[n_w][k - i] = (uint8_t)text[k];
            wl[n_w++] = (int)(j - i);
            i = j;
        }
        pos = hit ? end + eot : len;
    }
    int n_tok = 256;
    for (int b = 0; b < 256; b++) {
        toks[b].s = malloc(1);
        toks[b].s[0] = (char)b;
        toks[b].n = 1;
    }
    int dim = 256 + max_merges;
    int64_t *cnt = malloc((size_t)dim * (size_t)dim * sizeof *cnt);
    int k = 0;
    while (k < max_merges) {
        memset(cnt, 0, (size_t)dim * (size_t)dim * sizeof *cnt);
        for (int i = 0; i < n_w; i++)
            for (int j = 0; j + 1 < wl[i]; j++) cnt[(size_t)w[i][j] * (size_t)dim + (size_t)w[i][j + 1]]++;
        int ba = -1, bb = -1;
        int64_t bc = 0;
        for (int a = 0; a < n_tok; a++) {
            for (int b = 0; b < n_tok; b++) {
                int64_t c = cnt[(size_t)a * (size_t)dim + (size_t)b];
                if (c < 2) continue;
                /* already a token? */
                bool dup = false;
                for (int t = 0; t < n_tok && !dup; t++)
                    dup = toks[t].n == toks[a].n + toks[b].n && memcmp(toks[t].s, toks[a].s, (size_t)toks[a].n) == 0 &&
                          memcmp(toks[t].s + toks[a].n, toks[b].s, (size_t)toks[b].n) == 0;
                if (dup) continue;
                bool better = c > bc;
                if (c == bc) {
                    /* byte order of the left token, a prefix first; then the right */
                    int ca = 0;
                    for (int side = 0; side < 2 && ca == 0; side++) {
                        const ref_tok *x = &toks[side ? b : a], *y = &toks[side ? bb : ba];
                        int m = x->n < y->n ? x->n : y->n;
                        ca = memcmp(x->s, y->s, (size_t)m);
                        if (ca == 0) ca = (x->n > y->n) - (x->n < y->n);
                    }
                    better = ca < 0;
                }
                if (better) ba = a, bb = b, bc = c;
            }
        }
        if (ba < 0) break;
        toks[n_tok].n = toks[ba].n + toks[bb].n;
        toks[n_tok].s = malloc((size_t)toks[n_tok].n);
        memcpy(toks[n_tok].s, toks[ba].s, (size_t)toks[ba].n);
        memcpy(toks[n_tok].s + toks[ba].n, toks[bb].s, (size_t)toks[bb].n);
        rules[k] = (rule){ba, bb, n_tok};
        for (int i = 0; i < n_w; i++) {
            int o = 0;
            for (int j = 0; j < wl[i];) {
                if (j + 1 < wl[i] && w[i][j] == ba && w[i][j + 1] == bb) w[i][o++] = n_tok, j += 2;
                else w[i][o++] = w[i][j++];
            }
            wl[i] = o;
        }
        n_tok++;
        k++;
    }
    for (int i = 0; i < n_w; i++) free(w[i]);
    free(w);
    free(wl);
    free(cnt);
    return k;
}

/* Random text from fragments that exercise the pre-tokenizer: letters,
 * digits, contractions, spaces and newlines, multi-byte and invalid UTF-8,
 * and the special token. */
static size_t random_text(char *buf, size_t max) {
    static const char *const frag[] = {"a", "b", "ab", "ba", "c", "the", " ", " ", "  ", "\n", "\t", "'s", "'ll",
                                       "1", "23", "\xc3\xa9", "\xe4\xb8\xad", "\xff", "\xc3", "\x80\x80", ",", "!?",
                                       EOT, "x", "A", "\xe2\x80\x83"};
    size_t n = 0;
    for (;;) {
        const char *f = frag[rnd(sizeof frag / sizeof frag[0])];
        size_t l = strlen(f);
        if (n + l > max) break;
        memcpy(buf + n, f, l);
        n += l;
    }
    return n;
}

static void check_reference(void) {
    enum { MAX_MERGES = 160 };
    char text[3000];
    rule want[MAX_MERGES], got[MAX_MERGES];
    ref_tok toks[256 + MAX_MERGES];
    for (int trial = 0; trial < 12; trial++) {
        size_t len = random_text(text, 600 + 200 * (size_t)trial);
        int k = ref_learn(text, len, MAX_MERGES, want, toks);
        graft_tokenizer *t = learn(text, len, 257 + MAX_MERGES);
        if (!t) continue;
        int n = rules_of(t, got, MAX_MERGES);
        CHECK_MSG(n == k, "trial %d: %d merges, the reference learns %d", trial, n, k);
        CHECK(graft_tokenizer_vocab_size(t) == 257 + n);
        int first_bad = -1;
        for (int r = 0; r < n && r < k && first_bad < 0; r++)
            if (got[r].a != want[r].a || got[r].b != want[r].b || got[r].id != 256 + r) first_bad = r;
        CHECK_MSG(first_bad < 0, "trial %d: merge %d is (%d, %d), the reference's (%d, %d)", trial, first_bad,
                  first_bad >= 0 ? got[first_bad].a : 0, first_bad >= 0 ? got[first_bad].b : 0,
                  first_bad >= 0 ? want[first_bad].a : 0, first_bad >= 0 ? want[first_bad].b : 0);
        /* every token's bytes as the reference spells them */
        bool same = true;
        for (int id = 256; id < 256 + k && id < 256 + n; id++) {
            const char *p = NULL;
            size_t pl = 0;
            same = same && graft_token_piece(t, -1, id, &p, &pl) == GRAFT_OK && pl == (size_t)toks[id].n &&
                   memcmp(p, toks[id].s, pl) == 0;
        }
        CHECK(same);
        CHECK(round_trips(t, text, len));
        graft_tokenizer_free(t);
        for (int id = 0; id < 256 + k; id++) free(toks[id].s);
    }
}

/* ================================================================ round trips */

static void check_round_trips(void) {
    char text[20000];
    size_t len = random_text(text, sizeof text);
    graft_tokenizer *t = learn(text, len, 600);
    if (!t) return;
    CHECK(graft_tokenizer_vocab_size(t) > 300);
    CHECK(round_trips(t, text, len));
    /* the special token in text is the special id, never its bytes' merges */
    CHECK(encodes_as(t, EOT, (int[]){graft_tokenizer_eos(t)}, 1));
    int bad = 0;
    char buf[256];
    for (int trial = 0; trial < 300; trial++) {
        size_t n = rnd(200);
        for (size_t i = 0; i < n; i++) buf[i] = (char)rnd(256);
        if (!round_trips(t, buf, n)) bad++;
        /* mixes of the training fragments, cut anywhere */
        size_t m = random_text(buf, sizeof buf);
        size_t cut = m ? rnd((uint32_t)m) : 0;
        if (!round_trips(t, buf + cut, m - cut)) bad++;
    }
    CHECK_MSG(bad == 0, "%d random strings do not round-trip", bad);
    static const char *const odd[] = {"", "\xff\xfe", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x00" "b",
                                      "   \n\n\t ", "<|endoftext", "<|endoftext|><|endoftext|>x"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        size_t n = i == 5 ? 3 : strlen(odd[i]);
        CHECK_MSG(round_trips(t, odd[i], n), "odd string %zu", i);
    }
    graft_tokenizer_free(t);
}

/* ================================================================ files */

static char *read_in(const char *dir, const char *name, size_t *n) {
    char *path = graft_path_join(dir, name), *data = NULL;
    if (!path || graft_read_file(path, &data, n) != GRAFT_OK) data = NULL;
    free(path);
    return data;
}

static bool same_file(const char *d1, const char *d2, const char *name) {
    size_t n1 = 0, n2 = 0;
    char *a = read_in(d1, name, &n1), *b = read_in(d2, name, &n2);
    bool same = a && b && n1 == n2 && memcmp(a, b, n1) == 0;
    free(a);
    free(b);
    return same;
}

static bool same_ids(const graft_tokenizer *x, const graft_tokenizer *y, const char *s, size_t n) {
    int *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    bool same = graft_tokenize(x, s, n, &a, &na) == GRAFT_OK && graft_tokenize(y, s, n, &b, &nb) == GRAFT_OK &&
                na == nb && memcmp(a, b, na * sizeof *a) == 0;
    free(a);
    free(b);
    return same;
}

static const char *const saved_files[] = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                                          "special_tokens_map.json"};

static void remove_saved(const char *dir) {
    for (size_t i = 0; i < sizeof saved_files / sizeof saved_files[0]; i++) {
        char *p = graft_path_join(dir, saved_files[i]);
        if (p) unlink(p);
        free(p);
    }
    rmdir(dir);
}

static void check_save_reload(const char *tmp) {
    char text[30000];
    size_t len = random_text(text, sizeof text);
    graft_tokenizer *t = learn(text, len, 700), *t2 = learn(text, len, 700);
    if (!t || !t2) {
        graft_tokenizer_free(t), graft_tokenizer_free(t2);
        return;
    }
    char *d1 = graft_path_join(tmp, "a"), *d2 = graft_path_join(tmp, "b"), *d3 = graft_path_join(tmp, "c");
    CHECK_OK(graft_mkdir_p(d1));
    CHECK_OK(graft_mkdir_p(d2));
    CHECK_OK(graft_mkdir_p(d3));
    CHECK_OK(graft_tokenizer_save(t, d1));
    CHECK_OK(graft_tokenizer_save(t2, d2));
    /* determinism: the same text and size give the same files, byte for byte */
    for (size_t i = 0; i < sizeof saved_files / sizeof saved_files[0]; i++)
        CHECK_MSG(same_file(d1, d2, saved_files[i]), "%s differs between two learnings", saved_files[i]);
    /* tokenizer.json reloads and encodes as the learned tokenizer */
    graft_tokenizer *back = NULL;
    CHECK_OK(graft_tokenizer_load(d1, &back));
    if (back) {
        CHECK(graft_tokenizer_vocab_size(back) == graft_tokenizer_vocab_size(t));
        CHECK(graft_tokenizer_eos(back) == graft_tokenizer_eos(t) && graft_tokenizer_bos(back) == graft_tokenizer_bos(t));
        CHECK(same_ids(t, back, text, len));
        char buf[300];
        int bad = 0;
        for (int trial = 0; trial < 100; trial++) {
            size_t n = random_text(buf, sizeof buf);
            if (!same_ids(t, back, buf, n)) bad++;
        }
        CHECK(bad == 0);
        /* and saves again to the same bytes */
        CHECK_OK(graft_tokenizer_save(back, d3));
        CHECK(same_file(d1, d3, "tokenizer.json"));
        CHECK(same_file(d1, d3, "merges.txt"));
    }
    graft_tokenizer_free(back);
    /* so do vocab.json + merges.txt without tokenizer.json */
    char *tj = graft_path_join(d3, "tokenizer.json");
    if (tj) unlink(tj);
    free(tj);
    back = NULL;
    CHECK_OK(graft_tokenizer_load(d3, &back));
    if (back) {
        CHECK(graft_tokenizer_vocab_size(back) == graft_tokenizer_vocab_size(t));
        CHECK(same_ids(t, back, text, len));
    }
    graft_tokenizer_free(back);
    /* merges.txt lists vocab - 257 rules after its header */
    size_t n = 0;
    char *m = read_in(d1, "merges.txt", &n);
    int lines = 0;
    for (size_t i = 0; m && i < n; i++) lines += m[i] == '\n';
    CHECK_MSG(lines == 1 + graft_tokenizer_vocab_size(t) - 257, "merges.txt has %d lines for %d ids", lines,
              graft_tokenizer_vocab_size(t));
    free(m);
    remove_saved(d1), remove_saved(d2), remove_saved(d3);
    free(d1), free(d2), free(d3);
    graft_tokenizer_free(t);
    graft_tokenizer_free(t2);
}

/* ================================================================ sizes */

static void check_merge_counts(void) {
    char text[40000];
    size_t len = random_text(text, sizeof text);
    static const int ks[] = {0, 1, 2, 10, 100, 400};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        graft_tokenizer *t = learn(text, len, 257 + ks[i]);
        if (!t) continue;
        rule r[1];
        CHECK_MSG(graft_tokenizer_vocab_size(t) == 257 + ks[i] && rules_of(t, r, 0) == ks[i],
                  "asked for %d ids: %d ids, %d merges", 257 + ks[i], graft_tokenizer_vocab_size(t), rules_of(t, r, 0));
        CHECK(graft_tokenizer_eos(t) == 256 + ks[i]);
        graft_tokenizer_free(t);
    }
    /* 257 ids: no merges, the byte tokenizer's ids */
    graft_tokenizer *t = learn(text, len, 257), *bytes = NULL;
    CHECK_OK(graft_tokenizer_create_bytes(&bytes));
    if (t && bytes) CHECK(same_ids(t, bytes, text, len));
    graft_tokenizer_free(t);
    graft_tokenizer_free(bytes);
    /* a text with nothing seen twice, or only special tokens, learns nothing */
    t = learn("abc", 3, 1000);
    CHECK(t && graft_tokenizer_vocab_size(t) == 257);
    graft_tokenizer_free(t);
    t = learn(EOT EOT EOT, 3 * strlen(EOT), 1000);
    CHECK(t && graft_tokenizer_vocab_size(t) == 257);
    graft_tokenizer_free(t);
}

static void check_errors(void) {
    graft_tokenizer *t = (graft_tokenizer *)&t; /* must be reset to NULL on failure */
    CHECK_FAILS(graft_tokenizer_learn_bpe("abab", 4, 256, &t), GRAFT_ERR_INVALID, "vocab_size 256");
    CHECK(t == NULL);
    CHECK_FAILS(graft_tokenizer_learn_bpe("abab", 4, 0, &t), GRAFT_ERR_INVALID, "at least 257");
    CHECK_FAILS(graft_tokenizer_learn_bpe("abab", 4, -3, &t), GRAFT_ERR_INVALID, "vocab_size -3");
    CHECK_FAILS(graft_tokenizer_learn_bpe("abab", 4, 2000000000, &t), GRAFT_ERR_INVALID, "at most");
    CHECK_FAILS(graft_tokenizer_learn_bpe("", 0, 300, &t), GRAFT_ERR_INVALID, "empty");
    CHECK_FAILS(graft_tokenizer_learn_bpe(NULL, 0, 300, &t), GRAFT_ERR_INVALID, "empty");
    CHECK_FAILS(graft_tokenizer_learn_bpe(NULL, 5, 300, &t), GRAFT_ERR_INVALID, "text is NULL");
    CHECK_FAILS(graft_tokenizer_learn_bpe("abab", 4, 300, NULL), GRAFT_ERR_INVALID, "out is NULL");
    CHECK(t == NULL);
}

/* ================================================================ the corpus */

/* The fact corpus the learner is for: 4,096 ids in well under a minute. */
static void check_corpus_speed(void) {
    char *path = graft_path_join(test_data_dir(), "../../data/facts2/train.jsonl");
    char *text = NULL;
    size_t len = 0;
    if (!path || !graft_path_exists(path) || graft_read_file(path, &text, &len) != GRAFT_OK) {
        fprintf(stderr, "note: %s is absent: corpus speed not measured\n", path ? path : "data/facts2");
        free(path);
        return;
    }
    double t0 = test_now_s();
    graft_tokenizer *t = learn(text, len, 4096);
    double secs = test_now_s() - t0;
    if (t) {
        CHECK(graft_tokenizer_vocab_size(t) == 4096);
        CHECK(round_trips(t, text, len));
        printf("learned 4096 ids on %s (%zu bytes, JSON syntax included) in %.2f s\n", path, len, secs);
    }
    CHECK_MSG(secs < 20, "learning took %.1f s", secs);
    graft_tokenizer_free(t);
    free(text);
    free(path);
}

int main(void) {
    char tmp[] = "/tmp/graft_test_bpeXXXXXX";
    if (!mkdtemp(tmp)) TEST_SKIP("cannot create a temporary folder");
    check_hand();
    check_reference();
    check_round_trips();
    check_save_reload(tmp);
    check_merge_counts();
    check_errors();
    check_corpus_speed();
    rmdir(tmp);
    return test_finish("test_bpe_learn");
}
