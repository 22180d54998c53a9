/* cli.h - subcommand entry points of the graft tool. Each returns the exit code. */
#ifndef GRAFT_CLI_H
#define GRAFT_CLI_H
#include "graft.h"

int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
