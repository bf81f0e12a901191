"""`nnc export --format onnx` through ONNX's own checker, and the exported
graph evaluated node by node with PyTorch's functional ops (ONNX's
semantics for each op type) against `nnc predict` on the same checkpoint
and inputs: every example that trains (examples/*.nn with a loss; the one
without, the perceptron with written-out weights, has nothing to export
from a checkpoint), and two small models for what the examples leave out
(`step`, an even local-response window).

    /usr/bin/python3 tests/peer/check_onnx.py NNC

Exits 0 when every model matches within 1e-4 relative, 1 otherwise, 77
without PyTorch, NumPy or the onnx package.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import onnx
    import onnx.numpy_helper
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print("check_onnx.py: PyTorch, NumPy or onnx is not installed (%s): skipped" % e)
    sys.exit(77)

NNC = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = [  # (example, input name and shape after the batch axis, target name and labels or width)
    ("xor_mlp.nn", ("x", (2,)), ("t", 1)),
    ("backprop_222.nn", ("i", (2,)), ("target", 2)),
    ("mnist_mlp.nn", ("x", (784,)), ("y", 10)),
    ("mnist_sigmoid.nn", ("x", (784,)), ("y", 10)),
    ("mnist_autoencoder.nn", ("x", (784,)), (None, 0)),
    ("weight_norm.nn", ("x", (784,)), ("y", 10)),
    ("mnist_cnn.nn", ("x", (1, 28, 28)), ("y", 10)),
    ("lenet5.nn", ("x", (1, 28, 28)), ("y", 10)),
    ("vgg_small.nn", ("x", (3, 32, 32)), ("y", 10)),
    ("cifar10_cnn.nn", ("x", (3, 32, 32)), ("y", 10)),
    ("resnet18_cifar.nn", ("x", (3, 32, 32)), ("y", 10)),
    ("resnet18.nn", ("x", (3, 224, 224)), ("y", 1000)),
    ("step.nn", ("x", (3,)), ("t", 2)),
    ("lrn_even.nn", ("x", (6, 4, 4)), ("y", 3)),
]
INLINE = {  # what no example has
    "step.nn": """model step_out {
  input x: f32[B, 3]
  input t: f32[B, 2]
  h = dense(x, 2)
  o = step(h) + sigmoid(h)
  loss = mse(sigmoid(h), t)
  output o
  minimize loss
}""",
    "lrn_even.nn": """model lrn_even {
  input x: f32[B, 6, 4, 4]
  input y: i32[B]
  n = local_response_norm(conv2d(x, 6, kernel=1), size=4, alpha=0.5, beta=0.75, k=1.0)
  logits = dense(flatten(n), 3)
  loss = softmax_cross_entropy(logits, y)
  output logits
  minimize loss
}""",
}


def evaluate(model, feeds):
    """The graph's outputs, each node computed as ONNX defines its op."""
    env = {t.name: torch.tensor(onnx.numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    env.update({k: torch.tensor(v) for k, v in feeds.items()})
    for n in model.graph.node:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        i = [env[x] for x in n.input]
        t = n.op_type
        binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
                  "MatMul": torch.matmul}
        unary = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
                 "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Neg": torch.neg,
                 "Softplus": F.softplus, "Identity": lambda x: x}
        if t in binary:
            y = binary[t](i[0], i[1])
        elif t in unary:
            y = unary[t](i[0])
        elif t == "LeakyRelu":
            y = F.leaky_relu(i[0], a["alpha"])
        elif t in ("Softmax", "LogSoftmax"):
            y = (F.softmax if t == "Softmax" else F.log_softmax)(i[0], dim=a["axis"])
        elif t == "Reshape":
            shape = [int(d) for d in i[1]]  # 0 copies the input's size
            y = i[0].reshape([i[0].shape[k] if d == 0 else d for k, d in enumerate(shape)])
        elif t == "Transpose":
            y = i[0].permute(*a["perm"])
        elif t == "Concat":
            y = torch.cat(i, dim=a["axis"])
        elif t == "Conv":
            p = a.get("pads", [0, 0, 0, 0])
            assert p[0] == p[2] and p[1] == p[3]
            y = F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, stride=a.get("strides", [1, 1]), padding=p[:2],
                         groups=a.get("group", 1))
        elif t == "MaxPool":
            y = F.max_pool2d(i[0], a["kernel_shape"], a["strides"], a["pads"][:2])
        elif t == "AveragePool":
            y = F.avg_pool2d(i[0], a["kernel_shape"], a["strides"], a["pads"][:2],
                             count_include_pad=bool(a.get("count_include_pad", 0)))
        elif t == "BatchNormalization":
            y = F.batch_norm(i[0], i[3], i[4], i[1], i[2], training=False, eps=a["epsilon"])
        elif t == "Greater":
            y = i[0] > i[1]
        elif t == "Cast":
            assert a["to"] == onnx.TensorProto.FLOAT
            y = i[0].to(torch.float32)
        elif t == "InstanceNormalization":
            y = F.instance_norm(i[0], weight=i[1], bias=i[2], eps=a["epsilon"])
        elif t == "LRN":
            y = F.local_response_norm(i[0], a["size"], alpha=a["alpha"], beta=a["beta"], k=a["bias"])
        elif t in ("ReduceSum", "ReduceMean", "ReduceMax"):
            axes = [int(x) for x in i[1]] if t == "ReduceSum" else a["axes"]
            keep = bool(a.get("keepdims", 1))
            y = i[0]
            for ax in sorted(axes, reverse=True):
                y = y.sum(ax, keepdim=keep) if t == "ReduceSum" else y.mean(ax, keepdim=keep) if t == "ReduceMean" \
                    else y.amax(ax, keepdim=keep)
        else:
            raise RuntimeError("no evaluator for " + t)
        env[n.output[0]] = y
    return [env[o.name].numpy() for o in model.graph.output]


