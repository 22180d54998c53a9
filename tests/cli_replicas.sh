#!/usr/bin/env bash
# cli_replicas.sh - graft serve replicas sharing one edit journal in
# PostgreSQL (docs/REPLICAS.md), on stories260K with GRACE, against a
# throw-away PostgreSQL cluster this script creates in its scratch folder
# (initdb / pg_ctl, Unix socket only; run as `nobody` when the tests run as
# root). Checks: a journal copied into PostgreSQL and back replays to the same
# codebook bytes; an edit on replica A is answered by B and C; concurrent
# edits on A and B converge to byte-identical codebooks on all three; an undo
# on one reaches all; SIGKILL of A in the middle of a stream of edits loses no
# acknowledged edit, B goes on, and A restarted catches up (and MELO and ROME
# fleets converge too, undo included); with PostgreSQL
# stopped completions go on, edits get 503 naming the cause, and they resume
# when it returns; a journal of another model and a row of a newer format are
# refused with messages that say so.
# Skipped (77) where PostgreSQL's server is not installed (scripts/deps.sh).
# Usage: cli_replicas.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_replicas.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
BIN=$DATA/stories260K.bin
. "$(dirname "$0")/lib.sh"
PGBIN=${GRAFT_PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PGBIN/initdb" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
  echo "cli_replicas: PostgreSQL's server is not installed ($PGBIN/initdb); skipped (scripts/deps.sh installs postgresql)" >&2
  exit 77
fi
for t in curl jq; do command -v $t >/dev/null || { echo "cli_replicas: $t is not installed; skipped" >&2; exit 77; }; done
cli_begin replicas
PSQL=$PGBIN/psql

# ---- the throw-away cluster (PostgreSQL refuses to run as root)
chmod 755 "$tmp"
pgdir=$tmp/pg
mkdir -p "$pgdir"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$pgdir"
  as_pg=(runuser -u nobody --)
fi
"${as_pg[@]}" "$PGBIN/initdb" -D "$pgdir/data" -U graft -A trust --no-sync >"$tmp/initdb.log" 2>&1 ||
  { echo "cli_replicas: initdb failed: $(tail -3 "$tmp/initdb.log")" >&2; exit 1; }
pg_start() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w -t 30 \
               -o "-k $pgdir -c listen_addresses='' -c fsync=off" start >/dev/null; }
pg_stop() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1; }
pg_start || { echo "cli_replicas: the PostgreSQL server did not start: $(tail -3 "$pgdir/log")" >&2; exit 1; }
URI="postgresql://graft@/postgres?host=$pgdir"
sql() { "$PSQL" -X -q -t -A "$URI" -c "$1"; }

# ---- replicas: rep_start NAME ARGS... (sets port_NAME, pid_NAME), rep_kill NAME [SIG]
declare -A rpid rport
rep_start() {
  local n=$1; shift
  "$GRAFT" serve -m "$BIN" --port 0 --threads 1 --allow-unauthenticated-edits --journal "$URI" --replica-of "${FLEET:-fleet}" "$@" \
    >"$tmp/$n.log" 2>&1 &
  rpid[$n]=$!
  rport[$n]=
  for _ in $(seq 1 150); do
    local p
    p=$(sed -nE 's/.*http:\/\/127\.0\.0\.1:([0-9]+)\/.*/\1/p' "$tmp/$n.log" | head -1)
    if [ -n "$p" ] && curl -s -o /dev/null "http://127.0.0.1:$p/v1/models"; then rport[$n]=$p; return 0; fi
    kill -0 "${rpid[$n]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "replica $n did not start: $(tail -3 "$tmp/$n.log")" >&2
  return 1
}
rep_kill() { [ -n "${rpid[$1]:-}" ] && kill -"${2:-TERM}" "${rpid[$1]}" 2>/dev/null && wait "${rpid[$1]}" 2>/dev/null; rpid[$1]=; }
trap 'for n in "${!rpid[@]}"; do rep_kill $n; done; pg_stop; rm -rf "$tmp"' EXIT
u() { echo "http://127.0.0.1:${rport[$1]}"; }
# edit NAME PROMPT TARGET: status code; body in $tmp/edit.NAME
edit() { curl -s -o "$tmp/edit.$1" -w '%{http_code}' "$(u $1)/v1/edits" -d "{\"prompt\": \"$2\", \"target\": \"$3\"}"; }
complete() { curl -s -D "$tmp/hdr.$1" "$(u $1)/v1/completions" -d "{\"prompt\": \"$2\", \"max_tokens\": 4, \"temperature\": 0}" | jq -r '.choices[0].text'; }
pos() { curl -s "$(u $1)/v1/replication" | jq -r .journal_position; }
state() { curl -s -o "$2" "$(u $1)/v1/replication/state"; }
# wait_pos NAME N: until replica NAME holds journal position N (10 s)
wait_pos() { for _ in $(seq 1 100); do [ "$(pos $1)" = "$2" ] && return 0; sleep 0.1; done; return 1; }

