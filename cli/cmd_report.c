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
    static const char *cols[] = {"edits", "keys", "ES gen", "ES tf", "ERR gen", "ERR tf", "TRR gen", "TRR tf",
                                 "Gen gen", "Gen tf", "PPL", "s/edit"};
    const int nc = 12;
    for (int i = 0; i < nc; i++) printf(md ? "| %s " : "%9s", cols[i]);
    printf(md ? "|\n" : "\n");
    if (md) {
        for (int i = 0; i < nc; i++) printf("|---:");
        printf("|\n");
    }
    int row = 0, rc = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        row++;
        cJSON *j = cJSON_Parse(line);
        if (!j) {
            rc = cli_fail("report", "%s: line %d is not JSON", path, row);
            break;
        }
        double v[12] = {get(j, "edits"), get(j, "keys"), get(j, "es_gen"), get(j, "es_tf"), get(j, "err_gen"),
                        get(j, "err_tf"), get(j, "trr_gen"), get(j, "trr_tf"), get(j, "gen_gen"), get(j, "gen_tf"),
                        get(j, "ppl"), get(j, "sec_per_edit")};
        for (int i = 0; i < nc; i++) {
            char b[32];
            cell(b, sizeof b, v[i], i < 2 ? "%.0f" : i == 10 ? "%.2f" : "%.3f");
            printf(md ? "| %s " : "%9s", b);
        }
        printf(md ? "|\n" : "\n");
        cJSON_Delete(j);
    }
    free(text);
    free(path);
    return rc;
}
