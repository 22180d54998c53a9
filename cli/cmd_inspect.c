/* cmd_inspect.c - graft inspect: what a checkpoint is and what it costs. */
#include "cli.h"
#include "model/gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fputs("usage: graft inspect [-m MODEL] [--tokenizer PATH] [--json]\n"
          "Prints the architecture, dimensions, storage dtype, parameter count, tokenizer and memory use;\n"
          "for a GGUF file also its metadata (long arrays summarised) and tensors.\n",
          out);
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'T'},
                                         {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *tok_path = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'T': tok_path = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    graft_model *m = NULL;
    if (cli_load_model("inspect", model, tok_path, &m)) {
        /* a GGUF file graft cannot run (another architecture, a K-quant...)
         * still shows its metadata, after the reason */
        graft_gguf g;
        if (model && !json && !graft_path_is_dir(model) && graft_is_gguf_file(model) &&
            graft_gguf_open(model, &g) == GRAFT_OK) {
            graft_gguf_describe(&g, stdout, false);
            graft_gguf_close(&g);
        }
        return 1;
    }
    graft_model_info in;
    graft_model_get_info(m, &in);
    /* a GGUF file's own metadata, read again (the model keeps only what it uses) */
    graft_gguf g;
    /* (by the loaded format: probing the file again can fail for want of memory) */
    bool is_gguf = model && in.format && !strncmp(in.format, "gguf", 4); /* gguf, gguf-q8_0 */
    graft_status gst = is_gguf ? graft_gguf_open(model, &g) : GRAFT_OK;
    if (gst != GRAFT_OK) {
        /* it loaded, so this is no format error (out of memory, I/O): say so
         * rather than print the description without the file's metadata */
        graft_model_free(m);
        return cli_fail_status("inspect", gst);
    }
    graft_tokenizer *tok = graft_model_tokenizer(m);
    const char *tk = tok ? graft_tokenizer_kind(tok) : "none";
    int tv = tok ? graft_tokenizer_vocab_size(tok) : 0;
    double mib = 1.0 / (1024.0 * 1024.0);
    if (json) {
        printf("{\"arch\": \"%s\", \"format\": \"%s\", \"dtype\": \"%s\", \"n_layer\": %d, \"d_model\": %d, "
               "\"n_head\": %d, \"n_kv_head\": %d, \"head_dim\": %d, \"d_ff\": %d, \"vocab_size\": %d, \"n_ctx\": %d, "
               "\"tied_embeddings\": %s, \"n_params\": %lld, \"mapped_mb\": %.2f, \"heap_mb\": %.2f, "
               "\"tokenizer\": \"%s\", \"tokenizer_vocab\": %d",
               in.arch_name, in.format, in.dtype, in.n_layer, in.d_model, in.n_head, in.n_kv_head, in.head_dim, in.d_ff,
               in.vocab_size, in.n_ctx, in.tied_embeddings ? "true" : "false", (long long)in.n_params,
               in.mapped_bytes * mib, in.heap_bytes * mib, tk, tv);
    }
    if (json) {
        if (is_gguf) {
            printf(", \"gguf\": ");
            graft_gguf_describe(&g, stdout, true);
        }
        printf("}\n");
    } else {
        printf("architecture   %s (%s checkpoint, %s weights)\n", in.arch_name, in.format, in.dtype);
        printf("layers         %d\n", in.n_layer);
        printf("d_model        %d\n", in.d_model);
        printf("heads          %d query, %d key/value, head_dim %d\n", in.n_head, in.n_kv_head, in.head_dim);
        printf("mlp hidden     %d\n", in.d_ff);
        printf("vocabulary     %d\n", in.vocab_size);
        printf("context        %d\n", in.n_ctx);
        printf("embeddings     %s\n", in.tied_embeddings ? "tied (LM head = token embedding)" : "untied");
        printf("parameters     %lld (%.2f M)\n", (long long)in.n_params, in.n_params / 1e6);
        printf("weights        %.2f MiB memory-mapped, %.2f MiB on the heap\n", in.mapped_bytes * mib,
               in.heap_bytes * mib);
        printf("tokenizer      %s (%d tokens)\n", tk, tv);
        if (is_gguf) graft_gguf_describe(&g, stdout, false);
    }
    if (is_gguf) graft_gguf_close(&g);
    graft_model_free(m);
    return 0;
}
