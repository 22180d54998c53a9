#!/usr/bin/env bash
# cli_corpus_para.sh - `graft corpus --paraphrase`: rebuilding the paraphrase
# corpus from ../shared/data and data/relations.json reproduces the committed
# data/facts2 byte for byte; its promises hold (no held-out phrasing is
# trained, every held-out phrasing's fact is, the edit stream's rephrasings are
# not); bad arguments exit 2 and bad inputs exit 1 with a message naming the
# file. Usage: cli_corpus_para.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_corpus_para.sh GRAFT_BINARY}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${GRAFT_SHARED_DIR:-$SRC/../shared}
FACTS=$SRC/data/facts2
RELS=$SRC/data/relations.json
FILES="train.jsonl heldout_phrasings.jsonl heldout_cf_rephrases.jsonl heldout_zsre.jsonl known_facts.jsonl
       edit_stream.json unseen_facts.jsonl heldout_text.txt README.md"
. "$(dirname "$0")/lib.sh"
cli_begin corpus_para

para() { "$GRAFT" corpus --paraphrase "$@"; }

# usage: --help is 0, usage errors are 2 and write nothing
expect_rc 0 "--paraphrase --help" -- para --help
grep -q -- "--phrasings" "$tmp/out" && ok || bad "--help does not mention --phrasings"
expect_rc 0 "plain corpus --help" -- "$GRAFT" corpus --help
grep -q -- "--paraphrase" "$tmp/out" && ok || bad "graft corpus --help does not mention --paraphrase"
expect_rc 2 "unknown option" -- para --bogus --out "$tmp/u"
expect_rc 2 "--phrasings 0" -- para --phrasings 0 --out "$tmp/u"
expect_rc 2 "--held-out junk" -- para --held-out 2x --out "$tmp/u"
expect_rc 2 "negative --n-unseen" -- para --n-unseen -1 --out "$tmp/u"
expect_rc 2 "--n-edit 0" -- para --n-edit 0 --out "$tmp/u"
expect_rc 2 "stray argument" -- para --out "$tmp/u" extra
expect_rc 2 "empty --relations" -- para --relations "" --out "$tmp/u"
[ ! -e "$tmp/u" ] && ok || bad "a usage error created the output directory"

# a missing or broken relations file: exit 1 naming the file (and where in it)
expect_err "$tmp/none.json" "missing relations file" -- para --relations "$tmp/none.json" --out "$tmp/u"
printf '{"relations": [' > "$tmp/r1.json"
expect_err "r1.json: not valid JSON" "truncated relations file" -- para --relations "$tmp/r1.json" --out "$tmp/u"
printf '{"relations": {}}' > "$tmp/r2.json"
expect_err "r2.json: want an object whose field 'relations' is a non-empty list" "relations not a list" -- \
  para --relations "$tmp/r2.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is", "X is"]}]}' > "$tmp/r3.json"
expect_err "r3.json: relations[0] ('a'): counterfact[1] \"X is\" has no {} for the subject" "template without {}" -- \
  para --relations "$tmp/r3.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is {}", "{} was"]}]}' > "$tmp/r4.json"
expect_err "relations[0] ('a'): counterfact[0]" "template with two {}" -- para --relations "$tmp/r4.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is", "{} was"]}, {"name": "a", "own": ["{} x", "{} y"]}]}' \
  > "$tmp/r5.json"
expect_err "relations[1] ('a'): the name is used by relations[0] too" "duplicate relation" -- \
  para --relations "$tmp/r5.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is"], "match_only": ["{} was"]}]}' > "$tmp/r6.json"
expect_err "at least 2 are needed" "too few templates" -- para --relations "$tmp/r6.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is", "{} was"], "own": ["{} is"]}]}' > "$tmp/r7.json"
expect_err "own[0] \"{} is\" is listed twice" "template listed twice" -- para --relations "$tmp/r7.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is", 7]}]}' > "$tmp/r8.json"
expect_err "counterfact[1]: want a string" "template not a string" -- para --relations "$tmp/r8.json" --out "$tmp/u"
printf '{"relations": [{"name": "a", "counterfact": ["{} is \xff", "{} was"]}]}' > "$tmp/r9.json"
expect_err "is not valid UTF-8" "template not UTF-8" -- para --relations "$tmp/r9.json" --out "$tmp/u"
[ ! -e "$tmp/u" ] && ok || bad "a bad relations file created the output directory"

# a missing shared folder: exit 1 naming the file it looked for
expect_err "counterfact-edit.json" "missing shared folder" -- para --shared "$tmp/none" --out "$tmp/u"

