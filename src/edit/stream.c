/* stream.c - the lifelong editing loop behind `graft edit`. See stream.h. */
#define _GNU_SOURCE
#include "stream.h"

#include "data/dataset.h"
#include "eval.h"
#include "journal.h"
#include "melo.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void graft_stream_opts_default(graft_stream_opts *o) {
    memset(o, 0, sizeof *o);
    o->eval_every = 100;
    o->batch = 1;
    o->seed = 42;
    o->method = "grace";
    o->upstream_n = 500;
    o->ppl_tokens = 4096;
    o->progress = 1;
}

/* ---------------------------------------------------------------- item sets */

typedef struct item_set {
    graft_eval_item *it;
    int *owner; /* edit index each item belongs to (-1: none) */
    int n, cap;
    int tokens; /* total target tokens */
} item_set;

static graft_status set_add(item_set *s, graft_tokenizer *tok, const char *prompt, const char *target, int owner) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        graft_eval_item *it = realloc(s->it, (size_t)cap * sizeof *it);
        if (it) s->it = it;
        int *ow = realloc(s->owner, (size_t)cap * sizeof *ow);
        if (ow) s->owner = ow;
        if (!it || !ow) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        s->cap = cap;
    }
    GRAFT_TRY(graft_encode_pair(tok, prompt, target, &s->it[s->n]));
    s->owner[s->n] = owner;
    s->tokens += s->it[s->n].n_target;
    s->n++;
    return GRAFT_OK;
}

static void set_free(item_set *s) {
    for (int i = 0; i < s->n; i++) graft_eval_item_free(&s->it[i]);
    free(s->it);
    free(s->owner);
    memset(s, 0, sizeof *s);
}

/* Items of s owned by edits < limit, at most `sample` of them evenly spread
 * (0: all), copied into *view (the caller frees the array). */
static int select_items(const item_set *s, int limit, long sample, graft_eval_item **view) {
    *view = malloc((size_t)(s->n ? s->n : 1) * sizeof **view);
    if (!*view) return -1;
    int n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->owner[i] < limit) (*view)[n++] = s->it[i];
    if (sample <= 0 || n <= sample) return n;
    for (long j = 0; j < sample; j++) (*view)[j] = (*view)[j * n / sample]; /* j*n/sample >= j: in-place is safe */
    return (int)sample;
}

/* ---------------------------------------------------------------- metrics */

typedef struct acc {
    double tf;    /* mean token accuracy (against ref_* when given) */
    double gen;   /* exact-match fraction (against ref_* when given) */
    double tf_true, gen_true; /* the same against the items' own targets */
    int n;        /* items */
} acc;

/* Accuracy of items against their own targets (ERR, GEN), or against
 * reference predictions (TRR: ref_tf / ref_gen, indexed like the items).
 * item_ok (may be NULL): per item, 1 when generation gave its own target. */
static graft_status measure(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, const int *ref_tf,
                            const int *ref_gen, acc *out, int *item_ok) {
    memset(out, 0, sizeof *out);
    if (n == 0) {
        out->tf = out->gen = out->tf_true = out->gen_true = NAN;
        return GRAFT_OK;
    }
    int total = 0;
    for (int i = 0; i < n; i++) total += items[i].n_target;
    int *tf = malloc((size_t)total * sizeof(int)), *gen = malloc((size_t)total * sizeof(int));
    graft_status st = (tf && gen) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK) st = graft_eval_tf_gen(m, e, items, n, tf, gen);
    if (st == GRAFT_OK) {
        double tf_sum = 0, tf_true = 0;
        int gen_ok = 0, gen_true = 0, at = 0;
        for (int i = 0; i < n; i++) {
            int good = 0, all = 1, good_t = 0, all_t = 1;
            for (int k = 0; k < items[i].n_target; k++) {
                int own = items[i].target[k];
                int want_tf = ref_tf ? ref_tf[at + k] : own, want_gen = ref_gen ? ref_gen[at + k] : own;
                good += tf[at + k] == want_tf;
                all &= gen[at + k] == want_gen;
                good_t += tf[at + k] == own;
                all_t &= gen[at + k] == own;
            }
            tf_sum += (double)good / items[i].n_target;
            tf_true += (double)good_t / items[i].n_target;
            gen_ok += all;
            gen_true += all_t;
            if (item_ok) item_ok[i] = all_t;
            at += items[i].n_target;
        }
        out->tf = tf_sum / n;
        out->gen = (double)gen_ok / n;
        out->tf_true = tf_true / n;
        out->gen_true = (double)gen_true / n;
        out->n = n;
    }
    free(tf), free(gen);
    return st;
}

/* ---------------------------------------------------------------- the run */

typedef struct point {
    long edits;
    double es_tf, es_gen, err_tf, err_gen, trr_tf, trr_gen, gen_tf, gen_gen, ppl, sec_per_edit, elapsed;
    double known_tf, known_gen;     /* upstream facts against their TRUE answers (held knowledge) */
    double cf_es, cf_ps, cf_ns;     /* CounterFact scores: NLL(new) vs NLL(true) comparisons */
    double dw_norm;                 /* sqrt(sum over tensors of ||W - W0||^2) */
    double gen_entropy;             /* n-gram entropy of greedy continuations of fixed prompts */
    int collapsed;
    long keys;
} point;

typedef struct runner {
    graft_model *m;
    const graft_stream_opts *o;
    graft_tokenizer *tok;
    graft_dataset ds;
    int n;                 /* edits in this stream */
    item_set edits, reph, up;
    /* CounterFact comparisons: the same prompts with the TRUE answer, and the
     * neighbourhood prompts with the NEW target (CounterFact-style data only) */
    item_set edits_true, reph_true, nb_true, nb_new;
    float *w0;             /* base copy of every parameter, for ||W - W0|| (NULL when too big) */
    double known0, ppl0;   /* the baseline for collapse detection */
    long collapse_at;      /* first evaluation point judged collapsed, -1 none */
    char collapse_why[96];
    int *base_tf, *base_gen; /* unedited predictions on the upstream set */
    int *ppl_ids;
    size_t n_ppl;
    graft_editor *e;
    graft_journal *j;
    char *results_path, *plot_path, *summary_path;
    point *pts;
    int n_pts, cap_pts;
    /* ES over the current window */
    double es_tf_sum, es_gen_sum, sec_sum;
    int es_n;
    double t_start, elapsed_before;
    /* edits that did not reproduce their target (exact-match generation
     * right after the edit), by data row, over the whole stream */
    int *failed_rows, n_failed, cap_failed;
} runner;

