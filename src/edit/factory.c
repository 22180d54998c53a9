/* factory.c - editors by name, with their options as JSON. The journal keeps
 * the method and the canonical options JSON, so a run or adaptor folder says
 * by itself how to rebuild its editor. */
#include "editor.h"
/* --- FT baselines (ft.c) --- */
#include "ft.h"
/* --- end FT --- */
/* --- weight editors (locate.c, rome.c, memit.c) --- */
#include "locate.h"
/* --- end weight editors --- */
#include "melo.h"
#include "mend.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const replace_names[] = {"last", "prompt", "all", "upto_key"};
static const char *const expand_names[] = {"coverage", "moving_average"};
static const char *const init_names[] = {"cold", "warm"};
static const char *const train_names[] = {"success", "fixed"};

static int name_index(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* Read the GRACE fields present in j over the defaults; unknown keys are errors. */
static graft_status grace_from_json(const cJSON *j, graft_grace_opts *o, const char *where) {
    graft_grace_opts_default(o);
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        const char *k = it->string;
        int ok = 1;
        if (!strcmp(k, "layer")) ok = cJSON_IsNumber(it), o->layer = it->valueint;
        else if (!strcmp(k, "eps_init")) ok = cJSON_IsNumber(it), o->eps_init = (float)it->valuedouble;
        else if (!strcmp(k, "edit_lr")) ok = cJSON_IsNumber(it), o->edit_lr = (float)it->valuedouble;
        else if (!strcmp(k, "n_iter")) ok = cJSON_IsNumber(it), o->n_iter = it->valueint;
        else if (!strcmp(k, "early_stop")) ok = cJSON_IsBool(it), o->early_stop = cJSON_IsTrue(it);
        else if (!strcmp(k, "max_iter")) ok = cJSON_IsNumber(it) && it->valuedouble >= 0, o->max_iter = it->valueint;
        else if (!strcmp(k, "margin")) ok = cJSON_IsNumber(it) && it->valuedouble >= 0, o->margin = (float)it->valuedouble;
        else if (!strcmp(k, "train")) {
            int idx = cJSON_IsString(it) ? name_index(it->valuestring, train_names, 2) : -1;
            ok = idx >= 0;
            if (ok) o->train = (grace_train)idx;
        }
        else if (!strcmp(k, "label_mean_compat")) ok = cJSON_IsBool(it), o->label_mean_compat = cJSON_IsTrue(it);
        else if (!strcmp(k, "key")) {
            ok = cJSON_IsString(it) && (!strcmp(it->valuestring, "prompt_last") || !strcmp(it->valuestring, "target_first"));
            if (ok) o->key_target_first = !strcmp(it->valuestring, "target_first");
        }
        else if (!strcmp(k, "seed")) ok = cJSON_IsNumber(it), o->seed = (uint64_t)it->valuedouble;
        else if (!strcmp(k, "replace") || !strcmp(k, "expand") || !strcmp(k, "init")) {
            int idx = -1;
            if (cJSON_IsString(it)) {
                if (!strcmp(k, "replace")) idx = name_index(it->valuestring, replace_names, 4), o->replace = idx;
                else if (!strcmp(k, "expand")) idx = name_index(it->valuestring, expand_names, 2), o->expand = idx;
                else idx = name_index(it->valuestring, init_names, 2), o->init = idx;
            }
            ok = idx >= 0;
        } else
            return graft_fail(GRAFT_ERR_INVALID, "%s: unknown GRACE option '%s'", where, k);
        if (!ok) {
            /* name the choices of the options that are words */
            const char *want = !strcmp(k, "train")     ? " (want success or fixed)"
                               : !strcmp(k, "replace") ? " (want upto_key, last, prompt or all)"
                               : !strcmp(k, "init")    ? " (want warm or cold)"
                               : !strcmp(k, "expand")  ? " (want coverage or moving_average)"
                               : !strcmp(k, "key")     ? " (want prompt_last or target_first)"
                                                       : "";
            return graft_fail(GRAFT_ERR_INVALID, "%s: GRACE option '%s' has a bad value%s", where, k, want);
        }
    }
    return GRAFT_OK;
}

