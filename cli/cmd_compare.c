/* cmd_compare.c - graft compare: the same edit stream through several
 * methods, each on a freshly loaded model, then one table and one plot of
 * retention (ERR), locality (TRR) and held knowledge against edits, with the
 * collapse point of each method. This is the forgetting study's driver. */
#include "cli.h"
#include "edit/stream.h"
#include "internal.h"
#include "core/json_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out) {
    fputs("usage: graft compare [-m MODEL] --methods grace,rome,memit,emmet,ft,ftl,ewc --data FILE --out DIR\n"
          "                     [--n N] [--format F] [--eval-every K] [--upstream FILE] [--upstream-n N]\n"
          "                     [--ppl-text FILE] [--err-sample N] [--opts METHOD=JSON ...] [--resume]\n"
          "Runs `graft edit` on the same stream for every method (DIR/METHOD is each run folder),\n"
          "then writes DIR/compare.md, DIR/compare.json and DIR/compare.svg: per method, the final\n"
          "metrics and the edit index where it collapsed (held knowledge below half its start or\n"
          "perplexity tenfold), and four panels with a curve per method against the edits applied:\n"
          "ERR, TRR, held knowledge and CounterFact efficacy.\n"
          "  --opts METHOD=JSON   editor options for one method, e.g. --opts 'grace={\"eps_init\": 3}'\n"
          "  --jobs J             run J methods at once, each in its own process with its share of the\n"
          "                       threads (default 1: one after another with every thread); a job's\n"
          "                       messages go to DIR/METHOD/log.txt\n"
          "  --ppl-tokens N       cap on the perplexity text (default 4096)\n"
          "  --table-only         run nothing: rebuild the table and the plot from the run folders as they\n"
          "                       are (finished or not), e.g. after resuming one method by hand\n"
          "  --sweep M:KEY=V1,V2,...  also run method M once per value of its numeric option KEY (e.g.\n"
          "                       grace:eps_init=0.25,0.5,1,2), in DIR/M-KEY-V; --methods may then be\n"
          "                       left out. Writes DIR/sweep.md and DIR/sweep.svg: edit success, ERR, TRR\n"
          "                       and generalisation at the end of the stream against the value, and\n"
          "                       DIR/tradeoff.svg: generalisation against TRR, a curve per sweep. Up to\n"
          "                       4 sweeps (e.g. grace:eps_init=... and melo:init_radius=...), 24 runs\n",
          out);
}

#define MAX_RUNS 24 /* methods and sweep runs of one comparison */

typedef struct {
    char name[128];    /* the run folder and the table's row */
    char method[32];   /* the editor (a sweep's runs share one) */
    const char *opts;
    char *opts_owned;  /* a sweep run's options JSON */
    double value;      /* a sweep run's value of the swept option */
    double *x, *err, *trr, *known, *cfe;
    int n;
    cJSON *last, *summary;
} method_run;

static double num(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static graft_status read_run(const char *dir, method_run *mr) {
    char *path = graft_path_join(dir, "results.jsonl"), *text = NULL;
    graft_status st = graft_read_file(path, &text, NULL);
    free(path);
    if (st != GRAFT_OK) return st;
    int cap = 64;
    mr->x = malloc(cap * sizeof(double)), mr->err = malloc(cap * sizeof(double));
    mr->trr = malloc(cap * sizeof(double)), mr->known = malloc(cap * sizeof(double));
    mr->cfe = malloc(cap * sizeof(double));
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        if (mr->n == cap) {
            cap *= 2;
            mr->x = realloc(mr->x, cap * sizeof(double)), mr->err = realloc(mr->err, cap * sizeof(double));
            mr->trr = realloc(mr->trr, cap * sizeof(double)), mr->known = realloc(mr->known, cap * sizeof(double));
            mr->cfe = realloc(mr->cfe, cap * sizeof(double));
        }
        mr->x[mr->n] = num(j, "edits");
        mr->err[mr->n] = num(j, "err_gen");
        mr->trr[mr->n] = num(j, "trr_gen");
        mr->known[mr->n] = num(j, "known_gen");
        mr->cfe[mr->n] = num(j, "cf_efficacy");
        mr->n++;
        cJSON_Delete(mr->last);
        mr->last = j;
    }
    free(text);
    char *sp = graft_path_join(dir, "summary.json"), *stext = NULL;
    if (graft_read_file(sp, &stext, NULL) == GRAFT_OK) mr->summary = cJSON_Parse(stext);
    free(sp), free(stext);
    return mr->n ? GRAFT_OK : graft_fail(GRAFT_ERR_FORMAT, "%s: no evaluation points", dir);
}

