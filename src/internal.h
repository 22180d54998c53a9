/*
 * internal.h - structures shared inside libgraft. Not installed; tests may
 * include it. The public contract is include/graft.h.
 */
#ifndef GRAFT_INTERNAL_H
#define GRAFT_INTERNAL_H

#include "graft.h"
#include "kernels.h" /* graft_wmat, graft_layout */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ================================================================ errors */

/* Record a message for graft_last_error() and return `st`, so that error paths
 * read `return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: ...", path, off);` */
graft_status graft_fail(graft_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "what: " (adds context on the way up). */
graft_status graft_fail_prefix(graft_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define GRAFT_TRY(expr)                                                        \
    do {                                                                       \
        graft_status graft_try_st_ = (expr);                                   \
        if (graft_try_st_ != GRAFT_OK) return graft_try_st_;                   \
    } while (0)

/* ================================================================ memory */

/* 64-byte aligned allocation; NULL on failure (callers report GRAFT_ERR_NOMEM).
 * Release with graft_free_aligned. */
void *graft_alloc_aligned(size_t bytes);
void *graft_calloc_aligned(size_t bytes);
/* The same for a big buffer filled a little at a time (the KV cache): from
 * 2 MiB on it is aligned to 2 MiB and asks the kernel for huge pages, so it
 * faults in a few times instead of once per 4 KiB. */
void *graft_alloc_huge(size_t bytes);
void graft_free_aligned(void *p);
/* Overflow-checked size product; returns false on overflow. */
bool graft_mul_size(size_t a, size_t b, size_t *out);

/* ================================================================ files */

/* A read-only view of a whole file. Mapped private and writable, so editors
 * may change weights in place: the kernel copies a page on first write and
 * the file itself is never modified. */
typedef struct graft_mapped_file {
    char *path;
    uint8_t *data;
    size_t size;
} graft_mapped_file;

graft_status graft_map_file(const char *path, graft_mapped_file *f);
void graft_unmap_file(graft_mapped_file *f);
/* Read a whole (small) file into a NUL-terminated heap buffer. */
graft_status graft_read_file(const char *path, char **data, size_t *size);
/* Make a rename in dir durable: the folder's entry list is flushed too
 * (best effort: a file system that cannot sync a folder is not an error). */
void graft_fsync_dir(const char *dir);
/* Write a file atomically: write to path.tmp, fsync, rename over path, fsync
 * the folder. */
graft_status graft_write_file_atomic(const char *path, const void *data, size_t size);
/* write(2) until all of data is out: 0, or the errno that stopped it. A short
 * write (the call that fills a disk) is followed by one for the rest, which
 * names the cause (ENOSPC); a write that takes nothing gives EIO. */
int graft_write_all(int fd, const void *data, size_t size);
bool graft_path_is_dir(const char *path);
/* mkdir -p: create path and any missing parents. */
graft_status graft_mkdir_p(const char *path);
bool graft_path_exists(const char *path);
/* malloc'ed "dir/name". */
char *graft_path_join(const char *dir, const char *name);
/* malloc'ed directory part of path ("." if none). */
char *graft_path_dirname(const char *path);

/* ================================================================ plots */

typedef struct graft_series {
    const char *name;
    const double *x, *y;
    int n;
    int dashed; /* 0 solid, 1 dashed, 2 dotted */
    int color;  /* 1-based palette index; 0: by position */
} graft_series;

/* Write an SVG line plot (title, axis labels, ticks, legend) atomically.
 * ymin/ymax: the y range, or NAN to fit the data. */
graft_status graft_svg_line_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                 const graft_series *s, int n_series, double ymin, double ymax);

/* Several panels sharing the x axis, `cols` to a row, each with its own title,
 * y label and y range; one legend, from the first panel's series (for plots
 * where every panel shows the same methods in the same colours). */
typedef struct graft_panel {
    const char *title, *ylabel; /* title may be NULL */
    const graft_series *s;
    int n;
    double ymin, ymax; /* NAN: fit the data */
} graft_panel;
graft_status graft_svg_panels(const char *path, const char *title, const char *xlabel, const graft_panel *panels, int n_panels,
                              int cols);

/* ================================================================ progress */

typedef struct graft_progress {
    char what[48];
    int64_t total, done, start_done, last_bucket;
    double t0, last;
    int tty, enabled;
} graft_progress;

/* A progress line on stderr: what [=====>    ] done/total rate elapsed ETA extra. */
/* Seconds on the monotonic clock (for durations: progress rates, per-edit times). */
double graft_now_s(void);
void graft_progress_start(graft_progress *p, const char *what, int64_t total, int64_t done);
void graft_progress_update(graft_progress *p, int64_t done, const char *extra);
void graft_progress_end(graft_progress *p);

/* ================================================================ dtypes */

typedef enum graft_dtype { GRAFT_F32 = 0, GRAFT_F16, GRAFT_BF16, GRAFT_I64, GRAFT_I32, GRAFT_U8 } graft_dtype;

const char *graft_dtype_name(graft_dtype dt);
/* "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16" (any case) -> *dt; -1 otherwise. */
int graft_dtype_parse_float(const char *s, graft_dtype *dt);
size_t graft_dtype_size(graft_dtype dt);
float graft_f16_to_f32(uint16_t h);
float graft_bf16_to_f32(uint16_t h);
uint16_t graft_f32_to_f16(float f);  /* round to nearest even */
uint16_t graft_f32_to_bf16(float f); /* round to nearest even */
/* Convert n elements of src (dtype dt, little-endian, possibly unaligned) to f32. */
void graft_convert_to_f32(float *dst, const void *src, graft_dtype dt, size_t n);
/* The same split over threads (big tensors at load). */
void graft_convert_to_f32_parallel(float *dst, const void *src, graft_dtype dt, size_t n);
/* Narrow n floats to dt (F32, F16 or BF16; round to nearest even), written
 * little-endian to dst (any alignment); the same bits as graft_f32_to_f16 /
 * graft_f32_to_bf16 element by element. Other dtypes: nothing is written. */
void graft_convert_from_f32(void *dst, const float *src, graft_dtype dt, size_t n);

/* ================================================================ safetensors */

#define GRAFT_MAX_DIMS 8

typedef struct graft_st_tensor {
    char *name;
    graft_dtype dtype;
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    size_t numel;
    const void *data; /* points into the mapping */
    size_t nbytes;
    size_t file_offset; /* absolute offset of the data in its file (for messages) */
    int file_index;     /* which shard */
} graft_st_tensor;

typedef struct graft_st_archive {
    int n_files;
    graft_mapped_file *files;
    int n_tensors;
    graft_st_tensor *tensors;
    char *metadata_json; /* the "__metadata__" object as JSON text, or NULL */
} graft_st_archive;

/* Open one .safetensors file, validating header length, JSON, dtypes, shapes,
 * that offsets lie inside the file, match dtype x shape and do not overlap. */
graft_status graft_st_open(const char *path, graft_st_archive *a);
/* Open model.safetensors, or the shards listed by model.safetensors.index.json, in dir. */
graft_status graft_st_open_dir(const char *dir, graft_st_archive *a);
/* The same checks on files held in memory (the fuzz harnesses: no file per
 * input). The archive points into the caller's buffers, which must outlive
 * it; name (or dir) only labels messages. graft_st_open_index_mem takes the
 * index text and the shards it may name. */
graft_status graft_st_open_mem(const char *name, const void *data, size_t size, graft_st_archive *a);
typedef struct graft_st_mem_file {
    const char *name; /* the shard's file name, as the index names it */
    const void *data;
    size_t size;
} graft_st_mem_file;
graft_status graft_st_open_index_mem(const char *dir, const char *text, size_t len, const graft_st_mem_file *shards,
                                     int n_shards, graft_st_archive *a);
const graft_st_tensor *graft_st_find(const graft_st_archive *a, const char *name);
void graft_st_close(graft_st_archive *a);

/* One tensor to write. data is F32 in memory; it is stored as `dtype`. */
typedef struct graft_st_write_item {
    const char *name;
    graft_dtype dtype; /* F32, F16 or BF16 on disk */
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    const float *data;
} graft_st_write_item;
/* Write a safetensors file atomically. metadata: flat string->string pairs
 * (n_meta pairs in meta_kv as key,value,key,value...), may be NULL. */
graft_status graft_st_write(const char *path, const graft_st_write_item *items, int n_items,
                            const char *const *meta_kv, int n_meta);

/* ================================================================ model */

typedef struct graft_config {
    graft_arch arch;
    int n_layer;
    int d_model;    /* C */
    int n_head;     /* H */
    int n_kv_head;  /* KV (== H for GPT-2) */
    int head_dim;   /* D */
    int d_ff;       /* MLP hidden width */
    int vocab_size; /* V */
    int n_ctx;      /* max positions */
    float norm_eps;
    float rope_theta;
    int rope_interleaved; /* 1: llama2.c pairs (x[2j],x[2j+1]); 0: HF rotate-half (x[j],x[j+D/2]) */
    int tied;             /* lm_head shares the token embedding */
    int bos_id, eos_id;   /* -1 when unknown */
} graft_config;

/*
 * Weight matrices are kept in the layout of the checkpoint (no load-time
 * transposes): GPT-2 Conv1D matrices are [in, out] (y = x W), Llama / nn.Linear
 * matrices and the LM head are [out, in] (y = x W^T). The kernels take the
 * layout as an argument (graft_layout in kernels.h).
 *
 * GPT-2 uses: ln1_w/b, qkv_w/b (fused c_attn), o_w/b, ln2_w/b, up_w/b (c_fc),
 *             down_w/b (mlp.c_proj).
 * Llama uses: ln1_w (input_layernorm), q_w, k_w, v_w, o_w, ln2_w
 *             (post_attention_layernorm), gate_w, up_w, down_w.
 * Unused pointers are NULL.
 */
typedef struct graft_layer_weights {
    float *ln1_w, *ln1_b;
    float *qkv_w, *qkv_b;
    float *q_w, *k_w, *v_w;
    float *o_w, *o_b;
    float *ln2_w, *ln2_b;
    float *gate_w;
    float *up_w, *up_b;
    float *down_w, *down_b;
    /* The matrices as the forward reads them: the f32 arrays above, or the
     * checkpoint's F16/BF16 tensors in place while those are NULL (a model
     * loaded with its weights as stored; graft_model_need_f32 converts). */
    graft_wmat qkv_m, q_m, k_m, v_m, o_m, gate_m, up_m, down_m;
} graft_layer_weights;

typedef struct graft_weights {
    float *wte;     /* [V, C] token embedding */
    float *wpe;     /* [n_ctx, C] GPT-2 positions, NULL for Llama */
    float *lnf_w, *lnf_b;
    float *lm_head; /* [V, C]; == wte when tied */
    graft_wmat wte_m, lm_head_m; /* as the forward reads them (see graft_layer_weights) */
    graft_layer_weights *layers; /* n_layer entries */
} graft_weights;

/* One named parameter tensor, f32 in memory. Names are the canonical Hugging
 * Face save_pretrained names: "transformer.h.0.attn.c_attn.weight",
 * "model.layers.0.self_attn.q_proj.weight", ... A tied head has no entry. */
typedef struct graft_param {
    char *name;
    int ndim;
    int64_t shape[4];
    size_t numel;
    float *data;          /* f32; NULL while the tensor is used as stored */
    graft_wmat stored;    /* the checkpoint's tensor in its mapping (F16, BF16, Q8_0; maybe
                             transposed), read in place while data is NULL; .data NULL: none */
} graft_param;

typedef struct graft_param_table {
    int n;
    graft_param *p;
} graft_param_table;

/* Fill the canonical parameter list (names and shapes, data NULL) for cfg. */
graft_status graft_param_table_init(graft_param_table *t, const graft_config *cfg);
void graft_param_table_free(graft_param_table *t);
graft_param *graft_param_find(const graft_param_table *t, const char *name);
size_t graft_param_table_numel(const graft_param_table *t);
/* Point the fields of w at the tensors of t (allocates w->layers). */
graft_status graft_weights_bind(graft_weights *w, const graft_config *cfg, const graft_param_table *t);
void graft_weights_unbind(graft_weights *w);

struct graft_model {
    graft_config cfg;
    graft_param_table params; /* data points into mmap or heap_slab */
    graft_weights w;
    const char *format;       /* "hf-safetensors" | "llama2c" */
    graft_dtype src_dtype;
    char *path;
    graft_st_archive st;      /* kept open: F32 weights live in its mapping */
    graft_mapped_file bin;    /* llama2.c checkpoint mapping */
    float *heap_slab;         /* converted weights (F16/BF16 sources) */
    float *f32_slab;          /* weights converted later by graft_model_need_f32 */
    size_t mapped_bytes, heap_bytes;
    graft_tokenizer *tok;     /* owned; may be NULL */
};

/* Make every parameter an f32 array: the tensors a model kept as stored
 * (F16/BF16 read in place) are converted into a heap slab and the weights
 * rebound. Everything that reads or writes weights as floats (weight
 * editors, training, gradients, export) calls this first; the forward, the
 * backward of activations and GRACE/MELO work on stored weights as they are.
 * Idempotent. Must not run while a forward of m is in flight. */
graft_status graft_model_need_f32(graft_model *m);
/* Whether a loader keeps F16/BF16 matrices as stored, given how many bytes
 * they hold: GRAFT_WEIGHTS=stored or =f32 decides; by default models whose
 * matrices reach GRAFT_STORED_MIN_BYTES are kept as stored (half the memory
 * and the decode bytes), smaller ones converted at load. A small model costs
 * little memory either way, and an editor's passes over a few rows run
 * faster on f32 than on matrices widened anew for every product. */
#define GRAFT_STORED_MIN_BYTES ((size_t)64 << 20)
bool graft_keep_stored_weights(size_t stored_bytes);

/* Parse a Hugging Face config.json (GPT2Config / LlamaConfig keys). */
graft_status graft_config_from_json(graft_config *cfg, const char *json_text, const char *path);
/* Load the model parts (config + weights) from an HF folder or a llama2.c .bin. */
graft_status graft_load_hf(graft_model *m, const char *dir);
graft_status graft_load_llama2c(graft_model *m, const char *path);

/* A model with freshly allocated heap weights drawn from N(0, std) for
 * matrices and embeddings (norm weights 1, biases 0), deterministic in seed.
 * Used by benchmarks (named shapes) and by whole-model gradient tests. */
graft_status graft_model_create_random(const graft_config *cfg, uint64_t seed, float std,
                                       graft_model **out);
/* Named shapes: "gpt2" (124M), "gpt2-medium", "gpt2-large", "gpt2-xl" (1.5B),
 * "gpt2-tiny" (the fixture's shape), "llama-tiny" (stories260K's shape). */
graft_status graft_config_preset(const char *name, graft_config *cfg);

/* ================================================================ tokenizer */

/* Find and load the tokenizer that belongs to a model path: for a folder,
 * tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe inside
 * it; for a llama2.c .bin, tokenizer.bin or tok*.bin beside it. */
graft_status graft_tokenizer_find(const char *model_path, graft_tokenizer **out);

#endif /* GRAFT_INTERNAL_H */
