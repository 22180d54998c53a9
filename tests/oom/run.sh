#!/usr/bin/env bash
# run.sh - allocation-failure injection: make the k-th allocation of a graft
# command fail (tests/oom/failmalloc.c, LD_PRELOAD) and check that it exits
# cleanly (0, or non-zero with a message), never with a signal or a hang, and
# that a failed edit leaves a journal that still opens.
#
#   bash tests/oom/run.sh BUILD_DIR [--quick] [--only NAME[,NAME...]] [--samples S]
#
# BUILD_DIR holds a plain graft, e.g.
#   cmake -S . -B build-oom-plain -DCMAKE_BUILD_TYPE=Release && make -C build-oom-plain graft
# or an ASan build (-DGRAFT_SANITIZE=address,undefined, gcc's dynamic libasan):
# then the preload sits in front of libasan (verify_asan_link_order=0) and every
# try is also checked for leaks (LeakSanitizer) and ASan/UBSan reports.
# For each scenario the command is first run once with GRAFT_FAIL_COUNT=1 to
# count its allocation calls N (from the entry of main; see failmalloc.c) and
# record its distinct allocation sites (caller and caller's caller, with the
# first call number k from each: GRAFT_FAIL_SITES). Then k runs over
#   - the first call of every site, and
#   - 1, 1+stride, ... <= N and N, stride = ceil(N / S), S = --samples (100);
# with --quick: the first call of S = 25 sites spread evenly over the run
# (k = 1 and N included), so each try fails a different site. --quick leaves
# out the two slowest scenarios, edit-emmet (memit.c's code, as edit-memit)
# and edit-mend, unless --only names them: with them all 19 took 2m38s on the
# 2 cores shared with other test campaigns (plain build, 2026-12-06), over the
# ~2 minutes CTest's oom_quick may take; without them 2m02s (396 tries).
# Reported per scenario: allocation calls, distinct sites (those in the graft
# binary; the rest are in libc, SQLite, cJSON, libgomp...), stride, k values
# tried, sites failed at least once, clean failures, tolerated failures (ok),
# and the problems: crash (signal or sanitizer report), hang (60 s), no-msg
# (non-zero exit without a message), journal (does not open, or a try that
# exited 0 lacks its record; for export: what a try that exited 0 wrote differs
# from the reference, or a failed --gguf left a file), wrong (exit 0 but stdout
# differs), leak (ASan).
# Inputs some scenarios need are made once, uninjected, for the selected
# scenarios only: GGUF conversions (export --gguf), a finished FT run and its
# reference export (an export that exits 0 must write the reference's bytes),
# and a 3-edit GRACE run cut back to 2 journal rows (sqlite3) that each
# edit-resume try copies and continues with --resume.
# Exit status: 0 when no crash, hang, leak or broken journal was found, 1 otherwise.
# OOM_KEEP=DIR keeps the stderr of each sanitizer/leak report there.
set -u
BUILD=${1:?usage: run.sh BUILD_DIR [--quick] [--only NAME[,NAME...]] [--samples S]}
shift
SAMPLES=100 ONLY= SITES=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) SAMPLES=25 SITES=0 ;;   # see the header
    --samples) SAMPLES=$2; shift ;;
    --only) ONLY=$2; shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GRAFT=$(cd "$BUILD" && pwd)/graft
DATA=$ROOT/tests/data
BIN=$DATA/stories260K.bin
[ -x "$GRAFT" ] || { echo "run.sh: no graft binary in $BUILD" >&2; exit 2; }
SAN=0
if ldd "$GRAFT" 2>/dev/null | grep -q 'libtsan\|libmsan'; then
  echo "run.sh: $GRAFT is built with TSan/MSan; use a plain or ASan build" >&2; exit 2
elif ldd "$GRAFT" 2>/dev/null | grep -q 'libasan'; then
  # ASan (dynamic runtime): the preload goes before libasan, its calls reach
  # ASan's malloc through dlsym(RTLD_NEXT), and LeakSanitizer checks the exit
  SAN=1
  export ASAN_OPTIONS=verify_asan_link_order=0:allocator_may_return_null=1:detect_leaks=1:abort_on_error=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/graft-oom.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -O1 -shared -fPIC "$ROOT/tests/oom/failmalloc.c" -o "$tmp/failmalloc.so" -ldl || exit 2
PRELOAD=$tmp/failmalloc.so
export OMP_NUM_THREADS=1   # one thread: the k-th call is the same call every run

