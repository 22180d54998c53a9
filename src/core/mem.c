/* mem.c - aligned allocation. 64-byte alignment suits AVX-512 loads and cache lines. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *graft_alloc_aligned(size_t bytes) {
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
    if (rounded < bytes) return NULL;
    return aligned_alloc(64, rounded);
}

#define HUGE_PAGE ((size_t)2 << 20)

/* A decode step appends one row per layer to the KV cache, so its pages are
 * first touched one by one during the decode: in a VM each 4 KiB fault cost
 * microseconds, about 5% of a GPT-2 F16 decode step (perf, bench/README.md).
 * With transparent huge pages in "madvise" mode (this machine's) or
 * "always", the madvise below makes them 2 MiB; with "never" it does
 * nothing. */
void *graft_alloc_huge(size_t bytes) {
    if (bytes < HUGE_PAGE) return graft_alloc_aligned(bytes);
    size_t rounded = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(HUGE_PAGE, rounded);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
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
