/*
 * safetensors.c - strict reader and atomic writer of the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON (padded
 * with spaces), then the raw little-endian tensor bytes. Offsets in the
 * header are relative to byte 8 + N.
 *
 * The reader trusts nothing in the file: every number is range-checked and
 * every size product is overflow-checked before it is used to form a
 * pointer, because a checkpoint is user input and its tensors are later
 * dereferenced by the kernels without further checks.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "graft supports little-endian hosts only"
#endif

/* The reference implementation refuses headers above 100 MB; a larger
 * length is a corrupt or hostile file, not a big model. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Integers in the header are JSON numbers that cJSON parses as doubles;
 * from 2^53 on they are no longer exact (2^53 + 1 reads as 2^53), so they
 * cannot be trusted. */
#define ST_MAX_EXACT ((double)(UINT64_C(1) << 53))

/* ---------------------------------------------------------------- helpers */

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Returns the offset of the first byte that is not valid UTF-8, or len. */
static size_t utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* overlong forms, surrogates and values past U+10FFFF are invalid */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += n + 1;
    }
    return len;
}

/* A JSON number that is a non-negative integer exactly representable. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d >= ST_MAX_EXACT || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

static bool parse_dtype(const char *s, graft_dtype *dt) {
    static const struct { const char *name; graft_dtype dt; } known[] = {
        {"F32", GRAFT_F32}, {"F16", GRAFT_F16}, {"BF16", GRAFT_BF16},
        {"I64", GRAFT_I64}, {"I32", GRAFT_I32}, {"U8", GRAFT_U8},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(s, known[i].name) == 0) {
            *dt = known[i].dt;
            return true;
        }
    return false;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const graft_st_tensor *)a)->name, ((const graft_st_tensor *)b)->name);
}

/* For the overlap check: tensors ordered by where their bytes start. */
typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* ---------------------------------------------------------------- reader */

/* File offsets of the header's top-level keys (for messages), in file order,
 * which is the order cJSON keeps its children in: the i-th entry's key is at
 * keys[i]. One pass over the text, which cJSON has accepted as a JSON object:
 * looking each name up from the start of the header instead was quadratic (a
 * 2.3 MB header of 40,000 tensors took a minute; the 100 MB limit allows
 * millions). Returns how many keys were stored (at most cap). */
static size_t top_keys(const char *text, size_t n, size_t *keys, size_t cap) {
    size_t k = 0;
    int depth = 0;
    bool in_str = false, esc = false, expect_key = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            if (depth == 1 && expect_key && k < cap) keys[k++] = 8 + i;
            expect_key = false;
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
        }
    }
    return k;
}

/* Parse one tensor entry of the header. data_size is the size of the data
 * region, data_start its absolute file offset. */
