/* journal_pg.c - the PostgreSQL back end of the edit journal: one journal
 * shared by a fleet of graft serve replicas (journal.h, journal_impl.h,
 * docs/REPLICAS.md).
 *
 * Tables (created when missing, under an advisory lock so that replicas
 * starting together do not race):
 *   graft_meta(journal, key, value)        settings, as SQLite's meta table;
 *                                          journal '' key schema_version
 *   graft_edits(journal, id, format, ...)  the rows, as SQLite's edits table,
 *                                          primary key (journal, id)
 * `journal` is the URI's #NAME, so one database can hold several fleets'
 * journals. An append is one statement (so one transaction): it inserts row
 * id = position + 1 only while the journal's model_fingerprint is this
 * handle's, and notifies channel graft_journal with "NAME ID" on commit. Two
 * replicas racing for one id: the primary key lets one in and the other gets
 * a unique violation, reported as GRAFT_JOURNAL_CONFLICT: it catches up and
 * tries again, so ids stay gapless and every row was computed on the state of
 * the rows before it. */
#include "journal_impl.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PGconn *conn;
    char *conninfo; /* the URI without its #NAME */
    char *name;     /* the journal's name (#NAME, default "default") */
} pg_journal;

#define PG(j) ((pg_journal *)(j)->impl)

static void quiet_notice(void *arg, const char *msg) { (void)arg, (void)msg; }

/* The URI as messages show it: a password (user:PASSWORD@ or password=) is
 * replaced by "***". Malloc'ed. */
char *graft_journal_redact(const char *uri) {
    size_t n = strlen(uri);
    char *o = malloc(n + 8);
    if (!o) return NULL;
    const char *at = strchr(uri, '@'), *scheme = strstr(uri, "://");
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    if (at && colon && colon < at && (!slash || at < slash))
        snprintf(o, n + 8, "%.*s:***%s", (int)(colon - uri), uri, at);
    else
        snprintf(o, n + 8, "%s", uri);
    char *pw = strstr(o, "password=");
    if (pw) {
        char *end = pw + 9;
        while (*end && *end != '&' && *end != '#') end++;
        memmove(pw + 12, end, strlen(end) + 1);
        memcpy(pw + 9, "***", 3);
    }
    return o;
}

/* libpq's message without its trailing newline, into buf */
static const char *pq_msg(PGconn *c, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", c ? PQerrorMessage(c) : "out of memory");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\t') *p = ' ';
    return buf;
}

static PGconn *connect_to(const char *conninfo) {
    /* a default connect timeout, and a lock timeout so that a replica that
     * stops (SIGSTOP, a hung machine) while holding the write lock cannot
     * hold every other replica's edits forever (the URI's own options win:
     * later keywords override) */
    const char *keys[] = {"connect_timeout", "options", "dbname", NULL};
    const char *vals[] = {"5", "-c lock_timeout=10s", conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c) PQsetNoticeProcessor(c, quiet_notice, NULL);
    return c;
}

/* The connection, re-established when it was lost: 0 ok, else a DOWN failure. */
static graft_status ensure_conn(graft_journal *j) {
    pg_journal *p = PG(j);
    if (p->conn && PQstatus(p->conn) == CONNECTION_OK) return GRAFT_OK;
    if (p->conn)
        PQreset(p->conn);
    else
        p->conn = connect_to(p->conninfo);
    if (p->conn && PQstatus(p->conn) == CONNECTION_OK) return GRAFT_OK;
    char m[512];
    j->fault = GRAFT_JOURNAL_DOWN;
    return graft_fail(GRAFT_ERR_IO, "%s: journal unavailable: cannot connect to PostgreSQL: %s", j->path,
                      pq_msg(p->conn, m, sizeof m));
}

/* Run one statement; a result of status `want`, or NULL with the failure
 * (named `what`) in *st. A lost connection is GRAFT_JOURNAL_DOWN. */
