"""`nnc import` of models PyTorch exports (torch.onnx.export, in Debian's
python3-torch): an MLP, the MNIST CNN and torchvision's ResNet-18 (batch
norm folded into its convolutions by the export). Each imported model
predicts PyTorch's outputs within 1e-4 relative (`nnc predict --init-from`
the weights file the import writes), trains a step (`--loss` added by the
import), and nnc's own ONNX export of it imports back to the same outputs.

    /usr/bin/python3 tests/peer/check_onnx_import.py NNC

Exits 0 when everything matches, 1 otherwise, 77 without PyTorch,
torchvision or NumPy.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torchvision
except ImportError as e:
    print("check_onnx_import.py: PyTorch, torchvision or NumPy is not installed (%s): skipped" % e)
    sys.exit(77)

NNC = sys.argv[1]
failures = 0


def run(*args):
    r = subprocess.run([NNC] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("nnc %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


def predict(work, nn, weights, x):
    rows = os.path.join(work, "rows.csv")
    np.savetxt(rows, x.reshape(len(x), -1), delimiter=",", fmt="%.9g")
    out = os.path.join(work, "pred.csv")
    run("predict", nn, "--init-from", weights, "--input", rows, "-o", out)
    lines = open(out).read().splitlines()
    cut = -1 if lines[0].endswith(",class") else None
    return np.array([[float(v) for v in l.split(",")[:cut]] for l in lines[1:]], dtype=np.float32)


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 5, padding=2)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


def check(name, net, shape, work, exported_bn=False):
    global failures
    torch.manual_seed(1)
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand((3,) + shape)
    onnx_path = os.path.join(work, name + ".onnx")
    torch.onnx.export(net, x, onnx_path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "B"}, "logits": {0: "B"}}, opset_version=13)
    nn = os.path.join(work, name + ".nn")
    run("import", onnx_path, "-o", nn)
    weights = nn[:-3] + ".safetensors"
    with torch.no_grad():
        want = net(x).numpy().reshape(3, -1)
    got = predict(work, nn, weights, x.numpy())
    # Relative to the outputs' scale: logits near 0 carry the rounding of a
    # deep network's sums, not an error of the import.
    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    ok = err < 1e-4
    # It trains like any other model (the import added softmax_cross_entropy).
    data = os.path.join(work, "d.npz")
    np.savez(data, x=x.numpy(), y=np.array([1, 2, 3]))
    run("train", nn, "--target=cpu", "--init-from", weights, "--data", data, "--epochs", "1", "--batch", "3",
        "--lr", "0.01", "--quiet")
    # And nnc's export of it imports back to the same outputs.
    ckpt = os.path.join(work, name + "_ck.safetensors")
    run("train", nn, "--target=cpu", "--init-from", weights, "--data", data, "--epochs", "1", "--batch", "3",
        "--lr", "0", "--checkpoint", ckpt, "--quiet")
    again = os.path.join(work, name + "_again.onnx")
    run("export", nn, "--checkpoint", ckpt, "-o", again)
    nn2 = os.path.join(work, name + "_again.nn")
    run("import", again, "-o", nn2)
    got2 = predict(work, nn2, nn2[:-3] + ".safetensors", x.numpy())
    back = float(np.max(np.abs(got2 - got)) / np.max(np.abs(got)))
    ok = ok and back < 1e-5
    failures += not ok
    print("%s  %-10s PyTorch's outputs within %.2g relative; trains; nnc's export imports back within %.2g" %
          ("ok  " if ok else "FAIL", name, err, back))


def hostile(work):
    """Unsupported nodes (all listed), an old opset, a dynamic size beyond the
    batch axis: one clear error each."""
    try:
        import onnx
        from onnx import helper, TensorProto
    except ImportError:
        return []
    results = []

    def expect(model, words, what):
        path = os.path.join(work, "h.onnx")
        onnx.save(model, path)
        r = subprocess.run([NNC, "import", path, "-o", os.path.join(work, "h.nn")], capture_output=True, text=True)
        ok = r.returncode == 1 and all(w in r.stderr for w in words) and not os.path.exists(os.path.join(work, "h.nn"))
        print(("ok  " if ok else "FAIL") + "  %s: %s" % (what, r.stderr.strip().replace("\n", " | ")))
        results.append(ok)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])
    nodes = [helper.make_node("Erf", ["x"], ["a"], name="erf_1"), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("HardSigmoid", ["b"], ["y"], name="hs_2")]
    g = helper.make_graph(nodes, "g", [x], [y])
    expect(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]),
           ["2 node(s) nnc cannot import", "erf_1 (Erf)", "hs_2 (HardSigmoid)"], "unsupported nodes")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    expect(helper.make_model(g, opset_imports=[helper.make_opsetid("", 5)]), ["opset 5 is not supported"],
           "an old opset")
    xd = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "N"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [xd], [y])
    expect(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), ["dynamic size at axis 1"],
           "a dynamic size")
    return results


def main():
    with tempfile.TemporaryDirectory() as work:
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                                  torch.nn.Tanh(), torch.nn.Linear(16, 10))
        check("mlp", mlp, (20,), work)
        check("cnn", Cnn(), (1, 28, 28), work)
        check("resnet18", torchvision.models.resnet18(), (3, 64, 64), work)
        # Bad input: not ONNX at all.
        bad = os.path.join(work, "bad.onnx")
        open(bad, "wb").write(b"\x00\x01garbage")
        r = subprocess.run([NNC, "import", bad, "-o", os.path.join(work, "bad.nn")], capture_output=True, text=True)
        ok = r.returncode == 1 and "not an ONNX model" in r.stderr
        print(("ok  " if ok else "FAIL") + "  a file that is not ONNX: " + r.stderr.strip())
        bad_ok = [ok] + hostile(work)
        if failures or not all(bad_ok):
            sys.exit(1)
    print("all imports match")


main()
