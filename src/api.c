/* api.c - the public editing API of graft.h (sessions, text-level generate,
 * score and evaluation) over the internal editor, journal and evaluation
 * code in src/edit/. A session is an editor plus its journal: every edit is
 * journaled before graft_session_edit returns, exactly as `graft serve`
 * does for POST /v1/edits, so undo, reopening and saving are the journal's
 * mechanisms and a session's folder is an ordinary run/adaptor folder. */
#include "edit/eval.h"
#include "edit/journal.h"
#include "edit/stream.h"
#include "model/save.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GRAFT_VERSION_STRING
#define GRAFT_VERSION_STRING "unknown"
#endif

struct graft_session {
    graft_model *m;
    graft_editor *e;
    graft_journal *j;
    char *dir;        /* the run folder holding the journal */
    int temp;         /* dir is a private temporary folder: removed by free */
    int64_t live;     /* edits not undone */
};

const char *graft_version(void) { return GRAFT_VERSION_STRING; }

void graft_free(void *p) { free(p); }

/* ---------------------------------------------------------------- text */

static graft_status need_tokenizer(graft_model *m, graft_tokenizer **tok) {
    *tok = graft_model_tokenizer(m);
    if (!*tok)
        return graft_fail(GRAFT_ERR_INVALID, "%s: the model has no tokenizer (none was found beside it; "
                                             "give one with graft_model_set_tokenizer)", m->path ? m->path : "model");
    return GRAFT_OK;
}

graft_status graft_encode_prompt(graft_model *m, const char *text, int **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!text) return graft_fail(GRAFT_ERR_INVALID, "prompt: NULL (use \"\" for an empty prompt)");
    graft_tokenizer *tok;
    GRAFT_TRY(need_tokenizer(m, &tok));
    int *raw = NULL;
    size_t nraw = 0;
    GRAFT_TRY(graft_tokenize(tok, text, strlen(text), &raw, &nraw));
    /* the same rule as the CLI and graft_encode_pair: SentencePiece models
     * were trained with BOS first, GPT-2's never sees one mid-prompt */
    int spm = !strcmp(graft_tokenizer_kind(tok), "llama2c-spm");
    int bos = graft_tokenizer_bos(tok);
    int lead = -1;
    if (spm && bos >= 0) lead = bos;
    else if (nraw == 0) lead = bos >= 0 ? bos : graft_tokenizer_eos(tok);
    if (nraw == 0 && lead < 0) {
        free(raw);
        return graft_fail(GRAFT_ERR_INVALID, "prompt: empty, and the tokenizer has no BOS/EOS token to start from");
    }
    int *v = malloc((nraw + 1) * sizeof *v);
    if (!v) {
        free(raw);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    if (lead >= 0) v[k++] = lead;
    if (nraw) memcpy(v + k, raw, nraw * sizeof *v);
    free(raw);
    *ids = v;
    *n = k + nraw;
    return GRAFT_OK;
}

graft_status graft_score_text(graft_model *m, const char *text, double *mean_nll, size_t *n_scored) {
    int *ids = NULL;
    size_t n = 0;
    GRAFT_TRY(graft_encode_prompt(m, text, &ids, &n));
    graft_status st = n < 2 ? graft_fail(GRAFT_ERR_INVALID, "text: %zu token%s; scoring needs at least two", n,
                                         n == 1 ? "" : "s")
                            : graft_score_ids(m, ids, n, 0, mean_nll, n_scored);
    free(ids);
    return st;
}

/* ---------------------------------------------------------------- sessions */

static graft_status count_live(void *user, const graft_journal_entry *en) {
    if (!strcmp(en->kind, "edit") && !en->undone) (*(int64_t *)user)++;
    return GRAFT_OK;
}

/* A fresh journal for a new editor: the settings graft_adaptor_open reads
 * back (as `graft serve --method M --out DIR` writes them). */