DATA=$SHARED/data
if [ ! -f "$DATA/counterfact/counterfact-edit.json" ] || [ ! -f "$DATA/counterfact/counterfact-train.json" ] ||
   [ ! -f "$DATA/zsre/zsre_mend_train-1k.json" ]; then
  echo "SKIP: $DATA is absent: cannot rebuild the corpus" >&2
  echo "cli_corpus_para: $pass passed, $fail failed"
  [ $fail -eq 0 ] && exit 77
  exit 1
fi

# the committed corpus is reproduced byte for byte (into a fresh nested dir)
para --shared "$DATA" --relations "$RELS" --out "$tmp/a/facts2" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && ok || bad "graft corpus --paraphrase: exit $rc: $(head -c 300 "$tmp/err")"
grep -qE 'train.jsonl +[0-9]+ rows' "$tmp/out" && ok || bad "summary lacks the row count: $(cat "$tmp/out")"
for f in $FILES; do
  if [ ! -f "$FACTS/$f" ]; then bad "committed $FACTS/$f is missing"; continue; fi
  cmp -s "$FACTS/$f" "$tmp/a/facts2/$f" && ok || bad "$f differs from the committed data/facts2/$f"
done
[ "$(ls "$tmp/a/facts2" | sort | tr '\n' ' ')" = "$(echo $FILES | tr ' ' '\n' | sort | tr '\n' ' ')" ] && ok ||
  bad "unexpected files in the output: $(ls "$tmp/a/facts2")"
# a second run over the same folder gives the same bytes again
para --shared "$DATA" --relations "$RELS" --out "$tmp/a/facts2" >/dev/null 2>&1 && ok || bad "second run failed"
for f in $FILES; do cmp -s "$FACTS/$f" "$tmp/a/facts2/$f" || bad "second run: $f differs"; done
ok

