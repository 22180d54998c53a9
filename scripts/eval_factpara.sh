#!/usr/bin/env bash
# Evaluate a fact model against issue 10's targets and print a markdown table:
# exact-match greedy accuracy on the trained prompts, held-out phrasings of
# trained facts, the known-fact (TRR) set, CounterFact's and zsRE's own
# rephrasings, and unseen facts (which must stay unknown); then the held-out
# texts of both corpora in nats per byte (non-overlapping windows of each
# model's context), so models with different
# tokenizers compare on the same text. Usage:
#   scripts/eval_factpara.sh [MODEL] [BUILD_DIR]      (MODEL default models/factpara)
set -eu
M=${1:-models/factpara}
BUILD=${2:-build}
G="$BUILD/graft"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
echo "| set | rows | exact match (gen) | token accuracy (tf) |"
echo "|---|---:|---:|---:|"
for f in train heldout_phrasings known_facts heldout_cf_rephrases heldout_zsre unseen_facts; do
  "$G" eval -m "$M" --facts "data/facts2/$f.jsonl" --json 2>/dev/null |
    jq -r --arg f "$f" 'to_entries[0].value | "| \($f) | \(.n) | \(.exact_match_gen * 1000 | round / 1000) | \(.token_acc_tf * 1000 | round / 1000) |"'
done
echo
echo "| held-out text | bytes | tokens | nats per token | nats per byte |"
echo "|---|---:|---:|---:|---:|"
for t in data/facts2/heldout_text.txt data/facts/heldout_text.txt; do
  # non-overlapping windows of the model's own context (graft eval --text)
  bytes=$(wc -c < "$t")
  "$G" eval -m "$M" --text "$t" 2>/dev/null | awk -v t="$t" -v b="$bytes" '$2 == "tokens" {
    printf "| %s | %d | %d | %.3f | %.3f |\n", t, b, $3, $5, $5 * $3 / b }'
done
