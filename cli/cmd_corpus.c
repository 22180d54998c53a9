/*
 * cmd_corpus.c - graft corpus: build the fact corpus graft trains its own
 * small model on, from the public CounterFact and zsRE files in
 * ../shared/data. The recipe is fixed and documented in the README it writes
 * (data/facts/README.md); nothing is shuffled, so the output is a pure
 * function of the inputs and the flags, byte for byte.
 */
#include "cli.h"
#include "data/dataset.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMD "corpus"

/* ---------------------------------------------------------------- text buffer */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom; /* sticky: checked once before the buffer is written */
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (w < 0) return;
    if ((size_t)w < sizeof tmp) {
        sb_put(b, tmp, (size_t)w);
        return;
    }
    char *big = malloc((size_t)w + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)w + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)w);
    free(big);
}

/* A JSON string literal. Only '"', '\\' and control bytes are escaped; UTF-8
 * (already validated by the loader) is written as it is, which keeps the
 * files readable and smaller than \u-escaped ASCII. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sb_put(b, run, (size_t)(s - run));
        char esc[8];
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_puts(b, esc);
        }
        run = s + 1;
    }
    sb_put(b, run, (size_t)(s - run));
    sb_put(b, "\"", 1);
}

/* Any cJSON value, in the same ", " / ": " style as the other files. Returns
 * false for values graft does not write (raw or invalid nodes). */
static bool sb_json_value(sbuf *b, const cJSON *v) {
    if (cJSON_IsString(v)) sb_json_str(b, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (!isfinite(d)) return false;
        if (d == floor(d) && fabs(d) < 1e15) sb_printf(b, "%.0f", d);
        else sb_printf(b, "%.17g", d);
    } else if (cJSON_IsTrue(v)) sb_puts(b, "true");
    else if (cJSON_IsFalse(v)) sb_puts(b, "false");
    else if (cJSON_IsNull(v)) sb_puts(b, "null");
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        sb_puts(b, obj ? "{" : "[");
        const cJSON *e;
        int i = 0;
        cJSON_ArrayForEach(e, v) {
            if (i++) sb_puts(b, ", ");
            if (obj) {
                sb_json_str(b, e->string ? e->string : "");
                sb_puts(b, ": ");
            }
            if (!sb_json_value(b, e)) return false;
        }
        sb_puts(b, obj ? "}" : "]");
    } else return false;
    return true;
}

/* ---------------------------------------------------------------- fact sets */

typedef struct {
    char *prompt, *answer;
    const char *source;
    long case_id;
} fact;

/* Facts in insertion order plus an open-addressing index on the prompt. */
typedef struct {
    fact *v;
    int n, cap;
    int *slot; /* index into v, -1 empty */
    size_t nslot;
} factset;

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void fs_free(factset *fs) {
    for (int i = 0; i < fs->n; i++) {
        free(fs->v[i].prompt);
        free(fs->v[i].answer);
    }
    free(fs->v);
    free(fs->slot);
    memset(fs, 0, sizeof *fs);
}

/* Index of the fact with this prompt, or -1. */
static int fs_find(const factset *fs, const char *prompt) {
    if (!fs->nslot) return -1;
    size_t m = fs->nslot - 1;
    for (size_t i = str_hash(prompt) & m;; i = (i + 1) & m) {
        int k = fs->slot[i];
        if (k < 0) return -1;
        if (!strcmp(fs->v[k].prompt, prompt)) return k;
    }
}

static bool fs_grow_index(factset *fs) {
    size_t ns = fs->nslot ? fs->nslot * 2 : 1024;
    int *sl = malloc(ns * sizeof *sl);
    if (!sl) return false;
    for (size_t i = 0; i < ns; i++) sl[i] = -1;
    for (int k = 0; k < fs->n; k++) {
        size_t i = str_hash(fs->v[k].prompt) & (ns - 1);
        while (sl[i] >= 0) i = (i + 1) & (ns - 1);
        sl[i] = k;
    }
    free(fs->slot);
    fs->slot = sl;
    fs->nslot = ns;
    return true;
}

