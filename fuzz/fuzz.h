/*
 * fuzz.h - what every libFuzzer harness in fuzz/ shares: a private scratch
 * folder (parsers that take a path get the input written to a file there)
 * and the test data folder. Each harness defines LLVMFuzzerTestOneInput and
 * returns 0 whatever the parser said: a clean refusal is the expected result,
 * a crash, a sanitizer report or a hang is the bug (make fuzz; docs/RELIABILITY.md).
 */
#ifndef GRAFT_FUZZ_H
#define GRAFT_FUZZ_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp: every harness includes this header first */
#endif
#include "graft.h"
#include "internal.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((unused)) static char fuzz_dir_path[64];

__attribute__((unused)) static int fuzz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* At exit: /dev/shm is memory, and every harness process makes a folder. */
__attribute__((unused)) static void fuzz_dir_remove(void) {
    if (fuzz_dir_path[0]) nftw(fuzz_dir_path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A folder of this process's own (removed at a normal exit), in memory
 * (/dev/shm) where there is one: the harnesses that must go through files
 * write one per input, and on a disk file system that, not the parser, is
 * most of the time. */
__attribute__((unused)) static const char *fuzz_dir(void) {
    char *dir = fuzz_dir_path;
    if (!dir[0]) {
        struct stat sb;
        snprintf(dir, sizeof fuzz_dir_path, "%s/graft_fuzz.XXXXXX",
                 stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir)) abort(); /* the harness's own setup, not graft */
        atexit(fuzz_dir_remove);
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

/* Read the first and last byte of every tensor an archive promises, so that
 * ASan sees a table that points outside its input. */
__attribute__((unused)) static void fuzz_touch_tensors(const graft_st_archive *a) {
    volatile uint8_t sink = 0;
    for (int i = 0; i < a->n_tensors; i++)
        if (a->tensors[i].nbytes)
            sink ^= ((const uint8_t *)a->tensors[i].data)[0] ^ ((const uint8_t *)a->tensors[i].data)[a->tensors[i].nbytes - 1];
    (void)sink;
}

#endif