static PGresult *run(graft_journal *j, const char *what, ExecStatusType want, const char *sql, int n,
                     const char *const *vals, const int *lens, const int *fmts, graft_status *st) {
    *st = ensure_conn(j);
    if (*st != GRAFT_OK) return NULL;
    PGconn *c = PG(j)->conn;
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, lens, fmts, 0);
    if (r && PQresultStatus(r) == want) return r;
    char m[512];
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        j->fault = GRAFT_JOURNAL_DOWN;
        *st = graft_fail(GRAFT_ERR_IO, "%s: journal unavailable: %s: lost the connection to PostgreSQL: %s", j->path,
                         what, pq_msg(c, m, sizeof m));
    } else if (state && !strcmp(state, "55P03")) {
        j->fault = GRAFT_JOURNAL_DOWN;
        *st = graft_fail(GRAFT_ERR_IO, "%s: journal unavailable: %s: the journal's write lock stayed taken past "
                         "lock_timeout (another replica holding it is stuck?): %s", j->path, what, pq_msg(c, m, sizeof m));
        } else if (state && !strcmp(state, "23505")) {
        j->fault = GRAFT_JOURNAL_CONFLICT;
        *st = graft_fail(GRAFT_ERR_INVALID, "%s: %s: another replica took journal row %lld first (catch up and retry)",
                         j->path, what, (long long)j->position + 1);
    } else {
        /* a server that refuses writes (shutting down, read-only) is down for edits */
        if (state && (!strncmp(state, "57", 2) || !strncmp(state, "08", 2) || !strcmp(state, "25006")))
            j->fault = GRAFT_JOURNAL_DOWN;
        *st = graft_fail(GRAFT_ERR_IO, "%s: %s%s: %s", j->path, j->fault == GRAFT_JOURNAL_DOWN ? "journal unavailable: " : "",
                         what, r ? pq_msg(c, m, sizeof m) : "out of memory");
    }
    PQclear(r);
    return NULL;
}

static void pg_close(graft_journal *j) {
    pg_journal *p = j->impl;
    if (!p) return;
    if (p->conn) PQfinish(p->conn);
    free(p->conninfo), free(p->name);
    free(p);
}

static graft_status pg_set_meta(graft_journal *j, const char *key, const char *value) {
    const char *v[3] = {PG(j)->name, key, value};
    graft_status st;
    PGresult *r = run(j, "writing meta", PGRES_COMMAND_OK,
                      "INSERT INTO graft_meta(journal, key, value) VALUES($1, $2, $3)"
                      " ON CONFLICT (journal, key) DO UPDATE SET value = EXCLUDED.value",
                      3, v, NULL, NULL, &st);
    PQclear(r);
    return st;
}

