/*
 * graft.h - the one public header of graft, a C11 library for lifelong model
 * editing of transformer language models (GPT-2 and Llama families).
 *
 * Conventions
 *  - Every fallible function returns a graft_status. On failure a message that
 *    names the file, byte offset or field at fault is available from
 *    graft_last_error() (thread-local; valid until the next failing call on
 *    the same thread).
 *  - The library never calls exit() or abort() because of user input.
 *  - Objects are opaque handles created by *_load / *_create and released by
 *    the matching *_free, which accepts NULL.
 */
#ifndef GRAFT_H
#define GRAFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_VERSION_MAJOR 0
#define GRAFT_VERSION_MINOR 1
#define GRAFT_VERSION_PATCH 0

/* ---------------------------------------------------------------- status */

typedef enum graft_status {
    GRAFT_OK = 0,
    GRAFT_ERR_IO,          /* a file is missing, unreadable or unwritable  */
    GRAFT_ERR_FORMAT,      /* a file's content is malformed                */
    GRAFT_ERR_INVALID,     /* a bad argument or option value               */
    GRAFT_ERR_NOMEM,       /* an allocation failed                         */
    GRAFT_ERR_UNSUPPORTED, /* valid input graft cannot handle (yet)        */
    GRAFT_ERR_RANGE,       /* token id out of range, prompt too long, ...  */
    GRAFT_ERR_INTERNAL,    /* a bug in graft: please report it             */
    GRAFT_ERR_EDIT_FAILED  /* an edit did not take (--require-success)     */
} graft_status;

/* A short constant name for a status ("format error", ...). */
const char *graft_status_str(graft_status st);
/* The message of the last failure on this thread ("" if none). */
const char *graft_last_error(void);
/* Forget the last message. */
void graft_clear_error(void);

/* Threads used by graft's kernels and by BLAS. n <= 0 means all online CPUs. */
void graft_set_threads(int n);
int graft_get_threads(void);
/* Which GEMM backend was compiled in: "openblas", "builtin". */
const char *graft_gemm_backend(void);

/* ---------------------------------------------------------------- tokenizer */

typedef struct graft_tokenizer graft_tokenizer;

/*
 * Load a tokenizer. `path` may be
 *  - a directory holding tokenizer.json, or vocab.json + merges.txt, or
 *    encoder.json + vocab.bpe (GPT-2 byte-level BPE);
 *  - a tokenizer.json file;
 *  - a llama2.c tokenizer file (tok512.bin, tokenizer.bin).
 */
graft_status graft_tokenizer_load(const char *path, graft_tokenizer **out);
void graft_tokenizer_free(graft_tokenizer *tok);
int graft_tokenizer_vocab_size(const graft_tokenizer *tok);
/* "gpt2-bpe" or "llama2c-spm". */
const char *graft_tokenizer_kind(const graft_tokenizer *tok);
/* Special ids, -1 when the tokenizer has none. */
int graft_tokenizer_bos(const graft_tokenizer *tok);
int graft_tokenizer_eos(const graft_tokenizer *tok);

/*
 * Learn a GPT-2 byte-level BPE tokenizer from `len` bytes of text (any bytes;
 * invalid UTF-8 is fine). The text is split at "<|endoftext|>" and into words
 * by GPT-2's pre-tokenizer, exactly as graft_tokenize will split it; then
 * the most frequent adjacent pair of tokens is merged, greedily, until the
 * vocabulary holds vocab_size ids: the 256 bytes (id b is byte b), one id per
 * merge in the order learned, and "<|endoftext|>" last (BOS and EOS, as in
 * GPT-2). Ties in count go to the pair whose left token's bytes sort first
 * (unsigned byte order, a prefix before the longer token), then by the right
 * token. A pair whose bytes are already a token is never merged, so a
 * vocabulary of 257 + k ids has exactly k merges; a pair seen only once is
 * not merged either, so a small text may give fewer than vocab_size ids
 * (graft_tokenizer_vocab_size says how many). The same text and vocab_size
 * always give the same tokenizer. vocab_size: 257 .. 1048576; an empty text
 * is an error.
 */
graft_status graft_tokenizer_learn_bpe(const char *text, size_t len, int vocab_size, graft_tokenizer **out);

/*
 * Encode `len` bytes of text. The ids are malloc'ed into *ids (caller frees)
 * and their count stored in *n. Invalid UTF-8 is an error for the llama2.c
 * tokenizer only where it cannot be represented; GPT-2 BPE encodes any bytes.
 * No BOS is added; callers that want one prepend graft_tokenizer_bos().
 */
