#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch MNIST and
# run the main job on the MNIST MLP example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-mnist.sh
NNC=build/tools/nnc/nnc
MODEL=examples/mnist_mlp.nn
echo "==> checking every example"
for f in examples/*.nn; do "$NNC" check "$f"; done
if "$NNC" --help | grep -q "^  train .*not available yet"; then
  echo "==> training is not available in this version; the compiled graph of $MODEL:"
  "$NNC" compile "$MODEL" --emit=nn
else
  echo "==> training $MODEL on MNIST"
  "$NNC" train "$MODEL"
fi
