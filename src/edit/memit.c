/* memit.c - MEMIT (Meng et al., 2023) and EMMET (Gupta, Sajnani,
 * Anumanchipalli, 2024): batch edits spread over layers l_1 < ... < l_R
 * (shared/docs/algorithms.md 4.4, 4.5).
 *
 *   z_i = h_i + delta_i at the top edited layer l_R (residual stream, block
 *         output), optimised per request before any weight changes
 *   for r = 1..R, bottom-up, on the model as already updated below:
 *       K   keys at l_r (template-weighted), H the block output of l_R at
 *           the unprefixed prompt, Res = (Z - H) / (R - r + 1)
 *       MEMIT: dW = Res K^T (lambda C + K K^T)^-1
 *       EMMET: dW = Res (K^T M^-1 K + lambda_e I)^-1 K^T M^-1,
 *              M = lambda_c C + lambda_u I   (W K = V exactly when lambda_e = 0)
 *   solved in double (graft_lowrank_solve) and stored as the rank-n factors.
 */
#include "locate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static graft_status memit_apply_batch(graft_editor *e, const graft_edit_tok *reqs, int n, graft_edit_info *info,
                                      graft_blob *change) {
    graft_wedit *w = (graft_wedit *)e;
    const char *name = e->ops->name;
    int C = w->C, F = w->F, R = w->o.n_layers, top = w->o.layers[R - 1];
    int emmet = w->method == GRAFT_WEDIT_EMMET;
    memset(info, 0, sizeof *info);
    if (n < 1) return graft_fail(GRAFT_ERR_INVALID, "%s: an empty batch", name);
    for (int i = 0; i < n; i++)
        if (reqs[i].n_prompt < 1 || reqs[i].n_target < 1)
            return graft_fail(GRAFT_ERR_INVALID, "%s: request %d needs a prompt and a target (got %d and %d tokens)", name, i,
                              reqs[i].n_prompt, reqs[i].n_target);
    GRAFT_TRY(graft_wedit_templates(w));

    graft_wedit_diag *dg = calloc((size_t)n, sizeof *dg);
    double *Z = malloc((size_t)n * C * sizeof(double)), *H = malloc((size_t)n * C * sizeof(double));
    double *K = malloc((size_t)n * F * sizeof(double)), *Res = malloc((size_t)n * C * sizeof(double));
    double *Ud = malloc((size_t)n * C * sizeof(double)), *Xd = malloc((size_t)n * F * sizeof(double));
    graft_wedit_update *ups = calloc((size_t)R, sizeof *ups);
    graft_status st = (dg && Z && H && K && Res && Ud && Xd && ups) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", name);
    int rep;
    for (int i = 0; st == GRAFT_OK && i < n; i++) st = graft_wedit_eval_target(w, &reqs[i], &dg[i].loss_before, &rep);

    /* 1. the target hidden states z_i, each from its own optimisation */
    for (int i = 0; st == GRAFT_OK && i < n; i++) {
        graft_vstar vs;
        st = graft_wedit_vstar(w, top, 1, &reqs[i], &vs);
        if (st != GRAFT_OK) {
            graft_fail_prefix(st, "%s: request %d", name, i);
            break;
        }
        double dn = 0, vn = 0;
        for (int o = 0; o < C; o++) {
            Z[(size_t)i * C + o] = (double)(vs.v_init[o] + vs.delta[o]);
            dn += (double)vs.delta[o] * vs.delta[o];
            vn += (double)vs.v_init[o] * vs.v_init[o];
        }
        dg[i].v_loss_first = vs.loss_first;
        dg[i].v_loss_last = vs.loss_last;
        dg[i].v_steps = vs.steps;
        dg[i].delta_norm = sqrt(dn);
        dg[i].v_init_norm = sqrt(vn);
        dg[i].denom = NAN;
        info->iterations += vs.steps;
        graft_vstar_free(&vs);
    }

    /* 2. the layers, bottom-up, each on the model as updated below it */
    double lam = w->o.mom2_update_weight;
    double shift = emmet && lam > 0 ? w->o.update_norm_lambda / lam : 0.0;
    int n_done = 0;
    for (int r = 0; st == GRAFT_OK && r < R; r++) {
        int l = w->o.layers[r];
        graft_cov *cov = NULL;
        if ((st = graft_wedit_probe(w, reqs, n, l, K, top, H))) break;
        if ((st = graft_wedit_cov(w, l, shift, &cov))) break;
        for (size_t i = 0; i < (size_t)n * C; i++) Res[i] = (Z[i] - H[i]) / (double)(R - r);
        if (r == 0)
            for (int i = 0; i < n; i++) {
                double kn = 0;
                for (int k = 0; k < F; k++) kn += K[(size_t)i * F + k] * K[(size_t)i * F + k];
                dg[i].key_norm = sqrt(kn);
            }
        /* M = lambda C (+ lambda_u I) = m_scale (L L^T), or m_scale I without statistics */
        double m_scale = cov->identity ? (emmet ? lam + w->o.update_norm_lambda : lam) : lam;
        if ((st = graft_lowrank_solve(cov->identity ? NULL : cov->chol, m_scale, F, C, n, K, Res, emmet, w->o.emmet_lambda, Ud,
                                      Xd)))
            break;
        graft_wedit_update *up = &ups[r];
        up->layer = l;
        up->n = n;
        up->U = malloc((size_t)n * C * sizeof(float));
        up->V = malloc((size_t)n * F * sizeof(float));
        if (!up->U || !up->V) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", name);
            break;
        }
        for (size_t i = 0; i < (size_t)n * C; i++) up->U[i] = (float)Ud[i];
        for (size_t i = 0; i < (size_t)n * F; i++) up->V[i] = (float)Xd[i];
        if ((st = graft_wedit_apply_update(w, up))) break;
        n_done = r + 1;
    }
    /* a failure half-way leaves earlier layers updated; the journal never saw
     * this edit, so reset + replay restores the model */
    if (st != GRAFT_OK && n_done > 0) {
        fprintf(stderr, "graft %s: the edit failed after %d of %d layers; call reset + replay to restore the model\n", name,
                n_done, R);
    }
    if (st == GRAFT_OK) {
        int all = 1;
        double lb = 0, la = 0;
        for (int i = 0; st == GRAFT_OK && i < n; i++) {
            int ok = 0;
            st = graft_wedit_eval_target(w, &reqs[i], &dg[i].loss_after, &ok);
            dg[i].reproduced = ok;
            all &= ok;
            lb += dg[i].loss_before;
            la += dg[i].loss_after;
        }
        info->reproduced = all;
        info->loss_first = lb / n;
        info->loss_last = la / n;
    }
    if (st == GRAFT_OK) {
        /* key_plain_norm: the unprefixed prompt's key at the first layer is not
         * separately probed for MEMIT/EMMET */
        for (int i = 0; i < n; i++) dg[i].key_plain_norm = NAN;
        st = graft_wedit_write_change(w, ups, R, dg, n, change);
    }
    if (st == GRAFT_OK) {
        snprintf(info->action, sizeof info->action, "%s L%d-%d n%d", name, w->o.layers[0], top, n);
        info->rows_changed = R;
        e->n_edits++;
    }
    for (int r = 0; ups && r < R; r++) free(ups[r].U), free(ups[r].V);
    free(ups), free(dg), free(Z), free(H), free(K), free(Res), free(Ud), free(Xd);
    return st;
}

static graft_status memit_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change) {
    return memit_apply_batch(e, req, 1, info, change);
}

const graft_editor_ops graft_memit_ops = {
    .name = "memit",
    .apply = memit_apply,
    .replay = graft_wedit_replay,
    .revert = NULL, /* undo = reset + replay of the live edits (bit-exact) */
    .reset = graft_wedit_reset,
    .export_st = graft_wedit_export,
    .free = graft_wedit_free,
    .apply_batch = memit_apply_batch,
};

const graft_editor_ops graft_emmet_ops = {
    .name = "emmet",
    .apply = memit_apply,
    .replay = graft_wedit_replay,
    .revert = NULL,
    .reset = graft_wedit_reset,
    .export_st = graft_wedit_export,
    .free = graft_wedit_free,
    .apply_batch = memit_apply_batch,
};
