"""nnc's schedules, transforms and image decoding against PyTorch's and
torchvision's, through the command line.

- Every learning-rate schedule gives torch.optim.lr_scheduler's rate each
  epoch (`nnc train --metrics`, JSON lines), and a scheduled SGD run with
  momentum ends at the weights PyTorch reaches (`--init-from`, `nnc export`).
- Each transform's output (`nnc data`) is torchvision's functional transform
  of the same sample for some parameter in the transform's range: crops
  with padding, flips, translations, rotations, brightness, contrast and
  saturation; normalization exactly; noise with the stated deviation.
- PNG and JPEG files decode as PIL decodes them, and images of another size
  are resized as torchvision's bilinear Resize (without antialiasing).

    /usr/bin/python3 tests/peer/check_data.py NNC

Exits 0 when everything matches, 1 when something does not, 77 when PyTorch,
torchvision, NumPy or PIL is not installed.
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
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode
    from PIL import Image
except ImportError as e:
    print("check_data.py: PyTorch, torchvision, NumPy or PIL is not installed (%s): skipped" % e)
    sys.exit(77)

NNC = sys.argv[1]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(*args):
    r = subprocess.run([NNC] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("nnc %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


def save_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        blobs.append(a.tobytes())
        at += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, d in header.items():
        if name == "__metadata__":
            continue
        lo, hi = d["data_offsets"]
        out[name] = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=np.float32).reshape(d["shape"])
    return out


XOR = """
model xor {
  input x: f32[B, 2]
  input t: f32[B, 1]
  h = tanh(dense(x, 4))
  p = sigmoid(dense(h, 1))
  loss = binary_cross_entropy(p, t)
  output p
  minimize loss
}
train {
  optimizer = sgd(lr=0.5, momentum=0.9)
  batch = 4
  shuffle = false
}
"""

SCHEDULES = [
    ("step(step_size=3, gamma=0.5)", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    ("multistep(milestones=[2, 5, 7], gamma=0.3)",
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 7], gamma=0.3)),
    ("exponential(gamma=0.8)", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    ("cosine(t_max=6, eta_min=0.01)", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.01)),
    ("linear(start_factor=0.25, end_factor=1, total_iters=4)",
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4)),
]
ONECYCLE = [
    ("onecycle(max_lr=1.0)", {}),
    ("onecycle(max_lr=0.8, pct_start=0.25, anneal_strategy=\"linear\", div_factor=10, final_div_factor=100)",
     dict(pct_start=0.25, anneal_strategy="linear", div_factor=10, final_div_factor=100)),
    ("onecycle(max_lr=0.6, three_phase=true)", dict(three_phase=True)),
]


def schedules(work):
    model = os.path.join(work, "xor.nn")
    open(model, "w").write(XOR)
    data = os.path.join(work, "xor.csv")
    open(data, "w").write("x1,x2,t\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    epochs = 10

    def lrs(spec, batch=4):
        metrics = os.path.join(work, "m.jsonl")
        run("train", model, "--target=cpu", "--data", data, "--epochs", str(epochs), "--batch", str(batch),
            "--schedule", spec, "--metrics", metrics, "--quiet")
        rows = [json.loads(l) for l in open(metrics)][1:]
        return [r["lr"] for r in rows]

    for spec, make in SCHEDULES:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        sched = make(opt)
        want = []
        for _ in range(epochs):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        got = lrs(spec)
        check(np.allclose(got, want, rtol=1e-5, atol=1e-9), "schedule %s: %s" % (spec, np.round(got, 6).tolist()))
    # OneCycleLR steps every batch: with batch 1, 4 steps an epoch; the rate
    # logged is the epoch's last step's.
    for spec, kwargs in ONECYCLE:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5, momentum=0.9)
        max_lr = float(spec.split("max_lr=")[1].split(",")[0].rstrip(")"))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * 4, cycle_momentum=False,
                                                    **kwargs)
        per_step = []
        for _ in range(epochs * 4):
            per_step.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        want = [per_step[e * 4 + 3] for e in range(epochs)]
        got = lrs(spec, batch=1)
        check(np.allclose(got, want, rtol=1e-5, atol=1e-9), "schedule %s" % spec)

    # A scheduled run ends where PyTorch's does: same start (--init-from),
    # one full batch a step (the order within it does not matter).
    torch.manual_seed(0)

    class Xor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.h = torch.nn.Linear(2, 4)
            self.p = torch.nn.Linear(4, 1)

        def forward(self, x):
            return torch.sigmoid(self.p(torch.tanh(self.h(x))))

    net = Xor()
    start = os.path.join(work, "start.safetensors")
    save_safetensors(start, {k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)
    t = torch.tensor([[0], [1], [1], [0]], dtype=torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(net(x), t).backward()
        opt.step()
        sched.step()
    ckpt = os.path.join(work, "end.safetensors")
    run("train", model, "--target=cpu", "--data", data, "--epochs", str(epochs), "--schedule",
        "cosine(t_max=5, eta_min=0.05)", "--init-from", start, "--checkpoint", ckpt, "--quiet")
    out = os.path.join(work, "end_pt.safetensors")
    run("export", model, "--checkpoint", ckpt, "-o", out)
    got = load_safetensors(out)
    worst = max(float(np.max(np.abs(got[k] - v.detach().numpy()) / (np.abs(v.detach().numpy()) + 1e-3)))
                for k, v in net.state_dict().items())
    check(worst < 1e-4, "scheduled SGD run against PyTorch's weights (worst relative error %.2g)" % worst)


TINY = """
model tiny {
  input x: f32[B, 3, 32, 32]
  input y: i32[B]
  logits = dense(flatten(adaptive_avg_pool2d(x, 1)), 10)
  loss = softmax_cross_entropy(logits, y)
  output logits
  minimize loss
}
train {
  optimizer = sgd(lr=0.1)
  data = cifar10("cifar")
  seed = 5
  transform = [%s]
}
"""


def samples(work, transform, count=24, epoch=1):
    path = os.path.join(work, "tiny.nn")
    open(path, "w").write(TINY % transform)
    out = os.path.join(work, "s.npz")
    run("data", path, "-o", out, "--count", str(count), "--epoch", str(epoch))
    return np.load(out)["x.npy" if "x.npy" in np.load(out).files else "x"]


def transforms(work):
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(work, "cifar"))
    # Smooth images (so that rotations and resizes are not all ties), as
    # CIFAR-10's binary release stores them.
    records = []
    yy, xx = np.mgrid[0:32, 0:32]
    images = []
    for i in range(24):
        img = np.stack([(127 + 120 * np.sin(xx / (3 + c + i % 4) + yy / (5 + i % 3) + c)) for c in range(3)])
        img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
        images.append(img)
        records.append(bytes([i % 10]) + img.tobytes())
    for name in ["data_batch_%d.bin" % k for k in range(1, 6)] + ["test_batch.bin"]:
        open(os.path.join(work, "cifar", name), "wb").write(b"".join(records))
    x0 = [torch.tensor(img, dtype=torch.float32) / 255 for img in images]

    out = samples(work, "normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.243, 0.261])")
    want = np.stack([F.normalize(x, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]).numpy() for x in x0])
    check(np.allclose(out, want, atol=1e-6), "normalize is F.normalize")

    out = samples(work, "hflip()")
    kinds = [(np.array_equal(o, F.hflip(x).numpy()), np.array_equal(o, x.numpy())) for o, x in zip(out, x0)]
    check(all(a or b for a, b in kinds) and any(a for a, _ in kinds) and any(b for _, b in kinds),
          "hflip is F.hflip or the identity, both drawn (%d of 24 flipped)" % sum(a for a, _ in kinds))
    out = samples(work, "vflip(p=1)")
    check(all(np.array_equal(o, F.vflip(x).numpy()) for o, x in zip(out, x0)), "vflip(p=1) is F.vflip")

    out = samples(work, "random_crop(32, padding=4)")
    found = []
    for o, x in zip(out, x0):
        padded = F.pad(x, 4)
        hits = [(t, l) for t in range(9) for l in range(9)
                if np.array_equal(o, F.crop(padded, t, l, 32, 32).numpy())]
        found.append(hits[0] if hits else None)
    check(all(f is not None for f in found) and len(set(found)) > 5,
          "random_crop is F.crop of F.pad at some offset in range (%d distinct offsets)" % len(set(found)))

    out = samples(work, "translate(x=0.125)")
    ok = True
    for o, x in zip(out, x0):
        hits = [(dx, dy) for dx in range(-4, 5) for dy in range(-4, 5)
                if np.array_equal(o, F.affine(x, angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0],
                                              interpolation=InterpolationMode.NEAREST).numpy())]
        ok &= bool(hits)
    check(ok, "translate is F.affine by whole pixels within the range")

    out = samples(work, "rotate(30)")
    worst = 1.0
    for o, x in zip(out, x0):
        def match(a):
            return np.mean(o == F.rotate(x, float(a), interpolation=InterpolationMode.NEAREST).numpy())
        coarse = max(np.arange(-30, 30.01, 0.1), key=match)  # then finer around the best
        best = max(match(a) for a in np.arange(coarse - 0.1, coarse + 0.1, 0.002))
        worst = min(worst, best)
    check(worst >= 0.99, "rotate is F.rotate (nearest) by an angle in range: worst sample %.4f of pixels equal" % worst)

    for name, fn, lo, hi in [("brightness", F.adjust_brightness, 0.6, 1.4), ("contrast", F.adjust_contrast, 0.6, 1.4),
                             ("saturation", F.adjust_saturation, 0.6, 1.4)]:
        out = samples(work, "color_jitter(%s=0.4)" % name, count=8)
        worst = 0.0
        for o, x in zip(out, x0):
            err = min(float(np.max(np.abs(o - fn(x, f).numpy()))) for f in np.arange(lo, hi, 0.0005))
            worst = max(worst, err)
        check(worst < 2e-3, "color_jitter(%s) is F.adjust_%s by a factor in range (worst %.2g)" % (name, name, worst))

    out = samples(work, "noise(std=0.1)")
    d = out - np.stack([x.numpy() for x in x0])
    check(abs(d.std() - 0.1) < 0.005 and abs(d.mean()) < 0.005, "noise: mean %.4f, std %.4f" % (d.mean(), d.std()))


IMAGES = """
model pics {
  input x: f32[B, 3, %d, %d]
  input y: i32[B]
  logits = dense(flatten(adaptive_avg_pool2d(x, 1)), 2)
  loss = softmax_cross_entropy(logits, y)
  output logits
  minimize loss
}
train {
  optimizer = sgd(lr=0.1)
  data = images("pics")
}
"""


def decoding(work):
    rng = np.random.default_rng(1)
    root = os.path.join(work, "pics")
    pil = {}
    for label in ("a", "b"):
        os.makedirs(os.path.join(root, label))
        for i, ext in enumerate(("png", "jpg")):
            yy, xx = np.mgrid[0:20, 0:24]
            img = np.stack([127 + 100 * np.sin(xx / (4 + c) + yy / 6.0 + i) for c in range(3)], axis=-1)
            img = np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
            path = os.path.join(root, label, "%d.%s" % (i, ext))
            Image.fromarray(img).save(path, quality=90) if ext == "jpg" else Image.fromarray(img).save(path)
            pil[(label, i)] = F.to_tensor(Image.open(path).convert("RGB"))
    order = [pil[("a", 0)], pil[("a", 1)], pil[("b", 0)], pil[("b", 1)]]
    for h, w, what in ((20, 24, "as stored"), (12, 16, "resized")):
        path = os.path.join(work, "pics.nn")
        open(path, "w").write(IMAGES % (h, w))
        out = os.path.join(work, "p.npz")
        run("data", path, "-o", out, "--count", "4")
        got = np.load(out)
        x = got[[k for k in got.files if k.startswith("x")][0]]
        y = got[[k for k in got.files if k.startswith("y")][0]]
        want = np.stack([o.numpy() if what == "as stored" else
                         F.resize(o * 255, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=False)
                         .round().clamp(0, 255).numpy() / 255 for o in order])
        err = float(np.max(np.abs(x - want)))
        check(err <= 1.01 / 255 and list(y) == [0, 0, 1, 1],
              "PNG and JPEG %s: PIL's pixels (worst %.1f/255), labels by folder" % (what, err * 255))


def main():
    with tempfile.TemporaryDirectory() as work:
        schedules(work)
        transforms(work)
        decoding(work)
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("all checks passed")


main()
