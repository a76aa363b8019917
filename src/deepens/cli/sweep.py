"""``deepens sweep run | status | plan | merge``: resumable sweeps on the local machine or a Ray cluster."""

from __future__ import annotations

import argparse
import sys

from .common import print_json, print_table, split_ints
from .main import COMMAND_HELP


def cmd_run(args: argparse.Namespace) -> int:
    from ..sweeps import run_sweep

    log = None if args.json else (lambda msg: sys.stderr.write(msg + "\n"))
    summary = run_sweep(args.spec, args.store, executor=args.executor, workers=args.workers, address=args.address,
                        max_retries=args.max_retries, lease=args.lease,
                        progress=False if args.json or args.no_progress else None, log=log,
                        devices=split_ints("devices", args.devices) if args.devices else None)
    if args.json:
        print_json(summary)
    else:
        print(f"sweep {summary['sweep']}: {summary['trained']} task(s) trained now, {summary['done_before']} done "
              f"earlier; {summary['done']}/{summary['tasks']} done, {summary['failed']} failed, "
              f"{summary['pending']} pending, {summary['running_elsewhere']} running elsewhere "
              f"({summary['seconds']:.1f} s)")
    if summary["failed"]:
        sys.stderr.write(f"deepens sweep: error: {summary['failed']} task(s) failed {summary['max_retries'] + 1} "
                         f"time(s); see 'deepens sweep status --store {args.store}'\n")
        return 1
    return 0


def _print_status(status: dict, tasks: dict | None) -> None:
    print(f"store {status['store']} (id {status['id'][:12]})")
    for s in status["sweeps"]:
        print(f"sweep {s['name']} (spec {s['spec_hash'] or '—'}): {s['tasks']} tasks — {s['done']} done, "
              f"{s['running']} running ({s['running_stale']} stale), {s['pending']} pending, {s['failed']} failed; "
              f"attempts {s['attempts']}, failures {s['failures']}, interruptions {s['interruptions']}; "
              f"training {s['train_seconds']:.1f} s")
        for f in s["failed_tasks"]:
            first = (f["error"] or "").splitlines()[0] if f["error"] else ""
            print(f"  failed  {f['id']} {f['label']} ({f['failures']}×): {first}")
        for r in s["running_tasks"]:
            age = "never" if r["heartbeat_age"] is None else f"{r['heartbeat_age']:.0f} s ago"
            stale = "; stale" if r["stale"] else ""
            print(f"  running {r['id']} {r['label']} by {r['owner']} (heartbeat {age}{stale})")
        if tasks is not None:
            rows = [{**t, "test_accuracy": (t["result"] or {}).get("test_accuracy")} for t in tasks[s["name"]]]
            print_table(rows, [("id", "task", ""), ("status", "status", ""), ("attempts", "attempts", ""),
                               ("test_accuracy", "test acc", ".4f"), ("seconds", "seconds", ".1f"),
                               ("label", "options", "")])


def cmd_status(args: argparse.Namespace) -> int:
    from ..sweeps import Store

    store = Store(args.store)
    status = store.status(args.sweep)
    tasks = None
    if args.tasks or args.json:
        tasks = {s["name"]: [t.to_dict() for t in store.tasks(s["name"])] for s in status["sweeps"]}
    if args.json:
        print_json({**status, "tasks": tasks})
    else:
        _print_status(status, tasks if args.tasks else None)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from ..sweeps import load_spec

    spec = load_spec(args.spec)
    rows = [{"id": t.id, "point": t.point, "chunk": t.chunk, "members": t.config["members"],
             "seed": t.config["seed"], "label": t.label} for t in spec.tasks]
    if args.json:
        print_json({**spec.to_dict(), "task_list": rows})
        return 0
    print(f"sweep {spec.name} (spec {spec.hash}): {len(rows)} task(s), resources {spec.resources}, "
          f"max retries {spec.max_retries}")
    print_table(rows, [("id", "task", ""), ("members", "members", ""), ("seed", "seed", ""), ("label", "options", "")])
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..sweeps import Store

    result = Store(args.store, create=True).merge(Store(args.source))
    if args.json:
        print_json(result)
    else:
        print(f"copied {result['copied']} finished task(s) from {args.source} into {args.store} "
              f"({result['already_done']} were done in both, {result['running_here']} left alone: being trained here)")
    return 0


def add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help=COMMAND_HELP["sweep"],
                       description="Expand a YAML / TOML sweep spec into training tasks and train them into a store "
                                   "(one run directory per task, an SQLite index): resumable, retried, safe to run "
                                   "from several processes at once, locally or on a Ray cluster.")
    inner = p.add_subparsers(dest="sweep_command", metavar="SWEEP_COMMAND", parser_class=type(p))
    inner.required = True

    r = inner.add_parser("run", help="train the tasks of a spec into a store (skips done ones)",
                         description="Train every task of SPEC into --store: tasks already done are skipped, "
                                     "failed ones retried up to --max-retries, interrupted ones resumed from their "
                                     "last checkpoint. Exit status 1 if tasks are left failed.")
    r.add_argument("spec", help="sweep spec (.yaml, .yml or .toml)")
    r.add_argument("--store", required=True, help="results store folder (created if needed)")
    r.add_argument("--executor", default="local", choices=("local", "ray"), help="local (default) or ray")
    r.add_argument("--devices", help="local executor: GPU indices the tasks share, e.g. 0,1 (resources.gpus per task: "
                   "0.5 puts two tasks on a GPU; default one worker per slot)")
    r.add_argument("--workers", type=int, help="local: worker processes (default 1: in this process); ray: CPUs "
                                               "of a local cluster started for the sweep")
    r.add_argument("--address", help="ray: address of a running cluster (auto, or HEAD_IP:6379)")
    r.add_argument("--max-retries", type=int, help="failures allowed per task before it is left failed "
                                                   "(default: the spec's max_retries, 2)")
    r.add_argument("--lease", type=float, help="seconds without heartbeat after which a claim of another host is "
                                               "taken over (default 120; same host: as soon as its process is gone)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)

    s = inner.add_parser("status", help="tasks of a store by status, with attempts, timings and errors",
                         description="Counts per status, attempts, failures, interruptions, training time, failed "
                                     "tasks with their errors and running tasks with their owners.")
    s.add_argument("--store", required=True, help="results store folder")
    s.add_argument("--sweep", help="one sweep of the store (default all)")
    s.add_argument("--tasks", action="store_true", help="list every task")
    s.add_argument("--json", action="store_true", help="print everything (tasks included) as JSON")
    s.set_defaults(func=cmd_status)

    pl = inner.add_parser("plan", help="validate a spec and list its tasks without training",
                          description="Validate SPEC and list the tasks it expands into (ids, members, seeds).")
    pl.add_argument("spec", help="sweep spec (.yaml, .yml or .toml)")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    m = inner.add_parser("merge", help="copy the finished tasks of another store into --store",
                         description="Copy the done tasks of SOURCE (e.g. a store brought back from a cluster) into "
                                     "--store, run directories first, then the index; tasks done in both are kept.")
    m.add_argument("source", help="the store to copy from")
    m.add_argument("--store", required=True, help="the store to copy into (created if needed)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_merge)
