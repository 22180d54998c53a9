#!/usr/bin/env bash
# cli_mend.sh - MEND as a user runs it: a stream of edits into models/factbase
# with its shipped editor (models/factbase/mend), undo of one edit, the
# adaptor in graft generate, a short mend-train that checkpoints and resumes,
# and the refusals (no trained editor, a damaged editor file). Usage:
# cli_mend.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_mend.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
M=$DATA/../../models/factbase
. "$(dirname "$0")/lib.sh"
cli_begin mend
[ -f "$M/mend/mend.safetensors" ] || { echo "SKIP: $M/mend (the shipped MEND editor) is absent" >&2; exit 77; }
STREAM=$DATA/../../data/facts/edit_stream.json

# a short sequential stream with the shipped editor (found as MODEL/mend)
"$GRAFT" edit -m "$M" --method mend --data "$STREAM" --format counterfact --n 4 --eval-at end --no-progress \
  --out "$tmp/a" >/dev/null 2>"$tmp/err" && ok || bad "mend stream: $(tail -3 "$tmp/err")"
[ "$(sqlite3 "$tmp/a/journal.sqlite" "select count(*) from edits")" -eq 4 ] && ok || bad "4 journal rows"
es=$(tail -1 "$tmp/a/results.jsonl" | jq '.es_gen')
awk -v e="$es" 'BEGIN { exit !(e >= 0.5) }' && ok || bad "ES $es on the first 4 edits (single-edit ES is 0.83)"
[ -s "$tmp/a/edit_state.safetensors" ] && ok || bad "no edit_state.safetensors"

# undo every edit: the adaptor then generates exactly what the unedited model does
p=$(jq -r '.[0].prompt' "$STREAM")
base=$("$GRAFT" generate -m "$M" -p "$p" -n 8 --temp 0 2>/dev/null)
for i in 1 2 3 4; do "$GRAFT" edits undo $i --adaptor "$tmp/a" -m "$M" >/dev/null 2>"$tmp/err" || bad "undo $i: $(cat "$tmp/err")"; done
after=$("$GRAFT" generate -m "$M" --adaptor "$tmp/a" -p "$p" -n 8 --temp 0 2>/dev/null)
[ "$after" = "$base" ] && ok || bad "after undoing all: '$after' vs unedited '$base'"

# the default model's editor (models/factpara/mend) with its calibrated step size from editing.json
FP=$DATA/../../models/factpara
if [ -f "$FP/mend/mend.safetensors" ]; then
  "$GRAFT" edit -m "$FP" --method mend --data "$DATA/../../data/facts2/edit_stream.json" --format counterfact --n 6 \
    --eval-at end --no-progress --out "$tmp/fp" >/dev/null 2>"$tmp/err" && ok || bad "factpara mend stream: $(tail -3 "$tmp/err")"
  jq -e '.editor_options.alpha_scale > 1.19 and .editor_options.alpha_scale < 1.21' "$tmp/fp/summary.json" >/dev/null &&
    ok || bad "editing.json's mend alpha_scale not applied: $(jq -c .editor_options "$tmp/fp/summary.json")"
  es=$(tail -1 "$tmp/fp/results.jsonl" | jq '.es_gen')
  awk -v e="$es" 'BEGIN { exit !(e >= 0.5) }' && ok || bad "factpara: ES $es on the first 6 edits"
else
  echo "SKIP (part): $FP/mend is absent" >&2
fi

# meta-training: a few steps, checkpoint, resume to a later step
CF=${GRAFT_SHARED_DIR:-$DATA/../../../shared}/data/counterfact/counterfact-train.json
if [ ! -f "$CF" ]; then
  echo "SKIP (part): $CF absent: mend-train not run" >&2
else
  TRAIN=("$GRAFT" mend-train -m "$M" --data "$CF" --locality "$DATA/../../data/facts/known_facts.jsonl" --out "$tmp/ed"
         --val-every 2 --val-n 4 --ckpt-every 2 --rank 8 --threads 1)
  "${TRAIN[@]}" --steps 4 >/dev/null 2>"$tmp/err" && [ -s "$tmp/ed/mend.safetensors" ] && ok || bad "mend-train: $(tail -3 "$tmp/err")"
  "${TRAIN[@]}" --steps 6 --resume >/dev/null 2>"$tmp/err" && ok || bad "mend-train --resume: $(tail -3 "$tmp/err")"
fi

# refusals: no trained editor; a damaged one
mkdir -p "$tmp/m2" && for f in "$M"/*; do [ "$(basename "$f")" = mend ] || ln -s "$f" "$tmp/m2/"; done
expect_err "mend" "no trained editor" -- "$GRAFT" edit -m "$tmp/m2" --method mend --data "$STREAM" --n 1 --out "$tmp/b"
mkdir -p "$tmp/bad" && cp "$M/mend/mend.json" "$tmp/bad/" && head -c 1000 "$M/mend/mend.safetensors" > "$tmp/bad/mend.safetensors"
expect_err "mend.safetensors" "truncated editor" -- "$GRAFT" edit -m "$M" --method mend --mend "$tmp/bad" --data "$STREAM" --n 1 --out "$tmp/c"

cli_end mend
