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

/* Kept equal to project(VERSION) in CMakeLists.txt (CMake checks it); the
 * shared library's soname is libgraft.so.MAJOR. */
#define GRAFT_VERSION_MAJOR 0
#define GRAFT_VERSION_MINOR 1
#define GRAFT_VERSION_PATCH 0

/* What libgraft.so exports: everything declared here and nothing else (the
 * library is built with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define GRAFT_API __attribute__((visibility("default")))
#else
#define GRAFT_API
#endif

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
GRAFT_API const char *graft_status_str(graft_status st);
/* The message of the last failure on this thread ("" if none). */
GRAFT_API const char *graft_last_error(void);
/* Forget the last message. */
GRAFT_API void graft_clear_error(void);
/* The library's version, "MAJOR.MINOR.PATCH" (of the library loaded at run
 * time, which may differ from the header's GRAFT_VERSION_* macros). */
GRAFT_API const char *graft_version(void);
/* Release memory graft handed to the caller (ids, text, JSON). Same as
 * free(); for callers that cannot reach graft's C library (bindings). */
GRAFT_API void graft_free(void *p);

/* Threads used by graft's kernels and by BLAS. n <= 0 means all online CPUs. */
GRAFT_API void graft_set_threads(int n);
GRAFT_API int graft_get_threads(void);
/* Which GEMM backend was compiled in: "openblas", "builtin". */
GRAFT_API const char *graft_gemm_backend(void);

/* ---------------------------------------------------------------- tokenizer */

typedef struct graft_tokenizer graft_tokenizer;

/*
 * Load a tokenizer. `path` may be
 *  - a directory holding tokenizer.json, or vocab.json + merges.txt, or
 *    encoder.json + vocab.bpe (GPT-2 byte-level BPE);
 *  - a tokenizer.json file;
 *  - a llama2.c tokenizer file (tok512.bin, tokenizer.bin).
 */
GRAFT_API graft_status graft_tokenizer_load(const char *path, graft_tokenizer **out);
GRAFT_API void graft_tokenizer_free(graft_tokenizer *tok);
GRAFT_API int graft_tokenizer_vocab_size(const graft_tokenizer *tok);
/* "gpt2-bpe" or "llama2c-spm". */
GRAFT_API const char *graft_tokenizer_kind(const graft_tokenizer *tok);
/* Special ids, -1 when the tokenizer has none. */
GRAFT_API int graft_tokenizer_bos(const graft_tokenizer *tok);
GRAFT_API int graft_tokenizer_eos(const graft_tokenizer *tok);

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
GRAFT_API graft_status graft_tokenizer_learn_bpe(const char *text, size_t len, int vocab_size, graft_tokenizer **out);

/*
 * Encode `len` bytes of text. The ids are malloc'ed into *ids (caller frees)
 * and their count stored in *n. Invalid UTF-8 is an error for the llama2.c
 * tokenizer only where it cannot be represented; GPT-2 BPE encodes any bytes.
 * No BOS is added; callers that want one prepend graft_tokenizer_bos().
 */
