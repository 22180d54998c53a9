#!/usr/bin/env python3
"""gguf_build.py - write GGUF files byte by byte with Python's struct module,
sharing no code with graft's writer, so tests/cli_gguf.sh can check that graft
reads GGUF as llama.cpp's converter (convert_hf_to_gguf.py) lays it out.

  gguf_build.py llama HFDIR TOKENIZER.bin OUT.gguf [--dtype f32|f16|bf16|q8_0] [--version 2|3] [--alignment N]
      a Llama HF folder (F32 model.safetensors) and a llama2.c tokenizer.bin:
      q/k rows permuted to interleaved RoPE order, SentencePiece pieces with U+2581
  gguf_build.py gpt2-hf OUTDIR TOKDIR
      a random tiny GPT-2 HF folder (config.json, model.safetensors) with the
      encoder.json + vocab.bpe of TOKDIR copied in
  gguf_build.py gpt2 HFDIR OUT.gguf [--dtype ...] [--version 2|3]
      that folder as GGUF: Conv1D matrices transposed to [out, in], the tied
      head stored again as output.weight, tokens + merges from the BPE files
"""
import json
import math
import os
import random
import shutil
import struct
import sys

# GGUF metadata value types and ggml tensor types
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
T_F32, T_F16, T_Q8_0, T_BF16 = 0, 1, 8, 30


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8 : 8 + hlen])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        a, b = info["data_offsets"]
        data = raw[8 + hlen + a : 8 + hlen + b]
        out[name] = (info["shape"], list(struct.unpack("<%df" % (len(data) // 4), data)))
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        blob = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---------------------------------------------------------------- GGUF pieces

def gstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<Q", len(b)) + b


class Writer:
    def __init__(self, version, alignment):
        self.version, self.alignment = version, alignment
        self.kv, self.tensors = [], []

    def add(self, key, vtype, payload):
        self.kv.append(gstr(key) + struct.pack("<I", vtype) + payload)

    def u32(self, key, v):
        self.add(key, UINT32, struct.pack("<I", v))

    def f32(self, key, v):
        self.add(key, FLOAT32, struct.pack("<f", v))

    def string(self, key, v):
        self.add(key, STRING, gstr(v))

    def boolean(self, key, v):
        self.add(key, BOOL, struct.pack("<B", 1 if v else 0))

    def array(self, key, etype, items):
        if etype == STRING:
            body = b"".join(gstr(x) for x in items)
        else:
            body = struct.pack("<%d%s" % (len(items), {INT32: "i", FLOAT32: "f"}[etype]), *items)
        self.add(key, ARRAY, struct.pack("<IQ", etype, len(items)) + body)

    def tensor(self, name, ne, ttype, data):
        self.tensors.append((name, ne, ttype, data))

    def write(self, path):
        if self.alignment != 32:
            self.u32("general.alignment", self.alignment)
        infos, off, blobs = [], 0, []
        for name, ne, ttype, data in self.tensors:
            infos.append(gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
                         + struct.pack("<IQ", ttype, off))
            pad = (self.alignment - len(data) % self.alignment) % self.alignment
            blobs.append(data + b"\0" * pad)
            off += len(data) + pad
        head = b"GGUF" + struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))
        meta = head + b"".join(self.kv) + b"".join(infos)
        meta += b"\0" * ((self.alignment - len(meta) % self.alignment) % self.alignment)
        with open(path, "wb") as f:
            f.write(meta + b"".join(blobs))


def encode(vals, ne0, dtype):
    """Values of a tensor (rows of ne0) in the file's dtype; returns (type, bytes)."""
    if dtype == "f32" or (dtype != "f32" and ne0 == len(vals)):  # 1-D tensors stay F32
        return T_F32, struct.pack("<%df" % len(vals), *vals)
    if dtype == "f16":
        return T_F16, struct.pack("<%de" % len(vals), *vals)
    if dtype == "bf16":
        raw = struct.unpack("<%dI" % len(vals), struct.pack("<%df" % len(vals), *vals))
        # round to nearest even on the 16 dropped bits
        return T_BF16, struct.pack("<%dH" % len(vals), *[((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF for u in raw])
    if dtype == "q8_0":
        if ne0 % 32:
            return T_F32, struct.pack("<%df" % len(vals), *vals)  # as llama.cpp's quantizer falls back
        out = bytearray()
        for b in range(0, len(vals), 32):
            blk = vals[b : b + 32]
            amax = max(abs(v) for v in blk)
            d = amax / 127.0
            inv = 1.0 / d if d else 0.0
            q = [int(math.floor(abs(v * inv) + 0.5)) * (1 if v >= 0 else -1) for v in blk]
            out += struct.pack("<e", d) + struct.pack("<32b", *q)
        return T_Q8_0, bytes(out)
    raise SystemExit("unknown dtype " + dtype)


def file_type(dtype):
    return {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}[dtype]


def opts(argv):
    o = {"dtype": "f32", "version": 3, "alignment": 32}
    i = 0
    while i < len(argv):
        o[argv[i].lstrip("-")] = argv[i + 1] if argv[i] == "--dtype" else int(argv[i + 1])
        i += 2
    return o


# ---------------------------------------------------------------- Llama

def permute(vals, rows, cols, heads):
    """HF rotate-half rows -> interleaved pairs: row h*D + 2j + c <- row h*D + c*D/2 + j."""
    d = rows // heads
    out = [0.0] * len(vals)
    for h in range(heads):
        for j in range(d // 2):
            for c in range(2):
                dst, src = h * d + 2 * j + c, h * d + c * (d // 2) + j
                out[dst * cols : (dst + 1) * cols] = vals[src * cols : (src + 1) * cols]
    return out


def build_llama(hf, tokbin, out, o):
    cfg = json.load(open(os.path.join(hf, "config.json")))
    st = read_safetensors(os.path.join(hf, "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = Writer(o["version"], o["alignment"])
    w.string("general.architecture", "llama")
    w.string("general.name", "gguf_build.py")
    w.u32("general.file_type", file_type(o["dtype"]))
    w.u32("llama.vocab_size", cfg["vocab_size"])
    w.u32("llama.context_length", cfg["max_position_embeddings"])
    w.u32("llama.embedding_length", cfg["hidden_size"])
    w.u32("llama.block_count", cfg["num_hidden_layers"])
    w.u32("llama.feed_forward_length", cfg["intermediate_size"])
    w.u32("llama.rope.dimension_count", cfg["head_dim"])
    w.u32("llama.attention.head_count", H)
    w.u32("llama.attention.head_count_kv", KV)
    w.f32("llama.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    w.f32("llama.rope.freq_base", cfg["rope_theta"])
    # tokenizer: llama2.c records (score, length, bytes) -> SentencePiece pieces
    raw = open(tokbin, "rb").read()
    pos, pieces, scores = 4, [], []
    while pos < len(raw):
        sc, n = struct.unpack_from("<fi", raw, pos)
        pieces.append(raw[pos + 8 : pos + 8 + n])
        scores.append(sc)
        pos += 8 + n
    toks, types = [], []
    for i, p in enumerate(pieces):
        if i == 1:
            toks.append(b"<s>"), types.append(3)
        elif i == 2:
            toks.append(b"</s>"), types.append(3)
        else:
            toks.append(p.replace(b" ", "\u2581".encode()))
            types.append(2 if i == 0 else 6 if 3 <= i < 259 else 1)
    w.string("tokenizer.ggml.model", "llama")
    w.string("tokenizer.ggml.pre", "default")
    w.array("tokenizer.ggml.tokens", STRING, toks)
    w.array("tokenizer.ggml.scores", FLOAT32, scores)
    w.array("tokenizer.ggml.token_type", INT32, types)
    w.u32("tokenizer.ggml.bos_token_id", 1)
    w.u32("tokenizer.ggml.eos_token_id", 2)
    w.u32("tokenizer.ggml.unknown_token_id", 0)
    w.boolean("tokenizer.ggml.add_bos_token", True)

    def put(gname, hname, heads=0):
        shape, vals = st[hname]
        if heads:
            vals = permute(vals, shape[0], shape[1], heads)
        ne = [shape[-1]] + ([shape[0]] if len(shape) == 2 else [])
        t, data = encode(vals, ne[0], o["dtype"])
        w.tensor(gname, ne, t, data)

    put("token_embd.weight", "model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        put("blk.%d.attn_norm.weight" % i, p + "input_layernorm.weight")
        put("blk.%d.attn_q.weight" % i, p + "self_attn.q_proj.weight", H)
        put("blk.%d.attn_k.weight" % i, p + "self_attn.k_proj.weight", KV)
        put("blk.%d.attn_v.weight" % i, p + "self_attn.v_proj.weight")
        put("blk.%d.attn_output.weight" % i, p + "self_attn.o_proj.weight")
        put("blk.%d.ffn_norm.weight" % i, p + "post_attention_layernorm.weight")
        put("blk.%d.ffn_gate.weight" % i, p + "mlp.gate_proj.weight")
        put("blk.%d.ffn_up.weight" % i, p + "mlp.up_proj.weight")
        put("blk.%d.ffn_down.weight" % i, p + "mlp.down_proj.weight")
    put("output_norm.weight", "model.norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        put("output.weight", "lm_head.weight")
    w.write(out)


# ---------------------------------------------------------------- GPT-2

def gpt2_hf(outdir, tokdir):
    os.makedirs(outdir, exist_ok=True)
    C, L, H, N, V, F = 32, 2, 4, 64, 50257, 128
    rng = random.Random(20261205)

    def rnd(n, s=0.2):
        return [rng.uniform(-s, s) for _ in range(n)]

    t = {"transformer.wte.weight": ([V, C], rnd(V * C)), "transformer.wpe.weight": ([N, C], rnd(N * C))}
    for i in range(L):
        p = "transformer.h.%d." % i
        t[p + "ln_1.weight"] = ([C], [1 + x for x in rnd(C, 0.1)])
        t[p + "ln_1.bias"] = ([C], rnd(C, 0.1))
        t[p + "attn.c_attn.weight"] = ([C, 3 * C], rnd(C * 3 * C))
        t[p + "attn.c_attn.bias"] = ([3 * C], rnd(3 * C, 0.1))
        t[p + "attn.c_proj.weight"] = ([C, C], rnd(C * C))
        t[p + "attn.c_proj.bias"] = ([C], rnd(C, 0.1))
        t[p + "ln_2.weight"] = ([C], [1 + x for x in rnd(C, 0.1)])
        t[p + "ln_2.bias"] = ([C], rnd(C, 0.1))
        t[p + "mlp.c_fc.weight"] = ([C, F], rnd(C * F))
        t[p + "mlp.c_fc.bias"] = ([F], rnd(F, 0.1))
        t[p + "mlp.c_proj.weight"] = ([F, C], rnd(F * C))
        t[p + "mlp.c_proj.bias"] = ([C], rnd(C, 0.1))
    t["transformer.ln_f.weight"] = ([C], [1 + x for x in rnd(C, 0.1)])
    t["transformer.ln_f.bias"] = ([C], rnd(C, 0.1))
    write_safetensors(os.path.join(outdir, "model.safetensors"), t)
    cfg = {"model_type": "gpt2", "n_embd": C, "n_layer": L, "n_head": H, "n_positions": N, "n_ctx": N,
           "vocab_size": V, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
           "bos_token_id": 50256, "eos_token_id": 50256}
    json.dump(cfg, open(os.path.join(outdir, "config.json"), "w"), indent=2)
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copy(os.path.join(tokdir, f), os.path.join(outdir, f))


def transpose(vals, rows, cols):
    """[rows][cols] -> [cols][rows]"""
    return [vals[r * cols + c] for c in range(cols) for r in range(rows)]


def build_gpt2(hf, out, o):
    cfg = json.load(open(os.path.join(hf, "config.json")))
    st = read_safetensors(os.path.join(hf, "model.safetensors"))
    C = cfg["n_embd"]
    w = Writer(o["version"], o["alignment"])
    w.string("general.architecture", "gpt2")
    w.string("general.name", "gguf_build.py")
    w.u32("general.file_type", file_type(o["dtype"]))
    w.u32("gpt2.block_count", cfg["n_layer"])
    w.u32("gpt2.context_length", cfg["n_ctx"])
    w.u32("gpt2.embedding_length", C)
    w.u32("gpt2.feed_forward_length", 4 * C)
    w.u32("gpt2.attention.head_count", cfg["n_head"])
    w.f32("gpt2.attention.layer_norm_epsilon", cfg["layer_norm_epsilon"])
    enc = json.load(open(os.path.join(hf, "encoder.json"), encoding="utf-8"))
    by_id = sorted(enc.items(), key=lambda kv: kv[1])
    assert [i for _, i in by_id] == list(range(len(by_id)))
    lines = open(os.path.join(hf, "vocab.bpe"), encoding="utf-8").read().split("\n")
    merges = [l for l in lines if l and not l.startswith("#version")]
    w.string("tokenizer.ggml.model", "gpt2")
    w.string("tokenizer.ggml.pre", "gpt-2")
    w.array("tokenizer.ggml.tokens", STRING, [t.encode("utf-8") for t, _ in by_id])
    w.array("tokenizer.ggml.token_type", INT32, [3 if t == "<|endoftext|>" else 1 for t, _ in by_id])
    w.array("tokenizer.ggml.merges", STRING, [m.encode("utf-8") for m in merges])
    w.u32("tokenizer.ggml.bos_token_id", 50256)
    w.u32("tokenizer.ggml.eos_token_id", 50256)

    def put(gname, hname, conv1d=False):
        shape, vals = st[hname]
        if conv1d:  # [in, out] -> [out, in]; ne = [in, out]
            vals = transpose(vals, shape[0], shape[1])
            ne = [shape[0], shape[1]]
        else:
            ne = [shape[-1]] + ([shape[0]] if len(shape) == 2 else [])
        t, data = encode(vals, ne[0], o["dtype"])
        w.tensor(gname, ne, t, data)

    put("token_embd.weight", "transformer.wte.weight")
    put("position_embd.weight", "transformer.wpe.weight")
    for i in range(cfg["n_layer"]):
        p = "transformer.h.%d." % i
        for g, h, conv in (("attn_norm.weight", "ln_1.weight", 0), ("attn_norm.bias", "ln_1.bias", 0),
                           ("attn_qkv.weight", "attn.c_attn.weight", 1), ("attn_qkv.bias", "attn.c_attn.bias", 0),
                           ("attn_output.weight", "attn.c_proj.weight", 1), ("attn_output.bias", "attn.c_proj.bias", 0),
                           ("ffn_norm.weight", "ln_2.weight", 0), ("ffn_norm.bias", "ln_2.bias", 0),
                           ("ffn_up.weight", "mlp.c_fc.weight", 1), ("ffn_up.bias", "mlp.c_fc.bias", 0),
                           ("ffn_down.weight", "mlp.c_proj.weight", 1), ("ffn_down.bias", "mlp.c_proj.bias", 0)):
            put("blk.%d.%s" % (i, g), p + h, conv)
    put("output_norm.weight", "transformer.ln_f.weight")
    put("output_norm.bias", "transformer.ln_f.bias")
    put("output.weight", "transformer.wte.weight")  # the converter stores the tied head again
    w.write(out)


def main(argv):
    if len(argv) >= 5 and argv[1] == "llama":
        build_llama(argv[2], argv[3], argv[4], opts(argv[5:]))
    elif len(argv) == 4 and argv[1] == "gpt2-hf":
        gpt2_hf(argv[2], argv[3])
    elif len(argv) >= 4 and argv[1] == "gpt2":
        build_gpt2(argv[2], argv[3], opts(argv[4:]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
