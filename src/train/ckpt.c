/* ckpt.c - checkpoints: the model as an HF folder, the AdamW moments in
 * optimizer.safetensors and trainer_state.json, committed as one folder with
 * a rename so that a crash never leaves a half-written checkpoint. */
#define _GNU_SOURCE
#include "train/train_impl.h"

#include "model/save.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FILE "trainer_state.json"
#define OPTIM_FILE "optimizer.safetensors"
#define STATE_FORMAT "graft-trainer-state"
#define STATE_VERSION 1

/* ================================================================ folders */

/* Remove a folder of plain files (all a checkpoint holds). */
static graft_status remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return GRAFT_OK;
        return graft_fail(GRAFT_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    }
    graft_status st = GRAFT_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = graft_path_join(dir, de->d_name);
        if (!p) {
            st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        if (unlink(p) != 0 && errno != ENOENT) st = graft_fail(GRAFT_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
        if (st != GRAFT_OK) break;
    }
    closedir(d);
    if (st == GRAFT_OK && rmdir(dir) != 0 && errno != ENOENT)
        st = graft_fail(GRAFT_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return st;
}

/* ================================================================ trainer_state.json */

static const char *dtype_str(graft_dtype dt) { return graft_dtype_name(dt); }

static int dtype_parse(const char *s) {
    if (!strcmp(s, "F32")) return GRAFT_F32;
    if (!strcmp(s, "F16")) return GRAFT_F16;
    if (!strcmp(s, "BF16")) return GRAFT_BF16;
    return -1;
}

static void state_json(graft_sbuf *b, const train_state *s) {
    const graft_train_opts *o = &s->o;
    /* %.17g: doubles read back to the same bits; 64-bit integers that a
     * double cannot hold are strings. */
    graft_sb_printf(b, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n", STATE_FORMAT, STATE_VERSION);
    graft_sb_printf(b, "  \"step\": %ld,\n  \"total_steps\": %ld,\n  \"epoch\": %ld,\n  \"cursor\": %d,\n", s->step,
                    s->total_steps, s->epoch, s->cursor);
    graft_sb_printf(b, "  \"epoch_rng\": \"%" PRIu64 "\",\n  \"tokens_seen\": %ld,\n  \"elapsed_s\": %.17g,\n",
                    s->epoch_rng, s->tokens_seen, s->elapsed_s);
    graft_sb_printf(b, "  \"adam_t\": %ld,\n  \"rope_interleaved\": %d,\n  \"tokenizer\": ", s->adam_t,
                    s->rope_interleaved);
    graft_sb_json_str(b, s->tokenizer_file, strlen(s->tokenizer_file));
    graft_sb_str(b, ",\n  \"data\": {\n    \"path\": ");
    graft_sb_json_str(b, s->data_path ? s->data_path : "", s->data_path ? strlen(s->data_path) : 0);
    graft_sb_printf(b, ",\n    \"bytes\": %zu,\n    \"fnv1a64\": \"%016" PRIx64 "\",\n    \"sequences\": %d,\n"
                       "    \"train\": %d,\n    \"val\": %d\n  },\n",
                    s->data_bytes, s->data_hash, s->n_seq, s->n_train, s->n_val);
    graft_sb_printf(b, "  \"options\": {\n    \"val_frac\": %.17g,\n    \"seq_len\": %d,\n    \"batch_tokens\": %d,\n"
                       "    \"micro_tokens\": %d,\n    \"lr\": %.17g,\n    \"min_lr\": %.17g,\n    \"warmup\": %ld,\n"
                       "    \"wd\": %.17g,\n    \"beta1\": %.17g,\n    \"beta2\": %.17g,\n    \"eps\": %.17g,\n"
                       "    \"clip\": %.17g,\n    \"prompt_weight\": %.17g,\n    \"seed\": \"%" PRIu64 "\",\n"
                       "    \"threads\": %d,\n    \"eval_every\": %ld,\n    \"ckpt_every\": %ld,\n    \"dtype\": \"%s\"\n  }\n}\n",
                    o->val_frac, o->seq_len, o->batch_tokens, o->micro_tokens, o->lr, o->min_lr, o->warmup, o->wd,
                    o->beta1, o->beta2, o->eps, o->clip, o->prompt_weight, o->seed, o->threads, o->eval_every,
                    o->ckpt_every, dtype_str(o->dtype));
}

typedef struct jreader {
    const cJSON *obj;
    const char *path;
    const char *where;
    graft_status st;
} jreader;

static const cJSON *jget(jreader *r, const char *key) {
    if (r->st != GRAFT_OK) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
    if (!v) r->st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s\"%s\" is missing", r->path, r->where, key);
    return v;
}

static double jnum(jreader *r, const char *key) {
    const cJSON *v = jget(r, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) {
        r->st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s\"%s\" must be a number", r->path, r->where, key);
        return 0;
    }
    return v->valuedouble;
}

