#!/usr/bin/env bash
# cli_serve.sh - graft serve as a client sees it, with curl, on stories260K:
# the OpenAI-style completion API (plain and streamed), an edit that reaches
# the live model, the list, undo, score and stats endpoints, completions that
# run while an edit arrives (each answers wholly before or wholly after it,
# and says which through X-Graft-Journal-Position), an acknowledged edit that
# survives SIGKILL, API keys, and hostile requests answered with 4xx.
# Usage: cli_serve.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_serve.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
BIN=$DATA/stories260K.bin
. "$(dirname "$0")/lib.sh"
cli_begin serve
command -v curl >/dev/null || { echo "cli_serve: curl is not installed; skipped" >&2; exit 77; }

trap 'serve_stop; rm -rf "$tmp"' EXIT
# req METHOD PATH [BODY]: body to $tmp/body, status echoed
req() {
  if [ $# -ge 3 ]; then curl -s -o "$tmp/body" -w '%{http_code}' -X "$1" "$url$2" -H 'Content-Type: application/json' --data-binary "$3" "${H[@]}"
  else curl -s -o "$tmp/body" -w '%{http_code}' -X "$1" "$url$2" "${H[@]}"; fi
}
H=()
P='Lily wanted a ball, so mom gave Lily a'
greedy() { echo "{\"prompt\": \"$P\", \"max_tokens\": ${1:-6}, \"temperature\": 0}"; }

serve_start "$BIN" --method grace --out "$tmp/run" --allow-unauthenticated-edits
[ "$(req GET /v1/models)" = 200 ] && grep -q '"object":"list"' "$tmp/body" && grep -q '"owned_by":"graft"' "$tmp/body" && ok || bad "models: $(cat "$tmp/body")"
[ "$(req POST /v1/completions "$(greedy)")" = 200 ] && ok || bad "completion: $(cat "$tmp/body")"
before=$(jq -r '.choices[0].text' "$tmp/body")
jq -e '.object == "text_completion" and (.id | startswith("cmpl-")) and .usage.completion_tokens == 6 and .choices[0].finish_reason == "length"' "$tmp/body" >/dev/null && ok || bad "completion shape: $(cat "$tmp/body")"
[ -n "$before" ] && [ "${before# cake}" = "$before" ] && ok || bad "the unedited model already says cake: '$before'"

# streamed: the pieces join to the same text, then [DONE]
curl -sN "$url/v1/completions" -d "$(greedy | sed 's/}$/, "stream": true}/')" > "$tmp/sse"
[ "$(tail -2 "$tmp/sse" | head -1)" = "data: [DONE]" ] && ok || bad "stream does not end in [DONE]: $(tail -c 200 "$tmp/sse")"
joined=$(grep '^data: {' "$tmp/sse" | sed 's/^data: //' | jq -j '.choices[0].text')
[ "$joined" = "$before" ] && ok || bad "streamed '$joined' vs plain '$before'"
grep '^data: {' "$tmp/sse" | tail -1 | grep -q '"finish_reason":"length"' && ok || bad "last event lacks finish_reason"

# an edit reaches the live model; list, get, stats, score
[ "$(req POST /v1/edits "{\"prompt\": \"$P\", \"target\": \"cake\"}")" = 200 ] && ok || bad "edit: $(cat "$tmp/body")"
jq -e '.id == 1 and .reproduced == true and .journal_position == 1' "$tmp/body" >/dev/null && ok || bad "edit reply: $(cat "$tmp/body")"
req POST /v1/completions "$(greedy)" >/dev/null
after=$(jq -r '.choices[0].text' "$tmp/body")
[ "${after# cake}" != "$after" ] && ok || bad "after the edit: '$after'"
[ "$(req GET /v1/edits)" = 200 ] && jq -e '.data | length == 1 and .[0].target == "cake" and .[0].undone == false' "$tmp/body" >/dev/null && ok || bad "list: $(cat "$tmp/body")"
[ "$(req GET /v1/edits/1)" = 200 ] && ok || bad "get 1"
[ "$(req GET /v1/edits/7)" = 404 ] && ok || bad "get 7 should be 404"
[ "$(req GET /v1/stats)" = 200 ] && jq -e '.edits == 1 and .retention == 1 and .journal_position == 1' "$tmp/body" >/dev/null && ok || bad "stats: $(cat "$tmp/body")"
[ "$(req POST /v1/score '{"text": "Lily went to the park"}')" = 200 ] && jq -e '.nll > 0 and .tokens > 2' "$tmp/body" >/dev/null && ok || bad "score: $(cat "$tmp/body")"

# completions in flight while an edit arrives: each sees one state, and says which
for i in 1 2 3 4 5 6; do
  curl -sN -D "$tmp/h$i" "$url/v1/completions" -d "{\"prompt\": \"Tom wanted a ball, so dad gave Tom a\", \"max_tokens\": 200, \"temperature\": 0, \"stream\": true}" > "$tmp/c$i" &
done
req POST /v1/edits '{"prompt": "Tom wanted a ball, so dad gave Tom a", "target": "kite"}' > "$tmp/code"
cp "$tmp/body" "$tmp/edit_body"
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
[ "$(cat "$tmp/code")" = 200 ] && ok || bad "edit during completions: $(cat "$tmp/edit_body")"
n_after=0
for i in 1 2 3 4 5 6; do
  pos=$(tr -d '\r' < "$tmp/h$i" | sed -n 's/^X-Graft-Journal-Position: //p')
  text=$(grep '^data: {' "$tmp/c$i" | sed 's/^data: //' | jq -j '.choices[0].text')
  if { [ "$pos" = 1 ] && [ "${text# kite}" = "$text" ]; } || { [ "$pos" = 2 ] && [ "${text# kite}" != "$text" ]; }; then ok
  else bad "completion $i at journal position '$pos' gave '${text:0:40}'"; fi
  [ "$(tail -2 "$tmp/c$i" | head -1)" = "data: [DONE]" ] && ok || bad "completion $i did not finish"
  [ "$pos" = 2 ] && n_after=$((n_after + 1))
done
echo "cli_serve: of 6 completions sent with the edit, $n_after ran after it" >&2

# undo: back to the unedited answer; a second undo is a conflict
[ "$(req DELETE /v1/edits/1)" = 200 ] && ok || bad "undo: $(cat "$tmp/body")"
req POST /v1/completions "$(greedy)" >/dev/null
[ "$(jq -r '.choices[0].text' "$tmp/body")" = "$before" ] && ok || bad "after undo: $(cat "$tmp/body")"
[ "$(req DELETE /v1/edits/1)" = 409 ] && ok || bad "second undo should be 409, got $(cat "$tmp/body")"

# hostile and wrong requests: 4xx with the API's error object, the server lives on
for b in '' 'not json' '[1]' '{"prompt": 5}' '{"prompt": "a", "max_tokens": "x"}' '{"prompt": "a", "max_tokens": -1}' \
         '{"prompt": "a", "n": 3}' '{"prompt": "a", "temperature": -1}' '{"prompt": []}' '{"prompt": "a", "stop": 7}'; do
  code=$(req POST /v1/completions "$b")
  [ "$code" = 400 ] && jq -e '.error.message | length > 0' "$tmp/body" >/dev/null && ok || bad "body '$b': $code $(cat "$tmp/body")"
done
code=$(printf '{"prompt": "\xff\xfe"}' | curl -s -o "$tmp/body" -w '%{http_code}' "$url/v1/completions" --data-binary @-)
[ "$code" = 400 ] && grep -q UTF-8 "$tmp/body" && ok || bad "invalid UTF-8: $code"
long=$(printf 'word %.0s' $(seq 1 1200))
[ "$(req POST /v1/completions "{\"prompt\": \"$long\"}")" = 400 ] && grep -q context "$tmp/body" && ok || bad "over-long prompt: $(head -c 200 "$tmp/body")"
code=$(head -c 1100000 /dev/zero | tr '\0' a | curl -s -o "$tmp/body" -w '%{http_code}' "$url/v1/completions" --data-binary @-)
[ "$code" = 413 ] && ok || bad "2 MB body: $code"
[ "$(req GET /v1/nothing)" = 404 ] && ok || bad "unknown endpoint"
[ "$(req POST /v1/chat/completions '{}')" = 501 ] && ok || bad "chat completions"
[ "$(req PUT /v1/completions '{}')" = 405 ] && ok || bad "PUT"
[ "$(req POST /v1/edits '{"prompt": "x"}')" = 400 ] && ok || bad "edit without target"
[ "$(req GET /)" = 200 ] && grep -qi '<html' "$tmp/body" && ! grep -q 'https\?://' "$tmp/body" && ok || bad "the page: no html, or it loads external URLs"
[ "$(req GET /v1/models)" = 200 ] && ok || bad "the server died on hostile input"

# an acknowledged edit survives SIGKILL
[ "$(req POST /v1/edits "{\"prompt\": \"$P\", \"target\": \"hat\"}")" = 200 ] && ok || bad "edit before kill"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=
serve_start "$BIN" --adaptor "$tmp/run" --allow-unauthenticated-edits
req POST /v1/completions "$(greedy)" >/dev/null
t=$(jq -r '.choices[0].text' "$tmp/body")
[ "${t# hat}" != "$t" ] && ok || bad "after SIGKILL and restart: '$t'"
req GET /v1/edits >/dev/null
jq -e '[.data[] | select(.undone == false)] | length == 2' "$tmp/body" >/dev/null && ok || bad "live edits after restart: $(cat "$tmp/body")"
serve_stop

# keys: without one, edits are refused unless allowed; with one, every /v1 request needs it
serve_start "$BIN" --adaptor "$tmp/run"
[ "$(req POST /v1/edits "{\"prompt\": \"$P\", \"target\": \"cup\"}")" = 403 ] && ok || bad "unauthenticated edit should be 403"
[ "$(req POST /v1/completions "$(greedy)")" = 200 ] && ok || bad "completions need no key when none is set"
serve_stop
serve_start "$BIN" --adaptor "$tmp/run" --api-key sekrit-key-1
[ "$(req GET /v1/models)" = 401 ] && ok || bad "no key should be 401"
H=(-H 'Authorization: Bearer wrong-key-123'); [ "$(req GET /v1/models)" = 401 ] && ok || bad "wrong key should be 401"
H=(-H 'Authorization: Bearer sekrit-key-1')
[ "$(req GET /v1/models)" = 200 ] && ok || bad "right key"
[ "$(req DELETE /v1/edits/2)" = 200 ] && ok || bad "undo with the key: $(cat "$tmp/body")"
serve_stop

expect_err "has no journal" "adaptor folder without a journal" -- "$GRAFT" serve -m "$BIN" --adaptor "$tmp/nothing" --port 0
expect_err "--method needs --out" "method without out" -- "$GRAFT" serve -m "$BIN" --method grace
expect_err "IPv4" "bad host" -- "$GRAFT" serve -m "$BIN" --host nowhere --port 0
cli_end serve
