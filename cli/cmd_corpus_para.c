/*
 * cmd_corpus_para.c - graft corpus --paraphrase: the corpus for a fact model
 * that knows each fact in any phrasing of its relation (issue 10), written to
 * data/facts2.
 *
 * The flat CounterFact records carry no relation id, so a record's relation
 * is found from its prompt's template (the prompt with the subject replaced by
 * {}) in the hand-written data/relations.json. Every taught fact is then
 * phrased with several templates of its relation, and a few more phrasings
 * are held out; where the phrasings start rotates from fact to fact, so each
 * template is trained on some facts and held out on others. Nothing is
 * random: the files are a pure function of the inputs and the flags, and the
 * README written beside them gives the recipe and the counts.
 */
#include "cli.h"
#include "data/dataset.h"
#include "model/save.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CMD "corpus"
#define MAX_REL 64 /* sets of relations are 64-bit masks */

/* ---------------------------------------------------------------- strings */

typedef struct {
    char **v;
    int n, cap;
} strlist;

static bool sl_has(const strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return true;
    return false;
}

static bool sl_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 8;
        char **nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return false;
        l->v = nv;
        l->cap = nc;
    }
    char *c = strdup(s);
    if (!c) return false;
    l->v[l->n++] = c;
    return true;
}

static void sl_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Interned strings: an id is the insertion index; an open-addressing index
 * finds it again. */
typedef struct {
    strlist str;
    int *slot; /* id, -1 empty */
    size_t nslot;
} strtab;

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int st_find(const strtab *t, const char *s) {
    if (!t->nslot) return -1;
    size_t m = t->nslot - 1;
    for (size_t i = str_hash(s) & m;; i = (i + 1) & m) {
        int k = t->slot[i];
        if (k < 0 || !strcmp(t->str.v[k], s)) return k;
    }
}

static bool st_grow(strtab *t) {
    size_t ns = t->nslot ? 2 * t->nslot : 1024;
    int *sl = malloc(ns * sizeof *sl);
    if (!sl) return false;
    for (size_t i = 0; i < ns; i++) sl[i] = -1;
    for (int k = 0; k < t->str.n; k++) {
        size_t i = str_hash(t->str.v[k]) & (ns - 1);
        while (sl[i] >= 0) i = (i + 1) & (ns - 1);
        sl[i] = k;
    }
    free(t->slot);
    t->slot = sl;
    t->nslot = ns;
    return true;
}

/* The id of s, added when new; -1 when out of memory. */
static int st_intern(strtab *t, const char *s) {
    int k = st_find(t, s);
    if (k >= 0) return k;
    if ((size_t)(t->str.n + 1) * 2 > t->nslot && !st_grow(t)) return -1;
    if (!sl_push(&t->str, s)) return -1;
    size_t m = t->nslot - 1, i = str_hash(s) & m;
    while (t->slot[i] >= 0) i = (i + 1) & m;
    t->slot[i] = t->str.n - 1;
    return t->str.n - 1;
}

static void st_free(strtab *t) {
    sl_free(&t->str);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- templates */

/* Why t cannot be a template, or NULL when it can: exactly one {} where the
 * subject goes, some text around it, no stray braces, no padding (the trainer
 * joins prompt and answer with exactly one space). */
static const char *tpl_problem(const char *t) {
    const char *h = strstr(t, "{}");
    size_t n = strlen(t);
    if (!h) return "has no {} for the subject";
    if (strstr(h + 2, "{}")) return "has {} more than once";
    for (const char *q = t; *q; q++)
        if ((*q == '{' || *q == '}') && q != h && q != h + 1) return "has a brace besides its {}";
    if (n == 2) return "is nothing but {}";
    if (strchr(" \t\r\n", t[0]) || strchr(" \t\r\n", t[n - 1])) return "begins or ends with white space";
    if (!graft_utf8_valid(t, n, NULL)) return "is not valid UTF-8";
    return NULL;
}

/* prompt with the first occurrence of subject turned into {}; NULL with
 * *oom unset when the subject is not in the prompt. */
static char *tpl_of(const char *prompt, const char *subject, bool *oom) {
    const char *at = *subject ? strstr(prompt, subject) : NULL;
    if (!at) return NULL;
    size_t a = (size_t)(at - prompt), s = strlen(subject), b = strlen(at + s);
    char *t = malloc(a + 2 + b + 1);
    if (!t) {
        *oom = true;
        return NULL;
    }
    memcpy(t, prompt, a);
    memcpy(t + a, "{}", 2);
    memcpy(t + a + 2, at + s, b + 1);
    return t;
}

/* The template with the subject in place of {} (malloc'ed; NULL: no memory). */
static char *tpl_fill(const char *tpl, const char *subject) {
    const char *h = strstr(tpl, "{}");
    size_t a = (size_t)(h - tpl), s = strlen(subject), b = strlen(h + 2);
    char *p = malloc(a + s + b + 1);
    if (!p) return NULL;
    memcpy(p, tpl, a);
    memcpy(p + a, subject, s);
    memcpy(p + a + s, h + 2, b + 1);
    return p;
}

/* Does prompt p read as template t with some subject? Returns the length of
 * t's own text (longer is more specific) or -1; the subject span goes to
 * *at and *len. The subject must be non-empty and not padded with spaces, so
 * "{} is in" does not read "X is in" with the subject "X ". */
static int tpl_fit(const char *t, const char *p, size_t *at, size_t *len) {
    const char *h = strstr(t, "{}");
    size_t a = (size_t)(h - t), b = strlen(h + 2), n = strlen(p);
    if (n <= a + b || strncmp(p, t, a) || strcmp(p + n - b, h + 2)) return -1;
    size_t s = n - a - b;
    if (p[a] == ' ' || p[a + s - 1] == ' ') return -1;
    if (at) *at = a;
    if (len) *len = s;
    return (int)(a + b);
}

/* ---------------------------------------------------------------- relations */

typedef struct {
    char *name, *asks;
    strlist cf, own, match; /* the file's three lists */
    int *all;               /* template ids: cf, then own, then match_only */
    int n_all, n_gen;       /* the first n_gen (cf and own) phrase facts */
    int next;               /* facts phrased so far: where the next rotation starts */
    int n_facts, n_train, n_held, n_short;
    int *n_own, *n_phr, *n_out; /* per template (as in all): CounterFact prompts of taught facts written
                                   with it; facts it phrases beyond those, in training; held out */
} relation;

typedef struct {
    relation r[MAX_REL];
    int n;
    strtab tpl;        /* every template of the file */
    uint64_t *cf_rels; /* per template: relations whose counterfact or match_only list has it */
} relset;

static void relset_free(relset *RS) {
    for (int i = 0; i < RS->n; i++) {
        relation *R = &RS->r[i];
        free(R->name);
        free(R->asks);
        sl_free(&R->cf);
        sl_free(&R->own);
        sl_free(&R->match);
        free(R->all);
        free(R->n_own);
        free(R->n_phr);
        free(R->n_out);
    }
    st_free(&RS->tpl);
    free(RS->cf_rels);
    memset(RS, 0, sizeof *RS);
}

/* "FILE: relations[I] ('name'): message", exit status 1. */
static int rel_err(const char *path, int i, const relation *R, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int rel_err(const char *path, int i, const relation *R, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (R && R->name) return cli_fail(CMD, "%s: relations[%d] ('%s'): %s", path, i, R->name, msg);
    return cli_fail(CMD, "%s: relations[%d]: %s", path, i, msg);
}

/* One of a relation's template lists; an absent list is empty. */
static int load_list(const char *path, int i, relation *R, const cJSON *o, const char *key, strlist *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return 0;
    if (!cJSON_IsArray(v)) return rel_err(path, i, R, "field '%s': want a list of strings", key);
    int j = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e)) return rel_err(path, i, R, "%s[%d]: want a string", key, j);
        const char *t = e->valuestring, *why = tpl_problem(t);
        if (why) return rel_err(path, i, R, "%s[%d] \"%s\" %s", key, j, t, why);
        if (sl_has(&R->cf, t) || sl_has(&R->own, t) || sl_has(&R->match, t))
            return rel_err(path, i, R, "%s[%d] \"%s\" is listed twice", key, j, t);
        if (!sl_push(out, t)) return cli_fail(CMD, "out of memory");
        j++;
    }
    return 0;
}

static int load_relation(const char *path, int i, const cJSON *o, relation *R) {
    if (!cJSON_IsObject(o)) return rel_err(path, i, NULL, "want an object");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *asks = cJSON_GetObjectItemCaseSensitive(o, "asks");
    if (!cJSON_IsString(nm) || !*nm->valuestring)
        return rel_err(path, i, NULL, "field 'name': want a non-empty string");
    if (strpbrk(nm->valuestring, "|\"\\\n\t "))
        return rel_err(path, i, NULL, "field 'name' \"%s\": no spaces, quotes, backslashes or '|'", nm->valuestring);
    if (asks && !cJSON_IsString(asks)) return rel_err(path, i, NULL, "field 'asks': want a string");
    R->name = strdup(nm->valuestring);
    R->asks = strdup(asks ? asks->valuestring : "");
    if (!R->name || !R->asks) return cli_fail(CMD, "out of memory");
    if (load_list(path, i, R, o, "counterfact", &R->cf) || load_list(path, i, R, o, "own", &R->own) ||
        load_list(path, i, R, o, "match_only", &R->match))
        return 1;
    if (R->cf.n + R->own.n < 2)
        return rel_err(path, i, R, "%d phrasing templates (counterfact + own); at least 2 are needed, one to "
                                   "train and one to hold out", R->cf.n + R->own.n);
    return 0;
}

