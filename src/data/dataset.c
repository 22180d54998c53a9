/* dataset.c - loading edit-request datasets (CounterFact, zsRE, WISE
 * hallucination/temporal, graft JSONL) into graft_dataset. The rules are in
 * dataset.h; this file keeps every error naming file, row and field. */
#define _GNU_SOURCE
#include "data/dataset.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const graft_dataset_formats[] = {"counterfact", "zsre", "hallucination", "temporal", "jsonl", NULL};

typedef enum { FMT_COUNTERFACT, FMT_ZSRE, FMT_HALLUCINATION, FMT_TEMPORAL, FMT_JSONL, FMT_AUTO } ds_format;

/* Where a record came from, for messages. */
typedef struct {
    const char *path;
    int row;
    unsigned flags;
} rec_ctx;

/* ---------------------------------------------------------------- helpers */

static graft_status rec_fail(const rec_ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static graft_status rec_fail(const rec_ctx *c, const char *field, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (field) return graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: field '%s': %s", c->path, c->row, field, msg);
    return graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: %s", c->path, c->row, msg);
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

static bool all_space(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v') return false;
    return true;
}

/* How an empty string is treated by take_string. */
typedef enum { EMPTY_ERROR, EMPTY_OK } empty_rule;

/* Copy the string value v (already known to be a string) after checking its
 * UTF-8; `what` names it in messages ("prompt", "rephrase[2]"). */
static graft_status take_string(const rec_ctx *c, const char *what, const cJSON *v, empty_rule er, char **out) {
    *out = NULL;
    if (!cJSON_IsString(v) || !v->valuestring)
        return rec_fail(c, what, "want a string, got %s", json_type_name(v));
    const char *s = v->valuestring;
    size_t n = strlen(s), bad = 0;
    if (!graft_utf8_valid(s, n, &bad)) return rec_fail(c, what, "invalid UTF-8 at byte %zu of the string", bad);
    if (er == EMPTY_ERROR && all_space(s)) return rec_fail(c, what, "empty");
    *out = strdup(s);
    if (!*out) return graft_fail(GRAFT_ERR_NOMEM, "%s: row %d: out of memory", c->path, c->row);
    return GRAFT_OK;
}

/* A string field. required: absent or null is an error; otherwise *out = NULL. */
static graft_status get_string(const rec_ctx *c, const cJSON *obj, const char *key, bool required, empty_rule er,
                               char **out) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return required ? rec_fail(c, key, v ? "null, want a string" : "missing") : GRAFT_OK;
    return take_string(c, key, v, er, out);
}

static void free_strings(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* A field that is one string or a list of strings (rephrases: one in
 * CounterFact/zsRE, a list in graft JSONL). Absent/null -> none when optional. */
static graft_status get_string_list(const rec_ctx *c, const cJSON *obj, const char *key, bool required, char ***out,
                                    int *n_out) {
    *out = NULL;
    *n_out = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return required ? rec_fail(c, key, v ? "null, want a string" : "missing") : GRAFT_OK;
    if (cJSON_IsString(v)) {
        char **a = malloc(sizeof *a);
        if (!a) return graft_fail(GRAFT_ERR_NOMEM, "%s: row %d: out of memory", c->path, c->row);
        graft_status st = take_string(c, key, v, EMPTY_ERROR, &a[0]);
        if (st != GRAFT_OK) {
            free(a);
            return st;
        }
        *out = a;
        *n_out = 1;
        return GRAFT_OK;
    }
    if (!cJSON_IsArray(v)) return rec_fail(c, key, "want a string or a list of strings, got %s", json_type_name(v));
    int n = cJSON_GetArraySize(v);
    if (n == 0) return GRAFT_OK;
    char **a = calloc((size_t)n, sizeof *a);
    if (!a) return graft_fail(GRAFT_ERR_NOMEM, "%s: row %d: out of memory", c->path, c->row);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char what[96];
        snprintf(what, sizeof what, "%s[%d]", key, i);
        graft_status st = take_string(c, what, e, EMPTY_ERROR, &a[i]);
        if (st != GRAFT_OK) {
            free_strings(a, i);
            return st;
        }
        i++;
    }
    *out = a;
    *n_out = n;
    return GRAFT_OK;
}

static void req_free(graft_edit_request *r) {
    free(r->prompt);
    free(r->target);
    free(r->ground_truth);
    free(r->subject);
    free_strings(r->rephrases, r->n_rephrases);
    free_strings(r->loc_prompts, r->n_loc);
    free_strings(r->loc_answers, r->n_loc);
    memset(r, 0, sizeof *r);
}

/* Append one locality pair, taking ownership of p and a (freed on failure).
 * An empty answer drops the pair (counted): nothing could be compared on it. */
static graft_status add_loc(const rec_ctx *c, graft_edit_request *r, char *p, char *a, int *n_loc_dropped) {
    if (all_space(a)) {
        free(p);
        free(a);
        (*n_loc_dropped)++;
        return GRAFT_OK;
    }
    char **np = realloc(r->loc_prompts, (size_t)(r->n_loc + 1) * sizeof *np);
    if (np) r->loc_prompts = np;
    char **na = np ? realloc(r->loc_answers, (size_t)(r->n_loc + 1) * sizeof *na) : NULL;
    if (na) r->loc_answers = na;
    if (!np || !na) {
        free(p);
        free(a);
        return graft_fail(GRAFT_ERR_NOMEM, "%s: row %d: out of memory", c->path, c->row);
    }
    r->loc_prompts[r->n_loc] = p;
    r->loc_answers[r->n_loc] = a;
    r->n_loc++;
    return GRAFT_OK;
}

/* The locality pair of the EasyEdit schemas: two parallel string fields. */
static graft_status get_loc_pair(const rec_ctx *c, const cJSON *obj, const char *pkey, const char *akey,
                                 graft_edit_request *r, int *n_loc_dropped) {
    char *p = NULL, *a = NULL;
    graft_status st = get_string(c, obj, pkey, true, EMPTY_ERROR, &p);
    if (st == GRAFT_OK) st = get_string(c, obj, akey, true, EMPTY_OK, &a);
    if (st != GRAFT_OK) {
        free(p);
        return st;
    }
    return add_loc(c, r, p, a, n_loc_dropped);
}

/* An integer id (case_id / id): integral and within long. */
static graft_status get_id(const rec_ctx *c, const cJSON *obj, const char *key, long fallback, long *out) {
    *out = fallback;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return GRAFT_OK;
    if (!cJSON_IsNumber(v)) return rec_fail(c, key, "want an integer, got %s", json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > 9.0e15) return rec_fail(c, key, "want an integer, got %g", d);
    *out = (long)d;
    return GRAFT_OK;
}

/* The target: empty -> error, or with KEEP_EMPTY_TARGET kept as "", or (zsRE
 * rule, *drop set) the record is skipped. */
static graft_status get_target(const rec_ctx *c, const cJSON *obj, const char *key, bool drop_if_empty,
                               graft_edit_request *r, bool *drop) {
    bool keep = (c->flags & GRAFT_DATASET_KEEP_EMPTY_TARGET) != 0;
    GRAFT_TRY(get_string(c, obj, key, true, (keep || drop_if_empty) ? EMPTY_OK : EMPTY_ERROR, &r->target));
    if (!keep && drop_if_empty && all_space(r->target)) *drop = true;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- schemas */

static graft_status parse_counterfact(const rec_ctx *c, const cJSON *o, graft_edit_request *r, int *nld) {
    bool drop = false;
    GRAFT_TRY(get_string(c, o, "prompt", true, EMPTY_ERROR, &r->prompt));
    GRAFT_TRY(get_target(c, o, "target_new", false, r, &drop));
    GRAFT_TRY(get_string(c, o, "ground_truth", true, EMPTY_ERROR, &r->ground_truth));
    GRAFT_TRY(get_string(c, o, "subject", true, EMPTY_ERROR, &r->subject));
    GRAFT_TRY(get_string_list(c, o, "rephrase_prompt", true, &r->rephrases, &r->n_rephrases));
    GRAFT_TRY(get_loc_pair(c, o, "locality_prompt", "locality_ground_truth", r, nld));
    return get_id(c, o, "case_id", r->case_id, &r->case_id);
}

static graft_status parse_zsre(const rec_ctx *c, const cJSON *o, graft_edit_request *r, int *nld, bool *drop) {
    GRAFT_TRY(get_string(c, o, "src", true, EMPTY_ERROR, &r->prompt));
    GRAFT_TRY(get_target(c, o, "alt", true, r, drop));
    if (*drop) return GRAFT_OK;
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answers");
    if (!ans) return rec_fail(c, "answers", "missing");
    if (!cJSON_IsArray(ans)) return rec_fail(c, "answers", "want a list of strings, got %s", json_type_name(ans));
    if (cJSON_GetArraySize(ans) < 1) return rec_fail(c, "answers", "empty list");
    /* Only answers[0] is used (ground truth), but every element is checked so
     * a bad file is caught wherever it is broken. */
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ans) {
        char what[32], *s = NULL;
        snprintf(what, sizeof what, "answers[%d]", i);
        GRAFT_TRY(take_string(c, what, e, EMPTY_ERROR, &s));
        if (i == 0) r->ground_truth = s;
        else free(s);
        i++;
    }
    GRAFT_TRY(get_string(c, o, "subject", true, EMPTY_ERROR, &r->subject));
    GRAFT_TRY(get_string_list(c, o, "rephrase", true, &r->rephrases, &r->n_rephrases));
    return get_loc_pair(c, o, "loc", "loc_ans", r, nld);
}

static graft_status parse_wise(const rec_ctx *c, const cJSON *o, bool temporal, graft_edit_request *r, int *nld) {
    bool drop = false;
    GRAFT_TRY(get_string(c, o, "prompt", true, EMPTY_ERROR, &r->prompt));
    GRAFT_TRY(get_target(c, o, "target_new", false, r, &drop));
    GRAFT_TRY(get_string(c, o, "subject", true, EMPTY_ERROR, &r->subject));
    if (temporal) GRAFT_TRY(get_string_list(c, o, "ood_rephrase", true, &r->rephrases, &r->n_rephrases));
    return get_loc_pair(c, o, "locality_prompt", "locality_ground_truth", r, nld);
}

static graft_status parse_jsonl_rec(const rec_ctx *c, const cJSON *o, graft_edit_request *r, int *nld) {
    bool drop = false;
    GRAFT_TRY(get_string(c, o, "prompt", true, EMPTY_ERROR, &r->prompt));
    GRAFT_TRY(get_target(c, o, "target", false, r, &drop));
    GRAFT_TRY(get_string(c, o, "ground_truth", false, EMPTY_ERROR, &r->ground_truth));
    GRAFT_TRY(get_string(c, o, "subject", false, EMPTY_ERROR, &r->subject));
    GRAFT_TRY(get_string_list(c, o, "rephrases", false, &r->rephrases, &r->n_rephrases));
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(o, "locality");
    if (loc && !cJSON_IsNull(loc)) {
        if (!cJSON_IsArray(loc))
            return rec_fail(c, "locality", "want a list of {\"prompt\", \"answer\"} objects, got %s",
                            json_type_name(loc));
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, loc) {
            char pk[48], ak[48];
            snprintf(pk, sizeof pk, "locality[%d].prompt", i);
            snprintf(ak, sizeof ak, "locality[%d].answer", i);
            if (!cJSON_IsObject(e))
                return rec_fail(c, pk, "locality[%d] is %s, want an object", i, json_type_name(e));
            const cJSON *pv = cJSON_GetObjectItemCaseSensitive(e, "prompt");
            const cJSON *av = cJSON_GetObjectItemCaseSensitive(e, "answer");
            if (!pv) return rec_fail(c, pk, "missing");
            if (!av) return rec_fail(c, ak, "missing");
            char *p = NULL, *a = NULL;
            GRAFT_TRY(take_string(c, pk, pv, EMPTY_ERROR, &p));
            graft_status st = take_string(c, ak, av, EMPTY_OK, &a);
            if (st != GRAFT_OK) {
                free(p);
                return st;
            }
            GRAFT_TRY(add_loc(c, r, p, a, nld));
            i++;
        }
    }
    return get_id(c, o, "id", r->case_id, &r->case_id);
}

