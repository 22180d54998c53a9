/* test_melo.c - the MELO editor: an untrained block is a no-op, prompts
 * outside every radius are bit-identical to the unedited model, the router's
 * add / expand / split rules route to the right block, change records replay
 * bit-exactly (and undo by reset + replay drops a batch's router points),
 * edits stick under greedy generation on stories260K (SentencePiece) and a
 * GPT-2 with the real BPE tokenizer, and the LoRA backward matches finite
 * differences on both architectures. */
#include "edit/editor.h"
#include "edit/eval.h"
#include "edit/melo.h"
#include "test.h"
#include "test_util.h"

#include <unistd.h>


static int routed(graft_editor *e) {
    graft_melo_stats s;
    graft_melo_get_stats(e, &s);
    return s.last_routed;
}

static graft_model *load_stories(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(path, &m));
    return m;
}

/* An untrained block (0 steps: B = 0) changes nothing even where it is
 * routed; a trained one makes its edit stick and leaves far prompts
 * bit-identical. */
static void test_noop_and_locality(graft_model *m) {
    graft_tokenizer *tok = graft_model_tokenizer(m);
    int V = m->cfg.vocab_size;
    graft_eval_item it, far;
    CHECK_OK(graft_encode_pair(tok, "Once upon a time, there was a little girl named", " Tom", &it));
    CHECK_OK(graft_encode_pair(tok, "The sun was hot and the birds sang in the tall green", " trees", &far));
    if (!it.prompt || !far.prompt) return;
    float *base = malloc((size_t)V * sizeof(float)), *with = malloc((size_t)V * sizeof(float));
    graft_edit_tok r = {it.prompt, it.n_prompt, it.target, it.n_target, -1};
    graft_edit_info info;
    graft_blob ch = {0};

    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, "melo", "{\"train\": \"fixed\", \"n_iter\": 0}", &e));
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    CHECK(info.iterations == 0);
    test_last_logits(m, NULL, it.prompt, it.n_prompt, base);
    test_last_logits(m, e, it.prompt, it.n_prompt, with);
    CHECK(routed(e) == 1); /* the block is applied ... */
    CHECK(!memcmp(base, with, (size_t)V * sizeof(float))); /* ... and is a no-op */
    e->ops->free(e);
    graft_blob_free(&ch);

    CHECK(!test_greedy_is(m, NULL, it.prompt, it.n_prompt, it.target, it.n_target));
    CHECK_OK(graft_editor_create(m, "melo", "{\"init_radius\": 0.5}", &e));
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    CHECK_MSG(info.reproduced, "not reproduced after %d steps (loss %.3f -> %.3f)", info.iterations, info.loss_first,
              info.loss_last);
    CHECK(test_greedy_is(m, e, it.prompt, it.n_prompt, it.target, it.n_target));
    test_last_logits(m, e, it.prompt, it.n_prompt, with);
    CHECK(routed(e) == 1);
    test_last_logits(m, NULL, far.prompt, far.n_prompt, base);
    test_last_logits(m, e, far.prompt, far.n_prompt, with);
    CHECK(routed(e) == 0);
    CHECK(!memcmp(base, with, (size_t)V * sizeof(float)));
    /* graft_eval_gen (generation read off a teacher-forced pass where it can)
     * agrees with token-by-token KV-cached generation, whose later steps keep
     * the block the prompt was routed to */
    int gen[16];
    graft_eval_item items[2] = {it, far};
    CHECK_OK(graft_eval_gen(m, e, items, 2, gen));
    CHECK(!memcmp(gen, it.target, (size_t)it.n_target * sizeof(int)));
    e->ops->free(e);
    graft_blob_free(&ch);
    free(base), free(with);
    graft_eval_item_free(&it), graft_eval_item_free(&far);
}

/* The router rules on synthetic queries (init_radius 1): expand moves the
 * centre to the mean, a label conflict splits the radii halfway and forgets
 * the points left outside. */
