/* gpt2_load.c - loading GPT-2 byte-level BPE tokenizers: vocab.json +
 * merges.txt, OpenAI's encoder.json + vocab.bpe, or a Hugging Face
 * tokenizer.json (model.type "BPE" with the ByteLevel pre-tokenizer). */
#define _GNU_SOURCE
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ids above this are taken for corruption rather than a real vocabulary
 * (the largest have ~2^18 tokens). The id table costs 12 bytes per id up to
 * the largest id, holes included, so one entry claiming id 2^26 cost 768 MiB
 * of address space (278 MiB touched); 2^24, config.json's vocab_size limit,
 * bounds it at 192 MiB (64 MiB touched). */
#define MAX_TOKEN_ID (1 << 24)

void tok_gpt2_byte_to_unicode(int32_t table[256]) {
    /* Printable Latin-1 bytes stand for themselves; the others are moved to
     * 256.. so that every token string is visible text without spaces. */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        table[b] = keep ? b : 256 + n++;
    }
}

/* One merge rule, borrowed from the merges text or the JSON tree. */
typedef struct merge_spec {
    const char *a, *b;
    size_t alen, blen;
    size_t where; /* line number (merges.txt) or array index (tokenizer.json) */
} merge_spec;

/* Everything the builder needs, whichever files it came from. */
typedef struct gpt2_src {
    const char *vocab_path, *merges_path;
    bool json;            /* tokenizer.json: fields are named model.vocab etc. */
    bool gguf;            /* GGUF: fields are named tokenizer.ggml.tokens etc. */
    const cJSON *vocab;   /* object: token string -> id */
    const cJSON *added;   /* tokenizer.json added_tokens, or NULL */
    merge_spec *merges;
    size_t n_merges;
} gpt2_src;

/* Scratch state of one load. */
typedef struct gpt2_build {
    graft_tokenizer *t;
    const gpt2_src *src;
    tok_map vocab;        /* token string (byte-level form) -> id */
    int max_id;
    size_t max_key_len;
} gpt2_build;

static const char *vocab_field(const gpt2_src *src) {
    return src->gguf ? "tokenizer.ggml.tokens" : src->json ? "model.vocab" : "vocab";
}

static void merge_where(const gpt2_src *src, size_t where, char *buf, size_t size) {
    if (src->gguf) snprintf(buf, size, "tokenizer.ggml.merges[%zu]", where);
    else if (src->json) snprintf(buf, size, "model.merges[%zu]", where);
    else snprintf(buf, size, "line %zu", where);
}

/* ================================================================ JSON helpers */

static graft_status parse_json(const char *path, const char *text, size_t len, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return GRAFT_OK;
    size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
    return graft_fail(GRAFT_ERR_FORMAT, "%s: invalid JSON near byte offset %zu", path, off);
}

static bool json_int(const cJSON *item, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!(v >= lo && v <= hi) || floor(v) != v) return false;
    *out = (int)v;
    return true;
}

static bool json_true(const cJSON *obj, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* ================================================================ vocab */

static graft_status scan_vocab(gpt2_build *g) {
    const gpt2_src *src = g->src;
    if (!cJSON_IsObject(src->vocab))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: %s is not a JSON object of token -> id", src->vocab_path,
                          vocab_field(src));
    int n = cJSON_GetArraySize(src->vocab);
    if (n == 0) return graft_fail(GRAFT_ERR_FORMAT, "%s: %s is empty", src->vocab_path, vocab_field(src));
    if (!tok_map_init(&g->vocab, (size_t)n)) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", src->vocab_path);
    const cJSON *it;
    cJSON_ArrayForEach(it, src->vocab) {
        int id;
        if (!json_int(it, 0, MAX_TOKEN_ID, &id))
            return graft_fail(GRAFT_ERR_FORMAT, "%s: %s[\"%s\"]: id is not an integer in [0, %d]", src->vocab_path,
                              vocab_field(src), it->string, MAX_TOKEN_ID);
        size_t len = strlen(it->string);
        if (!tok_map_put(&g->vocab, it->string, len, id))
            return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", src->vocab_path);
        if (len > g->max_key_len) g->max_key_len = len;
        if (id > g->max_id) g->max_id = id;
    }
    return GRAFT_OK;
}

