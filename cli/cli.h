/* cli.h - subcommands of the graft tool and the helpers they share. Each
 * subcommand returns the process exit code: 0 ok, 1 failure, 2 usage. */
#ifndef GRAFT_CLI_H
#define GRAFT_CLI_H
#include "graft.h"

#include <stdio.h>

int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_edit(int argc, char **argv);
int cmd_edits(int argc, char **argv);
int cmd_export(int argc, char **argv); /* FT baselines task: merge weight edits into an HF folder */
int cmd_report(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_corpus(int argc, char **argv);
int cmd_corpus_para(int argc, char **argv); /* graft corpus --paraphrase (cmd_corpus_para.c) */
int cmd_stats(int argc, char **argv); /* weight editors task: E[k k^T] for ROME/MEMIT/EMMET */
int cmd_tokenizer(int argc, char **argv); /* graft tokenizer learn|stats (cmd_tokenizer.c) */
int cmd_mend(int argc, char **argv);      /* graft mend-train: meta-train a MEND editor (cmd_mend.c) */
int cmd_serve(int argc, char **argv);     /* graft serve: HTTP completions + edits + web page (cmd_serve.c) */

/* Print "graft CMD: message" to stderr and return 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with the library's status and last error message. */
int cli_fail_status(const char *cmd, graft_status st);
const char *cli_default_model(void);
/* Load path (NULL: the default model) and, when tok_path is given, that tokenizer. */
int cli_load_model(const char *cmd, const char *path, const char *tok_path, graft_model **m);
int cli_need_tokenizer(const char *cmd, graft_model *m, graft_tokenizer **tok);
int cli_parse_ids(const char *cmd, const char *s, int **ids, size_t *n);
/* Strip spaces, tabs and line ends at both ends of s in place (NULL is
 * left alone); 1 when something was stripped. The corpus builders put
 * exactly one space between prompt and answer, so a stray one would double it. */
int cli_trim(char *s);
/* add_bos: 1 yes, 0 no, -1 when the tokenizer's models expect it. */
int cli_encode(const char *cmd, graft_tokenizer *tok, const char *text, size_t len, int add_bos, int **ids, size_t *n);
int cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
void cli_print_json_string(FILE *out, const char *s, size_t n);

#endif