static void note_failed(runner *R, int row) {
    if (R->n_failed == R->cap_failed) {
        int cap = R->cap_failed ? 2 * R->cap_failed : 16;
        int *f = realloc(R->failed_rows, (size_t)cap * sizeof *f);
        if (f) R->failed_rows = f, R->cap_failed = cap;
    }
    if (R->n_failed < R->cap_failed) R->failed_rows[R->n_failed] = row;
    R->n_failed++; /* counted even when its row could not be kept */
}

static graft_status load_upstream(runner *R) {
    const graft_stream_opts *o = R->o;
    long cap = o->upstream_n > 0 ? o->upstream_n : 500;
    if (!o->upstream_path) {
        for (int i = 0; i < R->n && R->up.n < cap; i++)
            for (int k = 0; k < R->ds.req[i].n_loc && R->up.n < cap; k++)
                GRAFT_TRY(set_add(&R->up, R->tok, R->ds.req[i].loc_prompts[k], R->ds.req[i].loc_answers[k], -1));
        return GRAFT_OK;
    }
    char *text = NULL;
    GRAFT_TRY(graft_read_file(o->upstream_path, &text, NULL));
    graft_status st = GRAFT_OK;
    int row = 0;
    for (char *line = strtok(text, "\n"); line && st == GRAFT_OK && R->up.n < cap; line = strtok(NULL, "\n")) {
        row++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        cJSON *j = cJSON_Parse(line);
        const cJSON *p = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
        if (!a) a = cJSON_GetObjectItem(j, "target");
        if (!j || !cJSON_IsString(p) || !cJSON_IsString(a))
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: want a JSON object with string fields 'prompt' and 'answer'",
                            o->upstream_path, row);
        else
            st = set_add(&R->up, R->tok, p->valuestring, a->valuestring, -1);
        cJSON_Delete(j);
    }
    free(text);
    return st;
}

static graft_status prepare(runner *R) {
    const graft_stream_opts *o = R->o;
    R->tok = graft_model_tokenizer(R->m);
    if (!R->tok) return graft_fail(GRAFT_ERR_INVALID, "edit: the model has no tokenizer (give one with --tokenizer)");
    GRAFT_TRY(graft_dataset_load(o->data_path, o->format, o->n, &R->ds));
    R->n = R->ds.n;
    if (R->n == 0) return graft_fail(GRAFT_ERR_INVALID, "%s: no edit requests", o->data_path);
    for (int i = 0; i < R->n; i++) {
        graft_edit_request *q = &R->ds.req[i];
        graft_status st = set_add(&R->edits, R->tok, q->prompt, q->target, i);
        for (int k = 0; st == GRAFT_OK && k < q->n_rephrases; k++) st = set_add(&R->reph, R->tok, q->rephrases[k], q->target, i);
        if (st == GRAFT_OK && q->ground_truth) {
            st = set_add(&R->edits_true, R->tok, q->prompt, q->ground_truth, i);
            for (int k = 0; st == GRAFT_OK && k < q->n_rephrases; k++)
                st = set_add(&R->reph_true, R->tok, q->rephrases[k], q->ground_truth, i);
            for (int k = 0; st == GRAFT_OK && k < q->n_loc; k++) {
                st = set_add(&R->nb_true, R->tok, q->loc_prompts[k], q->loc_answers[k], i);
                if (st == GRAFT_OK) st = set_add(&R->nb_new, R->tok, q->loc_prompts[k], q->target, i);
            }
        }
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: row %d", o->data_path, q->row);
    }
    /* CounterFact scores need every request to have its true answer */
    if (R->edits_true.n != R->n) {
        set_free(&R->edits_true), set_free(&R->reph_true), set_free(&R->nb_true), set_free(&R->nb_new);
    }
    /* the base weights, for ||W - W0|| (skipped above 64M parameters: a copy would cost too much) */
    size_t total = graft_param_table_numel(&R->m->params);
    if (total <= ((size_t)64 << 20)) {
        R->w0 = malloc(total * sizeof(float));
        if (!R->w0) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        size_t at = 0;
        for (int i = 0; i < R->m->params.n; i++) {
            const graft_param *p = &R->m->params.p[i];
            if (p->data)
                memcpy(R->w0 + at, p->data, p->numel * sizeof(float));
            else /* used as stored: nothing writes it (converted first if an editor does) */
                graft_wmat_to_f32(R->w0 + at, p->stored, (size_t)p->shape[0], p->numel / (size_t)p->shape[0]);
            at += p->numel;
        }
    }
    GRAFT_TRY(load_upstream(R));
    /* The unedited model's answers on the upstream set: TRR compares with these. */
    R->base_tf = malloc((size_t)(R->up.tokens + 1) * sizeof(int));
    R->base_gen = malloc((size_t)(R->up.tokens + 1) * sizeof(int));
    if (!R->base_tf || !R->base_gen) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    GRAFT_TRY(graft_eval_tf(R->m, NULL, R->up.it, R->up.n, R->base_tf));
    GRAFT_TRY(graft_eval_gen(R->m, NULL, R->up.it, R->up.n, R->base_gen));
    if (o->ppl_path) {
        char *text = NULL;
        size_t len = 0;
        GRAFT_TRY(graft_read_file(o->ppl_path, &text, &len));
        size_t cap = (size_t)(o->ppl_tokens > 0 ? o->ppl_tokens : 4096);
        /* tokenize only a prefix: 8 bytes a token is plenty for byte-level and BPE */
        if (len > cap * 8) len = cap * 8;
        graft_status st = graft_tokenize(R->tok, text, len, &R->ppl_ids, &R->n_ppl);
        free(text);
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s", o->ppl_path);
        if (R->n_ppl > cap) R->n_ppl = cap;
    }
    return GRAFT_OK;
}

