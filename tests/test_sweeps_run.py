"""Sweeps end to end: each task equals a direct training; the process pool and a real local Ray cluster give
the same bytes; failures are retried within the bound; a SIGKILLed sweep resumes to the uninterrupted
result; two sweep processes on one store train every task once."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from deepens.sweeps import Store, SweepSpec, run_sweep
from deepens.sweeps.executors import _ray_train
from deepens.training import TrainConfig, Trainer

TINY = {"dataset": "digits", "ensemble": "deep", "members": 4, "epochs": 2, "widths": [16], "data_seed": 0}


def tiny_spec(**extra):
    return SweepSpec.from_dict({"name": "tiny", "base": TINY, "grid": {"width": [0.5, 1.0]}, "members_per_task": 2,
                                **extra})


def run_files(store: Store, tid: str) -> dict:
    """What must be identical between executors: weights, logits and metrics without timings."""
    run = store.run_dir(tid)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("seconds")
    history = [{k: v for k, v in row.items() if k != "seconds"}
               for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    return {"weights": load_file(run / "model.safetensors"), "logits": load_file(run / "logits.safetensors"),
            "metrics": metrics, "history": history}


def assert_same_runs(a: Store, b: Store, tids) -> None:
    for tid in tids:
        x, y = run_files(a, tid), run_files(b, tid)
        assert x["metrics"] == y["metrics"] and x["history"] == y["history"], tid
        for key in ("weights", "logits"):
            assert x[key].keys() == y[key].keys()
            assert all(torch.equal(x[key][k], y[key][k]) for k in x[key]), (tid, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny sweep, run in this process: the result every other executor must reproduce."""
    store = Store(tmp_path_factory.mktemp("ref") / "store", create=True)
    summary = run_sweep(tiny_spec(), store, progress=False)
    return store, summary


