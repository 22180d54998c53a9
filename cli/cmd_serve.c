/* cmd_serve.c - graft serve: the model behind an OpenAI-style HTTP API that
 * also takes corrections, with a web page (src/serve/serve.h). */
#include "cli.h"
#include "edit/journal.h"
#include "serve/serve.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out) {
    fputs("usage: graft serve [-m MODEL] [--adaptor RUN_DIR | --method M --out RUN_DIR] [options]\n"
          "Serve the model over HTTP: OpenAI-style completions, edits that reach the live model at once\n"
          "(journaled before they are acknowledged, undoable) and a web page at http://HOST:PORT/.\n"
          "  -m, --model PATH        HF folder or llama2.c .bin (default: the shipped fact model)\n"
          "  --tokenizer PATH        tokenizer, when it is not beside the model\n"
          "  --adaptor DIR           serve with the edits of this run folder; new edits go into it\n"
          "  --method M --out DIR    start (or continue) a run folder with editor M (grace, melo, rome, ...)\n"
          "  --opts JSON             editor options for a new run folder (MODEL/editing.json fills the rest)\n"
          "  --journal URI           keep the journal in PostgreSQL (postgresql://...; or GRAFT_JOURNAL):\n"
          "                          one of a fleet of replicas sharing it (docs/REPLICAS.md); --method M\n"
          "                          starts it when it holds no journal of that name yet\n"
          "  --replica-of NAME       the shared journal's name in that database (URI#NAME; default 'default')\n"
          "  --host ADDR             IPv4 address to bind (127.0.0.1: this machine only)\n"
          "  --port N                port (8080; 0 picks a free one)\n"
          "  --threads N             kernel threads (default: all CPUs)\n"
          "  --api-key KEY           every /v1 request needs 'Authorization: Bearer KEY' (or GRAFT_API_KEY)\n"
          "  --allow-unauthenticated-edits  without a key, accept edits anyway (else they get 403)\n"
          "  --locality FILE         JSONL {prompt, answer}: prompts for the live locality figure\n"
          "  --model-name NAME       the model's id in the API (default: the folder's name)\n"
          "  --max-body BYTES        largest request body (1048576)\n"
          "  --max-active N          requests in progress at once before 503 (16)\n"
          "  --timeout S             a generation ends after S seconds (120); idle connections after 30 s\n"
          "  --quiet                 no request log\n"
          "Endpoints: GET /v1/models, POST /v1/completions (stream: true for server-sent events),\n"
          "POST/GET /v1/edits, GET/DELETE /v1/edits/ID, POST /v1/score, GET /v1/stats. See docs/SERVE.md.\n",
          out);
}

static volatile sig_atomic_t g_quit;
static void on_signal(int sig) { g_quit = sig; }

