/* fuzz_serve_request.c - graft serve's request parsing: the input's first
 * byte picks the endpoint (/v1/completions, /v1/edits, /v1/score bodies:
 * UTF-8, a JSON object, prompt as a string or a list, max_tokens against the
 * context, temperature, top_p, seed, stop, stream, echo, n, model; prompt,
 * target and subject of an edit; text to score), or the ID of /v1/edits/ID;
 * the rest is the body or the ID. graft_serve_parse_request runs the parsers
 * the live server runs, with no HTTP server per input. */
#include "fuzz.h"
#include "serve/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const endpoints[] = {"completions", "edits", "score"};
    if (size < 1) return 0;
    int k = data[0] % 4;
    data++, size--;
    if (k < 3) {
        /* the body as libmicrohttpd hands it over: exactly size bytes, no terminator */
        graft_serve_parse_request(endpoints[k], (const char *)data, size, 256);
        return 0;
    }
    /* a URL path is a C string: the ID stops at the first NUL */
    char *url = malloc(6 + size + 1);
    if (!url) return 0;
    memcpy(url, "edits/", 6);
    memcpy(url + 6, data, size);
    url[6 + size] = 0;
    graft_serve_parse_request(url, NULL, 0, 256);
    free(url);
    return 0;
}
