#!/usr/bin/env python3
"""cli_crash.py - an edit stream killed at random points, run out of disk
space, or pointed at a read-only folder ends, once resumed, in exactly the
state of the uninterrupted run: the same journal rows and the same editor
state file, byte for byte.

For each method (default: GRACE and FT-L, a weight editor):
  1. reference: the stream run once, uninterrupted (under failio.so, which
     only counts its write calls here);
  2. kill campaign: the same stream in a fresh folder, SIGKILLed after a random
     delay, again and again (`graft edit --resume` each time) until --kills
     kills have landed; then left to finish. After every kill the journal
     must list a contiguous prefix of the stream (seq 0..k-1, each row's
     prompt in order, nothing twice) that never shrinks: every committed
     (acknowledged) edit survives, and nothing else is there. At the end the
     journal, the editor state (codebook.safetensors / edit_state.safetensors)
     and every evaluation point of results.jsonl (timings aside) must equal
     the reference's;
  3. disk full (failio.so, LD_PRELOAD): for --diskfull values of k spread over
     the reference's write calls, a fresh run whose disk fills at its k-th
     write (that write short, every later write and fsync ENOSPC) must exit
     non-zero naming the cause ("No space left on device") or finish whole; it
     leaves no *.tmp file, a journal that lists a prefix of the stream, and no
     state file unless it is the reference's. Then, with space again,
     `--resume` must end in the reference's state;
  4. with mounts (root, or an unprivileged user namespace; skipped with a
     message otherwise): a real tmpfs too small for the run (ENOSPC from the
     kernel), then remounted read-only (the resume, and a new run folder in
     it, and an undo, refused with "Read-only file system"; `graft edits list`
     still reads the journal), then remounted larger: the resume ends in the reference's
     state.

Defaults are CTest's short run (stories260K, a generated stream of 30 edits,
GRACE and FT, 10 kills and 6 disk-full points each, about a minute on 2
cores). The campaign of docs/RELIABILITY.md (the fact model's CounterFact
stream):
  python3 tests/cli_crash.py build/graft --model models/factbase \
      --data data/facts/edit_stream.json --methods grace,ftl --n 1000 \
      --kills 100 --diskfull 40 --report crash.json
Exit 0 passed, 1 failed, 77 skipped.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING_KEYS = {"elapsed_s", "sec_per_edit"}


class Failure(Exception):
    pass


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("graft")
    ap.add_argument("--model", help="default: stories260K.bin of the test data")
    ap.add_argument("--data", help="the stream (default: --n generated edits for stories260K)")
    ap.add_argument("--n", type=int, default=30, help="edits in the stream")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs per method")
    ap.add_argument("--diskfull", type=int, default=6, help="disk-full points per method")
    ap.add_argument("--methods", default="grace,ft")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("GRAFT_CRASH_SEED", "1")))
    ap.add_argument("--no-mounts", action="store_true", help="skip the tmpfs / read-only checks")
    ap.add_argument("--report", help="write the figures as JSON here")
    ap.add_argument("--keep", help="work in this folder and keep it")
    return ap.parse_args()


def edit_cmd(a, method, out, resume):
    cmd = [a.graft, "edit", "-m", a.model, "--method", method, "--data", a.data, "--n", str(a.n),
           "--eval-every", str(a.eval_every), "--err-sample", "10", "--upstream-n", "10", "--out", str(out),
           "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def state_file(method):
    return "codebook.safetensors" if method == "grace" else "edit_state.safetensors"


def journal_rows(a, out):
    """[(seq, kind, request text)] from `graft edits list`, or None when the
    folder holds no journal yet."""
    p = subprocess.run([a.graft, "edits", "list", "--adaptor", str(out), "-m", a.model], capture_output=True, text=True)
    if p.returncode != 0:
        if "no edit journal here" in p.stderr:
            return None
        raise Failure("graft edits list %s failed (%d): %s" % (out, p.returncode, p.stderr.strip()[:300]))
    rows = []
    for line in p.stdout.splitlines()[1:]:
        f = line.split(None, 9)
        if len(f) < 10 or not f[0].isdigit():
            continue
        rows.append((int(f[1]), f[2], f[9]))
    return rows


def check_prefix(rows, ref_rows, where):
    """The journal is ref's first k rows, in order; returns k."""
    rows = rows or []
    if len(rows) > len(ref_rows):
        raise Failure("%s: %d journal rows, the stream has %d" % (where, len(rows), len(ref_rows)))
    for i, (r, q) in enumerate(zip(rows, ref_rows)):
        if r != q:
            raise Failure("%s: journal row %d is %r, the uninterrupted run's is %r" % (where, i, r, q))
    return len(rows)


