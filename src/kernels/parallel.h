/*
 * parallel.h - loops that run on the OpenMP team only when the work pays for it.
 *
 * Why not `#pragma omp parallel for if (cond)`: libgomp enters a parallel
 * region even when the clause is false or the team has one thread, and every
 * region it enters ends in a futex system call (measured: 10,000 `if (0)`
 * regions made 10,000 futex calls, with either wait policy). A batch-1 decode
 * of stories260K runs about a hundred small kernels per token, so those calls
 * were most of its time. These macros test the condition in C and run the
 * plain loop when it is false, so small work never touches the runtime.
 *
 * Usage (the loop is the macro's last argument, written as usual):
 *     GRAFT_PAR_FOR(n > MIN, for (long long i = 0; i < n; i++) y[i] += x[i];)
 * Static schedules keep results independent of the thread count where the
 * kernels promise that (each index is computed by exactly one thread).
 */
#ifndef GRAFT_KERNELS_PARALLEL_H
#define GRAFT_KERNELS_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>

/* True when a parallel region could use more than one thread here. */
#define GRAFT_PAR_WANTED(cond) ((cond) && !omp_in_parallel() && omp_get_max_threads() > 1)

#define GRAFT_PAR_FOR(cond, ...)                                                                   \
    do {                                                                                           \
        if (GRAFT_PAR_WANTED(cond)) {                                                              \
            _Pragma("omp parallel for schedule(static)") __VA_ARGS__                              \
        } else {                                                                                   \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

/* The same for a loop whose body vectorises as a whole (elementwise kernels). */
#define GRAFT_PAR_FOR_SIMD(cond, ...)                                                              \
    do {                                                                                           \
        if (GRAFT_PAR_WANTED(cond)) {                                                              \
            _Pragma("omp parallel for simd schedule(static)") __VA_ARGS__                         \
        } else {                                                                                   \
            _Pragma("omp simd") __VA_ARGS__                                                        \
        }                                                                                          \
    } while (0)

/* Uneven items (attention's heads of sequences of different lengths). */
#define GRAFT_PAR_FOR_DYNAMIC(cond, ...)                                                           \
    do {                                                                                           \
        if (GRAFT_PAR_WANTED(cond)) {                                                              \
            _Pragma("omp parallel for schedule(dynamic, 1)") __VA_ARGS__                          \
        } else {                                                                                   \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

/* A region whose body shares its loops out with orphaned `omp for`
 * directives (the blocked GEMM). Without a region those loops cover every
 * index on the calling thread; inside a caller's region (a task of
 * attention's parallel loop) the body gets a team of one of its own, or its
 * `omp for` loops would bind to the caller's team. */
#define GRAFT_PAR_REGION(cond, ...)                                                                \
    do {                                                                                           \
        if (GRAFT_PAR_WANTED(cond)) {                                                              \
            _Pragma("omp parallel") { __VA_ARGS__ }                                                \
        } else if (omp_in_parallel()) {                                                            \
            _Pragma("omp parallel num_threads(1)") { __VA_ARGS__ }                                 \
        } else {                                                                                   \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

#else /* no OpenMP: every loop runs on the calling thread */

#define GRAFT_PAR_WANTED(cond) 0
#define GRAFT_PAR_FOR(cond, ...) do { __VA_ARGS__ } while (0)
#define GRAFT_PAR_FOR_SIMD(cond, ...) do { __VA_ARGS__ } while (0)
#define GRAFT_PAR_FOR_DYNAMIC(cond, ...) do { __VA_ARGS__ } while (0)
#define GRAFT_PAR_REGION(cond, ...) do { __VA_ARGS__ } while (0)

#endif

#endif /* GRAFT_KERNELS_PARALLEL_H */
