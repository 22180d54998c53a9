#!/usr/bin/env python3
"""bench/peer_torch.py - the PyTorch side of `make bench-peers` (bench/peers.py).

GPT-2 (124M shapes unless a model folder says otherwise) written out in plain
torch.nn, so it runs on the PyTorch 1.13 of Debian (python3-torch, which has no
scaled_dot_product_attention), timed the way `graft bench` times graft:

  prefill   one forward of batch 1 x --prefill tokens under torch.no_grad(),
            logits of the last row only (graft bench and llama-bench do the same)
  step      forward + backward of --batch x --seq tokens, cross-entropy on the
            next token, gradients of every parameter

Weights: --model DIR reads DIR/config.json and DIR/model.safetensors (the
folder `graft train` wrote, the one whose GGUF export graft and llama.cpp run),
so all three run the same numbers; without it, random N(0, 0.02) weights.
Speed does not depend on the values. One warm-up of each, then --runs timed
runs; prints one JSON object: medians and bests (ms).

usage: peer_torch.py [--model DIR] [--threads N] [--runs N] [--prefill T]
                     [--batch B] [--seq T] [--no-step] [--nll-ids 1,2,3]
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_124M = {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
             "n_inner": None, "layer_norm_epsilon": 1e-5}


class Block(nn.Module):
    def __init__(self, C, H, Fd, eps):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.c_attn = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.c_fc = nn.Linear(C, Fd)
        self.mlp_proj = nn.Linear(Fd, C)

    def forward(self, x, mask):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, L, H, V = cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]
        Fd = cfg.get("n_inner") or 4 * C
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(cfg["n_positions"], C)
        self.h = nn.ModuleList(Block(C, H, Fd, eps) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=eps)
        self.register_buffer("mask", torch.ones(cfg["n_positions"], cfg["n_positions"], dtype=torch.bool).triu(1),
                             persistent=False)

    def hidden(self, ids):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x, self.mask)
        return self.ln_f(x)

    def forward(self, ids):  # all rows; the LM head is tied to wte
        return self.hidden(ids) @ self.wte.weight.t()


def read_safetensors(path):
    """name -> float32 numpy array (F32, F16 and BF16 tensors)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = buf[8 + n + a:8 + n + b]
        if t["dtype"] == "F32":
            v = np.frombuffer(raw, dtype="<f4")
        elif t["dtype"] == "F16":
            v = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            sys.exit("peer_torch.py: %s: dtype %s not handled" % (name, t["dtype"]))
        out[name] = v.reshape(t["shape"])
    return out


def load_weights(model, folder):
    """Hugging Face GPT-2 names; Conv1D weights are [in, out], nn.Linear wants [out, in]."""
    w = {k[len("transformer."):] if k.startswith("transformer.") else k: v
         for k, v in read_safetensors(os.path.join(folder, "model.safetensors")).items()}
    sd = {"wte.weight": w["wte.weight"], "wpe.weight": w["wpe.weight"],
          "ln_f.weight": w["ln_f.weight"], "ln_f.bias": w["ln_f.bias"]}
    for i in range(len(model.h)):
        p = "h.%d." % i
        for ours, theirs, conv in (("ln_1", "ln_1", 0), ("ln_2", "ln_2", 0), ("c_attn", "attn.c_attn", 1),
                                   ("attn_proj", "attn.c_proj", 1), ("c_fc", "mlp.c_fc", 1),
                                   ("mlp_proj", "mlp.c_proj", 1)):
            sd[p + ours + ".weight"] = w[p + theirs + ".weight"].T if conv else w[p + theirs + ".weight"]
            sd[p + ours + ".bias"] = w[p + theirs + ".bias"]
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()})


def blas_libraries():
    """The BLAS libraries mapped into this process: Debian's torch is built with
    BLAS_INFO=generic and calls whichever libblas.so.3 the alternatives select."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = os.path.basename(line.split()[-1]) if "/" in line else ""
                if "blas" in name or "mkl" in name:
                    libs.add(os.path.realpath(line.split()[-1]))
    except OSError:
        pass
    return sorted(libs)


def ids_of(n, V, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n,), generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="HF GPT-2 folder (config.json, model.safetensors); default random 124M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--nll-ids", help="1,2,3: print the mean next-token NLL of these ids and exit (a check that "
                    "this is the model graft runs: `graft score --ids` prints the same figure)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.model:
        with open(os.path.join(a.model, "config.json")) as f:
            cfg = dict(GPT2_124M, **json.load(f))
    else:
        cfg = dict(GPT2_124M)
    model = GPT2(cfg)
    if a.model:
        load_weights(model, a.model)
    else:
        for p in model.parameters():
            nn.init.normal_(p, std=0.02)
    V = cfg["vocab_size"]
    if a.nll_ids:
        ids = torch.tensor([int(x) for x in a.nll_ids.split(",")]).view(1, -1)
        with torch.no_grad():
            nll = F.cross_entropy(model(ids)[0, :-1], ids[0, 1:]).item()
        print(json.dumps({"tokens": ids.shape[1], "nll": nll}))
        return
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": a.runs,
           "params": sum(p.numel() for p in model.parameters())}

    ids = ids_of(a.prefill, V, 11).view(1, -1)
    t = []
    with torch.no_grad():
        for i in range(-1, a.runs):
            t0 = time.perf_counter()
            h = model.hidden(ids)
            logits = h[:, -1] @ model.wte.weight.t()
            logits.sum().item()
            if i >= 0:
                t.append((time.perf_counter() - t0) * 1e3 / a.prefill)
    res.update(prefill_tokens=a.prefill, prefill_ms_per_token=statistics.median(t), prefill_ms_per_token_best=min(t))

    if not a.no_step:
        B, T = a.batch, a.seq
        ids = ids_of(B * T + 1, V, 12)
        x, y = ids[:-1].view(B, T), ids[1:].view(B, T)
        t = []
        for i in range(-1, a.runs):
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x).view(B * T, V), y.reshape(-1))
            loss.backward()
            if i >= 0:
                t.append((time.perf_counter() - t0) * 1e3)
        res.update(step_batch=B, step_seq=T, step_ms=statistics.median(t), step_ms_best=min(t))
    res["blas"] = blas_libraries()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
