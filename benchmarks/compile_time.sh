#!/usr/bin/env bash
# Compile time against model size: an MLP of L dense+ReLU layers of width
# 128 (L = 10, 50, 200 by default), compiled cold (no object cache) from
# source to host assembly (`nnc compile --emit=asm`). Prints the CPU model,
# then per L the seconds, the ops of the training step, ops per second and
# the peak memory (max RSS); then the same for the CIFAR ResNet-18
# (benchmarks/resnet18_cifar.nn).
#
#   benchmarks/compile_time.sh [L ...]
set -euo pipefail
cd "$(dirname "$0")/.."
nnc=${NNC:-build/tools/nnc/nnc}
layers=("$@")
[ ${#layers[@]} -gt 0 ] || layers=(10 50 200)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
printf '%6s %10s %8s %10s %10s\n' L seconds ops ops/s "max RSS"
for L in "${layers[@]}"; do
  {
    echo "model mlp$L {"
    echo "  input x: f32[B, 128]"
    echo "  input y: i32[B]"
    echo "  h0 = x"
    for i in $(seq 1 "$L"); do echo "  h$i = relu(dense(h$((i - 1)), 128))"; done
    echo "  logits = dense(h$L, 10)"
    echo "  loss = softmax_cross_entropy(logits, y)"
    echo "  output logits"
    echo "  minimize loss"
    echo "}"
    echo "train {"
    echo "  optimizer = sgd(lr=0.01)"
    echo "}"
  } > "$work/mlp$L.nn"
  ops=$("$nnc" compile "$work/mlp$L.nn" --emit=train | grep -c ' = nn\.')
  if [ -x /usr/bin/time ]; then # (Debian's `time` package: the peak memory too)
    /usr/bin/time -f '%e %M' -o "$work/time" env NNC_CACHE_DIR=off \
      "$nnc" compile "$work/mlp$L.nn" --emit=asm -o "$work/mlp$L.s"
    read -r seconds kb < "$work/time"
  else
    begin=$(date +%s.%N)
    NNC_CACHE_DIR=off "$nnc" compile "$work/mlp$L.nn" --emit=asm -o "$work/mlp$L.s"
    seconds=$(awk -v b="$begin" -v e="$(date +%s.%N)" 'BEGIN { print e - b }')
    kb=0
  fi
  awk -v L="$L" -v s="$seconds" -v ops="$ops" -v kb="$kb" \
    'BEGIN { printf "%6d %10.2f %8d %10.0f %8.2f GB\n", L, s, ops, ops / s, kb / 1048576 }'
done
# A real network: the CIFAR ResNet-18 written out (benchmarks/resnet18_cifar.nn),
# its training step compiled the same way.
ops=$("$nnc" compile benchmarks/resnet18_cifar.nn --emit=train | grep -c ' = nn\.')
begin=$(date +%s.%N)
NNC_CACHE_DIR=off "$nnc" compile benchmarks/resnet18_cifar.nn --emit=asm -o "$work/resnet18.s"
seconds=$(awk -v b="$begin" -v e="$(date +%s.%N)" 'BEGIN { print e - b }')
awk -v s="$seconds" -v ops="$ops" 'BEGIN { printf "%6s %10.2f %8d %10.0f\n", "rn18", s, ops, ops / s }'
