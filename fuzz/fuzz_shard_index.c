/* fuzz_shard_index.c - model.safetensors.index.json, the sharded form:
 * weight_map entries, shard names (plain file names only), each shard opened
 * once, every named tensor in the shard it is named in, duplicates across
 * shards. The input is the index text; after a NUL byte, the rest is a third
 * shard "extra.safetensors". Two fixed shards sit beside it. Everything is
 * in memory (graft_st_open_index_mem, the code graft_st_open_dir runs on the
 * files), so no file is written per input. */
#include "fuzz.h"

/* A safetensors image: 8-byte little-endian header length, header, data. */
static uint8_t *shard(const char *header, size_t data_bytes, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_bytes;
    uint8_t *b = calloc(1, *size);
    if (!b) abort();
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_bytes; i++) b[8 + h + i] = (uint8_t)(i * 37 + 1);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static graft_st_mem_file files[3];
    if (!files[0].data) {
        files[0].name = "model-00001-of-00002.safetensors";
        files[0].data = shard("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"b\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[8,10]},"
                              "\"__metadata__\":{\"format\":\"pt\"}}", 10, &files[0].size);
        files[1].name = "model-00002-of-00002.safetensors";
        files[1].data = shard("{\"c\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[0,4]}}", 4, &files[1].size);
        files[2].name = "extra.safetensors";
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    files[2].data = nul ? nul + 1 : data + size;
    files[2].size = nul ? size - len - 1 : 0;
    graft_st_archive a;
    if (graft_st_open_index_mem("model", (const char *)data, len, files, 3, &a) == GRAFT_OK) {
        fuzz_touch_tensors(&a);
        graft_st_close(&a);
    }
    return 0;
}
