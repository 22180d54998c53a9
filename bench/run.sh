#!/usr/bin/env bash
# make bench: the machine floors (bandwidth, sgemm peak), the GEMM table, the engine figures on GPT-2 shapes and the
# per-edit time of every editing method (bench_edit).
# Every figure is the median and best of 5 runs (see bench/README.md).
set -eu
BUILD=${1:-build}
export OMP_WAIT_POLICY=passive
echo "== floors: CPU flags, memory bandwidth, sgemm peak =="
"$BUILD/bench_floors"
echo "== GEMM (K=768, N=3072) =="
"$BUILD/bench_gemm"
echo "== graft bench --shape gpt2 (124M, random weights) =="
"$BUILD/graft" bench --shape gpt2 --runs 5
echo "== graft bench --shape gpt2-xl (1.5B, random weights; forward and decode) =="
"$BUILD/graft" bench --shape gpt2-xl --runs 5 --no-step --decode 16
echo "== per-edit time of every method and key-statistics throughput: the fact model =="
S=runs/study/factbase_stats.safetensors   # from scripts/forgetting_study.sh; without it ROME/MEMIT/EMMET use C = I
"$BUILD/bench_edit" --model models/factbase $( [ -f "$S" ] && echo --stats "$S" ) --runs 5 \
  --opts 'grace={"layer": 1}' --opts 'memit={"mom2_update_weight": 100}' --opts 'emmet={"mom2_update_weight": 100}' \
  --opts 'ftl={"loss": "target_new", "linf": 5e-3}' --opts 'ewc={"ewc_lambda": 1e6}'
echo "== per-edit time: GPT-2-124M shapes (random weights, GPT-2 tokenizer, C = I) =="
"$BUILD/bench_edit" --shape gpt2 --runs 5 --stats-tokens 16384 --corpus "${GRAFT_SHARED_DIR:-../shared}/data/wikitext2/wiki.test.raw"
