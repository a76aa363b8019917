"""Analytic infinite-width kernels: closed forms, independent recursions, quadrature, Monte Carlo."""

import math

import numpy as np
import pytest
import torch

import deepens as d
from deepens.kernels import Modulate, Moments, Network, ensemble_ntk, infinite_width_kernels, regime
from deepens.kernels.duals import ErfDual, QuadratureDual, ReluDual, dual_for, v_rule

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 3))


def stax_relu(x, depth, ws, bs, rs, rbs, activation="relu"):
    """The neural-tangents stax recursion written out for Dense/Relu|Erf/.../Dense."""
    d_in = x.shape[1]
    k = ws**2 * x @ x.T / d_in + bs**2
    t = k.copy()
    for layer in range(depth):
        w, b = (ws, bs) if layer < depth - 1 else (rs, rbs)
        q = np.diag(k)
        norm = np.sqrt(np.outer(q, q))
        if activation == "relu":
            rho = np.clip(k / norm, -1, 1)
            np.fill_diagonal(rho, 1.0)  # exact at x = x′
            th = np.arccos(rho)
            phi = norm / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
            dphi = (np.pi - th) / (2 * np.pi)
        else:  # erf
            phi = 2 / np.pi * np.arcsin(2 * k / np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q)))
            dphi = 4 / np.pi / np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q) - 4 * k**2)
        k_new = w**2 * phi + b**2
        t = k_new + w**2 * dphi * t
        k = k_new
    return k, t


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_plain_mlp_equals_the_stax_recursion(activation):
    net = Network.mlp(3, activation, 1.3, 0.2, 0.9, 0.1)
    k = infinite_width_kernels(X, network=net)
    ref_k, ref_t = stax_relu(X, 3, 1.3, 0.2, 0.9, 0.1, activation)
    assert np.allclose(k.nngp_same, ref_k, rtol=1e-12, atol=1e-14)
    assert np.allclose(k.ntk_same, ref_t, rtol=1e-12, atol=1e-14)
    # a plain network's "members" are copies: cross = same, nothing individual
    assert np.allclose(k.nngp_cross, k.nngp_same) and np.allclose(k.ntk_cross, k.ntk_same)
    assert np.all(k.ntk_same_individual == 0)


def test_linear_network_closed_form():
    x2 = RNG.normal(size=(4, 3))
    k = infinite_width_kernels(X, x2, Network.mlp(2, "identity", 1.5, 0.3, 0.7, 0.2))
    lin = X @ x2.T / 3
    k1 = 1.5**2 * lin + 0.3**2
    k2 = 1.5**2 * k1 + 0.3**2
    nngp = 0.7**2 * k2 + 0.2**2
    ntk = nngp + 0.7**2 * (k2 + 1.5**2 * k1)
    assert np.allclose(k.nngp_same, nngp, rtol=1e-13) and np.allclose(k.ntk_same, ntk, rtol=1e-13)


def test_generic_quadrature_matches_erf_closed_form():
    generic = QuadratureDual(torch.erf, "erf")
    q1, q2 = np.array([0.4, 1.1, 2.0]), np.array([0.7, 1.5])
    c = np.array([[0.2, -0.3], [0.5, 0.9], [-0.1, 1.2]])
    # the Mehler series is accurate to ~1e-9 for a fixed v and ~1e-6 when a random v sits inside φ
    # (documented in QuadratureDual)
    for v, rtol in ((None, 1e-9), (d.Sign(), 1e-9), (d.Ternary(0.2, 0.3, 0.5), 1e-9), (d.ShiftedNormal(0.6), 5e-6)):
        for a, b in zip(generic.same(q1, q2, c, v), ErfDual().same(q1, q2, c, v), strict=True):
            assert np.allclose(a, b, rtol=rtol, atol=1e-12), v
        for a, b in zip(generic.cross(q1, q2, c, v), ErfDual().cross(q1, q2, c, v), strict=True):
            assert np.allclose(a, b, rtol=rtol, atol=1e-12), v


