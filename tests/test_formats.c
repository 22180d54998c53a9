/* test_formats.c - dtype conversions, the safetensors reader and writer,
 * config.json parsing and the named presets. Malformed inputs are built in
 * /tmp from small synthetic tensors. */
#include "internal.h"
#include "test.h"

#include <float.h>
#include <stdint.h>
#include <unistd.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t rng_state = 12345;
static uint64_t rnd64(void) {
    /* xorshift64*: only needs to produce varied bit patterns */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Independent reference for f32 -> bf16: pick the nearer of the two
 * neighbours in double arithmetic, ties to the even one. */
static uint16_t ref_bf16(float f) {
    uint32_t x = fbits(f);
    if (isnan(f)) return 0; /* not used for NaN */
    uint32_t lo = x & 0xffff0000u;
    uint32_t hi = lo + 0x10000u;
    double dl = fabs((double)bitsf(lo)), dh;
    if ((hi & 0x7fffffffu) == 0x7f800000u) dh = ldexp(1.0, 128);
    else dh = fabs((double)bitsf(hi));
    double a = fabs((double)f);
    double el = a - dl, eh = dh - a;
    if (el < eh) return (uint16_t)(lo >> 16);
    if (eh < el) return (uint16_t)(hi >> 16);
    return ((lo >> 16) & 1) ? (uint16_t)(hi >> 16) : (uint16_t)(lo >> 16);
}

static void test_dtypes(void) {
    CHECK(strcmp(graft_dtype_name(GRAFT_F32), "F32") == 0);
    CHECK(strcmp(graft_dtype_name(GRAFT_BF16), "BF16") == 0);
    CHECK(strcmp(graft_dtype_name(GRAFT_U8), "U8") == 0);
    CHECK(graft_dtype_size(GRAFT_F32) == 4 && graft_dtype_size(GRAFT_F16) == 2 && graft_dtype_size(GRAFT_BF16) == 2);
    CHECK(graft_dtype_size(GRAFT_I64) == 8 && graft_dtype_size(GRAFT_I32) == 4 && graft_dtype_size(GRAFT_U8) == 1);

    /* F16 decoding: normals, subnormals, zeros, infinities, NaN */
    CHECK(graft_f16_to_f32(0x3c00) == 1.0f);
    CHECK(graft_f16_to_f32(0xc000) == -2.0f);
    CHECK(graft_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(graft_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(graft_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(graft_f16_to_f32(0x03ff) == 1023.0f * ldexpf(1.0f, -24));
    CHECK(graft_f16_to_f32(0x8001) == -ldexpf(1.0f, -24));
    CHECK(fbits(graft_f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(isinf(graft_f16_to_f32(0x7c00)) && graft_f16_to_f32(0x7c00) > 0);
    CHECK(isinf(graft_f16_to_f32(0xfc00)) && graft_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(graft_f16_to_f32(0x7e00)) && isnan(graft_f16_to_f32(0x7c01)) && isnan(graft_f16_to_f32(0xfd00)));

    /* F16 encoding: ties to even, overflow, subnormal rounding */
    CHECK(graft_f32_to_f16(1.0f) == 0x3c00);
    CHECK(graft_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00);     /* tie -> even (down) */
    CHECK(graft_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02); /* tie -> even (up) */
    CHECK(graft_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 0x3c01); /* above tie */
    CHECK(graft_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(graft_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(graft_f32_to_f16(65520.0f) == 0x7c00); /* tie with an odd mantissa -> inf */
    CHECK(graft_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(graft_f32_to_f16(INFINITY) == 0x7c00 && graft_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(graft_f32_to_f16(-0.0f) == 0x8000);
    CHECK(graft_f32_to_f16(ldexpf(1, -24)) == 0x0001);
    CHECK(graft_f32_to_f16(ldexpf(1, -25)) == 0x0000);           /* tie -> even 0 */
    CHECK(graft_f32_to_f16(ldexpf(1.0001f, -25)) == 0x0001);
    CHECK(graft_f32_to_f16(3 * ldexpf(1, -25)) == 0x0002);       /* 1.5 ulp tie -> 2 */
    CHECK(graft_f32_to_f16(5 * ldexpf(1, -25)) == 0x0002);       /* 2.5 ulp tie -> 2 */
    CHECK(graft_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -26)) == 0x0400); /* rounds up into the normals */
    CHECK(graft_f32_to_f16(1e-30f) == 0 && graft_f32_to_f16(-1e-30f) == 0x8000);
    uint16_t hn = graft_f32_to_f16(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    /* a NaN whose payload is only in the low bits must stay NaN */
    hn = graft_f32_to_f16(bitsf(0x7f800001u));
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);

    /* every F16 value survives f16 -> f32 -> f16 */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = graft_f16_to_f32((uint16_t)h);
        uint16_t back = graft_f32_to_f16(f);
        bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan ? !(isnan(f) && back == (uint16_t)(h | 0x200)) : back != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d f16 values do not round-trip", bad);

#if defined(__F16C__)
    /* against the hardware conversion, on random and near-boundary bit patterns */
    bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t x = (uint32_t)rnd64();
        if (i % 4 == 1) x = (x & 0x80001fffu) | ((uint32_t)(102 + (x >> 13) % 40) << 23); /* near f16 range */
        if (i % 4 == 2) x = (x & 0xffffe000u) | 0x1000u;                                  /* exact ties */
        float f = bitsf(x);
        if (isnan(f)) continue;
        uint16_t hw = (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
        if (graft_f32_to_f16(f) != hw) {
            if (bad < 5) fprintf(stderr, "f32_to_f16(%08x) = %04x, hardware %04x\n", x, graft_f32_to_f16(f), hw);
            bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d f32->f16 mismatches with F16C", bad);
#endif

    /* BF16 */
    CHECK(graft_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(graft_bf16_to_f32(0xc040) == -3.0f);
    CHECK(graft_bf16_to_f32(0x0001) == bitsf(0x00010000u)); /* subnormal */
    CHECK(isinf(graft_bf16_to_f32(0x7f80)) && isnan(graft_bf16_to_f32(0x7fc0)));
    CHECK(graft_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(graft_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80);     /* tie -> even (down) */
    CHECK(graft_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82); /* tie -> even (up) */
    CHECK(graft_f32_to_bf16(FLT_MAX) == 0x7f80);                  /* rounds to inf */
    CHECK(graft_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(graft_f32_to_bf16(-0.0f) == 0x8000);
    uint16_t bn = graft_f32_to_bf16(bitsf(0x7f800001u));
    CHECK((bn & 0x7f80) == 0x7f80 && (bn & 0x7f) != 0);
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = graft_bf16_to_f32((uint16_t)h);
        bool is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        uint16_t back = graft_f32_to_bf16(f);
        if (is_nan ? back != (uint16_t)(h | 0x40) : back != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 values do not round-trip", bad);
    bad = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t x = (uint32_t)rnd64();
        if (i % 2) x = (x & 0xffff0000u) | 0x8000u; /* exact ties */
        float f = bitsf(x);
        if (isnan(f)) continue;
        if (graft_f32_to_bf16(f) != ref_bf16(f)) bad++;
    }
    CHECK_MSG(bad == 0, "%d f32->bf16 mismatches with the reference", bad);

    /* bulk conversion (SIMD where compiled) equals the scalar path bit for
     * bit, from a misaligned source, for all 65536 inputs */
    uint8_t *raw = malloc(2 * 65536 + 3);
    float *out = malloc(65536 * sizeof(float) + 4);
    for (int dt = 0; dt < 2; dt++) {
        for (uint32_t h = 0; h < 65536; h++) {
            raw[1 + 2 * h] = (uint8_t)h;
            raw[2 + 2 * h] = (uint8_t)(h >> 8);
        }
        graft_convert_to_f32(out + 1, raw + 1, dt ? GRAFT_BF16 : GRAFT_F16, 65536 - 5); /* odd length tail */
        bad = 0;
        for (uint32_t h = 0; h < 65536 - 5; h++) {
            float ref = dt ? graft_bf16_to_f32((uint16_t)h) : graft_f16_to_f32((uint16_t)h);
            if (fbits(ref) != fbits(out[1 + h])) bad++;
        }
        CHECK_MSG(bad == 0, "%d %s bulk conversions differ from scalar", bad, dt ? "bf16" : "f16");
    }
    /* F32 and integer sources */
    float f3[3] = {1.5f, -2.0f, 3.25f};
    memcpy(raw + 1, f3, sizeof f3);
    graft_convert_to_f32(out, raw + 1, GRAFT_F32, 3);
    CHECK(out[0] == 1.5f && out[1] == -2.0f && out[2] == 3.25f);
    int64_t i64[2] = {-7, 1 << 20};
    memcpy(raw + 1, i64, sizeof i64);
    graft_convert_to_f32(out, raw + 1, GRAFT_I64, 2);
    CHECK(out[0] == -7.0f && out[1] == (float)(1 << 20));
    free(raw);
    free(out);
}

/* ---------------------------------------------------------------- safetensors */

static char tmpdir[64];

static char *tmp_path(const char *name) { return graft_path_join(tmpdir, name); }

/* Write a raw safetensors file: header text (padded to 8), then data. If
 * hlen_override is non-zero, it replaces the length field. */
static void write_raw(const char *path, const char *header, const void *data, size_t data_len,
                      uint64_t hlen_override) {
    size_t hl = strlen(header);
    size_t padded = (hl + 7) / 8 * 8;
    size_t total = 8 + padded + data_len;
    uint8_t *buf = malloc(total);
    uint64_t n = hlen_override ? hlen_override : padded;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    if (data_len) memcpy(buf + 8 + padded, data, data_len);
    FILE *fp = fopen(path, "wb");
    fwrite(buf, 1, total, fp);
    fclose(fp);
    free(buf);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (n) fwrite(data, 1, n, fp);
    fclose(fp);
}

/* Open must fail with status st and a message that names the file and
 * contains each of the given fragments. */
#define BAD_ST(header, data, dlen, hlen, st, frag1, frag2)                                          \
    do {                                                                                           \
        char *p_ = tmp_path("bad.safetensors");                                                    \
        write_raw(p_, header, data, dlen, hlen);                                                   \
        graft_st_archive a_;                                                                       \
        CHECK_FAILS(graft_st_open(p_, &a_), st, frag1);                                            \
        CHECK_MSG(strstr(graft_last_error(), p_) && strstr(graft_last_error(), frag2),              \
                  "message lacks path or '%s': %s", frag2, graft_last_error());                    \
        CHECK(a_.n_tensors == 0 && a_.files == NULL); /* nothing leaks on failure */               \
        unlink(p_);                                                                                \
        free(p_);                                                                                  \
    } while (0)

static void test_safetensors_read_bad(void) {
    uint8_t data[64];
    for (int i = 0; i < 64; i++) data[i] = (uint8_t)i;
    const char *ok_hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";

    /* baseline: the good one opens */
    char *p = tmp_path("good.safetensors");
    write_raw(p, ok_hdr, data, 16, 0);
    graft_st_archive a;
    CHECK_OK(graft_st_open(p, &a));
    CHECK(a.n_tensors == 1 && a.tensors[0].numel == 4 && a.tensors[0].file_offset == 8 + 64);
    CHECK(graft_st_find(&a, "a") && !graft_st_find(&a, "b"));
    CHECK(a.metadata_json == NULL);
    graft_st_close(&a);

    /* truncated: fewer than 8 bytes, and a file cut inside its data */
    write_bytes(p, "\x10\x00\x00", 3);
    CHECK_FAILS(graft_st_open(p, &a), GRAFT_ERR_FORMAT, "offset 0");
    CHECK(strstr(graft_last_error(), p) != NULL);
    write_bytes(p, "", 0);
    CHECK_FAILS(graft_st_open(p, &a), GRAFT_ERR_FORMAT, "too short");
    write_raw(p, ok_hdr, data, 10, 0);
    CHECK_FAILS(graft_st_open(p, &a), GRAFT_ERR_FORMAT, "tensor 'a'");
    CHECK(strstr(graft_last_error(), "past the end") && strstr(graft_last_error(), "offset"));
    unlink(p);
    free(p);

    /* header length beyond the file, and absurdly large */
    BAD_ST(ok_hdr, data, 16, 1000, GRAFT_ERR_FORMAT, "header length 1000", "offset 0");
    BAD_ST(ok_hdr, data, 16, (uint64_t)1 << 62, GRAFT_ERR_FORMAT, "runs past the end", "offset 0");
    BAD_ST(ok_hdr, data, 16, 1, GRAFT_ERR_FORMAT, "header length 1", "offset 0");
    /* header not JSON / not an object / garbage after it / NUL / bad UTF-8 */
    BAD_ST("{\"a\": {\"dtype\": \"F32\", oops", data, 16, 0, GRAFT_ERR_FORMAT, "not valid JSON", "offset");
    BAD_ST("[1, 2, 3]", data, 16, 0, GRAFT_ERR_FORMAT, "not a JSON object", "offset 8");
    BAD_ST("{} x", data, 16, 0, GRAFT_ERR_FORMAT, "after the JSON", "offset 11");
    BAD_ST("{\"a\xff\":{}}", data, 16, 0, GRAFT_ERR_FORMAT, "UTF-8", "offset 11");
    {
        char *pp = tmp_path("nul.safetensors");
        uint8_t raw[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', 0, ' ', ' ', ' ', ' '};
        write_bytes(pp, raw, sizeof raw);
        CHECK_FAILS(graft_st_open(pp, &a), GRAFT_ERR_FORMAT, "NUL byte at file offset 11");
        unlink(pp);
        free(pp);
    }
    /* offsets out of range */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "past the end");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "end before they begin");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "data_offsets");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "data_offsets");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "data_offsets");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "data_offsets");
    /* overlapping offsets */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
           data, 16, 0, GRAFT_ERR_FORMAT, "overlap", "file offset");
    BAD_ST("{\"z\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[15,16]}}",
           data, 16, 0, GRAFT_ERR_FORMAT, "overlap", "'z'");
    /* the message points at the tensor's entry in the header ("a" at byte 1 of the JSON) */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "header entry at file offset 9");
    /* offsets not matching dtype x shape */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "needs 12");
    BAD_ST("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "file offset");
    /* element count that overflows */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", data,
           16, 0, GRAFT_ERR_FORMAT, "tensor 'a'", "overflows");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,16]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "shape");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,16]}}", data, 16, 0, GRAFT_ERR_FORMAT,
           "tensor 'a'", "shape");
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", data, 16, 0,
           GRAFT_ERR_UNSUPPORTED, "tensor 'a'", "dimensions");
    /* unknown dtype */
    BAD_ST("{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", data, 16, 0, GRAFT_ERR_UNSUPPORTED,
           "tensor 'w'", "\"F64\"");
    BAD_ST("{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,16]}}", data, 16, 0, GRAFT_ERR_UNSUPPORTED,
           "tensor 'w'", "Q4_K");
    BAD_ST("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data, 16, 0, GRAFT_ERR_FORMAT, "tensor 'w'", "dtype");
    BAD_ST("{\"w\":[1,2]}", data, 16, 0, GRAFT_ERR_FORMAT, "tensor 'w'", "not a JSON object");
    /* duplicate names; bad metadata */
    BAD_ST("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           data, 16, 0, GRAFT_ERR_FORMAT, "'a' is defined twice", "file offset");
    BAD_ST("{\"__metadata__\":{\"format\":1}}", data, 0, 0, GRAFT_ERR_FORMAT, "__metadata__", "'format'");
    BAD_ST("{\"__metadata__\":[]}", data, 0, 0, GRAFT_ERR_FORMAT, "__metadata__", "not a JSON object");

    /* accepted corner cases: scalar, empty tensor, gaps, metadata, no tensors */
    p = tmp_path("corner.safetensors");
    write_raw(p,
              "{\"__metadata__\":{\"format\":\"pt\"},"
              "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
              "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
              "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]}}",
              data, 16, 0);
    CHECK_OK(graft_st_open(p, &a));
    CHECK(a.n_tensors == 3);
    const graft_st_tensor *t = graft_st_find(&a, "s");
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    t = graft_st_find(&a, "e");
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->shape[1] == 5);
    t = graft_st_find(&a, "i");
    CHECK(t && t->dtype == GRAFT_I64 && memcmp(t->data, data + 8, 8) == 0);
    CHECK(a.metadata_json && strstr(a.metadata_json, "\"format\"") && strstr(a.metadata_json, "\"pt\""));
    graft_st_close(&a);
    write_raw(p, "{}", NULL, 0, 0);
    CHECK_OK(graft_st_open(p, &a));
    CHECK(a.n_tensors == 0);
    graft_st_close(&a);
    unlink(p);
    free(p);

    CHECK_FAILS(graft_st_open("/nonexistent/x.safetensors", &a), GRAFT_ERR_IO, "/nonexistent/x.safetensors");
}

