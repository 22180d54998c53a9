/* journal_sqlite.c - the SQLite back end of the edit journal: one
 * journal.sqlite per run or adaptor folder (journal.h, journal_impl.h). */
#include "journal_impl.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    sqlite3 *db;
    int has_format; /* the edits table has the format column (older journals lack it: format 1) */
} sq_journal;

#define DB(j) (((sq_journal *)(j)->impl)->db)

/* SQLite's message, and the operating system's when one caused it: "database
 * or disk is full" alone does not say whether the disk is full, and "attempt
 * to write a readonly database" does not say the folder is read-only. */
static void os_cause(graft_journal *j, char *buf, size_t cap) {
    sqlite3 *db = j->impl ? DB(j) : NULL;
    int e = db ? sqlite3_system_errno(db) : 0;
    /* SQLite reports a short or refused write as SQLITE_FULL and keeps no errno */
    if (!e && db && sqlite3_errcode(db) == SQLITE_FULL) e = ENOSPC;
    /* and opens a file it may not write read-only, saying later only that the
     * database is read-only: ask the file system why */
    if (!e && db && sqlite3_errcode(db) == SQLITE_READONLY && access(j->path, W_OK) != 0) e = errno;
    if (e) snprintf(buf, cap, " (%s)", strerror(e));
    else buf[0] = 0;
}

static graft_status db_fail(graft_journal *j, const char *what) {
    char os[160];
    os_cause(j, os, sizeof os);
    return graft_fail(GRAFT_ERR_IO, "%s: %s: %s%s", j->path, what, sqlite3_errmsg(DB(j)), os);
}

static graft_status exec(graft_journal *j, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(DB(j), sql, NULL, NULL, &err) != SQLITE_OK) {
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
    " created TEXT NOT NULL,"
    " format INTEGER NOT NULL DEFAULT 1);";
/* "Is this edit undone?" is asked for every row that is read: without an
 * index each ask scans the table, and replaying n rows costs n^2 page reads
 * (38 s to restart a server on 2,500 edits before this index, 0.2 s after).
 * Added to older journals when they are opened writable. */
static const char *undo_index = "CREATE INDEX IF NOT EXISTS edits_undone ON edits(undoes) WHERE kind = 'undo';";

static void sq_close(graft_journal *j) {
    sq_journal *q = j->impl;
    if (q && q->db) sqlite3_close(q->db);
    free(q);
}

static graft_status sq_set_meta(graft_journal *j, const char *key, const char *value) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(DB(j), "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1, &s, NULL) != SQLITE_OK)
        return db_fail(j, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? GRAFT_OK : db_fail(j, "writing meta");
}

static graft_status sq_get_meta(graft_journal *j, const char *key, char **value) {
    *value = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(DB(j), "SELECT value FROM meta WHERE key = ?", -1, &s, NULL) != SQLITE_OK)
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

static graft_status sq_meta_each(graft_journal *j, graft_journal_meta_fn fn, void *user) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(DB(j), "SELECT key, value FROM meta ORDER BY key", -1, &s, NULL) != SQLITE_OK)
        return db_fail(j, "meta");
    graft_status st = GRAFT_OK;
    int rc;
    while (st == GRAFT_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(s, 0), *v = (const char *)sqlite3_column_text(s, 1);
        st = fn(user, k ? k : "", v ? v : "");
    }
    if (st == GRAFT_OK && rc != SQLITE_DONE) st = db_fail(j, "reading meta");
    sqlite3_finalize(s);
    return st;
}

static graft_status sq_put(graft_journal *j, graft_journal_entry *e, int keep_id) {
    sq_journal *q = j->impl;
    sqlite3_stmt *s;
    /* an old journal without the format column holds format-1 rows only */
    const char *sql = q->has_format
                          ? "INSERT INTO edits(id, seq, kind, undoes, method, request, action, iterations, loss_first,"
                            " loss_last, reproduced, rows_added, rows_changed, seconds, change, created, format)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                          : "INSERT INTO edits(id, seq, kind, undoes, method, request, action, iterations, loss_first,"
                            " loss_last, reproduced, rows_added, rows_changed, seconds, change, created)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    if (sqlite3_prepare_v2(DB(j), sql, -1, &s, NULL) != SQLITE_OK) return db_fail(j, "append");
    if (keep_id)
        sqlite3_bind_int64(s, 1, e->id);
    else
        sqlite3_bind_null(s, 1); /* one writer per folder: the next rowid */
    sqlite3_bind_int64(s, 2, e->seq);
    sqlite3_bind_text(s, 3, e->kind, -1, SQLITE_STATIC);
    if (!strcmp(e->kind, "undo"))
        sqlite3_bind_int64(s, 4, e->undoes);
    else
        sqlite3_bind_null(s, 4);
    sqlite3_bind_text(s, 5, e->method, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, e->request ? e->request : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, e->info.action, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 8, e->info.iterations);
    sqlite3_bind_double(s, 9, e->info.loss_first);
    sqlite3_bind_double(s, 10, e->info.loss_last);
    sqlite3_bind_int(s, 11, e->info.reproduced);
    sqlite3_bind_int(s, 12, e->info.rows_added);
    sqlite3_bind_int(s, 13, e->info.rows_changed);
    sqlite3_bind_double(s, 14, e->seconds);
    sqlite3_bind_blob(s, 15, e->change ? (const void *)e->change : (const void *)"", (int)e->change_len, SQLITE_STATIC);
    sqlite3_bind_text(s, 16, e->created, -1, SQLITE_STATIC);
    if (q->has_format) sqlite3_bind_int(s, 17, e->format > 0 ? e->format : GRAFT_JOURNAL_FORMAT);
    int rc = sqlite3_step(s); /* autocommit: durable when this returns */
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return db_fail(j, "committing an edit");
    if (!keep_id) e->id = sqlite3_last_insert_rowid(DB(j));
    return GRAFT_OK;
}

/* Fill an entry from a row of SELECT_ROWS. Pointers borrow the row. */
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
    e->format = sqlite3_column_int(s, 17);
}

