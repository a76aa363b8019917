"""Ensemble layer benchmarks (issue: foundation, §6).

1. DeepEnsemble train step vs a Python loop over modules and vs the torch.func recipe
   (``stack_module_state`` + ``vmap(functional_call)``).
2. LastLayerDropout (M = 50) train step and inference vs the single reference network.
3. BatchEnsemble parameter count and peak memory vs the single network and a DeepEnsemble.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

import deepens as d

from .harness import compare


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def deep_train_step(device: str = "cpu", members: int = 16, batch: int = 128, repeats: int = 40) -> dict:
    """Train step (forward + cross-entropy + backward + SGD-momentum) of 16 MLPs 64→64→64→10.

    All candidates train the same deepens.MLP networks with the same loss and the same optimizer
    settings, so the ratios isolate how the members are computed.
    """
    torch.manual_seed(0)
    modules = [d.MLP(64, [64, 64], 10).to(device) for _ in range(members)]
    x = torch.randn(batch, 64, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    y_all = y.repeat(members)

    loop_modules = copy.deepcopy(modules)
    opt_loop = _sgd([p for m in loop_modules for p in m.parameters()])

    def loop():
        opt_loop.zero_grad(set_to_none=True)
        loss = sum(F.cross_entropy(m(x), y) for m in loop_modules)
        loss.backward()
        opt_loop.step()

    def step_of(forward, params):
        opt = _sgd(params)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(forward().reshape(-1, 10), y_all, reduction="sum") / batch
            loss.backward()
            opt.step()

        return step

    ens = d.DeepEnsemble.from_modules(copy.deepcopy(modules))
    deepens_step = step_of(lambda: ens(x), ens.parameters())

    params, buffers = stack_module_state(copy.deepcopy(modules))
    base = copy.deepcopy(modules[0]).to("meta")

    def one(p, b, inp):
        return functional_call(base, (p, b), (inp,))

    batched = vmap(one, in_dims=(0, 0, None))
    func_step = step_of(lambda: batched(params, buffers, x), list(params.values()))

    vec = d.vectorize(copy.deepcopy(modules))
    vectorize_step = step_of(lambda: vec(x), vec.parameters())

    times = compare(
        {"loop": loop, "deepens": deepens_step, "torch.func": func_step, "vectorize": vectorize_step},
        repeats=repeats,
        warmup=10,
        device=device,
    )
    return {
        "name": "DeepEnsemble train step, 16 MLPs 64→64→64→10, batch 128",
        "ms": {k: v * 1e3 for k, v in times.items()},
        "speedup_vs_loop": times["loop"] / times["deepens"],
        "speedup_vs_torch_func": times["torch.func"] / times["deepens"],
        "targets": {"speedup_vs_loop": 2.0, "speedup_vs_torch_func": 1.2},
    }


def _lld_ratios(net: nn.Module, x: torch.Tensor, classes: int, device: str, repeats: int, members: int,
                inner: int = 3) -> dict:
    torch.manual_seed(0)
    net = net.to(device)
    x = x.to(device)
    y = torch.randint(0, classes, (x.shape[0],), device=device)
    single = copy.deepcopy(net)
    opt_single = _sgd(single.parameters())
    lld = d.LastLayerDropout(copy.deepcopy(net), members, seed=0).to(device)
    opt_lld = _sgd(lld.parameters())
    y_all = y.repeat(members)
    gamma = members  # γ(M) = M: the γ(M)/M factor of EE Eq. (66) is 1

    def single_train():
        opt_single.zero_grad(set_to_none=True)
        F.cross_entropy(single(x), y).backward()
        opt_single.step()

    def lld_train():
        opt_lld.zero_grad(set_to_none=True)
        out = lld(x)
        loss = gamma / members * F.cross_entropy(out.reshape(-1, classes), y_all, reduction="sum") / x.shape[0]
        loss.backward()
        opt_lld.step()

    def single_infer():
        with torch.no_grad():
            single(x)

    def lld_infer():
        with torch.no_grad():
            lld.predict_logits_mean(x)

    train = compare({"single": single_train, "lld": lld_train}, repeats=repeats, warmup=3, device=device, inner=inner)
    infer = compare({"single": single_infer, "lld": lld_infer}, repeats=repeats, warmup=3, device=device, inner=inner)
    return {
        "train_ms": {k: v * 1e3 for k, v in train.items()},
        "infer_ms": {k: v * 1e3 for k, v in infer.items()},
        "train_ratio": train["lld"] / train["single"],
        "infer_ratio": infer["lld"] / infer["single"],
    }


def lld_overhead(device: str = "cpu", members: int = 50, repeats: int = 15) -> dict:
    """LLD (M = 50) vs the single reference network: ConvNet on 3×32×32 (100 classes), and an MLP."""
    conv = _lld_ratios(
        d.ConvNet(3, 100), torch.randn(64, 3, 32, 32), 100, device, repeats, members
    )
    mlp = _lld_ratios(  # a few ms per call: more consecutive calls per timing against machine noise
        d.MLP(3 * 32 * 32, [512, 512], 100), torch.randn(128, 3 * 32 * 32), 100, device, repeats * 10, members,
        inner=10,
    )
    return {
        "name": "LastLayerDropout M = 50 vs the single reference network",
        "convnet": conv,
        "mlp": mlp,
        "targets": {"convnet_train_ratio": 1.10, "convnet_infer_ratio": 1.05, "mlp_infer_ratio": 1.05},
    }


_MEMORY_CHILD = r"""
import gc, json, sys, torch
import deepens as d
from torch.nn import functional as F

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # MiB

kind, members, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = d.ConvNet(3, 100)
if kind == "single":
    model, m = net, 1
elif kind == "batch":
    model, m = d.BatchEnsemble(net, members, seed=0), members
else:
    model, m = d.DeepEnsemble(net, members, seed=0), members
x = torch.randn(batch, 3, 32, 32); y = torch.randint(0, 100, (batch,))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
params = sum(p.numel() for p in model.parameters())
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS counter (VmHWM)
    fh.write("5")
out = model(x)
out = out.reshape(-1, 100) if out.dim() == 3 else out
F.cross_entropy(out, y.repeat(m)).backward(); opt.step()
peak = status("VmHWM")
print(json.dumps({"params": params, "param_mib": params * 4 / 2**20, "rss_before_mib": before,
                  "step_peak_mib": peak - before}))
"""


def batch_memory(members: int = 4, batch: int = 32) -> dict:
    """Parameters and peak memory of one train step (fresh process each): single, BatchEnsemble, DeepEnsemble."""
    rows = {}
    env = dict(os.environ)
    for kind in ("single", "batch", "deep"):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, kind, str(members), str(batch)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "name": f"ConvNet (width 1) on 3×32×32, M = {members}, batch {batch}: parameters and peak memory",
        "rows": rows,
        "batch_params_over_single": rows["batch"]["params"] / rows["single"]["params"],
        "deep_params_over_single": rows["deep"]["params"] / rows["single"]["params"],
    }
