#!/usr/bin/env bash
# cli_serve_openai.sh - a stock OpenAI client (the official Node package
# "openai", v4, from the npm registry) pointed at graft serve's /v1 gets
# completions, plain and streamed; an edit and an undo over HTTP change what
# it gets (tests/openai_client.cjs). Skips (77) without node/npm or when the
# package cannot be fetched; it is cached in ~/.cache/graft/npm.
# Usage: cli_serve_openai.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_serve_openai.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
. "$(dirname "$0")/lib.sh"
cli_begin serve_openai
command -v node >/dev/null && command -v npm >/dev/null || { echo "cli_serve_openai: node/npm missing; skipped" >&2; exit 77; }
NPM_DIR=${GRAFT_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/graft/npm}
if [ ! -f "$NPM_DIR/node_modules/openai/package.json" ]; then
  mkdir -p "$NPM_DIR"
  timeout 180 npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" openai@4 >/dev/null 2>&1 ||
    { echo "cli_serve_openai: cannot install the npm package openai (offline?); skipped" >&2; exit 77; }
fi
KEY=test-key-12345
"$GRAFT" serve -m "$DATA/stories260K.bin" --method grace --out "$tmp/run" --port 0 --api-key "$KEY" --quiet >"$tmp/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do
  port=$(sed -nE 's/.*http:\/\/127\.0\.0\.1:([0-9]+)\/.*/\1/p' "$tmp/log" | head -1)
  [ -n "$port" ] && break; sleep 0.1
done
[ -n "$port" ] && ok || bad "server did not start: $(cat "$tmp/log")"
NODE_PATH="$NPM_DIR/node_modules" node "$(dirname "$0")/openai_client.cjs" "http://127.0.0.1:$port/v1" "$KEY" \
  "Lily wanted a ball, so mom gave Lily a" "cake" && ok || bad "the OpenAI client run failed"
cli_end serve_openai
