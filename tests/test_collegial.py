"""Collegial modules: block-diagonal layers, CollegialMLP, the ResNeXt bottleneck and ResNeXt-29
against explicit networks (float64), their NTKs, and training them with the trainer."""

import math

import pytest
import torch
from torch.nn import functional as F

import deepens as d
from deepens.ensembles.collegial import CollegialMLP, ResNeXt29, ResNeXtBottleneck
from deepens.kernels import ensemble_ntk
from deepens.layers import BlockDiagonalLinear
from deepens.training import TrainConfig, Trainer


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach())


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_block_diagonal_equals_dense_block_matrix(parameterization):
    layer = BlockDiagonalLinear(4, 5, 3, bias=True, parameterization=parameterization, weight_std=1.3,
                                bias_std=0.2).double()
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    y = layer(x)  # (m, B, out)
    concat = x.transpose(0, 1).reshape(7, 20)
    bias = (layer.bias * layer.bias_scale).reshape(-1)
    dense = concat @ layer.dense_weight().T + bias
    assert torch.allclose(y.transpose(0, 1).reshape(7, 12), dense, atol=1e-13, rtol=0)
    explicit = torch.stack([x[j] @ (layer.weight[j] * layer.weight_scale) + layer.bias[j] * layer.bias_scale
                            for j in range(4)])
    assert torch.allclose(y, explicit, atol=1e-13, rtol=0)


def test_block_diagonal_shared_input_is_one_gemm_of_stacked_weights():
    layer = BlockDiagonalLinear(3, 6, 4, shared_input=True, parameterization="ntk").double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = layer(x)
    stacked = (x @ layer.dense_weight().T).reshape(5, 3, 4).transpose(0, 1)
    assert torch.allclose(y, stacked, atol=1e-13, rtol=0)
    with pytest.raises(d.DeepensError, match="x: expected a shared input"):
        layer(torch.randn(3, 5, 6))


def test_block_diagonal_initial_scale():
    """Standard: W ~ N(0, σ²/in); NTK: W ~ N(0, 1) with multiplier σ/√in — the same output variance."""
    g = torch.Generator().manual_seed(0)
    for par in ("standard", "ntk"):
        layer = BlockDiagonalLinear(200, 50, 40, parameterization=par, weight_std=2.0)
        layer.reset_parameters(g)
        w = layer.weight.detach() * layer.weight_scale
        assert abs(float(w.var()) - 4.0 / 50) < 0.02 * 4.0 / 50  # 400k draws: relative se 0.2%


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_collegial_mlp_equals_scaled_sum_of_separate_networks(parameterization):
    m = 5
    nets = [d.MLP(7, [6, 5], 3, bias=True, bias_std=0.3, parameterization=parameterization).double()
            for _ in range(m)]
    col = CollegialMLP.from_subnetworks(nets)
    x = torch.randn(11, 7, dtype=torch.float64)
    explicit = sum(net(x) for net in nets) / math.sqrt(m)
    assert maxdiff(col(x), explicit) < 1e-12
    sub = col.subnetwork_outputs(x)
    assert torch.allclose(sub, torch.stack([net(x) for net in nets]), atol=1e-13, rtol=0)
    # and back: each member as a separate network
    for j in (0, m - 1):
        assert torch.allclose(col.subnetwork(j)(x), nets[j](x), atol=1e-13, rtol=0)


