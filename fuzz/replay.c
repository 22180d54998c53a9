/* replay.c - a main() for the fuzz harnesses outside libFuzzer: each argument
 * is a file or a folder of files, every file is fed to the harness once. CTest
 * replays the seed corpora and every regression input (fuzz/regress/) this
 * way in the normal and the sanitizer builds, so a crash found by fuzzing stays
 * fixed without clang. */
#include "fuzz.h"

#include <dirent.h>

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            uint8_t *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    fclose(f);
    if (!buf) return 1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int files = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        if (access(argv[i], F_OK)) continue; /* no regression inputs (yet) for this harness */
        DIR *d = opendir(argv[i]);
        if (!d) {
            bad += replay_file(argv[i]), files++;
            continue;
        }
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            bad += replay_file(path), files++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", files);
    return bad ? 1 : 0;
}
