/* save.c - writing a tokenizer as the files Hugging Face's save_pretrained
 * writes for GPT-2 (tokenizer.json, vocab.json, merges.txt,
 * tokenizer_config.json, special_tokens_map.json).
 *
 * The loaded tokenizer keeps the bytes of each token, the merge table as
 * (pair -> rank, merged id) and the added tokens; the files are rebuilt from
 * those: a vocab entry is its bytes spelled in GPT-2's byte-to-unicode
 * alphabet, merges are listed in rank order, added tokens keep their text. */
#include "tokenizer.h"
#include "model/save.h"
#include "tokenizer/tokenizer_save.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vocab_out {
    int n;
    char **str;      /* [n] byte-level spelling of each id (NULL: no token) */
    bool *in_vocab;  /* [n] listed in model.vocab */
    bool *added;     /* [n] an added token */
    const tok_added **added_of; /* [n] */
} vocab_out;

typedef struct merge_out {
    int rank, a, b;
} merge_out;

static void vocab_free(vocab_out *v) {
    if (v->str)
        for (int i = 0; i < v->n; i++) free(v->str[i]);
    free(v->str);
    free(v->in_vocab);
    free(v->added);
    free(v->added_of);
    memset(v, 0, sizeof *v);
}

/* Spell bytes in the byte-level alphabet (each byte one code point). */
static char *byte_level(const char *p, size_t n, const int32_t enc[256]) {
    char *s = malloc(n * 4 + 1);
    if (!s) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += tok_utf8_encode(enc[(uint8_t)p[i]], s + k);
    s[k] = '\0';
    return s;
}

static graft_status build_vocab(const graft_tokenizer *t, vocab_out *v) {
    memset(v, 0, sizeof *v);
    v->n = t->n_vocab;
    v->str = calloc((size_t)v->n + 1, sizeof *v->str);
    v->in_vocab = calloc((size_t)v->n + 1, sizeof *v->in_vocab);
    v->added = calloc((size_t)v->n + 1, sizeof *v->added);
    v->added_of = calloc((size_t)v->n + 1, sizeof *v->added_of);
    tok_map seen = {0};
    if (!v->str || !v->in_vocab || !v->added || !v->added_of || !tok_map_init(&seen, (size_t)v->n)) goto oom;
    for (int k = 0; k < t->bpe.n_added; k++) {
        int id = t->bpe.added[k].id;
        if (id >= 0 && id < v->n) {
            v->added[id] = true;
            v->added_of[id] = &t->bpe.added[k];
        }
    }
    int32_t enc[256];
    tok_gpt2_byte_to_unicode(enc);
    /* Ordinary tokens first, so that an added token never takes the
     * spelling of one of them. */
    for (int pass = 0; pass < 2; pass++) {
        for (int id = 0; id < v->n; id++) {
            if (t->piece_len[id] < 0 || v->added[id] != (pass == 1)) continue;
            v->str[id] = byte_level(t->piece_pool + t->piece_off[id], (size_t)t->piece_len[id], enc);
            if (!v->str[id]) goto oom;
            int64_t other;
            size_t len = strlen(v->str[id]);
            if (tok_map_get(&seen, v->str[id], len, &other)) continue; /* the first id keeps a spelling */
            if (!tok_map_put(&seen, v->str[id], len, id)) goto oom;
            v->in_vocab[id] = true;
        }
    }
    tok_map_free(&seen);
    return GRAFT_OK;
oom:
    tok_map_free(&seen);
    vocab_free(v);
    return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory saving the tokenizer", t->path);
}