def run(*args):
    r = subprocess.run([NNC] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("nnc %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


def main():
    failures = 0
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as work:
        for example, (xname, shape), (target, width) in MODELS:
            path = os.path.join(ROOT, "examples", example)
            if example in INLINE:
                path = os.path.join(work, example)
                with open(path, "w") as f:
                    f.write(INLINE[example])
            n = 1 if example == "resnet18.nn" else 4  # one row is enough at 224x224
            x = rng.random((n,) + shape, dtype=np.float32)
            data = os.path.join(work, "d.npz")
            arrays = {xname: x}
            if target in ("t", "target"):
                arrays[target] = rng.integers(0, 2, (n, width)).astype(np.float32)
            elif target:
                arrays[target] = rng.integers(0, width, (n,)).astype(np.int64)
            np.savez(data, **arrays)
            ckpt = os.path.join(work, "c.safetensors")
            # One step (the weights are the initializer's, moved a little).
            run("train", path, "--target=cpu", "--data", data, "--epochs", "1", "--batch", str(min(n, 2)), "--lr", "0.01",
                "--checkpoint", ckpt, "--quiet")
            out = os.path.join(work, "m.onnx")
            run("export", path, "--checkpoint", ckpt, "-o", out)
            model = onnx.load(out)
            onnx.checker.check_model(model, full_check=True)
            rows = os.path.join(work, "rows.csv")
            np.savetxt(rows, x.reshape(n, -1), delimiter=",", fmt="%.9g")
            text = run("predict", path, "--checkpoint", ckpt, "--input", rows).splitlines()
            want = np.array([[float(v) for v in line.split(",")[:-1 if text[0].endswith(",class") else None]]
                             for line in text[1:]], dtype=np.float32)
            # `nnc predict` prints every output, side by side.
            got = np.concatenate([o.reshape(n, -1) for o in evaluate(model, {xname: x})], axis=1)
            err = float(np.max(np.abs(got - want) / (np.abs(want) + 1e-3)))
            ok = err < 1e-4
            failures += not ok
            print("%s  %-20s %3d nodes, checker ok, outputs within %.2g relative of nnc predict" %
                  ("ok  " if ok else "FAIL", example, len(model.graph.node), err))
    if failures:
        sys.exit(1)
    print("all models match")


main()
