/* failmalloc.c - LD_PRELOAD allocation-failure injector for tests/oom/run.sh.
 *
 *   GRAFT_FAIL_AT=k     the k-th allocation call (1-based, counted from the
 *                       entry of main) of malloc/calloc/realloc/posix_memalign/
 *                       aligned_alloc/memalign/strdup/strndup returns NULL with
 *                       errno = ENOMEM; every other call succeeds.
 *   GRAFT_FAIL_COUNT=1  print "failmalloc: N allocation calls" to stderr at exit.
 *   GRAFT_FAIL_LOG=1    print the failed call's kind and site (the caller's
 *                       object+offset: `addr2line -fe OBJ OFF`) when it fails;
 *                       GRAFT_FAIL_LOG=trap also raises SIGTRAP there, for
 *                       `gdb -batch -ex run -ex bt --args graft ...`.
 *   GRAFT_FAIL_SITES=FILE  at exit, write one line "K OBJ+OFF OBJ+OFF" per
 *                       distinct allocation site: the first call number K that
 *                       came from it, its caller and its caller's caller (two
 *                       frames, so a wrapper such as graft_alloc_aligned is
 *                       told apart by who called it). run.sh fails each K.
 *   GRAFT_FAIL_FROM=start  count from process start instead, i.e. include the
 *                       shared libraries' constructors (GnuTLS, libgomp, ...),
 *                       which are not graft's code and make ~1,300 calls.
 *
 * Built by run.sh with `cc -shared -fPIC -O1 failmalloc.c -o failmalloc.so -ldl`
 * and used against a non-sanitized build (ASan replaces malloc itself).
 * realloc(p, 0) and free() are not counted. Counting is process-wide and not
 * thread-ordered: with threads, the k-th call is whichever thread gets there. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static atomic_ulong calls;
static unsigned long fail_at;   /* 0: never */
static int count_at_exit, log_fail;
static const char *sites_path;

/* distinct sites: (caller, caller's caller) -> first call number */
#define NSITE 65536
static struct site { void *a, *b; unsigned long k; } sites[NSITE];
static _Thread_local int in_trace;

static void record_site(void *caller, unsigned long k)
{
    if (!sites_path || in_trace) return;
    in_trace = 1;
    void *fr[8];
    int n = backtrace(fr, 8), i = 0;
    while (i < n && fr[i] != caller) i++;     /* skip the frames inside this file */
    void *b = i + 1 < n ? fr[i + 1] : NULL;
    size_t h = (((uintptr_t)caller >> 2) * 0x9E3779B97F4A7C15u ^ ((uintptr_t)b >> 2) * 0xC2B2AE3D27D4EB4Fu) >> 7;
    for (size_t j = 0; j < NSITE; j++) {
        struct site *e = &sites[(h + j) % NSITE];
        if (e->k == 0) { e->a = caller; e->b = b; e->k = k; break; }
        if (e->a == caller && e->b == b) break;
    }
    in_trace = 0;
}

static int fmt_addr(char *buf, size_t cap, void *p)
{
    Dl_info info;
    if (p && dladdr(p, &info) && info.dli_fname)
        return snprintf(buf, cap, "%s+0x%lx", info.dli_fname, (unsigned long)((char *)p - (char *)info.dli_fbase));
    return snprintf(buf, cap, "?");
}

static void write_sites(void)
{
    int fd = open(sites_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    for (size_t j = 0; j < NSITE; j++) {
        if (!sites[j].k) continue;
        char a[300], b[300], line[700];
        fmt_addr(a, sizeof a, sites[j].a);
        fmt_addr(b, sizeof b, sites[j].b);
        int len = snprintf(line, sizeof line, "%lu %s %s\n", sites[j].k, a, b);
        if (len > 0) { ssize_t w = write(fd, line, (size_t)len); (void)w; }
    }
    close(fd);
}
static int initialised, initialising;
static volatile int counting;   /* 0 until main starts (unless GRAFT_FAIL_FROM=start) */

/* dlsym may call calloc before real_calloc is known: serve it from here */
static _Alignas(max_align_t) unsigned char boot[8192];
static size_t boot_used;

static int from_boot(const void *p)
{
    return (const unsigned char *)p >= boot && (const unsigned char *)p < boot + sizeof boot;
}

static void *boot_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n > sizeof boot - boot_used) return NULL;
    void *p = boot + boot_used;
    boot_used += n;
    return p;
}

static void report(void)
{
    counting = 0;
    if (sites_path) write_sites();
    if (!count_at_exit) return;
    char buf[96];
    int len = snprintf(buf, sizeof buf, "failmalloc: %lu allocation calls\n",
                       (unsigned long)atomic_load(&calls));
    if (len > 0) { ssize_t w = write(2, buf, (size_t)len); (void)w; }
}

