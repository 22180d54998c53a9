/*
 * serve.c - graft serve on libmicrohttpd (serve.h).
 *
 * Threads: libmicrohttpd runs one thread per connection. Three locks:
 *  - the state gate (gate_*): many generations or one edit. A completion
 *    enters as a reader before it starts and leaves when it ends, so it sees
 *    one journal position; an edit or undo enters as the writer once no
 *    reader is inside, and holds new readers back while it waits (writer
 *    preference: a stream of completions cannot starve corrections). It is a
 *    mutex + condition variable rather than a pthread rwlock because a
 *    streamed completion enters on the connection's thread and leaves on its
 *    producer thread.
 *  - `step`: one forward pass at a time. Editors keep the key positions of
 *    the running forward in their own state, and on 2-core machines the
 *    kernels already use every core, so concurrent requests interleave token
 *    by token instead of running forwards side by side.
 *  - `jmu`: the journal handle and the cached statistics.
 *
 * A replica (the journal is a postgresql:// URI, docs/REPLICAS.md) has one
 * more thread, the follower: it waits on the journal's notifications (and
 * polls its head every 250 ms, which also catches up after a lost
 * connection) and applies rows other replicas took, in journal order, as the
 * writer. An edit taken here first catches up too, so its change is computed
 * on the state of every row before it; the journal refuses its row if
 * another replica took that position meanwhile, and the edit is taken back,
 * the follower's rows applied and the edit tried again.
 */
#define _GNU_SOURCE
#include "serve.h"

#include "../data/dataset.h"
#include "../edit/eval.h"
#include "../edit/journal.h"
#include "../edit/stream.h"
#include "../internal.h"
#include "core/json_util.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct graft_server {
    graft_serve_opts o;
    struct MHD_Daemon *d;
    graft_model *m;
    graft_tokenizer *tok;
    graft_editor *e;          /* NULL: no editing */
    graft_journal *j;
    char *model_name, *method;
    int n_ctx;
    /* the state gate */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    int readers, writer, writers_waiting;
    int64_t position;         /* journal rows (edits and undos) so far */
    pthread_mutex_t step;
    pthread_mutex_t jmu;
    atomic_int active;        /* requests being served (for the 503 limit) */
    atomic_long next_id;
    /* /v1/stats: locality prompts with the unedited model's greedy answers */
    graft_eval_item *loc;
    int *loc_base;            /* concatenated greedy target tokens of the unedited model */
    int n_loc;
    int64_t stats_at;         /* position the cached figures were measured at (-1: never) */
    double stats_ret, stats_loc;
    int stats_live;
    /* a replica of a PostgreSQL journal: the follower thread (under jmu: the delays and error) */
    graft_journal_watch *watch;
    pthread_t follower;
    int follower_on;
    atomic_int stopping;
    double *delays;           /* ms from a row's commit time to its apply here, for rows other replicas took */
    size_t n_delays, cap_delays;
    int64_t applied_remote;
    char follow_error[512];
};

void graft_serve_opts_default(graft_serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_body = 1 << 20;
    o->max_active = 16;
    o->conn_timeout_s = 30;
    o->request_timeout_s = 120;
    o->stats_n = 100;
}

static graft_status note_applied(void *user, const graft_journal_entry *en);

/* ---------------------------------------------------------------- the gate */

static void gate_read(graft_server *s, int64_t *pos) {
    pthread_mutex_lock(&s->gate_mu);
    while (s->writer || s->writers_waiting) pthread_cond_wait(&s->gate_cv, &s->gate_mu);
    s->readers++;
    *pos = s->position;
    pthread_mutex_unlock(&s->gate_mu);
}

static void gate_read_end(graft_server *s) {
    pthread_mutex_lock(&s->gate_mu);
    if (--s->readers == 0) pthread_cond_broadcast(&s->gate_cv);
    pthread_mutex_unlock(&s->gate_mu);
}

static void gate_write(graft_server *s) {
    pthread_mutex_lock(&s->gate_mu);
    s->writers_waiting++;
    while (s->writer || s->readers) pthread_cond_wait(&s->gate_cv, &s->gate_mu);
    s->writers_waiting--;
    s->writer = 1;
    pthread_mutex_unlock(&s->gate_mu);
}

/* the writer leaves; readers from now on see the journal position the editor holds */
static void gate_write_end(graft_server *s) {
    pthread_mutex_lock(&s->gate_mu);
    s->writer = 0;
    if (s->j) s->position = graft_journal_position(s->j);
    pthread_cond_broadcast(&s->gate_cv);
    pthread_mutex_unlock(&s->gate_mu);
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned code, char *body, const char *type,
                                 int64_t position) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (position >= 0) {
        char p[32];
        snprintf(p, sizeof p, "%lld", (long long)position);
        MHD_add_response_header(r, "X-Graft-Journal-Position", p);
    }
    if (code == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(r, "Retry-After", "1");
    if (code == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, cJSON *j, int64_t position) {
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!body) return MHD_NO;
    return send_body(c, code, body, "application/json", position);
}

/* The API's error object: {"error": {"message", "type", "param", "code"}}. */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = code == 401   ? "authentication_error"
                       : code == 403 ? "permission_error"
                       : code == 404 ? "not_found_error"
                       : code == 503 ? "overloaded_error"
                       : code < 500  ? "invalid_request_error"
                                     : "server_error";
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    cJSON_AddNullToObject(e, "code");
    return send_json(c, code, j, -1);
}

/* A library failure: the caller's input (4xx) or ours (500). */
static enum MHD_Result send_status(struct MHD_Connection *c, graft_status st, const char *what) {
    unsigned code = st == GRAFT_ERR_INVALID || st == GRAFT_ERR_RANGE || st == GRAFT_ERR_FORMAT ? 400
                    : st == GRAFT_ERR_UNSUPPORTED                                              ? 501
                                                                                               : 500;
    return send_error(c, code, NULL, "%s: %s", what, graft_last_error());
}

/* ---------------------------------------------------------------- text */

/* Bytes of s[0..n) that end on a whole UTF-8 character: a streamed piece
 * never splits one (BPE tokens are bytes, a character may span tokens). */
static size_t utf8_whole(const char *s, size_t n) {
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return n;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return back + 1 >= need ? n : i - 1;
}

/* Invalid UTF-8 (a model may emit any bytes) becomes U+FFFD, so the JSON we
 * send is always valid. Malloc'ed. */
static char *utf8_clean(const char *s, size_t n) {
    char *o = malloc(3 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t bad = 0;
        size_t len = 1;
        unsigned char b = (unsigned char)s[i];
        if (b >= 0xC0) len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
        if (i + len <= n && graft_utf8_valid(s + i, len, &bad)) {
            memcpy(o + k, s + i, len);
            k += len, i += len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3, i++;
        }
    }
    o[k] = 0;
    return o;
}

/* Prompt tokens as every editor and metric of graft encode a prompt
 * (graft_encode_pair): BOS where the tokenizer's models expect one. */
static graft_status encode_prompt(graft_server *s, const char *text, int **ids, size_t *n) {
    int *raw = NULL;
    size_t nraw = 0;
    GRAFT_TRY(graft_tokenize(s->tok, text, strlen(text), &raw, &nraw));
    int bos = graft_tokenizer_bos(s->tok);
    int add = bos >= 0 && !strcmp(graft_tokenizer_kind(s->tok), "llama2c-spm");
    int *v = malloc((nraw + 1) * sizeof *v);
    if (!v) {
        free(raw);
        return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    }
    if (add) v[0] = bos;
    if (nraw) memcpy(v + add, raw, nraw * sizeof *v);
    free(raw);
    *ids = v;
    *n = nraw + (size_t)add;
    return GRAFT_OK;
}

/* ---------------------------------------------------------------- completions */

#define MAX_STOPS 4

