#!/usr/bin/env bash
# Install the Debian packages graft builds against, if any are missing.
# Run by `make` before the first configure; safe to run again.
set -eu
pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev libutf8proc-dev
      libsqlite3-dev libpq-dev libmicrohttpd-dev sqlite3 jq curl
      postgresql
      python3 python3-pytest)
# the real-browser test of graft serve's page (tests/browser_serve.py) skips
# without these; GRAFT_BROWSER_TESTS=1 installs them (about 300 MB)
[ "${GRAFT_BROWSER_TESTS:-0}" = 1 ] && pkgs+=(chromium chromium-driver python3-selenium)
# make fuzz: clang's libFuzzer (and its OpenMP runtime)
[ "${GRAFT_FUZZ_DEPS:-0}" = 1 ] && pkgs+=(clang libomp-dev)
# scripts/fuzz_coverage.sh: clang's coverage tools (llvm-profdata, llvm-cov)
[ "${GRAFT_FUZZCOV_DEPS:-0}" = 1 ] && pkgs+=(clang libomp-dev llvm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "graft: installing missing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "graft: run as root: apt-get install -y ${missing[*]}" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
