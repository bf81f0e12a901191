#!/usr/bin/env bash
# Data-parallel training on this machine: 2 ranks of 1 thread against 1
# rank of 1 thread, at the same per-rank batch (64), for the MNIST CNN's
# epoch and the CIFAR ResNet-18's steps (synthetic images), with the share
# of the time spent communicating; then PyTorch's DDP (gloo) on the same
# CNN, set up at its best (benchmarks/README.md), in the same run.
#   benchmarks/distributed.sh [--limit N] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
limit=20000 build="${BUILD_DIR:-build}"
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) limit="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: benchmarks/distributed.sh [--limit N] [--build DIR]" >&2; exit 2 ;;
  esac
done
nnc="$build/tools/nnc/nnc"
command -v mpirun >/dev/null || { echo "distributed.sh: mpirun is missing (scripts/setup.sh installs openmpi-bin)" >&2; exit 1; }
[ -x "$nnc" ] || { echo "distributed.sh: $nnc is missing (build first)" >&2; exit 1; }
[ -f examples/data/mnist/train-images-idx3-ubyte ] || scripts/fetch-mnist.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; $(mpirun --version | head -1)"

# The fastest of the run's epochs (the first one warms up), in seconds.
best() { /usr/bin/python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '\"epoch\"' in l]
print(min(r['seconds'] for r in rows))" "$1"; }
# An epoch line's communication figures (--verbose), of the last epoch.
comm() { grep -o 'communication.*' "$1" | tail -1; }

run() { # NAME MODEL DATA EPOCHS
  local name=$1 model=$2 data=$3 epochs=$4
  "$nnc" train "$model" --data "$data" --batch 64 --threads 1 --epochs "$epochs" --limit "$limit" \
    --metrics "$tmp/$name-1.jsonl" --quiet >/dev/null
  mpirun -np 2 --bind-to none "$nnc" train "$model" --data "$data" --batch 64 --threads 1 --epochs "$epochs" \
    --limit "$limit" --metrics "$tmp/$name-2.jsonl" --verbose >"$tmp/$name-2.log"
  local one two
  one=$(best "$tmp/$name-1.jsonl"); two=$(best "$tmp/$name-2.jsonl")
  printf "%-22s 1 rank %8.3f s   2 ranks %8.3f s   speed-up %.2fx   %s\n" "$name" "$one" "$two" \
    "$(echo "$one / $two" | bc -l)" "$(comm "$tmp/$name-2.log")"
  echo "$one $two" >"$tmp/$name.times"
}

echo "== nnc (epochs of $limit images; batch 64 per rank)"
run mnist_cnn examples/mnist_cnn.nn examples/data/mnist 2
# CIFAR-sized random images: the step's cost does not depend on the pixels.
/usr/bin/python3 -c "
import numpy as np, sys
r = np.random.default_rng(0)
np.savez(sys.argv[1], x=r.random((512, 3, 32, 32), dtype=np.float32), y=r.integers(0, 10, 512).astype(np.int32))" \
  "$tmp/cifar.npz"
limit=512 run resnet18_cifar benchmarks/resnet18_cifar.nn "npz(\"$tmp/cifar.npz\")" 1

echo "== PyTorch DDP (gloo), the same CNN"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread \
  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456 \
  OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE \
    /usr/bin/python3 benchmarks/ddp_peer.py --data examples/data/mnist --limit "$limit" | tee "$tmp/peer.log"
  read -r one two <"$tmp/mnist_cnn.times"
  /usr/bin/python3 - "$tmp/peer.log" "$one" "$two" <<'PY'
import re, sys
t = [float(x) for x in re.findall(r"([0-9.]+) s per epoch", open(sys.argv[1]).read())]
one, two = float(sys.argv[2]), float(sys.argv[3])
print("PyTorch speed-up with 2 ranks %.2fx; nnc against PyTorch: 1 rank %.2fx, 2 ranks %.2fx (%.2f of the "
      "1-rank ratio)" % (t[0] / t[1], t[0] / one, t[1] / two, (t[1] / two) / (t[0] / one)))
PY
else
  echo "(PyTorch is not installed: scripts/setup.sh --peer)"
fi
