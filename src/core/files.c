/* files.c - mapping, reading and atomically writing files. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

graft_status graft_map_file(const char *path, graft_mapped_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return graft_fail(GRAFT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return graft_fail(GRAFT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return graft_fail(GRAFT_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        /* PROT_WRITE + MAP_PRIVATE: editors may patch weights in place; pages are
         * copied on first write and the file on disk never changes. */
        void *p = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return graft_fail(GRAFT_ERR_IO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(e));
        }
        f->data = p;
    }
    close(fd);
    f->path = strdup(path);
    if (!f->path) {
        graft_unmap_file(f);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    return GRAFT_OK;
}

void graft_unmap_file(graft_mapped_file *f) {
    if (!f) return;
    if (f->data) munmap(f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

graft_status graft_read_file(const char *path, char **data, size_t *size) {
    *data = NULL;
    if (size) *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) /* fopen mallocs its FILE: ENOMEM is not "no such file" to callers that skip missing ones */
        return graft_fail(errno == ENOMEM ? GRAFT_ERR_NOMEM : GRAFT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(fp);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        return graft_fail(GRAFT_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    if (size) *size = n;
    return GRAFT_OK;
}

int graft_write_all(int fd, const void *data, size_t size) {
    const uint8_t *p = data;
    while (size > 0) {
        const ssize_t w = write(fd, p, size);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return EIO;
        p += w;
        size -= (size_t)w;
    }
    return 0;
}

graft_status graft_write_file_atomic(const char *path, const void *data, size_t size) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const int err = graft_write_all(fd, data, size);
    if (err) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        close(fd);
        unlink(tmp);
        free(tmp);
        return st;
    }
    /* fsync before rename: after a crash either the old or the new file is there, whole. */
    if (fsync(fd) != 0 || close(fd) != 0) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: fsync/close failed: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    /* the new name itself must survive a power cut: flush the folder (tmp
     * is reused as the folder's path) */
    char *slash = strrchr(tmp, '/');
    if (slash == tmp) slash[1] = 0;
    else if (slash) *slash = 0;
    graft_fsync_dir(slash ? tmp : ".");
    free(tmp);
    return GRAFT_OK;
}

void graft_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

bool graft_path_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool graft_path_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

char *graft_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

char *graft_path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

graft_status graft_mkdir_p(const char *path) {
    if (!path || !*path) return graft_fail(GRAFT_ERR_INVALID, "mkdir: empty path");
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    memcpy(p, path, n + 1);
    /* create each prefix in turn; an existing folder on the way is fine */
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char keep = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            graft_status st = graft_fail(GRAFT_ERR_IO, "%s: cannot create the folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        p[i] = keep;
    }
    free(p);
    if (!graft_path_is_dir(path)) return graft_fail(GRAFT_ERR_IO, "%s: exists and is not a folder", path);
    return GRAFT_OK;
}
