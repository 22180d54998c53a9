/* test_tokenizer.c - GPT-2 byte-level BPE against llama.cpp's test vectors,
 * round trips on random and invalid UTF-8, tokenizer.json loading, the
 * llama2.c tokenizer against a reference generation, finding tokenizers
 * beside models, and the errors of corrupt files. */
#include "internal.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ================================================================ helpers */

static char *data_path(const char *rel) { return graft_path_join(test_data_dir(), rel); }

static char *read_data(const char *rel, size_t *n) {
    char *path = data_path(rel), *text = NULL;
    graft_status st = graft_read_file(path, &text, n);
    if (st != GRAFT_OK) fprintf(stderr, "cannot read %s: %s\n", path, graft_last_error());
    free(path);
    return text;
}

static void write_text(const char *path, const char *text, size_t n) {
    CHECK_OK(graft_write_file_atomic(path, text, n));
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16) % n;
}

/* Encode then decode; true when the bytes come back unchanged. Ids must lie
 * in the vocabulary. With bos >= 0 the decode is of [bos] + ids. */
static bool round_trips(const graft_tokenizer *tok, const char *s, size_t n, int bos) {
    int *ids = NULL;
    size_t k = 0;
    if (graft_tokenize(tok, s, n, &ids, &k) != GRAFT_OK) {
        fprintf(stderr, "encode failed: %s\n", graft_last_error());
        return false;
    }
    int *all = malloc((k + 1) * sizeof *all);
    size_t m = 0;
    if (bos >= 0) all[m++] = bos;
    for (size_t i = 0; i < k; i++) all[m++] = ids[i];
    bool ok = true;
    for (size_t i = 0; i < k; i++) ok = ok && ids[i] >= 0 && ids[i] < graft_tokenizer_vocab_size(tok);
    char *back = NULL;
    size_t blen = 0;
    ok = ok && graft_detokenize(tok, all, m, &back, &blen) == GRAFT_OK && blen == n && memcmp(back, s, n) == 0 &&
         back[blen] == '\0';
    free(back);
    free(all);
    free(ids);
    return ok;
}

