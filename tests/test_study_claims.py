"""Claims and verdicts: measurements, tests with their spread, and the verdict logic on hand-built results (a
result that meets, half-meets and misses its criterion, one below its declared resolution, one not measured)."""

from __future__ import annotations

import math
import statistics

import pytest

from deepens.errors import DeepensError
from deepens.study import PARTS
from deepens.study.claims import PAPERS, VERDICTS, Claim, Test, claim_sentence, evaluate, measure, measured_text


def test_measure_is_the_sample_mean_and_standard_deviation():
    m = measure([0.2, 0.5, None, float("nan"), 0.8])
    assert m["n"] == 3 and m["values"] == [0.2, 0.5, 0.8]
    assert m["mean"] == pytest.approx(statistics.mean([0.2, 0.5, 0.8]), rel=1e-15)
    assert m["std"] == pytest.approx(statistics.stdev([0.2, 0.5, 0.8]), rel=1e-15)
    assert measure(3.5) == {"mean": 3.5, "std": 0.0, "n": 1, "values": [3.5], "over": "seeds"}
    assert measure([])["mean"] is None and measure(None)["n"] == 0
    same = measure([0.1 + 0.2] * 3)  # identical values: exactly zero spread, no rounding noise
    assert same["std"] == 0.0 and same["mean"] == 0.1 + 0.2
    assert measured_text(measure([1.0, 2.0, 3.0])) == "2 ± 1 (3 seeds)"
    assert measured_text(measure([1.0, 3.0], over="widths")) == "2 ± 1.414 (2 widths)"
    assert measured_text(measure(None)) == "—"


@pytest.mark.parametrize("op,bound,k,mean,std,expected", [
    (">", 0.0, 0.0, 0.1, 0.5, True),
    (">", 0.0, 1.0, 0.1, 0.05, True),   # 0.1 − 0.05 > 0
    (">", 0.0, 1.0, 0.1, 0.2, False),   # within its spread of zero
    (">=", 0.1, 1.0, 0.2, 0.1, True),
    ("<", -0.5, 2.0, -1.0, 0.2, True),  # −1 + 0.4 < −0.5
    ("<", -0.5, 2.0, -1.0, 0.3, False),
    ("<=", 1.0, 0.0, 1.0, 9.0, True),
    ("in", (-1.2, -0.8), 0.0, -1.19, 0.5, True),
    ("in", (-1.2, -0.8), 1.0, -1.0, 0.15, True),
    ("in", (-1.2, -0.8), 1.0, -1.0, 0.25, False),  # the band [−1.25, −0.75] leaves the interval
    ("==", 10, 0.0, 10.0, 0.0, True),
    ("==", 10, 0.0, 9.0, 0.0, False),
])
def test_a_test_moves_the_mean_by_k_standard_deviations_towards_failure(op, bound, k, mean, std, expected):
    assert Test("q", op, bound, k=k).holds({"mean": mean, "std": std}) is expected


def test_bad_tests_and_claims_are_refused():
    with pytest.raises(DeepensError, match="op must be one of"):
        Test("q", "~", 1.0)
    with pytest.raises(DeepensError, match="'in' needs an interval"):
        Test("q", "in", (2.0, 1.0))
    with pytest.raises(DeepensError, match="k must be >= 0"):
        Test("q", ">", 0.0, k=-1)
    with pytest.raises(DeepensError, match="paper must be one of"):
        Claim("x", "zz", "s", "t", "v", "q", criterion=Test("q", ">", 0))
    with pytest.raises(DeepensError, match="needs a criterion"):
        Claim("x", "ee", "s", "t", "v", "q")


CLAIM = Claim("ee.test.effect", "ee", "EE Fig. 0", "An effect is positive.", "+5 %", "effect",
              {"effect": "the effect", "images": "|effect| in test images"},
              criterion=Test("effect", ">", 0.0, k=1), weaker=Test("effect", ">", 0.0),
              identifiable=Test("images", ">=", 1.0))


@pytest.mark.parametrize("values,images,verdict,reason", [
    ([0.03, 0.04, 0.05], 14.4, "reproduced", "the effect − 1·std > 0 holds"),  # meets its criterion
    ([-0.01, 0.02, 0.05], 7.2, "partly", "the weaker the effect > 0 holds"),  # half-meets: within its spread
    ([-0.03, -0.02, -0.04], 10.8, "not reproduced", "so does the weaker"),  # misses
    ([0.001, 0.002, 0.0], 0.36, "not identifiable", "resolution not reached"),  # smaller than one test image
])
def test_the_verdict_is_computed_from_the_numbers(values, images, verdict, reason):
    record = evaluate(CLAIM, {"effect": measure(values), "images": measure(images)}, {"data": "digits", "seeds": 3})
    assert record["verdict"] == verdict and reason in record["reason"]
    assert record["paper"] == "ee" and record["claim"] == "An effect is positive." and record["paper_value"] == "+5 %"
    assert record["measured"]["values"] == values and record["criterion"] == "the effect − 1·std > 0"
    assert record["scale"] == {"data": "digits", "seeds": 3}
    sentence = claim_sentence(record)
    assert f"Verdict: {verdict}" in sentence and record["measured_text"] in sentence


def test_an_unmeasured_quantity_makes_the_claim_not_identifiable():
    record = evaluate(CLAIM, {"effect": measure([None, None]), "images": measure(3.0)})
    assert record["verdict"] == "not identifiable" and record["reason"] == "not measured: the effect"
    record = evaluate(CLAIM, {"effect": measure([0.1, 0.2])})  # a quantity missing altogether
    assert record["verdict"] == "not identifiable" and "|effect| in test images" in record["reason"]


def test_every_criterion_test_must_hold():
    claim = Claim("ce.x", "ce", "s", "t", "v", "a", criterion=(Test("a", "<", 1.0), Test("b", "<", 1.0)),
                  weaker=Test("a", "<", 1.0))
    both = evaluate(claim, {"a": measure(0.5), "b": measure(0.5)})
    one = evaluate(claim, {"a": measure(0.5), "b": measure(2.0)})
    assert both["verdict"] == "reproduced" and one["verdict"] == "partly"
    assert one["reason"] == "a < 1 and b < 1 fails; the weaker a < 1 holds"
    none = evaluate(claim, {"a": measure(1.5), "b": measure(0.5)})
    assert none["verdict"] == "not reproduced" and "a < 1 fails (1.5)" in none["reason"]


def test_every_part_declares_claims_with_known_papers_and_quantities():
    counts = {p: 0 for p in PAPERS}
    ids = set()
    for name, part in PARTS.items():
        assert part.paper in PAPERS and part.summary
        for claim in part.claims:
            assert claim.paper == part.paper and claim.id.startswith(part.paper + ".")
            assert claim.id not in ids
            ids.add(claim.id)
            counts[claim.paper] += 1
            for q in claim.quantities():
                assert q in claim.labels or q == claim.quantity, (name, q)
            decl = claim.declaration()
            assert decl["criterion"] and decl["paper_value"] and decl["source"]
    # the floor: at least EE 8, CE 4, EqE 4, PL 5 claims with verdicts
    assert counts["ee"] >= 8 and counts["ce"] >= 4 and counts["eqe"] >= 4 and counts["pl"] >= 5, counts
    assert set(VERDICTS) == {"reproduced", "partly", "not reproduced", "not identifiable"}
    assert math.isclose(Test("x", "<", math.log(3)).bound, 1.0986122886681098)
