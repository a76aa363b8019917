"""deepens study: every part on the tiny preset, proved against direct computations; resume (including
after SIGKILL); the CLI; the report in a real headless browser."""

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

import pytest
import torch

from deepens.errors import DeepensError
from deepens.study import PARTS, StudyConfig, load_study, run_study
from deepens.study.runner import StudyContext

pytestmark = pytest.mark.slow

TINY = StudyConfig.preset_config("tiny")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tiny"
    result = run_study(StudyConfig.preset_config("tiny"), out, progress=False)
    return out, result


def _ctx():
    return StudyContext(TINY, lambda: None)


def test_every_part_writes_its_record_tables_figures_and_the_report(study):
    out, result = study
    assert list(result["parts"]) == list(PARTS) and result["ran"] == list(PARTS)
    for name, record in result["parts"].items():
        assert record["config"] == TINY.part_config(PARTS[name].prefix)
        assert record["reading"] and record["headline"] and record["seconds"] > 0
        for fig in record["figures"]:
            assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for table, rows in record["tables"].items():
            with open(out / "tables" / f"{table}.csv", newline="") as fh:
                read = list(csv.DictReader(fh))
            assert len(read) == len(rows)
    assert json.loads((out / "results.json").read_text())["parts"].keys() == set(PARTS)
    html = (out / "report.html").read_text()
    assert html.count("<section id=") == len(PARTS)
    assert html.count("data:image/png;base64,") == sum(len(r["figures"]) for r in result["parts"].values())
    assert "src=\"figures/" not in html  # self-contained