def test_tanh_network_matches_brute_force_quadrature():
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / math.sqrt(2 * math.pi)

    def expect(f, q1, q2, c):
        rho = c / math.sqrt(q1 * q2)
        a, b = np.meshgrid(x, x, indexing="ij")
        z1, z2 = math.sqrt(q1) * a, math.sqrt(q2) * (rho * a + math.sqrt(max(1 - rho * rho, 0)) * b)
        return float((np.outer(w, w) * f(z1, z2)).sum())

    k = infinite_width_kernels(X[:3], network=Network.mlp(2, "tanh", 1.2, 0.1, 1.0, 0.0))
    # the same two-layer recursion by brute force
    lin = 1.2**2 * X[:3] @ X[:3].T / 3 + 0.01
    kk, tt = lin, lin.copy()
    for w_next, b_next in ((1.2, 0.1), (1.0, 0.0)):
        phi = np.array([[expect(lambda a, b: np.tanh(a) * np.tanh(b), kk[i, i], kk[j, j], kk[i, j])
                         for j in range(3)] for i in range(3)])
        dphi = np.array([[expect(lambda a, b: (1 - np.tanh(a) ** 2) * (1 - np.tanh(b) ** 2), kk[i, i], kk[j, j],
                                 kk[i, j]) for j in range(3)] for i in range(3)])
        new = w_next**2 * phi + b_next**2
        tt = new + w_next**2 * dphi * tt
        kk = new
    assert np.allclose(k.nngp_same, kk, rtol=1e-8) and np.allclose(k.ntk_same, tt, rtol=1e-8)


DISTS = [None, d.Normal(0, 1), d.ShiftedNormal(0.5), d.Sign(), d.Bernoulli(0.7), d.Ternary(0.2, 0.3, 0.5)]


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("v", DISTS, ids=lambda v: "none" if v is None else v.spec)
def test_duals_match_monte_carlo(name, v):
    rng = np.random.default_rng(1)
    q1, q2, c = 1.3, 0.7, 0.4
    n = 400_000
    z = rng.multivariate_normal([0, 0], [[q1, c], [c, q2]], size=n)
    fn = {"relu": lambda t: np.maximum(t, 0), "erf": lambda t: torch.erf(torch.from_numpy(t)).numpy(),
          "tanh": np.tanh}[name]
    dfn = {"relu": lambda t: (t > 0).astype(float), "erf": lambda t: 2 / math.sqrt(math.pi) * np.exp(-t * t),
           "tanh": lambda t: 1 - np.tanh(t) ** 2}[name]
    if v is None:
        v1 = v2 = w2 = np.ones(n)
    else:
        v1 = v.sample((n,), torch.Generator().manual_seed(2), torch.float64).numpy()
        w2 = v.sample((n,), torch.Generator().manual_seed(3), torch.float64).numpy()
        v2 = v1
    dual = dual_for(name)
    same = dual.same(np.array([q1]), np.array([q2]), np.array([[c]]), v)
    cross = dual.cross(np.array([q1]), np.array([q2]), np.array([[c]]), v)
    samples_same = [fn(v1 * z[:, 0]) * fn(v2 * z[:, 1]), v1 * v2 * dfn(v1 * z[:, 0]) * dfn(v2 * z[:, 1]),
                    z[:, 0] * z[:, 1] * dfn(v1 * z[:, 0]) * dfn(v2 * z[:, 1])]
    samples_cross = [fn(v1 * z[:, 0]) * fn(w2 * z[:, 1]), v1 * w2 * dfn(v1 * z[:, 0]) * dfn(w2 * z[:, 1])]
    for value, sample in [*zip(same, samples_same, strict=True), *zip(cross, samples_cross, strict=True)]:
        se = sample.std() / math.sqrt(n)
        assert abs(float(np.asarray(value).ravel()[0]) - sample.mean()) < 4.5 * se + 1e-12


def test_relu_sign_moments_handle_random_signs_exactly():
    # relu(v z) with v = ±1: same member unchanged (v² = 1), cross member symmetric in ±z
    q, c = np.array([1.0]), np.array([[0.3]])
    plain = ReluDual().same(q, q, c, None)
    sign = ReluDual().same(q, q, c, d.Sign())
    assert all(np.allclose(a, b) for a, b in zip(plain, sign, strict=True))
    cross = ReluDual().cross(q, q, c, d.Sign())
    k1 = ReluDual.k1
    assert np.allclose(cross[0], 0.5 * k1(q, q, c) + 0.5 * k1(q, q, -c))


