"""The ``deepens`` command: a thin face over the library (argument parsing, --json, exit codes).

Only the command that runs is imported (with torch and the library behind it): ``deepens --help`` and a
command's errors in the top-level parser stay fast.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

from ..errors import DeepensError
from .common import Parser

# command → (module under deepens.cli, the function adding its parser); in the order of ``deepens --help``
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "add_train"),
    "evaluate": ("train", "add_evaluate"),
    "models": ("train", "add_models"),
    "ntk": ("ntk", "add_ntk"),
    "calibrate": ("scaling", "add_scaling"),
    "powerlaw": ("scaling", "add_scaling"),
    "design": ("design", "add_design"),
    "equivariance": ("equivariance", "add_equivariance"),
    "study": ("study", "add_study"),
    "sweep": ("sweep", "add_sweep"),
}
COMMAND_HELP: dict[str, str] = {
    "train": 'train an ensemble into a run directory',
    "evaluate": 'evaluate a run directory on train / val / test',
    "models": 'list the network families (--model) and their width knobs',
    "ntk": 'ensemble NTKs: analytic kernels, regime verdicts, empirical metrics',
    "calibrate": 'NLL and calibrated NLL (CNLL) of an ensemble',
    "powerlaw": 'power laws of ensembles: fit, pools, memory splits',
    "design": 'design collegial ensembles from NTK variance (CE Algorithms 1-2)',
    "equivariance": 'emergent equivariance of deep ensembles trained with data augmentation (study parts)',
    "study": "the four papers' experiments at small scale, a verdict per claim, and an HTML report",
    "sweep": 'resumable sweeps of trainings, locally or on a Ray cluster',
}


def build_parser(command: str | None = None) -> Parser:
    """The parser of every command (``command`` None), or of ``command`` only, with one-line stubs for the
    others (what ``deepens --help`` lists) so that only that command's module is imported."""
    from .. import __version__

    parser = Parser(
        prog="deepens",
        description="Deep ensembles that are cheap to train and run, predicted by infinite-width theory.",
    )
    parser.add_argument("--version", action="version", version=f"deepens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    added: set[str] = set()
    chosen = COMMANDS.get(command or "")
    for name, (module, adder) in COMMANDS.items():
        if name in added:
            continue
        if command is None or (module, adder) == chosen:  # (an adder may add several commands)
            before = set(sub.choices)
            getattr(import_module(f".{module}", __package__), adder)(sub)
            added |= set(sub.choices) - before
        else:
            sub.add_parser(name, help=COMMAND_HELP[name])
            added.add(name)
    return parser


def _command(argv: list[str]) -> str:
    """The command named in ``argv`` ("" when none: the top-level help, version or usage error)."""
    return next((a for a in argv if not a.startswith("-")), "") if argv else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    name = _command(argv)
    parser = build_parser(name if name in COMMANDS else "")
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepensError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"deepens {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"deepens {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (deepens ... | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
