#!/usr/bin/env bash
# cli_edit.sh - graft edit / edits / --adaptor as a user runs them, including
# a stream killed with SIGKILL and resumed: nothing acknowledged is lost,
# nothing applied twice, and the final codebook is byte-identical to an
# uninterrupted run. Usage: cli_edit.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_edit.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
BIN=$DATA/stories260K.bin
. "$(dirname "$0")/lib.sh"
cli_begin edit

# a stream of 40 requests in the model's world (names x objects)
names=(Lily Tom Ben Sue Max Mia Sam Anna)
things=(ball tree car cat dog cake hat box)
for i in $(seq 0 39); do
  n=${names[$((i % 8))]}; t=${things[$(((i * 3 + 1) % 8))]}; u=${things[$(((i * 5 + 2) % 8))]}
  printf '{"prompt": "%s wanted a %s, so mom gave %s a", "target": "%s", "rephrases": ["Mom gave %s a"], "locality": [{"prompt": "%s went to the", "answer": "park"}]}\n' \
    "$n" "$t" "$n" "$u" "$n" "$n"
done > "$tmp/stream.jsonl"
EDIT=("$GRAFT" edit -m "$BIN" --data "$tmp/stream.jsonl" --eval-every 10 --layer 1 --n-iter 30 --no-progress)

# an uninterrupted run
"${EDIT[@]}" --out "$tmp/a" >/dev/null 2>"$tmp/err" && ok || bad "edit run: $(tail -3 "$tmp/err")"
[ "$(wc -l < "$tmp/a/results.jsonl")" -eq 5 ] && ok || bad "results.jsonl should have 5 points (0,10,20,30,40)"
for f in summary.json retention.svg codebook.safetensors journal.sqlite; do [ -s "$tmp/a/$f" ] && ok || bad "missing $f"; done
grep -q '"definitions"' "$tmp/a/summary.json" && grep -q 'teacher-forced' "$tmp/a/summary.json" && ok || bad "summary lacks definitions"
last=$(tail -1 "$tmp/a/results.jsonl")
echo "$last" | grep -q '"edits": 40' && ok || bad "last point: $last"
grep -q '<svg' "$tmp/a/retention.svg" && ok || bad "plot is not SVG"

# the same folder again without --resume is refused
"${EDIT[@]}" --out "$tmp/a" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q -- "--resume" "$tmp/err" && ok || bad "rerun without --resume: exit $rc $(cat "$tmp/err")"

# killed with SIGKILL mid-stream, then resumed
"${EDIT[@]}" --out "$tmp/b" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do
  n=$(sqlite3 "$tmp/b/journal.sqlite" "select count(*) from edits" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 12 ] && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
committed=$(sqlite3 "$tmp/b/journal.sqlite" "select count(*) from edits" 2>/dev/null || echo "?")
"${EDIT[@]}" --out "$tmp/b" --resume >/dev/null 2>"$tmp/err" && ok || bad "resume: $(tail -3 "$tmp/err")"
n=$(sqlite3 "$tmp/b/journal.sqlite" "select count(*) from edits")
seqs=$(sqlite3 "$tmp/b/journal.sqlite" "select count(distinct seq) from edits")
[ "$n" -eq 40 ] && [ "$seqs" -eq 40 ] && ok || bad "after resume: $n journal rows, $seqs distinct (killed at $committed)"
cmp -s "$tmp/a/codebook.safetensors" "$tmp/b/codebook.safetensors" && ok || bad "resumed codebook differs from the uninterrupted run (killed at $committed)"
[ "$(wc -l < "$tmp/b/results.jsonl")" -eq 5 ] && ok || bad "resumed results.jsonl: $(wc -l < "$tmp/b/results.jsonl") lines"
strip() { sed -E 's/"(sec_per_edit|elapsed_s)": [^,}]*//g' "$1"; }
[ "$(strip "$tmp/a/results.jsonl")" = "$(strip "$tmp/b/results.jsonl")" ] && ok || bad "resumed metrics differ"

# adaptor: generate through the edits; list / show / undo
p="Lily wanted a tree, so mom gave Lily a"
t=$(sed -n 1p "$tmp/stream.jsonl" | sed -E 's/.*"target": "([a-z]+)".*/\1/')
out=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/a" -p "$p" -n 3 2>"$tmp/err")
case "$out" in " $t"*) ok ;; *) bad "adaptor generate: '$out' (want ' $t...') $(cat "$tmp/err")" ;; esac
"$GRAFT" edits list --adaptor "$tmp/a" > "$tmp/list" 2>&1 && [ "$(grep -c ' edit ' "$tmp/list")" -eq 40 ] && ok || bad "edits list: $(head -3 "$tmp/list")"
"$GRAFT" edits show 1 --adaptor "$tmp/a" | grep -q '"action": "add"' && ok || bad "edits show"
"$GRAFT" edits undo 1 --adaptor "$tmp/a" -m "$BIN" >/dev/null 2>"$tmp/err" && ok || bad "undo: $(cat "$tmp/err")"
"$GRAFT" edits list --adaptor "$tmp/a" | grep -q "undoes edit 1" && ok || bad "undo not listed"
"$GRAFT" edits undo 1 --adaptor "$tmp/a" -m "$BIN" >/dev/null 2>"$tmp/err"; [ $? -ne 0 ] && grep -q "already undone" "$tmp/err" && ok || bad "double undo"
base=$("$GRAFT" generate -m "$BIN" -p "$p" -n 3 2>/dev/null)
undone=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/a" -p "$p" -n 3 2>/dev/null)
[ "$undone" = "$base" ] && ok || bad "after undo: '$undone' vs unedited '$base'"
"$GRAFT" score -m "$BIN" --adaptor "$tmp/a" --text "Lily went to the park." | grep -q '"nll"' && ok || bad "score --adaptor"

