#!/usr/bin/env python3
"""PyTorch's data-parallel training (DistributedDataParallel, gloo backend)
of the MNIST CNN of examples/mnist_cnn.nn: one process, then N processes
with the same per-process batch, on the first --limit MNIST training
images. Prints each run's epoch time; benchmarks/distributed.sh sets the
peer up at its best and puts it beside nnc.

usage: ddp_peer.py --data DIR [--ranks 2] [--batch 64] [--limit N]
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_peer import CNN, load_idx  # the same network as the MNIST comparison


def load(data, limit):
    x, y = load_idx("train", data)
    return x[:limit].reshape(-1, 1, 28, 28), y[:limit]


def epoch(rank, ranks, args, out):
    torch.set_num_threads(1)
    if ranks > 1:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(args.port)
        dist.init_process_group("gloo", rank=rank, world_size=ranks)
    torch.manual_seed(1)
    x, y = load(args.data, args.limit)
    model = CNN()
    net = nn.parallel.DistributedDataParallel(model) if ranks > 1 else model
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    step = args.batch * ranks
    best = float("inf")
    for _ in range(2):  # the first epoch warms up the allocator and threads
        if ranks > 1:
            dist.barrier()
        start = time.perf_counter()
        for k in range(0, len(x) - step + 1, step):
            rows = order[k + rank * args.batch:k + (rank + 1) * args.batch]
            opt.zero_grad()
            F.cross_entropy(net(x[rows]), y[rows]).backward()
            opt.step()
        if ranks > 1:
            dist.barrier()
        best = min(best, time.perf_counter() - start)
    if rank == 0:
        out.put(best)
    if ranks > 1:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--port", type=int, default=29517)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    for ranks in (1, args.ranks):
        q = ctx.Queue()
        procs = [ctx.Process(target=epoch, args=(r, ranks, args, q)) for r in range(ranks)]
        for pr in procs:
            pr.start()
        seconds = q.get()
        for pr in procs:
            pr.join()
        print("pytorch %d rank(s): %.3f s per epoch of %d images" % (ranks, seconds, args.limit), flush=True)


if __name__ == "__main__":
    sys.exit(main())
