/* fuzz_journal.c - the rows of an edit journal (journal.sqlite), as a run or
 * adaptor folder from elsewhere may hold them: the harness writes arbitrary
 * rows into a journal whose tables have no constraints (a hand-made file
 * need not have graft's NOT NULL and CHECK), then lists it as `graft edits
 * list` does and opens it as `--resume`, `--adaptor` and graft serve do
 * (graft_adaptor_open: settings, model check, editor, replay of every edit
 * and undo).
 *
 * Input: byte 0 picks the method (grace, melo, ft, or the text of the
 * method field), whether the model fingerprint is right and whether the
 * folder is opened afresh (graft_adaptor_open) or read through a journal
 * handle held open across inputs (list, show, replay); the rest is
 * fields, each a 2-byte little-endian length and its bytes (length 0xffff:
 * SQL NULL): method, editor options, then six per row (kind, undoes, seq,
 * method, request, change). The change is a blob, the others text. */
#include "fuzz.h"
#include "edit/journal.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>

#define MAX_ROWS 16
#define MAX_FIELDS (2 + 6 * MAX_ROWS)

typedef struct field {
    const uint8_t *p;
    size_t n;
} field;

static void bind(sqlite3_stmt *s, int col, const field *f, int blob) {
    if (!f->p) sqlite3_bind_null(s, col);
    else if (blob) sqlite3_bind_blob(s, col, f->p, (int)f->n, SQLITE_STATIC);
    else sqlite3_bind_text(s, col, (const char *)f->p, (int)f->n, SQLITE_STATIC);
}

static void must(int rc, sqlite3 *db) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "fuzz_journal: %s\n", sqlite3_errmsg(db));
        abort(); /* the harness's own writes, not graft */
    }
}

/* What `graft edits list` and GET /v1/edits read of a row. */
static graft_status list_row(void *user, const graft_journal_entry *e) {
    (void)user;
    volatile size_t sink = strlen(e->created) + e->change_len;
    sink += !strcmp(e->kind, "undo") + strlen(e->method);
    cJSON *r = cJSON_Parse(e->request);
    const cJSON *p = cJSON_GetObjectItem(r, "prompt");
    if (cJSON_IsString(p)) sink += strlen(p->valuestring);
    cJSON_Delete(r);
    (void)sink;
    return GRAFT_OK;
}