@pytest.mark.slow
def test_local_sweep_trains_each_task_as_a_direct_training(reference):
    store, summary = reference
    spec = tiny_spec()
    assert (summary["tasks"], summary["trained"], summary["done"], summary["failed"]) == (4, 4, 4, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the task ran (resources.cpus = 1)
    try:
        for task in spec.tasks:
            direct = Trainer(TrainConfig.from_dict(task.config), progress=False).fit()
            stored = load_file(store.run_dir(task.id) / "model.safetensors")
            assert all(torch.equal(v, stored[k]) for k, v in direct.model.state_dict().items())
            record = store.task(task.id)
            assert record.result["test_accuracy"] == direct.metrics["test"]["accuracy"]
            assert not (store.run_dir(task.id) / "checkpoints").exists()  # pruned once finished
    finally:
        torch.set_num_threads(threads)
    again = run_sweep(spec, store, progress=False)
    assert (again["trained"], again["done_before"]) == (0, 4)
    assert all(r.attempts == 1 for r in store.tasks("tiny"))


@pytest.mark.slow
def test_process_pool_gives_identical_results(reference, tmp_path):
    ref, _ = reference
    pool = Store(tmp_path / "pool", create=True)
    summary = run_sweep(tiny_spec(keep_checkpoints=True), pool, workers=2, progress=False)
    assert summary["trained"] == 4
    assert_same_runs(ref, pool, [t.id for t in tiny_spec().tasks])
    assert all((pool.run_dir(t.id) / "checkpoint.json").exists() for t in tiny_spec().tasks)  # kept


@pytest.mark.slow
def test_ray_executor_on_a_real_local_cluster_gives_identical_results(reference, tmp_path):
    import ray  # the dev extra installs it (make test); no skip: a missing Ray fails the test

    ref, _ = reference
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store = Store(tmp_path / "ray", create=True)
        summary = run_sweep(tiny_spec(), store, executor="ray", progress=False)
        assert ray.is_initialized()  # a cluster started by the caller is left running
        # a node that cannot see the store (another machine): the driver's store id is unknown to the workers,
        # so they train in a temporary folder and the run directories travel back through Ray's object store
        remote = Store(tmp_path / "remote", create=True)
        remote.id = "an-id-no-worker-finds"
        shipped = run_sweep(tiny_spec(), remote, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert (summary["trained"], summary["failed"]) == (4, 0)
    assert (shipped["trained"], shipped["failed"]) == (4, 0)
    for result in (store, remote):
        assert_same_runs(ref, result, [t.id for t in tiny_spec().tasks])
        assert {r.status for r in result.tasks("tiny")} == {"done"}
    assert not list((tmp_path / "remote" / "runs").glob(".*"))  # no staging folder left behind


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_store_sends_the_run_back(reference, tmp_path):
    ref, _ = reference
    task = tiny_spec().tasks[1]
    outcome = _ray_train(task.config, str(tmp_path / "elsewhere"), "no-such-store", task.id, 1, False)
    assert outcome.ok and "model.safetensors" in outcome.files and not any("checkpoint" in f for f in outcome.files)
    store = Store(tmp_path / "st", create=True)
    store.install_run(task.id, outcome.files)
    assert_same_runs(ref, store, [task.id])


@pytest.mark.slow
def test_failing_tasks_are_retried_within_the_bound(tmp_path):
    spec = SweepSpec.from_dict({"name": "bad", "base": {**TINY, "members": 1},
                                "grid": {"lr": [0.05, 1e6]}, "max_retries": 1})
    store = Store(tmp_path / "st", create=True)
    summary = run_sweep(spec, store, progress=False)
    assert (summary["done"], summary["failed"]) == (1, 1)
    bad = store.task(spec.tasks[1].id)
    assert (bad.status, bad.attempts, bad.failures) == ("failed", 2, 2)
    assert bad.error.startswith("DivergenceError: training diverged at step")
    again = run_sweep(spec, store, progress=False)
    assert again["trained"] == 0 and store.task(bad.id).attempts == 2  # the bound holds across runs
    run_sweep(spec, store, max_retries=2, progress=False)
    assert store.task(bad.id).attempts == 3


# -- processes: kill and resume, concurrent writers ------------------------------------------------------

SLOW = {"dataset": "digits", "ensemble": "deep", "members": 8, "epochs": 12, "widths": [256, 256],
        "checkpoint_seconds": 0, "data_seed": 0}


def slow_spec_file(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(json.dumps({"name": "slow", "base": SLOW, "grid": {"seed": [0, 1, 2, 3]}}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slowref")
    store = Store(tmp / "store", create=True)
    run_sweep(slow_spec_file(tmp), store, progress=False)
    return store


def sweep_process(spec_path, store_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepens", "sweep", "run", str(spec_path), "--store",
                             str(store_path), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def index_rows(store_path):
    if not (store_path / "index.sqlite").exists():
        return []
    db = sqlite3.connect(store_path / "index.sqlite", timeout=30)
    try:
        return db.execute("SELECT id, status FROM tasks").fetchall()
    except sqlite3.OperationalError:  # the schema is not created yet
        return []
    finally:
        db.close()


@pytest.mark.slow
def test_a_sigkilled_sweep_resumes_without_losing_a_finished_task(slow_reference, tmp_path):
    spec_path = slow_spec_file(tmp_path)
    store_path = tmp_path / "store"
    proc = sweep_process(spec_path, store_path)
    deadline = time.monotonic() + 240
    mid_task = None
    while time.monotonic() < deadline and mid_task is None:
        rows = dict(index_rows(store_path))
        if "done" in rows.values():
            for tid, status in rows.items():
                pointer = store_path / "runs" / tid / "checkpoint.json"
                if status == "running" and pointer.exists() and json.loads(pointer.read_text())["epoch"] < 12:
                    mid_task = tid
        time.sleep(0.05)
    assert mid_task is not None, "the sweep never reached a task in the middle of its training"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = {tid for tid, status in index_rows(store_path) if status == "done"}
    stamps = {tid: (store_path / "runs" / tid / "metrics.json").stat().st_mtime_ns for tid in done_before}
    assert dict(index_rows(store_path))[mid_task] == "running"  # its owner died holding the claim

    store = Store(store_path)
    summary = run_sweep(slow_spec_file(tmp_path), store, progress=False)
    assert summary["done"] == 4 and summary["trained"] == 4 - len(done_before)
    assert_same_runs(slow_reference, store, [tid for tid, _ in index_rows(store_path)])
    for tid in done_before:  # finished tasks were not trained again
        assert (store.run_dir(tid) / "metrics.json").stat().st_mtime_ns == stamps[tid]
        assert store.task(tid).attempts == 1
    resumed = store.task(mid_task)
    assert (resumed.attempts, resumed.interruptions, resumed.failures) == (2, 1, 0)
    assert store.integrity() == "ok"


@pytest.mark.slow
def test_two_sweep_processes_on_one_store_train_every_task_once(slow_reference, tmp_path):
    spec_path = slow_spec_file(tmp_path)
    store_path = tmp_path / "store"
    Store(store_path, create=True)
    procs = [sweep_process(spec_path, store_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-800:] for _, err in outs]
    trained = [json.loads(out)["trained"] for out, _ in outs]
    assert sum(trained) == 4 and min(trained) >= 1  # shared, nothing trained twice
    store = Store(store_path)
    assert all(r.status == "done" and r.attempts == 1 for r in store.tasks("slow"))
    assert_same_runs(slow_reference, store, [r.id for r in store.tasks("slow")])
    assert store.integrity() == "ok"


def descendants(pid: int) -> set[int]:
    """Every living descendant of a process, from /proc (parent pids)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
def test_a_sigkilled_pool_sweep_leaves_no_worker_behind_and_resumes(slow_reference, tmp_path):
    from deepens.sweeps.store import pid_alive

    spec_path = slow_spec_file(tmp_path)
    store_path = tmp_path / "store"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepens", "sweep", "run", str(spec_path), "--store",
                             str(store_path), "--workers", "2", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        running = [tid for tid, status in index_rows(store_path) if status == "running"]
        if len(running) == 2 and all((store_path / "runs" / t / "checkpoint.json").exists() for t in running):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the pool never had two tasks training")
    workers = descendants(proc.pid)
    assert len(workers) >= 2  # the fork server and its workers
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in workers), "a pool worker outlived the sweep"
    store = Store(store_path)
    summary = run_sweep(slow_spec_file(tmp_path), store, workers=2, progress=False)
    assert summary["done"] == 4
    assert_same_runs(slow_reference, store, [r.id for r in store.tasks("slow")])
    assert sum(r.interruptions for r in store.tasks("slow")) >= 2


def test_local_gpu_slots_share_devices_by_the_specs_fraction(tmp_path, monkeypatch):
    """resources.gpus = 0.5 on --devices 0,1: four slots, tasks spread over the least loaded GPU, the device
    written into the task's config (not its identity), slots freed when tasks finish; refusals."""
    import deepens as d
    import deepens.sweeps.executors as ex

    slots = ex.GpuSlots([0, 1], 0.5)
    assert slots.slots == 4 and [slots.acquire() for _ in range(4)] == [0, 1, 0, 1]
    with pytest.raises(d.DeepensError, match="slot"):
        slots.acquire()
    slots.release(1)
    assert slots.acquire() == 1
    with pytest.raises(d.DeepensError, match="fractions"):
        ex.GpuSlots([0], 2)
    seen = []
    monkeypatch.setattr(ex, "train_task", lambda config, *a: seen.append(config["device"]) or ex.Outcome(True))

    class T:
        def __init__(self, i):
            self.config, self.resources, self.keep_checkpoints = {"device": "cuda", "seed": i}, {"gpus": 0.5}, False

    runner = ex.make_executor("local", None, workers=1, devices=[3, 5], gpus=0.5)
    assert runner.capacity() == 1
    for i in range(3):
        runner.submit(T(i), tmp_path)
        runner.wait()
    assert seen == ["cuda:3", "cuda:3", "cuda:3"]  # one at a time in this process: the slot is freed each time
    assert ex.make_executor("local", None, devices=[0, 1], gpus=0.25).capacity() == 8
    with pytest.raises(d.DeepensError, match="ray executor places"):
        ex.make_executor("ray", None, devices=[0])


def test_a_script_without_a_main_guard_runs_a_pool_sweep(reference, tmp_path):
    """run_sweep(workers=2) called at the top level of a plain script (no ``if __name__ == "__main__":``): the
    workers do not re-import the script, so every task trains once, nothing fails, and the bytes equal the
    in-process sweep's."""
    ref_store, spec = reference[0], tiny_spec()
    script = tmp_path / "sweep_script.py"
    script.write_text(
        "import json\n"
        "from deepens.sweeps import SweepSpec, run_sweep\n"
        f"spec = SweepSpec.from_dict({{'name': 'tiny', 'base': {TINY!r}, 'grid': {{'width': [0.5, 1.0]}}, "
        "'members_per_task': 2})\n"
        f"summary = run_sweep(spec, {str(tmp_path / 'store')!r}, workers=2, progress=False)\n"
        "print(json.dumps({k: summary[k] for k in ('trained', 'failed', 'pending', 'crashed_now')}))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary == {"trained": len(spec.tasks), "failed": 0, "pending": 0, "crashed_now": []}
    assert_same_runs(ref_store, Store(tmp_path / "store"), [t.id for t in spec.tasks])


def test_a_dead_worker_returns_its_task_to_pending_without_a_failure(tmp_path):
    """An executor whose worker processes die: the tasks go back to pending with no failure counted (a later
    run is not refused by --max-retries), each handed out at most CRASHES_PER_RUN times in one run."""
    from deepens.sweeps.executors import Outcome
    from deepens.sweeps.runner import CRASHES_PER_RUN, drive
    from deepens.sweeps.store import Owner

    spec = tiny_spec()
    store = Store(tmp_path / "store", create=True)
    store.register(spec)
    owner = Owner.me()
    handed = []

    class Dying:
        def __init__(self):
            self.queue = []

        def capacity(self):
            return 2

        def submit(self, task, run_dir):
            handed.append(task.id)
            self.queue.append(task)

        def wait(self):
            task = self.queue.pop(0)
            return [(task, Outcome(False, error="worker process died: BrokenProcessPool", crashed=True))]

    outcomes = []
    drive(store, owner, Dying(), lambda exclude: store.claim(owner, sweep="tiny", max_retries=0, exclude=exclude),
          lambda task, outcome: outcomes.append(outcome.crashed))
    assert sorted(handed) == sorted(t.id for t in spec.tasks for _ in range(CRASHES_PER_RUN))
    assert all(outcomes) and len(outcomes) == CRASHES_PER_RUN * len(spec.tasks)
    records = [store.task(t.id) for t in spec.tasks]
    assert all(r.status == "pending" and r.failures == 0 for r in records)
    summary = run_sweep(spec, store, max_retries=0, progress=False)  # not refused: nothing counted as failed
    assert summary["trained"] == len(spec.tasks) and summary["failed"] == 0
