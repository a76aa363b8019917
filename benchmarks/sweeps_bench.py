"""Sweep overheads and executor speed-ups: ``python -m benchmarks.sweeps_bench [--json FILE]``.

1. The index: register N tasks, then claim + finish each (one process), per task.
2. A sweep's overhead per task over direct trainings of the same configurations (in this process).
3. Executors on one machine: 8 tasks (deep ensembles of 8 MLPs 64-256-256-10, 16 epochs of digits, 1 CPU thread
   each) in this process one after another, in a pool of 2 processes, on a local Ray cluster of 2 CPUs;
   and the sequential sweep with 2 threads per task. Median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from deepens.sweeps import Owner, Store, SweepSpec, run_sweep
from deepens.training import TrainConfig, Trainer

EPOCHS = 16


def bench_index(n: int) -> dict:
    spec = SweepSpec.from_dict({"name": "index", "base": {"dataset": "digits", "epochs": 1, "widths": [8]},
                                "grid": {"lr": [0.001 * (i + 1) for i in range(n)]}})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "st", create=True)
        t0 = time.perf_counter()
        store.register(spec)
        register = time.perf_counter() - t0
        me = Owner.me()
        t0 = time.perf_counter()
        while (task := store.claim(me, sweep="index")) is not None:
            run = store.run_dir(task.id)
            run.mkdir(parents=True, exist_ok=True)
            (run / "metrics.json").write_text("{}")
            store.finish(task.id, result={}, wall=0.0)
        cycle = time.perf_counter() - t0
    return {"tasks": n, "register_ms_per_task": 1e3 * register / n, "claim_finish_ms_per_task": 1e3 * cycle / n}


def spec(epochs: int, cpus: int = 1, tasks: int = 8) -> SweepSpec:
    return SweepSpec.from_dict({"name": "bench", "base": {"dataset": "digits", "ensemble": "deep", "members": 8,
                                                          "widths": [256, 256], "epochs": epochs, "data_seed": 0},
                                "grid": {"seed": list(range(tasks))}, "resources": {"cpus": cpus}})


def timed_sweep(s: SweepSpec, **kw) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_sweep(s, Path(tmp) / "st", progress=False, **kw)
        assert summary["trained"] == len(s.tasks), summary
        return time.perf_counter() - t0


def bench_overhead(tasks: int = 16) -> dict:
    s = spec(epochs=1, tasks=tasks)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(TrainConfig.from_dict(s.tasks[0].config), progress=False).fit()  # warm-up: imports, data
        t0 = time.perf_counter()
        for task in s.tasks:
            Trainer(TrainConfig.from_dict(task.config), progress=False).fit()
        direct = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    sweep = statistics.median(timed_sweep(s) for _ in range(3))
    return {"tasks": tasks, "direct_s": direct, "sweep_s": sweep,
            "overhead_ms_per_task": 1e3 * (sweep - direct) / tasks}


def bench_executors(repeats: int) -> dict:
    import ray

    cases = {
        "local, 1 process (1 thread per task)": lambda: timed_sweep(spec(EPOCHS)),
        "local, 1 process (2 threads per task)": lambda: timed_sweep(spec(EPOCHS, cpus=2)),
        "local, pool of 2 processes": lambda: timed_sweep(spec(EPOCHS), workers=2),
    }
    out = {}
    for name, run in cases.items():
        run()  # warm-up
        out[name] = statistics.median(run() for _ in range(repeats))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run = lambda: timed_sweep(spec(EPOCHS), executor="ray")  # noqa: E731
        run()
        out["ray, local cluster of 2 CPUs"] = statistics.median(run() for _ in range(repeats))
    finally:
        ray.shutdown()
    base = out["local, 1 process (1 thread per task)"]
    return {name: {"seconds": sec, "speedup": base / sec} for name, sec in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)
    results = {"index": bench_index(1000), "overhead": bench_overhead(), "executors": bench_executors(args.repeats)}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
