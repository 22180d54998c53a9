"""serve_util.py - starting `graft serve` and talking to it, for the Python
tests (tests/browser_serve.py, tests/cli_serve_kill.py) and the load bench
(bench/serve_load.py). Standard library only."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServeError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, method, path, body=None, key=None, timeout=60):
    """(status, parsed JSON body or None). Network errors raise OSError."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw.decode()) if raw else None
    except ValueError:
        return status, None


def tail(path, n=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Server:
    """graft serve on a free loopback port, in its own process group."""

    def __init__(self, graft, args, log, timeout=60):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log = Path(log)
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([str(graft), "serve", "--port", str(self.port)] + [str(a) for a in args],
                                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ServeError("graft serve exited with %d before answering:\n%s" % (self.proc.returncode, tail(log)))
            try:
                status, _ = http(self.base, "GET", "/v1/models", timeout=2)
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServeError("graft serve did not answer within %d s:\n%s" % (timeout, tail(log)))

    def kill9(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            self.kill9()
