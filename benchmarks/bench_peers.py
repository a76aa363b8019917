"""deepens against the tools a user would pick instead, in one run and one interpreter.

Peers: torch-uncertainty (its BatchEnsemble layers ``BatchLinear`` / ``BatchConv2d``, its ``deep_ensembles`` and
``mc_dropout`` wrappers), torchensemble (``FusionClassifier``), torch.func (``stack_module_state`` + ``vmap`` of
``functional_call``) and a plain Python loop over the members. torch-uncertainty imports torchvision, which has no
CPU build beside the pinned torch: the peers live in their own environment (``make bench-peers`` builds
``.venv-peers`` with torch 2.14.1 and torchvision 0.29.1 and runs this module there; deepens runs in the same
interpreter, so every ratio compares like with like).

Time: one train step (zero_grad, forward of all members on one shared batch, the sum of the members'
cross-entropies, backward) with :func:`benchmarks.harness.compare` (warm-up, shuffled repeats, medians), one
intra-op thread. Memory, each in a fresh process: the bytes autograd saves for the backward pass (a saved-tensors
hook, each storage once, parameters excepted) and the peak resident memory of a steady train step above the
process's memory before it (the second step; VmHWM reset in between).

``python -m benchmarks.bench_peers`` prints one JSON object; ``benchmarks.run --only peers`` runs it in
``PEERS_PYTHON`` (default ``.venv-peers/bin/python``) and renders it into docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import torch
from torch import nn
from torch.nn import functional as F

import deepens as d

from .harness import compare

CNN_CHANNELS = (16, 32, 64, 128)


def have(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - a peer that does not import is absent
        return False
    return True


# -- the networks, as deepens takes them and as torch-uncertainty writes them -----------------------------------
def cnn(classes: int = 10, channels=CNN_CHANNELS) -> nn.Module:
    layers, c = [], 3
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def tu_cnn(members: int, classes: int = 10, channels=CNN_CHANNELS) -> nn.Module:
    from torch_uncertainty.layers import BatchConv2d, BatchLinear

    layers, c = [], 3
    for out in channels:
        layers += [BatchConv2d(c, out, 3, members, padding=1), nn.ReLU()]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), BatchLinear(c, classes, members))


def tu_convnet(members: int, classes: int = 100) -> nn.Module:
    """deepens' ConvNet (EE App. C, width 1) written with torch-uncertainty's BatchEnsemble layers."""
    from torch_uncertainty.layers import BatchConv2d, BatchLinear

    layers, c = [], 3
    for i, out in enumerate((64, 128, 256, 512)):
        layers += [BatchConv2d(c, out, 3, members, padding=1, bias=False), nn.ReLU(),
                   nn.AdaptiveMaxPool2d(1) if i == 3 else nn.MaxPool2d(2, ceil_mode=True)]
        c = out
    return nn.Sequential(*layers, nn.Flatten(), BatchLinear(c, classes, members, bias=False))


def mlp(d_in: int = 256, width: int = 256, classes: int = 10, dropout: float = 0.0) -> nn.Module:
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), *drop, nn.Linear(width, width), nn.ReLU(), *drop,
                         nn.Linear(width, classes))


def tu_mlp(members: int, d_in: int = 256, width: int = 256, classes: int = 10) -> nn.Module:
    from torch_uncertainty.layers import BatchLinear

    return nn.Sequential(BatchLinear(d_in, width, members), nn.ReLU(), BatchLinear(width, width, members), nn.ReLU(),
                         BatchLinear(width, classes, members))


# -- train steps ---------------------------------------------------------------------------------------------------
def _step(params, forward, y_all):
    def run():
        for p in params:
            p.grad = None
        F.cross_entropy(forward(), y_all, reduction="sum").backward()
    return run


def deep_candidates(make, members: int, x: torch.Tensor, y: torch.Tensor) -> dict:
    """One train step of M independent networks: deepens, a loop, torch.func, and the peers that are installed."""
    torch.manual_seed(0)
    nets = [make() for _ in range(members)]
    y_all = y.repeat(members)
    ens = d.DeepEnsemble.from_modules(nets)
    out = {"deepens": _step(list(ens.parameters()), lambda: ens(x).flatten(0, 1), y_all)}
    loop = [copy.deepcopy(n) for n in nets]
    out["loop"] = _step([p for n in loop for p in n.parameters()], lambda: torch.cat([n(x) for n in loop]), y_all)
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state([copy.deepcopy(n) for n in nets])
    base = copy.deepcopy(nets[0]).to("meta")
    leaves = [p.requires_grad_() for p in params.values()]

    def vmapped():
        fn = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None))
        return fn(params, buffers, x).flatten(0, 1)

    out["torch.func"] = _step(leaves, vmapped, y_all)
    if have("torch_uncertainty"):
        from torch_uncertainty.methods.deep_ensembles import deep_ensembles

        tu = deep_ensembles([copy.deepcopy(n) for n in nets], reset_model_parameters=False) if members > 1 else \
            None
        if tu is not None:
            out["torch-uncertainty"] = _step(list(tu.parameters()), lambda: tu(x), y_all)
    if have("torchensemble"):
        from torchensemble import FusionClassifier

        fusion = FusionClassifier(estimator=nets[0], n_estimators=members, cuda=False)
        fusion.estimators_ = nn.ModuleList(copy.deepcopy(n) for n in nets)
        # its training loss is the fused (averaged) output's; the work per step is the members' forward/backward
        out["torchensemble"] = _step(list(fusion.estimators_.parameters()), lambda: fusion._forward(x), y)
    return out


def batch_candidates(make, make_tu, members: int, x: torch.Tensor, y: torch.Tensor) -> dict:
    torch.manual_seed(0)
    y_all = y.repeat(members)
    ens = d.BatchEnsemble(make(), members, seed=0)
    out = {"deepens": _step(list(ens.parameters()), lambda: ens(x).flatten(0, 1), y_all)}
    if have("torch_uncertainty"):
        tu = make_tu(members)
        xs = x.repeat((members,) + (1,) * (x.dim() - 1))  # torch-uncertainty's convention: the batch repeated
        out["torch-uncertainty"] = _step(list(tu.parameters()), lambda: tu(xs), y_all)
    return out


def mc_candidates(members: int, x: torch.Tensor) -> dict:
    """MC-dropout predictions of M members on one batch (inference: the wrappers differ only there)."""
    torch.manual_seed(0)
    ens = d.MCDropout(mlp(), members, mask="bernoulli:0.8,scaled", resample=True, seed=0).eval()
    out = {"deepens": lambda: ens.predict_proba(x)}
    if have("torch_uncertainty"):
        from torch_uncertainty.methods.mc_dropout import mc_dropout

        tu = mc_dropout(mlp(dropout=0.2), members, on_batch=True).eval()
        out["torch-uncertainty"] = lambda: tu(x).reshape(members, x.shape[0], -1).softmax(-1).mean(0)
    return out


def _timed(candidates: dict, repeats: int) -> dict:
    return {k: float(v) for k, v in compare(candidates, warmup=2, repeats=repeats, inner=2).items()}


def speed(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    mlp_x, mlp_y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    cnn_x, cnn_y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    sizes_mlp = (1, 4, 8, 16, 64) if not quick else (1, 4)
    sizes_cnn = (1, 4, 8, 16, 64) if not quick else (1, 4)
    for m in sizes_mlp:
        rows.append({"what": "deep", "net": "mlp", "members": m,
                     "seconds": _timed(deep_candidates(mlp, m, mlp_x, mlp_y), 9)})
        rows.append({"what": "batch", "net": "mlp", "members": m,
                     "seconds": _timed(batch_candidates(mlp, tu_mlp, m, mlp_x, mlp_y), 9)})
        with torch.no_grad():
            rows.append({"what": "mc-dropout inference", "net": "mlp", "members": m,
                         "seconds": _timed(mc_candidates(m, mlp_x), 9)})
    for m in sizes_cnn:
        rows.append({"what": "deep", "net": "cnn", "members": m,
                     "seconds": _timed(deep_candidates(cnn, m, cnn_x, cnn_y), 5)})
        rows.append({"what": "batch", "net": "cnn", "members": m,
                     "seconds": _timed(batch_candidates(cnn, tu_cnn, m, cnn_x, cnn_y), 5)})
    return {"rows": rows, "threads": 1, "mlp": "256-256-256-10, batch 64", "cnn": f"3×16×16, conv {CNN_CHANNELS}, "
            "avg-pool, linear 10, batch 8"}


# -- memory, each in a fresh process ------------------------------------------------------------------------------
_CHILD = r"""
import gc, json, sys, torch
from torch.nn import functional as F
import deepens as d
from benchmarks import bench_peers as b

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024

