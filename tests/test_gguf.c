/*
 * test_gguf.c - GGUF read and write.
 *
 *  - Llama (the stories260K HF fixture + tok512): HF folder -> GGUF -> load
 *    gives bit-identical logits and the same token ids; F16/BF16 exports
 *    load close to it; the llama2.c checkpoint (interleaved RoPE) round-trips
 *    through GGUF to the same greedy tokens.
 *  - GPT-2 (a random tiny model with the real GPT-2 tokenizer, tied and
 *    untied): HF folder -> GGUF -> load, the same logits and tokens.
 *  - Hostile files: every prefix of a GGUF file is refused with a format
 *    error naming the file and an offset; hand-patched headers (huge counts,
 *    huge strings, bad types, dims, offsets, alignment, duplicate keys) get
 *    the right message; random byte flips never crash.
 * (tests/cli_gguf.sh loads files written byte by byte by tests/gguf_build.py.)
 */
#define _GNU_SOURCE
#include "internal.h"
#include "engine.h"
#include "model/gguf.h"
#include "model/save.h"
#include "tokenizer/tokenizer_save.h"
#include "test.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmproot[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

static char *tmp_path(const char *name) { return graft_path_join(tmproot, name); }

/* All logits of one sequence (T x V), malloc'ed. */
static float *seq_logits(graft_model *m, const int *ids, int n) {
    graft_run *r = NULL;
    if (graft_run_create(m, n, n, n, 0, &r) != GRAFT_OK) return NULL;
    float *out = NULL;
    if (graft_run_set_batch(r, ids, &n, 1, NULL, 0) == GRAFT_OK && graft_run_forward(r) == GRAFT_OK) {
        size_t k = (size_t)n * (size_t)m->cfg.vocab_size;
        out = malloc(k * sizeof(float));
        if (out) memcpy(out, r->logits, k * sizeof(float));
    }
    graft_run_free(r);
    return out;
}

/* max |a - b| over the logits of ids in both models; -1 when either failed */
static double logits_diff(graft_model *a, graft_model *b, const int *ids, int n, bool *identical) {
    float *x = seq_logits(a, ids, n), *y = seq_logits(b, ids, n);
    double d = -1;
    if (x && y) {
        size_t k = (size_t)n * (size_t)a->cfg.vocab_size;
        d = 0;
        for (size_t i = 0; i < k; i++) d = fmax(d, fabs((double)x[i] - y[i]));
        if (identical) *identical = memcmp(x, y, k * sizeof(float)) == 0;
    }
    free(x);
    free(y);
    return d;
}

static const char *const texts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "She saw a big, red ball  in the park!\n\"Wow,\" said Tom.",
    " leading space, numbers 12345 and UTF-8: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
    "",
};

/* The two tokenizers give the same ids and decode them alike. */
static void check_same_tokens(const graft_tokenizer *a, const graft_tokenizer *b) {
    CHECK(a && b);
    if (!a || !b) return;
    CHECK(graft_tokenizer_bos(a) == graft_tokenizer_bos(b));
    CHECK(graft_tokenizer_eos(a) == graft_tokenizer_eos(b));
    CHECK(strcmp(graft_tokenizer_kind(a), graft_tokenizer_kind(b)) == 0);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(graft_tokenize(a, texts[i], strlen(texts[i]), &x, &nx));
        CHECK_OK(graft_tokenize(b, texts[i], strlen(texts[i]), &y, &ny));
        CHECK_MSG(nx == ny && (nx == 0 || !memcmp(x, y, nx * sizeof(int))), "text %zu: %zu vs %zu ids", i, nx, ny);
        char *s = NULL, *s2 = NULL;
        CHECK_OK(graft_detokenize(a, x, nx, &s, NULL));
        CHECK_OK(graft_detokenize(b, y, ny, &s2, NULL));
        CHECK_MSG(s && s2 && strcmp(s, s2) == 0, "text %zu decodes to '%s' vs '%s'", i, s ? s : "(null)",
                  s2 ? s2 : "(null)");
        free(s), free(s2);
        free(x);
        free(y);
    }
    /* every piece */
    int n = graft_tokenizer_vocab_size(a);
    int bad = 0;
    for (int id = 0; id < n; id++) {
        const char *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0;
        graft_status sa = graft_token_piece(a, -1, id, &pa, &la), sb = graft_token_piece(b, -1, id, &pb, &lb);
        if (sa != sb || (sa == GRAFT_OK && (la != lb || memcmp(pa, pb, la) != 0))) bad++;
    }
    CHECK_MSG(bad == 0, "%d of %d pieces differ", bad, n);
}

