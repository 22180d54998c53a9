/* test_train.c - the trainer and the Hugging Face writers: a tiny model
 * learns a synthetic corpus, a resumed run ends bit-identical to one that
 * never stopped (also after a crash between the two renames of a checkpoint
 * commit), bad data rows are rejected by row and field, saved models load
 * back to the same logits and config, saved tokenizers to the same ids. */
#define _GNU_SOURCE
#include "engine.h"
#include "model/save.h"
#include "test.h"
#include "tokenizer/tokenizer_save.h"
#include "train/train.h"

#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static char g_tmp[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *p) { nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* malloc'ed "tmp/name" */
static char *tpath(const char *name) { return graft_path_join(g_tmp, name); }

static void write_text(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fwrite(text, 1, n, f);
    fclose(f);
}

static bool same_file_bytes(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool ok = graft_read_file(a, &x, &nx) == GRAFT_OK && graft_read_file(b, &y, &ny) == GRAFT_OK && nx == ny &&
              memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

static graft_config tiny_cfg(graft_arch arch, int tied, int interleaved, int vocab) {
    graft_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.n_layer = 2;
    c.d_model = 32;
    c.n_head = 4;
    c.n_kv_head = arch == GRAFT_ARCH_GPT2 ? 4 : 2;
    c.head_dim = 8;
    c.d_ff = arch == GRAFT_ARCH_GPT2 ? 128 : 48;
    c.vocab_size = vocab;
    c.n_ctx = 64;
    c.norm_eps = arch == GRAFT_ARCH_GPT2 ? 1e-5f : 1e-6f;
    c.rope_theta = arch == GRAFT_ARCH_GPT2 ? 0.0f : 10000.0f;
    c.rope_interleaved = interleaved;
    c.tied = tied;
    c.bos_id = c.eos_id = 256;
    return c;
}

static graft_model *tiny_model(graft_config c, uint64_t seed) {
    graft_model *m = NULL;
    CHECK_OK(graft_train_init_model(&c, seed, &m));
    graft_tokenizer *tok = NULL;
    CHECK_OK(graft_tokenizer_create_bytes(&tok));
    if (m) graft_model_set_tokenizer(m, tok);
    return m;
}

static bool same_config(const graft_config *a, const graft_config *b) {
    return a->arch == b->arch && a->n_layer == b->n_layer && a->d_model == b->d_model && a->n_head == b->n_head &&
           a->n_kv_head == b->n_kv_head && a->head_dim == b->head_dim && a->d_ff == b->d_ff &&
           a->vocab_size == b->vocab_size && a->n_ctx == b->n_ctx && a->norm_eps == b->norm_eps &&
           a->rope_theta == b->rope_theta && a->rope_interleaved == b->rope_interleaved && a->tied == b->tied &&
           a->bos_id == b->bos_id && a->eos_id == b->eos_id;
}

/* Logits of one fixed sequence, malloc'ed [n, V]. */
static float *logits_of(graft_model *m, int n) {
    int *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11) % m->cfg.vocab_size;
    graft_run *r = NULL;
    float *out = NULL;
    CHECK_OK(graft_run_create(m, n, n, n, 0, &r));
    if (r && graft_run_set_batch(r, ids, &n, 1, NULL, n) == GRAFT_OK && graft_run_forward(r) == GRAFT_OK) {
        out = malloc((size_t)n * m->cfg.vocab_size * sizeof *out);
        memcpy(out, r->logits, (size_t)n * m->cfg.vocab_size * sizeof *out);
    }
    CHECK(out != NULL);
    graft_run_free(r);
    free(ids);
    return out;
}

/* A synthetic corpus with plenty of structure: "NAME lives in CITY." */
static char *corpus_text(int lines, size_t *len) {
    static const char *names[] = {"alice", "bob", "carol", "dave", "erin", "frank"};
    static const char *cities[] = {"paris", "rome", "oslo", "lima", "cairo", "tokyo"};
    size_t cap = (size_t)lines * 64 + 1, k = 0;
    char *s = malloc(cap);
    uint64_t r = 99;
    for (int i = 0; i < lines; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int a = (int)((r >> 33) % 6);
        k += (size_t)snprintf(s + k, cap - k, "%s lives in %s. ", names[a], cities[(a * 5 + 1) % 6]);
    }
    *len = k;
    return s;
}

