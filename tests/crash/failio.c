/* failio.c - LD_PRELOAD "disk full" injector for tests/cli_crash.py.
 *
 *   GRAFT_IOFAIL_AT=k     from the k-th write call (1-based) on a regular file
 *                         on, the disk is full: that call writes half of what
 *                         it was asked (a short write, as a filling disk
 *                         gives) or fails when asked for one byte, and every
 *                         later write or fsync on a regular file fails with
 *                         errno = GRAFT_IOFAIL_ERRNO (default ENOSPC). The
 *                         disk stays full: a program that retries gets the
 *                         same answer.
 *   GRAFT_IOFAIL_ERRNO=n  the errno to give (28 ENOSPC, 122 EDQUOT, 5 EIO).
 *   GRAFT_IOFAIL_COUNT=1  print "failio: N write calls" to stderr at exit.
 *
 * Counted: write, pwrite, pwrite64, writev, pwritev on file descriptors that
 * fstat() calls regular files and that are not 0, 1 or 2 (the test reads the
 * error message from stderr, which may be redirected to a file). That covers
 * graft's own writers (graft_write_file_atomic, results.jsonl) and SQLite's
 * unix VFS, which calls write/pwrite through the dynamic linker. stdio's
 * fwrite reaches the kernel through libc-internal calls that a preload
 * cannot see: graft writes its state files with write(2), so none of them is
 * missed (the few fopen/fwrite writers are logs and exports, not run state).
 *
 * Built by cli_crash.py: cc -shared -fPIC -O1 failio.c -o failio.so -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static atomic_ulong calls;
static unsigned long fail_at; /* 0: never */
static int fail_errno = ENOSPC, count_at_exit;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void report(void) {
    if (count_at_exit) {
        char line[64];
        int n = snprintf(line, sizeof line, "failio: %lu write calls\n", (unsigned long)atomic_load(&calls));
        if (real_write && n > 0) real_write(2, line, (size_t)n);
    }
}

__attribute__((constructor)) static void init(void) {
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off64_t))dlsym(RTLD_NEXT, "pwrite64");
    real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    real_pwritev = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *s = getenv("GRAFT_IOFAIL_AT");
    if (s) fail_at = strtoul(s, NULL, 10);
    s = getenv("GRAFT_IOFAIL_ERRNO");
    if (s) fail_errno = atoi(s);
    s = getenv("GRAFT_IOFAIL_COUNT");
    count_at_exit = s && *s == '1';
    atexit(report);
}

static int is_file(int fd) {
    struct stat sb;
    return fd > 2 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* How much of a write of n bytes to fd may go through: n (no fault), n/2
 * (the call that fills the disk), or -1 (full: fail with fail_errno). */
static ssize_t allowed(int fd, size_t n) {
    if (!is_file(fd)) return (ssize_t)n;
    unsigned long k = atomic_fetch_add(&calls, 1) + 1;
    if (!fail_at || k < fail_at) return (ssize_t)n;
    if (k == fail_at && n > 1) return (ssize_t)(n / 2);
    errno = fail_errno;
    return -1;
}

ssize_t write(int fd, const void *buf, size_t n) {
    ssize_t a = allowed(fd, n);
    return a < 0 ? -1 : real_write(fd, buf, (size_t)a);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    ssize_t a = allowed(fd, n);
    return a < 0 ? -1 : real_pwrite(fd, buf, (size_t)a, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    ssize_t a = allowed(fd, n);
    return a < 0 ? -1 : real_pwrite64(fd, buf, (size_t)a, off);
}

/* vectored writes: all or nothing (a short count would need splitting iovecs) */
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    if (allowed(fd, n) != (ssize_t)n) {
        errno = fail_errno;
        return -1;
    }
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    if (allowed(fd, n) != (ssize_t)n) {
        errno = fail_errno;
        return -1;
    }
    return real_pwritev(fd, iov, cnt, off);
}

/* once the disk is full, flushing fails too (not counted as a write) */
static int full(int fd) { return fail_at && atomic_load(&calls) >= fail_at && is_file(fd); }

int fsync(int fd) {
    if (full(fd)) {
        errno = fail_errno;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    if (full(fd)) {
        errno = fail_errno;
        return -1;
    }
    return real_fdatasync(fd);
}