typedef struct gen_req {
    graft_server *s;
    char **prompts;
    int n_prompts, echo, stream;
    graft_gen_opts g;
    char *stops[MAX_STOPS];
    int n_stops;
    char id[48];
    long created;
    int64_t position;
    /* per prompt while generating */
    char *text;
    size_t len, cap, sent;
    int prev, stopped, index;
    size_t n_prompt_tok, n_gen_tok;
    double deadline;
    int timed_out;
    int fd;                   /* stream: the producer's end of the socket pair, -1 when gone */
} gen_req;

static void gen_req_free(gen_req *q) {
    for (int i = 0; i < q->n_prompts; i++) free(q->prompts[i]);
    free(q->prompts);
    for (int i = 0; i < q->n_stops; i++) free(q->stops[i]);
    free(q->text);
    if (q->fd >= 0) close(q->fd);
    free(q);
}

static cJSON *choice_obj(const gen_req *q, const char *piece, size_t n, const char *finish) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", q->id);
    cJSON_AddStringToObject(j, "object", "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)q->created);
    cJSON_AddStringToObject(j, "model", q->s->model_name);
    cJSON *ch = cJSON_AddArrayToObject(j, "choices"), *c = cJSON_CreateObject();
    char *clean = utf8_clean(piece, n);
    cJSON_AddStringToObject(c, "text", clean ? clean : "");
    free(clean);
    cJSON_AddNumberToObject(c, "index", q->index);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    graft_json_push(ch, c);
    return j;
}

/* Stream: write one server-sent event; 0 when the client has gone. */
static int sse_send(gen_req *q, const char *data) {
    if (q->fd < 0) return 0;
    size_t n = strlen(data);
    char *ev = malloc(n + 9);
    if (!ev) return 0;
    memcpy(ev, "data: ", 6);
    memcpy(ev + 6, data, n);
    memcpy(ev + 6 + n, "\n\n", 3);
    size_t len = n + 8, at = 0;
    while (at < len) {
        ssize_t w = send(q->fd, ev + at, len - at, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(q->fd);
            q->fd = -1;
            break;
        }
        at += (size_t)w;
    }
    free(ev);
    return q->fd >= 0;
}

/* Where the first stop sequence begins in text[from..len), or -1. */
static long find_stop(const gen_req *q, size_t from) {
    long best = -1;
    for (int k = 0; k < q->n_stops; k++) {
        size_t sl = strlen(q->stops[k]);
        size_t start = from > sl ? from - sl : 0;
        char *hit = memmem(q->text + start, q->len - start, q->stops[k], sl);
        if (hit && (best < 0 || hit - q->text < best)) best = hit - q->text;
    }
    return best;
}

/* Per generated token: append its bytes, check stop sequences and the
 * deadline, stream what is final. Non-zero stops the generation. */
static int on_token(void *user, int id) {
    gen_req *q = user;
    const char *piece;
    size_t pn;
    if (graft_token_piece(q->s->tok, q->prev, id, &piece, &pn) != GRAFT_OK) pn = 0;
    q->prev = id;
    q->n_gen_tok++;
    if (q->len + pn + 1 > q->cap) {
        size_t cap = (q->len + pn + 1) * 2;
        char *t = realloc(q->text, cap);
        if (!t) return 1;
        q->text = t, q->cap = cap;
    }
    size_t from = q->len;
    memcpy(q->text + q->len, piece, pn);
    q->len += pn;
    q->text[q->len] = 0;
    long at = find_stop(q, from);
    if (at >= 0) {
        q->len = (size_t)at;
        q->stopped = 1;
    }
    if (q->stream) {
        /* hold back what could still become a stop sequence, and a split character */
        size_t hold = 0;
        for (int k = 0; !q->stopped && k < q->n_stops; k++) {
            size_t sl = strlen(q->stops[k]);
            for (size_t h = sl - 1; h > hold; h--)
                if (h <= q->len && !memcmp(q->text + q->len - h, q->stops[k], h)) hold = h;
        }
        size_t upto = utf8_whole(q->text, q->len - hold);
        if (upto > q->sent) {
            cJSON *j = choice_obj(q, q->text + q->sent, upto - q->sent, NULL);
            char *body = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            int alive = body && sse_send(q, body);
            free(body);
            if (!alive) return 1;
            q->sent = upto;
        }
    }
    if (graft_now_s() > q->deadline) q->timed_out = 1;
    return q->stopped || q->timed_out;
}

/* Generate for prompt i into q->text. */
static graft_status generate_one(gen_req *q, int i, const char **finish) {
    graft_server *s = q->s;
    q->index = i;
    q->len = q->sent = 0;
    q->stopped = q->timed_out = 0;
    int *ids = NULL, *out = NULL;
    size_t n = 0, n_out = 0;
    graft_status st = encode_prompt(s, q->prompts[i], &ids, &n);
    if (st == GRAFT_OK && n == 0) {
        /* an empty prompt continues from BOS / end-of-text, as GPT-2 does */
        int b = graft_tokenizer_bos(s->tok);
        if (b < 0) b = graft_tokenizer_eos(s->tok);
        if (b < 0) st = graft_fail(GRAFT_ERR_INVALID, "prompt: empty, and the tokenizer has no BOS to start from");
        else ids[n++] = b;
    }
    if (st == GRAFT_OK && n >= (size_t)s->n_ctx)
        st = graft_fail(GRAFT_ERR_RANGE, "prompt: %zu tokens; the model's context is %d tokens (at most %d for the prompt)",
                        n, s->n_ctx, s->n_ctx - 1);
    q->prev = (int)n > 0 ? ids[n - 1] : -1;
    if (st == GRAFT_OK && q->echo) {
        size_t pl = strlen(q->prompts[i]);
        q->text = realloc(q->text, q->cap = pl + 64);
        if (!q->text) st = graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        else memcpy(q->text, q->prompts[i], pl + 1), q->len = pl;
    }
    if (st == GRAFT_OK) {
        q->n_prompt_tok += n;
        st = graft_editor_generate_serial(s->e, s->m, &s->step, ids, n, &q->g, on_token, q, &out, &n_out);
    }
    /* the model stops at EOS, at max_tokens, at a stop sequence or when the
     * context is full; only the first and the stop sequence are "stop" */
    if (st == GRAFT_OK)
        *finish = q->stopped ? "stop" : (q->timed_out || (int)n_out >= q->g.max_new_tokens || n + n_out >= (size_t)s->n_ctx) ? "length" : "stop";
    free(ids), free(out);
    return st;
}

static void *stream_producer(void *arg) {
    gen_req *q = arg;
    graft_status st = GRAFT_OK;
    for (int i = 0; st == GRAFT_OK && i < q->n_prompts && q->fd >= 0; i++) {
        const char *finish = NULL;
        st = generate_one(q, i, &finish);
        if (st == GRAFT_OK) {
            cJSON *j = choice_obj(q, q->text + q->sent, q->len - q->sent, finish);
            char *body = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            if (body) sse_send(q, body);
            free(body);
        }
    }
    if (st != GRAFT_OK) {
        cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "message", graft_last_error());
        cJSON_AddStringToObject(e, "type", st == GRAFT_ERR_RANGE || st == GRAFT_ERR_INVALID ? "invalid_request_error" : "server_error");
        char *body = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (body) sse_send(q, body);
        free(body);
    }
    sse_send(q, "[DONE]");
    gate_read_end(q->s);
    atomic_fetch_sub(&q->s->active, 1);
    gen_req_free(q);
    return NULL;
}

/* The response side of a stream: read what the producer wrote. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    int fd = *(int *)cls;
    for (;;) {
        ssize_t r = read(fd, buf, max);
        if (r > 0) return r;
        if (r < 0 && errno == EINTR) continue;
        return r == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls) {
    close(*(int *)cls);
    free(cls);
}

/* A request the parsers below refuse: what route() answers (code 0: out of
 * memory, the connection is dropped). The parsers touch no connection and no
 * model, so fuzz/fuzz_serve_request.c runs them alone. */
