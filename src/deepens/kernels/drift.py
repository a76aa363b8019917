"""How far the empirical NTK moves during training (CE Theorem 1, Fig. 9).

Under gradient flow on the L2 loss, a collegial ensemble of m members of width n has
K^e(Θ_t) − K^e(Θ_0) = O_p(1/(m·n)) (CE Eq. 7): the relative change of the kernel depends on m·n, so a
baseline of width d² and an ensemble of d members of width d move alike. :func:`kernel_drift`
measures it: the NTK on probe inputs before and after full-batch gradient descent with a small step
(a discretised gradient flow) on L = ½ · mean_i ‖f(x_i) − y_i‖², for every member of an ensemble at
once (members are independent seeds when the model is ``deepens.vectorize(net, S)``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ensembles.base import Ensemble
from ..errors import DeepensError, check_int, check_real
from .empirical import ensemble_ntk

__all__ = ["kernel_drift"]


def _kernels(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole ensemble NTK (M, M, P, P) (EE Eq. 9) and each member's own block (M, P, P)."""
    k = ensemble_ntk(model, x).total()
    if isinstance(model, Ensemble):
        idx = torch.arange(k.shape[0])
        return k, k[idx, idx]
    return k[:1, :1], k[0, 0].unsqueeze(0)


def kernel_drift(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probe: torch.Tensor,
    *,
    lr: float,
    steps: int,
) -> dict:
    """The NTK on ``probe`` inputs before and after ``steps`` full-batch gradient-descent steps of size
    ``lr`` on ½·mean‖f(x) − y‖² (time t = lr·steps), trained in place.

    Returns ``initial`` and ``final`` kernels (M, P, P), ``relative`` = ‖K_t − K₀‖_F/‖K₀‖_F per member (M,)
    (robust where single entries are near zero), ``relative_entries`` = |ΔK|/|K₀| per entry (M, P, P),
    ``relative_ensemble`` = ‖Θ_t − Θ₀‖_F/‖Θ₀‖_F of the whole ensemble NTK with its cross-member blocks
    (EE App. B.6: it stays constant at infinite width), and the training loss per member at the start and
    at the end.
    """
    lr = check_real("lr", lr, low=0.0, low_open=True)
    steps = check_int("steps", steps, minimum=1)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.shape[0] != x.shape[0]:
        raise DeepensError("y: expected floating-point regression targets with one row per input")
    is_ensemble = isinstance(model, Ensemble)
    full0, k0 = _kernels(model, probe)

    def losses() -> torch.Tensor:
        out = model(x) if is_ensemble else model(x).unsqueeze(0)
        target = y.reshape(1, y.shape[0], -1)
        return 0.5 * (out.reshape(out.shape[0], out.shape[1], -1) - target).pow(2).sum(-1).mean(-1)  # (M,)

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            start = losses()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = losses()
            if not bool(torch.isfinite(loss).all()):
                raise DeepensError(f"lr: gradient descent diverged (loss {loss.tolist()}); use a smaller step")
            loss.sum().backward()  # members are independent: each gets its own loss's gradient
            opt.step()
        with torch.no_grad():
            end = losses()
    finally:
        model.train(was_training)
    full1, k1 = _kernels(model, probe)
    diff = (k1 - k0).flatten(1).norm(dim=1) / k0.flatten(1).norm(dim=1)
    return {"initial": k0, "final": k1, "relative": diff, "relative_entries": (k1 - k0).abs() / k0.abs(),
            "relative_ensemble": float((full1 - full0).norm() / full0.norm()),
            "time": lr * steps, "loss_start": start, "loss_end": end}