static graft_status parse_tensor(const char *path, const cJSON *item, size_t eoff, const uint8_t *data_base,
                                 size_t data_start, size_t data_size, int file_index, graft_st_tensor *t, span *sp) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): entry is not a JSON object", path, name,
                          eoff);

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(jd))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): field \"dtype\" missing or not a string",
                          path, name, eoff);
    graft_dtype dt;
    if (!parse_dtype(jd->valuestring, &dt))
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: tensor '%s' (header entry at file offset %zu): dtype \"%s\" is not supported (F32, F16, "
                          "BF16, I64, I32, U8 are)",
                          path, name, eoff, jd->valuestring);

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(js))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): field \"shape\" missing or not an array",
                          path, name, eoff);
    int ndim = cJSON_GetArraySize(js);
    if (ndim > GRAFT_MAX_DIMS)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: tensor '%s' (header entry at file offset %zu): %d dimensions (at most %d supported)",
                          path, name, eoff, ndim, GRAFT_MAX_DIMS);
    size_t numel = 1; /* an empty shape is a scalar: one element */
    int d = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, js) {
        uint64_t v;
        if (!json_uint(e, &v) || v > (uint64_t)INT64_MAX)
            return graft_fail(
                GRAFT_ERR_FORMAT,
                "%s: tensor '%s' (header entry at file offset %zu): \"shape\" entry %d is not a non-negative integer "
                "below 2^53",
                path, name, eoff, d);
        t->shape[d++] = (int64_t)v;
        if (v > SIZE_MAX || !graft_mul_size(numel, (size_t)v, &numel))
            return graft_fail(GRAFT_ERR_FORMAT,
                              "%s: tensor '%s' (header entry at file offset %zu): element count of \"shape\" overflows",
                              path, name, eoff);
    }
    size_t nbytes;
    if (!graft_mul_size(numel, graft_dtype_size(dt), &nbytes))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): byte size of \"shape\" overflows", path,
                          name, eoff);

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(cJSON_GetArrayItem(jo, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(jo, 1), &end))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): field \"data_offsets\" must be [begin, "
                          "end] non-negative integers below 2^53",
                          path, name, eoff);
    if (begin > end)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): data_offsets [%" PRIu64 ", %" PRIu64
                          "] end before they begin "
                          "(file offset %" PRIu64 ")",
                          path, name, eoff, begin, end, (uint64_t)data_start + begin);
    if (end > data_size)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): data_offsets [%" PRIu64 ", %" PRIu64
                          "] reach file offset %" PRIu64
                          ", past the end of the file (data region is %zu bytes at file offset %zu, file is %zu bytes)",
                          path, name, eoff, begin, end, (uint64_t)data_start + end, data_size, data_start,
                          data_start + data_size);
    if (end - begin != nbytes) {
        char sh[160];
        fmt_shape(sh, sizeof sh, ndim, t->shape);
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: tensor '%s' (header entry at file offset %zu): data_offsets [%" PRIu64 ", %" PRIu64
                          "] hold %" PRIu64 " bytes at file offset %" PRIu64 " but dtype %s x shape %s needs %zu",
                          path, name, eoff, begin, end, end - begin, (uint64_t)data_start + begin, graft_dtype_name(dt),
                          sh, nbytes);
    }

    t->name = strdup(name);
    if (!t->name)
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = data_base + begin;
    t->file_offset = data_start + (size_t)begin;
    t->file_index = file_index;
    sp->begin = begin;
    sp->end = end;
    sp->name = t->name;
    return GRAFT_OK;
}

/* Validate a metadata object: the format allows only string values. */
static graft_status parse_metadata(const char *path, const cJSON *item, size_t eoff, char **out) {
    if (!cJSON_IsObject(item))
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: \"__metadata__\" (header entry at file offset %zu) is not a JSON object", path, eoff);
    const cJSON *e;
    cJSON_ArrayForEach(e, item) {
        if (!cJSON_IsString(e))
            return graft_fail(GRAFT_ERR_FORMAT,
                              "%s: \"__metadata__\" (header entry at file offset %zu): field '%s' is not a string",
                              path, eoff, e->string);
    }
    if (*out)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: \"__metadata__\" appears twice (again at file offset %zu)", path,
                          eoff);
    *out = cJSON_PrintUnformatted(item);
    if (!*out)
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    return GRAFT_OK;
}

/* Parse the file a->files[fi] holds, as the bytes buf[0..size), and append
 * its tensors to a->tensors. Mapped files and in-memory ones
 * (graft_st_open_mem) share this. On failure a stays consistent for
 * graft_st_close. */