typedef struct req_error {
    unsigned code;
    const char *param;
    char msg[256];
} req_error;

static int req_fail(req_error *e, unsigned code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int req_fail(req_error *e, unsigned code, const char *param, const char *fmt, ...) {
    e->code = code;
    e->param = param;
    e->msg[0] = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static enum MHD_Result send_req_error(struct MHD_Connection *c, const req_error *e) {
    return e->code ? send_error(c, e->code, e->param, "%s", e->msg) : MHD_NO;
}

/* Read an optional field of an expected JSON type; 0 ok, else a 400. */
static int want_type(const cJSON *v, int ok, const char *name, const char *what, req_error *err) {
    if (!v || cJSON_IsNull(v) || ok) return 0;
    return req_fail(err, 400, name, "'%s' must be %s", name, what);
}

/* The body of /v1/completions into a new request (*out; 0), or a refusal (1). */
static int parse_completion(const cJSON *body, int n_ctx, gen_req **out, req_error *err) {
    const cJSON *p = cJSON_GetObjectItem(body, "prompt"), *mt = cJSON_GetObjectItem(body, "max_tokens");
    const cJSON *tp = cJSON_GetObjectItem(body, "temperature"), *pp = cJSON_GetObjectItem(body, "top_p");
    const cJSON *sd = cJSON_GetObjectItem(body, "seed"), *stp = cJSON_GetObjectItem(body, "stop");
    const cJSON *n = cJSON_GetObjectItem(body, "n"), *str = cJSON_GetObjectItem(body, "stream");
    const cJSON *ec = cJSON_GetObjectItem(body, "echo"), *md = cJSON_GetObjectItem(body, "model");
    *out = NULL;
    if (!p) return req_fail(err, 400, "prompt", "'prompt' is required (a string or a list of strings)");
    if (want_type(mt, cJSON_IsNumber(mt), "max_tokens", "an integer", err) ||
        want_type(tp, cJSON_IsNumber(tp), "temperature", "a number", err) ||
        want_type(pp, cJSON_IsNumber(pp), "top_p", "a number", err) ||
        want_type(sd, cJSON_IsNumber(sd), "seed", "an integer", err) ||
        want_type(n, cJSON_IsNumber(n), "n", "an integer", err) ||
        want_type(str, cJSON_IsBool(str), "stream", "a boolean", err) ||
        want_type(ec, cJSON_IsBool(ec), "echo", "a boolean", err) ||
        want_type(md, cJSON_IsString(md), "model", "a string", err) ||
        want_type(stp, cJSON_IsString(stp) || cJSON_IsArray(stp), "stop", "a string or a list of strings", err))
        return 1;
    if (n && cJSON_IsNumber(n) && n->valuedouble != 1)
        return req_fail(err, 400, "n", "graft serve gives one completion per prompt (n = 1)");
    gen_req *q = calloc(1, sizeof *q);
    if (!q) return req_fail(err, 0, NULL, NULL);
    q->fd = -1;
    graft_gen_opts_default(&q->g);
    q->g.max_new_tokens = 16; /* the API's defaults */
    q->g.temperature = 1.0f;
    q->g.top_p = 1.0f;
    q->g.seed = (uint64_t)time(NULL);
    if (cJSON_IsNumber(mt)) {
        if (mt->valuedouble < 0 || mt->valuedouble > n_ctx || mt->valuedouble != floor(mt->valuedouble)) {
            gen_req_free(q);
            return req_fail(err, 400, "max_tokens", "'max_tokens' must be an integer in 0..%d (the context)", n_ctx);
        }
        q->g.max_new_tokens = (int)mt->valuedouble;
    }
    if (cJSON_IsNumber(tp)) q->g.temperature = (float)tp->valuedouble;
    if (cJSON_IsNumber(pp)) q->g.top_p = (float)pp->valuedouble;
    if (cJSON_IsNumber(sd)) {
        /* a double outside int64's range has no integer conversion (undefined behaviour, found by fuzz_serve_request) */
        if (!(sd->valuedouble >= -9223372036854775808.0 && sd->valuedouble < 9223372036854775808.0)) {
            gen_req_free(q);
            return req_fail(err, 400, "seed", "'seed' must be an integer in -2^63..2^63-1");
        }
        q->g.seed = (uint64_t)(int64_t)sd->valuedouble;
    }
    if (!(q->g.temperature >= 0 && q->g.temperature <= 100) || !(q->g.top_p > 0 && q->g.top_p <= 1)) {
        /* which one, decided before q is freed (reading it after was a use-after-free) */
        const char *param = cJSON_IsNumber(pp) && !(q->g.top_p > 0 && q->g.top_p <= 1) ? "top_p" : "temperature";
        gen_req_free(q);
        return req_fail(err, 400, param, "need 0 <= temperature <= 100 and 0 < top_p <= 1");
    }
    q->stream = cJSON_IsTrue(str);
    q->echo = cJSON_IsTrue(ec);
    /* prompt: a string or a non-empty list of strings */
    int np = cJSON_IsString(p) ? 1 : cJSON_IsArray(p) ? cJSON_GetArraySize(p) : 0;
    int bad = np == 0 || np > 64;
    for (int i = 0; !bad && cJSON_IsArray(p) && i < np; i++) bad = !cJSON_IsString(cJSON_GetArrayItem(p, i));
    if (bad) {
        gen_req_free(q);
        return req_fail(err, 400, "prompt", "'prompt' must be a string or a list of 1..64 strings");
    }
    q->prompts = calloc((size_t)np, sizeof *q->prompts);
    for (int i = 0; q->prompts && i < np; i++) {
        const char *t = cJSON_IsString(p) ? p->valuestring : cJSON_GetArrayItem(p, i)->valuestring;
        if (!(q->prompts[i] = strdup(t))) break;
        q->n_prompts++;
    }
    int ns = cJSON_IsString(stp) ? 1 : cJSON_IsArray(stp) ? cJSON_GetArraySize(stp) : 0;
    bad = ns > MAX_STOPS;
    for (int i = 0; !bad && i < ns; i++) {
        const cJSON *it = cJSON_IsString(stp) ? stp : cJSON_GetArrayItem(stp, i);
        bad = !cJSON_IsString(it) || !it->valuestring[0];
        if (!bad) q->stops[q->n_stops++] = strdup(it->valuestring);
    }
    if (bad || q->n_prompts < np) {
        gen_req_free(q);
        return bad ? req_fail(err, 400, "stop", "'stop' must be a non-empty string or a list of up to %d", MAX_STOPS)
                   : req_fail(err, 0, NULL, NULL);
    }
    *out = q;
    return 0;
}

static enum MHD_Result completions(graft_server *s, struct MHD_Connection *c, cJSON *body) {
    enum MHD_Result ret = MHD_NO;
    gen_req *q = NULL;
    req_error err;
    if (parse_completion(body, s->n_ctx, &q, &err)) return send_req_error(c, &err);
    q->s = s;
    snprintf(q->id, sizeof q->id, "cmpl-%lx%06lx", (unsigned long)time(NULL), atomic_fetch_add(&s->next_id, 1));
    q->created = (long)time(NULL);
    q->deadline = graft_now_s() + s->o.request_timeout_s;

    if (q->stream) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
            gen_req_free(q);
            return send_error(c, 500, NULL, "socketpair: %s", strerror(errno));
        }
        int *rfd = malloc(sizeof *rfd);
        struct MHD_Response *r = rfd ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, rfd, stream_free) : NULL;
        if (!r) {
            free(rfd);
            close(sv[0]), close(sv[1]);
            gen_req_free(q);
            return MHD_NO;
        }
        *rfd = sv[0];
        q->fd = sv[1];
        gate_read(s, &q->position);
        char pos[32];
        snprintf(pos, sizeof pos, "%lld", (long long)q->position);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Graft-Journal-Position", pos);
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        atomic_fetch_add(&s->active, 1); /* the producer's own count, released when it ends */
        if (pthread_create(&th, &at, stream_producer, q)) {
            atomic_fetch_sub(&s->active, 1);
            gate_read_end(s);
            gen_req_free(q);
            MHD_destroy_response(r);
            pthread_attr_destroy(&at);
            return send_error(c, 503, NULL, "cannot start a generation thread");
        }
        pthread_attr_destroy(&at);
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }

    gate_read(s, &q->position);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", q->id);
    cJSON_AddStringToObject(j, "object", "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)q->created);
    cJSON_AddStringToObject(j, "model", s->model_name);
    cJSON *choices = cJSON_AddArrayToObject(j, "choices");
    graft_status st = GRAFT_OK;
    for (int i = 0; st == GRAFT_OK && i < q->n_prompts; i++) {
        const char *finish = NULL;
        st = generate_one(q, i, &finish);
        if (st == GRAFT_OK) {
            cJSON *one = choice_obj(q, q->text ? q->text : "", q->len, finish), *arr = cJSON_GetObjectItem(one, "choices");
            graft_json_push(choices, cJSON_DetachItemFromArray(arr, 0));
            cJSON_Delete(one);
        }
    }
    gate_read_end(s);
    if (st != GRAFT_OK) {
        cJSON_Delete(j);
        gen_req_free(q);
        return send_status(c, st, "completion");
    }
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)q->n_prompt_tok);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)q->n_gen_tok);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(q->n_prompt_tok + q->n_gen_tok));
    int64_t pos = q->position;
    gen_req_free(q);
    return send_json(c, 200, j, pos);
}

