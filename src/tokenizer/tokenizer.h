/*
 * tokenizer.h - internals shared by the tokenizer sources: the tokenizer
 * object, small hash tables, growable buffers and the per-kind entry points.
 */
#ifndef GRAFT_TOKENIZER_INTERNAL_H
#define GRAFT_TOKENIZER_INTERNAL_H

#include "internal.h"

/* ================================================================ hash tables */

/* Byte string -> int64. Keys are borrowed: they must outlive the map. */
typedef struct tok_map_entry {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    uint32_t hash;
    int64_t val;
} tok_map_entry;

typedef struct tok_map {
    tok_map_entry *e;
    size_t cap, count; /* cap is a power of two */
} tok_map;

bool tok_map_init(tok_map *m, size_t expected);
void tok_map_free(tok_map *m);
/* Insert or overwrite; false when out of memory. */
bool tok_map_put(tok_map *m, const char *key, size_t len, int64_t val);
/* Insert only if absent (first insertion wins); false when out of memory. */
bool tok_map_put_first(tok_map *m, const char *key, size_t len, int64_t val);
bool tok_map_get(const tok_map *m, const char *key, size_t len, int64_t *val);

/* Token pair (a, b) -> (merge rank, merged id). */
typedef struct tok_pair_entry {
    uint64_t key;
    int32_t rank; /* -1: empty slot */
    int32_t id;
} tok_pair_entry;

typedef struct tok_pairmap {
    tok_pair_entry *e;
    size_t cap, count;
} tok_pairmap;

bool tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
bool tok_pairmap_put(tok_pairmap *m, int a, int b, int rank, int id);
bool tok_pairmap_get(const tok_pairmap *m, int a, int b, int *rank, int *id);

/* ================================================================ buffers */

typedef struct tok_ids {
    int *v;
    size_t n, cap;
} tok_ids;

bool tok_ids_reserve(tok_ids *a, size_t extra);
bool tok_ids_push(tok_ids *a, int id);

typedef struct tok_bytes {
    char *p;
    size_t n, cap;
} tok_bytes;

bool tok_bytes_append(tok_bytes *b, const void *data, size_t len);

/* ================================================================ merging */

/* Repeatedly merge the adjacent pair with the lowest rank (leftmost among
 * equal ranks) until no pair merges. Both BPE (rank = merge order) and
 * llama2.c (rank = position of the score in descending order) are this. */
typedef bool (*tok_pair_fn)(const void *ctx, int a, int b, int *rank, int *merged);

typedef struct tok_merge_work {
    int *init;
    struct tok_msym *sym;
    struct tok_mcand *heap;
    size_t cap, n_heap;
} tok_merge_work;

/* Merge the n ids in w's scratch (filled through tok_merge_ids) and append
 * the result to out. false when out of memory. */
int *tok_merge_ids(tok_merge_work *w, size_t n);
bool tok_merge_run(tok_merge_work *w, size_t n, tok_pair_fn pair, const void *ctx, tok_ids *out);
void tok_merge_free(tok_merge_work *w);

/* ================================================================ UTF-8 */

/* Decode one strict UTF-8 character at s[0..n) (n >= 1). Returns its length
 * and stores the code point, or returns 1 and stores -1 for an invalid byte
 * (overlong forms, surrogates and values past U+10FFFF are invalid). */
size_t tok_utf8_decode(const uint8_t *s, size_t n, int32_t *cp);
/* Encode cp (0..0x10FFFF) into out (4 bytes room); returns the length. */
size_t tok_utf8_encode(int32_t cp, char *out);

/* ================================================================ tokenizer */

typedef enum tok_kind { TOK_GPT2_BPE = 0, TOK_LLAMA2C = 1 } tok_kind;

/* A token recognised verbatim in the input before pre-tokenisation. */
typedef struct tok_added {
    char *text;
    size_t len;
    int id;
    bool lstrip, rstrip; /* swallow whitespace on that side (HF AddedToken) */
} tok_added;

typedef struct tok_bpe {
    int byte_id[256];    /* id of the single-byte token of each byte */
    tok_pairmap merges;
    tok_added *added;    /* sorted by first byte, then longest first */
    int n_added;
    int added_start[257]; /* added[added_start[c] .. added_start[c+1]) start with byte c */
} tok_bpe;

