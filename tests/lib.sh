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

# serve_start MODEL ARGS...: `graft serve -m MODEL --port 0 ARGS` in the
# background (log: $tmp/serve.log); waits until it answers. Sets $pid, $port
# ("" when it never answered) and $url. serve_stop stops it; a script that
# serves removes it on exit with  trap 'serve_stop; rm -rf "$tmp"' EXIT
pid=
serve_stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
serve_start() {
  local model=$1; shift
  "$GRAFT" serve -m "$model" --port 0 "$@" >"$tmp/serve.log" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 1 100); do
    port=$(sed -nE 's/.*http:\/\/127\.0\.0\.1:([0-9]+)\/.*/\1/p' "$tmp/serve.log" | head -1)
    [ -n "$port" ] && curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && break
    port=
    sleep 0.1
  done
  url=http://127.0.0.1:$port
}
