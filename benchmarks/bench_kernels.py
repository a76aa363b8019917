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