GRAFT_API graft_status graft_tokenize(const graft_tokenizer *tok, const char *text, size_t len,
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
GRAFT_API graft_status graft_tokenize_pair(const graft_tokenizer *tok, const char *prompt, const char *target,
                                 int **prompt_ids, size_t *np, int **target_ids, size_t *nt, int *merged);
/* Decode ids into a malloc'ed NUL-terminated string (its length in *len). */
GRAFT_API graft_status graft_detokenize(const graft_tokenizer *tok, const int *ids, size_t n,
                              char **text, size_t *len);
/* The bytes of one token as they appear in decoded text (not NUL-terminated);
 * `prev` is the previous id or -1 (llama2.c strips a space after BOS). */
GRAFT_API graft_status graft_token_piece(const graft_tokenizer *tok, int prev, int id,
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
 * model.safetensors or a sharded model.safetensors.index.json), a GGUF file
 * (v2/v3, llama or gpt2 as llama.cpp writes them, with its embedded
 * tokenizer; F32/F16/BF16/Q8_0; docs/GGUF.md) or a llama2.c .bin
 * checkpoint. F32 safetensors weights are memory-mapped (private,
 * copy-on-write); other dtypes are converted to F32 on the heap.
 */
GRAFT_API graft_status graft_model_load(const char *path, graft_model **out);
GRAFT_API void graft_model_free(graft_model *m);
GRAFT_API void graft_model_get_info(const graft_model *m, graft_model_info *info);
/* The tokenizer found beside the model (NULL if none was found). The model
 * keeps ownership. graft_model_set_tokenizer() hands one over instead. */
GRAFT_API graft_tokenizer *graft_model_tokenizer(graft_model *m);
GRAFT_API void graft_model_set_tokenizer(graft_model *m, graft_tokenizer *tok);

/* ---------------------------------------------------------------- scoring */

/*
 * Teacher-forced scoring of one token sequence: mean next-token negative
 * log-likelihood in nats over positions 1..n-1. Sequences longer than the
 * context are scored in windows of n_ctx tokens that overlap by `stride`
 * fewer than n_ctx (stride <= 0 picks n_ctx/2); each token is counted once.
 * *n_scored receives the number of predicted tokens.
 */
GRAFT_API graft_status graft_score_ids(graft_model *m, const int *ids, size_t n, int stride,
                             double *mean_nll, size_t *n_scored);

/* ---------------------------------------------------------------- generation */

typedef struct graft_gen_opts {
    int max_new_tokens;  /* default 64 */
    float temperature;   /* 0 = greedy */
    float top_p;         /* 1 = off */
    uint64_t seed;
    int stop_at_eos;     /* default 1 */
} graft_gen_opts;

GRAFT_API void graft_gen_opts_default(graft_gen_opts *o);

/* Called for every generated token; return non-zero to stop early. */
typedef int (*graft_token_cb)(void *user, int id);

/*
 * Generate up to opts->max_new_tokens after `prompt` (n >= 1 ids) with a KV
 * cache. The new ids are malloc'ed into *out (count in *n_out).
 */
GRAFT_API graft_status graft_generate_ids(graft_model *m, const int *prompt, size_t n,
                                const graft_gen_opts *opts, graft_token_cb cb, void *user,
                                int **out, size_t *n_out);

/* ---------------------------------------------------------------- text */

/*
 * Encode a prompt the way graft's commands do: the model's tokenizer, with
 * BOS first for llama2.c-style (SentencePiece) models, which were trained
 * with one. An empty text gives BOS alone (GPT-2's <|endoftext|>), so
 * generation has a token to start from. *ids is malloc'ed (graft_free).
 */
GRAFT_API graft_status graft_encode_prompt(graft_model *m, const char *text, int **ids, size_t *n);

/*
 * Teacher-forced scoring of a text (graft_score_ids over
 * graft_encode_prompt(text)): mean NLL in nats per predicted token, whose
 * exp() is the perplexity. The text must give at least two tokens.
 */
GRAFT_API graft_status graft_score_text(graft_model *m, const char *text, double *mean_nll, size_t *n_scored);

/* ---------------------------------------------------------------- editing sessions */

/*
 * A session is one editor (a method with its options) attached to a model,
 * with every edit it accepts logged in an SQLite journal before it counts:
 * the journal is how edits are undone, and how a run folder reopens with its
 * edits in place (a folder `graft edit --out` or `graft serve` wrote works
 * too, and a session's folder works as their --adaptor).
 *
 * Two kinds of methods (docs/GRACE.md, docs/WEIGHT_EDITORS.md, ...):
 *  - activation editors (grace, melo) leave the weights alone and act on
 *    the activations of the session's runs: only generation, scoring and
 *    evaluation *through the session* see the edits;
 *  - weight editors (rome, memit, emmet, ft, ftl, ewc, mend) write into the
 *    model's weights: while the session is open, the model itself is the
 *    edited model, and freeing the session leaves it so (reload the model,
 *    or undo, to get the original back).
 * A session is not thread-safe; the model must outlive it, and one model
 * should carry one weight-editing session at a time.
 */
typedef struct graft_session graft_session;

/*
 * Open a session on m.
 *  - method: "grace", "melo", "mend", "rome", "memit", "emmet", "ft", "ftl",
 *    "ewc"; NULL only when reopening a run folder (its journal names it).
 *  - options_json: the method's options as a JSON object ("{\"layer\": 1}"),
 *    NULL or "{}" for the defaults (plus those an editing.json beside the
 *    model gives); unknown keys are errors. A reopened folder keeps its own
 *    options: pass NULL.
 *  - run_dir: NULL keeps the journal in a private temporary folder that
 *    graft_session_free removes. A folder holding journal.sqlite is reopened
 *    and its edits replayed (it must have been made on this model, and
 *    method, if given, must match); any other folder is created and the
 *    session's journal started there.
 */
GRAFT_API graft_status graft_session_open(graft_model *m, const char *method, const char *options_json,
                                          const char *run_dir, graft_session **out);
GRAFT_API void graft_session_free(graft_session *s);
/* The method's name ("grace", ...). */
GRAFT_API const char *graft_session_method(const graft_session *s);
/* Edits applied and not undone (replayed ones included). */
GRAFT_API int64_t graft_session_live_edits(const graft_session *s);
/* Non-zero for weight editors (see above). */
GRAFT_API int graft_session_edits_weights(const graft_session *s);
/* The editor's complete options as JSON, defaults and derived values (the
 * layer, ...) filled in; malloc'ed (graft_free). */
GRAFT_API graft_status graft_session_options(graft_session *s, char **json);

/* What one edit did. */
typedef struct graft_edit_result {
    int64_t id;          /* the journal's id for it: what graft_session_undo takes */
    int reproduced;      /* greedy generation after the prompt now gives the target */
    int iterations;      /* optimisation steps the method took */
    double seconds;      /* time the method took (the check and journaling excluded) */
    double loss_before;  /* the target's loss before / after the edit, as the method defines it */
    double loss_after;
} graft_edit_result;

/*
 * Apply one edit: after `prompt` the model should say `target` (text; the
 * target is tokenised as it follows the prompt, see graft_tokenize_pair).
 * subject (may be NULL) is the part of the prompt the fact is about; ROME,
 * MEMIT and EMMET edit at its last token (else at the prompt's last). The
 * edit is journaled before this returns. An edit the method applied but
 * that did not reproduce its target still counts (res->reproduced = 0).
 * res may be NULL.
 */
GRAFT_API graft_status graft_session_edit(graft_session *s, const char *prompt, const char *target,
                                          const char *subject, graft_edit_result *res);
/* Undo edit `id` (logged in the journal as an undo of its own). An unknown
 * id, or one already undone, is GRAFT_ERR_RANGE / GRAFT_ERR_INVALID. */
GRAFT_API graft_status graft_session_undo(graft_session *s, int64_t id);

/*
 * Save the session's edits.
 *  - weight editors: dir becomes a Hugging Face folder of the edited model
 *    (config.json, model.safetensors in dtype "f32" (NULL), "f16" or "bf16",
 *    the tokenizer files, graft_export.json naming the method, options and
 *    edits), loadable by graft_model_load and by transformers;
 *  - activation editors: the edits are not weights; dir becomes an adaptor
 *    folder, a copy of the session's journal (dir/journal.sqlite), that
 *    graft_session_open(m, NULL, NULL, dir) or `graft generate --adaptor dir`
 *    reopens. dtype is ignored. A session opened on run_dir is already saved
 *    there: saving to run_dir itself is a no-op.
 * A dir that already holds a model or a journal is refused.
 */
GRAFT_API graft_status graft_session_save(graft_session *s, const char *dir, const char *dtype);

/*
 * Generate after a text prompt (encoded by graft_encode_prompt) through
 * session s, or the model alone when s is NULL (s must be a session on m).
 * The new text is malloc'ed into *text (graft_free); *len (may be NULL) gets
 * its length in bytes.
 */
GRAFT_API graft_status graft_generate_text(graft_model *m, graft_session *s, const char *prompt,
                                           const graft_gen_opts *opts, char **text, size_t *len);

/* One (prompt, target) item's result. */
typedef struct graft_eval_result {
    double tf_acc;  /* teacher-forced token accuracy: the share of the target's tokens
                       that are the argmax given the prompt and the true earlier
                       target tokens (EasyEdit's rewrite/rephrase accuracy) */
    int gen_match;  /* greedy generation of the target's length after the prompt
                       gives exactly the target (GRACE's exact match) */
    int n_target;   /* the target's tokens */
} graft_eval_result;

/*
 * Evaluate n (prompt, target) items through s (NULL: the model alone), into
 * res[n]. Over the edits made, the mean gen_match is edit success (ES) or,
 * on all earlier edits, retention (ERR); over facts no edit touched (their
 * targets the unedited model's answers) it is TRR.
 */
GRAFT_API graft_status graft_evaluate(graft_model *m, graft_session *s, const char *const *prompts,
                                      const char *const *targets, size_t n, graft_eval_result *res);
/*
 * The teacher-forced argmax at each of the target's positions after the
 * prompt (the tokens the model predicts, given the prompt and the target's
 * earlier tokens), through s or the model alone. Comparing them before and
 * after edits measures locality as EasyEdit does. *pred malloc'ed
 * (graft_free), *n = the target's tokens.
 */
GRAFT_API graft_status graft_predict(graft_model *m, graft_session *s, const char *prompt, const char *target,
                                     int **pred, size_t *n);

#ifdef __cplusplus
}
#endif
#endif /* GRAFT_H */
