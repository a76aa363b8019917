"""Run a sweep into a store: register its tasks, claim them one by one, train them on an executor, record
each outcome. Re-running skips done tasks, retries failed ones (at most ``max_retries`` failures each) and
resumes tasks whose previous owner died from their last checkpoint; several processes may run the same
sweep against one store at once (each task is claimed by one of them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DeepensError, check_int, check_real
from .executors import check_executor, make_executor
from .spec import SweepSpec, load_spec
from .store import LEASE_SECONDS, Owner, Store

__all__ = ["run_sweep", "drive", "HEARTBEAT_SECONDS"]

HEARTBEAT_SECONDS = 15.0


class Heartbeat:
    """Refresh this owner's claims every ``interval`` seconds in a background thread."""

    def __init__(self, store: Store, owner: Owner, interval: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(store, owner, interval), daemon=True)
        self._thread.start()

    def _loop(self, store: Store, owner: Owner, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                store.heartbeat(owner)
            except Exception:  # noqa: BLE001 - a missed heartbeat only shortens the lease
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


CRASHES_PER_RUN = 2
"""A task whose worker process died this many times in one run is not handed out again in that run."""


def drive(store: Store, owner: Owner, runner, claim: Callable[[dict], object | None],
          on_outcome: Callable[[object, object], None]) -> None:
    """Keep ``runner`` (an executor) busy with the tasks ``claim(exclude)`` hands out (None: no more now; the
    tasks in ``exclude`` not) until none is left in flight; record every outcome in ``store`` (finished or
    failed) and pass it to ``on_outcome(task, outcome)``. A task whose worker process died (``crashed``) goes
    back to pending without counting as a failure — retried in this run at most :data:`CRASHES_PER_RUN` times.
    Interrupted, the claims in flight go back to the store (their checkpoints stay). The loop of ``deepens
    sweep run`` and of the study's parallel trainings."""
    inflight: dict = {}
    crashes: dict[str, int] = {}  # task → times its worker process died in this run
    try:
        while True:
            while len(inflight) < runner.capacity():
                # a task whose worker died twice here is left pending for another run (it may need more memory)
                task = claim({**inflight, **{t: None for t, n in crashes.items() if n >= CRASHES_PER_RUN}})
                if task is None:
                    break
                inflight[task.id] = task
                runner.submit(task, store.run_dir(task.id))
            if not inflight:
                return
            for task, outcome in runner.wait():
                del inflight[task.id]
                if getattr(outcome, "crashed", False):  # the worker died, not the task: no failure counted
                    crashes[task.id] = crashes.get(task.id, 0) + 1
                    store.release(task.id, owner)
                    on_outcome(task, outcome)
                    continue
                if outcome.ok:
                    try:
                        store.finish(task.id, result=outcome.result, wall=outcome.wall, worker=outcome.worker)
                    except DeepensError as exc:  # e.g. a run directory sent back that could not be installed
                        outcome.ok, outcome.error = False, str(exc)
                if not outcome.ok:
                    store.fail(task.id, outcome.error or "unknown error", wall=outcome.wall)
                on_outcome(task, outcome)
    except BaseException:
        for tid in list(inflight):
            store.release(tid, owner)
        raise


def run_sweep(
    spec: SweepSpec | str | Path,
    store: Store | str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    max_retries: int | None = None,
    lease: float | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    devices: list[int] | None = None,
) -> dict:
    """Train every task of ``spec`` (a :class:`SweepSpec` or a spec file) into ``store`` (created if needed).

    ``executor`` is ``local`` (``workers`` processes; 1: in this process) or ``ray`` (``address`` of a
    cluster, or a local one with ``workers`` CPUs). ``devices``: local GPU indices shared by the tasks as the
    spec's ``resources.gpus`` says (0.5: two tasks per GPU; default one worker per slot). ``max_retries``
    overrides the spec's bound on failures per task; ``lease`` the seconds without heartbeat after which another
    host's claim is taken over. Returns a summary (tasks trained now, done before, failed, left running elsewhere).
    """
    check_executor(executor, address)
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    lease = LEASE_SECONDS if lease is None else check_real("lease", lease, low=0.0)
    retries = spec.max_retries if max_retries is None else check_int("max_retries", max_retries, minimum=0)
    if workers is not None:
        check_int("workers", workers, minimum=1)
    store = store if isinstance(store, Store) else Store(store, create=True, lease=lease)
    store.lease = lease
    say = log or (lambda _msg: None)
    registered = store.register(spec)
    before = store.status(spec.name)["sweeps"][0]
    say(f"sweep {spec.name}: {len(spec.tasks)} tasks ({before['done']} done earlier, {registered['new']} new"
        f"{', spec changed' if registered['spec_changed'] else ''}); executor {executor}")
    runner = make_executor(executor, store, workers=workers, address=address, devices=devices,
                           gpus=float(spec.resources.get("gpus", 0)))
    owner = Owner.me()
    beat = Heartbeat(store, owner, min(HEARTBEAT_SECONDS, max(lease / 4, 0.05)))
    started = time.perf_counter()
    trained, failed_now, crashed_now = [], [], []
    bar = tqdm(total=len(spec.tasks) - before["done"], desc=f"sweep {spec.name}", unit="task",
               disable=None if progress is None else not progress, dynamic_ncols=True)

    def on_outcome(task, outcome) -> None:
        if outcome.crashed:
            crashed_now.append({"id": task.id, "label": task.label, "error": outcome.error})
            say(f"task {task.id} ({task.label}): {(outcome.error or '').splitlines()[0]} — back to pending, not "
                "counted as a failure")
        elif outcome.ok:
            trained.append(task.id)
            bar.update(1)
        else:
            failed_now.append({"id": task.id, "label": task.label, "error": outcome.error})
            say(f"task {task.id} ({task.label}) failed (attempt {task.attempts}): "
                f"{(outcome.error or '').splitlines()[0]}")

    try:
        drive(store, owner, runner, lambda inflight: store.claim(owner, sweep=spec.name, max_retries=retries,
                                                                 exclude=inflight, executor=executor), on_outcome)
    finally:
        bar.close()
        beat.stop()
        runner.close()
    after = store.status(spec.name)["sweeps"][0]
    return {
        "sweep": spec.name, "spec_hash": spec.hash, "store": str(store.root), "executor": executor,
        "workers": workers, "tasks": len(spec.tasks), "done_before": before["done"], "trained": len(trained),
        "failed_now": failed_now, "crashed_now": crashed_now,
        "done": after["done"], "failed": after["failed"], "pending": after["pending"],
        "running_elsewhere": after["running"], "seconds": time.perf_counter() - started,
        "max_retries": retries, "status": after,
    }

