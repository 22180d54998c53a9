/* tok_merge.c - the merge loop shared by GPT-2 BPE and llama2.c, in
 * O(n log n) with a heap so that long words (runs of spaces, minified text)
 * do not go quadratic. */
#include "tokenizer.h"

#include <stdlib.h>

struct tok_msym {
    int id, prev, next; /* id -1: merged into its left neighbour */
};

/* A possible merge of two adjacent symbols, with the ids it saw so that a
 * stale entry (either side merged since) is recognised when popped. */
struct tok_mcand {
    int rank, left, right, lid, rid, merged;
};

typedef struct tok_msym msym;
typedef struct tok_mcand mcand;

/* Positions only move right in the list, so "leftmost first" is the
 * smaller left index. */
static bool cand_before(const mcand *a, const mcand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(tok_merge_work *w, mcand c) {
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static mcand heap_pop(tok_merge_work *w) {
    mcand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

int *tok_merge_ids(tok_merge_work *w, size_t n) {
    if (n > (size_t)INT32_MAX / 4) return NULL;
    if (n <= w->cap) return w->init;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    int *init = realloc(w->init, cap * sizeof *init);
    if (init) w->init = init;
    msym *sym = realloc(w->sym, cap * sizeof *sym);
    if (sym) w->sym = sym;
    /* n - 1 initial pairs plus two new ones per merge (at most n - 1). */
    mcand *heap = realloc(w->heap, 3 * cap * sizeof *heap);
    if (heap) w->heap = heap;
    if (!init || !sym || !heap) return NULL;
    w->cap = cap;
    return w->init;
}

static void try_pair(tok_merge_work *w, tok_pair_fn pair, const void *ctx, int left, int right) {
    int rank, merged;
    if (left < 0 || right < 0) return;
    int a = w->sym[left].id, b = w->sym[right].id;
    if (pair(ctx, a, b, &rank, &merged)) heap_push(w, (mcand){rank, left, right, a, b, merged});
}

bool tok_merge_run(tok_merge_work *w, size_t n, tok_pair_fn pair, const void *ctx, tok_ids *out) {
    if (n == 0) return true;
    for (size_t i = 0; i < n; i++) w->sym[i] = (msym){w->init[i], (int)i - 1, i + 1 < n ? (int)i + 1 : -1};
    w->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(w, pair, ctx, (int)i, (int)i + 1);
    while (w->n_heap > 0) {
        mcand c = heap_pop(w);
        msym *l = &w->sym[c.left], *r = &w->sym[c.right];
        if (l->id != c.lid || r->id != c.rid || l->next != c.right) continue;
        l->id = c.merged;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = c.left;
        try_pair(w, pair, ctx, l->prev, c.left);
        try_pair(w, pair, ctx, c.left, l->next);
    }
    size_t count = 0;
    for (int i = 0; i >= 0; i = w->sym[i].next) count++;
    if (!tok_ids_reserve(out, count)) return false;
    for (int i = 0; i >= 0; i = w->sym[i].next) out->v[out->n++] = w->sym[i].id;
    return true;
}

void tok_merge_free(tok_merge_work *w) {
    free(w->init);
    free(w->sym);
    free(w->heap);
    w->init = NULL;
    w->sym = NULL;
    w->heap = NULL;
    w->cap = w->n_heap = 0;
}
