#!/usr/bin/env bash
# cli_gguf.sh - GGUF from the command line: `graft export --gguf` (a plain
# conversion and an edited model), `graft inspect` of the metadata, files
# written byte by byte by tests/gguf_build.py (not graft's writer) in F32,
# F16, BF16 and Q8_0, GGUF v2 and v3, for Llama and GPT-2, and truncated or
# corrupt files refused with the offset. When llama.cpp's tools are already
# built (../shared/peers/llamacpp.sh caches them), llama.cpp tokenizes graft's
# output like graft does; otherwise that part is skipped.
# Usage: cli_gguf.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_gguf.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
HERE=$(cd "$(dirname "$0")" && pwd)
HF=$DATA/llama-stories260K-hf
TOK=$DATA/tok512.bin
. "$HERE/lib.sh"
cli_begin gguf
command -v python3 >/dev/null || { echo "SKIP: python3 not found" >&2; exit 77; }
BUILD=(python3 "$HERE/gguf_build.py")
TEXT="Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
P="Once upon a time, there was a"

# nll of a `graft score` line
nll() { sed -n 's/.*"nll": \([0-9.e+-]*\).*/\1/p'; }
# close A B TOL: |A - B| <= TOL
close() { python3 -c "import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=t else 1)" "$1" "$2" "$3"; }

# ---- an HF folder converted: the same scores, ids and generations
expect_rc 0 "export --gguf" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --gguf "$tmp/l.gguf"
grep -q "tokenizer embedded" "$tmp/err" && ok || bad "export message: $(cat "$tmp/err")"
base=$("$GRAFT" score -m "$HF" --tokenizer "$TOK" --text "$TEXT" 2>&1)
b=$("$GRAFT" score -m "$tmp/l.gguf" --text "$TEXT" 2>&1)
[ "$base" = "$b" ] && ok || bad "score: HF '$base' vs GGUF '$b'"
a=$("$GRAFT" tokenize -m "$HF" --tokenizer "$TOK" --text "$TEXT" 2>&1)
b=$("$GRAFT" tokenize -m "$tmp/l.gguf" --text "$TEXT" 2>&1)
[ "$a" = "$b" ] && ok || bad "tokenize: HF $a vs GGUF $b"
a=$("$GRAFT" generate -m "$HF" --tokenizer "$TOK" -p "$P" -n 16 --ids 2>&1)
b=$("$GRAFT" generate -m "$tmp/l.gguf" -p "$P" -n 16 --ids 2>&1)
[ "$a" = "$b" ] && ok || bad "generate: HF $a vs GGUF $b"

# ---- inspect shows the metadata, arrays summarised; --json is JSON
"$GRAFT" inspect -m "$tmp/l.gguf" >"$tmp/out" 2>&1 && ok || bad "inspect: $(cat "$tmp/out")"
grep -q 'tokenizer.ggml.model .*"llama"' "$tmp/out" && grep -q 'llama.attention.head_count_kv .* 4' "$tmp/out" &&
  grep -q '\[string x 512\] "<unk>", "<s>", "</s>"' "$tmp/out" && grep -q "gguf checkpoint" "$tmp/out" && ok ||
  bad "inspect output: $(head -40 "$tmp/out")"
[ "$(wc -c <"$tmp/out")" -lt 6000 ] && ok || bad "inspect prints too much ($(wc -c <"$tmp/out") bytes)"
"$GRAFT" inspect -m "$tmp/l.gguf" --json >"$tmp/out" 2>&1 &&
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); g=j['gguf']; assert g['version']==3 and g['metadata']['llama.block_count']==5 and g['metadata']['tokenizer.ggml.tokens']['n']==512, g" "$tmp/out" &&
  ok || bad "inspect --json: $(head -c 600 "$tmp/out")"

