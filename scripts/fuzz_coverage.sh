#!/usr/bin/env bash
# Line coverage of the source files each fuzz harness targets, measured by
# replaying the harness's corpus (the campaign's, build-fuzz/corpus/NAME, or
# the committed seeds where there is none) through fuzz/replay.c in a clang
# source-based coverage build (build-fuzzcov/: -fprofile-instr-generate
# -fcoverage-mapping, no sanitizers). Prints a Markdown table.
#   bash scripts/fuzz_coverage.sh [HARNESS...]
set -u
cd "$(dirname "$0")/.."
GRAFT_FUZZCOV_DEPS=1 bash scripts/deps.sh || exit 1
B=${FUZZCOV_BUILD:-build-fuzzcov}
CORPORA=${FUZZ_CORPORA:-build-fuzz/corpus}
V=""
command -v llvm-profdata >/dev/null || V=-14
PROFDATA=llvm-profdata$V COV=llvm-cov$V
FLAGS="-fprofile-instr-generate -fcoverage-mapping"
CC=clang cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRAFT_BLAS=none -DGRAFT_NATIVE=OFF \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="$FLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$FLAGS" >/dev/null || exit 1

# harness -> the files it is there to fuzz
declare -A files=(
  [fuzz_safetensors]="src/model/safetensors.c"
  [fuzz_shard_index]="src/model/safetensors.c"
  [fuzz_config]="src/model/config.c"
  [fuzz_model_file]="src/model/gguf.c src/model/gguf_load.c src/model/llama2c.c"
  [fuzz_tokenizer_file]="src/tokenizer/gpt2_load.c src/tokenizer/llama2c.c src/tokenizer/tokenizer.c"
  [fuzz_encode]="src/tokenizer/gpt2_encode.c src/tokenizer/tok_merge.c src/tokenizer/tokenizer.c"
  [fuzz_dataset]="src/data/dataset.c"
  [fuzz_change]="src/edit/grace.c src/edit/melo.c src/edit/ft.c"
  [fuzz_serve_request]="src/serve/serve.c"
  [fuzz_journal]="src/edit/journal.c src/edit/adaptor.c"
)
# functions whose lines are the parser proper, where a file holds more
declare -A funcs=(
  [fuzz_safetensors]='^(le64|utf8_check|json_uint|parse_dtype|cmp_span|top_keys|parse_tensor|parse_metadata|st_add_buffer|st_add_mem|st_finish|st_open_one|graft_st_open_mem|graft_st_close|graft_st_find)$'
  [fuzz_shard_index]='^(plain_file_name|open_index_text|graft_st_open_index_mem)$'
  [fuzz_serve_request]='^(req_fail|want_type|parse_completion|parse_edit|parse_score|parse_body|parse_edit_id|graft_serve_parse_request|gen_req_free)$'
  [fuzz_change]='^(apply_change|grace_replay|grace_revert|melo_replay|melo_reset|get_head|get_tensor_head|ft_replay|ft_reset)$'
  [fuzz_journal]='^(read_row|check_row|graft_journal_each|graft_journal_get|graft_journal_entry_free|replay_one|graft_journal_replay|graft_journal_get_meta|graft_adaptor_open)$'
)
names=("$@")
[ ${#names[@]} -eq 0 ] && for f in fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
cmake --build "$B" -j "${FUZZ_JOBS:-$(nproc)}" --target $(printf 'replay_%s ' "${names[@]}") > "$B/build.log" 2>&1 ||
  { tail -30 "$B/build.log"; exit 1; }
echo "| harness | inputs | file | lines | line coverage | parser functions |"
echo "|---|---:|---|---:|---:|---:|"
for n in "${names[@]}"; do
  corpus=$CORPORA/$n
  [ -d "$corpus" ] || corpus=fuzz/corpus/$n
  rm -f "$B/$n".profraw
  inputs=$(LLVM_PROFILE_FILE="$B/$n.profraw" OMP_NUM_THREADS=1 "$B/replay_$n" "$corpus" "fuzz/regress/$n" 2>/dev/null |
           sed -n 's/^replayed \([0-9]*\) inputs/\1/p')
  $PROFDATA merge -sparse "$B/$n.profraw" -o "$B/$n.profdata" || continue
  for f in ${files[$n]}; do
    # per file: "FILE  regions missed cover  functions missed executed  lines missed cover ..."
    # (and per function, -show-functions: "NAME  regions missed cover  lines missed cover ...")
    read -r lines missed <<<"$($COV report "$B/replay_$n" -instr-profile="$B/$n.profdata" "$f" 2>/dev/null |
                               awk '$1 ~ /\.c$/ {print $8, $9}')"
    pf=""
    if [ -n "${funcs[$n]:-}" ]; then
      pf=$($COV report "$B/replay_$n" -instr-profile="$B/$n.profdata" -show-functions "$f" 2>/dev/null |
           awk -v re="${funcs[$n]}" '{f = $1; sub(/^.*:/, "", f)} f ~ re && $5 ~ /^[0-9]+$/ {l += $5; m += $6}
                END {if (l) printf "%.1f%% of %d", 100 * (l - m) / l, l}')
    fi
    [ -n "${lines:-}" ] && [ "$lines" -gt 0 ] &&
      printf '| %s | %s | %s | %d | %.1f%% | %s |\n' "$n" "$inputs" "$f" "$lines" "$(awk -v l="$lines" -v m="$missed" 'BEGIN {print 100 * (l - m) / l}')" "$pf"
  done
done
