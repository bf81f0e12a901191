"""Counts the operators PyTorch eager runs for one training step of the MNIST
MLP and CNN (leaf aten ops from the autograd profiler, with and without
views and allocations), to set beside `nnc compile --emit=fused --stats`.
Run with /usr/bin/python3 (Debian's python3-torch)."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_peer import CNN, MLP  # noqa: E402  (the same models as the epoch benchmark)

# Ops that only make views, allocate or move scalars: no kernel of their own.
NOT_COMPUTE = {
    "aten::empty", "aten::empty_strided", "aten::view", "aten::as_strided", "aten::t",
    "aten::transpose", "aten::expand", "aten::reshape", "aten::_reshape_alias", "aten::detach",
    "aten::resize_", "aten::set_", "aten::zeros", "aten::empty_like", "aten::result_type",
    "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::alias",
    "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::is_nonzero",
    "aten::item", "aten::_local_scalar_dense", "aten::copy_",
}

torch.manual_seed(0)
for name, model, make_opt, shape in [
        ("mlp", MLP(), lambda p: torch.optim.SGD(p, lr=0.1), (64, 784)),
        ("cnn", CNN(), lambda p: torch.optim.Adam(p, lr=1e-3), (64, 1, 28, 28))]:
    opt = make_opt(model.parameters())
    x, y = torch.rand(*shape), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step()
    with torch.autograd.profiler.profile() as prof:
        step()
    aten = [e for e in prof.function_events if e.name.startswith("aten::")]
    leaves = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    compute = [e for e in leaves if e.name not in NOT_COMPUTE]
    print("%s: %d leaf aten ops per step, %d without views and allocations"
          % (name, len(leaves), len(compute)))