static graft_status check_meta(runner *R, const char *key, const char *want) {
    char *have = NULL;
    GRAFT_TRY(graft_journal_get_meta(R->j, key, &have));
    graft_status st = GRAFT_OK;
    if (!have)
        st = graft_journal_set_meta(R->j, key, want);
    else if (strcmp(have, want) != 0)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: this run was started with %s = '%s'; now '%s' (use another --out, or the same settings)",
                        graft_journal_path(R->j), key, have, want);
    free(have);
    return st;
}

/* A JSON number, or null where there is none (JSON has no NaN). */
static void num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v))
        fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
    else
        fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

static void point_json(FILE *f, const point *p) {
    fprintf(f, "{\"edits\": %ld, \"keys\": %ld, ", p->edits, p->keys);
    num(f, "es_tf", p->es_tf, 0), num(f, "es_gen", p->es_gen, 0);
    num(f, "err_tf", p->err_tf, 0), num(f, "err_gen", p->err_gen, 0);
    num(f, "trr_tf", p->trr_tf, 0), num(f, "trr_gen", p->trr_gen, 0);
    num(f, "gen_tf", p->gen_tf, 0), num(f, "gen_gen", p->gen_gen, 0);
    num(f, "known_tf", p->known_tf, 0), num(f, "known_gen", p->known_gen, 0);
    num(f, "cf_efficacy", p->cf_es, 0), num(f, "cf_paraphrase", p->cf_ps, 0), num(f, "cf_neighborhood", p->cf_ns, 0);
    num(f, "dw_norm", p->dw_norm, 0), num(f, "gen_entropy", p->gen_entropy, 0);
    fprintf(f, "\"collapsed\": %s, ", p->collapsed ? "true" : "false");
    num(f, "ppl", p->ppl, 0), num(f, "sec_per_edit", p->sec_per_edit, 0);
    num(f, "elapsed_s", p->elapsed, 1);
    fputc('}', f);
}

static graft_status append_point(runner *R, const point *p) {
    char *line = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&line, &len);
    if (!mf) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    point_json(mf, p);
    fputc('\n', mf);
    fclose(mf);
    int fd = open(R->results_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(line);
        return graft_fail(GRAFT_ERR_IO, "%s: %s", R->results_path, strerror(errno));
    }
    /* the whole line or the disk's errno (a resumed run drops a torn line) */
    int err = graft_write_all(fd, line, len);
    if (!err && fsync(fd) != 0) err = errno;
    close(fd);
    free(line);
    return err ? graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", R->results_path, strerror(err)) : GRAFT_OK;
}

static graft_status write_plot(runner *R) {
    int n = R->n_pts;
    double *x = malloc((size_t)(n + 1) * sizeof(double)), *y = malloc((size_t)(n + 1) * 8 * sizeof(double));
    if (!x || !y) {
        free(x), free(y);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        const point *p = &R->pts[i];
        x[i] = (double)p->edits;
        double v[8] = {p->es_gen, p->err_gen, p->trr_gen, p->gen_gen, p->es_tf, p->err_tf, p->trr_tf, p->gen_tf};
        for (int k = 0; k < 8; k++) y[(size_t)k * (n + 1) + i] = v[k];
    }
    const char *names[8] = {"ES (gen)", "ERR (gen)", "TRR (gen)", "Generalisation (gen)",
                            "ES (tf)",  "ERR (tf)",  "TRR (tf)",  "Generalisation (tf)"};
    graft_series s[8];
    /* one colour per metric: solid = gen, dashed = tf */
    for (int k = 0; k < 8; k++) s[k] = (graft_series){names[k], x, y + (size_t)k * (n + 1), n, k >= 4, k % 4 + 1};
    char title[256];
    const char *base = strrchr(R->o->data_path, '/');
    snprintf(title, sizeof title, "%s on %s\nsolid: exact-match greedy generation (gen); dashed: teacher-forced token accuracy (tf)",
             R->o->method, base ? base + 1 : R->o->data_path);
    graft_status st = graft_svg_line_plot(R->plot_path, title, "edits applied", "accuracy", s, 8, 0.0, 1.0);
    free(x), free(y);
    return st;
}