/* Append (copies the strings); the caller has checked the prompt is new. */
static bool fs_append(factset *fs, const char *prompt, const char *answer, const char *source, long case_id) {
    if ((size_t)(fs->n + 1) * 2 > fs->nslot && !fs_grow_index(fs)) return false;
    if (fs->n == fs->cap) {
        int nc = fs->cap ? fs->cap * 2 : 1024;
        fact *nv = realloc(fs->v, (size_t)nc * sizeof *nv);
        if (!nv) return false;
        fs->v = nv;
        fs->cap = nc;
    }
    fact f = {strdup(prompt), strdup(answer), source, case_id};
    if (!f.prompt || !f.answer) {
        free(f.prompt);
        free(f.answer);
        return false;
    }
    size_t i = str_hash(prompt) & (fs->nslot - 1);
    while (fs->slot[i] >= 0) i = (i + 1) & (fs->nslot - 1);
    fs->slot[i] = fs->n;
    fs->v[fs->n++] = f;
    return true;
}

/* ---------------------------------------------------------------- the recipe */

enum { SRC_CF_EDIT, SRC_CF_EDIT_REPH, SRC_CF_NEIGH, SRC_CF_KNOWN, SRC_ZSRE, SRC_ZSRE_REPH, N_SRC };
static const char *const src_name[N_SRC] = {"cf-edit",  "cf-edit-rephrase", "cf-edit-neighbourhood",
                                            "cf-known", "zsre",             "zsre-rephrase"};

typedef struct {
    char *prompt, *kept, *dropped;
    const char *kept_src, *dropped_src;
} conflict;

typedef struct {
    factset train, heldout, known, edit_prompts;
    int added[N_SRC], dup[N_SRC];
    conflict *conf;
    int n_conf, cap_conf;
    int n_trimmed;
    /* held-out templates left out, by reason */
    int ho_trained, ho_base_missing, ho_dup;
    int known_conflict, known_edited;
    int text_trained, text_dup;
    sbuf text;
    int n_text;
    bool oom;
} corpus;

/* Strip whitespace at both ends in place (the trainer puts exactly one space
 * between prompt and answer, so a stray one would double it); counts changes. */
static void trim_inplace(corpus *C, char *s) { C->n_trimmed += cli_trim(s); }

static void trim_dataset(corpus *C, graft_dataset *d) {
    for (int i = 0; i < d->n; i++) {
        graft_edit_request *r = &d->req[i];
        trim_inplace(C, r->prompt);
        trim_inplace(C, r->ground_truth);
        for (int j = 0; j < r->n_rephrases; j++) trim_inplace(C, r->rephrases[j]);
        for (int j = 0; j < r->n_loc; j++) {
            trim_inplace(C, r->loc_prompts[j]);
            trim_inplace(C, r->loc_answers[j]);
        }
    }
}

/* Offer one true fact to train.jsonl: identical pairs are kept once; a prompt
 * already there with another answer keeps its first answer (a conflict). */
static void train_add(corpus *C, const char *prompt, const char *answer, int src, long case_id) {
    if (!*prompt || !*answer) return; /* the loader refuses empty ones; belt and braces */
    int k = fs_find(&C->train, prompt);
    if (k < 0) {
        if (!fs_append(&C->train, prompt, answer, src_name[src], case_id)) C->oom = true;
        else C->added[src]++;
    } else if (!strcmp(C->train.v[k].answer, answer)) C->dup[src]++;
    else {
        if (C->n_conf == C->cap_conf) {
            int nc = C->cap_conf ? C->cap_conf * 2 : 16;
            conflict *ncf = realloc(C->conf, (size_t)nc * sizeof *ncf);
            if (!ncf) {
                C->oom = true;
                return;
            }
            C->conf = ncf;
            C->cap_conf = nc;
        }
        conflict *cf = &C->conf[C->n_conf++];
        cf->prompt = strdup(prompt);
        cf->kept = strdup(C->train.v[k].answer);
        cf->dropped = strdup(answer);
        cf->kept_src = C->train.v[k].source;
        cf->dropped_src = src_name[src];
        if (!cf->prompt || !cf->kept || !cf->dropped) C->oom = true;
    }
}

