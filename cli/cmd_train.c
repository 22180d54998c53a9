/* cmd_train.c - graft train (being written). */
#include "cli.h"
int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("train", "not implemented yet");
}
