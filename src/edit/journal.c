/* journal.c - the SQLite edit log. See journal.h for the contract. */
#include "journal.h"
#include "eval.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct graft_journal {
    sqlite3 *db;
    char *path;
};

/* SQLite's message, and the operating system's when one caused it: "database
 * or disk is full" alone does not say whether the disk is full, and "attempt
 * to write a readonly database" does not say the folder is read-only. */
static void os_cause(graft_journal *j, char *buf, size_t cap) {
    int e = j->db ? sqlite3_system_errno(j->db) : 0;
    /* SQLite reports a short or refused write as SQLITE_FULL and keeps no errno */
    if (!e && j->db && sqlite3_errcode(j->db) == SQLITE_FULL) e = ENOSPC;
    /* and opens a file it may not write read-only, saying later only that the
     * database is read-only: ask the file system why */
    if (!e && j->db && sqlite3_errcode(j->db) == SQLITE_READONLY && access(j->path, W_OK) != 0) e = errno;
    if (e) snprintf(buf, cap, " (%s)", strerror(e));
    else buf[0] = 0;
}

static graft_status db_fail(graft_journal *j, const char *what) {
    char os[160];
    os_cause(j, os, sizeof os);
    return graft_fail(GRAFT_ERR_IO, "%s: %s: %s%s", j->path, what, sqlite3_errmsg(j->db), os);
}

static graft_status exec(graft_journal *j, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(j->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        char os[160];
        os_cause(j, os, sizeof os);
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: %s%s", j->path, err ? err : "SQL error", os);
        sqlite3_free(err);
        return st;
    }
    return GRAFT_OK;
}

static const char *schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS edits("
    " id INTEGER PRIMARY KEY,"
    " seq INTEGER NOT NULL,"
    " kind TEXT NOT NULL CHECK(kind IN ('edit','undo')),"
    " undoes INTEGER,"
    " method TEXT NOT NULL,"
    " request TEXT NOT NULL,"
    " action TEXT, iterations INTEGER, loss_first REAL, loss_last REAL, reproduced INTEGER,"
    " rows_added INTEGER, rows_changed INTEGER, seconds REAL,"
    " change BLOB NOT NULL,"
    " created TEXT NOT NULL);";
/* "Is this edit undone?" is asked for every row that is read: without an
 * index each ask scans the table, and replaying n rows costs n^2 page reads
 * (38 s to restart a server on 2,500 edits before this index, 0.2 s after).
 * Added to older journals when they are opened writable. */
static const char *undo_index = "CREATE INDEX IF NOT EXISTS edits_undone ON edits(undoes) WHERE kind = 'undo';";

graft_status graft_journal_open(const char *dir, int create, graft_journal **out) {
    *out = NULL;
    if (create) GRAFT_TRY(graft_mkdir_p(dir));
    graft_journal *j = calloc(1, sizeof *j);
    if (!j) return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    j->path = graft_path_join(dir, "journal.sqlite");
    if (!j->path) {
        free(j);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    if (!create && !graft_path_exists(j->path)) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: no edit journal here (is %s an adaptor or run folder?)", j->path, dir);
        graft_journal_close(j);
        return st;
    }
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(j->path, &j->db, flags, NULL) != SQLITE_OK) {
        graft_status st = db_fail(j, "cannot open");
        graft_journal_close(j);
        return st;
    }
    sqlite3_busy_timeout(j->db, 5000);
    /* WAL + FULL: a committed row survives a crash or power loss. */
    graft_status st = exec(j, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    if (st == GRAFT_OK) st = exec(j, schema);
    if (st == GRAFT_OK && sqlite3_exec(j->db, undo_index, NULL, NULL, NULL) != SQLITE_OK &&
        sqlite3_errcode(j->db) != SQLITE_READONLY)
        st = db_fail(j, "indexing undos");
    if (st != GRAFT_OK) {
        int rc = sqlite3_errcode(j->db);
        graft_fail_prefix(st, rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT ? "edit journal (corrupt or not an SQLite file?)"
                                                                           : "edit journal");
        graft_journal_close(j);
        return st;
    }
    *out = j;
    return GRAFT_OK;
}

void graft_journal_close(graft_journal *j) {
    if (!j) return;
    if (j->db) sqlite3_close(j->db);
    free(j->path);
    free(j);
}

const char *graft_journal_path(const graft_journal *j) { return j->path; }

graft_status graft_journal_set_meta(graft_journal *j, const char *key, const char *value) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(j->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1, &s, NULL) != SQLITE_OK)
        return db_fail(j, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? GRAFT_OK : db_fail(j, "writing meta");
}

graft_status graft_journal_get_meta(graft_journal *j, const char *key, char **value) {
    *value = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(j->db, "SELECT value FROM meta WHERE key = ?", -1, &s, NULL) != SQLITE_OK)
        return db_fail(j, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    graft_status st = GRAFT_OK;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(s, 0);
        *value = strdup(v ? v : "");
        if (!*value) st = graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    } else if (rc != SQLITE_DONE)
        st = db_fail(j, "reading meta");
    sqlite3_finalize(s);
    return st;
}

