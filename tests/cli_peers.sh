#!/usr/bin/env bash
# cli_peers.sh - the pieces of `make bench-peers` (bench/peers.py) that can be
# checked without timing anything: its GGUF reader and work counts on a tiny
# GPT-2 exported by graft, the Q8_0 rewriter (bench/gguf_q8_0.py; graft must
# read its output and score within quantisation error of F32), the PyTorch
# peer on that tiny model (when a python3 with torch is installed: it runs,
# and its NLL of some ids is graft's, so it computes the same model), and a
# --dry-run with no peers present. No benchmark runs here.
# Usage: cli_peers.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_peers.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=$HERE/../bench
. "$HERE/lib.sh"
cli_begin peers
command -v python3 >/dev/null || { echo "SKIP: python3 not found" >&2; exit 77; }
TEXT="Hello world, this is a small test of the peers script."

python3 "$HERE/gguf_build.py" gpt2-hf "$tmp/g2" "$DATA/gpt2-tokenizer" 2>"$tmp/err" && ok || bad "gguf_build: $(cat "$tmp/err")"
expect_rc 0 "export f32" -- "$GRAFT" export -m "$tmp/g2" --gguf "$tmp/f32.gguf"
expect_rc 0 "export f16" -- "$GRAFT" export -m "$tmp/g2" --gguf "$tmp/f16.gguf" --dtype f16

# the reader: shapes as graft sees them, bytes per token, FLOPs
PYTHONPATH=$BENCH python3 - "$tmp/f32.gguf" "$tmp/f16.gguf" 2>"$tmp/err" <<'EOF' && ok || bad "reader: $(cat "$tmp/err")"
import sys
from peers import read_gguf, gguf_shape, prefill_flops, step_flops
s32, s16 = (gguf_shape(read_gguf(p)) for p in sys.argv[1:3])
C, L, F, V, N = 32, 2, 128, 50257, 64
assert (s32["arch"], s32["C"], s32["L"], s32["H"], s32["F"], s32["V"]) == ("gpt2", C, L, 4, F, V), s32
# every layer tensor, the head (output.weight, the tied embedding stored again) and one row of each embedding
layer = 4 * C * C + 2 * C * F + 3 * C + C + F + C + 4 * C
want = 4 * (L * layer + 2 * C + V * C + 2 * C)
assert s32["bytes_per_token"] == want, (s32["bytes_per_token"], want)
assert s32["bytes_per_token"] / 2 < s16["bytes_per_token"] < s32["bytes_per_token"], s16
mm = 2 * L * (4 * C * C + 2 * C * F)
assert prefill_flops(s32, 8) == 8 * mm + 4 * L * C * 36 + 2 * C * V
assert step_flops(s32, 2, 8) == 3 * 2 * (8 * mm + 4 * L * C * 36 + 8 * 2 * C * V)
EOF

# the Q8_0 rewriter, read back by graft
NPY=
for py in /usr/bin/python3 python3; do
  command -v "$py" >/dev/null && "$py" -c "import numpy" 2>/dev/null && { NPY=$py; break; }
done
if [ -n "$NPY" ]; then
  expect_rc 0 "gguf_q8_0.py" -- "$NPY" "$BENCH/gguf_q8_0.py" "$tmp/f32.gguf" "$tmp/q8.gguf"
  "$GRAFT" inspect -m "$tmp/q8.gguf" 2>&1 | grep -q "gguf-q8_0" && ok || bad "inspect q8: $("$GRAFT" inspect -m "$tmp/q8.gguf" 2>&1 | head -3)"
  a=$("$GRAFT" score -m "$tmp/f32.gguf" --text "$TEXT" 2>&1 | sed -n 's/.*"nll": \([0-9.e+-]*\).*/\1/p')
  b=$("$GRAFT" score -m "$tmp/q8.gguf" --text "$TEXT" 2>&1 | sed -n 's/.*"nll": \([0-9.e+-]*\).*/\1/p')
  python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=0.02*abs(a) else 1)" "$a" "$b" && ok ||
    bad "q8_0 nll $b vs f32 $a"
else
  echo "cli_peers: no numpy: Q8_0 rewriter not checked" >&2
fi

# the PyTorch peer on the tiny model
TPY=
for py in /usr/bin/python3 python3; do
  command -v "$py" >/dev/null && "$py" -c "import torch, numpy" 2>/dev/null && { TPY=$py; break; }
done
if [ -n "$TPY" ]; then
  "$TPY" "$BENCH/peer_torch.py" --model "$tmp/g2" --threads 1 --runs 1 --prefill 16 --batch 2 --seq 8 >"$tmp/t.json" 2>"$tmp/err" &&
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['params']==$((50257 * 32 + 64 * 32 + 2 * (4 * 32 * 32 + 2 * 32 * 128 + 9 * 32 + 128) + 2 * 32)) and j['step_ms'] > 0, j" "$tmp/t.json" &&
    ok || bad "peer_torch.py: $(cat "$tmp/t.json" "$tmp/err" | tail -3)"
  # the same model: graft's mean NLL of some ids and PyTorch's agree
  IDS=15496,995,11,428,318,257,1332,13
  a=$("$GRAFT" score -m "$tmp/g2" --ids $IDS 2>&1 | sed -n 's/.*"nll": \([0-9.e+-]*\).*/\1/p')
  b=$("$TPY" "$BENCH/peer_torch.py" --model "$tmp/g2" --threads 1 --nll-ids $IDS 2>/dev/null | sed -n 's/.*"nll": \([0-9.e+-]*\).*/\1/p')
  python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=1e-4*abs(a) else 1)" "$a" "$b" && ok ||
    bad "peer_torch.py nll '$b' vs graft '$a'"
else
  echo "cli_peers: no python3 with torch: peer_torch.py not checked" >&2
fi

# a dry run with no peers anywhere: every peer skipped with a message, nothing run
expect_rc 0 "peers.py --dry-run" -- python3 "$BENCH/peers.py" --build "$(dirname "$GRAFT")" --dry-run \
  --peers "$tmp/nopeers" --torch-python "$tmp/nopython" --work "$tmp/work" --out "$tmp/peers.md"
for what in "llama.cpp: no" "run.c: no" "PyTorch: no"; do
  grep -qF "$what" "$tmp/err" && ok || bad "dry run lacks '$what': $(head -c 400 "$tmp/err")"
done

cli_end peers
