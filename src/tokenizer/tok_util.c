/* tok_util.c - hash tables, growable buffers and strict UTF-8 for the tokenizers. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* ================================================================ string map */

static uint32_t hash_bytes(const char *s, size_t n) {
    /* FNV-1a, folded to 32 bits; the final mix spreads short keys over the
     * low bits that index the table. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    return (uint32_t)(h ^ (h >> 32));
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

bool tok_map_init(tok_map *m, size_t expected) {
    m->cap = pow2_at_least(expected * 2 + 1);
    m->count = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    return m->e != NULL;
}

void tok_map_free(tok_map *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

static tok_map_entry *map_slot(const tok_map *m, const char *key, size_t len, uint32_t h) {
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        tok_map_entry *e = &m->e[i];
        if (!e->key) return e;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) return e;
    }
}

static bool map_grow(tok_map *m) {
    tok_map bigger = {calloc(m->cap * 2, sizeof *m->e), m->cap * 2, m->count};
    if (!bigger.e) return false;
    for (size_t i = 0; i < m->cap; i++) {
        tok_map_entry *e = &m->e[i];
        if (e->key) *map_slot(&bigger, e->key, e->len, e->hash) = *e;
    }
    free(m->e);
    *m = bigger;
    return true;
}

static bool map_insert(tok_map *m, const char *key, size_t len, int64_t val, bool overwrite) {
    if ((m->count + 1) * 2 > m->cap && !map_grow(m)) return false;
    uint32_t h = hash_bytes(key, len);
    tok_map_entry *e = map_slot(m, key, len, h);
    if (e->key) {
        if (overwrite) e->val = val;
        return true;
    }
    *e = (tok_map_entry){key, (uint32_t)len, h, val};
    m->count++;
    return true;
}

bool tok_map_put(tok_map *m, const char *key, size_t len, int64_t val) {
    return map_insert(m, key, len, val, true);
}

bool tok_map_put_first(tok_map *m, const char *key, size_t len, int64_t val) {
    return map_insert(m, key, len, val, false);
}

bool tok_map_get(const tok_map *m, const char *key, size_t len, int64_t *val) {
    if (!m->e) return false;
    tok_map_entry *e = map_slot(m, key, len, hash_bytes(key, len));
    if (!e->key) return false;
    *val = e->val;
    return true;
}

/* ================================================================ pair map */

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static size_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static bool pairmap_alloc(tok_pairmap *m, size_t cap) {
    m->e = malloc(cap * sizeof *m->e);
    if (!m->e) return false;
    for (size_t i = 0; i < cap; i++) m->e[i].rank = -1;
    m->cap = cap;
    m->count = 0;
    return true;
}

bool tok_pairmap_init(tok_pairmap *m, size_t expected) {
    return pairmap_alloc(m, pow2_at_least(expected * 2 + 1));
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

static tok_pair_entry *pair_slot(const tok_pairmap *m, uint64_t key) {
    size_t mask = m->cap - 1;
    for (size_t i = pair_hash(key) & mask;; i = (i + 1) & mask) {
        tok_pair_entry *e = &m->e[i];
        if (e->rank < 0 || e->key == key) return e;
    }
}

static bool pairmap_grow(tok_pairmap *m) {
    tok_pairmap bigger;
    if (!pairmap_alloc(&bigger, m->cap * 2)) return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].rank >= 0) *pair_slot(&bigger, m->e[i].key) = m->e[i];
    bigger.count = m->count;
    free(m->e);
    *m = bigger;
    return true;
}

bool tok_pairmap_put(tok_pairmap *m, int a, int b, int rank, int id) {
    if ((m->count + 1) * 2 > m->cap && !pairmap_grow(m)) return false;
    uint64_t key = pair_key(a, b);
    tok_pair_entry *e = pair_slot(m, key);
    if (e->rank < 0) m->count++;
    *e = (tok_pair_entry){key, rank, id};
    return true;
}

bool tok_pairmap_get(const tok_pairmap *m, int a, int b, int *rank, int *id) {
    if (!m->e) return false;
    tok_pair_entry *e = pair_slot(m, pair_key(a, b));
    if (e->rank < 0) return false;
    *rank = e->rank;
    *id = e->id;
    return true;
}

/* ================================================================ buffers */

bool tok_ids_reserve(tok_ids *a, size_t extra) {
    if (extra <= a->cap - a->n) return true;
    size_t cap = a->cap ? a->cap : 64;
    while (cap - a->n < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(int)) return false;
        cap *= 2;
    }
    int *v = realloc(a->v, cap * sizeof *v);
    if (!v) return false;
    a->v = v;
    a->cap = cap;
    return true;
}

bool tok_ids_push(tok_ids *a, int id) {
    if (!tok_ids_reserve(a, 1)) return false;
    a->v[a->n++] = id;
    return true;
}

bool tok_bytes_append(tok_bytes *b, const void *data, size_t len) {
    if (len > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < len) {
            if (cap > SIZE_MAX / 2) return false;
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    return true;
}

/* ================================================================ UTF-8 */

size_t tok_utf8_decode(const uint8_t *s, size_t n, int32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    int32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
    else {
        *cp = -1;
        return 1;
    }
    if (n < len) {
        *cp = -1;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = -1;
        return 1;
    }
    *cp = v;
    return len;
}

size_t tok_utf8_encode(int32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}
