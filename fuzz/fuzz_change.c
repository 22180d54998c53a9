/* fuzz_change.c - journal change records: replay of an arbitrary blob into a
 * GRACE, MELO and FT editor on stories260K (the input's first byte picks
 * the editor). A record that replays is then reverted (undo). */
#include "fuzz.h"
#include "edit/editor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static graft_model *m;
    static const char *const methods[] = {"grace", "melo", "ft"};
    static const char *const opts[] = {"{\"layer\": 2}", "{\"blocks\": 4}", "{}"};
    if (!m && graft_model_load(fuzz_data("stories260K.bin"), &m) != GRAFT_OK) {
        fprintf(stderr, "fuzz_change: %s\n", graft_last_error());
        abort();
    }
    if (size < 1) return 0;
    int k = data[0] % 3;
    graft_editor *e = NULL;
    if (graft_editor_create(m, methods[k], opts[k], &e) != GRAFT_OK) {
        fprintf(stderr, "fuzz_change: %s\n", graft_last_error());
        abort();
    }
    if (e->ops->replay(e, data + 1, size - 1) == GRAFT_OK) {
        if (e->ops->reset) e->ops->reset(e);
        else if (e->ops->revert) e->ops->revert(e, data + 1, size - 1);
    } else if (e->ops->reset) {
        e->ops->reset(e);
    }
    e->ops->free(e);
    return 0;
}
