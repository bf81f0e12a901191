"""torchvision's ResNet-18 against nnc's examples/resnet18*.nn, through the
command line: weights in (`--init-from`), evaluation outputs, one training
step, weights out (`nnc export`).

- torchvision's resnet18 with random weights (and random batch-norm running
  statistics), saved as safetensors with the I64 `num_batches_tracked`
  counters: `nnc predict --init-from` on examples/resnet18.nn gives the
  evaluation-mode outputs of PyTorch within 1e-4 relative.
- The CIFAR variant (3x3 stem, no max pool, 10 classes): one step of SGD
  with momentum and weight decay from the same weights
  (`nnc train --init-from`, examples/resnet18_cifar.nn's train section)
  gives PyTorch's updated weights and running statistics.
- `nnc export` of that checkpoint loads into torchvision's model with
  load_state_dict (only `num_batches_tracked` missing) and computes what
  `nnc predict` computes.
- torchvision's Bottleneck block (ResNet-50's) written as a block gives
  PyTorch's evaluation-mode outputs.
- Training the classifier alone (`--freeze` of everything else) leaves the
  held tensors bit-identical and updates the classifier as PyTorch does with
  the backbone's parameters not requiring gradients and its batch norms in
  eval() mode.

    /usr/bin/python3 tests/peer/check_resnet.py NNC

Exits 0 when everything matches, 1 when something does not, 77 when PyTorch
or torchvision is not installed.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torchvision
except ImportError as e:
    print("check_resnet.py: PyTorch, torchvision or NumPy is not installed (%s): skipped" % e)
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}


BOTTLENECK = """
block bottleneck(x, planes, stride=1) {
  conv1 = conv2d(x, planes, kernel=1, bias=false)
  bn1 = relu(batch_norm(conv1))
  conv2 = conv2d(bn1, planes, kernel=3, stride=stride, padding=1, bias=false)
  bn2 = relu(batch_norm(conv2))
  conv3 = conv2d(bn2, planes * 4, kernel=1, bias=false)
  bn3 = batch_norm(conv3)
  shortcut = batch_norm(conv2d(x, planes * 4, kernel=1, stride=stride, bias=false, name="downsample.0"),
                        name="downsample.1")
  return relu(bn3 + shortcut)
}
model bneck {
  input x: f32[B, 8, 9, 9]
  out = flatten(bottleneck(x, 4, stride=2, name="block"))
  loss = mean(out * out)
  output out
  minimize loss
}
train {
  optimizer = sgd(lr=0.1)
}
"""


def save_safetensors(path, tensors):
    """A plain safetensors file, as safetensors.torch.save_file writes it."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        dt = {"F32": np.float32, "I32": np.int32, "I64": np.int64}[h["dtype"]]
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(h["shape"]).copy()
    return out