static void base_opts(graft_train_opts *o, const char *data, const char *out) {
    graft_train_opts_default(o);
    o->data_path = data;
    o->out_dir = out;
    o->seq_len = 32;
    o->batch_tokens = 512;
    o->lr = 3e-3;
    o->threads = 2;
    o->val_frac = 0.1;
    o->seed = 7;
}

/* ---------------------------------------------------------------- learning */

static void test_learns(const char *data) {
    graft_model *m = tiny_model(tiny_cfg(GRAFT_ARCH_GPT2, 1, 0, 257), 3);
    if (!m) return;
    char *out = tpath("learn");
    graft_train_opts o;
    base_opts(&o, data, out);
    o.steps = 80;
    o.batch_tokens = 1024;
    graft_train_result r;
    CHECK_OK(graft_train(m, &o, &r));
    CHECK(r.finished == 1 && r.step == 80);
    CHECK_MSG(r.val_loss < 0.5 * r.first_val_loss, "val loss %.4f from %.4f", r.val_loss, r.first_val_loss);
    CHECK_MSG(r.last_loss < 0.5 * r.first_loss, "train loss %.4f from %.4f", r.last_loss, r.first_loss);
    CHECK(r.tokens > 0 && r.tokens_per_s > 0);
    /* the outputs a user opens */
    char *svg = graft_path_join(out, "loss.svg"), *log = graft_path_join(out, "train_log.jsonl");
    char *text = NULL;
    CHECK_OK(graft_read_file(svg, &text, NULL));
    CHECK(text && strstr(text, "<svg") && strstr(text, "validation loss") && strstr(text, "step"));
    free(text);
    CHECK_OK(graft_read_file(log, &text, NULL));
    int lines = 0;
    for (char *p = text; p && *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 81, "log has %d lines", lines); /* step 0 (validation) + 80 steps */
    CHECK(text && strstr(text, "\"step\": 80,") && strstr(text, "\"grad_norm\"") && strstr(text, "\"val_loss\""));
    free(text);
    /* a trained model loads and continues the pattern it learnt */
    graft_model *back = NULL;
    CHECK_OK(graft_model_load(out, &back));
    if (back) {
        int *ids = NULL;
        size_t n = 0;
        CHECK_OK(graft_tokenize(graft_model_tokenizer(back), "alice lives in ", 15, &ids, &n));
        double nll = 0;
        size_t scored = 0;
        CHECK_OK(graft_score_ids(back, ids, n, 0, &nll, &scored));
        CHECK_MSG(nll < 2.0, "nll of a trained prefix %.3f", nll);
        free(ids);
    }
    graft_model_free(back);
    /* training into a folder that holds a checkpoint is refused */
    graft_train_result r2;
    CHECK_FAILS(graft_train(m, &o, &r2), GRAFT_ERR_INVALID, "checkpoint");
    free(svg);
    free(log);
    free(out);
    graft_model_free(m);
}

/* ---------------------------------------------------------------- resume */

/* Everything but the timing of each log line. */
static char *log_without_timing(const char *dir) {
    char *p = graft_path_join(dir, "train_log.jsonl"), *text = NULL;
    graft_read_file(p, &text, NULL);
    free(p);
    if (!text) return NULL;
    char *w = text;
    for (char *r = text; *r;) {
        if (strncmp(r, ", \"tokens_per_s\": ", 18) == 0) {
            r += 18;
            while (*r && *r != ',' && *r != '}') r++;
            continue;
        }
        *w++ = *r++;
    }
    *w = '\0';
    return text;
}

static void check_same_run(const char *a, const char *b, const char *label) {
    static const char *const files[] = {"model.safetensors", "config.json", "tokenizer.json",
                                        "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *x = graft_path_join(a, files[i]), *y = graft_path_join(b, files[i]);
        CHECK_MSG(same_file_bytes(x, y), "%s: %s differs between the runs", label, files[i]);
        free(x);
        free(y);
    }
    char *la = log_without_timing(a), *lb = log_without_timing(b);
    CHECK_MSG(la && lb && strcmp(la, lb) == 0, "%s: the logs differ", label);
    free(la);
    free(lb);
}