static long jlong(jreader *r, const char *key) {
    double x = jnum(r, key);
    if (r->st == GRAFT_OK && (x != floor(x) || fabs(x) > 9e15)) {
        r->st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s\"%s\" must be an integer", r->path, r->where, key);
        return 0;
    }
    return (long)x;
}

static const char *jstr(jreader *r, const char *key) {
    const cJSON *v = jget(r, key);
    if (!v) return "";
    if (!cJSON_IsString(v)) {
        r->st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s\"%s\" must be a string", r->path, r->where, key);
        return "";
    }
    return v->valuestring;
}

static uint64_t ju64(jreader *r, const char *key, int base) {
    const char *s = jstr(r, key);
    if (r->st != GRAFT_OK) return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, base);
    if (!*s || *end || errno) {
        r->st = graft_fail(GRAFT_ERR_FORMAT, "%s: %s\"%s\" is not a 64-bit integer", r->path, r->where, key);
        return 0;
    }
    return (uint64_t)x;
}

graft_status train_state_read(const char *ckpt_dir, train_state *s) {
    memset(s, 0, sizeof *s);
    char *path = graft_path_join(ckpt_dir, STATE_FILE);
    if (!path) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", ckpt_dir);
    char *text = NULL;
    graft_status st = graft_read_file(path, &text, NULL);
    cJSON *root = st == GRAFT_OK ? cJSON_Parse(text) : NULL;
    free(text);
    if (st == GRAFT_OK && !cJSON_IsObject(root)) st = graft_fail(GRAFT_ERR_FORMAT, "%s: not a JSON object", path);
    if (st != GRAFT_OK) {
        cJSON_Delete(root);
        free(path);
        return st;
    }
    jreader r = {root, path, "", GRAFT_OK};
    if (strcmp(jstr(&r, "format"), STATE_FORMAT) != 0 && r.st == GRAFT_OK)
        r.st = graft_fail(GRAFT_ERR_FORMAT, "%s: not a graft trainer state (\"format\" is not \"%s\")", path, STATE_FORMAT);
    if (jlong(&r, "version") != STATE_VERSION && r.st == GRAFT_OK)
        r.st = graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: trainer state version is not %d", path, STATE_VERSION);
    s->step = jlong(&r, "step");
    s->total_steps = jlong(&r, "total_steps");
    s->epoch = jlong(&r, "epoch");
    s->cursor = (int)jlong(&r, "cursor");
    s->epoch_rng = ju64(&r, "epoch_rng", 10);
    s->tokens_seen = jlong(&r, "tokens_seen");
    s->elapsed_s = jnum(&r, "elapsed_s");
    s->adam_t = jlong(&r, "adam_t");
    s->rope_interleaved = (int)jlong(&r, "rope_interleaved");
    snprintf(s->tokenizer_file, sizeof s->tokenizer_file, "%s", jstr(&r, "tokenizer"));
    const cJSON *data = jget(&r, "data"), *opts = jget(&r, "options");
    if (r.st == GRAFT_OK) {
        jreader d = {data, path, "data.", GRAFT_OK};
        s->data_path = strdup(jstr(&d, "path"));
        s->data_bytes = (size_t)jlong(&d, "bytes");
        s->data_hash = ju64(&d, "fnv1a64", 16);
        s->n_seq = (int)jlong(&d, "sequences");
        s->n_train = (int)jlong(&d, "train");
        s->n_val = (int)jlong(&d, "val");
        r.st = d.st;
        if (r.st == GRAFT_OK && !s->data_path) r.st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", path);
    }
    if (r.st == GRAFT_OK) {
        jreader q = {opts, path, "options.", GRAFT_OK};
        graft_train_opts *o = &s->o;
        graft_train_opts_default(o);
        o->val_frac = jnum(&q, "val_frac");
        o->seq_len = (int)jlong(&q, "seq_len");
        o->batch_tokens = (int)jlong(&q, "batch_tokens");
        o->micro_tokens = (int)jlong(&q, "micro_tokens");
        o->lr = jnum(&q, "lr");
        o->min_lr = jnum(&q, "min_lr");
        o->warmup = jlong(&q, "warmup");
        o->wd = jnum(&q, "wd");
        o->beta1 = jnum(&q, "beta1");
        o->beta2 = jnum(&q, "beta2");
        o->eps = jnum(&q, "eps");
        o->clip = jnum(&q, "clip");
        o->prompt_weight = jnum(&q, "prompt_weight");
        o->seed = ju64(&q, "seed", 10);
        o->threads = (int)jlong(&q, "threads");
        o->eval_every = jlong(&q, "eval_every");
        o->ckpt_every = jlong(&q, "ckpt_every");
        int dt = dtype_parse(jstr(&q, "dtype"));
        if (q.st == GRAFT_OK && dt < 0) q.st = graft_fail(GRAFT_ERR_FORMAT, "%s: options.dtype is not F32, F16 or BF16", path);
        o->dtype = (graft_dtype)(dt < 0 ? 0 : dt);
        o->steps = s->total_steps;
        r.st = q.st;
    }
    /* Values a resumed run indexes with must make sense. */
    if (r.st == GRAFT_OK &&
        (s->step < 0 || s->step > s->total_steps || s->cursor < 0 || s->cursor > s->n_train || s->epoch < 0 ||
         s->o.seq_len < 2 || s->o.batch_tokens < s->o.seq_len || s->o.micro_tokens < s->o.seq_len ||
         s->o.threads < 1 || s->o.eval_every < 1 || s->o.ckpt_every < 1))
        r.st = graft_fail(GRAFT_ERR_FORMAT, "%s: inconsistent position or options", path);
    st = r.st;
    cJSON_Delete(root);
    free(path);
    if (st != GRAFT_OK) train_state_free(s);
    return st;
}

