/* main.c - the graft command line: dispatches to one function per subcommand. */
#include "cli.h"
#include "kernels.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"generate", cmd_generate, "continue a prompt (greedy or sampled)"},
    {"score", cmd_score, "mean next-token NLL and perplexity of a text"},
    {"tokenize", cmd_tokenize, "text -> token ids, or ids -> text with --decode"},
    {"tokenizer", cmd_tokenizer, "learn a byte-level BPE from a text or fact file; tokens per prompt/answer"},
    {"inspect", cmd_inspect, "architecture, sizes, dtype and memory of a model"},
    {"bench", cmd_bench, "speed and memory benchmarks"},
    {"edit", cmd_edit, "stream edit requests into a model and measure ES/ERR/TRR/generalisation"},
    {"eval", cmd_eval, "accuracy on prompt -> answer facts (exact match and token accuracy), perplexity"},
    {"compare", cmd_compare, "the same edit stream through several methods: table, plot, collapse points"},
    {"report", cmd_report, "print the evaluation points of an edit run as a table"},
    {"edits", cmd_edits, "list, show, undo or export the edits of a run/adaptor folder"},
    {"export", cmd_export, "merge the weight edits of a run folder into the model; write an HF folder"},
    {"train", cmd_train, "train or fine-tune a model; writes a Hugging Face folder"},
    {"serve", cmd_serve, "serve the model over HTTP (OpenAI-style completions) and take edits live"},
    {"mend-train", cmd_mend, "meta-train a MEND editor for a model (docs/MEND.md)"},
    {"corpus", cmd_corpus, "build the fact corpus from CounterFact and zsRE"},
    {"stats", cmd_stats, "second-moment statistics of the MLP keys over a corpus (ROME/MEMIT/EMMET)"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: graft <command> [options]   (graft <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("graft %d.%d.%d\n", GRAFT_VERSION_MAJOR, GRAFT_VERSION_MINOR, GRAFT_VERSION_PATCH);
        /* what this CPU gets: kernels picked at run time (GRAFT_ISA overrides) */
        printf("kernels %s (this CPU runs: generic%s%s), GEMM %s\n", graft_cpu_isa(),
               graft_cpu_isa_supported(GRAFT_ISA_AVX2) ? " avx2" : "",
               graft_cpu_isa_supported(GRAFT_ISA_AVX512) ? " avx512" : "", graft_gemm_backend());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "graft: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
