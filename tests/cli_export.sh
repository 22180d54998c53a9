#!/usr/bin/env bash
# cli_export.sh - the FT baselines from the command line (graft edit
# --method ft|ftl|ewc with their flags) and graft export: an exported F32
# model gives exactly the adaptor's scores and generations, undone edits are
# left out, BF16 exports load, and GRACE runs are refused with a pointer to
# --adaptor. Usage: cli_export.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_export.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
HF=$DATA/llama-stories260K-hf   # an HF folder: exports of it reload bit for bit
TOK=$DATA/tok512.bin
. "$(dirname "$0")/lib.sh"
cli_begin export

EDIT=("$GRAFT" edit -m "$HF" --tokenizer "$TOK" --data "$DATA/stories_edits.jsonl" --eval-every 3 --no-progress)
P="Once upon a time, there was a little girl named"
TEXT="Lily went to the park. She saw a big dog and a red ball."

# FT-L with its flags; the options land in the journal / summary
"${EDIT[@]}" --method ftl --ft-layers 2,3 --ft-lr 0.005 --ft-steps 20 --linf 0.02 --loss target_new \
  --out "$tmp/ftl" >/dev/null 2>"$tmp/err" && ok || bad "ftl run: $(tail -3 "$tmp/err")"
opts=$(sqlite3 "$tmp/ftl/journal.sqlite" "select value from meta where key='editor_options'")
case "$opts" in *'"layers":[2,3]'*'"loss":"target_new"'*'"linf":0.0199999'*) ok ;; *) bad "ftl options not recorded: $opts" ;; esac
[ "$(sqlite3 "$tmp/ftl/journal.sqlite" "select count(*) from edits where kind='edit' and method='ftl'")" -eq 6 ] && ok || bad "ftl journal rows"

# export (F32): the same scores and generations as serving through --adaptor
"$GRAFT" export -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ftl" --out "$tmp/x32" >/dev/null 2>"$tmp/err" && ok || bad "export: $(cat "$tmp/err")"
for f in config.json model.safetensors generation_config.json graft_export.json; do [ -s "$tmp/x32/$f" ] && ok || bad "export lacks $f"; done
grep -q '"method":[[:space:]]*"ftl"' "$tmp/x32/graft_export.json" && grep -q '"live_edits":[[:space:]]*6' "$tmp/x32/graft_export.json" && ok || bad "provenance: $(cat "$tmp/x32/graft_export.json")"
a=$("$GRAFT" score -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ftl" --text "$TEXT" 2>&1)
b=$("$GRAFT" score -m "$tmp/x32" --tokenizer "$TOK" --text "$TEXT" 2>&1)
base=$("$GRAFT" score -m "$HF" --tokenizer "$TOK" --text "$TEXT" 2>&1)
[ "$a" = "$b" ] && ok || bad "score: adaptor '$a' vs export '$b'"
[ "$a" != "$base" ] && ok || bad "the edits did not change the score ($a)"
a=$("$GRAFT" generate -m "$HF" --tokenizer "$TOK" --adaptor "$tmp/ftl" -p "$P" -n 12 --ids 2>&1)
b=$("$GRAFT" generate -m "$tmp/x32" --tokenizer "$TOK" -p "$P" -n 12 --ids 2>&1)
[ "$a" = "$b" ] && ok || bad "generate: adaptor $a vs export $b"
# never over an existing model
"$GRAFT" export -m "$HF" --adaptor "$tmp/ftl" --out "$tmp/x32" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "already holds a model" "$tmp/err" && ok || bad "export over a model: exit $rc $(cat "$tmp/err")"

# BF16 export loads and reports its dtype
"$GRAFT" export -m "$HF" --adaptor "$tmp/ftl" --out "$tmp/x16" --dtype bf16 >/dev/null 2>"$tmp/err" && ok || bad "bf16 export: $(cat "$tmp/err")"
"$GRAFT" inspect -m "$tmp/x16" 2>&1 | grep -q "BF16" && ok || bad "bf16 export does not inspect as BF16"

# plain FT on the llama2.c checkpoint; undo an edit, and the export follows
BIN=$DATA/stories260K.bin
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --method ft --eval-every 3 --no-progress \
  --out "$tmp/ft" >/dev/null 2>"$tmp/err" && ok || bad "ft run: $(tail -3 "$tmp/err")"
g_ad=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/ft" -p "$P" -n 3 2>/dev/null)
case "$g_ad" in " Tom"*) ok ;; *) bad "ft edit 1 not in the greedy continuation: '$g_ad'" ;; esac
"$GRAFT" edits undo 1 --adaptor "$tmp/ft" -m "$BIN" >/dev/null 2>"$tmp/err" && ok || bad "undo: $(cat "$tmp/err")"
"$GRAFT" export -m "$BIN" --adaptor "$tmp/ft" --out "$tmp/xft" >/dev/null 2>"$tmp/err" && ok || bad "export after undo: $(cat "$tmp/err")"
grep -q '"live_edits":[[:space:]]*5' "$tmp/xft/graft_export.json" && ok || bad "undone edit exported: $(cat "$tmp/xft/graft_export.json")"
a=$("$GRAFT" generate -m "$BIN" --adaptor "$tmp/ft" -p "$P" -n 6 --ids 2>&1)
b=$("$GRAFT" generate -m "$tmp/xft" --tokenizer "$TOK" -p "$P" -n 6 --ids 2>&1)
c=$("$GRAFT" generate -m "$BIN" -p "$P" -n 6 --ids 2>&1)
[ "$a" = "$b" ] && ok || bad "after undo: adaptor $a vs export $b"
[ "$a" = "$c" ] && ok || bad "after undo the first prompt should be back to the unedited continuation ($a vs $c)"