/* Give every template an id and each relation its id list; then the
 * per-template tables. */
static bool relset_index(relset *RS) {
    for (int i = 0; i < RS->n; i++) {
        relation *R = &RS->r[i];
        const strlist *lists[3] = {&R->cf, &R->own, &R->match};
        size_t n = (size_t)(R->cf.n + R->own.n + R->match.n);
        R->all = malloc(n * sizeof *R->all);
        R->n_own = calloc(n, sizeof *R->n_own);
        R->n_phr = calloc(n, sizeof *R->n_phr);
        R->n_out = calloc(n, sizeof *R->n_out);
        if (!R->all || !R->n_own || !R->n_phr || !R->n_out) return false;
        for (int l = 0; l < 3; l++)
            for (int j = 0; j < lists[l]->n; j++) {
                int id = st_intern(&RS->tpl, lists[l]->v[j]);
                if (id < 0) return false;
                R->all[R->n_all++] = id;
            }
        R->n_gen = R->cf.n + R->own.n;
    }
    RS->cf_rels = calloc((size_t)RS->tpl.str.n, sizeof *RS->cf_rels);
    if (!RS->cf_rels) return false;
    for (int i = 0; i < RS->n; i++) {
        const relation *R = &RS->r[i];
        for (int j = 0; j < R->n_all; j++)
            if (j < R->cf.n || j >= R->n_gen) RS->cf_rels[R->all[j]] |= 1ull << i;
    }
    return true;
}

static int relset_load(const char *path, relset *RS) {
    char *raw = NULL;
    size_t size = 0;
    graft_status st = graft_read_file(path, &raw, &size);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(raw, size, &end, false);
    if (!root) {
        size_t off = end && end >= raw ? (size_t)(end - raw) : 0;
        free(raw);
        return cli_fail(CMD, "%s: not valid JSON (error near byte %zu)", path, off);
    }
    free(raw);
    int rc = 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "relations");
    int n = cJSON_GetArraySize(list);
    if (!cJSON_IsObject(root) || !cJSON_IsArray(list) || n < 1)
        rc = cli_fail(CMD, "%s: want an object whose field 'relations' is a non-empty list", path);
    else if (n > MAX_REL) rc = cli_fail(CMD, "%s: %d relations; at most %d are supported", path, n, MAX_REL);
    const cJSON *o;
    cJSON_ArrayForEach(o, list) {
        if (rc || (rc = load_relation(path, RS->n, o, &RS->r[RS->n]))) break;
        for (int k = 0; k < RS->n; k++)
            if (!strcmp(RS->r[k].name, RS->r[RS->n].name)) {
                rc = rel_err(path, RS->n, &RS->r[RS->n], "the name is used by relations[%d] too", k);
                break;
            }
        RS->n++;
        if (rc) break;
    }
    cJSON_Delete(root);
    if (!rc && !relset_index(RS)) rc = cli_fail(CMD, "out of memory");
    return rc;
}

/* Relations of the CounterFact templates (counterfact and match_only lists)
 * that read prompt p with the most specific fit; 0 when none does. */
static uint64_t fit_rels(const relset *RS, const char *p) {
    uint64_t rels = 0;
    int best = -1;
    for (int t = 0; t < RS->tpl.str.n; t++) {
        if (!RS->cf_rels[t]) continue;
        int lit = tpl_fit(RS->tpl.str.v[t], p, NULL, NULL);
        if (lit > best) best = lit, rels = RS->cf_rels[t];
        else if (lit == best && lit >= 0) rels |= RS->cf_rels[t];
    }
    return rels;
}

/* The subject of p under the most specific template of relation rel
 * (malloc'ed; that template's index in the relation's list to *which), or
 * NULL (*oom says whether memory ran out). */
static char *fit_subject(const relset *RS, int rel, const char *p, int *which, bool *oom) {
    const relation *R = &RS->r[rel];
    int best = -1;
    size_t at = 0, len = 0;
    for (int j = 0; j < R->n_all; j++) {
        size_t a, l;
        int lit = tpl_fit(RS->tpl.str.v[R->all[j]], p, &a, &l);
        if (lit > best) best = lit, at = a, len = l, *which = j;
    }
    if (best < 0) return NULL;
    char *s = strndup(p + at, len);
    if (!s) *oom = true;
    return s;
}

/* ---------------------------------------------------------------- the corpus */

/* How a record's relation was found. */
enum { HOW_DIRECT, HOW_LOCALITY, HOW_ANSWER, HOW_AMBIGUOUS, HOW_NO_TEMPLATE, HOW_NO_SUBJECT, N_HOW };
static const char *const how_name[N_HOW] = {
    "its template belongs to one relation", "resolved by its locality prompt", "resolved by its answer",
    "ambiguous (left out)", "template in no relation (left out)", "subject not in the prompt (left out)"};

enum { ROLE_EDIT, ROLE_NEIGH, ROLE_KNOWN, ROLE_ZSRE, N_ROLE };
static const char *const role_name[N_ROLE] = {"cf-edit", "cf-neighbour", "cf-known", "zsre"};

typedef struct {
    char *subject; /* NULL: its prompt fits no template of its relation */
    char *answer;
    int rel, role;
    long case_id;
    strlist own;     /* the CounterFact prompts that taught it: always trained */
    strlist trained; /* own, then template phrasings */
    strlist held;    /* template phrasings never trained */
} fact;

/* What became of one CounterFact record. */
typedef struct {
    int rel, how;
    int fact, nfact; /* its subject's fact and its locality prompt's, -1 if none */
    bool conflict;   /* one of them was taught already with another answer */
} recinfo;

typedef struct {
    char *what, *kept, *dropped;
    const char *kept_src, *dropped_src;
} conflict;

typedef struct {
    conflict *v;
    int n, cap;
} conflicts;

typedef struct {
    long n_phr, n_hold; /* phrasings per fact: trained, held out */
    relset RS;
    strtab ans; /* answer lexicon: answers of records whose template has one relation ... */
    int *votes; /* ... counted per relation, ans x relations */
    fact *f;
    int nf, capf;
    strtab fkey;     /* "subject\x1frelation" (or "\x1eprompt\x1frelation") -> fact index */
    strtab subjects; /* every taught subject (CounterFact and zsRE) */
    strtab withheld; /* prompts the training must not see: the edit stream's rephrasings */
    /* train.jsonl */
    strtab tp;      /* prompts */
    char **ta;      /* answers */
    int *tsrc;      /* role that added it */
    int tcap;
    int added[N_ROLE], dup[N_ROLE], skipped[N_ROLE];
    conflicts fact_conf, prompt_conf;
    int n_how[N_HOW], n_bare, n_trimmed;
    strtab cf_tpl;   /* every template the CounterFact prompts of both files use */
    strlist no_rel;  /* those in no relation of data/relations.json */
    bool oom;
} corpus;

static void corpus_free(corpus *C) {
    relset_free(&C->RS);
    st_free(&C->ans);
    free(C->votes);
    for (int i = 0; i < C->nf; i++) {
        free(C->f[i].subject);
        free(C->f[i].answer);
        sl_free(&C->f[i].own);
        sl_free(&C->f[i].trained);
        sl_free(&C->f[i].held);
    }
    free(C->f);
    st_free(&C->fkey);
    st_free(&C->subjects);
    st_free(&C->withheld);
    st_free(&C->cf_tpl);
    sl_free(&C->no_rel);
    for (int i = 0; i < C->tp.str.n; i++) free(C->ta[i]);
    st_free(&C->tp);
    free(C->ta);
    free(C->tsrc);
    conflicts *cl[2] = {&C->fact_conf, &C->prompt_conf};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < cl[k]->n; i++) {
            free(cl[k]->v[i].what);
            free(cl[k]->v[i].kept);
            free(cl[k]->v[i].dropped);
        }
        free(cl[k]->v);
    }
}

static void conflict_add(corpus *C, conflicts *cl, const char *what, const char *kept, const char *kept_src,
                         const char *dropped, const char *dropped_src) {
    if (cl->n == cl->cap) {
        int nc = cl->cap ? 2 * cl->cap : 16;
        conflict *nv = realloc(cl->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            C->oom = true;
            return;
        }
        cl->v = nv;
        cl->cap = nc;
    }
    conflict *c = &cl->v[cl->n++];
    c->what = strdup(what);
    c->kept = strdup(kept);
    c->dropped = strdup(dropped);
    c->kept_src = kept_src;
    c->dropped_src = dropped_src;
    if (!c->what || !c->kept || !c->dropped) C->oom = true;
}

/* Strip white space at both ends in place (the trainer puts exactly one
 * space between prompt and answer); counts the strings it changed. */
static void trim_inplace(corpus *C, char *s) { C->n_trimmed += cli_trim(s); }

