/* report.c - what a run shows: the loss history, the SVG loss curve (drawn by
 * hand: axes, ticks, labels, legend), the JSONL log on resume, and the
 * progress bar on stderr. */
#define _GNU_SOURCE
#include "train/train_impl.h"

#include "model/save.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double train_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================================================ history */

bool train_hist_push(train_hist *h, long step, double loss) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 256;
        train_point *p = realloc(h->p, cap * sizeof *p);
        if (!p) return false;
        h->p = p;
        h->cap = cap;
    }
    h->p[h->n++] = (train_point){step, loss};
    return true;
}

void train_hist_free(train_hist *h) {
    free(h->p);
    memset(h, 0, sizeof *h);
}

/* ================================================================ log */

graft_status train_log_rewind(const char *path, long step, train_hist *train, train_hist *val) {
    train->n = val->n = 0;
    if (!graft_path_exists(path)) return GRAFT_OK;
    char *text = NULL;
    size_t size = 0;
    GRAFT_TRY(graft_read_file(path, &text, &size));
    graft_sbuf keep = {0};
    graft_status st = GRAFT_OK;
    for (size_t pos = 0; pos < size && st == GRAFT_OK;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - s) : size - pos;
        pos += len + 1;
        /* A line cut short by a crash does not parse: it is dropped. */
        cJSON *o = cJSON_ParseWithLength(s, len);
        const cJSON *js = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(js) && js->valuedouble <= (double)step) {
            graft_sb_add(&keep, s, len);
            graft_sb_add(&keep, "\n", 1);
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "loss");
            const cJSON *vl = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
            long k = (long)js->valuedouble;
            if ((cJSON_IsNumber(l) && !train_hist_push(train, k, l->valuedouble)) ||
                (cJSON_IsNumber(vl) && !train_hist_push(val, k, vl->valuedouble)))
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
        }
        cJSON_Delete(o);
    }
    free(text);
    if (st == GRAFT_OK) st = graft_sb_write_file(&keep, path);
    graft_sb_free(&keep);
    return st;
}

/* ================================================================ loss curve */

/* Long histories are averaged into buckets: the curve keeps its shape and the
 * file stays small. */
#define MAX_POINTS 1500

typedef struct curve {
    double *x, *y; /* y points into the block of x */
    int n;
} curve;

/* The finite points of h, bucketed; false when out of memory. */
static bool make_curve(const train_hist *h, curve *c) {
    size_t per = h->n > MAX_POINTS ? (h->n + MAX_POINTS - 1) / MAX_POINTS : 1, cap = h->n / per + 1;
    c->n = 0;
    c->x = malloc(2 * cap * sizeof *c->x);
    if (!c->x) return false;
    c->y = c->x + cap;
    for (size_t i = 0; i < h->n; i += per) {
        double sx = 0, sy = 0;
        int k = 0;
        for (size_t j = i; j < h->n && j < i + per; j++)
            if (isfinite(h->p[j].loss)) sx += (double)h->p[j].step, sy += h->p[j].loss, k++;
        if (k) c->x[c->n] = sx / k, c->y[c->n] = sy / k, c->n++;
    }
    return true;
}

graft_status train_write_svg(const char *path, const train_hist *train, const train_hist *val) {
    curve a = {0}, b = {0};
    graft_status st;
    if (!make_curve(train, &a) || !make_curve(val, &b)) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    } else {
        graft_series s[2] = {{.name = "train loss", .x = a.x, .y = a.y, .n = a.n},
                             {.name = "validation loss", .x = b.x, .y = b.y, .n = b.n}};
        st = graft_svg_line_plot(path, "graft train: loss", "step", "loss (nats per token)", s, 2, NAN, NAN);
    }
    free(a.x);
    free(b.x);
    return st;
}

/* ================================================================ progress */

/* The bar itself is graft's shared progress line (src/core/progress.c);
 * the trainer adds its loss and token rate, and validation results on lines
 * of their own. */

void train_progress_init(train_progress *p, bool on) {
    memset(p, 0, sizeof *p);
    p->on = on;
    p->tty = on && isatty(2);
}

static void fmt_rate(char *buf, size_t cap, double r) {
    if (r >= 1e6) snprintf(buf, cap, "%.2fM", r / 1e6);
    else if (r >= 1e3) snprintf(buf, cap, "%.1fk", r / 1e3);
    else snprintf(buf, cap, "%.0f", r);
}

void train_progress_start(train_progress *p, long step, long total) {
    if (!p->on) return;
    graft_progress_start(&p->bar, "train", total, step);
    p->started = true;
}

void train_progress_step(train_progress *p, long step, double loss, double tok_s) {
    if (!p->started) return;
    char rate[32], extra[96];
    fmt_rate(rate, sizeof rate, tok_s);
    snprintf(extra, sizeof extra, "loss %.4f  %s tok/s", loss, rate);
    graft_progress_update(&p->bar, step, extra);
}

void train_progress_note(train_progress *p, const char *fmt, ...) {
    if (!p->on) return;
    if (p->tty) fputs("\r\033[K", stderr); /* the bar is redrawn at the next step */
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void train_progress_end(train_progress *p) {
    if (p->started) graft_progress_end(&p->bar);
    p->started = false;
}
