/*
 * gguf.c - reading GGUF files (versions 2 and 3, little-endian).
 *
 * Layout (ggml's docs/gguf.md): "GGUF", uint32 version, uint64 tensor count,
 * uint64 metadata count; the metadata pairs (string key, uint32 value type,
 * value); one info record per tensor (string name, uint32 n_dims, uint64
 * ne[n_dims], uint32 ggml type, uint64 offset into the data section); then,
 * padded to `general.alignment` (default 32), the data section. A string is
 * a uint64 byte count and the bytes (no NUL); an array is a uint32 element
 * type, a uint64 count and the elements.
 *
 * Every count and length is checked against the bytes that remain before
 * anything is allocated for it, so a hostile count (2^60 tensors, a string
 * of 2^40 bytes) is refused at once; tables grow only as records are
 * actually parsed. Errors name the file, the byte offset and the key or
 * tensor being read.
 */
#define _GNU_SOURCE /* qsort_r */
#include "model/gguf.h"

#include "tokenizer/tokenizer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "graft supports little-endian hosts only"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
/* Limits far above anything real, so that sizes derived from them cannot
 * overflow: a key of 64 KiB (the spec's own limit), a tensor name of 256
 * bytes (ggml allows 64), 4 dimensions (GGML_MAX_DIMS), 2^40 per dimension. */
#define MAX_KEY_LEN 65535u
#define MAX_NAME_LEN 256u
#define MAX_DIMS 4u
#define MAX_NE ((uint64_t)1 << 40)
#define MAX_NUMEL ((uint64_t)1 << 50)
/* The smallest possible records: a pair is an empty key (8), a type (4) and
 * a one-byte value; a tensor info is an empty name (8), n_dims (4), one
 * dimension (8), a type (4) and an offset (8). */
#define MIN_KV_BYTES 13u
#define MIN_TENSOR_BYTES 32u

/* ================================================================ type tables */

static const char *const vtype_names[GGUF_V_COUNT] = {"uint8",  "int8",   "uint16", "int16", "uint32",
                                                     "int32",  "float32", "bool",  "string", "array",
                                                     "uint64", "int64",  "float64"};
static const uint8_t vtype_size[GGUF_V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *graft_gguf_vtype_name(uint32_t t) { return t < GGUF_V_COUNT ? vtype_names[t] : "?"; }

/* ggml types: name, elements per block, bytes per block. Only types whose
 * block size graft knows can have their extent checked; the others still
 * open (inspect lists them) but cannot be loaded. */
typedef struct ggml_type_info {
    uint32_t id;
    const char *name;
    uint32_t blck, size;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},      {27, "I64", 1, 8},      {28, "F64", 1, 8},      {30, "BF16", 1, 2},
};

static const ggml_type_info *type_info(uint32_t id) {
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].id == id) return &ggml_types[i];
    return NULL;
}

const char *graft_gguf_type_name(uint32_t id) {
    const ggml_type_info *t = type_info(id);
    return t ? t->name : "unknown";
}

/* ================================================================ reader */

typedef struct rd {
    const char *path;
    const uint8_t *d;
    size_t size, pos;
    char ctx[320]; /* what is being read, for messages: "header", "key 'x'", "tensor 'y'" */
} rd;

static graft_status fail_at(const rd *r, size_t pos, const char *detail) {
    return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: %s: %s", r->path, pos, r->ctx, detail);
}

static graft_status need(const rd *r, size_t n, const char *what) {
    if (r->size - r->pos >= n) return GRAFT_OK;
    return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: %s: %s needs %zu bytes but the file ends after %zu (truncated?)",
                      r->path, r->pos, r->ctx, what, n, r->size - r->pos);
}

static graft_status rd_u32(rd *r, const char *what, uint32_t *v) {
    GRAFT_TRY(need(r, 4, what));
    memcpy(v, r->d + r->pos, 4);
    r->pos += 4;
    return GRAFT_OK;
}

static graft_status rd_u64(rd *r, const char *what, uint64_t *v) {
    GRAFT_TRY(need(r, 8, what));
    memcpy(v, r->d + r->pos, 8);
    r->pos += 8;
    return GRAFT_OK;
}

/* A string: uint64 length then bytes, the length checked against what is
 * left of the file (and against max) before anything uses it. */
