/* stats.c - E[k k^T] of the down-projection inputs over a corpus (stats.h). */
#define _GNU_SOURCE
#include "stats.h"

#include "engine.h"
#include "locate.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BYTES (1 << 20) /* corpus bytes tokenized at a time */
#define CKPT_MAGIC "GRFTSTK1"
#define CKPT_VERSION 1u
#define MAX_STATS_LAYERS 256

void graft_stats_opts_default(graft_stats_opts *o) {
    memset(o, 0, sizeof *o);
    o->progress = 1;
    o->checkpoint_every_s = 300;
}

graft_status graft_parse_layers(const char *s, int n_layer, int *layers, int *n, int max) {
    *n = 0;
    if (!s || !*s) return graft_fail(GRAFT_ERR_INVALID, "layers: empty list");
    if (!strcmp(s, "all")) {
        if (n_layer > max) return graft_fail(GRAFT_ERR_INVALID, "layers: at most %d", max);
        for (int l = 0; l < n_layer; l++) layers[(*n)++] = l;
        return GRAFT_OK;
    }
    const char *p = s;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p) return graft_fail(GRAFT_ERR_INVALID, "layers: cannot parse '%s' (want e.g. 4, 3-5, 2,4,7 or all)", s);
        p = end;
        b = a;
        if (*p == '-') {
            p++;
            b = strtol(p, &end, 10);
            if (end == p) return graft_fail(GRAFT_ERR_INVALID, "layers: cannot parse '%s'", s);
            p = end;
        }
        if (a < 0 || b < a || b >= n_layer)
            return graft_fail(GRAFT_ERR_INVALID, "layers: %ld-%ld is not a range inside [0, %d)", a, b, n_layer);
        for (long l = a; l <= b; l++) {
            for (int k = 0; k < *n; k++)
                if (layers[k] == l) return graft_fail(GRAFT_ERR_INVALID, "layers: %ld is listed twice in '%s'", l, s);
            if (*n >= max) return graft_fail(GRAFT_ERR_INVALID, "layers: at most %d", max);
            layers[(*n)++] = (int)l;
        }
        if (*p == ',') p++;
        else if (*p) return graft_fail(GRAFT_ERR_INVALID, "layers: unexpected '%c' in '%s'", *p, s);
    }
    /* ascending: MEMIT walks its layers bottom-up */
    for (int i = 1; i < *n; i++)
        for (int j = i; j > 0 && layers[j - 1] > layers[j]; j--) {
            int t = layers[j];
            layers[j] = layers[j - 1];
            layers[j - 1] = t;
        }
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- accumulation */

typedef struct stats_state {
    graft_model *m;
    int F, n_layers;
    int layers[MAX_STATS_LAYERS];
    graft_hook hooks[MAX_STATS_LAYERS];
    double *sum[MAX_STATS_LAYERS]; /* packed lower triangles, F(F+1)/2 each */
    float *gram;                   /* [F, F] one window's K^T K */
    int skip;                      /* leading rows not counted (BOS) */
    /* the stream */
    size_t byte_off;               /* next corpus byte to tokenize */
    int *pending;                  /* tokens read, not yet counted */
    size_t n_pending, cap_pending;
    int64_t tokens, windows;
} stats_state;

static size_t tri_len(int F) { return (size_t)F * (F + 1) / 2; }

/* Inside the forward: act is [T, F] at (layer, MLP_ACT) and valid only now
 * (inference runs share buffers between layers). */
static void stats_hook(graft_hook *h, graft_run *r, float *act, int dim) {
    stats_state *s = h->user;
    int idx = (int)(h - s->hooks);
    int rows = r->T - s->skip;
    if (rows <= 0) return;
    const float *k = act + (size_t)s->skip * dim;
    /* only the lower triangle is needed: K^T K by blocks (bi, bj <= bi),
     * about 0.56 of a full GEMM with 8 blocks */
    int nb = (dim + 7) / 8;
    nb = (nb + 15) & ~15;
    for (int i0 = 0; i0 < dim; i0 += nb)
        for (int j0 = 0; j0 <= i0; j0 += nb) {
            int mi = dim - i0 < nb ? dim - i0 : nb, mj = dim - j0 < nb ? dim - j0 : nb;
            graft_gemm(1, 0, mi, mj, rows, 1.0f, k + i0, dim, k + j0, dim, 0.0f, s->gram + (size_t)i0 * dim + j0, dim);
        }
    double *acc = s->sum[idx];
    const float *g = s->gram;
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < dim; i++) {
        double *a = acc + (size_t)i * (i + 1) / 2;
        const float *gi = g + (size_t)i * dim;
        for (int j = 0; j <= i; j++) a[j] += gi[j];
    }
}