static graft_status pg_get_meta(graft_journal *j, const char *key, char **value) {
    *value = NULL;
    const char *v[2] = {PG(j)->name, key};
    graft_status st;
    PGresult *r = run(j, "reading meta", PGRES_TUPLES_OK, "SELECT value FROM graft_meta WHERE journal = $1 AND key = $2",
                      2, v, NULL, NULL, &st);
    if (!r) return st;
    if (PQntuples(r) > 0) {
        *value = strdup(PQgetvalue(r, 0, 0));
        if (!*value) st = graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    PQclear(r);
    return st;
}

static graft_status pg_meta_each(graft_journal *j, graft_journal_meta_fn fn, void *user) {
    const char *v[1] = {PG(j)->name};
    graft_status st;
    PGresult *r = run(j, "reading meta", PGRES_TUPLES_OK,
                      "SELECT key, value FROM graft_meta WHERE journal = $1 ORDER BY key", 1, v, NULL, NULL, &st);
    if (!r) return st;
    for (int i = 0; st == GRAFT_OK && i < PQntuples(r); i++) st = fn(user, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    PQclear(r);
    return st;
}

#define ROW_COLUMNS                                                                                       \
    "id, format, seq, kind, undoes, method, request, action, iterations, loss_first, loss_last, reproduced," \
    " rows_added, rows_changed, seconds, change, created"

static graft_status pg_put(graft_journal *j, graft_journal_entry *e, int keep_id) {
    pg_journal *p = PG(j);
    char id[32], fmt[16], seq[32], undoes[32], it[16], lf[40], ll[40], rep[16], ra[16], rc[16], sec[40];
    int64_t rid = keep_id ? e->id : j->position + 1;
    snprintf(id, sizeof id, "%lld", (long long)rid);
    snprintf(fmt, sizeof fmt, "%d", e->format > 0 ? e->format : GRAFT_JOURNAL_FORMAT);
    snprintf(seq, sizeof seq, "%lld", (long long)e->seq);
    snprintf(undoes, sizeof undoes, "%lld", (long long)e->undoes);
    snprintf(it, sizeof it, "%d", e->info.iterations);
    snprintf(lf, sizeof lf, "%.17g", e->info.loss_first);
    snprintf(ll, sizeof ll, "%.17g", e->info.loss_last);
    snprintf(rep, sizeof rep, "%d", e->info.reproduced);
    snprintf(ra, sizeof ra, "%d", e->info.rows_added);
    snprintf(rc, sizeof rc, "%d", e->info.rows_changed);
    snprintf(sec, sizeof sec, "%.17g", e->seconds);
    const char *v[19] = {p->name, id, fmt, seq, e->kind, strcmp(e->kind, "undo") ? NULL : undoes, e->method,
                         e->request ? e->request : "{}", e->info.action, it, lf, ll, rep, ra, rc, sec,
                         e->change ? (const char *)e->change : "", e->created, keep_id ? NULL : j->fingerprint};
    int lens[19] = {0}, fmts[19] = {0};
    lens[16] = (int)e->change_len, fmts[16] = 1; /* the change record travels as binary */
    graft_status st;
    PGresult *r;
    if (keep_id)
        r = run(j, "copying a row", PGRES_COMMAND_OK,
                "INSERT INTO graft_edits(journal, " ROW_COLUMNS ") VALUES($1, $2::bigint, $3::int, $4::bigint, $5,"
                " $6::bigint, $7, $8, $9, $10::int, $11::float8, $12::float8, $13::int, $14::int, $15::int, $16::float8,"
                " $17::bytea, $18)",
                18, v, lens, fmts, &st);
    else
        /* one statement, one transaction: the row goes in only while the
         * journal's model is this handle's, and the notification goes out
         * when it commits */
        r = run(j, "committing an edit", PGRES_TUPLES_OK,
                "WITH ins AS (INSERT INTO graft_edits(journal, " ROW_COLUMNS ")"
                " SELECT $1, $2::bigint, $3::int, $4::bigint, $5, $6::bigint, $7, $8, $9, $10::int, $11::float8,"
                " $12::float8, $13::int, $14::int, $15::int, $16::float8, $17::bytea, $18"
                " WHERE $19::text IS NULL OR $19::text IS NOT DISTINCT FROM"
                " (SELECT value FROM graft_meta WHERE journal = $1 AND key = 'model_fingerprint')"
                " RETURNING id)"
                " SELECT pg_notify('graft_journal', $1 || ' ' || id::text) FROM ins",
                19, v, lens, fmts, &st);
    if (!r) return st;
    int inserted = keep_id || PQntuples(r) == 1;
    PQclear(r);
    if (!inserted) {
        char *theirs = NULL;
        graft_status s2 = pg_get_meta(j, "model_fingerprint", &theirs);
        st = s2 != GRAFT_OK ? s2
                            : graft_fail(GRAFT_ERR_INVALID,
                                         "%s: edit refused: the journal's edits are for model %s, and this one is %s",
                                         j->path, theirs ? theirs : "(none recorded)", j->fingerprint);
        free(theirs);
        return st;
    }
    e->id = rid;
    return GRAFT_OK;
}

static int64_t i64(const PGresult *r, int row, int col) { return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10); }
static double f64(const PGresult *r, int row, int col) { return PQgetisnull(r, row, col) ? 0 : strtod(PQgetvalue(r, row, col), NULL); }

static graft_status pg_each(graft_journal *j, int64_t after, int64_t upto, int64_t undo_upto, graft_journal_fn fn,
                           void *user) {
    char a[32], u[32], uu[32];
    snprintf(a, sizeof a, "%lld", (long long)after);
    snprintf(u, sizeof u, "%lld", (long long)(upto < 0 ? INT64_MAX : upto));
    snprintf(uu, sizeof uu, "%lld", (long long)(undo_upto < 0 ? INT64_MAX : undo_upto));
    const char *v[4] = {PG(j)->name, a, u, uu};
    graft_status st;
    PGresult *r = run(j, "reading", PGRES_TUPLES_OK,
                      "SELECT " ROW_COLUMNS ", EXISTS(SELECT 1 FROM graft_edits x WHERE x.journal = e.journal"
                      " AND x.kind = 'undo' AND x.undoes = e.id AND x.id <= $4::bigint)"
                      " FROM graft_edits e WHERE journal = $1 AND id > $2::bigint AND id <= $3::bigint ORDER BY id",
                      4, v, NULL, NULL, &st);
    if (!r) return st;
    for (int i = 0; st == GRAFT_OK && i < PQntuples(r); i++) {
        graft_journal_entry e;
        memset(&e, 0, sizeof e);
        e.id = i64(r, i, 0);
        e.format = (int)i64(r, i, 1);
        e.seq = i64(r, i, 2);
        e.kind = PQgetvalue(r, i, 3);
        e.undoes = i64(r, i, 4);
        e.method = PQgetvalue(r, i, 5);
        e.request = PQgetvalue(r, i, 6);
        snprintf(e.info.action, sizeof e.info.action, "%s", PQgetvalue(r, i, 7));
        e.info.iterations = (int)i64(r, i, 8);
        e.info.loss_first = f64(r, i, 9);
        e.info.loss_last = f64(r, i, 10);
        e.info.reproduced = (int)i64(r, i, 11);
        e.info.rows_added = (int)i64(r, i, 12);
        e.info.rows_changed = (int)i64(r, i, 13);
        e.seconds = f64(r, i, 14);
        size_t n = 0;
        unsigned char *ch = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 15), &n);
        if (!ch) {
            st = graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
            break;
        }
        e.change = ch;
        e.change_len = n;
        snprintf(e.created, sizeof e.created, "%s", PQgetvalue(r, i, 16));
        e.undone = PQgetvalue(r, i, 17)[0] == 't';
        st = fn(user, &e);
        PQfreemem(ch);
    }
    PQclear(r);
    return st;
}

