#!/usr/bin/env bash
# cli_install.sh - make install's tree: installs the build that made GRAFT
# into a scratch prefix (cmake --install, what `make install PREFIX=...`
# runs), checks the files, the soname and that libgraft.so exports exactly
# the functions graft.h declares, then builds tests/pkgconfig_edit.c against
# the installed tree with `pkg-config --cflags --libs graft` (shared, and
# --static against libgraft.a) and runs it: it edits stories260K through the
# public API. Usage: cli_install.sh PATH/TO/graft
set -u
GRAFT=${1:?usage: cli_install.sh GRAFT_BINARY}
DATA=${GRAFT_TEST_DATA:?}
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "$(dirname "$GRAFT")" && pwd)
. "$HERE/lib.sh"
cli_begin install

for tool in cmake pkg-config nm readelf; do
  command -v $tool >/dev/null || { echo "cli_install: $tool is not installed; skipping"; exit 77; }
done
cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
CC=$(cache CMAKE_C_COMPILER); CC=${CC:-cc}
SAN=$(cache GRAFT_SANITIZE)
# a program linking an instrumented library must itself carry the sanitizer runtime
CFLAGS=(-std=c11 -Wall -Wextra -O1)
[ -n "$SAN" ] && CFLAGS+=(-fsanitize="$SAN" -fno-omit-frame-pointer)

P=$tmp/prefix
cmake --install "$BUILD" --prefix "$P" >"$tmp/install.log" 2>&1 && ok || bad "cmake --install: $(tail -5 "$tmp/install.log")"
LIB=$P/lib
[ -d "$LIB/pkgconfig" ] || LIB=$(dirname "$(find "$P" -name graft.pc | head -1)")/..
for f in bin/graft include/graft.h; do [ -f "$P/$f" ] && ok || bad "install lacks $f"; done
for f in libgraft.a libgraft.so libgraft.so.0 pkgconfig/graft.pc; do [ -e "$LIB/$f" ] && ok || bad "install lacks lib/$f"; done
real=$(readlink -f "$LIB/libgraft.so")
ver=$(sed -n 's/^#define GRAFT_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' "$P/include/graft.h" | paste -sd.)
[ "$(basename "$real")" = "libgraft.so.$ver" ] && ok || bad "libgraft.so points at $real, want libgraft.so.$ver"
soname=$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libgraft.so.${ver%%.*}" ] && ok || bad "soname '$soname', want libgraft.so.${ver%%.*}"
"$P/bin/graft" --help >/dev/null 2>&1 && ok || bad "the installed graft does not run"

# exactly the header's functions are exported: no internal graft_* symbol leaks
sed -n 's/^GRAFT_API [^(]*[ *]\(graft_[a-z0-9_]*\)(.*/\1/p' "$P/include/graft.h" | sort >"$tmp/declared"
nm -D --defined-only "$real" | awk '$2 ~ /^[TtWDdBbRrVvi]$/ {print $3}' | grep -v -e '^_' -e '^__' | sort >"$tmp/exported"
[ "$(wc -l <"$tmp/declared")" -ge 40 ] && ok || bad "found only $(wc -l <"$tmp/declared") GRAFT_API declarations in graft.h"
if diff "$tmp/declared" "$tmp/exported" >"$tmp/symdiff"; then ok
else bad "libgraft.so exports differ from graft.h (< declared only, > exported only): $(head -20 "$tmp/symdiff")"; fi

# pkg-config against the installed tree
export PKG_CONFIG_PATH=$LIB/pkgconfig
[ "$(pkg-config --modversion graft)" = "$ver" ] && ok || bad "pkg-config --modversion: $(pkg-config --modversion graft 2>&1)"
case " $(pkg-config --cflags graft) " in *" -I$P/include "*) ok ;;
  *) bad "cflags do not name the installed include folder: $(pkg-config --cflags graft)" ;; esac
# shared: the program runs against the installed libgraft.so (no rpath into the build tree)
if "$CC" "${CFLAGS[@]}" "$HERE/pkgconfig_edit.c" -o "$tmp/edit_shared" $(pkg-config --cflags --libs graft) \
    -Wl,-rpath,"$LIB" 2>"$tmp/cc.log"; then ok; else bad "building against the installed tree: $(head -c 600 "$tmp/cc.log")"; fi
if [ -x "$tmp/edit_shared" ]; then
  ldd "$tmp/edit_shared" | grep -q "libgraft.so.0 => $LIB\|libgraft.so.0 => $(cd "$LIB" && pwd -P)" && ok \
    || bad "the program does not load the installed libgraft.so: $(ldd "$tmp/edit_shared" | grep graft)"
  OMP_WAIT_POLICY=passive "$tmp/edit_shared" "$DATA/stories260K.bin" "$tmp/run" "$tmp/saved" >"$tmp/out" 2>&1 \
    && grep -q "all checks passed" "$tmp/out" && ok || bad "pkgconfig_edit (shared): $(tail -12 "$tmp/out")"
  grep -q "^after:  Tom had a big red| kite" "$tmp/out" && ok || bad "the edit's generation: $(grep -E '^(before|after)' "$tmp/out")"
  [ -f "$tmp/run/journal.sqlite" ] && [ -f "$tmp/saved/journal.sqlite" ] && ok || bad "run/saved journals missing"
fi
# static: libgraft.a with what Requires.private and Libs.private name (the
# dependencies themselves shared: a fully static link also needs their own
# static libraries, e.g. libmicrohttpd's gnutls stack, which Debian's -dev
# packages do not all bring)
libs="-L$LIB -l:libgraft.a $(pkg-config --variable=libs_private graft) $(pkg-config --libs $(pkg-config --print-requires-private graft))"
if "$CC" "${CFLAGS[@]}" "$HERE/pkgconfig_edit.c" -o "$tmp/edit_static" $(pkg-config --cflags graft) $libs \
    2>"$tmp/cc.log"; then ok; else bad "static link ($libs): $(head -c 600 "$tmp/cc.log")"; fi
if [ -x "$tmp/edit_static" ]; then
  ldd "$tmp/edit_static" | grep -q libgraft && bad "the static program loads libgraft.so" || ok
  OMP_WAIT_POLICY=passive "$tmp/edit_static" "$DATA/stories260K.bin" "$tmp/run2" "$tmp/saved2" >"$tmp/out" 2>&1 \
    && grep -q "all checks passed" "$tmp/out" && ok || bad "pkgconfig_edit (static): $(tail -12 "$tmp/out")"
fi

cli_end install
