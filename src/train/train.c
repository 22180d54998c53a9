/* train.c - the training loop: options, model initialisation, packed
 * batches through forward/backward (split into micro-batches when a batch
 * would not fit in memory), AdamW steps, validation, checkpoints and resume. */
#define _GNU_SOURCE
#include "train/train_impl.h"

#include "model/save.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Activation memory a micro-batch may take before a batch is split. */
#define MICRO_BUDGET_BYTES (2.0 * 1024 * 1024 * 1024)

void graft_train_opts_default(graft_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->val_frac = 0.05;
    o->epochs = 1.0;
    o->batch_tokens = 4096;
    o->lr = 3e-4;
    o->min_lr = -1;
    o->warmup = -1;
    o->wd = 0.1;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->clip = 1.0;
    o->seed = 1234;
    o->dtype = GRAFT_F32;
}

void graft_train_resume_opts_default(graft_train_resume_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = -1;
}

/* ================================================================ initialisation */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

graft_status graft_train_init_model(const graft_config *cfg, uint64_t seed, graft_model **out) {
    GRAFT_TRY(graft_model_create_random(cfg, seed, 0.02f, out));
    /* Each block adds two projections into the residual stream; scaling them
     * keeps its variance flat with depth (GPT-2 paper, section 2.3). */
    float scale = (float)(1.0 / sqrt(2.0 * cfg->n_layer));
    graft_param_table *t = &(*out)->params;
    for (int i = 0; i < t->n; i++) {
        const char *n = t->p[i].name;
        if (ends_with(n, ".attn.c_proj.weight") || ends_with(n, ".mlp.c_proj.weight") ||
            ends_with(n, ".self_attn.o_proj.weight") || ends_with(n, ".mlp.down_proj.weight"))
            for (size_t k = 0; k < t->p[i].numel; k++) t->p[i].data[k] *= scale;
    }
    (*out)->format = "graft-init";
    return GRAFT_OK;
}

/* ================================================================ session */

typedef struct session {
    graft_model *m;
    const char *out_dir;
    train_state s;
    train_data data;
    graft_run *run;
    graft_grads g;
    bool have_grads;
    train_adamw opt;
    int *perm;
    int *ids, *lens, *out_rows, *targets;
    float *wts;
    train_hist th, vh;
    FILE *log;
    char *log_path, *svg_path;
    train_progress prog;
    int bos, eos;
    long last_ckpt;
} session;

static void session_free(session *S) {
    graft_run_free(S->run);
    if (S->have_grads) graft_grads_free(&S->g);
    train_adamw_free(&S->opt);
    train_data_free(&S->data);
    train_state_free(&S->s);
    free(S->perm);
    free(S->ids);
    free(S->lens);
    free(S->out_rows);
    free(S->targets);
    free(S->wts);
    train_hist_free(&S->th);
    train_hist_free(&S->vh);
    if (S->log) fclose(S->log);
    free(S->log_path);
    free(S->svg_path);
}

/* Floats of activations and backward scratch per token of a micro-batch
 * (mirrors graft_run's layout closely enough to budget memory). */
static double bytes_per_token(const graft_config *c, int seq_len) {
    double C = c->d_model, F = c->d_ff, V = c->vocab_size, H = c->n_head;
    double q = (double)c->n_head * c->head_dim, kv = (double)c->n_kv_head * c->head_dim;
    double qkv = c->arch == GRAFT_ARCH_GPT2 ? 3 * C : q + 2 * kv;
    double layer = 6 * C + 4 + qkv + H * seq_len + q + (c->arch == GRAFT_ARCH_GPT2 ? 2 : 3) * F;
    double scratch = C + 2 * (C > q ? C : q) + qkv + 3 * F + V;
    return 4.0 * (C + c->n_layer * layer + 2 * C + 2 + V + scratch);
}

static bool is_finite_pos(double x) { return isfinite(x) && x > 0; }