# ---- refusals and usage
expect_err "already exists" "export over a file" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --gguf "$tmp/l.gguf"
expect_rc 2 "export --out without --adaptor" -- "$GRAFT" export -m "$HF" --out "$tmp/nope"
expect_rc 2 "export --gguf --dtype q4" -- "$GRAFT" export -m "$HF" --gguf "$tmp/q4.gguf" --dtype q4

# ---- F16 export: smaller, close
expect_rc 0 "export --gguf --dtype f16" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --gguf "$tmp/l16.gguf" --dtype f16
"$GRAFT" inspect -m "$tmp/l16.gguf" 2>&1 | grep -q "F16 weights" && ok || bad "f16 export does not inspect as F16"
b=$("$GRAFT" score -m "$tmp/l16.gguf" --text "$TEXT" 2>&1 | nll)
close "$(echo "$base" | nll)" "$b" 0.01 && ok || bad "f16 nll $b vs $base"

# ---- an edited model: the GGUF export scores exactly as the adaptor does
"$GRAFT" edit -m "$HF" --tokenizer "$TOK" --data "$DATA/stories_edits.jsonl" --method ft --eval-every 3 --no-progress \
  --out "$tmp/ft" >/dev/null 2>"$tmp/err" && ok || bad "ft run: $(tail -3 "$tmp/err")"
expect_rc 0 "export --adaptor --gguf" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ft" --gguf "$tmp/ft.gguf"
grep -q "merged 6 ft edits into" "$tmp/err" && ok || bad "export message: $(cat "$tmp/err")"
a=$("$GRAFT" score -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ft" --text "$TEXT" 2>&1)
b=$("$GRAFT" score -m "$tmp/ft.gguf" --text "$TEXT" 2>&1)
[ "$a" = "$b" ] && ok || bad "edited: adaptor '$a' vs GGUF '$b'"
[ "$a" != "$base" ] && ok || bad "the edits did not change the score"
a=$("$GRAFT" generate -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ft" -p "$P" -n 8 --ids 2>&1)
b=$("$GRAFT" generate -m "$tmp/ft.gguf" -p "$P" -n 8 --ids 2>&1)
[ "$a" = "$b" ] && ok || bad "edited generate: adaptor $a vs GGUF $b"
# both outputs at once
expect_rc 0 "export --out and --gguf" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ft" --out "$tmp/fthf" --gguf "$tmp/ft2.gguf"
cmp -s "$tmp/ft.gguf" "$tmp/ft2.gguf" && [ -s "$tmp/fthf/model.safetensors" ] && ok || bad "--out + --gguf"
# GRACE cannot be merged into a GGUF either
"$GRAFT" edit -m "$HF" --tokenizer "$TOK" --data "$DATA/stories_edits.jsonl" --layer 1 --n-iter 20 --eval-every 3 \
  --no-progress --out "$tmp/grace" >/dev/null 2>"$tmp/err" && ok || bad "grace run: $(tail -3 "$tmp/err")"
expect_err "cannot be merged" "grace export" -- "$GRAFT" export -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/grace" --gguf "$tmp/g.gguf"
[ ! -e "$tmp/g.gguf" ] && ok || bad "a refused export wrote a GGUF file"

# ---- files written byte by byte by gguf_build.py (Llama)
for spec in "f32 3 32" "f16 2 64" "bf16 3 32" "q8_0 2 32"; do
  set -- $spec
  f="$tmp/py_$1_v$2.gguf"
  "${BUILD[@]}" llama "$HF" "$TOK" "$f" --dtype "$1" --version "$2" --alignment "$3" 2>"$tmp/err" && ok ||
    bad "gguf_build llama $spec: $(cat "$tmp/err")"
  s=$("$GRAFT" score -m "$f" --text "$TEXT" 2>&1)
  case $1 in
  f32) [ "$s" = "$base" ] && ok || bad "python-built f32: '$s' vs HF '$base'" ;;
  *) tol=$([ "$1" = f16 ] && echo 0.002 || echo 0.02)
     close "$(echo "$base" | nll)" "$(echo "$s" | nll)" "$tol" && ok || bad "python-built $1: '$s' vs HF '$base'" ;;
  esac
