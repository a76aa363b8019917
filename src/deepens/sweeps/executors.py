"""Executors: where the tasks of a sweep train.

- ``local`` (default): in this process, one task after another (``workers=1``), or a small pool of
  worker processes (``workers > 1``; forked from a fresh fork server, each exits when the sweep's process
  dies).
- ``ray``: tasks on a Ray cluster, reached with ``ray.init(address=...)`` or started locally; each task
  asks Ray for the spec's ``resources`` (CPUs, GPUs). Needs the optional extra ``deepens[ray]``.

Every executor trains a task with :func:`train_task`, which sets the number of torch threads to the
task's ``cpus`` and trains with the deepens trainer (``resume=True``, so an interrupted task continues from
its last checkpoint): the same spec and seeds give the same weights and logits whichever executor runs it.
A Ray worker trains in the store's run directory when it can see the store (same machine or a shared
file system) and otherwise in a local temporary folder whose finished run directory it sends back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ..errors import DeepensError
from ..training.threads import torch_threads

__all__ = ["train_task", "torch_threads", "Outcome", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS"]

EXECUTORS = ("local", "ray")


@dataclass
class Outcome:
    """What came back from one task: a result summary, or an error; the worker's wall time."""

    ok: bool
    result: dict | None = None
    error: str | None = None
    wall: float = 0.0
    worker: str = ""
    files: dict | None = None  # a run directory sent back by a worker that cannot see the store
    crashed: bool = False  # the worker process died (not the task's failure: the task goes back to pending)


def result_summary(metrics: dict) -> dict:
    """The index's summary of a finished training's metrics."""
    out = {key: metrics.get(key) for key in ("members", "ensemble", "epochs", "steps", "seconds")}
    for split in ("val", "test"):
        for key in ("accuracy", "nll", "member_accuracy"):
            value = metrics.get(split, {}).get(key)
            if value is not None:
                out[f"{split}_{key}"] = value
    return out


def prune_checkpoints(run_dir: Path) -> None:
    """Remove a finished run's checkpoints (its weights, logits and metrics stay)."""
    (run_dir / "checkpoint.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def train_run(config, run_dir: str | Path, keep_checkpoints: bool = False):
    """Train (or resume, or load if finished) one training into ``run_dir``; drop its checkpoints once it is
    finished unless ``keep_checkpoints``. Returns the trainer's TrainResult; errors propagate."""
    from ..training import TrainConfig, Trainer

    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    result = Trainer(config, run_dir, progress=False).fit(resume=True)
    if not keep_checkpoints:
        prune_checkpoints(Path(run_dir))
    return result


def train_task(config: dict, run_dir: str, threads: int = 1, keep_checkpoints: bool = False) -> Outcome:
    """Train one task into ``run_dir`` (resuming it if it was interrupted) with ``threads`` torch threads.
    Never raises: an error comes back as ``Outcome(ok=False, error=...)``."""
    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        with torch_threads(threads):
            result = train_run(config, run_dir, keep_checkpoints)
        return Outcome(True, result_summary(result.metrics), wall=time.perf_counter() - started, worker=worker)
    except Exception as exc:  # noqa: BLE001 - any failure of a task is recorded, not raised
        error = f"{type(exc).__name__}: {exc}"  # bad input or divergence: the message says it all
        if not isinstance(exc, DeepensError):
            error += "\n" + "".join(traceback.format_exception(exc)[-6:])
        return Outcome(False, error=error, wall=time.perf_counter() - started, worker=worker)


def _watch_parent(parent: int) -> None:
    """Pool workers: exit when the sweep's process is gone (e.g. SIGKILLed), so no orphan keeps training."""
    from .store import pid_alive

    def loop() -> None:
        while True:
            if not pid_alive(parent):
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True).start()


