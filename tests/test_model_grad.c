/* test_model_grad.c - whole-model checks on tiny random GPT-2 and Llama
 * models: finite differences against the backward pass for parameters and
 * for activations at hook sites, and the editor paths (forward from a site,
 * backward stopping at a site, hooks that replace activations). */
#include "engine.h"
#include "test.h"

/* A tiny batch: two packed sequences, logits for a subset of rows. */
#define NSEQ 2
static const int lens[NSEQ] = {7, 5};
static int ids[12], out_rows[6], targets[6];

static void make_batch(int V) {
    uint64_t s = 12345;
    for (int i = 0; i < 12; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int)((s >> 33) % (uint64_t)V);
    }
    const int rows[6] = {1, 3, 6, 7, 9, 11};
    for (int i = 0; i < 6; i++) {
        out_rows[i] = rows[i];
        targets[i] = (ids[(rows[i] * 7 + 3) % 12] + i) % V;
    }
    targets[2] = -1; /* an ignored row */
}

static double loss_of(graft_run *r) {
    double loss = 0;
    graft_run_forward(r);
    graft_run_loss(r, targets, NULL, &loss, NULL);
    return loss;
}

/* Finite differences on a few elements of every parameter. */
static void fd_params(graft_model *m, const char *label) {
    graft_run *r = NULL;
    CHECK_OK(graft_run_create(m, 12, 6, 7, 1, &r));
    CHECK_OK(graft_run_set_batch(r, ids, lens, NSEQ, out_rows, 6));
    graft_grads g;
    CHECK_OK(graft_grads_create(m, &g));
    loss_of(r);
    CHECK_OK(graft_run_backward(r, targets, NULL, &g, -1, GRAFT_SITE_BLOCK_IN));
    const float eps = 1e-2f;
    int bad = 0, n = 0;
    for (int i = 0; i < m->params.n; i++) {
        graft_param *p = &m->params.p[i];
        graft_param *gp = graft_param_find(&g.t, p->name);
        CHECK_MSG(gp != NULL, "no gradient for %s", p->name);
        if (!gp) continue;
        for (int j = 0; j < 5; j++) {
            size_t k = (size_t)((j * 2654435761u + (unsigned)i * 97u) % p->numel);
            /* for the embeddings pick rows of tokens in the batch */
            if (strstr(p->name, "wte") || strstr(p->name, "embed_tokens"))
                k = (size_t)ids[j] * (size_t)p->shape[1] + (size_t)j % (size_t)p->shape[1];
            float keep = p->data[k];
            p->data[k] = keep + eps;
            double lp = loss_of(r);
            p->data[k] = keep - eps;
            double lm = loss_of(r);
            p->data[k] = keep;
            double fd = (lp - lm) / (2.0 * eps), an = gp->data[k];
            n++;
            if (fabs(fd - an) > 1e-3 + 3e-2 * fabs(fd)) {
                bad++;
                fprintf(stderr, "%s %s[%zu]: analytic %.6g, finite difference %.6g (loss %.9g / %.9g)\n", label, p->name, k, an, fd, lp, lm);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d parameter gradients off", label, bad, n);
    graft_grads_free(&g);
    graft_run_free(r);
}

/* A hook that captures the gradient at its site, and optionally nudges one
 * activation element in the forward pass (to take finite differences). */
typedef struct {
    graft_hook h;
    float *dact;
    size_t n;
    long nudge_at;
    float nudge;
    float *replace_row; /* when set: overwrite row 3 with these values */
} probe;

static void probe_fwd(graft_hook *h, graft_run *r, float *act, int dim) {
    probe *p = (probe *)h;
    if (p->replace_row) memcpy(act + (size_t)3 * dim, p->replace_row, (size_t)dim * sizeof(float));
    if (p->nudge_at >= 0) act[p->nudge_at] += p->nudge;
}

static void probe_bwd(graft_hook *h, graft_run *r, float *dact, int dim) {
    probe *p = (probe *)h;
    p->n = (size_t)r->T * dim;
    memcpy(p->dact, dact, p->n * sizeof(float));
    if (p->replace_row) memset(dact + (size_t)3 * dim, 0, (size_t)dim * sizeof(float));
}

static void check_sites(graft_model *m, const char *label) {
    const graft_config *cfg = &m->cfg;
    graft_run *r = NULL;
    CHECK_OK(graft_run_create(m, 12, 6, 7, 1, &r));
    CHECK_OK(graft_run_set_batch(r, ids, lens, NSEQ, out_rows, 6));
    size_t cap = (size_t)12 * (cfg->d_ff > cfg->d_model ? cfg->d_ff : cfg->d_model);
    float *full = malloc(cap * sizeof(float)), *part = malloc(cap * sizeof(float));
    float *logits0 = malloc((size_t)6 * cfg->vocab_size * sizeof(float));
    for (int site = 0; site < GRAFT_N_SITES; site++) {
        int layer = 1;
        probe p = {{layer, (graft_site)site, probe_fwd, probe_bwd, NULL, NULL}, full, 0, -1, 0, NULL};
        graft_run_add_hook(r, &p.h);
        loss_of(r);
        memcpy(logits0, r->logits, (size_t)6 * cfg->vocab_size * sizeof(float));
        CHECK_OK(graft_run_backward(r, targets, NULL, NULL, -1, GRAFT_SITE_BLOCK_IN));
        size_t n = p.n;
        /* stopping at the site delivers the same gradient */
        p.dact = part;
        CHECK_OK(graft_run_backward(r, targets, NULL, NULL, layer, (graft_site)site));
        CHECK_MSG(p.n == n && memcmp(full, part, n * sizeof(float)) == 0, "%s: backward stopped at %s differs", label,
                  graft_site_name((graft_site)site));
        /* forward from the site reproduces the logits exactly */
        CHECK_OK(graft_run_forward_from(r, layer, (graft_site)site));
        CHECK_MSG(memcmp(logits0, r->logits, (size_t)6 * cfg->vocab_size * sizeof(float)) == 0,
                  "%s: forward from %s differs", label, graft_site_name((graft_site)site));
        /* finite differences through the hook */
        int dim = graft_site_dim(cfg, (graft_site)site), bad = 0;
        for (int j = 0; j < 4; j++) {
            long at = (long)((j * 5 + 6) % 12) * dim + (j * 7) % dim;
            const float eps = 1e-2f;
            p.nudge_at = at;
            p.nudge = eps;
            double lp = loss_of(r);
            p.nudge = -eps;
            double lm = loss_of(r);
            p.nudge_at = -1;
            double fd = (lp - lm) / (2 * eps);
            if (fabs(fd - full[at]) > 1e-3 + 3e-2 * fabs(fd)) {
                bad++;
                fprintf(stderr, "%s site %s [%ld]: analytic %.6g, fd %.6g\n", label, graft_site_name((graft_site)site),
                        at, full[at], fd);
            }
        }
        CHECK_MSG(bad == 0, "%s: activation gradients at %s", label, graft_site_name((graft_site)site));
        graft_run_remove_hook(r, &p.h);
        p.dact = full;
    }

    /* A replacing hook: the replaced row no longer depends on anything below,
     * so a parameter of layer 0 must not see gradient from it, and rows of
     * other sequences are untouched. */
    float *row = malloc((size_t)cfg->d_ff * sizeof(float));
    for (int i = 0; i < cfg->d_ff; i++) row[i] = 0.5f - 0.01f * (float)i;
    probe p = {{1, GRAFT_SITE_MLP_PRE, probe_fwd, probe_bwd, NULL, NULL}, full, 0, -1, 0, row};
    graft_run_add_hook(r, &p.h);
    loss_of(r);
    CHECK(memcmp(r->layers[1].pre + (size_t)3 * cfg->d_ff, row, (size_t)cfg->d_ff * sizeof(float)) == 0);
    graft_run_remove_hook(r, &p.h);
    free(row);
    free(full);
    free(part);
    free(logits0);
    graft_run_free(r);
}

/* Suffix passes (graft_run_set_row0): a hook replaces row R0 of one site
 * with a vector v, as GRACE does; recomputing only rows >= R0 gives the
 * logits and the gradient w.r.t. v of a whole forward_from / backward, rows
 * before R0 stay as they were, and finite differences agree. */
#define SLEN 10
#define R0 4
typedef struct {
    graft_hook h;
    float *v, *gv; /* the replacing row and its gradient */
} repl;

static void repl_fwd(graft_hook *h, graft_run *r, float *act, int dim) {
    (void)r;
    memcpy(act + (size_t)R0 * dim, ((repl *)h)->v, (size_t)dim * sizeof(float));
}

static void repl_bwd(graft_hook *h, graft_run *r, float *dact, int dim) {
    (void)r;
    memcpy(((repl *)h)->gv, dact + (size_t)R0 * dim, (size_t)dim * sizeof(float));
    memset(dact + (size_t)R0 * dim, 0, (size_t)dim * sizeof(float));
}

static void check_suffix(graft_model *m, const char *label) {
    const graft_config *cfg = &m->cfg;
    int V = cfg->vocab_size, len = SLEN, rows[SLEN - R0], tg[SLEN - R0], no = SLEN - R0;
    for (int i = 0; i < no; i++) rows[i] = R0 + i, tg[i] = (ids[i] * 5 + 1) % V;
    graft_run *r = NULL;
    CHECK_OK(graft_run_create(m, SLEN, SLEN, SLEN, 1, &r));
    CHECK_OK(graft_run_set_batch(r, ids, &len, 1, rows, no));
    int maxd = cfg->d_ff > cfg->d_model ? cfg->d_ff : cfg->d_model;
    float *v = malloc((size_t)maxd * sizeof(float)), *g_full = malloc((size_t)maxd * sizeof(float));
    float *g_part = malloc((size_t)maxd * sizeof(float)), *lg = malloc((size_t)no * V * sizeof(float));
    float *top = malloc((size_t)R0 * cfg->d_model * sizeof(float));
    for (int layer = 0; layer < cfg->n_layer; layer++)
        for (int site = 0; site < GRAFT_N_SITES; site++) {
            int dim = graft_site_dim(cfg, (graft_site)site);
            for (int i = 0; i < dim; i++) v[i] = 0.3f * sinf(0.7f * (float)i + (float)site);
            repl p = {{layer, (graft_site)site, repl_fwd, repl_bwd, NULL, NULL}, v, g_full};
            CHECK_OK(graft_run_set_row0(r, 0));
            CHECK_OK(graft_run_forward(r)); /* the cached pass, unedited */
            memcpy(top, r->layers[cfg->n_layer - 1].out, (size_t)R0 * cfg->d_model * sizeof(float));
            graft_run_add_hook(r, &p.h);
            double lf, lp;
            CHECK_OK(graft_run_forward_from(r, layer, (graft_site)site));
            CHECK_OK(graft_run_loss(r, tg, NULL, &lf, NULL));
            memcpy(lg, r->logits, (size_t)no * V * sizeof(float));
            CHECK_OK(graft_run_backward(r, tg, NULL, NULL, layer, (graft_site)site));
            /* the same through the suffix */
            CHECK_OK(graft_run_forward(r));
            graft_run_remove_hook(r, &p.h);
            CHECK_OK(graft_run_forward(r));
            graft_run_add_hook(r, &p.h);
            p.gv = g_part;
            CHECK_OK(graft_run_set_row0(r, R0));
            CHECK_OK(graft_run_forward_from(r, layer, (graft_site)site));
            CHECK_OK(graft_run_loss(r, tg, NULL, &lp, NULL));
            CHECK_OK(graft_run_backward(r, tg, NULL, NULL, layer, (graft_site)site));
            int bad_l = 0, bad_g = 0;
            for (int i = 0; i < no * V; i++) bad_l += !(fabsf(lg[i] - r->logits[i]) <= 1e-5f * (1 + fabsf(lg[i])));
            for (int i = 0; i < dim; i++) bad_g += !(fabsf(g_full[i] - g_part[i]) <= 1e-5f + 1e-4f * fabsf(g_full[i]));
            CHECK_MSG(bad_l == 0 && bad_g == 0 && fabs(lf - lp) < 1e-5,
                      "%s suffix at (%d, %s): %d logits, %d gradient entries differ; loss %.8f vs %.8f", label, layer,
                      graft_site_name((graft_site)site), bad_l, bad_g, lf, lp);
            CHECK_MSG(memcmp(top, r->layers[cfg->n_layer - 1].out, (size_t)R0 * cfg->d_model * sizeof(float)) == 0,
                      "%s suffix at (%d, %s): rows before row0 changed", label, layer, graft_site_name((graft_site)site));
            /* finite differences through the suffix pass */
            int bad = 0;
            for (int j = 0; j < 3; j++) {
                int at = (j * 11 + 2) % dim;
                const float eps = 1e-2f, keep = v[at];
                double a, b;
                v[at] = keep + eps;
                graft_run_forward_from(r, layer, (graft_site)site);
                graft_run_loss(r, tg, NULL, &a, NULL);
                v[at] = keep - eps;
                graft_run_forward_from(r, layer, (graft_site)site);
                graft_run_loss(r, tg, NULL, &b, NULL);
                v[at] = keep;
                double fd = (a - b) / (2 * eps);
                if (fabs(fd - g_part[at]) > 1e-3 + 3e-2 * fabs(fd)) bad++;
            }
            CHECK_MSG(bad == 0, "%s suffix at (%d, %s): finite differences disagree", label, layer,
                      graft_site_name((graft_site)site));
            graft_run_remove_hook(r, &p.h);
        }
    /* what a suffix pass refuses */
    graft_grads g;
    CHECK_OK(graft_grads_create(m, &g));
    CHECK_OK(graft_run_set_row0(r, R0));
    CHECK_FAILS(graft_run_backward(r, tg, NULL, &g, -1, GRAFT_SITE_BLOCK_IN), GRAFT_ERR_INVALID, "activation gradients");
    CHECK_FAILS(graft_run_set_row0(r, SLEN), GRAFT_ERR_RANGE, "outside");
    CHECK_OK(graft_run_set_batch(r, ids, &len, 1, NULL, 0));
    CHECK(r->row0 == 0);
    CHECK_FAILS(graft_run_set_row0(r, R0), GRAFT_ERR_INVALID, "logit row");
    int two[2] = {6, 4};
    CHECK_OK(graft_run_set_batch(r, ids, two, 2, rows, 1));
    CHECK_FAILS(graft_run_set_row0(r, R0), GRAFT_ERR_INVALID, "one");
    graft_grads_free(&g);
    free(v), free(g_full), free(g_part), free(lg), free(top);
    graft_run_free(r);
}

static graft_model *tiny(graft_arch arch, int interleaved) {
    graft_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.n_layer = 2;
    c.d_model = 16;
    c.n_head = 4;
    c.n_kv_head = arch == GRAFT_ARCH_GPT2 ? 4 : 2;
    c.head_dim = 4;
    c.d_ff = arch == GRAFT_ARCH_GPT2 ? 64 : 24;
    c.vocab_size = 37;
    c.n_ctx = 16;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_interleaved = interleaved;
    c.tied = arch == GRAFT_ARCH_GPT2;
    c.bos_id = c.eos_id = -1;
    graft_model *m = NULL;
    CHECK_OK(graft_model_create_random(&c, 7, 0.3f, &m));
    if (m) /* non-trivial norm parameters so their gradients matter */
        for (int i = 0; i < m->params.n; i++)
            if (strstr(m->params.p[i].name, "ln") || strstr(m->params.p[i].name, "norm"))
                for (size_t k = 0; k < m->params.p[i].numel; k++) m->params.p[i].data[k] += 0.1f * (float)((int)(k % 7) - 3);
    return m;
}

int main(void) {
    graft_set_threads(2);
    make_batch(37);
    struct {
        graft_arch arch;
        int inter;
        const char *label;
    } cases[] = {{GRAFT_ARCH_GPT2, 0, "gpt2"}, {GRAFT_ARCH_LLAMA, 0, "llama rotate-half"},
                 {GRAFT_ARCH_LLAMA, 1, "llama interleaved"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        graft_model *m = tiny(cases[i].arch, cases[i].inter);
        if (!m) continue;
        fd_params(m, cases[i].label);
        check_sites(m, cases[i].label);
        check_suffix(m, cases[i].label);
        graft_model_free(m);
    }
    return test_finish("test_model_grad");
}