/* read again when main starts: under ASan, init() runs before the environment is readable */
static void read_env(void)
{
    const char *s = getenv("GRAFT_FAIL_AT");
    fail_at = s ? strtoul(s, NULL, 10) : 0;
    s = getenv("GRAFT_FAIL_COUNT");
    count_at_exit = s && *s && *s != '0';
    s = getenv("GRAFT_FAIL_LOG");
    log_fail = !s || !*s || *s == '0' ? 0 : strcmp(s, "trap") == 0 ? 2 : 1;
    sites_path = getenv("GRAFT_FAIL_SITES");
    if (sites_path && !*sites_path) sites_path = NULL;
    s = getenv("GRAFT_FAIL_FROM");
    counting = s && strcmp(s, "start") == 0;
}

static void init(void)
{
    if (initialised || initialising) return;
    initialising = 1;
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    initialising = 0;
    initialised = 1;
    read_env();
    atomic_store(&calls, 0);   /* count from here: calls during dlsym are not the program's */
    if (counting && (count_at_exit || sites_path)) atexit(report);
}

/* 1 when this call must fail */
static int should_fail(const char *what, void *caller)
{
    if (!counting) return 0;
    unsigned long n = atomic_fetch_add(&calls, 1) + 1;
    record_site(caller, n);
    if (fail_at == 0 || n != fail_at) return 0;
    if (log_fail) {
        char buf[512];
        Dl_info info;
        int len;
        if (caller && dladdr(caller, &info) && info.dli_fname)
            len = snprintf(buf, sizeof buf, "failmalloc: failing call %lu (%s) site %s+0x%lx\n", n, what,
                           info.dli_fname, (unsigned long)((char *)caller - (char *)info.dli_fbase));
        else
            len = snprintf(buf, sizeof buf, "failmalloc: failing call %lu (%s)\n", n, what);
        if (len > 0) { ssize_t w = write(2, buf, (size_t)len); (void)w; }
        if (log_fail == 2) raise(SIGTRAP);
    }
    return 1;
}

static void *malloc_from(size_t n, const char *what, void *caller)
{
    if (!initialised) {
        if (initialising) return boot_alloc(n);
        init();
    }
    if (should_fail(what, caller)) { errno = ENOMEM; return NULL; }
    return real_malloc(n);
}

void *malloc(size_t n)
{
    return malloc_from(n, "malloc", __builtin_return_address(0));
}

void *calloc(size_t a, size_t b)
{
    if (!initialised) {
        if (initialising) {
            if (b && a > SIZE_MAX / b) return NULL;
            return boot_alloc(a * b);   /* static storage is zeroed */
        }
        init();
    }
    if (should_fail("calloc", __builtin_return_address(0))) { errno = ENOMEM; return NULL; }
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (!initialised) init();
    if (from_boot(p)) {   /* move a bootstrap block to the real heap */
        void *q = real_malloc(n);
        size_t left = (size_t)(boot + sizeof boot - (unsigned char *)p);
        if (q) memcpy(q, p, n < left ? n : left);
        return q;
    }
    if (n != 0 && should_fail("realloc", __builtin_return_address(0))) { errno = ENOMEM; return NULL; }
    return real_realloc(p, n);
}

void free(void *p)
{
    if (!p || from_boot(p)) return;
    if (!initialised) init();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (!initialised) init();
    if (should_fail("posix_memalign", __builtin_return_address(0))) return ENOMEM;
    return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    if (!initialised) init();
    if (should_fail("aligned_alloc", __builtin_return_address(0))) { errno = ENOMEM; return NULL; }
    return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
    if (!initialised) init();
    if (should_fail("memalign", __builtin_return_address(0))) { errno = ENOMEM; return NULL; }
    return real_memalign(align, n);
}

/* glibc's strdup calls malloc internally through a PLT-free path, so count it here */
char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc_from(n, "strdup", __builtin_return_address(0));
    if (d) memcpy(d, s, n);
    return d;
}

char *strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *d = malloc_from(n + 1, "strndup", __builtin_return_address(0));
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

/* start counting when main is entered: wrap main through __libc_start_main */
static int (*real_main)(int, char **, char **);

static int main_hook(int argc, char **argv, char **envp)
{
    read_env();
    if (count_at_exit || sites_path) atexit(report);   /* before counting: atexit may allocate */
    if (sites_path) { void *fr[2]; backtrace(fr, 2); }  /* its first call loads libgcc_s (mallocs) */
    atomic_store(&calls, 0);
    counting = 1;
    return real_main(argc, argv, envp);
}

typedef int (*start_main_fn)(int (*)(int, char **, char **), int, char **,
                             void (*)(void), void (*)(void), void (*)(void), void *);

int __libc_start_main(int (*main)(int, char **, char **), int argc, char **argv,
                      void (*init_fn)(void), void (*fini)(void), void (*rtld_fini)(void),
                      void *stack_end)
{
    if (!initialised) init();
    start_main_fn real_start = (start_main_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    real_main = main;
    return real_start(counting ? main : main_hook, argc, argv, init_fn, fini, rtld_fini, stack_end);
}
