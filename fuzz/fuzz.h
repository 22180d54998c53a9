/*
 * fuzz.h - what every libFuzzer harness in fuzz/ shares: a private scratch
 * folder (parsers that take a path get the input written to a file there)
 * and the test data folder. Each harness defines LLVMFuzzerTestOneInput and
 * returns 0 whatever the parser said: a clean refusal is the expected result,
 * a crash, a sanitizer report or a hang is the bug (make fuzz; docs/RELIABILITY.md).
 */
#ifndef GRAFT_FUZZ_H
#define GRAFT_FUZZ_H
#include "graft.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A folder of this process's own (removed at exit). */
__attribute__((unused)) static const char *fuzz_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/graft_fuzz.XXXXXX");
        if (!mkdtemp(dir)) abort(); /* the harness's own setup, not graft */
    }
    return dir;
}

/* dir/name, holding the fuzz input; the path is static (one per name). */
__attribute__((unused)) static const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

__attribute__((unused)) static const char *fuzz_data(const char *rel) {
    static char path[1024];
    const char *root = getenv("GRAFT_TEST_DATA");
    snprintf(path, sizeof path, "%s/%s", root ? root : GRAFT_TEST_DATA, rel);
    return path;
}

#endif
