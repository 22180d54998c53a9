#!/usr/bin/env bash
# make demo: the main job on the default model. Until the fact model and the
# GRACE editor land, it shows the runtime on the real stories260K checkpoint.
set -eu
BUILD=${1:-build}
G="$BUILD/graft"
M=tests/data/stories260K.bin
echo "== graft inspect: the real pretrained stories260K (llama2.c checkpoint) =="
"$G" inspect -m "$M"
echo
echo "== greedy generation (prints the same text as llama2.c's run.c) =="
"$G" generate -m "$M" -n 60 --temp 0
echo
echo "== sampled, temperature 0.8, seed 7 =="
"$G" generate -m "$M" -p "Lily and her dog" -n 60 --temp 0.8 --seed 7
echo
echo "== scoring: the model's own greedy story vs a shuffled one (mean NLL, nats/token) =="
"$G" score -m "$M" --text "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
"$G" score -m "$M" --text "park the in outside play to loved She. Lily named girl little a was there, time a upon Once"
echo
echo "== the same model in Hugging Face layout gives the same continuation =="
"$G" generate -m tests/data/llama-stories260K-hf --tokenizer tests/data/tok512.bin -n 30 --temp 0
