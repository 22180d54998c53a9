/* eval.c - teacher-forced and generated predictions through an editor. */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

graft_status graft_encode_pair(graft_tokenizer *tok, const char *prompt, const char *target, graft_eval_item *it) {
    memset(it, 0, sizeof *it);
    int spm = !strcmp(graft_tokenizer_kind(tok), "llama2c-spm");
    int bos = spm ? graft_tokenizer_bos(tok) : -1;
    int *p = NULL, *t = NULL;
    size_t np = 0, nt = 0;
    graft_status st = graft_tokenize_pair(tok, prompt, target, &p, &np, &t, &nt, NULL);
    if (st == GRAFT_OK && (nt == 0 || np + (bos >= 0) == 0))
        st = graft_fail(GRAFT_ERR_INVALID, "empty prompt or target after tokenization (prompt '%.60s', target '%.60s')",
                        prompt, target);
    if (st == GRAFT_OK) {
        it->prompt = malloc((np + 1) * sizeof(int));
        if (!it->prompt) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (st != GRAFT_OK) {
        free(p), free(t);
        memset(it, 0, sizeof *it);
        return st;
    }
    int k = 0;
    if (bos >= 0) it->prompt[k++] = bos;
    memcpy(it->prompt + k, p, np * sizeof(int));
    it->n_prompt = k + (int)np;
    it->target = t;
    it->n_target = (int)nt;
    free(p);
    return GRAFT_OK;
}

int graft_subject_last(graft_tokenizer *tok, const char *prompt, const char *subject) {
    if (!subject || !*subject) return -1;
    const char *at = strstr(prompt, subject);
    if (!at) return -1;
    /* the tokens of the prompt up to the end of the subject; its last one is
     * the subject's last token (BPE merges never cross the word boundary that
     * follows a subject in these prompts) */
    size_t end = (size_t)(at - prompt) + strlen(subject);
    int *ids = NULL;
    size_t n = 0;
    if (graft_tokenize(tok, prompt, end, &ids, &n) != GRAFT_OK) return -1;
    free(ids);
    int bos = !strcmp(graft_tokenizer_kind(tok), "llama2c-spm") && graft_tokenizer_bos(tok) >= 0;
    return n ? (int)n - 1 + bos : -1;
}

void graft_eval_item_free(graft_eval_item *it) {
    free(it->prompt);
    free(it->target);
    memset(it, 0, sizeof *it);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Items are packed into batches of at most BUDGET tokens. */
#define BUDGET 2048

/* Pack items into batches and run each through the model (and editor):
 * fn receives the run and, for each item of the batch, its first logit row. */
typedef void (*batch_fn)(void *user, graft_run *r, const graft_eval_item *items, int first, int n, const int *row0);

static graft_status run_batches(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, batch_fn fn,
                                void *user) {
    if (n <= 0) return GRAFT_OK;
    int maxlen = 0;
    long total = 0;
    for (int i = 0; i < n; i++) {
        int len = items[i].n_prompt + items[i].n_target - 1;
        if (len > m->cfg.n_ctx)
            return graft_fail(GRAFT_ERR_RANGE, "evaluation item %d has %d tokens; the context is %d", i, len, m->cfg.n_ctx);
        if (len > maxlen) maxlen = len;
        total += len;
    }
    /* no bigger than the items need: one edit's check should not allocate
     * (and fault in) activations for BUDGET tokens */
    int cap = total < BUDGET ? (int)total : BUDGET;
    if (cap < maxlen) cap = maxlen;
    graft_run *r = NULL;
    GRAFT_TRY(graft_run_create(m, cap, cap, maxlen, 0, &r));
    int *ids = malloc((size_t)cap * sizeof(int)), *lens = malloc((size_t)cap * sizeof(int));
    int *rows = malloc((size_t)cap * sizeof(int)), *keys = malloc((size_t)cap * sizeof(int));
    int *row0 = malloc((size_t)cap * sizeof(int));
    graft_status st = (ids && lens && rows && keys && row0) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK && e && e->ops->attach) st = e->ops->attach(e, r);
    int done = 0;
    while (st == GRAFT_OK && done < n) {
        int T = 0, ns = 0, no = 0;
        while (done + ns < n) {
            const graft_eval_item *it = &items[done + ns];
            int len = it->n_prompt + it->n_target - 1;
            if (T + len > cap) break;
            memcpy(ids + T, it->prompt, (size_t)it->n_prompt * sizeof(int));
            memcpy(ids + T + it->n_prompt, it->target, (size_t)(it->n_target - 1) * sizeof(int));
            row0[ns] = no;
            for (int k = 0; k < it->n_target; k++) rows[no++] = T + it->n_prompt - 1 + k;
            keys[ns] = it->n_prompt - 1 + (e ? e->key_after_prompt : 0);
            if (keys[ns] >= len) keys[ns] = -1; /* a one-token target has no first-target key row */
            lens[ns++] = len;
            T += len;
        }
        st = graft_run_set_batch(r, ids, lens, ns, rows, no);
        if (st == GRAFT_OK && e && e->ops->set_keys) st = e->ops->set_keys(e, keys, ns);
        if (st == GRAFT_OK) st = graft_run_forward(r);
        if (st == GRAFT_OK) fn(user, r, items, done, ns, row0);
        done += ns;
    }
    if (e && e->ops->detach) e->ops->detach(e, r);
    if (e && e->ops->set_keys) e->ops->set_keys(e, NULL, 0);
    graft_run_free(r);
    free(ids), free(lens), free(rows), free(keys), free(row0);
    return st;
}

typedef struct {
    int *pred;
    int at;
} tf_ctx;

static void tf_batch(void *user, graft_run *r, const graft_eval_item *items, int first, int n, const int *row0) {
    tf_ctx *c = user;
    int V = r->m->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < items[first + i].n_target; k++)
            c->pred[c->at++] = argmax(r->logits + (size_t)(row0[i] + k) * V, V);
}

