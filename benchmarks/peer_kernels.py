"""The workloads of benchmarks/kernels.cpp in PyTorch eager (the peer), on
the CPU, at the same shapes: prints one JSON object, workload name -> best
milliseconds per call. Run through benchmarks/compare.sh, which sets the
peer up at its best (../shared/PEERS.md) and prints the ratios.

    /usr/bin/python3 benchmarks/peer_kernels.py --threads 1 [--filter REGEX]
"""
import argparse
import json
import os
import re
import sys
import time

# OpenBLAS (pthreads) keeps a thread pool of its own, sized to every core
# unless told: the peer gets the thread count nnc gets (--threads), set
# before OpenBLAS loads.
_threads = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _threads = sys.argv[_i + 1]
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_peer import CNN, MLP  # noqa: E402  (the models of the epoch benchmark)


def best_ms(fn, min_time=0.3, min_reps=3, warm=2):
    """Best time of one call, after `warm` calls, over at least min_time s."""
    for _ in range(warm):
        fn()
    best, total, reps = float("inf"), 0.0, 0
    while reps < min_reps or total < min_time:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, total, reps = min(best, dt), total + dt, reps + 1
    return best * 1e3


def gemm(m, n, k):
    a, b = torch.rand(m, k), torch.rand(k, n)
    return lambda: torch.mm(a, b)


def conv(n, c, h, w, o, k, s=1, p=0):
    x, wt = torch.rand(n, c, h, w), torch.rand(o, c, k, k)
    return lambda: F.conv2d(x, wt, stride=s, padding=p)


def conv_fwd_bwd(n, c, h, w, o, k, s=1, p=0):
    # As nnc's --backward model: both operands trained, loss = sum(y), SGD.
    x = torch.rand(n, c, h, w, requires_grad=True)
    wt = torch.rand(o, c, k, k, requires_grad=True)
    opt = torch.optim.SGD([x, wt], lr=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        F.conv2d(x, wt, stride=s, padding=p).sum().backward()
        opt.step()
    return step


def chain(kind):
    n = 16777216
    x, y, z = torch.rand(n), torch.rand(n), torch.rand(n)
    if kind == "relu":
        return lambda: torch.relu(x * 0.5 + y)
    if kind == "sigmoid":
        return lambda: torch.sigmoid(x * y + z)
    return lambda: x - 0.1 * y


def reduction(axis):
    x = torch.rand(4096, 4096)
    return lambda: x.sum(dim=axis)


def softmax_ce(n, c):
    x, y = torch.rand(n, c), torch.zeros(n, dtype=torch.long)
    return lambda: F.cross_entropy(x, y)


class BasicBlock(torch.nn.Module):
    """torchvision's ResNet basic block (two 3x3 convolutions, batch norm,
    a 1x1 stride-2 shortcut where the stage downsamples)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(h)) + self.short(x))


class ResNet18Cifar(torch.nn.Module):
    """benchmarks/resnet18_cifar.nn: a 3x3 stem, four stages of two basic
    blocks, global average pooling, a linear classifier."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def train_step(name):
    torch.manual_seed(0)
    if name == "resnet18_cifar":
        model = ResNet18Cifar()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return step
    model = MLP() if name == "mnist_mlp" else CNN()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1) if name == "mnist_mlp"
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    shape = (64, 784) if name == "mnist_mlp" else (64, 1, 28, 28)
    x, y = torch.rand(*shape), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def infer_resnet18():
    """torchvision's ResNet-18 (examples/resnet18.nn) in evaluation mode on
    one 224x224 image, without autograd, as PEERS.md runs the peer at its
    best (torch.jit.optimize_for_inference where it works)."""
    torch.manual_seed(0)
    try:
        import torchvision
        model = torchvision.models.resnet18().eval()
    except ImportError:  # the same network, defined here
        return None
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        try:
            model = torch.jit.optimize_for_inference(torch.jit.script(model))
        except Exception:
            pass

    def run():
        with torch.no_grad():
            model(x)
    return run


def epoch(name):
    step = train_step(name)
    return lambda: [step() for _ in range(60000 // 64 + 1)]


def workloads():
    w = {}
    for n in (256, 512, 1024, 2048):
        w["gemm/%d" % n] = gemm(n, n, n)
    for m, n, k in ((64, 128, 784), (64, 64, 128), (64, 10, 64), (784, 128, 64)):
        w["mlp_gemm:%dx%dx%d" % (m, n, k)] = gemm(m, n, k)
    convs = {"mnist_cnn": (64, 1, 28, 28, 32, 5, 1, 2), "lenet5_c1": (64, 1, 28, 28, 6, 5, 1, 2),
             "lenet5_c3": (64, 6, 14, 14, 16, 5), "vgg_small_a2": (32, 32, 32, 32, 32, 3, 1, 1),
             "vgg_small_b2": (32, 64, 16, 16, 64, 3, 1, 1)}
    convs.update({"rn18_stem": (64, 3, 32, 32, 64, 3, 1, 1), "rn18_s1": (64, 64, 32, 32, 64, 3, 1, 1),
                  "rn18_s2_down": (64, 64, 32, 32, 128, 3, 2, 1), "rn18_s2_short": (64, 64, 32, 32, 128, 1, 2, 0),
                  "rn18_s2": (64, 128, 16, 16, 128, 3, 1, 1), "rn18_s3_down": (64, 128, 16, 16, 256, 3, 2, 1),
                  "rn18_s3_short": (64, 128, 16, 16, 256, 1, 2, 0), "rn18_s3": (64, 256, 8, 8, 256, 3, 1, 1),
                  "rn18_s4_down": (64, 256, 8, 8, 512, 3, 2, 1), "rn18_s4_short": (64, 256, 8, 8, 512, 1, 2, 0),
                  "rn18_s4": (64, 512, 4, 4, 512, 3, 1, 1)})
    for name, args in convs.items():
        w["conv/" + name] = conv(*args)
        w["conv_fwd_bwd/" + name] = conv_fwd_bwd(*args)
    w["chain/relu(x * 0.5 + y)"] = chain("relu")
    w["chain/sigmoid(x * y + z)"] = chain("sigmoid")
    w["chain/x - 0.1 * y"] = chain("sgd")
    w["reduction/rows_4096x4096"] = reduction(1)
    w["reduction/cols_4096x4096"] = reduction(0)
    w["softmax_ce/64x10"] = softmax_ce(64, 10)
    w["softmax_ce/1024x1000"] = softmax_ce(1024, 1000)
    w["step/resnet18_cifar"] = train_step("resnet18_cifar")
    infer = infer_resnet18()
    if infer:
        w["infer/resnet18_224"] = infer
    for m in ("mnist_mlp", "mnist_cnn"):
        w["step/" + m] = train_step(m)
        w["epoch/" + m] = epoch(m)
    return w


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--filter", default=".")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    for name, fn in workloads().items():
        if not re.search(args.filter, name):
            continue
        epochs = name.startswith("epoch/")
        out[name] = best_ms(fn, min_time=0 if epochs else 0.3, min_reps=1 if epochs else 3,
                            warm=0 if epochs else 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
