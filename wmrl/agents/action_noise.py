"""Temporally correlated exploration noise: a first-order autoregressive process per action.

White noise added to the actions of a torque-limited swing-up averages out within a few steps:
it rarely pumps energy into the system. On the built-in pendulum, 100-step episodes of uniformly
random actions (TorchRL's random frames) reach the top in 2% of episodes; actions that follow an
AR(1) process of unit scale with lag-one correlation 0.8, clipped to ``[-1, 1]``, in 68%
(``benchmarks/exploration_noise.py``; ``docs/benchmarks.md``, fifteenth series). Correlated
noise is the discrete Ornstein-Uhlenbeck process of DDPG (Lillicrap et al. 2016, Sec. 3);
Eberhard et al. (2023, "Pink Noise Is All You Need: Colored Noise Exploration in Deep
Reinforcement Learning") compare noise colours across control tasks.

The process, per action dimension, from ``n_0 = 0`` at each episode start:

.. math::
    n_t = \\rho\\, n_{t-1} + \\sqrt{1 - \\rho^2}\\, \\varepsilon_t, \\qquad
    \\varepsilon_t \\sim \\mathcal N(0, 1),

so ``Var n_t = 1 - ρ^{2t}`` (stationary unit variance after a few ``1 / (1 - ρ²)`` steps) and
``Corr(n_t, n_{t+k}) → ρ^k``. ``ρ = 0`` is white Gaussian noise, ``n_t = ε_t``.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

__all__ = ["NOISE_KEY", "ar1_noise_step", "CorrelatedRandomPolicy"]

#: the entry that carries the noise ``n_{t-1}`` between steps (zero at every reset)
NOISE_KEY = "noise"


def ar1_noise_step(prev: torch.Tensor, eps: torch.Tensor, rho: float) -> torch.Tensor:
    """One step of the AR(1) process, ``n_t = ρ n_{t-1} + sqrt(1 - ρ²) ε_t``.

    Args:
        prev: ``n_{t-1}`` ``[*B, A]`` (zeros at an episode start).
        eps: standard normal draws ``ε_t`` ``[*B, A]``.
        rho: lag-one correlation ``ρ ∈ [0, 1)``.

    Returns:
        ``n_t`` ``[*B, A]``.

    >>> ar1_noise_step(torch.tensor([1.0]), torch.tensor([0.5]), 0.6)  # 0.6 + 0.8 * 0.5
    tensor([1.])
    >>> ar1_noise_step(torch.tensor([3.0]), torch.tensor([0.5]), 0.0)  # white: ε itself
    tensor([0.5000])
    """
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"the noise correlation must be in [0, 1), got {rho}")
    if rho == 0.0:
        return eps
    return rho * prev + math.sqrt(1.0 - rho * rho) * eps


class CorrelatedRandomPolicy(TensorDictModuleBase):
    """Random actions ``clip(n_t, -1, 1)`` with ``n`` the AR(1) process of unit scale (see the
    module docstring): the Dreamer agent's prefill episodes under ``noise_correlation > 0``, in
    place of uniformly random actions.

    It reads ``"noise"`` (``n_{t-1}``; zeros after a reset, or absent: zeros) and writes
    ``"action"`` and ``("next", "noise")``, so TorchRL's ``step_mdp`` carries the process on.

    Args:
        action_dim: ``A``.
        rho: lag-one correlation ``ρ ∈ [0, 1)``.

    >>> from tensordict import TensorDict
    >>> policy = CorrelatedRandomPolicy(action_dim=1, rho=0.8)
    >>> td = policy(TensorDict({"noise": torch.zeros(4, 1)}, [4]))
    >>> td["action"].shape, bool((td["action"].abs() <= 1).all())
    (torch.Size([4, 1]), True)
    """

    def __init__(self, action_dim: int, rho: float) -> None:
        super().__init__()
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"the noise correlation must be in [0, 1), got {rho}")
        self.action_dim, self.rho = action_dim, rho
        self.in_keys = [NOISE_KEY]
        self.out_keys = ["action", ("next", NOISE_KEY)]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        shape = (*tensordict.batch_size, self.action_dim)
        prev = tensordict.get(NOISE_KEY, None)
        if prev is None:
            prev = torch.zeros(shape, device=tensordict.device)
        noise = ar1_noise_step(prev, torch.randn(shape, device=prev.device), self.rho)  # [*B, A]
        tensordict.set("action", noise.clamp(-1.0, 1.0))
        tensordict.set(("next", NOISE_KEY), noise)
        return tensordict
