/* rome.c - ROME (Meng et al., 2022) with the r-ROME key fix (Gupta et al.,
 * 2024) as the default: one rank-one update of the MLP down-projection of one
 * layer (shared/docs/algorithms.md 4.2, 4.3).
 *
 *   k*  = mean over the context templates of the key at the subject's last token
 *   u   = C^-1 k* / |C^-1 k*|            (C = E[k k^T] from `graft stats`; I without it)
 *   v*  = v_init + delta                  (delta optimised by graft_wedit_vstar)
 *   r-ROME (default):  w = (v* - mean_T o_T) / (k* . u)    =>  W' k* + b = v*
 *   original ROME:     w = (v* - o) / (k . u), k, o of the unprefixed prompt
 *                      (k* still in u: the asymmetry r-ROME removes; a tiny
 *                      k . u makes the "disabling" edits of sequential ROME)
 *   dW = w u^T
 */
#include "locate.h"

#include "linalg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static graft_status dbg_alloc(graft_rome_debug *d, int F, int C) {
    if (!d->k_star) {
        d->k_star = malloc((size_t)F * sizeof(double));
        d->k_plain = malloc((size_t)F * sizeof(double));
        d->k_used = malloc((size_t)F * sizeof(double));
        d->u = malloc((size_t)F * sizeof(double));
        d->v_init = malloc((size_t)C * sizeof(double));
        d->v_star = malloc((size_t)C * sizeof(double));
        d->o_used = malloc((size_t)C * sizeof(double));
        d->w = malloc((size_t)C * sizeof(double));
    }
    if (!d->k_star || !d->k_plain || !d->k_used || !d->u || !d->v_init || !d->v_star || !d->o_used || !d->w)
        return graft_fail(GRAFT_ERR_NOMEM, "rome: out of memory");
    d->F = F, d->C = C;
    return GRAFT_OK;
}