/* cJSON_AddItemToObject leaves item to the caller when it fails (out of memory) */
static graft_status write_summary(runner *R, int finished) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "method", R->o->method);
    cJSON_AddStringToObject(j, "model", R->o->model_path ? R->o->model_path : "");
    cJSON_AddStringToObject(j, "data", R->o->data_path);
    cJSON_AddStringToObject(j, "format", R->ds.format ? R->ds.format : "");
    cJSON_AddNumberToObject(j, "n_requests", R->n);
    cJSON_AddBoolToObject(j, "finished", finished);
    char *opts = NULL;
    if (graft_editor_opts_json(R->e, &opts) == GRAFT_OK) graft_json_put(j, "editor_options", cJSON_Parse(opts));
    free(opts);
    cJSON *d = cJSON_AddObjectToObject(j, "definitions");
    cJSON_AddStringToObject(d, "tf", "teacher-forced token accuracy (EasyEdit): fraction of target tokens that are the argmax given the prompt and the true previous target tokens");
    cJSON_AddStringToObject(d, "gen", "exact-match greedy generation (GRACE): the n_target greedy tokens after the prompt equal the target");
    cJSON_AddStringToObject(d, "es", "the edit just applied, mean over the edits since the previous evaluation point");
    cJSON_AddStringToObject(d, "failed_edits", "edits whose target greedy generation did not produce right after the edit (failed_rows: their data rows, 1-based)");
    cJSON_AddStringToObject(d, "err", "all edits applied so far (or an even sample of err_sample of them)");
    cJSON_AddStringToObject(d, "trr", "upstream prompts: agreement with the unedited model's own predictions");
    cJSON_AddStringToObject(d, "gen_", "rephrased prompts of the edits so far produce the target");
    cJSON_AddStringToObject(d, "ppl", "perplexity of the upstream text through the editor, key at each window's last token");
    cJSON_AddStringToObject(d, "known", "upstream facts answered with their TRUE answer (held knowledge; meaningful when the upstream set is facts the model knew)");
    cJSON_AddStringToObject(d, "cf_efficacy", "CounterFact efficacy score: fraction of rewrite prompts where NLL(target_new) < NLL(target_true)");
    cJSON_AddStringToObject(d, "cf_paraphrase", "CounterFact paraphrase score: the same on the rephrased prompts");
    cJSON_AddStringToObject(d, "cf_neighborhood", "CounterFact neighbourhood score: fraction of neighbourhood prompts where NLL(true answer) < NLL(target_new)");
    cJSON_AddStringToObject(d, "dw_norm", "sqrt of the summed squared differences of every weight from the unedited model");
    cJSON_AddStringToObject(d, "gen_entropy", "weighted 2/3-gram entropy (bits) of 48 greedy tokens after up to 5 upstream prompts");
    cJSON_AddStringToObject(d, "collapse", "the first evaluation point where held knowledge fell below half its start or perplexity grew tenfold");
    if (R->collapse_at >= 0) {
        cJSON *c = cJSON_AddObjectToObject(j, "collapse");
        cJSON_AddNumberToObject(c, "at_edits", (double)R->collapse_at);
        cJSON_AddStringToObject(c, "reason", R->collapse_why);
    } else
        cJSON_AddNullToObject(j, "collapse");
    cJSON_AddNumberToObject(j, "failed_edits", R->n_failed);
    cJSON *fr = cJSON_AddArrayToObject(j, "failed_rows");
    for (int i = 0; i < R->n_failed && i < R->cap_failed; i++) graft_json_push(fr, cJSON_CreateNumber(R->failed_rows[i]));
    cJSON_AddNumberToObject(j, "upstream_items", R->up.n);
    cJSON_AddNumberToObject(j, "rephrase_items", R->reph.n);
    if (R->n_pts) {
        char *line = NULL;
        size_t len = 0;
        FILE *mf = open_memstream(&line, &len);
        if (mf) {
            point_json(mf, &R->pts[R->n_pts - 1]);
            fclose(mf);
            graft_json_put(j, "final", cJSON_Parse(line));
            free(line);
        }
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    graft_status st = graft_write_file_atomic(R->summary_path, text, strlen(text));
    free(text);
    return st;
}

/* Fraction of pairs (a[i], b[i]) owned by edits < limit with nll(a) < nll(b):
 * CounterFact's efficacy / paraphrase / neighbourhood scores. */
static graft_status cf_score(runner *R, graft_editor *e, const item_set *a, const item_set *b, int limit, double *out) {
    *out = NAN;
    int n = 0;
    while (n < a->n && a->owner[n] < limit) n++; /* items are grouped by owner, in order */
    if (n == 0) return GRAFT_OK;
    /* --err-sample bounds these too, with the same even spread as ERR: the
     * neighbourhood set alone holds ten prompts per edit, and scoring all of
     * them at every point would cost more than the edits */
    long sample = R->o->err_sample;
    int k = sample > 0 && n > sample ? (int)sample : n;
    graft_eval_item *va = malloc((size_t)k * sizeof *va), *vb = malloc((size_t)k * sizeof *vb);
    double *na = malloc((size_t)k * sizeof(double)), *nb = malloc((size_t)k * sizeof(double));
    graft_status st = (va && vb && na && nb) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    for (int j = 0; st == GRAFT_OK && j < k; j++) {
        int i = (int)((long)j * n / k); /* a and b are paired item for item */
        va[j] = a->it[i], vb[j] = b->it[i];
    }
    if (st == GRAFT_OK) st = graft_eval_seq_nll(R->m, e, va, k, na);
    if (st == GRAFT_OK) st = graft_eval_seq_nll(R->m, e, vb, k, nb);
    if (st == GRAFT_OK) {
        int win = 0;
        for (int i = 0; i < k; i++) win += na[i] < nb[i];
        *out = (double)win / k;
    }
    free(va), free(vb), free(na), free(nb);
    return st;
}

static double weight_delta_norm(const runner *R) {
    if (!R->w0) return NAN;
    double s = 0;
    size_t at = 0;
    for (int i = 0; i < R->m->params.n; i++) {
        const graft_param *p = &R->m->params.p[i];
        for (size_t k = 0; p->data && k < p->numel; k++) { /* no f32 data: still as stored, unchanged */
            double d = (double)p->data[k] - R->w0[at + k];
            s += d * d;
        }
        at += p->numel;
    }
    return sqrt(s);
}

/* The mean, over up to 5 upstream prompts, of the weighted 2- and 3-gram
 * entropy (bits; weights 2/3 and 4/3 as in ROME's generation entropy) of 48
 * greedily generated tokens: a falling value flags degenerate, repetitive text. */
static graft_status generation_entropy(runner *R, graft_editor *e, double *out) {
    *out = NAN;
    int np = R->up.n < 5 ? R->up.n : 5;
    if (np == 0) return GRAFT_OK;
    double sum = 0;
    for (int i = 0; i < np; i++) {
        graft_gen_opts o;
        graft_gen_opts_default(&o);
        o.max_new_tokens = 48;
        o.stop_at_eos = 0;
        int *gen = NULL;
        size_t n = 0;
        GRAFT_TRY(graft_editor_generate(e, R->m, R->up.it[i].prompt, (size_t)R->up.it[i].n_prompt, &o, NULL, NULL, &gen, &n));
        double h[2] = {0, 0};
        for (int order = 2; order <= 3; order++) {
            int grams = (int)n - order + 1;
            for (int a = 0; a < grams; a++) {
                int seen = 0, count = 0;
                for (int b = 0; b < grams && !seen; b++)
                    if (b < a && !memcmp(gen + b, gen + a, (size_t)order * sizeof(int))) seen = 1;
                if (seen) continue;
                for (int b = 0; b < grams; b++) count += !memcmp(gen + b, gen + a, (size_t)order * sizeof(int));
                double p = (double)count / grams;
                h[order - 2] -= p * log2(p);
            }
        }
        sum += (2.0 / 3.0 * h[0] + 4.0 / 3.0 * h[1]) / 2.0;
        free(gen);
    }
    *out = sum / np;
    return GRAFT_OK;
}

