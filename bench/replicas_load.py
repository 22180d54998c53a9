#!/usr/bin/env python3
"""replicas_load.py - a bounded load test of graft serve replicas sharing one
PostgreSQL journal (docs/REPLICAS.md).

A throw-away PostgreSQL 15 cluster in a temporary folder (Unix socket only;
run as `nobody` when this runs as root), R replicas (3) of `graft serve` on
one model with GRACE, and N clients (32) for a fixed time (30 s), each bound to
one replica (client i to replica i % R) and each request a completion (greedy,
--max-tokens 8) or, one time in 11 (--edit-share), an edit of a fresh prompt.
Reports requests/s, p50/p99 latency per kind, errors (any non-200), and the
replication delay (from a row's commit time to its apply on another replica,
as each replica's GET /v1/replication reports it). Then checks that every
acknowledged edit is in the journal and that all replicas hold byte-identical
editor state (GET /v1/replication/state).

A second phase measures the fleet's edit ceiling: every client sends edits
only for --ceiling-seconds (edits are serialised fleet-wide by the journal's
write lock, so this is the most edits/s the whole fleet takes). A third the
journal's own: the whole journal copied row by row into a new name (`graft
edits import`, one committed INSERT per row, as an append is).

With --kill, replica 1 is killed with SIGKILL a third of the way into the mix
and restarted 3 s later (it replays the journal and catches up); nothing it
acknowledged may be lost and all must still converge.

Usage: python3 bench/replicas_load.py [--graft build/graft] [-m tests/data/stories260K.bin]
       [--replicas 3] [--clients 32] [--seconds 30] [--ceiling-seconds 15] [--kill] [--json OUT]
Exit 0 when there were no errors, no acknowledged edit was lost and the
replicas converged.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PGBIN = Path(os.environ.get("GRAFT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Cluster:
    """initdb + pg_ctl in a temporary folder; the URI of its postgres database."""

    def __init__(self, fsync=True):
        self.dir = Path(tempfile.mkdtemp(prefix="graft_pg."))
        os.chmod(self.dir, 0o755)
        self.as_pg = ["runuser", "-u", "nobody", "--"] if os.getuid() == 0 else []
        if os.getuid() == 0:
            shutil.chown(self.dir, user="nobody")
        subprocess.run(self.as_pg + [str(PGBIN / "initdb"), "-D", str(self.dir / "data"), "-U", "graft", "-A", "trust"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.opts = f"-k {self.dir} -c listen_addresses='' -c fsync={'on' if fsync else 'off'} -c max_connections=50"
        self.start()
        self.uri = f"postgresql://graft@/postgres?host={self.dir}"

    def start(self):
        subprocess.run(self.as_pg + [str(PGBIN / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
                                     "-w", "-o", self.opts, "start"], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(self.as_pg + [str(PGBIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sql(self, q):
        return subprocess.run([str(PGBIN / "psql"), "-X", "-q", "-t", "-A", self.uri, "-c", q], check=True,
                              capture_output=True, text=True).stdout

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Replica:
    def __init__(self, graft, model, uri, name, first, log):
        self.args = [graft, "serve", "-m", model, "--port", "0", "--threads", "1", "--quiet", "--max-active", "64",
                     "--allow-unauthenticated-edits", "--journal", uri, "--replica-of", name]
        self.log_path = log
        self.down = False
        self.up_at = 0.0  # requests sent before this (while it was down or restarting) may be refused
        self.start(["--method", "grace"] if first else [])

    def start(self, extra=()):
        self.log = open(self.log_path, "w+")
        self.p = subprocess.Popen(self.args + list(extra), stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        for _ in range(300):
            self.log.seek(0)
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", self.log.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        if not self.port:
            self.log.seek(0)
            raise SystemExit(f"replica did not start: {self.log.read()[-500:]}")

    def req(self, method, path, body=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            c.close()

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=30)


NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Leo", "Max", "Ned", "Oli", "Pam"]
THINGS = ["kite", "drum", "boat", "hat", "cup", "sock", "bell", "frog", "star", "cake", "ring", "leaf"]


def run_phase(reps, clients, seconds, edit_share, max_tokens, tag, kill_at=None):
    lat = {"completion": [], "edit": []}
    errors, acked, refused = [], [], [0]
    lock = threading.Lock()
    stop = time.time() + seconds
    counter = [0]

    def client(i):
        rng = random.Random(1000 + i)
        r = reps[i % len(reps)]
        while time.time() < stop:
            edit = rng.random() < edit_share
            if edit:
                with lock:
                    counter[0] += 1
                    k = counter[0]
                body = {"prompt": f"{NAMES[k % len(NAMES)]} number {tag}{k} wanted a toy, so mom gave them a",
                        "target": THINGS[k % len(THINGS)]}
                path = "/v1/edits"
            else:
                body = {"prompt": f"{NAMES[rng.randrange(len(NAMES))]} went to the park and", "max_tokens": max_tokens,
                        "temperature": 0}
                path = "/v1/completions"
            t0 = time.time()
            try:
                st, data, hdr = r.req("POST", path, body)
            except Exception as e:  # a refused or dropped connection is an error too
                st, data, hdr = 0, str(e).encode(), {}
            dt = (time.time() - t0) * 1e3
            with lock:
                if st == 0 and (r.down or t0 < r.up_at):
                    refused[0] += 1  # the replica is down (killed on purpose): its clients are refused
                    time.sleep(0.05)
                elif st != 200:
                    errors.append((path, st, data[:200]))
                else:
                    lat["edit" if edit else "completion"].append(dt)
                    if edit:
                        acked.append(json.loads(data)["id"])

    t0 = time.time()
    th = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in th:
        t.start()
    if kill_at is not None:
        # SIGKILL replica 1 under load, restart it 3 s later: it replays the journal and catches up
        time.sleep(kill_at)
        victim = reps[1]
        victim.down = True
        victim.p.kill()
        victim.p.wait()
        time.sleep(3)
        victim.start()
        victim.up_at = time.time()
        victim.down = False
    for t in th:
        t.join()
    wall = time.time() - t0
    return lat, errors, acked, wall, refused[0]


def converge(reps, cl, name, timeout=30):
    head = int(cl.sql(f"SELECT coalesce(max(id), 0) FROM graft_edits WHERE journal = '{name}'").strip())
    end = time.time() + timeout
    while time.time() < end:
        pos = [json.loads(r.req("GET", "/v1/replication")[1])["journal_position"] for r in reps]
        if all(p == head for p in pos):
            break
        time.sleep(0.1)
    states = [r.req("GET", "/v1/replication/state")[1] for r in reps]
    return head, pos, all(s == states[0] for s in states) and len(states[0]) > 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graft", default=str(ROOT / "build" / "graft"))
    ap.add_argument("-m", "--model", default=str(ROOT / "tests" / "data" / "stories260K.bin"))
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--ceiling-seconds", type=float, default=15)
    ap.add_argument("--edit-share", type=float, default=1 / 11)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--no-fsync", action="store_true", help="the cluster without fsync (default: PostgreSQL's fsync=on)")
    ap.add_argument("--kill", action="store_true",
                    help="SIGKILL replica 1 a third into the mix and restart it 3 s later (its clients' refused "
                         "connections meanwhile are counted apart, not as errors)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not (PGBIN / "initdb").exists():
        raise SystemExit(f"PostgreSQL's server is not installed ({PGBIN}/initdb): scripts/deps.sh installs it")

    cl = Cluster(fsync=not a.no_fsync)
    tmp = Path(tempfile.mkdtemp(prefix="graft_replicas."))
    reps = []
    out = {}
    ok = True
    try:
        name = "bench"
        for i in range(a.replicas):
            reps.append(Replica(a.graft, a.model, cl.uri, name, i == 0, tmp / f"r{i}.log"))
        # phase 1: the mix
        lat, errors, acked, wall, refused = run_phase(reps, a.clients, a.seconds, a.edit_share, a.max_tokens, "m",
                                                      a.seconds / 3 if a.kill else None)
        head, pos, same = converge(reps, cl, name)
        ids = {int(x) for x in cl.sql(f"SELECT id FROM graft_edits WHERE journal = '{name}' AND kind = 'edit'").split()}
        lost = [i for i in acked if i not in ids]
        delays = [json.loads(r.req("GET", "/v1/replication")[1])["delay_ms"] for r in reps]
        n_req = len(lat["completion"]) + len(lat["edit"]) + len(errors)
        out["mix"] = {
            "replicas": a.replicas, "clients": a.clients, "seconds": round(wall, 1), "requests": n_req,
            "requests_per_s": round(n_req / wall, 1),
            "completions": len(lat["completion"]), "edits": len(lat["edit"]),
            "completion_p50_ms": round(pct(lat["completion"], 50), 1), "completion_p99_ms": round(pct(lat["completion"], 99), 1),
            "edit_p50_ms": round(pct(lat["edit"], 50), 1), "edit_p99_ms": round(pct(lat["edit"], 99), 1),
            "errors": len(errors), "lost_edits": len(lost), "replica_killed": a.kill,
            "refused_while_killed": refused, "journal_head": head, "positions": pos, "converged": same,
            "replication_delay_ms": [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in d.items()} for d in delays],
        }
        if errors:
            out["mix"]["first_errors"] = [(p, s, d.decode(errors="replace")) for p, s, d in errors[:5]]
        ok = ok and not errors and not lost and same
        # phase 2: edits only, the fleet's ceiling
        if a.ceiling_seconds > 0:
            lat2, errors2, acked2, wall2, _ = run_phase(reps, a.clients, a.ceiling_seconds, 1.0, a.max_tokens, "c")
            head2, pos2, same2 = converge(reps, cl, name)
            out["ceiling"] = {
                "seconds": round(wall2, 1), "edits": len(lat2["edit"]), "edits_per_s": round(len(lat2["edit"]) / wall2, 1),
                "edit_p50_ms": round(pct(lat2["edit"], 50), 1), "edit_p99_ms": round(pct(lat2["edit"], 99), 1),
                "errors": len(errors2), "converged": same2, "journal_head": head2,
            }
            ok = ok and not errors2 and same2
        # phase 3: the journal alone: every row of the journal copied into a new
        # name, one autocommitted INSERT per row (graft edits import), as each
        # replica's append is; the commit rate PostgreSQL gives one writer
        n_rows = int(cl.sql(f"SELECT count(*) FROM graft_edits WHERE journal = '{name}'").strip())
        t0 = time.time()
        subprocess.run([a.graft, "edits", "import", f"{cl.uri}#{name}", "--adaptor", f"{cl.uri}#{name}_copy"], check=True,
                       stdout=subprocess.DEVNULL)
        dt = time.time() - t0
        out["journal_commits"] = {"rows": n_rows, "seconds": round(dt, 2), "rows_per_s": round(n_rows / dt, 1)}
    finally:
        for r in reps:
            try:
                r.stop()
            except Exception:
                r.p.kill()
        cl.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
