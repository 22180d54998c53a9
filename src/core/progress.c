/* progress.c - a progress line on stderr with a rate and an ETA: redrawn in
 * place on a terminal (at most 4 times a second), printed every ~5% of the
 * work otherwise, so logs stay readable. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double graft_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void graft_progress_start(graft_progress *p, const char *what, int64_t total, int64_t done) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->start_done = p->done = done;
    p->t0 = p->last = graft_now_s();
    p->tty = isatty(2);
    p->enabled = 1;
}

static void fmt_time(char *b, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(b, n, "--");
    else if (s < 60) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(b, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void graft_progress_update(graft_progress *p, int64_t done, const char *extra) {
    if (!p->enabled) return;
    p->done = done;
    double t = graft_now_s();
    int final = done >= p->total;
    if (p->tty) {
        if (!final && t - p->last < 0.25) return;
    } else {
        int64_t step = p->total / 20 > 0 ? p->total / 20 : 1;
        if (!final && done / step == p->last_bucket) return;
        p->last_bucket = done / step;
    }
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? (double)(done - p->start_done) / el : 0;
    char eta[16], elapsed[16];
    fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - done) / rate : -1);
    fmt_time(elapsed, sizeof elapsed, el);
    int width = 24, fill = p->total > 0 ? (int)((double)done / (double)p->total * width) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "%s%s [%s] %lld/%lld  %.2f/s  elapsed %s  ETA %s%s%s%s", p->tty ? "\r" : "", p->what, bar,
            (long long)done, (long long)p->total, rate, elapsed, eta, extra ? "  " : "", extra ? extra : "",
            p->tty ? "\033[K" : "\n");
    if (p->tty && final) fputc('\n', stderr);
    fflush(stderr);
}

void graft_progress_end(graft_progress *p) {
    if (p->enabled && p->tty && p->done < p->total) fputc('\n', stderr);
    p->enabled = 0;
}