static void trim_dataset(corpus *C, graft_dataset *d) {
    for (int i = 0; i < d->n; i++) {
        graft_edit_request *r = &d->req[i];
        trim_inplace(C, r->prompt);
        trim_inplace(C, r->target);
        trim_inplace(C, r->ground_truth);
        trim_inplace(C, r->subject);
        for (int j = 0; j < r->n_rephrases; j++) trim_inplace(C, r->rephrases[j]);
        for (int j = 0; j < r->n_loc; j++) {
            trim_inplace(C, r->loc_prompts[j]);
            trim_inplace(C, r->loc_answers[j]);
        }
    }
}

/* ---------------------------------------------------------------- relation of a record */

/* The template id of a record's prompt, -1 if it is in no relation, -2 if
 * the subject is not in the prompt. With census set, the template is also
 * counted among those the files use (and those no relation lists). */
static int record_tpl(corpus *C, const graft_edit_request *r, bool census) {
    bool oom = false;
    char *t = tpl_of(r->prompt, r->subject, &oom);
    if (oom) C->oom = true;
    if (!t) return -2;
    int id = st_find(&C->RS.tpl, t);
    if (id >= 0 && !C->RS.cf_rels[id]) id = -1;
    if (census && st_find(&C->cf_tpl, t) < 0) {
        if (st_intern(&C->cf_tpl, t) < 0 || (id < 0 && !sl_push(&C->no_rel, t))) C->oom = true;
    }
    free(t);
    return id;
}

/* The answer lexicon: how often each answer is the true answer of a record
 * whose template names one relation, over every record of both files. It
 * settles the relation of a record whose template several relations share
 * ("{} is located in": a country, a continent or a city?). */
static bool build_lexicon(corpus *C, const graft_dataset *const *sets, int nsets) {
    int n_rec = 0;
    for (int s = 0; s < nsets; s++) n_rec += sets[s]->n;
    int *pair = malloc(2 * (size_t)(n_rec ? n_rec : 1) * sizeof *pair), np = 0;
    if (!pair) return false;
    for (int s = 0; s < nsets; s++)
        for (int i = 0; i < sets[s]->n; i++) {
            const graft_edit_request *r = &sets[s]->req[i];
            int t = record_tpl(C, r, true);
            if (t < 0 || __builtin_popcountll(C->RS.cf_rels[t]) != 1) continue;
            int a = st_intern(&C->ans, r->ground_truth);
            if (a < 0) break;
            pair[2 * np] = a;
            pair[2 * np + 1] = __builtin_ctzll(C->RS.cf_rels[t]);
            np++;
        }
    C->votes = calloc((size_t)(C->ans.str.n ? C->ans.str.n : 1) * (size_t)C->RS.n, sizeof *C->votes);
    if (C->votes)
        for (int k = 0; k < np; k++) C->votes[pair[2 * k] * C->RS.n + pair[2 * k + 1]]++;
    free(pair);
    return C->votes && !C->oom;
}

/* The one relation in cand that answer is most often the answer of; -1 on a
 * tie or when the answer is unknown. */
static int vote(const corpus *C, const char *answer, uint64_t cand) {
    int a = st_find(&C->ans, answer), best = -1, best_n = 0;
    bool tie = false;
    if (a < 0) return -1;
    for (int r = 0; r < C->RS.n; r++) {
        if (!(cand >> r & 1)) continue;
        int n = C->votes[a * C->RS.n + r];
        if (n > best_n) best = r, best_n = n, tie = false;
        else if (n == best_n && n > 0) tie = true;
    }
    return tie ? -1 : best;
}

/* A record's relation: its template's, when only one relation lists it;
 * else the one its locality prompt (a neighbour with the same relation and
 * answer) also fits; else the one its answer is most often the answer of. */
static int resolve(corpus *C, const graft_edit_request *r, int *how, int *tpl) {
    int t = *tpl = record_tpl(C, r, false);
    if (t < 0) {
        *how = t == -2 ? HOW_NO_SUBJECT : HOW_NO_TEMPLATE;
        return -1;
    }
    uint64_t cand = C->RS.cf_rels[t];
    if (__builtin_popcountll(cand) == 1) {
        *how = HOW_DIRECT;
        return __builtin_ctzll(cand);
    }
    uint64_t both = r->n_loc > 0 ? cand & fit_rels(&C->RS, r->loc_prompts[0]) : 0;
    if (__builtin_popcountll(both) == 1) {
        *how = HOW_LOCALITY;
        return __builtin_ctzll(both);
    }
    int rel = vote(C, r->ground_truth, both ? both : cand);
    *how = rel >= 0 ? HOW_ANSWER : HOW_AMBIGUOUS;
    return rel;
}

/* ---------------------------------------------------------------- facts */

static char *fact_key(const char *subject, const char *prompt, const char *rel) {
    graft_sbuf k = {0};
    if (subject) graft_sb_str(&k, subject);
    else {
        graft_sb_str(&k, "\x1e");
        graft_sb_str(&k, prompt);
    }
    graft_sb_str(&k, "\x1f");
    graft_sb_str(&k, rel);
    if (k.oom) graft_sb_free(&k);
    return k.s;
}

static int fact_new(corpus *C, const char *subject, const char *prompt, int rel, const char *answer, int role,
                    long case_id) {
    if (C->nf == C->capf) {
        int nc = C->capf ? 2 * C->capf : 1024;
        fact *nv = realloc(C->f, (size_t)nc * sizeof *nv);
        if (!nv) return -2;
        C->f = nv;
        C->capf = nc;
    }
    fact *f = &C->f[C->nf];
    memset(f, 0, sizeof *f);
    f->subject = subject ? strdup(subject) : NULL;
    f->answer = strdup(answer);
    f->rel = rel;
    f->role = role;
    f->case_id = case_id;
    C->nf++; /* counted before the checks so corpus_free frees it */
    if ((subject && !f->subject) || !f->answer || !sl_push(&f->own, prompt)) return -2;
    if (subject && st_intern(&C->subjects, subject) < 0) return -2;
    C->RS.r[rel].n_facts++;
    return C->nf - 1;
}

/* Teach (subject, relation) -> answer through prompt. Returns the fact's
 * index; -1 when that fact is already taught with another answer (the first
 * answer stays; logged as a conflict); -2 when out of memory. */
static int teach(corpus *C, const char *subject, const char *prompt, int rel, const char *answer, int role,
                 long case_id) {
    char *key = fact_key(subject, prompt, C->RS.r[rel].name);
    if (!key) return -2;
    int k = st_find(&C->fkey, key);
    if (k < 0) {
        int id = st_intern(&C->fkey, key);
        free(key);
        if (id < 0) return -2;
        return fact_new(C, subject, prompt, rel, answer, role, case_id);
    }
    free(key);
    fact *f = &C->f[k];
    if (strcmp(f->answer, answer)) {
        char what[512];
        snprintf(what, sizeof what, "%s (%s)", subject ? subject : prompt, C->RS.r[rel].name);
        conflict_add(C, &C->fact_conf, what, f->answer, role_name[f->role], answer, role_name[role]);
        return -1;
    }
    if (!sl_has(&f->own, prompt) && !sl_push(&f->own, prompt)) return -2;
    return k;
}

/* Count a taught CounterFact prompt against its template in relation R. */
static void count_own(relation *R, int tpl_id) {
    for (int j = 0; j < R->n_all; j++)
        if (R->all[j] == tpl_id) R->n_own[j]++;
}

/* Teach a CounterFact record's fact and, for the edit stream, its locality
 * prompt's (the neighbour: same relation and answer, another subject). */
static void teach_record(corpus *C, const graft_edit_request *r, int role, bool neighbour, recinfo *ri) {
    int tpl, which = -1;
    ri->fact = ri->nfact = -1;
    ri->rel = resolve(C, r, &ri->how, &tpl);
    C->n_how[ri->how]++;
    if (ri->rel < 0) return;
    relation *R = &C->RS.r[ri->rel];
    ri->fact = teach(C, r->subject, r->prompt, ri->rel, r->ground_truth, role, r->case_id);
    ri->conflict = ri->fact == -1;
    if (ri->fact >= 0) count_own(R, tpl);
    if (!neighbour || ri->fact == -2 || r->n_loc < 1) goto done;
    bool oom = false;
    char *ns = fit_subject(&C->RS, ri->rel, r->loc_prompts[0], &which, &oom);
    if (oom) ri->fact = -2;
    else {
        C->n_bare += !ns;
        ri->nfact = teach(C, ns, r->loc_prompts[0], ri->rel, r->loc_answers[0], ROLE_NEIGH, r->case_id);
        ri->conflict |= ri->nfact == -1;
        if (ri->nfact >= 0 && ns) R->n_own[which]++;
    }
    free(ns);
done:
    if (ri->fact == -2 || ri->nfact == -2) C->oom = true;
}

/* A fact's phrasings: its own prompts, then its relation's templates in turn
 * from a start that moves one template on with every fact of the relation;
 * the first to fill the trained quota are trained, the next few held out.
 * Phrasings that are the edit stream's own rephrasings are passed over. */
