"""The ``deepens`` command: a thin face over the library (argument parsing, --json, exit codes)."""

from __future__ import annotations

import os
import sys

from ..errors import DeepensError
from .common import Parser


def build_parser() -> Parser:
    from .. import __version__
    from .design import add_design
    from .equivariance import add_equivariance
    from .ntk import add_ntk
    from .scaling import add_scaling
    from .study import add_study
    from .sweep import add_sweep
    from .train import add_evaluate, add_models, add_train

    parser = Parser(
        prog="deepens",
        description="Deep ensembles that are cheap to train and run, predicted by infinite-width theory.",
    )
    parser.add_argument("--version", action="version", version=f"deepens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    add_train(sub)
    add_evaluate(sub)
    add_models(sub)
    add_ntk(sub)
    add_scaling(sub)
    add_design(sub)
    add_equivariance(sub)
    add_study(sub)
    add_sweep(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