static bool encodes_to(const graft_tokenizer *tok, const char *s, const int *want, size_t nwant) {
    int *ids = NULL;
    size_t k = 0;
    bool ok = graft_tokenize(tok, s, strlen(s), &ids, &k) == GRAFT_OK && k == nwant &&
              (k == 0 || memcmp(ids, want, k * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "encode(\"%s\") =", s);
        for (size_t i = 0; i < k; i++) fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return ok;
}

/* ================================================================ GPT-2 vectors */

#define SEP "\n__ggml_vocab_test__\n"

/* The .inp file is "case SEP case SEP ... case SEP": every case, the last
 * one included, is followed by the separator, and a case may be empty or
 * consist of newlines only. */
typedef struct vec_case {
    const char *text;
    size_t len;
    int ids[512];
    size_t n_ids;
} vec_case;

static int load_vectors(vec_case *cases, int max, char **inp_out, char **out_out) {
    size_t ni = 0, no = 0;
    char *inp = read_data("gpt2-tokenizer/ggml-vocab-gpt-2.gguf.inp", &ni);
    char *out = read_data("gpt2-tokenizer/ggml-vocab-gpt-2.gguf.out", &no);
    *inp_out = inp;
    *out_out = out;
    if (!inp || !out) return 0;
    int n = 0;
    for (char *p = inp; n < max;) {
        char *sep = strstr(p, SEP);
        if (!sep) break;
        cases[n].text = p;
        cases[n].len = (size_t)(sep - p);
        *sep = '\0';
        n++;
        p = sep + strlen(SEP);
    }
    char *line = out;
    for (int i = 0; i < n && line; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cases[i].n_ids = 0;
        for (char *q = line, *end; cases[i].n_ids < 512; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q) break;
            cases[i].ids[cases[i].n_ids++] = (int)v;
        }
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

static void check_vectors(const graft_tokenizer *tok, const char *label) {
    static vec_case cases[64];
    char *inp, *out;
    int n = load_vectors(cases, 64, &inp, &out);
    CHECK_MSG(n == 46, "%s: %d vectors parsed", label, n);
    int good = 0;
    for (int i = 0; i < n; i++) {
        int *ids = NULL;
        size_t k = 0;
        CHECK_OK(graft_tokenize(tok, cases[i].text, cases[i].len, &ids, &k));
        bool same = k == cases[i].n_ids && (k == 0 || memcmp(ids, cases[i].ids, k * sizeof(int)) == 0);
        CHECK_MSG(same, "%s: vector %d (\"%s\"): got %zu ids, want %zu", label, i, cases[i].text, k, cases[i].n_ids);
        good += same;
        CHECK(round_trips(tok, cases[i].text, cases[i].len, -1));
        free(ids);
    }
    printf("%s: %d of %d llama.cpp GPT-2 vectors match\n", label, good, n);
    free(inp);
    free(out);
}

/* ================================================================ GPT-2 round trips */

static const char *const fragments[] = {
    "Hello", " world", "don't", " I'LL", "we've", "'re", "'s", "''", " '", "'d", "'m", "'ll", "'t", "'ve",
    "é", "ü", "Äpfel", "naïve", "ñ", "ß", "œ", "Ωμέγα", "Привет", "שלום", "مرحبا", "नमस्ते",
    "我想在", "工作", "日本語", "한국어", "🦙", "🚀", "😶‍🌫️", "👍🏽", "✅", "e\xcc\x81", "a\xcc\x8a\xcc\x81",
    "0", "42", "3.14", "١٢٣", "½", "Ⅻ", " ", "  ", "   ", "\n", "\n\n", "\t", "\t\n", " \n ", "\r\n",
    "\xc2\xa0", "\xe3\x80\x80", "\xe2\x80\xa8", "!!", "...", "--", "(", ")", "<", "|", ">", "<|endoftext|>",
    "<|endoftext", "x", "_", "$", "\xef\xbc\x81"};

/* A random valid code point, excluding surrogates. */
static int32_t random_cp(void) {
    switch (rnd(4)) {
    case 0: return 0x20 + (int32_t)rnd(0x5F);
    case 1: return 0x80 + (int32_t)rnd(0x780);
    case 2: {
        int32_t c = 0x800 + (int32_t)rnd(0xF800);
        return (c >= 0xD800 && c < 0xE000) ? 0x4E00 : c;
    }
    default: return 0x10000 + (int32_t)rnd(0x100000);
    }
}

static size_t put_utf8(char *o, int32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
               o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static size_t random_text(char *buf, size_t cap) {
    size_t n = 0, parts = 1 + rnd(12);
    for (size_t i = 0; i < parts; i++) {
        if (rnd(3) == 0 && n + 4 <= cap) {
            n += put_utf8(buf + n, random_cp());
        } else {
            const char *f = fragments[rnd(sizeof fragments / sizeof *fragments)];
            size_t l = strlen(f);
            if (n + l > cap) break;
            memcpy(buf + n, f, l);
            n += l;
        }
    }
    return n;
}

static void check_gpt2_round_trips(const graft_tokenizer *tok) {
    char buf[256];
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        size_t n = random_text(buf, sizeof buf);
        if (!round_trips(tok, buf, n, -1) && bad++ < 5) fprintf(stderr, "no round trip: \"%.*s\"\n", (int)n, buf);
    }
    CHECK_MSG(bad == 0, "%d of 3000 random UTF-8 strings did not round-trip", bad);

    /* Invalid UTF-8: lone continuation bytes, truncated sequences, overlong
     * forms, surrogates, values past U+10FFFF, and random bytes. */
    static const char *const invalid[] = {"\xff", "\x80", "\xc3", "abc\x80" "def", "\xe4\xb8", "\xe4\xb8 x",
                                          "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
                                          " \xfe\xff ", "'\xff", "\xff's", "\n\xa0\n", "\xc2"};
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++)
        CHECK_MSG(round_trips(tok, invalid[i], strlen(invalid[i]), -1), "invalid case %zu", i);
    bad = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = rnd(40);
        for (size_t k = 0; k < n; k++) buf[k] = rnd(3) ? (char)rnd(256) : " a1'\n\xc3\xa9"[rnd(7)];
        bad += !round_trips(tok, buf, n, -1);
    }
    CHECK_MSG(bad == 0, "%d of 2000 random byte strings did not round-trip", bad);
    /* NUL bytes are text too. */
    CHECK(round_trips(tok, "a\0b", 3, -1));
}