static void test_router(graft_model *m) {
    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, "melo", "{\"init_radius\": 1.0}", &e));
    if (!e) return;
    graft_melo_stats s;
    graft_melo_get_stats(e, &s);
    int qd = s.query_dim;
    float *qa = calloc((size_t)qd, 4), *qb = calloc((size_t)qd, 4), *qc = calloc((size_t)qd, 4);
    float *qe = calloc((size_t)qd, 4), *mid = calloc((size_t)qd, 4), *farq = calloc((size_t)qd, 4);
    for (int i = 0; i < qd; i++) qa[i] = (float)((i % 5) - 2) * 0.1f;
    memcpy(qb, qa, (size_t)qd * 4), memcpy(qc, qa, (size_t)qd * 4), memcpy(qe, qa, (size_t)qd * 4);
    memcpy(mid, qa, (size_t)qd * 4), memcpy(farq, qa, (size_t)qd * 4);
    qb[1] += 0.5f;  /* same label, 0.5 away: expand */
    mid[1] += 0.25f;
    qc[2] += 1.2f;  /* another label, 1.2258 from the centre: split */
    qe[1] -= 0.2f;  /* another label, 0.45 from the centre: split, both points forgotten */
    farq[3] += 50.0f;
    int X[] = {7, 8}, Y[] = {9}, nX = 2, nY = 1;
    const int *lx[] = {X}, *ly[] = {Y};
    CHECK_OK(graft_melo_router_update(e, qa, lx, &nX, 1, 0));
    CHECK_OK(graft_melo_router_update(e, qb, lx, &nX, 1, 1));
    graft_melo_get_stats(e, &s);
    CHECK(s.n_clusters == 1 && s.n_points == 2);
    CHECK(graft_melo_route(e, qa) == 0 && graft_melo_route(e, qb) == 1);
    CHECK(graft_melo_route(e, farq) == -1);
    CHECK_OK(graft_melo_router_update(e, qc, ly, &nY, 1, 2));
    graft_melo_get_stats(e, &s);
    CHECK(s.n_clusters == 2 && s.n_conflicts == 1 && s.n_forgotten == 0);
    CHECK(graft_melo_route(e, qc) == 2 && graft_melo_route(e, qa) == 0 && graft_melo_route(e, qb) == 1);
    CHECK_OK(graft_melo_router_update(e, qe, ly, &nY, 1, 3));
    graft_melo_get_stats(e, &s);
    CHECK(s.n_clusters == 3 && s.n_conflicts == 2 && s.n_forgotten == 2);
    CHECK(graft_melo_route(e, qe) == 3);
    CHECK(graft_melo_route(e, qa) == 3);    /* the new cluster's centre is nearer now */
    CHECK(graft_melo_route(e, mid) == -1);  /* the old centre: only its dummy point is left */
    CHECK(graft_melo_route(e, qc) == 2);
    e->ops->free(e);
    free(qa), free(qb), free(qc), free(qe), free(mid), free(farq);
}

/* Replay rebuilds the editor bit for bit; undo (reset + replay of the other
 * batches) removes a batch's router points; a re-edit of the same prompt
 * with a new answer routes to the new block. */
