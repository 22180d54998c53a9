/*
 * test.h - the tiny test harness shared by tests/test_*.c.
 *
 * CHECK-style macros record a failure with file:line and carry on, so one run
 * shows every broken check; test_main() returns non-zero when anything
 * failed, and prints the plain "N passed, N failed" closing line.
 */
#ifndef GRAFT_TEST_H
#define GRAFT_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int t_pass, t_fail;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) t_pass++;                                                              \
        else {                                                                           \
            t_fail++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (cond) t_pass++;                                                              \
        else {                                                                           \
            t_fail++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double ca_ = (double)(a), cb_ = (double)(b), ct_ = (double)(tol);                \
        if (fabs(ca_ - cb_) <= ct_) t_pass++;                                            \
        else {                                                                           \
            t_fail++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g vs %s = %.9g (tol %.3g)\n", \
                    __FILE__, __LINE__, #a, ca_, #b, cb_, ct_);                          \
        }                                                                                \
    } while (0)

/* A graft call that must succeed; prints graft_last_error() otherwise. */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        graft_status cs_ = (expr);                                                       \
        if (cs_ == GRAFT_OK) t_pass++;                                                   \
        else {                                                                           \
            t_fail++;                                                                    \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #expr,      \
                    graft_status_str(cs_), graft_last_error());                          \
        }                                                                                \
    } while (0)

/* A graft call that must fail with status st and a message containing substr. */
#define CHECK_FAILS(expr, st, substr)                                                    \
    do {                                                                                 \
        graft_clear_error();                                                             \
        graft_status cs_ = (expr);                                                       \
        const char *cm_ = graft_last_error();                                            \
        if (cs_ == (st) && strstr(cm_, (substr)) != NULL) t_pass++;                      \
        else {                                                                           \
            t_fail++;                                                                    \
            fprintf(stderr, "%s:%d: %s: want %s containing \"%s\", got %s: \"%s\"\n",      \
                    __FILE__, __LINE__, #expr, graft_status_str(st), (substr),           \
                    graft_status_str(cs_), cm_);                                         \
        }                                                                                \
    } while (0)

/* Where the fixture copies in tests/data and the shared folder live. */
static inline const char *test_data_dir(void) {
    const char *e = getenv("GRAFT_TEST_DATA");
    return e ? e : GRAFT_TEST_DATA;
}
static inline const char *test_shared_dir(void) {
    const char *e = getenv("GRAFT_SHARED_DIR");
    return e ? e : GRAFT_SHARED_DIR;
}

/* Exit 77 (CTest: skipped) with a reason. */
#define TEST_SKIP(...)                                                                   \
    do {                                                                                 \
        fprintf(stderr, "SKIP: ");                                                       \
        fprintf(stderr, __VA_ARGS__);                                                    \
        fputc('\n', stderr);                                                             \
        exit(77);                                                                        \
    } while (0)

/* The tests' random numbers: xorshift64, deterministic, one sequence per
 * seed (test_seed), so every run checks the same values. */
static uint64_t test_rng = 0x9E3779B97F4A7C15ull;
static inline void test_seed(uint64_t seed) { test_rng = seed; }
static inline uint64_t test_rand64(void) {
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return test_rng;
}
static inline double test_urand(void) { return (double)(test_rand64() >> 11) * 0x1.0p-53; } /* [0, 1) */
static inline float test_frand(float lo, float hi) { return lo + (hi - lo) * (float)test_urand(); }

/* Monotonic seconds: waits with a timeout, and the coarse bounds that catch a
 * quadratic blow-up (speed itself is measured in bench/, not here). */
static inline double test_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef GRAFT_INTERNAL_H
/* n zeroed floats on a 64-byte line; a test that cannot allocate stops. */
static inline float *test_falloc(size_t n) {
    float *p = graft_calloc_aligned((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}
#endif

static inline int test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, t_pass, t_fail);
    return t_fail ? 1 : 0;
}

#endif
