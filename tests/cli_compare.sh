#!/usr/bin/env bash
# cli_compare.sh - graft compare, the forgetting study's driver: the same
# stream through several methods gives one table (Markdown + JSON) and one
# plot; --jobs N runs the methods in parallel child processes and must give
# the same exact-match figures as running them one after another; a finished
# compare re-run only rebuilds the table; a failing method is named.
# Usage: cli_compare.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_compare.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
M=$DATA/stories260K.bin
. "$(dirname "$0")/lib.sh"
cli_begin compare

CMP=("$GRAFT" compare -m "$M" --methods grace,ft,ftl --data "$DATA/stories_edits.jsonl" --n 6 --eval-every 3
     --opts 'grace={"layer": 1}' --opts 'ftl={"linf": 0.02, "loss": "target_new"}')

"${CMP[@]}" --out "$tmp/seq" >"$tmp/out" 2>"$tmp/err" && ok || bad "sequential compare: $(tail -3 "$tmp/err")"
"${CMP[@]}" --jobs 3 --out "$tmp/par" >"$tmp/out2" 2>"$tmp/err2" && ok || bad "parallel compare: $(tail -3 "$tmp/err2")"
grep -q "grace started" "$tmp/err2" && grep -q "ftl finished" "$tmp/err2" && ok || bad "parallel compare says nothing: $(cat "$tmp/err2")"

for d in seq par; do
  for f in compare.md compare.json compare.svg; do [ -s "$tmp/$d/$f" ] && ok || bad "$d lacks $f"; done
  for meth in grace ft ftl; do
    grep -q "^| $meth | 6 |" "$tmp/$d/compare.md" && ok || bad "$d/compare.md has no 6-edit row for $meth"
    grep -q "\"$meth\"" "$tmp/$d/compare.json" && ok || bad "$d/compare.json lacks $meth"
    [ "$(grep -c '"edits"' "$tmp/$d/$meth/results.jsonl")" -eq 3 ] && ok || bad "$d/$meth: want 3 evaluation points (0, 3, 6)"
  done
  grep -q "<svg" "$tmp/$d/compare.svg" && grep -q ">ftl</text>" "$tmp/$d/compare.svg" && ok || bad "$d/compare.svg has no legend"
  # four panels, a curve per method in each
  [ "$(grep -c "<polyline" "$tmp/$d/compare.svg")" -eq 12 ] && ok || bad "$d/compare.svg: want 12 curves"
done
# parallel jobs write their messages to a log each
for meth in grace ft ftl; do [ -s "$tmp/par/$meth/log.txt" ] && ok || bad "no log.txt for $meth"; done

# the same stream gives the same exact-match figures either way
figs() { grep -o '"\(es_gen\|err_gen\|trr_gen\|gen_gen\|keys\)": [0-9.e+-]*' "$1"; }
for meth in grace ft ftl; do
  a=$(figs "$tmp/seq/$meth/results.jsonl"); b=$(figs "$tmp/par/$meth/results.jsonl")
  [ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "$meth: sequential and parallel runs differ: $a / $b"
done
# the edits took: GRACE and FT reach the targets
grep -q '^| grace | 6 | 1.000 |' "$tmp/seq/compare.md" && ok || bad "grace ES: $(grep '^| grace' "$tmp/seq/compare.md")"

# a finished compare re-run adds no edits and rewrites the same table
before=$(sqlite3 "$tmp/par/ft/journal.sqlite" "select count(*) from edits")
cp "$tmp/par/compare.md" "$tmp/md.before"
"${CMP[@]}" --jobs 2 --out "$tmp/par" >/dev/null 2>"$tmp/err3" && ok || bad "re-run: $(tail -3 "$tmp/err3")"
[ "$(sqlite3 "$tmp/par/ft/journal.sqlite" "select count(*) from edits")" = "$before" ] && ok || bad "re-run added edits"
cmp -s "$tmp/md.before" "$tmp/par/compare.md" && ok || bad "re-run changed the table"

# --table-only rebuilds the same table from the folders, running nothing
rm "$tmp/par/compare.md"
"$GRAFT" compare --methods grace,ft,ftl --table-only --out "$tmp/par" >/dev/null 2>"$tmp/err8" && ok || bad "--table-only: $(cat "$tmp/err8")"
cmp -s "$tmp/md.before" "$tmp/par/compare.md" && ok || bad "--table-only wrote another table"
[ "$(sqlite3 "$tmp/par/ft/journal.sqlite" "select count(*) from edits")" = "$before" ] && ok || bad "--table-only added edits"

# graft report shows the study's columns where a run has them: the weight
# change of a weight editor, not of GRACE (whose base weights never change)
r=$("$GRAFT" report "$tmp/seq/ft" --markdown 2>&1)
case "$r" in *"| edits |"*"Known gen"*"W-W0 norm"*) ok ;; *) bad "report of ft: $r" ;; esac
[ "$(printf '%s\n' "$r" | grep -c '^| [0-9]')" -eq 3 ] && ok || bad "report of ft: want 3 rows: $r"
r=$("$GRAFT" report "$tmp/seq/grace" 2>&1)
case "$r" in *"W-W0 norm"*) bad "report of grace shows a weight change: $r" ;; *"ERR gen"*) ok ;; *) bad "report of grace: $r" ;; esac

# graft edits list: a ROME run's per-edit |dW| and |W-W0| (growing), and
# their plot; a GRACE run has no weight change to plot
"$GRAFT" edit -m "$M" --method rome --data "$DATA/stories_edits.jsonl" --n 3 --eval-at end --no-progress \
  --out "$tmp/rome" >/dev/null 2>"$tmp/err6" && ok || bad "rome run: $(tail -3 "$tmp/err6")"