static void test_resume(const char *data, graft_config cfg, const char *label, double pw) {
    char name[64];
    snprintf(name, sizeof name, "%s-whole", label);
    char *whole = tpath(name);
    snprintf(name, sizeof name, "%s-split", label);
    char *split = tpath(name);
    graft_train_opts o;
    graft_train_result r;

    graft_model *m = tiny_model(cfg, 5);
    if (!m) return;
    base_opts(&o, data, whole);
    o.steps = 16;
    o.ckpt_every = 5;
    o.eval_every = 4;
    o.prompt_weight = pw;
    CHECK_OK(graft_train(m, &o, &r));
    CHECK(r.finished);
    graft_model_free(m);

    /* the same run, stopped after step 7 (not a checkpoint step) */
    m = tiny_model(cfg, 5);
    o.out_dir = split;
    o.stop_after = 7;
    CHECK_OK(graft_train(m, &o, &r));
    CHECK(!r.finished && r.step == 7);
    graft_model_free(m);
    graft_train_resume_opts ro;
    graft_train_resume_opts_default(&ro);
    ro.stop_after = 12;
    CHECK_OK(graft_train_resume(split, &ro, &r));
    CHECK(!r.finished && r.step == 12);
    /* A crash between the two renames of the fallback commit leaves the
     * checkpoint in checkpoint.old, and debris in checkpoint.tmp. */
    char *ck = graft_path_join(split, "checkpoint"), *old = graft_path_join(split, "checkpoint.old");
    char *tmp = graft_path_join(split, "checkpoint.tmp");
    CHECK(rename(ck, old) == 0);
    CHECK(mkdir(tmp, 0755) == 0);
    char *junk = graft_path_join(tmp, "model.safetensors");
    write_text(junk, "garbage", 7);
    ro.stop_after = 0;
    CHECK_OK(graft_train_resume(split, &ro, &r));
    CHECK(r.finished && r.step == 16);
    CHECK(!graft_path_exists(tmp));
    check_same_run(whole, split, label);
    /* a finished run can be extended */
    ro.steps = 18;
    CHECK_OK(graft_train_resume(split, &ro, &r));
    CHECK(r.finished && r.step == 18);
    free(junk);
    free(ck);
    free(old);
    free(tmp);
    free(whole);
    free(split);
}

/* ---------------------------------------------------------------- bad rows */

static void expect_bad(const char *label, const char *content, size_t len, graft_status want, const char *s1,
                       const char *s2) {
    char *data = tpath("bad.jsonl"), *out = tpath("bad-out");
    write_text(data, content, len);
    graft_model *m = tiny_model(tiny_cfg(GRAFT_ARCH_GPT2, 1, 0, 257), 1);
    if (!m) return;
    graft_train_opts o;
    base_opts(&o, data, out);
    o.steps = 1;
    graft_train_result r;
    graft_clear_error();
    graft_status st = graft_train(m, &o, &r);
    const char *msg = graft_last_error();
    CHECK_MSG(st == want && strstr(msg, "bad.jsonl") && strstr(msg, s1) && strstr(msg, s2),
              "%s: got %s: \"%s\" (want \"%s\", \"%s\")", label, graft_status_str(st), msg, s1, s2);
    graft_model_free(m);
    free(data);
    free(out);
}