static void utc_now(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

graft_status graft_journal_append(graft_journal *j, graft_journal_entry *e) {
    utc_now(e->created, sizeof e->created);
    sqlite3_stmt *s;
    const char *sql = "INSERT INTO edits(seq, kind, undoes, method, request, action, iterations, loss_first, loss_last,"
                      " reproduced, rows_added, rows_changed, seconds, change, created)"
                      " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    if (sqlite3_prepare_v2(j->db, sql, -1, &s, NULL) != SQLITE_OK) return db_fail(j, "append");
    sqlite3_bind_int64(s, 1, e->seq);
    sqlite3_bind_text(s, 2, e->kind, -1, SQLITE_STATIC);
    if (!strcmp(e->kind, "undo"))
        sqlite3_bind_int64(s, 3, e->undoes);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_text(s, 4, e->method, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, e->request ? e->request : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, e->info.action, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, e->info.iterations);
    sqlite3_bind_double(s, 8, e->info.loss_first);
    sqlite3_bind_double(s, 9, e->info.loss_last);
    sqlite3_bind_int(s, 10, e->info.reproduced);
    sqlite3_bind_int(s, 11, e->info.rows_added);
    sqlite3_bind_int(s, 12, e->info.rows_changed);
    sqlite3_bind_double(s, 13, e->seconds);
    sqlite3_bind_blob(s, 14, e->change ? (const void *)e->change : (const void *)"", (int)e->change_len, SQLITE_STATIC);
    sqlite3_bind_text(s, 15, e->created, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s); /* autocommit: durable when this returns */
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return db_fail(j, "committing an edit");
    e->id = sqlite3_last_insert_rowid(j->db);
    return GRAFT_OK;
}

/* Fill an entry from a row of "SELECT id, seq, kind, undoes, method, request, action, iterations, loss_first,
 * loss_last, reproduced, rows_added, rows_changed, seconds, change, created, undone". Pointers borrow the row. */
static void read_row(sqlite3_stmt *s, graft_journal_entry *e) {
    memset(e, 0, sizeof *e);
    e->id = sqlite3_column_int64(s, 0);
    e->seq = sqlite3_column_int64(s, 1);
    e->kind = (const char *)sqlite3_column_text(s, 2);
    e->undoes = sqlite3_column_int64(s, 3);
    e->method = (const char *)sqlite3_column_text(s, 4);
    e->request = (const char *)sqlite3_column_text(s, 5);
    const char *a = (const char *)sqlite3_column_text(s, 6);
    snprintf(e->info.action, sizeof e->info.action, "%s", a ? a : "");
    e->info.iterations = sqlite3_column_int(s, 7);
    e->info.loss_first = sqlite3_column_double(s, 8);
    e->info.loss_last = sqlite3_column_double(s, 9);
    e->info.reproduced = sqlite3_column_int(s, 10);
    e->info.rows_added = sqlite3_column_int(s, 11);
    e->info.rows_changed = sqlite3_column_int(s, 12);
    e->seconds = sqlite3_column_double(s, 13);
    e->change = sqlite3_column_blob(s, 14);
    e->change_len = (size_t)sqlite3_column_bytes(s, 14);
    const char *c = (const char *)sqlite3_column_text(s, 15);
    snprintf(e->created, sizeof e->created, "%s", c ? c : "");
    e->undone = sqlite3_column_int(s, 16);
}

#define SELECT_ROWS                                                                                         \
    "SELECT id, seq, kind, undoes, method, request, action, iterations, loss_first, loss_last, reproduced," \
    " rows_added, rows_changed, seconds, change, created,"                                                 \
    " EXISTS(SELECT 1 FROM edits u WHERE u.kind = 'undo' AND u.undoes = edits.id) FROM edits"

/* A journal may come from elsewhere (an adaptor folder) or be edited by
 * hand, and its tables need not carry graft's NOT NULL and CHECK: a row
 * without kind, method or request, or of another kind, is refused here so
 * that no reader has to check. */
static graft_status check_row(graft_journal *j, const graft_journal_entry *e) {
    if (!e->kind || (strcmp(e->kind, "edit") && strcmp(e->kind, "undo")))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %lld: kind is %s%s%s, not \"edit\" or \"undo\"", j->path,
                          (long long)e->id, e->kind ? "\"" : "", e->kind ? e->kind : "missing", e->kind ? "\"" : "");
    if (!e->method || !e->request)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: row %lld: its %s is missing", j->path, (long long)e->id,
                          !e->method ? "method" : "request");
    return GRAFT_OK;
}

graft_status graft_journal_each(graft_journal *j, graft_journal_fn fn, void *user) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(j->db, SELECT_ROWS " ORDER BY id", -1, &s, NULL) != SQLITE_OK) return db_fail(j, "reading");
    graft_status st = GRAFT_OK;
    int rc;
    while (st == GRAFT_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        graft_journal_entry e;
        read_row(s, &e);
        st = check_row(j, &e);
        if (st == GRAFT_OK) st = fn(user, &e);
    }
    if (st == GRAFT_OK && rc != SQLITE_DONE) st = db_fail(j, "reading");
    sqlite3_finalize(s);
    return st;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