int cmd_serve(int argc, char **argv) {
    enum { O_TOK = 1000, O_ADAPTOR, O_METHOD, O_OUT, O_OPTS, O_HOST, O_PORT, O_THREADS, O_KEY, O_UNAUTH, O_LOC,
           O_NAME, O_BODY, O_ACTIVE, O_TIMEOUT, O_QUIET, O_JOURNAL, O_REPLICA };
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},   {"tokenizer", required_argument, 0, O_TOK},
        {"adaptor", required_argument, 0, O_ADAPTOR}, {"method", required_argument, 0, O_METHOD},
        {"out", required_argument, 0, O_OUT},   {"opts", required_argument, 0, O_OPTS},
        {"host", required_argument, 0, O_HOST}, {"port", required_argument, 0, O_PORT},
        {"threads", required_argument, 0, O_THREADS}, {"api-key", required_argument, 0, O_KEY},
        {"allow-unauthenticated-edits", no_argument, 0, O_UNAUTH}, {"locality", required_argument, 0, O_LOC},
        {"model-name", required_argument, 0, O_NAME}, {"max-body", required_argument, 0, O_BODY},
        {"max-active", required_argument, 0, O_ACTIVE}, {"timeout", required_argument, 0, O_TIMEOUT},
        {"quiet", no_argument, 0, O_QUIET},     {"help", no_argument, 0, 'h'},
        {"journal", required_argument, 0, O_JOURNAL}, {"replica-of", required_argument, 0, O_REPLICA},
        {0, 0, 0, 0}};
    graft_serve_opts o;
    graft_serve_opts_default(&o);
    const char *model = NULL, *tok = NULL, *adaptor = NULL, *out = NULL, *journal = NULL, *replica = NULL;
    long v;
    double d;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case O_TOK: tok = optarg; break;
        case O_ADAPTOR: adaptor = optarg; break;
        case O_METHOD: o.method = optarg; break;
        case O_OUT: out = optarg; break;
        case O_OPTS: o.editor_opts = optarg; break;
        case O_HOST: o.host = optarg; break;
        case O_PORT: if (cli_parse_int("serve", "--port", optarg, 0, 65535, &v)) return 2; o.port = (int)v; break;
        case O_THREADS: if (cli_parse_int("serve", "--threads", optarg, 1, 4096, &v)) return 2; graft_set_threads((int)v); break;
        case O_KEY: o.api_key = optarg; break;
        case O_UNAUTH: o.allow_unauth_edits = 1; break;
        case O_LOC: o.locality_path = optarg; break;
        case O_NAME: o.model_name = optarg; break;
        case O_BODY: if (cli_parse_int("serve", "--max-body", optarg, 16, 1L << 30, &v)) return 2; o.max_body = (size_t)v; break;
        case O_ACTIVE: if (cli_parse_int("serve", "--max-active", optarg, 1, 1 << 16, &v)) return 2; o.max_active = (int)v; break;
        case O_TIMEOUT: if (cli_parse_float("serve", "--timeout", optarg, 0.001, 1e6, &d)) return 2; o.request_timeout_s = d; break;
        case O_QUIET: o.quiet = 1; break;
        case O_JOURNAL: journal = optarg; break;
        case O_REPLICA: replica = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) return cli_fail("serve", "unexpected argument '%s'", argv[optind]);
    if (!journal && !adaptor && !out && getenv("GRAFT_JOURNAL") && *getenv("GRAFT_JOURNAL")) journal = getenv("GRAFT_JOURNAL");
    if (journal && (adaptor || out)) return cli_fail("serve", "give --journal URI or a run folder (--adaptor / --out), not both");
    if (journal && !graft_journal_is_uri(journal))
        return cli_fail("serve", "--journal: want a postgresql:// or postgres:// URI, not '%s' (a folder is --adaptor DIR)", journal);
    if (replica && !journal) return cli_fail("serve", "--replica-of needs --journal postgresql://... (or GRAFT_JOURNAL)");
    if (replica && (!*replica || strchr(replica, '#'))) return cli_fail("serve", "--replica-of: want a name without '#'");
    if (replica && strchr(journal, '#')) return cli_fail("serve", "give the journal's name once: URI#NAME or --replica-of NAME");
    if (adaptor && (out || o.method)) return cli_fail("serve", "give --adaptor DIR, or --method M with --out DIR, not both");
    if (o.method && !out && !journal) return cli_fail("serve", "--method needs --out DIR (the run folder that journals the edits)");
    char *jbuf = NULL;
    if (journal && replica) {
        size_t n = strlen(journal) + strlen(replica) + 2;
        jbuf = malloc(n);
        if (!jbuf) return cli_fail("serve", "out of memory");
        snprintf(jbuf, n, "%s#%s", journal, replica);
        journal = jbuf;
    }
    if (journal) out = journal;
    if (!o.api_key && getenv("GRAFT_API_KEY") && *getenv("GRAFT_API_KEY")) o.api_key = getenv("GRAFT_API_KEY");
    o.run_dir = adaptor ? adaptor : out;
    o.model_path = model ? model : cli_default_model();
    if (o.api_key && strlen(o.api_key) < 8) return cli_fail("serve", "--api-key: use at least 8 characters");
    graft_model *m = NULL;
    if (cli_load_model("serve", model, tok, &m)) {
        free(jbuf);
        return 1;
    }
    graft_server *s = NULL;
    graft_status st = graft_serve_start(m, &o, &s);
    if (st != GRAFT_OK) {
        graft_model_free(m);
        free(jbuf);
        return cli_fail_status("serve", st);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "graft serve: %s on http://%s:%d/ (%s; edits %s)\n", o.model_path, o.host, graft_serve_port(s),
            graft_serve_journal(s) ? graft_serve_journal(s) : o.run_dir ? o.run_dir : "no editor",
            !o.run_dir ? "off" : o.api_key ? "need the API key" : o.allow_unauth_edits ? "open to anyone who can connect" : "refused (no --api-key)");
    fflush(stderr);
    while (!g_quit) pause();
    fprintf(stderr, "graft serve: stopping (signal %d)\n", (int)g_quit);
    graft_serve_stop(s);
    graft_model_free(m);
    free(jbuf);
    return 0;
}
