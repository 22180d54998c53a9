/*
 * save.h - writing a model as a Hugging Face folder (config.json,
 * model.safetensors, generation_config.json and the tokenizer files), plus
 * the small text-building helpers that writer, the tokenizer writer and the
 * trainer share.
 */
#ifndef GRAFT_MODEL_SAVE_H
#define GRAFT_MODEL_SAVE_H

#include "internal.h"

/* ================================================================ text buffers */

/* A growable NUL-terminated string. Appends never fail loudly: an allocation
 * failure sets `oom` and later appends do nothing, so a writer builds its
 * whole text and checks once at the end. */
typedef struct graft_sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} graft_sbuf;

void graft_sb_add(graft_sbuf *b, const void *data, size_t n);
void graft_sb_str(graft_sbuf *b, const char *s);
void graft_sb_printf(graft_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* n bytes as a JSON string literal: quotes, backslashes and control bytes
 * escaped, every other byte (UTF-8 included) as is, like serde_json. */
void graft_sb_json_str(graft_sbuf *b, const char *s, size_t n);
/* A number the way Python's repr() prints a float ("1e-05", "0.02",
 * "10000.0"): the shortest decimal that reads back to the same value, as a
 * float32 when f32 is set (graft's configs hold float32), else as a double. */
void graft_sb_pyfloat(graft_sbuf *b, double v, bool f32);
void graft_sb_free(graft_sbuf *b);
/* Write the buffer with graft_write_file_atomic (GRAFT_ERR_NOMEM if it overflowed). */
graft_status graft_sb_write_file(const graft_sbuf *b, const char *path);

/* ================================================================ folders */


/* ================================================================ saving */

/*
 * The config.json text transformers' save_pretrained writes for this config
 * (GPT2Config / LlamaConfig, keys sorted, indent 2): every model-specific key,
 * and of the generic PretrainedConfig keys those that differ from the
 * defaults (so a tied GPT-2 has no tie_word_embeddings key, a Llama always
 * has it). torch_dtype names `dtype`. A Llama config with llama2.c-style
 * interleaved RoPE is written as the HF (rotate-half) model it is
 * equivalent to; graft_model_save_hf permutes the q/k rows to match.
 * malloc'ed text in *out.
 */
graft_status graft_config_to_json(const graft_config *cfg, graft_dtype dtype, char **out);

/*
 * Write m as a Hugging Face folder in dir (created if missing):
 * config.json, model.safetensors (canonical save_pretrained names, tensors
 * stored as dtype: GRAFT_F32, GRAFT_F16 or GRAFT_BF16; metadata format=pt,
 * which transformers requires), generation_config.json, and the tokenizer
 * files when m has a tokenizer (see tokenizer/tokenizer_save.h). Every file
 * is written atomically. graft_model_load(dir) gives the same logits
 * (bit-identical for F32 unless q/k had to be permuted from interleaved RoPE,
 * where the sums are merely reordered).
 */
graft_status graft_model_save_hf(const graft_model *m, const char *dir, graft_dtype dtype);
/* dir already holds a model (config.json or model weights): saving and
 * exporting never overwrite one. */
int graft_dir_holds_model(const char *dir);

/*
 * Reorder the rows of a q_proj/k_proj weight [n_heads*head_dim, cols]
 * between llama2.c's interleaved RoPE pairs (2j, 2j+1) and HF's rotate-half
 * pairs (j, j+D/2) within each head: to_half=1 goes interleaved -> HF (what
 * convert_llama_weights_to_hf.py's permute does), 0 goes back. dst and src
 * must not overlap.
 */
void graft_rope_permute_rows(float *dst, const float *src, int n_heads, int head_dim, size_t cols, int to_half);

#endif /* GRAFT_MODEL_SAVE_H */