# the 60 story edits of data/stories (issue 9): with the default options every
# edit takes, is kept, and an adaptor generates the target
STORIES=$DATA/../../data/stories/edits.jsonl
if [ -f "$STORIES" ]; then
  "$GRAFT" edit -m "$BIN" --data "$STORIES" --eval-at end --out "$tmp/s" --no-progress >/dev/null 2>"$tmp/err" && ok || bad "story edits: $(tail -3 "$tmp/err")"
  grep -q "every edit took" "$tmp/err" && ok || bad "story edits: no 'every edit took' line: $(tail -2 "$tmp/err")"
  grep -Eq '"failed_edits":[[:space:]]*0,' "$tmp/s/summary.json" && ok || bad "story edits: summary failed_edits"
  last=$(tail -1 "$tmp/s/results.jsonl")
  echo "$last" | grep -q '"es_gen": 1,' && echo "$last" | grep -q '"err_gen": 1,' && ok || bad "story edits: ES/ERR not 1: $last"
  out=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/s" -p "Tom had a big red" -n 3 --temp 0 2>/dev/null)
  case "$out" in " kite"*) ok ;; *) bad "adaptor: 'Tom had a big red' -> '$out' (want ' kite')" ;; esac
  # the paper's loop is still there
  "$GRAFT" edit -m "$BIN" --data "$STORIES" --n 3 --paper --eval-at end --out "$tmp/p" --no-progress >/dev/null 2>"$tmp/err" && ok || bad "--paper: $(tail -2 "$tmp/err")"
  grep -Eq '"train":[[:space:]]*"fixed"' "$tmp/p/summary.json" && grep -Eq '"replace":[[:space:]]*"prompt"' "$tmp/p/summary.json" &&
    grep -Eq '"init":[[:space:]]*"cold"' "$tmp/p/summary.json" && ok || bad "--paper options not recorded"
  # an edit that cannot take (no training steps from a random value) is
  # reported, and --require-success stops before committing it
  sed -n 4p "$STORIES" > "$tmp/one.jsonl"
  NOTRAIN=("$GRAFT" edit -m "$BIN" --data "$tmp/one.jsonl" --init cold --max-iter 0 --eval-at end --no-progress)
  "${NOTRAIN[@]}" --out "$tmp/f1" >/dev/null 2>"$tmp/err" && grep -q "1 of 1 edits did not take" "$tmp/err" && ok || bad "failed edit not reported: $(cat "$tmp/err")"
  tr -d ' \t\n' < "$tmp/f1/summary.json" | grep -q '"failed_rows":\[1\]'  && ok || bad "summary failed_rows"
  [ "$(sqlite3 "$tmp/f1/journal.sqlite" "select reproduced from edits")" = 0 ] && ok || bad "journal does not record the failure"
  "${NOTRAIN[@]}" --out "$tmp/f2" --require-success >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -ne 0 ] && grep -q "did not take" "$tmp/err" && grep -q "row 1" "$tmp/err" && ok || bad "--require-success: exit $rc $(cat "$tmp/err")"
  [ "$(sqlite3 "$tmp/f2/journal.sqlite" "select count(*) from edits")" = 0 ] && ok || bad "--require-success committed the failed edit"
else
  echo "skip: $STORIES is missing"
fi

# one rule for the target's tokens: in context, with or without its leading space
a=$("$GRAFT" tokenize -m "$BIN" --text "Tom had a big red" --target " kite")
b=$("$GRAFT" tokenize -m "$BIN" --text "Tom had a big red" --target "kite")
c=$("$GRAFT" tokenize -m "$BIN" --text "Tom had a big red kite")
[ "$a" = "$b" ] && ok || bad "tokenize --target: '$a' vs '$b'"
tgt=$(echo "$a" | sed -E 's/.*"target": \[([0-9, ]*)\].*/\1/')
case "$c" in *"$tgt]") ok ;; *) bad "target tokens $tgt are not the tail of $c" ;; esac

# a bad option value names the choices
"$GRAFT" edit -m "$BIN" --data "$tmp/stream.jsonl" --train bogus --out "$tmp/e" --no-progress >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "want success or fixed" "$tmp/err" && ok || bad "--train bogus: exit $rc $(cat "$tmp/err")"

# bad input
printf '{"prompt": "a", "target": "b"}\n{"prompt": "c"}\n' > "$tmp/bad.jsonl"
"$GRAFT" edit -m "$BIN" --data "$tmp/bad.jsonl" --out "$tmp/c" --no-progress >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "bad.jsonl" "$tmp/err" && grep -q "row 2" "$tmp/err" && ok || bad "malformed row: exit $rc: $(cat "$tmp/err")"
"$GRAFT" edit -m "$BIN" --out "$tmp/d" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "edit without --data: want exit 2"
"$GRAFT" generate -m "$BIN" --adaptor "$tmp/nowhere" -p x >/dev/null 2>"$tmp/err"; [ $? -ne 0 ] && grep -q "journal" "$tmp/err" && ok || bad "missing adaptor"

cli_end cli_edit