static void test_bad_rows(void) {
    const char ok[] = "{\"text\": \"fine\"}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s{\"text\": \"abc\"\n", ok, ok);
    expect_bad("bad json", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 3", "not valid JSON");
    snprintf(buf, sizeof buf, "%s{\"prompt\": \"a\"}\n", ok);
    expect_bad("missing answer", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 2", "\"answer\"");
    snprintf(buf, sizeof buf, "{\"foo\": 1}\n");
    expect_bad("no field", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 1", "\"text\"");
    snprintf(buf, sizeof buf, "%s\n%s{\"text\": \"ab\xff\"}\n", ok, ok); /* a blank line still counts as a row */
    expect_bad("invalid utf-8", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 4", "\"text\" is not valid UTF-8");
    snprintf(buf, sizeof buf, "{\"prompt\": \"q\", \"answer\": \"a\", \"note\": \"\xc3\x28\"}\n");
    expect_bad("invalid utf-8 elsewhere", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 1", "UTF-8");
    snprintf(buf, sizeof buf, "%s{\"text\": 5}\n", ok);
    expect_bad("not a string", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 2", "\"text\" must be a string");
    snprintf(buf, sizeof buf, "%s{\"text\": \"%s\"}\n", ok, "0123456789012345678901234567890123456789");
    expect_bad("too long", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 2", "longer than the context");
    snprintf(buf, sizeof buf, "{\"prompt\": \"%s\", \"answer\": \"x\"}\n", "0123456789012345678901234567890123456789");
    expect_bad("prompt too long", buf, strlen(buf), GRAFT_ERR_FORMAT, "row 1", "\"prompt\"");
}

/* ---------------------------------------------------------------- saving */

static void roundtrip(graft_config cfg, const char *label, graft_dtype dt) {
    graft_model *m = tiny_model(cfg, 11);
    if (!m) return;
    /* non-trivial norms and biases so that every tensor matters */
    for (int i = 0; i < m->params.n; i++)
        if (m->params.p[i].ndim == 1)
            for (size_t k = 0; k < m->params.p[i].numel; k++) m->params.p[i].data[k] += 0.01f * (float)(k % 5);
    char *dir = tpath(label);
    CHECK_OK(graft_model_save_hf(m, dir, dt));
    graft_model *back = NULL;
    CHECK_OK(graft_model_load(dir, &back));
    if (back) {
        graft_config want = m->cfg;
        want.rope_interleaved = 0; /* HF checkpoints rotate halves; the q/k rows were permuted to match */
        CHECK_MSG(same_config(&want, &back->cfg), "%s: config read back differs", label);
        float *a = logits_of(m, 20), *b = logits_of(back, 20);
        size_t n = (size_t)20 * cfg.vocab_size;
        if (a && b) {
            if (dt == GRAFT_F32 && !cfg.rope_interleaved) {
                CHECK_MSG(memcmp(a, b, n * sizeof *a) == 0, "%s: logits differ", label);
            } else {
                double worst = 0;
                for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
                double tol = dt == GRAFT_F32 ? 1e-4 : dt == GRAFT_F16 ? 2e-2 : 1e-1;
                CHECK_MSG(worst < tol, "%s: logits differ by %g", label, worst);
            }
        }
        free(a);
        free(b);
        /* the tokenizer came along */
        graft_tokenizer *t = graft_model_tokenizer(back);
        CHECK(t && graft_tokenizer_vocab_size(t) == 257 && graft_tokenizer_eos(t) == 256);
    }
    /* config.json as transformers writes it */
    char *cp = graft_path_join(dir, "config.json"), *text = NULL;
    CHECK_OK(graft_read_file(cp, &text, NULL));
    if (text) {
        bool gpt2 = cfg.arch == GRAFT_ARCH_GPT2;
        CHECK(strstr(text, gpt2 ? "\"GPT2LMHeadModel\"" : "\"LlamaForCausalLM\"") != NULL);
        CHECK(strstr(text, gpt2 ? "\"model_type\": \"gpt2\"" : "\"model_type\": \"llama\"") != NULL);
        bool has_tie = strstr(text, "tie_word_embeddings") != NULL;
        CHECK_MSG(gpt2 ? has_tie == !cfg.tied : has_tie, "%s: tie_word_embeddings key", label);
        CHECK(strstr(text, dt == GRAFT_F32 ? "\"float32\"" : dt == GRAFT_F16 ? "\"float16\"" : "\"bfloat16\""));
        CHECK(gpt2 ? strstr(text, "\"layer_norm_epsilon\": 1e-05,") != NULL : strstr(text, "\"rms_norm_eps\": 1e-06,") != NULL);
        cJSON *j = cJSON_Parse(text);
        CHECK(j != NULL);
        /* keys in sorted order (json.dumps(sort_keys=True)) */
        const cJSON *prev = NULL, *it;
        bool sorted = true;
        cJSON_ArrayForEach(it, j) {
            if (prev && strcmp(prev->string, it->string) >= 0) sorted = false;
            prev = it;
        }
        CHECK_MSG(sorted, "%s: config keys not sorted", label);
        cJSON_Delete(j);
    }
    free(text);
    /* the safetensors file carries format=pt, which transformers requires */
    char *sp = graft_path_join(dir, "model.safetensors");
    graft_st_archive a;
    CHECK_OK(graft_st_open(sp, &a));
    CHECK(a.metadata_json && strstr(a.metadata_json, "\"pt\""));
    CHECK(graft_st_find(&a, "lm_head.weight") == NULL || !cfg.tied);
    graft_st_close(&a);
    free(sp);
    free(cp);
    graft_model_free(back);
    graft_model_free(m);
    free(dir);
}

static void test_config_text(void) {
    const char *presets[] = {"gpt2", "gpt2-xl", "llama-tiny"};
    for (int i = 0; i < 3; i++) {
        graft_config c, back;
        CHECK_OK(graft_config_preset(presets[i], &c));
        c.rope_interleaved = 0;
        char *text = NULL;
        CHECK_OK(graft_config_to_json(&c, GRAFT_F32, &text));
        CHECK_OK(graft_config_from_json(&back, text, presets[i]));
        CHECK_MSG(same_config(&c, &back), "preset %s does not survive config.json", presets[i]);
        free(text);
    }
    graft_sbuf b = {0};
    const double v[] = {1e-5, 0.02, 10000.0, 0.1, 1e-6, 123456.0, 1e16, 0.0, 2.5e-7};
    const char *want = "1e-05 0.02 10000.0 0.1 1e-06 123456.0 1e+16 0.0 2.5e-07 ";
    for (int i = 0; i < 9; i++) {
        graft_sb_pyfloat(&b, v[i], i < 5);
        graft_sb_str(&b, " ");
    }
    CHECK_MSG(b.s && strcmp(b.s, want) == 0, "python floats: '%s'", b.s ? b.s : "");
    graft_sb_free(&b);
}

/* ---------------------------------------------------------------- tokenizers */

static bool same_ids(const graft_tokenizer *a, const graft_tokenizer *b, const char *text, size_t len) {
    int *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool ok = graft_tokenize(a, text, len, &x, &nx) == GRAFT_OK && graft_tokenize(b, text, len, &y, &ny) == GRAFT_OK &&
              nx == ny && memcmp(x, y, nx * sizeof *x) == 0;
    free(x);
    free(y);
    return ok;
}

static void test_byte_tokenizer(void) {
    graft_tokenizer *t = NULL, *back = NULL;
    CHECK_OK(graft_tokenizer_create_bytes(&t));
    if (!t) return;
    CHECK(graft_tokenizer_vocab_size(t) == 257 && graft_tokenizer_bos(t) == 256 && graft_tokenizer_eos(t) == 256);
    const char text[] = "Hi w\xc3\xb6rld!<|endoftext|>\xff";
    int *ids = NULL;
    size_t n = 0;
    CHECK_OK(graft_tokenize(t, text, sizeof text - 1, &ids, &n));
    CHECK(n == 12 && ids[0] == 'H' && ids[4] == 0xc3 && ids[5] == 0xb6 && ids[9] == '!' && ids[10] == 256 &&
          ids[11] == 0xff);
    char *dec = NULL;
    size_t dl = 0;
    CHECK_OK(graft_detokenize(t, ids, n, &dec, &dl));
    CHECK(dl == sizeof text - 1 && memcmp(dec, text, dl) == 0);
    free(dec);
    free(ids);
    char *dir = tpath("bytetok");
    CHECK(mkdir(dir, 0755) == 0);
    CHECK_OK(graft_tokenizer_save(t, dir));
    CHECK_OK(graft_tokenizer_load(dir, &back));
    if (back) {
        CHECK(graft_tokenizer_vocab_size(back) == 257 && graft_tokenizer_eos(back) == 256);
        CHECK(same_ids(t, back, text, sizeof text - 1));
        char all[256];
        for (int i = 0; i < 256; i++) all[i] = (char)i;
        CHECK(same_ids(t, back, all, 256));
    }
    /* the tokenizer.json a Hugging Face loader reads */
    char *p = graft_path_join(dir, "tokenizer.json"), *js = NULL;
    CHECK_OK(graft_read_file(p, &js, NULL));
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    CHECK(j != NULL);
    if (j) {
        const cJSON *model = cJSON_GetObjectItem(j, "model"), *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
        CHECK(!strcmp(cJSON_GetObjectItem(model, "type")->valuestring, "BPE"));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(model, "vocab")) == 257);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(model, "merges")) == 0);
        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(model, "vocab"), "\xc4\xa0"))); /* "Ġ" = space */
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(pre, "add_prefix_space")) && cJSON_IsTrue(cJSON_GetObjectItem(pre, "use_regex")));
        CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "decoder"), "type")->valuestring, "ByteLevel"));
        const cJSON *added = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 0);
        CHECK(added && cJSON_GetObjectItem(added, "id")->valueint == 256 &&
              !strcmp(cJSON_GetObjectItem(added, "content")->valuestring, "<|endoftext|>"));
    }
    cJSON_Delete(j);
    free(js);
    free(p);
    p = graft_path_join(dir, "tokenizer_config.json");
    CHECK_OK(graft_read_file(p, &js, NULL));
    j = js ? cJSON_Parse(js) : NULL;
    CHECK(j && !strcmp(cJSON_GetObjectItem(j, "tokenizer_class")->valuestring, "GPT2Tokenizer") &&
          !strcmp(cJSON_GetObjectItem(j, "eos_token")->valuestring, "<|endoftext|>"));
    cJSON_Delete(j);
    free(js);
    free(p);
    graft_tokenizer_free(back);
    graft_tokenizer_free(t);
    free(dir);
}

