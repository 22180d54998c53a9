/* infer.c - running a model through an editor (generation). */
#include "editor.h"

typedef struct {
    graft_editor *e;
    int prompt_key;
} gen_ctx;

static graft_status before_step(void *user, graft_run *r, int step) {
    gen_ctx *c = user;
    if (!c->e->ops->attach) return GRAFT_OK;
    if (step == 0) GRAFT_TRY(c->e->ops->attach(c->e, r));
    int key = step == 0 ? c->prompt_key : -1;
    return c->e->ops->set_keys ? c->e->ops->set_keys(c->e, &key, 1) : GRAFT_OK;
}

graft_status graft_editor_generate(graft_editor *e, graft_model *m, const int *prompt, size_t n,
                                   const graft_gen_opts *opts, graft_token_cb cb, void *user, int **out, size_t *n_out) {
    if (!e) return graft_generate_ids(m, prompt, n, opts, cb, user, out, n_out);
    gen_ctx c = {e, (int)n - 1};
    graft_status st = graft_generate_run(m, prompt, n, opts, cb, user, before_step, &c, out, n_out);
    /* the run died with generation; leave the editor with default keys */
    if (e->ops->set_keys) e->ops->set_keys(e, NULL, 0);
    return st;
}