/* ---------------------------------------------------------------- Llama */

static const int seq0[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267};
static const int seq1[] = {68, 65, 408, 255, 302, 307, 364, 14, 248};

static graft_model *load_with_tok(const char *model, const char *tok) {
    graft_model *m = NULL;
    if (graft_model_load(model, &m) != GRAFT_OK) return NULL;
    if (tok) {
        graft_tokenizer *t = NULL;
        if (graft_tokenizer_load(tok, &t) != GRAFT_OK) {
            graft_model_free(m);
            return NULL;
        }
        graft_model_set_tokenizer(m, t);
    }
    return m;
}

static void test_llama(void) {
    char hf[512], tok[512];
    snprintf(hf, sizeof hf, "%s/llama-stories260K-hf", test_data_dir());
    snprintf(tok, sizeof tok, "%s/tok512.bin", test_data_dir());
    graft_model *a = load_with_tok(hf, tok);
    CHECK_MSG(a != NULL, "%s", graft_last_error());
    if (!a) return;
    char *p32 = tmp_path("llama.gguf"), *p16 = tmp_path("llama16.gguf"), *pbf = tmp_path("llamabf.gguf");
    CHECK_OK(graft_model_save_gguf(a, p32, GRAFT_F32));
    CHECK_OK(graft_model_save_gguf(a, p16, GRAFT_F16));
    CHECK_OK(graft_model_save_gguf(a, pbf, GRAFT_BF16));
    graft_model *b = NULL;
    CHECK_OK(graft_model_load(p32, &b));
    if (b) {
        CHECK(strcmp(b->format, "gguf") == 0);
        CHECK(b->cfg.n_layer == 5 && b->cfg.n_head == 8 && b->cfg.n_kv_head == 4 && b->cfg.head_dim == 8);
        CHECK(b->cfg.d_ff == 172 && b->cfg.vocab_size == 512 && b->cfg.n_ctx == 512 && b->cfg.tied);
        CHECK(b->cfg.norm_eps == a->cfg.norm_eps && b->cfg.rope_theta == a->cfg.rope_theta);
        CHECK(b->cfg.bos_id == 1 && b->cfg.eos_id == 2);
        bool same = false;
        CHECK(logits_diff(a, b, seq0, 20, &same) == 0 && same);
        CHECK(logits_diff(a, b, seq1, 9, &same) == 0 && same);
        check_same_tokens(a->tok, b->tok);
        /* the embedded tokenizer saves back as the same tokenizer.bin */
        char *d = tmp_path("tokdir");
        mkdir(d, 0755);
        CHECK_OK(graft_tokenizer_save(b->tok, d));
        char *tb = graft_path_join(d, "tokenizer.bin"), *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(graft_read_file(tb, &x, &nx));
        CHECK_OK(graft_read_file(tok, &y, &ny));
        /* BOS/EOS travel as "<s>"/"</s>" (llama2.c spells them "\n<s>\n"), so
         * the file differs there and only there */
        CHECK(nx + 4 == ny);
        free(x), free(y), free(tb), free(d);
        /* GGUF -> GGUF is byte for byte the same file (name aside: same path base) */
        char *again = tmp_path("again.gguf");
        CHECK_OK(graft_model_save_gguf(b, again, GRAFT_F32));
        graft_model *c = NULL;
        CHECK_OK(graft_model_load(again, &c));
        if (c) CHECK(logits_diff(b, c, seq0, 20, &same) == 0 && same);
        graft_model_free(c);
        free(again);
    }
    /* F16 / BF16: the matrices rounded, the norms F32 */
    graft_model *h = NULL, *bf = NULL;
    CHECK_OK(graft_model_load(p16, &h));
    CHECK_OK(graft_model_load(pbf, &bf));
    if (h) {
        CHECK(h->src_dtype == GRAFT_F16);
        double d = logits_diff(a, h, seq0, 20, NULL);
        CHECK_MSG(d >= 0 && d < 0.05, "F16 max logit diff %g", d);
        const graft_param *pa = graft_param_find(&a->params, "model.layers.2.mlp.down_proj.weight");
        const graft_param *ph = graft_param_find(&h->params, "model.layers.2.mlp.down_proj.weight");
        int exact = 1;
        for (size_t i = 0; pa && ph && i < pa->numel; i++)
            exact &= ph->data[i] == graft_f16_to_f32(graft_f32_to_f16(pa->data[i]));
        CHECK(pa && ph && exact);
    }
    if (bf) {
        CHECK(bf->src_dtype == GRAFT_BF16);
        double d = logits_diff(a, bf, seq0, 20, NULL);
        CHECK_MSG(d >= 0 && d < 0.5, "BF16 max logit diff %g", d);
    }
    graft_model_free(h);
    graft_model_free(bf);
    graft_model_free(b);
    graft_model_free(a);

    /* llama2.c checkpoint: interleaved q/k rows go into the file as they are
     * and come back in HF order; the sums merely reorder */
    char bin[512];
    snprintf(bin, sizeof bin, "%s/stories260K.bin", test_data_dir());
    a = load_with_tok(bin, NULL);
    char *pl = tmp_path("l2c.gguf");
    CHECK(a && a->tok);
    if (a) {
        CHECK_OK(graft_model_save_gguf(a, pl, GRAFT_F32));
        CHECK_OK(graft_model_load(pl, &b));
        if (b) {
            double d = logits_diff(a, b, seq0, 20, NULL);
            CHECK_MSG(d >= 0 && d < 1e-4, "llama2.c vs its GGUF: max logit diff %g", d);
            CHECK(b->cfg.rope_interleaved == 0);
            check_same_tokens(a->tok, b->tok);
            graft_gen_opts o;
            graft_gen_opts_default(&o);
            o.max_new_tokens = 30;
            o.stop_at_eos = 0;
            int *ga = NULL, *gb = NULL;
            size_t na = 0, nb = 0;
            int bos = 1;
            CHECK_OK(graft_generate_ids(a, &bos, 1, &o, NULL, NULL, &ga, &na));
            CHECK_OK(graft_generate_ids(b, &bos, 1, &o, NULL, NULL, &gb, &nb));
            CHECK(na == nb && na > 0 && !memcmp(ga, gb, na * sizeof(int)));
            free(ga), free(gb);
        }
        graft_model_free(b);
    }
    graft_model_free(a);
    free(pl), free(p32), free(p16), free(pbf);
}

