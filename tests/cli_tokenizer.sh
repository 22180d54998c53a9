#!/usr/bin/env bash
# cli_tokenizer.sh - `graft tokenizer learn` and `graft tokenizer stats`: help,
# usage errors exit 2 and write nothing, bad files exit 1 naming the file and
# line, a tokenizer learnt from a small file and from data/facts2 is written as
# tokenizer.json + vocab.json + merges.txt, loads with `graft tokenize
# --tokenizer DIR`, and is the same bytes when learnt again.
# Usage: cli_tokenizer.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_tokenizer.sh GRAFT_BINARY}
SRC=$(cd "$(dirname "$0")/.." && pwd)
TEST_DATA=${GRAFT_TEST_DATA:-$SRC/tests/data}
. "$(dirname "$0")/lib.sh"
cli_begin tokenizer


# a small file of facts, and one of plain text
cat >"$tmp/facts.jsonl" <<'EOF'
{"prompt": "The mother tongue of Danielle Darrieux is", "answer": "French"}
{"prompt": "The native language of Danielle Darrieux is", "answer": "French"}

{"prompt": "The mother tongue of Michel Rocard is", "answer": "French"}
{"prompt": "Toko Yasuda, the", "answer": "guitar"}
{"text": "Toko Yasuda plays the guitar. Toko Yasuda plays the guitar."}
EOF
printf 'the cat sat on the mat\nthe cat ate the rat\n\xff\xfe broken bytes \xc3\n' >"$tmp/plain.txt"

# usage: --help is 0 and mentions the options; usage errors are 2 and write nothing
expect_rc 0 "tokenizer --help" -- "$GRAFT" tokenizer --help
grep -q -- "--vocab" "$tmp/out" && ok || bad "--help does not mention --vocab"
expect_rc 0 "tokenizer learn --help" -- "$GRAFT" tokenizer learn --help
grep -q -- "merges.txt" "$tmp/out" && ok || bad "learn --help does not say what it writes"
"$GRAFT" --help | grep -q "tokenizer" && ok || bad "graft --help does not list the tokenizer command"
expect_rc 2 "no subcommand" -- "$GRAFT" tokenizer
expect_rc 2 "unknown subcommand" -- "$GRAFT" tokenizer unlearn
expect_rc 2 "unknown option" -- "$GRAFT" tokenizer learn --bogus --data "$tmp/facts.jsonl" --vocab 300 --out "$tmp/u"
expect_rc 2 "no --data" -- "$GRAFT" tokenizer learn --vocab 300 --out "$tmp/u"
expect_rc 2 "no --vocab" -- "$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --out "$tmp/u"
expect_rc 2 "no --out" -- "$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 300
expect_rc 2 "--vocab 256" -- "$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 256 --out "$tmp/u"
grep -qF -- "--vocab" "$tmp/err" && ok || bad "--vocab 256: the message does not name the option"
expect_rc 2 "--vocab junk" -- "$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 3k --out "$tmp/u"
expect_rc 2 "stray argument" -- "$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 300 --out "$tmp/u" extra
expect_rc 2 "stats without a tokenizer" -- "$GRAFT" tokenizer stats --data "$tmp/facts.jsonl"
expect_rc 2 "stats with two tokenizers" -- "$GRAFT" tokenizer stats --bytes --tokenizer "$tmp" --data "$tmp/facts.jsonl"
expect_rc 2 "stats without --data" -- "$GRAFT" tokenizer stats --bytes
[ ! -e "$tmp/u" ] && ok || bad "a usage error created the output folder"

