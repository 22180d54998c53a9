/* test_ft.c - the fine-tuning baselines FT, FT-L and FT+EWC: the L-inf ball
 * holds for every element after many edits, undo (journal: reset + replay)
 * and replay into a fresh model are bit-exact, the EWC gradient matches
 * finite differences and a large lambda moves the weights less, an FT edit
 * on stories260K becomes the greedy continuation, an exported model reloads
 * with identical logits, and bad options / records fail cleanly. */
#include "edit/ft.h"
#include "edit/journal.h"
#include "model/save.h"
#include "test.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static graft_model *tiny_model(void) {
    graft_model *m = test_tiny_gpt2(2, 11);
    CHECK_MSG(m != NULL, "a tiny random GPT-2: %s", graft_last_error());
    return m;
}

/* Edit k of a deterministic stream over the tiny vocabulary. */
static void request(int k, int *p, int *t, graft_edit_tok *r) {
    for (int i = 0; i < 6; i++) p[i] = (k * 7 + i * 5 + 3) % 64;
    t[0] = (k * 11 + 5) % 64;
    t[1] = (k * 13 + 2) % 64;
    *r = (graft_edit_tok){p, 6, t, 2, -1};
}

static graft_editor *make(graft_model *m, const char *method, const char *json) {
    graft_editor *e = NULL;
    CHECK_OK(graft_editor_create(m, method, json, &e));
    return e;
}

/* All weights of a model, concatenated (malloc'ed). */
static float *all_weights(const graft_model *m, size_t *n) {
    *n = graft_param_table_numel(&m->params);
    float *w = malloc(*n * sizeof(float)), *at = w;
    for (int i = 0; i < m->params.n; i++) {
        memcpy(at, m->params.p[i].data, m->params.p[i].numel * sizeof(float));
        at += m->params.p[i].numel;
    }
    return w;
}

static int same_weights(const graft_model *m, const float *w) {
    size_t n;
    float *now = all_weights(m, &n);
    int same = memcmp(now, w, n * sizeof(float)) == 0;
    free(now);
    return same;
}

/* Last-row logits of a sequence. */
static void logits_of(graft_model *m, const int *ids, int n, float *out) {
    graft_run *r = NULL;
    graft_run_create(m, n, n, n, 0, &r);
    graft_run_set_batch(r, ids, &n, 1, NULL, 0);
    graft_run_forward(r);
    memcpy(out, r->logits, (size_t)n * m->cfg.vocab_size * sizeof(float));
    graft_run_free(r);
}

/* Journal an edit the way `graft edit` does. */
static void journal_edit(graft_journal *j, graft_editor *e, int k, const graft_edit_info *info, const graft_blob *ch) {
    graft_journal_entry en = {0};
    en.seq = k;
    en.kind = "edit";
    en.method = e->ops->name;
    en.request = "{}";
    en.info = *info;
    en.change = ch->data;
    en.change_len = ch->len;
    CHECK_OK(graft_journal_append(j, &en));
}

