/* test_grace.c - the GRACE editor on the real stories260K model (Llama) and a
 * tiny random GPT-2: edits stick under greedy generation, prompts outside
 * every radius are bit-identical to the unedited model, the split and expand
 * rules, change-record replay (save/load) and undo. */
#include "edit/editor.h"
#include "edit/eval.h"
#include "test.h"
#include "test_util.h"

#include <unistd.h>

static graft_tokenizer *tok;

static int encode(const char *text, int bos, int *ids) { return test_encode(tok, text, bos, ids); }


/* The GRACE query of a prompt: the key-site row of its last token. */
static void query_of(graft_model *m, graft_editor *e, const int *ids, int n, float *q) {
    graft_grace_stats s;
    graft_grace_get_stats(e, &s);
    graft_site ks, vs;
    graft_grace_sites(&m->cfg, &ks, &vs);
    graft_run *r = NULL;
    graft_run_create(m, n, 1, n, 1, &r);
    int last = n - 1;
    graft_run_set_batch(r, ids, &n, 1, &last, 1);
    graft_run_forward(r);
    memcpy(q, graft_run_site(r, s.layer, ks) + (size_t)(n - 1) * s.key_dim, (size_t)s.key_dim * sizeof(float));
    graft_run_free(r);
}

static float dist(const float *a, const float *b, int n) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += (double)(a[i] - b[i]) * (a[i] - b[i]);
    return (float)sqrt(acc);
}