/* Options that do not depend on the data. */
static graft_status resolve_shape(graft_train_opts *o, const graft_config *cfg) {
    if (!(o->val_frac >= 0 && o->val_frac < 1)) return graft_fail(GRAFT_ERR_INVALID, "val_frac %g must be in [0, 1)", o->val_frac);
    if (!is_finite_pos(o->lr)) return graft_fail(GRAFT_ERR_INVALID, "lr %g must be a positive number", o->lr);
    if (o->min_lr < 0) o->min_lr = o->lr / 10;
    if (!(o->min_lr <= o->lr)) return graft_fail(GRAFT_ERR_INVALID, "min_lr %g must not exceed lr %g", o->min_lr, o->lr);
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
        return graft_fail(GRAFT_ERR_INVALID, "beta1 %g and beta2 %g must be in [0, 1)", o->beta1, o->beta2);
    if (!is_finite_pos(o->eps)) return graft_fail(GRAFT_ERR_INVALID, "eps %g must be positive", o->eps);
    if (!(o->wd >= 0 && isfinite(o->wd))) return graft_fail(GRAFT_ERR_INVALID, "weight decay %g must be >= 0", o->wd);
    if (!(o->clip >= 0 && isfinite(o->clip))) return graft_fail(GRAFT_ERR_INVALID, "clip %g must be >= 0", o->clip);
    if (!(o->prompt_weight >= 0 && isfinite(o->prompt_weight)))
        return graft_fail(GRAFT_ERR_INVALID, "prompt_weight %g must be >= 0", o->prompt_weight);
    if (o->steps < 0) return graft_fail(GRAFT_ERR_INVALID, "steps %ld must be >= 0", o->steps);
    if (o->steps == 0 && !is_finite_pos(o->epochs))
        return graft_fail(GRAFT_ERR_INVALID, "give a positive number of steps or epochs");
    if (o->dtype != GRAFT_F32 && o->dtype != GRAFT_F16 && o->dtype != GRAFT_BF16)
        return graft_fail(GRAFT_ERR_INVALID, "dtype must be F32, F16 or BF16");
    if (o->eval_every < 0 || o->ckpt_every < 0 || o->stop_after < 0)
        return graft_fail(GRAFT_ERR_INVALID, "eval_every, ckpt_every and stop_after must be >= 0");
    if (o->seq_len == 0) o->seq_len = cfg->n_ctx < 256 ? cfg->n_ctx : 256;
    if (o->seq_len < 2 || o->seq_len > cfg->n_ctx)
        return graft_fail(GRAFT_ERR_INVALID, "seq_len %d must be in [2, %d] (the model's context)", o->seq_len, cfg->n_ctx);
    if (o->batch_tokens < o->seq_len)
        return graft_fail(GRAFT_ERR_INVALID, "batch_tokens %d must be at least seq_len %d", o->batch_tokens, o->seq_len);
    if (o->micro_tokens == 0) {
        double fit = MICRO_BUDGET_BYTES / bytes_per_token(cfg, o->seq_len);
        if (fit >= o->batch_tokens) o->micro_tokens = o->batch_tokens;
        else if (fit < o->seq_len) o->micro_tokens = o->seq_len;
        else o->micro_tokens = (int)(fit / o->seq_len) * o->seq_len;
    }
    if (o->micro_tokens < o->seq_len)
        return graft_fail(GRAFT_ERR_INVALID, "micro_tokens %d must be at least seq_len %d", o->micro_tokens, o->seq_len);
    if (o->micro_tokens > o->batch_tokens) o->micro_tokens = o->batch_tokens;
    return GRAFT_OK;
}

static long batches_in_epoch(session *S, long epoch) {
    uint64_t rng = train_epoch_rng(S->s.o.seed, epoch);
    train_shuffle(&S->data, S->perm, &rng);
    long n = 0;
    for (int c = 0; c < S->data.n_train;) {
        c += train_pack(&S->data, S->perm, S->data.n_train, c, S->s.o.batch_tokens);
        n++;
    }
    return n;
}

/* Options that depend on the data: the number of steps and what follows from it. */
static graft_status resolve_length(session *S) {
    graft_train_opts *o = &S->s.o;
    long total = o->steps;
    if (total == 0) {
        long full = (long)floor(o->epochs);
        for (long e = 0; e < full; e++) total += batches_in_epoch(S, e);
        double frac = o->epochs - (double)full;
        if (frac > 0) total += (long)ceil(frac * (double)batches_in_epoch(S, full));
        if (total < 1) total = 1;
    }
    S->s.total_steps = total;
    o->steps = total;
    if (o->warmup < 0) o->warmup = total / 20;
    if (o->eval_every == 0) o->eval_every = (total + 9) / 10;
    if (o->ckpt_every == 0) o->ckpt_every = (total + 4) / 5;
    return GRAFT_OK;
}

