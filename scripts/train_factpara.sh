#!/usr/bin/env bash
# Train the paraphrase fact model (issue 10) from data/facts2: a byte-level BPE
# of 4,096 ids learned on the corpus, then a GPT-2 of 8 layers x 384 (about
# 15.7 M parameters) for 40 epochs. On the 2-core development machine it trains
# at about 1,450 tokens/s, so about 1.6 hours for the ~8.4 M tokens when nothing
# else runs. Usage:
#   scripts/train_factpara.sh [BUILD_DIR] [OUT_DIR]
# Interrupt it and run it again: it resumes bit-identically from OUT_DIR.
set -eu
BUILD=${1:-build}
OUT=${2:-runs/factpara-train}
TOK=${OUT%/*}/factpara-tokenizer
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ -d "$OUT/checkpoint" ]; then
  exec "$BUILD/graft" train --out "$OUT" --resume
fi
# data/facts2 is committed; `graft corpus --paraphrase` rebuilds it byte for byte
# from ../shared/data and data/relations.json. The tokenizer is a pure function
# of the corpus and the vocabulary size.
"$BUILD/graft" tokenizer learn --data data/facts2/train.jsonl --vocab 4096 --out "$TOK"
exec "$BUILD/graft" train --data data/facts2/train.jsonl --config models/factpara.config.json \
  --tokenizer "$TOK" --out "$OUT" --epochs 40 --batch-tokens 8192 --seq-len 64 \
  --lr 2e-3 --min-lr 1e-4 --warmup 100 --wd 0.1 --prompt-weight 0.2 --seed 1234 \
  --dtype f16 --eval-every 100 --ckpt-every 50