/* ---------------------------------------------------------------- checkpoint */

typedef struct ckpt_ident {
    char fingerprint[128];
    uint64_t corpus_size;
    int32_t F, window, bos, n_layers;
    int64_t max_tokens;
} ckpt_ident;

static graft_status put(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) return graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return GRAFT_OK;
}

static graft_status ckpt_write(const char *path, const stats_state *s, const ckpt_ident *id) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    uint32_t ver = CKPT_VERSION;
    uint64_t off = s->byte_off, np = s->n_pending;
    graft_status st = put(f, CKPT_MAGIC, 8, tmp);
    if (!st) st = put(f, &ver, sizeof ver, tmp);
    if (!st) st = put(f, id, sizeof *id, tmp);
    if (!st) st = put(f, s->layers, (size_t)s->n_layers * sizeof(int), tmp);
    if (!st) st = put(f, &off, sizeof off, tmp);
    if (!st) st = put(f, &s->tokens, sizeof s->tokens, tmp);
    if (!st) st = put(f, &s->windows, sizeof s->windows, tmp);
    if (!st) st = put(f, &np, sizeof np, tmp);
    if (!st) st = put(f, s->pending, s->n_pending * sizeof(int), tmp);
    for (int i = 0; !st && i < s->n_layers; i++) st = put(f, s->sum[i], tri_len(s->F) * sizeof(double), tmp);
    if (!st) st = put(f, "END!", 4, tmp);
    if (!st && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = graft_fail(GRAFT_ERR_IO, "%s: cannot flush: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && !st) st = graft_fail(GRAFT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0) st = graft_fail(GRAFT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (st) unlink(tmp);
    free(tmp);
    return st;
}

static graft_status get(FILE *f, void *p, size_t n, const char *path) {
    if (n && fread(p, 1, n, f) != n) return graft_fail(GRAFT_ERR_FORMAT, "%s: truncated checkpoint", path);
    return GRAFT_OK;
}

static graft_status ckpt_read(const char *path, stats_state *s, const ckpt_ident *want) {
    FILE *f = fopen(path, "rb");
    if (!f) return graft_fail(GRAFT_ERR_IO, "%s: cannot open the checkpoint: %s", path, strerror(errno));
    char magic[8];
    uint32_t ver;
    ckpt_ident have;
    uint64_t off, np;
    int layers[MAX_STATS_LAYERS];
    graft_status st = get(f, magic, 8, path);
    if (!st) st = get(f, &ver, sizeof ver, path);
    if (!st && (memcmp(magic, CKPT_MAGIC, 8) || ver != CKPT_VERSION))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: not a graft stats checkpoint (or another version)", path);
    if (!st) st = get(f, &have, sizeof have, path);
    if (!st && (have.n_layers != s->n_layers || have.n_layers > MAX_STATS_LAYERS))
        st = graft_fail(GRAFT_ERR_INVALID, "%s: the checkpoint has %d layers, this run %d", path, have.n_layers, s->n_layers);
    if (!st) st = get(f, layers, (size_t)s->n_layers * sizeof(int), path);
    if (!st && (strncmp(have.fingerprint, want->fingerprint, sizeof have.fingerprint) || have.corpus_size != want->corpus_size ||
                have.F != want->F || have.window != want->window || have.bos != want->bos ||
                have.max_tokens != want->max_tokens || memcmp(layers, s->layers, (size_t)s->n_layers * sizeof(int))))
        st = graft_fail(GRAFT_ERR_INVALID,
                        "%s: the checkpoint was made with another model, corpus, window, layer list or --max-tokens; "
                        "run without --resume to start over (the checkpoint is then replaced)",
                        path);
    if (!st) st = get(f, &off, sizeof off, path);
    if (!st) st = get(f, &s->tokens, sizeof s->tokens, path);
    if (!st) st = get(f, &s->windows, sizeof s->windows, path);
    if (!st) st = get(f, &np, sizeof np, path);
    if (!st && np > (uint64_t)64 << 20) st = graft_fail(GRAFT_ERR_FORMAT, "%s: bad pending-token count", path);
    if (!st && np > s->cap_pending) {
        int *p = realloc(s->pending, np * sizeof(int));
        if (!p) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else s->pending = p, s->cap_pending = np;
    }
    if (!st) st = get(f, s->pending, np * sizeof(int), path);
    for (int i = 0; !st && i < s->n_layers; i++) st = get(f, s->sum[i], tri_len(s->F) * sizeof(double), path);
    char end[4];
    if (!st) st = get(f, end, 4, path);
    if (!st && memcmp(end, "END!", 4)) st = graft_fail(GRAFT_ERR_FORMAT, "%s: corrupt checkpoint (no end mark)", path);
    fclose(f);
    if (!st) {
        s->byte_off = off;
        s->n_pending = np;
    }
    return st;
}

/* ---------------------------------------------------------------- the corpus stream */

/* The next chunk [off, end): at most CHUNK_BYTES, cut after the last line
 * break (or space, or at a UTF-8 character boundary) unless it is the end. */
static size_t chunk_end(const uint8_t *d, size_t size, size_t off) {
    if (size - off <= CHUNK_BYTES) return size;
    size_t end = off + CHUNK_BYTES;
    for (size_t i = end; i > off + CHUNK_BYTES / 2; i--)
        if (d[i - 1] == '\n') return i;
    for (size_t i = end; i > off + CHUNK_BYTES / 2; i--)
        if (d[i - 1] == ' ') return i;
    while (end > off + 1 && (d[end] & 0xC0) == 0x80) end--;
    return end;
}

static graft_status pending_push(stats_state *s, const int *ids, size_t n) {
    if (s->n_pending + n > s->cap_pending) {
        size_t cap = (s->n_pending + n) * 2;
        int *p = realloc(s->pending, cap * sizeof(int));
        if (!p) return graft_fail(GRAFT_ERR_NOMEM, "stats: out of memory");
        s->pending = p;
        s->cap_pending = cap;
    }
    memcpy(s->pending + s->n_pending, ids, n * sizeof(int));
    s->n_pending += n;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- output */

static graft_status write_output(const graft_stats_opts *o, const stats_state *s, const char *fp) {
    int F = s->F, n = s->n_layers;
    graft_st_write_item *items = calloc((size_t)2 * n, sizeof *items);
    float **bufs = calloc((size_t)n, sizeof *bufs);
    float *counts = calloc((size_t)n, sizeof(float));
    char (*names)[48] = calloc((size_t)2 * n, sizeof *names);
    graft_status st = (items && bufs && counts && names) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "stats: out of memory");
    double inv = s->tokens > 0 ? 1.0 / (double)s->tokens : 0.0;
    for (int k = 0; st == GRAFT_OK && k < n; k++) {
        bufs[k] = malloc((size_t)F * F * sizeof(float));
        if (!bufs[k]) {
            st = graft_fail(GRAFT_ERR_NOMEM, "stats: out of memory for the output");
            break;
        }
        const double *acc = s->sum[k];
        for (int i = 0; i < F; i++)
            for (int j = 0; j <= i; j++) {
                float v = (float)(acc[(size_t)i * (i + 1) / 2 + j] * inv);
                bufs[k][(size_t)i * F + j] = v;
                bufs[k][(size_t)j * F + i] = v;
            }
        counts[k] = (float)s->tokens;
        snprintf(names[2 * k], sizeof names[0], "layer.%d.mom2", s->layers[k]);
        snprintf(names[2 * k + 1], sizeof names[0], "layer.%d.count", s->layers[k]);
        items[2 * k] = (graft_st_write_item){names[2 * k], GRAFT_F32, 2, {F, F}, bufs[k]};
        items[2 * k + 1] = (graft_st_write_item){names[2 * k + 1], GRAFT_F32, 1, {1}, &counts[k]};
    }
    if (st == GRAFT_OK) {
        char tok[32], win[32], layers[MAX_STATS_LAYERS * 5 + 8] = "";
        snprintf(tok, sizeof tok, "%lld", (long long)s->tokens);
        snprintf(win, sizeof win, "%lld", (long long)s->windows);
        size_t at = 0;
        for (int k = 0; k < n; k++) at += (size_t)snprintf(layers + at, sizeof layers - at, "%s%d", k ? "," : "", s->layers[k]);
        const char *meta[] = {"format",      "graft-mom2",     "token_count", tok,
                              "windows",     win,              "corpus",      o->corpus,
                              "model",       o->model_name ? o->model_name : "", "fingerprint", fp,
                              "layers",      layers,           "site",        "mlp_act"};
        st = graft_st_write(o->out, items, 2 * n, meta, 8);
    }
    for (int k = 0; k < n && bufs; k++) free(bufs[k]);
    free(items), free(bufs), free(counts), free(names);
    return st;
}

/* ---------------------------------------------------------------- driver */

graft_status graft_stats_compute(graft_model *m, const graft_stats_opts *o, graft_stats_result *res) {
    memset(res, 0, sizeof *res);
    const graft_config *cfg = &m->cfg;
    if (!o->corpus || !o->out) return graft_fail(GRAFT_ERR_INVALID, "stats: a corpus and an output path are needed");
    graft_tokenizer *tok = graft_model_tokenizer(m);
    if (!tok) return graft_fail(GRAFT_ERR_INVALID, "stats: the model has no tokenizer (give one with --tokenizer)");
    double t0 = graft_now_s();
    stats_state s;
    memset(&s, 0, sizeof s);
    s.m = m;
    s.F = cfg->d_ff;
    if (o->n_layers > 0) {
        if (o->n_layers > MAX_STATS_LAYERS) return graft_fail(GRAFT_ERR_INVALID, "stats: at most %d layers", MAX_STATS_LAYERS);
        for (int i = 0; i < o->n_layers; i++) {
            if (o->layers[i] < 0 || o->layers[i] >= cfg->n_layer)
                return graft_fail(GRAFT_ERR_INVALID, "stats: layer %d outside [0, %d)", o->layers[i], cfg->n_layer);
            if (i && o->layers[i] <= o->layers[i - 1])
                return graft_fail(GRAFT_ERR_INVALID, "stats: layers must be ascending and distinct");
            s.layers[i] = o->layers[i];
        }
        s.n_layers = o->n_layers;
    } else {
        s.n_layers = graft_wedit_stats_layers(cfg, s.layers);
    }
    /* BOS in front of every window for models whose prompts start with one */
    int bos = (cfg->arch == GRAFT_ARCH_LLAMA && graft_tokenizer_bos(tok) >= 0) ? graft_tokenizer_bos(tok) : -1;
    int window = o->window > 0 ? o->window : cfg->n_ctx;
    if (window > cfg->n_ctx) window = cfg->n_ctx;
    if (window < 2) return graft_fail(GRAFT_ERR_INVALID, "stats: a window of %d tokens is too short", window);
    s.skip = bos >= 0;
    int per_window = window - s.skip; /* corpus tokens per forward */

    graft_mapped_file corpus;
    GRAFT_TRY(graft_map_file(o->corpus, &corpus));
    char *ckpt_path = malloc(strlen(o->out) + 6);
    graft_status st = ckpt_path ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK) sprintf(ckpt_path, "%s.ckpt", o->out);
    for (int i = 0; st == GRAFT_OK && i < s.n_layers; i++) {
        s.sum[i] = calloc(tri_len(s.F), sizeof(double));
        if (!s.sum[i]) st = graft_fail(GRAFT_ERR_NOMEM, "stats: out of memory for %d layers of %d x %d sums", s.n_layers, s.F, s.F);
    }
    s.gram = st == GRAFT_OK ? malloc((size_t)s.F * s.F * sizeof(float)) : NULL;
    if (st == GRAFT_OK && !s.gram) st = graft_fail(GRAFT_ERR_NOMEM, "stats: out of memory");

    ckpt_ident id;
    memset(&id, 0, sizeof id);
    graft_model_fingerprint(m, id.fingerprint, sizeof id.fingerprint);
    id.corpus_size = corpus.size;
    id.F = s.F;
    id.window = window;
    id.bos = bos;
    id.n_layers = s.n_layers;
    id.max_tokens = o->max_tokens;
    if (st == GRAFT_OK) {
        if (o->resume) {
            if (!graft_path_exists(ckpt_path))
                st = graft_fail(GRAFT_ERR_INVALID, "stats: --resume, but there is no checkpoint %s", ckpt_path);
            else
                st = ckpt_read(ckpt_path, &s, &id);
        } else if (graft_path_exists(ckpt_path)) {
            fprintf(stderr, "graft stats: starting over; the old checkpoint %s will be replaced (use --resume to continue it)\n",
                    ckpt_path);
        }
    }

    /* A forward only needs the layers up to the highest one measured: a
     * shallow copy of the model with fewer layers shares every weight and
     * lets the run skip the rest (the head then reads that layer, for one row). */
    graft_model shallow = *m;
    shallow.cfg.n_layer = s.layers[s.n_layers - 1] + 1;
    graft_run *r = NULL;
    if (st == GRAFT_OK) st = graft_run_create(&shallow, window, 1, window, 0, &r);
    for (int i = 0; st == GRAFT_OK && i < s.n_layers; i++) {
        s.hooks[i] = (graft_hook){.layer = s.layers[i], .site = GRAFT_SITE_MLP_ACT, .forward = stats_hook, .user = &s};
        graft_run_add_hook(r, &s.hooks[i]);
    }
    int *ids = st == GRAFT_OK ? malloc((size_t)window * sizeof(int)) : NULL;
    if (st == GRAFT_OK && !ids) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");

    graft_progress pg;
    int64_t total = o->max_tokens > 0 ? o->max_tokens : (int64_t)corpus.size;
    if (o->progress && st == GRAFT_OK)
        graft_progress_start(&pg, "stats", total, o->max_tokens > 0 ? s.tokens : (int64_t)s.byte_off);
    double last_ckpt = graft_now_s();
    int64_t windows_here = 0, tokens_here = 0;
    int stopped = 0;
    while (st == GRAFT_OK) {
        int64_t left = o->max_tokens > 0 ? o->max_tokens - s.tokens : INT64_MAX;
        if (left <= 0) break;
        int at_eof = s.byte_off >= corpus.size;
        /* refill until a whole window is pending or the corpus is exhausted */
        if (s.n_pending < (size_t)per_window && !at_eof) {
            size_t end = chunk_end(corpus.data, corpus.size, s.byte_off);
            int *t = NULL;
            size_t nt = 0;
            st = graft_tokenize(tok, (const char *)corpus.data + s.byte_off, end - s.byte_off, &t, &nt);
            if (st != GRAFT_OK) {
                graft_fail_prefix(st, "%s: bytes %zu-%zu", o->corpus, s.byte_off, end);
                break;
            }
            st = pending_push(&s, t, nt);
            free(t);
            s.byte_off = end;
            continue;
        }
        if (s.n_pending == 0) break; /* done */
        int n = s.n_pending < (size_t)per_window ? (int)s.n_pending : per_window;
        if ((int64_t)n > left) n = (int)left;
        int len = 0;
        if (bos >= 0) ids[len++] = bos;
        memcpy(ids + len, s.pending, (size_t)n * sizeof(int));
        len += n;
        int last = len - 1;
        st = graft_run_set_batch(r, ids, &len, 1, &last, 1);
        if (st == GRAFT_OK) st = graft_run_forward(r);
        if (st != GRAFT_OK) break;
        memmove(s.pending, s.pending + n, (s.n_pending - (size_t)n) * sizeof(int));
        s.n_pending -= (size_t)n;
        s.tokens += n;
        s.windows++;
        windows_here++;
        tokens_here += n;
        if (o->progress) {
            char extra[64];
            double el = graft_now_s() - t0;
            snprintf(extra, sizeof extra, "%lld tokens, %.0f tok/s", (long long)s.tokens, el > 0 ? tokens_here / el : 0.0);
            /* corpus bytes are tokenized a megabyte ahead, so byte_off alone
             * jumps and then stands still: count the bytes already consumed
             * as the tokenized share that has been run */
            int64_t done_bytes = (int64_t)((double)s.byte_off * (double)s.tokens / (double)(s.tokens + (int64_t)s.n_pending));
            graft_progress_update(&pg, o->max_tokens > 0 ? s.tokens : done_bytes, extra);
        }
        int stop_now = o->stop_after_windows > 0 && windows_here >= o->stop_after_windows;
        if (stop_now || o->checkpoint_every_s <= 0 || graft_now_s() - last_ckpt >= o->checkpoint_every_s) {
            st = ckpt_write(ckpt_path, &s, &id);
            last_ckpt = graft_now_s();
        }
        if (stop_now) {
            stopped = 1;
            break;
        }
    }
    if (o->progress && st == GRAFT_OK) graft_progress_end(&pg);
    if (st == GRAFT_OK && !stopped) {
        if (s.tokens == 0)
            st = graft_fail(GRAFT_ERR_INVALID, "%s: no tokens", o->corpus);
        else {
            char fp[128];
            graft_model_fingerprint(m, fp, sizeof fp);
            st = write_output(o, &s, fp);
        }
        if (st == GRAFT_OK) {
            unlink(ckpt_path);
            res->finished = 1;
        }
    }
    res->tokens = s.tokens;
    res->windows = s.windows;
    res->tokens_run = tokens_here;
    res->seconds = graft_now_s() - t0;
    graft_run_free(r);
    free(ids);
    for (int i = 0; i < s.n_layers; i++) free(s.sum[i]);
    free(s.gram);
    free(s.pending);
    free(ckpt_path);
    graft_unmap_file(&corpus);
    return st;
}

