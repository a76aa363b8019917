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
