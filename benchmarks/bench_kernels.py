"""Kernel benchmarks (issue: kernel engine, §7).

1. Empirical NTK of an M = 8 BatchEnsemble of 2-hidden-layer MLPs (width 256) on 64 inputs, 10 outputs,
   traced: deepens (structured and Jacobian methods) vs a per-sample explicit-Jacobian loop.
2. Analytic ReLU kernels with modulations, depth 4, 2000 inputs; a quadrature activation (tanh) on 500.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import deepens as d
from deepens.kernels import Network, ensemble_ntk, infinite_width_kernels


def _explicit_loop_ntk(model: d.BatchEnsemble, x: torch.Tensor) -> torch.Tensor:
    """The baseline: one autograd call per (sample, member, output) builds the Jacobian rows, then
    Θ_trace = J_com J_comᵀ + J_ind J_indᵀ (γ = M) summed over outputs."""
    common = [p for _, p in model.named_shared_parameters()]
    individual = [p for _, p in model.named_individual_parameters()]
    params = common + individual
    m, n = model.members, x.shape[0]
    rows = []
    for i in range(n):
        out = model(x[i : i + 1])  # (M, 1, C)
        for a in range(m):
            for c in range(out.shape[-1]):
                grads = torch.autograd.grad(out[a, 0, c], params, retain_graph=True)
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
    j = torch.stack(rows).view(n, m, -1, rows[0].numel()).permute(1, 0, 2, 3)  # (M, N, C, P)
    return torch.einsum("anip,bmip->abnm", j, j)


def empirical_ntk(repeats: int = 3) -> dict:
    torch.manual_seed(0)
    model = d.BatchEnsemble(d.MLP(64, [256, 256], 10), 8, seed=0)
    x = torch.randn(64, 64)

    def timed(fn) -> tuple[float, torch.Tensor]:
        times, out = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), out

    t_struct, k_struct = timed(lambda: ensemble_ntk(model, x, method="structured").total())
    t_jac, k_jac = timed(lambda: ensemble_ntk(model, x, method="jacobian").total())
    t_loop, k_loop = timed(lambda: _explicit_loop_ntk(model, x))
    scale = float(k_loop.abs().max())
    return {
        "name": "empirical NTK, M = 8 BatchEnsemble of MLPs 64-256-256-10, 64 inputs, traced (float32)",
        "seconds": {"explicit_loop": t_loop, "deepens_structured": t_struct, "deepens_jacobian": t_jac},
        "speedup_structured": t_loop / t_struct,
        "speedup_jacobian": t_loop / t_jac,
        "max_rel_diff_structured": float((k_struct - k_loop).abs().max()) / scale,
        "max_rel_diff_jacobian": float((k_jac - k_loop).abs().max()) / scale,
        "targets": {"speedup": 5.0},
    }


def analytic_kernels(repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    x2000, x500, x200 = rng.normal(size=(2000, 20)), rng.normal(size=(500, 20)), rng.normal(size=(200, 20))
    relu = Network.mlp(4, "relu", 2**0.5, 0.1, 1.0, 0.0, u="shifted-normal:0.3", v="normal:0,1")
    tanh = Network.mlp(4, "tanh", 1.2, 0.1)
    tanh_mod = Network.mlp(4, "tanh", 1.2, 0.1, u="shifted-normal:0.3", v="shifted-normal:0.5")
    return {
        "name": "analytic infinite-width kernels (NNGP, NTK, same and cross member), depth 4",
        "seconds": {
            "relu_modulated_2000": timed(lambda: infinite_width_kernels(x2000, network=relu)),
            "tanh_500": timed(lambda: infinite_width_kernels(x500, network=tanh)),
            "tanh_modulated_200": timed(lambda: infinite_width_kernels(x200, network=tanh_mod)),
        },
        "targets": {"relu_modulated_2000": 2.0, "tanh_500": 5.0},
    }


# -- infinite-width kernels of a CNN: deepens vs neural-tangents ---------------------------------------------

_CNN_SCRIPT_DEEPENS = """
import json, resource, sys, time
import numpy as np, torch
from torch import nn
from deepens.kernels import infinite_width_kernels
from deepens.layers import Conv2d, Linear
torch.set_num_threads({threads})
n, memory = {n}, "{memory}"
x = np.random.default_rng(0).normal(size=(n, 1, 8, 8))
c = lambda i: Conv2d(i, 16, 3, padding=1, parameterization="ntk", weight_std=2 ** 0.5)
net = nn.Sequential(c(1), nn.ReLU(), c(16), nn.ReLU(), c(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                    Linear(16, 1, parameterization="ntk"))
infinite_width_kernels(x[:8], network=net)  # warm-up
start = time.perf_counter()
k = infinite_width_kernels(x, network=net, memory=memory)
seconds = time.perf_counter() - start
np.save("{out}", np.stack([k.nngp_same, k.ntk_same]))
print(json.dumps({{"seconds": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""

_CNN_SCRIPT_NT = """
import json, resource, sys, time, types
sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import neural_tangents as nt
from neural_tangents import stax
n = {n}
x = np.moveaxis(np.random.default_rng(0).normal(size=(n, 1, 8, 8)), 1, -1)
conv = lambda: stax.Conv(16, (3, 3), padding="SAME", W_std=2 ** 0.5)
_, _, kernel_fn = stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), conv(), stax.Relu(), stax.GlobalAvgPool(),
                              stax.Dense(1))
kernel_fn = nt.batch(kernel_fn, batch_size=64, store_on_device=False)  # blocks of 64 x 64 inputs, like deepens
kernel_fn(x[:64], None, get=("nngp", "ntk")).ntk.block_until_ready()  # warm-up: compiles the block
start = time.perf_counter()
k = kernel_fn(x, None, get=("nngp", "ntk"))
k.ntk.block_until_ready()
seconds = time.perf_counter() - start
np.save("{out}", np.stack([np.asarray(k.nngp), np.asarray(k.ntk)]))
print(json.dumps({{"seconds": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def cnn_kernels(sizes=(256, 512), memory: str = "8GiB", threads: int = 2) -> dict:
    """NNGP + NTK of a 3-conv-layer ReLU CNN (16 channels at finite width; SAME 3×3, GAP, dense readout) on
    8×8 single-channel images, float64, each in a fresh process (peak resident memory of that process).
    neural-tangents runs in its own interpreter when ``NT_PYTHON`` names one (its jit compilation for the
    timed shape is excluded)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    nt_python = os.environ.get("NT_PYTHON")
    out: dict = {"name": "NNGP + NTK of a 3-conv-layer ReLU CNN with global average pooling, 8×8 images, float64",
                 "memory_budget": memory, "threads": threads, "rows": []}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            row: dict = {"n": n}
            mine = os.path.join(tmp, f"deepens-{n}.npy")
            script = _CNN_SCRIPT_DEEPENS.format(n=n, memory=memory, out=mine, threads=threads)
            res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
            row["deepens"] = json.loads(res.stdout.strip().splitlines()[-1])
            if nt_python:
                theirs = os.path.join(tmp, f"nt-{n}.npy")
                res = subprocess.run([nt_python, "-c", _CNN_SCRIPT_NT.format(n=n, out=theirs)], capture_output=True,
                                     text=True, env=env)
                if res.returncode == 0:
                    row["neural_tangents"] = json.loads(res.stdout.strip().splitlines()[-1])
                    a, b = np.load(mine), np.load(theirs)
                    row["max_rel_diff"] = float(np.abs(a - b).max() / np.abs(b).max())
                    row["speedup_vs_nt"] = row["neural_tangents"]["seconds"] / row["deepens"]["seconds"]
                else:
                    row["neural_tangents"] = {"error": res.stderr.strip().splitlines()[-1][:200]}
            out["rows"].append(row)
    return out
