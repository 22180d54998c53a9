/*
 * json_util.h - attaching cJSON items without leaking them. cJSON leaves an
 * item it could not attach to the caller: cJSON_AddItemToObject fails when it
 * cannot copy the key (out of memory), and both calls fail when the container
 * is NULL because creating it failed. Code that builds JSON with
 * `add(obj, key, cJSON_CreateNumber(x))` then leaks the item on exactly the
 * paths that are out of memory (found by tests/oom). These free it instead and
 * say whether it was attached.
 */
#ifndef GRAFT_JSON_UTIL_H
#define GRAFT_JSON_UTIL_H
#include <cjson/cJSON.h>

static inline int graft_json_put(cJSON *obj, const char *key, cJSON *item) {
    if (obj && item && cJSON_AddItemToObject(obj, key, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

static inline int graft_json_push(cJSON *arr, cJSON *item) {
    if (arr && item && cJSON_AddItemToArray(arr, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

#endif