static ds_format guess_format(const cJSON *o) {
    if (!cJSON_IsObject(o)) return FMT_AUTO;
#define HAS(k) (cJSON_GetObjectItemCaseSensitive(o, k) != NULL)
    if (HAS("src") && HAS("alt")) return FMT_ZSRE;
    if (HAS("ood_rephrase")) return FMT_TEMPORAL;
    if (HAS("target_new") && (HAS("ground_truth") || HAS("rephrase_prompt"))) return FMT_COUNTERFACT;
    if (HAS("target_new")) return FMT_HALLUCINATION;
    if (HAS("prompt") && HAS("target")) return FMT_JSONL;
#undef HAS
    return FMT_AUTO;
}

static graft_status guess_fail(const char *path, int row, const cJSON *o) {
    char keys[256] = "";
    size_t k = 0;
    const cJSON *e;
    if (cJSON_IsObject(o)) {
        cJSON_ArrayForEach(e, o) {
            int w = snprintf(keys + k, sizeof keys - k, "%s%s", k ? ", " : "", e->string ? e->string : "?");
            if (w < 0 || (size_t)w >= sizeof keys - k) break;
            k += (size_t)w;
        }
    }
    return graft_fail(GRAFT_ERR_FORMAT,
                      "%s: row %d: cannot tell the dataset format from a record with keys {%s}; "
                      "name it (counterfact, zsre, hallucination, temporal, jsonl)",
                      path, row, keys);
}