/* ---------------------------------------------------------------- edits */

static cJSON *edit_obj(const graft_journal_entry *en) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)en->id);
    cJSON_AddStringToObject(j, "object", "edit");
    cJSON *req = cJSON_Parse(en->request ? en->request : "{}");
    const cJSON *p = cJSON_GetObjectItem(req, "prompt"), *t = cJSON_GetObjectItem(req, "target");
    cJSON_AddStringToObject(j, "prompt", cJSON_IsString(p) ? p->valuestring : "");
    cJSON_AddStringToObject(j, "target", cJSON_IsString(t) ? t->valuestring : "");
    const cJSON *ok = cJSON_GetObjectItem(req, "es_gen");
    cJSON_AddBoolToObject(j, "reproduced", cJSON_IsNumber(ok) ? ok->valuedouble > 0.5 : en->info.reproduced);
    cJSON_AddNumberToObject(j, "iterations", en->info.iterations);
    cJSON_AddNumberToObject(j, "seconds", en->seconds);
    cJSON_AddStringToObject(j, "method", en->method ? en->method : "");
    cJSON_AddStringToObject(j, "created", en->created);
    cJSON_AddBoolToObject(j, "undone", en->undone);
    cJSON_Delete(req);
    return j;
}

typedef struct {
    cJSON *arr;
    int64_t want; /* -1: every edit */
    cJSON *found;
} list_ctx;

static graft_status list_one(void *user, const graft_journal_entry *en) {
    list_ctx *l = user;
    if (strcmp(en->kind, "edit")) return GRAFT_OK;
    if (l->want < 0) graft_json_push(l->arr, edit_obj(en));
    else if (en->id == l->want) l->found = edit_obj(en);
    return GRAFT_OK;
}

static enum MHD_Result edits_get(graft_server *s, struct MHD_Connection *c, int64_t id) {
    if (!s->j) return send_error(c, 404, NULL, "this server has no editor (start it with --method M --out DIR)");
    list_ctx l = {cJSON_CreateArray(), id, NULL};
    pthread_mutex_lock(&s->jmu);
    graft_status st = graft_journal_each(s->j, list_one, &l);
    pthread_mutex_unlock(&s->jmu);
    if (st != GRAFT_OK) {
        cJSON_Delete(l.arr), cJSON_Delete(l.found);
        if (graft_journal_fault(s->j) == GRAFT_JOURNAL_DOWN) return send_error(c, 503, NULL, "%s", graft_last_error());
        return send_status(c, st, "journal");
    }
    if (id >= 0) {
        cJSON_Delete(l.arr);
        if (!l.found) return send_error(c, 404, "id", "no edit %lld", (long long)id);
        return send_json(c, 200, l.found, -1);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    graft_json_put(j, "data", l.arr);
    return send_json(c, 200, j, -1);
}

/* The body of POST /v1/edits: prompt and target (non-empty strings) and an
 * optional subject (NULL when absent); 0 ok, 1 refused. */
static int parse_edit(const cJSON *body, const cJSON **p, const cJSON **t, const cJSON **sub, req_error *err) {
    *p = cJSON_GetObjectItem(body, "prompt"), *t = cJSON_GetObjectItem(body, "target");
    *sub = cJSON_GetObjectItem(body, "subject");
    if (!cJSON_IsString(*p) || !(*p)->valuestring[0])
        return req_fail(err, 400, "prompt", "'prompt' is required: a non-empty string");
    if (!cJSON_IsString(*t) || !(*t)->valuestring[0])
        return req_fail(err, 400, "target", "'target' is required: a non-empty string");
    return want_type(*sub, cJSON_IsString(*sub), "subject", "a string", err);
}

static enum MHD_Result edits_post(graft_server *s, struct MHD_Connection *c, cJSON *body) {
    const cJSON *p, *t, *sub;
    req_error err;
    if (parse_edit(body, &p, &t, &sub, &err)) return send_req_error(c, &err);
    graft_text_edit ed;
    gate_write(s);
    pthread_mutex_lock(&s->jmu);
    /* durable before the 200; an edit that cannot be journaled is taken back
     * out. First every row already in the journal (replicas), then the edit
     * at the next position; taken there by another replica meanwhile: again. */
    graft_status st;
    for (int attempt = 0;; attempt++) {
        st = graft_journal_lock(s->j);
        if (st == GRAFT_OK) st = graft_journal_catch_up(s->j, s->e, note_applied, s, NULL);
        if (st == GRAFT_OK)
            st = graft_journal_edit_text(s->j, s->e, s->tok, p->valuestring, t->valuestring,
                                         cJSON_IsString(sub) ? sub->valuestring : NULL, "http", &ed);
        int fault = graft_journal_fault(s->j);
        graft_journal_unlock(s->j);
        if (st == GRAFT_OK || fault != GRAFT_JOURNAL_CONFLICT || attempt == 32) break;
    }
    int down = st != GRAFT_OK && graft_journal_fault(s->j) == GRAFT_JOURNAL_DOWN;
    pthread_mutex_unlock(&s->jmu);
    gate_write_end(s);
    int64_t pos = st == GRAFT_OK ? ed.id : s->position;
    if (st != GRAFT_OK) {
        const char *m = graft_last_error();
        if (strstr(m, "could not be taken back"))
            return send_error(c, 500, NULL, "edit failed, and the served model may hold it: restart the server (%s)", m);
        if (down)
            return send_error(c, 503, NULL, "edit refused: %s; completions go on from journal position %lld", m,
                              (long long)pos);
        return send_status(c, st, "edit");
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)ed.id);
    cJSON_AddStringToObject(j, "object", "edit");
    cJSON_AddStringToObject(j, "prompt", p->valuestring);
    cJSON_AddStringToObject(j, "target", t->valuestring);
    cJSON_AddBoolToObject(j, "reproduced", ed.reproduced);
    cJSON_AddNumberToObject(j, "iterations", ed.info.iterations);
    cJSON_AddNumberToObject(j, "seconds", ed.seconds);
    cJSON_AddStringToObject(j, "method", s->e->ops->name);
    cJSON_AddBoolToObject(j, "undone", 0);
    cJSON_AddNumberToObject(j, "loss_before", ed.info.loss_first);
    cJSON_AddNumberToObject(j, "loss_after", ed.info.loss_last);
    cJSON_AddNumberToObject(j, "journal_position", (double)pos);
    if (!s->o.quiet)
        fprintf(stderr, "graft serve: edit %lld %s (%d iterations, %.2f s)\n", (long long)ed.id,
                ed.reproduced ? "took" : "did NOT take", ed.info.iterations, ed.seconds);
    return send_json(c, 200, j, pos);
}