/* The collapse rule, in one place for detection and for a resumed run's
 * summary: held knowledge below half its start, or upstream perplexity ten
 * times its start. Writes the reason and returns 1 when p has collapsed. */
static int collapse_reason(const runner *R, const point *p, char *why, size_t n) {
    if (isfinite(R->known0) && R->known0 > 0 && p->known_gen < 0.5 * R->known0)
        return snprintf(why, n, "held knowledge %.3f < half of %.3f", p->known_gen, R->known0), 1;
    if (isfinite(R->ppl0) && p->ppl > 10 * R->ppl0)
        return snprintf(why, n, "perplexity %.1f > 10 x %.1f", p->ppl, R->ppl0), 1;
    return 0;
}

static graft_status evaluate(runner *R, long done) {
    point p;
    memset(&p, 0, sizeof p);
    p.edits = done;
    p.es_tf = R->es_n ? R->es_tf_sum / R->es_n : NAN;
    p.es_gen = R->es_n ? R->es_gen_sum / R->es_n : NAN;
    p.sec_per_edit = R->es_n ? R->sec_sum / R->es_n : NAN;
    graft_editor *e = done > 0 ? R->e : NULL;
    graft_eval_item *view = NULL;
    acc a;
    int k = select_items(&R->edits, (int)done, R->o->err_sample, &view);
    graft_status st = k < 0 ? graft_fail(GRAFT_ERR_NOMEM, "out of memory") : measure(R->m, e, view, k, NULL, NULL, &a, NULL);
    free(view);
    p.err_tf = a.tf, p.err_gen = a.gen;
    if (st == GRAFT_OK) st = measure(R->m, e, R->up.it, R->up.n, R->base_tf, R->base_gen, &a, NULL);
    p.trr_tf = a.tf, p.trr_gen = a.gen;
    p.known_tf = a.tf_true, p.known_gen = a.gen_true;
    /* CounterFact: new beats true on the rewrite and paraphrase prompts; true
     * beats new on the neighbourhood prompts (at 0 edits: over the whole stream) */
    int lim = done > 0 ? (int)done : R->n;
    p.cf_es = p.cf_ps = p.cf_ns = NAN;
    if (st == GRAFT_OK && R->edits_true.n) st = cf_score(R, e, &R->edits, &R->edits_true, lim, &p.cf_es);
    if (st == GRAFT_OK && R->reph_true.n) st = cf_score(R, e, &R->reph, &R->reph_true, lim, &p.cf_ps);
    if (st == GRAFT_OK && R->nb_true.n) st = cf_score(R, e, &R->nb_true, &R->nb_new, lim, &p.cf_ns);
    p.dw_norm = weight_delta_norm(R);
    if (st == GRAFT_OK) st = generation_entropy(R, e, &p.gen_entropy);
    if (st == GRAFT_OK) {
        /* generalisation: rephrases of the edits so far; at 0 edits, of the whole stream (the baseline) */
        k = select_items(&R->reph, done > 0 ? (int)done : R->n, R->o->err_sample, &view);
        st = k < 0 ? graft_fail(GRAFT_ERR_NOMEM, "out of memory") : measure(R->m, e, view, k, NULL, NULL, &a, NULL);
        free(view);
        p.gen_tf = a.tf, p.gen_gen = a.gen;
    }
    p.ppl = NAN;
    if (st == GRAFT_OK && R->n_ppl > 1) {
        double nll;
        size_t cnt;
        st = graft_eval_nll(R->m, e, R->ppl_ids, R->n_ppl, 256, &nll, &cnt);
        p.ppl = exp(nll);
    }
    if (st != GRAFT_OK) return st;
    if (R->e && !strcmp(R->e->ops->name, "grace")) {
        graft_grace_stats gs;
        graft_grace_get_stats(R->e, &gs);
        p.keys = done > 0 ? gs.n_keys : 0;
    } else if (graft_melo_is(R->e)) { /* MELO: the router's clusters */
        graft_melo_stats ms;
        graft_melo_get_stats(R->e, &ms);
        p.keys = ms.n_clusters;
    }
    p.elapsed = R->elapsed_before + graft_now_s() - R->t_start;
    /* collapse: held knowledge below half its starting value, or upstream
     * perplexity ten times its start; the run goes on and records the index */
    if (done == 0) {
        R->known0 = p.known_gen;
        R->ppl0 = p.ppl;
    } else if (R->collapse_at < 0 && collapse_reason(R, &p, R->collapse_why, sizeof R->collapse_why)) {
        R->collapse_at = done;
    }
    p.collapsed = R->collapse_at >= 0;
    if (R->n_pts == R->cap_pts) {
        int cap = R->cap_pts ? 2 * R->cap_pts : 32;
        point *np = realloc(R->pts, (size_t)cap * sizeof *np);
        if (!np) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        R->pts = np;
        R->cap_pts = cap;
    }
    R->pts[R->n_pts++] = p;
    R->es_tf_sum = R->es_gen_sum = R->sec_sum = 0;
    R->es_n = 0;
    GRAFT_TRY(append_point(R, &p));
    GRAFT_TRY(write_plot(R));
    return write_summary(R, done == R->n);
}

static int is_point(const runner *R, long done) {
    if (done == R->n) return 1;
    if (R->o->eval_at == GRAFT_EVAL_EACH) return 1;
    if (R->o->eval_at == GRAFT_EVAL_END) return 0;
    return R->o->eval_every > 0 && done % R->o->eval_every == 0;
}

/* Resume: keep the results lines up to `done` edits (a torn last line is
 * dropped), reload them as points, and rebuild the ES window from the journal. */
typedef struct {
    runner *R;
    long from;
} es_ctx;

