/* test_journal.c - the SQLite edit journal: durable append, replay into a
 * fresh editor (bit-identical codebook), undo rows, recovery after a process
 * killed with SIGKILL mid-stream, an edit taken back that never reached the
 * journal, a second writer followed by catch-up, a row of a newer format, and
 * a corrupt journal file. (The PostgreSQL back end: tests/cli_replicas.sh.) */
#include "edit/journal.h"
#include "test.h"

#include <sqlite3.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static graft_model *m;

/* Edit k of a deterministic stream on the tiny model: distinct prompts/targets. */
static void request(int k, int *p, int *t, graft_edit_tok *r) {
    for (int i = 0; i < 5; i++) p[i] = (k * 7 + i * 3 + 1) % 60;
    t[0] = (k * 11 + 5) % 60;
    t[1] = (k * 13 + 2) % 60;
    *r = (graft_edit_tok){p, 5, t, 2, -1};
}

static graft_editor *new_editor(void) {
    graft_grace_opts o;
    graft_grace_opts_default(&o);
    o.layer = 1;
    o.n_iter = 10;
    o.eps_init = 0.5f;
    graft_editor *e = NULL;
    CHECK_OK(graft_grace_create(m, &o, &e));
    return e;
}

/* Apply edits [from, to) and journal each one. */
static void run_stream(graft_editor *e, graft_journal *j, int from, int to) {
    for (int k = from; k < to; k++) {
        int p[5], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        graft_journal_entry en = {0};
        en.seq = k;
        en.kind = "edit";
        en.method = "grace";
        en.request = "{}";
        en.info = info;
        en.change = ch.data;
        en.change_len = ch.len;
        CHECK_OK(graft_journal_append(j, &en));
        graft_blob_free(&ch);
    }
}

static int same_codebook(graft_editor *a, graft_editor *b) {
    graft_grace_stats sa, sb;
    graft_grace_get_stats(a, &sa);
    graft_grace_get_stats(b, &sb);
    if (sa.n_rows != sb.n_rows || sa.n_keys != sb.n_keys) return 0;
    for (int i = 0; i < sa.n_rows; i++) {
        const float *k1, *v1, *k2, *v2;
        const int *l1, *l2;
        float e1, e2;
        int n1, n2, d1, d2;
        graft_grace_row(a, i, &k1, &v1, &e1, &l1, &n1, &d1);
        graft_grace_row(b, i, &k2, &v2, &e2, &l2, &n2, &d2);
        if (memcmp(k1, k2, (size_t)sa.key_dim * 4) || memcmp(v1, v2, (size_t)sa.value_dim * 4) || e1 != e2 || n1 != n2 ||
            d1 != d2 || memcmp(l1, l2, (size_t)n1 * sizeof(int)))
            return 0;
    }
    return 1;
}

