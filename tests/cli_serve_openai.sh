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
trap 'serve_stop; rm -rf "$tmp"' EXIT
serve_start "$DATA/stories260K.bin" --method grace --out "$tmp/run" --api-key "$KEY" --quiet
[ -n "$port" ] && ok || bad "server did not start: $(cat "$tmp/serve.log")"
NODE_PATH="$NPM_DIR/node_modules" node "$(dirname "$0")/openai_client.cjs" "http://127.0.0.1:$port/v1" "$KEY" \
  "Lily wanted a ball, so mom gave Lily a" "cake" && ok || bad "the OpenAI client run failed"
cli_end serve_openai
