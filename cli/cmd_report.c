/* cmd_report.c - graft report: the evaluation points of a run folder as a
 * table (plain or Markdown), both accuracy definitions side by side. */
#include "cli.h"
#include "internal.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft report RUN_DIR [--markdown]\n"
          "Prints the evaluation points of a `graft edit` run (RUN_DIR/results.jsonl) as a table:\n"
          "gen = exact-match greedy generation (GRACE), tf = teacher-forced token accuracy (EasyEdit).\n",
          out);
}

static double get(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void cell(char *buf, size_t n, double v, const char *fmt) {
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, fmt, v);
}

int cmd_report(int argc, char **argv) {
    static const struct option opts[] = {{"markdown", no_argument, 0, 'M'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int md = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'M') md = 1;
        else if (c == 'h') { usage(stdout); return 0; }
        else { usage(stderr); return 2; }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    char *path = graft_path_join(argv[optind], "results.jsonl"), *text = NULL;
    graft_status st = graft_read_file(path, &text, NULL);
    if (st != GRAFT_OK) {
        free(path);
        return cli_fail_status("report", st);
    }
    /* the GRACE issue's columns always; the forgetting study's (held
     * knowledge, CounterFact scores, weight change, entropy) when the run
     * has them (an upstream set of facts, CounterFact data, a weight editor) */
    static const struct { const char *key, *head, *fmt; int always; } cols[] = {
        {"edits", "edits", "%.0f", 1},        {"keys", "keys", "%.0f", 1},          {"es_gen", "ES gen", "%.3f", 1},
        {"es_tf", "ES tf", "%.3f", 1},        {"err_gen", "ERR gen", "%.3f", 1},    {"err_tf", "ERR tf", "%.3f", 1},
        {"trr_gen", "TRR gen", "%.3f", 1},    {"trr_tf", "TRR tf", "%.3f", 1},      {"gen_gen", "Gen gen", "%.3f", 1},
        {"gen_tf", "Gen tf", "%.3f", 1},      {"known_gen", "Known gen", "%.3f", 0}, {"cf_efficacy", "CF eff", "%.3f", 0},
        {"cf_paraphrase", "CF para", "%.3f", 0}, {"cf_neighborhood", "CF nbhd", "%.3f", 0},
        {"dw_norm", "W-W0 norm", "%.3g", 0},     {"gen_entropy", "entropy", "%.2f", 0}, {"ppl", "PPL", "%.5g", 1},
        {"sec_per_edit", "s/edit", "%.3f", 1}};
    enum { NC = sizeof cols / sizeof cols[0] };
    cJSON *rows[4096];
    int nr = 0, rc = 0, show[NC];
    for (int i = 0; i < NC; i++) show[i] = cols[i].always;
    for (char *line = strtok(text, "\n"); line && nr < 4096; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) {
            rc = cli_fail("report", "%s: line %d is not JSON", path, nr + 1);
            break;
        }
        rows[nr++] = j;
        for (int i = 0; i < NC; i++) show[i] |= isfinite(get(j, cols[i].key)) && (strcmp(cols[i].key, "dw_norm") || get(j, "dw_norm") != 0);
    }
    if (rc == 0) {
        for (int i = 0; i < NC; i++)
            if (show[i]) printf(md ? "| %s " : " %9s", cols[i].head);
        printf(md ? "|\n" : "\n");
        if (md) {
            for (int i = 0; i < NC; i++)
                if (show[i]) printf("|---:");
            printf("|\n");
        }
        for (int r = 0; r < nr; r++) {
            for (int i = 0; i < NC; i++) {
                if (!show[i]) continue;
                char b[32];
                cell(b, sizeof b, get(rows[r], cols[i].key), cols[i].fmt);
                printf(md ? "| %s " : " %9s", b);
            }
            printf(md ? "|\n" : "\n");
        }
    }
    for (int r = 0; r < nr; r++) cJSON_Delete(rows[r]);
    free(text);
    free(path);
    return rc;
}
