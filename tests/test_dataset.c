/* test_dataset.c - edit-request datasets: the real shared files (when
 * ../shared is there), small inline samples of every format, auto-detection,
 * max_rows, and one malformed input per error class, each of which must name
 * the file, the row and the field. */
#include "data/dataset.h"
#include "test.h"

#include <stdbool.h>
#include <unistd.h>

static char tmpdir[64];

/* Write `len` bytes (len < 0: strlen) to tmpdir/name; returns a static path. */
static const char *write_tmp(const char *name, const char *text, long len) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fwrite(text, 1, len < 0 ? strlen(text) : (size_t)len, f);
    fclose(f);
    return path;
}

static bool streq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

/* ------------------------------------------------------------ utf-8 */

static void test_utf8(void) {
    size_t off = 99;
    CHECK(graft_utf8_valid("", 0, NULL));
    CHECK(graft_utf8_valid("plain ascii", 11, NULL));
    CHECK(graft_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, NULL)); /* é € 😀 */
    CHECK(graft_utf8_valid("\xf4\x8f\xbf\xbf", 4, NULL));                             /* U+10FFFF */
    CHECK(!graft_utf8_valid("ab\xff", 3, &off) && off == 2);
    CHECK(!graft_utf8_valid("\xc0\xaf", 2, &off) && off == 0);         /* overlong '/' */
    CHECK(!graft_utf8_valid("x\xe0\x80\xaf", 4, &off) && off == 1);    /* overlong, 3 bytes */
    CHECK(!graft_utf8_valid("\xed\xa0\x80", 3, &off) && off == 0);     /* UTF-16 surrogate */
    CHECK(!graft_utf8_valid("\xf4\x90\x80\x80", 4, &off) && off == 0); /* above U+10FFFF */
    CHECK(!graft_utf8_valid("abc\xe2\x82", 5, &off) && off == 3);      /* truncated */
    CHECK(!graft_utf8_valid("\x80", 1, &off) && off == 0);             /* stray continuation */
    CHECK(!graft_utf8_valid("\xc3\x28", 2, &off) && off == 0);         /* bad continuation */
}

/* ------------------------------------------------------------ the shared files */

static char *shared_file(const char *rel) {
    return graft_path_join(test_shared_dir(), rel);
}

