"""Claims and verdicts: each part declares, before it runs, the papers' statements it tests and a
machine-checkable criterion on its measured numbers; the verdict is computed from the numbers, never written.

A :class:`Claim` names the paper (``ee`` / ``ce`` / ``eqe`` / ``pl``), the statement with its figure or
equation, the paper's number, the measured quantity it is judged on and three declared tests:

* ``identifiable`` — the resolution the measurement must reach for any verdict (e.g. an effect larger than
  one test example, an optimum inside the grid). When it fails the verdict is ``not identifiable``;
* ``criterion`` — when every test holds: ``reproduced``;
* ``weaker`` — else, when every test of this declared weaker criterion holds: ``partly``;
* otherwise ``not reproduced``.

A quantity is measured over seeds as ``{"mean", "std", "n", "values"}`` (:func:`measure`). A :class:`Test`
compares the mean moved by ``k`` standard deviations towards failure with its bound, so a criterion with
``k = 1`` holds only when the effect exceeds its spread over seeds. A quantity that could not be measured
(a diverged training, a fit that failed) makes the verdict ``not identifiable`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import DeepensError

__all__ = ["Test", "Claim", "measure", "evaluate", "VERDICTS", "PAPERS", "measured_text", "claim_sentence"]

VERDICTS = ("reproduced", "partly", "not reproduced", "not identifiable")
PAPERS = {"ee": "Embedded ensembles", "ce": "Collegial ensembles", "eqe": "Emergent equivariance",
          "pl": "Power laws"}
_OPS = ("<", "<=", ">", ">=", "in", "==")


def measure(values: float | Iterable[float | None] | None, over: str = "seeds") -> dict:
    """A measured quantity from one value or one value per seed: ``{"mean", "std", "n", "values", "over"}``
    (sample standard deviation, 0 for one value; values that are None or not finite are dropped, and an
    empty measurement has mean None). ``over`` names what the values vary over (seeds, widths, ...)."""
    if values is None:
        raw: list = []
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        raw = [values]
    else:
        raw = list(values)
    clean = [float(v) for v in raw if v is not None and math.isfinite(float(v))]
    n = len(clean)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "values": [], "over": over}
    mean = math.fsum(clean) / n
    same = all(v == clean[0] for v in clean)
    std = 0.0 if same else math.sqrt(math.fsum((v - mean) ** 2 for v in clean) / (n - 1))
    mean = clean[0] if same else mean
    return {"mean": mean, "std": std, "n": n, "values": clean, "over": over}


def _fmt(x: float) -> str:
    if x == 0 or (1e-3 <= abs(x) < 1e4):
        return f"{x:.3g}" if abs(x) < 1 else f"{x:.4g}"
    return f"{x:.2e}"


@dataclass(frozen=True)
class Test:
    """``quantity op bound`` on the measured mean moved ``k`` standard deviations towards failure.

    ``op`` is one of ``<``, ``<=``, ``>``, ``>=``, ``==`` or ``in`` (``bound`` a closed interval ``(lo, hi)``;
    with ``k`` the whole band mean ± k·std must lie inside)."""

    quantity: str
    op: str
    bound: float | tuple[float, float]
    k: float = 0.0
    __test__ = False  # not a pytest test class

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise DeepensError(f"test: op must be one of {', '.join(_OPS)}, got {self.op!r}")
        if self.op == "in" and (not isinstance(self.bound, tuple) or len(self.bound) != 2
                                or not self.bound[0] <= self.bound[1]):
            raise DeepensError(f"test: 'in' needs an interval (lo, hi) with lo <= hi, got {self.bound!r}")
        if self.k < 0:
            raise DeepensError(f"test: k must be >= 0, got {self.k}")

    def holds(self, m: Mapping) -> bool:
        mean, std = float(m["mean"]), float(m.get("std") or 0.0)
        s = self.k * std
        if self.op == "<":
            return mean + s < self.bound
        if self.op == "<=":
            return mean + s <= self.bound
        if self.op == ">":
            return mean - s > self.bound
        if self.op == ">=":
            return mean - s >= self.bound
        if self.op == "==":
            return s == 0 and mean == self.bound
        lo, hi = self.bound
        return lo <= mean - s and mean + s <= hi

    def describe(self, labels: Mapping[str, str] | None = None) -> str:
        name = (labels or {}).get(self.quantity, self.quantity)
        if self.k:
            name = f"{name} {'−' if self.op in ('>', '>=') else '+'} {self.k:g}·std" if self.op != "in" else \
                f"{name} ± {self.k:g}·std"
        if self.op == "in":
            return f"{name} in [{_fmt(self.bound[0])}, {_fmt(self.bound[1])}]"
        op = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        return f"{name} {op} {_fmt(float(self.bound))}"

    def to_dict(self) -> dict:
        return {"quantity": self.quantity, "op": self.op,
                "bound": list(self.bound) if isinstance(self.bound, tuple) else self.bound, "k": self.k}


def _tests(value) -> tuple[Test, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, Test) else tuple(value)


@dataclass(frozen=True)
class Claim:
    """One statement of a paper and how it is judged (see the module docstring)."""

    id: str  # unique, "paper.part.what"
    paper: str  # ee | ce | eqe | pl
    source: str  # "EE §5, Fig. 6 (centre)"
    statement: str  # the paper's statement, quoted or paraphrased
    paper_value: str  # the paper's number, as text
    quantity: str  # the measured quantity shown beside the paper's number
    labels: Mapping[str, str] = field(default_factory=dict)  # human names of quantities
    criterion: Test | Sequence[Test] = ()
    weaker: Test | Sequence[Test] | None = None
    identifiable: Test | Sequence[Test] | None = None
    note: str = ""  # how the measurement relates to the paper's setting

    def __post_init__(self) -> None:
        if self.paper not in PAPERS:
            raise DeepensError(f"claim {self.id}: paper must be one of {', '.join(PAPERS)}, got {self.paper!r}")
        if not _tests(self.criterion):
            raise DeepensError(f"claim {self.id}: a claim needs a criterion")

    def quantities(self) -> list[str]:
        names = [self.quantity] + [t.quantity for g in (self.criterion, self.weaker, self.identifiable)
                                   for t in _tests(g)]
        return list(dict.fromkeys(names))

    def describe(self, which: str) -> str:
        tests = _tests(getattr(self, which))
        return " and ".join(t.describe(self.labels) for t in tests)

    def declaration(self) -> dict:
        """The claim as declared before the run (written into study.json)."""
        return {"id": self.id, "paper": self.paper, "source": self.source, "claim": self.statement,
                "paper_value": self.paper_value, "quantity": self.labels.get(self.quantity, self.quantity),
                "criterion": self.describe("criterion"), "weaker": self.describe("weaker") or None,
                "identifiable": self.describe("identifiable") or None, "note": self.note or None,
                "tests": {g: [t.to_dict() for t in _tests(getattr(self, g))]
                          for g in ("criterion", "weaker", "identifiable")}}


def _usable(m) -> bool:
    return isinstance(m, Mapping) and m.get("mean") is not None and math.isfinite(float(m["mean"]))


def measured_text(m: Mapping | None, digits: int = 3) -> str:
    """``-0.48 ± 0.05 (3 seeds)`` or ``0.972`` or ``—``."""
    if not _usable(m):
        return "—"
    mean = float(m["mean"])
    text = _fmt(mean) if digits == 3 else f"{mean:.{digits}g}"
    if m.get("n", 1) > 1:
        text += f" ± {_fmt(float(m['std']))} ({m['n']} {m.get('over', 'seeds')})"
    return text


def evaluate(claim: Claim, measured: Mapping[str, Mapping], scale: Mapping | None = None) -> dict:
    """The claim's record: its declaration, the measured quantities it reads and the verdict computed from
    them with the declared tests (see the module docstring)."""
    record = claim.declaration()
    record.pop("tests")
    used = {q: measured.get(q) for q in claim.quantities()}
    record["measured"] = used.get(claim.quantity)
    record["measured_text"] = measured_text(record["measured"])
    record["inputs"] = {claim.labels.get(q, q): used[q] for q in used}
    record["scale"] = dict(scale or {})
    missing = [q for q, m in used.items() if not _usable(m)]
    if missing:
        names = ", ".join(claim.labels.get(q, q) for q in missing)
        record.update(verdict="not identifiable", reason=f"not measured: {names}")
        return record
    failed = [t for t in _tests(claim.identifiable) if not t.holds(used[t.quantity])]
    if failed:
        record.update(verdict="not identifiable", reason="resolution not reached: " + " and ".join(
            t.describe(claim.labels) + f" fails ({measured_text(used[t.quantity])})" for t in failed))
        return record
    if all(t.holds(used[t.quantity]) for t in _tests(claim.criterion)):
        record.update(verdict="reproduced", reason=f"{claim.describe('criterion')} holds")
    elif _tests(claim.weaker) and all(t.holds(used[t.quantity]) for t in _tests(claim.weaker)):
        record.update(verdict="partly", reason=f"{claim.describe('criterion')} fails; the weaker "
                                               f"{claim.describe('weaker')} holds")
    else:
        why = " and ".join(t.describe(claim.labels) + f" fails ({measured_text(used[t.quantity])})"
                           for t in _tests(claim.criterion) if not t.holds(used[t.quantity]))
        if _tests(claim.weaker):
            why += "; so does the weaker " + claim.describe("weaker")
        record.update(verdict="not reproduced", reason=why)
    return record


def claim_sentence(record: Mapping) -> str:
    """One generated sentence per claim record: what was measured against what the paper states, the
    declared criterion and the verdict. It reads exactly as favourably as the verdict."""
    return (f"{record['source']} — {record['quantity']}: measured {record['measured_text']} "
            f"(paper: {record['paper_value']}). Verdict: {record['verdict']} ({record['reason']}).")