net, kind, m, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
torch.manual_seed(0)
classes = 100 if net == "convnet" else 10
make = {"cnn": b.cnn, "cnn16": b.cnn, "mlp": b.mlp, "convnet": lambda: d.ConvNet(3, 100)}[net]
make_tu = {"cnn": b.tu_cnn, "cnn16": b.tu_cnn, "mlp": b.tu_mlp, "convnet": b.tu_convnet}[net]
x = torch.randn(batch, 256) if net == "mlp" else torch.randn(batch, 3, 16 if net == "cnn16" else 32,
                                                             16 if net == "cnn16" else 32)
y = torch.randint(0, classes, (batch,))

class Loop(torch.nn.Module):  # M separate networks, called one after the other
    def __init__(self):
        super().__init__()
        self.nets = torch.nn.ModuleList(make() for _ in range(m))

    def forward(self, xx):
        return torch.stack([n(xx) for n in self.nets])

if kind == "single":
    model, xin, k = make(), x, 1
elif kind == "loop":
    model, xin, k = Loop(), x, m
elif kind.startswith("deepens-batch"):
    model, xin, k = d.BatchEnsemble(make(), m, seed=0), x, m
    model.lean = kind == "deepens-batch"
elif kind.startswith("deepens-deep"):
    model, xin, k = d.DeepEnsemble(make(), m, seed=0), x, m
    model.lean = kind == "deepens-deep"