static void test_gpt2_tokenizer(void) {
    char *src = graft_path_join(test_data_dir(), "gpt2-tokenizer");
    graft_tokenizer *t = NULL, *back = NULL, *slow = NULL;
    if (graft_tokenizer_load(src, &t) != GRAFT_OK) {
        fprintf(stderr, "note: %s not loadable, GPT-2 tokenizer round trip skipped\n", src);
        free(src);
        return;
    }
    char *dir = tpath("gpt2tok"), *dir2 = tpath("gpt2tok-slow");
    CHECK(mkdir(dir, 0755) == 0 && mkdir(dir2, 0755) == 0);
    CHECK_OK(graft_tokenizer_save(t, dir));
    CHECK_OK(graft_tokenizer_load(dir, &back));
    /* vocab.json + merges.txt alone (what the slow GPT2Tokenizer reads) */
    const char *pair[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        char *a = graft_path_join(dir, pair[i]), *b = graft_path_join(dir2, pair[i]), *x = NULL;
        size_t n = 0;
        CHECK_OK(graft_read_file(a, &x, &n));
        if (x) write_text(b, x, n);
        free(x);
        free(a);
        free(b);
    }
    CHECK_OK(graft_tokenizer_load(dir2, &slow));
    char *inp_path = graft_path_join(src, "ggml-vocab-gpt-2.gguf.inp"), *inp = NULL;
    size_t inp_len = 0;
    graft_read_file(inp_path, &inp, &inp_len);
    const char *samples[] = {"Hello world", " Hello World!", "I've been 'there' 3000 times...\n\n",
                             "<|endoftext|>x<|endoftext|>", "\xf0\x9f\x98\x80 emoji and \xe4\xb8\xad\xe6\x96\x87"};
    if (back && slow) {
        CHECK(graft_tokenizer_vocab_size(back) == graft_tokenizer_vocab_size(t));
        CHECK(graft_tokenizer_eos(back) == graft_tokenizer_eos(t) && graft_tokenizer_eos(t) == 50256);
        for (int i = 0; i < 5; i++) {
            CHECK_MSG(same_ids(t, back, samples[i], strlen(samples[i])), "tokenizer.json ids differ: '%s'", samples[i]);
            CHECK_MSG(same_ids(t, slow, samples[i], strlen(samples[i])), "vocab.json ids differ: '%s'", samples[i]);
        }
        if (inp) {
            CHECK_MSG(same_ids(t, back, inp, inp_len), "tokenizer.json ids differ on the ggml test texts");
            CHECK_MSG(same_ids(t, slow, inp, inp_len), "vocab.json ids differ on the ggml test texts");
        }
        /* every id decodes to the same bytes */
        bool same = true;
        for (int id = 0; id < graft_tokenizer_vocab_size(t) && same; id++) {
            const char *pa, *pb;
            size_t la, lb;
            same = graft_token_piece(t, -1, id, &pa, &la) == GRAFT_OK &&
                   graft_token_piece(back, -1, id, &pb, &lb) == GRAFT_OK && la == lb && memcmp(pa, pb, la) == 0;
            if (!same) fprintf(stderr, "token %d differs\n", id);
        }
        CHECK(same);
    }
    free(inp);
    free(inp_path);
    graft_tokenizer_free(slow);
    graft_tokenizer_free(back);
    graft_tokenizer_free(t);
    free(dir);
    free(dir2);
    free(src);
}

