#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), then configures and builds
# nnc in ./build. Safe to run again: it installs nothing that is present and
# rebuilds only what changed.
#
#   scripts/setup.sh            # Release build in ./build
#   scripts/setup.sh --peer     # also PyTorch, the peer of tests/peer and benchmarks/
#   BUILD_DIR=out scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
peer=0
[ "${1:-}" = "--peer" ] && peer=1

BUILD_DIR=${BUILD_DIR:-build}
PACKAGES=(
  cmake ninja-build ccache g++ python3
  llvm-19-dev libmlir-19-dev mlir-19-tools llvm-19-tools clang-19 libclang-rt-19-dev
  libfmt-dev libzstd-dev libgtest-dev libgmock-dev libomp-19-dev libbenchmark-dev
  zlib1g-dev libzip-dev libpng-dev libjpeg-dev gnuplot-nox graphviz libonnx-dev libprotobuf-dev
  openmpi-bin
)

# Installs those of the packages given that are missing (none: nothing).
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "==> installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_missing "${PACKAGES[@]}"
# PyTorch (with OpenBLAS, the peer as benchmarks/README.md sets it up) is optional:
# without it the comparison test is skipped, so a failed install only warns.
if [ $peer = 1 ]; then
  install_missing python3-torch python3-torchvision python3-numpy python3-onnx libopenblas0-pthread ||
    echo "==> warning: PyTorch could not be installed; the comparison with it will be skipped" >&2
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  echo "==> configuring $BUILD_DIR"
  cmake -G Ninja -S . -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 \
    -DMLIR_DIR=/usr/lib/llvm-19/lib/cmake/mlir \
    -DLLVM_DIR=/usr/lib/llvm-19/lib/cmake/llvm
fi
echo "==> building (this takes a few minutes the first time)"
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "==> built: $BUILD_DIR/tools/nnc/nnc"