static void test_replay_undo(graft_model *m) {
    graft_tokenizer *tok = graft_model_tokenizer(m);
    const char *pr[3][2] = {{"Lily liked to play with her", " ball"},
                            {"The little dog ran to the", " park"},
                            {"Lily liked to play with her", " cat"}};
    graft_eval_item it[3];
    for (int i = 0; i < 3; i++) CHECK_OK(graft_encode_pair(tok, pr[i][0], pr[i][1], &it[i]));
    graft_editor *e = NULL, *f = NULL, *u = NULL;
    const char *opts = "{\"init_radius\": 0.5}";
    CHECK_OK(graft_editor_create(m, "melo", opts, &e));
    graft_blob ch[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        graft_edit_info info;
        graft_edit_tok r = {it[i].prompt, it[i].n_prompt, it[i].target, it[i].n_target, -1};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch[i]));
        CHECK_MSG(info.reproduced, "edit %d not reproduced", i);
    }
    CHECK(test_greedy_is(m, e, it[2].prompt, it[2].n_prompt, it[2].target, it[2].n_target)); /* the re-edit wins */
    CHECK(test_greedy_is(m, e, it[1].prompt, it[1].n_prompt, it[1].target, it[1].n_target));
    CHECK_OK(graft_editor_create(m, "melo", opts, &f));
    for (int i = 0; i < 3; i++) CHECK_OK(f->ops->replay(f, ch[i].data, ch[i].len));
    char pe[64], pf[64];
    snprintf(pe, sizeof pe, "/tmp/graft_melo_e_%d.safetensors", (int)getpid());
    snprintf(pf, sizeof pf, "/tmp/graft_melo_f_%d.safetensors", (int)getpid());
    CHECK_OK(e->ops->export_st(e, pe));
    CHECK_OK(f->ops->export_st(f, pf));
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(graft_read_file(pe, &a, &na));
    CHECK_OK(graft_read_file(pf, &b, &nb));
    CHECK(a && b && na == nb && na > 1000 && !memcmp(a, b, na));
    free(a), free(b);
    unlink(pe), unlink(pf);
    int V = m->cfg.vocab_size;
    float *le = malloc((size_t)V * 4), *lf = malloc((size_t)V * 4);
    test_last_logits(m, e, it[1].prompt, it[1].n_prompt, le);
    test_last_logits(m, f, it[1].prompt, it[1].n_prompt, lf);
    CHECK(!memcmp(le, lf, (size_t)V * 4));

    /* undo the middle batch: reset, replay the other two */
    CHECK_OK(graft_editor_create(m, "melo", opts, &u));
    CHECK_OK(u->ops->replay(u, ch[0].data, ch[0].len));
    CHECK_OK(u->ops->replay(u, ch[2].data, ch[2].len));
    graft_melo_stats s;
    graft_melo_get_stats(u, &s);
    CHECK(s.n_blocks == 2);
    test_last_logits(m, u, it[1].prompt, it[1].n_prompt, le);
    CHECK(routed(u) == 0); /* its point went with it */
    test_last_logits(m, NULL, it[1].prompt, it[1].n_prompt, lf);
    CHECK(!memcmp(le, lf, (size_t)V * 4));
    CHECK(test_greedy_is(m, u, it[2].prompt, it[2].n_prompt, it[2].target, it[2].n_target));
    CHECK_OK(u->ops->reset(u));
    graft_melo_get_stats(u, &s);
    CHECK(s.n_blocks == 0 && s.n_clusters == 0);
    /* a damaged record is an error, not a crash */
    CHECK(u->ops->replay(u, ch[0].data, ch[0].len - 3) != GRAFT_OK);
    CHECK(u->ops->replay(u, ch[0].data, 20) != GRAFT_OK);
    e->ops->free(e), f->ops->free(f), u->ops->free(u);
    for (int i = 0; i < 3; i++) graft_blob_free(&ch[i]), graft_eval_item_free(&it[i]);
    free(le), free(lf);
}

/* Finite differences of the batch loss against graft_melo_loss_grad, on a
 * few entries of A and B in every LoRA layer (the lower layer's gradient
 * passes through the upper layer's LoRA input gradient). */
