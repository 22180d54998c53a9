/* test_stats.c - graft stats: E[k k^T] of the down-projection inputs equals a
 * direct computation on a tiny corpus; a run interrupted and resumed from its
 * checkpoint writes exactly the file an uninterrupted run writes; max-tokens,
 * layer lists, checkpoint mismatches and the loader's checks. */
#include "edit/stats.h"
#include "engine.h"
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static char *path_in(const char *name) {
    static char buf[8][256];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 256, "%s/%s", dir, name);
    return b;
}

static void write_corpus(const char *path) {
    static const char *const lines[] = {
        "Once upon a time, there was a little girl named Lily. She loved to play in the park.",
        "One day, she saw a big red ball under a tree. She wanted to play with it.",
        "Tom and Sam went to the shop to buy some milk and bread for their mom.",
        "The cat was sad because it could not find its toy. The dog helped the cat look for it.",
        "They played together all day and were very happy. At night they went to sleep.",
    };
    FILE *f = fopen(path, "w");
    for (int rep = 0; rep < 6; rep++)
        for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) fprintf(f, "%s\n", lines[(i + rep) % 5]);
    fclose(f);
}

/* The whole file as F32 tensor bytes, for bitwise comparison of two outputs. */
static int same_tensors(const char *a, const char *b, const char *name) {
    graft_st_archive x, y;
    if (graft_st_open(a, &x) != GRAFT_OK) return 0;
    if (graft_st_open(b, &y) != GRAFT_OK) {
        graft_st_close(&x);
        return 0;
    }
    const graft_st_tensor *tx = graft_st_find(&x, name), *ty = graft_st_find(&y, name);
    int ok = tx && ty && tx->nbytes == ty->nbytes && memcmp(tx->data, ty->data, tx->nbytes) == 0;
    graft_st_close(&x);
    graft_st_close(&y);
    return ok;
}

/* Sum of k k^T over the corpus windows, straight from a train-mode run's
 * saved activations, in double. */
static void direct_mom2(graft_model *m, const char *corpus, int window, int layer, double *out, long *count) {
    graft_tokenizer *tok = graft_model_tokenizer(m);
    char *text = NULL;
    size_t len = 0;
    graft_read_file(corpus, &text, &len);
    int *ids = NULL;
    size_t n = 0;
    graft_tokenize(tok, text, len, &ids, &n);
    free(text);
    int F = m->cfg.d_ff, bos = graft_tokenizer_bos(tok), per = window - 1;
    memset(out, 0, (size_t)F * F * sizeof(double));
    *count = 0;
    graft_run *r = NULL;
    graft_run_create(m, window, 1, window, 1, &r);
    int *w = malloc((size_t)window * sizeof(int));
    for (size_t at = 0; at < n; at += (size_t)per) {
        int k = (int)(n - at < (size_t)per ? n - at : (size_t)per), L = k + 1, last = L - 1;
        w[0] = bos;
        memcpy(w + 1, ids + at, (size_t)k * sizeof(int));
        graft_run_set_batch(r, w, &L, 1, &last, 1);
        graft_run_forward(r);
        const float *act = graft_run_site(r, layer, GRAFT_SITE_MLP_ACT);
        for (int t = 1; t < L; t++)
            for (int i = 0; i < F; i++)
                for (int j = 0; j < F; j++) out[(size_t)i * F + j] += (double)act[(size_t)t * F + i] * act[(size_t)t * F + j];
        *count += k;
    }
    for (size_t i = 0; i < (size_t)F * F; i++) out[i] /= (double)*count;
    graft_run_free(r);
    free(w), free(ids);
}

