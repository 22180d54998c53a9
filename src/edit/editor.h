/*
 * editor.h - the one interface every model editor implements.
 *
 * An editor receives edit requests (a prompt and the wanted target, in tokens)
 * and changes the model's behaviour in one of two ways:
 *  - activation editors (GRACE, MELO) keep the weights frozen and act through
 *    hooks at a (layer, site) of every run they are attached to;
 *  - weight editors (ROME, MEMIT, FT) write deltas into the model's weights
 *    and need nothing at inference.
 *
 * Every applied edit is described by a "change record": a self-contained blob
 * holding exactly what the edit changed (codebook rows, radii, weight deltas)
 * with the values before and after. The journal stores these blobs; replaying
 * them rebuilds the editor's state bit for bit (crash recovery, loading an
 * adaptor) and reverting one undoes that edit. So durability and undo are the
 * same mechanism for every method.
 */
#ifndef GRAFT_EDITOR_H
#define GRAFT_EDITOR_H

#include "engine.h"

#include <pthread.h>

/* One edit request, in tokens. */
typedef struct graft_edit_tok {
    const int *prompt;
    int n_prompt;
    const int *target;
    int n_target;
    int subject_last; /* index in prompt of the subject's last token (ROME/MEMIT
                         locate edits there); -1 when unknown: editors then
                         use the last prompt token */
} graft_edit_tok;

/* What an edit did, for logs and the journal's summary columns. */
typedef struct graft_edit_info {
    int iterations;     /* optimisation steps taken */
    double loss_first;  /* loss on the target before/after the edit */
    double loss_last;
    int reproduced;     /* greedy argmax equals the target at every position */
    char action[32];    /* editor-specific: "add", "split", "expand", "rank-one", ... */
    int rows_added, rows_changed;
} graft_edit_info;

typedef struct graft_blob {
    uint8_t *data;
    size_t len, cap;
} graft_blob;

void graft_blob_free(graft_blob *b);
graft_status graft_blob_put(graft_blob *b, const void *p, size_t n);
/* Bounds-checked reader over a blob: every get fails cleanly past the end. */
typedef struct graft_blob_reader {
    const uint8_t *p;
    size_t len, at;
    const char *what; /* for messages */
} graft_blob_reader;
graft_status graft_blob_get(graft_blob_reader *r, void *dst, size_t n);

typedef struct graft_editor graft_editor;

typedef struct graft_editor_ops {
    const char *name;
    /* Apply one edit. On success *change holds the change record. */
    graft_status (*apply)(graft_editor *e, const graft_edit_tok *req, graft_edit_info *info, graft_blob *change);
    /* Re-apply a change record (journal replay): the state becomes exactly
     * what it was right after the original apply. */
    graft_status (*replay)(graft_editor *e, const uint8_t *change, size_t len);
    /* Revert a change record (undo). May be NULL when `reset` is given. */
    graft_status (*revert)(graft_editor *e, const uint8_t *change, size_t len);
    /* Weight editors: restore the base weights of every tensor the editor has
     * touched, forgetting all edits (NULL for activation editors). Undo then
     * is reset + replay of every edit still live, in order: float deltas do
     * not subtract back bit for bit, a deterministic replay does. */
    graft_status (*reset)(graft_editor *e);
    /* Install / remove the editor's hooks on a run (activation editors). */
    graft_status (*attach)(graft_editor *e, graft_run *r);
    void (*detach)(graft_editor *e, graft_run *r);
    /* Where the key token of each sequence of the next batch is (a row index
     * within the sequence, or -1: this sequence has no key and is never
     * edited). Activation editors only. */
    graft_status (*set_keys)(graft_editor *e, const int *key_pos, int n_seq);
    /* Export the editor's whole state as safetensors (e.g. GRACE's codebook). */
    graft_status (*export_st)(graft_editor *e, const char *path);
    void (*free)(graft_editor *e);
    /* Apply n requests as one batch edit with one change record (MEMIT,
     * EMMET); NULL for editors that edit one request at a time. */
    graft_status (*apply_batch)(graft_editor *e, const graft_edit_tok *reqs, int n, graft_edit_info *info,
                                graft_blob *change);
    /* Take back an apply whose change record never reached the journal (the
     * write failed, or a replica took its journal position first), leaving the
     * state bit for bit as it was before the apply, as replay of the journal
     * would build it. NULL: revert (or reset + replay) already does that. */
    graft_status (*forget)(graft_editor *e, const uint8_t *change, size_t len);
} graft_editor_ops;

struct graft_editor {
    const graft_editor_ops *ops;
    graft_model *m;
    int64_t n_edits; /* edits applied (or replayed) so far */
    /* Where the key token sits relative to a prompt of n tokens followed by
     * its target: 0 = the last prompt token (n-1, the default), 1 = the first
     * target token (n, the official GRACE hallucination setup). Training and
     * every teacher-forced evaluation use the same rule. */
    int key_after_prompt;
    /* Greedy generation sees another edit than a teacher-forced pass (GRACE
     * replace all, or the key at the first target token): evaluation then
     * always generates instead of reading generation off a teacher-forced
     * pass (graft_eval_gen). */
    int gen_differs;
};

/* ---------------------------------------------------------------- shared numerics (numerics.c) */

/* The default edited layer of GRACE and MELO's router: 3/4 of the depth, at
 * most n_layer - 3 (two blocks above it). */
int graft_edit_default_layer(const graft_config *cfg);
/* A uniform draw in [0, 1) from a splitmix64 state. */
double graft_edit_uniform01(uint64_t *state);
/* The smallest lead of the target's logit over every other logit across the
 * first n logit rows (> 0: the teacher-forced argmax is the target
 * everywhere); each row's lead goes to lead[i] when lead is not NULL. */
