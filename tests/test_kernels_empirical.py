"""Empirical ensemble NTK against brute-force explicit Jacobians (float64), and the D.2 metrics."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import deepens as d
from deepens.kernels import (
    cross_to_same_ratio,
    ensemble_ntk,
    gradient_cosine_vs_width,
    gradient_cosines,
    interaction_ratio,
    loss_ntk,
)
from deepens.kernels.empirical import MODES

M = 3


def make(kind, net):
    if kind == "deep":
        return d.DeepEnsemble(net, M, seed=0)
    if kind == "batch":
        return d.BatchEnsemble(net, M, seed=0)
    if kind == "batch-frozen-u":
        return d.BatchEnsemble(net, M, trainable={"u": False, "v": True}, seed=0)
    if kind == "mc-dropout":
        return d.MCDropout(net, M, mask=d.Normal(0, 1), seed=0)
    if kind == "lld":
        return d.LastLayerDropout(net, M, seed=0)
    if kind == "vectorized":
        return d.vectorize(net, M, seed=0)
    return net  # a plain module


def brute_force(model, x1, x2, gamma_weight):
    """Θ = γ/M J_com J_comᵀ + J_ind J_indᵀ from one autograd call per output entry."""
    if isinstance(model, d.Ensemble):
        common = [p for _, p in model.named_shared_parameters()]
        individual = [p for _, p in model.named_individual_parameters()]
        out1, out2 = model(x1), model(x2)
    else:
        common, individual = list(model.parameters()), []
        out1, out2 = model(x1)[None], model(x2)[None]

    def rows(out, params):
        if not params:
            return torch.zeros(*out.shape, 0, dtype=out.dtype)
        r = torch.empty(*out.shape, sum(p.numel() for p in params), dtype=out.dtype)
        for idx in itertools.product(*[range(s) for s in out.shape]):
            grads = torch.autograd.grad(out[idx], params, retain_graph=True, allow_unused=True)
            r[idx] = torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)
            ])
        return r  # (M, N, C, P)

    jc1, jc2 = rows(out1, common), rows(out2, common)
    ji1, ji2 = rows(out1, individual), rows(out2, individual)
    full = gamma_weight * torch.einsum("anip,bmjp->abnmij", jc1, jc2) + torch.einsum("anip,bmjp->abnmij", ji1, ji2)
    return full  # (M, M, N1, N2, C, C)


NETS = {
    "mlp": lambda: (d.MLP(5, [6, 7], 3, bias=True, bias_std=0.3).double(), torch.randn(4, 5, dtype=torch.float64),
                    torch.randn(3, 5, dtype=torch.float64)),
    "conv": lambda: (d.ConvNet(2, 3, width=1 / 16).double(), torch.randn(3, 2, 6, 6, dtype=torch.float64),
                     torch.randn(2, 2, 6, 6, dtype=torch.float64)),
}
KINDS = ["deep", "batch", "batch-frozen-u", "mc-dropout", "lld", "vectorized", "module"]


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("kind", KINDS)
def test_equals_brute_force_explicit_jacobians(net_name, kind):
    torch.manual_seed(0)
    net, x1, x2 = NETS[net_name]()
    model = make(kind, net)
    m = model.members if isinstance(model, d.Ensemble) else 1
    gamma = 2.0 if m > 1 else None
    weight = gamma / m if gamma else 1.0
    ref = brute_force(model, x1, x2, weight)
    methods = ["jacobian", "structured"] if kind not in ("lld", "vectorized") else ["jacobian"]
    for method in methods:
        for mode in ("full", "trace", "diagonal"):
            k = ensemble_ntk(model, x1, x2, mode=mode, gamma=gamma, chunk_size=2, method=method)  # chunks < N
            got = k.total()
            want = {"full": ref, "trace": ref.diagonal(dim1=4, dim2=5).sum(-1),
                    "diagonal": ref.diagonal(dim1=4, dim2=5)}[mode]
            assert got.shape == want.shape, (method, mode)
            assert torch.allclose(got, want, atol=1e-10, rtol=1e-10), (method, mode, float((got - want).abs().max()))
    # same inputs twice: symmetric, and equal to the two-argument call
    k11 = ensemble_ntk(model, x1, mode="trace", gamma=gamma).total()
    assert torch.allclose(k11, k11.permute(1, 0, 3, 2), atol=1e-12)


def test_split_into_common_and_individual_parts():
    net = d.MLP(5, [6], 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    be = d.BatchEnsemble(net, M, seed=0)
    k = ensemble_ntk(be, x, gamma=1)
    assert k.common_weight == pytest.approx(1 / M)
    assert float(k.individual.abs().max()) > 0
    deep = ensemble_ntk(d.DeepEnsemble(net, M, seed=0), x)
    assert float(deep.common.abs().max()) == 0 and float(deep.cross_member().abs().max()) == 0
    mc = ensemble_ntk(d.MCDropout(net, M, seed=0), x)
    assert float(mc.individual.abs().max()) == 0  # frozen masks: no individual part (EE §4.1)


def test_nll_and_target_reductions():
    torch.manual_seed(1)
    net = d.MLP(5, [6, 7], 4).double()
    be = d.BatchEnsemble(net, M, seed=0)
    x = torch.randn(5, 5, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    full = ensemble_ntk(be, x, mode="full").total()  # (M, M, N, N, C, C)
    with torch.no_grad():
        g = torch.softmax(be(x), -1) - F.one_hot(y, 4)  # ∂L/∂f, EE Eq. (20)
    nll = torch.einsum("ani,abnmij,bmj->abnm", g, full, g)  # EE Eq. (59)
    target = full[:, :, torch.arange(5)[:, None], torch.arange(5)[None, :], y[:, None], y[None, :]]  # Eq. (60)
    assert torch.allclose(loss_ntk(be, x, y, kind="nll").total(), nll, atol=1e-11)
    assert torch.allclose(loss_ntk(be, x, y, kind="target").total(), target, atol=1e-11)


def test_interaction_metrics_brute_force():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(4, 4, 6, 6, generator=g, dtype=torch.float64)
    same = sum(float(k[a, a].pow(2).sum()) for a in range(4)) / (4 * 36)
    cross = sum(float(k[a, b].pow(2).sum()) for a in range(4) for b in range(4) if a != b) / (12 * 36)
    assert cross_to_same_ratio(k) == pytest.approx(cross / same, rel=1e-12)
    for m in (1, 2, 3):
        num = den = 0.0
        for a in range(4):
            others = [(a + j) % 4 for j in range(1, m + 1)]
            for i in range(6):
                num += (sum(float(k[a, b, i, :].sum()) for b in others) / 6) ** 2
                den += (float(k[a, a, i, :].sum()) / 6) ** 2
        assert interaction_ratio(k, m) == pytest.approx(num / den, rel=1e-12)
    with pytest.raises(d.DeepensError, match="m: expected at most 3"):
        interaction_ratio(k, 4)


def test_gradient_cosines_match_per_member_gradients():
    torch.manual_seed(0)
    net = d.MLP(5, [16], 3).double()
    be = d.BatchEnsemble(net, 4, seed=0)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    shared = [p for _, p in be.named_shared_parameters()]
    out = be(x)
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(out[a], y), shared,
                                                                     retain_graph=True)]) for a in range(4)]
    cos = gradient_cosines(be, x, y)
    for a in range(4):
        for b in range(4):
            ref = abs(float(grads[a] @ grads[b])) / float(grads[a].norm() * grads[b].norm())
            assert float(cos[a, b]) == pytest.approx(ref, rel=1e-10)


def test_gradient_cosine_falls_with_width_for_centred_modulations():
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))

    def build(width, seed):
        torch.manual_seed(seed)
        return d.BatchEnsemble(d.MLP(8, [int(width)] * 2, 4), 4, seed=seed)

    res = gradient_cosine_vs_width(build, [16, 64, 256], x, y, seeds=3)
    means = [r["mean"] for r in res["rows"]]
    assert means[0] > means[1] > means[2]
    assert res["fit"]["slope"] < -0.3  # EE Fig. 6: ~1/width for centred modulations


def test_blocked_computation_agrees_with_one_block():
    torch.manual_seed(0)
    model = d.BatchEnsemble(d.MLP(5, [6, 7], 3, bias=True, bias_std=0.2).double(), 3, seed=0)
    x1, x2 = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    for mode in MODES:
        for second in (None, x2):
            ref = ensemble_ntk(model, x1, second, mode=mode, method="jacobian", chunk_size=7)
            for chunk, budget in ((1, 1.0), (2, 1.0), (3, 1e9)):  # panels of one chunk, and one panel
                got = ensemble_ntk(model, x1, second, mode=mode, method="jacobian", chunk_size=chunk,
                                   max_bytes=budget)
                assert torch.allclose(got.total(), ref.total(), atol=1e-12), (mode, chunk, budget)
            structured = ensemble_ntk(model, x1, second, mode=mode, method="structured")
            assert torch.allclose(structured.total(), ref.total(), atol=1e-11)


def _conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=1, bias=True), nn.ReLU(),
                         nn.Conv1d(4, 3, 3, dilation=2, padding="same"), nn.Tanh(), nn.Flatten(), nn.Linear(15, 3))


def _conv2d() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=True), nn.ReLU(), nn.AvgPool2d(2),
                         d.layers.Conv2d(4, 5, 2, stride=2, parameterization="ntk", bias=True, bias_std=0.5),
                         nn.ReLU(), nn.Flatten(), nn.Linear(20, 3))


CONV_MODELS = {
    "deep-1d": lambda: (d.DeepEnsemble(_conv1d(), 2, seed=0), (4, 2, 10)),
    "module-1d": lambda: (_conv1d(), (4, 2, 10)),
    "deep-2d": lambda: (d.DeepEnsemble(_conv2d(), 3, seed=0), (4, 2, 8, 8)),
    "batch-2d": lambda: (d.BatchEnsemble(_conv2d(), 3, seed=0), (4, 2, 8, 8)),  # shared convolutions, modulations
    "mc-dropout-2d": lambda: (d.MCDropout(_conv2d(), 3, seed=0), (4, 2, 8, 8)),
}


@pytest.mark.parametrize("name", list(CONV_MODELS))
@pytest.mark.parametrize("rule", ["patches", "positions", "auto"])
def test_structured_convolutions_equal_the_jacobian_method(name, rule, monkeypatch):
    """Both contractions of a convolution (per-example patch Jacobians, position Grams) and the automatic choice
    between them give the Jacobian method's kernel: 1-D and 2-D, stride, dilation, 'same' padding, biases, NTK
    parameterisation, shared convolutions with channel modulations, frozen masks; every mode, one and two input
    sets (float64)."""
    from deepens.kernels import empirical

    monkeypatch.setattr(empirical, "CONV_RULE", rule)
    torch.manual_seed(0)
    model, shape = CONV_MODELS[name]()
    model = model.double()
    x1 = torch.randn(shape, dtype=torch.float64)
    x2 = torch.randn((3,) + shape[1:], dtype=torch.float64)
    for second in (None, x2):
        for mode in MODES:
            ref = ensemble_ntk(model, x1, second, mode=mode, method="jacobian")
            got = ensemble_ntk(model, x1, second, mode=mode, method="structured")
            scale = float(ref.individual.abs().max()) + float(ref.common.abs().max())
            for part in ("common", "individual"):
                diff = float((getattr(got, part) - getattr(ref, part)).abs().max())
                assert diff <= 1e-12 * scale, (part, mode, second is None, diff)


def test_frozen_weights_and_biases_do_not_enter_the_structured_kernel():
    """Frozen layers (a frozen weight before a trainable bias, a frozen readout) and in-place activations after a
    hooked layer: the structured and the Jacobian methods (this one also member by member) agree."""
    torch.manual_seed(0)
    for net, shape in ((nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)), (4, 5)),
                       (nn.Sequential(nn.Conv2d(2, 3, 3, bias=True), nn.ReLU(inplace=True), nn.Flatten(),
                                      nn.Linear(48, 2)), (3, 2, 6, 6))):
        net = net.double()
        net[0].weight.requires_grad_(False)  # a frozen weight with a trainable bias after it
        net[-1].requires_grad_(False)  # a frozen readout behind trainable layers
        x = torch.randn(shape, dtype=torch.float64)
        ens = d.DeepEnsemble(net, 2, seed=0)
        ens.net.get_submodule("0").weight.requires_grad_(False)  # the same layers frozen in the stacked network
        list(ens.net.children())[-1].requires_grad_(False)
        for model in (net, ens):
            ref = ensemble_ntk(model, x, mode="full", method="jacobian", chunk_size=2).total()  # input panels
            for method in ("jacobian", "structured"):
                got = ensemble_ntk(model, x, mode="full", method=method).total()
                assert torch.allclose(got, ref, atol=1e-12 * float(ref.abs().max()), rtol=0), method


def test_symmetric_kernels_built_in_several_blocks_equal_the_panel_computation():
    """Enough inputs × outputs for the block-symmetric Grams to use several blocks (structured: rows ≥ 128;
    member-by-member Jacobian method: rows ≥ 320), against input panels (chunk_size), full mode."""
    torch.manual_seed(0)
    for model, x in ((d.DeepEnsemble(d.MLP(4, [6], 5), 2, seed=0).double(), torch.randn(70, 4, dtype=torch.float64)),
                     (d.BatchEnsemble(nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5)),
                                      2, seed=0).double(), torch.randn(40, 2, 6, dtype=torch.float64))):
        ref = ensemble_ntk(model, x, mode="full", method="jacobian", chunk_size=16)
        for method in ("jacobian", "structured"):
            got = ensemble_ntk(model, x, mode="full", method=method)
            for part in ("common", "individual"):
                diff = float((getattr(got, part) - getattr(ref, part)).abs().max())
                assert diff <= 1e-12 * float(ref.total().abs().max()), (type(model).__name__, method, part, diff)


def test_the_cheaper_convolution_rule_is_chosen():
    from deepens.kernels.empirical import _conv_rule

    # a wide early layer (many positions, small kernel): patch Jacobians; a late layer (4 positions, 288-long
    # patches, 64 channels): position Grams; position Grams too large to hold: patch Jacobians
    assert _conv_rule(10, 4, 32, 32, 256, 27, 8, "full") == "patches"
    assert _conv_rule(10, 4, 32, 32, 4, 288, 64, "full") == "positions"
    assert _conv_rule(10, 4, 512, 512, 4, 288, 64, "full") == "patches"


def test_deep_ensembles_take_jacobians_member_by_member():
    """A deep ensemble's Jacobian method takes one member at a time with the Jacobians of all inputs when they fit
    the budget (each computed once), else input panels: the same kernel as input panels (chunk_size), with
    batch-norm running statistics (eval mode) sliced per member, every mode, one and two input sets."""
    from deepens.kernels import empirical

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).double()
    model = d.DeepEnsemble(net, 3, seed=0)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if "running" in name:
                buffer.copy_(torch.rand_like(buffer) + 0.5)  # members with different statistics
    x1, x2 = torch.randn(5, 2, 6, 6, dtype=torch.float64), torch.randn(2, 2, 6, 6, dtype=torch.float64)
    jacs = empirical._Jacobians(model)
    assert jacs.member_groups_possible()
    per_input = 2 * jacs.n_individual * 8  # C · P · itemsize of one member
    for mode in MODES:
        for second in (None, x2):
            inputs = 5 + (0 if second is None else 2)
            ref = ensemble_ntk(model, x1, second, mode=mode, method="jacobian", chunk_size=2).total()
            for budget in (2 * per_input * inputs + 1, 2 * per_input * inputs - 1, 1e9):  # fits; panels; one call
                got = ensemble_ntk(model, x1, second, mode=mode, method="jacobian", max_bytes=budget).total()
                assert torch.allclose(got, ref, atol=1e-12 * float(ref.abs().max()), rtol=0), (mode, budget)
    assert not empirical._Jacobians(d.BatchEnsemble(d.MLP(3, [4], 2), 2, seed=0)).member_groups_possible()


def test_method_choice_and_refusals():
    grouped = d.BatchEnsemble(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(64, 2)), 2, seed=0)
    normed = d.DeepEnsemble(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2)), 2)
    for model, x in ((grouped, torch.randn(2, 2, 6, 6)), (normed, torch.randn(2, 1, 6, 6))):
        with pytest.raises(d.DeepensError, match="structured"):
            ensemble_ntk(model, x, method="structured")
        assert ensemble_ntk(model, x).total().shape == (2, 2, 2, 2)  # auto falls back to Jacobians
    with pytest.raises(d.DeepensError, match="resample"):
        ensemble_ntk(d.MCDropout(d.MLP(5, [6], 2), 2, resample=True), torch.randn(3, 5))
    with pytest.raises(d.DeepensError, match="mode"):
        ensemble_ntk(d.MLP(5, [6], 2), torch.randn(3, 5), mode="block")


def test_member_averages_equal_their_definition_on_the_total_kernel():
    model = d.BatchEnsemble(d.MLP(5, [6], 3).double(), 4, seed=0)
    k = ensemble_ntk(model, torch.randn(3, 5, dtype=torch.float64), gamma=2.0)
    t = k.total()
    eye = torch.eye(4, dtype=torch.bool)
    assert torch.allclose(k.same_member(), t[eye].mean(0), atol=1e-13)
    assert torch.allclose(k.cross_member(), t[~eye].mean(0), atol=1e-13)


def test_deep_ensemble_of_many_members_allocates_no_common_block():
    """No shared parameters: the common part is a stride-0 view, so 3000 members × 40 inputs cost
    only their own (M, N, N) kernels (a dense (M, M, N, N) block would take 115 GB)."""
    ens = d.DeepEnsemble(d.MLP(2, [4], 1), 3000, seed=0)
    k = ensemble_ntk(ens, torch.randn(40, 2))
    assert k.common.stride() == (0, 0, 0, 0) and k.individual.shape == (3000, 40, 40)
    assert float(k.cross_member().abs().max()) == 0
    assert torch.allclose(k.same_member(), k.individual.mean(0))


@pytest.mark.parametrize("kind", ["batch", "deep", "lld", "mc-dropout", "vectorized", "conv"])
def test_per_input_jacobians_equal_the_chunk_jacobians(kind):
    """The vmap recipe (one Jacobian per input) and the chunk method (jacrev on a whole chunk) give the same
    Jacobians in float64 — common and individual, outputs and loss scalars — so ensemble_ntk's default path,
    which prefers the former, computes the same kernels."""
    from deepens.kernels.empirical import _Jacobians, _nll_scalar

    torch.manual_seed(0)
    mlp = d.MLP(6, [12, 12], 3).double()
    model = {"batch": lambda: d.BatchEnsemble(mlp, 3, seed=0), "deep": lambda: d.DeepEnsemble(mlp, 3, seed=0),
             "lld": lambda: d.LastLayerDropout(mlp, 3, seed=0), "mc-dropout": lambda: d.MCDropout(mlp, 3, seed=0),
             "vectorized": lambda: d.vectorize(mlp, 3, seed=0),
             "conv": lambda: d.BatchEnsemble(d.ConvNet(1, 3, width=0.0625, pool="avg").double(), 3, seed=0)}[kind]()
    model = model.double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64) if kind == "conv" else torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    for scalar in (None, _nll_scalar):
        jacs = _Jacobians(model, scalar)
        with torch.no_grad():
            chunk = jacs(x, y if scalar else None)
            each = jacs.per_sample(x, y if scalar else None)
        for a, b in zip(chunk[0] + chunk[1], each[0] + each[1], strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-12), kind
    assert jacs.vmappable


def test_a_network_that_does_not_run_under_vmap_falls_back_to_the_chunk_method():
    class Item(torch.nn.Module):  # .item() is not allowed under vmap
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x) * float(x.abs().max().item() > -1)

    from deepens.kernels import ensemble_ntk

    model = Item().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    k = ensemble_ntk(model, x, method="jacobian", mode="trace").total()
    jac = torch.func.jacrev(lambda w, b: torch.func.functional_call(model, {"lin.weight": w, "lin.bias": b}, (x,)),
                            argnums=(0, 1))(model.lin.weight, model.lin.bias)
    flat = torch.cat([jac[0].reshape(6, 2, -1), jac[1].reshape(6, 2, -1)], -1)
    assert torch.allclose(k[0, 0], torch.einsum("acp,bcp->ab", flat, flat), atol=1e-12)
    from deepens.kernels.empirical import _Jacobians

    jacs = _Jacobians(model)
    jacs.best(x)
    assert jacs.vmappable is False  # the first failure switched it to the chunk method


def test_a_hooked_or_parametrized_deep_ensemble_keeps_its_hooks_in_the_member_by_member_jacobians():
    """The member-by-member Jacobians run through the reference network only when it computes what ``net`` does: a
    forward hook that changes an output, or a parametrization of a stacked layer, takes the ensemble's own forward
    (the same kernel as input panels, which always run ``net``)."""
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, x):
            return 2 * x

    x = torch.randn(5, 4, dtype=torch.float64)
    for change in ("hook", "parametrization"):
        model = d.DeepEnsemble(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double(), 2, seed=0)
        if change == "hook":
            model.net.get_submodule("1").register_forward_hook(lambda mod, inputs, out: 2 * out)
        else:
            parametrize.register_parametrization(model.net.get_submodule("2"), "bias", Doubled())
        got = ensemble_ntk(model, x, method="jacobian").individual
        ref = ensemble_ntk(model, x, method="jacobian", chunk_size=2).individual
        assert torch.allclose(got, ref, rtol=0, atol=1e-12 * float(ref.abs().max())), change