static graft_status rome_apply(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change) {
    graft_wedit *w = (graft_wedit *)e;
    int C = w->C, F = w->F, layer = w->o.layers[0];
    memset(info, 0, sizeof *info);
    if (req->n_prompt < 1 || req->n_target < 1)
        return graft_fail(GRAFT_ERR_INVALID, "rome: an edit needs a prompt and a target (got %d and %d tokens)", req->n_prompt,
                          req->n_target);
    GRAFT_TRY(graft_wedit_templates(w));
    graft_wedit_diag dg;
    memset(&dg, 0, sizeof dg);
    int rep = 0;
    GRAFT_TRY(graft_wedit_eval_target(w, req, &dg.loss_before, &rep));

    graft_vstar vs;
    GRAFT_TRY(graft_wedit_vstar(w, layer, 0, req, &vs));
    graft_rome_debug *d = &w->dbg;
    d->valid = 0;
    graft_status st = dbg_alloc(d, F, C);
    graft_cov *cov = NULL;
    if (st == GRAFT_OK) st = graft_wedit_cov(w, layer, 0.0, &cov);
    float *U = malloc((size_t)C * sizeof(float)), *V = malloc((size_t)F * sizeof(float));
    if (st == GRAFT_OK && (!U || !V)) st = graft_fail(GRAFT_ERR_NOMEM, "rome: out of memory");
    if (st != GRAFT_OK) goto done;

    /* keys and outputs: template means and the unprefixed prompt's (template 0) */
    int nT = vs.nT;
    double *o_avg = malloc((size_t)C * sizeof(double));
    if (!o_avg) {
        st = graft_fail(GRAFT_ERR_NOMEM, "rome: out of memory");
        goto done;
    }
    for (int i = 0; i < F; i++) {
        double s = 0;
        for (int j = 0; j < nT; j++) s += vs.keys[(size_t)j * F + i];
        d->k_star[i] = s / nT;
        d->k_plain[i] = vs.keys[i];
    }
    for (int o = 0; o < C; o++) {
        double s = 0;
        for (int j = 0; j < nT; j++) s += vs.outs[(size_t)j * C + o];
        o_avg[o] = s / nT;
        d->v_init[o] = vs.v_init[o];
        d->v_star[o] = (double)(vs.v_init[o] + vs.delta[o]); /* v* is a float, as in the reference */
    }
    /* u = C^-1 k* / |C^-1 k*| */
    memcpy(d->u, d->k_star, (size_t)F * sizeof(double));
    if (!cov->identity) graft_chol_solve(cov->chol, F, d->u, 1);
    double un = 0;
    for (int i = 0; i < F; i++) un += d->u[i] * d->u[i];
    un = sqrt(un);
    if (!(un > 0) || !isfinite(un)) {
        st = graft_fail(GRAFT_ERR_INVALID, "rome: the key at layer %d is zero or not finite", layer);
        free(o_avg);
        goto done;
    }
    for (int i = 0; i < F; i++) d->u[i] /= un;
    d->rrome = w->o.rrome;
    memcpy(d->k_used, w->o.rrome ? d->k_star : d->k_plain, (size_t)F * sizeof(double));
    memcpy(d->o_used, w->o.rrome ? o_avg : d->v_init, (size_t)C * sizeof(double));
    free(o_avg);
    double denom = 0;
    for (int i = 0; i < F; i++) denom += d->k_used[i] * d->u[i];
    d->denom = denom;
    if (!isfinite(denom) || denom == 0) {
        st = graft_fail(GRAFT_ERR_INVALID, "rome: the key and the update direction are orthogonal (k . u = %g)", denom);
        goto done;
    }
    for (int o = 0; o < C; o++) {
        d->w[o] = (d->v_star[o] - d->o_used[o]) / denom;
        U[o] = (float)d->w[o];
    }
    for (int i = 0; i < F; i++) V[i] = (float)d->u[i];
    d->layer = layer;
    d->valid = 1;

    graft_wedit_update up = {.layer = layer, .n = 1, .U = U, .V = V};
    if ((st = graft_wedit_apply_update(w, &up))) goto done;
    if ((st = graft_wedit_eval_target(w, req, &dg.loss_after, &info->reproduced))) goto done;
    dg.v_loss_first = vs.loss_first;
    dg.v_loss_last = vs.loss_last;
    dg.v_steps = vs.steps;
    double kn = 0, kp = 0;
    for (int i = 0; i < F; i++) kn += d->k_star[i] * d->k_star[i], kp += d->k_plain[i] * d->k_plain[i];
    dg.key_norm = sqrt(kn);
    dg.key_plain_norm = sqrt(kp);
    double dn = 0, vn = 0;
    for (int o = 0; o < C; o++) dn += (double)vs.delta[o] * vs.delta[o], vn += (double)vs.v_init[o] * vs.v_init[o];
    dg.delta_norm = sqrt(dn);
    dg.v_init_norm = sqrt(vn);
    dg.denom = denom;
    dg.reproduced = info->reproduced;
    if ((st = graft_wedit_write_change(w, &up, 1, &dg, 1, change))) goto done;
    info->iterations = vs.steps;
    info->loss_first = dg.loss_before;
    info->loss_last = dg.loss_after;
    snprintf(info->action, sizeof info->action, "rank-one L%d", layer);
    info->rows_changed = 1;
    e->n_edits++;
done:
    graft_vstar_free(&vs);
    free(U), free(V);
    return st;
}

const graft_editor_ops graft_rome_ops = {
    .name = "rome",
    .apply = rome_apply,
    .replay = graft_wedit_replay,
    .revert = NULL, /* undo = reset + replay of the live edits (bit-exact) */
    .reset = graft_wedit_reset,
    .attach = NULL,
    .detach = NULL,
    .set_keys = NULL,
    .export_st = graft_wedit_export,
    .free = graft_wedit_free,
    .apply_batch = NULL,
};