static graft_status rd_str(rd *r, const char *what, uint64_t max, const char **s, uint64_t *len) {
    size_t at = r->pos;
    GRAFT_TRY(rd_u64(r, what, len));
    if (*len > r->size - r->pos)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: offset %zu: %s: %s length %" PRIu64 " runs past the end of the file (%zu bytes left)",
                          r->path, at, r->ctx, what, *len, r->size - r->pos);
    if (*len > max)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset %zu: %s: %s length %" PRIu64 " exceeds the limit of %" PRIu64,
                          r->path, at, r->ctx, what, *len, max);
    *s = (const char *)(r->d + r->pos);
    r->pos += (size_t)*len;
    return GRAFT_OK;
}

static char *dup_name(const char *s, uint64_t n) {
    char *p = malloc((size_t)n + 1);
    if (!p) return NULL;
    memcpy(p, s, (size_t)n);
    p[n] = '\0';
    return p;
}

/* A scalar (not string, not array) value into kv->num. */
static void read_scalar(const uint8_t *p, uint32_t t, graft_gguf_kv *kv) {
    switch (t) {
    case GGUF_V_UINT8: kv->num.u = p[0]; break;
    case GGUF_V_INT8: kv->num.i = (int8_t)p[0]; break;
    case GGUF_V_BOOL: kv->num.u = p[0] != 0; break;
    case GGUF_V_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        kv->num.u = v;
        break;
    }
    case GGUF_V_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        kv->num.i = v;
        break;
    }
    case GGUF_V_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        kv->num.u = v;
        break;
    }
    case GGUF_V_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        kv->num.i = v;
        break;
    }
    case GGUF_V_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        kv->num.f = v;
        break;
    }
    case GGUF_V_UINT64: memcpy(&kv->num.u, p, 8); break;
    case GGUF_V_INT64: memcpy(&kv->num.i, p, 8); break;
    case GGUF_V_FLOAT64: memcpy(&kv->num.f, p, 8); break;
    default: break;
    }
}

static graft_status read_value(rd *r, graft_gguf_kv *kv) {
    size_t at = r->pos;
    char msg[96];
    if (kv->type >= GGUF_V_COUNT) {
        snprintf(msg, sizeof msg, "unknown value type %u (0..12 are defined)", kv->type);
        return fail_at(r, at - 4, msg);
    }
    kv->n = 1;
    kv->val_pos = at;
    if (kv->type == GGUF_V_STRING) return rd_str(r, "string value", UINT64_MAX, &kv->str, &kv->str_len);
    if (kv->type != GGUF_V_ARRAY) {
        GRAFT_TRY(need(r, vtype_size[kv->type], "value"));
        read_scalar(r->d + r->pos, kv->type, kv);
        r->pos += vtype_size[kv->type];
        return GRAFT_OK;
    }
    GRAFT_TRY(rd_u32(r, "array element type", &kv->elem_type));
    if (kv->elem_type >= GGUF_V_COUNT) {
        snprintf(msg, sizeof msg, "unknown array element type %u", kv->elem_type);
        return fail_at(r, at, msg);
    }
    if (kv->elem_type == GGUF_V_ARRAY)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: offset %zu: %s: arrays of arrays are not supported", r->path,
                          at, r->ctx);
    size_t n_at = r->pos;
    GRAFT_TRY(rd_u64(r, "array length", &kv->n));
    kv->val_pos = r->pos;
    kv->arr = r->d + r->pos;
    size_t left = r->size - r->pos;
    if (kv->elem_type == GGUF_V_STRING) {
        /* every string takes at least its 8-byte length */
        if (kv->n > left / 8) {
            snprintf(msg, sizeof msg, "array of %" PRIu64 " strings cannot fit in the %zu bytes left", kv->n, left);
            return fail_at(r, n_at, msg);
        }
        for (uint64_t i = 0; i < kv->n; i++) {
            const char *s;
            uint64_t l;
            char what[64];
            snprintf(what, sizeof what, "string [%" PRIu64 "]", i);
            GRAFT_TRY(rd_str(r, what, UINT64_MAX, &s, &l));
        }
        return GRAFT_OK;
    }
    size_t esz = vtype_size[kv->elem_type];
    if (kv->n > left / esz) {
        snprintf(msg, sizeof msg, "array of %" PRIu64 " %s values runs past the end of the file (%zu bytes left)",
                 kv->n, vtype_names[kv->elem_type], left);
        return fail_at(r, n_at, msg);
    }
    r->pos += (size_t)kv->n * esz;
    return GRAFT_OK;
}