static void test_safetensors_write(void) {
    float m[6] = {1.0f, -2.5f, 3.0e-3f, 65504.0f, 1e-7f, -0.0f};
    float s = 42.0f;
    graft_st_write_item items[4] = {
        {.name = "z.mat", .dtype = GRAFT_F32, .ndim = 2, .shape = {2, 3}, .data = m},
        {.name = "a.half", .dtype = GRAFT_F16, .ndim = 1, .shape = {5}, .data = m},
        {.name = "m.bf", .dtype = GRAFT_BF16, .ndim = 2, .shape = {3, 2}, .data = m},
        {.name = "q\"uote\\d", .dtype = GRAFT_F32, .ndim = 0, .data = &s},
    };
    const char *meta[] = {"format", "pt", "note", "graft \"test\""};
    char *p = tmp_path("w.safetensors");
    CHECK_OK(graft_st_write(p, items, 4, meta, 2));
    graft_st_archive a;
    CHECK_OK(graft_st_open(p, &a));
    CHECK(a.n_tensors == 4);
    /* header padded so that the data starts on an 8-byte boundary */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | a.files[0].data[i];
    CHECK(hl % 8 == 0);
    CHECK(a.files[0].data[8 + hl - 1] == '}' || a.files[0].data[8 + hl - 1] == ' ');
    /* tensors stored in name order: a.half, m.bf, q"uote\d, z.mat */
    const graft_st_tensor *th = graft_st_find(&a, "a.half"), *tb = graft_st_find(&a, "m.bf"),
                          *tq = graft_st_find(&a, "q\"uote\\d"), *tz = graft_st_find(&a, "z.mat");
    CHECK(th && tb && tq && tz);
    if (th && tb && tq && tz) {
        CHECK(th->file_offset < tb->file_offset && tb->file_offset < tq->file_offset &&
              tq->file_offset < tz->file_offset);
        CHECK(th->dtype == GRAFT_F16 && th->nbytes == 10);
        CHECK(tq->ndim == 0 && tq->numel == 1);
        float back[6];
        graft_convert_to_f32(back, th->data, GRAFT_F16, 5);
        for (int i = 0; i < 5; i++) CHECK(back[i] == graft_f16_to_f32(graft_f32_to_f16(m[i])));
        graft_convert_to_f32(back, tb->data, GRAFT_BF16, 6);
        for (int i = 0; i < 6; i++) CHECK(back[i] == graft_bf16_to_f32(graft_f32_to_bf16(m[i])));
        graft_convert_to_f32(back, tz->data, GRAFT_F32, 6);
        CHECK(memcmp(back, m, sizeof m) == 0);
        graft_convert_to_f32(back, tq->data, GRAFT_F32, 1);
        CHECK(back[0] == 42.0f);
        CHECK(tz->shape[0] == 2 && tz->shape[1] == 3);
    }
    CHECK(a.metadata_json && strstr(a.metadata_json, "graft \\\"test\\\""));
    graft_st_close(&a);

    /* writing twice gives the same bytes (deterministic) */
    char *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    CHECK_OK(graft_read_file(p, &b1, &n1));
    CHECK_OK(graft_st_write(p, items, 4, meta, 2));
    CHECK_OK(graft_read_file(p, &b2, &n2));
    CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);

    /* bad requests */
    graft_st_write_item dup[2] = {items[0], items[0]};
    CHECK_FAILS(graft_st_write(p, dup, 2, NULL, 0), GRAFT_ERR_INVALID, "given twice");
    graft_st_write_item bad = items[0];
    bad.dtype = GRAFT_I64;
    CHECK_FAILS(graft_st_write(p, &bad, 1, NULL, 0), GRAFT_ERR_INVALID, "I64");
    bad = items[0];
    bad.shape[1] = -1;
    CHECK_FAILS(graft_st_write(p, &bad, 1, NULL, 0), GRAFT_ERR_INVALID, "shape");
    bad = items[0];
    bad.name = "__metadata__";
    CHECK_FAILS(graft_st_write(p, &bad, 1, NULL, 0), GRAFT_ERR_INVALID, "name");
    CHECK_FAILS(graft_st_write("/nonexistent/dir/x.safetensors", items, 1, NULL, 0), GRAFT_ERR_IO, "/nonexistent");
    /* an empty file is still a valid archive */
    CHECK_OK(graft_st_write(p, NULL, 0, NULL, 0));
    CHECK_OK(graft_st_open(p, &a));
    CHECK(a.n_tensors == 0);
    graft_st_close(&a);
    unlink(p);
    free(p);
}

