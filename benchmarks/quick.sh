#!/usr/bin/env bash
# The quick benchmark mode (seconds, for CI): machine limits and nnc's
# ratios from one short run. It prints, never judges: timings on shared
# machines drift, so no number here fails a build.
#   benchmarks/quick.sh [BUILD_DIR]
# 1. STREAM triad and fused chains (nnc-bandwidth, 4M floats): each chain's
#    share of the triad measured in the same run.
# 2. MNIST MLP and CNN training steps, fused and unfused (nnc bench): the
#    fusion speed-up.
# 3. With PyTorch installed (../shared/PEERS.md): both models for a few
#    hundred batches in nnc and in PyTorch, and the peer/nnc ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-${BUILD_DIR:-build}}"
nnc="$build/tools/nnc/nnc"

echo "== limits and fused chains (1 thread)"
"$build/benchmarks/nnc-bandwidth" --n 4194304 --reps 3 --threads 1

echo "== training steps, fused against unfused (1 thread, batch 64)"
for m in mnist_mlp mnist_cnn; do
  f=$("$nnc" bench "examples/$m.nn" --threads 1 --steps 10 | sed -n '1s/.*: \([0-9.]*\) ms.*/\1/p')
  u=$("$nnc" bench "examples/$m.nn" --threads 1 --steps 10 --no-fusion | sed -n '1s/.*: \([0-9.]*\) ms.*/\1/p')
  awk -v m="$m" -v f="$f" -v u="$u" 'BEGIN { printf "%-10s step %.3f ms fused, %.3f ms unfused: fused/unfused speed-up %.2fx\n", m, f, u, u / f }'
done

echo "== peer"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 benchmarks/mnist_peer.py --models mlp,cnn --epochs 1 --limit 6400 --threads 1 \
    --nnc "$nnc"
else
  echo "PyTorch is not installed: peer ratios skipped (benchmarks/README.md, ../shared/PEERS.md)"
fi