static void phrase_fact(corpus *C, fact *f) {
    for (int i = 0; i < f->own.n; i++)
        if (!sl_push(&f->trained, f->own.v[i])) C->oom = true;
    if (!f->subject) return;
    relset *RS = &C->RS;
    relation *R = &RS->r[f->rel];
    int k = R->n_gen, s = R->next++ % k;
    for (int i = 0; i < k && !C->oom && (f->trained.n < C->n_phr || f->held.n < C->n_hold); i++) {
        int j = (s + i) % k;
        char *p = tpl_fill(RS->tpl.str.v[R->all[j]], f->subject);
        if (!p) {
            C->oom = true;
            break;
        }
        if (sl_has(&f->trained, p) || sl_has(&f->held, p) || st_find(&C->withheld, p) >= 0) {
            free(p);
            continue;
        }
        bool train = f->trained.n < C->n_phr;
        if (!sl_push(train ? &f->trained : &f->held, p)) C->oom = true;
        (train ? R->n_phr : R->n_out)[j]++;
        free(p);
    }
    R->n_short += f->trained.n < C->n_phr || f->held.n < C->n_hold;
}

/* ---------------------------------------------------------------- train.jsonl */

static bool trained_as(const corpus *C, const char *prompt, const char *answer) {
    int k = st_find(&C->tp, prompt);
    return k >= 0 && !strcmp(C->ta[k], answer);
}

/* Offer a row to train.jsonl: withheld prompts are skipped, an identical row
 * is kept once, a prompt already there with another answer keeps its first.
 * True when the row was added. */
static bool train_add(corpus *C, const char *prompt, const char *answer, int role) {
    if (st_find(&C->withheld, prompt) >= 0) {
        C->skipped[role]++;
        return false;
    }
    int k = st_find(&C->tp, prompt);
    if (k >= 0) {
        if (!strcmp(C->ta[k], answer)) C->dup[role]++;
        else conflict_add(C, &C->prompt_conf, prompt, C->ta[k], role_name[C->tsrc[k]], answer, role_name[role]);
        return false;
    }
    if (C->tp.str.n == C->tcap) {
        int nc = C->tcap ? 2 * C->tcap : 4096;
        char **na = realloc(C->ta, (size_t)nc * sizeof *na);
        if (na) C->ta = na;
        int *ns = realloc(C->tsrc, (size_t)nc * sizeof *ns);
        if (ns) C->tsrc = ns;
        if (!na || !ns) {
            C->oom = true;
            return false;
        }
        C->tcap = nc;
    }
    char *a = strdup(answer);
    if (!a || st_intern(&C->tp, prompt) < 0) {
        free(a);
        C->oom = true;
        return false;
    }
    C->ta[C->tp.str.n - 1] = a;
    C->tsrc[C->tp.str.n - 1] = role;
    C->added[role]++;
    return true;
}

/* The first of a fact's trained phrasings that train.jsonl holds with its
 * answer, or NULL: the anchor each held-out row names. */
static const char *anchor(const corpus *C, const fact *f) {
    for (int i = 0; i < f->trained.n; i++)
        if (trained_as(C, f->trained.v[i], f->answer)) return f->trained.v[i];
    return NULL;
}

/* ---------------------------------------------------------------- output rows */

/* The JSON string fields every row file shares: ", \"key\": value". */
static void sb_field(graft_sbuf *b, const char *key, const char *val) {
    graft_sb_printf(b, ", \"%s\": ", key);
    graft_sb_json_str(b, val, strlen(val));
}

/* {"prompt", "answer", ...}: train.jsonl has just the two; the others say
 * where a row comes from. subject, rel, source and trained may be NULL. */
static void row_line(graft_sbuf *b, const char *prompt, const char *answer, const char *subject, const char *rel,
                     const char *source, const char *trained, long case_id, bool with_case) {
    graft_sb_str(b, "{\"prompt\": ");
    graft_sb_json_str(b, prompt, strlen(prompt));
    sb_field(b, "answer", answer);
    if (subject) sb_field(b, "subject", subject);
    if (rel) sb_field(b, "relation", rel);
    if (source) sb_field(b, "source", source);
    if (trained) sb_field(b, "trained_prompt", trained);
    if (with_case) graft_sb_printf(b, ", \"case_id\": %ld", case_id);
    graft_sb_str(b, "}\n");
}

/* An edit-stream record in EasyEdit's flat CounterFact form, its keys in
 * the input's order; rephrase_prompt is a list (graft's reader takes one):
 * CounterFact's own rephrasing, then the held-out template phrasings. */
static void edit_record(graft_sbuf *b, const graft_edit_request *r, const fact *f, const char *rel) {
    graft_sb_printf(b, "{\"case_id\": %ld", r->case_id);
    sb_field(b, "prompt", r->prompt);
    sb_field(b, "target_new", r->target);
    sb_field(b, "subject", r->subject);
    sb_field(b, "ground_truth", r->ground_truth);
    graft_sb_str(b, ", \"rephrase_prompt\": [");
    for (int j = 0; j < r->n_rephrases + f->held.n; j++) {
        const char *p = j < r->n_rephrases ? r->rephrases[j] : f->held.v[j - r->n_rephrases];
        if (j) graft_sb_str(b, ", ");
        graft_sb_json_str(b, p, strlen(p));
    }
    graft_sb_str(b, "]");
    sb_field(b, "locality_prompt", r->loc_prompts[0]);
    sb_field(b, "locality_ground_truth", r->loc_answers[0]);
    sb_field(b, "relation", rel);
    graft_sb_str(b, "}");
}

/* Markdown table cell: '|' and line breaks would break the table. */
static void md_cell(graft_sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '|') graft_sb_str(b, "\\|");
        else if (*s == '\n' || *s == '\r') graft_sb_str(b, " ");
        else graft_sb_add(b, s, 1);
    }
}

/* ---------------------------------------------------------------- the build */

typedef struct {
    long n_edit, n_known, n_unseen, n_zsre;
    const char *shared, *relations, *out;
} options;

/* Everything the files are made of, and what was left out along the way. */
typedef struct {
    graft_sbuf train, held, cfreph, zsre, known, stream, unseen, text, readme;
    int n_held, n_cfreph, n_zsre, n_known, n_stream, n_unseen, n_text;
    int held_trained, held_dup, held_untaught, cfreph_trained, zsre_trained, zsre_untaught;
    int stream_bad[5]; /* relation unresolved, a conflict, prompt or locality not trained, rephrase trained,
                          new target no trained answer */
    int known_bad[3];  /* relation unresolved or conflict, prompt not trained, subject edited */
    int unseen_bad[3]; /* subject taught, prompt trained, repeated sentence */
    int zsre_empty_alt;
} output;

static void output_free(output *O) {
    graft_sbuf *b[] = {&O->train, &O->held, &O->cfreph, &O->zsre, &O->known, &O->stream, &O->unseen, &O->text,
                       &O->readme};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) graft_sb_free(b[i]);
}

/* 1. Teach the facts, phrase them, fill train.jsonl. */
static void build_train(corpus *C, const options *o, const graft_dataset *E, const graft_dataset *T,
                        const graft_dataset *Z, recinfo *ei, recinfo *ti) {
    for (int i = 0; i < o->n_edit && !C->oom; i++) teach_record(C, &E->req[i], ROLE_EDIT, true, &ei[i]);
    for (int i = 0; i < o->n_known && !C->oom; i++) teach_record(C, &T->req[i], ROLE_KNOWN, false, &ti[i]);
    for (int i = 0; i < o->n_zsre; i++)
        if (st_intern(&C->subjects, Z->req[i].subject ? Z->req[i].subject : "") < 0) C->oom = true;
    /* CounterFact's rephrasings of the edits are withheld before phrasing, so
     * no fact is phrased with one ... */
    for (int i = 0; i < o->n_edit; i++)
        for (int j = 0; j < E->req[i].n_rephrases; j++)
            if (st_intern(&C->withheld, E->req[i].rephrases[j]) < 0) C->oom = true;
    for (int i = 0; i < C->nf && !C->oom; i++) phrase_fact(C, &C->f[i]);
    /* ... and the held-out phrasings of the edited facts after it, so no
     * other fact (same subject, shared template) trains them either. */
    for (int i = 0; i < o->n_edit; i++)
        if (ei[i].fact >= 0)
            for (int j = 0; j < C->f[ei[i].fact].held.n; j++)
                if (st_intern(&C->withheld, C->f[ei[i].fact].held.v[j]) < 0) C->oom = true;
    for (int i = 0; i < C->nf && !C->oom; i++) {
        const fact *f = &C->f[i];
        for (int j = 0; j < f->trained.n; j++)
            C->RS.r[f->rel].n_train += train_add(C, f->trained.v[j], f->answer, f->role);
    }
    for (int i = 0; i < o->n_zsre && !C->oom; i++)
        train_add(C, Z->req[i].prompt, Z->req[i].ground_truth, ROLE_ZSRE);
}

/* 2. The held-out files: template phrasings of taught facts, CounterFact's
 * own rephrasings, zsRE's rephrased questions. */