elif kind == "deepens-mc-dropout":
    model, xin, k = d.MCDropout(make(), m, seed=0), x, m
elif kind == "torch-uncertainty-batch":
    model, xin, k = make_tu(m), x.repeat((m,) + (1,) * (x.dim() - 1)), 1
else:
    raise SystemExit(kind)
yk = y.repeat(m) if kind != "single" else y
from deepens.layers.recompute import saved_bytes
counted = {"bytes": 0}
def step(count):
    global counted
    model.zero_grad(set_to_none=True)
    if count:
        with saved_bytes(model.parameters()) as counted:
            out = model(xin)
    else:
        out = model(xin)
    F.cross_entropy(out.reshape(-1, out.shape[-1]), yk).backward()
step(True)
model.zero_grad(set_to_none=True)  # the resting state between steps: the step's own gradients count in its peak
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
step(False)
peak = status("VmHWM")
print(json.dumps({"saved_mib": counted["bytes"] / 2**20, "step_peak_mib": peak - before,
                  "params": sum(p.numel() for p in model.parameters())}))
"""

MEMORY_KINDS = ("single", "deepens-deep", "deepens-deep-plain", "deepens-batch", "deepens-batch-plain",
                "deepens-mc-dropout", "torch-uncertainty-batch")


def memory(members: int = 4) -> dict:
    """Saved bytes and step peak of each model, each in a fresh process. glibc's malloc keeps freed memory for reuse
    and moves its mmap threshold with the sizes it sees, so resident memory would follow the allocator's history,
    not the live tensors; a fixed threshold (``MALLOC_MMAP_THRESHOLD_``) maps every large tensor on its own and
    unmaps it when freed, so the peak resident memory is the peak of live tensors."""
    import os

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = {}
    for net, batch in (("cnn", 64), ("convnet", 32)):
        rows = {}
        for kind in MEMORY_KINDS:
            if kind.startswith("torch-uncertainty") and not have("torch_uncertainty"):
                continue
            done = subprocess.run([sys.executable, "-c", _CHILD, net, kind, str(members), str(batch)],
                                  capture_output=True, text=True, check=True, env=env)
            rows[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        out[net] = {"batch": batch, "members": members, "rows": rows}
    out["cnn"]["name"] = f"4-layer CNN {CNN_CHANNELS} on 3×32×32, 10 classes"
    out["convnet"]["name"] = "EE ConvNet width 1 on 3×32×32, 100 classes"
    return out


SWEEP_KINDS = ("loop", "deepens-deep", "deepens-batch", "torch-uncertainty-batch")


def memory_by_members(sizes=(1, 4, 8, 16, 64)) -> dict:
    """Saved bytes and step peak against M for the speed benchmark's networks (MLP 256-256-256-10 batch 64; the
    4-layer CNN on 3×16×16, batch 8), each model in a fresh process as in :func:`memory`: a loop over M networks,
    deepens' DeepEnsemble and BatchEnsemble, torch-uncertainty's BatchEnsemble."""
    import os

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    rows = []
    for net, batch in (("mlp", 64), ("cnn16", 8)):
        for m in sizes:
            for kind in SWEEP_KINDS:
                if kind.startswith("torch-uncertainty") and not have("torch_uncertainty"):
                    continue
                done = subprocess.run([sys.executable, "-c", _CHILD, net, kind, str(m), str(batch)],
                                      capture_output=True, text=True, check=True, env=env)
                rows.append(dict(json.loads(done.stdout.strip().splitlines()[-1]), net=net, kind=kind, members=m,
                                 batch=batch))
    return {"rows": rows, "kinds": list(SWEEP_KINDS)}


def main() -> None:
    quick = "--quick" in sys.argv
    versions = {"torch": torch.__version__, "deepens": d.__version__}
    from importlib.metadata import version

    for name, dist in (("torch_uncertainty", "torch-uncertainty"), ("torchensemble", "torchensemble")):
        if have(name):
            versions[name] = version(dist)
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else ["memory", "speed"]
    result = {"versions": versions}
    if "memory" in only:
        result["memory"] = memory()
        result["memory_by_members"] = memory_by_members((1, 4) if quick else (1, 4, 8, 16, 64))
    if "speed" in only:
        result["speed"] = speed(quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()


# -- in the main benchmark run --------------------------------------------------------------------------------------
def run_in_peers_env(quick: bool = False) -> dict | None:
    """Run this module in ``PEERS_PYTHON`` (default ``.venv-peers/bin/python``, built by ``make bench-peers``);
    None when there is no such interpreter."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    python = os.environ.get("PEERS_PYTHON") or str(root / ".venv-peers" / "bin" / "python")
    if not Path(python).exists():
        return None
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([python, "-m", "benchmarks.bench_peers"] + (["--quick"] if quick else []),
                          capture_output=True, text=True, check=True, env=env, cwd=root)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["figure"] = plot(result, root / "docs" / "figures" / "peers_speedup.png")
    return result


