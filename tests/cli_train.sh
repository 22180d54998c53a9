#!/usr/bin/env bash
# cli_train.sh - `graft train` as a user runs it: training from a config, a
# preset and a checkpoint; the Hugging Face folder it writes loads back into
# the other commands; --stop-after / Ctrl-C and --resume end on the same
# bytes as an uninterrupted run; usage errors exit 2, bad data exits 1 with
# the row named. Usage: cli_train.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_train.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
. "$(dirname "$0")/lib.sh"
cli_begin cli_train
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# expect_rc WANT DESCRIPTION -- command...
expect_rc() {
  local want=$1 what=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "$what: exit $rc, want $want; stderr: $(head -c 400 "$tmp/err")"; fi
}
# expect_err RC SUBSTRING DESCRIPTION -- command...  (exit RC, message on stderr)
expect_err() {
  local want=$1 sub=$2 what=$3; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -eq "$want" ] && grep -qF -- "$sub" "$tmp/err"; then ok
  else bad "$what: exit $rc (want $want), stderr '$(head -c 400 "$tmp/err")' lacks '$sub'"; fi
}

# A small corpus and a tiny GPT-2 config over bytes.
for i in $(seq 300); do
  case $((i % 4)) in
    0) printf 'alice lives in paris. ' ;; 1) printf 'bob lives in rome. ' ;;
    2) printf 'carol lives in oslo. ' ;; 3) printf 'dave lives in lima. ' ;;
  esac