static void fmt(char *b, size_t n, double v, const char *f) {
    if (isfinite(v)) snprintf(b, n, f, v);
    else snprintf(b, n, "-");
}

/* One method's stream on a freshly loaded model (weight editors change the
 * weights). In a child process (to_log) the messages go to DIR/METHOD/log.txt
 * and the progress bar is off, so parallel jobs do not garble the terminal. */
static int run_method(const char *model, const char *tok, const char *out, const graft_stream_opts *so, method_run *mr,
                      int to_log) {
    char *dir = graft_path_join(out, mr->name);
    if (!dir) return cli_fail("compare", "out of memory"), 1;
    graft_stream_opts o = *so;
    if (to_log) {
        graft_status mst = graft_mkdir_p(dir);
        char *lp = graft_path_join(dir, "log.txt");
        if (mst != GRAFT_OK || !lp || !freopen(lp, "a", stderr)) {
            free(lp), free(dir);
            return 1;
        }
        free(lp);
        setvbuf(stderr, NULL, _IOLBF, 0); /* a file after freopen: line by line, so a crash keeps what was said */
        o.progress = 0;
    }
    graft_model *m = NULL;
    if (cli_load_model("compare", model, tok, &m)) {
        free(dir);
        return 1;
    }
    o.model_path = model ? model : cli_default_model();
    o.method = mr->method;
    o.editor_opts = mr->opts;
    o.out_dir = dir;
    char *jp = graft_path_join(dir, "journal.sqlite");
    if (graft_path_exists(jp)) o.resume = 1; /* an earlier, interrupted compare continues */
    free(jp);
    fprintf(stderr, "== %s ==\n", mr->name);
    graft_status st = graft_stream_run(m, &o);
    int rc = st != GRAFT_OK ? cli_fail_status("compare", st) : 0;
    graft_model_free(m);
    free(dir);
    return rc;
}

/* --sweep M:KEY=V1,V2,...: one run of method M per value, its options those
 * of --opts M=JSON (or none) with KEY set to the value. */
static int add_sweep(const char *spec, const char *const (*mopts)[2], int n_mopts, method_run *runs, int *nm) {
    const char *colon = strchr(spec, ':'), *eq = colon ? strchr(colon, '=') : NULL;
    if (!colon || !eq || colon == spec || eq == colon + 1 || !eq[1])
        return cli_fail("compare", "--sweep wants METHOD:KEY=V1,V2,..., got '%s'", spec), 1;
    char method[32], key[64];
    snprintf(method, sizeof method, "%.*s", (int)(colon - spec), spec);
    snprintf(key, sizeof key, "%.*s", (int)(eq - colon - 1), colon + 1);
    const char *base = "{}";
    for (int i = 0; i < n_mopts; i++)
        if (!strcmp(mopts[i][0], method)) base = mopts[i][1];
    for (const char *p = eq + 1; *p;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || (*end && *end != ','))
            return cli_fail("compare", "--sweep: '%s' is not a list of numbers", eq + 1), 1;
        if (*nm == MAX_RUNS) return cli_fail("compare", "--sweep: at most %d runs in all", MAX_RUNS), 1;
        cJSON *o = cJSON_Parse(base);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return cli_fail("compare", "--opts %s: not a JSON object", method), 1;
        }
        cJSON_DeleteItemFromObject(o, key);
        cJSON_AddNumberToObject(o, key, v);
        method_run *r = &runs[(*nm)++];
        r->opts_owned = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!r->opts_owned) return cli_fail("compare", "out of memory"), 1;
        r->opts = r->opts_owned;
        r->value = v;
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->name, sizeof r->name, "%s-%s-%g", method, key, v);
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* DIR/sweep.md and DIR/sweep.svg: for each sweep, the end of each of its runs
 * against the swept value (runs in the order given; the plot sorts nothing);
 * DIR/tradeoff.svg: generalisation against locality, one curve per sweep,
 * the curve every memory-based editor trades on (the radius moves a run
 * along it). */
