"""Temperature scaling of an ensemble as a reusable object: fitted on held-out logits, applied to new ones, saved
with the run.

The power-laws paper distinguishes the temperature **before** averaging, p̄ = (1/M) Σ_m softmax(z_m/τ) (its
choice), from the temperature **after** averaging, softmax(log p̄ / τ) (Ashukha et al. 2020). The scalar τ is the
bounded optimum of the NLL over ``bounds`` found by the very optimiser of :func:`deepens.scaling.calibrated_nll`
(one code path: :func:`deepens.scaling.calibration.fit_temperature`). ``per_class=True`` fits one temperature
per class, z_c/τ_c (vector scaling without bias), by L-BFGS-B on log τ within the same bounds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepensError, all_finite, check_choice, check_real

__all__ = ["TemperatureScaler"]


def _logits(values) -> torch.Tensor:
    z = torch.as_tensor(values).double()
    if z.dim() == 2:
        z = z.unsqueeze(0)  # one network
    if z.dim() != 3:
        raise DeepensError(f"logits: expected (samples, classes) or (members, samples, classes), got shape "
                           f"{tuple(z.shape)}")
    if not all_finite(z):
        raise DeepensError("logits: non-finite values")
    return z


class TemperatureScaler:
    """``TemperatureScaler(mode="before").fit(val_logits, val_labels).predict_proba(test_logits)``.

    ``mode``: ``"before"`` or ``"after"`` averaging; ``per_class``: one temperature per class; ``bounds``: the
    range of τ. After :meth:`fit`, ``temperature`` is a float (or a (C,) tensor) and ``at_bound`` says whether
    the optimum sits on a bound (a fitting set without errors drives τ to its lower bound)."""

    def __init__(self, mode: str = "before", *, per_class: bool = False, bounds: tuple[float, float] = (0.01, 100.0)):
        self.mode = check_choice("mode", mode, ("before", "after"))
        self.per_class = bool(per_class)
        lo = check_real("bounds[0]", bounds[0], low=0.0, low_open=True)
        self.bounds = (lo, check_real("bounds[1]", bounds[1], low=lo, low_open=True))
        self.temperature: float | torch.Tensor | None = None
        self.at_bound = False

    # -- fitting --------------------------------------------------------------------------------------
    def fit(self, logits, labels) -> TemperatureScaler:
        """Fit τ on member logits ``(M, N, C)`` (or one network's ``(N, C)``) and labels ``(N,)``."""
        from ..scaling.calibration import fit_temperature

        z = _logits(logits)
        y = torch.as_tensor(labels).long()
        if y.shape != (z.shape[1],) or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[2])):
            raise DeepensError(f"labels: expected {z.shape[1]} classes in 0..{z.shape[2] - 1}")
        if not self.per_class:
            fitted = fit_temperature(z, y, temperature=self.mode, bounds=self.bounds)
            self.temperature, self.at_bound = fitted["temperature"], fitted["at_bound"]
            return self
        from scipy.optimize import minimize

        lo, hi = math.log(self.bounds[0]), math.log(self.bounds[1])
        start = fit_temperature(z, y, temperature=self.mode, bounds=self.bounds)["temperature"]

        def objective(log_tau: np.ndarray) -> tuple[float, np.ndarray]:
            t = torch.tensor(log_tau, dtype=torch.float64, requires_grad=True)
            value = self._nll(z, y, t.exp())
            value.backward()
            return float(value.detach()), t.grad.numpy().copy()

        res = minimize(objective, np.full(z.shape[2], math.log(start)), jac=True, method="L-BFGS-B",
                       bounds=[(lo, hi)] * z.shape[2], options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-10})
        log_tau = np.clip(res.x, lo, hi)
        self.temperature = torch.tensor(np.exp(log_tau), dtype=torch.float64)
        self.at_bound = bool(np.any((log_tau <= lo + 1e-9) | (log_tau >= hi - 1e-9)))
        return self

    # -- applying -------------------------------------------------------------------------------------
    def _log_probs(self, z: torch.Tensor, tau) -> torch.Tensor:
        """log p̄ (N, C) of member logits z (M, N, C) at temperature(s) tau (a float or (C,))."""
        tau = torch.as_tensor(tau, dtype=torch.float64)
        if self.mode == "before":
            return torch.logsumexp(torch.log_softmax(z / tau, dim=-1), dim=0) - math.log(z.shape[0])
        pooled = torch.logsumexp(torch.log_softmax(z, dim=-1), dim=0) - math.log(z.shape[0])
        return torch.log_softmax(pooled / tau, dim=-1)

    def _nll(self, z: torch.Tensor, y: torch.Tensor, tau) -> torch.Tensor:
        return -self._log_probs(z, tau).gather(1, y.view(-1, 1)).mean()

    def _fitted(self):
        if self.temperature is None:
            raise DeepensError("temperature: the scaler is not fitted; call fit(logits, labels) or load a saved one")
        return self.temperature

    def predict_proba(self, logits) -> torch.Tensor:
        """The calibrated predictive distribution (N, C) of member logits (M, N, C) (or (N, C))."""
        return self._log_probs(_logits(logits), self._fitted()).exp()

    def nll(self, logits, labels) -> float:
        """NLL of the calibrated predictive distribution."""
        return float(self._nll(_logits(logits), torch.as_tensor(labels).long(), self._fitted()))

    # -- saving ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        tau = self._fitted()
        return {"mode": self.mode, "per_class": self.per_class, "bounds": list(self.bounds),
                "temperature": tau.tolist() if isinstance(tau, torch.Tensor) else float(tau),
                "at_bound": self.at_bound}

    @classmethod
    def from_dict(cls, data: dict) -> TemperatureScaler:
        if not isinstance(data, dict) or "temperature" not in data or "mode" not in data:
            raise DeepensError("temperature: expected a saved TemperatureScaler (mode, temperature, ...)")
        scaler = cls(data["mode"], per_class=bool(data.get("per_class")), bounds=tuple(data.get("bounds",
                                                                                               (0.01, 100.0))))
        tau = data["temperature"]
        values = np.atleast_1d(np.asarray(tau, dtype=np.float64))
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise DeepensError(f"temperature: expected positive finite temperatures, got {tau!r}")
        scaler.temperature = torch.tensor(values) if scaler.per_class else float(values[0])
        scaler.at_bound = bool(data.get("at_bound", False))
        return scaler

    def save(self, path: str | Path) -> Path:
        """Write the scaler as JSON (atomically)."""
        from ..io import atomic_write_json

        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TemperatureScaler:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeepensError(f"temperature: cannot read {path} ({exc})") from None
        return cls.from_dict(data)
