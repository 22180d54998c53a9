/* blob.c - growable byte buffers for change records, and a bounds-checked
 * reader, so a corrupt journal row fails with a message instead of a crash. */
#include "editor.h"

#include <stdlib.h>
#include <string.h>

void graft_blob_free(graft_blob *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

graft_status graft_blob_put(graft_blob *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) return graft_fail(GRAFT_ERR_NOMEM, "change record: out of memory");
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return GRAFT_OK;
}

graft_status graft_blob_get(graft_blob_reader *r, void *dst, size_t n) {
    if (n > r->len - r->at)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: truncated at byte %zu (need %zu more, %zu left)", r->what, r->at, n,
                          r->len - r->at);
    memcpy(dst, r->p + r->at, n);
    r->at += n;
    return GRAFT_OK;
}