static int cmp_merge(const void *a, const void *b) {
    const merge_out *x = a, *y = b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* The merge rules in rank order. */
static graft_status build_merges(const graft_tokenizer *t, const vocab_out *v, merge_out **out, size_t *n_out) {
    const tok_pairmap *pm = &t->bpe.merges;
    merge_out *ms = malloc((pm->count + 1) * sizeof *ms);
    if (!ms) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory saving the tokenizer", t->path);
    size_t n = 0;
    for (size_t i = 0; i < pm->cap && pm->e; i++) {
        const tok_pair_entry *e = &pm->e[i];
        if (e->rank < 0) continue;
        int a = (int)(uint32_t)(e->key >> 32), b = (int)(uint32_t)e->key;
        if (a < 0 || a >= v->n || b < 0 || b >= v->n || !v->str[a] || !v->str[b]) {
            free(ms);
            return graft_fail(GRAFT_ERR_INTERNAL, "%s: merge rule of rank %d names a token that does not exist",
                              t->path, e->rank);
        }
        ms[n++] = (merge_out){e->rank, a, b};
    }
    qsort(ms, n, sizeof *ms, cmp_merge);
    *out = ms;
    *n_out = n;
    return GRAFT_OK;
}

/* An AddedToken object. tokenizer.json lists its fields in the tokenizers
 * library's order (id first); tokenizer_config.json, written by Python with
 * sort_keys, alphabetically. */
static void added_token_obj(graft_sbuf *b, const tok_added *a, const char *indent, bool tokenizers_order) {
    const char *ls = a->lstrip ? "true" : "false", *rs = a->rstrip ? "true" : "false";
    graft_sb_str(b, "{\n");
    if (tokenizers_order) {
        graft_sb_printf(b, "%s  \"id\": %d,\n%s  \"content\": ", indent, a->id, indent);
        graft_sb_json_str(b, a->text, a->len);
        graft_sb_printf(b, ",\n%s  \"single_word\": false,\n%s  \"lstrip\": %s,\n%s  \"rstrip\": %s,\n"
                           "%s  \"normalized\": false,\n%s  \"special\": true\n%s}",
                        indent, indent, ls, indent, rs, indent, indent, indent);
    } else {
        graft_sb_printf(b, "%s  \"content\": ", indent);
        graft_sb_json_str(b, a->text, a->len);
        graft_sb_printf(b, ",\n%s  \"lstrip\": %s,\n%s  \"normalized\": false,\n%s  \"rstrip\": %s,\n"
                           "%s  \"single_word\": false,\n%s  \"special\": true\n%s}",
                        indent, ls, indent, indent, rs, indent, indent, indent);
    }
}

static void merge_entry(graft_sbuf *b, const vocab_out *v, const merge_out *m, bool as_pairs) {
    if (as_pairs) {
        graft_sb_str(b, "[");
        graft_sb_json_str(b, v->str[m->a], strlen(v->str[m->a]));
        graft_sb_str(b, ", ");
        graft_sb_json_str(b, v->str[m->b], strlen(v->str[m->b]));
        graft_sb_str(b, "]");
    } else {
        size_t la = strlen(v->str[m->a]), lb = strlen(v->str[m->b]);
        char *s = malloc(la + lb + 2);
        if (!s) {
            b->oom = true;
            return;
        }
        memcpy(s, v->str[m->a], la);
        s[la] = ' ';
        memcpy(s + la + 1, v->str[m->b], lb + 1);
        graft_sb_json_str(b, s, la + lb + 1);
        free(s);
    }
}

static void tokenizer_json(graft_sbuf *b, const graft_tokenizer *t, const vocab_out *v, const merge_out *ms,
                           size_t n_merges, bool as_pairs) {
    graft_sb_str(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    /* added tokens in id order, as the tokenizers library lists them */
    bool first = true;
    for (int id = 0; id < v->n; id++) {
        if (!v->added[id]) continue;
        graft_sb_str(b, first ? "\n    " : ",\n    ");
        added_token_obj(b, v->added_of[id], "    ", true);
        first = false;
    }
    graft_sb_str(b, first ? "],\n" : "\n  ],\n");
    graft_sb_str(b, "  \"normalizer\": null,\n"
                    "  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": false,\n"
                    "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
                    "  \"post_processor\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
                    "    \"trim_offsets\": false,\n    \"use_regex\": true\n  },\n"
                    "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
                    "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
                    "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
                    "    \"continuing_subword_prefix\": \"\",\n    \"end_of_word_suffix\": \"\",\n"
                    "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {");
    first = true;
    for (int id = 0; id < v->n; id++) {
        if (!v->in_vocab[id]) continue;
        graft_sb_str(b, first ? "\n      " : ",\n      ");
        graft_sb_json_str(b, v->str[id], strlen(v->str[id]));
        graft_sb_printf(b, ": %d", id);
        first = false;
    }
    graft_sb_str(b, first ? "},\n    \"merges\": [" : "\n    },\n    \"merges\": [");
    for (size_t i = 0; i < n_merges; i++) {
        graft_sb_str(b, i ? ",\n      " : "\n      ");
        merge_entry(b, v, &ms[i], as_pairs);
    }
    graft_sb_str(b, n_merges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
    (void)t;
}

/* The text of a special id for tokenizer_config.json, or NULL. */
static const tok_added *special_of(const vocab_out *v, int id) {
    return (id >= 0 && id < v->n && v->added[id]) ? v->added_of[id] : NULL;
}

static void special_value(graft_sbuf *b, const graft_tokenizer *t, const vocab_out *v, int id) {
    const tok_added *a = special_of(v, id);
    if (a) graft_sb_json_str(b, a->text, a->len);
    else if (id >= 0 && id < t->n_vocab && t->piece_len[id] >= 0)
        graft_sb_json_str(b, t->piece_pool + t->piece_off[id], (size_t)t->piece_len[id]);
    else graft_sb_str(b, "null");
}

static void tokenizer_config_json(graft_sbuf *b, const graft_tokenizer *t, const vocab_out *v, long max_len) {
    /* Keys sorted, as transformers writes them. GPT-2 has no UNK of its own:
     * its tokenizer uses <|endoftext|> for bos, eos and unk alike. */
    graft_sb_str(b, "{\n  \"add_bos_token\": false,\n  \"add_prefix_space\": false,\n  \"added_tokens_decoder\": {");
    bool first = true;
    for (int id = 0; id < v->n; id++) {
        if (!v->added[id]) continue;
        graft_sb_printf(b, "%s    \"%d\": ", first ? "\n" : ",\n", id);
        added_token_obj(b, v->added_of[id], "    ", false);
        first = false;
    }
    graft_sb_str(b, first ? "},\n" : "\n  },\n");
    graft_sb_str(b, "  \"bos_token\": ");
    special_value(b, t, v, t->bos);
    graft_sb_str(b, ",\n  \"clean_up_tokenization_spaces\": false,\n  \"eos_token\": ");
    special_value(b, t, v, t->eos);
    graft_sb_str(b, ",\n  \"errors\": \"replace\",\n");
    if (max_len > 0) graft_sb_printf(b, "  \"model_max_length\": %ld,\n", max_len);
    graft_sb_str(b, "  \"pad_token\": null,\n  \"tokenizer_class\": \"GPT2Tokenizer\",\n  \"unk_token\": ");
    special_value(b, t, v, t->eos);
    graft_sb_str(b, "\n}\n");
}

static void special_tokens_map_json(graft_sbuf *b, const graft_tokenizer *t, const vocab_out *v) {
    graft_sb_str(b, "{\n  \"bos_token\": ");
    special_value(b, t, v, t->bos);
    graft_sb_str(b, ",\n  \"eos_token\": ");
    special_value(b, t, v, t->eos);
    graft_sb_str(b, ",\n  \"unk_token\": ");
    special_value(b, t, v, t->eos);
    graft_sb_str(b, "\n}\n");
}

static graft_status write_in(const char *dir, const char *name, graft_sbuf *b) {
    char *path = graft_path_join(dir, name);
    graft_status st = path ? graft_sb_write_file(b, path) : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    free(path);
    graft_sb_free(b);
    return st;
}

static graft_status save_bpe(const graft_tokenizer *t, const char *dir, long max_len) {
    vocab_out v;
    GRAFT_TRY(build_vocab(t, &v));
    merge_out *ms = NULL;
    size_t n_merges = 0;
    graft_status st = build_merges(t, &v, &ms, &n_merges);
    /* "a b" strings cannot hold a token with a space in it; such a table is
     * written as ["a", "b"] pairs (tokenizers >= 0.20), and the slow files,
     * which have no such form, are left out. */
    bool as_pairs = false;
    for (size_t i = 0; st == GRAFT_OK && i < n_merges; i++)
        if (strchr(v.str[ms[i].a], ' ') || strchr(v.str[ms[i].b], ' ')) as_pairs = true;
    graft_sbuf b = {0};
    if (st == GRAFT_OK) {
        tokenizer_json(&b, t, &v, ms, n_merges, as_pairs);
        st = write_in(dir, "tokenizer.json", &b);
    }
    if (st == GRAFT_OK && !as_pairs) {
        graft_sb_str(&b, "{");
        bool first = true;
        for (int id = 0; id < v.n; id++) {
            if (!v.in_vocab[id]) continue;
            graft_sb_str(&b, first ? "\n  " : ",\n  ");
            graft_sb_json_str(&b, v.str[id], strlen(v.str[id]));
            graft_sb_printf(&b, ": %d", id);
            first = false;
        }
        graft_sb_str(&b, "\n}\n");
        st = write_in(dir, "vocab.json", &b);
        if (st == GRAFT_OK) {
            graft_sb_str(&b, "#version: 0.2\n");
            for (size_t i = 0; i < n_merges; i++) graft_sb_printf(&b, "%s %s\n", v.str[ms[i].a], v.str[ms[i].b]);
            st = write_in(dir, "merges.txt", &b);
        }
    }
    if (st == GRAFT_OK) {
        tokenizer_config_json(&b, t, &v, max_len);
        st = write_in(dir, "tokenizer_config.json", &b);
    }
    if (st == GRAFT_OK) {
        special_tokens_map_json(&b, t, &v);
        st = write_in(dir, "special_tokens_map.json", &b);
    }
    graft_sb_free(&b);
    free(ms);
    vocab_free(&v);
    return st;
}

static graft_status save_llama2c(const graft_tokenizer *t, const char *dir) {
    char *data = NULL;
    size_t size = 0;
    /* Rebuilt from the pieces and scores (the same bytes as the file it came
     * from, and possible for one that came embedded in a GGUF file). */
    GRAFT_TRY(tok_llama2c_to_mem(t, &data, &size));
    char *path = graft_path_join(dir, "tokenizer.bin");
    graft_status st =
        path ? graft_write_file_atomic(path, data, size) : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    free(path);
    free(data);
    return st;
}

graft_status graft_tokenizer_save_hf(const graft_tokenizer *tok, const char *dir, long model_max_length) {
    if (!tok || !dir) return graft_fail(GRAFT_ERR_INVALID, "graft_tokenizer_save: NULL argument");
    if (!graft_path_is_dir(dir)) return graft_fail(GRAFT_ERR_IO, "%s: not a folder", dir);
    if (tok->kind == TOK_LLAMA2C) return save_llama2c(tok, dir);
    return save_bpe(tok, dir, model_max_length);
}

graft_status graft_tokenizer_save(const graft_tokenizer *tok, const char *dir) {
    return graft_tokenizer_save_hf(tok, dir, 0);
}