graft_status graft_editor_create(graft_model *m, const char *method, const char *opts_json, graft_editor **out) {
    *out = NULL;
    cJSON *j = cJSON_Parse(opts_json && *opts_json ? opts_json : "{}");
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return graft_fail(GRAFT_ERR_INVALID, "editor options: not a JSON object: %.80s", opts_json);
    }
    graft_status st;
    if (!strcmp(method, "grace")) {
        graft_grace_opts o;
        st = grace_from_json(j, &o, "editor options");
        if (st == GRAFT_OK) st = graft_grace_create(m, &o, out);
    } else if (!strcmp(method, "melo")) {
        graft_melo_opts o;
        st = graft_melo_opts_from_json(j, &o, "editor options");
        if (st == GRAFT_OK) st = graft_melo_create(m, &o, out);
    } else if (!strcmp(method, "mend")) {
        graft_mend_opts o;
        st = graft_mend_opts_from_json(j, &o, "editor options");
        if (st == GRAFT_OK) st = graft_mend_create(m, &o, out);
    /* --- FT baselines (ft.c): "ft", "ftl", "ewc" --- */
    } else if (graft_ft_variant_parse(method) >= 0) {
        graft_ft_opts o;
        st = graft_ft_opts_from_json((graft_ft_variant)graft_ft_variant_parse(method), j, &o, "editor options");
        if (st == GRAFT_OK) st = graft_ft_create(m, &o, out);
    /* --- end FT --- */
    /* --- weight editors: "rome", "memit", "emmet" --- */
    } else if (graft_wedit_method_parse(method)) {
        graft_wedit_method wm = graft_wedit_method_parse(method);
        graft_wedit_opts o;
        st = graft_wedit_opts_from_json(wm, &m->cfg, j, &o, "editor options");
        if (st == GRAFT_OK) st = graft_wedit_create(m, wm, &o, out);
    /* --- end weight editors --- */
    } else
        st = graft_fail(GRAFT_ERR_UNSUPPORTED, "unknown editing method '%s' (available: grace, melo, mend, ft, ftl, ewc, rome, memit, emmet)", method);
    cJSON_Delete(j);
    return st;
}

graft_status graft_editor_opts_json(graft_editor *e, char **json) {
    *json = NULL;
    cJSON *j = cJSON_CreateObject();
    if (!j) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (!strcmp(e->ops->name, "grace")) {
        graft_grace_opts o;
        graft_grace_get_opts(e, &o);
        cJSON_AddNumberToObject(j, "layer", o.layer);
        cJSON_AddNumberToObject(j, "eps_init", o.eps_init);
        cJSON_AddNumberToObject(j, "edit_lr", o.edit_lr);
        cJSON_AddNumberToObject(j, "n_iter", o.n_iter);
        cJSON_AddBoolToObject(j, "early_stop", o.early_stop);
        cJSON_AddStringToObject(j, "train", train_names[o.train]);
        cJSON_AddNumberToObject(j, "max_iter", o.max_iter);
        cJSON_AddNumberToObject(j, "margin", o.margin);
        cJSON_AddStringToObject(j, "init", init_names[o.init]);
        cJSON_AddStringToObject(j, "replace", replace_names[o.replace]);
        cJSON_AddStringToObject(j, "expand", expand_names[o.expand]);
        cJSON_AddBoolToObject(j, "label_mean_compat", o.label_mean_compat);
        cJSON_AddStringToObject(j, "key", o.key_target_first ? "target_first" : "prompt_last");
        cJSON_AddNumberToObject(j, "seed", (double)o.seed);
    }
    if (graft_melo_is(e) && graft_melo_opts_to_json(e, j) != GRAFT_OK) {
        cJSON_Delete(j);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (graft_mend_is(e) && graft_mend_opts_to_json(e, j) != GRAFT_OK) {
        cJSON_Delete(j);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    /* --- FT baselines (ft.c) --- */
    if (graft_ft_is(e) && graft_ft_opts_to_json(e, j) != GRAFT_OK) {
        cJSON_Delete(j);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    /* --- end FT --- */
    /* --- weight editors --- */
    if (graft_editor_is_wedit(e) && graft_wedit_opts_to_json(e, j) != GRAFT_OK) {
        cJSON_Delete(j);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    /* --- end weight editors --- */
    *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return *json ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
}

void graft_model_fingerprint(const graft_model *m, char *buf, size_t n) {
    const graft_param *p = &m->params.p[0];
    double s = 0;
    size_t k = p->numel < 4096 ? p->numel : 4096;
    float head[4096]; /* the same values whether the tensor is f32 or used as stored */
    if (p->data)
        memcpy(head, p->data, k * sizeof(float));
    else /* its first k elements (an embedding table, never stored transposed, rows contiguous) */
        graft_wmat_to_f32(head, p->stored, 1, k);
    for (size_t i = 0; i < k; i++) s += head[i] * (double)(i % 7 + 1);
    snprintf(buf, n, "%s L%d C%d V%d %.9g", m->cfg.arch == GRAFT_ARCH_GPT2 ? "gpt2" : "llama", m->cfg.n_layer,
             m->cfg.d_model, m->cfg.vocab_size, s);
}