static void build_heldout(corpus *C, const options *o, const graft_dataset *E, const graft_dataset *T,
                          const graft_dataset *Z, const recinfo *ei, const recinfo *ti, output *O) {
    strtab seen = {0};
    for (int i = 0; i < C->nf; i++) {
        const fact *f = &C->f[i];
        const char *a = anchor(C, f);
        for (int j = 0; j < f->held.n; j++) {
            const char *p = f->held.v[j];
            if (!a) O->held_untaught++;
            else if (st_find(&C->tp, p) >= 0) O->held_trained++;
            else if (st_find(&seen, p) >= 0) O->held_dup++;
            else if (st_intern(&seen, p) < 0) C->oom = true;
            else {
                row_line(&O->held, p, f->answer, NULL, C->RS.r[f->rel].name, role_name[f->role], a, f->case_id, true);
                C->RS.r[f->rel].n_held++;
                O->n_held++;
            }
        }
    }
    for (int s = 0; s < 2; s++) {
        const graft_dataset *D = s ? T : E;
        const recinfo *ri = s ? ti : ei;
        for (int i = 0; i < (s ? o->n_known : o->n_edit); i++) {
            if (ri[i].fact < 0) continue;
            const fact *f = &C->f[ri[i].fact];
            const char *a = anchor(C, f);
            for (int j = 0; a && j < D->req[i].n_rephrases; j++) {
                const char *p = D->req[i].rephrases[j];
                if (st_find(&C->tp, p) >= 0 || st_find(&seen, p) >= 0) O->cfreph_trained++;
                else if (st_intern(&seen, p) < 0) C->oom = true;
                else {
                    const char *src = s ? "cf-known-rephrase" : "cf-edit-rephrase";
                    row_line(&O->cfreph, p, f->answer, NULL, C->RS.r[f->rel].name, src, a, D->req[i].case_id, true);
                    O->n_cfreph++;
                }
            }
        }
    }
    for (int i = 0; i < o->n_zsre; i++) {
        const graft_edit_request *r = &Z->req[i];
        O->zsre_empty_alt += !r->target || !*r->target;
        for (int j = 0; j < r->n_rephrases; j++) {
            if (!trained_as(C, r->prompt, r->ground_truth)) O->zsre_untaught++;
            else if (st_find(&C->tp, r->rephrases[j]) >= 0 || st_find(&seen, r->rephrases[j]) >= 0) O->zsre_trained++;
            else if (st_intern(&seen, r->rephrases[j]) < 0) C->oom = true;
            else {
                row_line(&O->zsre, r->rephrases[j], r->ground_truth, NULL, NULL, "zsre-rephrase", r->prompt, r->case_id,
                         true);
                O->n_zsre++;
            }
        }
    }
    st_free(&seen);
}

/* Why an edit record cannot go into the stream (an index into stream_bad),
 * or -1 when it can: the model must know its true fact as it is asked, know
 * its neighbour, never have seen any of its rephrasings, and have produced
 * its new target as some fact's answer (with a tied head, a target the model
 * never had to produce is split into pieces it cannot be steered to: 4 of
 * the first 50 edits of a pilot did not take at any GRACE radius). */
static int stream_problem(const corpus *C, const graft_edit_request *r, const recinfo *ri, const strtab *answers) {
    if (ri->rel < 0) return 0;
    if (ri->conflict || ri->fact < 0 || ri->nfact < 0) return 1;
    if (!trained_as(C, r->prompt, r->ground_truth) || !trained_as(C, r->loc_prompts[0], r->loc_answers[0])) return 2;
    const fact *f = &C->f[ri->fact];
    for (int j = 0; j < r->n_rephrases + f->held.n; j++)
        if (st_find(&C->tp, j < r->n_rephrases ? r->rephrases[j] : f->held.v[j - r->n_rephrases]) >= 0) return 3;
    if (st_find(answers, r->target) < 0) return 4;
    return -1;
}

/* 3. edit_stream.json and known_facts.jsonl. */
static void build_stream_known(corpus *C, const options *o, const graft_dataset *E, const graft_dataset *T,
                               const recinfo *ei, const recinfo *ti, output *O) {
    strtab edited = {0}, answers = {0};
    for (int k = 0; k < C->tp.str.n; k++)
        if (st_intern(&answers, C->ta[k]) < 0) C->oom = true;
    graft_sb_str(&O->stream, "[\n");
    for (int i = 0; i < o->n_edit; i++) {
        const graft_edit_request *r = &E->req[i];
        int why = stream_problem(C, r, &ei[i], &answers);
        if (why >= 0) {
            O->stream_bad[why]++;
            continue;
        }
        if (O->n_stream++) graft_sb_str(&O->stream, ",\n");
        edit_record(&O->stream, r, &C->f[ei[i].fact], C->RS.r[ei[i].rel].name);
        if (st_intern(&edited, r->subject) < 0) C->oom = true;
    }
    graft_sb_str(&O->stream, O->n_stream ? "\n]\n" : "]\n");
    for (int i = 0; i < o->n_known; i++) {
        const graft_edit_request *r = &T->req[i];
        if (ti[i].rel < 0 || ti[i].conflict) O->known_bad[0]++;
        else if (!trained_as(C, r->prompt, r->ground_truth)) O->known_bad[1]++;
        else if (st_find(&edited, r->subject) >= 0) O->known_bad[2]++;
        else {
            row_line(&O->known, r->prompt, r->ground_truth, r->subject, C->RS.r[ti[i].rel].name, NULL, NULL,
                     r->case_id, true);
            O->n_known++;
        }
    }
    st_free(&edited);
    st_free(&answers);
}

/* 4. unseen_facts.jsonl and heldout_text.txt: records after the stream whose
 * subject the model never meets and whose prompt it never trains on. */
static void build_unseen(corpus *C, const options *o, const graft_dataset *E, output *O) {
    strtab seen = {0};
    for (long i = o->n_edit; i < o->n_edit + o->n_unseen; i++) {
        const graft_edit_request *r = &E->req[i];
        int how, tpl, rel = resolve(C, r, &how, &tpl);
        C->n_how[how]++;
        if (st_find(&C->subjects, r->subject) >= 0) {
            O->unseen_bad[0]++;
            continue;
        }
        if (st_find(&C->tp, r->prompt) >= 0) {
            O->unseen_bad[1]++;
            continue;
        }
        graft_sbuf s = {0};
        graft_sb_str(&s, r->prompt);
        graft_sb_str(&s, " ");
        graft_sb_str(&s, r->ground_truth);
        if (s.len && !strchr(".!?", s.s[s.len - 1])) graft_sb_str(&s, ".");
        for (char *q = s.s; q && *q; q++) /* one sentence per line */
            if (*q == '\n' || *q == '\r' || *q == '\t') *q = ' ';
        if (s.oom) C->oom = true;
        else if (st_find(&seen, s.s) >= 0) O->unseen_bad[2]++;
        else if (st_intern(&seen, s.s) < 0) C->oom = true;
        else {
            const char *rname = rel >= 0 ? C->RS.r[rel].name : "unknown";
            row_line(&O->unseen, r->prompt, r->ground_truth, r->subject, rname, NULL, NULL, r->case_id, true);
            graft_sb_str(&O->text, s.s);
            graft_sb_str(&O->text, "\n");
            O->n_unseen++;
            O->n_text++;
        }
        graft_sb_free(&s);
    }
    st_free(&seen);
}

/* ---------------------------------------------------------------- README */

static void readme_head(graft_sbuf *R, const options *o, const corpus *C, const output *O) {
    graft_sb_printf(R,
                    "# data/facts2: a fact corpus taught in many phrasings\n\n"
                    "Generated by `graft corpus --paraphrase` (cli/cmd_corpus_para.c) from ../shared/data and the\n"
                    "hand-written relation templates in data/relations.json; do not edit by hand. From the\n"
                    "repository root:\n\n"
                    "    graft corpus --paraphrase --shared ../shared/data --relations data/relations.json \\\n"
                    "        --out data/facts2 --n-edit %ld --n-known %ld --n-unseen %ld --n-zsre %ld \\\n"
                    "        --phrasings %ld --held-out %ld\n\n"
                    "Nothing is shuffled or sampled: the files are a pure function of the input files and the flags,\n"
                    "byte for byte (tests/cli_corpus_para.sh rebuilds them and compares). The model trained on it\n"
                    "should learn \"relation in any phrasing -> answer\", and the held-out files measure whether it\n"
                    "did.\n\n",
                    o->n_edit, o->n_known, o->n_unseen, o->n_zsre, C->n_phr, C->n_hold);
    graft_sb_printf(R,
                    "## Files\n\n| file | rows | bytes | what |\n|---|---|---|---|\n"
                    "| train.jsonl | %d | %zu | true facts `{\"prompt\", \"answer\"}`, each in several phrasings |\n"
                    "| heldout_phrasings.jsonl | %d | %zu | template phrasings of trained facts, never trained |\n"
                    "| heldout_cf_rephrases.jsonl | %d | %zu | CounterFact's own rephrasings of trained facts, never "
                    "trained |\n"
                    "| heldout_zsre.jsonl | %d | %zu | zsRE's rephrased questions of trained zsRE facts, never "
                    "trained |\n"
                    "| known_facts.jsonl | %d | %zu | trained facts whose subject no edit touches (TRR / held "
                    "knowledge) |\n"
                    "| edit_stream.json | %d | %zu | CounterFact edits of trained facts, EasyEdit flat format |\n"
                    "| unseen_facts.jsonl | %d | %zu | facts never taught, subject never seen |\n"
                    "| heldout_text.txt | %d | %zu | one sentence per unseen fact (perplexity) |\n\n",
                    C->tp.str.n, O->train.len, O->n_held, O->held.len, O->n_cfreph, O->cfreph.len, O->n_zsre,
                    O->zsre.len, O->n_known, O->known.len, O->n_stream, O->stream.len, O->n_unseen, O->unseen.len,
                    O->n_text, O->text.len);
    graft_sb_str(R,
                 "Held-out rows are `{\"prompt\", \"answer\", \"relation\", \"source\", \"trained_prompt\", "
                 "\"case_id\"}`:\n"
                 "`trained_prompt` is a phrasing of the same fact that train.jsonl holds with the same answer, so a\n"
                 "miss can be told apart from a fact the model never learnt. known_facts.jsonl and\n"
                 "unseen_facts.jsonl rows are `{\"prompt\", \"answer\", \"subject\", \"relation\", \"case_id\"}`.\n"
                 "`graft eval --facts` reads all of them (it uses prompt and answer).\n\n");
    graft_sb_printf(R,
                    "## How prompt and answer join\n\n"
                    "As in data/facts: answers carry no leading space and prompts no trailing space (white space at\n"
                    "either end is stripped; %d strings needed it), and the text a model trains and is scored on is\n"
                    "`prompt + \" \" + answer`, e.g. `The mother tongue of Danielle Darrieux is` + ` ` + `French`,\n"
                    "the EasyEdit convention, so a GPT-2 BPE answer starts with a space-prefixed token (` French`).\n"
                    "zsRE prompts are questions (`What is the product made by UniFirst? uniform`). train.jsonl is in\n"
                    "recipe order (a fact's phrasings one after another): a trainer should shuffle it.\n\n",
                    C->n_trimmed);
}