def state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def randomize(model, gen):
    """Random weights, and running statistics away from 0 and 1 (so that
    evaluation mode uses them visibly)."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("bn1.weight") or name.endswith("bn2.weight") or ".1.weight" in name:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.dtype == torch.float32 and name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)


def run(nnc, args, cwd):
    p = subprocess.run([nnc] + args, cwd=cwd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        raise RuntimeError("nnc %s failed (%d):\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p.stdout


def write_csv(path, x, y=None):
    with open(path, "w") as f:
        cols = ["x%d" % i for i in range(x[0].size)] + (["y"] if y is not None else [])
        f.write(",".join(cols) + "\n")
        for r in range(len(x)):
            row = ["%.9g" % v for v in x[r].ravel()] + ([str(int(y[r]))] if y is not None else [])
            f.write(",".join(row) + "\n")


def predictions(text, classes):
    rows = text.strip().split("\n")[1:]
    return np.array([[float(v) for v in r.split(",")[:classes]] for r in rows])


def close(name, got, want, rel, failures):
    """Within `rel` of the outputs' scale (their largest magnitude)."""
    err = np.max(np.abs(got - want)) / max(1e-30, float(np.max(np.abs(want))))
    print("%s %s: max error %.2e of the largest output" % ("ok  " if err <= rel else "FAIL", name, err))
    if err > rel:
        failures.append(name)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    nnc = os.path.abspath(sys.argv[1])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    failures = []
    with tempfile.TemporaryDirectory() as work:
        # 1. Evaluation outputs of the full ResNet-18 at 224x224.
        model = torchvision.models.resnet18()
        randomize(model, gen)
        model.eval()
        save_safetensors(os.path.join(work, "r18.st"), state_dict(model))
        x = torch.randn(2, 3, 224, 224, generator=gen)
        with torch.no_grad():
            want = model(x).numpy()
        write_csv(os.path.join(work, "x.csv"), x.numpy())
        out = run(nnc, ["predict", os.path.join(ROOT, "examples/resnet18.nn"), "--init-from", "r18.st", "--strict",
                        "--input", "x.csv", "--target", "cpu"], work)
        report = out[:out.index("fc[0]")] if "fc[0]" in out else out
        if "102 tensors loaded, 0 missing, 0 unexpected, 0 with another shape" not in report:
            failures.append("init-from report")
            print("FAIL init-from report:\n" + report)
        close("resnet18 eval outputs", predictions(out[out.index("fc[0]"):], 1000), want, 1e-4, failures)

        # 2. One training step of the CIFAR variant from the same weights.
        cifar = torchvision.models.resnet18(num_classes=10)
        cifar.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cifar.maxpool = torch.nn.Identity()
        randomize(cifar, gen)
        start = state_dict(cifar)
        save_safetensors(os.path.join(work, "c.st"), start)
        xb = torch.randn(4, 3, 32, 32, generator=gen)
        yb = torch.randint(0, 10, (4,), generator=gen)
        write_csv(os.path.join(work, "d.csv"), xb.numpy(), yb.numpy())
        cifar.train()
        opt = torch.optim.SGD(cifar.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        loss = torch.nn.functional.cross_entropy(cifar(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after = state_dict(cifar)
        run(nnc, ["train", os.path.join(ROOT, "examples/resnet18_cifar.nn"), "--init-from", "c.st", "--strict",
                  "--data", "d.csv", "--batch", "4", "--epochs", "1", "--checkpoint", "ck.st", "--target", "cpu"],
            work)
        run(nnc, ["export", os.path.join(ROOT, "examples/resnet18_cifar.nn"), "--checkpoint", "ck.st",
                  "-o", "exported.st"], work)
        exported = load_safetensors(os.path.join(work, "exported.st"))
        worst = (0.0, "")
        for k, v in after.items():
            if k.endswith("num_batches_tracked"):
                continue
            if k not in exported:
                failures.append("export lacks " + k)
                continue
            step = np.abs(v - start[k]).max() + 1e-6
            err = np.abs(exported[k] - v).max() / step
            if os.environ.get("VERBOSE"):
                print(k, err, np.abs(exported[k] - v).max(), step, np.abs(v).max())
            worst = max(worst, (err, k))
        print("%s one SGD step: largest weight error %.2e of the step's size (%s)" %
              ("ok  " if worst[0] < 1e-2 else "FAIL", worst[0], worst[1]))
        if worst[0] >= 1e-2:
            failures.append("training step")

        # 3. The export loads into torchvision's model and computes what nnc does.
        fresh = torchvision.models.resnet18(num_classes=10)
        fresh.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        fresh.maxpool = torch.nn.Identity()
        result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
        if result.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in result.missing_keys):
            failures.append("export keys")
            print("FAIL export keys: %s" % (result,))
        fresh.eval()
        xt = torch.randn(3, 3, 32, 32, generator=gen)
        with torch.no_grad():
            want = fresh(xt).numpy()
        write_csv(os.path.join(work, "xt.csv"), xt.numpy())
        out = run(nnc, ["predict", os.path.join(ROOT, "examples/resnet18_cifar.nn"), "--checkpoint", "ck.st",
                        "--input", "xt.csv", "--target", "cpu"], work)
        close("exported weights in torchvision", predictions(out, 10), want, 1e-4, failures)

        # 4. Fine-tuning the classifier alone: everything else held (`--freeze`,
        # batch norms on their running statistics, as in eval()), bit-identical
        # after training; the classifier's step matches PyTorch's.
        tune = torchvision.models.resnet18(num_classes=10)
        tune.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        tune.maxpool = torch.nn.Identity()
        tune.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
        tune.train()
        for name, module in tune.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        for name, p in tune.named_parameters():
            p.requires_grad = name.startswith("fc.")
        opt = torch.optim.SGD([p for p in tune.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                              weight_decay=5e-4)
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(tune(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        tuned = state_dict(tune)
        run(nnc, ["train", os.path.join(ROOT, "examples/resnet18_cifar.nn"), "--init-from", "c.st",
                  "--freeze", "conv1,bn1,layer1,layer2,layer3,layer4", "--data", "d.csv", "--batch", "4",
                  "--epochs", "2", "--checkpoint", "frozen.st", "--target", "cpu"], work)
        run(nnc, ["export", os.path.join(ROOT, "examples/resnet18_cifar.nn"), "--checkpoint", "frozen.st",
                  "-o", "frozen-exported.st"], work)
        got = load_safetensors(os.path.join(work, "frozen-exported.st"))
        changed = [k for k, v in got.items() if not k.startswith("fc.") and not np.array_equal(v, start[k])]
        print("%s frozen backbone: %d of %d tensors changed" % ("ok  " if not changed else "FAIL", len(changed),
                                                                 len(got) - 2))
        if changed:
            failures.append("frozen tensors changed: " + ", ".join(changed[:5]))
        for k in ("fc.weight", "fc.bias"):
            step = np.abs(tuned[k] - start[k]).max()
            err = np.abs(got[k] - tuned[k]).max() / step
            print("%s classifier only, %s: error %.2e of the update" % ("ok  " if err < 1e-3 else "FAIL", k, err))
            if err >= 1e-3:
                failures.append("classifier-only " + k)

        # 5. ResNet-50's bottleneck block (torchvision's, with its strided
        # projection) as a block of the language, in evaluation mode.
        from torchvision.models.resnet import Bottleneck
        down = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, stride=2, bias=False), torch.nn.BatchNorm2d(16))
        bottleneck = Bottleneck(8, 4, stride=2, downsample=down)
        randomize(bottleneck, gen)
        bottleneck.eval()
        save_safetensors(os.path.join(work, "b.st"), {"block." + k: v for k, v in state_dict(bottleneck).items()})
        open(os.path.join(work, "b.nn"), "w").write(BOTTLENECK)
        xs = torch.randn(2, 8, 9, 9, generator=gen)
        with torch.no_grad():
            want = bottleneck(xs).flatten(1).numpy()
        write_csv(os.path.join(work, "xb.csv"), xs.numpy())
        out = run(nnc, ["predict", "b.nn", "--init-from", "b.st", "--strict", "--input", "xb.csv", "--target", "cpu"],
                  work)
        close("bottleneck block", predictions(out[out.index("out[0]"):], want.shape[1]), want, 1e-5, failures)
    if failures:
        print("%d check(s) failed: %s" % (len(failures), ", ".join(failures)))
        return 1
    print("every check matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
