"""deepens.metrics against scikit-learn, torchmetrics and explicit loops: OOD detection, decomposition,
calibration, selective classification, temperature scaling, and the all-in-one call for many ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from deepens.errors import DeepensError
from deepens.metrics import (
    TemperatureScaler,
    calibration_metrics,
    ensemble_metrics,
    ood_detection,
    ood_scores,
    reliability,
    risk_coverage,
    uncertainty_decomposition,
)
from deepens.scaling import calibrated_nll
from deepens.training.metrics import disagreement


def _sklearn(s_in: np.ndarray, s_out: np.ndarray) -> dict:
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    s = np.r_[s_in, s_out]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": roc_auc_score(y, s), "aupr_in": average_precision_score(y, s),
            "aupr_out": average_precision_score(1 - y, -s), "fpr95": fpr[np.searchsorted(tpr, 0.95, side="left")]}


@pytest.mark.parametrize("ties", [False, True])
def test_ood_detection_matches_scikit_learn_row_by_row(ties):
    rng = np.random.default_rng(0)
    s_in = rng.normal(1.0, 1.0, size=(6, 300))
    s_out = rng.normal(0.0, 1.2, size=(6, 170))
    if ties:  # many equal scores across and within the two sets
        s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
    ours = ood_detection(torch.tensor(s_in), torch.tensor(s_out))
    for row in range(6):
        ref = _sklearn(s_in[row], s_out[row])
        for key, value in ref.items():
            assert float(ours[key][row]) == pytest.approx(value, abs=1e-12), (key, row)


@pytest.mark.parametrize("s_in, s_out", [
    ([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]),  # ties across the sets only
    ([1.0, 2.0, 2.0, 3.0], [0.0, 4.0]),  # ties within the in-distribution scores only
    ([1.0, 1.0, 3.0], [3.0, 3.0, 0.5, 1.0]),  # both, a tie group shared by the sets
    ([5.0], [5.0]), ([0.0, 0.0], [1.0]), ([2.0] * 20 + [1.0], [2.0, 0.0, 0.0]),
])
def test_ood_detection_hand_built_ties_match_scikit_learn(s_in, s_out):
    ours = ood_detection(torch.tensor(s_in, dtype=torch.float64), torch.tensor(s_out, dtype=torch.float64))
    for key, value in _sklearn(np.array(s_in), np.array(s_out)).items():
        assert float(ours[key]) == pytest.approx(value, abs=1e-12), key


def test_ood_detection_on_large_float32_rows_sorted_in_threads_matches_scikit_learn():
    """Rows of ≥ 2^15 scores take NumPy's sort in threads; float32 scores rounded to create many tie groups."""
    from deepens.metrics.ood import sorted_rows

    g = torch.Generator().manual_seed(5)
    s_in = (torch.rand(3, 12_000, generator=g) * 1.1).round(decimals=3)
    s_out = torch.rand(3, 3_000, generator=g).round(decimals=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch.equal(sorted_rows(s_in), torch.sort(s_in, dim=-1).values)
        assert torch.equal(sorted_rows(s_in.double()), torch.sort(s_in.double(), dim=-1).values)
        ours = ood_detection(s_in, s_out)
    finally:
        torch.set_num_threads(threads)
    for row in range(3):
        for key, value in _sklearn(s_in[row].double().numpy(), s_out[row].double().numpy()).items():
            assert float(ours[key][row]) == pytest.approx(value, abs=1e-12), (key, row)


def test_all_finite_is_exact_when_the_sum_overflows():
    from deepens.errors import all_finite

    assert all_finite(torch.full((4,), 3e38)) and all_finite(torch.zeros(0))
    assert not all_finite(torch.tensor([1.0, float("inf"), -float("inf")]))
    assert not all_finite(torch.tensor([3e38, 3e38, float("nan")]))


def test_ood_detection_limits_and_broadcasting():
    perfect = ood_detection(torch.arange(10.0) + 100, torch.arange(7.0))
    assert {k: float(v) for k, v in perfect.items()} == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    inverted = ood_detection(torch.arange(7.0), torch.arange(10.0) + 100)
    assert float(inverted["auroc"]) == 0.0 and float(inverted["fpr95"]) == 1.0
    same = ood_detection(torch.zeros(5), torch.zeros(8))  # one tie group: chance level
    assert float(same["auroc"]) == 0.5 and float(same["aupr_in"]) == pytest.approx(5 / 13)
    many = ood_detection(torch.randn(3, 4, 20), torch.randn(20))  # one OOD set for 3 × 4 score rows
    assert many["auroc"].shape == (3, 4)
    with pytest.raises(DeepensError, match="score_in: non-finite"):
        ood_detection(torch.tensor([1.0, float("nan")]), torch.zeros(3))


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0), axis=-1)