static void readme_grouping(graft_sbuf *R, const corpus *C, const graft_dataset *E, const graft_dataset *T) {
    int min_gen = 1 << 30;
    for (int i = 0; i < C->RS.n; i++)
        if (C->RS.r[i].n_gen < min_gen) min_gen = C->RS.r[i].n_gen;
    graft_sb_printf(R,
                    "## Relations and their templates\n\n"
                    "The flat CounterFact files have no relation id. Putting `{}` in place of the subject in all\n"
                    "%d prompts of counterfact-edit.json and counterfact-train.json gives %d distinct templates;\n"
                    "%d of them are in no relation of data/relations.json",
                    E->n + T->n, C->cf_tpl.str.n, C->no_rel.n);
    for (int i = 0; i < C->no_rel.n && i < 20; i++) {
        graft_sb_str(R, i ? ", `" : " (`");
        md_cell(R, C->no_rel.v[i]);
        graft_sb_str(R, i + 1 == C->no_rel.n || i == 19 ? "`)" : "`");
    }
    graft_sb_str(R,
                 ". They were grouped by hand, by\n"
                 "what the question asks and by the subjects and answers each template comes with, into the\n"
                 "relations of data/relations.json (its `counterfact` lists). Where two Wikidata relations ask\n"
                 "the same thing in the same words, they are one relation here: a person's native language and\n"
                 "the languages they speak (`language`); a product's manufacturer and developer (`maker`); where\n"
                 "a work comes from and where a band or company was formed (`origin`: CounterFact's\n"
                 "neighbourhood prompts mix the two sets of templates); the location of an event or building and\n"
                 "the region a place is in (`located-in`, likewise). Each relation also has phrasings written\n");
    graft_sb_printf(R, "for graft (`own`), so that every relation has at least %d templates that can phrase its\n",
                    min_gen);
    graft_sb_str(R,
                 "facts. Templates that are vague, tied to an article (`{}'s profession is a` / `an`) or shared by\n"
                 "relations with different answers (`{}, the`: an instrument, a sport or a position) are\n"
                 "`match_only`: they assign a record to its relation and phrase only that record's own prompt.\n\n"
                 "A template listed by several relations (`{} is located in`: country, continent or region) is\n"
                 "settled per record: first by its locality prompt, a neighbour CounterFact gives with the same\n"
                 "relation and answer, whose most specific matching template may belong to only one of the\n"
                 "candidates; else by its answer, taking the candidate whose unambiguous records (over both whole\n"
                 "files) have that answer most often. A record settled by neither is left out, with records whose\n"
                 "template is in no relation.\n\n");
}

/* The least and the most of a relation's facts one of its phrasing
 * templates is trained on, in percent. */
static void train_share(const relation *R, int *lo, int *hi) {
    *lo = 100;
    *hi = 0;
    for (int j = 0; j < R->n_gen && R->n_facts; j++) {
        int pc = (int)((100L * (R->n_own[j] + R->n_phr[j]) + R->n_facts / 2) / R->n_facts);
        if (pc < *lo) *lo = pc;
        if (pc > *hi) *hi = pc;
    }
    if (!R->n_facts) *lo = 0;
}

static void readme_relations(graft_sbuf *R, const corpus *C) {
    const relset *RS = &C->RS;
    graft_sb_str(R, "| relation | asks | templates (counterfact + own, match-only) | facts taught | train rows | "
                    "held-out rows | facts a template trains (%) |\n|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < RS->n; i++) {
        const relation *Rl = &RS->r[i];
        int lo, hi;
        train_share(Rl, &lo, &hi);
        graft_sb_printf(R, "| %s | ", Rl->name);
        md_cell(R, Rl->asks);
        graft_sb_printf(R, " | %d + %d, %d | %d | %d | %d | %d-%d |\n", Rl->cf.n, Rl->own.n, Rl->match.n,
                        Rl->n_facts, Rl->n_train, Rl->n_held, lo, hi);
    }
    graft_sb_printf(R, "\nThe last column is the range, over the relation's phrasing templates, of the share of its\n"
                       "facts a template is trained on (own prompts included). With %ld trained phrasings per fact,\n"
                       "a relation with many templates trains each of them on fewer of its facts.\n", C->n_phr);
    graft_sb_str(R, "\nEvery template, with the CounterFact prompts of taught facts written with it (trained as they\n"
                    "are) and the number of facts it phrases beyond those, in training and held out:\n\n"
                    "| relation | template | kind | CounterFact prompts | facts trained | facts held out |\n"
                    "|---|---|---|---|---|---|\n");
    for (int i = 0; i < RS->n; i++) {
        const relation *Rl = &RS->r[i];
        for (int j = 0; j < Rl->n_all; j++) {
            const char *kind = j < Rl->cf.n ? "counterfact" : j < Rl->n_gen ? "own" : "match-only";
            graft_sb_printf(R, "| %s | `", Rl->name);
            md_cell(R, RS->tpl.str.v[Rl->all[j]]);
            graft_sb_printf(R, "` | %s | %d | %d | %d |\n", kind, Rl->n_own[j], Rl->n_phr[j], Rl->n_out[j]);
        }
    }
    graft_sb_str(R, "\n");
}

static void readme_recipe(graft_sbuf *R, const options *o, const corpus *C) {
    graft_sb_printf(R,
                    "## Recipe\n\n"
                    "Indices are 0-based positions in the input lists; [a, b) is a half-open range.\n\n"
                    "1. **Facts.** A fact is (subject, relation, answer). In this order: counterfact-edit.json\n"
                    "   records [0, %ld) give their true fact (`subject`, relation, `ground_truth`; cf-edit) and\n"
                    "   their neighbour's (the locality prompt read with the relation's most specific matching\n"
                    "   template: another subject, same relation and answer; cf-neighbour); counterfact-train.json\n"
                    "   records [0, %ld) give their true fact (cf-known). A fact met again with the same answer\n"
                    "   gains the new prompt; with another answer the first answer stays (a fact conflict, listed\n"
                    "   below).\n"
                    "2. **Phrasings.** A fact's own CounterFact prompts are always trained. Its relation's\n"
                    "   templates (`counterfact` then `own`, as listed) are then taken in turn, starting at template\n"
                    "   j mod k for the j-th fact of the relation (k templates): each fills the subject in; the first\n"
                    "   ones bring the fact to %ld trained phrasings, the next %ld are held out. So the held-out\n"
                    "   templates move on by one with every fact, and each template is trained on some facts and\n"
                    "   held out on others. A phrasing that is one of the edit stream's CounterFact rephrasings is\n"
                    "   passed over.\n"
                    "3. **Withheld.** CounterFact's rephrasings of the records [0, %ld) and the held-out phrasings of\n"
                    "   their facts are never trained, even where another fact (the same subject, a template two\n"
                    "   relations share) would phrase them.\n"
                    "4. **train.jsonl**: every fact's trained phrasings, fact by fact, then zsre_mend_train-1k.json\n"
                    "   records [0, %ld) as `src -> answers[0]` (zsre). An identical row is kept once; a prompt\n"
                    "   already present with another answer keeps the first (a prompt conflict, listed below).\n"
                    "5. **heldout_phrasings.jsonl**: every fact's held-out phrasings that train.jsonl does not hold,\n"
                    "   first occurrence only, for facts train.jsonl holds in at least one phrasing.\n"
                    "   **heldout_cf_rephrases.jsonl**: the `rephrase_prompt` of the records of step 1 (not of the\n"
                    "   neighbours, which have none). They are CounterFact's generation prompts and often ask\n"
                    "   loosely (`Danielle Darrieux is known for`), so they are kept apart from the template\n"
                    "   phrasings. **heldout_zsre.jsonl**: the `rephrase` of every zsRE record of step 4.\n"
                    "6. **edit_stream.json**: counterfact-edit.json records [0, %ld) whose relation is settled, whose\n"
                    "   fact and neighbour were taught without a conflict, whose `prompt -> ground_truth` and\n"
                    "   `locality_prompt -> locality_ground_truth` are in train.jsonl as they are, none of whose\n"
                    "   rephrasings is, and whose `target_new` is the answer of some train.jsonl row (a model with a\n"
                    "   tied head cannot be steered to pieces it never had to produce); in input order, one record per line. Keys as in the input (EasyEdit's flat\n"
                    "   format), except that `rephrase_prompt` is a list: CounterFact's own rephrasing first, then\n"
                    "   the fact's held-out template phrasings; and `relation` is added.\n"
                    "7. **known_facts.jsonl**: counterfact-train.json records [0, %ld) whose relation is settled,\n"
                    "   whose fact was taught without a conflict, whose `prompt -> ground_truth` is in train.jsonl\n"
                    "   and whose subject is not the subject of an edit-stream record.\n"
                    "8. **unseen_facts.jsonl** and **heldout_text.txt**: counterfact-edit.json records [%ld, %ld)\n"
                    "   whose subject is the subject of no taught fact (nor of a zsRE record) and whose prompt is not\n"
                    "   trained: the prompt with its true answer, and the sentence\n"
                    "   `prompt + \" \" + ground_truth + \".\"` (no period after an answer ending in . ! ?),\n"
                    "   repeated sentences once.\n\n",
                    o->n_edit, o->n_known, C->n_phr, C->n_hold, o->n_edit, o->n_zsre, o->n_edit, o->n_known, o->n_edit,
                    o->n_edit + o->n_unseen);
}