int main(void) {
    graft_set_threads(2);
    snprintf(dir, sizeof dir, "/tmp/graft_stats_XXXXXX");
    if (!mkdtemp(dir)) TEST_SKIP("no temporary directory");
    char model_path[1024];
    snprintf(model_path, sizeof model_path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(model_path, &m));
    if (!m) return test_finish("test_stats");
    int F = m->cfg.d_ff, layers[] = {1, 3};
    char corpus[256];
    snprintf(corpus, sizeof corpus, "%s", path_in("corpus.txt"));
    write_corpus(corpus);

    /* 1. one run */
    graft_stats_opts o;
    graft_stats_opts_default(&o);
    o.corpus = corpus;
    char one[256];
    snprintf(one, sizeof one, "%s", path_in("one.safetensors"));
    o.out = one;
    o.layers = layers;
    o.n_layers = 2;
    o.window = 48;
    o.progress = 0;
    o.model_name = "stories260K";
    graft_stats_result res;
    CHECK_OK(graft_stats_compute(m, &o, &res));
    CHECK(res.finished && res.windows > 5 && res.tokens > 200);
    CHECK(!graft_path_exists(path_in("one.safetensors.ckpt")));

    /* 2. equal to the direct computation */
    double *direct = malloc((size_t)F * F * sizeof(double)), *loaded = NULL;
    long cnt = 0;
    int64_t count = 0;
    for (int k = 0; k < 2; k++) {
        direct_mom2(m, corpus, 48, layers[k], direct, &cnt);
        CHECK_OK(graft_stats_load(o.out, m, layers[k], &loaded, &count));
        if (!loaded) break;
        CHECK(count == res.tokens && cnt == res.tokens);
        double mx = 0, err = 0;
        int sym = 1;
        for (int i = 0; i < F; i++)
            for (int j = 0; j < F; j++) {
                mx = fmax(mx, fabs(direct[(size_t)i * F + j]));
                err = fmax(err, fabs(direct[(size_t)i * F + j] - loaded[(size_t)i * F + j]));
                sym &= loaded[(size_t)i * F + j] == loaded[(size_t)j * F + i];
            }
        CHECK_MSG(err <= 2e-6 * mx, "layer %d: max |direct - stats| = %g of max %g", layers[k], err, mx);
        CHECK(sym);
        free(loaded);
        loaded = NULL;
    }
    CHECK_FAILS(graft_stats_load(o.out, m, 2, &loaded, &count), GRAFT_ERR_INVALID, "no statistics for layer 2");

    /* 3. interrupted after 3 windows, then resumed (checkpointing after every
     * window on the way): the same file, bit for bit */
    graft_stats_opts o2 = o;
    char two[256];
    snprintf(two, sizeof two, "%s", path_in("two.safetensors"));
    o2.out = two;
    o2.stop_after_windows = 3;
    CHECK_OK(graft_stats_compute(m, &o2, &res));
    CHECK(!res.finished && res.windows == 3 && graft_path_exists(path_in("two.safetensors.ckpt")));
    CHECK(!graft_path_exists(o2.out));
    o2.stop_after_windows = 2;
    o2.resume = 1;
    o2.checkpoint_every_s = 0;
    CHECK_OK(graft_stats_compute(m, &o2, &res));
    CHECK(!res.finished && res.windows == 5 && res.tokens_run > 0);
    o2.stop_after_windows = 0;
    CHECK_OK(graft_stats_compute(m, &o2, &res));
    CHECK(res.finished);
    CHECK(same_tensors(o.out, o2.out, "layer.1.mom2") && same_tensors(o.out, o2.out, "layer.3.mom2"));
    CHECK(!graft_path_exists(path_in("two.safetensors.ckpt")));

    /* a checkpoint made with other settings is refused; --resume without one too */
    graft_stats_opts o3 = o;
    char three[256];
    snprintf(three, sizeof three, "%s", path_in("three.safetensors"));
    o3.out = three;
    o3.stop_after_windows = 1;
    CHECK_OK(graft_stats_compute(m, &o3, &res));
    o3.stop_after_windows = 0;
    o3.resume = 1;
    o3.window = 40;
    CHECK_FAILS(graft_stats_compute(m, &o3, &res), GRAFT_ERR_INVALID, "another model, corpus, window");
    snprintf(three, sizeof three, "%s", path_in("none.safetensors"));
    CHECK_FAILS(graft_stats_compute(m, &o3, &res), GRAFT_ERR_INVALID, "no checkpoint");

    /* 4. max tokens, default layers */
    graft_stats_opts o4 = o;
    char four[256];
    snprintf(four, sizeof four, "%s", path_in("four.safetensors"));
    o4.out = four;
    o4.max_tokens = 100;
    o4.layers = NULL;
    o4.n_layers = 0;
    CHECK_OK(graft_stats_compute(m, &o4, &res));
    CHECK(res.finished && res.tokens == 100);
    CHECK_OK(graft_stats_load(o4.out, m, 2, &loaded, &count)); /* stories260K: round(5/3) = 2, layers 1-3 */
    CHECK(count == 100);
    free(loaded);

    /* 5. layer lists */
    int ly[8], n = 0;
    CHECK_OK(graft_parse_layers("3-5", 12, ly, &n, 8));
    CHECK(n == 3 && ly[0] == 3 && ly[2] == 5);
    CHECK_OK(graft_parse_layers("7,2,4", 12, ly, &n, 8));
    CHECK(n == 3 && ly[0] == 2 && ly[1] == 4 && ly[2] == 7);
    CHECK_OK(graft_parse_layers("all", 5, ly, &n, 8));
    CHECK(n == 5);
    CHECK_FAILS(graft_parse_layers("3-12", 12, ly, &n, 8), GRAFT_ERR_INVALID, "not a range");
    CHECK_FAILS(graft_parse_layers("2,2", 12, ly, &n, 8), GRAFT_ERR_INVALID, "twice");
    CHECK_FAILS(graft_parse_layers("x", 12, ly, &n, 8), GRAFT_ERR_INVALID, "cannot parse");

    /* 6. statistics of another model are refused */
    graft_config c;
    graft_config_preset("llama-tiny", &c);
    graft_model *other = NULL;
    CHECK_OK(graft_model_create_random(&c, 1, 0.02f, &other));
    CHECK_FAILS(graft_stats_load(o.out, other, 1, &loaded, &count), GRAFT_ERR_INVALID, "another model");
    graft_model_free(other);

    free(direct);
    graft_model_free(m);
    const char *names[] = {"corpus.txt", "one.safetensors", "two.safetensors", "three.safetensors.ckpt", "four.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(path_in(names[i]));
    rmdir(dir);
    return test_finish("test_stats");
}