static graft_status special_ids(session *S) {
    graft_tokenizer *tok = S->m->tok;
    /* SentencePiece models expect BOS first; GPT-2 style models have none. */
    S->bos = strcmp(graft_tokenizer_kind(tok), "llama2c-spm") == 0 ? graft_tokenizer_bos(tok) : -1;
    S->eos = graft_tokenizer_eos(tok);
    if (S->eos < 0) S->eos = S->m->cfg.eos_id;
    int V = S->m->cfg.vocab_size;
    if (S->eos >= V || S->bos >= V)
        return graft_fail(GRAFT_ERR_INVALID, "the tokenizer's BOS/EOS (%d/%d) is outside the model's vocabulary of %d",
                          S->bos, S->eos, V);
    if (graft_tokenizer_vocab_size(tok) > V)
        return graft_fail(GRAFT_ERR_INVALID, "the tokenizer has %d tokens but the model's vocabulary only %d",
                          graft_tokenizer_vocab_size(tok), V);
    return GRAFT_OK;
}

/* Buffers of the loop, allocated once: a run for one micro-batch, the
 * gradients, the AdamW moments, the epoch order and the batch arrays. */
static graft_status session_setup(session *S) {
    const graft_train_opts *o = &S->s.o;
    int cap = o->micro_tokens;
    GRAFT_TRY(graft_run_create(S->m, cap, cap, o->seq_len, 1, &S->run));
    GRAFT_TRY(graft_grads_create(S->m, &S->g));
    S->have_grads = true;
    GRAFT_TRY(train_adamw_init(&S->opt, &S->m->params));
    S->ids = malloc((size_t)cap * sizeof *S->ids);
    S->lens = malloc((size_t)cap * sizeof *S->lens);
    S->out_rows = malloc((size_t)cap * sizeof *S->out_rows);
    S->targets = malloc((size_t)cap * sizeof *S->targets);
    S->wts = malloc((size_t)cap * sizeof *S->wts);
    S->log_path = graft_path_join(S->out_dir, "train_log.jsonl");
    S->svg_path = graft_path_join(S->out_dir, "loss.svg");
    if (!S->ids || !S->lens || !S->out_rows || !S->targets || !S->wts || !S->log_path || !S->svg_path)
        return graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
    return GRAFT_OK;
}

static graft_status load_data(session *S, const char *path) {
    const graft_train_opts *o = &S->s.o;
    GRAFT_TRY(special_ids(S));
    GRAFT_TRY(train_data_load(&S->data, path, S->m->tok, S->bos, S->eos, o->seq_len, S->m->cfg.vocab_size));
    GRAFT_TRY(train_data_split(&S->data, o->val_frac, o->seed));
    S->perm = malloc((size_t)S->data.n_train * sizeof *S->perm);
    if (!S->perm) return graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
    return GRAFT_OK;
}

/* ================================================================ one pass */

/* Loss weight of row i of a sequence (it predicts token i+1). */
static double row_weight(const train_seq *q, int i, double pw) { return i + 1 < q->n_prompt ? pw : 1.0; }

static double seq_weight(const train_seq *q, double pw) {
    int prompt_rows = q->n_prompt > 1 ? q->n_prompt - 1 : 0;
    if (prompt_rows > q->len - 1) prompt_rows = q->len - 1;
    return (double)(q->len - 1 - prompt_rows) + pw * prompt_rows;
}

/*
 * Forward (and backward when train) of the sequences idx[0..n) as one packed
 * micro-batch. Row weights are multiplied by scale: 1/(weight of the whole
 * batch) when training, so gradients of the micro-batches add up to those of
 * the batch's weighted mean loss; 1 when evaluating. Adds sum(w * scale * CE)
 * to *wloss and sum(w) to *wsum. Rows of weight 0 get no logits at all.
 */