/* Grow a table by doubling; its size stays proportional to the records
 * already parsed, never to a count claimed by the file. */
static bool grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return true;
    size_t c = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    memset((char *)q + *cap * elem, 0, (c - *cap) * elem);
    *p = q;
    *cap = c;
    return true;
}

static graft_status parse_kvs(rd *r, graft_gguf *g) {
    size_t cap = 0;
    tok_map seen = {0};
    if (!tok_map_init(&seen, 64)) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
    graft_status st = GRAFT_OK;
    for (uint64_t i = 0; i < g->n_kv && st == GRAFT_OK; i++) {
        if (!grow((void **)&g->kv, &cap, (size_t)i, sizeof *g->kv)) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
            break;
        }
        graft_gguf_kv *kv = &g->kv[i];
        kv->pos = r->pos;
        snprintf(r->ctx, sizeof r->ctx, "metadata pair %" PRIu64 " of %" PRIu64, i, g->n_kv);
        const char *key;
        uint64_t klen;
        if ((st = rd_str(r, "key", MAX_KEY_LEN, &key, &klen)) != GRAFT_OK) break;
        if (klen == 0 || memchr(key, 0, (size_t)klen)) {
            st = fail_at(r, kv->pos, klen ? "key contains a NUL byte" : "key is empty");
            break;
        }
        if (!(kv->key = dup_name(key, klen))) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
            break;
        }
        g->n_kv_parsed_ = i + 1;
        snprintf(r->ctx, sizeof r->ctx, "key '%.200s'", kv->key);
        int64_t prev;
        if (tok_map_get(&seen, key, (size_t)klen, &prev)) {
            char msg[96];
            snprintf(msg, sizeof msg, "duplicate key (first at offset %zu)", g->kv[prev].pos);
            st = fail_at(r, kv->pos, msg);
            break;
        }
        if (!tok_map_put(&seen, kv->key, (size_t)klen, (int64_t)i)) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
            break;
        }
        if ((st = rd_u32(r, "value type", &kv->type)) != GRAFT_OK) break;
        st = read_value(r, kv);
    }
    tok_map_free(&seen);
    return st;
}

static graft_status parse_alignment(rd *r, graft_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const graft_gguf_kv *a = graft_gguf_find(g, "general.alignment");
    if (!a) return GRAFT_OK;
    snprintf(r->ctx, sizeof r->ctx, "key 'general.alignment'");
    if (a->type != GGUF_V_UINT32) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be a uint32, not %s", graft_gguf_vtype_name(a->type));
        return fail_at(r, a->pos, msg);
    }
    if (a->num.u == 0 || (a->num.u & (a->num.u - 1)) != 0 || a->num.u > (1u << 24)) {
        char msg[96];
        snprintf(msg, sizeof msg, "%" PRIu64 " is not a power of two in [1, 2^24]", a->num.u);
        return fail_at(r, a->val_pos, msg);
    }
    g->alignment = (size_t)a->num.u;
    return GRAFT_OK;
}

