/* plot.c - self-contained SVG line plots (axes, ticks, labels, legend), so
 * every curve graft reports (edit retention, loss) can be opened in any
 * browser without other tools. */
#define _GNU_SOURCE
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

/* A "nice" tick step (1, 2 or 5 times a power of ten) for a span. */
static double nice_step(double span, int want) {
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

static void fmt_tick(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0;
    if (step >= 1 && fabs(v) < 1e7) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.3g", v);
}

/* One panel's grid, ticks, frame, labels and curves inside the box (X0, Y0,
 * pw, ph), with its own y range and the shared x range. */
static void draw_panel(FILE *f, int idx, double X0, double Y0, double pw, double ph, const graft_panel *p, const char *xlabel,
                       double xmin, double xmax) {
    const graft_series *s = p->s;
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < p->n; k++)
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) lo = fmin(lo, s[k].y[i]), hi = fmax(hi, s[k].y[i]);
    if (!isfinite(lo)) lo = 0, hi = 1;
    if (!isnan(p->ymin)) lo = p->ymin;
    if (!isnan(p->ymax)) hi = p->ymax;
    if (hi <= lo) hi = lo + 1;
#define PX(x) (X0 + ((x) - xmin) / (xmax - xmin) * pw)
#define PY(y) (Y0 + ph - ((y) - lo) / (hi - lo) * ph)
    if (p->title) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"13\" text-anchor=\"middle\">", X0 + pw / 2, Y0 - 8);
        escape(f, p->title);
        fprintf(f, "</text>\n");
    }
    double xs = nice_step(xmax - xmin, pw < 400 ? 5 : 8), ys = nice_step(hi - lo, 6);
    char lab[32];
    for (double v = ceil(xmin / xs) * xs; v <= xmax + xs * 1e-9; v += xs) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", PX(v), Y0, PX(v), Y0 + ph);
        fmt_tick(lab, sizeof lab, v, xs);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", PX(v), Y0 + ph + 16, lab);
    }
    for (double v = ceil(lo / ys) * ys; v <= hi + ys * 1e-9; v += ys) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", X0, PY(v), X0 + pw, PY(v));
        fmt_tick(lab, sizeof lab, v, ys);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", X0 - 6, PY(v) + 4, lab);
    }
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", X0, Y0, pw, ph);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", X0 + pw / 2, Y0 + ph + 38);
    escape(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(%.0f %.0f) rotate(-90)\" text-anchor=\"middle\">", X0 - 52, Y0 + ph / 2);
    escape(f, p->ylabel);
    fprintf(f, "</text>\n");
    /* series, clipped to the panel */
    fprintf(f, "<clipPath id=\"area%d\"><rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\"/></clipPath>\n", idx, X0, Y0,
            pw, ph);
    for (int k = 0; k < p->n; k++) {
        int ci = s[k].color > 0 ? s[k].color - 1 : k;
        const char *col = palette[ci % (int)(sizeof palette / sizeof palette[0])];
        const char *dash = s[k].dashed == 1 ? " stroke-dasharray=\"6 4\"" : s[k].dashed == 2 ? " stroke-dasharray=\"2 3\"" : "";
        fprintf(f, "<polyline clip-path=\"url(#area%d)\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", idx, col,
                dash);
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) fprintf(f, "%.1f,%.1f ", PX(s[k].x[i]), PY(s[k].y[i]));
        fprintf(f, "\"/>\n");
        if (s[k].n <= 40) /* markers where points are sparse enough to see */
            for (int i = 0; i < s[k].n; i++)
                if (isfinite(s[k].x[i]) && isfinite(s[k].y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"/>\n", PX(s[k].x[i]), PY(s[k].y[i]),
                            pw < 400 ? "2.5" : "3", col);
    }
#undef PX
#undef PY
}