# run ID CMD...: under the injector with $FAIL_AT; sets rc; stdout/stderr in $tmp/{out,err}.ID
run() {
  local id=$1; shift
  timeout 60 env LD_PRELOAD="$PRELOAD" GRAFT_FAIL_AT="${FAIL_AT:-0}" GRAFT_FAIL_COUNT="${FAIL_COUNT:-0}" GRAFT_FAIL_LOG=1 \
    "$@" >"$tmp/out.$id" 2>"$tmp/err.$id" </dev/null   # the preload reaches graft, not timeout
  rc=$?
}

# want NAME...: is one of these scenarios selected (inputs are made only for those)
want() {
  [ -z "$ONLY" ] && return 0
  local n; for n in "$@"; do case ",$ONLY," in *",$n,"*) return 0 ;; esac; done
  return 1
}
# setup WHAT CMD...: an input made once, without injection
setup() {
  local what=$1; shift
  "$@" >/dev/null 2>"$tmp/err.setup" || { echo "run.sh: could not make $what: $(tail -2 "$tmp/err.setup")" >&2; exit 2; }
}
EDATA=(--data "$DATA/stories_edits.jsonl" --eval-at end --no-progress)
# a finished GRACE run folder for the journal-write scenario
setup "the base run" "$GRAFT" edit -m "$BIN" --method grace "${EDATA[@]}" --n 2 --out "$tmp/base-run"
# GGUF files to load: stories260K (llama) and the GPT-2 fact model, converted
want load-gguf && setup "a GGUF" "$GRAFT" export -m "$BIN" --gguf "$tmp/s.gguf"
want load-gguf-gpt2 && setup "a GPT-2 GGUF" "$GRAFT" export -m "$ROOT/models/factbase" --gguf "$tmp/fb.gguf"
# a 3-edit GRACE stream stopped after its 2nd edit, as a kill right after that
# edit's commit leaves it: the finished run with its last journal row deleted
# (the results line past edit 2 is dropped by the resumed run)
if want edit-resume && ! command -v sqlite3 >/dev/null; then
  echo "edit-resume: skipped (no sqlite3 to cut its template)"; SKIP_RESUME=1
elif want edit-resume; then
  setup "the resume template" "$GRAFT" edit -m "$BIN" --method grace "${EDATA[@]}" --n 3 --out "$tmp/resume-tmpl"
  sqlite3 "$tmp/resume-tmpl/journal.sqlite" "delete from edits where seq = 2" \
    || { echo "run.sh: could not cut the resume template (sqlite3)" >&2; exit 2; }
fi
# a finished 1-edit FT run (a weight editor) and its export, the reference
if want export export-gguf; then
  setup "the FT run" "$GRAFT" edit -m "$BIN" --method ft "${EDATA[@]}" --n 1 --out "$tmp/ft-run"
  setup "the reference export" "$GRAFT" export -m "$BIN" --adaptor "$tmp/ft-run" --out "$tmp/ref-export" --gguf "$tmp/ref.gguf"
fi

