"""Training acceptance timings (issue: training, §6): the full ``deepens train`` command, as a user runs
it (interpreter start, imports, data, training, evaluation, run directory), on digits."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEEP = ["--dataset", "digits", "--model", "mlp", "--widths", "128,128", "--ensemble", "deep", "--members", "8",
        "--epochs", "60", "--batch-size", "64", "--lr", "0.1", "--schedule", "cosine", "--weight-decay", "1e-3",
        "--seed", "0"]


def _run(args: list[str], device: str) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "deepens", "train", *args, "--device", device,
                              "--out", str(Path(tmp) / "run"), "--json"], capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    return seconds, json.loads(out.stdout)


def thread_policy(repeats: int = 2, settle: float = 60.0) -> dict:
    """The digits training (M = 8 deep MLPs, 5 epochs; the whole command) with --threads auto / 1 / all, on the
    idle machine and under a competing CPU load the benchmark starts itself (one busy process per core, given
    ``settle`` seconds for the 1-minute load average — what auto reads — to see it); alternating runs, medians."""
    import os
    import statistics

    from deepens.training.threads import usable_cores

    cores = usable_cores()
    args = [a if a != "60" else "5" for a in DEEP]
    settings = {"auto": "auto", "1": "1", f"all ({cores})": str(cores)}

    def measure() -> dict:
        times: dict = {k: [] for k in settings}
        for _ in range(repeats):
            for label, value in settings.items():
                seconds, result = _run([*args, "--threads", value], "cpu")
                times[label].append((seconds, result.get("threads")))
        return {k: {"seconds": statistics.median(t for t, _ in v), "threads": v[-1][1]} for k, v in times.items()}

    idle = measure()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(settle)
        load = os.getloadavg()[0]
        loaded = measure()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return {"name": "deepens train on digits (M = 8 MLPs, 5 epochs, whole command) by --threads", "cores": cores,
            "idle": idle, "loaded": loaded, "load_average": load, "competing_processes": cores}


def digits_acceptance(device: str = "cpu") -> dict:
    rows = {}
    seconds, result = _run(DEEP, device)
    test = result["test"]
    rows["deep"] = {"seconds": seconds, "train_seconds": result["seconds"], "test_accuracy": test["accuracy"],
                    "member_accuracy": test["member_accuracy"], "gain": test["gain"],
                    "correlation": test["correlation"]}
    for p in ("0", "0.9"):
        args = [a if a != "deep" else "batch" for a in DEEP]
        args[args.index("--lr") + 1] = "0.05"
        seconds, result = _run([*args, "--modulation", f"shifted-normal:{p}"], device)
        test = result["test"]
        rows[f"batch_p{p}"] = {"seconds": seconds, "train_seconds": result["seconds"],
                               "test_accuracy": test["accuracy"], "member_accuracy": test["member_accuracy"],
                               "gain": test["gain"], "correlation": test["correlation"]}
    return {"name": "deepens train on digits, M = 8 MLPs 64→128→128→10 (whole command)", "rows": rows,
            "targets": {"deep_seconds": 120.0, "deep_test_accuracy": 0.97}}


def _family(name: str, small: bool):
    from deepens.models import VGG16, WideResNet

    return VGG16(100, 8 if small else 64) if name == "vgg16" else WideResNet(16, 8 if small else 64, 100)


def _process_member(family: str, small: bool, device: str, batch: int, steps: int, threads: int, seed: int,
                    barrier) -> None:
    """One member trained in its own process (what a user without deepens runs: M copies of a training script):
    warm up, wait for every process at the barrier, take ``steps`` steps, wait again."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = _family(family, small).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    barrier.wait()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    barrier.wait()


def _separate_processes(family: str, small: bool, m: int, device: str, batch: int, steps: int) -> float:
    """Images per second of ``m`` processes training one network each at once (all members counted; CPU threads
    split between them), from the release of the start barrier to the last process's end."""
    import multiprocessing as mp
    import os
    import time

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(m + 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // m)
    procs = [ctx.Process(target=_process_member, args=(family, small, device, batch, steps, threads, i, barrier))
             for i in range(m)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    barrier.wait()
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
    return m * batch * steps / seconds


def cifar_throughput(device: str = "cpu", batch: int = 64, repeats: int = 7) -> dict:
    """Training throughput (images per second, all members counted) of ensembles of the CIFAR networks on random
    3×32×32 batches: DeepEnsemble M ∈ {1, 4, 8} of VGG16 and WRN-16 (w = 8 on CPU; 64 / 4·16 on CUDA) against a
    Python loop over M separate networks, against M separate processes training one network each at once
    (M ≥ 4), BatchEnsemble M = 4, and bf16 autocast. Ratios within one run."""
    import torch
    from torch.nn import functional as F

    import deepens as d
    from deepens.training.trainer import training_step

    from .harness import compare

    small = device == "cpu"
    families = {"vgg16": lambda: _family("vgg16", small), "wrn-16": lambda: _family("wrn-16", small)}
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (batch,), device=device)
    rows = []
    for family, make in families.items():
        for m in (1, 4, 8):
            torch.manual_seed(0)
            nets = [make().to(device) for _ in range(m)]
            ens = d.DeepEnsemble.from_modules(nets).to(device)
            opt = torch.optim.SGD(ens.parameters(), lr=0.01, momentum=0.9)
            opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9) for n in nets]

            def loop(nets=nets, opts=opts):
                for net, o in zip(nets, opts, strict=True):
                    o.zero_grad(set_to_none=True)
                    F.cross_entropy(net(x), y).backward()
                    o.step()

            candidates = {"deepens": lambda ens=ens, opt=opt: training_step(ens, opt, x, y),
                          "deepens_bf16": lambda ens=ens, opt=opt: training_step(ens, opt, x, y, amp="bf16"),
                          "loop": loop}
            if m == 4:
                be = d.BatchEnsemble(make(), 4, seed=0).to(device)
                be_opt = torch.optim.SGD(be.parameters(), lr=0.01, momentum=0.9)
                candidates["batch_ensemble"] = lambda be=be, o=be_opt: training_step(be, o, x, y)
            seconds = compare(candidates, warmup=2, repeats=repeats, inner=1, device=device)
            row = {"family": family, "members": m,
                   **{f"{k}_images_per_s": m * batch / v for k, v in seconds.items()},
                   "speedup_vs_loop": seconds["loop"] / seconds["deepens"]}
            if m >= 4:
                rate = _separate_processes(family, small, m, device, batch, steps=max(4, repeats))
                row["processes_images_per_s"] = rate
                row["speedup_vs_processes"] = row["deepens_images_per_s"] / rate
            rows.append(row)
    return {"name": "training throughput of CIFAR networks (images/s, members counted), batch "
                    f"{batch} of 3×32×32, {'w = 8 (CPU)' if small else 'VGG16 w = 64, WRN-16-4'}",
            "device": device, "rows": rows}