static void check_gpt2_specifics(const graft_tokenizer *tok) {
    CHECK(strcmp(graft_tokenizer_kind(tok), "gpt2-bpe") == 0);
    CHECK(graft_tokenizer_vocab_size(tok) == 50257);
    CHECK(graft_tokenizer_bos(tok) == 50256 && graft_tokenizer_eos(tok) == 50256);
    CHECK(encodes_to(tok, "Hello world", (const int[]){15496, 995}, 2));
    CHECK(encodes_to(tok, "<|endoftext|>", (const int[]){50256}, 1));
    CHECK(encodes_to(tok, "Hello <|endoftext|><|endoftext|>", (const int[]){15496, 220, 50256, 50256}, 4));
    CHECK(encodes_to(tok, "", NULL, 0));
    const char *piece;
    size_t len;
    CHECK_OK(graft_token_piece(tok, -1, 995, &piece, &len));
    CHECK(len == 6 && memcmp(piece, " world", 6) == 0);
    CHECK_OK(graft_token_piece(tok, -1, 50256, &piece, &len));
    CHECK(len == 13 && memcmp(piece, "<|endoftext|>", 13) == 0);
    CHECK_FAILS(graft_token_piece(tok, -1, 50257, &piece, &len), GRAFT_ERR_RANGE, "50257");
    char *text = NULL;
    CHECK_FAILS(graft_detokenize(tok, (const int[]){15496, 995, 99999}, 3, &text, NULL), GRAFT_ERR_RANGE,
                "id 99999 at position 2");
    CHECK(text == NULL);
    CHECK_FAILS(graft_detokenize(tok, (const int[]){-1}, 1, &text, NULL), GRAFT_ERR_RANGE, "id -1 at position 0");
    CHECK_OK(graft_detokenize(tok, NULL, 0, &text, &len));
    CHECK(text && len == 0 && text[0] == '\0');
    free(text);
    int *ids = NULL;
    size_t n = 0;
    CHECK_FAILS(graft_tokenize(tok, NULL, 5, &ids, &n), GRAFT_ERR_INVALID, "NULL");
}

/* ================================================================ speed */

static char *english_like(size_t target, size_t *n) {
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
        "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
        "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
        "would", "who", "so", "no", "model", "editing", "transformer", "language", "weights", "knowledge",
        "lifelong", "tokenizer", "Wikipedia", "London", "1984", "2024", "don't", "it's", "we'll", "(see", "below)"};
    char *s = malloc(target + 64);
    size_t k = 0;
    while (k < target) {
        const char *w = words[rnd(sizeof words / sizeof *words)];
        if (k) s[k++] = ' ';
        size_t l = strlen(w);
        memcpy(s + k, w, l);
        k += l;
        if (rnd(12) == 0) {
            /* invented words keep the cache honest */
            for (int i = 0; i < 3 + (int)rnd(6); i++) s[k++] = (char)('a' + rnd(26));
        }
        if (rnd(15) == 0) s[k++] = rnd(2) ? '.' : ',';
        if (rnd(80) == 0) s[k++] = '\n';
    }
    *n = k;
    return s;
}

static double time_encode(const graft_tokenizer *tok, const char *s, size_t n, size_t *n_ids) {
    int *ids = NULL;
    double t0 = test_now_s();
    CHECK_OK(graft_tokenize(tok, s, n, &ids, n_ids));
    double dt = test_now_s() - t0;
    free(ids);
    return dt;
}