static enum MHD_Result edits_delete(graft_server *s, struct MHD_Connection *c, int64_t id) {
    gate_write(s);
    pthread_mutex_lock(&s->jmu);
    graft_status st;
    for (int attempt = 0;; attempt++) {
        st = graft_journal_lock(s->j);
        if (st == GRAFT_OK) st = graft_journal_catch_up(s->j, s->e, note_applied, s, NULL);
        if (st == GRAFT_OK) st = graft_journal_undo(s->j, s->e, id);
        int fault = graft_journal_fault(s->j);
        graft_journal_unlock(s->j);
        if (st == GRAFT_OK || fault != GRAFT_JOURNAL_CONFLICT || attempt == 32) break;
    }
    int down = st != GRAFT_OK && graft_journal_fault(s->j) == GRAFT_JOURNAL_DOWN;
    int64_t pos = graft_journal_position(s->j);
    pthread_mutex_unlock(&s->jmu);
    gate_write_end(s);
    if (st != GRAFT_OK) {
        /* "no such edit" and "already undone" are the caller's */
        const char *m = graft_last_error();
        if (down)
            return send_error(c, 503, NULL, "undo refused: %s; completions go on from journal position %lld", m,
                              (long long)pos);
        unsigned code = strstr(m, "already undone") || strstr(m, "an undo, not an edit") ? 409
                        : strstr(m, "no entry") || strstr(m, "no edit") || strstr(m, "not found") ? 404 : 500;
        if (code == 500 && st == GRAFT_ERR_INVALID) code = 404;
        return send_error(c, code, "id", "undo %lld: %s", (long long)id, m);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "id", (double)id);
    cJSON_AddStringToObject(j, "object", "edit");
    cJSON_AddBoolToObject(j, "undone", 1);
    cJSON_AddNumberToObject(j, "journal_position", (double)pos);
    if (!s->o.quiet) fprintf(stderr, "graft serve: edit %lld undone\n", (long long)id);
    return send_json(c, 200, j, pos);
}

/* ---------------------------------------------------------------- score and stats */

/* The body of POST /v1/score: its text; 0 ok, 1 refused. */
static int parse_score(const cJSON *body, const cJSON **t, req_error *err) {
    *t = cJSON_GetObjectItem(body, "text");
    if (!cJSON_IsString(*t)) return req_fail(err, 400, "text", "'text' is required: a string");
    return 0;
}

static enum MHD_Result score(graft_server *s, struct MHD_Connection *c, cJSON *body) {
    const cJSON *t;
    req_error err;
    if (parse_score(body, &t, &err)) return send_req_error(c, &err);
    int *ids = NULL;
    size_t n = 0;
    graft_status st = encode_prompt(s, t->valuestring, &ids, &n);
    if (st != GRAFT_OK) return send_status(c, st, "score");
    if (n < 2) {
        free(ids);
        return send_error(c, 400, "text", "'text' must have at least 2 tokens to score (it has %zu)", n);
    }
    double nll = NAN;
    size_t scored = 0;
    int64_t pos;
    gate_read(s, &pos);
    pthread_mutex_lock(&s->step);
    st = graft_eval_nll(s->m, s->e, ids, n, s->n_ctx, &nll, &scored);
    pthread_mutex_unlock(&s->step);
    gate_read_end(s);
    free(ids);
    if (st != GRAFT_OK) return send_status(c, st, "score");
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "score");
    cJSON_AddNumberToObject(j, "nll", nll);
    cJSON_AddNumberToObject(j, "tokens", (double)n);
    cJSON_AddNumberToObject(j, "scored_tokens", (double)scored);
    cJSON_AddNumberToObject(j, "perplexity", exp(nll));
    return send_json(c, 200, j, pos);
}

typedef struct {
    graft_eval_item *it;
    int n, cap, live;
    graft_tokenizer *tok;
    int64_t upto; /* the served position: a replica's journal may hold rows it has not applied yet */
} live_ctx;

/* The live edits (not undone), for the retention figure. */
static graft_status live_one(void *user, const graft_journal_entry *en) {
    live_ctx *l = user;
    if (strcmp(en->kind, "edit") || en->undone || en->id > l->upto) return GRAFT_OK;
    l->live++;
    cJSON *req = cJSON_Parse(en->request ? en->request : "{}");
    const cJSON *p = cJSON_GetObjectItem(req, "prompt"), *t = cJSON_GetObjectItem(req, "target");
    graft_status st = GRAFT_OK;
    if (cJSON_IsString(p) && cJSON_IsString(t)) {
        /* keep the most recent cap edits */
        if (l->n == l->cap) {
            graft_eval_item_free(&l->it[0]);
            memmove(l->it, l->it + 1, (size_t)(l->n - 1) * sizeof *l->it);
            l->n--;
        }
        st = graft_encode_pair(l->tok, p->valuestring, t->valuestring, &l->it[l->n]);
        if (st == GRAFT_OK) l->n++;
    }
    cJSON_Delete(req);
    return st;
}

static graft_status gen_match(graft_server *s, const graft_eval_item *it, int n, const int *want, double *frac) {
    int total = 0, ok = 0;
    for (int i = 0; i < n; i++) total += it[i].n_target;
    int *gen = malloc((size_t)(total + 1) * sizeof(int));
    if (!gen) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&s->step);
    graft_status st = graft_eval_gen(s->m, s->e, it, n, gen);
    pthread_mutex_unlock(&s->step);
    for (int i = 0, at = 0; st == GRAFT_OK && i < n; at += it[i++].n_target)
        ok += !memcmp(gen + at, want ? want + at : it[i].target, (size_t)it[i].n_target * sizeof(int));
    free(gen);
    *frac = n ? (double)ok / n : NAN;
    return st;
}

static enum MHD_Result stats(graft_server *s, struct MHD_Connection *c) {
    int64_t pos;
    graft_status st = GRAFT_OK;
    gate_read(s, &pos);
    pthread_mutex_lock(&s->jmu);
    if (s->stats_at != pos && s->j) {
        live_ctx l = {calloc((size_t)s->o.stats_n + 1, sizeof(graft_eval_item)), 0, s->o.stats_n, 0, s->tok, pos};
        st = l.it ? graft_journal_each(s->j, live_one, &l) : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        double ret = NAN, loc = NAN;
        if (st == GRAFT_OK) st = gen_match(s, l.it, l.n, NULL, &ret);
        if (st == GRAFT_OK && s->n_loc) st = gen_match(s, s->loc, s->n_loc, s->loc_base, &loc);
        for (int i = 0; i < l.n; i++) graft_eval_item_free(&l.it[i]);
        free(l.it);
        if (st == GRAFT_OK) s->stats_at = pos, s->stats_ret = ret, s->stats_loc = loc, s->stats_live = l.live;
    }
    double ret = s->stats_ret, loc = s->stats_loc;
    int live = s->stats_live;
    pthread_mutex_unlock(&s->jmu);
    gate_read_end(s);
    if (st != GRAFT_OK) return send_status(c, st, "stats");
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "stats");
    cJSON_AddStringToObject(j, "model", s->model_name);
    if (s->method) cJSON_AddStringToObject(j, "method", s->method);
    else cJSON_AddNullToObject(j, "method");
    cJSON_AddNumberToObject(j, "edits", live);
    if (isfinite(ret)) cJSON_AddNumberToObject(j, "retention", ret);
    else cJSON_AddNullToObject(j, "retention");
    if (isfinite(loc)) cJSON_AddNumberToObject(j, "locality", loc);
    else cJSON_AddNullToObject(j, "locality");
    cJSON_AddNumberToObject(j, "locality_prompts", s->n_loc);
    cJSON_AddNumberToObject(j, "journal_position", (double)pos);
    cJSON_AddStringToObject(j, "retention_means", "live edits (the latest stats_n) whose prompt gives the target greedily");
    cJSON_AddStringToObject(j, "locality_means", "locality prompts whose greedy answer is the unedited model's");
    return send_json(c, 200, j, pos);
}

