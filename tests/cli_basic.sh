#!/usr/bin/env bash
# cli_basic.sh - the graft command line as a user runs it: outputs, exit codes
# and the messages for bad input. Usage: cli_basic.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_basic.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
SHARED=${GRAFT_SHARED_DIR:-}
. "$(dirname "$0")/lib.sh"
cli_begin cli

# expect_rc WANT DESCRIPTION -- command...
expect_rc() {
  local want=$1 what=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "$what: exit $rc, want $want; stderr: $(head -c 300 "$tmp/err")"; fi
}
# expect_err SUBSTRING DESCRIPTION -- command...  (non-zero exit, message on stderr)
expect_err() {
  local sub=$1 what=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -ne 0 ] && grep -qF -- "$sub" "$tmp/err"; then ok
  else bad "$what: exit $rc, stderr '$(head -c 300 "$tmp/err")' lacks '$sub'"; fi
}

BIN=$DATA/stories260K.bin
HF=$DATA/llama-stories260K-hf
TOK=$DATA/tok512.bin

# --help everywhere, usage errors exit 2
expect_rc 0 "graft --help" -- "$GRAFT" --help
for c in generate score tokenize inspect bench edit edits report eval compare train corpus stats export; do
  expect_rc 0 "$c --help" -- "$GRAFT" $c --help
done
expect_rc 2 "unknown command" -- "$GRAFT" frobnicate
expect_rc 2 "unknown option" -- "$GRAFT" generate --bogus
expect_rc 2 "bad -n" -- "$GRAFT" generate -m "$BIN" -n many
expect_rc 2 "score without input" -- "$GRAFT" score -m "$BIN"