/* ---------------------------------------------------------------- loading */

typedef struct {
    graft_dataset *d;
    int cap;
    ds_format fmt;
    long max_rows;
    long index; /* 0-based record index, counting dropped records */
    unsigned flags;
} loader;

/* Parse one record object into the dataset. */
static graft_status add_record(loader *L, const cJSON *o, int row) {
    graft_dataset *d = L->d;
    rec_ctx c = {d->path, row, L->flags};
    if (!cJSON_IsObject(o)) return rec_fail(&c, NULL, "want a JSON object, got %s", json_type_name(o));
    if (L->fmt == FMT_AUTO) {
        L->fmt = guess_format(o);
        if (L->fmt == FMT_AUTO) return guess_fail(d->path, row, o);
        d->format = strdup(graft_dataset_formats[L->fmt]);
        if (!d->format) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", d->path);
    }
    graft_edit_request r;
    memset(&r, 0, sizeof r);
    r.row = row;
    r.case_id = L->index++;
    bool drop = false;
    graft_status st;
    switch (L->fmt) {
    case FMT_COUNTERFACT: st = parse_counterfact(&c, o, &r, &d->n_loc_dropped); break;
    case FMT_ZSRE: st = parse_zsre(&c, o, &r, &d->n_loc_dropped, &drop); break;
    case FMT_HALLUCINATION: st = parse_wise(&c, o, false, &r, &d->n_loc_dropped); break;
    case FMT_TEMPORAL: st = parse_wise(&c, o, true, &r, &d->n_loc_dropped); break;
    case FMT_JSONL: st = parse_jsonl_rec(&c, o, &r, &d->n_loc_dropped); break;
    default: st = graft_fail(GRAFT_ERR_INTERNAL, "%s: no dataset format chosen", d->path); break;
    }
    if (st != GRAFT_OK || drop) {
        req_free(&r);
        if (drop) d->n_dropped++;
        return st;
    }
    if (d->n == L->cap) {
        if (L->cap > INT_MAX / 2) {
            req_free(&r);
            return graft_fail(GRAFT_ERR_RANGE, "%s: row %d: more than %d records", d->path, row, L->cap);
        }
        int nc = L->cap ? L->cap * 2 : 64;
        graft_edit_request *nr = realloc(d->req, (size_t)nc * sizeof *nr);
        if (!nr) {
            req_free(&r);
            return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", d->path);
        }
        d->req = nr;
        L->cap = nc;
    }
    d->req[d->n++] = r;
    return GRAFT_OK;
}