static graft_status st_add_buffer(graft_st_archive *a, int fi, const char *path, const uint8_t *buf, size_t size,
                                  char **metadata) {

    if (size < 8)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length at offset 0",
                          path, size);
    uint64_t hlen = le64(buf);
    if (hlen > size - 8)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: header length %" PRIu64 " (u64 at offset 0) runs past the end of the file (%zu bytes)",
                          path, hlen, size);
    if (hlen > ST_MAX_HEADER)
        return graft_fail(GRAFT_ERR_FORMAT,
                          "%s: header length %" PRIu64 " (u64 at offset 0) exceeds the %" PRIu64 "-byte limit", path,
                          hlen, ST_MAX_HEADER);
    if (hlen < 2)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header length %" PRIu64 " (u64 at offset 0) cannot hold a JSON object",
                          path, hlen);
    const uint8_t *hdr = buf + 8;
    size_t n = (size_t)hlen;
    const void *nul = memchr(hdr, 0, n);
    if (nul)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header: NUL byte at file offset %zu", path,
                          (size_t)((const uint8_t *)nul - buf));
    size_t bad = utf8_check(hdr, n);
    if (bad != n)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header: invalid UTF-8 at file offset %zu", path, 8 + bad);

    /* Parse a NUL-terminated private copy: the mapping has no terminator
     * and a parser must never be able to read past the header. */
    char *text = malloc(n + 1);
    if (!text)
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for a %zu-byte header", path, n);
    memcpy(text, hdr, n);
    text[n] = '\0';
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &endp, 0);
    if (!root) {
        size_t off = endp ? (size_t)(endp - text) : 0;
        free(text);
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header is not valid JSON (error near file offset %zu)", path, 8 + off);
    }
    /* Only padding may follow the JSON value. */
    for (size_t k = endp ? (size_t)(endp - text) : n; k < n; k++) {
        char c = text[k];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            cJSON_Delete(root);
            free(text);
            return graft_fail(GRAFT_ERR_FORMAT, "%s: header: unexpected byte 0x%02x after the JSON at file offset %zu",
                              path, (unsigned)(uint8_t)c, 8 + k);
        }
    }
    if (!cJSON_IsObject(root)) {
        free(text);
        cJSON_Delete(root);
        return graft_fail(GRAFT_ERR_FORMAT, "%s: header (file offset 8) is not a JSON object", path);
    }

    int count = 0, n_items = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        n_items++;
        if (strcmp(item->string, "__metadata__") != 0)
            count++;
    }
    graft_status st = GRAFT_OK;
    span *spans = calloc((size_t)count + 1, sizeof *spans);
    size_t *keys = malloc(((size_t)n_items + 1) * sizeof *keys);
    graft_st_tensor *nt = realloc(a->tensors, ((size_t)a->n_tensors + (size_t)count + 1) * sizeof *nt);
    if (!spans || !keys || !nt) {
        free(spans);
        free(keys);
        if (nt)
            a->tensors = nt;
        free(text);
        cJSON_Delete(root);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for %d tensors", path, count);
    }
    a->tensors = nt;
    size_t n_keys = top_keys(text, n, keys, (size_t)n_items);
    size_t data_start = 8 + n;
    size_t data_size = size - data_start;
    int k = 0;
    size_t ki = 0;
    cJSON_ArrayForEach(item, root) {
        size_t eoff = ki < n_keys ? keys[ki] : 8; /* 8: the header start, should the scan disagree */
        ki++;
        if (strcmp(item->string, "__metadata__") == 0) {
            st = parse_metadata(path, item, eoff, metadata);
        } else {
            graft_st_tensor *t = &a->tensors[a->n_tensors];
            memset(t, 0, sizeof *t);
            st = parse_tensor(path, item, eoff, buf + data_start, data_start, data_size, fi, t, &spans[k]);
            if (st == GRAFT_OK) {
                a->n_tensors++;
                k++;
            }
        }
        if (st != GRAFT_OK)
            break;
    }
    free(keys);
    free(text);
    cJSON_Delete(root);

    if (st == GRAFT_OK) {
        /* No two non-empty tensors may share a byte: editors write weights in
         * place, and aliasing would make one edit change two tensors. */
        qsort(spans, (size_t)k, sizeof *spans, cmp_span);
        uint64_t max_end = 0;
        const char *max_name = NULL;
        for (int i = 0; i < k; i++) {
            if (spans[i].begin == spans[i].end)
                continue;
            if (max_name && spans[i].begin < max_end) {
                st = graft_fail(GRAFT_ERR_FORMAT,
                                "%s: header: tensors '%s' and '%s' overlap: '%s' starts at file offset %" PRIu64
                                " before '%s' ends at file offset %" PRIu64,
                                path, max_name, spans[i].name, spans[i].name, (uint64_t)data_start + spans[i].begin,
                                max_name, (uint64_t)data_start + max_end);
                break;
            }
            if (spans[i].end > max_end) {
                max_end = spans[i].end;
                max_name = spans[i].name;
            }
        }
    }
    free(spans);
    return st;
}

