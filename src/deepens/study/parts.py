"""The study's parts, grouped by paper: :mod:`~deepens.study.embedded` (``ee``),
:mod:`~deepens.study.collegial` (``ce``), :mod:`~deepens.study.equivariance` (``eqe``) and
:mod:`~deepens.study.powerlaws` (``pl``). Every part has the :class:`~deepens.study.common.Part` shape and
declares its claims; :func:`part_names` selects parts by paper and by name."""

from __future__ import annotations

from ..errors import DeepensError
from . import collegial, embedded, equivariance, powerlaws
from .claims import PAPERS
from .common import Part

__all__ = ["Part", "PARTS", "PAPERS", "part_names", "parse_papers"]

PARTS: dict[str, Part] = {p.name: p for module in (embedded, collegial, equivariance, powerlaws)
                          for p in module.PARTS}


def parse_papers(paper: str | list[str] | None) -> list[str]:
    """Papers from ``ee,ce,eqe,pl`` (comma-separated or a list; None: all four), in that order."""
    if paper is None:
        return list(PAPERS)
    names = [s.strip().lower() for s in (paper.split(",") if isinstance(paper, str) else paper) if s.strip()]
    unknown = [n for n in names if n not in PAPERS]
    if unknown or not names:
        raise DeepensError(f"paper: expected comma-separated papers from {', '.join(PAPERS)}, got {paper!r}")
    return [p for p in PAPERS if p in names]


def part_names(only: str | list[str] | None = None, paper: str | list[str] | None = None) -> list[str]:
    """The parts selected by ``paper`` (default all papers) and ``only`` (comma-separated part names, default
    all parts of those papers), in the study's order. A part named in ``only`` must belong to a selected
    paper."""
    papers = parse_papers(paper)
    if only is None:
        return [n for n, p in PARTS.items() if p.paper in papers]
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise DeepensError(f"only: expected comma-separated parts from {', '.join(PARTS)}, got {only!r}")
    outside = [n for n in names if PARTS[n].paper not in papers]
    if outside:
        raise DeepensError(f"only: {', '.join(outside)} belong(s) to {', '.join(PARTS[n].paper for n in outside)}, "
                           f"not to --paper {','.join(papers)}")
    return [n for n in PARTS if n in names]
