/*
 * team.c - one parallel region for a whole batch-1 forward (a decode step).
 *
 * A decode step of GPT-2 small runs about fifty matrix-vector products, each
 * big enough for two threads, with small serial work (norms, attention over
 * one query, residual adds, editor hooks) in between. An OpenMP region per
 * product means a fork and a join per product; with OMP_WAIT_POLICY=passive
 * (the setting graft's tests and benchmarks use, so that idle threads never
 * burn a loaded machine) every fork is a futex wake of a sleeping thread:
 * about 1 ms of a 10 ms token (bench/README.md).
 *
 * graft_team_run opens one region for the step instead. The calling thread
 * (rank 0) runs the forward as usual; the other threads park in a loop that
 * waits for jobs. A GEMV that finds a team on its thread (graft_team_active)
 * publishes its rows as a job (graft_team_for): every rank takes a fixed
 * contiguous share, rank 0 included, and rank 0 waits for the others. Parked
 * threads spin with a pause, then yield the CPU, so a token costs one wake-up
 * and never a sleep. The region ends with the step.
 *
 * Shares are fixed by rank (item i goes to the rank whose range holds it), as
 * with a static schedule: each output is computed by exactly one thread in
 * the same order, so results do not depend on the team.
 */
#include "internal.h"
#include "kernels.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define SPINS_BEFORE_YIELD 4096 /* pauses (tens of microseconds) before a waiter yields its CPU */

typedef struct graft_team {
    atomic_uint seq;  /* bumped by rank 0 to publish a job */
    atomic_int done;  /* ranks > 0 that finished the current job */
    atomic_int stop;  /* the step is over */
    int size;         /* threads in the region */
    graft_team_fn fn; /* the job: fn(arg, i0, i1) for this rank's items */
    void *arg;
    int n;
} graft_team;

static _Thread_local graft_team *tls_team; /* set on rank 0 while it runs the step */

static void wait_pause(unsigned *spins) {
    if (++*spins < SPINS_BEFORE_YIELD)
        cpu_relax();
    else
        sched_yield(); /* more runnable threads than CPUs: let the one we wait for run */
}

static void share(const graft_team *t, int rank, int *i0, int *i1) {
    *i0 = (int)((long long)t->n * rank / t->size);
    *i1 = (int)((long long)t->n * (rank + 1) / t->size);
}

int graft_team_active(void) { return tls_team != NULL; }

void graft_team_for(int n, graft_team_fn fn, void *arg) {
    graft_team *t = tls_team;
    if (!t || t->size < 2 || n < 2) {
        fn(arg, 0, n);
        return;
    }
    t->fn = fn;
    t->arg = arg;
    t->n = n;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->seq, 1, memory_order_release); /* publishes fn, arg, n */
    int i0, i1;
    share(t, 0, &i0, &i1);
    if (i1 > i0) fn(arg, i0, i1);
    unsigned spins = 0;
    while (atomic_load_explicit(&t->done, memory_order_acquire) < t->size - 1) wait_pause(&spins);
}

void graft_par_items(int par, int n, graft_team_fn fn, void *arg) {
    if (!par || n < 2) {
        fn(arg, 0, n);
        return;
    }
    if (tls_team) {
        graft_team_for(n, fn, arg);
        return;
    }
    /* the OpenMP team: the same fixed contiguous share per thread */
#ifdef _OPENMP
    if (!omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel
        {
            const int T = omp_get_num_threads(), t = omp_get_thread_num();
            const int i0 = (int)((long long)n * t / T), i1 = (int)((long long)n * (t + 1) / T);
            if (i1 > i0) fn(arg, i0, i1);
        }
        return;
    }
#endif
    fn(arg, 0, n);
}

static void worker(graft_team *t, int rank) {
    unsigned last = 0, spins = 0;
    for (;;) {
        const unsigned s = atomic_load_explicit(&t->seq, memory_order_acquire);
        if (s != last) {
            last = s;
            int i0, i1;
            share(t, rank, &i0, &i1);
            if (i1 > i0) t->fn(t->arg, i0, i1);
            atomic_fetch_add_explicit(&t->done, 1, memory_order_release);
            spins = 0;
            continue;
        }
        if (atomic_load_explicit(&t->stop, memory_order_acquire)) return;
        wait_pause(&spins);
    }
}

/* GRAFT_DECODE_TEAM=0 turns teams off (a region per product, as before;
 * for measuring the difference). */
static int team_enabled(void) {
    static int on = -1;
    int v = atomic_load_explicit((_Atomic int *)&on, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("GRAFT_DECODE_TEAM");
        v = !(e && e[0] == '0');
        atomic_store_explicit((_Atomic int *)&on, v, memory_order_relaxed);
    }
    return v;
}

void graft_team_run(void (*body)(void *), void *arg) {
#ifdef _OPENMP
    const int want = omp_get_max_threads();
    if (want < 2 || omp_in_parallel() || tls_team || !team_enabled()) {
        body(arg);
        return;
    }
    graft_team t;
    atomic_init(&t.seq, 0);
    atomic_init(&t.done, 0);
    atomic_init(&t.stop, 0);
    t.size = want;
    t.fn = NULL;
    t.arg = NULL;
    t.n = 0;
#pragma omp parallel num_threads(want)
    {
        const int rank = omp_get_thread_num();
        if (rank == 0) {
            /* the region may have fewer threads than asked for; no job is
             * published before this store, and parked ranks read it only after
             * a job's release */
            t.size = omp_get_num_threads();
            tls_team = &t;
            body(arg);
            tls_team = NULL;
            atomic_store_explicit(&t.stop, 1, memory_order_release);
        } else {
            worker(&t, rank);
        }
    }
#else
    body(arg);
#endif
}
