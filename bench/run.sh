#!/usr/bin/env bash
# make bench: the GEMM table and the engine figures on GPT-2 shapes.
# Every figure is the median and best of 5 runs (see bench/README.md).
set -eu
BUILD=${1:-build}
export OMP_WAIT_POLICY=passive
echo "== GEMM (K=768, N=3072) =="
"$BUILD/bench_gemm"
echo "== graft bench --shape gpt2 (124M, random weights) =="
"$BUILD/graft" bench --shape gpt2 --runs 5
echo "== graft bench --shape gpt2-xl (1.5B, random weights; forward and decode) =="
"$BUILD/graft" bench --shape gpt2-xl --runs 5 --no-step --decode 16