static graft_status check_added_entry(const gpt2_src *src, const cJSON *e, size_t i, int *id, const char **content) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
    if (!json_int(cJSON_GetObjectItemCaseSensitive(e, "id"), 0, MAX_TOKEN_ID, id))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: added_tokens[%zu].id is not an integer in [0, %d]", src->vocab_path, i,
                          MAX_TOKEN_ID);
    if (!cJSON_IsString(c) || c->valuestring[0] == '\0')
        return graft_fail(GRAFT_ERR_FORMAT, "%s: added_tokens[%zu].content is not a non-empty string",
                          src->vocab_path, i);
    *content = c->valuestring;
    return GRAFT_OK;
}

static graft_status scan_added(gpt2_build *g) {
    const gpt2_src *src = g->src;
    if (!src->added) return GRAFT_OK;
    if (!cJSON_IsArray(src->added))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: added_tokens is not an array", src->vocab_path);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, src->added) {
        int id = 0;
        const char *content;
        GRAFT_TRY(check_added_entry(src, e, i++, &id, &content));
        if (id > g->max_id) g->max_id = id;
    }
    return GRAFT_OK;
}

/* The bytes a byte-level token string stands for. Characters outside the
 * byte alphabet (possible in added tokens) are kept as their UTF-8. */
static size_t unicode_to_bytes(const char *s, size_t n, const int16_t inv[324], char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t l = tok_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (cp >= 0 && cp < 324 && inv[cp] >= 0) out[k++] = (char)inv[cp];
        else memcpy(out + k, s + i, l), k += l;
        i += l;
    }
    return k;
}

static graft_status set_piece(graft_tokenizer *t, tok_bytes *pool, int id, const char *p, size_t n) {
    t->piece_off[id] = pool->n;
    t->piece_len[id] = (int32_t)n;
    if (!tok_bytes_append(pool, p, n)) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
    return GRAFT_OK;
}

static graft_status fill_pieces(gpt2_build *g) {
    graft_tokenizer *t = g->t;
    GRAFT_TRY(tok_pieces_alloc(t, g->max_id + 1));
    int32_t enc[256];
    int16_t inv[324];
    tok_gpt2_byte_to_unicode(enc);
    for (int c = 0; c < 324; c++) inv[c] = -1;
    for (int b = 0; b < 256; b++) inv[enc[b]] = (int16_t)b;

    tok_bytes pool = {0};
    char *tmp = malloc(g->max_key_len + 1);
    graft_status st = tmp ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", t->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, g->src->vocab) {
        if (st != GRAFT_OK) break;
        int id = (int)it->valuedouble;
        if (t->piece_len[id] >= 0)
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s[\"%s\"]: id %d is already used by another token",
                            g->src->vocab_path, vocab_field(g->src), it->string, id);
        else
            st = set_piece(t, &pool, id, tmp, unicode_to_bytes(it->string, strlen(it->string), inv, tmp));
    }
    free(tmp);
    /* Added tokens decode to their content verbatim, as in HF's AddedVocabulary. */
    const cJSON *e;
    if (g->src->added) {
        cJSON_ArrayForEach(e, g->src->added) {
            if (st != GRAFT_OK) break;
            const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
            int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
            st = set_piece(t, &pool, id, c, strlen(c));
        }
    }
    t->piece_pool = pool.p;
    return st;
}