static void readme_counts(graft_sbuf *R, const options *o, const corpus *C, const output *O) {
    int n_taught = 0, n_dup = 0, n_skip = 0, n_short = 0;
    for (int i = 0; i < C->nf; i++) n_taught += anchor(C, &C->f[i]) != NULL;
    for (int r = 0; r < C->RS.n; r++) n_short += C->RS.r[r].n_short;
    graft_sb_str(R, "## Counts\n\nRelation of the CounterFact records read (steps 1 and 8):\n\n| how | records |\n"
                    "|---|---|\n");
    for (int h = 0; h < N_HOW; h++) graft_sb_printf(R, "| %s | %d |\n", how_name[h], C->n_how[h]);
    graft_sb_str(R, "\n| train.jsonl source | rows added | duplicates | withheld |\n|---|---|---|---|\n");
    for (int s = 0; s < N_ROLE; s++) {
        graft_sb_printf(R, "| %s | %d | %d | %d |\n", role_name[s], C->added[s], C->dup[s], C->skipped[s]);
        n_dup += C->dup[s];
        n_skip += C->skipped[s];
    }
    graft_sb_printf(R,
                    "\n- facts: %d taught from CounterFact (%d of them in train.jsonl in at least one phrasing; %d\n"
                    "  neighbours read by no template, trained by their own prompt only), plus %ld zsRE questions;\n"
                    "  %d facts got fewer phrasings than asked (their relation ran out of templates)\n"
                    "- train.jsonl: %d rows (%d identical rows dropped, %d withheld rows skipped, %d prompt\n"
                    "  conflicts); %d fact conflicts\n"
                    "- held-out phrasings: %d (left out: %d trained after all, %d repeats, %d of untrained facts)\n"
                    "- CounterFact rephrasings held out: %d (left out: %d trained or repeated)\n"
                    "- zsRE rephrasings held out: %d (left out: %d trained or repeated, %d whose question is not\n"
                    "  trained); zsRE records with an empty `alt` (still used: only `answers[0]` matters): %d\n"
                    "- edit stream: %d records (left out: %d relation not settled, %d a fact conflict, %d prompt or\n"
                    "  locality prompt not trained as it is, %d a rephrasing trained, %d a new target that is no\n"
                    "  trained answer)\n"
                    "- known facts: %d (left out: %d relation not settled or a conflict, %d prompt not trained, %d\n"
                    "  subject edited)\n"
                    "- unseen facts and held-out sentences: %d (left out: %d subject taught, %d prompt trained, %d\n"
                    "  repeated sentences)\n\n",
                    C->nf, n_taught, C->n_bare, o->n_zsre, n_short, C->tp.str.n, n_dup,
                    n_skip, C->prompt_conf.n, C->fact_conf.n, O->n_held, O->held_trained, O->held_dup,
                    O->held_untaught, O->n_cfreph, O->cfreph_trained, O->n_zsre, O->zsre_trained, O->zsre_untaught,
                    O->zsre_empty_alt, O->n_stream, O->stream_bad[0], O->stream_bad[1], O->stream_bad[2],
                    O->stream_bad[3], O->stream_bad[4], O->n_known, O->known_bad[0], O->known_bad[1], O->known_bad[2], O->n_unseen,
                    O->unseen_bad[0], O->unseen_bad[1], O->unseen_bad[2]);
}

static void readme_conflicts(graft_sbuf *R, const conflicts *cl, const char *title, const char *col) {
    if (!cl->n) return;
    graft_sb_printf(R, "### %s (the first answer is kept)\n\n| %s | kept | from | dropped | from |\n"
                       "|---|---|---|---|---|\n", title, col);
    for (int i = 0; i < cl->n; i++) {
        graft_sb_str(R, "| ");
        md_cell(R, cl->v[i].what);
        graft_sb_str(R, " | ");
        md_cell(R, cl->v[i].kept);
        graft_sb_printf(R, " | %s | ", cl->v[i].kept_src);
        md_cell(R, cl->v[i].dropped);
        graft_sb_printf(R, " | %s |\n", cl->v[i].dropped_src);
    }
    graft_sb_str(R, "\n");
}

/* The records whose relation could not be settled, so they can be checked. */
static void readme_unsettled(graft_sbuf *R, const graft_dataset *D, const recinfo *ri, int n, const char *file) {
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (ri[i].rel >= 0) continue;
        if (!any) graft_sb_printf(R, "### Records of %s left out for their relation\n\n| case_id | prompt | answer | "
                                     "locality prompt | why |\n|---|---|---|---|---|\n", file);
        any = true;
        graft_sb_printf(R, "| %ld | ", D->req[i].case_id);
        md_cell(R, D->req[i].prompt);
        graft_sb_str(R, " | ");
        md_cell(R, D->req[i].ground_truth);
        graft_sb_str(R, " | ");
        md_cell(R, D->req[i].n_loc ? D->req[i].loc_prompts[0] : "");
        graft_sb_printf(R, " | %s |\n", how_name[ri[i].how]);
    }
    if (any) graft_sb_str(R, "\n");
}

static void readme_sources(graft_sbuf *R, const graft_dataset *E, const graft_dataset *T, const graft_dataset *Z) {
    graft_sb_printf(R,
                    "## Sources and licences\n\n"
                    "Inputs (from ../shared/data; their SOURCES.md files give the upstream commits and sha256):\n\n"
                    "- `counterfact/counterfact-edit.json` (%d records read) and `counterfact/counterfact-train.json`\n"
                    "  (%d read; both whole, for the answer lexicon): CounterFact, Meng, Bau, Andonian and Belinkov,\n"
                    "  *Locating and Editing Factual Associations in GPT* (ROME, NeurIPS 2022), rome.baulab.info,\n"
                    "  released under the MIT licence; in the flat format of EasyEdit (zjunlp/EasyEdit, MIT). These\n"
                    "  copies come from github.com/Jometeorie/KnowledgeSpread @ 51d7402 (no licence file there).\n"
                    "- `zsre/zsre_mend_train-1k.json` (%d read): zsRE question answering, Levy, Seo, Choi and\n"
                    "  Zettlemoyer, *Zero-Shot Relation Extraction via Reading Comprehension* (CoNLL 2017), in the\n"
                    "  form prepared by De Cao, Aziz and Titov (2021) and Mitchell et al. (MEND, ICLR 2022); copy\n"
                    "  from github.com/Jometeorie/KnowledgeSpread @ 51d7402 (no licence file there).\n"
                    "- `data/relations.json`: written for graft; its `own` templates are graft's own wording.\n\n"
                    "Every string is checked to be valid UTF-8 on the way in (src/data/dataset.c).\n",
                    E->n, T->n, Z->n);
}

/* ---------------------------------------------------------------- command */

static void usage(FILE *out) {
    fputs("usage: graft corpus --paraphrase [--out DIR] [--shared DIR] [--relations FILE] [--n-edit N]\n"
          "                    [--n-known N] [--n-unseen N] [--n-zsre N] [--phrasings N] [--held-out N]\n"
          "Build the paraphrase fact corpus: every fact taught in several phrasings of its relation,\n"
          "a few phrasings of every fact held out; the recipe is written to DIR/README.md.\n"
          "  -o, --out DIR       output directory (default: data/facts2 in the source tree)\n"
          "  --shared DIR        the shared data folder holding counterfact/ and zsre/\n"
          "                      (default: ../shared/data beside the source tree)\n"
          "  --relations FILE    relation templates (default: data/relations.json in the source tree)\n"
          "  --n-edit N          counterfact-edit records whose facts are taught and edited (default 1000)\n"
          "  --n-known N         counterfact-train facts taught and never edited (default 1000)\n"
          "  --n-unseen N        counterfact-edit records after those, never taught (default 500)\n"
          "  --n-zsre N          zsRE questions taught (default 1000)\n"
          "  --phrasings N       trained phrasings per fact, its own prompts included (default 6)\n"
          "  --held-out N        held-out phrasings per fact (default 2)\n",
          out);
}