def test_uncertainty_decomposition_against_an_explicit_loop():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 5, 40, 6)) * 2  # 3 ensembles of 5 members
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ours = uncertainty_decomposition(torch.tensor(z), logits=True)
    for e in range(3):
        mean = p[e].mean(0)
        total, aleatoric = _entropy(mean), _entropy(p[e]).mean(0)
        assert np.allclose(ours["total"][e], total, atol=1e-12)
        assert np.allclose(ours["aleatoric"][e], aleatoric, atol=1e-12)
        assert np.allclose(ours["epistemic"][e], total - aleatoric, atol=1e-12)
        votes = p[e].argmax(-1)  # (M, B)
        modal = np.array([np.bincount(votes[:, b], minlength=6).max() for b in range(40)])
        assert np.allclose(ours["variation_ratio"][e], 1 - modal / 5)
        assert float(ours["disagreement"][e].mean()) == pytest.approx(disagreement(torch.tensor(votes), 6))
    assert bool((ours["epistemic"] >= 0).all())
    same = uncertainty_decomposition(torch.tensor(p[0, :1]).repeat(4, 1, 1))  # identical members: no epistemic
    assert float(same["epistemic"].abs().max()) < 1e-12 and float(same["disagreement"].max()) == 0.0
    votes = torch.nn.functional.one_hot(torch.tensor(z[0]).argmax(-1), 6).double()  # one-hot members
    hot = uncertainty_decomposition(votes)  # no aleatoric part; epistemic = entropy of the vote shares
    assert float(hot["aleatoric"].abs().max()) == 0.0
    assert np.allclose(hot["epistemic"], _entropy(votes.mean(0).numpy()), atol=1e-12)
    with pytest.raises(DeepensError, match="probs: expected probabilities"):
        uncertainty_decomposition(torch.tensor(z[0]))


def test_calibration_metrics_match_torchmetrics_and_explicit_definitions():
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

    rng = np.random.default_rng(2)
    z = rng.normal(size=(4, 500, 7)) * rng.uniform(0.5, 3.0, size=(4, 1, 1))
    p = torch.softmax(torch.tensor(z), -1)
    y = torch.tensor(rng.integers(0, 7, 500))
    ours = calibration_metrics(p, y, bins=15)
    for e in range(4):
        ece = multiclass_calibration_error(p[e].float(), y, num_classes=7, n_bins=15, norm="l1")
        mce = multiclass_calibration_error(p[e].float(), y, num_classes=7, n_bins=15, norm="max")
        assert float(ours["ece"][e]) == pytest.approx(float(ece), abs=1e-6)
        assert float(ours["mce"][e]) == pytest.approx(float(mce), abs=1e-6)
        accuracy = multiclass_accuracy(p[e], y, num_classes=7, average="micro")  # float32
        assert float(ours["accuracy"][e]) == pytest.approx(float(accuracy), abs=1e-7)
        assert float(ours["accuracy"][e]) == (p[e].numpy().argmax(1) == y.numpy()).mean()
        pe, onehot = p[e].numpy(), np.eye(7)[y.numpy()]
        assert float(ours["brier"][e]) == pytest.approx(((pe - onehot) ** 2).sum(1).mean(), abs=1e-12)
        conf, hit = pe.max(1), (pe.argmax(1) == y.numpy())
        order = np.argsort(conf, kind="stable")
        adaptive = sum(abs(hit[g].sum() - conf[g].sum()) for g in np.array_split(order, 15)) / 500
        assert float(ours["adaptive_ece"][e]) == pytest.approx(adaptive, abs=1e-12)
        classwise = 0.0
        for c in range(7):
            pc, yc = pe[:, c], (y.numpy() == c)
            index = np.clip(np.ceil(pc * 15).astype(int) - 1, 0, 14)
            classwise += sum(abs(yc[index == b].sum() - pc[index == b].sum()) for b in range(15)) / 500
        assert float(ours["classwise_ece"][e]) == pytest.approx(classwise / 7, abs=1e-12)
    diagram = reliability(p[0], y, bins=10)
    assert float(diagram["count"].sum()) == 500 and diagram["edges"].shape == (11,)
    full = ~torch.isnan(diagram["accuracy"])
    ece10 = (diagram["count"][full] * (diagram["accuracy"][full] - diagram["confidence"][full]).abs()).sum() / 500
    assert float(ece10) == pytest.approx(float(calibration_metrics(p[0], y, bins=10)["ece"]), abs=1e-12)


