#!/usr/bin/env bash
# The README's second command (and CI's): install what is missing, build, and
# run the whole test suite (GoogleTest, lit, the bounded fuzz runs, the
# op-by-op comparison with PyTorch), then the unit and lit tests again under
# the sanitizers (scripts/sanitize.sh). MNIST is fetched first: one test trains
# on it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh --peer
scripts/fetch-mnist.sh   # the MNIST training test reads real data
echo "==> running the test suite"
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j "$(nproc)")
# The unit and lit tests again under AddressSanitizer and UBSan, and the
# fuzz corpora the suite just grew, replayed: zero findings allowed.
scripts/sanitize.sh
echo "==> tests finished in $(( $(date +%s) - start )) s (set-up and build included)"
