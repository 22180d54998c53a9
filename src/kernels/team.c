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
 * publishes its rows as a job (graft_team_for): every rank takes its own
 * contiguous share, rank 0 included, then helps with the back of the others'
 * (tail stealing, below), and rank 0 waits until every item is done. Parked
 * threads spin with a pause, then yield the CPU, so a token costs one wake-up
 * and never a sleep. The region ends with the step.
 *
 * Whichever rank takes an item computes all of it (a group of rows, a band,
 * a head) in the same order as one thread would, so results do not depend on
 * the team or on who took what.
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

/*
 * Tail stealing. A fixed share per rank keeps each thread's rows one
 * contiguous stream (claiming items from one shared counter interleaved the
 * two threads' streams and decoded Q8_0 slower: bench/README.md), but a rank
 * that finishes first then idled while the other read the end of its share:
 * about a tenth of a GPT-2 decode. So each share is taken front to back in
 * chunks by its owner, and a rank done with its own share takes chunks from
 * the back of another's, so the two streams meet only at the very end.
 * Each share is one 64-bit word (job tag, next item, end), claimed by
 * compare-and-swap; the tag makes a claim on a finished job's word fail.
 */
#define TEAM_MAX 64                 /* ranks that take part in one job */
#define SHARE_BITS 22               /* items per job with stealing: below 4M */
#define SHARE_MASK ((1ull << SHARE_BITS) - 1)
#define CHUNKS_PER_SHARE 16
/* Items per claim at most. A sixteenth of a big job's share is a long chunk:
 * for GPT-2's LM head (12,565 groups of 4 rows) 392 groups, 2.4 MB of F16,
 * which the other rank waited on whole when it was the last one left (25 us
 * of a 4.4 ms token, 60 us at F32). 32 groups of 4 rows are a few
 * microseconds of reading; a claim costs one compare-and-swap. */
#define CHUNK_MAX 32

typedef struct team_share {
    _Alignas(64) _Atomic unsigned long long w; /* tag << 44 | next << 22 | end */
} team_share;

typedef struct graft_team {
    atomic_uint seq;  /* bumped by rank 0 to publish a job; the low 20 bits tag it */
    atomic_int left;  /* items of the current job not yet done */
    atomic_int stop;  /* the step is over */
    int size;         /* threads in the region */
    graft_team_fn fn; /* the job: fn(arg, i0, i1) for claimed items */
    void *arg;
    atomic_int chunk; /* items per claim (read by late ranks too, hence atomic) */
    team_share share[TEAM_MAX];
} graft_team;

static _Thread_local graft_team *tls_team; /* set on rank 0 while it runs the step */

static void wait_pause(unsigned *spins) {
    if (++*spins < SPINS_BEFORE_YIELD)
        cpu_relax();
    else
        sched_yield(); /* more runnable threads than CPUs: let the one we wait for run */
}

static unsigned long long share_word(unsigned tag, int next, int end) {
    return (unsigned long long)(tag & 0xFFFFFu) << (2 * SHARE_BITS) |
           (unsigned long long)next << SHARE_BITS | (unsigned long long)end;
}

/* Claim up to t->chunk items of rank r's share for job `tag`: from the front
 * (the owner) or the back (another rank). 0 when the share is used up or the
 * job is over. */
static int claim(graft_team *t, int r, unsigned tag, int back, int *i0, int *i1) {
    unsigned long long w = atomic_load_explicit(&t->share[r].w, memory_order_acquire);
    for (;;) {
        if ((unsigned)(w >> (2 * SHARE_BITS)) != (tag & 0xFFFFFu)) return 0;
        const int next = (int)(w >> SHARE_BITS & SHARE_MASK), end = (int)(w & SHARE_MASK);
        if (next >= end) return 0;
        const int c = atomic_load_explicit(&t->chunk, memory_order_relaxed);
        const int a = back ? (end - c > next ? end - c : next) : next;
        const int b = back ? end : (next + c < end ? next + c : end);
        const unsigned long long nw = back ? share_word(tag, next, a) : share_word(tag, b, end);
        if (atomic_compare_exchange_weak_explicit(&t->share[r].w, &w, nw, memory_order_acquire,
                                                  memory_order_acquire)) {
            *i0 = a;
            *i1 = b;
            return 1;
        }
    }
}

/* Everything rank `rank` does for job `tag`: its own share, then the backs
 * of the others'. fn and arg cannot change under a successful claim: rank 0
 * publishes the next job only when every item of this one is done. */
static void run_job(graft_team *t, int rank, unsigned tag) {
    int i0, i1;
    for (int k = 0; k < t->size; k++) {
        const int r = (rank + k) % t->size;
        while (claim(t, r, tag, k != 0, &i0, &i1)) {
            t->fn(t->arg, i0, i1);
            atomic_fetch_sub_explicit(&t->left, i1 - i0, memory_order_release);
        }
    }
}

int graft_team_active(void) { return tls_team != NULL; }

void graft_team_for(int n, graft_team_fn fn, void *arg) {
    graft_team *t = tls_team;
    if (!t || t->size < 2 || n < 2 || (unsigned long long)n > SHARE_MASK) {
        fn(arg, 0, n);
        return;
    }
    const unsigned tag = atomic_load_explicit(&t->seq, memory_order_relaxed) + 1;
    t->fn = fn;
    t->arg = arg;
    const int per = n / t->size, c = per / CHUNKS_PER_SHARE;
    atomic_store_explicit(&t->chunk, c < 1 ? 1 : c > CHUNK_MAX ? CHUNK_MAX : c, memory_order_relaxed);
    atomic_store_explicit(&t->left, n, memory_order_relaxed);
    for (int r = 0; r < t->size; r++)
        atomic_store_explicit(&t->share[r].w,
                              share_word(tag, (int)((long long)n * r / t->size),
                                         (int)((long long)n * (r + 1) / t->size)),
                              memory_order_release);
    atomic_store_explicit(&t->seq, tag, memory_order_release); /* publishes the job */
    run_job(t, 0, tag);
    unsigned spins = 0;
    while (atomic_load_explicit(&t->left, memory_order_acquire) > 0) wait_pause(&spins);
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
            run_job(t, rank, s);
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
    const int want = omp_get_max_threads() < TEAM_MAX ? omp_get_max_threads() : TEAM_MAX;
    if (want < 2 || omp_in_parallel() || tls_team || !team_enabled()) {
        body(arg);
        return;
    }
    graft_team t;
    atomic_init(&t.seq, 0);
    atomic_init(&t.left, 0);
    atomic_init(&t.stop, 0);
    t.size = want;
    t.fn = NULL;
    t.arg = NULL;
    atomic_init(&t.chunk, 1);
    for (int r = 0; r < TEAM_MAX; r++) atomic_init(&t.share[r].w, 0);
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
