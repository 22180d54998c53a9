# lib.sh - what every CLI test script (tests/cli_*.sh) shares, sourced by
# them: pass/fail counters, a scratch folder removed on exit, and the
# closing line CTest reads. (Not named cli_*.sh: CMake runs those as tests.)
#   cli_begin NAME   counters to zero, $tmp = a new folder under /tmp
#   ok / bad TEXT    count a check (bad prints TEXT on stderr)
#   cli_end NAME     "NAME: P passed, F failed"; the status is F == 0
pass=0 fail=0
cli_begin() {
  tmp=$(mktemp -d "/tmp/graft_$1.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
}
ok()  { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*" >&2; }
cli_end() {
  echo "$1: $pass passed, $fail failed"
  [ $fail -eq 0 ]
}

# expect_rc WANT DESCRIPTION -- command...
expect_rc() {
  local want=$1 what=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "$what: exit $rc, want $want; stderr: $(head -c 300 "$tmp/err")"; fi
}
# expect_err SUBSTRING DESCRIPTION -- command...  (exit 1, message on stderr)
expect_err() {
  local sub=$1 what=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -eq 1 ] && grep -qF -- "$sub" "$tmp/err"; then ok
  else bad "$what: exit $rc, stderr '$(head -c 300 "$tmp/err")' lacks '$sub'"; fi
}