static void test_real_files(void) {
    char *probe = shared_file("data/counterfact/counterfact-edit.json");
    bool have = graft_path_exists(probe);
    free(probe);
    if (!have) {
        printf("test_dataset: %s/data absent: skipping the checks on the real data files\n", test_shared_dir());
        return;
    }
    graft_dataset d;
    char *p;

    p = shared_file("data/counterfact/counterfact-edit.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 10000 && streq(d.format, "counterfact") && streq(d.path, p));
    if (d.n == 10000) {
        graft_edit_request *r = &d.req[0];
        CHECK(streq(r->prompt, "The mother tongue of Danielle Darrieux is"));
        CHECK(streq(r->target, "English"));
        CHECK(streq(r->ground_truth, "French"));
        CHECK(streq(r->subject, "Danielle Darrieux"));
        CHECK(r->n_rephrases == 1 &&
              streq(r->rephrases[0], "Where Danielle Darrieux is from, people speak the language of"));
        CHECK(r->n_loc == 1 && streq(r->loc_prompts[0], "Michel Rocard is a native speaker of") &&
              streq(r->loc_answers[0], "French"));
        CHECK(r->case_id == 0 && r->row == 1);
        CHECK(d.req[9999].case_id == 21918 && streq(d.req[9999].prompt, "Subair works as") && d.req[9999].row == 10000);
    }
    graft_dataset_free(&d);
    CHECK(d.n == 0 && d.req == NULL);
    /* max_rows */
    CHECK_OK(graft_dataset_load(p, "counterfact", 5, &d));
    CHECK(d.n == 5 && d.req[4].row == 5);
    graft_dataset_free(&d);
    free(p);

    p = shared_file("data/counterfact/counterfact-train.json");
    CHECK_OK(graft_dataset_load(p, "auto", 0, &d));
    CHECK(d.n == 10000 && d.n > 0 && d.req[0].case_id == 2 && streq(d.req[0].ground_truth, "guitar"));
    graft_dataset_free(&d);
    free(p);

    p = shared_file("data/counterfact/counterfact-edit-1k.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1000 && d.req[0].case_id == 3087 && d.req[999].case_id == 11480);
    CHECK(d.n == 1000 && streq(d.req[999].prompt, "Shmuel Salant expired at"));
    graft_dataset_free(&d);
    free(p);

    /* zsRE: two rows have an empty alt and are skipped as EasyEdit skips
     * them; case_id stays the file index, so it jumps over them. */
    p = shared_file("data/zsre/zsre_mend_train-1k.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 998 && d.n_dropped == 2 && streq(d.format, "zsre"));
    if (d.n == 998) {
        graft_edit_request *r = &d.req[0];
        CHECK(streq(r->prompt, "What is the product made by UniFirst?"));
        CHECK(streq(r->target, "unmanned aircraft"));
        CHECK(streq(r->ground_truth, "uniform"));
        CHECK(streq(r->subject, "UniFirst"));
        CHECK(r->n_rephrases == 1 && streq(r->rephrases[0], "What will be the product of UniFirst?"));
        CHECK(r->n_loc == 1 && streq(r->loc_prompts[0], "nq question: john goodman's character in the big lebowski") &&
              streq(r->loc_answers[0], "Walter Sobchak"));
        /* file index 534 dropped: request 534 is file index 535 (row 536) */
        CHECK(d.req[533].case_id == 533 && d.req[534].case_id == 535 && d.req[534].row == 536);
        CHECK(d.req[997].case_id == 999);
    }
    graft_dataset_free(&d);
    CHECK_OK(graft_dataset_load_ex(p, "zsre", 0, GRAFT_DATASET_KEEP_EMPTY_TARGET, &d));
    CHECK(d.n == 1000 && d.n_dropped == 0 && d.n == 1000 && streq(d.req[534].target, "") &&
          streq(d.req[536].prompt, "Which is the designer of BaseKing?"));
    graft_dataset_free(&d);
    free(p);

    p = shared_file("data/zsre/zsre_mend_eval_portability_gpt4.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1037 && streq(d.format, "zsre") && d.n > 0 && streq(d.req[0].ground_truth, "1998") &&
          streq(d.req[0].target, "2006"));
    graft_dataset_free(&d);
    free(p);

    /* WISE hallucination: 7 locality pairs have an empty answer and are dropped */
    p = shared_file("data/hallucination/hallucination-edit.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 600 && streq(d.format, "hallucination") && d.n_loc_dropped == 7);
    if (d.n == 600) {
        CHECK(streq(d.req[0].subject, "carole gist") && d.req[0].ground_truth == NULL && d.req[0].n_rephrases == 0);
        CHECK(strncmp(d.req[0].prompt, "This is a Wikipedia passage about carole gist.", 46) == 0);
        CHECK(d.req[0].n_loc == 1 && d.req[86].n_loc == 0 && d.req[86].row == 87);
    }
    graft_dataset_free(&d);
    free(p);
    p = shared_file("data/hallucination/hallucination-train.json");
    CHECK_OK(graft_dataset_load(p, "hallucination", 0, &d));
    CHECK(d.n == 306 && d.n_loc_dropped == 5);
    graft_dataset_free(&d);
    free(p);

    p = shared_file("data/temporal/temporal-edit.json");
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 75 && streq(d.format, "temporal"));
    if (d.n == 75) {
        CHECK(streq(d.req[0].prompt, "Tesla, Inc.,") && d.req[0].n_rephrases == 1 &&
              strncmp(d.req[0].rephrases[0], "Tesla, Inc., an American multinational", 38) == 0);
        CHECK(strncmp(d.req[0].target, "originally known as Tesla Motors", 32) == 0);
    }
    graft_dataset_free(&d);
    free(p);
    p = shared_file("data/temporal/temporal-train.json");
    CHECK_OK(graft_dataset_load(p, "temporal", 10, &d));
    CHECK(d.n == 10 && streq(d.req[0].prompt, "Climate change"));
    graft_dataset_free(&d);
    free(p);

    /* the corpus's own files load too */
    char *facts = graft_path_join(test_data_dir(), "../../data/facts/edit_stream.json");
    if (facts && graft_path_exists(facts)) {
        CHECK_OK(graft_dataset_load(facts, NULL, 0, &d));
        CHECK(d.n == 2000 && streq(d.format, "counterfact") && d.n > 0 && streq(d.req[0].ground_truth, "French"));
        graft_dataset_free(&d);
    }
    free(facts);
}

/* ------------------------------------------------------------ inline samples */

static void test_samples(void) {
    graft_dataset d;
    const char *p;

    /* counterfact, no case_id: case_id falls back to the 0-based index */
    p = write_tmp("cf.json",
                  "[{\"prompt\": \"A is in\", \"target_new\": \"B\", \"subject\": \"A\", \"ground_truth\": \"C\",\n"
                  "  \"rephrase_prompt\": \"Where is A? In\", \"locality_prompt\": \"D is in\", \"locality_ground_truth\": \"E\"},\n"
                  " {\"case_id\": 42, \"prompt\": \"caf\\u00e9 is\", \"target_new\": \"x\", \"subject\": \"caf\\u00e9\",\n"
                  "  \"ground_truth\": \"y\", \"rephrase_prompt\": [\"r1\", \"r2\"], \"locality_prompt\": \"l\", "
                  "\"locality_ground_truth\": \"m\"}]",
                  -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 2 && streq(d.format, "counterfact"));
    if (d.n == 2) {
        CHECK(d.req[0].case_id == 0 && d.req[1].case_id == 42 && d.req[1].row == 2);
        CHECK(streq(d.req[1].prompt, "caf\xc3\xa9 is") && d.req[1].n_rephrases == 2 &&
              streq(d.req[1].rephrases[1], "r2"));
    }
    graft_dataset_free(&d);

    /* zsre */
    p = write_tmp("zsre.json",
                  "[{\"subject\": \"S\", \"src\": \"Q?\", \"pred\": \"p\", \"rephrase\": \"Q2?\", \"alt\": \"A\", "
                  "\"answers\": [\"T\", \"T2\"], \"loc\": \"nq question: who\", \"loc_ans\": \"me\", \"cond\": \"c\"},"
                  " {\"subject\": \"S\", \"src\": \"Q3?\", \"rephrase\": \"Q4?\", \"alt\": \"\", \"answers\": [\"T\"], "
                  "\"loc\": \"nq question: x\", \"loc_ans\": \"y\"}]",
                  -1);
    CHECK_OK(graft_dataset_load(p, "auto", 0, &d));
    CHECK(d.n == 1 && d.n_dropped == 1 && streq(d.format, "zsre"));
    CHECK(d.n == 1 && streq(d.req[0].ground_truth, "T") && streq(d.req[0].loc_prompts[0], "nq question: who"));
    graft_dataset_free(&d);

    /* hallucination and temporal */
    p = write_tmp("hal.json",
                  "[{\"prompt\": \"P \", \"target_new\": \"T\", \"subject\": \"s\", \"locality_prompt\": \"L\", "
                  "\"locality_ground_truth\": \"\"}]",
                  -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1 && streq(d.format, "hallucination") && d.n_loc_dropped == 1 && d.req[0].n_loc == 0);
    CHECK(d.n == 1 && streq(d.req[0].prompt, "P ")); /* kept verbatim */
    graft_dataset_free(&d);
    p = write_tmp("tmp.json",
                  "[{\"prompt\": \"P\", \"target_new\": \"T\", \"subject\": \"s\", \"ood_rephrase\": \"O\", "
                  "\"locality_prompt\": \"L\", \"locality_ground_truth\": \"M\"}]",
                  -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1 && streq(d.format, "temporal") && d.req[0].n_rephrases == 1 && streq(d.req[0].rephrases[0], "O"));
    graft_dataset_free(&d);

    /* jsonl, with a BOM, a blank line and CRLF line ends; row = line */
    p = write_tmp("s.jsonl",
                  "\xEF\xBB\xBF{\"prompt\": \"p1\", \"target\": \"t1\"}\r\n"
                  "\n"
                  "{\"prompt\": \"p2\", \"target\": \"t2\", \"rephrases\": [\"r\"], \"locality\": [{\"prompt\": \"lp\", "
                  "\"answer\": \"la\"}, {\"prompt\": \"lp2\", \"answer\": \"\"}], \"subject\": \"s\", \"ground_truth\": "
                  "\"g\", \"id\": 7}\r\n"
                  "{\"prompt\": \"p3\", \"target\": \"t3\", \"subject\": null}",
                  -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 3 && streq(d.format, "jsonl"));
    if (d.n == 3) {
        CHECK(d.req[0].row == 1 && d.req[1].row == 3 && d.req[2].row == 4);
        CHECK(d.req[0].case_id == 0 && d.req[1].case_id == 7 && d.req[2].case_id == 2);
        CHECK(d.req[1].n_loc == 1 && streq(d.req[1].loc_answers[0], "la") && d.n_loc_dropped == 1);
        CHECK(streq(d.req[1].ground_truth, "g") && streq(d.req[1].subject, "s") && d.req[2].subject == NULL);
        CHECK(d.req[0].ground_truth == NULL && d.req[0].n_rephrases == 0 && d.req[0].rephrases == NULL);
    }
    graft_dataset_free(&d);
    CHECK_OK(graft_dataset_load(p, "jsonl", 2, &d));
    CHECK(d.n == 2);
    graft_dataset_free(&d);

    /* the same records in a JSON list; and EasyEdit records one per line */
    p = write_tmp("list.json", "[{\"prompt\": \"p\", \"target\": \"t\"}, {\"prompt\": \"q\", \"target\": \"u\"}]\n", -1);
    CHECK_OK(graft_dataset_load(p, "jsonl", 0, &d));
    CHECK(d.n == 2 && d.req[1].row == 2);
    graft_dataset_free(&d);
    p = write_tmp("cf.jsonl",
                  "{\"prompt\": \"A is in\", \"target_new\": \"B\", \"subject\": \"A\", \"ground_truth\": \"C\", "
                  "\"rephrase_prompt\": \"r\", \"locality_prompt\": \"D\", \"locality_ground_truth\": \"E\"}\n",
                  -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1 && streq(d.format, "counterfact"));
    graft_dataset_free(&d);

    /* an empty list is fine when the format is named, not when it must be guessed */
    p = write_tmp("empty.json", " [ ] ", -1);
    CHECK_OK(graft_dataset_load(p, "counterfact", 0, &d));
    CHECK(d.n == 0);
    graft_dataset_free(&d);
    CHECK_FAILS(graft_dataset_load(p, NULL, 0, &d), GRAFT_ERR_FORMAT, "cannot be guessed");

    /* KEEP_EMPTY_TARGET keeps an empty target in any format */
    p = write_tmp("et.jsonl", "{\"prompt\": \"p\", \"target\": \"\"}\n", -1);
    CHECK_OK(graft_dataset_load_ex(p, NULL, 0, GRAFT_DATASET_KEEP_EMPTY_TARGET, &d));
    CHECK(d.n == 1 && streq(d.req[0].target, ""));
    graft_dataset_free(&d);
}

/* ------------------------------------------------------------ malformed input */

/* Load `text` as tmpdir/name and expect a format error whose message has all
 * of the given substrings (file name, row, field ...). */
static void expect_bad(const char *name, const char *text, long len, const char *format, const char *s1,
                       const char *s2, const char *s3) {
    const char *p = write_tmp(name, text, len);
    graft_dataset d;
    graft_clear_error();
    graft_status st = graft_dataset_load(p, format, 0, &d);
    const char *m = graft_last_error();
    bool ok = st == GRAFT_ERR_FORMAT && strstr(m, name) && (!s1 || strstr(m, s1)) && (!s2 || strstr(m, s2)) &&
              (!s3 || strstr(m, s3));
    CHECK_MSG(ok, "%s: got %s: \"%s\" (want '%s' '%s' '%s')", name, graft_status_str(st), m, s1 ? s1 : "",
              s2 ? s2 : "", s3 ? s3 : "");
    CHECK(d.n == 0 && d.req == NULL && d.path == NULL && d.format == NULL);
}

#define CF_REC(prompt, target)                                                                           \
    "{\"prompt\": " prompt ", \"target_new\": " target ", \"subject\": \"A\", \"ground_truth\": \"C\", " \
    "\"rephrase_prompt\": \"r\", \"locality_prompt\": \"D\", \"locality_ground_truth\": \"E\"}"

static void test_malformed(void) {
    /* not JSON: the row the error falls in, the byte offset and the line */
    expect_bad("badjson.json", "[" CF_REC("\"a\"", "\"b\"") ",\n " CF_REC("\"a\"", "\"b\"") ",\n {\"prompt\": \"x\",, }]",
               -1, NULL, "row 3", "byte offset", "line 3");
    expect_bad("truncated.json", "[" CF_REC("\"a\"", "\"b\""), -1, NULL, "not valid JSON", "byte offset", NULL);
    expect_bad("trailing.json", "[" CF_REC("\"a\"", "\"b\"") "] x", -1, NULL, "not valid JSON", "byte offset", NULL);
    expect_bad("badline.jsonl", "{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": \n",
               -1, NULL, "row 3", "not valid JSON", "byte offset");
    expect_bad("twoobj.jsonl", "{\"prompt\": \"p\", \"target\": \"t\"} {\"prompt\": \"q\"}\n", -1, NULL, "row 1",
               "not valid JSON", NULL);
    expect_bad("surrogate.json", "[" CF_REC("\"\\ud800x\"", "\"b\"") "]", -1, NULL, "row 1", "not valid JSON", NULL);
    /* missing field, wrong type, null required field */
    expect_bad("missing.json",
               "[" CF_REC("\"a\"", "\"b\"") ", {\"prompt\": \"a\", \"subject\": \"A\", \"ground_truth\": \"C\", "
               "\"rephrase_prompt\": \"r\", \"locality_prompt\": \"D\", \"locality_ground_truth\": \"E\"}]",
               -1, "counterfact", "row 2", "field 'target_new'", "missing");
    expect_bad("wrongtype.json", "[" CF_REC("\"a\"", "\"b\"") ", " CF_REC("\"a\"", "7") "]", -1, NULL, "row 2",
               "field 'target_new'", "got a number");
    expect_bad("nullprompt.json", "[" CF_REC("null", "\"b\"") "]", -1, NULL, "row 1", "field 'prompt'", "null");
    expect_bad("zsre_answers.json",
               "[{\"subject\": \"S\", \"src\": \"Q?\", \"rephrase\": \"R\", \"alt\": \"A\", \"answers\": [], "
               "\"loc\": \"nq question: x\", \"loc_ans\": \"y\"}]",
               -1, NULL, "row 1", "field 'answers'", "empty list");
    expect_bad("zsre_ans_type.json",
               "[{\"subject\": \"S\", \"src\": \"Q?\", \"rephrase\": \"R\", \"alt\": \"A\", \"answers\": [\"a\", 3], "
               "\"loc\": \"nq question: x\", \"loc_ans\": \"y\"}]",
               -1, NULL, "row 1", "field 'answers[1]'", "got a number");
    expect_bad("reph_list.jsonl", "{\"prompt\": \"p\", \"target\": \"t\", \"rephrases\": [\"ok\", {}]}\n", -1, NULL,
               "row 1", "field 'rephrases[1]'", "got an object");
    expect_bad("loc_obj.jsonl", "{\"prompt\": \"p\", \"target\": \"t\", \"locality\": [\"x\"]}\n", -1, NULL, "row 1",
               "locality[0]", "want an object");
    expect_bad("loc_missing.jsonl", "{\"prompt\": \"p\", \"target\": \"t\", \"locality\": [{\"prompt\": \"x\"}]}\n", -1,
               NULL, "row 1", "field 'locality[0].answer'", "missing");
    expect_bad("id.jsonl", "{\"prompt\": \"p\", \"target\": \"t\", \"id\": \"seven\"}\n", -1, NULL, "row 1",
               "field 'id'", "want an integer");
    expect_bad("caseid.json",
               "[{\"case_id\": 1.5, \"prompt\": \"a\", \"target_new\": \"b\", \"subject\": \"A\", \"ground_truth\": "
               "\"C\", \"rephrase_prompt\": \"r\", \"locality_prompt\": \"D\", \"locality_ground_truth\": \"E\"}]",
               -1, NULL, "row 1", "field 'case_id'", "want an integer");
    /* invalid UTF-8: raw bytes inside a string, reported with the byte */
    expect_bad("badutf8.json", "[" CF_REC("\"ok\"", "\"b\"") ", " CF_REC("\"caf\xc3\"", "\"b\"") "]", -1, NULL, "row 2",
               "field 'prompt'", "invalid UTF-8 at byte 3");
    expect_bad("overlong.jsonl", "{\"prompt\": \"p\", \"target\": \"\xc0\xaf\"}\n", -1, NULL, "row 1", "field 'target'",
               "invalid UTF-8");
    expect_bad("surr8.jsonl", "\n\n{\"prompt\": \"p\", \"target\": \"t\", \"rephrases\": \"\xed\xa0\x80\"}\n", -1, NULL,
               "row 3", "field 'rephrases'", "invalid UTF-8");
    /* empty prompt / target (whitespace-only counts as empty) */
    expect_bad("emptytarget.json", "[" CF_REC("\"a\"", "\"  \"") "]", -1, NULL, "row 1", "field 'target_new'", "empty");
    expect_bad("emptyprompt.jsonl", "{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": \"\", \"target\": \"t\"}\n", -1,
               NULL, "row 2", "field 'prompt'", "empty");
    expect_bad("emptytarget.jsonl", "{\"prompt\": \"p\", \"target\": \"\"}\n", -1, NULL, "row 1", "field 'target'",
               "empty");
    /* NUL characters, raw or escaped */
    expect_bad("nul.jsonl", "{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": \"a\0b\", \"target\": \"t\"}\n", 60,
               NULL, "row 2", "NUL", NULL);
    expect_bad("nulesc.json", "[" CF_REC("\"a\\u0000b\"", "\"b\"") "]", -1, NULL, "row 1", "NUL", NULL);
    /* structure */
    expect_bad("notlist.json", "[1, 2]", -1, "counterfact", "row 1", "want a JSON object", "got a number");
    expect_bad("toplevel.jsonl", "\"just a string\"\n", -1, "jsonl", "row 1", "want a JSON object", NULL);
    expect_bad("unknown.json", "[{\"question\": \"q\", \"answer\": \"a\"}]", -1, NULL, "row 1", "cannot tell",
               "question, answer");
    expect_bad("blank.jsonl", "\n  \n", -1, NULL, "empty", NULL, NULL);
    /* a format named that the records do not follow */
    expect_bad("wrongfmt.json", "[" CF_REC("\"a\"", "\"b\"") "]", -1, "zsre", "row 1", "field 'src'", "missing");

    graft_dataset d;
    CHECK_FAILS(graft_dataset_load("/nonexistent/graft.json", NULL, 0, &d), GRAFT_ERR_IO, "/nonexistent/graft.json");
    const char *p = write_tmp("fmt.json", "[]", -1);
    CHECK_FAILS(graft_dataset_load(p, "squad", 0, &d), GRAFT_ERR_INVALID, "unknown dataset format 'squad'");
    /* a bad row after max_rows is never looked at (JSONL stops reading) */
    p = write_tmp("late.jsonl", "{\"prompt\": \"p\", \"target\": \"t\"}\n{\"prompt\": 5}\n", -1);
    CHECK_OK(graft_dataset_load(p, NULL, 1, &d));
    CHECK(d.n == 1);
    graft_dataset_free(&d);
    CHECK_FAILS(graft_dataset_load(p, NULL, 0, &d), GRAFT_ERR_FORMAT, "row 2: field 'prompt'");
    /* nor in a JSON list, parsed one record at a time (not even a syntax error) */
    p = write_tmp("late.json", "[{\"prompt\": \"p\", \"target\": \"t\"},\n {\"prompt\": 5}, {\"prompt\",, ", -1);
    CHECK_OK(graft_dataset_load(p, NULL, 1, &d));
    CHECK(d.n == 1 && d.req[0].row == 1);
    graft_dataset_free(&d);
    CHECK_FAILS(graft_dataset_load(p, NULL, 2, &d), GRAFT_ERR_FORMAT, "row 2: field 'prompt'");
    CHECK_FAILS(graft_dataset_load(p, NULL, 0, &d), GRAFT_ERR_FORMAT, "row 2: field 'prompt'");
    /* a missing comma after record 1, and a list closed twice: the same messages as a whole-list parse */
    p = write_tmp("nocomma.json", "[{\"prompt\": \"p\", \"target\": \"t\"}\n {\"prompt\": \"q\", \"target\": \"u\"}]", -1);
    CHECK_FAILS(graft_dataset_load(p, NULL, 0, &d), GRAFT_ERR_FORMAT, "row 1: not valid JSON at byte offset 33 (line 2)");
    p = write_tmp("twice.json", "[{\"prompt\": \"p\", \"target\": \"t\"}]]", -1);
    CHECK_FAILS(graft_dataset_load(p, NULL, 0, &d), GRAFT_ERR_FORMAT, "row 1: not valid JSON at byte offset 32 (line 1)");
    /* an escaped backslash before u0000 is not a NUL */
    p = write_tmp("bs.jsonl", "{\"prompt\": \"a\\\\u0000\", \"target\": \"t\"}\n", -1);
    CHECK_OK(graft_dataset_load(p, NULL, 0, &d));
    CHECK(d.n == 1 && streq(d.req[0].prompt, "a\\u0000"));
    graft_dataset_free(&d);
    graft_dataset_free(NULL);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/graft_ds.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_utf8();
    test_real_files();
    test_samples();
    test_malformed();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("test_dataset");
}