/* Options; 0 ok, 2 a usage error, -1 --help was printed. */
static int parse_options(int argc, char **argv, options *o, long *n_phr, long *n_hold) {
    static const struct option opts[] = {
        {"paraphrase", no_argument, 0, 'p'},       {"out", required_argument, 0, 'o'},
        {"shared", required_argument, 0, 's'},     {"relations", required_argument, 0, 'r'},
        {"n-edit", required_argument, 0, 'e'},     {"n-known", required_argument, 0, 'k'},
        {"n-unseen", required_argument, 0, 'u'},   {"n-zsre", required_argument, 0, 'z'},
        {"phrasings", required_argument, 0, 'P'},  {"held-out", required_argument, 0, 'H'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p': break;
        case 'o': o->out = optarg; break;
        case 's': o->shared = optarg; break;
        case 'r': o->relations = optarg; break;
        case 'e': bad = cli_parse_int(CMD, "--n-edit", optarg, 1, 1000000, &o->n_edit); break;
        case 'k': bad = cli_parse_int(CMD, "--n-known", optarg, 0, 1000000, &o->n_known); break;
        case 'u': bad = cli_parse_int(CMD, "--n-unseen", optarg, 0, 1000000, &o->n_unseen); break;
        case 'z': bad = cli_parse_int(CMD, "--n-zsre", optarg, 0, 1000000, &o->n_zsre); break;
        case 'P': bad = cli_parse_int(CMD, "--phrasings", optarg, 1, 64, n_phr); break;
        case 'H': bad = cli_parse_int(CMD, "--held-out", optarg, 1, 64, n_hold); break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!*o->out || !*o->shared || !*o->relations) {
        cli_fail(CMD, "--out, --shared and --relations want a non-empty path");
        return 2;
    }
    return 0;
}

/* Load the three input files whole (the lexicon reads every record) and
 * check they hold what the flags ask for. */
static int load_inputs(const options *o, graft_dataset *E, graft_dataset *T, graft_dataset *Z) {
    char *d_cf = graft_path_join(o->shared, "counterfact"), *d_zs = graft_path_join(o->shared, "zsre");
    char *pe = d_cf ? graft_path_join(d_cf, "counterfact-edit.json") : NULL;
    char *pt = d_cf ? graft_path_join(d_cf, "counterfact-train.json") : NULL;
    char *pz = d_zs ? graft_path_join(d_zs, "zsre_mend_train-1k.json") : NULL;
    int rc = 1;
    graft_status st = GRAFT_OK;
    if (!pe || !pt || !pz) cli_fail(CMD, "out of memory");
    else if ((st = graft_dataset_load(pe, "counterfact", 0, E)) != GRAFT_OK ||
             (st = graft_dataset_load(pt, "counterfact", 0, T)) != GRAFT_OK ||
             (st = graft_dataset_load_ex(pz, "zsre", 0, GRAFT_DATASET_KEEP_EMPTY_TARGET, Z)) != GRAFT_OK)
        cli_fail_status(CMD, st);
    else if (E->n < o->n_edit + o->n_unseen)
        cli_fail(CMD, "%s has %d records; --n-edit %ld and --n-unseen %ld ask for %ld", pe, E->n, o->n_edit,
                 o->n_unseen, o->n_edit + o->n_unseen);
    else if (T->n < o->n_known) cli_fail(CMD, "%s has %d records; --n-known %ld asks for more", pt, T->n, o->n_known);
    else if (Z->n < o->n_zsre) cli_fail(CMD, "%s has %d records; --n-zsre %ld asks for more", pz, Z->n, o->n_zsre);
    else rc = 0;
    for (int i = 0; !rc && i < o->n_edit; i++)
        if (E->req[i].n_rephrases < 1 || E->req[i].n_loc < 1)
            rc = cli_fail(CMD, "%s: row %d: no rephrase or no locality pair", pe, E->req[i].row);
    free(d_cf);
    free(d_zs);
    free(pe);
    free(pt);
    free(pz);
    return rc;
}

static int write_all(const char *dir, output *O) {
    struct {
        const char *name;
        const graft_sbuf *b;
    } files[] = {{"train.jsonl", &O->train},          {"heldout_phrasings.jsonl", &O->held},
                 {"heldout_cf_rephrases.jsonl", &O->cfreph}, {"heldout_zsre.jsonl", &O->zsre},
                 {"known_facts.jsonl", &O->known},    {"edit_stream.json", &O->stream},
                 {"unseen_facts.jsonl", &O->unseen},  {"heldout_text.txt", &O->text},
                 {"README.md", &O->readme}};
    graft_status st = graft_mkdir_p(dir);
    if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *path = graft_path_join(dir, files[i].name);
        if (!path) return cli_fail(CMD, "out of memory");
        st = graft_sb_write_file(files[i].b, path);
        free(path);
        if (st != GRAFT_OK) return cli_fail_status(CMD, st);
    }
    return 0;
}

static void build_readme(const options *o, const corpus *C, const graft_dataset *E, const graft_dataset *T,
                         const graft_dataset *Z, const recinfo *ei, const recinfo *ti, output *O) {
    graft_sbuf *R = &O->readme;
    readme_head(R, o, C, O);
    readme_grouping(R, C, E, T);
    readme_relations(R, C);
    readme_recipe(R, o, C);
    readme_counts(R, o, C, O);
    readme_unsettled(R, E, ei, (int)o->n_edit, "counterfact-edit.json (the edit range)");
    readme_unsettled(R, T, ti, (int)o->n_known, "counterfact-train.json");
    readme_conflicts(R, &C->fact_conf, "Fact conflicts", "subject (relation)");
    readme_conflicts(R, &C->prompt_conf, "Prompt conflicts in train.jsonl", "prompt");
    readme_sources(R, E, T, Z);
}

static void summary(const char *dir, const corpus *C, const output *O) {
    printf("graft corpus --paraphrase: wrote %s\n", dir);
    printf("  relations                %6d\n", C->RS.n);
    printf("  facts taught             %6d (CounterFact) + %d zsRE\n", C->nf, C->added[ROLE_ZSRE]);
    printf("  train.jsonl              %6d rows\n", C->tp.str.n);
    printf("  heldout_phrasings.jsonl  %6d rows\n", O->n_held);
    printf("  heldout_cf_rephrases     %6d rows\n", O->n_cfreph);
    printf("  heldout_zsre.jsonl       %6d rows\n", O->n_zsre);
    printf("  known_facts.jsonl        %6d rows\n", O->n_known);
    printf("  edit_stream.json         %6d records\n", O->n_stream);
    printf("  unseen_facts.jsonl       %6d rows\n", O->n_unseen);
}

int cmd_corpus_para(int argc, char **argv) {
    options o = {1000, 1000, 500, 1000, GRAFT_SOURCE_DIR "/../shared/data", GRAFT_SOURCE_DIR "/data/relations.json",
                 GRAFT_SOURCE_DIR "/data/facts2"};
    corpus C;
    memset(&C, 0, sizeof C);
    C.n_phr = 6;
    C.n_hold = 2;
    int prc = parse_options(argc, argv, &o, &C.n_phr, &C.n_hold);
    if (prc) return prc < 0 ? 0 : prc;

    int rc = 1;
    graft_dataset E = {0}, T = {0}, Z = {0};
    output O;
    memset(&O, 0, sizeof O);
    recinfo *ei = calloc((size_t)o.n_edit, sizeof *ei), *ti = calloc((size_t)o.n_known + 1, sizeof *ti);
    if (!ei || !ti) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (relset_load(o.relations, &C.RS) || load_inputs(&o, &E, &T, &Z)) goto done;
    trim_dataset(&C, &E);
    trim_dataset(&C, &T);
    trim_dataset(&C, &Z);
    const graft_dataset *both[2] = {&E, &T};
    if (!build_lexicon(&C, both, 2)) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    build_train(&C, &o, &E, &T, &Z, ei, ti);
    for (int i = 0; i < C.tp.str.n && !C.oom; i++)
        row_line(&O.train, C.tp.str.v[i], C.ta[i], NULL, NULL, NULL, NULL, 0, false);
    build_heldout(&C, &o, &E, &T, &Z, ei, ti, &O);
    build_stream_known(&C, &o, &E, &T, ei, ti, &O);
    build_unseen(&C, &o, &E, &O);
    build_readme(&o, &C, &E, &T, &Z, ei, ti, &O);
    if (C.oom) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (write_all(o.out, &O)) goto done;
    summary(o.out, &C, &O);
    rc = 0;
done:
    graft_dataset_free(&E);
    graft_dataset_free(&T);
    graft_dataset_free(&Z);
    corpus_free(&C);
    output_free(&O);
    free(ei);
    free(ti);
    return rc;
}