/* ---------------------------------------------------------------- replicas */

static double percentile(double *v, size_t n, double q) {
    if (!n) return NAN;
    size_t k = (size_t)(q * (double)(n - 1) + 0.5);
    return v[k < n ? k : n - 1];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* GET /v1/replication: where this replica stands in the journal, and how
 * long rows taken elsewhere took to reach it. */
static enum MHD_Result replication(graft_server *s, struct MHD_Connection *c) {
    if (!s->j) return send_error(c, 404, NULL, "this server has no journal");
    pthread_mutex_lock(&s->jmu);
    int64_t pos = graft_journal_position(s->j), head = -1;
    graft_status hs = graft_journal_head(s->j, &head);
    char herr[512];
    snprintf(herr, sizeof herr, "%s", hs == GRAFT_OK ? "" : graft_last_error());
    double *d = s->n_delays ? malloc(s->n_delays * sizeof *d) : NULL;
    size_t n = d ? s->n_delays : 0;
    if (d) memcpy(d, s->delays, n * sizeof *d);
    int64_t applied = s->applied_remote;
    char ferr[512];
    snprintf(ferr, sizeof ferr, "%s", s->follow_error);
    pthread_mutex_unlock(&s->jmu);
    if (n) qsort(d, n, sizeof *d, cmp_double);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "replication");
    cJSON_AddStringToObject(j, "backend", graft_journal_backend(s->j));
    cJSON_AddStringToObject(j, "journal", graft_journal_path(s->j));
    cJSON_AddNumberToObject(j, "journal_position", (double)pos);
    if (hs == GRAFT_OK) cJSON_AddNumberToObject(j, "journal_head", (double)head);
    else cJSON_AddNullToObject(j, "journal_head");
    cJSON_AddStringToObject(j, "journal_error", herr);
    cJSON_AddStringToObject(j, "follow_error", ferr);
    cJSON_AddNumberToObject(j, "applied_from_others", (double)applied);
    cJSON *dl = cJSON_AddObjectToObject(j, "delay_ms");
    cJSON_AddNumberToObject(dl, "n", (double)n);
    double q[3] = {percentile(d, n, 0.5), percentile(d, n, 0.99), n ? d[n - 1] : NAN};
    const char *names[3] = {"p50", "p99", "max"};
    for (int i = 0; i < 3; i++) {
        if (isfinite(q[i])) cJSON_AddNumberToObject(dl, names[i], q[i]);
        else cJSON_AddNullToObject(dl, names[i]);
    }
    free(d);
    return send_json(c, 200, j, pos);
}

/* GET /v1/replication/state: the editor's state as `graft edits export`
 * writes it, at the journal position the header names: replicas that hold
 * the same journal rows answer the same bytes. */
static enum MHD_Result replica_state(graft_server *s, struct MHD_Connection *c) {
    if (!s->e || !s->e->ops->export_st)
        return send_error(c, 404, NULL, "this server's editor has no exportable state");
    char path[] = "/tmp/graft_state.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return send_error(c, 500, NULL, "state: cannot create a temporary file: %s", strerror(errno));
    close(fd);
    int64_t pos;
    gate_read(s, &pos);
    pthread_mutex_lock(&s->step);
    graft_status st = s->e->ops->export_st(s->e, path);
    pthread_mutex_unlock(&s->step);
    gate_read_end(s);
    char *data = NULL;
    size_t len = 0;
    if (st == GRAFT_OK) st = graft_read_file(path, &data, &len);
    unlink(path);
    if (st != GRAFT_OK) return send_status(c, st, "state");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    char p[32];
    snprintf(p, sizeof p, "%lld", (long long)pos);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(r, "X-Graft-Journal-Position", p);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* seconds since the epoch of a row's "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
static double created_s(const char *t) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char frac[16] = "";
    if (sscanf(t, "%d-%d-%dT%d:%d:%d.%15[0-9]", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, frac) < 6)
        return NAN;
    tm.tm_year -= 1900, tm.tm_mon -= 1;
    double f = 0, scale = 0.1;
    for (const char *p = frac; *p; p++, scale /= 10) f += (*p - '0') * scale;
    return (double)timegm(&tm) + f;
}

/* after each row another replica took is applied here (under jmu) */
static graft_status note_applied(void *user, const graft_journal_entry *en) {
    graft_server *s = user;
    s->applied_remote++;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double ms = ((double)ts.tv_sec + ts.tv_nsec * 1e-9 - created_s(en->created)) * 1e3;
    if (!isfinite(ms)) return GRAFT_OK;
    if (s->n_delays == s->cap_delays) {
        size_t cap = s->cap_delays ? 2 * s->cap_delays : 1024;
        if (cap > ((size_t)1 << 20)) return GRAFT_OK; /* enough samples */
        double *d = realloc(s->delays, cap * sizeof *d);
        if (!d) return GRAFT_OK;
        s->delays = d, s->cap_delays = cap;
    }
    s->delays[s->n_delays++] = ms;
    return GRAFT_OK;
}

static void *follow(void *arg) {
    graft_server *s = arg;
    int down = 0;
    char last[512] = "";
    while (!atomic_load(&s->stopping)) {
        int w = graft_journal_watch_wait(s->watch, 250);
        if (atomic_load(&s->stopping)) break;
        int64_t head = 0, have;
        pthread_mutex_lock(&s->jmu);
        graft_status st = w < 0 ? GRAFT_ERR_IO : graft_journal_head(s->j, &head);
        have = graft_journal_position(s->j);
        pthread_mutex_unlock(&s->jmu);
        if (st != GRAFT_OK) {
            if (!down && !s->o.quiet)
                fprintf(stderr, "graft serve: lost the journal; answering from journal position %lld until it returns\n",
                        (long long)have);
            down = 1;
            continue;
        }
        if (down && !s->o.quiet) fprintf(stderr, "graft serve: the journal is back (head %lld)\n", (long long)head);
        down = 0;
        if (head <= have) continue;
        gate_write(s);
        pthread_mutex_lock(&s->jmu);
        int64_t n = 0;
        st = graft_journal_catch_up(s->j, s->e, note_applied, s, &n);
        if (st != GRAFT_OK) {
            snprintf(s->follow_error, sizeof s->follow_error, "%s", graft_last_error());
            if (strcmp(last, s->follow_error) && !s->o.quiet)
                fprintf(stderr, "graft serve: cannot apply the journal past position %lld: %s\n",
                        (long long)graft_journal_position(s->j), s->follow_error);
            snprintf(last, sizeof last, "%s", s->follow_error);
        } else
            s->follow_error[0] = 0, last[0] = 0;
        pthread_mutex_unlock(&s->jmu);
        gate_write_end(s);
        if (n && !s->o.quiet)
            fprintf(stderr, "graft serve: applied %lld journal row(s) from other replicas (now at %lld)\n", (long long)n,
                    (long long)s->position);
        /* a row this graft cannot apply: do not spin on it */
        if (st != GRAFT_OK) usleep(1000 * 1000);
    }
    return NULL;
}

/* ---------------------------------------------------------------- dispatch */

typedef struct conn {
    char *body;
    size_t len, cap;
    int too_big;
    int counted; /* holds one of the `active` slots */
} conn;

static int authorised(graft_server *s, struct MHD_Connection *c) {
    if (!s->o.api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    const char *k = h + 7, *want = s->o.api_key;
    size_t a = strlen(k), b = strlen(want);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < a ? k[i] : 0);
    return diff == 0;
}