void train_state_free(train_state *s) {
    free(s->data_path);
    s->data_path = NULL;
}

/* ================================================================ optimizer.safetensors */

static graft_status write_optim(const char *dir, const graft_model *m, const train_adamw *opt) {
    const graft_param_table *t = &m->params;
    int n = 2 * t->n;
    graft_st_write_item *items = calloc((size_t)n + 1, sizeof *items);
    char **names = calloc((size_t)n + 1, sizeof *names);
    char *path = graft_path_join(dir, OPTIM_FILE);
    graft_status st = GRAFT_OK;
    if (!items || !names || !path) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < t->n && st == GRAFT_OK; i++) {
        for (int k = 0; k < 2; k++) {
            const graft_param *p = &t->p[i];
            graft_st_write_item *it = &items[2 * i + k];
            if (asprintf(&names[2 * i + k], "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name) < 0) {
                names[2 * i + k] = NULL;
                st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            it->name = names[2 * i + k];
            it->dtype = GRAFT_F32;
            it->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) it->shape[d] = p->shape[d];
            it->data = k ? opt->v[i] : opt->m[i];
        }
    }
    if (st == GRAFT_OK) {
        char t_str[32];
        snprintf(t_str, sizeof t_str, "%ld", opt->t);
        const char *meta[] = {"format", "graft-adamw", "step", t_str};
        st = graft_st_write(path, items, n, meta, 2);
    }
done:
    if (names)
        for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(items);
    free(path);
    return st;
}