static graft_status parse_tensor_info(rd *r, graft_gguf *g, uint64_t i, tok_map *seen) {
    graft_gguf_tensor *t = &g->tensors[i];
    char msg[160];
    t->pos = r->pos;
    snprintf(r->ctx, sizeof r->ctx, "tensor info %" PRIu64 " of %" PRIu64, i, g->n_tensors);
    const char *name = NULL;
    uint64_t nlen = 0;
    GRAFT_TRY(rd_str(r, "name", MAX_NAME_LEN, &name, &nlen));
    if (nlen == 0 || memchr(name, 0, (size_t)nlen))
        return fail_at(r, t->pos, nlen ? "name contains a NUL byte" : "name is empty");
    if (!(t->name = dup_name(name, nlen))) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
    g->n_tensors_parsed_ = i + 1;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
    int64_t prev;
    if (tok_map_get(seen, name, (size_t)nlen, &prev)) {
        snprintf(msg, sizeof msg, "duplicate tensor name (first at offset %zu)", g->tensors[prev].pos);
        return fail_at(r, t->pos, msg);
    }
    if (!tok_map_put(seen, t->name, (size_t)nlen, (int64_t)i))
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
    size_t at = r->pos;
    GRAFT_TRY(rd_u32(r, "n_dims", &t->n_dims));
    if (t->n_dims == 0 || t->n_dims > MAX_DIMS) {
        snprintf(msg, sizeof msg, "n_dims %u is outside [1, %u]", t->n_dims, MAX_DIMS);
        return fail_at(r, at, msg);
    }
    uint64_t numel = 1;
    for (uint32_t d = 0; d < MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        at = r->pos;
        uint64_t ne;
        GRAFT_TRY(rd_u64(r, "dimension", &ne));
        if (ne == 0 || ne > MAX_NE) {
            snprintf(msg, sizeof msg, "ne[%u] = %" PRIu64 " is outside [1, 2^40]", d, ne);
            return fail_at(r, at, msg);
        }
        t->ne[d] = (int64_t)ne;
        if (numel > MAX_NUMEL / ne) {
            snprintf(msg, sizeof msg, "more than 2^50 elements");
            return fail_at(r, at, msg);
        }
        numel *= ne;
    }
    t->numel = (size_t)numel;
    at = r->pos;
    GRAFT_TRY(rd_u32(r, "type", &t->type));
    const ggml_type_info *ti = type_info(t->type);
    if (ti) {
        if ((uint64_t)t->ne[0] % ti->blck != 0) {
            snprintf(msg, sizeof msg, "ne[0] = %" PRId64 " is not a multiple of the %s block size %u", t->ne[0],
                     ti->name, ti->blck);
            return fail_at(r, at, msg);
        }
        t->nbytes = (size_t)(numel / ti->blck * ti->size); /* < 2^50 * 292 / 32: no overflow */
    }
    GRAFT_TRY(rd_u64(r, "data offset", &t->offset));
    return GRAFT_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const graft_gguf_tensor *t = ctx;
    const graft_gguf_tensor *x = &t[*(const uint64_t *)a], *y = &t[*(const uint64_t *)b];
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Offsets aligned, extents inside the file, no two tensors overlapping. */
static graft_status check_extents(rd *r, graft_gguf *g) {
    char msg[200];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        graft_gguf_tensor *t = &g->tensors[i];
        snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
        if (t->offset % g->alignment != 0) {
            snprintf(msg, sizeof msg, "data offset %" PRIu64 " is not a multiple of the alignment %zu", t->offset,
                     g->alignment);
            return fail_at(r, t->pos, msg);
        }
        if (!t->nbytes) continue; /* a type graft does not know: extent unknown */
        uint64_t avail = g->data_pos <= r->size ? r->size - g->data_pos : 0;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            snprintf(msg, sizeof msg,
                     "%zu data bytes at data offset %" PRIu64 " (file offset %" PRIu64
                     ") run past the end of the file (%zu bytes; truncated?)",
                     t->nbytes, t->offset, (uint64_t)g->data_pos + t->offset, r->size);
            return fail_at(r, t->pos, msg);
        }
        t->data_pos = g->data_pos + (size_t)t->offset;
        t->data = r->d + t->data_pos;
    }
    uint64_t *order = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *order);
    if (!order) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = i;
    qsort_r(order, (size_t)g->n_tensors, sizeof *order, cmp_by_offset, g->tensors);
    graft_status st = GRAFT_OK;
    for (uint64_t k = 1; k < g->n_tensors; k++) {
        const graft_gguf_tensor *a = &g->tensors[order[k - 1]], *b = &g->tensors[order[k]];
        if (a->nbytes && a->offset + a->nbytes > b->offset) {
            snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", b->name);
            snprintf(msg, sizeof msg, "data at data offset %" PRIu64 " overlaps tensor '%.64s' (%" PRIu64 " + %zu bytes)",
                     b->offset, a->name, a->offset, a->nbytes);
            st = fail_at(r, b->pos, msg);
            break;
        }
    }
    free(order);
    return st;
}

