"""The results store of sweeps: one run directory per task and an SQLite index in WAL mode.

::

    STORE/store.json          the store's identity (format, id), written once
    STORE/index.sqlite        the index (+ index.sqlite-wal / -shm while a process has it open)
    STORE/runs/<task id>/     one run directory per task, in the format of ``deepens train`` (runs.RunDir)

The index has one row per task (its configuration, status ``pending | running | done | failed``,
attempts, failures, interruptions, owner and heartbeat, timings, last error, a result summary), one row
per sweep (its spec and the spec's hash) and the tasks of each sweep in order. Nothing in it is an
absolute path, so a store can be copied to another machine as a folder.

Every change of the index is one SQLite transaction; a task is claimed with ``BEGIN IMMEDIATE``, so two
processes never claim the same task. A running task whose owner died (same host: its process is gone;
any host: no heartbeat for ``lease`` seconds) is claimable again and resumes from its run directory's
last checkpoint. A task is marked done only after its run directory holds ``metrics.json``, the last
file the trainer writes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeepensError
from ..io import atomic_write_json
from ..runs.rundir import RunDir, jsonable
from .spec import SweepSpec

__all__ = ["Store", "TaskRecord", "Owner", "FORMAT", "LEASE_SECONDS"]

FORMAT = 1
LEASE_SECONDS = 120.0
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    resources TEXT NOT NULL,
    keep_checkpoints INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    owner TEXT, heartbeat REAL,
    executor TEXT, worker TEXT,
    created REAL NOT NULL, claimed REAL, finished REAL, seconds REAL, wall REAL,
    error TEXT, result TEXT
);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, spec_hash TEXT NOT NULL, spec TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_tasks (
    sweep TEXT NOT NULL, task TEXT NOT NULL, position INTEGER NOT NULL, point INTEGER NOT NULL,
    chunk INTEGER NOT NULL, label TEXT NOT NULL, PRIMARY KEY (sweep, task)
);
CREATE INDEX IF NOT EXISTS sweep_tasks_order ON sweep_tasks (sweep, position);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
INSERT OR IGNORE INTO meta (key, value) VALUES ('format', '1');
"""


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host, process id and a token unique to this driver."""

    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> Owner:
        """The owner written in the index as ``host:pid:token``."""
        host, pid, token = text.rsplit(":", 2)
        return cls(host, int(pid), token)


@dataclass
class TaskRecord:
    """One row of the index, as read."""

    id: str
    config: dict
    resources: dict
    keep_checkpoints: bool
    status: str
    attempts: int
    failures: int
    interruptions: int
    owner: str | None
    heartbeat: float | None
    error: str | None
    result: dict | None
    seconds: float | None
    wall: float | None
    label: str = ""
    position: int = 0
    point: int = 0
    chunk: int = 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is alive (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _draft_name(name: str) -> bool:
    """A marker being written by a process creating the store (its draft, or the draft's temporary file)."""
    return name.startswith(".") and "store.json." in name


class Store:
    """A sweep results store in a folder (created on first use with ``create=True``)."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, lease: float = LEASE_SECONDS):
        self.root = Path(root)
        self.lease = float(lease)
        if self.root.exists() and not self.root.is_dir():
            raise DeepensError(f"store: {self.root} is a file, expected a folder")
        marker = self.root / "store.json"
        if not marker.exists():
            if not create:
                raise DeepensError(f"store: {self.root} holds no deepens store (no store.json)")
            foreign = self.root.exists() and any(p.name != "runs" and not _draft_name(p.name)
                                                 for p in self.root.iterdir())
            if foreign and not marker.exists():  # (another process may have just created the store here)
                raise DeepensError(f"store: {self.root} is a non-empty folder that holds no store; choose another")
            try:
                (self.root / "runs").mkdir(parents=True, exist_ok=True)
                draft = self.root / f".store.json.{uuid.uuid4().hex}"
                atomic_write_json(draft, {"format": FORMAT, "id": uuid.uuid4().hex, "created": time.time()})
                try:
                    os.link(draft, marker)  # create-if-absent: of two processes creating a store, one id wins
                except FileExistsError:
                    pass
                finally:
                    draft.unlink(missing_ok=True)
            except OSError as exc:
                raise DeepensError(f"store: cannot create {self.root} ({exc.strerror or exc})") from None
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeepensError(f"store: {marker} is unreadable ({exc})") from None
        if info.get("format") != FORMAT:
            raise DeepensError(f"store: {self.root} has format {info.get('format')!r}; this deepens reads {FORMAT}")
        self.id = str(info["id"])
        (self.root / "runs").mkdir(exist_ok=True)
        db = self._connect()
        try:
            self._use_wal(db)
            db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except sqlite3.Error as exc:
            raise DeepensError(f"store: cannot initialise {self.index_path} ({exc})") from None
        finally:
            db.close()

    # -- connection ----------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.index_path, timeout=60.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=60000")
        except sqlite3.Error as exc:
            raise DeepensError(f"store: cannot open {self.index_path} ({exc})") from None
        return db

    @staticmethod
    def _use_wal(db: sqlite3.Connection, patience: float = 60.0) -> None:
        """Put the index in WAL mode (a property of the file, kept once set). Switching needs the file to
        itself, and SQLite answers "locked" at once instead of waiting, so it is retried here."""
        deadline = time.monotonic() + patience
        while True:
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                    return
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower()
                if mode == "wal":
                    return
                raise DeepensError(f"store: SQLite cannot use WAL mode on this file system (it stays in {mode} "
                                   "mode); put the store on a local disk")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue on SQLite's lock)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def run_dir(self, task: str) -> Path:
        return self.root / "runs" / task

    # -- sweeps --------------------------------------------------------------------------------------
    def register(self, spec: SweepSpec) -> dict:
        """Add the sweep and its tasks (a task already in the store is kept as it is); a done task whose run
        directory lost its metrics.json is made pending again. Returns counts of new and known tasks."""
        now = time.time()
        new = reset = 0
        with self._transaction() as db:
            old = db.execute("SELECT spec_hash FROM sweeps WHERE name = ?", (spec.name,)).fetchone()
            db.execute("INSERT INTO sweeps (name, spec_hash, spec, created, updated) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET spec_hash = excluded.spec_hash, spec = excluded.spec, "
                       "updated = excluded.updated",
                       (spec.name, spec.hash, json.dumps(jsonable(spec.to_dict())), now, now))
            db.execute("DELETE FROM sweep_tasks WHERE sweep = ?", (spec.name,))
            for position, task in enumerate(spec.tasks):
                added, lost = self._upsert_task(db, task.id, task.config, now,
                                                (spec.resources, spec.keep_checkpoints))
                new, reset = new + added, reset + lost
                db.execute("INSERT INTO sweep_tasks (sweep, task, position, point, chunk, label) VALUES "
                           "(?, ?, ?, ?, ?, ?)", (spec.name, task.id, position, task.point, task.chunk, task.label))
        return {"new": new, "known": len(spec.tasks) - new, "reset": reset,
                "spec_changed": old is not None and old["spec_hash"] != spec.hash}

    def _upsert_task(self, db, tid: str, config: dict, now: float, policy: tuple[dict, bool] | None = None
                     ) -> tuple[bool, bool]:
        """Insert a task, or set the ``policy`` (resources, keep checkpoints) of a known one when given; a done
        task whose run directory lost its metrics.json becomes pending again. Returns (inserted, reset)."""
        resources, keep = policy or ({"cpus": 1, "gpus": 0}, False)
        row = db.execute("SELECT status FROM tasks WHERE id = ?", (tid,)).fetchone()
        if row is None:
            db.execute("INSERT INTO tasks (id, config, resources, keep_checkpoints, status, created) "
                       "VALUES (?, ?, ?, ?, 'pending', ?)",
                       (tid, json.dumps(config, sort_keys=True), json.dumps(resources), int(keep), now))
            return True, False
        if policy is not None:
            db.execute("UPDATE tasks SET resources = ?, keep_checkpoints = ? WHERE id = ?",
                       (json.dumps(resources), int(keep), tid))
        if row["status"] == "done" and not RunDir(self.run_dir(tid)).is_finished():
            db.execute("UPDATE tasks SET status = 'pending', error = ? WHERE id = ?",
                       ("its run directory lost metrics.json; trained again", tid))
            return False, True
        return False, False

    def add_task(self, config: dict, *, sweep: str, label: str = "") -> str:
        """Add one training (the study's way in): the task is appended to ``sweep`` unless already there; a
        task known from a sweep keeps that sweep's resources and checkpoint policy."""
        from .spec import canonical_config, task_id

        tid = task_id(config)
        now = time.time()
        with self._transaction() as db:
            self._upsert_task(db, tid, canonical_config(config), now)
            db.execute("INSERT OR IGNORE INTO sweeps (name, spec_hash, spec, created, updated) VALUES (?, '', ?, ?, ?)",
                       (sweep, json.dumps({"name": sweep, "source": "added task by task"}), now, now))
            if db.execute("SELECT 1 FROM sweep_tasks WHERE sweep = ? AND task = ?", (sweep, tid)).fetchone() is None:
                position = db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM sweep_tasks WHERE sweep = ?",
                                      (sweep,)).fetchone()[0]
                db.execute("INSERT INTO sweep_tasks (sweep, task, position, point, chunk, label) "
                           "VALUES (?, ?, ?, ?, 0, ?)", (sweep, tid, position, position, label))
        return tid

    def sweeps(self) -> list[dict]:
        with self._reader() as db:
            rows = db.execute("SELECT name, spec_hash, spec, created, updated FROM sweeps ORDER BY created").fetchall()
        return [{"name": r["name"], "spec_hash": r["spec_hash"], "spec": json.loads(r["spec"]),
                 "created": r["created"], "updated": r["updated"]} for r in rows]

    # -- claims --------------------------------------------------------------------------------------
    def _stale(self, owner: str | None, heartbeat: float | None, now: float) -> bool:
        """Whether a running task's owner is gone: no heartbeat for ``lease`` seconds, or (same host) its
        process no longer exists."""
        if owner is None or heartbeat is None or now - heartbeat > self.lease:
            return True
        holder = Owner.parse(owner)
        return holder.host == socket.gethostname() and not pid_alive(holder.pid)

    def claim(self, owner: Owner, *, sweep: str | None = None, task: str | None = None, max_retries: int = 2,
              exclude: Iterable[str] = (), executor: str = "local") -> TaskRecord | None:
        """Atomically take the next task of ``sweep`` (in order) that is pending, failed at most
        ``max_retries`` times, or running for an owner that died; or exactly ``task``. None if none is left."""
        skip = set(exclude)
        now = time.time()
        with self._transaction() as db:
            rows = self._rows(db, sweep=sweep, task=task, statuses=("pending", "failed", "running"), lazy=True)
            for row in rows:
                if row["id"] in skip:
                    continue
                status = row["status"]
                if status == "failed" and row["failures"] > max_retries:
                    continue
                interrupted = status == "running"
                mine = str(owner) == row["owner"]
                if interrupted and (mine or not self._stale(row["owner"], row["heartbeat"], now)):
                    continue
                rows.close()
                db.execute("UPDATE tasks SET status = 'running', owner = ?, heartbeat = ?, claimed = ?, "
                           "attempts = attempts + 1, interruptions = interruptions + ?, executor = ?, worker = NULL "
                           "WHERE id = ?", (str(owner), now, now, int(interrupted), executor, row["id"]))
                return self._record(db.execute("SELECT * FROM tasks WHERE id = ?", (row["id"],)).fetchone(), row)
        return None

    def heartbeat(self, owner: Owner) -> int:
        """Refresh the heartbeat of every task ``owner`` is running; returns how many."""
        with self._transaction() as db:
            return db.execute("UPDATE tasks SET heartbeat = ? WHERE owner = ? AND status = 'running'",
                              (time.time(), str(owner))).rowcount

    def finish(self, task: str, *, result: dict, wall: float, worker: str | None = None) -> None:
        """Mark a task done; its run directory must be finished (hold metrics.json)."""
        if not RunDir(self.run_dir(task)).is_finished():
            raise DeepensError(f"store: task {task} reported done but {self.run_dir(task)} has no metrics.json")
        with self._transaction() as db:
            db.execute("UPDATE tasks SET status = 'done', finished = ?, seconds = ?, wall = ?, result = ?, "
                       "error = NULL, owner = NULL, worker = COALESCE(?, worker) WHERE id = ?",
                       (time.time(), result.get("seconds"), wall, json.dumps(jsonable(result)), worker, task))

    def fail(self, task: str, error: str, *, wall: float | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE tasks SET status = 'failed', failures = failures + 1, finished = ?, wall = ?, "
                       "error = ?, owner = NULL WHERE id = ?", (time.time(), wall, error[-4000:], task))

    def release(self, task: str, owner: Owner) -> None:
        """Give an unfinished claim back (pending again; an interrupt, not a failure)."""
        with self._transaction() as db:
            db.execute("UPDATE tasks SET status = 'pending', owner = NULL, interruptions = interruptions + 1 "
                       "WHERE id = ? AND owner = ? AND status = 'running'", (task, str(owner)))

    # -- reading -------------------------------------------------------------------------------------
    def _rows(self, db, *, sweep=None, task=None, statuses=STATUSES, lazy: bool = False):
        """Index rows (a list; with ``lazy`` a cursor, so a claim reads only up to the first free task)."""
        marks = ",".join("?" * len(statuses))
        if task is not None:
            cursor = db.execute(f"SELECT t.*, '' AS label, 0 AS position, 0 AS point, 0 AS chunk FROM tasks t "
                                f"WHERE t.id = ? AND t.status IN ({marks})", (task, *statuses))
        elif sweep is None:
            cursor = db.execute(f"SELECT t.*, '' AS label, 0 AS position, 0 AS point, 0 AS chunk FROM tasks t "
                                f"WHERE t.status IN ({marks}) ORDER BY t.created, t.id", statuses)
        else:
            cursor = db.execute(f"SELECT t.*, s.label, s.position, s.point, s.chunk FROM sweep_tasks s "
                                f"JOIN tasks t ON t.id = s.task WHERE s.sweep = ? AND t.status IN ({marks}) "
                                f"ORDER BY s.position", (sweep, *statuses))
        return cursor if lazy else cursor.fetchall()

    @staticmethod
    def _record(row: sqlite3.Row, place: sqlite3.Row | None = None) -> TaskRecord:
        place = place if place is not None else row
        keys = place.keys()
        return TaskRecord(
            id=row["id"], config=json.loads(row["config"]), resources=json.loads(row["resources"]),
            keep_checkpoints=bool(row["keep_checkpoints"]), status=row["status"], attempts=row["attempts"],
            failures=row["failures"], interruptions=row["interruptions"], owner=row["owner"],
            heartbeat=row["heartbeat"], error=row["error"], result=json.loads(row["result"]) if row["result"] else None,
            seconds=row["seconds"], wall=row["wall"],
            label=place["label"] if "label" in keys else "", position=place["position"] if "position" in keys else 0,
            point=place["point"] if "point" in keys else 0, chunk=place["chunk"] if "chunk" in keys else 0)

    def tasks(self, sweep: str | None = None, statuses: Iterable[str] = STATUSES) -> list[TaskRecord]:
        statuses = tuple(statuses)
        if sweep is not None:
            self._check_sweep(sweep)
        with self._reader() as db:
            return [self._record(r) for r in self._rows(db, sweep=sweep, statuses=statuses)]

    def task(self, tid: str) -> TaskRecord | None:
        with self._reader() as db:
            rows = self._rows(db, task=tid)
        return self._record(rows[0]) if rows else None

    def _check_sweep(self, sweep: str) -> None:
        names = [s["name"] for s in self.sweeps()]
        if sweep not in names:
            raise DeepensError(f"sweep: the store {self.root} has no sweep {sweep!r} "
                               f"(it has {', '.join(names) or 'none'})")

    def finished_runs(self, sweep: str | None = None) -> list[Path]:
        """The run directories of the done tasks (of one sweep, or all), in the sweep's order."""
        return [self.run_dir(t.id) for t in self.tasks(sweep, statuses=("done",))]

    def status(self, sweep: str | None = None) -> dict:
        """Counts per status, retries, timings and the failed / running tasks, per sweep and in total."""
        now = time.time()
        names = [sweep] if sweep is not None else [s["name"] for s in self.sweeps()]
        if sweep is not None:
            self._check_sweep(sweep)
        out = {"store": str(self.root), "id": self.id, "sweeps": [], "lease": self.lease}
        with self._reader() as db:
            for name in names:
                rows = self._rows(db, sweep=name)
                spec = db.execute("SELECT spec_hash FROM sweeps WHERE name = ?", (name,)).fetchone()
                out["sweeps"].append(self._summary(rows, now, {"name": name, "spec_hash": spec["spec_hash"]}))
            everything = self._rows(db)
        out["total"] = self._summary(everything, now, {})
        return out

    def _summary(self, rows: list[sqlite3.Row], now: float, head: dict) -> dict:
        counts = {s: 0 for s in STATUSES}
        stale = 0
        for r in rows:
            counts[r["status"]] += 1
            stale += r["status"] == "running" and self._stale(r["owner"], r["heartbeat"], now)
        done = [r for r in rows if r["status"] == "done"]
        return {
            **head, "tasks": len(rows), **counts, "running_stale": stale,
            "attempts": sum(r["attempts"] for r in rows), "failures": sum(r["failures"] for r in rows),
            "interruptions": sum(r["interruptions"] for r in rows),
            "train_seconds": sum(r["seconds"] or 0.0 for r in done),
            "wall_seconds": sum(r["wall"] or 0.0 for r in done),
            "failed_tasks": [{"id": r["id"], "label": r["label"], "failures": r["failures"], "error": r["error"]}
                             for r in rows if r["status"] == "failed"],
            "running_tasks": [{"id": r["id"], "label": r["label"], "owner": r["owner"],
                               "heartbeat_age": None if r["heartbeat"] is None else now - r["heartbeat"],
                               "stale": self._stale(r["owner"], r["heartbeat"], now)}
                              for r in rows if r["status"] == "running"],
        }

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when the index is sound)."""
        with self._reader() as db:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- moving results ------------------------------------------------------------------------------
    def install_run(self, task: str, files: dict[str, bytes]) -> Path:
        """Write a run directory shipped back by a remote worker: into a staging folder, then renamed into
        place (an earlier unfinished directory of the task is replaced)."""
        final = self.run_dir(task)
        staging = final.parent / f".{task}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        for rel, data in files.items():
            target = staging / rel
            if staging.resolve() not in target.resolve().parents:
                raise DeepensError(f"store: refusing to write {rel!r} outside the run directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        _replace_dir(staging, final)
        return final

    def merge(self, other: Store) -> dict:
        """Copy the done tasks of ``other`` that this store lacks (run directories first, then the index),
        and its sweeps' task lists. Returns counts."""
        copied = kept = busy = 0
        now = time.time()
        for sweep in other.sweeps():
            tasks = other.tasks(sweep["name"])
            for record in tasks:
                mine = self.task(record.id)
                if record.status != "done" or (mine is not None and mine.status == "done"):
                    kept += record.status == "done"
                    continue
                if mine is not None and mine.status == "running" and not self._stale(mine.owner, mine.heartbeat,
                                                                                     now):
                    busy += 1  # a live process here is training it: its run directory is not ours to replace
                    continue
                staging = self.root / "runs" / f".{record.id}.partial"
                if staging.exists():
                    shutil.rmtree(staging)
                shutil.copytree(other.run_dir(record.id), staging)
                _replace_dir(staging, self.run_dir(record.id))
                copied += 1
            self._merge_rows(other, sweep, tasks)
        return {"copied": copied, "already_done": kept, "running_here": busy}

    def _merge_rows(self, other: Store, sweep: dict, tasks: list[TaskRecord]) -> None:
        now = time.time()
        with other._reader() as src, self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO sweeps (name, spec_hash, spec, created, updated) VALUES (?, ?, ?, ?, ?)",
                       (sweep["name"], sweep["spec_hash"], json.dumps(sweep["spec"]), sweep["created"], now))
            for record in tasks:
                row = src.execute("SELECT * FROM tasks WHERE id = ?", (record.id,)).fetchone()
                mine = db.execute("SELECT status FROM tasks WHERE id = ?", (record.id,)).fetchone()
                if mine is None:
                    columns = row.keys()
                    db.execute(f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               tuple(row))
                    if row["status"] == "running":
                        db.execute("UPDATE tasks SET status = 'pending', owner = NULL WHERE id = ?", (record.id,))
                elif (row["status"] == "done" and mine["status"] != "done"
                      and RunDir(self.run_dir(record.id)).is_finished()):  # (not one left running here)
                    db.execute("UPDATE tasks SET status = 'done', attempts = attempts + ?, seconds = ?, wall = ?, "
                               "result = ?, finished = ?, error = NULL, owner = NULL WHERE id = ?",
                               (row["attempts"], row["seconds"], row["wall"], row["result"], row["finished"],
                                record.id))
                db.execute("INSERT OR IGNORE INTO sweep_tasks (sweep, task, position, point, chunk, label) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (sweep["name"], record.id, record.position, record.point, record.chunk, record.label))


def _replace_dir(staging: Path, final: Path) -> None:
    """Move a complete staging directory into place; a previous directory is moved aside first and removed
    after, so ``final`` is at every moment either the old directory or the complete new one."""
    old = final.parent / f".{final.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