graft_status train_adamw_load(train_adamw *o, const graft_param_table *params, const char *ckpt_dir) {
    char *path = graft_path_join(ckpt_dir, OPTIM_FILE);
    if (!path) return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", ckpt_dir);
    graft_st_archive a;
    graft_status st = graft_st_open(path, &a);
    char name[512];
    for (int i = 0; st == GRAFT_OK && i < params->n; i++) {
        for (int k = 0; k < 2 && st == GRAFT_OK; k++) {
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", params->p[i].name);
            const graft_st_tensor *x = graft_st_find(&a, name);
            if (!x) st = graft_fail(GRAFT_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
            else if (x->dtype != GRAFT_F32 || x->numel != params->p[i].numel)
                st = graft_fail(GRAFT_ERR_FORMAT, "%s: tensor '%s' is not F32 with %zu elements", path, name,
                                params->p[i].numel);
            else memcpy(k ? o->v[i] : o->m[i], x->data, x->numel * sizeof(float));
        }
    }
    graft_st_close(&a); /* safe after a failed open too: it leaves the archive empty */
    free(path);
    return st;
}

/* ================================================================ commit */

static graft_status write_files(const char *dir, const graft_model *m, const train_adamw *opt, const train_state *s) {
    GRAFT_TRY(graft_model_save_hf(m, dir, GRAFT_F32));
    GRAFT_TRY(write_optim(dir, m, opt));
    graft_sbuf b = {0};
    state_json(&b, s);
    char *path = graft_path_join(dir, STATE_FILE);
    graft_status st = path ? graft_sb_write_file(&b, path) : graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", dir);
    free(path);
    graft_sb_free(&b);
    return st;
}

graft_status train_ckpt_write(const char *out_dir, const graft_model *m, const train_adamw *opt, const train_state *s) {
    char *final = graft_path_join(out_dir, "checkpoint");
    char *tmp = graft_path_join(out_dir, "checkpoint.tmp");
    char *old = graft_path_join(out_dir, "checkpoint.old");
    graft_status st = GRAFT_OK;
    if (!final || !tmp || !old) {
        st = graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", out_dir);
        goto done;
    }
    /* A checkpoint.tmp is debris of a write that never committed. */
    if ((st = remove_flat_dir(tmp)) != GRAFT_OK) goto done;
    if (mkdir(tmp, 0755) != 0) {
        st = graft_fail(GRAFT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    if ((st = write_files(tmp, m, opt, s)) != GRAFT_OK) goto done;
    graft_fsync_dir(tmp);
    if (!graft_path_is_dir(final)) {
        if (rename(tmp, final) != 0) st = graft_fail(GRAFT_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        /* One atomic swap; the old checkpoint is now in checkpoint.tmp. */
        graft_fsync_dir(out_dir);
        st = remove_flat_dir(tmp);
    } else {
        /* No exchange on this filesystem: move the old one aside first. A
         * crash between the renames leaves it whole in checkpoint.old. */
        if ((st = remove_flat_dir(old)) != GRAFT_OK) goto done;
        if (rename(final, old) != 0 || rename(tmp, final) != 0) {
            st = graft_fail(GRAFT_ERR_IO, "%s: cannot replace the checkpoint: %s", final, strerror(errno));
            goto done;
        }
        graft_fsync_dir(out_dir);
        st = remove_flat_dir(old);
    }
    /* A checkpoint.old left by a crash is superseded now. */
    if (st == GRAFT_OK) st = remove_flat_dir(old);
    if (st == GRAFT_OK) graft_fsync_dir(out_dir);
done:
    free(final);
    free(tmp);
    free(old);
    return st;
}

graft_status train_ckpt_find(const char *out_dir, char **dir) {
    *dir = NULL;
    static const char *const names[] = {"checkpoint", "checkpoint.old"};
    for (int i = 0; i < 2; i++) {
        char *d = graft_path_join(out_dir, names[i]);
        char *f = d ? graft_path_join(d, STATE_FILE) : NULL;
        if (!d || !f) {
            free(d);
            free(f);
            return graft_fail(GRAFT_ERR_NOMEM, "%s: out of memory", out_dir);
        }
        bool ok = graft_path_exists(f);
        free(f);
        if (ok) {
            *dir = d;
            return GRAFT_OK;
        }
        free(d);
    }
    return graft_fail(GRAFT_ERR_IO, "%s: no checkpoint to resume (looked for %s/checkpoint/%s)", out_dir, out_dir,
                      STATE_FILE);
}