done > "$tmp/corpus.txt"
cat > "$tmp/config.json" <<'EOF'
{"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 257}
EOF
COMMON="--seq-len 32 --batch-tokens 512 --lr 3e-3 --threads 2 --seed 3"

# --help and usage errors
expect_rc 0 "train --help" -- "$GRAFT" train --help
grep -q -- "--prompt-weight" "$tmp/out" && ok || bad "help lacks --prompt-weight"
expect_rc 2 "no arguments" -- "$GRAFT" train
expect_rc 2 "unknown option" -- "$GRAFT" train --out "$tmp/x" --bogus
expect_err 2 "--out" "missing --out" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer
expect_err 2 "exactly one of" "two model sources" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --preset gpt2-tiny --byte-tokenizer --out "$tmp/x"
expect_err 2 "--lr" "bad --lr" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --lr fast
expect_err 2 "--dtype" "bad --dtype" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --dtype f8
expect_err 2 "cannot be given with --resume" "--resume with --lr" -- "$GRAFT" train --out "$tmp/x" --resume --lr 1e-3
expect_err 1 "tokenizer" "scratch model without tokenizer" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --out "$tmp/x"
expect_err 1 "no checkpoint" "resume without a checkpoint" -- "$GRAFT" train --out "$tmp/nothing" --resume
expect_err 1 "seq_len" "seq-len past the context" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --seq-len 100

# bad rows name the file, the row and the field
printf '{"text": "fine"}\n{"prompt": "where?"}\n' > "$tmp/missing.jsonl"
expect_err 1 'missing.jsonl: row 2: field "answer"' "row without answer" -- "$GRAFT" train --data "$tmp/missing.jsonl" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --quiet
printf '{"text": "fine"}\n{"text": "fine"}\n{"text": "bad \xff byte"}\n' > "$tmp/utf8.jsonl"
expect_err 1 'row 3: field "text" is not valid UTF-8' "invalid UTF-8 row" -- "$GRAFT" train --data "$tmp/utf8.jsonl" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --quiet
printf '{"text": "fine"}\n{"text": ' > "$tmp/json.jsonl"
expect_err 1 'row 2: not valid JSON' "broken JSON row" -- "$GRAFT" train --data "$tmp/json.jsonl" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/x" --quiet

# from scratch: learns, writes an HF folder the other commands read
expect_rc 0 "train from config" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/a" --steps 60 $COMMON
line=$(grep '^done:' "$tmp/out")
loss=$(echo "$line" | sed -nE 's/.*val loss ([0-9.]+) \(from ([0-9.]+)\).*/\1 \2/p')
[ -n "$loss" ] && awk -v a="${loss% *}" -v b="${loss#* }" 'BEGIN{exit !(a < 0.5 * b)}' && ok || bad "summary '$line' does not show the loss halved"
echo "$line" | grep -qE 'train loss [0-9.]+.* s, [0-9]+ tokens/s' && ok || bad "summary line '$line'"
for f in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json vocab.json merges.txt \
         loss.svg train_log.jsonl checkpoint/trainer_state.json checkpoint/optimizer.safetensors checkpoint/model.safetensors; do
  [ -s "$tmp/a/$f" ] && ok || bad "missing $f"
done
grep -q '<svg' "$tmp/a/loss.svg" && grep -q 'validation loss' "$tmp/a/loss.svg" && ok || bad "loss.svg"
[ "$(wc -l < "$tmp/a/train_log.jsonl")" -eq 61 ] && ok || bad "train_log.jsonl has $(wc -l < "$tmp/a/train_log.jsonl") lines, want 61"
"$GRAFT" inspect -m "$tmp/a" --json > "$tmp/out" 2>"$tmp/err" && grep -q '"arch": "gpt2"' "$tmp/out" && ok || bad "inspect the trained folder: $(cat "$tmp/err")"
out=$("$GRAFT" score -m "$tmp/a" --text "bob lives in rome. carol lives in oslo." 2>"$tmp/err")
nll=$(echo "$out" | sed -nE 's/.*"nll": ([0-9.]+).*/\1/p')
[ -n "$nll" ] && awk -v x="$nll" 'BEGIN{exit !(x < 2.5)}' && ok || bad "score of trained text: '$out' $(cat "$tmp/err")"
"$GRAFT" generate -m "$tmp/a" -p "alice lives in" -n 8 --temp 0 > "$tmp/out" 2>"$tmp/err" && ok || bad "generate: $(cat "$tmp/err")"
expect_err 1 "already holds a checkpoint" "train over a checkpoint" -- "$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/a" --steps 5 $COMMON

# a preset, stopped and resumed: the same bytes as the uninterrupted run
PRE="--data $tmp/corpus.txt --preset gpt2-tiny --byte-tokenizer --steps 12 --ckpt-every 5 $COMMON --quiet"
expect_rc 0 "preset, whole" -- "$GRAFT" train $PRE --out "$tmp/whole"
expect_rc 0 "preset, stop after 7" -- "$GRAFT" train $PRE --out "$tmp/split" --stop-after 7
grep -q '^stopped: step 7/12' "$tmp/out" && ok || bad "stop line: $(cat "$tmp/out")"
[ ! -e "$tmp/split/model.safetensors" ] && ok || bad "a stopped run wrote a final model"
expect_rc 0 "resume" -- "$GRAFT" train --out "$tmp/split" --resume --quiet
grep -q '^done: step 12/12' "$tmp/out" && ok || bad "resume line: $(cat "$tmp/out")"
cmp -s "$tmp/whole/model.safetensors" "$tmp/split/model.safetensors" && ok || bad "resumed weights differ"
cmp -s "$tmp/whole/checkpoint/optimizer.safetensors" "$tmp/split/checkpoint/optimizer.safetensors" && ok || bad "resumed AdamW state differs"

# Ctrl-C: a checkpoint, exit 1, and --resume picks it up
"$GRAFT" train --data "$tmp/corpus.txt" --config "$tmp/config.json" --byte-tokenizer --out "$tmp/int" --steps 100000 $COMMON --quiet > "$tmp/out" 2>"$tmp/err" &
pid=$!
sleep 1.5
kill -INT $pid
wait $pid; rc=$?
[ $rc -eq 1 ] && grep -q '^stopped:' "$tmp/out" && [ -s "$tmp/int/checkpoint/trainer_state.json" ] && ok || bad "SIGINT: exit $rc, $(cat "$tmp/out" "$tmp/err")"
step=$(sed -nE 's/^  "step": ([0-9]+),/\1/p' "$tmp/int/checkpoint/trainer_state.json")
expect_rc 0 "resume after SIGINT" -- "$GRAFT" train --out "$tmp/int" --resume --stop-after $((step + 2)) --quiet
grep -q "^stopped: step $((step + 2))/100000" "$tmp/out" && ok || bad "resume after SIGINT: $(cat "$tmp/out")"

# fine-tuning a llama2.c checkpoint on prompt/answer rows, saved as BF16
if [ -f "$DATA/stories260K.bin" ]; then
  for i in $(seq 20); do echo "{\"prompt\": \"Lily had a red ball number $i.\", \"answer\": \"She liked it.\"}"; done > "$tmp/qa.jsonl"
  expect_rc 0 "fine-tune stories260K" -- "$GRAFT" train --data "$tmp/qa.jsonl" --init "$DATA/stories260K.bin" --out "$tmp/ft" --steps 4 --batch-tokens 256 --seq-len 64 --lr 1e-3 --threads 2 --dtype bf16 --quiet
  [ -s "$tmp/ft/tokenizer.bin" ] && ok || bad "the llama2.c tokenizer was not copied"
  "$GRAFT" inspect -m "$tmp/ft" --json > "$tmp/out" 2>"$tmp/err" && grep -q '"dtype": "BF16"' "$tmp/out" && ok || bad "inspect BF16: $(cat "$tmp/out" "$tmp/err")"
  out=$("$GRAFT" generate -m "$tmp/ft" --tokenizer "$tmp/ft/tokenizer.bin" -p "Lily" -n 10 --temp 0 2>"$tmp/err")
  [ -n "$out" ] && ok || bad "generate from the fine-tuned folder: $(cat "$tmp/err")"
fi

cli_end cli_train