# ---- a run folder's journal into PostgreSQL and back: same codebook bytes
"$GRAFT" edit -m "$BIN" --method grace --data "$DATA/stories_edits.jsonl" --out "$tmp/run" --n 5 --eval-at end \
  --no-progress >/dev/null 2>&1
if [ -f "$tmp/run/journal.sqlite" ]; then
  expect_rc 0 "import a folder into PostgreSQL" -- "$GRAFT" edits import "$tmp/run" --adaptor "$URI#copy"
  expect_rc 0 "import it back into a folder" -- "$GRAFT" edits import "$URI#copy" --adaptor "$tmp/back"
  expect_rc 1 "import into a journal that exists" -- "$GRAFT" edits import "$tmp/run" --adaptor "$URI#copy"
  "$GRAFT" edits export "$tmp/s.sqlite.st" --adaptor "$tmp/run" -m "$BIN" >/dev/null 2>&1
  "$GRAFT" edits export "$tmp/s.pg.st" --adaptor "$URI#copy" -m "$BIN" >/dev/null 2>&1
  "$GRAFT" edits export "$tmp/s.back.st" --adaptor "$tmp/back" -m "$BIN" >/dev/null 2>&1
  [ -s "$tmp/s.sqlite.st" ] && cmp -s "$tmp/s.sqlite.st" "$tmp/s.pg.st" && cmp -s "$tmp/s.sqlite.st" "$tmp/s.back.st" && ok ||
    bad "replaying the SQLite, PostgreSQL and copied-back journals gives different codebooks"
  [ "$("$GRAFT" edits list --adaptor "$tmp/run" | tail -n +2)" = "$("$GRAFT" edits list --adaptor "$URI#copy" | tail -n +2)" ] && ok ||
    bad "edits list differs between the folder and its PostgreSQL copy"
else
  bad "could not make a run folder with graft edit: $(ls "$tmp/run" 2>&1)"
fi

# ---- messages never show a password; GRAFT_JOURNAL names the journal where no --adaptor does
expect_err "graft:***@" "a URI's password in a message" -- "$GRAFT" edits list --adaptor "postgresql://graft:sekrit@/postgres?host=$pgdir#nope"
grep -q sekrit "$tmp/err" && bad "the password is in the message: $(cat "$tmp/err")" || ok
[ "$(GRAFT_JOURNAL="$URI#copy" "$GRAFT" edits list | wc -l)" = 6 ] && ok || bad "GRAFT_JOURNAL=URI graft edits list"
expect_err "journal unavailable" "a journal whose server is not there" -- \
  "$GRAFT" edits list --adaptor "postgresql://graft@/postgres?host=$tmp/nowhere#x"

# ---- three replicas; an edit on A is answered by B and C
rep_start A --method grace || bad "replica A did not start"
rep_start B || bad "replica B did not start"
rep_start C || bad "replica C did not start"
P='Lily wanted a ball, so mom gave Lily a'
before=$(complete B "$P")
[ "$(edit A "$P" cake)" = 200 ] && jq -e '.id == 1 and .journal_position == 1' "$tmp/edit.A" >/dev/null && ok ||
  bad "edit on A: $(cat "$tmp/edit.A")"
wait_pos B 1 && wait_pos C 1 && ok || bad "B/C did not reach position 1"
after=$(complete B "$P")
[ "${after# cake}" != "$after" ] && [ "$before" != "$after" ] && ok || bad "B after A's edit says '$after' (before: '$before')"
grep -qi '^X-Graft-Journal-Position: 1' "$tmp/hdr.B" && ok || bad "B's completion lacks X-Graft-Journal-Position: 1"
[ "$(complete C "$P")" = "$after" ] && ok || bad "C does not answer as B"
jq -e '.delay_ms.n >= 1 and .applied_from_others == 1' <(curl -s "$(u B)/v1/replication") >/dev/null && ok ||
  bad "B's replication figures: $(curl -s "$(u B)/v1/replication")"

# ---- concurrent edits on A and B converge bit for bit
names=(Ann Bob Cat Dan Eve Fay Gus Hal Ivy Jon Kim Leo)
things=(kite drum boat hat cup sock bell frog star cake ring leaf)
for side in A B; do
  ( for i in $(seq 0 11); do
      [ $(( i % 2 )) -eq $([ $side = A ] && echo 0 || echo 1) ] || continue
      code=$(edit $side "${names[$i]} wanted a toy, so mom gave ${names[$i]} a" "${things[$i]}"); echo "$code" >>"$tmp/codes.$side"
    done ) &
done
( for i in $(seq 1 12); do complete C "$P" >/dev/null; done ) &
wait $(jobs -p | grep -v -E "^(${rpid[A]}|${rpid[B]}|${rpid[C]})$") 2>/dev/null
[ "$(sort -u "$tmp/codes.A" "$tmp/codes.B")" = 200 ] && ok || bad "concurrent edits: codes $(cat "$tmp/codes.A" "$tmp/codes.B" | tr '\n' ' ')"
head=$(sql "SELECT max(id) FROM graft_edits WHERE journal = 'fleet'")
[ "$head" = 13 ] && ok || bad "journal head after 13 edits: $head"
for n in A B C; do wait_pos $n "$head" || bad "$n did not reach $head"; state $n "$tmp/st.$n"; done
"$GRAFT" edits export "$tmp/st.replay" --adaptor "$URI#fleet" -m "$BIN" >/dev/null 2>&1
[ -s "$tmp/st.A" ] && cmp -s "$tmp/st.A" "$tmp/st.B" && cmp -s "$tmp/st.A" "$tmp/st.C" && ok || bad "A, B and C hold different codebooks after concurrent edits"
cmp -s "$tmp/st.A" "$tmp/st.replay" && ok || bad "the replicas' codebook is not the journal's replayed (graft edits export)"

# ---- undo is a journal row like any other
[ "$(curl -s -o "$tmp/undo" -w '%{http_code}' -X DELETE "$(u C)/v1/edits/1")" = 200 ] && ok || bad "undo on C: $(cat "$tmp/undo")"
for n in A B; do wait_pos $n $((head + 1)) || bad "$n did not apply the undo"; done
[ "$(complete A "$P")" = "$before" ] && ok || bad "A after the undo on C: '$(complete A "$P")', want '$before'"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$(u B)/v1/edits/1")" = 409 ] && ok || bad "a second undo on B should be 409"

# ---- SIGKILL of A in the middle of a stream of edits: nothing acknowledged is lost
( for i in $(seq 1 40); do
    code=$(curl -s -o "$tmp/k.$i" -w '%{http_code}' "$(u A)/v1/edits" -d "{\"prompt\": \"Tom had a red $i, and he\", \"target\": \"ran\"}")
    [ "$code" = 200 ] && jq -r .id "$tmp/k.$i" >>"$tmp/acked"
  done ) &
loop=$!
for _ in $(seq 1 100); do [ -f "$tmp/acked" ] && [ "$(wc -l <"$tmp/acked")" -ge 8 ] && break; sleep 0.05; done
rep_kill A KILL
wait $loop 2>/dev/null
n_acked=$(wc -l <"$tmp/acked")
[ "$n_acked" -ge 8 ] && ok || bad "only $n_acked edits acknowledged before the kill"
lost=0
while read -r id; do
  [ "$(sql "SELECT count(*) FROM graft_edits WHERE journal = 'fleet' AND id = $id AND kind = 'edit'")" = 1 ] || lost=$((lost+1))
done <"$tmp/acked"
[ $lost -eq 0 ] && ok || bad "$lost of $n_acked acknowledged edits are not in the journal"
head=$(sql "SELECT max(id) FROM graft_edits WHERE journal = 'fleet'")
[ "$(edit B "Sue saw a big dog, and the dog" "barked")" = 200 ] && ok || bad "B after A was killed: $(cat "$tmp/edit.B")"
head=$((head + 1))
rep_start A || bad "A did not restart"
wait_pos A "$head" && wait_pos C "$head" && ok || bad "restarted A / C did not reach $head (A at $(pos A))"
state A "$tmp/st2.A"; state B "$tmp/st2.B"; state C "$tmp/st2.C"
cmp -s "$tmp/st2.A" "$tmp/st2.B" && cmp -s "$tmp/st2.A" "$tmp/st2.C" && ok || bad "restarted A's codebook differs from B's and C's"

# ---- PostgreSQL stopped: completions go on, edits 503 naming the cause; back: edits resume
pg_stop
want=$(complete B "$P")
[ -n "$want" ] && grep -qi "^X-Graft-Journal-Position: $head" "$tmp/hdr.B" && ok || bad "completion on B with PostgreSQL down: '$want'"
code=$(edit B "Ben found a shiny" "coin")
[ "$code" = 503 ] && grep -q "journal unavailable" "$tmp/edit.B" && ok || bad "edit with PostgreSQL down: $code $(cat "$tmp/edit.B")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$(u C)/v1/completions" -d "{\"prompt\": \"$P\", \"max_tokens\": 2}")" = 200 ] && ok ||
  bad "C's completion with PostgreSQL down"
