"""Calibrated NLL (CNLL) of ensembles, vectorised over many ensembles (power-laws paper Eq. 3, §3-4;
Ashukha et al. 2020 test-time cross-validation).

Temperature **before** averaging (the power-laws paper's choice): p̄(τ) = (1/n) Σ_i softmax(z_i / τ).
Temperature **after** averaging (Ashukha et al.): log p̄ = logsumexp_i log softmax(z_i) − log n, then
softmax(log p̄ / τ). NLL(τ) = −mean log p̄_y(τ).

τ is fitted by a bounded 1-D minimisation in log(1/τ): Newton steps with the analytic first and
second derivatives (damped, clamped to the bounds), all ensembles at once, then the bounds themselves (an
objective still decreasing at a bound has its optimum there). The per-point NLL is evaluated from the
margins to the label's logit with log-sum-exp / log1p accuracy, so it never rounds flat before it underflows.
Test-time cross-validation: R seeded shuffles of the test set, each split into two halves; τ is fitted on one
half and the NLL evaluated on the other, both ways; CNLL is the mean of the 2R values (see :func:`calibrated_nll` for
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

__all__ = ["calibrated_nll", "nll_at_temperature", "lower_envelope_nll", "reference_cnll", "cv_folds",
           "fit_temperature"]


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
    finite = torch.isfinite(z)
    if not bool(finite.all()):
        e, m, i, _ = (int(v) for v in (~finite).nonzero()[0])
        where = f"member {m}, sample {i}" if single else f"ensemble {e}, member {m}, sample {i}"
        raise DeepensError(f"logits: non-finite values ({int((~finite).sum())} of them), the first at {where}")
    return z, y.long(), single


class _Objective:
    """Per-point NLL(β = 1/τ) terms of E ensembles on a set of points, with their first and second
    derivatives in t = log β (so that any subset's objective is a mean of point terms).

    Everything is computed from the margins d_c = z_c − z_y to the label's logit: −log p_y = log(1 + S) with
    S = Σ_{c≠y} e^{β d_c} (``logaddexp(0, log S)``), 1 − p_y = sigmoid(log S), and central moments of d under the
    softmax. So a point predicted right with a large margin keeps its tiny NLL and gradient (≈ S) instead of
    rounding to 0 — NLL(τ) of a set without errors stays strictly decreasing as τ → 0 until the values
    underflow — and no moment loses digits to cancellation."""

    def __init__(self, z: torch.Tensor, y: torch.Tensor, temperature: str) -> None:
        self.temperature = temperature
        if temperature == "after":
            logp = torch.log_softmax(z, dim=-1)
            z = (torch.logsumexp(logp, dim=1) - math.log(z.shape[1])).unsqueeze(1)  # (E, 1, P, C): log p̄
        self.index = y.view(1, 1, -1, 1).expand(z.shape[0], z.shape[1], -1, 1)
        self.d = z - z.gather(3, self.index)  # margins, 0 at the label
        self.label = torch.zeros(z.shape, dtype=torch.bool, device=z.device).scatter_(3, self.index, True)

    @property
    def shape(self) -> torch.Size:
        return self.d.shape

    def terms(self, t: torch.Tensor, derivatives: bool = True, third: bool = False, probs: bool = False):
        """Per-point NLL (E, P) and, with ``derivatives``, its first two (``third``: three) t-derivatives;
        with ``probs`` also the calibrated predictive distribution (E, P, C)."""
        beta = t.exp().view(-1, 1, 1, 1)
        s = self.d * beta
        log_s = torch.logsumexp(s.masked_fill(self.label, -math.inf), dim=-1)  # log Σ_{c≠y} e^{β d_c}, (E, n, P)
        lse = torch.logaddexp(torch.zeros_like(log_s), log_s)  # log(1 + S) = −log p_y, accurate for tiny S
        if self.temperature == "after":
            nll = lse.squeeze(1)
        else:
            wrong = torch.sigmoid(log_s).mean(1)  # 1 − p̄_y, accurate when p̄_y ≈ 1
            n = self.d.shape[1]
            nll = torch.where(wrong < 0.5, -torch.log1p(-wrong), math.log(n) - torch.logsumexp(-lse, dim=1))
        if not derivatives and not probs:
            return nll
        p = (s - lse.unsqueeze(-1)).exp()  # member softmax (E, n, P, C)
        if not derivatives:
            return nll, p.mean(1)
        md = (p * self.d).sum(-1)  # E_p d = m − z_y
        centred = self.d - md.unsqueeze(-1)
        var = (p * centred * centred).sum(-1)
        k3 = (p * centred**3).sum(-1) if third else None  # third central moment
        dev = -md  # z_y − E_p z
        if self.temperature == "after":  # ordinary temperature scaling of the logits log p̄
            f1, f2 = md.squeeze(1), var.squeeze(1)  # −(z_y − E z), Var z
            f3 = k3.squeeze(1) if third else None  # d Var / dβ = κ3
        else:  # p̄_y^{(k)}/p̄_y as means over members weighted by p_{i,y} (softmax of log p_{i,y} = −lse)
            w = torch.softmax(-lse, dim=1)
            r1 = (w * dev).sum(1)  # ∂p/∂β = p·dev
            r2 = (w * (dev * dev - var)).sum(1)  # ∂²p/∂β² = p·(dev² − var)
            f1, f2 = -r1, r1 * r1 - r2
            if third:  # ∂³p/∂β³ = p·(dev³ − 3 dev var − κ3)
                r3 = (w * (dev**3 - 3 * dev * var - k3)).sum(1)
                f3 = -(r3 - 3 * r1 * r2 + 2 * r1**3)
        b = beta.view(-1, 1)  # chain rule to t = log β
        g, h = b * f1, b * b * f2 + b * f1
        out = (nll, g, h) if not third else (nll, g, h, b**3 * f3 + 3 * b * b * f2 + b * f1)
        if probs:
            out = (*out, p.mean(1))  # mean of member softmaxes (or softmax of log p̄)
        return out

    def value(self, t: torch.Tensor) -> torch.Tensor:
        return self.terms(t, derivatives=False).double().mean(1)

    def subset(self, idx: torch.Tensor) -> _Objective:
        """The same objective on the points ``idx``."""
        sub = _Objective.__new__(_Objective)
        sub.temperature, sub.d, sub.label, sub.index = (self.temperature, self.d[:, :, idx], self.label[:, :, idx],
                                                        self.index[:, :, idx])
        return sub


def _newton_step(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.where(h > 0, -g / h.clamp_min(1e-30), -torch.sign(g) * 0.5).clamp(-1.0, 1.0)


def _minimise(obj: _Objective, t0: torch.Tensor, lo: float, hi: float, iterations: int) -> torch.Tensor:
    """Damped, bounded Newton in t = log β for every ensemble at once: a long step is accepted only if
    it descends, else halved; short steps (quadratic convergence) are taken as they are. Then the bounds:
    an objective still decreasing towards a bound (a set without errors: NLL ↓ as τ → 0) has its bounded
    optimum there, which Newton approaches only slowly — a bound whose value is not above the Newton point's
    is the optimum (:func:`_at_bounds`)."""
    t = t0.clone()
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
    return _at_bounds(t, obj.value(t), obj.value(torch.full_like(t, hi)), obj.value(torch.full_like(t, lo)),
                      lo, hi)


def _at_bounds(t: torch.Tensor, value: torch.Tensor, at_hi: torch.Tensor, at_lo: torch.Tensor, lo: float,
               hi: float) -> torch.Tensor:
    """The bounded optimum among the interior point ``t`` and the bounds: a bound whose value is not above the
    interior value wins (ties go to the bound, where an objective that rounds flat is still decreasing)."""
    t = torch.where(at_lo <= value, torch.full_like(t, lo), t)
    return torch.where((at_hi <= value) & (at_hi <= at_lo), torch.full_like(t, hi), t)


def _subset(obj: _Objective, max_points: int) -> _Objective:
    """The same objective on at most ``max_points`` evenly spaced points."""
    if obj.shape[2] <= max_points:
        return obj
    return obj.subset(torch.linspace(0, obj.shape[2] - 1, max_points).long())


def _grid_start(obj: _Objective, lo: float, hi: float, points: int = 9) -> torch.Tensor:
    """The best of a coarse grid of temperatures."""
    grid = torch.linspace(lo, hi, points, dtype=obj.d.dtype)
    values = torch.stack([obj.value(torch.full((obj.shape[0],), float(g), dtype=obj.d.dtype)) for g in grid])
    return grid.to(obj.d.dtype)[values.argmin(0)]


def _optimum(obj: _Objective, lo: float, hi: float, iterations: int, max_points: int = 2048) -> torch.Tensor:
    """Whole-set bounded optimum: grid and damped Newton on a subsample, then Newton on all points from there
    (it starts within a few hundredths of the optimum, where Newton converges quadratically)."""
    sub = _subset(obj, max_points)
    t = _minimise(sub, _grid_start(sub, lo, hi), lo, hi, iterations)
    return _minimise(obj, t, lo, hi, iterations)


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
    ``temperature`` (the optimum on the whole set), ``temperature_at_bound`` (it sits on one of ``bounds``),
    ``accuracy``, ``brier``, ``ece`` (calibrated at that temperature, on the whole set),
    ``accuracy_uncalibrated``, ``cnll_folds`` (E, 2R: each fold's held-out NLL), ``fold_temperatures`` (E, 2R)
    and ``folds_at_bound`` (how many folds fitted τ on a bound).

    τ is the bounded optimum: a fitting half without errors has NLL(τ) strictly decreasing as τ → 0, so it fits
    τ = ``bounds[0]`` exactly, and its held-out half is evaluated there (an error in it then weighs heavily — that
    is the definition, and :func:`reference_cnll` checks it independently).

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
                                             "accuracy_uncalibrated", "cnll_folds", "temperature_at_bound",
                                             "fold_temperatures", "folds_at_bound")}
    for start in range(0, e_total, chunk):
        z = z_all[start : start + chunk].to(dtype)
        whole = _Objective(z, y, temperature)
        t_star = _optimum(whole, lo, hi, iterations)
        uncal = _uncalibrated(z, y, temperature)
        out["nll"].append(uncal["nll"])
        out["accuracy_uncalibrated"].append(uncal["accuracy"])
        out["temperature"].append(_tau(t_star, lo, hi, lo_tau, hi_tau))
        out["temperature_at_bound"].append(torch.stack(_on_bound(t_star, lo, hi)).any(0))
        # per-point NLL terms up to third order and the predictive distribution at the whole-set optimum
        nll0, g0, h0, k0, probs = whole.terms(t_star, third=True, probs=True)
        nll0, g0, h0, k0 = nll0.double(), g0.double(), h0.double(), k0.double()
        cal = _probability_metrics(probs, y, bins)
        if cv == "none":
            cal["nll"] = nll0.mean(1)
            out["cnll_folds"].append(cal["nll"].unsqueeze(1))
            out["fold_temperatures"].append(_tau(t_star, lo, hi, lo_tau, hi_tau).unsqueeze(1))
            out["folds_at_bound"].append(out["temperature_at_bound"][-1].long())
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

            def taylor(weights, d=delta, terms=(nll0, g0, h0, k0)):
                f, g, h, k3 = (term @ weights.T for term in terms)
                return f + g * d + 0.5 * h * d**2 + k3 * d**3 / 6

            # the bounds, exactly: a fold whose objective is not lower inside than at a bound fits there
            bounds = {b: whole.terms(torch.full_like(t_star, b), derivatives=False).double() for b in (lo, hi)}
            t_bounded = _at_bounds(t_folds, taylor(fit_weights), bounds[hi] @ fit_weights.T,
                                   bounds[lo] @ fit_weights.T, lo, hi)
            held_out = taylor(eval_weights)
            for b in (lo, hi):
                held_out = torch.where(t_bounded == b, bounds[b] @ eval_weights.T, held_out)
            fold_nll, fold_t = [], []
            for k, (fit, evaluate) in enumerate(folds):
                # far from the whole-set optimum and inside: exact fit and evaluation (chosen per ensemble, so
                # results do not depend on the batch)
                far = (delta[:, k].abs() > 0.05) & (t_bounded[:, k] != lo) & (t_bounded[:, k] != hi)
                value, t_k = held_out[:, k], t_bounded[:, k]
                if bool(far.any()):
                    fit_idx, eval_idx = torch.as_tensor(fit), torch.as_tensor(evaluate)
                    refined = _minimise(whole.subset(fit_idx), t_folds[:, k].to(dtype), lo, hi, iterations)
                    exact = whole.subset(eval_idx).value(refined)
                    value = torch.where(far, exact, value)
                    t_k = torch.where(far, _snap(refined, lo, hi), t_k)
                fold_nll.append(value)
                fold_t.append(t_k)
            cal["nll"] = torch.stack(fold_nll, dim=1).mean(1)
            out["cnll_folds"].append(torch.stack(fold_nll, dim=1))
            fold_t = torch.stack(fold_t, dim=1)
            out["fold_temperatures"].append(_tau(fold_t, lo, hi, lo_tau, hi_tau))
            out["folds_at_bound"].append(((fold_t == lo) | (fold_t == hi)).long().sum(1))
        out["cnll"].append(cal["nll"])
        for key in ("accuracy", "brier", "ece"):
            out[key].append(cal[key])
    result = {k: torch.cat(v).numpy() for k, v in out.items()}
    if single:
        result = {k: (v[0].tolist() if k in ("cnll_folds", "fold_temperatures") else
                      (bool(v[0]) if k == "temperature_at_bound" else
                       (int(v[0]) if k == "folds_at_bound" else float(v[0])))) for k, v in result.items()}
    result.update({"temperature_mode": temperature, "cv": cv, "repeats": repeats if cv == "halves" else 0,
                   "seed": seed})
    return result


def fit_temperature(logits, labels, *, temperature: str = "before", bounds: tuple[float, float] = (0.01, 100.0),
                    iterations: int = 30, dtype: torch.dtype = torch.float64) -> dict:
    """The bounded NLL-optimal temperature of one ensemble's member logits (n, N, C) on all its points: the
    optimiser of :func:`calibrated_nll` (and of :class:`deepens.metrics.TemperatureScaler`). Returns
    ``temperature`` and ``at_bound``."""
    check_choice("temperature", temperature, ("before", "after"))
    lo_tau = check_real("bounds[0]", bounds[0], low=0.0, low_open=True)
    hi_tau = check_real("bounds[1]", bounds[1], low=lo_tau, low_open=True)
    z, y, _ = _as_logits(logits, labels)
    if z.shape[0] != 1:
        raise DeepensError(f"logits: expected one ensemble (members, samples, classes), got shape {tuple(z.shape)}")
    lo, hi = math.log(1.0 / hi_tau), math.log(1.0 / lo_tau)
    t = _optimum(_Objective(z.to(dtype), y, temperature), lo, hi, iterations)
    return {"temperature": float(_tau(t, lo, hi, lo_tau, hi_tau)[0]),
            "at_bound": bool(torch.stack(_on_bound(t, lo, hi)).any())}


def _on_bound(t: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where t (in its own dtype) sits on the lower / upper bound of t = log β."""
    return t == torch.tensor(lo, dtype=t.dtype), t == torch.tensor(hi, dtype=t.dtype)


def _snap(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """t in float64, exactly lo or hi where it sits on a bound in its own dtype."""
    at_lo, at_hi = _on_bound(t, lo, hi)
    return torch.where(at_lo, lo, torch.where(at_hi, hi, t.double()))


def _tau(t: torch.Tensor, lo: float, hi: float, lo_tau: float, hi_tau: float) -> torch.Tensor:
    """τ = e^{−t} in float64, exactly the bound where t sits on one (t = hi is τ = lo_tau)."""
    at_lo, at_hi = _on_bound(t, lo, hi)
    return torch.where(at_hi, lo_tau, torch.where(at_lo, hi_tau, (-t.double()).exp()))


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
    t = _optimum(obj, lo, hi, iterations)
    return {"le_nll": float(obj.value(t)[0]), "temperature": float((-t).exp()[0])}


def reference_cnll(logits, labels, *, temperature: str = "before", cv: str = "halves", repeats: int = 5,
                   seed: int = 0, bounds: tuple[float, float] = (0.01, 100.0), grid: int = 401) -> float:
    """An independent check of :func:`calibrated_nll` for one ensemble: the same definition (the bounded optimum
    of τ in ``bounds`` on each fitting half, the NLL at it on the other half) by another method — NumPy float64
    with the same accurate NLL terms (log(1 + S), sigmoid(log S)), a grid of ``grid`` temperatures evenly spaced
    in log τ, and SciPy's bounded Brent between the grid neighbours of the best point. The first (smallest-τ)
    minimum of the grid wins ties, so an objective that rounds to its flat floor towards τ → 0 (a half without
    errors) fits at the bound. Slow; for tests."""
    from scipy.optimize import minimize_scalar
    from scipy.special import expit, log_softmax, logsumexp

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    n = z.shape[0]
    if temperature == "after":  # log p̄ of the ensemble, scaled as one network's logits
        z = (logsumexp(log_softmax(z, axis=-1), axis=0) - math.log(n))[None]
    label = np.zeros(z.shape[1:], dtype=bool)
    label[np.arange(z.shape[1]), y] = True

    def nll(tau: float, idx: np.ndarray) -> float:
        margins = (z[:, idx] - z[:, idx, y[idx]][..., None]) / tau
        log_s = logsumexp(np.where(label[idx], -np.inf, margins), axis=-1)  # (members, points)
        if temperature == "after":
            return float(np.logaddexp(0.0, log_s[0]).mean())
        wrong = expit(log_s).mean(0)
        terms = np.where(wrong < 0.5, -np.log1p(-np.minimum(wrong, 0.5)),
                         math.log(n) - logsumexp(-np.logaddexp(0.0, log_s), axis=0))
        return float(terms.mean())

    def fit(idx: np.ndarray) -> float:
        logs = np.linspace(math.log(bounds[0]), math.log(bounds[1]), grid)
        values = np.array([nll(math.exp(v), idx) for v in logs])
        k = int(np.argmin(values))
        if k in (0, grid - 1):
            return math.exp(logs[k])
        res = minimize_scalar(lambda v: nll(math.exp(v), idx), bounds=(logs[k - 1], logs[k + 1]), method="bounded",
                              options={"xatol": 1e-12})
        return math.exp(res.x) if res.fun <= values[k] else math.exp(logs[k])

    everything = np.arange(z.shape[1])
    if cv == "none":
        return nll(fit(everything), everything)
    return float(np.mean([nll(fit(a), b) for a, b in cv_folds(z.shape[1], repeats, seed)]))
