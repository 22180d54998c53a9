/* pkgconfig_edit.c - a program written against the installed graft.h only,
 * built by tests/cli_install.sh with `pkg-config --cflags --libs graft`: it
 * loads a model, tokenises, scores and generates, then edits it through a
 * GRACE session, undoes the edit, and reopens and saves the run folder.
 *
 * usage: pkgconfig_edit MODEL RUN_DIR SAVE_DIR   (exit 0 when every check holds)
 */
#include <graft.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "pkgconfig_edit:%d: %s: ", __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            failures++;                                                           \
        }                                                                         \
    } while (0)

/* A call that must succeed: on failure print graft's message and stop. */
#define OK(call)                                                                                       \
    do {                                                                                               \
        graft_status st_ = (call);                                                                     \
        if (st_ != GRAFT_OK) {                                                                         \
            fprintf(stderr, "pkgconfig_edit:%d: %s: %s: %s\n", __LINE__, #call, graft_status_str(st_), \
                    graft_last_error());                                                               \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

static char *greedy(graft_model *m, graft_session *s, const char *prompt) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = 6;
    char *text = NULL;
    OK(graft_generate_text(m, s, prompt, &o, &text, NULL));
    return text;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pkgconfig_edit MODEL RUN_DIR SAVE_DIR\n");
        return 2;
    }
    const char *prompt = "Tom had a big red", *target = " kite";
    printf("libgraft %s (header %d.%d.%d), GEMM %s\n", graft_version(), GRAFT_VERSION_MAJOR, GRAFT_VERSION_MINOR,
           GRAFT_VERSION_PATCH, graft_gemm_backend());

    graft_model *m = NULL;
    OK(graft_model_load(argv[1], &m));
    graft_model_info info;
    graft_model_get_info(m, &info);
    printf("model: %s, %d layers, %lld parameters\n", info.arch_name, info.n_layer, (long long)info.n_params);

    int *ids = NULL;
    size_t n = 0;
    OK(graft_tokenize(graft_model_tokenizer(m), prompt, strlen(prompt), &ids, &n));
    CHECK(n >= 3, "'%s' is %zu tokens", prompt, n);
    graft_free(ids);
    double nll = 0;
    size_t scored = 0;
    OK(graft_score_text(m, "Once upon a time, there was a little girl named Lily.", &nll, &scored));
    CHECK(scored > 5 && nll > 0 && nll < 10, "score: %zu tokens, nll %g", scored, nll);

    char *before = greedy(m, NULL, prompt);
    printf("before: %s|%s\n", prompt, before);
    CHECK(strncmp(before, target, strlen(target)) != 0, "the model already says '%s'", target);

    /* errors come back as a status and a message naming what is wrong */
    graft_session *bad = NULL;
    CHECK(graft_session_open(m, "no-such-method", NULL, NULL, &bad) == GRAFT_ERR_UNSUPPORTED && !bad,
          "an unknown method was accepted");
    CHECK(strstr(graft_last_error(), "no-such-method") != NULL, "message: %s", graft_last_error());
    CHECK(graft_session_open(m, "grace", "{\"no_such_option\": 1}", NULL, &bad) == GRAFT_ERR_INVALID,
          "an unknown option was accepted");

    graft_session *s = NULL;
    OK(graft_session_open(m, "grace", "{\"layer\": 1}", argv[2], &s));
    char *opts = NULL;
    OK(graft_session_options(s, &opts));
    CHECK(strstr(opts, "\"layer\":1") != NULL, "options: %s", opts);
    graft_free(opts);
    CHECK(!graft_session_edits_weights(s), "GRACE is an activation editor");

    graft_edit_result r;
    OK(graft_session_edit(s, prompt, target, NULL, &r));
    printf("edit %lld: reproduced %d, %d iterations, %.3f s, loss %.3f -> %.3f\n", (long long)r.id, r.reproduced,
           r.iterations, r.seconds, r.loss_before, r.loss_after);
    CHECK(r.reproduced && r.loss_after < r.loss_before, "the edit did not take");
    char *after = greedy(m, s, prompt);
    printf("after:  %s|%s\n", prompt, after);
    CHECK(!strncmp(after, target, strlen(target)), "generation after the edit: '%s'", after);
    char *plain = greedy(m, NULL, prompt);
    CHECK(!strcmp(plain, before), "GRACE changed the model itself: '%s'", plain);

    const char *prompts[2] = {prompt, "Once upon a time, there was a little"};
    const char *targets[2] = {target, " girl"};
    graft_eval_result ev[2];
    OK(graft_evaluate(m, s, prompts, targets, 2, ev));
    CHECK(ev[0].gen_match == 1 && ev[0].tf_acc == 1.0, "edit success: gen %d tf %g", ev[0].gen_match, ev[0].tf_acc);
    int *pred = NULL;
    size_t np = 0;
    OK(graft_predict(m, s, prompt, target, &pred, &np));
    CHECK(np == (size_t)ev[0].n_target, "predict: %zu tokens", np);
    graft_free(pred);

    /* undo: the model speaks as before */
    OK(graft_session_undo(s, r.id));
    CHECK(graft_session_live_edits(s) == 0, "live edits %lld", (long long)graft_session_live_edits(s));
    char *undone = greedy(m, s, prompt);
    printf("undone: %s|%s\n", prompt, undone);
    CHECK(!strcmp(undone, before), "after undo: '%s', before: '%s'", undone, before);
    CHECK(graft_session_undo(s, r.id) != GRAFT_OK, "a second undo of edit %lld succeeded", (long long)r.id);

    /* edit again, then reopen the run folder: the journal replays it */
    OK(graft_session_edit(s, prompt, target, NULL, &r));
    graft_session_free(s);
    OK(graft_session_open(m, NULL, NULL, argv[2], &s));
    CHECK(!strcmp(graft_session_method(s), "grace") && graft_session_live_edits(s) == 1, "reopened: %s, %lld edits",
          graft_session_method(s), (long long)graft_session_live_edits(s));
    char *replayed = greedy(m, s, prompt);
    CHECK(!strcmp(replayed, after), "after reopening: '%s'", replayed);
    /* an activation editor saves as an adaptor folder (a journal copy) */
    OK(graft_session_save(s, argv[3], NULL));
    graft_session_free(s);
    OK(graft_session_open(m, "grace", NULL, argv[3], &s));
    char *saved = greedy(m, s, prompt);
    CHECK(!strcmp(saved, after), "from the saved folder: '%s'", saved);
    graft_session_free(s);

    graft_free(before), graft_free(after), graft_free(plain), graft_free(undone), graft_free(replayed);
    graft_free(saved);
    graft_model_free(m);
    if (failures) {
        fprintf(stderr, "pkgconfig_edit: %d check(s) failed\n", failures);
        return 1;
    }
    printf("pkgconfig_edit: all checks passed\n");
    return 0;
}