pg_start || bad "PostgreSQL did not restart"
code=000
for _ in $(seq 1 50); do code=$(edit B "Ben found a shiny" "coin"); [ "$code" = 200 ] && break; sleep 0.2; done
[ "$code" = 200 ] && ok || bad "edit after PostgreSQL returned: $code $(cat "$tmp/edit.B")"
head=$((head + 1))
wait_pos A "$head" && wait_pos C "$head" && ok || bad "A/C did not follow after PostgreSQL returned"

# ---- another model's journal, and a row from a newer graft
sql "UPDATE graft_meta SET value = 'other-model' WHERE journal = 'fleet' AND key = 'model_fingerprint'"
code=$(edit C "Max liked to eat" "apples")
[ "$code" != 200 ] && grep -q "journal's edits are for model other-model" "$tmp/edit.C" && ok || bad "an edit on a journal of another model: $code $(cat "$tmp/edit.C")"
expect_err "made on another model" "a replica started on a journal of another model" -- \
  "$GRAFT" serve -m "$BIN" --port 0 --journal "$URI" --replica-of fleet
sql "UPDATE graft_meta SET value = (SELECT value FROM graft_meta WHERE journal = 'copy' AND key = 'model_fingerprint') WHERE journal = 'fleet' AND key = 'model_fingerprint'"
sql "INSERT INTO graft_edits SELECT journal, id + 1000, 2, seq, kind, undoes, method, request, action, iterations, loss_first, loss_last, reproduced, rows_added, rows_changed, seconds, change, created FROM graft_edits WHERE journal = 'fleet' AND id = 2"
expect_err "written by a newer graft" "a row of a newer format" -- "$GRAFT" edits list --adaptor "$URI#fleet"
sleep 0.6
curl -s "$(u B)/v1/replication" | jq -r .follow_error | grep -q "newer graft" && ok || bad "B's follow_error: $(curl -s "$(u B)/v1/replication")"
grep -q "written by a newer graft" "$tmp/B.log" && ok || bad "B's log does not say why it stopped following"