/* Map `path` as a->files[a->n_files] (room must exist) and append its
 * tensors to a->tensors. On failure a stays consistent for graft_st_close. */
static graft_status st_add_file(graft_st_archive *a, const char *path, char **metadata) {
    int fi = a->n_files;
    GRAFT_TRY(graft_map_file(path, &a->files[fi]));
    a->n_files++;
    return st_add_buffer(a, fi, path, a->files[fi].data, a->files[fi].size, metadata);
}

/* A file held by the caller: files[fi] gets only its name (data stays NULL,
 * so graft_st_close unmaps nothing) and the tensors point into buf. */
static graft_status st_add_mem(graft_st_archive *a, const char *path, const void *buf, size_t size, char **metadata) {
    int fi = a->n_files;
    if (!(a->files[fi].path = strdup(path))) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    a->n_files++;
    return st_add_buffer(a, fi, path, buf, size, metadata);
}

/* Sort by name for binary search and refuse duplicate names (JSON allows
 * repeated keys; a checkpoint with two values for one tensor is ambiguous). */
static graft_status st_finish(graft_st_archive *a) {
    qsort(a->tensors, (size_t)a->n_tensors, sizeof *a->tensors, cmp_tensor_name);
    for (int i = 1; i < a->n_tensors; i++) {
        if (strcmp(a->tensors[i - 1].name, a->tensors[i].name) == 0) {
            const graft_st_tensor *x = &a->tensors[i - 1], *y = &a->tensors[i];
            return graft_fail(GRAFT_ERR_FORMAT, "%s: tensor '%s' is defined twice (file offsets %zu and %zu%s%s)",
                              a->files[y->file_index].path, y->name, x->file_offset, y->file_offset,
                              x->file_index != y->file_index ? ", the first in " : "",
                              x->file_index != y->file_index ? a->files[x->file_index].path : "");
        }
    }
    return GRAFT_OK;
}

/* One file from disk (data NULL) or from memory. */
static graft_status st_open_one(const char *path, const void *data, size_t size, graft_st_archive *a) {
    memset(a, 0, sizeof *a);
    a->files = calloc(1, sizeof *a->files);
    if (!a->files) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    graft_status st = data ? st_add_mem(a, path, data, size, &a->metadata_json) : st_add_file(a, path, &a->metadata_json);
    if (st == GRAFT_OK) st = st_finish(a);
    if (st != GRAFT_OK) graft_st_close(a);
    return st;
}

graft_status graft_st_open(const char *path, graft_st_archive *a) { return st_open_one(path, NULL, 0, a); }

graft_status graft_st_open_mem(const char *name, const void *data, size_t size, graft_st_archive *a) {
    static const uint8_t none[1];
    return st_open_one(name, data ? data : none, data ? size : 0, a);
}

/* A shard named by an index must be a plain file name beside the index:
 * anything else could point a checkpoint at arbitrary files. */
static bool plain_file_name(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* For distinct_in_order: a name and where it first appears. */
typedef struct name_at {
    const char *name;
    int at;
} name_at;

static int cmp_name_at(const void *pa, const void *pb) {
    const name_at *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->at > b->at) - (a->at < b->at);
}

static int cmp_at(const void *pa, const void *pb) {
    const name_at *a = pa, *b = pb;
    return (a->at > b->at) - (a->at < b->at);
}

/* Keep the first occurrence of each name in v[0..n), in order; returns the
 * new count. Sorting makes it O(n log n): comparing each name with every
 * distinct one seen before was quadratic (an index of 40,000 shard names took
 * 4 s). Without memory for the sort the slow scan does the same job. */