graft_status graft_journal_get(graft_journal *j, int64_t id, graft_journal_entry *e) {
    memset(e, 0, sizeof *e);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(j->db, SELECT_ROWS " WHERE id = ?", -1, &s, NULL) != SQLITE_OK) return db_fail(j, "reading");
    sqlite3_bind_int64(s, 1, id);
    graft_status st = GRAFT_OK;
    int rc = sqlite3_step(s);
    graft_journal_entry r;
    if (rc == SQLITE_ROW) read_row(s, &r);
    if (rc == SQLITE_ROW && (st = check_row(j, &r)) != GRAFT_OK) {
        /* a damaged row: st says what */
    } else if (rc == SQLITE_ROW) {
        *e = r;
        e->kind = dup_or_null(r.kind);
        e->method = dup_or_null(r.method);
        e->request = dup_or_null(r.request);
        uint8_t *c = malloc(r.change_len ? r.change_len : 1);
        if (c && r.change_len) memcpy(c, r.change, r.change_len);
        e->change = c;
        if (!e->kind || !e->method || !e->request || !c) {
            graft_journal_entry_free(e);
            st = graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
        }
    } else if (rc == SQLITE_DONE)
        st = graft_fail(GRAFT_ERR_RANGE, "%s: no edit with id %lld", j->path, (long long)id);
    else
        st = db_fail(j, "reading");
    sqlite3_finalize(s);
    return st;
}

void graft_journal_entry_free(graft_journal_entry *e) {
    free((char *)e->kind);
    free((char *)e->method);
    free((char *)e->request);
    free((uint8_t *)e->change);
    memset(e, 0, sizeof *e);
}

graft_status graft_journal_copy(graft_journal *j, const char *dir) {
    GRAFT_TRY(graft_mkdir_p(dir));
    char *path = graft_path_join(dir, "journal.sqlite");
    if (!path) return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    graft_status st = GRAFT_OK;
    if (graft_path_exists(path))
        st = graft_fail(GRAFT_ERR_INVALID, "%s already holds an edit journal; choose another folder", dir);
    /* VACUUM INTO writes one self-contained file from a read transaction:
     * no WAL to carry along, and no edit half-copied */
    char *sql = st == GRAFT_OK ? sqlite3_mprintf("VACUUM INTO %Q", path) : NULL;
    if (st == GRAFT_OK && !sql) st = graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    if (st == GRAFT_OK) st = exec(j, sql);
    sqlite3_free(sql);
    free(path);
    return st;
}

typedef struct {
    graft_journal *j;
    graft_editor *e;
    int64_t live, last_seq;
    int skip_undone; /* reset-style editors: undone edits are simply not replayed */
} replay_ctx;

static graft_status replay_one(void *user, const graft_journal_entry *en) {
    replay_ctx *c = user;
    if (en->seq > c->last_seq) c->last_seq = en->seq;
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

graft_status graft_journal_replay(graft_journal *j, graft_editor *e, int64_t *n_edits, int64_t *last_seq) {
    replay_ctx c = {j, e, 0, -1, e->ops->reset != NULL};
    GRAFT_TRY(graft_journal_each(j, replay_one, &c));
    if (n_edits) *n_edits = c.live;
    if (last_seq) *last_seq = c.last_seq;
    return GRAFT_OK;
}

graft_status graft_journal_undo(graft_journal *j, graft_editor *e, int64_t id) {
    graft_journal_entry target;
    GRAFT_TRY(graft_journal_get(j, id, &target));
    graft_status st = GRAFT_OK;
    if (strcmp(target.kind, "edit") != 0)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: entry %lld is an undo, not an edit", j->path, (long long)id);
    else if (target.undone)
        st = graft_fail(GRAFT_ERR_INVALID, "%s: edit %lld was already undone", j->path, (long long)id);
    /* activation editors revert in place; weight editors are rebuilt after the
     * undo row is logged (reset, then replay of the edits still live) */
    if (st == GRAFT_OK && !e->ops->reset) st = e->ops->revert(e, target.change, target.change_len);
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
    if (st == GRAFT_OK && e->ops->reset) {
        st = e->ops->reset(e);
        e->n_edits = 0;
        if (st == GRAFT_OK) st = graft_journal_replay(j, e, NULL, NULL);
    }
    graft_journal_entry_free(&target);
    return st;
}

/* ---------------------------------------------------------------- one edit from text */

/* Put e back to the journal's state after an edit that was applied but could
 * not be journaled. */
static graft_status take_back(graft_journal *j, graft_editor *e, const graft_blob *ch) {
    if (!e->ops->reset) return e->ops->revert(e, ch->data, ch->len);
    GRAFT_TRY(e->ops->reset(e));
    e->n_edits = 0;
    return graft_journal_replay(j, e, NULL, NULL);
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
        if (take_back(j, e, &ch) != GRAFT_OK)
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