static void check_speed(const graft_tokenizer *tok) {
    size_t n, k;
    char *s = english_like(1 << 20, &n);
    double dt = time_encode(tok, s, n, &k);
    printf("gpt2 encode: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)\n", n, k, dt, (double)n / dt / 1e6);
    /* Generous: catches quadratic behaviour, not sanitizer overhead. */
    CHECK_MSG(dt < 5.0, "1 MB took %.2f s", dt);
    CHECK(round_trips(tok, s, n, -1));
    /* Pathological single words: one long letter run, one long space run. */
    memset(s, 'a', n);
    dt = time_encode(tok, s, n, &k);
    CHECK_MSG(dt < 5.0, "1 MB of 'a' took %.2f s", dt);
    memset(s, ' ', n);
    dt = time_encode(tok, s, n, &k);
    CHECK_MSG(dt < 5.0, "1 MB of spaces took %.2f s", dt);
    free(s);
}

/* ================================================================ tokenizer.json */

/* Build a tokenizer.json from encoder.json + vocab.bpe, with merges as
 * "a b" strings or as [a, b] arrays; `strip` sets lstrip and rstrip on
 * <|endoftext|>. */
static char *make_tokenizer_json(bool array_merges, bool strip) {
    size_t n;
    char *enc = read_data("gpt2-tokenizer/encoder.json", &n);
    char *bpe = read_data("gpt2-tokenizer/vocab.bpe", &n);
    if (!enc || !bpe) return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *eot = cJSON_CreateObject();
    cJSON_AddNumberToObject(eot, "id", 50256);
    cJSON_AddStringToObject(eot, "content", "<|endoftext|>");
    cJSON_AddBoolToObject(eot, "single_word", 0);
    cJSON_AddBoolToObject(eot, "lstrip", strip);
    cJSON_AddBoolToObject(eot, "rstrip", strip);
    cJSON_AddBoolToObject(eot, "normalized", 1);
    cJSON_AddBoolToObject(eot, "special", 1);
    cJSON_AddItemToArray(added, eot);
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "trim_offsets", 1);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddItemToObject(model, "vocab", cJSON_Parse(enc));
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (char *line = strtok(bpe, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0) continue;
        char *sp = strchr(line, ' ');
        if (!array_merges || !sp) {
            cJSON_AddItemToArray(merges, cJSON_CreateString(line));
            continue;
        }
        *sp = '\0';
        const char *pair[2] = {line, sp + 1};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    free(enc);
    free(bpe);
    return text;
}

static void compare_tokenizers(const graft_tokenizer *a, const graft_tokenizer *b) {
    static vec_case cases[64];
    char *inp, *out;
    int n = load_vectors(cases, 64, &inp, &out);
    int same = 0;
    for (int i = 0; i < n; i++) {
        int *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        graft_tokenize(a, cases[i].text, cases[i].len, &ia, &na);
        graft_tokenize(b, cases[i].text, cases[i].len, &ib, &nb);
        same += na == nb && (na == 0 || memcmp(ia, ib, na * sizeof(int)) == 0);
        free(ia);
        free(ib);
    }
    CHECK_MSG(same == n && n > 0, "tokenizer.json agrees on %d of %d vectors", same, n);
    free(inp);
    free(out);
}