def points(out):
    pts = []
    path = Path(out) / "results.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            j = json.loads(line)
            pts.append({k: v for k, v in j.items() if k not in TIMING_KEYS})
    return pts


def compare_final(a, method, out, ref, ref_rows, where):
    rows = journal_rows(a, out)
    if rows != ref_rows:
        raise Failure("%s: final journal differs from the uninterrupted run's (%d vs %d rows)"
                      % (where, len(rows or []), len(ref_rows)))
    sf = state_file(method)
    x, y = Path(out) / sf, Path(ref) / sf
    if not x.exists():
        raise Failure("%s: no %s at the end" % (where, sf))
    if x.read_bytes() != y.read_bytes():
        raise Failure("%s: %s differs from the uninterrupted run's (%d vs %d bytes)"
                      % (where, sf, x.stat().st_size, y.stat().st_size))
    px, py = points(out), points(ref)
    if px != py:
        bad = next((i for i, (u, v) in enumerate(zip(px, py)) if u != v), min(len(px), len(py)))
        raise Failure("%s: results.jsonl point %d differs: %s vs %s"
                      % (where, bad, px[bad] if bad < len(px) else None, py[bad] if bad < len(py) else None))


def leftovers(out):
    return sorted(p.name for p in Path(out).glob("*.tmp"))