/* ---------------------------------------------------------------- config */

static const char *gpt2_json =
    "{\"activation_function\":\"gelu_new\",\"architectures\":[\"GPT2LMHeadModel\"],\"bos_token_id\":50256,"
    "\"eos_token_id\":50256,\"layer_norm_epsilon\":1e-05,\"model_type\":\"gpt2\",\"n_embd\":64,\"n_head\":4,"
    "\"n_inner\":null,\"n_layer\":2,\"n_positions\":128,\"n_ctx\":999,\"vocab_size\":50257}";

static const char *llama_json =
    "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,"
    "\"num_attention_heads\":8,\"num_key_value_heads\":4,\"head_dim\":8,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-05,"
    "\"rope_theta\":10000.0,\"rope_scaling\":null,\"vocab_size\":512,\"max_position_embeddings\":512,"
    "\"bos_token_id\":1,\"eos_token_id\":2,\"tie_word_embeddings\":true}";

/* Replace the first occurrence of `from` with `to` in a copy of s. */
static char *subst(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    if (!at) return strdup(s);
    size_t a = (size_t)(at - s), b = strlen(from), c = strlen(to), n = strlen(s);
    char *r = malloc(n - b + c + 1);
    memcpy(r, s, a);
    memcpy(r + a, to, c);
    memcpy(r + a + c, at + b, n - a - b + 1);
    return r;
}