def test_risk_coverage_against_an_explicit_loop():
    rng = np.random.default_rng(3)
    conf = np.round(rng.uniform(size=(2, 60)), 1)  # ties: broken by sample order
    correct = rng.uniform(size=(2, 60)) < conf
    ours = risk_coverage(torch.tensor(conf), torch.tensor(correct), coverages=(0.5, 1.0))
    for e in range(2):
        order = np.argsort(-conf[e], kind="stable")
        risks = [1 - correct[e][order[:k]].mean() for k in range(1, 61)]
        assert np.allclose(ours["risk"][e], risks, atol=1e-12)
        assert float(ours["aurc"][e]) == pytest.approx(np.mean(risks), abs=1e-12)
        assert float(ours["accuracy_at"][0.5][e]) == pytest.approx(correct[e][order[:30]].mean())
        assert float(ours["accuracy_at"][1.0][e]) == pytest.approx(correct[e].mean())


@pytest.mark.parametrize("mode", ["before", "after"])
def test_temperature_scaler_is_the_calibrated_nll_optimum_and_round_trips(mode, tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 400)
    z = rng.normal(size=(3, 400, 5)) * 2
    z[:, np.arange(400), y] += 2.5
    z *= 3.0  # overconfident
    scaler = TemperatureScaler(mode).fit(z, y)
    ref = calibrated_nll(z, y, temperature=mode, cv="none", dtype=torch.float64)
    assert scaler.temperature == pytest.approx(ref["temperature"], rel=1e-9)  # the same optimiser
    assert scaler.nll(z, y) == pytest.approx(ref["cnll"], abs=1e-9)
    for tau in (scaler.temperature * 0.9, scaler.temperature * 1.1):
        assert TemperatureScaler.from_dict({**scaler.to_dict(), "temperature": tau}).nll(z, y) > scaler.nll(z, y)
    probs = scaler.predict_proba(z)
    if mode == "before":
        manual = torch.softmax(torch.tensor(z) / scaler.temperature, -1).mean(0)
    else:
        log_mean = torch.logsumexp(torch.log_softmax(torch.tensor(z), -1), 0) - math.log(3)
        manual = torch.softmax(log_mean / scaler.temperature, -1)
    assert torch.allclose(probs, manual, atol=1e-12)
    loaded = TemperatureScaler.load(scaler.save(tmp_path / "temperature.json"))
    assert torch.equal(loaded.predict_proba(z), probs)
    vector = TemperatureScaler(mode, per_class=True).fit(z, y)
    assert vector.temperature.shape == (5,) and vector.nll(z, y) <= scaler.nll(z, y) + 1e-12
    assert torch.equal(TemperatureScaler.load(vector.save(tmp_path / "v.json")).predict_proba(z),
                       vector.predict_proba(z))
    with pytest.raises(DeepensError, match="not fitted"):
        TemperatureScaler().predict_proba(z)
    with pytest.raises(DeepensError, match="positive finite"):
        TemperatureScaler.from_dict({"mode": "before", "temperature": -1.0})


