/* cmd_edits.c - graft edits list|show|undo|export: the edits of a run or
 * adaptor folder, read from (and, for undo, written to) its journal. */
#include "cli.h"
#include "edit/journal.h"
#include "edit/locate.h"
#include "internal.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft edits list            --adaptor DIR [-m MODEL] [--svg FILE]\n"
          "       graft edits show ID         --adaptor DIR [-m MODEL]\n"
          "       graft edits undo ID         --adaptor DIR [-m MODEL]\n"
          "       graft edits export FILE     --adaptor DIR [-m MODEL]   (the codebook as safetensors)\n"
          "       graft edits import SRC      --adaptor DEST             (copy a whole journal)\n"
          "DIR is a run folder of `graft edit` (its journal.sqlite), or a PostgreSQL journal shared by\n"
          "replicas: postgresql://[user@]host[:port]/db[?...][#NAME] (--journal URI is --adaptor URI;\n"
          "GRAFT_JOURNAL gives it when neither is given). import copies SRC's journal (a folder or a\n"
          "URI) into DEST (a new folder or an empty journal name), settings and rows with their ids:\n"
          "replaying either gives the same editor state bit for bit. undo reverts one edit (GRACE: its new\n"
          "keys are dropped and the radii it split restored) and records the undo in the journal.\n"
          "For ROME / MEMIT / EMMET, list shows each edit's |dW| (Frobenius norm of its update, all\n"
          "layers) and |W-W0| after it; --svg FILE plots both against the edit index (a disabling edit\n"
          "is a spike in |dW|).\n",
          out);
}

typedef struct list_acc {
    double *x, *dw, *dist;
    int n, cap;
} list_acc;

/* |dW| and |W - W0| of a weight editor's change record, over its layers */
static int update_norms(const graft_journal_entry *e, double *dw, double *dist) {
    char *js = NULL;
    if (!strcmp(e->method, "grace") || graft_wedit_describe(e->change, e->change_len, &js) != GRAFT_OK || !js) return 0;
    cJSON *d = cJSON_Parse(js);
    free(js);
    const cJSON *ups = cJSON_GetObjectItem(d, "updates"), *u;
    double a = 0, b = 0;
    int n = 0;
    cJSON_ArrayForEach(u, ups) {
        const cJSON *x = cJSON_GetObjectItem(u, "dw_fro"), *y = cJSON_GetObjectItem(u, "w_dist_fro");
        if (cJSON_IsNumber(x) && cJSON_IsNumber(y)) a += x->valuedouble * x->valuedouble, b += y->valuedouble * y->valuedouble, n++;
    }
    cJSON_Delete(d);
    *dw = sqrt(a), *dist = sqrt(b);
    return n > 0;
}

static graft_status list_row(void *user, const graft_journal_entry *e) {
    list_acc *acc = user;
    cJSON *r = cJSON_Parse(e->request);
    const cJSON *p = cJSON_GetObjectItem(r, "prompt"), *t = cJSON_GetObjectItem(r, "target");
    double dw = NAN, dist = NAN;
    int has = !strcmp(e->kind, "edit") && update_norms(e, &dw, &dist);
    char a[24] = "-", b[24] = "-";
    if (has) snprintf(a, sizeof a, "%.3g", dw), snprintf(b, sizeof b, "%.4g", dist);
    printf("%5lld %6lld  %-5s %-7s %4d  %-3s %8s %8s  %s  ", (long long)e->id, (long long)e->seq, e->kind, e->info.action,
           e->info.iterations, e->info.reproduced ? "yes" : "no", a, b, e->created);
    if (!strcmp(e->kind, "undo"))
        printf("undoes edit %lld", (long long)e->undoes);
    else if (cJSON_IsString(p) && cJSON_IsString(t))
        printf("%.60s -> %.40s", p->valuestring, t->valuestring);
    if (e->undone) printf("  [undone]");
    putchar('\n');
    cJSON_Delete(r);
    if (has && acc) {
        if (acc->n == acc->cap) {
            acc->cap = acc->cap ? 2 * acc->cap : 256;
            acc->x = realloc(acc->x, acc->cap * sizeof(double));
            acc->dw = realloc(acc->dw, acc->cap * sizeof(double));
            acc->dist = realloc(acc->dist, acc->cap * sizeof(double));
            if (!acc->x || !acc->dw || !acc->dist) return graft_fail(GRAFT_ERR_NOMEM, "out of memory");
        }
        acc->x[acc->n] = (double)e->seq + 1, acc->dw[acc->n] = dw, acc->dist[acc->n] = dist;
        acc->n++;
    }
    return GRAFT_OK;
}