#define CFG_FAILS(base, from, to, st, frag)                                                        \
    do {                                                                                           \
        char *j_ = subst(base, from, to);                                                          \
        graft_config c_;                                                                           \
        CHECK_FAILS(graft_config_from_json(&c_, j_, "dir/config.json"), st, frag);                 \
        CHECK(strstr(graft_last_error(), "dir/config.json") != NULL);                             \
        free(j_);                                                                                  \
    } while (0)

static void test_config(void) {
    graft_config c;
    CHECK_OK(graft_config_from_json(&c, gpt2_json, "config.json"));
    CHECK(c.arch == GRAFT_ARCH_GPT2 && c.d_model == 64 && c.n_layer == 2 && c.n_head == 4 && c.n_kv_head == 4);
    CHECK(c.head_dim == 16 && c.d_ff == 256 && c.vocab_size == 50257 && c.n_ctx == 128); /* n_ctx ignored */
    CHECK(c.tied == 1 && c.bos_id == 50256 && c.eos_id == 50256 && c.rope_interleaved == 0);
    CHECK_NEAR(c.norm_eps, 1e-5, 1e-12);
    char *j = subst(gpt2_json, "\"n_inner\":null", "\"n_inner\":100,\"tie_word_embeddings\":false");
    CHECK_OK(graft_config_from_json(&c, j, "config.json"));
    CHECK(c.d_ff == 100 && c.tied == 0);
    free(j);

    CHECK_OK(graft_config_from_json(&c, llama_json, "config.json"));
    CHECK(c.arch == GRAFT_ARCH_LLAMA && c.d_model == 64 && c.d_ff == 172 && c.n_layer == 5 && c.n_head == 8);
    CHECK(c.n_kv_head == 4 && c.head_dim == 8 && c.vocab_size == 512 && c.n_ctx == 512 && c.tied == 1);
    CHECK(c.bos_id == 1 && c.eos_id == 2 && c.rope_interleaved == 0 && c.rope_theta == 10000.0f);
    /* defaults: kv heads = heads, head_dim = hidden/heads, untied, theta 10000 */
    j = subst(llama_json, "\"num_key_value_heads\":4,\"head_dim\":8,", "");
    char *j2 = subst(j, ",\"tie_word_embeddings\":true", "");
    char *j3 = subst(j2, "\"rope_theta\":10000.0,", "");
    CHECK_OK(graft_config_from_json(&c, j3, "config.json"));
    CHECK(c.n_kv_head == 8 && c.head_dim == 8 && c.tied == 0 && c.rope_theta == 10000.0f);
    free(j);
    free(j2);
    free(j3);
    j = subst(llama_json, "\"eos_token_id\":2", "\"eos_token_id\":[128001,128009]");
    CHECK_OK(graft_config_from_json(&c, j, "config.json"));
    CHECK(c.eos_id == 128001);
    free(j);

    /* errors: not JSON, missing keys, wrong types, unsupported variants */
    CHECK_FAILS(graft_config_from_json(&c, "{\"model_type\": \"gpt2\",", "x/config.json"), GRAFT_ERR_FORMAT,
                "x/config.json: not valid JSON");
    CHECK_FAILS(graft_config_from_json(&c, "[]", "x/config.json"), GRAFT_ERR_FORMAT, "not a JSON object");
    CFG_FAILS(gpt2_json, "\"n_embd\":64,", "", GRAFT_ERR_FORMAT, "\"n_embd\" is missing");
    CFG_FAILS(gpt2_json, "\"model_type\":\"gpt2\",", "", GRAFT_ERR_FORMAT, "\"model_type\" is missing");
    CFG_FAILS(gpt2_json, "\"n_layer\":2", "\"n_layer\":\"2\"", GRAFT_ERR_FORMAT, "\"n_layer\" must be an integer");
    CFG_FAILS(gpt2_json, "\"n_layer\":2", "\"n_layer\":2.5", GRAFT_ERR_FORMAT, "\"n_layer\" must be an integer");
    CFG_FAILS(gpt2_json, "\"n_head\":4", "\"n_head\":0", GRAFT_ERR_FORMAT, "\"n_head\"");
    CFG_FAILS(gpt2_json, "\"n_head\":4", "\"n_head\":5", GRAFT_ERR_FORMAT, "not divisible");
    CFG_FAILS(gpt2_json, "\"layer_norm_epsilon\":1e-05", "\"layer_norm_epsilon\":\"x\"", GRAFT_ERR_FORMAT,
              "\"layer_norm_epsilon\"");
    CFG_FAILS(gpt2_json, "\"gelu_new\"", "\"relu\"", GRAFT_ERR_UNSUPPORTED, "relu");
    CFG_FAILS(gpt2_json, "\"model_type\":\"gpt2\"", "\"model_type\":\"mistral\"", GRAFT_ERR_UNSUPPORTED, "mistral");
    CFG_FAILS(gpt2_json, "\"n_inner\":null", "\"tie_word_embeddings\":1", GRAFT_ERR_FORMAT,
              "\"tie_word_embeddings\"");
    CFG_FAILS(llama_json, "\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}",
              GRAFT_ERR_UNSUPPORTED, "rope_scaling");
    CFG_FAILS(llama_json, "\"hidden_act\":\"silu\"", "\"hidden_act\":\"gelu\"", GRAFT_ERR_UNSUPPORTED, "gelu");
    CFG_FAILS(llama_json, "\"num_key_value_heads\":4", "\"num_key_value_heads\":3", GRAFT_ERR_FORMAT,
              "num_key_value_heads");
    CFG_FAILS(llama_json, "\"intermediate_size\":172,", "", GRAFT_ERR_FORMAT, "\"intermediate_size\" is missing");
    CFG_FAILS(llama_json, "\"vocab_size\":512", "\"vocab_size\":-512", GRAFT_ERR_FORMAT, "\"vocab_size\"");
    CFG_FAILS(llama_json, "\"head_dim\":8", "\"head_dim\":7", GRAFT_ERR_FORMAT, "head_dim");

    /* presets */
    CHECK_OK(graft_config_preset("gpt2", &c));
    CHECK(c.arch == GRAFT_ARCH_GPT2 && c.d_model == 768 && c.n_layer == 12 && c.n_head == 12 &&
          c.vocab_size == 50257 && c.n_ctx == 1024 && c.d_ff == 3072 && c.tied);
    CHECK_OK(graft_config_preset("gpt2-medium", &c));
    CHECK(c.d_model == 1024 && c.n_layer == 24 && c.n_head == 16);
    CHECK_OK(graft_config_preset("gpt2-large", &c));
    CHECK(c.d_model == 1280 && c.n_layer == 36 && c.n_head == 20);
    CHECK_OK(graft_config_preset("gpt2-xl", &c));
    CHECK(c.d_model == 1600 && c.n_layer == 48 && c.n_head == 25 && c.head_dim == 64 && c.n_ctx == 1024);
    CHECK_OK(graft_config_preset("gpt2-tiny", &c));
    CHECK(c.d_model == 64 && c.n_layer == 2 && c.n_head == 4 && c.vocab_size == 50257 && c.n_ctx == 128);
    CHECK_OK(graft_config_preset("llama-tiny", &c));
    CHECK(c.arch == GRAFT_ARCH_LLAMA && c.d_model == 64 && c.d_ff == 172 && c.n_layer == 5 && c.n_head == 8 &&
          c.n_kv_head == 4 && c.head_dim == 8 && c.vocab_size == 512 && c.n_ctx == 512 && c.tied &&
          c.rope_interleaved == 1);
    CHECK_FAILS(graft_config_preset("gpt5", &c), GRAFT_ERR_INVALID, "gpt5");

    /* parameter tables: names, shapes and counts */
    graft_param_table t;
    CHECK_OK(graft_config_preset("gpt2", &c));
    CHECK_OK(graft_param_table_init(&t, &c));
    CHECK(t.n == 2 + 12 * 12 + 2);
    CHECK(graft_param_table_numel(&t) == 124439808u); /* GPT-2 small, tied */
    graft_param *p = graft_param_find(&t, "transformer.h.11.attn.c_attn.weight");
    CHECK(p && p->ndim == 2 && p->shape[0] == 768 && p->shape[1] == 2304);
    CHECK(graft_param_find(&t, "lm_head.weight") == NULL);
    graft_param_table_free(&t);
    c.tied = 0;
    CHECK_OK(graft_param_table_init(&t, &c));
    p = graft_param_find(&t, "lm_head.weight");
    CHECK(p && p->shape[0] == 50257 && p->shape[1] == 768);
    graft_param_table_free(&t);
    CHECK_OK(graft_config_preset("llama-tiny", &c));
    CHECK_OK(graft_param_table_init(&t, &c));
    CHECK(t.n == 1 + 5 * 9 + 1);
    p = graft_param_find(&t, "model.layers.4.self_attn.k_proj.weight");
    CHECK(p && p->shape[0] == 32 && p->shape[1] == 64);
    p = graft_param_find(&t, "model.layers.0.mlp.down_proj.weight");
    CHECK(p && p->shape[0] == 64 && p->shape[1] == 172);
    graft_param_table_free(&t);
    c.n_kv_head = 3;
    CHECK_FAILS(graft_param_table_init(&t, &c), GRAFT_ERR_INVALID, "n_kv_head");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/graft_formatsXXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_dtypes();
    test_safetensors_read_bad();
    test_safetensors_write();
    test_config();
    rmdir(tmpdir);
    return test_finish("test_formats");
}