/* ---------------------------------------------------------------- GPT-2 */

static void test_gpt2(int tied) {
    graft_config c;
    CHECK_OK(graft_config_preset("gpt2-tiny", &c));
    c.d_model = 32;
    c.n_head = c.n_kv_head = 4;
    c.head_dim = 8;
    c.d_ff = 128;
    c.n_ctx = 64;
    c.tied = tied;
    graft_model *r = NULL;
    CHECK_OK(graft_model_create_random(&c, tied ? 7 : 8, 0.2f, &r));
    if (!r) return;
    char tokdir[512];
    snprintf(tokdir, sizeof tokdir, "%s/gpt2-tokenizer", test_data_dir());
    graft_tokenizer *t = NULL;
    CHECK_OK(graft_tokenizer_load(tokdir, &t));
    graft_model_set_tokenizer(r, t);
    char *hf = tmp_path(tied ? "gpt2-hf" : "gpt2u-hf"), *gg = tmp_path(tied ? "gpt2.gguf" : "gpt2u.gguf");
    CHECK_OK(graft_model_save_hf(r, hf, GRAFT_F32));
    graft_model_free(r);
    graft_model *a = NULL, *b = NULL;
    CHECK_OK(graft_model_load(hf, &a));
    if (a) CHECK_OK(graft_model_save_gguf(a, gg, GRAFT_F32));
    CHECK_OK(graft_model_load(gg, &b));
    if (a && b) {
        CHECK(b->cfg.arch == GRAFT_ARCH_GPT2 && b->cfg.tied == tied && b->cfg.vocab_size == 50257);
        CHECK(b->cfg.n_ctx == 64 && b->cfg.d_ff == 128 && b->cfg.norm_eps == a->cfg.norm_eps);
        CHECK(b->cfg.bos_id == 50256 && b->cfg.eos_id == 50256);
        int ids[24];
        for (int i = 0; i < 24; i++) ids[i] = (i * 7919 + 13) % 50257;
        bool same = false;
        CHECK(logits_diff(a, b, ids, 24, &same) == 0 && same);
        check_same_tokens(a->tok, b->tok);
        /* the GGUF names and layout: Conv1D transposed, tied head stored again */
        graft_gguf g;
        CHECK_OK(graft_gguf_open(gg, &g));
        const graft_gguf_tensor *qkv = graft_gguf_find_tensor(&g, "blk.1.attn_qkv.weight");
        const graft_gguf_tensor *out = graft_gguf_find_tensor(&g, "output.weight");
        CHECK(qkv && qkv->ne[0] == 32 && qkv->ne[1] == 96);
        CHECK(out && out->ne[0] == 32 && out->ne[1] == 50257);
        const graft_param *pq = graft_param_find(&a->params, "transformer.h.1.attn.c_attn.weight");
        if (qkv && pq) {
            /* GGUF row o (an output) holds column o of graft's [in, out] */
            float x;
            memcpy(&x, qkv->data + 4 * (5 * 32 + 3), 4);
            CHECK(x == pq->data[3 * 96 + 5]);
        }
        graft_gguf_close(&g);
    }
    graft_model_free(a);
    graft_model_free(b);
    free(hf), free(gg);
}