done
a=$("$GRAFT" tokenize -m "$tmp/py_f32_v3.gguf" --text "$TEXT" 2>&1)
b=$("$GRAFT" tokenize -m "$HF" --tokenizer "$TOK" --text "$TEXT" 2>&1)
[ "$a" = "$b" ] && ok || bad "python-built tokenizer: $a vs $b"
"$GRAFT" inspect -m "$tmp/py_q8_0_v2.gguf" 2>&1 | grep -q "version 2, .*alignment 32" && ok || bad "v2 inspect"
"$GRAFT" inspect -m "$tmp/py_f16_v2.gguf" 2>&1 | grep -q "alignment 64" && ok || bad "general.alignment 64 not honoured"

# ---- GPT-2: a random HF folder and its GGUF, both written by gguf_build.py
"${BUILD[@]}" gpt2-hf "$tmp/g2hf" "$DATA/gpt2-tokenizer" 2>"$tmp/err" && ok || bad "gguf_build gpt2-hf: $(cat "$tmp/err")"
"${BUILD[@]}" gpt2 "$tmp/g2hf" "$tmp/g2.gguf" 2>"$tmp/err" && ok || bad "gguf_build gpt2: $(cat "$tmp/err")"
G2TEXT="Hello world, this is GPT-2's tokenizer: caf\xc3\xa9 12345!  <|endoftext|>Bye"
G2TEXT=$(printf "$G2TEXT")
a=$("$GRAFT" score -m "$tmp/g2hf" --text "$G2TEXT" 2>&1)
b=$("$GRAFT" score -m "$tmp/g2.gguf" --text "$G2TEXT" 2>&1)
[ "$a" = "$b" ] && case $a in *nll*) true ;; *) false ;; esac && ok || bad "gpt2 python-built: HF '$a' vs GGUF '$b'"
a=$("$GRAFT" tokenize -m "$tmp/g2hf" --text "$G2TEXT" 2>&1)
b=$("$GRAFT" tokenize -m "$tmp/g2.gguf" --text "$G2TEXT" 2>&1)
[ "$a" = "$b" ] && case $a in *50256*) true ;; *) false ;; esac && ok || bad "gpt2 tokenize: $a vs $b"
# weights used as stored (F16, BF16 and Q8_0 read in place, GPT-2's Conv1D
# transposed, F32 ones too; wmat.c) score as the same files converted at load
for dt in f32 f16 bf16 q8_0; do
  "${BUILD[@]}" gpt2 "$tmp/g2hf" "$tmp/g2_$dt.gguf" --dtype "$dt" 2>"$tmp/err" || bad "gguf_build gpt2 $dt: $(cat "$tmp/err")"
  for f in "$tmp/g2_$dt.gguf" "$tmp/py_${dt}_v3.gguf" "$tmp/py_${dt}_v2.gguf"; do
    [ -f "$f" ] || continue
    t=$([ "$f" = "$tmp/g2_$dt.gguf" ] && echo "$G2TEXT" || echo "$TEXT")
    a=$(GRAFT_WEIGHTS=stored "$GRAFT" score -m "$f" --text "$t" 2>&1)
    b=$(GRAFT_WEIGHTS=f32 "$GRAFT" score -m "$f" --text "$t" 2>&1)
    close "$(echo "$a" | nll)" "$(echo "$b" | nll)" 0.0005 && ok || bad "$(basename "$f") as stored: '$a' vs converted '$b'"
    GRAFT_WEIGHTS=stored "$GRAFT" inspect -m "$f" 2>&1 | grep -q "memory-mapped" && ok || bad "$(basename "$f"): not mapped as stored"
  done
  want=$(echo "$dt" | tr a-z A-Z)
  "$GRAFT" inspect -m "$tmp/g2_$dt.gguf" 2>&1 | grep -q "^architecture .*, $want weights)" && ok ||
    bad "g2_$dt.gguf: inspect does not say $want weights"
