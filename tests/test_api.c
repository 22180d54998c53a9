/* test_api.c - the public editing API (graft_session_*, graft_generate_text,
 * graft_evaluate, graft_predict, graft_encode_prompt, graft_score_text) on
 * stories260K: what the installed-tree program of tests/cli_install.sh does
 * not reach: a weight editor's edit, undo and save as an HF folder, the
 * evaluation numbers, and every refused input with its message. Uses only
 * graft.h (plus the harness), like a program outside the tree. */
#include "graft.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *prompt = "Tom had a big red", *target = " kite";

static char *greedy(graft_model *m, graft_session *s, const char *p) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = 6;
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(graft_generate_text(m, s, p, &o, &text, &len));
    CHECK(text && strlen(text) == len);
    return text ? text : strdup("");
}

static int exists(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_text(graft_model *m) {
    int *ids = NULL;
    size_t n = 0;
    CHECK_OK(graft_encode_prompt(m, prompt, &ids, &n));
    /* llama2.c: BOS first, as the CLI encodes prompts */
    CHECK(n > 1 && ids && ids[0] == graft_tokenizer_bos(graft_model_tokenizer(m)));
    graft_free(ids);
    CHECK_OK(graft_encode_prompt(m, "", &ids, &n));
    CHECK(n == 1);
    graft_free(ids);
    double nll = 0;
    size_t scored = 0;
    CHECK_OK(graft_score_text(m, "Lily went to the park.", &nll, &scored));
    CHECK(scored >= 4 && nll > 0);
    CHECK_FAILS(graft_score_text(m, "", &nll, &scored), GRAFT_ERR_INVALID, "at least two");
    CHECK_FAILS(graft_encode_prompt(m, NULL, &ids, &n), GRAFT_ERR_INVALID, "prompt");
}

static void test_refusals(graft_model *m, graft_model *other, const char *tmp) {
    graft_session *s = NULL;
    CHECK_FAILS(graft_session_open(m, NULL, NULL, NULL, &s), GRAFT_ERR_INVALID, "method");
    CHECK_FAILS(graft_session_open(m, "rome2", NULL, NULL, &s), GRAFT_ERR_UNSUPPORTED, "rome2");
    CHECK_FAILS(graft_session_open(m, "grace", "[1]", NULL, &s), GRAFT_ERR_INVALID, "JSON object");
    CHECK_FAILS(graft_session_open(m, "grace", "{\"eps_init\": \"big\"}", NULL, &s), GRAFT_ERR_INVALID, "eps_init");
    CHECK(s == NULL);
    CHECK_OK(graft_session_open(m, "grace", "{\"layer\": 1}", NULL, &s));
    if (!s) return;
    CHECK_FAILS(graft_session_edit(s, "", target, NULL, NULL), GRAFT_ERR_INVALID, "prompt");
    CHECK_FAILS(graft_session_edit(s, prompt, NULL, NULL, NULL), GRAFT_ERR_INVALID, "target");
    /* longer than the 512-token context */
    size_t big = 4000;
    char *longp = malloc(big + 1);
    for (size_t i = 0; i < big; i++) longp[i] = i % 4 == 3 ? ' ' : 'a' + (char)(i % 7);
    longp[big] = 0;
    CHECK_FAILS(graft_session_edit(s, longp, target, NULL, NULL), GRAFT_ERR_RANGE, "context");
    free(longp);
    CHECK_FAILS(graft_session_undo(s, 99), GRAFT_ERR_RANGE, "99");
    CHECK(graft_session_live_edits(s) == 0);
    /* a session belongs to its model */
    char *text = NULL;
    CHECK_FAILS(graft_generate_text(other, s, prompt, NULL, &text, NULL), GRAFT_ERR_INVALID, "another model");
    const char *p1[1] = {prompt}, *t1[1] = {target};
    graft_eval_result r;
    CHECK_FAILS(graft_evaluate(other, s, p1, t1, 1, &r), GRAFT_ERR_INVALID, "another model");
    graft_session_free(s);

    /* a reopened folder: its options are fixed, its method must match */
    char run[1024];
    snprintf(run, sizeof run, "%s/run", tmp);
    CHECK_OK(graft_session_open(m, "grace", "{\"layer\": 1}", run, &s));
    graft_session_free(s);
    s = NULL;
    CHECK_FAILS(graft_session_open(m, "grace", "{\"layer\": 2}", run, &s), GRAFT_ERR_INVALID, "pass no options");
    CHECK_FAILS(graft_session_open(m, "melo", NULL, run, &s), GRAFT_ERR_INVALID, "does not match");
    CHECK(s == NULL);
}

static void test_activation(graft_model *m, const char *tmp) {
    char *before = greedy(m, NULL, prompt);
    graft_session *s = NULL;
    CHECK_OK(graft_session_open(m, "grace", "{\"layer\": 1}", NULL, &s));
    if (!s) return;
    CHECK(!graft_session_edits_weights(s) && !strcmp(graft_session_method(s), "grace"));
    const char *prompts[3] = {prompt, "Lily had a pet", "Once upon a time, there was a little"};
    const char *targets[3] = {target, " frog", " girl"};
    graft_eval_result pre[3], post[3];
    CHECK_OK(graft_evaluate(m, s, prompts, targets, 3, pre));
    CHECK(pre[0].gen_match == 0 && pre[0].tf_acc < 1 && pre[0].n_target >= 1);
    CHECK(pre[2].gen_match == 1 && pre[2].tf_acc == 1.0); /* what the model says anyway */
    int *loc0 = NULL, *loc1 = NULL;
    size_t nl0 = 0, nl1 = 0;
    CHECK_OK(graft_predict(m, s, prompts[2], " girl named Lily", &loc0, &nl0));
    graft_edit_result r1, r2;
    CHECK_OK(graft_session_edit(s, prompt, target, NULL, &r1));
    CHECK_OK(graft_session_edit(s, "Lily had a pet", " frog", "Lily", &r2));
    CHECK(r1.reproduced && r2.reproduced && r2.id > r1.id && r1.iterations > 0 && r1.seconds > 0);
    CHECK(graft_session_live_edits(s) == 2);
    CHECK_OK(graft_evaluate(m, s, prompts, targets, 3, post));
    CHECK(post[0].gen_match && post[1].gen_match && post[2].gen_match && post[0].tf_acc == 1.0);
    CHECK_OK(graft_predict(m, s, prompts[2], " girl named Lily", &loc1, &nl1));
    CHECK(nl0 == nl1 && nl0 >= 3 && !memcmp(loc0, loc1, nl0 * sizeof(int))); /* locality kept */
    graft_free(loc0), graft_free(loc1);
    /* the model alone is untouched by an activation editor */
    graft_eval_result plain[1];
    CHECK_OK(graft_evaluate(m, NULL, prompts, targets, 1, plain));
    CHECK(plain[0].gen_match == 0);
    CHECK_OK(graft_session_undo(s, r1.id));
    CHECK_FAILS(graft_session_undo(s, r1.id), GRAFT_ERR_INVALID, "already undone");
    char *undone = greedy(m, s, prompt);
    CHECK_MSG(!strcmp(undone, before), "after undo: '%s', before '%s'", undone, before);
    CHECK(graft_session_live_edits(s) == 1);
    /* save: a journal copy that reopens with the one live edit */
    char saved[1024];
    snprintf(saved, sizeof saved, "%s/adaptor", tmp);
    CHECK_OK(graft_session_save(s, saved, NULL));
    CHECK_FAILS(graft_session_save(s, saved, NULL), GRAFT_ERR_INVALID, "already holds");
    graft_session_free(s);
    CHECK_OK(graft_session_open(m, NULL, NULL, saved, &s));
    if (s) {
        CHECK(graft_session_live_edits(s) == 1);
        CHECK_OK(graft_evaluate(m, s, prompts, targets, 2, post));
        CHECK(!post[0].gen_match && post[1].gen_match);
        CHECK_OK(graft_session_save(s, saved, NULL)); /* its own folder: already saved */
        graft_session_free(s);
    }
    free(before), free(undone);
}

static void test_weights(graft_model *m, const char *tmp) {
    char *before = greedy(m, NULL, prompt);
    graft_session *s = NULL;
    CHECK_OK(graft_session_open(m, "ft", NULL, NULL, &s));
    if (!s) return;
    CHECK(graft_session_edits_weights(s));
    char *opts = NULL;
    CHECK_OK(graft_session_options(s, &opts));
    CHECK(opts && strstr(opts, "\"lr\""));
    graft_free(opts);
    graft_edit_result r;
    CHECK_OK(graft_session_edit(s, prompt, target, NULL, &r));
    CHECK(r.reproduced && r.loss_after < r.loss_before);
    char *edited = greedy(m, NULL, prompt); /* the weights themselves */
    CHECK_MSG(!strncmp(edited, target, strlen(target)), "edited: '%s'", edited);
    char out[1024];
    snprintf(out, sizeof out, "%s/hf", tmp);
    CHECK_FAILS(graft_session_save(s, out, "f8"), GRAFT_ERR_INVALID, "dtype");
    CHECK_OK(graft_session_save(s, out, "f32"));
    CHECK(exists(out, "config.json") && exists(out, "model.safetensors") && exists(out, "graft_export.json"));
    CHECK_FAILS(graft_session_save(s, out, NULL), GRAFT_ERR_INVALID, "already holds a model");
    graft_model *m2 = NULL;
    CHECK_OK(graft_model_load(out, &m2));
    if (m2) {
        char *reloaded = greedy(m2, NULL, prompt);
        CHECK_MSG(!strcmp(reloaded, edited), "reloaded: '%s', edited '%s'", reloaded, edited);
        free(reloaded);
        graft_model_free(m2);
    }
    CHECK_OK(graft_session_undo(s, r.id));
    char *undone = greedy(m, NULL, prompt);
    CHECK_MSG(!strcmp(undone, before), "after undo: '%s', before '%s'", undone, before);
    graft_session_free(s);
    free(before), free(edited), free(undone);
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    if (access(path, R_OK)) TEST_SKIP("%s is missing", path);
    graft_model *m = NULL, *other = NULL;
    CHECK_OK(graft_model_load(path, &m));
    CHECK_OK(graft_model_load(path, &other));
    if (!m || !other) return test_finish("test_api");
    char tmp[] = "/tmp/graft_test_api.XXXXXX";
    if (!mkdtemp(tmp)) TEST_SKIP("cannot create a temporary folder");
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", GRAFT_VERSION_MAJOR, GRAFT_VERSION_MINOR, GRAFT_VERSION_PATCH);
    CHECK(!strcmp(graft_version(), want));
    /* a session without a folder journals into a temporary one of its own and
     * removes it when freed */
    char scratch[1100];
    snprintf(scratch, sizeof scratch, "%s/scratch", tmp);
    mkdir(scratch, 0700);
    setenv("TMPDIR", scratch, 1);
    graft_session *s = NULL;
    CHECK_OK(graft_session_open(m, "grace", NULL, NULL, &s));
    CHECK(s && graft_session_edit(s, prompt, target, NULL, NULL) == GRAFT_OK);
    graft_session_free(s);
    CHECK_MSG(rmdir(scratch) == 0, "%s is not empty after graft_session_free", scratch);
    unsetenv("TMPDIR");
    test_text(m);
    test_refusals(m, other, tmp);
    test_activation(m, tmp);
    test_weights(m, tmp);
    graft_model_free(m);
    graft_model_free(other);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "test_api: could not remove %s\n", tmp);
    return test_finish("test_api");
}
