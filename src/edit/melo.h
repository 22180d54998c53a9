/*
 * melo.h - MELO (Yu et al., AAAI 2024): neuron-indexed dynamic LoRA routed by
 * a vector database (shared/docs/algorithms.md section 2).
 *
 * Two parts, both activation editors (the weights stay frozen):
 *  - a router at the up-projection of one block (GPT-2 c_fc, Llama up_proj):
 *    its query is that module's OUTPUT at the key token (MELO's rule; GRACE
 *    uses the input). Clusters of (centre, radius, label, points with block
 *    ids) grow by the spec's add / expand / split rules. The router never
 *    changes an activation;
 *  - block-partitioned LoRA on the up-projection of the blocks above it (the
 *    next two by default): block m owns A_m [in x k] and B_m [k x out] in
 *    every LoRA layer and adds scale * (x A_m) B_m to the module's output,
 *    at every token of a routed sequence (KV-cached generation steps too).
 *    B starts at zero, so an untrained block is an exact no-op.
 *
 * One edit batch trains one new block (Adam re-created per batch, StepLR),
 * with the batch's sequences routed to it. Inference: nearest centre; outside
 * its radius the sequence is unrouted and its output bit-identical to the
 * unedited model's; inside, the nearest point of the cluster names the block.
 *
 * Change record = the batch's queries, labels and trained block. Replay runs
 * the router update again from the queries (a deterministic function of the
 * router's state) and installs the block, so undo is reset + replay of the
 * batches still live: an undone batch takes its router points with it.
 */
#ifndef GRAFT_EDIT_MELO_H
#define GRAFT_EDIT_MELO_H

#include "editor.h"

#define GRAFT_MELO_MAX_LORA 8

typedef enum { MELO_TRAIN_SUCCESS = 0, MELO_TRAIN_FIXED } melo_train;

typedef struct graft_melo_opts {
    int layer;           /* router block; -1: GRACE's default (3/4 depth, at most n_layer - 3) */
    int n_lora;          /* LoRA blocks (0: the next two above the router) */
    int lora_layers[GRAFT_MELO_MAX_LORA];
    int rank;            /* k, rank per block (2, the official GPT2-XL config) */
    int blocks;          /* capacity in blocks (1024); one block per edit batch */
    int grow;            /* allow more blocks than `blocks` (capacity grows) */
    float init_radius;   /* radius of a new cluster (model-dependent; see docs/MELO.md) */
    float edit_lr;       /* Adam learning rate (1e-3) */
    int n_iter;          /* fixed: steps per batch (50, the official num_iter) */
    int step_size;       /* StepLR: the rate halves every step_size steps (20, the code's) */
    float gamma;         /* StepLR factor (0.5) */
    melo_train train;    /* success (default): stop once every target leads by margin */
    int max_iter;        /* success: steps per batch at most (200) */
    float margin;        /* success: lead of the target logit at every position (0.5) */
    int label_sum_compat; /* compare labels by the sum of their ids, as the official code (0) */
    uint64_t seed;       /* A's initialisation (42) */
} graft_melo_opts;

void graft_melo_opts_default(graft_melo_opts *o);
graft_status graft_melo_create(graft_model *m, const graft_melo_opts *o, graft_editor **out);
int graft_melo_is(const graft_editor *e);
void graft_melo_get_opts(graft_editor *e, graft_melo_opts *o);
/* Options JSON <-> struct (factory.c); unknown keys are errors. */
graft_status graft_melo_opts_from_json(const void *cjson, graft_melo_opts *o, const char *where);
graft_status graft_melo_opts_to_json(graft_editor *e, void *cjson);

/* Capacity: blocks trained so far, the configured number, and whether it may
 * grow. A stream checks n_batches against it before the first edit. */
void graft_melo_capacity(graft_editor *e, int *used, int *total, int *grow);

typedef struct graft_melo_stats {
    int n_blocks;      /* blocks trained */
    int n_clusters;
    int n_points;      /* points over all clusters, dummies included */
    int n_conflicts;   /* splits on a label conflict */
    int n_forgotten;   /* points dropped by splits */
    int query_dim, layer;
    int last_routed;   /* sequences routed to a block in the last routing forward */
} graft_melo_stats;
void graft_melo_get_stats(graft_editor *e, graft_melo_stats *st);

/* Benchmarks: n blocks with small random B, each behind a cluster of one
 * N(0, scale) point of radius init_radius. */
graft_status graft_melo_add_random(graft_editor *e, int n, float scale, uint64_t seed);
/* The router, for tests and tools: the block a query routes to (-1: none). */
int graft_melo_route(graft_editor *e, const float *query);
/* The router update of one batch (what apply and replay do): n queries of
 * query_dim floats, their labels, all to block `block`. */
graft_status graft_melo_router_update(graft_editor *e, const float *queries, const int *const *labels,
                                      const int *n_labels, int n, int block);
/* Block m's tensors in LoRA layer i (A [in, k], B [k, out]; owned). */
graft_status graft_melo_block(graft_editor *e, int m, int i, float **A, float **B, int *in, int *k, int *out);
/* Loss (mean cross-entropy of the targets) of a batch with every sequence
 * routed to block m, and when gA/gB are given, its gradient w.r.t. the
 * block's A and B in every LoRA layer (gA[i] [in*k], gB[i] [k*out]): the
 * exact computation a training step makes (finite-difference tests). */
graft_status graft_melo_loss_grad(graft_editor *e, const graft_edit_tok *reqs, int n, int m, double *loss,
                                  float **gA, float **gB);

#endif /* GRAFT_EDIT_MELO_H */
