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