static void check_tokenizer_json(const graft_tokenizer *ref, const char *tmpdir) {
    for (int style = 0; style < 3; style++) {
        char *json = make_tokenizer_json(style >= 1, style == 2);
        CHECK(json != NULL);
        if (!json) return;
        char *path = graft_path_join(tmpdir, "tokenizer.json");
        write_text(path, json, strlen(json));
        graft_tokenizer *tok = NULL;
        CHECK_OK(graft_tokenizer_load(path, &tok));
        if (tok && style < 2) {
            CHECK(graft_tokenizer_vocab_size(tok) == 50257 && graft_tokenizer_eos(tok) == 50256);
            compare_tokenizers(ref, tok);
            check_vectors(tok, style ? "tokenizer.json (array merges)" : "tokenizer.json (string merges)");
            CHECK(encodes_to(tok, "a<|endoftext|>b", (const int[]){64, 50256, 65}, 3));
            CHECK(encodes_to(tok, "a <|endoftext|> b", (const int[]){64, 220, 50256, 275}, 4));
        } else if (tok) {
            /* lstrip/rstrip: the special token absorbs the spaces around it */
            CHECK(encodes_to(tok, "a \t<|endoftext|>  b", (const int[]){64, 50256, 65}, 3));
            CHECK(encodes_to(tok, "\xe3\x80\x80<|endoftext|>\xc2\xa0", (const int[]){50256}, 1));
        }
        graft_tokenizer_free(tok);
        /* the folder form and graft_tokenizer_find find it too */
        tok = NULL;
        CHECK_OK(graft_tokenizer_find(tmpdir, &tok));
        CHECK(tok && graft_tokenizer_vocab_size(tok) == 50257);
        graft_tokenizer_free(tok);
        unlink(path);
        free(path);
        free(json);
    }
}

/* ================================================================ llama2.c */

static void check_llama2c(const char *tmpdir) {
    char *path = data_path("tok512.bin");
    graft_tokenizer *tok = NULL;
    CHECK_OK(graft_tokenizer_load(path, &tok));
    free(path);
    if (!tok) return;
    CHECK(strcmp(graft_tokenizer_kind(tok), "llama2c-spm") == 0);
    CHECK(graft_tokenizer_vocab_size(tok) == 512);
    CHECK(graft_tokenizer_bos(tok) == 1 && graft_tokenizer_eos(tok) == 2);

    /* The reference generation decodes, with llama2.c's rule, to its text. */
    size_t n;
    char *js = read_data("llama-stories260K-hf/inputs.json", &n);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    cJSON *greedy = cJSON_GetObjectItem(root, "greedy");
    cJSON *gen = cJSON_GetObjectItem(greedy, "generated_ids");
    const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(greedy, "text"));
    CHECK(cJSON_IsArray(gen) && want);
    if (cJSON_IsArray(gen) && want) {
        int m = cJSON_GetArraySize(gen);
        int *ids = malloc((size_t)(m + 1) * sizeof *ids);
        ids[0] = 1;
        for (int i = 0; i < m; i++) ids[i + 1] = cJSON_GetArrayItem(gen, i)->valueint;
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(graft_detokenize(tok, ids, (size_t)m + 1, &text, &len));
        CHECK_MSG(text && strcmp(text, want) == 0, "decoded \"%s\"", text ? text : "(null)");
        CHECK(round_trips(tok, want, strlen(want), 1));
        free(text);
        free(ids);
    }
    cJSON_Delete(root);
    free(js);

    /* run.c's rules: dummy prefix, merges by score, byte fallback. */
    int *ids = NULL;
    size_t k = 0;
    CHECK_OK(graft_tokenize(tok, "", 0, &ids, &k));
    CHECK(k == 0);
    free(ids);
    const char *piece;
    size_t plen;
    CHECK_OK(graft_token_piece(tok, 1, 403, &piece, &plen));
    CHECK(plen > 0 && piece[0] != ' ');
    CHECK_OK(graft_token_piece(tok, 403, 403, &piece, &plen));
    CHECK(plen > 0 && piece[0] == ' ');
    CHECK_OK(graft_token_piece(tok, -1, 3 + 0xE4, &piece, &plen));
    CHECK(plen == 1 && (uint8_t)piece[0] == 0xE4);
    CHECK_OK(graft_tokenize(tok, "\xe4\xb8\xad", 3, &ids, &k)); /* "中": no token, three byte tokens */
    CHECK(k >= 3 && ids[k - 3] == 3 + 0xE4 && ids[k - 2] == 3 + 0xB8 && ids[k - 1] == 3 + 0xAD);
    free(ids);

    static const char *const sentences[] = {
        "Once upon a time, there was a little girl named Lily.",
        "She loved to play outside in the park.",
        "Tom and Sue went to the big shop. They bought a red ball!",
        "  two leading spaces\nand a newline\tand a tab",
        "Café naïve — 我想在 🦙 ½ e\xcc\x81",
        "x",
        " ",
        "\xff\xfe invalid \x80 bytes \xc3",
    };
    for (size_t i = 0; i < sizeof sentences / sizeof *sentences; i++)
        CHECK_MSG(round_trips(tok, sentences[i], strlen(sentences[i]), 1), "llama2c round trip %zu", i);
    char buf[256];
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        size_t m = random_text(buf, sizeof buf);
        /* llama2.c's rule strips the space only from the first piece after BOS,
         * so texts are decoded after BOS; "<0x..>" literals are avoided. */
        bad += !round_trips(tok, buf, m, 1);
    }
    CHECK_MSG(bad == 0, "%d of 1000 random strings did not round-trip through tok512", bad);

    /* a 1 MB text stays fast */
    size_t big_n, nid;
    char *big = english_like(1 << 20, &big_n);
    double dt = time_encode(tok, big, big_n, &nid);
    printf("llama2c encode: %zu bytes -> %zu ids in %.3f s\n", big_n, nid, dt);
    CHECK(dt < 5.0);
    free(big);
    graft_tokenizer_free(tok);

    /* graft_tokenizer_find beside a llama2.c checkpoint */
    char *model = data_path("stories260K.bin");
    tok = NULL;
    CHECK_OK(graft_tokenizer_find(model, &tok));
    CHECK(tok && strcmp(graft_tokenizer_kind(tok), "llama2c-spm") == 0 && graft_tokenizer_vocab_size(tok) == 512);
    graft_tokenizer_free(tok);
    free(model);
    /* ... never taking the model itself, even when it is named tok*.bin */
    char *lone = graft_path_join(tmpdir, "tokmodel.bin");
    write_text(lone, "\x07\0\0\0", 4);
    CHECK_FAILS(graft_tokenizer_find(lone, &tok), GRAFT_ERR_IO, tmpdir);
    CHECK(tok == NULL);
    unlink(lone);
    free(lone);
}

