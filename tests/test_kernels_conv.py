"""Infinite-width kernels of convolutional networks read from the trained module: closed-form special cases,
symmetries, Monte Carlo of wide CNNs (with and without modulations), blocking, refusals."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import deepens as d
from deepens.errors import DeepensError
from deepens.kernels import (
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Network,
    ensemble_ntk,
    infinite_width_kernels,
    kernel_memory,
    monte_carlo_kernels,
)
from deepens.layers import Conv1d, Conv2d, Linear

RNG = np.random.default_rng(3)


def cnn(channels, *, padding=1, padding_mode="zeros", pool="gap", act=nn.ReLU, bias=True, kernel=3, stride=1,
        in_channels=2, outputs=1, dims=2):
    conv = Conv2d if dims == 2 else Conv1d
    pooling = {"gap": [nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1), nn.Flatten()],
               "flatten": [nn.Flatten()],
               "avg": [nn.AvgPool2d(2), nn.Flatten()]}[pool]
    feature = {"gap": 1, "flatten": None, "avg": None}[pool]
    layers = [conv(in_channels, channels, kernel, stride=stride, padding=padding, bias=bias, parameterization="ntk",
                   weight_std=1.4, bias_std=0.2, padding_mode=padding_mode), act(),
              conv(channels, channels, kernel, padding=padding, parameterization="ntk", weight_std=1.3,
                   padding_mode=padding_mode), act(), *pooling]
    return nn.Sequential(*layers), feature


def test_one_by_one_convolutions_equal_the_mlp_kernel_of_the_channel_vectors():
    """1×1 convolutions + flatten: the kernel is the mean over positions of the MLP kernel of the channel
    vectors at each position (the same both in the same-position and in the full representation)."""
    x = RNG.normal(size=(4, 3, 3, 2))
    ops = [Conv(1.3, 0.2, kernel_size=(1, 1)), Activation("erf"), Conv(1.1, 0.1, kernel_size=(1, 1)),
           Activation("relu"), Flatten(), Dense(0.9, 0.3)]
    diag = infinite_width_kernels(x, network=Network(ops))
    full = infinite_width_kernels(x, network=Network(ops), diagonal_spatial=False)
    mlp = Network([Dense(1.3, 0.2), Activation("erf"), Dense(1.1, 0.1), Activation("relu"), Dense(0.9, 0.3)])
    nngp, ntk = np.zeros((4, 4)), np.zeros((4, 4))
    for h in range(3):
        for w in range(2):
            k = infinite_width_kernels(x[:, :, h, w], network=mlp)
            nngp += k.nngp_same / 6
            ntk += k.ntk_same / 6
    # the readout adds σ_b² once; the per-position MLP kernels each carry it, so their mean does too
    for k in (diag, full):
        assert np.allclose(k.nngp_same, nngp, rtol=1e-13, atol=1e-15)
        assert np.allclose(k.ntk_same, ntk, rtol=1e-13, atol=1e-15)


def test_a_single_position_image_is_a_vector():
    x = RNG.normal(size=(5, 4))
    conv = Network([Conv(1.5, 0.1, kernel_size=(1,)), Activation("relu"), Flatten(), Dense(1.0, 0.0)])
    mlp = Network([Dense(1.5, 0.1), Activation("relu"), Dense(1.0, 0.0)])
    a, b = infinite_width_kernels(x[:, :, None], network=conv), infinite_width_kernels(x, network=mlp)
    assert np.allclose(a.nngp_same, b.nngp_same, rtol=1e-14) and np.allclose(a.ntk_same, b.ntk_same, rtol=1e-14)


def test_circular_padding_with_global_pooling_is_translation_invariant():
    net, _ = cnn(8, padding_mode="circular")
    x = RNG.normal(size=(3, 2, 5, 6))
    k = infinite_width_kernels(x, network=net)
    for shift in ((1, 0), (2, 3), (4, 5)):
        moved = np.roll(x, shift, axis=(2, 3))
        both = infinite_width_kernels(moved, network=net)
        one = infinite_width_kernels(moved, x, network=net)
        for a in (both, one):
            assert np.allclose(a.nngp_same, k.nngp_same, rtol=1e-12) and np.allclose(a.ntk_same, k.ntk_same, rtol=1e-12)
    # zero padding is not: the borders break the symmetry
    zero, _ = cnn(8)
    moved = np.roll(x, (1, 2), axis=(2, 3))
    assert not np.allclose(infinite_width_kernels(moved, x, network=zero).nngp_same,
                           infinite_width_kernels(x, network=zero).nngp_same, rtol=1e-3)


@pytest.mark.parametrize("pool", ["gap", "flatten", "avg"])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_odd_kernels_on_square_images_are_invariant_under_joint_90_degree_rotations(pool, padding_mode):
    net, _ = cnn(8, pool=pool, padding_mode=padding_mode)
    x1, x2 = RNG.normal(size=(3, 2, 4, 4)), RNG.normal(size=(2, 2, 4, 4))
    k = infinite_width_kernels(x1, x2, network=net)
    for turns in (1, 2, 3):
        r = infinite_width_kernels(np.rot90(x1, turns, (2, 3)), np.rot90(x2, turns, (2, 3)), network=net)
        assert np.allclose(r.nngp_same, k.nngp_same, rtol=1e-12) and np.allclose(r.ntk_same, k.ntk_same, rtol=1e-12)
    # rotating one input only changes the kernel (the network is not invariant)
    one = infinite_width_kernels(np.rot90(x1, 1, (2, 3)), x2, network=net)
    assert not np.allclose(one.nngp_same, k.nngp_same, rtol=1e-3)


def test_blocks_float32_and_symmetric_halves_agree_with_one_block():
    net, _ = cnn(8, pool="avg")
    x = RNG.normal(size=(7, 2, 6, 6))
    ref = infinite_width_kernels(x, network=net)
    small = infinite_width_kernels(x, network=net, memory=kernel_memory(Network.from_module(net), (2, 6, 6), 2))
    assert np.allclose(small.nngp_same, ref.nngp_same, rtol=1e-13) and np.allclose(small.ntk_same, ref.ntk_same,
                                                                                     rtol=1e-13)
    assert np.allclose(ref.nngp_same, ref.nngp_same.T, rtol=1e-14)
    single = infinite_width_kernels(x, network=net, dtype=torch.float32)
    assert single.nngp_same.dtype == np.float32
    assert np.allclose(single.ntk_same, ref.ntk_same, rtol=1e-5)
    rows = infinite_width_kernels(x[:3], x, network=net)
    assert np.allclose(rows.ntk_same, ref.ntk_same[:3], rtol=1e-13)
    with pytest.raises(DeepensError, match="memory"):
        infinite_width_kernels(x, network=net, memory=1000)


def test_same_position_representation_equals_the_full_one():
    net, _ = cnn(8, pool="flatten", stride=2, padding=2)
    x = RNG.normal(size=(4, 2, 7, 5))
    diag = infinite_width_kernels(x, network=net)
    full = infinite_width_kernels(x, network=net, diagonal_spatial=False)
    assert np.allclose(diag.nngp_same, full.nngp_same, rtol=1e-13) and np.allclose(diag.ntk_same, full.ntk_same,
                                                                                     rtol=1e-13)
    with pytest.raises(DeepensError, match="pooling"):
        infinite_width_kernels(x, network=cnn(8)[0], diagonal_spatial=True)


def test_from_module_reads_parameterizations_inits_and_refuses_what_has_no_closed_form():
    net = d.ConvNet(1, 10, width=0.25)
    with pytest.raises(DeepensError, match="max pooling.*monte_carlo"):
        Network.from_module(net)
    with pytest.raises(DeepensError, match="batch normalisation"):
        Network.from_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(4, 1)))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + x)

    with pytest.raises(DeepensError, match="residual"):
        Network.from_module(Residual())
    # plain torch layers: PyTorch's default uniform initialisation (variance 1/(3·fan_in))
    plain = Network.from_module(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1)))
    first = plain.ops[0]
    assert first.parameterization == "standard" and first.weight_std == pytest.approx(math.sqrt(1 / 3))
    assert first.bias_std == pytest.approx(math.sqrt(1 / 15)) and first.fan_in == 5
    # deepens' Xavier init (EE App. C): σ² = σ_w² · 2 fan_in / (fan_in + fan_out)
    conv = Network.from_module(nn.Sequential(Conv2d(2, 6, 3, init="xavier", weight_std=1.0), nn.ReLU(),
                                             nn.Flatten(), Linear(6, 1)))
    assert conv.ops[0].weight_std == pytest.approx(math.sqrt(2 * 18 / (18 + 54)))
    with pytest.raises(DeepensError, match="feature map"):
        infinite_width_kernels(RNG.normal(size=(2, 2, 3, 3)), network=nn.Sequential(Conv2d(2, 4, 3), nn.ReLU()))


def test_standard_parameterization_matches_the_empirical_ntk_of_the_module():
    """Standard parameterization: the NTK depends on the real widths, which the module supplies; a wide module's
    mean empirical NTK approaches it."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    net = nn.Sequential(nn.Conv2d(2, 256, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256 * 16, 32))
    an = infinite_width_kernels(x, network=net)
    est = monte_carlo_kernels(net, x, draws=12, seed=1)
    assert np.all(np.abs(est.ntk - an.ntk_same) <= 4 * est.ntk_stderr + 0.03 * np.abs(an.ntk_same).max())
    assert np.all(np.abs(est.nngp - an.nngp_same) <= 4 * est.nngp_stderr + 0.03 * np.abs(an.nngp_same).max())