static graft_status run_micro(session *S, const int *idx, int n, bool train, double scale, double *wloss,
                              double *wsum) {
    const train_data *d = &S->data;
    double pw = S->s.o.prompt_weight;
    int T = 0, no = 0;
    for (int j = 0; j < n; j++) {
        const train_seq *q = &d->seq[idx[j]];
        memcpy(S->ids + T, d->tok + q->off, (size_t)q->len * sizeof(int));
        S->lens[j] = q->len;
        for (int i = 0; i + 1 < q->len; i++) {
            double w = row_weight(q, i, pw);
            if (w <= 0) continue;
            S->out_rows[no] = T + i;
            S->targets[no] = d->tok[q->off + (size_t)i + 1];
            S->wts[no] = (float)(w * scale);
            *wsum += w;
            no++;
        }
        T += q->len;
    }
    if (no == 0) return GRAFT_OK;
    GRAFT_TRY(graft_run_set_batch(S->run, S->ids, S->lens, n, S->out_rows, no));
    GRAFT_TRY(graft_run_forward(S->run));
    double l = 0;
    GRAFT_TRY(graft_run_loss(S->run, S->targets, S->wts, &l, NULL));
    *wloss += l;
    if (train) GRAFT_TRY(graft_run_backward(S->run, S->targets, S->wts, &S->g, -1, GRAFT_SITE_BLOCK_IN));
    return GRAFT_OK;
}

/* Run idx[0..n) in micro-batches of at most micro_tokens tokens. */
static graft_status run_chunks(session *S, const int *idx, int n, bool train, double scale, double *wloss,
                               double *wsum, long *tokens) {
    int start = 0;
    long t = 0;
    for (int j = 0; j <= n; j++) {
        int len = j < n ? S->data.seq[idx[j]].len : 0;
        if (j == n || (j > start && t + len > S->s.o.micro_tokens)) {
            if (j > start) GRAFT_TRY(run_micro(S, idx + start, j - start, train, scale, wloss, wsum));
            start = j;
            t = 0;
        }
        t += len;
        *tokens += len;
    }
    return GRAFT_OK;
}

/* Weighted mean loss over the validation split (NAN when there is none). */
static graft_status evaluate(session *S, double *out) {
    *out = NAN;
    if (S->data.n_val == 0) return GRAFT_OK;
    double wl = 0, ws = 0;
    long tokens = 0;
    GRAFT_TRY(run_chunks(S, S->data.val, S->data.n_val, false, 1.0, &wl, &ws, &tokens));
    if (ws > 0) *out = wl / ws;
    return GRAFT_OK;
}

/* ================================================================ log and checkpoints */

static void json_num(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ", \"%s\": ", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f); /* JSON has no NaN */
}

static graft_status log_line(session *S, long step, double epoch, double lr, double loss, double gn, long tokens,
                             double tps, double val) {
    FILE *f = S->log;
    fprintf(f, "{\"step\": %ld", step);
    if (step > 0) {
        json_num(f, "epoch", epoch, "%.4f");
        json_num(f, "lr", lr, "%.6e");
        json_num(f, "loss", loss, "%.6f");
        json_num(f, "grad_norm", gn, "%.6f");
        fprintf(f, ", \"tokens\": %ld", tokens);
        json_num(f, "tokens_per_s", tps, "%.1f");
    }
    if (!isnan(val)) json_num(f, "val_loss", val, "%.6f");
    fputs("}\n", f);
    if (fflush(f) != 0 || ferror(f))
        return graft_fail(GRAFT_ERR_IO, "%s: write failed: %s", S->log_path, strerror(errno));
    return GRAFT_OK;
}

static graft_status checkpoint(session *S) {
    S->s.adam_t = S->opt.t;
    GRAFT_TRY(train_ckpt_write(S->out_dir, S->m, &S->opt, &S->s));
    S->last_ckpt = S->s.step;
    return train_write_svg(S->svg_path, &S->th, &S->vh);
}

/* ================================================================ the loop */