static void fd_check(graft_model *m, const char *label) {
    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, "melo", "{\"train\": \"fixed\", \"n_iter\": 0, \"blocks\": 4}", &e));
    if (!e) return;
    int V = m->cfg.vocab_size;
    int p1[] = {1, 5 % V, 9 % V, 13 % V, 4 % V}, t1[] = {7 % V, 3 % V}, p2[] = {1, 8 % V, 2 % V}, t2[] = {11 % V};
    graft_edit_tok reqs[2] = {{p1, 5, t1, 2, -1}, {p2, 3, t2, 1, -1}};
    graft_edit_info info;
    graft_blob ch = {0};
    CHECK_OK(e->ops->apply_batch(e, reqs, 2, &info, &ch));
    graft_blob_free(&ch);
    graft_melo_opts o;
    graft_melo_get_opts(e, &o);
    float *gA[GRAFT_MELO_MAX_LORA], *gB[GRAFT_MELO_MAX_LORA];
    int in = 0, k = 0, out = 0;
    uint64_t seed = 99;
    for (int i = 0; i < o.n_lora; i++) {
        float *A, *B;
        CHECK_OK(graft_melo_block(e, 0, i, &A, &B, &in, &k, &out));
        gA[i] = malloc((size_t)in * k * 4), gB[i] = malloc((size_t)k * out * 4);
        /* a trained-looking B, so that A's gradient is not zero */
        for (int j = 0; j < k * out; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            B[j] = ((float)(seed >> 40) / (float)(1 << 24) - 0.5f) * 4e-2f;
        }
    }
    double loss;
    CHECK_OK(graft_melo_loss_grad(e, reqs, 2, 0, &loss, gA, gB));
    int bad = 0, checked = 0;
    for (int i = 0; i < o.n_lora; i++) {
        float *A, *B;
        graft_melo_block(e, 0, i, &A, &B, &in, &k, &out);
        for (int pass = 0; pass < 2; pass++) {
            float *P = pass ? B : A, *G = pass ? gB[i] : gA[i];
            int n = pass ? k * out : in * k;
            double gmax = 0; /* the tolerance scales with the tensor's gradient, not the loss */
            for (int j = 0; j < n; j++) gmax = fabs(G[j]) > gmax ? fabs(G[j]) : gmax;
            for (int t = 0; t < 6; t++) {
                int j = (int)(((long)t * 7919 + 13) % n);
                float keep = P[j], h = pass ? 1e-3f : 1e-2f;
                double lp, lm;
                P[j] = keep + h;
                graft_melo_loss_grad(e, reqs, 2, 0, &lp, NULL, NULL);
                P[j] = keep - h;
                graft_melo_loss_grad(e, reqs, 2, 0, &lm, NULL, NULL);
                P[j] = keep;
                double fd = (lp - lm) / (2.0 * h), an = G[j];
                checked++;
                if (fabs(fd - an) > 3e-2 * fabs(fd) + 1e-2 * gmax) {
                    bad++;
                    fprintf(stderr, "%s: LoRA %d %s[%d]: analytic %.6g vs finite difference %.6g\n", label, i,
                            pass ? "B" : "A", j, an, fd);
                }
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d gradient entries off", label, bad, checked);
    double nonzero = 0;
    for (int j = 0; j < in * k; j++) nonzero += fabs(gA[0][j]);
    CHECK(nonzero > 0);
    for (int i = 0; i < o.n_lora; i++) free(gA[i]), free(gB[i]);
    e->ops->free(e);
}

/* Options and capacity are checked, not silently dropped. */
static void test_options(graft_model *m) {
    graft_editor *e = NULL;
    CHECK(graft_editor_create(m, "melo", "{\"nope\": 1}", &e) != GRAFT_OK && !e);
    CHECK(graft_editor_create(m, "melo", "{\"layer\": 4}", &e) != GRAFT_OK && !e); /* nothing above it */
    CHECK(graft_editor_create(m, "melo", "{\"lora_layers\": [1]}", &e) != GRAFT_OK && !e); /* below the router */
    CHECK_OK(graft_editor_create(m, "melo", "{\"blocks\": 1, \"train\": \"fixed\", \"n_iter\": 1}", &e));
    if (!e) return;
    int p[] = {1, 20, 30}, t[] = {40};
    graft_edit_tok r = {p, 3, t, 1, -1};
    graft_edit_info info;
    graft_blob ch = {0};
    CHECK_OK(e->ops->apply(e, &r, &info, &ch));
    graft_blob_free(&ch);
    CHECK(e->ops->apply(e, &r, &info, &ch) == GRAFT_ERR_RANGE); /* capacity: one block */
    graft_blob_free(&ch);
    char *json = NULL;
    CHECK_OK(graft_editor_opts_json(e, &json));
    CHECK(json && strstr(json, "\"lora_layers\":[3,4]") && strstr(json, "\"blocks\":1"));
    free(json);
    e->ops->free(e);
}

int main(void) {
    graft_set_threads(2);
    graft_model *m = load_stories();
    if (m) {
        test_noop_and_locality(m);
        test_router(m);
        test_replay_undo(m);
        test_options(m);
        fd_check(m, "stories260K (Llama)");
        graft_model_free(m);
    }
    /* GPT-2 with the real BPE tokenizer: a small random model */
    char path[1024];
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
        fd_check(m, "gpt2-tiny (GPT-2)");
        graft_eval_item it;
        CHECK_OK(graft_encode_pair(graft_model_tokenizer(m), "The capital of France is", "Paris", &it));
        graft_editor *e = NULL;
        CHECK_OK(graft_editor_create(m, "melo", "{}", &e));
        if (e && it.prompt) {
            graft_edit_info info;
            graft_blob ch = {0};
            graft_edit_tok r = {it.prompt, it.n_prompt, it.target, it.n_target, -1};
            CHECK_OK(e->ops->apply(e, &r, &info, &ch));
            CHECK_MSG(info.reproduced, "gpt2-bpe: not reproduced (%d steps)", info.iterations);
            CHECK(test_greedy_is(m, e, it.prompt, it.n_prompt, it.target, it.n_target));
            graft_blob_free(&ch);
        }
        if (e) e->ops->free(e);
        graft_eval_item_free(&it);
        graft_model_free(m);
    }
    graft_tokenizer_free(bpe);
    return test_finish("test_melo");
}
