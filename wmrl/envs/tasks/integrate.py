"""Fixed-step Runge-Kutta integration of ``ds/dt = f(s, u)`` under a zero-order-hold action.

The built-in tasks hold each action for one control period ``dt`` and integrate the continuous
dynamics with ``substeps`` classical fourth-order Runge-Kutta steps of size ``h = dt / substeps``
(Press et al., *Numerical Recipes*, 3rd ed., Eq. 17.1.3):

.. math::
    k_1 = f(s, u),\\; k_2 = f(s + \\tfrac h2 k_1, u),\\; k_3 = f(s + \\tfrac h2 k_2, u),\\;
    k_4 = f(s + h k_3, u),\\qquad s \\leftarrow s + \\tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4).

The loop runs over sub-steps only; every operation is batched over ``*B``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["rk4_step"]


def rk4_step(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    state: torch.Tensor,
    action: torch.Tensor,
    dt: float,
    substeps: int = 1,
) -> torch.Tensor:
    """Advance ``state`` by ``dt`` with ``substeps`` RK4 steps, holding ``action`` constant.

    Args:
        f: the time derivative, ``f(state [*B, D], action [*B, F]) -> [*B, D]``.
        state: ``[*B, D]``.
        action: ``[*B, F]``, held for the whole interval (zero-order hold).
        dt: the interval length.
        substeps: number of RK4 steps (``>= 1``).

    Returns:
        the state after ``dt``, ``[*B, D]``.

    Example:
        >>> import math, torch
        >>> decay = lambda s, u: -s  # ds/dt = -s, so s(1) = exp(-1) s(0)
        >>> s1 = rk4_step(decay, torch.ones(1, dtype=torch.float64), torch.zeros(0), 1.0, 10)
        >>> abs(s1.item() - math.exp(-1)) < 1e-6
        True
    """
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    h = dt / substeps
    s = state  # [*B, D]
    for _ in range(substeps):
        k1 = f(s, action)  # [*B, D]
        k2 = f(s + (0.5 * h) * k1, action)  # [*B, D]
        k3 = f(s + (0.5 * h) * k2, action)  # [*B, D]
        k4 = f(s + h * k3, action)  # [*B, D]
        s = s + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)  # [*B, D]
    return s
