#!/usr/bin/env bash
# make demo: the main job on the embedded default model. graft's own
# paraphrase fact model (models/factpara, trained by `graft train` on
# data/facts2; docs/FACT_MODEL.md) first shows what it knows, in phrasings it
# was taught and in phrasings it never saw; then GRACE streams 200 CounterFact
# counterfactual edits into it, measuring edit success, retention of earlier
# edits (ERR), retention of facts no edit touched (TRR) and generalisation to
# the rephrasings each edit withheld. DEMO_MODEL=factbase runs the older
# byte-level fact model's demo instead.
set -eu
BUILD=${1:-build}
G="$BUILD/graft"
M=models/${DEMO_MODEL:-factpara}
[ -f "$M/model.safetensors" ] || M=models/factbase
OUT=runs/demo
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ ! -f "$M/model.safetensors" ]; then
  # Without the fact model (scripts/train_factbase.sh makes it), show the
  # runtime and a GRACE stream on the real stories260K checkpoint instead.
  S=tests/data/stories260K.bin
  echo "demo: $M is missing; running the stories260K demo instead (scripts/train_factbase.sh trains the fact model)" >&2
  "$G" inspect -m "$S"
  echo; echo "== greedy generation (the text llama2.c's run.c prints) =="
  "$G" generate -m "$S" -n 40 --temp 0
  p="Once upon a time, there was a little girl named"
  echo; echo "== GRACE: 6 edits into stories260K (tests/data/stories_edits.jsonl) =="
  rm -rf "$OUT"
  "$G" edit -m "$S" --data tests/data/stories_edits.jsonl --eval-every 2 --layer 1 --out "$OUT"
  "$G" report "$OUT"
  echo; echo "== \"$p\" before ->$("$G" generate -m "$S" -p "$p" -n 6 --temp 0 | tr '\n' ' ')"
  echo "== after ->$("$G" generate -m "$S" --adaptor "$OUT" -p "$p" -n 6 --temp 0 | tr '\n' ' ')"
  echo; echo "retention plot: $OUT/retention.svg"
  exit 0
fi
if [ "$M" = models/factpara ]; then
  echo "== the fact model =="
  "$G" inspect -m "$M"
  echo
  echo "== what it knows: true facts it was taught, phrasings of taught facts it never saw, and facts never taught =="
  "$G" eval -m "$M" --facts data/facts2/known_facts.jsonl --facts data/facts2/heldout_phrasings.jsonl \
    --facts data/facts2/unseen_facts.jsonl --n 150
  p="The mother tongue of Danielle Darrieux is"
  q="The native language of Danielle Darrieux is"   # another phrasing of the same fact, not edited
  echo
  echo "== before editing: \"$p\" ->$("$G" generate -m "$M" -p "$p" -n 2 --temp 0 | tr '\n' ' ')"
  echo "                   \"$q\" ->$("$G" generate -m "$M" -p "$q" -n 2 --temp 0 | tr '\n' ' ')"
  echo
  echo "== GRACE: 200 sequential CounterFact counterfactual edits (data/facts2/edit_stream.json) =="
  rm -rf "$OUT"
  # GRACE's layer (3) and radius (6) come from $M/editing.json, chosen by the
  # eps sweep of docs/FACT_MODEL.md (the largest radius that keeps ERR and TRR at 1.000)
  "$G" edit -m "$M" --method grace --data data/facts2/edit_stream.json --format counterfact --n 200 \
    --eval-every 50 --upstream data/facts2/known_facts.jsonl --upstream-n 200 \
    --ppl-text data/facts2/heldout_text.txt --ppl-tokens 8192 --out "$OUT"
  echo
  echo "gen = exact-match greedy generation (GRACE's definition); tf = teacher-forced token accuracy (EasyEdit's);"
  echo "Gen = the rephrasings each edit withheld, answered with its new target"
  "$G" report "$OUT"
  echo
  echo "== after editing: \"$p\" ->$("$G" generate -m "$M" --adaptor "$OUT" -p "$p" -n 2 --temp 0 | tr '\n' ' ')"
  echo "                  \"$q\" ->$("$G" generate -m "$M" --adaptor "$OUT" -p "$q" -n 2 --temp 0 | tr '\n' ' ')"
  echo "   (CounterFact's counterfactual target: English; every edit is in $OUT/journal.sqlite, undo with graft edits undo)"
  echo
  echo "retention plot: $OUT/retention.svg    table: $OUT/results.jsonl    summary: $OUT/summary.json"
  exit 0
fi
echo "== the fact model =="
"$G" inspect -m "$M"
echo
echo "== what it knows: true CounterFact facts (150 it was trained on, and 150 paraphrases it never saw) =="
"$G" eval -m "$M" --facts data/facts/known_facts.jsonl --facts data/facts/heldout_templates.jsonl --n 150
echo
p="The mother tongue of Danielle Darrieux is"
echo "== before editing: \"$p\" ->$("$G" generate -m "$M" -p "$p" -n 12 --temp 0 | head -c 40 | tr '\n' ' ')"
echo
echo "== GRACE: 200 sequential CounterFact counterfactual edits (data/facts/edit_stream.json) =="
rm -rf "$OUT"
# Layer 1 of 6: byte-level targets are 5-15 tokens, and the later ones see the
# replaced row only through the attention layers above it (docs/FACT_MODEL.md).
"$G" edit -m "$M" --method grace --layer 1 --data data/facts/edit_stream.json --format counterfact --n 200 \
  --eval-every 50 --upstream data/facts/known_facts.jsonl --upstream-n 200 \
  --ppl-text data/facts/heldout_text.txt --ppl-tokens 8192 --out "$OUT"
echo
echo "gen = exact-match greedy generation (GRACE's definition); tf = teacher-forced token accuracy (EasyEdit's)"
"$G" report "$OUT"
echo
echo "== after editing: \"$p\" ->$("$G" generate -m "$M" --adaptor "$OUT" -p "$p" -n 12 --temp 0 | head -c 40 | tr '\n' ' ')"
echo "   (CounterFact's counterfactual target: English; every edit is in $OUT/journal.sqlite, undo with graft edits undo)"
echo
echo "retention plot: $OUT/retention.svg    table: $OUT/results.jsonl    summary: $OUT/summary.json"
