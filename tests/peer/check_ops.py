"""Op-by-op comparison of nnc with PyTorch, through nnc's command line.

For each case, a model computes `r` from parameters, and its loss is
sum(r * c) with a random `c` of r's shape, so that the gradient of `c` is r
itself: one SGD step with learning rate 1 (`nnc train --resume`) turns every
parameter's gradient into the difference of two checkpoints. PyTorch
computes r and the gradients in double precision from the same values.
Batch-norm running statistics are compared after the step. Optimizers run
four steps on a loss whose gradient changes every step; whole training runs
over CSV rows compare every parameter at the end and `nnc predict`'s outputs.

    /usr/bin/python3 tests/peer/check_ops.py NNC [--filter REGEX] [--keep DIR]

Exits 0 when every case matches, 1 when one does not, 77 when PyTorch is not
installed (ctest reports the test as skipped).
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print("check_ops.py: PyTorch or NumPy is not installed (%s): skipped" % e)
    sys.exit(77)

torch.set_default_dtype(torch.float64)

# The backend under test (--target): the CPU JIT, or CUDA on a machine with a GPU.
TARGET = "cpu"
GRADCHECK = None  # --gradcheck: the target of `nnc gradcheck` for the random graphs


def read_checkpoint(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, h in header.items():
        assert h["dtype"] in ("F32", "I32"), h
        a, b = h["data_offsets"]
        dt = np.float32 if h["dtype"] == "F32" else np.int32
        tensors[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(h["shape"]).copy()
    return tensors, meta


def write_checkpoint(path, tensors, meta):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.tobytes()
        header[name] = {"dtype": "F32" if t.dtype == np.float32 else "I32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    data = b"".join(blobs)
    # The data's CRC-32 alone (nnc also reads that form); the header checksum
    # of the checkpoint this was read from no longer holds.
    meta = {k: v for k, v in meta.items() if k != "nnc.checksum"}
    meta["nnc.crc32"] = str(zlib.crc32(data))
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


class Case:
    """`params`: name -> (shape, kind) for the values the expression reads;
    kind is 'normal', 'positive', 'unit' (0.05..0.95), 'labels:C' (integers
    below C, a frozen i32) or 'onehot:C'. `layers`: values nnc declares
    itself (layer parameters, state), filled from their kind the same way.
    `torch_fn(v)` returns r from the dict of tensors (by nnc's names) and may
    update state tensors in place."""

    def __init__(self, name, expr, params, torch_fn, layers=None, tol=2e-4, batched=False):
        self.name, self.expr, self.params, self.torch_fn = name, expr, params, torch_fn
        self.layers, self.tol = layers or {}, tol
        # batched: x is a batch of samples read from data (`input x:
        # f32[B, ...]`, one step over all of them) instead of a parameter,
        # so the code runs with sizes that follow the batch.
        self.batched = batched


def fill(rng, shape, kind):
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if kind == "ties":  # exact zeros and repeated values: the kinks and ties
        return rng.integers(-1, 2, shape).astype(np.float32)
    if kind == "unit":
        return rng.uniform(0.05, 0.95, shape).astype(np.float32)
    if kind.startswith("labels:"):
        return rng.integers(0, int(kind.split(":")[1]), shape).astype(np.int32)
    if kind.startswith("onehot:"):
        c = int(kind.split(":")[1])
        p = rng.uniform(0.1, 1.0, shape).astype(np.float32)
        return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)
    raise ValueError(kind)


def decl(name, shape, kind):
    dims = ", ".join(str(s) for s in shape)
    if kind.startswith("labels:"):
        # Drawn, not written out: only then does a checkpoint set a frozen
        # tensor (written-out values are constants of the model).
        return "  frozen %s: i32[%s] = uniform(low=0, high=1)" % (name, dims)
    # A start inside the op's domain: the first run (learning rate 0) only
    # writes the checkpoint, but a loss of NaN would stop it.
    init = {"normal": "zeros", "positive": "ones"}.get(kind, "0.5")
    return "  param %s: f32[%s] = %s" % (name, dims, init)


def run(nnc, args, cwd):
    p = subprocess.run([nnc] + args, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("nnc %s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p.stdout


def train_from(nnc, work, values, epochs, extra=(), exact=False):
    """Trains t.nn on d.csv for `epochs` epochs from `values` (by name; every
    other tensor of the checkpoint, optimizer state, at zero) and returns
    the checkpoint after. A first run at learning rate 0 writes the
    checkpoint that lists the model's tensors; `exact`: it holds no others."""
    ck_path = os.path.join(work, "ck.st")
    run(nnc, ["train", "t.nn", "--data", "d.csv", "--checkpoint", "ck.st", "--lr", "0", "--target", TARGET], work)
    ck, meta = read_checkpoint(ck_path)
    missing = [n for n in values if n not in ck]
    unexpected = [n for n in ck if n not in values] if exact else []
    if missing or unexpected:
        raise RuntimeError("checkpoint names differ: missing %s, unexpected %s" % (missing, unexpected))
    for n in ck:
        if n in values and list(ck[n].shape) != list(values[n].shape):
            raise RuntimeError("%s: nnc's shape %s, PyTorch's %s" % (n, list(ck[n].shape), list(values[n].shape)))
        ck[n] = values[n].astype(ck[n].dtype) if n in values else np.zeros_like(ck[n])
    meta["nnc.step"], meta["nnc.epoch"] = "0", "0"
    write_checkpoint(ck_path, ck, meta)
    run(nnc, ["train", "t.nn", "--data", "d.csv", "--checkpoint", "ck.st", "--resume", "--epochs", str(epochs),
              "--target", TARGET] + list(extra), work)
    return read_checkpoint(ck_path)[0]


def check(nnc, case, work, rng):
    # PyTorch first: r's shape decides c's.
    values = {n: fill(rng, s, k) for n, (s, k) in {**case.params, **case.layers}.items()}
    tv = {n: torch.tensor(v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int64))
          for n, v in values.items()}
    r = case.torch_fn(dict(tv))
    rshape = list(r.shape) if r.dim() > 0 else [1]
    if case.batched:  # c's leading size is 1, broadcast over the batch
        rshape = [1] + rshape[1:]
    values["c"] = rng.standard_normal(rshape).astype(np.float32)
    if case.batched:
        xs = values["x"]
        lines = ["model t {", "  input x: f32[B, %s]" % ", ".join(map(str, xs.shape[1:]))]
        lines += [decl(n, s, k) for n, (s, k) in case.params.items() if n != "x"]
        loss, batch = "sum(r * c)", xs.shape[0]
        flat = xs.reshape(xs.shape[0], -1)
        data = ",".join("x%d" % j for j in range(flat.shape[1])) + "\n"
        data += "".join(",".join(repr(float(f)) for f in row) + "\n" for row in flat)
    else:
        lines = ["model t {", "  input d: f32[B, 1]"]
        lines += [decl(n, s, k) for n, (s, k) in case.params.items()]
        loss, batch, data = "sum(r * c) + 0 * sum(d)", 1, "d\n0\n"
    lines.append(decl("c", rshape, "normal"))
    lines += ["  " + l for l in case.expr.strip().split("\n")]
    lines += ["  loss = " + loss, "  minimize loss", "}",
              "train {", "  optimizer = sgd(lr=0)", "  batch = %d" % batch, "  epochs = 1", "  shuffle = false", "}"]
    src = "\n".join(lines) + "\n"
    open(os.path.join(work, "t.nn"), "w").write(src)
    open(os.path.join(work, "d.csv"), "w").write(data)
    held = {n: v for n, v in values.items() if not (case.batched and n == "x")}
    after = train_from(nnc, work, held, 1, ["--lr", "1"], exact=True)

    # PyTorch's gradients (and state updates) from the same values, in f64
    # (the reference); in f32, and in f32 from values moved by up to an ulp
    # (how far rounding alone moves them: the conditioning).
    def torch_grads(dtype, jitter=None):
        def moved(v):
            return v if jitter is None else v * (1 + np.float32(2 ** -23) * jitter.uniform(-1, 1, v.shape))
        tv = {n: torch.tensor(moved(v).astype(dtype) if v.dtype == np.float32 else v.astype(np.int64))
              for n, v in values.items()}
        for n, t in tv.items():
            if t.is_floating_point() and "running_" not in n:
                t.requires_grad_(True)
        r = case.torch_fn(tv)
        (r * tv["c"] if case.batched else r.reshape(-1) * tv["c"].reshape(-1)).sum().backward()
        return {n: (t.detach().numpy() if "running_" in n else
                    t.grad.numpy() if t.grad is not None else np.zeros(t.shape)).astype(np.float64)
                for n, t in tv.items() if t.is_floating_point()}
    wants, rounded = torch_grads(np.float64), torch_grads(np.float32)
    jittered = torch_grads(np.float32, np.random.default_rng(zlib.crc32(case.name.encode())))
    failures = []
    for n, want in wants.items():
        if n not in held:
            continue  # a batched input has no gradient in nnc's checkpoint
        if "running_" in n:
            got, what = after[n].astype(np.float64), "after the step"
        else:
            got = values[n].astype(np.float64) - after[n].astype(np.float64)
            what = "gradient"
        scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
        err = np.abs(got - want)
        # An ill-conditioned result (a gradient that cancels to zero, a batch
        # norm of values far from zero) is allowed what f32 costs PyTorch,
        # or a change of the inputs by an ulp, four times over.
        floor = 4 * max(float(np.abs(rounded[n] - want).max()), float(np.abs(jittered[n] - want).max())) \
            if want.size else 0.0
        bad = err > case.tol * (scale + np.abs(want)) + floor
        if bad.any():
            i = np.unravel_index(np.argmax(err - case.tol * np.abs(want)), want.shape)
            failures.append("%s %s: %d of %d differ; at %s nnc %.7g, PyTorch %.7g (in f32 %.7g)" %
                            (n, what, int(bad.sum()), bad.size, list(i), got[i], want[i], rounded[n][i]))
    return failures, src