static void test_stories(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(path, &m));
    if (!m) return;
    tok = graft_model_tokenizer(m);
    CHECK(tok != NULL);
    if (!tok) return;
    int V = m->cfg.vocab_size;
    graft_editor *e = NULL;
    graft_grace_opts o;
    graft_grace_opts_default(&o);
    /* stories260K has 5 layers: edit at 1, so that later target tokens see
     * the replaced row through four attention layers */
    o.layer = 1;
    CHECK_OK(graft_grace_create(m, &o, &e));

    int p1[64], t1[16], p2[64], t2[16], far[64];
    int np1 = encode("Once upon a time, there was a little girl named", 1, p1);
    int nt1 = encode("Tom", 0, t1); /* the dummy-prefix space makes it " Tom" */
    int np2 = encode("The dog liked to eat", 1, p2);
    int nt2 = encode("ball", 0, t2);
    int nf = encode("Tom and Sam went to the big park to play with a ball", 1, far);
    CHECK(np1 > 2 && nt1 >= 1 && np2 > 2 && nt2 >= 1);
    CHECK(!test_greedy_is(m, NULL, p1, np1, t1, nt1)); /* the model does not say it before */

    float *base_far = malloc((size_t)V * sizeof(float)), *now = malloc((size_t)V * sizeof(float));
    test_last_logits(m, NULL, far, nf, base_far);

    graft_edit_info info;
    graft_blob c1 = {0}, c2 = {0};
    graft_edit_tok r1 = {p1, np1, t1, nt1, -1}, r2 = {p2, np2, t2, nt2, -1};
    CHECK_OK(e->ops->apply(e, &r1, &info, &c1));
    CHECK_MSG(info.reproduced && !strcmp(info.action, "add"), "edit 1: reproduced %d, action %s, %d iterations, loss %.4f -> %.4f (target %d tokens)",
              info.reproduced, info.action, info.iterations, info.loss_first, info.loss_last, nt1);
    CHECK(info.loss_last < info.loss_first);
    CHECK_MSG(test_greedy_is(m, e, p1, np1, t1, nt1), "greedy generation does not give the edited target");
    CHECK_OK(e->ops->apply(e, &r2, &info, &c2));
    CHECK(info.reproduced);
    CHECK(test_greedy_is(m, e, p1, np1, t1, nt1) && test_greedy_is(m, e, p2, np2, t2, nt2)); /* both stick */

    /* outside every radius: bit-identical to the unedited model */
    test_last_logits(m, e, far, nf, now);
    graft_grace_stats s;
    graft_grace_get_stats(e, &s);
    CHECK(s.last_hits == 0 && s.n_keys == 2);
    CHECK_MSG(memcmp(base_far, now, (size_t)V * sizeof(float)) == 0, "logits outside the radius changed");

    /* replay into a fresh editor: the same codebook, bit for bit */
    graft_editor *e2 = NULL;
    CHECK_OK(graft_grace_create(m, &o, &e2));
    CHECK_OK(e2->ops->replay(e2, c1.data, c1.len));
    CHECK_OK(e2->ops->replay(e2, c2.data, c2.len));
    for (int i = 0; i < 2; i++) {
        const float *k1, *v1, *k2, *v2;
        const int *l1, *l2;
        float eps1, eps2;
        int n1, n2, d1, d2;
        CHECK_OK(graft_grace_row(e, i, &k1, &v1, &eps1, &l1, &n1, &d1));
        CHECK_OK(graft_grace_row(e2, i, &k2, &v2, &eps2, &l2, &n2, &d2));
        CHECK(memcmp(k1, k2, (size_t)s.key_dim * 4) == 0 && memcmp(v1, v2, (size_t)s.value_dim * 4) == 0);
        CHECK(eps1 == eps2 && n1 == n2 && memcmp(l1, l2, (size_t)n1 * sizeof(int)) == 0 && d1 == d2);
    }
    CHECK(test_greedy_is(m, e2, p1, np1, t1, nt1));
    /* a truncated record is an error, not a crash */
    graft_editor *e3 = NULL;
    CHECK_OK(graft_grace_create(m, &o, &e3));
    CHECK_FAILS(e3->ops->replay(e3, c1.data, c1.len - 3), GRAFT_ERR_FORMAT, "truncated");
    e3->ops->free(e3);

    /* export */
    char st_path[] = "/tmp/graft_grace_XXXXXX";
    int fd = mkstemp(st_path);
    close(fd);
    CHECK_OK(e->ops->export_st(e, st_path));
    graft_st_archive a;
    CHECK_OK(graft_st_open(st_path, &a));
    const graft_st_tensor *keys = graft_st_find(&a, "keys");
    CHECK(keys && keys->ndim == 2 && keys->shape[0] == 2 && keys->shape[1] == s.key_dim);
    graft_st_close(&a);
    unlink(st_path);

    /* undo both: the unedited model again, bit for bit */
    CHECK_OK(e->ops->revert(e, c2.data, c2.len));
    CHECK(!test_greedy_is(m, e, p2, np2, t2, nt2) && test_greedy_is(m, e, p1, np1, t1, nt1));
    CHECK_OK(e->ops->revert(e, c1.data, c1.len));
    test_last_logits(m, e, p1, np1, now);
    float *base1 = malloc((size_t)V * sizeof(float));
    test_last_logits(m, NULL, p1, np1, base1);
    CHECK_MSG(memcmp(base1, now, (size_t)V * sizeof(float)) == 0, "undo did not restore the unedited logits");
    graft_grace_get_stats(e, &s);
    CHECK(s.n_keys == 0 && s.n_rows == 2);

    free(base1), free(base_far), free(now);
    graft_blob_free(&c1), graft_blob_free(&c2);
    e->ops->free(e);
    e2->ops->free(e2);
    graft_model_free(m);
}