float graft_edit_min_margin(const graft_run *r, const int *target, int n, float *lead);
/* One Adam step (PyTorch defaults: beta 0.9/0.999, eps 1e-8, no weight
 * decay), step t >= 1. */
void graft_edit_adam_step(float *p, const float *grad, float *m, float *v, size_t n, int t, float lr);

/* ---------------------------------------------------------------- GRACE */

/* Rows a hit overwrites, for a key at row t: last = [t] (EasyEdit), prompt =
 * [0, t) (the official code), all = every row, upto_key = [0, t]. */
typedef enum { GRACE_REPLACE_LAST = 0, GRACE_REPLACE_PROMPT, GRACE_REPLACE_ALL, GRACE_REPLACE_UPTO_KEY } grace_replace;
typedef enum { GRACE_EXPAND_COVERAGE = 0, GRACE_EXPAND_MOVING_AVERAGE } grace_expand;
typedef enum { GRACE_INIT_COLD = 0, GRACE_INIT_WARM } grace_init;
/* success: train until greedy generation produces the target (docs/GRACE.md);
 * fixed: the official loop, n_iter Adam steps at a constant rate (early stop
 * on the teacher-forced argmax when early_stop is set). */
typedef enum { GRACE_TRAIN_SUCCESS = 0, GRACE_TRAIN_FIXED } grace_train;

typedef struct graft_grace_opts {
    int layer;             /* the edited block; -1: 3/4 of the depth, at most
                              n_layer - 3 (two blocks above it) */
    float eps_init;        /* radius of a new key (1.0) */
    float edit_lr;         /* Adam learning rate for values (1.0) */
    int n_iter;            /* fixed: value-training steps at most (100) */
    int early_stop;        /* fixed: stop once the target is reproduced (1) */
    grace_train train;     /* success (default) or fixed */
    int max_iter;          /* success: steps over all attempts at most (500) */
    float margin;          /* success: the target's logit must lead every
                              other by this much at every position (0.5) */
    grace_init init;       /* cold: uniform [0,1) (the paper); warm: the layer's own output (default) */
    grace_replace replace; /* upto_key (default), last, prompt, all */
    grace_expand expand;   /* coverage (default) or moving_average */
    int label_mean_compat; /* compare labels by the mean of their ids, like the official code (0) */
    uint64_t seed;         /* for cold init */
    int key_target_first;  /* key at the first target token instead of the last
                              prompt token (official hallucination setup; pair
                              it with replace_prompt so the rows that predict
                              the target are overwritten) */
    int full_passes;       /* benchmark reference: every training step re-runs
                              the whole forward, as the reference implementations
                              do (results are identical) */
} graft_grace_opts;

void graft_grace_opts_default(graft_grace_opts *o);
/* The GRACE sites: GPT-2 wraps c_fc (key = its input MLP_IN, value replaces
 * its pre-GELU output MLP_PRE), as in the official GPT2-XL config; Llama wraps
 * down_proj (key = MLP_ACT, value replaces MLP_OUT), as EasyEdit does. */
void graft_grace_sites(const graft_config *cfg, graft_site *key_site, graft_site *value_site);
graft_status graft_grace_create(graft_model *m, const graft_grace_opts *o, graft_editor **out);

/* Benchmarks: append n synthetic rows with N(0, scale) keys, radius eps. */
graft_status graft_grace_add_random_rows(graft_editor *e, int n, float scale, float eps, uint64_t seed);

/* Introspection for tests and reports. */
typedef struct graft_grace_stats {
    int n_keys;       /* live codebook entries */
    int n_rows;       /* rows ever created (deleted ones included) */
    int key_dim, value_dim, layer;
    int last_hits;    /* sequences whose key fell inside a radius in the last forward */
} graft_grace_stats;
void graft_grace_get_stats(graft_editor *e, graft_grace_stats *st);
/* Row i: key, value, radius, label, deleted flag (pointers stay owned). */
graft_status graft_grace_row(graft_editor *e, int i, const float **key, const float **value, float *eps,
                             const int **label, int *n_label, int *deleted);

/* Build an editor by method name ("grace") from options JSON (NULL or "{}":
 * defaults; unknown keys are errors). */
graft_status graft_editor_create(graft_model *m, const char *method, const char *opts_json, graft_editor **out);
/* The editor's complete options as canonical JSON (malloc'ed), defaults and
 * derived values (e.g. the layer) filled in: what the journal stores. */
graft_status graft_editor_opts_json(graft_editor *e, char **json);
void graft_grace_get_opts(graft_editor *e, graft_grace_opts *o);
/* Model identity (shape and a checksum of a weight slice), kept in journals so
 * an adaptor is never replayed onto another model. */
void graft_model_fingerprint(const graft_model *m, char *buf, size_t n);

/* Generation through an editor: the prompt's last token is the key of the
 * prefill; generated tokens carry no key, so an edit fires on the prompt and
 * its effect reaches later tokens through the KV cache, exactly as in the
 * teacher-forced passes that trained and evaluate it. NULL editor: plain. */
graft_status graft_editor_generate(graft_editor *e, graft_model *m, const int *prompt, size_t n,
                                   const graft_gen_opts *opts, graft_token_cb cb, void *user, int **out, size_t *n_out);
/* The same, holding *lock (when not NULL) across each forward step and no
 * longer: concurrent generations through one editor interleave token by
 * token (editors keep the key positions of the running forward in their
 * own state, so two forwards through one editor must not overlap). */
graft_status graft_editor_generate_serial(graft_editor *e, graft_model *m, pthread_mutex_t *lock, const int *prompt,
                                          size_t n, const graft_gen_opts *opts, graft_token_cb cb, void *user,
                                          int **out, size_t *n_out);

#endif /* GRAFT_EDITOR_H */