static graft_status loop(session *S, graft_train_result *res) {
    train_state *s = &S->s;
    const graft_train_opts *o = &s->o;
    const train_data *d = &S->data;
    double t_start = train_now(), t_steps = 0, elapsed0 = s->elapsed_s;
    long tokens = 0;
    uint64_t rng = s->epoch_rng;
    train_shuffle(d, S->perm, &rng);
    S->last_ckpt = s->step;
    res->total_steps = s->total_steps;
    train_progress_start(&S->prog, s->step, s->total_steps);

    while (s->step < s->total_steps) {
        if ((o->interrupt && *o->interrupt) || (o->stop_after > 0 && s->step >= o->stop_after)) break;
        if (s->cursor >= d->n_train) {
            s->epoch++;
            s->cursor = 0;
            s->epoch_rng = rng = train_epoch_rng(o->seed, s->epoch);
            train_shuffle(d, S->perm, &rng);
        }
        double t0 = train_now();
        long step = s->step + 1;
        double lr = graft_train_lr_at(step, s->total_steps, o->warmup, o->lr, o->min_lr);
        int k = train_pack(d, S->perm, d->n_train, s->cursor, o->batch_tokens);
        const int *batch = S->perm + s->cursor;
        double W = 0;
        for (int j = 0; j < k; j++) W += seq_weight(&d->seq[batch[j]], o->prompt_weight);
        graft_grads_zero(&S->g);
        double loss = 0, ws = 0;
        long bt = 0;
        if (W > 0) GRAFT_TRY(run_chunks(S, batch, k, true, 1.0 / W, &loss, &ws, &bt));
        double gn = train_grad_norm(&S->opt, &S->g);
        double scale = (o->clip > 0 && gn > o->clip) ? o->clip / (gn + 1e-6) : 1.0;
        train_adamw_step(&S->opt, &S->m->params, &S->g, lr, scale, o->beta1, o->beta2, o->eps, o->wd);
        s->cursor += k;
        s->step = step;
        s->tokens_seen += bt;
        double dt = train_now() - t0;
        t_steps += dt;
        tokens += bt;
        if (!train_hist_push(&S->th, step, loss)) return graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
        double val = NAN;
        if (step % o->eval_every == 0 || step == s->total_steps) {
            GRAFT_TRY(evaluate(S, &val));
            if (!isnan(val)) {
                if (!train_hist_push(&S->vh, step, val)) return graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
                train_progress_note(&S->prog, "step %ld: train loss %.4f, validation loss %.4f", step, loss, val);
            }
        }
        double epoch = (double)s->epoch + (double)s->cursor / (double)d->n_train;
        GRAFT_TRY(log_line(S, step, epoch, lr, loss, gn, bt, dt > 0 ? (double)bt / dt : 0, val));
        s->elapsed_s = elapsed0 + (train_now() - t_start);
        if (step % o->ckpt_every == 0 && step < s->total_steps) GRAFT_TRY(checkpoint(S));
        train_progress_step(&S->prog, step, loss, t_steps > 0 ? (double)tokens / t_steps : 0);
    }
    train_progress_end(&S->prog);
    s->elapsed_s = elapsed0 + (train_now() - t_start);
    res->finished = s->step == s->total_steps;
    /* The last checkpoint always matches the end of the call: a finished run
     * can be extended with more steps, a stopped one resumed. */
    if (S->last_ckpt != s->step || res->finished) GRAFT_TRY(checkpoint(S));
    GRAFT_TRY(train_write_svg(S->svg_path, &S->th, &S->vh));
    if (res->finished) GRAFT_TRY(graft_model_save_hf(S->m, S->out_dir, o->dtype));

    res->step = s->step;
    res->n_train = d->n_train;
    res->n_val = d->n_val;
    res->tokens = tokens;
    res->tokens_per_s = t_steps > 0 ? (double)tokens / t_steps : 0;
    res->wall_s = train_now() - t_start;
    res->first_loss = res->last_loss = res->first_val_loss = res->val_loss = NAN;
    if (S->th.n > 0 && S->th.p[0].step == 1) res->first_loss = S->th.p[0].loss;
    if (S->th.n > 0) {
        size_t k = S->th.n < 10 ? S->th.n : 10;
        double sum = 0;
        for (size_t i = S->th.n - k; i < S->th.n; i++) sum += S->th.p[i].loss;
        res->last_loss = sum / (double)k;
    }
    if (S->vh.n > 0 && S->vh.p[0].step == 0) res->first_val_loss = S->vh.p[0].loss;
    if (S->vh.n > 0) res->val_loss = S->vh.p[S->vh.n - 1].loss;
    return GRAFT_OK;
}

/* ================================================================ entry points */

static void init_result(graft_train_result *res) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->last_loss = res->first_val_loss = res->val_loss = NAN;
}