def plot(result: dict, path) -> str:
    """Per-member speed-up against the Python loop (DeepEnsemble) and torch-uncertainty (BatchEnsemble) vs M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, net in zip(axes, ("mlp", "cnn"), strict=True):
        for what, peer, style in (("deep", "loop", "o-"), ("deep", "torch.func", "s--"),
                                  ("deep", "torch-uncertainty", "^-"), ("deep", "torchensemble", "v:"),
                                  ("batch", "torch-uncertainty", "D-")):
            pts = [(r["members"], r["seconds"][peer] / r["seconds"]["deepens"]) for r in result["speed"]["rows"]
                   if r["what"] == what and r["net"] == net and peer in r["seconds"]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{'Deep' if what == 'deep' else 'Batch'}Ensemble: "
                        f"{peer} / deepens")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("members M")
        ax.set_title(result["speed"][net])
    axes[0].set_ylabel("peer time / deepens time (> 1: deepens faster)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(path.parent.parent.parent))


def render(result: dict) -> list[str]:
    v = result["versions"]
    lines = [f"### deepens against its peers (torch {v['torch']}, torch-uncertainty {v.get('torch_uncertainty', '—')}, "
             f"torchensemble {v.get('torchensemble', '—')}; one thread; `make bench-peers`)", ""]
    for mem in result["memory"].values():
        rows = mem["rows"]
        lines += [f"Memory of one train step, {mem['name']}, M = {mem['members']}, batch {mem['batch']} shared by the "
                  "members (saved-for-backward bytes, each storage once, parameters excepted; step peak = resident "
                  "memory of the second step above the process's at rest before it — the first step's gradients "
                  "freed, so a step's own gradients count in its peak — fresh process, malloc with a fixed mmap "
                  "threshold so that resident memory follows the live tensors):", "",
                  "| model | parameters | saved MiB | × DeepEnsemble | step peak MiB | × DeepEnsemble |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        deep = rows["deepens-deep"]
        for kind, r in rows.items():
            lines.append(f"| {kind} | {r['params']:,} | {r['saved_mib']:.1f} | "
                         f"{r['saved_mib'] / deep['saved_mib']:.2f} | {r['step_peak_mib']:.0f} | "
                         f"{r['step_peak_mib'] / max(deep['step_peak_mib'], 1e-9):.2f} |")
        lines.append("")
    sweep = result.get("memory_by_members")
    if sweep:
        kinds = [k for k in sweep["kinds"] if any(r["kind"] == k for r in sweep["rows"])]
        lines += ["Memory against M (the speed benchmark's networks below, each model in a fresh process as above): "
                  "saved MiB / step peak MiB:", "",
                  "| net | M | " + " | ".join(kinds) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in kinds) + " |"]
        cells: dict = {}
        for r in sweep["rows"]:
            cell = f"{r['saved_mib']:.1f} / {r['step_peak_mib']:.1f}"
            cells.setdefault((r["net"], r["members"]), {})[r["kind"]] = cell
        for (net, m), by_kind in cells.items():
            lines.append(f"| {net} | {m} | " + " | ".join(by_kind.get(k, "—") for k in kinds) + " |")
        lines.append("")
    speed = result["speed"]
    peers = ["loop", "torch.func", "torch-uncertainty", "torchensemble"]
    lines += [f"Train step (ms, median; MLP {speed['mlp']}; CNN {speed['cnn']}); MC dropout: predictions of M "
              "members. Ratios are peer time / deepens time (> 1: deepens faster):", "",
              "| what | net | M | deepens ms | " + " | ".join(f"{p} ×" for p in peers) + " |",
              "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in peers) + " |"]
    for r in speed["rows"]:
        s = r["seconds"]
        cells = [f"{s[p] / s['deepens']:.2f}" if p in s else "—" for p in peers]
        lines.append(f"| {r['what']} | {r['net']} | {r['members']} | {s['deepens'] * 1000:.2f} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"![per-member speed-up against the peers]({result['figure']})", ""]
    return lines
