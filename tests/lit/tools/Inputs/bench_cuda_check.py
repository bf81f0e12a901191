"""Checks `nnc bench --target=cuda` output captured by rc.py. Without a CUDA
device: one error line naming --target=cuda and exit code 1. With one: a
header naming the device and the number of launches, then a row per launch
(each id once, its kernel kK_L, its share), shares adding up to 100%."""
import re
import sys

lines = open(sys.argv[1]).read().splitlines()
code = int(lines[-1].split(":")[1])
body = lines[:-1]
if code != 0:
    assert code == 1, lines
    assert len(body) == 1 and body[0].startswith("nnc: error: --target=cuda: "), body
    sys.exit(0)
head = re.match(r"mnist_mlp: training step at batch 64 on (.+): ([0-9.]+) ms \((\d+) launches; compiled in", body[0])
assert head, body[0]
launches = int(head.group(3))
rows = [l for l in body[2:] if l.strip()]
assert len(rows) == launches, (launches, rows)
ids, share = set(), 0.0
for r in rows:
    m = re.match(r"\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)%\s+-\s+-\s+(k\d+_\d+): (\S+)\s+(.*)$", r)
    assert m, r
    ids.add(int(m.group(1)))
    share += float(m.group(3))
    assert "mnist_mlp.nn:" in m.group(6), r
assert ids == set(range(launches)), ids
assert abs(share - 100.0) < 1.0, share
