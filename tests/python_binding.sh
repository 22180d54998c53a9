#!/usr/bin/env bash
# python_binding.sh - runs tests/python/ (pytest) against the Python binding
# in python/graft with the libgraft.so of this build (GRAFT_LIB, set by
# CTest). Debian's python3 and python3-pytest (scripts/deps.sh); skips (77)
# without pytest, and in sanitizer builds: python3 is not instrumented, so
# loading an ASan libgraft.so needs LD_PRELOAD of the ASan runtime and then
# reports CPython's own allocations. Usage: python_binding.sh PATH/TO/graft
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export GRAFT_BIN=${1:?usage: python_binding.sh GRAFT_BINARY}
: "${GRAFT_LIB:?set GRAFT_LIB to the libgraft.so to test}"
if [ -n "${GRAFT_SANITIZE:-}" ]; then
  echo "python_binding: skipped in a sanitizer build (-DGRAFT_SANITIZE=$GRAFT_SANITIZE): an uninstrumented" \
       "python3 cannot load the instrumented libgraft.so without LD_PRELOAD of the sanitizer runtime"
  exit 77
fi
# Debian's interpreter first: a pyenv or venv python3 on PATH may lack pytest
PY=
for p in ${GRAFT_PYTHON:-/usr/bin/python3 python3}; do
  if command -v "$p" >/dev/null && "$p" -c 'import pytest' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  echo "python_binding: no python3 with pytest (${GRAFT_PYTHON:-/usr/bin/python3, python3}): apt-get install python3-pytest; skipping"
  exit 77
fi
export PYTHONPATH=$HERE/../python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec "$PY" -m pytest -q -p no:cacheprovider "$HERE/python"
