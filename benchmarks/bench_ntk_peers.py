"""Empirical NTK of ensembles: deepens against neural-tangents' implementations, in one run (issue 20 §5).

deepens runs here; neural-tangents (JAX) runs in ``NT_PYTHON`` (an interpreter with ``jax`` and ``neural-tangents``;
neural-tangents 0.6.5's structured derivatives fail on jax 0.4.30, so: ``python -m venv ntenv && ntenv/bin/pip
install neural-tangents jax==0.4.23 jaxlib==0.4.23 tensorflow-cpu==2.16.2 ml_dtypes==0.3.2 "numpy<2"``) right after,
one thread each (``XLA_FLAGS`` single-threaded Eigen, ``torch.set_num_threads(1)``). Both compute the full
per-member kernels Θ_α(x, x′) of shape (M, N, N, C, C) of a deep ensemble (independent members: no cross-member
blocks), for
* an MLP ensemble: M = 8 members 64 → 256 → 256 → 10 (ReLU, standard parameterisation), N = 64 inputs — deepens'
  structured method against NT's Jacobian contraction, NTK-vector products and structured derivatives, each
  ``jit(vmap(empirical_ntk_fn))`` over the stacked members;
* a ConvNet ensemble: M = 4 members of the EE ConvNet at width 1/8 with average pooling (8-16-32-64 channels,
  3×3 convolutions, 2×2 average pools, global average pool, linear 10), N = 32 images 3×16×16 — deepens'
  structured method (the default for convolutional networks: per-layer patch Jacobians or position Grams, whichever
  is cheaper) and its general method (per-input Jacobians under vmap) against the same three NT implementations;
* the general method against the torch.func recipe (``vmap(jacrev)`` per member, one contraction) on both.
Time is the median of 15 calls (3 for those over a second) after a warm-up call (NT: after jit compilation,
reported apart).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

_NT_CHILD = r"""
import json, os, statistics, sys, time
import types
sys.modules.setdefault("tf2jax", types.ModuleType("tf2jax"))  # only NT's unused TensorFlow path imports it
import jax, jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax

def timed(fn):
    start = time.perf_counter(); fn(); first = time.perf_counter() - start
    start = time.perf_counter(); fn(); second = time.perf_counter() - start
    ts = [second]
    for _ in range(14 if second < 1 else 2):  # 15 calls of the fast ones, 3 of the slow
        start = time.perf_counter(); fn(); ts.append(time.perf_counter() - start)
    return statistics.median(ts), first

def run(apply, params, x):
    out = {}
    for name, impl in (("jacobian_contraction", 1), ("ntk_vector_products", 2), ("structured_derivatives", 3)):
        fn = jax.jit(jax.vmap(nt.empirical_ntk_fn(apply, trace_axes=(), vmap_axes=0, implementation=impl),
                              in_axes=(None, None, 0)))
        t, first = timed(lambda: fn(x, None, params).block_until_ready())
        out[name] = {"seconds": t, "first_call_seconds": first}
    return out

key = jax.random.PRNGKey(0)
mlp_init, mlp_apply, _ = stax.serial(stax.Dense(256, parameterization="standard"), stax.Relu(),
                                     stax.Dense(256, parameterization="standard"), stax.Relu(),
                                     stax.Dense(10, parameterization="standard"))
params = jax.vmap(lambda k: mlp_init(k, (-1, 64))[1])(jax.random.split(key, 8))
x = jax.random.normal(key, (64, 64))
result = {"mlp": run(mlp_apply, params, x)}
conv = lambda c: stax.Conv(c, (3, 3), padding="SAME", parameterization="standard", b_std=None)
cnn_init, cnn_apply, _ = stax.serial(conv(8), stax.Relu(), stax.AvgPool((2, 2), (2, 2)), conv(16), stax.Relu(),
                                     stax.AvgPool((2, 2), (2, 2)), conv(32), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                                     conv(64), stax.Relu(), stax.GlobalAvgPool(),
                                     stax.Dense(10, parameterization="standard", b_std=None))