/* graft edits list, then graft edits show 1. */
static void show_and_list(graft_journal *j) {
    graft_journal_each(j, list_row, NULL);
    graft_journal_entry en;
    if (graft_journal_get(j, 1, &en) == GRAFT_OK) graft_journal_entry_free(&en);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static graft_model *m;
    static graft_journal *held;
    static sqlite3 *db;
    static char dir[300], fp[128];
    static float *saved;
    static size_t n_saved;
    if (!m) {
        if (graft_model_load(fuzz_data("stories260K.bin"), &m) != GRAFT_OK) {
            fprintf(stderr, "fuzz_journal: %s\n", graft_last_error());
            abort();
        }
        graft_model_fingerprint(m, fp, sizeof fp);
        /* FT writes the weights; every input starts from the same model */
        n_saved = graft_param_table_numel(&m->params);
        saved = malloc(n_saved * sizeof *saved);
        if (!saved) abort();
        for (int i = 0, k = 0; i < m->params.n; k += (int)m->params.p[i].numel, i++)
            memcpy(saved + k, m->params.p[i].data, m->params.p[i].numel * sizeof *saved);
        snprintf(dir, sizeof dir, "%s/run", fuzz_dir());
        mkdir(dir, 0700);
        char path[400];
        snprintf(path, sizeof path, "%s/journal.sqlite", dir);
        must(sqlite3_open(path, &db), db);
        must(sqlite3_exec(db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
                          "CREATE TABLE meta(key, value);"
                          "CREATE TABLE edits(id INTEGER PRIMARY KEY, seq, kind, undoes, method, request, action,"
                          " iterations, loss_first, loss_last, reproduced, rows_added, rows_changed, seconds,"
                          " change, created);",
                          NULL, NULL, NULL),
             db);
        if (graft_journal_open(dir, 0, &held) != GRAFT_OK) {
            fprintf(stderr, "fuzz_journal: %s\n", graft_last_error());
            abort();
        }
    }
    if (size < 1) return 0;
    int pick = data[0] & 3, right_fp = !(data[0] & 4), full = data[0] & 8;
    field f[MAX_FIELDS];
    int nf = 0;
    for (size_t i = 1; i + 2 <= size && nf < MAX_FIELDS;) {
        size_t n = (size_t)data[i] | (size_t)data[i + 1] << 8;
        i += 2;
        if (n == 0xffff) {
            f[nf++] = (field){NULL, 0};
            continue;
        }
        if (n > size - i) n = size - i;
        f[nf++] = (field){data + i, n};
        i += n;
    }
    static const char *const methods[] = {"grace", "melo", "ft"};
    static const field empty = {(const uint8_t *)"{}", 2};
    const field method = pick < 3 ? (field){(const uint8_t *)methods[pick], strlen(methods[pick])}
                                   : nf > 0 ? f[0] : empty;
    const field *opts = nf > 1 ? &f[1] : &empty;
    if (pick < 3 && nf == 0) opts = &empty;

    must(sqlite3_exec(db, "BEGIN; DELETE FROM meta; DELETE FROM edits;", NULL, NULL, NULL), db);
    sqlite3_stmt *s;
    must(sqlite3_prepare_v2(db, "INSERT INTO meta VALUES(?, ?)", -1, &s, NULL), db);
    const field fpf = {(const uint8_t *)(right_fp ? fp : "gpt2 L1 C1 V1 0"), strlen(right_fp ? fp : "gpt2 L1 C1 V1 0")};
    const char *const keys[] = {"method", "editor_options", "model_fingerprint"};
    const field *vals[] = {&method, opts, &fpf};
    for (int k = 0; k < 3; k++) {
        sqlite3_bind_text(s, 1, keys[k], -1, SQLITE_STATIC);
        bind(s, 2, vals[k], 0);
        must(sqlite3_step(s), db);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    must(sqlite3_prepare_v2(db,
                            "INSERT INTO edits(kind, undoes, seq, method, request, change, created, action)"
                            " VALUES(?, ?, ?, ?, ?, ?, '2026-12-05T00:00:00Z', 'add')",
                            -1, &s, NULL),
         db);
    for (int r = 0; 2 + 6 * r + 5 < nf; r++) {
        const field *row = &f[2 + 6 * r];
        for (int c = 0; c < 6; c++) bind(s, c + 1, &row[c], c == 5);
        must(sqlite3_step(s), db);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    must(sqlite3_exec(db, "COMMIT;", NULL, NULL, NULL), db);

    graft_editor *e = NULL;
    graft_journal *j = NULL;
    if (full) {
        /* --adaptor, graft serve, edits undo: open the folder afresh, build the
         * editor its settings name, check the model, replay every row */
        if (graft_adaptor_open(m, dir, &e, &j) == GRAFT_OK) show_and_list(j);
        graft_journal_close(j);
    } else {
        /* the journal held open, as graft serve and a stream hold it (opening
         * SQLite is most of the time of the path above): list, show, and
         * replay into a fresh editor of the chosen method, as --resume does */
        show_and_list(held);
        char *mv = NULL, *ov = NULL;
        graft_journal_get_meta(held, "method", &mv);
        graft_journal_get_meta(held, "editor_options", &ov);
        if (mv && ov && graft_editor_create(m, mv, ov, &e) == GRAFT_OK) {
            int64_t live, last_seq;
            graft_journal_replay(held, e, &live, &last_seq);
        }
        free(mv), free(ov);
    }
    if (e) {
        if (e->ops->reset) e->ops->reset(e);
        e->ops->free(e);
    }
    for (int i = 0, k = 0; i < m->params.n; k += (int)m->params.p[i].numel, i++)
        memcpy(m->params.p[i].data, saved + k, m->params.p[i].numel * sizeof *saved);
    return 0;
}
