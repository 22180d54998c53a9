/* test_core.c - errors, aligned memory, file mapping and atomic writes. */
#include "internal.h"
#include "test.h"

#include <unistd.h>

int main(void) {
    /* error messages carry context and survive until the next failure */
    graft_clear_error();
    CHECK(graft_last_error()[0] == '\0');
    CHECK(graft_fail(GRAFT_ERR_FORMAT, "x.json: field %s", "n_embd") == GRAFT_ERR_FORMAT);
    CHECK(strcmp(graft_last_error(), "x.json: field n_embd") == 0);
    graft_fail_prefix(GRAFT_ERR_FORMAT, "loading %s", "model");
    CHECK(strcmp(graft_last_error(), "loading model: x.json: field n_embd") == 0);

    size_t prod;
    CHECK(graft_mul_size(1u << 20, 1u << 10, &prod) && prod == (size_t)1 << 30);
    CHECK(!graft_mul_size(SIZE_MAX / 2, 3, &prod));

    float *p = graft_alloc_aligned(1000);
    CHECK(p != NULL && ((uintptr_t)p % 64) == 0);
    graft_free_aligned(p);

    /* atomic write then map it back */
    char path[] = "/tmp/graft_test_coreXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    const char msg[] = "hello graft";
    CHECK_OK(graft_write_file_atomic(path, msg, sizeof msg));
    graft_mapped_file mf;
    CHECK_OK(graft_map_file(path, &mf));
    CHECK(mf.size == sizeof msg && memcmp(mf.data, msg, sizeof msg) == 0);
    mf.data[0] = 'J'; /* private mapping: writable, never reaches the file */
    graft_unmap_file(&mf);
    char *back = NULL;
    size_t n = 0;
    CHECK_OK(graft_read_file(path, &back, &n));
    CHECK(n == sizeof msg && back[0] == 'h');
    free(back);
    unlink(path);

    CHECK_FAILS(graft_map_file("/nonexistent/graft", &mf), GRAFT_ERR_IO, "/nonexistent/graft");
    return test_finish("test_core");
}