/* ---------------------------------------------------------------- schedule */

static void test_schedule(void) {
    CHECK_NEAR(graft_train_lr_at(1, 100, 10, 1.0, 0.1), 0.1, 1e-12);
    CHECK_NEAR(graft_train_lr_at(10, 100, 10, 1.0, 0.1), 1.0, 1e-12);
    CHECK_NEAR(graft_train_lr_at(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);
    CHECK_NEAR(graft_train_lr_at(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
    CHECK_NEAR(graft_train_lr_at(1, 1, 0, 1.0, 0.1), 0.1, 1e-12);
}

int main(void) {
    graft_set_threads(2);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/graft_test_train.XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    size_t len;
    char *text = corpus_text(600, &len);
    char *txt = tpath("corpus.txt");
    write_text(txt, text, len);
    /* prompt/answer rows, the fact-corpus form */
    char *jl = tpath("facts.jsonl");
    FILE *f = fopen(jl, "w");
    static const char *names[] = {"alice", "bob", "carol", "dave", "erin", "frank", "gina", "hugo"};
    for (int i = 0; f && i < 64; i++)
        fprintf(f, "{\"prompt\": \"%s %d lives in\", \"answer\": \"city %d\"}\n%s", names[i % 8], i, (i * 7) % 11,
                i % 10 == 3 ? "{\"text\": \"a plain text row\"}\n" : "");
    if (f) fclose(f);

    test_schedule();
    test_config_text();
    test_byte_tokenizer();
    test_gpt2_tokenizer();
    roundtrip(tiny_cfg(GRAFT_ARCH_GPT2, 1, 0, 257), "gpt2-tied", GRAFT_F32);
    roundtrip(tiny_cfg(GRAFT_ARCH_GPT2, 0, 0, 260), "gpt2-untied", GRAFT_F32);
    roundtrip(tiny_cfg(GRAFT_ARCH_LLAMA, 0, 0, 257), "llama", GRAFT_F32);
    roundtrip(tiny_cfg(GRAFT_ARCH_LLAMA, 1, 0, 257), "llama-tied", GRAFT_F32);
    roundtrip(tiny_cfg(GRAFT_ARCH_LLAMA, 1, 1, 257), "llama-interleaved", GRAFT_F32);
    roundtrip(tiny_cfg(GRAFT_ARCH_GPT2, 1, 0, 257), "gpt2-f16", GRAFT_F16);
    roundtrip(tiny_cfg(GRAFT_ARCH_LLAMA, 0, 0, 257), "llama-bf16", GRAFT_BF16);
    test_bad_rows();
    test_learns(txt);
    test_resume(txt, tiny_cfg(GRAFT_ARCH_GPT2, 1, 0, 257), "resume-gpt2-text", 0.0);
    test_resume(jl, tiny_cfg(GRAFT_ARCH_LLAMA, 0, 1, 257), "resume-llama-jsonl", 0.25);

    free(text);
    free(txt);
    free(jl);
    rm_rf(g_tmp);
    return test_finish("test_train");
}