def test_regime_matches_the_analytic_verdict_and_identical_members_at_p1(study):
    res = study[1]["parts"]["regime"]["results"]
    theory = {t["p"]: t for t in res["theory"]}
    assert theory[0.0]["verdict"] == "independent" and theory[0.0]["ntk_ratio"] == theory[0.0]["nngp_ratio"] == 0.0
    # p = 1: identical members, so the cross-member output covariance equals the same-member one; the NTK's
    # cross part lacks the members' own (trainable) modulations
    assert theory[1.0]["verdict"] == "collective" and theory[1.0]["nngp_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < theory[1.0]["ntk_ratio"] < 1.0
    # p = 1: every modulation is the constant 1, so all members are the same network
    at1 = next(r for r in res["rows"] if r["p"] == 1.0 and r["members"] == 2)
    assert at1["accuracy"] == at1["member_accuracy"] and at1["correlation"] == pytest.approx(1.0)
    # a row is exactly the training it describes
    direct = _ctx().train(ensemble="batch", members=2, modulation="shifted-normal:0")
    row = next(r for r in res["rows"] if r["p"] == 0.0 and r["members"] == 2)
    assert row["accuracy"] == direct.metrics["test"]["accuracy"]
    assert row["correlation"] == pytest.approx(direct.metrics["test"]["correlation"], abs=0, rel=0)


def test_width_deep_rows_are_member_subsets_and_parameters_scale(study):
    from deepens.training import classification_metrics, predict_logits

    res = study[1]["parts"]["width"]["results"]
    r = _ctx().train(ensemble="deep", members=2, width=0.5)
    logits, y = predict_logits(r.model, r.data.test), r.data.test.y
    one = classification_metrics(logits[:1], y, curve=False)
    deep = {row["members"]: row for row in res["rows"] if row["kind"] == "deep" and row["width"] == 0.5}
    assert deep[1]["accuracy"] == one["accuracy"] == one["member_accuracy"]
    assert deep[2]["accuracy"] == r.metrics["test"]["accuracy"]
    # 64 → 8 → 8 → 10 without biases
    assert deep[1]["params"] == 64 * 8 + 8 * 8 + 8 * 10 and deep[2]["params"] == 2 * deep[1]["params"]
    for best in res["best"]:
        rows = [x for x in res["rows"] if x["kind"] == best["kind"] and x["width"] == best["width"]]
        assert best["accuracy"] == max(x["accuracy"] for x in rows)
    for m in res["matched"]:
        assert m["deep_params"] <= m["params"]


def test_gradient_scaling_reuses_gamma1_only_where_it_is_the_same_training(study):
    arms = study[1]["parts"]["gradient"]["results"]["arms"]
    g1, gm = arms["γ = 1"]["curves"], arms["γ = M"]["curves"]
    assert g1[0] == gm[0]  # M = 1: γ(1) = 1 either way
    direct = _ctx().train(ensemble="batch", members=1, gamma="M", lr=TINY.gradient_lr, schedule="constant",
                          eval_every=1)
    assert [h["train_loss"] for h in direct.history] == gm[0]["train_loss"]
    assert g1[1]["train_loss"] != gm[1]["train_loss"]  # M = 2: different step sizes of the shared weights


def test_lld_effective_gamma_is_m_times_the_lr_ratio(study):
    res = study[1]["parts"]["lld"]["results"]
    opt = {o["members"]: o for o in res["optimum"]}
    for g in res["gamma"]:
        for name in ("test accuracy", "train accuracy", "early train loss"):
            expected = g["members"] * opt[g["members"]][name] / opt[1][name]
            assert g[name] == pytest.approx(expected, rel=1e-12)
    for m, o in opt.items():
        rows = [r for r in res["rows"] if r["members"] == m and not r["diverged"]]
        assert max(r["accuracy"] for r in rows) == next(r["accuracy"] for r in rows if r["lr"] == o["test accuracy"])


def test_mc_dropout_arms_are_the_trainings_they_name(study):
    rows = study[1]["parts"]["mcdropout"]["results"]["rows"]
    direct = _ctx().train(ensemble="mc-dropout", members=2, modulation="normal:1,0.1", resample=True, gamma="1")
    row = next(r for r in rows if r["resample"] and r["arm"].startswith("shifted") and r["members"] == 2)
    assert row["accuracy"] == direct.metrics["test"]["accuracy"]
    assert {r["arm"] for r in rows} == {"centred N(0, 1), fixed masks", "shifted N(1, 0.1²), resampled",
                                        "centred N(0, 1), resampled"}


def test_orthogonality_matches_direct_gradient_cosines(study):
    from deepens.kernels import gradient_cosines
    from deepens.training import TrainConfig, build_ensemble

    res = study[1]["parts"]["orthogonality"]["results"]
    data = _ctx().data(flatten=True)
    x, y = data.train.x[: TINY.ortho_samples], data.train.y[: TINY.ortho_samples]
    values = []
    for seed in range(TINY.ortho_seeds):
        model = build_ensemble(TrainConfig(ensemble="batch", members=3, widths=[16, 16], modulation="normal:0,1",
                                           seed=TINY.seed + 1000 * seed), data)
        cos = gradient_cosines(model, x, y)
        values.append(float(cos[~torch.eye(3, dtype=torch.bool)].mean()))
    row = res["centred N(0, 1)"]["rows"][0]
    assert row["width"] == 16 and row["mean"] == pytest.approx(sum(values) / len(values), rel=1e-6)
    slope = res["centred N(0, 1)"]["fit"]["slope"]
    rows = res["centred N(0, 1)"]["rows"]
    assert slope == pytest.approx(math.log(rows[1]["mean"] / rows[0]["mean"]) / math.log(64 / 16), rel=1e-9)


def test_scaling_pool_sizes_and_power_laws(study):
    res = study[1]["parts"]["scaling"]["results"]
    params = sorted(law["params"] for law in res["laws"])
    assert params == [64 * 8 + 8 * 8 + 8 * 10, 64 * 16 + 16 * 16 + 16 * 10]
    for law in res["laws"]:
        rows = [r for r in res["curves"][str(law["params"])] if r["reliable"]]
        assert [r["n"] for r in rows] == [1, 2, 3]
        # the fit reproduces the points it was fitted to (3 points, 3 parameters)
        for r in rows:
            assert law["c"] + law["b"] * r["n"] ** law["a"] == pytest.approx(r["cnll_mean"], rel=1e-3)


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
    assert again["ran"] == ["mcdropout"] and len(calls) == 6
    assert load_study(out)["parts"]["mcdropout"]["config"]["mcd_sigma"] == 0.2


def test_a_killed_study_resumes_to_the_same_numbers(study, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepens", "study", "--tiny", "--only", "regime,width,lld",
                             "--out", str(out), "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "parts" / "regime.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the study ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "report.html").exists()
    resumed = run_study(TINY, out, only="regime,width,lld", resume=True, progress=False)
    assert "regime" in resumed["skipped"] and "lld" in resumed["ran"]
    for name in ("regime", "width", "lld"):
        assert resumed["parts"][name]["results"] == study[1]["parts"][name]["results"]


@pytest.mark.parametrize("overrides,match", [
    (dict(regime_p=[1.5]), "regime_p: expected a number"),
    (dict(widths=[]), "widths: expected a list"),
    (dict(scaling_pool=5), "scaling_pool: a power law needs"),
    (dict(dataset="cifar10"), "data_dir: cifar10 is read from a local directory"),
    (dict(model="convnet", dataset="mnist1d"), "model: convnet needs image data"),
    (dict(bogus=1), "study: unknown option"),
])
def test_bad_settings_name_the_option(overrides, match):
    with pytest.raises(DeepensError, match=match):
        StudyConfig.preset_config("tiny", **overrides)


def test_only_names_parts():
    from deepens.study import part_names

    assert part_names("scaling, regime") == ["regime", "scaling"]
    with pytest.raises(DeepensError, match="only: expected comma-separated parts"):
        part_names("regime,foo")


def test_cli_study_json_and_errors(cli, tmp_path):
    code, out, err = cli(["study", "--tiny", "--only", "lld", "--out", tmp_path / "s", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert list(result["parts"]) == ["lld"] and Path(result["report"]).exists()
    code, out, err = cli(["study", "--tiny", "--only", "lld", "--out", tmp_path / "s"])
    assert code == 2 and "already holds a study" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["study", "--tiny", "--only", "nope", "--out", tmp_path / "t"])
    assert code == 2 and "only: expected comma-separated parts" in err and "Traceback" not in err
    code, out, err = cli(["study", "--tiny", "--epochs", "0", "--out", tmp_path / "u"])
    assert code == 2 and "epochs: expected an integer >= 1" in err


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
            shot = out / "report-screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert sections == len(PARTS)
    assert len(sizes) == sum(len(r["figures"]) for r in result["parts"].values()) >= len(PARTS)
    assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert errors == [] and failed == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_partition_mean_averages_pool_curves_point_by_point():
    from deepens.scaling import pool_curve
    from deepens.study.parts import _partition_mean

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(12, 50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    curves = [pool_curve(logits, labels, sizes=[1, 2, 3], seed=s, cv="none") for s in (0, 1, 2)]
    mean = _partition_mean(curves)
    for j, row in enumerate(mean):
        assert row["n"] == j + 1 and row["ensembles"] == 12 // (j + 1) and row["partitions"] == 3
        for key in ("cnll_mean", "nll_mean", "accuracy_mean"):
            assert row[key] == pytest.approx(sum(c[j][key] for c in curves) / 3, rel=1e-12)
    # n = 1 uses every network once whatever the partition
    assert curves[0][0]["nll_mean"] == pytest.approx(curves[1][0]["nll_mean"], rel=1e-12)


@pytest.mark.parametrize("dataset", ["mnist1d", "cifar10", "digits-convnet"])
def test_the_study_runs_on_every_dataset_of_the_trainer(tmp_path, dataset):
    from test_data import _write_cifar10

    options = {"mnist1d": dict(dataset="mnist1d", num_samples=400),
               "cifar10": dict(dataset="cifar10", data_dir=str(tmp_path / "cifar")),
               "digits-convnet": dict(model="convnet")}[dataset]
    if dataset == "cifar10":
        _write_cifar10(tmp_path / "cifar", n=20)
    config = StudyConfig.preset_config("tiny", **options)
    result = run_study(config, tmp_path / "study", only="lld,orthogonality", progress=False)
    lld = result["parts"]["lld"]["results"]["rows"]
    assert all(r["accuracy"] is None or 0.0 <= r["accuracy"] <= 1.0 for r in lld)
    test_size = {"mnist1d": None, "cifar10": 20, "digits-convnet": 359}[dataset]
    if test_size:
        ctx = StudyContext(config, lambda: None)
        trained = ctx.train(ensemble="lld", members=1, lr=0.01)
        assert trained.metrics["test"]["samples"] == test_size
        assert lld[0]["accuracy"] == trained.metrics["test"]["accuracy"]
    cos = result["parts"]["orthogonality"]["results"]["centred N(0, 1)"]["rows"]
    assert all(0.0 <= r["mean"] <= 1.0 for r in cos)