static graft_status pg_head(graft_journal *j, int64_t *id) {
    *id = 0;
    const char *v[1] = {PG(j)->name};
    graft_status st;
    PGresult *r = run(j, "reading", PGRES_TUPLES_OK, "SELECT coalesce(max(id), 0) FROM graft_edits WHERE journal = $1", 1,
                      v, NULL, NULL, &st);
    if (!r) return st;
    *id = i64(r, 0, 0);
    PQclear(r);
    return GRAFT_OK;
}

static graft_status pg_lock(graft_journal *j) {
    const char *v[1] = {PG(j)->name};
    graft_status st;
    PGresult *r = run(j, "taking the journal's write lock", PGRES_TUPLES_OK,
                      "SELECT pg_advisory_lock(hashtext('graft_journal ' || $1))", 1, v, NULL, NULL, &st);
    PQclear(r);
    return st;
}

static void pg_unlock(graft_journal *j) {
    /* a lost connection released it already */
    if (!PG(j)->conn || PQstatus(PG(j)->conn) != CONNECTION_OK) return;
    const char *v[1] = {PG(j)->name};
    PQclear(PQexecParams(PG(j)->conn, "SELECT pg_advisory_unlock(hashtext('graft_journal ' || $1))", 1, NULL, v, NULL,
                         NULL, 0));
}

