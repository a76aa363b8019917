"""The sweep store: registration, claims (ordered, exclusive, bounded retries, stale owners), concurrent
claimers in separate processes, merging and installing shipped run directories."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from deepens.errors import DeepensError
from deepens.sweeps import Owner, Store, SweepSpec

BASE = {"dataset": "digits", "ensemble": "deep", "members": 1, "epochs": 1, "widths": [8]}


def spec(n=4, name="s", **extra):
    return SweepSpec.from_dict({"name": name, "base": BASE, "grid": {"lr": [0.01 * (i + 1) for i in range(n)]},
                                **extra})


def fake_finish(store, task):
    """What a trainer leaves: a run directory with metrics.json (the index checks it)."""
    run = store.run_dir(task.id)
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"seconds": 0.5}))
    store.finish(task.id, result={"seconds": 0.5}, wall=0.6)


def test_register_counts_new_known_and_changed(tmp_path):
    store = Store(tmp_path / "st", create=True)
    assert store.register(spec(3)) == {"new": 3, "known": 0, "reset": 0, "spec_changed": False}
    assert store.register(spec(3)) == {"new": 0, "known": 3, "reset": 0, "spec_changed": False}
    assert store.register(spec(5)) == {"new": 2, "known": 3, "reset": 0, "spec_changed": True}
    assert [t.id for t in store.tasks("s")] == [t.id for t in spec(5).tasks]
    assert store.integrity() == "ok"
    assert json.loads((tmp_path / "st" / "store.json").read_text())["format"] == 1
    db = sqlite3.connect(tmp_path / "st" / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_claims_follow_the_sweep_order_and_are_exclusive(tmp_path):
    store = Store(tmp_path / "st", create=True)
    s = spec(4)
    store.register(s)
    me = Owner.me()
    first = store.claim(me, sweep="s")
    second = store.claim(me, sweep="s")
    assert [first.id, second.id] == [s.tasks[0].id, s.tasks[1].id]
    assert first.status == "running" and first.attempts == 1 and first.label == s.tasks[0].label
    assert store.claim(me, sweep="s", exclude=[s.tasks[2].id]).id == s.tasks[3].id
    assert store.claim(Owner.me(), sweep="s").id == s.tasks[2].id  # another live owner of this process
    assert store.claim(Owner.me(), sweep="s") is None  # all running, owners alive and beating
    with pytest.raises(DeepensError, match="has no metrics.json"):
        store.finish(first.id, result={}, wall=0.0)
    fake_finish(store, first)
    status = store.status("s")["sweeps"][0]
    assert (status["done"], status["running"], status["pending"]) == (1, 3, 0)
    assert status["train_seconds"] == 0.5


def test_failures_are_retried_within_the_bound(tmp_path):
    store = Store(tmp_path / "st", create=True)
    store.register(spec(1))
    me = Owner.me()
    for attempt in range(1, 4):
        task = store.claim(me, sweep="s", max_retries=2)
        assert task is not None and task.attempts == attempt
        store.fail(task.id, f"boom {attempt}")
    assert store.claim(me, sweep="s", max_retries=2) is None  # 3 failures > 2 retries
    record = store.tasks("s")[0]
    assert (record.status, record.failures, record.error) == ("failed", 3, "boom 3")
    assert store.claim(me, sweep="s", max_retries=3).attempts == 4  # a larger bound tries again


def test_released_claims_are_interruptions_not_failures(tmp_path):
    store = Store(tmp_path / "st", create=True)
    store.register(spec(1))
    me = Owner.me()
    task = store.claim(me, sweep="s")
    store.release(task.id, me)
    again = store.claim(me, sweep="s")
    assert (again.attempts, again.failures, again.interruptions) == (2, 0, 1)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_owner_is_taken_over_a_live_one_only_after_its_lease(tmp_path):
    store = Store(tmp_path / "st", create=True, lease=60)
    store.register(spec(2))
    host = Owner.me().host
    dead = Owner(host, _dead_pid(), "dead")
    alive = Owner(host, os.getppid(), "alive")  # pytest's parent: alive, not us
    t_alive = store.claim(alive, sweep="s")
    t_dead = store.claim(dead, sweep="s")
    assert t_alive.id != t_dead.id
    me = Owner.me()
    taken = store.claim(me, sweep="s")
    assert taken.id == t_dead.id and taken.interruptions == 1 and taken.attempts == 2
    assert store.claim(me, sweep="s") is None  # the live owner's claim holds
    remote = Owner("another-host", 1, "r")  # another host: only the lease decides
    store.release(taken.id, me)
    assert store.claim(remote, sweep="s").id == t_dead.id
    assert store.claim(me, sweep="s") is None
    store.lease = 0.0
    time.sleep(0.01)
    assert {store.claim(me, sweep="s").id, store.claim(me, sweep="s").id} == {t_dead.id, t_alive.id}
    status = Store(tmp_path / "st").status()["total"]
    assert status["running"] == 2 and status["interruptions"] == 4  # take-over, release, two lease expiries


CLAIMER = textwrap.dedent("""
    import json, sys
    from deepens.sweeps import Owner, Store
    store, me, got = Store(sys.argv[1]), Owner.me(), []
    while (task := store.claim(me, sweep="s")) is not None:
        run = store.run_dir(task.id)
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text("{}")
        store.finish(task.id, result={"by": me.pid}, wall=0.0)
        got.append(task.id)
    print(json.dumps(got))