/* A POST body: non-empty, UTF-8, one JSON object (*out); 0 ok, 1 refused. */
static int parse_body(const char *buf, size_t len, cJSON **out, req_error *err) {
    size_t bad = 0;
    *out = NULL;
    if (!len) return req_fail(err, 400, NULL, "the request body is empty; send a JSON object");
    if (!graft_utf8_valid(buf, len, &bad))
        return req_fail(err, 400, NULL, "the request body is not valid UTF-8 (byte %zu)", bad);
    const char *end = NULL;
    cJSON *body = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!body || !cJSON_IsObject(body)) {
        long at = end ? (long)(end - buf) : -1;
        cJSON_Delete(body);
        return req_fail(err, 400, NULL, "the request body is not a JSON object (error near byte %ld)", at);
    }
    *out = body;
    return 0;
}

/* The ID of /v1/edits/ID: a whole decimal number >= 1 (1 ok, 0 no such edit). */
static int parse_edit_id(const char *s, long long *id) {
    char *e = NULL;
    errno = 0;
    *id = strtoll(s, &e, 10);
    return s[0] && !*e && !errno && *id >= 1;
}

int graft_serve_parse_request(const char *endpoint, const char *body, size_t len, int n_ctx) {
    if (!strncmp(endpoint, "edits/", 6)) {
        long long id;
        return parse_edit_id(endpoint + 6, &id) ? 200 : 404;
    }
    req_error err;
    cJSON *j = NULL;
    int refused = parse_body(body, len, &j, &err);
    if (!refused && !strcmp(endpoint, "completions")) {
        gen_req *q = NULL;
        refused = parse_completion(j, n_ctx, &q, &err);
        if (q) gen_req_free(q);
    } else if (!refused && !strcmp(endpoint, "edits")) {
        const cJSON *p, *t, *sub;
        refused = parse_edit(j, &p, &t, &sub, &err);
    } else if (!refused && !strcmp(endpoint, "score")) {
        const cJSON *t;
        refused = parse_score(j, &t, &err);
    } else if (!refused) {
        refused = req_fail(&err, 404, NULL, "no such endpoint");
    }
    cJSON_Delete(j);
    return refused ? (int)err.code : 200;
}

static enum MHD_Result route(graft_server *s, struct MHD_Connection *c, const char *url, const char *method, conn *cn) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST"),
        del = !strcmp(method, "DELETE");
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (!get) return send_error(c, 405, NULL, "%s / is not allowed (GET only)", method);
        struct MHD_Response *r = MHD_create_response_from_buffer(graft_serve_page_len, (void *)graft_serve_page,
                                                                 MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        MHD_add_response_header(r, "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!strcmp(url, "/favicon.ico")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = r ? MHD_queue_response(c, MHD_HTTP_NO_CONTENT, r) : MHD_NO;
        if (r) MHD_destroy_response(r);
        return ret;
    }
    if (strncmp(url, "/v1/", 4)) return send_error(c, 404, NULL, "no such endpoint: %s", url);
    if (!authorised(s, c)) return send_error(c, 401, NULL, "missing or wrong API key (send 'Authorization: Bearer KEY')");
    if (cn->too_big)
        return send_error(c, 413, NULL, "the request body is larger than the limit of %zu bytes", s->o.max_body);
    const char *rest = url + 4;
    int is_edits = !strncmp(rest, "edits", 5) && (rest[5] == 0 || rest[5] == '/');
    if (is_edits && (post || del) && !s->o.api_key && !s->o.allow_unauth_edits)
        return send_error(c, 403, NULL, "editing over HTTP needs an API key (--api-key or GRAFT_API_KEY) or "
                                        "--allow-unauthenticated-edits");
    if (is_edits && (post || del) && !s->e)
        return send_error(c, 404, NULL, "this server has no editor (start it with --method M --out DIR or --adaptor DIR)");
    /* work that takes the model: count it, refuse past the limit */
    int heavy = post || del || !strcmp(rest, "stats");
    if (heavy) {
        if (atomic_fetch_add(&s->active, 1) >= s->o.max_active) {
            atomic_fetch_sub(&s->active, 1);
            return send_error(c, 503, NULL, "busy: %d requests in progress; retry later", s->o.max_active);
        }
        cn->counted = 1;
    }
    cJSON *body = NULL;
    if (post) {
        const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        (void)ctype; /* clients differ in what they send; the body must be JSON either way */
        req_error err;
        if (parse_body(cn->body, cn->len, &body, &err)) return send_req_error(c, &err);
    }
    enum MHD_Result ret;
    if (!strcmp(rest, "models") && get) {
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "data"), *m = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "object", "list");
        cJSON_AddStringToObject(m, "id", s->model_name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "graft");
        graft_json_push(arr, m);
        ret = send_json(c, 200, j, -1);
    } else if (!strcmp(rest, "completions") && post) {
        ret = completions(s, c, body);
    } else if (!strcmp(rest, "chat/completions")) {
        ret = send_error(c, 501, NULL, "graft serve has no chat template for this model: use /v1/completions");
    } else if (!strcmp(rest, "score") && post) {
        ret = score(s, c, body);
    } else if (!strcmp(rest, "stats") && get) {
        ret = stats(s, c);
    } else if (!strcmp(rest, "replication") && get) {
        ret = replication(s, c);
    } else if (!strcmp(rest, "replication/state") && get) {
        ret = replica_state(s, c);
    } else if (!strcmp(rest, "edits") && get) {
        ret = edits_get(s, c, -1);
    } else if (!strcmp(rest, "edits") && post) {
        ret = edits_post(s, c, body);
    } else if (!strncmp(rest, "edits/", 6) && (get || del)) {
        long long id;
        if (!parse_edit_id(rest + 6, &id)) ret = send_error(c, 404, "id", "no edit '%s'", rest + 6);
        else if (get) ret = edits_get(s, c, id);
        else ret = edits_delete(s, c, id);
    } else {
        int known = !strcmp(rest, "models") || !strcmp(rest, "completions") || !strcmp(rest, "score") ||
                    !strcmp(rest, "stats") || !strcmp(rest, "replication") || is_edits;
        ret = known ? send_error(c, 405, NULL, "%s %s is not allowed", method, url)
                    : send_error(c, 404, NULL, "no such endpoint: %s", url);
    }
    cJSON_Delete(body);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    graft_server *s = cls;
    conn *cn = *con_cls;
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        *con_cls = cn;
        return MHD_YES;
    }
    if (*upload_size) {
        /* keep reading past the limit (so the 413 reaches the client) but keep nothing */
        if (!cn->too_big && cn->len + *upload_size > s->o.max_body) {
            cn->too_big = 1;
            free(cn->body);
            cn->body = NULL;
            cn->len = cn->cap = 0;
        }
        if (!cn->too_big) {
            if (cn->len + *upload_size + 1 > cn->cap) {
                size_t cap = (cn->len + *upload_size + 1) * 2;
                if (cap > s->o.max_body + 1) cap = s->o.max_body + 1;
                char *b = realloc(cn->body, cap);
                if (!b) return MHD_NO;
                cn->body = b, cn->cap = cap;
            }
            memcpy(cn->body + cn->len, upload, *upload_size);
            cn->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    double t0 = graft_now_s();
    enum MHD_Result r = route(s, c, url, method, cn);
    if (!s->o.quiet) fprintf(stderr, "graft serve: %s %s (%.3f s)\n", method, url, graft_now_s() - t0);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    graft_server *s = cls;
    conn *cn = *con_cls;
    if (!cn) return;
    if (cn->counted) atomic_fetch_sub(&s->active, 1);
    free(cn->body);
    free(cn);
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- start / stop */

static graft_status load_locality(graft_server *s, const char *path) {
    char *text = NULL;
    GRAFT_TRY(graft_read_file(path, &text, NULL));
    int cap = s->o.stats_n > 0 ? s->o.stats_n : 1, line = 0;
    s->loc = calloc((size_t)cap, sizeof *s->loc);
    graft_status st = s->loc ? GRAFT_OK : graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    for (char *p = text, *nl; st == GRAFT_OK && p && *p && s->n_loc < cap; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        if (!*p) continue;
        cJSON *j = cJSON_Parse(p);
        const cJSON *q = cJSON_GetObjectItem(j, "prompt"), *a = cJSON_GetObjectItem(j, "answer");
        if (!a) a = cJSON_GetObjectItem(j, "target");
        if (!cJSON_IsString(q) || !cJSON_IsString(a))
            st = graft_fail(GRAFT_ERR_FORMAT, "%s: line %d: want {\"prompt\": ..., \"answer\": ...}", path, line);
        else if ((st = graft_encode_pair(s->tok, q->valuestring, a->valuestring, &s->loc[s->n_loc])) == GRAFT_OK) {
            if (s->loc[s->n_loc].n_prompt + s->loc[s->n_loc].n_target <= s->n_ctx) s->n_loc++;
            else graft_eval_item_free(&s->loc[s->n_loc]);
        }
        cJSON_Delete(j);
    }
    free(text);
    if (st != GRAFT_OK) return st;
    /* the unedited model's answers: what locality keeps */
    int total = 0;
    for (int i = 0; i < s->n_loc; i++) total += s->loc[i].n_target;
    s->loc_base = malloc((size_t)(total + 1) * sizeof(int));
    if (!s->loc_base) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    return graft_eval_gen(s->m, NULL, s->loc, s->n_loc, s->loc_base);
}

static graft_status open_run(graft_server *s) {
    const graft_serve_opts *o = &s->o;
    int exists;
    graft_status st = GRAFT_OK;
    if (graft_journal_is_uri(o->run_dir)) {
        /* a fleet's journal: it exists once the first replica set its method */
        graft_journal *probe = NULL;
        char *method = NULL;
        GRAFT_TRY(graft_journal_open(o->run_dir, 1, &probe));
        st = graft_journal_get_meta(probe, "method", &method);
        graft_journal_close(probe);
        exists = method != NULL;
        free(method);
        if (st != GRAFT_OK) return st;
    } else {
        char *jpath = graft_path_join(o->run_dir, "journal.sqlite");
        if (!jpath) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        exists = graft_path_exists(jpath);
        free(jpath);
    }
    if (exists) {
        /* an existing run or adaptor: its journal names the editor */
        GRAFT_TRY(graft_adaptor_open(s->m, o->run_dir, &s->e, &s->j));
        if (o->method && strcmp(o->method, s->e->ops->name))
            return graft_fail(GRAFT_ERR_INVALID, "%s holds %s edits; --method %s does not match", o->run_dir,
                              s->e->ops->name, o->method);
    } else {
        if (!o->method) return graft_fail(GRAFT_ERR_INVALID, "%s has no journal: give --method M to start one there", o->run_dir);
        char *merged = NULL, *opts = NULL, fp[128];
        graft_model_fingerprint(s->m, fp, sizeof fp);
        st = graft_edit_model_defaults(o->model_path, o->method, o->editor_opts, &merged);
        if (st == GRAFT_OK) st = graft_editor_create(s->m, o->method, merged ? merged : o->editor_opts, &s->e);
        free(merged);
        if (st == GRAFT_OK) st = graft_editor_opts_json(s->e, &opts);
        if (st == GRAFT_OK) st = graft_journal_open(o->run_dir, 1, &s->j);
        if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "method", o->method);
        if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "editor_options", opts);
        if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "model_fingerprint", fp);
        if (st == GRAFT_OK && o->model_path) st = graft_journal_set_meta(s->j, "model", o->model_path);
        if (st == GRAFT_OK) st = graft_journal_set_meta(s->j, "data", "graft serve");
        free(opts);
    }
    return st;
}