/* Is (prompt -> answer) in train.jsonl exactly? */
static bool trained_as(const corpus *C, const char *prompt, const char *answer) {
    int k = fs_find(&C->train, prompt);
    return k >= 0 && !strcmp(C->train.v[k].answer, answer);
}

/* A held-out template: a paraphrase of the trained base fact (base_prompt ->
 * answer) that is itself never trained. */
static void heldout_add(corpus *C, const char *prompt, const char *base_prompt, const char *answer,
                        const char *source, long case_id) {
    if (!trained_as(C, base_prompt, answer)) C->ho_base_missing++;
    else if (fs_find(&C->train, prompt) >= 0) C->ho_trained++;
    else if (fs_find(&C->heldout, prompt) >= 0) C->ho_dup++;
    else if (!fs_append(&C->heldout, prompt, answer, source, case_id)) C->oom = true;
}

/* One plain sentence of a fact that is not in train.jsonl: "prompt answer." */
static void text_add(corpus *C, factset *seen, const char *prompt, const char *answer) {
    if (fs_find(&C->train, prompt) >= 0) {
        C->text_trained++;
        return;
    }
    sbuf s = {0};
    sb_puts(&s, prompt);
    sb_puts(&s, " ");
    sb_puts(&s, answer);
    size_t n = s.n;
    if (n && !strchr(".!?", s.p[n - 1])) sb_puts(&s, ".");
    if (s.oom) {
        C->oom = true;
        free(s.p);
        return;
    }
    /* one sentence per line: line breaks inside a fact become spaces */
    for (char *q = s.p; *q; q++)
        if (*q == '\n' || *q == '\r' || *q == '\t') *q = ' ';
    if (fs_find(seen, s.p) >= 0) C->text_dup++;
    else if (!fs_append(seen, s.p, "", "", 0)) C->oom = true;
    else {
        sb_puts(&C->text, s.p);
        sb_puts(&C->text, "\n");
        C->n_text++;
    }
    free(s.p);
}

static void corpus_free(corpus *C) {
    fs_free(&C->train);
    fs_free(&C->heldout);
    fs_free(&C->known);
    fs_free(&C->edit_prompts);
    for (int i = 0; i < C->n_conf; i++) {
        free(C->conf[i].prompt);
        free(C->conf[i].kept);
        free(C->conf[i].dropped);
    }
    free(C->conf);
    free(C->text.p);
}

/* ---------------------------------------------------------------- files */


static int write_out(const char *dir, const char *name, const sbuf *b) {
    if (b->oom) return cli_fail(CMD, "out of memory while building %s", name);
    char *path = graft_path_join(dir, name);
    if (!path) return cli_fail(CMD, "out of memory");
    graft_status st = graft_write_file_atomic(path, b->p ? b->p : "", b->n);
    free(path);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    return 0;
}

/* The first n records of a JSON list, verbatim in content (keys, order and
 * values as in the input), one record per line. */
static int write_edit_stream(const char *in_path, int n, sbuf *out) {
    char *raw = NULL;
    size_t size = 0;
    graft_status st = graft_read_file(in_path, &raw, &size);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    cJSON *root = cJSON_ParseWithLength(raw, size);
    free(raw);
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        return cli_fail(CMD, "%s: not a JSON list (it loaded a moment ago: changed while reading?)", in_path);
    }
    sb_puts(out, "[\n");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (i == n) break;
        size_t at = out->n;
        if (!sb_json_value(out, e)) {
            cJSON_Delete(root);
            return cli_fail(CMD, "%s: row %d: a value graft cannot write", in_path, i + 1);
        }
        /* The loader validated the fields it knows; a field it does not know
         * is copied too, so check the whole record: no invalid UTF-8 goes out. */
        size_t bad;
        if (!out->oom && !graft_utf8_valid(out->p + at, out->n - at, &bad)) {
            cJSON_Delete(root);
            return cli_fail(CMD, "%s: row %d: invalid UTF-8 in the record", in_path, i + 1);
        }
        sb_puts(out, ++i < n ? ",\n" : "\n");
    }
    sb_puts(out, "]\n");
    cJSON_Delete(root);
    if (i < n) return cli_fail(CMD, "%s: only %d records, want %d", in_path, i, n);
    return 0;
}