static const graft_journal_ops pg_ops = {"postgresql", pg_close, pg_set_meta, pg_get_meta, pg_meta_each, pg_put,
                                         pg_each,      pg_head,  NULL,        pg_lock,     pg_unlock};

static const char *pg_schema =
    "CREATE TABLE IF NOT EXISTS graft_meta(journal TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY(journal, key));"
    "CREATE TABLE IF NOT EXISTS graft_edits(journal TEXT NOT NULL, id BIGINT NOT NULL, format INTEGER NOT NULL,"
    " seq BIGINT NOT NULL, kind TEXT NOT NULL CHECK(kind IN ('edit','undo')), undoes BIGINT, method TEXT NOT NULL,"
    " request TEXT NOT NULL, action TEXT, iterations INTEGER, loss_first DOUBLE PRECISION,"
    " loss_last DOUBLE PRECISION, reproduced INTEGER, rows_added INTEGER, rows_changed INTEGER,"
    " seconds DOUBLE PRECISION, change BYTEA NOT NULL, created TEXT NOT NULL, PRIMARY KEY(journal, id));"
    "CREATE INDEX IF NOT EXISTS graft_edits_undone ON graft_edits(journal, undoes) WHERE kind = 'undo';";

/* Tables created when missing (create), and their layout checked. */
static graft_status pg_prepare(graft_journal *j, int create) {
    PGconn *c = PG(j)->conn;
    char m[512];
    if (create) {
        /* replicas starting together: one creates, the others wait */
        char sql[2048];
        snprintf(sql, sizeof sql,
                 "BEGIN; SELECT pg_advisory_xact_lock(7421019); %s"
                 " INSERT INTO graft_meta(journal, key, value) VALUES('', 'schema_version', '%d')"
                 " ON CONFLICT DO NOTHING; COMMIT;",
                 pg_schema, GRAFT_JOURNAL_SCHEMA);
        PGresult *r = PQexec(c, sql);
        int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            graft_status st = graft_fail(GRAFT_ERR_IO, "%s: creating the journal's tables: %s", j->path, pq_msg(c, m, sizeof m));
            PQclear(PQexec(c, "ROLLBACK"));
            return st;
        }
    }
    PGresult *r = PQexec(c, "SELECT value FROM graft_meta WHERE journal = '' AND key = 'schema_version'");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) == 0) {
        PQclear(r);
        return graft_fail(GRAFT_ERR_IO, "%s: no graft edit journal in this database (%s)", j->path,
                          create ? pq_msg(c, m, sizeof m) : "give --method to start one");
    }
    int v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (v > GRAFT_JOURNAL_SCHEMA)
        return graft_fail(GRAFT_ERR_UNSUPPORTED,
                          "%s: the journal's tables were laid out by a newer graft (schema %d; this graft knows up to %d): "
                          "upgrade graft",
                          j->path, v, GRAFT_JOURNAL_SCHEMA);
    if (!create) {
        /* an existing journal of this name: it has its method setting */
        char *method = NULL;
        GRAFT_TRY(pg_get_meta(j, "method", &method));
        int has = method != NULL;
        free(method);
        int64_t head = 0;
        if (!has) GRAFT_TRY(pg_head(j, &head));
        if (!has && head == 0)
            return graft_fail(GRAFT_ERR_IO, "%s: no edit journal named '%s' here", j->path, PG(j)->name);
    }
    return GRAFT_OK;
}