static graft_status es_from_journal(void *user, const graft_journal_entry *en) {
    es_ctx *c = user;
    if (strcmp(en->kind, "edit")) return GRAFT_OK;
    cJSON *j = cJSON_Parse(en->request);
    const cJSON *g = cJSON_GetObjectItem(j, "es_gen"), *b = cJSON_GetObjectItem(j, "batch");
    const cJSON *row = cJSON_GetObjectItem(j, "row"), *rows = cJSON_GetObjectItem(j, "rows"), *ok = cJSON_GetObjectItem(j, "ok");
    int nb = cJSON_IsNumber(b) ? b->valueint : 1;
    double es = cJSON_IsNumber(g) ? g->valuedouble : 0;
    /* which requests failed: the per-request flags of a batch, else its ES */
    for (int k = 0; k < nb; k++) {
        const cJSON *f = cJSON_IsArray(ok) ? cJSON_GetArrayItem(ok, k) : NULL;
        int good = f ? cJSON_IsTrue(f) : es >= 1.0;
        const cJSON *rk = cJSON_IsArray(rows) ? cJSON_GetArrayItem(rows, k) : row;
        if (!good) note_failed(c->R, cJSON_IsNumber(rk) ? rk->valueint : -1);
    }
    if (en->seq < c->from) {
        cJSON_Delete(j);
        return GRAFT_OK;
    }
    const cJSON *tf = cJSON_GetObjectItem(j, "es_tf"); /* older journals: the reproduced flag */
    c->R->es_tf_sum += cJSON_IsNumber(tf) ? tf->valuedouble * nb : nb == 1 ? en->info.reproduced : es * nb;
    c->R->es_gen_sum += es * nb;
    c->R->sec_sum += en->seconds;
    c->R->es_n += nb;
    cJSON_Delete(j);
    return GRAFT_OK;
}

static graft_status reload_points(runner *R, long done) {
    char *text = NULL;
    if (!graft_path_exists(R->results_path)) return GRAFT_OK;
    GRAFT_TRY(graft_read_file(R->results_path, &text, NULL));
    char *kept = malloc(strlen(text) + 1);
    if (!kept) {
        free(text);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    size_t kl = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        errno = 0;
        cJSON *j = cJSON_Parse(line);
        if (!j && errno == ENOMEM) {
            /* not a torn line: keep it (dropping it would lose the point for good) */
            free(kept);
            free(text);
            return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", R->results_path);
        }
        const cJSON *e = cJSON_GetObjectItem(j, "edits");
        if (j && cJSON_IsNumber(e) && (long)e->valuedouble <= done) {
            point p;
            memset(&p, 0, sizeof p);
#define GETD(f) do { const cJSON *v_ = cJSON_GetObjectItem(j, #f); p.f = cJSON_IsNumber(v_) ? v_->valuedouble : NAN; } while (0)
            GETD(es_tf); GETD(es_gen); GETD(err_tf); GETD(err_gen); GETD(trr_tf); GETD(trr_gen);
            GETD(gen_tf); GETD(gen_gen); GETD(ppl); GETD(sec_per_edit); GETD(known_tf); GETD(known_gen);
            GETD(dw_norm); GETD(gen_entropy);
            { const cJSON *v_ = cJSON_GetObjectItem(j, "cf_efficacy"); p.cf_es = cJSON_IsNumber(v_) ? v_->valuedouble : NAN; }
            { const cJSON *v_ = cJSON_GetObjectItem(j, "cf_paraphrase"); p.cf_ps = cJSON_IsNumber(v_) ? v_->valuedouble : NAN; }
            { const cJSON *v_ = cJSON_GetObjectItem(j, "cf_neighborhood"); p.cf_ns = cJSON_IsNumber(v_) ? v_->valuedouble : NAN; }
            p.collapsed = cJSON_IsTrue(cJSON_GetObjectItem(j, "collapsed"));
#undef GETD
            p.edits = (long)e->valuedouble;
            const cJSON *k = cJSON_GetObjectItem(j, "keys"), *el = cJSON_GetObjectItem(j, "elapsed_s");
            p.keys = cJSON_IsNumber(k) ? (long)k->valuedouble : 0;
            p.elapsed = cJSON_IsNumber(el) ? el->valuedouble : 0;
            if (R->n_pts == R->cap_pts) {
                int cap = R->cap_pts ? 2 * R->cap_pts : 32;
                point *np = realloc(R->pts, (size_t)cap * sizeof *np);
                if (!np) {
                    cJSON_Delete(j);
                    free(kept);
                    free(text);
                    return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", R->results_path);
                }
                R->pts = np, R->cap_pts = cap;
            }
            R->pts[R->n_pts++] = p;
            size_t L = strlen(line);
            memcpy(kept + kl, line, L);
            kl += L;
            kept[kl++] = '\n';
        }
        cJSON_Delete(j);
    }
    free(text);
    graft_status st = graft_write_file_atomic(R->results_path, kept, kl);
    free(kept);
    if (st != GRAFT_OK) return st;
    R->elapsed_before = R->n_pts ? R->pts[R->n_pts - 1].elapsed : 0;
    /* the collapse baseline and verdict travel with the points */
    if (R->n_pts) {
        R->known0 = R->pts[0].known_gen;
        R->ppl0 = R->pts[0].ppl;
        for (int i = 0; i < R->n_pts && R->collapse_at < 0; i++)
            if (R->pts[i].collapsed) {
                /* the same words as when it was first detected, from the point's own figures */
                R->collapse_at = R->pts[i].edits;
                if (!collapse_reason(R, &R->pts[i], R->collapse_why, sizeof R->collapse_why))
                    snprintf(R->collapse_why, sizeof R->collapse_why, "recorded before the run was resumed");
            }
    }
    long last_point = R->n_pts ? R->pts[R->n_pts - 1].edits : 0;
    es_ctx c = {R, last_point};
    return graft_journal_each(R->j, es_from_journal, &c);
}

/* One journal row for requests [i, i + n): one edit, or one batch whose row
 * sits at its last request (so a resumed stream continues after it). */