static void fact_line(sbuf *b, const fact *f, bool with_source, bool with_case) {
    sb_puts(b, "{\"prompt\": ");
    sb_json_str(b, f->prompt);
    sb_puts(b, ", \"answer\": ");
    sb_json_str(b, f->answer);
    if (with_source) {
        sb_puts(b, ", \"source\": ");
        sb_json_str(b, f->source);
    }
    if (with_case) sb_printf(b, ", \"case_id\": %ld", f->case_id);
    sb_puts(b, "}\n");
}

/* Markdown table cell: '|' and line breaks would break the table. */
static void sb_md_cell(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '|') sb_puts(b, "\\|");
        else if (*s == '\n' || *s == '\r') sb_puts(b, " ");
        else sb_put(b, s, 1);
    }
}

/* ---------------------------------------------------------------- command */

static void usage(FILE *out) {
    fputs("usage: graft corpus [--out DIR] [--shared DIR] [--n-edit N] [--n-known N] [--n-heldout-text N]\n"
          "Build graft's fact corpus (true facts from CounterFact and zsRE) and the files that\n"
          "go with it; the recipe is written to DIR/README.md. Same inputs, same bytes.\n"
          "  -o, --out DIR          output directory (default: data/facts in the source tree)\n"
          "  --shared DIR           the shared data folder holding counterfact/ and zsre/\n"
          "                         (default: ../shared/data beside the source tree)\n"
          "  --n-edit N             CounterFact edit records whose true facts are trained and\n"
          "                         that edit_stream.json holds (default 2000)\n"
          "  --n-known N            counterfact-train facts trained and never edited (default 1000)\n"
          "  --n-heldout-text N     counterfact-edit records after the stream turned into held-out\n"
          "                         sentences for perplexity (default 500)\n"
          "With --paraphrase it builds data/facts2 instead, every fact in several phrasings\n"
          "(graft corpus --paraphrase --help).\n",
          out);
}

