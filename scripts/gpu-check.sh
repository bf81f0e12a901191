#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build (or, with --bundle, use the binaries
# scripts/gpu-bundle.sh packed and unpacked), probe the device, train XOR,
# the MNIST MLP and CNN on it (and on the CPU, same seed: time and
# accuracy), train XOR with a CUDA executable made by `nnc build
# --target=cuda`, train the CNN data-parallel over NCCL (one rank, and one
# per GPU where there are several; needs mpirun), time each kernel of the CNN's step there (`nnc bench
# --target=cuda`), run every lit test (the device ones included) and the
# PyTorch comparison of every op on the device, compile every example's
# kernels for the device's architecture (NVRTC, then ptxas), and write a
# report.
#   scripts/gpu-check.sh [--bundle] [REPORT]        (default: gpu-report.md)
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=0
if [ "${1:-}" = "--bundle" ]; then bundle=1; shift; fi
report="${1:-gpu-report.md}"
build="${BUILD_DIR:-build}"
if [ $bundle = 1 ]; then
  export LD_LIBRARY_PATH=/opt/nnc-bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  lit="python3 /opt/nnc-bundle/lit/lit.py"
else
  scripts/setup.sh
  lit="/usr/lib/llvm-19/build/utils/lit/lit.py"
fi
nnc="$build/tools/nnc/nnc"
cuda="${CUDA_HOME:-/usr/local/cuda}"

{
  echo "# nnc GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
  echo '```'
  echo
  echo "## Training on the device"
  echo '```'
  "$nnc" train examples/xor_mlp.nn --target=cuda --epochs 300 2>&1 | tail -2 || true
  scripts/fetch-mnist.sh >/dev/null 2>&1 || true
  for m in mnist_mlp mnist_cnn; do
    "$nnc" train examples/$m.nn --target=cuda --epochs 1 2>&1 | tail -2 || true
    "$nnc" train examples/$m.nn --target=cpu --epochs 1 2>&1 | tail -1 || true
  done
  "$nnc" build examples/xor_mlp.nn --target=cuda -o "$build/xor-cuda" 2>&1 || true
  "$build/xor-cuda" --epochs 300 2>&1 | tail -1 || true
  echo '```'
  echo
  echo "## Data-parallel training over NCCL (one rank per GPU)"
  echo
  echo "The MNIST CNN at a global batch of 64: one process, then ranks whose gradients NCCL combines (the"
  echo "losses agree to f32 reduction order), then a program built with --data-parallel."
  echo '```'
  "$nnc" train examples/mnist_cnn.nn --target=cuda --epochs 1 --batch 64 2>&1 | tail -1 || true
  if command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    for np in 1 $([ "${gpus:-0}" -gt 1 ] && echo "$gpus"); do
      echo "-- $np rank(s)"
      mpirun -np "$np" "$nnc" train examples/mnist_cnn.nn --target=cuda --distributed=nccl --epochs 1 \
        --global-batch 64 --verify-replicas --verbose 2>&1 | tail -3 || true
    done
    "$nnc" build examples/mnist_cnn.nn --data-parallel --target=cuda -o "$build/cnn-dp-cuda" 2>&1 | tail -1 || true
    mpirun -np 1 "$build/cnn-dp-cuda" --epochs 1 --global-batch 64 2>&1 | tail -1 || true
  else
    echo "mpirun: not available (scripts/setup.sh installs openmpi-bin)"
  fi
  echo '```'
  echo
  echo "## Where the CNN's training step spends its time on the device"
  echo '```'
  "$nnc" bench examples/mnist_cnn.nn --target=cuda --steps 20 2>&1 | head -40 || true
  echo '```'
  echo
  echo "## Tests on the device"
  echo '```'
  if [ $bundle = 0 ]; then (cd "$build" && ctest -R 'Cuda|KernelCache|Nvrtc' -j "$(nproc)" 2>&1 | tail -5); fi
  (cd "$build" && $lit -j "$(nproc)" tests/lit 2>&1 | grep -E '^(FAIL|XPASS)|Passed|Failed|Unsupported') || true
  python3 tests/peer/check_ops.py "$nnc" --target cuda --jobs "$(nproc)" 2>&1 | grep -E '^FAIL|cases match' || true
  echo '```'
  echo
  echo "## Every example's kernels for this device"
  echo
  echo "| model | launches | PTX | SASS (ptxas) |"
  echo "|---|---|---|---|"
  for m in examples/*.nn; do
    name=$(basename "$m" .nn)
    ptx="$build/gpu-check-$name.ptx"
    if "$nnc" compile "$m" --emit=ptx -o "$ptx" 2>/dev/null; then
      n=$(grep -c '\.entry' "$ptx" || true)
      arch=$(grep -m1 '^\.target' "$ptx" | awk '{print $2}')
      if "$cuda/bin/ptxas" -arch="$arch" "$ptx" -o "$ptx.cubin" 2>/dev/null; then sass=ok; else sass=FAILED; fi
      echo "| $name | $n | $arch | $sass |"
    else
      echo "| $name | - | FAILED | - |"
    fi
  done
} | tee "$report"
echo "==> report written to $report"