# bad inputs: exit 1, naming the file (and the line)
expect_err "$tmp/none.jsonl" "missing file" -- "$GRAFT" tokenizer learn --data "$tmp/none.jsonl" --vocab 300 --out "$tmp/u"
printf '{"prompt": "a", "answer": "b"}\n{"prompt": "a"\n' >"$tmp/broken.jsonl"
expect_err "broken.jsonl: line 2: not valid JSON" "broken JSON" -- "$GRAFT" tokenizer learn --data "$tmp/broken.jsonl" --vocab 300 --out "$tmp/u"
printf '["prompt", "answer"]\n' >"$tmp/array.jsonl"
expect_err "array.jsonl: line 1: not a JSON object" "a row that is not an object" -- "$GRAFT" tokenizer learn --data "$tmp/array.jsonl" --vocab 300 --out "$tmp/u"
printf '{"text": "a"} x\n' >"$tmp/trailing.jsonl"
expect_err "trailing.jsonl: line 1: not valid JSON" "junk after the object" -- "$GRAFT" tokenizer learn --data "$tmp/trailing.jsonl" --vocab 300 --out "$tmp/u"
printf '{"prompt": "a", "answer": "b"}\n\n{"prompt": "a"}\n' >"$tmp/noanswer.jsonl"
expect_err 'line 3: field "answer" is missing' "row without an answer" -- "$GRAFT" tokenizer learn --data "$tmp/noanswer.jsonl" --vocab 300 --out "$tmp/u"
printf '{"text": 5}\n' >"$tmp/number.jsonl"
expect_err 'field "text" is not a string' "text not a string" -- "$GRAFT" tokenizer learn --data "$tmp/number.jsonl" --vocab 300 --out "$tmp/u"
printf '\n  \n' >"$tmp/blank.txt"
expect_err "blank.txt: no rows" "blank file" -- "$GRAFT" tokenizer learn --data "$tmp/blank.txt" --vocab 300 --out "$tmp/u"
[ ! -e "$tmp/u" ] && ok || bad "a failed run created the output folder"

# learn from the small fact file: the summary, the files, and loading them
"$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 300 --out "$tmp/a/tok" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && ok || bad "learn: exit $rc: $(head -c 300 "$tmp/err")"
grep -qE '^learned 300 tokens: 256 bytes \+ 43 merges' "$tmp/out" && ok || bad "learn summary: $(head -2 "$tmp/out")"
grep -qE 'facts.jsonl: 5 lines, [0-9.]+ tokens per line .*tokens per prompt, [0-9.]+ per answer, [0-9.]+% single-token answers' "$tmp/out" &&
  ok || bad "learn stats line: $(cat "$tmp/out")"
for f in tokenizer.json vocab.json merges.txt tokenizer_config.json special_tokens_map.json; do
  [ -s "$tmp/a/tok/$f" ] && ok || bad "learn did not write $f"
done
[ "$(($(wc -l <"$tmp/a/tok/merges.txt") - 1))" -eq 43 ] && ok || bad "merges.txt: $(wc -l <"$tmp/a/tok/merges.txt") lines for 43 merges"
"$GRAFT" tokenize --tokenizer "$tmp/a/tok" --text "The mother tongue of Danielle Darrieux is" --target "French" >"$tmp/ids" 2>"$tmp/err" &&
  ok || bad "graft tokenize --tokenizer DIR: $(cat "$tmp/err")"
grep -qE '^\{"prompt": \[[0-9, ]+\], "target": \[[0-9, ]+\], "merged": false\}$' "$tmp/ids" && ok || bad "tokenize: $(cat "$tmp/ids")"
# ids round-trip to the text
ids=$("$GRAFT" tokenize --tokenizer "$tmp/a/tok" --text "Toko Yasuda plays the guitar.")
back=$("$GRAFT" tokenize --tokenizer "$tmp/a/tok" --decode "$ids")
[ "$back" = "Toko Yasuda plays the guitar." ] && ok || bad "decode(encode(x)) = '$back'"
# a frequent word of the file is one token
n=$("$GRAFT" tokenize --tokenizer "$tmp/a/tok" --text " Darrieux" | tr -cd ',' | wc -c)
[ "$n" -le 1 ] && ok || bad "' Darrieux' is $((n + 1)) tokens after learning on a file that repeats it"
# learning again gives the same bytes; an existing folder is written over
"$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 300 --out "$tmp/b" >/dev/null 2>&1 && ok || bad "second learn failed"
for f in tokenizer.json vocab.json merges.txt; do cmp -s "$tmp/a/tok/$f" "$tmp/b/$f" && ok || bad "$f differs on a second run"; done
"$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 300 --out "$tmp/b" >/dev/null 2>&1 && ok || bad "learning into an existing folder failed"
# a file too small for the size asked: fewer ids, and it says so
"$GRAFT" tokenizer learn --data "$tmp/facts.jsonl" --vocab 5000 --out "$tmp/c" >"$tmp/out" 2>&1 && ok || bad "large --vocab failed: $(cat "$tmp/out")"
grep -q "asked for 5000" "$tmp/out" && ok || bad "no note that fewer ids were learnt: $(head -3 "$tmp/out")"