static graft_status parse(rd *r, graft_gguf *g) {
    snprintf(r->ctx, sizeof r->ctx, "header");
    if (r->size < 4 || memcmp(r->d, "GGUF", 4) != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset 0: header: not a GGUF file (no \"GGUF\" magic)", r->path);
    r->pos = 4;
    GRAFT_TRY(rd_u32(r, "version", &g->version));
    if (g->version != 2 && g->version != 3) {
        /* a big-endian file has its version byte-swapped */
        const char *why = (g->version == 0x02000000u || g->version == 0x03000000u) ? " (a big-endian file?)"
                          : g->version == 1                                       ? " (GGUF v1 is obsolete)"
                                                                                  : "";
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: offset 4: header: GGUF version %u is not supported (2 and 3 are)%s",
                          r->path, g->version, why);
    }
    GRAFT_TRY(rd_u64(r, "tensor count", &g->n_tensors));
    GRAFT_TRY(rd_u64(r, "metadata count", &g->n_kv));
    size_t left = r->size - r->pos;
    if (g->n_tensors > left / MIN_TENSOR_BYTES)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset 8: header: tensor count %" PRIu64
                          " cannot fit in the %zu bytes that follow (a tensor info takes at least %u)",
                          r->path, g->n_tensors, left, MIN_TENSOR_BYTES);
    if (g->n_kv > left / MIN_KV_BYTES)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: offset 16: header: metadata count %" PRIu64
                          " cannot fit in the %zu bytes that follow (a pair takes at least %u)",
                          r->path, g->n_kv, left, MIN_KV_BYTES);
    GRAFT_TRY(parse_kvs(r, g));
    GRAFT_TRY(parse_alignment(r, g));
    tok_map seen = {0};
    size_t cap = 0;
    if (!tok_map_init(&seen, 64)) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
    graft_status st = GRAFT_OK;
    for (uint64_t i = 0; i < g->n_tensors && st == GRAFT_OK; i++) {
        if (!grow((void **)&g->tensors, &cap, (size_t)i, sizeof *g->tensors))
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", r->path);
        else st = parse_tensor_info(r, g, i, &seen);
    }
    tok_map_free(&seen);
    GRAFT_TRY(st);
    size_t pad = (g->alignment - r->pos % g->alignment) % g->alignment;
    g->data_pos = r->pos + pad; /* r->pos <= size < SIZE_MAX - 2^24 */
    return check_extents(r, g);
}

graft_status graft_gguf_open(const char *path, graft_gguf *g) {
    memset(g, 0, sizeof *g);
    GRAFT_TRY(graft_map_file(path, &g->f));
    rd r = {.path = path, .d = g->f.data, .size = g->f.size};
    graft_status st = parse(&r, g);
    if (st != GRAFT_OK) graft_gguf_close(g);
    return st;
}

void graft_gguf_close(graft_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; i < g->n_kv_parsed_; i++) free(g->kv[i].key);
    for (uint64_t i = 0; i < g->n_tensors_parsed_; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    graft_unmap_file(&g->f);
    memset(g, 0, sizeof *g);
}

const graft_gguf_kv *graft_gguf_find(const graft_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const graft_gguf_tensor *graft_gguf_find_tensor(const graft_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

bool graft_is_gguf_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    char m[4];
    bool yes = fread(m, 1, 4, fp) == 4 && memcmp(m, "GGUF", 4) == 0;
    fclose(fp);
    return yes;
}

/* ================================================================ describe */

static void put_str(FILE *out, const char *s, size_t n, bool json, size_t max) {
    fputc('"', out);
    size_t shown = n < max ? n : max;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c == '\n') fputs("\\n", out);
        else if (c < 0x20 || c == 0x7f) fprintf(out, json ? "\\u%04x" : "\\x%02x", c);
        else fputc(c, out);
    }
    if (shown < n) fputs("...", out);
    fputc('"', out);
}

static void put_num(FILE *out, uint32_t t, const graft_gguf_kv *v) {
    switch (t) {
    case GGUF_V_BOOL: fputs(v->num.u ? "true" : "false", out); break;
    case GGUF_V_INT8:
    case GGUF_V_INT16:
    case GGUF_V_INT32:
    case GGUF_V_INT64: fprintf(out, "%" PRId64, v->num.i); break;
    case GGUF_V_FLOAT32: fprintf(out, "%.9g", v->num.f); break;
    case GGUF_V_FLOAT64: fprintf(out, "%.17g", v->num.f); break;
    default: fprintf(out, "%" PRIu64, v->num.u); break;
    }
}

