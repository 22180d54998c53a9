/* fuzz_safetensors.c - a .safetensors file: header length, JSON header,
 * dtypes, shapes, offsets against the file size. graft_st_open_mem is the
 * parser graft_st_open runs on its mapping, fed the input in place: no file
 * per input, and ASan sees a read one byte past the end (a mapping would
 * hide it up to the page's end). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    graft_st_archive a;
    memset(&a, 0, sizeof a);
    if (graft_st_open_mem("x.safetensors", data, size, &a) == GRAFT_OK) {
        /* every tensor the table promises lies inside the input: touch its ends */
        fuzz_touch_tensors(&a);
        graft_st_close(&a);
    }
    return 0;
}