def build_failio(work):
    so = Path(work) / "failio.so"
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    r = subprocess.run([cc, "-std=c11", "-O1", "-shared", "-fPIC", str(ROOT / "tests/crash/failio.c"), "-o", str(so),
                        "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure("building failio.so failed: " + r.stderr[:500])
    return so


def io_env(so, **kv):
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(so)
    # a sanitizer build's runtime must come first; the preload only wraps write(2)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    for k, v in kv.items():
        env[k] = str(v)
    return env


def reference(a, method, work, so):
    ref = Path(work) / ("ref_" + method)
    t0 = time.monotonic()
    p = subprocess.run(edit_cmd(a, method, ref, False), capture_output=True, text=True,
                       env=io_env(so, GRAFT_IOFAIL_COUNT=1) if so else None)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise Failure("%s reference run failed (%d): %s" % (method, p.returncode, p.stderr[-500:]))
    m = re.search(r"failio: (\d+) write calls", p.stderr)
    writes = int(m.group(1)) if m else None
    t0 = time.monotonic()
    r = subprocess.run(edit_cmd(a, method, ref, True), capture_output=True, text=True)
    startup = time.monotonic() - t0
    if r.returncode != 0:
        raise Failure("%s: --resume of a finished run failed: %s" % (method, r.stderr[-300:]))
    rows = journal_rows(a, ref)
    if not rows or len(rows) != a.n:
        raise Failure("%s reference: %d journal rows, want %d" % (method, len(rows or []), a.n))
    return ref, rows, secs, startup, writes


def kill_campaign(a, method, work, ref, ref_rows, secs, startup, rng):
    if a.kills <= 0:
        return {"skipped": "--kills 0"}
    out = Path(work) / ("kill_" + method)
    per_edit = secs / a.n
    kills, k_prev, log, runs = 0, 0, [], 0
    stderr_path = Path(work) / ("kill_" + method + ".stderr")
    while True:
        resume = (out / "journal.sqlite").exists()
        left_kills = a.kills - kills
        with open(stderr_path, "wb") as ef:
            t0 = time.monotonic()
            p = subprocess.Popen(edit_cmd(a, method, out, resume), stdout=subprocess.DEVNULL, stderr=ef,
                                 start_new_session=True)
            runs += 1
            if left_kills > 0:
                # start-up (load, replay) plus, on average, 80% of this kill's share of the edits left
                delay = rng.uniform(0, startup) + rng.uniform(0, 1.2 * per_edit * (a.n - k_prev) / left_kills)
                try:
                    p.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    kills += 1
            else:
                p.wait()
            ran = time.monotonic() - t0
        if p.returncode not in (0, -signal.SIGKILL):
            raise Failure("%s: run %d exited %d: %s" % (method, runs, p.returncode, tail_text(stderr_path)))
        killed = p.returncode == -signal.SIGKILL
        where = "%s after kill %d (%.2f s into run %d)" % (method, kills, ran, runs) if killed else \
            "%s run %d (finished)" % (method, runs)
        k = check_prefix(journal_rows(a, out), ref_rows, where)
        if k < k_prev:
            raise Failure("%s: the journal went from %d to %d edits: acknowledged edits lost" % (where, k_prev, k))
        if killed:
            log.append({"run": runs, "at_s": round(ran, 3), "edits_before": k_prev, "edits_after": k})
        k_prev = k
        if not killed:
            break
    # a kill can miss (the stream finished first); the delays aim at 80% of each
    # kill's share, so most land: fewer than 70% means they do not fit the machine
    if kills < max(1, (7 * a.kills + 9) // 10):
        raise Failure("%s: the stream finished after %d of %d kills (the kill delays are too long for this machine)"
                      % (method, kills, a.kills))
    compare_final(a, method, out, ref, ref_rows, method + " kill campaign")
    positions = sorted(set(e["edits_after"] for e in log))
    no_progress = sum(1 for e in log if e["edits_after"] == e["edits_before"])
    return {"kills": kills, "runs": runs, "distinct_journal_positions": len(positions),
            "kills_without_a_new_edit": no_progress, "kills_at_end": sum(1 for e in log if e["edits_after"] == a.n),
            "log": log}


def tail_text(path, n=600):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(none)"


def disk_full(a, method, work, ref, ref_rows, writes, so, rng):
    if a.diskfull <= 0:
        return {"skipped": "--diskfull 0"}
    if not so or not writes:
        return {"skipped": "no failio.so or no write count"}
    ks = sorted(set(max(1, min(writes, int((i + rng.random()) * writes / a.diskfull) + 1)) for i in range(a.diskfull)))
    res = {"write_calls": writes, "tried": 0, "failed_cleanly": 0, "finished_whole": 0, "at_edit": []}
    for k in ks:
        out = Path(work) / ("full_%s_%d" % (method, k))
        p = subprocess.run(edit_cmd(a, method, out, False), capture_output=True, text=True,
                           env=io_env(so, GRAFT_IOFAIL_AT=k))
        where = "%s disk full at write %d of %d" % (method, k, writes)
        res["tried"] += 1
        if p.returncode < 0 or p.returncode >= 128:
            raise Failure("%s: killed by signal / status %d: %s" % (where, p.returncode, p.stderr[-400:]))
        if p.returncode != 0:
            if "No space left on device" not in p.stderr:
                raise Failure("%s: exit %d without naming the cause: %s" % (where, p.returncode, p.stderr[-400:]))
            res["failed_cleanly"] += 1
        if leftovers(out):
            raise Failure("%s: left %s behind" % (where, leftovers(out)))
        k_rows = check_prefix(journal_rows(a, out), ref_rows, where)
        res["at_edit"].append(k_rows)
        sf = out / state_file(method)
        if p.returncode == 0:
            compare_final(a, method, out, ref, ref_rows, where + " (exited 0)")
            res["finished_whole"] += 1
            continue
        if sf.exists() and sf.read_bytes() != (ref / state_file(method)).read_bytes():
            raise Failure("%s: a %s that is not the finished run's" % (where, sf.name))
        r = subprocess.run(edit_cmd(a, method, out, out.joinpath("journal.sqlite").exists()), capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise Failure("%s: the resume with space again failed: %s" % (where, r.stderr[-400:]))
        compare_final(a, method, out, ref, ref_rows, where + ", resumed")
        shutil.rmtree(out, ignore_errors=True)
    return res


MOUNT_SCRIPT = r'''
set -u
D=$1; shift
mount -t tmpfs -o size=$SMALL tmpfs "$D" || exit 90
"$@" --out "$D/run" > "$D.1.out" 2> "$D.1.err"; echo $? > "$D.1.rc"
mount -o remount,ro "$D" || exit 91
"$@" --out "$D/run" --resume > "$D.2.out" 2> "$D.2.err"; echo $? > "$D.2.rc"
"$@" --out "$D/new" > "$D.3.out" 2> "$D.3.err"; echo $? > "$D.3.rc"
"$GRAFT" edits list --adaptor "$D/run" -m "$MODEL" > "$D.4.out" 2> "$D.4.err"; echo $? > "$D.4.rc"
ID=$(awk 'NR == 2 {print $1}' "$D.4.out")
if [ -n "$ID" ]; then "$GRAFT" edits undo "$ID" --adaptor "$D/run" -m "$MODEL" > "$D.6.out" 2> "$D.6.err"; echo $? > "$D.6.rc"
else echo skip > "$D.6.rc"; : > "$D.6.err"; fi
mount -o remount,rw,size=256m "$D" || exit 92
"$@" --out "$D/run" --resume > "$D.5.out" 2> "$D.5.err"; echo $? > "$D.5.rc"
cp -a "$D/run" "$D.final"
'''


def mounts(a, method, work, ref, ref_rows):
    """A real full tmpfs, then read-only, then larger; in a private mount namespace."""
    if shutil.which("unshare") is None:
        return {"skipped": "no unshare(1)"}
    base = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    probe = subprocess.run(base + ["sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs " +
                                   tempfile.gettempdir()], capture_output=True)
    if probe.returncode != 0:
        return {"skipped": "cannot mount a tmpfs here (no privilege or user namespaces)"}
    d = Path(work) / ("mnt_" + method)
    d.mkdir()
    # too small for the journal of the whole stream: ~60% of the reference's run folder
    size_kb = max(64, int(sum(f.stat().st_size for f in ref.iterdir()) * 0.6 / 1024))
    env = dict(os.environ, SMALL="%dk" % size_kb, GRAFT=a.graft, MODEL=a.model)
    cmd = edit_cmd(a, method, "X", False)
    cmd = cmd[:cmd.index("--out")] + cmd[cmd.index("--out") + 2:]
    p = subprocess.run(base + ["bash", "-c", MOUNT_SCRIPT, "mount_script", str(d)] + cmd, env=env,
                       capture_output=True, text=True)
    if p.returncode in (90, 91, 92):
        return {"skipped": "mount step %d failed: %s" % (p.returncode - 89, p.stderr.strip()[:200])}
    if p.returncode != 0:
        raise Failure("%s mount script failed (%d): %s" % (method, p.returncode, p.stderr[-400:]))

    def step(i):
        rc = Path("%s.%d.rc" % (d, i)).read_text().strip()
        return (None if rc == "skip" else int(rc)), Path("%s.%d.err" % (d, i)).read_text(errors="replace")

    res = {"tmpfs_kb": size_kb}
    rc, err = step(1)
    if rc == 0:
        res["note"] = "the run fitted in %d KB" % size_kb
    elif "No space left on device" not in err:
        raise Failure("%s: full tmpfs: exit %d without naming the cause: %s" % (method, rc, err[-400:]))
    res["full"] = "exit %d: %s" % (rc, err.strip().splitlines()[-1][:200] if err.strip() else "")
    for i, what in ((2, "resume in a read-only folder"), (3, "a new run folder on a read-only file system"),
                    (6, "undo in a read-only folder")):
        rc, err = step(i)
        if rc is None:  # no edit fitted before the disk was full: nothing to undo
            continue
        if rc == 0 or rc >= 128 or "Read-only file system" not in err:
            raise Failure("%s: %s: exit %d, message %r" % (method, what, rc, err.strip()[-300:]))
        res["read_only_%d" % i] = err.strip().splitlines()[-1][:200]
    rc, err = step(4)
    res["list_read_only"] = "exit %d%s" % (rc, (": " + err.strip()[-200:]) if rc else "")
    if rc != 0 and "Read-only" not in err and "read-only" not in err:
        raise Failure("%s: graft edits list on a read-only folder: exit %d, %r" % (method, rc, err[-300:]))
    rc, err = step(5)
    if rc != 0:
        raise Failure("%s: resume after remounting larger failed (%d): %s" % (method, rc, err[-400:]))
    compare_final(a, method, Path("%s.final" % d), ref, ref_rows, method + " tmpfs full -> read-only -> resumed")
    return res


def make_stream(path, n, rng):
    """n edits a story model can take: "<Name><i> liked the" -> " <thing>"."""
    names = ["Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Sam", "Anna", "Tim", "Zoe"]
    things = ["ball", "kite", "cake", "hat", "box", "cup", "car", "doll", "book", "drum"]
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": "%s%d liked the" % (rng.choice(names), i),
                                "target": " " + rng.choice(things)}) + "\n")


def main():
    a = parse()
    a.graft = str(Path(a.graft).resolve())
    data = Path(os.environ.get("GRAFT_TEST_DATA", ROOT / "tests/data"))
    a.model = a.model or str(data / "stories260K.bin")
    for need in (a.model, a.data):
        if need and not Path(need).exists():
            print("cli_crash: skipped: %s not found" % need)
            return 77
    # the campaign's timing assumes idle OpenMP threads sleep (a spinning
    # team on a loaded 2-core machine slows every run several times over)
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="graft_crash."))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    if not a.data:
        a.data = str(work / "stream.jsonl")
        make_stream(a.data, a.n, rng)
    report = {"model": a.model, "data": a.data, "n": a.n, "seed": a.seed, "methods": {}}
    failures = 0
    try:
        so = build_failio(work)
        for method in a.methods.split(","):
            r = report["methods"][method] = {}
            try:
                t0 = time.monotonic()
                ref, ref_rows, secs, startup, writes = reference(a, method, work, so)
                r["reference_s"], r["startup_s"], r["write_calls"] = round(secs, 2), round(startup, 2), writes
                r["kill"] = kill_campaign(a, method, work, ref, ref_rows, secs, startup, rng)
                kc = r["kill"]
                if "kills" in kc:
                    print("%s: %d kills over %d runs, %d distinct journal positions, %d kills before a new edit, "
                          "final state equal to the uninterrupted run's" % (method, kc["kills"], kc["runs"],
                                                                            kc["distinct_journal_positions"],
                                                                            kc["kills_without_a_new_edit"]))
                r["disk_full"] = disk_full(a, method, work, ref, ref_rows, writes, so, rng)
                df = r["disk_full"]
                if "tried" in df:
                    print("%s: disk full at %d of %d write calls: %d failed cleanly, %d finished whole; every "
                          "resume equal to the uninterrupted run" % (method, df["tried"], writes, df["failed_cleanly"],
                                                                    df["finished_whole"]))
                r["mounts"] = {"skipped": "--no-mounts"} if a.no_mounts else mounts(a, method, work, ref, ref_rows)
                if "skipped" in r["mounts"]:
                    print("%s: tmpfs / read-only checks skipped: %s" % (method, r["mounts"]["skipped"]))
                else:
                    print("%s: full tmpfs (%s), read-only (%s), resumed: equal" % (method, r["mounts"]["full"],
                                                                                 r["mounts"]["read_only_2"]))
                r["seconds"] = round(time.monotonic() - t0, 1)
            except Failure as e:
                failures += 1
                r["failure"] = str(e)
                print("FAIL: %s" % e, file=sys.stderr)
    finally:
        if a.report:
            Path(a.report).write_text(json.dumps(report, indent=1) + "\n")
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("cli_crash: %s" % ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
