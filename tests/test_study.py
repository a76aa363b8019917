"""deepens study: every part of the four papers on the tiny preset, proved against direct computations; claims and
verdicts in the records; resume (across papers, including after SIGKILL); the CLI; the report in a real headless
browser."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepens.errors import DeepensError
from deepens.study import PARTS, VERDICTS, StudyConfig, load_study, part_names, run_study
from deepens.study.runner import StudyContext

pytestmark = pytest.mark.slow

TINY = StudyConfig.preset_config("tiny")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tiny"
    result = run_study(StudyConfig.preset_config("tiny"), out, progress=False)
    return out, result


def _ctx(store=None):
    return StudyContext(TINY, lambda: None, store)


def _part(study, name):
    return study[1]["parts"][name]


def test_every_part_writes_its_record_claims_tables_figures_and_the_report(study):
    out, result = study
    assert list(result["parts"]) == list(PARTS) and result["ran"] == list(PARTS)
    declared = json.loads((out / "study.json").read_text())["declared"]
    assert [d["id"] for d in declared] == [c.id for p in PARTS.values() for c in p.claims]  # before the run
    for name, record in result["parts"].items():
        part = PARTS[name]
        assert record["config"] == TINY.part_config(part.prefixes, part.reference)
        assert record["paper"] == part.paper and record["reading"] and record["seconds"] > 0
        assert [c["id"] for c in record["claims"]] == [c.id for c in part.claims]
        for claim, c in zip(part.claims, record["claims"], strict=True):
            assert c["verdict"] in VERDICTS and c["reason"] and c["criterion"]
            assert c["measured"] == record["measured"].get(claim.quantity)
        for fig in record["figures"]:
            assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for table, rows in record["tables"].items():
            with open(out / "tables" / f"{table}.csv", newline="") as fh:
                assert len(list(csv.DictReader(fh))) == len(rows)
    results = json.loads((out / "results.json").read_text())
    assert results["parts"].keys() == set(PARTS)
    assert [c["id"] for c in results["claims"]] == [d["id"] for d in declared]
    assert all(set(c) >= {"paper", "claim", "paper_value", "measured", "criterion", "verdict", "scale"}
               for c in results["claims"])
    html = (out / "report.html").read_text()
    assert html.count("<section id=") == len(PARTS) + 1 + 4  # parts, the verdict table, one per paper
    assert html.count("data:image/png;base64,") == sum(len(r["figures"]) for r in result["parts"].values())
    assert html.count("<span class='v v-") == 2 * len(results["claims"])  # the table and each part's list
    assert "src=\"figures/" not in html  # self-contained
    md = (out / "report.md").read_text()
    assert md.count("\n| ee |") == sum(1 for c in results["claims"] if c["paper"] == "ee")


def test_verdicts_are_those_of_the_declared_criteria_on_the_stored_numbers(study):
    from deepens.study.claims import evaluate

    for name, record in study[1]["parts"].items():
        for claim, stored in zip(PARTS[name].claims, record["claims"], strict=True):
            again = evaluate(claim, record["measured"], record["scale"])
            assert (again["verdict"], again["reason"]) == (stored["verdict"], stored["reason"])


def test_regime_rows_are_the_trainings_they_name_and_the_theory_is_exact(study):
    res = _part(study, "regime")["results"]
    theory = {t["p"]: t for t in res["theory"]}
    assert theory[0.0]["verdict"] == "independent" and theory[0.0]["ntk_ratio"] == theory[0.0]["nngp_ratio"] == 0.0
    assert theory[1.0]["verdict"] == "collective" and theory[1.0]["nngp_ratio"] == pytest.approx(1.0, abs=1e-12)
    # the analytic columns are the kernels of the very ensemble trained (read from its module)
    from deepens.kernels import regime

    ctx, p = _ctx(), sorted(theory)[1]
    module = ctx.module(ensemble="batch", members=max(2, max(TINY.regime_members)), modulation=f"shifted-normal:{p:g}",
                        seed=TINY.seed)
    assert "BatchEnsemble" in repr(type(module)) and module.net.get_submodule("fc1").weight.shape[0] == TINY.widths[0]
    probe = ctx.data().val.x[:4].double().numpy()
    assert theory[p]["ntk_ratio"] == regime(module, probe)["ntk_ratio"]
    at1 = next(r for r in res["rows"] if r["p"] == 1.0 and r["members"] == 2 and r["seed"] == 1)
    assert at1["accuracy"] == at1["member_accuracy"] and at1["correlation"] == pytest.approx(1.0)
    direct = _ctx().train(ensemble="batch", members=2, modulation="shifted-normal:0", seed=TINY.seed + 1009)
    row = next(r for r in res["rows"] if r["p"] == 0.0 and r["members"] == 2 and r["seed"] == 1)
    assert row["accuracy"] == direct.metrics["test"]["accuracy"]
    # the uncertainty columns: deepens.metrics on the trained ensemble's test logits and noise inputs
    from deepens.data import Split, ood_inputs
    from deepens.metrics import ood_detection, ood_scores, uncertainty_decomposition
    from deepens.training import predict_logits

    z = predict_logits(direct.model, direct.data.test).double()
    x = ood_inputs("noise", direct.data, seed=TINY.seed)
    o = predict_logits(direct.model, Split(x, torch.zeros(len(x), dtype=torch.long))).double()
    assert row["epistemic"] == pytest.approx(float(uncertainty_decomposition(z, logits=True)["epistemic"].mean()),
                                             rel=1e-12)
    mi = ood_detection(ood_scores(z)["neg_mutual_information"], ood_scores(o)["neg_mutual_information"])["auroc"]
    assert row["ood_auroc_mi"] == pytest.approx(float(mi), abs=1e-12)
    assert {c["id"] for c in _part(study, "regime")["claims"]} >= {"ee.regime.epistemic"}
    mean = next(r for r in res["mean"] if r["p"] == 0.0 and r["members"] == 2)
    seeds = [r["accuracy"] for r in res["rows"] if r["p"] == 0.0 and r["members"] == 2]
    assert mean["accuracy"] == pytest.approx(sum(seeds) / 2, rel=1e-12) and mean["seeds"] == 2
    gain = _part(study, "regime")["measured"]["gain_p0"]
    assert gain["values"] == [r["gain"] for r in res["rows"] if r["p"] == 0.0 and r["members"] == 2]


def test_width_deep_rows_are_member_subsets_and_parameters_scale(study):
    from deepens.training import classification_metrics, predict_logits

    res = _part(study, "width")["results"]
    r = _ctx().train(ensemble="deep", members=2, width=0.5)
    logits, y = predict_logits(r.model, r.data.test), r.data.test.y
    one = classification_metrics(logits[:1], y, curve=False)
    deep = {row["members"]: row for row in res["rows"] if row["kind"] == "deep" and row["width"] == 0.5
            and row["seed"] == 0}
    assert deep[1]["accuracy"] == one["accuracy"] == one["member_accuracy"]
    assert deep[2]["accuracy"] == r.metrics["test"]["accuracy"]
    assert deep[1]["params"] == 64 * 8 + 8 * 8 + 8 * 10 and deep[2]["params"] == 2 * deep[1]["params"]
    for best in res["best"]:
        rows = [x for x in res["rows"] if x["kind"] == best["kind"] and x["width"] == best["width"]
                and x["seed"] == best["seed"]]
        assert best["accuracy"] == max(x["accuracy"] for x in rows)


def test_gradient_scaling_reuses_gamma1_only_where_it_is_the_same_training(study):
    arms = _part(study, "gradient")["results"]["arms"]
    g1, gm = arms["γ = 1"]["curves"], arms["γ = M"]["curves"]
    assert g1[0] == gm[0] and g1[0]["members"] == 1  # M = 1: γ(1) = 1 either way
    direct = _ctx().train(ensemble="batch", members=1, gamma="M", lr=TINY.gradient_lr, schedule="constant",
                          eval_every=1, epochs=TINY.gradient_epochs)
    assert [h["train_loss"] for h in direct.history] == gm[0]["train_loss"]
    assert g1[1]["train_loss"] != gm[1]["train_loss"]  # M = 2: different step sizes of the shared weights


def test_lld_effective_gamma_is_m_times_the_lr_ratio(study):
    res = _part(study, "lld")["results"]
    for s in range(TINY.seeds):
        opt = {o["members"]: o for o in res["optimum"] if o["seed"] == s}
        for g in (g for g in res["gamma"] if g["seed"] == s):
            for name in ("test accuracy", "train accuracy", "early train loss"):
                assert g[name] == pytest.approx(g["members"] * opt[g["members"]][name] / opt[1][name], rel=1e-12)
        for m, o in opt.items():
            rows = [r for r in res["rows"] if r["members"] == m and r["seed"] == s and not r["diverged"]]
            best = max(r["accuracy"] for r in rows)
            assert best == next(r["accuracy"] for r in rows if r["lr"] == o["test accuracy"])
    factors = _part(study, "lld")["measured"]["log_factor_test"]["values"]
    expect = [max(abs(math.log(g["test accuracy"] / g["members"])) for g in res["gamma"] if g["seed"] == s)
              for s in range(TINY.seeds)]
    assert factors == pytest.approx(expect, rel=1e-12)


def test_mc_dropout_arms_are_the_trainings_they_name(study):
    rows = _part(study, "mcdropout")["results"]["rows"]
    direct = _ctx().train(ensemble="mc-dropout", members=2, modulation="normal:1,0.1", resample=True, gamma="1")
    row = next(r for r in rows if r["resample"] and r["arm"].startswith("shifted") and r["members"] == 2
               and r["seed"] == 0)
    assert row["accuracy"] == direct.metrics["test"]["accuracy"]


def test_orthogonality_and_interaction_match_direct_kernel_computations(study):
    from deepens.kernels import cross_to_same_ratio, ensemble_ntk, gradient_cosines, interaction_ratio, loss_ntk
    from deepens.study.embedded import _reference_ensemble

    data = _ctx().data(flatten=True)
    x, y = data.train.x[: TINY.ortho_samples], data.train.y[: TINY.ortho_samples]
    model = _reference_ensemble(TINY, data, TINY.seed + 1009, ensemble="batch", members=3, model="mlp",
                                widths=[16, 16], modulation="normal:0,1")
    cos = gradient_cosines(model, x, y)
    rows = _part(study, "orthogonality")["results"]["rows"]
    row = next(r for r in rows if r["width"] == 16 and r["seed"] == 1 and r["modulation"].startswith("centred"))
    assert row["mean"] == pytest.approx(float(cos[~torch.eye(3, dtype=torch.bool)].mean()), rel=1e-6)
    slopes = _part(study, "orthogonality")["measured"]["slope_centred"]["values"]
    for s, value in enumerate(slopes):
        a, b = (next(r["mean"] for r in rows if r["width"] == w and r["seed"] == s and r["modulation"] == row[
            "modulation"]) for w in (16, 64))
        assert value == pytest.approx(math.log(b / a) / math.log(64 / 16), rel=1e-9)
    xs, ys = data.train.x[: TINY.interaction_samples].double(), data.train.y[: TINY.interaction_samples]
    model = _reference_ensemble(TINY, data, TINY.seed, ensemble="batch", members=3, model="mlp", widths=[8, 8],
                                modulation="normal:0,1").double()
    irow = next(r for r in _part(study, "interaction")["results"]["rows"]
                if r["regime"] == "independent" and r["seed"] == 0 and r["width"] == 8
                and r["parameterization"] == "standard")
    assert irow["offdiag"] == pytest.approx(cross_to_same_ratio(ensemble_ntk(model, xs).total()), rel=1e-10)
    nll = loss_ntk(model, xs, ys, kind="nll").total()
    assert irow["m2"] == pytest.approx(interaction_ratio(nll, 2), rel=1e-10)


def test_gradient_norm_spread_and_ntk_constancy_match_direct_computations(study):
    from deepens.ensembles import BatchEnsemble
    from deepens.ensembles.graph import seeded
    from deepens.kernels import kernel_drift
    from deepens.models import MLP
    from deepens.study.embedded import regression_digits

    rec = _part(study, "gradnorms")
    rows = rec["results"]["rows"]
    assert len(rows) == TINY.seeds * 2 * TINY.gradnorm_draws * TINY.gradnorm_members
    for s, value in enumerate(rec["measured"]["spread_increase"]["values"]):
        def decades(io, s=s):
            v = np.array([r["norm"] for r in rows if r["io"] == io and r["seed"] == s])
            return math.log10(np.quantile(v, 0.95) / np.quantile(v, 0.05))
        assert value == pytest.approx(decades(True) - decades(False), rel=1e-12)
    x, y, probe = regression_digits(TINY.constancy_samples, TINY.seed)
    with seeded(TINY.seed + 16):
        net = MLP(64, [16, 16], 10, parameterization="ntk").double()
    model = BatchEnsemble(net, TINY.constancy_members, u="normal:0,1", v="normal:0,1", seed=TINY.seed + 16)
    r = kernel_drift(model, x, y, probe, lr=TINY.constancy_lr, steps=TINY.constancy_steps)
    row = next(r for r in _part(study, "constancy")["results"]["rows"] if r["seed"] == 0 and r["width"] == 16)
    assert row["relative"] == pytest.approx(r["relative_ensemble"], rel=1e-10)


def test_ablation_and_lld_mask_rows_are_the_trainings_they_name(study):
    rows = _part(study, "ablation")["results"]["rows"]
    direct = _ctx().train(ensemble="batch", members=TINY.ablation_members, modulation="u=normal:0,1", layers=[-1],
                          seed=TINY.seed + 1009)
    row = next(r for r in rows if r["variant"] == "last layer u only" and r["seed"] == 1)
    assert row["accuracy"] == direct.metrics["test"]["accuracy"]
    deltas = _part(study, "ablation")["measured"]["acc_io_delta"]["values"]
    for s, d in enumerate(deltas):
        by = {r["variant"]: r for r in rows if r["seed"] == s}
        assert d == pytest.approx(by["input/output modulations"]["accuracy"] - by["baseline"]["accuracy"], abs=1e-15)
    direct = _ctx().train(ensemble="lld", members=2, modulation="shifted-normal:0.9", lr=TINY.lldmask_lr)
    row = next(r for r in _part(study, "lldmask")["results"]["rows"] if r["p"] == 0.9 and r["members"] == 2
               and r["seed"] == 0)
    assert row["correlation"] == pytest.approx(direct.metrics["test"]["correlation"], rel=0, abs=0)


def test_collegial_design_parts_match_direct_calls(study):
    from deepens.design import MLPFamily, ResNeXt29Family, collegial_design, fit_alpha

    res = _part(study, "design")["results"]
    p = collegial_design(ResNeXt29Family(), 128, 1.6, terms="widths")
    assert res["resnext"]["primal"]["label"] == p.best.label == "37×10"
    fam = MLPFamily(784, 10, 6)
    fit = fit_alpha(fam, TINY.design_widths, draws=TINY.design_draws, seed=TINY.seed + 1009)
    f = res["fig3"]["fits"][1]
    assert f["alpha"] == pytest.approx(fit.alpha, rel=1e-12)
    assert f["primal_n"] == collegial_design(fam, 500, fit.alpha).continuous["n"]
    alpha = _part(study, "alpha")
    assert alpha["measured"]["alpha"]["values"][0] == pytest.approx(
        fit_alpha(MLPFamily(64, 10, 6), TINY.alpha_widths, draws=TINY.alpha_draws, seed=TINY.seed).alpha, rel=1e-12)


def test_collegial_variance_primal_dual_and_drift_rows(study):
    from deepens.design import MLPFamily

    var = _part(study, "variance")
    for s in range(TINY.seeds):
        rows = [r for r in var["results"]["rows"] if r["seed"] == s]
        logs = [math.log(r[k]) for r in rows for k in ("ratio_diagonal", "ratio_off_diagonal")]
        assert var["measured"]["ratio"]["values"][s] == pytest.approx(math.exp(sum(logs) / len(logs)), rel=1e-12)
    pd = _part(study, "primaldual")["results"]
    family = MLPFamily(64, 10, 6)
    for r in pd["rows"]:
        assert r["params"] == family.parameters(r["m"], r["n"])
        assert r["error"] == pytest.approx(float(np.mean(r["errors"])), rel=1e-12)
        if r["curve"] == "primal":
            assert family.parameters(r["m"], r["n"]) <= family.parameters(1, TINY.primaldual_baseline)
    drift = _part(study, "drift")["results"]["rows"]
    assert {(r["m"], r["n"]) for r in drift} == {(1, 2), (2, 2), (1, 4), (4, 4), (1, 16)}
    for r in drift:
        assert r["change"] == pytest.approx(float(np.mean(r["changes"])), rel=1e-12)


def test_equivariance_parts_measure_member_groups_of_one_training(study):
    from deepens.ensembles import DeepEnsemble
    from deepens.models import MLP
    from deepens.study.equivariance import full_batch_gd, ising_energies
    from deepens.symmetry import LatticeRotation, Symmetry, augment_orbits, ensemble_orbit_metrics, orbit_outputs

    ising = _part(study, "ising")
    assert ising["measured"]["ntk_error"]["mean"] < 1e-10  # the infinite-width ensemble is exactly equivariant
    size, sites, k = TINY.ising_size, TINY.ising_size ** 2, TINY.ising_members
    gen = torch.Generator().manual_seed(TINY.seed)
    spins = torch.randint(0, 2, (TINY.ising_samples + TINY.ising_test, sites), generator=gen).double() * 2 - 1
    train, test = spins[: TINY.ising_samples], spins[TINY.ising_samples:]
    action = LatticeRotation(size)
    sym = Symmetry(action, action)
    xa, ya = augment_orbits(train, ising_energies(train, size), sym)
    width = TINY.ising_widths[0]
    ens = DeepEnsemble(MLP(sites, [width], sites, parameterization="ntk"), k * TINY.seeds, seed=TINY.seed + 7 * width)
    full_batch_gd(ens, xa.float(), ya.float(), TINY.ising_steps, TINY.ising_lr)
    with torch.no_grad():
        orbit, elements = orbit_outputs(ens, test.float(), sym, batch_dim=1)
    second = ensemble_orbit_metrics(orbit[:, k:].double(), "equivariance", symmetry=sym, elements=elements)
    row = next(r for r in ising["results"]["widths"] if r["width"] == width and r["seed"] == 1)
    assert row["sets"]["in"]["equivariance"]["ensemble"]["mean"] == pytest.approx(second["ensemble"]["mean"],
                                                                                  rel=1e-12)
    cross = _part(study, "crossproduct")
    assert cross["measured"]["ntk_own_group"]["mean"] < 1e-10
    digits = _part(study, "digits")
    for p in digits["results"]["history"]:
        for m in p["sets"].values():
            assert 1.0 <= m["member"]["mean"] <= p["k"] and 1.0 <= m["ensemble"]["mean"] <= p["k"]
    pts = [(m["ensemble"]["mean"], m["member"]["mean"]) for p in digits["results"]["history"] if p["seed"] == 0
           for m in p["sets"].values()]
    assert digits["measured"]["ensemble_above_member"]["values"][0] == sum(e > m for e, m in pts) / len(pts)
    so2 = _part(study, "so2")["results"]["rows"]
    assert {r["rotations"] for r in so2} == set(TINY.so2_rotations)
    assert all(0.0 < r["same_ensemble"] <= 1.0 and 0.0 < r["same_member"] <= 1.0 for r in so2)


def test_power_law_pool_and_calibration_parts(study):
    from deepens.scaling import lower_envelope_nll, pool_curve, pool_ensembles

    pool = _part(study, "pool")["results"]
    params = sorted(law["params"] for law in pool["laws"])
    assert params == [40 * 8 + 8 * 8 + 8 * 10, 40 * 16 + 16 * 16 + 16 * 10]
    for law in pool["laws"]:
        assert [r["n"] for r in pool["curves"][str(law["params"])]] == list(range(1, TINY.pool_size // 2 + 1))
    # the calibration part reads the very pools the pool part trained (the study's store)
    store_runs = sorted((study[0] / "store" / "runs").iterdir())
    ctx = _ctx()
    cal = _part(study, "calibration")
    assert cal["from_store"] == cal["trainings"] == len(TINY.pool_widths)
    # Proposition 1's predicted coefficient, by an explicit loop over objects
    r = ctx.train(dataset="mnist1d", num_samples=TINY.pool_num_samples, model="mlp", widths=[8, 8],
                  ensemble="deep", members=TINY.pool_size, epochs=TINY.pool_epochs, batch_size=128, lr=TINY.pool_lr,
                  schedule="cosine", weight_decay=TINY.pool_weight_decay, seed=TINY.seed + 101)
    from deepens.training import predict_logits

    z, y = predict_logits(r.model, r.data.test).double(), r.data.test.y
    terms = []
    for j in range(len(y)):
        p = torch.softmax(z[:, j], -1)[:, y[j]]
        terms.append(float(p.var(unbiased=True) / (2 * p.mean() ** 2)))
    q = next(q for q in cal["results"]["prop1"] if q["width"] == 8)
    assert q["predicted_b"] == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    groups = torch.as_tensor(pool_ensembles(TINY.pool_size, 2, TINY.seed))
    row = next(x for x in cal["results"]["rows"] if x["width"] == 8 and x["n"] == 2)
    assert row["le_nll"] == pytest.approx(lower_envelope_nll(z[groups], y)["le_nll"], rel=1e-9)
    assert len(store_runs) >= len(TINY.pool_widths)
    curve = pool_curve(z, y, sizes=[1], seed=TINY.seed, cv="none")
    assert pool["curves"][str(params[0])][0]["nll_mean"] == pytest.approx(curve[0]["nll_mean"], rel=1e-9)


def test_parallel_trainings_give_the_numbers_of_sequential_ones(study, tmp_path):
    """Worker processes train a part's networks ahead of its loop (one torch thread each, like the sequential
    path): the records are the same as the fixture's, trained one by one in this process."""
    parallel = run_study(TINY, tmp_path / "parallel", only="regime,primaldual,pool", workers=2, progress=False)
    for name in ("regime", "primaldual", "pool"):
        assert parallel["parts"][name]["results"] == study[1]["parts"][name]["results"]
        assert parallel["parts"][name]["trainings"] == study[1]["parts"][name]["trainings"]
        assert parallel["parts"][name]["from_store"] == 0  # trained by the workers in this run, not loaded


