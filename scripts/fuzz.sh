#!/usr/bin/env bash
# Build the libFuzzer harnesses (fuzz/fuzz_*.c) with clang, ASan and UBSan in
# build-fuzz/, and run each for SECONDS (default 60) from its seed corpus
# fuzz/corpus/NAME (copied: the committed seeds never grow). A crash, a
# sanitizer report, a leak or an input slower than 1 s fails the run; the
# input is left in build-fuzz/artifacts/NAME/ (add it to fuzz/regress/NAME/,
# which CTest replays as NAME_replay). Prints executions per harness.
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]
# FUZZ_RUNS=N also stops each harness after N executions (a campaign's
# target count); FUZZ_JOBS=N builds with N jobs (default: every core).
set -u
SECONDS_EACH=${1:-60}; shift || true
cd "$(dirname "$0")/.."
B=${FUZZ_BUILD:-build-fuzz}
CC=clang cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRAFT_FUZZ=ON -DGRAFT_SANITIZE=address,undefined \
  -DGRAFT_BLAS=none -DGRAFT_NATIVE=OFF >/dev/null || exit 1
names=("$@")
[ ${#names[@]} -eq 0 ] && for f in fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
cmake --build "$B" -j "${FUZZ_JOBS:-$(nproc)}" --target "${names[@]}" > "$B/build.log" 2>&1 || { tail -30 "$B/build.log"; exit 1; }
rc=0
for n in "${names[@]}"; do
  work=$B/corpus/$n art=$B/artifacts/$n
  mkdir -p "$work" "$art"
  [ -d "fuzz/corpus/$n" ] && cp -n fuzz/corpus/"$n"/* "$work"/ 2>/dev/null
  [ -d "fuzz/regress/$n" ] && cp -n fuzz/regress/"$n"/* "$work"/ 2>/dev/null
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 OMP_NUM_THREADS=1 \
    "$B/$n" "$work" -max_total_time="$SECONDS_EACH" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -timeout=1 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$art/" -print_final_stats=1 > "$B/$n.log" 2>&1
  r=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/$n.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$B/$n.log" | tail -1)
  rate=$(grep -o 'exec/s: [0-9]*' "$B/$n.log" | tail -1)
  if [ $r -eq 0 ]; then echo "$n: ok, ${execs:-?} executions, $rate, $cov"
  else echo "$n: FAILED (exit $r), ${execs:-?} executions; see $B/$n.log and $art/"; tail -30 "$B/$n.log"; rc=1; fi
done
exit $rc
