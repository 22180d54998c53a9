#!/usr/bin/env bash
# cli_melo.sh - graft edit --method melo as a user runs it on stories260K:
# batches of edits, a stream killed with SIGKILL and resumed (the final
# state byte-identical to an uninterrupted run), an adaptor that generate
# accepts, undo of one batch, and the capacity check made before the first
# edit. Usage: cli_melo.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_melo.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
BIN=$DATA/stories260K.bin
. "$(dirname "$0")/lib.sh"
cli_begin melo

names=(Lily Tom Ben Sue Max Mia Sam Anna)
things=(ball tree car cat dog cake hat box)
for i in $(seq 0 23); do
  # 24 different prompts (undo must not find the same prompt in another batch)
  n=${names[$((i % 8))]}; t=${things[$(((i + i / 8) % 8))]}; u=${things[$(((i * 5 + 2 + i / 8) % 8))]}
  printf '{"prompt": "%s wanted a %s, so mom gave %s a", "target": "%s", "rephrases": ["Mom gave %s a"], "locality": [{"prompt": "%s went to the", "answer": "park"}]}\n' \
    "$n" "$t" "$n" "$u" "$n" "$n"
done > "$tmp/stream.jsonl"
EDIT=("$GRAFT" edit -m "$BIN" --method melo --data "$tmp/stream.jsonl" --batch 2 --eval-every 8 --radius 0.5 --no-progress)

"${EDIT[@]}" --out "$tmp/a" >/dev/null 2>"$tmp/err" && ok || bad "melo run: $(tail -3 "$tmp/err")"
for f in summary.json retention.svg edit_state.safetensors journal.sqlite; do [ -s "$tmp/a/$f" ] && ok || bad "missing $f"; done
last=$(tail -1 "$tmp/a/results.jsonl")
es=$(echo "$last" | sed -E 's/.*"es_gen": ([0-9.]+).*/\1/')
err=$(echo "$last" | sed -E 's/.*"err_gen": ([0-9.]+).*/\1/')
awk -v e="$es" -v r="$err" 'BEGIN { exit !(e >= 0.9 && r >= 0.9) }' && ok || bad "ES $es / ERR $err after 24 edits: $last"
[ "$(sqlite3 "$tmp/a/journal.sqlite" "select count(*) from edits")" -eq 12 ] && ok || bad "12 batches should be 12 journal rows"

# killed with SIGKILL mid-stream, then resumed
"${EDIT[@]}" --out "$tmp/b" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 400); do
  n=$(sqlite3 "$tmp/b/journal.sqlite" "select count(*) from edits" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 5 ] && break
  sleep 0.02
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
committed=$(sqlite3 "$tmp/b/journal.sqlite" "select count(*) from edits" 2>/dev/null || echo "?")
"${EDIT[@]}" --out "$tmp/b" --resume >/dev/null 2>"$tmp/err" && ok || bad "resume: $(tail -3 "$tmp/err")"
[ "$(sqlite3 "$tmp/b/journal.sqlite" "select count(distinct seq) from edits")" -eq 12 ] && ok || bad "after resume (killed at $committed)"
cmp -s "$tmp/a/edit_state.safetensors" "$tmp/b/edit_state.safetensors" && ok || bad "resumed MELO state differs (killed at $committed)"
strip() { sed -E 's/"(sec_per_edit|elapsed_s)": [^,}]*//g' "$1"; }
[ "$(strip "$tmp/a/results.jsonl")" = "$(strip "$tmp/b/results.jsonl")" ] && ok || bad "resumed metrics differ"

# the adaptor folder: generate through it; undo the first batch (rows 1, 2)
p="Lily wanted a ball, so mom gave Lily a"
t=$(sed -n 1p "$tmp/stream.jsonl" | sed -E 's/.*"target": "([a-z]+)".*/\1/')
out=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/a" -p "$p" -n 2 2>"$tmp/err")
case "$out" in " $t"*) ok ;; *) bad "adaptor generate: '$out' (want ' $t...') $(cat "$tmp/err")" ;; esac
"$GRAFT" edits undo 1 --adaptor "$tmp/a" -m "$BIN" >/dev/null 2>"$tmp/err" && ok || bad "undo: $(cat "$tmp/err")"
base=$("$GRAFT" generate -m "$BIN" -p "$p" -n 2 2>/dev/null)
undone=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/a" -p "$p" -n 2 2>/dev/null)
[ "$undone" = "$base" ] && ok || bad "after undo: '$undone' vs unedited '$base'"
p3="Ben wanted a car, so mom gave Ben a"   # row 3, the second batch: still edited
t3=$(sed -n 3p "$tmp/stream.jsonl" | sed -E 's/.*"target": "([a-z]+)".*/\1/')
out=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/a" -p "$p3" -n 2 2>/dev/null)
case "$out" in " $t3"*) ok ;; *) bad "after undo, batch 2: '$out' (want ' $t3')" ;; esac

# capacity: 24 edits in batches of 2 need 12 blocks; said before any edit
expect_err "--grow-blocks" "too few blocks" -- "${EDIT[@]}" --blocks 5 --out "$tmp/c"
[ ! -s "$tmp/c/journal.sqlite" ] || [ "$(sqlite3 "$tmp/c/journal.sqlite" "select count(*) from edits")" -eq 0 ] && ok || bad "edits applied before the capacity error"
"${EDIT[@]}" --blocks 5 --grow-blocks --n 12 --out "$tmp/d" >/dev/null 2>"$tmp/err" && ok || bad "--grow-blocks: $(tail -2 "$tmp/err")"
expect_err "unknown MELO option" "GRACE-only option" -- "${EDIT[@]}" --replace last --out "$tmp/e"

# a model folder's editing.json fills in the options not given (models/factpara: init_radius 20)
FP=$DATA/../../models/factpara
if [ -f "$FP/editing.json" ]; then
  printf '%s\n' '{"prompt": "The mother tongue of Danielle Darrieux is", "target": "English"}' > "$tmp/one.jsonl"
  "$GRAFT" edit -m "$FP" --method melo --data "$tmp/one.jsonl" --eval-at end --no-progress --out "$tmp/f" >/dev/null 2>"$tmp/err" && ok || bad "factpara melo: $(tail -2 "$tmp/err")"
  grep -q "editing.json" "$tmp/err" && jq -e '.editor_options.init_radius == 20' "$tmp/f/summary.json" >/dev/null && ok || bad "editing.json default not applied"
  "$GRAFT" edit -m "$FP" --method melo --radius 5 --data "$tmp/one.jsonl" --eval-at end --no-progress --out "$tmp/g" >/dev/null 2>&1
  jq -e '.editor_options.init_radius == 5' "$tmp/g/summary.json" >/dev/null && ok || bad "--radius should win over editing.json"
  mkdir "$tmp/fp" && for f in "$FP"/*; do ln -s "$f" "$tmp/fp/"; done && rm "$tmp/fp/editing.json"
  echo '{"melo": 3}' > "$tmp/fp/editing.json"
  expect_err "editing.json" "malformed editing.json" -- "$GRAFT" edit -m "$tmp/fp" --method melo --data "$tmp/one.jsonl" --out "$tmp/h"
else
  echo "SKIP: models/factpara/editing.json absent: the model-defaults checks did not run" >&2
fi

cli_end melo
