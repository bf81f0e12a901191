#!/usr/bin/env python3
"""Side by side: nnc and PyTorch training the MNIST examples, in one run.

For each model (the MLP and the CNN of examples/), trains the same network
with the same initialization scheme, optimizer, batch size and epochs in
PyTorch (eager, CPU, same thread count) and with `nnc train`, and prints
per-epoch time, test accuracy and the nnc/peer ratios. Run it through
benchmarks/run_mnist.sh, which sets the peer up at its best (see
benchmarks/README.md).

usage: mnist_peer.py [--models mlp,cnn] [--epochs N] [--seeds 1,2,3]
                     [--threads N] [--nnc PATH] [--limit N]
"""
import argparse
import csv
import os
import struct
import subprocess
import sys
import tempfile
import time

# OpenBLAS (pthreads) keeps a thread pool of its own, sized to every core
# unless told: the peer gets the thread count nnc gets (--threads), set
# before OpenBLAS loads.
_threads = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _threads = sys.argv[_i + 1]
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_idx(split, data):
    with open(os.path.join(data, split + "-images-idx3-ubyte"), "rb") as f:
        _, n, rows, cols = struct.unpack(">IIII", f.read(16))
        x = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows * cols)
    with open(os.path.join(data, split + "-labels-idx1-ubyte"), "rb") as f:
        f.read(8)
        y = np.frombuffer(f.read(), dtype=np.uint8)
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.out = nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.out(F.relu(self.h2(F.relu(self.h1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 5, padding=2)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 14 * 14, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x.view(-1, 1, 28, 28)))), 2)
        return self.fc(x.flatten(1))


MODELS = {
    "mlp": (MLP, lambda p: torch.optim.SGD(p, lr=0.1), "examples/mnist_mlp.nn"),
    "cnn": (CNN, lambda p: torch.optim.Adam(p, lr=1e-3), "examples/mnist_cnn.nn"),
}


def peer(name, epochs, seed, batch, train, test):
    make, opt_fn, _ = MODELS[name]
    torch.manual_seed(seed)
    model = make()
    opt = opt_fn(model.parameters())
    xs, ys = train
    rows = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xs))
        start = time.perf_counter()
        for i in range(0, len(xs), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            acc = (model(test[0]).argmax(1) == test[1]).float().mean().item()
        rows.append((seconds, acc))
    return rows


def ours(name, epochs, seed, batch, nnc, limit, threads):
    model = os.path.join(ROOT, MODELS[name][2])
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.csv")
        cmd = [nnc, "train", model, "--target", "cpu", "--epochs", str(epochs), "--seed", str(seed),
               "--batch", str(batch), "--metrics", metrics, "--threads", str(threads)]
        if limit:
            cmd += ["--limit", str(limit)]
        # The peer's tuning (passive OpenMP waiting, for its OpenBLAS threads)
        # would put nnc's threads to sleep between its many short parallel
        # loops; nnc runs with the OpenMP defaults.
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(metrics) as f:
            return [(float(r["seconds"]), float(r["eval_accuracy"])) for r in csv.DictReader(f)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N samples only")
    ap.add_argument("--nnc", default=os.path.join(ROOT, "build/tools/nnc/nnc"))
    ap.add_argument("--data", default=os.path.join(ROOT, "examples/data/mnist"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_idx("train", args.data), load_idx("t10k", args.data)
    if args.limit:
        train = (train[0][:args.limit], train[1][:args.limit])
    print("torch %s, %d thread(s), BLAS core %s" % (torch.__version__, args.threads,
          os.environ.get("NNC_PEER_BLAS", "?")))
    print("%-4s %-5s %-5s %12s %12s %8s %10s %10s" % (
        "model", "seed", "epoch", "nnc s/epoch", "peer s/epoch", "speedup", "nnc acc", "peer acc"))
    for name in args.models.split(","):
        accs = ([], [])
        for seed in [int(s) for s in args.seeds.split(",")]:
            p = peer(name, args.epochs, seed, args.batch, train, test)
            o = ours(name, args.epochs, seed, args.batch, args.nnc, args.limit, args.threads)
            for e, ((os_, oa), (ps, pa)) in enumerate(zip(o, p)):
                print("%-5s %-5d %-5d %12.2f %12.2f %8.2fx %9.2f%% %9.2f%%" % (
                    name, seed, e + 1, os_, ps, ps / os_, 100 * oa, 100 * pa))
            accs[0].append(o[-1][1])
            accs[1].append(p[-1][1])
        print("%s: final test accuracy, mean over seeds: nnc %.2f%%, peer %.2f%% (difference %+.2f points)"
              % (name, 100 * np.mean(accs[0]), 100 * np.mean(accs[1]),
                 100 * (np.mean(accs[0]) - np.mean(accs[1]))))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
