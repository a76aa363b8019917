"""Collegial ensemble benchmarks (issue: collegial ensembles).

1. Train step of a collegial MLP (m = 30 members of width 48, 784 → 6 layers → 10, the CE Fig. 3 primal
   optimum, batch 256): deepens' block-diagonal layers against a Python loop over 30 separate MLPs and
   against block-diagonal layers as grouped 1×1 convolutions (``nn.Conv1d(groups=m)``).
2. Monte Carlo NTK statistics: 2000 draws of an MLP member (784 → 6 layers, width 32) and 500 draws of
   the bottleneck (256 channels, width 16), against building and differentiating one network per draw.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

import deepens as d
from deepens.design import BottleneckFamily, MLPFamily, ntk_draws
from deepens.ensembles.collegial import CollegialMLP
from deepens.kernels import ensemble_ntk

from .harness import compare


class _GroupedConvCollegial(nn.Module):
    """The same collegial MLP with block-diagonal layers as grouped 1×1 convolutions."""

    def __init__(self, m: int, n: int, depth: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.m = m
        self.first = nn.Linear(n_in, m * n, bias=False)
        self.hidden = nn.ModuleList([nn.Conv1d(m * n, m * n, 1, groups=m, bias=False) for _ in range(depth - 2)])
        self.readout = nn.Linear(m * n, n_out, bias=False)

    def forward(self, x):
        h = F.relu(self.first(x)).unsqueeze(-1)
        for layer in self.hidden:
            h = F.relu(layer(h))
        return self.readout(h.squeeze(-1)) / math.sqrt(self.m)


def collegial_train_step(device: str = "cpu", repeats: int = 15) -> dict:
    torch.manual_seed(0)
    m, n, depth = 30, 48, 6
    x = torch.randn(256, 784, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    col = CollegialMLP(784, [n] * (depth - 1), 10, m, seed=0).to(device)
    nets = [col.subnetwork(j).to(device) for j in range(m)]
    conv = _GroupedConvCollegial(m, n, depth, 784, 10).to(device)

    def stepper(model, forward):
        opt = torch.optim.SGD(model.parameters() if isinstance(model, nn.Module) else model, lr=0.01)

        def step():
            loss = F.cross_entropy(forward(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    loop_params = [p for net in nets for p in net.parameters()]
    seconds = compare({
        "deepens": stepper(col, col),
        "loop": stepper(loop_params, lambda z: sum(net(z) for net in nets) / math.sqrt(m)),
        "grouped_conv": stepper(conv, conv),
    }, repeats=repeats, device=device)
    ms = {k: 1000 * v for k, v in seconds.items()}
    with torch.no_grad():
        diff = float((col(x) - sum(net(x) for net in nets) / math.sqrt(m)).abs().max())
    return {"name": f"collegial MLP train step, m = {m} × width {n}, 784 → {depth} layers → 10, batch 256",
            "ms": ms, "speedup_vs_loop": ms["loop"] / ms["deepens"],
            "speedup_vs_grouped_conv": ms["grouped_conv"] / ms["deepens"], "max_abs_diff_vs_loop": diff}


def _per_draw_loop(family, width: int, x: torch.Tensor, draws: int) -> float:
    start = time.perf_counter()
    for _ in range(draws):
        net = family.member_network(width).double()
        for p in net.parameters():
            with torch.no_grad():
                p.normal_()
        ensemble_ntk(net, x, method="jacobian")
    return (time.perf_counter() - start) / draws


def ntk_statistics_speed(repeats: int = 3) -> dict:
    rows = {}
    for key, family, width, draws, loop_draws in (
        ("mlp", MLPFamily(784, 1, 6), 32, 2000, 100),
        ("bottleneck", BottleneckFamily(256), 16, 500, 30),
    ):
        x = family.default_inputs(2, 0)
        ntk_draws(family, width, draws=20, inputs=x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ntk_draws(family, width, draws=draws, inputs=x)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        per_draw_loop = _per_draw_loop(family, width, x, loop_draws)
        rows[key] = {"width": width, "draws": draws, "seconds": seconds, "loop_seconds_per_draw": per_draw_loop,
                     "speedup": per_draw_loop * draws / seconds}
    return {"name": f"Monte Carlo NTK statistics (2 inputs, float64; median of {repeats} runs)", "rows": rows}


if __name__ == "__main__":  # pragma: no cover
    print(collegial_train_step())
    print(ntk_statistics_speed())
    print(d.__version__)
