"""Run the study's parts into a folder, resumably, with one progress display across parts.

Layout of the output folder::

    study.json            the configuration, software versions and the claims declared before the run
    parts/NAME.json       one finished part: config, run time, results, measured quantities, claim verdicts,
                          reading (written atomically)
    tables/NAME_*.csv     every table of the part
    figures/*.png         its figures
    results.json          every finished part and one record per claim (rewritten after every part)
    report.html           the self-contained report (rewritten after every part)
    report.md             the same as Markdown (figures linked)
    store/                every training, as a sweep store (unless ``store`` names another one)

``resume=True`` skips parts whose ``parts/NAME.json`` exists with the same settings (``StudyConfig.part_config``)
and re-runs the others; trainings finished before are loaded from the store, so a study killed inside a part
loses at most the training in flight. Without ``resume`` an existing study folder is refused, so nothing is
overwritten by accident.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import DeepensError, check_int
from ..io import atomic_write_json, atomic_write_text
from ..runs.rundir import jsonable
from .claims import evaluate
from .config import StudyConfig
from .parts import PARTS, part_names

__all__ = ["run_study", "StudyContext", "software_versions", "load_study", "default_workers", "TRAIN_THREADS"]


def software_versions() -> dict:
    import numpy
    import scipy

    import deepens

    return {"deepens": deepens.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


TRAIN_THREADS = 1
"""Torch threads of every study training, in this process or in a worker: a training's numbers depend on the
thread count (the blocking of CPU kernels), so one fixed count makes them independent of the machine's cores
and of ``workers``; parallelism comes from training several networks at once."""


def default_workers(device: str = "cpu") -> int:
    """Worker processes for the study's trainings: one per usable core on a CPU (at most 8), one on a GPU."""
    if device != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class StudyContext:
    """What a part uses: ``train(**options)`` (one training of the reference setup with the given options,
    through the study's store when it has one), ``prefetch([options, ...])`` (train those in parallel first,
    when the study has worker processes), ``seed(s)`` (the training seed of the s-th seed), ``data(flatten)``
    and ``tick()`` (one progress unit)."""

    def __init__(self, config: StudyConfig, tick: Callable[[], None], store=None, owner=None, executor=None):
        self.config = config
        self._tick = tick
        self._data: dict = {}
        self._prefetched: set[str] = set()
        self.trainings = 0
        self.from_store = 0
        self.diverged: list[dict] = []
        self.store = store
        self.owner = owner
        self.executor = executor
        if store is not None and owner is None:
            from ..sweeps.store import Owner

            self.owner = Owner.me()

    def seed(self, s: int) -> int:
        """The training seed of the s-th of ``config.seeds`` seeds (s = 0 is ``config.seed``); every seed keeps
        the data split of ``config.seed``."""
        return self.config.seed + 1009 * int(s)

    def train_config(self, **options):
        """The training of the reference setup with ``options``: the study's ``recipe`` (when it names one), then
        the reference fields, then ``options``. A part with a setup of its own passes ``recipe`` (its recipe or
        None) so that the reference recipe does not leak into it."""
        from ..training import TrainConfig
        from ..training.recipes import recipe_options

        c = self.config
        reference = "recipe" not in options
        recipe = options.pop("recipe", c.recipe)
        base = recipe_options(recipe) if recipe else {}
        base.update(dataset=c.dataset, data_dir=c.data_dir, num_samples=c.num_samples, model=c.model,
                    widths=list(c.widths), epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, schedule=c.schedule,
                    weight_decay=c.weight_decay, seed=c.seed, data_seed=c.seed, device=c.device)
        if reference and c.model == "convnet":
            base["pool"] = c.pool
        if reference and c.val is not None:
            base["val"] = c.val
        base.update(options)
        base.setdefault("eval_every", base["epochs"])
        return TrainConfig(**base)

    def train(self, **options):
        from ..sweeps.executors import torch_threads
        from ..training import Trainer

        prefetched = False
        try:
            if self.store is not None:
                result, prefetched = self._train_in_store(self.train_config(**options), options)
                return result
            with torch_threads(TRAIN_THREADS):
                return Trainer(self.train_config(**options), progress=False).fit()
        finally:
            self.trainings += 1
            if not prefetched:  # a prefetched training ticked when it finished
                self._tick()

    @staticmethod
    def _label(options: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in options.items())

    def prefetch(self, option_sets: list[dict]) -> None:
        """Train the trainings ``option_sets`` name on the study's worker processes, several at once, before a
        part's loop asks for them one by one (then loaded from the store). Without workers, nothing happens
        here and :meth:`train` trains each in turn: the numbers are the same either way."""
        if self.executor is None or self.store is None:
            return
        from ..sweeps.runner import drive

        store, owner = self.store, self.owner
        queue = list(dict.fromkeys(store.add_task(self.train_config(**o).to_dict(), sweep="study",
                                                  label=self._label(o)) for o in option_sets))
        queue = [tid for tid in queue if store.task(tid).status not in ("done", "failed")]

        def claim(_inflight):
            while queue:
                task = store.claim(owner, task=queue.pop(0), max_retries=0, executor="study")
                if task is not None:  # None: finished meanwhile, or a live process trains it
                    return task
            return None

        def done(task, outcome):
            if not outcome.crashed:  # a crashed worker's task is pending again: trained here when asked for
                self._prefetched.add(task.id)
                self._tick()

        drive(store, owner, self.executor, claim, done)

    def _train_in_store(self, config, options: dict):
        """One training through a sweep store: a task done earlier (by the study, a prefetch or a sweep with the
        same options) is loaded from its run directory; otherwise it is claimed, trained into the store and
        recorded. A training that diverged before is not tried again: its stored error is raised. Returns the
        result and whether this study's prefetch trained it."""
        from ..sweeps.executors import result_summary, torch_threads, train_run
        from ..training import DivergenceError, Trainer

        store, owner = self.store, self.owner
        tid = store.add_task(config.to_dict(), sweep="study", label=self._label(options))
        run_dir = store.run_dir(tid)
        prefetched = tid in self._prefetched
        while True:
            record = store.task(tid)
            if record.status == "done":
                self.from_store += not prefetched
                return Trainer(config, run_dir, progress=False).fit(resume=True), prefetched
            if record.status == "failed":
                error = record.error or "failed"
                kind, _, message = error.partition(": ")
                if kind == "DivergenceError":
                    raise DivergenceError(message)
                raise DeepensError(f"task {tid}: {error}")
            claimed = store.claim(owner, task=tid, max_retries=0, executor="study")
            if claimed is not None:
                break
            time.sleep(1.0)  # another live process is training it: wait for its outcome
        started = time.perf_counter()
        try:
            with torch_threads(int(claimed.resources.get("cpus", TRAIN_THREADS))):
                result = train_run(config, run_dir, claimed.keep_checkpoints)
        except DivergenceError as exc:
            store.fail(tid, f"DivergenceError: {exc}", wall=time.perf_counter() - started)
            raise
        except BaseException:
            store.release(tid, owner)
            raise
        store.finish(tid, result=result_summary(result.metrics), wall=time.perf_counter() - started)
        return result, False

    def try_train(self, **options):
        """Like :meth:`train`, but a diverging training returns None (and is listed in ``diverged``)."""
        from ..training import DivergenceError

        try:
            return self.train(**options)
        except DivergenceError as exc:
            self.diverged.append({"options": options, "error": str(exc)})
            return None

    def module(self, **options):
        """The (untrained) ensemble a training with ``options`` builds: the module its analytic kernels are read
        from (``Network.from_module``)."""
        from ..training.build import build_ensemble

        config = self.train_config(**options)
        return build_ensemble(config, self.data(flatten=config.model == "mlp"))

    def data(self, flatten: bool = True, **options):
        """The dataset of a training with ``options`` (default: the reference setup's), split exactly as that
        training splits it (the trainer's ``load_data``); loaded once per context."""
        from ..training.trainer import load_data

        key = (flatten, tuple(sorted(options.items())))
        if key not in self._data:
            self._data[key] = load_data(self.train_config(flatten=flatten, **options), torch.device("cpu"))
        return self._data[key]

    def tick(self) -> None:
        self._tick()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class PartProgress:
    """One progress unit of a part: the study's bar moves by one, and its postfix shows the part's units done,
    its elapsed time and the time it has left at the rate of its finished units (a busy machine slows every
    part; the estimate follows)."""

    def __init__(self, bar, name: str, units: int):
        self.bar, self.name, self.units = bar, name, max(1, int(units))
        self.done, self.started = 0, time.perf_counter()
        self.text = ""

    def __call__(self) -> None:
        self.done += 1
        self.bar.update(1)
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * max(0, self.units - self.done)
        self.text = (f"{self.name} {self.done}/{self.units} units, {_clock(elapsed)} elapsed, ~{_clock(left)} left "
                     "in this part")
        self.bar.set_postfix_str(self.text, refresh=True)


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                         for k, v in r.items()})
    return buffer.getvalue()