int cmd_edits(int argc, char **argv) {
    static const struct option opts[] = {{"adaptor", required_argument, 0, 'a'}, {"journal", required_argument, 0, 'a'},
                                         {"model", required_argument, 0, 'm'},
                                         {"svg", required_argument, 0, 's'},     {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL, *model = NULL, *svg = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "a:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a': dir = optarg; break;
        case 'm': model = optarg; break;
        case 's': svg = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!dir && getenv("GRAFT_JOURNAL") && *getenv("GRAFT_JOURNAL")) dir = getenv("GRAFT_JOURNAL");
    const char *verb = optind < argc ? argv[optind] : NULL;
    const char *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
    int need_arg = verb && (!strcmp(verb, "show") || !strcmp(verb, "undo") || !strcmp(verb, "export") ||
                            !strcmp(verb, "import"));
    if (!verb || !dir || (need_arg && !arg) || (!need_arg && arg) ||
        (strcmp(verb, "list") && strcmp(verb, "show") && strcmp(verb, "undo") && strcmp(verb, "export") &&
         strcmp(verb, "import"))) {
        cli_fail("edits", "give list, show ID, undo ID, export FILE or import SRC, and --adaptor DIR");
        usage(stderr);
        return 2;
    }
    long id = 0;
    if ((!strcmp(verb, "show") || !strcmp(verb, "undo")) && cli_parse_int("edits", verb, arg, 1, 1L << 62, &id)) return 2;
    graft_journal *j = NULL;
    graft_status st;
    if (!strcmp(verb, "import")) {
        /* a copy needs no model: settings and rows as they are */
        if ((st = graft_journal_open(arg, 0, &j)) != GRAFT_OK) return cli_fail_status("edits", st);
        int64_t n = 0;
        st = graft_journal_head(j, &n);
        if (st == GRAFT_OK) st = graft_journal_copy(j, dir);
        if (st == GRAFT_OK) printf("copied %lld journal rows from %s into %s\n", (long long)n, graft_journal_path(j), dir);
        graft_journal_close(j);
        return st == GRAFT_OK ? 0 : cli_fail_status("edits", st);
    }
    if (!strcmp(verb, "list") || !strcmp(verb, "show")) {
        /* reading needs no model */
        if ((st = graft_journal_open(dir, 0, &j)) != GRAFT_OK) return cli_fail_status("edits", st);
        if (!strcmp(verb, "list")) {
            printf("%5s %6s  %-5s %-7s %4s  %-3s %8s %8s  %-24s  %s\n", "id", "seq", "kind", "action", "iter", "ok",
                   "|dW|", "|W-W0|", "created", "request");
            list_acc acc = {0};
            st = graft_journal_each(j, list_row, &acc);
            if (st == GRAFT_OK && svg) {
                if (acc.n == 0)
                    st = graft_fail(GRAFT_ERR_INVALID, "%s: no weight edits to plot (--svg is for ROME / MEMIT / EMMET runs)", dir);
                else {
                    graft_series ser[2] = {{"|W - W0| after the edit", acc.x, acc.dist, acc.n, 0, 1},
                                           {"|dW| of the edit", acc.x, acc.dw, acc.n, 1, 2}};
                    st = graft_svg_line_plot(svg, "Weight change per edit (Frobenius norm, all edited layers)", "edit", "norm",
                                             ser, 2, 0.0, NAN);
                }
            }
            free(acc.x), free(acc.dw), free(acc.dist);
        } else {
            graft_journal_entry e;
            st = graft_journal_get(j, id, &e);
            if (st == GRAFT_OK) {
                printf("{\"id\": %lld, \"seq\": %lld, \"kind\": \"%s\", \"method\": \"%s\", \"action\": \"%s\", "
                       "\"iterations\": %d, \"loss_before\": %.6g, \"loss_after\": %.6g, \"reproduced\": %s, "
                       "\"rows_added\": %d, \"rows_changed\": %d, \"seconds\": %.4f, \"created\": \"%s\", "
                       "\"undone\": %s, \"change_bytes\": %zu, \"request\": %s}\n",
                       (long long)e.id, (long long)e.seq, e.kind, e.method, e.info.action, e.info.iterations,
                       e.info.loss_first, e.info.loss_last, e.info.reproduced ? "true" : "false", e.info.rows_added,
                       e.info.rows_changed, e.seconds, e.created, e.undone ? "true" : "false", e.change_len, e.request);
                /* weight editors: what the change record says about the update */
                char *diag = NULL;
                if (strcmp(e.method, "grace") != 0 && graft_wedit_describe(e.change, e.change_len, &diag) == GRAFT_OK && diag)
                    printf("%s\n", diag);
                free(diag);
                graft_journal_entry_free(&e);
            }
        }
        graft_journal_close(j);
        return st == GRAFT_OK ? 0 : cli_fail_status("edits", st);
    }
    graft_model *m = NULL;
    if (cli_load_model("edits", model, NULL, &m)) return 1;
    graft_editor *e = NULL;
    st = graft_adaptor_open(m, dir, &e, &j);
    if (st == GRAFT_OK) {
        if (!strcmp(verb, "undo")) {
            st = graft_journal_undo(j, e, id);
            if (st == GRAFT_OK) printf("undid edit %ld (recorded in %s)\n", id, graft_journal_path(j));
        } else {
            st = e->ops->export_st ? e->ops->export_st(e, arg)
                                   : graft_fail(GRAFT_ERR_UNSUPPORTED, "%s has no exportable state", e->ops->name);
            if (st == GRAFT_OK) printf("wrote %s\n", arg);
        }
    }
    if (e) e->ops->free(e);
    graft_journal_close(j);
    graft_model_free(m);
    return st == GRAFT_OK ? 0 : cli_fail_status("edits", st);
}
