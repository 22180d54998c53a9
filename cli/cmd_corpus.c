/* cmd_corpus.c - graft corpus (being written). */
#include "cli.h"
int cmd_corpus(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("corpus", "not implemented yet");
}