for n in A B C; do rep_kill $n; done

# ---- the editors that undo by reset + replay (MELO) and the weight editors (ROME) converge too
for meth in melo rome; do
  FLEET=$meth rep_start M1 --method $meth || bad "$meth replica 1 did not start"
  FLEET=$meth rep_start M2 || bad "$meth replica 2 did not start"
  rm -f "$tmp/codes.M1" "$tmp/codes.M2"
  for side in M1 M2; do
    ( for i in 1 2 3; do echo "$(edit $side "$side kid $i wanted a toy, so mom gave them a" "${things[$i]}")" >>"$tmp/codes.$side"; done ) &
  done
  wait $(jobs -p | grep -v -E "^(${rpid[M1]}|${rpid[M2]})$") 2>/dev/null
  [ "$(sort -u "$tmp/codes.M1" "$tmp/codes.M2")" = 200 ] && ok || bad "$meth concurrent edits: $(cat "$tmp/codes.M1" "$tmp/codes.M2" | tr '\n' ' ')"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$(u M2)/v1/edits/2")" = 200 ] && ok || bad "$meth undo on M2"
  wait_pos M1 7 && wait_pos M2 7 || bad "$meth replicas did not reach 7"
  state M1 "$tmp/$meth.1"; state M2 "$tmp/$meth.2"
  "$GRAFT" edits export "$tmp/$meth.replay" --adaptor "$URI#$meth" -m "$BIN" >/dev/null 2>&1
  [ -s "$tmp/$meth.1" ] && cmp -s "$tmp/$meth.1" "$tmp/$meth.2" && cmp -s "$tmp/$meth.1" "$tmp/$meth.replay" && ok ||
    bad "$meth replicas differ from each other or from the journal's replay"
  rep_kill M1; rep_kill M2
done
cli_end replicas