# EWC runs from the CLI
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --method ewc --ewc-lambda 50 --ewc-window 2 \
  --eval-every 3 --no-progress --out "$tmp/ewc" >/dev/null 2>"$tmp/err" && ok || bad "ewc run: $(tail -3 "$tmp/err")"
opts=$(sqlite3 "$tmp/ewc/journal.sqlite" "select value from meta where key='editor_options'")
case "$opts" in *'"ewc_lambda":50,"ewc_window":2'*) ok ;; *) bad "ewc options not recorded: $opts" ;; esac

# GRACE cannot be merged: refused, nothing written, --adaptor named
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --layer 1 --n-iter 20 --eval-every 3 --no-progress \
  --out "$tmp/grace" >/dev/null 2>"$tmp/err" && ok || bad "grace run: $(tail -3 "$tmp/err")"
"$GRAFT" export -m "$BIN" --adaptor "$tmp/grace" --out "$tmp/xg" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "cannot be merged" "$tmp/err" && grep -q -- "--adaptor" "$tmp/err" && ok || bad "grace export: exit $rc $(cat "$tmp/err")"
[ ! -e "$tmp/xg/model.safetensors" ] && ok || bad "a refused export wrote a model"
# nor MELO (its LoRA blocks act per input; it resets like a weight editor, which once let it through
# and wrote the unedited weights)
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --method melo --radius 0.5 --n 4 --eval-every 4 --no-progress \
  --out "$tmp/melo" >/dev/null 2>"$tmp/err" && ok || bad "melo run: $(tail -3 "$tmp/err")"
"$GRAFT" export -m "$BIN" --adaptor "$tmp/melo" --out "$tmp/xm" --gguf "$tmp/xm.gguf" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "cannot be merged" "$tmp/err" && [ ! -e "$tmp/xm/model.safetensors" ] && [ ! -e "$tmp/xm.gguf" ] && ok || bad "melo export: exit $rc $(cat "$tmp/err")"

# usage and option errors
"$GRAFT" export -m "$BIN" --out "$tmp/xx" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "export without --adaptor: want exit 2"
"$GRAFT" export -m "$BIN" --adaptor "$tmp/ft" --out "$tmp/xx" --dtype f64 >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "dtype" "$tmp/err" && ok || bad "bad dtype: exit $rc"
"$GRAFT" export -m "$BIN" --adaptor "$tmp/nowhere" --out "$tmp/xx" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "journal" "$tmp/err" && ok || bad "missing adaptor: exit $rc $(cat "$tmp/err")"
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --method ft --linf 0.1 --no-progress --out "$tmp/bad" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "an ftl option" "$tmp/err" && ok || bad "--linf with ft: exit $rc $(cat "$tmp/err")"
"$GRAFT" edit -m "$BIN" --data "$DATA/stories_edits.jsonl" --method ftl --ft-layers 9 --no-progress --out "$tmp/bad2" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "layer 9 outside" "$tmp/err" && ok || bad "--ft-layers 9: exit $rc $(cat "$tmp/err")"

cli_end cli_export
