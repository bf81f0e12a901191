#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch MNIST and
# train the MNIST MLP example (5 epochs), then evaluate the saved checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-mnist.sh
NNC=build/tools/nnc/nnc
MODEL=examples/mnist_mlp.nn
echo "==> checking every example"
for f in examples/*.nn; do "$NNC" check "$f"; done
echo "==> training $MODEL on MNIST"
"$NNC" train "$MODEL" --checkpoint build/mnist_mlp.safetensors --metrics build/mnist_mlp.csv
echo "==> evaluating the checkpoint build/mnist_mlp.safetensors"
"$NNC" eval "$MODEL" --checkpoint build/mnist_mlp.safetensors
