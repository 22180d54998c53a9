/*
 * serve.h - graft serve: a live model that answers OpenAI-style completion
 * requests and takes corrections (edits) over HTTP, with a web page at "/".
 *
 * One model, one editor, one journal. Completions run on the shared model,
 * each with its own run state and KV cache; an edit or undo waits until no
 * generation is in flight and holds new ones back while it runs, so every
 * generation sees the model wholly before or wholly after an edit. The 200 of
 * an edit is sent only after its journal row is committed.
 */
#ifndef GRAFT_SERVE_H
#define GRAFT_SERVE_H

#include "graft.h"

typedef struct graft_server graft_server;

typedef struct graft_serve_opts {
    const char *model_path;   /* recorded in a new journal; its editing.json gives editor defaults */
    const char *model_name;   /* the "model" of the API (default: the folder's name) */
    const char *run_dir;      /* the run folder: an existing journal is replayed, else created; or a
                               * postgresql:// URI: a replica of that shared journal (docs/REPLICAS.md) */
    const char *method;       /* editor for a new run folder (NULL with a new folder: no editing) */
    const char *editor_opts;  /* its options, JSON */
    const char *host;         /* "127.0.0.1" */
    int port;                 /* 8080; 0 picks a free port (graft_serve_port says which) */
    const char *api_key;      /* NULL: no key */
    int allow_unauth_edits;   /* without a key, edits are refused unless this is set */
    size_t max_body;          /* bytes of a request body (1 MiB) */
    int max_active;           /* requests working or waiting at once before 503 (16) */
    int conn_timeout_s;       /* an idle connection is closed after this (30) */
    double request_timeout_s; /* a generation stops (finish_reason "length") after this (120) */
    const char *locality_path; /* JSONL {prompt, answer}: the locality figure's prompts (NULL: none) */
    int stats_n;              /* edits / locality prompts sampled for /v1/stats (100) */
    int quiet;                /* no request log on stderr */
} graft_serve_opts;

void graft_serve_opts_default(graft_serve_opts *o);
/* Open the run folder, replay its journal and start listening. */
graft_status graft_serve_start(graft_model *m, const graft_serve_opts *o, graft_server **out);
int graft_serve_port(const graft_server *s);
/* The journal as messages name it (a URI without its password), NULL without one. */
const char *graft_serve_journal(const graft_server *s);
/* Stop listening, finish in-flight requests, close the journal. */
void graft_serve_stop(graft_server *s);

/* The server's request parsing alone, with no model and no connection (the
 * fuzz harness fuzz/fuzz_serve_request.c): endpoint "completions", "edits"
 * or "score" parses body[0..len) as a POST to /v1/ENDPOINT is parsed (UTF-8,
 * one JSON object, then the endpoint's fields, against a context of n_ctx
 * tokens), "edits/ID" parses the ID of /v1/edits/ID; what it builds is freed.
 * Returns the status the server answers with before any model work: 200
 * accepted, 400 or 404 refused, 0 out of memory. */
int graft_serve_parse_request(const char *endpoint, const char *body, size_t len, int n_ctx);

/* The web page, embedded at build time from web/index.html (page.c). */
extern const unsigned char graft_serve_page[];
extern const size_t graft_serve_page_len;

#endif
