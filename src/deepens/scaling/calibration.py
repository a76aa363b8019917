"""Calibrated NLL (CNLL) of ensembles, vectorised over many ensembles (power-laws paper Eq. 3, §3-4;
Ashukha et al. 2020 test-time cross-validation).

Temperature **before** averaging (the power-laws paper's choice): p̄(τ) = (1/n) Σ_i softmax(z_i / τ).
Temperature **after** averaging (Ashukha et al.): log p̄ = logsumexp_i log softmax(z_i) − log n, then
softmax(log p̄ / τ). NLL(τ) = −mean log p̄_y(τ).

τ is fitted by a bounded 1-D minimisation in log(1/τ): Newton steps with the analytic first and
second derivatives (damped, clamped to the bounds), all ensembles at once. Test-time cross-validation:
R seeded shuffles of the test set, each split into two halves; τ is fitted on one half and the NLL
evaluated on the other, both ways; CNLL is the mean of the 2R values (see :func:`calibrated_nll` for
how the folds share one pass over the data). ``cv="none"`` fits and evaluates on the whole set.
Calibrated accuracy, Brier score and ECE are those at the temperature fitted on the whole set.

LE-NLL (power-laws Eq. 4-5) is the minimum over one temperature shared by several ensembles of their
mean NLL: :func:`lower_envelope_nll`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DeepensError, check_choice, check_int, check_real

__all__ = ["calibrated_nll", "nll_at_temperature", "lower_envelope_nll", "reference_cnll", "cv_folds"]


def cv_folds(n_points: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, evaluate) index pairs: R seeded shuffles, each split into halves, used both ways."""
    rng = np.random.default_rng(seed)
    folds = []
    for _ in range(repeats):
        perm = rng.permutation(n_points)
        a, b = np.sort(perm[: n_points // 2]), np.sort(perm[n_points // 2 :])
        folds += [(a, b), (b, a)]
    return folds


def _as_logits(logits, labels) -> tuple[torch.Tensor, torch.Tensor, bool]:
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    single = z.dim() == 3
    if single:
        z = z.unsqueeze(0)
    if z.dim() != 4:
        raise DeepensError(f"logits: expected (members, samples, classes) or (ensembles, members, samples, classes), "
                           f"got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise DeepensError(f"logits: expected floating-point values, got {z.dtype}")
    if y.dim() != 1 or y.shape[0] != z.shape[2]:
        raise DeepensError(f"labels: expected shape ({z.shape[2]},), got {tuple(y.shape)}")
    if y.is_floating_point() or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[3])):
        raise DeepensError(f"labels: expected integer classes in 0..{z.shape[3] - 1}")
    if z.shape[2] < 2:
        raise DeepensError("logits: need at least 2 samples")
    return z, y.long(), single


class _Objective:
    """Per-point NLL(β = 1/τ) terms of E ensembles on a set of points, with their first and second
    derivatives in t = log β (so that any subset's objective is a mean of point terms)."""

    def __init__(self, z: torch.Tensor, y: torch.Tensor, temperature: str) -> None:
        self.temperature = temperature
        if temperature == "after":
            logp = torch.log_softmax(z, dim=-1)
            z = (torch.logsumexp(logp, dim=1) - math.log(z.shape[1])).unsqueeze(1)  # (E, 1, P, C): log p̄
        self.z = z
        self.z2 = z * z
        self.index = y.view(1, 1, -1, 1).expand(z.shape[0], z.shape[1], -1, 1)
        self.zy = z.gather(3, self.index).squeeze(3)  # (E, n, P)

    def terms(self, t: torch.Tensor, derivatives: bool = True, third: bool = False, probs: bool = False):
        """Per-point NLL (E, P) and, with ``derivatives``, its first two (``third``: three) t-derivatives;
        with ``probs`` also the calibrated predictive distribution (E, P, C)."""
        beta = t.exp().view(-1, 1, 1, 1)
        s = self.z * beta
        s = s - s.amax(-1, keepdim=True)
        e = s.exp()
        total = e.sum(-1)  # (E, n, P)
        py = e.gather(3, self.index).squeeze(3) / total  # p_{i,y}
        if self.temperature == "after":
            nll = -py.log().squeeze(1)
        else:
            pbar = py.mean(1)
            nll = -pbar.clamp_min(1e-38).log()
        if not derivatives:
            return nll
        mean = (e * self.z).sum(-1) / total  # m_i = Σ_c p_ic z_ic
        var = (e * self.z2).sum(-1) / total - mean * mean
        dev = self.zy - mean
        if third:  # third central moment κ3 = E z³ − 3 m E z² + 2 m³
            k3 = (e * self.z2 * self.z).sum(-1) / total - 3 * mean * (var + mean * mean) + 2 * mean**3
        if self.temperature == "after":  # ordinary temperature scaling of the logits log p̄
            f1, f2 = -dev.squeeze(1), var.squeeze(1)  # −(L_y − E_q L), Var_q L
            f3 = k3.squeeze(1) if third else None  # d Var_q L / dβ = κ3
        else:
            inv = 1.0 / pbar.clamp_min(1e-38)
            r1 = (py * dev).mean(1) * inv  # p̄′/p̄, with ∂p/∂β = p·dev
            r2 = (py * (dev * dev - var)).mean(1) * inv  # ∂²p/∂β² = p·(dev² − var)
            f1, f2 = -r1, r1 * r1 - r2
            if third:  # ∂³p/∂β³ = p·(dev³ − 3 dev var − κ3)
                r3 = (py * (dev**3 - 3 * dev * var - k3)).mean(1) * inv
                f3 = -(r3 - 3 * r1 * r2 + 2 * r1**3)
        b = beta.view(-1, 1)  # chain rule to t = log β
        g, h = b * f1, b * b * f2 + b * f1
        out = (nll, g, h) if not third else (nll, g, h, b**3 * f3 + 3 * b * b * f2 + b * f1)
        if probs:
            out = (*out, (e / total.unsqueeze(-1)).mean(1))  # mean of member softmaxes (or softmax of log p̄)
        return out

    def value(self, t: torch.Tensor) -> torch.Tensor:
        return self.terms(t, derivatives=False).double().mean(1)


def _newton_step(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.where(h > 0, -g / h.clamp_min(1e-30), -torch.sign(g) * 0.5).clamp(-1.0, 1.0)


def _minimise(obj: _Objective, t0: torch.Tensor, lo: float, hi: float, iterations: int,
              return_terms: bool = False):
    """Damped, bounded Newton in t = log β for every ensemble at once: a long step is accepted only if
    it descends, else halved; short steps (quadratic convergence) are taken as they are. With
    ``return_terms`` also the per-point (g, h) of the last iteration, taken at the optimum to within the
    last (converged) step."""
    t = t0.clone()
    g = h = None
    for _ in range(iterations):
        nll, g, h = obj.terms(t)
        step = _newton_step(g.double().mean(1), h.double().mean(1)).to(t.dtype)
        candidate = (t + step).clamp(lo, hi)
        if bool((step.abs() > 0.1).any()):
            worse = obj.value(candidate) > nll.double().mean(1) + 1e-12
            candidate = torch.where(worse, (t + 0.5 * step).clamp(lo, hi), candidate)
        t = candidate
        if bool((step.abs() < 1e-7).all()):
            break
    return (t, g, h) if return_terms else t


def _subset(obj: _Objective, max_points: int) -> _Objective:
    """The same objective on at most ``max_points`` evenly spaced points."""
    if obj.z.shape[2] <= max_points:
        return obj
    idx = torch.linspace(0, obj.z.shape[2] - 1, max_points).long()
    sub = _Objective.__new__(_Objective)
    sub.temperature, sub.z, sub.z2 = obj.temperature, obj.z[:, :, idx], obj.z2[:, :, idx]
    sub.index, sub.zy = obj.index[:, :, idx], obj.zy[:, :, idx]
    return sub


def _grid_start(obj: _Objective, lo: float, hi: float, points: int = 9) -> torch.Tensor:
    """The best of a coarse grid of temperatures."""
    grid = torch.linspace(lo, hi, points, dtype=obj.z.dtype)
    values = torch.stack([obj.value(torch.full((obj.z.shape[0],), float(g), dtype=obj.z.dtype)) for g in grid])
    return grid.to(obj.z.dtype)[values.argmin(0)]


def _optimum(obj: _Objective, lo: float, hi: float, iterations: int, max_points: int = 2048):
    """Whole-set optimum: grid and damped Newton on a subsample, then Newton on all points from there (it
    starts within a few hundredths of the optimum, where Newton converges quadratically)."""
    sub = _subset(obj, max_points)
    t = _minimise(sub, _grid_start(sub, lo, hi), lo, hi, iterations)
    return _minimise(obj, t, lo, hi, iterations, return_terms=True)


def _ece_batched(probs: torch.Tensor, y: torch.Tensor, bins: int) -> torch.Tensor:
    """ECE (15 bins (lo, hi]) of E probability tables (E, P, C) at once."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == y).to(torch.float64)
    conf = conf.to(torch.float64)
    e, p = conf.shape
    index = torch.clamp(torch.ceil(conf * bins).long() - 1, 0, bins - 1) + bins * torch.arange(e).view(-1, 1)
    gap = torch.zeros(e * bins, dtype=torch.float64).scatter_add_(0, index.view(-1), (correct - conf).view(-1))
    return gap.view(e, bins).abs().sum(1) / p


def _probability_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int) -> dict:
    """Accuracy, Brier score and ECE (float64 means) of E predictive distributions (E, P, C)."""
    onehot = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs.dtype)
    return {
        "accuracy": (probs.argmax(-1) == y).double().mean(1),
        "brier": (probs - onehot).pow(2).sum(-1).double().mean(1),
        "ece": _ece_batched(probs, y, bins),
    }


def _uncalibrated(z: torch.Tensor, y: torch.Tensor, temperature: str) -> dict:
    """NLL and accuracy (float64 means) of E ensembles at τ = 1."""
    logp = torch.log_softmax(z, dim=-1)
    if temperature == "after":
        logprobs = torch.logsumexp(logp, dim=1) - math.log(z.shape[1])  # (E, P, C), already normalised
    else:
        logprobs = torch.log(logp.exp().mean(1).clamp_min(1e-38))
    lpy = logprobs.gather(2, y.view(1, -1, 1).expand(logprobs.shape[0], -1, 1)).squeeze(2)
    return {"nll": -lpy.double().mean(1), "accuracy": (logprobs.argmax(-1) == y).double().mean(1)}


def calibrated_nll(
    logits,
    labels,
    *,
    temperature: str = "before",
    cv: str = "halves",
    repeats: int = 5,
    seed: int = 0,
    bounds: tuple[float, float] = (0.01, 100.0),
    iterations: int = 30,
    dtype: torch.dtype = torch.float32,
    max_bytes: float = 256 * 2**20,
    bins: int = 15,
) -> dict:
    """NLL, CNLL and calibrated metrics of one ensemble (members, samples, classes) or of many
    (ensembles, members, samples, classes) at once (see the module docstring).

    Returns float values for one ensemble, or float64 arrays over ensembles: ``nll`` (τ = 1), ``cnll``,
    ``temperature`` (the optimum on the whole set), ``accuracy``, ``brier``, ``ece`` (calibrated at that
    temperature, on the whole set), ``accuracy_uncalibrated``, ``cnll_folds`` (E, 2R).

    Cross-validation folds share one pass over the data: at the whole-set optimum t* the per-point NLL
    and its derivatives up to third order in t = log β are computed once; a fold's objective is the mean
    of its half's terms, so its temperature is the root (nearest t*) of the cubic Taylor model, and its
    held-out NLL is the third-order Taylor value of the other half's terms — exact to O(δ⁴) with
    δ = t_fold − t*, a few hundredths for thousands of points. Folds with |δ| > 0.05 (small test sets)
    are fitted and evaluated exactly on their halves. Optimisation runs in ``dtype`` (float32 by
    default, sums accumulated in float64); agreement with the float64 SciPy reference is ~1e-6.
    """
    check_choice("temperature", temperature, ("before", "after"))
    check_choice("cv", cv, ("halves", "none"))
    repeats = check_int("repeats", repeats, minimum=1)
    lo_tau = check_real("bounds[0]", bounds[0], low=0.0, low_open=True)
    hi_tau = check_real("bounds[1]", bounds[1], low=lo_tau, low_open=True)
    z_all, y, single = _as_logits(logits, labels)
    e_total, n, p_total, c = z_all.shape
    lo, hi = math.log(1.0 / hi_tau), math.log(1.0 / lo_tau)  # bounds in t = log β
    folds = cv_folds(p_total, repeats, seed) if cv == "halves" else []
    fit_weights = torch.zeros(len(folds), p_total, dtype=torch.float64)
    eval_weights = torch.zeros(len(folds), p_total, dtype=torch.float64)
    for k, (fit, evaluate) in enumerate(folds):
        fit_weights[k, torch.as_tensor(fit)] = 1.0 / len(fit)
        eval_weights[k, torch.as_tensor(evaluate)] = 1.0 / len(evaluate)
    per_ensemble = n * p_total * c * torch.finfo(dtype).bits // 8 * 8  # working set of a few (n, P, C) arrays
    chunk = max(1, min(e_total, int(max_bytes // max(per_ensemble, 1))))
    out: dict[str, list] = {k: [] for k in ("nll", "cnll", "temperature", "accuracy", "brier", "ece",
                                             "accuracy_uncalibrated", "cnll_folds")}
    for start in range(0, e_total, chunk):
        z = z_all[start : start + chunk].to(dtype)
        whole = _Objective(z, y, temperature)
        t_star, _, _ = _optimum(whole, lo, hi, iterations)
        uncal = _uncalibrated(z, y, temperature)
        out["nll"].append(uncal["nll"])
        out["accuracy_uncalibrated"].append(uncal["accuracy"])
        out["temperature"].append((-t_star.double()).exp())
        # per-point NLL terms up to third order and the predictive distribution at the whole-set optimum
        nll0, g0, h0, k0, probs = whole.terms(t_star, third=True, probs=True)
        nll0, g0, h0, k0 = nll0.double(), g0.double(), h0.double(), k0.double()
        cal = _probability_metrics(probs, y, bins)
        if cv == "none":
            cal["nll"] = nll0.mean(1)
            out["cnll_folds"].append(cal["nll"].unsqueeze(1))
        else:
            # every fold's objective (a mean over its half) and held-out NLL follow from the point terms
            # without another pass over the data
            g_f, h_f, k_f = g0 @ fit_weights.T, h0 @ fit_weights.T, k0 @ fit_weights.T  # (E, folds)
            newton = _newton_step(g_f, h_f)
            disc = h_f * h_f - 2 * k_f * g_f  # root of the cubic model g + h δ + k δ²/2 nearest 0
            safe_k = torch.where(k_f.abs() > 1e-12, k_f, torch.ones_like(k_f))
            cubic = torch.where((k_f.abs() > 1e-12) & (disc >= 0), (-h_f + torch.sqrt(disc.clamp_min(0))) / safe_k,
                                newton)
            delta = torch.where((cubic - newton).abs() <= newton.abs() + 1e-12, cubic, newton)
            t_folds = (t_star.double().unsqueeze(1) + delta).clamp(lo, hi)
            delta = t_folds - t_star.double().unsqueeze(1)
            taylor = (nll0 @ eval_weights.T + (g0 @ eval_weights.T) * delta + 0.5 * (h0 @ eval_weights.T) * delta**2
                      + (k0 @ eval_weights.T) * delta**3 / 6)
            fold_nll = []
            for k, (fit, evaluate) in enumerate(folds):
                far = delta[:, k].abs() > 0.05  # far from the whole-set optimum: exact fit and evaluation
                value = taylor[:, k]
                if bool(far.any()):  # (chosen per ensemble, so results do not depend on the batch)
                    fit_idx, eval_idx = torch.as_tensor(fit), torch.as_tensor(evaluate)
                    refined = _minimise(_Objective(z[:, :, fit_idx], y[fit_idx], temperature),
                                        t_folds[:, k].to(dtype), lo, hi, iterations)
                    exact = _Objective(z[:, :, eval_idx], y[eval_idx], temperature).value(refined)
                    value = torch.where(far, exact, value)
                fold_nll.append(value)
            cal["nll"] = torch.stack(fold_nll, dim=1).mean(1)
            out["cnll_folds"].append(torch.stack(fold_nll, dim=1))
        out["cnll"].append(cal["nll"])
        for key in ("accuracy", "brier", "ece"):
            out[key].append(cal[key])
    result = {k: torch.cat(v).numpy() for k, v in out.items()}
    if single:
        result = {k: (v[0].tolist() if k == "cnll_folds" else float(v[0])) for k, v in result.items()}
    result.update({"temperature_mode": temperature, "cv": cv, "repeats": repeats if cv == "halves" else 0,
                   "seed": seed})
    return result


def nll_at_temperature(logits, labels, tau: float, *, temperature: str = "before") -> np.ndarray | float:
    """NLL_n(τ) at a fixed temperature (power-laws §4, Fig. 2) of one ensemble or of many at once."""
    check_choice("temperature", temperature, ("before", "after"))
    tau = check_real("tau", tau, low=0.0, low_open=True)
    z, y, single = _as_logits(logits, labels)
    t = torch.full((z.shape[0],), -math.log(tau), dtype=torch.float64)
    values = _Objective(z.double(), y, temperature).value(t).numpy()
    return float(values[0]) if single else values


def lower_envelope_nll(logits, labels, *, temperature: str = "before", bounds: tuple[float, float] = (0.01, 100.0),
                       iterations: int = 30) -> dict:
    """LE-NLL = min over one temperature of the mean NLL of several ensembles (power-laws Eq. 4-5).

    ``logits`` is (ensembles, members, samples, classes); returns ``le_nll`` and its ``temperature``.
    """
    check_choice("temperature", temperature, ("before", "after"))
    z, y, _ = _as_logits(logits, labels)
    e, n, p, c = z.shape
    # the ensembles' points side by side: the mean over them is the mean NLL over ensembles
    pooled = z.double().permute(1, 0, 2, 3).reshape(1, n, e * p, c)
    obj = _Objective(pooled, y.repeat(e), temperature)
    lo, hi = math.log(1.0 / bounds[1]), math.log(1.0 / bounds[0])
    t, _, _ = _optimum(obj, lo, hi, iterations)
    return {"le_nll": float(obj.value(t)[0]), "temperature": float((-t).exp()[0])}


def reference_cnll(logits, labels, *, temperature: str = "before", cv: str = "halves", repeats: int = 5,
                   seed: int = 0, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """The straightforward reference for one ensemble: NumPy float64 NLL(τ) and one SciPy bounded scalar
    minimisation per fold (used to verify :func:`calibrated_nll`; slow)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax, logsumexp

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    n = z.shape[0]

    def nll(tau: float, idx: np.ndarray) -> float:
        zz = z[:, idx]
        if temperature == "before":
            logp = log_softmax(zz / tau, axis=-1)
            lpy = logsumexp(logp[:, np.arange(len(idx)), y[idx]], axis=0) - math.log(n)
        else:
            pooled = logsumexp(log_softmax(zz, axis=-1), axis=0) - math.log(n)
            lpy = log_softmax(pooled / tau, axis=-1)[np.arange(len(idx)), y[idx]]
        return float(-lpy.mean())

    def fit(idx: np.ndarray) -> float:
        res = minimize_scalar(lambda lt: nll(math.exp(lt), idx), bounds=(math.log(bounds[0]), math.log(bounds[1])),
                              method="bounded", options={"xatol": 1e-10})
        return math.exp(res.x)

    everything = np.arange(z.shape[1])
    if cv == "none":
        return nll(fit(everything), everything)
    return float(np.mean([nll(fit(a), b) for a, b in cv_folds(z.shape[1], repeats, seed)]))