static void journal_meta(graft_journal *j, graft_model *m, graft_editor *e) {
    char *opts = NULL, fp[128];
    CHECK_OK(graft_editor_opts_json(e, &opts));
    graft_model_fingerprint(m, fp, sizeof fp);
    CHECK_OK(graft_journal_set_meta(j, "method", e->ops->name));
    CHECK_OK(graft_journal_set_meta(j, "editor_options", opts));
    CHECK_OK(graft_journal_set_meta(j, "model_fingerprint", fp));
    free(opts);
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* ---------------------------------------------------------------- FT-L */

/* Every element of every trained tensor within linf of the base (or of the
 * pre-edit weights, anchor "edit"). Returns how many sit on the boundary. */
static long check_ball(graft_editor *e, const float *const *anchors, float linf, int *ok) {
    long on_edge = 0;
    *ok = 1;
    for (int i = 0; i < graft_ft_n_tensors(e); i++) {
        const float *base;
        graft_param *p = graft_ft_tensor(e, i, &base);
        const float *a = anchors ? anchors[i] : base;
        for (size_t k = 0; k < p->numel; k++) {
            double d = fabs((double)p->data[k] - (double)a[k]);
            if (d > (double)linf) *ok = 0;
            if (d > 0.999 * linf) on_edge++;
        }
    }
    return on_edge;
}

static void test_ftl_ball(void) {
    graft_model *m = tiny_model();
    if (!m) return;
    const float linf = 2e-3f;
    /* a big learning rate so the clamp binds on many elements */
    graft_editor *e = make(m, "ftl", "{\"layers\": [0, 1], \"modules\": [\"mlp.c_proj\", \"mlp.c_fc\"], \"lr\": 0.01, "
                                    "\"steps\": 10, \"linf\": 0.002, \"stop_loss\": 0}");
    if (!e) return;
    CHECK(graft_ft_n_tensors(e) == 8); /* weight + bias of c_proj and c_fc in two layers */
    int all_ok = 1;
    long edge = 0;
    for (int k = 0; k < 40; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        graft_blob_free(&ch);
        int ok;
        edge = check_ball(e, NULL, linf, &ok);
        all_ok &= ok;
    }
    CHECK_MSG(all_ok, "an FT-L weight left the L-inf ball around the base weights");
    CHECK_MSG(edge > 100, "the clamp never bound (%ld elements on the boundary)", edge);
    e->ops->free(e);

    /* anchor "edit" (the official code): the ball is around each edit's start */
    graft_ft_opts zero;
    memset(&zero, 0, sizeof zero);
    CHECK_FAILS(graft_ft_create(m, &zero, &e), GRAFT_ERR_INVALID, "lr must be > 0");
    e = make(m, "ftl", "{\"layers\": [1], \"lr\": 0.01, \"steps\": 10, \"linf\": 0.002, \"linf_anchor\": \"edit\", "
                       "\"loss\": \"target_new\", \"stop_loss\": 0}");
    if (!e) return;
    int n = graft_ft_n_tensors(e);
    float *before[GRAFT_FT_MAX_LIST];
    all_ok = 1;
    for (int k = 0; k < 10; k++) {
        for (int i = 0; i < n; i++) {
            graft_param *p = graft_ft_tensor(e, i, NULL);
            before[i] = malloc(p->numel * sizeof(float));
            memcpy(before[i], p->data, p->numel * sizeof(float));
        }
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        graft_blob_free(&ch);
        int ok;
        check_ball(e, (const float *const *)before, linf, &ok);
        all_ok &= ok;
        for (int i = 0; i < n; i++) free(before[i]);
    }
    CHECK_MSG(all_ok, "an FT-L (anchor edit) weight moved more than linf in one edit");
    e->ops->free(e);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- undo and replay */

static void test_undo_replay(const char *method, const char *json) {
    graft_model *m = tiny_model();
    if (!m) return;
    size_t nw;
    float *snap[8];
    snap[0] = all_weights(m, &nw);
    char dir[] = "/tmp/graft_ftXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    graft_journal *j = NULL;
    CHECK_OK(graft_journal_open(dir, 1, &j));
    graft_editor *e = make(m, method, json);
    if (!e || !j) return;
    journal_meta(j, m, e);
    graft_blob rec[8];
    memset(rec, 0, sizeof rec);
    int moved = 0;
    for (int k = 0; k < 6; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        CHECK_OK(e->ops->apply(e, &r, &info, &rec[k]));
        CHECK(info.iterations > 0 && info.loss_last < info.loss_first);
        journal_edit(j, e, k, &info, &rec[k]);
        snap[k + 1] = all_weights(m, &nw);
        moved += memcmp(snap[k + 1], snap[k], nw * sizeof(float)) != 0;
    }
    CHECK(moved == 6);

    /* replay into a fresh model: bit-identical weights */
    graft_model *m2 = tiny_model();
    graft_editor *e2 = NULL;
    CHECK_OK(graft_adaptor_open(m2, dir, &e2, NULL));
    CHECK_MSG(same_weights(m2, snap[6]), "%s: replay into a fresh model differs", method);
    CHECK(e2 && e2->n_edits == 6);
    if (e2) e2->ops->free(e2);
    graft_model_free(m2);

    /* undo the last edit: the weights after five edits, bit for bit */
    CHECK_OK(graft_journal_undo(j, e, 6));
    CHECK_MSG(same_weights(m, snap[5]), "%s: undo of the last edit is not bit-exact", method);
    /* undo edit 3: what replaying 1, 2, 4, 5 into a fresh model gives */
    CHECK_OK(graft_journal_undo(j, e, 3));
    m2 = tiny_model();
    e2 = make(m2, method, json);
    int keep[] = {0, 1, 3, 4};
    for (int i = 0; e2 && i < 4; i++) CHECK_OK(e2->ops->replay(e2, rec[keep[i]].data, rec[keep[i]].len));
    float *expect = all_weights(m2, &nw);
    CHECK_MSG(same_weights(m, expect), "%s: undo of a middle edit differs from replaying the others", method);
    CHECK(!same_weights(m, snap[5]) && !same_weights(m, snap[0]));
    free(expect);
    if (e2) e2->ops->free(e2);
    graft_model_free(m2);
    /* reopening the folder replays the same state */
    m2 = tiny_model();
    CHECK_OK(graft_adaptor_open(m2, dir, &e2, NULL));
    float *mine = all_weights(m, &nw);
    CHECK(same_weights(m2, mine));
    free(mine);
    if (e2) e2->ops->free(e2);
    graft_model_free(m2);
    /* undo the rest: the base weights */
    for (int id = 1; id <= 5; id++)
        if (id != 3) CHECK_OK(graft_journal_undo(j, e, id));
    CHECK_MSG(same_weights(m, snap[0]), "%s: undoing every edit does not restore the base weights", method);

    /* corrupt records fail cleanly and leave the weights alone */
    CHECK_FAILS(e->ops->replay(e, rec[0].data, rec[0].len - 5), GRAFT_ERR_FORMAT, "truncated");
    CHECK_FAILS(e->ops->replay(e, rec[0].data, 7), GRAFT_ERR_FORMAT, "truncated");
    CHECK(same_weights(m, snap[0]));

    for (int k = 0; k < 6; k++) graft_blob_free(&rec[k]);
    for (int k = 0; k <= 6; k++) free(snap[k]);
    e->ops->free(e);
    graft_journal_close(j);
    rm_rf(dir);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- sparse gradients */

/* The editor binds gradients only for its tensors and stops the passes at
 * the lowest of them: its gradient must equal the full model's. */
static void test_sparse_grads(void) {
    graft_model *m = tiny_model();
    if (!m) return;
    int p[6], t[2];
    graft_edit_tok r;
    request(4, p, t, &r);
    /* the reference: every gradient, full backward, target_new layout */
    int ids[7], rows[2];
    memcpy(ids, p, sizeof p);
    ids[6] = t[0];
    rows[0] = 5, rows[1] = 6;
    int T = 7;
    graft_run *run = NULL;
    graft_grads g;
    CHECK_OK(graft_run_create(m, T, 2, T, 1, &run));
    CHECK_OK(graft_grads_create(m, &g));
    CHECK_OK(graft_run_set_batch(run, ids, &T, 1, rows, 2));
    CHECK_OK(graft_run_forward(run));
    graft_grads_zero(&g);
    CHECK_OK(graft_run_backward(run, t, NULL, &g, -1, GRAFT_SITE_BLOCK_IN));
    const char *sel[] = {
        "{\"params\": [\"transformer.h.0.mlp.c_proj.weight\"]}",
        "{\"params\": [\"transformer.h.1.mlp.c_fc.bias\", \"transformer.h.0.ln_2.weight\"]}",
        "{\"params\": [\"transformer.h.1.attn.c_attn.weight\", \"transformer.h.1.ln_1.bias\"]}",
        "{\"params\": [\"transformer.wpe.weight\", \"transformer.h.1.mlp.c_proj.bias\"]}",
        "{\"params\": [\"transformer.ln_f.weight\", \"transformer.ln_f.bias\"]}",
        "{\"params\": [\"transformer.wte.weight\"]}",
    };
    for (size_t s = 0; s < sizeof sel / sizeof sel[0]; s++) {
        graft_editor *e = make(m, "ft", sel[s]);
        if (!e) continue;
        float *mine[GRAFT_FT_MAX_LIST];
        int n = graft_ft_n_tensors(e);
        for (int i = 0; i < n; i++) mine[i] = malloc(graft_ft_tensor(e, i, NULL)->numel * sizeof(float));
        double obj;
        CHECK_OK(graft_ft_debug_objective(e, &r, &obj, mine));
        for (int i = 0; i < n; i++) {
            graft_param *pp = graft_ft_tensor(e, i, NULL);
            const graft_param *ref = graft_param_find(&g.t, pp->name);
            double worst = 0, scale = 0;
            for (size_t k = 0; ref && k < pp->numel; k++) {
                worst = fmax(worst, fabs((double)mine[i][k] - ref->data[k]));
                scale = fmax(scale, fabs((double)ref->data[k]));
            }
            CHECK_MSG(ref && scale > 0 && worst <= 1e-5 * scale, "%s: gradient off by %.3g (scale %.3g)", pp->name, worst,
                      scale);
            free(mine[i]);
        }
        e->ops->free(e);
    }
    graft_grads_free(&g);
    graft_run_free(run);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- resume */

/* A stream stopped after 5 edits and resumed from its journal in a new
 * process (fresh model, replay) ends bit-identical to one that never
 * stopped: EWC rebuilds its Fisher window from the replayed records. */
static void test_resume(const char *method, const char *json) {
    graft_model *a = tiny_model(), *b = tiny_model();
    if (!a || !b) return;
    graft_editor *ea = make(a, method, json);
    char dir[] = "/tmp/graft_ftXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    graft_journal *j = NULL;
    CHECK_OK(graft_journal_open(dir, 1, &j));
    graft_editor *eb = make(b, method, json);
    if (!ea || !eb || !j) return;
    journal_meta(j, b, eb);
    for (int k = 0; k < 8; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(ea->ops->apply(ea, &r, &info, &ch));
        graft_blob_free(&ch);
        if (k < 5) {
            CHECK_OK(eb->ops->apply(eb, &r, &info, &ch));
            journal_edit(j, eb, k, &info, &ch);
            graft_blob_free(&ch);
        }
    }
    eb->ops->free(eb);
    graft_journal_close(j);
    graft_model_free(b);
    b = tiny_model();
    CHECK_OK(graft_adaptor_open(b, dir, &eb, NULL));
    for (int k = 5; eb && k < 8; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(eb->ops->apply(eb, &r, &info, &ch));
        graft_blob_free(&ch);
    }
    size_t nw;
    float *wa = all_weights(a, &nw);
    CHECK_MSG(same_weights(b, wa), "%s: a resumed stream differs from an uninterrupted one", method);
    free(wa);
    if (eb) eb->ops->free(eb);
    ea->ops->free(ea);
    graft_model_free(a);
    graft_model_free(b);
    rm_rf(dir);
}

/* ---------------------------------------------------------------- EWC */

static double urand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static void test_ewc_penalty_fd(void) {
    enum { N = 64 };
    float th[N], st[N], F[N], g[N];
    uint64_t s = 7;
    for (int i = 0; i < N; i++) {
        th[i] = (float)(urand(&s) * 2 - 1);
        st[i] = (float)(urand(&s) * 2 - 1);
        F[i] = (float)urand(&s);
        g[i] = 0;
    }
    double lambda = 3.0;
    graft_ewc_penalty(th, st, F, N, lambda, g);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        float keep = th[i], h = 1e-2f;
        th[i] = keep + h;
        double up = graft_ewc_penalty(th, st, F, N, lambda, NULL);
        float hu = th[i] - keep;
        th[i] = keep - h;
        double dn = graft_ewc_penalty(th, st, F, N, lambda, NULL);
        float hd = keep - th[i];
        th[i] = keep;
        double fd = (up - dn) / ((double)hu + (double)hd);
        double err = fabs(fd - g[i]) / (1e-6 + fabs(g[i]));
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst < 1e-4, "EWC penalty gradient vs finite differences: worst relative error %.3g", worst);
}

/* The whole objective (loss + penalty) of the EWC editor against finite
 * differences on the elements with the largest Fisher, after the weights
 * moved away from the anchor so that the penalty term is large. */
static void test_ewc_objective_fd(void) {
    graft_model *m = tiny_model();
    if (!m) return;
    graft_editor *e = make(m, "ewc", "{\"layers\": [1], \"lr\": 0.01, \"steps\": 5, \"ewc_lambda\": 2000, \"ewc_window\": 4}");
    if (!e) return;
    for (int k = 0; k < 5; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        graft_blob_free(&ch);
    }
    CHECK_OK(graft_ft_debug_anchor(e));
    int n = graft_ft_n_tensors(e);
    uint64_t s = 99;
    float *grads[GRAFT_FT_MAX_LIST];
    for (int i = 0; i < n; i++) {
        graft_param *p = graft_ft_tensor(e, i, NULL);
        for (size_t k = 0; k < p->numel; k++) p->data[k] += (float)((urand(&s) * 2 - 1) * 0.02);
        grads[i] = malloc(p->numel * sizeof(float));
    }
    int pr[6], tg[2];
    graft_edit_tok r;
    request(9, pr, tg, &r);
    double obj0;
    graft_editor *plain = NULL;
    CHECK_OK(graft_ft_debug_objective(e, &r, &obj0, grads));
    /* the same gradient without the penalty, to know the penalty mattered */
    graft_ft_opts po;
    graft_ft_get_opts(e, &po);
    po.variant = GRAFT_FT_PLAIN;
    CHECK_OK(graft_ft_create(m, &po, &plain));
    float *g_plain = malloc(graft_ft_tensor(e, 0, NULL)->numel * sizeof(float));
    float *gp[GRAFT_FT_MAX_LIST] = {g_plain};
    double obj_plain;
    CHECK_OK(graft_ft_debug_objective(plain, &r, &obj_plain, gp));
    CHECK_MSG(obj0 > obj_plain + 1e-3, "the penalty is negligible (%.6g vs %.6g)", obj0, obj_plain);

    /* the 8 elements of tensor 0 where the penalty's share of the gradient is largest */
    graft_param *p0 = graft_ft_tensor(e, 0, NULL);
    int pick[8];
    for (int q = 0; q < 8; q++) {
        pick[q] = -1;
        double best = -1;
        for (size_t k = 0; k < p0->numel; k++) {
            int used = 0;
            for (int z = 0; z < q; z++) used |= pick[z] == (int)k;
            double share = fabs(grads[0][k] - g_plain[k]);
            if (!used && share > best) best = share, pick[q] = (int)k;
        }
    }
    int bad = 0, penalty_dominant = 0;
    for (int q = 0; q < 8; q++) {
        int k = pick[q];
        float keep = p0->data[k], h = 2e-3f;
        double up, dn;
        p0->data[k] = keep + h;
        float hu = p0->data[k] - keep;
        CHECK_OK(graft_ft_debug_objective(e, &r, &up, NULL));
        p0->data[k] = keep - h;
        float hd = keep - p0->data[k];
        CHECK_OK(graft_ft_debug_objective(e, &r, &dn, NULL));
        p0->data[k] = keep;
        double fd = (up - dn) / ((double)hu + (double)hd), an = grads[0][k];
        penalty_dominant += fabs(an - g_plain[k]) > fabs(g_plain[k]);
        if (fabs(fd - an) > 2e-3 + 0.02 * fabs(an)) {
            bad++;
            fprintf(stderr, "EWC objective element %d: analytic %.6g, finite differences %.6g (loss part %.6g)\n", k, an,
                    fd, g_plain[k]);
        }
    }
    CHECK(bad == 0);
    CHECK_MSG(penalty_dominant >= 4, "the checked elements are not penalty-dominated (%d of 8)", penalty_dominant);
    for (int i = 0; i < n; i++) free(grads[i]);
    free(g_plain);
    plain->ops->free(plain);
    e->ops->free(e);
    graft_model_free(m);
}

/* |W - W_base|_F over the trained tensors. */
static double drift(graft_editor *e) {
    double s = 0;
    for (int i = 0; i < graft_ft_n_tensors(e); i++) {
        const float *b;
        graft_param *p = graft_ft_tensor(e, i, &b);
        for (size_t k = 0; k < p->numel; k++) s += ((double)p->data[k] - b[k]) * ((double)p->data[k] - b[k]);
    }
    return sqrt(s);
}

static void test_ewc_moves_less(void) {
    double d[2];
    const char *json[2] = {"{\"layers\": [0, 1], \"lr\": 0.005, \"steps\": 15, \"stop_loss\": 0}",
                           "{\"layers\": [0, 1], \"lr\": 0.005, \"steps\": 15, \"stop_loss\": 0, "
                           "\"ewc_lambda\": 1e6, \"ewc_window\": 5}"};
    const char *method[2] = {"ft", "ewc"};
    for (int v = 0; v < 2; v++) {
        graft_model *m = tiny_model();
        if (!m) return;
        graft_editor *e = make(m, method[v], json[v]);
        if (!e) return;
        double first = 0;
        for (int k = 0; k < 8; k++) {
            int p[6], t[2];
            graft_edit_tok r;
            request(k, p, t, &r);
            graft_edit_info info;
            graft_blob ch = {0};
            CHECK_OK(e->ops->apply(e, &r, &info, &ch));
            graft_blob_free(&ch);
            if (k == 0) first = drift(e);
        }
        d[v] = drift(e) - first; /* the first edit has no history: both are plain FT there */
        e->ops->free(e);
        graft_model_free(m);
    }
    printf("weight drift over edits 2-8: ft %.4g, ewc(lambda 1e6) %.4g\n", d[0], d[1]);
    CHECK_MSG(d[1] < 0.8 * d[0], "EWC with a large lambda should move the weights less (ft %.4g, ewc %.4g)", d[0], d[1]);
}

/* ---------------------------------------------------------------- export */

static void test_export(void) {
    graft_model *m = tiny_model();
    if (!m) return;
    char dir[] = "/tmp/graft_ftXXXXXX", out[] = "/tmp/graft_ftoutXXXXXX";
    CHECK(mkdtemp(dir) != NULL && mkdtemp(out) != NULL);
    graft_journal *j = NULL;
    CHECK_OK(graft_journal_open(dir, 1, &j));
    graft_editor *e = make(m, "ftl", "{\"layers\": [0, 1], \"modules\": [\"mlp\", \"attn.c_attn\"], \"lr\": 0.01, "
                                    "\"steps\": 6, \"linf\": 0.01}");
    if (!e || !j) return;
    journal_meta(j, m, e);
    for (int k = 0; k < 3; k++) {
        int p[6], t[2];
        graft_edit_tok r;
        request(k, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        journal_edit(j, e, k, &info, &ch);
        graft_blob_free(&ch);
    }
    e->ops->free(e);
    graft_journal_close(j);
    graft_model_free(m);

    /* what `graft export` does: replay into the base model, save it */
    m = tiny_model();
    CHECK_OK(graft_adaptor_open(m, dir, &e, NULL));
    CHECK(e && e->ops->reset != NULL); /* a weight editor: mergeable */
    CHECK_OK(graft_model_save_hf(m, out, GRAFT_F32));
    graft_model *back = NULL;
    CHECK_OK(graft_model_load(out, &back));
    int ids[] = {1, 5, 9, 33, 2, 60, 7, 7, 21, 4};
    int V = m->cfg.vocab_size, n = 10;
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    float *base = malloc((size_t)n * V * sizeof(float));
    logits_of(m, ids, n, a);
    if (back) logits_of(back, ids, n, b);
    CHECK_MSG(back && memcmp(a, b, (size_t)n * V * sizeof(float)) == 0, "exported F32 model: logits differ after reload");
    graft_model *orig = tiny_model();
    logits_of(orig, ids, n, base);
    CHECK_MSG(memcmp(a, base, (size_t)n * V * sizeof(float)) != 0, "the export does not carry the edits");
    graft_model_free(orig);
    graft_model_free(back);
    /* BF16: loads, and the logits stay close */
    char out16[] = "/tmp/graft_ftbfXXXXXX";
    CHECK(mkdtemp(out16) != NULL);
    CHECK_OK(graft_model_save_hf(m, out16, GRAFT_BF16));
    back = NULL;
    CHECK_OK(graft_model_load(out16, &back));
    if (back) {
        logits_of(back, ids, n, b);
        double worst = 0;
        for (int i = 0; i < n * V; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
        CHECK_MSG(worst < 0.2, "BF16 export: logits off by %.3g", worst);
    }
    graft_model_free(back);
    free(a), free(b), free(base);
    if (e) e->ops->free(e);
    graft_model_free(m);
    rm_rf(dir), rm_rf(out), rm_rf(out16);
}

/* ---------------------------------------------------------------- options */

static void test_options(void) {
    graft_model *m = tiny_model();
    if (!m) return;
    graft_editor *e = NULL;
    /* defaults for GPT-2: layer 0 mlp.c_proj (weight and bias) */
    e = make(m, "ftl", NULL);
    if (e) {
        CHECK(graft_ft_n_tensors(e) == 2);
        CHECK(!strcmp(graft_ft_tensor(e, 0, NULL)->name, "transformer.h.0.mlp.c_proj.weight"));
        CHECK(!strcmp(graft_ft_tensor(e, 1, NULL)->name, "transformer.h.0.mlp.c_proj.bias"));
        char *js = NULL, *js2 = NULL;
        CHECK_OK(graft_editor_opts_json(e, &js));
        CHECK(js && strstr(js, "\"linf\"") && strstr(js, "prompt_last") && strstr(js, "\"layers\":[0]"));
        /* the canonical JSON rebuilds the same editor */
        graft_editor *e2 = make(m, "ftl", js);
        if (e2) CHECK_OK(graft_editor_opts_json(e2, &js2));
        CHECK(js && js2 && !strcmp(js, js2));
        free(js), free(js2);
        if (e2) e2->ops->free(e2);
        e->ops->free(e);
    }
    e = make(m, "ft", "{\"params\": [\"transformer.h.1.attn.c_attn.weight\", \"transformer.ln_f.weight\"]}");
    if (e) {
        CHECK(graft_ft_n_tensors(e) == 2);
        char *js = NULL;
        CHECK_OK(graft_editor_opts_json(e, &js));
        CHECK(js && strstr(js, "\"params\"") && !strstr(js, "\"layers\""));
        free(js);
        /* an edit through attention and the final norm works too */
        int p[6], t[2];
        graft_edit_tok r;
        request(1, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        CHECK(info.loss_last < info.loss_first);
        graft_blob_free(&ch);
        e->ops->free(e);
    }
    /* embeddings (tied head) train with the full backward */
    e = make(m, "ft", "{\"params\": [\"transformer.wte.weight\"], \"lr\": 0.01, \"steps\": 5, \"stop_loss\": 0}");
    if (e) {
        int p[6], t[2];
        graft_edit_tok r;
        request(2, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(e->ops->apply(e, &r, &info, &ch));
        CHECK(info.iterations == 5 && info.loss_last < info.loss_first);
        graft_blob_free(&ch);
        CHECK_OK(e->ops->reset(e));
        e->ops->free(e);
    }
    /* the shared --layers flag gives a string */
    e = make(m, "ft", "{\"layers\": \"0-1\", \"modules\": [\"mlp.c_fc\"]}");
    if (e) {
        CHECK(graft_ft_n_tensors(e) == 4 && !strcmp(graft_ft_tensor(e, 2, NULL)->name, "transformer.h.1.mlp.c_fc.weight"));
        e->ops->free(e);
    }
    graft_editor *x = NULL;
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"layers\": \"1-0\"}", &x), GRAFT_ERR_INVALID, "'layers' has a bad value");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"params\": [\"nope.weight\"]}", &x), GRAFT_ERR_INVALID, "no parameter 'nope.weight'");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"layers\": [5]}", &x), GRAFT_ERR_INVALID, "layer 5 outside");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"modules\": [\"mlp.bogus\"]}", &x), GRAFT_ERR_INVALID, "matches no parameter");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"linf\": 0.1}", &x), GRAFT_ERR_INVALID, "an ftl option");
    CHECK_FAILS(graft_editor_create(m, "ftl", "{\"linf\": 0}", &x), GRAFT_ERR_INVALID, "linf");
    CHECK_FAILS(graft_editor_create(m, "ewc", "{\"ewc_window\": 0}", &x), GRAFT_ERR_INVALID, "ewc_window");
    CHECK_FAILS(graft_editor_create(m, "ftl", "{\"loss\": \"sideways\"}", &x), GRAFT_ERR_INVALID, "'loss' has a bad value");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"params\": [\"transformer.ln_f.weight\"], \"layers\": [0]}", &x),
                GRAFT_ERR_INVALID, "either params or layers");
    CHECK_FAILS(graft_editor_create(m, "ft", "{\"modules\": [\"mlp\", \"mlp.c_fc\"]}", &x), GRAFT_ERR_INVALID,
                "selected twice");

    /* a record of one method does not replay into another */
    graft_editor *a = make(m, "ft", NULL), *b = make(m, "ftl", NULL);
    if (a && b) {
        int p[6], t[2];
        graft_edit_tok r;
        request(3, p, t, &r);
        graft_edit_info info;
        graft_blob ch = {0};
        CHECK_OK(a->ops->apply(a, &r, &info, &ch));
        CHECK_FAILS(b->ops->replay(b, ch.data, ch.len), GRAFT_ERR_FORMAT, "written by 'ft'");
        /* the state export: the delta under the parameter names */
        char st_path[] = "/tmp/graft_ftstXXXXXX";
        int fd = mkstemp(st_path);
        close(fd);
        CHECK_OK(a->ops->export_st(a, st_path));
        graft_st_archive ar;
        CHECK_OK(graft_st_open(st_path, &ar));
        const graft_st_tensor *d = graft_st_find(&ar, "transformer.h.0.mlp.c_proj.weight");
        CHECK(d && d->ndim == 2 && d->shape[0] == m->cfg.d_ff && d->shape[1] == m->cfg.d_model);
        graft_st_close(&ar);
        unlink(st_path);
        graft_blob_free(&ch);
        CHECK_OK(a->ops->reset(a));
    }
    if (a) a->ops->free(a);
    if (b) b->ops->free(b);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- stories260K */

