"""Bad input → DeepensError (a ValueError) naming the argument and the expected value."""

import pytest
import torch
from torch import nn

import deepens as d
from deepens.layers.distributions import parse_distribution

mlp = d.MLP(5, [7], 3)
conv = d.ConvNet(3, 4, width=0.125)
deep = d.DeepEnsemble(mlp, 4, seed=0)
batch = d.BatchEnsemble(mlp, 4, seed=0)
conv_ens = d.BatchEnsemble(conv, 4, seed=0)
lld = d.LastLayerDropout(mlp, 4, seed=0)
vec = d.vectorize(mlp, 4, seed=0)

CASES = [
    # (description, callable, words the message must contain)
    ("members < 1", lambda: d.DeepEnsemble(mlp, 0), ["members", ">= 1"]),
    ("members not int", lambda: d.BatchEnsemble(mlp, 2.5), ["members", "integer"]),
    ("members negative (MC dropout)", lambda: d.MCDropout(mlp, -1), ["members"]),
    ("members < 1 (LLD)", lambda: d.LastLayerDropout(mlp, 0), ["members"]),
    ("members < 1 (vectorize)", lambda: d.vectorize(mlp, 0), ["members"]),
    ("p > 1", lambda: d.ShiftedNormal(1.5), ["ShiftedNormal.p", "[0, 1]"]),
    ("p < 0", lambda: d.ShiftedNormal(-0.1), ["ShiftedNormal.p", "[0, 1]"]),
    ("keep = 0", lambda: d.Bernoulli(0.0), ["Bernoulli.keep", "(0, 1]"]),
    ("negative std", lambda: d.Normal(0.0, -1.0), ["Normal.std"]),
    ("ternary sum", lambda: d.Ternary(0.5, 0.5, 0.5), ["Ternary", "= 1"]),
    ("unknown distribution", lambda: parse_distribution("cauchy:1"), ["cauchy", "expected one of"]),
    ("distribution arity", lambda: parse_distribution("normal:1"), ["normal", "2 number"]),
    ("wrong rank (MLP)", lambda: deep(torch.randn(5)), ["x", "(B, 5)", "(M=4, B, 5)", "(5,)"]),
    ("wrong rank 4D (MLP)", lambda: batch(torch.randn(2, 3, 4, 5)), ["x", "(B, 5)"]),
    ("wrong feature size", lambda: deep(torch.randn(2, 6)), ["x", "axis 1", "expected 5"]),
    ("wrong feature size (LLD)", lambda: lld(torch.randn(2, 6)), ["x", "expected 5"]),
    ("wrong channels (conv)", lambda: conv_ens(torch.randn(2, 2, 8, 8)), ["x", "(B, 3, H, W)", "expected 3"]),
    ("wrong rank (conv)", lambda: conv_ens(torch.randn(2, 8, 8)), ["x", "(B, 3, H, W)"]),
    ("per-member first axis not M", lambda: batch(torch.randn(3, 2, 5)), ["x", "4 members", "first axis"]),
    ("per-member first axis not M (vectorize)", lambda: vec(torch.randn(3, 2, 5)), ["x", "4 members"]),
    ("forced per-member", lambda: deep(torch.randn(2, 5), per_member=True), ["x"]),
    ("integer input", lambda: deep(torch.ones(2, 5, dtype=torch.long)), ["x", "floating"]),
    ("not a tensor", lambda: deep([[1.0] * 5]), ["x", "torch.Tensor"]),
    ("empty batch", lambda: deep(torch.randn(0, 5)), ["x", "empty"]),
    ("no supported layer", lambda: d.DeepEnsemble(nn.Sequential(nn.ReLU()), 2), ["net", "nn.Linear"]),
    ("no supported layer (batch)", lambda: d.BatchEnsemble(nn.Sequential(nn.Tanh()), 2), ["net", "nn.Linear"]),
    ("not a module", lambda: d.BatchEnsemble("mlp", 2), ["net", "nn.Module"]),
    (
        "unsupported parameter layer",
        lambda: d.DeepEnsemble(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), 2),
        ["net", "LayerNorm", "vectorize"],
    ),
    (
        "conv readout for LLD",
        lambda: d.LastLayerDropout(nn.Sequential(nn.Conv2d(1, 2, 3)), 2),
        ["net", "dense readout"],
    ),
    ("no hidden layer to modulate", lambda: d.BatchEnsemble(nn.Linear(3, 2), 2), ["net", "hidden layer"]),
    ("layer index out of range", lambda: d.BatchEnsemble(mlp, 2, u={3: d.Sign()}), ["u", "out of range"]),
    ("per-layer list length", lambda: d.BatchEnsemble(mlp, 2, v=[d.Sign(), d.Sign()]), ["v", "one entry per hidden"]),
    ("trainable resample", lambda: d.BatchEnsemble(mlp, 2, resample=True), ["resample", "trainable"]),
    ("first k = 0", lambda: deep.first(0), ["k", ">= 1"]),
    ("first k > M", lambda: batch.first(5), ["k", "at most 4"]),
    ("member index", lambda: deep.member(4), ["index", "0..3"]),
    ("MLP in_features", lambda: d.MLP(0, [3], 2), ["in_features", ">= 1"]),
    ("MLP widths", lambda: d.MLP(3, 5, 2), ["widths", "sequence"]),
    ("MLP widths as a string", lambda: d.MLP(3, "16", 2), ["widths", "sequence"]),
    ("MLP width < 1", lambda: d.MLP(3, [4, 0], 2), ["widths[1]", ">= 1"]),
    ("collegial widths empty", lambda: d.CollegialMLP(3, [], 2, 4), ["widths", "non-empty"]),
    ("collegial multiplicity", lambda: d.CollegialMLP(3, [4], 2, 0), ["multiplicity", ">= 1"]),
    ("MLP activation", lambda: d.MLP(3, [5], 2, activation="swish"), ["activation", "relu"]),
    ("MLP parameterization", lambda: d.MLP(3, [5], 2, parameterization="mup"), ["parameterization", "ntk"]),
    ("ConvNet width", lambda: d.ConvNet(3, 10, width=0), ["width"]),
    ("ConvNet classes", lambda: d.ConvNet(3, 0), ["num_classes"]),
    ("mismatched modules", lambda: d.DeepEnsemble.from_modules([d.MLP(3, [4], 2), d.MLP(3, [5], 2)]), ["modules[1]"]),
    ("factory returns junk", lambda: d.DeepEnsemble(lambda: 3, 2), ["net", "factory"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(case):
    _, fn, words = case
    with pytest.raises(d.DeepensError) as info:
        fn()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message


def _nan_cases():
    """Every public analysis function with one NaN in its input: (name, call, words)."""
    import numpy as np

    from deepens import scaling
    from deepens.kernels import Network, infinite_width_kernels, kernel_predict, regime
    from deepens.symmetry.theory import InfiniteWidthEnsemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    x[2, 1] = np.nan
    z = rng.normal(size=(6, 40, 3))
    z[1, 3, 0] = np.nan
    y = np.arange(40) % 3
    k = np.eye(5)
    k[3, 3] = np.inf
    curves = {100.0: [{"n": 1, "cnll_mean": 1.0, "reliable": True}, {"n": 2, "cnll_mean": np.nan, "reliable": True}]}
    net = Network.mlp(2)
    return [
        ("calibrated_nll", lambda: scaling.calibrated_nll(z, y), ["logits", "non-finite", "member 1, sample 3"]),
        ("nll_at_temperature", lambda: scaling.nll_at_temperature(z, y, 1.0), ["logits", "sample 3"]),
        ("lower_envelope_nll", lambda: scaling.lower_envelope_nll(z[None], y), ["logits", "member 1, sample 3"]),
        ("pool_curve", lambda: scaling.pool_curve(z, y, sizes=[1]), ["logits", "network 1 of the pool, sample 3"]),
        ("fit_power_law", lambda: scaling.fit_power_law([1, 2, 3, 4], [1.0, np.nan, 0.8, 0.7]), ["finite"]),
        ("deep_ensemble_equivalent", lambda: scaling.deep_ensemble_equivalent(0.5, [1.0, np.nan]), ["size 2"]),
        ("memory_split_table", lambda: scaling.memory_split_table(curves, 200.0), ["cnll_mean of n = 2", "finite"]),
        ("budget_envelope", lambda: scaling.budget_envelope(curves), ["cnll_mean of n = 2"]),
        ("infinite_width_kernels", lambda: infinite_width_kernels(x, x, net), ["x1", "non-finite", "row 2"]),
        ("regime", lambda: regime(net, x), ["non-finite", "row 2"]),
        ("kernel_predict", lambda: kernel_predict(k, k, np.ones(5)), ["ntk_train", "non-finite", "row 3"]),
        ("InfiniteWidthEnsemble", lambda: InfiniteWidthEnsemble(x, np.ones((5, 2)), net), ["non-finite", "row 2"]),
    ]


@pytest.mark.parametrize("name", [c[0] for c in _nan_cases()])
def test_non_finite_inputs_are_refused_by_every_analysis_function(name):
    call, words = next((c[1], c[2]) for c in _nan_cases() if c[0] == name)
    with pytest.raises(d.DeepensError) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_cli_analysis_commands_refuse_non_finite_files(cli, tmp_path):
    import numpy as np

    z = np.random.default_rng(0).normal(size=(2, 30, 3))
    z[1, 7, 2] = np.nan
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    code, out, err = cli(["calibrate", tmp_path / "z.npy", "--labels", tmp_path / "y.npy", "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "z.npy" in err and "member 1, sample 7" in err and "Traceback" not in err
    x = np.random.default_rng(1).normal(size=(4, 3))
    x[3, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(["ntk", "kernel", "--inputs", tmp_path / "x.npy", "--json"])
    assert code == 2 and out == "" and "non-finite" in err and "row 3" in err and len(err.strip().splitlines()) == 1