graft_status graft_tokenize(const graft_tokenizer *tok, const char *text, size_t len,
                            int **ids, size_t *n);
/*
 * The one rule for an edit's or a metric's target tokens: encode prompt and
 * target as one text and take the tokens after the prompt's, so the target
 * is tokenised the way the model would emit it after that prompt (a
 * SentencePiece target gets no dummy-prefix piece of its own). One space joins
 * them unless the prompt ends or the target starts with whitespace (" kite"
 * is taken as written). When the prompt's last token merges with the target's
 * first (e.g. a prompt ending in a space), the prompt keeps its own tokens
 * (what a user who types it sends) and the target is encoded as the text's
 * continuation; *merged (may be NULL) is then 1. No BOS is added. Both
 * arrays are malloc'ed; *nt may be 0 for an empty target.
 */
graft_status graft_tokenize_pair(const graft_tokenizer *tok, const char *prompt, const char *target,
                                 int **prompt_ids, size_t *np, int **target_ids, size_t *nt, int *merged);
/* Decode ids into a malloc'ed NUL-terminated string (its length in *len). */
graft_status graft_detokenize(const graft_tokenizer *tok, const int *ids, size_t n,
                              char **text, size_t *len);
/* The bytes of one token as they appear in decoded text (not NUL-terminated);
 * `prev` is the previous id or -1 (llama2.c strips a space after BOS). */
graft_status graft_token_piece(const graft_tokenizer *tok, int prev, int id,
                               const char **bytes, size_t *len);

/* ---------------------------------------------------------------- model */

typedef struct graft_model graft_model;

typedef enum graft_arch { GRAFT_ARCH_GPT2 = 0, GRAFT_ARCH_LLAMA = 1 } graft_arch;

typedef struct graft_model_info {
    graft_arch arch;
    const char *arch_name;   /* "gpt2" or "llama" */
    const char *format;      /* "hf-safetensors" or "llama2c" */
    const char *dtype;       /* storage dtype of the checkpoint: "F32", "F16", "BF16" */
    int n_layer, d_model, n_head, n_kv_head, head_dim, d_ff, vocab_size, n_ctx;
    int tied_embeddings;
    int64_t n_params;        /* parameters, the tied embedding counted once */
    size_t mapped_bytes;     /* weight bytes served straight from mmap */
    size_t heap_bytes;       /* weight bytes converted/copied onto the heap */
} graft_model_info;

/*
 * Load a model. `path` is a Hugging Face folder (config.json plus
 * model.safetensors or a sharded model.safetensors.index.json) or a llama2.c
 * .bin checkpoint. F32 weights are memory-mapped (private, copy-on-write);
 * F16/BF16 weights are converted to F32 on the heap.
 */
graft_status graft_model_load(const char *path, graft_model **out);
void graft_model_free(graft_model *m);
void graft_model_get_info(const graft_model *m, graft_model_info *info);
/* The tokenizer found beside the model (NULL if none was found). The model
 * keeps ownership. graft_model_set_tokenizer() hands one over instead. */
graft_tokenizer *graft_model_tokenizer(graft_model *m);
void graft_model_set_tokenizer(graft_model *m, graft_tokenizer *tok);

/* ---------------------------------------------------------------- scoring */

/*
 * Teacher-forced scoring of one token sequence: mean next-token negative
 * log-likelihood in nats over positions 1..n-1. Sequences longer than the
 * context are scored in windows of n_ctx tokens that overlap by `stride`
 * fewer than n_ctx (stride <= 0 picks n_ctx/2); each token is counted once.
 * *n_scored receives the number of predicted tokens.
 */
graft_status graft_score_ids(graft_model *m, const int *ids, size_t n, int stride,
                             double *mean_nll, size_t *n_scored);

/* ---------------------------------------------------------------- generation */

typedef struct graft_gen_opts {
    int max_new_tokens;  /* default 64 */
    float temperature;   /* 0 = greedy */
    float top_p;         /* 1 = off */
    uint64_t seed;
    int stop_at_eos;     /* default 1 */
} graft_gen_opts;

void graft_gen_opts_default(graft_gen_opts *o);

/* Called for every generated token; return non-zero to stop early. */
typedef int (*graft_token_cb)(void *user, int id);

/*
 * Generate up to opts->max_new_tokens after `prompt` (n >= 1 ids) with a KV
 * cache. The new ids are malloc'ed into *out (count in *n_out).
 */
graft_status graft_generate_ids(graft_model *m, const int *prompt, size_t n,
                                const graft_gen_opts *opts, graft_token_cb cb, void *user,
                                int **out, size_t *n_out);

#ifdef __cplusplus
}
#endif
#endif /* GRAFT_H */