/* ---------------------------------------------------------------- hostile files */

static uint8_t *file_bytes(const char *path, size_t *n) {
    char *d = NULL;
    if (graft_read_file(path, &d, n) != GRAFT_OK) return NULL;
    return (uint8_t *)d;
}

static void put_bytes(const char *path, const void *d, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    if (n) fwrite(d, 1, n, fp);
    fclose(fp);
}

/* Load a patched copy; returns the status, *msg the message. */
static graft_status load_bytes(const char *path, const uint8_t *d, size_t n) {
    put_bytes(path, d, n);
    graft_model *m = NULL;
    graft_clear_error();
    graft_status st = graft_model_load(path, &m);
    graft_model_free(m);
    return st;
}

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static void test_hostile(void) {
    char *good = tmp_path("llama.gguf"), *bad = tmp_path("bad.gguf");
    size_t n = 0;
    uint8_t *d = file_bytes(good, &n);
    CHECK(d != NULL);
    if (!d) return;
    graft_gguf g;
    CHECK_OK(graft_gguf_open(good, &g));
    size_t need = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++)
        if (g.tensors[i].data_pos + g.tensors[i].nbytes > need) need = g.tensors[i].data_pos + g.tensors[i].nbytes;
    CHECK(need == n);

    /* every prefix of the header and metadata, and a spread through the data */
    int refused = 0, tried = 0, named = 0;
    for (size_t len = 0; len < n; len += len < 1024 ? 1 : len < g.data_pos + 64 ? 7 : 997) {
        tried++;
        graft_status st = load_bytes(bad, d, len);
        const char *msg = graft_last_error();
        if (st == GRAFT_ERR_FORMAT) refused++;
        else fprintf(stderr, "prefix %zu: status %s: %s\n", len, graft_status_str(st), msg);
        if (strstr(msg, bad) && strstr(msg, "offset")) named++;
        else if (st == GRAFT_ERR_FORMAT) fprintf(stderr, "prefix %zu: message lacks file/offset: %s\n", len, msg);
    }
    CHECK_MSG(refused == tried, "%d of %d prefixes refused", refused, tried);
    CHECK_MSG(named == tried, "%d of %d messages name the file and an offset", named, tried);
    CHECK_FAILS(load_bytes(bad, d, n - 1), GRAFT_ERR_FORMAT, "tensor 'output_norm.weight'");

    uint8_t *c = malloc(n);