def test_partition_mean_averages_pool_curves_point_by_point():
    from deepens.scaling import pool_curve
    from deepens.study.powerlaws import _partition_mean

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(12, 50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    curves = [pool_curve(logits, labels, sizes=[1, 2, 3], seed=s, cv="none") for s in (0, 1, 2)]
    mean = _partition_mean(curves)
    for j, row in enumerate(mean):
        assert row["n"] == j + 1 and row["ensembles"] == 12 // (j + 1) and row["partitions"] == 3
        for key in ("cnll_mean", "nll_mean", "accuracy_mean"):
            assert row[key] == pytest.approx(sum(c[j][key] for c in curves) / 3, rel=1e-12)


def test_resume_skips_finished_parts_and_reruns_changed_ones(study, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(study[0], out)
    with pytest.raises(DeepensError, match="already holds a study; pass --resume"):
        run_study(TINY, out, progress=False)
    calls = []
    real = StudyContext.train
    monkeypatch.setattr(StudyContext, "train", lambda self, **kw: calls.append(kw) or real(self, **kw))
    again = run_study(TINY, out, resume=True, progress=False)
    assert again["skipped"] == list(PARTS) and again["ran"] == [] and calls == []
    changed = StudyConfig.preset_config("tiny", mcd_sigma=0.2)
    again = run_study(changed, out, resume=True, progress=False)
    assert again["ran"] == ["mcdropout"] and len(calls) == 3 * 2 * TINY.seeds
    assert load_study(out)["parts"]["mcdropout"]["config"]["mcd_sigma"] == 0.2
    # trainings unchanged by the new setting (fixed centred and resampled centred masks) came from the store
    assert again["parts"]["mcdropout"]["from_store"] == 2 * 2 * TINY.seeds


def test_a_study_killed_across_papers_resumes_without_recomputing_finished_parts(study, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepens", "study", "--preset", "tiny", "--paper", "ee,pl",
                             "--only", "regime,lld,pool", "--out", str(out), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # results.json and the reports are written after every part, not only at the end
        while not (out / "report.html").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the study ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.json")}
    assert "regime.json" in finished and "pool.json" not in finished
    assert list(json.loads((out / "results.json").read_text())["parts"]) == [n[:-5] for n in finished]
    resumed = run_study(TINY, out, only="regime,lld,pool", paper="ee,pl", resume=True, progress=False)
    for name, mtime in finished.items():
        assert (out / "parts" / name).stat().st_mtime_ns == mtime  # not recomputed
        assert name[:-5] in resumed["skipped"]
    assert "pool" in resumed["ran"]
    for name in ("regime", "lld", "pool"):
        assert resumed["parts"][name]["results"] == study[1]["parts"][name]["results"]
        assert [c["verdict"] for c in resumed["parts"][name]["claims"]] == [
            c["verdict"] for c in study[1]["parts"][name]["claims"]]


@pytest.mark.parametrize("overrides,match", [
    (dict(regime_p=[1.5]), "regime_p: expected a number"),
    (dict(widths=[]), "widths: expected a list"),
    (dict(pool_size=5), "pool_size: a power law needs"),
    (dict(dataset="cifar10"), "data_dir: dataset cifar10 read(s) files from a local directory"),
    (dict(model="convnet", dataset="mnist1d"), "model: convnet needs image data"),
    (dict(cross_groups=["c3"]), "cross_groups: expected one of"),
    (dict(seeds=0), "seeds: expected an integer >= 1"),
    (dict(ising_lr=-1.0), "ising_lr: expected a number in (0, inf)"),
    (dict(bogus=1), "study: unknown option"),
])
def test_bad_settings_name_the_option(overrides, match):
    with pytest.raises(DeepensError, match=match.replace("(", r"\(").replace(")", r"\)")):
        StudyConfig.preset_config("tiny", **overrides)


def test_parts_are_selected_by_paper_and_name():
    assert part_names("pool, regime") == ["regime", "pool"]
    assert part_names(paper="ce") == [n for n, p in PARTS.items() if p.paper == "ce"]
    assert part_names("alpha,drift", paper="ce,pl") == ["alpha", "drift"]
    assert {PARTS[n].paper for n in part_names()} == {"ee", "ce", "eqe", "pl"}
    with pytest.raises(DeepensError, match="only: expected comma-separated parts"):
        part_names("regime,foo")
    with pytest.raises(DeepensError, match="paper: expected comma-separated papers"):
        part_names(paper="ee,xx")
    with pytest.raises(DeepensError, match="only: regime belong"):
        part_names("regime", paper="ce")


def test_cli_study_json_and_errors(cli, tmp_path):
    code, out, err = cli(["study", "--preset", "tiny", "--paper", "ce", "--only", "design", "--out", tmp_path / "s",
                          "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert list(result["parts"]) == ["design"] and Path(result["report"]).exists()
    assert [c["id"] for c in result["claims"]] == [c.id for c in PARTS["design"].claims]
    code, out, err = cli(["study", "--tiny", "--only", "design", "--out", tmp_path / "s"])
    assert code == 2 and "already holds a study" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["study", "--tiny", "--only", "design", "--out", tmp_path / "s", "--resume"])
    assert code == 0 and "[reproduced]" in out and "verdicts:" in out
    code, out, err = cli(["study", "--tiny", "--only", "nope", "--out", tmp_path / "t"])
    assert code == 2 and "only: expected comma-separated parts" in err and "Traceback" not in err
    code, out, err = cli(["study", "--tiny", "--epochs", "0", "--out", tmp_path / "u"])
    assert code == 2 and "epochs: expected an integer >= 1" in err
    code, out, err = cli(["study", "--preset", "full", "--tiny", "--out", tmp_path / "v"])
    assert code == 2 and "preset: --preset full contradicts --tiny" in err
    code, out, _ = cli(["study", "--help"])
    assert code == 0 and "--paper" in out and "--json" in out


def test_cli_equivariance_runs_the_study_part(cli, tmp_path):
    code, out, err = cli(["equivariance", "ising", "--preset", "tiny", "--size", "3", "--widths", "8,16",
                          "--members", "2", "--steps", "3", "--out", tmp_path / "eq", "--json"])
    assert code == 0, err
    record = json.loads(out)
    assert record["name"] == "ising" and record["config"]["ising_widths"] == [8, 16]
    assert {c["id"] for c in record["claims"]} == {c.id for c in PARTS["ising"].claims}
    assert load_study(tmp_path / "eq")["parts"]["ising"]["results"] == record["results"]
    code, out, err = cli(["equivariance", "crossproduct", "--tiny", "--groups", "c1,c2", "--out", tmp_path / "eq"])
    assert code == 0, err
    assert "eqe.crossproduct" in out and "report:" in out


@pytest.mark.parametrize("args,match", [
    (["ising", "--widths", "a,b"], "widths: expected comma-separated integers"),
    (["ising", "--members", "0"], "ising_members: expected an integer >= 1"),
    (["crossproduct", "--groups", "c3"], "cross_groups: expected one of"),
    (["digits", "--groups", "0"], "digits_groups: expected an integer >= 1"),
    (["ising", "--lr", "-1"], "ising_lr: expected a number"),
])
def test_cli_equivariance_bad_input_is_one_line_exit_2(cli, tmp_path, args, match):
    code, out, err = cli(["equivariance", *args, "--tiny", "--out", tmp_path / "x"])
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing written


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium package; it could not here)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in deepens[dev])")
    return chromium, sync_playwright


def test_report_in_a_real_headless_browser(study):
    out, result = study
    chromium, sync_playwright = _browser()
    errors, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto((out / "report.html").resolve().as_uri(), wait_until="load")
            sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                                  "i.naturalHeight])")
            sections = page.evaluate("document.querySelectorAll('section[id]').length")
            verdict_rows = page.evaluate("document.querySelectorAll('#verdicts table tr').length")
            first = page.evaluate("document.querySelector('section').id")
            shot = out / "report-screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert first == "verdicts"  # the report opens with the verdict table
    assert verdict_rows == 1 + len(result["claims"])
    assert sections == len(PARTS) + 1 + 4
    assert len(sizes) == sum(len(r["figures"]) for r in result["parts"].values()) >= len(PARTS)
    assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert errors == [] and failed == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.parametrize("dataset", ["mnist1d", "cifar10", "digits-convnet"])
def test_the_study_runs_on_every_dataset_of_the_trainer(tmp_path, dataset):
    from test_data import _write_cifar10

    options = {"mnist1d": dict(dataset="mnist1d", num_samples=400),
               "cifar10": dict(dataset="cifar10", data_dir=str(tmp_path / "cifar")),
               "digits-convnet": dict(model="convnet")}[dataset]
    if dataset == "cifar10":
        _write_cifar10(tmp_path / "cifar", n=20)
    config = StudyConfig.preset_config("tiny", seeds=1, **options)
    result = run_study(config, tmp_path / "study", only="lld,orthogonality", progress=False)
    lld = result["parts"]["lld"]["results"]["rows"]
    assert all(r["accuracy"] is None or 0.0 <= r["accuracy"] <= 1.0 for r in lld)
    test_size = {"mnist1d": None, "cifar10": 20, "digits-convnet": 359}[dataset]
    if test_size:
        ctx = StudyContext(config, lambda: None)
        trained = ctx.train(ensemble="lld", members=1, lr=0.01)
        assert trained.metrics["test"]["samples"] == test_size
        assert lld[0]["accuracy"] == trained.metrics["test"]["accuracy"]
    cos = result["parts"]["orthogonality"]["results"]["rows"]
    assert all(0.0 <= r["mean"] <= 1.0 for r in cos)


def test_the_plan_of_a_finished_study_names_every_training_it_ran(study):
    from deepens.study.plan import plan_study
    from deepens.sweeps.store import Store

    out, result = study
    plan = plan_study(TINY, out=out, steps=1, warmup=0)
    stored = {t.id for t in Store(out / "store").tasks()}
    assert plan["done"] == plan["trainings"] == len(stored) and plan["seconds"] == 0 and plan["calibrations"] == []
    trained = {n for n, p in result["parts"].items() if p["trainings"]}
    assert trained == {p["name"] for p in plan["parts"] if p["trainings"]}
