"""Learning-rate schedules as pure functions of training progress (so resuming needs no state).

``t`` is the progress in epochs (fractional within an epoch), ``total`` the number of epochs. The
factor multiplies every parameter group's base learning rate.

* ``constant``: 1.
* ``step``: ``step_factor ** floor(t / step_size)``.
* ``cosine``: from 1 down to ``final_lr / lr`` along half a cosine.
* ``ee``: the EE paper's schedule (App. C): constant for the first ``decay_start`` fraction of
  training, then linear decay to ``final_lr`` (1e-4 in the paper) at the end.
* ``multistep``: ``step_factor ** (number of milestones <= t)`` (ResNeXt's ÷10 at epochs 150 and 225).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import check_choice

__all__ = ["lr_factor"]


def lr_factor(
    schedule: str,
    t: float,
    total: float,
    *,
    lr: float,
    step_size: int = 30,
    step_factor: float = 0.1,
    decay_start: float = 0.5,
    final_lr: float = 1e-4,
    milestones: Sequence[float] = (),
) -> float:
    check_choice("schedule", schedule, ("constant", "step", "cosine", "ee", "multistep"))
    if schedule == "constant" or total <= 0:
        return 1.0
    if schedule == "step":
        return step_factor ** math.floor(t / step_size)
    if schedule == "multistep":
        return step_factor ** sum(1 for m in milestones if t >= m)
    floor = min(final_lr / lr, 1.0)
    frac = min(max(t / total, 0.0), 1.0)
    if schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))
    if frac <= decay_start or decay_start >= 1.0:
        return 1.0
    return 1.0 + (floor - 1.0) * (frac - decay_start) / (1.0 - decay_start)
