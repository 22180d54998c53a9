#!/usr/bin/env bash
# cli_corpus.sh - `graft corpus`: rebuilding the fact corpus from ../shared/data
# reproduces the committed data/facts byte for byte; bad arguments exit 2 and
# bad inputs exit 1 with a message naming the file. Usage: cli_corpus.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_corpus.sh GRAFT_BINARY}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${GRAFT_SHARED_DIR:-$SRC/../shared}
FACTS=$SRC/data/facts
FILES="train.jsonl heldout_templates.jsonl known_facts.jsonl edit_stream.json heldout_text.txt README.md"
. "$(dirname "$0")/lib.sh"
cli_begin corpus


# usage: --help is 0, usage errors are 2 and write nothing
expect_rc 0 "corpus --help" -- "$GRAFT" corpus --help
grep -q -- "--n-edit" "$tmp/out" && ok || bad "--help does not mention --n-edit"
expect_rc 2 "unknown option" -- "$GRAFT" corpus --bogus --out "$tmp/u"
expect_rc 2 "non-numeric --n-edit" -- "$GRAFT" corpus --n-edit many --out "$tmp/u"
expect_rc 2 "--n-edit 0" -- "$GRAFT" corpus --n-edit 0 --out "$tmp/u"
expect_rc 2 "negative --n-known" -- "$GRAFT" corpus --n-known -1 --out "$tmp/u"
expect_rc 2 "--n-heldout-text trailing junk" -- "$GRAFT" corpus --n-heldout-text 5x --out "$tmp/u"
expect_rc 2 "stray argument" -- "$GRAFT" corpus --out "$tmp/u" extra
expect_rc 2 "--out without a value" -- "$GRAFT" corpus --out
expect_rc 2 "empty --shared" -- "$GRAFT" corpus --shared "" --out "$tmp/u"
[ ! -e "$tmp/u" ] && ok || bad "a usage error created the output directory"

# a missing shared folder: exit 1 naming the file it looked for
expect_err "counterfact-edit.json" "missing shared folder" -- "$GRAFT" corpus --shared "$tmp/none" --out "$tmp/u"

DATA=$SHARED/data
if [ ! -f "$DATA/counterfact/counterfact-edit.json" ] || [ ! -f "$DATA/zsre/zsre_mend_train-1k.json" ]; then
  echo "SKIP: $DATA is absent: cannot rebuild the corpus" >&2
  echo "cli_corpus: $pass passed, $fail failed"
  [ $fail -eq 0 ] && exit 77
  exit 1
fi

# the committed corpus is reproduced byte for byte (into a fresh nested dir)
"$GRAFT" corpus --shared "$DATA" --out "$tmp/a/facts" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && ok || bad "graft corpus: exit $rc: $(head -c 300 "$tmp/err")"
grep -qE 'train.jsonl +[0-9]+ facts' "$tmp/out" && ok || bad "summary lacks the fact count: $(cat "$tmp/out")"
for f in $FILES; do
  if [ ! -f "$FACTS/$f" ]; then bad "committed $FACTS/$f is missing"; continue; fi
  cmp -s "$FACTS/$f" "$tmp/a/facts/$f" && ok || bad "$f differs from the committed data/facts/$f"
done
[ "$(ls "$tmp/a/facts" | sort | tr '\n' ' ')" = "$(echo $FILES | tr ' ' '\n' | sort | tr '\n' ' ')" ] && ok ||
  bad "unexpected files in the output: $(ls "$tmp/a/facts")"
# a second run over the same folder gives the same bytes again
"$GRAFT" corpus --shared "$DATA" --out "$tmp/a/facts" >/dev/null 2>&1 && ok || bad "second run failed"
for f in $FILES; do cmp -s "$FACTS/$f" "$tmp/a/facts/$f" || bad "second run: $f differs"; done
ok

# the flags change what they say
"$GRAFT" corpus --shared "$DATA" --out "$tmp/s" --n-edit 10 --n-known 5 --n-heldout-text 3 >/dev/null 2>"$tmp/err" && ok ||
  bad "small corpus: $(cat "$tmp/err")"
[ "$(wc -l < "$tmp/s/edit_stream.json")" -eq 12 ] && ok || bad "--n-edit 10: edit_stream.json has $(wc -l < "$tmp/s/edit_stream.json") lines"
[ "$(wc -l < "$tmp/s/known_facts.jsonl")" -le 5 ] && ok || bad "--n-known 5: too many known facts"
[ "$(wc -l < "$tmp/s/heldout_text.txt")" -le 3 ] && ok || bad "--n-heldout-text 3: too many sentences"
head -1 "$tmp/s/train.jsonl" | grep -qF '{"prompt": "The mother tongue of Danielle Darrieux is", "answer": "French"}' && ok ||
  bad "first fact: $(head -1 "$tmp/s/train.jsonl")"
expect_err "--n-edit 20000" "more records than the file has" -- "$GRAFT" corpus --shared "$DATA" --out "$tmp/big" --n-edit 20000

# a broken input file: exit 1 naming the file, the row and the field
mkdir -p "$tmp/sh/counterfact" "$tmp/sh/zsre"
cp "$DATA/counterfact/counterfact-train.json" "$tmp/sh/counterfact/"
cp "$DATA/zsre/zsre_mend_train-1k.json" "$tmp/sh/zsre/"
printf '[{"case_id": 0, "prompt": "a", "target_new": "b", "subject": "s", "ground_truth": "c", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "m"},\n {"case_id": 1, "prompt": "bad \xff", "target_new": "b", "subject": "s", "ground_truth": "c", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "m"}]\n' \
  > "$tmp/sh/counterfact/counterfact-edit.json"
expect_err "counterfact-edit.json: row 2: field 'prompt': invalid UTF-8" "invalid UTF-8 in the input" -- \
  "$GRAFT" corpus --shared "$tmp/sh" --out "$tmp/broken" --n-edit 1 --n-known 5
[ ! -e "$tmp/broken" ] && ok || bad "a failed build left an output directory"

cli_end cli_corpus
