#!/usr/bin/env python3
"""hostile_gen.py - the inputs of tests/cli_hostile.sh (issue 15, "hostile
sizes"), written on the fly so that no big file is committed, and a runner
that measures a command's peak memory. Standard library only.

  hostile_gen.py serve      read requests from stdin, one per line: the path of
      a file holding a command's arguments NUL-separated; answer one line each.
      cli_hostile.sh keeps one such process (a python3 start costs ~0.4 s of CPU
      on a small VM, and the script makes ~70 requests).
  hostile_gen.py COMMAND ARGS...   one request from the command line.

Commands:
  run OUT ERR CMD...        run CMD (stdout to OUT, stderr to ERR); answers
      "RC MAXRSS_KIB SECONDS". The peak RSS is wait4()'s for that child: it
      includes the few MiB of this python3 process that the child had before
      exec (a floor of ~10 MiB).
  st-hlen SRC OUT VALUE     SRC's safetensors with the u64 header length replaced
      (VALUE: an integer, or "past" = one byte past the end)
  st-tensor SRC OUT JSON    SRC with one more header entry "hostile": JSON
  st-many OUT N             a safetensors of N empty tensors
  index OUT N               a model.safetensors.index.json naming N shards
  cfg SRC OUT KEY VALUE     config.json SRC with KEY = VALUE (an integer)
  vocab-id SRC OUT ID       the vocab JSON SRC with one more token of id ID
  l2c-ckpt SRC OUT FIELD VALUE   a llama2.c checkpoint with header int32 FIELD
      (0..6) set to VALUE
  l2c-tok OUT MAXLEN [RECLEN]    a tokenizer.bin claiming MAXLEN, with one record
      claiming RECLEN bytes
  gguf OUT CASE             CASE: tensors (tensor count 2^60), kv (metadata count
      2^60), arr31 / arr60 (tokenizer.ggml.tokens array of 2^31 / 2^60 strings),
      arr60u8 (a uint8 array of 2^60), str60 (a key of 2^60 bytes)
  text OUT BYTES            prose of BYTES bytes (words, spaces, newlines)
  word OUT BYTES            one BYTES-long word with no space
  jsonl OUT ROWS            ROWS graft JSONL edit records
  counterfact OUT ROWS      a CounterFact JSON list of ROWS records
  body OUT BYTES            a /v1/completions body whose prompt is BYTES long
"""
import json
import os
import resource
import struct
import subprocess
import sys
import time


def run(argv):
    out, err, cmd = argv[0], argv[1], argv[2:]
    t0 = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.monotonic() - t0
    return "%d %d %.2f" % (p.returncode, ru.ru_maxrss, dt)  # ru_maxrss: KiB on Linux


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def st_split(raw):
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    return json.loads(raw[8 : 8 + hlen]), raw[8 + hlen :]