l=$("$GRAFT" edits list --adaptor "$tmp/rome" --svg "$tmp/rome.svg" 2>&1)
d1=$(printf '%s\n' "$l" | awk '$3 == "edit" {print $9}' | sed -n 1p); d3=$(printf '%s\n' "$l" | awk '$3 == "edit" {print $9}' | sed -n 3p)
case "$l" in *"|dW|"*"|W-W0|"*) ok ;; *) bad "edits list header: $l" ;; esac
awk -v a="$d1" -v b="$d3" 'BEGIN { exit !(a > 0 && b > a) }' && ok || bad "|W-W0| should grow over 3 ROME edits: $d1 -> $d3 in $l"
grep -q "<polyline" "$tmp/rome.svg" 2>/dev/null && ok || bad "no |dW| plot"
"$GRAFT" edits list --adaptor "$tmp/seq/grace" --svg "$tmp/g.svg" >/dev/null 2>"$tmp/err7"
[ $? -ne 0 ] && grep -q "no weight edits" "$tmp/err7" && ok || bad "--svg on a GRACE run: $(cat "$tmp/err7")"

# bad input: a bad --jobs, a method that fails is named, non-zero exit
"$GRAFT" compare -m "$M" --methods grace --data "$DATA/stories_edits.jsonl" --jobs 0 --out "$tmp/x" >/dev/null 2>"$tmp/err4"
[ $? -eq 2 ] && grep -q -- "--jobs" "$tmp/err4" && ok || bad "--jobs 0: $(cat "$tmp/err4")"
"$GRAFT" compare -m "$M" --methods grace,nosuch --data "$DATA/stories_edits.jsonl" --n 2 --jobs 2 --opts 'grace={"layer": 1}' \
  --out "$tmp/y" >/dev/null 2>"$tmp/err5"
rc=$?
[ $rc -ne 0 ] && grep -q "nosuch FAILED" "$tmp/err5" && grep -q "unknown editing method 'nosuch'" "$tmp/y/nosuch/log.txt" && ok ||
  bad "unknown method (rc $rc): $(cat "$tmp/err5") / $(cat "$tmp/y/nosuch/log.txt" 2>&1)"

# --sweep: GRACE once per radius; the trade-off table and plot
"$GRAFT" compare -m "$M" --sweep grace:eps_init=0.05,100 --opts 'grace={"layer": 2}' --data "$DATA/stories_edits.jsonl" \
  --n 6 --eval-every 6 --out "$tmp/sw" >/dev/null 2>"$tmp/err5" && ok || bad "sweep: $(tail -3 "$tmp/err5")"
[ "$(grep -c '^| [0-9]' "$tmp/sw/sweep.md" 2>/dev/null)" = 2 ] && grep -q '<svg' "$tmp/sw/sweep.svg" && ok || bad "sweep.md/svg"
grep -Eq '"eps_init":[[:space:]]*100' "$tmp/sw/grace-eps_init-100/summary.json" &&
  grep -Eq '"layer":[[:space:]]*2' "$tmp/sw/grace-eps_init-100/summary.json" && ok || bad "sweep run options"
# a radius that covers everything hijacks the locality prompts; a tiny one keeps them
t_small=$(grep '^| 0.05 ' "$tmp/sw/sweep.md" | cut -d'|' -f5 | tr -d ' ')
t_big=$(grep '^| 100 ' "$tmp/sw/sweep.md" | cut -d'|' -f5 | tr -d ' ')
awk -v a="$t_small" -v b="$t_big" 'BEGIN { exit !(a == 1 && b < 1) }' && ok || bad "sweep TRR: eps 0.05 -> $t_small, eps 100 -> $t_big"
# two sweeps (GRACE's eps, MELO's init_radius): one table section and panel each,
# and the generalisation-against-locality plot with a curve per method
"$GRAFT" compare -m "$M" --sweep grace:eps_init=0.05,100 --sweep melo:init_radius=0.05,100 --opts 'grace={"layer": 2}' \
  --data "$DATA/stories_edits.jsonl" --n 4 --eval-every 4 --out "$tmp/sw4" >/dev/null 2>"$tmp/err8" && ok || bad "two sweeps: $(tail -3 "$tmp/err8")"
[ "$(grep -c '^### ' "$tmp/sw4/sweep.md" 2>/dev/null)" = 2 ] && [ "$(grep -c '^| [0-9]' "$tmp/sw4/sweep.md")" = 4 ] && ok || bad "two sweeps: sweep.md"
grep -q '<svg' "$tmp/sw4/tradeoff.svg" && grep -q '>melo<' "$tmp/sw4/tradeoff.svg" && grep -q '>grace<' "$tmp/sw4/tradeoff.svg" && ok || bad "tradeoff.svg lacks a curve per method"
m_small=$(grep '^| 0.05 ' "$tmp/sw4/sweep.md" | sed -n 2p | cut -d'|' -f5 | tr -d ' ')
awk -v a="$m_small" 'BEGIN { exit !(a == 1) }' && ok || bad "MELO radius 0.05: TRR $m_small"
"$GRAFT" compare -m "$M" --sweep grace:eps_init --data "$DATA/stories_edits.jsonl" --out "$tmp/sw2" >/dev/null 2>"$tmp/err6"
[ $? -eq 2 ] && grep -q "METHOD:KEY=V1" "$tmp/err6" && ok || bad "bad --sweep: $(cat "$tmp/err6")"
"$GRAFT" compare -m "$M" --sweep grace:eps_init=1,x --data "$DATA/stories_edits.jsonl" --out "$tmp/sw3" >/dev/null 2>"$tmp/err7"
[ $? -eq 2 ] && grep -q "not a list of numbers" "$tmp/err7" && ok || bad "--sweep non-number: $(cat "$tmp/err7")"

cli_end cli_compare