def test_graded_v_rule_is_accurate_where_gauss_hermite_is_not():
    from scipy.integrate import quad

    q, c = 4.0, 3.0

    def f(v):
        det = (1 + 2 * v * v * q) ** 2 - 4 * v**4 * c * c
        return 4 / math.pi * c / det**1.5

    ref = quad(lambda v: f(v) * math.exp(-v * v / 2) / math.sqrt(2 * math.pi), -np.inf, np.inf, epsabs=1e-15,
               epsrel=1e-13, limit=500)[0]
    nodes, weights = v_rule(d.Normal(0, 1), q)
    assert abs(float((weights * f(nodes)).sum()) - ref) < 1e-9 * ref
    gh, ghw = d.Normal(0, 1).quadrature(128)
    assert abs(float((ghw * f(gh)).sum()) - ref) > 1e-3 * ref  # why the graded rule exists


def test_moments_are_enough_for_u():
    dist = d.ShiftedNormal(0.4)
    a = infinite_width_kernels(X, network=Network.mlp(2, "erf", u=dist, v=d.Sign()))
    b = infinite_width_kernels(X, network=Network.mlp(2, "erf", u=Moments(dist.first_moment, dist.second_moment),
                                                     v=d.Sign()))
    for name in ("nngp_same", "nngp_cross", "ntk_same", "ntk_cross"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-13)
    with pytest.raises(d.DeepensError, match="distribution"):
        infinite_width_kernels(X, network=Network.mlp(1, "erf", v=Moments(0.5, 1.0)))


def test_parallel_and_zero_inputs_are_safe():
    x = np.stack([X[0], X[0], 2 * X[0], -X[0], np.zeros(3), X[0] * (1 + 1e-12)])
    for act in ("relu", "erf", "tanh", "gelu"):
        k = infinite_width_kernels(x, network=Network.mlp(3, act, 1.4, 0.1, u=d.ShiftedNormal(0.3),
                                                          v=d.ShiftedNormal(0.2)))
        for name in ("nngp_same", "nngp_cross", "ntk_same", "ntk_cross"):
            arr = getattr(k, name)
            assert np.all(np.isfinite(arr)), (act, name)
            assert np.allclose(arr, arr.T, rtol=1e-9, atol=1e-12), (act, name)
        assert np.allclose(k.nngp_same[0, 1], k.nngp_same[0, 0], rtol=1e-9)  # identical inputs


def test_gamma_weights_the_common_part():
    net = Network.mlp(2, "relu", u=d.ShiftedNormal(0.5), v=d.ShiftedNormal(0.5))
    base = infinite_width_kernels(X, network=net)
    k = infinite_width_kernels(X, network=net, members=8, gamma=2)
    assert k.common_weight == pytest.approx(0.25)
    assert np.allclose(k.ntk_same, 0.25 * base.ntk_same_common + base.ntk_same_individual)
    assert np.allclose(k.ntk_cross, 0.25 * base.ntk_cross_common)


def test_frozen_modulations_have_no_individual_part_and_trainable_ones_do():
    frozen = infinite_width_kernels(X, network=Network.mlp(2, "relu", u=d.Normal(0, 1), trainable=False))
    assert np.all(frozen.ntk_same_individual == 0)
    trainable = infinite_width_kernels(X, network=Network.mlp(2, "relu", u=d.Normal(0, 1)))
    assert np.all(np.diag(trainable.ntk_same_individual) > 0)


def _with_u(net, index, dist):
    """``net`` with the u of its ``index``-th modulated hidden layer replaced by ``dist``."""
    where = [i for i, op in enumerate(net.ops) if isinstance(op, Modulate)][index]
    net.ops[where] = Modulate(dist, net.ops[where].trainable)
    return net