static int distinct_in_order(const char **v, int n) {
    name_at *w = malloc(((size_t)n + 1) * sizeof *w);
    int m = 0;
    if (!w) {
        for (int i = 0; i < n; i++) {
            int j = 0;
            while (j < m && strcmp(v[j], v[i]) != 0) j++;
            if (j == m) v[m++] = v[i];
        }
        return m;
    }
    for (int i = 0; i < n; i++) w[i] = (name_at){v[i], i};
    qsort(w, (size_t)n, sizeof *w, cmp_name_at);
    for (int i = 0; i < n; i++)
        if (m == 0 || strcmp(w[m - 1].name, w[i].name) != 0) w[m++] = w[i];
    qsort(w, (size_t)m, sizeof *w, cmp_at);
    for (int i = 0; i < m; i++) v[i] = w[i].name;
    free(w);
    return m;
}

/* The index text idx_path holds; its shards are files in dir, or, when mem
 * is not NULL, the n_mem buffers it names (graft_st_open_index_mem). */
static graft_status open_index_text(const char *dir, const char *idx_path, const char *text, size_t len,
                                    const graft_st_mem_file *mem, int n_mem, graft_st_archive *a) {
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &endp, 0);
    if (!root) {
        size_t off = endp ? (size_t)(endp - text) : 0;
        return graft_fail(GRAFT_ERR_FORMAT, "%s: not valid JSON (error near byte offset %zu)", idx_path, off);
    }
    graft_status st = GRAFT_OK;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const char **shards = NULL;
    int n_shards = 0;
    if (!cJSON_IsObject(wm)) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: key \"weight_map\" missing or not an object", idx_path);
        goto done;
    }
    int n_entries = cJSON_GetArraySize(wm);
    shards = calloc((size_t)n_entries + 1, sizeof *shards);
    if (!shards) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", idx_path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", idx_path, e->string);
            goto done;
        }
        if (!plain_file_name(e->valuestring)) {
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: weight_map entry '%s': shard \"%s\" is not a plain file name",
                            idx_path, e->string, e->valuestring);
            goto done;
        }
        shards[n_shards++] = e->valuestring;
    }
    n_shards = distinct_in_order(shards, n_shards); /* each shard is opened once */
    if (n_shards == 0) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: \"weight_map\" is empty", idx_path);
        goto done;
    }
    a->files = calloc((size_t)n_shards, sizeof *a->files);
    if (!a->files) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", idx_path);
        goto done;
    }
    for (int j = 0; j < n_shards && st == GRAFT_OK; j++) {
        char *sp = graft_path_join(dir, shards[j]);
        if (!sp) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", idx_path);
            break;
        }
        /* later shards' metadata is dropped: the first one speaks for the set */
        char *meta = NULL;
        char **mp = j == 0 ? &a->metadata_json : &meta;
        if (!mem) {
            st = st_add_file(a, sp, mp);
        } else {
            int k = 0;
            while (k < n_mem && strcmp(mem[k].name, shards[j]) != 0) k++;
            st = k < n_mem ? st_add_mem(a, sp, mem[k].data, mem[k].size, mp)
                           : graft_fail(GRAFT_ERR_IO, "%s: cannot open: no such shard", sp);
        }
        free(meta);
        if (st != GRAFT_OK) graft_fail_prefix(st, "%s: shard \"%s\"", idx_path, shards[j]);
        free(sp);
    }
    if (st == GRAFT_OK) st = st_finish(a);
    /* Every tensor the index names must be in the shard it names. */
    if (st == GRAFT_OK) {
        cJSON_ArrayForEach(e, wm) {
            const graft_st_tensor *t = graft_st_find(a, e->string);
            if (!t) {
                st = graft_fail(GRAFT_ERR_FORMAT, "%s: weight_map names tensor '%s' in shard \"%s\", which lacks it",
                                idx_path, e->string, e->valuestring);
                break;
            }
            const char *sp = a->files[t->file_index].path;
            const char *base = strrchr(sp, '/');
            base = base ? base + 1 : sp;
            if (strcmp(base, e->valuestring) != 0) {
                st = graft_fail(GRAFT_ERR_FORMAT,
                                "%s: weight_map names tensor '%s' in shard \"%s\" but it is in \"%s\"", idx_path,
                                e->string, e->valuestring, base);
                break;
            }
        }
    }