/* ================================================================ errors */

static void check_corrupt_llama2c(const char *tmpdir) {
    size_t n;
    char *bin = read_data("tok512.bin", &n);
    if (!bin) return;
    char *path = graft_path_join(tmpdir, "tokenizer.bin");
    graft_tokenizer *tok = NULL;
    /* cut inside a record's text, inside a record's header, and in the
     * max_token_length header itself */
    write_text(path, bin, n - 3);
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, path);
    CHECK(strstr(graft_last_error(), "offset") != NULL);
    write_text(path, bin, 4 + 8 + 5 + 4); /* token 0 "<unk>" whole, then half a header */
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, "offset 17");
    write_text(path, bin, 2);
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, "offset 0");
    /* a corrupt length field */
    memcpy(bin + 4 + 4, "\xff\xff\xff\x7f", 4);
    write_text(path, bin, n);
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, "offset 8");
    CHECK(tok == NULL);
    unlink(path);
    free(path);
    free(bin);
}

static void check_corrupt_json(const char *tmpdir) {
    char *path = graft_path_join(tmpdir, "tokenizer.json");
    graft_tokenizer *tok = NULL;
    const char *bad_json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,, }}}";
    write_text(path, bad_json, strlen(bad_json));
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, path);
    CHECK(strstr(graft_last_error(), "JSON") != NULL);

    const char *no_merges = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
                            "\"vocab\": {\"a\": 0}}}";
    write_text(path, no_merges, strlen(no_merges));
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, "model.merges");

    const char *wordpiece = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    write_text(path, wordpiece, strlen(wordpiece));
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_UNSUPPORTED, "WordPiece");

    const char *bad_id = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
                         "\"vocab\": {\"a\": \"zero\"}, \"merges\": []}}";
    write_text(path, bad_id, strlen(bad_id));
    CHECK_FAILS(graft_tokenizer_load(path, &tok), GRAFT_ERR_FORMAT, "model.vocab[\"a\"]");
    unlink(path);
    free(path);

    /* vocab.json without merges.txt */
    char *vpath = graft_path_join(tmpdir, "vocab.json");
    char *mpath = graft_path_join(tmpdir, "merges.txt");
    size_t n;
    char *enc = read_data("gpt2-tokenizer/encoder.json", &n);
    write_text(vpath, enc, n);
    CHECK_FAILS(graft_tokenizer_load(tmpdir, &tok), GRAFT_ERR_IO, "merges.txt");
    /* a merge naming a token that is not in the vocab, on line 3 */
    const char *merges = "#version: 0.2\nĠ t\nĠ qqqqqqqqqqqqqq\n";
    write_text(mpath, merges, strlen(merges));
    CHECK_FAILS(graft_tokenizer_load(tmpdir, &tok), GRAFT_ERR_FORMAT, "merges.txt: line 3");
    CHECK(strstr(graft_last_error(), "qqqqqqqqqqqqqq") != NULL);
    const char *three = "#version: 0.2\nĠ t h\n";
    write_text(mpath, three, strlen(three));
    CHECK_FAILS(graft_tokenizer_load(tmpdir, &tok), GRAFT_ERR_FORMAT, "line 2");
    /* and a good pair loads */
    const char *good = "#version: 0.2\nĠ t\n";
    write_text(mpath, good, strlen(good));
    CHECK_OK(graft_tokenizer_load(tmpdir, &tok));
    CHECK(encodes_to(tok, " t", (const int[]){256}, 1));
    graft_tokenizer_free(tok);
    tok = NULL;
    unlink(vpath);
    unlink(mpath);
    free(vpath);
    free(mpath);
    free(enc);

    CHECK_FAILS(graft_tokenizer_load(tmpdir, &tok), GRAFT_ERR_IO, tmpdir);
    CHECK_FAILS(graft_tokenizer_load("/nonexistent/graft/tok.bin", &tok), GRAFT_ERR_IO, "/nonexistent/graft/tok.bin");
    CHECK_FAILS(graft_tokenizer_find("/nonexistent/graft/model.bin", &tok), GRAFT_ERR_IO, "/nonexistent/graft/model.bin");
    CHECK(tok == NULL);
}