#define PATCHED(stmt) (memcpy(c, d, n), (stmt), load_bytes(bad, c, n))
    CHECK_FAILS(PATCHED(c[0] = 'X'), GRAFT_ERR_FORMAT, "not a GGUF file");
    CHECK_FAILS(PATCHED(put_u32(c + 4, 1)), GRAFT_ERR_UNSUPPORTED, "version 1");
    CHECK_FAILS(PATCHED(put_u32(c + 4, 0x03000000u)), GRAFT_ERR_UNSUPPORTED, "big-endian");
    CHECK_FAILS(PATCHED(put_u64(c + 8, (uint64_t)1 << 60)), GRAFT_ERR_FORMAT, "offset 8: header: tensor count");
    CHECK_FAILS(PATCHED(put_u64(c + 16, (uint64_t)1 << 60)), GRAFT_ERR_FORMAT, "offset 16: header: metadata count");
    CHECK_FAILS(PATCHED(put_u64(c + 24, (uint64_t)1 << 40)), GRAFT_ERR_FORMAT, "offset 24: metadata pair 0");
    const graft_gguf_kv *toks = graft_gguf_find(&g, "tokenizer.ggml.tokens");
    const graft_gguf_kv *al = graft_gguf_find(&g, "general.alignment");
    const graft_gguf_kv *ft = graft_gguf_find(&g, "general.file_type");
    const graft_gguf_kv *arch = graft_gguf_find(&g, "general.architecture");
    CHECK(toks && al && ft && arch);
    if (toks && al && ft && arch) {
        CHECK_FAILS(PATCHED(put_u64(c + toks->val_pos - 8, (uint64_t)1 << 60)), GRAFT_ERR_FORMAT,
                    "key 'tokenizer.ggml.tokens': array of 1152921504606846976 strings");
        CHECK_FAILS(PATCHED(put_u64(c + toks->val_pos, (uint64_t)1 << 40)), GRAFT_ERR_FORMAT,
                    "string [0] length 1099511627776 runs past the end");
        CHECK_FAILS(PATCHED(put_u32(c + toks->val_pos - 12, 77)), GRAFT_ERR_FORMAT, "unknown array element type 77");
        CHECK_FAILS(PATCHED(put_u32(c + al->val_pos, 3)), GRAFT_ERR_FORMAT, "3 is not a power of two");
        CHECK_FAILS(PATCHED(put_u32(c + al->val_pos - 4, 99)), GRAFT_ERR_FORMAT, "unknown value type 99");
        CHECK_FAILS(PATCHED(c[arch->val_pos + 8] = 'X'), GRAFT_ERR_UNSUPPORTED, "\"Xlama\" is not supported");
        /* "general.file_type" -> "llama.block_count": same length, a duplicate */
        CHECK_FAILS(PATCHED(memcpy(c + ft->pos + 8, "llama.block_count", 17)), GRAFT_ERR_FORMAT, "duplicate key");
    }
    const graft_gguf_tensor *t0 = &g.tensors[0], *t1 = &g.tensors[1];
    size_t nd = t1->pos + 8 + strlen(t1->name); /* t1's n_dims */
    CHECK_FAILS(PATCHED(put_u32(c + nd, 9)), GRAFT_ERR_FORMAT, "n_dims 9");
    CHECK_FAILS(PATCHED(put_u64(c + nd + 4, 0)), GRAFT_ERR_FORMAT, "ne[0] = 0");
    size_t ty = nd + 4 + 8 * t1->n_dims, of = ty + 4;
    CHECK_FAILS(PATCHED(put_u32(c + ty, 99)), GRAFT_ERR_UNSUPPORTED, "type unknown (99)");
    CHECK_FAILS(PATCHED(put_u64(c + nd + 4, 128)), GRAFT_ERR_FORMAT, "overlaps tensor 'blk.0.attn_norm.weight'");
    CHECK_FAILS(PATCHED(put_u64(c + of, t1->offset + 4)), GRAFT_ERR_FORMAT, "not a multiple of the alignment");
    CHECK_FAILS(PATCHED(put_u64(c + of, (uint64_t)1 << 62)), GRAFT_ERR_FORMAT, "run past the end of the file");
    CHECK_FAILS(PATCHED(put_u64(c + of, t0->offset)), GRAFT_ERR_FORMAT, "overlaps tensor");
    CHECK_FAILS(PATCHED(put_u64(c + t0->pos + 8 + strlen(t0->name) + 4, 512)), GRAFT_ERR_FORMAT,
                "tensor 'token_embd.weight'");
    /* a tensor graft has no use for */
    CHECK_FAILS(PATCHED(memcpy(c + t1->pos + 8, "blk.0.attn_xxxx.weight", 22)), GRAFT_ERR_FORMAT,
                "tensor 'blk.0.attn_norm.weight' is missing");
