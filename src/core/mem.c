/* mem.c - aligned allocation. 64-byte alignment suits AVX-512 loads and cache lines. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void *graft_alloc_aligned(size_t bytes) {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
    if (rounded < bytes) return NULL;
    return aligned_alloc(64, rounded);
}

void *graft_calloc_aligned(size_t bytes) {
    void *p = graft_alloc_aligned(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void graft_free_aligned(void *p) { free(p); }

bool graft_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
