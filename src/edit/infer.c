/* infer.c - running a model through an editor (generation). */
#include "editor.h"

typedef struct {
    graft_editor *e;
    int prompt_key;
    pthread_mutex_t *lock;
} gen_ctx;

static graft_status before_step(void *user, graft_run *r, int step) {
    gen_ctx *c = user;
    if (c->lock) pthread_mutex_lock(c->lock);
    if (!c->e || !c->e->ops->attach) return GRAFT_OK;
    if (step == 0) GRAFT_TRY(c->e->ops->attach(c->e, r));
    int key = step == 0 ? c->prompt_key : -1;
    return c->e->ops->set_keys ? c->e->ops->set_keys(c->e, &key, 1) : GRAFT_OK;
}

static void after_step(void *user, graft_run *r, int step) {
    gen_ctx *c = user;
    /* the run's keys live in the editor: leave it with default keys before
     * another run may use it */
    if (c->e && c->e->ops->set_keys) c->e->ops->set_keys(c->e, NULL, 0);
    if (c->lock) pthread_mutex_unlock(c->lock);
}

graft_status graft_editor_generate_serial(graft_editor *e, graft_model *m, pthread_mutex_t *lock, const int *prompt,
                                          size_t n, const graft_gen_opts *opts, graft_token_cb cb, void *user,
                                          int **out, size_t *n_out) {
    if (!e && !lock) return graft_generate_ids(m, prompt, n, opts, cb, user, out, n_out);
    gen_ctx c = {e, (int)n - 1, lock};
    static const graft_step_hooks hooks = {before_step, after_step};
    return graft_generate_run(m, prompt, n, opts, cb, user, &hooks, &c, out, n_out);
}

graft_status graft_editor_generate(graft_editor *e, graft_model *m, const int *prompt, size_t n,
                                   const graft_gen_opts *opts, graft_token_cb cb, void *user, int **out, size_t *n_out) {
    return graft_editor_generate_serial(e, m, NULL, prompt, n, opts, cb, user, out, n_out);
}