@contextlib.contextmanager
def _main_not_imported():
    """Start worker processes without re-importing the caller's ``__main__`` in them: the workers run
    :func:`train_task` on plain configurations and never need it, and a script that calls ``run_sweep`` (or a
    study) without an ``if __name__ == "__main__":`` guard would otherwise start the sweep again in every worker
    and break the pool. Hides ``__main__``'s ``__file__`` / ``__spec__`` from multiprocessing while processes
    start."""
    import sys

    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _pool_context():
    """Workers forked from a fresh server process that has imported torch (with torch._dynamo, which the
    first optimizer imports: ~3 s), scikit-learn and the trainer, but run nothing: safe like spawn, and
    each worker starts without paying those imports again."""
    try:
        context = get_context("forkserver")
    except ValueError:  # no fork server on this platform
        return get_context("spawn")
    context.set_forkserver_preload(["torch", "torch._dynamo", "sklearn.datasets", "deepens.training",
                                    "deepens.sweeps.executors"])
    return context


class GpuSlots:
    """Which local GPU a task runs on: every task asking for a fraction g ≤ 1 of a GPU takes g of the least
    loaded device among ``devices`` that still has g free (g = 0.5: two tasks per GPU)."""

    def __init__(self, devices: list[int], fraction: float) -> None:
        if not devices:
            raise DeepensError("devices: expected at least one GPU index, e.g. 0,1")
        if not 0 < fraction <= 1:
            raise DeepensError(f"resources.gpus: the local executor shares GPUs by fractions in (0, 1], got "
                               f"{fraction}; use the ray executor for tasks spanning several GPUs")
        self.devices = [int(d) for d in devices]
        self.fraction = float(fraction)
        self.used = dict.fromkeys(self.devices, 0.0)

    @property
    def slots(self) -> int:
        return len(self.devices) * int(1.0 / self.fraction + 1e-9)

    def acquire(self) -> int:
        free = [d for d in self.devices if self.used[d] + self.fraction <= 1.0 + 1e-9]
        if not free:
            raise DeepensError("devices: every GPU slot is taken")
        device = min(free, key=lambda d: (self.used[d], self.devices.index(d)))
        self.used[device] += self.fraction
        return device

    def release(self, device: int) -> None:
        self.used[device] = max(0.0, self.used[device] - self.fraction)


