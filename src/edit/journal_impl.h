/*
 * journal_impl.h - the two back ends behind journal.h (not public).
 *
 * journal.c holds what every back end shares (replay, undo, catch-up, the
 * row checks, copying between back ends); a back end stores and reads rows
 * and settings: journal_sqlite.c (a run folder's journal.sqlite, the
 * default) and journal_pg.c (a fleet's journal in PostgreSQL, chosen by a
 * postgresql:// or postgres:// URI where a folder is given otherwise).
 */
#ifndef GRAFT_JOURNAL_IMPL_H
#define GRAFT_JOURNAL_IMPL_H

#include "journal.h"

typedef graft_status (*graft_journal_meta_fn)(void *user, const char *key, const char *value);

typedef struct graft_journal_ops {
    const char *name; /* "sqlite", "postgresql" */
    void (*close)(graft_journal *j);
    graft_status (*set_meta)(graft_journal *j, const char *key, const char *value);
    graft_status (*get_meta)(graft_journal *j, const char *key, char **value);
    graft_status (*meta_each)(graft_journal *j, graft_journal_meta_fn fn, void *user);
    /* Store one row durably. keep_id: e->id and e->created are the row's
     * (a copy); else the row's id is j->position + 1 (the back end refuses it,
     * setting GRAFT_JOURNAL_CONFLICT, when that id is taken) and e->id is set. */
    graft_status (*put)(graft_journal *j, graft_journal_entry *e, int keep_id);
    /* Rows after < id <= upto (upto < 0: no bound) in id order; `undone`
     * counts only undo rows <= undo_upto (< 0: all). Entries borrow the back
     * end's memory. */
    graft_status (*each)(graft_journal *j, int64_t after, int64_t upto, int64_t undo_upto, graft_journal_fn fn,
                         void *user);
    graft_status (*head)(graft_journal *j, int64_t *id); /* the largest id (0: empty) */
    /* the whole journal into folder dir, when this back end has a faster way (else NULL) */
    graft_status (*copy_to_dir)(graft_journal *j, const char *dir);
    /* one writer at a time across every process sharing the journal (NULL: none needed) */
    graft_status (*lock)(graft_journal *j);
    void (*unlock)(graft_journal *j);
} graft_journal_ops;

struct graft_journal {
    const graft_journal_ops *ops;
    char *path;         /* for messages: the file, or the URI without its password */
    int64_t position;   /* the last row the holder's editor holds (replay, catch-up, append) */
    int fault;          /* graft_journal_fault */
    char *fingerprint;  /* the model identity read or written through the meta row */
    void *impl;
};

graft_status graft_journal_sqlite_open(const char *dir, int create, graft_journal **out);
graft_status graft_journal_pg_open(const char *uri, int create, graft_journal **out);

#endif /* GRAFT_JOURNAL_IMPL_H */