#define MAX_SWEEPS 4
static int write_sweep(const char *out, const char *const *specs, const int *from, const int *to, int n_sweeps,
                       const method_run *runs) {
    char *md_path = graft_path_join(out, "sweep.md"), *svg_path = graft_path_join(out, "sweep.svg");
    char *tr_path = graft_path_join(out, "tradeoff.svg");
    FILE *md = md_path ? fopen(md_path, "w") : NULL;
    if (!md || !svg_path || !tr_path) {
        if (md) fclose(md);
        free(md_path), free(svg_path), free(tr_path);
        return cli_fail("compare", "%s: cannot write", out), 1;
    }
    static double x[MAX_SWEEPS][MAX_RUNS], ys[MAX_SWEEPS][4][MAX_RUNS];
    graft_series s[MAX_SWEEPS][4], tr[MAX_SWEEPS];
    graft_panel pn[MAX_SWEEPS];
    char keys[MAX_SWEEPS][64], titles[MAX_SWEEPS][96];
    const char *names[4] = {"edit success", "retention (ERR)", "locality (TRR)", "generalisation"};
    for (int w = 0; w < n_sweeps; w++) {
        const char *k0 = strchr(specs[w], ':') + 1;
        snprintf(keys[w], sizeof keys[w], "%.*s", (int)(strchr(k0, '=') - k0), k0);
        if (n_sweeps > 1) fprintf(md, "%s### %s\n\n", w ? "\n" : "", specs[w]);
        fprintf(md, "| %s | ES (gen) | ERR (gen) | TRR (gen) | generalisation (gen) | generalisation (tf) | keys |\n", keys[w]);
        fprintf(md, "|---:|---:|---:|---:|---:|---:|---:|\n");
        int n = to[w] - from[w];
        for (int j = 0; j < n; j++) {
            const method_run *r = &runs[from[w] + j];
            const cJSON *L = r->last;
            x[w][j] = r->value;
            ys[w][0][j] = num(L, "es_gen"), ys[w][1][j] = num(L, "err_gen"), ys[w][2][j] = num(L, "trr_gen");
            ys[w][3][j] = num(L, "gen_gen");
            char b[6][32];
            double vals[6] = {ys[w][0][j], ys[w][1][j], ys[w][2][j], ys[w][3][j], num(L, "gen_tf"), num(L, "keys")};
            for (int k = 0; k < 6; k++) fmt(b[k], sizeof b[k], vals[k], k == 5 ? "%.0f" : "%.3f");
            fprintf(md, "| %g | %s | %s | %s | %s | %s | %s |\n", x[w][j], b[0], b[1], b[2], b[3], b[4], b[5]);
        }
        for (int k = 0; k < 4; k++) s[w][k] = (graft_series){names[k], x[w], ys[w][k], n, 0, k + 1};
        snprintf(titles[w], sizeof titles[w], "%s: the end of the stream against %s", runs[from[w]].method, keys[w]);
        pn[w] = (graft_panel){titles[w], "fraction (exact-match generation)", s[w], 4, 0.0, 1.0};
        tr[w] = (graft_series){runs[from[w]].method, ys[w][2], ys[w][3], n, 0, w + 1};
    }
    fclose(md);
    char title[160];
    snprintf(title, sizeof title, n_sweeps == 1 ? "Sweep of %s" : "Sweeps of %s and more", specs[0]);
    graft_status st = graft_svg_panels(svg_path, title, n_sweeps == 1 ? keys[0] : "swept value", pn, n_sweeps,
                                       n_sweeps < 2 ? 1 : 2);
    if (st == GRAFT_OK)
        st = graft_svg_line_plot(tr_path, "Generalisation against locality as the radius varies (one point per run)",
                                 "locality: TRR (gen)", "generalisation: rephrases answered (gen)", tr, n_sweeps, 0.0, 1.0);
    int rc = st != GRAFT_OK ? cli_fail_status("compare", st) : 0;
    if (!rc) printf("wrote %s, %s, %s\n", md_path, svg_path, tr_path);
    free(md_path), free(svg_path), free(tr_path);
    return rc;
}

