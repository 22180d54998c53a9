/* stubs.c - temporary: subcommands not yet written report so and fail. */
#include "cli.h"
#include <stdio.h>
static int not_yet(const char *n) { fprintf(stderr, "graft %s: not implemented yet\n", n); return 1; }
int cmd_generate(int argc, char **argv) { (void)argc; (void)argv; return not_yet("generate"); }
int cmd_score(int argc, char **argv) { (void)argc; (void)argv; return not_yet("score"); }
int cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; return not_yet("tokenize"); }
int cmd_inspect(int argc, char **argv) { (void)argc; (void)argv; return not_yet("inspect"); }
int cmd_bench(int argc, char **argv) { (void)argc; (void)argv; return not_yet("bench"); }