# scenario NAME POST CMD... : POST is a shell function run after each try (or "-"),
# with $rc set; "-" compares the stdout of a try that exits 0 with the
# uninjected run's (a tolerated failure must not change the answer).
# CMD may use @OUT@ for a fresh output folder per try
total_bad=0
QUICK_SKIP="edit-emmet edit-mend"   # not in --quick (see the header)
scenario() {
  local name=$1 post=$2; shift 2
  [ -n "$ONLY" ] && case ",$ONLY," in *",$name,"*) ;; *) return 0 ;; esac
  [ -z "$ONLY" ] && [ "$SITES" = 0 ] && case " $QUICK_SKIP " in *" $name "*) return 0 ;; esac
  local cmd=("$@") out="$tmp/out" i
  prep() {  # fresh output folder; the command line with @OUT@ replaced
    rm -rf "$out" "$out.gguf" "$out.gguf.tmp" "$tmp/undo-run"; cp -r "$tmp/base-run" "$tmp/undo-run"
    [ -n "${FROM:-}" ] && cp -r "$FROM" "$out"   # the folder the command continues
    argv=(); for i in "${cmd[@]}"; do argv+=("${i//@OUT@/$out}"); done
  }
  prep
  # (the site trace's backtrace() loads libgcc_s: LeakSanitizer would report that, so no leak check here)
  ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:detect_leaks=0} \
    GRAFT_FAIL_SITES=$tmp/allsites FAIL_AT=0 FAIL_COUNT=1 run count "${argv[@]}"
  local n; n=$(sed -n 's/^failmalloc: \([0-9]*\) allocation calls$/\1/p' "$tmp/err.count" | tail -1)
  if [ "$rc" -ne 0 ] || [ -z "$n" ]; then
    echo "$name: FAILED without injection (exit $rc): $(tail -2 "$tmp/err.count")"; total_bad=$((total_bad + 1)); return
  fi
  local stride=$(( (n + SAMPLES - 1) / SAMPLES )); [ "$stride" -lt 1 ] && stride=1
  local ks k tried=0 clean=0 okc=0 leak=0 crash=0 hang=0 silent=0 badj=0 wrong=0 crashes="" site
  : >"$tmp/sites"
  local nall nallg
  nall=$(wc -l <"$tmp/allsites"); nallg=$(awk -v g="$GRAFT+" 'index($2, g) == 1' "$tmp/allsites" | wc -l)
  if [ "$SITES" = 1 ]; then
    ks=$( { seq 1 "$stride" "$n"; echo "$n"; awk '{print $1}' "$tmp/allsites"; } | sort -nu)
  else  # every ceil(sites / S)-th site by first call
    ks=$( { echo 1; echo "$n"; awk '{print $1}' "$tmp/allsites" | sort -n |
            awk -v s="$SAMPLES" -v m="$nall" 'BEGIN {d = int((m + s - 1) / s); if (d < 1) d = 1} (NR - 1) % d == 0'; } | sort -nu)
    stride=0
  fi
  local t0=$SECONDS
  for k in $ks; do
    prep
    FAIL_AT=$k run try "${argv[@]}"
    tried=$((tried + 1))
    awk -v k="$k" '$1 == k {print $2, $3}' "$tmp/allsites" >>"$tmp/sites"
    if [ "$SAN" = 1 ] && grep -q 'ERROR: LeakSanitizer' "$tmp/err.try"; then
      leak=$((leak + 1)); crashes="$crashes k=$k:leak"; [ -n "${OOM_KEEP:-}" ] && cp "$tmp/err.try" "$OOM_KEEP/$name.$k.err"
    elif [ "$SAN" = 1 ] && grep -q 'ERROR: AddressSanitizer\|runtime error:' "$tmp/err.try"; then
      crash=$((crash + 1)); crashes="$crashes k=$k:sanitizer"; [ -n "${OOM_KEEP:-}" ] && cp "$tmp/err.try" "$OOM_KEEP/$name.$k.err"
    elif [ "$rc" -eq 0 ]; then okc=$((okc + 1))
    elif [ "$rc" -eq 124 ]; then hang=$((hang + 1)); crashes="$crashes k=$k:hang"
    elif [ "$rc" -ge 128 ]; then crash=$((crash + 1)); crashes="$crashes k=$k:SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
    elif ! grep -qv '^failmalloc:' "$tmp/err.try"; then silent=$((silent + 1)); crashes="$crashes k=$k:exit-$rc-no-message"
    else clean=$((clean + 1)); fi
    if [ "$post" != "-" ]; then
      "$post" || { badj=$((badj + 1)); crashes="$crashes k=$k:journal"; }
    elif [ "$rc" -eq 0 ] && ! cmp -s "$tmp/out.try" "$tmp/out.count"; then
      wrong=$((wrong + 1)); crashes="$crashes k=$k:wrong-output"
    fi
  done
  local nsites ngraft
  nsites=$(sort -u "$tmp/sites" | wc -l)
  ngraft=$(sort -u "$tmp/sites" | awk -v g="$GRAFT+" 'index($1, g) == 1' | wc -l)
  printf '%-12s allocs %6d sites %3d (graft %3d) stride %4d tried %4d sites-failed %3d (graft %3d) | clean-fail %4d ok %3d | crash %d hang %d no-msg %d journal %d wrong %d leak %d (%ds)\n' \
    "$name" "$n" "$nall" "$nallg" "$stride" "$tried" "$nsites" "$ngraft" "$clean" "$okc" "$crash" "$hang" "$silent" "$badj" "$wrong" "$leak" $((SECONDS - t0))
  [ -n "$crashes" ] && echo "  problems:$crashes"
  total_bad=$((total_bad + crash + hang + silent + badj + wrong + leak))
}