static graft_status find_byte_ids(gpt2_build *g) {
    int32_t enc[256];
    tok_gpt2_byte_to_unicode(enc);
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t n = tok_utf8_encode(enc[b], u);
        int64_t id;
        if (!tok_map_get(&g->vocab, u, n, &id))
            return graft_fail(GRAFT_ERR_FORMAT, "%s: %s has no token for byte 0x%02X (\"%.*s\"); not a byte-level BPE",
                              g->src->vocab_path, vocab_field(g->src), b, (int)n, u);
        g->t->bpe.byte_id[b] = (int)id;
    }
    return GRAFT_OK;
}

/* ================================================================ merges */

static graft_status lookup_merge_part(gpt2_build *g, const merge_spec *m, const char *what, const char *s, size_t n,
                                      int *id) {
    int64_t v;
    if (tok_map_get(&g->vocab, s, n, &v)) {
        *id = (int)v;
        return GRAFT_OK;
    }
    char where[64];
    merge_where(g->src, m->where, where, sizeof where);
    return graft_fail(GRAFT_ERR_FORMAT, "%s: %s: %s \"%.*s\" is not in the vocab", g->src->merges_path, where, what,
                      (int)n, s);
}

static graft_status add_merges(gpt2_build *g) {
    const gpt2_src *src = g->src;
    tok_pairmap *pm = &g->t->bpe.merges;
    if (!tok_pairmap_init(pm, src->n_merges)) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", src->merges_path);
    char *cat = NULL;
    size_t cat_cap = 0;
    graft_status st = GRAFT_OK;
    for (size_t i = 0; i < src->n_merges && st == GRAFT_OK; i++) {
        const merge_spec *m = &src->merges[i];
        int a = 0, b = 0, ab = 0;
        if ((st = lookup_merge_part(g, m, "token", m->a, m->alen, &a)) != GRAFT_OK) break;
        if ((st = lookup_merge_part(g, m, "token", m->b, m->blen, &b)) != GRAFT_OK) break;
        if (m->alen + m->blen > cat_cap) {
            free(cat);
            cat_cap = (m->alen + m->blen) * 2;
            if (!(cat = malloc(cat_cap))) {
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", src->merges_path);
                break;
            }
        }
        memcpy(cat, m->a, m->alen);
        memcpy(cat + m->alen, m->b, m->blen);
        if ((st = lookup_merge_part(g, m, "merged token", cat, m->alen + m->blen, &ab)) != GRAFT_OK) break;
        /* A repeated rule keeps its last rank, as OpenAI's and HF's dicts do. */
        if (!tok_pairmap_put(pm, a, b, (int)i, ab))
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", src->merges_path);
    }
    free(cat);
    return st;
}

/* ================================================================ added tokens */

static int cmp_added(const void *pa, const void *pb) {
    const tok_added *a = pa, *b = pb;
    uint8_t ca = (uint8_t)a->text[0], cb = (uint8_t)b->text[0];
    if (ca != cb) return ca < cb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id - b->id;
}

static graft_status push_added(tok_bpe *bpe, const char *path, const char *text, int id, bool lstrip, bool rstrip) {
    tok_added *a = &bpe->added[bpe->n_added];
    a->text = strdup(text);
    if (!a->text) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    a->len = strlen(text);
    a->id = id;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    bpe->n_added++;
    return GRAFT_OK;
}

static void index_added(tok_bpe *bpe) {
    qsort(bpe->added, (size_t)bpe->n_added, sizeof *bpe->added, cmp_added);
    int k = 0;
    for (int c = 0; c <= 256; c++) {
        while (k < bpe->n_added && (uint8_t)bpe->added[k].text[0] < c) k++;
        bpe->added_start[c] = k;
    }
    bpe->added_start[256] = bpe->n_added;
}