done:
    free(shards);
    cJSON_Delete(root);
    return st;
}

static graft_status open_index(const char *dir, const char *idx_path, graft_st_archive *a) {
    char *text = NULL;
    size_t len = 0;
    GRAFT_TRY(graft_read_file(idx_path, &text, &len));
    graft_status st = open_index_text(dir, idx_path, text, len, NULL, 0, a);
    free(text);
    return st;
}

graft_status graft_st_open_index_mem(const char *dir, const char *text, size_t len, const graft_st_mem_file *shards,
                                     int n_shards, graft_st_archive *a) {
    memset(a, 0, sizeof *a);
    static const graft_st_mem_file none[1];
    char *idx_path = graft_path_join(dir, "model.safetensors.index.json");
    if (!idx_path) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    graft_status st = open_index_text(dir, idx_path, text, len, shards ? shards : none, shards ? n_shards : 0, a);
    if (st != GRAFT_OK) graft_st_close(a);
    free(idx_path);
    return st;
}

graft_status graft_st_open_dir(const char *dir, graft_st_archive *a) {
    memset(a, 0, sizeof *a);
    char *single = graft_path_join(dir, "model.safetensors");
    char *index = graft_path_join(dir, "model.safetensors.index.json");
    graft_status st;
    if (!single || !index) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    } else if (graft_path_exists(single)) {
        st = graft_st_open(single, a);
    } else if (graft_path_exists(index)) {
        st = open_index(dir, index, a);
        if (st != GRAFT_OK) graft_st_close(a);
    } else {
        st = graft_fail(GRAFT_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this folder", dir);
    }
    free(single);
    free(index);
    return st;
}