/* Split and expand on a tiny random GPT-2 (keys at c_fc's input). */
static void test_rules(void) {
    graft_config c;
    CHECK_OK(graft_config_preset("gpt2-tiny", &c));
    c.vocab_size = 64;
    c.n_layer = 2;
    graft_model *m = NULL;
    CHECK_OK(graft_model_create_random(&c, 3, 0.2f, &m));
    if (!m) return;
    int pa[] = {5, 9, 11, 3}, pb[] = {5, 9, 11, 4}, ta[] = {7, 8}, tb[] = {17, 18};
    graft_grace_opts o;
    graft_grace_opts_default(&o);
    o.layer = 1;
    o.n_iter = 20;
    graft_editor *probe = NULL;
    CHECK_OK(graft_grace_create(m, &o, &probe));
    graft_grace_stats s;
    graft_grace_get_stats(probe, &s);
    float *qa = malloc((size_t)s.key_dim * 4), *qb = malloc((size_t)s.key_dim * 4);
    query_of(m, probe, pa, 4, qa);
    query_of(m, probe, pb, 4, qb);
    float d = dist(qa, qb, s.key_dim);
    CHECK(d > 0);
    probe->ops->free(probe);

    /* split: b falls within eps_init + eps_a of a, with another label */
    o.eps_init = d; /* d <= eps_init + eps_a = 2d */
    graft_editor *e = NULL;
    CHECK_OK(graft_grace_create(m, &o, &e));
    graft_edit_info info;
    graft_blob ch = {0};
    graft_edit_tok ra = {pa, 4, ta, 2, -1}, rb = {pb, 4, tb, 2, -1};
    CHECK_OK(e->ops->apply(e, &ra, &info, &ch));
    graft_blob_free(&ch);
    CHECK_OK(e->ops->apply(e, &rb, &info, &ch));
    graft_blob_free(&ch);
    CHECK(!strcmp(info.action, "split"));
    const float *k, *v;
    const int *l;
    float eps0, eps1;
    int nl, del;
    graft_grace_row(e, 0, &k, &v, &eps0, &l, &nl, &del);
    graft_grace_row(e, 1, &k, &v, &eps1, &l, &nl, &del);
    CHECK_NEAR(eps1, d / 2, 1e-5 * d);
    CHECK_NEAR(eps0, d / 2 - 1e-5f, 1e-5 * d);
    e->ops->free(e);

    /* expand (coverage): same label, eps_a < d <= eps_init + eps_a */
    o.eps_init = 0.75f * d;
    CHECK_OK(graft_grace_create(m, &o, &e));
    graft_edit_tok rb_same = {pb, 4, ta, 2, -1};
    CHECK_OK(e->ops->apply(e, &ra, &info, &ch));
    graft_blob_free(&ch);
    CHECK_OK(e->ops->apply(e, &rb_same, &info, &ch));
    graft_blob_free(&ch);
    CHECK(!strcmp(info.action, "expand"));
    graft_grace_get_stats(e, &s);
    CHECK(s.n_keys == 1);
    graft_grace_row(e, 0, &k, &v, &eps0, &l, &nl, &del);
    CHECK_NEAR(eps0, d, 1e-4 * d);
    CHECK(memcmp(k, qa, (size_t)s.key_dim * 4) == 0); /* coverage keeps the key */
    e->ops->free(e);

    /* expand (moving average): the key moves halfway to the query */
    o.expand = GRACE_EXPAND_MOVING_AVERAGE;
    CHECK_OK(graft_grace_create(m, &o, &e));
    CHECK_OK(e->ops->apply(e, &ra, &info, &ch));
    graft_blob_free(&ch);
    CHECK_OK(e->ops->apply(e, &rb_same, &info, &ch));
    graft_blob_free(&ch);
    graft_grace_row(e, 0, &k, &v, &eps0, &l, &nl, &del);
    int mid_ok = 1;
    for (int i = 0; i < s.key_dim; i++) mid_ok &= fabsf(k[i] - (0.5f * qa[i] + 0.5f * qb[i])) <= 1e-6f;
    CHECK(mid_ok);
    e->ops->free(e);

    /* a new key beyond eps_init + eps of the nearest */
    o.eps_init = 0.4f * d;
    CHECK_OK(graft_grace_create(m, &o, &e));
    CHECK_OK(e->ops->apply(e, &ra, &info, &ch));
    graft_blob_free(&ch);
    CHECK_OK(e->ops->apply(e, &rb, &info, &ch));
    graft_blob_free(&ch);
    CHECK(!strcmp(info.action, "add"));
    graft_grace_get_stats(e, &s);
    CHECK(s.n_keys == 2);
    e->ops->free(e);
    free(qa), free(qb);
    graft_model_free(m);
}

/* Issue 9's edits on real tokenizers: the target tokenised in context
 * (graft_encode_pair), success-driven training until greedy generation gives
 * it, the paper's fixed loop, and a failure reported as one. */
