"""Inference libraries (`nnc build --lib`) against PyTorch's
torch.jit.optimize_for_inference, side by side in one run, on the same
weights and inputs: the MNIST CNN at batch 1 and 64, and torchvision's
ResNet-18 at 224x224, batch 1. Prints the CPU model, each time, the ratio
(PyTorch / nnc) and the largest difference of the outputs.

    OMP_NUM_THREADS=1 /usr/bin/python3 benchmarks/deploy.py [NNC]
"""
import json, os, struct, subprocess, sys, tempfile, time

import numpy as np
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NNC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/tools/nnc/nnc")
threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
torch.set_num_threads(threads)


def save(path, tensors):
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        blobs.append(a.tobytes())
        at += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Cnn(torch.nn.Module):  # examples/mnist_cnn.nn
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 32, 5, padding=2)
        self.bn = torch.nn.BatchNorm2d(32)
        self.fc = torch.nn.Linear(32 * 14 * 14, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


def cnn_weights(m):
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.1, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
    g = lambda t: t.detach().numpy()
    return {"c.w": g(m.conv.weight), "c.b": g(m.conv.bias), "c.gamma": g(m.bn.weight), "c.beta": g(m.bn.bias),
            "c.running_mean": g(m.bn.running_mean), "c.running_var": g(m.bn.running_var),
            "logits.w": g(m.fc.weight).T, "logits.b": g(m.fc.bias)}


def peer_ms(model, x, reps):
    with torch.no_grad():
        try:
            fast = torch.jit.optimize_for_inference(torch.jit.script(model.eval()))
        except Exception:
            fast = model.eval()
        for _ in range(3):
            fast(x)
        best = 1e30
        for _ in range(reps):
            t = time.perf_counter()
            y = fast(x)
            best = min(best, time.perf_counter() - t)
    return best * 1e3, y.numpy()


def nnc_ms(work, model_file, weights, x, reps, name):
    # Run before the peer's work on each workload, and after a pause: the
    # peer's worker threads spin for a while after their last region and
    # would take the cores from the library's.
    time.sleep(1)
    lib = os.path.join(work, "lib" + name)
    subprocess.run([NNC, "build", model_file, "--lib", "-o", lib], check=True, stdout=subprocess.DEVNULL)
    os.replace(lib + ".h", os.path.join(work, "model.h"))
    exe = os.path.join(work, "bench_" + name)
    subprocess.run(["cc", "-O2", "-I", work, os.path.join(ROOT, "benchmarks/deploy_bench.c"), lib + ".so",
                    "-Wl,-rpath," + work, "-o", exe], check=True)
    xin, yout = os.path.join(work, "x.bin"), os.path.join(work, "y.bin")
    x.numpy().astype(np.float32).tofile(xin)
    r = subprocess.run([exe, weights, str(x.shape[0]), str(reps), xin, yout], check=True, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return float(r.stdout), np.fromfile(yout, dtype=np.float32)


def main():
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    print("cpu: %s, %d thread(s)" % (cpu, threads))
    print("%-22s %10s %10s %8s %12s" % ("workload", "nnc ms", "torch ms", "ratio", "max |diff|"))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        cnn = Cnn()
        w = os.path.join(work, "cnn.safetensors")
        save(w, cnn_weights(cnn))
        rows = []
        for batch, reps in ((1, 200), (64, 30)):
            x = torch.rand(batch, 1, 28, 28)
            t_nnc, y_nnc = nnc_ms(work, os.path.join(ROOT, "examples/mnist_cnn.nn"), w, x, reps, "cnn")
            t_peer, y_peer = peer_ms(cnn, x, reps)
            rows.append(("mnist_cnn batch %d" % batch, t_nnc, t_peer, float(np.abs(y_nnc - y_peer.ravel()).max())))
        net = torchvision.models.resnet18()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        w = os.path.join(work, "resnet18.safetensors")
        save(w, {k: v.numpy() for k, v in net.state_dict().items() if v.dtype == torch.float32})
        x = torch.rand(1, 3, 224, 224)
        t_nnc, y_nnc = nnc_ms(work, os.path.join(ROOT, "examples/resnet18.nn"), w, x, 10, "resnet18")
        t_peer, y_peer = peer_ms(net, x, 10)
        rows.append(("resnet18_224 batch 1", t_nnc, t_peer, float(np.abs(y_nnc - y_peer.ravel()).max())))
        for name, a, b, d in rows:
            print("%-22s %10.3f %10.3f %7.2fx %12.2g" % (name, a, b, b / a, d))


main()