const graft_st_tensor *graft_st_find(const graft_st_archive *a, const char *name) {
    int lo = 0, hi = a->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(a->tensors[mid].name, name);
        if (c == 0) return &a->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

void graft_st_close(graft_st_archive *a) {
    if (!a) return;
    for (int i = 0; i < a->n_tensors; i++) free(a->tensors[i].name);
    free(a->tensors);
    if (a->files)
        for (int i = 0; i < a->n_files; i++) graft_unmap_file(&a->files[i]);
    free(a->files);
    free(a->metadata_json);
    memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------------------- writer */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_fmt_u64(strbuf *b, uint64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sb_add(b, tmp, (size_t)n);
}

/* A JSON string literal; bytes >= 0x80 pass through (the caller checked UTF-8). */
static void sb_json_str(strbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_add(b, esc, 2);
        } else if (*p < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)p, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static int cmp_item_ptr(const void *a, const void *b) {
    const graft_st_write_item *x = *(const graft_st_write_item *const *)a;
    const graft_st_write_item *y = *(const graft_st_write_item *const *)b;
    return strcmp(x->name, y->name);
}

static bool valid_text(const char *s) { return utf8_check((const uint8_t *)s, strlen(s)) == strlen(s); }

graft_status graft_st_write(const char *path, const graft_st_write_item *items, int n_items,
                            const char *const *meta_kv, int n_meta) {
    if (n_items < 0 || (n_items > 0 && !items) || n_meta < 0 || (n_meta > 0 && !meta_kv))
        return graft_fail(GRAFT_ERR_INVALID, "%s: bad item or metadata list", path);
    for (int i = 0; i < 2 * n_meta; i++)
        if (!meta_kv[i] || !valid_text(meta_kv[i]))
            return graft_fail(GRAFT_ERR_INVALID, "%s: metadata entry %d is NULL or not UTF-8", path, i / 2);

    size_t *numel = calloc((size_t)n_items + 1, sizeof *numel);
    const graft_st_write_item **order = calloc((size_t)n_items + 1, sizeof *order);
    strbuf hb = {0};
    uint8_t *out = NULL;
    graft_status st = GRAFT_OK;
    if (!numel || !order) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < n_items; i++) {
        const graft_st_write_item *it = &items[i];
        if (!it->name || !valid_text(it->name) || strcmp(it->name, "__metadata__") == 0) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: item %d: missing, non-UTF-8 or reserved tensor name", path, i);
            goto done;
        }
        if (it->dtype != GRAFT_F32 && it->dtype != GRAFT_F16 && it->dtype != GRAFT_BF16) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s': cannot store dtype %s (F32, F16, BF16 only)", path,
                            it->name, graft_dtype_name(it->dtype));
            goto done;
        }
        if (it->ndim < 0 || it->ndim > GRAFT_MAX_DIMS) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s': ndim %d out of range", path, it->name, it->ndim);
            goto done;
        }
        size_t ne = 1;
        for (int d = 0; d < it->ndim; d++) {
            if (it->shape[d] < 0 || (uint64_t)it->shape[d] > SIZE_MAX ||
                !graft_mul_size(ne, (size_t)it->shape[d], &ne)) {
                st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s': bad shape", path, it->name);
                goto done;
            }
        }
        if (ne > 0 && !it->data) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s': no data", path, it->name);
            goto done;
        }
        numel[i] = ne;
        order[i] = it;
    }
    /* Name order, as the reference writer does: the same tensors always give
     * the same bytes. */
    qsort(order, (size_t)n_items, sizeof *order, cmp_item_ptr);
    for (int i = 1; i < n_items; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s' given twice", path, order[i]->name);
            goto done;
        }

    sb_str(&hb, "{");
    if (n_meta > 0) {
        sb_str(&hb, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(&hb, ",");
            sb_json_str(&hb, meta_kv[2 * i]);
            sb_str(&hb, ":");
            sb_json_str(&hb, meta_kv[2 * i + 1]);
        }
        sb_str(&hb, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n_items; i++) {
        const graft_st_write_item *it = order[i];
        size_t nb;
        size_t ne = numel[it - items];
        if (!graft_mul_size(ne, graft_dtype_size(it->dtype), &nb) || off + nb < off) {
            st = graft_fail(GRAFT_ERR_INVALID, "%s: tensor '%s': too large", path, it->name);
            goto done;
        }
        if (i || n_meta > 0) sb_str(&hb, ",");
        sb_json_str(&hb, it->name);
        sb_str(&hb, ":{\"dtype\":\"");
        sb_str(&hb, graft_dtype_name(it->dtype));
        sb_str(&hb, "\",\"shape\":[");
        for (int d = 0; d < it->ndim; d++) {
            if (d) sb_str(&hb, ",");
            sb_fmt_u64(&hb, (uint64_t)it->shape[d]);
        }
        sb_str(&hb, "],\"data_offsets\":[");
        sb_fmt_u64(&hb, off);
        sb_str(&hb, ",");
        sb_fmt_u64(&hb, off + nb);
        sb_str(&hb, "]}");
        off += nb;
    }
    sb_str(&hb, "}");
    /* Pad with spaces so the data starts on an 8-byte boundary. */
    while (!hb.oom && (hb.len % 8) != 0) sb_str(&hb, " ");
    if (hb.oom) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    size_t total = 8 + hb.len + (size_t)off;
    if (total < off) {
        st = graft_fail(GRAFT_ERR_INVALID, "%s: file too large", path);
        goto done;
    }
    out = malloc(total);
    if (!out) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, total);
        goto done;
    }
    put_le64(out, hb.len);
    memcpy(out + 8, hb.s, hb.len);
    uint8_t *p = out + 8 + hb.len;
    for (int i = 0; i < n_items; i++) {
        const graft_st_write_item *it = order[i];
        size_t ne = numel[it - items];
        if (it->dtype == GRAFT_F32) {
            if (ne) memcpy(p, it->data, ne * 4);
            p += ne * 4;
        } else {
            graft_convert_from_f32(p, it->data, it->dtype, ne); /* F16 or BF16, little-endian */
            p += ne * 2;
        }
    }
    st = graft_write_file_atomic(path, out, total);
done:
    free(out);
    free(hb.s);
    free(order);
    free(numel);
    return st;
}