def test_regime_verdicts():
    centred = regime(Network.mlp(4, "relu", u=d.Normal(0, 1), v=d.ShiftedNormal(0.5)))
    assert centred["verdict"] == "independent" and centred["ntk_ratio"] == 0
    shifted = regime(Network.mlp(4, "relu", u=d.ShiftedNormal(0.3), v=d.ShiftedNormal(0.0)))
    assert shifted["verdict"] == "collective" and shifted["ntk_ratio"] > 0 and shifted["nngp_ratio"] > 0
    # EE: a centred u at the last hidden layer alone is sufficient
    last_only = _with_u(Network.mlp(3, "relu", u=d.ShiftedNormal(0.5)), -1, d.Normal(0, 1))
    assert regime(last_only)["verdict"] == "independent"
    # ... and a centred u at an earlier layer is not
    early_only = _with_u(Network.mlp(3, "relu", u=d.ShiftedNormal(0.5)), 0, d.Normal(0, 1))
    assert regime(early_only)["verdict"] == "collective"
    bias = Network.mlp(2, "relu", u=d.Normal(0, 1), readout_bias_std=0.1)
    r = regime(bias)
    assert r["verdict"] == "collective" and "bias" in r["reason"]
    # the cross/same ratio grows with the shift p (the transition of EE Fig. 2); at p = 1 the members are
    # identical (NNGP ratio 1), and their NTKs differ only by the individual part of trainable modulations
    rows = [regime(Network.mlp(4, "relu", u=d.ShiftedNormal(p), v=d.ShiftedNormal(p))) for p in (0.2, 0.5, 0.8, 1.0)]
    ratios = [r["ntk_ratio"] for r in rows]
    assert ratios == sorted(ratios) and rows[-1]["nngp_ratio"] == pytest.approx(1.0)
    frozen = regime(Network.mlp(4, "relu", u=d.ShiftedNormal(1.0), v=d.ShiftedNormal(1.0), trainable=False))
    assert frozen["ntk_ratio"] == pytest.approx(1.0)


MC_CASES = [
    ("relu", None, None, True),
    ("relu", d.Normal(0, 1), None, True),  # centred post-activation: cross ≈ 0
    ("relu", d.ShiftedNormal(0.8), d.ShiftedNormal(0.8), True),  # shifted: non-zero cross
    ("erf", d.Normal(0, 1), d.ShiftedNormal(0.6), False),  # frozen, pre-activation inside erf
    ("erf", d.ShiftedNormal(0.8), d.ShiftedNormal(0.8), True),
    ("relu", None, d.Sign(), False),  # pre-activation only, random signs inside relu
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MC_CASES, ids=lambda c: f"{c[0]}-u={c[1] and c[1].spec}-v={c[2] and c[2].spec}-"
                         f"{'trainable' if c[3] else 'frozen'}")
def test_finite_networks_approach_the_analytic_kernels(case):
    act, u, v, trainable = case
    width, depth, m, n = 2048, 2, 6, 4
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
    an = infinite_width_kernels(x.double().numpy(), network=Network.mlp(depth, act, 1.5, 0.2, 1.0, 0.0, u=u, v=v,
                                                                        trainable=trainable))

    def build(outputs, seed):
        torch.manual_seed(1000 + seed)
        net = d.MLP(5, [width] * depth, outputs, activation=act, parameterization="ntk", weight_std=1.5, bias=True,
                    bias_std=0.2, readout_std=1.0, readout_bias_std=0.0)
        return d.BatchEnsemble(net, m, u=u, v=v, trainable=trainable, seed=seed)

    eye = torch.eye(m, dtype=torch.bool)
    nngp_same, nngp_cross, ntk_same, ntk_cross = (np.zeros((n, n)) for _ in range(4))
    inits, outputs = 32, 512
    for seed in range(inits):  # NNGP: E[f_α(x) f_β(x′)] over initialisations and output units
        with torch.no_grad():
            out = build(outputs, seed)(x).double()
        gram = torch.einsum("anc,bmc->abnm", out, out) / outputs
        nngp_same += gram[eye].mean(0).numpy() / inits
        nngp_cross += gram[~eye].mean(0).numpy() / inits
    for seed in range(24):  # NTK: it concentrates, fewer draws needed
        k = ensemble_ntk(build(1, 100 + seed), x)
        ntk_same += k.same_member().double().numpy() / 24
        ntk_cross += k.cross_member().double().numpy() / 24

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    assert rel(nngp_same, an.nngp_same) < 0.05
    assert rel(ntk_same, an.ntk_same) < 0.05
    if np.linalg.norm(an.ntk_cross) < 1e-12 * np.linalg.norm(an.ntk_same):  # independent: cross ≈ 0
        assert np.linalg.norm(nngp_cross) <= 0.05 * np.linalg.norm(nngp_same)
        assert np.linalg.norm(ntk_cross) <= 0.05 * np.linalg.norm(ntk_same)
    else:
        assert rel(nngp_cross, an.nngp_cross) < 0.05
        assert rel(ntk_cross, an.ntk_cross) < 0.05
