"""Checks an `nnc bench --format csv` table: shares sum to 1, times are
positive, rates agree with the work and the time."""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
assert rows, "no kernels"
total = sum(float(r["share"]) for r in rows)
assert abs(total - 1) < 1e-3, total
for r in rows:
    s = float(r["seconds"])
    assert s >= 0, r
    if s > 0:
        rate = float(r["flops"]) / s / 1e9
        assert abs(rate - float(r["gflops_per_second"])) <= 1e-3 + 1e-2 * rate, r
print("ok: %d kernels" % len(rows))