static bool loader_full(const loader *L) { return L->max_rows > 0 && L->d->n >= L->max_rows; }

/* For a syntax error at `off` in a JSON list: the 1-based line, and the
 * 1-based record the offset falls in (0: before the first record), found by
 * walking the bytes with string/escape state. */
static void locate_in_list(const char *buf, size_t off, long *line, int *row) {
    long ln = 1;
    int rec = 0, depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < off; i++) {
        char ch = buf[i];
        if (ch == '\n') ln++;
        if (in_str) {
            if (esc) esc = false;
            else if (ch == '\\') esc = true;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') {
            if (depth == 1 && ch == '{') rec++;
            depth++;
        } else if (ch == '}' || ch == ']') depth--;
    }
    *line = ln;
    *row = rec;
}

/* cJSON decodes a "\u0000" escape into a NUL that silently truncates the C
 * string; find such escapes first (an escape is a backslash preceded by an
 * even run of backslashes). Returns the offset or (size_t)-1. */
static size_t find_nul_escape(const char *buf, size_t n) {
    for (size_t i = 0; i + 6 <= n; i++) {
        if (buf[i] != '\\' || buf[i + 1] != 'u' || memcmp(buf + i + 2, "0000", 4) != 0) continue;
        size_t k = 0;
        while (k < i && buf[i - 1 - k] == '\\') k++;
        if (k % 2 == 0) return i;
    }
    return (size_t)-1;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A syntax error at byte `off` of a JSON list, named by record and line. */
static graft_status list_syntax_fail(const char *path, const char *buf, size_t off) {
    long line;
    int row;
    locate_in_list(buf, off, &line, &row);
    if (row > 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: not valid JSON at byte offset %zu (line %ld)", path, row, off,
                          line);
    return graft_fail(GRAFT_ERR_FORMAT, "%s: not valid JSON at byte offset %zu (line %ld)", path, off, line);
}

/* The list is parsed one record at a time (cJSON stops after the value it
 * was given the start of), so only one record's tree is in memory and
 * loading stops after max_rows records: parsing the whole list first took
 * about 5.5x the file in memory (1.4 GiB for 10^6 CounterFact records) even
 * for --n 3. As with JSONL, bytes after the last record taken are not read. */
static graft_status load_list(loader *L, const char *buf, size_t size, size_t start) {
    const char *path = L->d->path;
    const char *e = buf + size;
    const char *p = skip_ws(buf + start, e);
    if (p == e || *p != '[')
        return graft_fail(GRAFT_ERR_FORMAT, "%s: the top level is not a JSON list of records", path);
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']') p++; /* an empty list */
    else {
        for (int row = 1; !loader_full(L); row++) {
            if (row == INT_MAX) return graft_fail(GRAFT_ERR_RANGE, "%s: more than %d records", path, INT_MAX - 1);
            const char *vend = NULL;
            cJSON *o = cJSON_ParseWithLengthOpts(p, (size_t)(e - p), &vend, 0);
            if (!o) return list_syntax_fail(path, buf, vend ? (size_t)(vend - buf) : (size_t)(p - buf));
            graft_status st = add_record(L, o, row);
            cJSON_Delete(o);
            if (st != GRAFT_OK) return st;
            p = skip_ws(vend, e);
            if (p < e && *p == ',') {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (p < e && *p == ']') {
                p++;
                break;
            }
            return list_syntax_fail(path, buf, (size_t)(p - buf));
        }
        if (loader_full(L)) return GRAFT_OK;
    }
    /* only whitespace may follow the list */
    p = skip_ws(p, e);
    if (p < e) return list_syntax_fail(path, buf, (size_t)(p - buf));
    return GRAFT_OK;
}

static graft_status load_lines(loader *L, const char *buf, size_t size) {
    const char *path = L->d->path;
    size_t pos = 0;
    int line = 0;
    while (pos < size && !loader_full(L)) {
        const char *nl = memchr(buf + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (buf + pos)) : size - pos;
        if (line == INT_MAX) return graft_fail(GRAFT_ERR_RANGE, "%s: more than %d lines", path, INT_MAX - 1);
        line++;
        const char *s = buf + pos, *e = s + len;
        if (skip_ws(s, e) < e) {
            const char *pend = NULL;
            cJSON *o = cJSON_ParseWithLengthOpts(s, len, &pend, 0);
            if (o && pend && skip_ws(pend, e) < e) {
                cJSON_Delete(o);
                o = NULL;
                pend = skip_ws(pend, e);
            }
            if (!o) {
                size_t col = pend ? (size_t)(pend - s) : 0;
                return graft_fail(GRAFT_ERR_FORMAT,
                                  "%s: row %d: not valid JSON at byte %zu of the line (byte offset %zu)", path, line,
                                  col, pos + col);
            }
            graft_status st = add_record(L, o, line);
            cJSON_Delete(o);
            if (st != GRAFT_OK) return st;
        }
        pos += len + (nl ? 1 : 0);
    }
    return GRAFT_OK;
}

static ds_format parse_format_name(const char *format, bool *ok) {
    *ok = true;
    if (!format || !strcmp(format, "auto")) return FMT_AUTO;
    for (int i = 0; graft_dataset_formats[i]; i++)
        if (!strcmp(format, graft_dataset_formats[i])) return (ds_format)i;
    *ok = false;
    return FMT_AUTO;
}

void graft_dataset_free(graft_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) req_free(&d->req[i]);
    free(d->req);
    free(d->path);
    free(d->format);
    memset(d, 0, sizeof *d);
}