static void edit_sticks(graft_model *m, const char *prompt, const char *target, const char *label) {
    graft_eval_item it;
    CHECK_OK(graft_encode_pair(graft_model_tokenizer(m), prompt, target, &it));
    if (!it.prompt) return;
    CHECK(!test_greedy_is(m, NULL, it.prompt, it.n_prompt, it.target, it.n_target)); /* not said before */
    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, "grace", "{}", &e));
    graft_edit_info info;
    graft_blob ch = {0};
    graft_edit_tok r = {it.prompt, it.n_prompt, it.target, it.n_target, -1};
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    CHECK_MSG(info.reproduced, "%s: '%s' -> '%s' not reproduced (%d steps, loss %.3f -> %.3f)", label, prompt, target,
              info.iterations, info.loss_first, info.loss_last);
    CHECK_MSG(test_greedy_is(m, e, it.prompt, it.n_prompt, it.target, it.n_target), "%s: greedy generation misses '%s'",
              label, target);
    /* evaluation reads generation off a teacher-forced pass where it may: it
     * must say what token-by-token generation says, hit or miss */
    {
        int other[4] = {it.target[0], it.target[0], it.target[0], it.target[0]};
        graft_eval_item items[3] = {it, {it.prompt, it.n_prompt, other, it.n_target < 4 ? it.n_target : 4},
                                    {it.prompt, it.n_prompt - 1, it.target, it.n_target}};
        int total = 0;
        for (int i = 0; i < 3; i++) total += items[i].n_target;
        int *fast = malloc((size_t)total * sizeof(int)), at = 0, same = 1;
        CHECK_OK(graft_eval_gen(m, e, items, 3, fast));
        for (int i = 0; i < 3; i++) {
            graft_gen_opts go;
            graft_gen_opts_default(&go);
            go.max_new_tokens = items[i].n_target;
            go.stop_at_eos = 0;
            int *out = NULL;
            size_t n = 0;
            CHECK_OK(graft_editor_generate(e, m, items[i].prompt, (size_t)items[i].n_prompt, &go, NULL, NULL, &out, &n));
            same &= n == (size_t)items[i].n_target && !memcmp(out, fast + at, n * sizeof(int));
            at += items[i].n_target;
            free(out);
        }
        CHECK_MSG(same, "%s: graft_eval_gen differs from token-by-token generation", label);
        free(fast);
    }
    e->ops->free(e);
    graft_blob_free(&ch);

    /* the official loop: constant-rate Adam for n_iter steps, no early stop */
    CHECK_OK(graft_editor_create(m, "grace", "{\"train\": \"fixed\", \"early_stop\": false, \"n_iter\": 7, \"init\": \"cold\"}", &e));
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    CHECK(info.iterations == 7);
    e->ops->free(e);
    graft_blob_free(&ch);

    /* no training from a random value: not reproduced, and said so */
    CHECK_OK(graft_editor_create(m, "grace", "{\"max_iter\": 0, \"init\": \"cold\"}", &e));
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    CHECK(info.iterations == 0 && !info.reproduced);
    CHECK(!test_greedy_is(m, e, it.prompt, it.n_prompt, it.target, it.n_target));
    e->ops->free(e);
    graft_blob_free(&ch);
    graft_eval_item_free(&it);
}

static void test_real_tokenizers(void) {
    char path[1024];
    /* SentencePiece: " kite" alone carries a dummy-prefix piece that never
     * follows "red" in text; in context it does not */
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(path, &m));
    if (m) {
        edit_sticks(m, "Tom had a big red", " kite", "stories260K");
        edit_sticks(m, "Every morning Lily ate", " pancakes with honey", "stories260K");
        graft_model_free(m);
    }
    /* GPT-2 BPE: a small random GPT-2 with the real 50,257-entry tokenizer */
    snprintf(path, sizeof path, "%s/gpt2-tokenizer", test_data_dir());
    graft_tokenizer *bpe = NULL;
    CHECK_OK(graft_tokenizer_load(path, &bpe));
    graft_config c;
    CHECK_OK(graft_config_preset("gpt2-tiny", &c));
    c.vocab_size = 50257;
    c.n_layer = 4;
    m = NULL;
    if (bpe) CHECK_OK(graft_model_create_random(&c, 11, 0.2f, &m));
    if (m) {
        graft_model_set_tokenizer(m, bpe);
        bpe = NULL;
        /* one BPE token, written without its space: " Paris" in context. (A
         * random 64-wide model's attention carries too little for longer
         * targets; stories260K and the fact model cover those.) */
        edit_sticks(m, "The capital of France is", "Paris", "gpt2-bpe");
        graft_model_free(m);
    }
    graft_tokenizer_free(bpe);
}

int main(void) {
    graft_set_threads(2);
    test_stories();
    test_rules();
    test_real_tokenizers();
    return test_finish("test_grace");
}