graft_status graft_train(graft_model *m, const graft_train_opts *opts, graft_train_result *res) {
    if (!m || !opts || !res) return graft_fail(GRAFT_ERR_INVALID, "graft_train: NULL argument");
    init_result(res);
    if (!m->tok) return graft_fail(GRAFT_ERR_INVALID, "training needs a tokenizer: attach one to the model");
    if (!opts->data_path || !opts->out_dir) return graft_fail(GRAFT_ERR_INVALID, "training needs a data file and an output folder");
    GRAFT_TRY(graft_model_need_f32(m)); /* the optimiser writes f32 weights */
    char *existing = NULL;
    if (train_ckpt_find(opts->out_dir, &existing) == GRAFT_OK) {
        free(existing);
        return graft_fail(GRAFT_ERR_INVALID, "%s already holds a checkpoint: resume it, or train into another folder",
                          opts->out_dir);
    }
    graft_clear_error();

    session S = {0};
    S.m = m;
    S.out_dir = opts->out_dir;
    S.s.o = *opts;
    graft_set_threads(opts->threads);
    S.s.o.threads = graft_get_threads();
    graft_status st = resolve_shape(&S.s.o, &m->cfg);
    if (st == GRAFT_OK) st = load_data(&S, opts->data_path);
    if (st == GRAFT_OK) st = resolve_length(&S);
    if (st == GRAFT_OK) st = graft_mkdir_p(opts->out_dir);
    if (st == GRAFT_OK) st = session_setup(&S);
    if (st == GRAFT_OK) {
        train_state *s = &S.s;
        s->epoch_rng = train_epoch_rng(s->o.seed, 0);
        s->rope_interleaved = m->cfg.arch == GRAFT_ARCH_LLAMA && m->cfg.rope_interleaved;
        snprintf(s->tokenizer_file, sizeof s->tokenizer_file, "%s",
                 strcmp(graft_tokenizer_kind(m->tok), "llama2c-spm") == 0 ? "tokenizer.bin" : "tokenizer.json");
        s->data_path = strdup(S.data.path);
        s->data_bytes = S.data.bytes;
        s->data_hash = S.data.hash;
        s->n_seq = S.data.n_seq;
        s->n_train = S.data.n_train;
        s->n_val = S.data.n_val;
        S.log = fopen(S.log_path, "w");
        if (!s->data_path) st = graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
        else if (!S.log) st = graft_fail(GRAFT_ERR_IO, "%s: cannot create: %s", S.log_path, strerror(errno));
    }
    train_progress_init(&S.prog, opts->progress);
    if (st == GRAFT_OK && S.data.n_val > 0) {
        double val;
        st = evaluate(&S, &val);
        if (st == GRAFT_OK && !train_hist_push(&S.vh, 0, val)) st = graft_fail(GRAFT_ERR_NOMEM, "training: out of memory");
        if (st == GRAFT_OK) st = log_line(&S, 0, 0, 0, 0, 0, 0, 0, val);
        if (st == GRAFT_OK) train_progress_note(&S.prog, "step 0: validation loss %.4f", val);
    }
    if (st == GRAFT_OK) st = loop(&S, res);
    S.s.o.data_path = S.s.o.out_dir = NULL;
    session_free(&S);
    return st;
}

/* Undo the q/k row permutation a checkpoint of a llama2.c-style model was
 * saved with, so the resumed model is the same bits as the one that stopped. */
static graft_status unpermute_rope(graft_model *m) {
    const graft_config *c = &m->cfg;
    GRAFT_TRY(graft_model_need_f32(m));
    for (int i = 0; i < m->params.n; i++) {
        graft_param *p = &m->params.p[i];
        bool q = ends_with(p->name, ".self_attn.q_proj.weight"), k = ends_with(p->name, ".self_attn.k_proj.weight");
        if (!q && !k) continue;
        float *copy = malloc(p->numel * sizeof(float));
        if (!copy) return graft_fail(GRAFT_ERR_NOMEM, "resume: out of memory");
        memcpy(copy, p->data, p->numel * sizeof(float));
        graft_rope_permute_rows(p->data, copy, q ? c->n_head : c->n_kv_head, c->head_dim, (size_t)p->shape[1], 0);
        free(copy);
    }
    m->cfg.rope_interleaved = 1;
    return GRAFT_OK;
}