static graft_status collect_added(gpt2_build *g) {
    tok_bpe *bpe = &g->t->bpe;
    int n = g->src->added ? cJSON_GetArraySize(g->src->added) : 1;
    bpe->added = calloc((size_t)n + 1, sizeof *bpe->added);
    if (!bpe->added) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", g->t->path);
    if (g->src->added) {
        const cJSON *e;
        cJSON_ArrayForEach(e, g->src->added) {
            const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
            int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
            GRAFT_TRY(push_added(bpe, g->t->path, c, id, json_true(e, "lstrip"), json_true(e, "rstrip")));
        }
    } else {
        /* Without tokenizer.json, HF's GPT2Tokenizer still treats its
         * <|endoftext|> (bos = eos = unk) as special text. */
        int64_t id;
        if (tok_map_get(&g->vocab, "<|endoftext|>", 13, &id))
            GRAFT_TRY(push_added(bpe, g->t->path, "<|endoftext|>", (int)id, false, false));
    }
    index_added(bpe);
    return GRAFT_OK;
}

static int special_id(const gpt2_build *g, const char *const *names) {
    const tok_bpe *bpe = &g->t->bpe;
    for (int k = 0; names[k]; k++) {
        for (int i = 0; i < bpe->n_added; i++)
            if (strcmp(bpe->added[i].text, names[k]) == 0) return bpe->added[i].id;
        int64_t id;
        if (tok_map_get(&g->vocab, names[k], strlen(names[k]), &id)) return (int)id;
    }
    return -1;
}

static graft_status build(graft_tokenizer *t, const gpt2_src *src) {
    static const char *const bos_names[] = {"<|endoftext|>", "<|begin_of_text|>", "<s>", NULL};
    static const char *const eos_names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", NULL};
    gpt2_build g = {.t = t, .src = src, .max_id = -1};
    t->kind = TOK_GPT2_BPE;
    graft_status st = scan_vocab(&g);
    if (st == GRAFT_OK) st = scan_added(&g);
    if (st == GRAFT_OK) st = fill_pieces(&g);
    if (st == GRAFT_OK) st = find_byte_ids(&g);
    if (st == GRAFT_OK) st = add_merges(&g);
    if (st == GRAFT_OK) st = collect_added(&g);
    if (st == GRAFT_OK) {
        t->bos = special_id(&g, bos_names);
        t->eos = special_id(&g, eos_names);
    }
    tok_map_free(&g.vocab);
    return st;
}

void tok_gpt2_free(tok_bpe *b) {
    tok_pairmap_free(&b->merges);
    for (int i = 0; i < b->n_added; i++) free(b->added[i].text);
    free(b->added);
    b->added = NULL;
    b->n_added = 0;
}

/* ================================================================ merges.txt */

/* Split "a b" at its single space. */
static bool split_pair(const char *s, size_t n, merge_spec *m) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1))) return false;
    m->a = s;
    m->alen = (size_t)(sp - s);
    m->b = sp + 1;
    m->blen = n - m->alen - 1;
    return true;
}

static graft_status parse_merges_txt(const char *path, const char *text, size_t size, merge_spec **out, size_t *n_out) {
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) lines += text[i] == '\n';
    merge_spec *ms = malloc(lines * sizeof *ms);
    if (!ms) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    size_t n = 0, line = 0;
    for (size_t pos = 0; pos < size;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - s) : size - pos;
        pos += len + 1;
        line++;
        if (len > 0 && s[len - 1] == '\r') len--;
        if (len == 0 || (len >= 8 && memcmp(s, "#version", 8) == 0)) continue;
        if (!split_pair(s, len, &ms[n])) {
            free(ms);
            return graft_fail(GRAFT_ERR_FORMAT, "%s: line %zu: expected two tokens separated by one space", path, line);
        }
        ms[n++].where = line;
    }
    if (n == 0) {
        free(ms);
        return graft_fail(GRAFT_ERR_FORMAT, "%s: no merge rules", path);
    }
    *out = ms;
    *n_out = n;
    return GRAFT_OK;
}

