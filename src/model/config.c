/*
 * config.c - Hugging Face config.json (GPT2Config, LlamaConfig) and the
 * named preset shapes.
 *
 * Defaults follow the transformers config classes, because save_pretrained
 * leaves out every key whose value equals the class default: a key that is
 * absent means "the default of that class", not "unknown". Keys that would
 * change the math in ways graft does not implement are refused with
 * GRAFT_ERR_UNSUPPORTED rather than silently ignored.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- getters */

typedef struct cfg_ctx {
    const cJSON *root;
    const char *path;
} cfg_ctx;

/* Absent and JSON null count alike: transformers writes null for "use the default". */
static const cJSON *get(const cfg_ctx *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* An integer key in [lo, hi]; `def` is used when absent unless required. */
static graft_status get_int(const cfg_ctx *c, const char *key, bool required, int def, int lo, int hi, int *out) {
    const cJSON *v = get(c, key);
    if (!v) {
        if (required) return graft_fail(GRAFT_ERR_FORMAT, "%s: required key \"%s\" is missing", c->path, key);
        *out = def;
        return GRAFT_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" must be an integer", c->path, key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" = %.17g is out of range [%d, %d]", c->path, key,
                          v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return GRAFT_OK;
}

static graft_status get_float(const cfg_ctx *c, const char *key, bool required, float def, float *out) {
    const cJSON *v = get(c, key);
    if (!v) {
        if (required) return graft_fail(GRAFT_ERR_FORMAT, "%s: required key \"%s\" is missing", c->path, key);
        *out = def;
        return GRAFT_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" must be a positive number", c->path, key);
    *out = (float)v->valuedouble;
    return GRAFT_OK;
}

static graft_status get_bool(const cfg_ctx *c, const char *key, bool def, bool *out) {
    const cJSON *v = get(c, key);
    if (!v) {
        *out = def;
        return GRAFT_OK;
    }
    if (!cJSON_IsBool(v)) return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" must be true or false", c->path, key);
    *out = cJSON_IsTrue(v);
    return GRAFT_OK;
}

/* A string key; NULL when absent. */
static graft_status get_str(const cfg_ctx *c, const char *key, const char **out) {
    const cJSON *v = get(c, key);
    *out = NULL;
    if (!v) return GRAFT_OK;
    if (!cJSON_IsString(v)) return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" must be a string", c->path, key);
    *out = v->valuestring;
    return GRAFT_OK;
}

/* bos/eos ids: an integer, null, or (newer Llama configs) a list whose first
 * entry is used. -1 when absent. */
static graft_status get_token_id(const cfg_ctx *c, const char *key, int *out) {
    const cJSON *v = get(c, key);
    *out = -1;
    if (!v) return GRAFT_OK;
    if (cJSON_IsArray(v)) {
        v = cJSON_GetArrayItem(v, 0);
        if (!v) return GRAFT_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > INT32_MAX)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: key \"%s\" must be a non-negative integer token id", c->path, key);
    *out = (int)v->valuedouble;
    return GRAFT_OK;
}

/* Large enough for any real model, small enough that products of two fit
 * comfortably in 64 bits. */
#define MAX_DIM (1 << 24)

/* ---------------------------------------------------------------- GPT-2 */