graft_status graft_train_resume(const char *out_dir, const graft_train_resume_opts *ro, graft_train_result *res) {
    if (!out_dir || !ro || !res) return graft_fail(GRAFT_ERR_INVALID, "graft_train_resume: NULL argument");
    init_result(res);
    session S = {0};
    S.out_dir = out_dir;
    char *dir = NULL;
    graft_model *m = NULL;
    graft_status st = train_ckpt_find(out_dir, &dir);
    if (st == GRAFT_OK) st = train_state_read(dir, &S.s);
    if (st != GRAFT_OK) goto done;
    graft_train_opts *o = &S.s.o;
    /* What a resumed run may change. */
    if (ro->threads > 0) o->threads = ro->threads;
    graft_set_threads(o->threads);
    if (ro->steps > 0) {
        if (ro->steps < S.s.step) {
            st = graft_fail(GRAFT_ERR_INVALID, "the checkpoint is at step %ld; cannot resume to %ld steps", S.s.step,
                            ro->steps);
            goto done;
        }
        S.s.total_steps = o->steps = ro->steps;
    }
    if (ro->eval_every > 0) o->eval_every = ro->eval_every;
    if (ro->ckpt_every > 0) o->ckpt_every = ro->ckpt_every;
    if (ro->dtype >= 0) o->dtype = (graft_dtype)ro->dtype;
    if (o->dtype != GRAFT_F32 && o->dtype != GRAFT_F16 && o->dtype != GRAFT_BF16) {
        st = graft_fail(GRAFT_ERR_INVALID, "dtype must be F32, F16 or BF16");
        goto done;
    }
    o->stop_after = ro->stop_after;
    o->progress = ro->progress;
    o->interrupt = ro->interrupt;

    if ((st = graft_model_load(dir, &m)) != GRAFT_OK) goto done;
    S.m = m;
    if (strcmp(S.s.tokenizer_file, "tokenizer.bin") == 0) {
        char *tp = graft_path_join(dir, "tokenizer.bin");
        graft_tokenizer *tok = NULL;
        st = tp ? graft_tokenizer_load(tp, &tok) : graft_fail(GRAFT_ERR_NOMEM, "resume: out of memory");
        free(tp);
        if (st != GRAFT_OK) goto done;
        graft_model_set_tokenizer(m, tok);
    }
    if (!m->tok) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: the checkpoint has no tokenizer", dir);
        goto done;
    }
    if (S.s.rope_interleaved && (st = unpermute_rope(m)) != GRAFT_OK) goto done;

    const char *data_path = ro->data_path ? ro->data_path : S.s.data_path;
    if ((st = load_data(&S, data_path)) != GRAFT_OK) goto done;
    if (S.data.bytes != S.s.data_bytes || S.data.hash != S.s.data_hash || S.data.n_seq != S.s.n_seq ||
        S.data.n_train != S.s.n_train || S.data.n_val != S.s.n_val) {
        st = graft_fail(GRAFT_ERR_INVALID, "%s: the data differs from the file the checkpoint was trained on (%s)",
                        data_path, S.s.data_path);
        goto done;
    }
    if (strcmp(S.data.path, S.s.data_path) != 0) { /* moved: later resumes look here */
        char *np = strdup(S.data.path);
        if (!np) {
            st = graft_fail(GRAFT_ERR_NOMEM, "resume: out of memory");
            goto done;
        }
        free(S.s.data_path);
        S.s.data_path = np;
    }
    if ((st = session_setup(&S)) != GRAFT_OK) goto done;
    if ((st = train_adamw_load(&S.opt, &m->params, dir)) != GRAFT_OK) goto done;
    S.opt.t = S.s.adam_t;
    if ((st = train_log_rewind(S.log_path, S.s.step, &S.th, &S.vh)) != GRAFT_OK) goto done;
    S.log = fopen(S.log_path, "a");
    if (!S.log) {
        st = graft_fail(GRAFT_ERR_IO, "%s: cannot open: %s", S.log_path, strerror(errno));
        goto done;
    }
    train_progress_init(&S.prog, o->progress);
    train_progress_note(&S.prog, "resuming %s at step %ld of %ld", dir, S.s.step, S.s.total_steps);
    st = loop(&S, res);
done:
    S.s.o.data_path = S.s.o.out_dir = NULL;
    session_free(&S);
    graft_model_free(m);
    free(dir);
    return st;
}
