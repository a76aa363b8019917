"""How many torch threads a training uses: a number, or ``auto`` — the default — which does not collapse on a
shared machine.

``auto`` starts from the cores this process may run on (the affinity mask; ``OMP_NUM_THREADS`` when set caps it)
and subtracts the load the other processes put on them (the 1-minute load average, rounded): on an idle 2-core
machine a training takes both cores, on one where other jobs keep the cores busy it takes one instead of fighting
for two (measured in docs/benchmarks.md: with a competing load, 2 threads take about twice as long as 1). Worker
processes of the study and of sweeps take their own fixed share (one thread each, or the task's ``cpus``).
"""

from __future__ import annotations

import contextlib
import os

from ..errors import DeepensError

__all__ = ["resolve_threads", "usable_cores", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch intra-op threads, then restore the previous number: a training's
    numbers depend on it (the blocking of CPU kernels), so every executor trains a task with the same."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), capped by ``OMP_NUM_THREADS`` when that is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores)


def resolve_threads(threads: int | str | None = "auto", *, load: float | None = None,
                    cores: int | None = None) -> int:
    """The torch thread count for ``threads``: a positive integer as given, or for ``auto`` / None the usable
    cores minus the rounded 1-minute load average of the machine (at least 1). ``load`` and ``cores`` override
    the measured values (tests)."""
    if threads is None or (isinstance(threads, str) and threads.strip().lower() == "auto"):
        cores = usable_cores() if cores is None else int(cores)
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (OSError, AttributeError):  # no load average on this platform: all usable cores
                load = 0.0
        return max(1, min(cores, cores - int(round(max(0.0, load)))))
    try:
        value = int(threads)
    except (TypeError, ValueError):
        raise DeepensError(f"threads: expected a positive number of threads or auto, got {threads!r}") from None
    if value < 1 or str(value) != str(threads).strip() and not isinstance(threads, int):
        raise DeepensError(f"threads: expected a positive number of threads or auto, got {threads!r}")
    return value