static graft_status parse_gpt2(const cfg_ctx *c, graft_config *cfg) {
    cfg->arch = GRAFT_ARCH_GPT2;
    GRAFT_TRY(get_int(c, "n_embd", true, 0, 1, MAX_DIM, &cfg->d_model));
    GRAFT_TRY(get_int(c, "n_layer", true, 0, 1, 65536, &cfg->n_layer));
    GRAFT_TRY(get_int(c, "n_head", true, 0, 1, MAX_DIM, &cfg->n_head));
    /* n_ctx in old configs duplicates n_positions; the embedding table size is n_positions. */
    GRAFT_TRY(get_int(c, "n_positions", true, 0, 1, MAX_DIM, &cfg->n_ctx));
    GRAFT_TRY(get_int(c, "vocab_size", true, 0, 1, MAX_DIM, &cfg->vocab_size));
    GRAFT_TRY(get_int(c, "n_inner", false, 4 * cfg->d_model, 1, MAX_DIM, &cfg->d_ff));
    GRAFT_TRY(get_float(c, "layer_norm_epsilon", false, 1e-5f, &cfg->norm_eps));
    if (cfg->d_model % cfg->n_head != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: n_embd %d is not divisible by n_head %d", c->path, cfg->d_model,
                          cfg->n_head);
    cfg->n_kv_head = cfg->n_head;
    cfg->head_dim = cfg->d_model / cfg->n_head;

    const char *act;
    GRAFT_TRY(get_str(c, "activation_function", &act));
    if (act && strcmp(act, "gelu_new") != 0)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: activation_function \"%s\" is not supported (only gelu_new)",
                          c->path, act);
    bool b;
    GRAFT_TRY(get_bool(c, "scale_attn_weights", true, &b));
    if (!b) return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: scale_attn_weights false is not supported", c->path);
    GRAFT_TRY(get_bool(c, "scale_attn_by_inverse_layer_idx", false, &b));
    if (b)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: scale_attn_by_inverse_layer_idx true is not supported", c->path);
    GRAFT_TRY(get_bool(c, "add_cross_attention", false, &b));
    if (b) return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: add_cross_attention true is not supported", c->path);
    /* PretrainedConfig's default is true and save_pretrained omits defaults. */
    GRAFT_TRY(get_bool(c, "tie_word_embeddings", true, &b));
    cfg->tied = b;
    GRAFT_TRY(get_token_id(c, "bos_token_id", &cfg->bos_id));
    GRAFT_TRY(get_token_id(c, "eos_token_id", &cfg->eos_id));
    cfg->rope_theta = 0.0f;
    cfg->rope_interleaved = 0;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- Llama */

static graft_status parse_llama(const cfg_ctx *c, graft_config *cfg) {
    cfg->arch = GRAFT_ARCH_LLAMA;
    GRAFT_TRY(get_int(c, "hidden_size", true, 0, 1, MAX_DIM, &cfg->d_model));
    GRAFT_TRY(get_int(c, "intermediate_size", true, 0, 1, MAX_DIM, &cfg->d_ff));
    GRAFT_TRY(get_int(c, "num_hidden_layers", true, 0, 1, 65536, &cfg->n_layer));
    GRAFT_TRY(get_int(c, "num_attention_heads", true, 0, 1, MAX_DIM, &cfg->n_head));
    GRAFT_TRY(get_int(c, "num_key_value_heads", false, cfg->n_head, 1, MAX_DIM, &cfg->n_kv_head));
    GRAFT_TRY(get_int(c, "max_position_embeddings", true, 0, 1, MAX_DIM, &cfg->n_ctx));
    GRAFT_TRY(get_int(c, "vocab_size", true, 0, 1, MAX_DIM, &cfg->vocab_size));
    if (cfg->n_head % cfg->n_kv_head != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                          c->path, cfg->n_head, cfg->n_kv_head);
    int def_hd = cfg->d_model / cfg->n_head;
    GRAFT_TRY(get_int(c, "head_dim", false, def_hd, 1, MAX_DIM, &cfg->head_dim));
    if (!get(c, "head_dim") && cfg->d_model % cfg->n_head != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: hidden_size %d is not divisible by num_attention_heads %d", c->path,
                          cfg->d_model, cfg->n_head);
    if (cfg->head_dim % 2 != 0)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: head_dim %d is odd; RoPE rotates pairs", c->path, cfg->head_dim);
    if ((int64_t)cfg->n_head * cfg->head_dim > MAX_DIM)
        return graft_fail(GRAFT_ERR_FORMAT, "%s: num_attention_heads x head_dim is too large", c->path);
    GRAFT_TRY(get_float(c, "rms_norm_eps", false, 1e-6f, &cfg->norm_eps)); /* LlamaConfig default */
    GRAFT_TRY(get_float(c, "rope_theta", false, 10000.0f, &cfg->rope_theta));
    if (get(c, "rope_scaling"))
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: rope_scaling is set; only plain RoPE is supported", c->path);
    const char *act;
    GRAFT_TRY(get_str(c, "hidden_act", &act));
    if (act && strcmp(act, "silu") != 0)
        return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (only silu)", c->path, act);
    bool b;
    GRAFT_TRY(get_bool(c, "attention_bias", false, &b));
    if (b) return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: attention_bias true is not supported", c->path);
    GRAFT_TRY(get_bool(c, "mlp_bias", false, &b));
    if (b) return graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported", c->path);
    int tp;
    GRAFT_TRY(get_int(c, "pretraining_tp", false, 1, 1, 65536, &tp));
    /* pretraining_tp only changes the summation order in HF; accept any value. */
    /* LlamaConfig's default is false, so a tied model always carries the key. */
    GRAFT_TRY(get_bool(c, "tie_word_embeddings", false, &b));
    cfg->tied = b;
    GRAFT_TRY(get_token_id(c, "bos_token_id", &cfg->bos_id));
    GRAFT_TRY(get_token_id(c, "eos_token_id", &cfg->eos_id));
    cfg->rope_interleaved = 0; /* HF checkpoints use rotate-half */
    return GRAFT_OK;
}