graft_status graft_journal_pg_open(const char *uri, int create, graft_journal **out) {
    *out = NULL;
    graft_journal *j = calloc(1, sizeof *j);
    pg_journal *p = calloc(1, sizeof *p);
    if (!j || !p) {
        free(j), free(p);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    j->ops = &pg_ops;
    j->impl = p;
    const char *hash = strchr(uri, '#');
    p->conninfo = hash ? strndup(uri, (size_t)(hash - uri)) : strdup(uri);
    p->name = strdup(hash && hash[1] ? hash + 1 : "default");
    j->path = graft_journal_redact(uri);
    if (!p->conninfo || !p->name || !j->path) {
        graft_journal_close(j);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    /* the shown form says which journal: add #NAME when the URI had none */
    if (!hash) {
        size_t n = strlen(j->path) + strlen(p->name) + 2;
        char *s = malloc(n);
        if (!s) {
            graft_journal_close(j);
            return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
        }
        snprintf(s, n, "%s#%s", j->path, p->name);
        free(j->path);
        j->path = s;
    }
    graft_status st = ensure_conn(j);
    if (st == GRAFT_OK) st = pg_prepare(j, create);
    if (st != GRAFT_OK) {
        graft_journal_close(j);
        return st;
    }
    *out = j;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- watching */

struct graft_journal_watch {
    PGconn *conn;
    char *conninfo, *name;
    int fresh; /* just (re)connected: the caller should catch up */
};

static int watch_connect(graft_journal_watch *w) {
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK) return 1;
    if (w->conn) PQfinish(w->conn);
    w->conn = connect_to(w->conninfo);
    if (!w->conn || PQstatus(w->conn) != CONNECTION_OK) return 0;
    PGresult *r = PQexec(w->conn, "LISTEN graft_journal");
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok) w->fresh = 1;
    return ok;
}

graft_status graft_journal_watch_open(const graft_journal *j, graft_journal_watch **out) {
    *out = NULL;
    if (j->ops != &pg_ops)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: a %s journal has no replicas to watch (give a postgresql:// URI)",
                          j->path, j->ops->name);
    graft_journal_watch *w = calloc(1, sizeof *w);
    if (!w) return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    w->conninfo = strdup(PG(j)->conninfo);
    w->name = strdup(PG(j)->name);
    if (!w->conninfo || !w->name) {
        graft_journal_watch_close(w);
        return graft_fail(GRAFT_ERR_NOMEM, "journal: out of memory");
    }
    if (!watch_connect(w)) {
        char m[512];
        graft_status st = graft_fail(GRAFT_ERR_IO, "%s: journal unavailable: LISTEN: %s", j->path,
                                     pq_msg(w->conn, m, sizeof m));
        graft_journal_watch_close(w);
        return st;
    }
    *out = w;
    return GRAFT_OK;
}

int graft_journal_watch_wait(graft_journal_watch *w, int timeout_ms) {
    if (!watch_connect(w)) {
        usleep((useconds_t)timeout_ms * 1000);
        return -1;
    }
    if (w->fresh) {
        w->fresh = 0;
        return 1;
    }
    int got = 0;
    struct pollfd pf = {PQsocket(w->conn), POLLIN, 0};
    int rc = poll(&pf, 1, timeout_ms);
    if (rc < 0 && errno != EINTR) return -1;
    if (rc > 0 && !PQconsumeInput(w->conn)) return -1;
    PGnotify *n;
    size_t len = strlen(w->name);
    while ((n = PQnotifies(w->conn)) != NULL) {
        if (n->extra && !strncmp(n->extra, w->name, len) && n->extra[len] == ' ') got = 1;
        PQfreemem(n);
    }
    if (PQstatus(w->conn) != CONNECTION_OK) return -1;
    return got;
}

void graft_journal_watch_close(graft_journal_watch *w) {
    if (!w) return;
    if (w->conn) PQfinish(w->conn);
    free(w->conninfo), free(w->name);
    free(w);
}