/* ================================================================ edit pairs */

/* The target tokens graft_tokenize_pair gives must be exactly the tail of
 * the joined text's tokens, whatever the leading space, and decode back to
 * the target as written (with the joining space). */
static void check_pair(const graft_tokenizer *tok, const char *prompt, const char *target, const char *joined,
                       int want_merged) {
    int *p = NULL, *t = NULL, *all = NULL, merged = -1;
    size_t np = 0, nt = 0, na = 0;
    CHECK_OK(graft_tokenize_pair(tok, prompt, target, &p, &np, &t, &nt, &merged));
    CHECK_OK(graft_tokenize(tok, joined, strlen(joined), &all, &na));
    CHECK_MSG(merged == want_merged, "'%s' + '%s': merged %d", prompt, target, merged);
    if (!want_merged)
        CHECK_MSG(np + nt == na && !memcmp(all, p, np * sizeof(int)) && !memcmp(all + np, t, nt * sizeof(int)),
                  "'%s' + '%s': %zu + %zu tokens, the joined text has %zu", prompt, target, np, nt, na);
    /* [BOS] + prompt + target ids decode to the joined text (llama2.c drops
     * the dummy-prefix space after BOS) */
    int *both = malloc((np + nt + 1) * sizeof(int)), b = 0;
    if (!strcmp(graft_tokenizer_kind(tok), "llama2c-spm")) both[b++] = graft_tokenizer_bos(tok);
    memcpy(both + b, p, np * sizeof(int));
    memcpy(both + b + np, t, nt * sizeof(int));
    char *back = NULL;
    size_t bl = 0;
    CHECK_OK(graft_detokenize(tok, both, b + np + nt, &back, &bl));
    CHECK_MSG(back && !strcmp(back, joined), "'%s' + '%s' decodes to '%s'", prompt, target, back ? back : "");
    free(back), free(both), free(p), free(t), free(all);
}