def test_ensemble_metrics_for_many_ensembles_equal_one_at_a_time():
    rng = np.random.default_rng(5)
    z = torch.tensor(rng.normal(size=(5, 4, 120, 6)) * 2)
    o = torch.tensor(rng.normal(size=(5, 4, 30, 6)))
    y = torch.tensor(rng.integers(0, 6, 120))
    many = ensemble_metrics(z, y, ood_logits=o, max_bytes=1)  # chunks of one ensemble
    for e in range(5):
        one = ensemble_metrics(z[e], y, ood_logits=o[e])
        for key, value in one.items():
            if key == "member":
                for k, v in value.items():
                    assert float(many["member"][k][e]) == pytest.approx(v, abs=1e-12), k
            else:
                assert float(many[key][e]) == pytest.approx(value, abs=1e-12), key
    first = ensemble_metrics(z[0], y, ood_logits=o[0])
    singles = [ensemble_metrics(z[0, m:m + 1], y, ood_logits=o[0, m:m + 1]) for m in range(4)]
    assert first["member"]["accuracy"] == pytest.approx(np.mean([s["accuracy"] for s in singles]))
    assert first["member"]["ood_energy_auroc"] == pytest.approx(np.mean([s["ood_energy_auroc"] for s in singles]))
    scores = ood_scores(z[0])
    assert first["ood_max_probability_auroc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(120), np.zeros(30)],
                      np.r_[scores["max_probability"].numpy(), ood_scores(o[0])["max_probability"].numpy()]))


def test_ood_inputs_are_shaped_and_standardised_like_the_data(tmp_path):
    from test_data import _write_cifar10

    from deepens.data import load_dataset, ood_inputs

    for flatten in (False, True):
        data = load_dataset("digits", seed=0, flatten=flatten)
        shape = data.input_shape
        mean = torch.tensor(data.info["channel_mean" if not flatten else "feature_mean"], dtype=torch.float64)
        std = torch.tensor(data.info["channel_std" if not flatten else "feature_std"], dtype=torch.float64)
        view = (1, -1, 1, 1) if not flatten else (1, -1)
        raw_train = data.train.x.double() * std.view(view) + mean.view(view)
        noise = ood_inputs("noise", data, count=50, seed=1).double() * std.view(view) + mean.view(view)
        assert noise.shape == (50, *shape)
        lo, hi = (raw_train.amin(0), raw_train.amax(0)) if flatten else (raw_train.min(), raw_train.max())
        assert bool((noise >= lo - 1e-4).all() and (noise <= hi + 1e-4).all())  # the raw range of the training data
        shuffled = ood_inputs("shuffled", data, count=20, seed=2).reshape(20, -1)
        tests = data.test.x.reshape(len(data.test), -1)
        for row in shuffled:  # each is a permutation of one test input's values
            assert any(torch.equal(row.sort().values, t.sort().values) for t in tests)
        photos = ood_inputs("photos", data, count=7, seed=3)
        assert photos.shape == (7, *shape) and bool(torch.isfinite(photos).all())
        assert torch.equal(photos, ood_inputs("photos", data, count=7, seed=3))  # reproducible from the seed
    _write_cifar10(tmp_path, n=6)

    with pytest.raises(DeepensError, match="ood: expected one of noise, shuffled, photos"):
        ood_inputs("nosie", load_dataset("digits", seed=0))
    with pytest.raises(DeepensError, match="photos need an image dataset"):
        ood_inputs("photos", load_dataset("mnist1d", seed=0, num_samples=300))
    with pytest.raises(DeepensError, match="needs a model that reads images"):
        ood_inputs("cifar10", load_dataset("digits", seed=0, flatten=True), data_dir=str(tmp_path))
    grey = ood_inputs("cifar10", load_dataset("digits", seed=0), data_dir=str(tmp_path))  # CIFAR-10 as digits see it
    assert grey.shape == (6, 1, 8, 8)


