/*
 * dataset.h - edit-request datasets: one in-memory form for every data set the
 * editors and the evaluation consume (internal; tests and the CLI include it).
 *
 * Formats (the record schema; spec: algorithms.md section 8):
 *   counterfact    EasyEdit's flat CounterFact: {case_id?, prompt, target_new,
 *                  subject, ground_truth, rephrase_prompt, locality_prompt,
 *                  locality_ground_truth}. target = target_new.
 *   zsre           MEND / EasyEdit zsRE: {subject, src, alt, answers[],
 *                  rephrase, loc, loc_ans, pred?, cond?}. prompt = src,
 *                  target = alt, ground_truth = answers[0], rephrase, and the
 *                  locality pair (loc, loc_ans). `loc` is kept verbatim WITH its
 *                  leading "nq question: ": EasyEdit's ZsreDataset and ROME's
 *                  zsRE loader both feed it to the model that way, so locality
 *                  numbers stay comparable with theirs.
 *                  Rows whose `alt` is empty (2 of zsre_mend_train-1k.json) are
 *                  skipped and counted in n_dropped, as EasyEdit skips them.
 *   hallucination  WISE/EasyEdit: {prompt, target_new, subject,
 *                  locality_prompt, locality_ground_truth}.
 *   temporal       as hallucination plus ood_rephrase (-> rephrases[0]).
 *   jsonl          graft's own: {"prompt", "target", "rephrases"?: [..],
 *                  "locality"?: [{"prompt", "answer"}], "subject"?,
 *                  "ground_truth"?, "id"?}.
 *   NULL or "auto" guesses the format from the first record (d->format says
 *   which): src+alt -> zsre; ood_rephrase -> temporal; ground_truth or
 *   rephrase_prompt -> counterfact; target_new -> hallucination;
 *   prompt+target -> jsonl.
 *
 * Container: a file whose first non-blank byte is '[' is one JSON list of
 * records; otherwise it is JSON Lines (one object per line, blank lines
 * skipped). Any schema works in either container.
 *
 * Rules every format shares:
 *  - strings are kept verbatim (no trimming): consumers join prompt + " " +
 *    target, the EasyEdit convention. (zsRE's `alt` sometimes begins with a
 *    space; it is passed on as it is.)
 *  - every string passed on is valid UTF-8 (checked) and has no NUL.
 *  - an empty (or all-whitespace) prompt, target, rephrase, subject, ground
 *    truth or locality prompt is an error, except as noted for zsRE and with
 *    GRAFT_DATASET_KEEP_EMPTY_TARGET. A locality pair whose ANSWER is empty
 *    (WISE hallucination/temporal have a few) is dropped from that request and
 *    counted in n_loc_dropped: there is nothing to compare it on.
 *  - optional string fields may be absent or null; required ones may not.
 *  - case_id: the record's own id (counterfact case_id, jsonl id) when it has
 *    one, else its 0-based index in the file counting skipped rows too (what
 *    EasyEdit's enumerate() gives).
 *  - row: 1-based; the record's position in a JSON list, the line in JSONL.
 *  - max_rows > 0 keeps the first max_rows requests and stops parsing (rows
 *    after them are not validated; a JSON list is parsed one record at a
 *    time too). The file is read whole: memory is its size plus the kept
 *    requests (docs/RELIABILITY.md, "Hostile sizes").
 * Every malformed input gives GRAFT_ERR_FORMAT with a message naming the
 * file, the row and the field ("f.json: row 3: field 'target_new': want a
 * string, got a number"); JSON syntax errors name the byte offset and line.
 * On error *out is left empty and everything is freed.
 */
#ifndef GRAFT_DATA_DATASET_H
#define GRAFT_DATA_DATASET_H

#include "internal.h"

typedef struct graft_edit_request {
    char *prompt;       /* the edit prompt (UTF-8) */
    char *target;       /* the wanted output (CounterFact: target_new; zsRE: alt) */
    char *ground_truth; /* the true answer when known (CounterFact ground_truth, zsRE answers[0]) or NULL */
    char *subject;      /* or NULL */
    char **rephrases;   /* paraphrased prompts with the same target */
    int n_rephrases;
    char **loc_prompts; /* locality (unrelated) prompts ... */
    char **loc_answers; /* ... and their answers */
    int n_loc;
    long case_id; /* the dataset's id, or the 0-based record index */
    int row;      /* 1-based row: record index in a JSON list, line in JSONL */
} graft_edit_request;

typedef struct graft_dataset {
    graft_edit_request *req;
    int n;
    char *path;
    char *format;      /* the schema used ("counterfact", ...), also when guessed */
    int n_dropped;     /* records skipped by rule (zsRE: empty alt) */
    int n_loc_dropped; /* locality pairs dropped for an empty answer */
} graft_dataset;

/* Flags for graft_dataset_load_ex. */
enum {
    /* Keep records whose target is empty (target = "") instead of failing or,
     * for zsRE, skipping them: for callers that only want prompt and
     * ground_truth (graft corpus reads every zsRE question this way). */
    GRAFT_DATASET_KEEP_EMPTY_TARGET = 1u << 0,
};

graft_status graft_dataset_load(const char *path, const char *format, long max_rows, graft_dataset *out);
graft_status graft_dataset_load_ex(const char *path, const char *format, long max_rows, unsigned flags,
                                   graft_dataset *out);
/* Frees everything the dataset owns and zeroes it; accepts NULL and a zeroed struct. */
void graft_dataset_free(graft_dataset *d);
/* The format names graft_dataset_load accepts, NULL-terminated ("auto" not included). */
extern const char *const graft_dataset_formats[];

/* Strict UTF-8 check (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF). Returns true when valid; else *bad_off (may be NULL) receives the
 * byte offset of the first bad sequence. */
bool graft_utf8_valid(const char *s, size_t n, size_t *bad_off);

#endif /* GRAFT_DATA_DATASET_H */
