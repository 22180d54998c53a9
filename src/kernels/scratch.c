/*
 * scratch.c - per-thread buffers that live from one product to the next.
 *
 * A fresh multi-megabyte allocation is a new mapping whose pages fault in
 * again on every product (expensive in a VM), so the kernels that need room
 * (the widened weight slices of wmat.c, the per-band partial sums of the
 * batch-1 GEMVs) keep one growing buffer per thread and slot, freed when the
 * thread ends (a pthread key's destructor). Slots are separate so that a
 * caller holding one can still call a kernel that takes another.
 */
#include "internal.h"
#include "kernels.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct scratch_buf {
    float *p[GRAFT_SCRATCH_SLOTS];
    size_t cap[GRAFT_SCRATCH_SLOTS];
} scratch_buf;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_free(void *v) {
    scratch_buf *b = v;
    for (int s = 0; s < GRAFT_SCRATCH_SLOTS; s++) graft_free_aligned(b->p[s]);
    free(b);
}

static void scratch_key_init(void) { scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

float *graft_scratch(int slot, size_t n) {
    if (slot < 0 || slot >= GRAFT_SCRATCH_SLOTS) return NULL;
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_ok) return NULL;
    scratch_buf *b = pthread_getspecific(scratch_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b || pthread_setspecific(scratch_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    if (b->cap[slot] < n) {
        graft_free_aligned(b->p[slot]);
        b->cap[slot] = 0;
        b->p[slot] = graft_alloc_aligned(n * sizeof(float));
        if (b->p[slot]) b->cap[slot] = n;
    }
    return b->p[slot];
}