graft_status graft_dataset_load_ex(const char *path, const char *format, long max_rows, unsigned flags,
                                   graft_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!path) return graft_fail(GRAFT_ERR_INVALID, "dataset: no path given");
    bool ok;
    ds_format fmt = parse_format_name(format, &ok);
    if (!ok)
        return graft_fail(GRAFT_ERR_INVALID,
                          "%s: unknown dataset format '%s' (want counterfact, zsre, hallucination, temporal, jsonl "
                          "or auto)",
                          path, format);
    char *buf = NULL;
    size_t size = 0;
    GRAFT_TRY(graft_read_file(path, &buf, &size));

    graft_dataset d;
    memset(&d, 0, sizeof d);
    loader L = {&d, 0, fmt, max_rows, 0, flags};
    graft_status st = GRAFT_OK;
    d.path = strdup(path);
    if (fmt != FMT_AUTO) d.format = strdup(graft_dataset_formats[fmt]);
    if (!d.path || (fmt != FMT_AUTO && !d.format)) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }

    /* A UTF-8 byte-order mark is tolerated; editors on some systems add one. */
    size_t start = (size >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) ? 3 : 0;
    const char *first = skip_ws(buf + start, buf + size);
    bool is_list = first < buf + size && *first == '[';
    /* NULs (raw or escaped) would silently cut strings short: refuse them. */
    const char *nul = memchr(buf, '\0', size);
    size_t nul_esc = find_nul_escape(buf, size);
    if (nul || nul_esc != (size_t)-1) {
        size_t off = nul ? (size_t)(nul - buf) : nul_esc;
        if (nul && nul_esc < off) off = nul_esc;
        long line = 1;
        int row = 0;
        if (is_list) locate_in_list(buf, off, &line, &row);
        else {
            for (size_t i = 0; i < off; i++) line += buf[i] == '\n';
            row = (int)line;
        }
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: row %d: a NUL character (byte offset %zu, line %ld); graft does not "
                        "accept NUL in text", path, row, off, line);
        goto done;
    }
    if (first == buf + size) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: the file is empty", path);
        goto done;
    }
    st = is_list ? load_list(&L, buf, size, start) : load_lines(&L, buf, size);
    if (st == GRAFT_OK && !d.format) {
        /* auto with no record to look at (an empty list): nothing to guess from. */
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: no records, so the dataset format cannot be guessed; name it", path);
    }
done:
    free(buf);
    if (st != GRAFT_OK) {
        graft_dataset_free(&d);
        return st;
    }
    *out = d;
    return GRAFT_OK;
}

graft_status graft_dataset_load(const char *path, const char *format, long max_rows, graft_dataset *out) {
    return graft_dataset_load_ex(path, format, max_rows, 0, out);
}
