#!/usr/bin/env bash
# The forgetting study (docs/FORGETTING_STUDY.md): 1,000 sequential
# CounterFact edits into the fact model with every method side by side, and
# 10,000 with GRACE. Run from the repository root after `make`:
#
#     bash scripts/forgetting_study.sh [BUILD_DIR]
#
# About 2 hours on the 2-core development machine (compare runs two methods
# at a time; the GRACE 10,000-edit stream runs beside it on its own core).
# Everything lands in runs/study/; the table and plot are copied to
# docs/study/. Interrupted runs continue where they stopped when the script
# is run again (the journals are the state).
set -eu
BUILD=${1:-build}
G="$BUILD/graft"
M=models/factbase
OUT=runs/study
SHARED=${GRAFT_SHARED_DIR:-../shared}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$OUT" docs/study

# 1. key statistics of the fact model: held-out fact sentences (its own
#    domain, never trained) followed by WikiText-2's test split, every layer
S=$OUT/factbase_stats.safetensors
if [ ! -f "$S" ]; then
  cat data/facts/heldout_text.txt "$SHARED/data/wikitext2/wiki.test.raw" > "$OUT/stats_corpus.txt"
  "$G" stats -m "$M" --corpus "$OUT/stats_corpus.txt" --layers all --out "$S"
fi

# 2. GRACE over 10,000 CounterFact edits (the full counterfact-edit set: the
#    fact model was trained on the true answers of its first 2,000 only), on
#    one core, in the background
(
  OMP_NUM_THREADS=1 "$G" edit -m "$M" --method grace --layer 1 \
    --data "$SHARED/data/counterfact/counterfact-edit.json" --format counterfact --n 10000 \
    --eval-every 1000 --err-sample 300 --upstream data/facts/known_facts.jsonl --upstream-n 300 \
    --ppl-text data/facts/heldout_text.txt --no-progress --resume --out "$OUT/grace10k" \
    > "$OUT/grace10k.log" 2>&1
) &
grace_pid=$!

# 3. every method over the same 1,000 edits, two at a time. Options that
#    differ from each method's defaults are the ones docs/FORGETTING_STUDY.md
#    explains (scale-dependent constants tuned on GPT-2 XL).
"$G" compare -m "$M" --methods grace,melo,mend,rome,memit,emmet,ft,ftl,ewc --n 1000 \
  --data data/facts/edit_stream.json --format counterfact \
  --eval-every 100 --err-sample 200 --upstream data/facts/known_facts.jsonl --upstream-n 300 \
  --ppl-text data/facts/heldout_text.txt --jobs 2 --out "$OUT/compare1000" \
  --opts 'grace={"layer": 1}' \
  --opts "rome={\"stats\": \"$S\"}" \
  --opts "memit={\"stats\": \"$S\", \"mom2_update_weight\": 100}" \
  --opts "emmet={\"stats\": \"$S\", \"mom2_update_weight\": 100}" \
  --opts 'ftl={"loss": "target_new", "linf": 5e-3}' \
  --opts 'ewc={"ewc_lambda": 1e6}'

# 4. ROME's first 100 edits again, evaluated every 10 edits, with the r-ROME key
#    (the default) and with the original asymmetric key
for v in rome100:--rrome romeorig100:--no-rrome; do
  name=${v%%:*}; flag=${v#*:}; [ "$flag" = --rrome ] && flag=
  OMP_NUM_THREADS=1 "$G" edit -m "$M" --method rome $flag --stats "$S" \
    --data data/facts/edit_stream.json --format counterfact --n 100 \
    --eval-every 10 --err-sample 200 --upstream data/facts/known_facts.jsonl --upstream-n 300 \
    --ppl-text data/facts/heldout_text.txt --no-progress --resume --out "$OUT/$name" > "$OUT/$name.log" 2>&1
done

wait "$grace_pid" || { echo "the GRACE 10,000-edit stream failed: see $OUT/grace10k.log" >&2; exit 1; }

cp "$OUT/compare1000/compare.md" "$OUT/compare1000/compare.json" "$OUT/compare1000/compare.svg" docs/study/
for m in grace melo mend rome memit emmet ft ftl ewc; do
  cp "$OUT/compare1000/$m/results.jsonl" "docs/study/$m-1000.results.jsonl"
done
for m in rome memit emmet; do
  "$G" edits list --adaptor "$OUT/compare1000/$m" --svg "docs/study/$m-1000-norms.svg" > "docs/study/$m-1000-edits.txt"
done
cp "$OUT/rome100/results.jsonl" docs/study/rome-100.results.jsonl
cp "$OUT/romeorig100/results.jsonl" docs/study/rome-orig-100.results.jsonl
"$G" report "$OUT/rome100" --markdown > docs/study/rome-100.report.md
"$G" report "$OUT/romeorig100" --markdown > docs/study/rome-orig-100.report.md
cp "$OUT/grace10k/results.jsonl" docs/study/grace-10000.results.jsonl
cp "$OUT/grace10k/retention.svg" docs/study/grace-10000.svg
"$G" report "$OUT/grace10k" --markdown > docs/study/grace-10000.report.md
echo "done: docs/study/"