def _state_path(out: Path) -> Path:
    return out / "study.json"


def load_study(out: str | Path) -> dict:
    """The records of a study folder: ``{"config", "versions", "declared", "parts": {name: record},
    "claims": [record, ...]}`` (finished parts only, in the study's order; claims in their parts' order)."""
    out = Path(out)
    state = _state_path(out)
    if not state.exists():
        raise DeepensError(f"out: {out} holds no study (no study.json)")
    try:
        meta = json.loads(state.read_text())
        parts = {}
        for name in PARTS:
            path = out / "parts" / f"{name}.json"
            if path.exists():
                parts[name] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeepensError(f"out: {out} holds an unreadable study file ({exc})") from None
    claims = [{"part": name, **c} for name, p in parts.items() for c in p.get("claims", [])]
    return {**meta, "parts": parts, "claims": claims}


def _publish(out: Path) -> dict:
    """Rewrite results.json and the reports from every finished part."""
    from .report import write_report

    study = load_study(out)
    atomic_write_json(out / "results.json", study)
    write_report(study, out)
    return study


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    only: str | list[str] | None = None,
    paper: str | list[str] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    store=None,
    workers: int = 1,
) -> dict:
    """Run the selected parts of the study into ``out`` and write results.json, CSV tables, figures and
    report.html / report.md. ``paper`` selects papers (``ee``, ``ce``, ``eqe``, ``pl``; default all) and
    ``only`` parts by name. Returns ``{"config", "versions", "declared", "parts": {name: record}, "claims": [...],
    "report": path, "skipped": [...], "ran": [...]}``.

    Every claim a selected part declares is written into study.json before anything runs; after each part its
    claims are evaluated on its measured numbers (:func:`deepens.study.claims.evaluate`) and results.json and
    the reports are rewritten. Trainings go through a sweep store — ``store`` (a store or its folder, shared with
    sweeps and other studies) or ``out/store`` — so trainings done earlier with the same options are loaded,
    not trained again, and a study killed mid-part loses at most the training in flight. With ``workers`` > 1
    the trainings of a part run in that many worker processes at once (:func:`default_workers` picks one per
    core); every training uses one torch thread, so the numbers do not depend on ``workers``."""
    from ..sweeps.executors import LocalExecutor
    from ..sweeps.store import Owner, Store

    config = config.validate()
    workers = check_int("workers", workers, minimum=1)
    out = Path(out)
    names = part_names(only, paper)
    if out.exists() and not out.is_dir():
        raise DeepensError(f"out: {out} is a file, expected a folder")
    if _state_path(out).exists() and not resume:
        raise DeepensError(f"out: {out} already holds a study; pass --resume to continue it or choose another --out")
    if out.exists() and not _state_path(out).exists() and any(out.iterdir()):
        raise DeepensError(f"out: {out} is a non-empty folder that holds no study; choose another --out")
    for sub in ("parts", "tables", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    store = store if isinstance(store, Store) else Store(out / "store" if store is None else store, create=True)
    owner = Owner.me()
    versions = {**software_versions(), "workers": workers, "training_threads": TRAIN_THREADS}
    declared = [{"part": n, **c.declaration()} for n in names for c in PARTS[n].claims]
    previous = json.loads(_state_path(out).read_text()).get("declared", []) if _state_path(out).exists() else []
    keep = [d for d in previous if d["part"] not in names]  # declarations of parts not run this time stay
    atomic_write_json(_state_path(out), jsonable({"config": config.to_dict(), "versions": versions,
                                                  "declared": keep + declared}))

    todo, skipped = [], []
    for name in names:
        part = PARTS[name]
        path = out / "parts" / f"{name}.json"
        if resume and path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                stored = None
            if stored and stored.get("config") == jsonable(config.part_config(part.prefixes, part.reference)):
                skipped.append(name)
                continue
        todo.append(name)
    total = sum(PARTS[n].units(config) for n in todo)
    bar = tqdm(total=total, desc="study", unit="unit", disable=None if progress is None else not progress,
               dynamic_ncols=True)
    say = log or (lambda _msg: None)
    for name in skipped:
        say(f"{name}: finished earlier, skipped (--resume)")
    from ..sweeps.runner import HEARTBEAT_SECONDS, Heartbeat

    beat = Heartbeat(store, owner, HEARTBEAT_SECONDS)
    executor = LocalExecutor(workers) if workers > 1 else None
    try:
        for i, name in enumerate(todo, 1):
            part = PARTS[name]
            bar.set_description(f"study [{i}/{len(todo)}] {part.paper}.{name}")
            ctx = StudyContext(config, PartProgress(bar, name, part.units(config)), store, owner, executor)
            started = time.perf_counter()
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                try:
                    outcome = part.run(config, ctx)
                except DeepensError as exc:
                    raise DeepensError(f"study part {name}: {exc}") from None
            seconds = time.perf_counter() - started
            outcome = jsonable(outcome)
            claims = [evaluate(c, outcome.get("measured", {}), outcome.get("scale")) for c in part.claims]
            record = jsonable({"name": name, "paper": part.paper, "title": part.title, "summary": part.summary,
                               "config": config.part_config(part.prefixes, part.reference), "seconds": seconds,
                               "finished": _dt.datetime.now().isoformat(timespec="minutes"),
                               "trainings": ctx.trainings, "from_store": ctx.from_store, "diverged": ctx.diverged,
                               "versions": versions, **outcome, "claims": claims})
            figures = part.plot(record, out / "figures")
            record["figures"] = [str(Path(f).relative_to(out)) for f in figures]
            for table, rows in outcome.get("tables", {}).items():
                atomic_write_text(out / "tables" / f"{table}.csv", _csv(rows))
            atomic_write_json(out / "parts" / f"{name}.json", record)
            _publish(out)
            verdicts = ", ".join(f"{c['id'].split('.', 1)[1]}: {c['verdict']}" for c in claims)
            say(f"{part.paper}.{name}: {seconds:.0f} s, {ctx.trainings} trainings" + (f" — {verdicts}" if verdicts
                                                                                       else ""))
    finally:
        bar.close()
        beat.stop()
        if executor is not None:
            executor.close()
    study = _publish(out)
    return {**study, "report": str(out / "report.html"), "skipped": skipped, "ran": todo}