def _modulated_cnn(width, u, v, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(Conv2d(2, width, 3, padding=1, parameterization="ntk", weight_std=1.4),
                        nn.ReLU(), Conv2d(width, width, 3, padding=1, parameterization="ntk", weight_std=1.3),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), Linear(width, 1, parameterization="ntk"))
    if u is None and v is None:
        return net
    return d.BatchEnsemble(net, 3, u=u, v=v, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("u,v", [(None, None), (d.ShiftedNormal(0.6), d.ShiftedNormal(0.6)), (d.Normal(0, 1), None)],
                         ids=["plain", "shifted-u-v", "centred-u"])
def test_wide_cnns_approach_the_analytic_kernels(u, v):
    """Monte Carlo of 512-channel CNNs (per-channel modulations for the BatchEnsembles): the mean over draws is
    within 4 standard errors plus the O(1/width) finite-width bias (bounded by 4/width of the largest entry)."""
    width, draws = 512, 10
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    an = infinite_width_kernels(x, network=Network.from_module(_modulated_cnn(8, u, v, 0)))
    same, cross = [], []
    for s in range(draws):
        model = _modulated_cnn(width, u, v, 100 + s).double()
        k = ensemble_ntk(model, x, method="jacobian")
        if u is None and v is None:
            same.append(k.total()[0, 0].numpy())
        else:
            same.append(k.same_member().numpy())
            cross.append(k.cross_member().numpy())
    bias = 4.0 / width * np.abs(an.ntk_same).max()
    for samples, target in ((same, an.ntk_same), (cross, an.ntk_cross)):
        if not samples:
            continue
        stack = np.stack(samples)
        se = stack.std(0, ddof=1) / math.sqrt(draws)
        assert np.all(np.abs(stack.mean(0) - target) <= 4 * se + bias), (stack.mean(0), target)
    if u is not None and u.first_moment == 0:
        assert np.abs(an.ntk_cross).max() == 0.0


@pytest.mark.slow
def test_wide_cnn_nngp_with_modulations_matches_monte_carlo():
    """NNGP, same and cross member, of a BatchEnsemble CNN from 24 draws × 64 outputs of 512 channels."""
    width, draws, outputs = 512, 24, 64
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    u, v = d.ShiftedNormal(0.5), d.Normal(0, 1)

    def model(w, seed):
        torch.manual_seed(seed)
        net = nn.Sequential(Conv2d(2, w, 3, padding=1, parameterization="ntk", weight_std=1.4, bias=True,
                                   bias_std=0.3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            Linear(w, outputs, parameterization="ntk"))
        return d.BatchEnsemble(net, 3, u=u, v=v, seed=seed)

    an = infinite_width_kernels(x, network=model(8, 0))
    eye = torch.eye(3, dtype=torch.bool)
    same, cross = [], []
    for s in range(draws):
        with torch.no_grad():
            out = model(width, 200 + s).double()(x)  # (M, N, C)
        gram = torch.einsum("anc,bmc->abnm", out, out) / outputs
        same.append(gram[eye].mean(0).numpy())
        cross.append(gram[~eye].mean(0).numpy())
    for samples, target in ((same, an.nngp_same), (cross, an.nngp_cross)):
        stack = np.stack(samples)
        se = stack.std(0, ddof=1) / math.sqrt(draws)
        assert np.all(np.abs(stack.mean(0) - target) <= 4 * se + 4.0 / width * np.abs(target).max())


def test_monte_carlo_method_estimates_networks_without_a_closed_form():
    net = d.ConvNet(1, 4, width=0.125)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    est = infinite_width_kernels(x, network=net, method="monte_carlo", draws=4, seed=0)
    again = infinite_width_kernels(x, network=net, method="monte_carlo", draws=4, seed=0)
    assert np.array_equal(est.ntk, again.ntk) and est.draws == 4 and est.outputs == 4
    assert np.all(est.nngp_stderr >= 0) and np.all(np.diag(est.ntk) > 0)
    with pytest.raises(DeepensError, match="module itself"):
        infinite_width_kernels(x, network=Network.mlp(1), method="monte_carlo")


def test_conv1d_and_dense_inputs_are_checked():
    net = nn.Sequential(Conv1d(3, 4, 3, parameterization="ntk"), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                        Linear(4, 1, parameterization="ntk"))
    x = RNG.normal(size=(3, 3, 7))
    k = infinite_width_kernels(x, network=net)
    assert k.nngp_same.shape == (3, 3) and np.all(np.linalg.eigvalsh(k.ntk_same) > 0)
    with pytest.raises(DeepensError, match=r"\(N, C, L\)"):
        infinite_width_kernels(RNG.normal(size=(3, 3, 7, 7)), network=net)
    with pytest.raises(DeepensError, match="row 1"):
        bad = x.copy()
        bad[1, 0, 0] = np.nan
        infinite_width_kernels(bad, network=net)
    assert isinstance(Network.from_module(net).ops[-2], Flatten)
    assert isinstance(Network.from_module(net).ops[-3], GlobalAvgPool)


@pytest.mark.parametrize("kind", ["batch", "mc-dropout", "lld", "deep", "plain"])
def test_from_module_equals_the_hand_written_description(kind):
    """One description: the kernels read from an ensemble module equal those of the network written by hand."""
    mlp = d.MLP(5, [16, 16], 3, parameterization="ntk", weight_std=2**0.5, bias=True, bias_std=0.1)
    x = RNG.normal(size=(6, 5))
    u, v, mask = d.ShiftedNormal(0.3), d.Normal(0, 1), d.parse_distribution("bernoulli:0.8,scaled")
    module, hand = {
        "batch": (d.BatchEnsemble(mlp, 3, u=u, v=v), Network.mlp(2, "relu", 2**0.5, 0.1, 1.0, 0.1, u=u, v=v)),
        "mc-dropout": (d.MCDropout(mlp, 3, mask=mask),
                       Network.mlp(2, "relu", 2**0.5, 0.1, 1.0, 0.1, u=mask, trainable=False)),
        "lld": (d.LastLayerDropout(mlp, 3, mask=v),
                Network.mlp(2, "relu", 2**0.5, 0.1, 1.0, 0.1, u=v, layers=[-1], trainable=False)),
        "deep": (d.DeepEnsemble(mlp, 3), Network.mlp(2, "relu", 2**0.5, 0.1, 1.0, 0.1)),
        "plain": (mlp, Network.mlp(2, "relu", 2**0.5, 0.1, 1.0, 0.1)),
    }[kind]
    got, ref = infinite_width_kernels(x, network=module), infinite_width_kernels(x, network=hand)
    assert np.allclose(got.nngp_same, ref.nngp_same, rtol=1e-14) and np.allclose(got.ntk_same, ref.ntk_same,
                                                                                   rtol=1e-14)
    if kind == "deep":  # members share nothing: no cross-member kernel, every parameter individual
        assert np.all(got.nngp_cross == 0) and np.all(got.ntk_cross == 0)
        assert np.allclose(got.ntk_same_individual, ref.ntk_same, rtol=1e-14)
    else:
        assert np.allclose(got.nngp_cross, ref.nngp_cross, rtol=1e-14, atol=1e-15)
        assert np.allclose(got.ntk_cross, ref.ntk_cross, rtol=1e-14, atol=1e-15)
        assert np.allclose(got.ntk_same_individual, ref.ntk_same_individual, rtol=1e-14, atol=1e-15)


def test_reader_edge_cases_found_in_review():
    """Modulations separated from their activation by pooling or flattening are still pre-activation v; an
    activation after Flatten acts per position; what has no kernel is refused by name."""
    x = RNG.normal(size=(5, 3))
    v = d.Normal(0, 1)
    through = d.BatchEnsemble(nn.Sequential(Linear(3, 8, parameterization="ntk"), nn.Flatten(), nn.ReLU(),
                                            Linear(8, 2, parameterization="ntk")), 3, u=None, v=v)
    direct = d.BatchEnsemble(nn.Sequential(Linear(3, 8, parameterization="ntk"), nn.ReLU(),
                                           Linear(8, 2, parameterization="ntk")), 3, u=None, v=v)
    a, b = infinite_width_kernels(x, network=through), infinite_width_kernels(x, network=direct)
    for name in ("nngp_cross", "ntk_cross", "ntk_same_individual", "ntk_same"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-14, atol=1e-16), name
    # an activation after Flatten equals the activation before it (per-position kernels)
    img = RNG.normal(size=(4, 1, 3, 3))
    after = nn.Sequential(Conv2d(1, 8, 1, parameterization="ntk"), nn.Flatten(), nn.Tanh(),
                          Linear(72, 1, parameterization="ntk"))
    before = nn.Sequential(Conv2d(1, 8, 1, parameterization="ntk"), nn.Tanh(), nn.Flatten(),
                           Linear(72, 1, parameterization="ntk"))
    assert np.allclose(infinite_width_kernels(img, network=after).nngp_same,
                       infinite_width_kernels(img, network=before).nngp_same, rtol=1e-13)
    mlp = d.MLP(3, [8], 2, parameterization="ntk")
    refusals = {
        "resample": d.MCDropout(mlp, 2, resample=True),
        "inputs or outputs": d.BatchEnsemble(mlp, 2, modulate_input=True),
        "trainable parameters": nn.Sequential(Linear(3, 8), nn.PReLU(), Linear(8, 1)),
        "groups": nn.Sequential(Conv2d(4, 8, 3, groups=4), nn.ReLU(), nn.Flatten(), Linear(8, 1)),
    }
    for match, module in refusals.items():
        with pytest.raises(DeepensError, match=match):
            Network.from_module(module)
    with pytest.raises(DeepensError, match="expects 3 channels"):
        infinite_width_kernels(RNG.normal(size=(2, 2, 5, 5)), network=nn.Sequential(
            Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), Linear(36, 1)))
    # functional activations with arguments are read as the function they call
    leaky = Network.from_module(_Leaky())
    assert isinstance(leaky.ops[1], Activation) and leaky.ops[1].label == "leaky_relu"
    k = infinite_width_kernels(x, network=leaky)
    assert np.all(np.linalg.eigvalsh(k.ntk_same) > 0)


class _Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = Linear(3, 8, parameterization="ntk"), Linear(8, 1, parameterization="ntk")

    def forward(self, x):
        return self.b(nn.functional.leaky_relu(self.a(x), 0.2))


def test_quadrature_duals_stay_within_the_memory_budget():
    """A quadrature activation with a Gaussian pre-activation modulation: coefficient grids of (points × v-nodes ×
    terms) are chunked and counted in the block size, so a small budget still works (and gives the same numbers)."""
    net = Network.mlp(1, "tanh", v=d.Normal(0, 1))
    x = RNG.normal(size=(40, 4))
    ref = infinite_width_kernels(x, network=net)
    small = infinite_width_kernels(x, network=net, memory="8MiB")
    assert np.allclose(small.ntk_same, ref.ntk_same, rtol=1e-13)
