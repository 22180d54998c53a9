/*
 * journal.h - the durable edit log behind every editor.
 *
 * Every accepted edit is one row, committed (synchronous=FULL, WAL) before
 * graft reports the edit: the request, the edit id, what the editor did and
 * the change record that replays or reverts it exactly (editor.h), with a
 * timestamp. An undo is a row of its own naming the edit it reverts, so the
 * log stays append-only and replaying it in order rebuilds the editor's state
 * after any crash.
 *
 * Two back ends keep the same records (journal_impl.h): SQLite, one
 * journal.sqlite per run folder (the default), and PostgreSQL, one journal
 * shared by a fleet of `graft serve` replicas (docs/REPLICAS.md), chosen by
 * giving a URI where a folder is given otherwise:
 *   postgresql://[user@]host[:port]/db[?options][#NAME]
 * (postgres:// too; NAME, default "default", names one journal of several in
 * the database). Row ids are gapless from 1 in both, so a row's id is also the
 * journal position after it. Every row carries a format number; a row of a
 * format newer than GRAFT_JOURNAL_FORMAT is refused with a message saying so.
 */
#ifndef GRAFT_JOURNAL_H
#define GRAFT_JOURNAL_H

#include "editor.h"

typedef struct graft_journal graft_journal;

#define GRAFT_JOURNAL_FORMAT 1 /* the row format this graft writes and the newest it reads */
#define GRAFT_JOURNAL_SCHEMA 1 /* PostgreSQL: the tables' layout (meta schema_version) */

typedef struct graft_journal_entry {
    int64_t id;          /* the edit id (assigned by append) */
    int64_t seq;         /* position in the input stream, -1 when not from a stream */
    const char *kind;    /* "edit" or "undo" */
    int64_t undoes;      /* for "undo": the edit id it reverts */
    const char *method;  /* editor name */
    const char *request; /* JSON: prompt, target, ids, ... */
    graft_edit_info info;
    double seconds;      /* time the edit took */
    const uint8_t *change;
    size_t change_len;
    char created[64];    /* ISO-8601 UTC, filled by append / list */
    int undone;          /* list: a later undo row reverts this edit */
    int format;          /* the row's format (GRAFT_JOURNAL_FORMAT when written by this graft) */
} graft_journal_entry;

/* Called for rows in journal order; the entry's pointers are valid during the call. */
typedef graft_status (*graft_journal_fn)(void *user, const graft_journal_entry *e);

/* Open DIR/journal.sqlite, creating the folder and the file when create != 0,
 * or, when dir is a postgresql:// URI, that database's journal (its tables
 * created when missing and create != 0). */
graft_status graft_journal_open(const char *dir, int create, graft_journal **out);
/* dir names a PostgreSQL journal (postgresql:// or postgres://). */
int graft_journal_is_uri(const char *dir);
/* The URI with its password (user:PASSWORD@, password=...) shown as ***; malloc'ed, NULL out of memory. */
char *graft_journal_redact(const char *uri);
void graft_journal_close(graft_journal *j);
const char *graft_journal_path(const graft_journal *j);

/* Key/value settings (editor options, model path, ...). *value is malloc'ed, NULL if absent. */
graft_status graft_journal_set_meta(graft_journal *j, const char *key, const char *value);
graft_status graft_journal_get_meta(graft_journal *j, const char *key, char **value);

/* Append one row durably; fills e->id and e->created. The row's id is
 * graft_journal_position + 1: when a replica sharing the journal took that
 * id first, the append is refused with graft_journal_fault() ==
 * GRAFT_JOURNAL_CONFLICT (catch up, then try again). PostgreSQL: the row is
 * refused when the journal's model_fingerprint differs from the one this
 * handle read or wrote. */
graft_status graft_journal_append(graft_journal *j, graft_journal_entry *e);

/* Hold the journal's write lock, shared by every process on a PostgreSQL
 * journal (an advisory lock, released if the connection is lost; SQLite: no
 * lock needed, one writer per folder). A replica takes it around catch-up +
 * edit + append, so that no other replica takes the position in between and
 * the edit's work is not thrown away. */
graft_status graft_journal_lock(graft_journal *j);
void graft_journal_unlock(graft_journal *j);

