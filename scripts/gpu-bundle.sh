#!/usr/bin/env bash
# For a GPU machine without LLVM/MLIR 19 (no packages to install there):
#
#   scripts/gpu-bundle.sh pack [DIR]     here, after a build (default DIR: .gpu)
#   scripts/gpu-bundle.sh unpack [DIR]   there, as root, in the repository root
#
# `pack` puts into DIR what the checks need from this machine: nnc, nnc-opt,
# the runtime library (nnc build links it), FileCheck, not, count, lit, the
# lit site configuration, MNIST, and the shared libraries nnc loads (about
# 55 MB in all, compressed). libz3 and libxml2 go as empty stand-ins with
# their sonames and symbol versions: LLVM only binds their functions lazily
# and nnc never calls them, and the real ones would bring 55 MB of Z3 and
# ICU. `unpack` puts each file where the binaries expect it (the paths built
# into them: the source tree, the LLVM tool and OpenMP directories, the C++
# compiler `nnc build` runs); then `scripts/gpu-check.sh --bundle` runs the
# checks with LD_LIBRARY_PATH=/opt/nnc-bundle/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
dir="${2:-.gpu}"
build="${BUILD_DIR:-build}"
llvm=/usr/lib/llvm-19

case "$mode" in
pack)
  nnc="$build/tools/nnc/nnc"
  [ -x "$nnc" ] || { echo "gpu-bundle: no $nnc: build first (scripts/setup.sh)" >&2; exit 1; }
  [ -f examples/data/mnist/train-images-idx3-ubyte ] || scripts/fetch-mnist.sh
  rm -rf "$dir" && mkdir -p "$dir/bin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lib"
  for lib in $(ldd "$nnc" | awk '/=>/ {print $3}'); do
    case "$(basename "$lib")" in
    libc.so.* | libm.so.* | libgcc_s.so.* | libstdc++.so.* | libz3.so.* | libxml2.so.* | libicu*) ;;
    *) cp -L "$lib" "$tmp/lib/" ;;
    esac
  done
  cp -L "$llvm/lib/libomp.so.5" "$tmp/lib/"
  echo 'void *xmlFree = 0;' >"$tmp/xml.c"
  printf 'LIBXML2_2.4.30 { global: xmlFree; local: *; };\nLIBXML2_2.6.0 { } LIBXML2_2.4.30;\n' >"$tmp/xml.map"
  cc -shared -fPIC -o "$tmp/lib/libxml2.so.2" -Wl,-soname,libxml2.so.2 -Wl,--version-script="$tmp/xml.map" "$tmp/xml.c"
  echo >"$tmp/z3.c"
  cc -shared -fPIC -o "$tmp/lib/libz3.so.4" -Wl,-soname,libz3.so.4 "$tmp/z3.c"
  tar cf - -C "$tmp" lib | xz -T0 -6 >"$dir/libs.tar.xz"
  tar cf - -C examples/data mnist | xz -T0 -6 >"$dir/mnist.tar.xz"
  tar czf "$dir/lit.tgz" -C "$llvm/build/utils" lit
  cp "$nnc" "$build/tools/nnc-opt/nnc-opt" "$build/runtime/libNNCRuntime.a" "$build/tests/lit/lit.site.cfg.py" \
    "$llvm/bin/FileCheck" "$llvm/bin/not" "$llvm/bin/count" "$dir/bin/"
  # The paths built into the binaries, for unpack to recreate.
  grep -m1 '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2 >"$dir/cxx"
  sed -n 's/^config.nnc_src_root = "\(.*\)"$/\1/p' "$build/tests/lit/lit.site.cfg.py" >"$dir/source-dir"
  sed -n 's/^config.python_executable = "\(.*\)"$/\1/p' "$build/tests/lit/lit.site.cfg.py" >"$dir/python"
  echo "gpu-bundle: $dir ($(du -sh "$dir" | cut -f1)); there: scripts/gpu-bundle.sh unpack $dir && scripts/gpu-check.sh --bundle"
  ;;
unpack)
  [ -f "$dir/libs.tar.xz" ] || { echo "gpu-bundle: no bundle in $dir" >&2; exit 1; }
  root=$PWD
  mkdir -p /opt/nnc-bundle
  python3 -c 'import sys, tarfile
for archive, into in zip(sys.argv[1::2], sys.argv[2::2]):
    tarfile.open(archive).extractall(into)' \
    "$dir/libs.tar.xz" /opt/nnc-bundle "$dir/mnist.tar.xz" examples/data "$dir/lit.tgz" /opt/nnc-bundle
  mkdir -p "$build/tools/nnc" "$build/tools/nnc-opt" "$build/runtime" "$build/tests/lit" "$llvm/lib" "$llvm/bin"
  cp "$dir/bin/nnc" "$build/tools/nnc/"
  cp "$dir/bin/nnc-opt" "$build/tools/nnc-opt/"
  cp "$dir/bin/libNNCRuntime.a" "$build/runtime/"
  cp "$dir/bin/lit.site.cfg.py" "$build/tests/lit/"
  cp "$dir/bin/FileCheck" "$dir/bin/not" "$dir/bin/count" "$llvm/bin/"
  cp /opt/nnc-bundle/lib/libomp.so.5 "$llvm/lib/" && ln -sf libomp.so.5 "$llvm/lib/libomp.so"
  src=$(cat "$dir/source-dir")
  if [ "$src" != "$root" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$root" "$src"; fi
  py=$(cat "$dir/python")
  [ -e "$py" ] || { mkdir -p "$(dirname "$py")" && ln -s "$(command -v python3)" "$py"; }
  cxx=$(cat "$dir/cxx")
  host=$(command -v clang++ || command -v g++ || command -v c++ || true)
  [ -e "$cxx" ] || [ -z "$host" ] || ln -s "$host" "$cxx"
  LD_LIBRARY_PATH=/opt/nnc-bundle/lib "$build/tools/nnc/nnc" --version
  ;;
*)
  echo "usage: scripts/gpu-bundle.sh pack|unpack [DIR]" >&2
  exit 2
  ;;
esac