def test_collegial_mlp_initialisation_is_seeded_and_each_member_is_an_mlp_draw():
    a = CollegialMLP(10, [8, 8], 2, 64, seed=3)
    b = CollegialMLP(10, [8, 8], 2, 64, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    # standard parameterization: hidden weights ~ N(0, 2/fan_in), readout N(0, 1/fan_in)
    assert abs(float(a.hidden[1].weight.detach().var()) * 8 / 2 - 1) < 0.1
    assert abs(float(a.readout.weight.detach().var()) * 8 - 1) < 0.25
    with pytest.raises(d.DeepensError, match="x: expected inputs"):
        a(torch.randn(3, 9))


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_equals_scaled_sum_of_separate_paths(parameterization, stride):
    c = 4
    paths = [ResNeXtBottleneck(6, 1, 3, 8, stride, norm=None, parameterization=parameterization).double()
             for _ in range(c)]
    block = ResNeXtBottleneck.from_members(paths)
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    explicit = sum(p.branch(x) for p in paths) / math.sqrt(c)
    assert maxdiff(block.branch(x), explicit) < 1e-12
    assert maxdiff(block(x), F.relu(paths[0].shortcut(x) + explicit)) < 1e-12
    again = sum(block.member(j).branch(x) for j in range(c)) / math.sqrt(c)
    assert maxdiff(block.branch(x), again) < 1e-12


def test_bottleneck_identity_shortcut_and_refusals():
    block = ResNeXtBottleneck(8, 2, 4, norm=None).double()
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    assert torch.allclose(block(x), F.relu(x + block.branch(x)), atol=1e-14)
    with pytest.raises(d.DeepensError, match="norm"):
        ResNeXtBottleneck(8, 2, 4).member(0)
    with pytest.raises(d.DeepensError, match="kernel_size"):
        ResNeXtBottleneck(8, 2, 4, kernel_size=2)


@pytest.mark.parametrize(("c", "w", "millions"), [(1, 128, 13.8), (3, 64, 13.3), (8, 64, 34.4), (37, 10, 13.7),
                                                  (10, 10, 4.22), (44, 8, 12.7)])
def test_resnext29_parameter_counts_match_the_papers(c, w, millions):
    """CE Table 1 / Table 5 (and Xie et al.) report these sizes."""
    with torch.device("meta"):
        net = ResNeXt29(c, w)
    count = sum(p.numel() for p in net.parameters())
    assert round(count / 1e6, 1 if millions >= 10 else 2) == millions


def test_resnext29_fits_a_small_batch():
    net = ResNeXt29(2, 4, num_classes=3)
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 3
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert net(x).shape == (16, 3)
    assert losses[-1] < 0.05 * losses[0]  # memorises 16 random images


def test_ntk_of_collegial_mlp_is_mean_of_member_ntks():
    """CE Eq. 4: K^e = (1/m) Σ_j K_n(θ_j) exactly under NTK parameterization."""
    col = CollegialMLP(5, [7, 6], 2, 4, parameterization="ntk", seed=0).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    k = ensemble_ntk(col, x, mode="full", method="jacobian").total()[0, 0]
    members = torch.stack([ensemble_ntk(col.subnetwork(j), x, mode="full").total()[0, 0] for j in range(4)])
    assert maxdiff(k, members.mean(0)) < 1e-12


def test_ntk_of_bottleneck_is_mean_of_path_ntks():
    block = ResNeXtBottleneck(4, 3, 2, norm=None, parameterization="ntk", post_activation=False).double()
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64)

    def head(b):
        return torch.nn.Sequential(b, torch.nn.Flatten(), torch.nn.Linear(36, 1).double().requires_grad_(False))

    torch.manual_seed(0)
    readout = head(block)
    k = ensemble_ntk(readout, x).total()[0, 0]
    members = []
    for j in range(3):
        h = head(block.member(j))
        h[2].load_state_dict(readout[2].state_dict())
        members.append(ensemble_ntk(h, x).total()[0, 0])
    # the residual path has no parameters; the branch is C^{-1/2} Σ_j F_j, so K = (1/C) Σ_j K_j
    assert maxdiff(k, torch.stack(members).mean(0)) < 1e-12


def test_collegial_ensemble_trains_with_the_trainer(tmp_path):
    cfg = TrainConfig(dataset="digits", ensemble="collegial", multiplicity=6, widths=[16, 16], members=2,
                      epochs=4, batch_size=64, lr=0.05, seed=0)
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result.metrics["test"]["accuracy"] > 0.8
    assert result.metrics["test"]["member_accuracy"] > 0.75
    evaluated = d.training.evaluate_run(tmp_path / "run")
    assert abs(evaluated["test"]["accuracy"] - result.metrics["test"]["accuracy"]) < 1e-12
    with pytest.raises(d.DeepensError, match="multiplicity"):
        TrainConfig(ensemble="deep", multiplicity=3).validate()
    with pytest.raises(d.DeepensError, match="model"):
        TrainConfig(ensemble="collegial", model="convnet").validate()