static graft_status journal_edit(runner *R, int i, int n, const graft_edit_info *info, double secs, double es_gen,
                                 double es_tf, const int *ok, const graft_blob *ch) {
    const graft_edit_request *q = &R->ds.req[i];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "row", q->row);
    cJSON_AddNumberToObject(r, "case_id", (double)q->case_id);
    cJSON_AddStringToObject(r, "prompt", q->prompt);
    cJSON_AddStringToObject(r, "target", q->target);
    cJSON_AddNumberToObject(r, "es_gen", es_gen);
    cJSON_AddNumberToObject(r, "es_tf", es_tf);
    if (n > 1) {
        cJSON_AddNumberToObject(r, "batch", n);
        cJSON *rows = cJSON_AddArrayToObject(r, "rows"), *oks = cJSON_AddArrayToObject(r, "ok");
        for (int k = 0; k < n; k++) {
            graft_json_push(rows, cJSON_CreateNumber(R->ds.req[i + k].row));
            graft_json_push(oks, cJSON_CreateBool(ok[k]));
        }
    }
    char *req = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    if (!req) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    graft_journal_entry en;
    memset(&en, 0, sizeof en);
    en.seq = i + n - 1;
    en.kind = "edit";
    en.method = R->e->ops->name;
    en.request = req;
    en.info = *info;
    en.seconds = secs;
    en.change = ch->data;
    en.change_len = ch->len;
    graft_status st = graft_journal_append(R->j, &en);
    free(req);
    return st;
}

static void runner_free(runner *R) {
    graft_dataset_free(&R->ds);
    set_free(&R->edits), set_free(&R->reph), set_free(&R->up);
    set_free(&R->edits_true), set_free(&R->reph_true), set_free(&R->nb_true), set_free(&R->nb_new);
    free(R->w0);
    free(R->base_tf), free(R->base_gen), free(R->ppl_ids);
    if (R->e) R->e->ops->free(R->e);
    graft_journal_close(R->j);
    free(R->results_path), free(R->plot_path), free(R->summary_path);
    free(R->pts);
    free(R->failed_rows);
}

/* A model folder may carry editing.json: per method, the options measured to
 * suit that model (e.g. GRACE's layer and radius from an eps sweep; the key
 * scale differs from model to model, so one built-in radius cannot fit all).
 * They fill in what the user did not give; the journal keeps the result. */
graft_status graft_edit_model_defaults(const char *model_path, const char *method, const char *user, char **merged) {
    *merged = NULL;
    char *path = model_path ? graft_path_join(model_path, "editing.json") : NULL, *text = NULL;
    if (!path || !graft_path_exists(path)) {
        free(path);
        return GRAFT_OK;
    }
    graft_status st = graft_read_file(path, &text, NULL);
    cJSON *all = st == GRAFT_OK ? cJSON_Parse(text) : NULL, *u = cJSON_Parse(user && *user ? user : "{}");
    const cJSON *mine = cJSON_GetObjectItem(all, method);
    if (st == GRAFT_OK && !cJSON_IsObject(all))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: not a JSON object of per-method editor options", path);
    else if (st == GRAFT_OK && mine && !cJSON_IsObject(mine))
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: field '%s' is not an object of editor options", path, method);
    if (st == GRAFT_OK && mine && cJSON_IsObject(u)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, mine)
            if (!cJSON_GetObjectItem(u, it->string)) graft_json_put(u, it->string, cJSON_Duplicate(it, 1));
        *merged = cJSON_PrintUnformatted(u);
        if (!*merged) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else fprintf(stderr, "graft: %s defaults from %s (options given win): %s\n", method, path, *merged);
    }
    cJSON_Delete(all), cJSON_Delete(u);
    free(text), free(path);
    return st;
}

