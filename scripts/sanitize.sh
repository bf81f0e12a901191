#!/usr/bin/env bash
# Builds nnc with AddressSanitizer and UndefinedBehaviorSanitizer in
# ${SAN_BUILD_DIR:-build-asan} and runs the unit tests and the lit tests
# there, then replays the fuzz corpora through the fuzz targets of the main
# build (themselves built with ASan): any finding fails. Run after
# scripts/setup.sh (the toolchain) and the main test suite (the corpora).
set -euo pipefail
cd "$(dirname "$0")/.."
SAN_BUILD_DIR=${SAN_BUILD_DIR:-build-asan}
MAIN_BUILD_DIR=${BUILD_DIR:-build}
start=$(date +%s)
if [ ! -f "$SAN_BUILD_DIR/build.ninja" ]; then
  echo "==> configuring $SAN_BUILD_DIR (sanitizers)"
  cmake -G Ninja -S . -B "$SAN_BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 \
    -DNNC_SANITIZE=ON -DNNC_ENABLE_FUZZER=OFF \
    -DMLIR_DIR=/usr/lib/llvm-19/lib/cmake/mlir -DLLVM_DIR=/usr/lib/llvm-19/lib/cmake/llvm > /dev/null
fi
echo "==> building with sanitizers"
cmake --build "$SAN_BUILD_DIR" -j "$(nproc)"
# Every report is fatal; leaks count.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "==> unit and lit tests under the sanitizers"
# All but the CUDA kernels' host emulation (CudaHost*, CudaRuntime*: the
# generated kernels, compiled apart without the sanitizers, run thread by
# thread, about twenty times slower in this build) and the PyTorch and
# benchmark runs, which drive the same code as the lit tests.
# Left out here (the optimized run has them): tests whose time goes to
# external compilers (ptxas, the C++ of built programs), to long searches
# (gradcheck, tune), that repeat another test with fusion off, or that run
# several processes under mpirun (the distributed check), and the two
# longest repeats of what smaller cases cover (VGG-small's training step
# beside the other examples', MNIST training on real data beside the
# compiled steps' checks).
export LIT_FILTER_OUT='tools/(build|build-cuda|build-lib-cpu|build-lib-refuse|gradcheck|tune)\.test|codegen/cuda/ptx\.test'
(cd "$SAN_BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" \
  -E "^(peer-|bench-|distributed)|CudaHost|CudaRuntime|UnfusedTrainingStep|vgg_small|OnRealData")
echo "==> replaying the fuzz corpora"
for target in frontend checkpoint; do
  fuzzer="$MAIN_BUILD_DIR/tests/fuzz/nnc-fuzz-$target"
  [ -x "$fuzzer" ] || { echo "no $fuzzer: build the main tree first" >&2; exit 1; }
  dirs=()
  for d in "$MAIN_BUILD_DIR/tests/fuzz/corpus" "$MAIN_BUILD_DIR/tests/fuzz/checkpoint-corpus"; do
    [ -d "$d" ] && [ "$target" = frontend -a "${d##*/}" = corpus -o "$target" = checkpoint -a "${d##*/}" = checkpoint-corpus ] && dirs+=("$d")
  done
  if [ "$target" = frontend ]; then dirs+=(examples tests/lit/frontend/errors); else dirs+=(tests/fuzz/checkpoint-seeds); fi
  "$fuzzer" -runs=0 "${dirs[@]}" 2>&1 | tail -1
done
echo "==> sanitizer suite passed in $(( $(date +%s) - start )) s"