static graft_status sq_each(graft_journal *j, int64_t after, int64_t upto, int64_t undo_upto, graft_journal_fn fn,
                            void *user) {
    sq_journal *q = j->impl;
    char sql[640];
    snprintf(sql, sizeof sql,
             "SELECT id, seq, kind, undoes, method, request, action, iterations, loss_first, loss_last, reproduced,"
             " rows_added, rows_changed, seconds, change, created,"
             " EXISTS(SELECT 1 FROM edits u WHERE u.kind = 'undo' AND u.undoes = edits.id AND u.id <= ?3), %s"
             " FROM edits WHERE id > ?1 AND id <= ?2 ORDER BY id",
             q->has_format ? "format" : "1");
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(DB(j), sql, -1, &s, NULL) != SQLITE_OK) return db_fail(j, "reading");
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_int64(s, 2, upto < 0 ? INT64_MAX : upto);
    sqlite3_bind_int64(s, 3, undo_upto < 0 ? INT64_MAX : undo_upto);
    graft_status st = GRAFT_OK;
    int rc;
    while (st == GRAFT_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        graft_journal_entry e;
        read_row(s, &e);
        st = fn(user, &e);
    }
    if (st == GRAFT_OK && rc != SQLITE_DONE) st = db_fail(j, "reading");
    sqlite3_finalize(s);
    return st;
}

static graft_status sq_head(graft_journal *j, int64_t *id) {
    *id = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(DB(j), "SELECT coalesce(max(id), 0) FROM edits", -1, &s, NULL) != SQLITE_OK)
        return db_fail(j, "reading");
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? GRAFT_OK : db_fail(j, "reading");
}

static graft_status sq_copy_to_dir(graft_journal *j, const char *dir) {
    char *path = graft_path_join(dir, "journal.sqlite");
    if (!path) return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    /* VACUUM INTO writes one self-contained file from a read transaction:
     * no WAL to carry along, and no edit half-copied */
    char *sql = sqlite3_mprintf("VACUUM INTO %Q", path);
    graft_status st = sql ? exec(j, sql) : graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    sqlite3_free(sql);
    free(path);
    return st;
}

static const graft_journal_ops sq_ops = {"sqlite", sq_close, sq_set_meta,    sq_get_meta, sq_meta_each, sq_put,
                                         sq_each,  sq_head,  sq_copy_to_dir, NULL,        NULL};

graft_status graft_journal_sqlite_open(const char *dir, int create, graft_journal **out) {
    *out = NULL;
    if (create) GRAFT_TRY(graft_mkdir_p(dir));
    graft_journal *j = calloc(1, sizeof *j);
    sq_journal *q = calloc(1, sizeof *q);
    if (!j || !q) {
        free(j), free(q);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    j->ops = &sq_ops;
    j->impl = q;
    j->path = graft_path_join(dir, "journal.sqlite");
    if (!j->path) {
        graft_journal_close(j);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    if (!create && !graft_path_exists(j->path)) {
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: no edit journal here (is %s an adaptor or run folder?)", j->path, dir);
        graft_journal_close(j);
        return st;
    }
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(j->path, &q->db, flags, NULL) != SQLITE_OK) {
        graft_status st = db_fail(j, "cannot open");
        graft_journal_close(j);
        return st;
    }
    sqlite3_busy_timeout(q->db, 5000);
    /* WAL + FULL: a committed row survives a crash or power loss. */
    graft_status st = exec(j, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    if (st == GRAFT_OK) st = exec(j, schema);
    if (st == GRAFT_OK && sqlite3_exec(q->db, undo_index, NULL, NULL, NULL) != SQLITE_OK &&
        sqlite3_errcode(q->db) != SQLITE_READONLY)
        st = db_fail(j, "indexing undos");
    if (st == GRAFT_OK) {
        /* journals written before rows carried a format hold format 1; the
         * column is added when the file is writable, else read as 1 */
        sqlite3_stmt *s = NULL;
        q->has_format = sqlite3_prepare_v2(q->db, "SELECT format FROM edits LIMIT 0", -1, &s, NULL) == SQLITE_OK;
        sqlite3_finalize(s);
        if (!q->has_format &&
            sqlite3_exec(q->db, "ALTER TABLE edits ADD COLUMN format INTEGER NOT NULL DEFAULT 1", NULL, NULL, NULL) ==
                SQLITE_OK)
            q->has_format = 1;
    }
    if (st != GRAFT_OK) {
        int rc = sqlite3_errcode(q->db);
        graft_fail_prefix(st, rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT ? "edit journal (corrupt or not an SQLite file?)"
                                                                           : "edit journal");
        graft_journal_close(j);
        return st;
    }
    *out = j;
    return GRAFT_OK;
}