typedef struct tok_spm {
    char *raw;            /* the pieces as stored in the file */
    size_t *raw_off;
    int32_t *raw_len;
    float *score;
    int32_t *rank;        /* dense rank of the score, best first; -1: never a merge result */
    tok_map lookup;       /* raw piece -> id (lowest id wins) */
    int max_len;          /* longest raw piece actually present */
    int header_max_len;   /* max_token_length as the file stated it */
} tok_spm;

struct graft_tokenizer {
    tok_kind kind;
    char *path;
    int n_vocab;
    int bos, eos;
    /* The bytes each id stands for in decoded text; piece_len -1: no token. */
    char *piece_pool;
    size_t *piece_off;
    int32_t *piece_len;
    tok_bpe bpe;
    tok_spm spm;
};

/* A tokenizer from files held in memory, loaded as graft_tokenizer_load
 * loads them from disk (the fuzz harnesses: no file per input): kind
 * TOK_MEM_JSON is a tokenizer.json in a, TOK_MEM_PAIR vocab.json in a and
 * merges.txt in b, TOK_MEM_LLAMA2C a tokenizer.bin in a. */
enum { TOK_MEM_JSON, TOK_MEM_PAIR, TOK_MEM_LLAMA2C };
graft_status tok_load_mem(const char *path, int kind, const void *a, size_t na, const void *b, size_t nb,
                          graft_tokenizer **out);

/* Allocate the piece table for n ids (all "no token"). */
graft_status tok_pieces_alloc(graft_tokenizer *t, int n);

/* GPT-2 byte-level BPE (gpt2_load.c, gpt2_encode.c). */
graft_status tok_gpt2_load_files(graft_tokenizer *t, const char *vocab_path, const char *merges_path);
graft_status tok_gpt2_load_json(graft_tokenizer *t, const char *path);
/* The same from text in memory (the paths name the files in messages). */
graft_status tok_gpt2_load_files_mem(graft_tokenizer *t, const char *vocab_path, const char *vtext, size_t vsize,
                                     const char *merges_path, const char *mtext, size_t msize);
graft_status tok_gpt2_load_json_mem(graft_tokenizer *t, const char *path, const char *text, size_t size);
/* From a token list in id order (GGUF's tokenizer.ggml.tokens/token_type/
 * merges; `where` names the file in messages): tokens[i] of lens[i] bytes is
 * id i in the byte-level spelling; types[i] (may be NULL) 3 or 4 marks an
 * added (control / user-defined) token, 5 an unused slot; merges are "a b". */
graft_status tok_gpt2_load_list(graft_tokenizer *t, const char *where, int n, const char *const *tokens,
                                const size_t *lens, const int32_t *types, size_t n_merges,
                                const char *const *merges, const size_t *merge_lens);
graft_status tok_gpt2_encode(const graft_tokenizer *t, const char *text, size_t len, tok_ids *out);
void tok_gpt2_free(tok_bpe *b);
/* End of the pre-tokenizer word that starts at s[i] (i < n). */
size_t tok_gpt2_pretok_next(const uint8_t *s, size_t n, size_t i);
/* The GPT-2 byte -> code point table. */
void tok_gpt2_byte_to_unicode(int32_t table[256]);

/* Learning a GPT-2 byte-level BPE (bpe_learn.c): graft_tokenizer_learn_bpe
 * with what the learning saw, for reports. */
typedef struct tok_learn_stats {
    int n_words;        /* distinct pre-tokenizer words of two bytes or more */
    int n_merges;       /* merges learned (vocab size - 257) */
    int n_skipped;      /* pairs passed over: their bytes were already a token */
    int64_t last_count; /* occurrences of the last pair merged (0: none) */
} tok_learn_stats;

graft_status tok_bpe_learn(const char *text, size_t len, int vocab_size, tok_learn_stats *stats,
                           graft_tokenizer **out);

/* llama2.c tokenizer (llama2c.c). */
graft_status tok_llama2c_load(graft_tokenizer *t, const char *path);
/* The same from a tokenizer.bin image in memory (path names it in messages). */
graft_status tok_llama2c_load_mem(graft_tokenizer *t, const char *path, const void *data, size_t size);
/* The tokenizer.bin image of t (malloc'ed): the pieces and scores it holds. */
graft_status tok_llama2c_to_mem(const graft_tokenizer *t, char **data, size_t *size);
/* dummy: prepend SentencePiece's dummy-prefix space (a text of its own);
 * false: the text continues earlier text (graft_tokenize_pair). */
graft_status tok_llama2c_encode(const graft_tokenizer *t, const char *text, size_t len, bool dummy, tok_ids *out);
void tok_llama2c_free(tok_spm *s);

#endif