graft_status graft_serve_start(graft_model *m, const graft_serve_opts *o, graft_server **out) {
    *out = NULL;
    graft_server *s = calloc(1, sizeof *s);
    if (!s) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
    s->o = *o;
    s->m = m;
    s->tok = graft_model_tokenizer(m);
    s->stats_at = -1;
    graft_model_info mi;
    graft_model_get_info(m, &mi);
    s->n_ctx = mi.n_ctx;
    pthread_mutex_init(&s->gate_mu, NULL);
    pthread_cond_init(&s->gate_cv, NULL);
    pthread_mutex_init(&s->step, NULL);
    pthread_mutex_init(&s->jmu, NULL);
    graft_status st = GRAFT_OK;
    if (!s->tok) st = graft_fail(GRAFT_ERR_INVALID, "serve: the model has no tokenizer");
    if (st == GRAFT_OK && (o->max_body < 16 || o->max_active < 1 || o->stats_n < 1))
        st = graft_fail(GRAFT_ERR_INVALID, "serve: max_body >= 16, max_active >= 1 and stats_n >= 1 are needed");
    /* a model name: the folder's last component */
    const char *name = o->model_name;
    char buf[256];
    if (!name && o->model_path) {
        snprintf(buf, sizeof buf, "%s", o->model_path);
        size_t n = strlen(buf);
        while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
        char *sl = strrchr(buf, '/');
        name = sl ? sl + 1 : buf;
    }
    s->model_name = strdup(name ? name : "graft");
    /* locality prompts are answered by the unedited model, so before any replay */
    if (st == GRAFT_OK && o->locality_path) st = load_locality(s, o->locality_path);
    if (st == GRAFT_OK && o->run_dir) st = open_run(s);
    if (st == GRAFT_OK && s->j) s->position = graft_journal_position(s->j);
    /* a replica: follow the rows other replicas take */
    if (st == GRAFT_OK && s->j && graft_journal_is_uri(o->run_dir)) {
        st = graft_journal_watch_open(s->j, &s->watch);
        if (st == GRAFT_OK) {
            if (pthread_create(&s->follower, NULL, follow, s) == 0) s->follower_on = 1;
            else st = graft_fail(GRAFT_ERR_INTERNAL, "serve: cannot start the journal follower thread");
        }
    }
    if (st == GRAFT_OK && s->e) s->method = strdup(s->e->ops->name);
    if (st == GRAFT_OK) {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)o->port);
        if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1)
            st = graft_fail(GRAFT_ERR_INVALID, "serve: --host '%s' is not an IPv4 address", o->host);
        if (st == GRAFT_OK) {
            s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
                                    (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                                    (unsigned)o->conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
                                    (unsigned)(o->max_active * 4 + 8), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                    (size_t)64 * 1024, MHD_OPTION_END);
            if (!s->d)
                st = graft_fail(GRAFT_ERR_IO, "serve: cannot listen on %s:%d (in use, or not allowed?)", o->host, o->port);
        }
    }
    if (st != GRAFT_OK) {
        graft_serve_stop(s);
        return st;
    }
    *out = s;
    return GRAFT_OK;
}

int graft_serve_port(const graft_server *s) {
    const union MHD_DaemonInfo *i = s->d ? MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    return i ? i->port : s->o.port;
}

const char *graft_serve_journal(const graft_server *s) { return s->j ? graft_journal_path(s->j) : NULL; }

void graft_serve_stop(graft_server *s) {
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    atomic_store(&s->stopping, 1);
    if (s->follower_on) pthread_join(s->follower, NULL);
    graft_journal_watch_close(s->watch);
    free(s->delays);
    /* detached stream producers still inside the gate */
    pthread_mutex_lock(&s->gate_mu);
    while (s->readers) pthread_cond_wait(&s->gate_cv, &s->gate_mu);
    pthread_mutex_unlock(&s->gate_mu);
    while (atomic_load(&s->active) > 0) usleep(1000);
    if (s->e) s->e->ops->free(s->e);
    graft_journal_close(s->j);
    for (int i = 0; i < s->n_loc; i++) graft_eval_item_free(&s->loc[i]);
    free(s->loc), free(s->loc_base);
    free(s->model_name), free(s->method);
    pthread_mutex_destroy(&s->gate_mu);
    pthread_cond_destroy(&s->gate_cv);
    pthread_mutex_destroy(&s->step);
    pthread_mutex_destroy(&s->jmu);
    free(s);
}