# the journal of the try's folder opens (or there clearly is none); after a
# try that exited 0 it holds what it should: WANT lines matching PATTERN
journal_ok() {
  local d=$1 pat=$2 want=$3
  if ! "$GRAFT" edits list --adaptor "$d" >"$tmp/list" 2>"$tmp/err.list"; then
    grep -q 'no edit journal here' "$tmp/err.list" || return 1
    [ "$rc" -ne 0 ]; return
  fi
  [ "$rc" -ne 0 ] || [ "$(grep -c -- "$pat" "$tmp/list")" -eq "$want" ]
}
journal_out() { journal_ok "$tmp/out" ' edit ' 1; }                   # the one edit is there
journal_undo() { journal_ok "$tmp/undo-run" ' undo .*undoes edit 1' 1; }  # the undo is recorded
# resumed: the 2 edits it held are still there, the 3rd too after exit 0
journal_resume() {
  "$GRAFT" edits list --adaptor "$tmp/out" >"$tmp/list" 2>"$tmp/err.list" || return 1
  local n; n=$(grep -c ' edit ' "$tmp/list")
  [ "$n" -ge 2 ] && { [ "$rc" -ne 0 ] || [ "$n" -eq 3 ]; }
}
# an export that exited 0 wrote the reference's bytes; a failed one left no
# GGUF file (it is written as .tmp and renamed) and no .tmp
export_hf() { [ "$rc" -ne 0 ] || diff -r "$tmp/out" "$tmp/ref-export" >/dev/null; }
export_gguf() {
  [ ! -e "$tmp/out.gguf.tmp" ] || return 1
  if [ "$rc" -eq 0 ]; then cmp -s "$tmp/out.gguf" "$tmp/ref.gguf"; else [ ! -e "$tmp/out.gguf" ]; fi
}

E=(edit -m "$BIN" "${EDATA[@]}" --n 1 --out @OUT@)
E2=(edit -m "$BIN" "${EDATA[@]}" --n 2 --batch 2 --out @OUT@)   # one batch of 2: a journal row
scenario load-bin      - "$GRAFT" inspect -m "$BIN"
scenario load-hf       - "$GRAFT" inspect -m "$DATA/llama-stories260K-hf"
scenario load-gpt2     - "$GRAFT" inspect -m "$ROOT/models/factpara"
scenario tok-llama2c   - "$GRAFT" tokenize -m "$BIN" --text "Lily saw a big red ball."
scenario tok-gpt2      - "$GRAFT" tokenize --tokenizer "$DATA/gpt2-tokenizer" --text "Hello world, it's a test."
scenario tok-factpara  - "$GRAFT" tokenize -m "$ROOT/models/factpara" --text "The capital of France is Paris."
scenario edit-grace    journal_out "$GRAFT" "${E[@]}" --method grace
scenario edit-melo     journal_out "$GRAFT" "${E[@]}" --method melo
scenario edit-rome     journal_out "$GRAFT" "${E[@]}" --method rome
scenario edit-ft       journal_out "$GRAFT" "${E[@]}" --method ft
scenario journal-undo  journal_undo "$GRAFT" edits undo 1 --adaptor "$tmp/undo-run" -m "$BIN"
scenario load-gguf     - "$GRAFT" inspect -m "$tmp/s.gguf"
scenario load-gguf-gpt2 - "$GRAFT" inspect -m "$tmp/fb.gguf"
scenario edit-memit    journal_out "$GRAFT" "${E2[@]}" --method memit
scenario edit-emmet    journal_out "$GRAFT" "${E2[@]}" --method emmet
scenario edit-mend     journal_out "$GRAFT" edit -m "$ROOT/models/factbase" --method mend --data "$ROOT/data/facts/edit_stream.json" \
  --n 1 --eval-at end --upstream-n 5 --err-sample 5 --no-progress --out @OUT@
[ -z "${SKIP_RESUME:-}" ] && FROM=$tmp/resume-tmpl \
scenario edit-resume   journal_resume "$GRAFT" edit -m "$BIN" --method grace "${EDATA[@]}" --n 3 --out @OUT@ --resume
scenario export        export_hf "$GRAFT" export -m "$BIN" --adaptor "$tmp/ft-run" --out @OUT@
scenario export-gguf   export_gguf "$GRAFT" export -m "$BIN" --adaptor "$tmp/ft-run" --gguf @OUT@.gguf

if [ "$total_bad" -ne 0 ]; then echo "oom: $total_bad problem(s)"; exit 1; fi
echo "oom: no crash, hang, leak or broken journal"