params = jax.vmap(lambda k: cnn_init(k, (-1, 16, 16, 3))[1])(jax.random.split(key, 4))
x = jax.random.normal(key, (32, 16, 16, 3))
result["cnn"] = run(cnn_apply, params, x)
result["versions"] = {"jax": jax.__version__, "neural_tangents": getattr(nt, "__version__", "?")}
print(json.dumps(result))
"""


def _timed(fn, repeats: int = 5) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def torch_func_recipe(members: list, x: torch.Tensor) -> torch.Tensor:
    """The textbook torch.func NTK of separate networks, member by member: ``vmap(jacrev)`` per input over all
    inputs, then one contraction of the concatenated Jacobians (M, N, N, C, C)."""
    from torch.func import functional_call, jacrev, vmap

    kernels = []
    for net in members:
        params = {n: p.detach() for n, p in net.named_parameters()}

        def f(p, xx, net=net):
            return functional_call(net, p, (xx.unsqueeze(0),)).squeeze(0)

        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)  # per parameter (N, C, *shape)
        flat = torch.cat([v.reshape(v.shape[0], v.shape[1], -1) for v in jac.values()], dim=-1)  # (N, C, P)
        kernels.append(torch.einsum("nip,mjp->nmij", flat, flat))
    return torch.stack(kernels)


def deepens_side() -> dict:
    import deepens as d
    from deepens.kernels.empirical import ensemble_ntk

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mlp = d.DeepEnsemble(d.MLP(64, [256, 256], 10), 8, seed=0)
    x = torch.randn(64, 64)
    t_mlp, first_mlp = _timed(lambda: ensemble_ntk(mlp, x, method="structured", mode="full"), repeats=15)
    cnn = d.DeepEnsemble(d.ConvNet(3, 10, width=0.125, pool="avg"), 4, seed=0)
    xi = torch.randn(32, 3, 16, 16)
    t_cnn, first_cnn = _timed(lambda: ensemble_ntk(cnn, xi, method="structured", mode="full"), repeats=15)
    t_jac, first_jac = _timed(lambda: ensemble_ntk(cnn, xi, method="jacobian", mode="full"), repeats=3)
    # the general (Jacobian) method against the torch.func recipe, on the same two ensembles
    general = {}
    for net, model, inputs, repeats in (("mlp", mlp, x, 3), ("cnn", cnn, xi, 3)):
        members = [model.member(a) for a in range(model.members)]
        t_ours, _ = _timed(lambda m=model, i=inputs: ensemble_ntk(m, i, method="jacobian", mode="full"),
                           repeats=repeats)
        t_recipe, _ = _timed(lambda m=members, i=inputs: torch_func_recipe(m, i), repeats=repeats)
        ours = ensemble_ntk(model, inputs, method="jacobian", mode="full").individual
        ref = torch_func_recipe(members, inputs)
        general[net] = {"deepens_jacobian": t_ours, "torch_func_recipe": t_recipe,
                        "max_rel_diff": float((ours - ref).abs().max() / ref.abs().max())}
    return {"mlp": {"structured": {"seconds": t_mlp, "first_call_seconds": first_mlp}},
            "cnn": {"structured": {"seconds": t_cnn, "first_call_seconds": first_cnn},
                    "jacobian": {"seconds": t_jac, "first_call_seconds": first_jac}},
            "general": general}


def ntk_peers() -> dict:
    out = {"deepens": deepens_side()}
    nt_python = os.environ.get("NT_PYTHON")
    if nt_python:
        env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
                   JAX_PLATFORMS="cpu")
        done = subprocess.run([nt_python, "-c", _NT_CHILD], capture_output=True, text=True, check=True, env=env)
        out["neural_tangents"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def render(result: dict) -> list[str]:
    mine, theirs = result["deepens"], result.get("neural_tangents")
    lines = ["### Empirical NTK of deep ensembles: deepens against neural-tangents (one thread, full (M, N, N, C, C))",
             "", "MLP: M = 8 members 64-256-256-10, N = 64. ConvNet: M = 4 EE ConvNets at width 1/8 with average "
             "pooling, N = 32 images 3×16×16. Median seconds (first call, with NT's jit compilation, in brackets).",
             "", "| network | deepens | NT Jacobian contraction | NT NTK-vector products | NT structured derivatives "
             "| best NT / deepens |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for net, method in (("mlp", "structured"), ("cnn", "structured"), ("cnn", "jacobian")):
        if method not in mine[net]:
            continue
        m = mine[net][method]
        cells, best = [], None
        for impl in ("jacobian_contraction", "ntk_vector_products", "structured_derivatives"):
            if theirs is None:
                cells.append("—")
                continue
            r = theirs[net][impl]
            best = r["seconds"] if best is None else min(best, r["seconds"])
            cells.append(f"{r['seconds']:.3f} ({r['first_call_seconds']:.1f})")
        ratio = f"{best / m['seconds']:.2f}×" if best is not None else "—"
        lines.append(f"| {net} ({method}) | {m['seconds']:.3f} ({m['first_call_seconds']:.1f}) | "
                     + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    general = mine.get("general")
    if general:
        lines += ["The general method (per-input Jacobians under vmap; a deep ensemble one member at a time through "
                  "the reference network when the Jacobians of all inputs fit the memory budget, the symmetric Gram "
                  "from its blocks on and above the diagonal) against the torch.func recipe (member by member "
                  "`vmap(jacrev)` over the inputs, then one contraction), same ensembles, median seconds:", "",
                  "| network | deepens `method=\"jacobian\"` | torch.func recipe | recipe / deepens | max rel diff |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for net, r in general.items():
            lines.append(f"| {net} | {r['deepens_jacobian']:.2f} | {r['torch_func_recipe']:.2f} | "
                         f"{r['torch_func_recipe'] / r['deepens_jacobian']:.2f}× | {r['max_rel_diff']:.1e} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    print(json.dumps(ntk_peers()))
    sys.exit(0)