int cmd_compare(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"methods", required_argument, 0, 'M'}, {"data", required_argument, 0, 'd'},
        {"out", required_argument, 0, 'o'},      {"n", required_argument, 0, 'n'},       {"format", required_argument, 0, 'f'},
        {"eval-every", required_argument, 0, 'k'}, {"upstream", required_argument, 0, 'u'}, {"upstream-n", required_argument, 0, 'U'},
        {"ppl-text", required_argument, 0, 'p'}, {"err-sample", required_argument, 0, 'e'}, {"opts", required_argument, 0, 'O'},
        {"resume", no_argument, 0, 'r'},         {"tokenizer", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
        {"jobs", required_argument, 0, 'j'},     {"ppl-tokens", required_argument, 0, 'P'},
        {"table-only", no_argument, 0, 't'},      {"sweep", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    const char *model = NULL, *methods = NULL, *out = NULL, *tok = NULL, *sweeps[MAX_SWEEPS];
    int n_sweeps = 0, sw_from[MAX_SWEEPS], sw_to[MAX_SWEEPS];
    const char *mopts[16][2];
    int n_mopts = 0, c, jobs = 1, table_only = 0;
    graft_stream_opts so;
    graft_stream_opts_default(&so);
    long v;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'M': methods = optarg; break;
        case 'd': so.data_path = optarg; break;
        case 'o': out = optarg; break;
        case 'n': if (cli_parse_int("compare", "--n", optarg, 1, 1L << 30, &so.n)) return 2; break;
        case 'f': so.format = optarg; break;
        case 'k': if (cli_parse_int("compare", "--eval-every", optarg, 1, 1L << 30, &v)) return 2; so.eval_every = (int)v; break;
        case 'u': so.upstream_path = optarg; break;
        case 'U': if (cli_parse_int("compare", "--upstream-n", optarg, 1, 1L << 30, &so.upstream_n)) return 2; break;
        case 'p': so.ppl_path = optarg; break;
        case 'e': if (cli_parse_int("compare", "--err-sample", optarg, 1, 1L << 30, &so.err_sample)) return 2; break;
        case 'O': {
            const char *eq = strchr(optarg, '=');
            if (!eq || n_mopts == 16) return cli_fail("compare", "--opts wants METHOD=JSON (at most 16)"), 2;
            mopts[n_mopts][0] = strndup(optarg, (size_t)(eq - optarg));
            mopts[n_mopts++][1] = eq + 1;
            break;
        }
        case 'r': so.resume = 1; break;
        case 't': table_only = 1; break;
        case 'S':
            if (n_sweeps == MAX_SWEEPS) return cli_fail("compare", "at most %d --sweep options", MAX_SWEEPS), 2;
            sweeps[n_sweeps++] = optarg;
            break;
        case 'j': if (cli_parse_int("compare", "--jobs", optarg, 1, 64, &v)) return 2; jobs = (int)v; break;
        case 'P': if (cli_parse_int("compare", "--ppl-tokens", optarg, 2, 1L << 30, &so.ppl_tokens)) return 2; break;
        case 'T': tok = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (!methods && !n_sweeps) || (!so.data_path && !table_only) || !out) {
        cli_fail("compare", table_only ? "--methods (or --sweep) and --out are required"
                                       : "--methods (or --sweep), --data and --out are required");
        usage(stderr);
        return 2;
    }
    graft_status mst = graft_mkdir_p(out);
    if (mst != GRAFT_OK) return cli_fail_status("compare", mst);

    method_run runs[MAX_RUNS];
    memset(runs, 0, sizeof runs);
    int nm = 0;
    char *list = strdup(methods ? methods : "");
    for (char *tokn = strtok(list, ","); tokn && nm < MAX_RUNS; tokn = strtok(NULL, ",")) {
        snprintf(runs[nm].name, sizeof runs[nm].name, "%s", tokn);
        snprintf(runs[nm].method, sizeof runs[nm].method, "%s", tokn);
        runs[nm].opts = "{}";
        for (int i = 0; i < n_mopts; i++)
            if (!strcmp(mopts[i][0], tokn)) runs[nm].opts = mopts[i][1];
        nm++;
    }
    free(list);
    for (int w = 0; w < n_sweeps; w++) {
        sw_from[w] = nm;
        int bad = add_sweep(sweeps[w], (const char *(*)[2])mopts, n_mopts, runs, &nm);
        sw_to[w] = nm;
        if (bad) {
            for (int i = 0; i < n_mopts; i++) free((char *)mopts[i][0]);
            for (int i = 0; i < nm; i++) free(runs[i].opts_owned);
            return 2;
        }
    }
    int rc = 0;
    if (jobs > nm) jobs = nm;
    if (table_only) {
        /* nothing to run */
    } else if (jobs <= 1) {
        for (int i = 0; i < nm && rc == 0; i++) rc = run_method(model, tok, out, &so, &runs[i], 0);
    } else {
        /* One child process per method, at most `jobs` at a time. The parent
         * forks before it has run any OpenMP region, so each child starts
         * with a clean thread pool and takes an equal share of the cores
         * (small models gain more from running methods side by side than
         * from two threads on one method's small matrices). */
        int share = graft_get_threads() / jobs;
        if (share < 1) share = 1;
        pid_t pids[MAX_RUNS];
        double started[MAX_RUNS];
        int next = 0, running = 0, failed = 0;
        for (int i = 0; i < nm; i++) pids[i] = 0;
        while (next < nm || running > 0) {
            while (running < jobs && next < nm) {
                fflush(stdout), fflush(stderr);
                pid_t pid = fork();
                if (pid < 0) return cli_fail("compare", "fork: %s", strerror(errno)), 1;
                if (pid == 0) {
                    graft_set_threads(share);
                    int code = run_method(model, tok, out, &so, &runs[next], 1);
                    fflush(NULL);
                    _exit(code);
                }
                pids[next] = pid, started[next] = graft_now_s();
                fprintf(stderr, "compare: %s started (pid %d, %d thread%s; messages in %s/%s/log.txt)\n", runs[next].name,
                        (int)pid, share, share == 1 ? "" : "s", out, runs[next].name);
                next++, running++;
            }
            int status;
            pid_t done = wait(&status);
            if (done < 0) {
                if (errno == EINTR) continue;
                break;
            }
            for (int i = 0; i < nm; i++)
                if (pids[i] == done) {
                    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                    fprintf(stderr, "compare: %s %s after %.0f s%s\n", runs[i].name, code ? "FAILED" : "finished",
                            graft_now_s() - started[i], code ? " (see its log.txt)" : "");
                    if (code) failed = 1;
                    running--;
                }
        }
        rc = failed;
    }
    for (int i = 0; i < n_mopts; i++) free((char *)mopts[i][0]);
    if (rc) return rc;

    /* the table */
    char *md_path = graft_path_join(out, "compare.md"), *js_path = graft_path_join(out, "compare.json");
    char *svg_path = graft_path_join(out, "compare.svg");
    FILE *md = fopen(md_path, "w");
    cJSON *js = cJSON_CreateObject();
    if (!md) return cli_fail("compare", "%s: cannot write", md_path);
    fprintf(md, "| method | edits | ES (gen) | ERR (gen) | ERR (tf) | TRR (gen) | held knowledge (gen) | generalisation (gen) | "
                "CF efficacy | CF paraphrase | CF neighbourhood | PPL | ‖W − W0‖ | gen. entropy | s/edit | collapse at |\n");
    fprintf(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    graft_series s[4][MAX_RUNS];
    memset(s, 0, sizeof s);
    for (int i = 0; i < nm; i++) {
        char *dir = graft_path_join(out, runs[i].name);
        graft_status st = read_run(dir, &runs[i]);
        free(dir);
        if (st != GRAFT_OK) {
            rc = cli_fail_status("compare", st);
            continue;
        }
        const cJSON *L = runs[i].last;
        const cJSON *col = runs[i].summary ? cJSON_GetObjectItem(runs[i].summary, "collapse") : NULL;
        double at = cJSON_IsObject(col) ? num(col, "at_edits") : NAN;
        char b[16][32];
        double vals[15] = {num(L, "edits"), num(L, "es_gen"), num(L, "err_gen"), num(L, "err_tf"), num(L, "trr_gen"),
                           num(L, "known_gen"), num(L, "gen_gen"), num(L, "cf_efficacy"), num(L, "cf_paraphrase"),
                           num(L, "cf_neighborhood"), num(L, "ppl"), num(L, "dw_norm"), num(L, "gen_entropy"),
                           num(L, "sec_per_edit"), at};
        for (int k = 0; k < 15; k++) fmt(b[k], sizeof b[k], vals[k], k == 0 || k == 14 ? "%.0f" : k >= 10 && k <= 12 ? "%.3g" : "%.3f");
        fprintf(md, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", runs[i].name,
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                isfinite(at) ? b[14] : "none");
        cJSON *mj = cJSON_AddObjectToObject(js, runs[i].name);
        graft_json_put(mj, "final", cJSON_Duplicate(L, 1));
        if (isfinite(at)) cJSON_AddNumberToObject(mj, "collapse_at", at);
        else cJSON_AddNullToObject(mj, "collapse_at");
        /* one colour per method, the same in every panel */
        const double *ys[4] = {runs[i].err, runs[i].trr, runs[i].known, runs[i].cfe};
        for (int k = 0; k < 4; k++) s[k][i] = (graft_series){runs[i].name, runs[i].x, ys[k], runs[i].n, 0, i + 1};
    }
    fclose(md);
    char *jtext = cJSON_Print(js);
    graft_status st = jtext ? graft_write_file_atomic(js_path, jtext, strlen(jtext)) : GRAFT_ERR_NOMEM;
    free(jtext);
    cJSON_Delete(js);
    graft_panel pn[4] = {
        {"Edit retention (ERR): earlier edits still answered exactly", "ERR (gen)", s[0], nm, 0.0, 1.0},
        {"Locality (TRR): unrelated prompts answered as before", "TRR (gen)", s[1], nm, 0.0, 1.0},
        {"Held knowledge: true facts known before editing", "accuracy (gen)", s[2], nm, 0.0, 1.0},
        {"CounterFact efficacy: NLL(new) < NLL(true) on edits so far", "fraction of edits", s[3], nm, 0.0, 1.0}};
    if (st == GRAFT_OK)
        st = graft_svg_panels(svg_path, "Sequential editing: retention and forgetting per method", "edits applied", pn, 4, 2);
    if (st != GRAFT_OK) rc = cli_fail_status("compare", st);
    else printf("wrote %s, %s, %s\n", md_path, js_path, svg_path);
    if (rc == 0 && n_sweeps) rc = write_sweep(out, sweeps, sw_from, sw_to, n_sweeps, runs);
    for (int i = 0; i < nm; i++) {
        free(runs[i].x), free(runs[i].err), free(runs[i].trr), free(runs[i].known), free(runs[i].cfe);
        cJSON_Delete(runs[i].last), cJSON_Delete(runs[i].summary);
        free(runs[i].opts_owned);
    }
    free(md_path), free(js_path), free(svg_path);
    return rc;
}