graft_status graft_svg_panels(const char *path, const char *title, const char *xlabel, const graft_panel *panels, int n_panels,
                              int cols) {
    if (n_panels < 1) return graft_fail(GRAFT_ERR_INVALID, "%s: a plot needs a panel", path);
    if (cols < 1) cols = 1;
    if (cols > n_panels) cols = n_panels;
    int rows = (n_panels + cols - 1) / cols;
    /* the x range is shared, so panels line up edit for edit */
    double xmin = INFINITY, xmax = -INFINITY;
    for (int p = 0; p < n_panels; p++)
        for (int k = 0; k < panels[p].n; k++)
            for (int i = 0; i < panels[p].s[k].n; i++)
                if (isfinite(panels[p].s[k].x[i]) && isfinite(panels[p].s[k].y[i]))
                    xmin = fmin(xmin, panels[p].s[k].x[i]), xmax = fmax(xmax, panels[p].s[k].x[i]);
    if (!isfinite(xmin)) xmin = 0, xmax = 1;
    if (xmax == xmin) xmax = xmin + 1;
    int n_title = 0;
    for (const char *t = title; t && *t; t++) n_title += *t == '\n';
    n_title += title && *title;
    /* panel boxes: pw x ph each, with room for tick labels and axis titles;
     * the legend (the first panel's series) lives in the right margin */
    const double pw = cols == 1 ? 500 : 400, ph = cols == 1 ? 360 : 250, L = 70, R = 190, gapx = 80, gapy = 75;
    const double T = 30 + 16 * n_title, B = 60;
    double W = L + cols * pw + (cols - 1) * gapx + R, H = T + rows * ph + (rows - 1) * gapy + B;
    size_t len = 0;
    char *buf = NULL;
    /* built in memory, then written atomically: a crash never leaves half a plot */
    FILE *f = open_memstream(&buf, &len);
    if (!f) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    /* the title may have several lines ('\n'): the first large, the rest as subtitles */
    int line = 0;
    for (const char *t = title; t && *t; line++) {
        const char *nl = strchr(t, '\n');
        size_t n = nl ? (size_t)(nl - t) : strlen(t);
        char *part = strndup(t, n);
        fprintf(f, "<text x=\"%.0f\" y=\"%d\" font-size=\"%d\" text-anchor=\"middle\">", (W - R + L) / 2, 20 + 16 * line,
                line ? 11 : 15);
        escape(f, part);
        fprintf(f, "</text>\n");
        free(part);
        t = nl ? nl + 1 : t + n;
    }
    for (int p = 0; p < n_panels; p++) {
        int r = p / cols, c = p % cols;
        double X0 = L + c * (pw + gapx), Y0 = T + (panels[p].title ? 12 : 0) + r * (ph + gapy);
        draw_panel(f, p, X0, Y0, pw, ph - (panels[p].title ? 12 : 0), &panels[p], xlabel, xmin, xmax);
    }
    const graft_panel *lp = &panels[0];
    for (int k = 0; k < lp->n; k++) {
        const graft_series *s = &lp->s[k];
        int ci = s->color > 0 ? s->color - 1 : k;
        const char *col = palette[ci % (int)(sizeof palette / sizeof palette[0])];
        const char *dash = s->dashed == 1 ? " stroke-dasharray=\"6 4\"" : s->dashed == 2 ? " stroke-dasharray=\"2 3\"" : "";
        double lx = W - R + 12, ly = T + 14 + 20 * k;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"3\"%s/>\n", lx, ly, lx + 24,
                ly, col, dash);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">", lx + 30, ly + 4);
        escape(f, s->name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    graft_status st = graft_write_file_atomic(path, buf, len);
    free(buf);
    return st;
}

graft_status graft_svg_line_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                 const graft_series *s, int n_series, double ymin, double ymax) {
    graft_panel p = {NULL, ylabel, s, n_series, ymin, ymax};
    return graft_svg_panels(path, title, xlabel, &p, 1, 1);
}