int cmd_corpus(int argc, char **argv) {
    /* The paraphrase corpus (data/facts2) has its own recipe and flags. */
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--paraphrase")) return cmd_corpus_para(argc, argv);
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"shared", required_argument, 0, 's'},
                                         {"n-edit", required_argument, 0, 'e'},
                                         {"n-known", required_argument, 0, 'k'},
                                         {"n-heldout-text", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out_dir = GRAFT_SOURCE_DIR "/data/facts";
    const char *shared = GRAFT_SOURCE_DIR "/../shared/data";
    long n_edit = 2000, n_known = 1000, n_text = 500;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out_dir = optarg; break;
        case 's': shared = optarg; break;
        case 'e':
            if (cli_parse_int(CMD, "--n-edit", optarg, 1, 1000000, &n_edit)) return 2;
            break;
        case 'k':
            if (cli_parse_int(CMD, "--n-known", optarg, 0, 1000000, &n_known)) return 2;
            break;
        case 't':
            if (cli_parse_int(CMD, "--n-heldout-text", optarg, 0, 1000000, &n_text)) return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!*out_dir || !*shared) {
        cli_fail(CMD, "--out and --shared want a non-empty path");
        return 2;
    }

    int rc = 1;
    corpus C;
    memset(&C, 0, sizeof C);
    graft_dataset E = {0}, T = {0}, Z = {0};
    sbuf b_train = {0}, b_ho = {0}, b_known = {0}, b_stream = {0}, b_readme = {0};
    factset text_seen = {0};
    char *p_edit = NULL, *p_train = NULL, *p_zsre = NULL, *d_cf = NULL, *d_zs = NULL;
    d_cf = graft_path_join(shared, "counterfact");
    d_zs = graft_path_join(shared, "zsre");
    if (d_cf) p_edit = graft_path_join(d_cf, "counterfact-edit.json");
    if (d_cf) p_train = graft_path_join(d_cf, "counterfact-train.json");
    if (d_zs) p_zsre = graft_path_join(d_zs, "zsre_mend_train-1k.json");
    if (!p_edit || !p_train || !p_zsre) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    graft_status st;
    if ((st = graft_dataset_load(p_edit, "counterfact", n_edit + n_text, &E)) != GRAFT_OK ||
        /* max_rows 0 would mean "all": with --n-known 0 read just one record */
        (st = graft_dataset_load(p_train, "counterfact", n_known > 0 ? n_known : 1, &T)) != GRAFT_OK ||
        /* every zsRE question is a true fact, also those whose alt is empty */
        (st = graft_dataset_load_ex(p_zsre, "zsre", 0, GRAFT_DATASET_KEEP_EMPTY_TARGET, &Z)) != GRAFT_OK) {
        cli_fail_status(CMD, st);
        goto done;
    }
    if (E.n < n_edit) {
        cli_fail(CMD, "%s has %d records; --n-edit %ld asks for more", p_edit, E.n, n_edit);
        goto done;
    }
    if (T.n < n_known) {
        cli_fail(CMD, "%s has %d records; --n-known %ld asks for more", p_train, T.n, n_known);
        goto done;
    }
    trim_dataset(&C, &E);
    trim_dataset(&C, &T);
    trim_dataset(&C, &Z);
    int empty_alt = 0;
    for (int i = 0; i < Z.n; i++) empty_alt += Z.req[i].target[0] == '\0';
    /* The loaders guarantee one rephrase and one locality pair per CounterFact
     * record (a pair with an empty answer would be dropped: none are). */
    for (int i = 0; i < n_edit; i++)
        if (E.req[i].n_rephrases < 1 || E.req[i].n_loc < 1) {
            cli_fail(CMD, "%s: row %d: no rephrase or no locality pair", p_edit, E.req[i].row);
            goto done;
        }

    /* 1. train.jsonl: the true facts, in this order. */
    for (int i = 0; i < n_edit; i++) {
        const graft_edit_request *r = &E.req[i];
        train_add(&C, r->prompt, r->ground_truth, SRC_CF_EDIT, r->case_id);
        if (i % 2 == 0) train_add(&C, r->rephrases[0], r->ground_truth, SRC_CF_EDIT_REPH, r->case_id);
        train_add(&C, r->loc_prompts[0], r->loc_answers[0], SRC_CF_NEIGH, r->case_id);
    }
    for (int i = 0; i < n_known; i++)
        train_add(&C, T.req[i].prompt, T.req[i].ground_truth, SRC_CF_KNOWN, T.req[i].case_id);
    for (int i = 0; i < Z.n; i++) {
        const graft_edit_request *r = &Z.req[i];
        train_add(&C, r->prompt, r->ground_truth, SRC_ZSRE, r->case_id);
        if (i % 2 == 0)
            for (int j = 0; j < r->n_rephrases; j++)
                train_add(&C, r->rephrases[j], r->ground_truth, SRC_ZSRE_REPH, r->case_id);
    }

    /* 2. known_facts.jsonl: counterfact-train facts that made it into the
     * training set as they are, and whose prompt no edit in the stream
     * rewrites (its prompt or its rephrase). */
    for (int i = 0; i < n_edit; i++) {
        const graft_edit_request *r = &E.req[i];
        for (int j = -1; j < r->n_rephrases; j++) {
            const char *p = j < 0 ? r->prompt : r->rephrases[j];
            if (fs_find(&C.edit_prompts, p) < 0 && !fs_append(&C.edit_prompts, p, "", "", 0)) C.oom = true;
        }
    }
    for (int i = 0; i < n_known; i++) {
        const graft_edit_request *r = &T.req[i];
        if (!trained_as(&C, r->prompt, r->ground_truth)) C.known_conflict++;
        else if (fs_find(&C.edit_prompts, r->prompt) >= 0) C.known_edited++;
        else if (fs_find(&C.known, r->prompt) < 0 &&
                 !fs_append(&C.known, r->prompt, r->ground_truth, "cf-known", r->case_id))
            C.oom = true;
    }

    /* 3. heldout_templates.jsonl: the paraphrases the training never saw. */
    for (int i = 1; i < n_edit; i += 2)
        for (int j = 0; j < E.req[i].n_rephrases; j++)
            heldout_add(&C, E.req[i].rephrases[j], E.req[i].prompt, E.req[i].ground_truth, "cf-edit-rephrase",
                        E.req[i].case_id);
    for (int i = 0; i < n_known; i++)
        for (int j = 0; j < T.req[i].n_rephrases; j++)
            heldout_add(&C, T.req[i].rephrases[j], T.req[i].prompt, T.req[i].ground_truth, "cf-known-rephrase",
                        T.req[i].case_id);
    for (int i = 1; i < Z.n; i += 2)
        for (int j = 0; j < Z.req[i].n_rephrases; j++)
            heldout_add(&C, Z.req[i].rephrases[j], Z.req[i].prompt, Z.req[i].ground_truth, "zsre-rephrase",
                        Z.req[i].case_id);

    /* 4. heldout_text.txt: true facts of the records after the stream. */
    for (int i = (int)n_edit; i < E.n; i++) text_add(&C, &text_seen, E.req[i].prompt, E.req[i].ground_truth);

    if (C.oom) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    for (int i = 0; i < C.train.n; i++) fact_line(&b_train, &C.train.v[i], false, false);
    for (int i = 0; i < C.heldout.n; i++) fact_line(&b_ho, &C.heldout.v[i], true, false);
    for (int i = 0; i < C.known.n; i++) fact_line(&b_known, &C.known.v[i], false, true);
    if (write_edit_stream(p_edit, (int)n_edit, &b_stream)) goto done;

    /* 5. README.md: the recipe and the counts, generated so they cannot drift. */
    sbuf *R = &b_readme;
    int n_dup = 0;
    for (int s = 0; s < N_SRC; s++) n_dup += C.dup[s];
    sb_printf(R,
              "# data/facts: graft's fact corpus\n\n"
              "Generated by `graft corpus` (cli/cmd_corpus.c); do not edit by hand. From the repository root:\n\n"
              "    graft corpus --shared ../shared/data --out data/facts \\\n"
              "        --n-edit %ld --n-known %ld --n-heldout-text %ld\n\n"
              "Nothing is shuffled or sampled: the files are a pure function of the three input files and the\n"
              "flags, byte for byte (tests/cli_corpus.sh rebuilds them and compares).\n\n",
              n_edit, n_known, n_text);
    sb_printf(R,
              "## Files\n\n"
              "| file | rows | bytes | what |\n|---|---|---|---|\n"
              "| train.jsonl | %d | %zu | true facts `{\"prompt\", \"answer\"}` to train the base model on |\n"
              "| heldout_templates.jsonl | %d | %zu | paraphrases of trained facts, never trained, "
              "`{\"prompt\", \"answer\", \"source\"}` |\n"
              "| known_facts.jsonl | %d | %zu | trained facts no edit stream touches (TRR / held knowledge), "
              "`{\"prompt\", \"answer\", \"case_id\"}` |\n"
              "| edit_stream.json | %ld | %zu | the first %ld counterfact-edit records, EasyEdit flat format |\n"
              "| heldout_text.txt | %d | %zu | one sentence per line of true facts that are not trained "
              "(upstream perplexity) |\n\n",
              C.train.n, b_train.n, C.heldout.n, b_ho.n, C.known.n, b_known.n, n_edit, b_stream.n, n_edit,
              C.n_text, C.text.n);
    sb_puts(R,
            "## How prompt and answer join\n\n"
            "Answers carry no leading space and prompts no trailing space (whitespace at either end is\n"
            "stripped; ");
    sb_printf(R, "%d strings needed it", C.n_trimmed);
    sb_puts(R,
            "). The text a model trains and is scored on is\n"
            "`prompt + \" \" + answer`, e.g. `The mother tongue of Danielle Darrieux is` + ` ` + `French`: the\n"
            "EasyEdit convention (`prompt + ' ' + target`) and ROME's (targets with a leading space), so a\n"
            "GPT-2 BPE answer starts with a space-prefixed token (` French`) exactly as the editors will\n"
            "see it. zsRE prompts are questions (`What is the product made by UniFirst? uniform`).\n"
            "train.jsonl is in recipe order (CounterFact-edit facts, then known facts, then zsRE): a\n"
            "trainer should shuffle it.\n\n");
    sb_printf(R,
              "## Recipe\n\n"
              "Indices are 0-based positions in the input lists; [a, b) is a half-open range.\n\n"
              "1. **train.jsonl** (facts are offered in this order; an identical (prompt, answer) pair is kept\n"
              "   once; a prompt already present with a different answer keeps the first answer and counts as a\n"
              "   conflict):\n"
              "   - counterfact-edit.json records [0, %ld), each in turn: `prompt -> ground_truth` (cf-edit);\n"
              "     for even indices also `rephrase_prompt -> ground_truth` (cf-edit-rephrase; odd indices keep\n"
              "     their rephrase held out); `locality_prompt -> locality_ground_truth` (cf-edit-neighbourhood:\n"
              "     the neighbourhood facts that must survive the edits). These are the facts the edit streams\n"
              "     later overwrite with `target_new`, so the model must know the true `ground_truth` first.\n"
              "   - counterfact-train.json records [0, %ld) (case_ids disjoint from counterfact-edit):\n"
              "     `prompt -> ground_truth` (cf-known). Their rephrases are held out.\n"
              "   - zsre_mend_train-1k.json, all %d records: `src -> answers[0]` (zsre), and for even indices\n"
              "     `rephrase -> answers[0]` (zsre-rephrase). `alt` (the counterfactual) is not used.\n"
              "2. **heldout_templates.jsonl**: the rephrases of odd counterfact-edit records in [0, %ld)\n"
              "   (cf-edit-rephrase), of counterfact-train records [0, %ld) (cf-known-rephrase) and of odd zsRE\n"
              "   records (zsre-rephrase), each with its record's true answer; kept only when the record's\n"
              "   own fact is in train.jsonl with that answer and the rephrase itself is not a train.jsonl\n"
              "   prompt (first occurrence wins among repeats).\n"
              "3. **known_facts.jsonl**: counterfact-train records [0, %ld) whose `prompt -> ground_truth` is in\n"
              "   train.jsonl as it is and whose prompt is neither the prompt nor the rephrase of an edit-stream\n"
              "   record. `case_id` is CounterFact's.\n"
              "4. **edit_stream.json**: counterfact-edit.json records [0, %ld) exactly (same keys in the same\n"
              "   order, same values), one record per line; what `make demo` and the forgetting study edit.\n"
              "5. **heldout_text.txt**: counterfact-edit records [%ld, %ld) (never trained), one line\n"
              "   `prompt + \" \" + ground_truth + \".\"` each (no period added after an answer ending in . ! ?),\n"
              "   skipping prompts that train.jsonl has and repeated sentences.\n\n",
              n_edit, n_known, Z.n, n_edit, n_known, n_known, n_edit, n_edit, n_edit + n_text);
    sb_puts(R, "## Counts\n\n| train.jsonl source | added | duplicates |\n|---|---|---|\n");
    for (int s = 0; s < N_SRC; s++) sb_printf(R, "| %s | %d | %d |\n", src_name[s], C.added[s], C.dup[s]);
    sb_printf(R,
              "\n- facts in train.jsonl: %d (%d identical duplicates dropped, %d conflicts)\n"
              "- held-out templates: %d (left out: %d because the paraphrase is itself trained, %d because the\n"
              "  base fact is not trained as such, %d repeats)\n"
              "- known facts: %d (left out: %d not trained as such because of a conflict, %d whose prompt an edit\n"
              "  rewrites)\n"
              "- edit stream: %ld records\n"
              "- held-out sentences: %d (left out: %d with a trained prompt, %d repeats)\n"
              "- zsRE rows with an empty `alt` (still used: only `answers[0]` matters here): %d\n\n",
              C.train.n, n_dup, C.n_conf, C.heldout.n, C.ho_trained, C.ho_base_missing, C.ho_dup, C.known.n,
              C.known_conflict, C.known_edited, n_edit, C.n_text, C.text_trained, C.text_dup, empty_alt);
    if (C.n_conf) {
        sb_puts(R, "### Conflicts (the first answer is kept)\n\n"
                   "| prompt | kept | from | dropped | from |\n|---|---|---|---|---|\n");
        for (int i = 0; i < C.n_conf; i++) {
            const conflict *cf = &C.conf[i];
            sb_puts(R, "| ");
            sb_md_cell(R, cf->prompt);
            sb_puts(R, " | ");
            sb_md_cell(R, cf->kept);
            sb_printf(R, " | %s | ", cf->kept_src);
            sb_md_cell(R, cf->dropped);
            sb_printf(R, " | %s |\n", cf->dropped_src);
        }
        sb_puts(R, "\n");
    }
    sb_printf(R,
              "## Sources and licences\n\n"
              "Inputs (from ../shared/data; their SOURCES.md files give the upstream commits and sha256):\n\n"
              "- `counterfact/counterfact-edit.json` (%d records read) and `counterfact/counterfact-train.json`\n"
              "  (%d read): CounterFact, Meng, Bau, Andonian and Belinkov, *Locating and Editing Factual\n"
              "  Associations in GPT* (ROME, NeurIPS 2022), rome.baulab.info, released under the MIT licence;\n"
              "  in the flat format of EasyEdit (zjunlp/EasyEdit, MIT). These copies come from\n"
              "  github.com/Jometeorie/KnowledgeSpread @ 51d7402 (that repository has no licence file).\n"
              "- `zsre/zsre_mend_train-1k.json` (%d read): zsRE question answering, Levy, Seo, Choi and\n"
              "  Zettlemoyer, *Zero-Shot Relation Extraction via Reading Comprehension* (CoNLL 2017), in the\n"
              "  form prepared by De Cao, Aziz and Titov (*Editing Factual Knowledge in Language Models*, 2021)\n"
              "  and Mitchell et al. (MEND, ICLR 2022) and used by ROME/MEMIT/EasyEdit; copy from\n"
              "  github.com/Jometeorie/KnowledgeSpread @ 51d7402 (no licence file there).\n\n"
              "Every string is checked to be valid UTF-8 on the way in (src/data/dataset.c).\n",
              E.n, T.n, Z.n);

    /* 6. write */
    graft_status mst = graft_mkdir_p(out_dir);
    if (mst != GRAFT_OK) {
        cli_fail_status(CMD, mst);
        goto done;
    }
    if (write_out(out_dir, "train.jsonl", &b_train) || write_out(out_dir, "heldout_templates.jsonl", &b_ho) ||
        write_out(out_dir, "known_facts.jsonl", &b_known) || write_out(out_dir, "edit_stream.json", &b_stream) ||
        write_out(out_dir, "heldout_text.txt", &C.text) || write_out(out_dir, "README.md", &b_readme))
        goto done;

    size_t total = b_train.n + b_ho.n + b_known.n + b_stream.n + C.text.n + b_readme.n;
    printf("graft corpus: wrote %s (%zu bytes)\n", out_dir, total);
    printf("  train.jsonl              %6d facts (%d duplicates, %d conflicts)\n", C.train.n, n_dup, C.n_conf);
    printf("  heldout_templates.jsonl  %6d held-out paraphrases\n", C.heldout.n);
    printf("  known_facts.jsonl        %6d known facts\n", C.known.n);
    printf("  edit_stream.json         %6ld edit records\n", n_edit);
    printf("  heldout_text.txt         %6d held-out sentences\n", C.n_text);
    rc = 0;
done:
    graft_dataset_free(&E);
    graft_dataset_free(&T);
    graft_dataset_free(&Z);
    corpus_free(&C);
    fs_free(&text_seen);
    free(b_train.p);
    free(b_ho.p);
    free(b_known.p);
    free(b_stream.p);
    free(b_readme.p);
    free(p_edit);
    free(p_train);
    free(p_zsre);
    free(d_cf);
    free(d_zs);
    return rc;
}
