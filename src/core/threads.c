/*
 * threads.c - one knob for the thread count of graft's OpenMP kernels and of
 * BLAS, and the name of the GEMM backend compiled in.
 */
#include "internal.h"
#include "kernels.h"

#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef GRAFT_USE_OPENBLAS
#include <cblas.h>
#endif

#ifndef _OPENMP
/* Without OpenMP the kernels run on the calling thread; remember the request
 * anyway so graft_get_threads() reports what was asked for consistently. */
static int g_threads = 1;
#endif

static int online_cpus(void) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void graft_set_threads(int n) {
    if (n <= 0) n = online_cpus();
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    g_threads = n;
#endif
#ifdef GRAFT_USE_OPENBLAS
    /* The OpenMP build of OpenBLAS follows the OpenMP setting for new regions,
     * but keeps its own count too; set both so they never disagree. */
    openblas_set_num_threads(n);
#endif
}

int graft_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return g_threads;
#endif
}

const char *graft_gemm_backend(void) { return graft_gemm_uses_blas() ? "openblas" : "builtin"; }