int main(void) {
    graft_set_threads(1);
    graft_config c;
    CHECK_OK(graft_config_preset("gpt2-tiny", &c));
    c.vocab_size = 64;
    CHECK_OK(graft_model_create_random(&c, 5, 0.2f, &m));
    if (!m) return test_finish("test_journal");

    char dir[] = "/tmp/graft_journalXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    graft_journal *j = NULL;
    CHECK_OK(graft_journal_open(dir, 1, &j));
    CHECK_OK(graft_journal_set_meta(j, "method", "grace"));
    graft_editor *ref = new_editor();
    run_stream(ref, j, 0, 12);
    graft_journal_close(j);

    /* reopen and replay: the same codebook */
    CHECK_OK(graft_journal_open(dir, 0, &j));
    char *v = NULL;
    CHECK_OK(graft_journal_get_meta(j, "method", &v));
    CHECK(v && !strcmp(v, "grace"));
    free(v);
    graft_editor *e = new_editor();
    int64_t n = 0, last = -1;
    CHECK_OK(graft_journal_replay(j, e, &n, &last));
    CHECK(n == 12 && last == 11);
    CHECK(same_codebook(ref, e));

    /* undo edit 3 (id 4): logged, and a replay reproduces the undone state */
    CHECK_OK(graft_journal_undo(j, e, 4));
    CHECK_FAILS(graft_journal_undo(j, e, 4), GRAFT_ERR_INVALID, "already undone");
    CHECK_FAILS(graft_journal_undo(j, e, 999), GRAFT_ERR_RANGE, "no edit with id 999");
    graft_editor *e2 = new_editor();
    CHECK_OK(graft_journal_replay(j, e2, &n, &last));
    CHECK(n == 11);
    CHECK(same_codebook(e, e2));
    graft_journal_entry en;
    CHECK_OK(graft_journal_get(j, 4, &en));
    CHECK(en.undone == 1 && !strcmp(en.kind, "edit") && en.seq == 3);
    graft_journal_entry_free(&en);
    graft_journal_close(j);
    e->ops->free(e);
    e2->ops->free(e2);

    /* crash: a child streams edits into a new journal and is killed with
     * SIGKILL; every committed row replays, and resuming from there ends
     * with the codebook of an uninterrupted run */
    char dir2[] = "/tmp/graft_journalXXXXXX";
    CHECK(mkdtemp(dir2) != NULL);
    pid_t pid = fork();
    if (pid == 0) {
        graft_journal *cj = NULL;
        if (graft_journal_open(dir2, 1, &cj) != GRAFT_OK) _exit(3);
        graft_editor *ce = new_editor();
        run_stream(ce, cj, 0, 1000); /* far more than it gets to do */
        _exit(0);
    }
    usleep(300000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    CHECK_OK(graft_journal_open(dir2, 0, &j));
    e = new_editor();
    CHECK_OK(graft_journal_replay(j, e, &n, &last));
    printf("killed after %lld committed edits\n", (long long)n);
    CHECK(n >= 1 && last == n - 1);
    run_stream(e, j, (int)last + 1, (int)last + 1 + 3); /* resume: 3 more */
    graft_editor *un = new_editor();
    graft_journal *scratch = NULL;
    char dir3[] = "/tmp/graft_journalXXXXXX";
    CHECK(mkdtemp(dir3) != NULL);
    CHECK_OK(graft_journal_open(dir3, 1, &scratch));
    run_stream(un, scratch, 0, (int)last + 4);
    CHECK_MSG(same_codebook(e, un), "resumed codebook differs from an uninterrupted run");
    graft_journal_close(scratch);
    graft_journal_close(j);
    e->ops->free(e);
    un->ops->free(un);

    {
        /* an edit applied but never journaled (the write failed, or a replica
         * took its position) is taken back bit for bit: the next edit's record
         * then replays onto the journal's own state */
        char fd[] = "/tmp/graft_journalXXXXXX";
        CHECK(mkdtemp(fd) != NULL);
        graft_journal *fj = NULL;
        CHECK_OK(graft_journal_open(fd, 1, &fj));
        graft_editor *a = new_editor(), *b = new_editor();
        run_stream(a, fj, 0, 3);
        int p[5], t[2];
        graft_edit_tok r;
        request(3, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(a->ops->apply(a, &r, &info, &ch));
        CHECK(a->ops->forget != NULL);
        CHECK_OK(a->ops->forget(a, ch.data, ch.len));
        graft_blob_free(&ch);
        run_stream(a, fj, 4, 6);
        CHECK_OK(graft_journal_replay(fj, b, NULL, NULL));
        CHECK(same_codebook(a, b) && a->n_edits == b->n_edits);
        CHECK(graft_journal_position(fj) == 5);

        /* a second writer on the same journal; the first follows by catch-up */
        graft_journal *fj2 = NULL;
        CHECK_OK(graft_journal_open(fd, 0, &fj2));
        graft_editor *c2 = new_editor();
        CHECK_OK(graft_journal_replay(fj2, c2, NULL, NULL));
        run_stream(c2, fj2, 6, 9);
        int64_t head = 0, n_caught = 0;
        CHECK_OK(graft_journal_head(fj, &head));
        CHECK(head == 8 && graft_journal_position(fj) == 5);
        CHECK_OK(graft_journal_catch_up(fj, b, NULL, NULL, &n_caught));
        CHECK(n_caught == 3 && graft_journal_position(fj) == 8 && same_codebook(b, c2));
        CHECK(!strcmp(graft_journal_backend(fj), "sqlite"));
        graft_journal_close(fj2);

        /* a row written by a newer graft is refused, naming the row */
        char *fp = graft_path_join(fd, "journal.sqlite");
        sqlite3 *db = NULL;
        CHECK(sqlite3_open(fp, &db) == SQLITE_OK);
        CHECK(sqlite3_exec(db, "UPDATE edits SET format = 2 WHERE id = 7", NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(db);
        graft_editor *d = new_editor();
        CHECK_FAILS(graft_journal_replay(fj, d, NULL, NULL), GRAFT_ERR_UNSUPPORTED, "row 7 was written by a newer graft");
        free(fp);
        graft_journal_close(fj);
        a->ops->free(a), b->ops->free(b), c2->ops->free(c2), d->ops->free(d);
        char rm[128];
        snprintf(rm, sizeof rm, "rm -rf %s", fd);
        if (system(rm) != 0) fprintf(stderr, "cleanup failed\n");
    }

    /* a corrupt journal file is an error naming the file */
    char bad[] = "/tmp/graft_journalXXXXXX";
    CHECK(mkdtemp(bad) != NULL);
    char *bp = graft_path_join(bad, "journal.sqlite");
    FILE *f = fopen(bp, "wb");
    fputs("this is not a database, just some text long enough to be read as a header ............", f);
    fclose(f);
    CHECK_FAILS(graft_journal_open(bad, 0, &j), GRAFT_ERR_IO, "journal.sqlite");
    CHECK_FAILS(graft_journal_open("/tmp/graft-no-such-dir", 0, &j), GRAFT_ERR_IO, "no edit journal");
    free(bp);

    ref->ops->free(ref);
    graft_model_free(m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s %s", dir, dir2, dir3, bad);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return test_finish("test_journal");
}