/* ---------------------------------------------------------------- loading */

graft_status graft_stats_load(const char *path, const graft_model *m, int layer, double **mom2, int64_t *count) {
    if (mom2) *mom2 = NULL;
    if (count) *count = 0;
    graft_st_archive a;
    GRAFT_TRY(graft_st_open(path, &a));
    int F = m->cfg.d_ff;
    char name[48];
    snprintf(name, sizeof name, "layer.%d.mom2", layer);
    const graft_st_tensor *t = graft_st_find(&a, name);
    cJSON *meta = a.metadata_json ? cJSON_Parse(a.metadata_json) : NULL;
    const cJSON *fp = cJSON_GetObjectItem(meta, "fingerprint"), *tc = cJSON_GetObjectItem(meta, "token_count");
    const cJSON *ly = cJSON_GetObjectItem(meta, "layers");
    graft_status st = GRAFT_OK;
    char mine[128];
    graft_model_fingerprint(m, mine, sizeof mine);
    if (!t)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: no statistics for layer %d (the file has layers %s); rerun graft stats with --layers",
                        path, layer, cJSON_IsString(ly) ? ly->valuestring : "?");
    else if (t->dtype != GRAFT_F32 || t->ndim != 2 || t->shape[0] != F || t->shape[1] != F)
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s is %s [%lld, %lld]; this model wants F32 [%d, %d]", path, name,
                        graft_dtype_name(t->dtype), (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), F, F);
    else if (cJSON_IsString(fp) && strcmp(fp->valuestring, mine) != 0)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: these statistics belong to another model (%s); this one is %s", path,
                        fp->valuestring, mine);
    if (st == GRAFT_OK && mom2) {
        double *c = malloc((size_t)F * F * sizeof(double));
        float *row = malloc((size_t)F * sizeof(float));
        if (!c || !row) {
            free(c), free(row);
            st = graft_fail(GRAFT_ERR_NOMEM, "out of memory loading %s", path);
        } else {
            for (int i = 0; i < F; i++) {
                graft_convert_to_f32(row, (const uint8_t *)t->data + (size_t)i * F * sizeof(float), GRAFT_F32, (size_t)F);
                for (int j = 0; j < F; j++) c[(size_t)i * F + j] = row[j];
            }
            free(row);
            for (int i = 0; i < F && st == GRAFT_OK; i++)
                for (int j = 0; j < F; j++)
                    if (!isfinite(c[(size_t)i * F + j])) {
                        st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s has a non-finite entry at (%d, %d)", path, name, i, j);
                        break;
                    }
            if (st == GRAFT_OK) {
                *mom2 = c;
                if (count) *count = cJSON_IsString(tc) ? strtoll(tc->valuestring, NULL, 10) : 0;
            } else
                free(c);
        }
    }
    cJSON_Delete(meta);
    graft_st_close(&a);
    return st;
}