# what the corpus promises, checked on the fresh build
if command -v jq >/dev/null 2>&1; then
  D=$tmp/a/facts2
  jq -r '.prompt' "$D/train.jsonl" | sort -u > "$tmp/tp"
  jq -r '[.prompt, .answer] | @json' "$D/train.jsonl" | sort -u > "$tmp/tpa"
  [ "$(wc -l < "$tmp/tp")" -eq "$(wc -l < "$D/train.jsonl")" ] && ok || bad "train.jsonl repeats a prompt"
  for h in heldout_phrasings heldout_cf_rephrases heldout_zsre; do
    n=$(jq -r '.prompt' "$D/$h.jsonl" | sort -u | comm -12 "$tmp/tp" - | wc -l)
    [ "$n" -eq 0 ] && ok || bad "$n prompts of $h.jsonl are in train.jsonl"
    n=$(jq -r '[.trained_prompt, .answer] | @json' "$D/$h.jsonl" | sort -u | comm -23 - "$tmp/tpa" | wc -l)
    [ "$n" -eq 0 ] && ok || bad "$n rows of $h.jsonl name a fact train.jsonl does not hold"
    [ -s "$D/$h.jsonl" ] && ok || bad "$h.jsonl is empty"
  done
  # every taught CounterFact fact has held-out phrasings; the per-fact quota holds
  n=$(jq -r 'select(.source == "cf-edit" or .source == "cf-neighbour" or .source == "cf-known") | .relation' \
      "$D/heldout_phrasings.jsonl" | sort -u | wc -l)
  [ "$n" -ge 25 ] && ok || bad "held-out phrasings cover only $n relations"
  n=$(jq -r '.[].rephrase_prompt[]' "$D/edit_stream.json" | sort -u | comm -12 "$tmp/tp" - | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n rephrasings of the edit stream are in train.jsonl"
  n=$(jq '[.[] | select((.rephrase_prompt | length) < 2)] | length' "$D/edit_stream.json")
  [ "$n" -eq 0 ] && ok || bad "$n edit records have fewer than 2 rephrasings"
  n=$(jq -r '.[] | ([.prompt, .ground_truth], [.locality_prompt, .locality_ground_truth]) | @json' \
      "$D/edit_stream.json" | sort -u | comm -23 - "$tmp/tpa" | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n edit prompts or locality prompts are not trained with their true answer"
  n=$(jq -r '.[] | [.prompt, .target_new] | @json' "$D/edit_stream.json" | sort -u | comm -12 - "$tmp/tpa" | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n edit targets are already trained"
  n=$(jq -r '[.prompt, .answer] | @json' "$D/known_facts.jsonl" | sort -u | comm -23 - "$tmp/tpa" | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n known facts are not trained"
  n=$(jq -r '.prompt' "$D/unseen_facts.jsonl" | sort -u | comm -12 "$tmp/tp" - | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n unseen facts are trained"
  n=$(wc -l < "$D/known_facts.jsonl")
  [ "$n" -ge 900 ] && ok || bad "only $n known facts"
  # no known fact shares its subject with an edit, no unseen fact with anything taught for an edit
  n=$(jq -r '.[].subject' "$D/edit_stream.json" | sort -u | comm -12 - <(jq -r '.subject' "$D/known_facts.jsonl" |
      sort -u) | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n known facts have an edited subject"
  [ "$(jq length "$D/edit_stream.json")" -ge 900 ] && ok || bad "the edit stream lost too many records"
  # every new target is a trained answer (the model has produced it before)
  n=$(jq -r '.[].target_new' "$D/edit_stream.json" | sort -u | comm -23 - <(jq -r '.answer' "$D/train.jsonl" | sort -u) | wc -l)
  [ "$n" -eq 0 ] && ok || bad "$n edit targets are no trained answer"
else
  echo "note: jq not found; the corpus invariants were not checked" >&2
fi

# the flags change what they say
para --shared "$DATA" --relations "$RELS" --out "$tmp/s" --n-edit 10 --n-known 5 --n-unseen 3 --n-zsre 4 \
  --phrasings 3 --held-out 1 >/dev/null 2>"$tmp/err" && ok || bad "small corpus: $(cat "$tmp/err")"
[ "$(wc -l < "$tmp/s/edit_stream.json")" -le 12 ] && ok || bad "--n-edit 10: edit_stream.json too long"
[ "$(wc -l < "$tmp/s/known_facts.jsonl")" -le 5 ] && ok || bad "--n-known 5: too many known facts"
[ "$(wc -l < "$tmp/s/unseen_facts.jsonl")" -le 3 ] && ok || bad "--n-unseen 3: too many unseen facts"
[ "$(wc -l < "$tmp/s/heldout_zsre.jsonl")" -eq 4 ] && ok || bad "--n-zsre 4: want 4 zsRE rephrasings"
head -1 "$tmp/s/train.jsonl" | grep -qF '{"prompt": "The mother tongue of Danielle Darrieux is", "answer": "French"}' &&
  ok || bad "first fact: $(head -1 "$tmp/s/train.jsonl")"
n=$(grep -c 'Danielle Darrieux' "$tmp/s/train.jsonl")
[ "$n" -eq 3 ] && ok || bad "--phrasings 3: Danielle Darrieux is trained in $n phrasings"
n=$(grep -c '"source": "cf-edit", "trained_prompt": "The mother tongue of Danielle Darrieux is"' \
    "$tmp/s/heldout_phrasings.jsonl")
[ "$n" -eq 1 ] && ok || bad "--held-out 1: Danielle Darrieux has $n held-out phrasings"
expect_err "--n-unseen" "more records than the file has" -- \
  para --shared "$DATA" --relations "$RELS" --out "$tmp/big" --n-edit 9000 --n-unseen 2000
[ ! -e "$tmp/big" ] && ok || bad "a failed build left an output directory"

# a broken input file: exit 1 naming the file, the row and the field
mkdir -p "$tmp/sh/counterfact" "$tmp/sh/zsre"
cp "$DATA/counterfact/counterfact-train.json" "$tmp/sh/counterfact/"
cp "$DATA/zsre/zsre_mend_train-1k.json" "$tmp/sh/zsre/"
printf '[{"case_id": 0, "prompt": "a s", "target_new": "b", "subject": "s", "ground_truth": "c", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "m"},\n {"case_id": 1, "prompt": "bad \xff", "target_new": "b", "subject": "s", "ground_truth": "c", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "m"}]\n' \
  > "$tmp/sh/counterfact/counterfact-edit.json"
expect_err "counterfact-edit.json: row 2: field 'prompt': invalid UTF-8" "invalid UTF-8 in the input" -- \
  para --shared "$tmp/sh" --out "$tmp/broken" --n-edit 1 --n-unseen 0
[ ! -e "$tmp/broken" ] && ok || bad "a failed build left an output directory"
# records no relation knows are left out and counted, not a crash
printf '[{"case_id": 0, "prompt": "a s", "target_new": "b", "subject": "s", "ground_truth": "c", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "m"}]\n' \
  > "$tmp/sh/counterfact/counterfact-edit.json"
para --shared "$tmp/sh" --out "$tmp/odd" --n-edit 1 --n-unseen 0 --n-known 3 >/dev/null 2>"$tmp/err" && ok ||
  bad "a record in no relation: $(cat "$tmp/err")"
grep -qF '| template in no relation (left out) | 1 |' "$tmp/odd/README.md" 2>/dev/null && ok ||
  bad "README does not count the record in no relation"

cli_end cli_corpus_para