static void put_scalar(FILE *out, uint32_t t, const uint8_t *p) {
    graft_gguf_kv tmp = {0};
    read_scalar(p, t, &tmp);
    put_num(out, t, &tmp);
}

/* The value of kv; arrays show their first `first` elements. */
static void put_value(FILE *out, const graft_gguf_kv *kv, bool json, int first) {
    if (kv->type == GGUF_V_STRING) {
        put_str(out, kv->str, (size_t)kv->str_len, json, json ? 4096 : 200);
        return;
    }
    if (kv->type != GGUF_V_ARRAY) {
        put_num(out, kv->type, kv);
        return;
    }
    uint64_t shown = kv->n < (uint64_t)first ? kv->n : (uint64_t)first;
    if (json) fprintf(out, "{\"type\": \"array\", \"elem_type\": \"%s\", \"n\": %" PRIu64 ", \"first\": [",
                      graft_gguf_vtype_name(kv->elem_type), kv->n);
    else fprintf(out, "[%s x %" PRIu64 "] ", graft_gguf_vtype_name(kv->elem_type), kv->n);
    const uint8_t *p = kv->arr;
    for (uint64_t i = 0; i < shown; i++) {
        if (i) fputs(", ", out);
        if (kv->elem_type == GGUF_V_STRING) {
            uint64_t l;
            memcpy(&l, p, 8);
            put_str(out, (const char *)p + 8, (size_t)l, json, 40);
            p += 8 + l;
        } else {
            put_scalar(out, kv->elem_type, p);
            p += vtype_size[kv->elem_type];
        }
    }
    if (json) fputs("]}", out);
    else if (shown < kv->n) fputs(shown ? ", ..." : "...", out);
}

void graft_gguf_describe(const graft_gguf *g, FILE *out, bool json) {
    size_t bytes = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) bytes += g->tensors[i].nbytes;
    if (json) {
        fprintf(out, "{\"version\": %u, \"alignment\": %zu, \"data_offset\": %zu, \"n_tensors\": %" PRIu64
                     ", \"tensor_bytes\": %zu, \"metadata\": {",
                g->version, g->alignment, g->data_pos, g->n_tensors, bytes);
        for (uint64_t i = 0; i < g->n_kv; i++) {
            fputs(i ? ", " : "", out);
            put_str(out, g->kv[i].key, strlen(g->kv[i].key), true, 4096);
            fputs(": ", out);
            put_value(out, &g->kv[i], true, 8);
        }
        fputs("}}", out);
        return;
    }
    fprintf(out, "gguf           version %u, %" PRIu64 " metadata pairs, %" PRIu64
                 " tensors (%.2f MiB), alignment %zu, data at offset %zu\n",
            g->version, g->n_kv, g->n_tensors, bytes / (1024.0 * 1024.0), g->alignment, g->data_pos);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const graft_gguf_kv *kv = &g->kv[i];
        fprintf(out, "  %-44s %-8s ", kv->key, graft_gguf_vtype_name(kv->type));
        put_value(out, kv, false, 6);
        fputc('\n', out);
    }
    /* tensors: counts by type, then the first few */
    fputs("  tensors by type:", out);
    for (size_t k = 0; k < sizeof ggml_types / sizeof ggml_types[0] + 1; k++) {
        uint64_t n = 0;
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            bool known = type_info(g->tensors[i].type) != NULL;
            if (k < sizeof ggml_types / sizeof ggml_types[0] ? g->tensors[i].type == ggml_types[k].id : !known) n++;
        }
        if (n) fprintf(out, " %s %" PRIu64, k < sizeof ggml_types / sizeof ggml_types[0] ? ggml_types[k].name : "unknown", n);
    }
    fputc('\n', out);
    const uint64_t show = 8;
    for (uint64_t i = 0; i < g->n_tensors && i < show; i++) {
        const graft_gguf_tensor *t = &g->tensors[i];
        fprintf(out, "  %-32s %-5s [", t->name, graft_gguf_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) fprintf(out, "%s%" PRId64, d ? ", " : "", t->ne[d]);
        fprintf(out, "] at data offset %" PRIu64 "\n", t->offset);
    }
    if (g->n_tensors > show) fprintf(out, "  ... %" PRIu64 " more tensors\n", g->n_tensors - show);
}
