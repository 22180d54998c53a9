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

graft_status graft_svg_line_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                 const graft_series *s, int n_series, double ymin, double ymax) {
    double xmin = INFINITY, xmax = -INFINITY, lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < n_series; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) continue;
            xmin = fmin(xmin, s[k].x[i]), xmax = fmax(xmax, s[k].x[i]);
            lo = fmin(lo, s[k].y[i]), hi = fmax(hi, s[k].y[i]);
        }
    if (!isfinite(xmin)) xmin = 0, xmax = 1, lo = 0, hi = 1;
    if (xmax == xmin) xmax = xmin + 1;
    if (!isnan(ymin)) lo = ymin;
    if (!isnan(ymax)) hi = ymax;
    if (hi <= lo) hi = lo + 1;

    const double W = 760, H = 470, L = 70, R = 190, T = 50, B = 60; /* legend lives in the right margin */
    double pw = W - L - R, ph = H - T - B;
    /* built in memory, then written atomically: a crash never leaves half a plot */
    size_t len = 0;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);

#define PX(x) (L + ((x) - xmin) / (xmax - xmin) * pw)
#define PY(y) (T + ph - ((y) - lo) / (hi - lo) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    /* the title may have several lines ('\n'): the first large, the rest as subtitles */
    int line = 0;
    for (const char *t = title; t && *t; line++) {
        const char *nl = strchr(t, '\n');
        size_t n = nl ? (size_t)(nl - t) : strlen(t);
        char *part = strndup(t, n);
        fprintf(f, "<text x=\"%.0f\" y=\"%d\" font-size=\"%d\" text-anchor=\"middle\">", W / 2, 20 + 16 * line,
                line ? 11 : 15);
        escape(f, part);
        fprintf(f, "</text>\n");
        free(part);
        t = nl ? nl + 1 : t + n;
    }
    /* grid and ticks */
    double xs = nice_step(xmax - xmin, 8), ys = nice_step(hi - lo, 6);
    char lab[32];
    for (double v = ceil(xmin / xs) * xs; v <= xmax + xs * 1e-9; v += xs) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", PX(v), T, PX(v), T + ph);
        fmt_tick(lab, sizeof lab, v, xs);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", PX(v), T + ph + 16, lab);
    }
    for (double v = ceil(lo / ys) * ys; v <= hi + ys * 1e-9; v += ys) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", L, PY(v), L + pw, PY(v));
        fmt_tick(lab, sizeof lab, v, ys);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6, PY(v) + 4, lab);
    }
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", L + pw / 2, H - 18);
    escape(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">", T + ph / 2);
    escape(f, ylabel);
    fprintf(f, "</text>\n");
    /* series, clipped to the plot area */
    fprintf(f, "<clipPath id=\"area\"><rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\"/></clipPath>\n", L, T, pw, ph);
    for (int k = 0; k < n_series; k++) {
        int ci = s[k].color > 0 ? s[k].color - 1 : k;
        const char *col = palette[ci % (int)(sizeof palette / sizeof palette[0])];
        const char *dash = s[k].dashed == 1 ? " stroke-dasharray=\"6 4\"" : s[k].dashed == 2 ? " stroke-dasharray=\"2 3\"" : "";
        fprintf(f, "<polyline clip-path=\"url(#area)\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col, dash);
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) fprintf(f, "%.1f,%.1f ", PX(s[k].x[i]), PY(s[k].y[i]));
        fprintf(f, "\"/>\n");
        if (s[k].n <= 40) /* markers where points are sparse enough to see */
            for (int i = 0; i < s[k].n; i++)
                if (isfinite(s[k].x[i]) && isfinite(s[k].y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(s[k].x[i]), PY(s[k].y[i]), col);
        double ly = T + 14 + 20 * k;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"3\"%s/>\n", L + pw + 12,
                ly, L + pw + 36, ly, col, dash);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">", L + pw + 42, ly + 4);
        escape(f, s[k].name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    graft_status st = graft_write_file_atomic(path, buf, len);
    free(buf);
    return st;
}