def image(n=2, c=3, h=7, w=6):
    return [n, c, h, w]


def cases():
    X = image()
    out = []

    def ew(name, expr, fn, kind="normal", shape=(3, 4)):
        out.append(Case(name, "r = " + expr, {"x": (list(shape), kind)}, lambda v: fn(v["x"])))

    ew("exp", "exp(x)", torch.exp)
    ew("log", "log(x)", torch.log, "positive")
    ew("sqrt", "sqrt(x)", torch.sqrt, "positive")
    ew("abs", "abs(x)", torch.abs)
    ew("neg", "neg(x)", torch.neg)
    ew("unary_minus_pow", "-x ** 2", lambda x: -(x ** 2))
    ew("sigmoid", "sigmoid(x)", torch.sigmoid)
    ew("tanh", "tanh(x)", torch.tanh)
    ew("relu", "relu(x)", torch.relu)
    ew("leaky_relu", "leaky_relu(x)", F.leaky_relu)
    ew("leaky_relu_alpha", "leaky_relu(x, alpha=0.2)", lambda x: F.leaky_relu(x, 0.2))
    ew("softplus", "softplus(x * 10)", lambda x: F.softplus(x * 10))
    ew("softmax", "softmax(x)", lambda x: torch.softmax(x, -1))
    ew("softmax_axis0", "softmax(x, axis=0)", lambda x: torch.softmax(x, 0))
    ew("log_softmax", "log_softmax(x)", lambda x: torch.log_softmax(x, -1))
    ew("log_softmax_4d", "log_softmax(x, axis=1)", lambda x: torch.log_softmax(x, 1), shape=X)
    ew("identity", "identity(x)", lambda x: x)
    ew("pow_scalar", "x ** 3", lambda x: x ** 3)
    ew("pow_fraction", "x ** 0.5", lambda x: x ** 0.5, "positive")
    ew("sum_all", "sum(x)", torch.sum)
    ew("sum_axis", "sum(x, axis=1)", lambda x: x.sum(1), shape=X)
    ew("sum_axes_keep", "sum(x, axis=[0, 2], keepdims=true)", lambda x: x.sum((0, 2), keepdim=True), shape=X)
    ew("mean_axis", "mean(x, axis=-1)", lambda x: x.mean(-1), shape=X)
    ew("mean_all", "mean(x)", torch.mean, shape=X)
    ew("max_axis", "max(x, axis=1)", lambda x: torch.amax(x, 1), shape=X)
    ew("max_all", "max(x)", torch.amax)
    ew("norm_all", "norm(x)", lambda x: torch.linalg.vector_norm(x))
    ew("norm_axis", "norm(x, axis=0, keepdims=true)", lambda x: torch.linalg.vector_norm(x, dim=0, keepdim=True))
    ew("reshape", "reshape(x, [4, 3])", lambda x: x.reshape(4, 3))
    ew("reshape_infer", "reshape(x, [2, -1, 3])", lambda x: x.reshape(2, -1, 3), shape=X)
    ew("flatten", "flatten(x)", lambda x: torch.flatten(x, 1), shape=X)
    ew("transpose", "transpose(x)", lambda x: x.t())
    ew("transpose_perm", "transpose(x, [0, 2, 3, 1])", lambda x: x.permute(0, 2, 3, 1), shape=X)
    ew("l2", "l2(x)", lambda x: 0.5 * (x ** 2).sum())
    # At the kinks and with ties, PyTorch's choices: relu'(0) = 0, abs'(0) =
    # 0, leaky_relu'(0) = alpha; amax shares the gradient among equal
    # maxima, max pooling gives it to the first.
    ew("relu_at_zero", "relu(x)", torch.relu, "ties")
    ew("abs_at_zero", "abs(x)", torch.abs, "ties")
    ew("leaky_relu_at_zero", "leaky_relu(x, alpha=0.1)", lambda x: F.leaky_relu(x, 0.1), "ties")
    ew("max_ties", "max(x, axis=1)", lambda x: torch.amax(x, 1), "ties", shape=(4, 6))
    ew("max_all_ties", "max(x)", torch.amax, "ties", shape=(4, 6))
    ew("max_pool2d_ties", "max_pool2d(x, 2)", lambda x: F.max_pool2d(x, 2), "ties", shape=image(2, 2, 6, 6))
    ew("max_pool2d_overlap_ties", "max_pool2d(x, 3, stride=1, padding=1)",
       lambda x: F.max_pool2d(x, 3, 1, 1), "ties", shape=image(1, 2, 5, 5))

    def two(name, expr, fn, sa, sb, ka="normal", kb="normal"):
        out.append(Case(name, "r = " + expr, {"a": (sa, ka), "b": (sb, kb)}, lambda v: fn(v["a"], v["b"])))

    two("add_broadcast", "a + b", lambda a, b: a + b, [3, 4], [4])
    two("sub_broadcast", "a - b", lambda a, b: a - b, [3, 1], [1, 4])
    two("mul_broadcast", "a * b", lambda a, b: a * b, [2, 3, 4], [3, 1])
    two("div", "a / b", lambda a, b: a / b, [3, 4], [3, 4], kb="positive")
    two("pow", "a ** b", lambda a, b: a ** b, [3, 4], [3, 4], ka="positive")
    two("pow_call", "pow(a, b)", torch.pow, [3, 4], [4], ka="positive")
    two("matmul", "a @ b", torch.mm, [5, 7], [7, 3])
    two("matmul_call", "matmul(a, b)", torch.mm, [17, 33], [33, 20])
    two("concat0", "concat([a, b], axis=0)", lambda a, b: torch.cat([a, b], 0), [2, 4], [3, 4])
    two("concat1", "concat([a, b, a], axis=1)", lambda a, b: torch.cat([a, b, a], 1), [3, 2], [3, 5])
    two("mse", "mse(a, b)", F.mse_loss, [4, 5], [4, 5])
    two("mse_sum", 'mse(a, b, reduction="sum")', lambda a, b: F.mse_loss(a, b, reduction="sum"), [4, 5], [4, 5])
    two("mse_none", 'mse(a, b, reduction="none")', lambda a, b: F.mse_loss(a, b, reduction="none"), [4, 5], [4, 5])
    two("mae", "mae(a, b)", F.l1_loss, [4, 5], [4, 5])
    two("l1_loss", 'l1_loss(a, b, reduction="sum")', lambda a, b: F.l1_loss(a, b, reduction="sum"), [4, 5], [4, 5])
    two("bce", "binary_cross_entropy(a, b)", F.binary_cross_entropy, [4, 5], [4, 5], "unit", "unit")
    two("bce_none", 'binary_cross_entropy(a, b, reduction="none")',
        lambda a, b: F.binary_cross_entropy(a, b, reduction="none"), [4, 5], [4, 5], "unit", "unit")
    two("cross_entropy_probs", "cross_entropy(a, b)", lambda p, t: -(t * torch.log(p)).sum(1).mean(),
        [4, 5], [4, 5], "onehot:5", "onehot:5")

    def labels(name, expr, fn, n=6, c=5, kind="normal"):
        out.append(Case(name, "r = " + expr, {"x": ([n, c], kind), "y": ([n], "labels:%d" % c)},
                        lambda v: fn(v["x"], v["y"])))

    labels("softmax_cross_entropy", "softmax_cross_entropy(x, y)", F.cross_entropy)
    labels("softmax_cross_entropy_sum", 'softmax_cross_entropy(x, y, reduction="sum")',
           lambda x, y: F.cross_entropy(x, y, reduction="sum"))
    labels("softmax_cross_entropy_none", 'softmax_cross_entropy(x, y, reduction="none")',
           lambda x, y: F.cross_entropy(x, y, reduction="none"))
    labels("cross_entropy_labels", "cross_entropy(x, y)", lambda p, y: F.nll_loss(torch.log(p), y), kind="onehot:5")
    labels("one_hot", "one_hot(y, 5) * x", lambda x, y: F.one_hot(y, 5).double() * x)

    def layer(name, expr, fn, params, layers, tol=2e-4):
        out.append(Case(name, expr, params, fn, layers, tol))

    layer("dense", "r = dense(x, 3)", lambda v: F.linear(v["x"], v["r.w"].t(), v["r.b"]),
          {"x": ([4, 5], "normal")}, {"r.w": ([5, 3], "normal"), "r.b": ([3], "normal")})
    layer("dense_nobias", "r = dense(x, 3, bias=false)", lambda v: v["x"] @ v["r.w"],
          {"x": ([4, 5], "normal")}, {"r.w": ([5, 3], "normal")})
    for (k, s, p, g) in [(3, 1, 0, 1), (3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 1, 3), (1, 1, 0, 1), (2, 3, 1, 1)]:
        cin, cout = 3, 6
        layer("conv2d_k%d_s%d_p%d_g%d" % (k, s, p, g),
              "r = conv2d(x, %d, kernel=%d, stride=%d, padding=%d, groups=%d)" % (cout, k, s, p, g),
              lambda v, s=s, p=p, g=g: F.conv2d(v["x"], v["r.w"], v["r.b"], stride=s, padding=p, groups=g),
              {"x": (image(2, cin, 9, 8), "normal")},
              {"r.w": ([cout, cin // g, k, k], "normal"), "r.b": ([cout], "normal")})
    layer("conv2d_rect", "r = conv2d(x, 4, kernel=[3, 2], stride=[2, 1], padding=[1, 0])",
          lambda v: F.conv2d(v["x"], v["r.w"], v["r.b"], stride=(2, 1), padding=(1, 0)),
          {"x": (image(2, 2, 7, 6), "normal")}, {"r.w": ([4, 2, 3, 2], "normal"), "r.b": ([4], "normal")})
    layer("conv2d_op", "r = conv2d(x, w, stride=2, padding=1)",
          lambda v: F.conv2d(v["x"], v["w"], stride=2, padding=1),
          {"x": (image(2, 3, 8, 8), "normal"), "w": ([4, 3, 3, 3], "normal")}, {})
    # torchvision's ResNet layers: the 7x7 stride-2 stem and the 1x1 stride-2
    # projection (no bias), a residual add into a ReLU, global average pooling.
    layer("conv2d_resnet_stem", "r = conv2d(x, 4, kernel=7, stride=2, padding=3, bias=false)",
          lambda v: F.conv2d(v["x"], v["r.w"], stride=2, padding=3),
          {"x": (image(2, 3, 13, 12), "normal")}, {"r.w": ([4, 3, 7, 7], "normal")})
    layer("conv2d_downsample", "r = conv2d(x, 6, kernel=1, stride=2, bias=false)",
          lambda v: F.conv2d(v["x"], v["r.w"], stride=2),
          {"x": (image(2, 3, 7, 8), "normal")}, {"r.w": ([6, 3, 1, 1], "normal")})
    layer("residual_relu", "r = relu(conv2d(x, 3, kernel=3, padding=1, bias=false) + x)",
          lambda v: F.relu(F.conv2d(v["x"], v["r.w"], padding=1) + v["x"]),
          {"x": (image(2, 3, 5, 6), "normal")}, {"r.w": ([3, 3, 3, 3], "normal")})
    ew("adaptive_avg_pool2d", "adaptive_avg_pool2d(x, 1)", lambda x: F.adaptive_avg_pool2d(x, 1), shape=image(2, 3, 5, 7))
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 0), (3, 3, 1)]:
        layer("max_pool2d_k%d_s%d_p%d" % (k, s, p), "r = max_pool2d(x, %d, stride=%d, padding=%d)" % (k, s, p),
              lambda v, k=k, s=s, p=p: F.max_pool2d(v["x"], k, s, p), {"x": (image(2, 3, 9, 8), "normal")}, {})
        layer("avg_pool2d_k%d_s%d_p%d" % (k, s, p), "r = avg_pool2d(x, %d, stride=%d, padding=%d)" % (k, s, p),
              lambda v, k=k, s=s, p=p: F.avg_pool2d(v["x"], k, s, p), {"x": (image(2, 3, 9, 8), "normal")}, {})
    layer("avg_pool2d_2x2_tiling", "r = avg_pool2d(x, 2)", lambda v: F.avg_pool2d(v["x"], 2),
          {"x": (image(2, 3, 8, 36), "normal")}, {})
    layer("max_pool2d_2x2_tiling", "r = max_pool2d(x, 2)", lambda v: F.max_pool2d(v["x"], 2),
          {"x": (image(2, 3, 8, 36), "normal")}, {})
    layer("avg_pool2d_exclude_pad", "r = avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=false)",
          lambda v: F.avg_pool2d(v["x"], 3, 2, 1, count_include_pad=False), {"x": (image(2, 3, 9, 8), "normal")}, {})

    def bn(v):
        return F.batch_norm(v["x"], v["r.running_mean"], v["r.running_var"], v["r.gamma"], v["r.beta"],
                            training=True, momentum=0.1, eps=1e-5)

    bnl = {"r.gamma": ([3], "normal"), "r.beta": ([3], "normal"), "r.running_mean": ([3], "normal"),
           "r.running_var": ([3], "positive")}
    layer("batch_norm2d", "r = batch_norm(x)", bn, {"x": (image(4, 3, 5, 4), "normal")}, bnl)
    layer("batch_norm1d", "r = batch_norm(x)", bn, {"x": ([8, 3], "normal")}, bnl)
    layer("group_norm", "r = group_norm(x, 2)",
          lambda v: F.group_norm(v["x"], 2, v["r.gamma"], v["r.beta"], eps=1e-5),
          {"x": (image(3, 4, 5, 3), "normal")}, {"r.gamma": ([4], "normal"), "r.beta": ([4], "normal")})
    for size in (2, 3, 5):
        layer("local_response_norm_%d" % size, "r = local_response_norm(x, %d, alpha=0.5, beta=0.75, k=1.5)" % size,
              lambda v, size=size: F.local_response_norm(v["x"], size, alpha=0.5, beta=0.75, k=1.5),
              {"x": (image(2, 6, 4, 3), "normal")}, {})
    layer("local_response_norm_default", "r = local_response_norm(x, 3)",
          lambda v: F.local_response_norm(v["x"], 3), {"x": (image(2, 5, 3, 3), "normal")}, {})
    return out


def shape_cases(count, seed):
    """Convolutions, and pooling and normalizations, at `count` random
    shapes each, products and reductions (softmax too) at count / 2 each,
    all drawn from `seed`: kernels, strides, paddings, groups, channel
    counts and extents that reach every specialized loop of the backends
    (ragged vectors, channel blocks, taps held at once, weights too large
    for the stack, register blocks of products one vector wide), which the
    fixed cases above are too small for."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        g = rnd.choice([1, 1, 1, 2, 4])
        cin, cout = g * rnd.randint(1, 40), g * rnd.randint(1, 40)
        kh = rnd.choice([1, 1, 2, 3, 3, 3, 5, 7])
        kw = rnd.choice([kh, kh, kh, rnd.randint(1, 5)])
        sh = rnd.choice([1, 1, 1, 2, 3])
        sw = rnd.choice([sh, sh, rnd.randint(1, 3)])
        ph, pw = rnd.randint(0, kh // 2 + 1), rnd.randint(0, kw // 2 + 1)
        h, w = rnd.randint(max(1, kh - 2 * ph), 30), rnd.randint(max(1, kw - 2 * pw), 30)
        n = rnd.randint(1, 5)
        out.append(Case(
            "shape_conv_%d_n%d_c%d_o%d_%dx%d_k%dx%d_s%dx%d_p%dx%d_g%d" % (i, n, cin, cout, h, w, kh, kw, sh, sw, ph, pw, g),
            "r = conv2d(x, %d, kernel=[%d, %d], stride=[%d, %d], padding=[%d, %d], groups=%d)" % (
                cout, kh, kw, sh, sw, ph, pw, g),
            {"x": ([n, cin, h, w], "normal")},
            lambda v, s=(sh, sw), p=(ph, pw), g=g: F.conv2d(v["x"], v["r.w"], v["r.b"], stride=s, padding=p, groups=g),
            {"r.w": ([cout, cin // g, kh, kw], "normal"), "r.b": ([cout], "normal")}, 5e-4))
    for i in range(count):
        n, c, h, w = rnd.randint(1, 6), rnd.randint(1, 40), rnd.randint(1, 33), rnd.randint(1, 33)
        kind = rnd.choice(["max", "avg", "avgx", "bn", "bn1", "gn", "lrn"])
        name = "shape_%s_%d" % (kind, i)
        if kind in ("max", "avg", "avgx"):
            k, st = rnd.randint(1, 4), rnd.randint(1, 3)
            p = rnd.randint(0, k // 2)
            h, w = max(h, k), max(w, k)
            args = "%d, stride=%d, padding=%d" % (k, st, p)
            if kind == "max":
                expr, fn = "r = max_pool2d(x, %s)" % args, lambda v, k=k, st=st, p=p: F.max_pool2d(v["x"], k, st, p)
            elif kind == "avg":
                expr, fn = "r = avg_pool2d(x, %s)" % args, lambda v, k=k, st=st, p=p: F.avg_pool2d(v["x"], k, st, p)
            else:
                expr = "r = avg_pool2d(x, %s, count_include_pad=false)" % args
                fn = lambda v, k=k, st=st, p=p: F.avg_pool2d(v["x"], k, st, p, count_include_pad=False)
            out.append(Case("%s_n%d_c%d_%dx%d_k%d_s%d_p%d" % (name, n, c, h, w, k, st, p), expr,
                            {"x": ([n, c, h, w], "normal")}, fn, {}, 2e-4))
        elif kind in ("bn", "bn1"):
            shape = [max(n, 2), c, h, w] if kind == "bn" else [rnd.randint(2, 70), c]
            out.append(Case(
                "%s_%s" % (name, "x".join(map(str, shape))), "r = batch_norm(x)", {"x": (shape, "normal")},
                lambda v: F.batch_norm(v["x"], v["r.running_mean"], v["r.running_var"], v["r.gamma"], v["r.beta"],
                                       training=True, momentum=0.1, eps=1e-5),
                {"r.gamma": ([c], "normal"), "r.beta": ([c], "normal"), "r.running_mean": ([c], "normal"),
                 "r.running_var": ([c], "positive")}, 5e-4))
        elif kind == "gn":
            groups = rnd.choice([d for d in range(1, c + 1) if c % d == 0])
            out.append(Case("%s_n%d_c%d_%dx%d_g%d" % (name, n, c, h, w, groups), "r = group_norm(x, %d)" % groups,
                            {"x": ([n, c, h, w], "normal")},
                            lambda v, groups=groups: F.group_norm(v["x"], groups, v["r.gamma"], v["r.beta"], eps=1e-5),
                            {"r.gamma": ([c], "normal"), "r.beta": ([c], "normal")}, 5e-4))
        else:
            size = rnd.randint(1, 7)
            out.append(Case("%s_n%d_c%d_%dx%d_s%d" % (name, n, c, h, w, size),
                            "r = local_response_norm(x, %d, alpha=0.5, beta=0.75, k=1.5)" % size,
                            {"x": ([n, c, h, w], "normal")},
                            lambda v, size=size: F.local_response_norm(v["x"], size, alpha=0.5, beta=0.75, k=1.5),
                            {}, 5e-4))
    for i in range(count // 2):
        n = rnd.choice([1, 3, rnd.randint(1, 70), rnd.randint(60, 300)])
        k = rnd.choice([1, 16, 17, rnd.randint(1, 100), rnd.randint(100, 900)])
        m = rnd.choice([1, 10, 16, 17, rnd.randint(1, 64), rnd.randint(64, 300)])
        out.append(Case("shape_dense_%d_n%d_k%d_m%d" % (i, n, k, m), "r = dense(x, %d)" % m,
                        {"x": ([n, k], "normal")}, lambda v: F.linear(v["x"], v["r.w"].t(), v["r.b"]),
                        {"r.w": ([k, m], "normal"), "r.b": ([m], "normal")}, 5e-4))
    for i in range(count // 2):
        rank = rnd.randint(1, 4)
        shape = [rnd.choice([1, 2, 3, 7, 16, 17, 33, rnd.randint(1, 70), rnd.randint(100, 700)]) for _ in range(rank)]
        while int(np.prod(shape)) > 200000:
            shape = [max(1, d // 3) for d in shape]
        kind = rnd.choice(["sum", "mean", "max", "softmax", "log_softmax"])
        if kind in ("softmax", "log_softmax"):
            ax = rnd.randrange(rank)
            expr = "r = %s(x, axis=%d)" % (kind, ax)
            fn = (lambda v, ax=ax: torch.softmax(v["x"], ax)) if kind == "softmax" else \
                (lambda v, ax=ax: torch.log_softmax(v["x"], ax))
        else:
            axes = tuple(sorted(rnd.sample(range(rank), rnd.randint(1, rank))))
            keep = rnd.random() < 0.5
            expr = "r = %s(x, axis=[%s]%s)" % (kind, ", ".join(map(str, axes)), ", keepdims=true" if keep else "")
            fn = {"sum": lambda v, a=axes, kp=keep: v["x"].sum(a, keepdim=kp),
                  "mean": lambda v, a=axes, kp=keep: v["x"].mean(a, keepdim=kp),
                  "max": lambda v, a=axes, kp=keep: torch.amax(v["x"], a, keepdim=kp)}[kind]
        out.append(Case("shape_%s_%d_%s" % (kind, i, "x".join(map(str, shape))), expr, {"x": (shape, "normal")}, fn,
                        {}, 5e-4))
    return out


def graph_cases(count, seed):
    """Small random graphs drawn from `seed`: chains of 3 to 7 layers and ops
    (convolutions, pooling, normalizations, dense layers, activations,
    softmax, reductions broadcast back, elementwise joins with earlier
    values and with parameters), so that ops meet in the combinations that
    fusion groups (producers read where they are used, epilogues after
    products, batch norm and reductions; stores of values read twice) and
    one op's gradient feeds another's."""
    rnd = random.Random(seed * 7919 + 1)
    unary = [("relu(%s)", torch.relu), ("sigmoid(%s)", torch.sigmoid), ("tanh(%s)", torch.tanh),
             ("leaky_relu(%s, alpha=0.1)", lambda t: F.leaky_relu(t, 0.1)), ("softplus(%s)", F.softplus),
             ("%s * %s", lambda t: t * t), ("exp(tanh(%s))", lambda t: torch.exp(torch.tanh(t))),
             ("sqrt(%s * %s + 1)", lambda t: torch.sqrt(t * t + 1))]
    out = []
    for i in range(count):
        image = rnd.random() < 0.6
        batched = i % 2 == 1
        n = rnd.randint(2, 4)
        shape = [n, rnd.randint(1, 6), rnd.randint(4, 11), rnd.randint(4, 11)] if image else [n, rnd.randint(1, 40)]
        params = {"x": (shape, "normal")}
        layers = {}
        lines, steps = [], []  # nnc's lines; PyTorch's (name, f(v, env))
        values = [("x", list(shape))]  # earlier values, for joins
        cur, ties = "x", False  # ties: exact zeros or equal values (relu) ahead of a maximum
        for k in range(rnd.randint(3, 7)):
            name, sh = "v%d" % k, dict(values)[cur]
            rank = len(sh)
            choices = ["unary", "unary", "join", "param", "reduce"]
            if rank == 4:
                choices += ["conv", "conv", "bn", "gn", "flatten"] + (["pool"] if min(sh[2:]) >= 2 else [])
            else:
                choices += ["dense", "dense", "bn", "softmax"]
            op = rnd.choice(choices)
            if op == "unary":
                text, f = rnd.choice(unary)
                expr = text.replace("%s", cur)
                g = lambda v, e, c=cur, f=f: f(e[c])
                new, ties = sh, ties or text.startswith("relu")
            elif op == "join":
                same = [nm for nm, s2 in values if s2 == sh and nm != cur]
                if not same:
                    continue
                other = rnd.choice(same)
                sym, f = rnd.choice([("+", torch.add), ("-", torch.sub), ("*", torch.mul)])
                expr = "%s %s %s" % (cur, sym, other)
                g = lambda v, e, c=cur, o=other, f=f: f(e[c], e[o])
                new = sh
            elif op == "param":
                # A parameter broadcast along some axes: per channel, per row, per column.
                pshape = [d if rnd.random() < 0.5 and (a > 0 or not batched) else 1 for a, d in enumerate(sh)]
                pname = "p%d" % k
                params[pname] = (pshape, "positive" if rnd.random() < 0.5 else "normal")
                sym, f = rnd.choice([("+", torch.add), ("*", torch.mul), ("-", torch.sub)])
                expr = "%s %s %s" % (cur, sym, pname)
                g = lambda v, e, c=cur, p=pname, f=f: f(e[c], v[p])
                new = sh
            elif op == "reduce":
                axes = sorted(rnd.sample(range(rank), rnd.randint(1, rank)))
                kind = rnd.choice(["sum", "mean"] + ([] if ties else ["max"]))
                if kind == "sum" and int(np.prod([sh[a] for a in axes])) > 8:
                    kind = "mean"  # sums of many grow past what f32 resolves after a few steps
                sym, f = rnd.choice([("-", torch.sub), ("*", torch.mul), ("+", torch.add)])
                red = {"sum": lambda t, a: t.sum(a, keepdim=True), "mean": lambda t, a: t.mean(a, keepdim=True),
                       "max": lambda t, a: torch.amax(t, a, keepdim=True)}[kind]
                expr = "%s %s %s(%s, axis=[%s], keepdims=true)" % (cur, sym, kind, cur, ", ".join(map(str, axes)))
                g = lambda v, e, c=cur, f=f, red=red, a=tuple(axes): f(e[c], red(e[c], a))
                new = sh
            elif op == "conv":
                kk = rnd.choice([1, 2, 3, 3, 5])
                st = rnd.choice([1, 1, 2])
                pd = rnd.randint(0, kk // 2)
                if min(sh[2:]) + 2 * pd < kk:
                    continue
                o = rnd.randint(1, 12)
                expr = "conv2d(%s, %d, kernel=%d, stride=%d, padding=%d)" % (cur, o, kk, st, pd)
                layers[name + ".w"] = ([o, sh[1], kk, kk], "normal")
                layers[name + ".b"] = ([o], "normal")
                g = lambda v, e, c=cur, nm=name, st=st, pd=pd: F.conv2d(e[c], v[nm + ".w"], v[nm + ".b"], stride=st,
                                                                         padding=pd)
                new = [sh[0], o, (sh[2] + 2 * pd - kk) // st + 1, (sh[3] + 2 * pd - kk) // st + 1]
            elif op == "pool":
                kind = "avg" if ties else rnd.choice(["max", "avg"])
                expr = "%s_pool2d(%s, 2)" % (kind, cur)
                g = lambda v, e, c=cur, kind=kind: (F.max_pool2d if kind == "max" else F.avg_pool2d)(e[c], 2)
                new = sh[:2] + [sh[2] // 2, sh[3] // 2]
            elif op == "bn":
                c = sh[1]
                expr = "batch_norm(%s)" % cur
                # Scales away from zero: a normalization of values that a
                # scale near zero made nearly equal is ill-conditioned in f32.
                layers.update({name + ".gamma": ([c], "positive"), name + ".beta": ([c], "normal"),
                               name + ".running_mean": ([c], "normal"), name + ".running_var": ([c], "positive")})
                g = lambda v, e, c=cur, nm=name: F.batch_norm(e[c], v[nm + ".running_mean"], v[nm + ".running_var"],
                                                              v[nm + ".gamma"], v[nm + ".beta"], training=True,
                                                              momentum=0.1, eps=1e-5)
                new = sh
            elif op == "gn":
                groups = rnd.choice([d for d in range(1, sh[1] + 1) if sh[1] % d == 0])
                expr = "group_norm(%s, %d)" % (cur, groups)
                layers.update({name + ".gamma": ([sh[1]], "positive"), name + ".beta": ([sh[1]], "normal")})
                g = lambda v, e, c=cur, nm=name, gr=groups: F.group_norm(e[c], gr, v[nm + ".gamma"], v[nm + ".beta"],
                                                                         eps=1e-5)
                new = sh
            elif op == "flatten":
                expr = "flatten(%s)" % cur
                g = lambda v, e, c=cur: torch.flatten(e[c], 1)
                new = [sh[0], sh[1] * sh[2] * sh[3]]
            elif op == "dense":
                m = rnd.choice([1, 3, 10, 16, 17, rnd.randint(1, 40)])
                expr = "dense(%s, %d)" % (cur, m)
                layers[name + ".w"] = ([sh[1], m], "normal")
                layers[name + ".b"] = ([m], "normal")
                g = lambda v, e, c=cur, nm=name: F.linear(e[c], v[nm + ".w"].t(), v[nm + ".b"])
                new = [sh[0], m]
            else:  # softmax
                kind = rnd.choice(["softmax", "log_softmax"])
                expr = "%s(%s)" % (kind, cur)
                g = lambda v, e, c=cur, kind=kind: getattr(torch, kind)(e[c], -1)
                new = sh
            lines.append("%s = %s" % (name, expr))
            steps.append((name, g))
            values.append((name, list(new)))
            cur = name
        if not steps:
            continue
        lines.append("r = %s" % cur)

        def fn(v, steps=tuple(steps), last=cur):
            env = {"x": v["x"]}
            for nm, g in steps:
                env[nm] = g(v, env)
            return env[last]

        # The name lists the ops: "v2 = dense(v1, 3)" -> dense, "v3 = v2 * p3" -> op.
        ops = [l.split(" = ")[1].split("(")[0].split(" ")[-1] if "(" in l else "op" for l in lines[:-1]]
        out.append(Case("graph_%d%s_%s" % (i, "_batch" if batched else "", "_".join(ops)),
                        "\n".join(lines), params, fn, layers, 1e-3, batched))
    return out


class OptCase:
    """`steps` updates of w from the loss sum(q * (w - t)^2) (its gradient
    changes every step) with nnc's `optimizer` and PyTorch's `make(params)`."""

    def __init__(self, name, optimizer, make, clip=None, steps=4):
        self.name, self.optimizer, self.make, self.clip, self.steps = name, optimizer, make, clip, steps


def check_optimizer(nnc, case, work, rng):
    shape = [3, 5]
    values = {"w": rng.standard_normal(shape).astype(np.float32),
              "t": rng.standard_normal(shape).astype(np.float32),
              "q": rng.uniform(0.2, 2.0, shape).astype(np.float32)}
    src = "\n".join([
        "model t {", "  input d: f32[B, 1]", "  param w: f32[3, 5] = zeros", "  frozen t: f32[3, 5] = normal()",
        "  frozen q: f32[3, 5] = uniform(low=1, high=2)", "  loss = sum(q * (w - t) ** 2) + 0 * sum(d)", "  minimize loss", "}",
        "train {", "  optimizer = " + case.optimizer, "  batch = 1", "  epochs = 1", "  shuffle = false"] +
        (["  clip_norm = %g" % case.clip] if case.clip else []) + ["}"]) + "\n"
    open(os.path.join(work, "t.nn"), "w").write(src)
    open(os.path.join(work, "d.csv"), "w").write("d\n0\n")
    after = train_from(nnc, work, values, case.steps)
    w = torch.tensor(values["w"].astype(np.float64), requires_grad=True)
    t, q = torch.tensor(values["t"].astype(np.float64)), torch.tensor(values["q"].astype(np.float64))
    opt = case.make([w])
    for _ in range(case.steps):
        opt.zero_grad()
        (q * (w - t) ** 2).sum().backward()
        if case.clip:
            torch.nn.utils.clip_grad_norm_([w], case.clip)
        opt.step()
    want, got = w.detach().numpy(), after["w"].astype(np.float64)
    err = np.abs(got - want)
    bad = err > 2e-5 * (1 + np.abs(want))
    if bad.any():
        i = np.unravel_index(np.argmax(err), want.shape)
        return ["w after %d steps: %d of %d differ; at %s nnc %.7g, PyTorch %.7g" %
                (case.steps, int(bad.sum()), bad.size, list(i), got[i], want[i])], src
    return [], src


def optimizer_cases():
    o = torch.optim
    return [
        OptCase("sgd", "sgd(lr=0.1)", lambda p: o.SGD(p, lr=0.1)),
        OptCase("sgd_weight_decay", "sgd(lr=0.1, weight_decay=0.05)", lambda p: o.SGD(p, lr=0.1, weight_decay=0.05)),
        OptCase("sgd_momentum", "sgd(lr=0.1, momentum=0.8)", lambda p: o.SGD(p, lr=0.1, momentum=0.8)),
        OptCase("momentum", "momentum(lr=0.05)", lambda p: o.SGD(p, lr=0.05, momentum=0.9)),
        OptCase("nesterov", "nesterov(lr=0.05, weight_decay=0.01)",
                lambda p: o.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
        OptCase("adagrad", "adagrad(lr=0.1)", lambda p: o.Adagrad(p, lr=0.1)),
        OptCase("adagrad_weight_decay", "adagrad(lr=0.1, eps=1e-6, weight_decay=0.1)",
                lambda p: o.Adagrad(p, lr=0.1, eps=1e-6, weight_decay=0.1)),
        OptCase("rmsprop", "rmsprop(lr=0.01)", lambda p: o.RMSprop(p, lr=0.01)),
        OptCase("rmsprop_momentum", "rmsprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.1)",
                lambda p: o.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.1)),
        OptCase("adadelta", "adadelta()", lambda p: o.Adadelta(p)),
        OptCase("adadelta_args", "adadelta(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)",
                lambda p: o.Adadelta(p, lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
        OptCase("adam", "adam(lr=0.01)", lambda p: o.Adam(p, lr=0.01)),
        OptCase("adam_args", "adam(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)",
                lambda p: o.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
        OptCase("adamw", "adamw(lr=0.01)", lambda p: o.AdamW(p, lr=0.01)),
        OptCase("adamw_args", "adamw(lr=0.02, weight_decay=0.2)", lambda p: o.AdamW(p, lr=0.02, weight_decay=0.2)),
        OptCase("sgd_clip_norm", "sgd(lr=0.1)", lambda p: o.SGD(p, lr=0.1), clip=0.5),
    ]


class TrainCase:
    """A whole run: `epochs` epochs over `rows` CSV rows in batches of
    `batch` (the last one smaller), no shuffling, from the same start as
    PyTorch's `torch_model` (a function of the values and a batch, giving
    the loss) with `make(params)`; every parameter and piece of state is
    compared at the end, then `nnc predict` (evaluation mode) against
    `torch_eval`."""

    def __init__(self, name, body, layers, optimizer, make, torch_loss, torch_eval, rows=10, batch=4,
                 epochs=2, features=4, classes=3):
        self.name, self.body, self.layers, self.optimizer, self.make = name, body, layers, optimizer, make
        self.torch_loss, self.torch_eval = torch_loss, torch_eval
        self.rows, self.batch, self.epochs, self.features, self.classes = rows, batch, epochs, features, classes


def check_training(nnc, case, work, rng):
    x = rng.standard_normal((case.rows, case.features)).astype(np.float32)
    y = rng.integers(0, case.classes, case.rows).astype(np.int32)
    values = {n: fill(rng, sh, k) for n, (sh, k) in case.layers.items()}
    src = "\n".join(["model t {", "  input x: f32[B, %d]" % case.features, "  input y: i32[B]"] +
                     ["  " + l for l in case.body.strip().split("\n")] + ["}", "train {",
                     "  optimizer = " + case.optimizer, "  batch = %d" % case.batch, "  epochs = 1",
                     "  shuffle = false", "}"]) + "\n"
    open(os.path.join(work, "t.nn"), "w").write(src)
    with open(os.path.join(work, "d.csv"), "w") as f:
        f.write(",".join(["x%d" % i for i in range(case.features)] + ["y"]) + "\n")
        for r in range(case.rows):
            f.write(",".join(["%.9g" % v for v in x[r]] + [str(y[r])]) + "\n")
    with open(os.path.join(work, "x.csv"), "w") as f:
        f.write(",".join(["x%d" % i for i in range(case.features)]) + "\n")
        for r in range(case.rows):
            f.write(",".join(["%.9g" % v for v in x[r]]) + "\n")
    after = train_from(nnc, work, values, case.epochs)
    predicted = run(nnc, ["predict", "t.nn", "--checkpoint", "ck.st", "--input", "x.csv", "--target", TARGET], work)

    tv = {n: torch.tensor(v.astype(np.float64)) for n, v in values.items()}
    params = [t.requires_grad_(True) for n, t in tv.items() if "running_" not in n]
    opt = case.make(params)
    tx, ty = torch.tensor(x.astype(np.float64)), torch.tensor(y.astype(np.int64))
    for _ in range(case.epochs):
        for b0 in range(0, case.rows, case.batch):
            opt.zero_grad()
            case.torch_loss(tv, tx[b0:b0 + case.batch], ty[b0:b0 + case.batch]).backward()
            opt.step()
    failures = []
    for n, t in tv.items():
        want, got = t.detach().numpy(), after[n].astype(np.float64)
        bad = np.abs(got - want) > 1e-4 * (1 + np.abs(want))
        if bad.any():
            i = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
            failures.append("%s after %d epochs: %d of %d differ; at %s nnc %.7g, PyTorch %.7g" %
                            (n, case.epochs, int(bad.sum()), bad.size, list(i), got[i], want[i]))
    with torch.no_grad():
        want = case.torch_eval(tv, tx).numpy()
    lines = predicted.strip().split("\n")
    got = np.array([[float(c) for c in l.split(",")[:want.shape[1]]] for l in lines[1:]])
    if got.shape != want.shape:
        failures.append("predict: %s values, PyTorch %s" % (got.shape, want.shape))
    elif (np.abs(got - want) > 1e-4 * (1 + np.abs(want))).any():
        i = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
        failures.append("predict (evaluation mode): at %s nnc %.7g, PyTorch %.7g" % (list(i), got[i], want[i]))
    return failures, src


def training_cases():
    o = torch.optim

    def mlp(v, x):
        h = torch.relu(x @ v["h.w"] + v["h.b"])
        return h @ v["logits.w"] + v["logits.b"]

    mlp_layers = {"h.w": ([4, 5], "normal"), "h.b": ([5], "normal"), "logits.w": ([5, 3], "normal"),
                  "logits.b": ([3], "normal")}
    mlp_body = """h = relu(dense(x, 5))
logits = dense(h, 3)
loss = softmax_cross_entropy(logits, y)
minimize loss
output logits"""

    def bn_model(v, x, training):
        h = x @ v["h.w"]
        h = F.batch_norm(h, v["n.running_mean"], v["n.running_var"], v["n.gamma"], v["n.beta"],
                         training=training, momentum=0.1, eps=1e-5)
        return torch.sigmoid(h) @ v["logits.w"]

    bn_layers = {"h.w": ([4, 6], "normal"), "n.gamma": ([6], "normal"), "n.beta": ([6], "normal"),
                 "n.running_mean": ([6], "normal"), "n.running_var": ([6], "positive"),
                 "logits.w": ([6, 3], "normal")}
    bn_body = """h = dense(x, 6, bias=false)
n = batch_norm(h)
logits = dense(sigmoid(n), 3, bias=false)
loss = softmax_cross_entropy(logits, y) + 0.01 * l2(h.w)
minimize loss
output logits"""
    def cnn(v, x):
        x = x.reshape(-1, 1, 6, 6)
        c = F.conv2d(x, v["c.w"], v["c.b"], padding=1)
        g = F.group_norm(c, 2, v["g.gamma"], v["g.beta"], eps=1e-5)
        p = F.max_pool2d(torch.tanh(g), 2)
        return torch.flatten(p, 1) @ v["logits.w"] + v["logits.b"]

    cnn_layers = {"c.w": ([4, 1, 3, 3], "normal"), "c.b": ([4], "normal"), "g.gamma": ([4], "normal"),
                  "g.beta": ([4], "normal"), "logits.w": ([36, 3], "normal"), "logits.b": ([3], "normal")}
    cnn_body = """i = reshape(x, [B, 1, 6, 6])
c = conv2d(i, 4, kernel=3, padding=1)
g = group_norm(c, 2)
p = max_pool2d(tanh(g), 2)
logits = dense(flatten(p), 3)
loss = softmax_cross_entropy(logits, y)
minimize loss
output logits"""
    return [
        TrainCase("train_cnn_adamw", cnn_body, cnn_layers, "adamw(lr=0.01)", lambda p: o.AdamW(p, lr=0.01),
                  lambda v, x, y: F.cross_entropy(cnn(v, x), y), cnn, rows=9, batch=4, epochs=2, features=36),
        TrainCase("train_mlp_sgd", mlp_body, mlp_layers, "sgd(lr=0.1, momentum=0.9)",
                  lambda p: o.SGD(p, lr=0.1, momentum=0.9),
                  lambda v, x, y: F.cross_entropy(mlp(v, x), y), mlp),
        TrainCase("train_mlp_adam", mlp_body, mlp_layers, "adam(lr=0.01)", lambda p: o.Adam(p, lr=0.01),
                  lambda v, x, y: F.cross_entropy(mlp(v, x), y), mlp, rows=11, batch=3, epochs=3),
        TrainCase("train_batch_norm_rmsprop", bn_body, bn_layers, "rmsprop(lr=0.01)", lambda p: o.RMSprop(p, lr=0.01),
                  lambda v, x, y: F.cross_entropy(bn_model(v, x, True), y) + 0.01 * 0.5 * (v["h.w"] ** 2).sum(),
                  lambda v, x: bn_model(v, x, False)),
    ]


def gradcheck_graph(nnc, case, work, rng):
    """A random shape's or graph's gradients from `nnc gradcheck --target GRADCHECK`
    (finite differences of nnc's double-precision evaluator) instead of
    PyTorch: for backends that run without their device (cuda-host)."""
    values = {n: fill(rng, s, k) for n, (s, k) in {**case.params, **case.layers}.items()}
    tv = {n: torch.tensor(v.astype(np.float64)) for n, v in values.items()}
    r = case.torch_fn(dict(tv))
    rshape = list(r.shape) if r.dim() > 0 else [1]
    init = {"normal": "normal(mean=0, std=1)", "positive": "uniform(low=0.5, high=2)"}
    lines = ["model t {"]
    for n, (shape, kind) in case.params.items():
        dims = ", ".join(map(str, shape))
        if case.batched and n == "x":
            lines.append("  input x: f32[B, %s]" % ", ".join(map(str, shape[1:])))
            rshape = [1] + rshape[1:]
        else:
            lines.append("  param %s: f32[%s] = %s" % (n, dims, init[kind]))
    lines.append("  param c: f32[%s] = normal(mean=0, std=1)" % ", ".join(map(str, rshape)))
    lines += ["  " + l for l in case.expr.strip().split("\n")]
    lines += ["  loss = sum(r * c)", "  minimize loss", "}"]
    src = "\n".join(lines) + "\n"
    open(os.path.join(work, "t.nn"), "w").write(src)
    batch = case.params["x"][0][0]
    p = subprocess.run([nnc, "gradcheck", "t.nn", "--target", GRADCHECK, "--samples", "8", "--batch", str(batch),
                        "--tolerance", "1e-2"], cwd=work, capture_output=True, text=True)
    if p.returncode == 0:
        return [], src
    return [l.strip() for l in (p.stdout + p.stderr).splitlines() if "FAILED" in l or "error" in l], src


def run_case(nnc, case, seed, keep):
    """One case in a directory of its own, with random numbers of its own
    (drawn from the seed and the case's name, so that a filtered or parallel
    run sees the same values): its report line(s) and whether it failed."""
    rng = np.random.default_rng([seed, zlib.crc32(case.name.encode())])
    work = os.path.join(keep, case.name) if keep else tempfile.mkdtemp(prefix="nnc-peer-")
    os.makedirs(work, exist_ok=True)
    try:
        checker = {OptCase: check_optimizer, TrainCase: check_training}.get(type(case), check)
        if GRADCHECK:
            checker = gradcheck_graph
        failures, src = checker(nnc, case, work, rng)
    except Exception as e:  # a failed run is a failed case
        failures, src = [str(e)], ""
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if not failures:
        return "ok   %s" % case.name, False
    text = "FAIL %s\n  %s" % (case.name, "\n  ".join(failures))
    if src:
        text += "\n  model:\n    " + src.replace("\n", "\n    ")
    return text, True


def main():
    global TARGET, GRADCHECK
    ap = argparse.ArgumentParser()
    ap.add_argument("nnc")
    ap.add_argument("--filter", default="")
    ap.add_argument("--keep", help="keep each case's files in this directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", default="cpu", help="nnc's backend: cpu or cuda")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once")
    ap.add_argument("--shapes", type=int, default=16,
                    help="random shapes per family (convolutions; pooling and normalizations; half as many products "
                         "and reductions)")
    ap.add_argument("--graphs", type=int, default=16, help="random small graphs of several ops")
    ap.add_argument("--gradcheck", metavar="TARGET",
                    help="only the random shapes and graphs, each checked by `nnc gradcheck --target TARGET` against "
                         "finite differences instead of PyTorch (cuda-host: the CUDA kernels without a GPU)")
    a = ap.parse_args()
    TARGET, GRADCHECK = a.target, a.gradcheck
    nnc = os.path.abspath(a.nnc)
    every = cases() + shape_cases(a.shapes, a.seed) + graph_cases(a.graphs, a.seed) + optimizer_cases() + \
        training_cases()
    if GRADCHECK:
        every = shape_cases(a.shapes, a.seed) + graph_cases(a.graphs, a.seed)
    selected = [c for c in every if re.search(a.filter, c.name)]
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = pool.map(lambda c: run_case(nnc, c, a.seed, a.keep), selected)
        failed = 0
        for text, bad in results:  # in the cases' order, each as it is done
            failed += bad
            print(text, flush=True)
    print("%d of %d cases match %s (%s)" % (len(selected) - failed, len(selected),
                                            "finite differences" if GRADCHECK else "PyTorch", GRADCHECK or TARGET))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