graft_status graft_eval_tf(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *pred) {
    tf_ctx c = {pred, 0};
    return run_batches(m, e, items, n, tf_batch, &c);
}

typedef struct {
    double *nll;
    float *row_loss;
    int *targets;
    graft_status st;
} nll_ctx;

static void nll_batch(void *user, graft_run *r, const graft_eval_item *items, int first, int n, const int *row0) {
    nll_ctx *c = user;
    if (c->st != GRAFT_OK) return;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < items[first + i].n_target; k++) c->targets[row0[i] + k] = items[first + i].target[k];
    double unused;
    c->st = graft_run_loss(r, c->targets, NULL, &unused, c->row_loss);
    for (int i = 0; c->st == GRAFT_OK && i < n; i++) {
        double s = 0;
        for (int k = 0; k < items[first + i].n_target; k++) s += c->row_loss[row0[i] + k];
        c->nll[first + i] = s;
    }
}

graft_status graft_eval_seq_nll(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, double *nll) {
    int cap = BUDGET;
    for (int i = 0; i < n; i++)
        if (items[i].n_prompt + items[i].n_target > cap) cap = items[i].n_prompt + items[i].n_target;
    nll_ctx c = {nll, malloc((size_t)cap * sizeof(float)), malloc((size_t)cap * sizeof(int)), GRAFT_OK};
    graft_status st = (c.row_loss && c.targets) ? run_batches(m, e, items, n, nll_batch, &c)
                                                 : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    free(c.row_loss), free(c.targets);
    return st != GRAFT_OK ? st : c.st;
}

/* Teacher-forced argmax and its lead over the runner-up at every target
 * position (for graft_eval_gen's shortcut). */
typedef struct {
    int *pred;
    float *lead;
    int at;
} lead_ctx;

static void lead_batch(void *user, graft_run *r, const graft_eval_item *items, int first, int n, const int *row0) {
    lead_ctx *c = user;
    int V = r->m->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < items[first + i].n_target; k++) {
            const float *x = r->logits + (size_t)(row0[i] + k) * V;
            int b = argmax(x, V);
            float second = -INFINITY;
            for (int v = 0; v < V; v++)
                if (v != b && x[v] > second) second = x[v];
            c->pred[c->at] = b;
            c->lead[c->at++] = x[b] - second;
        }
}

/* A lead this large cannot be overturned by the rounding differences between
 * a packed teacher-forced pass and KV-cache decoding (relative differences of
 * ~1e-6 on logits of magnitude < 100 here). */
#define LEAD_SURE 1e-2f

static graft_status generate_one(graft_model *m, graft_editor *e, const graft_eval_item *it, int *gen) {
    graft_gen_opts o;
    graft_gen_opts_default(&o);
    o.max_new_tokens = it->n_target;
    o.stop_at_eos = 0;
    int *out = NULL;
    size_t k = 0;
    GRAFT_TRY(graft_editor_generate(e, m, it->prompt, (size_t)it->n_prompt, &o, NULL, NULL, &out, &k));
    for (int j = 0; j < it->n_target; j++) gen[j] = j < (int)k ? out[j] : -1;
    free(out);
    return GRAFT_OK;
}