class LocalExecutor:
    """Tasks in this process (``workers=1``) or in a pool of ``workers`` processes; with ``devices`` (local GPU
    indices) each task that asks for GPUs (``resources.gpus``, a fraction ≤ 1) trains on ``cuda:N`` of a free
    slot (at most 1/gpus tasks per GPU)."""

    name = "local"

    def __init__(self, workers: int = 1, devices: list[int] | None = None, gpus: float = 0.0):
        self.gpu = GpuSlots(devices, gpus) if devices and gpus > 0 else None
        self.workers = int(workers)
        self._queue: list = []
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future, object] = {}
        self._device: dict[int, int] = {}  # id(task) → GPU it holds

    def capacity(self) -> int:
        return self.workers if self.gpu is None else min(self.workers, self.gpu.slots)

    def submit(self, task, run_dir: Path) -> None:
        config = task.config
        if self.gpu is not None:
            device = self.gpu.acquire()
            self._device[id(task)] = device
            config = {**config, "device": f"cuda:{device}"}  # the device is not part of a task's identity
        args = (config, str(run_dir), task.resources.get("cpus", 1), task.keep_checkpoints)
        if self.workers == 1:
            self._queue.append((task, args))
            return
        with _main_not_imported():  # processes start in submit
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=_pool_context(),
                                                 initializer=_watch_parent, initargs=(os.getpid(),))
            self._futures[self._pool.submit(train_task, *args)] = task

    def _release(self, task) -> None:
        device = self._device.pop(id(task), None)
        if device is not None and self.gpu is not None:
            self.gpu.release(device)

    def wait(self) -> list[tuple[object, Outcome]]:
        if self.workers == 1:
            task, args = self._queue.pop(0)
            try:
                return [(task, train_task(*args))]
            finally:
                self._release(task)
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            task = self._futures.pop(future)
            self._release(task)
            try:
                out.append((task, future.result()))
            except Exception as exc:  # noqa: BLE001 - a worker process died (killed, out of memory)
                out.append((task, Outcome(False, error=f"worker process died: {type(exc).__name__}: {exc}",
                                          crashed=True)))
                self._restart_pool()
        return out

    def _restart_pool(self) -> None:
        """A dead worker breaks the whole pool (every task in it comes back ``crashed``: pending again, not a
        failure); the next submit starts a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _ray_train(config: dict, store_root: str, store_id: str, tid: str, threads: int, keep: bool) -> Outcome:
    """The Ray task: train in the store if this node sees it, else in a temporary folder sent back."""
    import json

    marker = Path(store_root) / "store.json"
    try:
        visible = json.loads(marker.read_text()).get("id") == store_id
    except (OSError, ValueError):
        visible = False
    if visible:
        return train_task(config, str(Path(store_root) / "runs" / tid), threads, keep)
    with tempfile.TemporaryDirectory(prefix="deepens-task-") as tmp:
        run_dir = Path(tmp) / tid
        outcome = train_task(config, str(run_dir), threads, keep)
        if outcome.ok:
            outcome.files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
                             if p.is_file()}
        return outcome


class RayExecutor:
    """Tasks on a Ray cluster: ``address`` (``auto`` or ``HEAD_IP:6379``) or a local cluster."""

    name = "ray"

    def __init__(self, store, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise DeepensError("executor: ray is not installed; install the extra: "
                               "pip install 'deepens[ray]'") from None
        self.ray = ray
        self.store = store
        self._started = False
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
            try:
                ray.init(log_to_driver=False, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise DeepensError(f"address: cannot connect to {where} ({' '.join(str(exc).split())})") from None
            self._started = True
        self._remote = ray.remote(_ray_train)
        self._refs: dict = {}

    def capacity(self) -> int:
        cpus = self.ray.cluster_resources().get("CPU", 1.0)
        return max(1, int(cpus)) * 2  # keep every CPU busy and one more task queued per CPU

    def submit(self, task, run_dir: Path) -> None:
        res = task.resources
        ref = self._remote.options(num_cpus=res.get("cpus", 1), num_gpus=res.get("gpus", 0), max_retries=0).remote(
            task.config, str(self.store.root.resolve()), self.store.id, task.id, res.get("cpus", 1),
            task.keep_checkpoints)
        self._refs[ref] = task

    def wait(self) -> list[tuple[object, Outcome]]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the worker or its node died
                outcome = Outcome(False, error=f"ray task failed: {type(exc).__name__}: {' '.join(str(exc).split())}")
            if outcome.ok and outcome.files is not None:
                try:
                    self.store.install_run(task.id, outcome.files)
                except (OSError, DeepensError) as exc:
                    outcome = Outcome(False, error=f"cannot install the run sent back by {outcome.worker}: {exc}")
                outcome.files = None
            out.append((task, outcome))
        return out

    def close(self) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self.ray.shutdown()


def check_executor(name: str, address: str | None = None) -> None:
    """Refuse an unknown executor, or an address for the local one, before anything is written."""
    if name not in EXECUTORS:
        raise DeepensError(f"executor: expected one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local" and address:
        raise DeepensError("address: only the ray executor connects to a cluster; add --executor ray")


def make_executor(name: str, store, *, workers: int | None = None, address: str | None = None,
                  devices: list[int] | None = None, gpus: float = 0.0):
    check_executor(name, address)
    if name == "local":
        if devices and gpus > 0 and workers is None:  # one worker per GPU slot
            workers = GpuSlots(devices, gpus).slots
        return LocalExecutor(1 if workers is None else workers, devices, gpus)
    if devices:
        raise DeepensError("devices: the ray executor places tasks on its cluster's GPUs itself; drop --devices")
    return RayExecutor(store, address, workers)