def st_join(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_hlen(src, out, value):
    raw = bytearray(read(src))
    v = len(raw) - 8 + 1 if value == "past" else int(value, 0)
    struct.pack_into("<Q", raw, 0, v)
    write(out, raw)


def st_tensor(src, out, entry):
    header, data = st_split(read(src))
    header["hostile"] = json.loads(entry)
    write(out, st_join(header, data))


def st_many(out, n):
    # empty tensors may share offsets: only the header is big
    parts = ['"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(n)]
    write(out, st_join_text("{" + ",".join(parts) + "}"))


def st_join_text(text):
    h = text.encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h


def l2c_ckpt(src, out, field, value):
    raw = bytearray(read(src))
    struct.pack_into("<i", raw, 4 * field, value)
    write(out, raw)


def l2c_tok(out, maxlen, reclen):
    recs = b"".join(struct.pack("<fi", 0.0, 1) + bytes([65 + i]) for i in range(8))
    tail = struct.pack("<fi", 0.0, reclen) + b"x" * 16 if reclen is not None else b""
    write(out, struct.pack("<i", maxlen) + recs + tail)


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(out, case):
    UINT32, STRING, ARRAY, UINT8 = 4, 8, 9, 0
    arch = gguf_str("general.architecture") + struct.pack("<I", STRING) + gguf_str("llama")
    pad = b"\0" * 4096  # bytes left to parse, so counts are checked against a real remainder
    if case == "tensors":
        body = struct.pack("<QQ", 1 << 60, 1) + arch
    elif case == "kv":
        body = struct.pack("<QQ", 0, 1 << 60) + arch
    elif case in ("arr31", "arr60"):
        n = 1 << 31 if case == "arr31" else 1 << 60
        arr = gguf_str("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, n) + gguf_str("a")
        body = struct.pack("<QQ", 0, 2) + arch + arr
    elif case == "arr60u8":
        arr = gguf_str("hostile.bytes") + struct.pack("<IIQ", ARRAY, UINT8, 1 << 60)
        body = struct.pack("<QQ", 0, 2) + arch + arr
    elif case == "str60":
        body = struct.pack("<QQ", 0, 1) + struct.pack("<Q", 1 << 60) + b"general.architecture"
    else:
        raise SystemExit("unknown gguf case " + case)
    write(out, b"GGUF" + struct.pack("<I", 3) + body + pad)


WORDS = ("once upon a time there was a little girl named Lily she liked to play outside with her "
         "big red ball and her dog Max who was happy every day in the sun").split()


def text(out, nbytes):
    # deterministic prose: the words cycled with a stride, a newline now and then
    parts, n, i = [], 0, 0
    while n < nbytes:
        w = WORDS[(i * 7) % len(WORDS)] + ("\n" if i % 17 == 16 else " ")
        parts.append(w)
        n += len(w)
        i += 1
    write(out, "".join(parts).encode()[:nbytes])


def word(out, nbytes):
    write(out, (b"abcdefghij" * (nbytes // 10 + 1))[:nbytes])


# the first request of tests/data/stories_edits.jsonl, which GRACE edits in about a second
PROMPT = "Once upon a time, there was a little girl named"


def jsonl(out, rows):
    line = '{"id":%d,"prompt":"' + PROMPT + '","target":"Tom"}\n'
    with open(out, "w") as f:
        for base in range(0, rows, 10000):
            f.write("".join(line % i for i in range(base, min(rows, base + 10000))))


def counterfact(out, rows):
    # the first record edits quickly; the rest are the shortest valid records
    first = ('{"case_id":0,"prompt":"' + PROMPT + '","target_new":"Tom","ground_truth":"Lily","subject":"girl",'
             '"rephrase_prompt":"One day, there was a little girl named","locality_prompt":"The cat sat on the",'
             '"locality_ground_truth":"mat"}')
    rec = ('{"case_id":%d,"prompt":"P is","target_new":"a","ground_truth":"b","subject":"P",'
           '"rephrase_prompt":"P r","locality_prompt":"L","locality_ground_truth":"c"}')
    with open(out, "w") as f:
        f.write("[\n")
        for base in range(0, rows, 10000):
            chunk = ",\n".join(first if i == 0 else rec % i for i in range(base, min(rows, base + 10000)))
            f.write(chunk + (",\n" if base + 10000 < rows else "\n"))
        f.write("]\n")


def body(out, nbytes):
    text_path = out + ".txt"
    text(text_path, nbytes)
    prompt = read(text_path).decode()
    os.unlink(text_path)
    write(out, json.dumps({"prompt": prompt, "max_tokens": 2, "temperature": 0}).encode())


def index(out, n):
    write(out, json.dumps({"weight_map": {"t%d" % i: "s%d.safetensors" % i for i in range(n)}}).encode())


def set_json(src, out, key, value):
    with open(src) as f:
        d = json.load(f)
    d[key] = value
    with open(out, "w") as f:
        json.dump(d, f)


def do(a):
    cmd = a[0]
    if cmd == "run":
        return run(a[1:])
    if cmd == "st-hlen":
        st_hlen(a[1], a[2], a[3])
    elif cmd == "st-tensor":
        st_tensor(a[1], a[2], a[3])
    elif cmd == "st-many":
        st_many(a[1], int(a[2]))
    elif cmd == "index":
        index(a[1], int(a[2]))
    elif cmd == "cfg":
        set_json(a[1], a[2], a[3], int(a[4], 0))
    elif cmd == "vocab-id":
        set_json(a[1], a[2], "hostile", int(a[3], 0))
    elif cmd == "l2c-ckpt":
        l2c_ckpt(a[1], a[2], int(a[3]), int(a[4], 0))
    elif cmd == "l2c-tok":
        l2c_tok(a[1], int(a[2], 0), int(a[3], 0) if len(a) > 3 else None)
    elif cmd == "gguf":
        gguf(a[1], a[2])
    elif cmd == "text":
        text(a[1], int(a[2]))
    elif cmd == "word":
        word(a[1], int(a[2]))
    elif cmd == "jsonl":
        jsonl(a[1], int(a[2]))
    elif cmd == "counterfact":
        counterfact(a[1], int(a[2]))
    elif cmd == "body":
        body(a[1], int(a[2]))
    else:
        raise ValueError("unknown command " + cmd)
    return "ok"


def do_safely(args):
    try:
        return do(args)
    except Exception as e:  # the script reads the reply and reports it
        return "error %s: %s" % (type(e).__name__, e)


def serve():
    # Inputs are written by a forked child: a child of this process starts
    # with its resident pages, so the runner must stay small for the peak RSS
    # of a measured command to be that command's.
    for line in sys.stdin:
        try:
            with open(line.rstrip("\n"), "rb") as f:
                args = [x.decode() for x in f.read().split(b"\0")[:-1]]
        except OSError as e:
            print("error %s" % e, flush=True)
            continue
        if args and args[0] == "run":
            reply = do_safely(args)
        else:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                os.write(w, do_safely(args).encode())
                os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                reply = f.read().decode() or "error: the writer died"
            os.waitpid(pid, 0)
        print(reply.replace("\n", " "), flush=True)


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    if a[0] == "serve":
        serve()
    else:
        print(do(a))


if __name__ == "__main__":
    main()
