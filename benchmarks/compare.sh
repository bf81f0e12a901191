#!/usr/bin/env bash
# nnc's kernel suite and the same workloads in PyTorch, side by side in one
# run, with the machine's limits measured in the same run: prints, per
# workload, nnc's and PyTorch's best time, the speed-up (PyTorch / nnc),
# and nnc's GFLOP/s or GB/s as a share of the peak FMA rate or of the
# STREAM triad.
#   benchmarks/compare.sh [--threads N] [--filter REGEX] [--build DIR]
# The default filter leaves out the epochs (a minute each); --filter . runs
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=1 filter='^(gemm|mlp_|conv|chain|reduction|softmax|step|infer|compile)' build="${BUILD_DIR:-build}"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --filter) filter="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: benchmarks/compare.sh [--threads N] [--filter REGEX] [--build DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -x "$build/benchmarks/nnc-kernels" ]; then
  echo "compare.sh: $build/benchmarks/nnc-kernels is missing (scripts/setup.sh installs libbenchmark-dev and builds it)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; L1d/L2/L3 per sysfs: $(cat /sys/devices/system/cpu/cpu0/cache/index{0,2,3}/size 2>/dev/null | tr '\n' ' ')"
echo "== machine limits ($threads thread(s))"
"$build/benchmarks/nnc-bandwidth" --threads "$threads" --reps 5 | tee "$tmp/limits.txt"
echo "== nnc"
# Five repetitions of at least 0.06 s each; the fastest is compared with
# the peer's best time.
OMP_NUM_THREADS=$threads "$build/benchmarks/nnc-kernels" --benchmark_filter="$filter" \
  --benchmark_min_time=0.06 --benchmark_repetitions=5 --benchmark_format=json \
  --benchmark_out="$tmp/nnc.json" --benchmark_out_format=json >/dev/null
echo "== PyTorch"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  # The peer at its best (../shared/PEERS.md): OpenBLAS pthreads, tuned malloc.
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread \
  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456 \
  OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE \
    /usr/bin/python3 benchmarks/peer_kernels.py --threads "$threads" --filter "$filter" > "$tmp/peer.json"
else
  echo "PyTorch is not installed (/usr/bin/python3 -c 'import torch' fails): nnc only" >&2
  echo '{}' > "$tmp/peer.json"
fi
python3 - "$tmp" <<'PY'
import json, re, sys
tmp = sys.argv[1]
limits = open(tmp + "/limits.txt").read()
peak = float(re.search(r"peak FMA.*?([0-9.]+) GFLOP/s", limits).group(1))
triad = float(re.search(r"STREAM triad.*?([0-9.]+) GB/s", limits).group(1))
runs = json.load(open(tmp + "/nnc.json"))["benchmarks"]
peer = json.load(open(tmp + "/peer.json"))
# Per workload the fastest repetition ("min") and, for the work per call
# (rate x time), the mean; a single run (no repetitions) stands for both.
stats = {}
for b in runs:
    name = b["name"].split("/iterations")[0].split("/real_time")[0]
    kind = b.get("aggregate_name") if b.get("run_type") == "aggregate" else "run"
    stats.setdefault(name, {})[kind] = b
print("%-34s %11s %11s %8s %9s %7s" % ("workload", "nnc ms", "PyTorch ms", "speed-up", "GFLOP/s", "limit"))
for name, s in stats.items():
    best, mean = s.get("min", s.get("run")), s.get("mean", s.get("run"))
    if best is None or mean is None:
        continue
    unit = 1 if best.get("time_unit") == "ms" else 1e-6
    ms, mean_ms = best["real_time"] * unit, mean["real_time"] * unit
    p = peer.get(name)
    gf = mean.get("GFLOP/s", 0) * mean_ms / ms
    gb = mean.get("GB/s", 0) * mean_ms / ms
    if name.startswith(("chain/", "reduction/")):
        rate, limit = "%6.1f GB" % gb, "%5.0f%%" % (100 * gb / triad)
    elif gf > 0:
        rate, limit = "%9.1f" % gf, "%5.0f%%" % (100 * gf / peak)
    else:
        rate, limit = "", ""
    print("%-34s %11.3f %11s %8s %9s %7s" % (name, ms, "%.3f" % p if p else "-",
                                           "%.2fx" % (p / ms) if p else "-", rate, limit))
print("limit: share of the peak FMA rate (%.0f GFLOP/s) or of the STREAM triad (%.1f GB/s) measured above"
      % (peak, triad))
PY