# plain text, invalid UTF-8 included
"$GRAFT" tokenizer learn --data "$tmp/plain.txt" --vocab 270 --out "$tmp/p" >"$tmp/out" 2>"$tmp/err" && ok || bad "plain text: $(cat "$tmp/err")"
grep -qE 'plain.txt: 3 lines, [0-9.]+ tokens per line \([0-9.]+ bytes\)$' "$tmp/out" && ok || bad "plain stats: $(cat "$tmp/out")"
"$GRAFT" tokenize --tokenizer "$tmp/p/tokenizer.json" --text "the cat" >/dev/null 2>&1 && ok || bad "tokenizer.json does not load"

# stats: the byte tokenizer has one token per byte, so an answer is its length + 1 (the space)
"$GRAFT" tokenizer stats --bytes --data "$tmp/facts.jsonl" >"$tmp/out" 2>"$tmp/err" && ok || bad "stats --bytes: $(cat "$tmp/err")"
grep -qE '^tokenizer <bytes>: 257 ids$' "$tmp/out" && ok || bad "stats header: $(cat "$tmp/out")"
grep -qE '0\.0% single-token answers' "$tmp/out" && ok || bad "byte answers are single tokens?: $(cat "$tmp/out")"
"$GRAFT" tokenizer stats --tokenizer "$tmp/a/tok" --data "$tmp/facts.jsonl" --data "$tmp/plain.txt" >"$tmp/out" 2>"$tmp/err" &&
  ok || bad "stats --tokenizer: $(cat "$tmp/err")"
[ "$(grep -c 'tokens per line' "$tmp/out")" -eq 2 ] && ok || bad "stats over two files: $(cat "$tmp/out")"
if [ -d "$TEST_DATA/gpt2-tokenizer" ]; then
  "$GRAFT" tokenizer stats --tokenizer "$TEST_DATA/gpt2-tokenizer" --data "$tmp/facts.jsonl" >"$tmp/out" 2>&1 &&
    grep -q '100.0% single-token answers' "$tmp/out" && ok || bad "GPT-2 stats: $(cat "$tmp/out")"
fi

# the fact corpus this is for: 4,096 ids, quickly, and the files load
FACTS2=$SRC/data/facts2/train.jsonl
if [ -f "$FACTS2" ]; then
  start=$(date +%s)
  "$GRAFT" tokenizer learn --data "$FACTS2" --vocab 4096 --out "$tmp/f" >"$tmp/out" 2>"$tmp/err"; rc=$?
  secs=$(($(date +%s) - start))
  [ $rc -eq 0 ] && ok || bad "learn on $FACTS2: exit $rc: $(head -c 300 "$tmp/err")"
  [ $secs -lt 30 ] && ok || bad "learning 4096 ids on $FACTS2 took $secs s"
  grep -q '^learned 4096 tokens: 256 bytes + 3839 merges' "$tmp/out" && ok || bad "facts2 summary: $(head -2 "$tmp/out")"
  "$GRAFT" tokenize --tokenizer "$tmp/f" --text "The mother tongue of Danielle Darrieux is" --target "French" >"$tmp/ids" 2>&1 &&
    grep -q '"target": \[[0-9]*\]' "$tmp/ids" && ok || bad "' French' is not one token: $(cat "$tmp/ids")"
else
  echo "note: $FACTS2 is absent: the corpus run is skipped" >&2
fi

cli_end cli_tokenizer