static graft_status start_journal(graft_session *s, const char *method) {
    char *opts = NULL, fp[128];
    graft_model_fingerprint(s->m, fp, sizeof fp);
    graft_status st = graft_editor_opts_json(s->e, &opts);
    if (st == GRAFT_OK) st = graft_journal_open(s->dir, 1, &s->j);
    if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "method", method);
    if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "editor_options", opts);
    if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "model_fingerprint", fp);
    if (st == GRAFT_OK && s->m->path) st = graft_journal_set_meta(s->j, "model", s->m->path);
    if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "data", "graft_session (libgraft)");
    free(opts);
    return st;
}

static void remove_temp_dir(const char *dir) {
    static const char *const names[] = {"journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm",
                                        "journal.sqlite-journal"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = graft_path_join(dir, names[i]);
        if (p) unlink(p);
        free(p);
    }
    rmdir(dir);
}

graft_status graft_session_open(graft_model *m, const char *method, const char *options_json, const char *run_dir,
                                graft_session **out) {
    *out = NULL;
    if (!m) return graft_fail(GRAFT_ERR_INVALID, "session: model is NULL");
    graft_session *s = calloc(1, sizeof *s);
    if (!s) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    s->m = m;
    graft_status st = GRAFT_OK;
    int reopen = 0;
    if (run_dir) {
        s->dir = strdup(run_dir);
        char *jpath = graft_path_join(run_dir, "journal.sqlite");
        if (!s->dir || !jpath) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else reopen = graft_path_exists(jpath);
        free(jpath);
    } else {
        /* no folder given: the journal still backs undo, in a folder of our own */
        const char *tmp = getenv("TMPDIR");
        char tmpl[PATH_MAX];
        snprintf(tmpl, sizeof tmpl, "%s/graft-session-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(tmpl)) st = graft_fail(GRAFT_ERR_IO, "%s: cannot create a temporary folder for the journal", tmpl);
        else if (!(s->dir = strdup(tmpl))) {
            rmdir(tmpl);
            st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        } else
            s->temp = 1;
    }
    if (st == GRAFT_OK && reopen) {
        if (options_json && *options_json && strcmp(options_json, "{}"))
            st = graft_fail(GRAFT_ERR_INVALID, "%s holds a journal whose editor options are fixed; pass no options "
                            "to reopen it", run_dir);
        if (st == GRAFT_OK) st = graft_adaptor_open(m, run_dir, &s->e, &s->j);
        if (st == GRAFT_OK && method && strcmp(method, s->e->ops->name))
            st = graft_fail(GRAFT_ERR_INVALID, "%s holds %s edits; method '%s' does not match", run_dir,
                            s->e->ops->name, method);
    } else if (st == GRAFT_OK) {
        if (!method || !*method)
            st = graft_fail(GRAFT_ERR_INVALID, "method: required to start a session (grace, melo, mend, rome, memit, "
                            "emmet, ft, ftl, ewc)%s%s", run_dir ? "; no journal.sqlite in " : "", run_dir ? run_dir : "");
        char *merged = NULL;
        /* the model folder's editing.json (e.g. the fact models' radii), as
         * graft edit and graft serve apply it */
        if (st == GRAFT_OK) st = graft_edit_model_defaults(m->path, method, options_json, &merged);
        if (st == GRAFT_OK) st = graft_editor_create(m, method, merged ? merged : options_json, &s->e);
        free(merged);
        if (st == GRAFT_OK) st = start_journal(s, method);
    }
    if (st == GRAFT_OK) st = graft_journal_each(s->j, count_live, &s->live);
    if (st != GRAFT_OK) {
        graft_session_free(s);
        return st;
    }
    *out = s;
    return GRAFT_OK;
}

void graft_session_free(graft_session *s) {
    if (!s) return;
    if (s->e) s->e->ops->free(s->e);
    graft_journal_close(s->j);
    if (s->temp && s->dir) remove_temp_dir(s->dir);
    free(s->dir);
    free(s);
}

const char *graft_session_method(const graft_session *s) { return s->e->ops->name; }

int64_t graft_session_live_edits(const graft_session *s) { return s->live; }

/* Activation editors hook the runs they are attached to; weight editors
 * have nothing to attach and write the weights instead. */
int graft_session_edits_weights(const graft_session *s) { return s->e->ops->attach == NULL; }

graft_status graft_session_options(graft_session *s, char **json) { return graft_editor_opts_json(s->e, json); }

static graft_status encode_item(graft_model *m, const char *prompt, const char *target, const char *what,
                                graft_eval_item *it) {
    memset(it, 0, sizeof *it);
    if (!prompt || !target) return graft_fail(GRAFT_ERR_INVALID, "%s: prompt and target are required", what);
    graft_tokenizer *tok;
    GRAFT_TRY(need_tokenizer(m, &tok));
    graft_status st = graft_encode_pair(tok, prompt, target, it);
    if (st != GRAFT_OK) return graft_fail_prefix(st, "%s", what);
    if (it->n_prompt + it->n_target > m->cfg.n_ctx) {
        st = graft_fail(GRAFT_ERR_RANGE, "%s: prompt + target are %d tokens; the model's context is %d", what,
                        it->n_prompt + it->n_target, m->cfg.n_ctx);
        graft_eval_item_free(it);
    }
    return st;
}

graft_status graft_session_edit(graft_session *s, const char *prompt, const char *target, const char *subject,
                                graft_edit_result *res) {
    if (res) memset(res, 0, sizeof *res);
    if (!s) return graft_fail(GRAFT_ERR_INVALID, "session: NULL");
    graft_tokenizer *tok;
    GRAFT_TRY(need_tokenizer(s->m, &tok));
    graft_text_edit ed;
    GRAFT_TRY(graft_journal_edit_text(s->j, s->e, tok, prompt, target, subject, "api", &ed));
    s->live++;
    if (res) {
        res->id = ed.id;
        res->reproduced = ed.reproduced;
        res->iterations = ed.info.iterations;
        res->seconds = ed.seconds;
        res->loss_before = ed.info.loss_first;
        res->loss_after = ed.info.loss_last;
    }
    return GRAFT_OK;
}

graft_status graft_session_undo(graft_session *s, int64_t id) {
    if (!s) return graft_fail(GRAFT_ERR_INVALID, "session: NULL");
    GRAFT_TRY(graft_journal_undo(s->j, s->e, id));
    s->live--;
    return GRAFT_OK;
}

static int same_dir(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

graft_status graft_session_save(graft_session *s, const char *dir, const char *dtype) {
    if (!s) return graft_fail(GRAFT_ERR_INVALID, "session: NULL");
    if (!dir || !*dir) return graft_fail(GRAFT_ERR_INVALID, "dir: required");
    if (!graft_session_edits_weights(s)) {
        if (!s->temp && same_dir(dir, s->dir)) return GRAFT_OK;
        return graft_journal_copy(s->j, dir);
    }
    graft_dtype dt = GRAFT_F32;
    if (dtype && graft_dtype_parse_float(dtype, &dt))
        return graft_fail(GRAFT_ERR_INVALID, "dtype: want f32, f16 or bf16, got '%s'", dtype);
    if (s->m->path && same_dir(dir, s->m->path))
        return graft_fail(GRAFT_ERR_INVALID, "dir: %s is the model itself; save the edited model elsewhere", dir);
    if (graft_dir_holds_model(dir))
        return graft_fail(GRAFT_ERR_INVALID, "dir: %s already holds a model (saving never overwrites one)", dir);
    GRAFT_TRY(graft_model_save_hf(s->m, dir, dt));
    return graft_export_provenance(dir, s->m->path, s->temp ? "" : s->dir, s->e, s->live, dt);
}

/* ---------------------------------------------------------------- generation and evaluation */

static graft_status session_on(graft_model *m, graft_session *s, graft_editor **e) {
    *e = NULL;
    if (!m) return graft_fail(GRAFT_ERR_INVALID, "model: NULL");
    if (s && s->m != m) return graft_fail(GRAFT_ERR_INVALID, "session: opened on another model");
    if (s) *e = s->e;
    return GRAFT_OK;
}

graft_status graft_generate_text(graft_model *m, graft_session *s, const char *prompt, const graft_gen_opts *opts,
                                 char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    graft_editor *e;
    GRAFT_TRY(session_on(m, s, &e));
    graft_gen_opts o;
    if (opts) o = *opts;
    else graft_gen_opts_default(&o);
    int *ids = NULL, *gen = NULL;
    size_t n = 0, n_gen = 0;
    GRAFT_TRY(graft_encode_prompt(m, prompt, &ids, &n));
    graft_status st = graft_editor_generate(e, m, ids, n, &o, NULL, NULL, &gen, &n_gen);
    /* piece by piece after the prompt's last token, as graft generate prints
     * it (a SentencePiece piece's leading space depends on what precedes) */
    graft_sbuf b = {0};
    graft_tokenizer *tok = graft_model_tokenizer(m);
    int prev = ids[n - 1];
    for (size_t i = 0; st == GRAFT_OK && i < n_gen; i++) {
        const char *bytes;
        size_t nb;
        st = graft_token_piece(tok, prev, gen[i], &bytes, &nb);
        if (st == GRAFT_OK) graft_sb_add(&b, bytes, nb);
        prev = gen[i];
    }
    if (st == GRAFT_OK && !b.s) graft_sb_str(&b, "");
    if (st == GRAFT_OK && b.oom) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    free(ids);
    free(gen);
    if (st != GRAFT_OK) {
        graft_sb_free(&b);
        return st;
    }
    *text = b.s;
    if (len) *len = b.len;
    return GRAFT_OK;
}

graft_status graft_evaluate(graft_model *m, graft_session *s, const char *const *prompts, const char *const *targets,
                            size_t n, graft_eval_result *res) {
    graft_editor *e;
    GRAFT_TRY(session_on(m, s, &e));
    if (n == 0) return GRAFT_OK;
    if (!prompts || !targets || !res) return graft_fail(GRAFT_ERR_INVALID, "evaluate: prompts, targets and res are required");
    if (n > INT_MAX / 2) return graft_fail(GRAFT_ERR_RANGE, "evaluate: %zu items is too many", n);
    graft_eval_item *it = calloc(n, sizeof *it);
    if (!it) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    graft_status st = GRAFT_OK;
    size_t total = 0;
    for (size_t i = 0; st == GRAFT_OK && i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, "item %zu", i);
        st = encode_item(m, prompts[i], targets[i], what, &it[i]);
        if (st == GRAFT_OK) total += (size_t)it[i].n_target;
    }
    int *tf = NULL, *gen = NULL;
    if (st == GRAFT_OK) {
        tf = malloc(total * sizeof *tf);
        gen = malloc(total * sizeof *gen);
        if (!tf || !gen) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (st == GRAFT_OK) st = graft_eval_tf_gen(m, e, it, (int)n, tf, gen);
    for (size_t i = 0, at = 0; st == GRAFT_OK && i < n; at += (size_t)it[i].n_target, i++) {
        int hit = 0, same = 1;
        for (int k = 0; k < it[i].n_target; k++) {
            hit += tf[at + k] == it[i].target[k];
            same &= gen[at + k] == it[i].target[k];
        }
        res[i].tf_acc = (double)hit / it[i].n_target;
        res[i].gen_match = same;
        res[i].n_target = it[i].n_target;
    }
    for (size_t i = 0; i < n; i++) graft_eval_item_free(&it[i]);
    free(it), free(tf), free(gen);
    return st;
}

graft_status graft_predict(graft_model *m, graft_session *s, const char *prompt, const char *target, int **pred,
                           size_t *n) {
    *pred = NULL;
    *n = 0;
    graft_editor *e;
    GRAFT_TRY(session_on(m, s, &e));
    graft_eval_item it;
    GRAFT_TRY(encode_item(m, prompt, target, "predict", &it));
    int *p = malloc((size_t)it.n_target * sizeof *p);
    graft_status st = p ? graft_eval_tf(m, e, &it, 1, p) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK) {
        *pred = p;
        *n = (size_t)it.n_target;
    } else
        free(p);
    graft_eval_item_free(&it);
    return st;
}