# greedy generation from the real stories260K, as llama2.c's run.c prints it
want="Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
out=$("$GRAFT" generate -m "$BIN" -n 60 --temp 0 2>"$tmp/err")
case "$out" in "$want"*) ok ;; *) bad "generate .bin: '$out'" ;; esac
out=$("$GRAFT" generate -m "$HF" --tokenizer "$TOK" -n 60 --temp 0 2>"$tmp/err")
case "$out" in "$want"*) ok ;; *) bad "generate HF folder: '$out'" ;; esac
# sampling is reproducible with a seed
a=$("$GRAFT" generate -m "$BIN" -n 20 --temp 0.9 --seed 5 2>/dev/null)
b=$("$GRAFT" generate -m "$BIN" -n 20 --temp 0.9 --seed 5 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "seeded sampling differs: '$a' vs '$b'"

# score prints one JSON object; the model's own greedy text scores low
out=$("$GRAFT" score -m "$BIN" --text "$want" 2>"$tmp/err")
echo "$out" | grep -qE '^\{"tokens": [0-9]+, "scored": [0-9]+, "nll": [0-9.]+, "ppl": [0-9.]+\}$' && ok || bad "score output '$out'"
nll=$(echo "$out" | sed -E 's/.*"nll": ([0-9.]+).*/\1/')
awk -v x="$nll" 'BEGIN{exit !(x < 1.0)}' && ok || bad "greedy text nll $nll not < 1"
# a long text is scored in windows: every token after the first counted once
python3 -c "print(' '.join(['The cat sat on the mat and looked at the dog.']*120))" > "$tmp/long.txt" 2>/dev/null ||
  for i in $(seq 120); do printf 'The cat sat on the mat and looked at the dog. '; done > "$tmp/long.txt"
out=$("$GRAFT" score -m "$BIN" --text-file "$tmp/long.txt" 2>"$tmp/err")
n=$(echo "$out" | sed -E 's/.*"tokens": ([0-9]+).*/\1/'); k=$(echo "$out" | sed -E 's/.*"scored": ([0-9]+).*/\1/')
[ -n "$n" ] && [ "$n" -gt 512 ] && [ "$k" -eq $((n-1)) ] && ok || bad "windowed score: '$out' $(cat "$tmp/err")"

# tokenize round trip
ids=$("$GRAFT" tokenize -m "$BIN" --text "Lily saw a big red ball." 2>"$tmp/err")
echo "$ids" | grep -qE '^\[[0-9, ]+\]$' && ok || bad "tokenize output '$ids'"
txt=$("$GRAFT" tokenize --tokenizer "$TOK" --decode "$(echo "$ids" | tr -d '[]')" 2>"$tmp/err")
[ "$txt" = " Lily saw a big red ball." ] || [ "$txt" = "Lily saw a big red ball." ] && ok || bad "decode gave '$txt'"
if [ -d "$DATA/gpt2-tokenizer" ]; then
  ids=$("$GRAFT" tokenize --tokenizer "$DATA/gpt2-tokenizer" --text "Hello world" 2>"$tmp/err")
  [ "$ids" = "[15496, 995]" ] && ok || bad "gpt2 tokenize 'Hello world' gave '$ids'"
fi

# inspect
"$GRAFT" inspect -m "$BIN" --json >"$tmp/out" 2>"$tmp/err" && grep -q '"n_params": ' "$tmp/out" && grep -q '"arch": "llama"' "$tmp/out" && ok || bad "inspect json: $(cat "$tmp/out" "$tmp/err")"

# bad input: each gives a message naming the problem and a non-zero exit
expect_err "no-such-model" "missing model" -- "$GRAFT" generate -m "$tmp/no-such-model"
head -c 5000 "$HF/model.safetensors" > "$tmp/trunc.safetensors"
mkdir -p "$tmp/trunc"; cp "$HF/config.json" "$tmp/trunc/"; cp "$tmp/trunc.safetensors" "$tmp/trunc/model.safetensors"
expect_err "model.safetensors" "truncated safetensors" -- "$GRAFT" inspect -m "$tmp/trunc"
mkdir -p "$tmp/badcfg"; echo '{"model_type": "llama", "hidden_size": ' > "$tmp/badcfg/config.json"; cp "$HF/model.safetensors" "$tmp/badcfg/"
expect_err "config.json" "config not JSON" -- "$GRAFT" inspect -m "$tmp/badcfg"
mkdir -p "$tmp/nokey"; sed 's/"num_hidden_layers": 5,//' "$HF/config.json" > "$tmp/nokey/config.json"; cp "$HF/model.safetensors" "$tmp/nokey/"
expect_err "num_hidden_layers" "config lacks a key" -- "$GRAFT" inspect -m "$tmp/nokey"
head -c 1000 "$BIN" > "$tmp/trunc.bin"
expect_err "trunc.bin" "truncated llama2.c checkpoint" -- "$GRAFT" inspect -m "$tmp/trunc.bin" --tokenizer "$TOK"
expect_err "outside the vocabulary" "token id out of range" -- "$GRAFT" score -m "$BIN" --ids 1,2,99999
expect_err "bad token id list" "malformed id list" -- "$GRAFT" score -m "$BIN" --ids 1,x,3
head -c 3000 "$TOK" > "$tmp/tok_trunc.bin"
expect_err "tok_trunc.bin" "truncated tokenizer" -- "$GRAFT" generate -m "$BIN" --tokenizer "$tmp/tok_trunc.bin"
long=$(for i in $(seq 700); do printf 'word '; done)
expect_err "context" "prompt longer than the context" -- "$GRAFT" generate -m "$BIN" -p "$long" -n 5
printf 'bad \xff\xfe utf8' > "$tmp/bad.txt"
"$GRAFT" score -m "$BIN" --text-file "$tmp/bad.txt" >"$tmp/out" 2>"$tmp/err"; rc=$?
# invalid UTF-8 either scores (byte fallback) or fails cleanly; never a crash
[ $rc -eq 0 ] || [ $rc -eq 1 ] && ok || bad "invalid UTF-8 text: exit $rc"

cli_end cli_basic