graft_status tok_gpt2_load_files_mem(graft_tokenizer *t, const char *vocab_path, const char *vtext, size_t vsize,
                                     const char *merges_path, const char *mtext, size_t msize) {
    cJSON *root = NULL;
    gpt2_src src = {.vocab_path = vocab_path, .merges_path = merges_path};
    graft_status st = parse_json(vocab_path, vtext, vsize, &root);
    if (st == GRAFT_OK) st = parse_merges_txt(merges_path, mtext, msize, &src.merges, &src.n_merges);
    if (st == GRAFT_OK) {
        src.vocab = root;
        st = build(t, &src);
    }
    free(src.merges);
    cJSON_Delete(root);
    return st;
}

graft_status tok_gpt2_load_files(graft_tokenizer *t, const char *vocab_path, const char *merges_path) {
    char *vtext = NULL, *mtext = NULL;
    size_t vsize = 0, msize = 0;
    graft_status st = graft_read_file(vocab_path, &vtext, &vsize);
    if (st == GRAFT_OK) st = graft_read_file(merges_path, &mtext, &msize);
    if (st == GRAFT_OK) st = tok_gpt2_load_files_mem(t, vocab_path, vtext, vsize, merges_path, mtext, msize);
    free(vtext);
    free(mtext);
    return st;
}

/* ================================================================ tokenizer.json */

static graft_status json_merges(const char *path, const cJSON *arr, merge_spec **out, size_t *n_out) {
    if (!cJSON_IsArray(arr)) return graft_fail(GRAFT_ERR_FORMAT, "%s: model.merges is missing or not an array", path);
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    merge_spec *ms = malloc((n ? n : 1) * sizeof *ms);
    if (!ms) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        bool ok;
        if (cJSON_IsString(e)) {
            ok = split_pair(e->valuestring, strlen(e->valuestring), &ms[i]);
        } else {
            /* Newer files: ["a", "b"], which allows spaces inside tokens. */
            const cJSON *a = cJSON_GetArrayItem(e, 0), *b = cJSON_GetArrayItem(e, 1);
            ok = cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(a) && cJSON_IsString(b);
            if (ok)
                ms[i] = (merge_spec){a->valuestring, b->valuestring, strlen(a->valuestring), strlen(b->valuestring), 0};
        }
        if (!ok) {
            free(ms);
            return graft_fail(GRAFT_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", path, i);
        }
        ms[i].where = i;
        i++;
    }
    *out = ms;
    *n_out = n;
    return GRAFT_OK;
}

static const char *json_type(const cJSON *obj) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(ty) ? ty->valuestring : "?";
}

/* graft implements one model: byte-level BPE with GPT-2's regex. Anything
 * that would change the ids is refused rather than silently ignored. */
static graft_status check_supported(const char *path, const cJSON *root, const cJSON *model) {
    const char *ty = json_type(model);
    if (strcmp(ty, "BPE") != 0 && strcmp(ty, "?") != 0)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: model.type is \"%s\"; only byte-level \"BPE\" is supported",
                          path, ty);
    if (json_true(model, "byte_fallback"))
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: model.byte_fallback is not supported (not a byte-level BPE)",
                          path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affixes[k]);
        if (cJSON_IsString(a) && a->valuestring[0])
            return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: model.%s is not supported", path, affixes[k]);
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm))
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported", path, json_type(norm));
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!cJSON_IsObject(pre) || strcmp(json_type(pre), "ByteLevel") != 0)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported (need ByteLevel)", path,
                          pre ? json_type(pre) : "null");
    const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pre, "use_regex");
    if (json_true(pre, "add_prefix_space") || cJSON_IsFalse(regex))
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: pre_tokenizer.add_prefix_space=true or use_regex=false is not supported", path);
    return GRAFT_OK;
}

graft_status tok_gpt2_load_json(graft_tokenizer *t, const char *path) {
    char *text = NULL;
    size_t size = 0;
    graft_status st = graft_read_file(path, &text, &size);
    if (st == GRAFT_OK) st = tok_gpt2_load_json_mem(t, path, text, size);
    free(text);
    return st;
}

