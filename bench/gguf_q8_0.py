#!/usr/bin/env python3
"""bench/gguf_q8_0.py - rewrite a GGUF file with its matrices in ggml's Q8_0, for
the llama.cpp Q8_0 row of `make bench-peers` when llama.cpp's own
llama-quantize was not built.

usage: gguf_q8_0.py IN.gguf OUT.gguf        (needs numpy)

The metadata is copied byte for byte (general.file_type patched to 7,
MOSTLY_Q8_0). Every 2-D F32/F16 tensor whose rows are a multiple of 32 is
quantised, except position_embd (as llama-quantize leaves it); norms, biases
and other 1-D tensors stay as they are. Q8_0: blocks of 32 weights, an F16
scale d = max|x| / 127 and 32 int8 q = round(x / d). Speed, not accuracy, is
what the benchmark reads, but the file is a valid model either way.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import GGML_F16, GGML_F32, GGML_Q8_0, read_gguf  # noqa: E402

FTYPE_MOSTLY_Q8_0 = 7


def quantize_q8_0(x):
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    out = np.empty(blocks.shape[0], dtype=[("d", "<f2"), ("q", "i1", (32,))])
    out["d"] = d.astype(np.float16)
    out["q"] = np.clip(np.rint(blocks * inv[:, None]), -127, 127).astype(np.int8)
    return out.tobytes()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_q8_0.py IN.gguf OUT.gguf")
    src, dst = sys.argv[1], sys.argv[2]
    g = read_gguf(src)
    with open(src, "rb") as f:
        buf = f.read()
    kv = bytearray(buf[g["kv_start"]:g["kv_end"]])
    if g["file_type_at"] is not None:
        at = g["file_type_at"] - g["kv_start"]
        kv[at:at + 4] = FTYPE_MOSTLY_Q8_0.to_bytes(4, "little")
    align = g["alignment"]
    infos, datas, off = [], [], 0
    for t in g["tensors"]:
        raw = buf[g["data_start"] + t["offset"]:g["data_start"] + t["offset"] + t["nbytes"]]
        typ = t["type"]
        if (len(t["ne"]) == 2 and t["ne"][0] % 32 == 0 and typ in (GGML_F32, GGML_F16)
                and not t["name"].startswith("position_embd")):
            x = np.frombuffer(raw, dtype="<f4" if typ == GGML_F32 else "<f2").astype(np.float32)
            raw, typ = quantize_q8_0(x), GGML_Q8_0
        name = t["name"].encode()
        info = len(name).to_bytes(8, "little") + name + len(t["ne"]).to_bytes(4, "little")
        info += b"".join(n.to_bytes(8, "little") for n in t["ne"])
        info += typ.to_bytes(4, "little") + off.to_bytes(8, "little")
        infos.append(info)
        datas.append(raw)
        off += len(raw)
        off += -off % align
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf[:g["kv_start"]])  # magic, version, tensor and metadata counts: unchanged
        f.write(kv)
        for info in infos:
            f.write(info)
        f.write(b"\0" * (-f.tell() % align))
        for raw in datas:
            f.write(raw)
            f.write(b"\0" * (-len(raw) % align))
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()