graft_status graft_stream_run(graft_model *m, const graft_stream_opts *o) {
    runner R;
    memset(&R, 0, sizeof R);
    R.m = m;
    R.o = o;
    R.t_start = graft_now_s();
    R.collapse_at = -1;
    if (o->batch < 1) return graft_fail(GRAFT_ERR_INVALID, "--batch must be at least 1");
    char *merged = NULL;
    graft_status st = prepare(&R);
    if (st == GRAFT_OK) st = graft_edit_model_defaults(o->model_path, o->method, o->editor_opts, &merged);
    if (st == GRAFT_OK) st = graft_editor_create(m, o->method, merged ? merged : o->editor_opts, &R.e);
    free(merged);
    if (st == GRAFT_OK && o->batch > 1 && !R.e->ops->apply_batch)
        st = graft_fail(GRAFT_ERR_INVALID, "%s applies one request at a time (--batch 1); batches are for melo, memit and emmet",
                        o->method);
    if (st == GRAFT_OK) st = graft_journal_open(o->out_dir, 1, &R.j);
    if (st == GRAFT_OK) {
        R.results_path = graft_path_join(o->out_dir, "results.jsonl");
        R.plot_path = graft_path_join(o->out_dir, "retention.svg");
        R.summary_path = graft_path_join(o->out_dir, "summary.json");
        if (!R.results_path || !R.plot_path || !R.summary_path) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    char fp[128];
    graft_model_fingerprint(m, fp, sizeof fp);
    int64_t live = 0, last_seq = -1;
    if (st == GRAFT_OK) st = graft_journal_replay(R.j, R.e, &live, &last_seq);
    if (st == GRAFT_OK && last_seq >= 0 && !o->resume)
        st = graft_fail(GRAFT_ERR_INVALID, "%s already holds a run with %lld edits: add --resume to continue it, or choose another --out",
                        o->out_dir, (long long)(last_seq + 1));
    /* the settings a resumed run must share with its start (fingerprint taken
     * before any replay: weight editors change the weights it reads) */
    char n_str[32], *opts = NULL;
    snprintf(n_str, sizeof n_str, "%d", R.n);
    if (st == GRAFT_OK) st = graft_editor_opts_json(R.e, &opts);
    if (st == GRAFT_OK) st = check_meta(&R, "method", o->method);
    if (st == GRAFT_OK) st = check_meta(&R, "editor_options", opts);
    if (st == GRAFT_OK) st = check_meta(&R, "model_fingerprint", fp);
    if (st == GRAFT_OK) st = check_meta(&R, "data", o->data_path);
    if (st == GRAFT_OK) st = check_meta(&R, "n_requests", n_str);
    if (st == GRAFT_OK && o->model_path) st = check_meta(&R, "model", o->model_path);
    free(opts);

    long done = last_seq + 1;
    /* MELO trains one block per batch: say up front when the stream needs more
     * blocks than the editor has, instead of failing at the edit that runs out */
    if (st == GRAFT_OK && graft_melo_is(R.e)) {
        int used, total, grow;
        graft_melo_capacity(R.e, &used, &total, &grow);
        long need = (R.n - done + o->batch - 1) / o->batch;
        if (!grow && used + need > total)
            st = graft_fail(GRAFT_ERR_RANGE,
                            "MELO: the stream needs %ld more blocks (%ld edits in batches of %d) but only %d of %d are "
                            "free; raise --blocks or pass --grow-blocks",
                            need, R.n - done, o->batch, total - used, total);
    }
    if (st == GRAFT_OK && done == 0 && graft_path_exists(R.results_path)) unlink(R.results_path);
    if (st == GRAFT_OK) st = reload_points(&R, done);
    if (st == GRAFT_OK && R.n_pts == 0) {
        /* the baseline point, on the unedited model; keep the ES window a
         * resumed run rebuilt from its journal */
        double s1 = R.es_tf_sum, s2 = R.es_gen_sum, s3 = R.sec_sum;
        int sn = R.es_n;
        st = evaluate(&R, 0);
        R.es_tf_sum = s1, R.es_gen_sum = s2, R.sec_sum = s3, R.es_n = sn;
    }
    /* a crash between an edit's commit and the evaluation at that point */
    if (st == GRAFT_OK && done > 0 && R.pts[R.n_pts - 1].edits < done && is_point(&R, done)) st = evaluate(&R, done);

    graft_progress pg;
    if (o->progress) graft_progress_start(&pg, "edits", R.n, done);
    for (long i = done; st == GRAFT_OK && i < R.n;) {
        int nb = (int)(R.n - i < o->batch ? R.n - i : o->batch);
        graft_edit_tok *reqs = malloc((size_t)nb * sizeof *reqs);
        if (!reqs) {
            st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
            break;
        }
        for (int k = 0; k < nb; k++) {
            const graft_eval_item *it = &R.edits.it[i + k];
            reqs[k] = (graft_edit_tok){it->prompt, it->n_prompt, it->target, it->n_target,
                                       graft_subject_last(R.tok, R.ds.req[i + k].prompt, R.ds.req[i + k].subject)};
            if (reqs[k].subject_last >= reqs[k].n_prompt) reqs[k].subject_last = -1;
        }
        graft_edit_info info;
        graft_blob ch = {0};
        double t0 = graft_now_s();
        st = nb == 1 ? R.e->ops->apply(R.e, &reqs[0], &info, &ch) : R.e->ops->apply_batch(R.e, reqs, nb, &info, &ch);
        double secs = graft_now_s() - t0;
        free(reqs);
        /* ES of every request of the step, right after it */
        acc a = {0};
        int *ok = malloc((size_t)nb * sizeof *ok), n_bad = 0;
        if (st == GRAFT_OK && !ok) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        if (st == GRAFT_OK) st = measure(m, R.e, &R.edits.it[i], nb, NULL, NULL, &a, ok);
        for (int k = 0; st == GRAFT_OK && k < nb; k++) n_bad += !ok[k];
        /* --require-success: a failed edit is not committed; the stream stops
         * before it (a --resume tries it again) */
        if (st == GRAFT_OK && n_bad && o->require_success)
            st = graft_fail(GRAFT_ERR_EDIT_FAILED,
                            "the edit did not take: greedy generation does not give the target '%.60s' (loss %.3f -> %.3f "
                            "after %d steps); not committed, the journal ends at the edit before it",
                            R.ds.req[i].target, info.loss_first, info.loss_last, info.iterations);
        /* durable before it counts */
        if (st == GRAFT_OK) st = journal_edit(&R, (int)i, nb, &info, secs, a.gen, a.tf_true, ok, &ch);
        graft_blob_free(&ch);
        if (st != GRAFT_OK) {
            free(ok);
            graft_fail_prefix(st, "%s: row %d", o->data_path, R.ds.req[i].row);
            break;
        }
        for (int k = 0; k < nb; k++)
            if (!ok[k]) note_failed(&R, R.ds.req[i + k].row);
        free(ok);
        R.es_tf_sum += a.tf_true * nb;
        R.es_gen_sum += a.gen * nb;
        R.sec_sum += secs;
        R.es_n += nb;
        long before = i;
        i += nb;
        /* evaluate once if the step crossed one or more points */
        int crossed = 0;
        for (long d = before + 1; d <= i; d++) crossed |= is_point(&R, d);
        if (crossed) st = evaluate(&R, i);
        if (o->progress) {
            char extra[128], last[32] = "";
            const point *p = R.n_pts ? &R.pts[R.n_pts - 1] : NULL;
            if (R.n_failed && R.n_failed <= R.cap_failed) /* which: the latest failure's data row */
                snprintf(last, sizeof last, " (last: row %d)", R.failed_rows[R.n_failed - 1]);
            snprintf(extra, sizeof extra, "ERR(gen) %.3f  TRR(gen) %.3f  failed %d%s", p ? p->err_gen : NAN,
                     p ? p->trr_gen : NAN, R.n_failed, last);
            graft_progress_update(&pg, i, extra);
        }
    }
    if (o->progress) graft_progress_end(&pg);
    if (st == GRAFT_OK) {
        /* GRACE's state is its codebook; weight editors export their deltas */
        char *cb = graft_path_join(o->out_dir, strcmp(R.e->ops->name, "grace") ? "edit_state.safetensors"
                                                                                : "codebook.safetensors");
        if (!cb) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else if (R.e->ops->export_st) st = R.e->ops->export_st(R.e, cb);
        free(cb);
    }
    runner_free(&R);
    return st;
}
