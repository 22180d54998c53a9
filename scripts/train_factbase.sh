#!/usr/bin/env bash
# Train graft's default fact model (models/factbase) from the fact corpus.
# The recipe is recorded in docs/FACT_MODEL.md; on the 2-core development
# machine it takes about an hour when nothing else runs. Usage:
#   scripts/train_factbase.sh [BUILD_DIR] [OUT_DIR]
# Interrupt it with Ctrl-C and run it again: it resumes bit-identically.
set -eu
BUILD=${1:-build}
OUT=${2:-runs/factbase-train}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ -d "$OUT/checkpoint" ]; then
  exec "$BUILD/graft" train --out "$OUT" --resume
fi
# data/facts is committed; `graft corpus` rebuilds it byte for byte from ../shared/data.
exec "$BUILD/graft" train --data data/facts/train.jsonl --config models/factbase.config.json \
  --byte-tokenizer --out "$OUT" --epochs 30 --batch-tokens 8192 --seq-len 192 \
  --lr 2e-3 --min-lr 1e-4 --warmup 150 --wd 0.1 --prompt-weight 0.2 --seed 1234 \
  --dtype f16 --eval-every 100 --ckpt-every 100
