#!/usr/bin/env python3
"""bench/peers.py - `make bench-peers`: graft side by side with its peers (issue 18).

Peers, each skipped with a message when absent:
  llama.cpp   llama-bench (CPU build; ../shared/peers/llamacpp.sh builds it into
              $GRAFT_PEERS/llama.cpp/build/bin), on GGUF files written by `graft export --gguf`
  run.c       llama2.c's run.c (github.com/karpathy/llama2.c), $GRAFT_PEERS/llama2c/run;
              built here from run.c beside it when only the source is there
  PyTorch     bench/peer_torch.py under a python3 that imports torch and numpy

The same weights in each: stories260K.bin (run.c, graft) and its GGUF export
(llama.cpp); a GPT-2-124M-shaped model with random weights written once by
`graft train --preset gpt2 --steps 1` (graft and PyTorch read its folder,
graft and llama.cpp its GGUF exports: F32, F16, and Q8_0 by llama-quantize or
bench/gguf_q8_0.py). The same threads for everyone. Rounds are interleaved:
each round runs graft once and every peer once (odd rounds in the reverse
order), each a fresh process with its own warm-up, and every figure is the
median and the best over the rounds. At the start of every round and after
the last, build/bench_floors measures the machine's floors (read bandwidth,
sgemm peak), and every figure gets its ratio to its floor: FLOPs / sgemm
peak for prefill and training, bytes of weights per token / read bandwidth
for decode. Two ratios: against the best floor of the whole run (strict),
and each sample against the floor measured in its own round (paired; the
median of those): this VM's bandwidth moves by up to 30% within minutes, and
only the paired ratio compares a sample with the machine as it was then.

Prints two markdown tables (the figures against the issue's targets, and the
floors) and writes them, with every raw sample, to BUILD/peers.md and
BUILD/peers.json.

usage: peers.py [--build DIR] [--runs N] [--threads N] [--quick] [--dry-run] ...
"""
import argparse
import json
import math
import mmap
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# ------------------------------------------------------------------ GGUF (metadata and tensor table only)