graft_status tok_gpt2_load_json_mem(graft_tokenizer *t, const char *path, const char *text, size_t size) {
    cJSON *root = NULL;
    gpt2_src src = {.vocab_path = path, .merges_path = path, .json = true};
    graft_status st = parse_json(path, text, size, &root);
    const cJSON *model = root ? cJSON_GetObjectItemCaseSensitive(root, "model") : NULL;
    if (st == GRAFT_OK && !cJSON_IsObject(model))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: no \"model\" object (not a tokenizer.json?)", path);
    if (st == GRAFT_OK) st = check_supported(path, root, model);
    if (st == GRAFT_OK) {
        src.vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
        if (!src.vocab) st = graft_fail(GRAFT_ERR_FORMAT, "%s: model.vocab is missing", path);
    }
    if (st == GRAFT_OK)
        st = json_merges(path, cJSON_GetObjectItemCaseSensitive(model, "merges"), &src.merges, &src.n_merges);
    if (st == GRAFT_OK) {
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
        src.added = cJSON_IsNull(added) ? NULL : added;
        st = build(t, &src);
    }
    free(src.merges);
    cJSON_Delete(root);
    return st;
}

/* ================================================================ token lists (GGUF) */

/* GGUF token types (llama.cpp's llama_token_type). */
#define TT_CONTROL 3
#define TT_USER_DEFINED 4
#define TT_UNUSED 5

/* The list is turned into the JSON tree tokenizer.json would give (vocab
 * object, added_tokens array), so that one builder checks and builds every
 * kind of source. */
graft_status tok_gpt2_load_list(graft_tokenizer *t, const char *where, int n, const char *const *tokens,
                                const size_t *lens, const int32_t *types, size_t n_merges,
                                const char *const *merges, const size_t *merge_lens) {
    gpt2_src src = {.vocab_path = where, .merges_path = where, .json = true, .gguf = true};
    cJSON *vocab = cJSON_CreateObject(), *added = cJSON_CreateArray();
    merge_spec *ms = malloc((n_merges ? n_merges : 1) * sizeof *ms);
    char *key = NULL;
    size_t key_cap = 0;
    graft_status st = (vocab && added && ms) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", where);
    for (int i = 0; i < n && st == GRAFT_OK; i++) {
        int32_t ty = types ? types[i] : 1;
        if (ty == TT_UNUSED) continue;
        if (memchr(tokens[i], 0, lens[i])) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: tokenizer.ggml.tokens[%d] contains a NUL byte", where, i);
            break;
        }
        if (lens[i] + 1 > key_cap) {
            free(key);
            key_cap = 2 * lens[i] + 16;
            if (!(key = malloc(key_cap))) {
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", where);
                break;
            }
        }
        memcpy(key, tokens[i], lens[i]);
        key[lens[i]] = '\0';
        if (!cJSON_AddNumberToObject(vocab, key, i)) st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", where);
        if (st == GRAFT_OK && (ty == TT_CONTROL || ty == TT_USER_DEFINED) && lens[i] > 0) {
            cJSON *e = cJSON_CreateObject();
            if (!e || !cJSON_AddNumberToObject(e, "id", i) || !cJSON_AddStringToObject(e, "content", key) ||
                !cJSON_AddItemToArray(added, e)) {
                cJSON_Delete(e);
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", where);
            }
        }
    }
    for (size_t i = 0; i < n_merges && st == GRAFT_OK; i++) {
        if (!split_pair(merges[i], merge_lens[i], &ms[i]))
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: tokenizer.ggml.merges[%zu]: expected two tokens separated by one space",
                            where, i);
        ms[i].where = i;
    }
    if (st == GRAFT_OK) {
        src.vocab = vocab;
        src.added = added;
        src.merges = ms;
        src.n_merges = n_merges;
        st = build(t, &src);
    }
    free(key);
    free(ms);
    cJSON_Delete(vocab);
    cJSON_Delete(added);
    return st;
}
