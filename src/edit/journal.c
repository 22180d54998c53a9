/* journal.c - the edit journal's shared half: opening the right back end,
 * the row checks, replay, catch-up, undo and copying between back ends. The
 * back ends store rows (journal_sqlite.c, journal_pg.c; journal_impl.h). See
 * journal.h for the contract. */
#include "journal_impl.h"
#include "eval.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int graft_journal_is_uri(const char *dir) {
    return dir && (!strncmp(dir, "postgresql://", 13) || !strncmp(dir, "postgres://", 11));
}

graft_status graft_journal_open(const char *dir, int create, graft_journal **out) {
    *out = NULL;
    if (!dir || !*dir) return graft_fail(GRAFT_ERR_INVALID, "journal: no folder or postgresql:// URI given");
    return graft_journal_is_uri(dir) ? graft_journal_pg_open(dir, create, out) : graft_journal_sqlite_open(dir, create, out);
}

void graft_journal_close(graft_journal *j) {
    if (!j) return;
    if (j->ops && j->ops->close) j->ops->close(j);
    free(j->path);
    free(j->fingerprint);
    free(j);
}

const char *graft_journal_path(const graft_journal *j) { return j->path; }
const char *graft_journal_backend(const graft_journal *j) { return j->ops->name; }
int graft_journal_fault(const graft_journal *j) { return j->fault; }
int64_t graft_journal_position(const graft_journal *j) { return j->position; }

/* the model identity this handle answers for: append checks it (PostgreSQL) */
static void keep_fingerprint(graft_journal *j, const char *key, const char *value) {
    if (strcmp(key, "model_fingerprint") != 0 || !value) return;
    char *c = strdup(value);
    if (!c) return;
    free(j->fingerprint);
    j->fingerprint = c;
}

graft_status graft_journal_set_meta(graft_journal *j, const char *key, const char *value) {
    j->fault = GRAFT_JOURNAL_OK;
    GRAFT_TRY(j->ops->set_meta(j, key, value));
    keep_fingerprint(j, key, value);
    return GRAFT_OK;
}

graft_status graft_journal_get_meta(graft_journal *j, const char *key, char **value) {
    j->fault = GRAFT_JOURNAL_OK;
    GRAFT_TRY(j->ops->get_meta(j, key, value));
    keep_fingerprint(j, key, *value);
    return GRAFT_OK;
}

graft_status graft_journal_lock(graft_journal *j) {
    j->fault = GRAFT_JOURNAL_OK;
    return j->ops->lock ? j->ops->lock(j) : GRAFT_OK;
}

void graft_journal_unlock(graft_journal *j) {
    if (j->ops->unlock) j->ops->unlock(j);
}

graft_status graft_journal_head(graft_journal *j, int64_t *head) {
    j->fault = GRAFT_JOURNAL_OK;
    return j->ops->head(j, head);
}

static void utc_now(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

graft_status graft_journal_append(graft_journal *j, graft_journal_entry *e) {
    j->fault = GRAFT_JOURNAL_OK;
    utc_now(e->created, sizeof e->created);
    e->format = GRAFT_JOURNAL_FORMAT;
    GRAFT_TRY(j->ops->put(j, e, 0));
    j->position = e->id;
    return GRAFT_OK;
}

/* A journal may come from elsewhere (an adaptor folder, another graft) or be
 * edited by hand, and its tables need not carry graft's NOT NULL and CHECK: a
 * row without kind, method or request, of another kind, or of a format this
 * graft does not know, is refused here so that no reader has to check. */
static graft_status check_row(graft_journal *j, const graft_journal_entry *e) {
    if (e->format > GRAFT_JOURNAL_FORMAT)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: row %lld was written by a newer graft (row format %d; this graft reads formats up to %d): "
                          "upgrade graft to read this journal",
                          j->path, (long long)e->id, e->format, GRAFT_JOURNAL_FORMAT);
    if (!e->kind || (strcmp(e->kind, "edit") && strcmp(e->kind, "undo")))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %lld: kind is %s%s%s, not \"edit\" or \"undo\"", j->path,
                          (long long)e->id, e->kind ? "\"" : "", e->kind ? e->kind : "missing", e->kind ? "\"" : "");
    if (!e->method || !e->request)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %lld: its %s is missing", j->path, (long long)e->id,
                          !e->method ? "method" : "request");
    return GRAFT_OK;
}

typedef struct {
    graft_journal *j;
    graft_journal_fn fn;
    void *user;
} checked_ctx;