graft_status graft_eval_gen(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *gen) {
    return graft_eval_tf_gen(m, e, items, n, NULL, gen);
}

graft_status graft_eval_tf_gen(graft_model *m, graft_editor *e, const graft_eval_item *items, int n, int *tf, int *gen) {
    /* Greedy generation of n_target tokens, read off one packed
     * teacher-forced pass where that is provably the same thing: when the
     * teacher-forced argmax is the target at every position (each greedy
     * step then feeds exactly the token the teacher-forced pass fed) and
     * leads by LEAD_SURE. Every other item is generated token by token. */
    int total = 0;
    for (int i = 0; i < n; i++) total += items[i].n_target;
    int *pred = NULL;
    float *lead = NULL;
    int shortcut = !e || !e->gen_differs;
    if (tf && !shortcut) GRAFT_TRY(graft_eval_tf(m, e, items, n, tf));
    if (shortcut) {
        pred = tf ? tf : malloc((size_t)(total ? total : 1) * sizeof(int));
        lead = malloc((size_t)(total ? total : 1) * sizeof(float));
        if (!pred || !lead) {
            if (pred != tf) free(pred);
            free(lead);
            return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        }
        lead_ctx c = {pred, lead, 0};
        graft_status st = run_batches(m, e, items, n, lead_batch, &c);
        if (st != GRAFT_OK) {
            if (pred != tf) free(pred);
            free(lead);
            return st;
        }
    }
    graft_status st = GRAFT_OK;
    for (int i = 0, at = 0; st == GRAFT_OK && i < n; at += items[i].n_target, i++) {
        int sure = shortcut;
        for (int j = 0; sure && j < items[i].n_target; j++)
            sure = pred[at + j] == items[i].target[j] && lead[at + j] >= LEAD_SURE;
        if (sure)
            memcpy(gen + at, items[i].target, (size_t)items[i].n_target * sizeof(int));
        else
            st = generate_one(m, e, &items[i], gen + at);
    }
    if (pred != tf) free(pred);
    free(lead);
    return st;
}

graft_status graft_eval_nll(graft_model *m, graft_editor *e, const int *ids, size_t n, int window, double *nll,
                            size_t *count) {
    *nll = 0;
    *count = 0;
    if (window > m->cfg.n_ctx) window = m->cfg.n_ctx;
    if (window < 2 || n < 2) return graft_fail(GRAFT_ERR_INVALID, "perplexity: need at least 2 tokens and a window of 2");
    graft_run *r = NULL;
    GRAFT_TRY(graft_run_create(m, window, window, window, 0, &r));
    int *targets = malloc((size_t)window * sizeof(int));
    float *rl = malloc((size_t)window * sizeof(float));
    graft_status st = (targets && rl) ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    if (st == GRAFT_OK && e && e->ops->attach) st = e->ops->attach(e, r);
    double sum = 0;
    size_t cnt = 0;
    for (size_t b = 0; st == GRAFT_OK && b + 1 < n; b += (size_t)window) {
        int len = (int)(n - b < (size_t)window ? n - b : (size_t)window);
        if (len < 2) break;
        int key = len - 1;
        st = graft_run_set_batch(r, ids + b, &len, 1, NULL, 0);
        if (st == GRAFT_OK && e && e->ops->set_keys) st = e->ops->set_keys(e, &key, 1);
        if (st == GRAFT_OK) st = graft_run_forward(r);
        for (int t = 0; t < len; t++) targets[t] = t + 1 < len ? ids[b + (size_t)t + 1] : -1;
        double unused;
        if (st == GRAFT_OK) st = graft_run_loss(r, targets, NULL, &unused, rl);
        for (int t = 0; st == GRAFT_OK && t + 1 < len; t++) sum += rl[t], cnt++;
    }
    if (e && e->ops->detach) e->ops->detach(e, r);
    if (e && e->ops->set_keys) e->ops->set_keys(e, NULL, 0);
    graft_run_free(r);
    free(targets), free(rl);
    if (st == GRAFT_OK) {
        *nll = cnt ? sum / (double)cnt : 0;
        *count = cnt;
    }
    return st;
}