done
# graft's own GPT-2 export of that folder, read back
expect_rc 0 "gpt2 export --gguf" -- "$GRAFT" export -m "$tmp/g2hf" --gguf "$tmp/g2graft.gguf"
b=$("$GRAFT" score -m "$tmp/g2graft.gguf" --text "$G2TEXT" 2>&1)
[ "$a" != "" ] && [ "$("$GRAFT" score -m "$tmp/g2hf" --text "$G2TEXT" 2>&1)" = "$b" ] && ok || bad "gpt2 graft export: '$b'"
"$GRAFT" inspect -m "$tmp/g2graft.gguf" 2>&1 | grep -q 'tokenizer.ggml.merges .*\[string x 50000\] "Ġ t"' && ok ||
  bad "gpt2 inspect: $("$GRAFT" inspect -m "$tmp/g2graft.gguf" 2>&1 | grep merges)"

# ---- truncated and corrupt files: refused with the file and the offset
head -c 3000 "$tmp/l.gguf" >"$tmp/cut.gguf"
expect_err "cut.gguf: offset " "truncated file" -- "$GRAFT" inspect -m "$tmp/cut.gguf"
head -c 20000 "$tmp/l.gguf" >"$tmp/cut2.gguf"
expect_err "run past the end of the file" "truncated data" -- "$GRAFT" score -m "$tmp/cut2.gguf" --text "$TEXT"
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\020\377\377\377\377\377\377\377\377' >"$tmp/huge.gguf"
expect_err "tensor count 1152921504606846976 cannot fit" "2^60 tensors" -- "$GRAFT" inspect -m "$tmp/huge.gguf"
printf 'XXXX' >"$tmp/bad.gguf"
expect_err "not a GGUF file" "bad magic" -- "$GRAFT" inspect -m "$tmp/bad.gguf"

# ---- llama.cpp, when its tools are already built (never built here: 13 minutes)
LB=${GRAFT_PEERS:-${TMPDIR:-/tmp}/graft-peers}/llama.cpp/build/bin
if [ -x "$LB/llama-tokenize" ]; then
  # llama.cpp's ids for the text (with BOS) are graft's
  want=$("$GRAFT" tokenize -m "$tmp/l.gguf" --text "$TEXT" 2>&1 | tr -d '[] ')
  got=$("$LB/llama-tokenize" -m "$tmp/l.gguf" -p "$TEXT" --ids --log-disable 2>/dev/null | tail -1 | tr -d '[] ')
  [ "$got" = "1,$want" ] && ok || bad "llama-tokenize (llama): '$got' vs graft '1,$want'"
  want=$("$GRAFT" tokenize -m "$tmp/g2graft.gguf" --text "$G2TEXT" 2>&1 | tr -d '[] ')
  got=$("$LB/llama-tokenize" -m "$tmp/g2graft.gguf" -p "$G2TEXT" --ids --log-disable 2>/dev/null | tail -1 | tr -d '[] ')
  [ "$got" = "$want" ] && ok || bad "llama-tokenize (gpt2): '$got' vs graft '$want'"
  if [ -x "$LB/llama-simple" ]; then
    a=$("$GRAFT" generate -m "$tmp/l.gguf" -p "$P" -n 12 2>/dev/null)
    got=$("$LB/llama-simple" -m "$tmp/l.gguf" -n 12 "$P" 2>/dev/null)
    case $got in *"$a"*) ok ;; *) bad "llama-simple: '$got' lacks graft's '$a'" ;; esac
  fi
else
  echo "cli_gguf: llama.cpp tools not built ($LB); llama.cpp cross-checks skipped" >&2
fi

cli_end gguf