static graft_status checked_one(void *user, const graft_journal_entry *e) {
    checked_ctx *c = user;
    GRAFT_TRY(check_row(c->j, e));
    return c->fn(c->user, e);
}

/* rows after < id <= upto (upto < 0: all), each checked */
static graft_status each_range(graft_journal *j, int64_t after, int64_t upto, graft_journal_fn fn, void *user) {
    checked_ctx c = {j, fn, user};
    j->fault = GRAFT_JOURNAL_OK;
    return j->ops->each(j, after, upto, upto, checked_one, &c);
}

graft_status graft_journal_each(graft_journal *j, graft_journal_fn fn, void *user) {
    return each_range(j, 0, -1, fn, user);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

typedef struct {
    graft_journal_entry *e;
    int found;
} get_ctx;

static graft_status get_one(void *user, const graft_journal_entry *r) {
    get_ctx *g = user;
    graft_journal_entry *e = g->e;
    *e = *r;
    e->kind = dup_or_null(r->kind);
    e->method = dup_or_null(r->method);
    e->request = dup_or_null(r->request);
    uint8_t *c = malloc(r->change_len ? r->change_len : 1);
    if (c && r->change_len) memcpy(c, r->change, r->change_len);
    e->change = c;
    g->found = 1;
    if (!e->kind || !e->method || !e->request || !c) {
        graft_journal_entry_free(e);
        g->found = 0;
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    return GRAFT_OK;
}

graft_status graft_journal_get(graft_journal *j, int64_t id, graft_journal_entry *e) {
    memset(e, 0, sizeof *e);
    get_ctx g = {e, 0};
    checked_ctx c = {j, get_one, &g};
    j->fault = GRAFT_JOURNAL_OK;
    /* undone: by any undo row in the journal */
    GRAFT_TRY(j->ops->each(j, id - 1, id, -1, checked_one, &c));
    if (!g.found) return graft_fail(GRAFT_ERR_RANGE, "%s: no edit with id %lld", j->path, (long long)id);
    return GRAFT_OK;
}

void graft_journal_entry_free(graft_journal_entry *e) {
    free((char *)e->kind);
    free((char *)e->method);
    free((char *)e->request);
    free((uint8_t *)e->change);
    memset(e, 0, sizeof *e);
}

/* ---------------------------------------------------------------- copy */

static graft_status copy_meta(void *user, const char *key, const char *value) {
    return graft_journal_set_meta(user, key, value);
}

static graft_status copy_row(void *user, const graft_journal_entry *e) {
    graft_journal *d = user;
    graft_journal_entry c = *e;
    GRAFT_TRY(d->ops->put(d, &c, 1));
    d->position = e->id;
    return GRAFT_OK;
}

graft_status graft_journal_copy(graft_journal *j, const char *dir) {
    int uri = graft_journal_is_uri(dir);
    if (!uri) {
        GRAFT_TRY(graft_mkdir_p(dir));
        char *path = graft_path_join(dir, "journal.sqlite");
        if (!path) return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
        int exists = graft_path_exists(path);
        free(path);
        if (exists) return graft_fail(GRAFT_ERR_INVALID, "%s already holds an edit journal; choose another folder", dir);
        if (j->ops->copy_to_dir) return j->ops->copy_to_dir(j, dir);
    }
    graft_journal *d = NULL;
    GRAFT_TRY(graft_journal_open(dir, 1, &d));
    int64_t head = 0;
    char *method = NULL;
    graft_status st = graft_journal_head(d, &head);
    if (st == GRAFT_OK) st = graft_journal_get_meta(d, "method", &method);
    if (st == GRAFT_OK && (head > 0 || method))
        st = graft_fail(GRAFT_ERR_INVALID, "%s already holds an edit journal; choose another%s", graft_journal_path(d),
                        uri ? " name (URI #NAME)" : " folder");
    free(method);
    if (st == GRAFT_OK) st = j->ops->meta_each(j, copy_meta, d);
    if (st == GRAFT_OK) st = each_range(j, 0, -1, copy_row, d);
    graft_journal_close(d);
    return st;
}

/* ---------------------------------------------------------------- replay */

typedef struct {
    graft_journal *j;
    graft_editor *e;
    int64_t live, last_seq;
    int skip_undone; /* reset-style editors: undone edits are simply not replayed */
} replay_ctx;

static graft_status replay_one(void *user, const graft_journal_entry *en) {
    replay_ctx *c = user;
    if (en->seq > c->last_seq) c->last_seq = en->seq;
    c->j->position = en->id;
    if (!strcmp(en->kind, "edit")) {
        if (c->skip_undone && en->undone) return GRAFT_OK;
        graft_status st = c->e->ops->replay(c->e, en->change, en->change_len);
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: edit %lld", c->j->path, (long long)en->id);
        c->live++;
        return GRAFT_OK;
    }
    if (c->skip_undone) return GRAFT_OK;
    graft_journal_entry target;
    GRAFT_TRY(graft_journal_get(c->j, en->undoes, &target));
    graft_status st = c->e->ops->revert(c->e, target.change, target.change_len);
    graft_journal_entry_free(&target);
    if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: undo of edit %lld", c->j->path, (long long)en->undoes);
    c->live--;
    return GRAFT_OK;
}

/* rows 1..upto (upto < 0: all) into e, which is fresh or just reset */
static graft_status replay_upto(graft_journal *j, graft_editor *e, int64_t upto, int64_t *n_edits, int64_t *last_seq) {
    replay_ctx c = {j, e, 0, -1, e->ops->reset != NULL};
    j->position = 0;
    GRAFT_TRY(each_range(j, 0, upto, replay_one, &c));
    if (upto >= 0) j->position = upto;
    if (n_edits) *n_edits = c.live;
    if (last_seq) *last_seq = c.last_seq;
    return GRAFT_OK;
}

graft_status graft_journal_replay(graft_journal *j, graft_editor *e, int64_t *n_edits, int64_t *last_seq) {
    return replay_upto(j, e, -1, n_edits, last_seq);
}

/* Weight editors rebuild from the journal: reset, then the rows up to upto. */
static graft_status rebuild(graft_journal *j, graft_editor *e, int64_t upto) {
    GRAFT_TRY(e->ops->reset(e));
    e->n_edits = 0;
    return replay_upto(j, e, upto, NULL, NULL);
}

typedef struct {
    graft_journal *j;
    graft_editor *e;
    int64_t n;
    graft_journal_fn applied;
    void *user;
} catch_ctx;

/* One row taken elsewhere, applied on top of the state before it: the
 * replica's view of the journal moves one row on. */
static graft_status catch_one(void *user, const graft_journal_entry *en) {
    catch_ctx *c = user;
    graft_status st;
    if (!strcmp(en->kind, "edit")) {
        st = c->e->ops->replay(c->e, en->change, en->change_len);
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: edit %lld", c->j->path, (long long)en->id);
    } else if (c->e->ops->reset) {
        st = rebuild(c->j, c->e, en->id);
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: undo row %lld", c->j->path, (long long)en->id);
    } else {
        graft_journal_entry target;
        GRAFT_TRY(graft_journal_get(c->j, en->undoes, &target));
        st = c->e->ops->revert(c->e, target.change, target.change_len);
        graft_journal_entry_free(&target);
        if (st != GRAFT_OK) return graft_fail_prefix(st, "%s: undo of edit %lld", c->j->path, (long long)en->undoes);
    }
    c->j->position = en->id;
    c->n++;
    return c->applied ? c->applied(c->user, en) : GRAFT_OK;
}

graft_status graft_journal_catch_up(graft_journal *j, graft_editor *e, graft_journal_fn applied, void *user, int64_t *n) {
    catch_ctx c = {j, e, 0, applied, user};
    graft_status st = each_range(j, j->position, -1, catch_one, &c);
    if (n) *n = c.n;
    return st;
}

graft_status graft_journal_undo(graft_journal *j, graft_editor *e, int64_t id) {
    graft_journal_entry target;
    GRAFT_TRY(graft_journal_get(j, id, &target));
    graft_status st = GRAFT_OK;
    if (strcmp(target.kind, "edit") != 0)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: entry %lld is an undo, not an edit", j->path, (long long)id);
    else if (target.undone)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: edit %lld was already undone", j->path, (long long)id);
    else if (id > j->position)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: edit %lld is past this editor's journal position %lld (catch up first)",
                        j->path, (long long)id, (long long)j->position);
    /* activation editors revert in place; weight editors are rebuilt after the
     * undo row is logged (reset, then replay of the edits still live) */
    if (st == GRAFT_OK) {
        char req[64];
        snprintf(req, sizeof req, "{\"undo\": %lld}", (long long)id);
        graft_journal_entry u = {0};
        u.seq = -1;
        u.kind = "undo";
        u.undoes = id;
        u.method = target.method;
        u.request = req;
        snprintf(u.info.action, sizeof u.info.action, "undo");
        u.change = (const uint8_t *)"";
        u.change_len = 0;
        st = graft_journal_append(j, &u);
    }
    /* logged first, applied after: a refused row (a replica took the id)
     * leaves e as it was */
    if (st == GRAFT_OK && !e->ops->reset) st = e->ops->revert(e, target.change, target.change_len);
    if (st == GRAFT_OK && e->ops->reset) st = rebuild(j, e, j->position);
    graft_journal_entry_free(&target);
    return st;
}

/* ---------------------------------------------------------------- one edit from text */

/* Put e back to the journal's state after an edit that was applied but could
 * not be journaled. */
static graft_status take_back(graft_journal *j, graft_editor *e, const graft_blob *ch) {
    if (e->ops->forget) return e->ops->forget(e, ch->data, ch->len);
    if (!e->ops->reset) return e->ops->revert(e, ch->data, ch->len);
    return rebuild(j, e, j->position);
}

graft_status graft_journal_edit_text(graft_journal *j, graft_editor *e, graft_tokenizer *tok, const char *prompt,
                                     const char *target, const char *subject, const char *source,
                                     graft_text_edit *out) {
    memset(out, 0, sizeof *out);
    if (!prompt || !*prompt) return graft_fail(GRAFT_ERR_INVALID, "prompt: required, a non-empty string");
    if (!target || !*target) return graft_fail(GRAFT_ERR_INVALID, "target: required, a non-empty string");
    graft_eval_item it;
    GRAFT_TRY(graft_encode_pair(tok, prompt, target, &it));
    int n_ctx = e->m->cfg.n_ctx;
    if (it.n_prompt + it.n_target > n_ctx || it.n_target < 1) {
        graft_eval_item_free(&it);
        return graft_fail(GRAFT_ERR_RANGE, "prompt + target are %d + %d tokens; the model's context is %d",
                          it.n_prompt, it.n_target, n_ctx);
    }
    graft_edit_tok req = {it.prompt, it.n_prompt, it.target, it.n_target,
                          subject && *subject ? graft_subject_last(tok, prompt, subject) : -1};
    if (req.subject_last >= req.n_prompt) req.subject_last = -1;
    graft_blob ch = {0};
    double t0 = graft_now_s();
    graft_status st = e->ops->apply(e, &req, &out->info, &ch);
    out->seconds = graft_now_s() - t0;
    int *gen = st == GRAFT_OK ? malloc((size_t)it.n_target * sizeof(int)) : NULL;
    if (st == GRAFT_OK && !gen) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK) st = graft_eval_gen(e->m, e, &it, 1, gen);
    if (st == GRAFT_OK) out->reproduced = !memcmp(gen, it.target, (size_t)it.n_target * sizeof(int));
    free(gen);
    char *reqjs = NULL;
    if (st == GRAFT_OK) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "prompt", prompt);
        cJSON_AddStringToObject(r, "target", target);
        if (subject && *subject) cJSON_AddStringToObject(r, "subject", subject);
        cJSON_AddNumberToObject(r, "es_gen", out->reproduced);
        if (source) cJSON_AddStringToObject(r, "source", source);
        reqjs = cJSON_PrintUnformatted(r);
        cJSON_Delete(r);
        if (!reqjs) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (st == GRAFT_OK) {
        graft_journal_entry en;
        memset(&en, 0, sizeof en);
        en.seq = -1;
        en.kind = "edit";
        en.method = e->ops->name;
        en.request = reqjs;
        en.info = out->info;
        en.seconds = out->seconds;
        en.change = ch.data;
        en.change_len = ch.len;
        st = graft_journal_append(j, &en);
        out->id = en.id;
    }
    if (st != GRAFT_OK && ch.data) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", graft_last_error());
        int fault = j->fault; /* why the row was refused, for the caller (take_back reads the journal) */
        graft_status tb = take_back(j, e, &ch);
        if (j->fault == GRAFT_JOURNAL_OK) j->fault = fault;
        if (tb != GRAFT_OK)
            graft_fail(st, "%s; and the edit could not be taken back out of the model (%s): reopen the run folder", msg,
                       graft_last_error());
        else
            graft_fail(st, "%s", msg);
    }
    free(reqjs);
    graft_blob_free(&ch);
    graft_eval_item_free(&it);
    return st;
}
