/*
 * gguf.h - GGUF files (llama.cpp / ggml's single-file model format): a
 * bounds-checked reader, the loader that turns llama.cpp's Llama and GPT-2
 * layout into a graft model, and the writer behind `graft export --gguf`.
 * docs/GGUF.md describes the layout graft writes and what it reads.
 */
#ifndef GRAFT_MODEL_GGUF_H
#define GRAFT_MODEL_GGUF_H

#include "internal.h"

#include <stdio.h>

/* Value types of metadata (the numbers stored in the file). */
typedef enum graft_gguf_vtype {
    GGUF_V_UINT8 = 0,
    GGUF_V_INT8 = 1,
    GGUF_V_UINT16 = 2,
    GGUF_V_INT16 = 3,
    GGUF_V_UINT32 = 4,
    GGUF_V_INT32 = 5,
    GGUF_V_FLOAT32 = 6,
    GGUF_V_BOOL = 7,
    GGUF_V_STRING = 8,
    GGUF_V_ARRAY = 9,
    GGUF_V_UINT64 = 10,
    GGUF_V_INT64 = 11,
    GGUF_V_FLOAT64 = 12,
    GGUF_V_COUNT
} graft_gguf_vtype;

/* The ggml tensor types graft reads or writes (numbering of ggml.h). */
enum {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q8_0 = 8,
    GGUF_T_BF16 = 30,
};

/* One metadata pair. Strings and arrays point into the mapping. */
typedef struct graft_gguf_kv {
    char *key;            /* NUL-terminated copy */
    uint32_t type;        /* graft_gguf_vtype */
    uint32_t elem_type;   /* arrays: the element type */
    uint64_t n;           /* arrays: element count; scalars: 1 */
    size_t pos;           /* file offset of the pair (its key length) */
    size_t val_pos;       /* file offset of the value (arrays: of the first element) */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;                /* integer, float and bool scalars */
    const char *str;      /* string scalar (not NUL-terminated) */
    uint64_t str_len;
    const uint8_t *arr;   /* arrays: the first element in the mapping */
} graft_gguf_kv;

typedef struct graft_gguf_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];        /* ne[0] varies fastest */
    uint32_t type;        /* ggml type */
    uint64_t offset;      /* relative to the data section */
    size_t pos;           /* file offset of this tensor's info record */
    size_t data_pos;      /* absolute file offset of the data */
    size_t numel;
    size_t nbytes;        /* 0 when the type's size is unknown to graft */
    const uint8_t *data;  /* in the mapping; NULL when nbytes is 0 */
} graft_gguf_tensor;

typedef struct graft_gguf {
    graft_mapped_file f;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    graft_gguf_kv *kv;
    graft_gguf_tensor *tensors;
    size_t alignment;
    size_t data_pos;      /* start of the data section */
    uint64_t n_kv_parsed_, n_tensors_parsed_; /* entries holding allocated names */
} graft_gguf;

/* True when the file starts with the GGUF magic. */
bool graft_is_gguf_file(const char *path);

/* Map and validate a GGUF file: every count, length, type, dimension and
 * tensor extent is checked against the file before anything is allocated or
 * read, and a failure names the file, the byte offset and the key/tensor. */
graft_status graft_gguf_open(const char *path, graft_gguf *g);
void graft_gguf_close(graft_gguf *g);
const graft_gguf_kv *graft_gguf_find(const graft_gguf *g, const char *key);
const graft_gguf_tensor *graft_gguf_find_tensor(const graft_gguf *g, const char *name);
const char *graft_gguf_type_name(uint32_t ggml_type);
const char *graft_gguf_vtype_name(uint32_t vtype);

/* Print the header, the metadata (long arrays summarised) and a tensor
 * summary; json=true prints one JSON object instead. */
void graft_gguf_describe(const graft_gguf *g, FILE *out, bool json);

/* ---------------------------------------------------------------- names */

/* How a graft parameter is stored in llama.cpp's layout. */
typedef enum graft_gguf_xform {
    GGUF_X_NONE = 0,  /* same bytes: graft [rows, cols] is GGUF ne = [cols, rows] */
    GGUF_X_TRANSPOSE, /* GPT-2 Conv1D: graft [in, out], GGUF rows are outputs (ne = [in, out]) */
    GGUF_X_ROPE,      /* Llama q/k: GGUF rows in interleaved-pair RoPE order (llama.cpp's permute) */
} graft_gguf_xform;

typedef struct graft_gguf_slot {
    char name[64];        /* GGUF tensor name */
    const graft_param *p; /* the graft parameter it holds */
    graft_gguf_xform x;
    int heads;            /* GGUF_X_ROPE: heads in p's rows */
    int n_dims;
    int64_t ne[2];        /* GGUF dimensions */
} graft_gguf_slot;

/* The GGUF tensors of a model with config cfg and parameter table t, in
 * llama.cpp's names (token_embd, blk.N.attn_q, ...). With tied heads the
 * Llama list has no output.weight; GPT-2's has one holding the embedding
 * again, as llama.cpp's converter writes it (with_tied_output). */
graft_status graft_gguf_plan(const graft_config *cfg, const graft_param_table *t, bool with_tied_output,
                             graft_gguf_slot **out, int *n);

/* Build m (config, weights, tokenizer) from a GGUF file. */
graft_status graft_load_gguf(graft_model *m, const char *path);

/* The tokenizer embedded in an open GGUF file (tokenizer.ggml.*); *out is
 * NULL when the file has none. */
graft_status graft_gguf_tokenizer(const graft_gguf *g, graft_tokenizer **out);

/*
 * Write m as a GGUF v3 file in llama.cpp's naming and layout (docs/GGUF.md):
 * matrices as dtype (GRAFT_F32, GRAFT_F16 or GRAFT_BF16), 1-D tensors as F32,
 * the tokenizer embedded when m has one. Written to path.tmp and renamed.
 */
graft_status graft_model_save_gguf(const graft_model *m, const char *path, graft_dtype dtype);

#endif /* GRAFT_MODEL_GGUF_H */