#undef PATCHED

    /* random byte flips in the header and metadata: load or refuse, never crash */
    uint64_t s = 12345;
    int ok = 0, failed_clean = 0;
    for (int it = 0; it < 1000; it++) {
        memcpy(c, d, n);
        for (int k = 0; k < 1 + it % 3; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(s >> 33) % g.data_pos;
            c[at] ^= (uint8_t)(1u << ((s >> 20) % 8));
        }
        graft_status st = load_bytes(bad, c, n);
        if (st == GRAFT_OK) ok++;
        else if (graft_last_error()[0]) failed_clean++;
    }
    CHECK_MSG(ok + failed_clean == 1000, "%d loaded, %d refused with a message", ok, failed_clean);
    free(c);
    graft_gguf_close(&g);
    free(d);
    free(good), free(bad);
}

/* A file with no tensors and few keys: describe works, the loader says what is missing. */
static void test_small(void) {
    char *p = tmp_path("empty.gguf");
    uint8_t h[24 + 8 + 20 + 4 + 8 + 5];
    size_t k = 0;
    memcpy(h, "GGUF", 4);
    put_u32(h + 4, 2);
    put_u64(h + 8, 0);
    put_u64(h + 16, 1);
    k = 24;
    put_u64(h + k, 20);
    memcpy(h + k + 8, "general.architecture", 20);
    put_u32(h + k + 28, 8);
    put_u64(h + k + 32, 5);
    memcpy(h + k + 40, "llama", 5);
    k += 45;
    put_bytes(p, h, k);
    graft_gguf g;
    CHECK_OK(graft_gguf_open(p, &g));
    CHECK(g.version == 2 && g.n_kv == 1 && g.n_tensors == 0 && g.alignment == 32);
    graft_gguf_close(&g);
    graft_model *m = NULL;
    CHECK_FAILS(graft_model_load(p, &m), GRAFT_ERR_FORMAT, "required key 'llama.block_count' is missing");
    free(p);
}

int main(void) {
    snprintf(tmproot, sizeof tmproot, "/tmp/graft_ggufXXXXXX");
    if (!mkdtemp(tmproot)) {
        perror("mkdtemp");
        return 1;
    }
    test_llama();
    test_gpt2(1);
    test_gpt2(0);
    test_hostile();
    test_small();
    nftw(tmproot, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish("test_gguf");
}