def test_cli_evaluate_reports_uncertainty_ood_and_a_saved_temperature(tmp_path, cli):
    import json

    from deepens.data import Split, ood_inputs
    from deepens.training.trainer import load_run, predict_logits

    run = tmp_path / "run"
    code, _, err = cli(["train", "--dataset", "digits", "--ensemble", "batch", "--members", "3", "--epochs", "3",
                        "--out", run, "--json"])
    assert code == 0, err
    before = sorted(p.name for p in run.iterdir())
    code, out, err = cli(["evaluate", run, "--ood", "noise", "--ood", "photos", "--calibrate", "val", "--report",
                          tmp_path / "report", "--json"])
    assert code == 0, err
    result = json.loads(out)["uncertainty"]
    assert sorted(p.name for p in run.iterdir()) == sorted(before + ["temperature.json"])  # only the temperature
    _, data, model = load_run(run)
    z = predict_logits(model, data.test).double()
    x = ood_inputs("noise", data, seed=0)
    o = predict_logits(model, Split(x, torch.zeros(len(x), dtype=torch.long))).double()
    s_in, s_out = ood_scores(z)["neg_mutual_information"], ood_scores(o)["neg_mutual_information"]
    ref = roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in.numpy(), s_out.numpy()])
    assert result["ood"]["noise"]["neg_mutual_information_auroc"] == pytest.approx(ref, abs=1e-12)
    assert result["test"]["accuracy"] == pytest.approx(float((z.softmax(-1).mean(0).argmax(-1) == data.test.y)
                                                             .double().mean()))
    saved = TemperatureScaler.load(run / "temperature.json")
    val = predict_logits(model, data.val).double()
    assert saved.temperature == pytest.approx(TemperatureScaler().fit(val, data.val.y).temperature, rel=1e-12)
    assert result["calibration"]["temperature"] == saved.temperature
    assert result["calibration"]["nll_after"] == pytest.approx(saved.nll(z, data.test.y), abs=1e-12)
    for name in ("report.html", "reliability.png", "risk_coverage.png", "ood_scores.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000 or name == "report.html"
    code, out, err = cli(["evaluate", run, "--ood", "nosie"])
    assert code == 2 and "ood: expected one of" in err


def test_the_ece_alone_is_calibration_metrics_ece_and_trainings_ece():
    from deepens.metrics.calibration import expected_calibration_error
    from deepens.training.metrics import expected_calibration_error as training_ece

    rng = np.random.default_rng(6)
    p = torch.softmax(torch.tensor(rng.normal(size=(3, 200, 4)) * 2), -1)
    y = torch.tensor(rng.integers(0, 4, 200))
    assert torch.equal(expected_calibration_error(p, y), calibration_metrics(p, y)["ece"])
    assert training_ece(p[1], y) == float(calibration_metrics(p[1], y)["ece"])


def test_a_subset_of_calibration_metrics_and_float32_inputs_give_the_same_numbers():
    """Only the named metrics are computed, equal to the full call's; float32 probabilities and scores are ranked and
    binned in their own precision and summed in float64: the same numbers as their float64 copies."""
    from deepens.errors import DeepensError
    from deepens.metrics import calibration_metrics, ood_detection

    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(3, 400, 5, generator=g) * 2, -1)
    y = torch.randint(0, 5, (400,), generator=g)
    full = calibration_metrics(p.double(), y)
    some = calibration_metrics(p.double(), y, metrics=("mce", "ece"))
    assert list(some) == ["ece", "mce"] and all(torch.equal(some[k], full[k]) for k in some)
    single = calibration_metrics(p, y)
    for key in ("ece", "mce", "adaptive_ece"):
        assert single[key].dtype == torch.float64 and torch.equal(single[key], full[key]), key
    assert torch.allclose(single["brier"], full["brier"], rtol=0, atol=1e-12)
    with pytest.raises(DeepensError, match="metrics: expected some of accuracy, ece"):
        calibration_metrics(p, y, metrics=("ece", "nll"))
    tied = torch.tensor([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4]])  # a tie goes to the first class, as argmax does
    assert float(calibration_metrics(tied, torch.tensor([1, 2]), metrics="accuracy")["accuracy"]) == 0.5
    with pytest.raises(DeepensError, match="probs: non-finite"):
        calibration_metrics(torch.tensor([[0.5, float("nan")]]), torch.tensor([0]))
    s_in, s_out = torch.rand(3, 300, generator=g).round(decimals=2), torch.rand(3, 80, generator=g).round(decimals=2)
    a, b = ood_detection(s_in, s_out), ood_detection(s_in.double(), s_out.double())
    assert all(torch.equal(a[k], b[k]) for k in a)
