#!/usr/bin/env python3
"""serve_load.py - a bounded loopback load test of graft serve.

N concurrent clients (32) for a fixed time (30 s) against one server on the
default fact model with GRACE: each request is a completion (greedy, 8 tokens;
half of them streamed) or, with probability --edit-share, an edit of a known
fact to another relation's answer. Reports requests/s and p50/p99 latency per
kind, and errors (any non-200 is one). Then checks that every acknowledged edit
is in the journal and, where it took, is effective (its prompt completes with
the target), before and after a restart on the same run folder.

Also the overhead of the server against `graft generate` for the same prompts:
one client, sequential requests, against one `graft generate` process per
prompt (whose time is mostly loading the model, which the server does once).

Usage: python3 bench/serve_load.py [--graft build/graft] [-m models/factpara]
       [--clients 32] [--seconds 30] [--edit-share 0.1] [--json OUT]
Exit 0 when there were no errors and every acknowledged edit was found.
"""
import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serve_util import Server, http as request  # noqa: E402


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graft", default=str(ROOT / "build" / "graft"))
    ap.add_argument("-m", "--model", default=str(ROOT / "models" / "factpara"))
    ap.add_argument("--facts", default=str(ROOT / "data" / "facts2" / "known_facts.jsonl"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--edit-share", type=float, default=0.1)
    ap.add_argument("--overhead-n", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()

    facts = [json.loads(l) for l in open(a.facts) if l.strip()]
    answers = sorted({f["answer"] for f in facts})
    rng = random.Random(7)
    rng.shuffle(facts)
    edit_pool = facts[: len(facts) // 2]       # edited (each at most once)
    ask_pool = facts[len(facts) // 2:]         # only asked
    lock = threading.Lock()
    lat = {"completion": [], "stream": [], "edit": []}
    errors, acked = [], {}
    next_edit = [0]

    with tempfile.TemporaryDirectory(prefix="graft_serve_load.") as tmp:
        run, log = Path(tmp) / "run", Path(tmp) / "serve.log"
        srv = Server(a.graft, ["-m", a.model, "--method", "grace", "--out", run, "--allow-unauthenticated-edits",
                               "--quiet", "--max-active", str(4 * a.clients)], log)
        stop_at = time.monotonic() + a.seconds

        def client(seed):
            r = random.Random(seed)
            while time.monotonic() < stop_at:
                try:
                    if r.random() < a.edit_share:
                        with lock:
                            i = next_edit[0]
                            next_edit[0] += 1
                        if i >= len(edit_pool):
                            continue
                        f = edit_pool[i]
                        target = r.choice([x for x in answers if x != f["answer"]])
                        t0 = time.monotonic()
                        status, body = request(srv.base, "POST", "/v1/edits", {"prompt": f["prompt"], "target": target})
                        dt = time.monotonic() - t0
                        with lock:
                            lat["edit"].append(dt)
                            if status == 200:
                                acked[body["id"]] = (f["prompt"], target, body["reproduced"])
                            else:
                                errors.append("edit %d %s" % (status, body))
                    else:
                        f = r.choice(ask_pool)
                        stream = r.random() < 0.5
                        t0 = time.monotonic()
                        status, body = request(srv.base, "POST", "/v1/completions",
                                               {"prompt": f["prompt"], "max_tokens": 8, "temperature": 0,
                                                "stream": stream})
                        dt = time.monotonic() - t0
                        with lock:
                            lat["stream" if stream else "completion"].append(dt)
                            if status != 200:
                                errors.append("completion %d %s" % (status, body))
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors.append("connection: %r" % e)

        t_start = time.monotonic()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.monotonic() - t_start

        def verify(where):
            bad = []
            status, body = request(srv.base, "GET", "/v1/edits")
            there = {e["id"]: e for e in body["data"]} if status == 200 else {}
            for eid, (p, t, ok) in acked.items():
                if eid not in there or there[eid]["target"] != t:
                    bad.append("%s: acknowledged edit %d missing" % (where, eid))
                    continue
                if ok:
                    status, body = request(srv.base, "POST", "/v1/completions",
                                           {"prompt": p, "max_tokens": 8, "temperature": 0})
                    if status != 200 or not body["choices"][0]["text"].startswith(" " + t):
                        bad.append("%s: edit %d (%r -> %r) completes as %r" % (where, eid, p, t,
                                                                              body["choices"][0]["text"]))
            return bad

        bad = verify("live")
        srv.stop()
        srv = Server(a.graft, ["-m", a.model, "--adaptor", run, "--quiet"], log)
        bad += verify("after restart")
        status, stats = request(srv.base, "GET", "/v1/stats")

        # overhead against graft generate, same prompts, one at a time
        prompts = [f["prompt"] for f in ask_pool[: a.overhead_n]]
        http_lat, gen_lat = [], []
        for p in prompts:
            t0 = time.monotonic()
            request(srv.base, "POST", "/v1/completions", {"prompt": p, "max_tokens": 8, "temperature": 0})
            http_lat.append(time.monotonic() - t0)
        srv.stop()
        for p in prompts:
            t0 = time.monotonic()
            subprocess.run([a.graft, "generate", "-m", a.model, "-p", p, "-n", "8", "--temp", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            gen_lat.append(time.monotonic() - t0)

    n_req = sum(len(v) for v in lat.values())
    res = {"clients": a.clients, "seconds": round(wall, 2), "requests": n_req, "requests_per_s": round(n_req / wall, 2),
           "errors": len(errors), "acknowledged_edits": len(acked),
           "edits_reproduced": sum(1 for v in acked.values() if v[2]), "verify_failures": len(bad),
           "retention": stats.get("retention") if stats else None}
    for k, v in lat.items():
        res[k] = {"n": len(v), "p50_ms": round(1000 * pct(v, 50), 1), "p99_ms": round(1000 * pct(v, 99), 1)}
    res["overhead"] = {"n": len(prompts), "http_median_ms": round(1000 * statistics.median(http_lat), 1),
                       "http_best_ms": round(1000 * min(http_lat), 1),
                       "generate_process_median_ms": round(1000 * statistics.median(gen_lat), 1),
                       "generate_process_best_ms": round(1000 * min(gen_lat), 1)}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    for e in (errors + bad)[:20]:
        print("FAIL: " + e, file=sys.stderr)
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