""")


@pytest.mark.slow
def test_concurrent_claimers_in_four_processes_take_every_task_once(tmp_path):
    store = Store(tmp_path / "st", create=True)
    s = spec(120)
    store.register(s)
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "st")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    claimed = [tid for out, _ in outs for tid in json.loads(out)]
    assert sorted(claimed) == sorted(t.id for t in s.tasks)  # every task exactly once
    assert sum(1 for out, _ in outs if json.loads(out)) >= 2  # the work was shared
    records = store.tasks("s")
    assert all(r.status == "done" and r.attempts == 1 for r in records)
    assert store.integrity() == "ok"


def test_merge_copies_finished_runs_and_their_index_rows(tmp_path):
    src = Store(tmp_path / "a", create=True)
    s = spec(3)
    src.register(s)
    me = Owner.me()
    for _ in range(2):
        fake_finish(src, src.claim(me, sweep="s"))
    (src.run_dir(s.tasks[0].id) / "logits.safetensors").write_bytes(b"x" * 10)
    dst = Store(tmp_path / "b", create=True)
    dst.register(s)
    here = Owner.me()
    training_here = dst.claim(here, sweep="s")  # task 0 is being trained here: left alone
    assert training_here.id == s.tasks[0].id
    assert dst.merge(src) == {"copied": 1, "already_done": 0, "running_here": 1}
    assert not dst.run_dir(s.tasks[0].id).exists() and dst.task(s.tasks[0].id).status == "running"
    dst.release(training_here.id, here)
    assert dst.merge(src) == {"copied": 1, "already_done": 1, "running_here": 0}
    assert (dst.run_dir(s.tasks[0].id) / "logits.safetensors").read_bytes() == b"x" * 10
    rows = {r.id: r for r in dst.tasks("s")}
    assert [rows[t.id].status for t in s.tasks] == ["done", "done", "pending"]
    assert rows[s.tasks[0].id].result == {"seconds": 0.5}
    assert dst.merge(src) == {"copied": 0, "already_done": 2, "running_here": 0}
    assert dst.integrity() == "ok"


def test_install_run_replaces_an_unfinished_directory_and_stays_inside(tmp_path):
    store = Store(tmp_path / "st", create=True)
    (store.run_dir("t1") / "checkpoints").mkdir(parents=True)
    store.install_run("t1", {"metrics.json": b"{}", "sub/x.bin": b"1"})
    assert sorted(p.name for p in store.run_dir("t1").iterdir()) == ["metrics.json", "sub"]
    with pytest.raises(DeepensError, match="outside the run directory"):
        store.install_run("t2", {"../../evil": b"1"})
    assert not (tmp_path / "evil").exists()


def test_store_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(DeepensError, match="holds no deepens store"):
        Store(tmp_path / "none")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(DeepensError, match="non-empty folder that holds no store"):
        Store(tmp_path / "full", create=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(DeepensError, match="is a file"):
        Store(tmp_path / "file", create=True)
    store = Store(tmp_path / "st", create=True)
    with pytest.raises(DeepensError, match="has no sweep 'nope'"):
        store.status("nope")


CREATOR = "import sys; from deepens.sweeps import Store; print(Store(sys.argv[1], create=True).id)"


def test_processes_creating_one_store_at_once_agree_on_its_id(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    procs = [subprocess.Popen([sys.executable, "-c", CREATOR, str(tmp_path / "st")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: Store(tmp_path / "st", create=True), range(8)))
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-300:] for _, err in outs]
    assert len({s.id for s in stores} | {out.strip() for out, _ in outs}) == 1
    assert sorted(p.name for p in (tmp_path / "st").iterdir() if not p.name.startswith("index.sqlite")) == [
        "runs", "store.json"]
    assert stores[0].integrity() == "ok"