static void test_stories(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.bin", test_data_dir());
    graft_model *m = NULL;
    CHECK_OK(graft_model_load(path, &m));
    if (!m) return;
    graft_tokenizer *tok = graft_model_tokenizer(m);
    CHECK(tok != NULL);
    if (!tok) return;
    int p1[64], t1[16], p2[64], t2[16];
    int np1 = test_encode(tok, "Once upon a time, there was a little girl named", 1, p1);
    int nt1 = test_encode(tok, "Tom", 0, t1);
    int np2 = test_encode(tok, "The dog liked to eat", 1, p2);
    int nt2 = test_encode(tok, "ball", 0, t2);
    CHECK(!test_greedy_is(m, NULL, p1, np1, t1, nt1) && !test_greedy_is(m, NULL, p2, np2, t2, nt2));
    size_t nw;
    float *base = all_weights(m, &nw);

    /* plain FT with the Llama defaults (layer 3 of 5, mlp.down_proj) */
    graft_editor *e = make(m, "ft", NULL);
    if (!e) return;
    CHECK(graft_ft_n_tensors(e) == 1 && !strcmp(graft_ft_tensor(e, 0, NULL)->name, "model.layers.3.mlp.down_proj.weight"));
    graft_edit_info info;
    graft_blob c1 = {0}, c2 = {0};
    graft_edit_tok r1 = {p1, np1, t1, nt1, -1}, r2 = {p2, np2, t2, nt2, -1};
    CHECK_OK(e->ops->apply(e, &r1, &info, &c1));
    printf("stories260K ft: %d steps, loss %.4f -> %.4f, reproduced %d\n", info.iterations, info.loss_first,
           info.loss_last, info.reproduced);
    CHECK(info.reproduced && info.loss_last < info.loss_first);
    CHECK_MSG(test_greedy_is(m, NULL, p1, np1, t1, nt1), "after the FT edit the target is not the greedy continuation");
    CHECK_OK(e->ops->apply(e, &r2, &info, &c2));
    CHECK(info.reproduced && test_greedy_is(m, NULL, p2, np2, t2, nt2));
    /* replay on a fresh copy of the checkpoint: bit-identical */
    graft_model *m2 = NULL;
    CHECK_OK(graft_model_load(path, &m2));
    graft_editor *e2 = m2 ? make(m2, "ft", NULL) : NULL;
    if (e2) {
        CHECK_OK(e2->ops->replay(e2, c1.data, c1.len));
        CHECK_OK(e2->ops->replay(e2, c2.data, c2.len));
        float *now = all_weights(m, &nw);
        CHECK(same_weights(m2, now));
        free(now);
        e2->ops->free(e2);
    }
    graft_model_free(m2);
    CHECK_OK(e->ops->reset(e));
    CHECK(same_weights(m, base));
    e->ops->free(e);

    /* FT-L (prompt_last loss) with a ball wide enough for this small model */
    e = make(m, "ftl", "{\"linf\": 0.05, \"lr\": 0.005, \"steps\": 40}");
    if (e) {
        graft_blob c = {0};
        CHECK_OK(e->ops->apply(e, &r1, &info, &c));
        printf("stories260K ftl: %d steps, prompt_last loss %.4f -> %.4f, reproduced %d\n", info.iterations,
               info.loss_first, info.loss_last, info.reproduced);
        CHECK(info.loss_last < info.loss_first);
        CHECK(test_greedy_is(m, NULL, p1, np1, t1, nt1));
        int ok;
        check_ball(e, NULL, 0.05f, &ok);
        CHECK(ok);
        graft_blob_free(&c);
        CHECK_OK(e->ops->reset(e));
        e->ops->free(e);
    }
    CHECK(same_weights(m, base));
    free(base);
    graft_blob_free(&c1), graft_blob_free(&c2);
    graft_model_free(m);
}

int main(void) {
    graft_set_threads(2);
    test_options();
    test_sparse_grads();
    test_ftl_ball();
    test_undo_replay("ft", "{\"layers\": [0, 1], \"modules\": [\"mlp\"], \"lr\": 0.01, \"steps\": 8}");
    test_undo_replay("ftl", "{\"layers\": [1], \"lr\": 0.01, \"steps\": 8, \"linf\": 0.003}");
    test_undo_replay("ewc", "{\"layers\": [1], \"lr\": 0.01, \"steps\": 8, \"ewc_lambda\": 100, \"ewc_window\": 3}");
    test_resume("ewc", "{\"layers\": [1], \"lr\": 0.01, \"steps\": 6, \"ewc_lambda\": 1000, \"ewc_window\": 3}");
    test_resume("ftl", "{\"layers\": [0], \"lr\": 0.01, \"steps\": 6, \"linf\": 0.004, \"linf_anchor\": \"edit\"}");
    test_ewc_penalty_fd();
    test_ewc_objective_fd();
    test_ewc_moves_less();
    test_export();
    test_stories();
    return test_finish("test_ft");
}
