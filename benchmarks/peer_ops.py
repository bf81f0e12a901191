"""Counts the operators PyTorch eager runs for one training step of the MNIST
MLP and CNN (leaf aten ops from the autograd profiler, with and without
views and allocations), to set beside `nnc compile --emit=fused --stats`.
Run with /usr/bin/python3 (Debian's python3-torch)."""
import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 5, padding=2); self.bn = nn.BatchNorm2d(32); self.fc = nn.Linear(32*14*14, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.out = nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)
    def forward(self, x):
        return self.out(F.relu(self.h2(F.relu(self.h1(x)))))
for name, m, opt, shape in [("mlp", MLP(), lambda p: torch.optim.SGD(p, lr=0.1), (64, 784)),
                            ("cnn", CNN(), lambda p: torch.optim.Adam(p, lr=1e-3), (64, 1, 28, 28))]:
    o = opt(m.parameters()); x = torch.rand(*shape); y = torch.randint(0, 10, (64,))
    for _ in range(2):
        o.zero_grad(); F.cross_entropy(m(x), y).backward(); o.step()
    with torch.autograd.profiler.profile() as prof:
        o.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); o.step()
    ev = prof.function_events
    aten = [e for e in ev if e.name.startswith("aten::")]
    leaves = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    compute = [e for e in leaves if e.name not in ("aten::empty", "aten::empty_strided", "aten::view", "aten::as_strided", "aten::t", "aten::transpose", "aten::expand", "aten::reshape", "aten::_reshape_alias", "aten::detach", "aten::resize_", "aten::set_", "aten::zeros", "aten::empty_like", "aten::result_type", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::alias", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::copy_")]
    print(name, "leaf aten ops per step:", len(leaves), "excluding views/allocations:", len(compute))
