#!/usr/bin/env bash
# Runs benchmarks/mnist_peer.py with the peer configured at its best:
# Debian's PyTorch with OpenBLAS (not the reference BLAS), the tuned malloc
# and OpenMP settings, and the same thread count as nnc. Installs the peer
# when it is missing. Arguments go to mnist_peer.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch python3-numpy libopenblas0-pthread
fi
scripts/fetch-mnist.sh
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456
export OMP_WAIT_POLICY=passive
export NNC_PEER_BLAS=openblas-pthread
exec env -u OPENBLAS_CORETYPE /usr/bin/python3 benchmarks/mnist_peer.py "$@"