/* Why the last call failed, where it matters to a caller that can retry. */
enum { GRAFT_JOURNAL_OK = 0, GRAFT_JOURNAL_CONFLICT = 1, GRAFT_JOURNAL_DOWN = 2 };
int graft_journal_fault(const graft_journal *j);
/* The last row id the holder's editor holds: set by replay, catch-up and append. */
int64_t graft_journal_position(const graft_journal *j);
/* The journal's last row id (0 when empty): what other writers have added. */
graft_status graft_journal_head(graft_journal *j, int64_t *head);
/* Apply to e (which holds the state at graft_journal_position) every row
 * after it, in order: the way a replica follows edits taken elsewhere.
 * applied (may be NULL) is called after each row is applied; *n: rows applied
 * (may be NULL). Stops at the first row it cannot apply. */
graft_status graft_journal_catch_up(graft_journal *j, graft_editor *e, graft_journal_fn applied, void *user, int64_t *n);
/* Backend name ("sqlite", "postgresql"). */
const char *graft_journal_backend(const graft_journal *j);

/* A second connection that waits for rows appended by others (PostgreSQL
 * LISTEN/NOTIFY); SQLite journals have none (GRAFT_ERR_UNSUPPORTED). */
typedef struct graft_journal_watch graft_journal_watch;
graft_status graft_journal_watch_open(const graft_journal *j, graft_journal_watch **out);
/* Wait up to timeout_ms: 1 a row was appended (or the connection came back:
 * catch up), 0 nothing, -1 the database is unreachable (retried next call). */
int graft_journal_watch_wait(graft_journal_watch *w, int timeout_ms);
void graft_journal_watch_close(graft_journal_watch *w);

/* Replay every row in order into a fresh editor. *n_edits: live edits after
 * replay; *last_seq: the largest stream position logged (-1 if none). */
graft_status graft_journal_replay(graft_journal *j, graft_editor *e, int64_t *n_edits, int64_t *last_seq);

/* Call fn for every row in order (entry pointers valid during the call). */
graft_status graft_journal_each(graft_journal *j, graft_journal_fn fn, void *user);
/* One row by id. The entry's strings and change are malloc'ed copies freed by graft_journal_entry_free. */
graft_status graft_journal_get(graft_journal *j, int64_t id, graft_journal_entry *e);
void graft_journal_entry_free(graft_journal_entry *e);

/* Write a consistent copy of the whole journal to DIR/journal.sqlite (DIR
 * created if missing; an existing journal there is refused): DIR is then an
 * adaptor folder of its own. DIR may be a postgresql:// URI, and j either
 * back end: every setting and row is copied with its id and timestamp, so
 * replaying the copy gives the same editor state bit for bit (graft edits
 * import). */
graft_status graft_journal_copy(graft_journal *j, const char *dir);

/* Revert edit `id` in e (which holds the replayed state) and log the undo. */
graft_status graft_journal_undo(graft_journal *j, graft_editor *e, int64_t id);

/* One edit given as text, the way graft serve and the session API take them:
 * (prompt, target) encoded as every editor and metric encodes them
 * (graft_encode_pair; prompt + target must fit the context), subject (may
 * be NULL) locating ROME/MEMIT's key, the edit applied through e, whether it
 * took measured (greedy generation of the target's length gives the target),
 * and the journal row appended: durable before this returns. The request
 * JSON records prompt, target, subject, es_gen and `source` ("http",
 * "api"). When the row cannot be written the edit is taken back out of e
 * (revert, or reset + replay of the journal) so that e never holds an edit
 * the journal lacks; if even that fails the message says so and e must be
 * rebuilt. The caller serialises it against every other use of e and j. */
typedef struct graft_text_edit {
    int64_t id;          /* the journal's edit id */
    int reproduced;      /* greedy generation gives the target after the edit */
    graft_edit_info info;
    double seconds;      /* the editor's apply */
} graft_text_edit;
graft_status graft_journal_edit_text(graft_journal *j, graft_editor *e, graft_tokenizer *tok, const char *prompt,
                                     const char *target, const char *subject, const char *source,
                                     graft_text_edit *out);

/* Open a run/adaptor folder for model m: check the model, build the editor
 * its journal names, replay every row. The journal is handed back when j_out
 * is not NULL (for edits list/undo), else closed. */
graft_status graft_adaptor_open(graft_model *m, const char *dir, graft_editor **e, graft_journal **j_out);

/* OUT_DIR/graft_export.json beside weights merged from an adaptor (graft
 * export, graft_session_save): the base model, the adaptor folder ("" for
 * none), the method, its options, the live edits and the dtype written. */
graft_status graft_export_provenance(const char *out_dir, const char *base_model, const char *adaptor, graft_editor *e,
                                     int64_t live_edits, graft_dtype dt);

#endif /* GRAFT_JOURNAL_H */