static void check_pairs(void) {
    char *spm_path = data_path("tok512.bin"), *bpe_path = data_path("gpt2-tokenizer");
    char byte_path[1024];
    snprintf(byte_path, sizeof byte_path, "%s/../../models/factbase", test_data_dir());
    graft_tokenizer *spm = NULL, *bpe = NULL, *byte = NULL;
    CHECK_OK(graft_tokenizer_load(spm_path, &spm));
    CHECK_OK(graft_tokenizer_load(bpe_path, &bpe));
    if (graft_path_exists(byte_path)) CHECK_OK(graft_tokenizer_load(byte_path, &byte));
    else printf("skip: the byte tokenizer pairs (%s is missing)\n", byte_path);
    graft_tokenizer *toks[3] = {spm, bpe, byte};
    for (int k = 0; k < 3; k++) {
        if (!toks[k]) continue;
        /* with and without the target's leading space: the same tokens */
        check_pair(toks[k], "Tom had a big red", " kite", "Tom had a big red kite", 0);
        check_pair(toks[k], "Tom had a big red", "kite", "Tom had a big red kite", 0);
        check_pair(toks[k], "The mother tongue of Danielle Darrieux is", "English",
                   "The mother tongue of Danielle Darrieux is English", 0);
        check_pair(toks[k], "Q: capital of France? A:", " Paris, France", "Q: capital of France? A: Paris, France", 0);
    }
    if (spm) {
        /* the bug of issue 9: " kite" alone carries the dummy-prefix piece, in context it does not */
        int *a = NULL, *p = NULL, *t = NULL;
        size_t na = 0, np = 0, nt = 0;
        CHECK_OK(graft_tokenize(spm, " kite", 5, &a, &na));
        CHECK_OK(graft_tokenize_pair(spm, "Tom had a big red", " kite", &p, &np, &t, &nt, NULL));
        CHECK_MSG(na == nt + 1 && !memcmp(a + 1, t, nt * sizeof(int)), "alone %zu tokens, in context %zu", na, nt);
        free(a), free(p), free(t);
    }
    /* a prompt ending in a space: its last token merges with the target's first */
    if (spm) check_pair(spm, "Tom had a big red ", "kite", "Tom had a big red kite", 1);
    if (bpe) check_pair(bpe, "The capital of France is ", "Paris", "The capital of France is Paris", 1);
    if (byte) check_pair(byte, "The capital of France is ", "Paris", "The capital of France is Paris", 0);
    int *p = NULL, *t = NULL;
    size_t np = 0, nt = 0;
    CHECK_FAILS(graft_tokenize_pair(spm, NULL, "x", &p, &np, &t, &nt, NULL), GRAFT_ERR_INVALID, "NULL");
    graft_tokenizer_free(spm), graft_tokenizer_free(bpe), graft_tokenizer_free(byte);
    free(spm_path), free(bpe_path);
}

/* ================================================================ main */

int main(void) {
    char tmpdir[] = "/tmp/graft_test_tokXXXXXX";
    if (!mkdtemp(tmpdir)) TEST_SKIP("cannot create a temporary folder");
    char *gpt2_dir = data_path("gpt2-tokenizer");
    if (!graft_path_exists(gpt2_dir)) TEST_SKIP("%s is missing", gpt2_dir);

    graft_tokenizer *gpt2 = NULL;
    CHECK_OK(graft_tokenizer_load(gpt2_dir, &gpt2));
    if (gpt2) {
        check_vectors(gpt2, "encoder.json + vocab.bpe");
        check_gpt2_specifics(gpt2);
        check_gpt2_round_trips(gpt2);
        check_speed(gpt2);
        check_tokenizer_json(gpt2, tmpdir);
    }
    graft_tokenizer_free(gpt2);
    graft_tokenizer_free(NULL);
    free(gpt2_dir);

    check_llama2c(tmpdir);
    check_pairs();
    check_corrupt_llama2c(tmpdir);
    check_corrupt_json(tmpdir);
    rmdir(tmpdir);
    return test_finish("test_tokenizer");
}