GGML_F32, GGML_F16, GGML_Q8_0, GGML_BF16 = 0, 1, 8, 30
GGML_BLOCK = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q8_0: (32, 34), GGML_BF16: (1, 2)}
GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf(path):
    """The scalar metadata, the tensor table and where things are in a GGUF v2/v3 file."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from(fmt, m, pos)[0]
            pos += struct.calcsize(fmt)
            return v

        def string():
            nonlocal pos
            n = take("<Q")
            s = bytes(m[pos:pos + n]).decode("utf-8", "replace")
            pos += n
            return s

        def value(vt):
            nonlocal pos
            if vt in GGUF_SCALAR:
                return take(GGUF_SCALAR[vt])
            if vt == 8:
                return string()
            if vt == 9:
                et, n = take("<I"), take("<Q")
                if et in GGUF_SCALAR:
                    pos += n * struct.calcsize(GGUF_SCALAR[et])
                else:
                    for _ in range(n):
                        value(et)
                return None  # arrays (the vocabulary) are skipped
            raise ValueError("%s: unknown metadata type %d" % (path, vt))

        if bytes(m[0:4]) != b"GGUF":
            raise ValueError("%s: not a GGUF file" % path)
        pos = 4
        version, n_t, n_kv = take("<I"), take("<Q"), take("<Q")
        kv, kv_start, file_type_at = {}, pos, None
        for _ in range(n_kv):
            key, vt = string(), take("<I")
            if key == "general.file_type" and vt == 4:
                file_type_at = pos
            kv[key] = value(vt)
        kv_end = pos
        tensors = []
        for _ in range(n_t):
            name, nd = string(), take("<I")
            ne = [take("<Q") for _ in range(nd)]
            typ, off = take("<I"), take("<Q")
            blk, size = GGML_BLOCK.get(typ, (0, 0))
            nbytes = math.prod(ne) // blk * size if blk else None
            tensors.append({"name": name, "ne": ne, "type": typ, "offset": off, "nbytes": nbytes})
        align = kv.get("general.alignment", 32)
        return {"version": version, "kv": kv, "kv_start": kv_start, "kv_end": kv_end, "file_type_at": file_type_at,
                "tensors": tensors, "alignment": align, "data_start": pos + (-pos % align)}


def gguf_shape(g):
    """The dimensions that set the work: d_model, layers, heads, kv heads, d_ff, vocab, arch, bytes per token."""
    kv, arch = g["kv"], g["kv"]["general.architecture"]
    t = {x["name"]: x for x in g["tensors"]}
    C, L = kv[arch + ".embedding_length"], kv[arch + ".block_count"]
    H = kv[arch + ".attention.head_count"]
    s = {"arch": arch, "C": C, "L": L, "H": H, "KV": kv.get(arch + ".attention.head_count_kv", H),
         "F": kv.get(arch + ".feed_forward_length", 4 * C), "V": t["token_embd.weight"]["ne"][1]}
    # Decode streams every weight once per token: all tensors, but only one row of the embedding
    # tables, unless the embedding is also the (tied) output head.
    total = 0
    for x in g["tensors"]:
        if x["name"] in ("position_embd.weight",) or (x["name"] == "token_embd.weight" and "output.weight" in t):
            total += x["nbytes"] // x["ne"][1]
        else:
            total += x["nbytes"]
    s["bytes_per_token"] = total
    return s


def matmul_flops_per_token(s):
    """2 x multiply-adds of the layer matrices for one token (no head, no attention scores)."""
    D = s["C"] // s["H"]
    ffn = 2 if s["arch"] == "gpt2" else 3
    return 2 * s["L"] * (2 * s["C"] * s["C"] + 2 * s["C"] * s["KV"] * D + ffn * s["C"] * s["F"])


def attn_flops(s, T):
    """q.k and att.v over a causal sequence of T tokens, every layer."""
    return 2 * 2 * s["L"] * s["C"] * T * (T + 1) // 2


def prefill_flops(s, T):
    """batch 1 x T, logits of the last row only (what graft bench, llama-bench and peer_torch.py compute)."""
    return T * matmul_flops_per_token(s) + attn_flops(s, T) + 2 * s["C"] * s["V"]


def step_flops(s, B, T):
    """forward + backward with every gradient, logits of every row: backward is twice the forward."""
    fwd = B * (T * matmul_flops_per_token(s) + attn_flops(s, T) + T * 2 * s["C"] * s["V"])
    return 3 * fwd


# ------------------------------------------------------------------ running things

class Runner:
    def __init__(self, a):
        self.a = a
        self.log = []

    def run(self, cmd, env=None, cwd=None, timeout=900, stderr_too=False):
        """stdout of cmd (and its stderr after it with stderr_too); raises RuntimeError with the tail of
        stderr on failure."""
        shown = " ".join(cmd)
        if self.a.dry_run:
            print("  would run: " + shown)
            return ""
        # OpenMP settings of the caller's shell are dropped: each tool gets only what `env` says
        e = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
        e.update(env or {})
        if self.a.verbose:
            print("  $ " + shown, file=sys.stderr)
        p = subprocess.run(cmd, env=e, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            raise RuntimeError("%s: exit %d: %s" % (shown, p.returncode, err.strip()[-600:]))
        return out + ("\n" + err if stderr_too else "")


def python_with(modules, candidates):
    for py in candidates:
        if not py or not shutil.which(py):
            continue
        try:
            r = subprocess.run([py, "-c", "import " + ", ".join(modules)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return shutil.which(py)
    return None


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in output: " + text[-300:])


# ------------------------------------------------------------------ the benchmark

class Figure:
    """One measured quantity of one tool: samples are rates (higher is better)."""

    def __init__(self, key, label, unit):
        self.key, self.label, self.unit, self.samples, self.errors = key, label, unit, [], []
        self.rounds = []  # the round of each sample (for the paired floor ratios)

    def median(self):
        return statistics.median(self.samples) if self.samples else None

    def best(self):
        return max(self.samples) if self.samples else None


def fmt(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if v >= 1000 else 1 if v >= 100 else 2 if v >= 1 else 3
    return "{:,.{}f}".format(v, digits)


def main():
    ap = argparse.ArgumentParser(description="graft against llama.cpp, llama2.c's run.c and PyTorch (issue 18)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"), help="graft build folder (default build)")
    ap.add_argument("--runs", type=int, help="interleaved rounds (default 5; --quick: 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every tool (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds and 16 GPT-2 decode tokens: to check the script, not for figures")
    ap.add_argument("--peers", default=os.environ.get("GRAFT_PEERS", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                                    "graft-peers")),
                    help="where ../shared/peers/llamacpp.sh put the peers (default $GRAFT_PEERS or /tmp/graft-peers)")
    ap.add_argument("--llama-bin", help="llama.cpp's bin folder (default PEERS/llama.cpp/build/bin)")
    ap.add_argument("--runc", help="llama2.c's run binary (default PEERS/llama2c/run)")
    ap.add_argument("--torch-python", help="a python3 with torch and numpy (default: /usr/bin/python3, then python3)")
    ap.add_argument("--shared", default=os.environ.get("GRAFT_SHARED_DIR", os.path.join(REPO, "..", "shared")),
                    help="the shared folder with models/stories260K (default $GRAFT_SHARED_DIR or ../shared)")
    ap.add_argument("--work", help="models written for the peers (default BUILD/peers; kept between runs)")
    ap.add_argument("--out", help="the report (default BUILD/peers.md, raw samples in BUILD/peers.json)")
    ap.add_argument("--skip", default="", help="comma-separated: llama.cpp,run.c,torch,stories,gpt2,step")
    ap.add_argument("--dry-run", action="store_true", help="find the tools, print what would run, run nothing")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command")
    a = ap.parse_args()
    runs = a.runs or (2 if a.quick else 5)
    T = a.threads
    skip = set(x.strip() for x in a.skip.split(",") if x.strip())
    build = os.path.abspath(a.build)
    work = os.path.abspath(a.work or os.path.join(build, "peers"))
    out_md = a.out or os.path.join(build, "peers.md")
    R = Runner(a)
    notes = []

    def note(msg):
        notes.append(msg)
        print("peers: " + msg, file=sys.stderr)

    graft = os.path.join(build, "graft")
    floors_bin = os.path.join(build, "bench_floors")
    for p in (graft, floors_bin):
        if not os.access(p, os.X_OK) and not a.dry_run:
            sys.exit("peers.py: %s not built (make all, or --build DIR)" % p)
    graft_env = {"OMP_WAIT_POLICY": "passive"}  # as make bench runs graft

    # --- the peers
    llama_bin = a.llama_bin or os.path.join(a.peers, "llama.cpp", "build", "bin")
    llama_bench = os.path.join(llama_bin, "llama-bench")
    if "llama.cpp" in skip:
        llama_bench = None
    elif not os.access(llama_bench, os.X_OK):
        note("llama.cpp: no %s; skipped (build it with ../shared/peers/llamacpp.sh, or give --llama-bin)" % llama_bench)
        llama_bench = None
    llama_quant = os.path.join(llama_bin, "llama-quantize")
    if not os.access(llama_quant, os.X_OK):
        llama_quant = None

    runc = a.runc or os.path.join(a.peers, "llama2c", "run")
    if "run.c" in skip:
        runc = None
    elif not os.access(runc, os.X_OK):
        src = os.path.join(os.path.dirname(runc), "run.c")
        if os.path.isfile(src) and shutil.which("gcc"):
            print("peers: building %s from %s (llama2.c's own command)" % (runc, src), file=sys.stderr)
            try:
                R.run(["gcc", "-Ofast", "-fopenmp", "-march=native", src, "-lm", "-o", runc])
            except RuntimeError as e:
                note("run.c: build failed (%s); skipped" % e)
                runc = None
        else:
            note("run.c: no %s and no run.c beside it; skipped (put karpathy/llama2.c's run.c in %s, or give --runc)"
                 % (runc, os.path.dirname(runc)))
            runc = None

    torch_py = None
    if "torch" not in skip:
        torch_py = python_with(["torch", "numpy"], [a.torch_python] if a.torch_python else ["/usr/bin/python3",
                                                                                          "python3"])
        if not torch_py:
            note("PyTorch: no python3 imports torch and numpy; skipped (Debian: apt-get install python3-torch)")
    numpy_py = torch_py or python_with(["numpy"], ["/usr/bin/python3", "python3"])

    shared = os.path.abspath(a.shared)
    s260_bin = os.path.join(shared, "models", "stories260K", "stories260K.bin")
    s260_tok = os.path.join(shared, "models", "stories260K", "tok512.bin")
    do_stories = "stories" not in skip
    if do_stories and not os.path.isfile(s260_bin):
        note("stories260K: no %s; its rows skipped" % s260_bin)
        do_stories = False
    do_gpt2 = "gpt2" not in skip
    do_step = "step" not in skip

    # --- the files: written once, kept in WORK
    os.makedirs(work, exist_ok=True)
    s260_gguf = os.path.join(work, "stories260K.gguf")
    g124 = os.path.join(work, "g124")
    g124_gguf = {d: os.path.join(work, "g124-%s.gguf" % d) for d in ("f32", "f16", "q8_0")}

    def prepare():
        if do_stories and llama_bench and not os.path.isfile(s260_gguf):
            R.run([graft, "export", "-m", s260_bin, "--tokenizer", s260_tok, "--gguf", s260_gguf])
        if not do_gpt2:
            return
        if not os.path.isfile(os.path.join(g124, "model.safetensors")):
            print("peers: writing a GPT-2-124M model with random weights (graft train, 1 step of 64 tokens)...",
                  file=sys.stderr)
            txt = os.path.join(work, "train.txt")
            words = "the a cat dog ran sat on mat house tree big small red blue".split()
            with open(txt, "w") as f:
                for i in range(40):
                    f.write(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(60)) + "\n")
            shutil.rmtree(g124, ignore_errors=True)
            R.run([graft, "train", "--preset", "gpt2", "--tokenizer", os.path.join(REPO, "tests", "data",
                                                                                   "gpt2-tokenizer"),
                   "--data", txt, "--steps", "1", "--batch-tokens", "64", "--seq-len", "64", "--out", g124,
                   "--threads", str(T), "--quiet"], env=graft_env)
            shutil.rmtree(os.path.join(g124, "checkpoint"), ignore_errors=True)  # AdamW state: 1.5 GB
        for d in ("f32", "f16"):
            if not os.path.isfile(g124_gguf[d]):
                R.run([graft, "export", "-m", g124, "--gguf", g124_gguf[d], "--dtype", d])
        if llama_bench and not os.path.isfile(g124_gguf["q8_0"]):
            if llama_quant:
                R.run([llama_quant, g124_gguf["f32"], g124_gguf["q8_0"], "Q8_0", str(T)])
            elif numpy_py:
                note("llama.cpp: no llama-quantize in %s; Q8_0 file written by bench/gguf_q8_0.py" % llama_bin)
                R.run([numpy_py, os.path.join(HERE, "gguf_q8_0.py"), g124_gguf["f32"], g124_gguf["q8_0"]])
            else:
                note("llama.cpp: neither llama-quantize nor numpy: no Q8_0 row")
        elif llama_bench and not llama_quant:
            note("llama.cpp: no llama-quantize in %s; the Q8_0 file was written by bench/gguf_q8_0.py" % llama_bin)

    prepare()

    # graft reads the F16 and Q8_0 files as stored (F16 widened in registers, Q8_0 through its Q8_0
    # kernel) when a model's matrices reach 64 MiB; GRAFT_WEIGHTS=stored says so whatever the size.
    graft_stored = dict(graft_env, GRAFT_WEIGHTS="stored")

    # --- the floors: measured at the start of each round and after the last; the best run is the
    # strict floor, and each round's own run is the floor its samples are paired with
    floors = {"cpu": platform.processor() or "?", "flags": "?"}
    round_floors = {}  # round -> {"read": GB/s, "sgemm": GFLOP/s} measured at its start

    def measure_floors(when, rnd=None):
        print("== floors (%s): build/bench_floors %d ==" % (when, T), file=sys.stderr)
        this = {}
        for line in R.run([floors_bin, str(T)], env=graft_env).splitlines():
            if line.startswith("cpu:"):
                floors["cpu"] = line[4:].strip()
            elif line.startswith("flags:"):
                floors["flags"] = line[6:].strip()
            m = re.match(r"(.+?)\s+(\d+) threads?\s+best\s+([\d.]+) (\S+)\s+median\s+([\d.]+)", line)
            if m and int(m.group(2)) == T:
                k, v = m.group(1).strip(), (float(m.group(3)), float(m.group(5)))
                floors.setdefault("measured", []).append([k, when] + list(v))
                if k not in floors or v[0] > floors[k][0]:
                    floors[k] = v
                if k == "read (decode floor)":
                    this["read"] = v[0]
                elif k.startswith("sgemm"):
                    this["sgemm"] = max(this.get("sgemm", 0.0), v[0])
        if a.dry_run:
            floors.update({"read (decode floor)": (1.0, 1.0), "sgemm 1024^3 builtin": (1.0, 1.0)})
        if rnd is not None:
            round_floors[rnd] = this

    # --- the figures and how each round fills them
    figs = {}

    def fig(key, label, unit):
        figs.setdefault(key, Figure(key, label, unit))
        return figs[key]

    def tps(ms):
        return 1000.0 / ms if ms and ms > 0 else None

    def add(key, v):
        if v is not None and v > 0:
            figs[key].samples.append(v)
            figs[key].rounds.append(cur_round[0])

    def llama(model, p, n):
        """llama-bench: one test per figure, one repetition (its own warm-up run first)."""
        out = R.run([llama_bench, "-m", model, "-p", str(p), "-n", str(n), "-t", str(T), "-r", "1", "-o", "json"])
        if a.dry_run:
            return {}
        res = {}
        for r in json.loads(out):
            res["pp" if r["n_prompt"] and not r["n_gen"] else "tg"] = r["avg_ts"]
        return res

    cur_round = [0]  # the round being run (add() files each sample under it)
    tasks = []  # (tool name, function filling figures); run in this order every round
    n_dec_s, n_pre = 256, 256
    n_dec_g = 16 if a.quick else 64
    model_shapes = {}
    if do_stories:
        fig("s.dec.graft", "stories260K decode %d tokens" % n_dec_s, "tok/s")
        fig("s.pre.graft", "stories260K prefill %d" % n_pre, "tok/s")

        def t_graft_s():
            j = last_json(R.run([graft, "bench", "-m", s260_bin, "--threads", str(T), "--runs", "1", "--no-step",
                                 "--prefill", str(n_pre), "--decode", str(n_dec_s), "--json"], env=graft_env) or "{}")
            add("s.dec.graft", j.get("decode_tok_s"))
            add("s.pre.graft", tps(j.get("prefill_ms_per_token")))
            if j.get("gemm"):
                floors["graft"] = "graft's GEMM: %s" % j["gemm"]
        tasks.append(("graft", t_graft_s))
        if runc:
            fig("s.dec.runc", "stories260K decode %d tokens" % n_dec_s, "tok/s")

            def t_runc():
                # greedy from a short prompt: run.c stops early only at a BOS token, which greedy
                # decoding of this prompt does not produce within 256 steps
                o = R.run([runc, s260_bin, "-z", s260_tok, "-t", "0", "-n", str(n_dec_s), "-s", "1",
                           "-i", "Once upon a time"], env={"OMP_NUM_THREADS": str(T)}, cwd=os.path.dirname(runc),
                          stderr_too=True)
                m = re.search(r"achieved tok/s: ([\d.]+)", o)
                if m:
                    add("s.dec.runc", float(m.group(1)))
                elif not a.dry_run:
                    raise RuntimeError("run.c printed no 'achieved tok/s'")
            tasks.append(("run.c", t_runc))
        if llama_bench:
            fig("s.dec.llama", "stories260K decode %d tokens" % n_dec_s, "tok/s")
            fig("s.pre.llama", "stories260K prefill %d" % n_pre, "tok/s")

            def t_llama_s():
                r = llama(s260_gguf, n_pre, n_dec_s)
                add("s.pre.llama", r.get("pp"))
                add("s.dec.llama", r.get("tg"))
            tasks.append(("llama.cpp", t_llama_s))
    if do_gpt2:
        fig("g.pre.graft", "GPT-2-124M prefill %d" % n_pre, "tok/s")
        fig("g.dec.graft", "GPT-2-124M decode %d (F32)" % n_dec_g, "tok/s")
        if do_step:
            fig("g.step.graft", "GPT-2-124M forward+backward 4 x 64", "steps/s")

        def t_graft_g():
            cmd = [graft, "bench", "-m", g124_gguf["f32"], "--threads", str(T), "--runs", "1", "--prefill",
                   str(n_pre), "--batch", "4", "--seq", "64", "--decode", str(n_dec_g), "--json"]
            j = last_json(R.run(cmd + ([] if do_step else ["--no-step"]), env=graft_env) or "{}")
            add("g.pre.graft", tps(j.get("prefill_ms_per_token")))
            if j.get("gemm"):
                floors["graft"] = "graft's GEMM: %s" % j["gemm"]
            add("g.dec.graft", j.get("decode_tok_s"))
            if do_step:
                add("g.step.graft", tps(j.get("step_ms")))
        tasks.append(("graft", t_graft_g))
        for d in ("f16", "q8_0"):
            if not os.path.isfile(g124_gguf[d]) and not a.dry_run:
                continue
            fig("g.dec%s.graft" % d, "GPT-2-124M decode %d (%s)" % (n_dec_g, d.upper()), "tok/s")

            def t_graft_d(d=d):
                j = last_json(R.run([graft, "bench", "-m", g124_gguf[d], "--threads", str(T), "--runs", "1",
                                     "--no-step", "--prefill", "16", "--decode", str(n_dec_g), "--json"],
                                    env=graft_stored) or "{}")
                add("g.dec%s.graft" % d, j.get("decode_tok_s"))
            tasks.append(("graft", t_graft_d))
        if llama_bench:
            fig("g.pre.llama", "GPT-2-124M prefill %d" % n_pre, "tok/s")
            fig("g.dec.llama", "GPT-2-124M decode %d (F32)" % n_dec_g, "tok/s")

            def t_llama_g():
                r = llama(g124_gguf["f32"], n_pre, n_dec_g)
                add("g.pre.llama", r.get("pp"))
                add("g.dec.llama", r.get("tg"))
            tasks.append(("llama.cpp", t_llama_g))
        if torch_py:
            fig("g.pre.torch", "GPT-2-124M prefill %d" % n_pre, "tok/s")
            if do_step:
                fig("g.step.torch", "GPT-2-124M forward+backward 4 x 64", "steps/s")

            def t_torch():
                cmd = [torch_py, os.path.join(HERE, "peer_torch.py"), "--model", g124, "--threads", str(T),
                       "--runs", "1", "--prefill", str(n_pre), "--batch", "4", "--seq", "64"]
                j = last_json(R.run(cmd + ([] if do_step else ["--no-step"]), env={"OMP_NUM_THREADS": str(T)})
                              or "{}")
                add("g.pre.torch", tps(j.get("prefill_ms_per_token")))
                if do_step:
                    add("g.step.torch", tps(j.get("step_ms")))
                if j.get("torch"):
                    floors["torch"] = "PyTorch %s, BLAS %s" % (j["torch"], ", ".join(j.get("blas", [])) or "?")
            tasks.append(("PyTorch", t_torch))
        if llama_bench:
            for d in ("f16", "q8_0"):
                if not os.path.isfile(g124_gguf[d]) and not a.dry_run:
                    continue
                fig("g.dec%s.llama" % d, "GPT-2-124M decode %d (%s)" % (n_dec_g, d.upper()), "tok/s")

                def t_llama_d(d=d):
                    add("g.dec%s.llama" % d, llama(g124_gguf[d], 0, n_dec_g).get("tg"))
                tasks.append(("llama.cpp", t_llama_d))
        if os.path.isfile(g124_gguf["f32"]) or a.dry_run:
            model_shapes["g"] = g124_gguf
    if do_stories and (os.path.isfile(s260_gguf) or not a.dry_run):
        model_shapes["s"] = s260_gguf

    # --- the rounds
    t_start = time.time()
    for rnd in range(runs):
        print("== round %d of %d ==" % (rnd + 1, runs), file=sys.stderr)
        cur_round[0] = rnd
        measure_floors("start of round %d" % (rnd + 1), rnd)
        # odd rounds run the list backwards, so no tool always follows the same one
        for tool, fn in (tasks if rnd % 2 == 0 else tasks[::-1]):
            try:
                fn()
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                msg = "%s: %s" % (tool, e)
                print("peers: round %d: %s" % (rnd + 1, msg), file=sys.stderr)
                for f in figs.values():
                    if f.key.endswith("." + {"graft": "graft", "run.c": "runc", "llama.cpp": "llama",
                                             "PyTorch": "torch"}[tool]):
                        f.errors.append(msg)
    elapsed = time.time() - t_start
    measure_floors("after the rounds")
    if a.dry_run:
        return
    bw = floors.get("read (decode floor)", (None,))[0]
    sg = [v[0] for k, v in floors.items() if k.startswith("sgemm")]
    peak = max(sg) if sg else None
    peak_name = max((k for k in floors if k.startswith("sgemm")), key=lambda k: floors[k][0], default="?")
    spread = {k: [x[2] for x in floors.get("measured", []) if x[0] == k] for k in ("read (decode floor)", peak_name)}

    # --- the shapes, FLOPs and bytes: from the GGUF files
    shapes = {}
    if "s" in model_shapes and os.path.isfile(model_shapes["s"]):
        shapes["s"] = gguf_shape(read_gguf(model_shapes["s"]))
    elif do_stories:
        # no llama.cpp, so no GGUF: read the llama2.c header (dim, hidden, layers, heads, kv heads, vocab, seq)
        with open(s260_bin, "rb") as f:
            C, Fd, L, H, KV, V, _ = struct.unpack("<7i", f.read(28))
        nbytes = 4 * (L * (2 * C * C + 2 * C * KV * (C // H) + 3 * C * Fd + 2 * C) + C + abs(V) * C)
        shapes["s"] = {"arch": "llama", "C": C, "L": L, "H": H, "KV": KV, "F": Fd, "V": abs(V),
                       "bytes_per_token": nbytes}
    if do_gpt2:
        for d in ("f32", "f16", "q8_0"):
            if os.path.isfile(g124_gguf[d]):
                shapes["g" + d] = gguf_shape(read_gguf(g124_gguf[d]))

    # --- the tables
    def ratio(k1, k2):
        f1, f2 = figs.get(k1), figs.get(k2)
        if not f1 or not f2 or f1.median() is None or f2.median() is None:
            return None
        return f1.median() / f2.median()

    peer_name = {"runc": "llama2.c run.c", "llama": "llama.cpp", "torch": "PyTorch", "graft": "graft F32"}
    rows = [  # (graft key, peer key, target ratio or None)
        ("s.dec.graft", "s.dec.runc", 1.5),
        ("s.dec.graft", "s.dec.llama", None),
        ("s.pre.graft", "s.pre.llama", 2.0),
        ("g.pre.graft", "g.pre.llama", 2.0),
        ("g.pre.graft", "g.pre.torch", 2.5),
        ("g.dec.graft", "g.dec.llama", 1.3),
        ("g.decf16.graft", "g.decf16.llama", 1.0),
        ("g.decq8_0.graft", "g.decq8_0.llama", 1.0),
        ("g.decf16.graft", "g.dec.graft", 1.8),
        ("g.step.graft", "g.step.torch", 2.0),
    ]
    lines = []
    w = lines.append
    w("### graft against its peers (`make bench-peers`)")
    w("")
    w("%s; %d threads for every tool; median / best of %d interleaved rounds (each a fresh process with its own "
      "warm-up); %s; %.0f s. Rates: higher is better; graft/peer is the ratio of the medians."
      % (floors["cpu"], T, runs, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), elapsed))
    w("")
    w("| figure | graft median / best | peer | peer median / best | graft/peer | target | met? |")
    w("|---|---:|---|---:|---:|---:|---|")
    for gk, pk, target in rows:
        if gk not in figs or pk not in figs:
            continue
        g, p = figs[gk], figs[pk]
        r = ratio(gk, pk)
        met = "-" if target is None else ("?" if r is None else ("yes" if r >= target else "no"))
        label = g.label
        w("| %s, %s | %s / %s | %s | %s / %s | %s | %s | %s |" % (
            label, g.unit, fmt(g.median()), fmt(g.best()), peer_name[pk.rsplit(".", 1)[1]] + (" F16" if "decf16" in pk else " Q8_0" if "decq8_0" in pk else ""),
            fmt(p.median()), fmt(p.best()), "-" if r is None else "%.2fx" % r,
            "-" if target is None else ">= %.1fx" % target, met))
    w("")
    w("### Floors")
    w("")
    w("CPU flags: %s. Measured by `bench_floors %d` at the start of each round and after the last (best of 5 "
      "each): read bandwidth %s GB/s at best (runs: %s), sgemm peak %s GFLOP/s at best (%s; runs: %s). Floor = "
      "the rate the machine allows: sgemm peak / FLOPs for prefill and training, read bandwidth / bytes of "
      "weights per token for decode. x floor = floor rate / sample rate (1.0 = at the floor), two ways: "
      "*strict*, the best floor of the run over the median sample; *paired*, the median over the rounds of each "
      "sample against the floor measured at the start of its own round. The targets are judged on the paired "
      "ratio: the machine's bandwidth moved by up to 30%% within minutes, and a floor "
      "measured at another time says little about the machine a sample ran on."
      % (floors["flags"], T, fmt(bw, 1), ", ".join(fmt(x, 1) for x in spread["read (decode floor)"]),
         fmt(peak, 1), peak_name.replace("1024^3 ", ""), ", ".join(fmt(x, 1) for x in spread.get(peak_name, []))))
    w("Environment (the shell's OMP_* variables are not passed on): graft with OMP_WAIT_POLICY=passive (as "
      "`make bench`), run.c with OMP_NUM_THREADS, llama-bench with -t and its defaults, PyTorch with "
      "torch.set_num_threads and OMP_NUM_THREADS."
      + "".join(" " + floors[k] + "." for k in ("graft", "torch") if floors.get(k)))
    w("")
    w("| figure | tool | work per unit | best floor | median | x floor, strict | x floor, paired | target | met? |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---|")

    def floor_row(key, tool, shape, kind, target=None):
        f = figs.get(key)
        if not f or not f.samples or not shape:
            return
        if kind == "prefill":
            work = prefill_flops(shape, n_pre) / n_pre
            wtxt = "%.1f MFLOP/token" % (work / 1e6)
        elif kind == "step":
            work = step_flops(shape, 4, 64)
            wtxt = "%.1f GFLOP/step" % (work / 1e9)
        else:
            work = shape["bytes_per_token"]
            wtxt = ("%.1f MB/token" % (work / 1e6)) if work >= 1e6 else ("%.0f kB/token" % (work / 1e3))
        unit = 1e9 / work  # floor rate per GB/s or GFLOP/s

        def rate_floor(fl):
            v = fl.get("read") if kind == "decode" else fl.get("sgemm")
            return v * unit if v else None
        floor = rate_floor({"read": bw, "sgemm": peak})
        x = floor / f.median() if floor else None
        paired = [rate_floor(round_floors[r]) / v for v, r in zip(f.samples, f.rounds)
                  if r in round_floors and rate_floor(round_floors[r])]
        xp = statistics.median(paired) if paired else None
        met = "-" if target is None else ("?" if xp is None else ("yes" if xp <= target else "no"))
        w("| %s, %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            f.label, f.unit, tool, wtxt, fmt(floor), fmt(f.median()), "-" if x is None else "%.2f" % x,
            "-" if xp is None else "%.2f (%.2f-%.2f)" % (xp, min(paired), max(paired)),
            "-" if target is None else "<= %.1f" % target, met))

    s, g32 = shapes.get("s"), shapes.get("gf32")
    floor_row("s.dec.graft", "graft", s, "decode")
    floor_row("s.dec.runc", "run.c", s, "decode")
    floor_row("s.dec.llama", "llama.cpp", s, "decode")
    floor_row("s.pre.graft", "graft", s, "prefill")
    floor_row("s.pre.llama", "llama.cpp", s, "prefill")
    floor_row("g.pre.graft", "graft", g32, "prefill", 1.5)
    floor_row("g.pre.llama", "llama.cpp", g32, "prefill")
    floor_row("g.pre.torch", "PyTorch", g32, "prefill")
    floor_row("g.dec.graft", "graft", g32, "decode", 1.3)
    floor_row("g.dec.llama", "llama.cpp", g32, "decode")
    floor_row("g.decf16.graft", "graft", shapes.get("gf16"), "decode")
    floor_row("g.decq8_0.graft", "graft", shapes.get("gq8_0"), "decode")
    floor_row("g.decf16.llama", "llama.cpp", shapes.get("gf16"), "decode")
    floor_row("g.decq8_0.llama", "llama.cpp", shapes.get("gq8_0"), "decode")
    floor_row("g.step.graft", "graft", g32, "step")
    floor_row("g.step.torch", "PyTorch", g32, "step")
    if s and s["bytes_per_token"] < 8e6:
        w("")
        w("stories260K's %s kB of weights stay in cache, so DRAM bandwidth does not bound its decode, and its "
          "matrices (d_model %d) are far too small for sgemm's peak: its ratios to the floors are for the record "
          "only." % (fmt(s["bytes_per_token"] / 1e3, 0), s["C"]))
    w("")
    w("Every sample, in round order (each tool's rounds alternate with the others'):")
    w("")
    for f in figs.values():
        if f.samples:
            tool = {"graft": "graft", "runc": "run.c", "llama": "llama.cpp", "torch": "PyTorch"}[f.key.rsplit(".", 1)[1]]
            w("- %s, %s, %s: %s" % (f.label, f.unit, tool, ", ".join(fmt(x) for x in f.samples)))
    errs = [e for f in figs.values() for e in f.errors]
    if notes or errs:
        w("")
        for n in notes:
            w("- " + n)
        for e in sorted(set(errs)):
            w("- failed: " + e)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(out_md, "w") as f:
        f.write(text)
    raw = {"threads": T, "runs": runs, "floors": floors, "round_floors": round_floors, "shapes": shapes,
           "notes": notes,
           "figures": {k: {"label": f.label, "unit": f.unit, "samples": f.samples, "rounds": f.rounds,
                           "errors": f.errors}
                       for k, f in figs.items()}}
    with open(os.path.splitext(out_md)[0] + ".json", "w") as f:
        json.dump(raw, f, indent=1)
    print("peers: wrote %s and %s" % (out_md, os.path.splitext(out_md)[0] + ".json"), file=sys.stderr)


if __name__ == "__main__":
    main()