graft_status graft_config_from_json(graft_config *cfg, const char *json_text, const char *path) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = cfg->eos_id = -1;
    if (!path) path = "config.json";
    if (!json_text) return graft_fail(GRAFT_ERR_INVALID, "%s: no text", path);
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &endp, 1);
    if (!root) {
        size_t off = endp ? (size_t)(endp - json_text) : 0;
        return graft_fail(GRAFT_ERR_FORMAT, "%s: not valid JSON (error near byte offset %zu)", path, off);
    }
    cfg_ctx c = {root, path};
    graft_status st;
    const char *mt = NULL;
    if (!cJSON_IsObject(root)) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: top level is not a JSON object", path);
    } else if ((st = get_str(&c, "model_type", &mt)) != GRAFT_OK) {
        /* message already set */
    } else if (!mt) {
        st = graft_fail(GRAFT_ERR_FORMAT, "%s: required key \"model_type\" is missing", path);
    } else if (strcmp(mt, "gpt2") == 0) {
        st = parse_gpt2(&c, cfg);
    } else if (strcmp(mt, "llama") == 0) {
        st = parse_llama(&c, cfg);
    } else {
        st = graft_fail(GRAFT_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (gpt2, llama)", path, mt);
    }
    cJSON_Delete(root);
    return st;
}

/* ---------------------------------------------------------------- presets */

static void gpt2_shape(graft_config *cfg, int c, int l, int h, int v, int ctx) {
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = GRAFT_ARCH_GPT2;
    cfg->d_model = c;
    cfg->n_layer = l;
    cfg->n_head = cfg->n_kv_head = h;
    cfg->head_dim = c / h;
    cfg->d_ff = 4 * c;
    cfg->vocab_size = v;
    cfg->n_ctx = ctx;
    cfg->norm_eps = 1e-5f;
    cfg->tied = 1;
    cfg->bos_id = cfg->eos_id = 50256;
}

graft_status graft_config_preset(const char *name, graft_config *cfg) {
    if (!name || !cfg) return graft_fail(GRAFT_ERR_INVALID, "config preset: no name");
    if (strcmp(name, "gpt2") == 0) gpt2_shape(cfg, 768, 12, 12, 50257, 1024);
    else if (strcmp(name, "gpt2-medium") == 0) gpt2_shape(cfg, 1024, 24, 16, 50257, 1024);
    else if (strcmp(name, "gpt2-large") == 0) gpt2_shape(cfg, 1280, 36, 20, 50257, 1024);
    else if (strcmp(name, "gpt2-xl") == 0) gpt2_shape(cfg, 1600, 48, 25, 50257, 1024);
    else if (strcmp(name, "gpt2-tiny") == 0) gpt2_shape(cfg, 64, 2, 4, 50257, 128);
    else if (strcmp(name, "llama-tiny") == 0) {
        /* stories260K as llama2.c ships it: interleaved RoPE pairs, tied head */
        memset(cfg, 0, sizeof *cfg);
        cfg->arch = GRAFT_ARCH_LLAMA;
        cfg->d_model = 64;
        cfg->d_ff = 172;
        cfg->n_layer = 5;
        cfg->n_head = 8;
        cfg->n_kv_head = 4;
        cfg->head_dim = 8;
        cfg->vocab_size = 512;
        cfg->n_ctx = 512;
        cfg->norm_eps = 1e-5f;
        cfg->rope_theta = 10000.0f;
        cfg->rope_interleaved = 1;
        cfg->tied = 1;
        cfg->bos_id = 1;
        cfg->eos_id = 2;
    } else {
        return graft_fail(
            GRAFT_ERR_INVALID,
            "unknown config preset \"%s\" (gpt2, gpt2-medium, gpt2-large, gpt2-xl, gpt2-tiny, llama-tiny)", name);
    }
    return GRAFT_OK;
}
